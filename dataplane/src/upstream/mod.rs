//! Upstream clusters as one shard sees them: hosts, load balancing and
//! per-shard connection pools.
//!
//! Each shard owns a `ClusterRuntime` per cluster: its own host list (built
//! from the snapshot and, for STRICT_DNS, from the resolver's results), its
//! own round-robin cursor and its own idle connections.  Nothing here is
//! shared with another shard, so a checkout is a `Vec::pop` and a release a
//! `Vec::push`.  Host stats are single-writer slots of the shared store.
//!
//! This module must not parse HTTP; it hands out and takes back streams.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use control::model::{Cluster, EndpointAddress};

use crate::runtime::{now, timeout};
use crate::stats::{ClusterStats, HostStats, StatsStore};
use crate::transport::{self, Stream};

/// One resolved endpoint of a cluster, on one shard.
pub struct Host {
    pub addr: SocketAddr,
    pub weight: u32,
    pub priority: u32,
    pub stats: HostStats,
    idle: RefCell<Vec<IdleConn>>,
}

struct IdleConn {
    conn: UpstreamConn,
    since: Instant,
}

/// Why no upstream connection could be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectFailure {
    Refused,
    Timeout,
}

impl ConnectFailure {
    /// Envoy's reset-reason wording, used in local reply bodies.
    pub fn reason(self) -> &'static str {
        match self {
            ConnectFailure::Refused => "connection failure",
            ConnectFailure::Timeout => "connection timeout",
        }
    }
}

/// An upstream connection checked out of (or headed back to) a pool.
pub struct UpstreamConn {
    pub stream: Stream,
    pub host: Rc<Host>,
    /// Requests already sent on this connection.
    pub served: u32,
    /// Receive buffer and response head, reused for every exchange.
    pub buf: crate::proxy::RecvBuf,
    pub head: crate::http1::ResponseHead,
    cluster_cx_active: crate::stats::Gauge,
    cluster_cx_destroy: crate::stats::Counter,
}

impl UpstreamConn {
    pub fn reused(&self) -> bool {
        self.served > 0
    }
}

impl Drop for UpstreamConn {
    fn drop(&mut self) {
        self.cluster_cx_active.dec();
        self.cluster_cx_destroy.inc();
        self.host.stats.cx_active.dec();
    }
}

/// A cluster on one shard.
pub struct ClusterRuntime {
    pub config: Arc<Cluster>,
    pub stats: ClusterStats,
    hosts: RefCell<Vec<Rc<Host>>>,
    cursor: Cell<usize>,
    /// Hosts of the priority level used for picks: the lowest-numbered one
    /// that has hosts (priority spill-over by health is the LB issue's).
    active: RefCell<Vec<Rc<Host>>>,
}

impl ClusterRuntime {
    pub fn new(config: Arc<Cluster>, store: &StatsStore, slot: usize, resolved: Option<&[SocketAddr]>) -> ClusterRuntime {
        let stats = ClusterStats::new(store, &config.name, slot);
        let rt = ClusterRuntime {
            config,
            stats,
            hosts: RefCell::new(Vec::new()),
            cursor: Cell::new(slot),
            active: RefCell::new(Vec::new()),
        };
        rt.set_hosts(store, slot, resolved);
        rt
    }

    /// Rebuilds the host list from the config plus DNS results, keeping the
    /// `Host` (and its idle connections) of every address that stays.
    pub fn set_hosts(&self, store: &StatsStore, slot: usize, resolved: Option<&[SocketAddr]>) {
        let mut wanted: Vec<(SocketAddr, u32, u32, String)> = Vec::new();
        for ep in &self.config.endpoints {
            match &ep.address {
                EndpointAddress::Socket(a) => wanted.push((*a, ep.weight, ep.priority, String::new())),
                EndpointAddress::Dns { host, port } => {
                    // STRICT_DNS: every address the name resolves to is a host.
                    for a in resolved.unwrap_or(&[]) {
                        if a.port() == *port {
                            wanted.push((*a, ep.weight, ep.priority, host.clone()));
                        }
                    }
                }
            }
        }
        let old = self.hosts.borrow();
        let mut next = Vec::with_capacity(wanted.len());
        for (addr, weight, priority, hostname) in wanted {
            if let Some(h) = old.iter().find(|h| h.addr == addr && h.weight == weight && h.priority == priority) {
                next.push(h.clone());
                continue;
            }
            let stats = store.register_host_named(&self.config.name, &addr.to_string(), &hostname, weight, priority, slot);
            next.push(Rc::new(Host { addr, weight, priority, stats, idle: RefCell::new(Vec::new()) }));
        }
        drop(old);
        let total = next.len() as i64;
        self.stats.membership_total.set(total);
        self.stats.membership_healthy.set(total);
        let lowest = next.iter().map(|h| h.priority).min();
        let active: Vec<Rc<Host>> = next.iter().filter(|h| Some(h.priority) == lowest).cloned().collect();
        *self.active.borrow_mut() = active;
        *self.hosts.borrow_mut() = next;
    }

    pub fn hosts(&self) -> Vec<Rc<Host>> {
        self.hosts.borrow().clone()
    }

    /// Weighted round robin over the active priority level.  Weights repeat a
    /// host in the cycle order by a stride so equal weights alternate.
    pub fn pick(&self) -> Option<Rc<Host>> {
        let active = self.active.borrow();
        if active.is_empty() {
            return None;
        }
        let total: u64 = active.iter().map(|h| h.weight.max(1) as u64).sum();
        let n = self.cursor.get();
        self.cursor.set(n.wrapping_add(1));
        let mut point = (n as u64) % total;
        for h in active.iter() {
            let w = h.weight.max(1) as u64;
            if point < w {
                return Some(h.clone());
            }
            point -= w;
        }
        active.last().cloned()
    }

    /// Reuses an idle connection to `host` if one is still good, otherwise
    /// opens a new one within `connect_timeout`.
    pub async fn checkout(&self, host: &Rc<Host>) -> Result<UpstreamConn, ConnectFailure> {
        let idle_timeout = self.config.upstream_idle_timeout;
        let now = now();
        loop {
            let Some(idle) = host.idle.borrow_mut().pop() else { break };
            if now.duration_since(idle.since) < idle_timeout && idle.conn.stream.is_idle_usable() {
                return Ok(idle.conn);
            }
            if now.duration_since(idle.since) >= idle_timeout {
                self.stats.upstream_cx_idle_timeout.inc();
            } else {
                self.stats.upstream_cx_destroy_remote.inc();
            }
        }
        self.connect(host).await
    }

    /// Opens a fresh connection (also used to retry a request whose reused
    /// connection turned out to be closed).
    pub async fn connect(&self, host: &Rc<Host>) -> Result<UpstreamConn, ConnectFailure> {
        self.stats.upstream_cx_total.inc();
        self.stats.upstream_cx_http1_total.inc();
        host.stats.cx_total.inc();
        let started = Instant::now();
        match timeout(Some(self.config.connect_timeout), transport::connect(host.addr)).await {
            Ok(Ok(stream)) => {
                self.stats.upstream_cx_connect_ms.record(started.elapsed());
                self.stats.upstream_cx_active.inc();
                host.stats.cx_active.inc();
                Ok(UpstreamConn {
                    stream,
                    host: host.clone(),
                    served: 0,
                    buf: crate::proxy::RecvBuf::new(16 * 1024, crate::proxy::UPSTREAM_HEAD_LIMIT + 4096),
                    head: crate::http1::ResponseHead::new(),
                    cluster_cx_active: self.stats.upstream_cx_active.clone(),
                    cluster_cx_destroy: self.stats.upstream_cx_destroy.clone(),
                })
            }
            Ok(Err(e)) => {
                tracing::debug!(cluster = %self.config.name, host = %host.addr, error = %e, "upstream connect failed");
                self.stats.upstream_cx_connect_fail.inc();
                host.stats.cx_connect_fail.inc();
                Err(ConnectFailure::Refused)
            }
            Err(_) => {
                self.stats.upstream_cx_connect_fail.inc();
                self.stats.upstream_cx_connect_timeout.inc();
                host.stats.cx_connect_fail.inc();
                Err(ConnectFailure::Timeout)
            }
        }
    }

    /// Parks a connection whose last exchange ended cleanly.
    pub fn release(&self, mut conn: UpstreamConn) {
        conn.served += 1;
        if let Some(max) = self.config.max_requests_per_connection {
            if conn.served >= max {
                self.stats.upstream_cx_max_requests.inc();
                return;
            }
        }
        let host = conn.host.clone();
        let mut idle = host.idle.borrow_mut();
        if idle.len() >= self.config.max_idle_per_endpoint {
            return;
        }
        idle.push(IdleConn { conn, since: now() });
    }

    /// Drops idle connections that timed out or were closed by the peer.
    /// Run periodically so a closed upstream socket does not linger.
    pub fn sweep_idle(&self, now: Instant) {
        let idle_timeout = self.config.upstream_idle_timeout;
        for host in self.hosts.borrow().iter() {
            let mut idle = host.idle.borrow_mut();
            let before = idle.len();
            idle.retain(|c| now.duration_since(c.since) < idle_timeout && c.conn.stream.is_idle_usable());
            let dropped = before - idle.len();
            if dropped > 0 {
                self.stats.upstream_cx_idle_timeout.add(dropped as u64);
            }
        }
    }
}

/// How often each shard sweeps its idle upstream connections.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
