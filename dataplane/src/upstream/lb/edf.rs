//! Earliest-deadline-first scheduling, Envoy's weighted round robin.
//!
//! Each entry is due at `now + 1 / weight`; a pick takes the entry due
//! first, advances the clock to its deadline and puts it back with a
//! deadline computed from its weight *at that moment*, which is how
//! weighted LEAST_REQUEST folds active requests in.  Ties go to the entry
//! added first, so equal deadlines interleave in insertion order.  The
//! result is a smooth sequence: weights 3:1 give a b a a, not a a a b.
//! The heap keeps its capacity, so a pick allocates nothing.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

#[derive(Clone, Copy, Debug)]
struct Entry {
    deadline: f64,
    order: u64,
    host: u32,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    /// Reversed: `BinaryHeap` is a max-heap and the earliest deadline must
    /// come out first.
    fn cmp(&self, other: &Self) -> Ordering {
        other.deadline.total_cmp(&self.deadline).then_with(|| other.order.cmp(&self.order))
    }
}

#[derive(Clone, Debug, Default)]
pub struct Edf {
    heap: BinaryHeap<Entry>,
    now: f64,
    next_order: u64,
}

impl Edf {
    /// Schedules `hosts` with their initial weights, then skips `offset`
    /// picks so shards (and restarts) do not all start on the same host,
    /// as Envoy's `createWithPicks` does with its random seed.
    pub fn new(hosts: impl Iterator<Item = (u32, f64)>, offset: usize, mut weight: impl FnMut(u32) -> f64) -> Edf {
        let mut edf = Edf::default();
        for (host, w) in hosts {
            edf.add(host, w);
        }
        if !edf.heap.is_empty() {
            for _ in 0..offset % edf.heap.len() {
                edf.pick(&mut weight);
            }
        }
        edf
    }

    fn add(&mut self, host: u32, weight: f64) {
        // A weight that rounds to nothing would never come due; keep it
        // schedulable but last.
        let weight = if weight > 0.0 && weight.is_finite() { weight } else { f64::MIN_POSITIVE };
        self.heap.push(Entry { deadline: self.now + 1.0 / weight, order: self.next_order, host });
        self.next_order += 1;
    }

    /// The host due first; it is rescheduled with `weight(host)` as of now.
    pub fn pick(&mut self, mut weight: impl FnMut(u32) -> f64) -> Option<u32> {
        let e = self.heap.pop()?;
        self.now = e.deadline;
        self.add(e.host, weight(e.host));
        Some(e.host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_sequence_is_smooth_and_exact() {
        let weights = [3.0, 1.0];
        let mut edf = Edf::new([(0, 3.0), (1, 1.0)].into_iter(), 0, |h| weights[h as usize]);
        let seq: Vec<u32> = (0..400).map(|_| edf.pick(|h| weights[h as usize]).unwrap()).collect();
        assert_eq!(seq.iter().filter(|h| **h == 1).count(), 100);
        // Host 1 comes up within every stretch of five picks: interleaved,
        // not served in one block per cycle.
        assert!(seq.windows(5).all(|w| w.contains(&1)), "{seq:?}");
    }

    #[test]
    fn equal_weights_alternate_in_insertion_order() {
        let mut edf = Edf::new([(7, 1.0), (9, 1.0)].into_iter(), 0, |_| 1.0);
        let seq: Vec<u32> = (0..4).map(|_| edf.pick(|_| 1.0).unwrap()).collect();
        assert_eq!(seq, vec![7, 9, 7, 9]);
    }

    #[test]
    fn offset_rotates_the_start() {
        let mut edf = Edf::new([(0, 1.0), (1, 1.0), (2, 1.0)].into_iter(), 4, |_| 1.0);
        assert_eq!(edf.pick(|_| 1.0), Some(1));
    }

    #[test]
    fn empty_schedule_picks_nothing() {
        let mut edf = Edf::new(std::iter::empty(), 3, |_| 1.0);
        assert_eq!(edf.pick(|_| 1.0), None);
    }
}
