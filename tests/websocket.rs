//! End-to-end HTTP/1.1 upgrades through a real `meshgate`: WebSocket with
//! the Python `websockets` package on both sides (text, binary, 1 MiB
//! frames, close handshakes both ways), Envoy's 403 for upgrades the config
//! does not allow (HCM and route level), an upstream that refuses the
//! upgrade, the route idle timeout on an upgraded connection, and a
//! non-WebSocket upgrade carrying early bytes and a half-close.
//!
//! Needs the test venv that `scripts/install-deps.sh` creates
//! (`target/test-venv`, with `websockets`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use testkit::{read_response, Gateway, Upstream};

fn python() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-venv/bin/python3");
    let ok = Command::new(&venv)
        .args(["-c", "import websockets"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "{} with `websockets` missing: run scripts/install-deps.sh", venv.display());
    venv
}

fn peer_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/ws_peer.py")
}

/// The Python echo server; killed on drop.
struct WsServer {
    child: Child,
    addr: SocketAddr,
}

impl Drop for WsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ws_server() -> WsServer {
    let mut child = Command::new(python())
        .arg(peer_script())
        .arg("server")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the websockets echo server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).expect("server port line");
    let port: u16 = line.trim().strip_prefix("PORT ").and_then(|p| p.parse().ok()).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("unexpected server line {line:?}")
    });
    WsServer { child, addr: SocketAddr::from(([127, 0, 0, 1], port)) }
}

fn run_peer(mode: &str, url: &str) -> String {
    let out = Command::new(python()).arg(peer_script()).args([mode, url]).output().expect("run the websockets client");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "ws_peer {mode} {url} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// One HTTP listener with `hcm_extra` HCM keys (column 0) and `routes`
/// (column 0, list items) over clusters `ws` (upstream 1) and `http`
/// (upstream 2, if given).
fn config(hcm_extra: &str, routes: &str, with_http: bool) -> String {
    fn indent(s: &str, n: usize) -> String {
        let pad = " ".repeat(n);
        s.trim_matches('\n').lines().filter(|l| !l.trim().is_empty()).map(|l| format!("{pad}{l}\n")).collect()
    }
    let cluster = |name: &str, n: usize| {
        format!(
            "  - name: {name}\n    type: STATIC\n    connect_timeout: 1s\n    load_assignment:\n      cluster_name: {name}\n      endpoints:\n      - lb_endpoints:\n        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {{{{UPSTREAM_{n}_PORT}}}} }} }} }}\n"
        )
    };
    let mut clusters = cluster("ws", 1);
    if with_http {
        clusters.push_str(&cluster("http", 2));
    }
    format!(
        r#"admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {{{{ADMIN_PORT}}}} }} }}
static_resources:
  listeners:
  - name: http
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
              routes:
{routes}          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
{clusters}"#,
        hcm_extra = indent(hcm_extra, 10),
        routes = indent(routes, 14),
    )
}

const WEBSOCKET_ON: &str = "upgrade_configs: [ { upgrade_type: websocket } ]";
const ALL_TO_WS: &str = "- match: { prefix: / }\n  route: { cluster: ws }";

/// A raw upgrade request; returns the connection and the response head.
fn raw_upgrade(gw: SocketAddr, path: &str, protocol: &str, early: &[u8]) -> (TcpStream, String) {
    let mut s = TcpStream::connect(gw).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: Upgrade\r\nUpgrade: {protocol}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(early);
    s.write_all(&bytes).unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => break,
        }
    }
    (s, String::from_utf8_lossy(&head).into_owned())
}

#[test]
fn websocket_echo_through_the_gateway() {
    let server = ws_server();
    let gw = Gateway::start(&config(WEBSOCKET_ON, ALL_TO_WS, false), &[server.addr], &[]);
    let out = run_peer("client", &format!("ws://{}/chat", gw.listener_addr));
    assert!(out.contains("OK"), "{out}");
    assert_eq!(gw.stat("http.ingress.downstream_cx_upgrades_total"), 2);
    assert_eq!(gw.wait_stat("http.ingress.downstream_cx_upgrades_active", 0, Duration::from_secs(10)), 0);
    assert_eq!(gw.stat("http.ingress.downstream_rq_1xx"), 2);
    // The random 1 MiB message each way at least (the text one compresses:
    // permessage-deflate is negotiated end to end).  Counted when the
    // connections end.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while gw.stat("http.ingress.downstream_cx_rx_bytes_total") <= 1 << 20 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(gw.stat("http.ingress.downstream_cx_rx_bytes_total") > 1 << 20);
    assert!(gw.stat("http.ingress.downstream_cx_tx_bytes_total") > 1 << 20);
}

#[test]
fn upgrades_the_config_does_not_allow_get_403() {
    let server = ws_server();
    // No upgrade_configs at all.
    let gw = Gateway::start(&config("", ALL_TO_WS, false), &[server.addr], &[]);
    let (_s, head) = raw_upgrade(gw.listener_addr, "/", "websocket", b"");
    assert!(head.starts_with("HTTP/1.1 403 "), "{head}");
    assert_eq!(gw.stat("http.ingress.downstream_rq_ws_on_non_ws_route"), 1);
    drop(gw);
    // Enabled on the HCM, disabled on one route, enabled on a route where
    // the HCM disables another type.
    let routes = r#"
- match: { prefix: /no-ws }
  route: { cluster: ws, upgrade_configs: [ { upgrade_type: websocket, enabled: false } ] }
- match: { prefix: /custom }
  route: { cluster: ws, upgrade_configs: [ { upgrade_type: custom-proto } ] }
- match: { prefix: / }
  route: { cluster: ws }
"#;
    let hcm = "upgrade_configs: [ { upgrade_type: websocket }, { upgrade_type: custom-proto, enabled: false } ]";
    let gw = Gateway::start(&config(hcm, routes, false), &[server.addr], &[]);
    let (_s, head) = raw_upgrade(gw.listener_addr, "/no-ws", "websocket", b"");
    assert!(head.starts_with("HTTP/1.1 403 "), "{head}");
    let (_s, head) = raw_upgrade(gw.listener_addr, "/other", "custom-proto", b"");
    assert!(head.starts_with("HTTP/1.1 403 "), "{head}");
    let (_s, head) = raw_upgrade(gw.listener_addr, "/yes", "WebSocket", b"");
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(head.to_ascii_lowercase().contains("upgrade: websocket"), "{head}");
    assert_eq!(gw.stat("http.ingress.downstream_rq_ws_on_non_ws_route"), 2);
    // The Python client sees the 403 as a rejected handshake.
    let out = Command::new(python())
        .arg(peer_script())
        .args(["client", &format!("ws://{}/no-ws", gw.listener_addr)])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("403"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn an_upstream_that_does_not_switch_has_its_answer_relayed_and_the_connection_closed() {
    let up = Upstream::start("plain");
    let gw = Gateway::start(
        &config(WEBSOCKET_ON, "- match: { prefix: / }\n  route: { cluster: ws }", false),
        &[up.addr],
        &[],
    );
    let (mut s, head) = raw_upgrade(gw.listener_addr, "/status/200", "websocket", b"");
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(head.to_ascii_lowercase().contains("connection: close"), "{head}");
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert_eq!(gw.stat("http.ingress.downstream_cx_upgrades_total"), 0);
    // Ordinary requests on the same listener are unaffected.
    let mut c = TcpStream::connect(gw.listener_addr).unwrap();
    c.write_all(b"GET /status/204 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut c).status, 204);
}

#[test]
fn route_idle_timeout_closes_an_idle_websocket() {
    let server = ws_server();
    let routes = "- match: { prefix: / }\n  route: { cluster: ws, idle_timeout: 1s }";
    let gw = Gateway::start(&config(WEBSOCKET_ON, routes, false), &[server.addr], &[]);
    let out = run_peer("idle", &format!("ws://{}/idle", gw.listener_addr));
    assert!(out.contains("CLOSED 1006"), "{out}");
    let after: f64 = out.lines().find_map(|l| l.strip_prefix("AFTER ")).and_then(|v| v.parse().ok()).unwrap();
    assert!((0.8..20.0).contains(&after), "closed after {after}s with a 1s idle timeout");
    assert_eq!(gw.wait_stat("http.ingress.downstream_rq_idle_timeout", 1, Duration::from_secs(5)), 1);
}

/// An upstream speaking a made-up upgraded protocol: answers 101, then
/// reads until the client's FIN and answers with what it read, reversed.
fn reversing_upgrade_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut request = String::new();
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
            request.push_str(&line);
        }
        let lower = request.to_ascii_lowercase();
        assert!(lower.contains("connection: upgrade") && lower.contains("upgrade: reverse/1"), "{request}");
        s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: reverse/1\r\n\r\nhi:")
            .unwrap();
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        got.reverse();
        s.write_all(&got).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
    });
    addr
}

#[test]
fn any_upgrade_type_tunnels_early_bytes_and_half_close() {
    let up = reversing_upgrade_server();
    let gw = Gateway::start(&config("upgrade_configs: [ { upgrade_type: reverse } ]", ALL_TO_WS, false), &[up], &[]);
    // Bytes sent right behind the request head must reach the upstream
    // after its 101, as must the FIN.
    let (mut s, head) = raw_upgrade(gw.listener_addr, "/", "reverse/1", b"early-");
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let payload: Vec<u8> = (0..200_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    s.write_all(&payload).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    let mut want = b"hi:".to_vec();
    let mut sent = b"early-".to_vec();
    sent.extend_from_slice(&payload);
    sent.reverse();
    want.extend_from_slice(&sent);
    assert!(got == want, "got {} bytes, want {}", got.len(), want.len());
}

#[test]
fn upgrade_config_errors_name_their_field() {
    let hcm_path = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config";
    for (hcm, field, words) in [
        ("upgrade_configs: [ { upgrade_type: CONNECT } ]", "upgrade_configs[0].upgrade_type", "CONNECT"),
        (
            "upgrade_configs: [ { upgrade_type: websocket }, { upgrade_type: WebSocket } ]",
            "upgrade_configs[1].upgrade_type",
            "duplicate",
        ),
        (
            "upgrade_configs: [ { upgrade_type: websocket, filters: [ { name: x } ] } ]",
            "upgrade_configs[0].filters",
            "unsupported field",
        ),
    ] {
        let out = testkit::validate_config(&config(hcm, ALL_TO_WS, false), &["127.0.0.1:9".parse().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        let path = format!("{hcm_path}.{field}");
        assert!(stderr.lines().any(|l| l.contains(&path) && l.contains(words)), "no {path} / {words}:\n{stderr}");
    }
}
