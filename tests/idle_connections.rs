//! Keep-alive connections that sit idle long enough to be parked (their
//! connection task ended, the socket kept in the shard's parking lot, see
//! `PARK_IDLE_AFTER` in `dataplane/src/proxy/mod.rs` and
//! `dataplane/src/proxy/park.rs`) must behave exactly like busy ones: the
//! next request is served, the idle timeout still counts from when the
//! connection went idle, and draining still closes them.

use std::io::Read;
use std::time::{Duration, Instant};

use testkit::{build_request, start_basic, Client, Gateway};

/// Past the gateway's park delay (1 s while a shard has few connections,
/// `PARK_IDLE_AFTER_FEW`; 20 ms with many), so the connection is parked.
const PARKED: Duration = Duration::from_millis(1_500);

#[test]
fn parked_keep_alive_connection_serves_the_next_requests() {
    let (_up, gw) = start_basic("", "", "", &["--shards", "1"]);
    let mut c = Client::connect(gw.listener_addr);
    assert_eq!(c.get("/echo").status, 200);
    std::thread::sleep(PARKED);
    // Still one open connection, not destroyed while parked.
    assert_eq!(gw.stat("http.ingress.downstream_cx_active"), 1);
    assert_eq!(gw.stat("http.ingress.downstream_cx_destroy"), 0);
    for round in 0..2 {
        let r = c.get("/echo");
        assert_eq!(r.status, 200, "request {round} after parking");
        std::thread::sleep(PARKED);
    }
    // A pipelined pair right after waking from parking.
    let mut two = build_request("GET", "/status/201", &[], b"");
    two.extend(build_request("GET", "/status/202", &[], b""));
    c.send(&two);
    assert_eq!(c.read_response().status, 201);
    assert_eq!(c.read_response().status, 202);
    drop(c);
    assert_eq!(gw.wait_stat("http.ingress.downstream_cx_destroy", 1, Duration::from_secs(5)), 1);
    assert_eq!(gw.stat("http.ingress.downstream_cx_active"), 0);
    assert!(gw.stat("http.ingress.downstream_cx_rx_bytes_total") > 0);
}

/// A new connection that has had one request answered, and when it went idle.
fn served_once(gw: &Gateway) -> (Client, Instant) {
    let mut c = Client::connect(gw.listener_addr);
    assert_eq!(c.get("/echo").status, 200);
    (c, Instant::now())
}

/// Waits for the gateway to close `c` without sending a byte, then checks
/// that it happened at the 2.5 s idle timeout counted from `idle_since`:
/// not before it, and not long after.
fn assert_closed_at_idle_timeout(c: &mut Client, idle_since: Instant, name: &str) {
    c.set_read_timeout(Duration::from_secs(10));
    let mut byte = [0u8; 1];
    let n = c.stream().try_clone().unwrap().read(&mut byte).unwrap_or(0);
    let closed_after = idle_since.elapsed();
    assert_eq!(n, 0, "{name}: the gateway closes the idle connection without sending anything");
    assert!(closed_after >= Duration::from_millis(2_400), "{name} closed after {closed_after:?}");
    assert!(closed_after < Duration::from_millis(4_500), "{name} closed after {closed_after:?}");
}

#[test]
fn parked_connection_closes_at_the_idle_timeout_counted_from_going_idle() {
    let (_up, gw) = start_basic("common_http_protocol_options: { idle_timeout: 2.5s }", "", "", &["--shards", "1"]);
    let (mut c, idle_since) = served_once(&gw);
    assert_closed_at_idle_timeout(&mut c, idle_since, "the connection");
    assert_eq!(gw.wait_stat("http.ingress.downstream_cx_idle_timeout", 1, Duration::from_secs(2)), 1);
}

#[test]
fn draining_closes_parked_connections_promptly() {
    let (_up, mut gw) = start_basic("", "", "", &["--shards", "1", "--drain-time-s", "30"]);
    let mut c = Client::connect(gw.listener_addr);
    assert_eq!(c.get("/echo").status, 200);
    std::thread::sleep(PARKED);
    let signalled = Instant::now();
    gw.sigterm();
    c.set_read_timeout(Duration::from_secs(10));
    let mut byte = [0u8; 1];
    let n = c.stream().try_clone().unwrap().read(&mut byte).unwrap_or(0);
    assert_eq!(n, 0, "parked connection closed on drain");
    let st = gw.wait_exit(Duration::from_secs(10)).expect("meshgate exits once its parked connection closed");
    assert!(st.success(), "exit status: {st}");
    assert!(signalled.elapsed() < Duration::from_secs(10), "exit waited for the drain time");
}

/// Two parked connections that went idle a second apart each close at their
/// own idle timeout: the lot's one timer follows the earliest deadline.
#[test]
fn parked_connections_close_at_their_own_idle_timeouts() {
    let (_up, gw) = start_basic("common_http_protocol_options: { idle_timeout: 2.5s }", "", "", &["--shards", "1"]);
    let (mut first, first_idle) = served_once(&gw);
    std::thread::sleep(Duration::from_millis(1_000));
    let (mut second, second_idle) = served_once(&gw);
    assert_closed_at_idle_timeout(&mut first, first_idle, "first");
    assert_closed_at_idle_timeout(&mut second, second_idle, "second");
    assert_eq!(gw.wait_stat("http.ingress.downstream_cx_idle_timeout", 2, Duration::from_secs(2)), 2);
}

/// Many parked connections woken together (more than the lot resumes in
/// one turn): every pipelined request is answered, and when every client
/// closes at once each close is counted.
#[test]
fn many_parked_connections_woken_at_once_are_all_served_and_closed() {
    const N: usize = 300;
    let (_up, gw) = start_basic("", "", "", &["--shards", "1"]);
    let mut clients: Vec<Client> = (0..N).map(|_| Client::connect(gw.listener_addr)).collect();
    for c in &mut clients {
        assert_eq!(c.get("/echo").status, 200);
    }
    std::thread::sleep(PARKED);
    assert_eq!(gw.stat("http.ingress.downstream_cx_active"), N as u64);
    // Every request goes out before any response is read, so the shard sees
    // the wake-ups of many parked sockets in one pass.
    for c in &mut clients {
        c.send(&build_request("GET", "/status/203", &[], b""));
    }
    for (i, c) in clients.iter_mut().enumerate() {
        c.set_read_timeout(Duration::from_secs(10));
        assert_eq!(c.read_response().status, 203, "connection {i}");
    }
    std::thread::sleep(PARKED);
    drop(clients);
    assert_eq!(gw.wait_stat("http.ingress.downstream_cx_destroy_remote", N as u64, Duration::from_secs(10)), N as u64);
    assert_eq!(gw.stat("http.ingress.downstream_cx_active"), 0);
}
