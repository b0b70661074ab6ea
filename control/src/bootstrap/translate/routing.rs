//! Stage 4 for routing: `RouteMatch` (path specifiers, header and query
//! parameter matchers), `RouteAction` (cluster specifiers, rewrites, host
//! rewrites, timeouts), `RedirectAction`, and the request/response header
//! mutations of route configurations, virtual hosts, routes and weighted
//! clusters → `model`.
//!
//! It owns the checks Envoy makes when it builds a route table (its
//! protoc-gen-validate rules and the exceptions its `RouteEntryImplBase`,
//! `WeightedClusterSpecifierPlugin` and `HeaderParser` constructors throw),
//! with Envoy's wording where Envoy has one, so an operator searching an
//! error finds Envoy's explanation too.  Regexes are compiled here (RE2
//! dialect, see `crate::re2`), so an invalid one is a load error naming its
//! path, and header value formats (`%DOWNSTREAM_REMOTE_ADDRESS%`...) are
//! parsed here so the data plane only substitutes.
//!
//! Fields the allowlist walk rejects (e.g. `runtime_fraction`,
//! `path_rewrite`, `host_rewrite_path_regex`) arrive here as variants that
//! are skipped without a second error.

use std::collections::HashSet;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::route::v3 as rt;

use super::super::matchers;
use super::super::{join, Errors};
use super::timeout;
use crate::model;

/// Envoy's `DEFAULT_MAX_DIRECT_RESPONSE_BODY_SIZE_BYTES`.
const DEFAULT_MAX_DIRECT_RESPONSE_BODY: u32 = 4096;
/// protoc-gen-validate `max_items` of every `*_headers_to_add` list.
const MAX_HEADERS_TO_ADD: usize = 1000;

// ------------------------------------------------------------------ match

/// `config.route.v3.RouteMatch`; `path` names the `match` field.
pub(super) fn route_match(m: &rt::RouteMatch, path: &str, errors: &mut Errors) -> Option<model::RouteMatch> {
    use rt::route_match::PathSpecifier;
    let mut ok = true;
    let path_match = match &m.path_specifier {
        Some(PathSpecifier::Prefix(s)) => Some(model::PathMatch::Prefix(s.clone())),
        Some(PathSpecifier::Path(s)) => Some(model::PathMatch::Exact(s.clone())),
        Some(PathSpecifier::SafeRegex(r)) => {
            matchers::regex_matcher(r, &join(path, "safe_regex"), errors).map(model::PathMatch::Regex)
        }
        Some(PathSpecifier::PathSeparatedPrefix(s)) => {
            // protoc-gen-validate: `^[^?#]+[^?#/]$`.
            let valid = !s.is_empty() && !s.contains(['?', '#']) && !s.ends_with('/');
            if valid {
                Some(model::PathMatch::SeparatedPrefix(s.clone()))
            } else {
                errors.add(
                    join(path, "path_separated_prefix"),
                    format!("{s:?} must be non-empty, contain no '?' or '#' and not end with '/'"),
                );
                None
            }
        }
        Some(_) => None, // connect_matcher / path_match_policy: reported by the allowlist walk
        None => {
            errors.add(path, "needs one of prefix, path, safe_regex, path_separated_prefix");
            None
        }
    };
    let mut headers = Vec::with_capacity(m.headers.len());
    for (i, h) in m.headers.iter().enumerate() {
        match matchers::header_matcher(h, &format!("{path}.headers[{i}]"), errors) {
            Some(h) => headers.push(h),
            None => ok = false,
        }
    }
    let mut query_parameters = Vec::with_capacity(m.query_parameters.len());
    for (i, q) in m.query_parameters.iter().enumerate() {
        match query_parameter(q, &format!("{path}.query_parameters[{i}]"), errors) {
            Some(q) => query_parameters.push(q),
            None => ok = false,
        }
    }
    let path_match = path_match?;
    ok.then(|| model::RouteMatch {
        path: path_match,
        case_sensitive: m.case_sensitive.is_none_or(|v| v.value),
        headers,
        query_parameters,
    })
}

fn query_parameter(
    q: &rt::QueryParameterMatcher,
    path: &str,
    errors: &mut Errors,
) -> Option<model::QueryParameterMatch> {
    use rt::query_parameter_matcher::QueryParameterMatchSpecifier as S;
    if q.name.is_empty() || q.name.len() > 1024 {
        errors.add(join(path, "name"), "must be 1 to 1024 bytes long");
        return None;
    }
    let spec = match &q.query_parameter_match_specifier {
        Some(S::StringMatch(s)) => {
            model::QueryParameterSpec::String(matchers::string_matcher(s, &join(path, "string_match"), errors)?)
        }
        Some(S::PresentMatch(p)) => model::QueryParameterSpec::Present(*p),
        None => model::QueryParameterSpec::Present(true),
    };
    Some(model::QueryParameterMatch { name: q.name.clone(), spec })
}

// ------------------------------------------------------------------ forward

/// `config.route.v3.RouteAction`; `path` names the `route` field.
/// `hash_policy` is translated by the load-balancing module.
pub(super) fn forward(
    a: &rt::RouteAction,
    path: &str,
    clusters: &HashSet<&str>,
    hash_policy: Option<Vec<model::HashPolicy>>,
    errors: &mut Errors,
) -> Option<model::RouteAction> {
    use rt::route_action::ClusterSpecifier as C;
    let p = |f: &str| join(path, f);
    let mut ok = true;
    let cluster = match &a.cluster_specifier {
        Some(C::Cluster(c)) if c.is_empty() => {
            errors.add(p("cluster"), "required");
            None
        }
        Some(C::Cluster(c)) if !clusters.contains(c.as_str()) => {
            errors.add(p("cluster"), format!("unknown cluster {c:?}"));
            None
        }
        Some(C::Cluster(c)) => Some(model::ClusterSpecifier::Cluster(c.clone())),
        Some(C::ClusterHeader(h)) => header_name(h, &p("cluster_header"), errors).map(model::ClusterSpecifier::Header),
        Some(C::WeightedClusters(w)) => {
            weighted_clusters(w, &p("weighted_clusters"), clusters, errors).map(model::ClusterSpecifier::Weighted)
        }
        Some(_) => None, // cluster specifier plugins: reported by the allowlist walk
        None => {
            errors.add(p("cluster"), "required (one of cluster, cluster_header, weighted_clusters)");
            None
        }
    };

    use rt::route_action::ClusterNotFoundResponseCode as Nf;
    let cluster_not_found_response_code = match Nf::try_from(a.cluster_not_found_response_code) {
        Ok(Nf::ServiceUnavailable) => 503,
        Ok(Nf::NotFound) => 404,
        Ok(Nf::InternalServerError) => 500,
        Err(_) => {
            errors.add(
                p("cluster_not_found_response_code"),
                format!("unknown value {}", a.cluster_not_found_response_code),
            );
            ok = false;
            503
        }
    };

    let route_timeout = timeout(a.timeout.as_ref(), Some(Duration::from_secs(15)), &p("timeout"), errors);
    let idle_timeout = a.idle_timeout.as_ref().map(|d| timeout(Some(d), None, &p("idle_timeout"), errors));
    // Only the gRPC fields of max_stream_duration are accepted (the allowlist
    // rejects `max_stream_duration.max_stream_duration`).
    let grpc_timeout = a.max_stream_duration.as_ref().and_then(|m| {
        let mpath = p("max_stream_duration");
        let max = m.grpc_timeout_header_max.as_ref()?;
        let max = timeout(Some(max), None, &join(&mpath, "grpc_timeout_header_max"), errors);
        let offset = m
            .grpc_timeout_header_offset
            .as_ref()
            .and_then(|o| timeout(Some(o), None, &join(&mpath, "grpc_timeout_header_offset"), errors))
            .unwrap_or(Duration::ZERO);
        Some(model::GrpcTimeoutPolicy { max, offset })
    });

    let prefix_rewrite = Some(a.prefix_rewrite.clone()).filter(|s| !s.is_empty());
    if let Some(pr) = &prefix_rewrite {
        ok &= header_value_chars(pr, &p("prefix_rewrite"), errors);
    }
    let regex_rewrite = match &a.regex_rewrite {
        None => None,
        Some(r) => match regex_rewrite(r, &p("regex_rewrite"), errors) {
            Some(r) => Some(r),
            None => {
                ok = false;
                None
            }
        },
    };
    if prefix_rewrite.is_some() && a.regex_rewrite.is_some() {
        errors.add(path, "Specify only one of prefix_rewrite, regex_rewrite or path_rewrite_policy");
        ok = false;
    }

    use rt::route_action::HostRewriteSpecifier as H;
    let host_rewrite = match &a.host_rewrite_specifier {
        None => None,
        Some(H::HostRewriteLiteral(h)) if h.is_empty() => None,
        Some(H::HostRewriteLiteral(h)) => {
            ok &= header_value_chars(h, &p("host_rewrite_literal"), errors);
            Some(model::HostRewrite::Literal(h.clone()))
        }
        Some(H::AutoHostRewrite(b)) => b.value.then_some(model::HostRewrite::Auto),
        Some(H::HostRewriteHeader(h)) if h.is_empty() => None,
        Some(H::HostRewriteHeader(h)) => match header_name(h, &p("host_rewrite_header"), errors) {
            Some(h) => Some(model::HostRewrite::Header(h)),
            None => {
                ok = false;
                None
            }
        },
        Some(_) => None, // host_rewrite_path_regex / host_rewrite: reported by the allowlist walk
    };

    let cluster = cluster?;
    let hash_policy = hash_policy?;
    if !ok {
        return None;
    }
    Some(model::RouteAction::Forward(model::ForwardAction {
        cluster,
        cluster_not_found_response_code,
        timeout: route_timeout,
        idle_timeout,
        prefix_rewrite,
        regex_rewrite,
        host_rewrite,
        append_x_forwarded_host: a.append_x_forwarded_host,
        hash_policy,
        request_mirror_policies: Vec::new(),
        rate_limits: Vec::new(),
        upgrade_configs: super::upgrade::route_upgrade_configs(
            &a.upgrade_configs,
            &join(path, "upgrade_configs"),
            errors,
        ),
        retry: Default::default(), // filled in by translate::retry
        grpc_timeout,
    }))
}

/// `config.route.v3.WeightedCluster`, with Envoy's checks: each entry names
/// exactly one of a cluster or a header and has a weight, and the weights
/// add up to something in `1..=u32::MAX`.
fn weighted_clusters(
    w: &rt::WeightedCluster,
    path: &str,
    clusters: &HashSet<&str>,
    errors: &mut Errors,
) -> Option<model::WeightedClusters> {
    let mut ok = true;
    if w.clusters.is_empty() {
        errors.add(join(path, "clusters"), "at least one cluster is required");
        return None;
    }
    let mut out = Vec::with_capacity(w.clusters.len());
    let mut total: u64 = 0;
    for (i, c) in w.clusters.iter().enumerate() {
        let cpath = format!("{path}.clusters[{i}]");
        let target = match (c.name.is_empty(), c.cluster_header.is_empty()) {
            (true, true) => {
                errors.add(&cpath, "At least one of name or cluster_header need to be specified");
                None
            }
            (false, false) => {
                errors.add(&cpath, "Only one of name or cluster_header can be specified");
                None
            }
            (false, true) if !clusters.contains(c.name.as_str()) => {
                errors.add(join(&cpath, "name"), format!("unknown weighted cluster {:?}", c.name));
                None
            }
            (false, true) => Some(model::WeightedTarget::Name(c.name.clone())),
            (true, false) => header_name(&c.cluster_header, &join(&cpath, "cluster_header"), errors)
                .map(model::WeightedTarget::Header),
        };
        let weight = match c.weight {
            Some(v) => v.value,
            None => {
                errors.add(join(&cpath, "weight"), "required");
                ok = false;
                0
            }
        };
        total += u64::from(weight);
        let request_headers =
            header_mutations(&c.request_headers_to_add, &c.request_headers_to_remove, &cpath, "request", errors);
        let response_headers =
            header_mutations(&c.response_headers_to_add, &c.response_headers_to_remove, &cpath, "response", errors);
        let host_rewrite_literal = match &c.host_rewrite_specifier {
            Some(rt::weighted_cluster::cluster_weight::HostRewriteSpecifier::HostRewriteLiteral(h))
                if !h.is_empty() =>
            {
                ok &= header_value_chars(h, &join(&cpath, "host_rewrite_literal"), errors);
                Some(h.clone())
            }
            _ => None,
        };
        match (target, request_headers, response_headers) {
            (Some(target), Some(request_headers), Some(response_headers)) => out.push(model::ClusterWeight {
                target,
                weight,
                request_headers,
                response_headers,
                host_rewrite_literal,
            }),
            _ => ok = false,
        }
    }
    if total > u64::from(u32::MAX) {
        errors.add(join(path, "clusters"), format!("The sum of weights of all weighted clusters exceeds {}", u32::MAX));
        return None;
    }
    if total == 0 && ok {
        errors.add(join(path, "clusters"), "Sum of weights in the weighted_cluster must be greater than 0.");
        return None;
    }
    // Deprecated: "the sum of all cluster weights must equal this value, if
    // this is greater than 0"; the sum is what is used either way.
    #[allow(deprecated)]
    if let Some(t) = w.total_weight.filter(|t| t.value > 0) {
        if u64::from(t.value) != total {
            errors.add(
                join(path, "total_weight"),
                format!("Sum of weights in the weighted_cluster should add up to {} (they add up to {total})", t.value),
            );
            ok = false;
        }
    }
    use rt::weighted_cluster::RandomValueSpecifier as R;
    let random_value_header = match &w.random_value_specifier {
        Some(R::HeaderName(h)) if !h.is_empty() => match header_name(h, &join(path, "header_name"), errors) {
            Some(h) => Some(h),
            None => {
                ok = false;
                None
            }
        },
        _ => None, // use_hash_policy: reported by the allowlist walk
    };
    ok.then_some(model::WeightedClusters { clusters: out, total_weight: total, random_value_header })
}

fn regex_rewrite(
    r: &envoy_types::pb::envoy::r#type::matcher::v3::RegexMatchAndSubstitute,
    path: &str,
    errors: &mut Errors,
) -> Option<model::RegexRewrite> {
    let Some(pattern) = &r.pattern else {
        errors.add(join(path, "pattern"), "required");
        return None;
    };
    if pattern.regex.is_empty() {
        errors.add(join(&join(path, "pattern"), "regex"), "must not be empty");
        return None;
    }
    match model::RegexRewrite::new(&pattern.regex, &r.substitution) {
        Ok(r) => Some(r),
        Err(e) => {
            errors.add(path, format!("invalid regex_rewrite: {e}"));
            None
        }
    }
}

// ------------------------------------------------------------------ redirect

/// `config.route.v3.RedirectAction`; `path` names the `redirect` field.
pub(super) fn redirect(r: &rt::RedirectAction, path: &str, errors: &mut Errors) -> Option<model::RouteAction> {
    use rt::redirect_action::{PathRewriteSpecifier as P, RedirectResponseCode as Code, SchemeRewriteSpecifier as S};
    let p = |f: &str| join(path, f);
    let mut ok = true;
    let scheme = match &r.scheme_rewrite_specifier {
        Some(S::HttpsRedirect(true)) => Some("https".to_string()),
        Some(S::SchemeRedirect(s)) if !s.is_empty() => {
            let valid = s.starts_with(|c: char| c.is_ascii_alphabetic())
                && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
            if !valid {
                errors.add(p("scheme_redirect"), format!("{s:?} is not a URI scheme"));
                ok = false;
            }
            Some(s.clone())
        }
        _ => None,
    };
    let host = Some(r.host_redirect.clone()).filter(|h| !h.is_empty());
    if let Some(h) = &host {
        ok &= header_value_chars(h, &p("host_redirect"), errors);
    }
    let port = match r.port_redirect {
        0 => None,
        n if n <= u32::from(u16::MAX) => Some(n as u16),
        n => {
            errors.add(p("port_redirect"), format!("{n} is not a TCP port"));
            ok = false;
            None
        }
    };
    let redirect_path = match &r.path_rewrite_specifier {
        None => model::RedirectPath::Keep,
        Some(P::PathRedirect(s)) if s.is_empty() => model::RedirectPath::Keep,
        Some(P::PathRedirect(s)) => {
            ok &= header_value_chars(s, &p("path_redirect"), errors);
            model::RedirectPath::Path(s.clone())
        }
        Some(P::PrefixRewrite(s)) if s.is_empty() => model::RedirectPath::Keep,
        Some(P::PrefixRewrite(s)) => {
            ok &= header_value_chars(s, &p("prefix_rewrite"), errors);
            model::RedirectPath::Prefix(s.clone())
        }
        Some(P::RegexRewrite(rr)) => match regex_rewrite(rr, &p("regex_rewrite"), errors) {
            Some(rr) => model::RedirectPath::Regex(rr),
            None => {
                ok = false;
                model::RedirectPath::Keep
            }
        },
        Some(_) => model::RedirectPath::Keep, // path_rewrite: reported by the allowlist walk
    };
    let response_code = match Code::try_from(r.response_code) {
        Ok(Code::MovedPermanently) => 301,
        Ok(Code::Found) => 302,
        Ok(Code::SeeOther) => 303,
        Ok(Code::TemporaryRedirect) => 307,
        Ok(Code::PermanentRedirect) => 308,
        Err(_) => {
            errors.add(p("response_code"), format!("unknown value {}", r.response_code));
            ok = false;
            301
        }
    };
    ok.then(|| {
        model::RouteAction::Redirect(model::Redirect {
            scheme,
            host,
            port,
            path: redirect_path,
            response_code,
            strip_query: r.strip_query,
        })
    })
}

/// `RouteConfiguration.max_direct_response_body_size_bytes` (default 4 KiB,
/// as Envoy): every direct response body of the table must fit.
pub(super) fn check_direct_response_bodies(
    rc: &rt::RouteConfiguration,
    routes: &model::RouteConfig,
    path: &str,
    errors: &mut Errors,
) -> bool {
    let max = rc.max_direct_response_body_size_bytes.map_or(DEFAULT_MAX_DIRECT_RESPONSE_BODY, |v| v.value);
    let mut ok = true;
    for (i, vh) in routes.virtual_hosts.iter().enumerate() {
        for (j, r) in vh.routes.iter().enumerate() {
            if let model::RouteAction::DirectResponse { body: Some(body), .. } = &r.action {
                if body.len() > max as usize {
                    errors.add(
                        format!("{path}.virtual_hosts[{i}].routes[{j}].direct_response.body"),
                        format!(
                            "response body size is {} bytes; maximum is {max} (max_direct_response_body_size_bytes)",
                            body.len()
                        ),
                    );
                    ok = false;
                }
            }
        }
    }
    ok
}

// ------------------------------------------------------------------ header mutations

/// `<kind>_headers_to_add` / `<kind>_headers_to_remove` of the message at
/// `path` (`kind` is `request` or `response`).
pub(super) fn header_mutations(
    add: &[core::HeaderValueOption],
    remove: &[String],
    path: &str,
    kind: &str,
    errors: &mut Errors,
) -> Option<model::HeaderMutations> {
    let add_field = join(path, &format!("{kind}_headers_to_add"));
    let remove_field = join(path, &format!("{kind}_headers_to_remove"));
    let mut ok = true;
    if add.len() > MAX_HEADERS_TO_ADD {
        errors.add(&add_field, format!("at most {MAX_HEADERS_TO_ADD} entries"));
        ok = false;
    }
    let mut out = model::HeaderMutations::default();
    for (i, option) in add.iter().enumerate() {
        match header_to_add(option, &format!("{add_field}[{i}]"), errors) {
            Some(h) => out.add.push(h),
            None => ok = false,
        }
    }
    for (i, name) in remove.iter().enumerate() {
        let npath = format!("{remove_field}[{i}]");
        let Some(name) = header_name(name, &npath, errors) else {
            ok = false;
            continue;
        };
        if name.starts_with(':') || name == "host" {
            errors.add(npath, ":-prefixed or host headers may not be removed");
            ok = false;
            continue;
        }
        out.remove.push(name);
    }
    ok.then_some(out)
}

/// `config.core.v3.HeaderValueOption`.
#[allow(deprecated)]
pub(super) fn header_to_add(
    o: &core::HeaderValueOption,
    path: &str,
    errors: &mut Errors,
) -> Option<model::HeaderToAdd> {
    let Some(h) = &o.header else {
        errors.add(join(path, "header"), "required");
        return None;
    };
    let hpath = join(path, "header");
    let name = header_name(&h.key, &join(&hpath, "key"), errors)?;
    if name.starts_with(':') || name == "host" {
        errors.add(join(&hpath, "key"), ":-prefixed or host headers may not be modified");
        return None;
    }
    if h.value.len() > 16384 {
        errors.add(join(&hpath, "value"), "at most 16384 bytes");
        return None;
    }
    if !header_value_chars(&h.value, &join(&hpath, "value"), errors) {
        return None;
    }
    let value = match header_format(&h.value) {
        Ok(v) => v,
        Err(e) => {
            errors.add(join(&hpath, "value"), e);
            return None;
        }
    };
    use core::header_value_option::HeaderAppendAction as A;
    let action = match (o.append, A::try_from(o.append_action)) {
        (Some(_), Ok(a)) if a != A::AppendIfExistsOrAdd => {
            errors.add(path, "Both append and append_action are set and it's not allowed");
            return None;
        }
        (Some(append), _) if append.value => model::AppendAction::AppendIfExistsOrAdd,
        (Some(_), _) => model::AppendAction::OverwriteIfExistsOrAdd,
        (None, Ok(A::AppendIfExistsOrAdd)) => model::AppendAction::AppendIfExistsOrAdd,
        (None, Ok(A::AddIfAbsent)) => model::AppendAction::AddIfAbsent,
        (None, Ok(A::OverwriteIfExistsOrAdd)) => model::AppendAction::OverwriteIfExistsOrAdd,
        (None, Ok(A::OverwriteIfExists)) => model::AppendAction::OverwriteIfExists,
        (None, Err(_)) => {
            errors.add(join(path, "append_action"), format!("unknown value {}", o.append_action));
            return None;
        }
    };
    Some(model::HeaderToAdd { name, value, action, keep_empty_value: o.keep_empty_value })
}

/// A header name as Envoy's `HTTP_HEADER_NAME` (non-strict) accepts it,
/// lower-cased.
fn header_name(name: &str, path: &str, errors: &mut Errors) -> Option<String> {
    let body = name.strip_prefix(':').unwrap_or(name);
    let token = !body.is_empty() && body.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !token {
        errors.add(path, format!("{name:?} is not a valid HTTP header name"));
        return None;
    }
    Some(name.to_ascii_lowercase())
}

/// `HTTP_HEADER_VALUE` (non-strict): no NUL, CR or LF.
fn header_value_chars(value: &str, path: &str, errors: &mut Errors) -> bool {
    if value.bytes().any(|b| matches!(b, 0 | b'\r' | b'\n')) {
        errors.add(path, "must not contain NUL, CR or LF");
        return false;
    }
    true
}

/// The substitution commands meshgate implements, for error messages.
const SUPPORTED_COMMANDS: &str = "DOWNSTREAM_REMOTE_ADDRESS, DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT, \
DOWNSTREAM_REMOTE_PORT, DOWNSTREAM_DIRECT_REMOTE_ADDRESS, DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT, \
DOWNSTREAM_DIRECT_REMOTE_PORT, DOWNSTREAM_LOCAL_ADDRESS, DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT, \
DOWNSTREAM_LOCAL_PORT, UPSTREAM_REMOTE_ADDRESS, UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT, UPSTREAM_REMOTE_PORT, \
HOSTNAME, PROTOCOL, REQ(...), RESP(...)";

/// Parses a header value in Envoy's substitution format: `%%` is a `%`,
/// `%COMMAND%`, `%COMMAND(args)%` and `%COMMAND(args):N%` are variables.
pub(crate) fn header_format(value: &str) -> Result<model::HeaderFormat, String> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let bytes = value.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let Some(rel) = value[i..].find('%') else {
            literal.push_str(&value[i..]);
            break;
        };
        literal.push_str(&value[i..i + rel]);
        i += rel;
        if bytes.get(i + 1) == Some(&b'%') {
            literal.push('%');
            i += 2;
            continue;
        }
        let (command, consumed) = parse_command(&value[i..])
            .ok_or_else(|| format!("Incorrect configuration: {value}. Couldn't find valid command at position {i}"))?;
        i += consumed;
        match command_to_part(&command)? {
            model::FormatPart::Literal(text) => literal.push_str(&text),
            var => {
                if !literal.is_empty() {
                    parts.push(model::FormatPart::Literal(std::mem::take(&mut literal)));
                }
                parts.push(var);
            }
        }
    }
    if !literal.is_empty() {
        parts.push(model::FormatPart::Literal(literal));
    }
    Ok(model::HeaderFormat { parts })
}

struct Command {
    name: String,
    arg: Option<String>,
    max_len: Option<usize>,
}

/// `%NAME(arg):N%` at the start of `s` (which begins with `%`): the command
/// and the bytes it spans.
fn parse_command(s: &str) -> Option<(Command, usize)> {
    let b = s.as_bytes();
    let mut i = 1;
    while i < b.len() && (b[i].is_ascii_uppercase() || b[i].is_ascii_digit() || b[i] == b'_') {
        i += 1;
    }
    if i == 1 {
        return None;
    }
    let name = s[1..i].to_string();
    let mut arg = None;
    if b.get(i) == Some(&b'(') {
        let close = s[i..].find(')')? + i;
        arg = Some(s[i + 1..close].to_string());
        i = close + 1;
    }
    let mut max_len = None;
    if b.get(i) == Some(&b':') {
        let start = i + 1;
        let mut j = start;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        if j == start {
            return None;
        }
        max_len = Some(s[start..j].parse().ok()?);
        i = j;
    }
    if b.get(i) != Some(&b'%') {
        return None;
    }
    Some((Command { name, arg, max_len }, i + 1))
}

fn command_to_part(c: &Command) -> Result<model::FormatPart, String> {
    use model::FormatVar as V;
    let plain = |v: V| -> Result<model::FormatPart, String> {
        if c.arg.is_some() || c.max_len.is_some() {
            return Err(format!("%{}% takes no arguments or length limit", c.name));
        }
        Ok(model::FormatPart::Var(v))
    };
    let headers = |arg: &Option<String>| -> Result<Vec<String>, String> {
        let arg =
            arg.as_deref().filter(|a| !a.is_empty()).ok_or_else(|| format!("%{}(...)% needs a header name", c.name))?;
        let names: Vec<String> = arg.split('?').map(|n| n.trim().to_ascii_lowercase()).collect();
        if names.len() > 2 || names.iter().any(|n| n.is_empty()) {
            return Err(format!("%{}({arg})%: expected a header name, or two separated by '?'", c.name));
        }
        Ok(names)
    };
    match c.name.as_str() {
        "DOWNSTREAM_REMOTE_ADDRESS" => plain(V::DownstreamRemoteAddress),
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => plain(V::DownstreamRemoteAddressWithoutPort),
        "DOWNSTREAM_REMOTE_PORT" => plain(V::DownstreamRemotePort),
        "DOWNSTREAM_DIRECT_REMOTE_ADDRESS" => plain(V::DownstreamDirectRemoteAddress),
        "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT" => plain(V::DownstreamDirectRemoteAddressWithoutPort),
        "DOWNSTREAM_DIRECT_REMOTE_PORT" => plain(V::DownstreamDirectRemotePort),
        "DOWNSTREAM_LOCAL_ADDRESS" => plain(V::DownstreamLocalAddress),
        "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT" => plain(V::DownstreamLocalAddressWithoutPort),
        "DOWNSTREAM_LOCAL_PORT" => plain(V::DownstreamLocalPort),
        "UPSTREAM_REMOTE_ADDRESS" => plain(V::UpstreamRemoteAddress),
        "UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => plain(V::UpstreamRemoteAddressWithoutPort),
        "UPSTREAM_REMOTE_PORT" => plain(V::UpstreamRemotePort),
        "PROTOCOL" => plain(V::Protocol),
        // Fixed for the life of the process: resolved once, here.
        "HOSTNAME" => {
            if c.arg.is_some() || c.max_len.is_some() {
                return Err("%HOSTNAME% takes no arguments or length limit".to_string());
            }
            Ok(model::FormatPart::Literal(hostname()))
        }
        "REQ" => Ok(model::FormatPart::Var(V::RequestHeader { names: headers(&c.arg)?, max_len: c.max_len })),
        "RESP" => Ok(model::FormatPart::Var(V::ResponseHeader { names: headers(&c.arg)?, max_len: c.max_len })),
        other => Err(format!("unsupported substitution %{other}% (meshgate supports: {SUPPORTED_COMMANDS})")),
    }
}

/// The system host name (`%HOSTNAME%`), as `gethostname` reports it.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::{FormatPart as P, FormatVar as V};

    #[test]
    fn formats() {
        assert_eq!(header_format("plain").unwrap().parts, vec![P::Literal("plain".into())]);
        assert_eq!(header_format("100%%").unwrap().parts, vec![P::Literal("100%".into())]);
        assert_eq!(header_format("").unwrap().parts, vec![]);
        assert_eq!(
            header_format("ip=%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%;").unwrap().parts,
            vec![P::Literal("ip=".into()), P::Var(V::DownstreamRemoteAddressWithoutPort), P::Literal(";".into())]
        );
        assert_eq!(
            header_format("%REQ(X-A?x-b):5%").unwrap().parts,
            vec![P::Var(V::RequestHeader { names: vec!["x-a".into(), "x-b".into()], max_len: Some(5) })]
        );
        assert!(matches!(&header_format("%HOSTNAME%").unwrap().parts[..], [P::Literal(_)] | []));
        assert!(header_format("50%").is_err());
        assert!(header_format("%NOPE%").unwrap_err().contains("unsupported substitution %NOPE%"));
        assert!(header_format("%REQ()%").is_err());
        assert!(header_format("%REQ(a?b?c)%").is_err());
        assert!(header_format("%PROTOCOL:3%").is_err());
        assert!(header_format("%START_TIME%").is_err());
    }
}
