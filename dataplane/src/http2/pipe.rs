//! A bounded in-memory duplex byte pipe between two tasks of one shard,
//! and `Bridged`, the connection the HTTP/1 connection manager serves when
//! it handles one HTTP/2 stream (see the module essay in `http2/mod.rs`).
//!
//! Each direction holds at most `capacity` bytes; a writer facing a full
//! direction waits (backpressure), so a stream's body never sits whole in
//! memory.  Dropping an end closes both directions for the other end: its
//! reads see end of stream, its writes fail with `BrokenPipe` (a cancelled
//! stream cancels the exchange behind it).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use crate::tls::Conn;

/// What a direction reserves at its first write.
const FIRST_RESERVE: usize = 4096;

#[derive(Default)]
struct Direction {
    bytes: VecDeque<u8>,
    /// The writer shut down (or dropped): reads drain, then see EOF.
    write_closed: bool,
    /// The reader dropped: writes fail.
    read_closed: bool,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

impl Direction {
    fn wake_reader(&mut self) {
        if let Some(w) = self.reader.take() {
            w.wake();
        }
    }
    fn wake_writer(&mut self) {
        if let Some(w) = self.writer.take() {
            w.wake();
        }
    }
}

struct Shared {
    capacity: usize,
    /// Index 0: written by end A, read by end B; index 1 the other way.
    dirs: [RefCell<Direction>; 2],
}

/// One end of a pipe.
pub struct PipeEnd {
    shared: Rc<Shared>,
    /// Which direction this end writes (it reads the other one).
    writes: usize,
}

/// A pipe's two ends, each direction bounded to `capacity` bytes.
pub fn pipe(capacity: usize) -> (PipeEnd, PipeEnd) {
    let shared = Rc::new(Shared { capacity, dirs: Default::default() });
    (PipeEnd { shared: shared.clone(), writes: 0 }, PipeEnd { shared, writes: 1 })
}

impl PipeEnd {
    fn inbound(&self) -> &RefCell<Direction> {
        &self.shared.dirs[1 - self.writes]
    }
    fn outbound(&self) -> &RefCell<Direction> {
        &self.shared.dirs[self.writes]
    }

    pub fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let mut d = self.inbound().borrow_mut();
        if d.bytes.is_empty() {
            if d.write_closed || buf.is_empty() {
                return Poll::Ready(Ok(0));
            }
            d.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = buf.len().min(d.bytes.len());
        let (a, b) = d.bytes.as_slices();
        let from_a = n.min(a.len());
        buf[..from_a].copy_from_slice(&a[..from_a]);
        buf[from_a..n].copy_from_slice(&b[..n - from_a]);
        d.bytes.drain(..n);
        d.wake_writer();
        Poll::Ready(Ok(n))
    }

    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut d = self.inbound().borrow_mut();
        if !d.bytes.is_empty() || d.write_closed {
            return Poll::Ready(());
        }
        d.reader = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Bytes waiting to be read.
    pub fn readable(&self) -> usize {
        self.inbound().borrow().bytes.len()
    }

    pub fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let mut d = self.outbound().borrow_mut();
        if d.read_closed || d.write_closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let free = self.shared.capacity.saturating_sub(d.bytes.len());
        if free == 0 {
            d.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = free.min(buf.len());
        if d.bytes.capacity() == 0 {
            // A response head and a small body in one allocation, instead of
            // growing through every size on the way.
            d.bytes.reserve(self.shared.capacity.min(FIRST_RESERVE).max(n));
        }
        d.bytes.extend(&buf[..n]);
        d.wake_reader();
        Poll::Ready(Ok(n))
    }

    pub fn poll_write_vectored(&self, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let mut total = 0;
        for b in bufs.iter().filter(|b| !b.is_empty()) {
            match self.poll_write(cx, b) {
                Poll::Ready(Ok(n)) => {
                    total += n;
                    if n < b.len() {
                        break;
                    }
                }
                Poll::Ready(Err(e)) if total == 0 => return Poll::Ready(Err(e)),
                Poll::Pending if total == 0 => return Poll::Pending,
                _ => break,
            }
        }
        Poll::Ready(Ok(total))
    }

    pub async fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let n = std::future::poll_fn(|cx| self.poll_write(cx, buf)).await?;
            buf = &buf[n..];
        }
        Ok(())
    }

    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_read(cx, buf)).await
    }

    /// Ready once the other end is dropped (nothing written from here will
    /// be read any more): how a stream's worker learns that the exchange
    /// behind it was abandoned.
    pub fn poll_peer_gone(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut d = self.outbound().borrow_mut();
        if d.read_closed {
            return Poll::Ready(());
        }
        d.writer = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Ends this end's writing: the other end reads what is left, then EOF.
    pub fn shutdown_write(&self) {
        let mut d = self.outbound().borrow_mut();
        d.write_closed = true;
        d.wake_reader();
    }
}

impl Drop for PipeEnd {
    fn drop(&mut self) {
        self.shutdown_write();
        let mut d = self.inbound().borrow_mut();
        d.read_closed = true;
        d.bytes.clear();
        d.wake_writer();
    }
}

impl crate::tunnel::Duplex for PipeEnd {
    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        PipeEnd::poll_read(self, cx, buf)
    }
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        PipeEnd::poll_read_ready(self, cx)
    }
    fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        PipeEnd::poll_write(self, cx, buf)
    }
    fn shutdown_write(&self) -> io::Result<()> {
        PipeEnd::shutdown_write(self);
        Ok(())
    }
}

/// The connection one bridged HTTP/2 stream presents to the HTTP/1
/// connection manager: bytes through a pipe, addresses and TLS identity
/// from the real downstream connection.
pub struct Bridged {
    pub(crate) end: PipeEnd,
    pub(crate) outer: Rc<Conn>,
}

impl Bridged {
    pub fn peer_addr(&self) -> SocketAddr {
        self.outer.peer_addr()
    }
    pub fn local_addr(&self) -> SocketAddr {
        self.outer.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    fn cx() -> Context<'static> {
        Context::from_waker(Waker::noop())
    }

    #[test]
    fn bounded_then_drains_then_eof() {
        let (a, b) = pipe(4);
        let mut cx = cx();
        assert!(matches!(a.poll_write(&mut cx, b"hello"), Poll::Ready(Ok(4))));
        assert!(a.poll_write(&mut cx, b"o").is_pending(), "full direction pushes back");
        let mut buf = [0u8; 8];
        assert!(matches!(b.poll_read(&mut cx, &mut buf), Poll::Ready(Ok(4))));
        assert_eq!(&buf[..4], b"hell");
        assert!(b.poll_read(&mut cx, &mut buf).is_pending());
        a.shutdown_write();
        assert!(matches!(b.poll_read(&mut cx, &mut buf), Poll::Ready(Ok(0))));
    }

    #[test]
    fn dropped_reader_breaks_writes() {
        let (a, b) = pipe(16);
        drop(b);
        let mut cx = cx();
        assert!(matches!(a.poll_write(&mut cx, b"x"), Poll::Ready(Err(_))));
        let mut buf = [0u8; 2];
        assert!(matches!(a.poll_read(&mut cx, &mut buf), Poll::Ready(Ok(0))));
    }
}
