//! Upstream HTTP/2: per-shard pools of multiplexed client connections per
//! host, and the worker that carries one HTTP/1.1 exchange of the
//! connection manager over one HTTP/2 stream.
//!
//! The connection manager (`proxy`) speaks HTTP/1.1 to whatever
//! `UpstreamConn` it is handed.  For a cluster that speaks HTTP/2
//! (`model::UpstreamProtocol`, docs/http2.md) the `UpstreamConn` is the
//! mirror image of the downstream bridge (`http2::bridge`): one end of an
//! in-memory pipe whose other end is a task on the same shard that
//!
//! * parses the request head the manager wrote (RFC 9112 §2-§3) and sends
//!   it as HEADERS (RFC 9113 §8.3.1: `:authority` from Host, hop-by-hop
//!   fields dropped per §8.2.2, `te: trailers` re-added for gRPC);
//! * streams the request body within the stream's send window, trailers
//!   included (chunked trailers → a trailing HEADERS frame);
//! * writes the response back as HTTP/1.1: Content-Length when the
//!   upstream sent one, chunked otherwise, HTTP/2 trailers as chunked
//!   trailers (which the downstream bridge turns back into HTTP/2
//!   trailers: gRPC works end to end);
//! * releases receive-window capacity only as bytes move into the pipe, so
//!   a slow client throttles the upstream instead of growing buffers.
//!
//! Cancellation crosses both ways: when the manager abandons the exchange
//! (client gone, timeout) it drops its pipe end and the worker resets the
//! stream with CANCEL; when the upstream resets the stream (or the
//! connection goes away) the worker drops its end, which the manager sees
//! as an upstream reset — before the response head that is a 503 (or a
//! gRPC status) and a retriable `reset` / `refused-stream` failure, after
//! it the downstream stream is reset.
//!
//! Pool: a host's connections are used in order; a new stream goes to the
//! first open connection with room under both the peer's
//! SETTINGS_MAX_CONCURRENT_STREAMS and the cluster's
//! `max_concurrent_streams`, and under `max_requests_per_connection`.  When
//! none has room a new connection is opened (circuit breaker
//! `max_connections`, or a pending wait as for HTTP/1).  Requests arriving
//! while a connection is being opened wait for it instead of opening their
//! own, up to the cluster's stream limit, and share its connect failure.
//! A connection that receives GOAWAY or fails is closed to new streams
//! (streams already on it finish).  A connection without streams for the
//! cluster's idle timeout is closed by the shard's sweep.
//!
//! Connections are opened with `ClusterRuntime::open` (TCP, and TLS with
//! ALPN `h2` when the cluster has a transport socket; plaintext is h2c with
//! prior knowledge, RFC 9113 §3.3), so connect failures feed the same
//! passive-health, stats and retry paths as HTTP/1.  Each connection's
//! `h2` driver is a task on the shard executor (no tokio runtime).
//!
//! This module must not route, pick hosts or decide retries: it hands out
//! streams and reports how they ended.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::pin;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::SendRequest;
use h2::{Reason, RecvStream, SendStream};
use http::{HeaderName, HeaderValue};

use super::circuit_breaker::{Guard, Resource};
use super::{ClusterRuntime, ConnectFailure, Host, UpstreamConn};
use crate::http1::{
    encode_response_head, parse_request_head, request_body_kind, BodyDecoder, BodyKind, Decoded, Headers, Limits,
    Method, RequestHead, WellKnown,
};
use crate::http2::bridge::{parse_trailer_lines, send_data, write_body, write_last_chunk};
use crate::http2::pipe::{pipe, Bridged, PipeEnd};
use crate::http2::H2Io;
use crate::proxy::{RecvBuf, UPSTREAM_HEAD_LIMIT};
use crate::runtime::{now, spawn};
use crate::tls::Conn;

/// Bytes each direction of a stream's pipe holds.
const PIPE_CAPACITY: usize = 32 * 1024;
/// Largest request head the manager writes (the HCM's head limit plus the
/// headers the gateway adds).
const REQUEST_HEAD_LIMIT: usize = 96 * 1024 + 8192;
/// Response-body bytes `h2` queues per stream before the worker waits.
const SEND_BUFFER: usize = 64 * 1024;

/// One host's HTTP/2 connections on this shard.
#[derive(Default)]
pub(crate) struct HostPool {
    conns: RefCell<Vec<Rc<H2Conn>>>,
    connecting: RefCell<Vec<Rc<Connecting>>>,
    /// The host's SETTINGS_MAX_CONCURRENT_STREAMS as last seen (0: not
    /// yet): how many waiters a connection being opened can take.
    peer_limit: Cell<u32>,
}

impl HostPool {
    /// The first connection with room for one more stream.
    fn pick(&self, limit: u32, max_requests: Option<u32>) -> Option<Rc<H2Conn>> {
        let mut conns = self.conns.borrow_mut();
        conns.retain(|c| c.open());
        if let Some(c) = conns.first() {
            self.peer_limit.set(c.peer_limit());
        }
        conns.iter().find(|c| c.has_room(limit, max_requests)).cloned()
    }

    /// Streams a connection still being opened may be promised.
    fn joinable_limit(&self, limit: u32) -> u32 {
        match self.peer_limit.get() {
            0 => limit,
            peer => limit.min(peer),
        }
    }

    /// Closes connections without streams idle for `idle_timeout`, and
    /// forgets closed ones; returns how many idled out.
    pub(crate) fn sweep(&self, t: Instant, idle_timeout: Duration) -> usize {
        let mut conns = self.conns.borrow_mut();
        conns.retain(|c| c.open());
        let open = conns.len();
        conns.retain(|c| c.active.get() > 0 || t.duration_since(c.idle_since.get()) < idle_timeout);
        open - conns.len()
    }
}

/// One multiplexed connection.  Dropping the last handle (pool entry and
/// streams) lets the driver close it with GOAWAY(NO_ERROR).
struct H2Conn {
    send: SendRequest<Bytes>,
    /// The real connection (peer and local addresses for the streams).
    io: Rc<Conn>,
    /// Streams in flight.
    active: Cell<u32>,
    /// Streams ever started (`max_requests_per_connection`).
    started: Cell<u32>,
    /// GOAWAY received, connection error, or the driver ended.
    closed: Rc<Cell<bool>>,
    idle_since: Cell<Instant>,
}

impl H2Conn {
    fn open(&self) -> bool {
        !self.closed.get()
    }

    fn peer_limit(&self) -> u32 {
        u32::try_from(self.send.current_max_send_streams()).unwrap_or(u32::MAX)
    }

    fn has_room(&self, limit: u32, max_requests: Option<u32>) -> bool {
        if max_requests.is_some_and(|m| self.started.get() >= m) {
            return false;
        }
        self.active.get() < limit.min(self.peer_limit())
    }
}

/// A connection being opened, and the requests waiting for it.
struct Connecting {
    /// Streams promised to waiters (the opener's included).
    reserved: Cell<u32>,
    outcome: RefCell<Option<Result<Rc<H2Conn>, ConnectFailure>>>,
    waiters: RefCell<Vec<Waker>>,
}

impl Connecting {
    async fn wait(&self) -> Result<Rc<H2Conn>, ConnectFailure> {
        std::future::poll_fn(|cx| {
            if let Some(o) = self.outcome.borrow().as_ref() {
                return Poll::Ready(o.clone());
            }
            self.waiters.borrow_mut().push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    fn finish(&self, outcome: Result<Rc<H2Conn>, ConnectFailure>) {
        *self.outcome.borrow_mut() = Some(outcome);
        for w in self.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }
}

impl ClusterRuntime {
    /// A stream on one of the host's HTTP/2 connections (`fresh`: on a new
    /// connection, the pool's own retry after a stale one failed).
    pub(super) async fn h2_checkout(&self, host: &Rc<Host>, fresh: bool) -> Result<Box<UpstreamConn>, ConnectFailure> {
        let limit = self.config.upstream_http2.max_concurrent_streams;
        let max_requests = self.config.max_requests_per_connection;
        if !fresh {
            if let Some(c) = host.h2.pick(limit, max_requests) {
                return Ok(self.h2_stream(host, &c));
            }
            let room = host.h2.joinable_limit(limit).min(max_requests.unwrap_or(u32::MAX));
            let joinable = host.h2.connecting.borrow().iter().find(|c| c.reserved.get() < room).cloned();
            if let Some(connecting) = joinable {
                connecting.reserved.set(connecting.reserved.get() + 1);
                let conn = connecting.wait().await?;
                return Ok(self.h2_stream(host, &conn));
            }
        }
        let guard = if fresh {
            self.resources.acquire_unchecked(false, Resource::Connections)
        } else {
            match self.resources.try_acquire(false, Resource::Connections) {
                Some(g) => g,
                None => return self.h2_wait_pending(host, limit, max_requests).await,
            }
        };
        let conn = self.h2_connect(host, guard).await?;
        Ok(self.h2_stream(host, &conn))
    }

    /// `max_connections` is reached: wait (as a pending request) for room
    /// on a connection or for room to open one.
    async fn h2_wait_pending(
        &self,
        host: &Rc<Host>,
        limit: u32,
        max_requests: Option<u32>,
    ) -> Result<Box<UpstreamConn>, ConnectFailure> {
        self.as_pending_request(host, async || {
            if let Some(c) = host.h2.pick(limit, max_requests) {
                return Some(Ok(self.h2_stream(host, &c)));
            }
            let guard = self.resources.try_acquire(false, Resource::Connections)?;
            Some(self.h2_connect(host, guard).await.map(|c| self.h2_stream(host, &c)))
        })
        .await
    }

    /// Opens a connection, runs the HTTP/2 handshake and starts its driver;
    /// requests arriving meanwhile wait for it (`Connecting`).
    async fn h2_connect(&self, host: &Rc<Host>, guard: Guard) -> Result<Rc<H2Conn>, ConnectFailure> {
        let connecting = Rc::new(Connecting {
            reserved: Cell::new(1),
            outcome: RefCell::new(None),
            waiters: RefCell::new(Vec::new()),
        });
        host.h2.connecting.borrow_mut().push(connecting.clone());
        let outcome = self.h2_open(host, guard).await;
        host.h2.connecting.borrow_mut().retain(|c| !Rc::ptr_eq(c, &connecting));
        if let Ok(c) = &outcome {
            host.h2.conns.borrow_mut().push(c.clone());
        }
        connecting.finish(outcome.clone());
        outcome
    }

    async fn h2_open(&self, host: &Rc<Host>, guard: Guard) -> Result<Rc<H2Conn>, ConnectFailure> {
        let alpn = [b"h2".to_vec()];
        let stream = self.open(host, Some(&alpn)).await?;
        let lease = self.lease(host, guard);
        if let Some(tls) = stream.tls() {
            if tls.alpn_protocol().as_deref() != Some(b"h2") {
                // The server did not agree to HTTP/2: as Envoy, a failed
                // connection (it would not understand our preface).
                tracing::debug!(cluster = %self.config.name, host = %host.addr, "upstream TLS without ALPN h2");
                self.stats.upstream_cx_protocol_error.inc();
                self.stats.upstream_cx_destroy_local.inc();
                return Err(ConnectFailure::Refused);
            }
        }
        let io = Rc::new(stream);
        let rx = Rc::new(Cell::new(0u64));
        let tx = Rc::new(Cell::new(0u64));
        let opts = self.config.upstream_http2;
        let mut builder = h2::client::Builder::new();
        builder
            .initial_window_size(opts.initial_stream_window_size)
            .initial_connection_window_size(opts.initial_connection_window_size)
            .max_send_buffer_size(SEND_BUFFER)
            // Our own SETTINGS_MAX_CONCURRENT_STREAMS: the upstream may not
            // push, so it opens no streams towards us.
            .enable_push(false);
        // Requests written in one poll of the connection leave in one write
        // (h2 flushes each DATA payload it chains on its own otherwise).
        let h2io = H2Io::new(io.clone(), Vec::new(), rx.clone(), tx.clone());
        let writer = h2io.writer();
        let handshake = builder.handshake::<_, Bytes>(h2io);
        let (send, connection) = match crate::runtime::timeout(Some(self.config.connect_timeout), handshake).await {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => {
                tracing::debug!(cluster = %self.config.name, host = %host.addr, error = %e, "upstream h2 handshake failed");
                self.stats.upstream_cx_protocol_error.inc();
                self.stats.upstream_cx_destroy_remote.inc();
                return Err(ConnectFailure::Refused);
            }
            Err(_) => {
                self.stats.upstream_cx_connect_timeout.inc();
                self.stats.upstream_cx_destroy_local.inc();
                return Err(ConnectFailure::Timeout);
            }
        };
        self.stats.upstream_cx_http2_total.inc();
        let closed = Rc::new(Cell::new(false));
        let conn = Rc::new(H2Conn {
            send,
            io,
            active: Cell::new(0),
            started: Cell::new(0),
            closed: closed.clone(),
            idle_since: Cell::new(now()),
        });
        let stats = self.stats.clone();
        let (rx_total, tx_total) =
            (self.stats.upstream_cx_rx_bytes_total.clone(), self.stats.upstream_cx_tx_bytes_total.clone());
        spawn(async move {
            let _lease = lease;
            let ended = crate::http2::drive_coalesced(connection, writer).await;
            closed.set(true);
            match ended {
                Ok(()) => stats.upstream_cx_destroy_local.inc(),
                Err(e) => {
                    if e.is_go_away() || e.reason().is_some_and(|r| r != Reason::NO_ERROR) {
                        stats.upstream_cx_protocol_error.inc();
                    }
                    stats.upstream_cx_destroy_remote.inc();
                }
            }
            rx_total.add(rx.get());
            tx_total.add(tx.get());
        })
        .detach();
        Ok(conn)
    }

    /// Starts the worker of one stream on `conn` and returns the manager's
    /// end of its pipe.
    fn h2_stream(&self, host: &Rc<Host>, conn: &Rc<H2Conn>) -> Box<UpstreamConn> {
        let reused = conn.started.get() > 0;
        conn.started.set(conn.started.get() + 1);
        conn.active.set(conn.active.get() + 1);
        let (near, far) = pipe(PIPE_CAPACITY);
        let reset = Rc::new(Cell::new(None));
        let worker = StreamWorker { conn: conn.clone(), pipe: far, https: self.tls.is_some(), reset: reset.clone() };
        spawn(worker.run()).detach();
        Box::new(UpstreamConn {
            stream: Conn::Bridged(Box::new(Bridged { end: near, outer: conn.io.clone() })),
            host: host.clone(),
            served: u32::from(reused),
            buf: RecvBuf::new(16 * 1024, UPSTREAM_HEAD_LIMIT + 4096),
            head: crate::http1::ResponseHead::new(),
            _lease: None,
            h2_reset: Some(reset),
        })
    }
}

/// Carries one exchange between the manager's pipe and an HTTP/2 stream.
struct StreamWorker {
    conn: Rc<H2Conn>,
    pipe: PipeEnd,
    https: bool,
    /// How the upstream ended the stream, for the retry decision.
    reset: Rc<Cell<Option<Reason>>>,
}

impl Drop for StreamWorker {
    fn drop(&mut self) {
        self.conn.active.set(self.conn.active.get() - 1);
        if self.conn.active.get() == 0 {
            self.conn.idle_since.set(now());
        }
    }
}

impl StreamWorker {
    async fn run(self) {
        let mut buf = RecvBuf::new(16 * 1024, REQUEST_HEAD_LIMIT);
        let Some((request, body_kind, method)) = self.read_head(&mut buf).await else { return };
        let mut send = self.conn.send.clone();
        let end_of_stream = matches!(body_kind, BodyKind::Empty | BodyKind::Length(0));
        // Room under the peer's stream limit (h2 queues the stream otherwise).
        let ready = {
            let mut ready = pin!(std::future::poll_fn(|cx| send.poll_ready(cx)));
            std::future::poll_fn(|cx| {
                if let Poll::Ready(r) = ready.as_mut().poll(cx) {
                    return Poll::Ready(Some(r));
                }
                self.pipe.poll_peer_gone(cx).map(|_| None)
            })
            .await
        };
        match ready {
            None => return,
            Some(Err(e)) => return self.connection_failed(&e),
            Some(Ok(())) => {}
        }
        let (response, body_tx) = match send.send_request(request, end_of_stream) {
            Ok(pair) => pair,
            Err(e) => return self.connection_failed(&e),
        };
        drop(send);
        let mut body_tx = Some(body_tx);
        let mut request_done = end_of_stream;
        let completed = {
            let mut pump = pin!(pump_request(&self.pipe, &mut buf, body_kind, &mut body_tx));
            let mut relay = pin!(relay_response(&self.pipe, response, method, &self.reset));
            std::future::poll_fn(|cx| {
                if !request_done {
                    match pump.as_mut().poll(cx) {
                        Poll::Ready(Ok(())) => request_done = true,
                        // The manager gave up mid-body, or the stream broke.
                        Poll::Ready(Err(())) => return Poll::Ready(false),
                        Poll::Pending => {}
                    }
                }
                if let Poll::Ready(r) = relay.as_mut().poll(cx) {
                    return Poll::Ready(r.is_ok());
                }
                if self.pipe.poll_peer_gone(cx).is_ready() {
                    return Poll::Ready(false);
                }
                Poll::Pending
            })
            .await
        };
        if !completed {
            // Abandoned by the manager, or failed: tell the upstream
            // (dropping the handles would reset it too; say why).
            if let Some(tx) = body_tx.as_mut() {
                tx.send_reset(Reason::CANCEL);
            }
        }
    }

    /// Reads and translates the manager's request head; `None` if the
    /// manager went away first (or wrote something unparsable).
    async fn read_head(&self, buf: &mut RecvBuf) -> Option<(http::Request<()>, BodyKind, Method)> {
        let limits = Limits { max_request_line: 64 * 1024, max_head_bytes: REQUEST_HEAD_LIMIT, max_headers: 1000 };
        let mut head = RequestHead::new();
        loop {
            match parse_request_head(buf.filled(), &limits, &mut head) {
                Ok(Some(n)) => {
                    buf.consume(n);
                    break;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(error = ?e, "h2 upstream: unparsable request head from the manager");
                    return None;
                }
            }
            match buf.fill_from(&self.pipe).await {
                Ok(n) if n > 0 => {}
                _ => return None,
            }
        }
        let kind = request_body_kind(&head).ok()?;
        let request = translate_request(&head, self.https)?;
        Some((request, kind, head.method))
    }

    /// The connection refused new streams (GOAWAY, broken): no more
    /// streams go to it; this one's manager sees a reset before headers.
    fn connection_failed(&self, e: &h2::Error) {
        self.conn.closed.set(true);
        self.reset.set(Some(e.reason().unwrap_or(Reason::REFUSED_STREAM)));
    }
}

/// The HTTP/2 request for an HTTP/1.1 head (RFC 9113 §8.3.1, §8.2.2).
fn translate_request(head: &RequestHead, https: bool) -> Option<http::Request<()>> {
    let authority = head.authority().or_else(|| head.host()).unwrap_or(b"");
    let authority = std::str::from_utf8(authority).ok()?;
    let path = std::str::from_utf8(head.path_and_query()).ok()?;
    let path = if path.is_empty() { "/" } else { path };
    let scheme = if https { "https" } else { "http" };
    let uri = http::Uri::builder().scheme(scheme).authority(authority).path_and_query(path).build().ok()?;
    let mut request = http::Request::builder().method(head.method_str()).uri(uri).body(()).ok()?;
    let headers = request.headers_mut();
    let mut grpc = false;
    for (name, value) in head.headers.iter() {
        if is_connection_specific(name) || name == "host" {
            continue;
        }
        if name == "content-type" && value.starts_with(b"application/grpc") {
            grpc = true;
        }
        let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_bytes(value)) else {
            continue;
        };
        headers.append(n, v);
    }
    if grpc {
        // The manager strips TE as hop-by-hop; gRPC requires `te: trailers`.
        headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
    }
    Some(request)
}

fn is_connection_specific(name: &str) -> bool {
    matches!(name, "connection" | "keep-alive" | "proxy-connection" | "te" | "transfer-encoding" | "upgrade")
}

/// Copies the request body (and trailers) from the pipe onto the stream.
async fn pump_request(
    pipe: &PipeEnd,
    buf: &mut RecvBuf,
    kind: BodyKind,
    body_tx: &mut Option<SendStream<Bytes>>,
) -> Result<(), ()> {
    let Some(tx) = body_tx.as_mut() else { return Ok(()) };
    let limits = Limits { max_request_line: 8192, max_head_bytes: REQUEST_HEAD_LIMIT, max_headers: 1000 };
    let mut decoder = BodyDecoder::with_limits(kind, &limits);
    loop {
        let (n, event) = decoder.decode(buf.filled()).map_err(|_| ())?;
        match event {
            Decoded::Data(data) => {
                let data = Bytes::copy_from_slice(data);
                buf.consume(n);
                send_data(tx, data).await?;
            }
            Decoded::End { trailers } => {
                let sent = if trailers.is_empty() {
                    tx.send_data(Bytes::new(), true)
                } else {
                    tx.send_trailers(parse_trailer_lines(trailers))
                };
                buf.consume(n);
                return sent.map_err(|_| ());
            }
            Decoded::NeedMore => {
                buf.consume(n);
                match buf.fill_from(pipe).await {
                    Ok(m) if m > 0 => {}
                    _ => return Err(()),
                }
            }
        }
    }
}

/// Waits for the response and writes it into the pipe as HTTP/1.1.
/// `Err`: the upstream reset the stream (recorded in `reset`) or the
/// manager went away; the caller drops the pipe.
async fn relay_response(
    pipe: &PipeEnd,
    response: h2::client::ResponseFuture,
    method: Method,
    reset: &Cell<Option<Reason>>,
) -> Result<(), ()> {
    let note = |e: h2::Error| {
        reset.set(Some(e.reason().unwrap_or(Reason::INTERNAL_ERROR)));
    };
    let response = response.await.map_err(note)?;
    let (parts, mut body) = response.into_parts();
    let mut headers = Headers::with_capacity(parts.headers.len() + 1, 512);
    for (name, value) in &parts.headers {
        if is_connection_specific(name.as_str()) {
            continue;
        }
        headers.append(name.as_str(), value.as_bytes());
    }
    let status = parts.status.as_u16();
    let bodiless_status = status == 204 || status == 304 || (100..200).contains(&status);
    let no_body = body.is_end_stream() || method == Method::Head || bodiless_status;
    let chunked = !no_body && !headers.contains(WellKnown::ContentLength);
    if chunked {
        headers.append(WellKnown::TransferEncoding, b"chunked");
    } else if body.is_end_stream()
        && !bodiless_status
        && method != Method::Head
        && !headers.contains(WellKnown::ContentLength)
    {
        headers.append(WellKnown::ContentLength, b"0");
    }
    let mut out = Vec::with_capacity(256 + headers.byte_len());
    encode_response_head(status, "", &headers, &mut out);
    pipe.write_all(&out).await.map_err(|_| ())?;
    if no_body {
        return Ok(());
    }
    relay_body(pipe, &mut body, chunked, &mut out).await.map_err(|e| {
        if let Some(e) = e {
            note(e);
        }
    })
}

/// Response DATA (and trailers) into the pipe; `Err(Some)`: the stream
/// failed, `Err(None)`: the manager went away.
async fn relay_body(
    pipe: &PipeEnd,
    body: &mut RecvStream,
    chunked: bool,
    frame: &mut Vec<u8>,
) -> Result<(), Option<h2::Error>> {
    while let Some(data) = std::future::poll_fn(|cx| body.poll_data(cx)).await {
        let data = data.map_err(Some)?;
        let n = data.len();
        if n == 0 {
            continue;
        }
        write_body(pipe, &data, chunked, frame).await.map_err(|_| None)?;
        // Window back to the upstream only once the bytes moved on.
        let _ = body.flow_control().release_capacity(n);
    }
    let trailers = std::future::poll_fn(|cx| body.poll_trailers(cx)).await.map_err(Some)?;
    if chunked {
        write_last_chunk(pipe, trailers.as_ref(), frame).await.map_err(|_| None)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &[u8]) -> RequestHead {
        let mut head = RequestHead::new();
        let limits = Limits { max_request_line: 8192, max_head_bytes: 65536, max_headers: 100 };
        parse_request_head(raw, &limits, &mut head).unwrap().unwrap();
        head
    }

    #[test]
    fn request_head_becomes_h2_pseudo_headers_without_hop_by_hop() {
        let h = head(
            b"POST /svc/Method?x=1 HTTP/1.1\r\nhost: api.example:8080\r\nconnection: keep-alive\r\n\
              transfer-encoding: chunked\r\ncontent-type: application/grpc+proto\r\nx-custom: v\r\n\r\n",
        );
        let r = translate_request(&h, false).unwrap();
        assert_eq!(r.method(), http::Method::POST);
        assert_eq!(r.uri().scheme_str(), Some("http"));
        assert_eq!(r.uri().authority().unwrap().as_str(), "api.example:8080");
        assert_eq!(r.uri().path_and_query().unwrap().as_str(), "/svc/Method?x=1");
        assert!(r.headers().get("host").is_none());
        assert!(r.headers().get("connection").is_none());
        assert!(r.headers().get("transfer-encoding").is_none());
        assert_eq!(r.headers().get("te").unwrap(), "trailers", "gRPC gets te: trailers back");
        assert_eq!(r.headers().get("x-custom").unwrap(), "v");
    }

    #[test]
    fn https_scheme_and_no_te_for_plain_requests() {
        let h = head(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n");
        let r = translate_request(&h, true).unwrap();
        assert_eq!(r.uri().scheme_str(), Some("https"));
        assert!(r.headers().get("te").is_none());
    }
}
