//! End-to-end downstream HTTP/2 through a real `meshgate` with real clients:
//! curl with `--http2-prior-knowledge` (h2c) and `--http2` over TLS (ALPN),
//! and h2load for many multiplexed streams, proxied to the HTTP/1.1 test
//! upstream.  Bodies are checked by FNV-64 checksums both ways; local
//! replies (404, RBAC 403) and response trailers travel over HTTP/2; the
//! HCM's `codec_type` decides which clients get HTTP/2.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use testkit::{fnv64_hex, pattern, Gateway, Upstream};

const HTTP_FILTERS_ROUTER: &str = r#"
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#;

/// One listener (optionally TLS with ALPN h2/http1.1) routing `/` to the
/// upstream, except `/local404` (no route) and `/denied` (RBAC deny).
fn config(hcm_extra: &str, tls: Option<&Path>) -> String {
    let transport = match tls {
        None => String::new(),
        Some(dir) => format!(
            r#"      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            alpn_protocols: [h2, http/1.1]
            tls_certificates:
            - certificate_chain: {{ filename: {} }}
              private_key: {{ filename: {} }}
"#,
            dir.join("cert.pem").display(),
            dir.join("key.pem").display()
        ),
    };
    format!(
        r#"admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {{{{ADMIN_PORT}}}} }} }}
static_resources:
  listeners:
  - name: h2
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {{{{LISTEN_PORT}}}} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
{hcm_extra}          http_filters:
          - name: envoy.filters.http.rbac
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
              rules:
                action: DENY
                policies:
                  denied-path:
                    permissions: [{{ url_path: {{ path: {{ prefix: /denied }} }} }}]
                    principals: [{{ any: true }}]
{router}          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: /local404 }}
                direct_response: {{ status: 404 }}
              - match: {{ prefix: /dead }}
                route: {{ cluster: dead }}
              - match: {{ prefix: /delay }}
                route:
                  cluster: backend
                  max_stream_duration: {{ grpc_timeout_header_max: 5s }}
              - match: {{ prefix: / }}
                route: {{ cluster: backend }}
{transport}  clusters:
  - name: backend
    type: STATIC
    # 400 concurrent streams open up to 400 upstream HTTP/1.1 connections at
    # once: some SYNs overflow the test upstream's accept backlog and are
    # retransmitted after 1 s, so the connect timeout leaves room for that.
    connect_timeout: 5s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http_protocol_options: {{ enable_trailers: true }}
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {{{{UPSTREAM_1_PORT}}}} }} }} }}
  - name: dead
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: dead
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {{{{UPSTREAM_2_PORT}}}} }} }} }}
"#,
        hcm_extra = indent(hcm_extra, 10),
        router = HTTP_FILTERS_ROUTER.trim_start_matches('\n'),
    )
}

fn indent(s: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    s.trim_matches('\n').lines().filter(|l| !l.trim().is_empty()).map(|l| format!("{pad}{l}\n")).collect()
}

fn start(hcm_extra: &str, tls: Option<&Path>) -> (Upstream, Gateway) {
    let up = Upstream::start("h2-backend");
    let gw = Gateway::start(&config(hcm_extra, tls), &[up.addr, testkit::closed_addr()], &[]);
    (up, gw)
}

/// curl with `args`; returns (exit ok, stdout, stderr).
fn curl(args: &[&str]) -> (bool, Vec<u8>, String) {
    let out = Command::new("curl").args(["-sS", "--max-time", "20"]).args(args).output().expect("run curl");
    (out.status.success(), out.stdout, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn url(addr: SocketAddr, path: &str) -> String {
    format!("http://127.0.0.1:{}{path}", addr.port())
}

/// `-w` output after the body: "<http_version> <status>".
const WRITE_OUT: &str = "\n%{http_version} %{response_code}";

fn version_and_status(stdout: &[u8]) -> (String, String, Vec<u8>) {
    let text = String::from_utf8_lossy(stdout);
    let at = text.rfind('\n').expect("write-out line");
    let tail = text[at + 1..].to_string();
    let mut it = tail.split(' ');
    let v = it.next().unwrap_or("").to_string();
    let s = it.next().unwrap_or("").to_string();
    (v, s, stdout[..at].to_vec())
}

#[test]
fn prior_knowledge_get_and_large_bodies_both_ways() {
    let (_up, gw) = start("", None);
    let a = gw.listener_addr;

    let (ok, out, err) = curl(&["--http2-prior-knowledge", "-w", WRITE_OUT, &url(a, "/echo?x=1")]);
    assert!(ok, "{err}");
    let (version, status, body) = version_and_status(&out);
    assert_eq!((version.as_str(), status.as_str()), ("2", "200"), "{}", String::from_utf8_lossy(&body));
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("\"path\":\"/echo?x=1\""), "{body}");
    // :authority became Host; the upstream saw the gateway's forwarding headers.
    assert!(body.contains(&format!("127.0.0.1:{}", a.port())), "{body}");
    assert!(body.contains("x-forwarded-proto"), "{body}");

    // 3 MiB up (content-length framed by curl), checksum computed by the upstream.
    let dir = tempfile::tempdir().unwrap();
    let upload = pattern(3 * 1024 * 1024 + 7);
    let file = dir.path().join("up.bin");
    std::fs::write(&file, &upload).unwrap();
    let data_arg = format!("@{}", file.display());
    let (ok, out, err) =
        curl(&["--http2-prior-knowledge", "-w", WRITE_OUT, "--data-binary", &data_arg, &url(a, "/upload")]);
    assert!(ok, "{err}");
    let (version, status, body) = version_and_status(&out);
    assert_eq!((version.as_str(), status.as_str()), ("2", "200"));
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains(&format!("\"body_len\":{}", upload.len())), "{body}");
    assert!(body.contains(&fnv64_hex(&upload)), "{body}");

    // Chunked up (no content-length: the gateway frames it chunked upstream).
    let (ok, out, err) = curl(&[
        "--http2-prior-knowledge",
        "-H",
        "content-length:",
        "-H",
        "transfer-encoding: chunked",
        "--data-binary",
        &data_arg,
        &url(a, "/upload"),
    ]);
    assert!(ok, "{err}");
    let body = String::from_utf8_lossy(&out);
    assert!(body.contains(&fnv64_hex(&upload)), "{body}");

    // 5 MB down, content-length framed.
    let (ok, out, err) = curl(&["--http2-prior-knowledge", &url(a, "/bytes/5000000")]);
    assert!(ok, "{err}");
    assert_eq!(out.len(), 5_000_000);
    assert_eq!(fnv64_hex(&out), fnv64_hex(&pattern(5_000_000)));

    assert!(gw.stat("http.ingress.downstream_cx_http2_total") >= 4);
    assert!(gw.stat("http.ingress.downstream_rq_http2_total") >= 4);
    assert_eq!(gw.stat("http.ingress.downstream_rq_http1_total"), 0);
}

#[test]
fn chunked_response_trailers_become_http2_trailers() {
    let (_up, gw) = start("", None);
    let (ok, out, err) = curl(&["--http2-prior-knowledge", "-i", &url(gw.listener_addr, "/chunked/100000")]);
    assert!(ok, "{err}");
    let text = String::from_utf8_lossy(&out);
    let expected = fnv64_hex(&pattern(100_000));
    // curl prints HTTP/2 trailers after the body.
    let tail = &text[text.len().saturating_sub(200)..];
    assert!(tail.contains(&format!("x-trailer-checksum: {expected}")), "{tail}");
    assert!(text.starts_with("HTTP/2 200"), "{}", &text[..text.len().min(300)]);
    assert!(!text.to_ascii_lowercase().contains("transfer-encoding"), "hop-by-hop field leaked");
}

#[test]
fn local_replies_over_http2() {
    let (_up, gw) = start("", None);
    let a = gw.listener_addr;
    for (path, want) in [("/local404", "404"), ("/denied/x", "403"), ("/echo", "200")] {
        let (ok, out, err) = curl(&["--http2-prior-knowledge", "-w", WRITE_OUT, &url(a, path)]);
        assert!(ok, "{path}: {err}");
        let (version, status, body) = version_and_status(&out);
        assert_eq!((version.as_str(), status.as_str()), ("2", want), "{path}: {}", String::from_utf8_lossy(&body));
        if want == "403" {
            assert_eq!(String::from_utf8_lossy(&body), "RBAC: access denied");
        }
    }
    assert_eq!(gw.stat("http.ingress.rbac.denied"), 1);
}

#[test]
fn auto_codec_still_serves_http1_and_http1_codec_refuses_h2() {
    let (_up, gw) = start("", None);
    let (ok, out, err) = curl(&["--http1.1", "-w", WRITE_OUT, &url(gw.listener_addr, "/echo")]);
    assert!(ok, "{err}");
    let (version, status, _) = version_and_status(&out);
    assert_eq!((version.as_str(), status.as_str()), ("1.1", "200"));
    assert_eq!(gw.stat("http.ingress.downstream_rq_http1_total"), 1);
    drop(gw);

    let (_up, gw) = start("codec_type: HTTP1", None);
    let (ok, _, _) = curl(&["--http2-prior-knowledge", &url(gw.listener_addr, "/echo")]);
    assert!(!ok, "an HTTP1-only listener must not speak HTTP/2");
    assert_eq!(gw.stat("http.ingress.downstream_cx_http2_total"), 0);

    let (_up, gw) = start("codec_type: HTTP2", None);
    let (ok, out, err) = curl(&["--http2-prior-knowledge", "-w", WRITE_OUT, &url(gw.listener_addr, "/echo")]);
    assert!(ok, "{err}");
    assert_eq!(version_and_status(&out).0, "2");
}

#[test]
fn tls_alpn_negotiates_h2() {
    let dir = tempfile::tempdir().unwrap();
    // Self-signed, so curl can trust the leaf itself with --cacert.
    testkit::certs::openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ],
        dir.path(),
    );
    let (_up, gw) = start("", Some(dir.path()));
    let port = gw.listener_addr.port();
    let target = format!("https://localhost:{port}/echo");
    let resolve = format!("localhost:{port}:127.0.0.1");
    let cacert = dir.path().join("cert.pem").display().to_string();
    let (ok, out, err) = curl(&["--http2", "--cacert", &cacert, "--resolve", &resolve, "-w", WRITE_OUT, &target]);
    assert!(ok, "{err}");
    let (version, status, body) = version_and_status(&out);
    assert_eq!((version.as_str(), status.as_str()), ("2", "200"), "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("[\"x-forwarded-proto\",\"https\"]"));
    // A client offering only HTTP/1.1 gets HTTP/1.1 on the same listener.
    let (ok, out, err) = curl(&["--http1.1", "--cacert", &cacert, "--resolve", &resolve, "-w", WRITE_OUT, &target]);
    assert!(ok, "{err}");
    assert_eq!(version_and_status(&out).0, "1.1");
    assert_eq!(gw.stat("http.ingress.downstream_cx_http2_total"), 1);
}

#[test]
fn h2load_many_multiplexed_streams_without_errors() {
    let (_up, gw) = start("", None);
    let out = Command::new("h2load")
        .args(["-c", "40", "-m", "10", "-n", "20000", &url(gw.listener_addr, "/")])
        .output()
        .expect("h2load (Debian package nghttp2-client; scripts/install-deps.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let line = text.lines().find(|l| l.starts_with("requests:")).unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains("20000 succeeded, 0 failed, 0 errored, 0 timeout"),
        "h2load reported failures: {line}\n{text}"
    );
    let codes = text.lines().find(|l| l.starts_with("status codes:")).unwrap_or("");
    assert!(codes.starts_with("status codes: 20000 2xx"), "{codes}");
    assert_eq!(gw.stat("http.ingress.downstream_rq_http2_total"), 20000);
}

/// A gRPC-shaped request (empty message body) with one extra header;
/// returns curl's `-i` output, lower-cased.
fn grpc_call(a: SocketAddr, path: &str, header: &str) -> String {
    let (ok, out, err) = curl(&[
        "--http2-prior-knowledge",
        "-i",
        "-H",
        "content-type: application/grpc",
        "-H",
        header,
        "--data-binary",
        "",
        &url(a, path),
    ]);
    assert!(ok, "{path}: {err}");
    String::from_utf8_lossy(&out).to_ascii_lowercase()
}

#[test]
fn grpc_requests_get_trailers_only_local_replies() {
    let (_up, gw) = start("", None);
    let a = gw.listener_addr;
    for (path, grpc_status, message) in [
        ("/denied/pkg.Svc/Call", "7", "RBAC: access denied"),
        ("/local404/pkg.Svc/Call", "12", ""),
        ("/dead/pkg.Svc/Call", "14", "upstream connect error"),
    ] {
        let text = grpc_call(a, path, "te: trailers");
        assert!(text.starts_with("http/2 200"), "{path}: {text}");
        assert!(text.contains("content-type: application/grpc\r\n"), "{path}: {text}");
        assert!(text.contains(&format!("grpc-status: {grpc_status}\r\n")), "{path}: {text}");
        assert!(text.contains(&message.to_ascii_lowercase()), "{path}: {text}");
        assert!(text.ends_with("\r\n\r\n"), "trailers-only: no body ({path}): {text}");
    }
    // A plain HTTP request on the same route keeps its HTTP status.
    let (ok, out, _) = curl(&["--http2-prior-knowledge", "-w", WRITE_OUT, &url(a, "/dead/x")]);
    assert!(ok);
    assert_eq!(version_and_status(&out).1, "503");
}

#[test]
fn sigterm_sends_goaway_and_in_flight_streams_finish() {
    let up = Upstream::start("h2-backend");
    let mut gw = Gateway::start(&config("", None), &[up.addr, testkit::closed_addr()], &["--drain-time-s", "10"]);
    let target = url(gw.listener_addr, "/delay/1500");
    // Three concurrent streams on one HTTP/2 connection.
    let client = std::thread::spawn(move || {
        Command::new("h2load").args(["-c", "1", "-m", "3", "-n", "3", &target]).output().expect("h2load")
    });
    // Each stream takes 1.5 s upstream: all three are in flight once counted.
    let accepted = gw.wait_stat("http.ingress.downstream_rq_total", 3, std::time::Duration::from_secs(10));
    assert_eq!(accepted, 3, "streams in flight before SIGTERM");
    gw.sigterm();
    let drained = gw.wait_stat("http.ingress.downstream_cx_drain_close", 1, std::time::Duration::from_secs(5));
    assert_eq!(drained, 1, "GOAWAY sent on drain");
    let out = client.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("3 succeeded, 0 failed, 0 errored"), "{text}");
    assert!(text.contains("status codes: 3 2xx"), "{text}");
    let status = gw.wait_exit(std::time::Duration::from_secs(12)).expect("meshgate exits after draining");
    assert!(status.success(), "{status}");
}

#[test]
fn grpc_timeout_header_bounds_the_route_and_answers_deadline_exceeded() {
    let (_up, gw) = start("", None);
    let a = gw.listener_addr;
    // 300 ms from the header, far below the 15 s route default: 504 as gRPC.
    // (With the route's 15 s the upstream's answer after 3 s would be relayed.)
    let text = grpc_call(a, "/delay/3000", "grpc-timeout: 300m");
    assert!(text.starts_with("http/2 200"), "{text}");
    assert!(text.contains("grpc-status: 4\r\n"), "{text}");
    // A generous deadline lets the call through (the upstream answers 200, no grpc-status).
    let text = grpc_call(a, "/delay/100", "grpc-timeout: 10S");
    assert!(text.starts_with("http/2 200") && !text.contains("grpc-status"), "{text}");
    assert_eq!(gw.stat("http.ingress.downstream_rq_timeout"), 1);
}
