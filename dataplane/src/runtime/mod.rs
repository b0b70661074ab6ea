//! The shard runtime: a single-threaded executor, a mio reactor and a timer
//! heap, driven by one loop per pinned thread.
//!
//! Connection logic is ordinary `async` code; tasks are `!Send` and never leave
//! the shard that spawned them, so they share state through `Rc`/`RefCell`
//! instead of locks.  The loop owns the clock: `now()` is read once per pass
//! and passed to timers, which keeps timer handling batched and testable.
//!
//! This module must not know about HTTP, config or stats.  Anything that needs
//! to run on a shard spawns a task with [`spawn`]; anything that needs to wait
//! on a socket goes through [`Reactor`] via the transport layer; anything that
//! needs to wait on time uses [`sleep_until`] / [`timeout`].
//!
//! ```text
//!  loop {
//!      run ready tasks (bounded batch)        -- Executor::run_batch
//!      epoll_wait(0 if tasks left, else until next timer)
//!      wake tasks whose sockets became ready  -- Reactor::dispatch
//!      fire due timers                        -- Timers::fire(now)
//!      loop hooks (config pickup, drain)      -- Shard
//!  }
//! ```
//! The userspace (DPDK + smoltcp) backend registers a [`LoopPoller`]: before
//! every wait the loop runs "rx burst → smoltcp ingress → egress of what tasks
//! wrote and of due protocol timers → tx burst", and with a DPDK device the
//! wait is zero (busy polling; epoll still serves kernel sockets).  Without a
//! poller the kernel path is unchanged.

mod executor;
mod reactor;
mod timer;

pub use executor::{spawn, Executor, JoinHandle};
pub use reactor::{Direction, IoToken, Reactor, RemoteWaker};
pub use timer::{now, sleep_until, timeout, Elapsed, Sleep, Timeout};

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Everything a shard's tasks reach through thread-local context.
pub(crate) struct Context {
    pub(crate) reactor: Reactor,
    pub(crate) timers: RefCell<timer::Timers>,
    pub(crate) now: std::cell::Cell<Instant>,
    /// Userspace network stacks polled once per pass (empty on the kernel path).
    pub(crate) pollers: RefCell<Vec<Rc<dyn LoopPoller>>>,
}

/// Something the loop polls every pass besides the reactor: the userspace
/// network stack (frames in, smoltcp, frames out, protocol timers).
pub trait LoopPoller {
    /// Does the stack's pending work at `now`.
    fn poll(&self, now: Instant) -> PollOutcome;
}

/// What a [`LoopPoller`] asks of the loop.
#[derive(Debug, Clone, Copy, Default)]
pub struct PollOutcome {
    /// Do not sleep: frames moved (more may follow) or the device is busy-polled.
    pub busy: bool,
    /// The stack's next timer, if any (the loop sleeps no longer than this).
    pub next: Option<Instant>,
    /// A busy-polled device found nothing for a while: the loop may sleep
    /// this long.  The device cannot wake epoll, so the loop looks at the
    /// kernel sockets without waiting and sleeps only if none is ready.
    pub nap: Option<Duration>,
}

/// Adds a stack to this thread's loop (polled before every wait).
pub fn add_loop_poller(poller: Rc<dyn LoopPoller>) {
    with_context(|c| c.pollers.borrow_mut().push(poller));
}

/// Removes every stack from this thread's loop.
pub fn clear_loop_pollers() {
    with_context(|c| c.pollers.borrow_mut().clear());
}

/// The smaller of two optional bounds (deadlines or waits); `None` is "no bound".
fn sooner<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

thread_local! {
    static CONTEXT: RefCell<Option<Rc<Context>>> = const { RefCell::new(None) };
}

pub(crate) fn with_context<R>(f: impl FnOnce(&Context) -> R) -> R {
    CONTEXT.with(|c| {
        let ctx = c.borrow();
        let ctx = ctx.as_ref().expect("meshgate runtime used outside a shard thread");
        f(ctx)
    })
}

/// Handle on the current thread's reactor (for transports registering sockets).
pub fn reactor() -> Reactor {
    with_context(|c| c.reactor.clone())
}

/// A shard's event loop.  Create one per thread with [`Runtime::new`], spawn
/// tasks, then call [`Runtime::turn`] in a loop (or [`Runtime::block_on`]).
pub struct Runtime {
    ctx: Rc<Context>,
    executor: Executor,
}

/// Tasks run per pass before the loop looks at sockets again, so one busy
/// connection cannot starve I/O readiness and timers.
const TASK_BUDGET: usize = 256;

impl Runtime {
    pub fn new() -> io::Result<Runtime> {
        let reactor = Reactor::new()?;
        let executor = Executor::new(reactor.remote_waker());
        let ctx = Rc::new(Context {
            reactor,
            timers: RefCell::new(timer::Timers::default()),
            now: std::cell::Cell::new(Instant::now()),
            pollers: RefCell::new(Vec::new()),
        });
        CONTEXT.with(|c| {
            let mut slot = c.borrow_mut();
            assert!(slot.is_none(), "one meshgate runtime per thread");
            *slot = Some(ctx.clone());
        });
        executor.enter();
        Ok(Runtime { ctx, executor })
    }

    /// Wakes this runtime's loop from another thread (config published, drain).
    pub fn remote_waker(&self) -> RemoteWaker {
        self.ctx.reactor.remote_waker()
    }

    /// One pass of the loop.  Sleeps in epoll at most `max_wait` (and never past
    /// the next timer).
    pub fn turn(&mut self, max_wait: Option<Duration>) -> io::Result<()> {
        let more = self.executor.run_batch(TASK_BUDGET);
        self.park(more, max_wait)
    }

    /// Waits for I/O (not at all if `more` tasks are ready) and fires timers.
    fn park(&mut self, more: bool, max_wait: Option<Duration>) -> io::Result<()> {
        let now = Instant::now();
        self.ctx.now.set(now);
        let mut busy = false;
        let mut stack_next: Option<Instant> = None;
        let mut nap: Option<Duration> = None;
        if !self.ctx.pollers.borrow().is_empty() {
            let pollers = self.ctx.pollers.borrow().clone();
            for p in pollers {
                let out = p.poll(now);
                busy |= out.busy;
                nap = sooner(nap, out.nap);
                stack_next = sooner(stack_next, out.next);
            }
        }
        let wait = if more || busy {
            Some(Duration::ZERO)
        } else {
            let next = self.ctx.timers.borrow_mut().next_deadline();
            let until_timer = sooner(next, stack_next).map(|d| d.saturating_duration_since(now));
            sooner(until_timer, max_wait)
        };
        match nap {
            Some(nap) if !more && !busy => {
                let nap = wait.map_or(nap, |w| w.min(nap));
                if !self.ctx.reactor.poll(Some(Duration::ZERO))? && !nap.is_zero() {
                    std::thread::sleep(nap);
                }
            }
            _ => {
                self.ctx.reactor.poll(wait)?;
            }
        }
        let now = Instant::now();
        self.ctx.now.set(now);
        self.ctx.timers.borrow_mut().fire(now);
        Ok(())
    }

    /// Drives `future` to completion on this thread, running other tasks too.
    pub fn block_on<F: std::future::Future + 'static>(&mut self, future: F) -> F::Output {
        let mut handle = spawn(future);
        loop {
            let more = self.executor.run_batch(TASK_BUDGET);
            // Checked between running tasks and parking: the task may have
            // just finished, and nothing would wake the park for it.
            if let Some(out) = handle.try_take() {
                return out;
            }
            self.park(more, None).expect("reactor poll failed");
        }
    }

    pub fn has_tasks(&self) -> bool {
        self.executor.live_tasks() > 0
    }

    pub fn live_tasks(&self) -> usize {
        self.executor.live_tasks()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.executor.shutdown();
        CONTEXT.with(|c| c.borrow_mut().take());
    }
}
