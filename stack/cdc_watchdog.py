"""Keeps Debezium capturing after outages: two faults Kafka Connect does not heal by itself.

1. **A failed task stays failed.** Connect restarts nothing; Debezium retries only what it
   classifies as retriable.
2. **A wedged task.** After a broker outage Connect gives up on the old task (an "orphan") and
   starts a new one, but the orphan's replication connection stays open (its keep-alive thread
   still answers PostgreSQL) and keeps the slot. The new task then retries forever with
   'replication slot "fraudgraph" is active for PID ...' while its status says RUNNING, and no
   change reaches Kafka again (the broker-restart test reproduces it).

The liveness signal is Debezium's heartbeat (``heartbeat.interval.ms``): a task that streams
writes one every few seconds, changes or not. No heartbeat for ``stall_s`` while the slot is
held by a connection older than that means the holder is not the live task: terminate that
connection and restart the task, which then takes the slot and resumes from its committed
offsets (nothing is lost; the events after the last offset flush come again). A connector that
never wrote a heartbeat (still in its first snapshot) is left alone.

``decide`` is the whole policy, a pure function of one ``Observation``; ``watch`` gathers
observations and carries out a verdict reached in two rounds running, then leaves the restarted
task ``RESTART_GRACE_S`` to prove itself.
"""

from __future__ import annotations

import logging
import time
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, start_http_server

from fraudgraph.settings import Settings
from fraudgraph.stack import debezium

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

HEARTBEAT_AGE = Gauge(
    "fraudgraph_cdc_heartbeat_age_seconds",
    "Seconds since Debezium's newest heartbeat, at the watchdog's last observation",
)
ACTIONS = Counter("fraudgraph_cdc_watchdog_actions_total", "Healing actions taken, by action", ["action"])
OBSERVATION_FAILURES = Counter(
    "fraudgraph_cdc_watchdog_observation_failures_total",
    "Observations that failed (Kafka, Connect or PostgreSQL not answering)",
)

# How long a restarted task is given before it is judged again. Debezium's start-up can take a
# minute of its own retries after an outage: registering its JMX metrics waits up to 12 x 5 s for
# the stuck old task's to go, and taking the slot up to 6 x 10 s. Judged sooner, a task about to
# recover is restarted again and again (the broker-restart test reproduces it).
RESTART_GRACE_S = 120.0

RELEASE_SLOT = "release_slot"
RESTART_TASKS = "restart_tasks"


@dataclass(frozen=True)
class SlotHolder:
    pid: int
    connected_s: float  # how long its connection has been open


@dataclass(frozen=True)
class Observation:
    connector: dict | None  # Connect's status document; None when the connector is not registered
    heartbeat_age_s: float | None  # since the newest heartbeat; None: never one
    slot_holder: SlotHolder | None


@dataclass(frozen=True)
class Action:
    kind: str
    why: str
    pid: int | None = None


def decide(obs: Observation, stall_s: float) -> list[Action]:
    if obs.connector is None:
        return []  # not registered: registration is `stack up`'s / connector-init's job
    states = [obs.connector.get("connector", {}).get("state")] + [
        t.get("state") for t in obs.connector.get("tasks", [])
    ]
    if "FAILED" in states:
        why = "connector or task FAILED"
    elif obs.heartbeat_age_s is not None and obs.heartbeat_age_s > stall_s:
        if obs.slot_holder is not None and obs.slot_holder.connected_s <= stall_s:
            return []  # a connection younger than the silence: a new task is starting to stream
        why = f"no heartbeat for {obs.heartbeat_age_s:.0f}s"
    else:
        return []
    actions = []
    if obs.slot_holder is not None:
        actions.append(
            Action(
                RELEASE_SLOT,
                f"{why}; slot held by pid {obs.slot_holder.pid} for {obs.slot_holder.connected_s:.0f}s",
                obs.slot_holder.pid,
            )
        )
    actions.append(Action(RESTART_TASKS, why))
    return actions


class Probe:
    """Reads the three facts ``decide`` needs (Connect's status, the newest heartbeat, the slot's
    holder) and carries out its actions, over clients kept from round to round."""

    def __init__(self, settings: Settings):
        from confluent_kafka import Consumer

        from fraudgraph.kafka_config import confluent_config

        self.settings = settings
        self.consumer = Consumer(
            {
                **confluent_config(settings),
                "group.id": "fraudgraph-cdc-watchdog",
                "enable.auto.commit": False,
                "log_level": 0,
            }
        )
        self.pg: psycopg.Connection | None = None  # one connection for every round, opened on first use

    def heartbeat_age_s(self) -> float | None:
        from confluent_kafka import TopicPartition

        topic = debezium.heartbeat_topic(self.settings)
        meta = self.consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            return None
        newest = None
        for p in meta.partitions:
            low, high = self.consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high <= low:
                continue
            self.consumer.assign([TopicPartition(topic, p, high - 1)])
            msg = self.consumer.consume(1, timeout=10)
            if msg and not msg[0].error():
                ts = msg[0].timestamp()[1] / 1000
                newest = ts if newest is None else max(newest, ts)
        return None if newest is None else max(0.0, time.time() - newest)

    def _sql(self, query: str, params: list):
        if self.pg is None:
            import psycopg

            self.pg = psycopg.connect(self.settings.pg_dsn(), autocommit=True, connect_timeout=10)
        return self.pg.execute(query, params).fetchone()

    def slot_holder(self) -> SlotHolder | None:
        row = self._sql(
            "SELECT s.active_pid, extract(epoch FROM now() - a.backend_start) FROM pg_replication_slots s "
            "LEFT JOIN pg_stat_activity a ON a.pid = s.active_pid WHERE s.slot_name = %s AND s.active",
            [debezium.SLOT],
        )
        return None if row is None else SlotHolder(int(row[0]), float(row[1] or 0.0))

    def observe(self) -> Observation:
        return Observation(debezium.connector_status(self.settings), self.heartbeat_age_s(), self.slot_holder())

    def act(self, action: Action) -> None:
        if action.kind == RELEASE_SLOT:
            self._sql("SELECT pg_terminate_backend(%s)", [action.pid])
        elif action.kind == RESTART_TASKS:
            s = self.settings
            url = f"{s.connect_url}/connectors/{s.connector_name}/restart?includeTasks=true&onlyFailed=false"
            urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=30).close()

    def close(self) -> None:
        self.consumer.close()
        if self.pg is not None:
            self.pg.close()


def watch(settings: Settings, stall_s: float = 30.0, interval_s: float = 5.0, metrics_port: int | None = None) -> None:
    """Observe every ``interval_s`` and heal, until killed. A service that cannot be reached is
    logged and tried again next round: the watchdog itself never gives up. With ``metrics_port``
    its metrics are served on ``worker_web_host:metrics_port/metrics``."""
    if metrics_port:
        start_http_server(metrics_port, addr=settings.worker_web_host)
    HEARTBEAT_AGE.set(float("nan"))  # unknown until observed (a label-less gauge would say 0: healthy)
    for kind in (RELEASE_SLOT, RESTART_TASKS):
        ACTIONS.labels(kind)  # exported as 0 before the first action
    probe, quiet_until, pending = None, 0.0, False
    log.info("watching connector %s (stall after %.0fs without a heartbeat)", settings.connector_name, stall_s)
    try:
        while True:
            try:
                probe = probe or Probe(settings)
                obs = probe.observe()
                if obs.heartbeat_age_s is not None:
                    HEARTBEAT_AGE.set(obs.heartbeat_age_s)
                wanted = decide(obs, stall_s) if time.monotonic() >= quiet_until else []
                # Only a verdict two rounds in a row is acted on: a task that was merely cut off from
                # Kafka writes its next heartbeat within one heartbeat interval of Kafka's return.
                actions, pending = (wanted if pending else []), bool(wanted)
                for action in actions:
                    log.warning("CDC watchdog: %s (%s)", action.kind, action.why)
                    probe.act(action)
                    ACTIONS.labels(action.kind).inc()
                if actions:
                    quiet_until = time.monotonic() + max(stall_s, RESTART_GRACE_S)
            except Exception as exc:  # noqa: BLE001 - Kafka, Connect or PostgreSQL away: report, try again next round
                log.warning("CDC watchdog: observation failed, retrying: %s: %s", type(exc).__name__, exc)
                OBSERVATION_FAILURES.inc()
                # With fresh clients: a consumer that lived through a broker restart kept failing
                # "Broker transport failure" long after the broker was back.
                if probe is not None:
                    try:
                        probe.close()
                    except Exception:  # noqa: BLE001 - it is being dropped anyway
                        pass
                probe = None
            time.sleep(interval_s)
    finally:
        if probe is not None:
            probe.close()
