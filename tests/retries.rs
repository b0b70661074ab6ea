//! Retries and timeouts end to end, through a real `meshgate` in front of
//! real `mg-upstream` processes told to fail (`/__fail/...`): a bad endpoint
//! is retried around (5xx, reset, connect failure) with `previous_hosts`;
//! a hanging endpoint trips `per_try_timeout` and the retry answers; the
//! route timeout bounds all attempts; a body within the buffer limit is
//! replayed intact; `num_retries` and `x-envoy-max-retries` bound attempts;
//! `x-envoy-attempt-count` is added when the virtual host asks; and every
//! counter shows in `/stats` and `/stats/prometheus`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use testkit::{closed_addr, Client, Gateway, Upstream};

/// The listener (route `/` → cluster `backend`, with `route_extra` in the
/// route action and `vhost_extra` in the virtual host) and a ROUND_ROBIN
/// cluster over upstreams 1..=n.
fn config(vhost_extra: &str, route_extra: &str, n: usize, hcm_extra: &str) -> String {
    let indent = |text: &str, k: usize| -> String {
        text.lines().filter(|l| !l.trim().is_empty()).map(|l| format!("{}{l}\n", " ".repeat(k))).collect()
    };
    let mut endpoints = String::new();
    for i in 1..=n {
        endpoints.push_str(&format!(
            "        - endpoint: {{ address: {{ socket_address: {{ address: \"{{{{UPSTREAM_{i}}}}}\", port_value: {{{{UPSTREAM_{i}_PORT}}}} }} }} }}\n"
        ));
    }
    format!(
        r#"admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {{{{ADMIN_PORT}}}} }} }}
static_resources:
  listeners:
  - name: ingress
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {{{{LISTEN_PORT}}}} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
{hcm_extra}          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
{vhost_extra}              routes:
              - match: {{ prefix: "/" }}
                route:
                  cluster: backend
{route_extra}          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: backend
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
{endpoints}"#,
        hcm_extra = indent(hcm_extra, 10),
        vhost_extra = indent(vhost_extra, 14),
        route_extra = indent(route_extra, 18),
    )
}

const PREVIOUS_HOSTS: &str = r#"
retry_host_predicate:
- name: envoy.retry_host_predicates.previous_hosts
  typed_config: { "@type": type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate }
host_selection_retry_max_attempts: 3"#;

fn retry_policy(body: &str) -> String {
    let mut s = String::from("retry_policy:\n");
    for l in body.lines().filter(|l| !l.trim().is_empty()) {
        s.push_str(&format!("  {l}\n"));
    }
    s
}

/// Tells an upstream to fail (`/__fail/MODE`), directly.
fn fail(u: &Upstream, mode: &str) {
    let r = Client::connect(u.addr).get(&format!("/__fail/{mode}"));
    assert_eq!(r.status, 200, "setting fail mode {mode}");
}

/// Requests an upstream served (control paths excluded).
fn served(u: &Upstream) -> u64 {
    Client::connect(u.addr).get("/__count").body_str().trim().parse().unwrap()
}

fn stats_and_prometheus_show(gw: &Gateway, names: &[&str]) {
    let text = gw.stats();
    let prom = gw.admin_get("/stats/prometheus").body_str();
    for n in names {
        assert!(text.lines().any(|l| l.starts_with(&format!("{n}:"))), "{n} missing from /stats:\n{text}");
        // cluster.<c>.X → envoy_cluster_X{envoy_cluster_name="<c>"}
        let rest = n.strip_prefix("cluster.").expect("cluster stat");
        let (cluster, leaf) = rest.split_once('.').unwrap();
        let prom_name = format!("envoy_cluster_{}{{envoy_cluster_name=\"{cluster}\"}}", leaf.replace('.', "_"));
        assert!(prom.contains(&prom_name), "{prom_name} missing from /stats/prometheus");
    }
}

#[test]
fn retries_recover_from_one_bad_endpoint() {
    let bad = Upstream::start("bad");
    let good = Upstream::start("good");
    fail(&bad, "status/503");
    let policy = retry_policy(&format!("retry_on: 5xx\nnum_retries: 2\n{PREVIOUS_HOSTS}"));
    let gw = Gateway::start(&config("", &policy, 2, ""), &[bad.addr, good.addr], &[]);
    for i in 0..40 {
        let mut c = Client::connect(gw.listener_addr);
        let r = c.get(&format!("/r{i}"));
        assert_eq!(r.status, 200, "request {i} must be retried onto the good endpoint: {}", r.body_str());
        assert_eq!(r.header("x-upstream-name"), Some("good"));
    }
    assert!(served(&bad) >= 5, "round robin must have sent some first attempts to the bad endpoint");
    let retries = gw.stat("cluster.backend.upstream_rq_retry");
    assert_eq!(retries, served(&bad), "one retry per request that met the bad endpoint");
    assert_eq!(gw.stat("cluster.backend.upstream_rq_retry_success"), retries);
    assert_eq!(gw.stat("cluster.backend.upstream_rq_5xx"), retries);
    stats_and_prometheus_show(
        &gw,
        &[
            "cluster.backend.upstream_rq_retry",
            "cluster.backend.upstream_rq_retry_success",
            "cluster.backend.upstream_rq_retry_overflow",
        ],
    );
}

#[test]
fn resets_and_connect_failures_are_retried() {
    let bad = Upstream::start("resetting");
    let good = Upstream::start("good");
    fail(&bad, "reset");
    let dead: SocketAddr = closed_addr();
    let policy = retry_policy(&format!("retry_on: reset,connect-failure\nnum_retries: 3\n{PREVIOUS_HOSTS}"));
    let gw = Gateway::start(&config("", &policy, 3, ""), &[bad.addr, dead, good.addr], &[]);
    for i in 0..30 {
        let r = Client::connect(gw.listener_addr).get(&format!("/x{i}"));
        assert_eq!(r.status, 200, "request {i}: {}", r.body_str());
        assert_eq!(r.header("x-upstream-name"), Some("good"));
    }
    assert!(gw.stat("cluster.backend.upstream_rq_retry") >= 1);
}

#[test]
fn without_a_matching_condition_the_failure_is_returned() {
    let bad = Upstream::start("bad");
    fail(&bad, "status/500");
    // gateway-error does not cover 500.
    let policy = retry_policy("retry_on: gateway-error\nnum_retries: 3");
    let gw = Gateway::start(&config("", &policy, 1, ""), &[bad.addr], &[]);
    let r = Client::connect(gw.listener_addr).get("/");
    assert_eq!(r.status, 500);
    assert_eq!(served(&bad), 1);
    assert_eq!(gw.stat_opt("cluster.backend.upstream_rq_retry").unwrap_or(0), 0);
}

#[test]
fn num_retries_bounds_attempts_and_the_last_response_is_relayed() {
    let bad = Upstream::start("bad");
    fail(&bad, "status/503");
    let policy = retry_policy("retry_on: 5xx\nnum_retries: 2\nretry_back_off: { base_interval: 0.002s }");
    let vhost = "include_request_attempt_count: true\ninclude_attempt_count_in_response: true";
    let gw = Gateway::start(&config(vhost, &policy, 1, ""), &[bad.addr], &[]);
    let r = Client::connect(gw.listener_addr).get("/");
    assert_eq!(r.status, 503);
    assert_eq!(r.body_str(), "failing with 503\n", "the upstream's own last response is relayed");
    assert_eq!(r.header("x-envoy-attempt-count"), Some("3"));
    assert_eq!(served(&bad), 3, "1 attempt + 2 retries");
    assert_eq!(gw.stat("cluster.backend.upstream_rq_retry"), 2);
    assert_eq!(gw.stat("cluster.backend.upstream_rq_retry_limit_exceeded"), 1);
    // An internal request (loopback, use_remote_address off) may lower it.
    let r = Client::connect(gw.listener_addr).request("GET", "/", &[("x-envoy-max-retries", "0")], b"");
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-envoy-attempt-count"), Some("1"));
    assert_eq!(served(&bad), 4);
}

#[test]
fn attempt_count_reaches_the_upstream() {
    let flaky = Upstream::start("flaky");
    fail(&flaky, "status/503?n=1");
    let policy = retry_policy("retry_on: 5xx\nnum_retries: 1");
    let vhost = "include_request_attempt_count: true";
    let gw = Gateway::start(&config(vhost, &policy, 1, ""), &[flaky.addr], &[]);
    let r = Client::connect(gw.listener_addr).request("GET", "/echo", &[("x-envoy-attempt-count", "7")], b"");
    assert_eq!(r.status, 200, "{}", r.body_str());
    let echo = testkit::Echo::from_response(&r);
    assert_eq!(echo.header("x-envoy-attempt-count"), Some("2"), "second attempt, whatever the client sent");
    assert!(!r.has_header("x-envoy-attempt-count"), "not asked for in the response");
    assert_eq!(served(&flaky), 2);
}

#[test]
fn per_try_timeout_fires_and_the_retry_answers() {
    // One endpoint that hangs on its first request only: the retry (same
    // host, the only one) answers.
    let flaky = Upstream::start("flaky");
    fail(&flaky, "hang?n=1");
    let policy = retry_policy("retry_on: reset\nnum_retries: 1\nper_try_timeout: 0.3s");
    let gw = Gateway::start(&config("", &policy, 1, ""), &[flaky.addr], &[]);
    let started = Instant::now();
    let r = Client::connect(gw.listener_addr).get("/");
    assert_eq!(r.status, 200, "{}", r.body_str());
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300), "the first try waited its per-try timeout ({took:?})");
    assert!(took < Duration::from_secs(10), "and no longer than the route timeout ({took:?})");
    assert_eq!(served(&flaky), 2);
    assert_eq!(gw.stat("cluster.backend.upstream_rq_per_try_timeout"), 1);
    assert_eq!(gw.stat("cluster.backend.upstream_rq_retry"), 1);
    stats_and_prometheus_show(&gw, &["cluster.backend.upstream_rq_per_try_timeout"]);
}

#[test]
fn per_try_timeout_without_retries_left_is_504() {
    let hanging = Upstream::start("hanging");
    fail(&hanging, "hang");
    let policy = retry_policy("retry_on: 5xx\nnum_retries: 0\nper_try_timeout: 0.2s");
    let gw = Gateway::start(&config("", &policy, 1, ""), &[hanging.addr], &[]);
    let r = Client::connect(gw.listener_addr).get("/");
    assert_eq!(r.status, 504);
    assert_eq!(gw.stat("cluster.backend.upstream_rq_per_try_timeout"), 1);
}

#[test]
fn route_timeout_bounds_all_attempts() {
    let hanging = Upstream::start("hanging");
    fail(&hanging, "hang");
    // Each try may take 0.4 s, 10 retries are allowed, the route has 1 s.
    let policy = retry_policy("retry_on: 5xx\nnum_retries: 10\nper_try_timeout: 0.4s");
    let gw = Gateway::start(&config("", &format!("timeout: 1s\n{policy}"), 1, ""), &[hanging.addr], &[]);
    let started = Instant::now();
    let r = Client::connect(gw.listener_addr).get("/");
    let took = started.elapsed();
    assert_eq!(r.status, 504);
    assert_eq!(r.body_str(), "upstream request timeout");
    assert!(took >= Duration::from_millis(950) && took < Duration::from_secs(5), "{took:?}");
    assert_eq!(gw.stat("cluster.backend.upstream_rq_timeout"), 1);
    assert!(gw.stat("cluster.backend.upstream_rq_per_try_timeout") >= 2);
    stats_and_prometheus_show(&gw, &["cluster.backend.upstream_rq_timeout"]);
}

/// The route timeout fires while the gateway holds a small response's head
/// for its late body (`POSTPONE_OUTPUT`): nothing has reached the client, so
/// it still gets Envoy's 504 instead of a closed connection.
#[test]
fn route_timeout_while_a_head_is_held_is_504() {
    let slow = Upstream::start("slow");
    let gw = Gateway::start(&config("", "timeout: 0.3s", 1, ""), &[slow.addr], &[]);
    let started = Instant::now();
    // The upstream sends the head at once and the 10-byte body 2 s later.
    let r = Client::connect(gw.listener_addr).get("/sleep-body/2000");
    assert_eq!(r.status, 504, "{}", r.body_str());
    assert_eq!(r.body_str(), "upstream request timeout");
    assert!(started.elapsed() < Duration::from_millis(1500), "{:?}", started.elapsed());
    assert_eq!(gw.stat("cluster.backend.upstream_rq_timeout"), 1);
}

/// Once part of the response reached the client, the route timeout can only
/// cut it: the client reads the head and the first bytes, then the close.
#[test]
fn route_timeout_after_bytes_reached_the_client_cuts_the_response() {
    use std::io::{Read, Write};
    let slow = Upstream::start("slow");
    let gw = Gateway::start(&config("", "timeout: 0.3s", 1, ""), &[slow.addr], &[]);
    let mut s = std::net::TcpStream::connect(gw.listener_addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // Head and 3,000 of 6,000 body bytes at once, the rest after 2 s.
    s.write_all(b"GET /split-body/3000/6000/2000 HTTP/1.1\r\nhost: gw\r\n\r\n").unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text:?}");
    let body_start = text.find("\r\n\r\n").unwrap() + 4;
    assert_eq!(got.len() - body_start, 3000, "the first part, then the close: {:?}", &text[..body_start]);
    assert_eq!(gw.stat("cluster.backend.upstream_rq_timeout"), 1);
}

#[test]
fn internal_timeout_header_overrides_the_route_timeout() {
    let slow = Upstream::start("slow");
    let gw = Gateway::start(&config("", "timeout: 10s", 1, ""), &[slow.addr], &[]);
    let started = Instant::now();
    let r = Client::connect(gw.listener_addr).request(
        "GET",
        "/delay/3000",
        &[("x-envoy-upstream-rq-timeout-ms", "300")],
        b"",
    );
    assert_eq!(r.status, 504);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn external_requests_cannot_set_retry_headers() {
    // With use_remote_address, a non-internal peer's x-envoy-* headers are
    // ignored; 127.0.0.1 is internal, so here they apply and are consumed
    // (never forwarded upstream).
    let up = Upstream::start("up");
    let gw = Gateway::start(&config("", "", 1, "use_remote_address: true"), &[up.addr], &[]);
    let r = Client::connect(gw.listener_addr).request(
        "GET",
        "/echo",
        &[("x-envoy-retry-on", "5xx"), ("x-envoy-max-retries", "3"), ("x-envoy-upstream-rq-timeout-ms", "5000")],
        b"",
    );
    assert_eq!(r.status, 200);
    let echo = testkit::Echo::from_response(&r);
    for h in ["x-envoy-retry-on", "x-envoy-max-retries", "x-envoy-upstream-rq-timeout-ms"] {
        assert!(!echo.has_header(h), "{h} must be consumed by the router");
    }
}

#[test]
fn bodies_within_the_buffer_limit_are_replayed() {
    let bad = Upstream::start("bad");
    let good = Upstream::start("good");
    fail(&bad, "status/503");
    let policy = retry_policy(&format!("retry_on: 5xx\nnum_retries: 1\n{PREVIOUS_HOSTS}"));
    let gw = Gateway::start(
        &config("per_request_buffer_limit_bytes: 65536", &policy, 2, ""),
        &[bad.addr, good.addr],
        &["--shards", "1"],
    );
    let body = testkit::pattern(40_000);
    for _ in 0..4 {
        let r = Client::connect(gw.listener_addr).request("POST", "/upload", &[], &body);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-upstream-name"), Some("good"));
        let j = r.json();
        assert_eq!(j["body_len"], 40_000);
        assert_eq!(j["body_fnv64"], testkit::fnv64_hex(&body));
    }
    assert!(gw.stat("cluster.backend.upstream_rq_retry") >= 1);
    // Beyond the limit the body streams once and is not retried.
    let big = testkit::pattern(100_000);
    let mut saw_503 = false;
    for _ in 0..4 {
        let r = Client::connect(gw.listener_addr).request("POST", "/upload", &[], &big);
        match r.status {
            200 => assert_eq!(r.json()["body_len"], 100_000),
            503 => saw_503 = true,
            s => panic!("unexpected {s}"),
        }
    }
    assert!(saw_503, "a body over the limit that meets the bad endpoint is not retried");
    assert!(gw.stat("cluster.backend.retry_or_shadow_abandoned") >= 4);
}

#[test]
fn unsupported_retry_fields_are_rejected_by_path() {
    let out = testkit::validate_config(
        &config("", &retry_policy("retry_on: 5xx,cancelled"), 1, ""),
        &[SocketAddr::from(([127, 0, 0, 1], 1))],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("retry_policy.retry_on") && err.contains("cancelled"), "{err}");
    let out = testkit::validate_config(
        &config("", &retry_policy("retry_on: 5xx\nper_try_idle_timeout: 1s"), 1, ""),
        &[SocketAddr::from(([127, 0, 0, 1], 1))],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("per_try_idle_timeout"));
}
