#!/usr/bin/env bash
# Ensures a built copy of an earlier release of this repository in the cache folder (outside the repo) and prints its
# path: the mixed-fleet test (test/interop/mixed-fleet.test.ts) runs it next to the working tree's build on one Redis.
# Idempotent: a second run only checks and prints. Needs the commit in the local history (a clone with history, as
# CI's); `npm ci` builds dist/ through the package's prepare script.
#   PREVIOUS_RELEASE  commit to build (default below: the release before issue 19's session formats)
#   MCP_CACHE         cache folder (default ~/.cache/matrix-compat-proxy)
set -euo pipefail

COMMIT="${PREVIOUS_RELEASE:-aaa9c33}"
CACHE="${MCP_CACHE:-$HOME/.cache/matrix-compat-proxy}"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
FULL="$(git -C "$REPO" rev-parse --verify --quiet "$COMMIT^{commit}")" || {
  echo "commit $COMMIT is not in this clone's history (a shallow clone?): fetch it first" >&2
  exit 3
}
DEST="$CACHE/releases/$FULL"
mkdir -p "$CACHE/releases"

exec 9>"$CACHE/releases/.lock"
flock 9
if [ ! -f "$DEST/.built" ]; then
  rm -rf "$DEST.tmp"
  mkdir -p "$DEST.tmp"
  git -C "$REPO" archive "$FULL" | tar -x -C "$DEST.tmp"
  (cd "$DEST.tmp" && npm ci --no-fund --no-audit >&2)
  touch "$DEST.tmp/.built"
  rm -rf "$DEST"
  mv "$DEST.tmp" "$DEST"
fi
echo "$DEST"
