"""Writes the Grafana dashboards of ``dashboards/`` (run: python stack/observability/make_dashboards.py).

The JSON files are what Grafana loads (docker-compose provisions them); this script is how they are
edited, so every panel has the same shape and the PromQL stays readable in one place. Every
expression here is evaluated against a real Prometheus scraping a worker by
``tests/integration/test_observability.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}  # the uid docker-compose provisions


def panel(
    title: str,
    targets: list[tuple[str, str]],
    unit: str = "short",
    kind: str = "timeseries",
    description: str = "",
    width: int = 12,
) -> dict:
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}} if kind == "timeseries" else {},
        "targets": [
            {"refId": chr(65 + i), "datasource": DATASOURCE, "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(targets)
        ],
        "gridPos": {"w": width, "h": 8},
    }


def dashboard(uid: str, title: str, description: str, panels: list[dict]) -> dict:
    x = y = 0
    for i, p in enumerate(panels):  # left to right, then down
        if x + p["gridPos"]["w"] > 24:
            x, y = 0, y + 8
        p["gridPos"].update(x=x, y=y)
        p["id"] = i + 1
        x += p["gridPos"]["w"]
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["fraudgraph"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "editable": True,
        "panels": panels,
        "templating": {"list": []},
        "annotations": {"list": []},
    }


def q(quantile: float, metric: str, by: str = "") -> str:
    return f"histogram_quantile({quantile}, sum by (le{', ' + by if by else ''}) (rate({metric}_bucket[5m])))"


PIPELINE = dashboard(
    "fraudgraph-pipeline",
    "fraudgraph / pipeline",
    "Throughput, latency, consumer lag, dead letters and state of the worker",
    [
        panel(
            "CDC messages in, by table",
            [("sum by (table) (rate(fraudgraph_cdc_messages_total[1m]))", "{{table}}")],
            "msg/s",
        ),
        panel(
            "Records out, by output",
            [("sum by (output) (rate(fraudgraph_records_out_total[1m]))", "{{output}}")],
            "msg/s",
        ),
        panel(
            "End-to-end latency (CDC append -> score acknowledged)",
            [
                (q(0.5, "fraudgraph_e2e_latency_seconds"), "p50"),
                (q(0.95, "fraudgraph_e2e_latency_seconds"), "p95"),
                (q(0.99, "fraudgraph_e2e_latency_seconds"), "p99"),
                ("fraudgraph:e2e_latency_seconds:p99_5m", "p99 (recorded, alerted on)"),
            ],
            "s",
        ),
        panel(
            "Stage latency p99, by stage", [(q(0.99, "fraudgraph_stage_duration_seconds", "stage"), "{{stage}}")], "s"
        ),
        panel(
            "Stage time share (seconds spent per second)",
            [("sum by (stage) (rate(fraudgraph_stage_duration_seconds_sum[1m]))", "{{stage}}")],
            "s",
        ),
        panel("Consumer lag, by group", [("fraudgraph:consumer_lag_messages:sum", "{{group}}")], "short"),
        panel(
            "Consumer lag, by topic-partition",
            [("fraudgraph_consumer_lag_messages", "{{group}} {{topic}}/{{partition}}")],
            "short",
            width=24,
        ),
        panel(
            "Dead letters, by reason",
            [("sum by (reason) (rate(fraudgraph_dead_letters_total[5m]))", "{{reason}}")],
            "msg/s",
        ),
        panel(
            "Replays ignored and tombstones",
            [
                ("rate(fraudgraph_replays_ignored_total[1m])", "node updates skipped as replays"),
                ("sum(rate(fraudgraph_tombstones_total[1m])) or vector(0)", "tombstones"),
            ],
            "ops",
        ),
        panel(
            "Event-time order: events waiting, and late events",
            [
                ("fraudgraph_order_buffered_events", "waiting for order"),
                ("rate(fraudgraph_late_events_total[5m])", "late (applied out of order) per s"),
            ],
            "short",
        ),
        panel("State entries, by table", [("fraudgraph_state_entries", "{{table}}")], "short"),
        panel(
            "Worker process",
            [
                ('rate(process_cpu_seconds_total{job="fraudgraph-worker"}[1m])', "CPU (cores)"),
                ('process_resident_memory_bytes{job="fraudgraph-worker"} / 2^30', "RSS (GiB)"),
            ],
            "short",
        ),
        panel(
            "Change capture: Debezium heartbeat age and watchdog actions",
            [
                ("fraudgraph_cdc_heartbeat_age_seconds", "heartbeat age (s)"),
                ("sum by (action) (increase(fraudgraph_cdc_watchdog_actions_total[15m]))", "{{action}} (last 15 min)"),
            ],
            "short",
        ),
    ],
)

DECISIONS = dashboard(
    "fraudgraph-decisions",
    "fraudgraph / decisions and quality",
    "Decisions, alert volume, and precision/recall/FPR from late fraud reports",
    [
        panel(
            "Decisions, by outcome",
            [("sum by (decision) (rate(fraudgraph_decisions_total[1m]))", "{{decision}}")],
            "ops",
        ),
        panel(
            "Alert share (review + block) of decisions",
            [
                # `or vector(0)`: before the first review/block there is no such series, and the share is 0.
                (
                    '(sum(rate(fraudgraph_decisions_total{decision!="approve"}[5m])) or vector(0)) / sum(rate(fraudgraph_decisions_total[5m]))',
                    "alerted",
                )
            ],
            "percentunit",
        ),
        panel(
            "Precision, by window",
            [("fraudgraph_quality_precision_ratio", "{{window}}")],
            "percentunit",
            description="Alerted decisions later reported as fraud / alerted decisions (unreported = legit). Judge by "
            "the matured cohorts: the early windows are younger than most labels",
        ),
        panel("Recall, by window", [("fraudgraph_quality_recall_ratio", "{{window}}")], "percentunit"),
        panel(
            "False-positive rate, by window", [("fraudgraph_quality_false_positive_ratio", "{{window}}")], "percentunit"
        ),
        panel(
            "Precision among labelled alerts (what analysts confirm), by window",
            [("fraudgraph_quality_labelled_alert_precision_ratio", "{{window}}")],
            "percentunit",
        ),
        panel(
            "Label coverage (decisions with a report yet), by window",
            [("fraudgraph_quality_label_coverage_ratio", "{{window}}")],
            "percentunit",
            description="How far each window's precision and recall can be trusted",
        ),
        panel(
            "Alert volume and alert rate, by window",
            [("fraudgraph_quality_alerts", "{{window}}"), ("fraudgraph_quality_alert_rate_ratio", "rate {{window}}")],
            "short",
        ),
        panel(
            "Label lag: report time - payment time",
            [
                ("histogram_quantile(0.5, sum by (le) (rate(fraudgraph_label_lag_seconds_bucket[1h])))", "p50"),
                ("histogram_quantile(0.9, sum by (le) (rate(fraudgraph_label_lag_seconds_bucket[1h])))", "p90"),
            ],
            "s",
            description="Choose the matured cohorts (quality_recent_cohort, quality_baseline_cohort) beyond this",
        ),
        panel(
            "Confusion counts (matured recent cohort)",
            [('fraudgraph_quality_decisions{window="matured_recent"}', "{{label}} alerted={{alerted}}")],
            "short",
            kind="table",
        ),
        panel(
            "Cohort ages (days before the newest decision)",
            [("fraudgraph_quality_window_age_seconds / 86400", "{{window}} {{edge}}")],
            "short",
            kind="table",
        ),
        panel(
            "Fraud reports arriving, by kind",
            [
                ("sum by (kind) (rate(fraudgraph_labels_total[5m]))", "{{kind}}"),
                ("sum by (result) (rate(fraudgraph_label_joins_total[5m]))", "join: {{result}}"),
            ],
            "ops",
        ),
        panel(
            "Quality watermark lag (wall time - newest decision event time)",
            [("time() - fraudgraph_quality_watermark_timestamp_seconds", "seconds")],
            "s",
        ),
        panel(
            "Model and policy in use",
            [("fraudgraph_model_info", "model {{version}}"), ("fraudgraph_policy_info", "policy {{version}}")],
            kind="table",
            width=24,
        ),
    ],
)

MODEL_GRAPH = dashboard(
    "fraudgraph-model-graph",
    "fraudgraph / model and graph",
    "Model inference by device (CPU/GPU) and graph freshness in Neo4j",
    [
        panel(
            "Inference time per batch, by device",
            [
                (q(0.5, "fraudgraph_model_inference_seconds", "device"), "p50 {{device}}"),
                (q(0.99, "fraudgraph_model_inference_seconds", "device"), "p99 {{device}}"),
            ],
            "s",
        ),
        panel(
            "Batch size, by device",
            [
                (q(0.5, "fraudgraph_model_batch_size", "device"), "p50 {{device}}"),
                (
                    "sum by (device) (rate(fraudgraph_model_batch_size_sum[1m])) / sum by (device) (rate(fraudgraph_model_batch_size_count[1m]))",
                    "mean {{device}}",
                ),
            ],
            "short",
        ),
        panel(
            "Transactions scored per second, by device",
            [("sum by (device) (rate(fraudgraph_model_batch_size_sum[1m]))", "{{device}}")],
            "ops",
        ),
        panel(
            "Model busy time (inference seconds per second), by device",
            [("sum by (device) (rate(fraudgraph_model_inference_seconds_sum[1m]))", "{{device}}")],
            "percentunit",
        ),
        panel(
            "Graph freshness: age of the newest event in Neo4j",
            [("fraudgraph_graph_freshness_age_seconds", "age")],
            "s",
        ),
        panel(
            "Graph freshness: source commit -> visible in Neo4j",
            [
                (q(0.5, "fraudgraph_graph_freshness_seconds"), "p50"),
                (q(0.99, "fraudgraph_graph_freshness_seconds"), "p99"),
            ],
            "s",
        ),
        panel(
            "Graph writes",
            [
                ("rate(fraudgraph_graph_events_written_total[1m])", "events/s"),
                ("rate(fraudgraph_graph_write_retries_total[5m])", "retries/s"),
            ],
            "ops",
        ),
        panel(
            "Graph write batch and queue",
            [
                (q(0.99, "fraudgraph_graph_write_seconds"), "batch write p99 (s)"),
                ("fraudgraph_graph_queue_depth", "queue depth (events)"),
            ],
            "short",
        ),
    ],
)

ALL = {"pipeline.json": PIPELINE, "decisions.json": DECISIONS, "model-graph.json": MODEL_GRAPH}


def expressions() -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, PromQL) of every target."""
    return [(name, p["title"], t["expr"]) for name, d in ALL.items() for p in d["panels"] for t in p["targets"]]


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    for name, board in ALL.items():
        (OUT / name).write_text(json.dumps(board, indent=2) + "\n")
        print(f"wrote {OUT / name}")
