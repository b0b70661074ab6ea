//! Jittered exponential back-off for reconnecting the xDS stream, as
//! Envoy's `JitteredExponentialBackOffStrategy`: the n-th retry waits a
//! uniformly random time in `[0, min(base * 2^n, max))`.  Envoy's xDS
//! defaults are 500 ms base and 30 s cap; `envoy_grpc.retry_policy.
//! retry_back_off` changes them.  The random source is passed in so the
//! schedule is testable.

use std::time::Duration;

pub struct Backoff {
    base: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Backoff {
        Backoff { base, max, current: base }
    }

    /// The next wait, given a random number; the ceiling doubles each time.
    pub fn next(&mut self, random: u64) -> Duration {
        let ceiling = self.current.min(self.max);
        self.current = (self.current * 2).min(self.max);
        let ms = ceiling.as_millis().max(1) as u64;
        Duration::from_millis(random % ms)
    }

    /// After a stream got a response: start from `base` again.
    pub fn reset(&mut self) {
        self.current = self.base;
    }

    /// The current ceiling (tests, logs).
    pub fn ceiling(&self) -> Duration {
        self.current.min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_with_jitter_below_the_ceiling() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let ceilings: Vec<u64> = (0..9)
            .map(|_| {
                let c = b.ceiling().as_millis() as u64;
                assert!(b.next(u64::MAX - 1) < Duration::from_millis(c));
                c
            })
            .collect();
        assert_eq!(ceilings, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(500));
        assert_eq!(b.next(7), Duration::from_millis(7));
    }
}
