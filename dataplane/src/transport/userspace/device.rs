//! Frame links under the userspace stack, and the smoltcp `Device` views of
//! them.
//!
//! A [`Link`] moves whole Ethernet frames: [`DpdkLink`] over one shard's DPDK
//! queue pair (receive hands out the NIC's mbufs, transmit fills fresh mbufs
//! from the port's pool: the only copies are smoltcp's own socket buffers),
//! or [`MemoryLink`], a wire between two stacks in one process (the contract
//! tests run the userspace transport over it, without root or a NIC).
//!
//! smoltcp reads frames through a `Device`; the stack gives it one frame at
//! a time ([`OneFrame`], so each frame can be steered to the socket set of
//! its connection) and a transmit-only view for egress ([`Egress`]).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant as SmolInstant;

/// Ethernet MTU the stack uses (IP packet size; the frame adds 14 bytes).
pub const IP_MTU: usize = 1500;
/// Frames handed to or taken from the device per burst.
pub const BURST: usize = 32;
/// Frames that may wait for room in the transmit ring before new ones are dropped.
const TX_BACKLOG: usize = 4096;

/// Counters of one link (per shard), read by the stats exporter.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LinkCounters {
    pub rx_frames: u64,
    pub rx_bytes: u64,
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// Frames smoltcp produced that could not get an mbuf (pool exhausted).
    pub tx_nombuf: u64,
    /// Frames dropped because the transmit ring (or the ring to the
    /// dispatching shard) stayed full.
    pub tx_ring_drops: u64,
    /// Received frames dropped because the ring to their shard was full.
    pub rx_ring_drops: u64,
    /// Frames this shard's queue received for other shards (handed over
    /// rings; ARP replies count once per shard they are copied to).
    pub cross_shard_frames: u64,
}

/// One received frame.
pub enum RxFrame {
    Mbuf(dpdk::Mbuf),
    Bytes(Vec<u8>),
}

impl RxFrame {
    pub fn bytes(&self) -> &[u8] {
        match self {
            RxFrame::Mbuf(m) => m.data(),
            RxFrame::Bytes(b) => b,
        }
    }
}

/// A DPDK queue pair owned by this shard.
pub struct DpdkLink {
    pub rx: dpdk::RxQueue,
    pub tx: dpdk::TxQueue,
    pub pool: &'static dpdk::Mempool,
    out: Vec<dpdk::Mbuf>,
    received: Vec<dpdk::Mbuf>,
    steering: Option<Steering>,
}

impl DpdkLink {
    pub fn new(rx: dpdk::RxQueue, tx: dpdk::TxQueue, pool: &'static dpdk::Mempool) -> DpdkLink {
        DpdkLink {
            rx,
            tx,
            pool,
            out: Vec::with_capacity(BURST * 4),
            received: Vec::with_capacity(BURST),
            steering: None,
        }
    }

    /// Makes this link the dispatcher for `shards` shards sharing its one
    /// queue pair: returns the links of shards 1.. (this link serves shard 0).
    pub fn dispatch_to(&mut self, shards: usize, ring_capacity: usize) -> Vec<SharedLink> {
        let inboxes: Vec<_> = (0..shards).map(|_| Arc::new(ArrayQueue::new(ring_capacity))).collect();
        let outboxes: Vec<_> = (0..shards).map(|_| Arc::new(ArrayQueue::new(ring_capacity))).collect();
        let links = (1..shards)
            .map(|i| SharedLink { inbox: inboxes[i].clone(), outbox: outboxes[i].clone(), pool: self.pool })
            .collect();
        self.steering = Some(Steering { me: 0, inboxes, outboxes });
        links
    }

    /// Joins shards that each own a queue pair (link `i` serves shard `i`):
    /// a frame that arrives on a queue other than its flow's shard's — the
    /// NIC's redirection table or the kernel's fanout hash disagreeing with
    /// [`flow_shard`], or a frame RSS does not hash at all (ARP replies land
    /// on one queue, yet every shard keeps its own neighbour cache) — is
    /// handed to that shard over a lock-free ring, so correctness never
    /// depends on how the device spreads frames.
    pub fn steer_between(links: &mut [DpdkLink], ring_capacity: usize) {
        let inboxes: Vec<_> = (0..links.len()).map(|_| Arc::new(ArrayQueue::new(ring_capacity))).collect();
        for (me, link) in links.iter_mut().enumerate() {
            link.steering = Some(Steering { me, inboxes: inboxes.clone(), outboxes: Vec::new() });
        }
    }

    pub fn is_dispatcher(&self) -> bool {
        self.steering.as_ref().is_some_and(|s| !s.outboxes.is_empty())
    }
}

/// How the shards of one port hand frames to each other (crossbeam
/// `ArrayQueue`s, lock-free): `inboxes[i]` holds frames for shard `i` that
/// arrived on another shard's queue.  A dispatcher (the one shard polling a
/// queue pair shared by all) also drains `outboxes[i]`, the frames shard `i`
/// built, onto its transmit queue; shards with queue pairs of their own
/// transmit directly and have no outboxes.
struct Steering {
    me: usize,
    inboxes: Vec<Arc<ArrayQueue<dpdk::Mbuf>>>,
    outboxes: Vec<Arc<ArrayQueue<dpdk::Mbuf>>>,
}

impl Steering {
    /// Sends a received frame where it belongs: another shard's inbox (its
    /// flow is that shard's), copies to every other shard's (ARP), or back
    /// to the caller when this shard is (one of) its owners.
    fn hand_over(&self, m: dpdk::Mbuf, pool: &dpdk::Mempool, counters: &mut LinkCounters) -> Option<dpdk::Mbuf> {
        match steer(m.data(), self.inboxes.len()) {
            Steer::Shard(i) if i != self.me => {
                self.push(i, m, counters);
                None
            }
            Steer::All => {
                for i in (0..self.inboxes.len()).filter(|&i| i != self.me) {
                    let Some(mut copy) = pool.alloc() else {
                        counters.rx_ring_drops += 1;
                        continue;
                    };
                    if let Some(buf) = copy.append(m.len()) {
                        buf.copy_from_slice(m.data());
                        self.push(i, copy, counters);
                    }
                }
                Some(m)
            }
            Steer::Shard(_) => Some(m),
        }
    }

    fn push(&self, shard: usize, m: dpdk::Mbuf, counters: &mut LinkCounters) {
        if self.inboxes[shard].push(m).is_err() {
            counters.rx_ring_drops += 1;
        } else {
            counters.cross_shard_frames += 1;
        }
    }
}

/// Moves up to `limit` frames from a ring into `out`; returns how many.
fn drain_inbox(
    inbox: &ArrayQueue<dpdk::Mbuf>,
    limit: usize,
    out: &mut Vec<RxFrame>,
    counters: &mut LinkCounters,
) -> usize {
    let mut n = 0;
    while n < limit {
        let Some(m) = inbox.pop() else { break };
        counters.rx_bytes += m.len() as u64;
        out.push(RxFrame::Mbuf(m));
        n += 1;
    }
    n
}

/// A shard's link when it shares the dispatcher's queue pair: frames
/// arrive on `inbox` and leave through `outbox`, both drained by the
/// dispatching shard.
pub struct SharedLink {
    inbox: Arc<ArrayQueue<dpdk::Mbuf>>,
    outbox: Arc<ArrayQueue<dpdk::Mbuf>>,
    pool: &'static dpdk::Mempool,
}

/// Which shard a received frame belongs to: TCP by the Toeplitz hash of its
/// 4-tuple (the same function the shards use to pick source ports, so
/// replies come back to the shard that opened the connection), ARP to every
/// shard (each keeps a neighbour cache), anything else (ICMP) to shard 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Steer {
    Shard(usize),
    All,
}

fn steer(frame: &[u8], shards: usize) -> Steer {
    if frame.get(12..14) == Some(&[0x08, 0x06]) {
        return Steer::All;
    }
    match classify(frame) {
        Some((t, _)) => Steer::Shard(flow_shard(&t, shards as u16) as usize),
        None => Steer::Shard(0),
    }
}

/// The queue/shard (of `n`) that a received packet of connection `t` hashes to.
pub fn flow_shard(t: &FourTuple, n: u16) -> u16 {
    let mut input = [0u8; 12];
    input[0..4].copy_from_slice(&t.remote_ip.to_be_bytes());
    input[4..8].copy_from_slice(&t.local_ip.to_be_bytes());
    input[8..10].copy_from_slice(&t.remote_port.to_be_bytes());
    input[10..12].copy_from_slice(&t.local_port.to_be_bytes());
    (dpdk::toeplitz_hash(&dpdk::RSS_KEY, &input) % n as u32) as u16
}

/// One end of an in-process wire: what one end sends, the other receives.
pub struct MemoryLink {
    pub(crate) inbox: Rc<RefCell<VecDeque<Vec<u8>>>>,
    pub(crate) peer: Rc<RefCell<VecDeque<Vec<u8>>>>,
}

impl MemoryLink {
    /// Two connected ends.
    pub fn pair() -> (MemoryLink, MemoryLink) {
        let a = Rc::new(RefCell::new(VecDeque::new()));
        let b = Rc::new(RefCell::new(VecDeque::new()));
        (MemoryLink { inbox: a.clone(), peer: b.clone() }, MemoryLink { inbox: b, peer: a })
    }
}

pub enum Link {
    Dpdk(DpdkLink),
    Shared(SharedLink),
    Memory(MemoryLink),
}

/// A link plus its counters: what the device views borrow.
pub struct LinkState {
    pub link: Link,
    pub counters: LinkCounters,
}

impl LinkState {
    pub fn new(link: Link) -> LinkState {
        LinkState { link, counters: LinkCounters::default() }
    }

    /// Busy-polled links (a NIC queue) never let the loop sleep.
    pub fn busy_poll(&self) -> bool {
        matches!(self.link, Link::Dpdk(_) | Link::Shared(_))
    }

    /// Takes up to a burst of received frames.
    pub fn recv_burst(&mut self, out: &mut Vec<RxFrame>) -> usize {
        let n = match &mut self.link {
            Link::Dpdk(d) => {
                d.rx.recv(&mut d.received);
                let mut mine = 0;
                for m in d.received.drain(..) {
                    let local = match &d.steering {
                        Some(st) => st.hand_over(m, d.pool, &mut self.counters),
                        None => Some(m),
                    };
                    if let Some(m) = local {
                        self.counters.rx_bytes += m.len() as u64;
                        out.push(RxFrame::Mbuf(m));
                        mine += 1;
                    }
                }
                // Frames other shards' queues received for this shard's flows.
                if let Some(st) = &d.steering {
                    mine += drain_inbox(&st.inboxes[st.me], (BURST * 2).saturating_sub(mine), out, &mut self.counters);
                }
                mine
            }
            Link::Shared(l) => drain_inbox(&l.inbox, BURST, out, &mut self.counters),
            Link::Memory(m) => {
                let mut inbox = m.inbox.borrow_mut();
                let n = inbox.len().min(BURST);
                for f in inbox.drain(..n) {
                    self.counters.rx_bytes += f.len() as u64;
                    out.push(RxFrame::Bytes(f));
                }
                n
            }
        };
        self.counters.rx_frames += n as u64;
        n
    }

    /// Pushes queued frames to the NIC.  Returns whether anything is still
    /// waiting for ring space.
    pub fn flush(&mut self) -> bool {
        if let Link::Dpdk(d) = &mut self.link {
            if let Some(st) = &d.steering {
                for outbox in st.outboxes.iter().skip(1) {
                    for _ in 0..BURST * 4 {
                        match outbox.pop() {
                            Some(m) => d.out.push(m),
                            None => break,
                        }
                    }
                }
            }
            if !d.out.is_empty() {
                d.tx.send(&mut d.out);
                if d.out.len() > TX_BACKLOG {
                    let excess = d.out.len() - TX_BACKLOG;
                    d.out.drain(..excess);
                    self.counters.tx_ring_drops += excess as u64;
                }
            }
            return !d.out.is_empty();
        }
        false
    }

    fn transmit_frame<R>(&mut self, len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
        self.counters.tx_frames += 1;
        self.counters.tx_bytes += len as u64;
        match &mut self.link {
            Link::Dpdk(d) => {
                if let Some(mut m) = d.pool.alloc() {
                    if let Some(buf) = m.append(len) {
                        let r = f(buf);
                        d.out.push(m);
                        if d.out.len() >= BURST {
                            d.tx.send(&mut d.out);
                        }
                        return r;
                    }
                }
                // No buffer: smoltcp's token cannot fail, so build the frame
                // into scratch space and drop it (TCP retransmits).
                self.counters.tx_nombuf += 1;
                let mut scratch = vec![0u8; len];
                f(&mut scratch)
            }
            Link::Shared(l) => {
                if let Some(mut m) = l.pool.alloc() {
                    if let Some(buf) = m.append(len) {
                        let r = f(buf);
                        if l.outbox.push(m).is_err() {
                            self.counters.tx_ring_drops += 1;
                        }
                        return r;
                    }
                }
                self.counters.tx_nombuf += 1;
                let mut scratch = vec![0u8; len];
                f(&mut scratch)
            }
            Link::Memory(m) => {
                let mut frame = vec![0u8; len];
                let r = f(&mut frame);
                m.peer.borrow_mut().push_back(frame);
                r
            }
        }
    }
}

fn capabilities() -> DeviceCapabilities {
    let mut caps = DeviceCapabilities::default();
    caps.medium = Medium::Ethernet;
    caps.max_transmission_unit = IP_MTU + 14;
    caps.max_burst_size = Some(BURST);
    caps
}

/// Device view that yields exactly one received frame.
pub struct OneFrame<'a> {
    pub frame: Option<RxFrame>,
    pub link: &'a mut LinkState,
}

/// Transmit-only device view (egress and timers).
pub struct Egress<'a> {
    pub link: &'a mut LinkState,
}

pub struct RxTok(RxFrame);
pub struct TxTok<'a>(&'a mut LinkState);

impl phy::RxToken for RxTok {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0.bytes())
    }
}

impl phy::TxToken for TxTok<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        self.0.transmit_frame(len, f)
    }
}

impl Device for OneFrame<'_> {
    type RxToken<'b>
        = RxTok
    where
        Self: 'b;
    type TxToken<'b>
        = TxTok<'b>
    where
        Self: 'b;

    fn receive(&mut self, _: SmolInstant) -> Option<(RxTok, TxTok<'_>)> {
        let frame = self.frame.take()?;
        Some((RxTok(frame), TxTok(self.link)))
    }

    fn transmit(&mut self, _: SmolInstant) -> Option<TxTok<'_>> {
        Some(TxTok(self.link))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        capabilities()
    }
}

impl Device for Egress<'_> {
    type RxToken<'b>
        = RxTok
    where
        Self: 'b;
    type TxToken<'b>
        = TxTok<'b>
    where
        Self: 'b;

    fn receive(&mut self, _: SmolInstant) -> Option<(RxTok, TxTok<'_>)> {
        None
    }

    fn transmit(&mut self, _: SmolInstant) -> Option<TxTok<'_>> {
        Some(TxTok(self.link))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        capabilities()
    }
}

/// The TCP connection a frame belongs to, seen from this host: Ethernet II,
/// IPv4 without fragmentation offset, TCP.  `None` for anything else (ARP,
/// ICMP, fragments), which goes to the stack's control path.
pub fn classify(frame: &[u8]) -> Option<(FourTuple, TcpFlags)> {
    if frame.len() < 14 + 20 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[14..];
    if ip[0] >> 4 != 4 || ip[9] != 6 {
        return None;
    }
    let ihl = ((ip[0] & 0x0f) as usize) * 4;
    let frag = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff;
    if frag != 0 || ihl < 20 || ip.len() < ihl + 20 {
        return None;
    }
    let tcp = &ip[ihl..];
    let tuple = FourTuple {
        local_ip: u32::from_be_bytes([ip[16], ip[17], ip[18], ip[19]]),
        local_port: u16::from_be_bytes([tcp[2], tcp[3]]),
        remote_ip: u32::from_be_bytes([ip[12], ip[13], ip[14], ip[15]]),
        remote_port: u16::from_be_bytes([tcp[0], tcp[1]]),
    };
    let flags = tcp[13];
    Some((tuple, TcpFlags { syn: flags & 0x02 != 0, ack: flags & 0x10 != 0 }))
}

/// A TCP connection's identity from this host's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FourTuple {
    pub local_ip: u32,
    pub local_port: u16,
    pub remote_ip: u32,
    pub remote_port: u16,
}

#[derive(Debug, Clone, Copy)]
pub struct TcpFlags {
    pub syn: bool,
    pub ack: bool,
}

#[cfg(test)]
mod steer_tests {
    use super::*;

    fn frame(ethertype: [u8; 2], ip_proto: u8, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20];
        f[12..14].copy_from_slice(&ethertype);
        f[14] = 0x45;
        f[14 + 9] = ip_proto;
        f[14 + 12..14 + 16].copy_from_slice(&src);
        f[14 + 16..14 + 20].copy_from_slice(&dst);
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f
    }

    /// A TCP segment goes to the shard its 4-tuple hashes to — the one whose
    /// source-port choice (or whose queue, under matching RSS) owns it —
    /// whichever queue it arrived on; ARP goes to all; ICMP to shard 0.
    #[test]
    fn frames_steer_to_the_shard_owning_their_flow() {
        let (client, gateway) = ([10, 77, 0, 1], [10, 77, 0, 2]);
        let mut seen = [0usize; 3];
        for sport in 40000..40300u16 {
            let f = frame([0x08, 0x00], 6, client, gateway, sport, 8000);
            let t = FourTuple {
                local_ip: u32::from_be_bytes(gateway),
                local_port: 8000,
                remote_ip: u32::from_be_bytes(client),
                remote_port: sport,
            };
            let want = flow_shard(&t, 3) as usize;
            assert_eq!(steer(&f, 3), Steer::Shard(want));
            seen[want] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "flows spread over the shards: {seen:?}");
        assert_eq!(steer(&frame([0x08, 0x06], 0, client, gateway, 0, 0), 3), Steer::All);
        assert_eq!(steer(&frame([0x08, 0x00], 1, client, gateway, 0, 0), 3), Steer::Shard(0));
    }
}
