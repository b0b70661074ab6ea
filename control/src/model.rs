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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscoveryType {
    Static,
    StrictDns,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbPolicy {
    RoundRobin,
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
