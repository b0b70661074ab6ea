//! Kernel backend: mio TCP sockets registered with the shard's reactor.

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::task::{Context, Poll};

use mio::net::{TcpListener, TcpStream};
use socket2::{Domain, Protocol, Socket, Type};

use crate::runtime::{reactor, Direction, IoToken, Reactor};

pub struct KernelStream {
    io: TcpStream,
    token: IoToken,
    reactor: Reactor,
    peer: SocketAddr,
    local: SocketAddr,
}

/// Runs a non-blocking operation, parking on readiness when it would block.
macro_rules! poll_io {
    ($self:ident, $cx:ident, $dir:expr, $op:expr) => {
        loop {
            std::task::ready!($self.reactor.poll_ready($self.token, $dir, $cx));
            match $op {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => $self.reactor.clear_ready($self.token, $dir),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return Poll::Ready(other),
            }
        }
    };
}

impl KernelStream {
    fn new(mut io: TcpStream, writable: bool) -> io::Result<KernelStream> {
        let reactor = reactor();
        let token = reactor.register_with(&mut io, writable)?;
        let local = io.local_addr()?;
        let peer = match io.peer_addr() {
            Ok(p) => p,
            // Connecting sockets learn their peer after the handshake.
            Err(_) => local,
        };
        Ok(KernelStream { io, token, reactor, peer, local })
    }

    pub fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let res = std::task::ready!(self.poll_read_inner(cx, buf));
        self.settle(Direction::Read, &res, buf.len());
        Poll::Ready(res)
    }

    fn poll_read_inner(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        poll_io!(self, cx, Direction::Read, (&self.io).read(buf))
    }

    pub fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let res = std::task::ready!(self.poll_write_inner(cx, buf));
        self.settle(Direction::Write, &res, buf.len());
        Poll::Ready(res)
    }

    fn poll_write_inner(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        poll_io!(self, cx, Direction::Write, (&self.io).write(buf))
    }

    pub fn poll_write_vectored(&self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let res = std::task::ready!(self.poll_write_vectored_inner(cx, bufs));
        self.settle(Direction::Write, &res, bufs.iter().map(|b| b.len()).sum());
        Poll::Ready(res)
    }

    fn poll_write_vectored_inner(&self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        poll_io!(self, cx, Direction::Write, (&self.io).write_vectored(bufs))
    }

    /// A short read or write means the kernel buffer was drained (or filled)
    /// at that moment; with edge-triggered epoll any later change raises a
    /// new event, so the next attempt can wait for it instead of spending a
    /// syscall on EAGAIN (nginx's `ready = 0` on short reads).  End of stream
    /// (0 bytes) stays ready so every later read sees it at once.
    fn settle(&self, dir: Direction, res: &io::Result<usize>, wanted: usize) {
        if let Ok(n) = res {
            if *n > 0 && *n < wanted {
                self.reactor.clear_ready(self.token, dir);
            }
        }
    }

    /// Ready when a read may make progress (data, FIN or error pending).
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.reactor.poll_ready(self.token, Direction::Read, cx)
    }

    pub fn shutdown_write(&self) -> io::Result<()> {
        match self.io.shutdown(Shutdown::Write) {
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            other => other,
        }
    }

    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// A parked upstream connection is usable if reading would block: no FIN,
    /// no reset, and no stray bytes (a stray response would desynchronise it).
    pub fn is_idle_usable(&self) -> bool {
        // The reactor already knows when the peer spoke or closed; asking the
        // kernel (a MSG_PEEK recvfrom) is needed only then.  A FIN that lands
        // after the last poll is the race every pooling proxy has: the request
        // fails before any response byte and the proxy retries it on a fresh
        // connection.
        if self.reactor.read_quiet(self.token) {
            return true;
        }
        let mut probe = [0u8; 1];
        matches!(self.io.peek(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

impl Drop for KernelStream {
    fn drop(&mut self) {
        self.reactor.deregister(&mut self.io, self.token);
    }
}

pub struct KernelListener {
    io: TcpListener,
    token: IoToken,
    reactor: Reactor,
    local: SocketAddr,
}

impl KernelListener {
    pub fn bind(addr: SocketAddr) -> io::Result<KernelListener> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(1024)?;
        let mut io = TcpListener::from_std(socket.into());
        let local = io.local_addr()?;
        let reactor = reactor();
        let token = reactor.register(&mut io)?;
        Ok(KernelListener { io, token, reactor, local })
    }

    pub fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(KernelStream, SocketAddr)>> {
        loop {
            std::task::ready!(self.reactor.poll_ready(self.token, Direction::Read, cx));
            match self.io.accept() {
                Ok((io, peer)) => {
                    let _ = io.set_nodelay(true);
                    return Poll::Ready(KernelStream::new(io, true).map(|s| (s, peer)));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.reactor.clear_ready(self.token, Direction::Read)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // ECONNABORTED and friends concern one connection, not the listener.
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for KernelListener {
    fn drop(&mut self) {
        self.reactor.deregister(&mut self.io, self.token);
    }
}

pub async fn connect(addr: SocketAddr) -> io::Result<KernelStream> {
    let io = TcpStream::connect(addr)?;
    io.set_nodelay(true)?;
    let mut stream = KernelStream::new(io, false)?;
    std::future::poll_fn(|cx| stream.reactor.poll_ready(stream.token, Direction::Write, cx)).await;
    if let Some(err) = stream.io.take_error()? {
        return Err(err);
    }
    match stream.io.peer_addr() {
        Ok(peer) => stream.peer = peer,
        Err(e) if e.kind() == io::ErrorKind::NotConnected => {
            return Err(io::Error::new(io::ErrorKind::ConnectionRefused, "connection refused"))
        }
        Err(e) => return Err(e),
    }
    stream.local = stream.io.local_addr()?;
    Ok(stream)
}
