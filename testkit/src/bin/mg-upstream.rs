//! `mg-upstream`: a small, real HTTP/1.1 origin server for meshgate's tests and demos.
//!
//! ```text
//! mg-upstream --listen 127.0.0.1:0 --name NAME
//! ```
//!
//! Binds, prints exactly one line `listening on IP:PORT` to stdout, then serves
//! every connection on its own thread (keep-alive, pipelined requests answered in
//! order). Every response carries `x-upstream-name`, `x-upstream-conn` (serial
//! number of the connection, from 1) and `x-upstream-conn-requests` (n-th request
//! on that connection, from 1). What each path does is listed in [`handle`].
//!
//! Failure on command (for governance tests): `/__fail/MODE[?n=N]` makes the
//! next N requests (all, without `n`) fail with MODE — `status/NNN` (that
//! status), `reset` (close without answering), `hang` (never answer) —
//! `/__fail/off` ends it, and `/__count` answers how many requests other than
//! these control paths this process has served.
//!
//! `--h2c` serves HTTP/2 with prior knowledge instead (`testkit::h2_origin`
//! lists its paths); the HTTP/1.1 mode is unchanged by it.
//!
//! It deliberately does NOT send a `date` header (so tests can see the gateway
//! add one) and sends `server: mg-upstream` (so tests can see it overwritten).
#![forbid(unsafe_code)]

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use testkit::{json_str, Fnv64, PatternGen};

/// Largest request head accepted (the gateway enforces smaller limits itself).
const MAX_HEAD: usize = 1024 * 1024;
/// Most request headers accepted.
const MAX_HEADERS: usize = 512;
/// Write size for streamed bodies.
const WRITE_CHUNK: usize = 64 * 1024;

/// How requests fail while a `/__fail/...` mode is on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum FailMode {
    Status(u16),
    Reset,
    Hang,
}

/// The failure mode and how many more requests it applies to (`None`: all).
static FAILING: Mutex<Option<(FailMode, Option<u64>)>> = Mutex::new(None);
/// Requests served, control paths excluded.
static SERVED: AtomicU64 = AtomicU64::new(0);

/// Takes one request's failure, if a mode is on.
fn take_failure() -> Option<FailMode> {
    let mut f = FAILING.lock().unwrap_or_else(|e| e.into_inner());
    let (mode, left) = (*f)?;
    match left {
        None => {}
        Some(1) => *f = None,
        Some(n) => *f = Some((mode, Some(n - 1))),
    }
    Some(mode)
}

fn main() {
    let mut listen = String::from("127.0.0.1:0");
    let mut name = String::from("upstream");
    let mut h2c = false;
    let mut h2_max_streams = 1000u32;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = args.next().unwrap_or_else(|| usage("--listen needs a value")),
            "--name" => name = args.next().unwrap_or_else(|| usage("--name needs a value")),
            "--h2c" => h2c = true,
            "--h2-max-streams" => {
                h2_max_streams =
                    args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| usage("--h2-max-streams needs a number"))
            }
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    let listener = match bind_with_deep_backlog(&listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("mg-upstream: cannot bind {listen}: {e}");
            std::process::exit(1);
        }
    };
    let addr = listener.local_addr().expect("local_addr");
    {
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "listening on {addr}");
        let _ = out.flush();
    }
    let name: Arc<str> = name.into();
    if h2c {
        testkit::h2_origin::serve(listener, name, h2_max_streams);
    }
    let serial = AtomicU64::new(0);
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                eprintln!("mg-upstream: accept: {e}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let conn_id = serial.fetch_add(1, Ordering::Relaxed) + 1;
        let name = name.clone();
        let _ = std::thread::Builder::new().name(format!("conn-{conn_id}")).spawn(move || {
            let _ = stream.set_nodelay(true);
            let mut conn = Conn::new(stream, name, conn_id);
            if let Err(e) = conn.serve() {
                if !matches!(
                    e.kind(),
                    io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof
                ) {
                    eprintln!("mg-upstream: conn {conn_id}: {e}");
                }
            }
        });
    }
}

/// Binds with a listen backlog as deep as the kernel allows (std's is 128).
/// A gateway that wakes hundreds of requests at once opens as many
/// upstream connections together; with a shallow queue, while this
/// process is slow to accept (a loaded CI machine), the kernel drops their
/// SYNs and the gateway sees connect timeouts the test did not ask for.
fn bind_with_deep_backlog(listen: &str) -> io::Result<TcpListener> {
    let addr: std::net::SocketAddr =
        listen.parse().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{listen}: {e}")))?;
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

fn usage(msg: &str) -> ! {
    if !msg.is_empty() {
        eprintln!("mg-upstream: {msg}");
    }
    eprintln!("usage: mg-upstream --listen IP:PORT --name NAME [--h2c [--h2-max-streams N]]");
    std::process::exit(2);
}

/// A parsed request head (owned).
struct Head {
    method: String,
    target: String,
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    minor: u8,
    headers: Vec<(String, Vec<u8>)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice())
    }

    fn all(&self, name: &str) -> impl Iterator<Item = &[u8]> + '_ {
        let name = name.to_owned();
        self.headers.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(&name)).map(|(_, v)| v.as_slice())
    }

    /// Comma-separated tokens of every header named `name`, lower-cased and trimmed.
    fn tokens(&self, name: &str) -> Vec<String> {
        self.all(name)
            .flat_map(|v| {
                String::from_utf8_lossy(v)
                    .split(',')
                    .map(|t| t.trim().to_ascii_lowercase())
                    .filter(|t| !t.is_empty())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    fn wants_close(&self) -> bool {
        let t = self.tokens("connection");
        if t.iter().any(|t| t == "close") {
            return true;
        }
        self.minor == 0 && !t.iter().any(|t| t == "keep-alive")
    }
}

enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// What was seen of a request body.
#[derive(Default)]
struct BodyInfo {
    len: u64,
    fnv: Fnv64,
    trailers: Vec<(String, String)>,
}

struct BadRequest(&'static str);

struct Conn {
    stream: TcpStream,
    name: Arc<str>,
    id: u64,
    requests: u64,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Conn {
    fn new(stream: TcpStream, name: Arc<str>, id: u64) -> Self {
        Conn { stream, name, id, requests: 0, buf: vec![0; 256 * 1024], start: 0, end: 0 }
    }

    /// Reads more bytes into the buffer; returns how many (0 = EOF).
    fn fill(&mut self) -> io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 && self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            let n = self.buf.len() * 2;
            self.buf.resize(n, 0);
        }
        loop {
            match self.stream.read(&mut self.buf[self.end..]) {
                Ok(n) => {
                    self.end += n;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Reads one request head. `Ok(None)` on a clean EOF between requests.
    fn read_head(&mut self) -> io::Result<Result<Option<Head>, BadRequest>> {
        loop {
            // Tolerate stray CRLFs between requests (RFC 9112 §2.2).
            while self.buffered().starts_with(b"\r\n") {
                self.start += 2;
            }
            if !self.buffered().is_empty() {
                let mut headers = vec![httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut req = httparse::Request::new(&mut headers);
                match req.parse(&self.buf[self.start..self.end]) {
                    Ok(httparse::Status::Complete(n)) => {
                        let head = Head {
                            method: req.method.unwrap_or("").to_owned(),
                            target: req.path.unwrap_or("").to_owned(),
                            minor: req.version.unwrap_or(1),
                            headers: req.headers.iter().map(|h| (h.name.to_owned(), h.value.to_vec())).collect(),
                        };
                        self.start += n;
                        return Ok(Ok(Some(head)));
                    }
                    Ok(httparse::Status::Partial) => {
                        if self.end - self.start > MAX_HEAD {
                            return Ok(Err(BadRequest("request head too large")));
                        }
                    }
                    Err(_) => return Ok(Err(BadRequest("unparsable request head"))),
                }
            }
            let had = self.end - self.start;
            if self.fill()? == 0 {
                if had == 0 {
                    return Ok(Ok(None));
                }
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Returns up to `max` bytes of body data (from the buffer or one read).
    fn read_some(&mut self, max: usize) -> io::Result<&[u8]> {
        if self.start == self.end && self.fill()? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let n = max.min(self.end - self.start);
        let s = self.start;
        self.start += n;
        Ok(&self.buf[s..s + n])
    }

    /// Reads one CRLF-terminated line (without the CRLF), at most `max` bytes.
    fn read_line(&mut self, max: usize) -> io::Result<Result<Vec<u8>, BadRequest>> {
        loop {
            if let Some(i) = self.buffered().iter().position(|&b| b == b'\n') {
                let mut line = self.buf[self.start..self.start + i].to_vec();
                self.start += i + 1;
                if line.last() != Some(&b'\r') {
                    return Ok(Err(BadRequest("line not terminated by CRLF")));
                }
                line.pop();
                return Ok(Ok(line));
            }
            if self.end - self.start > max {
                return Ok(Err(BadRequest("line too long")));
            }
            if self.fill()? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    fn read_exact_body(&mut self, mut n: u64, info: &mut BodyInfo) -> io::Result<()> {
        while n > 0 {
            let want = n.min(1 << 20) as usize;
            let data = self.read_some(want)?;
            let got = data.len();
            info.fnv.update(data);
            info.len += got as u64;
            n -= got as u64;
        }
        Ok(())
    }

    /// Reads (and hashes, never stores) the whole request body.
    fn read_body(&mut self, framing: &Framing) -> io::Result<Result<BodyInfo, BadRequest>> {
        let mut info = BodyInfo::default();
        match *framing {
            Framing::None => {}
            Framing::Length(n) => self.read_exact_body(n, &mut info)?,
            Framing::Chunked => loop {
                let line = match self.read_line(4096)? {
                    Ok(l) => l,
                    Err(e) => return Ok(Err(e)),
                };
                let line = String::from_utf8_lossy(&line).into_owned();
                let size_str = line.split(';').next().unwrap_or("").trim();
                let size = match u64::from_str_radix(size_str, 16) {
                    Ok(s) if !size_str.is_empty() && !size_str.starts_with('+') => s,
                    _ => return Ok(Err(BadRequest("invalid chunk size"))),
                };
                if size == 0 {
                    loop {
                        let t = match self.read_line(64 * 1024)? {
                            Ok(l) => l,
                            Err(e) => return Ok(Err(e)),
                        };
                        if t.is_empty() {
                            break;
                        }
                        let t = String::from_utf8_lossy(&t).into_owned();
                        match t.split_once(':') {
                            Some((n, v)) => info.trailers.push((n.to_owned(), v.trim().to_owned())),
                            None => return Ok(Err(BadRequest("invalid trailer line"))),
                        }
                    }
                    break;
                }
                self.read_exact_body(size, &mut info)?;
                match self.read_line(16)? {
                    Ok(l) if l.is_empty() => {}
                    _ => return Ok(Err(BadRequest("chunk data not followed by CRLF"))),
                }
            },
        }
        Ok(Ok(info))
    }

    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.stream.write_all(data)
    }

    /// Closes gracefully: FIN, then drain what the peer still sends for a short while.
    fn close(&mut self) {
        let _ = self.stream.flush();
        let _ = self.stream.shutdown(Shutdown::Write);
        let _ = self.stream.set_read_timeout(Some(Duration::from_millis(500)));
        let mut sink = [0u8; 16 * 1024];
        let mut total = 0usize;
        while let Ok(n) = self.stream.read(&mut sink) {
            if n == 0 || total > 64 * 1024 * 1024 {
                break;
            }
            total += n;
        }
    }

    fn serve(&mut self) -> io::Result<()> {
        loop {
            let head = match self.read_head()? {
                Ok(Some(h)) => h,
                Ok(None) => return Ok(()),
                Err(BadRequest(why)) => {
                    self.requests += 1;
                    self.simple_error(400, why)?;
                    self.close();
                    return Ok(());
                }
            };
            self.requests += 1;
            let framing = match framing_of(&head) {
                Ok(f) => f,
                Err(BadRequest(why)) => {
                    self.simple_error(400, why)?;
                    self.close();
                    return Ok(());
                }
            };
            let has_body = !matches!(framing, Framing::None | Framing::Length(0));
            let expects_continue = head.header("expect").is_some_and(|v| v.eq_ignore_ascii_case(b"100-continue"));
            if expects_continue && has_body && head.minor >= 1 {
                self.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
            }
            let body = match self.read_body(&framing)? {
                Ok(b) => b,
                Err(BadRequest(why)) => {
                    self.simple_error(400, why)?;
                    self.close();
                    return Ok(());
                }
            };
            let keep_going = self.handle(&head, &body)?;
            if !keep_going {
                self.close();
                return Ok(());
            }
        }
    }

    /// The common response head: status line + x-upstream-* headers + server.
    fn head_start(&self, status: u16) -> Vec<u8> {
        self.head_start_with(status, true)
    }

    fn head_start_with(&self, status: u16, server: bool) -> Vec<u8> {
        let mut h = Vec::with_capacity(256);
        h.extend_from_slice(format!("HTTP/1.1 {status} {}\r\n", reason(status)).as_bytes());
        h.extend_from_slice(format!("x-upstream-name: {}\r\n", self.name).as_bytes());
        h.extend_from_slice(format!("x-upstream-conn: {}\r\n", self.id).as_bytes());
        h.extend_from_slice(format!("x-upstream-conn-requests: {}\r\n", self.requests).as_bytes());
        if server {
            h.extend_from_slice(b"server: mg-upstream\r\n");
        }
        h
    }

    fn simple_error(&mut self, status: u16, why: &str) -> io::Result<()> {
        let body = format!("{why}\n");
        let mut h = self.head_start(status);
        h.extend_from_slice(
            format!("content-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len())
                .as_bytes(),
        );
        h.extend_from_slice(body.as_bytes());
        self.write_all(&h)
    }

    /// Writes a complete response with a fixed body. Returns whether to keep the connection.
    fn respond(
        &mut self,
        req: &Head,
        status: u16,
        extra: &[(String, String)],
        content_type: &str,
        body: &[u8],
    ) -> io::Result<bool> {
        let close = req.wants_close()
            || extra.iter().any(|(n, v)| n.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case("close"));
        let bodyless = status < 200 || status == 204 || status == 304;
        let own_server = extra.iter().any(|(n, _)| n.eq_ignore_ascii_case("server"));
        let mut h = self.head_start_with(status, !own_server);
        for (n, v) in extra {
            h.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
        let has_own_cl = extra.iter().any(|(n, _)| n.eq_ignore_ascii_case("content-length"));
        if !bodyless {
            h.extend_from_slice(format!("content-type: {content_type}\r\n").as_bytes());
            if !has_own_cl {
                h.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
            }
        }
        let explicit_conn = extra.iter().any(|(n, _)| n.eq_ignore_ascii_case("connection"));
        if !explicit_conn {
            if close {
                h.extend_from_slice(b"connection: close\r\n");
            } else if req.minor == 0 {
                h.extend_from_slice(b"connection: keep-alive\r\n");
            }
        }
        h.extend_from_slice(b"\r\n");
        if !bodyless && req.method != "HEAD" {
            h.extend_from_slice(body);
        }
        self.write_all(&h)?;
        Ok(!close)
    }

    /// Dispatches on the path. Returns whether to keep the connection open.
    ///
    /// * `/echo`, `/expect`: JSON `{method, path, headers, body_len, body_fnv64, trailers}`.
    /// * `/status/NNN`: that status (1xx: sent as interim response, then a final 200).
    /// * `/delay/MS`: sleep, then 200.
    /// * `/bytes/N`: N pattern bytes with content-length, 64 KiB writes.
    /// * `/chunked/N`: N pattern bytes chunked, trailer `x-trailer-checksum`.
    /// * `/upload`: JSON `{body_len, body_fnv64, trailers}`.
    /// * `/close-delimited/N`: N bytes, no framing, then close.
    /// * `/malformed`, `/garbage`, `/truncated`: broken responses, then close.
    /// * `/headers`: request `x-set-response-NAME: V` → response `NAME: V`.
    /// * `/sleep-body/MS`: head with content-length 10, sleep, body.
    /// * `/split-body/FIRST/TOTAL/MS`: head and FIRST of TOTAL pattern bytes, sleep, the rest.
    /// * anything else: 200 `hello from NAME`.
    fn handle(&mut self, req: &Head, body: &BodyInfo) -> io::Result<bool> {
        let path = req.path().to_owned();
        let (first, rest) = split_path(&path);
        match first {
            "__fail" => {
                let mode = rest;
                let query = req.target.split_once('?').map_or("", |(_, q)| q);
                let n = query.strip_prefix("n=").and_then(|n| n.parse::<u64>().ok());
                let parsed = match mode.split_once('/') {
                    Some(("status", code)) => code.parse().ok().map(FailMode::Status),
                    None if mode == "reset" => Some(FailMode::Reset),
                    None if mode == "hang" => Some(FailMode::Hang),
                    None if mode == "off" => None,
                    _ => return self.respond(req, 400, &[], "text/plain", b"bad fail mode\n"),
                };
                *FAILING.lock().unwrap_or_else(|e| e.into_inner()) = parsed.map(|m| (m, n));
                return self.respond(req, 200, &[], "text/plain", b"ok\n");
            }
            "__count" => {
                let b = format!("{}\n", SERVED.load(Ordering::SeqCst));
                return self.respond(req, 200, &[], "text/plain", b.as_bytes());
            }
            _ => {}
        }
        SERVED.fetch_add(1, Ordering::SeqCst);
        match take_failure() {
            Some(FailMode::Status(code)) => {
                let b = format!("failing with {code}\n");
                return self.respond(req, code, &[], "text/plain", b.as_bytes());
            }
            Some(FailMode::Reset) => return Ok(false),
            Some(FailMode::Hang) => {
                std::thread::sleep(Duration::from_secs(3600));
                return Ok(false);
            }
            None => {}
        }
        match first {
            "echo" | "expect" => {
                let json = echo_json(req, body, true);
                self.respond(req, 200, &[], "application/json", json.as_bytes())
            }
            "upload" => {
                let json = echo_json(req, body, false);
                self.respond(req, 200, &[], "application/json", json.as_bytes())
            }
            "status" => {
                let code: u16 = match rest.parse() {
                    Ok(c) if (100..=999).contains(&c) => c,
                    _ => return self.respond(req, 400, &[], "text/plain", b"bad status\n"),
                };
                if code < 200 {
                    let interim = format!("HTTP/1.1 {code} {}\r\n\r\n", reason(code));
                    self.write_all(interim.as_bytes())?;
                    let b = format!("hello from {}\n", self.name);
                    return self.respond(req, 200, &[], "text/plain", b.as_bytes());
                }
                let b = format!("status {code}\n");
                self.respond(req, code, &[], "text/plain", b.as_bytes())
            }
            "delay" => {
                let ms: u64 = rest.parse().unwrap_or(0);
                std::thread::sleep(Duration::from_millis(ms));
                let b = format!("delayed {ms}ms\n");
                self.respond(req, 200, &[], "text/plain", b.as_bytes())
            }
            "sleep-body" => {
                let ms: u64 = rest.parse().unwrap_or(0);
                let close = req.wants_close();
                let mut h = self.head_start(200);
                h.extend_from_slice(b"content-type: text/plain\r\ncontent-length: 10\r\n");
                if close {
                    h.extend_from_slice(b"connection: close\r\n");
                }
                h.extend_from_slice(b"\r\n");
                self.write_all(&h)?;
                self.stream.flush()?;
                if req.method != "HEAD" {
                    std::thread::sleep(Duration::from_millis(ms));
                    self.write_all(b"0123456789")?;
                }
                Ok(!close)
            }
            "split-body" => {
                // FIRST/TOTAL/MS: head and FIRST of TOTAL pattern bytes, MS of
                // silence, then the rest.
                let nums: Vec<u64> = rest.split('/').filter_map(|n| n.parse().ok()).collect();
                let [first, total, ms] = nums[..] else {
                    return self.respond(req, 400, &[], "text/plain", b"want FIRST/TOTAL/MS\n");
                };
                if first > total {
                    return self.respond(req, 400, &[], "text/plain", b"FIRST > TOTAL\n");
                }
                let mut h = self.head_start(200);
                h.extend_from_slice(
                    format!("content-type: application/octet-stream\r\ncontent-length: {total}\r\n\r\n").as_bytes(),
                );
                let body = testkit::pattern(total as usize);
                h.extend_from_slice(&body[..first as usize]);
                self.write_all(&h)?;
                self.stream.flush()?;
                std::thread::sleep(Duration::from_millis(ms));
                self.write_all(&body[first as usize..])?;
                Ok(true)
            }
            "bytes" => {
                let n: u64 = match rest.parse() {
                    Ok(n) => n,
                    Err(_) => return self.respond(req, 400, &[], "text/plain", b"bad length\n"),
                };
                let close = req.wants_close();
                let mut h = self.head_start(200);
                h.extend_from_slice(
                    format!("content-type: application/octet-stream\r\ncontent-length: {n}\r\n").as_bytes(),
                );
                if close {
                    h.extend_from_slice(b"connection: close\r\n");
                }
                h.extend_from_slice(b"\r\n");
                self.write_all(&h)?;
                if req.method != "HEAD" {
                    self.stream_pattern(n)?;
                }
                Ok(!close)
            }
            "chunked" => {
                let n: u64 = match rest.parse() {
                    Ok(n) => n,
                    Err(_) => return self.respond(req, 400, &[], "text/plain", b"bad length\n"),
                };
                let close = req.wants_close();
                let mut h = self.head_start(200);
                h.extend_from_slice(
                    b"content-type: application/octet-stream\r\ntransfer-encoding: chunked\r\ntrailer: x-trailer-checksum\r\n",
                );
                if close {
                    h.extend_from_slice(b"connection: close\r\n");
                }
                h.extend_from_slice(b"\r\n");
                self.write_all(&h)?;
                if req.method != "HEAD" {
                    let chunk = (n / 4 + 1).clamp(1, WRITE_CHUNK as u64) as usize;
                    let mut gen = PatternGen::new();
                    let mut fnv = Fnv64::new();
                    let mut left = n;
                    let mut data = vec![0u8; chunk];
                    while left > 0 {
                        let k = (left.min(chunk as u64)) as usize;
                        gen.fill(&mut data[..k]);
                        fnv.update(&data[..k]);
                        let mut out = Vec::with_capacity(k + 16);
                        out.extend_from_slice(format!("{k:x}\r\n").as_bytes());
                        out.extend_from_slice(&data[..k]);
                        out.extend_from_slice(b"\r\n");
                        self.write_all(&out)?;
                        left -= k as u64;
                    }
                    let end = format!("0\r\nx-trailer-checksum: {}\r\n\r\n", fnv.hex());
                    self.write_all(end.as_bytes())?;
                }
                Ok(!close)
            }
            "close-delimited" => {
                let n: u64 = rest.parse().unwrap_or(0);
                let mut h = self.head_start(200);
                h.extend_from_slice(b"content-type: application/octet-stream\r\nconnection: close\r\n\r\n");
                self.write_all(&h)?;
                if req.method != "HEAD" {
                    self.stream_pattern(n)?;
                }
                Ok(false)
            }
            "malformed" => {
                self.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello")?;
                Ok(false)
            }
            "garbage" => {
                self.write_all(b"this is not http\r\n\r\n")?;
                Ok(false)
            }
            "truncated" => {
                let mut h = self.head_start(200);
                h.extend_from_slice(b"content-type: text/plain\r\ncontent-length: 1000\r\n\r\n0123456789");
                self.write_all(&h)?;
                Ok(false)
            }
            "headers" => {
                let extra: Vec<(String, String)> = req
                    .headers
                    .iter()
                    .filter_map(|(n, v)| {
                        let lower = n.to_ascii_lowercase();
                        lower
                            .strip_prefix("x-set-response-")
                            .filter(|rest| !rest.is_empty())
                            .map(|rest| (rest.to_owned(), String::from_utf8_lossy(v).into_owned()))
                    })
                    .collect();
                self.respond(req, 200, &extra, "text/plain", b"ok\n")
            }
            _ => {
                let b = format!("hello from {}\n", self.name);
                self.respond(req, 200, &[], "text/plain", b.as_bytes())
            }
        }
    }

    fn stream_pattern(&mut self, n: u64) -> io::Result<()> {
        let mut gen = PatternGen::new();
        let mut buf = vec![0u8; WRITE_CHUNK];
        let mut left = n;
        while left > 0 {
            let k = left.min(WRITE_CHUNK as u64) as usize;
            gen.fill(&mut buf[..k]);
            self.write_all(&buf[..k])?;
            left -= k as u64;
        }
        Ok(())
    }
}

/// `/a/b/c` → ("a", "b/c"); `/` → ("", "").
fn split_path(path: &str) -> (&str, &str) {
    let p = path.strip_prefix('/').unwrap_or(path);
    match p.split_once('/') {
        Some((a, b)) => (a, b),
        None => (p, ""),
    }
}

fn framing_of(head: &Head) -> Result<Framing, BadRequest> {
    let te = head.tokens("transfer-encoding");
    let cls: Vec<&[u8]> = head.all("content-length").collect();
    if !te.is_empty() {
        if !cls.is_empty() {
            return Err(BadRequest("both content-length and transfer-encoding"));
        }
        if te.last().map(String::as_str) != Some("chunked") {
            return Err(BadRequest("chunked is not the final transfer coding"));
        }
        return Ok(Framing::Chunked);
    }
    let mut len: Option<u64> = None;
    for v in cls {
        for part in String::from_utf8_lossy(v).split(',') {
            let p = part.trim();
            let n: u64 = match p.parse() {
                Ok(n) if !p.starts_with('+') => n,
                _ => return Err(BadRequest("invalid content-length")),
            };
            if len.is_some_and(|l| l != n) {
                return Err(BadRequest("conflicting content-length"));
            }
            len = Some(n);
        }
    }
    Ok(match len {
        Some(n) => Framing::Length(n),
        None => Framing::None,
    })
}

fn echo_json(req: &Head, body: &BodyInfo, full: bool) -> String {
    let mut s = String::with_capacity(512);
    s.push('{');
    if full {
        s.push_str("\"method\":");
        json_str(&mut s, &req.method);
        s.push_str(",\"path\":");
        json_str(&mut s, &req.target);
        s.push_str(&format!(",\"version\":\"HTTP/1.{}\"", req.minor));
        s.push_str(",\"headers\":[");
        for (i, (n, v)) in req.headers.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push('[');
            json_str(&mut s, n);
            s.push(',');
            json_str(&mut s, &String::from_utf8_lossy(v));
            s.push(']');
        }
        s.push_str("],");
    }
    s.push_str(&format!("\"body_len\":{},\"body_fnv64\":\"{}\",\"trailers\":[", body.len, body.fnv.hex()));
    for (i, (n, v)) in body.trailers.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push('[');
        json_str(&mut s, n);
        s.push(',');
        json_str(&mut s, v);
        s.push(']');
    }
    s.push_str("]}\n");
    s
}

fn reason(code: u16) -> &'static str {
    match code {
        100 => "Continue",
        101 => "Switching Protocols",
        103 => "Early Hints",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        418 => "I'm a teapot",
        431 => "Request Header Fields Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}
