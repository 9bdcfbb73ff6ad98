import random
import statistics

from hypothesis import given
from hypothesis import strategies as st

from fraudgraph.models.incremental import NeighbourSums
from fraudgraph.streams.aggregates import DistinctSketch, RunningMoments, SlidingCounter


@given(st.lists(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), min_size=2, max_size=200))
def test_running_moments_match_two_pass_statistics(xs):
    m = RunningMoments()
    for x in xs:
        m.add(x)
    assert m.count == len(xs)
    assert abs(m.mean - statistics.fmean(xs)) <= 1e-6 * max(1.0, max(abs(x) for x in xs))
    assert abs(m.variance - statistics.variance(xs)) <= 1e-6 * max(1.0, statistics.variance(xs))


def test_zscore_needs_history_and_flags_outliers():
    m = RunningMoments()
    assert m.zscore(1000) == 0.0
    for x in [10, 12, 11, 9, 10, 11]:
        m.add(x)
    assert m.zscore(10.5) < 1 < 5 < m.zscore(1000)


def test_sliding_counter_counts_only_the_window():
    c = SlidingCounter(window_s=60, bucket_s=5)
    t0 = 1_800_000_000_000
    for i in range(10):
        c.add(t0 + i * 1000, 2.0)  # 10 events in 10 s
    assert c.count(t0 + 10_000) == 10 and c.total(t0 + 10_000) == 20.0
    assert c.count(t0 + 65_000) == 10 - 5  # the first bucket (0-5 s) has left the window
    assert c.count(t0 + 200_000) == 0
    c.add(t0 + 200_000)
    assert len(c.buckets) == 1  # old buckets evicted: memory stays bounded


def test_sliding_counter_accepts_late_events_in_order():
    c = SlidingCounter(window_s=3600, bucket_s=60)
    t0 = 1_800_000_000_000
    c.add(t0 + 120_000)
    c.add(t0)  # late, older bucket
    c.add(t0 + 130_000)
    assert [b[0] for b in c.buckets] == sorted(b[0] for b in c.buckets)
    assert c.count(t0 + 130_000) == 3


def test_sliding_counter_memory_is_bounded():
    c = SlidingCounter(window_s=60, bucket_s=5)
    for i in range(10_000):
        c.add(1_800_000_000_000 + i * 1000)
    assert len(c.buckets) <= 60 // 5 + 1


def test_distinct_sketch_exact_when_small_and_close_when_large():
    s = DistinctSketch(k=64)
    assert s.add("acct:1") and not s.add("acct:1")
    for i in range(2, 41):
        s.add(f"acct:{i}")
    assert s.estimate() == 40
    big = DistinctSketch(k=256)
    rng = random.Random(3)
    items = [f"x{rng.getrandbits(48)}" for _ in range(20_000)]
    for item in items + items[:5000]:  # duplicates do not count twice
        big.add(item)
    assert abs(big.estimate() - 20_000) / 20_000 < 0.15
    assert len(big.hashes) == 256


def test_neighbour_sums_mean_per_relation():
    n = NeighbourSums()
    n.add("pays", [1.0, 2.0])
    n.add("pays", [3.0, 4.0])
    n.add("transfer", [10.0, 0.0])
    assert n.mean("pays", 2) == [2.0, 3.0]
    assert n.mean("transfer", 2) == [10.0, 0.0]
    assert n.mean("login", 2) == [0.0, 0.0]
