//! End-to-end request mirroring (`request_mirror_policies`) through a real
//! `meshgate`: the sampled share of requests reaches the shadow cluster
//! with the `-shadow` Host suffix (and small bodies intact), while the
//! primary (a real `mg-upstream`) answers every request whether the shadow
//! is healthy, down, or hanging.
//!
//! The shadow is a small recording HTTP/1.1 server in this file, so the
//! test sees exactly what was mirrored.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use testkit::{Client, Gateway, Upstream};

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    host: String,
    body: Vec<u8>,
}

/// A shadow upstream that records requests and answers 200 (or never answers).
struct Shadow {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Shadow {
    fn start(answer: bool) -> Shadow {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let record = record.clone();
                std::thread::spawn(move || serve(stream, record, answer));
            }
        });
        Shadow { addr, seen }
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Waits until the count stops moving (mirrors are asynchronous).
    fn settled_count(&self) -> usize {
        let mut last = self.count();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            std::thread::sleep(Duration::from_millis(300));
            let now = self.count();
            if now == last || Instant::now() > deadline {
                return now;
            }
            last = now;
        }
    }
}

fn serve(stream: TcpStream, record: Arc<Mutex<Vec<Seen>>>, answer: bool) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
        let (mut host, mut length) = (String::new(), 0usize);
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((n, v)) = h.split_once(':') {
                match n.trim().to_ascii_lowercase().as_str() {
                    "host" => host = v.trim().to_string(),
                    "content-length" => length = v.trim().parse().unwrap_or(0),
                    _ => {}
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        record.lock().unwrap().push(Seen { method, path, host, body });
        if !answer {
            // Hang: hold the connection, never answer.
            std::thread::sleep(Duration::from_secs(60));
            return;
        }
        if out.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nshadow").is_err() {
            return;
        }
    }
}

fn config(mirror: &str, route_extra: &str) -> String {
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
          route_config:
            name: local
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route:
                  cluster: backend
{route_extra}                  request_mirror_policies:
{mirror}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
  clusters:
  - name: backend
    connect_timeout: 1s
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: "{{{{UPSTREAM_1}}}}", port_value: {{{{UPSTREAM_1_PORT}}}} }} }} }}
  - name: shadow
    connect_timeout: 0.5s
    load_assignment:
      cluster_name: shadow
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: "{{{{UPSTREAM_2}}}}", port_value: {{{{UPSTREAM_2_PORT}}}} }} }} }}
"#
    )
}

#[test]
fn mirrors_the_sampled_share_with_the_shadow_host_and_body() {
    let up = Upstream::start("up");
    let shadow = Shadow::start(true);
    let mirror = "                  - cluster: shadow\n                    runtime_fraction: { runtime_key: m, default_value: { numerator: 50 } }";
    let gw = Gateway::start(&config(mirror, ""), &[up.addr, shadow.addr], &[]);
    const TOTAL: usize = 2_000;
    let mut c = Client::connect(gw.listener_addr);
    for i in 0..TOTAL {
        let r = c.request("GET", &format!("/item/{i}"), &[("host", "shop.example:8080")], b"");
        assert_eq!(r.status, 200);
        assert_eq!(r.body_str(), "hello from up\n", "the primary's response reaches the client");
    }
    let mirrored = shadow.settled_count();
    let share = mirrored as f64 / TOTAL as f64;
    eprintln!("mirrored {mirrored} of {TOTAL} ({share:.3})");
    assert!((share - 0.5).abs() <= 0.04, "mirrored share {share}");
    let seen = shadow.seen.lock().unwrap().clone();
    assert!(seen.iter().all(|s| s.host == "shop.example-shadow:8080"), "host: {:?}", seen[0]);
    assert!(seen.iter().all(|s| s.method == "GET" && s.path.starts_with("/item/")));
    assert_eq!(
        gw.wait_stat("cluster.shadow.upstream_rq_completed", mirrored as u64, Duration::from_secs(5)),
        mirrored as u64
    );
    assert_eq!(gw.stat("cluster.backend.upstream_rq_completed"), TOTAL as u64);
}

#[test]
fn small_bodies_are_mirrored_and_the_suffix_can_be_disabled() {
    let up = Upstream::start("up");
    let shadow = Shadow::start(true);
    let mirror = "                  - cluster: shadow\n                    disable_shadow_host_suffix_append: true";
    let gw = Gateway::start(&config(mirror, ""), &[up.addr, shadow.addr], &[]);
    let mut c = Client::connect(gw.listener_addr);
    let body = b"{\"order\": 42}";
    let r = c.request("POST", "/upload", &[("host", "shop.example"), ("content-type", "application/json")], body);
    assert_eq!(r.status, 200);
    assert_eq!(shadow.settled_count(), 1);
    let seen = shadow.seen.lock().unwrap()[0].clone();
    assert_eq!((seen.method.as_str(), seen.path.as_str(), seen.host.as_str()), ("POST", "/upload", "shop.example"));
    assert_eq!(seen.body, body);
}

#[test]
fn primary_unaffected_when_the_shadow_is_down() {
    let up = Upstream::start("up");
    let down = testkit::closed_addr();
    let mirror = "                  - cluster: shadow";
    let gw = Gateway::start(&config(mirror, ""), &[up.addr, down], &[]);
    let mut c = Client::connect(gw.listener_addr);
    for _ in 0..200 {
        assert_eq!(c.get("/").status, 200);
    }
    assert_eq!(gw.stat("cluster.backend.upstream_rq_2xx"), 200);
    assert!(gw.stat("cluster.shadow.upstream_cx_connect_fail") > 0, "the mirrors were attempted");
}

#[test]
fn primary_unaffected_when_the_shadow_hangs() {
    let up = Upstream::start("up");
    let shadow = Shadow::start(false);
    let mirror = "                  - cluster: shadow";
    // The shadow request times out at the route timeout (2 s).
    let gw = Gateway::start(&config(mirror, "                  timeout: 2s\n"), &[up.addr, shadow.addr], &[]);
    let mut c = Client::connect(gw.listener_addr);
    for _ in 0..50 {
        let t = Instant::now();
        assert_eq!(c.get("/").status, 200);
        // Far below the shadow's 2 s hang: the primary never waits for it.
        assert!(t.elapsed() < Duration::from_secs(1), "a primary request took {:?}", t.elapsed());
    }
    assert_eq!(shadow.settled_count(), 50);
    assert_eq!(gw.wait_stat("cluster.shadow.upstream_rq_timeout", 50, Duration::from_secs(10)), 50);
}
