"""``GraphWriter``: applies domain events to Neo4j asynchronously, off the scoring hot path.

Why this shape:

- **Bounded queue, backpressure instead of memory.** ``submit`` puts onto an ``asyncio.Queue`` of
  fixed size. While Neo4j is slow or down, the queue fills and ``submit`` waits, which slows the
  consumer (and so Kafka consumption) instead of growing memory without bound. Uncommitted events are
  still in Kafka, so nothing is lost if the process dies meanwhile.
- **One drainer, batches in order.** A single background task takes up to ``batch_size`` events, or
  whatever arrived within ``max_latency_s`` of the first, plans them (``cypher.plan_batch``) and runs
  the statements in one write transaction. Batches are applied strictly in submission order, so
  per-key order is preserved end to end.
- **Retry, never drop.** A retryable failure (``ServiceUnavailable``, ``SessionExpired``, transient
  errors such as deadlocks, a lost connection) retries the *same* batch with capped exponential
  backoff and jitter, for as long as it takes; meanwhile the queue fills and backpressure applies. A
  retry after an ambiguous commit is harmless: every write is version-guarded and idempotent. A
  non-retryable error (a bug, a constraint the data breaks) stops the writer loudly: ``submit`` and
  ``flush`` raise ``GraphWriterError`` so the worker fails and restarts from its last Kafka offsets
  rather than silently skipping data.
- ``flush()`` returns once everything submitted before it is committed (visible to new reads);
  ``close()`` flushes and stops; ``abort()`` stops without flushing (for shutdown when Neo4j is gone).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any, Self

import neo4j
from neo4j.exceptions import ServiceUnavailable, SessionExpired, TransientError

from fraudgraph.connectors.events import DomainEvent
from fraudgraph.graph import metrics
from fraudgraph.graph.cypher import Plan, Statement, plan_batch, schema_statements

log = logging.getLogger(__name__)


class GraphWriterError(RuntimeError):
    """The writer stopped on a non-retryable error; events after the last flush may be unwritten."""


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, (ServiceUnavailable, SessionExpired, TransientError, ConnectionError, asyncio.TimeoutError)):
        return True
    check = getattr(exc, "is_retryable", None)  # neo4j 5.x/6.x errors classify themselves
    try:
        return bool(check and check())
    except Exception:  # noqa: BLE001 pragma: no cover - a driver quirk must not mask the original error
        return False


class GraphWriter:
    def __init__(
        self,
        uri: str,
        auth: Any = None,
        *,
        database: str | None = None,
        queue_size: int = 10_000,
        batch_size: int = 500,
        max_latency_s: float = 0.05,
        retry_initial_s: float = 0.05,
        retry_max_s: float = 5.0,
        driver: neo4j.AsyncDriver | None = None,
    ):
        if queue_size < 1 or batch_size < 1:
            raise ValueError("queue_size and batch_size must be positive")
        self._owns_driver = driver is None
        self._driver = driver or neo4j.AsyncGraphDatabase.driver(
            uri,
            auth=auth,
            # The guards make Neo4j warn about properties not seen yet on an empty graph: noise.
            notifications_min_severity="OFF",
            connection_acquisition_timeout=10.0,
        )
        self._database = database
        self._queue: asyncio.Queue[DomainEvent] = asyncio.Queue(maxsize=queue_size)
        self._batch_size = batch_size
        self._max_latency_s = max_latency_s
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._task: asyncio.Task | None = None
        self._error: BaseException | None = None
        self._closed = False
        self._submitted = 0  # events accepted by submit()
        self._done = 0  # events whose batch is committed (FIFO, so a prefix of the submitted ones)
        self._progress = asyncio.Condition()
        self._flush_waiters = 0

    @classmethod
    def from_settings(cls, settings, **kwargs) -> GraphWriter:
        return cls(settings.neo4j_uri, settings.neo4j_auth, **kwargs)

    @property
    def driver(self) -> neo4j.AsyncDriver:
        return self._driver

    def queue_depth(self) -> int:
        return self._queue.qsize()

    # ---- lifecycle ----

    async def start(self, ensure_schema: bool = True) -> Self:
        if ensure_schema:
            await self.ensure_schema()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="fraudgraph-graph-writer")
        return self

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            await self.close()
        else:
            await self.abort()

    async def ensure_schema(self) -> None:
        """Create the constraints and indexes (idempotent) and wait until they are online."""
        async with self._driver.session(database=self._database) as session:
            for stmt in schema_statements():
                await (await session.run(stmt)).consume()
            await (await session.run("CALL db.awaitIndexes(300)")).consume()

    async def flush(self) -> None:
        """Wait until every event submitted before this call is committed in Neo4j."""
        target = self._submitted
        self._flush_waiters += 1
        try:
            async with self._progress:
                await self._progress.wait_for(
                    lambda: (
                        self._done >= target
                        or self._error is not None
                        or (self._task is not None and self._task.done())
                    )
                )
        finally:
            self._flush_waiters -= 1
        self._raise_if_failed()
        if self._done < target:
            raise GraphWriterError("graph writer stopped before the flush completed")

    async def close(self) -> None:
        """Flush, then stop the drainer and close the driver. If cancelled (e.g. by
        ``asyncio.wait_for`` while Neo4j is unreachable) it still stops everything it started."""
        try:
            if self._task is not None and not self._task.done() and not self._closed:
                await self.flush()
        finally:
            await self.abort()

    async def abort(self) -> None:
        """Stop without flushing: queued events are dropped (they are still in Kafka)."""
        self._closed = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.wait([self._task])
        if self._task is not None and not self._task.cancelled():
            self._task.exception()  # already reported through GraphWriterError; mark it retrieved
        if self._owns_driver:
            await self._driver.close()
        metrics.QUEUE_DEPTH.set(0)

    # ---- producer side ----

    async def submit(self, event: DomainEvent) -> None:
        """Enqueue one event; waits (backpressure) while the queue is full."""
        self._raise_if_failed()
        if self._closed:
            raise GraphWriterError("graph writer is closed")
        if self._task is None:
            raise GraphWriterError("graph writer not started: await writer.start() first")
        try:
            self._queue.put_nowait(event)  # fast path: no task, no await
        except asyncio.QueueFull:
            metrics.QUEUE_DEPTH.set(self._queue.qsize())
            put = asyncio.ensure_future(self._queue.put(event))
            try:
                # Wait for room, but wake up if the drainer dies rather than blocking forever.
                await asyncio.wait({put, self._task}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not put.done():
                    put.cancel()
            if put.cancelled() or not put.done():
                self._raise_if_failed()
                raise GraphWriterError("graph writer stopped while waiting for queue space") from None
        self._submitted += 1

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise GraphWriterError(f"graph writer failed: {self._error!r}") from self._error

    # ---- drainer ----

    async def _run(self) -> None:
        try:
            while True:
                batch = await self._next_batch()
                metrics.QUEUE_DEPTH.set(self._queue.qsize())
                await self._apply(batch)
                async with self._progress:
                    self._done += len(batch)
                    self._progress.notify_all()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            log.error("graph writer stopped on a non-retryable error: %r", exc)
            self._error = exc
            raise
        finally:
            async with self._progress:
                self._progress.notify_all()

    async def _next_batch(self) -> list[DomainEvent]:
        q = self._queue
        batch = [await q.get()]
        deadline = asyncio.get_running_loop().time() + self._max_latency_s
        while len(batch) < self._batch_size:
            if not q.empty():
                batch.append(q.get_nowait())
                continue
            if self._flush_waiters or asyncio.get_running_loop().time() >= deadline:
                break
            try:
                # asyncio.timeout (not wait_for): a timed-out get leaves its item in the queue.
                async with asyncio.timeout_at(deadline):
                    batch.append(await q.get())
            except TimeoutError:
                break
        return batch

    async def _apply(self, batch: list[DomainEvent]) -> None:
        plan = plan_batch(batch)
        if plan.superseded:
            metrics.SKIPPED_EVENTS.labels("superseded").inc(plan.superseded)
        for reason, n in plan.skipped.items():
            metrics.SKIPPED_EVENTS.labels(reason).inc(n)
            if reason == "truncate":
                log.warning("%d TRUNCATE event(s) not applied to the graph: the graph keeps the truncated rows", n)
        delay = self._retry_initial_s
        attempt = 0
        while plan.statements:
            attempt += 1
            started = time.perf_counter()
            try:
                applied, rows = await self._execute(plan)
            except Exception as exc:
                if not is_retryable(exc):
                    raise
                metrics.WRITE_RETRIES.inc()
                if attempt == 1 or attempt % 20 == 0:
                    log.warning(
                        "graph write failed (attempt %d, retrying in <=%.2fs, %d queued): %r",
                        attempt,
                        delay,
                        self._queue.qsize(),
                        exc,
                    )
                metrics.QUEUE_DEPTH.set(self._queue.qsize())
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, self._retry_max_s)
                continue
            metrics.WRITE_SECONDS.observe(time.perf_counter() - started)
            metrics.STALE_EVENTS.inc(rows - applied)
            break
        committed_ms = time.time() * 1000
        metrics.EVENTS_WRITTEN.inc(len(batch))
        metrics.BATCH_SIZE.observe(len(batch))
        for event in batch:
            if not event.position.snapshot:  # a snapshot read's ts_ms is when it was read, not committed
                metrics.FRESHNESS_SECONDS.observe(max(0.0, committed_ms - event.position.ts_ms) / 1000)

    async def _execute(self, plan: Plan) -> tuple[int, int]:
        """Run the plan in one write transaction; (rows applied, rows sent)."""
        applied = rows = 0
        async with self._driver.session(database=self._database, default_access_mode=neo4j.WRITE_ACCESS) as session:
            tx = await session.begin_transaction()
            try:
                for stmt in plan.statements:
                    applied += await _run_statement(tx, stmt)
                    rows += len(stmt.rows)
                await tx.commit()
            finally:
                if not tx.closed():
                    await tx.close()  # rolls back whatever did not commit
        return applied, rows


async def _run_statement(tx: neo4j.AsyncTransaction, stmt: Statement) -> int:
    result = await tx.run(stmt.cypher, stmt.params)
    record = await result.single(strict=True)
    return int(record["applied"])
