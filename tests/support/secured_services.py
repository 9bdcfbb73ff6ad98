"""Private, secured servers for security tests, beside (never instead of) the shared stack.

* ``secured_neo4j``: the local stack's own Neo4j service (``stack/services.py``) with a password set,
  i.e. authentication on, on free ports in a temporary folder.
* ``secured_kafka``: a KRaft broker whose client listener is SASL_SSL with SCRAM-SHA-256 and -512 users
  (created when the storage is formatted) and TLS client authentication required; the broker's own
  traffic uses a plaintext listener that clients are never given.

Both are started and stopped by the fixtures in ``tests/conftest.py``; nothing here touches the
shared stack's processes, ports or folders.
"""

from __future__ import annotations

import socket
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from fraudgraph.kafka_config import confluent_config
from fraudgraph.settings import Settings
from fraudgraph.stack.services import LOG4J_PROPERTIES, Kafka, Neo4j
from fraudgraph.stack.supervisor import StackError, tail

from support.pki import Pki, make_pki


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_secured_neo4j(base: Settings, root: Path) -> Settings:
    """A Neo4j with authentication on; returns settings that reach it (user neo4j and a fresh password)."""
    s = base.replace(
        stack_dir=root,
        neo4j_uri=f"bolt://127.0.0.1:{free_port()}",
        neo4j_http_port=free_port(),
        neo4j_password=f"neo4j-pw-{uuid.uuid4().hex[:12]}",
    )
    service = Neo4j(s)
    service.ready_timeout = 240.0  # a second JVM on a small shared machine
    service.start()
    try:
        service.wait_ready()
    except Exception:
        service.stop()
        raise
    return s


def stop_neo4j(settings: Settings) -> None:
    Neo4j(settings).stop()


@dataclass(frozen=True)
class SecuredKafka:
    broker: ScramTlsKafka
    pki: Pki
    username: str
    password: str

    def client(self, base: Settings, mechanism: str = "SCRAM-SHA-512", **changes) -> Settings:
        """Settings of a client that authenticates with SCRAM and a TLS client certificate."""
        return base.replace(
            **{
                "kafka_bootstrap": self.broker.bootstrap,
                "kafka_security_protocol": "SASL_SSL",
                "kafka_sasl_mechanism": mechanism,
                "kafka_sasl_username": self.username,
                "kafka_sasl_password": self.password,
                "kafka_ssl_cafile": str(self.pki.ca),
                "kafka_ssl_certfile": str(self.pki.client_cert),
                "kafka_ssl_keyfile": str(self.pki.client_key),
                "kafka_ssl_key_password": self.pki.client_key_password,
                **changes,
            }
        )


class ScramTlsKafka(Kafka):
    """The stack's Kafka service with a SASL_SSL client listener; ``kafka_bootstrap`` of its settings is
    the broker's internal plaintext listener (not handed to clients)."""

    def __init__(self, settings: Settings, client_port: int, pki: Pki, users: dict[str, str]):
        super().__init__(settings)
        self.client_port, self.pki, self.users = client_port, pki, users
        self.bootstrap = f"127.0.0.1:{client_port}"
        self.ready_timeout = 180.0

    def ports(self):
        return super().ports() + [self.client_port]

    def prepare(self):
        s = self.settings
        data = self.home / "data"
        jaas = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        props = self.home / "server.properties"
        props.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{s.kafka_controller_port}",
                    f"listeners=INTERNAL://127.0.0.1:{s.kafka_port},CLIENTS://127.0.0.1:{self.client_port},"
                    f"CONTROLLER://127.0.0.1:{s.kafka_controller_port}",
                    f"advertised.listeners=INTERNAL://127.0.0.1:{s.kafka_port},CLIENTS://127.0.0.1:{self.client_port}",
                    "listener.security.protocol.map=INTERNAL:PLAINTEXT,CLIENTS:SASL_SSL,CONTROLLER:PLAINTEXT",
                    "inter.broker.listener.name=INTERNAL",
                    "controller.listener.names=CONTROLLER",
                    "sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512",
                    f"listener.name.clients.scram-sha-256.sasl.jaas.config={jaas}",
                    f"listener.name.clients.scram-sha-512.sasl.jaas.config={jaas}",
                    "ssl.keystore.type=PEM",
                    f"ssl.keystore.location={self.home / 'server-keystore.pem'}",
                    "ssl.truststore.type=PEM",
                    f"ssl.truststore.location={self.pki.ca}",
                    "listener.name.clients.ssl.client.auth=required",
                    f"log.dirs={data}",
                    "num.partitions=4",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=4",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                ]
            )
            + "\n"
        )
        # Kafka's PEM keystore: the PKCS#8 key followed by the certificate chain, in one file.
        (self.home / "server-keystore.pem").write_text(
            self.pki.server_key.read_text() + self.pki.server_cert.read_text()
        )
        (self.home / "log4j.properties").write_text(LOG4J_PROPERTIES)
        if not (data / "meta.properties").exists():
            scram = []
            for user, password in self.users.items():
                for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
                    scram += ["--add-scram", f"{mechanism}=[name={user},password={password}]"]
            with open(self.log_path, "ab") as log:
                result = subprocess.run(
                    self._java("kafka.tools.StorageTool", heap="-Xmx256m")
                    + ["format", f"--cluster-id={uuid.uuid4().hex[:22]}", "-c", str(props), *scram],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            if result.returncode != 0:
                raise StackError(f"secured kafka storage format failed:\n{tail(self.log_path)}")

    def ready(self):
        from confluent_kafka.admin import AdminClient

        client = Settings(
            kafka_bootstrap=self.bootstrap,
            kafka_security_protocol="SASL_SSL",
            kafka_sasl_username=next(iter(self.users)),
            kafka_sasl_password=next(iter(self.users.values())),
            kafka_ssl_cafile=str(self.pki.ca),
            kafka_ssl_certfile=str(self.pki.client_cert),
            kafka_ssl_keyfile=str(self.pki.client_key),
            kafka_ssl_key_password=self.pki.client_key_password,
        )
        admin = AdminClient(confluent_config(client, log_level=0))
        return len(admin.list_topics(timeout=3).brokers) > 0


def start_secured_kafka(base: Settings, root: Path) -> SecuredKafka:
    pki = make_pki(root / "pki")
    username, password = "fraudgraph-worker", f"kafka-pw-{uuid.uuid4().hex[:12]}"
    s = base.replace(
        stack_dir=root / "kafka-stack", kafka_bootstrap=f"127.0.0.1:{free_port()}", kafka_controller_port=free_port()
    )
    broker = ScramTlsKafka(s, free_port(), pki, {username: password})
    broker.start()
    try:
        broker.wait_ready()
    except Exception:
        broker.stop()
        raise
    return SecuredKafka(broker, pki, username, password)
