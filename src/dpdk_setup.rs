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

/// Whether the port spreads received flows over its queues by the Toeplitz
/// hash configured at `rte_eth_dev_configure` (the hash the shards use to
/// pick source ports).  `net_tap` reports RSS offloads but applies RSS only
/// through rte_flow rules (eBPF, often unavailable: "Disabling rte flow
/// support"); its queues are filled by the kernel's own tun flow choice, so
/// replies to a connection, and ARP, reach some other shard.  It gets one
/// queue and the dispatcher instead.
fn steers_by_port_rss(info: &dpdk::PortInfo) -> bool {
    info.rss_offloads != 0 && info.driver != "net_tap"
}

/// Starts EAL and the port with up to `shards` queue pairs.  Several queues
/// are used only when the device does RSS (flows must land on the queue of
/// the shard that owns them); otherwise one queue pair is shared: shard 0
/// polls it and dispatches frames to the other shards over rings.
pub fn start(opts: &DpdkOptions, shards: usize) -> Result<DpdkDataPath, String> {
    let addr = opts.addr.as_deref().ok_or("--dpdk-addr is required with DPDK (e.g. --dpdk-addr 10.77.0.2/24)")?;
    let (ip, prefix_len) = parse_cidr(addr)?;
    if !dpdk::AVAILABLE {
        return Err("this meshgate build has no DPDK (libdpdk was not found at build time)".into());
    }
    let args: Vec<&str> = opts.eal.split_whitespace().collect();
    let eal = dpdk::Eal::init(&args).map_err(|e| format!("DPDK EAL init with '{}' failed: {e}", opts.eal))?;
    let info = dpdk::Port::info_of(eal, opts.port).map_err(|e| e.to_string())?;
    let max_queues = info.max_rx_queues.min(info.max_tx_queues).max(1) as usize;
    let queues = if steers_by_port_rss(&info) { shards.min(max_queues) } else { 1 };
    let pool = dpdk::Mempool::new(eal, "meshgate_rx", (8192 * queues as u32).saturating_sub(1), 256, 2048)
        .map_err(|e| e.to_string())?;
    let config = dpdk::PortConfig {
        rx_queues: queues as u16,
        tx_queues: queues as u16,
        rss: queues > 1,
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
        for (i, (rx, tx)) in rx.into_iter().zip(tx).enumerate() {
            links
                .push(ShardLink { config: config(i, queues), link: ShardLinkKind::Queue(DpdkLink::new(rx, tx, pool)) });
        }
    }
    Ok(DpdkDataPath { port, links, driver: info.driver })
}
