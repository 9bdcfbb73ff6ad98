"""Fetch the Java servers of the local stack from Maven Central, cached outside the clone.

Each component has a ``maven/<component>/pom.xml`` listing exactly what it needs;
``mvn dependency:copy-dependencies`` resolves it into ``<cache_dir>/jars/<component>``. A fetch
writes into a temporary folder and renames it into place, and stamps it with the pom's hash, so a
half-finished download is never used and an edited pom refetches by itself.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

from fraudgraph.stack.supervisor import StackError

POMS = Path(__file__).parent / "maven"

# Where each component's jars go, relative to <cache_dir>/jars. Debezium lives in its own folder
# under Connect's plugin.path so Connect loads it in an isolated class loader.
COMPONENTS = {
    "kafka": "kafka",
    "connect": "connect",
    "debezium": "connect-plugins/debezium-postgres",
    "neo4j": "neo4j",
}


def jar_dir(cache_dir: Path, component: str) -> Path:
    return cache_dir / "jars" / COMPONENTS[component]


def plugin_path(cache_dir: Path) -> Path:
    return cache_dir / "jars" / "connect-plugins"


def _pom_hash(component: str) -> str:
    return hashlib.sha256((POMS / component / "pom.xml").read_bytes()).hexdigest()


def fetched(cache_dir: Path, component: str) -> bool:
    stamp = jar_dir(cache_dir, component) / ".pom.sha256"
    return stamp.is_file() and stamp.read_text().strip() == _pom_hash(component)


def fetch(cache_dir: Path, component: str, log=print) -> Path:
    """Make sure ``component``'s jars are in the cache; return their folder."""
    target = jar_dir(cache_dir, component)
    if fetched(cache_dir, component):
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError("Maven (mvn) is needed to fetch the stack's jars: apt-get install maven")
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    log(f"fetching {component} jars from Maven Central into {target} ...")
    started = time.monotonic()
    cmd = [
        mvn,
        "-B",
        "-q",
        "-f",
        str(POMS / component / "pom.xml"),
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={staging}",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise StackError(
            f"fetching {component} jars failed (mvn exit {result.returncode}):\n{result.stdout[-3000:]}{result.stderr[-2000:]}"
        )
    (staging / ".pom.sha256").write_text(_pom_hash(component))
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(target)
    jars = list(target.glob("*.jar"))
    size_mb, seconds = sum(j.stat().st_size for j in jars) / 2**20, time.monotonic() - started
    log(
        f"fetched {component}: {len(jars)} jars, {size_mb:.0f} MiB in {seconds:.0f} s ({size_mb / max(seconds, 0.1):.1f} MiB/s)"
    )
    return target


def fetch_all(cache_dir: Path, log=print) -> None:
    for component in COMPONENTS:
        fetch(cache_dir, component, log)


def java() -> str:
    home = os.environ.get("JAVA_HOME")
    exe = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not exe:
        raise StackError(
            "Java 17 is needed for Kafka, Kafka Connect and Neo4j: apt-get install openjdk-17-jre-headless"
        )
    return exe
