//! Readiness reactor over mio (epoll on Linux).
//!
//! mio is edge-triggered: an event means "something changed", so each
//! registered source keeps sticky `readable`/`writable` bits that the reactor
//! sets on events and an I/O operation clears when it hits `WouldBlock`.
//! Because events are only dispatched between task batches (never while a
//! task runs), there is no race between clearing a bit and a new event.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Duration;

use mio::{Events, Interest, Poll as MioPoll, Token};
use slab::Slab;

const WAKE_TOKEN: Token = Token(usize::MAX);

#[derive(Default)]
struct IoState {
    readable: bool,
    writable: bool,
    /// The peer's FIN (or an error) was seen: the edge will not come again,
    /// so the read side stays ready for good (nginx's `pending_eof`).
    read_closed: bool,
    write_closed: bool,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
}

struct Inner {
    poll: RefCell<MioPoll>,
    events: RefCell<Events>,
    /// Wakers collected during one `poll`, kept between polls so waking
    /// allocates nothing in steady state.
    to_wake: RefCell<Vec<Waker>>,
    ios: RefCell<Slab<IoState>>,
    remote: RemoteWaker,
}

/// Shard-local handle to the reactor (cheap `Rc` clone).
#[derive(Clone)]
pub struct Reactor(Rc<Inner>);

/// Identifies one registered source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoToken(usize);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Read,
    Write,
}

/// Wakes a shard's loop from another thread.
#[derive(Clone)]
pub struct RemoteWaker(Arc<mio::Waker>);

impl RemoteWaker {
    pub fn wake(&self) {
        // A failed wake means the shard is gone; nothing to do.
        let _ = self.0.wake();
    }
}

impl Reactor {
    pub(crate) fn new() -> io::Result<Reactor> {
        let poll = MioPoll::new()?;
        let waker = Arc::new(mio::Waker::new(poll.registry(), WAKE_TOKEN)?);
        Ok(Reactor(Rc::new(Inner {
            poll: RefCell::new(poll),
            events: RefCell::new(Events::with_capacity(1024)),
            to_wake: RefCell::new(Vec::with_capacity(64)),
            ios: RefCell::new(Slab::with_capacity(1024)),
            remote: RemoteWaker(waker),
        })))
    }

    pub fn remote_waker(&self) -> RemoteWaker {
        self.0.remote.clone()
    }

    /// Registers a source for read and write readiness.  New sources start
    /// "ready" so the first operation is attempted rather than waited for.
    pub fn register(&self, source: &mut impl mio::event::Source) -> io::Result<IoToken> {
        self.register_with(source, true)
    }

    /// As `register`, but a socket whose connect is in flight must first see a
    /// writable event, so it can start not-writable.
    pub fn register_with(&self, source: &mut impl mio::event::Source, writable: bool) -> io::Result<IoToken> {
        let key = self.0.ios.borrow_mut().insert(IoState { readable: true, writable, ..Default::default() });
        let res = self.0.poll.borrow().registry().register(source, Token(key), Interest::READABLE | Interest::WRITABLE);
        if let Err(e) = res {
            self.0.ios.borrow_mut().remove(key);
            return Err(e);
        }
        Ok(IoToken(key))
    }

    pub fn deregister(&self, source: &mut impl mio::event::Source, token: IoToken) {
        let _ = self.0.poll.borrow().registry().deregister(source);
        let state = self.0.ios.borrow_mut().try_remove(token.0);
        // Wake anyone still parked on the source so they observe its end.
        if let Some(state) = state {
            if let Some(w) = state.read_waker {
                w.wake();
            }
            if let Some(w) = state.write_waker {
                w.wake();
            }
        }
    }

    /// Ready if the direction's bit is set; otherwise parks `cx`'s waker.
    pub fn poll_ready(&self, token: IoToken, dir: Direction, cx: &mut TaskContext<'_>) -> Poll<()> {
        let mut ios = self.0.ios.borrow_mut();
        let Some(state) = ios.get_mut(token.0) else { return Poll::Ready(()) };
        let (ready, slot) = match dir {
            Direction::Read => (state.readable, &mut state.read_waker),
            Direction::Write => (state.writable, &mut state.write_waker),
        };
        if ready {
            return Poll::Ready(());
        }
        match slot {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Whether no read event (bytes, FIN or error) arrived since the read side
    /// last drained.  For an idle pooled connection that means the peer has
    /// neither spoken nor closed, as of the last `poll`.
    pub fn read_quiet(&self, token: IoToken) -> bool {
        self.0.ios.borrow().get(token.0).is_some_and(|s| !s.readable && !s.read_closed)
    }

    /// Called after an operation returned `WouldBlock`.
    pub fn clear_ready(&self, token: IoToken, dir: Direction) {
        if let Some(state) = self.0.ios.borrow_mut().get_mut(token.0) {
            match dir {
                Direction::Read if !state.read_closed => state.readable = false,
                Direction::Write if !state.write_closed => state.writable = false,
                _ => {}
            }
        }
    }

    /// Waits for events (at most `timeout`) and wakes the tasks they concern;
    /// returns whether any event (the remote waker's too) arrived.
    pub(crate) fn poll(&self, timeout: Option<Duration>) -> io::Result<bool> {
        let mut events = self.0.events.borrow_mut();
        match self.0.poll.borrow_mut().poll(&mut events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(true),
            Err(e) => return Err(e),
        }
        let any = !events.is_empty();
        // Taken out of the cell so a woken task polled re-entrantly (it is
        // not today: wakers only queue) could not observe it borrowed.
        let mut wake = std::mem::take(&mut *self.0.to_wake.borrow_mut());
        {
            let mut ios = self.0.ios.borrow_mut();
            for ev in events.iter() {
                if ev.token() == WAKE_TOKEN {
                    continue;
                }
                let Some(state) = ios.get_mut(ev.token().0) else { continue };
                if ev.is_read_closed() || ev.is_error() {
                    state.read_closed = true;
                }
                if ev.is_write_closed() || ev.is_error() {
                    state.write_closed = true;
                }
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    state.readable = true;
                    if let Some(w) = state.read_waker.take() {
                        wake.push(w);
                    }
                }
                if ev.is_writable() || ev.is_write_closed() || ev.is_error() {
                    state.writable = true;
                    if let Some(w) = state.write_waker.take() {
                        wake.push(w);
                    }
                }
            }
        }
        for w in wake.drain(..) {
            w.wake();
        }
        *self.0.to_wake.borrow_mut() = wake;
        Ok(any)
    }
}
