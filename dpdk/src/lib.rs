//! DPDK bindings for meshgate: the only crate allowed to hold `unsafe` code.
//!
//! What it owns: linking Debian's DPDK 22.11 through pkg-config (`build.rs`),
//! a small C shim (`csrc/shim.c`, built with the `cc` crate) that exports the
//! `static inline` calls (rx/tx burst, mbuf alloc/free/data access) and wraps
//! the calls that take large structs (port configuration, stats, link), and
//! safe wrappers over them:
//!
//! * [`Eal`] — the Environment Abstraction Layer, initialised once per
//!   process from an argument list (DPDK allows no second `rte_eal_init`).
//! * [`Mempool`] — a packet-buffer pool (`rte_pktmbuf_pool_create`).
//! * [`Mbuf`] — one owned packet buffer; dropping it returns it to its pool.
//! * [`Port`] — an ethernet device: configure (queues, RSS), start/stop, MAC,
//!   link, counters, promiscuous mode.  Stopped and closed on last drop.
//! * [`RxQueue`] / [`TxQueue`] — one queue each, `Send` but not `Sync`: a
//!   queue is owned by exactly one shard thread, which is what makes the
//!   lock-free burst calls safe (DPDK queues are single-threaded).
//!
//! Lifetimes: the EAL and mempools live until the process exits (they are
//! `&'static`).  An mbuf may be held anywhere, and freeing a pool or running
//! `rte_eal_cleanup` under a live mbuf would be a use-after-free, so neither
//! happens while the process runs; the OS reclaims the memory at exit (meshgate
//! runs DPDK `--in-memory` or with its own `--file-prefix`).
//!
//! What it must not touch: sockets, TCP/IP, HTTP, configuration, shards.  It
//! moves frames between NIC queues and mbufs and nothing else; the userspace
//! TCP/IP stack (smoltcp) lives in `dataplane::transport::userspace`.
//!
//! Without libdpdk at build time, `cfg(has_dpdk)` is unset: the same API
//! compiles, [`AVAILABLE`] is false and [`Eal::init`] fails with a message
//! saying so, so the rest of the workspace builds and runs in kernel mode.

mod ffi;
mod rss;

pub use rss::{toeplitz_hash, RSS_KEY};

use std::ffi::{CStr, CString};
use std::fmt;
use std::marker::PhantomData;
use std::os::raw::{c_char, c_int};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

/// Whether this build carries the DPDK data path (libdpdk was found).
pub const AVAILABLE: bool = cfg!(has_dpdk);

/// Frames moved per burst call (DPDK's customary 32).
pub const BURST: usize = 32;

/// A DPDK call failed: which operation, and DPDK's error text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub op: &'static str,
    pub code: i32,
    pub message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} (error {})", self.op, self.message, self.code)
    }
}

impl std::error::Error for Error {}

fn error(op: &'static str, code: c_int) -> Error {
    let code = code.abs();
    // SAFETY: rte_strerror returns a pointer to a static or thread-local
    // NUL-terminated string.
    let message = unsafe { CStr::from_ptr(ffi::mg_strerror(code)) }.to_string_lossy().into_owned();
    Error { op, code, message }
}

fn check(op: &'static str, rc: c_int) -> Result<(), Error> {
    if rc < 0 {
        Err(error(op, rc))
    } else {
        Ok(())
    }
}

/// The initialised Environment Abstraction Layer (one per process).
pub struct Eal {
    args: Vec<String>,
}

const EAL_UNINIT: u8 = 0;
const EAL_RUNNING: u8 = 1;
const EAL_FAILED: u8 = 2;
static EAL_STATE: AtomicU8 = AtomicU8::new(EAL_UNINIT);
static EAL: OnceLock<Eal> = OnceLock::new();

impl Eal {
    /// Initialises the EAL from `args` (as on a DPDK command line, without
    /// the program name, e.g. `["-l", "0", "--no-huge", "--no-pci",
    /// "--vdev=net_ring0"]`).  DPDK cannot initialise twice in one process,
    /// even after a failure: a second call fails.
    pub fn init<S: AsRef<str>>(args: &[S]) -> Result<&'static Eal, Error> {
        if EAL_STATE.compare_exchange(EAL_UNINIT, EAL_RUNNING, Ordering::AcqRel, Ordering::Acquire).is_err() {
            return Err(Error {
                op: "rte_eal_init",
                code: 114,
                message: "the EAL was already initialised in this process (DPDK allows it once)".into(),
            });
        }
        let mut owned: Vec<CString> = vec![CString::new("meshgate").expect("no NUL")];
        for a in args {
            match CString::new(a.as_ref()) {
                Ok(c) => owned.push(c),
                Err(_) => {
                    EAL_STATE.store(EAL_FAILED, Ordering::Release);
                    return Err(Error { op: "rte_eal_init", code: 22, message: "argument contains a NUL byte".into() });
                }
            }
        }
        // rte_eal_init may permute argv; give it a scratch array of pointers
        // into strings that outlive the call.
        let mut argv: Vec<*mut c_char> = owned.iter().map(|c| c.as_ptr() as *mut c_char).collect();
        argv.push(std::ptr::null_mut());
        // SAFETY: argv holds argc valid NUL-terminated strings plus a NULL;
        // EAL_STATE guarantees this runs once per process.
        let rc = unsafe { ffi::mg_eal_init(owned.len() as c_int, argv.as_mut_ptr()) };
        if rc < 0 {
            EAL_STATE.store(EAL_FAILED, Ordering::Release);
            // SAFETY: plain read of rte_errno for this thread.
            return Err(error("rte_eal_init", unsafe { ffi::mg_errno() }));
        }
        Ok(EAL.get_or_init(|| Eal { args: args.iter().map(|a| a.as_ref().to_string()).collect() }))
    }

    /// The EAL if it is running in this process.
    pub fn get() -> Option<&'static Eal> {
        EAL.get()
    }

    /// The arguments the EAL was started with.
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// Ethernet ports the EAL probed (physical and virtual devices).
    pub fn port_count(&self) -> u16 {
        // SAFETY: EAL is initialised (self exists).
        unsafe { ffi::mg_eth_dev_count_avail() }
    }
}

/// A pool of packet buffers.  Thread-safe (DPDK's default ring mempool is
/// multi-producer/multi-consumer); lives until the process exits.
pub struct Mempool {
    raw: NonNull<ffi::rte_mempool>,
    data_room: u16,
}

// SAFETY: rte_mempool operations used here are multi-thread safe.
unsafe impl Send for Mempool {}
unsafe impl Sync for Mempool {}

/// Headroom DPDK reserves in front of each mbuf's data (RTE_PKTMBUF_HEADROOM).
pub const MBUF_HEADROOM: u16 = 128;

impl Mempool {
    /// Creates a pool of `count` mbufs, each with room for `data_room` bytes
    /// after the headroom (2048 fits a 1500-byte MTU frame), and a per-lcore
    /// cache of `cache` entries.
    pub fn new(
        _eal: &'static Eal,
        name: &str,
        count: u32,
        cache: u32,
        data_room: u16,
    ) -> Result<&'static Mempool, Error> {
        let cname = CString::new(name).map_err(|_| Error {
            op: "rte_pktmbuf_pool_create",
            code: 22,
            message: "NUL in name".into(),
        })?;
        let room = data_room.checked_add(MBUF_HEADROOM).ok_or(Error {
            op: "rte_pktmbuf_pool_create",
            code: 22,
            message: "data room too large".into(),
        })?;
        // SAFETY: EAL initialised; name is a valid C string.
        let raw = unsafe { ffi::mg_pktmbuf_pool_create(cname.as_ptr(), count, cache, room) };
        match NonNull::new(raw) {
            // SAFETY: plain read of rte_errno.
            None => Err(error("rte_pktmbuf_pool_create", unsafe { ffi::mg_errno() })),
            Some(raw) => Ok(Box::leak(Box::new(Mempool { raw, data_room }))),
        }
    }

    /// A fresh, empty mbuf, or `None` when the pool is exhausted.
    #[inline]
    pub fn alloc(&self) -> Option<Mbuf> {
        // SAFETY: raw is a live pool.
        NonNull::new(unsafe { ffi::mg_pktmbuf_alloc(self.raw.as_ptr()) }).map(|raw| Mbuf { raw })
    }

    /// Mbufs currently free in the pool.
    pub fn available(&self) -> u32 {
        // SAFETY: raw is a live pool.
        unsafe { ffi::mg_mempool_avail_count(self.raw.as_ptr()) }
    }

    /// Bytes of frame each mbuf holds.
    pub fn data_room(&self) -> u16 {
        self.data_room
    }
}

/// One owned packet buffer (single segment: meshgate enables no scatter).
/// Dropping it returns it to its pool.
#[repr(transparent)]
pub struct Mbuf {
    raw: NonNull<ffi::rte_mbuf>,
}

// SAFETY: an mbuf is exclusively owned; returning it to its (thread-safe)
// pool from another thread is allowed.
unsafe impl Send for Mbuf {}

impl Mbuf {
    /// The frame bytes.
    #[inline]
    pub fn data(&self) -> &[u8] {
        // SAFETY: data pointer and data_len describe the first segment, owned by self.
        unsafe {
            let len = ffi::mg_pktmbuf_data_len(self.raw.as_ptr()) as usize;
            std::slice::from_raw_parts(ffi::mg_pktmbuf_data(self.raw.as_ptr()), len)
        }
    }

    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: as `data`, with exclusive access through &mut self.
        unsafe {
            let len = ffi::mg_pktmbuf_data_len(self.raw.as_ptr()) as usize;
            std::slice::from_raw_parts_mut(ffi::mg_pktmbuf_data(self.raw.as_ptr()), len)
        }
    }

    /// Frame length (all segments).
    #[inline]
    pub fn len(&self) -> usize {
        // SAFETY: self is a live mbuf.
        unsafe { ffi::mg_pktmbuf_pkt_len(self.raw.as_ptr()) as usize }
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Segments in the chain (1 unless a driver scattered a large frame).
    pub fn segments(&self) -> u16 {
        // SAFETY: self is a live mbuf.
        unsafe { ffi::mg_pktmbuf_nb_segs(self.raw.as_ptr()) }
    }

    /// Bytes that can still be appended.
    pub fn tailroom(&self) -> usize {
        // SAFETY: self is a live mbuf.
        unsafe { ffi::mg_pktmbuf_tailroom(self.raw.as_ptr()) as usize }
    }

    /// Grows the frame by `len` bytes and returns them (uninitialised content
    /// is whatever the buffer held: callers overwrite it), or `None` if the
    /// tailroom is too small.
    #[inline]
    pub fn append(&mut self, len: usize) -> Option<&mut [u8]> {
        let len16 = u16::try_from(len).ok()?;
        // SAFETY: rte_pktmbuf_append returns NULL or a pointer to `len` bytes inside the buffer.
        unsafe {
            let p = ffi::mg_pktmbuf_append(self.raw.as_ptr(), len16);
            if p.is_null() {
                None
            } else {
                Some(std::slice::from_raw_parts_mut(p, len))
            }
        }
    }

    /// Removes `len` bytes from the end.
    pub fn trim(&mut self, len: usize) -> bool {
        let Ok(len) = u16::try_from(len) else { return false };
        // SAFETY: self is a live mbuf.
        unsafe { ffi::mg_pktmbuf_trim(self.raw.as_ptr(), len) == 0 }
    }

    /// The RSS hash the NIC computed for this frame, if the driver supplied one.
    pub fn rss_hash(&self) -> Option<u32> {
        // SAFETY: self is a live mbuf.
        let h = unsafe { ffi::mg_pktmbuf_rss_hash(self.raw.as_ptr()) };
        (h != 0).then_some(h)
    }
}

impl Drop for Mbuf {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: self owns the mbuf; it is not used afterwards.
        unsafe { ffi::mg_pktmbuf_free(self.raw.as_ptr()) }
    }
}

impl fmt::Debug for Mbuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mbuf").field("len", &self.len()).finish()
    }
}

/// How to set a port up.
#[derive(Debug, Clone)]
pub struct PortConfig {
    pub rx_queues: u16,
    pub tx_queues: u16,
    /// Descriptors per receive ring.
    pub rx_desc: u16,
    /// Descriptors per transmit ring.
    pub tx_desc: u16,
    /// Spread flows over the receive queues with Toeplitz RSS ([`RSS_KEY`]).
    pub rss: bool,
    pub promiscuous: bool,
}

impl Default for PortConfig {
    fn default() -> Self {
        PortConfig { rx_queues: 1, tx_queues: 1, rx_desc: 1024, tx_desc: 1024, rss: true, promiscuous: false }
    }
}

/// What the driver says about a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    pub driver: String,
    pub max_rx_queues: u16,
    pub max_tx_queues: u16,
    /// RSS hash types the device offers (0: no RSS).
    pub rss_offloads: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub up: bool,
    pub speed_mbps: u32,
    pub full_duplex: bool,
}

/// Port counters as the driver keeps them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Frames the NIC dropped because the receive ring was full.
    pub imissed: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    /// Receive failures for want of an mbuf.
    pub rx_nombuf: u64,
}

struct PortInner {
    id: u16,
    started: AtomicBool,
}

impl Drop for PortInner {
    fn drop(&mut self) {
        // SAFETY: the port was configured by Port::open; no queue handle is
        // left (they hold this Arc), so nothing bursts concurrently.
        unsafe {
            if self.started.load(Ordering::Acquire) {
                ffi::mg_eth_dev_stop(self.id);
            }
            ffi::mg_eth_dev_close(self.id);
        }
    }
}

/// An ethernet device.  Cheap to clone (shared handle); stopped and closed
/// when the last handle and queue are dropped.
#[derive(Clone)]
pub struct Port {
    inner: Arc<PortInner>,
}

impl fmt::Debug for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Port").field("id", &self.inner.id).finish()
    }
}

impl Port {
    /// What the driver of port `id` offers, before configuring it.
    pub fn info_of(_eal: &'static Eal, id: u16) -> Result<PortInfo, Error> {
        // SAFETY: EAL initialised.
        if unsafe { ffi::mg_eth_dev_is_valid_port(id) } == 0 {
            let count = unsafe { ffi::mg_eth_dev_count_avail() };
            return Err(Error {
                op: "rte_eth_dev_info_get",
                code: 19,
                message: format!("no DPDK port {id} (the EAL probed {count} port(s))"),
            });
        }
        let mut driver = [0 as c_char; 64];
        let (mut max_rx, mut max_tx, mut rss) = (0u16, 0u16, 0u64);
        // SAFETY: out-pointers are valid for the call.
        let rc =
            unsafe { ffi::mg_eth_dev_info(id, driver.as_mut_ptr(), driver.len(), &mut max_rx, &mut max_tx, &mut rss) };
        check("rte_eth_dev_info_get", rc)?;
        // SAFETY: the shim NUL-terminates within the buffer (snprintf).
        let driver = unsafe { CStr::from_ptr(driver.as_ptr()) }.to_string_lossy().into_owned();
        Ok(PortInfo { driver, max_rx_queues: max_rx, max_tx_queues: max_tx, rss_offloads: rss })
    }

    /// Configures port `id` with `config`, sets up its queues (receive
    /// buffers from `pool`) and starts it.  Returns the port and one handle
    /// per queue, to be handed to the shards that own them.
    pub fn open(
        eal: &'static Eal,
        id: u16,
        config: &PortConfig,
        pool: &'static Mempool,
    ) -> Result<(Port, Vec<RxQueue>, Vec<TxQueue>), Error> {
        let info = Port::info_of(eal, id)?;
        if config.rx_queues == 0
            || config.tx_queues == 0
            || config.rx_queues > info.max_rx_queues
            || config.tx_queues > info.max_tx_queues
        {
            return Err(Error {
                op: "rte_eth_dev_configure",
                code: 22,
                message: format!(
                    "port {id} ({}) supports 1..={} rx and 1..={} tx queues; asked for {} and {}",
                    info.driver, info.max_rx_queues, info.max_tx_queues, config.rx_queues, config.tx_queues
                ),
            });
        }
        let rss = config.rss && config.rx_queues > 1 && info.rss_offloads != 0;
        // SAFETY: EAL initialised, port valid; RSS_KEY is 'static and the
        // driver copies it during configure.
        let rc = unsafe {
            ffi::mg_eth_dev_configure(
                id,
                config.rx_queues,
                config.tx_queues,
                rss as c_int,
                RSS_KEY.as_ptr(),
                RSS_KEY.len() as u8,
            )
        };
        check("rte_eth_dev_configure", rc)?;
        // From here on, dropping `inner` closes the port.
        let inner = Arc::new(PortInner { id, started: AtomicBool::new(false) });
        for q in 0..config.rx_queues {
            // SAFETY: port configured; pool is a live mempool.
            check("rte_eth_rx_queue_setup", unsafe {
                ffi::mg_eth_rx_queue_setup(id, q, config.rx_desc, pool.raw.as_ptr())
            })?;
        }
        for q in 0..config.tx_queues {
            // SAFETY: port configured.
            check("rte_eth_tx_queue_setup", unsafe { ffi::mg_eth_tx_queue_setup(id, q, config.tx_desc) })?;
        }
        let port = Port { inner };
        if config.promiscuous {
            port.set_promiscuous(true)?;
        }
        port.start()?;
        let rx = (0..config.rx_queues)
            .map(|q| RxQueue { port: port.inner.clone(), queue: q, _not_sync: PhantomData })
            .collect();
        let tx = (0..config.tx_queues)
            .map(|q| TxQueue { port: port.inner.clone(), queue: q, _not_sync: PhantomData })
            .collect();
        Ok((port, rx, tx))
    }

    pub fn id(&self) -> u16 {
        self.inner.id
    }

    pub fn start(&self) -> Result<(), Error> {
        // SAFETY: port configured by open.
        check("rte_eth_dev_start", unsafe { ffi::mg_eth_dev_start(self.inner.id) })?;
        self.inner.started.store(true, Ordering::Release);
        Ok(())
    }

    /// Stops the port (queues stay allocated; `start` resumes).
    pub fn stop(&self) -> Result<(), Error> {
        // SAFETY: port configured by open.
        check("rte_eth_dev_stop", unsafe { ffi::mg_eth_dev_stop(self.inner.id) })?;
        self.inner.started.store(false, Ordering::Release);
        Ok(())
    }

    pub fn is_started(&self) -> bool {
        self.inner.started.load(Ordering::Acquire)
    }

    pub fn info(&self) -> Result<PortInfo, Error> {
        Port::info_of(Eal::get().expect("a port exists only with a running EAL"), self.inner.id)
    }

    pub fn mac(&self) -> Result<[u8; 6], Error> {
        let mut mac = [0u8; 6];
        // SAFETY: mac has room for 6 bytes.
        check("rte_eth_macaddr_get", unsafe { ffi::mg_eth_macaddr_get(self.inner.id, mac.as_mut_ptr()) })?;
        Ok(mac)
    }

    pub fn link(&self) -> Result<Link, Error> {
        let (mut speed, mut up, mut fd) = (0u32, 0 as c_int, 0 as c_int);
        // SAFETY: out-pointers valid for the call.
        check("rte_eth_link_get_nowait", unsafe {
            ffi::mg_eth_link_get_nowait(self.inner.id, &mut speed, &mut up, &mut fd)
        })?;
        Ok(Link { up: up != 0, speed_mbps: speed, full_duplex: fd != 0 })
    }

    pub fn stats(&self) -> Result<PortStats, Error> {
        let mut s = [0u64; 8];
        // SAFETY: s has the 8 slots the shim fills.
        check("rte_eth_stats_get", unsafe { ffi::mg_eth_stats_get(self.inner.id, s.as_mut_ptr()) })?;
        Ok(PortStats {
            rx_packets: s[0],
            tx_packets: s[1],
            rx_bytes: s[2],
            tx_bytes: s[3],
            imissed: s[4],
            rx_errors: s[5],
            tx_errors: s[6],
            rx_nombuf: s[7],
        })
    }

    pub fn reset_stats(&self) -> Result<(), Error> {
        // SAFETY: port valid.
        check("rte_eth_stats_reset", unsafe { ffi::mg_eth_stats_reset(self.inner.id) })
    }

    pub fn set_promiscuous(&self, on: bool) -> Result<(), Error> {
        // SAFETY: port valid.
        let rc = unsafe {
            if on {
                ffi::mg_eth_promiscuous_enable(self.inner.id)
            } else {
                ffi::mg_eth_promiscuous_disable(self.inner.id)
            }
        };
        check("rte_eth_promiscuous_enable/disable", rc)
    }

    pub fn promiscuous(&self) -> Result<bool, Error> {
        // SAFETY: port valid.
        let rc = unsafe { ffi::mg_eth_promiscuous_get(self.inner.id) };
        check("rte_eth_promiscuous_get", rc)?;
        Ok(rc == 1)
    }
}

/// One receive queue, owned by one thread.
pub struct RxQueue {
    port: Arc<PortInner>,
    queue: u16,
    _not_sync: PhantomData<std::cell::Cell<()>>,
}

impl RxQueue {
    pub fn port_id(&self) -> u16 {
        self.port.id
    }

    pub fn queue_id(&self) -> u16 {
        self.queue
    }

    /// The counters of the whole port this queue belongs to.
    pub fn port_stats(&self) -> Result<PortStats, Error> {
        Port { inner: self.port.clone() }.stats()
    }

    /// Receives up to [`BURST`] frames, appending them to `out`; returns how many.
    #[inline]
    pub fn recv(&mut self, out: &mut Vec<Mbuf>) -> usize {
        out.reserve(BURST);
        let len = out.len();
        // SAFETY: `out` has room for BURST pointers past len; Mbuf is a
        // transparent wrapper over the pointer; this thread owns the queue.
        unsafe {
            let dst = out.as_mut_ptr().add(len) as *mut *mut ffi::rte_mbuf;
            let n = ffi::mg_rx_burst(self.port.id, self.queue, dst, BURST as u16) as usize;
            out.set_len(len + n);
            n
        }
    }
}

/// One transmit queue, owned by one thread.
pub struct TxQueue {
    port: Arc<PortInner>,
    queue: u16,
    _not_sync: PhantomData<std::cell::Cell<()>>,
}

impl TxQueue {
    pub fn port_id(&self) -> u16 {
        self.port.id
    }

    pub fn queue_id(&self) -> u16 {
        self.queue
    }

    /// Hands frames from the front of `pkts` to the NIC; the ones it took are
    /// removed, the ones it refused (ring full) stay for a later retry.
    /// Returns how many were sent.
    #[inline]
    pub fn send(&mut self, pkts: &mut Vec<Mbuf>) -> usize {
        let len = pkts.len();
        let mut sent = 0;
        while sent < len {
            let chunk = (len - sent).min(u16::MAX as usize) as u16;
            // SAFETY: pkts[sent..sent+chunk] are live mbufs; the driver takes
            // ownership of the first `n` it returns.
            let n = unsafe {
                ffi::mg_tx_burst(
                    self.port.id,
                    self.queue,
                    pkts.as_mut_ptr().add(sent) as *mut *mut ffi::rte_mbuf,
                    chunk,
                )
            } as usize;
            sent += n;
            if n < chunk as usize {
                break;
            }
        }
        // SAFETY: the first `sent` mbufs now belong to the driver: forget them
        // by moving the unsent tail to the front without dropping anything.
        unsafe {
            std::ptr::copy(pkts.as_ptr().add(sent), pkts.as_mut_ptr(), len - sent);
            pkts.set_len(len - sent);
        }
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_fails_cleanly_without_dpdk_or_twice() {
        if !AVAILABLE {
            let err = Eal::init(&["--no-huge"]).err().expect("no EAL without libdpdk");
            assert!(err.to_string().contains("no DPDK"), "{err}");
        }
        // (With libdpdk, EAL behaviour is tested in tests/eal.rs, one process per EAL.)
    }
}
