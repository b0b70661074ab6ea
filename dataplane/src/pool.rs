//! Per-shard free lists that give memory back.
//!
//! The request path reuses what it can (receive buffers, connection state,
//! the userspace stack's sockets) instead of allocating and zeroing afresh;
//! this module owns the one rule all those lists follow, so that a burst's
//! peak does not stay resident for good.  It knows nothing of what it pools.

/// A shard's free list (of byte buffers, connection states, sockets) that
/// gives back what it does not use.
///
/// A burst of busy connections leaves as many buffers in the pool as were in
/// use at its peak; kept for ever they would be most of the memory of the
/// idle connections that follow (each idle keep-alive connection would
/// "cost" its share of the burst).  So each buffer is stamped with the
/// interval it was last given back in, and `trim` (the shard's one-second
/// sweep) frees those that sat in the pool through a whole interval.  Taking
/// is last-in first-out, so the buffers a steady load cycles through are
/// always the freshest and survive every trim: steady load allocates nothing,
/// whatever mix of buffer sizes it uses.
pub(crate) struct DecayingPool<T = Vec<u8>> {
    free: Vec<(T, u32)>,
    interval: u32,
    limit: usize,
}

impl<T> DecayingPool<T> {
    pub(crate) const fn new(limit: usize) -> DecayingPool<T> {
        DecayingPool { free: Vec::new(), interval: 0, limit }
    }

    pub(crate) fn pop_where(&mut self, wanted: impl Fn(&T) -> bool) -> Option<T> {
        let at = self.free.iter().rposition(|(buf, _)| wanted(buf))?;
        Some(self.free.remove(at).0)
    }

    pub(crate) fn push(&mut self, buf: T) {
        if self.free.len() < self.limit {
            self.free.push((buf, self.interval));
        }
    }

    /// Frees the buffers not given back since the last trim; returns how many.
    pub(crate) fn trim(&mut self) -> usize {
        let before = self.free.len();
        let current = self.interval;
        // The list keeps its capacity (32 bytes a slot, at most `limit`):
        // shrinking it would allocate again on the next release.
        self.free.retain(|(_, given_back)| *given_back == current);
        self.interval = current.wrapping_add(1);
        before - self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::DecayingPool;

    fn pool_with(n: usize) -> DecayingPool {
        let mut pool = DecayingPool::new(16);
        for _ in 0..n {
            pool.push(vec![0; 8]);
        }
        pool
    }

    #[test]
    fn first_trim_only_starts_the_interval() {
        let mut pool = pool_with(5);
        assert_eq!(pool.trim(), 0);
        assert_eq!(pool.free.len(), 5);
    }

    #[test]
    fn buffers_unused_for_a_whole_interval_are_freed() {
        let mut pool = pool_with(5);
        pool.trim();
        // The load draws at most 2 at once: the first trim frees the 3 that
        // stayed in the pool all along; the same load again frees nothing
        // more, so it keeps allocating nothing.
        for freed in [3, 0] {
            let a = pool.pop_where(|_| true).unwrap();
            let b = pool.pop_where(|_| true).unwrap();
            pool.push(a);
            pool.push(b);
            assert_eq!(pool.trim(), freed);
            assert_eq!(pool.free.len(), 2);
        }
    }

    #[test]
    fn an_idle_pool_empties_within_two_intervals() {
        let mut pool = pool_with(4);
        pool.trim();
        assert_eq!(pool.trim(), 4);
        assert!(pool.free.is_empty());
    }

    #[test]
    fn a_size_in_use_survives_beside_one_that_is_not() {
        let mut pool = DecayingPool::new(16);
        pool.push(vec![0; 16]);
        pool.push(vec![0; 8]);
        pool.trim();
        for _ in 0..3 {
            let big = pool.pop_where(|b| b.len() == 16).unwrap();
            pool.push(big);
        }
        assert_eq!(pool.trim(), 1);
        assert_eq!(pool.free.len(), 1);
        assert_eq!(pool.free[0].0.len(), 16);
    }

    #[test]
    fn pushes_beyond_the_limit_are_dropped() {
        let pool = pool_with(20);
        assert_eq!(pool.free.len(), 16);
    }
}
