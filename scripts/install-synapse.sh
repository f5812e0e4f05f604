#!/usr/bin/env bash
# Ensures a virtualenv with matrix-synapse for the interop suite in the cache folder (outside the repo) and prints
# the installed version. Idempotent: when the venv already has the wanted version nothing is installed.
#   SYNAPSE_VERSION  matrix-synapse version from PyPI (default below)
#   MCP_CACHE        cache folder (default ~/.cache/matrix-compat-proxy)
#   PYTHON           interpreter to build the venv with (default python3; Synapse needs 3.10+)
set -euo pipefail

SYNAPSE_VERSION="${SYNAPSE_VERSION:-1.163.2}"
CACHE="${MCP_CACHE:-$HOME/.cache/matrix-compat-proxy}"
VENV="$CACHE/synapse-venv"
PYTHON="${PYTHON:-python3}"

installed_version() {
  "$VENV/bin/python" -c 'import synapse; print(synapse.__version__)' 2>/dev/null || true
}

if [ "$(installed_version)" != "$SYNAPSE_VERSION" ]; then
  command -v "$PYTHON" >/dev/null || { echo "$PYTHON not found; Synapse needs Python 3.10+" >&2; exit 1; }
  if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)'; then
    echo "$PYTHON is $("$PYTHON" --version 2>&1); Synapse $SYNAPSE_VERSION needs Python 3.10+ (set PYTHON=...)" >&2
    exit 1
  fi
  mkdir -p "$CACHE"
  if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV" || {
      echo "could not create a virtualenv; on Debian/Ubuntu install python3-venv" >&2
      exit 1
    }
  fi
  "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
  "$VENV/bin/python" -m pip install --quiet "matrix-synapse==$SYNAPSE_VERSION" >&2
fi

version="$(installed_version)"
if [ "$version" != "$SYNAPSE_VERSION" ]; then
  echo "matrix-synapse $SYNAPSE_VERSION did not install into $VENV (found '${version:-nothing}')" >&2
  exit 1
fi
echo "$version"
