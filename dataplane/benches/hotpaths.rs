//! The request path's hot operations as a plain program, for counting
//! instructions under callgrind (`bench/callgrind.sh`).
//!
//! `hotpaths <path> <iterations>` builds the fixture for `<path>` (see
//! `support`), checks its answer once, then runs the operation
//! `<iterations>` times inside `measured`, the only function callgrind
//! collects (`--toggle-collect`).  Setup, checking and process start-up are
//! therefore not counted, and what is left — N operations plus a constant
//! loop entry — is cancelled by the driver, which runs N and 2N iterations
//! and reports (Ir(2N) − Ir(N)) / N.  Inputs cycle with period 256, so
//! iteration counts that are multiples of 256 see identical input mixes.
//!
//! `hotpaths --list` prints the paths.  Without a path (as `cargo test
//! --benches` and `cargo bench` run it) every path runs a few iterations
//! as a smoke test and nothing is measured.
//!
//! Paths:
//! * `baseline/empty`: the loop and the indirect call around an empty
//!   operation — the harness's own share of every other figure;
//! * `http1/forward`: parse + forward of a typical request (`support::Forwarder`);
//! * `http1/parse`: only `parse_request_head` of the same request;
//! * `router/<routes>/<probe>`: `RouteTable::find`, 10 / 1,000 / 10,000 routes;
//! * `rbac/<cidrs>/<hit|miss>`: `rbac::Engine::evaluate` over a CIDR whitelist;
//! * `lb/<policy>/<hosts>`: `Balancer::pick`, 10 / 1,000 hosts;
//! * `tcp/userspace/<idle>`: one HTTP-sized request/response exchange over
//!   the userspace TCP stack (smoltcp, `transport::userspace`) between two
//!   stacks joined by the in-memory wire, with `<idle>` (10 / 100 / 1,000 /
//!   10,000) other established connections open on both stacks: client
//!   write → both stacks polled (segments out, in, ACK/timer bookkeeping) →
//!   server read + write → both polled → client read.  Per-connection cost
//!   must not grow with the idle count (see `UserspaceExchange`).

mod support;

use std::hint::black_box;
use std::process::ExitCode;

use dataplane::http1::{parse_request_head, Limits, RequestHead};
use support::*;
use userspace_exchange::UserspaceExchange;

const ROUTE_SIZES: [usize; 3] = [10, 1_000, 10_000];
const CIDR_SIZES: [usize; 3] = [10, 1_000, 10_000];
const LB_SIZES: [usize; 2] = [10, 1_000];
const IDLE_CONNECTIONS: [usize; 4] = [10, 100, 1_000, 10_000];

/// Exit status for a path that has no operation yet (the driver reports it as pending).
const NOT_AVAILABLE: u8 = 2;

fn paths() -> Vec<String> {
    let mut p = vec!["baseline/empty".to_string(), "http1/forward".to_string(), "http1/parse".to_string()];
    for n in ROUTE_SIZES {
        for probe in ROUTE_PROBES {
            p.push(format!("router/{n}/{probe}"));
        }
    }
    for n in CIDR_SIZES {
        for kind in ["hit", "miss"] {
            p.push(format!("rbac/{n}/{kind}"));
        }
    }
    for policy in LB_POLICIES {
        for n in LB_SIZES {
            p.push(format!("lb/{policy}/{n}"));
        }
    }
    for n in IDLE_CONNECTIONS {
        p.push(format!("tcp/userspace/{n}"));
    }
    p
}

/// The loop callgrind counts.  Never inlined, so `--toggle-collect` finds it.
#[inline(never)]
fn measured(iterations: u64, op: &mut dyn FnMut(usize)) {
    for i in 0..iterations {
        op(i as usize & 255);
    }
}

/// Builds `path`'s fixture, checks it, runs it `iterations` times.
fn run(path: &str, iterations: u64) -> Result<(), u8> {
    let parts: Vec<&str> = path.split('/').collect();
    match parts.as_slice() {
        ["baseline", "empty"] => {
            measured(iterations, &mut |i| {
                black_box(i);
            });
        }
        ["http1", "forward"] => {
            let mut fwd = Forwarder::new();
            check_forwarded(fwd.forward(REQUEST));
            measured(iterations, &mut |_| {
                black_box(fwd.forward(black_box(REQUEST)).len());
            });
        }
        ["http1", "parse"] => {
            let limits = Limits::default();
            let mut head = RequestHead::new();
            assert_eq!(parse_request_head(REQUEST, &limits, &mut head), Ok(Some(REQUEST.len())));
            measured(iterations, &mut |_| {
                black_box(parse_request_head(black_box(REQUEST), &limits, &mut head).is_ok());
            });
        }
        ["router", n, probe] => {
            let n: usize = n.parse().map_err(|_| 1u8)?;
            let table = route_table(n);
            let (req, want) = route_probe(n, probe);
            assert_eq!(route_lookup(&table, &req).map(|r| r.name.as_str()), Some(want.as_str()));
            measured(iterations, &mut |_| {
                black_box(route_lookup(&table, black_box(&req)));
            });
        }
        ["rbac", n, kind] => {
            let n: usize = n.parse().map_err(|_| 1u8)?;
            let ranges = cidr_ranges(n);
            let engine = rbac_engine(&ranges);
            let hit = match *kind {
                "hit" => true,
                "miss" => false,
                _ => return Err(1),
            };
            let subjects = rbac_subjects(&ranges, hit);
            assert!(subjects.iter().all(|s| engine.evaluate(s).allowed == hit));
            measured(iterations, &mut |i| {
                black_box(engine.evaluate(black_box(&subjects[i])).allowed);
            });
        }
        ["lb", policy, n] => {
            let n: usize = n.parse().map_err(|_| 1u8)?;
            if !LB_POLICIES.contains(policy) {
                return Err(1);
            }
            let mut b = balancer(policy, n);
            let active = active_requests(n);
            let hashes = request_hashes();
            let hashing = lb_uses_hash(policy);
            assert!((lb_pick(&mut b, hashing.then_some(hashes[0]), &active) as usize) < n);
            measured(iterations, &mut |i| {
                let h = if hashing { Some(hashes[i]) } else { None };
                black_box(lb_pick(&mut b, black_box(h), &active));
            });
        }
        ["tcp", "userspace", n] => {
            let n: usize = n.parse().map_err(|_| 1u8)?;
            let mut ex = UserspaceExchange::new(n);
            ex.exchange();
            measured(iterations, &mut |_| ex.exchange());
            ex.check_untouched_idle();
        }
        _ => return Err(1),
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    match args.as_slice() {
        [flag] if flag == "--list" => {
            for p in paths() {
                println!("{p}");
            }
            ExitCode::SUCCESS
        }
        [path, iterations] => {
            let Ok(iterations) = iterations.parse::<u64>() else {
                eprintln!("hotpaths: iterations must be a number, got {iterations:?}");
                return ExitCode::from(1);
            };
            match run(path, iterations) {
                Ok(()) => ExitCode::SUCCESS,
                Err(NOT_AVAILABLE) => {
                    eprintln!("hotpaths: {path}: not available yet");
                    ExitCode::from(NOT_AVAILABLE)
                }
                Err(code) => {
                    eprintln!("hotpaths: unknown path {path:?} (see --list)");
                    ExitCode::from(code)
                }
            }
        }
        // Smoke test (`cargo test --benches`, `cargo bench`): every path
        // builds, answers correctly and runs.
        [] => {
            for p in paths() {
                // Opening 10,000 connections takes seconds in a test build;
                // 1,000 exercises the same code.
                if p == "tcp/userspace/10000" {
                    continue;
                }
                match run(&p, 300) {
                    Ok(()) | Err(NOT_AVAILABLE) => {}
                    Err(_) => {
                        eprintln!("hotpaths: {p} failed");
                        return ExitCode::FAILURE;
                    }
                }
            }
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("usage: hotpaths <path> <iterations> | --list");
            ExitCode::from(1)
        }
    }
}

mod userspace_exchange {
    //! The `tcp/userspace/<idle>` fixture: two userspace stacks on an
    //! in-memory wire, `idle` + 1 established connections between them, and
    //! one of them doing request/response exchanges.  The stacks are polled
    //! directly (not by a shard loop), set-up included, with a virtual clock
    //! that advances a fixed 100 µs per poll, so the run is deterministic:
    //! the same segments, timers and ACK decisions every time (the idle
    //! connections' keep-alive probes are 20 s of virtual time away).

    use std::collections::HashMap;
    use std::future::Future;
    use std::net::{Ipv4Addr, SocketAddr};
    use std::rc::Rc;
    use std::task::{Context, Poll, Waker};
    use std::time::{Duration, Instant};

    use dataplane::runtime::{LoopPoller, Runtime};
    use dataplane::transport::userspace::{Link, MemoryLink, Stack, StackConfig, UserspaceListener, UserspaceStream};

    use super::support::REQUEST;

    const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    /// Size of the response (head + the testbed benchmark's 1,668-byte body).
    const RESPONSE_BODY: usize = 1668;

    pub struct UserspaceExchange {
        client: Rc<Stack>,
        server: Rc<Stack>,
        _listener: UserspaceListener,
        active: (UserspaceStream, UserspaceStream),
        idle: Vec<(UserspaceStream, UserspaceStream)>,
        response: Vec<u8>,
        buf: Vec<u8>,
        now: Instant,
        /// Last: streams read the runtime's clock when they are dropped.
        _rt: Runtime,
    }

    fn config(addr: Ipv4Addr, last: u8, seed: u64) -> StackConfig {
        StackConfig {
            mac: [0x02, 0, 0, 0, 0, last],
            addr,
            prefix_len: 24,
            gateway: None,
            seed,
            rss: None,
            idle_nap: std::time::Duration::ZERO,
        }
    }

    impl UserspaceExchange {
        pub fn new(idle: usize) -> UserspaceExchange {
            // Streams read the shard clock when dropped: a runtime must exist.
            let rt = Runtime::new().expect("runtime");
            let (a, b) = MemoryLink::pair();
            let client = Stack::new(config(CLIENT, 1, 7), Link::Memory(a));
            let server = Stack::new(config(SERVER, 2, 11), Link::Memory(b));
            let listener = server.bind(SocketAddr::new(SERVER.into(), 80)).expect("bind");
            let mut cx = Context::from_waker(Waker::noop());
            let mut now = Instant::now();
            let mut clients = Vec::with_capacity(idle + 1);
            let mut servers = HashMap::with_capacity(idle + 1);
            // Set-up on the same virtual clock, in batches of 500 handshakes.
            while clients.len() < idle + 1 {
                let batch = (idle + 1 - clients.len()).min(500);
                let mut pending: Vec<_> =
                    (0..batch).map(|_| Box::pin(client.connect(SocketAddr::new(SERVER.into(), 80)))).collect();
                let mut polls = 0;
                while !pending.is_empty() {
                    pending.retain_mut(|f| match f.as_mut().poll(&mut cx) {
                        Poll::Ready(r) => {
                            clients.push(r.expect("connect"));
                            false
                        }
                        Poll::Pending => true,
                    });
                    now += Duration::from_micros(100);
                    client.poll(now);
                    server.poll(now);
                    while let Poll::Ready(r) = listener.poll_accept(&mut cx) {
                        let (s, peer) = r.expect("accept");
                        servers.insert(peer.port(), s);
                    }
                    polls += 1;
                    assert!(polls < 10_000, "handshakes do not complete");
                }
            }
            for _ in 0..10 {
                now += Duration::from_micros(100);
                client.poll(now);
                server.poll(now);
                while let Poll::Ready(r) = listener.poll_accept(&mut cx) {
                    let (s, peer) = r.expect("accept");
                    servers.insert(peer.port(), s);
                }
            }
            // Pair each client stream with the server stream of the same connection.
            let mut pairs: Vec<_> = clients
                .into_iter()
                .map(|c| {
                    let s = servers.remove(&c.local_addr().port()).expect("accepted");
                    (c, s)
                })
                .collect();
            let active = pairs.pop().expect("one active connection");
            let mut response =
                format!("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {RESPONSE_BODY}\r\n\r\n")
                    .into_bytes();
            response.resize(response.len() + RESPONSE_BODY, b'x');
            UserspaceExchange {
                _rt: rt,
                client,
                server,
                _listener: listener,
                active,
                idle: pairs,
                response,
                buf: vec![0; 64 * 1024],
                now,
            }
        }

        fn pump(&mut self) {
            self.now += Duration::from_micros(100);
            self.client.poll(self.now);
            self.server.poll(self.now);
        }

        /// Reads exactly `want` bytes from `s`, polling the stacks between tries.
        fn read(&mut self, client_side: bool, want: usize) {
            let mut cx = Context::from_waker(Waker::noop());
            let mut got = 0;
            let mut tries = 0;
            while got < want {
                let s = if client_side { &self.active.0 } else { &self.active.1 };
                match s.poll_read(&mut cx, &mut self.buf[got..want]) {
                    Poll::Ready(Ok(0)) => panic!("connection closed"),
                    Poll::Ready(Ok(n)) => got += n,
                    Poll::Ready(Err(e)) => panic!("read: {e}"),
                    Poll::Pending => {
                        tries += 1;
                        assert!(tries < 100, "no data after 100 polls");
                        self.pump();
                    }
                }
            }
        }

        fn write(&mut self, client_side: bool, data: &[u8]) {
            let mut cx = Context::from_waker(Waker::noop());
            let s = if client_side { &self.active.0 } else { &self.active.1 };
            match s.poll_write(&mut cx, data) {
                Poll::Ready(Ok(n)) => assert_eq!(n, data.len(), "short write into an empty send buffer"),
                other => panic!("write: {other:?}"),
            }
        }

        /// One request/response exchange on the active connection.
        pub fn exchange(&mut self) {
            self.write(true, REQUEST);
            self.pump();
            self.read(false, REQUEST.len());
            assert_eq!(&self.buf[..REQUEST.len()], REQUEST);
            let response = std::mem::take(&mut self.response);
            self.write(false, &response);
            self.pump();
            self.read(true, response.len());
            assert_eq!(&self.buf[..response.len()], &response[..]);
            self.response = response;
        }

        /// The idle connections were neither used nor disturbed: still
        /// established, nothing to read.
        pub fn check_untouched_idle(&self) {
            let stats = (self.client.counters(), self.server.counters());
            assert_eq!(stats.0.connections as usize, self.idle.len() + 1);
            assert_eq!(stats.1.connections as usize, self.idle.len() + 1);
            assert_eq!(stats.0.resets + stats.1.resets, 0);
            for (c, s) in &self.idle {
                assert!(c.is_idle_usable() && s.is_idle_usable());
            }
        }
    }
}
