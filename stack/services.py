"""The local stack's servers: Kafka (KRaft), Neo4j, PostgreSQL, Kafka Connect + Debezium, the CDC watchdog and Prometheus.

Each service knows how to start itself detached, how to tell that it is *really* ready (a protocol
round trip, not an open port), and how to stop exactly the process it started. ``local.py`` starts
them in dependency order; ``docker-compose.yml`` is the same set for users with Docker.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

from fraudgraph.settings import ENV_PREFIX, Settings
from fraudgraph.stack import jars
from fraudgraph.stack.supervisor import (
    PidFile,
    PidRecord,
    StackError,
    children,
    port_open,
    spawn,
    tail,
    terminate,
    wait_until,
)

# Heap sizes chosen so all four servers, the worker and the tests fit a 2-core, 24 GiB machine.
KAFKA_HEAP = "-Xmx768m"
CONNECT_HEAP = "-Xmx512m"

LOG4J_PROPERTIES = """\
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka=WARN
log4j.logger.org.apache.kafka=WARN
log4j.logger.org.reflections=ERROR
"""


class Service:
    """A server the local stack starts, watches and stops."""

    name: str = ""
    ready_timeout: float = 120.0
    stop_signal: int = signal.SIGTERM

    def __init__(self, settings: Settings):
        self.settings = settings
        self.home = settings.stack_dir / self.name
        self.log_path = settings.stack_dir / "logs" / f"{self.name}.log"
        self.pidfile = PidFile(settings.stack_dir / "pids" / f"{self.name}.json")

    # -- what each service defines --
    def ports(self) -> list[int]:
        raise NotImplementedError

    def command(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """One-off set-up before the first start (format storage, write config)."""

    def ready(self) -> bool:
        raise NotImplementedError

    def after_ready(self) -> None:
        """Work that needs the server up (load a schema, register a connector)."""

    def endpoint(self) -> str:
        raise NotImplementedError

    # -- shared behaviour --
    def running(self) -> PidRecord | None:
        return self.pidfile.running()

    def start(self) -> bool:
        """Spawn the server unless ours already runs. Returns True if it was started now."""
        if self.running():
            return False
        busy = [p for p in self.ports() if port_open("127.0.0.1", p)]
        if busy:
            raise StackError(
                f"{self.name} cannot start: port(s) {busy} already in use by a process this stack did not "
                f"start (stop it, or change the {self.name} ports in the settings); log {self.log_path}"
            )
        self.home.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.prepare()
        pid = spawn(self.command(), self.log_path, **self.spawn_options())
        self.pidfile.write(pid)
        return True

    def spawn_options(self) -> dict:
        return {}

    def wait_ready(self) -> float:
        record = self.running()
        waited = wait_until(
            self.ready,
            service=self.name,
            log_path=self.log_path,
            timeout=self.ready_timeout,
            alive=lambda: record is not None and record.alive(),
        )
        self.after_ready()
        return waited

    def stop(self) -> bool:
        record = self.pidfile.read()
        if record is None:
            return False
        was_alive = record.alive()
        if was_alive:
            terminate(record, sig=self.stop_signal)
        self.pidfile.clear()
        return was_alive


class Kafka(Service):
    name = "kafka"

    def ports(self):
        return [self.settings.kafka_port, self.settings.kafka_controller_port]

    def endpoint(self):
        return self.settings.kafka_bootstrap

    def prepare(self):
        s = self.settings
        data = self.home / "data"
        props = self.home / "server.properties"
        props.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{s.kafka_controller_port}",
                    f"listeners=PLAINTEXT://127.0.0.1:{s.kafka_port},CONTROLLER://127.0.0.1:{s.kafka_controller_port}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{s.kafka_port}",
                    "controller.listener.names=CONTROLLER",
                    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                    "inter.broker.listener.name=PLAINTEXT",
                    f"log.dirs={data}",
                    "num.partitions=4",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=8",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                ]
            )
            + "\n"
        )
        (self.home / "log4j.properties").write_text(LOG4J_PROPERTIES)
        if not (data / "meta.properties").exists():
            cluster_id = _kraft_cluster_id(s.stack_dir)
            with open(self.log_path, "ab") as log:
                result = subprocess.run(
                    self._java("kafka.tools.StorageTool") + ["format", f"--cluster-id={cluster_id}", "-c", str(props)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            if result.returncode != 0:
                raise StackError(f"kafka storage format failed; see its log {self.log_path}:\n{tail(self.log_path)}")

    def _java(self, main: str, heap: str = KAFKA_HEAP) -> list[str]:
        return [
            jars.java(),
            heap,
            # Out of heap, a JVM keeps its sockets open and answers nothing; dead, clients see it at once.
            "-XX:+ExitOnOutOfMemoryError",
            "-cp",
            str(jars.jar_dir(self.settings.cache_dir, "kafka") / "*"),
            f"-Dlog4j.configuration=file:{self.home / 'log4j.properties'}",
            main,
        ]

    def command(self):
        return self._java("kafka.Kafka") + [str(self.home / "server.properties")]

    def ready(self):
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.settings.kafka_bootstrap, "log_level": 0})
        metadata = admin.list_topics(timeout=2)
        return len(metadata.brokers) > 0


def _kraft_cluster_id(stack_dir: Path) -> str:
    # KRaft wants a base64 UUID; derive it from the stack folder so it is stable per stack.
    # It may start with "-", which is why the format command passes it as --cluster-id=<id>.
    raw = uuid.uuid5(uuid.NAMESPACE_URL, str(stack_dir)).bytes
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


class Connect(Service):
    """Kafka Connect (distributed mode) with Debezium's PostgreSQL connector on its plugin path."""

    name = "connect"

    def ports(self):
        return [self.settings.connect_port]

    def endpoint(self):
        return self.settings.connect_url

    def prepare(self):
        s = self.settings
        (self.home / "connect.properties").write_text(
            "\n".join(
                [
                    f"bootstrap.servers={s.kafka_bootstrap}",
                    "group.id=fraudgraph-connect",
                    f"listeners=http://127.0.0.1:{s.connect_port}",
                    "config.storage.topic=_connect-configs",
                    "offset.storage.topic=_connect-offsets",
                    "status.storage.topic=_connect-status",
                    "config.storage.replication.factor=1",
                    "offset.storage.replication.factor=1",
                    "status.storage.replication.factor=1",
                    "key.converter=org.apache.kafka.connect.json.JsonConverter",
                    "value.converter=org.apache.kafka.connect.json.JsonConverter",
                    f"plugin.path={jars.plugin_path(s.cache_dir)}",
                    "offset.flush.interval.ms=1000",
                ]
            )
            + "\n"
        )
        (self.home / "log4j.properties").write_text(LOG4J_PROPERTIES)

    def command(self):
        return [
            jars.java(),
            CONNECT_HEAP,
            "-cp",
            str(jars.jar_dir(self.settings.cache_dir, "connect") / "*"),
            f"-Dlog4j.configuration=file:{self.home / 'log4j.properties'}",
            "org.apache.kafka.connect.cli.ConnectDistributed",
            str(self.home / "connect.properties"),
        ]

    def ready(self):
        with urllib.request.urlopen(f"{self.settings.connect_url}/connector-plugins", timeout=2) as resp:
            plugins = json.load(resp)
        return any(p["class"] == DEBEZIUM_POSTGRES for p in plugins)

    def after_ready(self):
        from fraudgraph.stack.debezium import register_connector

        register_connector(self.settings)


DEBEZIUM_POSTGRES = "io.debezium.connector.postgresql.PostgresConnector"


class Neo4j(Service):
    name = "neo4j"

    def ports(self):
        return [self.settings.neo4j_bolt_port, self.settings.neo4j_http_port]

    def endpoint(self):
        return self.settings.neo4j_uri

    def prepare(self):
        from fraudgraph.stack.neo4j_server import write_config

        write_config(self.settings, self.home)

    def command(self):
        from fraudgraph.stack.neo4j_server import command

        return command(self.settings, self.home)

    def ready(self):
        from neo4j import GraphDatabase

        with GraphDatabase.driver(
            self.settings.neo4j_uri, auth=self.settings.neo4j_auth, connection_timeout=2
        ) as driver:
            driver.verify_connectivity()
            records, _, _ = driver.execute_query("RETURN 1 AS ok")
            return records[0]["ok"] == 1


class Postgres(Service):
    """PostgreSQL from the OS packages, with ``wal_level=logical`` for Debezium's pgoutput.

    PostgreSQL refuses to run as root, so when the stack runs as root the cluster belongs to the
    ``postgres`` system user and lives under its home, where that user can reach it.
    """

    name = "postgres"
    stop_signal = signal.SIGINT  # "fast" shutdown: SIGTERM would wait for Debezium's replication session

    def __init__(self, settings):
        super().__init__(settings)
        self.as_user = "postgres" if os.geteuid() == 0 else None
        if self.as_user:
            tag = hashlib.sha1(str(settings.stack_dir).encode()).hexdigest()[:10]
            self.cluster = Path(pwd.getpwnam("postgres").pw_dir) / f"fraudgraph-{tag}"
        else:
            self.cluster = self.home
        self.data = self.cluster / "data"
        self.socket_dir = self.cluster / "run"

    def ports(self):
        return [self.settings.pg_port]

    def endpoint(self):
        return f"postgresql://{self.settings.pg_host}:{self.settings.pg_port}/{self.settings.pg_database}"

    def spawn_options(self):
        return {"user": self.as_user, "group": self.as_user} if self.as_user else {}

    def _run(self, cmd: list[str]) -> None:
        result = subprocess.run(cmd, capture_output=True, text=True, **self.spawn_options())
        if result.returncode != 0:
            raise StackError(
                f"postgres: {' '.join(cmd[:2])} failed: {result.stdout}{result.stderr}; log {self.log_path}"
            )

    def prepare(self):
        bindir = postgres_bindir()
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if self.as_user:
            shutil.chown(self.cluster, self.as_user, self.as_user)
            shutil.chown(self.socket_dir, self.as_user, self.as_user)
            # The server's output goes to our log file, opened before privileges are dropped.
        if not (self.data / "PG_VERSION").exists():
            shutil.rmtree(self.data, ignore_errors=True)
            self._run(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    self.settings.pg_superuser,
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--no-instructions",
                ]
            )
            with open(self.data / "pg_hba.conf", "a") as hba:
                hba.write("host replication all 127.0.0.1/32 scram-sha-256\n")

    def command(self):
        return [
            str(postgres_bindir() / "postgres"),
            "-D",
            str(self.data),
            "-c",
            f"port={self.settings.pg_port}",
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"unix_socket_directories={self.socket_dir}",
            "-c",
            "wal_level=logical",
            "-c",
            "max_wal_senders=10",
            "-c",
            "max_replication_slots=10",
        ]

    def stop(self) -> bool:
        """A fast shutdown that really ends, and leaves no server process behind.

        Two PostgreSQL habits get in the way. A fast shutdown waits until every logical walsender's
        client has confirmed the shutdown checkpoint, which Debezium never does (it confirms only
        what it captured), so the server hung until ``terminate`` gave up and SIGKILLed it. And
        every backend leads its own process group (PostgreSQL calls ``setsid``), so that SIGKILL of
        the postmaster's group left the checkpointer and walsender running, holding the shared
        memory, and the next start failed. So: end the replication sessions first, and kill any
        child the postmaster leaves."""
        record = self.pidfile.read()
        left = children(record.pid) if record is not None and record.alive() else []
        if left:
            try:
                import psycopg

                with psycopg.connect(self.superuser_conninfo(), connect_timeout=2, autocommit=True) as conn:
                    conn.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'walsender'"
                    )
            except Exception:  # noqa: BLE001 - not answering: the signals below still stop it
                pass
        stopped = super().stop()
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return stopped

    def superuser_conninfo(self, dbname: str = "postgres") -> str:
        return f"host={self.socket_dir} port={self.settings.pg_port} user={self.settings.pg_superuser} dbname={dbname}"

    def ready(self):
        import psycopg

        with psycopg.connect(self.superuser_conninfo(), connect_timeout=2) as conn:
            return conn.execute("SELECT 1").fetchone() == (1,)

    def after_ready(self):
        from fraudgraph.stack.source_db import bootstrap

        bootstrap(self.settings, self.superuser_conninfo)


class CdcWatchdog(Service):
    """``fraudgraph stack watchdog``: restarts a failed or wedged Debezium task (``cdc_watchdog.py``)."""

    name = "cdc-watchdog"
    ready_timeout = 30.0

    def ports(self):
        return [self.settings.cdc_watchdog_port]

    def endpoint(self):
        return f"http://127.0.0.1:{self.settings.cdc_watchdog_port}/metrics"

    def command(self):
        return [sys.executable, "-m", "fraudgraph.cli", "stack", "watchdog"]

    def spawn_options(self):
        # The watchdog reads its settings like any process (environment, FRAUDGRAPH_CONFIG file);
        # the addresses of *this* stack are passed on, so a stack on other ports (tests) is the
        # one it watches. Secrets are not: they reach it as they reached `stack up`.
        s = self.settings
        addresses = {
            "kafka_bootstrap": s.kafka_bootstrap,
            "topic_prefix": s.topic_prefix,
            "pg_host": s.pg_host,
            "pg_port": s.pg_port,
            "pg_database": s.pg_database,
            "pg_user": s.pg_user,
            "connect_url": s.connect_url,
            "connector_name": s.connector_name,
            "cdc_stall_s": s.cdc_stall_s,
            "cdc_watchdog_port": s.cdc_watchdog_port,
            "worker_web_host": s.worker_web_host,
        }
        return {"env": {**os.environ, **{ENV_PREFIX + k.upper(): str(v) for k, v in addresses.items()}}}

    def ready(self):
        with urllib.request.urlopen(self.endpoint(), timeout=2) as resp:
            return b"fraudgraph_cdc_watchdog_actions_total" in resp.read()


class Prometheus(Service):
    """Debian's Prometheus, scraping the worker and evaluating the alert rules (``prometheus_server.py``)."""

    name = "prometheus"
    ready_timeout = 60.0

    def ports(self):
        return [self.settings.prometheus_port]

    def endpoint(self):
        return f"http://127.0.0.1:{self.settings.prometheus_port}"

    def prepare(self):
        from fraudgraph.stack.prometheus_server import write_config

        write_config(self.settings, self.home)

    def command(self):
        from fraudgraph.stack.prometheus_server import command

        return command(self.settings, self.home)

    def ready(self):
        with urllib.request.urlopen(f"{self.endpoint()}/-/ready", timeout=2) as resp:
            return resp.status == 200


def postgres_bindir() -> Path:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name))
    if candidates:
        return candidates[-1].parent
    found = shutil.which("postgres")
    if found:
        return Path(found).parent
    raise StackError("PostgreSQL server binaries not found: apt-get install postgresql")
