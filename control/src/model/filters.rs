//! The traffic-governance filters of the model: local rate limiting (HTTP
//! and network), fault injection, and route request mirroring.
//!
//! Plain validated data like the rest of `model`: defaults applied by the
//! translator (`bootstrap/translate/filters.rs`), nothing runtime-related.
//! Token buckets, random draws and active-fault counts live in the data
//! plane (`dataplane::filters`); a bucket is keyed by the address of the
//! `Arc` holding its filter config, so one config snapshot has exactly one
//! bucket per filter instance shared by all shards.

use std::sync::Arc;
use std::time::Duration;

use super::{HeaderMatch, HeaderMutations};

/// `envoy.type.v3.FractionalPercent` with its denominator as a number
/// (100, 10,000 or 1,000,000).  A numerator above the denominator is
/// clamped to it, as Envoy does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FractionalPercent {
    pub numerator: u32,
    pub denominator: u32,
}

impl FractionalPercent {
    pub const NEVER: FractionalPercent = FractionalPercent { numerator: 0, denominator: 100 };
    pub const ALWAYS: FractionalPercent = FractionalPercent { numerator: 100, denominator: 100 };

    /// Whether a uniformly random `random` falls in the fraction
    /// (`random % denominator < numerator`, Envoy's `featureEnabled`).
    pub fn hits(&self, random: u64) -> bool {
        self.numerator >= self.denominator || random % u64::from(self.denominator.max(1)) < u64::from(self.numerator)
    }

    /// The same denominator with another numerator, capped at this one's
    /// (how Envoy's header-controlled fault percentages work).
    pub fn with_numerator_capped(&self, numerator: u32) -> FractionalPercent {
        FractionalPercent { numerator: numerator.min(self.numerator), denominator: self.denominator }
    }
}

/// `envoy.type.v3.TokenBucket`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucketSpec {
    /// `max_tokens` (> 0): the bucket starts full.
    pub max_tokens: u32,
    /// `tokens_per_fill` (default 1).
    pub tokens_per_fill: u32,
    /// `fill_interval` (≥ 50 ms, as Envoy's local rate limiters require).
    pub fill_interval: Duration,
}

/// `envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit`, as
/// an HTTP filter or as a per-route override (which replaces the filter's
/// configuration entirely on that route, with a bucket of its own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalRateLimit {
    /// `http_filters[].name` (per-route configs are found by it first, then
    /// by `envoy.filters.http.local_ratelimit`); empty for an override.
    pub name: String,
    /// `stat_prefix`: stats are `<stat_prefix>.http_local_rate_limit.*`.
    pub stat_prefix: String,
    /// `status.code` (default 429; Envoy falls back to 429 below 400).
    pub status: u16,
    /// `token_bucket`: `None` means the filter passes everything (it is
    /// then only a holder for per-route configs).
    pub token_bucket: Option<TokenBucketSpec>,
    /// `filter_enabled.default_value` (default 0%: disabled).
    pub filter_enabled: FractionalPercent,
    /// `filter_enforced.default_value` (default 0%: counted, not enforced).
    pub filter_enforced: FractionalPercent,
    /// `request_headers_to_add_when_not_enforced`.
    pub request_headers_when_not_enforced: HeaderMutations,
    /// `response_headers_to_add` (on rate-limited replies).
    pub response_headers: HeaderMutations,
    /// `enable_x_ratelimit_headers: DRAFT_VERSION_03`.
    pub x_ratelimit_headers: bool,
    /// `local_rate_limit_per_downstream_connection`: a bucket per
    /// downstream connection instead of one per filter.
    pub per_connection: bool,
    /// `descriptors`: buckets for requests whose route `rate_limits`
    /// produce exactly these entries.
    pub descriptors: Vec<Arc<LocalRateLimitDescriptor>>,
    /// `stage` (default 0): only route `rate_limits` of this stage apply.
    pub stage: u32,
    /// `always_consume_default_token_bucket` (default true): take a token of
    /// `token_bucket` even when a descriptor matched.
    pub always_consume_default_token_bucket: bool,
}

/// `envoy.extensions.common.ratelimit.v3.LocalRateLimitDescriptor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalRateLimitDescriptor {
    /// `entries` as (key, value), in order.
    pub entries: Vec<(String, String)>,
    pub token_bucket: TokenBucketSpec,
}

/// `RouteAction.rate_limits[]` (`config.route.v3.RateLimit`): the actions
/// that build one descriptor for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitPolicy {
    /// `stage` (default 0).
    pub stage: u32,
    pub actions: Vec<RateLimitAction>,
}

/// `config.route.v3.RateLimit.Action` (the supported subset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateLimitAction {
    /// `request_headers`: `(descriptor_key, value of header_name)`; an
    /// absent header drops the whole descriptor unless `skip_if_absent`.
    RequestHeaders { header_name: String, descriptor_key: String, skip_if_absent: bool },
    /// `remote_address`: `("remote_address", trusted client IP)`.
    RemoteAddress,
    /// `generic_key`: `(descriptor_key or "generic_key", descriptor_value)`.
    GenericKey { descriptor_key: String, descriptor_value: String },
    /// `header_value_match`: `(descriptor_key or "header_match",
    /// descriptor_value)` when the headers match (`expect_match`, default
    /// true) — otherwise no descriptor.
    HeaderValueMatch { descriptor_key: String, descriptor_value: String, expect_match: bool, headers: Vec<HeaderMatch> },
}

/// `envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkLocalRateLimit {
    /// Stats are `local_ratelimit.<stat_prefix>.rate_limited`.
    pub stat_prefix: String,
    pub token_bucket: TokenBucketSpec,
    /// `runtime_enabled.default_value` (default true).
    pub enabled: bool,
}

/// `envoy.extensions.filters.http.fault.v3.HTTPFault`, as an HTTP filter or
/// a per-route override (which replaces it entirely).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// `http_filters[].name`; empty for an override.
    pub name: String,
    pub delay: Option<FaultDelay>,
    pub abort: Option<FaultAbort>,
    /// `headers`: all must match for any fault to apply.
    pub headers: Vec<HeaderMatch>,
    /// `downstream_nodes`: when non-empty, `x-envoy-downstream-service-node`
    /// must name one of them.
    pub downstream_nodes: Vec<String>,
    /// `max_active_faults` (unset: unlimited).
    pub max_active_faults: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultDelay {
    pub kind: FaultDelayKind,
    /// `percentage` (default 0%).
    pub percentage: FractionalPercent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultDelayKind {
    /// `fixed_delay`.
    Fixed(Duration),
    /// `header_delay`: `x-envoy-fault-delay-request` (milliseconds).
    Header,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultAbort {
    pub kind: FaultAbortKind,
    /// `percentage` (default 0%).
    pub percentage: FractionalPercent,
    /// `response_body` (empty: Envoy's `fault filter abort`).
    pub response_body: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultAbortKind {
    /// `http_status` (200..=599).
    Http(u16),
    /// `grpc_status`: a trailers-only gRPC reply (HTTP 200, `grpc-status`).
    Grpc(u32),
    /// `header_abort`: `x-envoy-fault-abort-request` /
    /// `x-envoy-fault-abort-grpc-request`.
    Header,
}

/// One `RouteAction.request_mirror_policies` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorPolicy {
    pub cluster: MirrorCluster,
    /// `runtime_fraction.default_value` (unset: every request).
    pub fraction: FractionalPercent,
    /// `disable_shadow_host_suffix_append`.
    pub disable_shadow_host_suffix_append: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MirrorCluster {
    /// `cluster`.
    Name(String),
    /// `cluster_header` (lower-cased): the cluster named by the request.
    Header(String),
}

/// Shared handle types, so `HttpFilter` / `PerFilterConfig` stay small.
pub type LocalRateLimitRef = Arc<LocalRateLimit>;
pub type FaultRef = Arc<Fault>;
