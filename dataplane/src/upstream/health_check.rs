//! Active health checking (`config.core.v3.HealthCheck`, HTTP, TCP and
//! gRPC — the gRPC protocol lives in `grpc_health.rs`).
//!
//! One side thread per cluster config with `health_checks` probes every
//! host the shards registered in the cluster's shared `ClusterHealth`, with
//! blocking sockets and `timeout`, never on a shard.  A host turns
//! unhealthy after `unhealthy_threshold` consecutive failed checks and
//! healthy again after `healthy_threshold` passing ones; the verdict is the
//! host's `failed_active_hc` flag, which every shard's balancer reads (the
//! same generation-synced view as outlier ejection), so an unhealthy host
//! leaves load balancing and traffic spills to the next priority.  The next
//! check of a host comes after `interval` (healthy), `unhealthy_interval`,
//! the `*_edge_interval` right after a flip, or `no_traffic_interval` while
//! the cluster has seen no request, plus a uniform `interval_jitter`.
//!
//! Deviation from Envoy, documented: hosts start healthy (Envoy starts them
//! failed until the first check passes and holds cluster warm-up for it).
//! The thread ends when the cluster config is replaced (its `ClusterHealth`
//! dropped).  The threshold logic (`HostChecks`) is sans-IO and unit-tested.
//!
//! HTTP and TCP checks to a cluster with a TLS `transport_socket` run over
//! the same TLS (SNI, CA and SAN checks, client certificate, ALPN) with a
//! blocking rustls stream; the config is rebuilt from the files for every
//! check, so rotated certificates apply.  A failed handshake is a network
//! failure.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use control::model::{HealthCheck, HealthCheckKind, UpstreamTls};

use crate::stats::{Counter, Gauge, Scope, StatsStore};

use super::outlier::ClusterHealth;

/// One host's check history (sans-IO).
#[derive(Debug, Clone)]
pub struct HostChecks {
    pub healthy: bool,
    successes: u32,
    failures: u32,
    /// The last result flipped the verdict (edge intervals apply).
    flipped: bool,
}

impl Default for HostChecks {
    fn default() -> HostChecks {
        HostChecks { healthy: true, successes: 0, failures: 0, flipped: false }
    }
}

impl HostChecks {
    /// Records one check; returns whether the verdict flipped.
    pub fn record(&mut self, passed: bool, cfg: &HealthCheck) -> bool {
        let before = self.healthy;
        if passed {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if !self.healthy && self.successes >= cfg.healthy_threshold {
                self.healthy = true;
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.healthy && self.failures >= cfg.unhealthy_threshold {
                self.healthy = false;
            }
        }
        self.flipped = before != self.healthy;
        self.flipped
    }

    /// Time to the next check (before jitter).
    pub fn next_interval(&self, cfg: &HealthCheck, traffic: bool) -> Duration {
        if !traffic {
            return cfg.no_traffic_interval;
        }
        match (self.healthy, self.flipped) {
            (true, true) => cfg.healthy_edge_interval,
            (true, false) => cfg.interval,
            (false, true) => cfg.unhealthy_edge_interval,
            (false, false) => cfg.unhealthy_interval,
        }
    }
}

struct HcStats {
    attempt: Counter,
    success: Counter,
    failure: Counter,
    network_failure: Counter,
    healthy: Gauge,
}

/// Starts the checker thread for `health` (a no-op without health checks).
pub fn start(
    health: &Arc<ClusterHealth>,
    checks: &[HealthCheck],
    tls: Option<&Arc<UpstreamTls>>,
    store: &StatsStore,
    cluster: &str,
) {
    let Some(cfg) = checks.first().cloned() else { return };
    let scope = Scope::Cluster(cluster.to_string());
    let slot = store.control_slot();
    let c = |leaf: &str| store.counter(&scope, &format!("health_check.{leaf}"), slot);
    let stats = HcStats {
        attempt: c("attempt"),
        success: c("success"),
        failure: c("failure"),
        network_failure: c("network_failure"),
        healthy: store.gauge(&scope, "health_check.healthy", slot),
    };
    let weak = Arc::downgrade(health);
    let name = format!("hc-{cluster}");
    let tls = tls.cloned();
    let _ = std::thread::Builder::new().name(name).spawn(move || run(weak, cfg, stats, tls));
}

fn run(weak: Weak<ClusterHealth>, cfg: HealthCheck, stats: HcStats, tls: Option<Arc<UpstreamTls>>) {
    let mut state: std::collections::HashMap<SocketAddr, (HostChecks, Instant)> = Default::default();
    let mut seed = std::process::id() as u64 ^ 0x9E37_79B9_7F4A_7C15;
    loop {
        let Some(health) = weak.upgrade() else { return };
        let now = Instant::now();
        let hosts = health.host_list();
        state.retain(|a, _| hosts.iter().any(|(h, _)| h == a));
        for (addr, host) in &hosts {
            let entry = state.entry(*addr).or_insert_with(|| (HostChecks::default(), now));
            if entry.1 > now {
                continue;
            }
            stats.attempt.inc();
            let passed = match probe(*addr, &cfg, tls.as_deref()) {
                Ok(true) => {
                    stats.success.inc();
                    true
                }
                Ok(false) => {
                    stats.failure.inc();
                    false
                }
                Err(()) => {
                    stats.failure.inc();
                    stats.network_failure.inc();
                    false
                }
            };
            if entry.0.record(passed, &cfg) {
                host.failed_active_hc.store(!entry.0.healthy, Relaxed);
                health.bump();
                tracing::info!(host = %addr, healthy = entry.0.healthy, "active health check verdict changed");
            }
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let jitter_ns = cfg.interval_jitter.as_nanos() as u64;
            let jitter = if jitter_ns == 0 { Duration::ZERO } else { Duration::from_nanos((seed >> 11) % jitter_ns) };
            entry.1 = Instant::now() + entry.0.next_interval(&cfg, health.saw_traffic()) + jitter;
        }
        stats.healthy.set(state.values().filter(|(c, _)| c.healthy).count() as i64);
        let next = state.values().map(|(_, t)| *t).min().unwrap_or(now + Duration::from_millis(100));
        drop(health);
        // Wake at least every 100 ms to notice new hosts or a replaced config.
        let wait = next.saturating_duration_since(Instant::now()).min(Duration::from_millis(100));
        std::thread::sleep(wait.max(Duration::from_millis(1)));
    }
}

/// One check: `Ok(passed)`, or `Err` for a network failure.
fn probe(addr: SocketAddr, cfg: &HealthCheck, tls: Option<&UpstreamTls>) -> Result<bool, ()> {
    if let HealthCheckKind::Grpc { service_name, authority } = &cfg.kind {
        return super::grpc_health::probe(addr, service_name, authority, cfg.timeout);
    }
    let deadline = Instant::now() + cfg.timeout;
    let tcp = TcpStream::connect_timeout(&addr, cfg.timeout).map_err(|_| ())?;
    let left = || deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    let _ = tcp.set_nodelay(true);
    // Timeouts are set on this handle; they apply to the socket under TLS too.
    let sock = tcp.try_clone().map_err(|_| ())?;
    let mut s: Box<dyn ReadWrite> = match tls {
        None => Box::new(tcp),
        Some(t) => Box::new(tls_stream(t, addr, tcp)?),
    };
    match &cfg.kind {
        HealthCheckKind::Http { path, host, expected_statuses } => {
            let req =
                format!("GET {path} HTTP/1.1\r\nhost: {host}\r\nuser-agent: Envoy/HC\r\nconnection: close\r\n\r\n");
            sock.set_write_timeout(Some(left())).map_err(|_| ())?;
            s.write_all(req.as_bytes()).map_err(|_| ())?;
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            // The status line is all that is judged.
            while !buf.windows(2).any(|w| w == b"\r\n") {
                sock.set_read_timeout(Some(left())).map_err(|_| ())?;
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => return Err(()),
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
                if buf.len() > 8192 {
                    return Ok(false);
                }
            }
            let line = String::from_utf8_lossy(&buf);
            let status: Option<u16> = line.split_whitespace().nth(1).and_then(|c| c.parse().ok());
            Ok(status.is_some_and(|st| expected_statuses.iter().any(|(a, b)| st >= *a && st < *b)))
        }
        HealthCheckKind::Tcp { send, receive } => {
            if !send.is_empty() {
                sock.set_write_timeout(Some(left())).map_err(|_| ())?;
                s.write_all(send).map_err(|_| ())?;
            }
            if receive.is_empty() {
                return Ok(true);
            }
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            loop {
                if contains_in_order(&buf, receive) {
                    return Ok(true);
                }
                if Instant::now() >= deadline || buf.len() > 64 * 1024 {
                    return Ok(false);
                }
                sock.set_read_timeout(Some(left())).map_err(|_| ())?;
                match s.read(&mut chunk) {
                    Ok(0) => return Ok(contains_in_order(&buf, receive)),
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(_) => return Ok(false),
                }
            }
        }
        HealthCheckKind::Grpc { .. } => unreachable!("gRPC checks return above"),
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// A blocking TLS client stream over `tcp` per the cluster's context (the
/// handshake runs on the first read or write, under the socket timeouts).
fn tls_stream(
    t: &UpstreamTls,
    addr: SocketAddr,
    tcp: TcpStream,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>, ()> {
    let alpn: Vec<Vec<u8>> = t.alpn_protocols.iter().map(|a| a.as_bytes().to_vec()).collect();
    let config = crate::tls::client::client_config(t, &alpn).map_err(|_| ())?;
    let name = match &t.sni {
        Some(sni) => rustls::pki_types::ServerName::try_from(sni.clone()).map_err(|_| ())?,
        None => rustls::pki_types::ServerName::IpAddress(addr.ip().into()),
    };
    let conn = rustls::ClientConnection::new(config, name).map_err(|_| ())?;
    Ok(rustls::StreamOwned::new(conn, tcp))
}

/// Every payload appears in `data`, each after the previous one (Envoy's
/// fuzzy match of `receive`).
fn contains_in_order(data: &[u8], payloads: &[Vec<u8>]) -> bool {
    let mut from = 0;
    for p in payloads {
        match data[from..].windows(p.len().max(1)).position(|w| w == &p[..]) {
            Some(i) => from += i + p.len(),
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> HealthCheck {
        HealthCheck {
            timeout: Duration::from_secs(1),
            interval: Duration::from_secs(5),
            interval_jitter: Duration::ZERO,
            unhealthy_threshold: 3,
            healthy_threshold: 2,
            no_traffic_interval: Duration::from_secs(60),
            unhealthy_interval: Duration::from_secs(7),
            unhealthy_edge_interval: Duration::from_secs(1),
            healthy_edge_interval: Duration::from_secs(2),
            kind: HealthCheckKind::Tcp { send: vec![], receive: vec![] },
        }
    }

    #[test]
    fn thresholds_flip_the_verdict() {
        let c = cfg();
        let mut h = HostChecks::default();
        assert!(h.healthy);
        assert!(!h.record(false, &c));
        assert!(!h.record(false, &c));
        assert!(h.record(false, &c), "third failure: unhealthy");
        assert!(!h.healthy);
        assert_eq!(h.next_interval(&c, true), Duration::from_secs(1), "unhealthy edge");
        assert!(!h.record(false, &c));
        assert_eq!(h.next_interval(&c, true), Duration::from_secs(7));
        assert!(!h.record(true, &c));
        assert!(!h.record(false, &c), "a failure resets the success run");
        assert!(!h.record(true, &c));
        assert!(h.record(true, &c), "two passes in a row: healthy");
        assert_eq!(h.next_interval(&c, true), Duration::from_secs(2), "healthy edge");
        assert!(!h.record(true, &c));
        assert_eq!(h.next_interval(&c, true), Duration::from_secs(5));
        assert_eq!(h.next_interval(&c, false), Duration::from_secs(60), "no traffic yet");
    }

    #[test]
    fn receive_payloads_match_in_order() {
        let d = b"xxPONGyyOKzz";
        assert!(contains_in_order(d, &[b"PONG".to_vec(), b"OK".to_vec()]));
        assert!(!contains_in_order(d, &[b"OK".to_vec(), b"PONG".to_vec()]));
        assert!(contains_in_order(d, &[]));
    }

    #[test]
    fn probes_real_sockets() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming().take(2) {
                let mut s = s.unwrap();
                let mut b = [0u8; 512];
                let _ = s.read(&mut b);
                let _ = s.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n");
            }
        });
        let http = |expected: Vec<(u16, u16)>| HealthCheck {
            kind: HealthCheckKind::Http { path: "/hc".into(), host: "c".into(), expected_statuses: expected },
            ..cfg()
        };
        assert_eq!(probe(addr, &http(vec![(200, 201)]), None), Ok(false));
        assert_eq!(probe(addr, &http(vec![(500, 600)]), None), Ok(true));
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        assert_eq!(probe(closed, &cfg(), None), Err(()), "refused: a network failure");
    }
}
