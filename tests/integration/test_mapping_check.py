"""``fraudgraph mapping check`` against the running stack: the shipped mapping decodes what Debezium
captured from PostgreSQL, and a mapping with a wrong column name fails, naming the table and column.

The CDC topics are shared and hold earlier tests' rows (and some deliberate junk): the check only
reads them. One row per table is written first, so that no table's topic is empty on a fresh stack.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime

import psycopg

from fraudgraph.connectors import mapping_check as mc
from fraudgraph.connectors.mapping import DEFAULT_MAPPING, load_mapping

TABLES = list(load_mapping(DEFAULT_MAPPING).tables)


def write_one_row_per_table(settings) -> None:
    now = datetime.now(UTC)
    device = f"mapcheck-{uuid.uuid4().hex[:12]}"
    with psycopg.connect(settings.pg_dsn()) as conn:
        base = 10_000 + max(
            conn.execute(f"SELECT coalesce(max(id), 0) FROM {table}").fetchone()[0]  # our own table names
            for table in TABLES
            if table != "devices"
        )
        conn.execute(
            "INSERT INTO customers VALUES (%s, 'Mapping Check', 'mc@example.com', NULL, 'GB', 1, %s)", [base, now]
        )
        conn.execute("INSERT INTO accounts VALUES (%s, %s, 'checking', 'GBP', 'active', %s)", [base, base, now])
        conn.execute("INSERT INTO merchants VALUES (%s, 'Check Shop', '5411', 'GB', %s)", [base, now])
        conn.execute("INSERT INTO devices VALUES (%s, 'linux', 'check/1.0', %s)", [device, now])
        conn.execute("INSERT INTO logins VALUES (%s, %s, %s, '192.0.2.7', true, %s)", [base, base, device, now])
        conn.execute(
            "INSERT INTO profile_changes VALUES (%s, %s, 'email', %s, '192.0.2.7', %s)", [base, base, device, now]
        )
        conn.execute(
            "INSERT INTO transactions (id, account_id, kind, amount, currency, merchant_id, device_id, ip, status,"
            " created_at, updated_at) VALUES (%s, %s, 'card_payment', 12.34, 'GBP', %s, %s, '192.0.2.7', 'pending',"
            " %s, %s)",
            [base, base, base, device, now, now],
        )
        conn.execute("INSERT INTO fraud_reports VALUES (%s, %s, 'chargeback', %s)", [base, base, now])
        conn.commit()


def wait_every_topic_has_records(settings, timeout: float = 60.0) -> None:
    topics = load_mapping(DEFAULT_MAPPING).topics(settings.topic_prefix)
    deadline = time.monotonic() + timeout
    while True:
        sample = mc.sample_topics(settings, topics, 1, timeout_s=10)
        empty = [t for t in topics if not sample.records[t]]
        if not empty:
            return
        assert time.monotonic() < deadline, f"no CDC records on {empty}"
        time.sleep(1)


def mapping_check(settings, path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "FRAUDGRAPH_KAFKA_BOOTSTRAP": settings.kafka_bootstrap}
    return subprocess.run(
        [sys.executable, "-m", "fraudgraph.cli", "mapping", "check", "--mapping", str(path), "--sample", "50", *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_good_mapping_passes_and_a_wrong_column_fails_naming_it(stack, tmp_path):
    write_one_row_per_table(stack)
    wait_every_topic_has_records(stack)

    good = mapping_check(stack, DEFAULT_MAPPING, "--json")
    assert good.returncode == 0, good.stdout + good.stderr
    report = json.loads(good.stdout)
    assert report["ok"] is True and [t["table"] for t in report["tables"]] == TABLES
    for t in report["tables"]:
        assert t["topic"] == f"{stack.topic_prefix}.public.{t['table']}"
        assert 0 < t["read"] <= 50 and t["rows"] > 0, t  # junk written by other tests may fail, rows decode
        assert t["status"] in ("ok", "some failed"), t

    wrong = tmp_path / "wrong.toml"
    text = DEFAULT_MAPPING.read_text()
    wrong.write_text(text.replace('amount = { column = "amount",', 'amount = { column = "amount_minor",'))
    assert wrong.read_text() != text
    bad = mapping_check(stack, wrong)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    lines = bad.stdout.splitlines()
    row = next(line for line in lines if line.startswith("transactions "))
    assert "all failed" in row and "missing_field=" in row
    assert "    first missing_field: transactions.amount_minor is null or absent" in lines
    assert lines[-1].startswith("FAILED: no row decoded in transactions")
    by_table = {line.split()[0]: line for line in lines if line.split() and line.split()[0] in TABLES}
    assert list(by_table) == TABLES
    assert [t for t, line in by_table.items() if "all failed" in line] == ["transactions"]
