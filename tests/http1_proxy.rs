//! End-to-end HTTP/1.1 proxying through a real `meshgate` process in front of a
//! real `mg-upstream` process: bodies, headers the gateway adds, removes or
//! overwrites (Envoy semantics), connection reuse, pipelining, chunked bodies
//! and trailers, `Expect: 100-continue`, bodiless responses, close-delimited
//! upstream responses.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use testkit::{fnv64_hex, is_uuid_v4, pattern, start_basic, Client, Echo, Fnv64, Gateway, PatternGen, Upstream};

/// Envoy's `enable_trailers` on both sides (HCM and cluster): Envoy drops
/// HTTP/1 trailers unless this is set.
const HCM_TRAILERS: &str = "
http_protocol_options:
  enable_trailers: true
";
const CLUSTER_TRAILERS: &str = r#"
typed_extension_protocol_options:
  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
    "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
    explicit_http_config:
      http_protocol_options:
        enable_trailers: true
"#;

fn basic() -> (Upstream, Gateway) {
    start_basic("", "", "", &[])
}

fn echo(client: &mut Client, headers: &[(&str, &str)]) -> Echo {
    let r = client.request("GET", "/echo", headers, b"");
    assert_eq!(r.status, 200, "GET /echo: {}", r.body_str());
    Echo::from_response(&r)
}

#[test]
fn get_returns_upstream_body_with_server_and_date() {
    let (_up, gw) = basic();
    let mut c = Client::connect(gw.listener_addr);
    let r = c.get("/");
    assert_eq!(r.status, 200);
    assert_eq!(r.body_str(), "hello from up\n");
    assert_eq!(r.header("x-upstream-name"), Some("up"), "upstream headers pass through");
    // Envoy's default server_header_transformation is OVERWRITE with server_name.
    assert_eq!(r.header_all("server"), vec!["meshgate"]);
    let date = r.header("date").expect("date header added by the gateway");
    assert!(date.ends_with(" GMT"), "IMF-fixdate expected, got {date:?}");
    assert_eq!(r.header("content-length"), Some("14"));
}

#[test]
fn upstream_server_header_is_overwritten() {
    let (_up, gw) = basic();
    let mut c = Client::connect(gw.listener_addr);
    let r = c.request("GET", "/headers", &[("x-set-response-server", "foo/1.0")], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header_all("server"), vec!["meshgate"]);
}

#[test]
fn status_codes_pass_through() {
    let (_up, gw) = basic();
    let mut c = Client::connect(gw.listener_addr);
    for code in [201u16, 404, 418, 500, 503] {
        let r = c.get(&format!("/status/{code}"));
        assert_eq!(r.status, code);
        assert_eq!(r.body_str(), format!("status {code}\n"));
    }
}

/// Default HCM (`use_remote_address: false`): XFF is neither created nor
/// appended to, x-forwarded-proto is set only when absent, x-request-id is
/// generated only when absent (requests are not "edge" requests).
#[test]
fn forwarding_headers_with_default_use_remote_address() {
    let (_up, gw) = basic();
    let mut c = Client::connect(gw.listener_addr);

    let e = echo(&mut c, &[]);
    assert!(!e.has_header("x-forwarded-for"), "no XFF without use_remote_address: {:?}", e.headers);
    assert_eq!(e.header("x-forwarded-proto"), Some("http"));
    let rid = e.header("x-request-id").expect("x-request-id generated");
    assert!(is_uuid_v4(rid), "x-request-id {rid:?} is not a UUID v4");

    let e2 = echo(&mut c, &[]);
    assert_ne!(e2.header("x-request-id"), Some(rid), "a fresh id per request");

    let e = echo(
        &mut c,
        &[("X-Forwarded-For", "1.2.3.4"), ("X-Request-Id", "client-id-123"), ("X-Forwarded-Proto", "https")],
    );
    assert_eq!(e.header_all("x-forwarded-for"), vec!["1.2.3.4"], "XFF untouched");
    assert_eq!(e.header_all("x-request-id"), vec!["client-id-123"], "non-edge request keeps its id");
    assert_eq!(e.header_all("x-forwarded-proto"), vec!["https"], "XFP kept when present");
}

/// `use_remote_address: true`: the peer address is appended to XFF (Envoy uses
/// its own local address for a loopback peer, so only "an IP" is asserted),
/// XFP is overwritten (no trusted hops), and a request whose XFF named another
/// client is external: its x-request-id is replaced.
#[test]
fn forwarding_headers_with_use_remote_address() {
    let (_up, gw) = start_basic("use_remote_address: true", "", "", &[]);
    let mut c = Client::connect(gw.listener_addr);

    let e = echo(&mut c, &[]);
    let xff = e.header_all("x-forwarded-for");
    assert_eq!(xff.len(), 1, "one XFF header: {:?}", e.headers);
    assert!(xff[0].trim().parse::<IpAddr>().is_ok(), "XFF {:?} should be one IP", xff[0]);
    assert_eq!(e.header("x-forwarded-proto"), Some("http"));
    assert!(is_uuid_v4(e.header("x-request-id").unwrap_or("")));

    let e = echo(
        &mut c,
        &[("X-Forwarded-For", "1.2.3.4"), ("X-Request-Id", "client-id-123"), ("X-Forwarded-Proto", "https")],
    );
    let xff = e.header_all("x-forwarded-for").join(",");
    let hops: Vec<&str> = xff.split(',').map(str::trim).collect();
    assert_eq!(hops.len(), 2, "peer appended to XFF: {xff:?}");
    assert_eq!(hops[0], "1.2.3.4");
    assert!(hops[1].parse::<IpAddr>().is_ok(), "appended hop {:?} is an IP", hops[1]);
    assert_eq!(e.header_all("x-forwarded-proto"), vec!["http"], "untrusted XFP overwritten");
    let rid = e.header("x-request-id").unwrap_or("");
    assert_ne!(rid, "client-id-123", "edge request id must be regenerated");
    assert!(is_uuid_v4(rid), "{rid:?}");
}

#[test]
fn preserve_external_request_id_keeps_client_id() {
    let (_up, gw) = start_basic("use_remote_address: true\npreserve_external_request_id: true", "", "", &[]);
    let mut c = Client::connect(gw.listener_addr);
    let e = echo(&mut c, &[("X-Forwarded-For", "1.2.3.4"), ("X-Request-Id", "client-id-123")]);
    assert_eq!(e.header_all("x-request-id"), vec!["client-id-123"]);
}

#[test]
fn hop_by_hop_request_headers_are_not_forwarded() {
    let (_up, gw) = basic();
    let mut c = Client::connect(gw.listener_addr);
    let e = echo(
        &mut c,
        &[
            ("Connection", "keep-alive, X-Hop"),
            ("X-Hop", "secret"),
            ("Keep-Alive", "timeout=5, max=100"),
            ("TE", "gzip"),
            ("Proxy-Connection", "keep-alive"),
            ("X-End-To-End", "yes"),
        ],
    );
    for h in ["x-hop", "keep-alive", "te", "proxy-connection"] {
        assert!(!e.has_header(h), "{h} must not reach the upstream: {:?}", e.headers);
    }
    for v in e.header_all("connection") {
        assert!(!v.to_ascii_lowercase().contains("x-hop"), "client's Connection forwarded: {v:?}");
    }
    assert_eq!(e.header("x-end-to-end"), Some("yes"));
    assert_eq!(e.header("host"), Some("localhost"), "Host is forwarded");
}

#[test]
fn hop_by_hop_response_headers_are_not_forwarded() {
    let (_up, gw) = basic();
    let mut c = Client::connect(gw.listener_addr);
    let r = c.request(
        "GET",
        "/headers",
        &[
            ("x-set-response-keep-alive", "timeout=5"),
            ("x-set-response-proxy-connection", "keep-alive"),
            ("x-set-response-x-kept", "yes"),
        ],
        b"",
    );
    assert_eq!(r.status, 200);
    assert!(!r.has_header("keep-alive"), "{:?}", r.headers);
    assert!(!r.has_header("proxy-connection"), "{:?}", r.headers);
    assert_eq!(r.header("x-kept"), Some("yes"));
}

/// An upstream `connection: close` concerns the upstream hop only: the client
/// connection stays usable and the next request opens a new upstream connection.
#[test]
fn upstream_connection_close_does_not_close_client_connection() {
    let (_up, gw) = basic();
    let mut c = Client::connect(gw.listener_addr);
    let r = c.request("GET", "/headers", &[("x-set-response-connection", "close")], b"");
    assert_eq!(r.status, 200);
    assert!(!r.connection_close(), "upstream's connection: close leaked: {:?}", r.headers);
    let first_conn = r.header("x-upstream-conn").map(str::to_owned);
    let r2 = c.get("/");
    assert_eq!(r2.status, 200);
    assert_eq!(r2.body_str(), "hello from up\n");
    assert_ne!(r2.header("x-upstream-conn").map(str::to_owned), first_conn, "closed upstream connection reused");
}

#[test]
fn keep_alive_reuses_connections_on_both_sides() {
    let (_up, gw) = basic();
    let mut c = Client::connect(gw.listener_addr);
    let mut conns = BTreeSet::new();
    let mut max_requests_on_one = 0u64;
    for i in 0..20 {
        let r = c.get(&format!("/?i={i}"));
        assert_eq!(r.status, 200, "request {i}");
        assert!(!r.connection_close(), "request {i} announced close");
        conns.insert(r.header("x-upstream-conn").expect("x-upstream-conn").to_owned());
        let n: u64 = r.header("x-upstream-conn-requests").unwrap_or("0").parse().unwrap_or(0);
        max_requests_on_one = max_requests_on_one.max(n);
    }
    assert!(!c.is_closed(Duration::from_millis(200)), "client connection closed after 20 requests");
    assert!(conns.len() <= 2, "upstream connections not reused: {conns:?}");
    assert!(max_requests_on_one >= 10, "max requests on one upstream connection: {max_requests_on_one}");
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let (_up, gw) = basic();
    let mut c = Client::connect(gw.listener_addr);
    let mut all = Vec::new();
    for i in 0..10 {
        all.extend_from_slice(format!("GET /echo?i={i} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes());
    }
    c.send(&all);
    for i in 0..10 {
        let r = c.read_response();
        assert_eq!(r.status, 200, "response {i}");
        let e = Echo::from_response(&r);
        assert_eq!(e.path, format!("/echo?i={i}"), "response {i} out of order");
    }
    assert!(!c.is_closed(Duration::from_millis(100)));
    assert_eq!(c.get("/").status, 200, "connection usable after the pipeline");
}

#[test]
fn content_length_request_body_reaches_upstream() {
    let (_up, gw) = basic();
    let mut c = Client::connect(gw.listener_addr);
    for size in [1usize, 1000, 3 * 1024 * 1024 + 7] {
        let body = pattern(size);
        let r = c.request("POST", "/echo", &[("Content-Type", "application/octet-stream")], &body);
        assert_eq!(r.status, 200);
        let e = Echo::from_response(&r);
        assert_eq!(e.method, "POST");
        assert_eq!(e.body_len, size as u64);
        assert_eq!(e.body_fnv64, fnv64_hex(&body));
        assert_eq!(e.header("content-length"), Some(size.to_string().as_str()));
    }
}

fn chunked_body(parts: &[&[u8]], trailers: &[(&str, &str)]) -> Vec<u8> {
    let mut b = Vec::new();
    for p in parts {
        b.extend_from_slice(format!("{:x}\r\n", p.len()).as_bytes());
        b.extend_from_slice(p);
        b.extend_from_slice(b"\r\n");
    }
    b.extend_from_slice(b"0\r\n");
    for (n, v) in trailers {
        b.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
    }
    b.extend_from_slice(b"\r\n");
    b
}

#[test]
fn chunked_request_body_reaches_upstream() {
    let (_up, gw) = basic();
    let mut c = Client::connect(gw.listener_addr);
    let data = pattern(2 * 1024 * 1024 + 123);
    let parts: Vec<&[u8]> = data.chunks(100_000).collect();
    let body = chunked_body(&parts, &[]);
    let r = c.request("POST", "/upload", &[("Transfer-Encoding", "chunked")], &body);
    assert_eq!(r.status, 200);
    let e = Echo::from_response(&r);
    assert_eq!(e.body_len, data.len() as u64);
    assert_eq!(e.body_fnv64, fnv64_hex(&data));
    assert_eq!(c.get("/").status, 200, "connection usable afterwards");
}

#[test]
fn chunked_request_trailers_reach_upstream() {
    let (_up, gw) = start_basic(HCM_TRAILERS, "", CLUSTER_TRAILERS, &[]);
    let mut c = Client::connect(gw.listener_addr);
    let sum = fnv64_hex(b"hello world");
    let body = chunked_body(&[b"hello ", b"world"], &[("x-client-checksum", &sum), ("x-other", "2")]);
    let r = c.request(
        "POST",
        "/upload",
        &[("Transfer-Encoding", "chunked"), ("Trailer", "x-client-checksum, x-other")],
        &body,
    );
    assert_eq!(r.status, 200);
    let e = Echo::from_response(&r);
    assert_eq!(e.body_len, 11);
    assert_eq!(e.body_fnv64, sum);
    assert_eq!(e.trailer("x-client-checksum"), Some(sum.as_str()), "trailers seen upstream: {:?}", e.trailers);
    assert_eq!(e.trailer("x-other"), Some("2"));
}

#[test]
fn chunked_response_body_reaches_client() {
    let (_up, gw) = basic();
    let mut c = Client::connect(gw.listener_addr);
    let r = c.get("/chunked/300000");
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 300_000);
    assert_eq!(r.body, pattern(300_000));
    assert_eq!(c.get("/").status, 200, "connection usable afterwards");
}

#[test]
fn chunked_response_trailers_reach_client() {
    let (_up, gw) = start_basic(HCM_TRAILERS, "", CLUSTER_TRAILERS, &[]);
    let mut c = Client::connect(gw.listener_addr);
    let r = c.request("GET", "/chunked/100000", &[("TE", "trailers")], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.framing, testkit::Framing::Chunked, "trailers need chunked framing");
    assert_eq!(r.body, pattern(100_000));
    assert_eq!(r.trailer("x-trailer-checksum"), Some(fnv64_hex(&r.body).as_str()), "trailers: {:?}", r.trailers);
}

#[test]
fn expect_100_continue_is_answered_by_the_gateway() {
    let (_up, gw) = basic();
    let mut c = Client::connect(gw.listener_addr);
    c.set_read_timeout(Duration::from_secs(5));
    c.send(b"POST /expect HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n");
    let interim = c.read_response();
    assert_eq!(interim.status, 100, "expected 100 Continue before the body");
    assert!(interim.body.is_empty());
    c.send(b"hello world");
    let r = c.read_response();
    assert_eq!(r.status, 200);
    let e = Echo::from_response(&r);
    assert!(!e.has_header("expect"), "Expect reached the upstream: {:?}", e.headers);
    assert_eq!(e.body_len, 11);
    assert_eq!(e.body_fnv64, fnv64_hex(b"hello world"));
}

#[test]
fn head_response_keeps_content_length_and_has_no_body() {
    let (_up, gw) = basic();
    let mut c = Client::connect(gw.listener_addr);
    let r = c.request("HEAD", "/bytes/1000", &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("1000"));
    assert!(r.body.is_empty());
    // Had the gateway sent a body, it would be read as the next response here.
    let r2 = c.get("/");
    assert_eq!(r2.status, 200);
    assert_eq!(r2.body_str(), "hello from up\n");
}

#[test]
fn no_body_for_204_and_304() {
    let (_up, gw) = basic();
    let mut c = Client::connect(gw.listener_addr);
    for code in [204u16, 304] {
        let r = c.get(&format!("/status/{code}"));
        assert_eq!(r.status, code);
        assert!(r.body.is_empty());
        assert!(r.header("transfer-encoding").is_none(), "{code} with transfer-encoding");
        let next = c.get("/");
        assert_eq!(next.status, 200, "connection usable after {code}");
        assert_eq!(next.body_str(), "hello from up\n");
    }
}

#[test]
fn close_delimited_upstream_response_arrives_intact() {
    let (_up, gw) = basic();
    let mut c = Client::connect(gw.listener_addr);
    let r = c.get("/close-delimited/300000");
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 300_000, "framing used: {:?}", r.framing);
    assert_eq!(r.body, pattern(300_000));
    // Re-framed (chunked) keeps the connection; close-delimited ends it. Either is fine,
    // but if the gateway kept it open it must still work.
    if r.framing != testkit::Framing::CloseDelimited && !r.connection_close() {
        assert_eq!(c.get("/").status, 200);
    }
}

#[test]
fn slow_upstream_body_is_streamed() {
    let (_up, gw) = basic();
    let mut c = Client::connect(gw.listener_addr);
    let r = c.get("/sleep-body/500");
    assert_eq!(r.status, 200);
    assert_eq!(r.body_str(), "0123456789");
}

/// A plain socket with `GET path` sent, for tests that look at how the
/// response arrives (which reads see which bytes), not just at what it is.
fn raw_get(gw: &Gateway, path: &str) -> std::net::TcpStream {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(gw.listener_addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: gw\r\n\r\n").as_bytes()).unwrap();
    s
}

/// nginx's `postpone_output`: the upstream writes the head of a small
/// fixed-length response, then (300 ms later) its body.  The gateway holds the
/// head until the body is there, so the client's first read has both: one
/// segment and one wake-up instead of two.
#[test]
fn small_response_head_waits_for_its_late_body() {
    use std::io::Read;
    let (_up, gw) = basic();
    let mut s = raw_get(&gw, "/sleep-body/300");
    let mut buf = vec![0u8; 8192];
    let n = s.read(&mut buf).unwrap();
    let first = String::from_utf8_lossy(&buf[..n]);
    assert!(first.starts_with("HTTP/1.1 200"), "first read: {first:?}");
    assert!(first.ends_with("\r\n\r\n0123456789"), "the head came without its body: {first:?}");
}

/// The held head is only a small response's: once head and body bytes reach
/// a segment's worth (1,460 bytes), they are relayed at once, and the rest of
/// a large body streams as it arrives.  The upstream sends the head and 3,000
/// of 6,000 bytes, then nothing for 1.5 s: the client has the head and those
/// 3,000 bytes while the upstream is still silent.
#[test]
fn a_large_body_is_not_held_behind_its_head() {
    use std::io::Read;
    let (_up, gw) = basic();
    let mut s = raw_get(&gw, "/split-body/3000/6000/1500");
    let sent = std::time::Instant::now();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 16384];
    let body_start = loop {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed early: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            if got.len() >= i + 4 + 3000 {
                break i + 4;
            }
        }
    };
    // Read before the upstream spoke again: the first part was not held.
    assert!(
        sent.elapsed() < Duration::from_millis(1500),
        "the first 3,000 body bytes waited for the rest ({:?})",
        sent.elapsed()
    );
    assert!(String::from_utf8_lossy(&got[..body_start]).contains("content-length: 6000"));
    while got.len() < body_start + 6000 {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed before the body ended");
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(&got[body_start..], &testkit::pattern(6000)[..]);
}

#[test]
fn many_sequential_connections() {
    let (_up, gw) = basic();
    for i in 0..50 {
        let r = testkit::get(gw.listener_addr, &format!("/?conn={i}"));
        assert_eq!(r.status, 200, "connection {i}");
    }
}

#[test]
fn concurrent_clients() {
    let (_up, gw) = basic();
    let addr = gw.listener_addr;
    let threads: Vec<_> = (0..16)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                for i in 0..25 {
                    let body = pattern(1000 + t * 10 + i);
                    let r = c.request("POST", &format!("/echo?t={t}&i={i}"), &[], &body);
                    assert_eq!(r.status, 200);
                    let e = Echo::from_response(&r);
                    assert_eq!(e.path, format!("/echo?t={t}&i={i}"));
                    assert_eq!(e.body_fnv64, fnv64_hex(&body));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
}

/// The streaming helpers agree with themselves (no gateway involved): guards the
/// kit the big-body tests rely on.
#[test]
fn testkit_streaming_matches_upstream_directly() {
    let up = Upstream::start("direct");
    let mut c = Client::connect(up.addr);
    let mut fnv = Fnv64::new();
    let mut gen = PatternGen::new();
    let mut buf = vec![0u8; 4096];
    let mut body = Vec::new();
    for _ in 0..10 {
        gen.fill(&mut buf);
        fnv.update(&buf);
        body.extend_from_slice(&buf);
    }
    let r = c.request("POST", "/upload", &[], &body);
    assert_eq!(Echo::from_response(&r).body_fnv64, fnv.hex());
}
