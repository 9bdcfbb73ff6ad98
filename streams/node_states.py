"""Every node state the worker holds, in process memory; the changelog topic is its durable copy.

The events between two checkpoints read and change the same hot nodes (an account's payments, a
merchant's payers) many times. Here a node is changed in memory as often as needed and written to
the changelog once per checkpoint (``changed``); nothing on the hot path touches Kafka or disk.

A restart or rebalance rebuilds the map from the changelog (``restore``; the last record of a key
wins). A restored state stays the record's bytes until something reads it, so a
restore is a dict insert per record and nodes that are never read again are never decoded.

Why the pipeline writes states only after the scores decided since the last checkpoint are
durable: a score must be computed from the states right after its own event. If a later event's
state change were durable before an earlier transaction's score, a crash in between would re-score
that transaction from states that already include the later event (its replay is skipped per
node). Written in this order, a crash leaves either the score with no later state (the replay
re-applies the events and skips the scored transaction) or nothing (the replay redoes both).
"""

from __future__ import annotations

from collections.abc import Iterable

from fraudgraph.streams.state import NodeState


class NodeStates:
    def __init__(self) -> None:
        self.states: dict[str, NodeState | bytes] = {}  # bytes: loaded from the changelog, not read since
        self.dirty: set[str] = set()
        self.frozen: set[str] = set()

    def __len__(self) -> int:
        return len(self.states)

    def restore(self, records: Iterable[tuple[str, bytes | None]]) -> None:
        """Replace everything with the changelog's records, in log order (the last record of a key
        wins; None: deleted). A new map is built and swapped in whole, so the records may be read
        on another thread while the event loop still answers from the old map."""
        assert not self.dirty, "restoring over node states not written yet"
        states: dict[str, NodeState | bytes] = {}
        for key, raw in records:
            if raw is None:
                states.pop(key, None)
            else:
                states[key] = raw
        self.states, self.frozen = states, set()

    def get(self, key: str) -> NodeState | None:
        state = self.states.get(key)
        if state is None:
            return None
        if isinstance(state, bytes):
            state = self.states[key] = NodeState.from_json(state)
        elif key in self.frozen:
            state = self.states[key] = state.copy()
            self.frozen.discard(key)
        return state

    def put(self, state: NodeState) -> None:
        self.states[state.key] = state
        self.dirty.add(state.key)

    def freeze(self, keys: Iterable[str]) -> None:
        """The current objects of ``keys`` now belong to a snapshot (a transaction's scoring input):
        the next ``get`` of one of them before ``release_snapshots`` returns a copy, so the snapshot
        stays as it is. Copying only what is touched again costs far less than copying every snapshot."""
        self.frozen.update(keys)

    def release_snapshots(self) -> None:
        """The snapshots taken so far are decided and done with: their objects may change in place."""
        self.frozen.clear()

    def changed(self) -> list[NodeState]:
        """The states changed since the last call, each once: what the next checkpoint writes."""
        out = [self.states[key] for key in self.dirty]  # each was put: a NodeState, not bytes
        self.dirty.clear()
        return out  # type: ignore[return-value]

    def abandon(self) -> None:
        """Forget everything, written or not: what was written since the last commit was aborted."""
        self.dirty.clear()
        self.states, self.frozen = {}, set()
