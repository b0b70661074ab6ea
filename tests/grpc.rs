//! gRPC end to end through a real `meshgate`: a Python `grpcio` client
//! (`testkit/py/grpc_client.py`) calls a Python `grpcio` server
//! (`testkit/py/grpc_peer.py`) over h2c downstream and an HTTP/2 upstream
//! cluster.  Every call shape (unary, ~300 KB unary both ways, client,
//! server and bidirectional streaming), cancellation seen by the server,
//! deadlines, custom metadata and trailers, status propagation; and the
//! gateway's own gRPC answers: PERMISSION_DENIED (7) from RBAC, UNAVAILABLE
//! (14) with no reachable upstream, DEADLINE_EXCEEDED (4) on the route timeout.
//!
//! The cases that reach the upstream use an HTTP/2 upstream cluster
//! (`dataplane/src/upstream/http2.rs`); the gateway's own answers (RBAC, no
//! upstream) also run over HTTP/1.1 clusters.
//!
//! The client checks each case itself and prints `PASS ...` or `FAIL ...`;
//! these tests assert on that line.  Needs the test venv that
//! `scripts/install-deps.sh` creates (`target/test-venv`, with `grpcio`).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use testkit::{closed_port, Gateway};

fn python() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-venv/bin/python3");
    let ok = Command::new(&venv)
        .args(["-c", "import grpc"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "{} with `grpcio` missing: run scripts/install-deps.sh", venv.display());
    venv
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testkit/py").join(name)
}

/// The Python gRPC server; it exits when its stdin closes, and is killed on drop.
struct GrpcPeer {
    child: Child,
    addr: SocketAddr,
}

impl GrpcPeer {
    fn start() -> GrpcPeer {
        let mut child = Command::new(python())
            .arg(script("grpc_peer.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the gRPC peer");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).expect("peer port line");
        let Some(port) = line.trim().strip_prefix("PORT ").and_then(|p| p.parse::<u16>().ok()) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("unexpected peer line {line:?}");
        };
        GrpcPeer { child, addr: SocketAddr::from(([127, 0, 0, 1], port)) }
    }
}

impl Drop for GrpcPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// h2c downstream (AUTO codec: prior knowledge), cluster `grpc` over HTTP/2,
/// cluster `dead` on a closed port, RBAC denying `/test.Peer/Denied`, a 1 s
/// route timeout on `/test.Peer/Sleep`.
fn config(h2_upstream: bool) -> String {
    let text = r#"admin:
  address: { socket_address: { address: 127.0.0.1, port_value: {{ADMIN_PORT}} } }
static_resources:
  listeners:
  - name: ingress
    address: { socket_address: { address: 127.0.0.1, port_value: {{LISTEN_PORT}} } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          codec_type: AUTO
          http_filters:
          - name: envoy.filters.http.rbac
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
              rules:
                action: DENY
                policies:
                  no-denied-method:
                    permissions: [{ url_path: { path: { prefix: "/test.Peer/Denied" } } }]
                    principals: [{ any: true }]
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/test.Peer/Sleep" }
                route: { cluster: grpc, timeout: 1s }
              - match: { prefix: "/test.Peer/Down" }
                route: { cluster: dead }
              - match: { prefix: "/" }
                route: { cluster: grpc, timeout: 30s }
  clusters:
  - name: grpc
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {}
    load_assignment:
      cluster_name: grpc
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: "{{UPSTREAM_1}}", port_value: {{UPSTREAM_1_PORT}} } } }
  - name: dead
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {}
    load_assignment:
      cluster_name: dead
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: "{{UPSTREAM_2}}", port_value: {{UPSTREAM_2_PORT}} } } }
"#;
    if h2_upstream {
        return text.to_string();
    }
    // The gateway's own answers never reach the upstream: they hold with
    // HTTP/1.1 clusters too.
    let options = r#"    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {}
"#;
    text.replace(options, "")
}

/// Runs one client case through a fresh gateway and asserts it passed.
fn case(args: &[&str]) {
    case_with(true, args)
}

fn case_with(h2_upstream: bool, args: &[&str]) {
    let peer = GrpcPeer::start();
    let dead = closed_port();
    let gw = Gateway::start(&config(h2_upstream), &[peer.addr, dead.addr], &[]);
    let out = Command::new(python())
        .arg(script("grpc_client.py"))
        .arg(gw.listener_addr.to_string())
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .expect("run the gRPC client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with("PASS "),
        "gRPC case {args:?} through meshgate: {stdout}\n--- meshgate stderr ---\n{}",
        gw.stderr()
    );
    eprintln!("{}", stdout.trim());
}

#[test]
fn unary() {
    case(&["unary"]);
}

#[test]
fn large_unary_300kb_each_way() {
    case(&["large"]);
}

#[test]
fn client_streaming() {
    case(&["client_stream"]);
}

#[test]
fn server_streaming_with_trailers() {
    case(&["server_stream"]);
}

#[test]
fn bidirectional_streaming_in_lock_step() {
    case(&["bidi"]);
}

#[test]
fn cancellation_reaches_the_server() {
    case(&["cancel"]);
}

#[test]
fn client_deadline_exceeded() {
    case(&["deadline"]);
}

#[test]
fn custom_metadata_and_trailers() {
    case(&["metadata"]);
}

#[test]
fn status_code_and_message_propagate() {
    case(&["status"]);
}

#[test]
fn rbac_denial_is_permission_denied() {
    case_with(false, &["expect", "7", "Denied"]);
}

#[test]
fn no_upstream_is_unavailable() {
    case_with(false, &["expect", "14", "Down"]);
}

#[test]
fn route_timeout_is_deadline_exceeded() {
    case(&["expect", "4", "Sleep"]);
}
