#!/usr/bin/env bash
# `make run`: meshgate in kernel mode with examples/meshgate.yaml, in front of a
# local demo upstream (mg-upstream on 127.0.0.1:8081).
#
#   scripts/run-demo.sh [MESHGATE_ARGS...]     e.g. scripts/run-demo.sh --shards 1
#
# Builds both binaries, starts the upstream in the background, then meshgate in
# the foreground. Ctrl-C (or SIGTERM to this script) drains meshgate and stops
# the upstream too.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
config=examples/meshgate.yaml
upstream_addr=127.0.0.1:8081 # must match the demo cluster in $config
listener_port=10000
admin_port=9901

if ! command -v cargo >/dev/null 2>&1 && [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]; then
    export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 || {
    echo "run-demo: cargo not found; install Rust with rustup first" >&2
    exit 1
}

cargo build --workspace --bins
bin="${CARGO_TARGET_DIR:-$root/target}/debug"

# Refuse to start on busy ports rather than proxying to somebody else's server.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in "${upstream_addr##*:}" "$listener_port" "$admin_port"; do
    if port_busy "$port"; then
        echo "run-demo: port $port is already in use on 127.0.0.1 (another demo still running?)." >&2
        echo "run-demo: find it with: ss -ltnp 'sport = :$port'" >&2
        exit 1
    fi
done

tmp="$(mktemp -d)"
upstream_pid=""
meshgate_pid=""
cleanup() {
    if [ -n "$upstream_pid" ]; then
        kill "$upstream_pid" 2>/dev/null || true
        wait "$upstream_pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

"$bin/mg-upstream" --listen "$upstream_addr" --name demo >"$tmp/upstream.log" 2>&1 &
upstream_pid=$!
for _ in $(seq 50); do
    grep -q '^listening on' "$tmp/upstream.log" && break
    if ! kill -0 "$upstream_pid" 2>/dev/null; then
        echo "run-demo: mg-upstream failed to start:" >&2
        cat "$tmp/upstream.log" >&2
        exit 1
    fi
    sleep 0.1
done
grep -q '^listening on' "$tmp/upstream.log" || {
    echo "run-demo: mg-upstream did not report 'listening on' within 5 s" >&2
    exit 1
}

echo
echo "demo upstream: mg-upstream $(cat "$tmp/upstream.log")"
echo "try: curl -i http://127.0.0.1:$listener_port/  (admin: http://127.0.0.1:$admin_port/stats)"
echo "     curl -i http://127.0.0.1:$listener_port/healthz   (direct response, no upstream)"
echo "Ctrl-C stops both."
echo

# meshgate runs as a background job so that a signal to this script is handled
# at once (bash defers traps while a foreground child runs): the trap forwards
# it, meshgate drains and exits, then `cleanup` stops the upstream.
"$bin/meshgate" -c "$config" --mode kernel "$@" &
meshgate_pid=$!
stop() { kill -TERM "$meshgate_pid" 2>/dev/null || true; }
trap stop INT TERM
status=0
while :; do
    wait "$meshgate_pid" && status=0 || status=$?
    # `wait` returns >128 when a trapped signal interrupted it; meshgate may
    # still be draining, so wait again until it has really exited.
    kill -0 "$meshgate_pid" 2>/dev/null || break
done
exit "$status"
