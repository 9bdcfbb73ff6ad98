"""Asking the worker over its topics, as any client does: what ``fraudgraph score``, ``recommend``
and ``alerts`` run, and a worked example for client authors (the protocols are in ``queries.py``
and ``recommendations.py``).

A question is a request on a request topic and one reply, with the same ``request_id``, on the
reply topic. The reply topic is read from its current end, fixed *before* the request is sent, so
the reply cannot slip past the reader; every partition is read, because the reply's partition is
the worker's choice.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from fraudgraph.kafka_config import confluent_config
from fraudgraph.settings import Settings


class NoReply(TimeoutError):
    """The worker did not answer in time (not running, behind, or not reading these topics)."""


def _consumer(settings: Settings, **extra: Any) -> Consumer:
    # A throwaway group that never commits: reading positions are assigned explicitly. Read
    # committed (librdkafka's default, stated here because it matters): the engine's topics are
    # written in transactions.
    return Consumer(
        confluent_config(
            settings,
            **{
                "group.id": f"fraudgraph-client-{uuid.uuid4().hex[:12]}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                **extra,
            },
        )
    )


def _partitions(consumer: Consumer, topic: str) -> list[int]:
    topics = consumer.list_topics(topic, timeout=10).topics
    meta = topics.get(topic)
    if meta is None or meta.error is not None or not meta.partitions:
        raise NoReply(f"topic {topic} does not exist: is the worker set up on this Kafka ({topic})?")
    return sorted(meta.partitions)


def ask(
    settings: Settings, requests_topic: str, replies_topic: str, request: dict[str, Any], timeout_s: float = 10.0
) -> dict[str, Any]:
    """Send ``request`` (a ``request_id`` is added if missing) and return its reply."""
    request = {"request_id": f"cli-{uuid.uuid4().hex}", **request}
    request_id = request["request_id"]
    consumer = _consumer(settings)
    try:
        ends = [
            TopicPartition(
                replies_topic, p, consumer.get_watermark_offsets(TopicPartition(replies_topic, p), timeout=10)[1]
            )
            for p in _partitions(consumer, replies_topic)
        ]
        consumer.assign(ends)
        producer = Producer(confluent_config(settings))
        producer.produce(requests_topic, key=request_id.encode(), value=orjson.dumps(request))
        if producer.flush(timeout_s) != 0:
            raise NoReply(f"the request could not be written to {requests_topic} within {timeout_s:.0f} s")
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            message = consumer.poll(min(left, 0.5))
            if message is None or message.error() is not None or (value := message.value()) is None:
                continue
            try:
                reply = orjson.loads(value)
            except orjson.JSONDecodeError:
                continue  # another writer's record on the topic
            if isinstance(reply, dict) and reply.get("request_id") == request_id:
                return reply
        raise NoReply(
            f"no reply on {replies_topic} within {timeout_s:.0f} s: is `fraudgraph worker` running "
            "on this Kafka and caught up?"
        )
    except KafkaException as err:
        raise NoReply(f"Kafka: {err}") from None
    finally:
        consumer.close()


def score(
    settings: Settings,
    *,
    transaction_id: int | None = None,
    account_id: int | str | None = None,
    timeout_s: float = 10.0,
) -> dict[str, Any]:
    key = {"transaction_id": transaction_id} if transaction_id is not None else {"account_id": account_id}
    return ask(settings, settings.score_requests_topic, settings.score_replies_topic, key, timeout_s)


def recommend(settings: Settings, account_id: int | str, k: int = 10, timeout_s: float = 10.0) -> dict[str, Any]:
    return ask(
        settings,
        settings.recs_requests_topic,
        settings.recs_replies_topic,
        {"account_id": account_id, "k": k},
        timeout_s,
    )


def alerts(settings: Settings, last: int = 20, follow: bool = False) -> Iterator[dict[str, Any]]:
    """The newest ``last`` alerts of each partition (oldest first per partition), then, with
    ``follow``, every new one as it is published.

    The topic is written in transactions, so commit markers take offsets too (at most one per
    record): the newest ``last`` alerts lie within the last ``2 * last`` offsets, and a partition
    is read up to its end when the client says so (``PARTITION_EOF``), not up to an offset."""
    consumer = _consumer(settings, **{"enable.partition.eof": True})
    topic = settings.alerts_topic
    try:
        start, reading = {}, set()  # reading: partitions whose newest alerts are being collected
        for p in _partitions(consumer, topic):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            start[p] = max(low, high - 2 * last)
            if high > start[p]:
                reading.add(p)
        consumer.assign([TopicPartition(topic, p, offset) for p, offset in start.items()])
        newest: dict[int, list[dict[str, Any]]] = {p: [] for p in reading}
        while reading or follow:
            message = consumer.poll(0.2)
            if message is None:
                continue
            partition, err = message.partition(), message.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF and partition in reading:
                    reading.discard(partition)
                    yield from newest.pop(partition)[-last:] if last > 0 else []
                continue
            if (value := message.value()) is None:
                continue  # a tombstone: not an alert
            try:
                alert = orjson.loads(value)
            except orjson.JSONDecodeError:
                continue
            if partition in reading:
                newest[partition].append(alert)
            else:
                yield alert
    except KafkaException as err:
        raise NoReply(f"Kafka: {err}") from None
    finally:
        consumer.close()


def describe_score(s: dict[str, Any]) -> str:
    reasons = "; ".join(f"{r['code']}: {r['detail']}" for r in s.get("reasons", [])) or "none"
    return (
        f"transaction {s['transaction_id']} (account {s['account_id']}): {s['decision'].upper()} "
        f"score {s['score']:.3f}, model {s['model_version']}, policy {s.get('policy_version') or '-'}\n"
        f"  reasons: {reasons}"
    )


def describe_recommendations(reply: dict[str, Any]) -> str:
    lines = [f"account {reply['account_id']}, model {reply.get('model_version', '-')}:"]
    lines += [
        f"  {i}. merchant {m['merchant_id']}  score {m['score']:.3f}  fraud risk {m['risk']:.2f}"
        for i, m in enumerate(reply["merchants"], 1)
    ]
    return "\n".join(lines)
