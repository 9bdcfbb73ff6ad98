"""End-to-end worker benchmark on the real stack: CDC event append -> score append.

    python benchmarks/worker.py [--rates 25,50,100,0] [--seconds 30] [--customers 500]
                                [--model-dir DIR | --untrained-model] [--out benchmarks/results/worker.json]

Without a model the decisions are rules alone; ``--untrained-model`` registers a freshly initialised
R-GCN of the shipped architecture (inference cost does not depend on the weights) in a temporary
registry, so the model's cost is measured without training one first.

For each offered load (payment transactions per second; 0 = as fast as the simulator writes) it
starts a fresh ``fraudgraph worker`` subprocess on its own CDC and scores topics, drives the
simulator's fast mode (Debezium envelopes straight to Kafka) at that rate, and reads every score.

Latency is per transaction, from the Kafka timestamp of its CDC record (carried in the score as
``timings.cdc_append_ms``) to the Kafka timestamp of its score record: both are stamped by producers
on this machine, so no clock skew enters. Throughput is transactions (and all CDC events) over the
time from the first CDC append to the last score append. The graph sink runs as the worker's child
process (as deployed) on the same cores, so its CPU use competes; graph freshness is the worker's own
``fraudgraph_graph_append_to_commit_seconds`` histogram (CDC append -> committed in Neo4j), read
once the graph stage has caught up. Quality is each decision against the simulator's ground truth.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from common import delete_run_topics, machine, pct, register_untrained_model
from confluent_kafka import Consumer

from fraudgraph.settings import load_settings
from fraudgraph.stack import local
from fraudgraph.stack.simulator import daytime_start, simulate
from fraudgraph.streams.app import worker_topics
from fraudgraph.streams.topics import ensure_topics

DRAIN_S = 180  # after the simulator finishes: longer means the worker is far past saturation anyway


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def histogram_quantile(metrics: dict[str, float], name: str, q: float) -> float | None:
    """The upper bound of the bucket holding the q-quantile (Prometheus' buckets, no interpolation)."""
    buckets = sorted(
        (float(k.split('le="')[1].split('"')[0]), v) for k, v in metrics.items() if k.startswith(f"{name}_bucket{{")
    )
    if not buckets or buckets[-1][1] == 0:
        return None
    rank = q * buckets[-1][1]
    return next(le for le, count in buckets if count >= rank)


def peak_rss_mib(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """Child processes of ``pid`` (the worker's graph sink)."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def quality(decisions: dict[int, str], fraud: set[int]) -> dict:
    """Recall, FPR and precision of "not approved" against the ground truth, at the policy's thresholds."""
    alerted = {tx for tx, d in decisions.items() if d != "approve"}
    fraud_seen = fraud & decisions.keys()
    tp, fp = len(alerted & fraud_seen), len(alerted - fraud_seen)
    legit = len(decisions) - len(fraud_seen)
    return {
        "fraud": len(fraud_seen),
        "legit": legit,
        "alerted": len(alerted),
        "recall": round(tp / len(fraud_seen), 4) if fraud_seen else None,
        "fpr": round(fp / legit, 5) if legit else None,
        "precision": round(tp / len(alerted), 4) if alerted else None,
    }


def timeline(pairs: list[tuple[int, int]], first_cdc: int) -> list[list[float]]:
    """[second since start, transactions, p50 ms, p99 ms] per second of CDC append time, for plots."""
    by_second: dict[int, list[int]] = {}
    for cdc, lat in pairs:
        by_second.setdefault((cdc - first_cdc) // 1000, []).append(lat)
    return [[s, len(v), pct(v, 0.5), pct(v, 0.99)] for s, v in sorted(by_second.items())]


def profile_summary(collapsed: str, top: int = 12) -> dict:
    """py-spy's collapsed stacks -> the share of samples per package/module (inclusive: a sample
    counts for every module on its stack once) and the top frames by self time."""
    total, inclusive, own = 0, {}, {}
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n, frames = int(count), stack.split(";")
        total += n
        for module in {_module(f) for f in frames}:
            if not module.startswith(FRAMING):
                inclusive[module] = inclusive.get(module, 0) + n
        own[frames[-1]] = own.get(frames[-1], 0) + n
    share = lambda d: {k: round(v / total, 3) for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:top]}
    return {"samples": total, "inclusive_by_module": share(inclusive), "self_by_frame": share(own)}


REPO = Path(__file__).resolve().parents[1].name + "/"  # py-spy names repo files "<repo dir>/streams/app.py"
# On every stack of the worker's main thread, or the event loop and thread plumbing: no information.
FRAMING = (
    "<frozen",
    "asyncio/",
    "threading.py",
    "concurrent/",
    "selectors.py",
    "runpy.py",
    "cli.py",
    "streams/worker.py",
    "mode/worker.py",
    "mode/services.py",
    "mode/utils/",
)


def _module(frame: str) -> str:
    """'func (path/to/pkg/mod.py:12)' -> 'pkg/mod.py' relative to the repo, site-packages or the stdlib."""
    path = frame.rsplit("(", 1)[-1].split(":")[0]
    if path.startswith(REPO):
        return path[len(REPO) :]
    for marker in ("site-packages/", "python3.11/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def bare_loop(s, events: int, batch: int) -> dict:
    """The ceiling for the same input: the worker's Kafka client and settings, and nothing of the
    engine but decoding: consume the run's CDC topics, decode each record, produce one small record
    per transaction. Measured over the complete log, as the worker drains it."""
    from confluent_kafka import Producer, TopicPartition

    from fraudgraph.connectors.decoder import DecodeError, decode
    from fraudgraph.connectors.events import TransactionCreated
    from fraudgraph.connectors.mapping import load_mapping
    from fraudgraph.kafka_config import confluent_config

    mapping = load_mapping(s.mapping_file or None)
    topics = mapping.topics(s.topic_prefix)
    consumer = Consumer(confluent_config(s, **{"group.id": f"{s.worker_id}-bare", "enable.auto.commit": False}))
    consumer.assign([TopicPartition(t, p, 0) for t in topics for p in range(4)])
    out = f"{s.scores_topic}.bare"
    ensure_topics(s.kafka_bootstrap, {out: 4})
    producer = Producer(confluent_config(s, **{"linger.ms": 5}))
    seen = transactions = 0
    started = time.perf_counter()
    try:
        while seen < events and time.perf_counter() - started < 120:
            for m in consumer.consume(batch, 0.005):
                if m.error():
                    continue
                seen += 1
                try:
                    event = decode(m.topic(), m.value(), mapping, s.decimal_handling_mode, m.key())
                except DecodeError:
                    continue
                if isinstance(event, TransactionCreated):
                    transactions += 1
                    producer.produce(out, key=str(event.transaction_id).encode(), value=b"{}")
                producer.poll(0)
        producer.flush(30)
    finally:
        consumer.close()
    seconds = time.perf_counter() - started
    return {"events": seen, "tx_per_s": round(transactions / seconds, 1), "events_per_s": round(seen / seconds, 1)}


def run_once(
    base_settings,
    rate: float,
    seconds: float,
    customers: int,
    port: int,
    model_dir: str | None = None,
    profile_s: float = 0,
) -> dict:
    run = uuid.uuid4().hex[:8]
    s = base_settings.replace(topic_prefix=f"bench{run}", scores_topic=f"bench.scores.{run}", worker_id=f"bench-{run}")
    ensure_topics(s.kafka_bootstrap, worker_topics(s))
    env = dict(
        os.environ,
        FRAUDGRAPH_TOPIC_PREFIX=s.topic_prefix,
        FRAUDGRAPH_SCORES_TOPIC=s.scores_topic,
        FRAUDGRAPH_WORKER_ID=s.worker_id,
        FRAUDGRAPH_WORKER_WEB_PORT=str(port),
        FRAUDGRAPH_WORKER_DATA_DIR=f"/tmp/fraudgraph-bench/{run}",
        FRAUDGRAPH_MODEL_DIR=model_dir or f"/tmp/fraudgraph-bench/{run}/no-models",
    )
    log = open(f"/tmp/fraudgraph-bench-{run}.log", "wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "fraudgraph.cli", "worker"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    consumer = Consumer(
        {
            "bootstrap.servers": s.kafka_bootstrap,
            "group.id": f"bench-reader-{run}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([s.scores_topic])
    try:
        time.sleep(15)  # worker start-up, model load and group join (not part of the measurement)
        # Simulated span for about rate*seconds transactions (the simulator's customers make about
        # 2.6 payments an hour each); the unpaced run gets as many as 20 s at 1,000/s.
        target = rate * seconds if rate else 20_000
        duration = max(600.0, target / (customers * 2.6) * 3600)
        cpu_at_start = cpu_s(worker.pid)
        profiler = None
        if profile_s:  # sampled while the simulator writes (and the worker works), not while it idles after
            profiler = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "-p",
                    str(worker.pid),
                    "-d",
                    str(int(profile_s)),
                    "-r",
                    "50",
                    "-f",
                    "raw",
                    "-o",
                    f"/tmp/fraudgraph-bench-{run}.collapsed",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        report = simulate(
            s,
            mode="kafka",
            customers=customers,
            duration_s=duration,
            rate=rate or None,
            fraud_rate=0.02,
            seed=3,
            start=daytime_start(),
        )
        n = report.rows["transactions"]["insert"]
        latencies, pairs, first_cdc, last_score = [], [], None, 0
        to_decided: list[tuple[int, int]] = []  # (cdc append, decided - cdc append): the wait before the decision
        decisions: dict[int, str] = {}
        stages: dict[str, list[float]] = {"state_ms": [], "decide_ms": [], "rules_ms": [], "model_ms": [], "batch": []}
        deadline = time.monotonic() + DRAIN_S
        while len(decisions) < n and time.monotonic() < deadline:
            if worker.poll() is not None:
                raise RuntimeError(f"worker exited with {worker.returncode}; see {log.name}")
            for m in consumer.consume(1000, 1.0):
                if m.error():
                    continue
                r = json.loads(m.value())
                if r["transaction_id"] in decisions:
                    continue
                decisions[r["transaction_id"]] = r["decision"]
                cdc, out = r["timings"]["cdc_append_ms"], m.timestamp()[1]
                latencies.append(out - cdc)
                pairs.append((cdc, out - cdc))
                to_decided.append((cdc, r["timings"]["decided_ms"] - cdc))
                for k, v in stages.items():
                    v.append(r["timings"].get(k, 0))
                first_cdc = cdc if first_cdc is None else min(first_cdc, cdc)
                last_score = max(last_score, out)
        span = (last_score - first_cdc) / 1000
        worker_cpu = cpu_s(worker.pid) - cpu_at_start  # the scoring process only (the graph sink is a child)
        profile = None
        if profiler is not None:
            profiler.wait(profile_s + 60)
            collapsed = Path(f"/tmp/fraudgraph-bench-{run}.collapsed")
            profile = (
                profile_summary(collapsed.read_text()) if collapsed.exists() else {"error": "py-spy wrote nothing"}
            )
        # The graph stage has its own consumer group: wait (bounded) until it has committed every event.
        graph_deadline = time.monotonic() + 60
        while True:
            m = scrape(port)
            if (
                m.get("fraudgraph_graph_append_to_commit_seconds_count", 0) >= report.total_rows
                or time.monotonic() > graph_deadline
            ):
                break
            time.sleep(1)
        # The run opens with every customer, account, merchant and device row at once; the second
        # half of the run (by CDC append time) is the steady state at the offered rate.
        mid = first_cdc + (max(c for c, _ in pairs) - first_cdc) / 2
        steady = [lat for c, lat in pairs if c >= mid]
        steady_decided = [lat for c, lat in to_decided if c >= mid]
        fresh = "fraudgraph_graph_append_to_commit_seconds"
        ceiling = bare_loop(s, report.total_rows, base_settings.worker_batch_max)
        throughput = round(len(decisions) / span, 1)
        return {
            "offered_tx_per_s": rate or "max",
            "transactions": n,
            "cdc_events": report.total_rows,
            "scored": len(decisions),
            "unscored_after_drain": n - len(decisions),
            "simulator_tx_per_s": round(report.transactions_per_s, 1),
            "throughput_tx_per_s": throughput,
            "throughput_events_per_s": round(report.total_rows / span, 1),
            "worker_cpu_ms_per_tx": round(worker_cpu * 1000 / max(len(decisions), 1), 2),
            "records_out": {k.split('"')[1]: v for k, v in m.items() if k.startswith("fraudgraph_records_out_total{")},
            "bare_loop": ceiling,
            "engine_share_of_bare_loop": round(throughput / ceiling["tx_per_s"], 4),
            "latency_ms": {
                "p50": pct(latencies, 0.50),
                "p95": pct(latencies, 0.95),
                "p99": pct(latencies, 0.99),
                "max": max(latencies),
                "mean": round(statistics.fmean(latencies), 1),
            },
            "steady_latency_ms": {
                "p50": pct(steady, 0.50),
                "p95": pct(steady, 0.95),
                "p99": pct(steady, 0.99),
                "max": max(steady),
            },
            # of which until the decision (fetch, event-time order, apply, decide); the rest is emit
            "steady_to_decided_ms": {"p50": pct(steady_decided, 0.50), "p99": pct(steady_decided, 0.99)},
            # Where a transaction's time goes inside the worker (medians/p99 over transactions);
            # the rest of its latency is waiting: in Kafka, in the consumer's buffer, for its batch.
            "stages_ms": {k: {"p50": pct(v, 0.5), "p99": pct(v, 0.99)} for k, v in stages.items()},
            # The worker's own clock stops at the commit of the score's transaction, when a
            # read-committed reader can see it (up to worker_checkpoint_ms after the record's
            # timestamp above); Prometheus buckets, so an upper bound.
            "e2e_at_commit_s": {
                "p50_le": histogram_quantile(m, "fraudgraph_e2e_latency_seconds", 0.5),
                "p99_le": histogram_quantile(m, "fraudgraph_e2e_latency_seconds", 0.99),
            },
            "graph_freshness_s": {
                "p50_le": histogram_quantile(m, fresh, 0.5),
                "p99_le": histogram_quantile(m, fresh, 0.99),
                "events": m.get(f"{fresh}_count", 0),
            },
            "worker_peak_rss_mib": peak_rss_mib(worker.pid),
            "graph_sink_peak_rss_mib": sum(peak_rss_mib(c) for c in children(worker.pid)),
            "quality": quality(decisions, set(report.truth.labels)),
            "timeline": timeline(pairs, first_cdc),
            **({"profile": profile} if profile else {}),
        }
    finally:
        consumer.close()
        worker.terminate()
        worker.wait(60)
        delete_run_topics(s)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default="25,50,100,0")
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--customers", type=int, default=500)
    ap.add_argument("--model-dir", default=None, help="registry the worker loads (default: none, rules only)")
    ap.add_argument("--untrained-model", action="store_true", help="an untrained model of the shipped architecture")
    ap.add_argument("--out", default="benchmarks/results/worker.json")
    args = ap.parse_args()
    settings = load_settings()
    local.up(settings)
    if args.untrained_model:
        args.model_dir = tempfile.mkdtemp(prefix="fraudgraph-bench-models-")
        register_untrained_model(args.model_dir)
    results = []
    for i, rate in enumerate(float(r) for r in args.rates.split(",")):
        r = run_once(settings, rate, args.seconds, args.customers, 6300 + i, args.model_dir)
        print(json.dumps({k: v for k, v in r.items() if k != "timeline"}), flush=True)
        results.append(r)
    out = {
        "benchmark": "worker end to end (CDC append -> score append)",
        "machine": machine(),
        "command": "python " + " ".join(sys.argv),
        "model_dir": args.model_dir,
        "runs": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
