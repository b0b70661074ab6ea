//! The guard's budgets on a virtual clock, fed hand-built frames.

use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Wake, Waker};

fn frame(kind: u8, flags: u8, stream_id: u32, len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(FRAME_HEADER_LEN + len);
    f.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&stream_id.to_be_bytes());
    f.resize(FRAME_HEADER_LEN + len, 0xab);
    f
}

const END_HEADERS: u8 = 0x4;

fn request(stream_id: u32) -> Vec<u8> {
    frame(HEADERS, END_HEADERS | FLAG_END_STREAM, stream_id, 20)
}

fn response_end(stream_id: u32) -> Vec<u8> {
    frame(DATA, FLAG_END_STREAM, stream_id, 100)
}

fn rst(stream_id: u32) -> Vec<u8> {
    frame(RST_STREAM, 0, stream_id, 4)
}

fn guard() -> FrameGuard {
    FrameGuard::new(GuardLimits::default(), false)
}

#[test]
fn scanner_finds_headers_across_any_split_and_skips_preface_and_payloads() {
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend(frame(SETTINGS, 0, 0, 12));
    bytes.extend(request(1));
    bytes.extend(frame(DATA, 0, 1, 16384));
    bytes.extend(rst(1));
    for chunk in [1, 2, 7, 9, 10, 1000, bytes.len()] {
        let mut scanner = FrameScanner::new(CLIENT_PREFACE_LEN);
        let mut seen = Vec::new();
        for piece in bytes.chunks(chunk) {
            scanner.feed(piece, |h| seen.push((h.kind, h.stream_id, h.len)));
        }
        assert_eq!(
            seen,
            vec![(SETTINGS, 0, 12), (HEADERS, 1, 20), (DATA, 1, 16384), (RST_STREAM, 1, 4)],
            "chunk {chunk}"
        );
    }
}

#[test]
fn rapid_reset_trips_at_the_total_stream_count() {
    let t0 = Instant::now();
    let mut g = guard();
    for i in 0..499u32 {
        let id = 2 * i + 1;
        let mut b = request(id);
        b.extend(rst(id));
        assert_eq!(g.on_inbound(&b, t0 + Duration::from_micros(u64::from(i))), None, "stream {id}");
    }
    let mut b = request(999);
    b.extend(rst(999));
    assert_eq!(g.on_inbound(&b, t0), Some(Violation::PrematureResets { premature: 500, closed: 500 }));
    assert_eq!(g.violation().map(|v| v.as_str()), Some("too_many_premature_resets"));
}

#[test]
fn completed_streams_and_late_resets_are_not_premature() {
    let t0 = Instant::now();
    let mut g = guard();
    let mut id = 1;
    // 1000 streams answered completely, then 1000 reset after 1 s of life.
    for _ in 0..1000 {
        g.on_inbound(&request(id), t0);
        assert_eq!(g.on_outbound(&response_end(id), t0), None);
        id += 2;
    }
    for _ in 0..1000 {
        g.on_inbound(&frame(HEADERS, END_HEADERS, id, 10), t0);
        assert_eq!(g.on_inbound(&rst(id), t0 + Duration::from_secs(1)), None);
        id += 2;
    }
    assert_eq!(g.closed_streams(), (2000, 0));
}

#[test]
fn premature_resets_below_half_are_tolerated_and_above_half_are_not() {
    let t0 = Instant::now();
    let mut g = guard();
    let mut id = 1;
    // gRPC-style cancellations: every other stream reset early.
    for k in 0..2000 {
        g.on_inbound(&request(id), t0);
        if k % 2 == 0 {
            g.on_outbound(&response_end(id), t0);
        } else {
            g.on_inbound(&rst(id), t0);
        }
        id += 2;
    }
    assert_eq!(g.violation(), None, "exactly half is not more than half");
    assert_eq!(g.closed_streams(), (2000, 1000));
    for _ in 0..2 {
        g.on_inbound(&request(id), t0);
        g.on_inbound(&rst(id), t0);
        id += 2;
    }
    assert_eq!(g.violation(), Some(Violation::PrematureResets { premature: 1001, closed: 2001 }));
}

#[test]
fn server_resets_and_unknown_streams_never_count_as_premature() {
    let t0 = Instant::now();
    let mut g = guard();
    for i in 0..1000u32 {
        let id = 2 * i + 1;
        g.on_inbound(&request(id), t0);
        g.on_outbound(&rst(id), t0); // REFUSED_STREAM from h2
        g.on_inbound(&rst(id), t0); // the client's reset of a closed stream
        g.on_inbound(&rst(id + 10_000), t0); // never opened
    }
    assert_eq!(g.violation(), None);
    assert_eq!(g.closed_streams(), (1000, 0));
}

#[test]
fn ping_flood_trips_after_the_burst_and_a_steady_rate_never_does() {
    let t0 = Instant::now();
    let mut g = guard();
    let ping = frame(PING, 0, 0, 8);
    for _ in 0..1000 {
        assert_eq!(g.on_inbound(&ping, t0), None);
    }
    assert_eq!(g.on_inbound(&ping, t0), Some(Violation::PingFlood));

    // 100 per second (one each 10 ms) for a long time: within budget.
    let mut g = guard();
    for i in 0..20_000u64 {
        assert_eq!(g.on_inbound(&ping, t0 + Duration::from_millis(10 * i)), None, "ping {i}");
    }
    // ACKs (answers to our own PINGs) are free.
    let ack = frame(PING, FLAG_ACK, 0, 8);
    let mut g = guard();
    for _ in 0..5000 {
        assert_eq!(g.on_inbound(&ack, t0), None);
    }
}

#[test]
fn settings_flood_trips_and_the_bucket_refills() {
    let t0 = Instant::now();
    let mut g = guard();
    let settings = frame(SETTINGS, 0, 0, 6);
    for _ in 0..1000 {
        assert_eq!(g.on_inbound(&settings, t0), None);
    }
    // Two seconds later 200 more tokens were earned, not more.
    let t2 = t0 + Duration::from_secs(2);
    for _ in 0..200 {
        assert_eq!(g.on_inbound(&settings, t2), None);
    }
    assert_eq!(g.on_inbound(&settings, t2), Some(Violation::SettingsFlood));
    let mut g = guard();
    for _ in 0..5000 {
        assert_eq!(g.on_inbound(&frame(SETTINGS, FLAG_ACK, 0, 0), t0), None);
    }
}

#[test]
fn priority_budget_grows_with_opened_streams() {
    let t0 = Instant::now();
    let mut g = guard();
    let priority = frame(PRIORITY, 0, 3, 5);
    for _ in 0..100 {
        assert_eq!(g.on_inbound(&priority, t0), None);
    }
    g.on_inbound(&request(1), t0);
    for _ in 0..100 {
        assert_eq!(g.on_inbound(&priority, t0), None);
    }
    assert_eq!(g.on_inbound(&priority, t0), Some(Violation::PriorityFlood));
}

#[test]
fn consecutive_empty_frames_trip_but_end_stream_and_payloads_reset_the_count() {
    let t0 = Instant::now();
    let mut g = guard();
    g.on_inbound(&frame(HEADERS, END_HEADERS, 1, 10), t0);
    for _ in 0..100 {
        assert_eq!(g.on_inbound(&frame(DATA, 0, 1, 0), t0), None);
        assert_eq!(g.on_inbound(&frame(DATA, 0, 1, 10), t0), None);
    }
    assert_eq!(g.on_inbound(&frame(DATA, FLAG_END_STREAM, 1, 0), t0), None);
    assert_eq!(g.on_inbound(&frame(DATA, 0, 1, 0), t0), None);
    assert_eq!(g.on_inbound(&frame(CONTINUATION, 0, 1, 0), t0), Some(Violation::EmptyFrameFlood));
}

#[test]
fn tracked_streams_are_bounded() {
    let t0 = Instant::now();
    let limits = GuardLimits { max_tracked_streams: 8, ..GuardLimits::default() };
    let mut g = FrameGuard::new(limits, false);
    for i in 0..100u32 {
        g.on_inbound(&frame(HEADERS, END_HEADERS, 2 * i + 1, 10), t0);
        assert!(g.open.len() <= 8);
    }
    assert_eq!(g.closed_streams(), (92, 0));
}

struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Reads from a script, writes into a Vec.
struct Scripted {
    input: Vec<u8>,
    output: Vec<u8>,
}

impl AsyncRead for Scripted {
    fn poll_read(mut self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let n = buf.remaining().min(self.input.len());
        let rest = self.input.split_off(n);
        buf.put_slice(&self.input);
        self.input = rest;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Scripted {
    fn poll_write(mut self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.output.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[test]
fn guarded_io_stops_reading_and_wakes_the_driver_on_a_violation() {
    let mut input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    for _ in 0..1001 {
        input.extend(frame(PING, 0, 0, 8));
    }
    for id in 0..100 {
        input.extend(request(2 * id + 1)); // never read: the connection is going away
    }
    let (mut io, handle) =
        GuardedIo::new(Scripted { input, output: Vec::new() }, GuardLimits::default(), true, Instant::now);
    let wakes = Arc::new(CountingWaker(AtomicUsize::new(0)));
    let waker = Waker::from(wakes.clone());
    let mut cx = Context::from_waker(&waker);
    let mut storage = vec![0u8; 1024];
    let mut delivered = 0;
    loop {
        let mut buf = ReadBuf::new(&mut storage);
        match Pin::new(&mut io).poll_read(&mut cx, &mut buf) {
            Poll::Ready(Ok(())) => delivered += buf.filled().len(),
            Poll::Ready(Err(e)) => panic!("{e}"),
            Poll::Pending => break,
        }
        assert!(delivered < 100_000, "never stopped reading");
    }
    assert_eq!(handle.violation(), Some(Violation::PingFlood));
    assert_eq!(wakes.0.load(Ordering::Relaxed), 1);
    assert!(!io.get_ref().input.is_empty(), "the rest of the flood stays unread");
    // Writes go on (the GOAWAY), and are scanned.
    let goaway = frame(0x7, 0, 0, 8);
    match Pin::new(&mut io).poll_write(&mut cx, &goaway) {
        Poll::Ready(Ok(n)) => assert_eq!(n, goaway.len()),
        other => panic!("{other:?}"),
    }
    assert_eq!(io.get_ref().output, goaway);
}
