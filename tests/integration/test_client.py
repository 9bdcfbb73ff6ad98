"""The shell's clients over the topics (`fraudgraph score`, `recommend`, `alerts`) against a real
worker: found, not found, no model yet, and the worker down (a clear message and exit code 3)."""

import json
import os
import subprocess
import sys
import time
import uuid

from fraudgraph.models.recs_registry import RecsRegistry
from fraudgraph.settings import load_settings
from fraudgraph.stack.simulator import daytime_start, simulate
from fraudgraph.streams.app import worker_topics
from fraudgraph.streams.topics import ensure_topics
from fraudgraph.training import replay as rp
from fraudgraph.training.recs_fit import fit_recommender
from fraudgraph.training.recs_train import RecsConfig

from support.stack import ID_SPAN, TopicReader, read_scores

K = 3


def cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fraudgraph.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_score_recommend_and_alerts_from_the_shell(stack, worker_process, tmp_path):
    run = uuid.uuid4().hex[:8]
    env = {
        "FRAUDGRAPH_TOPIC_PREFIX": f"cli{run}",
        "FRAUDGRAPH_WORKER_ID": f"test-cli-{run}",
        "FRAUDGRAPH_MODEL_DIR": str(tmp_path / "models"),
        "FRAUDGRAPH_MODEL_RELOAD_S": "1",
        **{
            f"FRAUDGRAPH_{name.upper()}": f"test.{name}.{run}"
            for name in (
                "scores_topic",
                "alerts_topic",
                "score_requests_topic",
                "score_replies_topic",
                "recs_requests_topic",
                "recs_replies_topic",
            )
        },
    }
    shell = dict(os.environ, FRAUDGRAPH_KAFKA_BOOTSTRAP=stack.kafka_bootstrap, **env)
    settings = load_settings(shell)
    ensure_topics(settings.kafka_bootstrap, worker_topics(settings))
    worker = worker_process(**env)

    report = simulate(
        settings, mode="kafka", customers=60, duration_s=2 * 3600, fraud_rate=0.2, seed=33, start=daytime_start()
    )
    base, n = report.config.id_base, report.rows["transactions"]["insert"]
    reader = TopicReader(stack, settings.scores_topic)
    try:
        scores = {
            json.loads(m.value())["transaction_id"]: json.loads(m.value()) for m in read_scores(reader, base, n, 180)
        }
    finally:
        reader.close()
    alerted = {tx for tx, s in scores.items() if s["decision"] != "approve"}
    assert len(scores) == n and alerted
    tx = min(alerted)
    record = scores[tx]

    shown = cli(shell, "score", "--transaction", str(tx))
    assert shown.returncode == 0, shown.stderr
    assert f"transaction {tx} (account {record['account_id']})" in shown.stdout
    assert record["decision"].upper() in shown.stdout and record["reasons"][0]["code"] in shown.stdout
    as_json = cli(shell, "score", "--transaction", str(tx), "--json")
    assert json.loads(as_json.stdout)["scores"] == [record]
    by_account = json.loads(cli(shell, "score", "--account", str(record["account_id"]), "--json").stdout)
    assert by_account["status"] == "ok" and tx in {s["transaction_id"] for s in by_account["scores"]}
    missing = cli(shell, "score", "--transaction", str(base + ID_SPAN - 1))
    assert missing.returncode == 1 and "not_found" in missing.stderr

    listed = cli(shell, "alerts", "--last", str(n), "--json")
    assert listed.returncode == 0, listed.stderr
    assert {json.loads(line)["transaction_id"] for line in listed.stdout.splitlines()} == alerted

    no_model = cli(shell, "recommend", "--account", str(record["account_id"]))
    assert no_model.returncode == 1 and "model_unavailable" in no_model.stderr
    events = rp.event_time_order(rp.decoded(rp.kafka_records(settings), settings))
    model, items, _ = fit_recommender(events, RecsConfig(dim=16, epochs=3))
    RecsRegistry(settings.recs_registry_dir()).register(model, {"items": items})
    deadline = time.monotonic() + 60  # the worker hot-reloads it
    while (recs := cli(shell, "recommend", "--account", str(record["account_id"]), "--k", str(K))).returncode != 0:
        assert time.monotonic() < deadline, recs.stderr
        time.sleep(1)
    assert recs.stdout.count(" merchant ") == K
    print(
        f"\n$ fraudgraph score --transaction {tx}\n{shown.stdout}$ fraudgraph recommend --account "
        f"{record['account_id']} --k {K}\n{recs.stdout}"
    )

    worker["proc"].terminate()
    worker["proc"].wait(60)
    down = cli(shell, "score", "--transaction", str(tx), "--timeout", "3")
    assert down.returncode == 3 and "no reply" in down.stderr and "fraudgraph worker" in down.stderr
