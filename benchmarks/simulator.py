"""Micro-benchmark of the simulator's two CPU-bound stages, on one core, with no services:

* generation: rows per second of ``Workload`` (population, behaviour, fraud, ordering);
* encoding: Debezium change events per second of ``DebeziumEncoder`` (what fast mode costs per
  event before Kafka).

Why: the sinks must never be the thing a load test measures by accident. If the generator makes
N rows/s on one core, any rate well below N is the system under test's number, not ours.

    python benchmarks/simulator.py [--customers 2000] [--duration 3600] [--repeats 7] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from fraudgraph.stack.simulator.config import SimConfig
from fraudgraph.stack.simulator.envelope import DebeziumEncoder
from fraudgraph.stack.simulator.generator import Workload


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _summary(count: int, seconds: list[float]) -> dict:
    median, p95 = statistics.median(seconds), _percentile(seconds, 0.95)
    return {
        "items": count,
        "repeats": len(seconds),
        "seconds_median": round(median, 4),
        "seconds_p95": round(p95, 4),
        "per_s_median": round(count / median),
        "per_s_p95": round(count / p95),
    }  # p95: the slow runs' rate


def bench(customers: int, duration_s: float, repeats: int, fraud_rate: float = 0.03) -> dict:
    config = SimConfig(customers=customers, duration_s=duration_s, fraud_rate=fraud_rate, seed=7)
    gen_times, rows = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        rows = list(Workload(config))
        gen_times.append(time.perf_counter() - t0)
    enc_times = []
    for _ in range(repeats):
        encoder = DebeziumEncoder("bank", clock=lambda: 1.7e9)
        t0 = time.perf_counter()
        for i, row in enumerate(rows):
            encoder.encode(row)
            if i % 200 == 199:
                encoder.commit()
        enc_times.append(time.perf_counter() - t0)
    return {
        "config": {"customers": customers, "duration_s": duration_s, "fraud_rate": fraud_rate, "seed": 7},
        "generator_rows": _summary(len(rows), gen_times),
        "encoder_events": _summary(len(rows), enc_times),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--duration", type=float, default=3600.0, help="simulated seconds")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default="benchmarks/results/simulator.json")
    args = parser.parse_args(argv)
    pinned = None
    if hasattr(os, "sched_setaffinity"):  # one core, so figures compare across machines of a kind
        pinned = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {pinned})
    result = bench(args.customers, args.duration, args.repeats)
    result["machine"] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "pinned_cpu": pinned,
    }
    for name in ("generator_rows", "encoder_events"):
        r = result[name]
        print(f"{name:15s} {r['items']:>8d} items  median {r['per_s_median']:>9,d}/s  p95 {r['per_s_p95']:>9,d}/s")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"report: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
