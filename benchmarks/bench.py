"""The benchmark entry point (``make bench``): the real stack, a load series, recovery, micro-benchmarks.

    python benchmarks/bench.py [--rates 50,100,250,500,1000,2000,0] [--seconds 30] [--customers 2000]
                               [--states 1000000] [--micro decoder,simulator,graph_writer,scorer,decisions]
                               [--no-model] [--baseline OLD/bench.json] [--out-dir benchmarks/results/bench]

1. brings the local stack up (Kafka, Neo4j, Postgres, Connect; ``fraudgraph stack up``);
2. trains and registers a fraud model on simulator data, so the worker decides with model + rules
   as deployed (``--no-model``: rules only);
3. drives the simulator's fast mode at each offered load against a fresh worker (``worker.py``):
   throughput, CDC append -> score append percentiles, graph freshness, peak RSS, quality;
4. SIGKILLs a worker holding ``--states`` node states and times the restart (``recovery.py``);
5. runs the micro-benchmarks (their own JSON next to this one);
6. writes ``bench.json``, ``bench.md`` and the plots, compared with ``--baseline`` when given.

Figures are measured, never asserted: the report says which targets are met.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import report
import worker
from common import machine

from fraudgraph.settings import load_settings
from fraudgraph.stack import local

HERE = Path(__file__).resolve().parent
MICRO = {  # name -> arguments (each also gets --out); sized to finish in a few minutes on 2 cores
    "decoder": [],
    "simulator": ["--repeats", "3"],
    "graph_writer": [],
    "scorer": ["--repeats", "20"],
    "decisions": ["--repeats", "100"],
}


def versions() -> dict[str, str]:
    out = {
        p: version(p) for p in ("faust-streaming", "aiokafka", "confluent-kafka", "neo4j", "torch", "torch-geometric")
    }
    poms = (HERE.parent / "stack" / "maven").glob("*/pom.xml")
    for pom in poms:
        text = pom.read_text()
        for name, pattern in (
            ("kafka", r"kafka_2\.13</artifactId><version>([^<]+)"),
            ("debezium", r"debezium-connector-postgres</artifactId><version>([^<]+)"),
            ("neo4j-server", r"<neo4j\.version>([^<]+)"),
        ):
            if m := re.search(pattern, text):
                out[name] = m.group(1)
    out["python"] = sys.version.split()[0]
    try:
        out["fraudgraph"] = subprocess.run(
            ["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        out["fraudgraph"] = version("fraudgraph")
    return out


def gpu() -> str | None:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def train_model(model_dir: Path) -> dict:
    """A small simulator model, registered where the benchmark's workers look."""
    cmd = [
        sys.executable,
        "-m",
        "fraudgraph.cli",
        "train",
        "--source",
        "simulator",
        "--customers",
        "300",
        "--hours",
        "24",
        "--seed",
        "1",
    ]
    done = subprocess.run(
        cmd, env=dict(os.environ, FRAUDGRAPH_MODEL_DIR=str(model_dir)), capture_output=True, text=True
    )
    if done.returncode:
        raise RuntimeError(f"training failed: {done.stderr[-2000:]}")
    return {"command": " ".join(cmd[1:]), **json.loads(done.stdout[done.stdout.index("{") :])}


def run_script(name: str, args: list[str], out: Path, timeout_s: float = 1800) -> dict:
    cmd = [sys.executable, str(HERE / f"{name}.py"), *args, "--out", str(out)]
    started = time.monotonic()
    done = subprocess.run(cmd, cwd=HERE.parent, capture_output=True, text=True, timeout=timeout_s)
    entry = {
        "command": "python " + " ".join(cmd[1:]).replace(str(HERE.parent) + "/", ""),
        "file": out.name,
        "seconds": round(time.monotonic() - started, 1),
    }
    if done.returncode:
        entry["error"] = done.stderr[-1500:]
    elif out.exists():
        entry["result"] = json.loads(out.read_text())
    return entry


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rates", default="50,100,250,500,1000,2000,0", help="offered tx/s per run; 0 = unpaced")
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--customers", type=int, default=2000)
    ap.add_argument("--states", type=int, default=1_000_000, help="node states for the recovery run (0: skip)")
    ap.add_argument("--micro", default=",".join(MICRO), help="micro-benchmarks to run ('' for none)")
    ap.add_argument("--no-model", action="store_true")
    ap.add_argument("--baseline", help="a previous bench.json to compare with")
    ap.add_argument("--out-dir", default=str(HERE / "results" / "bench"))
    args = ap.parse_args(argv)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "fraudgraph bench",
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python benchmarks/bench.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine() | {"gpu": gpu()},
        "loadavg_at_start": os.getloadavg()[0],
        "versions": versions(),
    }
    settings = load_settings()
    local.up(settings)

    model_dir = Path(tempfile.mkdtemp(prefix="fraudgraph-bench-models-"))  # not a result: kept out of the repo
    if not args.no_model:
        result["model"] = train_model(model_dir)
        print("model:", json.dumps({k: result["model"].get(k) for k in ("version", "threshold", "test")}), flush=True)
    runs = []
    for i, rate in enumerate(float(r) for r in args.rates.split(",") if r):
        run = worker.run_once(
            settings,
            rate,
            args.seconds,
            args.customers,
            6300 + i,
            None if args.no_model else str(model_dir),
            profile_s=20 if rate == 0 else 0,
        )  # the saturated run shows where the time goes
        print(json.dumps({k: v for k, v in run.items() if k != "timeline"}), flush=True)
        runs.append(run)
    result["load"] = {"seconds": args.seconds, "customers": args.customers, "runs": runs}
    if args.states:
        entry = run_script("recovery", ["--states", str(args.states)], out_dir / "recovery.json")
        result["recovery"] = entry.get("result") or {"error": entry.get("error")}
        print(
            "recovery:",
            json.dumps({k: result["recovery"].get(k) for k in ("cold_start_s", "restart_after_kill_s", "error")}),
            flush=True,
        )
    result["micro"] = {}
    for name in filter(None, args.micro.split(",")):
        entry = run_script(name, MICRO[name], out_dir / f"{name}.json")
        result["micro"][name] = {k: v for k, v in entry.items() if k != "result"}
        print(f"{name}: {entry['seconds']} s" + (" FAILED" if "error" in entry else ""), flush=True)

    (out_dir / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    baseline = json.loads(Path(args.baseline).read_text()) if args.baseline else None
    plots = report.plot(result, out_dir)
    (out_dir / "bench.md").write_text(report.markdown(result, baseline, plots))
    print(json.dumps(report.summary(result), indent=2))
    print(f"wrote {out_dir / 'bench.json'} and {out_dir / 'bench.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
