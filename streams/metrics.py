"""Prometheus metrics of the worker: every series the dashboards and alert rules read is defined here.

Conventions (https://prometheus.io/docs/practices/naming/): units in names (``_seconds``,
``_messages``, ``_bytes``, ``_ratio``), ``_total`` for counters, and only bounded label values
(tables, event types, reasons, decisions, stages, devices, windows, topic-partitions of the
configured topics) so a label can never grow with traffic.

The README's "Metrics" section lists them with their meaning; ``stack/observability`` holds the
dashboards and alert rules built on them, and an integration test evaluates every expression there
against a real Prometheus scraping a worker, so renaming a metric here breaks that test, on purpose.
"""

from functools import cache

from prometheus_client import Counter, Gauge, Histogram, Info, disable_created_metrics
from prometheus_client.core import REGISTRY

from fraudgraph.streams.quality_metrics import QualityCollector

# The *_created series double every metric for no use on dashboards.
disable_created_metrics()

# ---- events in / out -----------------------------------------------------------------------------
EVENTS_IN = Counter("fraudgraph_cdc_messages_total", "CDC messages consumed", ["table"])
EVENTS_DECODED = Counter("fraudgraph_events_decoded_total", "Domain events decoded from CDC", ["event"])
TOMBSTONES = Counter("fraudgraph_tombstones_total", "Kafka tombstones after deletes (no event)", ["table"])
RECORDS_OUT = Counter(
    "fraudgraph_records_out_total",
    "Records the worker produced, by output (scores: acknowledged by Kafka; alerts, dead_letters,"
    " score_replies, node_states (changelog, one per changed node per checkpoint): sent)",
    ["output"],
)
DEAD_LETTERS = Counter("fraudgraph_dead_letters_total", "Messages sent to the dead-letter topic", ["reason"])
REPLAYS_IGNORED = Counter(
    "fraudgraph_replays_ignored_total", "Node updates skipped because the node had already applied the event"
)
CLIENTS_REPLACED = Counter(
    "fraudgraph_kafka_clients_replaced_total",
    "Kafka clients of the CDC loop replaced after they failed for good (a fenced consumer, a stuck producer)",
    ["client"],
)
SKIPPED_OFFSETS = Counter(
    "fraudgraph_skipped_offsets_total",
    "Offsets of a CDC partition the consumer stepped over: compacted away, transaction markers, or lost",
)
LATE_EVENTS = Counter(
    "fraudgraph_late_events_total",
    "Events applied after a later one had been (they came after worker_max_idle_ms): out of event-time order",
)
ORDER_BUFFERED = Gauge("fraudgraph_order_buffered_events", "Events decoded and waiting for event-time order")
DECISIONS = Counter("fraudgraph_decisions_total", "Transactions scored, by decision", ["decision"])


@cache
def child(metric: Counter, value: str) -> Counter:
    """``metric.labels(value)``, looked up once: the hot path counts every record, and ``labels``
    costs three times the increment. Only for the bounded label values above."""
    return metric.labels(value)


QUERIES = Counter("fraudgraph_score_queries_total", "Score queries answered, by reply status", ["status"])

# ---- latency ---------------------------------------------------------------------------------------
STAGES = ("decode", "state", "rules", "model", "graph_write", "produce")
STAGE_SECONDS = Histogram(
    "fraudgraph_stage_duration_seconds",
    "Time spent in one pipeline stage, per call of the stage (one message, or one micro-batch where the stage batches)",
    ["stage"],
    buckets=(1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1, 2.5),
)
# One child per stage, created now so every stage has a series (zero until observed) and code
# observes with ``metrics.MODEL_SECONDS.observe(s)`` rather than spelling label values.
DECODE_SECONDS = STAGE_SECONDS.labels("decode")
STATE_SECONDS = STAGE_SECONDS.labels("state")
RULES_SECONDS = STAGE_SECONDS.labels("rules")
MODEL_SECONDS = STAGE_SECONDS.labels("model")
GRAPH_WRITE_SECONDS = STAGE_SECONDS.labels("graph_write")
PRODUCE_SECONDS = STAGE_SECONDS.labels("produce")
SCORE_SECONDS = MODEL_SECONDS  # the Scorer call: the model stage until rules run as a stage of their own

E2E_LATENCY_SECONDS = Histogram(
    "fraudgraph_e2e_latency_seconds",
    "CDC record appended to Kafka (its timestamp) to the commit of the transaction carrying its score",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1, 2.5, 5, 10, 30, 60),
)

# ---- Kafka consumer lag ----------------------------------------------------------------------------
CONSUMER_LAG = Gauge(
    "fraudgraph_consumer_lag_messages",
    "High watermark minus the consumer's position, per assigned partition (group: worker = scoring agents, graph = graph sink)",
    ["group", "topic", "partition"],
)

# ---- model -----------------------------------------------------------------------------------------
MODEL_BATCH_SIZE = Histogram(
    "fraudgraph_model_batch_size",
    "Transactions per model inference call, by device (cpu, cuda:0, ...)",
    ["device"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096),
)
MODEL_INFERENCE_SECONDS = Histogram(
    "fraudgraph_model_inference_seconds",
    "Wall time of one model inference call (one batch), by device",
    ["device"],
    buckets=(1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1),
)
MODEL_INFO = Info("fraudgraph_model", "The scoring model in use (exported as fraudgraph_model_info{version=...} 1)")
POLICY_INFO = Info(
    "fraudgraph_policy", "The decision policy in use (exported as fraudgraph_policy_info{version=...} 1)"
)

# ---- graph -----------------------------------------------------------------------------------------
GRAPH_APPEND_TO_COMMIT_SECONDS = Histogram(
    "fraudgraph_graph_append_to_commit_seconds",
    "CDC record's Kafka append to its batch committed in Neo4j, per record: graph freshness on the "
    "broker's clock (the event's own ts_ms may be simulated or replayed time)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2.5, 5, 10, 30, 60, 300),
)
GRAPH_LAST_EVENT_APPEND = Gauge(
    "fraudgraph_graph_last_event_append_timestamp_seconds",
    "Kafka append time of the newest CDC event committed to Neo4j by the graph sink (0 before the first)",
)


def _graph_age() -> float:
    import time

    last = GRAPH_LAST_EVENT_APPEND._value.get()
    return float("nan") if last <= 0 else max(time.time() - last, 0.0)


GRAPH_FRESHNESS_AGE = Gauge(
    "fraudgraph_graph_freshness_age_seconds",
    "Now minus the Kafka append time of the newest event committed to Neo4j (grows while the graph stage stalls)",
)
GRAPH_FRESHNESS_AGE.set_function(_graph_age)

# ---- state -----------------------------------------------------------------------------------------
STATE_ENTRIES = Gauge(
    "fraudgraph_state_entries",
    "Entries the worker holds in memory: node states and scores",
    ["table"],
)

# ---- online quality from late labels -----------------------------------------------------------------
LABELS = Counter("fraudgraph_labels_total", "Fraud reports (late labels) applied, by kind", ["kind"])
# Report event time - decision event time: how long labels take, so a reader knows which cohorts
# are mature. Observed once per label, when it joins its decision in this process.
LABEL_LAG = Histogram(
    "fraudgraph_label_lag_seconds",
    "Fraud report event time minus its transaction's event time",
    buckets=[h * 3600 for h in (1, 6, 12, 24, 48, 72, 120, 168, 240, 336, 504, 720, 1080, 1440, 2160)],
)
LABEL_JOINS = Counter(
    "fraudgraph_label_joins_total",
    "Labels joined to a decision: decision_found (joined at once), decision_pending (joined when the transaction is scored)",
    ["result"],
)
QUALITY = QualityCollector()  # precision, recall, FPR, alert volume per window, read from the tracker at scrape
REGISTRY.register(QUALITY)
