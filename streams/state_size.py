"""How many entries the worker's state holds (node states in memory, the scores table), cheaply
enough to report every few seconds.

A RocksDB-backed table is counted with RocksDB's own ``rocksdb.estimate-num-keys`` per partition
database (O(1), approximate after overwrites until compaction); counting exactly would iterate the
whole store. An in-memory table (``memory://``) is counted exactly.
"""

from __future__ import annotations

from fraudgraph.streams import metrics


def table_entries(table) -> int:
    store = table.data
    dbs = getattr(store, "_dbs", None)
    if dbs is not None:
        return sum(db.property_int_value("rocksdb.estimate-num-keys") or 0 for db in list(dbs.values()))
    return len(store)


def report(entries: dict[str, int]) -> None:
    for name, n in entries.items():
        metrics.STATE_ENTRIES.labels(name).set(n)
