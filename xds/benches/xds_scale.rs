//! xDS at scale: how long an update takes from the moment its
//! `DiscoveryResponse` has arrived to the moment a shard serves it, and
//! what the control thread keeps in memory.
//!
//! Two parts, timed separately because they run on different threads:
//!
//! * **control thread**: `AdsState::on_response` — decode, allowlist check,
//!   translation, whole-config validation, producing the `Arc<Config>` that
//!   is published (the `ArcSwap` store itself is one pointer swap);
//! * **each shard**: rebuilding what the change invalidates — the
//!   `RouteTable` of a listener whose routes changed, a `ClusterRuntime`
//!   per changed cluster (shards do this in parallel, one per core).
//!
//! Scales: a RouteConfiguration of 10 / 1,000 / 10,000 routes, and 1,000
//! EDS clusters with 10 endpoints each (full push, then one assignment
//! changing).  Memory, two ways.  **Control thread**: the bytes its work
//! holds, counted by an instrumented global allocator (`stats_alloc`):
//! bytes allocated minus bytes freed, from creating the `AdsState` to after
//! the case's updates, with the last published `Config` held (decoded
//! resources, their JSON for `/config_dump`, the translation cache, the
//! config).  The first part runs on the main thread with no other thread
//! alive, so every counted byte is the control thread's; the shards'
//! rebuilds it times are excluded (measured apart or dropped before
//! counting).  Peak = the largest held value seen after an update (the
//! transient inside one update, old and new config together, is not
//! sampled).  **Process**: growth of RSS (an upper bound, allocator slack
//! included).
//!
//! A third part measures publication end to end with real shards
//! (`dataplane::shard`, two of them): from the moment a `DiscoveryResponse`
//! is handed to the state machine to the moment every shard reports
//! (`server.worker_<i>.config_generation`) that it serves the new config.
//!
//! Run: `cargo bench -p xds --bench xds_scale` (release profile).

use std::alloc::System;
use std::sync::Arc;
use std::time::{Duration, Instant};

use control::model;
use dataplane::router::RouteTable;
use dataplane::stats::StatsStore;
use dataplane::upstream::ClusterRuntime;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
use envoy_types::pb::google::protobuf::Any;
use serde_json::json;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use xds::state::{AdsState, Kind};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Bytes allocated and not yet freed since `region` started (stats_alloc
/// already folds reallocations into both counters).
fn held(region: &Region<'_, System>) -> i64 {
    let c = region.change();
    c.bytes_allocated as i64 - c.bytes_deallocated as i64
}

fn mib(bytes: i64) -> String {
    format!("{:.1}", bytes as f64 / (1024.0 * 1024.0))
}

const HCM: &str = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

fn base() -> Arc<model::Config> {
    let text = r#"
dynamic_resources:
  ads_config: { api_type: GRPC, grpc_services: [{ envoy_grpc: { cluster_name: xds }}] }
  lds_config: { ads: {} }
  cds_config: { ads: {} }
static_resources:
  clusters:
  - name: xds
    load_assignment:
      cluster_name: xds
      endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 18000 }}}}]}]
"#;
    Arc::new(control::bootstrap::load_str(text, control::bootstrap::Format::Yaml, "bench").unwrap())
}

fn response(kind: Kind, version: &str, resources: Vec<serde_json::Value>) -> DiscoveryResponse {
    DiscoveryResponse {
        version_info: version.into(),
        nonce: version.into(),
        type_url: kind.type_url(),
        resources: resources
            .into_iter()
            .map(|r| Any {
                type_url: kind.type_url(),
                value: control::bootstrap::dynamic::encode_json(kind.full_name(), &r).unwrap(),
            })
            .collect(),
        ..Default::default()
    }
}

fn routes(n: usize, version: usize) -> serde_json::Value {
    let routes: Vec<_> = (0..n)
        .map(|i| json!({"match": {"prefix": format!("/svc{i}/v{version}")}, "route": {"cluster": format!("c{}", i % 1000)}}))
        .collect();
    json!({"name": "routes", "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]})
}

fn listener() -> serde_json::Value {
    json!({"name": "main", "address": {"socket_address": {"address": "127.0.0.1", "port_value": 10000}},
      "filter_chains": [{"filters": [{"name": "hcm", "typed_config": {
        "@type": format!("type.googleapis.com/{HCM}"), "stat_prefix": "main",
        "rds": {"route_config_name": "routes", "config_source": {"ads": {}}},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}]})
}

fn cla(name: &str, version: usize) -> serde_json::Value {
    let eps: Vec<_> = (0..10)
        .map(|j| json!({"endpoint": {"address": {"socket_address": {"address": format!("10.{}.{}.{}", version % 200, j, 1), "port_value": 8000 + j}}}}))
        .collect();
    json!({"cluster_name": name, "endpoints": [{"lb_endpoints": eps}]})
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

/// Median of `runs` timings of `f`.
fn median(runs: usize, mut f: impl FnMut(usize) -> Duration) -> Duration {
    let mut v: Vec<Duration> = (0..runs).map(&mut f).collect();
    v.sort();
    v[v.len() / 2]
}

/// Two real shards serving `config`; returns them with the store their
/// `server.worker_<i>.config_generation` gauges live in.
fn shards(config: &Arc<arc_swap::ArcSwap<model::Config>>) -> (Arc<StatsStore>, Running) {
    let stats = StatsStore::new(SHARDS);
    let server = dataplane::server::ServerState::new();
    let shared = Arc::new(dataplane::shard::Shared {
        config: config.clone(),
        stats: stats.clone(),
        server: server.clone(),
        dns: Arc::new(dataplane::dns::DnsResults::default()),
    });
    let handles = (0..SHARDS)
        .map(|i| dataplane::shard::spawn_shard(i, None, shared.clone(), Duration::from_secs(1)).unwrap())
        .collect();
    (stats, Running { server, handles })
}

struct Running {
    server: Arc<dataplane::server::ServerState>,
    handles: Vec<dataplane::shard::ShardHandle>,
}

impl Running {
    fn stop(self) {
        self.server.start_draining();
        self.handles.iter().for_each(|h| h.wake());
        self.handles.into_iter().for_each(|h| h.join());
    }
}

const SHARDS: usize = 2;

/// Hands `response` to the state machine, publishes, wakes the shards, and
/// waits until every shard serves the new generation: the elapsed time.
fn until_every_shard_serves(
    s: &mut AdsState,
    response: DiscoveryResponse,
    config: &arc_swap::ArcSwap<model::Config>,
    stats: &StatsStore,
    shards: &[dataplane::shard::ShardHandle],
) -> Duration {
    let t = Instant::now();
    let step = s.on_response(response, Instant::now());
    assert!(step.requests.iter().all(|r| r.error_detail.is_none()));
    let cfg = step.publish.expect("accepted");
    let version = cfg.version as i64;
    config.store(cfg);
    shards.iter().for_each(|h| h.wake());
    let names: Vec<String> = (0..SHARDS).map(|i| format!("server.worker_{i}.config_generation")).collect();
    while !names.iter().all(|n| stats.gauge_value(n) == Some(version)) {
        std::thread::yield_now();
    }
    t.elapsed()
}

fn publication_to_shards() {
    println!();
    println!("| case | update received → every shard ({SHARDS}) serving it (ms, median of 5) | process RSS growth (MiB, shards included) |");
    println!("|---|---|---|");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut l = listener();
    l["address"]["socket_address"]["port_value"] = json!(port);
    for n in [10usize, 1_000, 10_000] {
        let config = Arc::new(arc_swap::ArcSwap::new(base()));
        let (stats, running) = shards(&config);
        let rss0 = rss_kib();
        let mut s = AdsState::new(base(), Default::default(), Instant::now());
        s.stream_started();
        s.on_response(response(Kind::Listener, "l1", vec![l.clone()]), Instant::now());
        let d = median(5, |i| {
            let r = response(Kind::RouteConfiguration, &format!("r{i}"), vec![routes(n, i)]);
            until_every_shard_serves(&mut s, r, &config, &stats, &running.handles)
        });
        let rss = rss_kib().saturating_sub(rss0) as f64 / 1024.0;
        println!("| RDS, {n} routes | {} | {rss:.1} |", ms(d));
        running.stop();
    }
    let config = Arc::new(arc_swap::ArcSwap::new(base()));
    let (stats, running) = shards(&config);
    let rss0 = rss_kib();
    let mut s = AdsState::new(base(), Default::default(), Instant::now());
    s.stream_started();
    let clusters: Vec<_> = (0..1000)
        .map(|i| json!({"name": format!("c{i}"), "type": "EDS", "eds_cluster_config": {"eds_config": {"ads": {}}}}))
        .collect();
    s.on_response(response(Kind::Cluster, "c1", clusters), Instant::now());
    let full = median(5, |i| {
        let all = response(
            Kind::ClusterLoadAssignment,
            &format!("e{i}"),
            (0..1000).map(|c| cla(&format!("c{c}"), i)).collect(),
        );
        until_every_shard_serves(&mut s, all, &config, &stats, &running.handles)
    });
    let rss = rss_kib().saturating_sub(rss0) as f64 / 1024.0;
    println!("| EDS, 1,000 clusters × 10 endpoints, every assignment changes | {} | {rss:.1} |", ms(full));
    let one = median(5, |i| {
        let r = response(Kind::ClusterLoadAssignment, &format!("e1-{i}"), vec![cla("c7", 100 + i)]);
        until_every_shard_serves(&mut s, r, &config, &stats, &running.handles)
    });
    println!("| EDS, 1 of 1,000 clusters changes | {} | |", ms(one));
    running.stop();
}

fn main() {
    run_parts();
    publication_to_shards();
}

fn run_parts() {
    let store = StatsStore::new(1);
    println!("| case | control thread: response → published config (ms) | shard: rebuild (ms) | control thread memory held / peak (MiB) | RSS growth (MiB) |");
    println!("|---|---|---|---|---|");
    for n in [10usize, 1_000, 10_000] {
        let rss0 = rss_kib();
        let region = Region::new(GLOBAL);
        let mut peak = 0;
        let mut s = AdsState::new(base(), Default::default(), Instant::now());
        s.stream_started();
        s.on_response(response(Kind::Listener, "l1", vec![listener()]), Instant::now());
        let mut last = None;
        let control = median(5, |i| {
            let r = response(Kind::RouteConfiguration, &format!("r{i}"), vec![routes(n, i)]);
            let t = Instant::now();
            let step = s.on_response(r, Instant::now());
            let d = t.elapsed();
            assert!(step.requests[0].error_detail.is_none());
            drop(last.take()); // the previous config goes before the sample
            last = step.publish;
            drop(step.requests);
            peak = peak.max(held(&region));
            d
        });
        let control_held = held(&region);
        let cfg = last.unwrap();
        let rc = cfg.listeners[0].http.route_config.clone();
        let shard = median(5, |_| {
            let t = Instant::now();
            std::hint::black_box(RouteTable::new(&rc));
            t.elapsed()
        });
        let rss = rss_kib().saturating_sub(rss0) as f64 / 1024.0;
        println!(
            "| RDS, {n} routes | {} | {} (route table) | {} / {} | {rss:.1} |",
            ms(control),
            ms(shard),
            mib(control_held),
            mib(peak)
        );
        drop(s);
    }

    let rss0 = rss_kib();
    let region = Region::new(GLOBAL);
    let mut s = AdsState::new(base(), Default::default(), Instant::now());
    s.stream_started();
    let clusters: Vec<_> = (0..1000)
        .map(|i| json!({"name": format!("c{i}"), "type": "EDS", "eds_cluster_config": {"eds_config": {"ads": {}}}}))
        .collect();
    let t = Instant::now();
    s.on_response(response(Kind::Cluster, "c1", clusters), Instant::now());
    let cds = t.elapsed();
    let cds_held = held(&region);
    let all = response(Kind::ClusterLoadAssignment, "e1", (0..1000).map(|i| cla(&format!("c{i}"), 1)).collect());
    let t = Instant::now();
    let step = s.on_response(all, Instant::now());
    let eds_full = t.elapsed();
    let cfg = step.publish.unwrap();
    drop(step.requests);
    assert_eq!(cfg.clusters.len(), 1001);
    let full_held = held(&region);
    let runtimes_region = Region::new(GLOBAL);
    let t = Instant::now();
    let runtimes: Vec<_> = cfg.clusters.values().map(|c| ClusterRuntime::new(c.clone(), &store, 0, None)).collect();
    let shard_full = t.elapsed();
    let runtimes_held = held(&runtimes_region);
    let rss = rss_kib().saturating_sub(rss0) as f64 / 1024.0;
    println!("| CDS, 1,000 EDS clusters (warming) | {} | — | {} | |", ms(cds), mib(cds_held));
    println!(
        "| EDS, 1,000 clusters × 10 endpoints, full push | {} | {} (1,000 cluster runtimes; {} MiB, one shard) | {} | {rss:.1} |",
        ms(eds_full),
        ms(shard_full),
        mib(runtimes_held),
        mib(full_held)
    );
    drop(cfg);
    let mut peak = held(&region) - runtimes_held;
    // Steady state: one assignment changes among 1,000 (the others keep
    // their translation and their runtime).
    let mut changed = None;
    let one = median(5, |i| {
        let r = response(Kind::ClusterLoadAssignment, &format!("e{}", i + 2), vec![cla("c7", i + 2)]);
        let t = Instant::now();
        let step = s.on_response(r, Instant::now());
        let d = t.elapsed();
        drop(changed.take());
        changed = step.publish;
        drop(step.requests);
        peak = peak.max(held(&region) - runtimes_held);
        d
    });
    let steady_held = held(&region) - runtimes_held;
    let c7 = changed.unwrap().clusters["c7"].clone();
    let shard_one = median(5, |_| {
        let t = Instant::now();
        std::hint::black_box(ClusterRuntime::new(c7.clone(), &store, 0, None));
        t.elapsed()
    });
    println!(
        "| EDS, 1 of 1,000 clusters changes | {} | {} (1 cluster runtime) | {} / {} | |",
        ms(one),
        ms(shard_one),
        mib(steady_held),
        mib(peak)
    );
    drop(runtimes);
}
