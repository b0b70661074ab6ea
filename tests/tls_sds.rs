//! End-to-end SDS over ADS: a real `meshgate` whose TLS listener comes over
//! LDS and names its certificate with `sds_config: {ads: {}}`, driven by
//! the test control plane (`testkit::xds_server`), checked with
//! `openssl s_client`.
//!
//! Covered: the listener warms (its port is not served) until the Secret
//! arrives, meshgate subscribing to it by name; then it serves the secret's
//! certificate; a Secret that does not load is NACKed with its name and the
//! previous one keeps serving; a rotated Secret is served to new
//! connections while a connection opened before keeps working.
//! File-based and static secrets are covered in `tests/tls_downstream.rs`
//! and `tests/tls_upstream.rs`.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::certs::{make_ca, make_leaf};
use testkit::xds_server::{XdsServer, LISTENER, SECRET};
use testkit::{free_port, Gateway, Upstream};

const WAIT: Duration = Duration::from_secs(20);

fn bootstrap(xds: SocketAddr) -> String {
    format!(
        r#"admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {{{{ADMIN_PORT}}}} }} }}
dynamic_resources:
  ads_config:
    api_type: GRPC
    transport_api_version: V3
    grpc_services: [{{ envoy_grpc: {{ cluster_name: xds_cluster }} }}]
  lds_config: {{ ads: {{}}, resource_api_version: V3 }}
static_resources:
  clusters:
{xds_cluster}  - name: backend
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: backend
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {{{{UPSTREAM_1_PORT}}}} }} }} }} }}] }}]
"#,
        xds_cluster = testkit::xds_cluster_yaml(xds),
    )
}

fn enc(full_name: &str, v: Value) -> (String, Vec<u8>) {
    let name = v["name"].as_str().unwrap_or_default().to_string();
    (name, control::bootstrap::dynamic::encode_json(full_name, &v).expect("resource encodes"))
}

/// A TLS listener whose certificate is the ADS secret `server_cert`.
fn tls_listener(port: u16) -> (String, Vec<u8>) {
    enc(
        "envoy.config.listener.v3.Listener",
        json!({"name": "tls", "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
          "filter_chains": [{
            "filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
              "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
              "stat_prefix": "tls",
              "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"],
                "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "backend"}}]}]},
              "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}],
            "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
              "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
              "common_tls_context": {"tls_certificate_sds_secret_configs": [
                {"name": "server_cert", "sds_config": {"ads": {}, "resource_api_version": "V3"}}]}}}}]}),
    )
}

/// The `server_cert` secret holding `<cert>.pem` / `<key>.key` inline.
fn secret(dir: &Path, cert: &str, key: &str) -> (String, Vec<u8>) {
    let read = |f: String| std::fs::read_to_string(dir.join(f)).unwrap();
    enc(
        "envoy.extensions.transport_sockets.tls.v3.Secret",
        json!({"name": "server_cert", "tls_certificate": {
            "certificate_chain": {"inline_string": read(format!("{cert}.pem"))},
            "private_key": {"inline_string": read(format!("{key}.key"))}}}),
    )
}

#[track_caller]
fn wait_until(what: &str, gw: &Gateway, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}\n--- meshgate stderr ---\n{}", gw.stderr());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The certificate subject a new TLS connection sees, and whether a GET
/// over it was answered 200.
fn new_connection_subject(addr: SocketAddr) -> (Option<String>, bool) {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string(), "-servername", "server.example.com", "-ign_eof"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(b"GET /status/200 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
            c.wait_with_output()
        })
        .expect("openssl s_client");
    let text = String::from_utf8_lossy(&out.stdout);
    let subject = text.lines().find_map(|l| l.strip_prefix("subject=").map(|s| s.replace(' ', "")));
    (subject, text.contains("HTTP/1.1 200"))
}

/// A kept-open `openssl s_client -quiet` connection (killed on drop).
struct OpenConnection {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl OpenConnection {
    fn open(addr: SocketAddr) -> OpenConnection {
        let mut child = Command::new("openssl")
            .args(["s_client", "-connect", &addr.to_string(), "-servername", "server.example.com", "-quiet"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_client");
        let out = BufReader::new(child.stdout.take().unwrap());
        OpenConnection { child, out }
    }

    /// The status line of a GET on this connection.
    fn status(&mut self) -> String {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(b"GET /status/200 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        while self.out.read_line(&mut line).unwrap_or(0) > 0 {
            if line.starts_with("HTTP/1.1 ") {
                return line.trim().to_string();
            }
            line.clear();
        }
        String::new()
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn listener_warms_until_its_ads_secret_arrives_then_rotates() {
    let dir = tempfile::tempdir().unwrap();
    make_ca(dir.path(), "ca");
    make_leaf(dir.path(), "ca", "v1", "v1.example.com", &["DNS:server.example.com"]);
    make_leaf(dir.path(), "ca", "v2", "v2.example.com", &["DNS:server.example.com"]);
    let up = Upstream::start("up");
    let cp = XdsServer::start();
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    cp.set(LISTENER, "l1", vec![tls_listener(port)]);
    let gw = Gateway::start(&bootstrap(cp.addr()), &[up.addr], &["--shards", "1"]);

    // meshgate asks for the secret by name; until it comes the listener warms.
    wait_until("an SDS request for server_cert", &gw, || {
        cp.requests().iter().any(|r| r.type_url == SECRET && r.resource_names == ["server_cert"])
    });
    wait_until("LDS ACK", &gw, || {
        cp.requests().iter().any(|r| r.type_url == LISTENER && r.version_info == "l1" && !r.response_nonce.is_empty())
    });
    assert!(TcpStream::connect(addr).is_err(), "the warming listener is served");

    cp.set(SECRET, "s1", vec![secret(dir.path(), "v1", "v1")]);
    wait_until("the listener serving v1", &gw, || {
        TcpStream::connect(addr).is_ok() && new_connection_subject(addr) == (Some("CN=v1.example.com".into()), true)
    });
    let mut old = OpenConnection::open(addr);
    assert_eq!(old.status(), "HTTP/1.1 200 OK");

    // A key that does not match its certificate: NACKed, v1 keeps serving.
    cp.set(SECRET, "s2", vec![secret(dir.path(), "v2", "v1")]);
    wait_until("the NACK of s2", &gw, || {
        cp.requests().iter().any(|r| {
            r.type_url == SECRET
                && r.version_info == "s1"
                && r.error_detail.as_ref().is_some_and(|e| e.message.contains("Secret \"server_cert\""))
        })
    });
    assert_eq!(new_connection_subject(addr), (Some("CN=v1.example.com".into()), true));

    // Rotation: v2 for new connections, the old connection carries on.
    cp.set(SECRET, "s3", vec![secret(dir.path(), "v2", "v2")]);
    wait_until("new connections seeing v2", &gw, || {
        new_connection_subject(addr) == (Some("CN=v2.example.com".into()), true)
    });
    assert_eq!(old.status(), "HTTP/1.1 200 OK");
    assert!(gw.stat("sds.update_success") >= 2, "{}", gw.stderr());
    assert!(gw.stat("sds.update_rejected") >= 1);
}
