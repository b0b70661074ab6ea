//! The upstream traffic-governance part of the config model: route and
//! virtual-host retry policies, and (per cluster) circuit breakers.
//!
//! Plain validated data, defaults applied, as everything in `model`
//! (which re-exports these types): the data plane never needs to know an
//! Envoy default.  Semantics follow Envoy's `config.route.v3.RetryPolicy`
//! (router filter docs, "x-envoy-retry-on") and
//! `config.cluster.v3.CircuitBreakers`; the loader that fills these lives
//! in `bootstrap/translate/{retry,cluster_governance}.rs`.

use std::sync::Arc;
use std::time::Duration;

use crate::model::HeaderMatch;

/// `retry_on` conditions, as a bit set (Envoy's `RetryPolicy::RETRY_ON_*`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryOn(pub u32);

impl RetryOn {
    /// `5xx`: any 5xx response, or no response at all (reset, connect
    /// failure, per-try timeout).
    pub const FIVE_XX: u32 = 1 << 0;
    /// `gateway-error`: 502, 503, 504, or no response at all.
    pub const GATEWAY_ERROR: u32 = 1 << 1;
    /// `reset`: no response at all (disconnect, reset, per-try timeout).
    pub const RESET: u32 = 1 << 2;
    /// `connect-failure`: the connection could not be opened.
    pub const CONNECT_FAILURE: u32 = 1 << 3;
    /// `retriable-4xx`: 409.
    pub const RETRIABLE_4XX: u32 = 1 << 4;
    /// `refused-stream`: an HTTP/2 upstream refused the stream
    /// (REFUSED_STREAM; never raised by the HTTP/1.1 upstream codec).
    pub const REFUSED_STREAM: u32 = 1 << 5;
    /// `retriable-status-codes`: a status in `retriable_status_codes` (or
    /// the internal request's `x-envoy-retriable-status-codes`).
    pub const RETRIABLE_STATUS_CODES: u32 = 1 << 6;
    /// `retriable-headers`: a response header matches `retriable_headers`.
    pub const RETRIABLE_HEADERS: u32 = 1 << 7;

    const NAMES: &'static [(&'static str, u32)] = &[
        ("5xx", Self::FIVE_XX),
        ("gateway-error", Self::GATEWAY_ERROR),
        ("reset", Self::RESET),
        ("connect-failure", Self::CONNECT_FAILURE),
        ("retriable-4xx", Self::RETRIABLE_4XX),
        ("refused-stream", Self::REFUSED_STREAM),
        ("retriable-status-codes", Self::RETRIABLE_STATUS_CODES),
        ("retriable-headers", Self::RETRIABLE_HEADERS),
    ];

    /// Parses Envoy's comma-separated list.  `Err` names the first token
    /// meshgate does not implement (gRPC conditions, `envoy-ratelimited`,
    /// `reset-before-request`, `http3-post-connect-failure`, typos).
    pub fn parse(text: &str) -> Result<RetryOn, String> {
        let mut bits = 0;
        for token in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            match Self::NAMES.iter().find(|(n, _)| *n == token) {
                Some((_, b)) => bits |= b,
                None => return Err(token.to_string()),
            }
        }
        Ok(RetryOn(bits))
    }

    /// Parses leniently (the `x-envoy-retry-on` header): unknown tokens are
    /// skipped, as Envoy's router does for the header.
    pub fn parse_lenient(text: &[u8]) -> RetryOn {
        let mut bits = 0;
        for token in text.split(|b| *b == b',') {
            let token = token.trim_ascii();
            if let Some((_, b)) = Self::NAMES.iter().find(|(n, _)| n.as_bytes() == token) {
                bits |= b;
            }
        }
        RetryOn(bits)
    }

    pub fn has(self, bit: u32) -> bool {
        self.0 & bit != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// `config.route.v3.RetryPolicy`, defaults applied.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub retry_on: RetryOn,
    /// `num_retries` (default 1).
    pub num_retries: u32,
    /// `per_try_timeout` (unset or 0: none; the route timeout still bounds
    /// all attempts together).
    pub per_try_timeout: Option<Duration>,
    /// `retry_back_off.base_interval` (default 25 ms).
    pub back_off_base: Duration,
    /// `retry_back_off.max_interval` (default 10 × base).
    pub back_off_max: Duration,
    /// `retry_host_predicate` contains `envoy.retry_host_predicates.previous_hosts`.
    pub previous_hosts: bool,
    /// `host_selection_retry_max_attempts` (default 1): extra picks made
    /// when the predicate rejects a host, before the last pick is used anyway.
    pub host_selection_retry_max_attempts: u32,
    /// `retriable_status_codes`.
    pub retriable_status_codes: Vec<u16>,
    /// `retriable_headers`: any match makes the response retriable.
    pub retriable_headers: Vec<HeaderMatch>,
}

/// Envoy's default `retry_back_off.base_interval`.
pub const DEFAULT_BACK_OFF_BASE: Duration = Duration::from_millis(25);

impl RetryPolicy {
    /// An empty policy with Envoy's defaults (what header-only retries run on).
    pub fn header_only() -> RetryPolicy {
        RetryPolicy {
            retry_on: RetryOn::default(),
            num_retries: 1,
            per_try_timeout: None,
            back_off_base: DEFAULT_BACK_OFF_BASE,
            back_off_max: DEFAULT_BACK_OFF_BASE * 10,
            previous_hosts: false,
            host_selection_retry_max_attempts: 1,
            retriable_status_codes: Vec::new(),
            retriable_headers: Vec::new(),
        }
    }
}

/// The route's part: its `route.retry_policy` and the route's
/// `per_request_buffer_limit_bytes`.
#[derive(Debug, Clone, Default)]
pub struct RouteRetry {
    pub policy: Option<Arc<RetryPolicy>>,
    pub per_request_buffer_limit_bytes: Option<u32>,
}

/// The virtual host's part.  A route's own policy replaces the virtual
/// host's entirely (Envoy does not merge them field by field).
#[derive(Debug, Clone, Default)]
pub struct VhostRetry {
    pub policy: Option<Arc<RetryPolicy>>,
    pub per_request_buffer_limit_bytes: Option<u32>,
    /// `include_request_attempt_count`: `x-envoy-attempt-count` upstream.
    pub include_request_attempt_count: bool,
    /// `include_attempt_count_in_response`: `x-envoy-attempt-count` downstream.
    pub include_attempt_count_in_response: bool,
}

/// `config.cluster.v3.CircuitBreakers.Thresholds` for one routing
/// priority, defaults applied (Envoy's: 1024 connections, 1024 pending
/// requests, 1024 requests, 3 retries).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub max_connections: u32,
    pub max_pending_requests: u32,
    pub max_requests: u32,
    pub max_retries: u32,
    /// `retry_budget`: when set, replaces `max_retries`.
    pub retry_budget: Option<RetryBudget>,
}

impl Default for Thresholds {
    fn default() -> Thresholds {
        Thresholds {
            max_connections: 1024,
            max_pending_requests: 1024,
            max_requests: 1024,
            max_retries: 3,
            retry_budget: None,
        }
    }
}

/// `Thresholds.RetryBudget`: concurrent retries allowed as a share of the
/// active and pending requests, but never fewer than `min_retry_concurrency`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudget {
    /// `budget_percent` (default 20%).
    pub budget_percent: f64,
    /// `min_retry_concurrency` (default 3).
    pub min_retry_concurrency: u32,
}

/// A cluster's circuit breakers: index 0 is `DEFAULT`, 1 is `HIGH`
/// (`core.v3.RoutingPriority`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CircuitBreakers {
    pub thresholds: [Thresholds; 2],
}

/// `config.cluster.v3.OutlierDetection`, Envoy's defaults applied.
/// Percentages are whole percent; `success_rate_stdev_factor` is ×1000.
#[derive(Debug, Clone, PartialEq)]
pub struct OutlierDetection {
    pub consecutive_5xx: u32,
    pub consecutive_gateway_failure: u32,
    pub consecutive_local_origin_failure: u32,
    pub split_external_local_origin_errors: bool,
    pub interval: Duration,
    pub base_ejection_time: Duration,
    pub max_ejection_time: Duration,
    pub max_ejection_percent: u32,
    pub enforcing_consecutive_5xx: u32,
    pub enforcing_consecutive_gateway_failure: u32,
    pub enforcing_consecutive_local_origin_failure: u32,
    pub enforcing_success_rate: u32,
    pub enforcing_local_origin_success_rate: u32,
    pub success_rate_minimum_hosts: u32,
    pub success_rate_request_volume: u32,
    pub success_rate_stdev_factor: u32,
    pub failure_percentage_threshold: u32,
    pub enforcing_failure_percentage: u32,
    pub enforcing_failure_percentage_local_origin: u32,
    pub failure_percentage_minimum_hosts: u32,
    pub failure_percentage_request_volume: u32,
    /// `always_eject_one_host` (default false).
    pub always_eject_one_host: bool,
}

impl Default for OutlierDetection {
    fn default() -> OutlierDetection {
        OutlierDetection {
            consecutive_5xx: 5,
            consecutive_gateway_failure: 5,
            consecutive_local_origin_failure: 5,
            split_external_local_origin_errors: false,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 10,
            enforcing_consecutive_5xx: 100,
            enforcing_consecutive_gateway_failure: 0,
            enforcing_consecutive_local_origin_failure: 100,
            enforcing_success_rate: 100,
            enforcing_local_origin_success_rate: 100,
            success_rate_minimum_hosts: 5,
            success_rate_request_volume: 100,
            success_rate_stdev_factor: 1900,
            failure_percentage_threshold: 85,
            enforcing_failure_percentage: 0,
            enforcing_failure_percentage_local_origin: 0,
            failure_percentage_minimum_hosts: 5,
            failure_percentage_request_volume: 50,
            always_eject_one_host: false,
        }
    }
}

/// `config.core.v3.HealthCheck` (active health checking), defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    pub timeout: Duration,
    pub interval: Duration,
    /// `interval_jitter`: uniform extra wait in [0, jitter).
    pub interval_jitter: Duration,
    pub unhealthy_threshold: u32,
    pub healthy_threshold: u32,
    /// `no_traffic_interval` (default 60 s): used while the cluster has seen
    /// no traffic.
    pub no_traffic_interval: Duration,
    /// `unhealthy_interval` (default `interval`).
    pub unhealthy_interval: Duration,
    /// `unhealthy_edge_interval` (default `unhealthy_interval`).
    pub unhealthy_edge_interval: Duration,
    /// `healthy_edge_interval` (default `interval`).
    pub healthy_edge_interval: Duration,
    pub kind: HealthCheckKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum HealthCheckKind {
    /// `http_health_check`: GET `path` with `Host: host` (default the
    /// cluster name); healthy if the status is in `expected_statuses`
    /// (half-open ranges, default `[200, 201)`).
    Http { path: String, host: String, expected_statuses: Vec<(u16, u16)> },
    /// `tcp_health_check`: connect, send `send`, and expect every `receive`
    /// payload, in order, in what comes back (connect only when both are empty).
    Tcp { send: Vec<u8>, receive: Vec<Vec<u8>> },
    /// `grpc_health_check`: `grpc.health.v1.Health/Check` over HTTP/2
    /// (h2c) with `service: service_name`, `:authority` = `authority`
    /// (default the cluster name); healthy only on `SERVING`.
    Grpc { service_name: String, authority: String },
}
