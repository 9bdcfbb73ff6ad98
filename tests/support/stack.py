"""Helpers for tests against the real local stack: topics and their readers, consumer-group offsets, the
worker's metrics, simulated loads and isolated runs."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
import uuid
from collections import Counter

from fraudgraph.settings import Settings

# Topics every run shares (the CDC topics of the bank, the engine's own, Connect's and Kafka's).
SHARED_TOPICS = ("bank.", "fraud.", "recs.", "fraudgraph", "_connect", "__")


def topic_names(settings: Settings) -> set[str]:
    from fraudgraph.streams.topics import topics_of_run

    return set(topics_of_run(settings, ""))


def delete_test_topics(settings: Settings, created: set[str]) -> None:
    """Tests isolate themselves with topics of their own (prefixes, changelogs, scores topics);
    left behind they pile up in the shared broker (thousands of partitions made every broker
    restart take minutes), so the session deletes the ones it created."""
    from fraudgraph.streams.topics import delete_topics

    delete_topics(settings, [t for t in created if not t.startswith(SHARED_TOPICS)])


class TopicReader:
    """Reads a topic with a fresh consumer group (confluent-kafka): from the beginning, or, with
    ``from_now``, only what is appended after it was created (the topic may hold earlier runs')
    events for the same ids)."""

    def __init__(self, settings: Settings, topic: str, from_now: bool = False):
        from confluent_kafka import Consumer

        from fraudgraph.demo import assign_at_end

        self.consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka_bootstrap,
                "group.id": f"test-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        if from_now:
            assign_at_end(self.consumer, topic)
        else:
            self.consumer.subscribe([topic])

    def read_until(self, done, timeout: float = 60.0) -> list:
        messages = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not done(messages):
            msg = self.consumer.poll(0.5)
            if msg is not None and not msg.error():
                messages.append(msg)
        return messages

    def close(self):
        self.consumer.close()


def debezium_payload(msg) -> dict | None:
    """The payload of a Debezium JSON value (schema'd envelope), or None for a tombstone."""
    if msg.value() is None:
        return None
    value = json.loads(msg.value())
    return value.get("payload", value)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[str, float]:
    """A fraudgraph process's Prometheus metrics (the worker's, the CDC watchdog's) as {series: value}."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("fraudgraph_"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def commit_group_offsets(settings: Settings, group: str, topics: list[str], at: str | dict = "end") -> dict:
    """Commit ``group``'s offsets on ``topics``: at each partition's current end (``"end"``), or at
    the given {(topic, partition): offset}. Returns what was committed. This is how a test starts a
    fresh worker "from now" without racing the broker, and how it rewinds one to force a replay."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        offsets = {}
        for topic in topics:
            for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
                offsets[(topic, p)] = end_offset(consumer, topic, p) if at == "end" else at[(topic, p)]
        # A stopped worker stays a (static) member until its session times out; until then the
        # group refuses commits from outside it.
        deadline = time.monotonic() + 60
        while True:
            try:
                consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False)
                return offsets
            except KafkaException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
    finally:
        consumer.close()


def end_offset(consumer, topic: str, partition: int) -> int:
    from confluent_kafka import KafkaException, TopicPartition

    for attempt in range(50):  # a just-created topic's leader may not answer yet
        try:
            return consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1]
        except KafkaException:
            if attempt == 49:
                raise
            time.sleep(0.2)


def cdc_topics(settings: Settings) -> list[str]:
    from fraudgraph.connectors.mapping import load_mapping

    return load_mapping(settings.mapping_file or None).topics(settings.topic_prefix)


def cdc_topic(settings: Settings, table: str) -> str:
    """The CDC topic of one table of the configured mapping."""
    from fraudgraph.connectors.mapping import load_mapping

    return load_mapping(settings.mapping_file or None).topic(table, settings.topic_prefix)


def paced_load(settings, seed: int, hours: float = 3) -> tuple[threading.Thread, dict]:
    """Start about 60-90 s of transactions at 40/s, written by the fast-mode simulator in a thread."""
    from fraudgraph.stack.simulator import daytime_start, simulate

    out = {}
    thread = threading.Thread(
        target=lambda: out.setdefault(
            "report",
            simulate(
                settings,
                mode="kafka",
                customers=300,
                duration_s=hours * 3600,
                fraud_rate=0.03,
                seed=seed,
                rate=40,
                start=daytime_start(),
            ),
        )
    )
    thread.start()
    return thread, out


# Helpers of the worker tests that run a worker over topics of their own.
ID_SPAN = 10**9  # the simulator's ids of one run lie in [id_base, id_base + ID_SPAN)


STATE_APPLIED = 'fraudgraph_stage_duration_seconds_count{stage="state"}'  # events applied to node state


def scored_ids(messages, base: int) -> Counter:
    return Counter(tx for tx in (int(m.key()) for m in messages) if base <= tx < base + ID_SPAN)


def flow_figures(port: int) -> str:
    """What a worker took in and how it ordered it: the message of an assertion on lost scores."""
    kept = ("cdc_messages", "late_events", "order_buffered", "decisions_total", "consumer_lag")
    return "worker flow: " + ", ".join(
        f"{k}={v:g}" for k, v in sorted(scrape(port).items()) if any(w in k for w in kept)
    )


def read_scores(reader: TopicReader, base: int, expected: int, timeout: float) -> list:
    return reader.read_until(lambda ms: len(scored_ids(ms, base)) >= expected, timeout=timeout)


def isolated_run(stack, tag: str) -> tuple[dict, object]:
    """Env and settings for a worker over its own CDC topics and scores topic (fast-mode simulator)."""
    from fraudgraph.streams.app import worker_topics
    from fraudgraph.streams.topics import ensure_topics

    run = uuid.uuid4().hex[:8]
    env = {
        "FRAUDGRAPH_TOPIC_PREFIX": f"{tag}{run}",
        "FRAUDGRAPH_SCORES_TOPIC": f"test.scores.{run}",
        "FRAUDGRAPH_WORKER_ID": f"test-{tag}-{run}",
    }
    settings = stack.replace(
        topic_prefix=env["FRAUDGRAPH_TOPIC_PREFIX"],
        scores_topic=env["FRAUDGRAPH_SCORES_TOPIC"],
        worker_id=env["FRAUDGRAPH_WORKER_ID"],
    )
    ensure_topics(settings.kafka_bootstrap, worker_topics(settings))
    return env, settings


def wait_caught_up(settings, group: str, timeout: float = 240) -> None:
    """Until ``group`` has committed every CDC event there is (scores complete early: later status
    updates and fraud reports may still be on their way into state)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        tps = [TopicPartition(t, p) for t in cdc_topics(settings) for p in range(4)]
        ends = {(tp.topic, tp.partition): end_offset(c, tp.topic, tp.partition) for tp in tps}
        deadline = time.monotonic() + timeout
        while True:
            # An empty partition has nothing to commit: its offset stays invalid (-1001), not 0.
            behind = {
                (tp.topic, tp.partition)
                for tp in c.committed(tps, timeout=10)
                if max(tp.offset, 0) < ends[(tp.topic, tp.partition)]
            }
            if not behind:
                return
            assert time.monotonic() < deadline, f"{group} still behind on {sorted(behind)[:4]}"
            time.sleep(1)
    finally:
        c.close()
