"""Security configuration: Kafka SASL/SCRAM and TLS for every client from one set of settings,
Neo4j authentication, secrets from files, and secrets masked wherever settings are shown."""

from __future__ import annotations

import ast
import io
import logging
import ssl
from dataclasses import fields
from pathlib import Path

import faust
import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from fraudgraph.kafka_config import (
    KafkaSecurityError,
    aiokafka_options,
    check,
    confluent_config,
    faust_credentials,
    ssl_context,
)
from fraudgraph.settings import SECRET_FIELDS, Settings, load_settings
from fraudgraph.stack.neo4j_server import write_config

from support.pki import make_pki

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cr3t-Kafka-pw-4242"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def sasl(mechanism="SCRAM-SHA-512", protocol="SASL_SSL", **kw) -> Settings:
    return Settings(
        kafka_bootstrap="broker-1:9094,broker-2:9094",
        kafka_security_protocol=protocol,
        kafka_sasl_mechanism=mechanism,
        kafka_sasl_username="fraudgraph",
        kafka_sasl_password=SECRET,
        **kw,
    )


def faust_view(settings: Settings) -> dict:
    """What Faust's aiokafka driver will actually pass to its consumer and producer."""
    return dict(credentials_to_aiokafka_auth(faust_credentials(settings)))


def test_plaintext_by_default_and_sasl_settings_are_not_applied_there():
    s = Settings(kafka_sasl_username="fraudgraph", kafka_sasl_password=SECRET, kafka_ssl_cafile="/nonexistent")
    assert confluent_config(s) == {"bootstrap.servers": s.kafka_bootstrap}
    assert aiokafka_options(s) == {"bootstrap_servers": s.kafka_bootstrap, "security_protocol": "PLAINTEXT"}
    assert faust_credentials(s) is None and ssl_context(s) is None
    assert faust_view(s) == {"security_protocol": "PLAINTEXT"}


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_scram_over_tls_is_the_same_for_every_client(mechanism, pki):
    s = sasl(mechanism, kafka_ssl_cafile=str(pki.ca))
    assert confluent_config(s, **{"group.id": "g"}) == {
        "bootstrap.servers": "broker-1:9094,broker-2:9094",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": mechanism,
        "sasl.username": "fraudgraph",
        "sasl.password": SECRET,
        "ssl.ca.location": str(pki.ca),
        "ssl.endpoint.identification.algorithm": "https",
        "group.id": "g",
    }
    aio = aiokafka_options(s)
    context = aio.pop("ssl_context")
    assert aio == {
        "bootstrap_servers": "broker-1:9094,broker-2:9094",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "fraudgraph",
        "sasl_plain_password": SECRET,
    }
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert len(context.get_ca_certs()) == 1  # exactly the configured CA, not the system bundle
    via_faust = faust_view(s)
    assert via_faust.pop("ssl_context").get_ca_certs() == context.get_ca_certs()
    assert via_faust == {k: v for k, v in aio.items() if k != "bootstrap_servers"}
    assert SECRET not in repr(faust_credentials(s))


def test_sasl_without_tls(pki):
    s = sasl("SCRAM-SHA-256", protocol="SASL_PLAINTEXT", kafka_ssl_cafile=str(pki.ca))
    config = confluent_config(s)
    assert config["security.protocol"] == "SASL_PLAINTEXT" and not any(k.startswith("ssl.") for k in config)
    assert "ssl_context" not in aiokafka_options(s)
    assert faust_view(s) == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "fraudgraph",
        "sasl_plain_password": SECRET,
        "ssl_context": None,
    }


def test_tls_client_certificate_with_an_encrypted_key(pki):
    s = Settings(
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=str(pki.ca),
        kafka_ssl_certfile=str(pki.client_cert),
        kafka_ssl_keyfile=str(pki.client_key),
        kafka_ssl_key_password=pki.client_key_password,
        kafka_ssl_check_hostname=False,
    )
    config = confluent_config(s)
    assert config["security.protocol"] == "SSL" and "sasl.username" not in config
    assert (config["ssl.certificate.location"], config["ssl.key.location"], config["ssl.key.password"]) == (
        str(pki.client_cert),
        str(pki.client_key),
        pki.client_key_password,
    )
    assert config["ssl.endpoint.identification.algorithm"] == "none"
    assert ssl_context(s).check_hostname is False  # the key was decrypted and loaded with its password
    assert isinstance(faust_credentials(s), faust.SSLCredentials)
    assert faust_view(s)["security_protocol"] == "SSL"
    with pytest.raises(ssl.SSLError):
        ssl_context(s.replace(kafka_ssl_key_password="wrong"))


@pytest.mark.parametrize(
    "changes, named",
    [
        ({"kafka_security_protocol": "SASL_TLS"}, "kafka_security_protocol"),
        ({"kafka_sasl_mechanism": "GSSAPI"}, "kafka_sasl_mechanism"),
        ({"kafka_sasl_password": ""}, "kafka_sasl_password"),
        ({"kafka_sasl_username": ""}, "kafka_sasl_username"),
        ({"kafka_ssl_cafile": "/no/such/ca.pem"}, "kafka_ssl_cafile: no such file /no/such/ca.pem"),
        ({"kafka_ssl_keyfile": __file__}, "kafka_ssl_keyfile is set without kafka_ssl_certfile"),
    ],
)
def test_misconfiguration_names_the_setting(changes, named):
    s = sasl().replace(**changes)
    for build in (check, confluent_config, aiokafka_options, faust_credentials):
        with pytest.raises(KafkaSecurityError, match=named.replace(".", r"\.")) as err:
            build(s)
        assert SECRET not in str(err.value)


def test_kafka_security_from_environment_and_secret_files(tmp_path):
    (tmp_path / "kafka_pw").write_text(f"  {SECRET} \n")  # as `echo` writes it; inner spaces are the password's
    (tmp_path / "key_pw").write_text("key-pass")
    s = load_settings(
        env={
            "FRAUDGRAPH_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "FRAUDGRAPH_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
            "FRAUDGRAPH_KAFKA_SASL_USERNAME": "fraudgraph",
            "FRAUDGRAPH_KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "kafka_pw"),
            "FRAUDGRAPH_KAFKA_SSL_KEY_PASSWORD_FILE": str(tmp_path / "key_pw"),
            "FRAUDGRAPH_KAFKA_SSL_CHECK_HOSTNAME": "false",
        }
    )
    assert s.kafka_sasl_password == f"  {SECRET} " and s.kafka_ssl_key_password == "key-pass"
    assert s.kafka_ssl_check_hostname is False and s.kafka_sasl_mechanism == "SCRAM-SHA-256"
    # The variable itself wins over its _FILE twin.
    assert (
        load_settings(
            env={"FRAUDGRAPH_NEO4J_PASSWORD": "direct", "FRAUDGRAPH_NEO4J_PASSWORD_FILE": str(tmp_path / "kafka_pw")}
        ).neo4j_password
        == "direct"
    )


def test_an_unreadable_secret_file_names_the_variable(tmp_path):
    with pytest.raises(ValueError, match="FRAUDGRAPH_KAFKA_SASL_PASSWORD_FILE: cannot read .*missing"):
        load_settings(env={"FRAUDGRAPH_KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "missing")})


def test_every_password_setting_is_a_secret():
    names = {f.name for f in fields(Settings)}
    assert SECRET_FIELDS <= names
    assert {n for n in names if any(w in n for w in ("password", "secret", "token"))} <= SECRET_FIELDS


def test_secrets_are_masked_in_repr_str_and_logs():
    secrets = {name: f"secret-{name}-{i}-xyzzy" for i, name in enumerate(sorted(SECRET_FIELDS))}
    s = Settings(**secrets, kafka_sasl_username="fraudgraph")
    stream = io.StringIO()
    logger = logging.getLogger("test_security_settings")
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    try:
        logger.warning("settings %s / %r / %s", s, s, s.redacted())
        logger.warning(f"settings {s!s} {s!r}")
    finally:
        logger.removeHandler(handler)
    shown = [repr(s), str(s), f"{s}", "%s" % (s,), str(s.redacted()), stream.getvalue()]  # noqa: UP031 - printf too
    for text in shown:
        for value in secrets.values():
            assert value not in text
    assert s.redacted()["kafka_sasl_password"] == "***" and s.redacted()["kafka_sasl_username"] == "fraudgraph"
    assert Settings().redacted()["neo4j_password"] == ""  # an unset secret shows as unset, not as "***"


# ---- every Kafka client goes through kafka_config ----

# The local stack's own broker readiness probe and Connect's properties: that broker is PLAINTEXT by
# construction (stack/services.py); the security settings describe the cluster the engine uses.
LOCAL_STACK_ONLY = {"stack/services.py"}


def _package_sources():
    skip = {"tests", "benchmarks", ".hypothesis", ".git", ".venv", "build"}
    return [p for p in ROOT.rglob("*.py") if not skip & set(p.relative_to(ROOT).parts)]


def test_no_kafka_client_is_configured_outside_kafka_config():
    offenders = []
    for path in _package_sources():
        rel = str(path.relative_to(ROOT))
        if rel in LOCAL_STACK_ONLY | {"kafka_config.py"}:
            continue
        tree = ast.parse(path.read_text(), rel)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value == "bootstrap.servers":
                offenders.append(
                    f"{rel}:{node.lineno}: confluent-kafka config built by hand (use kafka_config.confluent_config)"
                )
            if isinstance(node, ast.keyword) and node.arg == "bootstrap_servers":
                offenders.append(
                    f"{rel}:{node.value.lineno}: aiokafka client built by hand (use kafka_config.aiokafka_options)"
                )
            if (
                isinstance(node, ast.Call)
                and {"broker"} <= {k.arg for k in node.keywords}
                and "broker_credentials" not in {k.arg for k in node.keywords}
            ):
                offenders.append(
                    f"{rel}:{node.lineno}: Faust app without broker_credentials (use kafka_config.faust_credentials)"
                )
    assert not offenders, "\n".join(offenders)


# ---- Neo4j authentication ----


def test_neo4j_auth_follows_the_password():
    assert Settings().neo4j_auth is None
    assert Settings(neo4j_user="svc", neo4j_password="pw-123456").neo4j_auth == ("svc", "pw-123456")


def test_local_neo4j_config_turns_auth_on_with_a_password(tmp_path):
    write_config(Settings(), tmp_path / "open")
    assert "dbms.security.auth_enabled=false" in (tmp_path / "open" / "conf" / "neo4j.conf").read_text().splitlines()
    # A store that already exists keeps its password, so no initial password is set (and no Java runs here).
    (tmp_path / "secured" / "data" / "databases").mkdir(parents=True)
    write_config(Settings(neo4j_password="pw-123456"), tmp_path / "secured")
    conf = (tmp_path / "secured" / "conf" / "neo4j.conf").read_text()
    assert "dbms.security.auth_enabled=true" in conf.splitlines() and "pw-123456" not in conf


def test_the_worker_app_takes_its_credentials_and_binds_where_configured(pki, tmp_path):
    from fraudgraph.streams.app import create_app

    s = sasl(kafka_ssl_cafile=str(pki.ca)).replace(worker_data_dir=tmp_path / "data", model_dir=tmp_path / "models")
    app = create_app(s)
    creds = app.conf.broker_credentials
    assert isinstance(creds, faust.SASLCredentials) and creds.username == "fraudgraph"
    assert (creds.protocol.value, creds.mechanism.value) == ("SASL_SSL", "SCRAM-SHA-512")
    # Faust would listen on 0.0.0.0 unless told: /metrics stays on the configured (loopback) address.
    assert app.conf.web_bind == s.worker_web_host == "127.0.0.1"
