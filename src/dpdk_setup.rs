//! Starting the DPDK data path for `--mode dpdk|auto`: EAL from
//! `--dpdk-eal`, the port `--dpdk-port`, a packet pool, one queue pair per
//! shard, and the stack settings (`--dpdk-addr`, `--dpdk-gateway`).  The
//! shards build their userspace stacks from what this returns.

use std::net::Ipv4Addr;

use dataplane::transport::userspace::{DpdkLink, ShardLink, ShardLinkKind, StackConfig};

/// DPDK options from the command line.
pub struct DpdkOptions {
    pub eal: String,
    pub port: u16,
    pub addr: Option<String>,
    pub gateway: Option<Ipv4Addr>,
    /// See `StackConfig::idle_nap`.
    pub idle_nap: std::time::Duration,
}

/// A started port: the queue pairs, one per shard, and the port handle (for
/// counters).
pub struct DpdkDataPath {
    pub port: dpdk::Port,
    pub links: Vec<ShardLink>,
    pub driver: String,
}

/// Parses `10.77.0.2/24`.
pub fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let (ip, len) =
        s.split_once('/').ok_or_else(|| format!("--dpdk-addr '{s}': expected IPv4/prefix, e.g. 10.77.0.2/24"))?;
    let ip: Ipv4Addr = ip.parse().map_err(|e| format!("--dpdk-addr '{s}': {e}"))?;
    let len: u8 = len.parse().map_err(|e| format!("--dpdk-addr '{s}': prefix: {e}"))?;
    if len > 32 || len == 0 {
        return Err(format!("--dpdk-addr '{s}': prefix must be 1..=32"));
    }
    Ok((ip, len))
}

/// How a port's receive queues are filled, which decides how many queue
/// pairs meshgate opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QueuePlan {
    /// The device spreads flows by the Toeplitz hash configured at
    /// `rte_eth_dev_configure` (the hash the shards use to pick source
    /// ports): one queue pair per shard, up to the device's maximum.
    Rss,
    /// The device's queues are a fixed set that something else fills by its
    /// own hash: `net_af_packet` with `qpairs=N` (the kernel's
    /// PACKET_FANOUT_HASH over N sockets) and `net_af_xdp` with
    /// `queue_count=N` (the kernel NIC's RSS).  Every queue must be read or
    /// its frames are lost, so there is one shard per queue.
    Foreign(usize),
    /// One queue pair, shared: shard 0 polls it and dispatches.  `net_tap`
    /// reports RSS offloads but applies RSS only through rte_flow rules
    /// (eBPF, often unavailable: "Disabling rte flow support"), and its
    /// queues are filled by the kernel's tun flow choice; it gains nothing
    /// from several queues and gets this plan too.
    Single,
}

/// Queue pairs the port can open (the smaller of its receive and transmit maxima).
fn max_queues(info: &dpdk::PortInfo) -> usize {
    info.max_rx_queues.min(info.max_tx_queues).max(1) as usize
}

fn queue_plan(info: &dpdk::PortInfo) -> QueuePlan {
    let max_queues = max_queues(info);
    match info.driver.as_str() {
        "net_tap" => QueuePlan::Single,
        "net_af_packet" | "net_af_xdp" if max_queues > 1 => QueuePlan::Foreign(max_queues),
        _ if info.rss_offloads != 0 => QueuePlan::Rss,
        _ => QueuePlan::Single,
    }
}

/// Starts EAL and the port with up to `shards` queue pairs.  Several queues
/// are used when the device does RSS, or has a fixed set of queues filled by
/// the kernel; each shard then owns one, and frames that arrive on another
/// shard's queue (ARP, or any frame whose flow hashes elsewhere) cross over
/// rings ([`DpdkLink::steer_between`]).  Otherwise one queue pair is shared:
/// shard 0 polls it and dispatches frames to the other shards over rings.
pub fn start(opts: &DpdkOptions, shards: usize) -> Result<DpdkDataPath, String> {
    let addr = opts.addr.as_deref().ok_or("--dpdk-addr is required with DPDK (e.g. --dpdk-addr 10.77.0.2/24)")?;
    let (ip, prefix_len) = parse_cidr(addr)?;
    if !dpdk::AVAILABLE {
        return Err("this meshgate build has no DPDK (libdpdk was not found at build time)".into());
    }
    let args: Vec<&str> = opts.eal.split_whitespace().collect();
    let eal = dpdk::Eal::init(&args).map_err(|e| format!("DPDK EAL init with '{}' failed: {e}", opts.eal))?;
    let info = dpdk::Port::info_of(eal, opts.port).map_err(|e| e.to_string())?;
    let plan = queue_plan(&info);
    let queues = match plan {
        QueuePlan::Rss => shards.min(max_queues(&info)),
        QueuePlan::Foreign(n) if n > shards => {
            return Err(format!(
                "DPDK port {} ({}) has {n} receive queues filled by the kernel but meshgate runs {shards} shards: \
                 every queue needs a shard (lower qpairs/queue_count to at most --shards, or raise --shards)",
                opts.port, info.driver
            ))
        }
        QueuePlan::Foreign(n) => n,
        QueuePlan::Single => 1,
    };
    let pool = dpdk::Mempool::new(eal, "meshgate_rx", (8192 * queues as u32).saturating_sub(1), 256, 2048)
        .map_err(|e| e.to_string())?;
    let config = dpdk::PortConfig {
        rx_queues: queues as u16,
        tx_queues: queues as u16,
        rss: queues > 1 && plan == QueuePlan::Rss,
        ..dpdk::PortConfig::default()
    };
    let (port, rx, tx) = dpdk::Port::open(eal, opts.port, &config, pool)
        .map_err(|e| format!("DPDK port {} ({}): {e}", opts.port, info.driver))?;
    let mac = port.mac().map_err(|e| e.to_string())?;
    match port.link() {
        Ok(l) if !l.up => tracing::warn!(port = opts.port, "DPDK port link is down"),
        _ => {}
    }
    let config = |i: usize, of: usize| StackConfig {
        mac,
        addr: ip,
        prefix_len,
        gateway: opts.gateway,
        seed: 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(i as u64 + 1) ^ std::process::id() as u64,
        rss: (of > 1).then_some((of as u16, i as u16)),
        idle_nap: opts.idle_nap,
    };
    let mut links: Vec<ShardLink> = Vec::new();
    if queues == 1 && shards > 1 {
        // One queue pair, several shards: shard 0 dispatches frames to the
        // others over lock-free rings by the same flow hash RSS would use.
        let (rx, tx) = (rx.into_iter().next().expect("one rx queue"), tx.into_iter().next().expect("one tx queue"));
        let mut own = DpdkLink::new(rx, tx, pool);
        let shared = own.dispatch_to(shards, 4096);
        links.push(ShardLink { config: config(0, shards), link: ShardLinkKind::Queue(own) });
        for (i, l) in shared.into_iter().enumerate() {
            links.push(ShardLink { config: config(i + 1, shards), link: ShardLinkKind::Shared(l) });
        }
    } else {
        let mut own: Vec<DpdkLink> = rx.into_iter().zip(tx).map(|(rx, tx)| DpdkLink::new(rx, tx, pool)).collect();
        if own.len() > 1 {
            DpdkLink::steer_between(&mut own, 4096);
        }
        for (i, link) in own.into_iter().enumerate() {
            links.push(ShardLink { config: config(i, queues), link: ShardLinkKind::Queue(link) });
        }
    }
    Ok(DpdkDataPath { port, links, driver: info.driver })
}
