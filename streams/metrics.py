"""Prometheus metrics of the worker. Label values are bounded (reasons, event types, tables)."""

from prometheus_client import Counter, Histogram, disable_created_metrics

# The *_created series double every metric for no use on dashboards.
disable_created_metrics()

EVENTS_IN = Counter("fraudgraph_cdc_messages_total", "CDC messages consumed", ["table"])
EVENTS_DECODED = Counter("fraudgraph_events_decoded_total", "Domain events decoded from CDC", ["event"])
TOMBSTONES = Counter("fraudgraph_tombstones_total", "Kafka tombstones after deletes (no event)", ["table"])
DEAD_LETTERS = Counter("fraudgraph_dead_letters_total", "Messages sent to the dead-letter topic", ["reason"])
DECODE_SECONDS = Histogram(
    "fraudgraph_stage_decode_seconds", "Time to decode one CDC message",
    buckets=(1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3, 1e-2),
)
STATE_SECONDS = Histogram(
    "fraudgraph_stage_state_seconds", "Time to apply one event to node state",
    buckets=(2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 5e-2),
)
SCORE_SECONDS = Histogram(
    "fraudgraph_stage_score_seconds", "Time to score one transaction",
    buckets=(2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 5e-2),
)
REPLAYS_IGNORED = Counter("fraudgraph_replays_ignored_total", "Node updates skipped because the node had already applied the event")
DECISIONS = Counter("fraudgraph_decisions_total", "Transactions scored, by decision", ["decision"])
QUERIES = Counter("fraudgraph_score_queries_total", "Score queries answered, by reply status", ["status"])
