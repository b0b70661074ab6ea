//! STRICT_DNS resolution: a background thread that resolves the hostnames of
//! STRICT_DNS clusters every `dns_refresh_rate` and publishes the results.
//!
//! Shards read the results (one atomic version check per loop pass) and
//! rebuild only the host lists of clusters whose addresses changed.  As in
//! Envoy, a failed lookup keeps the last good answer rather than emptying the
//! cluster.  Resolution uses the system resolver (getaddrinfo), which is
//! blocking — hence its own thread, never a shard.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use control::model::{Config, DiscoveryType, EndpointAddress};

use crate::server::ServerState;

/// Resolved addresses per STRICT_DNS cluster.
#[derive(Default)]
pub struct DnsResults {
    version: AtomicU64,
    by_cluster: ArcSwap<HashMap<String, Arc<[SocketAddr]>>>,
}

impl DnsResults {
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    pub fn get(&self, cluster: &str) -> Option<Arc<[SocketAddr]>> {
        self.by_cluster.load().get(cluster).cloned()
    }

    /// Resolves every STRICT_DNS cluster of `config` once; publishes if
    /// anything changed.
    pub fn refresh(&self, config: &Config, only_due: Option<&dyn Fn(&str) -> bool>) {
        let current = self.by_cluster.load_full();
        let mut next: HashMap<String, Arc<[SocketAddr]>> = HashMap::new();
        for (name, cluster) in &config.clusters {
            if cluster.discovery != DiscoveryType::StrictDns {
                continue;
            }
            if let Some(due) = only_due {
                if !due(name) {
                    if let Some(prev) = current.get(name) {
                        next.insert(name.clone(), prev.clone());
                    }
                    continue;
                }
            }
            let mut addrs = Vec::new();
            let mut failed = false;
            for ep in &cluster.endpoints {
                if let EndpointAddress::Dns { host, port } = &ep.address {
                    match (host.as_str(), *port).to_socket_addrs() {
                        Ok(found) => addrs.extend(found),
                        Err(e) => {
                            tracing::warn!(cluster = %name, host = %host, error = %e, "DNS resolution failed");
                            failed = true;
                        }
                    }
                }
            }
            addrs.sort();
            addrs.dedup();
            match (failed, current.get(name)) {
                (true, Some(prev)) => {
                    next.insert(name.clone(), prev.clone());
                }
                _ => {
                    next.insert(name.clone(), addrs.into());
                }
            }
        }
        if *current != next {
            self.by_cluster.store(Arc::new(next));
            self.version.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// Runs the refresher until shutdown; `wake_shards` is called after each
/// published change so shards pick it up promptly.
pub fn spawn_refresher(
    results: Arc<DnsResults>,
    config: Arc<ArcSwap<Config>>,
    server: Arc<ServerState>,
    wake_shards: impl Fn() + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("meshgate-dns".into()).spawn(move || {
        let mut next_due: HashMap<String, Instant> = HashMap::new();
        while !server.shutdown_requested() {
            let cfg = config.load_full();
            let now = Instant::now();
            let before = results.version();
            let due_now: Vec<String> = cfg
                .clusters
                .iter()
                .filter(|(name, c)| {
                    c.discovery == DiscoveryType::StrictDns && next_due.get(*name).is_none_or(|t| *t <= now)
                })
                .map(|(name, _)| name.clone())
                .collect();
            if !due_now.is_empty() {
                let due = |name: &str| due_now.iter().any(|d| d == name);
                results.refresh(&cfg, Some(&due));
            }
            for name in &due_now {
                next_due.insert(name.clone(), now + cfg.clusters[name].dns_refresh_rate);
            }
            if results.version() != before {
                wake_shards();
            }
            let sleep = next_due.values().min().map(|t| t.saturating_duration_since(Instant::now()));
            std::thread::sleep(
                sleep.unwrap_or(Duration::from_secs(1)).clamp(Duration::from_millis(50), Duration::from_secs(1)),
            );
        }
    })
}
