#!/usr/bin/env bash
# The DPDK virtual testbed: one layer-2 segment (10.77.0.0/24) in network
# namespaces, for meshgate's userspace stack on a virtual DPDK port.
#
#   client ns  (${P}c)  c-veth 10.77.0.1 ─┐
#   upstream ns (${P}u) u-veth 10.77.0.3 ─┼─ bridge (in ns ${P}b)
#   root ns: ${P}mg  (meshgate A opens it: net_af_packet / net_af_xdp / net_tap)
#   root ns: ${P}mg2 (meshgate B, for the chained test)
#
# Usage (as root):
#   scripts/dpdk-testbed.sh up   [PREFIX]   # build it (PREFIX default "mgt", <= 6 chars)
#   scripts/dpdk-testbed.sh down [PREFIX]   # remove it (idempotent)
#   scripts/dpdk-testbed.sh upstream [PREFIX] [PORT]  # start nginx in the upstream ns
#   scripts/dpdk-testbed.sh eal [PREFIX] [af_packet|af_xdp|tap] [2]  # print EAL args for meshgate A (or B)
#   scripts/dpdk-testbed.sh attach-tap [PREFIX] [2]  # bridge meshgate A's (B's) net_tap device into the segment
#
# The meshgate ends carry no kernel IP address: the kernel ignores their
# traffic and DPDK reads the frames.  Checksum/segmentation offloads are
# off on every veth, because af_packet would otherwise hand DPDK frames with
# unfinished checksums or 64 KiB GSO super-frames.  Give meshgate A
# --dpdk-addr 10.77.0.2/24 and B 10.77.0.4/24.
set -euo pipefail

cmd=${1:-}
P=${2:-mgt}
if [ ${#P} -gt 6 ]; then echo "prefix '$P' longer than 6 characters (interface names are limited to 15)" >&2; exit 2; fi
NS_C=${P}c NS_U=${P}u NS_B=${P}b

need_root() {
    if [ "$(id -u)" != 0 ]; then echo "dpdk-testbed: needs root" >&2; exit 77; fi
}

no_offload() { # ns dev
    local ns=$1 dev=$2
    if [ -n "$ns" ]; then
        ip netns exec "$ns" ethtool -K "$dev" tx off rx off tso off gso off gro off >/dev/null 2>&1 || true
    else
        ethtool -K "$dev" tx off rx off tso off gso off gro off >/dev/null 2>&1 || true
    fi
}

up() {
    need_root
    down_quiet
    ip netns add "$NS_B"
    ip netns add "$NS_C"
    ip netns add "$NS_U"
    ip -n "$NS_B" link add br0 type bridge
    ip -n "$NS_B" link set br0 up
    # client
    ip link add "${P}c0" type veth peer name "${P}c1"
    ip link set "${P}c0" netns "$NS_C"
    ip link set "${P}c1" netns "$NS_B"
    ip -n "$NS_C" addr add 10.77.0.1/24 dev "${P}c0"
    ip -n "$NS_C" link set "${P}c0" up
    ip -n "$NS_C" link set lo up
    # upstream
    ip link add "${P}u0" type veth peer name "${P}u1"
    ip link set "${P}u0" netns "$NS_U"
    ip link set "${P}u1" netns "$NS_B"
    ip -n "$NS_U" addr add 10.77.0.3/24 dev "${P}u0"
    ip -n "$NS_U" link set "${P}u0" up
    ip -n "$NS_U" link set lo up
    # meshgate ends (A and B) stay in the root namespace, without addresses
    for end in mg mg2; do
        ip link add "${P}${end}" type veth peer name "${P}${end}b"
        ip link set "${P}${end}b" netns "$NS_B"
        sysctl -qw "net.ipv6.conf.${P}${end}.disable_ipv6=1" || true
        ip link set "${P}${end}" up
        no_offload "" "${P}${end}"
        no_offload "$NS_B" "${P}${end}b"
    done
    for dev in "${P}c1" "${P}u1" "${P}mgb" "${P}mg2b"; do
        ip -n "$NS_B" link set "$dev" master br0
        ip -n "$NS_B" link set "$dev" up
    done
    no_offload "$NS_C" "${P}c0"
    no_offload "$NS_U" "${P}u0"
    no_offload "$NS_B" "${P}c1"
    no_offload "$NS_B" "${P}u1"
    # AF_XDP needs bpffs for its maps.
    if ! mountpoint -q /sys/fs/bpf 2>/dev/null; then mount -t bpf bpf /sys/fs/bpf 2>/dev/null || true; fi
    echo "testbed $P up: client ns $NS_C (10.77.0.1), upstream ns $NS_U (10.77.0.3), meshgate ends ${P}mg, ${P}mg2"
}

down_quiet() {
    for ns in "$NS_C" "$NS_U" "$NS_B"; do ip netns del "$ns" 2>/dev/null || true; done
    for end in mg mg2 tap tap2; do ip link del "${P}${end}" 2>/dev/null || true; done
}

eal() {
    local kind=${3:-af_packet} which=${4:-1} iface="${P}mg" prefix="${P}-a"
    if [ "$which" = 2 ]; then iface="${P}mg2"; prefix="${P}-b"; fi
    local base="-l 0 --no-huge --no-pci -m 256 --file-prefix=$prefix --log-level=error"
    case "$kind" in
        # The PMD's default ring is 512 frames; a shard that is off the CPU
        # for a few ms (2 shared cores) overflows it and the kernel drops
        # frames silently (DPDK 22.11's af_packet does not report them as
        # imissed): 16,384 frames (32 MiB each way) absorb ~0.3 s at 50k pps.
        af_packet) echo "$base --vdev=net_af_packet0,iface=$iface,qpairs=1,blocksz=4096,framesz=2048,framecnt=16384" ;;
        af_xdp) echo "$base --vdev=net_af_xdp0,iface=$iface,start_queue=0,queue_count=1" ;;
        # net_tap makes its own tap device; bridge it into the segment after
        # meshgate starts: `scripts/dpdk-testbed.sh attach-tap PREFIX [2]`.
        tap) local tap="${P}tap"; [ "$which" = 2 ] && tap="${P}tap2"
             echo "$base --vdev=net_tap0,iface=$tap" ;;
        *) echo "unknown device kind $kind" >&2; exit 2 ;;
    esac
}

case "$cmd" in
    up) up ;;
    down) need_root; down_quiet; echo "testbed $P down" ;;
    upstream)
        need_root
        port=${3:-8080}
        conf=$(mktemp -d)/nginx.conf
        cat >"$conf" <<NGINX
daemon on; pid ${conf%/*}/nginx.pid; error_log ${conf%/*}/error.log;
events { worker_connections 4096; }
http { access_log off; server { listen 10.77.0.3:$port; location / { return 200 "upstream ok\n"; } } }
NGINX
        ip netns exec "$NS_U" nginx -c "$conf"
        echo "nginx on 10.77.0.3:$port (pid file ${conf%/*}/nginx.pid)"
        ;;
    eal) eal "$@" ;;
    attach-tap)
        # The tap PMD gives the kernel's tap netdev the DPDK port's MAC; a
        # bridge treats a port's own MAC as local and would deliver frames
        # for meshgate to itself, so the kernel side gets another MAC.
        need_root
        tap="${P}tap"; mac=02:00:00:77:00:fe
        if [ "${3:-1}" = 2 ]; then tap="${P}tap2"; mac=02:00:00:77:00:fd; fi
        ip link set "$tap" netns "$NS_B"
        ip -n "$NS_B" link set "$tap" address "$mac"
        ip -n "$NS_B" link set "$tap" master br0
        ip -n "$NS_B" link set "$tap" up
        ;;
    *) echo "usage: $0 up|down|upstream|eal|attach-tap [PREFIX] ..." >&2; exit 2 ;;
esac
