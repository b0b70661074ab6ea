//! TCP proxy listeners (`envoy.filters.network.tcp_proxy`): every accepted
//! connection is checked by the listener's network RBAC filters, connected to
//! a host of the configured (or weight-picked) cluster, and spliced to it
//! with a byte tunnel (`tunnel::splice`) until both sides are done.
//!
//! It owns the connection's lifecycle and the `tcp.<stat_prefix>.*` stats.
//! It must not know how bytes are pumped (the tunnel's), how hosts are picked
//! or connected (`upstream`'s), or how RBAC rules match (`rbac`'s).
//!
//! Envoy semantics kept (tcp_proxy v3 reference, "TCP proxy" architecture
//! overview):
//! * `max_connect_attempts` connects, each to a freshly picked host; when all
//!   fail the downstream connection is closed.
//! * No usable cluster (`weighted_clusters` picking one that is not in the
//!   snapshot) counts `downstream_cx_no_route` and closes.
//! * `idle_timeout` (default 1 h) closes both sides after no byte moved in
//!   either direction; counted in `idle_timeout`.
//! * Half-close is forwarded both ways; a downstream that goes away while
//!   its bytes are still buffered for the upstream has them flushed first
//!   (`upstream_flush_total`, `upstream_flush_active`).
//!
//! One difference, on purpose: network RBAC is evaluated when the connection
//! is accepted, before the upstream is connected, where Envoy evaluates it
//! on the first bytes read.  Every input of the supported network principals
//! and permissions (addresses, ports) is known at accept time, so the verdict
//! is the same; deciding early means a denied source never causes an
//! upstream connection, and server-first protocols work behind RBAC.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use control::model::{TcpListener, TcpProxyTarget};

use crate::rbac::{ConnVerdict, ListenerRbac};
use crate::runtime::{now, sleep_until};
use crate::shard::ShardCtx;
use crate::stats::{Counter, Gauge, ListenerStats, Scope, StatsStore};
use crate::tls::{Conn, ServerTls, TlsStats};
use crate::transport::Stream;
use crate::tunnel::{splice, TunnelEnd, TunnelObserver};
use crate::upstream::UpstreamConn;

/// Per-direction tunnel buffer.  Envoy's `per_connection_buffer_limit_bytes`
/// caps it when set lower.
const TUNNEL_BUFFER: usize = 64 * 1024;

/// `tcp.<stat_prefix>.*`, with Envoy's leaf names.
#[derive(Clone, Debug)]
pub struct TcpProxyStats {
    pub downstream_cx_total: Counter,
    pub downstream_cx_no_route: Counter,
    pub downstream_cx_rx_bytes_total: Counter,
    pub downstream_cx_tx_bytes_total: Counter,
    pub downstream_cx_rx_bytes_buffered: Gauge,
    pub downstream_cx_tx_bytes_buffered: Gauge,
    pub idle_timeout: Counter,
    pub upstream_flush_total: Counter,
    pub upstream_flush_active: Gauge,
}

impl TcpProxyStats {
    pub const LEAVES: &'static [&'static str] = &[
        "downstream_cx_total",
        "downstream_cx_no_route",
        "downstream_cx_rx_bytes_total",
        "downstream_cx_tx_bytes_total",
        "downstream_cx_rx_bytes_buffered",
        "downstream_cx_tx_bytes_buffered",
        "idle_timeout",
        "upstream_flush_total",
        "upstream_flush_active",
    ];

    pub fn new(store: &StatsStore, stat_prefix: &str, slot: usize) -> TcpProxyStats {
        let prefix = stat_prefix.strip_suffix('.').unwrap_or(stat_prefix);
        let scope = Scope::Named(format!("tcp.{prefix}"));
        let c = |leaf: &str| store.counter(&scope, leaf, slot);
        let g = |leaf: &str| store.gauge(&scope, leaf, slot);
        TcpProxyStats {
            downstream_cx_total: c("downstream_cx_total"),
            downstream_cx_no_route: c("downstream_cx_no_route"),
            downstream_cx_rx_bytes_total: c("downstream_cx_rx_bytes_total"),
            downstream_cx_tx_bytes_total: c("downstream_cx_tx_bytes_total"),
            downstream_cx_rx_bytes_buffered: g("downstream_cx_rx_bytes_buffered"),
            downstream_cx_tx_bytes_buffered: g("downstream_cx_tx_bytes_buffered"),
            idle_timeout: c("idle_timeout"),
            upstream_flush_total: c("upstream_flush_total"),
            upstream_flush_active: g("upstream_flush_active"),
        }
    }
}

/// A TCP proxy listener as one shard runs it.
pub struct TcpProxyListener {
    pub config: Arc<TcpListener>,
    pub stats: TcpProxyStats,
    pub listener_stats: ListenerStats,
    pub rbac: ListenerRbac,
    /// Downstream TLS (terminated here; the upstream gets plaintext).
    pub tls: Option<Rc<ServerTls>>,
}

impl TcpProxyListener {
    pub fn new(config: Arc<TcpListener>, store: &StatsStore, slot: usize) -> TcpProxyListener {
        TcpProxyListener {
            stats: TcpProxyStats::new(store, &config.proxy.stat_prefix, slot),
            listener_stats: ListenerStats::for_address(store, &config.address, slot),
            rbac: ListenerRbac::network_only(&config.network_rbac, store, slot),
            tls: config
                .tls
                .as_ref()
                .map(|t| ServerTls::new(t, TlsStats::new(store, &config.address, slot), &config.name)),
            config,
        }
    }

    fn buffer_size(&self) -> usize {
        (self.config.per_connection_buffer_limit_bytes as usize).clamp(4096, TUNNEL_BUFFER)
    }
}

/// Keeps the byte counters and buffered gauges live while bytes move:
/// `a` is the downstream, `b` the upstream.
struct Bytes<'a>(&'a TcpProxyStats);

impl TunnelObserver for Bytes<'_> {
    fn a_read(&self, n: usize) {
        self.0.downstream_cx_rx_bytes_total.add(n as u64);
        self.0.downstream_cx_rx_bytes_buffered.add(n as i64);
    }
    fn b_written(&self, n: usize) {
        self.0.downstream_cx_rx_bytes_buffered.sub(n as i64);
    }
    fn b_read(&self, n: usize) {
        self.0.downstream_cx_tx_bytes_buffered.add(n as i64);
    }
    fn a_written(&self, n: usize) {
        self.0.downstream_cx_tx_bytes_total.add(n as u64);
        self.0.downstream_cx_tx_bytes_buffered.sub(n as i64);
    }
    fn flush_started(&self) {
        self.0.upstream_flush_total.inc();
        self.0.upstream_flush_active.inc();
    }
    fn flush_ended(&self) {
        self.0.upstream_flush_active.dec();
    }
}

/// Serves one downstream connection of a TCP proxy listener until both
/// sides are closed.
pub async fn serve_connection(ctx: Rc<ShardCtx>, listener: Rc<TcpProxyListener>, stream: Stream, peer: SocketAddr) {
    let stats = &listener.stats;
    stats.downstream_cx_total.inc();
    listener.listener_stats.downstream_cx_total.inc();
    listener.listener_stats.downstream_cx_active.inc();
    let opened = Instant::now();
    if let Some(conn) = crate::tls::establish(listener.tls.as_deref(), stream).await {
        // A removed listener's connections run on until `--drain-time-s`.
        let work = std::pin::pin!(proxy(&ctx, &listener, &conn, peer));
        if ctx.until_hard_close(&listener.config.name, work).await.is_none() {
            tracing::debug!(listener = %listener.config.name, %peer, "tcp proxy connection closed: listener drained");
        }
    }
    listener.listener_stats.downstream_cx_active.dec();
    listener.listener_stats.downstream_cx_destroy.inc();
    listener.listener_stats.downstream_cx_length_ms.record(opened.elapsed());
}

async fn proxy(ctx: &ShardCtx, listener: &TcpProxyListener, stream: &Conn, peer: SocketAddr) {
    if listener.rbac.has_network() {
        let identity = stream.tls().map(|t| t.peer());
        let identity = identity.as_ref().and_then(|p| p.as_ref());
        if let ConnVerdict::Denied { delay } = listener.rbac.check_connection_with(peer, stream.local_addr(), identity)
        {
            if let Some(d) = delay {
                sleep_until(now() + d).await;
            }
            return;
        }
    }
    let proxy = &listener.config.proxy;
    let snapshot = ctx.snapshot();
    let cluster_name = match &proxy.target {
        TcpProxyTarget::Cluster(name) => name.as_str(),
        TcpProxyTarget::Weighted(list) => pick_weighted(list, ctx.next_random()),
    };
    let Some(cluster) = snapshot.clusters.get(cluster_name).cloned() else {
        listener.stats.downstream_cx_no_route.inc();
        return;
    };
    let Some(upstream) = connect(&cluster, proxy.max_connect_attempts).await else {
        return;
    };
    let host = upstream.host.clone();
    host.request_started();
    let bytes = Bytes(&listener.stats);
    let (end, moved) =
        splice(stream, &upstream.stream, b"", b"", listener.buffer_size(), proxy.idle_timeout, &bytes).await;
    host.request_finished();
    // Bytes read but never written (a side failed) are no longer buffered.
    let stats = &listener.stats;
    stats.downstream_cx_rx_bytes_buffered.sub(moved.a_to_b_unsent as i64);
    stats.downstream_cx_tx_bytes_buffered.sub(moved.b_to_a_unsent as i64);
    if end == TunnelEnd::IdleTimeout {
        stats.idle_timeout.inc();
    }
    tracing::debug!(
        listener = %listener.config.name,
        %peer,
        upstream = %host.addr,
        ?end,
        to_upstream = moved.a_to_b,
        to_downstream = moved.b_to_a,
        "tcp proxy connection ended"
    );
}

/// Weighted pick: `r` uniformly in `0..sum(weights)`.
fn pick_weighted(list: &[(String, u32)], random: u64) -> &str {
    let total: u64 = list.iter().map(|(_, w)| u64::from(*w)).sum();
    let mut r = random % total.max(1);
    for (name, w) in list {
        if r < u64::from(*w) {
            return name;
        }
        r -= u64::from(*w);
    }
    &list[list.len() - 1].0
}

/// Up to `attempts` connects, each to a newly picked host.
async fn connect(cluster: &Rc<crate::upstream::ClusterRuntime>, attempts: u32) -> Option<Box<UpstreamConn>> {
    for attempt in 1..=attempts {
        let Some(picked) = cluster.pick(&mut || None) else {
            tracing::debug!(cluster = %cluster.config.name, "tcp proxy: no host to connect to");
            return None;
        };
        match picked.cluster.connect(&picked.host).await {
            Ok(conn) => return Some(conn),
            Err(e) => tracing::debug!(
                cluster = %cluster.config.name,
                host = %picked.host.addr,
                attempt,
                reason = e.reason(),
                "tcp proxy: upstream connect failed"
            ),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::pick_weighted;

    #[test]
    fn weighted_pick_follows_the_weights() {
        let list = vec![("a".to_string(), 1), ("b".to_string(), 3)];
        let mut counts = [0u32; 2];
        for r in 0..4000u64 {
            match pick_weighted(&list, r) {
                "a" => counts[0] += 1,
                "b" => counts[1] += 1,
                other => panic!("{other}"),
            }
        }
        assert_eq!(counts, [1000, 3000]);
    }
}
