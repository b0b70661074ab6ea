//! Load balancing end to end, through a real `meshgate` in front of real
//! `mg-upstream` processes: priority fail-over when the primary refuses
//! connections (and fail-back when it returns), aggregate clusters moving
//! to their next cluster, ring-hash stickiness of a header key (across
//! shards, restarts, and equal to Envoy's ring computed independently
//! here), cookie affinity with a generated `set-cookie`, and a weighted
//! round-robin split.
//!
//! Health checks and outlier detection are another issue: here a host that
//! refuses a connection is taken out of rotation on that shard for a
//! back-off of 0.5–1 s (doubling up to 30 s) and retried after it.  As in
//! Envoy without a `retry_policy`, the request whose connect failed is
//! answered 503; the next ones go to the backup.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use testkit::{
    backend_route_config as config, closed_addr, closed_port, static_cluster as cluster, Client, Gateway, Response,
    Upstream,
};

fn upstream_name(r: &Response) -> Option<&str> {
    r.header("x-upstream-name")
}

/// Sends `GET /` on `c` and returns (status, upstream name).
fn get(c: &mut Client) -> (u16, String) {
    let r = c.get("/");
    (r.status, upstream_name(&r).unwrap_or("").to_string())
}

/// Drives requests on one keep-alive connection (one shard) while the
/// primary refuses connections: the first request on a shard that has not
/// met the dead host yet gets Envoy's 503, every later one goes to
/// `backup`.  A 503 is tolerated only once per back-off window (the host is
/// retried after 0.5–1 s, then after 1–2 s, ...), so a slow machine cannot
/// turn this into a flaky count.
fn assert_fails_over(c: &mut Client, backup: &str, shard_is_fresh: bool) {
    let started = Instant::now();
    let mut refused = 0;
    let mut served = 0;
    while served < 20 {
        let (status, name) = get(c);
        match status {
            503 => refused += 1,
            200 => {
                assert_eq!(name, backup, "a 200 must come from the backup while the primary is down");
                served += 1;
            }
            other => panic!("unexpected status {other}"),
        }
        assert!(started.elapsed() < Duration::from_secs(20), "no fail-over within 20 s ({refused} refused)");
    }
    let windows = 1 + (started.elapsed().as_millis() / 500) as usize;
    if shard_is_fresh {
        assert!(refused >= 1, "the first request should have found the primary dead");
    }
    assert!(refused <= windows, "{refused} requests refused in {:?}: more than one per back-off", started.elapsed());
}

/// After the primary comes back, traffic returns to it once its back-off
/// expires (bounded: the back-off here is at most a few seconds), and then
/// stays there.
fn assert_fails_back(c: &mut Client, primary: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, name) = get(c);
        if status == 200 && name == primary {
            break;
        }
        assert!(Instant::now() < deadline, "traffic did not return to {primary} within 20 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    for _ in 0..20 {
        assert_eq!(get(c), (200, primary.to_string()));
    }
}

#[test]
fn priority_fallback_moves_to_backup_and_back() {
    let primary = closed_port();
    let primary_addr = primary.addr;
    let backup = Upstream::start("backup");
    let gw = Gateway::start(
        &config("", &cluster("backend", "", &[(1, 0, 1), (2, 1, 1)])),
        &[primary_addr, backup.addr],
        &[],
    );
    let mut c = Client::connect(gw.listener_addr);
    assert_fails_over(&mut c, "backup", true);
    assert!(gw.stat("cluster.backend.upstream_cx_connect_fail") >= 1);

    // A second connection may land on the other shard, which learns on its
    // own first failure: at most one 503 there too.
    let mut c2 = Client::connect(gw.listener_addr);
    assert_fails_over(&mut c2, "backup", false);

    drop(primary);
    let _primary = Upstream::start_on(primary_addr, "primary");
    assert_fails_back(&mut c, "primary");
    assert_fails_back(&mut c2, "primary");
}

#[test]
fn priority_spill_over_follows_the_overprovisioning_factor() {
    // Two primaries, one dead: P0 health = 140 × 1/2 = 70, so 30% of the
    // traffic spills to P1 once the dead one is detected (Envoy's formula).
    let dead = closed_addr();
    let live = Upstream::start("p0");
    let backup = Upstream::start("p1");
    let gw = Gateway::start(
        &config("", &cluster("backend", "lb_policy: RANDOM", &[(1, 0, 1), (2, 0, 1), (3, 1, 1)])),
        &[dead, live.addr, backup.addr],
        &["--shards", "1"],
    );
    let mut c = Client::connect(gw.listener_addr);
    // Detect the dead host (RANDOM picks it within a few requests).
    let started = Instant::now();
    while gw.stat("cluster.backend.upstream_cx_connect_fail") == 0 {
        let _ = get(&mut c);
        assert!(started.elapsed() < Duration::from_secs(10));
    }
    let mut counts: HashMap<String, usize> = HashMap::new();
    let started = Instant::now();
    let n = 300;
    for _ in 0..n {
        let (status, name) = get(&mut c);
        *counts.entry(if status == 200 { name } else { status.to_string() }).or_default() += 1;
    }
    // Requests after the back-off expired may hit the dead host again.
    let windows = 1 + (started.elapsed().as_millis() / 500) as usize;
    let refused = counts.get("503").copied().unwrap_or(0);
    assert!(refused <= windows, "{counts:?}");
    let p1 = counts.get("p1").copied().unwrap_or(0) as f64 / (n - refused) as f64;
    // 30% ± sampling noise (σ ≈ 2.7% at 300 picks).
    assert!((0.18..=0.42).contains(&p1), "P1 share {p1:.3}: {counts:?}");
}

const AGGREGATE: &str = r#"- name: backend
  connect_timeout: 1s
  lb_policy: CLUSTER_PROVIDED
  cluster_type:
    name: envoy.clusters.aggregate
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.clusters.aggregate.v3.ClusterConfig
      clusters: [in_cloud, out_of_cloud]
"#;

#[test]
fn aggregate_cluster_moves_to_its_next_cluster_and_back() {
    let primary = closed_port();
    let primary_addr = primary.addr;
    let backup = Upstream::start("out-of-cloud");
    let clusters = format!(
        "{AGGREGATE}{}{}",
        cluster("in_cloud", "", &[(1, 0, 1)]),
        cluster("out_of_cloud", "lb_policy: LEAST_REQUEST", &[(2, 0, 1)])
    );
    let gw = Gateway::start(&config("", &clusters), &[primary_addr, backup.addr], &[]);
    let mut c = Client::connect(gw.listener_addr);
    assert_fails_over(&mut c, "out-of-cloud", true);
    // Connections are charged to the member that owns the host.
    assert!(gw.stat("cluster.in_cloud.upstream_cx_connect_fail") >= 1);
    assert!(gw.stat("cluster.out_of_cloud.upstream_rq_total") >= 20);

    drop(primary);
    let _primary = Upstream::start_on(primary_addr, "in-cloud");
    assert_fails_back(&mut c, "in-cloud");
    assert!(gw.stat("cluster.in_cloud.upstream_rq_total") >= 20);
}

#[test]
fn aggregate_with_every_member_down_answers_503() {
    // Every member dead: total panic routes to the dead hosts, which refuse:
    // 503 every time, and the gateway keeps answering.
    let clusters =
        format!("{AGGREGATE}{}{}", cluster("in_cloud", "", &[(1, 0, 1)]), cluster("out_of_cloud", "", &[(2, 0, 1)]));
    let gw = Gateway::start(&config("", &clusters), &[closed_addr(), closed_addr()], &[]);
    let mut c = Client::connect(gw.listener_addr);
    for _ in 0..5 {
        let r = c.get("/");
        assert_eq!(r.status, 503, "{}", r.body_str());
        assert!(r.body_str().contains("upstream connect error"), "{}", r.body_str());
    }
}

// ---------------------------------------------------------------- hashing

/// Envoy's ring (`RingHashLoadBalancer::Ring`), recomputed here from its
/// definition rather than from meshgate's code: equal weights, default
/// sizes, xxHash64 of `ip:port_i`, first point ≥ the key's hash.
fn envoy_ring_pick(hosts: &[SocketAddr], key_hash: u64) -> SocketAddr {
    let n = hosts.len() as f64;
    let min_weight = 1.0 / n;
    let scale = ((min_weight * 1024.0).ceil() / min_weight).min(8.0 * 1024.0 * 1024.0);
    let mut points: Vec<(u64, usize)> = Vec::new();
    let (mut current, mut target) = (0.0f64, 0.0f64);
    for (h, addr) in hosts.iter().enumerate() {
        target += scale * min_weight;
        let mut i = 0u64;
        while current < target {
            points.push((xxhash_rust::xxh64::xxh64(format!("{addr}_{i}").as_bytes(), 0), h));
            i += 1;
            current += 1.0;
        }
    }
    points.sort();
    let i = points.partition_point(|p| p.0 < key_hash);
    hosts[points[if i == points.len() { 0 } else { i }].1]
}

fn ring_config() -> String {
    config(
        "hash_policy:\n- header: { header_name: x-user }",
        &cluster("backend", "lb_policy: RING_HASH", &[(1, 0, 1), (2, 0, 1), (3, 0, 1)]),
    )
}

/// Which upstream serves each user, asking each on several fresh
/// connections (so both shards answer) and checking they agree.
fn user_placement(gw: &Gateway, users: &[String]) -> BTreeMap<String, String> {
    let mut placement = BTreeMap::new();
    for user in users {
        let mut seen = Vec::new();
        for _ in 0..4 {
            let mut c = Client::connect(gw.listener_addr);
            let r = c.request("GET", "/", &[("x-user", user)], b"");
            assert_eq!(r.status, 200);
            seen.push(upstream_name(&r).unwrap().to_string());
        }
        assert!(seen.iter().all(|s| *s == seen[0]), "{user} moved between upstreams: {seen:?}");
        placement.insert(user.clone(), seen[0].clone());
    }
    placement
}

#[test]
fn ring_hash_keeps_a_header_key_on_one_endpoint() {
    let ups = [Upstream::start("u1"), Upstream::start("u2"), Upstream::start("u3")];
    let addrs: Vec<SocketAddr> = ups.iter().map(|u| u.addr).collect();
    let names: HashMap<SocketAddr, &str> = ups.iter().map(|u| (u.addr, u.name.as_str())).collect();
    let users: Vec<String> = (0..24).map(|i| format!("user-{i}")).collect();

    let gw = Gateway::start(&ring_config(), &addrs, &[]);
    let first = user_placement(&gw, &users);
    // The same endpoint Envoy's ring would pick for that header value.
    for (user, name) in &first {
        let want = envoy_ring_pick(&addrs, xxhash_rust::xxh64::xxh64(user.as_bytes(), 0));
        assert_eq!(name, names[&want], "{user}");
    }
    let distinct: std::collections::BTreeSet<&String> = first.values().collect();
    assert!(distinct.len() >= 2, "24 keys all on one endpoint: {first:?}");
    // A request without the header still gets served (a random pick).
    assert_eq!(Client::connect(gw.listener_addr).get("/").status, 200);
    drop(gw);

    // A restarted gateway (fresh process, fresh random state) agrees.
    let gw = Gateway::start(&ring_config(), &addrs, &["--shards", "1"]);
    assert_eq!(user_placement(&gw, &users), first);
}

#[test]
fn cookie_affinity_sets_the_cookie_as_envoy_does() {
    let ups = [Upstream::start("u1"), Upstream::start("u2"), Upstream::start("u3")];
    let addrs: Vec<SocketAddr> = ups.iter().map(|u| u.addr).collect();
    let gw = Gateway::start(
        &config(
            "hash_policy:\n- cookie: { name: route, ttl: 60s, path: / }",
            &cluster("backend", "lb_policy: MAGLEV", &[(1, 0, 1), (2, 0, 1), (3, 0, 1)]),
        ),
        &addrs,
        &[],
    );
    for _ in 0..3 {
        let mut c = Client::connect(gw.listener_addr);
        let r = c.get("/");
        assert_eq!(r.status, 200);
        let set = r.header("set-cookie").expect("a generated cookie").to_string();
        // route="<16 hex digits>"; Max-Age=60; Path=/; HttpOnly
        let value = set
            .strip_prefix("route=\"")
            .and_then(|rest| rest.split_once('"'))
            .map(|(v, attrs)| {
                assert_eq!(attrs, "; Max-Age=60; Path=/; HttpOnly", "{set}");
                v.to_string()
            })
            .unwrap_or_else(|| panic!("unexpected set-cookie {set:?}"));
        assert!(value.len() == 16 && value.bytes().all(|b| b.is_ascii_hexdigit()), "{set}");
        let first = upstream_name(&r).unwrap().to_string();
        // Presenting the cookie pins the client, from any connection.
        for _ in 0..4 {
            let mut c = Client::connect(gw.listener_addr);
            let r = c.request("GET", "/", &[("cookie", &format!("route={value}"))], b"");
            assert_eq!(upstream_name(&r), Some(first.as_str()));
            assert!(!r.has_header("set-cookie"), "a cookie that was sent is not set again");
        }
    }
}

#[test]
fn weighted_round_robin_split() {
    let heavy = Upstream::start("heavy");
    let light = Upstream::start("light");
    let gw = Gateway::start(
        &config("", &cluster("backend", "", &[(1, 0, 3), (2, 0, 1)])),
        &[heavy.addr, light.addr],
        &["--shards", "1"],
    );
    // One shard, one schedule: EDF serves 3:1 over every cycle, give or
    // take the cycle cut at either end.
    let mut c = Client::connect(gw.listener_addr);
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..400 {
        let (status, name) = get(&mut c);
        assert_eq!(status, 200);
        *counts.entry(name).or_default() += 1;
    }
    assert!(counts["heavy"].abs_diff(300) <= 2 && counts["light"].abs_diff(100) <= 2, "{counts:?}");
}
