"""Writes the workload into the bank's real PostgreSQL, so it travels the real CDC path
(WAL -> Debezium -> Kafka -> worker).

Rows go in event-time order, grouped into transactions of ``batch_rows`` rows (as an application
commits), each run of same-table same-op rows sent with ``executemany`` (psycopg pipelines it: one
round trip per group, not per row). Only parameters carry data; table and column names are
``psycopg.sql.Identifier``s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import psycopg
from psycopg import sql

from fraudgraph.stack.simulator.pacing import Pacer, SinkReport
from fraudgraph.stack.simulator.rows import TABLES, Row

ID_BLOCK = 1_000_000


def _statements() -> dict[tuple[str, str], sql.Composed]:
    out = {}
    for table, columns in TABLES.items():
        names = [c.name for c in columns]
        out[table, "insert"] = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
            sql.Identifier(table),
            sql.SQL(", ").join(map(sql.Identifier, names)),
            sql.SQL(", ").join(sql.Placeholder() * len(names)),
        )
        out[table, "update"] = sql.SQL("UPDATE {} SET {} WHERE {} = %s").format(
            sql.Identifier(table),
            sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(n)) for n in names[1:]),
            sql.Identifier(names[0]),
        )
    return out


def _params(row: Row) -> tuple:
    columns = TABLES[row.table]
    if row.op == "insert":
        return tuple(row.values[c.name] for c in columns)
    return tuple(row.values[c.name] for c in columns[1:]) + (row.values[columns[0].name],)


def next_free_id_base(dsn: str) -> int:
    """An id_base above every BIGINT id already in the database (rounded up to a block of a
    million), so a run never collides with earlier runs or the demo's rows."""
    tables = [t for t, cols in TABLES.items() if cols[0].sql_type == "bigint"]
    query = sql.SQL("SELECT GREATEST({})").format(
        sql.SQL(", ").join(sql.SQL("(SELECT COALESCE(MAX(id), 0) FROM {})").format(sql.Identifier(t)) for t in tables)
    )
    with psycopg.connect(dsn) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None  # a SELECT without FROM is always one row
    highest = row[0]
    return (highest // ID_BLOCK + 1) * ID_BLOCK


def write_postgres(
    rows: Iterable[Row],
    dsn: str,
    *,
    batch_rows: int = 200,
    rate: float | None = None,
    progress: Callable[[SinkReport], None] | None = None,
) -> SinkReport:
    """Insert/update ``rows`` in order; ``rate`` caps payment transactions per second (wall clock)."""
    if not 1 <= batch_rows <= 10_000:
        raise ValueError("batch_rows must be in 1..10000")
    statements = _statements()
    report, pacer = SinkReport(), Pacer(rate)
    tx_limit = pacer.batch_limit(batch_rows)
    with psycopg.connect(dsn) as conn:
        batch: list[Row] = []
        tx_in_batch = 0

        def flush() -> None:
            nonlocal tx_in_batch
            pacer.wait(report.transactions + tx_in_batch)
            with conn.cursor() as cur:
                start = 0
                for i in range(1, len(batch) + 1):  # one executemany per run of same table and op
                    if i == len(batch) or (batch[i].table, batch[i].op) != (batch[start].table, batch[start].op):
                        cur.executemany(
                            statements[batch[start].table, batch[start].op], [_params(r) for r in batch[start:i]]
                        )
                        start = i
            conn.commit()
            for r in batch:
                report.count(r)
            report.commits += 1
            batch.clear()
            tx_in_batch = 0
            if progress:
                report.elapsed_s = pacer.elapsed()
                progress(report)

        for row in rows:
            batch.append(row)
            if row.table == "transactions" and row.op == "insert":
                tx_in_batch += 1
            if len(batch) >= batch_rows or tx_in_batch >= tx_limit:
                flush()
        if batch:
            flush()
    report.elapsed_s = pacer.elapsed()
    return report
