//! Unit tests for the stats store and its renderers.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use super::render::{self, Selection, TypeFilter};
use super::*;

fn http(p: &str) -> Scope {
    Scope::Http(p.to_string())
}

#[test]
fn shard_slots_sum_across_threads() {
    let store = StatsStore::new(4);
    let threads: Vec<_> = (0..4)
        .map(|slot| {
            let store = store.clone();
            std::thread::spawn(move || {
                let c = store.counter(&http("p"), "downstream_rq_total", slot);
                let g = store.gauge(&http("p"), "downstream_rq_active", slot);
                for _ in 0..100_000 {
                    c.inc();
                    g.inc();
                }
                for _ in 0..(slot * 1000) {
                    g.dec();
                }
                c.slot_value()
            })
        })
        .collect();
    let per_slot: Vec<u64> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(per_slot, vec![100_000; 4]);
    assert_eq!(store.counter_value("http.p.downstream_rq_total"), Some(400_000));
    assert_eq!(store.gauge_value("http.p.downstream_rq_active"), Some(400_000 - 6_000));
}

#[test]
fn control_slot_tolerates_many_writers() {
    let store = StatsStore::new(1);
    assert_eq!(store.control_slot(), 1);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let c = store.counter(&Scope::Named("control_plane".into()), "updates", store.control_slot());
            std::thread::spawn(move || {
                for _ in 0..50_000 {
                    c.inc();
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    assert_eq!(store.counter_value("control_plane.updates"), Some(200_000));
}

#[test]
#[should_panic(expected = "out of range")]
fn slot_out_of_range_panics() {
    let store = StatsStore::new(2);
    let _ = store.counter(&Scope::Server, "x", 3);
}

#[test]
fn registration_is_idempotent_by_name() {
    let store = StatsStore::new(2);
    let a = store.counter(&Scope::Cluster("c".into()), "upstream_rq_total", 0);
    let b = store.counter(&Scope::Cluster("c".into()), "upstream_rq_total", 1);
    a.add(2);
    b.add(3);
    assert_eq!(a.value(), 5);
    assert_eq!(b.value(), 5);
    assert_eq!(a.slot_value(), 2);
    // Whole groups too: registering twice (a new snapshot) yields the same stats.
    let h1 = HttpStats::new(&store, "ingress", 0);
    let h2 = HttpStats::new(&store, "ingress", 0);
    h1.downstream_rq_total.inc();
    h2.downstream_rq_total.inc();
    assert_eq!(h1.downstream_rq_total.value(), 2);
    let names: Vec<String> = store.snapshot().into_iter().map(|s| s.name).collect();
    assert_eq!(names.len(), 1 + HttpStats::LEAVES.len());
    let unique: HashSet<&String> = names.iter().collect();
    assert_eq!(unique.len(), names.len());
}

#[test]
#[should_panic(expected = "is a counter, not a gauge")]
fn type_clash_panics() {
    let store = StatsStore::new(1);
    let _ = store.counter(&Scope::Server, "live", 0);
    let _ = store.gauge(&Scope::Server, "live", 0);
}

#[test]
fn names_follow_envoy() {
    assert_eq!(http("ingress_http").stat_name("downstream_rq_total"), "http.ingress_http.downstream_rq_total");
    assert_eq!(Scope::Cluster("backend".into()).stat_name("upstream_rq_total"), "cluster.backend.upstream_rq_total");
    assert_eq!(Scope::Server.stat_name("live"), "server.live");
    assert_eq!(Scope::Named("cluster_manager".into()).stat_name("active_clusters"), "cluster_manager.active_clusters");
    let v4: SocketAddr = "0.0.0.0:10000".parse().unwrap();
    assert_eq!(Scope::listener(&v4).stat_name("downstream_cx_total"), "listener.0.0.0.0_10000.downstream_cx_total");
    let v6: SocketAddr = "[::1]:8080".parse().unwrap();
    assert_eq!(Scope::listener(&v6).stat_name("downstream_cx_total"), "listener.[__1]_8080.downstream_cx_total");
    // Envoy sanitises ':' in any scope name.
    assert_eq!(Scope::Cluster("outbound|80||a:b".into()).stat_name("x"), "cluster.outbound|80||a_b.x");

    let store = StatsStore::new(1);
    let l = ListenerStats::for_address(&store, &v4, 0);
    l.downstream_cx_total.inc();
    assert_eq!(store.counter_value("listener.0.0.0.0_10000.downstream_cx_total"), Some(1));
    let s = ServerStats::new(&store);
    s.live.set(1);
    assert_eq!(store.gauge_value("server.live"), Some(1));
}

#[test]
fn response_code_classes() {
    let store = StatsStore::new(1);
    let h = HttpStats::new(&store, "p", 0);
    for code in [100, 200, 204, 301, 404, 404, 503, 999] {
        h.record_response_code(code);
    }
    let c = ClusterStats::new(&store, "c", 0);
    c.record_response_code(502);
    let v = |n: &str| store.counter_value(n).unwrap();
    assert_eq!(v("http.p.downstream_rq_1xx"), 1);
    assert_eq!(v("http.p.downstream_rq_2xx"), 2);
    assert_eq!(v("http.p.downstream_rq_3xx"), 1);
    assert_eq!(v("http.p.downstream_rq_4xx"), 2);
    assert_eq!(v("http.p.downstream_rq_5xx"), 1);
    assert_eq!(v("cluster.c.upstream_rq_5xx"), 1);
}

#[test]
fn cluster_membership_lives_on_the_control_slot() {
    let store = StatsStore::new(2);
    let a = ClusterStats::new(&store, "c", 0);
    let b = ClusterStats::new(&store, "c", 1);
    a.membership_total.set(3);
    b.membership_total.set(3);
    assert_eq!(store.gauge_value("cluster.c.membership_total"), Some(3));
    a.upstream_cx_active.inc();
    b.upstream_cx_active.inc();
    assert_eq!(store.gauge_value("cluster.c.upstream_cx_active"), Some(2));
}

#[test]
fn gauge_used_flag() {
    let store = StatsStore::new(1);
    let g = store.gauge(&Scope::Server, "never", 0);
    let z = store.gauge(&Scope::Server, "zeroed", 0);
    let _c = store.counter(&Scope::Server, "unused_counter", 0);
    z.set(0);
    assert_eq!(g.value(), 0);
    let snap = store.snapshot();
    let used: Vec<&str> = snap.iter().filter(|s| s.used()).map(|s| s.name.as_str()).collect();
    assert_eq!(used, vec!["server.zeroed"]);
    let sel = Selection { used_only: true, ..Selection::default() };
    assert_eq!(sel.apply(&snap).len(), 1);
}

#[test]
fn histogram_buckets_and_quantiles() {
    let store = StatsStore::new(2);
    let h0 = store.histogram(&Scope::Cluster("c".into()), "upstream_rq_time", 0);
    let h1 = store.histogram(&Scope::Cluster("c".into()), "upstream_rq_time", 1);
    let empty = h0.snapshot();
    assert_eq!(empty.count, 0);
    assert!(empty.quantile(0.5).is_nan());
    assert_eq!(render::quantile_summary(&empty, None), "No recorded values");

    // 0.3 ms, 0.5 ms (boundary: `le` is inclusive), 2 ms, 2 ms on one shard;
    // 7 ms and 4000000 ms (overflow) on the other.
    h0.record_micros(300);
    h0.record_ms(0.5);
    h0.record_ms(2.0);
    h0.record(Duration::from_millis(2));
    h1.record_ms(7.0);
    h1.record_ms(4_000_000.0);
    h1.record_ms(-1.0); // clamps to 0
    let s = h1.snapshot();
    assert_eq!(s.count, 7);
    assert_eq!(s.buckets[0], 3, "0, 0.3 and 0.5 land in le=0.5");
    assert_eq!(s.buckets[2], 2, "2 ms lands in (1, 5]");
    assert_eq!(s.buckets[3], 1, "7 ms lands in (5, 10]");
    assert_eq!(s.buckets[NUM_BUCKETS - 1], 1, "overflow");
    assert_eq!(s.cumulative()[0], 3);
    assert_eq!(s.cumulative()[18], 6);
    assert!((s.sum_ms - 4_000_011.8).abs() < 1e-6, "{}", s.sum_ms);
    assert_eq!(s.min_ms, 0.0);
    assert_eq!(s.max_ms, 4_000_000.0);
    assert_eq!(s.quantile(0.0), 0.0);
    assert_eq!(s.quantile(1.0), 4_000_000.0);
    // rank 3.5 of 7 → the (1, 5] bucket holds ranks 3..5; halfway-ish in it.
    let p50 = s.quantile(0.5);
    assert!((p50 - 2.0).abs() < 1e-9, "p50 = {p50}");
    // Quantiles never leave [min, max] and never decrease.
    let qs: Vec<f64> = SUPPORTED_QUANTILES.iter().map(|q| s.quantile(*q)).collect();
    assert!(qs.windows(2).all(|w| w[0] <= w[1]), "{qs:?}");
    let summary = render::quantile_summary(&s, None);
    assert!(summary.starts_with("P0(nan,0) P25(nan,"), "{summary}");
    assert!(summary.ends_with(" P100(nan,4000000)"), "{summary}");
    assert_eq!(summary.matches('P').count(), 10);
}

#[test]
fn quantiles_of_a_single_value_are_that_value() {
    let store = StatsStore::new(1);
    let h = store.histogram(&Scope::Server, "t", 0);
    for _ in 0..10 {
        h.record_ms(42.0);
    }
    let s = h.snapshot();
    for q in SUPPORTED_QUANTILES {
        assert_eq!(s.quantile(q), 42.0, "q={q}");
    }
}

#[test]
fn interval_flush() {
    let store = StatsStore::new(1);
    let h = store.histogram(&Scope::Server, "t", 0);
    h.record_ms(1.0);
    store.flush_interval();
    assert!(store.intervals().is_empty(), "no interval before the second flush");
    h.record_ms(100.0);
    h.record_ms(100.0);
    store.flush_interval();
    let iv = store.intervals().remove("server.t").unwrap();
    assert_eq!(iv.count, 2);
    // The interval's own min/max are not tracked: its values are located to
    // their bucket, (50, 100], and clamped to the all-time [min, max].
    assert_eq!(iv.quantile(1.0), 100.0);
    assert!((50.0..=100.0).contains(&iv.quantile(0.5)));
    let text = render::text(&store.snapshot().iter().collect::<Vec<_>>(), &store.intervals());
    assert!(text.contains("server.t: P0(50,1) "), "{text}");
}

#[test]
fn hosts_register_idempotently_and_retain() {
    let store = StatsStore::new(2);
    let a0 = store.register_host("c", "10.0.0.1:80", 1, 0, 0);
    let a1 = store.register_host("c", "10.0.0.1:80", 5, 1, 1);
    let _b = store.register_host_named("c", "10.0.0.2:80", "b.example", 1, 0, 0);
    a0.rq_total.inc();
    a1.rq_total.add(2);
    a1.cx_active.inc();
    let hosts = store.hosts("c");
    assert_eq!(hosts.len(), 2);
    assert_eq!(hosts[0].address, "10.0.0.1:80");
    assert_eq!((hosts[0].weight, hosts[0].priority), (5, 1));
    let stats: HashMap<&str, u64> = hosts[0].stats.iter().map(|(n, v, _)| (*n, *v)).collect();
    assert_eq!(stats["rq_total"], 3);
    assert_eq!(stats["cx_active"], 1);
    assert_eq!(hosts[1].hostname, "b.example");
    // Host stats stay out of /stats.
    assert!(store.snapshot().is_empty());
    store.retain_hosts("c", &["10.0.0.2:80".to_string()]);
    assert_eq!(store.hosts("c").len(), 1);
    assert!(store.hosts("other").is_empty());
}

#[test]
fn text_is_sorted_with_histograms_last() {
    let store = StatsStore::new(1);
    store.counter(&Scope::Cluster("b".into()), "upstream_rq_total", 0).add(4);
    store.gauge(&Scope::Server, "live", 0).set(1);
    store.counter(&http("a"), "downstream_rq_total", 0).add(7);
    store.histogram(&http("a"), "downstream_rq_time", 0);
    let snap = store.snapshot();
    let text = render::text(&snap.iter().collect::<Vec<_>>(), &BTreeMap::new());
    assert_eq!(
        text,
        "cluster.b.upstream_rq_total: 4\n\
         http.a.downstream_rq_total: 7\n\
         server.live: 1\n\
         http.a.downstream_rq_time: No recorded values\n"
    );
    let sel = Selection { filter: Some(regex::Regex::new("rq_total$").unwrap()), ..Selection::default() };
    let text = render::text(&sel.apply(&snap), &BTreeMap::new());
    assert_eq!(text, "cluster.b.upstream_rq_total: 4\nhttp.a.downstream_rq_total: 7\n");
    let sel = Selection { types: TypeFilter::Gauges, ..Selection::default() };
    assert_eq!(render::text(&sel.apply(&snap), &BTreeMap::new()), "server.live: 1\n");
}

#[test]
fn json_shape() {
    let store = StatsStore::new(1);
    store.counter(&http("a"), "downstream_rq_total", 0).add(7);
    store.gauge(&Scope::Server, "live", 0).set(1);
    let h = store.histogram(&http("a"), "downstream_rq_time", 0);
    h.record_ms(3.0);
    let snap = store.snapshot();
    let v = render::json(&snap.iter().collect::<Vec<_>>(), &BTreeMap::new());
    let text = serde_json::to_string(&v).unwrap();
    let back: serde_json::Value = serde_json::from_str(&text).unwrap();
    let stats = back["stats"].as_array().unwrap();
    assert_eq!(stats[0], serde_json::json!({"name": "http.a.downstream_rq_total", "value": 7}));
    assert_eq!(stats[1], serde_json::json!({"name": "server.live", "value": 1}));
    let hist = &stats[2]["histograms"];
    assert_eq!(hist["supported_quantiles"][7], serde_json::json!(99.5));
    assert_eq!(hist["supported_quantiles"][0], serde_json::json!(0));
    let cq = &hist["computed_quantiles"][0];
    assert_eq!(cq["name"], "http.a.downstream_rq_time");
    assert_eq!(cq["values"][0], serde_json::json!({"interval": null, "cumulative": 3.0}));
}

// ---------------------------------------------------------------------------
// Prometheus
// ---------------------------------------------------------------------------

#[test]
fn prometheus_names_and_tags() {
    let n = |scope: Scope, leaf: &str| {
        let (name, labels) = render::prometheus_name(&scope, leaf);
        let labels: Vec<String> = labels.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        (name, labels.join(","))
    };
    assert_eq!(
        n(http("ingress"), "downstream_rq_total"),
        ("envoy_http_downstream_rq_total".into(), "envoy_http_conn_manager_prefix=ingress".into())
    );
    assert_eq!(
        n(http("ingress"), "downstream_rq_2xx"),
        (
            "envoy_http_downstream_rq_xx".into(),
            "envoy_response_code_class=2,envoy_http_conn_manager_prefix=ingress".into()
        )
    );
    assert_eq!(
        n(Scope::Cluster("be".into()), "upstream_rq_5xx"),
        ("envoy_cluster_upstream_rq_xx".into(), "envoy_response_code_class=5,envoy_cluster_name=be".into())
    );
    assert_eq!(
        n(Scope::Listener("0.0.0.0_10000".into()), "downstream_cx_total"),
        ("envoy_listener_downstream_cx_total".into(), "envoy_listener_address=0.0.0.0_10000".into())
    );
    assert_eq!(n(Scope::Server, "live"), ("envoy_server_live".into(), String::new()));
    assert_eq!(
        n(Scope::Named("cluster_manager".into()), "active_clusters"),
        ("envoy_cluster_manager_active_clusters".into(), String::new())
    );
    // Dotted leaves (filter namespaces) become underscores.
    assert_eq!(n(http("p"), "rbac.allowed").0, "envoy_http_rbac_allowed");
    // Not a class: the digit must follow `_rq_`.
    assert_eq!(n(http("p"), "foo_2xx").0, "envoy_http_foo_2xx");
}

/// Checks what prometheus-parse is too lenient to check: every sample line
/// belongs to the family of the nearest `# TYPE` above it, no family is
/// declared twice, and every name is legal.
fn check_exposition_structure(page: &str) {
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !n.starts_with(|c: char| c.is_ascii_digit())
    };
    let mut declared = HashSet::new();
    let mut current: Option<(String, String)> = None;
    for line in page.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(name_ok(name), "bad family name {name}");
            assert!(declared.insert(name.to_string()), "family {name} declared twice");
            assert!(["counter", "gauge", "histogram"].contains(&kind));
            current = Some((name.to_string(), kind.to_string()));
            continue;
        }
        let (fam, kind) = current.as_ref().expect("sample before any # TYPE");
        let metric = line.split(['{', ' ']).next().unwrap();
        assert!(name_ok(metric), "bad metric {metric}");
        let allowed: Vec<String> = if kind == "histogram" {
            ["_bucket", "_sum", "_count"].iter().map(|s| format!("{fam}{s}")).collect()
        } else {
            vec![fam.clone()]
        };
        assert!(allowed.contains(&metric.to_string()), "{metric} outside its family {fam}");
        let value = line.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "bad value in {line}");
    }
}

fn parse_page(page: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(page.lines().map(|l| Ok(l.to_string()))).unwrap()
}

#[test]
fn prometheus_page_parses_and_matches() {
    let store = StatsStore::new(2);
    for (prefix, slot, n) in [("ingress", 0, 3u64), ("ingress", 1, 4), ("egress", 0, 5)] {
        let h = HttpStats::new(&store, prefix, slot);
        h.downstream_rq_total.add(n);
        h.downstream_cx_active.add(n as i64);
        for _ in 0..n {
            h.record_response_code(200);
        }
        h.record_response_code(503);
        h.downstream_rq_time.record_ms(n as f64);
    }
    let c = ClusterStats::new(&store, "backend", 1);
    c.upstream_rq_total.add(9);
    c.record_response_code(404);
    c.upstream_rq_time.record_ms(0.2);
    c.upstream_rq_time.record_ms(30.0);
    let l = ListenerStats::new(&store, "0.0.0.0_10000", 0);
    l.downstream_cx_total.add(2);
    ServerStats::new(&store).live.set(1);

    let snap = store.snapshot();
    let page = render::prometheus(&snap.iter().collect::<Vec<_>>());
    check_exposition_structure(&page);
    assert!(page.contains("# TYPE envoy_http_downstream_rq_xx counter\n"));
    assert!(page.contains(
        "envoy_http_downstream_rq_xx{envoy_response_code_class=\"2\",envoy_http_conn_manager_prefix=\"ingress\"} 7\n"
    ));
    assert!(page.contains("envoy_server_live 1\n"));
    assert!(page.contains("envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"backend\",le=\"0.5\"} 1\n"));
    assert!(page.contains("envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"backend\",le=\"3600000\"} 2\n"));
    assert!(page.contains("envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"backend\",le=\"+Inf\"} 2\n"));
    assert!(page.contains("envoy_cluster_upstream_rq_time_sum{envoy_cluster_name=\"backend\"} 30.2\n"));
    assert!(page.contains("envoy_cluster_upstream_rq_time_count{envoy_cluster_name=\"backend\"} 2\n"));

    let scrape = parse_page(&page);
    let find = |metric: &str, labels: &[(&str, &str)]| -> &prometheus_parse::Sample {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .unwrap_or_else(|| panic!("no {metric} {labels:?}"))
    };
    use prometheus_parse::Value as V;
    let p = "envoy_http_conn_manager_prefix";
    assert_eq!(find("envoy_http_downstream_rq_total", &[(p, "ingress")]).value, V::Counter(7.0));
    assert_eq!(find("envoy_http_downstream_rq_total", &[(p, "egress")]).value, V::Counter(5.0));
    assert_eq!(find("envoy_http_downstream_cx_active", &[(p, "ingress")]).value, V::Gauge(7.0));
    assert_eq!(
        find("envoy_http_downstream_rq_xx", &[(p, "ingress"), ("envoy_response_code_class", "5")]).value,
        V::Counter(2.0)
    );
    assert_eq!(
        find("envoy_cluster_upstream_rq_xx", &[("envoy_cluster_name", "backend"), ("envoy_response_code_class", "4")])
            .value,
        V::Counter(1.0)
    );
    assert_eq!(
        find("envoy_listener_downstream_cx_total", &[("envoy_listener_address", "0.0.0.0_10000")]).value,
        V::Counter(2.0)
    );
    assert_eq!(find("envoy_server_live", &[]).value, V::Gauge(1.0));
    match &find("envoy_http_downstream_rq_time", &[(p, "ingress")]).value {
        V::Histogram(buckets) => {
            assert_eq!(buckets.len(), 20);
            let le5 = buckets.iter().find(|b| b.less_than == 5.0).unwrap();
            assert_eq!(le5.count, 2.0, "3 ms and 4 ms");
            let inf = buckets.iter().find(|b| b.less_than.is_infinite()).unwrap();
            assert_eq!(inf.count, 2.0);
            assert!(buckets.windows(2).all(|w| w[0].count <= w[1].count), "cumulative");
        }
        other => panic!("not a histogram: {other:?}"),
    }
    assert_eq!(find("envoy_http_downstream_rq_time_sum", &[(p, "ingress")]).value, V::Untyped(7.0));
    assert_eq!(find("envoy_http_downstream_rq_time_count", &[(p, "egress")]).value, V::Untyped(1.0));

    // Every stat of the store made it onto the page exactly once.
    let families = page.lines().filter(|l| l.starts_with("# TYPE")).count();
    let distinct: HashSet<String> = snap.iter().map(|s| render::prometheus_name(&s.scope, &s.leaf).0).collect();
    assert_eq!(families, distinct.len());
}

#[test]
fn prometheus_escapes_label_values_and_omits_empty_braces() {
    let store = StatsStore::new(1);
    store.counter(&Scope::Cluster("we\"ird\\name".into()), "upstream_rq_total", 0).inc();
    store.histogram(&Scope::Server, "initialization_time_ms", 0).record_ms(12.0);
    let snap = store.snapshot();
    let page = render::prometheus(&snap.iter().collect::<Vec<_>>());
    check_exposition_structure(&page);
    assert!(page.contains("envoy_cluster_upstream_rq_total{envoy_cluster_name=\"we\\\"ird\\\\name\"} 1\n"), "{page}");
    assert!(page.contains("envoy_server_initialization_time_ms_bucket{le=\"0.5\"} 0\n"));
    assert!(page.contains("envoy_server_initialization_time_ms_sum 12\n"));
    assert!(page.contains("envoy_server_initialization_time_ms_count 1\n"));
    parse_page(&page);
}

#[test]
fn group_leaves_are_envoy_shaped() {
    // Leaves are plain snake_case identifiers (they become metric names).
    for leaf in
        HttpStats::LEAVES.iter().chain(ClusterStats::LEAVES).chain(ListenerStats::LEAVES).chain(ServerStats::LEAVES)
    {
        assert!(leaf.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'), "{leaf}");
    }
    assert!(HttpStats::LEAVES.contains(&"downstream_rq_total"));
    assert!(ClusterStats::LEAVES.contains(&"upstream_rq_time"));
    let store = StatsStore::new(3);
    let _ = ClusterStats::new(&store, "x", 2);
    let snap = store.snapshot();
    assert_eq!(snap.len(), ClusterStats::LEAVES.len());
    assert!(snap.iter().all(|s| s.name.starts_with("cluster.x.")));
    let _ = Arc::clone(&store);
}
