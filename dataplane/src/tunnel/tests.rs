//! The tunnel over real loopback sockets on the shard runtime.

use std::rc::Rc;
use std::time::Duration;

use super::*;
use crate::runtime::{spawn, Runtime};
use crate::transport::{self, Stream};

/// A connected pair of kernel streams: (client side, server side).
async fn pair() -> (Stream, Stream) {
    let listener = transport::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let client = transport::connect(listener.local_addr()).await.unwrap();
    let (server, _) = listener.accept().await.unwrap();
    (client, server)
}

async fn read_to_end(s: &Stream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = s.read(&mut buf).await.unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// client ⇄ (a | tunnel | b) ⇄ server
struct Rig {
    client: Stream,
    server: Stream,
    tunnel: crate::runtime::JoinHandle<(TunnelEnd, TunnelBytes)>,
}

async fn rig(idle: Option<Duration>, a_early: &'static [u8], buffer: usize) -> Rig {
    let (client, a) = pair().await;
    let (b, server) = pair().await;
    let tunnel = spawn(async move { splice(&a, &b, a_early, b"", buffer, idle, &NoObserver).await });
    Rig { client, server, tunnel }
}

#[test]
fn carries_both_directions_with_half_close_each_way() {
    let mut rt = Runtime::new().unwrap();
    let (end, bytes, got_server, got_client) = rt.block_on(async {
        let Rig { client, server, tunnel } = rig(None, b"early:", 4096).await;
        let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let server = Rc::new(server);
        let s2 = server.clone();
        // The server reads everything (until the client's FIN arrives through
        // the tunnel), then still answers: the reverse direction stays open.
        let echo = spawn(async move {
            let got = read_to_end(&s2).await;
            s2.write_all(b"reply after your FIN").await.unwrap();
            s2.shutdown_write().unwrap();
            got
        });
        client.write_all(&payload).await.unwrap();
        client.shutdown_write().unwrap();
        let got_client = read_to_end(&client).await;
        let got_server = echo.await;
        let (end, bytes) = tunnel.await;
        let mut want = b"early:".to_vec();
        want.extend_from_slice(&payload);
        assert!(got_server == want, "server got {} bytes, want {}", got_server.len(), want.len());
        drop(server);
        (end, bytes, got_server.len(), got_client)
    });
    assert_eq!(end, TunnelEnd::Closed);
    assert_eq!(bytes.a_to_b, got_server as u64);
    assert_eq!(got_client, b"reply after your FIN");
    assert_eq!(bytes.b_to_a, got_client.len() as u64);
}

#[test]
fn idle_timeout_fires_only_after_a_quiet_period() {
    let mut rt = Runtime::new().unwrap();
    let (end, quiet_for) = rt.block_on(async {
        let Rig { client, server, tunnel } = rig(Some(Duration::from_millis(300)), b"", 4096).await;
        // Traffic every 100 ms for 600 ms keeps the tunnel alive past the
        // 300 ms idle timeout…
        let mut buf = [0u8; 16];
        for _ in 0..6 {
            client.write_all(b"ping").await.unwrap();
            let n = server.read(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"ping");
            sleep_until(now() + Duration::from_millis(100)).await;
        }
        // …then silence ends it.
        let quiet = now();
        let (end, _) = tunnel.await;
        let quiet_for = now() - quiet;
        drop((client, server));
        (end, quiet_for)
    });
    assert_eq!(end, TunnelEnd::IdleTimeout);
    assert!(quiet_for >= Duration::from_millis(150), "fired after only {quiet_for:?} of silence");
}

#[test]
fn reset_on_one_side_ends_the_tunnel() {
    let mut rt = Runtime::new().unwrap();
    let end = rt.block_on(async {
        let Rig { client, server, tunnel } = rig(None, b"", 4096).await;
        client.write_all(b"x").await.unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(server.read(&mut buf).await.unwrap(), 1);
        // Closing with unread data makes the kernel send RST.
        client.write_all(b"unread").await.unwrap();
        sleep_until(now() + Duration::from_millis(50)).await;
        drop(server);
        let (end, _) = tunnel.await;
        drop(client);
        end
    });
    assert_eq!(end, TunnelEnd::BFailed);
}

#[test]
fn slow_reader_applies_backpressure_without_losing_bytes() {
    let mut rt = Runtime::new().unwrap();
    let got = rt.block_on(async {
        let Rig { client, server, tunnel } = rig(None, b"", 1024).await;
        let payload: Vec<u8> = (0..4_000_000u32).map(|i| (i % 253) as u8).collect();
        let expected = payload.clone();
        let writer = spawn(async move {
            client.write_all(&payload).await.unwrap();
            client.shutdown_write().unwrap();
            client
        });
        // Read slowly at first, so the tunnel's buffer and socket buffers fill.
        sleep_until(now() + Duration::from_millis(200)).await;
        let got = read_to_end(&server).await;
        let client = writer.await;
        server.shutdown_write().unwrap();
        let _ = read_to_end(&client).await;
        let _ = tunnel.await;
        got == expected
    });
    assert!(got);
}
