//! Outlier detection end to end, through a real `meshgate` (two shards) in
//! front of real `mg-upstream` processes: an endpoint that starts returning
//! 5xx is ejected after `consecutive_5xx` failures counted across shards,
//! shows `/failed_outlier_check` in `/clusters`, gets no traffic while
//! ejected, and comes back after `base_ejection_time`; the ejection stats
//! show in `/stats` and `/stats/prometheus`.
//!
//!
//! Active health checks: a killed priority-0 endpoint is marked
//! `/failed_active_hc` within about interval × unhealthy_threshold, and
//! traffic spills to the priority-1 backup with no failed request (the
//! route retries connect failures until detection).  gRPC health checks:
//! tests/grpc_health.rs.

use std::time::{Duration, Instant};

use testkit::{backend_route_config, static_cluster, Client, Gateway, Upstream};

/// Route `/` to `backend`: two STATIC endpoints, `outlier` as its
/// `outlier_detection`.
fn config(outlier: &str) -> String {
    let outlier: String = outlier.lines().filter(|l| !l.trim().is_empty()).map(|l| format!("  {l}\n")).collect();
    let extra = format!("outlier_detection:\n{outlier}");
    backend_route_config("", &static_cluster("backend", &extra, &[(1, 0, 1), (2, 0, 1)]))
}

fn fail(u: &Upstream, mode: &str) {
    assert_eq!(Client::connect(u.addr).get(&format!("/__fail/{mode}")).status, 200);
}

fn flags(gw: &Gateway, u: &Upstream) -> String {
    gw.health_flags("backend", u.addr)
}

#[test]
fn five_xx_endpoint_is_ejected_and_comes_back() {
    let bad = Upstream::start("bad");
    let good = Upstream::start("good");
    let od = "consecutive_5xx: 3\ninterval: 0.2s\nbase_ejection_time: 1.5s\nmax_ejection_percent: 50";
    let gw = Gateway::start(&config(od), &[bad.addr, good.addr], &[]);
    fail(&bad, "status/500");
    // New connections spread over both shards: the three 5xx are counted
    // together, so the bad endpoint is out after exactly three of them.
    let mut five_xx = 0;
    for i in 0..30 {
        let r = Client::connect(gw.listener_addr).get(&format!("/a{i}"));
        if r.status == 500 {
            five_xx += 1;
        } else {
            assert_eq!(r.status, 200);
        }
    }
    assert_eq!(five_xx, 3, "ejected after consecutive_5xx = 3, across shards");
    assert_eq!(gw.stat("cluster.backend.outlier_detection.ejections_enforced_consecutive_5xx"), 1);
    assert_eq!(gw.stat("cluster.backend.outlier_detection.ejections_active"), 1);
    assert_eq!(flags(&gw, &bad), "/failed_outlier_check");
    assert_eq!(flags(&gw, &good), "healthy");
    // It recovers upstream; after the ejection time it gets traffic again.
    fail(&bad, "off");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = Client::connect(gw.listener_addr).get("/b");
        assert_eq!(r.status, 200);
        if r.header("x-upstream-name") == Some("bad") {
            break;
        }
        assert!(Instant::now() < deadline, "the ejected endpoint never came back");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(gw.stat("cluster.backend.outlier_detection.ejections_active"), 0);
    assert_eq!(flags(&gw, &bad), "healthy");
    let prom = gw.admin_get("/stats/prometheus").body_str();
    for leaf in [
        "outlier_detection_ejections_enforced_total",
        "outlier_detection_ejections_active",
        "outlier_detection_ejections_detected_consecutive_5xx",
        "outlier_detection_ejections_overflow",
    ] {
        assert!(prom.contains(&format!("envoy_cluster_{leaf}{{envoy_cluster_name=\"backend\"}}")), "{leaf}");
    }
}

/// Priority 0 `primary`, priority 1 `backup`, HTTP health checks every
/// 0.2 s (2 failures → unhealthy), connect-failure retries on the route.
fn failover_config() -> String {
    let health_checks = "health_checks:
- timeout: 0.2s
  interval: 0.2s
  no_traffic_interval: 0.2s
  unhealthy_threshold: 2
  healthy_threshold: 1
  http_health_check: { path: /hc }";
    backend_route_config(
        r#"retry_policy: { retry_on: "connect-failure,reset", num_retries: 2 }"#,
        &static_cluster("backend", health_checks, &[(1, 0, 1), (2, 1, 1)]),
    )
}

#[test]
fn killed_endpoint_is_found_by_health_checks_and_traffic_spills_to_backup() {
    let mut primary = Upstream::start("primary");
    let backup = Upstream::start("backup");
    let gw = Gateway::start(&failover_config(), &[primary.addr, backup.addr], &[]);
    for i in 0..10 {
        let r = Client::connect(gw.listener_addr).get(&format!("/p{i}"));
        assert_eq!((r.status, r.header("x-upstream-name")), (200, Some("primary")));
    }
    assert!(gw.wait_stat("cluster.backend.health_check.success", 2, Duration::from_secs(10)) >= 2);
    assert_eq!(flags(&gw, &primary), "healthy");
    let killed = Instant::now();
    primary.kill();
    // Keep traffic flowing: with connect-failure retries no request fails,
    // before or after detection.
    let mut detected = None;
    let deadline = killed + Duration::from_secs(15);
    while Instant::now() < deadline {
        let r = Client::connect(gw.listener_addr).get("/k");
        assert_eq!(r.status, 200, "no failed request once the primary is gone: {}", r.body_str());
        assert_eq!(r.header("x-upstream-name"), Some("backup"));
        if detected.is_none() && flags(&gw, &primary) == "/failed_active_hc" {
            detected = Some(killed.elapsed());
        }
        if detected.is_some_and(|d| killed.elapsed() > d + Duration::from_secs(1)) {
            break;
        }
    }
    let detected = detected.expect("the health checker never marked the killed primary");
    // interval × unhealthy_threshold = 0.4 s (plus timeouts and a loaded machine).
    assert!(detected < Duration::from_secs(3), "detected after {detected:?}");
    assert!(gw.stat("cluster.backend.health_check.network_failure") >= 2);
    assert_eq!(gw.stat("cluster.backend.health_check.healthy"), 1);
    let prom = gw.admin_get("/stats/prometheus").body_str();
    for leaf in ["attempt", "success", "failure", "network_failure", "healthy"] {
        let name = format!("envoy_cluster_health_check_{leaf}{{envoy_cluster_name=\"backend\"}}");
        assert!(prom.contains(&name), "{name}");
    }
}
