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

use std::cell::Cell;
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
}

impl H2Io {
    /// An upstream connection (no prefix; its byte counts are the caller's).
    pub(crate) fn new(conn: Rc<Conn>, rx_bytes: Rc<Cell<u64>>, tx_bytes: Rc<Cell<u64>>) -> H2Io {
        H2Io { conn, prefix: Vec::new(), prefix_at: 0, rx_bytes, tx_bytes }
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
        let n = std::task::ready!(self.conn.poll_read(cx, buf.initialize_unfilled()))?;
        buf.advance(n);
        self.rx_bytes.set(self.rx_bytes.get() + n as u64);
        Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for H2Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let n = std::task::ready!(self.conn.poll_write(cx, buf))?;
        self.tx_bytes.set(self.tx_bytes.get() + n as u64);
        Poll::Ready(Ok(n))
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let n = std::task::ready!(self.conn.poll_write_vectored(cx, bufs))?;
        self.tx_bytes.set(self.tx_bytes.get() + n as u64);
        Poll::Ready(Ok(n))
    }
    fn is_write_vectored(&self) -> bool {
        true
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
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
    let io = H2Io { conn: conn.clone(), prefix, prefix_at: 0, rx_bytes: rx_bytes.clone(), tx_bytes: tx_bytes.clone() };
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
        let event = std::future::poll_fn(|cx| {
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
            Poll::Pending
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
                let ctx = ctx.clone();
                let outer = conn.clone();
                spawn(async move {
                    let _guard = guard;
                    bridge::serve_stream(&ctx, &current, outer, peer, req, respond).await;
                })
                .detach();
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
