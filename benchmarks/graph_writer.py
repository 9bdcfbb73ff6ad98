"""Graph writer throughput and freshness against the real Neo4j (the local stack must be up).

    python benchmarks/graph_writer.py [--events 20000] [--batch-size 500] [--rate 1000] [--paced-seconds 5]
                                      [--out benchmarks/results/graph_writer.json]

Two phases on a synthetic bank-like mix (graph/synthetic.py: customers, accounts, merchants,
devices, then card payments, transfers, settlements, logins, profile changes, fraud reports):

- saturated: ``--events`` submitted as fast as the bounded queue accepts them; throughput is events
  over the time from the first submit until ``flush()`` returns. Freshness here mostly measures time
  spent waiting in a full queue (the backpressure working), so it is reported but is not the latency
  figure.
- paced: events at ``--rate`` per second for ``--paced-seconds``; freshness is the latency figure.

Freshness is exact per event: source time (``ts_ms``, stamped when the event is produced) to the
moment its batch's transaction committed. The run's nodes are deleted afterwards (``--keep`` keeps
them). Prints the figures and writes a JSON report with the machine it ran on.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import random
import statistics
import time
from pathlib import Path

import neo4j
from common import machine, pct

from fraudgraph.graph.synthetic import EventFactory, stream
from fraudgraph.graph.writer import GraphWriter
from fraudgraph.settings import load_settings


class TimedWriter(GraphWriter):
    """Records, per event, source ts -> commit (ms) for exact percentiles."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.freshness_ms: list[float] = []
        self.batches: list[int] = []

    async def _apply(self, batch):
        await super()._apply(batch)
        now = time.time() * 1000
        self.batches.append(len(batch))
        self.freshness_ms.extend(now - e.position.ts_ms for e in batch)


def summary(writer: TimedWriter, n: int, seconds: float) -> dict:
    f = writer.freshness_ms
    return {
        "events": n,
        "seconds": round(seconds, 3),
        "events_per_s": round(n / seconds),
        "freshness_ms_p50": round(pct(f, 0.50), 1),
        "freshness_ms_p99": round(pct(f, 0.99), 1),
        "freshness_ms_max": round(max(f), 1) if f else None,
        "batches": len(writer.batches),
        "mean_batch": round(statistics.mean(writer.batches), 1) if writer.batches else 0,
    }


async def saturated(uri, auth, factory, n, kw) -> dict:
    events = stream(factory, n, now_ms=lambda: time.time() * 1000)
    async with TimedWriter(uri, auth, **kw) as w:
        start = time.perf_counter()
        for e in events:
            await w.submit(e)
        await w.flush()
        return summary(w, n, time.perf_counter() - start)


async def paced(uri, auth, factory, rate, seconds, kw) -> dict:
    n = int(rate * seconds)
    events = stream(factory, n, seed=11, now_ms=lambda: time.time() * 1000)
    async with TimedWriter(uri, auth, **kw) as w:
        start = time.perf_counter()
        for i, e in enumerate(events):
            ahead = start + i / rate - time.perf_counter()
            if ahead > 0:
                await asyncio.sleep(ahead)
            await w.submit(e)
        await w.flush()
        out = summary(w, n, time.perf_counter() - start)
        out["rate_target"] = rate
        return out


def cleanup(uri, auth, bases: list[int]) -> None:
    with neo4j.GraphDatabase.driver(uri, auth=auth, notifications_min_severity="OFF") as driver:
        with driver.session() as session:
            for base in bases:
                session.run(
                    "MATCH (n) WHERE ((n:Customer OR n:Account OR n:Merchant OR n:Transaction) AND n.id >= $lo AND n.id < $hi) "
                    "OR (n:Device AND n.id STARTS WITH $dev) OR (n:IP AND n.address ENDS WITH $ip) "
                    "CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF 5000 ROWS",
                    lo=base,
                    hi=base + 10**8,
                    dev=f"dev-{base}-",
                    ip=f"|{base}",
                ).consume()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--queue-size", type=int, default=10_000)
    parser.add_argument("--max-latency-ms", type=float, default=50)
    parser.add_argument("--rate", type=float, default=1_000, help="events/s of the paced phase")
    parser.add_argument("--paced-seconds", type=float, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the written nodes")
    parser.add_argument("--out", default="benchmarks/results/graph_writer.json")
    args = parser.parse_args()
    settings = load_settings()
    auth = (settings.neo4j_user, settings.neo4j_password) if settings.neo4j_password else None
    kw = {"batch_size": args.batch_size, "queue_size": args.queue_size, "max_latency_s": args.max_latency_ms / 1000}
    bases = [random.randrange(10**12, 9 * 10**12, 10**8) for _ in range(2)]
    try:
        sat = asyncio.run(saturated(settings.neo4j_uri, auth, EventFactory(bases[0]), args.events, kw))
        print(
            f"saturated: {sat['events']} events in {sat['seconds']} s = {sat['events_per_s']} events/s "
            f"(batches {sat['batches']}, mean {sat['mean_batch']}); freshness p50 {sat['freshness_ms_p50']} ms, "
            f"p99 {sat['freshness_ms_p99']} ms (queueing under backpressure)"
        )
        pac = asyncio.run(paced(settings.neo4j_uri, auth, EventFactory(bases[1]), args.rate, args.paced_seconds, kw))
        print(
            f"paced {args.rate:.0f}/s: {pac['events']} events, mean batch {pac['mean_batch']}; "
            f"freshness p50 {pac['freshness_ms_p50']} ms, p99 {pac['freshness_ms_p99']} ms, max {pac['freshness_ms_max']} ms"
        )
    finally:
        if not args.keep:
            cleanup(settings.neo4j_uri, auth, bases)
    # neo4j-rust-ext (packstream in Rust) packs parameters ~5x faster than the pure-Python driver.
    rust = importlib.util.find_spec("neo4j._rust") is not None
    report = {
        "benchmark": "graph_writer",
        "command": f"python benchmarks/graph_writer.py --events {args.events}",
        "machine": machine(),
        "neo4j": settings.neo4j_uri,
        "neo4j_driver": neo4j.__version__,
        "neo4j_rust_ext": rust,
        "config": {k: v for k, v in vars(args).items() if k not in ("out", "keep")},
        "results": {"saturated": sat, "paced": pac},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {args.out}")


if __name__ == "__main__":
    main()
