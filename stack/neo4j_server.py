"""Neo4j 5.26 Community from Maven Central jars: its configuration and command line.

``org.neo4j.server.CommunityEntryPoint`` runs the server in the foreground in one JVM (the
``neo4j console`` launcher would fork a second JVM and expects the tarball layout). Heap flags go
on the java command line: in this mode ``server.memory.heap.*`` in the conf is ignored.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from fraudgraph.settings import Settings
from fraudgraph.stack import jars
from fraudgraph.stack.supervisor import StackError

HEAP = "1g"
PAGECACHE = "512m"

JVM_FLAGS = [
    "-XX:+UseG1GC",
    # Out of heap, Neo4j keeps Bolt sockets open and never answers, so a client waits forever.
    # Dead, clients see it at once and `fraudgraph stack up` starts it again.
    "-XX:+ExitOnOutOfMemoryError",
    "-XX:-OmitStackTraceInFastThrow",
    "-XX:+UnlockExperimentalVMOptions",
    "-XX:+TrustFinalNonStaticFields",
    "-XX:+DisableExplicitGC",
    "-Djdk.nio.maxCachedBufferSize=1024",
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Dlog4j2.disable.jmx=true",
    # Without these the page cache falls back to a slower path.
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--enable-native-access=ALL-UNNAMED",
]


def write_config(settings: Settings, home: Path) -> None:
    conf = home / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    bolt_port, http_port = settings.neo4j_bolt_port, settings.neo4j_http_port
    auth = bool(settings.neo4j_password)
    (conf / "neo4j.conf").write_text(
        "\n".join(
            [
                "server.default_listen_address=127.0.0.1",
                "server.default_advertised_address=127.0.0.1",
                "server.bolt.enabled=true",
                f"server.bolt.listen_address=127.0.0.1:{bolt_port}",
                "server.http.enabled=true",
                f"server.http.listen_address=127.0.0.1:{http_port}",
                "server.https.enabled=false",
                "server.directories.data=data",
                "server.directories.logs=logs",
                "server.directories.run=run",
                "server.directories.plugins=plugins",
                "server.directories.import=import",
                f"server.memory.pagecache.size={PAGECACHE}",
                "dbms.usage_report.enabled=false",
                f"dbms.security.auth_enabled={'true' if auth else 'false'}",
                # Shuts Bolt down in ~0.5 s instead of ~11 s on SIGTERM.
                "internal.dbms.bolt.netty_server_shutdown_quiet_period=0",
            ]
        )
        + "\n"
    )
    if auth and not (home / "data" / "databases").exists():
        # Only a store that was never started takes an initial password.
        env = dict(os.environ, NEO4J_HOME=str(home), NEO4J_CONF=str(conf))
        result = subprocess.run(
            [
                _java_cp(settings)[0],
                "-Xmx256m",
                *_java_cp(settings)[1:],
                "org.neo4j.cli.AdminTool",
                "dbms",
                "set-initial-password",
                settings.neo4j_password,
            ],
            env=env,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            # The output may echo the password: do not include it.
            raise StackError(f"neo4j: setting the initial password failed (exit {result.returncode})")


def _java_cp(settings: Settings) -> list[str]:

    return [jars.java(), "-cp", str(jars.jar_dir(settings.cache_dir, "neo4j") / "*")]


def command(settings: Settings, home: Path) -> list[str]:
    java_exe, *classpath = _java_cp(settings)
    return [
        java_exe,
        "-Xms512m",
        f"-Xmx{HEAP}",
        *JVM_FLAGS,
        *classpath,
        "org.neo4j.server.CommunityEntryPoint",
        f"--home-dir={home}",
        f"--config-dir={home / 'conf'}",
        "--console-mode",
    ]
