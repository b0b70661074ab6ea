//! Circuit breakers: one cluster's resource limits per routing priority,
//! enforced across all shards as a single budget (Envoy's
//! `ResourceManagerImpl`).
//!
//! Choice: cheap shared counters.  Every shard's `ClusterRuntime` for the
//! same cluster config holds the same `Arc<ClusterResources>`; a resource is
//! taken with one `fetch_add` on its atomic and given back by dropping the
//! returned [`Guard`] (`fetch_sub`).  Admission is `fetch_add`, then a check
//! of the value it returned against the limit, undone if over — so the
//! limit is exact: at no instant do more than `max` admitted holders exist
//! (error bound 0; a racing loser may see "full" for an instant in which a
//! holder is just leaving, i.e. it may refuse at `max − (shards − 1)` in the
//! worst interleaving, never admit beyond `max`).  The cost is one contended
//! cache line per cluster and resource, touched twice per request — cheaper
//! than per-shard shares with rebalancing, and without their `max / shards`
//! rounding error.
//!
//! The `circuit_breakers.<priority>.*_open` gauges are 1 while a resource is
//! at its limit.  They are refreshed on every admission attempt and every
//! release, by whichever shard moved the counter last; between those events
//! they may lag by one event.
//!
//! Retry budget (`retry_budget`): the retries allowed concurrently are
//! `max(min_retry_concurrency, budget_percent% × (active + pending
//! requests))`, computed from the same shared counters at admission.
//!
//! This module must not know about HTTP or sockets: it counts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use control::model::{CircuitBreakers, Cluster, Thresholds};

use crate::stats::{Gauge, Scope, StatsStore};

/// Which limit a resource counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Connections,
    PendingRequests,
    Requests,
    Retries,
}

const RESOURCES: [Resource; 4] =
    [Resource::Connections, Resource::PendingRequests, Resource::Requests, Resource::Retries];

impl Resource {
    fn index(self) -> usize {
        self as usize
    }

    /// Envoy's gauge leaf (`circuit_breakers.default.<leaf>`).
    fn open_gauge(self) -> &'static str {
        match self {
            Resource::Connections => "cx_open",
            Resource::PendingRequests => "rq_pending_open",
            Resource::Requests => "rq_open",
            Resource::Retries => "rq_retry_open",
        }
    }
}

/// One priority's counters and limits.
pub struct PriorityResources {
    thresholds: Thresholds,
    counts: [AtomicU64; 4],
    open: [Gauge; 4],
}

impl PriorityResources {
    fn new(thresholds: Thresholds, store: &StatsStore, cluster: &str, priority: &str) -> PriorityResources {
        let scope = Scope::Cluster(cluster.to_string());
        let control = store.control_slot();
        let open =
            RESOURCES.map(|r| store.gauge(&scope, &format!("circuit_breakers.{priority}.{}", r.open_gauge()), control));
        for g in &open {
            g.set(0);
        }
        PriorityResources { thresholds, counts: Default::default(), open }
    }

    /// The limit for `r` now (the retry budget depends on the load).
    pub fn limit(&self, r: Resource) -> u64 {
        let t = &self.thresholds;
        match r {
            Resource::Connections => u64::from(t.max_connections),
            Resource::PendingRequests => u64::from(t.max_pending_requests),
            Resource::Requests => u64::from(t.max_requests),
            Resource::Retries => match t.retry_budget {
                None => u64::from(t.max_retries),
                Some(b) => {
                    let load = self.count(Resource::Requests) + self.count(Resource::PendingRequests);
                    let budget = (b.budget_percent / 100.0 * load as f64) as u64;
                    budget.max(u64::from(b.min_retry_concurrency))
                }
            },
        }
    }

    pub fn count(&self, r: Resource) -> u64 {
        self.counts[r.index()].load(Ordering::Relaxed)
    }

    fn refresh(&self, r: Resource) {
        let open = i64::from(self.count(r) >= self.limit(r));
        let gauge = &self.open[r.index()];
        // Read first: the shared line is written only when the state flips.
        if gauge.slot_value() != open {
            gauge.set(open);
        }
    }
}

/// A cluster's resources at both priorities, shared by every shard.
pub struct ClusterResources {
    priorities: [PriorityResources; 2],
}

impl ClusterResources {
    pub fn new(cb: &CircuitBreakers, store: &StatsStore, cluster: &str) -> ClusterResources {
        ClusterResources {
            priorities: [
                PriorityResources::new(cb.thresholds[0], store, cluster, "default"),
                PriorityResources::new(cb.thresholds[1], store, cluster, "high"),
            ],
        }
    }

    /// The shared resources of `cluster` (this config version): every
    /// shard building a runtime for the same `Arc<Cluster>` gets the same
    /// instance.  The registry lock is taken at snapshot builds only.
    pub fn shared(cluster: &Arc<Cluster>, store: &StatsStore) -> Arc<ClusterResources> {
        static REGISTRY: Mutex<Option<HashMap<usize, Weak<ClusterResources>>>> = Mutex::new(None);
        let key = Arc::as_ptr(cluster) as usize;
        let mut reg = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
        let map = reg.get_or_insert_with(HashMap::new);
        map.retain(|_, w| w.strong_count() > 0);
        if let Some(r) = map.get(&key).and_then(Weak::upgrade) {
            return r;
        }
        let r = Arc::new(ClusterResources::new(&cluster.circuit_breakers, store, &cluster.name));
        map.insert(key, Arc::downgrade(&r));
        r
    }

    pub fn priority(&self, high: bool) -> &PriorityResources {
        &self.priorities[usize::from(high)]
    }

    /// Takes one unit of `r` at `priority` if the limit allows.
    pub fn try_acquire(self: &Arc<Self>, high: bool, r: Resource) -> Option<Guard> {
        let p = self.priority(high);
        let limit = p.limit(r);
        let before = p.counts[r.index()].fetch_add(1, Ordering::AcqRel);
        if before >= limit {
            p.counts[r.index()].fetch_sub(1, Ordering::AcqRel);
            p.refresh(r);
            return None;
        }
        p.refresh(r);
        Some(Guard { resources: self.clone(), high, resource: r })
    }

    /// Takes one unit of `r` whatever the limit (connections opened while
    /// counting, e.g. the pool's stale-connection retry).
    pub fn acquire_unchecked(self: &Arc<Self>, high: bool, r: Resource) -> Guard {
        let p = self.priority(high);
        p.counts[r.index()].fetch_add(1, Ordering::AcqRel);
        p.refresh(r);
        Guard { resources: self.clone(), high, resource: r }
    }

    /// Whether `r` is below its limit right now (no reservation).
    pub fn has_room(&self, high: bool, r: Resource) -> bool {
        let p = self.priority(high);
        p.count(r) < p.limit(r)
    }
}

/// One held unit of a resource; dropping it gives the unit back.
pub struct Guard {
    resources: Arc<ClusterResources>,
    high: bool,
    resource: Resource,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let p = self.resources.priority(self.high);
        p.counts[self.resource.index()].fetch_sub(1, Ordering::AcqRel);
        p.refresh(self.resource);
    }
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard").field("resource", &self.resource).field("high", &self.high).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use control::model::RetryBudget;

    fn resources(t: Thresholds) -> Arc<ClusterResources> {
        let store = StatsStore::new(2);
        Arc::new(ClusterResources::new(&CircuitBreakers { thresholds: [t, Thresholds::default()] }, &store, "c"))
    }

    #[test]
    fn envoy_defaults() {
        let t = Thresholds::default();
        assert_eq!((t.max_connections, t.max_pending_requests, t.max_requests, t.max_retries), (1024, 1024, 1024, 3));
    }

    #[test]
    fn admits_up_to_the_limit_and_releases_on_drop() {
        let r = resources(Thresholds { max_requests: 2, ..Default::default() });
        let a = r.try_acquire(false, Resource::Requests).unwrap();
        let b = r.try_acquire(false, Resource::Requests).unwrap();
        assert!(r.try_acquire(false, Resource::Requests).is_none());
        assert_eq!(r.priority(false).count(Resource::Requests), 2);
        assert_eq!(r.priority(false).open[Resource::Requests.index()].value(), 1);
        drop(a);
        assert_eq!(r.priority(false).open[Resource::Requests.index()].value(), 0);
        let c = r.try_acquire(false, Resource::Requests).unwrap();
        drop((b, c));
        assert_eq!(r.priority(false).count(Resource::Requests), 0);
        // The high priority has its own (default) budget.
        assert!(r.try_acquire(true, Resource::Requests).is_some());
    }

    #[test]
    fn zero_limit_admits_nothing() {
        let r = resources(Thresholds { max_retries: 0, ..Default::default() });
        assert!(r.try_acquire(false, Resource::Retries).is_none());
        assert_eq!(r.priority(false).count(Resource::Retries), 0);
    }

    #[test]
    fn retry_budget_scales_with_load() {
        let budget = RetryBudget { budget_percent: 20.0, min_retry_concurrency: 1 };
        let r = resources(Thresholds { retry_budget: Some(budget), max_retries: 100, ..Default::default() });
        // No load: the floor.
        assert_eq!(r.priority(false).limit(Resource::Retries), 1);
        let held: Vec<Guard> = (0..10).map(|_| r.try_acquire(false, Resource::Requests).unwrap()).collect();
        let pending = r.try_acquire(false, Resource::PendingRequests).unwrap();
        // 20% of 11 = 2.2 → 2.
        assert_eq!(r.priority(false).limit(Resource::Retries), 2);
        let a = r.try_acquire(false, Resource::Retries).unwrap();
        let b = r.try_acquire(false, Resource::Retries).unwrap();
        assert!(r.try_acquire(false, Resource::Retries).is_none());
        drop((a, b, held, pending));
        assert_eq!(r.priority(false).limit(Resource::Retries), 1);
    }

    #[test]
    fn one_budget_across_threads() {
        let r = resources(Thresholds { max_requests: 50, ..Default::default() });
        let admitted = AtomicU64::new(0);
        let peak = AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..2_000 {
                        if let Some(g) = r.try_acquire(false, Resource::Requests) {
                            admitted.fetch_add(1, Ordering::Relaxed);
                            peak.fetch_max(r.priority(false).count(Resource::Requests), Ordering::Relaxed);
                            drop(g);
                        }
                    }
                });
            }
        });
        assert!(admitted.load(Ordering::Relaxed) > 0);
        // Counts include transient over-reservations that are undone, so the
        // observed count may touch limit + (threads − 1) for an instant; a
        // holder is only ever admitted below the limit.
        assert!(peak.load(Ordering::Relaxed) <= 50 + 3);
        assert_eq!(r.priority(false).count(Resource::Requests), 0);
    }

    #[test]
    fn shared_by_config_identity() {
        let store = StatsStore::new(1);
        let c = Arc::new(crate::upstream::tests::cluster_for_tests("shared-cb"));
        let a = ClusterResources::shared(&c, &store);
        let b = ClusterResources::shared(&c, &store);
        assert!(Arc::ptr_eq(&a, &b));
        let other = Arc::new((*c).clone());
        assert!(!Arc::ptr_eq(&a, &ClusterResources::shared(&other, &store)));
    }
}
