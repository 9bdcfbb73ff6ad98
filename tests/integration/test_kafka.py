"""The real Kafka broker (KRaft) accepts writes and serves them back in order."""

import uuid

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic


def test_produce_and_consume_on_real_broker(stack, topic_reader):
    topic = f"test.roundtrip.{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": stack.kafka_bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])[topic].result(timeout=30)

    producer = Producer({"bootstrap.servers": stack.kafka_bootstrap, "enable.idempotence": True})
    sent = [(f"key-{i % 3}".encode(), f"value-{i}".encode()) for i in range(30)]
    for key, value in sent:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0

    reader = topic_reader(topic)
    got = reader.read_until(lambda ms: len(ms) >= len(sent))
    assert sorted((m.key(), m.value()) for m in got) == sorted(sent)
    # Per-key order survives partitioning.
    for key in {k for k, _ in sent}:
        assert [m.value() for m in got if m.key() == key] == [v for k, v in sent if k == key]
