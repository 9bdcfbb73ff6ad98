"""Decision latency in process: ``Decider.decide`` on one micro-batch, with and without the model.

    python benchmarks/decisions.py [--sizes 1,16,256] [--repeats 200] [--device cpu]
                                   [--out benchmarks/results/decisions.json]

The states are the worker's own: a simulated run's rows through the Debezium envelope, the decoder
and ``apply_event`` (``training/replay.py``), replayed in event-time order; each batch is a window of
consecutive transactions of that run. "With model" serves a freshly initialised R-GCN (the
shipped architecture, untrained: inference cost does not depend on the weights) from a temporary
registry through the real ``ModelServer``; "without" has an empty registry, so decisions are rules
and policy alone (what the worker does until a model is registered). Latency is the wall time of
one ``decide`` call for the whole batch; the per-transaction figure divides it by the batch size.
Kafka, state reads and the record write are not included (``benchmarks/worker.py`` measures those).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import torch
from common import machine, pct, register_untrained_model

from fraudgraph.models.registry import ModelRegistry
from fraudgraph.models.serving import ModelServer
from fraudgraph.settings import load_settings
from fraudgraph.stack.simulator.config import SimConfig
from fraudgraph.streams.decider import Decider
from fraudgraph.streams.policy import PolicySource
from fraudgraph.streams.scoring import ScoringInput
from fraudgraph.streams.state import Source, apply_event
from fraudgraph.training.replay import _LiveStore, decoded, event_time_order, simulator_records


def scoring_inputs(customers: int, hours: float) -> list[ScoringInput]:
    config = SimConfig(
        customers=customers,
        duration_s=hours * 3600,
        start=datetime(2026, 11, 1, tzinfo=UTC),
        fraud_rate=0.05,
        seed=3,
        id_base=10**12,
    )
    settings = load_settings()
    store, inputs = _LiveStore(), []
    for offset, event in enumerate(event_time_order(decoded(simulator_records(config, settings), settings))):
        source = Source("sim", 0, offset, event.position.ts_ms)
        applied = apply_event(event, source, store)
        if applied.transaction is not None and not applied.replayed:
            inputs.append(ScoringInput(applied.transaction, source, {s.key: s for s in applied.touched}))
    return inputs


async def measure(registry: Path, device: str, inputs: list[ScoringInput], size: int, repeats: int) -> dict:
    server = ModelServer(ModelRegistry(registry), device=device, reload_s=3600, threads=load_settings().model_threads)
    await server.start()
    decider = Decider(server, PolicySource())
    try:
        batches = [inputs[(i * size) % (len(inputs) - size) :][:size] for i in range(repeats + 5)]
        for batch in batches[:5]:  # warm-up: first-call allocations, lazy kernels
            await decider.decide(batch)
        seconds, rules, model = [], [], []
        for batch in batches[5:]:
            started = time.perf_counter()
            decided = await decider.decide(batch)
            seconds.append(time.perf_counter() - started)
            rules.append(decided[0].rules_s)
            model.append(decided[0].model_s)
        ms = [s * 1000 for s in seconds]
        return {
            "batch": size,
            "repeats": repeats,
            "model_version": server.version or "none",
            "batch_ms": {
                "p50": round(pct(ms, 0.5), 3),
                "p99": round(pct(ms, 0.99), 3),
                "mean": round(statistics.fmean(ms), 3),
            },
            "per_tx_ms_p50": round(pct(ms, 0.5) / size, 4),
            "rules_ms_p50": round(pct(rules, 0.5) * 1000, 3),
            "model_ms_p50": round(pct(model, 0.5) * 1000, 3),
        }
    finally:
        await server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1,16,256")
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--customers", type=int, default=1000)
    ap.add_argument("--hours", type=float, default=6.0)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "decisions.json"))
    args = ap.parse_args()

    t0 = time.perf_counter()
    inputs = scoring_inputs(args.customers, args.hours)
    print(f"{len(inputs)} transactions replayed from the simulator in {time.perf_counter() - t0:.1f}s")
    with tempfile.TemporaryDirectory() as tmp:
        empty, with_model = Path(tmp) / "empty", Path(tmp) / "models"
        version = register_untrained_model(with_model)
        runs = []
        for registry, label in ((empty, "without model"), (with_model, "with model")):
            for size in (int(s) for s in args.sizes.split(",")):
                r = asyncio.run(measure(registry, args.device, inputs, size, args.repeats))
                r["model"] = label
                runs.append(r)
                print(
                    f"{label:>14}  batch {size:>4}: p50 {r['batch_ms']['p50']:8.3f} ms  p99 {r['batch_ms']['p99']:8.3f} ms"
                    f"  ({r['per_tx_ms_p50']:.4f} ms/tx; rules {r['rules_ms_p50']:.3f} ms, model {r['model_ms_p50']:.3f} ms)"
                )
    report = {
        "benchmark": "Decider.decide latency per micro-batch, in process",
        "machine": machine(),
        "command": "python " + " ".join(["benchmarks/decisions.py", *sys.argv[1:]]),
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "model": f"untrained HeteroRGCN ({version})",
        "transactions": len(inputs),
        "load_avg_1m_after": round(__import__("os").getloadavg()[0], 2),
        "runs": runs,
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
