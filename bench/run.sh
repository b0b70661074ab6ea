#!/usr/bin/env bash
# meshgate side-by-side benchmark: direct / meshgate / nginx / haproxy, one run.
#
#   bench/run.sh [--duration S] [--connections "40 256"] [--body-bytes 1668]
#                [--shards 1] [--targets "direct meshgate nginx haproxy"] [--quick]
#                [--rounds N] [--http2] [--idle-conns N] [--pin-proxy CPUS ...]
#                [--no-install] [--no-build] [--meshgate-bin PATH] ...
#
# Installs what is missing (nginx, haproxy, wrk via apt; oha via `cargo install
# oha --locked`; matplotlib via pip; h2load only with --http2), builds meshgate
# in release mode, raises the open-file limit, then hands over to
# bench/driver.py, which starts every server on loopback ports 18080-18093 and
# 19901 with its own config files in a temp dir, and stops them all on exit.
# Results: bench/results/<YYYY-MM-DD-HHMM>/. `bench/run.sh --help-driver` lists
# every driver option. Needs root (apt, ulimit -n 65536). Never part of `make test`.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
INSTALL=1
BUILD=1
HTTP2=0
MESHGATE_BIN=""
TARGETS="direct meshgate nginx haproxy"
ARGS=()

while [ $# -gt 0 ]; do
  case "$1" in
    --no-install) INSTALL=0 ;;
    --no-build) BUILD=0 ;;
    --help-driver) exec python3 "$HERE/driver.py" --help ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --http2) HTTP2=1; ARGS+=("$1") ;;
    --meshgate-bin) MESHGATE_BIN="$2"; ARGS+=("$1" "$2"); shift ;;
    --meshgate-bin=*) MESHGATE_BIN="${1#*=}"; ARGS+=("$1") ;;
    --targets) TARGETS="$2"; ARGS+=("$1" "$2"); shift ;;
    --targets=*) TARGETS="${1#*=}"; ARGS+=("$1") ;;
    *) ARGS+=("$1") ;;
  esac
  shift
done

say() { echo "[bench] $*"; }

# ---- tools
if [ "$INSTALL" = 1 ]; then
  need=()
  command -v nginx >/dev/null || need+=(nginx)
  command -v haproxy >/dev/null || need+=(haproxy)
  command -v wrk >/dev/null || need+=(wrk)
  command -v strace >/dev/null || need+=(strace)
  command -v taskset >/dev/null || need+=(util-linux)
  if [ "$HTTP2" = 1 ]; then command -v h2load >/dev/null || need+=(nghttp2-client); fi
  if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]} (apt)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # policy-rc.d keeps Debian from starting the packaged nginx/haproxy services
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; POLICY_ADDED=1
    fi
    apt-get install -y -qq "${need[@]}" >/dev/null || { [ "${POLICY_ADDED:-0}" = 1 ] && rm -f /usr/sbin/policy-rc.d; exit 1; }
    [ "${POLICY_ADDED:-0}" = 1 ] && rm -f /usr/sbin/policy-rc.d
  fi
  if ! command -v oha >/dev/null; then
    say "oha not found: cargo install oha --locked (compiles for several minutes, once)"
    cargo install oha --locked || say "WARNING: oha could not be installed; the fixed-load phase will be skipped"
  fi
  if ! python3 -c 'import matplotlib' 2>/dev/null; then
    say "installing matplotlib (pip)"
    python3 -m pip install -q matplotlib || say "matplotlib unavailable: the plot will be a hand-written SVG"
  fi
fi
for t in nginx haproxy wrk; do
  command -v "$t" >/dev/null || { echo "error: $t is not installed (run without --no-install, as root)" >&2; exit 1; }
done
command -v oha >/dev/null || say "WARNING: no oha on PATH: the fixed-load phase is skipped (not replaced)"

# ---- meshgate
if [[ " $TARGETS " == *" meshgate "* ]] && [ -z "$MESHGATE_BIN" ]; then
  if [ "$BUILD" = 1 ]; then
    say "building meshgate (cargo build --release --bin meshgate)"
    (cd "$REPO" && cargo build --release --bin meshgate)
  fi
  [ -x "$REPO/target/release/meshgate" ] || { echo "error: $REPO/target/release/meshgate missing" >&2; exit 1; }
fi

# ---- limits: 10,000 idle connections on each side of the proxy, plus the load generators
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
say "open-file limit: $(ulimit -n)"
say "load before the run: $(cut -d' ' -f1-3 /proc/loadavg) (2 cores are shared with anything else running)"

# ---- run (the driver stops every process it started on exit, error or signal)
DRIVER_PID=""
cleanup() { if [ -n "$DRIVER_PID" ] && kill -0 "$DRIVER_PID" 2>/dev/null; then kill -TERM "$DRIVER_PID"; wait "$DRIVER_PID" || true; fi; }
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM
python3 "$HERE/driver.py" "${ARGS[@]}" &
DRIVER_PID=$!
set +e
wait "$DRIVER_PID"
rc=$?
DRIVER_PID=""
exit "$rc"
