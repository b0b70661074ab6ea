//! When a busy-polled queue may stop spinning.
//!
//! A shard on a NIC queue polls it on every pass of its loop: the device has
//! no interrupt the loop could sleep on, and on a core of its own that spin is
//! what buys the latency.  On a machine where the shard shares its core with
//! the load generator, the origin or the kernel's own packet work (a laptop, a
//! two-core VM, the veth testbed), every empty poll is time taken from them.
//! F-Stack answers this with `idle_sleep` (sleep that many microseconds when
//! a poll found nothing); meshgate does the same, but only once the queue has
//! been empty for as long as one nap lasts: the ski-rental rule, spin while
//! spinning has cost less than a sleep would, so a busy queue never sleeps
//! and an idle one wastes at most half of its core.
//!
//! Sans-IO: the caller passes the time in; no clock, no sleeping here.

use std::time::{Duration, Instant};

/// The nap decision of one busy-polled stack (see the module essay).
#[derive(Debug, Clone, Copy)]
pub struct IdleNap {
    nap: Duration,
    idle_since: Option<Instant>,
}

impl IdleNap {
    /// `nap` zero: always spin (the default, right for isolated cores).
    pub fn new(nap: Duration) -> IdleNap {
        IdleNap { nap, idle_since: None }
    }

    /// Called once per loop pass with whether the pass moved frames or had
    /// stack work pending; returns how long the loop may sleep now.
    pub fn after_pass(&mut self, now: Instant, worked: bool) -> Option<Duration> {
        if self.nap.is_zero() || worked {
            self.idle_since = None;
            return None;
        }
        let since = *self.idle_since.get_or_insert(now);
        (now.saturating_duration_since(since) >= self.nap).then_some(self.nap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAP: Duration = Duration::from_micros(50);

    #[test]
    fn a_zero_nap_always_spins() {
        let t0 = Instant::now();
        let mut idle = IdleNap::new(Duration::ZERO);
        for us in [0, 10, 1_000, 1_000_000] {
            assert_eq!(idle.after_pass(t0 + Duration::from_micros(us), false), None);
        }
    }

    #[test]
    fn an_empty_queue_spins_for_one_nap_then_naps_on_every_pass() {
        let t0 = Instant::now();
        let mut idle = IdleNap::new(NAP);
        assert_eq!(idle.after_pass(t0, false), None);
        assert_eq!(idle.after_pass(t0 + Duration::from_micros(49), false), None);
        assert_eq!(idle.after_pass(t0 + NAP, false), Some(NAP));
        assert_eq!(idle.after_pass(t0 + Duration::from_micros(120), false), Some(NAP));
    }

    #[test]
    fn any_work_restarts_the_spin() {
        let t0 = Instant::now();
        let mut idle = IdleNap::new(NAP);
        assert_eq!(idle.after_pass(t0, false), None);
        assert_eq!(idle.after_pass(t0 + Duration::from_micros(60), false), Some(NAP));
        assert_eq!(idle.after_pass(t0 + Duration::from_micros(61), true), None);
        // Idle again from 70 µs: no nap until 120 µs.
        assert_eq!(idle.after_pass(t0 + Duration::from_micros(70), false), None);
        assert_eq!(idle.after_pass(t0 + Duration::from_micros(119), false), None);
        assert_eq!(idle.after_pass(t0 + Duration::from_micros(120), false), Some(NAP));
    }
}
