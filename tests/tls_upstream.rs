//! End-to-end upstream TLS (cluster `transport_socket` with an
//! `UpstreamTlsContext`) through a real `meshgate` to real TLS servers:
//! nginx (Debian `nginx-light`, with `ssl_verify_client`) echoing what it
//! saw of the handshake ($ssl_server_name, $ssl_client_s_dn, ...) in
//! response headers, and `openssl s_server -Verify 1` for a server that
//! refuses clients without a certificate at the handshake.
//!
//! Covered: a trusted CA gives 200 and TLS stats; a wrong CA gives 503 and
//! `ssl.fail_verify_error`; the configured SNI reaches the server; a client
//! certificate (mTLS) is accepted; a server requiring a client certificate
//! refuses a cluster without one (503); a SAN mismatch is refused
//! (`ssl.fail_verify_san`); pooled connections keep their TLS session and
//! new ones resume it; the TCP proxy and HTTP health checks use the
//! cluster's TLS; config errors name their field.
//!
//! Certificates are generated per test (testkit::certs, openssl CLI).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use testkit::certs::{make_ca, make_leaf, p};
use testkit::nginx::wait_listening;
use testkit::{basic_config, free_port, validate_config, Client, Gateway};

/// An nginx TLS server on 127.0.0.1 (killed on drop).
struct Nginx(testkit::nginx::Nginx);

impl std::ops::Deref for Nginx {
    type Target = testkit::nginx::Nginx;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Nginx {
    /// Serves certificate `cert` (`<cert>.pem`/`.key` in `dir`); client
    /// certificates are checked against `ca.pem` per `verify_client`
    /// (`off`, `optional`, `on`).
    fn start(dir: &Path, cert: &str, verify_client: &str) -> Nginx {
        let server = format!(
            r#"    ssl_certificate {cert_pem};
    ssl_certificate_key {cert_key};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_client_certificate {ca};
    ssl_verify_client {verify_client};
    keepalive_requests 1000;
    location / {{
      add_header x-sni "$ssl_server_name" always;
      add_header x-client-verify "$ssl_client_verify" always;
      add_header x-client-subject "$ssl_client_s_dn" always;
      add_header x-tls-protocol "$ssl_protocol" always;
      add_header x-session-reused "$ssl_session_reused" always;
      add_header x-alpn "$ssl_alpn_protocol" always;
      return 200 "tls upstream\n";
    }}"#,
            cert_pem = p(dir, &format!("{cert}.pem")),
            cert_key = p(dir, &format!("{cert}.key")),
            ca = p(dir, "ca.pem"),
        );
        Nginx(testkit::nginx::Nginx::start(dir, "ssl", &server))
    }
}

/// `openssl s_server` requiring a client certificate (`-Verify 1`): a
/// client without one fails the handshake.
struct SServer {
    child: Child,
    addr: SocketAddr,
}

impl SServer {
    fn start(dir: &Path, cert: &str) -> SServer {
        let port = free_port();
        let mut child = Command::new("openssl")
            .args(["s_server", "-accept", &format!("127.0.0.1:{port}"), "-www", "-Verify", "1"])
            .args(["-cert", &p(dir, &format!("{cert}.pem")), "-key", &p(dir, &format!("{cert}.key"))])
            .args(["-CAfile", &p(dir, "ca.pem")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_server");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        wait_listening(addr, &mut child, "openssl s_server");
        SServer { child, addr }
    }
}

impl Drop for SServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Certificates for one test: CA `ca` (trusted by the servers and by
/// default by meshgate), `server` (upstream.example.com), `client`
/// (CN meshgate-client, URI SAN spiffe://mesh/meshgate), and `other-ca`
/// with `stranger` signed by it.
fn certificates(dir: &Path) {
    make_ca(dir, "ca");
    make_leaf(dir, "ca", "server", "upstream.example.com", &["DNS:upstream.example.com"]);
    make_leaf(dir, "ca", "client", "meshgate-client", &["URI:spiffe://mesh/meshgate"]);
    make_ca(dir, "other-ca");
}

/// The cluster's `transport_socket` with `context` (UpstreamTlsContext
/// fields, YAML at column 0) and `extra` cluster keys.
fn tls_cluster(context: &str, extra: &str) -> String {
    let ctx: String = context.trim_matches('\n').lines().map(|l| format!("    {l}\n")).collect();
    format!(
        "transport_socket:\n  name: envoy.transport_sockets.tls\n  typed_config:\n    \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext\n{ctx}{extra}"
    )
}

fn trusted(dir: &Path) -> String {
    format!("common_tls_context:\n  validation_context:\n    trusted_ca: {{ filename: {} }}\n", p(dir, "ca.pem"))
}

fn with_client_cert(dir: &Path) -> String {
    format!(
        "common_tls_context:\n  tls_certificates:\n  - certificate_chain: {{ filename: {} }}\n    private_key: {{ filename: {} }}\n  validation_context:\n    trusted_ca: {{ filename: {} }}\n",
        p(dir, "client.pem"),
        p(dir, "client.key"),
        p(dir, "ca.pem")
    )
}

fn ssl_stat(gw: &Gateway, leaf: &str) -> u64 {
    gw.stat_opt(&format!("cluster.backend.ssl.{leaf}")).unwrap_or(0)
}

#[test]
fn trusted_ca_and_configured_sni_reach_the_server() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let nginx = Nginx::start(dir.path(), "server", "off");
    let ctx = format!("sni: upstream.example.com\n{}", trusted(dir.path()));
    let gw = Gateway::start(&basic_config("", "", &tls_cluster(&ctx, "")), &[nginx.addr], &[]);
    let mut c = Client::connect(gw.listener_addr);
    let r = c.get("/hello");
    assert_eq!(r.status, 200, "{r:?}\n{}", gw.stderr());
    assert_eq!(r.body_str(), "tls upstream\n");
    assert_eq!(r.header("x-sni"), Some("upstream.example.com"), "{r:?}");
    // Envoy's client default: TLS 1.2 at most.
    assert_eq!(r.header("x-tls-protocol"), Some("TLSv1.2"), "{r:?}");
    // The pooled connection keeps its TLS session: no second handshake.
    let r = c.get("/again");
    assert_eq!(r.status, 200);
    assert_eq!(ssl_stat(&gw, "handshake"), 1);
    assert_eq!(ssl_stat(&gw, "versions.TLSv1.2"), 1);
    assert_eq!(ssl_stat(&gw, "fail_verify_error"), 0);
}

#[test]
fn tls13_alpn_and_session_resumption() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let nginx = Nginx::start(dir.path(), "server", "off");
    let ctx = format!(
        "sni: upstream.example.com\nmax_session_keys: 4\n{}  alpn_protocols: [http/1.1]\n  tls_params: {{ tls_maximum_protocol_version: TLSv1_3 }}\n",
        trusted(dir.path())
    );
    // One request per upstream connection: every request handshakes anew.
    let options = r#"typed_extension_protocol_options:
  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
    "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
    common_http_protocol_options: { max_requests_per_connection: 1 }
    explicit_http_config: { http_protocol_options: {} }
"#;
    let gw = Gateway::start(&basic_config("", "", &tls_cluster(&ctx, options)), &[nginx.addr], &["--shards", "1"]);
    let mut reused = 0;
    for i in 0..4 {
        let r = Client::connect(gw.listener_addr).get(&format!("/r{i}"));
        assert_eq!(r.status, 200, "{r:?}\n{}", gw.stderr());
        assert_eq!(r.header("x-tls-protocol"), Some("TLSv1.3"), "{r:?}");
        assert_eq!(r.header("x-alpn"), Some("http/1.1"), "{r:?}");
        if r.header("x-session-reused") == Some("r") {
            reused += 1;
        }
    }
    assert_eq!(ssl_stat(&gw, "handshake"), 4);
    assert!(reused >= 1, "no TLS session was resumed");
    assert_eq!(ssl_stat(&gw, "session_reused"), reused);
}

#[test]
fn untrusted_server_certificate_is_a_connect_failure() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let nginx = Nginx::start(dir.path(), "server", "off");
    let ctx = format!(
        "common_tls_context:\n  validation_context:\n    trusted_ca: {{ filename: {} }}\n",
        p(dir.path(), "other-ca.pem")
    );
    let gw = Gateway::start(&basic_config("", "", &tls_cluster(&ctx, "")), &[nginx.addr], &[]);
    let r = Client::connect(gw.listener_addr).get("/");
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.body_str().contains("connection failure"), "{}", r.body_str());
    assert!(ssl_stat(&gw, "fail_verify_error") >= 1);
    assert_eq!(ssl_stat(&gw, "handshake"), 0);
    assert!(gw.stat("cluster.backend.upstream_cx_connect_fail") >= 1);
}

#[test]
fn san_mismatch_is_refused_and_a_matching_san_accepted() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let nginx = Nginx::start(dir.path(), "server", "off");
    let ctx = |san: &str| {
        format!(
            "{}    match_typed_subject_alt_names:\n    - san_type: DNS\n      matcher: {{ exact: {san} }}\n",
            trusted(dir.path())
        )
    };
    let gw = Gateway::start(&basic_config("", "", &tls_cluster(&ctx("other.example.com"), "")), &[nginx.addr], &[]);
    let r = Client::connect(gw.listener_addr).get("/");
    assert_eq!(r.status, 503, "{r:?}");
    assert!(ssl_stat(&gw, "fail_verify_san") >= 1);
    assert_eq!(ssl_stat(&gw, "fail_verify_error"), 0);
    drop(gw);
    let gw = Gateway::start(&basic_config("", "", &tls_cluster(&ctx("upstream.example.com"), "")), &[nginx.addr], &[]);
    let r = Client::connect(gw.listener_addr).get("/");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(ssl_stat(&gw, "fail_verify_san"), 0);
}

#[test]
fn client_certificate_is_presented_for_mtls() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let nginx = Nginx::start(dir.path(), "server", "on");
    let gw = Gateway::start(&basic_config("", "", &tls_cluster(&with_client_cert(dir.path()), "")), &[nginx.addr], &[]);
    let r = Client::connect(gw.listener_addr).get("/");
    assert_eq!(r.status, 200, "{r:?}\n{}", gw.stderr());
    assert_eq!(r.header("x-client-verify"), Some("SUCCESS"), "{r:?}");
    assert_eq!(r.header("x-client-subject"), Some("CN=meshgate-client"), "{r:?}");
}

#[test]
fn server_requiring_a_client_certificate_refuses_a_cluster_without_one() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let server = SServer::start(dir.path(), "server");
    // Without a client certificate: the handshake fails.
    let gw = Gateway::start(&basic_config("", "", &tls_cluster(&trusted(dir.path()), "")), &[server.addr], &[]);
    let r = Client::connect(gw.listener_addr).get("/");
    assert_eq!(r.status, 503, "{r:?}");
    assert!(ssl_stat(&gw, "connection_error") >= 1);
    assert_eq!(ssl_stat(&gw, "handshake"), 0);
    drop(gw);
    // With one: s_server's status page comes back.
    let gw =
        Gateway::start(&basic_config("", "", &tls_cluster(&with_client_cert(dir.path()), "")), &[server.addr], &[]);
    let r = Client::connect(gw.listener_addr).get("/");
    assert_eq!(r.status, 200, "{r:?}\n{}", gw.stderr());
    assert_eq!(ssl_stat(&gw, "handshake"), 1);
}

#[test]
fn tcp_proxy_to_a_tls_cluster_originates_tls() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let nginx = Nginx::start(dir.path(), "server", "off");
    let ctx = format!("sni: upstream.example.com\n{}", trusted(dir.path()));
    let ts: String = tls_cluster(&ctx, "").lines().map(|l| format!("    {l}\n")).collect();
    let yaml = format!(
        r#"admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {{{{ADMIN_PORT}}}} }} }}
static_resources:
  listeners:
  - name: tcp
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {{{{LISTEN_PORT}}}} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          cluster: backend
  clusters:
  - name: backend
    type: STATIC
    connect_timeout: 2s
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {{{{UPSTREAM_1_PORT}}}} }} }} }}
{ts}"#
    );
    let gw = Gateway::start(&yaml, &[nginx.addr], &[]);
    let mut s = TcpStream::connect(gw.listener_addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}\n{}", gw.stderr());
    assert!(text.to_ascii_lowercase().contains("x-sni: upstream.example.com"), "{text}");
    assert_eq!(ssl_stat(&gw, "handshake"), 1);
}

#[test]
fn http_health_checks_use_the_cluster_tls() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let nginx = Nginx::start(dir.path(), "server", "on");
    let hc = "health_checks:\n- timeout: 1s\n  interval: 0.2s\n  no_traffic_interval: 0.2s\n  unhealthy_threshold: 1\n  healthy_threshold: 1\n  http_health_check: { path: /healthz }\n";
    let gw = Gateway::start(&basic_config("", "", &tls_cluster(&with_client_cert(dir.path()), hc)), &[nginx.addr], &[]);
    let ok = gw.wait_stat("cluster.backend.health_check.success", 2, Duration::from_secs(10));
    assert!(ok >= 2, "health checks over TLS did not pass:\n{}", gw.stats());
    assert_eq!(gw.stat_opt("cluster.backend.health_check.network_failure").unwrap_or(0), 0);
    drop(gw);
    // Without the client certificate nginx answers 400: the checks fail.
    let gw = Gateway::start(&basic_config("", "", &tls_cluster(&trusted(dir.path()), hc)), &[nginx.addr], &[]);
    let failed = gw.wait_stat("cluster.backend.health_check.failure", 2, Duration::from_secs(10));
    assert!(failed >= 2, "{}", gw.stats());
    assert_eq!(gw.stat_opt("cluster.backend.health_check.success").unwrap_or(0), 0);
}

#[test]
fn upstream_tls_config_errors_name_their_field() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let cases = [
        ("allow_renegotiation: true\n".to_string(), "transport_socket.typed_config.allow_renegotiation"),
        ("auto_host_sni: true\n".to_string(), "transport_socket.typed_config.auto_host_sni"),
        (
            "common_tls_context:\n  validation_context:\n    trusted_ca: { filename: /nonexistent/ca.pem }\n"
                .to_string(),
            "common_tls_context.validation_context.trusted_ca.filename",
        ),
        (
            format!("{}  tls_params: {{ cipher_suites: [RC4-SHA] }}\n", trusted(dir.path())),
            "tls_params.cipher_suites[0]",
        ),
        (
            "common_tls_context:\n  tls_certificate_sds_secret_configs: [{ name: x }]\n".to_string(),
            "common_tls_context.tls_certificate_sds_secret_configs",
        ),
    ];
    let up: SocketAddr = "127.0.0.1:9".parse().unwrap();
    for (ctx, field) in cases {
        let out = validate_config(&basic_config("", "", &tls_cluster(&ctx, "")), &[up]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{ctx} was accepted");
        assert!(err.contains(field), "{ctx}: expected {field} in\n{err}");
    }
    // A DownstreamTlsContext on a cluster is refused.
    let wrong = tls_cluster("", "").replace("UpstreamTlsContext", "DownstreamTlsContext");
    let out = validate_config(&basic_config("", "", &wrong), &[up]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("UpstreamTlsContext"));
}

#[test]
fn client_certificate_from_an_sds_file_and_ca_from_a_static_secret() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let nginx = Nginx::start(dir.path(), "server", "on");
    std::fs::write(
        dir.path().join("sds.json"),
        format!(
            r#"{{"resources": [{{"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
                "name": "client_cert",
                "tls_certificate": {{"certificate_chain": {{"filename": "{}"}}, "private_key": {{"filename": "{}"}}}}}}]}}"#,
            p(dir.path(), "client.pem"),
            p(dir.path(), "client.key")
        ),
    )
    .unwrap();
    let ctx = format!(
        "common_tls_context:\n  tls_certificate_sds_secret_configs:\n  - name: client_cert\n    sds_config: {{ path_config_source: {{ path: {} }} }}\n  validation_context_sds_secret_config: {{ name: mesh_ca }}\n",
        p(dir.path(), "sds.json")
    );
    let secrets = format!(
        "  secrets:\n  - name: mesh_ca\n    validation_context: {{ trusted_ca: {{ filename: {} }} }}\n",
        p(dir.path(), "ca.pem")
    );
    let yaml =
        basic_config("", "", &tls_cluster(&ctx, "")).replacen("  clusters:\n", &format!("{secrets}  clusters:\n"), 1);
    let gw = Gateway::start(&yaml, &[nginx.addr], &[]);
    let r = Client::connect(gw.listener_addr).get("/");
    assert_eq!(r.status, 200, "{r:?}\n{}", gw.stderr());
    assert_eq!(r.header("x-client-verify"), Some("SUCCESS"), "{r:?}");
    assert_eq!(r.header("x-client-subject"), Some("CN=meshgate-client"), "{r:?}");
}
