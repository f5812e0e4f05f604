#!/usr/bin/env bash
# Ensures a virtualenv with matrix-synapse (and psycopg2, for the PostgreSQL-backed deployment test) in the cache
# folder (outside the repo) and prints the installed Synapse version. Idempotent: when the venv already has the wanted
# versions nothing is installed.
#   SYNAPSE_VERSION  matrix-synapse version from PyPI (default below)
#   MCP_CACHE        cache folder (default ~/.cache/matrix-compat-proxy)
#   PYTHON           interpreter to build the venv with (default python3; Synapse needs 3.10+)
#
# Safe to run several times at once (CI steps, parallel test files, a developer's second terminal): one run holds a
# lock on the cache while it checks and installs, the others wait for it and then find the venv ready. A venv left
# half-made by an interrupted run (no pip in it, or a Python that no longer starts) is rebuilt, not reused.
set -euo pipefail

SYNAPSE_VERSION="${SYNAPSE_VERSION:-1.163.2}"
# psycopg2-binary: a wheel with libpq inside, so no compiler or libpq-dev is needed; it provides the `psycopg2`
# module Synapse's PostgreSQL engine imports.
PSYCOPG2_VERSION="${PSYCOPG2_VERSION:-2.9.13}"
CACHE="${MCP_CACHE:-$HOME/.cache/matrix-compat-proxy}"
VENV="$CACHE/synapse-venv"
PYTHON="${PYTHON:-python3}"
LOCK_TIMEOUT_SECONDS="${SYNAPSE_INSTALL_LOCK_TIMEOUT:-900}"

installed_version() {
  "$VENV/bin/python" -c 'import synapse; print(synapse.__version__)' 2>/dev/null || true
}

has_psycopg2() {
  "$VENV/bin/python" -c 'import psycopg2' >/dev/null 2>&1
}

# The `jwt` extra (Authlib) backs Synapse's jwt_config, which the proxy's JWT backend (issue 16) is tested against.
has_jwt() {
  "$VENV/bin/python" -c 'import authlib.jose' >/dev/null 2>&1
}

has_pip() {
  "$VENV/bin/python" -m pip --version >/dev/null 2>&1
}

mkdir -p "$CACHE"
command -v flock >/dev/null || { echo "flock not found; install util-linux" >&2; exit 1; }
exec 9>"$CACHE/synapse-venv.lock"
if ! flock -w "$LOCK_TIMEOUT_SECONDS" 9; then
  echo "another install-synapse.sh has held $CACHE/synapse-venv.lock for ${LOCK_TIMEOUT_SECONDS}s; giving up" >&2
  exit 1
fi

if [ "$(installed_version)" != "$SYNAPSE_VERSION" ] || ! has_psycopg2 || ! has_jwt; then
  command -v "$PYTHON" >/dev/null || { echo "$PYTHON not found; Synapse needs Python 3.10+" >&2; exit 1; }
  if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)'; then
    echo "$PYTHON is $("$PYTHON" --version 2>&1); Synapse $SYNAPSE_VERSION needs Python 3.10+ (set PYTHON=...)" >&2
    exit 1
  fi
  if [ -e "$VENV" ] && ! has_pip; then
    # Two unlocked runs once raced here: one saw bin/python of the other's venv before ensurepip had run, and every
    # later run failed with "No module named pip". A venv without a working pip is rebuilt from scratch.
    echo "rebuilding $VENV: it has no working pip (a half-made virtualenv)" >&2
    rm -rf "$VENV"
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV" || {
      rm -rf "$VENV"
      echo "could not create a virtualenv; on Debian/Ubuntu install python3-venv" >&2
      exit 1
    }
  fi
  "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
  "$VENV/bin/python" -m pip install --quiet "matrix-synapse[jwt]==$SYNAPSE_VERSION" "psycopg2-binary==$PSYCOPG2_VERSION" >&2
fi

version="$(installed_version)"
if [ "$version" != "$SYNAPSE_VERSION" ]; then
  echo "matrix-synapse $SYNAPSE_VERSION did not install into $VENV (found '${version:-nothing}')" >&2
  exit 1
fi
has_psycopg2 || { echo "psycopg2 did not install into $VENV" >&2; exit 1; }
has_jwt || { echo "matrix-synapse[jwt] (Authlib) did not install into $VENV" >&2; exit 1; }
echo "$version"
