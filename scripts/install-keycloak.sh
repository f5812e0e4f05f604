#!/usr/bin/env bash
# Ensures a Keycloak distribution for the interop suite in the cache folder (outside the repo) and prints its path.
# Idempotent: a second run only checks and prints. Maven Central serves the distribution as
# org.keycloak:keycloak-quarkus-dist:<version>:tar.gz, fetched with Maven's ordinary client.
#   KEYCLOAK_VERSION  version to install (default below)
#   MCP_CACHE         cache folder (default ~/.cache/matrix-compat-proxy)
#   JAVA_HOME         a Java 21+ to run Keycloak with (else the newest JDK in /usr/lib/jvm)
set -euo pipefail

KEYCLOAK_VERSION="${KEYCLOAK_VERSION:-26.5.6}"
CACHE="${MCP_CACHE:-$HOME/.cache/matrix-compat-proxy}"
KEYCLOAK_HOME="$CACHE/keycloak-$KEYCLOAK_VERSION"
ARCHIVE="$CACHE/keycloak-quarkus-dist-$KEYCLOAK_VERSION.tar.gz"
# The project lead's machine pre-fetches the archive here; using it saves a download, nothing depends on it.
PREFETCHED="/root/.cache/mcp/keycloak/keycloak-quarkus-dist-$KEYCLOAK_VERSION.tar.gz"

java_major() {
  # `java -version` prints e.g. `openjdk version "25.0.3" 2026-04-21` (or "1.8.0_392" for Java 8) on stderr.
  "$1" -version 2>&1 | sed -n 's/.*version "\([0-9][0-9]*\)\(\.[^"]*\)\{0,1\}".*/\1/p' | head -n 1
}

find_java_home() {
  if [ -n "${JAVA_HOME:-}" ] && [ -x "$JAVA_HOME/bin/java" ]; then
    local major
    major="$(java_major "$JAVA_HOME/bin/java")"
    if [ -n "$major" ] && [ "$major" -ge 21 ]; then
      echo "$JAVA_HOME"
      return 0
    fi
    echo "JAVA_HOME=$JAVA_HOME is Java ${major:-?}; Keycloak needs 21+, looking in /usr/lib/jvm" >&2
  fi
  local best="" best_major=0 candidate major
  for candidate in /usr/lib/jvm/*/; do
    candidate="${candidate%/}"
    [ -x "$candidate/bin/java" ] || continue
    major="$(java_major "$candidate/bin/java")"
    if [ -n "$major" ] && [ "$major" -gt "$best_major" ]; then
      best="$candidate"
      best_major="$major"
    fi
  done
  if [ "$best_major" -ge 21 ]; then
    echo "$best"
    return 0
  fi
  return 1
}

if ! JAVA_FOR_KEYCLOAK="$(find_java_home)"; then
  echo "Keycloak $KEYCLOAK_VERSION needs Java 21 or newer: set JAVA_HOME to a JDK 21+ or install one under /usr/lib/jvm" >&2
  echo "(e.g. apt-get install temurin-25-jdk from the Adoptium repository)." >&2
  exit 1
fi
echo "java for Keycloak: $JAVA_FOR_KEYCLOAK" >&2

if [ ! -x "$KEYCLOAK_HOME/bin/kc.sh" ]; then
  mkdir -p "$CACHE"
  if [ ! -s "$ARCHIVE" ]; then
    if [ -s "$PREFETCHED" ]; then
      cp "$PREFETCHED" "$ARCHIVE.part"
    else
      command -v mvn >/dev/null || { echo "mvn not found; install Maven (apt-get install maven) to fetch Keycloak" >&2; exit 1; }
      download="$(mktemp -d "$CACHE/keycloak-download.XXXXXX")"
      trap 'rm -rf "$download"' EXIT
      echo "downloading Keycloak $KEYCLOAK_VERSION from Maven Central..." >&2
      mvn -q -B -Dstyle.color=never org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy \
        -Dartifact="org.keycloak:keycloak-quarkus-dist:$KEYCLOAK_VERSION:tar.gz" \
        -DoutputDirectory="$download" >&2
      mv "$download/keycloak-quarkus-dist-$KEYCLOAK_VERSION.tar.gz" "$ARCHIVE.part"
    fi
    # Renamed only when complete, so an interrupted download is never mistaken for the archive.
    mv "$ARCHIVE.part" "$ARCHIVE"
  fi
  unpack="$(mktemp -d "$CACHE/keycloak-unpack.XXXXXX")"
  tar -xzf "$ARCHIVE" -C "$unpack"
  rm -rf "$KEYCLOAK_HOME"
  mv "$unpack/keycloak-$KEYCLOAK_VERSION" "$KEYCLOAK_HOME"
  rm -rf "$unpack"
fi

echo "$KEYCLOAK_HOME"
