from pathlib import Path

import pytest

from fraudgraph.settings import Settings, load_settings


def test_defaults_match_local_stack_ports():
    s = load_settings(env={})
    assert (s.kafka_port, s.neo4j_bolt_port, s.pg_port, s.connect_port) == (9092, 7687, 5432, 8083)
    assert s.topic_prefix == "bank"


def test_environment_overrides_file_overrides_defaults(tmp_path: Path):
    cfg = tmp_path / "fraudgraph.toml"
    cfg.write_text('topic_prefix = "corebank"\npg_port = 6543\nkafka_bootstrap = "file:1"\n')
    s = load_settings(env={"FRAUDGRAPH_CONFIG": str(cfg), "FRAUDGRAPH_KAFKA_BOOTSTRAP": "broker:9094"})
    assert s.topic_prefix == "corebank" and s.pg_port == 6543 and s.kafka_bootstrap == "broker:9094"


def test_unknown_file_setting_is_rejected(tmp_path: Path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("kafka_bootstrapp = 'typo'\n")
    with pytest.raises(ValueError, match="kafka_bootstrapp"):
        load_settings(env={"FRAUDGRAPH_CONFIG": str(cfg)})


def test_bad_integer_names_the_setting():
    with pytest.raises(ValueError, match="pg_port"):
        load_settings(env={"FRAUDGRAPH_PG_PORT": "five"})


def test_secret_from_file_and_never_in_repr(tmp_path: Path):
    secret = tmp_path / "neo4j_password"
    secret.write_text("s3cr3t-value\n")
    s = load_settings(env={"FRAUDGRAPH_NEO4J_PASSWORD_FILE": str(secret)})
    assert s.neo4j_password == "s3cr3t-value"
    assert "s3cr3t-value" not in repr(s) and "s3cr3t-value" not in str(s.redacted())


def test_pg_dsn_quotes_awkward_passwords():
    import psycopg.conninfo

    s = Settings(pg_password="it's a \\ pass")
    assert psycopg.conninfo.conninfo_to_dict(s.pg_dsn())["password"] == "it's a \\ pass"


def test_float_settings_are_parsed_as_numbers():
    s = load_settings({"FRAUDGRAPH_MODEL_MAX_DELAY_MS": "0.5", "FRAUDGRAPH_WORKER_SESSION_TIMEOUT_S": "30"})
    assert s.model_max_delay_ms == 0.5 and s.worker_session_timeout_s == 30.0
    with pytest.raises(ValueError, match="model_reload_s must be a number"):
        load_settings({"FRAUDGRAPH_MODEL_RELOAD_S": "soon"})
