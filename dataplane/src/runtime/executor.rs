//! Task machinery: `async-task` runnables in a per-shard queue.
//!
//! Wakers may in principle be called from any thread (async-task requires the
//! schedule function to be `Send + Sync`), so there are two queues: a wake on
//! the shard itself pushes onto a thread-local `VecDeque`, which keeps its
//! capacity and so allocates nothing in steady state; a wake from a foreign
//! thread pushes onto a lock-free `SegQueue` (which allocates a block per 31
//! pushes — fine for the rare cross-thread wake) and kicks the shard's epoll
//! so the task does not wait for the next unrelated event.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Waker};

use async_task::Runnable;
use crossbeam_queue::SegQueue;

use super::reactor::RemoteWaker;

struct Shared {
    queue: SegQueue<Runnable>,
    remote: RemoteWaker,
}

thread_local! {
    static CURRENT: std::cell::RefCell<Option<Arc<Shared>>> = const { std::cell::RefCell::new(None) };
    /// Address of the `Shared` owned by this thread, to tell local wakes from remote ones.
    static OWNER: Cell<usize> = const { Cell::new(0) };
    static LIVE: Cell<usize> = const { Cell::new(0) };
    /// Runnables woken on this thread (see the module essay).
    static LOCAL_QUEUE: RefCell<VecDeque<Runnable>> = const { RefCell::new(VecDeque::new()) };
}

/// Pops the next local runnable; the borrow ends before it runs.
fn pop_local() -> Option<Runnable> {
    LOCAL_QUEUE.with_borrow_mut(|q| q.pop_front())
}

fn local_is_empty() -> bool {
    LOCAL_QUEUE.with_borrow(|q| q.is_empty())
}

pub struct Executor {
    shared: Arc<Shared>,
}

impl Executor {
    pub(crate) fn new(remote: RemoteWaker) -> Executor {
        Executor { shared: Arc::new(Shared { queue: SegQueue::new(), remote }) }
    }

    pub(crate) fn enter(&self) {
        CURRENT.with(|c| *c.borrow_mut() = Some(self.shared.clone()));
        OWNER.with(|o| o.set(Arc::as_ptr(&self.shared) as usize));
    }

    /// Runs up to `budget` ready tasks.
    pub(crate) fn run_batch(&self, budget: usize) -> Batch {
        for ran in 0..budget {
            match pop_local().or_else(|| self.shared.queue.pop()) {
                Some(runnable) => {
                    runnable.run();
                }
                None => return Batch { ran: ran > 0, more: false },
            }
        }
        Batch { ran: budget > 0, more: !local_is_empty() || !self.shared.queue.is_empty() }
    }

    pub fn live_tasks(&self) -> usize {
        LIVE.with(|l| l.get())
    }

    pub(crate) fn shutdown(&self) {
        // One at a time: dropping a task may wake (schedule) another.
        while let Some(runnable) = pop_local().or_else(|| self.shared.queue.pop()) {
            drop(runnable);
        }
        CURRENT.with(|c| c.borrow_mut().take());
        OWNER.with(|o| o.set(0));
    }
}

/// What one [`Executor::run_batch`] did.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Batch {
    /// At least one task ran.
    pub(crate) ran: bool,
    /// Tasks are still ready (the budget ran out).
    pub(crate) more: bool,
}

/// Decrements the live-task count however the task ends (completion or cancel).
struct LiveGuard;
impl Drop for LiveGuard {
    fn drop(&mut self) {
        LIVE.with(|l| l.set(l.get() - 1));
    }
}

pin_project_lite::pin_project! {
    /// A task's future together with its live-count guard.
    struct Counted<F> {
        #[pin]
        future: F,
        _guard: LiveGuard,
    }
}

impl<F: Future> Future for Counted<F> {
    type Output = F::Output;
    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        self.project().future.poll(cx)
    }
}

/// Spawns a task on the current shard.
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    let shared = CURRENT.with(|c| c.borrow().clone()).expect("spawn outside a shard thread");
    LIVE.with(|l| l.set(l.get() + 1));
    // A struct rather than `async move { let _g = guard; future.await }`:
    // an async block stores the captured future twice (once as the captured
    // upvar, once as the awaited local; rust-lang/rust#62958), which doubled
    // every task's allocation (19.8 KB instead of 9.9 KB per HTTP connection).
    let wrapped = Counted { future, _guard: LiveGuard };
    let schedule = move |runnable: Runnable| {
        let local = OWNER.with(|o| o.get()) == Arc::as_ptr(&shared) as usize;
        if local {
            LOCAL_QUEUE.with_borrow_mut(|q| q.push_back(runnable));
        } else {
            shared.queue.push(runnable);
            shared.remote.wake();
        }
    };
    let (runnable, task) = async_task::spawn_local(wrapped, schedule);
    runnable.schedule();
    JoinHandle { task: Some(task) }
}

/// The result of a spawned task.  Dropping it cancels the task; call
/// [`JoinHandle::detach`] to let it run on its own.
pub struct JoinHandle<T> {
    task: Option<async_task::Task<T>>,
}

impl<T> JoinHandle<T> {
    pub fn detach(mut self) {
        if let Some(task) = self.task.take() {
            task.detach();
        }
    }

    /// Non-blocking check for the task's output (used by `block_on`).
    pub fn try_take(&mut self) -> Option<T> {
        let task = self.task.as_mut()?;
        let mut cx = TaskContext::from_waker(Waker::noop());
        match Pin::new(task).poll(&mut cx) {
            Poll::Ready(out) => {
                self.task = None;
                Some(out)
            }
            Poll::Pending => None,
        }
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = T;
    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<T> {
        let task = self.task.as_mut().expect("JoinHandle polled after completion");
        match Pin::new(task).poll(cx) {
            Poll::Ready(out) => {
                self.task = None;
                Poll::Ready(out)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
