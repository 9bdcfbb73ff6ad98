"""How the worker's Faust table (``scores``) is stored, and the corrections to Faust it needs.

1. ``KeyPartitionedRocksDBStore``: each key kept in the partition its changelog record went to.
Why: the worker's tables are written by key, not by the partition of the event being processed,
while Faust's RocksDB store files a write under the partition of that event. A key written while
processing events from different input partitions then ends up in several local databases, and
after a restart a read may find a stale copy first (and a replay re-applies events that copy has
not seen). Filing every write where its changelog record is keeps exactly one copy per key, in the
same place recovery from the changelog puts it.

2. ``AckedTable``: a table whose local copy is written only once Kafka has acknowledged the
changelog record. Why: the scores table's changelog *is* ``fraud.scores``, and "this transaction is
scored" must mean "its record is in Kafka". Faust writes the local store first and sends the
changelog record after, so a SIGKILL in between leaves a transaction marked scored locally with
no record anywhere, and its replay skips it (the SIGKILL tests in tests/integration catch it).
Writing the local copy in the delivery callback, before Faust records the acknowledged offset,
closes that: a record acknowledged but not yet copied locally lies after the persisted offset, so
recovery reads it back from the changelog before any event is replayed.

3. ``AckedTable.put(key, value, partition)``: a write to a chosen changelog partition. The scores
table uses it to put a transaction's record in the partition number of the CDC event that
carried the transaction, so the "scored" marker moves with that CDC partition when a group
rebalances: the member that takes the partition over recovers exactly the markers of the
transactions it will replay. Filed by id (murmur2) instead, the marker can sit in a partition
the other member writes and the new owner never reads, so the new owner scores the transaction a
second time (the two-workers-one-killed test catches it).
"""

from __future__ import annotations

import faust
from aiokafka.partitioner import murmur2
from faust import stores
from faust.stores.rocksdb import Store as RocksDBStore

SCHEME = "fraudgraph-rocksdb"


def key_partition(key: bytes, partitions: int) -> int:
    """The partition of a record sent by key (aiokafka's DefaultPartitioner, Kafka's murmur2)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class KeyPartitionedRocksDBStore(RocksDBStore):
    def _key_partition(self, key: bytes) -> int:
        return key_partition(key, self.table.partitions or self.app.conf.topic_partitions)

    def put_in_partition(self, key: bytes, value: bytes | None, partition: int) -> None:
        self._key_index[key] = partition
        self._db_for_partition(partition).put(key, value)

    def _set(self, key: bytes, value: bytes | None) -> None:
        self.put_in_partition(key, value, self._key_partition(key))


class AckedTable(faust.Table):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._unacked: dict = {}  # written but not yet acknowledged: seen by this process only
        self.on_acked = None  # optional callable(key, value): a write just became durable (metrics)

    def __setitem__(self, key, value) -> None:
        self.put(key, value)

    def put(self, key, value, partition: int | None = None):
        """Write ``key``; its changelog record goes to ``partition`` (None: the key's murmur2
        partition, computed here: Faust would ask the producer, which looks the topic up in the
        cluster metadata for every record). Returns the send's future: awaited, the write is durable."""
        self._unacked[key] = value
        if partition is None:
            partition = key_partition(key, self.partitions or self.app.conf.topic_partitions)
        return self.send_changelog(partition, key, value)  # its callback is _on_changelog_sent

    def _on_changelog_sent(self, fut) -> None:
        sent = fut.result()  # a failed send raises here, and Faust stops: nothing is marked that is not in Kafka
        key, value = fut.message.key, fut.message.value
        # The local copy first, then the offset that vouches for it.
        if isinstance(self.data, KeyPartitionedRocksDBStore):
            self.data.put_in_partition(key, value, sent.partition)
        else:
            self.data[key] = value
        super()._on_changelog_sent(fut)
        if self.on_acked is not None:
            self.on_acked(key, value)
        if self._unacked.get(key) is value:
            del self._unacked[key]

    def __contains__(self, key) -> bool:
        return key in self._unacked or super().__contains__(key)

    def __getitem__(self, key):
        return self._unacked[key] if key in self._unacked else super().__getitem__(key)


def acked_table(app: faust.App, name: str, **kwargs) -> AckedTable:
    table = AckedTable(app, name=name, beacon=app.tables.beacon, **kwargs)
    app.tables.add(table)  # returns its argument, typed as any table
    return table


stores.STORES.aliases[SCHEME] = f"{__name__}:KeyPartitionedRocksDBStore"


def store_url(setting: str) -> str:
    """``rocksdb://...`` in settings means this store; anything else (``memory://``) is Faust's."""
    return SCHEME + setting[len("rocksdb") :] if setting.startswith("rocksdb:") else setting
