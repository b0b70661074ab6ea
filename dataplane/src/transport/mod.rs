//! The transport contract: listeners, streams and connectors that the proxy
//! uses without knowing which network stack is underneath.
//!
//! Two backends implement it: `kernel` (mio sockets, epoll) now, and the
//! userspace backend (smoltcp over a DPDK queue pair) with the DPDK issue.
//! The contract, which every backend must honour (and the shared transport
//! test suite checks):
//!
//! * All operations are poll-based, non-blocking and called only from the
//!   shard thread that created the object; wakeups come from that shard's loop.
//! * `poll_read` returns `Ok(0)` only at end of stream (peer FIN); a reset is
//!   an `Err`.  `poll_write`/`poll_write_vectored` may write partially.
//! * Both directions can be used concurrently from two futures of the same
//!   task (methods take `&self`), which is how request and response bodies
//!   are pumped at the same time.
//! * `poll_read_ready` resolves when a read may make progress, so an idle
//!   connection can wait without a buffer.
//! * `shutdown_write` sends FIN (half-close); dropping the stream closes it.
//! * `connect` resolves when the connection is established or has failed;
//!   callers put their own timeout around it.
//! * `is_idle_usable` tells a connection pool whether a parked connection is
//!   still open and has no unexpected bytes waiting.
//!
//! Backends are an enum rather than a trait object: one branch per call, no
//! allocation, and the proxy code stays non-generic.

pub mod kernel;
pub mod userspace;

use std::cell::RefCell;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A bidirectional byte stream (one TCP connection).
pub enum Stream {
    Kernel(kernel::KernelStream),
    Userspace(userspace::UserspaceStream),
}

/// A listening socket owned by one shard.
pub enum Listener {
    Kernel(kernel::KernelListener),
    Userspace(userspace::UserspaceListener),
}

impl Stream {
    pub fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        match self {
            Stream::Kernel(s) => s.poll_read(cx, buf),
            Stream::Userspace(s) => s.poll_read(cx, buf),
        }
    }

    pub fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self {
            Stream::Kernel(s) => s.poll_write(cx, buf),
            Stream::Userspace(s) => s.poll_write(cx, buf),
        }
    }

    pub fn poll_write_vectored(&self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        match self {
            Stream::Kernel(s) => s.poll_write_vectored(cx, bufs),
            Stream::Userspace(s) => s.poll_write_vectored(cx, bufs),
        }
    }

    /// Ready when a read may make progress; lets an idle connection wait
    /// without holding a receive buffer.
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        match self {
            Stream::Kernel(s) => s.poll_read_ready(cx),
            Stream::Userspace(s) => s.poll_read_ready(cx),
        }
    }

    pub fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Stream::Kernel(s) => s.shutdown_write(),
            Stream::Userspace(s) => s.shutdown_write(),
        }
    }

    pub fn peer_addr(&self) -> SocketAddr {
        match self {
            Stream::Kernel(s) => s.peer_addr(),
            Stream::Userspace(s) => s.peer_addr(),
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        match self {
            Stream::Kernel(s) => s.local_addr(),
            Stream::Userspace(s) => s.local_addr(),
        }
    }

    pub fn is_idle_usable(&self) -> bool {
        match self {
            Stream::Kernel(s) => s.is_idle_usable(),
            Stream::Userspace(s) => s.is_idle_usable(),
        }
    }

    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        poll_fn(|cx| self.poll_read(cx, buf)).await
    }

    pub async fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let n = poll_fn(|cx| self.poll_write(cx, buf)).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            buf = &buf[n..];
        }
        Ok(())
    }

    /// Writes every byte of `parts` in order, with as few syscalls as the
    /// socket allows (one `writev` in the common case).
    pub async fn write_all_vectored(&self, parts: &[&[u8]]) -> io::Result<()> {
        let mut idx = 0;
        let mut offset = 0;
        while idx < parts.len() {
            if parts[idx].len() == offset {
                idx += 1;
                offset = 0;
                continue;
            }
            let n = poll_fn(|cx| {
                let mut slices = [IoSlice::new(&[]); 8];
                let mut count = 0;
                for (i, p) in parts[idx..].iter().enumerate() {
                    if count == slices.len() {
                        break;
                    }
                    let p = if i == 0 { &p[offset..] } else { p };
                    if !p.is_empty() {
                        slices[count] = IoSlice::new(p);
                        count += 1;
                    }
                }
                self.poll_write_vectored(cx, &slices[..count])
            })
            .await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            let mut left = n;
            while left > 0 && idx < parts.len() {
                let avail = parts[idx].len() - offset;
                if left >= avail {
                    left -= avail;
                    idx += 1;
                    offset = 0;
                } else {
                    offset += left;
                    left = 0;
                }
            }
        }
        Ok(())
    }
}

impl Listener {
    pub fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(Stream, SocketAddr)>> {
        match self {
            Listener::Kernel(l) => l.poll_accept(cx).map_ok(|(s, a)| (Stream::Kernel(s), a)),
            Listener::Userspace(l) => l.poll_accept(cx).map_ok(|(s, a)| (Stream::Userspace(s), a)),
        }
    }

    pub async fn accept(&self) -> io::Result<(Stream, SocketAddr)> {
        poll_fn(|cx| self.poll_accept(cx)).await
    }

    pub fn local_addr(&self) -> SocketAddr {
        match self {
            Listener::Kernel(l) => l.local_addr(),
            Listener::Userspace(l) => l.local_addr(),
        }
    }
}

/// Binds a listener for this shard on `addr` (SO_REUSEPORT, so every shard
/// binds the same address and the kernel spreads connections).  When the
/// shard runs a userspace stack, its address and 0.0.0.0 are served by it.
pub fn bind(addr: SocketAddr) -> io::Result<Listener> {
    if let Some(stack) = userspace::current() {
        let ip = addr.ip();
        if ip.is_unspecified() && addr.is_ipv4() || ip == std::net::IpAddr::V4(stack.config().addr) {
            return stack.bind(addr).map(Listener::Userspace);
        }
    }
    kernel::KernelListener::bind(addr).map(Listener::Kernel)
}

/// Opens a connection to `addr` on the backend that reaches it: the
/// userspace stack for its subnet (or everything but loopback behind its
/// gateway), kernel sockets otherwise.
pub async fn connect(addr: SocketAddr) -> io::Result<Stream> {
    if let (Some(stack), SocketAddr::V4(v4)) = (userspace::current(), addr) {
        if stack.config().routes(*v4.ip()) {
            return stack.connect(addr).await.map(Stream::Userspace);
        }
    }
    kernel::connect(addr).await.map(Stream::Kernel)
}

/// Most bytes one read through [`read_into`] takes.
const LANDING_BYTES: usize = 16 * 1024;

thread_local! {
    /// The shard's landing space for reads into a tokio `ReadBuf`, zeroed
    /// once (see [`read_into`]).
    static LANDING: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Fills a tokio `ReadBuf` with one read done by `read`, in safe code.
///
/// `h2` and `tokio-rustls` hand out a `ReadBuf` over uninitialised memory,
/// fresh for every read, and a safe reader must initialise what it lends to
/// the socket: `initialize_unfilled` zeroed the whole free capacity (4 KiB
/// and more) on every call, on `Pending` calls too, for a read that is often
/// a few hundred bytes.  Reading into this shard-wide buffer (zeroed once,
/// borrowed only for the synchronous read) and copying what arrived costs
/// a copy of the bytes read instead.
pub fn read_into(
    buf: &mut tokio::io::ReadBuf<'_>,
    read: impl FnOnce(&mut [u8]) -> Poll<io::Result<usize>>,
) -> Poll<io::Result<usize>> {
    let want = buf.remaining().min(LANDING_BYTES);
    if want == 0 {
        return Poll::Ready(Ok(0));
    }
    LANDING.with_borrow_mut(|landing| {
        if landing.len() < LANDING_BYTES {
            landing.resize(LANDING_BYTES, 0);
        }
        let n = std::task::ready!(read(&mut landing[..want]))?;
        buf.put_slice(&landing[..n]);
        Poll::Ready(Ok(n))
    })
}

// tokio's I/O traits let `h2` and `tokio-rustls` run over any backend.
impl tokio::io::AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut tokio::io::ReadBuf<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(read_into(buf, |landing| Stream::poll_read(&self, cx, landing)))?;
        Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Stream::poll_write(&self, cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Stream::poll_write_vectored(&self, cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        true
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.shutdown_write())
    }
}

#[cfg(test)]
pub(crate) mod tests;
