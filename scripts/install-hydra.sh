#!/usr/bin/env bash
# Ensures an Ory Hydra binary (github.com/ory/hydra/v2) for the interop suite in the cache folder (outside the repo)
# and prints its path. Idempotent and safe to run twice at once (a lock serialises builders; the binary is renamed
# into place only when complete).
#
# Hydra comes from the Go module proxy with the ordinary go command, as a tool of a throw-away module: Hydra's own
# go.mod replaces its API client by a sub-folder (left out of module zips) and pins a fork of pop; replaces only
# apply in the main module, so the throw-away module repeats the pop one and takes the published client. Built with
# SQLite (cgo) so that `DSN=memory` works, as Hydra's own Makefile does.
#   HYDRA_VERSION  module version (default below)
#   MCP_CACHE      cache folder (default ~/.cache/matrix-compat-proxy)
set -euo pipefail

HYDRA_VERSION="${HYDRA_VERSION:-v2.3.0}"
# The pop fork Hydra v2.3.0's go.mod replaces github.com/gobuffalo/pop/v6 with.
POP_FORK="github.com/ory/pop/v6@v6.2.1-0.20241121111754-e5dfc0f3344b"
CACHE="${MCP_CACHE:-$HOME/.cache/matrix-compat-proxy}"
HYDRA_HOME="$CACHE/hydra-$HYDRA_VERSION"
BINARY="$HYDRA_HOME/hydra"

if [ -x "$BINARY" ]; then
  echo "$BINARY"
  exit 0
fi

# The Go toolchain of Debian-based images lives in /usr/local/go (not always on a non-login shell's PATH).
if ! command -v go >/dev/null && [ -x /usr/local/go/bin/go ]; then PATH="/usr/local/go/bin:$PATH"; fi
command -v go >/dev/null || { echo "go not found: building Hydra needs a Go toolchain (1.22+), e.g. /usr/local/go/bin" >&2; exit 1; }
command -v gcc >/dev/null || { echo "gcc not found: Hydra's SQLite storage needs cgo (apt-get install gcc)" >&2; exit 1; }
mkdir -p "$HYDRA_HOME"
exec 9>"$HYDRA_HOME/.lock"
flock 9
if [ -x "$BINARY" ]; then
  echo "$BINARY"
  exit 0
fi

build="$(mktemp -d "$CACHE/hydra-build.XXXXXX")"
trap 'rm -rf "$build"' EXIT
echo "building Ory Hydra $HYDRA_VERSION from the Go module proxy (several minutes, once)..." >&2
(
  cd "$build"
  go mod init mcp-hydra-build >/dev/null 2>&1
  go mod edit -replace="github.com/gobuffalo/pop/v6=$POP_FORK"
  go get -tool "github.com/ory/hydra/v2@$HYDRA_VERSION" >&2
  CGO_ENABLED=1 go build -trimpath -tags sqlite,sqlite_omit_load_extension \
    -ldflags "-s -w -X github.com/ory/hydra/v2/driver/config.Version=$HYDRA_VERSION" \
    -o "$build/hydra" github.com/ory/hydra/v2
)
"$build/hydra" version >&2
mv "$build/hydra" "$BINARY.partial"
mv "$BINARY.partial" "$BINARY"
echo "$BINARY"
