#!/usr/bin/env bash
# Validates docker-compose.yml with a real compose parser — Debian's `docker-compose` (installed when missing and run
# as root) — for both nginx layouts. No container engine is needed: `config -q` parses, interpolates and checks the
# file against the compose schema, and exits non-zero on any problem. The images are never pulled here.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v docker-compose >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing docker-compose (compose file validation)" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null
  else
    echo "docker-compose is needed to validate docker-compose.yml: sudo apt-get install -y docker-compose" >&2
    exit 1
  fi
fi

for layout in full-proxy auth-routes-only; do
  NGINX_LAYOUT="$layout" docker-compose --project-directory . -f docker-compose.yml config -q
  echo "docker-compose.yml is valid (NGINX_LAYOUT=$layout, $(docker-compose version --short))"
done
