#!/usr/bin/env bash
# Installs what building and testing meshgate needs on Debian 12 (bookworm).
#
#   scripts/install-deps.sh            # the packages below
#   scripts/install-deps.sh PKG...     # the packages below plus PKG...
#
# Called by `make test` (and so by CI, as root on a fresh machine).
# * Debian packages: skipped when all are already installed (dpkg check) or when
#   not running as root (a note says what to install by hand).
#   Otherwise: `apt-get update`, then one `apt-get install`.
# * Rust: cargo must already be on the machine (rustup); this script cannot
#   download a toolchain, so it stops with a clear message when cargo is missing.
#
# To add a dependency, add it to APT_PACKAGES with a comment saying who needs it.
set -euo pipefail

APT_PACKAGES=(
    build-essential # gcc/cc: rustc's linker, and C code built by the `cc` crate
    pkg-config      # how -sys crates find system C libraries (dpdk/build.rs finds libdpdk)
    libdpdk-dev     # DPDK 22.11 for the dpdk crate (kernel-bypass data path; optional at build time)
    iproute2        # scripts/dpdk-testbed.sh: network namespaces, veths, bridge
    ethtool         # scripts/dpdk-testbed.sh: offloads off on the testbed veths
    iputils-ping    # tests/dpdk_testbed.rs: ping of the gateway address
    curl            # the demo (`make run`) and the docs' examples
    ca-certificates # TLS roots for apt/cargo on a bare machine
    redis-server    # tests/tcp_proxy.rs: a real protocol carried by the TCP proxy
    redis-tools     # tests/tcp_proxy.rs: redis-benchmark and redis-cli as clients
    openssl         # tests/tls_downstream.rs: test certificates and `openssl s_client`
    nginx-light     # tests/tls_upstream.rs, tests/http2_upstream.rs: a TLS (mTLS, ALPN h2) upstream server
    python3         # tests/websocket.rs: the WebSocket client and server (Python `websockets`)
    python3-venv    # the test venv below
    nghttp2-client  # tests/http2.rs, tests/http2_upstream.rs: h2load, many multiplexed HTTP/2 streams
)
APT_PACKAGES+=("$@")

note() { printf 'install-deps: %s\n' "$*" >&2; }

# ---------------------------------------------------------------- Rust
if ! command -v cargo >/dev/null 2>&1 && [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]; then
    export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
    note "error: cargo not found on PATH (nor in ${CARGO_HOME:-$HOME/.cargo}/bin)."
    note "meshgate needs a Rust toolchain >= 1.91 installed with rustup (https://rustup.rs);"
    note "this script cannot download one. Install it, open a new shell, and retry."
    exit 1
fi

# ---------------------------------------------------------------- Debian packages
installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

install_system_packages() {
    missing=()
    if command -v dpkg-query >/dev/null 2>&1; then
        for p in "${APT_PACKAGES[@]}"; do
            installed "$p" || missing+=("$p")
        done
    else
        note "no dpkg here (not Debian/Ubuntu?): make sure these are installed: ${APT_PACKAGES[*]}"
        return 0
    fi

    if [ "${#missing[@]}" -eq 0 ]; then
        note "system packages already installed (${APT_PACKAGES[*]})"
        return 0
    fi

    if [ "$(id -u)" -ne 0 ]; then
        note "note: not root, so not installing: ${missing[*]}"
        note "      run as root:  apt-get update && apt-get install -y --no-install-recommends ${missing[*]}"
        note "      continuing; the build may fail if one of them is really needed."
        return 0
    fi

    note "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}"
}
install_system_packages

# ---------------------------------------------------------------- Python test tools
# tests/websocket.rs drives real WebSocket peers written with the PyPI package
# `websockets`; it lives in a venv under target/ so the system Python stays
# untouched.  The tests look for target/test-venv/bin/python3.
# tests/grpc_health.rs runs a real grpc.health.v1 server (`grpcio` +
# `grpcio-health-checking`) for the gRPC active health checker.
# tests/grpc.rs, tests/http2_flood.rs and tests/websocket_h2.rs run the
# fixtures in testkit/py/: `grpcio` peers, and raw HTTP/2 frames written with
# `h2` (its `hyperframe` and `hpack` layers).
VENV="$(cd "$(dirname "$0")/.." && pwd)/target/test-venv"
PY_PACKAGES=('websockets>=12,<16' 'grpcio>=1.60' 'grpcio-health-checking>=1.60' 'h2>=4.1,<5')
if [ -x "$VENV/bin/python3" ] && "$VENV/bin/python3" -c 'import websockets, grpc, grpc_health.v1, h2' 2>/dev/null; then
    note "python test venv ready ($VENV)"
elif command -v python3 >/dev/null 2>&1 && { [ -x "$VENV/bin/python3" ] || python3 -m venv "$VENV" 2>/dev/null; }; then
    note "installing into $VENV: ${PY_PACKAGES[*]}"
    # `python3 -m pip`, not bin/pip: a venv copied from another checkout keeps
    # its old path in bin/pip's shebang and would install there.
    "$VENV/bin/python3" -m pip install --quiet "${PY_PACKAGES[@]}"
else
    note "note: cannot create a Python venv (python3 / python3-venv missing); tests/websocket.rs will fail"
fi
