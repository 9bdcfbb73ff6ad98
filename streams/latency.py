"""End-to-end latency, measured where a score becomes real: when its Kafka transaction commits.

The clock starts at the CDC record's Kafka timestamp (``timings.cdc_append_ms`` in the score, the
moment Debezium's record was appended) and stops when the transaction carrying the score record
commits (``cdc_loop.py``): before that, read-committed consumers do not see it. Both are wall
clocks of the same host in the local stack; across hosts they are as good as the hosts' clock
sync. ``benchmarks/worker.py`` stops at the score record's CreateTime instead (earlier: the score
is stamped when produced, up to a checkpoint before the commit), as it reads the topic from outside.
"""

from __future__ import annotations

import time

import orjson

from fraudgraph.streams import metrics


def score_committed(value: bytes) -> None:
    """A score record's transaction is committed."""
    metrics.RECORDS_OUT.labels("scores").inc()
    try:
        appended_ms = orjson.loads(value)["timings"]["cdc_append_ms"]
    except (ValueError, KeyError, TypeError):
        return
    if appended_ms:
        metrics.E2E_LATENCY_SECONDS.observe(max(time.time() - appended_ms / 1000, 0.0))
