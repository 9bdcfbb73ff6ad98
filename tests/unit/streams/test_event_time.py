"""EventTimeMerger: per-partition FIFOs released in event-time order, bounded waits, late events."""

from fraudgraph.streams.event_time import EventTimeMerger

A, B = ("t", 0), ("t", 1)


def released(m: EventTimeMerger, now: float, lag=lambda s: None, limit=None):
    return m.pop_ready(now, lag, limit)


def test_releases_the_smallest_head_only_when_every_partition_has_shown_a_later_one():
    m = EventTimeMerger(max_idle_ms=50, max_wait_ms=10_000)
    m.assign([A, B], 0)
    m.push(A, (10, 1), "a10", 0)
    m.push(A, (30, 1), "a30", 0)
    assert released(m, 0) == []  # B may still deliver something earlier than 10
    m.push(B, (20, 1), "b20", 1)
    assert released(m, 1) == ["a10", "b20"]  # a30 waits: B is empty again
    m.push(B, (40, 1), "b40", 2)
    assert released(m, 2) == ["a30"]
    assert m.late == 0


def test_a_caught_up_silent_partition_holds_an_event_for_max_idle_only():
    m = EventTimeMerger(max_idle_ms=50, max_wait_ms=10_000)
    m.assign([A, B], 0)
    m.push(A, (10, 1), "a10", 100)
    assert released(m, 149, lag=lambda s: 0) == []
    assert released(m, 150, lag=lambda s: 0) == ["a10"]


def test_caught_up_counts_only_as_learned_after_the_event_arrived():
    """The client last fetched B before A's event arrived: B's lag 0 may be stale (its next
    records can be on the broker, outside the fetch in flight), so A's event waits for a fetch
    of B after its arrival, however long it has waited."""
    m = EventTimeMerger(max_idle_ms=50, max_wait_ms=10_000)
    m.assign([A, B], 0)
    m.push(B, (5, 1), "b5", 90)  # B's last record: B is not silent for max_wait
    assert released(m, 140, lag=lambda s: 0) == ["b5"]
    m.push(A, (10, 1), "a10", 150)
    fetched = {B: 145.0}
    assert m.pop_ready(900, lambda s: 0, learned=fetched.get) == []
    fetched[B] = 160.0  # a fetch after A's event arrived: B had nothing more
    assert m.pop_ready(901, lambda s: 0, learned=fetched.get) == ["a10"]
    assert m.late == 0


def test_a_stalled_partition_still_holds_a_new_event_for_max_idle():
    """B delivered nothing for max_wait: it no longer holds events for evidence, but a straggler
    gets max_idle like any other."""
    m = EventTimeMerger(max_idle_ms=50, max_wait_ms=1_000)
    m.assign([A, B], 0)
    m.push(A, (10, 1), "a10", 5_000)
    assert released(m, 5_049) == []
    assert released(m, 5_050) == ["a10"]


def test_a_partition_whose_lag_is_unknown_holds_events_until_max_wait_after_its_assignment():
    m = EventTimeMerger(max_idle_ms=50, max_wait_ms=1_000)
    m.assign([A, B], 0)
    m.push(A, (10, 1), "a10", 0)
    assert released(m, 999) == []  # B was never fetched: it may hold something earlier
    assert released(m, 1000) == ["a10"]


def test_a_partition_behind_holds_events_for_as_long_as_it_keeps_delivering():
    """A slow fetch must not reorder a backlog: A is hours ahead, B still delivers its earlier
    records, and A's head waits past max_wait for as long as B shows progress."""
    C = ("t", 2)
    m = EventTimeMerger(max_idle_ms=50, max_wait_ms=1_000)
    m.assign([A, B, C], 0)
    lag = {B: 3, C: 0}.get  # B has records on the broker not delivered yet; C is caught up
    m.push(A, (10_000, 1), "a", 0)
    for t in (900, 1800, 2700):
        m.push(B, (t, 1), f"b{t}", t)
        assert released(m, t + 50, lag) == [f"b{t}"]  # B's earlier record goes first; "a" waits on
    assert released(m, 2700 + 999, lag) == []
    assert released(m, 2700 + 1000, lag) == ["a"]  # B delivered nothing for max_wait: stalled
    assert m.late == 0


def test_a_late_event_is_applied_and_counted_never_dropped():
    m = EventTimeMerger(max_idle_ms=0, max_wait_ms=10_000)
    m.assign([A, B], 0)
    m.push(A, (10, 1), "a10", 0)
    assert released(m, 0, lag=lambda s: 0) == ["a10"]
    m.push(B, (5, 1), "b5", 1)
    assert released(m, 1, lag=lambda s: 0) == ["b5"]
    assert m.late == 1


def test_keyless_items_keep_their_place_and_do_not_block():
    m = EventTimeMerger(max_idle_ms=0, max_wait_ms=10_000)
    m.assign([A, B], 0)
    m.push(A, None, "garbage", 0)
    m.push(A, (30, 1), "a30", 0)
    m.push(B, (20, 1), "b20", 0)
    m.push(B, None, "tombstone", 0)
    m.push(B, (40, 1), "b40", 0)
    assert released(m, 0) == ["garbage", "b20", "tombstone", "a30"]  # b40 waits for A
    assert m.pending() == 1


def test_equal_keys_leave_in_arrival_order_and_limit_bounds_a_batch():
    m = EventTimeMerger(max_idle_ms=0, max_wait_ms=10_000)
    for i in range(5):
        m.push(A, (1, 1), f"a{i}", 0)
        m.push(B, (1, 1), f"b{i}", 0)
    first = released(m, 0, lag=lambda s: 0, limit=4)
    assert len(first) == 4
    rest = released(m, 0, lag=lambda s: 0)
    assert sorted(first + rest) == sorted([f"a{i}" for i in range(5)] + [f"b{i}" for i in range(5)])
    assert [x for x in first + rest if x[0] == "a"] == [f"a{i}" for i in range(5)]  # FIFO per partition


def test_clear_returns_what_was_buffered_for_redelivery():
    m = EventTimeMerger(max_idle_ms=0)
    m.push(A, (1, 1), "a1", 0)
    m.push(B, None, "x", 0)
    assert sorted(m.clear()) == ["a1", "x"] and m.pending() == 0
    assert released(m, 0, lag=lambda s: 0) == []
