//! `TlsStream`: a rustls connection driven sans-IO over a `transport::Stream`
//! (`read_tls` / `process_new_packets` / `write_tls` called from the poll
//! methods), and `Conn`, the plain-or-TLS connection the proxies use.
//!
//! Both directions may be polled concurrently from two futures of one task
//! (the transport contract), so the rustls state sits in a `RefCell` that is
//! borrowed only inside one poll call; poll calls never nest.
//!
//! Write contract: `poll_write` returns `Ready(n)` only once the TLS records
//! carrying those `n` bytes were handed to the socket.  When the socket
//! pushes back after rustls accepted the plaintext, the call returns
//! `Pending` and remembers `n`; the caller's retry (callers retry with the
//! same bytes, as every writer in the proxy does) completes the flush and
//! gets `Ready(n)`.  Nothing is left buffered inside rustls when a writer
//! moves on, so a connection can close right after its last write.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::task::{Context, Poll, Waker};

use rustls::Connection;

use crate::transport::Stream;

/// `io::Read`/`io::Write` over the non-blocking stream for rustls:
/// `Pending` becomes `WouldBlock` (the waker is registered by the poll).
pub(crate) struct SyncIo<'a, 'b> {
    pub(crate) stream: &'a Stream,
    pub(crate) cx: &'a mut Context<'b>,
}

impl Read for SyncIo<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.stream.poll_read(self.cx, buf) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for SyncIo<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.stream.poll_write(self.cx, buf) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self.stream.poll_write_vectored(self.cx, bufs) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A TLS connection (server or client side) over a kernel or userspace stream.
pub struct TlsStream {
    stream: Stream,
    tls: RefCell<Connection>,
    /// Plaintext bytes accepted by rustls whose records are not yet on the
    /// socket (see the write contract above).
    accepted: Cell<Option<usize>>,
    /// The peer's end of stream (TCP FIN, or close_notify) was seen.
    read_eof: Cell<bool>,
    /// The verified peer certificate's identity (set once, after the handshake).
    peer: RefCell<Option<super::PeerIdentity>>,
    /// URI SANs of the certificate this side presented (XFCC `By`).
    local_uri_sans: RefCell<std::rc::Rc<[String]>>,
}

impl TlsStream {
    pub fn new(stream: Stream, tls: Connection) -> TlsStream {
        TlsStream {
            stream,
            tls: RefCell::new(tls),
            accepted: Cell::new(None),
            read_eof: Cell::new(false),
            peer: RefCell::new(None),
            local_uri_sans: RefCell::new(std::rc::Rc::from([])),
        }
    }

    pub(crate) fn set_local_uri_sans(&self, sans: std::rc::Rc<[String]>) {
        *self.local_uri_sans.borrow_mut() = sans;
    }

    pub fn local_uri_sans(&self) -> std::rc::Rc<[String]> {
        self.local_uri_sans.borrow().clone()
    }

    pub(crate) fn set_peer(&self, peer: Option<super::PeerIdentity>) {
        *self.peer.borrow_mut() = peer;
    }

    /// The peer certificate's identity, when the peer presented a verified one.
    pub fn peer(&self) -> std::cell::Ref<'_, Option<super::PeerIdentity>> {
        self.peer.borrow()
    }

    /// The ALPN protocol agreed on, if any (`h2` will select HTTP/2).
    pub fn alpn_protocol(&self) -> Option<Vec<u8>> {
        self.tls.borrow().alpn_protocol().map(<[u8]>::to_vec)
    }

    pub fn connection(&self) -> std::cell::Ref<'_, Connection> {
        self.tls.borrow()
    }

    /// Writes every pending TLS record; `Ready(Err)` on a socket error.
    fn poll_flush_tls(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut tls = self.tls.borrow_mut();
        while tls.wants_write() {
            match tls.write_tls(&mut SyncIo { stream: &self.stream, cx }) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Reads and processes TLS records until rustls has something for the
    /// reader (plaintext, or end of stream), sending whatever it answers.
    fn poll_fill(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            // Alerts and key updates rustls wants to send; a full socket
            // only delays them (the write waker is registered).
            if let Poll::Ready(Err(e)) = self.poll_flush_tls(cx) {
                return Poll::Ready(Err(e));
            }
            let mut tls = self.tls.borrow_mut();
            let n = match tls.read_tls(&mut SyncIo { stream: &self.stream, cx }) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                Err(e) => return Poll::Ready(Err(e)),
            };
            if n == 0 {
                self.read_eof.set(true);
            }
            match tls.process_new_packets() {
                Ok(state) if state.plaintext_bytes_to_read() > 0 || state.peer_has_closed() || n == 0 => {
                    return Poll::Ready(Ok(()));
                }
                Ok(_) => {}
                Err(e) => {
                    drop(tls);
                    let _ = self.poll_flush_tls(cx);
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
                }
            }
        }
    }

    /// Drives the handshake to completion (either side).
    pub async fn handshake(&self) -> io::Result<()> {
        poll_fn(|cx| loop {
            std::task::ready!(self.poll_flush_tls(cx))?;
            let mut tls = self.tls.borrow_mut();
            if !tls.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            let n = match tls.read_tls(&mut SyncIo { stream: &self.stream, cx }) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                Err(e) => return Poll::Ready(Err(e)),
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
            if let Err(e) = tls.process_new_packets() {
                drop(tls);
                let _ = self.poll_flush_tls(cx);
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
            }
        })
        .await
    }

    pub fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        loop {
            match self.tls.borrow_mut().reader().read(buf) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // TCP FIN without close_notify: report end of stream as the
                // transport does (truncation attacks matter for
                // length-less protocols; HTTP framing catches them).
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Poll::Ready(Ok(0)),
                Err(e) => return Poll::Ready(Err(e)),
            }
            if self.read_eof.get() {
                return Poll::Ready(Ok(0));
            }
            std::task::ready!(self.poll_fill(cx))?;
        }
    }

    pub fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    pub fn poll_write_vectored(&self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        if self.accepted.get().is_none() {
            std::task::ready!(self.poll_flush_tls(cx))?;
            let n = self.tls.borrow_mut().writer().write_vectored(bufs)?;
            if n == 0 && bufs.iter().any(|b| !b.is_empty()) {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.accepted.set(Some(n));
        }
        std::task::ready!(self.poll_flush_tls(cx))?;
        Poll::Ready(Ok(self.accepted.take().unwrap_or(0)))
    }

    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.read_eof.get() {
            return Poll::Ready(());
        }
        // Plaintext rustls already decrypted is ready now; else wait on the socket.
        let buffered = self.tls.borrow_mut().process_new_packets().map_or(true, |s| s.plaintext_bytes_to_read() > 0);
        if buffered {
            return Poll::Ready(());
        }
        self.stream.poll_read_ready(cx)
    }

    /// Sends close_notify and then a TCP FIN (half-close).  The alert is
    /// written if the socket takes it now; the peer sees end of stream either way.
    pub fn shutdown_write(&self) -> io::Result<()> {
        self.tls.borrow_mut().send_close_notify();
        let mut cx = Context::from_waker(Waker::noop());
        let _ = self.poll_flush_tls(&mut cx);
        self.stream.shutdown_write()
    }

    pub fn peer_addr(&self) -> SocketAddr {
        self.stream.peer_addr()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr()
    }

    /// An idle pooled connection is usable while the peer has sent nothing
    /// but TLS housekeeping: TLS 1.3 session tickets and key updates arrive
    /// on idle connections and are consumed here; plaintext, close_notify,
    /// EOF or an error mean the connection must not be reused.
    pub fn is_idle_usable(&self) -> bool {
        if self.stream.is_idle_usable() {
            return true;
        }
        if self.read_eof.get() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        match self.poll_fill(&mut cx) {
            Poll::Pending => !self.read_eof.get(),
            Poll::Ready(_) => false,
        }
    }
}

impl Drop for TlsStream {
    /// Closes the TLS session properly (close_notify), best effort: whatever
    /// the socket takes now.  Without it peers see a truncated stream.
    fn drop(&mut self) {
        let mut tls = self.tls.borrow_mut();
        if tls.is_handshaking() {
            return;
        }
        tls.send_close_notify();
        drop(tls);
        let mut cx = Context::from_waker(Waker::noop());
        let _ = self.poll_flush_tls(&mut cx);
    }
}

/// A plaintext connection whose first bytes were read by the TLS
/// inspector (to tell TLS from plaintext): they are served to the first
/// reads again, then the stream continues.
pub struct ReplayStream {
    stream: Stream,
    replay: Vec<u8>,
    pos: Cell<usize>,
}

impl ReplayStream {
    pub fn new(stream: Stream, replay: Vec<u8>) -> ReplayStream {
        ReplayStream { stream, replay, pos: Cell::new(0) }
    }

    fn pending(&self) -> &[u8] {
        &self.replay[self.pos.get()..]
    }

    pub fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let pending = self.pending();
        if pending.is_empty() {
            return self.stream.poll_read(cx, buf);
        }
        let n = pending.len().min(buf.len());
        buf[..n].copy_from_slice(&pending[..n]);
        self.pos.set(self.pos.get() + n);
        Poll::Ready(Ok(n))
    }

    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.pending().is_empty() {
            self.stream.poll_read_ready(cx)
        } else {
            Poll::Ready(())
        }
    }

    pub fn stream(&self) -> &Stream {
        &self.stream
    }
}

/// A proxied connection: plain TCP or TLS, with the methods of
/// `transport::Stream` (so the connection manager does not care which).
pub enum Conn {
    Plain(Stream),
    Tls(Box<TlsStream>),
    /// Plaintext on a tls_inspector listener (first bytes replayed).
    Replay(Box<ReplayStream>),
    /// One HTTP/2 stream served by the HTTP/1 connection manager
    /// (`http2::pipe`): bytes through a pipe, identity from the real connection.
    Bridged(Box<crate::http2::pipe::Bridged>),
}

impl Conn {
    pub fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        match self {
            Conn::Plain(s) => s.poll_read(cx, buf),
            Conn::Replay(s) => s.poll_read(cx, buf),
            Conn::Tls(s) => s.poll_read(cx, buf),
            Conn::Bridged(b) => b.end.poll_read(cx, buf),
        }
    }

    pub fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self {
            Conn::Plain(s) => s.poll_write(cx, buf),
            Conn::Replay(s) => s.stream().poll_write(cx, buf),
            Conn::Tls(s) => s.poll_write(cx, buf),
            Conn::Bridged(b) => b.end.poll_write(cx, buf),
        }
    }

    pub fn poll_write_vectored(&self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        match self {
            Conn::Plain(s) => s.poll_write_vectored(cx, bufs),
            Conn::Replay(s) => s.stream().poll_write_vectored(cx, bufs),
            Conn::Tls(s) => s.poll_write_vectored(cx, bufs),
            Conn::Bridged(b) => b.end.poll_write_vectored(cx, bufs),
        }
    }

    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        match self {
            Conn::Plain(s) => s.poll_read_ready(cx),
            Conn::Replay(s) => s.poll_read_ready(cx),
            Conn::Tls(s) => s.poll_read_ready(cx),
            Conn::Bridged(b) => b.end.poll_read_ready(cx),
        }
    }

    pub fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.shutdown_write(),
            Conn::Replay(s) => s.stream().shutdown_write(),
            Conn::Tls(s) => s.shutdown_write(),
            Conn::Bridged(b) => {
                b.end.shutdown_write();
                Ok(())
            }
        }
    }

    pub fn peer_addr(&self) -> SocketAddr {
        match self {
            Conn::Plain(s) => s.peer_addr(),
            Conn::Replay(s) => s.stream().peer_addr(),
            Conn::Tls(s) => s.peer_addr(),
            Conn::Bridged(b) => b.peer_addr(),
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        match self {
            Conn::Plain(s) => s.local_addr(),
            Conn::Replay(s) => s.stream().local_addr(),
            Conn::Tls(s) => s.local_addr(),
            Conn::Bridged(b) => b.local_addr(),
        }
    }

    pub fn is_idle_usable(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_idle_usable(),
            Conn::Replay(s) => s.stream().is_idle_usable(),
            Conn::Tls(s) => s.is_idle_usable(),
            Conn::Bridged(_) => false,
        }
    }

    pub fn tls(&self) -> Option<&TlsStream> {
        match self {
            Conn::Plain(_) | Conn::Replay(_) => None,
            Conn::Tls(s) => Some(s),
            Conn::Bridged(b) => b.outer.tls(),
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

    /// Writes every byte of `parts` in order (one `writev` in the common
    /// plain case; TLS encrypts them in as few records as rustls makes).
    pub async fn write_all_vectored(&self, parts: &[&[u8]]) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.write_all_vectored(parts).await,
            Conn::Replay(s) => s.stream().write_all_vectored(parts).await,
            Conn::Tls(_) | Conn::Bridged(_) => {
                for p in parts {
                    self.write_all(p).await?;
                }
                Ok(())
            }
        }
    }
}

impl crate::tunnel::Duplex for Conn {
    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        Conn::poll_read(self, cx, buf)
    }
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        Conn::poll_read_ready(self, cx)
    }
    fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Conn::poll_write(self, cx, buf)
    }
    fn shutdown_write(&self) -> io::Result<()> {
        Conn::shutdown_write(self)
    }
}
