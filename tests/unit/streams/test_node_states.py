import pytest

from fraudgraph.streams.node_states import NodeStates
from fraudgraph.streams.state import NodeState


def state(key: str, amount: float) -> NodeState:
    return NodeState(key.split(":")[0], key, [amount])


def test_a_restore_keeps_the_last_record_of_each_key_and_drops_deleted_ones():
    states = NodeStates()
    states.put(state("Account:9", 9.0))
    states.changed()
    states.restore(
        [
            ("Account:1", state("Account:1", 1.0).to_json()),
            ("Account:2", state("Account:2", 2.0).to_json()),
            ("Account:1", state("Account:1", 3.0).to_json()),
            ("Account:2", None),
        ]
    )
    assert len(states) == 1 and states.get("Account:9") is None  # what was there before is gone
    assert states.get("Account:2") is None
    restored = states.get("Account:1")
    assert restored is not None and restored.features == [3.0]
    assert states.get("Account:1") is restored  # decoded once, then the live object


def test_each_changed_state_is_written_once_per_checkpoint():
    states = NodeStates()
    a = state("Account:1", 1.0)
    for amount in (1.0, 2.0, 3.0):
        a.features = [amount]
        states.put(a)
    states.put(state("Merchant:5", 5.0))
    changed = states.changed()
    assert sorted(s.key for s in changed) == ["Account:1", "Merchant:5"]
    assert next(s for s in changed if s.key == "Account:1").features == [3.0]
    assert states.changed() == []


def test_a_frozen_state_is_copied_on_its_next_read_so_the_snapshot_stays_as_it_was():
    states = NodeStates()
    states.put(state("Account:1", 1.0))
    snapshot = states.get("Account:1")
    states.freeze(["Account:1"])
    live = states.get("Account:1")
    assert live is not snapshot
    live.features = [2.0]
    states.put(live)
    assert snapshot.features == [1.0] and states.get("Account:1") is live  # one copy, not one per read
    states.release_snapshots()
    assert states.get("Account:1") is live


def test_a_restore_over_unwritten_changes_is_refused():
    states = NodeStates()
    states.put(state("Account:1", 1.0))
    with pytest.raises(AssertionError, match="not written yet"):
        states.restore([])
