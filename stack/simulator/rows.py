"""The simulator's output vocabulary: row operations on the reference schema, and the ground truth.

Why a table description here rather than reading ``bank_schema.sql``: the generator, both sinks and
the Debezium encoder must agree on column *order* and *types* (the Kafka sink reproduces the exact
Connect schema Debezium derives from them). One small literal table keeps that in one place; a unit
test checks it against the SQL file so the two cannot drift.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

Op = Literal["insert", "update"]


@dataclass(frozen=True, slots=True)
class Row:
    """One operation on the source database, as the bank's application would issue it.

    ``values`` is the full row after the operation, keyed by column in table order. For an
    ``update`` the row is replaced by primary key ``id``, and ``before`` holds the previous image
    (what Debezium shows as ``before`` with REPLICA IDENTITY FULL), so sinks need no state.
    ``at`` is the simulated wall-clock time of the operation; the stream is ordered by it.
    """

    table: str
    op: Op
    values: dict[str, Any]
    at: datetime
    before: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    sql_type: str  # bigint | text | char | smallint | boolean | timestamptz | numeric
    nullable: bool
    default: Any = None  # a column DEFAULT that Debezium reports in the Connect schema
    precision: int | None = None  # numeric only
    scale: int | None = None  # numeric only


def _c(name: str, sql_type: str, nullable: bool = False, **kw) -> Column:
    return Column(name, sql_type, nullable, **kw)


# Column order is the CREATE TABLE order of connectors/bank_schema.sql (Debezium follows it).
TABLES: dict[str, tuple[Column, ...]] = {
    "customers": (
        _c("id", "bigint"),
        _c("full_name", "text"),
        _c("email", "text"),
        _c("phone", "text", True),
        _c("country", "char"),
        _c("kyc_level", "smallint", default=0),
        _c("created_at", "timestamptz"),
    ),
    "accounts": (
        _c("id", "bigint"),
        _c("customer_id", "bigint"),
        _c("kind", "text"),
        _c("currency", "char"),
        _c("status", "text"),
        _c("opened_at", "timestamptz"),
    ),
    "merchants": (
        _c("id", "bigint"),
        _c("name", "text"),
        _c("mcc", "char"),
        _c("country", "char"),
        _c("created_at", "timestamptz"),
    ),
    "devices": (
        _c("id", "text"),
        _c("os", "text", True),
        _c("user_agent", "text", True),
        _c("first_seen", "timestamptz"),
    ),
    "logins": (
        _c("id", "bigint"),
        _c("customer_id", "bigint"),
        _c("device_id", "text", True),
        _c("ip", "text"),
        _c("success", "boolean"),
        _c("at", "timestamptz"),
    ),
    "profile_changes": (
        _c("id", "bigint"),
        _c("customer_id", "bigint"),
        _c("field", "text"),
        _c("device_id", "text", True),
        _c("ip", "text", True),
        _c("at", "timestamptz"),
    ),
    "transactions": (
        _c("id", "bigint"),
        _c("account_id", "bigint"),
        _c("kind", "text"),
        _c("amount", "numeric", precision=18, scale=2),
        _c("currency", "char"),
        _c("merchant_id", "bigint", True),
        _c("counterparty_account_id", "bigint", True),
        _c("device_id", "text", True),
        _c("ip", "text", True),
        _c("status", "text"),
        _c("created_at", "timestamptz"),
        _c("updated_at", "timestamptz"),
    ),
    "fraud_reports": (
        _c("id", "bigint"),
        _c("transaction_id", "bigint"),
        _c("kind", "text"),
        _c("reported_at", "timestamptz"),
    ),
}

# Foreign keys (table, column) -> referenced table; every reference points at a row emitted earlier.
FOREIGN_KEYS: dict[tuple[str, str], str] = {
    ("accounts", "customer_id"): "customers",
    ("logins", "customer_id"): "customers",
    ("logins", "device_id"): "devices",
    ("profile_changes", "customer_id"): "customers",
    ("profile_changes", "device_id"): "devices",
    ("transactions", "account_id"): "accounts",
    ("transactions", "merchant_id"): "merchants",
    ("transactions", "counterparty_account_id"): "accounts",
    ("transactions", "device_id"): "devices",
    ("fraud_reports", "transaction_id"): "transactions",
}

PATTERNS = ("card_testing", "account_takeover", "mule_ring", "synthetic_identity", "colluding_merchant")


@dataclass
class GroundTruth:
    """What really happened, for tests and benchmarks. The engine never sees this object: its only
    view of the truth is the ``fraud_reports`` rows, which arrive late (and only for ``reported``)."""

    labels: dict[int, str] = field(default_factory=dict)  # fraudulent transaction id -> pattern
    legit_transactions: int = 0
    reported: dict[int, str] = field(default_factory=dict)  # transaction id -> report kind
    false_positives: set[int] = field(default_factory=set)  # legit transactions with a false_positive report

    def is_fraud(self, transaction_id: int) -> bool:
        return transaction_id in self.labels

    def pattern_counts(self) -> dict[str, int]:
        counts = Counter(self.labels.values())
        return {p: counts.get(p, 0) for p in PATTERNS}

    @property
    def fraud_transactions(self) -> int:
        return len(self.labels)

    @property
    def fraud_fraction(self) -> float:
        total = self.fraud_transactions + self.legit_transactions
        return self.fraud_transactions / total if total else 0.0
