"""The workload: a seeded, time-ordered stream of row operations with its ground truth.

How it runs: the bank's existing book is emitted at t=0; then, one window of simulated time at a
time, legitimate episodes and just enough fraud episodes start inside the window, and every
buffered row earlier than the window's end is released. Episodes never emit rows before their own
start, so nothing released later can precede what was already released: the stream is in time
order while memory stays bounded by what is in flight (status updates, pending reports).

Randomness comes from three generators derived from the seed (population, legit, fraud), so the
same config always yields the same rows, and a different fraud rate leaves the legit draws alone.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from fraudgraph.stack.simulator.behaviour import legit_window
from fraudgraph.stack.simulator.config import SimConfig
from fraudgraph.stack.simulator.fraud import FraudPlanner
from fraudgraph.stack.simulator.population import build_population
from fraudgraph.stack.simulator.rows import GroundTruth, Row
from fraudgraph.stack.simulator.timeline import SECOND, Timeline


class Workload:
    """Iterate it for the rows (each iteration replays the same run from scratch); ``truth`` is
    complete once iteration has finished (labels are recorded as transactions are generated)."""

    def __init__(self, config: SimConfig):
        if config.window_s * SECOND > config.recurring_period_s * SECOND:
            raise ValueError("window_s must not exceed recurring_period_s")
        self.config = config
        self.truth = GroundTruth()

    def __iter__(self) -> Iterator[Row]:
        cfg = self.config
        tl = Timeline(cfg)
        self.truth = tl.truth
        pop_rng, legit_rng, fraud_rng = (
            random.Random(f"{cfg.seed}/{part}") for part in ("population", "legit", "fraud")
        )
        with tl.drawing_from(pop_rng):
            population = build_population(tl)
        planner = FraudPlanner(fraud_rng, cfg.fraud_rate)
        step = max(1, int(cfg.window_s * SECOND))
        for w0 in range(0, tl.end_us, step):
            w1 = min(w0 + step, tl.end_us)
            with tl.drawing_from(legit_rng):
                legit_window(tl, population, w0, w1)
            with tl.drawing_from(fraud_rng):
                planner.window(tl, population, w0, w1)
            yield from tl.pop_until(w1)
        # What is still in flight: status updates and reports due after the end (every fraud keeps
        # its label), plus the tail of episodes that started just before the end.
        if not cfg.stop_at_end:
            yield from tl.pop_until(None)


def generate(config: SimConfig) -> tuple[list[Row], GroundTruth]:
    """The whole run in memory: convenient for tests and small runs."""
    workload = Workload(config)
    rows = list(workload)
    return rows, workload.truth
