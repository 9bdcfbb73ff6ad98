"""Prepare the bank's source database for CDC: role, database, reference schema, publication.

The connector's role gets LOGIN and REPLICATION only; the publication is created here by the
superuser (``FOR ALL TABLES`` needs one) so Debezium runs with ``publication.autocreate.mode =
disabled`` and never needs superuser rights. Every step checks before it acts, so it is safe to run
on every ``stack up``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg
from psycopg import sql

from fraudgraph.settings import Settings

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "connectors" / "bank_schema.sql"
PUBLICATION = "fraudgraph"


def bootstrap(settings: Settings, superuser_conninfo: Callable[[str], str]) -> None:
    with psycopg.connect(superuser_conninfo("postgres"), autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [settings.pg_user]).fetchone():
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN REPLICATION PASSWORD {}").format(
                    sql.Identifier(settings.pg_user), sql.Literal(settings.pg_password)
                )
            )
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [settings.pg_database]).fetchone():
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(settings.pg_database), sql.Identifier(settings.pg_user)
                )
            )
    with psycopg.connect(settings.pg_dsn()) as conn:
        if conn.execute("SELECT to_regclass('public.transactions')").fetchone() == (None,):  # no such table yet
            conn.execute(SCHEMA_FILE.read_text())
    with psycopg.connect(superuser_conninfo(settings.pg_database), autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", [PUBLICATION]).fetchone():
            conn.execute(sql.SQL("CREATE PUBLICATION {} FOR ALL TABLES").format(sql.Identifier(PUBLICATION)))
