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

mod filters;
pub use crate::governance::{
    CircuitBreakers, HealthCheck, HealthCheckKind, OutlierDetection, RetryBudget, RetryOn, RetryPolicy, RouteRetry,
    Thresholds, VhostRetry,
};
pub use filters::*;

/// One complete, validated configuration snapshot.
#[derive(Debug, Clone)]
pub struct Config {
    /// Monotonic snapshot version assigned at publication (0 = first).
    pub version: u64,
    pub node: Node,
    pub admin: Option<Admin>,
    pub listeners: Vec<Arc<Listener>>,
    /// Listeners whose filter chain ends in `envoy.filters.network.tcp_proxy`.
    pub tcp_listeners: Vec<Arc<TcpListener>>,
    /// Clusters by name; route actions refer to them by name.
    pub clusters: BTreeMap<String, Arc<Cluster>>,
    /// The bootstrap as loaded, in canonical proto3 JSON (for `/config_dump`).
    pub bootstrap_json: serde_json::Value,
    /// When this snapshot was built (RFC 3339, UTC), for `/config_dump`.
    pub last_updated: String,
    /// `dynamic_resources`: where xDS comes from (`None`: static only).
    pub xds: Option<Arc<Xds>>,
    /// The resources delivered over xDS that this snapshot runs, for
    /// `/config_dump` (`None` until the first xDS update is applied).
    pub dynamic: Option<Arc<DynamicDump>>,
}

/// `dynamic_resources` of the bootstrap (see docs/xds.md).
#[derive(Debug, Clone, PartialEq)]
pub struct Xds {
    /// `ads_config`, when any type is fetched over ADS.
    pub ads: Option<XdsServer>,
    /// `lds_config` (`None`: no dynamic listeners).
    pub lds: Option<XdsSource>,
    /// `cds_config` (`None`: no dynamic clusters).
    pub cds: Option<XdsSource>,
}

/// Where one resource type comes from (`ConfigSource`).
#[derive(Debug, Clone, PartialEq)]
pub struct XdsSource {
    /// `ads: {}` (true) or a server of its own (`api_config_source`).
    pub server: Option<XdsServer>,
    /// `initial_fetch_timeout` (default 15 s; `0s`: wait forever).
    pub initial_fetch_timeout: Option<Duration>,
}

/// `ApiConfigSource`: a management server and how to talk to it.
#[derive(Debug, Clone, PartialEq)]
pub struct XdsServer {
    pub api_type: XdsApiType,
    /// The static cluster holding the management server
    /// (`grpc_services[0].envoy_grpc.cluster_name`, or REST `cluster_names[0]`).
    pub cluster: String,
    /// Reconnect back-off (`envoy_grpc.retry_policy.retry_back_off`;
    /// Envoy's defaults: 500 ms base, 30 s cap).
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// REST: `refresh_delay` (default 1 s) and `request_timeout` (default 1 s).
    pub refresh_delay: Duration,
    pub request_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdsApiType {
    /// `GRPC`: state of the world.
    Grpc,
    /// `DELTA_GRPC`: incremental.
    DeltaGrpc,
    /// `REST`: JSON polling.
    Rest,
}

/// xDS resources as Envoy's `/config_dump` lists them.
#[derive(Debug, Clone, Default)]
pub struct DynamicDump {
    pub listeners: Vec<DynamicResource>,
    pub route_configs: Vec<DynamicResource>,
    pub clusters: Vec<DynamicResource>,
    pub endpoint_configs: Vec<DynamicResource>,
}

/// One accepted xDS resource: its canonical proto3 JSON (without `@type`),
/// the `version_info` it arrived with and when it was accepted.
#[derive(Debug, Clone)]
pub struct DynamicResource {
    pub name: String,
    pub version_info: String,
    pub last_updated: String,
    pub json: serde_json::Value,
    /// Still waiting for its RDS / EDS dependency (not serving yet).
    pub warming: bool,
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
    /// `envoy.filters.network.rbac` filters ahead of the terminal filter, in order.
    pub network_rbac: Vec<Arc<NetworkRbac>>,
    /// `envoy.filters.network.local_ratelimit` filters, in order.
    pub network_local_ratelimit: Vec<Arc<NetworkLocalRateLimit>>,
    /// Downstream TLS (`transport_socket` `envoy.transport_sockets.tls`).
    pub tls: Option<Arc<DownstreamTls>>,
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
    /// `upgrade_configs` (default none: upgrade requests get 403).
    pub upgrade_configs: Vec<UpgradeConfig>,
    /// `forward_client_cert_details` (default SANITIZE).
    pub forward_client_cert: ForwardClientCert,
    /// `set_current_client_cert_details`.
    pub client_cert_details: ClientCertDetails,
    /// `codec_type` (AUTO picks HTTP/2 by ALPN `h2` or the client preface).
    pub codec_type: CodecType,
    /// `http2_protocol_options` (edge-proxy defaults when absent).
    pub http2: Http2Options,
}

/// `HttpConnectionManager.CodecType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CodecType {
    /// HTTP/2 when TLS negotiates ALPN `h2` or a plaintext client starts
    /// with the HTTP/2 connection preface; HTTP/1.1 otherwise.
    #[default]
    Auto,
    Http1,
    /// HTTP/2 only (prior knowledge on plaintext).
    Http2,
}

/// `envoy.config.core.v3.Http2ProtocolOptions`: the subset meshgate
/// implements.  Defaults are Envoy's edge-proxy recommendations, not its
/// library defaults (see docs/http2.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Http2Options {
    pub max_concurrent_streams: u32,
    pub initial_stream_window_size: u32,
    pub initial_connection_window_size: u32,
}

impl Default for Http2Options {
    fn default() -> Self {
        Http2Options {
            max_concurrent_streams: 100,
            initial_stream_window_size: 64 * 1024,
            initial_connection_window_size: 1024 * 1024,
        }
    }
}

/// The HTTP version a cluster speaks to its hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    #[default]
    Http1,
    /// HTTP/2: prior knowledge (h2c) in plaintext, ALPN `h2` over TLS.
    Http2,
    /// HTTP/2 for requests that came in over HTTP/2, HTTP/1.1 otherwise.
    UseDownstream,
}

impl Http2Options {
    /// Upstream defaults: Envoy's unlimited `max_concurrent_streams` (the
    /// peer's SETTINGS decide), with the edge windows (64 KiB stream, 1 MiB
    /// connection) so a slow client bounds what the gateway buffers.
    pub fn upstream_default() -> Http2Options {
        Http2Options { max_concurrent_streams: 2_147_483_647, ..Http2Options::default() }
    }
}

/// `HttpConnectionManager.ForwardClientCertDetails`: what happens to
/// `x-forwarded-client-cert`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardClientCert {
    #[default]
    Sanitize,
    ForwardOnly,
    AppendForward,
    SanitizeSet,
    AlwaysForwardOnly,
}

/// `HttpConnectionManager.SetCurrentClientCertDetails`: the fields of the
/// client certificate added to `x-forwarded-client-cert` (`By` and `Hash`
/// are always there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClientCertDetails {
    pub subject: bool,
    pub cert: bool,
    pub chain: bool,
    pub dns: bool,
    pub uri: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpFilter {
    /// `envoy.filters.http.rbac`.
    Rbac(Arc<RbacFilter>),
    /// `envoy.filters.http.local_ratelimit`.
    LocalRateLimit(Arc<LocalRateLimit>),
    /// `envoy.filters.http.fault`.
    Fault(Arc<Fault>),
    /// `envoy.filters.http.router`.
    Router,
}

/// `RouteConfiguration`.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub name: String,
    pub virtual_hosts: Vec<VirtualHost>,
    pub typed_per_filter_config: PerFilterConfigs,
    /// `request_headers_to_add` / `request_headers_to_remove`.
    pub request_headers: HeaderMutations,
    /// `response_headers_to_add` / `response_headers_to_remove`.
    pub response_headers: HeaderMutations,
    /// `most_specific_header_mutations_wins` (default false: the route's
    /// mutations run first and the route configuration's last, so the
    /// least specific level has the last word).
    pub most_specific_header_mutations_wins: bool,
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
    pub typed_per_filter_config: PerFilterConfigs,
    /// `request_headers_to_add` / `request_headers_to_remove`.
    pub request_headers: HeaderMutations,
    /// `response_headers_to_add` / `response_headers_to_remove`.
    pub response_headers: HeaderMutations,
    /// `retry_policy`, `per_request_buffer_limit_bytes`, attempt-count headers.
    pub retry: VhostRetry,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub matcher: RouteMatch,
    pub action: RouteAction,
    /// Per-filter overrides; the route's own entry beats its virtual
    /// host's, which beats the route configuration's.
    pub typed_per_filter_config: PerFilterConfigs,
    /// `request_headers_to_add` / `request_headers_to_remove`.
    pub request_headers: HeaderMutations,
    /// `response_headers_to_add` / `response_headers_to_remove`.
    pub response_headers: HeaderMutations,
}

/// `RouteMatch.path_specifier`.  Every form is compared with the path
/// without its query and fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// `prefix`.
    Prefix(String),
    /// `path`.
    Exact(String),
    /// `path_separated_prefix`: the path equals it or continues with `/`.
    SeparatedPrefix(String),
    /// `safe_regex`: the whole path must match; `case_sensitive` does not
    /// apply (Envoy ignores it for regexes).
    Regex(SafeRegex),
}

#[derive(Debug, Clone)]
pub struct RouteMatch {
    pub path: PathMatch,
    /// `case_sensitive` (default true).
    pub case_sensitive: bool,
    /// `headers`: all must match.
    pub headers: Vec<HeaderMatch>,
    /// `query_parameters`: all must match.
    pub query_parameters: Vec<QueryParameterMatch>,
}

/// `config.route.v3.QueryParameterMatcher`: looks at the first occurrence
/// of `name` in the query string, as received (not percent-decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryParameterMatch {
    pub name: String,
    pub spec: QueryParameterSpec,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryParameterSpec {
    /// `string_match`: the parameter exists and its value matches.
    String(StringMatch),
    /// `present_match` (and no specifier at all, which means `true`):
    /// whether the parameter exists, with or without a value.  `false`
    /// matches only when it is absent (Envoy's current behaviour, the
    /// `enable_new_query_param_present_match_behavior` default).
    Present(bool),
}

// Routes are built once per config; boxing the forward action would add a
// pointer chase to every forwarded request for no memory that matters.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum RouteAction {
    /// `route: { cluster: ... }`.
    Forward(ForwardAction),
    /// `direct_response`.
    DirectResponse { status: u16, body: Option<Arc<[u8]>> },
    /// `redirect`.
    Redirect(Redirect),
}

#[derive(Debug, Clone)]
pub struct ForwardAction {
    /// `cluster` / `cluster_header` / `weighted_clusters`.
    pub cluster: ClusterSpecifier,
    /// `cluster_not_found_response_code` (default 503): the reply when a
    /// `cluster_header` names no cluster (or is absent).
    pub cluster_not_found_response_code: u16,
    /// `timeout` (default 15 s; `0s` disables).
    pub timeout: Option<Duration>,
    /// `idle_timeout`: `None` when unset (the HCM's `stream_idle_timeout`
    /// applies), `Some(None)` for `0s` (no idle timeout at all on this
    /// route), `Some(Some(d))` to replace the HCM's.
    pub idle_timeout: Option<Option<Duration>>,
    /// `prefix_rewrite`.
    pub prefix_rewrite: Option<String>,
    /// `regex_rewrite` (exclusive with `prefix_rewrite`).
    pub regex_rewrite: Option<RegexRewrite>,
    /// `host_rewrite_literal` / `auto_host_rewrite` / `host_rewrite_header`.
    pub host_rewrite: Option<HostRewrite>,
    /// `append_x_forwarded_host`.
    pub append_x_forwarded_host: bool,
    /// `hash_policy`, in order: the request hash consistent-hashing load
    /// balancers (RING_HASH, MAGLEV) pick with.  Empty means "no hash".
    pub hash_policy: Vec<HashPolicy>,
    /// `request_mirror_policies`.
    pub request_mirror_policies: Vec<MirrorPolicy>,
    /// `rate_limits` (descriptors for local rate limit `descriptors`).
    pub rate_limits: Vec<RateLimitPolicy>,
    /// `upgrade_configs`: per-route overrides of the HCM's upgrade configs.
    pub upgrade_configs: Vec<UpgradeConfig>,
    /// `retry_policy` and the route's `per_request_buffer_limit_bytes`.
    pub retry: RouteRetry,
    /// `max_stream_duration.grpc_timeout_header_max` / `_offset`: a gRPC
    /// request's `grpc-timeout` becomes the route timeout (`None`: ignored).
    pub grpc_timeout: Option<GrpcTimeoutPolicy>,
}

/// How `grpc-timeout` sets a gRPC request's route timeout (Envoy's router).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcTimeoutPolicy {
    /// `grpc_timeout_header_max` (`None` for `0s`: the header as sent).
    pub max: Option<Duration>,
    /// `grpc_timeout_header_offset`, subtracted from the header's value.
    pub offset: Duration,
}

/// One `upgrade_configs` entry (HCM or route): whether HTTP/1.1 upgrades
/// to `upgrade_type` (`Upgrade:` header token, e.g. `websocket`) are proxied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeConfig {
    /// Lower-cased; matched case-insensitively.
    pub upgrade_type: String,
    /// `enabled` (default true).
    pub enabled: bool,
}

/// Which cluster a forwarded request goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterSpecifier {
    /// `cluster`.
    Cluster(String),
    /// `cluster_header`: the first value of this (lower-cased) header.
    Header(String),
    /// `weighted_clusters`.
    Weighted(WeightedClusters),
}

/// `config.route.v3.WeightedCluster`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedClusters {
    pub clusters: Vec<ClusterWeight>,
    /// The sum of the weights (> 0, fits in a u32): a request picks
    /// `random % total` and takes the cluster whose cumulative interval
    /// holds it.  (The deprecated `total_weight`, when set, must equal it.)
    pub total_weight: u64,
    /// `header_name`: a request header whose value (an unsigned 64-bit
    /// integer) replaces the random number, so tiers of proxies agree.
    pub random_value_header: Option<String>,
}

/// `WeightedCluster.ClusterWeight`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterWeight {
    pub target: WeightedTarget,
    pub weight: u32,
    /// Applied before the route's own (the most specific level).
    pub request_headers: HeaderMutations,
    pub response_headers: HeaderMutations,
    /// `host_rewrite_literal`.
    pub host_rewrite_literal: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightedTarget {
    /// `name`.
    Name(String),
    /// `cluster_header` (lower-cased).
    Header(String),
}

/// `RouteAction.host_rewrite_specifier`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostRewrite {
    /// `host_rewrite_literal`.
    Literal(String),
    /// `auto_host_rewrite: true`: the picked endpoint's host name (STRICT_DNS
    /// endpoints only; an IP endpoint has none and the Host is kept).
    Auto,
    /// `host_rewrite_header` (lower-cased): its first value, if non-empty.
    Header(String),
}

/// `type.matcher.v3.RegexMatchAndSubstitute`: every non-overlapping match
/// of `pattern` in the path (query excluded) is replaced, RE2
/// `GlobalReplace` style.  Compiled at load time.
#[derive(Clone)]
pub struct RegexRewrite {
    pub pattern: String,
    /// As configured (RE2 syntax: `\1` names a group).
    pub substitution: String,
    regex: regex::bytes::Regex,
    /// `substitution` in the `regex` crate's syntax.
    replacement: String,
}

impl RegexRewrite {
    pub fn new(pattern: &str, substitution: &str) -> Result<RegexRewrite, String> {
        let translated = crate::re2::to_rust(pattern)?;
        let regex = regex::bytes::Regex::new(&translated).map_err(|e| e.to_string())?;
        let replacement = crate::re2::substitution_to_rust(substitution, regex.captures_len() - 1)?;
        Ok(RegexRewrite { pattern: pattern.to_string(), substitution: substitution.to_string(), regex, replacement })
    }

    /// `value` with every match replaced.
    pub fn replace_all<'a>(&self, value: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
        self.regex.replace_all(value, self.replacement.as_bytes())
    }
}

impl PartialEq for RegexRewrite {
    fn eq(&self, other: &Self) -> bool {
        self.pattern == other.pattern && self.substitution == other.substitution
    }
}

impl Eq for RegexRewrite {}

impl std::fmt::Debug for RegexRewrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RegexRewrite({:?} -> {:?})", self.pattern, self.substitution)
    }
}

/// `config.route.v3.RedirectAction`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// `https_redirect` (→ `https`) / `scheme_redirect`.
    pub scheme: Option<String>,
    /// `host_redirect`.
    pub host: Option<String>,
    /// `port_redirect` (0 = unset, as in Envoy).
    pub port: Option<u16>,
    pub path: RedirectPath,
    /// `response_code` as a status: 301 (default), 302, 303, 307, 308.
    pub response_code: u16,
    /// `strip_query`.
    pub strip_query: bool,
}

/// `RedirectAction.path_rewrite_specifier`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedirectPath {
    /// The request's path (and query) unchanged.
    Keep,
    /// `path_redirect`: replaces the path; a `?` in it replaces the query
    /// too (and then `strip_query` does not apply).
    Path(String),
    /// `prefix_rewrite`: the matched prefix (or path) is swapped.
    Prefix(String),
    /// `regex_rewrite`.
    Regex(RegexRewrite),
}

/// A list of `HeaderValueOption`s and header names to remove, at one level
/// (route configuration, virtual host, route, weighted cluster).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderMutations {
    /// `*_headers_to_add`, in order.
    pub add: Vec<HeaderToAdd>,
    /// `*_headers_to_remove`, lower-cased.  Removal happens before adding.
    pub remove: Vec<String>,
}

impl HeaderMutations {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }
}

/// `config.core.v3.HeaderValueOption`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderToAdd {
    /// Lower-cased.
    pub name: String,
    pub value: HeaderFormat,
    pub action: AppendAction,
    /// `keep_empty_value`: otherwise a value that formats to nothing is not added.
    pub keep_empty_value: bool,
}

/// `HeaderValueOption.append_action` (or the deprecated `append`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendAction {
    AppendIfExistsOrAdd,
    AddIfAbsent,
    OverwriteIfExistsOrAdd,
    OverwriteIfExists,
}

/// A header value with `%VARIABLE%` substitutions, parsed at load time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderFormat {
    pub parts: Vec<FormatPart>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatPart {
    /// Text, with `%%` already turned into `%` and `%HOSTNAME%` resolved.
    Literal(String),
    Var(FormatVar),
}

/// The substitution variables meshgate implements (Envoy's names).  A value
/// that is unknown for a request (an upstream address before one is
/// picked, a missing header) formats as nothing, as in Envoy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatVar {
    /// `%DOWNSTREAM_REMOTE_ADDRESS%`: the trusted client address
    /// (`use_remote_address` / `xff_num_trusted_hops`), `ip:port`.
    DownstreamRemoteAddress,
    DownstreamRemoteAddressWithoutPort,
    DownstreamRemotePort,
    /// `%DOWNSTREAM_DIRECT_REMOTE_ADDRESS%`: always the TCP peer.
    DownstreamDirectRemoteAddress,
    DownstreamDirectRemoteAddressWithoutPort,
    DownstreamDirectRemotePort,
    DownstreamLocalAddress,
    DownstreamLocalAddressWithoutPort,
    DownstreamLocalPort,
    /// `%UPSTREAM_REMOTE_ADDRESS%`: response headers only (empty on requests).
    UpstreamRemoteAddress,
    UpstreamRemoteAddressWithoutPort,
    UpstreamRemotePort,
    /// `%PROTOCOL%`: `HTTP/1.1` or `HTTP/1.0`.
    Protocol,
    /// `%REQ(a?b):N%`: the first of the headers present (lower-cased; may
    /// be `:path`, `:authority`, `:method`), cut to `max_len` bytes.
    RequestHeader {
        names: Vec<String>,
        max_len: Option<usize>,
    },
    /// `%RESP(a?b):N%`: response headers only.
    ResponseHeader {
        names: Vec<String>,
        max_len: Option<usize>,
    },
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
    /// Idle pooled connections kept per endpoint per shard: the cluster's
    /// DEFAULT-priority circuit breaker `max_connections` (default 1024), as
    /// in Envoy, where only that breaker and the idle timeout bound the pool.
    pub max_idle_per_endpoint: usize,
    /// `per_connection_buffer_limit_bytes` (default 1 MiB).
    pub per_connection_buffer_limit_bytes: u32,
    /// Which HTTP version the cluster's upstream connections speak
    /// (`HttpProtocolOptions.explicit_http_config` /
    /// `use_downstream_protocol_config`, or the legacy
    /// `Cluster.http2_protocol_options`; default HTTP/1.1).
    pub upstream_protocol: UpstreamProtocol,
    /// The `http2_protocol_options` HTTP/2 connections of this cluster use
    /// (`UpstreamProtocol::Http2` / `UseDownstream`; see docs/http2.md).
    pub upstream_http2: Http2Options,
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
    /// `circuit_breakers` (Envoy's defaults when unset).
    pub circuit_breakers: CircuitBreakers,
    /// `outlier_detection` (`None`: no outlier detection, as in Envoy).
    pub outlier_detection: Option<OutlierDetection>,
    /// `health_checks` (at most one; HTTP, TCP or gRPC).
    pub health_checks: Vec<HealthCheck>,
    /// `transport_socket` `envoy.transport_sockets.tls` (`UpstreamTlsContext`):
    /// TLS to every endpoint.  `None`: plaintext.
    pub tls: Option<Arc<UpstreamTls>>,
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
        // RE2's dialect (ASCII `\d`, RE2's rejections: see `re2`), then
        // FullMatch semantics; the group keeps `a|b` from binding to the anchors.
        let translated = crate::re2::to_rust(pattern)?;
        let regex = regex::bytes::Regex::new(&format!("^(?:{translated})$")).map_err(|e| e.to_string())?;
        Ok(SafeRegex { pattern: pattern.to_string(), regex })
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

// ---------------------------------------------------------------------- RBAC
//
// Envoy's `config.rbac.v3` policies and the two filters carrying them
// (`envoy.filters.http.rbac`, `envoy.filters.network.rbac`).  The data
// plane compiles these into `dataplane::rbac` engines once per snapshot.

/// `envoy.config.rbac.v3.RBAC`: an action and named policies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RbacRules {
    pub action: RbacAction,
    /// Sorted by name: Envoy evaluates policies in lexicographic order and
    /// reports the first that matches.
    pub policies: Vec<RbacPolicy>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RbacAction {
    /// Allowed iff some policy matches.
    Allow,
    /// Allowed iff no policy matches.
    Deny,
    /// Always allowed; a match only marks the request for logging.
    Log,
}

/// `envoy.config.rbac.v3.Policy`: matches when any permission and any
/// principal match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RbacPolicy {
    pub name: String,
    pub permissions: Vec<RbacPermission>,
    pub principals: Vec<RbacPrincipal>,
}

/// `envoy.config.rbac.v3.Permission` (the supported subset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RbacPermission {
    Any,
    And(Vec<RbacPermission>),
    Or(Vec<RbacPermission>),
    Not(Box<RbacPermission>),
    Header(HeaderMatch),
    /// `url_path`: matched against the path without query and fragment.
    UrlPath(StringMatch),
    DestinationIp(CidrRange),
    DestinationPort(u16),
    /// `destination_port_range`: `[start, end)`.
    DestinationPortRange {
        start: u32,
        end: u32,
    },
}

/// `envoy.config.rbac.v3.Principal` (the supported subset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RbacPrincipal {
    Any,
    And(Vec<RbacPrincipal>),
    Or(Vec<RbacPrincipal>),
    Not(Box<RbacPrincipal>),
    /// `source_ip` (deprecated): the connection's source, never XFF.
    SourceIp(CidrRange),
    /// `direct_remote_ip`: always the physical peer.
    DirectRemoteIp(CidrRange),
    /// `remote_ip`: the trusted client address (`use_remote_address` /
    /// `xff_num_trusted_hops`).
    RemoteIp(CidrRange),
    Header(HeaderMatch),
    UrlPath(StringMatch),
    /// `authenticated`: a TLS peer with a verified certificate; with a
    /// `principal_name`, one of its URI SANs, DNS SANs or its subject must match.
    Authenticated(Option<StringMatch>),
}

/// `envoy.config.core.v3.CidrRange`, with the host bits of `address`
/// cleared.  An address only ever matches a range of its own family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CidrRange {
    pub address: std::net::IpAddr,
    pub prefix_len: u8,
}

/// `envoy.extensions.filters.http.rbac.v3.RBAC`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RbacFilter {
    /// `http_filters[].name`: per-route configs are looked up by this name
    /// first, then by `envoy.filters.http.rbac`.
    pub name: String,
    /// `rules`: `None` → not enforced; present with no policies → ALLOW
    /// denies everything, DENY allows everything.
    pub rules: Option<RbacRules>,
    /// `shadow_rules`: evaluated and counted, never enforced.
    pub shadow_rules: Option<RbacRules>,
    /// `rules_stat_prefix`.
    pub rules_stat_prefix: String,
    /// `shadow_rules_stat_prefix`.
    pub shadow_rules_stat_prefix: String,
}

/// `envoy.extensions.filters.http.rbac.v3.RBACPerRoute`: replaces the
/// filter's rules *and* shadow rules on a route; with no `rbac` at all
/// (both `None`) RBAC is disabled there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RbacPerRoute {
    pub rules: Option<RbacRules>,
    pub shadow_rules: Option<RbacRules>,
}

/// One `typed_per_filter_config` value meshgate understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PerFilterConfig {
    Rbac(Arc<RbacPerRoute>),
    LocalRateLimit(Arc<LocalRateLimit>),
    Fault(Arc<Fault>),
}

/// `typed_per_filter_config`: filter name → override.
pub type PerFilterConfigs = BTreeMap<String, PerFilterConfig>;

/// `envoy.extensions.filters.network.rbac.v3.RBAC` (enforced once, on the
/// connection's first bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkRbac {
    /// `stat_prefix`: stats are `<stat_prefix>.rbac.allowed` etc.
    pub stat_prefix: String,
    pub rules: Option<RbacRules>,
    pub shadow_rules: Option<RbacRules>,
    /// `shadow_rules_stat_prefix`.
    pub shadow_rules_stat_prefix: String,
    /// `delay_deny`: wait this long before closing a denied connection.
    pub delay_deny: Option<Duration>,
}

/// A listener whose filter chain ends in `envoy.filters.network.tcp_proxy`:
/// every accepted connection becomes a byte tunnel to an upstream host.
#[derive(Debug, Clone)]
pub struct TcpListener {
    pub name: String,
    pub address: SocketAddr,
    /// `per_connection_buffer_limit_bytes` (Envoy default 1 MiB).
    pub per_connection_buffer_limit_bytes: u32,
    /// `envoy.filters.network.rbac` filters ahead of the tcp_proxy, in order.
    pub network_rbac: Vec<Arc<NetworkRbac>>,
    pub proxy: Arc<TcpProxy>,
    /// Downstream TLS (`transport_socket` `envoy.transport_sockets.tls`).
    pub tls: Option<Arc<DownstreamTls>>,
}

/// `envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy` (supported subset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpProxy {
    /// `stat_prefix`: stats are `tcp.<stat_prefix>.*`.
    pub stat_prefix: String,
    pub target: TcpProxyTarget,
    /// `idle_timeout` (default 1 h; `0s` disables): no bytes in either
    /// direction for this long closes both connections.
    pub idle_timeout: Option<Duration>,
    /// `max_connect_attempts` (default 1, at least 1).
    pub max_connect_attempts: u32,
}

/// `TcpProxy.cluster_specifier`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TcpProxyTarget {
    /// `cluster`.
    Cluster(String),
    /// `weighted_clusters.clusters`: (name, weight ≥ 1), picked per connection.
    Weighted(Vec<(String, u32)>),
}

/// A listener's TLS: one server context per filter chain, picked by the
/// client's SNI (`filter_chain_match.server_names`).  Every filter chain of a
/// TLS listener has a TLS transport socket and the same network filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownstreamTls {
    pub chains: Vec<TlsFilterChain>,
    /// `listener_filters` has `envoy.filters.listener.tls_inspector`: the
    /// first bytes tell TLS from plaintext (`transport_protocol`), and
    /// chains may be plaintext (`context: None`).  Without it every
    /// connection is TLS and every chain has a context.
    pub inspector: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFilterChain {
    /// `filter_chain_match.server_names`, lower-cased; `*.example.com`
    /// wildcards kept as written.  Empty: any (or no) SNI.
    pub server_names: Vec<String>,
    /// `filter_chain_match.transport_protocol`: `tls`, `raw_buffer`, or
    /// `None` (any).
    pub transport_protocol: Option<String>,
    /// `filter_chain_match.application_protocols` (ALPN offered by the
    /// client); empty: any.
    pub application_protocols: Vec<String>,
    /// `None`: a plaintext chain (no `transport_socket`; needs the inspector).
    pub context: Option<Arc<TlsServerContext>>,
}

/// `envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsServerContext {
    /// `common_tls_context.tls_certificates` (at least one).
    pub certificates: Vec<TlsCertificate>,
    /// `common_tls_context.alpn_protocols`.
    pub alpn_protocols: Vec<String>,
    /// `tls_params.tls_minimum_protocol_version` (default TLS 1.2).
    pub min_version: TlsVersion,
    /// `tls_params.tls_maximum_protocol_version` (default TLS 1.3).
    pub max_version: TlsVersion,
    /// `tls_params.cipher_suites` (TLS 1.2 suites, BoringSSL names); empty:
    /// the defaults.
    pub cipher_suites: Vec<String>,
    /// `validation_context`: peer certificate checks (mTLS).
    pub validation: Option<TlsValidation>,
    /// `require_client_certificate` (default false).
    pub require_client_certificate: bool,
}

/// `envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext`: TLS
/// origination to a cluster's endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    /// `sni`: the server name sent in the ClientHello (none when empty).
    pub sni: Option<String>,
    /// `common_tls_context.tls_certificates[0]`: the client certificate
    /// presented when the upstream asks for one (mTLS).
    pub client_certificate: Option<TlsCertificate>,
    /// `common_tls_context.alpn_protocols`, offered in order.
    pub alpn_protocols: Vec<String>,
    /// `tls_params.tls_minimum_protocol_version` (default TLS 1.2).
    pub min_version: TlsVersion,
    /// `tls_params.tls_maximum_protocol_version` (default TLS 1.2 for
    /// clients, as in Envoy).
    pub max_version: TlsVersion,
    /// `tls_params.cipher_suites` (TLS 1.2 suites, BoringSSL names).
    pub cipher_suites: Vec<String>,
    /// `validation_context`: the server certificate's chain and SANs.
    /// `None`: the server certificate is not verified (Envoy's behaviour).
    pub validation: Option<TlsValidation>,
    /// `max_session_keys` (default 1; 0 disables session resumption).
    pub max_session_keys: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

/// `TlsCertificate`: a PEM chain and its PEM private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsCertificate {
    pub certificate_chain: TlsSource,
    pub private_key: TlsSource,
}

/// `config.core.v3.DataSource` holding PEM: a file (watched and reloaded
/// when it changes) or inline bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    File(String),
    Inline(Vec<u8>),
    /// One PEM field of an SDS secret kept in a file
    /// (`sds_config.path_config_source`): re-read, with the files it
    /// names, when the file or its `watched_directory` changes.
    SdsFile(SdsFileRef),
}

/// Where a file-based SDS secret's field lives (see `docs/tls.md`, SDS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdsFileRef {
    /// `path_config_source.path` (or the legacy `sds_config.path`): a
    /// DiscoveryResponse-shaped YAML/JSON file of `Secret` resources.
    pub path: String,
    /// `path_config_source.watched_directory.path`: a move into it means
    /// the file changed (atomic symlink swaps, as Kubernetes does).
    pub watched_directory: Option<String>,
    /// `SdsSecretConfig.name`: the `Secret` to read from the file.
    pub secret: String,
    pub field: SecretField,
}

/// The PEM field of a `Secret` a [`TlsSource::SdsFile`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretField {
    /// `tls_certificate.certificate_chain`.
    CertificateChain,
    /// `tls_certificate.private_key`.
    PrivateKey,
    /// `validation_context.trusted_ca`.
    TrustedCa,
}

/// `CertificateValidationContext` (supported subset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsValidation {
    /// `trusted_ca`: PEM CA certificates the peer's chain must lead to.
    pub trusted_ca: TlsSource,
    /// `match_typed_subject_alt_names` / `match_subject_alt_names`: the peer
    /// certificate must have a SAN matching one of these (empty: any).
    pub subject_alt_names: Vec<SanMatch>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SanMatch {
    /// `None`: the deprecated untyped form, which matches DNS, URI, email
    /// and IP SANs alike.
    pub san_type: Option<SanType>,
    pub matcher: StringMatch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SanType {
    Email,
    Dns,
    Uri,
    IpAddress,
}
