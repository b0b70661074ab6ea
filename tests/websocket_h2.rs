//! WebSocket over HTTP/2 (RFC 8441 extended CONNECT) through a real
//! `meshgate` to an HTTP/1.1 WebSocket upstream (the Python `websockets`
//! echo server of tests/websocket.rs).  The client
//! (`testkit/py/ws_h2_client.py`) speaks HTTP/2 with the `h2` state machine
//! and frames WebSocket by hand: SETTINGS_ENABLE_CONNECT_PROTOCOL, `200` for
//! the upstream's `101`, text, binary, 1 MiB echoes, the close handshake and
//! END_STREAM both ways; `upgrade_configs` decides as for HTTP/1.1 (403 when
//! the route or HCM does not allow websocket).
//!
//! Needs the test venv that `scripts/install-deps.sh` creates
//! (`target/test-venv`, with `websockets` and `h2`).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use testkit::Gateway;

fn python() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-venv/bin/python3");
    let ok = Command::new(&venv)
        .args(["-c", "import websockets, h2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "{} with `websockets` and `h2` missing: run scripts/install-deps.sh", venv.display());
    venv
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
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/ws_peer.py"))
        .arg("server")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the websockets echo server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).expect("server port line");
    let Some(port) = line.trim().strip_prefix("PORT ").and_then(|p| p.parse::<u16>().ok()) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("unexpected server line {line:?}");
    };
    WsServer { child, addr: SocketAddr::from(([127, 0, 0, 1], port)) }
}

/// h2c (AUTO codec) listener; websocket enabled on the HCM, disabled on
/// the route `/no-ws`.
fn config() -> String {
    r#"admin:
  address: { socket_address: { address: 127.0.0.1, port_value: {{ADMIN_PORT}} } }
static_resources:
  listeners:
  - name: http
    address: { socket_address: { address: 127.0.0.1, port_value: {{LISTEN_PORT}} } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          codec_type: AUTO
          upgrade_configs: [ { upgrade_type: websocket } ]
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: /no-ws }
                route: { cluster: ws, upgrade_configs: [ { upgrade_type: websocket, enabled: false } ] }
              - match: { prefix: / }
                route: { cluster: ws, idle_timeout: 30s }
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: ws
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: ws
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: {{UPSTREAM_1_PORT}} } } }
"#
    .to_string()
}

fn client(gw: &Gateway, path: &str, mode: &str) -> String {
    let out = Command::new(python())
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testkit/py/ws_h2_client.py"))
        .arg(gw.listener_addr.to_string())
        .args([path, mode])
        .stderr(Stdio::inherit())
        .output()
        .expect("run the ws-over-h2 client");
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success() && stdout.starts_with("PASS "),
        "ws-over-h2 {path} {mode}: {stdout}\n--- meshgate stderr ---\n{}",
        gw.stderr()
    );
    stdout
}

#[test]
fn websocket_echo_over_extended_connect() {
    let ws = ws_server();
    let gw = Gateway::start(&config(), &[ws.addr], &[]);
    let line = client(&gw, "/chat", "echo");
    eprintln!("{line}");
    assert_eq!(gw.stat("http.ingress.downstream_cx_upgrades_total"), 1);
}

#[test]
fn extended_connect_on_a_route_without_websocket_is_403() {
    let ws = ws_server();
    let gw = Gateway::start(&config(), &[ws.addr], &[]);
    assert_eq!(client(&gw, "/no-ws", "status"), "PASS status status 403");
    assert_eq!(gw.stat("http.ingress.downstream_rq_ws_on_non_ws_route"), 1);
}
