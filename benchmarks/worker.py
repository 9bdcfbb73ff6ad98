"""End-to-end worker benchmark on the real stack: CDC event append -> score append.

    python benchmarks/worker.py [--rates 25,50,100,0] [--seconds 30] [--customers 500]
                                [--out benchmarks/results/worker.json]

For each offered load (payment transactions per second; 0 = as fast as the simulator writes) it
starts a fresh ``fraudgraph worker`` subprocess on its own CDC and scores topics, drives the
simulator's fast mode (Debezium envelopes straight to Kafka) at that rate, and reads every score.

Latency is per transaction, from the Kafka timestamp of its CDC record (carried in the score as
``timings.cdc_append_ms``) to the Kafka timestamp of its score record: both are stamped by producers
on this machine, so no clock skew enters. Throughput is transactions (and all CDC events) over the
time from the first CDC append to the last score append. The graph stage runs in the same worker
process (as deployed), so its CPU use is included. Prints the figures and writes a JSON report.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer

from common import machine, pct

from fraudgraph.settings import load_settings
from fraudgraph.stack import local
from fraudgraph.stack.simulator import simulate
from fraudgraph.streams.app import worker_topics
from fraudgraph.streams.topics import ensure_topics


def run_once(base_settings, rate: float, seconds: float, customers: int, port: int) -> dict:
    run = uuid.uuid4().hex[:8]
    s = base_settings.replace(topic_prefix=f"bench{run}", scores_topic=f"bench.scores.{run}", worker_id=f"bench-{run}")
    ensure_topics(s.kafka_bootstrap, worker_topics(s))
    env = dict(os.environ, FRAUDGRAPH_TOPIC_PREFIX=s.topic_prefix, FRAUDGRAPH_SCORES_TOPIC=s.scores_topic,
               FRAUDGRAPH_WORKER_ID=s.worker_id, FRAUDGRAPH_WORKER_WEB_PORT=str(port),
               FRAUDGRAPH_WORKER_DATA_DIR=f"/tmp/fraudgraph-bench/{run}")
    log = open(f"/tmp/fraudgraph-bench-{run}.log", "wb")
    worker = subprocess.Popen([sys.executable, "-m", "fraudgraph.cli", "worker"], env=env, stdout=log, stderr=subprocess.STDOUT)
    consumer = Consumer({"bootstrap.servers": s.kafka_bootstrap, "group.id": f"bench-reader-{run}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([s.scores_topic])
    try:
        time.sleep(15)  # worker start-up and group join (not part of the measurement)
        # Simulated span for about rate*seconds transactions (the simulator's customers make about
        # 2.6 payments an hour each); the unpaced run gets as many as 20 s at 1,000/s.
        target = rate * seconds if rate else 20_000
        duration = max(600.0, target / (customers * 2.6) * 3600)
        report = simulate(s, mode="kafka", customers=customers, duration_s=duration, rate=rate or None,
                          fraud_rate=0.02, seed=3)
        n = report.rows["transactions"]["insert"]
        latencies, pairs, first_cdc, last_score, seen = [], [], None, 0, set()
        deadline = time.monotonic() + 300
        while len(seen) < n and time.monotonic() < deadline:
            if worker.poll() is not None:
                raise RuntimeError(f"worker exited with {worker.returncode}; see {log.name}")
            for m in consumer.consume(1000, 1.0):
                if m.error():
                    continue
                r = json.loads(m.value())
                if r["transaction_id"] in seen:
                    continue
                seen.add(r["transaction_id"])
                cdc, out = r["timings"]["cdc_append_ms"], m.timestamp()[1]
                latencies.append(out - cdc)
                pairs.append((cdc, out - cdc))
                first_cdc = cdc if first_cdc is None else min(first_cdc, cdc)
                last_score = max(last_score, out)
        span = (last_score - first_cdc) / 1000
        # The run opens with every customer, account, merchant and device row at once; the second
        # half of the run (by CDC append time) is the steady state at the offered rate.
        mid = first_cdc + (max(c for c, _ in pairs) - first_cdc) / 2
        steady = [lat for c, lat in pairs if c >= mid]
        return {
            "offered_tx_per_s": rate or "max", "transactions": n, "cdc_events": report.total_rows,
            "scored": len(seen), "simulator_tx_per_s": round(report.transactions_per_s, 1),
            "throughput_tx_per_s": round(len(seen) / span, 1), "throughput_events_per_s": round(report.total_rows / span, 1),
            "latency_ms": {"p50": pct(latencies, 0.50), "p95": pct(latencies, 0.95), "p99": pct(latencies, 0.99),
                           "max": max(latencies), "mean": round(statistics.fmean(latencies), 1)},
            "steady_latency_ms": {"p50": pct(steady, 0.50), "p95": pct(steady, 0.95), "p99": pct(steady, 0.99), "max": max(steady)},
        }
    finally:
        consumer.close()
        worker.terminate()
        worker.wait(60)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default="25,50,100,0")
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--customers", type=int, default=500)
    ap.add_argument("--out", default="benchmarks/results/worker.json")
    args = ap.parse_args()
    settings = load_settings()
    local.up(settings)
    results = []
    for i, rate in enumerate(float(r) for r in args.rates.split(",")):
        r = run_once(settings, rate, args.seconds, args.customers, 6300 + i)
        print(json.dumps(r), flush=True)
        results.append(r)
    out = {"benchmark": "worker end to end (CDC append -> score append)", "machine": machine(),
           "command": "python " + " ".join(sys.argv), "scorer": "placeholder-heuristic-0", "runs": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
