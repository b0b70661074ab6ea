//! End-to-end TCP proxy (`envoy.filters.network.tcp_proxy`) through a real
//! `meshgate`: Redis carried for `redis-benchmark` with every command
//! accounted for, half-close forwarded in both directions, network RBAC
//! closing denied sources, idle timeout, connect attempts over a dead host,
//! weighted clusters, Envoy's `tcp.<stat_prefix>.*` stats, and config errors
//! naming their field.
//!
//! Needs `redis-server` and `redis-benchmark`/`redis-cli` (Debian packages
//! `redis-server`, `redis-tools`; `scripts/install-deps.sh` installs them).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};
use testkit::{free_port, validate_config, Gateway};

/// A bootstrap with one TCP proxy listener on `{{LISTEN_PORT}}` whose
/// tcp_proxy `typed_config` body is `proxy` (column 0), preceded by the
/// network filters `network` (column 0, list items), and `clusters`
/// (column 0, list items).
fn config(network: &str, proxy: &str, clusters: &str) -> String {
    fn indent(s: &str, n: usize) -> String {
        let pad = " ".repeat(n);
        s.trim_matches('\n').lines().filter(|l| !l.trim().is_empty()).map(|l| format!("{pad}{l}\n")).collect()
    }
    format!(
        r#"admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {{{{ADMIN_PORT}}}} }} }}
static_resources:
  listeners:
  - name: tcp_listener
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {{{{LISTEN_PORT}}}} }} }}
    filter_chains:
    - filters:
{network}      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
{proxy}  clusters:
{clusters}"#,
        network = indent(network, 6),
        proxy = indent(proxy, 10),
        clusters = indent(clusters, 2),
    )
}

fn static_cluster(name: &str, endpoints: &[SocketAddr]) -> String {
    let mut s = format!(
        "- name: {name}\n  type: STATIC\n  connect_timeout: 1s\n  load_assignment:\n    cluster_name: {name}\n    endpoints:\n    - lb_endpoints:\n"
    );
    for e in endpoints {
        s.push_str(&format!(
            "      - endpoint: {{ address: {{ socket_address: {{ address: {}, port_value: {} }} }} }}\n",
            e.ip(),
            e.port()
        ));
    }
    s
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to meshgate");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn connect_from(src: &str, dst: SocketAddr) -> TcpStream {
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    let src: SocketAddr = format!("{src}:0").parse().unwrap();
    sock.bind(&src.into()).unwrap_or_else(|e| panic!("bind {src}: {e}"));
    sock.connect_timeout(&dst.into(), Duration::from_secs(5)).expect("connect");
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// A one-shot upstream running `serve` on each accepted connection, in a thread.
fn upstream(serve: fn(TcpStream)) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { return };
            std::thread::spawn(move || serve(s));
        }
    });
    addr
}

/// Reads to EOF, then answers with what it read, reversed, and closes.
fn reverse_after_eof(mut s: TcpStream) {
    let mut got = Vec::new();
    if s.read_to_end(&mut got).is_err() {
        return;
    }
    got.reverse();
    let _ = s.write_all(&got);
}

/// Greets first and half-closes, then reads until EOF.  Its write side is
/// closed by then, so it records what arrived in a file whose path is the
/// first line of what it read.
fn greet_then_record(mut s: TcpStream) {
    let _ = s.write_all(b"hello from upstream");
    let _ = s.shutdown(Shutdown::Write);
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    if let Some(path) = std::str::from_utf8(&got).ok().and_then(|t| t.lines().next()) {
        let _ = std::fs::write(path, &got);
    }
}

/// Echoes until EOF, then closes.
fn echo(mut s: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

/// Answers "A" and closes.
fn say_a(mut s: TcpStream) {
    let _ = s.write_all(b"A");
}

/// Answers "B" and closes.
fn say_b(mut s: TcpStream) {
    let _ = s.write_all(b"B");
}

fn read_all(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read to end");
    out
}

#[test]
fn client_half_close_is_forwarded_and_the_answer_still_arrives() {
    let up = upstream(reverse_after_eof);
    let gw = Gateway::start(&config("", "stat_prefix: rev\ncluster: rev", &static_cluster("rev", &[up])), &[], &[]);
    let mut c = connect(gw.listener_addr);
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    c.write_all(&payload).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let got = read_all(&mut c);
    let mut want = payload.clone();
    want.reverse();
    assert!(got == want, "got {} bytes back, want {}", got.len(), want.len());
    let sent = payload.len() as u64;
    assert_eq!(gw.wait_stat("tcp.rev.downstream_cx_rx_bytes_total", sent, Duration::from_secs(5)), sent);
    assert_eq!(gw.stat("tcp.rev.downstream_cx_tx_bytes_total"), sent);
    assert_eq!(gw.stat("tcp.rev.downstream_cx_total"), 1);
    assert_eq!(gw.stat("tcp.rev.downstream_cx_rx_bytes_buffered"), 0);
}

#[test]
fn upstream_half_close_is_forwarded_and_the_client_can_still_send() {
    let up = upstream(greet_then_record);
    let gw =
        Gateway::start(&config("", "stat_prefix: greet\ncluster: greet", &static_cluster("greet", &[up])), &[], &[]);
    let mut c = connect(gw.listener_addr);
    // The upstream's FIN reaches us: read_to_end returns.
    let greeting = read_all(&mut c);
    assert_eq!(greeting, b"hello from upstream");
    // Our direction is still open: what we send now reaches the upstream.
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("received");
    let body = format!("{}\nsent after the upstream's FIN\n", record.display());
    c.write_all(body.as_bytes()).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !record.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(std::fs::read_to_string(&record).expect("upstream never saw our bytes"), body);
}

#[test]
fn network_rbac_closes_denied_sources_before_connecting_upstream() {
    let up = upstream(echo);
    let network = r#"
- name: envoy.filters.network.rbac
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC
    stat_prefix: tcp_rbac
    rules:
      action: ALLOW
      policies:
        loopback-1:
          permissions: [{ any: true }]
          principals: [{ direct_remote_ip: { address_prefix: 127.0.0.1, prefix_len: 32 } }]
"#;
    let gw = Gateway::start(
        &config(network, "stat_prefix: guarded\ncluster: echo", &static_cluster("echo", &[up])),
        &[],
        &[],
    );
    // Allowed source: echoed.
    let mut ok = connect_from("127.0.0.1", gw.listener_addr);
    ok.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    ok.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
    // Denied source: closed without a byte, and no upstream connection made.
    let mut denied = connect_from("127.0.0.5", gw.listener_addr);
    let _ = denied.write_all(b"ping");
    let mut out = Vec::new();
    match denied.read_to_end(&mut out) {
        Ok(_) => assert!(out.is_empty(), "denied connection got {out:?}"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
    assert_eq!(gw.wait_stat("tcp_rbac.rbac.denied", 1, Duration::from_secs(5)), 1);
    assert_eq!(gw.stat("tcp_rbac.rbac.allowed"), 1);
    assert_eq!(gw.stat("cluster.echo.upstream_cx_total"), 1);
    drop(ok);
}

#[test]
fn idle_timeout_closes_both_sides_and_is_counted() {
    let up = upstream(echo);
    let gw = Gateway::start(
        &config("", "stat_prefix: idle\ncluster: echo\nidle_timeout: 0.5s", &static_cluster("echo", &[up])),
        &[],
        &[],
    );
    let mut c = connect(gw.listener_addr);
    c.write_all(b"x").unwrap();
    let mut b = [0u8; 1];
    c.read_exact(&mut b).unwrap();
    let quiet = Instant::now();
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    let waited = quiet.elapsed();
    assert!(rest.is_empty());
    assert!(waited >= Duration::from_millis(400), "closed after {waited:?}, before the idle timeout");
    assert!(waited < Duration::from_secs(8), "idle timeout of 0.5s took {waited:?}");
    assert_eq!(gw.wait_stat("tcp.idle.idle_timeout", 1, Duration::from_secs(5)), 1);
}

#[test]
fn connect_attempts_skip_a_dead_host() {
    let up = upstream(say_a);
    let dead = testkit::closed_addr();
    let gw = Gateway::start(
        &config("", "stat_prefix: retry\ncluster: pair\nmax_connect_attempts: 3", &static_cluster("pair", &[dead, up])),
        &[],
        &["--shards", "1"],
    );
    for i in 0..6 {
        let mut c = connect(gw.listener_addr);
        assert_eq!(read_all(&mut c), b"A", "connection {i}");
    }
    assert!(gw.stat("cluster.pair.upstream_cx_connect_fail") >= 1);
}

#[test]
fn weighted_clusters_spread_connections_by_weight() {
    let a = upstream(say_a);
    let b = upstream(say_b);
    let proxy = r#"
stat_prefix: split
weighted_clusters:
  clusters:
  - { name: a, weight: 1 }
  - { name: b, weight: 3 }
"#;
    let clusters = format!("{}{}", static_cluster("a", &[a]), static_cluster("b", &[b]));
    let gw = Gateway::start(&config("", proxy, &clusters), &[], &[]);
    let (mut na, mut nb) = (0, 0);
    for _ in 0..200 {
        let mut c = connect(gw.listener_addr);
        match read_all(&mut c).as_slice() {
            b"A" => na += 1,
            b"B" => nb += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    // Expected 50 / 150; the bounds are over 5 standard deviations wide.
    assert!((20..=85).contains(&na), "a got {na}, b got {nb}");
    assert_eq!(na + nb, 200);
}

// ------------------------------------------------------------------ Redis

struct Redis {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn need(bin: &str) {
    let found = Command::new(bin).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    assert!(
        found,
        "{bin} not found: install the Debian packages redis-server and redis-tools (scripts/install-deps.sh)"
    );
}

fn start_redis() -> Redis {
    need("redis-server");
    let port = free_port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--daemonize", "no", "--loglevel", "warning"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not listen on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
    Redis { child, addr }
}

fn redis_cli(addr: SocketAddr, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args(args)
        .output()
        .expect("redis-cli");
    assert!(out.status.success(), "redis-cli {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn redis_benchmark_through_the_proxy_has_no_errors() {
    need("redis-benchmark");
    need("redis-cli");
    let redis = start_redis();
    let gw = Gateway::start(
        &config("", "stat_prefix: redis\ncluster: redis", &static_cluster("redis", &[redis.addr])),
        &[],
        &[],
    );
    let requests = 20_000u64;
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &gw.listener_addr.port().to_string()])
        .args(["-c", "20", "-n", &requests.to_string(), "-P", "4", "-q", "--csv"])
        .args(["-t", "set,get,incr,lpush,lpop,mset"])
        .output()
        .expect("run redis-benchmark");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "redis-benchmark failed: {stdout}\n{stderr}");
    assert!(!stdout.to_lowercase().contains("error") && !stderr.to_lowercase().contains("error"), "{stdout}\n{stderr}");
    for test in ["SET", "GET", "INCR", "LPUSH", "LPOP", "MSET"] {
        assert!(stdout.contains(&format!("\"{test}")), "no {test} result in:\n{stdout}");
    }
    // Every INCR reached Redis exactly once: the benchmark's counter key
    // (no -r, so the key is literal) went up by exactly `requests`.
    let counter = redis_cli(gw.listener_addr, &["GET", "counter:__rand_int__"]);
    assert_eq!(counter, requests.to_string(), "INCR count through the proxy");
    // The gateway saw the benchmark's connections (six tests × 20 clients,
    // plus redis-benchmark's own CONFIG probe connections) and no leftovers.
    assert!(gw.stat("tcp.redis.downstream_cx_total") >= 6 * 20);
    let active = format!("listener.127.0.0.1_{}.downstream_cx_active", gw.listener_addr.port());
    assert_eq!(gw.wait_stat(&active, 0, Duration::from_secs(10)), 0, "connections left open");
}

// ------------------------------------------------------------------ config errors

#[track_caller]
fn rejected(yaml: &str, path: &str, words: &str) {
    let out = validate_config(yaml, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "config was accepted:\n{yaml}");
    assert!(
        stderr.lines().any(|l| l.contains(path) && l.contains(words)),
        "no error naming {path} with {words:?}:\n{stderr}"
    );
}

const PROXY_PATH: &str = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config";

#[test]
fn config_errors_name_their_field() {
    let cluster = static_cluster("c", &["127.0.0.1:9".parse().unwrap()]);
    rejected(
        &config("", "stat_prefix: t\ncluster: nope", &cluster),
        &format!("{PROXY_PATH}.cluster"),
        "unknown cluster",
    );
    rejected(&config("", "cluster: c", &cluster), &format!("{PROXY_PATH}.stat_prefix"), "required");
    rejected(
        &config("", "stat_prefix: t\ncluster: c\nmax_connect_attempts: 0", &cluster),
        &format!("{PROXY_PATH}.max_connect_attempts"),
        "at least 1",
    );
    rejected(
        &config("", "stat_prefix: t\nweighted_clusters: { clusters: [ { name: c, weight: 0 } ] }", &cluster),
        &format!("{PROXY_PATH}.weighted_clusters.clusters[0].weight"),
        "at least 1",
    );
    rejected(
        &config("", "stat_prefix: t\ncluster: c\nhash_policy: [ { source_ip: {} } ]", &cluster),
        &format!("{PROXY_PATH}.hash_policy"),
        "unsupported field",
    );
    let rbac_after = config("", "stat_prefix: t\ncluster: c", &cluster).replace(
        "  clusters:\n",
        "      - name: envoy.filters.network.rbac\n        typed_config:\n          \"@type\": type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC\n          stat_prefix: r\n  clusters:\n",
    );
    rejected(&rbac_after, "static_resources.listeners[0].filter_chains[0].filters[1]", "terminal");
}
