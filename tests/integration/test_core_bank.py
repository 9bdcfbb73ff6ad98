"""Another bank's schema end to end: connectors/mappings/core_bank.sql in PostgreSQL, captured by the
stack's Debezium connector (it streams every table, so ``core.*`` lands in ``bank.core.*``), decoded by
a worker told ``FRAUDGRAPH_MAPPING_FILE=connectors/mappings/core_bank.toml``.

The bank keeps integer cents, status codes, text and composite keys, epoch and DD/MM/YYYY times, and
no devices, IPs, KYC levels or account opening dates. Every payment must get exactly one score, the
graph must hold the run's clients, accounts (keyed ``branch/number``), merchants and payments with
their converted values, nothing may be dead-lettered, the rules that can work from what the bank
keeps must fire (an amount far above the account's history, a merchant with many chargebacks), and
those that need what it does not keep must not fire and must say why."""

from __future__ import annotations

import json
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from neo4j import GraphDatabase

import fraudgraph.connectors
from fraudgraph.streams.app import worker_topics
from fraudgraph.streams.cdc_loop import cdc_group
from fraudgraph.streams.graph_sink import graph_group
from fraudgraph.streams.rules import SKIPPED
from fraudgraph.streams.topics import ensure_topics

from support.stack import (
    ID_SPAN,
    TopicReader,
    cdc_topics,
    commit_group_offsets,
    end_offset,
    read_scores,
    scored_ids,
    scrape,
)

MAPPINGS = Path(fraudgraph.connectors.__file__).resolve().parent / "mappings"
CORE_SQL, CORE_MAPPING = MAPPINGS / "core_bank.sql", MAPPINGS / "core_bank.toml"
# Payment, account and case numbers of a run lie in [base, base + ID_SPAN), far above the simulator's
# ids (postgres mode: above public's ids; kafka mode: epoch seconds * 1000), which share the graph's
# Transaction ids; below 2**53, so they survive any JSON reader.
CORE_ID_FLOOR = 5 * 10**15
STATUS = {0: "pending", 1: "authorized", 2: "declined", 3: "settled", 4: "reversed"}
MERCHANTS = {  # suffix -> trading name, MCC, country (the bank stores it in lower case)
    "GROCER": ("Corner Grocer", "5411", "gb"),
    "CAFE": ("Cafe Lumiere", "5814", "fr"),
    "RAIL": ("Rail Tickets", "4111", "gb"),
    "BOOKS": ("Book Nook", "5942", "ie"),
    "GIFTS": ("Gift Cards 24", "5999", "cy"),  # where stolen cards are spent: chargebacks follow
}
ACCOUNTS = 10
HISTORY = 12  # ordinary payments per account before anything happens
ANOMALY_CENTS = 250_000  # 2,500.00 after a history of 3.00..80.00
DEVICE, IP = "TransactionRow.device_id", "TransactionRow.ip"  # the payment fields the bank does not record


@dataclass
class CoreBank:
    """A small deterministic bank, written in commits that follow each other in time."""

    run: str
    base: int
    now: datetime
    clients: list[tuple] = field(default_factory=list)
    merchants: list[tuple] = field(default_factory=list)
    accounts: list[tuple] = field(default_factory=list)
    history: list[tuple] = field(default_factory=list)  # payments before the chargebacks
    chargebacks: list[tuple] = field(default_factory=list)
    later: list[tuple] = field(default_factory=list)  # payments after them
    updates: list[tuple[int, int]] = field(default_factory=list)  # (payment_no, new status_code)
    anomaly: int = 0  # the payment far above its account's history
    gifts_after_reports: list[int] = field(default_factory=list)  # payments at the merchant once reported

    @property
    def payments(self) -> list[tuple]:
        return self.history + self.later

    def merchant(self, suffix: str) -> str:
        return f"M-{self.run}-{suffix}"


def make_bank(run: str, base: int, now: datetime) -> CoreBank:
    rng = random.Random(19)
    bank = CoreBank(run, base, now)
    for i in range(ACCOUNTS // 2):
        # Mixed-case e-mail as typed; onboarded some days ago, in epoch seconds.
        bank.clients.append(
            (f"C-{run}-{i}", f"Client {i}", f"Client.{i}@Example.COM", int((now - timedelta(days=30 + i)).timestamp()))
        )
    for suffix, (name, mcc, country) in MERCHANTS.items():
        bank.merchants.append(
            (bank.merchant(suffix), name, mcc, country, int((now - timedelta(days=400)).timestamp() * 1000))
        )
    for i in range(ACCOUNTS):
        bank.accounts.append(
            ("LDN" if i % 2 else "MAN", base + i, f"C-{run}-{i // 2}", ("CUR", "SAV", "WAL")[i % 3], 2 if i == 9 else 1)
        )
    ids = iter(range(base, base + ID_SPAN))

    def pay(account: tuple, merchant: str, cents: int, status: int = 1) -> tuple:
        at = now - timedelta(seconds=rng.randint(0, 600))
        return (next(ids), account[0], account[1], merchant, cents, "eur", status, at)

    ordinary = [bank.merchant(s) for s in ("GROCER", "CAFE", "RAIL", "BOOKS")]
    for account in bank.accounts:
        for _ in range(HISTORY):
            bank.history.append(
                pay(account, rng.choice(ordinary), rng.randint(300, 8_000), rng.choice((1, 1, 1, 3, 2)))
            )
    gifts = [pay(account, bank.merchant("GIFTS"), 15_000) for account in bank.accounts[:5]]
    bank.history += gifts
    # Cases opened on three of the gift-card payments (fraud, a chargeback) and one dismissed.
    today = now.strftime("%d/%m/%Y")
    for n, (payment, code) in enumerate(zip(gifts, ("FR", "CB", "FR", "NF"))):
        bank.chargebacks.append((base + n, payment[0], code, today))
    later = [pay(account, bank.merchant("GIFTS"), 15_000) for account in bank.accounts[5:8]]
    bank.gifts_after_reports = [p[0] for p in later]
    anomaly = pay(bank.accounts[0], bank.merchant("BOOKS"), ANOMALY_CENTS)
    bank.anomaly = anomaly[0]
    later.append(anomaly)
    later += [pay(a, rng.choice(ordinary), rng.randint(300, 8_000)) for a in bank.accounts[5:] for _ in range(3)]
    bank.later = later
    bank.updates = [(p[0], 3) for p in bank.history[:15] if p[6] == 1] + [(bank.history[20][0], 4)]
    return bank


def create_core_schema(settings) -> None:
    # As the owner of the database (as connectors/bank_schema.sql is created): the connector's role
    # then reads the new tables, and the publication FOR ALL TABLES already covers them.
    with psycopg.connect(settings.pg_dsn()) as conn:
        conn.execute(CORE_SQL.read_text())


def next_base(settings) -> int:
    with psycopg.connect(settings.pg_dsn()) as conn:
        highest = conn.execute("SELECT coalesce(max(payment_no), 0) FROM core.payments").fetchone()[0]
    return max(CORE_ID_FLOOR, (highest // ID_SPAN + 1) * ID_SPAN)


def write_bank(settings, bank: CoreBank) -> None:
    """Entities, then the payments, then the cases, then later payments and status changes: one
    commit each, a moment apart, so their commit times (the engine's event time) are in this order."""
    payment_sql = "INSERT INTO core.payments VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
    with psycopg.connect(settings.pg_dsn()) as conn:
        with conn.transaction():
            conn.cursor().executemany("INSERT INTO core.clients VALUES (%s, %s, %s, %s)", bank.clients)
            conn.cursor().executemany("INSERT INTO core.merchants VALUES (%s, %s, %s, %s, %s)", bank.merchants)
            conn.cursor().executemany("INSERT INTO core.accounts VALUES (%s, %s, %s, %s, %s)", bank.accounts)
        time.sleep(0.5)
        with conn.transaction():
            conn.cursor().executemany(payment_sql, bank.history)
        time.sleep(1)
        with conn.transaction():
            conn.cursor().executemany("INSERT INTO core.chargebacks VALUES (%s, %s, %s, %s)", bank.chargebacks)
        time.sleep(1)
        with conn.transaction():
            conn.cursor().executemany(payment_sql, bank.later)
        with conn.transaction():
            conn.cursor().executemany(
                "UPDATE core.payments SET status_code = %s WHERE payment_no = %s", [(s, p) for p, s in bank.updates]
            )


def read_topic_for(reader: TopicReader, seconds: float) -> list:
    return reader.read_until(lambda _: False, timeout=seconds)


def records_in(settings, topic: str) -> int:
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"probe-{uuid.uuid4().hex}"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(end_offset(consumer, topic, p) for p in partitions)
    finally:
        consumer.close()


GRAPH = """
MATCH (t:Transaction) WHERE t.id IN $payments
OPTIONAL MATCH (a:Account)-[:INITIATED]->(t)
OPTIONAL MATCH (t)-[:PAYS]->(m:Merchant)
OPTIONAL MATCH (t)-[:USING_DEVICE|FROM_IP|TRANSFER_TO]->(x)
RETURN t.id AS id, a.id AS account, m.id AS merchant, t.amount_text AS amount, t.currency AS currency,
       t.kind AS kind, t.status AS status, t.fraud_report_kind AS report, t.reported_at AS reported_at,
       count(x) AS unknown_links
"""
ENTITIES = """
MATCH (a:Account) WHERE a.id IN $accounts
OPTIONAL MATCH (c:Customer)-[:OWNS]->(a)
RETURN a.id AS account, c.id AS owner, a.kind AS kind, a.status AS status, a.currency AS currency,
       a.opened_at AS opened_at, c.email AS email, c.created_at AS onboarded, c.kyc_level AS kyc,
       c.country AS country, c.phone AS phone
"""
MERCHANT_NODES = (
    "MATCH (m:Merchant) WHERE m.id IN $merchants RETURN m.id AS id, m.country AS country, m.created_at AS at"
)


def test_core_bank_schema_through_postgres_debezium_and_the_worker(stack, worker_process, tmp_path):
    run = uuid.uuid4().hex[:8]
    env = {
        "FRAUDGRAPH_MAPPING_FILE": str(CORE_MAPPING),
        "FRAUDGRAPH_WORKER_ID": f"test-core-{run}",
        "FRAUDGRAPH_SCORES_TOPIC": f"test.scores.core{run}",
        "FRAUDGRAPH_DEAD_LETTER_TOPIC": f"test.dead-letters.core{run}",
        "FRAUDGRAPH_MODEL_DIR": str(tmp_path / "no-models"),  # rules alone: what they say is the point
    }
    settings = stack.replace(
        mapping_file=env["FRAUDGRAPH_MAPPING_FILE"],
        worker_id=env["FRAUDGRAPH_WORKER_ID"],
        scores_topic=env["FRAUDGRAPH_SCORES_TOPIC"],
        dead_letter_topic=env["FRAUDGRAPH_DEAD_LETTER_TOPIC"],
    )
    topics = cdc_topics(settings)
    assert topics == [
        f"{stack.topic_prefix}.core.{t}" for t in ("clients", "accounts", "merchants", "payments", "chargebacks")
    ]
    create_core_schema(settings)
    bank = make_bank(run, next_base(settings), datetime.now(UTC).replace(microsecond=0))
    # The bank.core.* topics keep earlier runs' rows: this run's worker starts at their end.
    ensure_topics(settings, worker_topics(settings))
    for group in (cdc_group(settings), graph_group(settings)):
        commit_group_offsets(stack, group, topics)
    scores = TopicReader(stack, settings.scores_topic)
    try:
        worker = worker_process(**env)
        write_bank(settings, bank)
        messages = read_scores(scores, bank.base, len(bank.payments), timeout=90)
        messages += read_topic_for(scores, 3)  # anything more would be a second score
    finally:
        scores.close()

    # Every payment scored, exactly once, under its composite account key.
    counts = scored_ids(messages, bank.base)
    assert set(counts) == {p[0] for p in bank.payments}
    assert set(counts.values()) == {1}
    records = {r["transaction_id"]: r for r in (json.loads(m.value()) for m in messages)}
    for p in bank.payments:
        r = records[p[0]]
        assert r["account_id"] == f"{p[1]}/{p[2]}"
        assert r["source"]["topic"] == f"{stack.topic_prefix}.core.payments"
        assert r["model_version"] == "none"
    codes = {tx: [x["code"] for x in r["reasons"]] for tx, r in records.items()}
    hits = {tx: {x["code"]: x["detail"] for x in r["reasons"] if x["code"] != SKIPPED} for tx, r in records.items()}
    skipped = {  # rule -> why it could not decide
        tx: dict(x["detail"].split(": ", 1) for x in r["reasons"] if x["code"] == SKIPPED) for tx, r in records.items()
    }

    # What the bank keeps is enough for these: 2,500.00 after a history of small cents amounts...
    assert {tx for tx, h in hits.items() if "amount_anomaly" in h} == {bank.anomaly}
    assert "2500.00" in hits[bank.anomaly]["amount_anomaly"]
    # ...and a merchant whose payers' cases were fraud or chargebacks (FR, CB; NF is no fraud).
    reported_merchant = {tx for tx, h in hits.items() if "reported as fraud" in h.get("colluding_merchant", "")}
    assert reported_merchant == set(bank.gifts_after_reports)
    assert set().union(*map(set, hits.values())) == {"amount_anomaly", "colluding_merchant", "model_unavailable"}

    # The rules that need a payment's device or IP, which this bank does not record, never fire and
    # say so on every payment, after the reasons that decided; they decide nothing.
    no_device = f"{DEVICE} unknown (not in the mapping)"
    no_ip = f"{IP} unknown (not in the mapping)"
    for tx, why in skipped.items():
        assert codes[tx][-len(why) :] == [SKIPPED] * len(why), codes[tx]
        assert no_device in why["velocity"]
        assert no_device in why["shared_device_or_ip"] and no_ip in why["shared_device_or_ip"]
        assert no_device in why["fraud_proximity"] and no_ip in why["fraud_proximity"]
        # The merchant rule's other finding, reports, needs no device: where it fired, nothing was skipped.
        assert ("colluding_merchant" in why) == (tx not in reported_merchant)
        assert set(why) <= {
            "velocity",
            "new_device_or_ip",
            "shared_device_or_ip",
            "fraud_proximity",
            "colluding_merchant",
        }
    # An established account (5 payments or more before) would be checked for a new device or IP: it says why not.
    assert no_device in skipped[bank.anomaly]["new_device_or_ip"] and no_ip in skipped[bank.anomaly]["new_device_or_ip"]
    assert {tx: r["decision"] for tx, r in records.items()} == {
        p[0]: "review" if p[0] in reported_merchant else "approve" for p in bank.payments
    }

    # The graph: the run's clients, accounts, merchants and payments, with converted values.
    auth = (stack.neo4j_user, stack.neo4j_password) if stack.neo4j_password else None
    final_status = {p[0]: STATUS[p[6]] for p in bank.payments} | {p: STATUS[s] for p, s in bank.updates}
    reported = {
        c[1]: {"FR": "confirmed_fraud", "CB": "chargeback", "NF": "false_positive"}[c[2]] for c in bank.chargebacks
    }
    expected = {
        p[0]: {
            "account": f"{p[1]}/{p[2]}",
            "merchant": p[3],
            "amount": f"{p[4] // 100}.{p[4] % 100:02d}",
            "currency": "EUR",
            "kind": "card_payment",
            "status": final_status[p[0]],
            "report": reported.get(p[0]),
            "unknown_links": 0,
        }
        for p in bank.payments
    }
    with GraphDatabase.driver(stack.neo4j_uri, auth=auth) as driver:
        deadline = time.monotonic() + 60
        while True:
            rows = driver.execute_query(GRAPH, payments=list(expected)).records
            got = {r["id"]: {k: r[k] for k in expected[bank.anomaly]} for r in rows}
            if got == expected or time.monotonic() > deadline:
                break
            time.sleep(1)
        entities = driver.execute_query(ENTITIES, accounts=[f"{a[0]}/{a[1]}" for a in bank.accounts]).records
        merchants = driver.execute_query(MERCHANT_NODES, merchants=[m[0] for m in bank.merchants]).records
        reported_at = {r["id"]: r["reported_at"] for r in rows if r["reported_at"] is not None}
    assert got == expected
    assert {tx: at.to_native() for tx, at in reported_at.items()} == {
        tx: datetime(bank.now.year, bank.now.month, bank.now.day, tzinfo=UTC) for tx in reported
    }
    clients = {c[0]: c for c in bank.clients}
    assert len(entities) == len(bank.accounts)
    by_account = {r["account"]: r for r in entities}
    for branch, number, client, product, state in bank.accounts:
        row = by_account[f"{branch}/{number}"]
        assert row["owner"] == client
        kind = {"CUR": "checking", "SAV": "savings", "WAL": "wallet"}[product]
        assert (row["kind"], row["status"]) == (kind, {1: "active", 2: "frozen"}[state])
        assert row["email"] == clients[client][2].lower()
        assert row["onboarded"].to_native() == datetime.fromtimestamp(clients[client][3], UTC)
        # Left out of the mapping: absent, not a default.
        assert (row["currency"], row["opened_at"], row["kyc"], row["country"], row["phone"]) == (None,) * 5
    assert {m["id"]: (m["country"], m["at"].to_native()) for m in merchants} == {
        m[0]: (m[3].upper(), datetime.fromtimestamp(m[4] / 1000, UTC)) for m in bank.merchants
    }

    # Every change decoded (the status updates came last), nothing dead-lettered.
    decoded = {
        "CustomerUpserted": len(bank.clients),
        "MerchantUpserted": len(bank.merchants),
        "AccountUpserted": len(bank.accounts),
        "TransactionCreated": len(bank.payments),
        "FraudReported": len(bank.chargebacks),
        "TransactionUpdated": len(bank.updates),
    }
    deadline = time.monotonic() + 30
    while True:
        metrics = scrape(worker["port"])
        got = {e: metrics.get(f'fraudgraph_events_decoded_total{{event="{e}"}}', 0) for e in decoded}
        if got == decoded or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert got == decoded
    assert records_in(stack, settings.dead_letter_topic) == 0
    assert not {k: v for k, v in metrics.items() if k.startswith("fraudgraph_dead_letters_total") and v}
