"""One typed settings object for every part of the engine.

Values come, in increasing precedence, from the defaults below, an optional TOML file (path in
``FRAUDGRAPH_CONFIG``), and environment variables named ``FRAUDGRAPH_<FIELD>``. Any field can also
be read from a file named by ``FRAUDGRAPH_<FIELD>_FILE``, so secrets can come from mounted files
(Docker/Kubernetes secrets) rather than the environment.

The same names are used by the local stack (``fraudgraph stack``) and by ``docker-compose.yml``;
a test keeps the two in step.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

ENV_PREFIX = "FRAUDGRAPH_"
# Masked wherever settings are shown (repr, logs); a test checks every *_password field is listed.
SECRET_FIELDS = frozenset(
    {"neo4j_password", "pg_password", "pg_superuser_password", "kafka_sasl_password", "kafka_ssl_key_password"}
)


def _xdg(var: str, fallback: str) -> Path:
    return Path(os.environ.get(var) or Path.home() / fallback)


@dataclass(frozen=True)
class Settings:
    # Kafka
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_controller_port: int = 9093
    topic_replication_factor: int = 1  # for the topics the engine creates (3 on a production cluster)
    topic_prefix: str = "bank"  # Debezium topic.prefix: CDC topics are <prefix>.public.<table>
    # Kafka security (kafka_config.py turns these into every client's configuration). The local
    # stack's broker is PLAINTEXT; a production cluster typically wants SASL_SSL with SCRAM.
    kafka_security_protocol: str = "PLAINTEXT"  # PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"  # SCRAM-SHA-512 | SCRAM-SHA-256 | PLAIN
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = ""
    kafka_ssl_cafile: str = ""  # PEM CA bundle that signed the brokers' certificates (empty: the system's)
    kafka_ssl_certfile: str = ""  # PEM client certificate, for brokers that require TLS client authentication
    kafka_ssl_keyfile: str = ""  # its PEM private key
    kafka_ssl_key_password: str = ""  # when that key is encrypted
    kafka_ssl_check_hostname: bool = True  # verify the broker's certificate names the host connected to
    # Neo4j
    neo4j_uri: str = "bolt://127.0.0.1:7687"
    neo4j_http_port: int = 7474
    neo4j_user: str = "neo4j"
    neo4j_password: str = ""  # empty: the local Neo4j runs without authentication
    # PostgreSQL (the bank's source database)
    pg_host: str = "127.0.0.1"
    pg_port: int = 5432
    pg_database: str = "bank"
    pg_user: str = "fraudgraph"
    pg_password: str = "fraudgraph"
    pg_superuser: str = "postgres"
    pg_superuser_password: str = ""
    # Kafka Connect + Debezium
    connect_url: str = "http://127.0.0.1:8083"
    connector_name: str = "bank-postgres"
    # The CDC watchdog (stack/cdc_watchdog.py) heals a task silent this long (no Debezium heartbeat).
    cdc_stall_s: float = 30.0
    cdc_watchdog_port: int = 6067  # its /metrics (heartbeat age, actions), on worker_web_host
    # Worker
    worker_web_host: str = "127.0.0.1"
    worker_web_port: int = 6066
    worker_id: str = "fraudgraph"  # Faust app id: consumer group and changelog topic prefix
    # This process's stable name in the group (Kafka static membership): a restarted worker with the
    # same name takes its partitions back at once instead of waiting out the dead one's session.
    # Empty: the host name (one worker per host or pod); give each worker on one host its own.
    worker_instance: str = ""
    worker_session_timeout_s: float = 10.0  # how long a vanished worker's partitions wait for it
    # The CDC loop (streams/cdc_loop.py) takes what arrived, up to thousands of records per call,
    # waiting at most worker_batch_ms when nothing did; the transactions released together are
    # decided worker_batch_max at a time.
    worker_batch_max: int = 256
    worker_batch_ms: float = 5.0
    # Checkpoints (streams/cdc_loop.py): what was decided since the last one (scores, alerts, the
    # changed node states once each, the input offsets) is one Kafka transaction, committed every
    # worker_checkpoint_ms or worker_checkpoint_records records. Longer: fewer state writes and
    # commits, more to redo after a crash, and read-committed consumers see scores later.
    worker_checkpoint_ms: float = 100.0
    worker_checkpoint_records: int = 5_000
    # Event-time order across input partitions (streams/event_time.py): an event waits at most
    # worker_max_idle_ms for a caught-up partition that is silent to show a later one (Kafka
    # Streams' max.task.idle.ms); one that is behind or not fetched yet is waited for while it
    # delivers, and stops holding the others once it has delivered nothing for worker_max_wait_ms. A
    # partition holding more than worker_order_buffer undecided events stops being fetched until
    # the others catch up with it in event time.
    worker_max_idle_ms: float = 30.0
    worker_max_wait_ms: float = 10_000.0
    worker_order_buffer: int = 20_000
    # Online quality (streams/quality.py): matured cohorts, decisions made this long before the
    # newest one ("<newest age>-<oldest age>", units s/m/h/d, whole hours), chosen so that the bank's
    # fraud reports have mostly arrived: a recent cohort to watch and an older baseline to compare.
    quality_recent_cohort: str = "7d-14d"
    quality_baseline_cohort: str = "30d-60d"
    dead_letter_topic: str = "fraud.dead-letters"
    scores_topic: str = "fraud.scores"  # every transaction's TransactionScored, keyed by transaction id
    alerts_topic: str = "fraud.alerts"  # the review/block subset of scores
    score_requests_topic: str = "fraud.score-requests"
    score_replies_topic: str = "fraud.score-replies"
    mapping_file: str = ""  # empty: the reference schema's mapping (connectors/mappings/bank.toml)
    # Decision policy (thresholds, rule parameters and actions, allow/deny lists; streams/policy.py).
    # Empty: the shipped streams/default_policy.toml. The worker reloads a changed file without restart.
    policy_file: str = ""
    # How NUMERIC columns arrive when the CDC events carry no schema (Debezium's own option name).
    decimal_handling_mode: str = "precise"
    # Model serving (models/). The registry holds versioned checkpoints; the worker serves the one
    # named by its CURRENT file and swaps to a new one within model_reload_s, once loaded and warmed.
    model_dir: Path = field(default_factory=lambda: _xdg("XDG_DATA_HOME", ".local/share") / "fraudgraph" / "models")
    model_device: str = "auto"  # auto: cuda when available, else cpu
    model_max_batch: int = 512  # requests per inference call
    model_max_delay_ms: float = 2.0  # under load, how long a batch may wait to fill
    # torch's intra-op threads for CPU inference (0: torch's default, one per core). Serving batches
    # are tens to hundreds of small rows: extra threads only wait on each other and take the core
    # the event loop needs (on 2 cores, one thread makes the forward 5-8x faster).
    model_threads: int = 1
    model_reload_s: float = 5.0  # how often the registry's CURRENT version is checked
    # Recommendations (models/recommend.py): queries on recs_requests_topic, answers on recs_replies_topic,
    # served from their own registry (empty: <model_dir>/recs), reloaded like the fraud model.
    recs_requests_topic: str = "recs.requests"
    recs_replies_topic: str = "recs.replies"
    recs_model_dir: str = ""
    recs_max_risk: float = 0.2  # merchants at or above this fraud risk are never recommended
    recs_max_k: int = 100  # the largest k a request may ask for
    # The worker's local data directory (Faust's; the state itself is restored from Kafka).
    worker_data_dir: Path = field(
        default_factory=lambda: _xdg("XDG_STATE_HOME", ".local/state") / "fraudgraph" / "worker"
    )
    # Where the local stack keeps data, logs and pid files, and where fetched jars are cached.
    stack_dir: Path = field(default_factory=lambda: _xdg("XDG_STATE_HOME", ".local/state") / "fraudgraph" / "stack")
    cache_dir: Path = field(default_factory=lambda: _xdg("XDG_CACHE_HOME", ".cache") / "fraudgraph")
    # Prometheus of the local stack (`fraudgraph stack up`), on loopback, scraping the worker's /metrics.
    prometheus_port: int = 9090
    prometheus_scrape_interval_s: int = 5
    prometheus_targets: str = ""  # host:port,... to scrape; empty: the worker (worker_web_host:worker_web_port)

    # ---- derived values (not settings of their own) ----
    @property
    def kafka_port(self) -> int:
        return int(self.kafka_bootstrap.rsplit(":", 1)[1])

    @property
    def neo4j_bolt_port(self) -> int:
        return int(self.neo4j_uri.rsplit(":", 1)[1])

    @property
    def neo4j_auth(self) -> tuple[str, str] | None:
        """Basic auth for the Neo4j driver; None (no auth) when no password is set, as the local stack's default."""
        return (self.neo4j_user, self.neo4j_password) if self.neo4j_password else None

    @property
    def connect_port(self) -> int:
        return int(self.connect_url.rstrip("/").rsplit(":", 1)[1])

    def recs_registry_dir(self) -> Path:
        return Path(self.recs_model_dir).expanduser() if self.recs_model_dir else self.model_dir / "recs"

    def pg_dsn(self, superuser: bool = False) -> str:
        user, password = (
            (self.pg_superuser, self.pg_superuser_password) if superuser else (self.pg_user, self.pg_password)
        )
        # A conninfo string with quoted values, so a password with spaces or quotes stays intact.
        parts = {"host": self.pg_host, "port": self.pg_port, "dbname": self.pg_database, "user": user}
        if password:
            parts["password"] = password
        return " ".join(f"{k}='{_conninfo_quote(str(v))}'" for k, v in parts.items())

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict with secrets masked: the only form that may be logged."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = "***" if f.name in SECRET_FIELDS and value else str(value)
        return out

    def __repr__(self) -> str:  # never let a secret reach a log through repr()
        return f"Settings({self.redacted()})"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def environ(self) -> dict[str, str]:
        """This process's environment with every setting spelled out: a child process (the graph
        sink, the demo's worker) started with it loads exactly these settings, however they were
        given here (defaults, a config file, variables, overrides)."""
        env = dict(os.environ)
        for f in fields(self):
            env[ENV_PREFIX + f.name.upper()] = str(getattr(self, f.name))
        return env


def _conninfo_quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _read_secret_file(var: str, path: str) -> str:
    """A value from a mounted file (Docker/Kubernetes secrets). Only the line ending an editor or
    ``echo`` adds is dropped: other whitespace may be part of a password."""
    try:
        return Path(path).read_text().rstrip("\r\n")
    except OSError as err:
        raise ValueError(f"{var}: cannot read {path}: {err.strerror}") from None


def _coerce(name: str, raw: Any, default: Any) -> Any:
    if isinstance(default, bool):
        if isinstance(raw, bool):
            return raw
        return str(raw).strip().lower() in {"1", "true", "yes", "on"}
    if isinstance(default, int):
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise ValueError(f"setting {name} must be an integer, got {raw!r}") from None
    if isinstance(default, float):
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise ValueError(f"setting {name} must be a number, got {raw!r}") from None
    if isinstance(default, Path):
        return Path(str(raw)).expanduser()
    return str(raw)


def load_settings(env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build Settings from defaults, the optional TOML file, the environment, then ``overrides``."""
    env = os.environ if env is None else env
    defaults = Settings()
    values: dict[str, Any] = {}
    config_file = env.get(ENV_PREFIX + "CONFIG")
    if config_file:
        with open(config_file, "rb") as fh:
            data = tomllib.load(fh)
        unknown = set(data) - {f.name for f in fields(Settings)}
        if unknown:
            raise ValueError(f"unknown settings in {config_file}: {sorted(unknown)}")
        values.update(data)
    for f in fields(Settings):
        key = ENV_PREFIX + f.name.upper()
        if key in env:
            values[f.name] = env[key]
        elif key + "_FILE" in env:
            values[f.name] = _read_secret_file(key + "_FILE", env[key + "_FILE"])
    values.update(overrides)
    return Settings(**{k: _coerce(k, v, getattr(defaults, k)) for k, v in values.items()})
