"""Worker recovery benchmark: how long until scoring resumes after SIGKILL, with N node states.

    python benchmarks/recovery.py [--states 1000000] [--rate 20] [--out benchmarks/results/recovery.json]

Why the states are written straight to the changelog: a worker would need hours of traffic on this
machine to build a million node states. The states are real ones (a simulator run replayed through
``apply_event``), cloned under fresh keys (ids far above the simulator's) and written to the
worker's ``node-state`` changelog on the partition the worker writes it to (murmur2 of the key), so
the worker restores exactly what it would have written itself.

Three timings, each "first score appended after the moment" (traffic flows throughout):

* ``cold_start_s``: a new worker: restores every state from the changelog (and every score);
* ``restart_after_kill_s``: the same worker SIGKILLed and restarted (it restores the same way: the
  worker keeps no local copy of its state);
* ``process_start_s``: of that restart, until the worker's HTTP endpoint answers (Python and
  torch imports), to tell start-up cost from recovery.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

from aiokafka.partitioner import murmur2
from common import delete_run_topics, machine
from confluent_kafka import Consumer, Producer

from fraudgraph.settings import load_settings
from fraudgraph.stack import local
from fraudgraph.stack.simulator import simulate
from fraudgraph.stack.simulator.config import SimConfig
from fraudgraph.streams.app import PARTITIONS, worker_topics
from fraudgraph.streams.state import Source, apply_event
from fraudgraph.streams.topics import ensure_topics
from fraudgraph.training.replay import _LiveStore, decoded, event_time_order, simulator_records

CLONE_ID_BASE = 10**12


def real_states(settings, customers: int = 300, hours: float = 6.0) -> list:
    store = _LiveStore()
    events = event_time_order(
        decoded(
            simulator_records(SimConfig(customers=customers, duration_s=hours * 3600, seed=5), settings),
            settings,
            Counter(),
        )
    )
    for offset, event in enumerate(events):
        apply_event(event, Source("bench", 0, offset, event.position.ts_ms), store)
    return list(store.values())


def write_changelog(settings, topic: str, templates: list, n: int) -> dict:
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "linger.ms": 50,
            "batch.num.messages": 10000,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 500_000,
        }
    )
    started, size = time.monotonic(), 0
    for i in range(n):
        t = templates[i % len(templates)]
        key = f"{t.node_type}:{CLONE_ID_BASE + i}".encode()
        value = dataclasses.replace(t, key=key.decode()).to_json()
        size += len(value)
        while True:
            try:
                producer.produce(topic, key=key, value=value, partition=(murmur2(key) & 0x7FFFFFFF) % PARTITIONS)
                break
            except BufferError:
                producer.poll(0.1)
    producer.flush(300)
    return {"states": n, "mean_state_bytes": round(size / n), "write_s": round(time.monotonic() - started, 1)}


def first_score_after(consumer: Consumer, t0_ms: int, timeout_s: float) -> float | None:
    """Seconds from ``t0_ms`` to the append time of the first score record appended after it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for m in consumer.consume(500, 0.5):
            if not m.error() and m.timestamp()[1] > t0_ms:
                return round((m.timestamp()[1] - t0_ms) / 1000, 2)
    return None


def wait_http(port: int, timeout_s: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1).read()
            return round(time.monotonic() - started, 2)
        except OSError:
            time.sleep(0.1)
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--states", type=int, default=1_000_000)
    ap.add_argument("--rate", type=float, default=20, help="transactions/s of the background traffic")
    ap.add_argument("--port", type=int, default=6390)
    ap.add_argument("--out", default="benchmarks/results/recovery.json")
    args = ap.parse_args()
    settings = load_settings()
    local.up(settings)
    run = uuid.uuid4().hex[:8]
    s = settings.replace(topic_prefix=f"recov{run}", scores_topic=f"recov.scores.{run}", worker_id=f"recov-{run}")
    changelog = f"{s.worker_id}-node-state-changelog"
    ensure_topics(
        s.kafka_bootstrap, {**worker_topics(s), changelog: PARTITIONS}, 1, {changelog: {"cleanup.policy": "compact"}}
    )

    templates = real_states(s)
    written = write_changelog(s, changelog, templates, args.states)
    print(json.dumps(written), flush=True)

    data_dir = Path(f"/tmp/fraudgraph-bench/{run}")
    env = dict(
        os.environ,
        FRAUDGRAPH_TOPIC_PREFIX=s.topic_prefix,
        FRAUDGRAPH_SCORES_TOPIC=s.scores_topic,
        FRAUDGRAPH_WORKER_ID=s.worker_id,
        FRAUDGRAPH_WORKER_WEB_PORT=str(args.port),
        FRAUDGRAPH_WORKER_DATA_DIR=str(data_dir),
        FRAUDGRAPH_MODEL_DIR=str(data_dir / "no-models"),
    )
    log = open(f"/tmp/fraudgraph-bench-recovery-{run}.log", "ab")
    consumer = Consumer(
        {
            "bootstrap.servers": s.kafka_bootstrap,
            "group.id": f"recov-reader-{run}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([s.scores_topic])

    # Background traffic for the whole run: new transactions keep arriving while the worker is down.
    traffic = threading.Thread(
        target=simulate,
        args=(s,),
        daemon=True,
        kwargs=dict(mode="kafka", customers=300, duration_s=48 * 3600, rate=args.rate, seed=6),
    )
    traffic.start()

    start_ms = int(time.time() * 1000)
    worker = subprocess.Popen(
        [sys.executable, "-m", "fraudgraph.cli", "worker"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    cold = first_score_after(consumer, start_ms, 900)
    print(json.dumps({"cold_start_s": cold}), flush=True)
    time.sleep(10)  # steady scoring, local store flushed as it normally is
    # VmRSS counts the shared libraries' pages too (torch's alone: about 236 MiB); RssAnon is the heap.
    status = {
        line.split(":")[0]: int(line.split()[1]) / 1024 for line in open(f"/proc/{worker.pid}/status") if "kB" in line
    }

    kill_ms = int(time.time() * 1000)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    worker = subprocess.Popen(
        [sys.executable, "-m", "fraudgraph.cli", "worker"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    process_start = wait_http(args.port, 120)
    restart = first_score_after(consumer, kill_ms, 900)
    worker.terminate()
    worker.wait(60)
    consumer.close()
    delete_run_topics(s)

    result = {
        "benchmark": "worker recovery after SIGKILL",
        "machine": machine(),
        "command": "python " + " ".join(sys.argv),
        "changelog": written,
        "traffic_tx_per_s": args.rate,
        "cold_start_s": cold,
        "restart_after_kill_s": restart,
        "process_start_s": process_start,
        "worker_rss_mib_before_kill": round(status["VmRSS"], 1),
        "worker_rss_anon_mib_before_kill": round(status["RssAnon"], 1),
        "log": log.name,
    }
    print(json.dumps(result), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
