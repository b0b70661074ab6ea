//! The transport contract suite against the userspace backend: two smoltcp
//! stacks (client 10.0.0.1, server 10.0.0.2) joined by an in-memory wire,
//! both polled by the same shard loop.  Plus the stack's own behaviour:
//! ARP + ICMP echo, resets, many connections.

use super::*;
use crate::runtime::{add_loop_poller, spawn, Runtime};
use crate::transport::tests::*;
use crate::transport::{Listener, Stream};
use std::future::Future;
use std::task::Waker;

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

/// A stack on the test /24 with MAC 02:00:00:00:00:`last`, no gateway, no RSS.
fn cfg(addr: Ipv4Addr, last: u8, seed: u64) -> StackConfig {
    StackConfig {
        mac: [0x02, 0, 0, 0, 0, last],
        addr,
        prefix_len: 24,
        gateway: None,
        seed,
        rss: None,
        idle_nap: Duration::ZERO,
    }
}

fn stacks() -> (Rc<Stack>, Rc<Stack>) {
    let (a, b) = MemoryLink::pair();
    let client = Stack::new(cfg(CLIENT, 1, 7), Link::Memory(a));
    let server = Stack::new(cfg(SERVER, 2, 11), Link::Memory(b));
    add_loop_poller(client.clone());
    add_loop_poller(server.clone());
    (client, server)
}

fn userspace_backend() -> Backend {
    let (client, server) = stacks();
    Backend {
        listen_addr: SocketAddr::new(SERVER.into(), 0),
        bind: Box::new(move |a| server.bind(a).map(Listener::Userspace)),
        connect: Box::new(move |a| {
            let c = client.clone();
            Box::pin(async move { c.connect(a).await.map(Stream::Userspace) })
        }),
        closed_addr: Box::new(|| SocketAddr::new(SERVER.into(), 9)),
    }
}

#[test]
fn contract_echo_both_ways_with_half_close() {
    case_echo_both_ways_with_half_close(userspace_backend);
}

#[test]
fn contract_connect_to_a_closed_port_fails() {
    case_connect_to_a_closed_port_fails(userspace_backend);
}

#[test]
fn contract_idle_connection_reports_peer_close() {
    case_idle_connection_reports_peer_close(userspace_backend);
}

#[test]
fn contract_two_listeners_share_a_port() {
    case_two_listeners_share_a_port(userspace_backend);
}

#[test]
fn contract_fin_behind_a_short_read_is_not_lost() {
    case_fin_behind_a_short_read_is_not_lost(userspace_backend);
}

#[test]
fn refused_connect_is_connection_refused() {
    let mut rt = Runtime::new().unwrap();
    let kind = rt.block_on(async {
        let (client, _server) = stacks();
        client.connect(SocketAddr::new(SERVER.into(), 9)).await.err().map(|e| e.kind())
    });
    assert_eq!(kind, Some(io::ErrorKind::ConnectionRefused));
}

#[test]
fn binding_a_foreign_address_fails() {
    let mut rt = Runtime::new().unwrap();
    rt.block_on(async {
        let (_client, server) = stacks();
        let err = server.bind("10.0.0.99:80".parse().unwrap()).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::AddrNotAvailable);
        assert!(server.bind("0.0.0.0:80".parse().unwrap()).is_ok());
    });
}

/// 500 concurrent connections, each a request/response exchange; every
/// connection is its own socket set and all are served.
#[test]
fn many_concurrent_connections_are_demultiplexed() {
    let mut rt = Runtime::new().unwrap();
    let (served, conns) = rt.block_on(async {
        let (client, server) = stacks();
        let listener = server.bind(SocketAddr::new(SERVER.into(), 8080)).unwrap();
        let addr = listener.local_addr();
        let served = Rc::new(Cell::new(0usize));
        let s2 = served.clone();
        let _acceptor = spawn(async move {
            loop {
                let Ok((stream, _)) = std::future::poll_fn(|cx| listener.poll_accept(cx)).await else { return };
                let s3 = s2.clone();
                spawn(async move {
                    let stream = Stream::Userspace(stream);
                    let mut buf = [0u8; 16];
                    let n = stream.read(&mut buf).await.unwrap();
                    stream.write_all(&buf[..n]).await.unwrap();
                    s3.set(s3.get() + 1);
                })
                .detach();
            }
        });
        let mut tasks = Vec::new();
        let mut streams = Vec::new();
        for i in 0..500u32 {
            let c = client.clone();
            tasks.push(spawn(async move {
                let s = Stream::Userspace(c.connect(addr).await.unwrap());
                s.write_all(&i.to_be_bytes()).await.unwrap();
                let mut buf = [0u8; 4];
                let mut got = 0;
                while got < 4 {
                    let n = s.read(&mut buf[got..]).await.unwrap();
                    assert!(n > 0);
                    got += n;
                }
                assert_eq!(u32::from_be_bytes(buf), i);
                s
            }));
        }
        for t in tasks {
            streams.push(t.await);
        }
        let conns = server.counters().connections;
        (served.get(), conns)
    });
    assert_eq!(served, 500);
    assert!(conns >= 500, "{conns}");
}

/// The stack answers ARP and ICMP echo for its address (what `ping` of the
/// gateway address exercises on the testbed).
#[test]
fn answers_arp_and_ping() {
    use smoltcp::wire::*;
    let mut rt = Runtime::new().unwrap();
    let (a, b) = MemoryLink::pair();
    let (inbox, peer) = (a.inbox.clone(), a.peer.clone());
    drop(a);
    let replies = rt.block_on(async move {
        let server = Stack::new(cfg(SERVER, 2, 1), Link::Memory(b));
        add_loop_poller(server.clone());
        let me = EthernetAddress([2, 0, 0, 0, 0, 1]);
        // ARP request for SERVER.
        let arp = ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr: me,
            source_protocol_addr: CLIENT,
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: SERVER,
        };
        let mut frame = vec![0u8; 14 + arp.buffer_len()];
        let mut eth = EthernetFrame::new_unchecked(&mut frame[..]);
        eth.set_src_addr(me);
        eth.set_dst_addr(EthernetAddress::BROADCAST);
        eth.set_ethertype(EthernetProtocol::Arp);
        arp.emit(&mut ArpPacket::new_unchecked(eth.payload_mut()));
        peer.borrow_mut().push_back(frame);
        // ICMP echo request to SERVER.
        let echo = Icmpv4Repr::EchoRequest { ident: 7, seq_no: 1, data: b"meshgate" };
        let ip = Ipv4Repr {
            src_addr: CLIENT,
            dst_addr: SERVER,
            next_header: IpProtocol::Icmp,
            payload_len: echo.buffer_len(),
            hop_limit: 64,
        };
        let mut frame = vec![0u8; 14 + ip.buffer_len() + echo.buffer_len()];
        let mut eth = EthernetFrame::new_unchecked(&mut frame[..]);
        eth.set_src_addr(me);
        eth.set_dst_addr(EthernetAddress([2, 0, 0, 0, 0, 2]));
        eth.set_ethertype(EthernetProtocol::Ipv4);
        let caps = smoltcp::phy::ChecksumCapabilities::default();
        let mut pkt = Ipv4Packet::new_unchecked(eth.payload_mut());
        ip.emit(&mut pkt, &caps);
        echo.emit(&mut Icmpv4Packet::new_unchecked(pkt.payload_mut()), &caps);
        peer.borrow_mut().push_back(frame);
        crate::runtime::sleep_until(crate::runtime::now() + Duration::from_millis(20)).await;
        let out: Vec<Vec<u8>> = inbox.borrow_mut().drain(..).collect();
        out
    });
    let mut saw_arp_reply = false;
    let mut saw_echo_reply = false;
    for f in &replies {
        let eth = EthernetFrame::new_checked(&f[..]).unwrap();
        match eth.ethertype() {
            EthernetProtocol::Arp => {
                let arp = ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).unwrap()).unwrap();
                if let ArpRepr::EthernetIpv4 {
                    operation: ArpOperation::Reply,
                    source_protocol_addr,
                    source_hardware_addr,
                    ..
                } = arp
                {
                    assert_eq!(source_protocol_addr, SERVER);
                    assert_eq!(source_hardware_addr, EthernetAddress([2, 0, 0, 0, 0, 2]));
                    saw_arp_reply = true;
                }
            }
            EthernetProtocol::Ipv4 => {
                let pkt = Ipv4Packet::new_checked(eth.payload()).unwrap();
                let icmp = Icmpv4Packet::new_checked(pkt.payload()).unwrap();
                let repr = Icmpv4Repr::parse(&icmp, &Default::default()).unwrap();
                if let Icmpv4Repr::EchoReply { ident: 7, seq_no: 1, data } = repr {
                    assert_eq!(data, b"meshgate");
                    assert_eq!(pkt.dst_addr(), CLIENT);
                    saw_echo_reply = true;
                }
            }
            _ => {}
        }
    }
    assert!(saw_arp_reply && saw_echo_reply, "{} frames", replies.len());
}

#[test]
fn routing_decisions() {
    let cfg = cfg(SERVER, 2, 1);
    assert!(cfg.routes(Ipv4Addr::new(10, 0, 0, 77)));
    assert!(!cfg.routes(Ipv4Addr::new(10, 0, 1, 1)));
    assert!(!cfg.routes(Ipv4Addr::LOCALHOST));
    let gw = StackConfig { gateway: Some(Ipv4Addr::new(10, 0, 0, 254)), ..cfg };
    assert!(gw.routes(Ipv4Addr::new(192, 0, 2, 1)));
    assert!(!gw.routes(Ipv4Addr::LOCALHOST));
}

/// With RSS steering, every source port the stack picks makes the reply
/// hash to the stack's own queue.
#[test]
fn source_ports_steer_replies_to_the_owning_queue() {
    let mut rt = Runtime::new().unwrap();
    rt.block_on(async {
        let (a, _b) = MemoryLink::pair();
        let cfg = StackConfig { rss: Some((4, 2)), ..cfg(CLIENT, 1, 3) };
        let stack = Stack::new(cfg, Link::Memory(a));
        let remote = SocketAddrV4::new(SERVER, 80);
        let mut seen = 0;
        for _ in 0..50 {
            let (idx, local) = stack.inner.borrow_mut().open_active(remote, Some((4, 2))).unwrap();
            let t = stack.inner.borrow().conns[idx].tuple.unwrap();
            assert_eq!(t.local_port, local.port());
            let mut input = Vec::new();
            input.extend_from_slice(&SERVER.octets());
            input.extend_from_slice(&CLIENT.octets());
            input.extend_from_slice(&80u16.to_be_bytes());
            input.extend_from_slice(&local.port().to_be_bytes());
            assert_eq!(dpdk::toeplitz_hash(&dpdk::RSS_KEY, &input) % 4, 2);
            seen += 1;
        }
        assert_eq!(seen, 50);
    });
}

/// Two stacks polled by hand with a virtual clock (not by a shard loop), and
/// one connection between them, established.
fn hand_polled_pair() -> (Rc<Stack>, Rc<Stack>, UserspaceStream, UserspaceStream, Instant) {
    let (a, b) = MemoryLink::pair();
    let client = Stack::new(cfg(CLIENT, 1, 7), Link::Memory(a));
    let server = Stack::new(cfg(SERVER, 2, 11), Link::Memory(b));
    let listener = server.bind(SocketAddr::new(SERVER.into(), 80)).unwrap();
    let mut cx = Context::from_waker(Waker::noop());
    let mut connect = Box::pin(client.connect(SocketAddr::new(SERVER.into(), 80)));
    let mut now = Instant::now();
    let c = loop {
        if let Poll::Ready(r) = connect.as_mut().poll(&mut cx) {
            break r.unwrap();
        }
        now += Duration::from_millis(1);
        client.poll(now);
        server.poll(now);
    };
    drop(connect);
    now += Duration::from_millis(1);
    client.poll(now);
    server.poll(now);
    let Poll::Ready(Ok((s, _))) = listener.poll_accept(&mut cx) else { panic!("not accepted") };
    (client, server, c, s, now)
}

/// smoltcp's user timeout also fires on a connection that is merely quiet;
/// keep-alive probes keep a live one open (as the kernel path does), and a
/// peer that vanished is still detected.
#[test]
fn quiet_connection_stays_open_and_a_vanished_peer_is_reset() {
    let _rt = Runtime::new().unwrap();
    let (client, server, c, s, mut now) = hand_polled_pair();
    // Five quiet minutes, polled once a second.
    for _ in 0..300 {
        now += Duration::from_secs(1);
        client.poll(now);
        server.poll(now);
    }
    assert!(c.is_idle_usable() && s.is_idle_usable());
    assert_eq!(client.counters().resets + server.counters().resets, 0);
    // The server disappears: its frames are no longer delivered or answered.
    let started = now;
    let mut cx = Context::from_waker(Waker::noop());
    let mut buf = [0u8; 8];
    let reset_after = loop {
        now += Duration::from_secs(1);
        server.inner.borrow_mut().link_inbox_clear();
        client.poll(now);
        if let Poll::Ready(r) = c.poll_read(&mut cx, &mut buf) {
            assert_eq!(r.unwrap_err().kind(), io::ErrorKind::ConnectionReset);
            break now - started;
        }
        assert!(now - started < Duration::from_secs(600), "vanished peer never detected");
    };
    assert!(reset_after <= IDLE_TIMEOUT + Duration::from_secs(1), "{reset_after:?}");
    assert!(reset_after >= IDLE_TIMEOUT - KEEP_ALIVE, "{reset_after:?}");
}

/// A server on SERVER:8080 that echoes what its first connection sends.
fn echo_one_connection(server: &Rc<Stack>) -> (SocketAddr, crate::runtime::JoinHandle<()>) {
    let listener = server.bind(SocketAddr::new(SERVER.into(), 8080)).unwrap();
    let addr = listener.local_addr();
    let echo = spawn(async move {
        let Ok((stream, _)) = std::future::poll_fn(|cx| listener.poll_accept(cx)).await else { return };
        let stream = Stream::Userspace(stream);
        let mut buf = [0u8; 512];
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            if n == 0 {
                return;
            }
            stream.write_all(&buf[..n]).await.unwrap();
        }
    });
    (addr, echo)
}

/// Every segment sent or received moves a connection's next protocol
/// deadline (delayed ACK, retransmission), and the heap cancels lazily: the
/// superseded entries must not pile up on a busy keep-alive connection
/// (thousands of them for a few connections made every pop a walk through
/// cold memory).  Both stacks hold at most about two entries per connection.
#[test]
fn superseded_timer_deadlines_do_not_pile_up_on_busy_connections() {
    let mut rt = Runtime::new().unwrap();
    let (client_entries, server_entries) = rt.block_on(async {
        let (client, server) = stacks();
        let (addr, _echo) = echo_one_connection(&server);
        let s = Stream::Userspace(client.connect(addr).await.unwrap());
        let mut most = (0, 0);
        for i in 0..2_000u32 {
            s.write_all(&i.to_be_bytes()).await.unwrap();
            let mut buf = [0u8; 4];
            let mut got = 0;
            while got < 4 {
                got += s.read(&mut buf[got..]).await.unwrap();
            }
            assert_eq!(u32::from_be_bytes(buf), i);
            most = (most.0.max(client.timer_entries()), most.1.max(server.timer_entries()));
            if i % 4 == 0 {
                crate::runtime::sleep_until(crate::runtime::now() + Duration::from_micros(500)).await;
            }
        }
        most
    });
    // One connection on the client stack, the connection and the listener
    // on the server's: the bound is the compaction's, 2 per socket plus 16
    // (without compaction the client's heap held 59 entries here).
    assert!(client_entries <= 2 + TIMER_HEAP_SLACK, "client stack's timer heap reached {client_entries} entries");
    assert!(server_entries <= 4 + TIMER_HEAP_SLACK, "server stack's timer heap reached {server_entries} entries");
}

/// A drained receive ring restarts at its first byte (the vendored smoltcp
/// fix, vendor/README.md): every request of a keep-alive connection lands at
/// the same, cache-hot address instead of walking the 256 KiB buffer, which
/// left each busy connection holding all of it resident.
#[test]
fn a_drained_receive_ring_takes_the_next_segment_at_its_start() {
    let mut rt = Runtime::new().unwrap();
    let starts = rt.block_on(async {
        let (client, server) = stacks();
        let (addr, _echo) = echo_one_connection(&server);
        let conn = client.connect(addr).await.unwrap();
        let idx = conn.idx;
        let s = Stream::Userspace(conn);
        let mut starts = std::collections::BTreeSet::new();
        for i in 0..200u32 {
            let request = [i.to_be_bytes().as_slice(), &[b'x'; 396]].concat();
            s.write_all(&request).await.unwrap();
            while client.inner.borrow().conns[idx].socket().recv_queue() < request.len() {
                crate::runtime::sleep_until(crate::runtime::now() + Duration::from_micros(100)).await;
            }
            let start = client.inner.borrow_mut().conns[idx].socket_mut().peek(1).unwrap().as_ptr() as usize;
            starts.insert(start);
            let mut got = vec![0u8; request.len()];
            let mut n = 0;
            while n < got.len() {
                n += s.read(&mut got[n..]).await.unwrap();
            }
            assert_eq!(got, request);
        }
        starts
    });
    // 200 answers of 400 bytes would have spread over 80,000 bytes of the ring.
    assert_eq!(starts.len(), 1, "answers landed at {} different ring offsets", starts.len());
}

async fn read_to_end(s: &Stream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf).await.unwrap() {
            0 => return out,
            n => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Connections that come and go reuse the closed sockets, buffers included,
/// instead of building new ones (two zeroed 256 KiB buffers each), and a
/// reused socket carries nothing of its previous connection.
#[test]
fn closed_sockets_are_reused_by_later_connections_with_nothing_left_behind() {
    let mut rt = Runtime::new().unwrap();
    let (client_fresh, server_fresh) = rt.block_on(async {
        let (client, server) = stacks();
        let listener = Listener::Userspace(server.bind(SocketAddr::new(SERVER.into(), 8080)).unwrap());
        let addr = listener.local_addr();
        let _server = spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                spawn(async move {
                    let got = read_to_end(&stream).await;
                    stream.write_all(&got).await.unwrap();
                })
                .detach();
            }
        });
        for i in 0..30u8 {
            let s = Stream::Userspace(client.connect(addr).await.unwrap());
            // Longer messages first: a reused ring that kept old bytes would
            // show them after the shorter ones.
            let message = vec![i; 3000 - 50 * i as usize];
            s.write_all(&message).await.unwrap();
            s.shutdown_write().unwrap();
            assert_eq!(read_to_end(&s).await, message, "connection {i}");
            drop(s);
            crate::runtime::sleep_until(crate::runtime::now() + Duration::from_millis(5)).await;
        }
        let fresh = |s: &Rc<Stack>| s.inner.borrow().fresh_sockets;
        (fresh(&client), fresh(&server))
    });
    // Without reuse: 30 on the client, 31 on the server (a spare listening
    // socket per accept, and the first).
    assert!(client_fresh <= 2, "the client stack built {client_fresh} sockets for 30 sequential connections");
    assert!(server_fresh <= 3, "the server stack built {server_fresh} sockets for 30 sequential connections");
}

/// RFC 1071's sum the way upstream smoltcp computes it: big-endian 16-bit
/// words, an odd last byte padded with zero, carries folded at the end.
fn reference_sum(parts: &[&[u8]]) -> u16 {
    let mut sum: u64 = 0;
    for data in parts {
        for pair in data.chunks(2) {
            sum += u64::from(u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(0)]));
        }
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The vendored smoltcp's checksum is patched (32-bit words, one byte swap
/// at the end; vendor/README.md).  A TCP checksum it fills in must make the
/// reference sum over pseudo-header and segment come out as 0xffff (RFC 793
/// §3.1), for every length, every alignment of the buffer, and for contents
/// whose sums wrap (all 0xff) or nearly vanish (all zero).  Two smoltcp
/// stacks would accept each other's segments even with a wrong sum; the
/// kernel on the other end of a DPDK link would not.
#[test]
fn patched_checksum_agrees_with_rfc_1071() {
    use smoltcp::wire::{IpAddress, TcpPacket};
    let (src, dst) = ([10u8, 0, 0, 1], [10u8, 0, 0, 2]);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut random = vec![0u8; 1600];
    for b in &mut random {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        *b = (state >> 56) as u8;
    }
    for pattern in [random, vec![0xffu8; 1600], vec![0u8; 1600]] {
        for offset in 0..8 {
            for len in (20..=1600 - offset).filter(|l| *l < 100 || l % 7 == 0) {
                let mut buf = pattern[..offset + len].to_vec();
                let segment = &mut buf[offset..];
                TcpPacket::new_unchecked(&mut *segment)
                    .fill_checksum(&IpAddress::from(Ipv4Addr::from(src)), &IpAddress::from(Ipv4Addr::from(dst)));
                let pseudo = [0, 6, (len >> 8) as u8, len as u8];
                assert_eq!(reference_sum(&[&src, &dst, &pseudo, segment]), 0xffff, "offset {offset}, length {len}");
            }
        }
    }
}
