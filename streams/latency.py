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

from fraudgraph.streams import metrics


def scores_committed(appended_ms: list[float]) -> None:
    """A transaction carrying scores is committed; ``appended_ms``: each one's
    ``timings.cdc_append_ms`` (0 when unknown)."""
    metrics.RECORDS_OUT.labels("scores").inc(len(appended_ms))
    now = time.time()
    for ms in appended_ms:
        if ms:
            metrics.E2E_LATENCY_SECONDS.observe(max(now - ms / 1000, 0.0))
