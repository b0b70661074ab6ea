//! The transport contract, checked against a backend with real sockets.
//! Every backend must pass these: each case takes a [`Backend`] fixture; the
//! kernel backend runs them here on loopback, the userspace backend in
//! `userspace/tests.rs` (two smoltcp stacks on an in-memory wire) and over
//! DPDK in the testbed.

use super::*;
use crate::runtime::{spawn, Runtime};
use std::future::Future;
use std::rc::Rc;

/// What a backend's `connect` returns.
type ConnectFuture = Pin<Box<dyn Future<Output = io::Result<Stream>>>>;

/// How a contract case reaches a backend.
pub(crate) struct Backend {
    /// Address to listen on (port 0: any).
    pub listen_addr: SocketAddr,
    pub bind: Box<dyn Fn(SocketAddr) -> io::Result<Listener>>,
    pub connect: Box<dyn Fn(SocketAddr) -> ConnectFuture>,
    /// An address where nothing listens.
    pub closed_addr: Box<dyn Fn() -> SocketAddr>,
}

fn kernel_backend() -> Backend {
    Backend {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        bind: Box::new(bind),
        connect: Box::new(|a| Box::pin(connect(a))),
        closed_addr: Box::new(|| std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()),
    }
}

pub(crate) fn case_echo_both_ways_with_half_close(make: fn() -> Backend) {
    let mut rt = Runtime::new().unwrap();
    rt.block_on(async move {
        let b = Rc::new(make());
        let listener = (b.bind)(b.listen_addr).unwrap();
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
        let client = (b.connect)(addr).await.unwrap();
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

pub(crate) fn case_connect_to_a_closed_port_fails(make: fn() -> Backend) {
    let mut rt = Runtime::new().unwrap();
    let err = rt.block_on(async move {
        let b = make();
        let addr = (b.closed_addr)();
        (b.connect)(addr).await.err()
    });
    assert!(err.is_some());
}

pub(crate) fn case_idle_connection_reports_peer_close(make: fn() -> Backend) {
    let mut rt = Runtime::new().unwrap();
    rt.block_on(async move {
        let b = make();
        let listener = (b.bind)(b.listen_addr).unwrap();
        let client = (b.connect)(listener.local_addr()).await.unwrap();
        let (server_side, _) = listener.accept().await.unwrap();
        assert!(client.is_idle_usable());
        drop(server_side);
        crate::runtime::sleep_until(crate::runtime::now() + std::time::Duration::from_millis(20)).await;
        assert!(!client.is_idle_usable());
    });
}

pub(crate) fn case_two_listeners_share_a_port(make: fn() -> Backend) {
    let mut rt = Runtime::new().unwrap();
    rt.block_on(async move {
        let b = make();
        let a = (b.bind)(b.listen_addr).unwrap();
        let c = (b.bind)(a.local_addr()).unwrap();
        assert_eq!(a.local_addr(), c.local_addr());
    });
}

/// Data and FIN arriving together raise one edge: after a short read drains
/// the data, the end of stream must still be seen without a new event.
pub(crate) fn case_fin_behind_a_short_read_is_not_lost(make: fn() -> Backend) {
    let mut rt = Runtime::new().unwrap();
    let got = rt.block_on(async move {
        let b = make();
        let listener = (b.bind)(b.listen_addr).unwrap();
        let client = (b.connect)(listener.local_addr()).await.unwrap();
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

#[test]
fn accept_connect_and_echo_both_ways_with_half_close() {
    case_echo_both_ways_with_half_close(kernel_backend);
}

#[test]
fn connect_to_a_closed_port_fails() {
    case_connect_to_a_closed_port_fails(kernel_backend);
}

#[test]
fn idle_connection_reports_peer_close() {
    case_idle_connection_reports_peer_close(kernel_backend);
}

#[test]
fn two_listeners_share_a_port() {
    case_two_listeners_share_a_port(kernel_backend);
}

#[test]
fn fin_behind_a_short_read_is_not_lost() {
    case_fin_behind_a_short_read_is_not_lost(kernel_backend);
}

/// `read_into` lends the reader at most the `ReadBuf`'s room (and at most
/// its landing buffer), copies exactly what was read after what the buffer
/// held, and leaves the buffer alone when the read is pending or fails.
#[test]
fn read_into_fills_a_read_buf_over_uninitialised_memory() {
    use std::mem::MaybeUninit;
    let mut storage = [MaybeUninit::<u8>::uninit(); 64 * 1024];
    let mut buf = tokio::io::ReadBuf::uninit(&mut storage);
    buf.put_slice(b"ab");
    let mut lent = 0;
    let r = read_into(&mut buf, |landing| {
        lent = landing.len();
        landing[..5].copy_from_slice(b"hello");
        Poll::Ready(Ok(5))
    });
    assert!(matches!(r, Poll::Ready(Ok(5))));
    assert_eq!(buf.filled(), b"abhello");
    assert_eq!(lent, LANDING_BYTES, "never more than the landing buffer");

    let r = read_into(&mut buf, |_| Poll::Pending);
    assert!(r.is_pending());
    let r = read_into(&mut buf, |_| Poll::Ready(Err(io::ErrorKind::ConnectionReset.into())));
    assert!(matches!(r, Poll::Ready(Err(ref e)) if e.kind() == io::ErrorKind::ConnectionReset));
    assert_eq!(buf.filled(), b"abhello", "a read that did not happen adds nothing");

    let mut small = [MaybeUninit::<u8>::uninit(); 10];
    let mut buf = tokio::io::ReadBuf::uninit(&mut small);
    buf.put_slice(b"0123456");
    let r = read_into(&mut buf, |landing| {
        lent = landing.len();
        landing.copy_from_slice(b"789");
        Poll::Ready(Ok(3))
    });
    assert!(matches!(r, Poll::Ready(Ok(3))));
    assert_eq!(lent, 3, "never more than the buffer's room");
    assert_eq!(buf.filled(), b"0123456789");
    let r = read_into(&mut buf, |_| panic!("a full buffer reads nothing"));
    assert!(matches!(r, Poll::Ready(Ok(0))));
}
