"""The engine's topics: created before a component subscribes, so nothing races Kafka's
auto-creation (which would pick the broker's default partition count and no compaction); checked
for the partition counts the worker relies on; deleted when a test or benchmark run is done."""

from __future__ import annotations

import time
from collections.abc import Mapping

from fraudgraph.settings import Settings


class TopicError(RuntimeError):
    pass


def _admin(cluster: Settings | str):
    """``cluster``: the settings (with their Kafka security), or a bootstrap address of a PLAINTEXT cluster."""
    from confluent_kafka.admin import AdminClient

    from fraudgraph.kafka_config import confluent_config

    return AdminClient(
        confluent_config(cluster if isinstance(cluster, Settings) else Settings(kafka_bootstrap=cluster))
    )


def ensure_topics(
    cluster: Settings | str,
    topics: Mapping[str, int],
    replication: int = 1,
    config: Mapping[str, Mapping[str, str]] | None = None,
) -> list[str]:
    """Create each missing topic with ``topics[name]`` partitions; returns the names created."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import NewTopic

    admin = _admin(cluster)
    existing = set(admin.list_topics(timeout=10).topics)
    new = [
        NewTopic(name, n, replication, config=dict((config or {}).get(name, {})))
        for name, n in topics.items()
        if name not in existing
    ]
    for topic, future in admin.create_topics(new).items() if new else ():
        try:
            future.result(timeout=30)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise TopicError(f"creating topic {topic} failed: {exc}") from exc
    created = [t.topic for t in new]
    _wait_for_leaders(admin, created)
    return created


def delete_topics(cluster: Settings | str, names) -> None:
    """Delete ``names``, best effort: a topic already gone, or one the broker is too slow to delete,
    is left as it is (it costs only space)."""
    names = sorted(names)
    admin = _admin(cluster)
    for i in range(0, len(names), 100):
        for future in admin.delete_topics(names[i : i + 100], operation_timeout=60).values():
            try:
                future.result(timeout=120)
            except Exception:  # noqa: BLE001 - best effort, see above
                pass


def topics_of_run(cluster: Settings | str, *prefixes: str) -> list[str]:
    """Every topic whose name starts with one of ``prefixes`` (a test's or a benchmark's own)."""
    admin = _admin(cluster)
    return sorted(t for t in admin.list_topics(timeout=30).topics if t.startswith(prefixes))


def check_partitions(cluster: Settings | str, topics: Mapping[str, int]) -> None:
    """Raise ``TopicError`` naming every topic whose partition count is not ``topics[name]``:
    ``ensure_topics`` leaves an existing topic as it is, whoever created it."""
    admin = _admin(cluster)
    meta = admin.list_topics(timeout=10).topics
    wrong = {
        name: len(meta[name].partitions)
        for name, n in topics.items()
        if name in meta and len(meta[name].partitions) != n
    }
    if wrong:
        raise TopicError(
            "topics with the wrong number of partitions: "
            + ", ".join(f"{t} has {n}, needs {topics[t]}" for t, n in sorted(wrong.items()))
        )


def _wait_for_leaders(admin, topics: list[str], timeout: float = 30.0) -> None:
    """A created topic is usable once each partition has a leader; until then reads of its offsets
    fail with NOT_LEADER_FOR_PARTITION."""
    deadline = time.monotonic() + timeout
    while topics:
        meta = admin.list_topics(timeout=10).topics
        if all(
            t in meta
            and meta[t].error is None
            and meta[t].partitions
            and all(p.leader >= 0 for p in meta[t].partitions.values())
            for t in topics
        ):
            return
        if time.monotonic() > deadline:
            raise TopicError(f"topics {topics} have no leader after {timeout:.0f}s")
        time.sleep(0.1)
