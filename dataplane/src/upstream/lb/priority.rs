//! Envoy's priority load computation: how much of the traffic each
//! priority level gets, given how healthy each level is, and which levels
//! are in panic.
//!
//! Pure arithmetic over per-level counts, shared by a cluster's own
//! balancer and by aggregate clusters (whose levels are the linearized
//! levels of their members).  It mirrors `LoadBalancerBase::
//! recalculatePerPriorityState` / `recalculatePerPriorityPanic` /
//! `recalculateLoadInTotalPanic` / `choosePriority`, integer rounding
//! included, so a config spills over at exactly the points Envoy's does.
//! Degraded hosts do not exist here (health checks report healthy or
//! unhealthy only), so the degraded half of Envoy's computation is always
//! zero and left out.

/// What the computation needs to know about one priority level.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LevelHealth {
    /// Hosts in the level (healthy or not).
    pub hosts: u64,
    /// Healthy hosts in the level.
    pub healthy_hosts: u64,
    /// Healthy and total amounts the level's health is computed from:
    /// host counts, or weights with `weighted_priority_health`.
    pub healthy_amount: u64,
    pub total_amount: u64,
    /// `overprovisioning_factor`, percent (Envoy's default 140).
    pub overprovisioning_factor: u32,
}

impl LevelHealth {
    /// min(100, factor × healthy / total): a level with 1/1.4 ≈ 72% of its
    /// hosts healthy still counts as fully healthy.
    pub fn health(&self) -> u32 {
        if self.total_amount == 0 {
            return 0;
        }
        let h = u64::from(self.overprovisioning_factor).saturating_mul(self.healthy_amount) / self.total_amount;
        h.min(100) as u32
    }

    /// Envoy's `isHostSetInPanic`: the healthy share (by count) is below
    /// the threshold.  An empty level is always in panic.
    fn in_panic(&self, threshold: u32) -> bool {
        let healthy_percent = if self.hosts == 0 { 0.0 } else { 100.0 * self.healthy_hosts as f64 / self.hosts as f64 };
        healthy_percent < f64::from(threshold)
    }
}

/// Per-level traffic share (percent, summing to 100) and panic flags.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PriorityLoads {
    pub load: Vec<u32>,
    pub panic: Vec<bool>,
}

impl PriorityLoads {
    /// Recomputes the loads for `levels` in place (no allocation once the
    /// vectors have grown to the number of levels).
    pub fn compute(&mut self, levels: &[LevelHealth], panic_threshold: u32) {
        let n = levels.len();
        self.load.clear();
        self.load.resize(n, 0);
        self.panic.clear();
        self.panic.resize(n, false);
        if n == 0 {
            return;
        }
        let panic_threshold = panic_threshold.min(100);
        let total: u32 = levels.iter().map(|l| l.health()).sum::<u32>().min(100);
        if total > 0 {
            // Each level gets its health scaled to the normalized total, as
            // much as is left; the rounding remainder goes to the first
            // level with any health.
            let mut remaining = 100u32;
            let mut first_available = None;
            for (i, l) in levels.iter().enumerate() {
                let health = l.health();
                if first_available.is_none() && health > 0 {
                    first_available = Some(i);
                }
                let share = (health * 100).checked_div(total).unwrap_or(0).min(remaining);
                self.load[i] = share;
                remaining -= share;
            }
            if remaining > 0 {
                if let Some(i) = first_available {
                    self.load[i] += remaining;
                }
            }
        }
        if panic_threshold == 0 && total == 0 {
            // Panic disabled and nothing healthy: Envoy points the load at
            // P0, where the pick then finds no healthy host.
            self.load[0] = 100;
            return;
        }
        let mut total_panic = true;
        for (i, l) in levels.iter().enumerate() {
            // At 100% normalized health there are enough healthy hosts
            // somewhere: no level panics, however sick it is itself.
            self.panic[i] = total < 100 && l.in_panic(panic_threshold);
            total_panic &= self.panic[i];
        }
        if total_panic {
            self.total_panic(levels);
        }
    }

    /// Every level is in panic: spread by host count regardless of health.
    fn total_panic(&mut self, levels: &[LevelHealth]) {
        let hosts: u64 = levels.iter().map(|l| l.hosts).sum();
        if hosts == 0 {
            self.load.iter_mut().for_each(|l| *l = 0);
            self.load[0] = 100;
            return;
        }
        let mut remaining = 100u32;
        let mut first_nonempty = None;
        for (i, l) in levels.iter().enumerate() {
            if first_nonempty.is_none() && l.hosts > 0 {
                first_nonempty = Some(i);
            }
            let share = (100 * l.hosts / hosts) as u32;
            self.load[i] = share;
            remaining -= share;
        }
        if let Some(i) = first_nonempty {
            self.load[i] += remaining;
        }
    }

    /// Envoy's `choosePriority`: `hash % 100 + 1` against the cumulative loads.
    pub fn choose(&self, hash: u64) -> usize {
        let point = (hash % 100 + 1) as u32;
        let mut acc = 0u32;
        for (i, l) in self.load.iter().enumerate() {
            acc += l;
            if point <= acc {
                return i;
            }
        }
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(hosts: u64, healthy: u64) -> LevelHealth {
        LevelHealth {
            hosts,
            healthy_hosts: healthy,
            healthy_amount: healthy,
            total_amount: hosts,
            overprovisioning_factor: 140,
        }
    }

    fn loads(levels: &[LevelHealth]) -> (Vec<u32>, Vec<bool>) {
        let mut p = PriorityLoads::default();
        p.compute(levels, 50);
        (p.load, p.panic)
    }

    #[test]
    fn healthy_primary_takes_everything() {
        assert_eq!(loads(&[level(4, 4), level(4, 4)]).0, vec![100, 0]);
        // 3 of 4 healthy: 140 * 3 / 4 = 105 → still 100%.
        assert_eq!(loads(&[level(4, 3), level(4, 4)]).0, vec![100, 0]);
    }

    #[test]
    fn spill_over_follows_overprovisioning() {
        // 1 of 2 healthy: health 70, the backup takes the remaining 30.
        assert_eq!(loads(&[level(2, 1), level(2, 2)]), (vec![70, 30], vec![false, false]));
        // Primary down: everything to the backup, no panic anywhere.
        assert_eq!(loads(&[level(1, 0), level(1, 1)]), (vec![0, 100], vec![false, false]));
        // Three levels, 20% / 20% / 100% healthy (of 10): 28 + 28 + 44.
        assert_eq!(loads(&[level(10, 2), level(10, 2), level(10, 10)]).0, vec![28, 28, 44]);
    }

    /// The table in Envoy's panic threshold documentation.
    #[test]
    fn envoy_panic_table() {
        let l = |p0: u64, p1: u64| loads(&[level(100, p0), level(100, p1)]);
        assert_eq!(l(72, 72), (vec![100, 0], vec![false, false]));
        assert_eq!(l(71, 71), (vec![99, 1], vec![false, false]));
        assert_eq!(l(50, 60), (vec![70, 30], vec![false, false]));
        assert_eq!(l(25, 100), (vec![35, 65], vec![false, false]));
        assert_eq!(l(25, 25), (vec![50, 50], vec![true, true]));
        // The docs print 7 / 93; Envoy's integer code gives the rounding
        // remainder to the first healthy level: 7 + 1 and 92.
        assert_eq!(l(5, 65), (vec![8, 92], vec![true, false]));
    }

    #[test]
    fn total_panic_spreads_by_host_count() {
        let (load, panic) = loads(&[level(1, 0), level(3, 0)]);
        assert_eq!(load, vec![25, 75]);
        assert_eq!(panic, vec![true, true]);
        // Empty levels are in panic too and get nothing.
        assert_eq!(loads(&[level(0, 0), level(2, 0)]).0, vec![0, 100]);
        assert_eq!(loads(&[level(0, 0)]).0, vec![100]);
    }

    #[test]
    fn panic_disabled_points_at_p0() {
        let mut p = PriorityLoads::default();
        p.compute(&[level(1, 0), level(1, 0)], 0);
        assert_eq!(p.load, vec![100, 0]);
        assert_eq!(p.panic, vec![false, false]);
    }

    #[test]
    fn choose_walks_cumulative_loads() {
        let p = PriorityLoads { load: vec![70, 30], panic: vec![false, false] };
        assert_eq!(p.choose(0), 0); // point 1
        assert_eq!(p.choose(69), 0); // point 70
        assert_eq!(p.choose(70), 1); // point 71
        assert_eq!(p.choose(99), 1);
        let counts = (0..10_000u64).fold([0u32; 2], |mut c, h| {
            c[p.choose(h)] += 1;
            c
        });
        assert_eq!(counts, [7000, 3000]);
    }

    #[test]
    fn weighted_priority_health_uses_amounts() {
        // Two hosts, weights 3 and 1; the weight-3 one is down.
        let l = LevelHealth {
            hosts: 2,
            healthy_hosts: 1,
            healthy_amount: 1,
            total_amount: 4,
            overprovisioning_factor: 140,
        };
        assert_eq!(l.health(), 35);
    }
}
