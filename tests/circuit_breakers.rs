//! Circuit breakers end to end, through a real `meshgate` (two shards
//! unless noted) in front of real `mg-upstream` processes: `max_requests`
//! admits exactly its limit across shards and answers the rest 503 with
//! `x-envoy-overloaded: true`; `max_connections` with `max_pending_requests`
//! queues up to the pending limit; `max_retries` and `retry_budget` stop a
//! retry storm against a hanging upstream; counters and `*_open` gauges show
//! in `/stats` and `/stats/prometheus`.

use std::net::SocketAddr;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use testkit::{backend_route_config, Client, Gateway, Response, Upstream};

/// Route `/` to `backend` (`route_extra` added to the route action): one
/// STATIC endpoint, `cluster_extra` added to the cluster.
fn config(cluster_extra: &str, route_extra: &str) -> String {
    let cluster_extra: String =
        cluster_extra.lines().filter(|l| !l.trim().is_empty()).map(|l| format!("  {l}\n")).collect();
    let cluster = format!(
        r#"- name: backend
  type: STATIC
  connect_timeout: 5s
{cluster_extra}  load_assignment:
    cluster_name: backend
    endpoints:
    - lb_endpoints:
      - endpoint: {{ address: {{ socket_address: {{ address: "{{{{UPSTREAM_1}}}}", port_value: {{{{UPSTREAM_1_PORT}}}} }} }} }}
"#
    );
    backend_route_config(route_extra, &cluster)
}

/// Sends `n` requests for `path` at once, each on its own connection.
fn burst(addr: SocketAddr, path: &str, n: usize) -> Vec<Response> {
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let barrier = barrier.clone();
            let path = path.to_string();
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                barrier.wait();
                c.get(&path)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn count(rs: &[Response], status: u16) -> usize {
    rs.iter().filter(|r| r.status == status).count()
}

fn fail(u: &Upstream, mode: &str) {
    assert_eq!(Client::connect(u.addr).get(&format!("/__fail/{mode}")).status, 200);
}

fn served(u: &Upstream) -> u64 {
    Client::connect(u.addr).get("/__count").body_str().trim().parse().unwrap()
}

fn shows(gw: &Gateway, leaf: &str) {
    let text = gw.stats();
    assert!(text.lines().any(|l| l.starts_with(&format!("cluster.backend.{leaf}:"))), "{leaf} missing from /stats");
    let prom = gw.admin_get("/stats/prometheus").body_str();
    let name = format!("envoy_cluster_{}{{envoy_cluster_name=\"backend\"}}", leaf.replace('.', "_"));
    assert!(prom.contains(&name), "{name} missing from /stats/prometheus");
}

#[test]
fn max_requests_is_one_budget_across_shards() {
    let up = Upstream::start("slow");
    let gw = Gateway::start(
        &config("circuit_breakers:\n  thresholds:\n  - max_requests: 4", ""),
        &[up.addr],
        &["--shards", "2"],
    );
    // The burst holds 4 requests upstream for 2 s; the rest must overflow.
    let watcher = {
        let admin = gw.admin_addr;
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1000));
            let r = Client::connect(admin).get("/stats?filter=circuit_breakers.default.rq_open");
            r.body_str()
        })
    };
    let rs = burst(gw.listener_addr, "/delay/2000", 12);
    assert_eq!(count(&rs, 200), 4, "exactly max_requests admitted, whichever shard took them");
    assert_eq!(count(&rs, 503), 8);
    for r in rs.iter().filter(|r| r.status == 503) {
        assert_eq!(r.header("x-envoy-overloaded"), Some("true"));
        assert!(r.body_str().contains("overflow"), "{}", r.body_str());
    }
    assert_eq!(gw.stat("cluster.backend.upstream_rq_pending_overflow"), 8);
    let during = watcher.join().unwrap();
    assert!(during.contains("cluster.backend.circuit_breakers.default.rq_open: 1"), "{during}");
    assert_eq!(gw.stat("cluster.backend.circuit_breakers.default.rq_open"), 0, "closed again once drained");
    shows(&gw, "upstream_rq_pending_overflow");
    shows(&gw, "circuit_breakers.default.rq_open");
    shows(&gw, "circuit_breakers.default.cx_open");
    shows(&gw, "circuit_breakers.default.rq_pending_open");
    shows(&gw, "circuit_breakers.default.rq_retry_open");
    shows(&gw, "circuit_breakers.high.rq_open");
}

#[test]
fn max_connections_queues_up_to_max_pending_requests() {
    let up = Upstream::start("slow");
    let cb = "circuit_breakers:\n  thresholds:\n  - max_connections: 2\n    max_pending_requests: 1";
    // One shard: a pending request waits for a connection of its own shard.
    let gw = Gateway::start(&config(cb, ""), &[up.addr], &["--shards", "1"]);
    let rs = burst(gw.listener_addr, "/delay/1500", 6);
    // Two get connections, one waits and is served after, three overflow.
    assert_eq!(count(&rs, 200), 3, "{:?}", rs.iter().map(|r| r.status).collect::<Vec<_>>());
    assert_eq!(count(&rs, 503), 3);
    assert!(rs.iter().filter(|r| r.status == 503).all(|r| r.header("x-envoy-overloaded") == Some("true")));
    assert_eq!(gw.stat("cluster.backend.upstream_rq_pending_overflow"), 3);
    assert_eq!(gw.stat("cluster.backend.upstream_cx_overflow"), 4);
    assert!(gw.stat("cluster.backend.upstream_cx_total") <= 2);
    shows(&gw, "upstream_cx_overflow");
}

/// Ten requests against an upstream that never answers, each allowed three
/// retries after a 0.5 s per-try timeout: without a breaker that is 40
/// upstream requests; `max_retries: 2` lets only two retries be outstanding.
#[test]
fn max_retries_stops_a_retry_storm() {
    let up = Upstream::start("hanging");
    fail(&up, "hang");
    let policy = "retry_policy:\n  retry_on: reset\n  num_retries: 3\n  per_try_timeout: 0.5s";
    let gw = Gateway::start(
        &config("circuit_breakers:\n  thresholds:\n  - max_retries: 2", &format!("timeout: 20s\n{policy}")),
        &[up.addr],
        &[],
    );
    let rs = burst(gw.listener_addr, "/", 10);
    assert_eq!(count(&rs, 504), 10);
    let retries = gw.stat("cluster.backend.upstream_rq_retry");
    let overflow = gw.stat("cluster.backend.upstream_rq_retry_overflow");
    assert_eq!(served(&up), 10 + retries, "every upstream request is a first try or an admitted retry");
    assert!(retries <= 2 * 3 + 2, "{retries} retries: at most two outstanding at a time");
    assert!(overflow >= 6, "{overflow}: most requests found no retry room");
    assert_eq!(gw.stat("cluster.backend.circuit_breakers.default.rq_retry_open"), 0);
    shows(&gw, "upstream_rq_retry_overflow");
}

#[test]
fn retry_budget_caps_retries_by_load() {
    let up = Upstream::start("hanging");
    fail(&up, "hang");
    let policy = "retry_policy:\n  retry_on: reset\n  num_retries: 3\n  per_try_timeout: 0.5s";
    let cb = "circuit_breakers:\n  thresholds:\n  - max_retries: 1000\n    retry_budget:\n      budget_percent: { value: 10 }\n      min_retry_concurrency: 1";
    let gw = Gateway::start(&config(cb, &format!("timeout: 20s\n{policy}")), &[up.addr], &[]);
    let rs = burst(gw.listener_addr, "/", 10);
    assert_eq!(count(&rs, 504), 10);
    let retries = gw.stat("cluster.backend.upstream_rq_retry");
    let overflow = gw.stat("cluster.backend.upstream_rq_retry_overflow");
    // 10% of ≤ 10 active requests is ≤ 1: the budget (not max_retries: 1000) rules.
    assert!(retries <= 3 + 3, "{retries} retries");
    assert!(overflow >= 7, "{overflow}");
    assert_eq!(served(&up), 10 + retries);
}
