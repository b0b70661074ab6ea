//! Keep-alive connections that sit idle long enough to be parked (their
//! connection task ended, the socket kept in the shard's parking lot, see
//! `PARK_IDLE_AFTER` in `dataplane/src/proxy/mod.rs` and
//! `dataplane/src/proxy/park.rs`) must behave exactly like busy ones: the
//! next request is served, the idle timeout still counts from when the
//! connection went idle, and draining still closes them.

use std::io::Read;
use std::time::{Duration, Instant};

use testkit::{build_request, start_basic, Client};

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

#[test]
fn parked_connection_closes_at_the_idle_timeout_counted_from_going_idle() {
    let (_up, gw) = start_basic("common_http_protocol_options: { idle_timeout: 2.5s }", "", "", &["--shards", "1"]);
    let mut c = Client::connect(gw.listener_addr);
    assert_eq!(c.get("/echo").status, 200);
    let idle_since = Instant::now();
    c.set_read_timeout(Duration::from_secs(10));
    let mut byte = [0u8; 1];
    let n = c.stream().try_clone().unwrap().read(&mut byte).unwrap_or(0);
    let closed_after = idle_since.elapsed();
    assert_eq!(n, 0, "the gateway closes the idle connection without sending anything");
    // Not before the timeout, and not long after it.
    assert!(closed_after >= Duration::from_millis(2_400), "closed after {closed_after:?}");
    assert!(closed_after < Duration::from_millis(4_500), "closed after {closed_after:?}");
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
    let mut first = Client::connect(gw.listener_addr);
    assert_eq!(first.get("/echo").status, 200);
    let first_idle = Instant::now();
    std::thread::sleep(Duration::from_millis(1_000));
    let mut second = Client::connect(gw.listener_addr);
    assert_eq!(second.get("/echo").status, 200);
    let second_idle = Instant::now();
    for (name, c, since) in [("first", &mut first, first_idle), ("second", &mut second, second_idle)] {
        c.set_read_timeout(Duration::from_secs(10));
        let mut byte = [0u8; 1];
        let n = c.stream().try_clone().unwrap().read(&mut byte).unwrap_or(0);
        let closed_after = since.elapsed();
        assert_eq!(n, 0, "{name}: closed without a byte");
        assert!(closed_after >= Duration::from_millis(2_400), "{name} closed after {closed_after:?}");
        assert!(closed_after < Duration::from_millis(4_500), "{name} closed after {closed_after:?}");
    }
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
