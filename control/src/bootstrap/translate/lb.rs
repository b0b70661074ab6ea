//! Translation of the load-balancing part of Envoy's API: `lb_policy` and
//! its `*_lb_config`, `common_lb_config.healthy_panic_threshold`,
//! `load_assignment.policy`, the `envoy.clusters.aggregate` cluster type
//! and the route's `hash_policy`.
//!
//! It owns Envoy's defaults and validity rules for those fields (ring sizes,
//! prime Maglev tables, CLUSTER_PROVIDED only with a cluster type that
//! provides a balancer, ...), so the data plane never has to know them.  It
//! must not touch the rest of a cluster or route: `translate` calls in here
//! and assembles the model.  Errors name the field path and say what
//! meshgate accepts, like every other stage-4 error.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3 as cl;
use envoy_types::pb::envoy::config::endpoint::v3 as ep;
use envoy_types::pb::envoy::config::route::v3 as rt;
use envoy_types::pb::envoy::extensions::clusters::aggregate::v3 as agg;
use prost::Message;

use super::{duration, enum_name, packed_type};
use crate::bootstrap::supported::AGGREGATE_CONFIG;
use crate::bootstrap::{join, Errors};
use crate::model;

/// The extension name Envoy registers the aggregate cluster under.
pub(crate) const AGGREGATE_NAME: &str = "envoy.clusters.aggregate";

const DEFAULT_MIN_RING: u64 = 1024;
const MAX_RING: u64 = 8 * 1024 * 1024;
const DEFAULT_MAGLEV_TABLE: u64 = 65537;
const MAX_MAGLEV_TABLE: u64 = 5_000_011;
/// `LocalityLbEndpoints.priority` is validated `lte: 128` in Envoy's proto.
const MAX_PRIORITY: u32 = 128;

/// The cluster-level balancing settings, defaults applied.
pub(super) struct ClusterLb {
    pub lb_policy: model::LbPolicy,
    pub healthy_panic_threshold: u32,
}

/// `lb_policy` + its config oneof + `common_lb_config`; `None` after reporting.
pub(super) fn cluster_lb(c: &cl::Cluster, path: &str, errors: &mut Errors) -> Option<ClusterLb> {
    use cl::cluster::{LbConfig, LbPolicy};
    let p = |f: &str| join(path, f);
    let policy = LbPolicy::try_from(c.lb_policy);
    let policy_name = enum_name("envoy.config.cluster.v3.Cluster.LbPolicy", c.lb_policy);
    let mut ok = true;

    // Envoy refuses an lb config that does not belong to the policy ("will
    // generate an error at runtime"); meshgate says so at load time.
    let (config_field, belongs) = match &c.lb_config {
        None => (None, true),
        Some(LbConfig::RingHashLbConfig(_)) => (Some("ring_hash_lb_config"), policy == Ok(LbPolicy::RingHash)),
        Some(LbConfig::MaglevLbConfig(_)) => (Some("maglev_lb_config"), policy == Ok(LbPolicy::Maglev)),
        Some(LbConfig::LeastRequestLbConfig(_)) => {
            (Some("least_request_lb_config"), policy == Ok(LbPolicy::LeastRequest))
        }
        Some(LbConfig::RoundRobinLbConfig(_)) => (Some("round_robin_lb_config"), policy == Ok(LbPolicy::RoundRobin)),
        // original_dst_lb_config: rejected by the allowlist walk.
        Some(LbConfig::OriginalDstLbConfig(_)) => (None, true),
    };
    if let (Some(field), false) = (config_field, belongs) {
        errors.add(p(field), format!("does not apply to lb_policy {policy_name}"));
        ok = false;
    }

    let lb_policy = match policy {
        Ok(LbPolicy::RoundRobin) => Some(model::LbPolicy::RoundRobin),
        Ok(LbPolicy::Random) => Some(model::LbPolicy::Random),
        Ok(LbPolicy::ClusterProvided) => Some(model::LbPolicy::ClusterProvided),
        Ok(LbPolicy::LeastRequest) => {
            let cfg = match &c.lb_config {
                Some(LbConfig::LeastRequestLbConfig(l)) => Some(l),
                _ => None,
            };
            least_request(cfg, &p("least_request_lb_config"), errors)
        }
        Ok(LbPolicy::RingHash) => {
            let cfg = match &c.lb_config {
                Some(LbConfig::RingHashLbConfig(r)) => Some(r),
                _ => None,
            };
            ring_hash(cfg, &p("ring_hash_lb_config"), errors)
        }
        Ok(LbPolicy::Maglev) => {
            let cfg = match &c.lb_config {
                Some(LbConfig::MaglevLbConfig(m)) => Some(m),
                _ => None,
            };
            maglev(cfg, &p("maglev_lb_config"), errors)
        }
        _ => {
            errors.add(
                p("lb_policy"),
                format!(
                    "unsupported value {policy_name} (meshgate supports: ROUND_ROBIN, LEAST_REQUEST, RANDOM, RING_HASH, MAGLEV, CLUSTER_PROVIDED)"
                ),
            );
            None
        }
    };

    let healthy_panic_threshold = match c.common_lb_config.as_ref().and_then(|l| l.healthy_panic_threshold.as_ref()) {
        None => 50,
        Some(pct) if (0.0..=100.0).contains(&pct.value) => pct.value.round() as u32,
        Some(pct) => {
            errors.add(
                join(&p("common_lb_config"), "healthy_panic_threshold.value"),
                format!("{} is not a percentage in 0..=100", pct.value),
            );
            ok = false;
            50
        }
    };

    if !ok {
        return None;
    }
    Some(ClusterLb { lb_policy: lb_policy?, healthy_panic_threshold })
}

fn least_request(
    cfg: Option<&cl::cluster::LeastRequestLbConfig>,
    path: &str,
    errors: &mut Errors,
) -> Option<model::LbPolicy> {
    let choice_count = cfg.and_then(|c| c.choice_count).map_or(2, |v| v.value);
    let active_request_bias = cfg.and_then(|c| c.active_request_bias.as_ref()).map_or(1.0, |b| b.default_value);
    let mut ok = true;
    if choice_count < 2 {
        errors.add(join(path, "choice_count"), format!("{choice_count} is below the minimum of 2"));
        ok = false;
    }
    // Envoy warns and falls back to 1.0 at run time; a load error is clearer.
    if !(active_request_bias >= 0.0 && active_request_bias.is_finite()) {
        errors.add(
            join(path, "active_request_bias.default_value"),
            format!("{active_request_bias} is not a non-negative number"),
        );
        ok = false;
    }
    ok.then_some(model::LbPolicy::LeastRequest { choice_count, active_request_bias })
}

fn ring_hash(cfg: Option<&cl::cluster::RingHashLbConfig>, path: &str, errors: &mut Errors) -> Option<model::LbPolicy> {
    use cl::cluster::ring_hash_lb_config::HashFunction;
    let minimum_ring_size = cfg.and_then(|c| c.minimum_ring_size).map_or(DEFAULT_MIN_RING, |v| v.value);
    let maximum_ring_size = cfg.and_then(|c| c.maximum_ring_size).map_or(MAX_RING, |v| v.value);
    let mut ok = true;
    if let Some(c) = cfg {
        if HashFunction::try_from(c.hash_function) != Ok(HashFunction::XxHash) {
            errors.add(
                join(path, "hash_function"),
                format!(
                    "unsupported value {} (meshgate supports: XX_HASH)",
                    enum_name("envoy.config.cluster.v3.Cluster.RingHashLbConfig.HashFunction", c.hash_function)
                ),
            );
            ok = false;
        }
    }
    for (field, v) in [("minimum_ring_size", minimum_ring_size), ("maximum_ring_size", maximum_ring_size)] {
        // A zero-sized ring holds no host: every request would fail.
        if v == 0 || v > MAX_RING {
            errors.add(join(path, field), format!("{v} is not in 1..={MAX_RING}"));
            ok = false;
        }
    }
    if ok && minimum_ring_size > maximum_ring_size {
        errors.add(
            join(path, "minimum_ring_size"),
            format!("minimum_ring_size ({minimum_ring_size}) > maximum_ring_size ({maximum_ring_size})"),
        );
        ok = false;
    }
    ok.then_some(model::LbPolicy::RingHash { minimum_ring_size, maximum_ring_size })
}

fn maglev(cfg: Option<&cl::cluster::MaglevLbConfig>, path: &str, errors: &mut Errors) -> Option<model::LbPolicy> {
    let table_size = cfg.and_then(|c| c.table_size).map_or(DEFAULT_MAGLEV_TABLE, |v| v.value);
    if table_size > MAX_MAGLEV_TABLE || !is_prime(table_size) {
        errors.add(
            join(path, "table_size"),
            format!("{table_size} must be a prime number no larger than {MAX_MAGLEV_TABLE}"),
        );
        return None;
    }
    Some(model::LbPolicy::Maglev { table_size })
}

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        // `is_multiple_of` needs Rust 1.87; the project's minimum is 1.85.
        #[allow(clippy::manual_is_multiple_of)]
        if n % d == 0 {
            return false;
        }
        d += 1;
    }
    true
}

/// `load_assignment.policy` → (overprovisioning_factor, weighted_priority_health),
/// plus the priority range check over every locality.
pub(super) fn load_assignment_policy(
    la: Option<&ep::ClusterLoadAssignment>,
    path: &str,
    errors: &mut Errors,
) -> Option<(u32, bool)> {
    let Some(la) = la else { return Some((140, false)) };
    let mut ok = true;
    for (i, locality) in la.endpoints.iter().enumerate() {
        if locality.priority > MAX_PRIORITY {
            errors.add(
                format!("{path}.endpoints[{i}].priority"),
                format!("{} is above the maximum of {MAX_PRIORITY}", locality.priority),
            );
            ok = false;
        }
    }
    let policy = la.policy.as_ref();
    let factor = policy.and_then(|p| p.overprovisioning_factor).map_or(140, |v| v.value);
    if factor == 0 {
        errors.add(join(&join(path, "policy"), "overprovisioning_factor"), "must be greater than 0");
        ok = false;
    }
    let weighted = policy.is_some_and(|p| p.weighted_priority_health);
    ok.then_some((factor, weighted))
}

/// `cluster_type` → the aggregate's member list; `None` after reporting.
pub(super) fn custom_cluster_type(
    ct: &cl::cluster::CustomClusterType,
    path: &str,
    errors: &mut Errors,
) -> Option<Vec<String>> {
    if ct.name != AGGREGATE_NAME {
        errors.add(
            join(path, "name"),
            format!("unsupported cluster type {:?} (meshgate supports: {AGGREGATE_NAME})", ct.name),
        );
        return None;
    }
    let Some(any) = &ct.typed_config else {
        errors.add(join(path, "typed_config"), format!("required ({AGGREGATE_CONFIG})"));
        return None;
    };
    if packed_type(any) != AGGREGATE_CONFIG {
        return None; // reported by the allowlist walk
    }
    let tpath = join(path, "typed_config");
    let cfg = match agg::ClusterConfig::decode(any.value.as_slice()) {
        Ok(c) => c,
        Err(e) => {
            errors.add(tpath, format!("cannot decode: {e}"));
            return None;
        }
    };
    if cfg.clusters.is_empty() {
        errors.add(join(&tpath, "clusters"), "at least one cluster is required");
        return None;
    }
    let mut seen = HashSet::new();
    let mut ok = true;
    for (i, name) in cfg.clusters.iter().enumerate() {
        if name.is_empty() || !seen.insert(name.as_str()) {
            let what = if name.is_empty() { "empty cluster name" } else { "cluster listed twice" };
            errors.add(format!("{tpath}.clusters[{i}]"), what);
            ok = false;
        }
    }
    ok.then_some(cfg.clusters)
}

/// Cross-cluster rules, once every cluster is translated: CLUSTER_PROVIDED
/// pairs with an aggregate and nothing else, and members exist and are
/// plain clusters.
pub(super) fn check_clusters(list: &[cl::Cluster], built: &BTreeMap<String, Arc<model::Cluster>>, errors: &mut Errors) {
    let names: HashSet<&str> = list.iter().map(|c| c.name.as_str()).collect();
    for (i, c) in list.iter().enumerate() {
        let path = format!("static_resources.clusters[{i}]");
        let Some(m) = built.get(&c.name) else { continue };
        let provided = m.lb_policy == model::LbPolicy::ClusterProvided;
        let aggregate = m.discovery == model::DiscoveryType::Aggregate;
        if provided && !aggregate {
            // Envoy: "cluster provided LB specified but cluster did not provide one".
            errors.add(
                join(&path, "lb_policy"),
                "CLUSTER_PROVIDED needs a cluster type that provides a load balancer (meshgate: envoy.clusters.aggregate)",
            );
        }
        if aggregate && !provided {
            errors.add(
                join(&path, "lb_policy"),
                format!(
                    "an {AGGREGATE_NAME} cluster balances itself: lb_policy must be CLUSTER_PROVIDED, not {}",
                    enum_name("envoy.config.cluster.v3.Cluster.LbPolicy", c.lb_policy)
                ),
            );
        }
        if !aggregate {
            continue;
        }
        let mpath = format!("{path}.cluster_type.typed_config.clusters");
        for (j, member) in m.aggregate_clusters.iter().enumerate() {
            if member == &c.name {
                errors.add(format!("{mpath}[{j}]"), "an aggregate cluster cannot contain itself");
            } else if !names.contains(member.as_str()) {
                errors.add(format!("{mpath}[{j}]"), format!("unknown cluster {member:?}"));
            } else if built.get(member).is_some_and(|x| x.discovery == model::DiscoveryType::Aggregate) {
                errors.add(
                    format!("{mpath}[{j}]"),
                    format!("{member:?} is itself an aggregate cluster (meshgate does not nest aggregates)"),
                );
            }
        }
    }
}

/// `RouteAction.hash_policy`; `None` after reporting.
pub(super) fn hash_policies(
    list: &[rt::route_action::HashPolicy],
    path: &str,
    errors: &mut Errors,
) -> Option<Vec<model::HashPolicy>> {
    use rt::route_action::hash_policy::PolicySpecifier;
    let mut out = Vec::with_capacity(list.len());
    let mut ok = true;
    for (i, h) in list.iter().enumerate() {
        let hpath = format!("{path}.hash_policy[{i}]");
        let kind = match &h.policy_specifier {
            Some(PolicySpecifier::Header(hd)) => {
                let name = hd.header_name.to_ascii_lowercase();
                let npath = join(&join(&hpath, "header"), "header_name");
                if name.is_empty() {
                    errors.add(npath, "required");
                    None
                } else if name.starts_with(':') && ![":authority", ":path", ":method"].contains(&name.as_str()) {
                    errors.add(
                        npath,
                        format!("unsupported pseudo-header {name} (meshgate supports: :authority, :path, :method)"),
                    );
                    None
                } else {
                    Some(model::HashPolicyKind::Header { name })
                }
            }
            Some(PolicySpecifier::Cookie(ck)) => {
                cookie(ck, &join(&hpath, "cookie"), errors).map(model::HashPolicyKind::Cookie)
            }
            Some(PolicySpecifier::ConnectionProperties(cp)) => {
                // Envoy builds no hash method for `source_ip: false`.
                if !cp.source_ip {
                    continue;
                }
                Some(model::HashPolicyKind::SourceIp)
            }
            Some(PolicySpecifier::QueryParameter(q)) => {
                if q.name.is_empty() {
                    errors.add(join(&join(&hpath, "query_parameter"), "name"), "required");
                    None
                } else {
                    Some(model::HashPolicyKind::QueryParameter { name: q.name.clone() })
                }
            }
            // filter_state: rejected by the allowlist walk.
            Some(PolicySpecifier::FilterState(_)) => None,
            None => {
                errors.add(&hpath, "needs one of header, cookie, connection_properties, query_parameter");
                None
            }
        };
        match kind {
            Some(kind) => out.push(model::HashPolicy { kind, terminal: h.terminal }),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn cookie(
    ck: &rt::route_action::hash_policy::Cookie,
    path: &str,
    errors: &mut Errors,
) -> Option<model::CookieHashPolicy> {
    let mut ok = true;
    if ck.name.is_empty() {
        errors.add(join(path, "name"), "required");
        ok = false;
    } else if !is_token(&ck.name) {
        errors.add(join(path, "name"), format!("{:?} is not a valid cookie name", ck.name));
        ok = false;
    }
    let ttl_seconds = match &ck.ttl {
        None => None,
        // Envoy keeps whole seconds of the TTL.
        Some(d) => match duration(d, &join(path, "ttl"), errors) {
            Some(d) => Some(d.as_secs()),
            None => {
                ok = false;
                None
            }
        },
    };
    if ck.path.bytes().any(|b| b < 0x20 || b == 0x7f || b == b';') {
        errors.add(join(path, "path"), "must not contain control characters or ';'");
        ok = false;
    }
    let mut attributes = Vec::with_capacity(ck.attributes.len());
    for (i, a) in ck.attributes.iter().enumerate() {
        let apath = format!("{path}.attributes[{i}]");
        if !is_token(&a.name) {
            errors.add(join(&apath, "name"), format!("{:?} is not a valid attribute name", a.name));
            ok = false;
        }
        if a.value.bytes().any(|b| b < 0x20 || b == 0x7f || b == b';') {
            errors.add(join(&apath, "value"), "must not contain control characters or ';'");
            ok = false;
        }
        attributes.push((a.name.clone(), a.value.clone()));
    }
    ok.then(|| model::CookieHashPolicy { name: ck.name.clone(), ttl_seconds, path: ck.path.clone(), attributes })
}

/// RFC 9110 token characters (cookie and attribute names end up in a
/// `set-cookie` header the gateway writes).
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primes() {
        assert!(is_prime(65537));
        assert!(is_prime(5_000_011));
        assert!(is_prime(2));
        assert!(!is_prime(1));
        assert!(!is_prime(65536));
        assert!(!is_prime(0));
    }

    #[test]
    fn tokens() {
        assert!(is_token("session-id"));
        assert!(!is_token("a b"));
        assert!(!is_token("a;b"));
        assert!(!is_token(""));
    }
}
