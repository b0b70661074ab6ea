//! End-to-end local rate limiting through a real `meshgate` (two shards)
//! in front of a real `mg-upstream`: the shared token bucket lets the
//! configured rate through across shards and connections, limited requests
//! get Envoy's 429 with its headers, per-route overrides replace the
//! listener's config, an unenforced limit only flags requests, and the
//! network filter closes connections beyond its bucket.

use std::time::{Duration, Instant};

use testkit::{validate_config, Client, Gateway, Upstream};

/// A gateway config with `http_filters` (YAML at column 0, the router is
/// appended), `routes` (YAML at column 0) and network filters placed ahead
/// of the connection manager.
fn config(network_filters: &str, http_filters: &str, routes: &str) -> String {
    testkit::filters_config(network_filters, http_filters, routes)
}

const DEFAULT_ROUTE: &str = r#"
- match: { prefix: "/" }
  route: { cluster: backend }
"#;

fn http_ratelimit(bucket: &str, extra: &str) -> String {
    format!(
        r#"
- name: envoy.filters.http.local_ratelimit
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
    stat_prefix: http_local_rate_limiter
{bucket}
{extra}
"#
    )
}

const ENABLED_ENFORCED: &str = r#"
    filter_enabled:
      runtime_key: local_rate_limit_enabled
      default_value: { numerator: 100, denominator: HUNDRED }
    filter_enforced:
      runtime_key: local_rate_limit_enforced
      default_value: { numerator: 100, denominator: HUNDRED }"#;

#[test]
fn shared_bucket_rate_holds_within_5_percent_over_10s_across_shards() {
    let up = Upstream::start("up");
    // 20 tokens every 100 ms (200 requests/s), bucket of 20.
    let bucket = "    token_bucket: { max_tokens: 20, tokens_per_fill: 20, fill_interval: 0.1s }";
    let gw = Gateway::start(
        &config("", &http_ratelimit(bucket, ENABLED_ENFORCED), DEFAULT_ROUTE),
        &[up.addr],
        &["--shards", "2"],
    );
    let window = Duration::from_secs(10);
    let start = Instant::now();
    // Six keep-alive connections, spread by SO_REUSEPORT over both shards,
    // each asking far faster than the limit.
    let workers: Vec<_> = (0..6)
        .map(|_| {
            let addr = gw.listener_addr;
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                let (mut ok, mut limited) = (0u64, 0u64);
                while start.elapsed() < window {
                    let r = c.get("/");
                    match r.status {
                        200 => ok += 1,
                        429 => limited += 1,
                        s => panic!("unexpected status {s}: {}", r.body_str()),
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                (ok, limited)
            })
        })
        .collect();
    let (mut ok, mut limited) = (0, 0);
    for w in workers {
        let (o, l) = w.join().unwrap();
        ok += o;
        limited += l;
    }
    // The full bucket plus one fill per 100 ms boundary in the window.
    let expected = 20.0 + 20.0 * (window.as_millis() / 100) as f64;
    let ratio = ok as f64 / expected;
    eprintln!("allowed {ok} (expected {expected}), limited {limited}, ratio {ratio:.3}");
    assert!(limited > ok, "the clients must ask faster than the limit (ok {ok}, limited {limited})");
    assert!((0.95..=1.05).contains(&ratio), "allowed {ok} requests, expected {expected} ±5%");
    let stat = |leaf: &str| gw.stat(&format!("http_local_rate_limiter.http_local_rate_limit.{leaf}"));
    assert_eq!(stat("ok"), ok);
    assert_eq!(stat("rate_limited"), limited);
    assert_eq!(stat("enforced"), limited);
    assert_eq!(stat("enabled"), ok + limited);
}

#[test]
fn limited_requests_get_429_with_headers_and_stats() {
    let up = Upstream::start("up");
    let extra = format!(
        r#"{ENABLED_ENFORCED}
    response_headers_to_add:
    - append_action: OVERWRITE_IF_EXISTS_OR_ADD
      header: {{ key: x-local-rate-limit, value: "true" }}
    enable_x_ratelimit_headers: DRAFT_VERSION_03"#
    );
    let bucket = "    token_bucket: { max_tokens: 2, tokens_per_fill: 1, fill_interval: 3600s }";
    let gw = Gateway::start(&config("", &http_ratelimit(bucket, &extra), DEFAULT_ROUTE), &[up.addr], &[]);
    let mut c = Client::connect(gw.listener_addr);
    let first = c.get("/");
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-ratelimit-limit"), Some("2"));
    assert_eq!(first.header("x-ratelimit-remaining"), Some("1"));
    let reset: u64 = first.header("x-ratelimit-reset").unwrap().parse().unwrap();
    assert!((1..=3600).contains(&reset), "reset {reset}");
    assert!(!first.has_header("x-local-rate-limit"), "response_headers_to_add is for limited replies");
    assert_eq!(c.get("/").header("x-ratelimit-remaining"), Some("0"));
    let limited = c.get("/");
    assert_eq!(limited.status, 429);
    assert_eq!(limited.body_str(), "local_rate_limited");
    assert_eq!(limited.header("x-envoy-ratelimited"), Some("true"));
    assert_eq!(limited.header("x-local-rate-limit"), Some("true"));
    assert_eq!(limited.header("x-ratelimit-remaining"), Some("0"));
    assert!(!limited.connection_close(), "a limited request keeps its connection");
    // And the connection stays usable.
    assert_eq!(c.get("/").status, 429);
    let stat = |leaf: &str| gw.stat(&format!("http_local_rate_limiter.http_local_rate_limit.{leaf}"));
    assert_eq!((stat("enabled"), stat("ok"), stat("rate_limited"), stat("enforced")), (4, 2, 2, 2));
    let prom = gw.admin_get("/stats/prometheus").body_str();
    for leaf in ["enabled", "ok", "rate_limited", "enforced"] {
        let name = format!("http_local_rate_limiter_http_local_rate_limit_{leaf}");
        assert!(prom.contains(&name), "{name} missing from /stats/prometheus:\n{prom}");
    }
}

#[test]
fn per_route_override_replaces_the_listener_config() {
    let up = Upstream::start("up");
    // The listener-level filter has no bucket: it only carries overrides.
    let filter = r#"
- name: envoy.filters.http.local_ratelimit
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
    stat_prefix: listener_rl
"#;
    let routes = r#"
- match: { prefix: "/limited" }
  route: { cluster: backend }
  typed_per_filter_config:
    envoy.filters.http.local_ratelimit:
      "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
      stat_prefix: route_rl
      status: { code: ServiceUnavailable }
      token_bucket: { max_tokens: 1, fill_interval: 3600s }
      filter_enabled: { runtime_key: a, default_value: { numerator: 100 } }
      filter_enforced: { runtime_key: b, default_value: { numerator: 100 } }
- match: { prefix: "/" }
  route: { cluster: backend }
"#;
    let gw = Gateway::start(&config("", filter, routes), &[up.addr], &[]);
    let mut c = Client::connect(gw.listener_addr);
    assert_eq!(c.get("/limited").status, 200);
    let r = c.get("/limited/again");
    assert_eq!(r.status, 503, "status from the override");
    assert_eq!(r.body_str(), "local_rate_limited");
    for _ in 0..5 {
        assert_eq!(c.get("/free").status, 200, "routes without an override are not limited");
    }
    assert_eq!(gw.stat("route_rl.http_local_rate_limit.enforced"), 1);
    assert_eq!(gw.stat("listener_rl.http_local_rate_limit.enabled"), 0);
}

#[test]
fn unenforced_limit_forwards_with_flag_headers() {
    let up = Upstream::start("up");
    let extra = r#"
    filter_enabled: { runtime_key: a, default_value: { numerator: 100 } }
    filter_enforced: { runtime_key: b, default_value: { numerator: 0 } }
    request_headers_to_add_when_not_enforced:
    - append_action: OVERWRITE_IF_EXISTS_OR_ADD
      header: { key: x-local-ratelimit-not-enforced, value: "true" }"#;
    let bucket = "    token_bucket: { max_tokens: 1, fill_interval: 3600s }";
    let gw = Gateway::start(&config("", &http_ratelimit(bucket, extra), DEFAULT_ROUTE), &[up.addr], &[]);
    let mut c = Client::connect(gw.listener_addr);
    let first = testkit::Echo::from_response(&c.get("/echo"));
    assert!(!first.has_header("x-local-ratelimit-not-enforced"));
    let second = c.get("/echo");
    assert_eq!(second.status, 200, "not enforced: forwarded");
    assert_eq!(testkit::Echo::from_response(&second).header("x-local-ratelimit-not-enforced"), Some("true"));
    let stat = |leaf: &str| gw.stat(&format!("http_local_rate_limiter.http_local_rate_limit.{leaf}"));
    assert_eq!((stat("rate_limited"), stat("enforced")), (1, 0));
}

#[test]
fn per_connection_buckets() {
    let up = Upstream::start("up");
    let extra = format!("{ENABLED_ENFORCED}\n    local_rate_limit_per_downstream_connection: true");
    let bucket = "    token_bucket: { max_tokens: 2, fill_interval: 3600s }";
    let gw = Gateway::start(&config("", &http_ratelimit(bucket, &extra), DEFAULT_ROUTE), &[up.addr], &[]);
    for _ in 0..3 {
        let mut c = Client::connect(gw.listener_addr);
        assert_eq!(c.get("/").status, 200);
        assert_eq!(c.get("/").status, 200);
        assert_eq!(c.get("/").status, 429, "each connection has its own two tokens");
    }
}

#[test]
fn network_filter_closes_connections_over_the_limit() {
    let up = Upstream::start("up");
    let network = r#"
- name: envoy.filters.network.local_ratelimit
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit
    stat_prefix: conn_limit
    token_bucket: { max_tokens: 2, fill_interval: 3600s }
"#;
    let gw = Gateway::start(&config(network, "", DEFAULT_ROUTE), &[up.addr], &[]);
    let mut kept = Vec::new();
    for _ in 0..2 {
        let mut c = Client::connect(gw.listener_addr);
        assert_eq!(c.get("/").status, 200);
        kept.push(c);
    }
    let mut third = Client::connect(gw.listener_addr);
    let _ = third.try_send(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n");
    assert!(third.is_closed(Duration::from_secs(5)), "the third connection is closed");
    // Connections admitted earlier keep working.
    assert_eq!(kept[0].get("/").status, 200);
    assert_eq!(gw.stat("local_ratelimit.conn_limit.rate_limited"), 1);
    assert!(gw.admin_get("/stats/prometheus").body_str().contains("local_ratelimit_conn_limit_rate_limited"));
}

#[test]
fn unsupported_and_invalid_fields_are_rejected_with_their_path() {
    let upstream = ["127.0.0.1:1".parse().unwrap()];
    let validate = |filter: String| {
        let out = validate_config(&config("", &filter, DEFAULT_ROUTE), &upstream);
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let bucket = "    token_bucket: { max_tokens: 2, fill_interval: 1s }";
    let stderr = validate(http_ratelimit(bucket, "    rate_limited_as_resource_exhausted: true"));
    assert!(
        stderr.contains("http_filters[0].typed_config.rate_limited_as_resource_exhausted: unsupported field"),
        "{stderr}"
    );
    let wildcard = r#"
    descriptors:
    - entries: [{ key: client, value: "" }]
      token_bucket: { max_tokens: 1, fill_interval: 1s }"#;
    let stderr = validate(http_ratelimit(bucket, wildcard));
    assert!(stderr.contains("http_filters[0].typed_config.descriptors[0].entries[0].value: required"), "{stderr}");
    let fast = "    token_bucket: { max_tokens: 2, fill_interval: 0.01s }";
    let stderr = validate(http_ratelimit(fast, ""));
    assert!(
        stderr.contains("http_filters[0].typed_config.token_bucket.fill_interval: must be at least 50ms"),
        "{stderr}"
    );
}

#[test]
fn descriptors_from_route_rate_limits_get_their_own_buckets() {
    let up = Upstream::start("up");
    let extra = format!(
        r#"{ENABLED_ENFORCED}
    always_consume_default_token_bucket: false
    descriptors:
    - entries: [{{ key: client, value: premium }}]
      token_bucket: {{ max_tokens: 5, fill_interval: 3600s }}"#
    );
    let bucket = "    token_bucket: { max_tokens: 2, fill_interval: 3600s }";
    let routes = r#"
- match: { prefix: "/" }
  route:
    cluster: backend
    rate_limits:
    - actions:
      - request_headers: { header_name: x-client, descriptor_key: client }
"#;
    let gw = Gateway::start(&config("", &http_ratelimit(bucket, &extra), routes), &[up.addr], &[]);
    let mut c = Client::connect(gw.listener_addr);
    let premium = [("x-client", "premium")];
    for i in 0..5 {
        assert_eq!(c.request("GET", "/", &premium, b"").status, 200, "premium request {i}");
    }
    assert_eq!(c.request("GET", "/", &premium, b"").status, 429, "the premium descriptor's 5 tokens are spent");
    // Others match no descriptor: the default bucket, untouched so far.
    assert_eq!(c.request("GET", "/", &[("x-client", "basic")], b"").status, 200);
    assert_eq!(c.get("/").status, 200);
    assert_eq!(c.get("/").status, 429);
}
