"""The graph schema as data: node labels, their keys, relationship types, and which source row owns
which property and edge.

Why data and not Cypher strings scattered around: ``cypher.py`` generates every statement from these
constants, so a label or relationship type can only ever come from this file (never from an event),
the schema constraints follow the same definitions, and ``export.py`` knows what to read back.

The model
=========

Nodes (key property in braces; ints stay ints, device ids and IPs are strings)::

    Customer{id:int}  Account{id:int}  Merchant{id:int}  Device{id:str}  IP{address:str}  Transaction{id:int}

Relationships, each owned by exactly one source row (the row's update replaces it, its delete
tombstones or removes it)::

    (Customer)-[:OWNS]->(Account)                  accounts.customer_id          owned by the account row
    (Account)-[:INITIATED]->(Transaction)          transactions.account_id       owned by the transaction row
    (Transaction)-[:PAYS]->(Merchant)              transactions.merchant_id      (card payments: set iff merchant_id is)
    (Transaction)-[:TRANSFER_TO]->(Account)        transactions.counterparty_account_id  (transfers)
    (Transaction)-[:USING_DEVICE]->(Device)        transactions.device_id
    (Transaction)-[:FROM_IP]->(IP)                 transactions.ip
    (Customer)-[:LOGGED_IN {login_id, at, success}]->(Device)      one per login with a device
    (Customer)-[:LOGIN_FROM {login_id, at, success}]->(IP)         one per login
    (Customer)-[:CHANGED_PROFILE {change_id, field, at, ip}]->(Device)   or ->(Customer) itself without a device

Logins are linked to the customer twice, to the device and to the IP, rather than through a
``(Device)-[:SEEN_AT]->(IP)`` edge: the fraud signal is "these customers share an IP / a device",
which a Customer-IP edge gives in two hops, while a Device-IP edge loses who logged in (and a login
without a known device would leave the IP unlinked). Device-IP co-occurrence is still recoverable by
joining the two edges on ``login_id``.

Fraud reports are late labels on the transaction, not nodes of their own: the Transaction carries
``fraud_report_id``, ``fraud_report_kind``, ``reported_at`` with their own version
(``fraud_report_version``) and time (``fraud_report_ts_ms``), so a label never bumps or is blocked by
the transaction row's version. Only the newest report per transaction is kept.

Bookkeeping on everything written (nodes and relationships): ``version`` (source LSN of the row
that last wrote it), ``ts_ms`` (its source commit time), ``first_ts_ms`` (earliest source time that
touched it: what the point-in-time export filters on) and ``deleted`` (tombstone flag). A node
only ever *referenced* (an IP, or a merchant whose own row has not arrived yet) has no ``version``:
no source row has written it, so its own row, whatever its LSN, is applied when it comes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Properties every written node/relationship may carry besides its key and its row's properties.
VERSION, TS_MS, FIRST_TS_MS, DELETED = "version", "ts_ms", "first_ts_ms", "deleted"
BOOKKEEPING = (VERSION, TS_MS, FIRST_TS_MS, DELETED)


@dataclass(frozen=True)
class NodeType:
    label: str
    key: str  # key property (unique constraint)
    key_type: type  # int or str: how an EntityDeleted's text key is parsed back
    entity: str | None  # mapping entity whose rows are these nodes; None: only ever referenced
    props: tuple[str, ...] = ()  # properties the entity's own row writes (and its delete clears)


CUSTOMER = NodeType(
    "Customer", "id", int, "customer", ("full_name", "email", "phone", "country", "kyc_level", "created_at")
)
ACCOUNT = NodeType("Account", "id", int, "account", ("kind", "currency", "status", "opened_at"))
MERCHANT = NodeType("Merchant", "id", int, "merchant", ("name", "mcc", "country", "created_at"))
DEVICE = NodeType("Device", "id", str, "device", ("os", "user_agent", "first_seen"))
IP = NodeType("IP", "address", str, None)
TRANSACTION = NodeType(
    "Transaction",
    "id",
    int,
    "transaction",
    # amount is a float for features and queries; amount_text keeps the exact decimal.
    ("kind", "amount", "amount_text", "currency", "status", "created_at", "updated_at"),
)
NODE_TYPES = (CUSTOMER, ACCOUNT, MERCHANT, DEVICE, IP, TRANSACTION)

# Properties stored as Neo4j DateTime. They travel as ISO-8601 text and are converted by Cypher's
# datetime(): the Python driver packs a datetime object ~15x slower than a string (measured: ~80 us
# vs ~5 us per value), which made timestamps the single largest cost of a batch.
TIMESTAMP_PROPS = frozenset({"created_at", "opened_at", "first_seen", "updated_at", "at", "reported_at"})


@dataclass(frozen=True)
class Link:
    """An edge a node row owns, to the node named by one of its fields (None: no edge)."""

    rel: str
    field: str  # row field with the other end's key
    other: NodeType
    outgoing: bool  # True: (row node)-[rel]->(other); False: (other)-[rel]->(row node)


# The edges each entity's own row owns: written with it, replaced when the field changes.
NODE_LINKS: dict[str, tuple[Link, ...]] = {
    "Account": (Link("OWNS", "customer_id", CUSTOMER, outgoing=False),),
    "Transaction": (
        Link("INITIATED", "account_id", ACCOUNT, outgoing=False),
        Link("PAYS", "merchant_id", MERCHANT, outgoing=True),
        Link("TRANSFER_TO", "counterparty_account_id", ACCOUNT, outgoing=True),
        Link("USING_DEVICE", "device_id", DEVICE, outgoing=True),
        Link("FROM_IP", "ip", IP, outgoing=True),
    ),
}


@dataclass(frozen=True)
class FactEdge:
    """One relationship recording a fact row: (source node)-[rel]->(target node)."""

    rel: str
    source: NodeType
    source_field: str
    target: NodeType
    target_field: str
    self_if_missing: bool = False  # no target key: point the edge at the source node itself


@dataclass(frozen=True)
class FactType:
    """A source row stored as relationships (no node of its own), keyed by a property on them."""

    entity: str
    key: str  # relationship property holding the row's id (indexed)
    props: tuple[str, ...]
    edges: tuple[FactEdge, ...]


LOGIN = FactType(
    "login",
    "login_id",
    ("at", "success"),
    (
        FactEdge("LOGGED_IN", CUSTOMER, "customer_id", DEVICE, "device_id"),
        FactEdge("LOGIN_FROM", CUSTOMER, "customer_id", IP, "ip"),
    ),
)
PROFILE_CHANGE = FactType(
    "profile_change",
    "change_id",
    ("field", "at", "ip"),
    (FactEdge("CHANGED_PROFILE", CUSTOMER, "customer_id", DEVICE, "device_id", self_if_missing=True),),
)
FACT_TYPES = (LOGIN, PROFILE_CHANGE)

# Fraud reports: label properties on the Transaction, with their own version and time.
FRAUD_REPORT_ENTITY = "fraud_report"
FRAUD_REPORT_ID, FRAUD_REPORT_KIND, FRAUD_REPORTED_AT = "fraud_report_id", "fraud_report_kind", "reported_at"
FRAUD_REPORT_VERSION, FRAUD_REPORT_TS_MS, FRAUD_REPORT_DELETED = (
    "fraud_report_version",
    "fraud_report_ts_ms",
    "fraud_report_deleted",
)
FRAUD_REPORT_PROPS = (
    FRAUD_REPORT_ID,
    FRAUD_REPORT_KIND,
    FRAUD_REPORTED_AT,
    FRAUD_REPORT_VERSION,
    FRAUD_REPORT_TS_MS,
    FRAUD_REPORT_DELETED,
)

NODE_BY_ENTITY = {n.entity: n for n in NODE_TYPES if n.entity}
FACT_BY_ENTITY = {f.entity: f for f in FACT_TYPES}
REL_TYPES = tuple(
    dict.fromkeys(
        [link.rel for links in NODE_LINKS.values() for link in links] + [e.rel for f in FACT_TYPES for e in f.edges]
    )
)

# Every name above is spliced into Cypher text, so each must be a plain identifier: checked once here
# rather than trusted, so a typo'd constant fails at import instead of producing odd Cypher.
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
for _name in (
    *(n.label for n in NODE_TYPES),
    *(n.key for n in NODE_TYPES),
    *(p for n in NODE_TYPES for p in n.props),
    *REL_TYPES,
    *(f.key for f in FACT_TYPES),
    *(p for f in FACT_TYPES for p in f.props),
    *FRAUD_REPORT_PROPS,
    *BOOKKEEPING,
):
    if not _IDENT.match(_name):
        raise ValueError(f"graph model name {_name!r} is not a plain identifier")
