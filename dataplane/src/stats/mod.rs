//! The stats store: every counter, gauge and histogram the process keeps, with
//! Envoy's names, read by the admin server.
//!
//! # What it owns
//!
//! * The registry of named stats (`StatsStore`), one per process behind an
//!   `Arc`.  Registration takes a mutex and happens when a configuration
//!   snapshot is picked up, never per request.  It is idempotent by name: asking
//!   twice for `cluster.a.upstream_rq_total` yields two handles on one stat.
//! * The per-shard storage.  Each stat has one slot per shard plus one for the
//!   control/main thread (`control_slot()`), each slot on its own cache line
//!   (`CachePadded`), so no two shards ever write the same line and the request
//!   path never bounces a line between cores.
//! * The grouped handles shards create once per listener/cluster per snapshot
//!   (`HttpStats`, `ClusterStats`, `ListenerStats`, `ServerStats`, `HostStats`,
//!   in `groups.rs`) and the renderers for the admin formats (`render.rs`).
//!
//! # Why Relaxed load + store is enough on a shard slot
//!
//! A shard slot has exactly one writer: the shard thread that asked for the
//! handle.  A read-modify-write done as a Relaxed load followed by a Relaxed
//! store cannot lose an update when nobody else stores to that location, and it
//! compiles to a plain `mov`/`add`/`mov` instead of a `lock xadd` (no bus lock,
//! no full barrier).  Readers (the admin thread) sum the slots with Relaxed
//! loads; an atomic 64-bit load never tears, and a sum that is a few increments
//! stale is what any stats scrape sees anyway.  The control slot is different:
//! the main thread, the xDS thread and the admin thread may all hold handles on
//! it, so handles bound to the control slot use real `fetch_add`; that slot is
//! never on the request path.
//!
//! The single-writer rule is a contract, not something the type system checks:
//! a handle is `Send` (a shard may be set up on another thread), but only one
//! thread may write through handles on a given shard slot.
//!
//! # What it must not touch
//!
//! Sockets, config sources, or anything per request beyond the slot writes: no
//! locks, no allocation and no string formatting behind `inc()`/`record()`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

mod groups;
pub mod render;

pub use groups::{ClusterStats, HostStats, HttpStats, ListenerStats, ServerStats};

/// Envoy's default histogram bucket upper bounds, in milliseconds
/// (`Stats::HistogramSettingsImpl::defaultBuckets`).
pub const HISTOGRAM_BUCKETS_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0, 60000.0, 300000.0,
    600000.0, 1800000.0, 3600000.0,
];

/// The same bounds in microseconds, which is what a slot records, so that the
/// bucket search on the request path is integer compares.
const BUCKET_BOUNDS_US: [u64; 19] = [
    500,
    1_000,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    30_000_000,
    60_000_000,
    300_000_000,
    600_000_000,
    1_800_000_000,
    3_600_000_000,
];

/// Bounded buckets plus one overflow bucket (`> 3600000 ms`).
pub const NUM_BUCKETS: usize = HISTOGRAM_BUCKETS_MS.len() + 1;

/// The quantiles Envoy prints for every histogram (`P0` … `P100`).
pub const SUPPORTED_QUANTILES: [f64; 10] = [0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 1.0];

/// Where a stat lives; decides its name prefix and its Prometheus tags.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// `server.<leaf>`.
    Server,
    /// `http.<stat_prefix>.<leaf>` (an HTTP connection manager).
    Http(String),
    /// `listener.<address>.<leaf>`, address as Envoy spells it (`0.0.0.0_10000`).
    Listener(String),
    /// `cluster.<name>.<leaf>`.
    Cluster(String),
    /// `<prefix>.<leaf>` for process-wide namespaces without a tag
    /// (`cluster_manager`, `listener_manager`, `control_plane`, …).
    Named(String),
}

impl Scope {
    /// The listener scope for a bound address, named as Envoy names it: the
    /// address string with `:` replaced by `_` (`0.0.0.0_10000`, `[__1]_80`).
    pub fn listener(addr: &SocketAddr) -> Scope {
        Scope::Listener(addr.to_string())
    }

    /// The scope's name component after Envoy's stat-name sanitising (`:` and
    /// NUL become `_`), or `None` for `Server`.
    fn component(&self) -> Option<(&'static str, String)> {
        let (head, raw) = match self {
            Scope::Server => return None,
            Scope::Http(p) => ("http", p),
            Scope::Listener(a) => ("listener", a),
            Scope::Cluster(c) => ("cluster", c),
            Scope::Named(n) => ("", n),
        };
        Some((head, sanitize_name(raw)))
    }

    /// The full stat name for `leaf` in this scope.
    pub fn stat_name(&self, leaf: &str) -> String {
        match self.component() {
            None => format!("server.{leaf}"),
            Some(("", n)) => format!("{n}.{leaf}"),
            Some((head, v)) => format!("{head}.{v}.{leaf}"),
        }
    }

    /// The tag value (`stat_prefix`, cluster name, address) after sanitising.
    pub(crate) fn tag_value(&self) -> Option<String> {
        match self {
            Scope::Server | Scope::Named(_) => None,
            _ => self.component().map(|(_, v)| v),
        }
    }
}

/// Envoy's `Utility::sanitizeStatsName`: `:` would clash with statsd syntax and
/// NUL with C strings, so both become `_`.
fn sanitize_name(s: &str) -> String {
    s.chars().map(|c| if c == ':' || c == '\0' { '_' } else { c }).collect()
}

// ---------------------------------------------------------------------------
// Slots and handles
// ---------------------------------------------------------------------------

/// Adds `n` to a slot.  `shared` is only true for the control slot (several
/// writers); everywhere else the slot has one writer and a plain load/store
/// cannot lose an update (see the module essay).
#[inline(always)]
fn bump_u64(cell: &AtomicU64, n: u64, shared: bool) {
    if shared {
        cell.fetch_add(n, Relaxed);
    } else {
        cell.store(cell.load(Relaxed).wrapping_add(n), Relaxed);
    }
}

#[inline(always)]
fn bump_i64(cell: &AtomicI64, n: i64, shared: bool) {
    if shared {
        cell.fetch_add(n, Relaxed);
    } else {
        cell.store(cell.load(Relaxed).wrapping_add(n), Relaxed);
    }
}

struct CounterCell {
    slots: Box<[CachePadded<AtomicU64>]>,
}

impl CounterCell {
    fn new(slots: usize) -> Self {
        CounterCell { slots: (0..slots).map(|_| CachePadded::new(AtomicU64::new(0))).collect() }
    }
    fn sum(&self) -> u64 {
        self.slots.iter().fold(0u64, |a, s| a.wrapping_add(s.load(Relaxed)))
    }
}

/// A monotonically increasing count, bound to one slot.  Cloning is an `Arc`
/// bump; `inc()` is one load and one store to the slot's own cache line.
#[derive(Clone)]
pub struct Counter {
    cell: Arc<CounterCell>,
    slot: usize,
    shared: bool,
}

impl Counter {
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }
    #[inline]
    pub fn add(&self, n: u64) {
        bump_u64(&self.cell.slots[self.slot], n, self.shared);
    }
    /// The process-wide value: the sum over all slots.
    pub fn value(&self) -> u64 {
        self.cell.sum()
    }
    /// What this handle's slot alone has counted.
    pub fn slot_value(&self) -> u64 {
        self.cell.slots[self.slot].load(Relaxed)
    }
}

impl std::fmt::Debug for Counter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counter").field("slot", &self.slot).field("value", &self.value()).finish()
    }
}

struct GaugeSlot {
    value: AtomicI64,
    /// Set on first write so `usedonly` can tell "set to 0" from "never set",
    /// as Envoy's used flag does.  Lives in the slot's own line.
    used: AtomicBool,
}

struct GaugeCell {
    slots: Box<[CachePadded<GaugeSlot>]>,
}

impl GaugeCell {
    fn new(slots: usize) -> Self {
        GaugeCell {
            slots: (0..slots)
                .map(|_| CachePadded::new(GaugeSlot { value: AtomicI64::new(0), used: AtomicBool::new(false) }))
                .collect(),
        }
    }
    fn sum(&self) -> i64 {
        self.slots.iter().fold(0i64, |a, s| a.wrapping_add(s.value.load(Relaxed)))
    }
    fn used(&self) -> bool {
        self.slots.iter().any(|s| s.used.load(Relaxed))
    }
}

/// A value that goes up and down (active connections, membership).  Each slot
/// holds that shard's share; the gauge's value is the sum, so a connection
/// counted up on one shard must be counted down on the same shard.
#[derive(Clone)]
pub struct Gauge {
    cell: Arc<GaugeCell>,
    slot: usize,
    shared: bool,
}

impl Gauge {
    #[inline]
    fn slot(&self) -> &GaugeSlot {
        let s = &self.cell.slots[self.slot];
        // Load first: after the first write this is a read of our own line,
        // not a store per operation.
        if !s.used.load(Relaxed) {
            s.used.store(true, Relaxed);
        }
        s
    }
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }
    #[inline]
    pub fn dec(&self) {
        self.add(-1);
    }
    #[inline]
    pub fn add(&self, n: i64) {
        bump_i64(&self.slot().value, n, self.shared);
    }
    #[inline]
    pub fn sub(&self, n: i64) {
        self.add(n.wrapping_neg());
    }
    /// Sets this handle's slot (not the total) to `v`.
    #[inline]
    pub fn set(&self, v: i64) {
        self.slot().value.store(v, Relaxed);
    }
    /// The process-wide value: the sum over all slots.
    pub fn value(&self) -> i64 {
        self.cell.sum()
    }
    pub fn slot_value(&self) -> i64 {
        self.cell.slots[self.slot].value.load(Relaxed)
    }
}

impl std::fmt::Debug for Gauge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gauge").field("slot", &self.slot).field("value", &self.value()).finish()
    }
}

struct HistSlot {
    buckets: [AtomicU64; NUM_BUCKETS],
    count: AtomicU64,
    sum_us: AtomicU64,
    min_us: AtomicU64,
    max_us: AtomicU64,
}

impl HistSlot {
    fn new() -> Self {
        HistSlot {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
            min_us: AtomicU64::new(u64::MAX),
            max_us: AtomicU64::new(0),
        }
    }
}

struct HistCell {
    slots: Box<[CachePadded<HistSlot>]>,
}

impl HistCell {
    fn new(slots: usize) -> Self {
        HistCell { slots: (0..slots).map(|_| CachePadded::new(HistSlot::new())).collect() }
    }

    fn snapshot(&self) -> HistogramSnapshot {
        let mut snap = HistogramSnapshot::empty();
        let mut min_us = u64::MAX;
        let mut max_us = 0u64;
        let mut sum_us = 0u64;
        for s in self.slots.iter() {
            for (acc, b) in snap.buckets.iter_mut().zip(s.buckets.iter()) {
                *acc = acc.wrapping_add(b.load(Relaxed));
            }
            snap.count = snap.count.wrapping_add(s.count.load(Relaxed));
            sum_us = sum_us.wrapping_add(s.sum_us.load(Relaxed));
            min_us = min_us.min(s.min_us.load(Relaxed));
            max_us = max_us.max(s.max_us.load(Relaxed));
        }
        if snap.count > 0 {
            snap.sum_ms = sum_us as f64 / 1000.0;
            snap.min_ms = min_us as f64 / 1000.0;
            snap.max_ms = max_us as f64 / 1000.0;
        }
        snap
    }
}

/// A latency distribution in Envoy's default buckets, bound to one slot.
#[derive(Clone)]
pub struct Histogram {
    cell: Arc<HistCell>,
    slot: usize,
    shared: bool,
}

impl Histogram {
    /// Records a value in microseconds (the request path's native unit: no
    /// float maths, a 19-entry binary search and five slot writes).
    #[inline]
    pub fn record_micros(&self, us: u64) {
        let idx = BUCKET_BOUNDS_US.partition_point(|&b| b < us);
        let s = &self.cell.slots[self.slot];
        let shared = self.shared;
        bump_u64(&s.buckets[idx], 1, shared);
        bump_u64(&s.count, 1, shared);
        bump_u64(&s.sum_us, us, shared);
        if shared {
            s.min_us.fetch_min(us, Relaxed);
            s.max_us.fetch_max(us, Relaxed);
        } else {
            if us < s.min_us.load(Relaxed) {
                s.min_us.store(us, Relaxed);
            }
            if us > s.max_us.load(Relaxed) {
                s.max_us.store(us, Relaxed);
            }
        }
    }

    /// Records a value in milliseconds (Envoy's unit for every `*_time` and
    /// `*_ms` histogram).  Negative and NaN values record as 0.
    #[inline]
    pub fn record_ms(&self, ms: f64) {
        let us = (ms * 1000.0).round();
        self.record_micros(if us.is_nan() || us <= 0.0 { 0 } else { us as u64 });
    }

    #[inline]
    pub fn record(&self, d: Duration) {
        self.record_micros(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    /// The process-wide distribution (all slots merged).
    pub fn snapshot(&self) -> HistogramSnapshot {
        self.cell.snapshot()
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram").field("slot", &self.slot).field("count", &self.snapshot().count).finish()
    }
}

/// A merged, point-in-time view of a histogram.  Values are in milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Per-bucket (not cumulative) counts; index `i < 19` is `(bound[i-1], bound[i]]`,
    /// the last is the overflow bucket.
    pub buckets: [u64; NUM_BUCKETS],
    pub count: u64,
    pub sum_ms: f64,
    /// Smallest and largest recorded values (NaN when empty).
    pub min_ms: f64,
    pub max_ms: f64,
}

impl HistogramSnapshot {
    pub fn empty() -> Self {
        HistogramSnapshot { buckets: [0; NUM_BUCKETS], count: 0, sum_ms: 0.0, min_ms: f64::NAN, max_ms: f64::NAN }
    }

    /// Cumulative counts for each bounded bucket (`le=bound`), as Prometheus
    /// wants them; `+Inf` is `count`.
    pub fn cumulative(&self) -> [u64; NUM_BUCKETS - 1] {
        let mut out = [0u64; NUM_BUCKETS - 1];
        let mut acc = 0u64;
        for (i, o) in out.iter_mut().enumerate() {
            acc += self.buckets[i];
            *o = acc;
        }
        out
    }

    /// The `q`-quantile (0..=1), NaN when empty.  P0 is the minimum and P100
    /// the maximum; in between, the rank is located in its bucket and
    /// interpolated linearly across the bucket's range, clamped to the
    /// recorded [min, max] so that a bucket as wide as 0.5 s–1 s does not
    /// report values that never happened.
    pub fn quantile(&self, q: f64) -> f64 {
        if self.count == 0 || q.is_nan() {
            return f64::NAN;
        }
        let (lo_clamp, hi_clamp) = (self.min_ms, self.max_ms);
        if q <= 0.0 {
            return lo_clamp;
        }
        if q >= 1.0 {
            return hi_clamp;
        }
        let rank = q * self.count as f64;
        let mut below = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            if n == 0 {
                continue;
            }
            if (below + n) as f64 >= rank {
                let lower = if i == 0 { 0.0 } else { HISTOGRAM_BUCKETS_MS[i - 1] };
                let upper = if i < HISTOGRAM_BUCKETS_MS.len() { HISTOGRAM_BUCKETS_MS[i] } else { hi_clamp };
                let lower = if lo_clamp.is_nan() { lower } else { lower.max(lo_clamp) };
                let upper = if hi_clamp.is_nan() { upper } else { upper.min(hi_clamp) };
                let upper = upper.max(lower);
                let within = (rank - below as f64) / n as f64;
                return lower + (upper - lower) * within;
            }
            below += n;
        }
        hi_clamp
    }

    /// What was recorded between `prev` and `self` (the "interval" half of
    /// Envoy's `P50(interval,cumulative)`).  Min and max of the interval are
    /// not tracked, so they are estimated from the occupied buckets.
    pub fn since(&self, prev: &HistogramSnapshot) -> HistogramSnapshot {
        let mut d = HistogramSnapshot::empty();
        for i in 0..NUM_BUCKETS {
            d.buckets[i] = self.buckets[i].saturating_sub(prev.buckets[i]);
        }
        d.count = self.count.saturating_sub(prev.count);
        d.sum_ms = (self.sum_ms - prev.sum_ms).max(0.0);
        if d.count > 0 {
            let first = d.buckets.iter().position(|&n| n > 0).unwrap_or(0);
            let last = d.buckets.iter().rposition(|&n| n > 0).unwrap_or(0);
            let lo = if first == 0 { 0.0 } else { HISTOGRAM_BUCKETS_MS[first - 1] };
            let hi = if last < HISTOGRAM_BUCKETS_MS.len() { HISTOGRAM_BUCKETS_MS[last] } else { self.max_ms };
            d.min_ms = lo.max(self.min_ms);
            d.max_ms = hi.min(self.max_ms);
        }
        d
    }
}

// ---------------------------------------------------------------------------
// The registry
// ---------------------------------------------------------------------------

#[derive(Clone)]
enum Cell {
    Counter(Arc<CounterCell>),
    Gauge(Arc<GaugeCell>),
    Histogram(Arc<HistCell>),
}

impl Cell {
    fn kind(&self) -> &'static str {
        match self {
            Cell::Counter(_) => "counter",
            Cell::Gauge(_) => "gauge",
            Cell::Histogram(_) => "histogram",
        }
    }
}

struct Entry {
    scope: Scope,
    leaf: String,
    cell: Cell,
}

/// The per-host stat cells behind `HostStats`.  Hosts are shown only in
/// `/clusters` (as in Envoy), so they live outside the named-stat map.
struct HostEntry {
    address: String,
    hostname: String,
    weight: u32,
    priority: u32,
    cells: Arc<groups::HostCells>,
}

struct Registry {
    stats: BTreeMap<String, Entry>,
    /// cluster name → hosts in registration order.
    hosts: BTreeMap<String, Vec<HostEntry>>,
}

struct IntervalState {
    last_flush: Option<Instant>,
    /// Cumulative snapshot at the last flush, per histogram name.
    at_last_flush: BTreeMap<String, HistogramSnapshot>,
    /// What was recorded between the last two flushes.
    interval: BTreeMap<String, HistogramSnapshot>,
}

/// The process-wide registry of stats.  See the module essay.
pub struct StatsStore {
    num_shards: usize,
    registry: Mutex<Registry>,
    intervals: Mutex<IntervalState>,
}

/// The value of one stat at snapshot time.
#[derive(Debug, Clone, PartialEq)]
pub enum StatValue {
    Counter(u64),
    /// Value and whether it was ever written.
    Gauge {
        value: i64,
        used: bool,
    },
    Histogram(HistogramSnapshot),
}

/// One stat as the admin renderers see it.
#[derive(Debug, Clone, PartialEq)]
pub struct StatSnapshot {
    pub name: String,
    pub scope: Scope,
    pub leaf: String,
    pub value: StatValue,
}

impl StatSnapshot {
    /// Envoy's `used()`: a counter that moved, a gauge that was ever set, a
    /// histogram with a sample.
    pub fn used(&self) -> bool {
        match &self.value {
            StatValue::Counter(v) => *v > 0,
            StatValue::Gauge { used, .. } => *used,
            StatValue::Histogram(h) => h.count > 0,
        }
    }
}

/// One upstream host as `/clusters` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct HostSnapshot {
    pub address: String,
    pub hostname: String,
    pub weight: u32,
    pub priority: u32,
    /// `(name, value, is_gauge)` in Envoy's order (alphabetical).
    pub stats: Vec<(&'static str, u64, bool)>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the registry lock leaves plain maps behind, never a
    // half-written stat, so the data is still good.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl StatsStore {
    pub fn new(num_shards: usize) -> Arc<StatsStore> {
        Arc::new(StatsStore {
            num_shards,
            registry: Mutex::new(Registry { stats: BTreeMap::new(), hosts: BTreeMap::new() }),
            intervals: Mutex::new(IntervalState {
                last_flush: None,
                at_last_flush: BTreeMap::new(),
                interval: BTreeMap::new(),
            }),
        })
    }

    pub fn num_shards(&self) -> usize {
        self.num_shards
    }

    /// The slot for everything that is not a shard (main, control, admin
    /// threads).  Handles on it use atomic read-modify-write.
    pub fn control_slot(&self) -> usize {
        self.num_shards
    }

    fn num_slots(&self) -> usize {
        self.num_shards + 1
    }

    fn check_slot(&self, slot: usize) -> bool {
        assert!(slot < self.num_slots(), "stat slot {slot} out of range (num_shards = {})", self.num_shards);
        slot == self.control_slot()
    }

    /// Finds or creates `name`.  Panics if the name exists with another type:
    /// that is a naming bug in the caller, caught by the first test run.
    fn cell(&self, scope: &Scope, leaf: &str, make: impl FnOnce(usize) -> Cell) -> Cell {
        let name = scope.stat_name(leaf);
        let mut reg = lock(&self.registry);
        if let Some(e) = reg.stats.get(&name) {
            return e.cell.clone();
        }
        let cell = make(self.num_slots());
        reg.stats.insert(name, Entry { scope: scope.clone(), leaf: leaf.to_string(), cell: cell.clone() });
        cell
    }

    pub fn counter(&self, scope: &Scope, leaf: &str, slot: usize) -> Counter {
        let shared = self.check_slot(slot);
        match self.cell(scope, leaf, |n| Cell::Counter(Arc::new(CounterCell::new(n)))) {
            Cell::Counter(cell) => Counter { cell, slot, shared },
            other => panic!("stat {} is a {}, not a counter", scope.stat_name(leaf), other.kind()),
        }
    }

    pub fn gauge(&self, scope: &Scope, leaf: &str, slot: usize) -> Gauge {
        let shared = self.check_slot(slot);
        match self.cell(scope, leaf, |n| Cell::Gauge(Arc::new(GaugeCell::new(n)))) {
            Cell::Gauge(cell) => Gauge { cell, slot, shared },
            other => panic!("stat {} is a {}, not a gauge", scope.stat_name(leaf), other.kind()),
        }
    }

    pub fn histogram(&self, scope: &Scope, leaf: &str, slot: usize) -> Histogram {
        let shared = self.check_slot(slot);
        match self.cell(scope, leaf, |n| Cell::Histogram(Arc::new(HistCell::new(n)))) {
            Cell::Histogram(cell) => Histogram { cell, slot, shared },
            other => panic!("stat {} is a {}, not a histogram", scope.stat_name(leaf), other.kind()),
        }
    }

    /// Registers (or finds) an upstream host of `cluster` and returns its
    /// counters bound to `slot`.  `address` is `ip:port` as `/clusters` prints
    /// it.  Re-registering updates weight and priority.
    pub fn register_host(&self, cluster: &str, address: &str, weight: u32, priority: u32, slot: usize) -> HostStats {
        self.register_host_named(cluster, address, "", weight, priority, slot)
    }

    /// `register_host` with the DNS name the address was resolved from
    /// (STRICT_DNS), shown as `hostname` in `/clusters`.
    pub fn register_host_named(
        &self,
        cluster: &str,
        address: &str,
        hostname: &str,
        weight: u32,
        priority: u32,
        slot: usize,
    ) -> HostStats {
        let shared = self.check_slot(slot);
        let mut reg = lock(&self.registry);
        let hosts = reg.hosts.entry(cluster.to_string()).or_default();
        let cells = match hosts.iter_mut().find(|h| h.address == address) {
            Some(h) => {
                h.weight = weight;
                h.priority = priority;
                if !hostname.is_empty() {
                    h.hostname = hostname.to_string();
                }
                h.cells.clone()
            }
            None => {
                let cells = Arc::new(groups::HostCells::new(self.num_slots()));
                hosts.push(HostEntry {
                    address: address.to_string(),
                    hostname: hostname.to_string(),
                    weight,
                    priority,
                    cells: cells.clone(),
                });
                cells
            }
        };
        HostStats::bind(&cells, slot, shared)
    }

    /// Drops hosts of `cluster` whose address is not in `keep` (after a DNS
    /// refresh or a new snapshot).  Handles still held keep working; they just
    /// stop being shown.
    pub fn retain_hosts(&self, cluster: &str, keep: &[String]) {
        let mut reg = lock(&self.registry);
        if let Some(hosts) = reg.hosts.get_mut(cluster) {
            hosts.retain(|h| keep.contains(&h.address));
        }
    }

    /// The registered hosts of `cluster`, in registration order.
    pub fn hosts(&self, cluster: &str) -> Vec<HostSnapshot> {
        let reg = lock(&self.registry);
        reg.hosts
            .get(cluster)
            .map(|hs| {
                hs.iter()
                    .map(|h| HostSnapshot {
                        address: h.address.clone(),
                        hostname: h.hostname.clone(),
                        weight: h.weight,
                        priority: h.priority,
                        stats: h.cells.values(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every named stat, sorted by name, values summed over slots.
    pub fn snapshot(&self) -> Vec<StatSnapshot> {
        // Clone the cells out under the lock, read them after: registration on
        // a shard picking up a snapshot never waits for a slow scrape.
        let cells: Vec<(String, Scope, String, Cell)> = {
            let reg = lock(&self.registry);
            reg.stats.iter().map(|(n, e)| (n.clone(), e.scope.clone(), e.leaf.clone(), e.cell.clone())).collect()
        };
        cells
            .into_iter()
            .map(|(name, scope, leaf, cell)| {
                let value = match cell {
                    Cell::Counter(c) => StatValue::Counter(c.sum()),
                    Cell::Gauge(g) => StatValue::Gauge { value: g.sum(), used: g.used() },
                    Cell::Histogram(h) => StatValue::Histogram(h.snapshot()),
                };
                StatSnapshot { name, scope, leaf, value }
            })
            .collect()
    }

    fn lookup(&self, name: &str) -> Option<Cell> {
        lock(&self.registry).stats.get(name).map(|e| e.cell.clone())
    }

    /// The summed value of counter `name`, if registered (for tests and tools).
    pub fn counter_value(&self, name: &str) -> Option<u64> {
        match self.lookup(name)? {
            Cell::Counter(c) => Some(c.sum()),
            _ => None,
        }
    }

    pub fn gauge_value(&self, name: &str) -> Option<i64> {
        match self.lookup(name)? {
            Cell::Gauge(g) => Some(g.sum()),
            _ => None,
        }
    }

    pub fn histogram_value(&self, name: &str) -> Option<HistogramSnapshot> {
        match self.lookup(name)? {
            Cell::Histogram(h) => Some(h.snapshot()),
            _ => None,
        }
    }

    /// Closes the current histogram interval: what was recorded since the
    /// previous flush becomes the "interval" distribution.  Envoy does this on
    /// its stats flush timer (5 s); here whoever renders calls
    /// `flush_interval_if_due`, so no timer thread is needed.
    pub fn flush_interval(&self) {
        let snaps: Vec<(String, HistogramSnapshot)> = self
            .snapshot()
            .into_iter()
            .filter_map(|s| match s.value {
                StatValue::Histogram(h) => Some((s.name, h)),
                _ => None,
            })
            .collect();
        let mut st = lock(&self.intervals);
        let first = st.last_flush.is_none();
        st.last_flush = Some(Instant::now());
        let mut interval = BTreeMap::new();
        for (name, now) in &snaps {
            let prev = st.at_last_flush.get(name).cloned();
            // A histogram registered since the last flush started empty, so
            // all of it belongs to this interval; the very first flush has no
            // interval yet (Envoy prints `nan` until its first flush).
            if !first {
                let d = now.since(&prev.unwrap_or_else(HistogramSnapshot::empty));
                interval.insert(name.clone(), d);
            }
        }
        st.at_last_flush = snaps.into_iter().collect();
        st.interval = interval;
    }

    /// `flush_interval` if at least `period` passed since the last one.
    pub fn flush_interval_if_due(&self, period: Duration) {
        let due = match lock(&self.intervals).last_flush {
            None => true,
            Some(t) => t.elapsed() >= period,
        };
        if due {
            self.flush_interval();
        }
    }

    /// The last closed interval of each histogram (empty map before two flushes).
    pub fn intervals(&self) -> BTreeMap<String, HistogramSnapshot> {
        lock(&self.intervals).interval.clone()
    }
}

impl std::fmt::Debug for StatsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsStore")
            .field("num_shards", &self.num_shards)
            .field("stats", &lock(&self.registry).stats.len())
            .finish()
    }
}

#[cfg(test)]
mod tests;
