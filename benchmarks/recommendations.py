"""Recommendation latency in process: ``answer_batch`` (parse, account state -> embedding, one
batched matrix product + top-n over the catalogue, merchants' risk from their state, rerank) per
micro-batch of requests, for catalogues of several sizes.

    python benchmarks/recommendations.py [--merchants 1000,10000,100000] [--sizes 1,16,64]
                                         [--repeats 100] [--device cpu] [--out benchmarks/results/recommendations.json]

Accounts' states are the worker's own (a simulated run replayed through ``apply_event``), each
with its real merchant history; the model is the shipped architecture, untrained (cost does not
depend on the weights), with its catalogue padded to the size measured (the run's merchants plus
synthetic ones, whose states are absent: risk = the model's prior). Kafka is not included
(``tests/integration/test_recommendations.py`` prints the request -> reply time over Kafka).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import machine, pct

from fraudgraph.models.recs_registry import RecsRegistry
from fraudgraph.models.recs_serving import RecsServer
from fraudgraph.settings import load_settings
from fraudgraph.stack.simulator.config import SimConfig
from fraudgraph.streams.recommendations import answer_batch
from fraudgraph.training import replay as rp
from fraudgraph.training.recs_fit import new_bank_model
from fraudgraph.training.recs_replay import recs_replay


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--merchants", default="1000,10000,100000")
    p.add_argument("--sizes", default="1,16,64")
    p.add_argument("--repeats", type=int, default=100)
    p.add_argument("--device", default="cpu")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "recommendations.json"))
    args = p.parse_args(argv)
    settings = load_settings()
    sim = SimConfig(customers=200, duration_s=12 * 3600, seed=4, fraud_rate=0.03)
    log = recs_replay(rp.event_time_order(rp.decoded(rp.simulator_records(sim, settings), settings)))
    accounts = [int(k.split(":")[1]) for k, s in log.states.items() if s.node_type == "Account" and s.merchants]
    results = []
    for m in (int(x) for x in args.merchants.split(",")):
        items = list(log.merchants) + [10**12 + i for i in range(max(0, m - len(log.merchants)))]
        torch.manual_seed(0)
        model = new_bank_model(log, items, dim=32)
        with tempfile.TemporaryDirectory() as tmp:
            registry = RecsRegistry(tmp)
            registry.register(model, {"items": items})
            server = RecsServer(registry, args.device, reload_s=3600)
            asyncio.run(server.check_for_new_version())
            for size in (int(x) for x in args.sizes.split(",")):
                times = []
                for r in range(args.repeats + 5):
                    chosen = [accounts[(r * size + i) % len(accounts)] for i in range(size)]
                    raws = [
                        json.dumps({"request_id": f"b{r}-{i}", "account_id": a, "k": args.k}).encode()
                        for i, a in enumerate(chosen)
                    ]
                    started = time.perf_counter()
                    replies = asyncio.run(answer_batch(raws, log.states, server, 100))
                    elapsed = time.perf_counter() - started
                    assert all(x["status"] == "ok" and len(x["merchants"]) == args.k for x in replies)
                    if r >= 5:  # warm-up
                        times.append(elapsed * 1000)
                row = {
                    "merchants": m,
                    "batch": size,
                    "p50_ms": round(pct(times, 0.5), 3),
                    "p99_ms": round(pct(times, 0.99), 3),
                    "per_request_p50_ms": round(pct(times, 0.5) / size, 3),
                }
                print(json.dumps(row), flush=True)
                results.append(row)
            server._executor.shutdown()

    report = {
        "benchmark": "recommendations",
        "command": "python benchmarks/recommendations.py " + " ".join(sys.argv[1:]),
        "machine": machine("cpu"),
        "device": args.device,
        "k": args.k,
        "dim": 32,
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
