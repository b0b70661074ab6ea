#!/usr/bin/env bash
# Testbed benchmark of the DPDK data path (run as root; never part of tests).
#
# Same topology for every target (scripts/dpdk-testbed.sh): wrk runs in the
# client namespace (10.77.0.1), the origin is nginx in the upstream namespace
# (10.77.0.3:8080, fixed 1,668-byte body), and the proxy under test sits on
# the segment:
#
#   meshgate-dpdk    10.77.0.2:8000  --mode dpdk, net_af_packet on veth PREFIXmg, 1 shard
#   meshgate-kernel  10.77.0.5:8001  --mode kernel --shards 1 on veth PREFIXmg2 (kernel IP)
#   nginx            10.77.0.5:8002  1 worker, proxy_pass with upstream keepalive
#
# Then a connection-scaling run against meshgate-dpdk: 10, 100, 1,000 and
# 10,000 concurrent keep-alive connections.
#
# Output: a markdown table on stdout and bench/results/dpdk-<date>/results.md.
# CPU per request = (utime+stime of the proxy process during the run) / requests;
# the DPDK shard busy-polls, so its CPU is one core whatever the load.  What
# the traffic costs the shard is the next column: busy µs per request, the
# shard loop's time in passes that moved frames or ran tasks
# (dpdk.shard_0.loop_busy_us, DPDK's lcore "busy cycles") over the requests.
# It is wall time: a pass preempted by wrk or nginx on the shared cores counts
# the preemption, so on this testbed it is an upper bound.  RSS after: the
# proxy's resident memory (process and children) at the end of the row.
#
# --idle-sleep-us "0 50": meshgate-dpdk rows at 10 and 50 connections for each
# value of --dpdk-idle-sleep-us (0 = always busy-poll); the scaling run uses
# the first value.
#
# --perf: record each 50-connection row with perf (cpu-clock, kernel stacks
# included) and add a section splitting each proxy's CPU per request into
# user code, wake-ups, the virtual NIC (af_packet, veth, bridge), kernel
# TCP/IP and the rest (bench/kernel-profile.py --split); the recordings stay
# in the results' raw/ directory (not committed).  Installs linux-perf when missing.
#
# --churn: each proxy also gets a 50-connection row with "Connection: close"
# (name suffix -close): one TCP connection per request, both sides, which is
# what connection set-up and teardown cost.
#
# Usage: bench/dpdk-testbed.sh [--duration S] [--scaling "10 100 1000 10000"] [--idle-sleep-us "0 50"] [--perf] [--churn]
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=10
SCALING="10 100 1000 10000"
IDLE_SLEEPS="0 50"
PERF=""
CHURN=""
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DUR=$2; shift 2 ;;
        --scaling) SCALING=$2; shift 2 ;;
        --idle-sleep-us) IDLE_SLEEPS=$2; shift 2 ;;
        --perf) PERF=1; shift ;;
        --churn) CHURN=1; shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "bench/dpdk-testbed.sh: needs root" >&2; exit 77; }
for t in wrk nginx curl; do command -v $t >/dev/null || apt-get install -y $t >/dev/null; done
[ -z "$PERF" ] || command -v perf >/dev/null || apt-get install -y linux-perf >/dev/null
P=mgb
OUT=bench/results/dpdk-$(date -u +%Y-%m-%d-%H%M)
mkdir -p "$OUT/raw"
TMP=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -f "$TMP/up.pid" ] && kill "$(cat "$TMP/up.pid")" 2>/dev/null || true
    [ -f "$TMP/px.pid" ] && kill "$(cat "$TMP/px.pid")" 2>/dev/null || true
    sleep 0.5
    scripts/dpdk-testbed.sh down $P >/dev/null 2>&1 || true
    rm -rf "/var/run/dpdk/$P-a" "$TMP"
}
trap cleanup EXIT INT TERM

# MESHGATE_BIN=target/debug/meshgate skips the (long) release build.
if [ -n "${MESHGATE_BIN:-}" ]; then
    MG=$MESHGATE_BIN
else
    cargo build --release --bin meshgate --quiet
    MG=target/release/meshgate
fi
scripts/dpdk-testbed.sh up $P >/dev/null
ip addr add 10.77.0.5/24 dev ${P}mg2
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# Origin: nginx in the upstream namespace.
BODY=$(head -c 1668 /dev/zero | tr '\0' 'x')
cat >"$TMP/up.conf" <<NGINX
daemon off; worker_processes 1; pid $TMP/up.pid; error_log $TMP/up.err;
worker_rlimit_nofile 100000;
events { worker_connections 30000; }
http { access_log off; keepalive_requests 1000000;
  server { listen 10.77.0.3:8080 backlog=16384; location / { return 200 "$BODY"; } } }
NGINX
ip netns exec ${P}u nginx -c "$TMP/up.conf" &
PIDS+=($!)

config() { # listen_ip port
    cat <<YAML
admin: { address: { socket_address: { address: 127.0.0.1, port_value: $3 } } }
static_resources:
  listeners:
  - name: ingress
    address: { socket_address: { address: $1, port_value: $2 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts: [ { name: all, domains: ["*"], routes: [ { match: { prefix: "/" }, route: { cluster: up } } ] } ]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
  clusters:
  - name: up
    type: STATIC
    connect_timeout: 2s
    # Envoy's default thresholds (1,024) would answer 503 in the 10,000-connection run.
    circuit_breakers: { thresholds: [ { max_connections: 100000, max_pending_requests: 100000, max_requests: 100000 } ] }
    load_assignment:
      cluster_name: up
      endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: 10.77.0.3, port_value: 8080 } } } } ] } ]
YAML
}
config 10.77.0.2 8000 19981 >"$TMP/dpdk.yaml"
config 10.77.0.5 8001 19982 >"$TMP/kernel.yaml"
cat >"$TMP/px.conf" <<NGINX
daemon off; worker_processes 1; pid $TMP/px.pid; error_log $TMP/px.err;
worker_rlimit_nofile 100000;
events { worker_connections 30000; }
http { access_log off; keepalive_requests 1000000;
  upstream up { server 10.77.0.3:8080; keepalive 64; }
  server { listen 10.77.0.5:8002 backlog=16384; location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
NGINX

# CPU ticks of a process and its children (nginx: master + worker).
cpu_ticks() {
    local total=0 p
    for p in $1 $(pgrep -P "$1" || true); do
        total=$((total + $(awk '{print $14+$15}' "/proc/$p/stat")))
    done
    echo $total
}
HZ=$(getconf CLK_TCK)
SPLITS=()

# Resident memory (MiB) of a process and its children, now.
rss_mib() {
    local total=0 p
    for p in $1 $(pgrep -P "$1" || true); do
        total=$((total + $(awk '/^VmRSS/ {print $2}' "/proc/$p/status")))
    done
    awk -v k="$total" 'BEGIN { printf "%.0f", k/1024 }'
}

# A counter from a meshgate admin port (0 when absent).
stat() { curl -s "http://127.0.0.1:$1/stats" | awk -v n="$2:" '$1==n {print $2; f=1} END {if (!f) print 0}'; }

# run NAME PID URL CONNS [ADMIN_PORT] -> appends a row (with CLOSE=1 in the
# environment: one request per connection, row NAME-close)
run() {
    local name=$1 pid=$2 url=$3 conns=$4 admin=${5:-} threads=2
    local close_header=()
    if [ -n "${CLOSE:-}" ]; then name=$name-close; close_header=(-H "Connection: close"); fi
    [ "$conns" -lt 2 ] && threads=1
    local cx0=0 busy0=0
    [ -n "$admin" ] && cx0=$(stat "$admin" cluster.up.upstream_cx_total) && busy0=$(stat "$admin" dpdk.shard_0.loop_busy_us)
    local t0; t0=$(cpu_ticks "$pid")
    local perf_pid=""
    if [ -n "$PERF" ] && [ "$conns" = 50 ]; then
        perf record -e cpu-clock -F 2000 -g -o "$OUT/raw/perf-$name.data" -p "$(echo "$pid" $(pgrep -P "$pid") | tr ' ' ,)" \
            >/dev/null 2>&1 &
        perf_pid=$!
    fi
    ip netns exec ${P}c wrk -t$threads -c"$conns" -d"${DUR}s" --latency --timeout 10s "${close_header[@]}" "$url" >"$TMP/wrk.txt" 2>&1 || true
    if [ -n "$perf_pid" ]; then kill -INT "$perf_pid"; wait "$perf_pid" || true; fi
    local t1; t1=$(cpu_ticks "$pid")
    local rss; rss=$(rss_mib "$pid")
    local cx_per_req="n/a" busy_us="n/a"
    local req rps p50 p99 errs
    req=$(awk '/requests in/ {print $1}' "$TMP/wrk.txt")
    rps=$(awk '/Requests\/sec/ {print $2}' "$TMP/wrk.txt")
    p50=$(awk '$1=="50%" {print $2}' "$TMP/wrk.txt")
    p99=$(awk '$1=="99%" {print $2}' "$TMP/wrk.txt")
    errs=$(awk '/Socket errors|Non-2xx/ {printf "%s ", $0}' "$TMP/wrk.txt")
    local cpu_us="n/a"
    if [ -n "$req" ] && [ "$req" -gt 0 ]; then
        cpu_us=$(awk -v a="$t0" -v b="$t1" -v hz="$HZ" -v n="$req" 'BEGIN { printf "%.1f", (b-a)/hz*1e6/n }')
        if [ -n "$admin" ]; then
            sleep 1.2  # stats are published once a second
            cx_per_req=$(awk -v a="$cx0" -v b="$(stat "$admin" cluster.up.upstream_cx_total)" -v n="$req" 'BEGIN { printf "%.3f", (b-a)/n }')
            busy1=$(stat "$admin" dpdk.shard_0.loop_busy_us)
            [ "$busy1" -gt 0 ] && busy_us=$(awk -v a="$busy0" -v b="$busy1" -v n="$req" 'BEGIN { printf "%.1f", (b-a)/n }')
        fi
    fi
    echo "| $name | $conns | ${rps:-0} | ${p50:-n/a} | ${p99:-n/a} | $cpu_us | $busy_us | $cx_per_req | $rss | ${errs:-none} |" | tee -a "$OUT/results.md"
    if [ -n "$perf_pid" ] && [ "$cpu_us" != n/a ]; then SPLITS+=(--split "$name" "$OUT/raw/perf-$name.data" "$cpu_us"); fi
    cp "$TMP/wrk.txt" "$OUT/wrk-$name-$conns.txt"
}

wait_http() { for _ in $(seq 100); do ip netns exec ${P}c curl -sf -m 1 -o /dev/null "$1" && return 0; sleep 0.1; done; echo "no answer from $1" >&2; return 1; }

{
    echo "# DPDK testbed benchmark, $(date -u +%FT%TZ)"
    echo
    echo "wrk from the client namespace, ${DUR}s per row, origin nginx (1,668-byte body). $(nproc) cores. meshgate binary: $MG; checkout at $(git rev-parse --short HEAD) (the binary may be older when MESHGATE_BIN is given)."
    echo "Load average at start: $(cut -d' ' -f1-3 /proc/loadavg) — wall-clock figures depend on what else runs on the machine."
    echo
    echo "| target | connections | req/s | p50 | p99 | CPU µs/req (proxy) | shard busy µs/req | upstream connects/req | RSS MiB after | errors |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
} | tee "$OUT/results.md"

# meshgate on DPDK, once per idle-sleep setting (one at a time: they share the port)
start_dpdk() { # IDLE_SLEEP_US -> MGD
    $MG -c "$TMP/dpdk.yaml" --mode dpdk --shards 1 --no-pin --dpdk-eal "$(scripts/dpdk-testbed.sh eal $P)" --dpdk-addr 10.77.0.2/24 \
        --dpdk-idle-sleep-us "$1" --log-level info 2>>"$OUT/meshgate-dpdk.log" &
    MGD=$!; PIDS+=($MGD)
    wait_http http://10.77.0.2:8000/
}
stop_dpdk() { kill "$MGD"; wait "$MGD" 2>/dev/null || true; rm -rf "/var/run/dpdk/$P-a"; }
for n in $IDLE_SLEEPS; do
    start_dpdk "$n"
    name=meshgate-dpdk; [ "$n" != 0 ] && name="meshgate-dpdk-idle$n"
    run "$name" $MGD http://10.77.0.2:8000/ 10 19981
    run "$name" $MGD http://10.77.0.2:8000/ 50 19981
    if [ -n "$CHURN" ]; then CLOSE=1 run "$name" $MGD http://10.77.0.2:8000/ 50 19981; fi
    stop_dpdk
done

# meshgate on kernel sockets
$MG -c "$TMP/kernel.yaml" --mode kernel --shards 1 --no-pin --log-level warn 2>"$OUT/meshgate-kernel.log" &
MGK=$!; PIDS+=($MGK)
wait_http http://10.77.0.5:8001/
run meshgate-kernel $MGK http://10.77.0.5:8001/ 50 19982
if [ -n "$CHURN" ]; then CLOSE=1 run meshgate-kernel $MGK http://10.77.0.5:8001/ 50 19982; fi
kill $MGK; wait $MGK 2>/dev/null || true

# nginx proxy on kernel sockets
nginx -c "$TMP/px.conf" &
PIDS+=($!)
wait_http http://10.77.0.5:8002/
run nginx-kernel "$(cat "$TMP/px.pid")" http://10.77.0.5:8002/ 50
if [ -n "$CHURN" ]; then CLOSE=1 run nginx-kernel "$(cat "$TMP/px.pid")" http://10.77.0.5:8002/ 50; fi

{
    echo
    echo "## Connection scaling (meshgate-dpdk)"
    echo
    echo "| target | connections | req/s | p50 | p99 | CPU µs/req (proxy) | shard busy µs/req | upstream connects/req | RSS MiB after | errors |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
} | tee -a "$OUT/results.md"
start_dpdk "${IDLE_SLEEPS%% *}"
for c in $SCALING; do
    run meshgate-dpdk $MGD http://10.77.0.2:8000/ "$c" 19981
done
if [ ${#SPLITS[@]} -gt 0 ]; then
    {
        echo
        echo "## Where each proxy's CPU goes (perf cpu-clock, 50 connections)"
        echo
        echo "The DPDK shard has no kernel TCP socket on its data path: its kernel TCP/IP time is the client's and"
        echo "the origin's receive work, run in the shard's af_packet send (veth → bridge → their stack)."
        echo
        python3 bench/kernel-profile.py "${SPLITS[@]}"
    } | tee -a "$OUT/results.md"
fi
echo "results in $OUT/results.md"
