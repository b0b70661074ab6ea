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

use control::model::{
    HeaderMutations, LocalRateLimit, LocalRateLimitDescriptor, PerFilterConfig, RateLimitAction, RateLimitPolicy,
    RouteConfig,
};

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
    /// `descriptors` with their shared buckets, slowest fill rate first (as
    /// Envoy orders them, so the most restrictive is consumed first).
    descriptors: Box<[(Arc<LocalRateLimitDescriptor>, Arc<TokenBucket>)]>,
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
        let mut descriptors: Vec<_> =
            config.descriptors.iter().map(|d| (d.clone(), super::shared_bucket(d, d.token_bucket))).collect();
        let rate = |d: &LocalRateLimitDescriptor| {
            f64::from(d.token_bucket.tokens_per_fill) / d.token_bucket.fill_interval.as_secs_f64()
        };
        descriptors.sort_by(|a, b| rate(&a.0).total_cmp(&rate(&b.0)));
        Limiter {
            config: config.clone(),
            bucket,
            descriptors: descriptors.into_boxed_slice(),
            enabled: c("enabled"),
            ok: c("ok"),
            rate_limited: c("rate_limited"),
            enforced: c("enforced"),
        }
    }
}

impl Limiter {
    /// Whether requests need their route descriptors computed.
    pub fn has_descriptors(&self) -> bool {
        !self.descriptors.is_empty()
    }
}

/// The descriptors a request produces from its route's `rate_limits`
/// (Envoy's `populateDescriptors`): one per policy of the filter's `stage`
/// whose actions all produce an entry (or are skipped with
/// `skip_if_absent`), entries in action order.
///
/// They are never built: a configured descriptor is checked against each
/// policy by producing the policy's entries one at a time and comparing
/// them in place, so a request allocates nothing however many descriptors
/// and policies there are (a handful each, in practice).
pub trait DescriptorSource {
    /// Whether the request produces exactly `configured`'s entries.
    fn produces(&self, configured: &LocalRateLimitDescriptor) -> bool;
}

/// No route rate limits (or no descriptors to match): produces nothing.
impl DescriptorSource for () {
    fn produces(&self, _: &LocalRateLimitDescriptor) -> bool {
        false
    }
}

/// A request's route `rate_limits` of one `stage`; `remote` is the trusted
/// client address.
pub struct RouteDescriptors<'a> {
    pub policies: &'a [RateLimitPolicy],
    pub stage: u32,
    pub head: &'a crate::http1::RequestHead,
    pub remote: std::net::IpAddr,
}

impl DescriptorSource for RouteDescriptors<'_> {
    fn produces(&self, configured: &LocalRateLimitDescriptor) -> bool {
        self.policies.iter().filter(|p| p.stage == self.stage).any(|p| self.policy_produces(p, &configured.entries))
    }
}

impl RouteDescriptors<'_> {
    fn policy_produces(&self, policy: &RateLimitPolicy, wanted: &[(String, String)]) -> bool {
        // An IP address in text is at most 45 bytes (IPv4-mapped IPv6).
        let mut address = [0u8; 48];
        let mut wanted = wanted.iter();
        let mut produced_any = false;
        for action in &policy.actions {
            let (key, value): (&str, &[u8]) = match action {
                RateLimitAction::RequestHeaders { header_name, descriptor_key, skip_if_absent } => {
                    match crate::router::action::first_header(self.head, header_name) {
                        Some(v) => (descriptor_key, v),
                        None if *skip_if_absent => continue,
                        None => return false,
                    }
                }
                RateLimitAction::RemoteAddress => {
                    let mut cursor = std::io::Cursor::new(&mut address[..]);
                    // Cannot fail: the buffer holds the longest address.
                    let _ = std::io::Write::write_fmt(&mut cursor, format_args!("{}", self.remote));
                    let len = cursor.position() as usize;
                    ("remote_address", &address[..len])
                }
                RateLimitAction::GenericKey { descriptor_key, descriptor_value } => {
                    (descriptor_key, descriptor_value.as_bytes())
                }
                RateLimitAction::HeaderValueMatch { descriptor_key, descriptor_value, expect_match, headers } => {
                    let all = headers.iter().all(|h| crate::matcher::HeaderMatcher::new(h).matches(self.head));
                    if all != *expect_match {
                        return false;
                    }
                    (descriptor_key, descriptor_value.as_bytes())
                }
            };
            produced_any = true;
            match wanted.next() {
                Some((k, v)) if k == key && v.as_bytes() == value => {}
                _ => return false,
            }
        }
        produced_any && wanted.next().is_none()
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
    descriptors: &dyn DescriptorSource,
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
    // Matched descriptors' buckets first (most restrictive first); the
    // default bucket when none matched, or always with
    // `always_consume_default_token_bucket`.  The x-ratelimit headers
    // describe the bucket that refused, else the one with fewest tokens left.
    let mut reported: Option<(&TokenBucket, Take)> = None;
    let mut allowed = true;
    let mut matched_any = false;
    for (d, b) in limiter.descriptors.iter() {
        if !descriptors.produces(d) {
            continue;
        }
        matched_any = true;
        let take = b.try_take(now);
        if reported.is_none_or(|(_, t)| take.remaining < t.remaining) || !take.allowed {
            reported = Some((&**b, take));
        }
        if !take.allowed {
            allowed = false;
            break;
        }
    }
    if allowed && (!matched_any || config.always_consume_default_token_bucket) {
        let take = bucket.try_take(now);
        if reported.is_none_or(|(_, t)| take.remaining < t.remaining) || !take.allowed {
            reported = Some((bucket, take));
        }
        allowed = take.allowed;
    }
    let x = match (config.x_ratelimit_headers, reported) {
        (true, Some((b, take))) => Some(XRateLimit {
            limit: b.spec().max_tokens,
            remaining: take.remaining,
            reset_seconds: b.until_next_fill(now).as_secs_f64().ceil() as u64,
        }),
        _ => None,
    };
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

    /// A request that produces these descriptors.
    struct Produces(Vec<Vec<(&'static str, &'static str)>>);

    impl DescriptorSource for Produces {
        fn produces(&self, configured: &LocalRateLimitDescriptor) -> bool {
            self.0.iter().any(|d| {
                d.len() == configured.entries.len()
                    && d.iter().zip(&configured.entries).all(|((k, v), (ck, cv))| k == ck && v == cv)
            })
        }
    }

    fn descriptor(entries: &[(&str, &str)]) -> LocalRateLimitDescriptor {
        LocalRateLimitDescriptor {
            entries: entries.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            token_bucket: TokenBucketSpec { max_tokens: 1, tokens_per_fill: 1, fill_interval: Duration::from_secs(1) },
        }
    }

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
            descriptors: Vec::new(),
            stage: 0,
            always_consume_default_token_bucket: true,
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
            decide(&l, now, &mut r, &mut conn, &()),
            Decision::Pass { x: Some(XRateLimit { limit: 2, remaining: 1, .. }) }
        ));
        assert!(matches!(decide(&l, now, &mut r, &mut conn, &()), Decision::Pass { .. }));
        assert!(matches!(decide(&l, now, &mut r, &mut conn, &()), Decision::Limited { status: 429, .. }));
        assert_eq!(store.counter_value("test_rl.http_local_rate_limit.enabled"), Some(3));
        assert_eq!(store.counter_value("test_rl.http_local_rate_limit.ok"), Some(2));
        assert_eq!(store.counter_value("test_rl.http_local_rate_limit.rate_limited"), Some(1));
        assert_eq!(store.counter_value("test_rl.http_local_rate_limit.enforced"), Some(1));
        // One fill later, one more token.
        assert!(matches!(decide(&l, now + Duration::from_secs(1), &mut r, &mut conn, &()), Decision::Pass { .. }));
    }

    #[test]
    fn not_enabled_does_nothing_and_not_enforced_passes() {
        let store = StatsStore::new(1);
        let off = Limiter::new(&config(0, 100, false), &store, 0);
        let now = Instant::now();
        let mut conn = ConnectionBuckets::default();
        for _ in 0..5 {
            assert!(matches!(decide(&off, now, &mut || 0, &mut conn, &()), Decision::Skip));
        }
        let shadow = Limiter::new(&config(100, 0, false), &store, 0);
        for _ in 0..2 {
            assert!(matches!(decide(&shadow, now, &mut || 0, &mut conn, &()), Decision::Pass { .. }));
        }
        assert!(matches!(decide(&shadow, now, &mut || 0, &mut conn, &()), Decision::NotEnforced { .. }));
    }

    #[test]
    fn descriptors_take_their_own_bucket_then_the_default() {
        let mut cfg = (*config(100, 100, false)).clone();
        cfg.token_bucket =
            Some(TokenBucketSpec { max_tokens: 3, tokens_per_fill: 1, fill_interval: Duration::from_secs(1) });
        cfg.descriptors = vec![Arc::new(LocalRateLimitDescriptor {
            entries: vec![("client".into(), "a".into())],
            token_bucket: TokenBucketSpec { max_tokens: 1, tokens_per_fill: 1, fill_interval: Duration::from_secs(1) },
        })];
        let store = StatsStore::new(1);
        let l = Limiter::new(&Arc::new(cfg), &store, 0);
        let now = Instant::now();
        let mut conn = ConnectionBuckets::default();
        let a = Produces(vec![vec![("client", "a")]]);
        let b = Produces(vec![vec![("client", "b")]]);
        // Client a: its descriptor's single token, then limited by it.
        assert!(matches!(
            decide(&l, now, &mut || 0, &mut conn, &a),
            Decision::Pass { x: Some(XRateLimit { limit: 1, remaining: 0, .. }) }
        ));
        assert!(matches!(
            decide(&l, now, &mut || 0, &mut conn, &a),
            Decision::Limited { x: Some(XRateLimit { limit: 1, .. }), .. }
        ));
        // Client b matches no descriptor: the default bucket (one token
        // already consumed by a's first request) has two left.
        assert!(matches!(decide(&l, now, &mut || 0, &mut conn, &b), Decision::Pass { .. }));
        assert!(matches!(decide(&l, now, &mut || 0, &mut conn, &b), Decision::Pass { .. }));
        assert!(matches!(
            decide(&l, now, &mut || 0, &mut conn, &b),
            Decision::Limited { x: Some(XRateLimit { limit: 3, .. }), .. }
        ));
    }

    #[test]
    fn request_descriptors_follow_the_actions() {
        use control::model::{HeaderMatch, HeaderMatchSpec};
        let mut h = crate::http1::RequestHead::new();
        let limits = crate::http1::Limits { max_request_line: 8192, max_head_bytes: 65536, max_headers: 100 };
        crate::http1::parse_request_head(b"GET / HTTP/1.1\r\nhost: x\r\nx-client: c1\r\n\r\n", &limits, &mut h)
            .unwrap()
            .unwrap();
        let ip: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        let header = |name: &str, skip| RateLimitAction::RequestHeaders {
            header_name: name.into(),
            descriptor_key: "k".into(),
            skip_if_absent: skip,
        };
        let policies = vec![
            RateLimitPolicy { stage: 0, actions: vec![header("x-client", false), RateLimitAction::RemoteAddress] },
            RateLimitPolicy { stage: 0, actions: vec![header("x-missing", false)] },
            RateLimitPolicy {
                stage: 0,
                actions: vec![
                    header("x-missing", true),
                    RateLimitAction::GenericKey { descriptor_key: "generic_key".into(), descriptor_value: "g".into() },
                ],
            },
            RateLimitPolicy { stage: 1, actions: vec![RateLimitAction::RemoteAddress] },
            RateLimitPolicy {
                stage: 0,
                actions: vec![RateLimitAction::HeaderValueMatch {
                    descriptor_key: "header_match".into(),
                    descriptor_value: "has-client".into(),
                    expect_match: true,
                    headers: vec![HeaderMatch {
                        name: "x-client".into(),
                        spec: HeaderMatchSpec::Present(true),
                        invert_match: false,
                        treat_missing_header_as_empty: false,
                    }],
                }],
            },
        ];
        let request = RouteDescriptors { policies: &policies, stage: 0, head: &h, remote: ip };
        // The three stage-0 policies that complete (the second needs an
        // absent header; the stage-1 one belongs to another filter).
        assert!(request.produces(&descriptor(&[("k", "c1"), ("remote_address", "10.0.0.1")])));
        assert!(request.produces(&descriptor(&[("generic_key", "g")])));
        assert!(request.produces(&descriptor(&[("header_match", "has-client")])));
        // Anything else: a prefix or an extension of a produced descriptor,
        // another value, the skipped entry's key, the other stage's.
        assert!(!request.produces(&descriptor(&[("k", "c1")])));
        assert!(!request.produces(&descriptor(&[("k", "c1"), ("remote_address", "10.0.0.1"), ("x", "y")])));
        assert!(!request.produces(&descriptor(&[("k", "c2"), ("remote_address", "10.0.0.1")])));
        assert!(!request.produces(&descriptor(&[("k", ""), ("generic_key", "g")])));
        assert!(!request.produces(&descriptor(&[("remote_address", "10.0.0.1")])));
        let v6 = RouteDescriptors {
            policies: &policies[3..4],
            stage: 1,
            head: &h,
            remote: "::ffff:203.0.113.255".parse().unwrap(),
        };
        assert!(v6.produces(&descriptor(&[("remote_address", "::ffff:203.0.113.255")])));
    }

    #[test]
    fn per_connection_buckets_are_separate() {
        let store = StatsStore::new(1);
        let l = Limiter::new(&config(100, 100, true), &store, 0);
        let now = Instant::now();
        let (mut a, mut b) = (ConnectionBuckets::default(), ConnectionBuckets::default());
        for _ in 0..2 {
            assert!(matches!(decide(&l, now, &mut || 0, &mut a, &()), Decision::Pass { .. }));
        }
        assert!(matches!(decide(&l, now, &mut || 0, &mut a, &()), Decision::Limited { .. }));
        assert!(matches!(decide(&l, now, &mut || 0, &mut b, &()), Decision::Pass { .. }));
    }
}
