#!/usr/bin/env bash
# Ensures Dendrite (matrix-org/dendrite, the last Apache-2.0 release) is built into the cache folder (outside the
# repo) and prints its version. Idempotent: a binary of the wanted version is not rebuilt. Needs Go (the module proxy
# is the only download: `go install` of the tagged module, about 4 minutes on 2 cores the first time).
#   DENDRITE_VERSION  module version (default below)
#   MCP_CACHE         cache folder (default ~/.cache/matrix-compat-proxy)
#
# Safe to run several times at once: one run holds a lock while it checks and builds, the others wait and then
# find the binaries ready. A build interrupted half-way leaves no binary behind the version stamp, so it is redone.
set -euo pipefail

DENDRITE_VERSION="${DENDRITE_VERSION:-v0.13.8}"
CACHE="${MCP_CACHE:-$HOME/.cache/matrix-compat-proxy}"
DIR="$CACHE/dendrite-$DENDRITE_VERSION"
LOCK_TIMEOUT_SECONDS="${DENDRITE_INSTALL_LOCK_TIMEOUT:-1800}"
GO="${GO:-go}"

mkdir -p "$CACHE"
command -v flock >/dev/null || { echo "flock not found; install util-linux" >&2; exit 1; }
exec 9>"$CACHE/dendrite.lock"
if ! flock -w "$LOCK_TIMEOUT_SECONDS" 9; then
  echo "another install-dendrite.sh has held $CACHE/dendrite.lock for ${LOCK_TIMEOUT_SECONDS}s; giving up" >&2
  exit 1
fi

# The stamp is written last: binaries without it are from an interrupted build.
if [ "$(cat "$DIR/VERSION" 2>/dev/null || true)" != "$DENDRITE_VERSION" ]; then
  command -v "$GO" >/dev/null || { echo "go not found; Dendrite is built with go install (Go 1.21+)" >&2; exit 1; }
  rm -rf "$DIR"
  mkdir -p "$DIR/bin"
  # Module and build caches inside the cache folder: nothing lands in the user's GOPATH or the repository.
  # CGO is needed for the SQLite driver Dendrite uses (mattn/go-sqlite3).
  GOPATH="$CACHE/go" GOMODCACHE="$CACHE/go/pkg/mod" GOCACHE="$CACHE/go/build-cache" GOBIN="$DIR/bin" GOFLAGS=-modcacherw \
    "$GO" install \
    "github.com/matrix-org/dendrite/cmd/dendrite@$DENDRITE_VERSION" \
    "github.com/matrix-org/dendrite/cmd/generate-keys@$DENDRITE_VERSION" >&2
  echo "$DENDRITE_VERSION" > "$DIR/VERSION"
fi

[ -x "$DIR/bin/dendrite" ] || { echo "dendrite did not build into $DIR/bin" >&2; exit 1; }
echo "$DENDRITE_VERSION"
