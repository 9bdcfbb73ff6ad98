"""Node states in memory, written to the durable store once per checkpoint.

The events between two checkpoints read and change the same few hot nodes (an account's payments,
a merchant's payers) many times; through the durable store (the changelog-backed table) each touch
would be a JSON decode, a RocksDB read, an encode and a changelog record. Here a node is read from
the store once, changed in memory as often as needed, and written once at ``flush``.

Why the pipeline flushes only after the scores decided since the last flush are durable: a score
must be computed from the states right after its own event. If a later event's state change were
durable before an earlier transaction's score, a crash in between would re-score that transaction
from states that already include the later event (its replay is skipped per node). Written in this
order, a crash leaves either the score with no later state (the replay re-applies the events and
skips the scored transaction) or nothing (the replay redoes both).

The cache keeps live objects between checkpoints (this worker is the nodes' only writer) up to
``max_entries``, and is emptied on a rebalance.
"""

from __future__ import annotations

from fraudgraph.streams.state import NodeState, StateStore

MAX_ENTRIES = 50_000  # live states of a few KB each: a few hundred MB at most


class WriteBackStore:
    def __init__(self, durable: StateStore, max_entries: int = MAX_ENTRIES):
        self.durable, self.max_entries = durable, max_entries
        self.cache: dict[str, NodeState] = {}
        self.dirty: set[str] = set()
        self.frozen: set[str] = set()

    def freeze(self, keys) -> None:
        """The current objects of ``keys`` now belong to a snapshot (a transaction's scoring input):
        the next ``get`` of one of them before ``release_snapshots`` returns a copy, so the snapshot
        stays as it is. Copying only what is touched again costs far less than copying every snapshot."""
        self.frozen.update(keys)

    def release_snapshots(self) -> None:
        """The snapshots taken so far are decided and done with: their objects may change in place."""
        self.frozen.clear()

    def get(self, key: str) -> NodeState | None:
        state = self.cache.get(key)
        if state is not None and key in self.frozen:
            state = self.cache[key] = state.copy()
            self.frozen.discard(key)
        if state is None:
            state = self.durable.get(key)
            if state is not None:
                self.cache[key] = state
        return state

    def put(self, state: NodeState) -> None:
        self.cache[state.key] = state
        self.dirty.add(state.key)

    def flush(self) -> int:
        """Write every node changed since the last flush, once; returns how many."""
        for key in self.dirty:
            self.durable.put(self.cache[key])
        written = len(self.dirty)
        self.dirty.clear()
        if len(self.cache) > self.max_entries:
            self.cache.clear()
        return written

    def clear(self) -> None:
        """Forget the cache (a rebalance). Nothing unflushed may be pending."""
        assert not self.dirty, "clearing unflushed node states"
        self.cache.clear()
        self.frozen.clear()
