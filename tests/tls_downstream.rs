//! End-to-end downstream TLS through a real `meshgate`, with OpenSSL's
//! `openssl s_client` and curl as clients: TLS 1.3 and 1.2 negotiate, 1.1
//! is refused; SNI picks the filter chain's certificate; mTLS refuses a
//! missing or untrusted client certificate and accepts a good one; a
//! certificate rotated on disk is served to new connections while an
//! established one keeps working; TCP proxy listeners terminate TLS too.
//!
//! Certificates are generated per test with the `openssl` CLI into a
//! temporary directory (nothing secret is committed).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testkit::certs::{make_ca, make_leaf, p};
use testkit::{Gateway, Upstream};

// ------------------------------------------------------------------ config

/// One filter chain's TLS: `server_names` (may be empty), certificate
/// `cert` (`<cert>.pem`/`.key` in `dir`), and extra DownstreamTlsContext /
/// CommonTlsContext YAML (column 0).
struct Chain<'a> {
    server_names: &'a [&'a str],
    cert: &'a str,
    common_extra: &'a str,
    context_extra: &'a str,
}

fn indent(s: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    s.trim_matches('\n').lines().filter(|l| !l.trim().is_empty()).map(|l| format!("{pad}{l}\n")).collect()
}

fn chains_yaml(dir: &Path, chains: &[Chain<'_>], filters: &str) -> String {
    let mut out = String::new();
    for c in chains {
        out.push_str("    - filters:\n");
        out.push_str(&indent(filters, 6));
        if !c.server_names.is_empty() {
            out.push_str(&format!("      filter_chain_match: {{ server_names: [{}] }}\n", c.server_names.join(", ")));
        }
        out.push_str(&format!(
            r#"      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
{context_extra}          common_tls_context:
            tls_certificates:
            - certificate_chain: {{ filename: {chain} }}
              private_key: {{ filename: {key} }}
{common_extra}"#,
            chain = p(dir, &format!("{}.pem", c.cert)),
            key = p(dir, &format!("{}.key", c.cert)),
            context_extra = indent(c.context_extra, 10),
            common_extra = indent(c.common_extra, 12),
        ));
    }
    out
}

const HCM: &str = r#"
- name: envoy.filters.network.http_connection_manager
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
    stat_prefix: tls_in
    route_config:
      virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
        - match: { prefix: / }
          route: { cluster: backend }
    http_filters:
    - name: envoy.filters.http.router
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#;

fn config(dir: &Path, chains: &[Chain<'_>], filters: &str) -> String {
    format!(
        r#"admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {{{{ADMIN_PORT}}}} }} }}
static_resources:
  listeners:
  - name: tls
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {{{{LISTEN_PORT}}}} }} }}
    filter_chains:
{chains}  clusters:
  - name: backend
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {{{{UPSTREAM_1_PORT}}}} }} }} }}
"#,
        chains = chains_yaml(dir, chains, filters)
    )
}

fn simple(cert: &str) -> Vec<Chain<'_>> {
    vec![Chain { server_names: &[], cert, common_extra: "", context_extra: "" }]
}

// ------------------------------------------------------------------ clients

/// `openssl s_client` with `args`, sending `input` and closing; returns
/// (success, stdout + stderr).
fn s_client(addr: SocketAddr, args: &[&str], input: &str) -> (bool, String) {
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string(), "-ign_eof"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl s_client");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

const GET: &str = "GET /status/200 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

fn curl(args: &[&str]) -> (bool, String) {
    let out = Command::new("curl").args(["-sS", "--max-time", "10"]).args(args).output().expect("curl");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn https(host: &str, addr: SocketAddr, path: &str) -> String {
    format!("https://{host}:{}{path}", addr.port())
}

fn resolve(host: &str, addr: SocketAddr) -> String {
    format!("{host}:{}:127.0.0.1", addr.port())
}

fn peer_subject(s_client_output: &str) -> Option<String> {
    s_client_output.lines().find_map(|l| l.strip_prefix("subject=").map(|s| s.replace(' ', "")))
}

// ------------------------------------------------------------------ tests

#[test]
fn tls13_and_tls12_negotiate_and_older_versions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    make_ca(dir.path(), "ca");
    make_leaf(dir.path(), "ca", "server", "server.example.com", &["DNS:server.example.com"]);
    let up = Upstream::start("up");
    let gw = Gateway::start(&config(dir.path(), &simple("server"), HCM), &[up.addr], &[]);
    let addr = gw.listener_addr;

    let (ok, out) = s_client(addr, &["-tls1_3", "-servername", "server.example.com"], GET);
    assert!(ok && out.contains("TLSv1.3") && out.contains("HTTP/1.1 200"), "{out}");
    let (ok, out) = s_client(addr, &["-tls1_2", "-servername", "server.example.com"], GET);
    assert!(ok && out.contains("TLSv1.2") && out.contains("HTTP/1.1 200"), "{out}");
    for old in ["-tls1_1", "-tls1"] {
        let (_, out) =
            s_client(addr, &[old, "-cipher", "DEFAULT@SECLEVEL=0", "-servername", "server.example.com"], GET);
        assert!(!out.contains("HTTP/1.1 200"), "{old} got through:\n{out}");
    }
    // curl verifies the chain against the CA.
    let ca = p(dir.path(), "ca.pem");
    let (ok, out) = curl(&[
        "--cacert",
        &ca,
        "--resolve",
        &resolve("server.example.com", addr),
        "--tlsv1.3",
        &https("server.example.com", addr, "/status/201"),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
    ]);
    assert!(ok && out.trim() == "201", "{out}");
    let tls_stat = format!("listener.127.0.0.1_{}.ssl", addr.port());
    assert_eq!(gw.stat(&format!("{tls_stat}.handshake")), 3);
    assert_eq!(gw.stat(&format!("{tls_stat}.versions.TLSv1.3")), 2);
    assert_eq!(gw.stat(&format!("{tls_stat}.versions.TLSv1.2")), 1);
    assert!(gw.stat(&format!("{tls_stat}.connection_error")) >= 2);
    // A plaintext client on the TLS port gets nothing.
    let mut plain = std::net::TcpStream::connect(addr).unwrap();
    plain.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    plain.write_all(GET.as_bytes()).unwrap();
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(!String::from_utf8_lossy(&got).contains("200"));
}

#[test]
fn sni_picks_the_filter_chain_certificate() {
    let dir = tempfile::tempdir().unwrap();
    make_ca(dir.path(), "ca");
    make_leaf(dir.path(), "ca", "a", "a.example.com", &["DNS:a.example.com"]);
    make_leaf(dir.path(), "ca", "wild", "wild.example.org", &["DNS:*.example.org"]);
    let chains = [
        Chain { server_names: &["a.example.com"], cert: "a", common_extra: "", context_extra: "" },
        Chain { server_names: &["\"*.example.org\""], cert: "wild", common_extra: "", context_extra: "" },
    ];
    let up = Upstream::start("up");
    let gw = Gateway::start(&config(dir.path(), &chains, HCM), &[up.addr], &[]);
    let addr = gw.listener_addr;
    let (ok, out) = s_client(addr, &["-servername", "a.example.com"], GET);
    assert!(ok, "{out}");
    assert_eq!(peer_subject(&out).as_deref(), Some("CN=a.example.com"), "{out}");
    let (ok, out) = s_client(addr, &["-servername", "api.example.org"], GET);
    assert!(ok, "{out}");
    assert_eq!(peer_subject(&out).as_deref(), Some("CN=wild.example.org"), "{out}");
    // No chain for this name and no default chain: refused.
    let (_, out) = s_client(addr, &["-servername", "other.example.net"], GET);
    assert!(!out.contains("HTTP/1.1 200"), "{out}");
    assert_eq!(gw.stat(&format!("listener.127.0.0.1_{}.no_filter_chain_match", addr.port())), 1);
    let ca = p(dir.path(), "ca.pem");
    let (ok, out) = curl(&[
        "--cacert",
        &ca,
        "--resolve",
        &resolve("api.example.org", addr),
        &https("api.example.org", addr, "/status/200"),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
    ]);
    assert!(ok && out.trim() == "200", "{out}");
}

#[test]
fn mtls_requires_a_client_certificate_from_the_trusted_ca() {
    let dir = tempfile::tempdir().unwrap();
    make_ca(dir.path(), "ca");
    make_ca(dir.path(), "rogue");
    make_leaf(dir.path(), "ca", "server", "server.example.com", &["DNS:server.example.com"]);
    make_leaf(dir.path(), "ca", "client", "frontend", &["URI:spiffe://mesh/ns/default/sa/frontend"]);
    make_leaf(dir.path(), "rogue", "intruder", "intruder", &["URI:spiffe://mesh/ns/default/sa/frontend"]);
    let ca = p(dir.path(), "ca.pem");
    let common = format!("validation_context:\n  trusted_ca: {{ filename: {ca} }}");
    let chains = [Chain {
        server_names: &[],
        cert: "server",
        common_extra: &common,
        context_extra: "require_client_certificate: true",
    }];
    let up = Upstream::start("up");
    let gw = Gateway::start(&config(dir.path(), &chains, HCM), &[up.addr], &[]);
    let addr = gw.listener_addr;
    let url = https("server.example.com", addr, "/status/200");
    let host = resolve("server.example.com", addr);
    let (ok, out) = curl(&[
        "--cacert",
        &ca,
        "--resolve",
        &host,
        "--cert",
        &p(dir.path(), "client.pem"),
        "--key",
        &p(dir.path(), "client.key"),
        &url,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
    ]);
    assert!(ok && out.trim() == "200", "trusted client refused: {out}");
    let (ok, out) = curl(&["--cacert", &ca, "--resolve", &host, &url]);
    assert!(!ok, "no client certificate got through: {out}");
    let (ok, out) = curl(&[
        "--cacert",
        &ca,
        "--resolve",
        &host,
        "--cert",
        &p(dir.path(), "intruder.pem"),
        "--key",
        &p(dir.path(), "intruder.key"),
        &url,
    ]);
    assert!(!ok, "untrusted client certificate got through: {out}");
    let ssl = format!("listener.127.0.0.1_{}.ssl", addr.port());
    assert_eq!(gw.stat(&format!("{ssl}.handshake")), 1);
    assert_eq!(gw.wait_stat(&format!("{ssl}.fail_verify_no_cert"), 1, Duration::from_secs(5)), 1);
    assert_eq!(gw.wait_stat(&format!("{ssl}.fail_verify_error"), 1, Duration::from_secs(5)), 1);
}

#[test]
fn match_subject_alt_names_refuses_other_identities() {
    let dir = tempfile::tempdir().unwrap();
    make_ca(dir.path(), "ca");
    make_leaf(dir.path(), "ca", "server", "server", &["DNS:server.example.com"]);
    make_leaf(dir.path(), "ca", "frontend", "frontend", &["URI:spiffe://mesh/ns/default/sa/frontend"]);
    make_leaf(dir.path(), "ca", "batch", "batch", &["URI:spiffe://mesh/ns/default/sa/batch"]);
    let ca = p(dir.path(), "ca.pem");
    let common = format!(
        "validation_context:\n  trusted_ca: {{ filename: {ca} }}\n  match_typed_subject_alt_names:\n  - san_type: URI\n    matcher: {{ exact: \"spiffe://mesh/ns/default/sa/frontend\" }}"
    );
    let chains = [Chain {
        server_names: &[],
        cert: "server",
        common_extra: &common,
        context_extra: "require_client_certificate: true",
    }];
    let up = Upstream::start("up");
    let gw = Gateway::start(&config(dir.path(), &chains, HCM), &[up.addr], &[]);
    let addr = gw.listener_addr;
    let url = https("server.example.com", addr, "/status/200");
    let host = resolve("server.example.com", addr);
    let with = |who: &str| {
        curl(&[
            "--cacert",
            &ca,
            "--resolve",
            &host,
            "--cert",
            &p(dir.path(), &format!("{who}.pem")),
            "--key",
            &p(dir.path(), &format!("{who}.key")),
            &url,
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
    };
    let (ok, out) = with("frontend");
    assert!(ok && out.trim() == "200", "{out}");
    let (ok, out) = with("batch");
    assert!(!ok || out.trim() != "200", "batch got through: {out}");
    assert_eq!(
        gw.wait_stat(&format!("listener.127.0.0.1_{}.ssl.fail_verify_san", addr.port()), 1, Duration::from_secs(5)),
        1
    );
}

/// A long-lived `openssl s_client` session: requests are written to its
/// stdin and answers read from its stdout.
struct Session {
    child: std::process::Child,
    out: BufReader<std::process::ChildStdout>,
    subject: Option<String>,
}

impl Session {
    fn open(addr: SocketAddr) -> Session {
        let mut child = Command::new("openssl")
            .args(["s_client", "-connect", &addr.to_string(), "-servername", "server.example.com", "-ign_eof"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut subject = None;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut line = String::new();
            if out.read_line(&mut line).unwrap_or(0) == 0 || Instant::now() > deadline {
                break;
            }
            if let Some(s) = line.trim_end().strip_prefix("subject=") {
                subject = Some(s.replace(' ', ""));
            }
            if line.starts_with("---") && subject.is_some() && line.trim() == "---" {
                // The certificate summary is printed; the session is up.
                if line.trim() == "---" {
                    break;
                }
            }
        }
        Session { child, out, subject }
    }

    fn get(&mut self) -> String {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(b"GET /status/200 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        stdin.flush().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut line = String::new();
            if self.out.read_line(&mut line).unwrap_or(0) == 0 || Instant::now() > deadline {
                return String::new();
            }
            if line.starts_with("HTTP/1.1 ") {
                return line.trim().to_string();
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_rotated_certificate_serves_new_connections_while_old_ones_continue() {
    let dir = tempfile::tempdir().unwrap();
    make_ca(dir.path(), "ca");
    make_leaf(dir.path(), "ca", "v1", "v1.example.com", &["DNS:server.example.com"]);
    make_leaf(dir.path(), "ca", "v2", "v2.example.com", &["DNS:server.example.com"]);
    std::fs::copy(dir.path().join("v1.pem"), dir.path().join("live.pem")).unwrap();
    std::fs::copy(dir.path().join("v1.key"), dir.path().join("live.key")).unwrap();
    let up = Upstream::start("up");
    let gw = Gateway::start(&config(dir.path(), &simple("live"), HCM), &[up.addr], &["--shards", "1"]);
    let addr = gw.listener_addr;
    let mut old = Session::open(addr);
    assert_eq!(old.subject.as_deref(), Some("CN=v1.example.com"));
    assert_eq!(old.get(), "HTTP/1.1 200 OK");
    // Rotate: new files renamed over the old ones, as cert managers do.
    std::thread::sleep(Duration::from_millis(1100));
    for ext in ["key", "pem"] {
        let tmp = dir.path().join(format!("live.{ext}.tmp"));
        std::fs::copy(dir.path().join(format!("v2.{ext}")), &tmp).unwrap();
        std::fs::rename(&tmp, dir.path().join(format!("live.{ext}"))).unwrap();
    }
    std::thread::sleep(Duration::from_millis(1200));
    // The first new connection may trigger the reload check itself.
    let deadline = Instant::now() + Duration::from_secs(10);
    let fresh = loop {
        let (ok, out) = s_client(addr, &["-servername", "server.example.com"], GET);
        assert!(ok, "{out}");
        let subject = peer_subject(&out);
        if subject.as_deref() == Some("CN=v2.example.com") || Instant::now() > deadline {
            break subject;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(fresh.as_deref(), Some("CN=v2.example.com"));
    // The connection made before the rotation still works.
    assert_eq!(old.get(), "HTTP/1.1 200 OK");
}

const TCP_PROXY: &str = r#"
- name: envoy.filters.network.tcp_proxy
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
    stat_prefix: tls_tcp
    cluster: backend
"#;

#[test]
fn tcp_proxy_listeners_terminate_tls() {
    let dir = tempfile::tempdir().unwrap();
    make_ca(dir.path(), "ca");
    make_leaf(dir.path(), "ca", "server", "server.example.com", &["DNS:server.example.com"]);
    let up = Upstream::start("up");
    let gw = Gateway::start(&config(dir.path(), &simple("server"), TCP_PROXY), &[up.addr], &[]);
    let addr = gw.listener_addr;
    let ca = p(dir.path(), "ca.pem");
    // curl speaks HTTP over TLS to the listener; the proxy hands the
    // plaintext bytes to the HTTP upstream.
    let (ok, out) = curl(&[
        "--cacert",
        &ca,
        "--resolve",
        &resolve("server.example.com", addr),
        &https("server.example.com", addr, "/status/202"),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
    ]);
    assert!(ok && out.trim() == "202", "{out}");
    assert_eq!(gw.stat("tcp.tls_tcp.downstream_cx_total"), 1);
}

#[test]
fn tls_config_errors_name_their_field() {
    let dir = tempfile::tempdir().unwrap();
    make_ca(dir.path(), "ca");
    make_leaf(dir.path(), "ca", "server", "server", &["DNS:server"]);
    let base = "static_resources.listeners[0].filter_chains[0].transport_socket.typed_config.common_tls_context";
    let cases: Vec<(String, String, &str)> = vec![
        (
            "tls_params: { tls_minimum_protocol_version: TLSv1_1 }".into(),
            format!("{base}.tls_params.tls_minimum_protocol_version"),
            "TLSv1_1 is not supported",
        ),
        (
            "tls_params: { cipher_suites: [ ECDHE-RSA-AES128-SHA ] }".into(),
            format!("{base}.tls_params.cipher_suites[0]"),
            "unsupported cipher suite",
        ),
        (
            "tls_params: { ecdh_curves: [ X25519 ] }".into(),
            format!("{base}.tls_params.ecdh_curves"),
            "unsupported field",
        ),
    ];
    for (extra, path, words) in cases {
        let chains = [Chain { server_names: &[], cert: "server", common_extra: &extra, context_extra: "" }];
        let out = testkit::validate_config(&config(dir.path(), &chains, HCM), &["127.0.0.1:9".parse().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.lines().any(|l| l.contains(&path) && l.contains(words)), "no {path} / {words}:\n{stderr}");
    }
    // A missing certificate file.
    let missing = config(dir.path(), &simple("nope"), HCM);
    let out = testkit::validate_config(&missing, &["127.0.0.1:9".parse().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("{base}.tls_certificates[0].certificate_chain.filename")), "{stderr}");
}

#[allow(dead_code)]
fn unused(_: PathBuf) {}

#[test]
fn rbac_authenticated_principals_allow_the_listed_service_only() {
    let dir = tempfile::tempdir().unwrap();
    make_ca(dir.path(), "ca");
    make_leaf(dir.path(), "ca", "server", "server", &["DNS:server.example.com"]);
    make_leaf(dir.path(), "ca", "frontend", "frontend", &["URI:spiffe://mesh/ns/default/sa/frontend"]);
    make_leaf(dir.path(), "ca", "batch", "batch", &["URI:spiffe://mesh/ns/default/sa/batch", "DNS:batch.mesh"]);
    let ca = p(dir.path(), "ca.pem");
    let common = format!("validation_context:\n  trusted_ca: {{ filename: {ca} }}");
    let chains = [Chain {
        server_names: &[],
        cert: "server",
        common_extra: &common,
        context_extra: "require_client_certificate: true",
    }];
    let hcm = HCM.replace(
        "    http_filters:\n",
        r#"    http_filters:
    - name: envoy.filters.http.rbac
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
        rules:
          action: ALLOW
          policies:
            frontend-only:
              permissions: [{ any: true }]
              principals: [{ authenticated: { principal_name: { exact: "spiffe://mesh/ns/default/sa/frontend" } } }]
"#,
    );
    let up = Upstream::start("up");
    let gw = Gateway::start(&config(dir.path(), &chains, &hcm), &[up.addr], &[]);
    let addr = gw.listener_addr;
    let url = https("server.example.com", addr, "/status/200");
    let host = resolve("server.example.com", addr);
    let status = |who: &str| {
        let (ok, out) = curl(&[
            "--cacert",
            &ca,
            "--resolve",
            &host,
            "--cert",
            &p(dir.path(), &format!("{who}.pem")),
            "--key",
            &p(dir.path(), &format!("{who}.key")),
            &url,
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ]);
        assert!(ok, "{out}");
        out.trim().to_string()
    };
    assert_eq!(status("frontend"), "200");
    assert_eq!(status("batch"), "403");
    assert_eq!(gw.stat("http.tls_in.rbac.allowed"), 1);
    assert_eq!(gw.stat("http.tls_in.rbac.denied"), 1);

    // The network filter on a TCP proxy listener closes the other service.
    let network = r#"
- name: envoy.filters.network.rbac
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC
    stat_prefix: mesh
    rules:
      action: ALLOW
      policies:
        frontend-only:
          permissions: [{ any: true }]
          principals: [{ authenticated: { principal_name: { prefix: "spiffe://mesh/ns/default/sa/front" } } }]
"#;
    let filters = format!("{network}{TCP_PROXY}");
    let gw = Gateway::start(&config(dir.path(), &chains, &filters), &[up.addr], &[]);
    let addr = gw.listener_addr;
    let url = https("server.example.com", addr, "/status/200");
    let host = resolve("server.example.com", addr);
    let run = |who: &str| {
        curl(&[
            "--cacert",
            &ca,
            "--resolve",
            &host,
            "--cert",
            &p(dir.path(), &format!("{who}.pem")),
            "--key",
            &p(dir.path(), &format!("{who}.key")),
            &url,
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
    };
    let (ok, out) = run("frontend");
    assert!(ok && out.trim() == "200", "{out}");
    let (ok, out) = run("batch");
    assert!(!ok || out.trim() != "200", "batch got through the TCP proxy: {out}");
    assert_eq!(gw.wait_stat("mesh.rbac.denied", 1, Duration::from_secs(5)), 1);
}

/// The value of `name` in mg-upstream's `/echo` JSON (None: absent).
fn echoed_header(json: &str, name: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
    v["headers"]
        .as_array()?
        .iter()
        .find_map(|h| (h[0].as_str()?.eq_ignore_ascii_case(name)).then(|| h[1].as_str().unwrap_or("").to_string()))
}

#[test]
fn x_forwarded_client_cert_follows_forward_client_cert_details() {
    let dir = tempfile::tempdir().unwrap();
    make_ca(dir.path(), "ca");
    make_leaf(
        dir.path(),
        "ca",
        "server",
        "server",
        &["DNS:server.example.com", "URI:spiffe://mesh/ns/edge/sa/gateway"],
    );
    make_leaf(
        dir.path(),
        "ca",
        "client",
        "frontend",
        &["URI:spiffe://mesh/ns/default/sa/frontend", "DNS:frontend.mesh"],
    );
    let ca = p(dir.path(), "ca.pem");
    // The client certificate's SHA-256, as XFCC's Hash carries it.
    let fp = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in", &p(dir.path(), "client.pem")])
        .output()
        .unwrap();
    let fp = String::from_utf8_lossy(&fp.stdout);
    let hash: String = fp.trim().rsplit('=').next().unwrap().replace(':', "").to_ascii_lowercase();
    let common = format!("validation_context:\n  trusted_ca: {{ filename: {ca} }}");
    let chains = [Chain { server_names: &[], cert: "server", common_extra: &common, context_extra: "" }];
    let up = Upstream::start("up");
    let run = |hcm_extra: &str, with_cert: bool| {
        let hcm =
            HCM.replace("    stat_prefix: tls_in\n", &format!("    stat_prefix: tls_in\n{}", indent(hcm_extra, 4)));
        let gw = Gateway::start(&config(dir.path(), &chains, &hcm), &[up.addr], &[]);
        let addr = gw.listener_addr;
        let host = resolve("server.example.com", addr);
        let url = https("server.example.com", addr, "/echo");
        let (cert, key) = (p(dir.path(), "client.pem"), p(dir.path(), "client.key"));
        let mut args = vec!["--cacert", &ca, "--resolve", &host, "-H", "x-forwarded-client-cert: By=spoofed", &url];
        if with_cert {
            args.extend(["--cert", &cert, "--key", &key]);
        }
        let (ok, out) = curl(&args);
        assert!(ok, "{out}");
        echoed_header(&out, "x-forwarded-client-cert")
    };
    // SANITIZE (the default) drops it.
    assert_eq!(run("", true), None);
    // SANITIZE_SET replaces it with this hop's element.
    let set = "forward_client_cert_details: SANITIZE_SET\nset_current_client_cert_details: { subject: true, uri: true, dns: true }";
    let want = format!(
        "By=spiffe://mesh/ns/edge/sa/gateway;Hash={hash};Subject=\"CN=frontend\";URI=spiffe://mesh/ns/default/sa/frontend;DNS=frontend.mesh"
    );
    assert_eq!(run(set, true), Some(want.clone()));
    // ...and removes it from a client without a certificate.
    assert_eq!(run(set, false), None);
    // APPEND_FORWARD appends.
    let append = "forward_client_cert_details: APPEND_FORWARD\nset_current_client_cert_details: { subject: true, uri: true, dns: true }";
    assert_eq!(run(append, true), Some(format!("By=spoofed,{want}")));
    // FORWARD_ONLY forwards as is on mTLS; ALWAYS_FORWARD_ONLY always.
    assert_eq!(run("forward_client_cert_details: FORWARD_ONLY", true).as_deref(), Some("By=spoofed"));
    assert_eq!(run("forward_client_cert_details: FORWARD_ONLY", false), None);
    assert_eq!(run("forward_client_cert_details: ALWAYS_FORWARD_ONLY", false).as_deref(), Some("By=spoofed"));
    // Cert carries the URL-encoded PEM.
    let with_cert =
        run("forward_client_cert_details: SANITIZE_SET\nset_current_client_cert_details: { cert: true }", true)
            .unwrap();
    assert!(with_cert.contains(";Cert=\"-----BEGIN%20CERTIFICATE-----%0A"), "{with_cert}");
}

#[test]
fn requests_over_tls_are_forwarded_as_https() {
    let dir = tempfile::tempdir().unwrap();
    make_ca(dir.path(), "ca");
    make_leaf(dir.path(), "ca", "server", "server", &["DNS:server.example.com"]);
    let up = Upstream::start("up");
    let hcm = HCM.replace("    stat_prefix: tls_in\n", "    stat_prefix: tls_in\n    use_remote_address: true\n");
    let gw = Gateway::start(&config(dir.path(), &simple("server"), &hcm), &[up.addr], &[]);
    let addr = gw.listener_addr;
    let (ok, out) = curl(&[
        "--cacert",
        &p(dir.path(), "ca.pem"),
        "--resolve",
        &resolve("server.example.com", addr),
        &https("server.example.com", addr, "/echo"),
    ]);
    assert!(ok, "{out}");
    assert_eq!(echoed_header(&out, "x-forwarded-proto").as_deref(), Some("https"), "{out}");
}

// ------------------------------------------------------------------ SDS

/// The listener of `config(dir, simple(..))` with its certificate taken
/// from SDS: `sds_ref` replaces the `tls_certificates` list (YAML at the
/// list's column), `static_secrets` (column 2, may be empty) is appended
/// to `static_resources`.
fn sds_config(dir: &Path, sds_ref: &str, static_secrets: &str) -> String {
    let plain = config(dir, &simple("unused"), HCM);
    let certs = format!(
        "            tls_certificates:\n            - certificate_chain: {{ filename: {} }}\n              private_key: {{ filename: {} }}\n",
        p(dir, "unused.pem"),
        p(dir, "unused.key")
    );
    assert!(plain.contains(&certs));
    format!("{}{}", plain.replace(&certs, &indent(sds_ref, 12)), indent(static_secrets, 2))
}

/// An SDS file (a DiscoveryResponse) with one `tls_certificate` secret
/// `name` pointing at `<cert>.pem` / `<key>.key`, written atomically.
fn write_sds_file(dir: &Path, file: &str, name: &str, cert: &str, key: &str) {
    let text = format!(
        r#"resources:
- "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret
  name: {name}
  tls_certificate:
    certificate_chain: {{ filename: {chain} }}
    private_key: {{ filename: {key} }}
"#,
        chain = p(dir, &format!("{cert}.pem")),
        key = p(dir, &format!("{key}.key")),
    );
    let tmp = dir.join(format!("{file}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(file)).unwrap();
}

/// New `s_client` connections until one sees `want` (or 10 s pass).
fn subject_of_new_connections(addr: SocketAddr, want: &str) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (ok, out) = s_client(addr, &["-servername", "server.example.com"], GET);
        assert!(ok && out.contains("HTTP/1.1 200"), "{out}");
        let subject = peer_subject(&out);
        if subject.as_deref() == Some(want) || Instant::now() > deadline {
            return subject;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn sds_file_certificate_rotates_for_new_connections_and_a_bad_secret_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    make_ca(dir.path(), "ca");
    make_leaf(dir.path(), "ca", "v1", "v1.example.com", &["DNS:server.example.com"]);
    make_leaf(dir.path(), "ca", "v2", "v2.example.com", &["DNS:server.example.com"]);
    write_sds_file(dir.path(), "sds.yaml", "server_cert", "v1", "v1");
    let sds_ref = format!(
        "tls_certificate_sds_secret_configs:\n- name: server_cert\n  sds_config:\n    path_config_source: {{ path: {} }}\n",
        p(dir.path(), "sds.yaml")
    );
    let up = Upstream::start("up");
    let gw = Gateway::start(&sds_config(dir.path(), &sds_ref, ""), &[up.addr], &["--shards", "1"]);
    let addr = gw.listener_addr;
    // curl verifies the certificate the SDS file names.
    let (ok, out) = curl(&[
        "--cacert",
        &p(dir.path(), "ca.pem"),
        "--resolve",
        &resolve("server.example.com", addr),
        &https("server.example.com", addr, "/status/200"),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
    ]);
    assert!(ok && out.trim() == "200", "{out}\n{}", gw.stderr());
    let mut old = Session::open(addr);
    assert_eq!(old.subject.as_deref(), Some("CN=v1.example.com"));
    assert_eq!(old.get(), "HTTP/1.1 200 OK");

    // A secret whose key does not match its certificate is refused: the
    // last good one keeps serving.
    std::thread::sleep(Duration::from_millis(1100));
    write_sds_file(dir.path(), "sds.yaml", "server_cert", "v2", "v1");
    std::thread::sleep(Duration::from_millis(1200));
    for _ in 0..3 {
        let (ok, out) = s_client(addr, &["-servername", "server.example.com"], GET);
        assert!(ok && out.contains("HTTP/1.1 200"), "{out}");
        assert_eq!(peer_subject(&out).as_deref(), Some("CN=v1.example.com"));
    }
    assert!(gw.stderr().contains("keeping the previous ones"), "{}", gw.stderr());

    // The SDS file now names the v2 pair: new connections get it.
    std::thread::sleep(Duration::from_millis(1100));
    write_sds_file(dir.path(), "sds.yaml", "server_cert", "v2", "v2");
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(subject_of_new_connections(addr, "CN=v2.example.com").as_deref(), Some("CN=v2.example.com"));
    // The connection made before the rotation still works.
    assert_eq!(old.get(), "HTTP/1.1 200 OK");
}

#[test]
fn static_secrets_and_sds_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    make_ca(dir.path(), "ca");
    make_leaf(dir.path(), "ca", "server", "static.example.com", &["DNS:server.example.com"]);
    // A secret from static_resources.secrets, referenced by name only.
    let secrets = format!(
        "secrets:\n- name: static_cert\n  tls_certificate:\n    certificate_chain: {{ filename: {} }}\n    private_key: {{ filename: {} }}\n",
        p(dir.path(), "server.pem"),
        p(dir.path(), "server.key")
    );
    let by_name = "tls_certificate_sds_secret_configs: [ { name: static_cert } ]";
    let up = Upstream::start("up");
    let gw = Gateway::start(&sds_config(dir.path(), by_name, &secrets), &[up.addr], &[]);
    let (ok, out) = s_client(gw.listener_addr, &["-servername", "server.example.com"], GET);
    assert!(ok && out.contains("HTTP/1.1 200"), "{out}");
    assert_eq!(peer_subject(&out).as_deref(), Some("CN=static.example.com"));
    drop(gw);

    let base = "static_resources.listeners[0].filter_chains[0].transport_socket.typed_config.common_tls_context";
    std::fs::write(
        dir.path().join("bad.yaml"),
        "resources:\n- \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret\n  name: s\n  generic_secret: { secret: { inline_string: x } }\n",
    )
    .unwrap();
    let sds_file = |file: &str| {
        format!(
            "tls_certificate_sds_secret_configs:\n- name: s\n  sds_config: {{ path_config_source: {{ path: {} }} }}\n",
            p(dir.path(), file)
        )
    };
    let cases: Vec<(String, String, String, &str)> = vec![
        (by_name.into(), String::new(), format!("{base}.tls_certificate_sds_secret_configs[0]"), "no secret named"),
        (
            by_name.into(),
            "secrets:\n- name: static_cert\n  tls_certificate: { certificate_chain: { filename: /nonexistent.pem }, private_key: { inline_string: x } }\n"
                .into(),
            "static_resources.secrets[0].tls_certificate.certificate_chain.filename".into(),
            "cannot read",
        ),
        (
            "tls_certificate_sds_secret_configs: [ { name: s, sds_config: { ads: {} } } ]".into(),
            String::new(),
            format!("{base}.tls_certificate_sds_secret_configs[0].sds_config.ads"),
            "LDS/CDS",
        ),
        (sds_file("missing.yaml"), String::new(), format!("{base}.tls_certificate_sds_secret_configs[0].sds_config"), "cannot read SDS file"),
        (sds_file("bad.yaml"), String::new(), "resources[0].generic_secret".into(), "unsupported field"),
        (
            "tls_certificate_sds_secret_configs: [ { name: s, sds_config: { path_config_source: { path: /x }, api_config_source: { api_type: GRPC } } } ]"
                .into(),
            String::new(),
            String::new(),
            "",
        ),
    ];
    for (sds_ref, secrets, path, words) in cases {
        let out =
            testkit::validate_config(&sds_config(dir.path(), &sds_ref, &secrets), &["127.0.0.1:9".parse().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{sds_ref} was accepted");
        assert!(stderr.lines().any(|l| l.contains(&path) && l.contains(words)), "no {path} / {words}:\n{stderr}");
    }
}
