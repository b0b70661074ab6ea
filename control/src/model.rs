//! The validated, immutable configuration model the data plane runs on.
//!
//! Everything here is plain Rust data: no protobuf types, no `Any`, no
//! optional-with-default ambiguity.  Defaults are applied by the translators
//! (bootstrap file today, xDS later) so that the data plane never has to know
//! what Envoy's default for a field is.  A `Config` is built whole, validated
//! whole, then published as an `Arc<Config>`; it is never mutated afterwards.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// One complete, validated configuration snapshot.
#[derive(Debug, Clone)]
pub struct Config {
    /// Monotonic snapshot version assigned at publication (0 = first).
    pub version: u64,
    pub node: Node,
    pub admin: Option<Admin>,
    pub listeners: Vec<Arc<Listener>>,
    /// Clusters by name; route actions refer to them by name.
    pub clusters: BTreeMap<String, Arc<Cluster>>,
    /// The bootstrap as loaded, in canonical proto3 JSON (for `/config_dump`).
    pub bootstrap_json: serde_json::Value,
    /// When this snapshot was built (RFC 3339, UTC), for `/config_dump`.
    pub last_updated: String,
}

#[derive(Debug, Clone, Default)]
pub struct Node {
    pub id: String,
    pub cluster: String,
}

#[derive(Debug, Clone)]
pub struct Admin {
    pub address: SocketAddr,
    /// `access_log_path` (deprecated in Envoy but still common); admin requests are logged there.
    pub access_log_path: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Listener {
    pub name: String,
    pub address: SocketAddr,
    /// The network filter chain's terminal filter.  Only the HTTP connection
    /// manager exists today; TCP proxy arrives with its own issue.
    pub http: Arc<HttpConnectionManager>,
    /// `per_connection_buffer_limit_bytes` (Envoy default 1 MiB).
    pub per_connection_buffer_limit_bytes: u32,
}

/// How the `server` response header is treated (`server_header_transformation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerHeaderTransformation {
    Overwrite,
    AppendIfAbsent,
    PassThrough,
}

/// `envoy.filters.network.http_connection_manager`.
#[derive(Debug, Clone)]
pub struct HttpConnectionManager {
    pub stat_prefix: String,
    pub route_config: Arc<RouteConfig>,
    /// `max_request_headers_kb`, in bytes (default 60 KiB).
    pub max_request_headers_bytes: usize,
    /// `common_http_protocol_options.max_headers_count` (default 100).
    pub max_headers_count: usize,
    /// Limit on the request line (meshgate: 8 KiB, like nginx's
    /// `large_client_header_buffers` line limit); over it → 414.
    pub max_request_line_bytes: usize,
    /// `request_headers_timeout` (meshgate default 10 s; `0s` disables).
    pub request_headers_timeout: Option<Duration>,
    /// `stream_idle_timeout` (default 5 min; `0s` disables).
    pub stream_idle_timeout: Option<Duration>,
    /// `request_timeout` (default disabled).
    pub request_timeout: Option<Duration>,
    /// `common_http_protocol_options.idle_timeout` for downstream connections (default 1 h; `0s` disables).
    pub idle_timeout: Option<Duration>,
    /// `drain_timeout` (default 5 s) — how long a draining connection gets to finish.
    pub drain_timeout: Duration,
    pub use_remote_address: bool,
    pub xff_num_trusted_hops: u32,
    /// `server_name` (default "envoy" in Envoy; "meshgate" here).
    pub server_name: String,
    pub server_header_transformation: ServerHeaderTransformation,
    /// `generate_request_id` (default true).
    pub generate_request_id: bool,
    /// `preserve_external_request_id` (default false).
    pub preserve_external_request_id: bool,
    /// `http_protocol_options.accept_http_10` (default false → 426).
    pub accept_http_10: bool,
    /// `http_protocol_options.enable_trailers` (default false: HTTP/1
    /// trailers are parsed and dropped, as Envoy does).
    pub enable_trailers: bool,
    /// HTTP filters in order; the last one is always the router.
    pub http_filters: Vec<HttpFilter>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpFilter {
    /// `envoy.filters.http.router`.
    Router,
}

/// `RouteConfiguration`.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub name: String,
    pub virtual_hosts: Vec<VirtualHost>,
}

/// One entry of a virtual host's `domains`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainMatch {
    /// `foo.com` (compared case-insensitively; stored lower-case).
    Exact(String),
    /// `*.foo.com` / `*-bar.foo.com`: stored without the `*` (`.foo.com`).
    Suffix(String),
    /// `foo.*`: stored without the `*` (`foo.`).
    Prefix(String),
    /// `*`.
    Any,
}

#[derive(Debug, Clone)]
pub struct VirtualHost {
    pub name: String,
    pub domains: Vec<DomainMatch>,
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub matcher: RouteMatch,
    pub action: RouteAction,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// `prefix`.
    Prefix(String),
    /// `path`.
    Exact(String),
}

#[derive(Debug, Clone)]
pub struct RouteMatch {
    pub path: PathMatch,
    /// `case_sensitive` (default true).
    pub case_sensitive: bool,
}

#[derive(Debug, Clone)]
pub enum RouteAction {
    /// `route: { cluster: ... }`.
    Forward(ForwardAction),
    /// `direct_response`.
    DirectResponse { status: u16, body: Option<Arc<[u8]>> },
}

#[derive(Debug, Clone)]
pub struct ForwardAction {
    pub cluster: String,
    /// `timeout` (default 15 s; `0s` disables).
    pub timeout: Option<Duration>,
    /// `prefix_rewrite`.
    pub prefix_rewrite: Option<String>,
    /// `hash_policy`, in order: the request hash consistent-hashing load
    /// balancers (RING_HASH, MAGLEV) pick with.  Empty means "no hash".
    pub hash_policy: Vec<HashPolicy>,
}

/// One `RouteAction.hash_policy` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashPolicy {
    pub kind: HashPolicyKind,
    /// `terminal`: once a hash exists, later policies are skipped.
    pub terminal: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashPolicyKind {
    /// `header.header_name`, lower-cased.  `:authority`, `:path` and
    /// `:method` name the request line and Host as Envoy's pseudo-headers do.
    Header { name: String },
    /// `cookie`.
    Cookie(CookieHashPolicy),
    /// `connection_properties.source_ip: true` (a `false` entry hashes
    /// nothing and is dropped at load time, as in Envoy).
    SourceIp,
    /// `query_parameter.name` (case-sensitive, first occurrence, not decoded).
    QueryParameter { name: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieHashPolicy {
    pub name: String,
    /// `ttl`, whole seconds (Envoy drops the nanos).  Set: a missing cookie
    /// is generated and returned in `set-cookie`; `Some(0)` makes it a
    /// session cookie.  Unset: a missing cookie yields no hash.
    pub ttl_seconds: Option<u64>,
    /// `path` of the generated cookie (empty: none).
    pub path: String,
    /// `attributes` of the generated cookie, as (name, value).
    pub attributes: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscoveryType {
    Static,
    StrictDns,
    /// `cluster_type: envoy.clusters.aggregate`: no endpoints of its own;
    /// its members are `Cluster::aggregate_clusters`.
    Aggregate,
}

/// `lb_policy` with its `*_lb_config`, defaults applied.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LbPolicy {
    /// `ROUND_ROBIN`: weighted by earliest-deadline-first when weights differ.
    RoundRobin,
    /// `LEAST_REQUEST`: `choice_count` (default 2) random choices when
    /// weights are equal, else EDF with weight / (active + 1)^bias.
    LeastRequest { choice_count: u32, active_request_bias: f64 },
    /// `RANDOM` (Envoy's ignores endpoint weights).
    Random,
    /// `RING_HASH` (xxHash of `ip:port_i`); sizes default to 1024 / 8M.
    RingHash { minimum_ring_size: u64, maximum_ring_size: u64 },
    /// `MAGLEV`; `table_size` is prime, default 65537.
    Maglev { table_size: u64 },
    /// `CLUSTER_PROVIDED`: the cluster type balances (aggregate clusters).
    ClusterProvided,
}

impl LbPolicy {
    /// Whether picks use the route's `hash_policy` (consistent hashing).
    pub fn uses_hash(&self) -> bool {
        matches!(self, LbPolicy::RingHash { .. } | LbPolicy::Maglev { .. })
    }
}

#[derive(Debug, Clone)]
pub struct Cluster {
    pub name: String,
    pub discovery: DiscoveryType,
    /// `connect_timeout` (default 5 s).
    pub connect_timeout: Duration,
    pub lb_policy: LbPolicy,
    /// `dns_refresh_rate` for STRICT_DNS (default 5 s).
    pub dns_refresh_rate: Duration,
    /// Endpoints from `load_assignment`, in order.
    pub endpoints: Vec<Endpoint>,
    /// `common_http_protocol_options.idle_timeout` on the upstream side
    /// (`typed_extension_protocol_options` HttpProtocolOptions; default 1 h).
    pub upstream_idle_timeout: Duration,
    /// `max_requests_per_connection` (HttpProtocolOptions.common_http_protocol_options; default unlimited).
    pub max_requests_per_connection: Option<u32>,
    /// Idle pooled connections kept per endpoint per shard (meshgate-specific knob, default 64).
    pub max_idle_per_endpoint: usize,
    /// `per_connection_buffer_limit_bytes` (default 1 MiB).
    pub per_connection_buffer_limit_bytes: u32,
    /// `explicit_http_config.http_protocol_options.enable_trailers`
    /// (default false).  Trailers cross the gateway only when both the
    /// listener's and the cluster's codec have them enabled.
    pub enable_trailers: bool,
    /// `load_assignment.policy.overprovisioning_factor`, percent (default 140).
    pub overprovisioning_factor: u32,
    /// `load_assignment.policy.weighted_priority_health` (default false):
    /// a priority's health counts endpoint weights instead of endpoints.
    pub weighted_priority_health: bool,
    /// `common_lb_config.healthy_panic_threshold`, whole percent (default 50).
    pub healthy_panic_threshold: u32,
    /// Aggregate clusters only: the member clusters in failover order.
    pub aggregate_clusters: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointAddress {
    /// A literal IP address (STATIC clusters).
    Socket(SocketAddr),
    /// A hostname resolved by the DNS refresher (STRICT_DNS clusters).
    Dns { host: String, port: u16 },
}

#[derive(Debug, Clone)]
pub struct Endpoint {
    pub address: EndpointAddress,
    /// `load_balancing_weight` (default 1).
    pub weight: u32,
    /// `priority` of the `LocalityLbEndpoints` (default 0).
    pub priority: u32,
}

// ------------------------------------------------------------------ matchers
//
// Envoy's `type.matcher.v3.StringMatcher` and `config.route.v3.HeaderMatcher`,
// shared by routing (route/header matching) and RBAC.  Evaluation lives in
// `dataplane::matcher`; these are the validated shapes.

/// `envoy.type.matcher.v3.StringMatcher`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StringMatch {
    pub pattern: StringPattern,
    /// `ignore_case`: ASCII case-insensitive exact/prefix/suffix/contains.
    /// Envoy documents it as having no effect on `safe_regex`.
    pub ignore_case: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StringPattern {
    /// `exact` (may be empty: matches only the empty string).
    Exact(String),
    /// `prefix` (non-empty, as Envoy validates).
    Prefix(String),
    /// `suffix` (non-empty).
    Suffix(String),
    /// `contains` (non-empty).
    Contains(String),
    /// `safe_regex`: must match the whole value, as RE2's FullMatch does.
    Regex(SafeRegex),
}

/// A compiled `RegexMatcher`, anchored at both ends.  Compiled once when
/// the config is translated, so an invalid pattern is a load error and the
/// data plane never compiles on the request path.  Equality is by pattern.
#[derive(Clone)]
pub struct SafeRegex {
    pub pattern: String,
    pub regex: regex::bytes::Regex,
}

impl SafeRegex {
    pub fn new(pattern: &str) -> Result<SafeRegex, String> {
        // RE2 FullMatch semantics; the group keeps `a|b` from binding to the anchors.
        let regex =
            regex::bytes::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| e.to_string())?;
        Ok(SafeRegex {
            pattern: pattern.to_string(),
            regex,
        })
    }

    pub fn is_match(&self, value: &[u8]) -> bool {
        self.regex.is_match(value)
    }
}

impl PartialEq for SafeRegex {
    fn eq(&self, other: &Self) -> bool {
        self.pattern == other.pattern
    }
}

impl Eq for SafeRegex {}

impl std::fmt::Debug for SafeRegex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SafeRegex({:?})", self.pattern)
    }
}

/// `envoy.config.route.v3.HeaderMatcher`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMatch {
    /// Lower-cased; pseudo-headers (`:path`, `:method`, `:authority`,
    /// `:scheme`) are answered by the caller's header lookup.
    pub name: String,
    pub spec: HeaderMatchSpec,
    /// `invert_match`.  A missing header never matches, inverted or not,
    /// except through `present_match` (Envoy's `matchHeaders`).
    pub invert_match: bool,
    /// `treat_missing_header_as_empty`.
    pub treat_missing_header_as_empty: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderMatchSpec {
    /// `string_match`, and the deprecated `prefix_match` / `suffix_match` /
    /// `contains_match` / `safe_regex_match`, which mean the same thing.
    String(StringMatch),
    /// The deprecated `exact_match`: unlike `string_match.exact`, an empty
    /// value matches any value.
    LegacyExact(String),
    /// `range_match`: the value parsed as an integer in `[start, end)`.
    Range { start: i64, end: i64 },
    /// `present_match` (also what a matcher with no specifier means: `true`).
    Present(bool),
}
