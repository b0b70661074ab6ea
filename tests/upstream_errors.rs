//! Upstream failures as the client sees them: refused connections, timeouts,
//! broken responses, responses cut in the middle.

use std::time::{Duration, Instant};

use testkit::{basic_config, closed_addr, raw_exchange_detailed, start_basic, Client, Gateway};

#[test]
fn unreachable_upstream_is_503() {
    let gw = Gateway::start(&basic_config("", "", ""), &[closed_addr()], &[]);
    let mut c = Client::connect(gw.listener_addr);
    let r = c.get("/");
    assert_eq!(r.status, 503, "body: {}", r.body_str());
    // A local reply keeps the client connection usable.
    if !r.connection_close() {
        assert_eq!(c.get("/").status, 503);
    }
}

#[test]
fn slow_upstream_is_504_at_route_timeout() {
    let (_up, gw) = start_basic("", "timeout: 1s", "", &[]);
    let mut c = Client::connect(gw.listener_addr);
    let t = Instant::now();
    let r = c.get("/delay/3000");
    let took = t.elapsed();
    assert_eq!(r.status, 504, "body: {}", r.body_str());
    assert!(took >= Duration::from_millis(900), "504 too early: {took:?}");
    assert!(took < Duration::from_millis(2500), "504 too late: {took:?}");
    // The route timeout fired, not a connection problem: the next request works.
    let mut c2 = Client::connect(gw.listener_addr);
    assert_eq!(c2.get("/").status, 200);
}

/// A keep-alive connection keeps its timers across requests and pushes
/// them back without re-registering (`Sleep::defer_to`): the second
/// request's route timeout must still count from that request, not fire
/// when the first request's would have.
#[test]
fn route_timeout_counts_from_each_request_on_a_reused_connection() {
    let (_up, gw) = start_basic("", "timeout: 1s", "", &[]);
    let mut c = Client::connect(gw.listener_addr);
    assert_eq!(c.get("/delay/100").status, 200);
    // The first request's timer would come due 1 s after it began.
    std::thread::sleep(Duration::from_millis(600));
    let t = Instant::now();
    let r = c.get("/delay/3000");
    let took = t.elapsed();
    assert_eq!(r.status, 504, "body: {}", r.body_str());
    assert!(took >= Duration::from_millis(900), "504 too early: {took:?}");
    assert!(took < Duration::from_millis(2500), "504 too late: {took:?}");
    // And a request on a connection whose timers were deferred many times
    // is still answered in full when it is fast enough.
    let mut c2 = Client::connect(gw.listener_addr);
    for _ in 0..20 {
        assert_eq!(c2.get("/").status, 200);
    }
    assert_eq!(c2.get("/delay/700").status, 200);
}

#[test]
fn fast_enough_upstream_is_not_timed_out() {
    let (_up, gw) = start_basic("", "timeout: 1s", "", &[]);
    let mut c = Client::connect(gw.listener_addr);
    let r = c.get("/delay/300");
    assert_eq!(r.status, 200);
    assert_eq!(r.body_str(), "delayed 300ms\n");
}

#[test]
fn conflicting_content_length_from_upstream_is_502() {
    let (_up, gw) = start_basic("", "", "", &[]);
    let mut c = Client::connect(gw.listener_addr);
    let r = c.get("/malformed");
    assert_eq!(r.status, 502, "body: {}", r.body_str());
    assert!(!r.body_str().contains("hello"), "upstream body leaked");
}

#[test]
fn non_http_upstream_response_is_502() {
    let (_up, gw) = start_basic("", "", "", &[]);
    let mut c = Client::connect(gw.listener_addr);
    let r = c.get("/garbage");
    assert_eq!(r.status, 502, "body: {}", r.body_str());
}

/// The upstream promises 1000 bytes, sends 10 and closes. The response head has
/// gone out already, so the client must see that response cut short (connection
/// closed before 1000 bytes) and never a second response spliced after it.
#[test]
fn truncated_upstream_response_is_cut_not_spliced() {
    let (_up, gw) = start_basic("", "", "", &[]);
    let out =
        raw_exchange_detailed(gw.listener_addr, b"GET /truncated HTTP/1.1\r\nHost: x\r\n\r\n", Duration::from_secs(10));
    let text = out.text();
    assert!(out.closed, "client connection not closed after the cut response: {text:?}");
    let (complete, err) = out.responses();
    assert!(complete.is_empty(), "a complete response was delivered: {text:?}");
    assert!(err.is_some(), "expected a cut response, got {text:?}");
    assert!(text.starts_with("HTTP/1.1 200"), "{text:?}");
    assert_eq!(text.matches("HTTP/1.").count(), 1, "second response spliced in: {text:?}");
    let body_start = text.find("\r\n\r\n").map(|i| i + 4).unwrap_or(text.len());
    assert!(text.len() - body_start < 1000);

    let mut c = Client::connect(gw.listener_addr);
    let r = c.get("/");
    assert_eq!(r.status, 200, "fresh connection after the cut");
    assert_eq!(r.body_str(), "hello from up\n");
}

/// An upstream that dies mid-flight on one request does not affect the next.
#[test]
fn upstream_recovers_after_broken_responses() {
    let (_up, gw) = start_basic("", "", "", &[]);
    for path in ["/garbage", "/malformed"] {
        let mut c = Client::connect(gw.listener_addr);
        let r = c.get(path);
        assert_eq!(r.status, 502, "{path}");
    }
    let mut c = Client::connect(gw.listener_addr);
    for _ in 0..3 {
        assert_eq!(c.get("/").status, 200);
    }
}

/// `stream_idle_timeout`: an exchange where no byte moves for that long is
/// answered 408 (Envoy's "stream timeout") when the response has not started.
#[test]
fn stalled_stream_is_408_at_stream_idle_timeout() {
    let (_up, gw) = start_basic("stream_idle_timeout: 1s", "timeout: 0s", "", &[]);
    let mut c = Client::connect(gw.listener_addr);
    let t = Instant::now();
    let r = c.get("/delay/3000");
    let took = t.elapsed();
    assert_eq!(r.status, 408, "body: {}", r.body_str());
    assert!(took >= Duration::from_millis(900) && took < Duration::from_millis(2500), "took {took:?}");
    assert_eq!(gw.wait_stat("http.ingress.downstream_rq_idle_timeout", 1, Duration::from_secs(5)), 1);
}

/// `request_timeout`: the whole request must arrive in time; a client that
/// stops sending its body gets 408.
#[test]
fn slow_request_body_is_408_at_request_timeout() {
    let (_up, gw) = start_basic("request_timeout: 1s", "", "", &[]);
    let out = raw_exchange_detailed(
        gw.listener_addr,
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly-part",
        Duration::from_secs(5),
    );
    let text = out.text();
    assert!(text.starts_with("HTTP/1.1 408"), "got {text:?}");
    assert!(out.closed);
}
