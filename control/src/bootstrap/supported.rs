//! Stage 3: the subset of Envoy's API meshgate implements, as an allowlist.
//!
//! An allowlist rather than a denylist because Envoy grows fields every
//! release: a field meshgate has never heard of must be refused, not
//! forwarded to a data plane that would ignore it.  Adding support for a
//! field means adding it here *and* translating it in `translate`; the
//! `allowlisted_fields_exist` test keeps this table honest against the
//! descriptors.

use prost_reflect::{DynamicMessage, FieldDescriptor, ReflectMessage, Value};

use super::{descriptor_pool, join, type_name, Errors};

pub(crate) const HCM: &str = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
pub(crate) const ROUTER: &str = "envoy.extensions.filters.http.router.v3.Router";
pub(crate) const UPSTREAM_HTTP_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
pub(crate) const HTTP_RBAC: &str = "envoy.extensions.filters.http.rbac.v3.RBAC";
pub(crate) const RBAC_PER_ROUTE: &str = "envoy.extensions.filters.http.rbac.v3.RBACPerRoute";
pub(crate) const NETWORK_RBAC: &str = "envoy.extensions.filters.network.rbac.v3.RBAC";
pub(crate) const DOWNSTREAM_TLS: &str = "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";
pub(crate) const TLS_INSPECTOR: &str = "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector";
pub(crate) const UPSTREAM_TLS: &str = "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";
pub(crate) const TCP_PROXY: &str = "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
pub(crate) const AGGREGATE_CONFIG: &str = "envoy.extensions.clusters.aggregate.v3.ClusterConfig";
pub(crate) const HTTP_LOCAL_RATELIMIT: &str = "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit";
pub(crate) const HTTP_FAULT: &str = "envoy.extensions.filters.http.fault.v3.HTTPFault";
pub(crate) const NETWORK_LOCAL_RATELIMIT: &str = "envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit";
pub(crate) const PREVIOUS_HOSTS: &str = "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate";

/// Supported fields per message full name.  A message reachable through a
/// supported field but missing here supports no fields at all.
const FIELDS: &[(&str, &[&str])] = &[
    ("envoy.config.bootstrap.v3.Bootstrap", &["node", "static_resources", "admin", "dynamic_resources"]),
    ("envoy.config.core.v3.Node", &["id", "cluster", "metadata", "locality"]),
    // xDS (bootstrap/dynamic.rs, docs/xds.md).
    ("envoy.config.core.v3.Locality", &["region", "zone", "sub_zone"]),
    ("envoy.config.bootstrap.v3.Bootstrap.DynamicResources", &["ads_config", "lds_config", "cds_config"]),
    (
        "envoy.config.core.v3.ApiConfigSource",
        &["api_type", "transport_api_version", "grpc_services", "cluster_names", "refresh_delay", "request_timeout"],
    ),
    ("envoy.config.core.v3.GrpcService", &["envoy_grpc"]),
    ("envoy.config.core.v3.GrpcService.EnvoyGrpc", &["cluster_name", "retry_policy"]),
    ("envoy.config.core.v3.BackoffStrategy", &["base_interval", "max_interval"]),
    (
        "envoy.config.core.v3.ConfigSource",
        &["ads", "api_config_source", "initial_fetch_timeout", "resource_api_version"],
    ),
    ("envoy.config.core.v3.AggregatedConfigSource", &[]),
    ("envoy.extensions.filters.network.http_connection_manager.v3.Rds", &["config_source", "route_config_name"]),
    ("envoy.config.cluster.v3.Cluster.EdsClusterConfig", &["eds_config", "service_name"]),
    ("envoy.config.bootstrap.v3.Bootstrap.StaticResources", &["listeners", "clusters", "secrets"]),
    ("envoy.config.bootstrap.v3.Admin", &["address", "access_log_path"]),
    ("envoy.config.core.v3.Address", &["socket_address"]),
    ("envoy.config.core.v3.SocketAddress", &["protocol", "address", "port_value"]),
    (
        "envoy.config.listener.v3.Listener",
        &["name", "address", "filter_chains", "per_connection_buffer_limit_bytes", "listener_filters"],
    ),
    // tls_inspector (translate/tls.rs, dataplane tls/mod.rs).
    ("envoy.config.listener.v3.ListenerFilter", &["name", "typed_config"]),
    (TLS_INSPECTOR, &[]),
    ("envoy.config.listener.v3.FilterChain", &["filters", "filter_chain_match", "transport_socket"]),
    // Downstream TLS (translate/tls.rs).
    ("envoy.config.listener.v3.FilterChainMatch", &["server_names", "transport_protocol", "application_protocols"]),
    ("envoy.config.core.v3.TransportSocket", &["name", "typed_config"]),
    (DOWNSTREAM_TLS, &["common_tls_context", "require_client_certificate"]),
    // Upstream TLS (translate/upstream_tls.rs, dataplane tls/client.rs).
    (UPSTREAM_TLS, &["common_tls_context", "sni", "allow_renegotiation", "max_session_keys"]),
    (
        "envoy.extensions.transport_sockets.tls.v3.CommonTlsContext",
        &[
            "tls_params",
            "tls_certificates",
            "alpn_protocols",
            "validation_context",
            "tls_certificate_sds_secret_configs",
            "validation_context_sds_secret_config",
            "combined_validation_context",
        ],
    ),
    // SDS (translate/sds.rs, docs/tls.md).
    ("envoy.extensions.transport_sockets.tls.v3.Secret", &["name", "tls_certificate", "validation_context"]),
    ("envoy.extensions.transport_sockets.tls.v3.SdsSecretConfig", &["name", "sds_config"]),
    (
        "envoy.extensions.transport_sockets.tls.v3.CommonTlsContext.CombinedCertificateValidationContext",
        &["default_validation_context", "validation_context_sds_secret_config"],
    ),
    ("envoy.config.core.v3.PathConfigSource", &["path", "watched_directory"]),
    ("envoy.config.core.v3.WatchedDirectory", &["path"]),
    (
        "envoy.extensions.transport_sockets.tls.v3.TlsParameters",
        &["tls_minimum_protocol_version", "tls_maximum_protocol_version", "cipher_suites"],
    ),
    ("envoy.extensions.transport_sockets.tls.v3.TlsCertificate", &["certificate_chain", "private_key"]),
    (
        "envoy.extensions.transport_sockets.tls.v3.CertificateValidationContext",
        &["trusted_ca", "match_typed_subject_alt_names", "match_subject_alt_names"],
    ),
    ("envoy.extensions.transport_sockets.tls.v3.SubjectAltNameMatcher", &["san_type", "matcher"]),
    ("envoy.config.listener.v3.Filter", &["name", "typed_config"]),
    (
        HCM,
        &[
            "stat_prefix",
            "codec_type",
            "route_config",
            "rds",
            "http_filters",
            "max_request_headers_kb",
            "common_http_protocol_options",
            "request_headers_timeout",
            "stream_idle_timeout",
            "request_timeout",
            "drain_timeout",
            "use_remote_address",
            "xff_num_trusted_hops",
            "server_name",
            "server_header_transformation",
            "generate_request_id",
            "preserve_external_request_id",
            "http_protocol_options",
            // HTTP/1.1 upgrades (translate/upgrade.rs, dataplane proxy/upgrade.rs).
            "upgrade_configs",
            // x-forwarded-client-cert (translate/tls.rs, dataplane tls/xfcc.rs).
            "forward_client_cert_details",
            "set_current_client_cert_details",
            // HTTP/2 (docs/http2.md).
            "http2_protocol_options",
        ],
    ),
    (
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.SetCurrentClientCertDetails",
        &["subject", "cert", "chain", "dns", "uri"],
    ),
    (
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.UpgradeConfig",
        &["upgrade_type", "enabled"],
    ),
    ("envoy.config.route.v3.RouteAction.UpgradeConfig", &["upgrade_type", "enabled"]),
    ("envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter", &["name", "typed_config"]),
    // TCP proxy (translate/tcp_proxy.rs).
    (TCP_PROXY, &["stat_prefix", "cluster", "weighted_clusters", "idle_timeout", "max_connect_attempts"]),
    ("envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.WeightedCluster", &["clusters"]),
    ("envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.WeightedCluster.ClusterWeight", &["name", "weight"]),
    (
        "envoy.config.route.v3.RouteConfiguration",
        &[
            "name",
            "virtual_hosts",
            "typed_per_filter_config",
            // Routing (translate/routing.rs).
            "request_headers_to_add",
            "request_headers_to_remove",
            "response_headers_to_add",
            "response_headers_to_remove",
            "most_specific_header_mutations_wins",
            "max_direct_response_body_size_bytes",
        ],
    ),
    (
        "envoy.config.route.v3.VirtualHost",
        &[
            "name",
            "domains",
            "routes",
            "typed_per_filter_config",
            "request_headers_to_add",
            "request_headers_to_remove",
            "response_headers_to_add",
            "response_headers_to_remove",
            // Retries (translate/retry.rs).
            "retry_policy",
            "per_request_buffer_limit_bytes",
            "include_request_attempt_count",
            "include_attempt_count_in_response",
        ],
    ),
    (
        "envoy.config.route.v3.Route",
        &[
            "name",
            "match",
            "route",
            "redirect",
            "direct_response",
            "typed_per_filter_config",
            "request_headers_to_add",
            "request_headers_to_remove",
            "response_headers_to_add",
            "response_headers_to_remove",
            "per_request_buffer_limit_bytes",
        ],
    ),
    (
        "envoy.config.route.v3.RouteMatch",
        &["prefix", "path", "safe_regex", "path_separated_prefix", "case_sensitive", "headers", "query_parameters"],
    ),
    (
        "envoy.config.route.v3.RouteAction",
        &[
            "cluster",
            "cluster_header",
            "weighted_clusters",
            "cluster_not_found_response_code",
            "timeout",
            "idle_timeout",
            "prefix_rewrite",
            "regex_rewrite",
            "host_rewrite_literal",
            "auto_host_rewrite",
            "host_rewrite_header",
            "append_x_forwarded_host",
            "hash_policy",
            "request_mirror_policies",
            "rate_limits",
            "upgrade_configs",
            "retry_policy",
            // gRPC timeouts (docs/http2.md).
            "max_stream_duration",
        ],
    ),
    ("envoy.config.route.v3.RouteAction.MaxStreamDuration", &["grpc_timeout_header_max", "grpc_timeout_header_offset"]),
    // Retries (translate/retry.rs).
    (
        "envoy.config.route.v3.RetryPolicy",
        &[
            "retry_on",
            "num_retries",
            "per_try_timeout",
            "retry_back_off",
            "retry_host_predicate",
            "host_selection_retry_max_attempts",
            "retriable_status_codes",
            "retriable_headers",
        ],
    ),
    ("envoy.config.route.v3.RetryPolicy.RetryBackOff", &["base_interval", "max_interval"]),
    ("envoy.config.route.v3.RetryPolicy.RetryHostPredicate", &["name", "typed_config"]),
    (PREVIOUS_HOSTS, &[]),
    // No runtime layer: `runtime_key_prefix` keys never resolve, so the
    // configured weights apply, as in an Envoy whose runtime lacks them.
    ("envoy.config.route.v3.WeightedCluster", &["clusters", "total_weight", "runtime_key_prefix", "header_name"]),
    (
        "envoy.config.route.v3.WeightedCluster.ClusterWeight",
        &[
            "name",
            "cluster_header",
            "weight",
            "request_headers_to_add",
            "request_headers_to_remove",
            "response_headers_to_add",
            "response_headers_to_remove",
            "host_rewrite_literal",
        ],
    ),
    (
        "envoy.config.route.v3.RedirectAction",
        &[
            "https_redirect",
            "scheme_redirect",
            "host_redirect",
            "port_redirect",
            "path_redirect",
            "prefix_rewrite",
            "regex_rewrite",
            "response_code",
            "strip_query",
        ],
    ),
    ("envoy.type.matcher.v3.RegexMatchAndSubstitute", &["pattern", "substitution"]),
    ("envoy.config.route.v3.QueryParameterMatcher", &["name", "string_match", "present_match"]),
    ("envoy.config.core.v3.HeaderValueOption", &["header", "append", "append_action", "keep_empty_value"]),
    ("envoy.config.core.v3.HeaderValue", &["key", "value"]),
    ("envoy.config.route.v3.DirectResponseAction", &["status", "body"]),
    ("envoy.config.core.v3.DataSource", &["filename", "inline_bytes", "inline_string"]),
    (
        "envoy.config.cluster.v3.Cluster",
        &[
            "name",
            "type",
            "connect_timeout",
            "lb_policy",
            "dns_refresh_rate",
            "load_assignment",
            "per_connection_buffer_limit_bytes",
            "typed_extension_protocol_options",
            "max_requests_per_connection",
            "cluster_type",
            "ring_hash_lb_config",
            "maglev_lb_config",
            "least_request_lb_config",
            "round_robin_lb_config",
            "common_lb_config",
            "eds_cluster_config",
            // Upstream HTTP/2 (translate/upstream_http.rs; deprecated form).
            "http2_protocol_options",
            "circuit_breakers",
            "outlier_detection",
            "health_checks",
            // Upstream TLS (translate/upstream_tls.rs).
            "transport_socket",
        ],
    ),
    // Active health checks (translate/cluster_governance.rs).
    (
        "envoy.config.core.v3.HealthCheck",
        &[
            "timeout",
            "interval",
            "interval_jitter",
            "unhealthy_threshold",
            "healthy_threshold",
            "http_health_check",
            "tcp_health_check",
            "grpc_health_check",
            "no_traffic_interval",
            "unhealthy_interval",
            "unhealthy_edge_interval",
            "healthy_edge_interval",
        ],
    ),
    ("envoy.config.core.v3.HealthCheck.HttpHealthCheck", &["host", "path", "expected_statuses"]),
    ("envoy.config.core.v3.HealthCheck.TcpHealthCheck", &["send", "receive"]),
    ("envoy.config.core.v3.HealthCheck.GrpcHealthCheck", &["service_name", "authority"]),
    ("envoy.config.core.v3.HealthCheck.Payload", &["text", "binary"]),
    // Outlier detection (translate/cluster_governance.rs).
    (
        "envoy.config.cluster.v3.OutlierDetection",
        &[
            "consecutive_5xx",
            "interval",
            "base_ejection_time",
            "max_ejection_percent",
            "enforcing_consecutive_5xx",
            "enforcing_success_rate",
            "success_rate_minimum_hosts",
            "success_rate_request_volume",
            "success_rate_stdev_factor",
            "consecutive_gateway_failure",
            "enforcing_consecutive_gateway_failure",
            "split_external_local_origin_errors",
            "consecutive_local_origin_failure",
            "enforcing_consecutive_local_origin_failure",
            "failure_percentage_threshold",
            "enforcing_failure_percentage",
            "failure_percentage_minimum_hosts",
            "failure_percentage_request_volume",
            "max_ejection_time",
            "always_eject_one_host",
        ],
    ),
    // Circuit breakers (translate/cluster_governance.rs).
    ("envoy.config.cluster.v3.CircuitBreakers", &["thresholds"]),
    (
        "envoy.config.cluster.v3.CircuitBreakers.Thresholds",
        &["priority", "max_connections", "max_pending_requests", "max_requests", "max_retries", "retry_budget"],
    ),
    ("envoy.config.cluster.v3.CircuitBreakers.Thresholds.RetryBudget", &["budget_percent", "min_retry_concurrency"]),
    ("envoy.type.v3.Percent", &["value"]),
    // Load balancing (translate/lb.rs).
    ("envoy.config.cluster.v3.Cluster.CustomClusterType", &["name", "typed_config"]),
    (AGGREGATE_CONFIG, &["clusters"]),
    ("envoy.config.cluster.v3.Cluster.RingHashLbConfig", &["minimum_ring_size", "maximum_ring_size", "hash_function"]),
    ("envoy.config.cluster.v3.Cluster.MaglevLbConfig", &["table_size"]),
    ("envoy.config.cluster.v3.Cluster.LeastRequestLbConfig", &["choice_count", "active_request_bias"]),
    ("envoy.config.cluster.v3.Cluster.RoundRobinLbConfig", &[]),
    ("envoy.config.cluster.v3.Cluster.CommonLbConfig", &["healthy_panic_threshold"]),
    ("envoy.config.endpoint.v3.ClusterLoadAssignment.Policy", &["overprovisioning_factor", "weighted_priority_health"]),
    (
        "envoy.config.route.v3.RouteAction.HashPolicy",
        &["header", "cookie", "connection_properties", "query_parameter", "terminal"],
    ),
    ("envoy.config.route.v3.RouteAction.HashPolicy.Header", &["header_name"]),
    ("envoy.config.route.v3.RouteAction.HashPolicy.Cookie", &["name", "ttl", "path", "attributes"]),
    ("envoy.config.route.v3.RouteAction.HashPolicy.CookieAttribute", &["name", "value"]),
    ("envoy.config.route.v3.RouteAction.HashPolicy.ConnectionProperties", &["source_ip"]),
    ("envoy.config.route.v3.RouteAction.HashPolicy.QueryParameter", &["name"]),
    ("envoy.config.endpoint.v3.ClusterLoadAssignment", &["cluster_name", "endpoints", "policy"]),
    ("envoy.config.endpoint.v3.LocalityLbEndpoints", &["priority", "lb_endpoints"]),
    ("envoy.config.endpoint.v3.LbEndpoint", &["endpoint", "load_balancing_weight"]),
    ("envoy.config.endpoint.v3.Endpoint", &["address"]),
    (
        UPSTREAM_HTTP_OPTIONS,
        &["common_http_protocol_options", "explicit_http_config", "use_downstream_protocol_config"],
    ),
    (
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions.UseDownstreamHttpConfig",
        &["http_protocol_options", "http2_protocol_options"],
    ),
    (
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions.ExplicitHttpConfig",
        &["http_protocol_options", "http2_protocol_options"],
    ),
    // Matchers shared by RBAC and routing.
    ("envoy.type.matcher.v3.StringMatcher", &["exact", "prefix", "suffix", "contains", "safe_regex", "ignore_case"]),
    ("envoy.type.matcher.v3.RegexMatcher", &["regex", "google_re2"]),
    ("envoy.type.matcher.v3.PathMatcher", &["path"]),
    (
        "envoy.config.route.v3.HeaderMatcher",
        &[
            "name",
            "exact_match",
            "safe_regex_match",
            "range_match",
            "present_match",
            "prefix_match",
            "suffix_match",
            "contains_match",
            "string_match",
            "invert_match",
            "treat_missing_header_as_empty",
        ],
    ),
    ("envoy.type.v3.Int64Range", &["start", "end"]),
    ("envoy.type.v3.Int32Range", &["start", "end"]),
    ("envoy.config.core.v3.CidrRange", &["address_prefix", "prefix_len"]),
    // RBAC.
    (HTTP_RBAC, &["rules", "shadow_rules", "rules_stat_prefix", "shadow_rules_stat_prefix"]),
    (RBAC_PER_ROUTE, &["rbac"]),
    (
        NETWORK_RBAC,
        &["stat_prefix", "rules", "shadow_rules", "shadow_rules_stat_prefix", "enforcement_type", "delay_deny"],
    ),
    ("envoy.config.rbac.v3.RBAC", &["action", "policies"]),
    ("envoy.config.rbac.v3.Policy", &["permissions", "principals"]),
    (
        "envoy.config.rbac.v3.Permission",
        &[
            "and_rules",
            "or_rules",
            "any",
            "header",
            "url_path",
            "destination_ip",
            "destination_port",
            "destination_port_range",
            "not_rule",
        ],
    ),
    ("envoy.config.rbac.v3.Permission.Set", &["rules"]),
    (
        "envoy.config.rbac.v3.Principal",
        &[
            "and_ids",
            "or_ids",
            "any",
            "source_ip",
            "direct_remote_ip",
            "remote_ip",
            "header",
            "url_path",
            "not_id",
            "authenticated",
        ],
    ),
    ("envoy.config.rbac.v3.Principal.Set", &["ids"]),
    // Governance filters (translate/filters.rs).
    (
        HTTP_LOCAL_RATELIMIT,
        &[
            "stat_prefix",
            "status",
            "token_bucket",
            "filter_enabled",
            "filter_enforced",
            "request_headers_to_add_when_not_enforced",
            "response_headers_to_add",
            "enable_x_ratelimit_headers",
            "local_rate_limit_per_downstream_connection",
            "descriptors",
            "stage",
            "always_consume_default_token_bucket",
        ],
    ),
    ("envoy.extensions.common.ratelimit.v3.LocalRateLimitDescriptor", &["entries", "token_bucket"]),
    ("envoy.extensions.common.ratelimit.v3.RateLimitDescriptor.Entry", &["key", "value"]),
    ("envoy.config.route.v3.RateLimit", &["stage", "actions"]),
    (
        "envoy.config.route.v3.RateLimit.Action",
        &["request_headers", "remote_address", "generic_key", "header_value_match"],
    ),
    ("envoy.config.route.v3.RateLimit.Action.RequestHeaders", &["header_name", "descriptor_key", "skip_if_absent"]),
    ("envoy.config.route.v3.RateLimit.Action.RemoteAddress", &[]),
    ("envoy.config.route.v3.RateLimit.Action.GenericKey", &["descriptor_value", "descriptor_key"]),
    (
        "envoy.config.route.v3.RateLimit.Action.HeaderValueMatch",
        &["descriptor_key", "descriptor_value", "expect_match", "headers"],
    ),
    (NETWORK_LOCAL_RATELIMIT, &["stat_prefix", "token_bucket", "runtime_enabled"]),
    ("envoy.type.v3.TokenBucket", &["max_tokens", "tokens_per_fill", "fill_interval"]),
    ("envoy.type.v3.HttpStatus", &["code"]),
    ("envoy.type.v3.FractionalPercent", &["numerator", "denominator"]),
    // No runtime layer: keys never resolve, so default_value applies.
    ("envoy.config.core.v3.RuntimeFractionalPercent", &["default_value", "runtime_key"]),
    ("envoy.config.core.v3.RuntimeFeatureFlag", &["default_value", "runtime_key"]),
    (
        HTTP_FAULT,
        &[
            "delay",
            "abort",
            "headers",
            "downstream_nodes",
            "max_active_faults",
            // Runtime key names: never resolve (no runtime layer).
            "delay_percent_runtime",
            "abort_percent_runtime",
            "delay_duration_runtime",
            "abort_http_status_runtime",
            "max_active_faults_runtime",
            "abort_grpc_status_runtime",
            // meshgate never emits per-downstream-cluster fault stats.
            "disable_downstream_cluster_stats",
        ],
    ),
    ("envoy.extensions.filters.common.fault.v3.FaultDelay", &["fixed_delay", "header_delay", "percentage"]),
    ("envoy.extensions.filters.common.fault.v3.FaultDelay.HeaderDelay", &[]),
    (
        "envoy.extensions.filters.http.fault.v3.FaultAbort",
        &["http_status", "grpc_status", "header_abort", "percentage", "response_body"],
    ),
    ("envoy.extensions.filters.http.fault.v3.FaultAbort.HeaderAbort", &[]),
    (
        "envoy.config.route.v3.RouteAction.RequestMirrorPolicy",
        &["cluster", "cluster_header", "runtime_fraction", "disable_shadow_host_suffix_append"],
    ),
    ("envoy.config.rbac.v3.Principal.Authenticated", &["principal_name"]),
];

/// The `Http2ProtocolOptions` fields meshgate implements (both directions).
const H2_LIMITS: &[&str] = &["max_concurrent_streams", "initial_stream_window_size", "initial_connection_window_size"];

/// Messages whose supported subset depends on where they appear, keyed by
/// the full name of the field holding them: the same core
/// `HttpProtocolOptions` means different things downstream and upstream.
const FIELDS_BY_CONTAINER: &[(&str, &[&str])] = &[
    // SDS: secrets come over ADS or from a file (translate/sds.rs).
    (
        "envoy.extensions.transport_sockets.tls.v3.SdsSecretConfig.sds_config",
        &["ads", "path", "path_config_source", "initial_fetch_timeout", "resource_api_version"],
    ),
    // The xDS stream's reconnect back-off is all Envoy reads of it.
    ("envoy.config.core.v3.GrpcService.EnvoyGrpc.retry_policy", &["retry_back_off"]),
    // Upstream HTTP/2 (translate/upstream_http.rs, docs/http2.md).
    ("envoy.config.cluster.v3.Cluster.http2_protocol_options", H2_LIMITS),
    ("envoy.extensions.upstreams.http.v3.HttpProtocolOptions.ExplicitHttpConfig.http2_protocol_options", H2_LIMITS),
    ("envoy.extensions.upstreams.http.v3.HttpProtocolOptions.UseDownstreamHttpConfig.http2_protocol_options", H2_LIMITS),
    (
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions.UseDownstreamHttpConfig.http_protocol_options",
        &["enable_trailers"],
    ),
    (
        "envoy.config.cluster.v3.Cluster.CommonLbConfig.healthy_panic_threshold",
        &["value"],
    ),
    // No runtime layer: the key never resolves, so default_value applies,
    // exactly as in an Envoy whose runtime does not set the key.
    (
        "envoy.config.cluster.v3.Cluster.LeastRequestLbConfig.active_request_bias",
        &["default_value", "runtime_key"],
    ),
    (
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.http2_protocol_options",
        H2_LIMITS,
    ),
    (
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.common_http_protocol_options",
        &["idle_timeout", "max_headers_count"],
    ),
    (
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.http_protocol_options",
        &["accept_http_10", "enable_trailers"],
    ),
    (
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions.common_http_protocol_options",
        &["idle_timeout", "max_requests_per_connection"],
    ),
    (
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions.ExplicitHttpConfig.http_protocol_options",
        &["enable_trailers"],
    ),
];

/// Extra words for the unsupported fields operators hit most often.
const HINTS: &[(&str, &str)] = &[
    (
        "envoy.config.route.v3.RouteMatch.runtime_fraction",
        "meshgate has no runtime layer; split traffic with route.weighted_clusters instead",
    ),
    ("envoy.config.core.v3.HeaderValue.raw_value", "use value (raw_value is not supported)"),
    ("envoy.config.listener.v3.FilterChain.transport_socket", "TLS not supported yet"),
    ("envoy.config.rbac.v3.Permission.requested_server_name", "requires TLS (SNI), not supported yet"),
    ("envoy.config.rbac.v3.Policy.condition", "CEL conditions are not supported"),
    ("envoy.extensions.filters.http.rbac.v3.RBAC.matcher", "the RBAC matcher API is not supported yet, use rules"),
    (
        "envoy.extensions.filters.http.rbac.v3.RBAC.shadow_matcher",
        "the RBAC matcher API is not supported yet, use shadow_rules",
    ),
    ("envoy.extensions.filters.http.rbac.v3.RBAC.track_per_rule_stats", "per-policy RBAC stats are not supported yet"),
    ("envoy.extensions.filters.network.rbac.v3.RBAC.matcher", "the RBAC matcher API is not supported yet, use rules"),
    (
        "envoy.config.route.v3.RouteAction.RequestMirrorPolicy.trace_sampled",
        "meshgate has no tracing, so trace sampling of shadow requests does not apply; remove it",
    ),
    (
        "envoy.extensions.filters.http.fault.v3.HTTPFault.upstream_cluster",
        "not supported yet; scope faults per route with typed_per_filter_config",
    ),
    (
        "envoy.extensions.filters.http.fault.v3.HTTPFault.response_rate_limit",
        "response rate limiting faults are not supported yet",
    ),
    (
        "envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit.share_key",
        "shared buckets across filter chains are not supported yet",
    ),
    (
        "envoy.extensions.filters.network.rbac.v3.RBAC.shadow_matcher",
        "the RBAC matcher API is not supported yet, use shadow_rules",
    ),
];

/// `Any` fields: which packed types each accepts, and what to call them.
const ANY_TYPES: &[(&str, &str, &[&str])] = &[
    (
        "envoy.config.listener.v3.Filter.typed_config",
        "filter",
        &[HCM, NETWORK_RBAC, NETWORK_LOCAL_RATELIMIT, TCP_PROXY],
    ),
    ("envoy.config.listener.v3.ListenerFilter.typed_config", "listener filter", &[TLS_INSPECTOR]),
    ("envoy.config.core.v3.TransportSocket.typed_config", "transport socket", &[DOWNSTREAM_TLS, UPSTREAM_TLS]),
    (
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter.typed_config",
        "HTTP filter",
        &[ROUTER, HTTP_RBAC, HTTP_LOCAL_RATELIMIT, HTTP_FAULT],
    ),
    (
        "envoy.config.route.v3.RouteConfiguration.typed_per_filter_config",
        "per-filter config",
        &[RBAC_PER_ROUTE, HTTP_LOCAL_RATELIMIT, HTTP_FAULT],
    ),
    (
        "envoy.config.route.v3.VirtualHost.typed_per_filter_config",
        "per-filter config",
        &[RBAC_PER_ROUTE, HTTP_LOCAL_RATELIMIT, HTTP_FAULT],
    ),
    (
        "envoy.config.route.v3.Route.typed_per_filter_config",
        "per-filter config",
        &[RBAC_PER_ROUTE, HTTP_LOCAL_RATELIMIT, HTTP_FAULT],
    ),
    ("envoy.config.cluster.v3.Cluster.typed_extension_protocol_options", "protocol options", &[UPSTREAM_HTTP_OPTIONS]),
    ("envoy.config.cluster.v3.Cluster.CustomClusterType.typed_config", "cluster type", &[AGGREGATE_CONFIG]),
    ("envoy.config.route.v3.RetryPolicy.RetryHostPredicate.typed_config", "retry host predicate", &[PREVIOUS_HOSTS]),
];

/// Map fields: which keys they accept.
const MAP_KEYS: &[(&str, &[&str])] =
    &[("envoy.config.cluster.v3.Cluster.typed_extension_protocol_options", &[UPSTREAM_HTTP_OPTIONS])];

fn lookup<'t, T>(table: &'t [(&str, T)], key: &str) -> Option<&'t T> {
    table.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
}

fn supported_fields(message: &str, container: Option<&FieldDescriptor>) -> &'static [&'static str] {
    container
        .and_then(|c| lookup(FIELDS_BY_CONTAINER, c.full_name()))
        .or_else(|| lookup(FIELDS, message))
        .copied()
        .unwrap_or(&[])
}

fn list(items: &[&str]) -> String {
    if items.is_empty() {
        "no fields".to_string()
    } else {
        items.join(", ")
    }
}

/// Message for an `@type` the descriptor pool does not even know (stage 2).
pub(crate) fn unknown_any_type(field: Option<&FieldDescriptor>, type_name: &str) -> String {
    match field.and_then(|f| ANY_TYPES.iter().find(|(k, _, _)| *k == f.full_name())) {
        Some((_, noun, types)) => {
            format!("unsupported {noun} type {type_name} (meshgate supports: {})", list(types))
        }
        None => format!("unsupported type {type_name} (unknown to meshgate)"),
    }
}

pub(crate) fn check_bootstrap(message: &DynamicMessage, errors: &mut Errors) {
    check_message(message, "", None, errors);
}

pub(crate) fn check_message(
    message: &DynamicMessage,
    path: &str,
    container: Option<&FieldDescriptor>,
    errors: &mut Errors,
) {
    let descriptor = message.descriptor();
    let supported = supported_fields(descriptor.full_name(), container);
    for (field, value) in message.fields() {
        let field_path = join(path, field.name());
        if !supported.contains(&field.name()) {
            let hint = lookup(HINTS, field.full_name()).map(|h| format!(": {h}")).unwrap_or_default();
            errors.add(field_path, format!("unsupported field{hint} (meshgate supports: {})", list(supported)));
            continue;
        }
        match value {
            Value::Message(m) => check_value(&field, m, &field_path, errors),
            Value::List(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let Value::Message(m) = item {
                        check_value(&field, m, &format!("{field_path}[{i}]"), errors);
                    }
                }
            }
            Value::Map(map) => {
                let allowed_keys = lookup(MAP_KEYS, field.full_name());
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_by_key(|(k, _)| format!("{k:?}"));
                for (key, item) in entries {
                    let raw = key.as_str();
                    let item_path = match raw {
                        Some(s) => format!("{field_path}[{s:?}]"),
                        None => format!("{field_path}[{key:?}]"),
                    };
                    if let Some(keys) = allowed_keys {
                        if !raw.is_some_and(|k| keys.contains(&k)) {
                            errors.add(item_path, format!("unsupported key (meshgate supports: {})", list(keys)));
                            continue;
                        }
                    }
                    if let Value::Message(m) = item {
                        check_value(&field, m, &item_path, errors);
                    }
                }
            }
            _ => {}
        }
    }
}

fn check_value(field: &FieldDescriptor, message: &DynamicMessage, path: &str, errors: &mut Errors) {
    let name = message.descriptor().full_name().to_string();
    if name == "google.protobuf.Any" {
        check_any(field, message, path, errors);
    } else if name.starts_with("google.protobuf.") {
        // Durations and wrappers are leaves; stage 4 checks their values.
    } else {
        check_message(message, path, Some(field), errors);
    }
}

fn check_any(field: &FieldDescriptor, any: &DynamicMessage, path: &str, errors: &mut Errors) {
    let type_url = any.get_field_by_name("type_url").and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
    let bytes = any.get_field_by_name("value").and_then(|v| v.as_bytes().cloned()).unwrap_or_default();
    let ty = type_name(&type_url);
    let (noun, types) = match ANY_TYPES.iter().find(|(k, _, _)| *k == field.full_name()) {
        Some((_, noun, types)) => (*noun, *types),
        None => ("", &[][..]),
    };
    if !types.contains(&ty) {
        let noun = if noun.is_empty() { String::new() } else { format!("{noun} ") };
        errors.add(path, format!("unsupported {noun}type {ty} (meshgate supports: {})", list(types)));
        return;
    }
    let Some(descriptor) = descriptor_pool().get_message_by_name(ty) else {
        errors.add(path, format!("unsupported type {ty} (unknown to meshgate)"));
        return;
    };
    match DynamicMessage::decode(descriptor, bytes.as_ref()) {
        Ok(inner) => check_message(&inner, path, None, errors),
        Err(e) => errors.add(path, format!("cannot decode {ty}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A typo in the table would make a supported field unreachable and
    /// every config using it fail: check each name against the descriptors.
    #[test]
    fn allowlisted_fields_exist() {
        let pool = descriptor_pool();
        for (message, fields) in FIELDS {
            let d = pool.get_message_by_name(message).unwrap_or_else(|| panic!("{message}"));
            for f in *fields {
                assert!(d.get_field_by_name(f).is_some(), "{message}.{f}");
            }
        }
        let field_of = |full: &str| {
            let (message, field) = full.rsplit_once('.').unwrap();
            let d = pool.get_message_by_name(message).unwrap_or_else(|| panic!("{message}"));
            d.get_field_by_name(field).unwrap_or_else(|| panic!("{full}"))
        };
        for (container, fields) in FIELDS_BY_CONTAINER {
            let inner = field_of(container).kind().as_message().cloned().unwrap();
            for name in *fields {
                assert!(inner.get_field_by_name(name).is_some(), "{container}: {name}");
            }
        }
        for (field, _) in HINTS {
            field_of(field);
        }
        for (field, _, types) in ANY_TYPES {
            field_of(field);
            for t in *types {
                assert!(pool.get_message_by_name(t).is_some(), "{t}");
            }
        }
    }
}
