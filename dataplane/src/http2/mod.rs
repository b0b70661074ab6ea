//! Downstream HTTP/2: protocol choice for an HTTP listener's connections, and
//! the HTTP/2 connection driver (the `h2` crate over the shard's executor and
//! reactor: no tokio runtime, only tokio's I/O traits).
//!
//! It owns the HTTP/2 connection (SETTINGS, flow-control windows, GOAWAY) and
//! the translation of each stream to and from HTTP/1.1 (`bridge`).  It must
//! not route, filter or pick upstreams: every stream goes through the HTTP/1
//! connection manager's request phases (`proxy::serve_bridged`), so routing,
//! RBAC, governance filters, header mutations, rewrites, redirects, direct
//! responses, x-forwarded-for / x-request-id, retries, stats and upstream
//! pools behave exactly as for HTTP/1.1.
//!
//! Protocol choice follows the HTTP connection manager's `codec_type`
//! (Envoy's `HttpConnectionManager.CodecType`):
//!
//! * `HTTP1`: HTTP/1.1 only.
//! * `HTTP2`: HTTP/2 only — prior knowledge on plaintext (RFC 9113 §3.3).
//! * `AUTO`: over TLS, ALPN `h2` (RFC 9113 §3.2; the listener's
//!   `alpn_protocols` must offer it) selects HTTP/2; otherwise the first
//!   24 bytes are compared with the client connection preface (RFC 9113
//!   §3.4, `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`), as Envoy's AUTO codec does.
//!   Bytes read while deciding are handed to whichever codec wins.  The
//!   HTTP/1.1 `Upgrade: h2c` dance (removed from RFC 9113) is not offered.
//!
//! Limits are the HCM's `http2_protocol_options` (`max_concurrent_streams`,
//! `initial_stream_window_size`, `initial_connection_window_size`, defaults
//! from Envoy's "Configuring Envoy as an edge proxy" best practices: 100,
//! 64 KiB, 1 MiB) and `max_request_headers_kb` as SETTINGS_MAX_HEADER_LIST_SIZE
//! (RFC 9113 §6.5.2).  Stats are Envoy's `downstream_cx_http2_total`,
//! `downstream_cx_http2_active` and `downstream_rq_http2_total`.
//!
//! Draining (SIGTERM, listener removal) sends GOAWAY (RFC 9113 §6.8) through
//! `h2`'s graceful shutdown: streams already accepted run to completion, new
//! ones are refused, and the connection closes when the last one ends.

pub mod bridge;
pub mod connect;
pub mod grpc;
pub mod guard;
pub mod pipe;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use control::model::CodecType;

use crate::runtime::{now, sleep_until, spawn, timeout};
use crate::shard::{HttpListener, ShardCtx};
use crate::tls::Conn;

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serves one accepted (and, with TLS, handshaken) connection of an HTTP
/// listener with the codec its `codec_type` and ALPN choose.
pub async fn serve_http(ctx: Rc<ShardCtx>, listener: Rc<HttpListener>, conn: Conn, peer: SocketAddr) {
    let codec = listener.hcm.codec_type;
    if codec == CodecType::Http1 {
        return crate::proxy::serve_connection(ctx, listener, conn, peer).await;
    }
    let alpn = conn.tls().and_then(|t| t.alpn_protocol());
    match alpn.as_deref() {
        Some(b"h2") => return serve_h2_boxed(ctx, listener, conn, peer, Vec::new()).await,
        // A client that negotiated HTTP/1.1 speaks it, whatever the codec.
        Some(b"http/1.1") if codec == CodecType::Auto => {
            return crate::proxy::serve_connection(ctx, listener, conn, peer).await
        }
        _ => {}
    }
    if codec == CodecType::Http2 {
        return serve_h2_boxed(ctx, listener, conn, peer, Vec::new()).await;
    }
    match sniff_preface(&conn, listener.hcm.idle_timeout).await {
        Sniffed::H2(prefix) => serve_h2_boxed(ctx, listener, conn, peer, prefix).await,
        Sniffed::H1(prefix) => crate::proxy::serve_connection_prefixed(ctx, listener, conn, peer, &prefix).await,
        Sniffed::Gone => {
            let stats = &listener.stats;
            stats.downstream_cx_total.inc();
            stats.downstream_cx_destroy.inc();
            stats.downstream_cx_destroy_remote.inc();
        }
    }
}

/// HTTP/2 state is boxed (like HTTP/1's, `proxy::serve_boxed`) so the accept
/// task stays small, and built in its allocation rather than moved into it
/// (`Box::pin` would copy it once per connection).
fn serve_h2_boxed(
    ctx: Rc<ShardCtx>,
    listener: Rc<HttpListener>,
    conn: Conn,
    peer: SocketAddr,
    prefix: Vec<u8>,
) -> Pin<Box<impl Future<Output = ()>>> {
    Box::into_pin(Box::write(Box::new_uninit(), serve_h2(ctx, listener, conn, peer, prefix)))
}

enum Sniffed {
    H2(Vec<u8>),
    H1(Vec<u8>),
    Gone,
}

/// Reads until the bytes either differ from the HTTP/2 preface or match all
/// of it (usually the first read decides).
async fn sniff_preface(conn: &Conn, idle: Option<std::time::Duration>) -> Sniffed {
    let mut got = Vec::with_capacity(PREFACE.len());
    let mut buf = [0u8; 24];
    loop {
        let want = PREFACE.len() - got.len();
        let read = timeout(idle, conn.read(&mut buf[..want])).await;
        match read {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ if got.is_empty() => return Sniffed::Gone,
            // End of stream mid-decision: HTTP/1 reports its own error.
            _ => return Sniffed::H1(got),
        }
        if got[..] != PREFACE[..got.len()] {
            return Sniffed::H1(got);
        }
        if got.len() == PREFACE.len() {
            return Sniffed::H2(got);
        }
    }
}

/// A connection as `h2` sees it: the sniffed prefix first (downstream),
/// then the connection, with byte counts for the HCM's stats.
pub(crate) struct H2Io {
    conn: Rc<Conn>,
    prefix: Vec<u8>,
    prefix_at: usize,
    rx_bytes: Rc<Cell<u64>>,
    tx_bytes: Rc<Cell<u64>>,
    /// Frames gathered for one write per connection poll.
    out: Rc<Coalescer>,
}

impl H2Io {
    /// A connection whose first bytes are `prefix` (what sniffing the
    /// downstream preface read; empty upstream), counting its bytes into
    /// the caller's cells.  Its writes are gathered, so whoever polls the
    /// `h2` connection writes them at the end of each poll through
    /// [`H2Io::writer`].
    pub(crate) fn new(conn: Rc<Conn>, prefix: Vec<u8>, rx_bytes: Rc<Cell<u64>>, tx_bytes: Rc<Cell<u64>>) -> H2Io {
        H2Io { conn, prefix, prefix_at: 0, rx_bytes, tx_bytes, out: Rc::new(Coalescer::new()) }
    }

    /// What [`drive_coalesced`] needs to write this connection's gathered bytes.
    pub(crate) fn writer(&self) -> CoalescedWriter {
        CoalescedWriter { out: self.out.clone(), conn: self.conn.clone(), tx_bytes: self.tx_bytes.clone() }
    }
}

/// The write side of an [`H2Io`], kept by whoever polls its connection.
pub(crate) struct CoalescedWriter {
    out: Rc<Coalescer>,
    conn: Rc<Conn>,
    tx_bytes: Rc<Cell<u64>>,
}

impl CoalescedWriter {
    /// Call when the `h2` connection returned `Pending`; see
    /// [`Coalescer::end_of_poll`].
    fn end_of_poll(&self, cx: &mut Context<'_>) -> bool {
        self.out.end_of_poll(&*self.conn, &self.tx_bytes, cx)
    }
}

/// Polls an `h2` connection future whose I/O gathers its writes, writing
/// them each time it has done all it can (see [`Coalescer`]).
pub(crate) async fn drive_coalesced<F: Future>(connection: F, writer: CoalescedWriter) -> F::Output {
    let mut connection = pin!(connection);
    std::future::poll_fn(|cx| loop {
        if let Poll::Ready(ended) = connection.as_mut().poll(cx) {
            return Poll::Ready(ended);
        }
        if !writer.end_of_poll(cx) {
            return Poll::Pending;
        }
    })
    .await
}

/// The bytes `h2` writes on a connection (downstream or upstream),
/// gathered until the connection task has done all it can in one poll, then
/// written at once.
///
/// Why: `h2` keeps at most one DATA payload chained behind its frame buffer
/// and flushes before it accepts the next one, so every message with a body
/// cost its own `writev` (and its own TCP segment): with ten streams
/// answered in one loop pass, ten system calls where one does.  Gathered,
/// the connection writes once per poll, as HAProxy's and nginx's HTTP/2
/// muxes do.
struct Coalescer {
    buf: RefCell<Vec<u8>>,
    /// How much of `buf` is already written (a partial write).
    written: Cell<usize>,
    /// `h2` was refused room (the buffer was full): poll it again once
    /// the buffer drains, or it would wait for a wake-up nothing sends.
    refused: Cell<bool>,
    /// The socket failed; the next write reports it to `h2`.
    failed: Cell<Option<io::ErrorKind>>,
}

/// Where a `Coalescer` writes: the connection (a test's recorder in tests).
trait Wire {
    fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>>;
    fn poll_write_vectored(&self, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>>;
}

impl Wire for Conn {
    fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Conn::poll_write(self, cx, buf)
    }
    fn poll_write_vectored(&self, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Conn::poll_write_vectored(self, cx, bufs)
    }
}

/// Gathered bytes past this are written before more are taken.
const COALESCE_LIMIT: usize = 64 * 1024;
/// A write this large with nothing gathered goes straight to the socket
/// (a large body chunk is not worth a copy).
const COALESCE_DIRECT: usize = 16 * 1024;

impl Coalescer {
    fn new() -> Coalescer {
        Coalescer {
            buf: RefCell::new(Vec::with_capacity(COALESCE_DIRECT)),
            written: Cell::new(0),
            refused: Cell::new(false),
            failed: Cell::new(None),
        }
    }

    fn pending(&self) -> usize {
        self.buf.borrow().len() - self.written.get()
    }

    /// Writes what is gathered; `Ready(Ok)` once all of it is on the socket.
    fn poll_drain(&self, conn: &impl Wire, tx_bytes: &Cell<u64>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut buf = self.buf.borrow_mut();
        while self.written.get() < buf.len() {
            match conn.poll_write(cx, &buf[self.written.get()..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.written.set(self.written.get() + n);
                    tx_bytes.set(tx_bytes.get() + n as u64);
                }
                Poll::Ready(Err(e)) => {
                    buf.clear();
                    self.written.set(0);
                    return Poll::Ready(Err(e));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        buf.clear();
        self.written.set(0);
        Poll::Ready(Ok(()))
    }

    /// Called when `h2`'s connection returned `Pending`: writes what it
    /// gathered.  True when `h2` must be polled again at once: it was
    /// refused room that the write made, or the socket failed and it has to
    /// learn so (at its next write, or read).
    fn end_of_poll(&self, conn: &impl Wire, tx_bytes: &Cell<u64>, cx: &mut Context<'_>) -> bool {
        match self.poll_drain(conn, tx_bytes, cx) {
            Poll::Ready(result) => {
                if let Err(e) = result {
                    self.failed.set(Some(e.kind()));
                    self.refused.set(true);
                }
                self.refused.replace(false)
            }
            Poll::Pending => false,
        }
    }

    /// Takes what `h2` writes: gathered, or written straight through when
    /// nothing is gathered and it is large.
    fn poll_take(
        &self,
        conn: &impl Wire,
        tx_bytes: &Cell<u64>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(kind) = self.failed.take() {
            return Poll::Ready(Err(kind.into()));
        }
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        if self.pending() + len > COALESCE_LIMIT {
            match self.poll_drain(conn, tx_bytes, cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    self.refused.set(true);
                    return Poll::Pending;
                }
            }
        }
        if self.pending() == 0 && len >= COALESCE_DIRECT {
            let n = std::task::ready!(conn.poll_write_vectored(cx, bufs))?;
            tx_bytes.set(tx_bytes.get() + n as u64);
            return Poll::Ready(Ok(n));
        }
        let mut buf = self.buf.borrow_mut();
        let mut taken = 0;
        for b in bufs {
            let room = COALESCE_LIMIT.saturating_sub(buf.len() - self.written.get());
            let n = b.len().min(room);
            buf.extend_from_slice(&b[..n]);
            taken += n;
            if n < b.len() {
                break;
            }
        }
        Poll::Ready(Ok(taken))
    }
}

impl tokio::io::AsyncRead for H2Io {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix_at < self.prefix.len() {
            let n = buf.remaining().min(self.prefix.len() - self.prefix_at);
            let at = self.prefix_at;
            buf.put_slice(&self.prefix[at..at + n]);
            self.prefix_at += n;
            return Poll::Ready(Ok(()));
        }
        let conn = &self.conn;
        let n = std::task::ready!(crate::transport::read_into(buf, |landing| conn.poll_read(cx, landing)))?;
        self.rx_bytes.set(self.rx_bytes.get() + n as u64);
        Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for H2Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.out.poll_take(&*self.conn, &self.tx_bytes, cx, &[io::IoSlice::new(buf)])
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.out.poll_take(&*self.conn, &self.tx_bytes, cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        true
    }
    /// Gathered bytes are written when the connection's poll ends
    /// (`drive`, `drive_coalesced`), not at each of `h2`'s per-frame flushes.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.out.poll_drain(&*self.conn, &self.tx_bytes, cx))?;
        Poll::Ready(self.conn.shutdown_write())
    }
}

/// Runs one HTTP/2 connection: accepts streams (one task each) until the
/// client goes away, the connection idles out, or draining completes.
async fn serve_h2(ctx: Rc<ShardCtx>, listener: Rc<HttpListener>, conn: Conn, peer: SocketAddr, prefix: Vec<u8>) {
    let opened = Instant::now();
    crate::proxy::count_connection_opened(&listener, true);
    let conn = Rc::new(conn);
    let rx_bytes = Rc::new(Cell::new(0));
    let tx_bytes = Rc::new(Cell::new(0));
    let local = if admit(&listener, &conn, peer).await {
        drive(&ctx, &listener, &conn, peer, prefix, &rx_bytes, &tx_bytes).await
    } else {
        true
    };
    crate::proxy::count_connection_closed(&listener, true, local, opened, rx_bytes.get(), tx_bytes.get());
}

/// The connection-level filters the HTTP/1 path runs on a new connection:
/// envoy.filters.network.local_ratelimit, then the network RBAC filter
/// (its bytes are already here: the preface, or the TLS handshake).
async fn admit(listener: &HttpListener, conn: &Conn, peer: SocketAddr) -> bool {
    if !listener.filters.admit_connection(now()) {
        return false;
    }
    if !listener.rbac.has_network() {
        return true;
    }
    let identity = conn.tls().map(|t| t.peer());
    let identity = identity.as_ref().and_then(|p| p.as_ref());
    match listener.rbac.check_connection_with(peer, conn.local_addr(), identity) {
        crate::rbac::ConnVerdict::Allowed => true,
        crate::rbac::ConnVerdict::Denied { delay } => {
            if let Some(d) = delay {
                crate::runtime::sleep_until(now() + d).await;
            }
            false
        }
    }
}

/// The connection loop; returns whether the gateway (not the client) ended it.
async fn drive(
    ctx: &Rc<ShardCtx>,
    listener: &Rc<HttpListener>,
    conn: &Rc<Conn>,
    peer: SocketAddr,
    prefix: Vec<u8>,
    rx_bytes: &Rc<Cell<u64>>,
    tx_bytes: &Rc<Cell<u64>>,
) -> bool {
    let hcm = &listener.hcm;
    let opts = hcm.http2;
    let io = H2Io::new(conn.clone(), prefix, rx_bytes.clone(), tx_bytes.clone());
    let writer = io.writer();
    // Flood budgets h2 does not keep (guard.rs); the preface comes through it.
    let (io, flood_guard) = guard::GuardedIo::new(io, guard::GuardLimits::default(), true, now);
    let mut calmed = false;
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(opts.max_concurrent_streams)
        .initial_window_size(opts.initial_stream_window_size)
        .initial_connection_window_size(opts.initial_connection_window_size)
        .max_header_list_size(u32::try_from(hcm.max_request_headers_bytes).unwrap_or(u32::MAX))
        // Response bytes queued per stream before the writer waits for the
        // socket: bounds memory per stream (h2 counts it per stream).
        .max_send_buffer_size(64 * 1024)
        // Explicit, so a change of h2's defaults cannot loosen them: resets
        // of streams not accepted yet, and streams h2 resets for errors.
        .max_pending_accept_reset_streams(20)
        .max_local_error_reset_streams(Some(1024))
        // RFC 8441 extended CONNECT (connect.rs).
        .enable_connect_protocol();
    let handshake = builder.handshake::<_, Bytes>(io);
    let mut h2 = match timeout(hcm.request_headers_timeout.or(hcm.idle_timeout), handshake).await {
        Ok(Ok(h)) => h,
        Ok(Err(_)) => {
            listener.stats.downstream_cx_protocol_error.inc();
            return true;
        }
        Err(_) => return true,
    };
    let active = Rc::new(Cell::new(0usize));
    let last_active = Rc::new(Cell::new(now()));
    let idle_timeout = hcm.idle_timeout;
    let mut idle = idle_timeout.map(|t| sleep_until(now() + t));
    // The server draining, or this listener removed by a config update:
    // GOAWAY, then streams still open at `--drain-time-s` are cut.
    let mut drain = pin!(ctx.listener_drain_signal(&listener.config.name));
    let mut hard_close: Option<crate::runtime::Sleep> = None;
    let mut shutting_down = false;
    loop {
        enum Event {
            Stream(Box<(http::Request<h2::RecvStream>, h2::server::SendResponse<Bytes>)>),
            Closed(Result<(), h2::Error>),
            Drain,
            HardClose,
            Idle,
        }
        let event = std::future::poll_fn(|cx| loop {
            if let (Some(v), false) = (flood_guard.violation(), calmed) {
                calmed = true;
                tracing::debug!(%peer, reason = v.as_str(), "http2: flood, GOAWAY(ENHANCE_YOUR_CALM)");
                h2.abrupt_shutdown(h2::Reason::ENHANCE_YOUR_CALM);
            }
            match h2.poll_accept(cx) {
                Poll::Ready(Some(Ok(stream))) => return Poll::Ready(Event::Stream(Box::new(stream))),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Event::Closed(Err(e))),
                Poll::Ready(None) => return Poll::Ready(Event::Closed(Ok(()))),
                Poll::Pending => {}
            }
            if hard_close.is_none() && drain.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Drain);
            }
            if hard_close.as_mut().is_some_and(|s| Pin::new(s).poll(cx).is_ready()) {
                return Poll::Ready(Event::HardClose);
            }
            if let (Some(s), Some(limit)) = (idle.as_mut(), idle_timeout) {
                while Pin::new(&mut *s).poll(cx).is_ready() {
                    let due = last_active.get() + limit;
                    if active.get() == 0 && due <= now() {
                        return Poll::Ready(Event::Idle);
                    }
                    s.reset(if active.get() == 0 { due } else { now() + limit });
                }
            }
            // h2 has done all it can for now: put what it wrote on the wire.
            if writer.end_of_poll(cx) {
                continue;
            }
            return Poll::Pending;
        })
        .await;
        match event {
            Event::Stream(stream) => {
                let (req, respond) = *stream;
                // A newer snapshot's listener of the same name serves new
                // streams; a removed listener drains this connection.
                let snapshot = ctx.snapshot();
                let current = match snapshot.listeners.get(&listener.config.name) {
                    Some(l) => l.clone(),
                    None => {
                        if !shutting_down {
                            shutting_down = true;
                            h2.graceful_shutdown();
                        }
                        listener.clone()
                    }
                };
                active.set(active.get() + 1);
                let guard = ActiveStream { active: active.clone(), last_active: last_active.clone() };
                spawn(stream_task(ctx.clone(), current, conn.clone(), peer, req, respond, guard)).detach();
            }
            Event::Closed(Ok(())) => return shutting_down,
            Event::Closed(Err(e)) => {
                if e.is_go_away() || e.reason().is_some_and(|r| r != h2::Reason::NO_ERROR) {
                    listener.stats.downstream_cx_protocol_error.inc();
                }
                return shutting_down || !e.is_io();
            }
            Event::Drain => {
                hard_close = Some(sleep_until(ctx.hard_close_at(&listener.config.name)));
                if !shutting_down {
                    shutting_down = true;
                    listener.stats.downstream_cx_drain_close.inc();
                    h2.graceful_shutdown();
                }
            }
            Event::HardClose => {
                // Dropping the connection resets its streams (their tasks
                // see the error and end) and closes the socket once they have.
                if active.get() > 0 {
                    listener.stats.downstream_cx_destroy_local_active_rq.inc();
                    listener.stats.downstream_cx_destroy_active_rq.inc();
                }
                return true;
            }
            Event::Idle => {
                listener.stats.downstream_cx_idle_timeout.inc();
                shutting_down = true;
                idle = None;
                h2.graceful_shutdown();
            }
        }
    }
}

/// One stream's task, built in its own allocation (as `serve_h2_boxed`):
/// spawning it by value would copy the bridge's whole state (the HTTP/1
/// manager's request phases included) several times per stream.
fn stream_task(
    ctx: Rc<ShardCtx>,
    listener: Rc<HttpListener>,
    outer: Rc<Conn>,
    peer: SocketAddr,
    req: http::Request<h2::RecvStream>,
    respond: h2::server::SendResponse<Bytes>,
    guard: ActiveStream,
) -> Pin<Box<impl Future<Output = ()>>> {
    Box::into_pin(Box::write(Box::new_uninit(), async move {
        let _guard = guard;
        bridge::serve_stream(&ctx, &listener, outer, peer, req, respond).await;
    }))
}

/// Counts a stream as active for the idle timeout while it lives.
struct ActiveStream {
    active: Rc<Cell<usize>>,
    last_active: Rc<Cell<Instant>>,
}

impl Drop for ActiveStream {
    fn drop(&mut self) {
        self.active.set(self.active.get() - 1);
        self.last_active.set(now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    /// A socket that takes at most `room` bytes and counts its writes.
    #[derive(Default)]
    struct Recorder {
        room: Cell<usize>,
        bytes: RefCell<Vec<u8>>,
        writes: Cell<usize>,
    }

    impl Wire for Recorder {
        fn poll_write(&self, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.room.get());
            if n == 0 {
                return Poll::Pending;
            }
            self.room.set(self.room.get() - n);
            self.bytes.borrow_mut().extend_from_slice(&buf[..n]);
            self.writes.set(self.writes.get() + 1);
            Poll::Ready(Ok(n))
        }
        fn poll_write_vectored(&self, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
            let joined: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            self.poll_write(cx, &joined)
        }
    }

    fn take(out: &Coalescer, wire: &Recorder, tx: &Cell<u64>, parts: &[&[u8]]) -> Poll<io::Result<usize>> {
        let slices: Vec<io::IoSlice<'_>> = parts.iter().map(|p| io::IoSlice::new(p)).collect();
        out.poll_take(wire, tx, &mut Context::from_waker(Waker::noop()), &slices)
    }

    #[test]
    fn frames_of_one_poll_leave_in_one_write() {
        let (out, wire, tx) = (Coalescer::new(), Recorder::default(), Cell::new(0));
        wire.room.set(usize::MAX);
        for i in 0..10u8 {
            // a HEADERS frame, then a DATA frame head with its chained payload
            assert!(matches!(take(&out, &wire, &tx, &[&[i; 40]]), Poll::Ready(Ok(40))));
            assert!(matches!(take(&out, &wire, &tx, &[&[i; 9], &[i; 1668]]), Poll::Ready(Ok(1677))));
        }
        assert_eq!(wire.writes.get(), 0, "nothing is written before the poll ends");
        let mut cx = Context::from_waker(Waker::noop());
        assert!(matches!(out.poll_drain(&wire, &tx, &mut cx), Poll::Ready(Ok(()))));
        assert_eq!(wire.writes.get(), 1);
        assert_eq!(tx.get(), 17_170);
        let bytes = wire.bytes.borrow();
        assert_eq!(bytes.len(), 17_170);
        assert!(bytes[..1717].iter().all(|b| *b == 0) && bytes[1717..3434].iter().all(|b| *b == 1), "order kept");
    }

    #[test]
    fn a_slow_socket_refuses_past_the_limit_and_resumes() {
        let (out, wire, tx) = (Coalescer::new(), Recorder::default(), Cell::new(0));
        let chunk = vec![7u8; 8 * 1024];
        let mut taken = 0;
        while let Poll::Ready(Ok(n)) = take(&out, &wire, &tx, &[&chunk]) {
            taken += n;
        }
        assert_eq!(taken, COALESCE_LIMIT, "gathers up to the limit while the socket takes nothing");
        assert!(out.refused.get(), "h2 must be polled again once the buffer drains");
        let mut cx = Context::from_waker(Waker::noop());
        wire.room.set(1000);
        assert!(out.poll_drain(&wire, &tx, &mut cx).is_pending(), "a partial write keeps the rest");
        wire.room.set(usize::MAX);
        assert!(matches!(out.poll_drain(&wire, &tx, &mut cx), Poll::Ready(Ok(()))));
        assert_eq!(wire.bytes.borrow().len(), COALESCE_LIMIT);
        assert_eq!(tx.get(), COALESCE_LIMIT as u64);
        assert!(matches!(take(&out, &wire, &tx, &[&chunk]), Poll::Ready(Ok(8192))));
    }

    #[test]
    fn a_large_write_with_nothing_gathered_goes_straight_through() {
        let (out, wire, tx) = (Coalescer::new(), Recorder::default(), Cell::new(0));
        wire.room.set(usize::MAX);
        let big = vec![1u8; COALESCE_DIRECT];
        assert!(matches!(take(&out, &wire, &tx, &[&[0; 9], &big]), Poll::Ready(Ok(n)) if n == COALESCE_DIRECT + 9));
        assert_eq!((wire.writes.get(), out.pending()), (1, 0));
        // behind gathered bytes it is gathered too, so the order holds
        assert!(matches!(take(&out, &wire, &tx, &[b"head"]), Poll::Ready(Ok(4))));
        assert!(matches!(take(&out, &wire, &tx, &[&big]), Poll::Ready(Ok(_))));
        assert_eq!(wire.writes.get(), 1);
        assert_eq!(out.pending(), 4 + COALESCE_DIRECT);
    }

    #[test]
    fn a_failed_socket_is_reported_at_the_next_write() {
        let (out, tx) = (Coalescer::new(), Cell::new(0));
        struct Broken;
        impl Wire for Broken {
            fn poll_write(&self, _: &mut Context<'_>, _: &[u8]) -> Poll<io::Result<usize>> {
                Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()))
            }
            fn poll_write_vectored(&self, _: &mut Context<'_>, _: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
                Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()))
            }
        }
        let mut cx = Context::from_waker(Waker::noop());
        assert!(matches!(out.poll_take(&Broken, &tx, &mut cx, &[io::IoSlice::new(b"x")]), Poll::Ready(Ok(1))));
        assert!(matches!(out.poll_drain(&Broken, &tx, &mut cx), Poll::Ready(Err(_))));
        assert_eq!(out.pending(), 0);
    }
}
