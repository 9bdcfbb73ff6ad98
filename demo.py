"""``fraudgraph demo``: the engine's main job, end to end on the local stack, in a few minutes.

1. the stack up (Kafka, Connect + Debezium, PostgreSQL, Neo4j, Prometheus);
2. a model: the registry's current one, or one trained now on a short simulated history;
3. a worker (``fraudgraph worker``) in a consumer group of its own, starting at the end of the CDC
   topics, so it decides this run only;
4. simulated payments with live fraud patterns written into PostgreSQL (the real CDC path) and, as
   they are decided, decisions per second, latency, and each alert with its reasons;
5. one score query and one recommendation query over the topics (``streams/client.py``);
6. recall and precision of this run against the simulator's truth, and where to look next.

Ctrl-C at any point stops what the demo started: the load, the worker, and the stack if it was not
running before.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from fraudgraph.kafka_config import confluent_config
from fraudgraph.settings import Settings
from fraudgraph.stack import local

FRAUD_RATE = 0.05
SHOWN_ALERTS = 12  # alerts printed in full; the rest are counted


def assign_at_end(consumer: Consumer, topic: str) -> None:
    """Position ``consumer`` after everything already in ``topic``: only what is appended from now
    on belongs to this run.

    A topic that does not exist yet is an error: assigning its (no) partitions would read nothing,
    silently, even once the topic is created."""
    meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
    if meta is None or meta.error is not None or not meta.partitions:
        raise LookupError(f"topic {topic!r} does not exist yet: create it before positioning at its end")
    consumer.assign([TopicPartition(topic, p, _end_offset(consumer, topic, p)) for p in meta.partitions])


def _end_offset(consumer: Consumer, topic: str, partition: int, wait_s: float = 15.0) -> int:
    """The partition's end; a topic created a moment ago has no leader yet (``NOT_LEADER_FOR_PARTITION``
    or ``LEADER_NOT_AVAILABLE`` for a few hundred ms), which is waited out, not an error."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1]
        except KafkaException as err:
            retriable = err.args[0].code() in (KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE)
            if not retriable or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _commit_at_end(settings: Settings, group: str, topics: list[str]) -> None:
    """Start ``group`` at the current end of ``topics`` (earlier runs' events are not this demo's)."""
    consumer = Consumer(confluent_config(settings, **{"group.id": group, "enable.auto.commit": False}))
    try:
        ends = []
        for topic in topics:
            for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
                ends.append(TopicPartition(topic, p, _end_offset(consumer, topic, p)))
        consumer.commit(offsets=ends, asynchronous=False)
    finally:
        consumer.close()


def _ensure_model(settings: Settings, say: Callable[[str], None], hours: float, run_dir) -> bool:
    """The registry's current model, or one trained now (True)."""
    from fraudgraph.models.registry import ModelRegistry

    current = ModelRegistry(settings.model_dir).current_version()
    if current is not None:
        say(f"model: reusing {current} from {settings.model_dir} (`fraudgraph train` makes a new one)")
        return False
    say(f"model: none registered; training one on {hours:g} simulated hours (fraud model and recommender)...")
    started, report_path = time.monotonic(), run_dir / "train-report.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "fraudgraph.cli",
            "train",
            "--source",
            "simulator",
            "--customers",
            "300",
            "--hours",
            str(hours),
            "--fraud-rate",
            "0.05",
            "--epochs",
            "15",
            "--recs-epochs",
            "8",
            "--report",
            str(report_path),
        ],
        env=settings.environ(),
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"training failed:\n{done.stderr[-2000:]}")
    report = json.loads(report_path.read_text())
    test = report["test"]
    auc = f"AUC {test['auc_roc']:.3f}, " if test.get("auc_roc") is not None else ""
    recall = test.get("recall_at_threshold")
    say(
        f"model: {report['version']} in {time.monotonic() - started:.0f} s; on its later test window {auc}"
        f"recall {recall if recall is None else format(recall, '.0%')} at FPR {test['fpr_at_threshold']:.1%}"
    )
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_worker(settings: Settings, log_path) -> subprocess.Popen:
    """The demo's worker: its own group, port and data folder, beside any worker already running."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "fraudgraph.cli", "worker"],
        env=settings.environ(),
        stdout=open(log_path, "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    url = f"http://{settings.worker_web_host}:{settings.worker_web_port}/metrics"
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"the worker exited (code {proc.returncode}); its log: {log_path}") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not come up in 120 s; its log: {log_path}") from None
            time.sleep(0.5)


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(45)
    except subprocess.TimeoutExpired:
        proc.kill()


class _Follower:
    """Reads the scores topic from where it ended before the run and keeps the run's decisions."""

    def __init__(self, settings: Settings):
        self.consumer = Consumer(
            confluent_config(
                settings, **{"group.id": f"fraudgraph-demo-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False}
            )
        )
        assign_at_end(self.consumer, settings.scores_topic)
        self.decisions: dict[int, dict] = {}
        self.latencies_ms: list[float] = []

    def poll(self, first_id: int, on_alert: Callable[[dict], None], seconds: float) -> int:
        """Read for ``seconds``; returns the new decisions of this run."""
        new, deadline = 0, time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            message = self.consumer.poll(min(left, 0.2))
            if message is None or message.error() is not None or (value := message.value()) is None:
                continue
            record = json.loads(value)
            tx = record.get("transaction_id", -1)
            if tx < first_id or tx in self.decisions:
                continue
            self.decisions[tx] = record
            new += 1
            self.latencies_ms.append(message.timestamp()[1] - record["timings"]["cdc_append_ms"])
            if record["decision"] != "approve":
                on_alert(record)
        return new

    def close(self) -> None:
        self.consumer.close()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def run_demo(
    settings: Settings,
    seconds: float = 60.0,
    customers: int = 300,
    rate: float = 40.0,
    say: Callable[[str], None] = print,
) -> int:
    from fraudgraph.connectors.mapping import load_mapping
    from fraudgraph.stack.simulator import daytime_start, simulate
    from fraudgraph.stack.simulator.postgres_sink import next_free_id_base
    from fraudgraph.streams import client
    from fraudgraph.streams.app import worker_topics
    from fraudgraph.streams.topics import ensure_topics

    stack_was_up = any(s.running for s in local.status(settings))
    worker = follower = None
    load: dict = {}
    try:
        say("stack: starting (first run: fetching jars from Maven Central)..." if not stack_was_up else "stack: up")
        local.up(settings, log=lambda line: None)
        run_dir = settings.stack_dir / "demo"
        run_dir.mkdir(parents=True, exist_ok=True)
        trained = _ensure_model(settings, say, 12, run_dir)
        worker_id = f"fraudgraph-demo-{uuid.uuid4().hex[:6]}"
        ensure_topics(settings, worker_topics(settings))
        cdc = load_mapping(settings.mapping_file or None).topics(settings.topic_prefix)
        _commit_at_end(settings, worker_id, cdc)
        _commit_at_end(settings, f"{worker_id}-graph", cdc)
        mine = settings.replace(worker_id=worker_id, worker_web_port=_free_port(), worker_data_dir=run_dir / worker_id)
        worker = _start_worker(mine, run_dir / f"{worker_id}.log")
        say(
            f"worker: {worker_id} running (log {run_dir / (worker_id + '.log')}), metrics on "
            f"http://{mine.worker_web_host}:{mine.worker_web_port}/metrics"
        )

        follower = _Follower(settings)
        first_id = next_free_id_base(settings.pg_dsn())
        simulated_s = max(3600.0, rate * seconds / (customers * 2.6) * 3600)  # ~2.6 payments per customer-hour
        say(
            f"load: {customers} customers paying into PostgreSQL at {rate:g} payments/s for about {seconds:.0f} s, "
            f"{FRAUD_RATE:.0%} of them fraudulent (card testing, account takeover, mule rings, ...)\n"
        )
        thread = threading.Thread(
            daemon=True,
            target=lambda: load.setdefault(
                "report",
                simulate(
                    settings,
                    mode="postgres",
                    customers=customers,
                    duration_s=simulated_s,
                    rate=rate,
                    fraud_rate=FRAUD_RATE,
                    seed=int(time.time()) % 1000,
                    start=daytime_start(),
                    id_base=first_id,
                ),
            ),
        )
        thread.start()
        shown = [0]

        def alert(record: dict) -> None:
            shown[0] += 1
            if shown[0] <= SHOWN_ALERTS:
                reasons = "; ".join(f"{r['code']}: {r['detail']}" for r in record["reasons"][:3])
                say(
                    f"  ALERT {record['decision'].upper():6} tx {record['transaction_id']} score {record['score']:.2f}  {reasons}"
                )
            elif shown[0] == SHOWN_ALERTS + 1:
                say("  (further alerts are counted, not printed: `fraudgraph alerts --follow` shows them all)")

        started, last = time.monotonic(), time.monotonic()
        while thread.is_alive() or len(follower.decisions) < _expected(load):
            if not thread.is_alive() and time.monotonic() - last > 60:
                break  # the worker stopped deciding: report what there is
            new = follower.poll(first_id, alert, 3.0)
            if new:
                last = time.monotonic()
            recent = follower.latencies_ms[-500:]
            say(
                f"[{time.monotonic() - started:5.0f} s] {len(follower.decisions):6} decided ({new / 3:5.0f}/s), "
                f"{shown[0]} alerts, latency p50 {_pct(recent, 0.5):.0f} ms p99 {_pct(recent, 0.99):.0f} ms"
            )
        report = load.get("report")
        if report is None:
            raise RuntimeError("the simulated load failed; see the worker log")

        say("\n$ fraudgraph score --transaction ...   (a question over fraud.score-requests)")
        flagged = [r for r in follower.decisions.values() if r["decision"] != "approve"]
        example = flagged[0] if flagged else next(iter(follower.decisions.values()))
        reply = client.score(settings, transaction_id=example["transaction_id"], timeout_s=20)
        say(
            client.describe_score(reply["scores"][0])
            if reply["status"] == "ok"
            else f"{reply['status']}: {reply.get('error')}"
        )
        say(
            "\n$ fraudgraph recommend --account ... --k 5   (over recs.requests)"
            + (
                "\n(a demo-trained recommender knows the merchants of its own simulated history; a bank trains "
                "on its own log: fraudgraph train --source kafka)"
                if trained
                else ""
            )
        )
        recs = client.recommend(settings, example["account_id"], 5, timeout_s=20)
        say(
            client.describe_recommendations(recs)
            if recs["status"] == "ok"
            else f"{recs['status']}: {recs.get('error')}"
        )

        fraud = set(report.truth.labels) & follower.decisions.keys()
        alerted = {tx for tx, r in follower.decisions.items() if r["decision"] != "approve"}
        recall = len(fraud & alerted) / len(fraud) if fraud else float("nan")
        precision = len(fraud & alerted) / len(alerted) if alerted else float("nan")
        n = report.rows["transactions"]["insert"]
        say(
            f"\nthis run: {len(follower.decisions)} of {n} payments decided, {len(fraud)} fraudulent, {len(alerted)} alerted: "
            f"recall {recall:.0%}, precision {precision:.0%} (against the simulator's truth); "
            f"latency p50 {_pct(follower.latencies_ms, 0.5):.0f} ms, p99 {_pct(follower.latencies_ms, 0.99):.0f} ms"
        )
        say(f"""
where to look (the stack stays up; the demo's worker is stopped):
  metrics      http://127.0.0.1:{settings.prometheus_port}  (Prometheus; dashboards: stack/observability/dashboards/)
  graph        http://127.0.0.1:{settings.neo4j_http_port}/browser/  (Neo4j Browser), e.g. the flagged payment's neighbourhood:
               MATCH (t:Transaction {{id: {example["transaction_id"]}}})-[r*1..2]-(n) RETURN t, r, n
  a worker     fraudgraph worker      then: fraudgraph alerts --follow
  stop         fraudgraph stack down""")
        return 0 if len(follower.decisions) == n else 1
    except KeyboardInterrupt:
        say("\ninterrupted: stopping what the demo started")
        if not stack_was_up:
            _stop(worker)
            worker = None
            local.down(settings, log=lambda line: None)
        return 130
    finally:
        if follower is not None:
            follower.close()
        _stop(worker)


def _expected(load: dict) -> int:
    report = load.get("report")
    return report.rows["transactions"]["insert"] if report is not None else 1 << 62
