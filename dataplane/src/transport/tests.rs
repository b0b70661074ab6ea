//! The transport contract, checked against a backend with real sockets.
//! Every backend must pass these (the DPDK backend runs them in its testbed).

use super::*;
use crate::runtime::{spawn, Runtime};

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

#[test]
fn accept_connect_and_echo_both_ways_with_half_close() {
    let mut rt = Runtime::new().unwrap();
    rt.block_on(async {
        let listener = bind(loopback()).unwrap();
        let addr = listener.local_addr();
        let server = spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 64 * 1024];
            let mut total = Vec::new();
            loop {
                let n = stream.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                total.extend_from_slice(&buf[..n]);
            }
            stream.write_all(&total).await.unwrap();
            stream.shutdown_write().unwrap();
        });
        let client = connect(addr).await.unwrap();
        assert_eq!(client.peer_addr(), addr);
        let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        client.write_all_vectored(&[&payload[..10], &payload[10..]]).await.unwrap();
        client.shutdown_write().unwrap();
        let mut echoed = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = client.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            echoed.extend_from_slice(&buf[..n]);
        }
        server.await;
        assert!(echoed == payload, "echo differs");
    });
}

#[test]
fn connect_to_a_closed_port_fails() {
    let mut rt = Runtime::new().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let err = rt.block_on(async move { connect(port).await.err() });
    assert!(err.is_some());
}

#[test]
fn idle_connection_reports_peer_close() {
    let mut rt = Runtime::new().unwrap();
    rt.block_on(async {
        let listener = bind(loopback()).unwrap();
        let client = connect(listener.local_addr()).await.unwrap();
        let (server_side, _) = listener.accept().await.unwrap();
        assert!(client.is_idle_usable());
        drop(server_side);
        crate::runtime::sleep_until(crate::runtime::now() + std::time::Duration::from_millis(20)).await;
        assert!(!client.is_idle_usable());
    });
}

#[test]
fn two_listeners_share_a_port() {
    let mut rt = Runtime::new().unwrap();
    rt.block_on(async {
        let a = bind(loopback()).unwrap();
        let b = bind(a.local_addr()).unwrap();
        assert_eq!(a.local_addr(), b.local_addr());
    });
}

/// Data and FIN arriving together raise one edge: after a short read drains
/// the data, the end of stream must still be seen without a new event.
#[test]
fn fin_behind_a_short_read_is_not_lost() {
    let mut rt = Runtime::new().unwrap();
    let got = rt.block_on(async {
        let listener = bind(loopback()).unwrap();
        let client = connect(listener.local_addr()).await.unwrap();
        let (server_side, _) = listener.accept().await.unwrap();
        server_side.write_all(b"0123456789").await.unwrap();
        drop(server_side);
        crate::runtime::sleep_until(crate::runtime::now() + std::time::Duration::from_millis(20)).await;
        let mut buf = [0u8; 64];
        let first = client.read(&mut buf).await.unwrap();
        let second = crate::runtime::timeout(Some(std::time::Duration::from_secs(2)), client.read(&mut buf)).await;
        (first, second.ok().and_then(|r| r.ok()))
    });
    assert_eq!(got, (10, Some(0)));
}
