//! `ClusterRuntime` without sockets: passive health with explicit times
//! (fail-over to the next priority, recovery after the back-off, doubling,
//! clearing on success), aggregate clusters over member runtimes, and host
//! list changes that keep a host's state.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use control::model::{Cluster, DiscoveryType, Endpoint, EndpointAddress, LbPolicy};

use super::*;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn cluster(name: &str, policy: LbPolicy, endpoints: &[(u16, u32)]) -> Arc<Cluster> {
    Arc::new(Cluster {
        name: name.into(),
        discovery: DiscoveryType::Static,
        connect_timeout: Duration::from_secs(1),
        lb_policy: policy,
        dns_refresh_rate: Duration::from_secs(5),
        endpoints: endpoints
            .iter()
            .map(|(port, priority)| Endpoint {
                address: EndpointAddress::Socket(addr(*port)),
                weight: 1,
                priority: *priority,
            })
            .collect(),
        upstream_idle_timeout: Duration::from_secs(60),
        max_requests_per_connection: None,
        max_idle_per_endpoint: 8,
        per_connection_buffer_limit_bytes: 1 << 20,
        enable_trailers: false,
        upstream_protocol: control::model::UpstreamProtocol::Http1,
        upstream_http2: control::model::Http2Options::upstream_default(),
        overprovisioning_factor: 140,
        weighted_priority_health: false,
        healthy_panic_threshold: 50,
        aggregate_clusters: Vec::new(),
        circuit_breakers: Default::default(),
        outlier_detection: None,
        health_checks: Vec::new(),
        tls: None,
    })
}

/// A one-endpoint STATIC cluster for other modules' tests.
pub(crate) fn cluster_for_tests(name: &str) -> Cluster {
    (*cluster(name, LbPolicy::RoundRobin, &[(1, 0)])).clone()
}

fn runtime(config: Arc<Cluster>) -> (Rc<ClusterRuntime>, Arc<StatsStore>) {
    let store = StatsStore::new(1);
    (Rc::new(ClusterRuntime::new(config, &store, 0, None)), store)
}

fn no_hash() -> Option<u64> {
    None
}

/// The port picked at `t`, `n` times in a row (all must agree).
fn picks(rt: &Rc<ClusterRuntime>, t: Instant, n: usize) -> u16 {
    let first = rt.pick_at(t, &mut no_hash).expect("a host").host.addr.port();
    for _ in 1..n {
        assert_eq!(rt.pick_at(t, &mut no_hash).unwrap().host.addr.port(), first);
    }
    first
}

fn host(rt: &ClusterRuntime, port: u16) -> Rc<Host> {
    rt.hosts().into_iter().find(|h| h.addr.port() == port).unwrap()
}

#[test]
fn failed_host_moves_traffic_to_the_backup_until_its_back_off_expires() {
    let (rt, _) = runtime(cluster("c", LbPolicy::RoundRobin, &[(1000, 0), (2000, 1)]));
    let t0 = Instant::now();
    assert_eq!(picks(&rt, t0, 10), 1000);

    let primary = host(&rt, 1000);
    rt.connect_failed(&primary, t0);
    assert!(primary.is_down());
    assert_eq!(picks(&rt, t0, 10), 2000);
    // The first back-off is 0.5–1 s: still out at 0.49 s, back at 1 s.
    assert_eq!(picks(&rt, t0 + Duration::from_millis(490), 10), 2000);
    assert_eq!(picks(&rt, t0 + Duration::from_secs(1), 10), 1000);
    assert!(!primary.is_down());

    // Failing again doubles the back-off (1–2 s)...
    let t1 = t0 + Duration::from_secs(1);
    rt.connect_failed(&primary, t1);
    assert_eq!(picks(&rt, t1 + Duration::from_millis(990), 10), 2000);
    assert_eq!(picks(&rt, t1 + Duration::from_secs(2), 10), 1000);
    // ...and a success resets it: the next failure is back to 0.5–1 s.
    rt.connect_succeeded(&primary);
    let t2 = t1 + Duration::from_secs(3);
    rt.connect_failed(&primary, t2);
    assert_eq!(picks(&rt, t2 + Duration::from_secs(1), 10), 1000);
}

#[test]
fn success_on_a_down_host_puts_it_back_at_once() {
    let (rt, _) = runtime(cluster("c", LbPolicy::RoundRobin, &[(1000, 0), (2000, 1)]));
    let t0 = Instant::now();
    let primary = host(&rt, 1000);
    rt.connect_failed(&primary, t0);
    assert_eq!(picks(&rt, t0, 3), 2000);
    rt.connect_succeeded(&primary);
    assert_eq!(picks(&rt, t0, 3), 1000);
}

#[test]
fn lone_dead_host_is_still_tried_in_panic() {
    let (rt, store) = runtime(cluster("lone", LbPolicy::RoundRobin, &[(1000, 0)]));
    let t0 = Instant::now();
    rt.connect_failed(&host(&rt, 1000), t0);
    assert_eq!(picks(&rt, t0, 3), 1000);
    assert_eq!(store.counter_value("cluster.lone.lb_healthy_panic"), Some(3));
}

#[test]
fn host_list_changes_keep_a_hosts_state() {
    let store = StatsStore::new(1);
    let config = cluster("c", LbPolicy::RoundRobin, &[(1000, 0), (2000, 1)]);
    let rt = Rc::new(ClusterRuntime::new(config, &store, 0, None));
    let t0 = Instant::now();
    rt.connect_failed(&host(&rt, 1000), t0);
    // A new snapshot with the same endpoints (or a DNS refresh) keeps the
    // primary out until its back-off expires.
    rt.set_hosts(&store, 0, None);
    assert_eq!(picks(&rt, t0, 5), 2000);
    assert_eq!(picks(&rt, t0 + Duration::from_secs(1), 5), 1000);
}

fn aggregate(members: &[&str]) -> Arc<Cluster> {
    let mut c = (*cluster("agg", LbPolicy::ClusterProvided, &[])).clone();
    c.discovery = DiscoveryType::Aggregate;
    c.aggregate_clusters = members.iter().map(|m| m.to_string()).collect();
    Arc::new(c)
}

#[test]
fn aggregate_fails_over_to_the_next_cluster_and_back() {
    let store = StatsStore::new(1);
    let mut all = ClusterMap::default();
    for c in [
        cluster("in_cloud", LbPolicy::RoundRobin, &[(1000, 0), (1001, 0)]),
        cluster("out_of_cloud", LbPolicy::Maglev { table_size: 251 }, &[(2000, 0)]),
        aggregate(&["in_cloud", "missing", "out_of_cloud"]),
    ] {
        all.insert(c.name.clone(), Rc::new(ClusterRuntime::new(c, &store, 0, None)));
    }
    for rt in all.values() {
        rt.link_members(&all);
    }
    let agg = &all["agg"];
    let in_cloud = &all["in_cloud"];
    let t0 = Instant::now();
    let p = agg.pick_at(t0, &mut no_hash).unwrap();
    assert_eq!(p.cluster.config.name, "in_cloud");

    // Both in-cloud hosts refuse: everything goes to out_of_cloud (the
    // missing member is skipped, as in Envoy).
    rt_fail(in_cloud, 1000, t0);
    rt_fail(in_cloud, 1001, t0);
    for _ in 0..20 {
        let p = agg.pick_at(t0, &mut || Some(42)).unwrap();
        assert_eq!((p.cluster.config.name.as_str(), p.host.addr.port()), ("out_of_cloud", 2000));
    }
    // One comes back: in_cloud health 70, the rest spills to out_of_cloud.
    in_cloud.connect_succeeded(&host(in_cloud, 1000));
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for _ in 0..2000 {
        let p = agg.pick_at(t0, &mut no_hash).unwrap();
        *counts.entry(if p.cluster.config.name == "in_cloud" { "in" } else { "out" }).or_default() += 1;
    }
    let share_in = counts["in"] as f64 / 2000.0;
    assert!((share_in - 0.70).abs() < 0.05, "{counts:?}");
    // After the back-off both are back and in_cloud takes everything.
    let later = t0 + Duration::from_secs(1);
    for _ in 0..20 {
        assert_eq!(agg.pick_at(later, &mut no_hash).unwrap().cluster.config.name, "in_cloud");
    }
}

fn rt_fail(rt: &ClusterRuntime, port: u16, t: Instant) {
    rt.connect_failed(&host(rt, port), t);
}

#[test]
fn hash_is_computed_only_by_hashing_balancers() {
    let (rr, _) = runtime(cluster("rr", LbPolicy::RoundRobin, &[(1000, 0)]));
    let mut asked = 0;
    rr.pick_at(Instant::now(), &mut || {
        asked += 1;
        Some(1)
    });
    assert_eq!(asked, 0);
    let (ring, _) =
        runtime(cluster("ring", LbPolicy::RingHash { minimum_ring_size: 64, maximum_ring_size: 1024 }, &[(1000, 0)]));
    ring.pick_at(Instant::now(), &mut || {
        asked += 1;
        Some(1)
    });
    assert_eq!(asked, 1);
}
