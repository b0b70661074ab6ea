//! Load balancing: which host of a cluster serves the next request.
//!
//! This module owns Envoy's balancing semantics for one cluster on one
//! shard, as a sans-IO state machine over host *indices*: priority levels
//! and their health (overprovisioning factor, spill-over, panic), the
//! per-level pickers (round robin and least request, unweighted or EDF;
//! random; ring hash; Maglev), the request hash of a route's
//! `hash_policy`, and the back-off arithmetic for hosts whose connections
//! fail.  It must not know about sockets, pools, stats or time sources:
//! `upstream::ClusterRuntime` feeds it health changes and reads picks.
//!
//! Cost model: everything that depends on the host set — level membership,
//! EDF schedules, rings, Maglev tables, priority loads — is rebuilt when a
//! host's health flips or the host list changes, never per request.  A pick
//! is a few integer operations, one heap pop/push (weighted), a binary
//! search (ring) or an index (Maglev), and allocates nothing.
//!
//! Health comes from outside through `set_healthy`: the shard's passive
//! connect-failure back-off (a jittered, doubling back-off), and the
//! cross-shard view of outlier ejection and active health checks
//! (`upstream::outlier`, `upstream::health_check`).

mod edf;
mod hash;
mod maglev;
mod priority;
mod ring;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::time::Duration;

use control::model::{Cluster, LbPolicy};

pub use hash::{request_hash, HashInput};
pub use priority::{LevelHealth, PriorityLoads};

use edf::Edf;
use maglev::Maglev;
use ring::{Ring, RingHost};

/// A host as the balancer sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LbHost {
    pub addr: SocketAddr,
    /// `load_balancing_weight` (≥ 1).
    pub weight: u32,
    pub priority: u32,
}

/// SplitMix64: cheap, shard-local, good enough to spread picks (Envoy's
/// random LB and P2C need no cryptographic randomness either).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

thread_local! {
    static GENERATION: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn next_generation() -> u64 {
    GENERATION.with(|g| {
        g.set(g.get() + 1);
        g.get()
    })
}

/// First back-off after a failed connect, and the cap it doubles up to.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// How long a host stays out after its `failures`-th consecutive connect
/// failure: 1 s doubling to 30 s, drawn from [d/2, d) so hosts that failed
/// together (one upstream restart) are not all retried in the same instant.
pub fn backoff(failures: u32, random: u64) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    let d = BACKOFF_BASE.saturating_mul(1 << doublings).min(BACKOFF_MAX);
    let half = d / 2;
    let jitter_ns = random % (half.as_nanos() as u64).max(1);
    half + Duration::from_nanos(jitter_ns)
}

/// The per-level host chooser, built over the level's candidates: its
/// healthy hosts, or all of them when the level is in panic.
#[derive(Debug)]
enum Picker {
    Empty,
    /// Equal weights (or RANDOM): round robin cursor, P2C or uniform.
    Unweighted(Vec<u32>),
    /// Unequal weights with ROUND_ROBIN or LEAST_REQUEST.
    Edf(Edf),
    Ring(Ring),
    Maglev(Maglev),
}

#[derive(Debug)]
struct Level {
    /// Every host of this priority, in configuration order.
    hosts: Vec<u32>,
    picker: Picker,
    /// Round-robin position; survives rebuilds, as Envoy's per-source index does.
    cursor: u64,
}

/// One cluster's balancer on one shard.
#[derive(Debug)]
pub struct Balancer {
    policy: LbPolicy,
    overprovisioning_factor: u32,
    weighted_priority_health: bool,
    panic_threshold: u32,
    hosts: Vec<LbHost>,
    /// `ip:port`, the key hashing LBs place hosts by.
    keys: Vec<String>,
    healthy: Vec<bool>,
    levels: Vec<Level>,
    health: Vec<LevelHealth>,
    loads: PriorityLoads,
    rng: Rng,
    /// EDF start offset, fixed per balancer (Envoy's per-LB seed).
    seed: u64,
    /// Changes on every change aggregate clusters must notice; unique per
    /// shard thread, so a replaced balancer never repeats an old value.
    generation: u64,
}

/// A pick: the host index and whether its level was in panic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pick {
    pub host: u32,
    pub panic: bool,
}

impl Balancer {
    /// All hosts start healthy except those listed in `unhealthy`.
    pub fn new(cluster: &Cluster, hosts: Vec<LbHost>, unhealthy: &[bool], seed: u64) -> Balancer {
        let levels_n = hosts.iter().map(|h| h.priority as usize + 1).max().unwrap_or(0);
        let mut levels: Vec<Level> =
            (0..levels_n).map(|_| Level { hosts: Vec::new(), picker: Picker::Empty, cursor: seed }).collect();
        for (i, h) in hosts.iter().enumerate() {
            levels[h.priority as usize].hosts.push(i as u32);
        }
        let healthy = (0..hosts.len()).map(|i| !unhealthy.get(i).copied().unwrap_or(false)).collect();
        let keys = hosts.iter().map(|h| h.addr.to_string()).collect();
        let mut b = Balancer {
            policy: cluster.lb_policy,
            overprovisioning_factor: cluster.overprovisioning_factor,
            weighted_priority_health: cluster.weighted_priority_health,
            panic_threshold: cluster.healthy_panic_threshold,
            hosts,
            keys,
            healthy,
            levels,
            health: Vec::new(),
            loads: PriorityLoads::default(),
            rng: Rng::new(seed),
            seed,
            generation: next_generation(),
        };
        b.health = (0..b.levels.len()).map(|l| b.level_health(l)).collect();
        b.loads.compute(&b.health, b.panic_threshold);
        for l in 0..b.levels.len() {
            b.rebuild_level(l);
        }
        b
    }

    pub fn hosts(&self) -> &[LbHost] {
        &self.hosts
    }

    pub fn is_healthy(&self, host: usize) -> bool {
        self.healthy[host]
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Health and size of every priority level (for aggregate clusters).
    pub fn levels(&self) -> &[LevelHealth] {
        &self.health
    }

    pub fn loads(&self) -> &PriorityLoads {
        &self.loads
    }

    /// Marks a host (un)healthy and rebuilds what depends on it: its level's
    /// picker, the priority loads, and any level whose panic state flipped.
    pub fn set_healthy(&mut self, host: usize, healthy: bool) {
        if self.healthy[host] == healthy {
            return;
        }
        self.healthy[host] = healthy;
        let level = self.hosts[host].priority as usize;
        self.health[level] = self.level_health(level);
        let before = self.loads.panic.clone();
        self.loads.compute(&self.health, self.panic_threshold);
        for l in 0..self.levels.len() {
            if l == level || before.get(l) != self.loads.panic.get(l) {
                self.rebuild_level(l);
            }
        }
        self.generation = next_generation();
    }

    fn level_health(&self, level: usize) -> LevelHealth {
        let hosts = &self.levels[level].hosts;
        let mut h = LevelHealth { overprovisioning_factor: self.overprovisioning_factor, ..LevelHealth::default() };
        for &i in hosts {
            let i = i as usize;
            let amount = if self.weighted_priority_health { u64::from(self.hosts[i].weight) } else { 1 };
            h.hosts += 1;
            h.total_amount += amount;
            if self.healthy[i] {
                h.healthy_hosts += 1;
                h.healthy_amount += amount;
            }
        }
        h
    }

    fn rebuild_level(&mut self, level: usize) {
        let panic = self.loads.panic.get(level).copied().unwrap_or(false);
        let candidates: Vec<u32> =
            self.levels[level].hosts.iter().copied().filter(|&i| panic || self.healthy[i as usize]).collect();
        let picker = if candidates.is_empty() {
            Picker::Empty
        } else {
            match self.policy {
                LbPolicy::RingHash { minimum_ring_size, maximum_ring_size } => {
                    Picker::Ring(Ring::build(&self.ring_hosts(&candidates), minimum_ring_size, maximum_ring_size))
                }
                LbPolicy::Maglev { table_size } => {
                    Picker::Maglev(Maglev::build(&self.ring_hosts(&candidates), table_size))
                }
                LbPolicy::RoundRobin | LbPolicy::LeastRequest { .. } if !self.equal_weights(&candidates) => {
                    let weights: Vec<f64> = self.hosts.iter().map(|h| f64::from(h.weight)).collect();
                    Picker::Edf(Edf::new(
                        candidates.iter().map(|&i| (i, weights[i as usize])),
                        self.seed as usize,
                        |i| weights[i as usize],
                    ))
                }
                _ => Picker::Unweighted(candidates),
            }
        };
        self.levels[level].picker = picker;
    }

    fn ring_hosts(&self, candidates: &[u32]) -> Vec<RingHost<'_>> {
        candidates
            .iter()
            .map(|&i| RingHost { host: i, key: &self.keys[i as usize], weight: self.hosts[i as usize].weight })
            .collect()
    }

    fn equal_weights(&self, candidates: &[u32]) -> bool {
        let w = self.hosts[candidates[0] as usize].weight;
        candidates.iter().all(|&i| self.hosts[i as usize].weight == w)
    }

    /// Picks a host.  `hash` is the request hash (consistent-hashing
    /// policies only; without one they pick at random, as Envoy does);
    /// `active(host)` is the host's active request count (LEAST_REQUEST).
    pub fn pick(&mut self, hash: Option<u64>, active: &dyn Fn(u32) -> u32) -> Option<Pick> {
        let h = match hash {
            Some(h) if self.policy.uses_hash() => h,
            _ => self.rng.next_u64(),
        };
        let level = self.loads.choose(h);
        self.pick_in_level(level, Some(h), active)
    }

    /// Picks within one priority level (aggregate clusters choose the level).
    pub fn pick_in_level(&mut self, level: usize, hash: Option<u64>, active: &dyn Fn(u32) -> u32) -> Option<Pick> {
        let panic = self.loads.panic.get(level).copied().unwrap_or(false);
        let policy = self.policy;
        let l = self.levels.get_mut(level)?;
        let host = match &mut l.picker {
            Picker::Empty => return None,
            Picker::Ring(r) => r.pick(hash.unwrap_or_else(|| self.rng.next_u64()))?,
            Picker::Maglev(m) => m.pick(hash.unwrap_or_else(|| self.rng.next_u64()))?,
            Picker::Edf(e) => {
                let hosts = &self.hosts;
                match policy {
                    LbPolicy::LeastRequest { active_request_bias, .. } => e.pick(|i| {
                        let w = f64::from(hosts[i as usize].weight);
                        let load = f64::from(active(i)) + 1.0;
                        if active_request_bias == 0.0 {
                            w
                        } else if active_request_bias == 1.0 {
                            w / load
                        } else {
                            w / load.powf(active_request_bias)
                        }
                    })?,
                    _ => e.pick(|i| f64::from(hosts[i as usize].weight))?,
                }
            }
            Picker::Unweighted(c) => match policy {
                LbPolicy::LeastRequest { choice_count, .. } => {
                    // Power of N choices: the least loaded of N random
                    // candidates; the first sample wins ties.
                    let mut best = c[(self.rng.next_u64() % c.len() as u64) as usize];
                    for _ in 1..choice_count {
                        let s = c[(self.rng.next_u64() % c.len() as u64) as usize];
                        if active(s) < active(best) {
                            best = s;
                        }
                    }
                    best
                }
                LbPolicy::Random => c[(self.rng.next_u64() % c.len() as u64) as usize],
                _ => {
                    let i = c[(l.cursor % c.len() as u64) as usize];
                    l.cursor = l.cursor.wrapping_add(1);
                    i
                }
            },
        };
        Some(Pick { host, panic })
    }

    /// A random number from the balancer's generator (back-off jitter,
    /// aggregate level choice).
    pub fn random(&mut self) -> u64 {
        self.rng.next_u64()
    }
}

/// An aggregate cluster's view of its members: their non-empty priority
/// levels linearized in member order (Envoy's `linearizePrioritySet`), and
/// the loads computed over them with the aggregate's own panic threshold.
#[derive(Debug, Default)]
pub struct Linearized {
    /// (member index, level within the member) per linearized level.
    pub entries: Vec<(usize, usize)>,
    pub loads: PriorityLoads,
    health: Vec<LevelHealth>,
    /// Member generations the linearization was computed from; `None`
    /// until the first build.
    generations: Option<Vec<u64>>,
}

impl Linearized {
    /// Whether members changed since the last build (no allocation: this
    /// runs on every pick of an aggregate cluster).
    pub fn is_stale(&self, mut generations: impl ExactSizeIterator<Item = u64>) -> bool {
        match &self.generations {
            None => true,
            Some(g) => g.len() != generations.len() || !g.iter().all(|x| Some(*x) == generations.next()),
        }
    }

    pub fn rebuild(&mut self, members: &[&Balancer], panic_threshold: u32) {
        self.generations = Some(members.iter().map(|b| b.generation()).collect());
        self.entries.clear();
        self.health.clear();
        for (mi, b) in members.iter().enumerate() {
            for (li, h) in b.levels().iter().enumerate() {
                if h.hosts > 0 {
                    self.entries.push((mi, li));
                    self.health.push(*h);
                }
            }
        }
        self.loads.compute(&self.health, panic_threshold);
    }

    /// The linearized level for a random draw.
    pub fn choose(&self, random: u64) -> Option<(usize, usize)> {
        if self.entries.is_empty() {
            return None;
        }
        Some(self.entries[self.loads.choose(random)])
    }
}
