//! Stage 4 for the traffic-governance filters: `envoy.filters.http.local_ratelimit`,
//! `envoy.filters.network.local_ratelimit`, `envoy.filters.http.fault` (as
//! HTTP filters and as `typed_per_filter_config` overrides) and the route's
//! `request_mirror_policies` → `model`.
//!
//! It owns Envoy's validation rules for these messages (token bucket bounds,
//! the 50 ms minimum fill interval of the local rate limiters, abort status
//! ranges, fractional-percent denominators) and the defaults Envoy applies
//! (0% enabled/enforced, 429, every request mirrored).  Fields outside
//! meshgate's subset were already refused by the allowlist walk
//! (`supported.rs`) and are skipped quietly here.
//!
//! Envoy references: `extensions/filters/http/local_ratelimit/v3`,
//! `extensions/filters/network/local_ratelimit/v3`,
//! `extensions/filters/http/fault/v3`, `config/route/v3` `RequestMirrorPolicy`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::listener::v3 as lis;
use envoy_types::pb::envoy::config::route::v3 as rt;
use envoy_types::pb::envoy::extensions::filters::common::fault::v3 as common_fault;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3 as fault;
use envoy_types::pb::envoy::extensions::filters::http::local_ratelimit::v3 as http_lrl;
use envoy_types::pb::envoy::extensions::filters::network::local_ratelimit::v3 as net_lrl;
use envoy_types::pb::envoy::r#type::v3 as ty;
use envoy_types::pb::google::protobuf as pb;
use prost::Message;

use super::super::matchers::header_matcher;
use super::super::supported::{HCM, HTTP_FAULT, HTTP_LOCAL_RATELIMIT, NETWORK_LOCAL_RATELIMIT};
use super::super::{join, type_name, Errors};
use super::routing::header_to_add;
use crate::model;

/// Envoy's local rate limiters refuse faster fills (`fill_interval must be >= 50ms`).
const MIN_FILL_INTERVAL: Duration = Duration::from_millis(50);
/// Envoy's `max_items: 10` on the local rate limit header lists.
const MAX_FILTER_HEADERS: usize = 10;

fn decode<M: Message + Default>(any: &pb::Any, path: &str, errors: &mut Errors) -> Option<M> {
    match M::decode(any.value.as_slice()) {
        Ok(m) => Some(m),
        Err(e) => {
            errors.add(path, format!("cannot decode: {e}"));
            None
        }
    }
}

/// `envoy.type.v3.FractionalPercent`.
pub(super) fn fractional_percent(
    p: &ty::FractionalPercent,
    path: &str,
    errors: &mut Errors,
) -> Option<model::FractionalPercent> {
    use ty::fractional_percent::DenominatorType as D;
    let denominator = match D::try_from(p.denominator) {
        Ok(D::Hundred) => 100,
        Ok(D::TenThousand) => 10_000,
        Ok(D::Million) => 1_000_000,
        Err(_) => {
            errors.add(join(path, "denominator"), format!("unknown value {}", p.denominator));
            return None;
        }
    };
    // Envoy clamps a numerator above its denominator to 100%.
    Some(model::FractionalPercent { numerator: p.numerator.min(denominator), denominator })
}

/// `RuntimeFractionalPercent`: meshgate has no runtime layer, so the key
/// never resolves and `default_value` applies (as in an Envoy whose runtime
/// lacks the key).
fn runtime_fraction(
    r: Option<&core::RuntimeFractionalPercent>,
    default: model::FractionalPercent,
    path: &str,
    errors: &mut Errors,
) -> Option<model::FractionalPercent> {
    match r {
        None => Some(default),
        Some(r) => match &r.default_value {
            None => {
                errors.add(join(path, "default_value"), "required");
                None
            }
            Some(v) => fractional_percent(v, &join(path, "default_value"), errors),
        },
    }
}

/// `envoy.type.v3.TokenBucket` with Envoy's checks.
fn token_bucket(b: &ty::TokenBucket, path: &str, errors: &mut Errors) -> Option<model::TokenBucketSpec> {
    let mut ok = true;
    if b.max_tokens == 0 {
        errors.add(join(path, "max_tokens"), "must be greater than 0");
        ok = false;
    }
    let tokens_per_fill = b.tokens_per_fill.map_or(1, |v| v.value);
    if tokens_per_fill == 0 {
        errors.add(join(path, "tokens_per_fill"), "must be greater than 0");
        ok = false;
    }
    let fill_interval = match &b.fill_interval {
        None => {
            errors.add(join(path, "fill_interval"), "required");
            None
        }
        Some(d) if d.seconds < 0 || d.nanos < 0 => {
            errors.add(join(path, "fill_interval"), "must not be negative");
            None
        }
        Some(d) => {
            let d = Duration::new(d.seconds as u64, d.nanos as u32);
            if d < MIN_FILL_INTERVAL {
                errors
                    .add(join(path, "fill_interval"), "must be at least 50ms (Envoy's minimum for local rate limits)");
                None
            } else {
                Some(d)
            }
        }
    };
    let fill_interval = fill_interval?;
    ok.then_some(model::TokenBucketSpec { max_tokens: b.max_tokens, tokens_per_fill, fill_interval })
}

fn header_list(list: &[core::HeaderValueOption], path: &str, errors: &mut Errors) -> Option<model::HeaderMutations> {
    let mut ok = true;
    if list.len() > MAX_FILTER_HEADERS {
        errors.add(path, format!("at most {MAX_FILTER_HEADERS} entries"));
        ok = false;
    }
    let mut out = model::HeaderMutations::default();
    for (i, option) in list.iter().enumerate() {
        match header_to_add(option, &format!("{path}[{i}]"), errors) {
            Some(h) => out.add.push(h),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

// ------------------------------------------------------- local rate limit

/// One `envoy.filters.http.local_ratelimit` (an `http_filters` entry, or a
/// per-route override when `name` is empty).
pub(crate) fn http_local_ratelimit(
    name: &str,
    any: &pb::Any,
    path: &str,
    errors: &mut Errors,
) -> Option<model::LocalRateLimit> {
    let f: http_lrl::LocalRateLimit = decode(any, path, errors)?;
    let p = |field: &str| join(path, field);
    let mut ok = true;
    if f.stat_prefix.is_empty() {
        errors.add(p("stat_prefix"), "required");
        ok = false;
    }
    let status = match &f.status {
        None => 429,
        // Envoy: "if a code lower than 400 is set, 429 is used".
        Some(s) if (400..=599).contains(&s.code) => s.code as u16,
        Some(s) if s.code < 400 && s.code >= 100 => 429,
        Some(s) => {
            errors.add(join(&p("status"), "code"), format!("{} is not an HTTP status", s.code));
            ok = false;
            429
        }
    };
    let token_bucket = match &f.token_bucket {
        None => None,
        Some(b) => match token_bucket(b, &p("token_bucket"), errors) {
            Some(b) => Some(b),
            None => {
                ok = false;
                None
            }
        },
    };
    let enabled =
        runtime_fraction(f.filter_enabled.as_ref(), model::FractionalPercent::NEVER, &p("filter_enabled"), errors);
    let enforced =
        runtime_fraction(f.filter_enforced.as_ref(), model::FractionalPercent::NEVER, &p("filter_enforced"), errors);
    let not_enforced = header_list(
        &f.request_headers_to_add_when_not_enforced,
        &p("request_headers_to_add_when_not_enforced"),
        errors,
    );
    let response = header_list(&f.response_headers_to_add, &p("response_headers_to_add"), errors);
    let x_ratelimit_headers = match f.enable_x_ratelimit_headers {
        0 => false,
        1 => true,
        other => {
            errors.add(
                p("enable_x_ratelimit_headers"),
                format!("unknown value {other} (meshgate supports: OFF, DRAFT_VERSION_03)"),
            );
            ok = false;
            false
        }
    };
    let mut descriptors = Vec::new();
    for (i, d) in f.descriptors.iter().enumerate() {
        let dpath = format!("{}[{i}]", p("descriptors"));
        match descriptor(d, &dpath, errors) {
            Some(d) => descriptors.push(Arc::new(d)),
            None => ok = false,
        }
    }
    if !descriptors.is_empty() {
        if f.token_bucket.is_none() {
            errors.add(p("token_bucket"), "required when descriptors are set (Envoy rejects descriptors without it)");
            ok = false;
        }
        if f.local_rate_limit_per_downstream_connection {
            errors.add(p("local_rate_limit_per_downstream_connection"), "not supported together with descriptors yet");
            ok = false;
        }
    }
    let (filter_enabled, filter_enforced) = (enabled?, enforced?);
    let (request_headers_when_not_enforced, response_headers) = (not_enforced?, response?);
    ok.then(|| model::LocalRateLimit {
        name: name.to_string(),
        stat_prefix: f.stat_prefix,
        status,
        token_bucket,
        filter_enabled,
        filter_enforced,
        request_headers_when_not_enforced,
        response_headers,
        x_ratelimit_headers,
        per_connection: f.local_rate_limit_per_downstream_connection,
        descriptors,
        stage: f.stage,
        always_consume_default_token_bucket: f.always_consume_default_token_bucket.is_none_or(|v| v.value),
    })
}

fn descriptor(
    d: &envoy_types::pb::envoy::extensions::common::ratelimit::v3::LocalRateLimitDescriptor,
    path: &str,
    errors: &mut Errors,
) -> Option<model::LocalRateLimitDescriptor> {
    let mut ok = true;
    if d.entries.is_empty() {
        errors.add(join(path, "entries"), "at least one entry is required");
        ok = false;
    }
    let mut entries = Vec::with_capacity(d.entries.len());
    for (i, e) in d.entries.iter().enumerate() {
        let epath = format!("{}[{i}]", join(path, "entries"));
        if e.key.is_empty() {
            errors.add(join(&epath, "key"), "required");
            ok = false;
        }
        if e.value.is_empty() {
            // Envoy treats an empty value as a wildcard (dynamic descriptors).
            errors.add(join(&epath, "value"), "required (wildcard descriptor values are not supported yet)");
            ok = false;
        }
        entries.push((e.key.clone(), e.value.clone()));
    }
    let bucket = match &d.token_bucket {
        None => {
            errors.add(join(path, "token_bucket"), "required");
            None
        }
        Some(b) => token_bucket(b, &join(path, "token_bucket"), errors),
    };
    let token_bucket = bucket?;
    ok.then_some(model::LocalRateLimitDescriptor { entries, token_bucket })
}

/// `RouteAction.rate_limits`: the descriptors a request on the route
/// produces for the local rate limit filter's `descriptors`.
pub(crate) fn rate_limit_policies(
    list: &[rt::RateLimit],
    path: &str,
    errors: &mut Errors,
) -> Option<Vec<model::RateLimitPolicy>> {
    use rt::rate_limit::action::ActionSpecifier as A;
    let mut out = Vec::with_capacity(list.len());
    let mut ok = true;
    for (i, r) in list.iter().enumerate() {
        let rpath = format!("{}[{i}]", join(path, "rate_limits"));
        if r.actions.is_empty() {
            errors.add(join(&rpath, "actions"), "at least one action is required");
            ok = false;
            continue;
        }
        let mut actions = Vec::with_capacity(r.actions.len());
        for (j, a) in r.actions.iter().enumerate() {
            let apath = format!("{}[{j}]", join(&rpath, "actions"));
            let action = match &a.action_specifier {
                Some(A::RequestHeaders(h)) => {
                    let name = h.header_name.to_ascii_lowercase();
                    if name.is_empty() || h.descriptor_key.is_empty() {
                        errors.add(&apath, "request_headers needs header_name and descriptor_key");
                        ok = false;
                        continue;
                    }
                    model::RateLimitAction::RequestHeaders {
                        header_name: name,
                        descriptor_key: h.descriptor_key.clone(),
                        skip_if_absent: h.skip_if_absent,
                    }
                }
                Some(A::RemoteAddress(_)) => model::RateLimitAction::RemoteAddress,
                Some(A::GenericKey(g)) => {
                    if g.descriptor_value.is_empty() {
                        errors.add(join(&join(&apath, "generic_key"), "descriptor_value"), "required");
                        ok = false;
                        continue;
                    }
                    model::RateLimitAction::GenericKey {
                        descriptor_key: if g.descriptor_key.is_empty() {
                            "generic_key".to_string()
                        } else {
                            g.descriptor_key.clone()
                        },
                        descriptor_value: g.descriptor_value.clone(),
                    }
                }
                Some(A::HeaderValueMatch(m)) => {
                    let mpath = join(&apath, "header_value_match");
                    if m.descriptor_value.is_empty() {
                        errors.add(join(&mpath, "descriptor_value"), "required");
                        ok = false;
                        continue;
                    }
                    let mut headers = Vec::new();
                    for (k, h) in m.headers.iter().enumerate() {
                        match header_matcher(h, &format!("{}[{k}]", join(&mpath, "headers")), errors) {
                            Some(h) => headers.push(h),
                            None => ok = false,
                        }
                    }
                    model::RateLimitAction::HeaderValueMatch {
                        descriptor_key: if m.descriptor_key.is_empty() {
                            "header_match".to_string()
                        } else {
                            m.descriptor_key.clone()
                        },
                        descriptor_value: m.descriptor_value.clone(),
                        expect_match: m.expect_match.is_none_or(|v| v.value),
                        headers,
                    }
                }
                Some(_) => {
                    ok = false;
                    continue; // reported by the allowlist walk
                }
                None => {
                    errors.add(&apath, "needs an action");
                    ok = false;
                    continue;
                }
            };
            actions.push(action);
        }
        out.push(model::RateLimitPolicy { stage: r.stage.map_or(0, |v| v.value), actions });
    }
    ok.then_some(out)
}

/// The `envoy.filters.network.local_ratelimit` filters of a listener's
/// (first) filter chain, in order; they must precede the terminal filter.
pub(crate) fn network_local_ratelimits(
    chains: &[lis::FilterChain],
    listener_path: &str,
    errors: &mut Errors,
) -> Option<Vec<Arc<model::NetworkLocalRateLimit>>> {
    let Some(chain) = chains.first() else {
        return Some(Vec::new()); // reported with the filter chain
    };
    let path = join(listener_path, "filter_chains[0].filters");
    let mut out = Vec::new();
    let mut ok = true;
    let mut seen_terminal = false;
    for (i, f) in chain.filters.iter().enumerate() {
        let Some(lis::filter::ConfigType::TypedConfig(any)) = &f.config_type else {
            continue;
        };
        let ty = type_name(&any.type_url);
        if ty == HCM {
            seen_terminal = true;
            continue;
        }
        if ty != NETWORK_LOCAL_RATELIMIT {
            continue;
        }
        let fpath = format!("{path}[{i}]");
        if seen_terminal {
            errors.add(
                &fpath,
                "envoy.filters.network.local_ratelimit must come before the terminal envoy.filters.network.http_connection_manager",
            );
            ok = false;
            continue;
        }
        let tpath = join(&fpath, "typed_config");
        let Some(n) = decode::<net_lrl::LocalRateLimit>(any, &tpath, errors) else {
            ok = false;
            continue;
        };
        if n.stat_prefix.is_empty() {
            errors.add(join(&tpath, "stat_prefix"), "required");
            ok = false;
        }
        let bucket = match &n.token_bucket {
            None => {
                errors.add(join(&tpath, "token_bucket"), "required");
                None
            }
            Some(b) => token_bucket(b, &join(&tpath, "token_bucket"), errors),
        };
        // No runtime layer: the flag's default_value is the value.
        let enabled = match &n.runtime_enabled {
            None => true,
            Some(flag) => match flag.default_value {
                Some(v) => v.value,
                None => {
                    errors.add(join(&join(&tpath, "runtime_enabled"), "default_value"), "required");
                    ok = false;
                    true
                }
            },
        };
        match bucket {
            Some(token_bucket) if ok => {
                out.push(Arc::new(model::NetworkLocalRateLimit { stat_prefix: n.stat_prefix, token_bucket, enabled }))
            }
            _ => ok = false,
        }
    }
    ok.then_some(out)
}

// ------------------------------------------------------------------ fault

/// One `envoy.filters.http.fault` (an `http_filters` entry, or a per-route
/// override when `name` is empty).
pub(crate) fn http_fault(name: &str, any: &pb::Any, path: &str, errors: &mut Errors) -> Option<model::Fault> {
    let f: fault::HttpFault = decode(any, path, errors)?;
    let p = |field: &str| join(path, field);
    let mut ok = true;
    let delay = match &f.delay {
        None => None,
        Some(d) => match fault_delay(d, &p("delay"), errors) {
            Some(d) => Some(d),
            None => {
                ok = false;
                None
            }
        },
    };
    let abort = match &f.abort {
        None => None,
        Some(a) => match fault_abort(a, &p("abort"), errors) {
            Some(a) => Some(a),
            None => {
                ok = false;
                None
            }
        },
    };
    let mut headers = Vec::new();
    for (i, h) in f.headers.iter().enumerate() {
        match header_matcher(h, &format!("{}[{i}]", p("headers")), errors) {
            Some(m) => headers.push(m),
            None => ok = false,
        }
    }
    ok.then(|| model::Fault {
        name: name.to_string(),
        delay,
        abort,
        headers,
        downstream_nodes: f.downstream_nodes.clone(),
        max_active_faults: f.max_active_faults.map(|v| v.value),
    })
}

fn fault_delay(d: &common_fault::FaultDelay, path: &str, errors: &mut Errors) -> Option<model::FaultDelay> {
    use common_fault::fault_delay::FaultDelaySecifier as S;
    let kind = match &d.fault_delay_secifier {
        Some(S::FixedDelay(t)) => {
            if t.seconds < 0 || t.nanos < 0 || (t.seconds == 0 && t.nanos == 0) {
                errors.add(join(path, "fixed_delay"), "must be greater than 0s");
                return None;
            }
            model::FaultDelayKind::Fixed(Duration::new(t.seconds as u64, t.nanos as u32))
        }
        Some(S::HeaderDelay(_)) => model::FaultDelayKind::Header,
        None => {
            errors.add(path, "needs fixed_delay or header_delay");
            return None;
        }
    };
    let percentage = match &d.percentage {
        None => model::FractionalPercent::NEVER,
        Some(pc) => fractional_percent(pc, &join(path, "percentage"), errors)?,
    };
    Some(model::FaultDelay { kind, percentage })
}

fn fault_abort(a: &fault::FaultAbort, path: &str, errors: &mut Errors) -> Option<model::FaultAbort> {
    use fault::fault_abort::ErrorType as E;
    let kind = match &a.error_type {
        Some(E::HttpStatus(s)) if (200..600).contains(s) => model::FaultAbortKind::Http(*s as u16),
        Some(E::HttpStatus(s)) => {
            errors.add(join(path, "http_status"), format!("{s} is not in 200..=599"));
            return None;
        }
        Some(E::GrpcStatus(s)) => model::FaultAbortKind::Grpc(*s),
        Some(E::HeaderAbort(_)) => model::FaultAbortKind::Header,
        None => {
            errors.add(path, "needs http_status, grpc_status or header_abort");
            return None;
        }
    };
    let percentage = match &a.percentage {
        None => model::FractionalPercent::NEVER,
        Some(pc) => fractional_percent(pc, &join(path, "percentage"), errors)?,
    };
    if a.response_body.bytes().any(|b| b == 0) {
        errors.add(join(path, "response_body"), "must not contain NUL");
        return None;
    }
    Some(model::FaultAbort { kind, percentage, response_body: a.response_body.clone() })
}

// ------------------------------------------------------ per-filter configs

/// A `typed_per_filter_config` value of one of this module's types:
/// `Some(Some(..))` when it is one and valid, `Some(None)` when the type is
/// not this module's, `None` after reporting.
pub(crate) fn per_filter_config(
    any: &pb::Any,
    path: &str,
    errors: &mut Errors,
) -> Option<Option<model::PerFilterConfig>> {
    match type_name(&any.type_url) {
        HTTP_LOCAL_RATELIMIT => http_local_ratelimit("", any, path, errors)
            .map(|c| Some(model::PerFilterConfig::LocalRateLimit(Arc::new(c)))),
        HTTP_FAULT => http_fault("", any, path, errors).map(|c| Some(model::PerFilterConfig::Fault(Arc::new(c)))),
        _ => Some(None),
    }
}

// ------------------------------------------------------------- mirroring

/// `RouteAction.request_mirror_policies`.
pub(crate) fn mirror_policies(
    list: &[rt::route_action::RequestMirrorPolicy],
    path: &str,
    clusters: &HashSet<&str>,
    errors: &mut Errors,
) -> Option<Vec<model::MirrorPolicy>> {
    let mut out = Vec::with_capacity(list.len());
    let mut ok = true;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, m) in list.iter().enumerate() {
        let mpath = format!("{}[{i}]", join(path, "request_mirror_policies"));
        let cluster = match (m.cluster.is_empty(), m.cluster_header.is_empty()) {
            (false, true) => {
                if !clusters.contains(m.cluster.as_str()) {
                    errors.add(join(&mpath, "cluster"), format!("unknown cluster {:?}", m.cluster));
                    ok = false;
                    continue;
                }
                model::MirrorCluster::Name(m.cluster.clone())
            }
            (true, false) => {
                let h = m.cluster_header.to_ascii_lowercase();
                if !h.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)) {
                    errors.add(
                        join(&mpath, "cluster_header"),
                        format!("{:?} is not a valid HTTP header name", m.cluster_header),
                    );
                    ok = false;
                    continue;
                }
                model::MirrorCluster::Header(h)
            }
            (true, true) => {
                errors.add(&mpath, "needs cluster or cluster_header");
                ok = false;
                continue;
            }
            (false, false) => {
                errors.add(&mpath, "only one of cluster and cluster_header may be set");
                ok = false;
                continue;
            }
        };
        let key = format!("{cluster:?}");
        if let Some(first) = seen.insert(key, i) {
            errors.add(&mpath, format!("mirrors to the same cluster as request_mirror_policies[{first}]"));
            ok = false;
            continue;
        }
        let Some(fraction) = runtime_fraction(
            m.runtime_fraction.as_ref(),
            model::FractionalPercent::ALWAYS,
            &join(&mpath, "runtime_fraction"),
            errors,
        ) else {
            ok = false;
            continue;
        };
        out.push(model::MirrorPolicy {
            cluster,
            fraction,
            disable_shadow_host_suffix_append: m.disable_shadow_host_suffix_append,
        });
    }
    ok.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractional_percent_denominators_and_clamp() {
        let mut errors = Errors::new("t");
        let p = ty::FractionalPercent { numerator: 5, denominator: 1 };
        assert_eq!(
            fractional_percent(&p, "x", &mut errors),
            Some(model::FractionalPercent { numerator: 5, denominator: 10_000 })
        );
        let p = ty::FractionalPercent { numerator: 500, denominator: 0 };
        assert_eq!(fractional_percent(&p, "x", &mut errors), Some(model::FractionalPercent::ALWAYS));
        let p = ty::FractionalPercent { numerator: 1, denominator: 7 };
        assert_eq!(fractional_percent(&p, "x", &mut errors), None);
    }

    #[test]
    fn token_bucket_rules() {
        let mut errors = Errors::new("t");
        let ok = ty::TokenBucket {
            max_tokens: 10,
            tokens_per_fill: None,
            fill_interval: Some(pb::Duration { seconds: 1, nanos: 0 }),
        };
        assert_eq!(
            token_bucket(&ok, "b", &mut errors),
            Some(model::TokenBucketSpec { max_tokens: 10, tokens_per_fill: 1, fill_interval: Duration::from_secs(1) })
        );
        let fast = ty::TokenBucket { fill_interval: Some(pb::Duration { seconds: 0, nanos: 10_000_000 }), ..ok };
        assert_eq!(token_bucket(&fast, "b", &mut errors), None);
        let empty = ty::TokenBucket { max_tokens: 0, ..ok };
        assert_eq!(token_bucket(&empty, "b", &mut errors), None);
    }
}
