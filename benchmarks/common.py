"""What every benchmark report shares: the machine it ran on, and percentiles."""

from __future__ import annotations

from fraudgraph.machine import machine

__all__ = ["machine", "pct"]


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of ``values``, nearest rank."""
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")
