//! The admin endpoint: readiness, server info, Envoy-style stats (text and
//! Prometheus), config dump, clusters.

use std::time::Duration;

use prometheus_parse::{LineInfo, Scrape, Value};
use testkit::{start_basic, Client, Gateway, Upstream, CLUSTER_NAME, LISTENER_NAME, STAT_PREFIX};

fn basic() -> (Upstream, Gateway) {
    start_basic("", "", "", &[])
}

/// Sends `ok` requests answered 200 and `not_found` answered 404, on one connection.
fn drive(gw: &Gateway, ok: u64, not_found: u64) {
    let mut c = Client::connect(gw.listener_addr);
    for _ in 0..ok {
        assert_eq!(c.get("/").status, 200);
    }
    for _ in 0..not_found {
        assert_eq!(c.get("/status/404").status, 404);
    }
}

#[test]
fn ready_and_server_info() {
    let (_up, gw) = basic();
    let r = gw.admin_get("/ready");
    assert_eq!(r.status, 200);
    let r = gw.admin_get("/server_info");
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["state"], "LIVE", "server_info: {v}");
}

#[test]
fn stats_count_proxied_requests() {
    let (_up, gw) = basic();
    drive(&gw, 5, 2);
    let total = format!("http.{STAT_PREFIX}.downstream_rq_total");
    let wait = Duration::from_secs(5);
    assert_eq!(gw.wait_stat(&total, 7, wait), 7, "stats:\n{}", gw.stats());
    assert_eq!(
        gw.wait_stat(&format!("cluster.{CLUSTER_NAME}.upstream_rq_total"), 7, wait),
        7,
        "stats:\n{}",
        gw.stats()
    );
    assert_eq!(gw.wait_stat(&format!("http.{STAT_PREFIX}.downstream_rq_2xx"), 5, wait), 5);
    assert_eq!(gw.wait_stat(&format!("http.{STAT_PREFIX}.downstream_rq_4xx"), 2, wait), 2);
    // Admin requests are not counted on the proxy listener.
    for _ in 0..3 {
        gw.stats();
    }
    assert_eq!(gw.stat(&total), 7);
}

/// Finds a counter in either Envoy's tag-extracted form (`name{label="v"}`) or
/// the flat form (the dotted stat name with `.` → `_`).
fn prom_counter(scrape: &Scrape, tagged: &str, label: (&str, &str), flat: &str) -> Option<f64> {
    scrape.samples.iter().find_map(|s| {
        let hit = (s.metric == tagged && s.labels.get(label.0) == Some(label.1)) || s.metric == flat;
        if !hit {
            return None;
        }
        match s.value {
            Value::Counter(v) | Value::Untyped(v) => Some(v),
            _ => None,
        }
    })
}

#[test]
fn prometheus_stats_parse_and_match() {
    let (_up, gw) = basic();
    drive(&gw, 4, 0);
    let total = format!("http.{STAT_PREFIX}.downstream_rq_total");
    assert_eq!(gw.wait_stat(&total, 4, Duration::from_secs(5)), 4);
    let r = gw.admin_get("/stats/prometheus");
    assert_eq!(r.status, 200);
    let text = r.body_str();
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        assert_ne!(LineInfo::parse(line), LineInfo::Ignored, "unparsable exposition line {line:?}");
    }
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("prometheus text parses");
    assert!(!scrape.samples.is_empty());

    let rq = prom_counter(
        &scrape,
        "envoy_http_downstream_rq_total",
        ("envoy_http_conn_manager_prefix", STAT_PREFIX),
        &format!("envoy_http_{STAT_PREFIX}_downstream_rq_total"),
    )
    .unwrap_or_else(|| panic!("downstream_rq_total missing from:\n{text}"));
    assert_eq!(rq, 4.0);
    let up = prom_counter(
        &scrape,
        "envoy_cluster_upstream_rq_total",
        ("envoy_cluster_name", CLUSTER_NAME),
        &format!("envoy_cluster_{CLUSTER_NAME}_upstream_rq_total"),
    )
    .unwrap_or_else(|| panic!("upstream_rq_total missing from:\n{text}"));
    assert_eq!(up, 4.0);
    // Counters are declared as such.
    let is_counter = scrape.samples.iter().any(|s| {
        (s.metric == "envoy_http_downstream_rq_total"
            || s.metric == format!("envoy_http_{STAT_PREFIX}_downstream_rq_total"))
            && matches!(s.value, Value::Counter(_))
    });
    assert!(is_counter, "downstream_rq_total not typed as counter");
}

#[test]
fn config_dump_contains_listener_and_cluster() {
    let (_up, gw) = basic();
    let r = gw.admin_get("/config_dump");
    assert_eq!(r.status, 200);
    let v = r.json();
    let text = v.to_string();
    assert!(text.contains(LISTENER_NAME), "listener missing from config_dump: {text}");
    assert!(text.contains(CLUSTER_NAME), "cluster missing from config_dump: {text}");
}

#[test]
fn clusters_lists_the_endpoint() {
    let (up, gw) = basic();
    let r = gw.admin_get("/clusters");
    assert_eq!(r.status, 200);
    let body = r.body_str();
    let prefix = format!("{CLUSTER_NAME}::{}::", up.addr);
    assert!(body.lines().any(|l| l.starts_with(&prefix)), "no `{prefix}` line in /clusters:\n{body}");
}

#[test]
fn unknown_admin_path_is_404() {
    let (_up, gw) = basic();
    assert_eq!(gw.admin_get("/no/such/admin/page").status, 404);
}

/// `admin.access_log_path`: every admin request is logged there.
#[test]
fn admin_requests_are_written_to_the_access_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("admin.log");
    let yaml = testkit::basic_config("", "", "").replacen(
        "admin:\n",
        &format!("admin:\n  access_log_path: {}\n", log.display()),
        1,
    );
    let up = Upstream::start("u1");
    let gw = Gateway::start(&yaml, &[up.addr], &[]);
    assert_eq!(gw.admin_get("/stats?filter=nothing").status, 200);
    assert_eq!(gw.admin_get("/no-such-page").status, 404);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("\"GET /stats HTTP/1.1\" 200"), "{text}");
    assert!(text.contains("\"GET /no-such-page HTTP/1.1\" 404"), "{text}");
}
