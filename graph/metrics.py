"""Prometheus metrics of the graph writer, registered once at import on the default registry.

Module-level so that any number of ``GraphWriter`` instances (tests, benchmarks, a restarted writer)
share one set of series instead of failing with "Duplicated timeseries" on a second registration.
The worker's /metrics endpoint serves the default registry, so these appear there as they are.
"""

from prometheus_client import Counter, Gauge, Histogram

WRITE_SECONDS = Histogram(
    "fraudgraph_graph_write_seconds",
    "Time to apply one batch to Neo4j (one write transaction, successful attempt only)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
EVENTS_WRITTEN = Counter(
    "fraudgraph_graph_events_written_total",
    "Domain events in batches committed to Neo4j (including those the version guard found stale)",
)
BATCH_SIZE = Histogram(
    "fraudgraph_graph_batch_size",
    "Events per batch written to Neo4j",
    buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000),
)
QUEUE_DEPTH = Gauge(
    "fraudgraph_graph_queue_depth",
    "Events waiting in the graph writer's bounded queue",
)
FRESHNESS_SECONDS = Histogram(
    "fraudgraph_graph_freshness_seconds",
    "Source commit (event ts_ms) to committed in Neo4j, per streamed event (snapshot reads excluded)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
WRITE_RETRIES = Counter(
    "fraudgraph_graph_write_retries_total",
    "Batch write attempts that failed with a retryable error and were retried",
)
STALE_EVENTS = Counter(
    "fraudgraph_graph_stale_events_total",
    "Rows Neo4j did not apply: the version guard found the graph as new or newer, or a delete found nothing",
)
SKIPPED_EVENTS = Counter(
    "fraudgraph_graph_events_skipped_total",
    "Events not sent to Neo4j, by reason (superseded: a newer event for the same key was in the batch)",
    ["reason"],
)
