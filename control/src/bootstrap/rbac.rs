//! Stage 4 for RBAC: `envoy.filters.http.rbac` (and its `RBACPerRoute`)
//! and `envoy.filters.network.rbac` → `model`.
//!
//! It owns the checks Envoy makes when it builds its RBAC engines: at least
//! one permission and one principal per policy, `any: true`, non-empty sets,
//! port bounds, CIDR validity, and — for the network filter — no header
//! rules, since a plain connection has no headers.  Policies are sorted by
//! name here because Envoy evaluates them in that order.  Fields outside
//! meshgate's subset (`requested_server_name`, CEL `condition`, the matcher API...)
//! were already reported by the allowlist walk; this module skips them
//! quietly, so each problem is reported once.

use std::collections::HashMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::listener::v3 as lis;
use envoy_types::pb::envoy::config::rbac::v3 as rbac;
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3 as http_rbac;
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3 as net_rbac;
use envoy_types::pb::google::protobuf as pb;
use prost::Message;

use super::matchers::{cidr_range, header_matcher, path_matcher};
use super::supported::{HCM, NETWORK_RBAC, RBAC_PER_ROUTE};
use super::{join, type_name, Errors};
use crate::model;

/// Where a policy will be evaluated: a connection has no request headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    Http,
    Network,
}

/// One `envoy.filters.http.rbac` entry of `http_filters` (`name` is the
/// entry's name, the key its per-route configs are looked up by).
pub(crate) fn http_filter(name: &str, any: &pb::Any, path: &str, errors: &mut Errors) -> Option<model::RbacFilter> {
    let f = match http_rbac::Rbac::decode(any.value.as_slice()) {
        Ok(f) => f,
        Err(e) => {
            errors.add(path, format!("cannot decode: {e}"));
            return None;
        }
    };
    let (rules, shadow_rules) = rules_pair(f.rules.as_ref(), f.shadow_rules.as_ref(), path, Context::Http, errors)?;
    Some(model::RbacFilter {
        name: name.to_string(),
        rules,
        shadow_rules,
        rules_stat_prefix: f.rules_stat_prefix,
        shadow_rules_stat_prefix: f.shadow_rules_stat_prefix,
    })
}

/// A `typed_per_filter_config` map (route, virtual host or route
/// configuration).  Values of types the allowlist refused are left out.
pub(crate) fn per_filter_configs(
    map: &HashMap<String, pb::Any>,
    path: &str,
    errors: &mut Errors,
) -> Option<model::PerFilterConfigs> {
    let mut out = model::PerFilterConfigs::new();
    let mut ok = true;
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    for (key, any) in entries {
        let epath = format!("{path}[{key:?}]");
        if type_name(&any.type_url) != RBAC_PER_ROUTE {
            // The governance filters' overrides (others: reported by the allowlist walk).
            match super::translate::filters::per_filter_config(any, &epath, errors) {
                Some(Some(config)) => {
                    out.insert(key.clone(), config);
                }
                Some(None) => {}
                None => ok = false,
            }
            continue;
        }
        let per_route = match http_rbac::RbacPerRoute::decode(any.value.as_slice()) {
            Ok(p) => p,
            Err(e) => {
                errors.add(&epath, format!("cannot decode: {e}"));
                ok = false;
                continue;
            }
        };
        // No `rbac` at all disables RBAC on the route (Envoy's documented
        // meaning), shadow rules included.
        let (rules, shadow_rules) = match &per_route.rbac {
            None => (None, None),
            Some(f) => match rules_pair(
                f.rules.as_ref(),
                f.shadow_rules.as_ref(),
                &join(&epath, "rbac"),
                Context::Http,
                errors,
            ) {
                Some(pair) => pair,
                None => {
                    ok = false;
                    continue;
                }
            },
        };
        out.insert(key.clone(), model::PerFilterConfig::Rbac(Arc::new(model::RbacPerRoute { rules, shadow_rules })));
    }
    ok.then_some(out)
}

/// The `envoy.filters.network.rbac` filters of a listener's (first) filter
/// chain, in order.  They must precede the terminal HTTP connection manager.
pub(crate) fn network_filters(
    chains: &[lis::FilterChain],
    listener_path: &str,
    errors: &mut Errors,
) -> Option<Vec<Arc<model::NetworkRbac>>> {
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
        if ty == HCM || ty == super::supported::TCP_PROXY {
            seen_terminal = true;
            continue;
        }
        if ty != NETWORK_RBAC {
            continue;
        }
        let fpath = format!("{path}[{i}]");
        if seen_terminal {
            errors.add(
                &fpath,
                "envoy.filters.network.rbac must come before the terminal filter (http_connection_manager or tcp_proxy)",
            );
            ok = false;
            continue;
        }
        match network_filter(any, &join(&fpath, "typed_config"), errors) {
            Some(n) => out.push(Arc::new(n)),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn network_filter(any: &pb::Any, path: &str, errors: &mut Errors) -> Option<model::NetworkRbac> {
    let f = match net_rbac::Rbac::decode(any.value.as_slice()) {
        Ok(f) => f,
        Err(e) => {
            errors.add(path, format!("cannot decode: {e}"));
            return None;
        }
    };
    let mut ok = true;
    if f.stat_prefix.is_empty() {
        errors.add(join(path, "stat_prefix"), "required");
        ok = false;
    }
    use net_rbac::rbac::EnforcementType;
    match EnforcementType::try_from(f.enforcement_type) {
        Ok(EnforcementType::OneTimeOnFirstByte) => {}
        Ok(EnforcementType::Continuous) => {
            errors.add(
                join(path, "enforcement_type"),
                "CONTINUOUS is not supported (meshgate supports: ONE_TIME_ON_FIRST_BYTE); it only differs for protocols that emit dynamic metadata",
            );
            ok = false;
        }
        Err(_) => {
            errors.add(join(path, "enforcement_type"), format!("unknown value {}", f.enforcement_type));
            ok = false;
        }
    }
    let delay_deny = match &f.delay_deny {
        None => None,
        Some(d) if d.seconds < 0 || d.nanos < 0 => {
            errors.add(join(path, "delay_deny"), "must not be negative");
            ok = false;
            None
        }
        Some(d) => Some(std::time::Duration::new(d.seconds as u64, d.nanos as u32)).filter(|d| !d.is_zero()),
    };
    let (rules, shadow_rules) = rules_pair(f.rules.as_ref(), f.shadow_rules.as_ref(), path, Context::Network, errors)?;
    ok.then(|| model::NetworkRbac {
        stat_prefix: f.stat_prefix,
        rules,
        shadow_rules,
        shadow_rules_stat_prefix: f.shadow_rules_stat_prefix,
        delay_deny,
    })
}

type RulesPair = (Option<model::RbacRules>, Option<model::RbacRules>);

/// `rules` and `shadow_rules` of one filter; `None` if either is invalid.
fn rules_pair(
    rules: Option<&rbac::Rbac>,
    shadow: Option<&rbac::Rbac>,
    path: &str,
    ctx: Context,
    errors: &mut Errors,
) -> Option<RulesPair> {
    // Both are translated before giving up, so one run reports everything.
    let enforced = rules.map(|r| rbac_rules(r, &join(path, "rules"), ctx, errors));
    let shadowed = shadow.map(|r| rbac_rules(r, &join(path, "shadow_rules"), ctx, errors));
    match (enforced, shadowed) {
        (Some(None), _) | (_, Some(None)) => None,
        (e, s) => Some((e.flatten(), s.flatten())),
    }
}

/// `envoy.config.rbac.v3.RBAC`.
fn rbac_rules(r: &rbac::Rbac, path: &str, ctx: Context, errors: &mut Errors) -> Option<model::RbacRules> {
    use rbac::rbac::Action;
    let mut ok = true;
    let action = match Action::try_from(r.action) {
        Ok(Action::Allow) => model::RbacAction::Allow,
        Ok(Action::Deny) => model::RbacAction::Deny,
        Ok(Action::Log) => model::RbacAction::Log,
        Err(_) => {
            errors.add(join(path, "action"), format!("unknown value {}", r.action));
            ok = false;
            model::RbacAction::Allow
        }
    };
    let mut names: Vec<&String> = r.policies.keys().collect();
    names.sort();
    let mut policies = Vec::with_capacity(names.len());
    for name in names {
        let ppath = format!("{}[{name:?}]", join(path, "policies"));
        match policy(name, &r.policies[name], &ppath, ctx, errors) {
            Some(p) => policies.push(p),
            None => ok = false,
        }
    }
    ok.then_some(model::RbacRules { action, policies })
}

fn policy(name: &str, p: &rbac::Policy, path: &str, ctx: Context, errors: &mut Errors) -> Option<model::RbacPolicy> {
    let mut ok = true;
    if p.permissions.is_empty() {
        errors.add(
            join(path, "permissions"),
            "at least one permission is required (use `any: true` to match every request)",
        );
        ok = false;
    }
    if p.principals.is_empty() {
        errors.add(
            join(path, "principals"),
            "at least one principal is required (use `any: true` to match every downstream)",
        );
        ok = false;
    }
    let mut permissions = Vec::new();
    for (i, perm) in p.permissions.iter().enumerate() {
        match permission(perm, &format!("{path}.permissions[{i}]"), ctx, errors) {
            Some(x) => permissions.push(x),
            None => ok = false,
        }
    }
    let mut principals = Vec::new();
    for (i, prin) in p.principals.iter().enumerate() {
        match principal(prin, &format!("{path}.principals[{i}]"), ctx, errors) {
            Some(x) => principals.push(x),
            None => ok = false,
        }
    }
    ok.then(|| model::RbacPolicy { name: name.to_string(), permissions, principals })
}

fn no_headers_on_connections(ctx: Context, path: &str, errors: &mut Errors) -> Option<()> {
    if ctx == Context::Network {
        errors.add(
            path,
            "header rules are not supported by the network RBAC filter (a connection has no headers; Envoy rejects them too)",
        );
        return None;
    }
    Some(())
}

fn must_be_true(any: bool, path: &str, errors: &mut Errors) -> Option<()> {
    if !any {
        errors.add(path, "must be true when set");
        return None;
    }
    Some(())
}

/// Translates every member of an `and`/`or` set; an empty set is an error.
fn set<T, U>(
    items: &[T],
    path: &str,
    errors: &mut Errors,
    mut each: impl FnMut(&T, &str, &mut Errors) -> Option<U>,
) -> Option<Vec<U>> {
    if items.is_empty() {
        errors.add(path, "at least one entry is required");
        return None;
    }
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        match each(item, &format!("{path}[{i}]"), errors) {
            Some(x) => out.push(x),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn permission(p: &rbac::Permission, path: &str, ctx: Context, errors: &mut Errors) -> Option<model::RbacPermission> {
    use model::RbacPermission as P;
    use rbac::permission::Rule;
    let recurse = |p: &rbac::Permission, path: &str, errors: &mut Errors| permission(p, path, ctx, errors);
    Some(match &p.rule {
        Some(Rule::AndRules(s)) => P::And(set(&s.rules, &join(path, "and_rules.rules"), errors, recurse)?),
        Some(Rule::OrRules(s)) => P::Or(set(&s.rules, &join(path, "or_rules.rules"), errors, recurse)?),
        Some(Rule::Any(a)) => {
            must_be_true(*a, &join(path, "any"), errors)?;
            P::Any
        }
        Some(Rule::Header(h)) => {
            let hpath = join(path, "header");
            no_headers_on_connections(ctx, &hpath, errors)?;
            P::Header(header_matcher(h, &hpath, errors)?)
        }
        Some(Rule::UrlPath(m)) => P::UrlPath(path_matcher(m, &join(path, "url_path"), errors)?),
        Some(Rule::DestinationIp(c)) => P::DestinationIp(cidr_range(c, &join(path, "destination_ip"), errors)?),
        Some(Rule::DestinationPort(port)) => match u16::try_from(*port) {
            Ok(port) => P::DestinationPort(port),
            Err(_) => {
                errors.add(join(path, "destination_port"), "must be at most 65535");
                return None;
            }
        },
        Some(Rule::DestinationPortRange(r)) => {
            let rpath = join(path, "destination_port_range");
            // Envoy's PortRangeMatcher checks, with its wording.
            if !(0..=65536).contains(&r.start) {
                errors.add(join(&rpath, "start"), format!("range start {} is out of bounds", r.start));
                return None;
            }
            if !(0..=65536).contains(&r.end) {
                errors.add(join(&rpath, "end"), format!("range end {} is out of bounds", r.end));
                return None;
            }
            if r.start >= r.end {
                errors
                    .add(rpath, format!("range start {} cannot be greater or equal than range end {}", r.start, r.end));
                return None;
            }
            P::DestinationPortRange { start: r.start as u32, end: r.end as u32 }
        }
        Some(Rule::NotRule(inner)) => P::Not(Box::new(permission(inner, &join(path, "not_rule"), ctx, errors)?)),
        Some(_) => return None, // reported by the allowlist walk
        None => {
            errors.add(path, "needs one rule (any, header, url_path, destination_ip, destination_port, destination_port_range, and_rules, or_rules, not_rule)");
            return None;
        }
    })
}

#[allow(deprecated)]
fn principal(p: &rbac::Principal, path: &str, ctx: Context, errors: &mut Errors) -> Option<model::RbacPrincipal> {
    use model::RbacPrincipal as P;
    use rbac::principal::Identifier;
    let recurse = |p: &rbac::Principal, path: &str, errors: &mut Errors| principal(p, path, ctx, errors);
    Some(match &p.identifier {
        Some(Identifier::AndIds(s)) => P::And(set(&s.ids, &join(path, "and_ids.ids"), errors, recurse)?),
        Some(Identifier::OrIds(s)) => P::Or(set(&s.ids, &join(path, "or_ids.ids"), errors, recurse)?),
        Some(Identifier::Any(a)) => {
            must_be_true(*a, &join(path, "any"), errors)?;
            P::Any
        }
        Some(Identifier::SourceIp(c)) => P::SourceIp(cidr_range(c, &join(path, "source_ip"), errors)?),
        Some(Identifier::DirectRemoteIp(c)) => {
            P::DirectRemoteIp(cidr_range(c, &join(path, "direct_remote_ip"), errors)?)
        }
        Some(Identifier::RemoteIp(c)) => P::RemoteIp(cidr_range(c, &join(path, "remote_ip"), errors)?),
        Some(Identifier::Header(h)) => {
            let hpath = join(path, "header");
            no_headers_on_connections(ctx, &hpath, errors)?;
            P::Header(header_matcher(h, &hpath, errors)?)
        }
        Some(Identifier::UrlPath(m)) => P::UrlPath(path_matcher(m, &join(path, "url_path"), errors)?),
        Some(Identifier::NotId(inner)) => P::Not(Box::new(principal(inner, &join(path, "not_id"), ctx, errors)?)),
        Some(Identifier::Authenticated(a)) => P::Authenticated(match &a.principal_name {
            Some(m) => Some(super::matchers::string_matcher(m, &join(path, "authenticated.principal_name"), errors)?),
            None => None,
        }),
        Some(_) => return None, // reported by the allowlist walk
        None => {
            errors.add(path, "needs one identifier (any, direct_remote_ip, remote_ip, source_ip, header, url_path, and_ids, or_ids, not_id)");
            return None;
        }
    })
}
