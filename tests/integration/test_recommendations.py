"""Recommendation queries on the real stack: a worker with no recommender answers
``model_unavailable``; once a recommender trained from the run's own CDC log is registered, the same
worker hot-reloads it and answers every request with k merchants (and clear errors for unknown
accounts and invalid requests). Prints the request -> reply latency it measured."""

from __future__ import annotations

import json
import time
import uuid

from confluent_kafka import Producer

from fraudgraph.connectors import events as ev
from fraudgraph.models.recs_registry import RecsRegistry
from fraudgraph.stack.simulator import daytime_start, simulate
from fraudgraph.streams.app import worker_topics
from fraudgraph.streams.cdc_loop import cdc_group
from fraudgraph.streams.topics import ensure_topics
from fraudgraph.training import replay as rp
from fraudgraph.training.recs_fit import fit_recommender
from fraudgraph.training.recs_train import RecsConfig

from support.stack import TopicReader, cdc_topics, commit_group_offsets

ID_SPAN = 10**9
K = 5


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def ask(
    producer: Producer, replies: TopicReader, topic: str, request: dict | bytes, key: str, timeout: float = 60
) -> tuple[dict, float]:
    """Send one request and wait for its reply (keyed by request_id, or by the request's key when it
    has none); returns the reply and the seconds it took."""
    if isinstance(request, dict):
        key = request["request_id"]
    value = request if isinstance(request, bytes) else json.dumps(request).encode()
    sent = time.perf_counter()
    producer.produce(topic, key=key.encode(), value=value)
    producer.flush(10)
    got = replies.read_until(lambda ms: any(m.key() == key.encode() for m in ms), timeout=timeout)
    elapsed = time.perf_counter() - sent
    mine = [m for m in got if m.key() == key.encode()]
    assert mine, f"no reply to {key} within {timeout}s"
    return json.loads(mine[0].value()), elapsed


def test_recommendation_queries_on_the_real_stack(stack, worker_process, tmp_path):
    run = uuid.uuid4().hex[:8]
    env = {
        "FRAUDGRAPH_TOPIC_PREFIX": f"recs{run}",
        "FRAUDGRAPH_SCORES_TOPIC": f"test.scores.{run}",
        "FRAUDGRAPH_WORKER_ID": f"test-recs-{run}",
        "FRAUDGRAPH_RECS_REQUESTS_TOPIC": f"test.recs.requests.{run}",
        "FRAUDGRAPH_RECS_REPLIES_TOPIC": f"test.recs.replies.{run}",
        "FRAUDGRAPH_MODEL_DIR": str(tmp_path / "models"),
        "FRAUDGRAPH_MODEL_RELOAD_S": "1",
    }
    settings = stack.replace(
        topic_prefix=env["FRAUDGRAPH_TOPIC_PREFIX"],
        scores_topic=env["FRAUDGRAPH_SCORES_TOPIC"],
        worker_id=env["FRAUDGRAPH_WORKER_ID"],
        recs_requests_topic=env["FRAUDGRAPH_RECS_REQUESTS_TOPIC"],
        recs_replies_topic=env["FRAUDGRAPH_RECS_REPLIES_TOPIC"],
        model_dir=tmp_path / "models",
    )
    ensure_topics(settings.kafka_bootstrap, worker_topics(settings))
    from fraudgraph.streams.graph_sink import graph_group

    for group in (cdc_group(settings), graph_group(settings)):
        commit_group_offsets(stack, group, cdc_topics(settings))
    replies = TopicReader(stack, settings.recs_replies_topic)
    producer = Producer({"bootstrap.servers": stack.kafka_bootstrap})
    topic = settings.recs_requests_topic
    try:
        worker_process(**env)
        report = simulate(
            settings, mode="kafka", customers=60, duration_s=2 * 3600, fraud_rate=0.05, seed=33, start=daytime_start()
        )
        base = report.config.id_base
        events = rp.event_time_order(rp.decoded(rp.kafka_records(settings), settings))
        paid: dict[int, set[int]] = {}
        for e in events:
            if isinstance(e, ev.TransactionCreated) and e.merchant_id is not None:
                paid.setdefault(e.account_id, set()).add(e.merchant_id)
        accounts = sorted(paid, key=lambda a: -len(paid[a]))[:20]
        assert accounts and all(base <= a < base + ID_SPAN for a in accounts)

        # No recommender registered yet: a valid request is answered, with model_unavailable. Also
        # waits until the worker has applied this account's events (before that it is unknown).
        deadline, attempt = time.monotonic() + 180, 0
        while True:
            attempt += 1
            reply, _ = ask(
                producer, replies, topic, {"request_id": f"{run}-first-{attempt}", "account_id": accounts[0]}, ""
            )
            if reply["status"] != "not_found" or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert reply["status"] == "model_unavailable" and reply["merchants"] == []

        model, items, _ = fit_recommender(events, RecsConfig(dim=16, epochs=5))
        version = RecsRegistry(settings.recs_registry_dir()).register(model, {"items": items}).version
        deadline = time.monotonic() + 60  # hot reload: the running worker picks the new version up
        while reply["status"] != "ok" and time.monotonic() < deadline:
            time.sleep(0.5)
            attempt += 1
            reply, _ = ask(
                producer, replies, topic, {"request_id": f"{run}-reload-{attempt}", "account_id": accounts[0]}, ""
            )
        assert reply["status"] == "ok" and reply["model_version"] == version

        latencies = []
        for n, account in enumerate(accounts):
            request = {"request_id": f"{run}-{n}", "account_id": account, "k": K, "exclude_used": n % 2 == 1}
            reply, seconds = ask(producer, replies, topic, request, "")
            latencies.append(seconds)
            assert reply["status"] == "ok" and reply["request_id"] == request["request_id"], reply
            merchants = [m["merchant_id"] for m in reply["merchants"]]
            assert len(merchants) == K and len(set(merchants)) == K and set(merchants) <= set(items)
            scores = [m["score"] for m in reply["merchants"]]
            assert scores == sorted(scores, reverse=True)
            assert all(m["risk"] < settings.recs_max_risk for m in reply["merchants"])
            if request["exclude_used"]:
                assert not set(merchants) & paid[account] and reply["excluded"]["used"] > 0

        errors = {
            "unknown": ({"request_id": f"{run}-unknown", "account_id": base + ID_SPAN - 1}, "not_found"),
            "k": ({"request_id": f"{run}-k", "account_id": accounts[0], "k": 0}, "invalid_request"),
            "garbage": (b"\x00not json", "invalid_request"),
        }
        for name, (request, status) in errors.items():
            reply, _ = ask(producer, replies, topic, request, f"{run}-{name}")
            assert reply["status"] == status and reply["error"] and reply["merchants"] == [], reply
        print(
            f"\nrecommendation request -> reply over Kafka ({len(latencies)} sequential requests, k={K}): "
            f"p50 {pct(latencies, 0.5) * 1000:.1f} ms, p99 {pct(latencies, 0.99) * 1000:.1f} ms, "
            f"max {max(latencies) * 1000:.1f} ms"
        )
    finally:
        replies.close()
