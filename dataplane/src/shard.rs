//! Shards: one pinned thread each, owning listeners, connections, upstream
//! pools, timers and stat slots.
//!
//! A shard turns the published `Arc<Config>` into a `ShardSnapshot` of its
//! own (route tables, cluster runtimes with their pools, stat handles) and
//! swaps it in between tasks when a new version appears; requests already
//! running keep the snapshot they started with (they hold an `Rc` to it).
//! Nothing in here is shared with another shard; the only cross-thread inputs
//! are the published config, the DNS results and the server's drain flag,
//! each read with one atomic load per loop pass.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use control::model::{Config, HttpConnectionManager, Listener};
use slab::Slab;

use crate::dns::DnsResults;
use crate::http1::Limits;
use crate::router::RouteTable;
use crate::runtime::{now, sleep_until, spawn, JoinHandle, RemoteWaker, Runtime};
use crate::server::ServerState;
use crate::stats::{HttpStats, ListenerStats, StatsStore};
use crate::transport;
use crate::upstream::{ClusterMap, ClusterRuntime, SWEEP_INTERVAL};

/// What every shard reads from the process: the published config and the
/// process-wide services.
pub struct Shared {
    pub config: Arc<ArcSwap<Config>>,
    pub stats: Arc<StatsStore>,
    pub server: Arc<ServerState>,
    pub dns: Arc<DnsResults>,
}

/// An HTTP listener as one shard runs it.
pub struct HttpListener {
    pub config: Arc<Listener>,
    pub hcm: Arc<HttpConnectionManager>,
    pub routes: RouteTable,
    pub stats: HttpStats,
    pub listener_stats: ListenerStats,
    pub limits: Limits,
    /// RBAC filters (HTTP and network), compiled for this snapshot.
    pub rbac: crate::rbac::ListenerRbac,
    /// Local rate limiting and fault injection, for this snapshot.
    pub filters: crate::filters::ListenerFilters,
    /// `http.<stat_prefix>.downstream_cx_upgrades_*` and friends.
    pub upgrade_stats: crate::proxy::upgrade::UpgradeStats,
    /// Downstream TLS, when the listener's filter chains have it.
    pub tls: Option<Rc<crate::tls::ServerTls>>,
}

/// One shard's view of one config version.
pub struct ShardSnapshot {
    pub config: Arc<Config>,
    pub listeners: HashMap<String, Rc<HttpListener>>,
    /// TCP proxy listeners (`envoy.filters.network.tcp_proxy`).
    pub tcp_listeners: HashMap<String, Rc<crate::tcp_proxy::TcpProxyListener>>,
    pub clusters: ClusterMap,
}

/// Shard-local services reached by connection tasks.
pub struct ShardCtx {
    pub slot: usize,
    snapshot: RefCell<Rc<ShardSnapshot>>,
    draining: Cell<bool>,
    drain_waiters: RefCell<Slab<Waker>>,
    /// Config updates that removed a listener on this shard so far: none
    /// keeps `listener_removed` free; a waiter holding many connections
    /// rescans them only when this moves.
    removals: Cell<u64>,
    /// When each removed HTTP listener left the snapshot (written on
    /// removals only): its busy connections are closed `drain_time` later.
    removed_at: RefCell<HashMap<String, Instant>>,
    /// `--drain-time-s`.
    drain_time: Duration,
    date: RefCell<(u64, [u8; 29])>,
    rng: Cell<u64>,
    /// HTTP/1 connections holding their full serving state (not parked).
    unparked: Cell<usize>,
}

/// Counts one unparked HTTP/1 connection for as long as it lives.
pub struct UnparkedGuard<'a>(&'a ShardCtx);

impl Drop for UnparkedGuard<'_> {
    fn drop(&mut self) {
        self.0.unparked.set(self.0.unparked.get() - 1);
    }
}

impl ShardCtx {
    /// Marks an HTTP/1 connection as holding its full state until the guard drops.
    pub fn count_unparked(&self) -> UnparkedGuard<'_> {
        self.unparked.set(self.unparked.get() + 1);
        UnparkedGuard(self)
    }

    /// HTTP/1 connections of this shard holding their full serving state.
    pub fn unparked(&self) -> usize {
        self.unparked.get()
    }

    pub fn snapshot(&self) -> Rc<ShardSnapshot> {
        self.snapshot.borrow().clone()
    }

    pub fn draining(&self) -> bool {
        self.draining.get()
    }

    /// Resolves once the shard starts draining.
    pub fn drain_signal(&self) -> DrainSignal<'_> {
        DrainSignal { ctx: self, key: None, listener: None }
    }

    /// Resolves once the shard starts draining or HTTP listener `name` is
    /// no longer in the snapshot (removed by a config update): an idle
    /// connection of a removed listener closes at once.
    pub fn listener_drain_signal<'a>(&'a self, name: &'a str) -> DrainSignal<'a> {
        DrainSignal { ctx: self, key: None, listener: Some(name) }
    }

    /// How many config updates so far removed a listener on this shard.
    pub fn removals(&self) -> u64 {
        self.removals.get()
    }

    /// HTTP listener `name` is not in the snapshot in force.  Free until a
    /// listener has ever been removed on this shard (then one map lookup).
    #[inline]
    pub fn listener_removed(&self, name: &str) -> bool {
        self.removals.get() > 0 && {
            let snapshot = self.snapshot.borrow();
            !snapshot.listeners.contains_key(name) && !snapshot.tcp_listeners.contains_key(name)
        }
    }

    /// Runs `work` (one connection's work on listener `name`) to its
    /// end, unless the listener is removed by a config update and is still
    /// busy `--drain-time-s` after the removal: then `None` is returned
    /// and the caller drops `work` (closing its sockets).  (On server drain the
    /// shard itself stops at the deadline.)  Idle connections of a removed
    /// listener close at once (`listener_drain_signal`); this bounds the
    /// busy ones, as Envoy's listener drain does.
    ///
    /// `work` is pinned by the caller: taken by value, it would sit in this
    /// future twice (as the argument and as the pinned local; the compiler
    /// does not overlap them), which for a connection task doubled the
    /// request path's state (11.3 KB instead of 5.6).
    pub async fn until_hard_close<F: Future>(&self, name: &str, mut work: Pin<&mut F>) -> Option<F::Output> {
        let mut removed = std::pin::pin!(self.listener_drain_signal(name));
        let mut deadline: Option<crate::runtime::Sleep> = None;
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = work.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            if deadline.is_none() && removed.as_mut().poll(cx).is_ready() {
                deadline = Some(sleep_until(self.hard_close_at(name)));
            }
            match deadline.as_mut().map(|d| Pin::new(d).poll(cx)) {
                Some(Poll::Ready(())) => Poll::Ready(None),
                _ => Poll::Pending,
            }
        })
        .await
    }

    /// When the busy connections of listener `name`, drained (removed, or
    /// the whole server draining), are closed: `--drain-time-s` after the
    /// removal, or from now when the removal time is unknown.
    pub fn hard_close_at(&self, name: &str) -> Instant {
        let since = self.removed_at.borrow().get(name).copied().unwrap_or_else(now);
        since + self.drain_time
    }

    /// Wakes every drain waiter so each re-checks its listener.  The
    /// entries stay: each waiter owns its key until it is dropped.
    fn wake_drain_waiters(&self) {
        for (_, w) in self.drain_waiters.borrow().iter() {
            w.wake_by_ref();
        }
    }

    fn start_draining(&self) {
        self.draining.set(true);
        for w in self.drain_waiters.borrow_mut().drain() {
            w.wake();
        }
    }

    /// The IMF-fixdate for the `date` header, formatted once per second.
    pub fn http_date(&self) -> [u8; 29] {
        let wall = SystemTime::now();
        let secs = wall.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let mut cached = self.date.borrow_mut();
        if cached.0 != secs {
            // Written in place: an IMF-fixdate is always 29 bytes (RFC 9110 §5.6.7).
            use std::io::Write as _;
            let mut cursor = std::io::Cursor::new(&mut cached.1[..]);
            if write!(cursor, "{}", httpdate::HttpDate::from(wall)).is_ok() {
                cached.0 = secs;
            }
        }
        cached.1
    }

    /// A random UUID v4 (RFC 9562 §5.4) for `x-request-id`, from a per-shard
    /// generator: request ids need uniqueness, not secrecy.
    pub fn request_id(&self) -> [u8; 36] {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.next_random().to_le_bytes());
        bytes[8..].copy_from_slice(&self.next_random().to_le_bytes());
        let id = uuid::Builder::from_random_bytes(bytes).into_uuid();
        let mut out = [0u8; 36];
        id.hyphenated().encode_lower(&mut out);
        out
    }

    /// SplitMix64.
    pub(crate) fn next_random(&self) -> u64 {
        let mut z = self.rng.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        self.rng.set(z);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

pub struct DrainSignal<'a> {
    ctx: &'a ShardCtx,
    key: Option<usize>,
    listener: Option<&'a str>,
}

impl Future for DrainSignal<'_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        this.ctx.poll_drain(this.listener, &mut this.key, cx)
    }
}

impl Drop for DrainSignal<'_> {
    fn drop(&mut self) {
        self.ctx.forget_drain_waiter(self.key);
    }
}

impl ShardCtx {
    /// `DrainSignal`'s poll for owners that cannot hold a borrowed signal
    /// (hand-written futures): ready once the shard drains or, with
    /// `listener`, once that listener is removed.  `key` is the waiter's
    /// slot, registered on first pending poll; pass it to
    /// `forget_drain_waiter` when the waiter goes away.
    pub fn poll_drain(&self, listener: Option<&str>, key: &mut Option<usize>, cx: &mut Context<'_>) -> Poll<()> {
        if self.draining.get() || listener.is_some_and(|n| self.listener_removed(n)) {
            return Poll::Ready(());
        }
        let mut waiters = self.drain_waiters.borrow_mut();
        match *key {
            // Every busy connection polls this on each wake: keep the stored
            // waker when it is the same task's (no refcount traffic).
            Some(k) if waiters.contains(k) => {
                if !waiters[k].will_wake(cx.waker()) {
                    waiters[k] = cx.waker().clone();
                }
            }
            _ => *key = Some(waiters.insert(cx.waker().clone())),
        }
        Poll::Pending
    }

    pub fn forget_drain_waiter(&self, key: Option<usize>) {
        if let Some(k) = key {
            self.drain_waiters.borrow_mut().try_remove(k);
        }
    }
}

/// A running shard as the main thread sees it.
pub struct ShardHandle {
    pub index: usize,
    remote: Arc<std::sync::OnceLock<RemoteWaker>>,
    thread: std::thread::JoinHandle<()>,
}

impl ShardHandle {
    /// Kicks the shard's loop so it notices a flag (drain, new config).
    pub fn wake(&self) {
        if let Some(w) = self.remote.get() {
            w.wake();
        }
    }

    /// A waker usable from any thread (e.g. the DNS refresher).
    pub fn waker(&self) -> ShardWaker {
        ShardWaker(self.remote.clone())
    }

    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    pub fn join(self) {
        let _ = self.thread.join();
    }
}

#[derive(Clone)]
pub struct ShardWaker(Arc<std::sync::OnceLock<RemoteWaker>>);

impl ShardWaker {
    pub fn wake(&self) {
        if let Some(w) = self.0.get() {
            w.wake();
        }
    }
}

/// Starts shard `index` pinned to `core` (if given).  Returns once the shard
/// has bound its listeners, or the bind error.
pub fn spawn_shard(
    index: usize,
    core: Option<core_affinity::CoreId>,
    shared: Arc<Shared>,
    drain_time: Duration,
) -> io::Result<ShardHandle> {
    spawn_shard_with(index, core, shared, drain_time, None)
}

/// As [`spawn_shard`], with the DPDK queue pair this shard owns: the shard
/// then runs a userspace stack on it (see `transport::userspace`).
pub fn spawn_shard_with(
    index: usize,
    core: Option<core_affinity::CoreId>,
    shared: Arc<Shared>,
    drain_time: Duration,
    userspace: Option<transport::userspace::ShardLink>,
) -> io::Result<ShardHandle> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<()>>();
    let remote = Arc::new(std::sync::OnceLock::new());
    let remote_slot = remote.clone();
    let thread = std::thread::Builder::new().name(format!("meshgate-shard-{index}")).spawn(move || {
        if let Some(core) = core {
            if !core_affinity::set_for_current(core) {
                tracing::warn!(shard = index, core = core.id, "could not pin shard to its core");
            }
        }
        let rt = match Runtime::new() {
            Ok(rt) => rt,
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return;
            }
        };
        let _ = remote_slot.set(rt.remote_waker());
        if let Some(link) = userspace {
            transport::userspace::install_shard_link(link, shared.stats.clone(), index);
        }
        run_shard(index, rt, shared, drain_time, ready_tx);
    })?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(ShardHandle { index, remote, thread }),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => {
            let _ = thread.join();
            Err(io::Error::other(format!("shard {index} died while starting")))
        }
    }
}

fn run_shard(
    index: usize,
    mut rt: Runtime,
    shared: Arc<Shared>,
    drain_time: Duration,
    ready: std::sync::mpsc::Sender<io::Result<()>>,
) {
    let config = shared.config.load_full();
    let dns_version = shared.dns.version();
    let snapshot = build_snapshot(&config, &shared, index, None);
    let ctx = Rc::new(ShardCtx {
        slot: index,
        snapshot: RefCell::new(Rc::new(snapshot)),
        draining: Cell::new(false),
        drain_waiters: RefCell::new(Slab::new()),
        removals: Cell::new(0),
        removed_at: RefCell::new(HashMap::new()),
        drain_time,
        date: RefCell::new((0, [b' '; 29])),
        rng: Cell::new(seed(index)),
        unparked: Cell::new(0),
    });
    let mut accept_tasks: HashMap<String, (SocketAddr, JoinHandle<()>)> = HashMap::new();
    if let Err(e) = bind_listeners(&ctx, &mut accept_tasks) {
        let _ = ready.send(Err(e));
        return;
    }
    let _ = ready.send(Ok(()));
    drop(ready);
    spawn(sweep_idle_connections(ctx.clone())).detach();

    // `server.worker_<i>.config_generation`: the config version this shard
    // serves, set once its snapshot is rebuilt (xds measures publication
    // with it: update received → every shard serving it).
    let generation =
        shared.stats.gauge(&crate::stats::Scope::Named(format!("server.worker_{index}")), "config_generation", index);
    generation.set(config.version as i64);
    let mut seen_config = config;
    let mut seen_dns = dns_version;
    let mut drain_deadline: Option<Instant> = None;
    loop {
        if let Err(e) = rt.turn(Some(Duration::from_millis(500))) {
            tracing::error!(shard = index, error = %e, "reactor failed; shard stops");
            return;
        }
        if drain_deadline.is_none() && shared.server.is_draining() {
            // Stop accepting: dropping the accept tasks closes the listeners.
            accept_tasks.clear();
            ctx.start_draining();
            drain_deadline = Some(Instant::now() + drain_time);
            tracing::debug!(shard = index, "draining");
        }
        if let Some(deadline) = drain_deadline {
            // Only the idle sweeper is left once every connection ended.
            if rt.live_tasks() <= 1 || Instant::now() >= deadline {
                return;
            }
            continue;
        }
        let latest = shared.config.load();
        let dns_now = shared.dns.version();
        if !Arc::ptr_eq(&latest, &seen_config) || dns_now != seen_dns {
            seen_config = latest.clone();
            seen_dns = dns_now;
            let previous = ctx.snapshot();
            let next = build_snapshot(&seen_config, &shared, index, Some(&previous));
            let t = now();
            let mut listener_removed = false;
            let gone = |n: &&String| !next.listeners.contains_key(*n) && !next.tcp_listeners.contains_key(*n);
            for name in previous.listeners.keys().chain(previous.tcp_listeners.keys()).filter(gone) {
                ctx.removed_at.borrow_mut().insert(name.clone(), t);
                listener_removed = true;
            }
            *ctx.snapshot.borrow_mut() = Rc::new(next);
            generation.set(seen_config.version as i64);
            if listener_removed {
                ctx.removals.set(ctx.removals.get() + 1);
                ctx.wake_drain_waiters();
            }
            if let Err(e) = bind_listeners(&ctx, &mut accept_tasks) {
                tracing::error!(shard = index, error = %e, "binding a new listener failed");
            }
        }
    }
}

fn seed(index: usize) -> u64 {
    let t = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    t ^ ((std::process::id() as u64) << 32) ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Builds this shard's runtime view of `config`, reusing the cluster
/// runtimes (and so the pooled connections) of clusters whose config did
/// not change.
fn build_snapshot(
    config: &Arc<Config>,
    shared: &Shared,
    slot: usize,
    previous: Option<&ShardSnapshot>,
) -> ShardSnapshot {
    let store = &shared.stats;
    let mut clusters = ClusterMap::default();
    for (name, cluster) in &config.clusters {
        let resolved = shared.dns.get(name);
        let reused = previous.and_then(|p| p.clusters.get(name)).filter(|c| Arc::ptr_eq(&c.config, cluster));
        let runtime = match reused {
            Some(c) => {
                c.set_hosts(store, slot, resolved.as_deref());
                c.clone()
            }
            None => {
                let runtime = ClusterRuntime::new(cluster.clone(), store, slot, resolved.as_deref());
                // Only the endpoints changed (EDS): endpoints that stay keep
                // their pooled connections.
                let same =
                    previous.and_then(|p| p.clusters.get(name)).filter(|c| same_but_endpoints(&c.config, cluster));
                if let Some(old) = same {
                    runtime.adopt_hosts(old, store, slot, resolved.as_deref());
                }
                Rc::new(runtime)
            }
        };
        clusters.insert(name.clone(), runtime);
    }
    for runtime in clusters.values() {
        runtime.link_members(&clusters);
    }
    let mut listeners = HashMap::new();
    for l in &config.listeners {
        let hcm = l.http.clone();
        listeners.insert(
            l.name.clone(),
            Rc::new(HttpListener {
                config: l.clone(),
                routes: RouteTable::new(&hcm.route_config),
                stats: HttpStats::new(store, &hcm.stat_prefix, slot),
                listener_stats: ListenerStats::for_address(store, &l.address, slot),
                limits: Limits::from_hcm(&hcm),
                rbac: crate::rbac::ListenerRbac::new(l, store, slot),
                filters: crate::filters::ListenerFilters::new(l, store, slot),
                upgrade_stats: crate::proxy::upgrade::UpgradeStats::new(store, &hcm.stat_prefix, slot),
                tls: l.tls.as_ref().map(|t| {
                    crate::tls::ServerTls::new(t, crate::tls::TlsStats::new(store, &l.address, slot), &l.name)
                }),
                hcm,
            }),
        );
    }
    let tcp_listeners = config
        .tcp_listeners
        .iter()
        .map(|l| (l.name.clone(), Rc::new(crate::tcp_proxy::TcpProxyListener::new(l.clone(), store, slot))))
        .collect();
    ShardSnapshot { config: config.clone(), listeners, tcp_listeners, clusters }
}

/// Whether two versions of a cluster differ in their endpoints only (runs
/// on config changes, never per request).
fn same_but_endpoints(a: &control::model::Cluster, b: &control::model::Cluster) -> bool {
    let strip = |c: &control::model::Cluster| {
        let mut c = c.clone();
        c.endpoints.clear();
        format!("{c:?}")
    };
    strip(a) == strip(b)
}

/// Binds every listener of the current snapshot that has no accept task
/// yet, and stops those that left the config.
fn bind_listeners(ctx: &Rc<ShardCtx>, tasks: &mut HashMap<String, (SocketAddr, JoinHandle<()>)>) -> io::Result<()> {
    let snapshot = ctx.snapshot();
    let addresses = snapshot
        .listeners
        .iter()
        .map(|(name, l)| (name, l.config.address))
        .chain(snapshot.tcp_listeners.iter().map(|(name, l)| (name, l.config.address)));
    let wanted: HashMap<&String, SocketAddr> = addresses.collect();
    tasks.retain(|name, (addr, _)| wanted.get(name) == Some(addr));
    for (name, address) in wanted {
        if tasks.contains_key(name) {
            continue;
        }
        let socket = transport::bind(address)
            .map_err(|e| io::Error::new(e.kind(), format!("listener {name} on {address}: {e}")))?;
        let task = spawn(accept_loop(ctx.clone(), name.clone(), socket));
        tasks.insert(name.clone(), (address, task));
    }
    Ok(())
}

async fn accept_loop(ctx: Rc<ShardCtx>, name: String, socket: transport::Listener) {
    loop {
        match socket.accept().await {
            Ok((stream, peer)) => {
                let snapshot = ctx.snapshot();
                if let Some(listener) = snapshot.listeners.get(&name).cloned() {
                    spawn(crate::tls::serve_http(ctx.clone(), listener, stream, peer)).detach();
                } else if let Some(listener) = snapshot.tcp_listeners.get(&name).cloned() {
                    spawn(crate::tcp_proxy::serve_connection(ctx.clone(), listener, stream, peer)).detach();
                } else {
                    return;
                }
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(listener = %name, error = %e, "accept failed");
                sleep_until(now() + Duration::from_millis(50)).await;
            }
        }
    }
}

async fn sweep_idle_connections(ctx: Rc<ShardCtx>) {
    loop {
        sleep_until(now() + SWEEP_INTERVAL).await;
        let snapshot = ctx.snapshot();
        let t = now();
        for cluster in snapshot.clusters.values() {
            cluster.sweep_idle(t);
        }
        crate::proxy::trim_pools();
        if let Some(stack) = crate::transport::userspace::current() {
            stack.trim_spare_sockets();
        }
    }
}
