//! Malformed or oversized requests: each gets the exact status from the gateway
//! and the connection is closed after the response; nothing reaches the upstream.

use std::time::Duration;

use testkit::{raw_exchange_detailed, start_basic, Gateway, RawOutcome, Upstream};

const HCM: &str = "request_headers_timeout: 1s";

fn start() -> (Upstream, Gateway) {
    start_basic(HCM, "", "", &[])
}

fn exchange(gw: &Gateway, req: &[u8]) -> RawOutcome {
    raw_exchange_detailed(gw.listener_addr, req, Duration::from_secs(10))
}

/// Sends `req`, expects exactly one response with `status`, then a close, and
/// nothing forwarded upstream.
fn expect_rejected(req: &[u8], status: u16) {
    expect_rejected_inner(req, status, true)
}

/// Like [`expect_rejected`] for errors found in the body: the head may already
/// have been forwarded (the gateway streams), so upstream counters are not checked.
fn expect_rejected_in_body(req: &[u8], status: u16) {
    expect_rejected_inner(req, status, false)
}

fn expect_rejected_inner(req: &[u8], status: u16, check_not_forwarded: bool) {
    let (_up, gw) = start();
    let out = exchange(&gw, req);
    let (rs, err) = out.responses();
    assert!(
        !rs.is_empty(),
        "no complete response (err {err:?}, closed {}, reset {}): {:?}",
        out.closed,
        out.reset,
        out.text()
    );
    assert_eq!(rs[0].status, status, "wrong status; got {:?}", out.text());
    assert_eq!(rs.len(), 1, "more than one response: {:?}", out.text());
    assert!(err.is_none(), "trailing garbage after the response: {err:?} in {:?}", out.text());
    assert!(out.closed, "connection not closed after {status} (waited {:?})", out.elapsed);
    if check_not_forwarded {
        assert_eq!(gw.stat("cluster.backend.upstream_rq_total"), 0, "a malformed request was forwarded upstream");
    }
}

fn expect_ok(req: &[u8]) {
    let (_up, gw) = start();
    let mut c = testkit::Client::connect(gw.listener_addr);
    c.send(req);
    let r = c.read_response();
    assert_eq!(r.status, 200, "body: {}", r.body_str());
}

#[test]
fn content_length_and_transfer_encoding_together_is_400() {
    expect_rejected(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    );
}

#[test]
fn conflicting_content_lengths_is_400() {
    expect_rejected(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello12", 400);
}

#[test]
fn chunked_not_final_transfer_coding_is_400() {
    expect_rejected(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 400);
}

#[test]
fn obs_fold_is_400() {
    expect_rejected(b"GET / HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n  b\r\n\r\n", 400);
}

#[test]
fn bare_cr_in_header_value_is_400() {
    expect_rejected(b"GET / HTTP/1.1\r\nHost: x\r\nX-Bad: a\rb\r\n\r\n", 400);
}

#[test]
fn whitespace_before_colon_is_400() {
    expect_rejected(b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400);
}

#[test]
fn invalid_chunk_size_is_400() {
    expect_rejected_in_body(
        b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        400,
    );
}

#[test]
fn request_line_over_8k_is_414() {
    let path = format!("/{}", "a".repeat(9 * 1024));
    expect_rejected(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(), 414);
}

#[test]
fn request_line_under_8k_is_accepted() {
    let path = format!("/{}", "a".repeat(7 * 1024));
    expect_ok(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
}

#[test]
fn headers_over_60k_is_431() {
    let mut req = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..50 {
        req.push_str(&format!("X-Big-{i}: {}\r\n", "v".repeat(1600)));
    }
    req.push_str("\r\n");
    assert!(req.len() > 61 * 1024 + 10_000);
    expect_rejected(req.as_bytes(), 431);
}

#[test]
fn headers_under_60k_are_accepted() {
    let mut req = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..30 {
        req.push_str(&format!("X-Big-{i}: {}\r\n", "v".repeat(1600)));
    }
    req.push_str("\r\n");
    expect_ok(req.as_bytes());
}

#[test]
fn more_than_100_headers_is_431() {
    let mut req = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..100 {
        req.push_str(&format!("X-H-{i}: {i}\r\n"));
    }
    req.push_str("\r\n");
    // Host + 100 = 101 headers.
    expect_rejected(req.as_bytes(), 431);
}

#[test]
fn exactly_100_headers_are_accepted() {
    let mut req = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..99 {
        req.push_str(&format!("X-H-{i}: {i}\r\n"));
    }
    req.push_str("\r\n");
    expect_ok(req.as_bytes());
}

#[test]
fn stalled_request_headers_get_408() {
    let (_up, gw) = start();
    let out =
        raw_exchange_detailed(gw.listener_addr, b"GET / HTTP/1.1\r\nHost: x\r\nX-Partial: ", Duration::from_secs(8));
    let (rs, _err) = out.responses();
    assert_eq!(rs.len(), 1, "expected one response, got {:?}", out.text());
    assert_eq!(rs[0].status, 408);
    assert!(out.closed, "connection not closed after 408");
    assert!(
        out.elapsed >= Duration::from_millis(800) && out.elapsed < Duration::from_secs(5),
        "408 after {:?}, request_headers_timeout is 1s",
        out.elapsed
    );
}

/// A malformed request after a good one on the same connection: the good one is
/// answered normally, the bad one gets 400 and the close.
#[test]
fn malformed_second_request_on_keep_alive_connection() {
    let (_up, gw) = start();
    let out = exchange(&gw, b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost : x\r\n\r\n");
    let (rs, err) = out.responses();
    assert!(err.is_none(), "{err:?}: {:?}", out.text());
    assert_eq!(rs.iter().map(|r| r.status).collect::<Vec<_>>(), vec![200, 400], "{:?}", out.text());
    assert!(out.closed);
}
