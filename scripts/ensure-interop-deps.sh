#!/usr/bin/env bash
# The interop suite's Debian programs besides Synapse and Keycloak (scripts/install-synapse.sh, install-keycloak.sh):
# PostgreSQL (the compose stack's database, run natively by test/interop/deploy-layouts.test.ts), nginx and
# redis-server. Installs what is missing when it can (root with apt-get), otherwise says exactly what to install.
set -euo pipefail

missing=()
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || missing+=(nginx)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing interop test dependencies: ${missing[*]}" >&2
  apt-get update -qq >&2
  # Debian's postgresql package starts a cluster of its own on 5432; the test runs its own on a free port instead.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "the interop suite needs: ${missing[*]} — install them with: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
