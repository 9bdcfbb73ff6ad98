"""Observability on the real stack: Debian's Prometheus scrapes a worker while the simulator runs;
every dashboard and alert-rule expression returns data; the online precision/recall equal what the
scores and labels topics say for the same windows, also after a restart (the tracker is rebuilt);
the rules file passes ``promtool check rules``."""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid

import pytest
from confluent_kafka import Producer

from fraudgraph.connectors.decoder import decode
from fraudgraph.connectors.events import FraudReported
from fraudgraph.connectors.mapping import load_mapping
from fraudgraph.stack.prometheus_server import DASHBOARDS, RULES_FILE
from fraudgraph.stack.services import Prometheus
from fraudgraph.stack.simulator import daytime_start, simulate
from fraudgraph.streams.app import worker_topics
from fraudgraph.streams.quality import is_alert, label_of, window_counts
from fraudgraph.streams.quality_join import COHORT_BUCKET_S, EARLY, EARLY_BUCKET_S, cohorts
from fraudgraph.streams.topics import ensure_topics

from support.rgcn import register_untrained_model
from support.stack import TopicReader, cdc_topic, free_port, scrape

pytestmark = pytest.mark.skipif(
    shutil.which("prometheus") is None, reason="apt-get install prometheus (stack/setup.sh)"
)

COMPARISONS = (" == ", " != ", " >= ", " <= ", " > ", " < ")


def start_worker(env: dict, log_path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "fraudgraph.cli", "worker"],
        env=env,
        stdout=open(log_path, "ab"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 90
    while True:
        try:
            scrape(int(env["FRAUDGRAPH_WORKER_WEB_PORT"]))
            return proc
        except OSError:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "worker did not come up"
            time.sleep(0.5)


def stop_worker(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(1)


@pytest.fixture(scope="module")
def observed(stack, tmp_path_factory):
    """A worker over its own topics, a Prometheus scraping it every second, and one simulated run
    (with a garbage CDC message, so the dead-letter series exist) processed to the end."""
    tmp = tmp_path_factory.mktemp("observability")
    run = uuid.uuid4().hex[:8]
    port = free_port()
    env = dict(
        os.environ,
        FRAUDGRAPH_TOPIC_PREFIX=f"obs{run}",
        FRAUDGRAPH_SCORES_TOPIC=f"test.scores.{run}",
        FRAUDGRAPH_WORKER_ID=f"test-obs-{run}",
        FRAUDGRAPH_WORKER_WEB_PORT=str(port),
        FRAUDGRAPH_KAFKA_BOOTSTRAP=stack.kafka_bootstrap,
        FRAUDGRAPH_WORKER_DATA_DIR=str(tmp / "worker-data"),
        FRAUDGRAPH_MODEL_DIR=str(tmp / "models"),
        FRAUDGRAPH_MODEL_DEVICE="cpu",
        FRAUDGRAPH_QUALITY_RECENT_COHORT="7d-14d",
        FRAUDGRAPH_QUALITY_BASELINE_COHORT="14d-28d",
    )
    register_untrained_model(tmp / "models")
    settings = stack.replace(
        topic_prefix=env["FRAUDGRAPH_TOPIC_PREFIX"],
        scores_topic=env["FRAUDGRAPH_SCORES_TOPIC"],
        worker_id=env["FRAUDGRAPH_WORKER_ID"],
        worker_web_port=port,
    )
    ensure_topics(settings.kafka_bootstrap, worker_topics(settings))
    log_path = tmp / "worker.log"
    worker = start_worker(env, log_path)
    prometheus = Prometheus(
        settings.replace(
            stack_dir=tmp / "stack",
            prometheus_port=free_port(),
            prometheus_scrape_interval_s=1,
            prometheus_targets=f"127.0.0.1:{port}",
        )
    )
    try:
        prometheus.start()
        prometheus.wait_ready()
        # The worker drains this run in seconds: Prometheus must hold samples from before it, or
        # every rate over the run is computed from its final values alone (zero).
        wait_for(
            lambda: any(r["value"][1] == "1" for r in promql(prometheus, 'up{job="fraudgraph-worker"}')),
            60,
            "Prometheus scraping the worker",
        )
        time.sleep(2)
        producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
        producer.produce(cdc_topic(settings, "transactions"), key=b"{}", value=b"\x00 not a change event")
        producer.flush(10)
        # A simulated month whose fraud reports arrive 1-6 days after the payment, as a bank's do,
        # read at its end: the reports still due are not in the log yet.
        report = simulate(
            settings,
            mode="kafka",
            customers=20,
            duration_s=30 * 86_400,
            activity=0.25,
            fraud_rate=0.1,
            seed=7,
            report_delay_s=(86_400, 6 * 86_400),
            stop_at_end=True,
            start=daytime_start(),
        )
        n = report.rows["transactions"]["insert"]
        reports = report.rows["fraud_reports"]["insert"]
        assert reports > 0

        def done():
            m = scrape(port)
            labels = sum(v for k, v in m.items() if k.startswith("fraudgraph_labels_total"))
            decided = sum(v for k, v in m.items() if k.startswith("fraudgraph_decisions_total"))
            return decided >= n and labels >= reports

        wait_for(done, 300, f"{n} decisions and {reports} labels")
        time.sleep(8)  # a few more scrapes and rule evaluations of the finished run
        state = {
            "settings": settings,
            "env": env,
            "port": port,
            "worker": worker,
            "log": log_path,
            "prometheus": prometheus,
            "report": report,
        }
        yield state
        worker = state["worker"]  # a test may have restarted it
    finally:
        prometheus.stop()
        stop_worker(worker)


def promql(prometheus: Prometheus, expr: str) -> list:
    url = f"{prometheus.endpoint()}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = json.load(resp)
    assert body["status"] == "success", (expr, body)
    return body["data"]["result"]


def dashboard_expressions() -> list[tuple[str, str]]:
    out = []
    for board in sorted(DASHBOARDS.glob("*.json")):
        for panel in json.loads(board.read_text())["panels"]:
            out += [(f"{board.name}: {panel['title']}", t["expr"]) for t in panel["targets"]]
    return out


def rule_expressions() -> list[tuple[str, str]]:
    """Recording rules as they are; alert rules with each comparison made a `bool` one, so the
    expression returns its signal (0 or 1) whether or not the alert fires."""
    import yaml

    out = []
    for group in yaml.safe_load(RULES_FILE.read_text())["groups"]:
        for rule in group["rules"]:
            expr = rule["expr"]
            if "alert" in rule:
                for op in COMPARISONS:
                    expr = expr.replace(op, f"{op.rstrip()} bool ")
            out.append((rule.get("alert") or rule["record"], expr))
    return out


def test_every_dashboard_and_rule_expression_returns_data(observed):
    prometheus = observed["prometheus"]
    assert promql(prometheus, 'up{job="fraudgraph-worker"}')[0]["value"][1] == "1"
    expressions = dashboard_expressions() + rule_expressions()
    assert len(expressions) > 40
    empty = [(where, expr) for where, expr in expressions if not promql(prometheus, expr)]
    assert not empty, "expressions without data:\n" + "\n".join(f"  {w}: {e}" for w, e in empty)
    # Recorded series exist too (the rules were evaluated, not just parseable).
    for record in ("fraudgraph:e2e_latency_seconds:p99_5m", "fraudgraph:consumer_lag_messages:sum"):
        assert promql(prometheus, record), record
    # And a few carry real figures, not just zero-count series.
    p99 = float(promql(prometheus, "fraudgraph:e2e_latency_seconds:p99_5m")[0]["value"][1])
    assert 0 < p99 < 120
    print(
        f"\n{len(expressions)} expressions with data; e2e p99 over the run {p99 * 1000:.0f} ms (catch-up from a burst)"
    )
    groups = {r["metric"]["group"] for r in promql(prometheus, "fraudgraph_consumer_lag_messages")}
    assert groups == {"worker", "graph"}
    assert float(promql(prometheus, "sum(fraudgraph_dead_letters_total)")[0]["value"][1]) >= 1


def test_rules_file_passes_promtool():
    result = subprocess.run(["promtool", "check", "rules", str(RULES_FILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def topic_truth(settings) -> tuple[list[tuple[int, int, bool]], dict[int, str]]:
    """Decisions (tx, event ts_ms, alerted) from the scores topic; labels (tx -> kind) from the
    fraud_reports CDC topic, decoded the way the worker decodes them."""
    scores = TopicReader(settings, settings.scores_topic)
    try:
        messages = scores.read_until(lambda _: False, timeout=10)
    finally:
        scores.close()
    decisions = {}
    for m in messages:
        r = json.loads(m.value())
        decisions[r["transaction_id"]] = (r["transaction_id"], r["source"]["ts_ms"], is_alert(r["decision"]))
    mapping = load_mapping(settings.mapping_file or None)
    labels_reader = TopicReader(settings, cdc_topic(settings, "fraud_reports"))
    try:
        label_messages = labels_reader.read_until(lambda _: False, timeout=10)
    finally:
        labels_reader.close()
    labels = {}
    for m in sorted(label_messages, key=lambda m: (m.partition(), m.offset())):
        event = decode(m.topic(), m.value(), mapping, settings.decimal_handling_mode, m.key())
        if isinstance(event, FraudReported):
            labels[event.transaction_id] = event.kind
    return list(decisions.values()), labels


def quality_metrics(port: int) -> dict[str, float]:
    return {k: v for k, v in scrape(port).items() if k.startswith("fraudgraph_quality_")}


COHORTS = cohorts("7d-14d", "14d-28d")  # as the fixture's worker is configured
RATIOS = (
    "precision_ratio",
    "recall_ratio",
    "false_positive_ratio",
    "label_coverage_ratio",
    "alert_rate_ratio",
    "labelled_alert_precision_ratio",
)


def assert_metrics_match_topics(metrics: dict[str, float], decisions, labels) -> dict[str, dict]:
    """Every window's exported figures equal the ones computed from the topics; returns them."""
    watermark = max(ts for _, ts, _ in decisions)
    assert metrics["fraudgraph_quality_watermark_timestamp_seconds"] == watermark / 1000
    triples = [(ts, alerted, label_of(labels.get(tx))) for tx, ts, alerted in decisions]
    shown = {}
    for windows, bucket_s in ((EARLY, EARLY_BUCKET_S), (COHORTS, COHORT_BUCKET_S)):
        for window, ages in windows.items():
            expected = window_counts(triples, watermark, ages, bucket_s)
            got = {name: metrics[f'fraudgraph_quality_{name}{{window="{window}"}}'] for name in (*RATIOS, "alerts")}
            want = {
                name: getattr(expected, attr)
                for name, attr in (
                    ("precision_ratio", "precision"),
                    ("recall_ratio", "recall"),
                    ("false_positive_ratio", "false_positive_rate"),
                    ("label_coverage_ratio", "label_coverage"),
                    ("alert_rate_ratio", "alert_rate"),
                    ("labelled_alert_precision_ratio", "labelled_alert_precision"),
                    ("alerts", "alerts"),
                )
            }
            for name in got:
                assert got[name] == pytest.approx(want[name], nan_ok=True), (window, name, got, want)
            unlabelled = sum(
                v
                for k, v in metrics.items()
                if k.startswith("fraudgraph_quality_decisions{")
                and f'window="{window}"' in k
                and 'label="unlabelled"' in k
            )
            assert unlabelled == expected.unlabelled, window
            shown[window] = {"decisions": expected.decisions, **got}
    assert shown["early_15m"]["decisions"] < shown["early_24h"]["decisions"]  # the short window is a part
    return shown


def test_online_precision_recall_equal_the_topics_and_survive_a_restart(observed):
    settings, port = observed["settings"], observed["port"]
    decisions, labels = topic_truth(settings)
    assert len(decisions) == observed["report"].rows["transactions"]["insert"]
    assert any(label_of(k) == "fraud" for k in labels.values())
    before = quality_metrics(port)
    shown = assert_metrics_match_topics(before, decisions, labels)
    # Labels 1-6 days late: the last day holds almost none, the matured cohorts most of theirs.
    assert shown["early_24h"]["label_coverage_ratio"] < shown["matured_recent"]["label_coverage_ratio"]
    recent = shown["matured_recent"]
    assert recent["alerts"] > 0 and recent["recall_ratio"] == recent["recall_ratio"]  # a number, not NaN
    print(
        f"\nquality at the end of a simulated month, {len(decisions)} decisions, {len(labels)} labels "
        "(exported = computed from the topics):"
    )
    for window, figures in shown.items():
        print(
            f"  {window:>16}: "
            + ", ".join(
                f"{k.removesuffix('_ratio')} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                for k, v in figures.items()
            )
        )
    counters = scrape(port)
    reports = sum(v for k, v in counters.items() if k.startswith("fraudgraph_labels_total"))
    assert counters["fraudgraph_label_lag_seconds_count"] == reports >= len(labels)  # each joined once

    # Restart: same worker id, data dir and port. The tracker is rebuilt from the tables.
    stop_worker(observed["worker"])
    observed["worker"] = start_worker(observed["env"], observed["log"])
    after = wait_for(
        lambda: (m := quality_metrics(port)).get("fraudgraph_quality_watermark_timestamp_seconds") and m,
        120,
        "the rebuilt quality tracker",
    )
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert after[key] == value or (math.isnan(value) and math.isnan(after[key])), key
