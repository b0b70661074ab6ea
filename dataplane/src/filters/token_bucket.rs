//! A token bucket shared by every shard: one `AtomicU64`, updated with
//! compare-and-swap, no lock.
//!
//! Envoy's local rate limiters (`envoy.type.v3.TokenBucket`) start full with
//! `max_tokens`, and every `fill_interval` add `tokens_per_fill`, capped at
//! `max_tokens`; each request (or connection) takes one token.  Envoy
//! shares the bucket between its workers ("the rate limits are applied per
//! Envoy process"); so does meshgate, across shards.
//!
//! # Lazy fills, exact counts
//!
//! No timer refills the bucket.  Time is cut into fill epochs since the
//! bucket's origin (`epoch = elapsed / fill_interval`); the state word packs
//! the token count (high 32 bits) with the epoch it was last brought up to
//! date (low 32 bits).  A taker computes the tokens the missed boundaries
//! added, `min(max, tokens + missed × tokens_per_fill)`, and stores
//! `tokens − 1` with the current epoch in one CAS.  Since nothing happens
//! between boundaries, this yields exactly the counts a timer-driven bucket
//! would, at any rate of arrivals.  The clock is an argument (`now`), so the
//! state machine is tested with a virtual clock.
//!
//! # Accuracy under several shards
//!
//! Every take is one successful CAS on the same word, so the bucket never
//! hands out more tokens than the fills produced, whichever shard asks: the
//! limit is exact for the process, not per shard.  Contention costs retries
//! (a lost CAS re-reads and tries again), never accuracy.  The only
//! imprecision is the shards' clocks: each reads its own `Instant` (the
//! shard loop's cached `now()`), which may lag the true time by one loop
//! pass, so a request arriving just after a boundary may still see the old
//! epoch and be refused — the boundary is blurred by at most a loop pass,
//! and the count over any window longer than a fill interval stays exact.
//!
//! Epochs are 32-bit and wrap after 2³² intervals (≥ 6.8 years at the 50 ms
//! minimum); a wrapped difference is read modulo 2³², which is right as
//! long as a bucket is touched at least once per 2³¹ intervals — and when it
//! is not, it is full anyway.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use control::model::TokenBucketSpec;

#[derive(Debug)]
pub struct TokenBucket {
    spec: TokenBucketSpec,
    origin: Instant,
    interval_nanos: u128,
    /// `tokens << 32 | epoch`.
    state: AtomicU64,
}

/// The bucket after a take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Take {
    /// Whether a token was taken.
    pub allowed: bool,
    /// Tokens left after this take.
    pub remaining: u32,
}

fn pack(tokens: u32, epoch: u32) -> u64 {
    (u64::from(tokens) << 32) | u64::from(epoch)
}

fn unpack(state: u64) -> (u32, u32) {
    ((state >> 32) as u32, state as u32)
}

impl TokenBucket {
    /// A full bucket whose fill epochs count from `origin`.
    pub fn new(spec: TokenBucketSpec, origin: Instant) -> TokenBucket {
        let interval_nanos = spec.fill_interval.as_nanos().max(1);
        TokenBucket { spec, origin, interval_nanos, state: AtomicU64::new(pack(spec.max_tokens, 0)) }
    }

    pub fn spec(&self) -> &TokenBucketSpec {
        &self.spec
    }

    fn epoch(&self, now: Instant) -> u32 {
        (now.saturating_duration_since(self.origin).as_nanos() / self.interval_nanos) as u32
    }

    /// `tokens` brought up to epoch `now_epoch` (from `epoch`), and the
    /// epoch to store with them.
    fn refill(&self, tokens: u32, epoch: u32, now_epoch: u32) -> (u32, u32) {
        let missed = now_epoch.wrapping_sub(epoch);
        // Another shard with a slightly later clock may have stored a later
        // epoch: nothing was missed then (and the stored epoch stays).
        if missed == 0 || missed > u32::MAX / 2 {
            return (tokens, epoch);
        }
        let added = u64::from(missed) * u64::from(self.spec.tokens_per_fill);
        let tokens = (u64::from(tokens) + added).min(u64::from(self.spec.max_tokens)) as u32;
        (tokens, now_epoch)
    }

    /// Takes one token if there is one at `now`.
    pub fn try_take(&self, now: Instant) -> Take {
        let now_epoch = self.epoch(now);
        let mut current = self.state.load(Ordering::Acquire);
        loop {
            let (tokens, epoch) = unpack(current);
            let (tokens, epoch) = self.refill(tokens, epoch, now_epoch);
            if tokens == 0 {
                // Nothing to take; the refill (if any) is recomputed by the
                // next taker, so there is nothing worth a CAS here.
                return Take { allowed: false, remaining: 0 };
            }
            match self.state.compare_exchange_weak(
                current,
                pack(tokens - 1, epoch),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Take { allowed: true, remaining: tokens - 1 },
                Err(actual) => current = actual,
            }
        }
    }

    /// Tokens available at `now` (without taking one).
    pub fn available(&self, now: Instant) -> u32 {
        let (tokens, epoch) = unpack(self.state.load(Ordering::Acquire));
        self.refill(tokens, epoch, self.epoch(now)).0
    }

    /// Time from `now` to the next fill boundary.
    pub fn until_next_fill(&self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.origin).as_nanos();
        let into = elapsed % self.interval_nanos;
        Duration::from_nanos((self.interval_nanos - into) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn spec(max: u32, per_fill: u32, ms: u64) -> TokenBucketSpec {
        TokenBucketSpec { max_tokens: max, tokens_per_fill: per_fill, fill_interval: Duration::from_millis(ms) }
    }

    #[test]
    fn starts_full_and_empties() {
        let t0 = Instant::now();
        let b = TokenBucket::new(spec(3, 1, 1000), t0);
        assert_eq!(b.try_take(t0), Take { allowed: true, remaining: 2 });
        assert_eq!(b.try_take(t0), Take { allowed: true, remaining: 1 });
        assert_eq!(b.try_take(t0), Take { allowed: true, remaining: 0 });
        assert_eq!(b.try_take(t0 + Duration::from_millis(999)), Take { allowed: false, remaining: 0 });
    }

    #[test]
    fn fills_at_each_boundary_and_caps() {
        let t0 = Instant::now();
        let b = TokenBucket::new(spec(5, 2, 100), t0);
        for _ in 0..5 {
            assert!(b.try_take(t0).allowed);
        }
        assert!(!b.try_take(t0 + Duration::from_millis(99)).allowed);
        // One boundary: two tokens.
        assert_eq!(b.available(t0 + Duration::from_millis(100)), 2);
        assert!(b.try_take(t0 + Duration::from_millis(150)).allowed);
        assert!(b.try_take(t0 + Duration::from_millis(150)).allowed);
        assert!(!b.try_take(t0 + Duration::from_millis(199)).allowed);
        // Ten boundaries later: capped at max_tokens.
        assert_eq!(b.available(t0 + Duration::from_millis(1200)), 5);
    }

    #[test]
    fn rate_over_a_long_window_is_exact() {
        // 10 tokens per 100 ms for 10 s, asked far more often than that.
        let t0 = Instant::now();
        let b = TokenBucket::new(spec(10, 10, 100), t0);
        let mut allowed = 0;
        for step in 0..100_000u64 {
            if b.try_take(t0 + Duration::from_micros(step * 100)).allowed {
                allowed += 1;
            }
        }
        // Initial 10, plus 99 fills of 10 (boundaries 100 ms .. 9.9 s).
        assert_eq!(allowed, 10 + 99 * 10);
    }

    #[test]
    fn a_later_epoch_stored_by_another_clock_is_kept() {
        let t0 = Instant::now();
        let b = TokenBucket::new(spec(2, 1, 100), t0);
        assert!(b.try_take(t0 + Duration::from_millis(250)).allowed); // epoch 2
                                                                      // A shard whose clock lags reads epoch 1: no refill, no rollback.
        assert!(b.try_take(t0 + Duration::from_millis(150)).allowed);
        assert!(!b.try_take(t0 + Duration::from_millis(150)).allowed);
        assert_eq!(b.available(t0 + Duration::from_millis(300)), 1);
    }

    #[test]
    fn until_next_fill() {
        let t0 = Instant::now();
        let b = TokenBucket::new(spec(1, 1, 1000), t0);
        assert_eq!(b.until_next_fill(t0 + Duration::from_millis(250)), Duration::from_millis(750));
        assert_eq!(b.until_next_fill(t0), Duration::from_millis(1000));
    }

    #[test]
    fn threads_never_take_more_than_was_filled() {
        let t0 = Instant::now();
        let b = Arc::new(TokenBucket::new(spec(1000, 1, 1_000_000), t0));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || (0..1000).filter(|_| b.try_take(t0).allowed).count())
            })
            .collect();
        let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(total, 1000);
    }
}
