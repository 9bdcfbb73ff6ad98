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
