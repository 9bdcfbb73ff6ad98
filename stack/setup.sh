#!/usr/bin/env bash
# Install everything the engine, its demo and its tests need, from nothing, idempotently:
# OS packages (Java 17, Maven, PostgreSQL, Prometheus, openssl), a virtualenv outside the clone, the package with its
# test extras, and the stack's jars from Maven Central. Heavy downloads (torch, jars) are cached
# under ${XDG_CACHE_HOME:-~/.cache}/fraudgraph so a second run takes seconds; nothing depends on
# that cache existing.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/fraudgraph"
VENV="${FRAUDGRAPH_VENV:-$CACHE/venv}"
PYTHON="${PYTHON:-python3.11}"

need_apt=()
command -v java >/dev/null || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need_apt+=(maven)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need_apt+=(postgresql)
# Debian's Prometheus (the local stack runs it on loopback; promtool checks the alert rules).
command -v prometheus >/dev/null || need_apt+=(prometheus)
# The security tests make a throwaway CA and certificates for a private TLS broker.
command -v openssl >/dev/null || need_apt+=(openssl)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]} from apt"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # Debian starts a default cluster on 5432; the stack runs its own, so stop that one.
  if [[ " ${need_apt[*]} " == *" postgresql "* ]]; then
    $SUDO service postgresql stop >/dev/null 2>&1 || true
  fi
  # Likewise Debian's Prometheus service on 9090, where it would take the stack's port.
  if [[ " ${need_apt[*]} " == *" prometheus "* ]]; then
    $SUDO service prometheus stop >/dev/null 2>&1 || true
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating virtualenv $VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
fi
"$VENV/bin/pip" install -q -e '.[test]'
"$VENV/bin/fraudgraph" stack fetch
echo "setup: ready ($VENV)"
