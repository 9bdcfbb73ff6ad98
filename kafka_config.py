"""Settings -> the configuration of every Kafka client the engine creates, in one place.

Three client libraries talk to Kafka here, and each spells security differently: confluent-kafka
(topic creation, the simulator, replays, the demo) takes librdkafka properties, aiokafka (the
graph sink) takes keyword arguments and an ``ssl.SSLContext``, and Faust (the worker, on aiokafka)
takes a credentials object. Building all three from the same ``kafka_*`` settings here means a
cluster with SASL/SCRAM or TLS is configured once, and no client can quietly connect without it
(``tests/unit/test_security_settings.py`` fails on a Kafka client built anywhere else).

Security settings that the chosen protocol does not use are left out rather than passed on: a
SASL password never reaches a PLAINTEXT connection, where it would mean nothing.
"""

from __future__ import annotations

import os
import ssl
from typing import Any

from fraudgraph.settings import Settings

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
# SCRAM keeps the password off the wire; PLAIN sends it, so only over SASL_SSL is it reasonable.
MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")


class KafkaSecurityError(ValueError):
    """The Kafka security settings do not describe a usable configuration."""


def uses_sasl(settings: Settings) -> bool:
    return settings.kafka_security_protocol.upper().startswith("SASL_")


def uses_tls(settings: Settings) -> bool:
    return settings.kafka_security_protocol.upper() in ("SSL", "SASL_SSL")


def check(settings: Settings) -> None:
    """Raise ``KafkaSecurityError`` naming the settings at fault; called by every builder below,
    so a misconfiguration fails at start-up with the setting's name, not later as a broker timeout."""
    problems = []
    protocol = settings.kafka_security_protocol.upper()
    if protocol not in PROTOCOLS:
        problems.append(
            f"kafka_security_protocol {settings.kafka_security_protocol!r} is not one of {', '.join(PROTOCOLS)}"
        )
    if uses_sasl(settings):
        if settings.kafka_sasl_mechanism.upper() not in MECHANISMS:
            problems.append(
                f"kafka_sasl_mechanism {settings.kafka_sasl_mechanism!r} is not one of {', '.join(MECHANISMS)}"
            )
        if not settings.kafka_sasl_username or not settings.kafka_sasl_password:
            problems.append(f"kafka_sasl_username and kafka_sasl_password are required with {protocol}")
    if uses_tls(settings):
        for name in ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile"):
            path = getattr(settings, name)
            if path and not os.path.isfile(path):
                problems.append(f"{name}: no such file {path}")
        if settings.kafka_ssl_keyfile and not settings.kafka_ssl_certfile:
            problems.append("kafka_ssl_keyfile is set without kafka_ssl_certfile")
    if problems:
        raise KafkaSecurityError("; ".join(problems))


def confluent_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """librdkafka properties for a confluent-kafka Producer, Consumer or AdminClient, plus ``extra``
    (pass dotted names as ``**{"group.id": ...}``)."""
    check(settings)
    config: dict[str, Any] = {"bootstrap.servers": settings.kafka_bootstrap}
    protocol = settings.kafka_security_protocol.upper()
    if protocol != "PLAINTEXT":
        config["security.protocol"] = protocol
    if uses_sasl(settings):
        config["sasl.mechanism"] = settings.kafka_sasl_mechanism.upper()
        config["sasl.username"] = settings.kafka_sasl_username
        config["sasl.password"] = settings.kafka_sasl_password
    if uses_tls(settings):
        if settings.kafka_ssl_cafile:
            config["ssl.ca.location"] = settings.kafka_ssl_cafile
        if settings.kafka_ssl_certfile:
            config["ssl.certificate.location"] = settings.kafka_ssl_certfile
            config["ssl.key.location"] = settings.kafka_ssl_keyfile or settings.kafka_ssl_certfile
        if settings.kafka_ssl_key_password:
            config["ssl.key.password"] = settings.kafka_ssl_key_password
        config["ssl.endpoint.identification.algorithm"] = "https" if settings.kafka_ssl_check_hostname else "none"
    config.update(extra)
    return config


def is_fatal(err: Any) -> bool:
    """Whether a librdkafka error ends its client. A fatal error reaches callbacks and consumed
    messages as code ``_FATAL``, on an object whose ``fatal()`` is false."""
    from confluent_kafka import KafkaError

    return bool(err.fatal()) or err.code() == KafkaError._FATAL


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context for aiokafka and Faust; None unless the protocol is SSL or SASL_SSL."""
    check(settings)
    if not uses_tls(settings):
        return None
    context = ssl.create_default_context(cafile=settings.kafka_ssl_cafile or None)
    if settings.kafka_ssl_certfile:
        context.load_cert_chain(
            settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile or None, settings.kafka_ssl_key_password or None
        )
    context.check_hostname = settings.kafka_ssl_check_hostname
    return context


def aiokafka_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for an aiokafka client: the bootstrap servers and security."""
    check(settings)
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "security_protocol": settings.kafka_security_protocol.upper(),
    }
    if uses_sasl(settings):
        # aiokafka takes SCRAM's user and password under the PLAIN-named arguments too.
        options.update(
            sasl_mechanism=settings.kafka_sasl_mechanism.upper(),
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=settings.kafka_sasl_password,
        )
    if uses_tls(settings):
        options["ssl_context"] = ssl_context(settings)
    return options


def faust_credentials(settings: Settings):
    """``broker_credentials`` for a Faust app (None: PLAINTEXT). Faust hands them to aiokafka for its
    consumer, producer and topic creation alike."""
    import faust

    check(settings)
    context = ssl_context(settings)
    if uses_sasl(settings):
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password,
            ssl_context=context,
            mechanism=settings.kafka_sasl_mechanism.upper(),
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None
