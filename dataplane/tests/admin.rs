//! The admin server over real sockets: spawn it on 127.0.0.1:0 with a loaded
//! config and a stats store written from two shard slots, and check Envoy's
//! endpoints, status codes and formats as a client (curl, Prometheus, a load
//! balancer's readiness probe) sees them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use dataplane::admin::{spawn_admin, AdminContext};
use dataplane::server::ServerState;
use dataplane::stats::{ClusterStats, HttpStats, ListenerStats, StatsStore};

const CONFIG: &str = r#"
node: { id: node-1, cluster: edge }
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
static_resources:
  listeners:
  - name: ingress
    address: { socket_address: { address: 0.0.0.0, port_value: 10000 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress_http
          route_config:
            name: r
            virtual_hosts:
            - name: vh
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: backend }
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: backend
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 9000 } } }
        - endpoint: { address: { socket_address: { address: 127.0.0.2, port_value: 9001 } } }
          load_balancing_weight: 3
"#;

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

fn request(addr: SocketAddr, method: &str, target: &str) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "{method} {target} HTTP/1.1\r\nhost: admin\r\nuser-agent: test\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete response head");
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect();
    let reply = Reply { status, headers, body: body.to_string() };
    if method != "HEAD" {
        let len: usize = reply.header("content-length").unwrap().parse().unwrap();
        assert_eq!(len, reply.body.len(), "content-length matches the body");
    }
    reply
}

fn get(addr: SocketAddr, target: &str) -> Reply {
    request(addr, "GET", target)
}

fn post(addr: SocketAddr, target: &str) -> Reply {
    request(addr, "POST", target)
}

struct Fixture {
    addr: SocketAddr,
    server: Arc<ServerState>,
    stats: Arc<StatsStore>,
    admin_thread: std::thread::JoinHandle<()>,
}

fn start() -> Fixture {
    let cfg = control::bootstrap::load_str(CONFIG, control::bootstrap::Format::Yaml, "test.yaml")
        .unwrap_or_else(|e| panic!("{e:?}"));
    let stats = StatsStore::new(2);
    let server = ServerState::new();
    // Two shards, each writing only its own slot, on their own threads.
    let shards: Vec<_> = (0..2)
        .map(|slot| {
            let stats = stats.clone();
            std::thread::spawn(move || {
                let http = HttpStats::new(&stats, "ingress_http", slot);
                let cluster = ClusterStats::new(&stats, "backend", slot);
                let listener = ListenerStats::new(&stats, "0.0.0.0_10000", slot);
                let host = stats.register_host("backend", "127.0.0.1:9000", 1, 0, slot);
                let n = 3 + slot as u64; // 3 on shard 0, 4 on shard 1
                for _ in 0..n {
                    listener.downstream_cx_total.inc();
                    http.downstream_rq_total.inc();
                    http.record_response_code(200);
                    http.downstream_rq_time.record_ms(2.0);
                    cluster.upstream_rq_total.inc();
                    host.rq_total.inc();
                    host.rq_success.inc();
                }
                listener.downstream_cx_active.inc();
                host.cx_total.inc();
                host.cx_active.inc();
                cluster.membership_total.set(2);
            })
        })
        .collect();
    shards.into_iter().for_each(|t| t.join().unwrap());
    let ctx = AdminContext {
        stats: stats.clone(),
        config: Arc::new(ArcSwap::from_pointee(cfg)),
        server: server.clone(),
        command_line: ["meshgate", "-c", "/etc/meshgate.yaml", "--concurrency", "2"].map(String::from).to_vec(),
        concurrency: 2,
    };
    let (addr, admin_thread) = spawn_admin("127.0.0.1:0".parse().unwrap(), ctx).unwrap();
    assert_ne!(addr.port(), 0);
    Fixture { addr, server, stats, admin_thread }
}

#[test]
fn admin_endpoints() {
    let f = start();
    let a = f.addr;

    // --- /ready and the health check switch ---
    let r = get(a, "/ready");
    assert_eq!((r.status, r.body.as_str()), (200, "LIVE\n"));
    assert_eq!(r.header("content-type"), Some("text/plain; charset=UTF-8"));
    let r = post(a, "/healthcheck/fail");
    assert_eq!((r.status, r.body.as_str()), (200, "OK\n"));
    let r = get(a, "/ready");
    assert_eq!((r.status, r.body.as_str()), (503, "DRAINING\n"));
    let info: serde_json::Value = serde_json::from_str(&get(a, "/server_info").body).unwrap();
    assert_eq!(info["state"], "DRAINING");
    assert!(get(a, "/stats").body.contains("server.live: 0\n"));
    let r = post(a, "/healthcheck/ok");
    assert_eq!((r.status, r.body.as_str()), (200, "OK\n"));
    assert_eq!(get(a, "/ready").status, 200);

    // Mutating endpoints want POST (Envoy: 405 with this exact text).
    for path in ["/healthcheck/fail", "/quitquitquit", "/drain_listeners"] {
        let r = get(a, path);
        assert_eq!(r.status, 405, "{path}");
        assert_eq!(r.body, "Method GET not allowed, POST required.");
    }
    assert_eq!(get(a, "/ready").status, 200, "a refused GET changed nothing");
    assert!(!f.server.shutdown_requested());

    // --- /stats: both shards' slots summed ---
    let r = get(a, "/stats");
    assert_eq!(r.status, 200);
    let body = &r.body;
    assert!(body.contains("http.ingress_http.downstream_rq_total: 7\n"), "{body}");
    assert!(body.contains("http.ingress_http.downstream_rq_2xx: 7\n"));
    assert!(body.contains("cluster.backend.upstream_rq_total: 7\n"));
    assert!(body.contains("cluster.backend.membership_total: 2\n"));
    assert!(body.contains("listener.0.0.0.0_10000.downstream_cx_total: 7\n"));
    assert!(body.contains("server.live: 1\n"));
    assert!(body.contains("server.concurrency: 2\n"));
    assert!(body.contains("server.total_connections: 2\n"));
    assert!(body.contains("http.ingress_http.downstream_rq_time: P0("), "{body}");
    assert!(body.contains("cluster.backend.upstream_rq_time: No recorded values\n"));
    let names: Vec<&str> = body
        .lines()
        .take_while(|l| !l.contains(": P0(") && !l.contains("No recorded"))
        .map(|l| l.split(':').next().unwrap())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "counters and gauges sorted by name");
    assert!(!body.contains("127.0.0.1"), "host stats stay out of /stats");

    let r = get(a, "/stats?filter=downstream_rq_total&usedonly");
    assert_eq!(r.body, "http.ingress_http.downstream_rq_total: 7\n");
    let r = get(a, "/stats?filter=%5Ecluster%5C.backend%5C.upstream_rq_(total%7Ctimeout)%24");
    assert_eq!(r.body, "cluster.backend.upstream_rq_timeout: 0\ncluster.backend.upstream_rq_total: 7\n");
    let r = get(a, "/stats?usedonly");
    assert!(!r.body.contains("upstream_rq_timeout"));
    assert!(!r.body.contains("cluster.backend.upstream_rq_time:"), "unused histogram hidden");
    assert_eq!(get(a, "/stats?filter=(").status, 400);
    assert_eq!(get(a, "/stats?format=xml").status, 400);

    let r = get(a, "/stats?format=json");
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let stats = v["stats"].as_array().unwrap();
    assert!(stats.iter().any(|s| s["name"] == "http.ingress_http.downstream_rq_total" && s["value"] == 7));
    let hist = stats.iter().find_map(|s| s.get("histograms")).unwrap();
    assert!(hist["computed_quantiles"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h["name"] == "http.ingress_http.downstream_rq_time"));

    // --- /stats/prometheus parses and carries the same numbers ---
    for target in ["/stats/prometheus", "/stats?format=prometheus"] {
        let r = get(a, target);
        assert_eq!(r.status, 200);
        let scrape = prometheus_parse::Scrape::parse(r.body.lines().map(|l| Ok(l.to_string()))).unwrap();
        let sample = scrape
            .samples
            .iter()
            .find(|s| {
                s.metric == "envoy_http_downstream_rq_total"
                    && s.labels.get("envoy_http_conn_manager_prefix") == Some("ingress_http")
            })
            .unwrap();
        assert_eq!(sample.value, prometheus_parse::Value::Counter(7.0));
        assert!(r.body.contains(
            "envoy_http_downstream_rq_xx{envoy_response_code_class=\"2\",envoy_http_conn_manager_prefix=\"ingress_http\"} 7\n"
        ));
        assert!(r.body.contains("# TYPE envoy_http_downstream_rq_time histogram\n"));
        assert!(r.body.contains("envoy_server_live 1\n"));
    }

    // --- /clusters ---
    let r = get(a, "/clusters");
    let body = &r.body;
    for line in [
        "backend::observability_name::backend\n",
        "backend::default_priority::max_connections::1024\n",
        "backend::high_priority::max_retries::3\n",
        "backend::added_via_api::false\n",
        "backend::127.0.0.1:9000::cx_active::2\n",
        "backend::127.0.0.1:9000::cx_total::2\n",
        "backend::127.0.0.1:9000::rq_success::7\n",
        "backend::127.0.0.1:9000::rq_total::7\n",
        "backend::127.0.0.1:9000::health_flags::healthy\n",
        "backend::127.0.0.1:9000::weight::1\n",
        "backend::127.0.0.1:9000::success_rate::-1\n",
        // A configured endpoint no shard has used yet is listed with zeros.
        "backend::127.0.0.2:9001::rq_total::0\n",
        "backend::127.0.0.2:9001::weight::3\n",
    ] {
        assert!(body.contains(line), "missing {line:?} in\n{body}");
    }
    let r = get(a, "/clusters?format=json");
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let c = &v["cluster_statuses"][0];
    assert_eq!(c["name"], "backend");
    assert_eq!(c["added_via_api"], false);
    let h = &c["host_statuses"][0];
    assert_eq!(h["address"]["socket_address"]["address"], "127.0.0.1");
    assert_eq!(h["address"]["socket_address"]["port_value"], 9000);
    assert_eq!(h["health_status"]["eds_health_status"], "HEALTHY");
    assert!(h["stats"].as_array().unwrap().iter().any(|s| s["name"] == "rq_total" && s["value"] == "7"));
    assert!(h["stats"].as_array().unwrap().iter().any(|s| s["name"] == "cx_active" && s["type"] == "GAUGE"));

    // --- /config_dump, /server_info, /listeners ---
    let r = get(a, "/config_dump");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let dump: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert!(dump["configs"].is_array(), "{dump}");
    assert!(r.body.contains("\n  "), "pretty-printed");

    let info: serde_json::Value = serde_json::from_str(&get(a, "/server_info").body).unwrap();
    assert_eq!(info["state"], "LIVE");
    assert_eq!(info["command_line_options"]["concurrency"], 2);
    assert_eq!(info["command_line_options"]["config_path"], "/etc/meshgate.yaml");
    assert_eq!(info["node"]["id"], "node-1");
    assert_eq!(info["node"]["cluster"], "edge");
    assert!(info["uptime_current_epoch"].as_str().unwrap().ends_with('s'));
    assert!(info["version"].as_str().unwrap().split('/').nth(1).is_some());

    assert_eq!(get(a, "/listeners").body, "ingress::0.0.0.0:10000\n");

    // --- help, 404, HEAD ---
    let r = get(a, "/help");
    assert!(r.body.starts_with("admin commands are:\n"));
    assert!(r.body.contains("  /quitquitquit: exit the server\n"));
    let r = get(a, "/nope");
    assert_eq!(r.status, 404);
    assert!(r.body.starts_with("invalid path. admin commands are:\n"), "{}", r.body);
    let r = request(a, "HEAD", "/ready");
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());

    // A client that sends nothing does not wedge admin for the others.
    let _idle = TcpStream::connect(a).unwrap();
    assert_eq!(get(a, "/ready").status, 200);
    // Garbage gets a 400.
    let mut s = TcpStream::connect(a).unwrap();
    s.write_all(b"NOT HTTP\x00\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 400 "), "{out}");

    // --- /quitquitquit releases the main thread ---
    let server = f.server.clone();
    let waiter = std::thread::spawn(move || server.wait_for_shutdown());
    let r = post(a, "/quitquitquit");
    assert_eq!((r.status, r.body.as_str()), (200, "OK\n"));
    waiter.join().unwrap();
    assert!(f.server.shutdown_requested());
    // Admin keeps serving while the process drains; /ready reports it.
    assert_eq!(get(a, "/ready").status, 503);

    f.server.stop_admin();
    f.admin_thread.join().unwrap();
    assert!(TcpStream::connect(a).is_err(), "listener closed after stop_admin");
    drop(f.stats);
}
