//! 1 GiB bodies streamed through the gateway in both directions, with the
//! gateway's memory watched while they flow: it must stream, never buffer.
//!
//! The tests in this file take turns (`testkit::exclusive`) so their RSS
//! samples are not disturbed by each other.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use testkit::{is_pattern_at, read_response_streaming, start_basic, Client, Echo, Fnv64, Gateway, PatternGen};

const GIB: u64 = 1024 * 1024 * 1024;
/// Allowed RSS growth of the gateway during a transfer.
const MAX_RSS_GROWTH_KIB: u64 = 64 * 1024;
const WRITE: usize = 256 * 1024;

/// The route timeout covers the whole exchange in Envoy: disable it here.
fn start() -> (testkit::Upstream, Gateway) {
    start_basic("", "timeout: 0s", "", &[])
}

/// Samples the gateway's RSS every 20 ms until stopped; returns the maximum.
struct RssSampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<u64>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut max = 0;
            while !s.load(Ordering::Relaxed) {
                max = max.max(testkit::rss_kib_of(pid).unwrap_or(0));
                std::thread::sleep(Duration::from_millis(20));
            }
            max
        });
        RssSampler { stop, handle }
    }

    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("sampler thread")
    }
}

/// Warms the gateway up (one request through the same path) and returns its RSS.
fn baseline(gw: &Gateway, c: &mut Client) -> u64 {
    let r = c.request("POST", "/upload", &[], &testkit::pattern(WRITE));
    assert_eq!(r.status, 200);
    std::thread::sleep(Duration::from_millis(100));
    gw.rss_kib()
}

fn assert_rss(gw: &Gateway, base: u64, max: u64, what: &str) {
    assert!(base > 0, "could not read the gateway's RSS");
    let growth = max.saturating_sub(base);
    assert!(
        growth < MAX_RSS_GROWTH_KIB,
        "{what}: gateway RSS grew by {growth} KiB (baseline {base} KiB, max {max} KiB, pid {})",
        gw.pid()
    );
}

/// Sends `total` pattern bytes in `WRITE`-sized writes, hashing as it goes.
fn send_pattern(c: &mut Client, total: u64, chunked: bool) -> Fnv64 {
    let mut gen = PatternGen::new();
    let mut fnv = Fnv64::new();
    let mut buf = vec![0u8; WRITE];
    let mut left = total;
    while left > 0 {
        let n = left.min(WRITE as u64) as usize;
        gen.fill(&mut buf[..n]);
        fnv.update(&buf[..n]);
        if chunked {
            let mut framed = Vec::with_capacity(n + 16);
            framed.extend_from_slice(format!("{n:x}\r\n").as_bytes());
            framed.extend_from_slice(&buf[..n]);
            framed.extend_from_slice(b"\r\n");
            c.send(&framed);
        } else {
            c.send(&buf[..n]);
        }
        left -= n as u64;
    }
    if chunked {
        c.send(b"0\r\n\r\n");
    }
    fnv
}

fn upload(total: u64, chunked: bool) {
    let _turn = testkit::exclusive();
    let (_up, gw) = start();
    let mut c = Client::connect(gw.listener_addr);
    c.set_read_timeout(Duration::from_secs(60));
    let base = baseline(&gw, &mut c);
    let sampler = RssSampler::start(gw.pid());
    let t = Instant::now();
    let framing = if chunked { "Transfer-Encoding: chunked".to_owned() } else { format!("Content-Length: {total}") };
    c.send(format!("POST /upload HTTP/1.1\r\nHost: localhost\r\n{framing}\r\n\r\n").as_bytes());
    let fnv = send_pattern(&mut c, total, chunked);
    let r = c.read_response();
    let max = sampler.finish();
    eprintln!(
        "upload of {total} bytes ({}) took {:?}; gateway RSS {base} KiB → max {max} KiB",
        if chunked { "chunked" } else { "content-length" },
        t.elapsed()
    );
    assert_eq!(r.status, 200, "body: {}", r.body_str());
    let e = Echo::from_response(&r);
    assert_eq!(e.body_len, total);
    assert_eq!(e.body_fnv64, fnv.hex());
    assert_rss(&gw, base, max, "upload");
    assert_eq!(c.get("/").status, 200, "connection usable after the upload");
}

#[test]
fn upload_1gib_content_length_is_streamed() {
    upload(GIB, false);
}

#[test]
fn upload_256mib_chunked_is_streamed() {
    upload(256 * 1024 * 1024, true);
}

#[test]
fn download_1gib_is_streamed() {
    let _turn = testkit::exclusive();
    let (_up, gw) = start();
    let mut c = Client::connect(gw.listener_addr);
    c.set_read_timeout(Duration::from_secs(60));
    let base = baseline(&gw, &mut c);
    let sampler = RssSampler::start(gw.pid());
    let t = Instant::now();
    c.send(format!("GET /bytes/{GIB} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes());
    let mut got = 0u64;
    let mut intact = true;
    let r = read_response_streaming(c.reader(), false, &mut |d| {
        if intact && !is_pattern_at(d, got) {
            intact = false;
        }
        got += d.len() as u64;
    })
    .expect("read download")
    .expect("a response");
    let max = sampler.finish();
    eprintln!("download of {got} bytes took {:?}; gateway RSS {base} KiB → max {max} KiB", t.elapsed());
    assert_eq!(r.status, 200);
    assert_eq!(got, GIB, "framing {:?}", r.framing);
    assert!(intact, "downloaded bytes differ from the pattern");
    assert_rss(&gw, base, max, "download");
    assert_eq!(c.get("/").status, 200, "connection usable after the download");
}
