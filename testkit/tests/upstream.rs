//! The kit's own tests: `mg-upstream` behaviours, driven directly (no gateway)
//! with the kit's client. They also make `cargo test --workspace` build the
//! `mg-upstream` binary before any test runs.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use testkit::{
    fnv64_hex, is_pattern_at, pattern, raw_exchange_detailed, read_response_streaming, Client, Echo, Fnv64, Framing,
    PatternGen, Upstream,
};

fn raw(up: &Upstream, req: &[u8]) -> testkit::RawOutcome {
    raw_exchange_detailed(up.addr, req, Duration::from_secs(5))
}

#[test]
fn hello_and_identity_headers() {
    let up = Upstream::start("u1");
    let mut c = Client::connect(up.addr);
    let r = c.get("/anything");
    assert_eq!(r.status, 200);
    assert_eq!(r.body_str(), "hello from u1\n");
    assert_eq!(r.header("x-upstream-name"), Some("u1"));
    assert_eq!(r.header("x-upstream-conn"), Some("1"));
    assert_eq!(r.header("x-upstream-conn-requests"), Some("1"));
    assert_eq!(r.header("server"), Some("mg-upstream"));
    assert!(!r.has_header("date"), "mg-upstream sends no date (the gateway adds it)");
    let r = c.get("/");
    assert_eq!(r.header("x-upstream-conn"), Some("1"));
    assert_eq!(r.header("x-upstream-conn-requests"), Some("2"));
    let mut c2 = Client::connect(up.addr);
    assert_eq!(c2.get("/").header("x-upstream-conn"), Some("2"));
}

#[test]
fn echo_reports_request_as_received() {
    let up = Upstream::start("u");
    let mut c = Client::connect(up.addr);
    let r = c.request("PUT", "/echo?a=1&b=2", &[("X-First", "1"), ("x-MiXed", "v a l"), ("X-First", "2")], b"abc");
    let e = Echo::from_response(&r);
    assert_eq!(e.method, "PUT");
    assert_eq!(e.path, "/echo?a=1&b=2");
    let names: Vec<&str> = e.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, vec!["Host", "X-First", "x-MiXed", "X-First", "Content-Length"]);
    assert_eq!(e.header_all("x-first"), vec!["1", "2"]);
    assert_eq!(e.header("x-mixed"), Some("v a l"));
    assert_eq!(e.body_len, 3);
    assert_eq!(e.body_fnv64, fnv64_hex(b"abc"));
}

#[test]
fn pipelined_requests_in_order() {
    let up = Upstream::start("u");
    let mut c = Client::connect(up.addr);
    let mut all = Vec::new();
    for i in 0..10 {
        all.extend_from_slice(format!("GET /echo?i={i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    }
    c.send(&all);
    let mut conns = BTreeSet::new();
    for i in 0..10 {
        let r = c.read_response();
        assert_eq!(Echo::from_response(&r).path, format!("/echo?i={i}"));
        assert_eq!(r.header("x-upstream-conn-requests"), Some((i + 1).to_string().as_str()));
        conns.insert(r.header("x-upstream-conn").map(str::to_owned));
    }
    assert_eq!(conns.len(), 1);
}

#[test]
fn chunked_upload_with_trailers() {
    let up = Upstream::start("u");
    let mut c = Client::connect(up.addr);
    c.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n6;ext=1\r\nhello \r\n5\r\nworld\r\n0\r\nx-sum: abc\r\nX-Two: 2\r\n\r\n");
    let r = c.read_response();
    let e = Echo::from_response(&r);
    assert_eq!(e.body_len, 11);
    assert_eq!(e.body_fnv64, fnv64_hex(b"hello world"));
    assert_eq!(e.trailer("x-sum"), Some("abc"));
    assert_eq!(e.trailer("x-two"), Some("2"));
    assert_eq!(c.get("/").status, 200);
}

#[test]
fn expect_is_reported_and_continued() {
    let up = Upstream::start("u");
    let mut c = Client::connect(up.addr);
    c.send(b"POST /expect HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
    assert_eq!(c.read_response().status, 100);
    c.send(b"abc");
    let r = c.read_response();
    let e = Echo::from_response(&r);
    assert_eq!(e.header("expect"), Some("100-continue"), "upstream reports what it saw");
    assert_eq!(e.body_len, 3);
}

#[test]
fn head_and_bodiless_statuses() {
    let up = Upstream::start("u");
    let mut c = Client::connect(up.addr);
    let r = c.request("HEAD", "/bytes/1000", &[], b"");
    assert_eq!(r.header("content-length"), Some("1000"));
    assert!(r.body.is_empty());
    for code in [204u16, 304] {
        let r = c.get(&format!("/status/{code}"));
        assert_eq!(r.status, code);
        assert!(r.body.is_empty());
        assert_eq!(r.framing, Framing::None);
    }
    let r = c.get("/status/503");
    assert_eq!((r.status, r.body_str().as_str()), (503, "status 503\n"));
    c.send(b"GET /status/100 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.read_response().status, 100);
    assert_eq!(c.read_response().status, 200);
    assert_eq!(c.get("/").status, 200);
}

#[test]
fn chunked_download_has_checksum_trailer() {
    let up = Upstream::start("u");
    let mut c = Client::connect(up.addr);
    for n in [0usize, 1, 10, 100_000, 1_000_000] {
        let r = c.get(&format!("/chunked/{n}"));
        assert_eq!(r.framing, Framing::Chunked);
        assert_eq!(r.header("trailer"), Some("x-trailer-checksum"));
        assert_eq!(r.body, pattern(n));
        assert_eq!(r.trailer("x-trailer-checksum"), Some(fnv64_hex(&r.body).as_str()));
    }
}

#[test]
fn bytes_and_close_delimited() {
    let up = Upstream::start("u");
    let mut c = Client::connect(up.addr);
    let r = c.get("/bytes/200000");
    assert_eq!(r.framing, Framing::ContentLength(200_000));
    assert_eq!(r.body, pattern(200_000));
    let out = raw(&up, b"GET /close-delimited/50000 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(out.closed);
    let (rs, err) = out.responses();
    assert!(err.is_none());
    assert_eq!(rs.len(), 1);
    assert_eq!(rs[0].framing, Framing::CloseDelimited);
    assert_eq!(rs[0].body, pattern(50_000));
}

#[test]
fn broken_responses_are_exact() {
    let up = Upstream::start("u");
    let out = raw(&up, b"GET /malformed HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(out.closed);
    assert_eq!(out.text(), "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello");
    let out = raw(&up, b"GET /garbage HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(out.closed);
    assert_eq!(out.text(), "this is not http\r\n\r\n");
    let out = raw(&up, b"GET /truncated HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(out.closed);
    let (rs, err) = out.responses();
    assert!(rs.is_empty());
    assert!(err.is_some());
    assert!(out.text().contains("content-length: 1000\r\n\r\n0123456789"));
    assert!(out.text().ends_with("0123456789"));
}

#[test]
fn headers_endpoint_sets_response_headers() {
    let up = Upstream::start("u");
    let mut c = Client::connect(up.addr);
    let r = c.request("GET", "/headers", &[("x-set-response-server", "foo"), ("X-Set-Response-X-A", "1")], b"");
    assert_eq!(r.header_all("server"), vec!["foo"]);
    assert_eq!(r.header("x-a"), Some("1"));
    let r = c.request("GET", "/headers", &[("x-set-response-connection", "close")], b"");
    assert!(r.connection_close());
    assert!(c.is_closed(Duration::from_secs(2)));
}

#[test]
fn delays() {
    let up = Upstream::start("u");
    let mut c = Client::connect(up.addr);
    let t = Instant::now();
    assert_eq!(c.get("/delay/300").body_str(), "delayed 300ms\n");
    assert!(t.elapsed() >= Duration::from_millis(300));
    let t = Instant::now();
    let r = c.get("/sleep-body/300");
    assert_eq!(r.body_str(), "0123456789");
    assert!(t.elapsed() >= Duration::from_millis(300));
}

#[test]
fn bad_requests_get_400_and_close() {
    let up = Upstream::start("u");
    for req in [
        &b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"[..],
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
    ] {
        let out = raw(&up, req);
        let (rs, _) = out.responses();
        assert_eq!(rs.len(), 1, "{:?}", out.text());
        assert_eq!(rs[0].status, 400);
        assert!(out.closed);
    }
}

/// Big bodies both ways, directly: checks the kit is fast enough for the 1 GiB
/// gateway tests and that mg-upstream streams.
#[test]
fn big_bodies_stream() {
    const N: u64 = 256 * 1024 * 1024;
    let up = Upstream::start("u");
    let mut c = Client::connect(up.addr);
    c.set_read_timeout(Duration::from_secs(60));
    c.send(format!("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {N}\r\n\r\n").as_bytes());
    let mut gen = PatternGen::new();
    let mut fnv = Fnv64::new();
    let mut buf = vec![0u8; 256 * 1024];
    while gen.position() < N {
        gen.fill(&mut buf);
        fnv.update(&buf);
        c.send(&buf);
    }
    let e = Echo::from_response(&c.read_response());
    assert_eq!(e.body_len, N);
    assert_eq!(e.body_fnv64, fnv.hex());
    let rss = testkit::rss_kib_of(up.pid()).unwrap_or(0);
    assert!(rss < 64 * 1024, "mg-upstream RSS {rss} KiB after a 256 MiB upload");

    c.send(format!("GET /bytes/{N} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    let mut got = 0u64;
    let mut ok = true;
    read_response_streaming(c.reader(), false, &mut |d| {
        ok &= is_pattern_at(d, got);
        got += d.len() as u64;
    })
    .expect("download")
    .expect("response");
    assert_eq!(got, N);
    assert!(ok);
}
