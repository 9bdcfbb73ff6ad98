"""The worker's pipeline alone, in process: decode -> order -> apply -> decide -> emit, no Kafka.

    python benchmarks/pipeline.py [--customers 400] [--hours 4] [--seed 1] [--repeats 3]
                                  [--out benchmarks/results/pipeline.json]

What the CPU of the worker's event loop can do before any client cost: ``replay_decisions`` (the
offline replay, which is the worker's own ``Pipeline`` over a complete log) over a simulator log
split into partitions as Kafka holds it, rules only and with a model (an untrained R-GCN of the
shipped architecture on the CPU at one torch thread, as the worker serves it: inference cost does
not depend on the weights). The ceiling beside it, measured in the same run over the same records:
the decoder alone, the pipeline's first stage, as a bare loop. The garbage collector is tuned as
the worker tunes it (``streams/worker.py``, ``tune_gc``). Reported: transactions per second of
each repeat and their median.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from common import machine, register_untrained_model

from fraudgraph.connectors.decoder import DecodeError, decode
from fraudgraph.connectors.mapping import load_mapping
from fraudgraph.models.registry import ModelRegistry
from fraudgraph.models.serving import ModelServer
from fraudgraph.settings import Settings
from fraudgraph.stack.simulator.config import SimConfig
from fraudgraph.streams.decider import Decider
from fraudgraph.streams.pipeline import Record
from fraudgraph.streams.policy import PolicySource
from fraudgraph.streams.testing import partitioned, replay_decisions
from fraudgraph.streams.worker import tune_gc
from fraudgraph.training.replay import simulator_records


def decode_only(records: list[Record], settings: Settings) -> float:
    mapping = load_mapping(settings.mapping_file or None)
    started = time.perf_counter()
    for r in records:
        try:
            decode(r.topic, r.value, mapping, settings.decimal_handling_mode, r.key)
        except DecodeError:
            pass
    return time.perf_counter() - started


async def pipeline(records: list[Record], settings: Settings, registry: Path) -> tuple[int, float]:
    server = ModelServer(ModelRegistry(registry), "cpu", max_batch=512, max_delay_s=0.001, reload_s=3600, threads=1)
    await server.start()
    try:
        started = time.perf_counter()
        scored = await replay_decisions(records, settings, Decider(server, PolicySource(None)))
        return len(scored), time.perf_counter() - started
    finally:
        await server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--customers", type=int, default=400)
    ap.add_argument("--hours", type=float, default=4.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "pipeline.json"))
    args = ap.parse_args()
    settings = Settings()
    sim = SimConfig(customers=args.customers, duration_s=int(args.hours * 3600), seed=args.seed)
    records = [r for log in partitioned(simulator_records(sim, settings)).values() for r in log]
    tune_gc()
    with tempfile.TemporaryDirectory() as tmp:
        empty, with_model = Path(tmp) / "empty", Path(tmp) / "models"
        register_untrained_model(with_model)
        runs: dict[str, list[float]] = {"decode only (ceiling)": [], "rules only": [], "with model": []}
        transactions = 0
        for _ in range(args.repeats):
            for label, registry in (("rules only", empty), ("with model", with_model)):
                transactions, seconds = asyncio.run(pipeline(records, settings, registry))
                runs[label].append(transactions / seconds)
            runs["decode only (ceiling)"].append(transactions / decode_only(records, settings))
    figures = {
        label: {"tx_per_s": [round(v, 1) for v in values], "median": round(statistics.median(values), 1)}
        for label, values in runs.items()
    }
    ceiling = figures["decode only (ceiling)"]["median"]
    for label, f in figures.items():
        f["share_of_ceiling"] = round(f["median"] / ceiling, 3)
        print(
            f"{label:22s} median {f['median']:9.1f} tx/s  ({f['share_of_ceiling']:.1%} of decode alone)  runs {f['tx_per_s']}"
        )
    report = {
        "benchmark": "pipeline in process (replay_decisions), no Kafka",
        "machine": machine("cpu"),
        "command": "python benchmarks/pipeline.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"),
        "log": {
            "records": len(records),
            "transactions": transactions,
            "customers": args.customers,
            "hours": args.hours,
            "seed": args.seed,
        },
        "results": figures,
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
