//! Stage 4 for retries: `config.route.v3.RetryPolicy` on routes and virtual
//! hosts, the `per_request_buffer_limit_bytes` that bounds what a retried
//! request may buffer, and the virtual host's attempt-count switches →
//! `model::{RetryPolicy, RouteRetry, VhostRetry}`.
//!
//! It owns Envoy's validation of these messages (protoc-gen-validate rules
//! and the `RetryPolicyImpl` constructor's checks: `retry_back_off`'s
//! `max_interval` must not be below `base_interval`; retry host predicates
//! are known extensions).  The allowlist walk (`supported.rs`) has already
//! refused fields meshgate does not implement (`retry_priority`,
//! `rate_limited_retry_back_off`, `retry_options_predicates`,
//! `per_try_idle_timeout`, `hedge_policy`, ...).

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::route::v3 as rt;

use super::super::matchers;
use super::super::{join, type_name, Errors};
use super::duration;
use crate::model;

const PREVIOUS_HOSTS_NAME: &str = "envoy.retry_host_predicates.previous_hosts";
const PREVIOUS_HOSTS_TYPE: &str = "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate";

/// `RetryPolicy`; `path` names the `retry_policy` field.
pub(super) fn retry_policy(r: &rt::RetryPolicy, path: &str, errors: &mut Errors) -> Option<model::RetryPolicy> {
    let p = |f: &str| join(path, f);
    let mut ok = true;
    let retry_on = match model::RetryOn::parse(&r.retry_on) {
        Ok(on) => on,
        Err(token) => {
            errors.add(
                p("retry_on"),
                format!(
                    "unsupported retry condition {token:?} (meshgate implements 5xx, gateway-error, reset, \
                     connect-failure, retriable-4xx, refused-stream, retriable-status-codes, retriable-headers)"
                ),
            );
            ok = false;
            model::RetryOn::default()
        }
    };
    let num_retries = r.num_retries.map_or(1, |v| v.value);
    let per_try_timeout = match &r.per_try_timeout {
        None => None,
        Some(d) => duration(d, &p("per_try_timeout"), errors).filter(|d| !d.is_zero()),
    };
    let mut back_off_base = crate::governance::DEFAULT_BACK_OFF_BASE;
    let mut back_off_max = back_off_base * 10;
    if let Some(b) = &r.retry_back_off {
        let bp = p("retry_back_off");
        match &b.base_interval {
            None => {
                errors.add(join(&bp, "base_interval"), "required");
                ok = false;
            }
            Some(d) => match duration(d, &join(&bp, "base_interval"), errors) {
                // protoc-gen-validate: `gt: {nanos: 1000000}`.
                Some(d) if d > Duration::from_millis(1) => back_off_base = d,
                Some(_) => {
                    errors.add(join(&bp, "base_interval"), "must be greater than 1ms");
                    ok = false;
                }
                None => ok = false,
            },
        }
        back_off_max = back_off_base * 10;
        if let Some(d) = &b.max_interval {
            match duration(d, &join(&bp, "max_interval"), errors) {
                Some(d) if d.is_zero() => {
                    errors.add(join(&bp, "max_interval"), "must be greater than 0s");
                    ok = false;
                }
                Some(d) if d < back_off_base => {
                    errors.add(
                        join(&bp, "max_interval"),
                        "max_interval must be greater than or equal to the base_interval",
                    );
                    ok = false;
                }
                Some(d) => back_off_max = d,
                None => ok = false,
            }
        }
    }
    let mut previous_hosts = false;
    for (i, pred) in r.retry_host_predicate.iter().enumerate() {
        let pp = format!("{}[{i}]", p("retry_host_predicate"));
        use rt::retry_policy::retry_host_predicate::ConfigType;
        let typed = match &pred.config_type {
            Some(ConfigType::TypedConfig(any)) => Some(type_name(&any.type_url).to_string()),
            _ => None,
        };
        let known = match typed.as_deref() {
            Some(t) => t == PREVIOUS_HOSTS_TYPE,
            None => pred.name == PREVIOUS_HOSTS_NAME,
        };
        if known {
            previous_hosts = true;
        } else {
            errors.add(
                &pp,
                format!(
                    "unsupported retry host predicate {:?} (meshgate implements {PREVIOUS_HOSTS_NAME} \
                     with typed_config {PREVIOUS_HOSTS_TYPE})",
                    typed.unwrap_or_else(|| pred.name.clone())
                ),
            );
            ok = false;
        }
    }
    let host_selection_retry_max_attempts = match r.host_selection_retry_max_attempts {
        0 => 1,
        n if n < 0 => {
            errors.add(p("host_selection_retry_max_attempts"), "must not be negative");
            ok = false;
            1
        }
        n => n.min(i64::from(u32::MAX)) as u32,
    };
    let mut retriable_status_codes = Vec::new();
    for (i, &code) in r.retriable_status_codes.iter().enumerate() {
        if (100..=599).contains(&code) {
            retriable_status_codes.push(code as u16);
        } else {
            errors.add(format!("{}[{i}]", p("retriable_status_codes")), format!("{code} is not an HTTP status"));
            ok = false;
        }
    }
    let mut retriable_headers = Vec::new();
    for (i, h) in r.retriable_headers.iter().enumerate() {
        match matchers::header_matcher(h, &format!("{}[{i}]", p("retriable_headers")), errors) {
            Some(m) => retriable_headers.push(m),
            None => ok = false,
        }
    }
    ok.then_some(model::RetryPolicy {
        retry_on,
        num_retries,
        per_try_timeout,
        back_off_base,
        back_off_max,
        previous_hosts,
        host_selection_retry_max_attempts,
        retriable_status_codes,
        retriable_headers,
    })
}

/// The route's retry policy (from its `route` action) and buffer limit.
#[allow(deprecated)] // per_request_buffer_limit_bytes: Envoy still honours it
pub(super) fn route_retry(
    r: &rt::Route,
    a: &rt::RouteAction,
    path: &str,
    errors: &mut Errors,
) -> Option<model::RouteRetry> {
    let policy = match &a.retry_policy {
        None => None,
        Some(rp) => Some(Arc::new(retry_policy(rp, &join(&join(path, "route"), "retry_policy"), errors)?)),
    };
    Some(model::RouteRetry {
        policy,
        per_request_buffer_limit_bytes: r.per_request_buffer_limit_bytes.map(|v| v.value),
    })
}

/// The virtual host's retry settings.
#[allow(deprecated)] // per_request_buffer_limit_bytes: Envoy still honours it
pub(super) fn vhost_retry(vh: &rt::VirtualHost, path: &str, errors: &mut Errors) -> Option<model::VhostRetry> {
    let policy = match &vh.retry_policy {
        None => None,
        Some(rp) => Some(Arc::new(retry_policy(rp, &join(path, "retry_policy"), errors)?)),
    };
    Some(model::VhostRetry {
        policy,
        per_request_buffer_limit_bytes: vh.per_request_buffer_limit_bytes.map(|v| v.value),
        include_request_attempt_count: vh.include_request_attempt_count,
        include_attempt_count_in_response: vh.include_attempt_count_in_response,
    })
}
