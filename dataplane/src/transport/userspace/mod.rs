//! Userspace transport: TCP/IP in the shard (smoltcp) over a frame link
//! (a DPDK queue pair in production, an in-memory wire in tests).
//!
//! What it owns: one smoltcp `Interface` per shard (ARP, ICMP echo — the
//! gateway's address answers ping — IPv4, TCP), the shard's TCP connections
//! and listeners, and the loop hook that moves frames ([`Stack`] implements
//! [`LoopPoller`]).  It implements the transport contract of `super` (the
//! same suite as the kernel backend runs against it, see `tests.rs`).
//! What it must not touch: HTTP, config, other shards' stacks, DPDK calls
//! (those are the `dpdk` crate's; this module only holds its safe handles).
//!
//! **Flat cost per connection.**  smoltcp scans every socket of a
//! `SocketSet` for each received segment and each egress poll.  Here every
//! connection is a `SocketSet` of its own: a received frame is classified by
//! its 4-tuple ([`device::classify`], one hash lookup) and handed to
//! `poll_ingress_single` with only that connection's set; egress runs only
//! for connections that were touched (data written, read, closed, segment
//! received) or whose protocol timer is due (a timer heap keyed by
//! `Interface::poll_at` of the one set).  A SYN for a listening port goes to
//! that port's spare listening socket, which then becomes the connection
//! (smoltcp has no accept queue) while a fresh spare takes its place.
//! Frames that match nothing (ARP, ICMP, stray TCP) go through an empty set,
//! so smoltcp answers ARP and echo requests and resets stray segments.
//!
//! **Memory that stays warm.**  The timer heap cancels lazily and is
//! compacted once superseded entries outnumber the live ones (a busy
//! connection moves its deadline with almost every segment).  Closed sockets
//! go to a decaying pool with their buffers and serve the next connections,
//! so churn does not fault in two fresh buffers per connection.  Both rings
//! of a socket restart at their first byte when drained (the receive side
//! through the vendored smoltcp patch, `vendor/README.md`), so a keep-alive
//! connection with small messages touches a page or two of each.
//!
//! **TCP settings** (tuned for 10 Gbit/s links with sub-millisecond RTTs):
//! socket buffers [`RX_BUFFER`]/[`TX_BUFFER`] (256 KiB each; smoltcp derives
//! the window-scale shift from the receive buffer, RFC 7323 §2, so the
//! advertised window covers the full buffer: ~200 µs of 10 Gbit/s), MSS =
//! MTU 1500 − 40 = 1460 (RFC 9293 §3.7.1), Nagle off (like `TCP_NODELAY` on
//! the kernel path), delayed ACK 10 ms (smoltcp's default), CUBIC congestion
//! control (RFC 9438), retransmission by smoltcp's RTT estimator (RFC 6298,
//! RTO floor 10 ms in smoltcp), SACK not implemented by smoltcp.  A quiet
//! connection sends a keep-alive probe every [`KEEP_ALIVE`] (RFC 9293
//! §3.8.4); one whose peer sends nothing, not even the answer to a probe,
//! for [`IDLE_TIMEOUT`] is reset (smoltcp's user timeout), and a dropped
//! stream lingers at most [`LINGER`] to finish its FIN handshake before it
//! is aborted.

pub mod device;
mod idle;

#[cfg(test)]
mod tests;

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::io::{self, IoSlice};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use slab::Slab;
use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp::{self, State};
use smoltcp::time::{Duration as SmolDuration, Instant as SmolInstant};
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, IpEndpoint, IpListenEndpoint};

use crate::pool::DecayingPool;
use crate::runtime::{LoopPoller, PollOutcome};
use device::{classify, Egress, FourTuple, LinkCounters, LinkState, OneFrame, RxFrame};
pub use idle::IdleNap;

pub use device::{DpdkLink, Link, MemoryLink, SharedLink};

/// Receive buffer per connection (also what the advertised window can reach).
pub const RX_BUFFER: usize = 256 * 1024;
/// Send buffer per connection.
pub const TX_BUFFER: usize = 256 * 1024;
/// A connection whose peer sends nothing for this long is reset (no
/// answer to data, to the handshake or to [`KEEP_ALIVE`] probes).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A quiet connection sends a keep-alive probe this often.  smoltcp's user
/// timeout counts from the last segment received even when no data is
/// outstanding, so without probes every connection idle for
/// [`IDLE_TIMEOUT`] — a pooled upstream connection, a client between
/// requests — would be reset; the kernel path keeps those open (their idle
/// limits are the proxy's `idle_timeout`s).  With probes a live peer's ACKs
/// keep it open and a vanished peer is noticed within [`IDLE_TIMEOUT`].
pub const KEEP_ALIVE: Duration = Duration::from_secs(20);
/// How long a dropped stream may take to finish closing before it is aborted.
pub const LINGER: Duration = Duration::from_secs(30);
/// Source ports for connections this stack opens.
const EPHEMERAL: std::ops::Range<u16> = 32768..61000;

/// Where the stack sits on the network.
#[derive(Debug, Clone)]
pub struct StackConfig {
    pub mac: [u8; 6],
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
    /// Seeds smoltcp's initial sequence numbers and the source-port walk.
    pub seed: u64,
    /// With RSS over several queues: (queue count, this shard's queue).
    /// Source ports of outgoing connections are chosen so that the replies
    /// hash (Toeplitz, [`dpdk::RSS_KEY`]) to this queue.
    pub rss: Option<(u16, u16)>,
    /// On a busy-polled queue: how long the loop sleeps once the queue has
    /// been empty that long (see [`IdleNap`]); zero spins for ever.
    pub idle_nap: Duration,
}

impl StackConfig {
    /// Whether `ip` is reached through this stack: in the port's subnet, or
    /// anywhere but loopback when a gateway is configured.
    pub fn routes(&self, ip: Ipv4Addr) -> bool {
        if ip.is_loopback() || ip.is_unspecified() {
            return false;
        }
        let mask = if self.prefix_len == 0 { 0 } else { u32::MAX << (32 - self.prefix_len as u32) };
        (u32::from(ip) & mask) == (u32::from(self.addr) & mask) || self.gateway.is_some()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// The spare listening socket of a port.
    Listening,
    /// Handshake in progress on a listening port.
    Embryonic,
    /// Established, waiting in the accept queue.
    Queued,
    /// A `UserspaceStream` owns it.
    Owned,
    /// Its stream was dropped; finishing the close.
    Orphan,
}

struct Conn {
    set: SocketSet<'static>,
    handle: SocketHandle,
    tuple: Option<FourTuple>,
    listen_port: Option<u16>,
    stage: Stage,
    /// The peer reset the connection (or it timed out) rather than closing it.
    reset: bool,
    dirty: bool,
    scheduled: Option<Instant>,
    generation: u64,
}

impl Conn {
    fn socket(&self) -> &tcp::Socket<'static> {
        self.set.get::<tcp::Socket>(self.handle)
    }
    fn socket_mut(&mut self) -> &mut tcp::Socket<'static> {
        self.set.get_mut::<tcp::Socket>(self.handle)
    }
}

struct ListenState {
    spare: usize,
    queue: VecDeque<usize>,
    waker: Option<Waker>,
    handles: usize,
}

/// Per-stack counters (exported per shard).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StackCounters {
    pub link: LinkCounters,
    pub connections: u64,
    pub accepted: u64,
    pub connected: u64,
    pub resets: u64,
}

struct Inner {
    iface: Interface,
    link: LinkState,
    conns: Slab<Conn>,
    /// Looked up for every received frame (see `foldhash` in Cargo.toml).
    by_tuple: HashMap<FourTuple, usize, foldhash::fast::RandomState>,
    listeners: HashMap<u16, ListenState>,
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    lingering: VecDeque<(Instant, usize, u64)>,
    dirty: Vec<usize>,
    /// Connections in SYN-SENT: an ARP reply may unblock them (smoltcp
    /// otherwise waits out its 1 s neighbour back-off before resending).
    connecting: Vec<usize>,
    /// Closed sockets kept with their buffers for the next connection (see
    /// `Inner::remove`), trimmed by the shard's periodic sweep.
    spare_sockets: DecayingPool<tcp::Socket<'static>>,
    /// Sockets built with new buffers (not taken from the pool).
    fresh_sockets: u64,
    control: SocketSet<'static>,
    received: Vec<RxFrame>,
    next_port: u16,
    generation: u64,
    accepted: u64,
    connected: u64,
    resets: u64,
}

/// Most closed sockets a stack keeps for reuse (each with the pages its
/// buffers had touched; the pool gives back what a sweep interval did not
/// reuse).
const SPARE_SOCKETS: usize = 256;

/// Superseded protocol-timer entries allowed beyond two per connection
/// before the heap is compacted (see `Inner::egress`).
const TIMER_HEAP_SLACK: usize = 16;

/// One shard's userspace network stack.
pub struct Stack {
    inner: RefCell<Inner>,
    publisher: RefCell<Option<Publisher>>,
    config: StackConfig,
    base: Instant,
    busy_poll: bool,
    idle: Cell<IdleNap>,
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<Stack>>> = const { RefCell::new(None) };
}

/// The stack serving this shard, if the shard runs one.
pub fn current() -> Option<Rc<Stack>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Makes `stack` this shard's stack and registers it with the shard loop.
pub fn install(stack: Rc<Stack>) {
    crate::runtime::add_loop_poller(stack.clone());
    CURRENT.with(|c| *c.borrow_mut() = Some(stack));
}

/// What a shard needs to run a stack on a DPDK queue pair (built by the
/// process before the shard thread starts; moved into it).
pub struct ShardLink {
    pub config: StackConfig,
    pub link: ShardLinkKind,
}

/// A shard's own queue pair, or its rings to the dispatching shard.
pub enum ShardLinkKind {
    Queue(DpdkLink),
    Shared(SharedLink),
}

/// Builds the shard's stack on its queue pair and installs it (shard thread);
/// the loop hook then publishes its counters to `/stats` once a second.
pub fn install_shard_link(link: ShardLink, stats: std::sync::Arc<crate::stats::StatsStore>, slot: usize) {
    let link_kind = match link.link {
        ShardLinkKind::Queue(q) => Link::Dpdk(q),
        ShardLinkKind::Shared(s) => Link::Shared(s),
    };
    let stack = Stack::new(link.config, link_kind);
    *stack.publisher.borrow_mut() = Some(Publisher::new(&stats, slot));
    install(stack);
}

/// Copies a stack's counters (and, on the shard owning queue 0, the port's)
/// into the stats store: `dpdk.port.*` (the NIC's counters), `dpdk.stack.*`
/// (summed over shards) and `dpdk.shard_N.*` (per shard, with the loop's
/// busy time, [`crate::runtime::loop_busy`]).  Runs
/// from the loop hook rather than as a task, so a draining shard is not kept
/// alive by it.
struct Publisher {
    port: Vec<crate::stats::Counter>,
    stack: Vec<crate::stats::Counter>,
    active: crate::stats::Gauge,
    shard_active: crate::stats::Gauge,
    shard_accepted: crate::stats::Counter,
    shard_opened: crate::stats::Counter,
    shard_loop_busy: crate::stats::Counter,
    last_port: [u64; 8],
    last_loop_busy_us: u64,
    last_stack: [u64; 11],
    next: Option<Instant>,
}

impl Publisher {
    fn new(store: &crate::stats::StatsStore, slot: usize) -> Publisher {
        use crate::stats::Scope;
        let port_scope = Scope::Named("dpdk.port".into());
        let stack_scope = Scope::Named("dpdk.stack".into());
        let shard_scope = Scope::Named(format!("dpdk.shard_{slot}"));
        let port_names =
            ["rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "imissed", "rx_errors", "tx_errors", "rx_nombuf"];
        let stack_names = [
            "rx_frames",
            "tx_frames",
            "rx_bytes",
            "tx_bytes",
            "tx_nombuf",
            "tx_ring_drops",
            "rx_ring_drops",
            "cross_shard_frames",
            "connections_accepted",
            "connections_opened",
            "connections_reset",
        ];
        Publisher {
            port: port_names.iter().map(|n| store.counter(&port_scope, n, slot)).collect(),
            stack: stack_names.iter().map(|n| store.counter(&stack_scope, n, slot)).collect(),
            active: store.gauge(&stack_scope, "connections_active", slot),
            shard_active: store.gauge(&shard_scope, "connections", slot),
            shard_accepted: store.counter(&shard_scope, "connections_accepted", slot),
            shard_opened: store.counter(&shard_scope, "connections_opened", slot),
            shard_loop_busy: store.counter(&shard_scope, "loop_busy_us", slot),
            last_port: [0; 8],
            last_loop_busy_us: 0,
            last_stack: [0; 11],
            next: None,
        }
    }

    fn publish(&mut self, stack: &Stack, now: Instant) {
        if self.next.is_some_and(|n| now < n) {
            return;
        }
        self.next = Some(now + Duration::from_secs(1));
        let c = stack.counters();
        let cur = [
            c.link.rx_frames,
            c.link.tx_frames,
            c.link.rx_bytes,
            c.link.tx_bytes,
            c.link.tx_nombuf,
            c.link.tx_ring_drops,
            c.link.rx_ring_drops,
            c.link.cross_shard_frames,
            c.accepted,
            c.connected,
            c.resets,
        ];
        for (i, v) in cur.iter().enumerate() {
            self.stack[i].add(v.saturating_sub(self.last_stack[i]));
        }
        self.shard_accepted.add(c.accepted.saturating_sub(self.last_stack[8]));
        self.shard_opened.add(c.connected.saturating_sub(self.last_stack[9]));
        self.last_stack = cur;
        let busy_us = crate::runtime::loop_busy().as_micros() as u64;
        self.shard_loop_busy.add(busy_us.saturating_sub(self.last_loop_busy_us));
        self.last_loop_busy_us = busy_us;
        self.active.set(c.connections as i64);
        self.shard_active.set(c.connections as i64);
        let port = match &stack.inner.borrow().link.link {
            Link::Dpdk(d) if d.rx.queue_id() == 0 => d.rx.port_stats().ok(),
            _ => None,
        };
        if let Some(p) = port {
            let cur =
                [p.rx_packets, p.tx_packets, p.rx_bytes, p.tx_bytes, p.imissed, p.rx_errors, p.tx_errors, p.rx_nombuf];
            for (i, v) in cur.iter().enumerate() {
                self.port[i].add(v.saturating_sub(self.last_port[i]));
            }
            self.last_port = cur;
        }
    }
}

fn smol(base: Instant, t: Instant) -> SmolInstant {
    SmolInstant::from_micros(t.saturating_duration_since(base).as_micros() as i64)
}

fn unsmol(base: Instant, t: SmolInstant) -> Instant {
    base + Duration::from_micros(t.total_micros().max(0) as u64)
}

fn ip_of(addr: IpAddress) -> Ipv4Addr {
    match addr {
        IpAddress::Ipv4(a) => a,
    }
}

impl Stack {
    pub fn new(config: StackConfig, link: Link) -> Rc<Stack> {
        let base = Instant::now();
        let mut link = LinkState::new(link);
        let busy_poll = link.busy_poll();
        let mut cfg = IfaceConfig::new(HardwareAddress::Ethernet(EthernetAddress(config.mac)));
        cfg.random_seed = config.seed;
        let mut iface = Interface::new(cfg, &mut Egress { link: &mut link }, smol(base, base));
        iface.update_ip_addrs(|addrs| {
            let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(config.addr), config.prefix_len));
        });
        if let Some(gw) = config.gateway {
            let _ = iface.routes_mut().add_default_ipv4_route(gw);
        }
        let span = (EPHEMERAL.end - EPHEMERAL.start) as u64;
        let next_port = EPHEMERAL.start + (config.seed % span) as u16;
        Rc::new(Stack {
            publisher: RefCell::new(None),
            inner: RefCell::new(Inner {
                iface,
                link,
                conns: Slab::new(),
                by_tuple: HashMap::default(),
                listeners: HashMap::new(),
                timers: BinaryHeap::new(),
                lingering: VecDeque::new(),
                dirty: Vec::new(),
                connecting: Vec::new(),
                spare_sockets: DecayingPool::new(SPARE_SOCKETS),
                fresh_sockets: 0,
                control: SocketSet::new(Vec::new()),
                received: Vec::with_capacity(device::BURST),
                next_port,
                generation: 0,
                accepted: 0,
                connected: 0,
                resets: 0,
            }),
            idle: Cell::new(IdleNap::new(config.idle_nap)),
            config,
            base,
            busy_poll,
        })
    }

    pub fn config(&self) -> &StackConfig {
        &self.config
    }

    /// Frees the pooled closed sockets no connection took since the last call
    /// (`DecayingPool::trim`); the shard's periodic sweep calls it, with the
    /// proxy's pools.
    pub fn trim_spare_sockets(&self) {
        self.inner.borrow_mut().spare_sockets.trim();
    }

    /// Entries in the protocol-timer heap, superseded ones included.
    #[cfg(test)]
    fn timer_entries(&self) -> usize {
        self.inner.borrow().timers.len()
    }

    pub fn counters(&self) -> StackCounters {
        let inner = self.inner.borrow();
        StackCounters {
            link: inner.link.counters,
            connections: inner.conns.iter().filter(|(_, c)| c.stage != Stage::Listening).count() as u64,
            accepted: inner.accepted,
            connected: inner.connected,
            resets: inner.resets,
        }
    }

    /// Listens on `addr` (this stack's address or unspecified; port 0 picks one).
    pub fn bind(self: &Rc<Self>, addr: SocketAddr) -> io::Result<UserspaceListener> {
        let ip = match addr {
            SocketAddr::V4(a) => *a.ip(),
            SocketAddr::V6(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrNotAvailable,
                    "IPv6 is not served by the userspace stack",
                ))
            }
        };
        if !ip.is_unspecified() && ip != self.config.addr {
            return Err(io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                format!("{ip} is not the DPDK port's address"),
            ));
        }
        let mut inner = self.inner.borrow_mut();
        let mut port = addr.port();
        if port == 0 {
            port = inner.pick_listen_port()?;
        }
        if let Some(l) = inner.listeners.get_mut(&port) {
            l.handles += 1;
        } else {
            let spare = inner.new_listening(port, self.base)?;
            inner.listeners.insert(port, ListenState { spare, queue: VecDeque::new(), waker: None, handles: 1 });
        }
        Ok(UserspaceListener { stack: self.clone(), port, local: SocketAddr::new(ip.into(), port) })
    }

    /// Starts a connection to `remote`; resolves once established or failed.
    pub async fn connect(self: &Rc<Self>, remote: SocketAddr) -> io::Result<UserspaceStream> {
        let SocketAddr::V4(remote) = remote else {
            return Err(io::Error::new(io::ErrorKind::AddrNotAvailable, "IPv6 is not served by the userspace stack"));
        };
        let (idx, local) = self.inner.borrow_mut().open_active(remote, self.config.rss)?;
        let stream = UserspaceStream::new(self.clone(), idx, SocketAddr::V4(local), SocketAddr::V4(remote));
        std::future::poll_fn(|cx| {
            let mut inner = self.inner.borrow_mut();
            let conn = &mut inner.conns[idx];
            let reset = conn.reset;
            let sock = conn.socket_mut();
            match sock.state() {
                State::SynSent | State::SynReceived => {
                    sock.register_send_waker(cx.waker());
                    Poll::Pending
                }
                State::Closed if reset => {
                    Poll::Ready(Err(io::Error::new(io::ErrorKind::ConnectionRefused, "connection refused")))
                }
                State::Closed => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))),
                _ => Poll::Ready(Ok(())),
            }
        })
        .await?;
        self.inner.borrow_mut().connected += 1;
        Ok(stream)
    }

    fn with_conn<R>(&self, idx: usize, f: impl FnOnce(&mut Conn) -> R) -> R {
        let mut inner = self.inner.borrow_mut();
        let r = f(&mut inner.conns[idx]);
        inner.touch(idx);
        r
    }
}

impl Inner {
    /// Drops every frame waiting on a memory link (tests: a peer vanishes).
    #[cfg(test)]
    fn link_inbox_clear(&mut self) {
        if let Link::Memory(m) = &self.link.link {
            m.inbox.borrow_mut().clear();
        }
    }

    fn touch(&mut self, idx: usize) {
        if let Some(c) = self.conns.get_mut(idx) {
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(idx);
            }
        }
    }

    /// A closed socket: a pooled one, or a fresh one with new buffers.
    ///
    /// Either way it is configured here.  `listen`/`connect` reset a reused
    /// socket's connection state and rings but not its congestion
    /// controller, so setting CUBIC again also gives the new connection a
    /// fresh one rather than the window its previous connection grew.
    fn new_socket(&mut self) -> tcp::Socket<'static> {
        let mut s = match self.spare_sockets.pop_where(|_| true) {
            Some(socket) => socket,
            None => {
                self.fresh_sockets += 1;
                tcp::Socket::new(tcp::SocketBuffer::new(vec![0; RX_BUFFER]), tcp::SocketBuffer::new(vec![0; TX_BUFFER]))
            }
        };
        s.set_nagle_enabled(false);
        s.set_timeout(Some(SmolDuration::from_micros(IDLE_TIMEOUT.as_micros() as u64)));
        s.set_keep_alive(Some(SmolDuration::from_micros(KEEP_ALIVE.as_micros() as u64)));
        s.set_congestion_control(tcp::CongestionControl::Cubic);
        s
    }

    fn insert_conn(&mut self, socket: tcp::Socket<'static>, stage: Stage, listen_port: Option<u16>) -> usize {
        let mut set = SocketSet::new(Vec::with_capacity(1));
        let handle = set.add(socket);
        self.generation += 1;
        self.conns.insert(Conn {
            set,
            handle,
            tuple: None,
            listen_port,
            stage,
            reset: false,
            dirty: false,
            scheduled: None,
            generation: self.generation,
        })
    }

    fn new_listening(&mut self, port: u16, _base: Instant) -> io::Result<usize> {
        let mut s = self.new_socket();
        s.listen(IpListenEndpoint { addr: None, port })
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("listen on port {port}: {e}")))?;
        Ok(self.insert_conn(s, Stage::Listening, Some(port)))
    }

    fn pick_listen_port(&mut self) -> io::Result<u16> {
        for _ in 0..(EPHEMERAL.end - EPHEMERAL.start) {
            let p = self.advance_port();
            if !self.listeners.contains_key(&p) {
                return Ok(p);
            }
        }
        Err(io::Error::new(io::ErrorKind::AddrInUse, "no free port"))
    }

    fn advance_port(&mut self) -> u16 {
        let p = self.next_port;
        self.next_port = if p + 1 >= EPHEMERAL.end { EPHEMERAL.start } else { p + 1 };
        p
    }

    fn open_active(&mut self, remote: SocketAddrV4, rss: Option<(u16, u16)>) -> io::Result<(usize, SocketAddrV4)> {
        let local_ip = match self.iface.ipv4_addr() {
            Some(a) => a,
            None => return Err(io::Error::new(io::ErrorKind::AddrNotAvailable, "no address")),
        };
        let mut port = None;
        for _ in 0..(EPHEMERAL.end - EPHEMERAL.start) {
            let p = self.advance_port();
            let t = FourTuple {
                local_ip: u32::from(local_ip),
                local_port: p,
                remote_ip: u32::from(*remote.ip()),
                remote_port: remote.port(),
            };
            if !self.by_tuple.contains_key(&t) && !self.listeners.contains_key(&p) && replies_reach(rss, &t) {
                port = Some((p, t));
                break;
            }
        }
        let Some((p, tuple)) = port else {
            return Err(io::Error::new(io::ErrorKind::AddrNotAvailable, "no free source port"));
        };
        let mut s = self.new_socket();
        let remote_ep = IpEndpoint::new(IpAddress::Ipv4(*remote.ip()), remote.port());
        s.connect(self.iface.context(), remote_ep, IpListenEndpoint { addr: Some(IpAddress::Ipv4(local_ip)), port: p })
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("connect to {remote}: {e}")))?;
        let idx = self.insert_conn(s, Stage::Owned, None);
        self.conns[idx].tuple = Some(tuple);
        self.by_tuple.insert(tuple, idx);
        self.touch(idx);
        self.connecting.push(idx);
        Ok((idx, SocketAddrV4::new(local_ip, p)))
    }

    fn remove(&mut self, idx: usize) {
        if let Some(mut c) = self.conns.try_remove(idx) {
            if let Some(t) = c.tuple {
                if self.by_tuple.get(&t) == Some(&idx) {
                    self.by_tuple.remove(&t);
                }
            }
            // A fresh socket is two 256 KiB buffers from `calloc`, which
            // the allocator zeroes in full when it hands back recently freed
            // memory: with connections coming and going, every new one
            // would clear (and make resident) half a megabyte.  A closed
            // socket is reused instead; `listen`/`connect` reset its state
            // and empty both rings, and nothing reads past their contents.
            // A TIME-WAIT socket is finished too (removed, not kept, as
            // before): marking it closed sends nothing, since it is never
            // dispatched again.  (Only TCP sockets are compiled in: the
            // pattern is irrefutable.)
            let smoltcp::socket::Socket::Tcp(mut socket) = c.set.remove(c.handle);
            if matches!(socket.state(), State::Closed | State::TimeWait) {
                socket.abort();
                self.spare_sockets.push(socket);
            }
        }
    }

    fn ingress(&mut self, base: Instant, ts: SmolInstant, frame: RxFrame) {
        let is_arp = frame.bytes().get(12..14) == Some(&[0x08, 0x06]);
        let target = match classify(frame.bytes()) {
            Some((t, flags)) => match self.by_tuple.get(&t) {
                Some(&idx) => Some(idx),
                None if flags.syn && !flags.ack => self.listeners.get(&t.local_port).map(|l| l.spare),
                None => None,
            },
            None => None,
        };
        let Inner { iface, link, conns, control, .. } = self;
        let mut dev = OneFrame { frame: Some(frame), link };
        let Some(idx) = target else {
            iface.poll_ingress_single(ts, &mut dev, control);
            if is_arp && !self.connecting.is_empty() {
                let mut connecting = std::mem::take(&mut self.connecting);
                connecting.retain(|&i| self.conns.get(i).is_some_and(|c| c.socket().state() == State::SynSent));
                for &i in &connecting {
                    self.touch(i);
                }
                self.connecting = connecting;
            }
            return;
        };
        let conn = &mut conns[idx];
        let before = conn.socket().state();
        iface.poll_ingress_single(ts, &mut dev, &mut conn.set);
        let after = conn.socket().state();
        self.after_ingress(base, idx, before, after);
    }

    fn after_ingress(&mut self, base: Instant, idx: usize, before: State, after: State) {
        self.touch(idx);
        let conn = &mut self.conns[idx];
        if after == State::Closed
            && !matches!(before, State::Closed | State::LastAck | State::TimeWait | State::Closing)
        {
            conn.reset = true;
            self.resets += 1;
        }
        match conn.stage {
            Stage::Listening if after != State::Listen => {
                // The spare took a SYN: it is now this connection.
                let sock = conn.socket();
                let (Some(local), Some(remote)) = (sock.local_endpoint(), sock.remote_endpoint()) else { return };
                let tuple = FourTuple {
                    local_ip: u32::from(ip_of(local.addr)),
                    local_port: local.port,
                    remote_ip: u32::from(ip_of(remote.addr)),
                    remote_port: remote.port,
                };
                conn.tuple = Some(tuple);
                conn.stage = Stage::Embryonic;
                let port = conn.listen_port.expect("listening sockets know their port");
                self.by_tuple.insert(tuple, idx);
                if let Ok(spare) = self.new_listening(port, base) {
                    if let Some(l) = self.listeners.get_mut(&port) {
                        l.spare = spare;
                    }
                }
            }
            Stage::Embryonic => match after {
                State::Established | State::CloseWait => {
                    conn.stage = Stage::Queued;
                    let port = conn.listen_port.expect("accepted sockets know their port");
                    if let Some(l) = self.listeners.get_mut(&port) {
                        l.queue.push_back(idx);
                        if let Some(w) = l.waker.take() {
                            w.wake();
                        }
                    } else {
                        // The listener went away during the handshake: reset.
                        conn.socket_mut().abort();
                        conn.stage = Stage::Orphan;
                    }
                }
                State::Closed | State::Listen => self.remove(idx),
                _ => {}
            },
            Stage::Orphan if matches!(after, State::Closed | State::TimeWait) => self.remove(idx),
            _ => {}
        }
    }

    fn egress(&mut self, base: Instant, now: Instant, ts: SmolInstant, idx: usize) {
        let Inner { iface, link, conns, timers, .. } = self;
        let Some(conn) = conns.get_mut(idx) else { return };
        conn.dirty = false;
        let before = conn.socket().state();
        iface.poll_egress(ts, &mut Egress { link }, &mut conn.set);
        let state = conn.socket().state();
        // smoltcp closes a connection whose user timeout expired: a reset
        // for the reader, not a clean end of stream (an unanswered SYN stays
        // a connect timeout).
        if state == State::Closed && !matches!(before, State::Closed | State::TimeWait | State::SynSent) {
            conn.reset = true;
            self.resets += 1;
        }
        if conn.stage == Stage::Orphan && matches!(state, State::Closed | State::TimeWait) {
            self.remove(idx);
            return;
        }
        if let Some(at) = iface.poll_at(ts, &conn.set) {
            let at = unsmol(base, at).max(now);
            let stale = conn.scheduled.is_none_or(|s| at < s || s <= now);
            if stale {
                conn.scheduled = Some(at);
                timers.push(Reverse((at, idx)));
                // Cancellation is lazy: an entry whose deadline was moved
                // stays until it comes due, and on a busy connection the
                // deadline moves with almost every segment.  Left alone the
                // superseded entries outnumber the live ones by thousands
                // and every pop walks cold memory; compacting once they
                // exceed the live ones (at most one per connection) keeps
                // the heap within 2 per connection, amortised O(1) a push.
                if timers.len() > 2 * conns.len() + TIMER_HEAP_SLACK {
                    timers.retain(|Reverse((at, idx))| conns.get(*idx).is_some_and(|c| c.scheduled == Some(*at)));
                }
            }
        }
    }

    fn poll(&mut self, base: Instant, now: Instant) -> (bool, Option<Instant>) {
        // smoltcp's clock for the whole pass: converting per frame and per
        // connection was one `Instant` subtraction each.
        let ts = smol(base, now);
        let tx_before = self.link.counters.tx_frames;
        let mut received = std::mem::take(&mut self.received);
        let mut moved = 0;
        loop {
            let n = self.link.recv_burst(&mut received);
            if n == 0 {
                break;
            }
            moved += n;
            for frame in received.drain(..) {
                self.ingress(base, ts, frame);
            }
            if moved >= device::BURST * 4 {
                break;
            }
        }
        self.received = received;
        // Connections touched by tasks or by received segments.
        let mut dirty = std::mem::take(&mut self.dirty);
        for idx in dirty.drain(..) {
            self.egress(base, now, ts, idx);
        }
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
        // Protocol timers (retransmission, delayed ACK, keep-alive, TIME-WAIT).
        while let Some(Reverse((at, idx))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let due = self.conns.get(idx).is_some_and(|c| c.scheduled == Some(at));
            if due {
                self.conns[idx].scheduled = None;
                self.egress(base, now, ts, idx);
            }
        }
        // Dropped streams that did not finish closing in time.
        while let Some(&(deadline, idx, generation)) = self.lingering.front() {
            if deadline > now {
                break;
            }
            self.lingering.pop_front();
            if self.conns.get(idx).is_some_and(|c| c.generation == generation) {
                self.conns[idx].socket_mut().abort();
                self.egress(base, now, ts, idx);
                self.remove(idx);
            }
        }
        let backlog = self.link.flush();
        let busy = moved > 0 || self.link.counters.tx_frames != tx_before || backlog || !self.dirty.is_empty();
        let next =
            [self.timers.peek().map(|r| r.0 .0), self.lingering.front().map(|l| l.0)].into_iter().flatten().min();
        (busy, next)
    }
}

/// Whether the replies of connection `t` land on this shard's queue: the NIC
/// hashes the received packet's (src ip, dst ip, src port, dst port) with
/// Toeplitz and our key, and DPDK's default redirection table maps hash `h`
/// to queue `(h mod reta_size) mod queues`, which is `h mod queues` when the
/// queue count divides the table size (any power of two up to 128).
/// (The same function steers frames in software when shards share a queue.)
fn replies_reach(rss: Option<(u16, u16)>, t: &FourTuple) -> bool {
    let Some((queues, mine)) = rss else { return true };
    device::flow_shard(t, queues) == mine
}

impl LoopPoller for Stack {
    fn poll(&self, now: Instant) -> PollOutcome {
        let (busy, next) = self.inner.borrow_mut().poll(self.base, now);
        if let Some(p) = self.publisher.borrow_mut().as_mut() {
            p.publish(self, now);
        }
        if !self.busy_poll {
            return PollOutcome { worked: busy, busy, next, nap: None };
        }
        let mut idle = self.idle.get();
        let nap = idle.after_pass(now, busy);
        self.idle.set(idle);
        PollOutcome { worked: busy, busy: nap.is_none(), next, nap }
    }
}

/// A TCP connection on the userspace stack.
pub struct UserspaceStream {
    stack: Rc<Stack>,
    idx: usize,
    local: SocketAddr,
    peer: SocketAddr,
    /// The read side reached end of stream (kept so later reads see it at once).
    eof: Cell<bool>,
}

impl UserspaceStream {
    fn new(stack: Rc<Stack>, idx: usize, local: SocketAddr, peer: SocketAddr) -> UserspaceStream {
        UserspaceStream { stack, idx, local, peer, eof: Cell::new(false) }
    }

    pub fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let eof = &self.eof;
        self.stack.with_conn(self.idx, |conn| {
            let reset = conn.reset;
            let sock = conn.socket_mut();
            if sock.can_recv() {
                return Poll::Ready(sock.recv_slice(buf).map_err(|e| io::Error::other(e.to_string())));
            }
            if reset {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::ConnectionReset, "connection reset by peer")));
            }
            if !sock.may_recv() || eof.get() {
                eof.set(true);
                return Poll::Ready(Ok(0));
            }
            sock.register_recv_waker(cx.waker());
            Poll::Pending
        })
    }

    pub fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    pub fn poll_write_vectored(&self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        self.stack.with_conn(self.idx, |conn| {
            let reset = conn.reset;
            let sock = conn.socket_mut();
            if reset {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::ConnectionReset, "connection reset by peer")));
            }
            if !sock.may_send() {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "connection closed for sending")));
            }
            if !sock.can_send() {
                sock.register_send_waker(cx.waker());
                return Poll::Pending;
            }
            let mut total = 0;
            for b in bufs {
                if b.is_empty() {
                    continue;
                }
                match sock.send_slice(b) {
                    Ok(n) => {
                        total += n;
                        if n < b.len() {
                            break;
                        }
                    }
                    Err(e) => return Poll::Ready(Err(io::Error::other(e.to_string()))),
                }
            }
            Poll::Ready(Ok(total))
        })
    }

    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut inner = self.stack.inner.borrow_mut();
        let conn = &mut inner.conns[self.idx];
        let reset = conn.reset;
        let sock = conn.socket_mut();
        if sock.can_recv() || !sock.may_recv() || reset {
            return Poll::Ready(());
        }
        sock.register_recv_waker(cx.waker());
        Poll::Pending
    }

    pub fn shutdown_write(&self) -> io::Result<()> {
        self.stack.with_conn(self.idx, |conn| conn.socket_mut().close());
        Ok(())
    }

    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn is_idle_usable(&self) -> bool {
        let inner = self.stack.inner.borrow();
        let conn = &inner.conns[self.idx];
        let sock = conn.socket();
        !conn.reset && sock.state() == State::Established && !sock.can_recv()
    }
}

impl Drop for UserspaceStream {
    fn drop(&mut self) {
        let now = crate::runtime::now();
        let mut inner = self.stack.inner.borrow_mut();
        let Some(conn) = inner.conns.get_mut(self.idx) else { return };
        conn.stage = Stage::Orphan;
        let generation = conn.generation;
        let sock = conn.socket_mut();
        match sock.state() {
            State::Closed | State::TimeWait => {
                inner.remove(self.idx);
                return;
            }
            // Like close(2) on the kernel path: unread data means reset.
            _ if sock.can_recv() => sock.abort(),
            _ => sock.close(),
        }
        inner.lingering.push_back((now + LINGER, self.idx, generation));
        inner.touch(self.idx);
    }
}

/// A listening port on the userspace stack.
pub struct UserspaceListener {
    stack: Rc<Stack>,
    port: u16,
    local: SocketAddr,
}

impl UserspaceListener {
    pub fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(UserspaceStream, SocketAddr)>> {
        let mut inner = self.stack.inner.borrow_mut();
        let l = inner.listeners.get_mut(&self.port).expect("a listener outlives its port entry");
        let Some(idx) = l.queue.pop_front() else {
            l.waker = Some(cx.waker().clone());
            return Poll::Pending;
        };
        inner.accepted += 1;
        let conn = &mut inner.conns[idx];
        conn.stage = Stage::Owned;
        let t = conn.tuple.expect("queued connections have a tuple");
        let local = SocketAddr::new(Ipv4Addr::from(t.local_ip).into(), t.local_port);
        let peer = SocketAddr::new(Ipv4Addr::from(t.remote_ip).into(), t.remote_port);
        drop(inner);
        Poll::Ready(Ok((UserspaceStream::new(self.stack.clone(), idx, local, peer), peer)))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for UserspaceListener {
    fn drop(&mut self) {
        let mut inner = self.stack.inner.borrow_mut();
        let Some(l) = inner.listeners.get_mut(&self.port) else { return };
        l.handles -= 1;
        if l.handles > 0 {
            return;
        }
        let l = inner.listeners.remove(&self.port).expect("checked above");
        inner.remove(l.spare);
        for idx in l.queue {
            if let Some(c) = inner.conns.get_mut(idx) {
                c.socket_mut().abort();
                c.stage = Stage::Orphan;
                inner.touch(idx);
            }
        }
        // Handshakes still in progress on this port are reset when they
        // complete (after_ingress finds no listener to queue them on).
    }
}
