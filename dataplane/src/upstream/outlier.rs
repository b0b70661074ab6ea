//! Outlier detection: Envoy's passive ejection of misbehaving hosts
//! (`config.cluster.v3.OutlierDetection`, "Outlier detection" in Envoy's
//! architecture overview), with one view of host health for all shards.
//!
//! Shared state: every shard's runtime for the same cluster config holds
//! the same `Arc<ClusterHealth>`; each host's `HostHealth` is a handful of
//! atomics (consecutive-failure counters, this interval's success/failure
//! counts, the ejection deadline and back-off multiplier).  A shard reports
//! each upstream result with a few relaxed atomic operations; when a
//! consecutive counter reaches its threshold that shard performs the
//! ejection (a compare-and-swap on the host's deadline, so two shards never
//! eject the same host twice).  The interval work — un-ejecting hosts whose
//! time is up, decrementing back-off multipliers, success-rate and
//! failure-percentage ejection — is run by whichever shard first notices the
//! interval deadline passed (it claims the interval with a compare-and-swap;
//! nobody waits).  Every change bumps `generation`; a shard re-syncs its
//! balancer's healthy set when the generation it last saw is stale, so a
//! pick costs one extra atomic load.
//!
//! Math (sans-IO, time passed in): ejection time is
//! `min(base_ejection_time × backoff, max(base_ejection_time,
//! max_ejection_time))`, where `backoff` grows by one per ejection (while
//! `base × backoff < max + base`) and shrinks by one each interval the host
//! stays in; at most `max_ejection_percent` of the hosts are ejected (the
//! first one always with `always_eject_one_host`); each `enforcing_*`
//! percentage is a dice roll.  Without `split_external_local_origin_errors`
//! a local-origin failure (connect failure, reset, timeout) counts as a 5xx
//! and as a gateway failure, as Envoy maps it to 503.
//!
//! This module must not do I/O; it counts, decides and publishes flags.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use control::model::{Cluster, OutlierDetection};

use crate::stats::{Counter, Gauge, Scope, StatsStore};

/// Milliseconds since a process-wide epoch (atomics hold times this way).
fn ms(t: Instant) -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(|| Instant::now() - Duration::from_secs(3600));
    t.saturating_duration_since(epoch).as_millis() as u64 + 1
}

/// What one upstream attempt told us about a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response with this status.
    Response(u16),
    /// No response: connect failure, reset, timeout (local origin).
    LocalFailure,
}

/// Why a host was ejected (Envoy's stat suffixes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Consecutive5xx,
    ConsecutiveGatewayFailure,
    ConsecutiveLocalOriginFailure,
    SuccessRate,
    FailurePercentage,
}

impl Reason {
    fn suffix(self) -> &'static str {
        match self {
            Reason::Consecutive5xx => "consecutive_5xx",
            Reason::ConsecutiveGatewayFailure => "consecutive_gateway_failure",
            Reason::ConsecutiveLocalOriginFailure => "consecutive_local_origin_failure",
            Reason::SuccessRate => "success_rate",
            Reason::FailurePercentage => "failure_percentage",
        }
    }
}

/// One host's shared health.
#[derive(Debug, Default)]
pub struct HostHealth {
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    consecutive_local: AtomicU32,
    /// This interval's external-origin (responses) and local-origin counts.
    success: AtomicU64,
    failure: AtomicU64,
    local_success: AtomicU64,
    local_failure: AtomicU64,
    /// When the current ejection started (ms, 0 = not ejected).
    ejected_at: AtomicU64,
    backoff: AtomicU32,
    /// Set by active health checking (`/failed_active_hc`).
    pub failed_active_hc: AtomicBool,
}

impl HostHealth {
    pub fn is_ejected(&self) -> bool {
        self.ejected_at.load(Relaxed) != 0
    }

    /// Whether the balancer may use the host (shared part of the verdict).
    pub fn is_healthy(&self) -> bool {
        !self.is_ejected() && !self.failed_active_hc.load(Relaxed)
    }

    /// Envoy's `/clusters` `health_flags` text.
    pub fn flags(&self) -> String {
        let mut f = Vec::new();
        if self.failed_active_hc.load(Relaxed) {
            f.push("/failed_active_hc");
        }
        if self.is_ejected() {
            f.push("/failed_outlier_check");
        }
        if f.is_empty() {
            "healthy".to_string()
        } else {
            f.concat()
        }
    }
}

struct OutlierStats {
    ejections_active: Gauge,
    ejections_enforced_total: Counter,
    ejections_overflow: Counter,
    enforced: [Counter; 5],
    detected: [Counter; 5],
}

const REASONS: [Reason; 5] = [
    Reason::Consecutive5xx,
    Reason::ConsecutiveGatewayFailure,
    Reason::ConsecutiveLocalOriginFailure,
    Reason::SuccessRate,
    Reason::FailurePercentage,
];

impl OutlierStats {
    fn new(store: &StatsStore, cluster: &str) -> OutlierStats {
        let scope = Scope::Cluster(cluster.to_string());
        let slot = store.control_slot();
        let c = |leaf: String| store.counter(&scope, &format!("outlier_detection.{leaf}"), slot);
        OutlierStats {
            ejections_active: store.gauge(&scope, "outlier_detection.ejections_active", slot),
            ejections_enforced_total: c("ejections_enforced_total".into()),
            ejections_overflow: c("ejections_overflow".into()),
            enforced: REASONS.map(|r| c(format!("ejections_enforced_{}", r.suffix()))),
            detected: REASONS.map(|r| c(format!("ejections_detected_{}", r.suffix()))),
        }
    }
}

/// One cluster's outlier detector and host-health view, shared by all shards.
pub struct ClusterHealth {
    config: Option<OutlierDetection>,
    hosts: Mutex<HashMap<SocketAddr, Arc<HostHealth>>>,
    host_count: AtomicU32,
    ejected: AtomicU32,
    /// Bumped on every ejection / un-ejection / health-check flip.
    generation: AtomicU64,
    next_interval: AtomicU64,
    stats: Option<OutlierStats>,
    /// Whether any request was routed to the cluster (`no_traffic_interval`).
    traffic: AtomicBool,
}

impl ClusterHealth {
    pub fn new(config: Option<OutlierDetection>, store: &StatsStore, cluster: &str) -> ClusterHealth {
        let stats = config.as_ref().map(|_| OutlierStats::new(store, cluster));
        ClusterHealth {
            config,
            hosts: Mutex::new(HashMap::new()),
            host_count: AtomicU32::new(0),
            ejected: AtomicU32::new(0),
            generation: AtomicU64::new(0),
            next_interval: AtomicU64::new(0),
            stats,
            traffic: AtomicBool::new(false),
        }
    }

    /// The shared instance for this cluster config (see `ClusterResources::shared`).
    pub fn shared(cluster: &Arc<Cluster>, store: &StatsStore) -> Arc<ClusterHealth> {
        type Registry = Mutex<Option<HashMap<usize, Weak<ClusterHealth>>>>;
        static REGISTRY: Registry = Mutex::new(None);
        let key = Arc::as_ptr(cluster) as usize;
        let mut reg = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
        let map = reg.get_or_insert_with(HashMap::new);
        map.retain(|_, w| w.strong_count() > 0);
        if let Some(h) = map.get(&key).and_then(Weak::upgrade) {
            return h;
        }
        let h = Arc::new(ClusterHealth::new(cluster.outlier_detection.clone(), store, &cluster.name));
        map.insert(key, Arc::downgrade(&h));
        by_name(&cluster.name, &h);
        super::health_check::start(&h, &cluster.health_checks, cluster.tls.as_ref(), store, &cluster.name);
        h
    }

    /// Every registered host (the health checker's list).
    pub fn host_list(&self) -> Vec<(SocketAddr, Arc<HostHealth>)> {
        let hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        hosts.iter().map(|(a, h)| (*a, h.clone())).collect()
    }

    /// Records that the cluster serves traffic (a load and, the first time, a store).
    pub fn note_traffic(&self) {
        if !self.traffic.load(Relaxed) {
            self.traffic.store(true, Relaxed);
        }
    }

    pub fn saw_traffic(&self) -> bool {
        self.traffic.load(Relaxed)
    }

    /// The host's shared health (registered on first sight; snapshot builds only).
    pub fn host(&self, addr: SocketAddr) -> Arc<HostHealth> {
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        let h = hosts.entry(addr).or_default().clone();
        self.host_count.store(hosts.len() as u32, Relaxed);
        h
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Relaxed)
    }

    pub fn bump(&self) {
        self.generation.fetch_add(1, Relaxed);
    }

    /// Records one attempt's outcome; may eject the host (consecutive rules).
    /// `random` feeds the enforcement roll.
    pub fn report(&self, host: &HostHealth, outcome: Outcome, now: Instant, random: u64) {
        let Some(cfg) = &self.config else { return };
        let split = cfg.split_external_local_origin_errors;
        let (is_5xx, is_gateway, local) = match outcome {
            Outcome::Response(s) => ((500..600).contains(&s), matches!(s, 502..=504), false),
            Outcome::LocalFailure => (!split, !split, true),
        };
        if local {
            host.local_failure.fetch_add(1, Relaxed);
            if split {
                let n = host.consecutive_local.fetch_add(1, Relaxed) + 1;
                if n == cfg.consecutive_local_origin_failure {
                    host.consecutive_local.store(0, Relaxed);
                    let enforce = cfg.enforcing_consecutive_local_origin_failure;
                    self.eject(host, Reason::ConsecutiveLocalOriginFailure, enforce, now, random);
                }
                return;
            }
        } else {
            host.consecutive_local.store(0, Relaxed);
            host.local_success.fetch_add(1, Relaxed);
            if is_5xx { &host.failure } else { &host.success }.fetch_add(1, Relaxed);
        }
        if !is_5xx {
            host.consecutive_5xx.store(0, Relaxed);
            host.consecutive_gateway.store(0, Relaxed);
            return;
        }
        let n5 = host.consecutive_5xx.fetch_add(1, Relaxed) + 1;
        let ng = if is_gateway {
            host.consecutive_gateway.fetch_add(1, Relaxed) + 1
        } else {
            host.consecutive_gateway.store(0, Relaxed);
            0
        };
        if n5 == cfg.consecutive_5xx {
            host.consecutive_5xx.store(0, Relaxed);
            self.eject(host, Reason::Consecutive5xx, cfg.enforcing_consecutive_5xx, now, random);
        } else if is_gateway && ng == cfg.consecutive_gateway_failure {
            host.consecutive_gateway.store(0, Relaxed);
            let enforce = cfg.enforcing_consecutive_gateway_failure;
            self.eject(host, Reason::ConsecutiveGatewayFailure, enforce, now, random);
        }
    }

    /// Ejects `host` for `reason` if enforcement and `max_ejection_percent`
    /// allow.  Returns whether it was ejected now.
    fn eject(&self, host: &HostHealth, reason: Reason, enforcing: u32, now: Instant, random: u64) -> bool {
        let (Some(cfg), Some(stats)) = (&self.config, &self.stats) else { return false };
        let i = REASONS.iter().position(|r| *r == reason).unwrap_or(0);
        stats.detected[i].inc();
        if random % 100 >= u64::from(enforcing) || host.is_ejected() {
            return false;
        }
        let total = u64::from(self.host_count.load(Relaxed).max(1));
        let active = u64::from(self.ejected.load(Relaxed));
        let allowed =
            100 * active < u64::from(cfg.max_ejection_percent) * total || (cfg.always_eject_one_host && active == 0);
        if !allowed {
            stats.ejections_overflow.inc();
            return false;
        }
        if host.ejected_at.compare_exchange(0, ms(now), Relaxed, Relaxed).is_err() {
            return false;
        }
        let base = cfg.base_ejection_time.as_millis() as u64;
        let max = cfg.max_ejection_time.as_millis() as u64;
        let b = u64::from(host.backoff.load(Relaxed));
        if b * base < max + base {
            host.backoff.fetch_add(1, Relaxed);
        }
        self.ejected.fetch_add(1, Relaxed);
        stats.ejections_active.inc();
        stats.ejections_enforced_total.inc();
        stats.enforced[i].inc();
        self.bump();
        true
    }

    /// How long an ejection with multiplier `backoff` lasts.
    pub fn ejection_time(cfg: &OutlierDetection, backoff: u32) -> Duration {
        let base = cfg.base_ejection_time;
        (base * backoff.max(1)).min(base.max(cfg.max_ejection_time))
    }

    /// Runs the interval work if its deadline passed and this caller wins
    /// the claim.  Cheap when not due: one atomic load.
    pub fn tick(&self, now: Instant, random: u64) {
        let Some(cfg) = &self.config else { return };
        let t = ms(now);
        let due = self.next_interval.load(Relaxed);
        if due == 0 {
            // First sight: the first interval ends one interval from now.
            let _ = self.next_interval.compare_exchange(0, t + cfg.interval.as_millis() as u64, Relaxed, Relaxed);
            return;
        }
        if t < due {
            return;
        }
        let next = t + cfg.interval.as_millis() as u64;
        if self.next_interval.compare_exchange(due, next, Relaxed, Relaxed).is_err() {
            return;
        }
        self.run_interval(cfg, now, random);
    }

    fn run_interval(&self, cfg: &OutlierDetection, now: Instant, mut random: u64) {
        let Some(hosts) = self.hosts.try_lock().ok().map(|h| h.values().cloned().collect::<Vec<_>>()) else {
            return;
        };
        let t = ms(now);
        for h in &hosts {
            let at = h.ejected_at.load(Relaxed);
            if at != 0 {
                let lasted = Duration::from_millis(t.saturating_sub(at));
                if lasted >= Self::ejection_time(cfg, h.backoff.load(Relaxed))
                    && h.ejected_at.compare_exchange(at, 0, Relaxed, Relaxed).is_ok()
                {
                    self.ejected.fetch_sub(1, Relaxed);
                    if let Some(s) = &self.stats {
                        s.ejections_active.dec();
                    }
                    self.bump();
                }
            } else {
                let b = h.backoff.load(Relaxed);
                if b > 0 {
                    h.backoff.store(b - 1, Relaxed);
                }
            }
        }
        // Success rate and failure percentage over this interval's counts.
        let counts: Vec<(u64, u64)> =
            hosts.iter().map(|h| (h.success.swap(0, Relaxed), h.failure.swap(0, Relaxed))).collect();
        for h in &hosts {
            h.local_success.store(0, Relaxed);
            h.local_failure.store(0, Relaxed);
        }
        let mut next_random = || {
            random = random.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            random >> 33
        };
        for (i, reason) in evaluate_interval(cfg, &counts) {
            let enforcing = match reason {
                Reason::SuccessRate => cfg.enforcing_success_rate,
                _ => cfg.enforcing_failure_percentage,
            };
            self.eject(&hosts[i], reason, enforcing, now, next_random());
        }
    }

    pub fn ejected_count(&self) -> u32 {
        self.ejected.load(Relaxed)
    }
}

/// The interval rules over (successes, failures) per host: which hosts fall
/// below the success-rate threshold (`mean − stdev_factor/1000 × stdev`
/// over hosts with at least `success_rate_request_volume` requests, when at
/// least `success_rate_minimum_hosts` qualify), and which reach
/// `failure_percentage_threshold` (likewise with its own volume and host
/// minimum).  Pure arithmetic.
pub fn evaluate_interval(cfg: &OutlierDetection, counts: &[(u64, u64)]) -> Vec<(usize, Reason)> {
    let mut out = Vec::new();
    let rate = |(s, f): (u64, u64)| 100.0 * s as f64 / (s + f) as f64;
    let sr: Vec<(usize, f64)> = counts
        .iter()
        .enumerate()
        .filter(|(_, (s, f))| s + f >= u64::from(cfg.success_rate_request_volume) && s + f > 0)
        .map(|(i, c)| (i, rate(*c)))
        .collect();
    if !sr.is_empty() && sr.len() >= cfg.success_rate_minimum_hosts as usize {
        let n = sr.len() as f64;
        let mean = sr.iter().map(|(_, r)| r).sum::<f64>() / n;
        let var = sr.iter().map(|(_, r)| (r - mean).powi(2)).sum::<f64>() / n;
        let threshold = mean - (f64::from(cfg.success_rate_stdev_factor) / 1000.0) * var.sqrt();
        for (i, r) in &sr {
            if *r < threshold {
                out.push((*i, Reason::SuccessRate));
            }
        }
    }
    let fp: Vec<(usize, f64)> = counts
        .iter()
        .enumerate()
        .filter(|(_, (s, f))| s + f >= u64::from(cfg.failure_percentage_request_volume) && s + f > 0)
        .map(|(i, c)| (i, 100.0 - rate(*c)))
        .collect();
    if !fp.is_empty() && fp.len() >= cfg.failure_percentage_minimum_hosts as usize {
        for (i, failed) in &fp {
            if *failed >= f64::from(cfg.failure_percentage_threshold) && !out.iter().any(|(j, _)| j == i) {
                out.push((*i, Reason::FailurePercentage));
            }
        }
    }
    out
}

/// Latest health view per cluster name, for `/clusters`.
fn names() -> &'static Mutex<HashMap<String, Weak<ClusterHealth>>> {
    static NAMES: OnceLock<Mutex<HashMap<String, Weak<ClusterHealth>>>> = OnceLock::new();
    NAMES.get_or_init(|| Mutex::new(HashMap::new()))
}

fn by_name(name: &str, h: &Arc<ClusterHealth>) {
    names().lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_string(), Arc::downgrade(h));
}

/// `health_flags` of `addr` in `cluster` for the admin page ("healthy"
/// when nothing is known).
pub fn health_flags(cluster: &str, addr: &str) -> String {
    let Some(h) = names().lock().unwrap_or_else(|e| e.into_inner()).get(cluster).and_then(Weak::upgrade) else {
        return "healthy".to_string();
    };
    let Ok(addr) = addr.parse::<SocketAddr>() else { return "healthy".to_string() };
    let hosts = h.hosts.lock().unwrap_or_else(|e| e.into_inner());
    hosts.get(&addr).map_or_else(|| "healthy".to_string(), |hh| hh.flags())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> OutlierDetection {
        OutlierDetection {
            consecutive_5xx: 3,
            interval: Duration::from_secs(1),
            base_ejection_time: Duration::from_secs(10),
            max_ejection_time: Duration::from_secs(25),
            max_ejection_percent: 50,
            ..Default::default()
        }
    }

    fn detector(c: OutlierDetection, hosts: u16) -> (ClusterHealth, Vec<Arc<HostHealth>>, Arc<StatsStore>) {
        let store = StatsStore::new(1);
        let d = ClusterHealth::new(Some(c), &store, "c");
        let hs = (0..hosts).map(|i| d.host(SocketAddr::from(([127, 0, 0, 1], 1000 + i)))).collect();
        (d, hs, store)
    }

    #[test]
    fn consecutive_5xx_ejects_and_a_success_resets_the_count() {
        let (d, h, store) = detector(cfg(), 4);
        let t = Instant::now();
        d.report(&h[0], Outcome::Response(500), t, 0);
        d.report(&h[0], Outcome::Response(503), t, 0);
        d.report(&h[0], Outcome::Response(200), t, 0);
        d.report(&h[0], Outcome::Response(500), t, 0);
        d.report(&h[0], Outcome::Response(500), t, 0);
        assert!(!h[0].is_ejected());
        let g = d.generation();
        d.report(&h[0], Outcome::Response(502), t, 0);
        assert!(h[0].is_ejected());
        assert_eq!(h[0].flags(), "/failed_outlier_check");
        assert!(d.generation() > g);
        assert_eq!(store.counter_value("cluster.c.outlier_detection.ejections_enforced_consecutive_5xx"), Some(1));
        assert_eq!(store.gauge_value("cluster.c.outlier_detection.ejections_active"), Some(1));
    }

    #[test]
    fn local_failures_count_as_5xx_unless_split() {
        let (d, h, _s) = detector(cfg(), 4);
        let t = Instant::now();
        for _ in 0..3 {
            d.report(&h[0], Outcome::LocalFailure, t, 0);
        }
        assert!(h[0].is_ejected());
        let split =
            OutlierDetection { split_external_local_origin_errors: true, consecutive_local_origin_failure: 2, ..cfg() };
        let (d, h, store) = detector(split, 4);
        d.report(&h[0], Outcome::LocalFailure, t, 0);
        d.report(&h[0], Outcome::Response(500), t, 0);
        d.report(&h[0], Outcome::Response(500), t, 0);
        assert!(!h[0].is_ejected(), "a response resets the local-origin count; 2 × 5xx < 3");
        d.report(&h[0], Outcome::LocalFailure, t, 0);
        d.report(&h[0], Outcome::LocalFailure, t, 0);
        assert!(h[0].is_ejected());
        assert_eq!(
            store.counter_value("cluster.c.outlier_detection.ejections_enforced_consecutive_local_origin_failure"),
            Some(1)
        );
    }

    #[test]
    fn gateway_failures_need_enforcement() {
        // enforcing_consecutive_gateway_failure defaults to 0: detected only.
        let c = OutlierDetection { consecutive_5xx: 100, consecutive_gateway_failure: 2, ..cfg() };
        let (d, h, store) = detector(c.clone(), 4);
        let t = Instant::now();
        d.report(&h[0], Outcome::Response(503), t, 0);
        d.report(&h[0], Outcome::Response(503), t, 0);
        assert!(!h[0].is_ejected());
        assert_eq!(
            store.counter_value("cluster.c.outlier_detection.ejections_detected_consecutive_gateway_failure"),
            Some(1)
        );
        let (d, h, _s) = detector(OutlierDetection { enforcing_consecutive_gateway_failure: 100, ..c }, 4);
        d.report(&h[0], Outcome::Response(504), t, 0);
        d.report(&h[0], Outcome::Response(502), t, 0);
        assert!(h[0].is_ejected());
    }

    #[test]
    fn max_ejection_percent_caps_ejections() {
        let (d, h, store) = detector(cfg(), 4);
        let t = Instant::now();
        for host in &h {
            for _ in 0..3 {
                d.report(host, Outcome::Response(500), t, 0);
            }
        }
        // 50% of 4 hosts.
        assert_eq!(h.iter().filter(|h| h.is_ejected()).count(), 2);
        assert_eq!(store.counter_value("cluster.c.outlier_detection.ejections_overflow"), Some(2));
        // 10% of 2 hosts is less than one host: none, unless always_eject_one_host.
        let (d, h, _s) = detector(OutlierDetection { max_ejection_percent: 10, ..cfg() }, 2);
        for _ in 0..3 {
            d.report(&h[0], Outcome::Response(500), t, 0);
        }
        assert!(h[0].is_ejected(), "0 ejected < 10% of 2: the first may go");
        for _ in 0..3 {
            d.report(&h[1], Outcome::Response(500), t, 0);
        }
        assert!(!h[1].is_ejected());
    }

    #[test]
    fn ejection_time_grows_with_ejections_and_is_capped() {
        let c = cfg();
        assert_eq!(ClusterHealth::ejection_time(&c, 1), Duration::from_secs(10));
        assert_eq!(ClusterHealth::ejection_time(&c, 2), Duration::from_secs(20));
        assert_eq!(ClusterHealth::ejection_time(&c, 3), Duration::from_secs(25));
        assert_eq!(ClusterHealth::ejection_time(&c, 9), Duration::from_secs(25));
    }

    #[test]
    fn hosts_come_back_after_their_ejection_time_on_the_interval() {
        let (d, h, store) = detector(cfg(), 4);
        let t0 = Instant::now();
        d.tick(t0, 0); // arms the first interval
        for _ in 0..3 {
            d.report(&h[0], Outcome::Response(500), t0, 0);
        }
        assert!(h[0].is_ejected());
        // Intervals before the 10 s ejection time keep it out.
        for s in 1..10 {
            d.tick(t0 + Duration::from_secs(s) + Duration::from_millis(1), 0);
            assert!(h[0].is_ejected(), "at {s} s");
        }
        d.tick(t0 + Duration::from_secs(10) + Duration::from_millis(5), 0);
        assert!(!h[0].is_ejected());
        assert_eq!(store.gauge_value("cluster.c.outlier_detection.ejections_active"), Some(0));
        // Ejected again right away: twice as long (backoff 2).
        let t1 = t0 + Duration::from_secs(11);
        for _ in 0..3 {
            d.report(&h[0], Outcome::Response(500), t1, 0);
        }
        d.tick(t1 + Duration::from_secs(15), 0);
        assert!(h[0].is_ejected(), "15 s < 20 s");
        d.tick(t1 + Duration::from_secs(21), 0);
        assert!(!h[0].is_ejected());
    }

    #[test]
    fn success_rate_ejects_the_outlier() {
        let c = OutlierDetection { success_rate_minimum_hosts: 5, success_rate_request_volume: 100, ..cfg() };
        // Four hosts at 100%, one at 50%: mean 90, stdev 20, threshold 90 − 1.9 × 20 = 52.
        let counts = [(100, 0), (100, 0), (100, 0), (100, 0), (50, 50)];
        assert_eq!(evaluate_interval(&c, &counts), vec![(4, Reason::SuccessRate)]);
        // Too few hosts with enough volume: nothing.
        let counts = [(100, 0), (100, 0), (100, 0), (99, 0), (50, 50)];
        assert_eq!(evaluate_interval(&c, &counts), vec![]);
    }

    #[test]
    fn failure_percentage_ejects_above_the_threshold() {
        let c = OutlierDetection {
            success_rate_minimum_hosts: 100,
            failure_percentage_minimum_hosts: 2,
            failure_percentage_request_volume: 10,
            failure_percentage_threshold: 50,
            ..cfg()
        };
        let counts = [(10, 0), (4, 6), (5, 5), (1, 3)];
        assert_eq!(
            evaluate_interval(&c, &counts),
            vec![(1, Reason::FailurePercentage), (2, Reason::FailurePercentage)]
        );
    }

    #[test]
    fn interval_claim_runs_once() {
        let (d, h, _s) = detector(
            OutlierDetection {
                enforcing_failure_percentage: 100,
                failure_percentage_minimum_hosts: 1,
                failure_percentage_request_volume: 1,
                ..cfg()
            },
            2,
        );
        let t0 = Instant::now();
        d.tick(t0, 0);
        d.report(&h[0], Outcome::Response(500), t0, 0);
        d.report(&h[1], Outcome::Response(200), t0, 0);
        let t1 = t0 + Duration::from_millis(1001);
        d.tick(t1, 0);
        assert!(h[0].is_ejected(), "100% failures ≥ 85%");
        // A second caller in the same interval does nothing (counts were reset).
        d.tick(t1, 0);
        assert_eq!(d.ejected_count(), 1);
    }
}
