"""Decoder throughput on one core: real captured Debezium events, each variant, decoded in a loop.

    python benchmarks/decoder.py [--seconds 3] [--repeats 7] [--out benchmarks/results/decoder.json]

Prints events/s (median and p5..p95 over repeats) per variant and writes a JSON report with the
machine it ran on. No services needed: this measures the pure decode path the worker runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from common import machine

from fraudgraph.connectors.decoder import decode
from fraudgraph.connectors.mapping import load_mapping

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "debezium"


def workload(variant: str) -> list[tuple[str, bytes, bytes | None, str]]:
    out = []
    for path in sorted((FIXTURES / variant).glob("*.json")):
        fx = json.loads(path.read_text())
        if fx["value"] is not None:
            out.append(
                (
                    fx["topic"],
                    fx["value"].encode(),
                    fx["key"].encode() if fx["key"] else None,
                    fx["connector_config"]["decimal.handling.mode"],
                )
            )
    return out


def run(seconds: float, repeats: int) -> dict:
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    mapping = load_mapping()
    results = {}
    for variant in sorted(p.name for p in FIXTURES.iterdir()):
        events = workload(variant)
        rates = []
        for _ in range(repeats):
            n, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds / repeats:
                for topic, value, key, mode in events:
                    decode(topic, value, mapping, mode, key)
                n += len(events)
            rates.append(n / (time.perf_counter() - start))
        q = statistics.quantiles(rates, n=20) if len(rates) > 1 else rates * 19
        results[variant] = {
            "events_per_s_median": round(statistics.median(rates)),
            "p5": round(q[0]),
            "p95": round(q[-1]),
            "us_per_event_median": round(1e6 / statistics.median(rates), 2),
            "mix": len(events),
        }
        print(
            f"{variant:20s} {results[variant]['events_per_s_median']:>8} events/s (p5 {results[variant]['p5']}, "
            f"p95 {results[variant]['p95']})  {results[variant]['us_per_event_median']} us/event"
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=7.0)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default="benchmarks/results/decoder.json")
    args = parser.parse_args()
    report = {
        "benchmark": "decoder",
        "command": "python benchmarks/decoder.py",
        "machine": machine(),
        "results": run(args.seconds, args.repeats),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {args.out}")


if __name__ == "__main__":
    main()
