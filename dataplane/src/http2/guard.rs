//! Flood protection for downstream HTTP/2 connections: the budgets `h2`
//! itself does not keep.
//!
//! `h2` 0.4 already ends these abuses with GOAWAY(ENHANCE_YOUR_CALM), given
//! the builder settings the connection manager sets:
//!
//! * CONTINUATION floods (the CVE-2024-27316 class): at most
//!   `max_header_list_size / max_frame_size` (+25 %, at least 5) CONTINUATION
//!   frames per header block, and a header block over the list size is
//!   refused as a whole;
//! * resets of streams the application has not accepted yet
//!   (`max_pending_accept_reset_streams`), streams it had to reset for
//!   protocol errors (`max_local_error_reset_streams`), floods of tiny DATA
//!   frames;
//! * PING and SETTINGS floods cannot grow memory: it keeps one pending PING
//!   ACK and one pending SETTINGS ACK and stops reading until they are written.
//!
//! What is left, and what this module owns:
//!
//! * **Premature resets** (CVE-2023-44487, "rapid reset"): a client that opens
//!   a stream and resets it at once makes the proxy start (and abandon) an
//!   upstream request for nothing; once the stream was accepted `h2` no longer
//!   counts it.  Envoy's rule (`overload.premature_reset_min_stream_lifetime_seconds`,
//!   1 s, and `overload.premature_reset_total_stream_count`, 500): a stream
//!   reset by the client before living the minimum lifetime is premature; once
//!   the connection has closed the total count of streams, it is closed when
//!   more than half of its closed streams were reset prematurely.
//! * **PING and SETTINGS rates**: `h2` answers a client that floods PINGs and
//!   reads the ACKs forever, at full CPU.  A token bucket per connection
//!   (`control_frame_burst`, refilled at `control_frames_per_second`) bounds
//!   the non-ACK PING and SETTINGS frames a client may send.
//! * **PRIORITY floods** (CVE-2019-9513): `h2` ignores PRIORITY, but each one is
//!   still a frame to parse; Envoy's `max_inbound_priority_frames_per_stream`
//!   (100 × (1 + opened streams) over the connection's life) applies.
//! * **Empty frames** (CVE-2019-9518): Envoy's
//!   `max_consecutive_inbound_frames_with_empty_payload` (1): consecutive
//!   DATA, HEADERS or CONTINUATION frames with no payload and no END_STREAM.
//!
//! How: [`FrameGuard`] is sans-IO.  It reads the 9-byte frame headers of both
//! directions of the byte stream (RFC 9113 §4.1) without copying payloads or
//! decoding anything, keeps the client-initiated streams that are still open
//! (bounded: `h2` refuses streams past `max_concurrent_streams`, and the table
//! is capped besides) and its budgets, and reports a [`Violation`].  Time is
//! passed in, so the unit tests run on a virtual clock.  [`GuardedIo`] wraps the
//! downstream socket under `h2::server`: it feeds the guard what is read and
//! written, and on a violation stops reading and wakes the connection task,
//! whose driver then calls `abrupt_shutdown(ENHANCE_YOUR_CALM)` (a GOAWAY with
//! the last stream it processed, RFC 9113 §6.8) and closes.
//!
//! It must not touch frame contents, HPACK state or streams: `h2` owns the
//! protocol, this module only counts.

use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The client connection preface (RFC 9113 §3.4) that precedes the frames.
pub const CLIENT_PREFACE_LEN: usize = 24;

const FRAME_HEADER_LEN: usize = 9;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const CONTINUATION: u8 = 0x9;

const FLAG_END_STREAM: u8 = 0x1;
/// ACK on SETTINGS and PING.
const FLAG_ACK: u8 = 0x1;

/// The budgets; the defaults are Envoy's where Envoy has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardLimits {
    /// A stream reset by the client younger than this is premature
    /// (Envoy's `overload.premature_reset_min_stream_lifetime_seconds`).
    pub premature_reset_min_stream_lifetime: Duration,
    /// Closed streams after which the premature share is checked
    /// (Envoy's `overload.premature_reset_total_stream_count`).
    pub premature_reset_total_stream_count: u32,
    /// Non-ACK PING + SETTINGS frames a client may send in a burst.
    pub control_frame_burst: u32,
    /// ... and per second after that.
    pub control_frames_per_second: u32,
    /// Envoy's `max_inbound_priority_frames_per_stream`.
    pub max_inbound_priority_frames_per_stream: u32,
    /// Envoy's `max_consecutive_inbound_frames_with_empty_payload`.
    pub max_consecutive_inbound_frames_with_empty_payload: u32,
    /// Open client streams tracked for the premature-reset rule; past it the
    /// oldest is forgotten (counted as closed normally).  Above any sane
    /// `max_concurrent_streams`, so only a peer ignoring it reaches it.
    pub max_tracked_streams: usize,
}

impl Default for GuardLimits {
    fn default() -> Self {
        GuardLimits {
            premature_reset_min_stream_lifetime: Duration::from_secs(1),
            premature_reset_total_stream_count: 500,
            control_frame_burst: 1000,
            control_frames_per_second: 100,
            max_inbound_priority_frames_per_stream: 100,
            max_consecutive_inbound_frames_with_empty_payload: 1,
            max_tracked_streams: 4096,
        }
    }
}

/// Why a connection must go.  All are answered with GOAWAY(ENHANCE_YOUR_CALM).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    PrematureResets { premature: u32, closed: u32 },
    PingFlood,
    SettingsFlood,
    PriorityFlood,
    EmptyFrameFlood,
}

impl Violation {
    /// GOAWAY debug data and log text.
    pub fn as_str(&self) -> &'static str {
        match self {
            Violation::PrematureResets { .. } => "too_many_premature_resets",
            Violation::PingFlood => "too_many_pings",
            Violation::SettingsFlood => "too_many_settings",
            Violation::PriorityFlood => "too_many_priority_frames",
            Violation::EmptyFrameFlood => "too_many_empty_frames",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FrameHead {
    len: u32,
    kind: u8,
    flags: u8,
    stream_id: u32,
}

/// Splits one direction of a connection into frame headers; payload bytes are
/// skipped, never copied.
#[derive(Debug)]
struct FrameScanner {
    /// Bytes still to pass over (the preface, or the rest of a payload).
    skip: usize,
    head: [u8; FRAME_HEADER_LEN],
    filled: usize,
}

impl FrameScanner {
    fn new(skip: usize) -> Self {
        FrameScanner { skip, head: [0; FRAME_HEADER_LEN], filled: 0 }
    }

    /// Calls `on_head` for each frame header completed by `bytes`.
    fn feed(&mut self, mut bytes: &[u8], mut on_head: impl FnMut(FrameHead)) {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (FRAME_HEADER_LEN - self.filled).min(bytes.len());
            self.head[self.filled..self.filled + n].copy_from_slice(&bytes[..n]);
            self.filled += n;
            bytes = &bytes[n..];
            if self.filled == FRAME_HEADER_LEN {
                self.filled = 0;
                let h = &self.head;
                let head = FrameHead {
                    len: u32::from_be_bytes([0, h[0], h[1], h[2]]),
                    kind: h[3],
                    flags: h[4],
                    stream_id: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
                };
                self.skip = head.len as usize;
                on_head(head);
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct OpenStream {
    id: u32,
    opened: Instant,
    client_done: bool,
    server_done: bool,
}

/// The per-connection budgets over both directions of the frame stream.
#[derive(Debug)]
pub struct FrameGuard {
    limits: GuardLimits,
    inbound: FrameScanner,
    outbound: FrameScanner,
    /// Client-initiated streams still open, ascending by id.
    open: Vec<OpenStream>,
    highest_client_stream: u32,
    streams_opened: u32,
    closed: u32,
    premature: u32,
    priority_frames: u64,
    consecutive_empty: u32,
    /// Control-frame tokens in thousandths, and when last refilled.
    control_milli_tokens: u64,
    refilled_at: Option<Instant>,
    violation: Option<Violation>,
}

impl FrameGuard {
    /// `preface_pending`: whether the bytes that will be fed inbound start
    /// with the client preface (false when the caller consumed it already).
    pub fn new(limits: GuardLimits, preface_pending: bool) -> Self {
        FrameGuard {
            limits,
            inbound: FrameScanner::new(if preface_pending { CLIENT_PREFACE_LEN } else { 0 }),
            outbound: FrameScanner::new(0),
            open: Vec::new(),
            highest_client_stream: 0,
            streams_opened: 0,
            closed: 0,
            premature: 0,
            priority_frames: 0,
            consecutive_empty: 0,
            control_milli_tokens: u64::from(limits.control_frame_burst) * 1000,
            refilled_at: None,
            violation: None,
        }
    }

    pub fn violation(&self) -> Option<Violation> {
        self.violation
    }

    /// Streams closed so far, and how many of them the client reset prematurely.
    pub fn closed_streams(&self) -> (u32, u32) {
        (self.closed, self.premature)
    }

    /// Bytes read from the client.  Returns the violation once there is one
    /// (it stays).
    pub fn on_inbound(&mut self, bytes: &[u8], now: Instant) -> Option<Violation> {
        let mut inbound = std::mem::replace(&mut self.inbound, FrameScanner::new(0));
        inbound.feed(bytes, |head| self.inbound_frame(head, now));
        self.inbound = inbound;
        self.violation
    }

    /// Bytes written to the client (only END_STREAM and RST_STREAM matter).
    pub fn on_outbound(&mut self, bytes: &[u8], now: Instant) -> Option<Violation> {
        let mut outbound = std::mem::replace(&mut self.outbound, FrameScanner::new(0));
        outbound.feed(bytes, |head| self.outbound_frame(head, now));
        self.outbound = outbound;
        self.violation
    }

    fn inbound_frame(&mut self, head: FrameHead, now: Instant) {
        if self.violation.is_some() {
            return;
        }
        let end_stream = head.flags & FLAG_END_STREAM != 0;
        if matches!(head.kind, DATA | HEADERS | CONTINUATION)
            && head.len == 0
            && !(end_stream && head.kind != CONTINUATION)
        {
            self.consecutive_empty += 1;
            if self.consecutive_empty > self.limits.max_consecutive_inbound_frames_with_empty_payload {
                self.violation = Some(Violation::EmptyFrameFlood);
                return;
            }
        } else {
            self.consecutive_empty = 0;
        }
        match head.kind {
            HEADERS if head.stream_id % 2 == 1 && head.stream_id > self.highest_client_stream => {
                self.highest_client_stream = head.stream_id;
                self.streams_opened = self.streams_opened.saturating_add(1);
                if self.open.len() >= self.limits.max_tracked_streams {
                    self.open.remove(0);
                    self.count_closed(false);
                }
                self.open.push(OpenStream {
                    id: head.stream_id,
                    opened: now,
                    client_done: end_stream,
                    server_done: false,
                });
            }
            HEADERS | DATA if end_stream => self.half_close(head.stream_id, true),
            RST_STREAM => {
                if let Some(i) = self.find(head.stream_id) {
                    let stream = self.open.remove(i);
                    let premature =
                        now.saturating_duration_since(stream.opened) < self.limits.premature_reset_min_stream_lifetime;
                    self.count_closed(premature);
                }
            }
            PING | SETTINGS if head.flags & FLAG_ACK == 0 => self.spend_control_token(head.kind, now),
            PRIORITY => {
                self.priority_frames += 1;
                let budget = u64::from(self.limits.max_inbound_priority_frames_per_stream)
                    * (1 + u64::from(self.streams_opened));
                if self.priority_frames > budget {
                    self.violation = Some(Violation::PriorityFlood);
                }
            }
            _ => {}
        }
    }

    fn outbound_frame(&mut self, head: FrameHead, _now: Instant) {
        match head.kind {
            HEADERS | DATA if head.flags & FLAG_END_STREAM != 0 => self.half_close(head.stream_id, false),
            // The server ended the stream (REFUSED_STREAM, errors, cancelled
            // upstream): not the client's doing, never premature.
            RST_STREAM => {
                if let Some(i) = self.find(head.stream_id) {
                    self.open.remove(i);
                    self.count_closed(false);
                }
            }
            _ => {}
        }
    }

    fn find(&self, stream_id: u32) -> Option<usize> {
        self.open.binary_search_by_key(&stream_id, |s| s.id).ok()
    }

    fn half_close(&mut self, stream_id: u32, by_client: bool) {
        let Some(i) = self.find(stream_id) else { return };
        let stream = &mut self.open[i];
        if by_client {
            stream.client_done = true;
        } else {
            stream.server_done = true;
        }
        if stream.client_done && stream.server_done {
            self.open.remove(i);
            self.count_closed(false);
        }
    }

    fn count_closed(&mut self, premature: bool) {
        self.closed = self.closed.saturating_add(1);
        if premature {
            self.premature = self.premature.saturating_add(1);
        }
        if self.closed >= self.limits.premature_reset_total_stream_count
            && u64::from(self.premature) * 2 > u64::from(self.closed)
            && self.violation.is_none()
        {
            self.violation = Some(Violation::PrematureResets { premature: self.premature, closed: self.closed });
        }
    }

    fn spend_control_token(&mut self, kind: u8, now: Instant) {
        let capacity = u64::from(self.limits.control_frame_burst) * 1000;
        if let Some(then) = self.refilled_at {
            let elapsed_ms = now.saturating_duration_since(then).as_millis().min(u128::from(u32::MAX)) as u64;
            let earned = elapsed_ms * u64::from(self.limits.control_frames_per_second);
            self.control_milli_tokens = (self.control_milli_tokens + earned).min(capacity);
        }
        self.refilled_at = Some(now);
        if self.control_milli_tokens >= 1000 {
            self.control_milli_tokens -= 1000;
        } else {
            self.violation = Some(if kind == PING { Violation::PingFlood } else { Violation::SettingsFlood });
        }
    }
}

/// What the connection driver holds: whether the guard tripped.
#[derive(Debug, Clone, Default)]
pub struct GuardHandle(Rc<Cell<Option<Violation>>>);

impl GuardHandle {
    pub fn violation(&self) -> Option<Violation> {
        self.0.get()
    }
}

/// The downstream socket as `h2::server` sees it, with a [`FrameGuard`] on
/// both directions.  After a violation it reads nothing more (the flood is no
/// longer parsed) and writes on, so `h2` can send its GOAWAY.
pub struct GuardedIo<S> {
    inner: S,
    guard: FrameGuard,
    handle: GuardHandle,
    clock: fn() -> Instant,
}

impl<S> GuardedIo<S> {
    /// `clock` is the shard loop's clock (`runtime::now`) in the proxy.
    pub fn new(inner: S, limits: GuardLimits, preface_pending: bool, clock: fn() -> Instant) -> (Self, GuardHandle) {
        let handle = GuardHandle::default();
        let io = GuardedIo { inner, guard: FrameGuard::new(limits, preface_pending), handle: handle.clone(), clock };
        (io, handle)
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    fn note(&mut self, violation: Option<Violation>) -> bool {
        if violation.is_some() && self.handle.0.get().is_none() {
            self.handle.0.set(violation);
            if let Some(v) = violation {
                tracing::debug!(reason = v.as_str(), "http2 guard: closing the connection");
            }
            return true;
        }
        false
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for GuardedIo<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.handle.0.get().is_some() {
            // The driver was woken when it tripped; it is shutting down.
            return Poll::Pending;
        }
        let before = buf.filled().len();
        std::task::ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let now = (self.clock)();
        let violation = self.guard.on_inbound(&buf.filled()[before..], now);
        if self.note(violation) {
            // h2 will read again and get Pending; make sure the task runs
            // again so the driver sees the handle.
            cx.waker().wake_by_ref();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for GuardedIo<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let n = std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, buf))?;
        let now = (self.clock)();
        let violation = self.guard.on_outbound(&buf[..n], now);
        if self.note(violation) {
            cx.waker().wake_by_ref();
        }
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let n = std::task::ready!(Pin::new(&mut self.inner).poll_write_vectored(cx, bufs))?;
        let now = (self.clock)();
        let mut left = n;
        let mut violation = None;
        for b in bufs {
            if left == 0 {
                break;
            }
            let take = left.min(b.len());
            violation = self.guard.on_outbound(&b[..take], now);
            left -= take;
        }
        if self.note(violation) {
            cx.waker().wake_by_ref();
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
