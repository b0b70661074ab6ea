//! Stage 4: typed Envoy structs → `model`, with defaults and cross checks.
//!
//! Runs after the allowlist walk even when that found errors, so it must not
//! repeat them: where a field the walk rejects stands in for a required one
//! (e.g. `rds` instead of `route_config`), translation skips quietly.  Each
//! function returns `None` (or a partial value) after reporting, and the
//! caller keeps going so later sections still get checked.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::bootstrap::v3 as bs;
use envoy_types::pb::envoy::config::cluster::v3 as cl;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::endpoint::v3 as ep;
use envoy_types::pb::envoy::config::listener::v3 as lis;
use envoy_types::pb::envoy::config::route::v3 as rt;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::extensions::upstreams::http::v3 as up;
use envoy_types::pb::google::protobuf as pb;
use prost::Message;

use super::supported::{HCM, HTTP_FAULT, HTTP_LOCAL_RATELIMIT, HTTP_RBAC, ROUTER, UPSTREAM_HTTP_OPTIONS};
use super::{descriptor_pool, join, type_name, Errors};
use crate::model;

mod cluster_governance;
pub(super) mod filters;
mod lb;
mod retry;
mod routing;
pub(crate) mod sds;
mod tcp_proxy;
mod tls;
mod upstream_http;
mod upstream_tls;
pub use tls::CIPHER_SUITES as TLS12_CIPHER_SUITES;
mod upgrade;

const KIB: u32 = 1024;
const MIB: u32 = 1024 * 1024;
const HOUR: Duration = Duration::from_secs(3600);
/// Meshgate's request-line limit (see `model::HttpConnectionManager`); not
/// an Envoy knob, so not configurable from a bootstrap.
const MAX_REQUEST_LINE_BYTES: usize = 8 * 1024;

pub(crate) fn translate(
    b: &bs::Bootstrap,
    bootstrap_json: serde_json::Value,
    last_updated: String,
    errors: &mut Errors,
) -> model::Config {
    let node =
        b.node.as_ref().map(|n| model::Node { id: n.id.clone(), cluster: n.cluster.clone() }).unwrap_or_default();
    let admin = b.admin.as_ref().and_then(|a| admin(a, errors));

    let empty = bs::bootstrap::StaticResources::default();
    let resources = b.static_resources.as_ref().unwrap_or(&empty);
    // Secrets named in static_resources.secrets are folded into the
    // listeners and clusters that reference them (translate/sds.rs).
    let secrets = sds::static_secrets(&resources.secrets, errors);
    let known = sds::KnownSecrets { statics: &secrets, ads: None };
    let resolved_clusters: Vec<cl::Cluster> =
        resources.clusters.iter().map(|c| sds::resolve_cluster(c, known)).collect();
    let resolved_listeners: Vec<lis::Listener> =
        resources.listeners.iter().map(|l| sds::resolve_listener(l, known)).collect();
    let clusters = clusters(&resolved_clusters, errors);
    lb::check_clusters(&resolved_clusters, &clusters, errors);
    // Routes are checked against every named cluster, even ones that failed
    // their own checks, so one broken cluster is not also N "unknown cluster"s.
    let cluster_names: HashSet<&str> =
        resources.clusters.iter().map(|c| c.name.as_str()).filter(|n| !n.is_empty()).collect();
    let mut tcp_listeners = Vec::new();
    let listeners = listeners(&resolved_listeners, &cluster_names, &mut tcp_listeners, errors);

    let xds = super::dynamic::bootstrap_xds(b, errors).map(Arc::new);
    model::Config {
        version: 0,
        node,
        admin,
        listeners,
        tcp_listeners,
        clusters,
        bootstrap_json,
        last_updated,
        xds,
        dynamic: None,
    }
}

// ---------------------------------------------------------------- helpers

fn enum_name(enum_full_name: &str, number: i32) -> String {
    descriptor_pool()
        .get_enum_by_name(enum_full_name)
        .and_then(|e| e.get_value(number))
        .map(|v| v.name().to_string())
        .unwrap_or_else(|| number.to_string())
}

/// A proto duration as a std one; negative ones are reported.
pub(super) fn duration(d: &pb::Duration, path: &str, errors: &mut Errors) -> Option<Duration> {
    if d.seconds < 0 || d.nanos < 0 {
        errors.add(path, "must not be negative");
        return None;
    }
    Some(Duration::new(d.seconds as u64, d.nanos as u32))
}

/// An Envoy timeout: `default` when unset, and `0s` means "disabled".
fn timeout(d: Option<&pb::Duration>, default: Option<Duration>, path: &str, errors: &mut Errors) -> Option<Duration> {
    match d {
        None => default,
        Some(d) => duration(d, path, errors).filter(|d| !d.is_zero()),
    }
}

/// A duration that must be set to something positive when present.
fn positive(d: Option<&pb::Duration>, default: Duration, path: &str, errors: &mut Errors) -> Duration {
    match d {
        None => default,
        Some(d) => match duration(d, path, errors) {
            Some(v) if v.is_zero() => {
                errors.add(path, "must be greater than 0s");
                default
            }
            Some(v) => v,
            None => default,
        },
    }
}

fn packed_type(any: &pb::Any) -> &str {
    type_name(&any.type_url)
}

/// What an `Address` holds, before deciding whether a hostname is allowed.
enum Host {
    Ip(IpAddr),
    Name(String),
}

/// Reads `address.socket_address` into host and port; `None` after
/// reporting (or silently when stage 3 already rejected the alternative).
fn socket_address(a: Option<&core::Address>, path: &str, errors: &mut Errors) -> Option<(Host, u32)> {
    let Some(a) = a else {
        errors.add(path, "required");
        return None;
    };
    let sa = match &a.address {
        Some(core::address::Address::SocketAddress(sa)) => sa,
        Some(_) => return None,
        None => {
            errors.add(join(path, "socket_address"), "required");
            return None;
        }
    };
    let path = join(path, "socket_address");
    let mut ok = true;
    if sa.protocol != core::socket_address::Protocol::Tcp as i32 {
        errors.add(
            join(&path, "protocol"),
            format!(
                "unsupported value {} (meshgate supports: TCP)",
                enum_name("envoy.config.core.v3.SocketAddress.Protocol", sa.protocol)
            ),
        );
        ok = false;
    }
    let port = match sa.port_specifier {
        Some(core::socket_address::PortSpecifier::PortValue(p)) if p <= u32::from(u16::MAX) => Some(p),
        Some(core::socket_address::PortSpecifier::PortValue(p)) => {
            errors.add(join(&path, "port_value"), format!("{p} is not a TCP port (0..=65535)"));
            None
        }
        Some(core::socket_address::PortSpecifier::NamedPort(_)) => None,
        None => {
            errors.add(join(&path, "port_value"), "required");
            None
        }
    };
    let host = if sa.address.is_empty() {
        errors.add(join(&path, "address"), "required");
        None
    } else if let Ok(ip) = sa.address.parse::<IpAddr>() {
        Some(Host::Ip(ip))
    } else {
        Some(Host::Name(sa.address.clone()))
    };
    match (host, port, ok) {
        (Some(h), Some(p), true) => Some((h, p)),
        _ => None,
    }
}

/// A socket address that must be an IP literal (listeners, admin, STATIC endpoints).
pub(super) fn ip_socket_address(a: Option<&core::Address>, path: &str, errors: &mut Errors) -> Option<SocketAddr> {
    match socket_address(a, path, errors)? {
        (Host::Ip(ip), port) => Some(SocketAddr::new(ip, port as u16)),
        (Host::Name(name), _) => {
            errors.add(
                join(&join(path, "socket_address"), "address"),
                format!("must be an IP address literal, got {name:?}"),
            );
            None
        }
    }
}

/// RFC 1123 host names (plus `_`, which service discovery names use).
fn valid_hostname(name: &str) -> bool {
    name.len() <= 253
        && name.trim_end_matches('.').split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        })
}

// ---------------------------------------------------------------- admin

// `access_log_path` is deprecated in Envoy but what most configs still use.
#[allow(deprecated)]
fn admin(a: &bs::Admin, errors: &mut Errors) -> Option<model::Admin> {
    let address = ip_socket_address(a.address.as_ref(), "admin.address", errors)?;
    Some(model::Admin { address, access_log_path: Some(a.access_log_path.clone()).filter(|p| !p.is_empty()) })
}

// ---------------------------------------------------------------- listeners

/// HTTP listeners are returned; TCP proxy listeners go to `tcp_out`.
fn listeners(
    list: &[lis::Listener],
    clusters: &HashSet<&str>,
    tcp_out: &mut Vec<Arc<model::TcpListener>>,
    errors: &mut Errors,
) -> Vec<Arc<model::Listener>> {
    let mut out = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut addresses: HashMap<SocketAddr, usize> = HashMap::new();
    for (i, l) in list.iter().enumerate() {
        let path = format!("static_resources.listeners[{i}]");
        let address = ip_socket_address(l.address.as_ref(), &join(&path, "address"), errors);
        // Envoy names unnamed listeners itself; the address is a name an
        // operator can recognise in logs and /config_dump.
        let name = match (&l.name, address) {
            (n, _) if !n.is_empty() => n.clone(),
            (_, Some(a)) => a.to_string(),
            (_, None) => format!("listener_{i}"),
        };
        if let Some(first) = names.insert(name.clone(), i) {
            errors.add(
                join(&path, "name"),
                format!("duplicate listener name {name:?} (also static_resources.listeners[{first}])"),
            );
        }
        if let Some(a) = address.filter(|a| a.port() != 0) {
            if let Some(first) = addresses.insert(a, i) {
                errors.add(
                    join(&path, "address"),
                    format!("duplicate listener address {a} (also static_resources.listeners[{first}])"),
                );
            }
        }
        if tcp_proxy::is_tcp_proxy_chain(&l.filter_chains) {
            if let Some(t) = tcp_listener_body(l, name, address, &path, clusters, errors) {
                tcp_out.push(Arc::new(t));
            }
            continue;
        }
        if let Some(l) = listener_body(l, name, address, &path, clusters, errors) {
            out.push(Arc::new(l));
        }
    }
    out
}

/// A listener whose filter chain is `envoy.filters.network.tcp_proxy`.
pub(super) fn is_tcp_proxy_listener(l: &lis::Listener) -> bool {
    tcp_proxy::is_tcp_proxy_chain(&l.filter_chains)
}

/// A TCP proxy listener, its name and address already read (xDS listeners
/// come through here too, from bootstrap/dynamic.rs).
pub(super) fn tcp_listener_body(
    l: &lis::Listener,
    name: String,
    address: Option<SocketAddr>,
    path: &str,
    clusters: &HashSet<&str>,
    errors: &mut Errors,
) -> Option<model::TcpListener> {
    let per_connection_buffer_limit_bytes = l.per_connection_buffer_limit_bytes.map_or(MIB, |v| v.value);
    let tls = tls::downstream(&l.filter_chains, &l.listener_filters, path, errors);
    let proxy = tcp_proxy::filter_chain(&l.filter_chains, path, clusters, errors);
    let network_rbac = super::rbac::network_filters(&l.filter_chains, path, errors);
    Some(model::TcpListener {
        name,
        address: address?,
        per_connection_buffer_limit_bytes,
        network_rbac: network_rbac?,
        proxy: Arc::new(proxy?),
        tls: tls?,
    })
}

/// One listener's filter chains and limits, its name and address already
/// read (xDS listeners come through here too, from bootstrap/dynamic.rs).
pub(super) fn listener_body(
    l: &lis::Listener,
    name: String,
    address: Option<SocketAddr>,
    path: &str,
    clusters: &HashSet<&str>,
    errors: &mut Errors,
) -> Option<model::Listener> {
    let http = filter_chains(&l.filter_chains, path, clusters, errors);
    let network_rbac = super::rbac::network_filters(&l.filter_chains, path, errors);
    let network_local_ratelimit = filters::network_local_ratelimits(&l.filter_chains, path, errors);
    let tls = tls::downstream(&l.filter_chains, &l.listener_filters, path, errors);
    Some(model::Listener {
        name,
        address: address?,
        http: Arc::new(http?),
        network_rbac: network_rbac?,
        network_local_ratelimit: network_local_ratelimit?,
        tls: tls?,
        per_connection_buffer_limit_bytes: l.per_connection_buffer_limit_bytes.map_or(MIB, |v| v.value),
    })
}

fn filter_chains(
    chains: &[lis::FilterChain],
    listener_path: &str,
    clusters: &HashSet<&str>,
    errors: &mut Errors,
) -> Option<model::HttpConnectionManager> {
    // Several chains are checked (same filters, TLS) by tls::downstream.
    let path = join(listener_path, "filter_chains");
    let Some(chain) = chains.first() else {
        errors.add(path, "exactly one filter chain is required");
        return None;
    };
    let path = format!("{path}[0].filters");
    if chain.filters.is_empty() {
        errors.add(&path, "the filter chain needs an envoy.filters.network.http_connection_manager filter");
        return None;
    }
    let mut result = None;
    let mut seen_terminal = false;
    for (i, f) in chain.filters.iter().enumerate() {
        let fpath = format!("{path}[{i}]");
        if f.name.is_empty() {
            errors.add(join(&fpath, "name"), "required");
        }
        let any = match &f.config_type {
            Some(lis::filter::ConfigType::TypedConfig(any)) => any,
            Some(_) => continue,
            None => {
                errors.add(
                    join(&fpath, "typed_config"),
                    "required (meshgate identifies filters by their typed_config @type)",
                );
                continue;
            }
        };
        if packed_type(any) != HCM {
            continue; // reported by the allowlist walk
        }
        if seen_terminal {
            errors.add(
                &fpath,
                "only one terminal filter (envoy.filters.network.http_connection_manager) per filter chain",
            );
            continue;
        }
        seen_terminal = true;
        let tpath = join(&fpath, "typed_config");
        match hcm::HttpConnectionManager::decode(any.value.as_slice()) {
            Ok(h) => result = http_connection_manager(&h, &tpath, clusters, errors),
            Err(e) => errors.add(tpath, format!("cannot decode: {e}")),
        }
    }
    result
}

// ---------------------------------------------------------------- HCM

fn http_connection_manager(
    h: &hcm::HttpConnectionManager,
    path: &str,
    clusters: &HashSet<&str>,
    errors: &mut Errors,
) -> Option<model::HttpConnectionManager> {
    let p = |f: &str| join(path, f);
    let mut ok = true;

    if h.stat_prefix.is_empty() {
        errors.add(p("stat_prefix"), "required");
        ok = false;
    }
    use hcm::http_connection_manager::CodecType;
    let codec_type = match CodecType::try_from(h.codec_type) {
        Ok(CodecType::Auto) => model::CodecType::Auto,
        Ok(CodecType::Http1) => model::CodecType::Http1,
        Ok(CodecType::Http2) => model::CodecType::Http2,
        _ => {
            errors.add(
                p("codec_type"),
                format!(
                    "unsupported value {} (meshgate supports: AUTO, HTTP1, HTTP2)",
                    enum_name(&format!("{HCM}.CodecType"), h.codec_type)
                ),
            );
            ok = false;
            model::CodecType::Auto
        }
    };
    let http2 = http2_options(h.http2_protocol_options.as_ref(), &p("http2_protocol_options"), errors);

    use hcm::http_connection_manager::RouteSpecifier;
    let route_config = match &h.route_specifier {
        Some(RouteSpecifier::RouteConfig(rc)) => route_config(rc, &p("route_config"), clusters, errors),
        Some(RouteSpecifier::Rds(_)) => {
            // Dynamic listeners get their `rds` resolved before translation
            // (bootstrap/dynamic.rs), so only a static listener gets here.
            errors.add(
                p("rds"),
                "RDS is supported only in listeners delivered over LDS (use an inline route_config here)",
            );
            None
        }
        Some(_) => None, // scoped_routes: reported by the allowlist walk
        None => {
            errors.add(p("route_config"), "required (meshgate needs an inline route_config)");
            None
        }
    };

    ok &= http_filters(&h.http_filters, &p("http_filters"), errors);
    let filter_models = http_filter_models(&h.http_filters, &p("http_filters"), errors);

    let max_request_headers_kb = h.max_request_headers_kb.map_or(60, |v| v.value);
    if !(1..=8192).contains(&max_request_headers_kb) {
        errors.add(p("max_request_headers_kb"), "must be between 1 and 8192");
        ok = false;
    }

    let common = h.common_http_protocol_options.unwrap_or_default();
    let cp = |f: &str| join(&p("common_http_protocol_options"), f);
    let max_headers_count = common.max_headers_count.map_or(100, |v| v.value);
    if max_headers_count == 0 {
        errors.add(cp("max_headers_count"), "must be at least 1");
        ok = false;
    }
    let idle_timeout = timeout(common.idle_timeout.as_ref(), Some(HOUR), &cp("idle_timeout"), errors);

    let request_headers_timeout = timeout(
        h.request_headers_timeout.as_ref(),
        Some(Duration::from_secs(10)),
        &p("request_headers_timeout"),
        errors,
    );
    let stream_idle_timeout =
        timeout(h.stream_idle_timeout.as_ref(), Some(Duration::from_secs(300)), &p("stream_idle_timeout"), errors);
    let request_timeout = timeout(h.request_timeout.as_ref(), None, &p("request_timeout"), errors);
    let drain_timeout = match &h.drain_timeout {
        None => Duration::from_secs(5),
        Some(d) => duration(d, &p("drain_timeout"), errors).unwrap_or(Duration::from_secs(5)),
    };

    use hcm::http_connection_manager::ServerHeaderTransformation as Sht;
    let server_header_transformation = match Sht::try_from(h.server_header_transformation) {
        Ok(Sht::Overwrite) => model::ServerHeaderTransformation::Overwrite,
        Ok(Sht::AppendIfAbsent) => model::ServerHeaderTransformation::AppendIfAbsent,
        Ok(Sht::PassThrough) => model::ServerHeaderTransformation::PassThrough,
        Err(_) => {
            errors.add(p("server_header_transformation"), format!("unknown value {}", h.server_header_transformation));
            model::ServerHeaderTransformation::Overwrite
        }
    };

    let route_config = route_config?;
    let http_filters = filter_models?;
    if !ok {
        return None;
    }
    Some(model::HttpConnectionManager {
        stat_prefix: h.stat_prefix.clone(),
        route_config: Arc::new(route_config),
        max_request_headers_bytes: max_request_headers_kb as usize * KIB as usize,
        max_headers_count: max_headers_count as usize,
        max_request_line_bytes: MAX_REQUEST_LINE_BYTES,
        request_headers_timeout,
        stream_idle_timeout,
        request_timeout,
        idle_timeout,
        drain_timeout,
        use_remote_address: h.use_remote_address.is_some_and(|v| v.value),
        xff_num_trusted_hops: h.xff_num_trusted_hops,
        server_name: if h.server_name.is_empty() { "meshgate".to_string() } else { h.server_name.clone() },
        server_header_transformation,
        generate_request_id: h.generate_request_id.is_none_or(|v| v.value),
        preserve_external_request_id: h.preserve_external_request_id,
        accept_http_10: h.http_protocol_options.as_ref().is_some_and(|o| o.accept_http_10),
        enable_trailers: h.http_protocol_options.as_ref().is_some_and(|o| o.enable_trailers),
        http_filters,
        upgrade_configs: upgrade::hcm_upgrade_configs(&h.upgrade_configs, &p("upgrade_configs"), errors),
        forward_client_cert: tls::forward_client_cert(
            h.forward_client_cert_details,
            &p("forward_client_cert_details"),
            errors,
        ),
        client_cert_details: tls::client_cert_details(h.set_current_client_cert_details.as_ref()),
        codec_type,
        http2,
    })
}

/// `http2_protocol_options` (downstream or upstream): the implemented
/// subset (others are rejected by the allowlist), range-checked as Envoy's
/// proto validation does.
pub(crate) fn http2_options(
    o: Option<&core::Http2ProtocolOptions>,
    path: &str,
    errors: &mut Errors,
) -> model::Http2Options {
    let mut out = model::Http2Options::default();
    let Some(o) = o else { return out };
    let mut field = |name: &str, v: Option<u32>, min: u32, slot: &mut u32| {
        let Some(v) = v else { return };
        if !(min..=2_147_483_647).contains(&v) {
            errors.add(join(path, name), format!("must be between {min} and 2147483647"));
            return;
        }
        *slot = v;
    };
    field("max_concurrent_streams", o.max_concurrent_streams.map(|v| v.value), 1, &mut out.max_concurrent_streams);
    field(
        "initial_stream_window_size",
        o.initial_stream_window_size.map(|v| v.value),
        65_535,
        &mut out.initial_stream_window_size,
    );
    field(
        "initial_connection_window_size",
        o.initial_connection_window_size.map(|v| v.value),
        65_535,
        &mut out.initial_connection_window_size,
    );
    out
}

/// The model of each HTTP filter, in order (their order and the router's
/// place are checked by `http_filters`; unsupported types by the allowlist).
fn http_filter_models(filters: &[hcm::HttpFilter], path: &str, errors: &mut Errors) -> Option<Vec<model::HttpFilter>> {
    let mut out = Vec::with_capacity(filters.len());
    let mut ok = true;
    for (i, f) in filters.iter().enumerate() {
        let fpath = format!("{path}[{i}].typed_config");
        match &f.config_type {
            Some(hcm::http_filter::ConfigType::TypedConfig(any)) => match packed_type(any) {
                ROUTER => out.push(model::HttpFilter::Router),
                HTTP_RBAC => match super::rbac::http_filter(&f.name, any, &fpath, errors) {
                    Some(r) => out.push(model::HttpFilter::Rbac(Arc::new(r))),
                    None => ok = false,
                },
                HTTP_LOCAL_RATELIMIT => match filters::http_local_ratelimit(&f.name, any, &fpath, errors) {
                    Some(r) => out.push(model::HttpFilter::LocalRateLimit(Arc::new(r))),
                    None => ok = false,
                },
                HTTP_FAULT => match filters::http_fault(&f.name, any, &fpath, errors) {
                    Some(r) => out.push(model::HttpFilter::Fault(Arc::new(r))),
                    None => ok = false,
                },
                _ => {}
            },
            None if f.name == "envoy.filters.http.router" => out.push(model::HttpFilter::Router),
            _ => {}
        }
    }
    ok.then_some(out)
}

/// The router must come last (it is terminal); RBAC filters may precede it.
fn http_filters(filters: &[hcm::HttpFilter], path: &str, errors: &mut Errors) -> bool {
    let mut ok = true;
    let mut last_is_router = false;
    for (i, f) in filters.iter().enumerate() {
        let fpath = format!("{path}[{i}]");
        if f.name.is_empty() {
            errors.add(join(&fpath, "name"), "required");
            ok = false;
        }
        let is_router = match &f.config_type {
            Some(hcm::http_filter::ConfigType::TypedConfig(any)) => packed_type(any) == ROUTER,
            Some(_) => false,
            // Configs written for older Envoys name the router without a
            // typed_config; the name alone is unambiguous here.
            None if f.name == "envoy.filters.http.router" => true,
            None => {
                errors.add(
                    join(&fpath, "typed_config"),
                    "required (meshgate identifies HTTP filters by their typed_config @type)",
                );
                ok = false;
                false
            }
        };
        if last_is_router {
            errors.add(
                format!("{path}[{}]", i - 1),
                "envoy.filters.http.router is terminal and must be the last HTTP filter",
            );
            ok = false;
        }
        last_is_router = is_router;
    }
    if !last_is_router {
        errors.add(
            path,
            "must end with envoy.filters.http.router (typed_config type.googleapis.com/envoy.extensions.filters.http.router.v3.Router)",
        );
        ok = false;
    }
    ok
}

// ---------------------------------------------------------------- routes

pub(super) fn route_config(
    rc: &rt::RouteConfiguration,
    path: &str,
    clusters: &HashSet<&str>,
    errors: &mut Errors,
) -> Option<model::RouteConfig> {
    let mut ok = true;
    let mut vhost_names: HashMap<&str, usize> = HashMap::new();
    // Lower-cased domain → the vhost that claimed it first.
    let mut domains_seen: HashMap<String, usize> = HashMap::new();
    let mut virtual_hosts = Vec::new();
    for (i, vh) in rc.virtual_hosts.iter().enumerate() {
        let vpath = format!("{path}.virtual_hosts[{i}]");
        if vh.name.is_empty() {
            errors.add(join(&vpath, "name"), "required");
            ok = false;
        } else if let Some(first) = vhost_names.insert(&vh.name, i) {
            errors.add(
                join(&vpath, "name"),
                format!("duplicate virtual host name {:?} (also virtual_hosts[{first}])", vh.name),
            );
            ok = false;
        }
        if vh.domains.is_empty() {
            errors.add(join(&vpath, "domains"), "at least one domain is required");
            ok = false;
        }
        let mut domains = Vec::new();
        for (j, d) in vh.domains.iter().enumerate() {
            let dpath = format!("{vpath}.domains[{j}]");
            let lower = d.to_ascii_lowercase();
            if let Some(first) = domains_seen.insert(lower.clone(), i) {
                let where_ =
                    if first == i { "this virtual host".to_string() } else { format!("virtual_hosts[{first}]") };
                errors.add(&dpath, format!("duplicate domain {d:?} (also in {where_}); Envoy rejects this"));
                ok = false;
                continue;
            }
            match domain(&lower) {
                Ok(m) => domains.push(m),
                Err(msg) => {
                    errors.add(&dpath, msg);
                    ok = false;
                }
            }
        }
        let mut routes = Vec::new();
        for (j, r) in vh.routes.iter().enumerate() {
            match route(r, &format!("{vpath}.routes[{j}]"), clusters, errors) {
                Some(r) => routes.push(r),
                None => ok = false,
            }
        }
        let vh_filters = super::rbac::per_filter_configs(
            &vh.typed_per_filter_config,
            &join(&vpath, "typed_per_filter_config"),
            errors,
        );
        let vh_request = routing::header_mutations(
            &vh.request_headers_to_add,
            &vh.request_headers_to_remove,
            &vpath,
            "request",
            errors,
        );
        let vh_response = routing::header_mutations(
            &vh.response_headers_to_add,
            &vh.response_headers_to_remove,
            &vpath,
            "response",
            errors,
        );
        ok &= vh_request.is_some() && vh_response.is_some();
        let vh_retry = retry::vhost_retry(vh, &vpath, errors);
        ok &= vh_retry.is_some();
        virtual_hosts.push(model::VirtualHost {
            name: vh.name.clone(),
            domains,
            routes,
            typed_per_filter_config: vh_filters.unwrap_or_else(|| {
                ok = false;
                Default::default()
            }),
            request_headers: vh_request.unwrap_or_default(),
            response_headers: vh_response.unwrap_or_default(),
            retry: vh_retry.unwrap_or_default(),
        });
    }
    let rc_filters =
        super::rbac::per_filter_configs(&rc.typed_per_filter_config, &join(path, "typed_per_filter_config"), errors);
    let typed_per_filter_config = rc_filters?;
    let request_headers =
        routing::header_mutations(&rc.request_headers_to_add, &rc.request_headers_to_remove, path, "request", errors);
    let response_headers = routing::header_mutations(
        &rc.response_headers_to_add,
        &rc.response_headers_to_remove,
        path,
        "response",
        errors,
    );
    let routes = model::RouteConfig {
        name: rc.name.clone(),
        virtual_hosts,
        typed_per_filter_config,
        request_headers: request_headers?,
        response_headers: response_headers?,
        most_specific_header_mutations_wins: rc.most_specific_header_mutations_wins,
    };
    ok &= routing::check_direct_response_bodies(rc, &routes, path, errors);
    ok.then_some(routes)
}

/// Envoy's wildcard forms: `*`, a leading `*` (suffix match) or a trailing
/// `*` (prefix match); nothing else.
fn domain(d: &str) -> Result<model::DomainMatch, String> {
    const BAD: &str = "wildcard '*' is only allowed as the whole domain, at the start or at the end";
    if d.is_empty() {
        return Err("empty domain".to_string());
    }
    if d == "*" {
        return Ok(model::DomainMatch::Any);
    }
    if let Some(rest) = d.strip_prefix('*') {
        return if rest.contains('*') {
            Err(BAD.to_string())
        } else {
            Ok(model::DomainMatch::Suffix(rest.to_string()))
        };
    }
    if let Some(rest) = d.strip_suffix('*') {
        return if rest.contains('*') {
            Err(BAD.to_string())
        } else {
            Ok(model::DomainMatch::Prefix(rest.to_string()))
        };
    }
    if d.contains('*') {
        return Err(BAD.to_string());
    }
    Ok(model::DomainMatch::Exact(d.to_string()))
}

fn route(r: &rt::Route, path: &str, clusters: &HashSet<&str>, errors: &mut Errors) -> Option<model::Route> {
    let matcher = match &r.r#match {
        None => {
            errors.add(join(path, "match"), "required");
            None
        }
        Some(m) => routing::route_match(m, &join(path, "match"), errors),
    };
    let action = match &r.action {
        Some(rt::route::Action::Route(a)) => {
            let retry = retry::route_retry(r, a, path, errors);
            match (forward(a, &join(path, "route"), clusters, errors), retry) {
                (Some(model::RouteAction::Forward(f)), Some(retry)) => {
                    Some(model::RouteAction::Forward(model::ForwardAction { retry, ..f }))
                }
                _ => None,
            }
        }
        Some(rt::route::Action::Redirect(d)) => routing::redirect(d, &join(path, "redirect"), errors),
        Some(rt::route::Action::DirectResponse(d)) => direct_response(d, &join(path, "direct_response"), errors),
        Some(_) => None,
        None => {
            errors.add(path, "needs `route`, `redirect` or `direct_response`");
            None
        }
    };
    let request_headers =
        routing::header_mutations(&r.request_headers_to_add, &r.request_headers_to_remove, path, "request", errors);
    let response_headers =
        routing::header_mutations(&r.response_headers_to_add, &r.response_headers_to_remove, path, "response", errors);
    let typed_per_filter_config =
        super::rbac::per_filter_configs(&r.typed_per_filter_config, &join(path, "typed_per_filter_config"), errors);
    Some(model::Route {
        name: r.name.clone(),
        matcher: matcher?,
        action: action?,
        typed_per_filter_config: typed_per_filter_config?,
        request_headers: request_headers?,
        response_headers: response_headers?,
    })
}

fn forward(
    a: &rt::RouteAction,
    path: &str,
    clusters: &HashSet<&str>,
    errors: &mut Errors,
) -> Option<model::RouteAction> {
    let hash_policy = lb::hash_policies(&a.hash_policy, path, errors);
    let mirrors = filters::mirror_policies(&a.request_mirror_policies, path, clusters, errors);
    let rate_limits = filters::rate_limit_policies(&a.rate_limits, path, errors);
    let mut action = routing::forward(a, path, clusters, hash_policy, errors)?;
    if let model::RouteAction::Forward(f) = &mut action {
        f.request_mirror_policies = mirrors?;
        f.rate_limits = rate_limits?;
    }
    Some(action)
}

fn direct_response(d: &rt::DirectResponseAction, path: &str, errors: &mut Errors) -> Option<model::RouteAction> {
    let status = if (200..=599).contains(&d.status) {
        Some(d.status as u16)
    } else {
        errors.add(join(path, "status"), format!("{} is not a status in 200..=599", d.status));
        None
    };
    let body = match &d.body {
        None => Some(None),
        Some(ds) => {
            let bpath = join(path, "body");
            use core::data_source::Specifier;
            match &ds.specifier {
                Some(Specifier::InlineString(s)) => Some(Some(Arc::from(s.as_bytes()))),
                Some(Specifier::InlineBytes(b)) => Some(Some(Arc::from(b.as_slice()))),
                // Relative to the working directory, as in Envoy.
                Some(Specifier::Filename(f)) => match std::fs::read(f) {
                    Ok(b) => Some(Some(Arc::from(b))),
                    Err(e) => {
                        errors.add(join(&bpath, "filename"), format!("cannot read {f:?}: {e}"));
                        None
                    }
                },
                Some(_) => None,
                None => {
                    errors.add(bpath, "needs inline_string, inline_bytes or filename");
                    None
                }
            }
        }
    };
    Some(model::RouteAction::DirectResponse { status: status?, body: body? })
}

// ---------------------------------------------------------------- clusters

fn clusters(list: &[cl::Cluster], errors: &mut Errors) -> BTreeMap<String, Arc<model::Cluster>> {
    let mut out = BTreeMap::new();
    let mut names: HashMap<&str, usize> = HashMap::new();
    for (i, c) in list.iter().enumerate() {
        let path = format!("static_resources.clusters[{i}]");
        if c.name.is_empty() {
            errors.add(join(&path, "name"), "required");
        } else if let Some(first) = names.insert(&c.name, i) {
            errors.add(
                join(&path, "name"),
                format!("duplicate cluster name {:?} (also static_resources.clusters[{first}])", c.name),
            );
            continue;
        }
        if let Some(model) = cluster(c, &path, errors) {
            if !c.name.is_empty() {
                out.insert(c.name.clone(), Arc::new(model));
            }
        }
    }
    out
}

// `dns_refresh_rate` and the top-level `max_requests_per_connection` are
// deprecated in Envoy but still what most static configs use.
#[allow(deprecated)]
pub(super) fn cluster(c: &cl::Cluster, path: &str, errors: &mut Errors) -> Option<model::Cluster> {
    let p = |f: &str| join(path, f);
    let mut ok = true;

    use cl::cluster::{ClusterDiscoveryType, DiscoveryType};
    let mut aggregate_clusters = Vec::new();
    let discovery = match &c.cluster_discovery_type {
        None => Some(model::DiscoveryType::Static),
        Some(ClusterDiscoveryType::Type(t)) => match DiscoveryType::try_from(*t) {
            Ok(DiscoveryType::Static) => Some(model::DiscoveryType::Static),
            Ok(DiscoveryType::StrictDns) => Some(model::DiscoveryType::StrictDns),
            _ => {
                errors.add(
                    p("type"),
                    format!(
                        "unsupported cluster type {} (meshgate supports: STATIC, STRICT_DNS)",
                        enum_name("envoy.config.cluster.v3.Cluster.DiscoveryType", *t)
                    ),
                );
                None
            }
        },
        Some(ClusterDiscoveryType::ClusterType(ct)) => {
            lb::custom_cluster_type(ct, &p("cluster_type"), errors).map(|members| {
                aggregate_clusters = members;
                model::DiscoveryType::Aggregate
            })
        }
    };

    let lb_settings = lb::cluster_lb(c, path, errors);
    let assignment_policy = lb::load_assignment_policy(c.load_assignment.as_ref(), &p("load_assignment"), errors);

    let connect_timeout = positive(c.connect_timeout.as_ref(), Duration::from_secs(5), &p("connect_timeout"), errors);
    let dns_refresh_rate = match &c.dns_refresh_rate {
        None => Duration::from_secs(5),
        Some(d) => match duration(d, &p("dns_refresh_rate"), errors) {
            Some(v) if v < Duration::from_millis(1) => {
                errors.add(p("dns_refresh_rate"), "must be at least 1ms");
                ok = false;
                v
            }
            Some(v) => v,
            None => Duration::from_secs(5),
        },
    };

    let endpoints = match (&c.load_assignment, discovery) {
        (Some(_), Some(model::DiscoveryType::Aggregate)) => {
            errors.add(p("load_assignment"), "an aggregate cluster has no endpoints of its own (its members do)");
            None
        }
        (Some(la), Some(discovery)) => endpoints(la, &p("load_assignment"), discovery, errors),
        (None, _) => Some(Vec::new()),
        (Some(_), None) => None,
    };

    let (upstream_idle_timeout, mut max_requests) = protocol_options(c, &p("typed_extension_protocol_options"), errors)
        .unwrap_or_else(|| {
            ok = false;
            (HOUR, None)
        });
    let upstream_http = upstream_http::protocol(c, path, errors);
    if let Some(v) = c.max_requests_per_connection {
        if max_requests.is_some() {
            errors.add(
                p("max_requests_per_connection"),
                "set both here (deprecated) and in HttpProtocolOptions.common_http_protocol_options; Envoy rejects this",
            );
            ok = false;
        }
        max_requests = Some(v.value).filter(|n| *n != 0);
    }

    let circuit_breakers = cluster_governance::circuit_breakers(c, path, errors);
    let outlier_detection = cluster_governance::outlier_detection(c, path, errors);
    let health_checks = cluster_governance::health_checks(c, path, errors);
    let tls = upstream_tls::upstream(c, path, errors);
    if let (Some(Some(_)), Some(checks)) = (&tls, &health_checks) {
        if let Some(i) = checks.iter().position(|h| matches!(h.kind, model::HealthCheckKind::Grpc { .. })) {
            errors.add(
                format!("{path}.health_checks[{i}].grpc_health_check"),
                "gRPC health checks to a TLS cluster are not supported yet (HTTP and TCP checks use the cluster's TLS)",
            );
            ok = false;
        }
    }
    if !ok {
        return None;
    }
    let lb_settings = lb_settings?;
    let (overprovisioning_factor, weighted_priority_health) = assignment_policy?;
    Some(model::Cluster {
        name: c.name.clone(),
        discovery: discovery?,
        connect_timeout,
        lb_policy: lb_settings.lb_policy,
        dns_refresh_rate,
        endpoints: endpoints?,
        upstream_idle_timeout,
        max_requests_per_connection: max_requests,
        // Envoy's pools keep every idle connection until its idle timeout;
        // what bounds them is the circuit breaker's max_connections (idle
        // connections hold a unit of it), so that is the only cap here.
        max_idle_per_endpoint: circuit_breakers.as_ref().map_or(0, |cb| cb.thresholds[0].max_connections as usize),
        per_connection_buffer_limit_bytes: c.per_connection_buffer_limit_bytes.map_or(MIB, |v| v.value),
        enable_trailers: upstream_trailers(c) || upstream_http.downstream_config_trailers,
        upstream_protocol: upstream_http.protocol,
        upstream_http2: upstream_http.http2,
        overprovisioning_factor,
        weighted_priority_health,
        healthy_panic_threshold: lb_settings.healthy_panic_threshold,
        aggregate_clusters,
        circuit_breakers: circuit_breakers?,
        outlier_detection: outlier_detection?,
        health_checks: health_checks?,
        tls: tls?,
    })
}

/// `explicit_http_config.http_protocol_options.enable_trailers` of the
/// cluster's HttpProtocolOptions (decode errors are reported elsewhere).
fn upstream_trailers(c: &cl::Cluster) -> bool {
    let Some(any) = c.typed_extension_protocol_options.get(UPSTREAM_HTTP_OPTIONS) else {
        return false;
    };
    let Ok(opts) = up::HttpProtocolOptions::decode(any.value.as_slice()) else {
        return false;
    };
    match opts.upstream_protocol_options {
        Some(up::http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(e)) => matches!(
            e.protocol_config,
            Some(up::http_protocol_options::explicit_http_config::ProtocolConfig::HttpProtocolOptions(o))
                if o.enable_trailers
        ),
        _ => false,
    }
}

/// `typed_extension_protocol_options[HttpProtocolOptions]` → (upstream idle
/// timeout, max requests per connection); `None` after reporting.
fn protocol_options(c: &cl::Cluster, path: &str, errors: &mut Errors) -> Option<(Duration, Option<u32>)> {
    let Some(any) = c.typed_extension_protocol_options.get(UPSTREAM_HTTP_OPTIONS) else {
        return Some((HOUR, None));
    };
    if packed_type(any) != UPSTREAM_HTTP_OPTIONS {
        return Some((HOUR, None)); // reported by the allowlist walk
    }
    let path = format!("{path}[{UPSTREAM_HTTP_OPTIONS:?}]");
    let opts = match up::HttpProtocolOptions::decode(any.value.as_slice()) {
        Ok(o) => o,
        Err(e) => {
            errors.add(path, format!("cannot decode: {e}"));
            return None;
        }
    };
    let common = opts.common_http_protocol_options.unwrap_or_default();
    let cpath = join(&path, "common_http_protocol_options");
    let idle = match &common.idle_timeout {
        None => HOUR,
        Some(d) => {
            let ipath = join(&cpath, "idle_timeout");
            match duration(d, &ipath, errors) {
                // The model has no "never" for pooled connections, and an
                // idle connection kept forever is a leak: say so instead.
                Some(v) if v.is_zero() => {
                    errors.add(ipath, "0s (never time out) is not supported for upstream connections; set a duration");
                    return None;
                }
                Some(v) => v,
                None => return None,
            }
        }
    };
    let max_requests = common.max_requests_per_connection.map(|v| v.value).filter(|n| *n != 0);
    Some((idle, max_requests))
}

pub(super) fn endpoints(
    la: &ep::ClusterLoadAssignment,
    path: &str,
    discovery: model::DiscoveryType,
    errors: &mut Errors,
) -> Option<Vec<model::Endpoint>> {
    let mut ok = true;
    if la.cluster_name.is_empty() {
        errors.add(join(path, "cluster_name"), "required");
        ok = false;
    }
    let mut out = Vec::new();
    for (i, locality) in la.endpoints.iter().enumerate() {
        let lpath = format!("{path}.endpoints[{i}]");
        for (j, lb) in locality.lb_endpoints.iter().enumerate() {
            let epath = format!("{lpath}.lb_endpoints[{j}]");
            let weight = lb.load_balancing_weight.map_or(1, |w| w.value);
            if weight == 0 {
                errors.add(join(&epath, "load_balancing_weight"), "must be at least 1");
                ok = false;
            }
            let endpoint = match &lb.host_identifier {
                Some(ep::lb_endpoint::HostIdentifier::Endpoint(e)) => e,
                Some(_) => {
                    ok = false;
                    continue;
                }
                None => {
                    errors.add(join(&epath, "endpoint"), "required");
                    ok = false;
                    continue;
                }
            };
            let apath = join(&join(&epath, "endpoint"), "address");
            let Some((host, port)) = socket_address(endpoint.address.as_ref(), &apath, errors) else {
                ok = false;
                continue;
            };
            let host_path = join(&join(&apath, "socket_address"), "address");
            if port == 0 {
                errors.add(
                    join(&join(&apath, "socket_address"), "port_value"),
                    "an upstream endpoint needs a non-zero port",
                );
                ok = false;
                continue;
            }
            let port = port as u16;
            let address = match (host, discovery) {
                (Host::Ip(ip), _) => model::EndpointAddress::Socket(SocketAddr::new(ip, port)),
                (Host::Name(name), model::DiscoveryType::Static | model::DiscoveryType::Aggregate) => {
                    errors.add(
                        host_path,
                        format!("a STATIC cluster needs IP address literals, got {name:?} (use type: STRICT_DNS for host names)"),
                    );
                    ok = false;
                    continue;
                }
                (Host::Name(name), model::DiscoveryType::StrictDns) => {
                    if !valid_hostname(&name) {
                        errors.add(host_path, format!("{name:?} is neither an IP address nor a valid host name"));
                        ok = false;
                        continue;
                    }
                    model::EndpointAddress::Dns { host: name, port }
                }
            };
            out.push(model::Endpoint { address, weight, priority: locality.priority });
        }
    }
    ok.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::DomainMatch::*;

    #[test]
    fn domains() {
        assert_eq!(domain("*"), Ok(Any));
        assert_eq!(domain("*.foo.com"), Ok(Suffix(".foo.com".into())));
        assert_eq!(domain("*-bar.foo.com"), Ok(Suffix("-bar.foo.com".into())));
        assert_eq!(domain("foo.*"), Ok(Prefix("foo.".into())));
        assert_eq!(domain("foo.com:8080"), Ok(Exact("foo.com:8080".into())));
        assert!(domain("a.*.com").is_err());
        assert!(domain("**").is_err());
        assert!(domain("*.foo.*").is_err());
        assert!(domain("").is_err());
    }

    #[test]
    fn hostnames() {
        assert!(valid_hostname("backend"));
        assert!(valid_hostname("svc.ns.svc.cluster.local."));
        assert!(valid_hostname("_grpc._tcp.example.com"));
        assert!(!valid_hostname("bad host"));
        assert!(!valid_hostname("-x.com"));
        assert!(!valid_hostname("a..b"));
    }
}
