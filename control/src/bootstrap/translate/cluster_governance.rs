//! Stage 4 for a cluster's traffic governance: `circuit_breakers` →
//! `model::CircuitBreakers` (per routing priority, Envoy's defaults).
//!
//! Checks are Envoy's: one `Thresholds` entry per priority (a second entry
//! for the same priority is refused rather than silently winning), a
//! defined `RoutingPriority`, and a `retry_budget.budget_percent` within
//! 0..=100.  `per_host_thresholds`, `track_remaining`, `max_connection_pools`
//! and `retry_budget.budget_interval` are refused by the allowlist walk.

use envoy_types::pb::envoy::config::cluster::v3 as cl;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3 as core;

use super::super::{join, Errors};
use crate::model;

/// `Cluster.circuit_breakers`; `path` names the cluster.
pub(super) fn circuit_breakers(c: &cl::Cluster, path: &str, errors: &mut Errors) -> Option<model::CircuitBreakers> {
    let mut out = model::CircuitBreakers::default();
    let Some(cb) = &c.circuit_breakers else { return Some(out) };
    let mut ok = true;
    let mut seen = [false; 2];
    for (i, t) in cb.thresholds.iter().enumerate() {
        let tp = format!("{}[{i}]", join(&join(path, "circuit_breakers"), "thresholds"));
        let index = match core::RoutingPriority::try_from(t.priority) {
            Ok(core::RoutingPriority::Default) => 0,
            Ok(core::RoutingPriority::High) => 1,
            Err(_) => {
                errors.add(join(&tp, "priority"), format!("unknown RoutingPriority {}", t.priority));
                ok = false;
                continue;
            }
        };
        if std::mem::replace(&mut seen[index], true) {
            errors.add(join(&tp, "priority"), "a second thresholds entry for the same priority");
            ok = false;
            continue;
        }
        let d = model::Thresholds::default();
        let mut th = model::Thresholds {
            max_connections: t.max_connections.map_or(d.max_connections, |v| v.value),
            max_pending_requests: t.max_pending_requests.map_or(d.max_pending_requests, |v| v.value),
            max_requests: t.max_requests.map_or(d.max_requests, |v| v.value),
            max_retries: t.max_retries.map_or(d.max_retries, |v| v.value),
            retry_budget: None,
        };
        if let Some(b) = &t.retry_budget {
            let percent = b.budget_percent.as_ref().map_or(20.0, |p| p.value);
            if !(0.0..=100.0).contains(&percent) || percent.is_nan() {
                errors.add(
                    join(&join(&tp, "retry_budget"), "budget_percent"),
                    format!("{percent} is not within 0..=100"),
                );
                ok = false;
            }
            th.retry_budget = Some(model::RetryBudget {
                budget_percent: percent,
                min_retry_concurrency: b.min_retry_concurrency.map_or(3, |v| v.value),
            });
        }
        out.thresholds[index] = th;
    }
    ok.then_some(out)
}

/// `Cluster.outlier_detection`; `path` names the cluster.  Percentages
/// must be within 0..=100 (protoc-gen-validate `lte: 100`); durations
/// positive; `max_ejection_time_jitter`, `monitors`,
/// `successful_active_health_check_uneject_host` and `detect_degraded_hosts`
/// are refused by the allowlist walk.
pub(super) fn outlier_detection(
    c: &cl::Cluster,
    path: &str,
    errors: &mut Errors,
) -> Option<Option<model::OutlierDetection>> {
    let Some(o) = &c.outlier_detection else { return Some(None) };
    let op = join(path, "outlier_detection");
    let mut ok = true;
    let d = model::OutlierDetection::default();
    let mut pct = |v: Option<u32>, default: u32, field: &str| -> u32 {
        match v {
            None => default,
            Some(v) if v <= 100 => v,
            Some(v) => {
                errors.add(join(&op, field), format!("{v} is above 100"));
                ok = false;
                default
            }
        }
    };
    let max_ejection_percent =
        pct(o.max_ejection_percent.map(|v| v.value), d.max_ejection_percent, "max_ejection_percent");
    let enforcing_consecutive_5xx =
        pct(o.enforcing_consecutive_5xx.map(|v| v.value), d.enforcing_consecutive_5xx, "enforcing_consecutive_5xx");
    let enforcing_consecutive_gateway_failure = pct(
        o.enforcing_consecutive_gateway_failure.map(|v| v.value),
        d.enforcing_consecutive_gateway_failure,
        "enforcing_consecutive_gateway_failure",
    );
    let enforcing_consecutive_local_origin_failure = pct(
        o.enforcing_consecutive_local_origin_failure.map(|v| v.value),
        d.enforcing_consecutive_local_origin_failure,
        "enforcing_consecutive_local_origin_failure",
    );
    let enforcing_success_rate =
        pct(o.enforcing_success_rate.map(|v| v.value), d.enforcing_success_rate, "enforcing_success_rate");
    let enforcing_local_origin_success_rate = pct(
        o.enforcing_local_origin_success_rate.map(|v| v.value),
        d.enforcing_local_origin_success_rate,
        "enforcing_local_origin_success_rate",
    );
    let failure_percentage_threshold = pct(
        o.failure_percentage_threshold.map(|v| v.value),
        d.failure_percentage_threshold,
        "failure_percentage_threshold",
    );
    let enforcing_failure_percentage = pct(
        o.enforcing_failure_percentage.map(|v| v.value),
        d.enforcing_failure_percentage,
        "enforcing_failure_percentage",
    );
    let enforcing_failure_percentage_local_origin = pct(
        o.enforcing_failure_percentage_local_origin.map(|v| v.value),
        d.enforcing_failure_percentage_local_origin,
        "enforcing_failure_percentage_local_origin",
    );
    let mut dur =
        |v: Option<&envoy_types::pb::google::protobuf::Duration>, default: Duration, field: &str| -> Duration {
            match v {
                None => default,
                Some(p) if p.seconds < 0 || p.nanos < 0 || (p.seconds == 0 && p.nanos == 0) => {
                    errors.add(join(&op, field), "must be greater than 0s");
                    ok = false;
                    default
                }
                Some(p) => Duration::new(p.seconds as u64, p.nanos as u32),
            }
        };
    let interval = dur(o.interval.as_ref(), d.interval, "interval");
    let base_ejection_time = dur(o.base_ejection_time.as_ref(), d.base_ejection_time, "base_ejection_time");
    let max_ejection_time = dur(o.max_ejection_time.as_ref(), d.max_ejection_time, "max_ejection_time");
    let v = |x: Option<u32>, default: u32| x.unwrap_or(default);
    let out = model::OutlierDetection {
        consecutive_5xx: v(o.consecutive_5xx.map(|x| x.value), d.consecutive_5xx),
        consecutive_gateway_failure: v(o.consecutive_gateway_failure.map(|x| x.value), d.consecutive_gateway_failure),
        consecutive_local_origin_failure: v(
            o.consecutive_local_origin_failure.map(|x| x.value),
            d.consecutive_local_origin_failure,
        ),
        split_external_local_origin_errors: o.split_external_local_origin_errors,
        interval,
        base_ejection_time,
        max_ejection_time,
        max_ejection_percent,
        enforcing_consecutive_5xx,
        enforcing_consecutive_gateway_failure,
        enforcing_consecutive_local_origin_failure,
        enforcing_success_rate,
        enforcing_local_origin_success_rate,
        success_rate_minimum_hosts: v(o.success_rate_minimum_hosts.map(|x| x.value), d.success_rate_minimum_hosts),
        success_rate_request_volume: v(o.success_rate_request_volume.map(|x| x.value), d.success_rate_request_volume),
        success_rate_stdev_factor: v(o.success_rate_stdev_factor.map(|x| x.value), d.success_rate_stdev_factor),
        failure_percentage_threshold,
        enforcing_failure_percentage,
        enforcing_failure_percentage_local_origin,
        failure_percentage_minimum_hosts: v(
            o.failure_percentage_minimum_hosts.map(|x| x.value),
            d.failure_percentage_minimum_hosts,
        ),
        failure_percentage_request_volume: v(
            o.failure_percentage_request_volume.map(|x| x.value),
            d.failure_percentage_request_volume,
        ),
        always_eject_one_host: o.always_eject_one_host.is_some_and(|b| b.value),
    };
    ok.then_some(Some(out))
}

/// `Cluster.health_checks`: at most one entry (HTTP, TCP or gRPC); required
/// fields and Envoy's rules (`timeout`, `interval` > 0, thresholds set,
/// HTTP `path` non-empty, statuses within 100..=599, hex payloads valid).
/// `custom_health_check` and the other fields are refused by the allowlist
/// walk.
pub(super) fn health_checks(c: &cl::Cluster, path: &str, errors: &mut Errors) -> Option<Vec<model::HealthCheck>> {
    use core::health_check::HealthChecker;
    let mut out = Vec::new();
    let mut ok = true;
    if c.health_checks.len() > 1 {
        errors.add(format!("{}[1]", join(path, "health_checks")), "meshgate runs at most one health check per cluster");
        return None;
    }
    for (i, h) in c.health_checks.iter().enumerate() {
        let hp = format!("{}[{i}]", join(path, "health_checks"));
        let mut required = |d: Option<&envoy_types::pb::google::protobuf::Duration>, field: &str| -> Duration {
            match d {
                Some(p) if p.seconds > 0 || (p.seconds == 0 && p.nanos > 0) => {
                    Duration::new(p.seconds as u64, p.nanos.max(0) as u32)
                }
                Some(_) => {
                    errors.add(join(&hp, field), "must be greater than 0s");
                    ok = false;
                    Duration::from_secs(1)
                }
                None => {
                    errors.add(join(&hp, field), "required");
                    ok = false;
                    Duration::from_secs(1)
                }
            }
        };
        let timeout = required(h.timeout.as_ref(), "timeout");
        let interval = required(h.interval.as_ref(), "interval");
        let mut optional =
            |d: Option<&envoy_types::pb::google::protobuf::Duration>, field: &str, default: Duration| match d {
                None => default,
                Some(p) if p.seconds < 0 || p.nanos < 0 => {
                    errors.add(join(&hp, field), "must not be negative");
                    ok = false;
                    default
                }
                Some(p) => Duration::new(p.seconds as u64, p.nanos as u32),
            };
        let interval_jitter = optional(h.interval_jitter.as_ref(), "interval_jitter", Duration::ZERO);
        let no_traffic_interval =
            optional(h.no_traffic_interval.as_ref(), "no_traffic_interval", Duration::from_secs(60));
        let unhealthy_interval = optional(h.unhealthy_interval.as_ref(), "unhealthy_interval", interval);
        let unhealthy_edge_interval =
            optional(h.unhealthy_edge_interval.as_ref(), "unhealthy_edge_interval", unhealthy_interval);
        let healthy_edge_interval = optional(h.healthy_edge_interval.as_ref(), "healthy_edge_interval", interval);
        let mut threshold = |v: Option<u32>, field: &str| -> u32 {
            match v {
                Some(n) => n.max(1),
                None => {
                    errors.add(join(&hp, field), "required");
                    ok = false;
                    1
                }
            }
        };
        let unhealthy_threshold = threshold(h.unhealthy_threshold.map(|v| v.value), "unhealthy_threshold");
        let healthy_threshold = threshold(h.healthy_threshold.map(|v| v.value), "healthy_threshold");
        let kind = match &h.health_checker {
            Some(HealthChecker::HttpHealthCheck(hh)) => {
                if hh.path.is_empty() {
                    errors.add(join(&join(&hp, "http_health_check"), "path"), "required");
                    ok = false;
                }
                let mut expected = Vec::new();
                for (j, r) in hh.expected_statuses.iter().enumerate() {
                    if !(100..=600).contains(&r.start) || !(100..=600).contains(&r.end) || r.start >= r.end {
                        errors.add(
                            format!("{}[{j}]", join(&join(&hp, "http_health_check"), "expected_statuses")),
                            format!("[{}, {}) is not a range of HTTP statuses within [100, 600)", r.start, r.end),
                        );
                        ok = false;
                        continue;
                    }
                    expected.push((r.start as u16, r.end as u16));
                }
                if expected.is_empty() {
                    expected.push((200, 201));
                }
                let host = if hh.host.is_empty() { c.name.clone() } else { hh.host.clone() };
                Some(model::HealthCheckKind::Http { path: hh.path.clone(), host, expected_statuses: expected })
            }
            Some(HealthChecker::TcpHealthCheck(t)) => {
                let tp = join(&hp, "tcp_health_check");
                let send =
                    t.send.as_ref().and_then(|p| payload(p, &join(&tp, "send"), errors, &mut ok)).unwrap_or_default();
                let receive = t
                    .receive
                    .iter()
                    .enumerate()
                    .filter_map(|(j, p)| payload(p, &format!("{}[{j}]", join(&tp, "receive")), errors, &mut ok))
                    .collect();
                Some(model::HealthCheckKind::Tcp { send, receive })
            }
            Some(HealthChecker::GrpcHealthCheck(g)) => {
                // h2c: upstream TLS (cluster transport_socket) is refused by the allowlist.
                let authority = if g.authority.is_empty() { c.name.clone() } else { g.authority.clone() };
                Some(model::HealthCheckKind::Grpc { service_name: g.service_name.clone(), authority })
            }
            Some(_) => None, // redis/custom: reported by the allowlist walk
            None => {
                errors.add(&hp, "needs http_health_check, tcp_health_check or grpc_health_check");
                ok = false;
                None
            }
        };
        if let Some(kind) = kind {
            out.push(model::HealthCheck {
                timeout,
                interval,
                interval_jitter,
                unhealthy_threshold,
                healthy_threshold,
                no_traffic_interval,
                unhealthy_interval,
                unhealthy_edge_interval,
                healthy_edge_interval,
                kind,
            });
        } else {
            ok = false;
        }
    }
    ok.then_some(out)
}

/// `HealthCheck.Payload`: `text` is hex, `binary` raw bytes.
fn payload(p: &core::health_check::Payload, path: &str, errors: &mut Errors, ok: &mut bool) -> Option<Vec<u8>> {
    use core::health_check::payload::Payload as P;
    match &p.payload {
        Some(P::Binary(b)) => Some(b.clone()),
        Some(P::Text(t)) => {
            let t = t.trim();
            let bytes: Option<Vec<u8>> = (t.len() % 2 == 0)
                .then(|| (0..t.len()).step_by(2).map(|i| u8::from_str_radix(&t[i..i + 2], 16).ok()).collect())
                .flatten();
            if bytes.is_none() {
                errors.add(join(path, "text"), "not a hex string");
                *ok = false;
            }
            bytes
        }
        None => {
            errors.add(path, "needs text or binary");
            *ok = false;
            None
        }
    }
}
