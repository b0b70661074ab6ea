//! Upstream clusters as one shard sees them: hosts, load balancing,
//! passive health and per-shard connection pools.
//!
//! Each shard owns a `ClusterRuntime` per cluster: its own host list (built
//! from the snapshot and, for STRICT_DNS, from the resolver's results), its
//! own balancer (`lb::Balancer`, Envoy's priority levels and pickers) and
//! its own idle connections.  Nothing here is shared with another shard, so
//! a pick is a `RefCell` borrow and a few integer operations, a checkout is
//! a `Vec::pop` and a release a `Vec::push`.  Host stats are single-writer
//! slots of the shared store.
//!
//! Passive health: a host whose connect fails (refused or timed out) is
//! taken out of this shard's balancer for a jittered back-off (1 s doubling
//! to 30 s), which is what moves traffic to the next priority or the next
//! cluster of an aggregate; when the back-off expires the host is eligible
//! again, and a successful connect clears its failure count.  Other shards
//! learn about a dead host on their own first failure — there is no
//! cross-shard state on the request path.
//!
//! Aggregate clusters (`envoy.clusters.aggregate`) have no hosts: their
//! runtime links to its members' runtimes on the same shard and picks a
//! member's priority level over the members' linearized levels, then lets
//! that member pick the host.
//!
//! Traffic governance lives in submodules: `retry` (the retry state
//! machine), `circuit_breaker` (cluster resource limits shared by all
//! shards), `outlier` (outlier detection and the cross-shard host-health
//! view: a host is in this shard's balancer only if it is neither backed
//! off here nor ejected / failing health checks everywhere), `health_check`
//! (active HTTP/TCP checks on a side thread, feeding that view).  `ClusterRuntime` wires them to pools and picks.
//!
//! This module must not parse HTTP; it hands out and takes back streams.

pub mod circuit_breaker;
pub mod grpc_health;
pub mod health_check;
pub mod http2;
pub mod lb;
pub mod outlier;
pub mod retry;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use control::model::{Cluster, DiscoveryType, EndpointAddress, UpstreamProtocol};
use slab::Slab;

use crate::runtime::{now, timeout, Sleep};
use crate::stats::{ClusterStats, Counter, HostStats, Scope, StatsStore};

use crate::tls::client::{ClientTls, ClientTlsStats};
use crate::tls::Conn;
use crate::transport;
use circuit_breaker::{ClusterResources, Guard, Resource};
use outlier::{ClusterHealth, HostHealth, Outcome};

use lb::{Balancer, LbHost, Linearized};

/// One resolved endpoint of a cluster, on one shard.
pub struct Host {
    pub addr: SocketAddr,
    /// The DNS name a STRICT_DNS endpoint resolved from (empty for IP
    /// endpoints): what `auto_host_rewrite` puts in the Host header.
    pub hostname: String,
    pub weight: u32,
    pub priority: u32,
    pub stats: HostStats,
    idle: RefCell<Vec<IdleConn>>,
    /// Position in the cluster's balancer (moves when the host list changes).
    lb_index: Cell<usize>,
    /// Consecutive failed connects; 0 once one succeeds.
    failures: Cell<u32>,
    /// Out of the balancer until then (passive health).
    down_until: Cell<Option<Instant>>,
    /// Requests in flight to this host from this shard (LEAST_REQUEST).
    active: Cell<u32>,
    /// Health shared by every shard (outlier ejection, active checks).
    pub health: Arc<HostHealth>,
    /// This shard's multiplexed HTTP/2 connections to the host.
    h2: http2::HostPool,
    /// Pending requests (`max_connections` reached) waiting on this shard
    /// for a connection to the host; woken when one is released here.  Each
    /// wait removes its own entry when it ends.
    pending: RefCell<Slab<Waker>>,
}

impl Host {
    /// Wakes the requests pending on this host: a connection (or room on
    /// one) was just released.  All of them, since a waiter may already
    /// have moved on (its timer fired); the ones that find nothing wait again.
    fn wake_pending(&self) {
        let pending = self.pending.borrow();
        // Runs on every release; a slab's iterator walks its vacant slots too.
        if pending.is_empty() {
            return;
        }
        for (_, waker) in pending.iter() {
            waker.wake_by_ref();
        }
    }

    /// Counts a request as in flight (stats and LEAST_REQUEST's view).
    pub fn request_started(&self) {
        self.active.set(self.active.get() + 1);
        self.stats.rq_active.inc();
    }

    pub fn request_finished(&self) {
        self.active.set(self.active.get().saturating_sub(1));
        self.stats.rq_active.dec();
    }

    /// Whether this shard currently keeps the host out of its balancer.
    pub fn is_down(&self) -> bool {
        self.down_until.get().is_some()
    }

    /// Whether the balancer may pick the host: not backed off on this
    /// shard, not ejected nor failing health checks anywhere.
    fn lb_healthy(&self) -> bool {
        !self.is_down() && self.health.is_healthy()
    }
}

struct IdleConn {
    conn: Box<UpstreamConn>,
    since: Instant,
}

/// Why no upstream connection could be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectFailure {
    Refused,
    Timeout,
    /// A circuit breaker (`max_connections` with `max_pending_requests`,
    /// or `max_requests`) refused the request: 503 with `x-envoy-overloaded`.
    Overflow,
}

impl ConnectFailure {
    /// Envoy's reset-reason wording, used in local reply bodies.
    pub fn reason(self) -> &'static str {
        match self {
            ConnectFailure::Refused => "connection failure",
            ConnectFailure::Timeout => "connection timeout",
            ConnectFailure::Overflow => "overflow",
        }
    }
}

/// An upstream connection checked out of (or headed back to) a pool.
///
/// Always handled boxed (`Box<UpstreamConn>`, allocated once per
/// connection): a request moves its connection from the idle pool into the
/// exchange and back, and at ~400 bytes (buffer, response head, stream) each
/// of those moves was a memcpy of seven cache lines, mostly cold ones.
pub struct UpstreamConn {
    /// Plain TCP, or TLS when the cluster has a `transport_socket`.
    pub stream: Conn,
    pub host: Rc<Host>,
    /// Requests already sent on this connection.
    pub served: u32,
    /// Receive buffer and response head, reused for every exchange.
    pub buf: crate::proxy::RecvBuf,
    pub head: crate::http1::ResponseHead,
    /// The connection's place in the stats and `max_connections`: held by
    /// an HTTP/1.1 connection itself; an HTTP/2 stream (`http2.rs`) has
    /// none, its multiplexed connection holds it.
    _lease: Option<ConnLease>,
    /// HTTP/2 streams: how the upstream ended the stream, if it reset it.
    h2_reset: Option<Rc<Cell<Option<h2::Reason>>>>,
}

impl UpstreamConn {
    pub fn reused(&self) -> bool {
        self.served > 0
    }

    /// Whether this is one stream of a multiplexed HTTP/2 connection.
    pub fn is_h2(&self) -> bool {
        self.h2_reset.is_some()
    }

    /// The RST_STREAM (or GOAWAY) code the upstream ended this HTTP/2
    /// stream with, if it did.
    pub fn h2_reset(&self) -> Option<h2::Reason> {
        self.h2_reset.as_ref().and_then(|r| r.get())
    }
}

/// An open upstream connection's share of the cluster and host stats and
/// of `max_connections`, given back when the connection ends.
pub(crate) struct ConnLease {
    host: Rc<Host>,
    cluster_cx_active: crate::stats::Gauge,
    cluster_cx_destroy: crate::stats::Counter,
    /// The connection's unit of the cluster's `max_connections`.
    _cx_guard: Guard,
}

impl Drop for ConnLease {
    fn drop(&mut self) {
        self.cluster_cx_active.dec();
        self.cluster_cx_destroy.inc();
        self.host.stats.cx_active.dec();
    }
}

/// The outcome of a pick: the host, and the cluster that owns it (the
/// routed cluster itself, or the member an aggregate delegated to).  The
/// owner's pool, connect timeout and codec options serve the request.
pub struct Picked {
    pub cluster: Rc<ClusterRuntime>,
    pub host: Rc<Host>,
}

/// A shard's clusters by name.  Looked up on every request (FxHash: the
/// keys come from config, never from a peer).
pub type ClusterMap = rustc_hash::FxHashMap<String, Rc<ClusterRuntime>>;

/// A cluster on one shard.
pub struct ClusterRuntime {
    pub config: Arc<Cluster>,
    pub stats: ClusterStats,
    /// `cluster.<name>.lb_healthy_panic`: picks made in a panicking level.
    lb_healthy_panic: Counter,
    /// Retry and circuit-breaker counters `ClusterStats` lacks.
    pub retry_stats: GovernanceStats,
    /// Circuit-breaker resources, shared with every shard.
    pub resources: Arc<ClusterResources>,
    /// Outlier detection and host health, shared with every shard.
    pub health: Arc<ClusterHealth>,
    /// The health generation this shard's balancer reflects.
    seen_health: Cell<u64>,
    hosts: RefCell<Vec<Rc<Host>>>,
    lb: RefCell<Balancer>,
    /// Earliest back-off expiry among this shard's down hosts.
    next_recovery: Cell<Option<Instant>>,
    /// Aggregate clusters: the members' runtimes in failover order (a
    /// member missing from the snapshot is skipped, as in Envoy).
    members: RefCell<Vec<Rc<ClusterRuntime>>>,
    linearized: RefCell<Linearized>,
    /// TLS origination (`transport_socket`), this shard's configs and session cache.
    pub tls: Option<ClientTls>,
}

impl ClusterRuntime {
    pub fn new(
        config: Arc<Cluster>,
        store: &StatsStore,
        slot: usize,
        resolved: Option<&[SocketAddr]>,
    ) -> ClusterRuntime {
        let stats = ClusterStats::new(store, &config.name, slot);
        let lb_healthy_panic = store.counter(&Scope::Cluster(config.name.clone()), "lb_healthy_panic", slot);
        let seed = std::collections::hash_map::RandomState::new().hash_one((&config.name, slot));
        let lb = Balancer::new(&config, Vec::new(), &[], seed);
        let retry_stats = GovernanceStats::new(store, &config.name, slot);
        let resources = ClusterResources::shared(&config, store);
        let health = ClusterHealth::shared(&config, store);
        let tls = config
            .tls
            .as_ref()
            .map(|t| ClientTls::new(t.clone(), ClientTlsStats::new(store, &config.name, slot), &config.name));
        let rt = ClusterRuntime {
            tls,
            seen_health: Cell::new(health.generation()),
            health,
            config,
            stats,
            lb_healthy_panic,
            retry_stats,
            resources,
            hosts: RefCell::new(Vec::new()),
            lb: RefCell::new(lb),
            next_recovery: Cell::new(None),
            members: RefCell::new(Vec::new()),
            linearized: RefCell::new(Linearized::default()),
        };
        rt.set_hosts(store, slot, resolved);
        rt
    }

    /// Rebuilds the host list from the config plus DNS results, keeping the
    /// `Host` (idle connections and passive-health state included) of every
    /// address that stays.  The balancer is rebuilt only if the list changed.
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
            let stats =
                store.register_host_named(&self.config.name, &addr.to_string(), &hostname, weight, priority, slot);
            next.push(Rc::new(Host {
                addr,
                hostname,
                weight,
                priority,
                stats,
                idle: RefCell::new(Vec::new()),
                pending: RefCell::new(Slab::new()),
                lb_index: Cell::new(0),
                failures: Cell::new(0),
                down_until: Cell::new(None),
                active: Cell::new(0),
                health: self.health.host(addr),
                h2: http2::HostPool::default(),
            }));
        }
        let unchanged = old.len() == next.len() && old.iter().zip(&next).all(|(a, b)| Rc::ptr_eq(a, b));
        drop(old);
        let total = next.len() as i64;
        self.stats.membership_total.set(total);
        self.stats.membership_healthy.set(total);
        if unchanged && !next.is_empty() {
            return;
        }
        for (i, h) in next.iter().enumerate() {
            h.lb_index.set(i);
        }
        let lb_hosts: Vec<LbHost> =
            next.iter().map(|h| LbHost { addr: h.addr, weight: h.weight, priority: h.priority }).collect();
        let down: Vec<bool> = next.iter().map(|h| !h.lb_healthy()).collect();
        let seed = self.lb.borrow_mut().random();
        *self.lb.borrow_mut() = Balancer::new(&self.config, lb_hosts, &down, seed);
        self.next_recovery.set(next.iter().filter_map(|h| h.down_until.get()).min());
        *self.hosts.borrow_mut() = next;
    }

    pub fn hosts(&self) -> Vec<Rc<Host>> {
        self.hosts.borrow().clone()
    }

    /// Takes over the hosts of `previous` (the same cluster before an
    /// endpoint-only update, e.g. EDS) that this config still lists, with
    /// their idle pooled connections and passive-health state.
    pub fn adopt_hosts(
        &self,
        previous: &ClusterRuntime,
        store: &StatsStore,
        slot: usize,
        resolved: Option<&[SocketAddr]>,
    ) {
        *self.hosts.borrow_mut() = previous.hosts();
        self.set_hosts(store, slot, resolved);
    }

    /// Aggregate clusters: points at the members' runtimes in `clusters`
    /// (this shard's snapshot).  Called on every snapshot build, so a member
    /// whose runtime was replaced is picked up.
    pub fn link_members(&self, clusters: &ClusterMap) {
        if self.config.discovery != DiscoveryType::Aggregate {
            return;
        }
        let members: Vec<Rc<ClusterRuntime>> = self
            .config
            .aggregate_clusters
            .iter()
            .filter_map(|name| clusters.get(name))
            .filter(|m| m.config.discovery != DiscoveryType::Aggregate)
            .cloned()
            .collect();
        *self.members.borrow_mut() = members;
        *self.linearized.borrow_mut() = Linearized::default();
    }

    /// Picks the host for a request.  `hash` computes the route's request
    /// hash; it is called only if the picking balancer hashes (so a cookie
    /// is generated only when it is used, as in Envoy), at most once.
    pub fn pick(self: &Rc<Self>, hash: &mut dyn FnMut() -> Option<u64>) -> Option<Picked> {
        self.pick_at(now(), hash)
    }

    /// `pick` with the time passed in (the shard loop's clock in service,
    /// any instant in tests).
    fn pick_at(self: &Rc<Self>, t: Instant, hash: &mut dyn FnMut() -> Option<u64>) -> Option<Picked> {
        if self.config.discovery == DiscoveryType::Aggregate {
            return self.pick_aggregate(t, hash);
        }
        self.recover_due(t);
        self.sync_health(t);
        let h = if self.config.lb_policy.uses_hash() { hash() } else { None };
        let hosts = self.hosts.borrow();
        let pick = self.lb.borrow_mut().pick(h, &|i| hosts[i as usize].active.get())?;
        if pick.panic {
            self.lb_healthy_panic.inc();
        }
        Some(Picked { cluster: self.clone(), host: hosts[pick.host as usize].clone() })
    }

    fn pick_aggregate(&self, t: Instant, hash: &mut dyn FnMut() -> Option<u64>) -> Option<Picked> {
        let members = self.members.borrow();
        for m in members.iter() {
            m.recover_due(t);
            m.sync_health(t);
        }
        let mut lin = self.linearized.borrow_mut();
        if lin.is_stale(members.iter().map(|m| m.lb.borrow().generation())) {
            let balancers: Vec<std::cell::Ref<'_, Balancer>> = members.iter().map(|m| m.lb.borrow()).collect();
            let refs: Vec<&Balancer> = balancers.iter().map(|b| &**b).collect();
            lin.rebuild(&refs, self.config.healthy_panic_threshold);
        }
        let (member_index, level) = lin.choose(self.lb.borrow_mut().random())?;
        let member = &members[member_index];
        let h = if member.config.lb_policy.uses_hash() { hash() } else { None };
        let hosts = member.hosts.borrow();
        let pick = member.lb.borrow_mut().pick_in_level(level, h, &|i| hosts[i as usize].active.get())?;
        if pick.panic {
            member.lb_healthy_panic.inc();
        }
        Some(Picked { cluster: member.clone(), host: hosts[pick.host as usize].clone() })
    }

    /// Puts hosts whose back-off has expired back into the balancer.
    fn recover_due(&self, t: Instant) {
        match self.next_recovery.get() {
            Some(due) if t >= due => {}
            _ => return,
        }
        let hosts = self.hosts.borrow();
        let mut lb = self.lb.borrow_mut();
        let mut next: Option<Instant> = None;
        for h in hosts.iter() {
            match h.down_until.get() {
                Some(until) if t >= until => {
                    h.down_until.set(None);
                    lb.set_healthy(h.lb_index.get(), h.health.is_healthy());
                    tracing::debug!(cluster = %self.config.name, host = %h.addr, "upstream host back in rotation after back-off");
                }
                Some(until) => next = Some(next.map_or(until, |n| n.min(until))),
                None => {}
            }
        }
        self.next_recovery.set(next);
    }

    /// The host's index in the current balancer, if it is still a member.
    fn index_of(&self, host: &Rc<Host>) -> Option<usize> {
        let i = host.lb_index.get();
        self.hosts.borrow().get(i).filter(|h| Rc::ptr_eq(h, host)).map(|_| i)
    }

    fn connect_failed(&self, host: &Rc<Host>, t: Instant) {
        let failures = host.failures.get().saturating_add(1);
        host.failures.set(failures);
        let mut lb = self.lb.borrow_mut();
        let back_off: Duration = lb::backoff(failures, lb.random());
        let until = t + back_off;
        host.down_until.set(Some(until));
        if let Some(i) = self.index_of(host) {
            lb.set_healthy(i, false);
        }
        self.next_recovery.set(Some(self.next_recovery.get().map_or(until, |n| n.min(until))));
        tracing::info!(
            cluster = %self.config.name,
            host = %host.addr,
            failures,
            back_off_ms = back_off.as_millis() as u64,
            "upstream host out of rotation after a failed connect"
        );
    }

    fn connect_succeeded(&self, host: &Rc<Host>) {
        if host.failures.get() == 0 {
            return;
        }
        host.failures.set(0);
        if host.down_until.take().is_some() {
            if let Some(i) = self.index_of(host) {
                self.lb.borrow_mut().set_healthy(i, host.health.is_healthy());
            }
        }
    }

    /// Runs the outlier interval if due, and brings this shard's balancer
    /// in line with the shared health view when it changed.
    fn sync_health(&self, t: Instant) {
        if !self.config.health_checks.is_empty() {
            self.health.note_traffic();
        }
        if self.config.outlier_detection.is_some() {
            let random = self.lb.borrow_mut().random();
            self.health.tick(t, random);
        }
        let g = self.health.generation();
        if g == self.seen_health.get() {
            return;
        }
        self.seen_health.set(g);
        let hosts = self.hosts.borrow();
        let mut lb = self.lb.borrow_mut();
        for (i, h) in hosts.iter().enumerate() {
            lb.set_healthy(i, h.lb_healthy());
        }
        let healthy = hosts.iter().filter(|h| h.health.is_healthy()).count();
        self.stats.membership_healthy.set(healthy as i64);
    }

    /// Feeds outlier detection with an attempt's response status.
    pub fn host_result(&self, host: &Host, status: u16) {
        if self.config.outlier_detection.is_some() {
            let random = self.lb.borrow_mut().random();
            self.health.report(&host.health, Outcome::Response(status), now(), random);
        }
    }

    /// Feeds outlier detection with an attempt that got no response.
    pub fn host_failure(&self, host: &Host) {
        if self.config.outlier_detection.is_some() {
            let random = self.lb.borrow_mut().random();
            self.health.report(&host.health, Outcome::LocalFailure, now(), random);
        }
    }

    /// Reuses an idle connection to `host` if one is still good, otherwise
    /// opens a new one within `connect_timeout`.
    pub async fn checkout(&self, host: &Rc<Host>) -> Result<Box<UpstreamConn>, ConnectFailure> {
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
        if let Some(guard) = self.resources.try_acquire(false, Resource::Connections) {
            return self.connect_with(host, guard).await;
        }
        self.wait_pending(host).await
    }

    /// `max_connections` is reached: the request waits for an idle
    /// connection to this host or for room to open one.
    async fn wait_pending(&self, host: &Rc<Host>) -> Result<Box<UpstreamConn>, ConnectFailure> {
        self.as_pending_request(host, async || {
            loop {
                let idle = host.idle.borrow_mut().pop();
                let Some(idle) = idle else { break };
                if idle.conn.stream.is_idle_usable() {
                    return Some(Ok(idle.conn));
                }
            }
            let guard = self.resources.try_acquire(false, Resource::Connections)?;
            Some(self.connect_with(host, guard).await)
        })
        .await
    }

    /// Waits as a pending request (within `max_pending_requests`, else
    /// overflow) until `attempt` gets somewhere, at most `connect_timeout`.
    /// A connection to `host` released on this shard wakes the wait at once;
    /// room made anywhere else (a connection closed, or released on another
    /// shard) is found by re-checking on a short timer, since shards do not
    /// wake each other per request.
    async fn as_pending_request<T>(
        &self,
        host: &Host,
        mut attempt: impl AsyncFnMut() -> Option<Result<T, ConnectFailure>>,
    ) -> Result<T, ConnectFailure> {
        self.retry_stats.upstream_cx_overflow.inc();
        let Some(_pending) = self.resources.try_acquire(false, Resource::PendingRequests) else {
            self.stats.upstream_rq_pending_overflow.inc();
            return Err(ConnectFailure::Overflow);
        };
        self.stats.upstream_rq_pending_total.inc();
        self.stats.upstream_rq_pending_active.inc();
        let give_up = now() + self.config.connect_timeout;
        let result = loop {
            if let Some(r) = attempt().await {
                break r;
            }
            let t = now();
            if t >= give_up {
                self.stats.upstream_cx_connect_timeout.inc();
                break Err(ConnectFailure::Timeout);
            }
            let recheck = crate::runtime::sleep_until((t + PENDING_RECHECK).min(give_up));
            PendingWait { host, recheck, key: None }.await;
        };
        self.stats.upstream_rq_pending_active.dec();
        result
    }

    /// Admits one upstream request against `max_requests`.
    pub fn admit_request(&self) -> Result<Guard, ConnectFailure> {
        match self.resources.try_acquire(false, Resource::Requests) {
            Some(g) => Ok(g),
            None => {
                self.stats.upstream_rq_pending_overflow.inc();
                Err(ConnectFailure::Overflow)
            }
        }
    }

    /// Admits one retry against `max_retries` or the retry budget; the
    /// guard is held until the retried attempt ends.
    pub fn admit_retry(&self) -> Option<Guard> {
        self.resources.try_acquire(false, Resource::Retries)
    }

    /// Opens a fresh connection (also used to retry a request whose reused
    /// connection turned out to be closed).
    pub async fn connect(&self, host: &Rc<Host>) -> Result<Box<UpstreamConn>, ConnectFailure> {
        // Replaces a connection that was just dropped: counted, not limited.
        let guard = self.resources.acquire_unchecked(false, Resource::Connections);
        self.connect_with(host, guard).await
    }

    async fn connect_with(&self, host: &Rc<Host>, guard: Guard) -> Result<Box<UpstreamConn>, ConnectFailure> {
        self.stats.upstream_cx_http1_total.inc();
        let stream = self.open(host, None).await?;
        Ok(Box::new(UpstreamConn {
            stream,
            host: host.clone(),
            served: 0,
            buf: crate::proxy::RecvBuf::new(16 * 1024, crate::proxy::UPSTREAM_HEAD_LIMIT + 4096),
            head: crate::http1::ResponseHead::new(),
            _lease: Some(self.lease(host, guard)),
            h2_reset: None,
        }))
    }

    fn lease(&self, host: &Rc<Host>, guard: Guard) -> ConnLease {
        ConnLease {
            host: host.clone(),
            cluster_cx_active: self.stats.upstream_cx_active.clone(),
            cluster_cx_destroy: self.stats.upstream_cx_destroy.clone(),
            _cx_guard: guard,
        }
    }

    /// Whether a request that arrived over HTTP/2 (`downstream_h2`) or not
    /// goes to this cluster's hosts over HTTP/2 (`upstream_protocol`).
    pub fn speaks_h2(&self, downstream_h2: bool) -> bool {
        match self.config.upstream_protocol {
            UpstreamProtocol::Http1 => false,
            UpstreamProtocol::Http2 => true,
            UpstreamProtocol::UseDownstream => downstream_h2,
        }
    }

    /// `checkout` in the cluster's protocol for this request: an HTTP/2
    /// cluster hands out a stream on a pooled multiplexed connection.
    pub async fn checkout_for(
        &self,
        host: &Rc<Host>,
        downstream_h2: bool,
    ) -> Result<Box<UpstreamConn>, ConnectFailure> {
        if self.speaks_h2(downstream_h2) {
            return self.h2_checkout(host, false).await;
        }
        self.checkout(host).await
    }

    /// `connect` in the cluster's protocol for this request (HTTP/2: a
    /// stream on a new connection).
    pub async fn reconnect_for(
        &self,
        host: &Rc<Host>,
        downstream_h2: bool,
    ) -> Result<Box<UpstreamConn>, ConnectFailure> {
        if self.speaks_h2(downstream_h2) {
            return self.h2_checkout(host, true).await;
        }
        self.connect(host).await
    }

    /// Opens a connection to `host`: TCP connect, then the TLS handshake
    /// when the cluster has a `transport_socket`, both within
    /// `connect_timeout`.  `alpn` replaces the configured `alpn_protocols`
    /// for this connection (an HTTP/2 pool passes `h2`); `None` offers the
    /// configured list.  A handshake or certificate failure is a connect
    /// failure (stats, passive health, `connect-failure` retries); success
    /// counts `upstream_cx_total`/`upstream_cx_active` (the caller's
    /// connection object decrements the gauge when it drops).
    pub async fn open(&self, host: &Rc<Host>, alpn: Option<&[Vec<u8>]>) -> Result<Conn, ConnectFailure> {
        self.stats.upstream_cx_total.inc();
        host.stats.cx_total.inc();
        let started = Instant::now();
        // Boxed: the connect and the TLS handshake are ~3.5 KB of future
        // state, and unboxed they would be part of every request's state
        // (the attempt awaits `checkout`, which may open), though a
        // keep-alive request almost never opens.  One allocation per new
        // connection instead.
        let attempt = Box::pin(async {
            let stream = transport::connect(host.addr).await.map_err(|e| (e, false))?;
            match &self.tls {
                None => Ok(Conn::Plain(stream)),
                Some(tls) => match tls.handshake(stream, host.addr, alpn).await {
                    Ok(s) => Ok(Conn::Tls(Box::new(s))),
                    Err(f) => Err((f.0, true)),
                },
            }
        });
        match timeout(Some(self.config.connect_timeout), attempt).await {
            Ok(Ok(stream)) => {
                self.connect_succeeded(host);
                self.stats.upstream_cx_connect_ms.record(started.elapsed());
                self.stats.upstream_cx_active.inc();
                host.stats.cx_active.inc();
                Ok(stream)
            }
            Ok(Err((e, during_tls))) => {
                tracing::debug!(cluster = %self.config.name, host = %host.addr, error = %e, tls = during_tls, "upstream connect failed");
                self.stats.upstream_cx_connect_fail.inc();
                host.stats.cx_connect_fail.inc();
                self.connect_failed(host, now());
                Err(ConnectFailure::Refused)
            }
            Err(_) => {
                self.stats.upstream_cx_connect_fail.inc();
                self.stats.upstream_cx_connect_timeout.inc();
                host.stats.cx_connect_fail.inc();
                self.connect_failed(host, now());
                Err(ConnectFailure::Timeout)
            }
        }
    }

    /// Parks a connection whose last exchange ended cleanly.
    pub fn release(&self, mut conn: Box<UpstreamConn>) {
        if conn.is_h2() {
            // The stream is done; its connection stays in the host's pool
            // with room for another.
            let host = conn.host.clone();
            drop(conn);
            host.wake_pending();
            return;
        }
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
        // The receive buffer goes back to the shard's pool while the
        // connection waits; the next response takes the warmest one.
        conn.buf.release();
        idle.push(IdleConn { conn, since: now() });
        drop(idle);
        host.wake_pending();
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
            drop(idle);
            let h2_idle = host.h2.sweep(now, idle_timeout);
            if h2_idle > 0 {
                self.stats.upstream_cx_idle_timeout.add(h2_idle as u64);
            }
        }
    }
}

#[cfg(test)]
mod tests;

/// How often a pending request re-checks for a free connection.
const PENDING_RECHECK: Duration = Duration::from_millis(5);

/// One wait of a pending request: until a connection to `host` is released
/// on this shard or the re-check timer fires.  A wake from `release` (or a
/// spurious one) only costs another attempt.
struct PendingWait<'a> {
    host: &'a Host,
    recheck: Sleep,
    key: Option<usize>,
}

impl Future for PendingWait<'_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        // Polled again after registering: woken by a release, by the timer
        // (registered by the first poll below) or spuriously.
        if this.key.is_some() || Pin::new(&mut this.recheck).poll(cx).is_ready() {
            return Poll::Ready(());
        }
        this.key = Some(this.host.pending.borrow_mut().insert(cx.waker().clone()));
        Poll::Pending
    }
}

impl Drop for PendingWait<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.host.pending.borrow_mut().try_remove(key);
        }
    }
}

/// Per-cluster counters of the governance features that the shared
/// `ClusterStats` group does not have (Envoy's names).
pub struct GovernanceStats {
    pub upstream_cx_overflow: Counter,
    pub upstream_rq_per_try_timeout: Counter,
    pub upstream_rq_retry_limit_exceeded: Counter,
    pub upstream_rq_retry_backoff_exponential: Counter,
    pub retry_or_shadow_abandoned: Counter,
}

impl GovernanceStats {
    fn new(store: &StatsStore, cluster: &str, slot: usize) -> GovernanceStats {
        let scope = Scope::Cluster(cluster.to_string());
        let c = |leaf: &str| store.counter(&scope, leaf, slot);
        GovernanceStats {
            upstream_cx_overflow: c("upstream_cx_overflow"),
            upstream_rq_per_try_timeout: c("upstream_rq_per_try_timeout"),
            upstream_rq_retry_limit_exceeded: c("upstream_rq_retry_limit_exceeded"),
            upstream_rq_retry_backoff_exponential: c("upstream_rq_retry_backoff_exponential"),
            retry_or_shadow_abandoned: c("retry_or_shadow_abandoned"),
        }
    }
}

/// How often each shard sweeps its idle upstream connections.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
