"""End-to-end latency, measured where a score becomes real: when Kafka acknowledges its record.

The clock starts at the CDC record's Kafka timestamp (``timings.cdc_append_ms`` in the score, the
moment Debezium's record was appended) and stops at the acknowledgement of the score record, the
moment "this transaction is scored" became durable (``tables.AckedTable``). Both are wall clocks of
the same host in the local stack; across hosts they are as good as the hosts' clock sync.
``benchmarks/worker.py`` stops at the score record's CreateTime instead (a few ms earlier: the
acknowledgement's round trip), as it reads the topic from outside.
"""

from __future__ import annotations

import time

import orjson

from fraudgraph.streams import metrics


def score_acked(key: bytes, value: bytes) -> None:
    """``AckedTable.on_acked`` of the scores table."""
    metrics.RECORDS_OUT.labels("scores").inc()
    try:
        appended_ms = orjson.loads(value)["timings"]["cdc_append_ms"]
    except (ValueError, KeyError, TypeError):
        return
    if appended_ms:
        metrics.E2E_LATENCY_SECONDS.observe(max(time.time() - appended_ms / 1000, 0.0))
