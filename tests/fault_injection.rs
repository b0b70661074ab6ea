//! End-to-end fault injection (`envoy.filters.http.fault`) through a real
//! `meshgate` in front of a real `mg-upstream`: fixed delays and aborts hit
//! the configured share of requests, header-controlled faults obey the
//! request's headers, `max_active_faults` caps concurrent faults, and
//! per-route overrides and header matchers scope the faults.

use std::time::{Duration, Instant};

use testkit::{Client, Gateway, Upstream};

/// A gateway with `http_filters` (router appended) and `routes`, both YAML at column 0.
fn config(http_filters: &str, routes: &str) -> String {
    testkit::filters_config("", http_filters, routes)
}

const DEFAULT_ROUTE: &str = r#"
- match: { prefix: "/" }
  route: { cluster: backend }
"#;

fn fault_filter(body: &str) -> String {
    format!(
        r#"
- name: envoy.filters.http.fault
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
{body}
"#
    )
}

#[test]
fn delays_and_aborts_hit_the_configured_share_within_3_points_over_5000_requests() {
    let up = Upstream::start("up");
    let fault = fault_filter(
        r#"    delay:
      fixed_delay: 0.001s
      percentage: { numerator: 30, denominator: HUNDRED }
    abort:
      http_status: 503
      percentage: { numerator: 2000, denominator: TEN_THOUSAND }"#,
    );
    let gw = Gateway::start(&config(&fault, DEFAULT_ROUTE), &[up.addr], &[]);
    const TOTAL: usize = 5_000;
    const CONNS: usize = 4;
    let workers: Vec<_> = (0..CONNS)
        .map(|_| {
            let addr = gw.listener_addr;
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                let mut aborted = 0usize;
                for _ in 0..TOTAL / CONNS {
                    let r = c.get("/");
                    match r.status {
                        200 => {}
                        503 => {
                            assert_eq!(r.body_str(), "fault filter abort");
                            aborted += 1;
                        }
                        s => panic!("unexpected status {s}"),
                    }
                }
                aborted
            })
        })
        .collect();
    let aborted: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    let delays = gw.stat("http.ingress.fault.delays_injected");
    let abort_share = aborted as f64 / TOTAL as f64;
    let delay_share = delays as f64 / TOTAL as f64;
    eprintln!("aborted {aborted} ({abort_share:.4}), delayed {delays} ({delay_share:.4}) of {TOTAL}");
    assert!((abort_share - 0.20).abs() <= 0.03, "abort share {abort_share}");
    assert!((delay_share - 0.30).abs() <= 0.03, "delay share {delay_share}");
    assert_eq!(gw.stat("http.ingress.fault.aborts_injected"), aborted as u64);
    assert_eq!(gw.stat("http.ingress.fault.faults_overflow"), 0);
    assert_eq!(gw.stat("http.ingress.fault.active_faults"), 0, "every fault ended");
    let prom = gw.admin_get("/stats/prometheus").body_str();
    for name in ["fault_delays_injected", "fault_aborts_injected", "fault_faults_overflow", "fault_active_faults"] {
        assert!(prom.contains(name), "{name} missing from /stats/prometheus");
    }
}

#[test]
fn header_controlled_faults() {
    let up = Upstream::start("up");
    let fault = fault_filter(
        r#"    delay:
      header_delay: {}
      percentage: { numerator: 100 }
    abort:
      header_abort: {}
      percentage: { numerator: 100 }"#,
    );
    let gw = Gateway::start(&config(&fault, DEFAULT_ROUTE), &[up.addr], &[]);
    let mut c = Client::connect(gw.listener_addr);
    // No fault headers: no fault.
    assert_eq!(c.get("/").status, 200);
    let r = c.request("GET", "/", &[("x-envoy-fault-abort-request", "418")], b"");
    assert_eq!(r.status, 418);
    assert_eq!(r.body_str(), "fault filter abort");
    let r = c.request("GET", "/", &[("x-envoy-fault-abort-grpc-request", "14")], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("grpc-status"), Some("14"));
    assert_eq!(r.header("content-type"), Some("application/grpc"));
    // A 0% header percentage turns the abort off.
    let r = c.request(
        "GET",
        "/",
        &[("x-envoy-fault-abort-request", "500"), ("x-envoy-fault-abort-request-percentage", "0")],
        b"",
    );
    assert_eq!(r.status, 200);
    let t = Instant::now();
    let r = c.request("GET", "/", &[("x-envoy-fault-delay-request", "400")], b"");
    assert_eq!(r.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(400), "delayed only {:?}", t.elapsed());
    assert_eq!(gw.stat("http.ingress.fault.delays_injected"), 1);
    assert_eq!(gw.stat("http.ingress.fault.aborts_injected"), 2);
}

#[test]
fn max_active_faults_overflow() {
    let up = Upstream::start("up");
    let fault = fault_filter(
        r#"    max_active_faults: 1
    delay:
      fixed_delay: 2s
      percentage: { numerator: 100 }"#,
    );
    let gw = Gateway::start(&config(&fault, DEFAULT_ROUTE), &[up.addr], &[]);
    let addr = gw.listener_addr;
    let slow = std::thread::spawn(move || {
        let t = Instant::now();
        let r = Client::connect(addr).get("/");
        (r.status, t.elapsed())
    });
    // Wait until the first request holds the only fault slot.
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.stat("http.ingress.fault.active_faults") != 1 {
        assert!(Instant::now() < deadline, "the first fault never became active");
        std::thread::sleep(Duration::from_millis(20));
    }
    let t = Instant::now();
    assert_eq!(Client::connect(addr).get("/").status, 200);
    assert!(t.elapsed() < Duration::from_secs(2), "the second request must not be delayed");
    assert_eq!(gw.stat("http.ingress.fault.faults_overflow"), 1);
    let (status, took) = slow.join().unwrap();
    assert_eq!(status, 200);
    assert!(took >= Duration::from_secs(2));
    assert_eq!(gw.wait_stat("http.ingress.fault.active_faults", 0, Duration::from_secs(5)), 0);
}

#[test]
fn per_route_override_header_matchers_and_downstream_nodes() {
    let up = Upstream::start("up");
    // The listener-level filter injects nothing; one route overrides it.
    let fault = fault_filter("    max_active_faults: 100");
    let routes = r#"
- match: { prefix: "/faulty" }
  route: { cluster: backend }
  typed_per_filter_config:
    envoy.filters.http.fault:
      "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
      abort: { http_status: 502, percentage: { numerator: 100 } }
      headers:
      - name: x-user
        string_match: { exact: tester }
      downstream_nodes: ["svc-a"]
- match: { prefix: "/" }
  route: { cluster: backend }
"#;
    let gw = Gateway::start(&config(&fault, routes), &[up.addr], &[]);
    let mut c = Client::connect(gw.listener_addr);
    let both = [("x-user", "tester"), ("x-envoy-downstream-service-node", "svc-a")];
    assert_eq!(c.request("GET", "/faulty", &both, b"").status, 502);
    assert_eq!(c.request("GET", "/other", &both, b"").status, 200, "no override there");
    assert_eq!(c.request("GET", "/faulty", &both[..1], b"").status, 200, "node missing");
    let wrong_node = [("x-user", "tester"), ("x-envoy-downstream-service-node", "svc-b")];
    assert_eq!(c.request("GET", "/faulty", &wrong_node, b"").status, 200);
    assert_eq!(c.request("GET", "/faulty", &both[1..], b"").status, 200, "header matcher fails");
    assert_eq!(gw.stat("http.ingress.fault.aborts_injected"), 1);
}
