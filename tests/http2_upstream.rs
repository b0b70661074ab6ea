//! End-to-end upstream HTTP/2 through a real `meshgate`: curl (HTTP/1.1 and
//! HTTP/2 prior knowledge) and h2load as clients, `mg-upstream --h2c` (the
//! `h2` crate) and nginx (`listen ... ssl http2`, ALPN h2) as upstreams.
//! Bodies are checked by FNV-64 checksums both ways; trailers travel end to
//! end; upstream stream resets reach the client; a client's cancel reaches
//! the upstream as RST_STREAM; a dead host is retried on another;
//! `max_concurrent_streams` opens more connections; `refused-stream` retries.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use testkit::certs::{make_ca, make_leaf, p};
use testkit::nginx::Nginx;
use testkit::{fnv64_hex, pattern, Gateway, Upstream};

/// One listener routing everything to cluster `backend`, whose protocol
/// options and extras are `cluster_extra` (YAML at cluster level), with
/// `hosts` endpoints (UPSTREAM_1.. ports).
fn config(cluster_extra: &str, route_extra: &str, hosts: usize) -> String {
    let endpoints: String = (1..=hosts)
        .map(|i| {
            format!(
                "        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {{{{UPSTREAM_{i}_PORT}}}} }} }} }}\n"
            )
        })
        .collect();
    format!(
        r#"admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {{{{ADMIN_PORT}}}} }} }}
static_resources:
  listeners:
  - name: l
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {{{{LISTEN_PORT}}}} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          http_protocol_options: {{ enable_trailers: true }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: / }}
                route:
                  cluster: backend
{route_extra}
  clusters:
  - name: backend
    type: STATIC
    connect_timeout: 2s
{cluster_extra}
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
{endpoints}"#,
        route_extra = indent(route_extra, 18),
        cluster_extra = indent(cluster_extra, 4),
    )
}

fn indent(s: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    s.trim_matches('\n').lines().filter(|l| !l.trim().is_empty()).map(|l| format!("{pad}{l}\n")).collect()
}

fn h2_options(inner: &str) -> String {
    format!(
        r#"typed_extension_protocol_options:
  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
    "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
{}"#,
        indent(inner, 4)
    )
}

fn explicit_h2() -> String {
    h2_options("explicit_http_config: { http2_protocol_options: {} }")
}

fn curl(args: &[&str]) -> (bool, Vec<u8>, String) {
    let out = Command::new("curl").args(["-sS", "--max-time", "30"]).args(args).output().expect("run curl");
    (out.status.success(), out.stdout, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn url(addr: SocketAddr, path: &str) -> String {
    format!("http://127.0.0.1:{}{path}", addr.port())
}

/// `curl -w` suffix: "<http_version> <status>" on the last line.
const WRITE_OUT: &str = "\n%{http_version} %{response_code}";

fn split_write_out(stdout: &[u8]) -> (String, Vec<u8>) {
    let text = String::from_utf8_lossy(stdout);
    let at = text.rfind('\n').expect("write-out line");
    (text[at + 1..].to_string(), stdout[..at].to_vec())
}

/// A request made by curl over HTTP/1.1 (`h2 = false`) or HTTP/2 prior
/// knowledge; returns ("<version> <status>", body).
fn get(h2: bool, addr: SocketAddr, path: &str, extra: &[&str]) -> (String, Vec<u8>) {
    let proto = if h2 { "--http2-prior-knowledge" } else { "--http1.1" };
    let mut args = vec![proto, "-w", WRITE_OUT];
    args.extend_from_slice(extra);
    let target = url(addr, path);
    args.push(&target);
    let (ok, out, err) = curl(&args);
    assert!(ok, "curl {path}: {err}");
    split_write_out(&out)
}

/// What the upstream's own admin paths answer (asked directly over h2c;
/// `/__conns` counts the asking connection too).
fn upstream_count(up: &Upstream, path: &str) -> u64 {
    let (ok, out, err) = curl(&["--http2-prior-knowledge", &url(up.addr, path)]);
    assert!(ok, "{err}");
    String::from_utf8_lossy(&out).trim().parse().unwrap_or_else(|_| panic!("{path}: {out:?}"))
}

fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn http1_and_http2_clients_reach_an_h2c_upstream_with_large_bodies_both_ways() {
    let up = Upstream::start_h2c("h2-origin", &[]);
    let gw = Gateway::start(&config(&explicit_h2(), "", 1), &[up.addr], &[]);
    let a = gw.listener_addr;

    for h2 in [false, true] {
        let (status, body) = get(h2, a, "/echo?x=1", &[]);
        let want = if h2 { "2 200" } else { "1.1 200" };
        assert_eq!(status, want, "{}", String::from_utf8_lossy(&body));
        let body = String::from_utf8_lossy(&body);
        // The upstream got HTTP/2: :authority from Host, the gateway's headers.
        assert!(body.contains("\"path\":\"/echo?x=1\""), "{body}");
        assert!(body.contains(&format!("[\":authority\",\"127.0.0.1:{}\"]", a.port())), "{body}");
        assert!(body.contains("x-forwarded-proto"), "{body}");
        assert!(!body.contains("[\"host\""), "Host must become :authority: {body}");
    }

    // 3 MiB up, content-length framed and chunked; 4 MiB through /echo-body
    // (streamed back while it is sent); 5 MB down with and without length.
    let dir = tempfile::tempdir().unwrap();
    let upload = pattern(3 * 1024 * 1024 + 7);
    let file = dir.path().join("up.bin");
    std::fs::write(&file, &upload).unwrap();
    let data = format!("@{}", file.display());
    for h2 in [false, true] {
        let (status, body) = get(h2, a, "/upload", &["--data-binary", &data]);
        assert!(status.ends_with(" 200"), "{status}");
        let body = String::from_utf8_lossy(&body);
        assert!(body.contains(&format!("\"body_len\":{}", upload.len())), "{body}");
        assert!(body.contains(&fnv64_hex(&upload)), "{body}");
        let (status, body) = get(
            h2,
            a,
            "/upload",
            &["-H", "content-length:", "-H", "transfer-encoding: chunked", "--data-binary", &data],
        );
        assert!(status.ends_with(" 200"), "{status}");
        assert!(String::from_utf8_lossy(&body).contains(&fnv64_hex(&upload)));

        let echo = pattern(4 * 1024 * 1024 + 3);
        let efile = dir.path().join("echo.bin");
        std::fs::write(&efile, &echo).unwrap();
        let (status, body) = get(h2, a, "/echo-body", &["--data-binary", &format!("@{}", efile.display())]);
        assert!(status.ends_with(" 200"), "{status}");
        assert_eq!(body.len(), echo.len());
        assert_eq!(fnv64_hex(&body), fnv64_hex(&echo));

        for path in ["/bytes/5000000", "/stream/5000000"] {
            let (status, body) = get(h2, a, path, &[]);
            assert!(status.ends_with(" 200"), "{path}: {status}");
            assert_eq!(body.len(), 5_000_000, "{path}");
            assert_eq!(fnv64_hex(&body), fnv64_hex(&pattern(5_000_000)), "{path}");
        }
    }
    let h2_conns = gw.stat("cluster.backend.upstream_cx_http2_total");
    assert!(h2_conns >= 1, "{h2_conns}");
    assert_eq!(gw.stat("cluster.backend.upstream_cx_http1_total"), 0);
    // Streams share connections: far fewer connections than requests.
    assert!(upstream_count(&up, "/__conns") <= 8, "one pool per shard, reused");
    assert_eq!(gw.stat("cluster.backend.upstream_rq_total"), 12);
}

#[test]
fn trailers_cross_end_to_end() {
    let up = Upstream::start_h2c("h2-origin", &[]);
    let gw = Gateway::start(&config(&explicit_h2(), "", 1), &[up.addr], &[]);
    // HTTP/2 client: HTTP/2 trailers (curl prints them after the body).
    let (ok, out, err) = curl(&["--http2-prior-knowledge", "-i", &url(gw.listener_addr, "/trailers")]);
    assert!(ok, "{err}");
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/2 200"), "{text}");
    let after_body = &text[text.find("trailers follow").expect("body")..];
    assert!(after_body.contains("x-trailer-one: 1"), "{text}");
    assert!(after_body.contains("grpc-status: 0"), "{text}");
    assert!(after_body.contains("grpc-message: all good"), "{text}");
    // HTTP/1.1 client (enable_trailers on the listener): chunked trailers.
    let (ok, out, err) = curl(&["--http1.1", "-i", &url(gw.listener_addr, "/trailers")]);
    assert!(ok, "{err}");
    let text = String::from_utf8_lossy(&out);
    assert!(text.to_ascii_lowercase().contains("transfer-encoding: chunked"), "{text}");
    assert!(text[text.find("trailers follow").expect("body")..].contains("grpc-status: 0"), "{text}");
    // Request trailers reach the upstream (chunked trailers from an HTTP/1.1 client).
    let (status, body) = get(
        false,
        gw.listener_addr,
        "/upload",
        &["-H", "transfer-encoding: chunked", "-H", "trailer: x-req-trailer", "--data-binary", "abc"],
    );
    assert_eq!(status, "1.1 200");
    let _ = body;
}

#[test]
fn h2load_many_streams_to_an_h2_upstream_without_errors() {
    let up = Upstream::start_h2c("h2-origin", &[]);
    let gw = Gateway::start(&config(&explicit_h2(), "", 1), &[up.addr], &[]);
    let out = Command::new("h2load")
        .args(["-c", "40", "-m", "10", "-n", "20000", &url(gw.listener_addr, "/")])
        .output()
        .expect("h2load (Debian package nghttp2-client; scripts/install-deps.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let line = text.lines().find(|l| l.starts_with("requests:")).unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("20000 succeeded, 0 failed, 0 errored, 0 timeout"), "h2load: {line}\n{text}");
    let codes = text.lines().find(|l| l.starts_with("status codes:")).unwrap_or("");
    assert!(codes.starts_with("status codes: 20000 2xx"), "{codes}");
    assert_eq!(gw.stat("cluster.backend.upstream_rq_2xx"), 20000);
    // 400 concurrent streams multiplexed over a handful of connections.
    let conns = upstream_count(&up, "/__conns");
    assert!(conns <= 16, "{conns} upstream connections for 400 concurrent streams");
}

#[test]
fn upstream_resets_reach_the_client() {
    let up = Upstream::start_h2c("h2-origin", &[]);
    let gw = Gateway::start(&config(&explicit_h2(), "", 1), &[up.addr], &[]);
    let a = gw.listener_addr;
    // Reset before the response head: 503 for both kinds of client.
    for h2 in [false, true] {
        let (status, body) = get(h2, a, "/reset", &[]);
        assert!(status.ends_with(" 503"), "{status}");
        assert!(String::from_utf8_lossy(&body).contains("reset"), "{body:?}");
    }
    // Reset mid-body: the client's transfer fails (HTTP/2 stream reset,
    // HTTP/1.1 chunked body cut short).
    for proto in ["--http1.1", "--http2-prior-knowledge"] {
        let (ok, out, err) = curl(&[proto, &url(a, "/reset-mid")]);
        assert!(!ok, "{proto}: a cut response must not look complete ({} bytes)", out.len());
        assert!(!err.is_empty());
    }
    assert!(gw.stat("cluster.backend.upstream_rq_rx_reset") >= 2);
    // The connection survives stream resets: later requests still work.
    let (status, _) = get(true, a, "/", &[]);
    assert_eq!(status, "2 200");
}

#[test]
fn client_cancel_and_route_timeout_reset_the_upstream_stream() {
    let up = Upstream::start_h2c("h2-origin", &[]);
    let gw = Gateway::start(&config(&explicit_h2(), "timeout: 2s", 1), &[up.addr], &[]);
    // An HTTP/2 client resets its stream: the upstream stream is reset.
    let before = upstream_count(&up, "/__resets");
    let (ok, _, _) = curl(&["--http2-prior-knowledge", "--max-time", "1", &url(gw.listener_addr, "/hang")]);
    assert!(!ok, "/hang never answers");
    wait_for("the upstream to see RST_STREAM after a client cancel", Duration::from_secs(10), || {
        upstream_count(&up, "/__resets") > before
    });
    // The cancelled attempt is no longer counted as active (least-request
    // balancing reads the same count).
    wait_for("upstream_rq_active back to 0 after the cancel", Duration::from_secs(10), || {
        gw.stat("cluster.backend.upstream_rq_active") == 0
    });
    // The route timeout gives up on the upstream: 504, and the stream is reset.
    let before = upstream_count(&up, "/__resets");
    let (status, _) = get(false, gw.listener_addr, "/hang", &[]);
    assert_eq!(status, "1.1 504");
    wait_for("the upstream to see RST_STREAM after a timeout", Duration::from_secs(10), || {
        upstream_count(&up, "/__resets") > before
    });
}

#[test]
fn max_concurrent_streams_opens_more_connections() {
    let up = Upstream::start_h2c("h2-origin", &[]);
    let options = h2_options("explicit_http_config: { http2_protocol_options: { max_concurrent_streams: 2 } }");
    let gw = Gateway::start(&config(&options, "timeout: 20s", 1), &[up.addr], &["--shards", "1"]);
    let out = Command::new("h2load")
        .args(["-c", "1", "-m", "8", "-n", "8", &url(gw.listener_addr, "/delay/700")])
        .output()
        .expect("h2load");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("requests:")).unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("8 succeeded, 0 failed"), "{line}");
    // 8 concurrent streams, at most 2 per connection: 4 connections (+1: the asking one).
    assert_eq!(upstream_count(&up, "/__conns"), 4 + 1);
    assert_eq!(gw.stat("cluster.backend.upstream_cx_http2_total"), 4);
    // And the peer's own SETTINGS_MAX_CONCURRENT_STREAMS is honoured too.
    let up1 = Upstream::start_h2c("h2-narrow", &["--h2-max-streams", "3"]);
    let gw = Gateway::start(&config(&explicit_h2(), "timeout: 20s", 1), &[up1.addr], &["--shards", "1"]);
    // Warm one connection so the peer's SETTINGS are known.
    assert_eq!(get(true, gw.listener_addr, "/", &[]).0, "2 200");
    let out = Command::new("h2load")
        .args(["-c", "1", "-m", "9", "-n", "9", &url(gw.listener_addr, "/delay/700")])
        .output()
        .expect("h2load");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("9 succeeded, 0 failed"), "{text}");
    assert_eq!(upstream_count(&up1, "/__conns"), 3 + 1, "9 streams, 3 per connection (+1: the asking one)");
}

#[test]
fn dead_host_is_a_503_and_retried_on_another() {
    let mut dead = Upstream::start_h2c("h2-dead", &[]);
    let live = Upstream::start_h2c("h2-live", &[]);
    let retry = "retry_policy: { retry_on: \"connect-failure,reset\", num_retries: 3 }";
    let gw = Gateway::start(&config(&explicit_h2(), retry, 2), &[dead.addr, live.addr], &[]);
    // Both hosts serve, over HTTP/2.
    wait_for("both hosts answering", Duration::from_secs(10), || {
        let mut names = std::collections::HashSet::new();
        for _ in 0..10 {
            let (ok, out, _) = curl(&["--http2-prior-knowledge", "-i", &url(gw.listener_addr, "/")]);
            if ok {
                let text = String::from_utf8_lossy(&out).to_string();
                if let Some(l) = text.lines().find(|l| l.starts_with("x-upstream-name")) {
                    names.insert(l.trim().to_string());
                }
            }
        }
        names.len() == 2
    });
    dead.kill();
    // Every request still succeeds: pooled connections to the dead host
    // fail (reset) or new ones are refused (connect failure), and retry.
    for i in 0..20 {
        let (status, body) = get(i % 2 == 0, gw.listener_addr, "/", &[]);
        assert!(status.ends_with(" 200"), "request {i}: {status} {}", String::from_utf8_lossy(&body));
        assert!(String::from_utf8_lossy(&body).contains("h2-live"));
    }
    assert!(gw.stat("cluster.backend.upstream_rq_retry") >= 1);
    // A cluster whose only host is dead: 503.
    let mut gone = Upstream::start_h2c("h2-gone", &[]);
    let addr = gone.addr;
    gone.kill();
    let gw = Gateway::start(&config(&explicit_h2(), "", 1), &[addr], &[]);
    let (status, body) = get(true, gw.listener_addr, "/", &[]);
    assert_eq!(status, "2 503", "{}", String::from_utf8_lossy(&body));
    assert!(gw.stat("cluster.backend.upstream_cx_connect_fail") >= 1);
}

#[test]
fn refused_stream_is_retried_under_refused_stream() {
    let up = Upstream::start_h2c("h2-origin", &[]);
    let retry = "retry_policy: { retry_on: refused-stream, num_retries: 2 }";
    let gw = Gateway::start(&config(&explicit_h2(), retry, 1), &[up.addr], &[]);
    let (status, _) = get(true, gw.listener_addr, "/refuse", &[]);
    assert_eq!(status, "2 503");
    assert_eq!(gw.stat("cluster.backend.upstream_rq_retry"), 2, "two retries of a refused stream");
    // A plain reset is not a refused stream: no retry.
    let (status, _) = get(true, gw.listener_addr, "/reset", &[]);
    assert_eq!(status, "2 503");
    assert_eq!(gw.stat("cluster.backend.upstream_rq_retry"), 2);
}

/// nginx serving HTTP/2 (and HTTP/1.1) over TLS with ALPN; killed on drop.
fn nginx_h2(dir: &Path) -> Nginx {
    let server = format!(
        r#"    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {{
      add_header x-protocol "$server_protocol" always;
      add_header x-alpn "$ssl_alpn_protocol" always;
      return 200 "tls upstream\n";
    }}"#,
        cert = p(dir, "server.pem"),
        key = p(dir, "server.key"),
    );
    Nginx::start(dir, "ssl http2", &server)
}

fn tls_socket(dir: &Path) -> String {
    format!(
        r#"transport_socket:
  name: envoy.transport_sockets.tls
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
    sni: upstream.example.com
    common_tls_context:
      validation_context: {{ trusted_ca: {{ filename: {} }} }}
"#,
        p(dir, "ca.pem")
    )
}

#[test]
fn alpn_h2_over_upstream_tls_and_use_downstream_protocol() {
    let dir = tempfile::tempdir().unwrap();
    make_ca(dir.path(), "ca");
    make_leaf(dir.path(), "ca", "server", "upstream.example.com", &["DNS:upstream.example.com"]);
    let nginx = nginx_h2(dir.path());

    // explicit HTTP/2: ALPN h2 whatever the client speaks.
    let cluster = format!("{}{}", explicit_h2(), tls_socket(dir.path()));
    let gw = Gateway::start(&config(&cluster, "", 1), &[nginx.addr], &[]);
    for h2 in [false, true] {
        let (status, _) = get(h2, gw.listener_addr, "/", &["-D", "-"]);
        assert!(status.ends_with(" 200"), "{status}");
        let (ok, out, err) =
            curl(&[if h2 { "--http2-prior-knowledge" } else { "--http1.1" }, "-i", &url(gw.listener_addr, "/")]);
        assert!(ok, "{err}");
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("x-protocol: HTTP/2.0"), "{text}");
        assert!(text.contains("x-alpn: h2"), "{text}");
    }
    assert!(gw.stat("cluster.backend.upstream_cx_http2_total") >= 1);
    drop(gw);

    // use_downstream_protocol_config: HTTP/2 in, HTTP/2 out; HTTP/1.1 in, HTTP/1.1 out.
    let cluster = format!(
        "{}{}",
        h2_options("use_downstream_protocol_config: { http_protocol_options: {}, http2_protocol_options: {} }"),
        tls_socket(dir.path())
    );
    let gw = Gateway::start(&config(&cluster, "", 1), &[nginx.addr], &[]);
    for (h2, want) in [(true, "HTTP/2.0"), (false, "HTTP/1.1")] {
        let (ok, out, err) =
            curl(&[if h2 { "--http2-prior-knowledge" } else { "--http1.1" }, "-i", &url(gw.listener_addr, "/")]);
        assert!(ok, "{err}");
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains(&format!("x-protocol: {want}")), "h2 client {h2}: {text}");
    }
    assert!(gw.stat("cluster.backend.upstream_cx_http2_total") >= 1);
    assert!(gw.stat("cluster.backend.upstream_cx_http1_total") >= 1);
}
