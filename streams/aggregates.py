"""Running aggregates for per-node state, each updated in O(1) per event.

They hold raw, model-agnostic quantities (counts, sums, moments, sketches), never values
multiplied by model weights, so a new model version reads the same state. Each is a plain
dataclass that serialises to and from a small dict (for the changelog-backed tables).
"""

from __future__ import annotations

import hashlib
import heapq
import math
from dataclasses import dataclass, field


@dataclass
class RunningMoments:
    """Count, mean and variance of a stream (Welford): stable in one pass, no history kept."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def copy(self) -> RunningMoments:
        return RunningMoments(self.count, self.mean, self.m2)

    def add(self, x: float) -> None:
        self.count += 1
        delta = x - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (x - self.mean)

    @property
    def variance(self) -> float:
        return self.m2 / (self.count - 1) if self.count > 1 else 0.0

    def zscore(self, x: float) -> float:
        """How unusual ``x`` is against the history so far (0 while there is too little history)."""
        std = math.sqrt(self.variance)
        return (x - self.mean) / std if self.count >= 3 and std > 0 else 0.0

    def without(self, x: float) -> RunningMoments:
        """The moments before ``x`` was added (Welford run backwards), so a rule can judge the latest
        value against the history *before* it rather than a history it has already inflated."""
        if self.count <= 1:
            return RunningMoments()
        count = self.count - 1
        mean = (self.mean * self.count - x) / count
        return RunningMoments(count, mean, max(self.m2 - (x - mean) * (x - self.mean), 0.0))


@dataclass
class SlidingCounter:
    """Events and their amount sum over a sliding time window, in fixed buckets.

    Memory is bounded by ``window_s / bucket_s`` buckets; the count is exact up to one bucket's
    width at the window's old edge. Times are event times (ms), so replaying history gives the same
    answers as living through it.
    """

    window_s: int
    bucket_s: int
    buckets: list[list[float]] = field(default_factory=list)  # [bucket_start_ms, count, sum], oldest first

    def copy(self) -> SlidingCounter:
        return SlidingCounter(self.window_s, self.bucket_s, [list(b) for b in self.buckets])

    def add(self, ts_ms: int, amount: float = 0.0) -> None:
        start = ts_ms - ts_ms % (self.bucket_s * 1000)
        if self.buckets and self.buckets[-1][0] == start:
            self.buckets[-1][1] += 1
            self.buckets[-1][2] += amount
        elif not self.buckets or start > self.buckets[-1][0]:
            self.buckets.append([start, 1, amount])
        else:  # a late event: find its bucket (rare; bounded by the bucket count)
            for b in self.buckets:
                if b[0] == start:
                    b[1] += 1
                    b[2] += amount
                    break
            else:
                self.buckets.append([start, 1, amount])
                self.buckets.sort(key=lambda b: b[0])
        self._evict(ts_ms)

    def _evict(self, now_ms: int) -> None:
        horizon = now_ms - self.window_s * 1000
        drop = 0
        while drop < len(self.buckets) and self.buckets[drop][0] + self.bucket_s * 1000 <= horizon:
            drop += 1
        if drop:
            del self.buckets[:drop]

    def _live(self, now_ms: int):
        horizon = now_ms - self.window_s * 1000
        return (b for b in self.buckets if b[0] + self.bucket_s * 1000 > horizon and b[0] <= now_ms)

    def count(self, now_ms: int) -> int:
        return int(sum(b[1] for b in self._live(now_ms)))

    def total(self, now_ms: int) -> float:
        return sum(b[2] for b in self._live(now_ms))


def _hash64(item: str) -> int:
    # Stable across processes (unlike hash()), so a sketch restored from a changelog stays valid.
    # 63 bits: the sketch stores them negated, and a signed 64-bit integer must hold them in JSON.
    return int.from_bytes(hashlib.blake2b(item.encode(), digest_size=8).digest(), "big") >> 1


@dataclass
class DistinctSketch:
    """Approximate count of distinct items (k-minimum-values): exact below ``k`` items, about
    1/sqrt(k) relative error above, in at most ``k`` integers."""

    k: int = 64
    hashes: list[int] = field(default_factory=list)  # max-heap via negation: the k smallest hashes

    def copy(self) -> DistinctSketch:
        return DistinctSketch(self.k, list(self.hashes))

    def add(self, item: str) -> bool:
        """Add ``item``; True if it was (probably) new."""
        h = _hash64(item)
        if -h in self.hashes:
            return False
        if len(self.hashes) < self.k:
            heapq.heappush(self.hashes, -h)
            return True
        if h < -self.hashes[0]:
            heapq.heapreplace(self.hashes, -h)
            return True
        return False  # above the k-th smallest: seen or not, it does not change the estimate

    def estimate(self) -> float:
        if len(self.hashes) < self.k:
            return float(len(self.hashes))
        kth = -self.hashes[0] / 2**63
        return (self.k - 1) / kth


@dataclass
class RecentSet:
    """The most recently seen items of one kind, each with its first and last time seen (ms).

    Bounded to ``cap`` items: when full, the item seen longest ago is dropped, so a count over a
    recent window is exact while fewer than ``cap`` items were seen in it, and saturates at ``cap``
    otherwise (the rules' thresholds sit well below it). Items are prefixed by kind
    (``device:..``, ``account:..``) so one set can hold several kinds without collisions.
    """

    cap: int = 32
    # item -> (first_ms, last_ms), immutable: a copy of the set shares them, so a snapshot of a hot
    # node copies one dict, not a list per item.
    items: dict[str, tuple[int, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.items = {k: tuple(v) for k, v in self.items.items()}  # type: ignore[misc]  # JSON gives lists

    def copy(self) -> RecentSet:
        out = RecentSet(self.cap)
        out.items = dict(self.items)
        return out

    def add(self, item: str, ts_ms: int) -> None:
        seen = self.items.get(item)
        if seen is not None:
            if not seen[0] <= ts_ms <= seen[1]:
                self.items[item] = (min(seen[0], ts_ms), max(seen[1], ts_ms))
            return
        if len(self.items) >= self.cap:
            del self.items[min(self.items, key=lambda k: self.items[k][1])]
        self.items[item] = (ts_ms, ts_ms)

    def first_seen(self, item: str) -> int | None:
        seen = self.items.get(item)
        return None if seen is None else seen[0]

    def count(self, since_ms: int, prefix: str = "") -> int:
        """Items (of kind ``prefix``) last seen at or after ``since_ms``."""
        return sum(1 for k, (_, last) in self.items.items() if last >= since_ms and k.startswith(prefix))
