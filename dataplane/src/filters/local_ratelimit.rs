//! `envoy.filters.http.local_ratelimit`: a token bucket in front of the
//! router, per filter (or per route with a `typed_per_filter_config`
//! override, which replaces the filter's whole config there).
//!
//! Envoy's decision, which this follows step by step: a request is
//! *enabled* with probability `filter_enabled` (otherwise the filter does
//! nothing); an enabled request takes a token — *ok* — or finds none —
//! *rate_limited*; a rate-limited request is *enforced* with probability
//! `filter_enforced` and answered locally (`status`, default 429, body
//! `local_rate_limited`, `x-envoy-ratelimited: true`, plus
//! `response_headers_to_add`), otherwise it goes on with
//! `request_headers_to_add_when_not_enforced`.  Stats:
//! `<stat_prefix>.http_local_rate_limit.{enabled,ok,rate_limited,enforced}`.
//! With `enable_x_ratelimit_headers: DRAFT_VERSION_03` every enabled
//! request's response carries `x-ratelimit-limit` (max tokens),
//! `x-ratelimit-remaining` and `x-ratelimit-reset` (seconds to the next fill).
//!
//! A config without `token_bucket` passes every request untouched (it only
//! carries per-route overrides).  `local_rate_limit_per_downstream_connection`
//! gives every connection a bucket of its own, held by the connection.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use control::model::{HeaderMutations, LocalRateLimit, PerFilterConfig, RouteConfig};

use super::token_bucket::{Take, TokenBucket};
use crate::router::Matched;
use crate::stats::{Counter, Scope, StatsStore};

/// The name Envoy registers the filter under (per-route key fallback).
pub const FILTER_NAME: &str = "envoy.filters.http.local_ratelimit";
/// Envoy's local reply body for a rate-limited request.
pub const LIMITED_BODY: &[u8] = b"local_rate_limited";

/// One config (the filter's own, or a per-route override) on one shard.
pub struct Limiter {
    pub config: Arc<LocalRateLimit>,
    /// `None` without `token_bucket`, or per connection.
    bucket: Option<Arc<TokenBucket>>,
    enabled: Counter,
    ok: Counter,
    rate_limited: Counter,
    enforced: Counter,
}

impl Limiter {
    fn new(config: &Arc<LocalRateLimit>, store: &StatsStore, slot: usize) -> Limiter {
        let scope = Scope::Named(config.stat_prefix.strip_suffix('.').unwrap_or(&config.stat_prefix).to_string());
        let c = |leaf: &str| store.counter(&scope, &format!("http_local_rate_limit.{leaf}"), slot);
        let bucket = match config.token_bucket {
            Some(spec) if !config.per_connection => Some(super::shared_bucket(config, spec)),
            _ => None,
        };
        Limiter {
            config: config.clone(),
            bucket,
            enabled: c("enabled"),
            ok: c("ok"),
            rate_limited: c("rate_limited"),
            enforced: c("enforced"),
        }
    }
}

/// The DRAFT_VERSION_03 `x-ratelimit-*` values for one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XRateLimit {
    pub limit: u32,
    pub remaining: u32,
    pub reset_seconds: u64,
}

impl XRateLimit {
    pub fn append_to(&self, headers: &mut crate::http1::Headers) {
        let mut b = itoa::Buffer::new();
        headers.set("x-ratelimit-limit", b.format(self.limit).as_bytes());
        headers.set("x-ratelimit-remaining", b.format(self.remaining).as_bytes());
        headers.set("x-ratelimit-reset", b.format(self.reset_seconds).as_bytes());
    }
}

/// What the filter decided about one request.
#[derive(Debug)]
pub enum Decision<'a> {
    /// Not enabled for this request (or no bucket): nothing to do.
    Skip,
    /// A token was taken.
    Pass { x: Option<XRateLimit> },
    /// No token, not enforced: forward with these request headers added.
    NotEnforced { request_headers: &'a HeaderMutations, x: Option<XRateLimit> },
    /// No token, enforced: answer `status` locally.
    Limited { status: u16, response_headers: &'a HeaderMutations, x: Option<XRateLimit> },
}

/// Buckets a downstream connection owns (`local_rate_limit_per_downstream_connection`),
/// by the address of their config `Arc`.
#[derive(Default)]
pub struct ConnectionBuckets {
    buckets: Vec<(usize, TokenBucket)>,
}

impl ConnectionBuckets {
    fn get(&mut self, config: &Arc<LocalRateLimit>, now: Instant) -> Option<&TokenBucket> {
        let spec = config.token_bucket?;
        let key = Arc::as_ptr(config) as usize;
        let i = match self.buckets.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                self.buckets.push((key, TokenBucket::new(spec, now)));
                self.buckets.len() - 1
            }
        };
        Some(&self.buckets[i].1)
    }
}

/// One `envoy.filters.http.local_ratelimit` of an HTTP connection manager.
pub struct HttpLocalRateLimit {
    own: Limiter,
    /// Per-route overrides by the address of their model `Arc`.
    overrides: HashMap<usize, Limiter>,
}

impl HttpLocalRateLimit {
    pub fn new(config: &Arc<LocalRateLimit>, routes: &RouteConfig, store: &StatsStore, slot: usize) -> Self {
        let mut overrides = HashMap::new();
        for c in super::all_per_route_configs(routes, &config.name, FILTER_NAME) {
            if let PerFilterConfig::LocalRateLimit(o) = c {
                overrides.entry(Arc::as_ptr(o) as usize).or_insert_with(|| Limiter::new(o, store, slot));
            }
        }
        HttpLocalRateLimit { own: Limiter::new(config, store, slot), overrides }
    }

    /// The config that applies to a request on `matched`.
    pub fn select(&self, matched: Option<Matched<'_>>) -> &Limiter {
        if self.overrides.is_empty() {
            return &self.own;
        }
        match super::per_route_config(matched, &self.own.config.name, FILTER_NAME) {
            Some(PerFilterConfig::LocalRateLimit(o)) => {
                self.overrides.get(&(Arc::as_ptr(o) as usize)).unwrap_or(&self.own)
            }
            _ => &self.own,
        }
    }
}

/// Envoy's local rate limit decision for one request.  `random` draws the
/// enabled / enforced fractions; `conn` holds per-connection buckets.
pub fn decide<'l>(
    limiter: &'l Limiter,
    now: Instant,
    random: &mut dyn FnMut() -> u64,
    conn: &mut ConnectionBuckets,
) -> Decision<'l> {
    let config = &*limiter.config;
    let bucket: &TokenBucket = match (&limiter.bucket, config.per_connection) {
        (Some(b), _) => b,
        (None, true) => match conn.get(&limiter.config, now) {
            Some(b) => b,
            None => return Decision::Skip,
        },
        (None, false) => return Decision::Skip,
    };
    if !config.filter_enabled.hits(random()) {
        return Decision::Skip;
    }
    limiter.enabled.inc();
    let Take { allowed, remaining } = bucket.try_take(now);
    let x = config.x_ratelimit_headers.then(|| XRateLimit {
        limit: bucket.spec().max_tokens,
        remaining,
        reset_seconds: bucket.until_next_fill(now).as_secs_f64().ceil() as u64,
    });
    if allowed {
        limiter.ok.inc();
        return Decision::Pass { x };
    }
    limiter.rate_limited.inc();
    if !config.filter_enforced.hits(random()) {
        return Decision::NotEnforced { request_headers: &config.request_headers_when_not_enforced, x };
    }
    limiter.enforced.inc();
    Decision::Limited { status: config.status, response_headers: &config.response_headers, x }
}

#[cfg(test)]
mod tests {
    use super::*;
    use control::model::{FractionalPercent, TokenBucketSpec};
    use std::time::Duration;

    fn config(enabled: u32, enforced: u32, per_connection: bool) -> Arc<LocalRateLimit> {
        Arc::new(LocalRateLimit {
            name: "rl".into(),
            stat_prefix: "test_rl".into(),
            status: 429,
            token_bucket: Some(TokenBucketSpec {
                max_tokens: 2,
                tokens_per_fill: 1,
                fill_interval: Duration::from_secs(1),
            }),
            filter_enabled: FractionalPercent { numerator: enabled, denominator: 100 },
            filter_enforced: FractionalPercent { numerator: enforced, denominator: 100 },
            request_headers_when_not_enforced: HeaderMutations::default(),
            response_headers: HeaderMutations::default(),
            x_ratelimit_headers: true,
            per_connection,
        })
    }

    #[test]
    fn enforced_limits_after_the_burst_and_counts() {
        let store = StatsStore::new(1);
        let l = Limiter::new(&config(100, 100, false), &store, 0);
        let now = Instant::now();
        let mut conn = ConnectionBuckets::default();
        let mut r = || 7u64;
        assert!(matches!(
            decide(&l, now, &mut r, &mut conn),
            Decision::Pass { x: Some(XRateLimit { limit: 2, remaining: 1, .. }) }
        ));
        assert!(matches!(decide(&l, now, &mut r, &mut conn), Decision::Pass { .. }));
        assert!(matches!(decide(&l, now, &mut r, &mut conn), Decision::Limited { status: 429, .. }));
        assert_eq!(store.counter_value("test_rl.http_local_rate_limit.enabled"), Some(3));
        assert_eq!(store.counter_value("test_rl.http_local_rate_limit.ok"), Some(2));
        assert_eq!(store.counter_value("test_rl.http_local_rate_limit.rate_limited"), Some(1));
        assert_eq!(store.counter_value("test_rl.http_local_rate_limit.enforced"), Some(1));
        // One fill later, one more token.
        assert!(matches!(decide(&l, now + Duration::from_secs(1), &mut r, &mut conn), Decision::Pass { .. }));
    }

    #[test]
    fn not_enabled_does_nothing_and_not_enforced_passes() {
        let store = StatsStore::new(1);
        let off = Limiter::new(&config(0, 100, false), &store, 0);
        let now = Instant::now();
        let mut conn = ConnectionBuckets::default();
        for _ in 0..5 {
            assert!(matches!(decide(&off, now, &mut || 0, &mut conn), Decision::Skip));
        }
        let shadow = Limiter::new(&config(100, 0, false), &store, 0);
        for _ in 0..2 {
            assert!(matches!(decide(&shadow, now, &mut || 0, &mut conn), Decision::Pass { .. }));
        }
        assert!(matches!(decide(&shadow, now, &mut || 0, &mut conn), Decision::NotEnforced { .. }));
    }

    #[test]
    fn per_connection_buckets_are_separate() {
        let store = StatsStore::new(1);
        let l = Limiter::new(&config(100, 100, true), &store, 0);
        let now = Instant::now();
        let (mut a, mut b) = (ConnectionBuckets::default(), ConnectionBuckets::default());
        for _ in 0..2 {
            assert!(matches!(decide(&l, now, &mut || 0, &mut a), Decision::Pass { .. }));
        }
        assert!(matches!(decide(&l, now, &mut || 0, &mut a), Decision::Limited { .. }));
        assert!(matches!(decide(&l, now, &mut || 0, &mut b), Decision::Pass { .. }));
    }
}
