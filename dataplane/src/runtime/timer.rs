//! Timers: a min-heap of deadlines with lazy cancellation.
//!
//! Per request a proxy arms and cancels several timers (header timeout, route
//! timeout, idle timeout) and almost none of them fire, so cancellation must be
//! cheap: dropping a `Sleep` frees its slab entry and the heap entry is skipped
//! when it surfaces.  Time is the loop's cached `now()`, read once per pass.
//!
//! Skipped entries are not free, though: an idle timeout of minutes cancelled
//! forty thousand times a second would keep millions of dead entries in the
//! heap.  So when dead entries outnumber live ones the heap is compacted in
//! place (`retain`), which bounds it to about twice the live timers and, being
//! amortised over the inserts that made the garbage, costs O(1) per insert and
//! no allocation.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::{Duration, Instant};

use slab::Slab;

use super::with_context;

struct Entry {
    generation: u64,
    waker: Option<Waker>,
    fired: bool,
}

/// Dead heap entries tolerated beyond the live count before compacting, so a
/// handful of timers never triggers a rebuild.
const COMPACT_SLACK: usize = 64;

#[derive(Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    entries: Slab<Entry>,
    next_generation: u64,
}

impl Timers {
    fn insert(&mut self, deadline: Instant, waker: Waker) -> (usize, u64) {
        self.next_generation += 1;
        let generation = self.next_generation;
        let key = self.entries.insert(Entry { generation, waker: Some(waker), fired: false });
        if self.heap.len() >= 2 * self.entries.len() + COMPACT_SLACK {
            self.compact();
        }
        self.heap.push(Reverse((deadline, key, generation)));
        (key, generation)
    }

    /// Drops heap entries whose timer was cancelled (see the module essay).
    fn compact(&mut self) {
        let entries = &self.entries;
        self.heap
            .retain(|Reverse((_, key, generation))| entries.get(*key).is_some_and(|e| e.generation == *generation));
    }

    #[cfg(test)]
    fn heap_len(&self) -> usize {
        self.heap.len()
    }

    fn live(&mut self, key: usize, generation: u64) -> Option<&mut Entry> {
        self.entries.get_mut(key).filter(|e| e.generation == generation)
    }

    fn cancel(&mut self, key: usize, generation: u64) {
        if self.live(key, generation).is_some() {
            self.entries.remove(key);
        }
    }

    /// The earliest live deadline.  Cancelled heads are popped first: most
    /// timers are cancelled (a park or header timer re-armed by the next
    /// request), and a cancelled head would wake the loop for nothing.
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(&Reverse((deadline, key, generation))) = self.heap.peek() {
            if self.entries.get(key).is_some_and(|e| e.generation == generation) {
                return Some(deadline);
            }
            self.heap.pop();
        }
        None
    }

    pub(crate) fn fire(&mut self, now: Instant) {
        while let Some(Reverse((deadline, key, generation))) = self.heap.peek().copied() {
            if deadline > now {
                break;
            }
            self.heap.pop();
            if let Some(entry) = self.live(key, generation) {
                entry.fired = true;
                if let Some(w) = entry.waker.take() {
                    w.wake();
                }
            }
        }
    }
}

/// The shard loop's current time (read once per loop pass).
pub fn now() -> Instant {
    with_context(|c| c.now.get())
}

/// Completes at `deadline`.
///
/// A registration may be older than the deadline: [`Sleep::defer_to`]
/// moves the deadline later without touching the heap, and the timer that
/// comes due early re-registers for the rest when polled.  Long timeouts
/// pushed back on every request (a keep-alive connection's idle timeout,
/// a route timeout) so cost one heap entry per period instead of one per
/// request.
pub struct Sleep {
    deadline: Instant,
    /// The timer entry, and the deadline it was registered for (never
    /// after `deadline`).
    registered: Option<(usize, u64, Instant)>,
}

pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep { deadline, registered: None }
}

impl Sleep {
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Moves the deadline (e.g. an idle timer pushed back by activity).
    pub fn reset(&mut self, deadline: Instant) {
        self.cancel();
        self.deadline = deadline;
    }

    /// Moves the deadline, lazily when it moves later: the registered timer
    /// stays and re-registers for the rest when it comes due.  An earlier
    /// deadline re-registers at the next poll, as [`reset`](Self::reset).
    pub fn defer_to(&mut self, deadline: Instant) {
        match self.registered {
            Some((_, _, at)) if at <= deadline => self.deadline = deadline,
            _ => self.reset(deadline),
        }
    }

    fn cancel(&mut self) {
        if let Some((key, generation, _)) = self.registered.take() {
            with_context(|c| c.timers.borrow_mut().cancel(key, generation));
        }
    }
}

impl Future for Sleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        let deadline = self.deadline;
        with_context(|c| {
            let mut timers = c.timers.borrow_mut();
            if let Some((key, generation, _)) = self.registered {
                if let Some(entry) = timers.live(key, generation) {
                    if !entry.fired {
                        match &entry.waker {
                            Some(w) if w.will_wake(cx.waker()) => {}
                            _ => entry.waker = Some(cx.waker().clone()),
                        }
                        return Poll::Pending;
                    }
                    timers.entries.remove(key);
                }
                self.registered = None;
            }
            if c.now.get() >= deadline {
                return Poll::Ready(());
            }
            // First poll, or a registration that came due before a
            // deferred deadline: register (again) for the deadline.
            let (key, generation) = timers.insert(deadline, cx.waker().clone());
            drop(timers);
            self.registered = Some((key, generation, deadline));
            Poll::Pending
        })
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if self.registered.is_some() {
            // The runtime may already be gone at thread teardown.
            let registered = self.registered.take();
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                if let Some((key, generation, _)) = registered {
                    with_context(|c| {
                        if let Ok(mut t) = c.timers.try_borrow_mut() {
                            t.cancel(key, generation)
                        }
                    });
                }
            }));
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

impl std::fmt::Display for Elapsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("deadline elapsed")
    }
}

pin_project_lite::pin_project! {
    /// [`timeout`]'s future.  A struct rather than an `async fn` for the
    /// reason `executor::Counted` is one: an `async fn` stores the future it
    /// is given twice, as the argument and as the pinned local
    /// (rust-lang/rust#62958), which turned a TLS handshake's 4.7 KB into
    /// 9.5 KB.
    pub struct Timeout<F> {
        #[pin]
        future: F,
        sleep: Option<Sleep>,
    }
}

/// Runs `future` with a deadline `after` from now (from this call, which
/// every caller awaits at once); `None` means no deadline.
pub fn timeout<F: Future>(after: Option<Duration>, future: F) -> Timeout<F> {
    Timeout { future, sleep: after.map(|after| sleep_until(now() + after)) }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;
    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.future.poll(cx) {
            return Poll::Ready(Ok(out));
        }
        match this.sleep {
            Some(sleep) => Pin::new(sleep).poll(cx).map(|()| Err(Elapsed)),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{spawn, Runtime};
    use std::cell::RefCell;
    use std::rc::Rc;

    #[test]
    fn sleeps_fire_in_deadline_order_and_cancelled_ones_never() {
        let mut rt = Runtime::new().unwrap();
        let order = Rc::new(RefCell::new(Vec::new()));
        let start = Instant::now();
        for (i, ms) in [(0u32, 30u64), (1, 10), (2, 20)] {
            let order = order.clone();
            spawn(async move {
                sleep_until(start + Duration::from_millis(ms)).await;
                order.borrow_mut().push(i);
            })
            .detach();
        }
        let cancelled = Rc::new(RefCell::new(false));
        let flag = cancelled.clone();
        let doomed = spawn(async move {
            sleep_until(start + Duration::from_millis(15)).await;
            *flag.borrow_mut() = true;
        });
        drop(doomed);
        rt.block_on(async move { sleep_until(start + Duration::from_millis(50)).await });
        assert_eq!(*order.borrow(), vec![1, 2, 0]);
        assert!(!*cancelled.borrow());
    }

    #[test]
    fn timeout_reports_elapsed_only_when_the_future_is_late() {
        let mut rt = Runtime::new().unwrap();
        let res = rt.block_on(async {
            let fast = timeout(Some(Duration::from_millis(50)), async { 7 }).await;
            let slow = timeout(Some(Duration::from_millis(10)), sleep_until(now() + Duration::from_secs(5))).await;
            (fast, slow)
        });
        assert_eq!(res, (Ok(7), Err(Elapsed)));
    }

    /// A deadline deferred many times keeps one registration, and the
    /// Sleep completes at the last deadline, not at the registered one.
    #[test]
    fn a_deferred_sleep_keeps_its_registration_and_fires_at_the_new_deadline() {
        let mut rt = Runtime::new().unwrap();
        let start = Instant::now();
        let fired_after = rt.block_on(async move {
            let mut sleep = sleep_until(start + Duration::from_millis(20));
            // Registers (first poll) for +20 ms.
            let registered = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut sleep).poll(cx).is_pending())).await;
            assert!(registered);
            let heap_before = with_context(|c| c.timers.borrow().heap_len());
            for ms in 21..=60 {
                sleep.defer_to(start + Duration::from_millis(ms));
            }
            assert_eq!(with_context(|c| c.timers.borrow().heap_len()), heap_before, "no new heap entries");
            assert_eq!(sleep.deadline(), start + Duration::from_millis(60));
            (&mut sleep).await;
            start.elapsed()
        });
        assert!(fired_after >= Duration::from_millis(60), "fired after {fired_after:?}");
        assert!(fired_after < Duration::from_millis(1_000), "fired after {fired_after:?}");
    }

    #[test]
    fn deferring_to_an_earlier_deadline_re_registers() {
        let mut rt = Runtime::new().unwrap();
        let start = Instant::now();
        let fired_after = rt.block_on(async move {
            let mut sleep = sleep_until(start + Duration::from_secs(60));
            let pending = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut sleep).poll(cx).is_pending())).await;
            assert!(pending);
            sleep.defer_to(start + Duration::from_millis(30));
            (&mut sleep).await;
            start.elapsed()
        });
        assert!(fired_after >= Duration::from_millis(30) && fired_after < Duration::from_secs(5), "{fired_after:?}");
    }

    #[test]
    fn a_cancelled_timer_does_not_set_the_next_wake_up() {
        let mut timers = Timers::default();
        let waker = std::task::Waker::noop().clone();
        let t0 = Instant::now();
        let (key, generation) = timers.insert(t0 + Duration::from_millis(20), waker.clone());
        timers.insert(t0 + Duration::from_secs(60), waker);
        assert_eq!(timers.next_deadline(), Some(t0 + Duration::from_millis(20)));
        timers.cancel(key, generation);
        assert_eq!(timers.next_deadline(), Some(t0 + Duration::from_secs(60)));
    }

    #[test]
    fn cancelled_timers_do_not_accumulate_in_the_heap() {
        let mut timers = Timers::default();
        let waker = std::task::Waker::noop().clone();
        let far = Instant::now() + Duration::from_secs(300);
        // A few long-lived timers, then a storm of arm-and-cancel pairs as a
        // busy connection manager produces them.
        let keep: Vec<_> = (0..10).map(|i| timers.insert(far + Duration::from_secs(i), waker.clone())).collect();
        for i in 0..100_000u64 {
            let (key, generation) = timers.insert(far + Duration::from_millis(i), waker.clone());
            timers.cancel(key, generation);
        }
        assert!(timers.heap_len() <= 2 * keep.len() + COMPACT_SLACK + 1, "heap holds {}", timers.heap_len());
        // The live ones survived compaction and still fire, in order.
        timers.fire(far + Duration::from_secs(60));
        for (key, generation) in keep {
            assert!(timers.live(key, generation).is_some_and(|e| e.fired));
        }
    }
}
