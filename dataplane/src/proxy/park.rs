//! The parking lot: where idle keep-alive HTTP/1 connections wait.
//!
//! A connection that waited long enough for its next request gives up its
//! task, buffers and timers (`ParkedConn` keeps only the socket and its
//! counters) and becomes a slot in its shard's lot.  The lot is one task per
//! shard that owns every parked connection, so an idle connection costs its
//! slot and its socket's reactor entry, nothing else: no task of its own, no
//! timer entry, no drain registration.  nginx keeps an idle keep-alive
//! connection as a bare event handler; this is the same idea.
//!
//! * **Readiness.**  Each slot has a waker that names the slot; the parked
//!   socket holds it.  When the socket turns readable (the next request, a
//!   FIN, an error) the waker queues the slot and wakes the lot, which checks
//!   the socket again (a slot is reused, so a wake may be stale) and, if it
//!   is readable, hands the connection back to a full connection task.
//! * **Idle timeout.**  One heap of `(deadline, slot, generation)` and one
//!   timer for its head; entries of connections that left are skipped when
//!   they surface and compacted when they outnumber the live ones.
//! * **Drain.**  One drain registration: a draining shard closes every
//!   parked connection; a config update that removed a listener closes that
//!   listener's (the lot rescans only when the shard's removal count moves).
//!
//! Wakes are shard-local: a parked socket is only ever woken by its own
//! shard's reactor or userspace stack, on the shard's thread, so a slot waker
//! queues its slot in a thread-local list rather than anything shared.
//!
//! It must not read or write the connection's bytes: whatever woke it is for
//! the connection task to read.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use slab::Slab;

use super::{finish_connection, serve_boxed, ConnEnd, ParkedConn};
use crate::runtime::{now, sleep_until, spawn, Sleep};
use crate::shard::{HttpListener, ShardCtx};

/// Parked connections handed back to connection tasks per turn of the lot.
/// When every client closes at once (a load generator stopping), each
/// resumed connection builds its full state only to read the FIN; the
/// budget lets those tasks run and free their state before the next batch
/// is resumed, so the burst peaks at this many states, not at the number of
/// parked connections.
const RESUME_BUDGET: usize = 64;

/// Dead heap entries tolerated beyond the live ones before compacting.
const COMPACT_SLACK: usize = 64;

/// What the connection path and the slot wakers leave for the lot, on the
/// shard's thread.
#[derive(Default)]
struct Mailbox {
    /// Whether this thread's lot task exists (spawned, not yet ended).
    running: bool,
    /// The lot task's waker, once it has been polled.
    lot: Option<Waker>,
    arrivals: Vec<(Rc<HttpListener>, ParkedConn)>,
    woken: Vec<u32>,
}

thread_local! {
    static MAILBOX: RefCell<Mailbox> = RefCell::new(Mailbox::default());
}

/// Parks an idle connection in its shard's lot (starting the lot on first use).
pub(super) fn park(ctx: &Rc<ShardCtx>, listener: Rc<HttpListener>, conn: ParkedConn) {
    let start = MAILBOX.with_borrow_mut(|m| {
        m.arrivals.push((listener, conn));
        if let Some(lot) = &m.lot {
            lot.wake_by_ref();
        }
        !std::mem::replace(&mut m.running, true)
    });
    if start {
        spawn(Lot::new(ctx.clone())).detach();
    }
}

/// A slot's waker: queues the slot for the lot.
struct SlotWaker(u32);

impl Wake for SlotWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // `try_with`: a socket dropped while the thread exits may still wake.
        let _ = MAILBOX.try_with(|m| {
            let mut m = m.borrow_mut();
            m.woken.push(self.0);
            if let Some(lot) = &m.lot {
                lot.wake_by_ref();
            }
        });
    }
}

struct Parked {
    listener: Rc<HttpListener>,
    conn: ParkedConn,
    generation: u32,
}

/// The lot task of one shard.
struct Lot {
    ctx: Rc<ShardCtx>,
    slots: Slab<Parked>,
    /// One waker per slot index, made once and reused by every connection
    /// that takes the slot.
    wakers: Vec<Waker>,
    deadlines: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    next_generation: u32,
    timer: Option<Sleep>,
    drain_key: Option<usize>,
    removals_seen: u64,
    /// Swapped with the mailbox's lists each turn, so neither side allocates
    /// in steady state.
    arrivals: Vec<(Rc<HttpListener>, ParkedConn)>,
    woken: Vec<u32>,
}

impl Lot {
    fn new(ctx: Rc<ShardCtx>) -> Lot {
        let removals_seen = ctx.removals();
        Lot {
            ctx,
            slots: Slab::new(),
            wakers: Vec::new(),
            deadlines: BinaryHeap::new(),
            next_generation: 0,
            timer: None,
            drain_key: None,
            removals_seen,
            arrivals: Vec::new(),
            woken: Vec::new(),
        }
    }

    fn take_in(&mut self, listener: Rc<HttpListener>, conn: ParkedConn) {
        let slot = self.slots.vacant_key();
        if self.wakers.len() <= slot {
            let index = u32::try_from(slot).expect("fewer than 2^32 parked connections");
            self.wakers.push(Waker::from(Arc::new(SlotWaker(index))));
        }
        // Registers the slot's waker with the socket; it may already have
        // spoken while it was being parked.
        if conn.stream.poll_read_ready(&mut Context::from_waker(&self.wakers[slot])).is_ready() {
            self.resume(listener, conn);
            return;
        }
        self.next_generation = self.next_generation.wrapping_add(1);
        let generation = self.next_generation;
        if let Some(deadline) = conn.idle_deadline {
            if self.deadlines.len() >= 2 * self.slots.len() + COMPACT_SLACK {
                let slots = &self.slots;
                self.deadlines.retain(|Reverse((_, s, g))| slots.get(*s as usize).is_some_and(|p| p.generation == *g));
            }
            self.deadlines.push(Reverse((deadline, slot as u32, generation)));
        }
        self.slots.insert(Parked { listener, conn, generation });
    }

    /// Hands the slot's connection back to a connection task if its socket
    /// is readable (the wake may be stale: the slot changed hands).
    fn check(&mut self, slot: usize) {
        let Some(parked) = self.slots.get(slot) else { return };
        if parked.conn.stream.poll_read_ready(&mut Context::from_waker(&self.wakers[slot])).is_ready() {
            let parked = self.slots.remove(slot);
            self.resume(parked.listener, parked.conn);
        }
    }

    fn resume(&self, listener: Rc<HttpListener>, conn: ParkedConn) {
        spawn(serve_boxed(self.ctx.clone(), listener, conn, false, &[])).detach();
    }

    /// Closes the connections whose idle timeout passed; returns the next deadline.
    fn expire(&mut self, now: Instant) -> Option<Instant> {
        while let Some(&Reverse((deadline, slot, generation))) = self.deadlines.peek() {
            let live = self.slots.get(slot as usize).is_some_and(|p| p.generation == generation);
            if live && deadline > now {
                return Some(deadline);
            }
            self.deadlines.pop();
            if live {
                let parked = self.slots.remove(slot as usize);
                parked.listener.stats.downstream_cx_idle_timeout.inc();
                close(parked);
            }
        }
        None
    }

    /// Closes every parked connection, or those of removed listeners.
    fn close_where(&mut self, all: bool) {
        let ctx = &self.ctx;
        let gone: Vec<usize> = self
            .slots
            .iter()
            .filter(|(_, p)| all || ctx.listener_removed(&p.listener.config.name))
            .map(|(slot, _)| slot)
            .collect();
        for slot in gone {
            close(self.slots.remove(slot));
        }
    }
}

fn close(parked: Parked) {
    let ParkedConn { opened, rx_bytes, tx_bytes, .. } = parked.conn;
    finish_connection(&parked.listener, ConnEnd::Local, opened, rx_bytes, tx_bytes);
}

impl Future for Lot {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let lot = &mut *self;
        MAILBOX.with_borrow_mut(|m| {
            if !m.lot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                m.lot = Some(cx.waker().clone());
            }
            std::mem::swap(&mut m.arrivals, &mut lot.arrivals);
            // Woken slots beyond the budget stay queued, in order, for the next turn.
            if lot.woken.is_empty() {
                std::mem::swap(&mut m.woken, &mut lot.woken);
            } else {
                lot.woken.append(&mut m.woken);
            }
        });
        let mut arrivals = std::mem::take(&mut lot.arrivals);
        for (listener, conn) in arrivals.drain(..) {
            lot.take_in(listener, conn);
        }
        lot.arrivals = arrivals;

        let mut woken = std::mem::take(&mut lot.woken);
        let turn = woken.len().min(RESUME_BUDGET);
        for &slot in &woken[..turn] {
            lot.check(slot as usize);
        }
        woken.drain(..turn);
        if !woken.is_empty() {
            cx.waker().wake_by_ref();
        }
        lot.woken = woken;

        if lot.ctx.poll_drain(None, &mut lot.drain_key, cx).is_ready() {
            lot.close_where(true);
            return Poll::Ready(());
        }
        let removals = lot.ctx.removals();
        if removals != lot.removals_seen {
            lot.removals_seen = removals;
            lot.close_where(false);
        }

        loop {
            let Some(next) = lot.expire(now()) else {
                lot.timer = None;
                break;
            };
            if lot.timer.as_ref().is_none_or(|t| t.deadline() != next) {
                lot.timer = Some(sleep_until(next));
            }
            if Pin::new(lot.timer.as_mut().expect("set above")).poll(cx).is_pending() {
                break;
            }
        }
        Poll::Pending
    }
}

impl Drop for Lot {
    fn drop(&mut self) {
        self.ctx.forget_drain_waiter(self.drain_key.take());
        // A later park on this thread starts a new lot.  Connections still
        // in the mailbox are dropped (closed) with it: the shard is ending.
        let leftovers = MAILBOX.try_with(|m| {
            let mut m = m.borrow_mut();
            m.running = false;
            m.lot = None;
            m.woken.clear();
            std::mem::take(&mut m.arrivals)
        });
        drop(leftovers);
    }
}
