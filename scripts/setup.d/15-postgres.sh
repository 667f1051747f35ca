#!/usr/bin/env bash
# PostgreSQL server binaries (initdb, pg_ctl, postgres) for the state-store tests
# (tests/postgres_plugin.py starts a throwaway server on loopback with them). Found in
# $RLHF_POSTGRES_BIN, .cache/bin or PATH; else Debian's `postgresql` package is
# installed, whose binaries live in /usr/lib/postgresql/<major>/bin (not on PATH), and
# they are linked into .cache/bin ($RLHF_TOOLS_BIN), where the tests look.
# Idempotent: nothing is done when the three are already found.
set -euo pipefail
cd "$(dirname "$0")/../.."

BIN_DIR="${RLHF_TOOLS_BIN:-$PWD/.cache/bin}"
NAMES=(initdb pg_ctl postgres)

have_all() {  # have_all DIR: the three binaries are executable in DIR
  local dir=$1 name
  for name in "${NAMES[@]}"; do [ -x "$dir/$name" ] || return 1; done
}

for dir in "${RLHF_POSTGRES_BIN:-}" "$BIN_DIR" "$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/initdb)")"; do
  if [ -n "$dir" ] && have_all "$dir"; then
    echo "postgres: $("$dir/postgres" --version) in $dir"
    exit 0
  fi
done

debian_bin() {  # the newest /usr/lib/postgresql/<major>/bin holding the three
  local dir
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if have_all "$dir"; then echo "$dir"; return 0; fi
  done
  return 1
}

if ! found="$(debian_bin)"; then
  echo "postgres: installing Debian's postgresql (server binaries for the tests)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends postgresql
  # The package starts a cluster of its own as a service; the tests do not use it.
  found="$(debian_bin)" || { echo "postgres: no server binaries after the install" >&2; exit 1; }
fi
mkdir -p "$BIN_DIR"
for name in "${NAMES[@]}"; do ln -sf "$found/$name" "$BIN_DIR/$name"; done
echo "postgres: linked $("$found/postgres" --version) from $found into $BIN_DIR"
