//! Traffic-governance filters: Envoy's local rate limiters (HTTP and
//! network) and HTTP fault injection, as one shard runs them.
//!
//! # What it owns
//!
//! * The per-shard runtime of each configured filter ([`ListenerFilters`]):
//!   stat handles, compiled header matchers, and the per-route overrides
//!   (`typed_per_filter_config`), all built when a shard picks up a config
//!   snapshot, never per request.
//! * The decisions: [`local_ratelimit`] says pass / pass-but-flag /
//!   rate-limited for a request; [`fault`] says which delay and abort a
//!   request gets.  Both are sans-IO: time and random numbers are passed
//!   in; the connection manager (`proxy`) sleeps, writes the local reply
//!   and adds the headers.
//! * The **shared token buckets** ([`token_bucket`]).  Envoy applies a local
//!   rate limit per process, so one bucket serves all shards: it is the one
//!   piece of request-path state here that is shared between threads, and it
//!   is a single atomic word updated by CAS (no lock).  A bucket belongs to
//!   one filter config of one snapshot; the shards find it through
//!   [`shared_bucket`], a registry keyed by the address of the config's
//!   `Arc` and consulted only while a shard builds its snapshot (that lookup
//!   takes a mutex; the request path never does).  A new snapshot has new
//!   `Arc`s and so fresh, full buckets — as Envoy rebuilds its filters on a
//!   listener update.
//!
//! # What it must not touch
//!
//! Sockets, timers and response writing (the proxy's), routing (it is given
//! the matched route), and config parsing (it sees `control::model` only).
//! Header matching semantics are `crate::matcher`'s.

pub mod fault;
pub mod local_ratelimit;
pub mod token_bucket;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Instant;

use control::model::{HttpFilter, Listener, NetworkLocalRateLimit, TokenBucketSpec};

use crate::http1::WellKnown;
use crate::stats::{Counter, Scope, StatsStore};
use token_bucket::TokenBucket;

/// Buckets by the address of the config `Arc` they belong to, with a weak
/// reference proving that address still holds that config.
type Registry = HashMap<usize, (Weak<dyn Send + Sync>, Arc<TokenBucket>)>;

fn registry() -> &'static Mutex<Registry> {
    static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The process-wide bucket of the filter config `owner` (created full on
/// first use).  Called while building a snapshot, never per request.
pub fn shared_bucket<T: Send + Sync + 'static>(owner: &Arc<T>, spec: TokenBucketSpec) -> Arc<TokenBucket> {
    let key = Arc::as_ptr(owner) as *const u8 as usize;
    let weak: Weak<dyn Send + Sync> = Arc::downgrade(owner) as Weak<dyn Send + Sync>;
    // A poisoned lock only means another shard panicked mid-insert; the
    // map itself is still consistent.
    let mut map = registry().lock().unwrap_or_else(|e| e.into_inner());
    // Configs no snapshot holds any more free their buckets.
    map.retain(|_, (w, _)| w.strong_count() > 0);
    if let Some((w, bucket)) = map.get(&key) {
        if w.upgrade().is_some_and(|o| std::ptr::eq(Arc::as_ptr(&o) as *const u8, key as *const u8)) {
            return bucket.clone();
        }
    }
    let bucket = Arc::new(TokenBucket::new(spec, Instant::now()));
    map.insert(key, (weak, bucket.clone()));
    bucket
}

/// The fixed headers of a local reply a governance filter sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterReply {
    /// The local rate limit's `x-envoy-ratelimited: true`.
    RateLimited,
    /// A fault abort with a gRPC status: a trailers-only gRPC response
    /// (`content-type: application/grpc`, `grpc-status`, `grpc-message`).
    GrpcStatus { code: u32, message: String },
}

impl FilterReply {
    pub fn append_to(&self, headers: &mut crate::http1::Headers) {
        match self {
            FilterReply::RateLimited => headers.set("x-envoy-ratelimited", b"true"),
            FilterReply::GrpcStatus { code, message } => {
                headers.set(WellKnown::ContentType, b"application/grpc");
                headers.set(WellKnown::GrpcStatus, itoa::Buffer::new().format(*code).as_bytes());
                headers.set(WellKnown::GrpcMessage, message.as_bytes());
            }
        }
    }
}

/// A runnable HTTP filter of the governance family, in chain order.
pub enum HttpGovernance {
    RateLimit(local_ratelimit::HttpLocalRateLimit),
    Fault(fault::HttpFault),
}

/// One `envoy.filters.network.local_ratelimit` on one shard.
pub struct NetworkLocalRateLimiter {
    config: Arc<NetworkLocalRateLimit>,
    bucket: Arc<TokenBucket>,
    rate_limited: Counter,
}

/// Every governance filter of one listener, for one shard's snapshot.
pub struct ListenerFilters {
    http: Box<[HttpGovernance]>,
    network: Box<[NetworkLocalRateLimiter]>,
}

impl ListenerFilters {
    pub fn new(listener: &Listener, store: &StatsStore, slot: usize) -> ListenerFilters {
        let hcm = &listener.http;
        let http = hcm
            .http_filters
            .iter()
            .filter_map(|f| match f {
                HttpFilter::LocalRateLimit(c) => Some(HttpGovernance::RateLimit(
                    local_ratelimit::HttpLocalRateLimit::new(c, &hcm.route_config, store, slot),
                )),
                HttpFilter::Fault(c) => Some(HttpGovernance::Fault(fault::HttpFault::new(
                    c,
                    &hcm.route_config,
                    &hcm.stat_prefix,
                    store,
                    slot,
                ))),
                _ => None,
            })
            .collect();
        let network = listener
            .network_local_ratelimit
            .iter()
            .map(|n| {
                let prefix = n.stat_prefix.strip_suffix('.').unwrap_or(&n.stat_prefix);
                NetworkLocalRateLimiter {
                    config: n.clone(),
                    bucket: shared_bucket(n, n.token_bucket),
                    rate_limited: store.counter(
                        &Scope::Named(format!("local_ratelimit.{prefix}")),
                        "rate_limited",
                        slot,
                    ),
                }
            })
            .collect();
        ListenerFilters { http, network }
    }

    /// The HTTP governance filters in chain order.
    pub fn http(&self) -> &[HttpGovernance] {
        &self.http
    }

    /// The network local rate limiters: `false` when a new connection must
    /// be closed right away (Envoy closes it "without further filter
    /// iteration").  Each connection takes one token of each filter.
    pub fn admit_connection(&self, now: Instant) -> bool {
        for n in self.network.iter() {
            if !n.config.enabled {
                continue;
            }
            if !n.bucket.try_take(now).allowed {
                n.rate_limited.inc();
                return false;
            }
        }
        true
    }
}

/// Envoy's most specific per-filter config for a matched route: the
/// route's, its virtual host's, then the route configuration's — first
/// under the filter's configured name, then under the canonical one.
pub(crate) fn per_route_config<'m>(
    matched: Option<crate::router::Matched<'m>>,
    name: &str,
    canonical: &str,
) -> Option<&'m control::model::PerFilterConfig> {
    let m = matched?;
    let lookup = |key: &str| {
        m.route
            .typed_per_filter_config
            .get(key)
            .or_else(|| m.vhost.typed_per_filter_config.get(key))
            .or_else(|| m.config.typed_per_filter_config.get(key))
    };
    (!name.is_empty())
        .then(|| lookup(name))
        .flatten()
        .or_else(|| (name != canonical).then(|| lookup(canonical)).flatten())
}

/// Every per-filter config of a route table under `name` or `canonical`.
pub(crate) fn all_per_route_configs<'c>(
    routes: &'c control::model::RouteConfig,
    name: &'c str,
    canonical: &'c str,
) -> impl Iterator<Item = &'c control::model::PerFilterConfig> + 'c {
    let mine = move |k: &String| k == name || k == canonical;
    let rc = routes.typed_per_filter_config.iter();
    let vhs = routes.virtual_hosts.iter().flat_map(move |vh| {
        vh.typed_per_filter_config.iter().chain(vh.routes.iter().flat_map(|r| r.typed_per_filter_config.iter()))
    });
    rc.chain(vhs).filter(move |(k, _)| mine(k)).map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn one_bucket_per_config_arc() {
        let spec = TokenBucketSpec { max_tokens: 1, tokens_per_fill: 1, fill_interval: Duration::from_secs(60) };
        let a = Arc::new(1u32);
        let b = Arc::new(1u32);
        let a1 = shared_bucket(&a, spec);
        let a2 = shared_bucket(&a, spec);
        assert!(Arc::ptr_eq(&a1, &a2));
        assert!(!Arc::ptr_eq(&a1, &shared_bucket(&b, spec)));
        let now = Instant::now();
        assert!(a1.try_take(now).allowed);
        assert!(!a2.try_take(now).allowed, "both handles drain one bucket");
    }
}
