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

use executor::Batch;
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
    /// Wall time of the passes that did work (see [`loop_busy`]); kept only
    /// while pollers are installed.
    pub(crate) loop_busy: std::cell::Cell<Duration>,
}

/// Something the loop polls every pass besides the reactor: the userspace
/// network stack (frames in, smoltcp, frames out, protocol timers).
pub trait LoopPoller {
    /// Does the stack's pending work at `now`.
    fn poll(&self, now: Instant) -> PollOutcome;
}

/// What a [`LoopPoller`] did and asks of the loop.
#[derive(Debug, Clone, Copy, Default)]
pub struct PollOutcome {
    /// Frames moved or the stack had work pending: this pass counts as busy
    /// in [`loop_busy`] (an empty poll of a busy-polled queue does not).
    pub worked: bool,
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

/// Wall time this thread's loop spent in passes that did work — a task ran or
/// a stack moved frames — since the runtime started, counted only while a
/// [`LoopPoller`] is installed.
///
/// A busy-polling shard uses its whole core whatever the load, so its CPU
/// time says nothing about what the traffic costs; this does (DPDK's lcore
/// "busy cycles").  A pass runs from the end of one wait to the start of the
/// next, so the waits and naps, the empty polls and the zero-timeout
/// `epoll_wait` of the spin are all left out.  Wall time, not CPU time: on a
/// core shared with other threads a preempted pass counts the preemption.
pub fn loop_busy() -> Duration {
    with_context(|c| c.loop_busy.get())
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
            loop_busy: std::cell::Cell::new(Duration::ZERO),
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
        let batch = self.executor.run_batch(TASK_BUDGET);
        self.park(batch, max_wait)
    }

    /// Waits for I/O (not at all if more tasks are ready) and fires timers.
    fn park(&mut self, batch: Batch, max_wait: Option<Duration>) -> io::Result<()> {
        let more = batch.more;
        // The pass began when the previous wait ended (`ctx.now` then).
        let pass_start = self.ctx.now.get();
        let now = Instant::now();
        self.ctx.now.set(now);
        let mut busy = false;
        let mut stack_next: Option<Instant> = None;
        let mut nap: Option<Duration> = None;
        if !self.ctx.pollers.borrow().is_empty() {
            let pollers = self.ctx.pollers.borrow().clone();
            let mut worked = batch.ran;
            for p in pollers {
                let out = p.poll(now);
                worked |= out.worked;
                busy |= out.busy;
                nap = sooner(nap, out.nap);
                stack_next = sooner(stack_next, out.next);
            }
            if worked {
                let c = &self.ctx.loop_busy;
                c.set(c.get() + Instant::now().saturating_duration_since(pass_start));
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
            let batch = self.executor.run_batch(TASK_BUDGET);
            // Checked between running tasks and parking: the task may have
            // just finished, and nothing would wake the park for it.
            if let Some(out) = handle.try_take() {
                return out;
            }
            self.park(batch, None).expect("reactor poll failed");
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// A stack whose every poll takes `cost` and reports frames moved while
    /// `worked` is set (busy-polled: the loop never waits).
    struct FakeStack {
        worked: Cell<bool>,
        cost: Duration,
    }

    impl LoopPoller for FakeStack {
        fn poll(&self, _now: Instant) -> PollOutcome {
            spin(self.cost);
            PollOutcome { worked: self.worked.get(), busy: true, next: None, nap: None }
        }
    }

    fn spin(d: Duration) {
        let t = Instant::now();
        while t.elapsed() < d {}
    }

    #[test]
    fn loop_busy_counts_the_passes_that_moved_frames_or_ran_tasks_and_no_others() {
        let mut rt = Runtime::new().unwrap();
        let stack = Rc::new(FakeStack { worked: Cell::new(false), cost: Duration::from_millis(1) });
        add_loop_poller(stack.clone());
        for _ in 0..20 {
            rt.turn(None).unwrap();
        }
        assert_eq!(loop_busy(), Duration::ZERO, "empty polls are spin, not work");
        stack.worked.set(true);
        for _ in 0..20 {
            rt.turn(None).unwrap();
        }
        let moved = loop_busy();
        assert!(moved >= Duration::from_millis(20), "20 working passes of 1 ms counted {moved:?}");
        stack.worked.set(false);
        spawn(async { spin(Duration::from_millis(5)) }).detach();
        rt.turn(None).unwrap();
        let ran = loop_busy() - moved;
        assert!(ran >= Duration::from_millis(5), "a pass running a 5 ms task counted {ran:?}");
        let before = loop_busy();
        for _ in 0..10 {
            rt.turn(None).unwrap();
        }
        assert_eq!(loop_busy(), before);
        clear_loop_pollers();
    }

    #[test]
    fn loop_busy_is_not_kept_on_the_kernel_path() {
        let mut rt = Runtime::new().unwrap();
        spawn(async { spin(Duration::from_millis(2)) }).detach();
        rt.turn(Some(Duration::ZERO)).unwrap();
        assert_eq!(loop_busy(), Duration::ZERO);
    }
}
