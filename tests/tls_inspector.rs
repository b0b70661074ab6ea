//! End-to-end `envoy.filters.listener.tls_inspector` and filter-chain
//! matching on `transport_protocol` and `application_protocols`: one
//! listener serves plaintext HTTP and TLS (two certificates, the second
//! picked by the client's ALPN), with real clients (`openssl s_client`,
//! curl, a plain TCP client).  Config errors name their field.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use testkit::certs::{make_ca, make_leaf, p};
use testkit::{validate_config, Client, Gateway, Upstream};

const HCM: &str = r#"      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: mixed
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: backend }
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#;

fn tls_socket(dir: &Path, cert: &str) -> String {
    format!(
        r#"      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_certificates:
            - certificate_chain: {{ filename: {} }}
              private_key: {{ filename: {} }}
"#,
        p(dir, &format!("{cert}.pem")),
        p(dir, &format!("{cert}.key"))
    )
}

/// A listener with `listener_filters` (YAML list items at 4 spaces, or
/// empty) and the given chains (each a `filter_chain_match` flow mapping
/// or "", and a certificate name or "" for plaintext).
fn config(dir: &Path, listener_filters: &str, chains: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (m, cert) in chains {
        out.push_str("    - filters:\n");
        out.push_str(HCM);
        if !m.is_empty() {
            out.push_str(&format!("      filter_chain_match: {m}\n"));
        }
        if !cert.is_empty() {
            out.push_str(&tls_socket(dir, cert));
        }
    }
    let lf =
        if listener_filters.is_empty() { String::new() } else { format!("    listener_filters:\n{listener_filters}") };
    format!(
        r#"admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {{{{ADMIN_PORT}}}} }} }}
static_resources:
  listeners:
  - name: mixed
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {{{{LISTEN_PORT}}}} }} }}
{lf}    filter_chains:
{out}  clusters:
  - name: backend
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {{{{UPSTREAM_1_PORT}}}} }} }} }}
"#
    )
}

const INSPECTOR: &str = r#"    - name: envoy.filters.listener.tls_inspector
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector
"#;

/// `openssl s_client` with `args`; returns (success, output).
fn s_client(addr: SocketAddr, args: &[&str]) -> (bool, String) {
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string(), "-ign_eof"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl s_client");
    child.stdin.take().unwrap().write_all(b"GET /status/200 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn peer_subject(out: &str) -> Option<String> {
    out.lines().find_map(|l| l.strip_prefix("subject=").map(|s| s.replace(' ', "")))
}

#[test]
fn one_listener_serves_plaintext_and_tls_chains_picked_by_alpn() {
    let dir = tempfile::tempdir().unwrap();
    make_ca(dir.path(), "ca");
    make_leaf(dir.path(), "ca", "a", "a.example.com", &["DNS:a.example.com"]);
    make_leaf(dir.path(), "ca", "b", "b.example.com", &["DNS:b.example.com"]);
    let up = Upstream::start("up");
    let yaml = config(
        dir.path(),
        INSPECTOR,
        &[
            ("{ transport_protocol: raw_buffer }", ""),
            ("{ transport_protocol: tls }", "a"),
            ("{ transport_protocol: tls, application_protocols: [special] }", "b"),
        ],
    );
    let gw = Gateway::start(&yaml, &[up.addr], &[]);
    let addr = gw.listener_addr;

    // Plaintext HTTP on the same port, keep-alive included.
    let mut c = Client::connect(addr);
    for i in 0..3 {
        let r = c.get(&format!("/status/20{i}"));
        assert_eq!(r.status, 200 + i, "{r:?}\n{}", gw.stderr());
    }
    // TLS without ALPN (or another ALPN): the `tls` chain's certificate.
    let (ok, out) = s_client(addr, &[]);
    assert!(ok && out.contains("HTTP/1.1 200"), "{out}");
    assert_eq!(peer_subject(&out).as_deref(), Some("CN=a.example.com"), "{out}");
    let (ok, out) = s_client(addr, &["-alpn", "other"]);
    assert!(ok, "{out}");
    assert_eq!(peer_subject(&out).as_deref(), Some("CN=a.example.com"), "{out}");
    // ALPN `special` picks the chain that lists it.
    let (ok, out) = s_client(addr, &["-alpn", "special"]);
    assert!(ok && out.contains("HTTP/1.1 200"), "{out}");
    assert_eq!(peer_subject(&out).as_deref(), Some("CN=b.example.com"), "{out}");
    // curl over TLS with verification.
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert", &p(dir.path(), "ca.pem")])
        .args(["--resolve", &format!("a.example.com:{}:127.0.0.1", addr.port())])
        .args(["-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("https://a.example.com:{}/status/204", addr.port()))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "204", "{}", String::from_utf8_lossy(&out.stderr));
    let tls = format!("listener.127.0.0.1_{}.ssl", addr.port());
    assert_eq!(gw.stat(&format!("{tls}.handshake")), 4);
    assert_eq!(gw.stat(&format!("{tls}.connection_error")), 0);
    assert_eq!(gw.stat(&format!("listener.127.0.0.1_{}.no_filter_chain_match", addr.port())), 0);
}

#[test]
fn plaintext_without_a_plaintext_chain_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    make_ca(dir.path(), "ca");
    make_leaf(dir.path(), "ca", "a", "a.example.com", &["DNS:a.example.com"]);
    let up = Upstream::start("up");
    let yaml = config(dir.path(), INSPECTOR, &[("{ transport_protocol: tls }", "a")]);
    let gw = Gateway::start(&yaml, &[up.addr], &[]);
    let mut c = Client::connect(gw.listener_addr);
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(c.is_closed(std::time::Duration::from_secs(10)));
    let port = gw.listener_addr.port();
    assert_eq!(
        gw.wait_stat(&format!("listener.127.0.0.1_{port}.no_filter_chain_match"), 1, std::time::Duration::from_secs(5)),
        1
    );
    let (ok, out) = s_client(gw.listener_addr, &[]);
    assert!(ok && out.contains("HTTP/1.1 200"), "{out}");
}

#[test]
fn chain_matching_config_errors_name_their_field() {
    let dir = tempfile::tempdir().unwrap();
    make_ca(dir.path(), "ca");
    make_leaf(dir.path(), "ca", "a", "a.example.com", &["DNS:a.example.com"]);
    let up: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let chain = "static_resources.listeners[0].filter_chains";
    let cases: Vec<(String, String)> = vec![
        // Matching on the transport needs the inspector.
        (
            config(dir.path(), "", &[("{ transport_protocol: tls }", "a")]),
            format!("{chain}[0].filter_chain_match.transport_protocol"),
        ),
        (
            config(dir.path(), "", &[("{ application_protocols: [h2] }", "a")]),
            format!("{chain}[0].filter_chain_match.application_protocols"),
        ),
        // Mixing TLS and plaintext chains needs it too.
        (config(dir.path(), "", &[("", "a"), ("{ transport_protocol: raw_buffer }", "")]), format!("{chain}[1]")),
        // TLS passthrough is not supported.
        (
            config(
                dir.path(),
                INSPECTOR,
                &[("", "a"), ("{ transport_protocol: tls, server_names: [x.example.com] }", "")],
            ),
            format!("{chain}[1].filter_chain_match"),
        ),
        (
            config(dir.path(), INSPECTOR, &[("{ transport_protocol: quic }", "a")]),
            format!("{chain}[0].filter_chain_match.transport_protocol"),
        ),
        // Two chains that match the same connections.
        (
            config(
                dir.path(),
                INSPECTOR,
                &[("{ transport_protocol: tls }", "a"), ("{ transport_protocol: tls }", "a")],
            ),
            format!("{chain}[1].filter_chain_match"),
        ),
        // Other listener filters are not supported.
        (
            config(dir.path(), "    - name: envoy.filters.listener.http_inspector\n", &[("", "a")]),
            "static_resources.listeners[0].listener_filters[0]".to_string(),
        ),
    ];
    for (yaml, field) in cases {
        let out = validate_config(&yaml, &[up]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "accepted:\n{yaml}");
        assert!(err.contains(&field), "expected {field} in\n{err}");
    }
}
