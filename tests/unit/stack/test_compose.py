"""docker-compose.yml and the local stack are two paths to the same system: keep them in step."""

from dataclasses import fields
from pathlib import Path

import yaml

from fraudgraph.settings import ENV_PREFIX, Settings
from fraudgraph.stack.local import services
from fraudgraph.stack.source_db import PUBLICATION

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
DEFAULTS = Settings()


def host_ports(service: str) -> set[int]:
    return {int(str(p).split(":")[-2]) for p in COMPOSE[service].get("ports", [])}


def test_published_ports_listen_on_loopback_only_like_the_local_stack():
    """Neo4j without a password, PostgreSQL with a well-known one: published on every interface,
    anyone on the network could read and write the graph and the bank's tables."""
    for name, service in COMPOSE.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_every_local_service_is_in_compose_with_the_same_host_ports():
    for name, service in services(DEFAULTS).items():
        assert name in COMPOSE, f"{name} is in the local stack but not in docker-compose.yml"
        assert set(service.ports()) - {DEFAULTS.kafka_controller_port} <= host_ports(name), name


def test_compose_adds_engine_prometheus_and_grafana():
    assert {"engine", "prometheus", "grafana", "connector-init"} <= set(COMPOSE)
    assert host_ports("engine") == {DEFAULTS.worker_web_port}


def test_engine_settings_are_real_settings_with_the_local_defaults_where_not_networked():
    env = COMPOSE["engine"]["environment"]
    names = {f.name for f in fields(Settings)}
    # Container hostnames differ, and the engine listens on all interfaces inside its container.
    networked = {"kafka_bootstrap", "neo4j_uri", "pg_host", "connect_url", "worker_web_host"}
    for key, value in env.items():
        assert key.startswith(ENV_PREFIX), key
        name = key[len(ENV_PREFIX) :].lower()
        assert name in names, f"{key} is not a setting"
        if name not in networked:
            assert str(value) == str(getattr(DEFAULTS, name)), key
    assert COMPOSE["connector-init"]["environment"] == env


def test_source_database_matches_settings_and_publication():
    env = COMPOSE["postgres"]["environment"]
    assert (env["POSTGRES_DB"], env["POSTGRES_USER"], env["POSTGRES_PASSWORD"]) == (
        DEFAULTS.pg_database,
        DEFAULTS.pg_user,
        DEFAULTS.pg_password,
    )
    assert "wal_level=logical" in COMPOSE["postgres"]["command"]
    volumes = " ".join(COMPOSE["postgres"]["volumes"])
    assert "./connectors/bank_schema.sql" in volumes
    publication_sql = (ROOT / "stack/docker/02-publication.sql").read_text()
    assert f"CREATE PUBLICATION {PUBLICATION} FOR ALL TABLES" in publication_sql


def test_versions_match_the_local_jars():
    poms = {c: (ROOT / "stack/maven" / c / "pom.xml").read_text() for c in ("kafka", "debezium", "neo4j")}
    kafka_version = COMPOSE["kafka"]["image"].split(":")[1]
    assert f"<version>{kafka_version}</version>" in poms["kafka"]
    debezium_version = COMPOSE["connect"]["image"].split(":")[1]
    assert f"<version>{debezium_version}</version>" in poms["debezium"]
    neo4j_minor = COMPOSE["neo4j"]["image"].split(":")[1].split("-")[0]
    assert f"{neo4j_minor}." in poms["neo4j"]


def test_connect_storage_topics_match_local_connect(tmp_path):
    from fraudgraph.stack.services import Connect

    connect = Connect(DEFAULTS.replace(stack_dir=tmp_path))
    connect.home.mkdir(parents=True)
    connect.prepare()
    props = dict(line.split("=", 1) for line in (connect.home / "connect.properties").read_text().splitlines())
    env = COMPOSE["connect"]["environment"]
    assert env["GROUP_ID"] == props["group.id"]
    for topic in ("config", "offset", "status"):
        assert env[f"{topic.upper()}_STORAGE_TOPIC"] == props[f"{topic}.storage.topic"]


def test_prometheus_and_grafana_are_provisioned_with_the_observability_files():
    import json

    prom_volumes = " ".join(COMPOSE["prometheus"]["volumes"])
    assert "./stack/observability/alerts.yml:/etc/prometheus/alerts.yml" in prom_volumes
    prom = yaml.safe_load((ROOT / "stack/docker/prometheus.yml").read_text())
    assert prom["rule_files"] == ["/etc/prometheus/alerts.yml"]
    from fraudgraph.stack.prometheus_server import JOB, WATCHDOG_JOB, config

    jobs = [c["job_name"] for c in prom["scrape_configs"]]
    assert jobs == [JOB, WATCHDOG_JOB]  # dashboards and alerts filter on them
    assert jobs == [c["job_name"] for c in config(DEFAULTS)["scrape_configs"]]  # as the local stack's
    assert prom["scrape_configs"][1]["static_configs"][0]["targets"] == [f"cdc-watchdog:{DEFAULTS.cdc_watchdog_port}"]

    grafana_volumes = " ".join(COMPOSE["grafana"]["volumes"])
    assert "./stack/observability/dashboards:/var/lib/grafana/dashboards" in grafana_volumes
    provider = yaml.safe_load((ROOT / "stack/docker/grafana/provisioning/dashboards/fraudgraph.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    source = yaml.safe_load((ROOT / "stack/docker/grafana/provisioning/datasources/prometheus.yml").read_text())
    uid = source["datasources"][0]["uid"]
    boards = list((ROOT / "stack/observability/dashboards").glob("*.json"))
    assert len(boards) >= 3
    for board in boards:
        for panel in json.loads(board.read_text())["panels"]:
            assert panel["datasource"]["uid"] == uid and panel["targets"], (board.name, panel["title"])


def test_local_prometheus_config_comes_from_settings(tmp_path):
    from fraudgraph.stack.prometheus_server import RULES_FILE, config
    from fraudgraph.stack.services import Prometheus

    settings = DEFAULTS.replace(stack_dir=tmp_path, worker_web_host="0.0.0.0", prometheus_scrape_interval_s=2)
    cfg = config(settings)
    assert cfg["scrape_configs"][0]["static_configs"][0]["targets"] == [f"127.0.0.1:{DEFAULTS.worker_web_port}"]
    assert cfg["global"]["scrape_interval"] == "2s" and cfg["rule_files"] == [str(RULES_FILE)]
    assert config(settings.replace(prometheus_targets="a:1, b:2"))["scrape_configs"][0]["static_configs"][0][
        "targets"
    ] == ["a:1", "b:2"]
    assert cfg["scrape_configs"][1]["static_configs"][0]["targets"] == [f"127.0.0.1:{DEFAULTS.cdc_watchdog_port}"]
    service = Prometheus(settings)
    assert service.ports() == [DEFAULTS.prometheus_port]
    assert f"--web.listen-address=127.0.0.1:{DEFAULTS.prometheus_port}" in service.command()
