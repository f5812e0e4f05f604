#!/usr/bin/env bash
# Ensures a Dex binary (github.com/dexidp/dex) for the interop suite in the cache folder (outside the repo) and
# prints its path. Idempotent and safe to run twice at once (a lock serialises builders; the binary is renamed into
# place only when complete).
#
# Dex comes from the Go module proxy with the ordinary go command. Its release tags (v2.x) are not valid Go module
# versions (the module path has no /v2), and its go.mod replaces the api/v2 module by a sub-folder that module zips
# leave out, so `go install …@v2.45.1` cannot work: the source of the release commit is downloaded as a module
# (its pseudo-version), the replace is dropped in favour of the published api/v2 module, and cmd/dex is built.
#   DEX_VERSION         release name, for the cache folder and `dex version` (default below)
#   DEX_MODULE_VERSION  the pseudo-version of that release's commit (default: the default release's)
#   MCP_CACHE           cache folder (default ~/.cache/matrix-compat-proxy)
set -euo pipefail

DEX_VERSION="${DEX_VERSION:-v2.45.1}"
# Tag v2.45.1 is commit 11d2eeb52b42 of 2026-03-03 13:39:05 UTC.
DEX_MODULE_VERSION="${DEX_MODULE_VERSION:-v0.0.0-20260303133905-11d2eeb52b42}"
CACHE="${MCP_CACHE:-$HOME/.cache/matrix-compat-proxy}"
DEX_HOME="$CACHE/dex-$DEX_VERSION"
BINARY="$DEX_HOME/dex"

if [ -x "$BINARY" ]; then
  echo "$BINARY"
  exit 0
fi

# The Go toolchain of Debian-based images lives in /usr/local/go (not always on a non-login shell's PATH).
if ! command -v go >/dev/null && [ -x /usr/local/go/bin/go ]; then PATH="/usr/local/go/bin:$PATH"; fi
command -v go >/dev/null || { echo "go not found: building Dex needs a Go toolchain (1.25+), e.g. /usr/local/go/bin" >&2; exit 1; }
mkdir -p "$DEX_HOME"
exec 9>"$DEX_HOME/.lock"
flock 9
if [ -x "$BINARY" ]; then
  echo "$BINARY"
  exit 0
fi

build="$(mktemp -d "$CACHE/dex-build.XXXXXX")"
trap 'chmod -R u+w "$build" 2>/dev/null; rm -rf "$build"' EXIT
echo "building Dex $DEX_VERSION from the Go module proxy (a few minutes, once)..." >&2
download="$(cd "$build" && go mod download -json "github.com/dexidp/dex@$DEX_MODULE_VERSION" 2>&1 || true)"
source_dir="$(printf '%s\n' "$download" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
if [ -z "$source_dir" ] || [ ! -d "$source_dir" ]; then
  echo "go mod download github.com/dexidp/dex@$DEX_MODULE_VERSION failed:" >&2
  printf '%s\n' "$download" >&2
  exit 1
fi
cp -R "$source_dir" "$build/src"
chmod -R u+w "$build/src"
(
  cd "$build/src"
  go mod edit -dropreplace=github.com/dexidp/dex/api/v2
  # cgo only adds the SQLite storage; the tests use Dex's memory storage.
  CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath \
    -ldflags "-s -w -X main.version=$DEX_VERSION" \
    -o "$build/dex" ./cmd/dex
)
"$build/dex" version >&2
mv "$build/dex" "$BINARY.partial"
mv "$BINARY.partial" "$BINARY"
echo "$BINARY"
