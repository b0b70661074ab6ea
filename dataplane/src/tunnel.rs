//! Byte tunnels: two connections spliced together, one bounded buffer per
//! direction, half-close carried across, one idle timer for both directions.
//!
//! Used by the TCP proxy (`tcp_proxy`) and by HTTP/1.1 upgrades after the
//! `101 Switching Protocols` (`proxy::upgrade`).  It owns only the pumping;
//! what the bytes mean, which upstream they go to and which stats count them
//! are the caller's.  Ends are anything implementing [`Duplex`], so a TLS
//! connection layered on a `transport::Stream` plugs in the same way.
//!
//! Semantics (Envoy's tcp_proxy behaviour, kept for upgrades too):
//!
//! * A FIN read on one side is forwarded as a FIN (`shutdown_write`) on the
//!   other once the bytes before it were written; the other direction keeps
//!   flowing.  The tunnel ends when both directions have ended.
//! * A read error (reset) or write error on one direction ends the tunnel,
//!   except when the side `a` (the downstream) goes away while bytes it sent
//!   are still buffered for `b`: those are flushed to `b` first and then `b`
//!   is half-closed (Envoy's `upstream_flush_*`).
//! * The idle timeout fires when no byte moved in either direction for the
//!   whole period; the caller closes both connections.
//! * Each direction holds at most one buffer of bytes: a slow reader slows
//!   the writer down (backpressure), nothing grows without bound.

use std::cell::Cell;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::runtime::{now, sleep_until, Sleep};

/// One end of a tunnel: a poll-based, `&self` byte stream.
pub trait Duplex {
    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>>;
    /// Ready once a read would not wait (bytes, end of stream or an error).
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<()>;
    fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>>;
    /// Sends end-of-stream in the write direction (TCP FIN).
    fn shutdown_write(&self) -> io::Result<()>;
}

impl Duplex for crate::transport::Stream {
    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        crate::transport::Stream::poll_read(self, cx, buf)
    }
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        crate::transport::Stream::poll_read_ready(self, cx)
    }
    fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        crate::transport::Stream::poll_write(self, cx, buf)
    }
    fn shutdown_write(&self) -> io::Result<()> {
        crate::transport::Stream::shutdown_write(self)
    }
}

/// Counters the caller wants kept live while the tunnel runs (stats gauges
/// of buffered bytes, byte totals).  All methods default to doing nothing.
pub trait TunnelObserver {
    /// `n` bytes were read from `a` (towards `b`).
    fn a_read(&self, _n: usize) {}
    /// `n` bytes were written to `b`.
    fn b_written(&self, _n: usize) {}
    /// `n` bytes were read from `b` (towards `a`).
    fn b_read(&self, _n: usize) {}
    /// `n` bytes were written to `a`.
    fn a_written(&self, _n: usize) {}
    /// `a` went away with bytes still buffered for `b`; flushing starts.
    fn flush_started(&self) {}
    /// The flush that `flush_started` announced is over.
    fn flush_ended(&self) {}
}

/// The observer that observes nothing.
pub struct NoObserver;
impl TunnelObserver for NoObserver {}

/// How a tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelEnd {
    /// Both directions reached end of stream and were forwarded.
    Closed,
    /// No byte moved for the idle timeout.
    IdleTimeout,
    /// Side `a` failed (reset, write error).
    AFailed,
    /// Side `b` failed.
    BFailed,
}

/// Bytes moved, per direction, and bytes read but never delivered (the
/// tunnel ended on a failure with them buffered).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TunnelBytes {
    pub a_to_b: u64,
    pub b_to_a: u64,
    pub a_to_b_unsent: u64,
    pub b_to_a_unsent: u64,
}

/// Where a direction stopped.
enum PipeError {
    Read,
    Write,
}

/// One direction: bytes read from `from` wait in `buf[start..end]` until
/// written to `to`.
struct Pipe {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    eof: bool,
    done: bool,
    total: u64,
}

/// Reads and writes one direction does per poll before yielding, so a
/// tunnel that is always ready cannot starve the shard's other tasks.
const OPS_PER_POLL: usize = 32;

impl Pipe {
    fn new(size: usize, initial: &[u8]) -> Pipe {
        let mut buf = vec![0u8; size.max(initial.len())].into_boxed_slice();
        buf[..initial.len()].copy_from_slice(initial);
        Pipe { buf, start: 0, end: initial.len(), eof: false, done: false, total: 0 }
    }

    fn pending(&self) -> usize {
        self.end - self.start
    }

    fn poll<F: Duplex + ?Sized, T: Duplex + ?Sized>(
        &mut self,
        cx: &mut Context<'_>,
        from: &F,
        to: &T,
        moved: &mut bool,
        on_read: &dyn Fn(usize),
        on_write: &dyn Fn(usize),
    ) -> Poll<Result<(), PipeError>> {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        for _ in 0..OPS_PER_POLL {
            if self.start < self.end {
                match to.poll_write(cx, &self.buf[self.start..self.end]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(PipeError::Write)),
                    Poll::Ready(Ok(n)) => {
                        self.start += n;
                        self.total += n as u64;
                        *moved = true;
                        on_write(n);
                    }
                    Poll::Ready(Err(_)) => return Poll::Ready(Err(PipeError::Write)),
                    Poll::Pending => return Poll::Pending,
                }
                continue;
            }
            self.start = 0;
            self.end = 0;
            if self.eof {
                self.done = true;
                // The peer may already be gone; the other direction reports that.
                let _ = to.shutdown_write();
                return Poll::Ready(Ok(()));
            }
            match from.poll_read(cx, &mut self.buf) {
                Poll::Ready(Ok(0)) => self.eof = true,
                Poll::Ready(Ok(n)) => {
                    self.end = n;
                    *moved = true;
                    on_read(n);
                }
                Poll::Ready(Err(_)) => return Poll::Ready(Err(PipeError::Read)),
                Poll::Pending => return Poll::Pending,
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Splices `a` and `b` until both directions ended, one failed, or nothing
/// moved for `idle`.  `a_early` are bytes already read from `a` (e.g. what
/// followed an upgrade request's head), `b_early` bytes already read from `b`;
/// they are delivered first.  `buffer` is the per-direction buffer size.
pub async fn splice<A: Duplex + ?Sized, B: Duplex + ?Sized>(
    a: &A,
    b: &B,
    a_early: &[u8],
    b_early: &[u8],
    buffer: usize,
    idle: Option<Duration>,
    observer: &dyn TunnelObserver,
) -> (TunnelEnd, TunnelBytes) {
    let mut a_to_b = Pipe::new(buffer, a_early);
    let mut b_to_a = Pipe::new(buffer, b_early);
    let last_moved = Cell::new(now());
    let mut timer: Option<Sleep> = idle.map(|d| sleep_until(now() + d));
    // Once `a` failed with bytes still owed to `b`, only `a_to_b` is pumped.
    let mut flushing = false;
    let on_a_read = |n| observer.a_read(n);
    let on_b_written = |n| observer.b_written(n);
    let on_b_read = |n| observer.b_read(n);
    let on_a_written = |n| observer.a_written(n);
    let end = poll_fn(|cx| {
        let mut moved = false;
        let forward = a_to_b.poll(cx, a, b, &mut moved, &on_a_read, &on_b_written);
        if flushing {
            return match forward {
                Poll::Ready(Ok(())) => Poll::Ready(TunnelEnd::AFailed),
                Poll::Ready(Err(PipeError::Read)) => {
                    // Nothing left to read from the failed `a`: the buffer
                    // was written, half-close `b` and stop.
                    let _ = b.shutdown_write();
                    Poll::Ready(TunnelEnd::AFailed)
                }
                Poll::Ready(Err(PipeError::Write)) => Poll::Ready(TunnelEnd::BFailed),
                Poll::Pending if a_to_b.pending() == 0 => {
                    let _ = b.shutdown_write();
                    Poll::Ready(TunnelEnd::AFailed)
                }
                Poll::Pending => Poll::Pending,
            };
        }
        let forward_failed = match &forward {
            Poll::Ready(Err(PipeError::Read)) => Some(TunnelEnd::AFailed),
            Poll::Ready(Err(PipeError::Write)) => Some(TunnelEnd::BFailed),
            _ => None,
        };
        if let Some(end) = forward_failed {
            return Poll::Ready(end);
        }
        let backward = b_to_a.poll(cx, b, a, &mut moved, &on_b_read, &on_a_written);
        match backward {
            Poll::Ready(Err(PipeError::Read)) => return Poll::Ready(TunnelEnd::BFailed),
            Poll::Ready(Err(PipeError::Write)) => {
                if a_to_b.pending() > 0 {
                    flushing = true;
                    observer.flush_started();
                    // Keep pumping the owed bytes; the next poll decides.
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                return Poll::Ready(TunnelEnd::AFailed);
            }
            _ => {}
        }
        if a_to_b.done && b_to_a.done {
            return Poll::Ready(TunnelEnd::Closed);
        }
        if moved {
            last_moved.set(now());
        }
        if let (Some(timer), Some(idle)) = (timer.as_mut(), idle) {
            while Pin::new(&mut *timer).poll(cx).is_ready() {
                let due = last_moved.get() + idle;
                if now() >= due {
                    return Poll::Ready(TunnelEnd::IdleTimeout);
                }
                timer.reset(due);
            }
        }
        Poll::Pending
    })
    .await;
    if flushing {
        observer.flush_ended();
    }
    let bytes = TunnelBytes {
        a_to_b: a_to_b.total,
        b_to_a: b_to_a.total,
        a_to_b_unsent: a_to_b.pending() as u64,
        b_to_a_unsent: b_to_a.pending() as u64,
    };
    (end, bytes)
}

#[cfg(test)]
mod tests;
