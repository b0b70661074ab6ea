//! xDS in the loader: the bootstrap's `dynamic_resources`, and the
//! translation of resources delivered by a management server (Listener,
//! RouteConfiguration, Cluster, ClusterLoadAssignment) into the same
//! [`model`] the static file produces.
//!
//! # What this owns
//!
//! * `dynamic_resources` → [`model::Xds`], with Envoy's defaults (15 s
//!   `initial_fetch_timeout`, 500 ms / 30 s reconnect back-off) and the
//!   checks Envoy makes (the xDS cluster must be a static cluster; `ads: {}`
//!   needs `ads_config`).  Protocol variants meshgate does not speak are
//!   refused with the field path, never ignored.
//! * Decoding one received resource and running it through the same
//!   allowlist (`supported`) as the bootstrap, so a field meshgate does not
//!   implement is refused the same way whether it came from a file or from
//!   a control plane; errors are labelled `Listener "name"` etc. and carry
//!   the field path inside the resource.  These become the NACK's
//!   `error_detail`.
//! * [`build`]: static config + every accepted dynamic resource → one whole,
//!   validated [`model::Config`].  The existing translators do the work:
//!   an HCM's `rds` is replaced by the RouteConfiguration it names, and an
//!   EDS cluster becomes a STATIC one whose `load_assignment` is the
//!   ClusterLoadAssignment EDS delivered, before `translate` sees them.
//!   Warming follows Envoy: a listener waits for its RouteConfiguration and
//!   an EDS cluster for its assignment, until the type's initial fetch
//!   timed out (then they go live with no routes / no endpoints).
//!
//! Routes delivered by RDS do not have their clusters checked (Envoy's
//! `validate_clusters` defaults to false for RDS): a route to a cluster that
//! is not there answers 503 at request time.  Inline `route_config`s in a
//! listener from LDS are checked like static ones.
//!
//! # What it must not touch
//!
//! No sockets, no protocol state (versions, nonces): that is the `xds`
//! crate.  The translation caches only keep `Arc`s of unchanged clusters
//! identical across builds, which is what lets shards keep their pools.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::bootstrap::v3 as bs;
use envoy_types::pb::envoy::config::cluster::v3 as cl;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::endpoint::v3 as ep;
use envoy_types::pb::envoy::config::listener::v3 as lis;
use envoy_types::pb::envoy::config::route::v3 as rt;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use prost::Message;
use prost_reflect::DynamicMessage;

use super::supported::HCM;
use super::{join, translate, type_name, Errors};
use crate::error::{ConfigError, ConfigErrors};
use crate::model;

pub const LISTENER: &str = "envoy.config.listener.v3.Listener";
pub const ROUTE_CONFIGURATION: &str = "envoy.config.route.v3.RouteConfiguration";
pub const CLUSTER: &str = "envoy.config.cluster.v3.Cluster";
pub const CLUSTER_LOAD_ASSIGNMENT: &str = "envoy.config.endpoint.v3.ClusterLoadAssignment";
/// SDS over ADS (translate/sds.rs).
pub const SECRET: &str = translate::sds::SECRET;

/// Envoy's default `initial_fetch_timeout`.
const DEFAULT_INITIAL_FETCH_TIMEOUT: Duration = Duration::from_secs(15);
/// Envoy's xDS stream back-off (`GrpcMuxImpl`): 500 ms base, 30 s cap.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(500);
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------- bootstrap

/// `dynamic_resources` → model; also polices the bootstrap fields that only
/// make sense with xDS (HTTP/2 on the xDS cluster, `eds_cluster_config`).
pub(super) fn bootstrap_xds<'a>(b: &'a bs::Bootstrap, errors: &mut Errors) -> Option<model::Xds> {
    let statics: &[cl::Cluster] = b.static_resources.as_ref().map_or(&[], |s| &s.clusters);
    let mut xds_clusters: HashSet<&'a str> = HashSet::new();
    let result = b.dynamic_resources.as_ref().and_then(|d| {
        let path = "dynamic_resources";
        let ads = d
            .ads_config
            .as_ref()
            .and_then(|a| api_config_source(a, true, &join(path, "ads_config"), statics, &mut xds_clusters, errors));
        let ads_ok = d.ads_config.is_none() || ads.is_some();
        let mut ok = ads_ok;
        let mut source = |cs: &'a Option<core::ConfigSource>, field: &str, errors: &mut Errors| match cs {
            None => Some(None),
            Some(cs) => {
                config_source(cs, &join(path, field), d.ads_config.is_some(), statics, &mut xds_clusters, errors)
                    .map(Some)
            }
        };
        let lds = source(&d.lds_config, "lds_config", errors);
        let cds = source(&d.cds_config, "cds_config", errors);
        ok &= lds.is_some() && cds.is_some();
        ok.then(|| model::Xds { ads, lds: lds.flatten(), cds: cds.flatten() })
    });

    for (i, c) in statics.iter().enumerate() {
        let path = format!("static_resources.clusters[{i}]");
        if c.eds_cluster_config.is_some() {
            errors.add(
                join(&path, "eds_cluster_config"),
                "EDS clusters are supported only when delivered over CDS (dynamic_resources.cds_config)",
            );
        }
        if xds_clusters.contains(c.name.as_str()) {
            // Its `transport_socket` (TLS to the xDS server) is translated
            // with every static cluster's and used by the xDS client.
            continue;
        }
    }
    result
}

fn api_config_source<'a>(
    a: &'a core::ApiConfigSource,
    aggregated: bool,
    path: &str,
    statics: &[cl::Cluster],
    xds_clusters: &mut HashSet<&'a str>,
    errors: &mut Errors,
) -> Option<model::XdsServer> {
    use core::api_config_source::ApiType;
    let p = |f: &str| join(path, f);
    let mut ok = true;
    let api_type = match ApiType::try_from(a.api_type) {
        Ok(ApiType::Grpc) => Some(model::XdsApiType::Grpc),
        Ok(ApiType::DeltaGrpc) => Some(model::XdsApiType::DeltaGrpc),
        // REST polls one type per request; an aggregated stream cannot be REST.
        Ok(ApiType::Rest) if aggregated => {
            errors.add(p("api_type"), "REST cannot carry ADS (use it in lds_config / cds_config api_config_source)");
            None
        }
        Ok(ApiType::Rest) => Some(model::XdsApiType::Rest),
        _ => {
            errors.add(
                p("api_type"),
                format!(
                    "unsupported value {} (meshgate supports: GRPC, DELTA_GRPC)",
                    translate_enum("envoy.config.core.v3.ApiConfigSource.ApiType", a.api_type)
                ),
            );
            None
        }
    };
    ok &= api_version(a.transport_api_version, &p("transport_api_version"), errors);

    let mut backoff = (DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_MAX);
    let cluster: Option<&'a str> = match api_type {
        Some(model::XdsApiType::Rest) => {
            if !a.grpc_services.is_empty() {
                errors.add(p("grpc_services"), "not used with api_type REST (name the server in cluster_names)");
                ok = false;
            }
            match a.cluster_names.as_slice() {
                [one] => Some(one.as_str()),
                _ => {
                    errors.add(p("cluster_names"), "api_type REST needs exactly one cluster name");
                    None
                }
            }
        }
        Some(_) => {
            if !a.cluster_names.is_empty() {
                errors.add(p("cluster_names"), "only for api_type REST (gRPC names its server in grpc_services)");
                ok = false;
            }
            for (field, set) in
                [("refresh_delay", a.refresh_delay.is_some()), ("request_timeout", a.request_timeout.is_some())]
            {
                if set {
                    errors.add(p(field), "only for api_type REST");
                    ok = false;
                }
            }
            match a.grpc_services.as_slice() {
                [one] => {
                    use core::grpc_service::TargetSpecifier;
                    let gpath = format!("{}[0]", p("grpc_services"));
                    match &one.target_specifier {
                        Some(TargetSpecifier::EnvoyGrpc(g)) => {
                            if let Some(rp) = &g.retry_policy {
                                let rpath = join(&join(&gpath, "envoy_grpc"), "retry_policy");
                                match backoff_strategy(
                                    rp.retry_back_off.as_ref(),
                                    &join(&rpath, "retry_back_off"),
                                    errors,
                                ) {
                                    Some(b) => backoff = b,
                                    None => ok = false,
                                }
                            }
                            Some(g.cluster_name.as_str())
                        }
                        Some(_) => None, // google_grpc: refused by the allowlist
                        None => {
                            errors.add(join(&gpath, "envoy_grpc"), "required");
                            None
                        }
                    }
                }
                _ => {
                    errors.add(p("grpc_services"), "exactly one gRPC service is required");
                    None
                }
            }
        }
        None => None,
    };
    let cluster_path = if api_type == Some(model::XdsApiType::Rest) {
        format!("{}[0]", p("cluster_names"))
    } else {
        format!("{}[0].envoy_grpc.cluster_name", p("grpc_services"))
    };
    let cluster = cluster.and_then(|name| {
        if name.is_empty() {
            errors.add(&cluster_path, "required");
            return None;
        }
        if !statics.iter().any(|c| c.name == name) {
            errors.add(
                &cluster_path,
                format!("the xDS server cluster {name:?} must be defined in static_resources.clusters"),
            );
            return None;
        }
        xds_clusters.insert(name);
        Some(name.to_string())
    });
    let refresh_delay = positive_or(a.refresh_delay.as_ref(), Duration::from_secs(1), &p("refresh_delay"), errors);
    let request_timeout =
        positive_or(a.request_timeout.as_ref(), Duration::from_secs(1), &p("request_timeout"), errors);
    if !ok {
        return None;
    }
    Some(model::XdsServer {
        api_type: api_type?,
        cluster: cluster?,
        backoff_base: backoff.0,
        backoff_max: backoff.1,
        refresh_delay: refresh_delay?,
        request_timeout: request_timeout?,
    })
}

fn positive_or(
    d: Option<&envoy_types::pb::google::protobuf::Duration>,
    default: Duration,
    path: &str,
    errors: &mut Errors,
) -> Option<Duration> {
    match d {
        None => Some(default),
        Some(d) => match translate::duration(d, path, errors)? {
            v if v.is_zero() => {
                errors.add(path, "must be greater than 0s");
                None
            }
            v => Some(v),
        },
    }
}

/// `BackoffStrategy`: `base_interval` required (≥ 1 ms, as Envoy's
/// validation says), `max_interval` ≥ base, default 10 × base.
fn backoff_strategy(
    b: Option<&core::BackoffStrategy>,
    path: &str,
    errors: &mut Errors,
) -> Option<(Duration, Duration)> {
    let Some(b) = b else {
        errors.add(path, "required when retry_policy is set");
        return None;
    };
    let base = match &b.base_interval {
        None => {
            errors.add(join(path, "base_interval"), "required");
            return None;
        }
        Some(d) => translate::duration(d, &join(path, "base_interval"), errors)?,
    };
    if base < Duration::from_millis(1) {
        errors.add(join(path, "base_interval"), "must be at least 1ms");
        return None;
    }
    let max = match &b.max_interval {
        None => base * 10,
        Some(d) => translate::duration(d, &join(path, "max_interval"), errors)?,
    };
    if max < base {
        errors.add(join(path, "max_interval"), "must not be less than base_interval");
        return None;
    }
    Some((base, max))
}

fn api_version(v: i32, path: &str, errors: &mut Errors) -> bool {
    match core::ApiVersion::try_from(v) {
        // AUTO means the newest version the client speaks: V3.
        Ok(core::ApiVersion::Auto | core::ApiVersion::V3) => true,
        _ => {
            errors.add(
                path,
                format!(
                    "unsupported value {} (meshgate speaks xDS V3 only)",
                    translate_enum("envoy.config.core.v3.ApiVersion", v)
                ),
            );
            false
        }
    }
}

fn translate_enum(name: &str, number: i32) -> String {
    super::descriptor_pool()
        .get_enum_by_name(name)
        .and_then(|e| e.get_value(number))
        .map(|v| v.name().to_string())
        .unwrap_or_else(|| number.to_string())
}

/// A `ConfigSource` naming where LDS / CDS come from.
fn config_source<'a>(
    cs: &'a core::ConfigSource,
    path: &str,
    have_ads: bool,
    statics: &[cl::Cluster],
    xds_clusters: &mut HashSet<&'a str>,
    errors: &mut Errors,
) -> Option<model::XdsSource> {
    use core::config_source::ConfigSourceSpecifier;
    let mut ok = api_version(cs.resource_api_version, &join(path, "resource_api_version"), errors);
    let initial_fetch_timeout = match &cs.initial_fetch_timeout {
        None => Some(DEFAULT_INITIAL_FETCH_TIMEOUT),
        Some(d) => match translate::duration(d, &join(path, "initial_fetch_timeout"), errors) {
            Some(v) if v.is_zero() => None,
            Some(v) => Some(v),
            None => {
                ok = false;
                None
            }
        },
    };
    let server = match &cs.config_source_specifier {
        Some(ConfigSourceSpecifier::Ads(_)) => {
            if !have_ads {
                errors.add(join(path, "ads"), "`ads` needs dynamic_resources.ads_config");
                ok = false;
            }
            None
        }
        Some(ConfigSourceSpecifier::ApiConfigSource(a)) => {
            let server = api_config_source(a, false, &join(path, "api_config_source"), statics, xds_clusters, errors);
            ok &= server.is_some();
            server
        }
        Some(_) => None, // path / self: refused by the allowlist
        None => {
            errors.add(path, "needs `ads: {}` or `api_config_source`");
            ok = false;
            None
        }
    };
    ok.then_some(model::XdsSource { server, initial_fetch_timeout })
}

// ---------------------------------------------------------------- resources

/// One received resource, decoded and checked against the allowlist.
#[derive(Debug, Clone)]
pub struct Resource<T> {
    pub name: String,
    pub message: T,
    /// Canonical proto3 JSON (proto field names) for `/config_dump`.
    pub json: serde_json::Value,
    /// The bytes it arrived as: an unchanged resource keeps its translation.
    pub bytes: Vec<u8>,
}

/// A resource together with the update that brought it.
#[derive(Debug, Clone)]
pub struct Accepted<T> {
    pub resource: Arc<Resource<T>>,
    pub version_info: String,
    pub last_updated: String,
}

fn label(kind: &str, name: &str) -> String {
    let short = kind.rsplit('.').next().unwrap_or(kind);
    format!("{short} {name:?}")
}

/// Decodes one resource of `full_name` (e.g. [`LISTENER`]), refusing
/// fields meshgate does not implement exactly as the bootstrap loader does.
pub fn decode<T: Message + Default>(full_name: &str, bytes: &[u8]) -> Result<Resource<T>, ConfigErrors> {
    let descriptor = super::message_descriptor(full_name);
    let message = DynamicMessage::decode(descriptor, bytes)
        .map_err(|e| ConfigError::new(label(full_name, "?"), "", format!("cannot decode: {e}")))?;
    let name_field = if full_name == CLUSTER_LOAD_ASSIGNMENT { "cluster_name" } else { "name" };
    let name = message.get_field_by_name(name_field).and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
    let mut errors = Errors::new(&label(full_name, &name));
    if name.is_empty() {
        errors.add(name_field, "required (xDS resources are identified by name)");
    }
    super::supported::check_message(&message, "", None, &mut errors);
    errors.finish()?;
    let typed =
        T::decode(bytes).map_err(|e| ConfigError::new(label(full_name, &name), "", format!("cannot decode: {e}")))?;
    Ok(Resource { name, message: typed, json: super::canonical_json(&message), bytes: bytes.to_vec() })
}

pub use translate::sds::{ads_secret_refs, cluster_tls_contexts, listener_tls_contexts};

/// Route configurations referenced by a listener's HCMs through `rds`.
pub fn rds_names(l: &lis::Listener) -> Vec<String> {
    let mut out = Vec::new();
    for chain in &l.filter_chains {
        for f in &chain.filters {
            if let Some(h) = decode_hcm(f) {
                if let Some(hcm::http_connection_manager::RouteSpecifier::Rds(r)) = &h.route_specifier {
                    out.push(r.route_config_name.clone());
                }
            }
        }
    }
    out
}

/// `(route_config_name, stat_prefix)` of each of a listener's HCMs using
/// `rds` (Envoy's per-route-configuration stats live under
/// `http.<stat_prefix>.rds.<route_config_name>.`).
pub fn rds_stat_scopes(l: &lis::Listener) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for chain in &l.filter_chains {
        for f in &chain.filters {
            if let Some(h) = decode_hcm(f) {
                if let Some(hcm::http_connection_manager::RouteSpecifier::Rds(r)) = &h.route_specifier {
                    out.push((r.route_config_name.clone(), h.stat_prefix.clone()));
                }
            }
        }
    }
    out
}

/// The name EDS knows an EDS cluster by (`service_name`, else its own),
/// or `None` for clusters of other types.
pub fn eds_name(c: &cl::Cluster) -> Option<String> {
    use cl::cluster::{ClusterDiscoveryType, DiscoveryType};
    match c.cluster_discovery_type {
        Some(ClusterDiscoveryType::Type(t)) if t == DiscoveryType::Eds as i32 => Some(
            c.eds_cluster_config
                .as_ref()
                .map(|e| e.service_name.clone())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| c.name.clone()),
        ),
        _ => None,
    }
}

fn decode_hcm(f: &lis::Filter) -> Option<hcm::HttpConnectionManager> {
    match &f.config_type {
        Some(lis::filter::ConfigType::TypedConfig(any)) if type_name(&any.type_url) == HCM => {
            hcm::HttpConnectionManager::decode(any.value.as_slice()).ok()
        }
        _ => None,
    }
}

/// Every accepted dynamic resource, by name.
#[derive(Debug, Clone, Default)]
pub struct DynamicResources {
    pub listeners: BTreeMap<String, Accepted<lis::Listener>>,
    pub routes: BTreeMap<String, Accepted<rt::RouteConfiguration>>,
    pub clusters: BTreeMap<String, Accepted<cl::Cluster>>,
    pub endpoints: BTreeMap<String, Accepted<ep::ClusterLoadAssignment>>,
    /// SDS secrets received over ADS, by name (translate/sds.rs).
    pub secrets: BTreeMap<String, Accepted<envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret>>,
    /// Route configurations / assignments whose initial fetch timed out:
    /// listeners and clusters stop waiting for them and go live without.
    pub rds_given_up: std::collections::BTreeSet<String>,
    pub eds_given_up: std::collections::BTreeSet<String>,
}

/// Translations kept between builds, keyed by the exact bytes they came
/// from.  Keeping an unchanged cluster's `Arc` is what lets a shard keep
/// the cluster's runtime and pooled connections across updates.
#[derive(Default)]
pub struct TranslationCache {
    clusters: HashMap<String, CachedCluster>,
    routes: HashMap<String, Vec<u8>>,
    listeners: HashMap<String, CachedListener>,
    /// The bytes of the ADS secrets each cluster / listener used: a changed
    /// secret drops the cached translation.
    cluster_secrets: HashMap<String, Vec<Vec<u8>>>,
    listener_secrets: HashMap<String, Vec<Vec<u8>>>,
}

/// Cluster bytes, its ClusterLoadAssignment's bytes (EDS), and the result.
type CachedCluster = (Vec<u8>, Option<Vec<u8>>, Arc<model::Cluster>);
/// Listener bytes, the bytes of the route configurations it uses, and the result.
type CachedListener = (Vec<u8>, Vec<Vec<u8>>, Arc<model::Listener>);

/// What [`build`] left out because a dependency has not arrived yet.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Warming {
    pub listeners: Vec<String>,
    pub clusters: Vec<String>,
}

/// Static config + dynamic resources → one whole validated config.  On
/// error nothing is published; the errors name the resource and the path
/// inside it.
pub fn build(
    base: &model::Config,
    dynamic: &DynamicResources,
    cache: &mut TranslationCache,
) -> Result<(model::Config, Warming), ConfigErrors> {
    let mut all: Vec<ConfigError> = Vec::new();
    let mut warming = Warming::default();
    let absorb = |errors: Errors, all: &mut Vec<ConfigError>| {
        if let Err(e) = errors.finish() {
            all.extend(e.iter().cloned());
        }
    };

    // ---- secrets (SDS over ADS), each checked on its own (translate/sds.rs)
    let static_secrets = translate::sds::static_secrets_of(&base.bootstrap_json);
    let ads_secrets: BTreeMap<String, _> =
        dynamic.secrets.iter().map(|(n, a)| (n.clone(), a.resource.message.clone())).collect();
    for (name, secret) in &ads_secrets {
        let mut errors = Errors::new(&label(SECRET, name));
        translate::sds::check_secret(secret, "", &mut errors);
        absorb(errors, &mut all);
    }
    let known = translate::sds::KnownSecrets { statics: &static_secrets, ads: Some(&ads_secrets) };
    // The bytes of the ADS secrets `contexts` use, or `None` while one has
    // not arrived (the listener / cluster is warming).
    let secret_bytes = |contexts: &[_]| -> Option<Vec<Vec<u8>>> {
        translate::sds::ads_secret_refs(contexts)
            .iter()
            .map(|(n, _)| dynamic.secrets.get(n).map(|a| a.resource.bytes.clone()))
            .collect()
    };

    // A secret over ADS needs an ADS stream: without `ads_config` it would
    // never arrive and the resource would warm for ever, so it is rejected.
    let has_ads = base.xds.as_ref().is_some_and(|x| x.ads.is_some());
    let ads_reachable = |contexts: &[_], errors: &mut Errors| -> bool {
        if has_ads {
            return true;
        }
        let refs = translate::sds::ads_secret_refs(contexts);
        for (secret, _) in &refs {
            errors.add(
                "transport_socket",
                format!("secret {secret:?} comes over ADS (sds_config.ads) but the bootstrap has no dynamic_resources.ads_config"),
            );
        }
        refs.is_empty()
    };

    // ---- clusters (CDS, with EDS assignments folded in)
    let mut clusters = base.clusters.clone();
    let mut checked_assignments: HashSet<String> = HashSet::new();
    for (name, acc) in &dynamic.clusters {
        let c = &acc.resource.message;
        let mut errors = Errors::new(&label(CLUSTER, name));
        if base.clusters.contains_key(name) {
            errors.add("name", "a static cluster already has this name");
            absorb(errors, &mut all);
            continue;
        }
        let eds = eds_name(c);
        let assignment = eds.as_ref().and_then(|n| dynamic.endpoints.get(n));
        if let Some(eds) = &eds {
            let source = c.eds_cluster_config.as_ref().and_then(|e| e.eds_config.as_ref());
            let cds = base.xds.as_ref().and_then(|x| x.cds.as_ref()).and_then(|s| s.server.as_ref());
            check_source(source, cds, "cds_config", "eds_cluster_config.eds_config", &mut errors);
            if assignment.is_none() && !dynamic.eds_given_up.contains(eds) {
                warming.clusters.push(name.clone());
                absorb(errors, &mut all);
                continue;
            }
            if let Some(a) = assignment {
                if checked_assignments.insert(eds.clone()) {
                    let mut aerrors = Errors::new(&label(CLUSTER_LOAD_ASSIGNMENT, eds));
                    translate::endpoints(&a.resource.message, "", model::DiscoveryType::Static, &mut aerrors);
                    absorb(aerrors, &mut all);
                }
            }
        }
        let contexts = translate::sds::cluster_tls_contexts(c);
        if !ads_reachable(&contexts, &mut errors) {
            absorb(errors, &mut all);
            continue;
        }
        let Some(secrets) = secret_bytes(&contexts) else {
            warming.clusters.push(name.clone());
            absorb(errors, &mut all);
            continue;
        };
        if cache.cluster_secrets.get(name) != Some(&secrets) {
            cache.clusters.remove(name);
            cache.cluster_secrets.insert(name.clone(), secrets);
        }
        let assignment_bytes = assignment.map(|a| a.resource.bytes.clone());
        if let Some((bytes, abytes, model)) = cache.clusters.get(name) {
            if *bytes == acc.resource.bytes && *abytes == assignment_bytes {
                clusters.insert(name.clone(), model.clone());
                absorb(errors, &mut all);
                continue;
            }
        }
        let mut c = translate::sds::resolve_cluster(c, known);
        if eds.is_some() {
            // EDS delivers what a STATIC cluster's load_assignment holds.
            c.cluster_discovery_type =
                Some(cl::cluster::ClusterDiscoveryType::Type(cl::cluster::DiscoveryType::Static as i32));
            c.eds_cluster_config = None;
            let mut la = assignment.map(|a| a.resource.message.clone()).unwrap_or_default();
            la.cluster_name = name.clone();
            c.load_assignment = Some(la);
        } else if c.load_assignment.is_some() && c.eds_cluster_config.is_some() {
            errors.add("eds_cluster_config", "only for type: EDS");
        }
        let before = errors.len();
        let built = translate::cluster(&c, "", &mut errors);
        if let (Some(m), true) = (built, errors.len() == before) {
            let m = Arc::new(m);
            cache.clusters.insert(name.clone(), (acc.resource.bytes.clone(), assignment_bytes, m.clone()));
            clusters.insert(name.clone(), m);
        }
        absorb(errors, &mut all);
    }
    cache.clusters.retain(|n, _| dynamic.clusters.contains_key(n));
    cache.cluster_secrets.retain(|n, _| dynamic.clusters.contains_key(n));

    // ---- route configurations (RDS), each checked once on its own
    for (name, acc) in &dynamic.routes {
        if cache.routes.get(name).is_some_and(|b| *b == acc.resource.bytes) {
            continue;
        }
        let mut errors = Errors::new(&label(ROUTE_CONFIGURATION, name));
        let referenced = referenced_clusters(&acc.resource.message);
        let set: HashSet<&str> = referenced.iter().map(String::as_str).collect();
        let before = errors.len();
        translate::route_config(&acc.resource.message, "", &set, &mut errors);
        if errors.len() == before {
            cache.routes.insert(name.clone(), acc.resource.bytes.clone());
        }
        absorb(errors, &mut all);
    }
    cache.routes.retain(|n, _| dynamic.routes.contains_key(n));

    // ---- listeners (LDS, with RDS folded in)
    let cluster_names: HashSet<&str> = clusters.keys().map(String::as_str).collect();
    let mut listeners = base.listeners.clone();
    let mut tcp_listeners = base.tcp_listeners.clone();
    let mut addresses: HashMap<SocketAddr, String> = base
        .listeners
        .iter()
        .map(|l| (l.address, &l.name))
        .chain(base.tcp_listeners.iter().map(|l| (l.address, &l.name)))
        .map(|(a, n)| (a, format!("static listener {n:?}")))
        .collect();
    for (name, acc) in &dynamic.listeners {
        let l = &acc.resource.message;
        let mut errors = Errors::new(&label(LISTENER, name));
        if base.listeners.iter().any(|s| &s.name == name) || base.tcp_listeners.iter().any(|s| &s.name == name) {
            errors.add("name", "a static listener already has this name");
            absorb(errors, &mut all);
            continue;
        }
        let address = translate::ip_socket_address(l.address.as_ref(), "address", &mut errors);
        if let Some(a) = address.filter(|a| a.port() != 0) {
            if let Some(other) = addresses.insert(a, format!("listener {name:?}")) {
                errors.add("address", format!("{a} is already used by {other}"));
            }
        }
        let contexts = translate::sds::listener_tls_contexts(l);
        if !ads_reachable(&contexts, &mut errors) {
            absorb(errors, &mut all);
            continue;
        }
        let Some(secrets) = secret_bytes(&contexts) else {
            warming.listeners.push(name.clone());
            absorb(errors, &mut all);
            continue;
        };
        if cache.listener_secrets.get(name) != Some(&secrets) {
            cache.listeners.remove(name);
            cache.listener_secrets.insert(name.clone(), secrets);
        }
        let with_secrets = translate::sds::resolve_listener(l, known);
        let l = &with_secrets;
        // TCP proxy listeners: no RDS, nothing to wait for; translated each
        // build (they are small).
        if translate::is_tcp_proxy_listener(l) {
            if let Some(t) = translate::tcp_listener_body(l, name.clone(), address, "", &cluster_names, &mut errors) {
                tcp_listeners.push(Arc::new(t));
            }
            absorb(errors, &mut all);
            continue;
        }
        let names = rds_names(l);
        let mut route_bytes = Vec::new();
        let mut waiting = false;
        for r in &names {
            match dynamic.routes.get(r) {
                Some(rc) => route_bytes.push(rc.resource.bytes.clone()),
                None if dynamic.rds_given_up.contains(r) => route_bytes.push(Vec::new()),
                None => waiting = true,
            }
        }
        if let Some((bytes, rbytes, model)) = cache.listeners.get(name) {
            if *bytes == acc.resource.bytes && *rbytes == route_bytes && !waiting {
                listeners.push(model.clone());
                absorb(errors, &mut all);
                continue;
            }
        }
        // Check the listener on its own even while it waits for RDS, so a
        // bad listener is NACKed when it arrives, not when its routes do.
        let lds = base.xds.as_ref().and_then(|x| x.lds.as_ref()).and_then(|s| s.server.as_ref());
        let (resolved, referenced) = resolve_rds(l, lds, dynamic, &mut errors);
        let mut set = cluster_names.clone();
        set.extend(referenced.iter().map(String::as_str));
        let before = errors.len();
        let built = translate::listener_body(&resolved, name.clone(), address, "", &set, &mut errors);
        if waiting {
            warming.listeners.push(name.clone());
        } else if let (Some(m), true) = (built, errors.len() == before) {
            let m = Arc::new(m);
            cache.listeners.insert(name.clone(), (acc.resource.bytes.clone(), route_bytes, m.clone()));
            listeners.push(m);
        }
        absorb(errors, &mut all);
    }
    cache.listeners.retain(|n, _| dynamic.listeners.contains_key(n));
    cache.listener_secrets.retain(|n, _| dynamic.listeners.contains_key(n));

    if let Some(e) = ConfigErrors::from_vec(all) {
        return Err(e);
    }
    let dump = dump(dynamic, &warming);
    Ok((
        model::Config {
            version: base.version,
            node: base.node.clone(),
            admin: base.admin.clone(),
            listeners,
            tcp_listeners,
            clusters,
            bootstrap_json: base.bootstrap_json.clone(),
            last_updated: super::now_rfc3339(),
            xds: base.xds.clone(),
            dynamic: Some(Arc::new(dump)),
        },
        warming,
    ))
}

/// meshgate fetches RDS from where LDS comes from, and EDS from where CDS
/// comes from (ADS, or the same `api_config_source` server and api_type):
/// a listener's `rds.config_source` / a cluster's `eds_config` must say so.
fn check_source(
    source: Option<&core::ConfigSource>,
    parent: Option<&model::XdsServer>,
    parent_field: &str,
    path: &str,
    errors: &mut Errors,
) {
    use core::api_config_source::ApiType;
    use core::config_source::ConfigSourceSpecifier;
    let same_server = |a: &core::ApiConfigSource, s: &model::XdsServer| {
        let api_type = match s.api_type {
            model::XdsApiType::Grpc => ApiType::Grpc,
            model::XdsApiType::DeltaGrpc => ApiType::DeltaGrpc,
            model::XdsApiType::Rest => ApiType::Rest,
        };
        let cluster = match a.grpc_services.first().and_then(|g| g.target_specifier.as_ref()) {
            Some(core::grpc_service::TargetSpecifier::EnvoyGrpc(g)) => Some(g.cluster_name.as_str()),
            _ => a.cluster_names.first().map(String::as_str),
        };
        a.api_type == api_type as i32 && cluster == Some(s.cluster.as_str())
    };
    match (source.and_then(|s| s.config_source_specifier.as_ref()), parent) {
        (Some(ConfigSourceSpecifier::Ads(_)), None) => {}
        (Some(ConfigSourceSpecifier::ApiConfigSource(a)), Some(s)) if same_server(a, s) => {}
        (None, _) => errors.add(path, "required"),
        (_, None) => errors.add(
            path,
            format!("must be `ads: {{}}`: meshgate fetches it from where dynamic_resources.{parent_field} points (ADS)"),
        ),
        (_, Some(s)) => errors.add(
            path,
            format!(
                "must be an api_config_source with the api_type and cluster of dynamic_resources.{parent_field} ({:?} on {:?}): meshgate fetches it from the same server",
                s.api_type, s.cluster
            ),
        ),
    }
}

/// The listener with every `rds` replaced by the RouteConfiguration it
/// names (an empty one while it has not arrived), and the clusters those
/// route configurations name.
fn resolve_rds(
    l: &lis::Listener,
    lds: Option<&model::XdsServer>,
    dynamic: &DynamicResources,
    errors: &mut Errors,
) -> (lis::Listener, Vec<String>) {
    let mut out = l.clone();
    let mut referenced = Vec::new();
    for (i, chain) in out.filter_chains.iter_mut().enumerate() {
        for (j, f) in chain.filters.iter_mut().enumerate() {
            let Some(mut h) = decode_hcm(f) else { continue };
            let Some(hcm::http_connection_manager::RouteSpecifier::Rds(r)) = &h.route_specifier else { continue };
            let path = format!("filter_chains[{i}].filters[{j}].typed_config.rds");
            check_source(r.config_source.as_ref(), lds, "lds_config", &join(&path, "config_source"), errors);
            if r.route_config_name.is_empty() {
                errors.add(join(&path, "route_config_name"), "required");
            }
            let rc = match dynamic.routes.get(&r.route_config_name) {
                Some(rc) => rc.resource.message.clone(),
                None => rt::RouteConfiguration { name: r.route_config_name.clone(), ..Default::default() },
            };
            referenced.extend(referenced_clusters(&rc));
            h.route_specifier = Some(hcm::http_connection_manager::RouteSpecifier::RouteConfig(rc));
            if let Some(lis::filter::ConfigType::TypedConfig(any)) = &mut f.config_type {
                any.value = h.encode_to_vec();
            }
        }
    }
    (out, referenced)
}

/// Cluster names a route configuration's routes forward to.
fn referenced_clusters(rc: &rt::RouteConfiguration) -> Vec<String> {
    use rt::route_action::ClusterSpecifier;
    let mut out = Vec::new();
    for vh in &rc.virtual_hosts {
        for r in &vh.routes {
            if let Some(rt::route::Action::Route(a)) = &r.action {
                match &a.cluster_specifier {
                    Some(ClusterSpecifier::Cluster(c)) => out.push(c.clone()),
                    Some(ClusterSpecifier::WeightedClusters(w)) => {
                        out.extend(w.clusters.iter().map(|c| c.name.clone()).filter(|n| !n.is_empty()))
                    }
                    _ => {}
                }
            }
        }
    }
    out
}

fn dump(d: &DynamicResources, warming: &Warming) -> model::DynamicDump {
    fn entries<T>(map: &BTreeMap<String, Accepted<T>>, warming: &[String]) -> Vec<model::DynamicResource> {
        map.iter()
            .map(|(name, a)| model::DynamicResource {
                name: name.clone(),
                version_info: a.version_info.clone(),
                last_updated: a.last_updated.clone(),
                json: a.resource.json.clone(),
                warming: warming.contains(name),
            })
            .collect()
    }
    model::DynamicDump {
        listeners: entries(&d.listeners, &warming.listeners),
        route_configs: entries(&d.routes, &[]),
        clusters: entries(&d.clusters, &warming.clusters),
        endpoint_configs: entries(&d.endpoints, &[]),
    }
}

/// Encodes a resource written in proto3 JSON (tests and tools: control
/// planes in tests describe resources the way operators write them).
pub fn encode_json(full_name: &str, json: &serde_json::Value) -> Result<Vec<u8>, String> {
    let message = DynamicMessage::deserialize(super::message_descriptor(full_name), json).map_err(|e| e.to_string())?;
    Ok(message.encode_to_vec())
}

/// A message's canonical proto3 JSON (lowerCamelCase names, `Any` with
/// `@type`): what the REST-JSON xDS transport sends (`DiscoveryRequest`).
pub fn to_canonical_json(full_name: &str, bytes: &[u8]) -> Result<String, String> {
    let message = DynamicMessage::decode(super::message_descriptor(full_name), bytes).map_err(|e| e.to_string())?;
    serde_json::to_string(&message).map_err(|e| e.to_string())
}

/// Parses proto3 JSON (either field-name style) into the message's binary
/// encoding; fields this build does not know are skipped, as the proto3
/// JSON mapping allows for messages from a newer peer (REST-JSON xDS
/// `DiscoveryResponse`s).
pub fn from_proto3_json(full_name: &str, text: &str) -> Result<Vec<u8>, String> {
    let mut de = serde_json::Deserializer::from_str(text);
    let options = prost_reflect::DeserializeOptions::new().deny_unknown_fields(false);
    let message = DynamicMessage::deserialize_with_options(super::message_descriptor(full_name), &mut de, &options)
        .map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    Ok(message.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootstrap::{load_str, Format};
    use serde_json::json;

    const XDS_CLUSTER: &str = r#"
    - name: xds_cluster
      type: STATIC
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config: { http2_protocol_options: {} }
      load_assignment:
        cluster_name: xds_cluster
        endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 18000 }}}}]}]
"#;

    fn bootstrap(dynamic: &str) -> String {
        format!("node: {{ id: n1, cluster: c1, locality: {{ zone: z1 }}, metadata: {{ k: v }} }}\ndynamic_resources:\n{dynamic}\nstatic_resources:\n  clusters:{XDS_CLUSTER}")
    }

    const ADS: &str = "  ads_config: { api_type: GRPC, transport_api_version: V3, grpc_services: [{ envoy_grpc: { cluster_name: xds_cluster }}] }\n  lds_config: { ads: {}, resource_api_version: V3 }\n  cds_config: { ads: {}, resource_api_version: V3, initial_fetch_timeout: 2s }";

    fn err_text(text: &str) -> String {
        load_str(text, Format::Yaml, "b.yaml").unwrap_err().to_string()
    }

    #[test]
    fn ads_bootstrap_with_envoy_defaults() {
        let cfg = load_str(&bootstrap(ADS), Format::Yaml, "b.yaml").unwrap();
        let xds = cfg.xds.as_deref().unwrap();
        let ads = xds.ads.as_ref().unwrap();
        assert_eq!(ads.api_type, model::XdsApiType::Grpc);
        assert_eq!(ads.cluster, "xds_cluster");
        assert_eq!((ads.backoff_base, ads.backoff_max), (DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_MAX));
        assert_eq!(xds.lds.as_ref().unwrap().initial_fetch_timeout, Some(Duration::from_secs(15)));
        assert_eq!(xds.cds.as_ref().unwrap().initial_fetch_timeout, Some(Duration::from_secs(2)));
        assert!(xds.lds.as_ref().unwrap().server.is_none());
        assert!(cfg.clusters.contains_key("xds_cluster"));
    }

    #[test]
    fn retry_back_off_sets_the_reconnect_back_off() {
        let text = bootstrap(&ADS.replace(
            "envoy_grpc: { cluster_name: xds_cluster }",
            "envoy_grpc: { cluster_name: xds_cluster, retry_policy: { retry_back_off: { base_interval: 0.1s, max_interval: 1s }}}",
        ));
        let cfg = load_str(&text, Format::Yaml, "b.yaml").unwrap();
        let ads = cfg.xds.as_deref().unwrap().ads.clone().unwrap();
        assert_eq!((ads.backoff_base, ads.backoff_max), (Duration::from_millis(100), Duration::from_secs(1)));
    }

    #[test]
    fn unsupported_variants_name_their_path() {
        let e = err_text(&bootstrap(&ADS.replace("lds_config: { ads: {}", "lds_config: { api_config_source: { api_type: REST, refresh_delay: 0s, grpc_services: [{ envoy_grpc: { cluster_name: xds_cluster }}] }")));
        assert!(
            e.contains("dynamic_resources.lds_config.api_config_source.grpc_services: not used with api_type REST"),
            "{e}"
        );
        assert!(
            e.contains("dynamic_resources.lds_config.api_config_source.refresh_delay: must be greater than 0s"),
            "{e}"
        );
        let e = err_text(&bootstrap(&ADS.replace("transport_api_version: V3", "transport_api_version: V2")));
        assert!(e.contains("dynamic_resources.ads_config.transport_api_version: unsupported value V2"), "{e}");
        let e = err_text(&bootstrap(&ADS.replace("cluster_name: xds_cluster", "cluster_name: nowhere")));
        assert!(e.contains("dynamic_resources.ads_config.grpc_services[0].envoy_grpc.cluster_name: the xDS server cluster \"nowhere\" must be defined in static_resources.clusters"), "{e}");
        let e = err_text(&bootstrap(&ADS.replace("grpc_services: [{", "refresh_delay: 1s, grpc_services: [{")));
        assert!(e.contains("dynamic_resources.ads_config.refresh_delay: only for api_type REST"), "{e}");
        let e = err_text(&bootstrap(&ADS.replace("api_type: GRPC", "api_type: REST")));
        assert!(e.contains("dynamic_resources.ads_config.api_type: REST cannot carry ADS"), "{e}");
        let cfg = load_str(&bootstrap(&ADS.replace("api_type: GRPC", "api_type: DELTA_GRPC")), Format::Yaml, "b.yaml");
        assert_eq!(cfg.unwrap().xds.unwrap().ads.as_ref().unwrap().api_type, model::XdsApiType::DeltaGrpc);
        let e = err_text(&bootstrap("  lds_config: { ads: {} }"));
        assert!(e.contains("dynamic_resources.lds_config.ads: `ads` needs dynamic_resources.ads_config"), "{e}");
        let e = err_text(&bootstrap(&ADS.replace(
            "grpc_services: [{ envoy_grpc: { cluster_name: xds_cluster }}]",
            "grpc_services: [{ google_grpc: { target_uri: x, stat_prefix: y }}]",
        )));
        assert!(e.contains("dynamic_resources.ads_config.grpc_services[0].google_grpc: unsupported field"), "{e}");
    }

    const PER_TYPE: &str = "  lds_config: { api_config_source: { api_type: REST, cluster_names: [xds_cluster], refresh_delay: 0.2s, request_timeout: 2s } }\n  cds_config: { api_config_source: { api_type: DELTA_GRPC, grpc_services: [{ envoy_grpc: { cluster_name: xds_cluster }}] } }";

    #[test]
    fn per_type_servers_and_their_rds_eds_sources() {
        let base = load_str(&bootstrap(PER_TYPE), Format::Yaml, "b.yaml").unwrap();
        let xds = base.xds.as_deref().unwrap();
        assert!(xds.ads.is_none());
        let lds = xds.lds.as_ref().unwrap().server.clone().unwrap();
        assert_eq!(
            (lds.api_type, lds.cluster.as_str(), lds.refresh_delay, lds.request_timeout),
            (model::XdsApiType::Rest, "xds_cluster", Duration::from_millis(200), Duration::from_secs(2))
        );
        assert_eq!(xds.cds.as_ref().unwrap().server.as_ref().unwrap().api_type, model::XdsApiType::DeltaGrpc);

        // RDS must come from the LDS server, EDS from the CDS server.
        let rest = json!({"api_config_source": {"api_type": "REST", "cluster_names": ["xds_cluster"]}});
        let delta = json!({"api_config_source": {"api_type": "DELTA_GRPC", "grpc_services": [{"envoy_grpc": {"cluster_name": "xds_cluster"}}]}});
        let with_source = |mut l: serde_json::Value, cs: &serde_json::Value| {
            l["filter_chains"][0]["filters"][0]["typed_config"]["rds"]["config_source"] = cs.clone();
            l
        };
        let mut d = DynamicResources::default();
        d.listeners.insert("l1".into(), accepted(LISTENER, with_source(listener("l1", 10001, "r1"), &rest), "1"));
        let mut c1 = eds_cluster("c1");
        c1["eds_cluster_config"]["eds_config"] = delta.clone();
        d.clusters.insert("c1".into(), accepted(CLUSTER, c1, "1"));
        build(&base, &d, &mut TranslationCache::default()).unwrap();

        d.listeners.insert("l1".into(), accepted(LISTENER, with_source(listener("l1", 10001, "r1"), &delta), "1"));
        d.clusters.insert("c1".into(), accepted(CLUSTER, eds_cluster("c1"), "1"));
        let e = build(&base, &d, &mut TranslationCache::default()).unwrap_err().to_string();
        assert!(e.contains("Listener \"l1\": filter_chains[0].filters[0].typed_config.rds.config_source: must be an api_config_source with the api_type and cluster of dynamic_resources.lds_config"), "{e}");
        assert!(e.contains("Cluster \"c1\": eds_cluster_config.eds_config: must be an api_config_source"), "{e}");
        // And with ADS, `ads: {}` is what they must say.
        let mut d = DynamicResources::default();
        d.listeners.insert("l1".into(), accepted(LISTENER, with_source(listener("l1", 10001, "r1"), &rest), "1"));
        let e = build(&self::base(), &d, &mut TranslationCache::default()).unwrap_err().to_string();
        assert!(e.contains("rds.config_source: must be `ads: {}`"), "{e}");
    }

    #[test]
    fn a_secret_over_ads_without_ads_config_is_an_error_not_a_wait() {
        let base = load_str(&bootstrap(PER_TYPE), Format::Yaml, "b.yaml").unwrap();
        let mut c1 = json!({"name": "c1", "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": "c1", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 9000}}}}]}]}});
        c1["transport_socket"] = json!({"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "common_tls_context": {"tls_certificate_sds_secret_configs": [{"name": "client-cert", "sds_config": {"ads": {}}}]}}});
        let mut d = DynamicResources::default();
        d.clusters.insert("c1".into(), accepted(CLUSTER, c1, "1"));
        let e = build(&base, &d, &mut TranslationCache::default()).unwrap_err().to_string();
        assert!(
            e.contains("Cluster \"c1\": transport_socket: secret \"client-cert\" comes over ADS (sds_config.ads) but the bootstrap has no dynamic_resources.ads_config"),
            "{e}"
        );
    }

    #[test]
    fn the_xds_cluster_is_an_http2_cluster() {
        let cfg = load_str(&bootstrap(ADS), Format::Yaml, "b.yaml").unwrap();
        assert_eq!(cfg.clusters["xds_cluster"].upstream_protocol, model::UpstreamProtocol::Http2);
    }

    fn accepted<T: Message + Default>(full: &str, json: serde_json::Value, version: &str) -> Accepted<T> {
        let bytes = encode_json(full, &json).unwrap();
        Accepted {
            resource: Arc::new(decode(full, &bytes).unwrap()),
            version_info: version.into(),
            last_updated: "t".into(),
        }
    }

    fn listener(name: &str, port: u16, rds: &str) -> serde_json::Value {
        json!({"name": name, "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
          "filter_chains": [{"filters": [{"name": "hcm", "typed_config": {
            "@type": format!("type.googleapis.com/{HCM}"), "stat_prefix": "in",
            "rds": {"route_config_name": rds, "config_source": {"ads": {}}},
            "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}]})
    }

    fn route(name: &str, cluster: &str) -> serde_json::Value {
        json!({"name": name, "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}]}]})
    }

    fn eds_cluster(name: &str) -> serde_json::Value {
        json!({"name": name, "type": "EDS", "eds_cluster_config": {"eds_config": {"ads": {}}}})
    }

    fn cla(name: &str, port: u16) -> serde_json::Value {
        json!({"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]})
    }

    fn base() -> model::Config {
        load_str(&bootstrap(ADS), Format::Yaml, "b.yaml").unwrap()
    }

    #[test]
    fn listeners_wait_for_routes_and_clusters_for_endpoints() {
        let base = base();
        let mut d = DynamicResources::default();
        d.listeners.insert("l1".into(), accepted(LISTENER, listener("l1", 10001, "r1"), "1"));
        d.clusters.insert("c1".into(), accepted(CLUSTER, eds_cluster("c1"), "1"));
        let mut cache = TranslationCache::default();
        let (cfg, warming) = build(&base, &d, &mut cache).unwrap();
        assert_eq!(warming, Warming { listeners: vec!["l1".into()], clusters: vec!["c1".into()] });
        assert!(cfg.listeners.is_empty() && !cfg.clusters.contains_key("c1"));

        d.routes.insert("r1".into(), accepted(ROUTE_CONFIGURATION, route("r1", "c1"), "1"));
        d.endpoints.insert("c1".into(), accepted(CLUSTER_LOAD_ASSIGNMENT, cla("c1", 9000), "1"));
        let (cfg, warming) = build(&base, &d, &mut cache).unwrap();
        assert_eq!(warming, Warming::default());
        assert_eq!(cfg.listeners[0].http.route_config.name, "r1");
        let c1 = cfg.clusters["c1"].clone();
        assert_eq!(c1.endpoints.len(), 1);
        let dump = cfg.dynamic.as_deref().unwrap();
        assert_eq!(dump.listeners[0].version_info, "1");

        // An unrelated change keeps the cluster's translation (and so its pools).
        d.routes.insert("r1".into(), accepted(ROUTE_CONFIGURATION, route("r1", "c2"), "2"));
        let (cfg, _) = build(&base, &d, &mut cache).unwrap();
        assert!(Arc::ptr_eq(&cfg.clusters["c1"], &c1));
        // A new assignment makes a new cluster.
        d.endpoints.insert("c1".into(), accepted(CLUSTER_LOAD_ASSIGNMENT, cla("c1", 9001), "2"));
        let (cfg, _) = build(&base, &d, &mut cache).unwrap();
        assert!(!Arc::ptr_eq(&cfg.clusters["c1"], &c1));

        // Once the initial fetch timed out, they go live without.
        let mut d2 = DynamicResources {
            rds_given_up: ["r9".to_string()].into(),
            eds_given_up: ["c9".to_string()].into(),
            ..Default::default()
        };
        d2.listeners.insert("l1".into(), accepted(LISTENER, listener("l1", 10001, "r9"), "1"));
        d2.clusters.insert("c9".into(), accepted(CLUSTER, eds_cluster("c9"), "1"));
        let (cfg, warming) = build(&base, &d2, &mut TranslationCache::default()).unwrap();
        assert_eq!(warming, Warming::default());
        assert!(cfg.clusters["c9"].endpoints.is_empty());
        assert!(cfg.listeners[0].http.route_config.virtual_hosts.is_empty());
    }

    #[test]
    fn errors_name_the_resource_and_the_path() {
        let bytes = encode_json(CLUSTER, &json!({"name": "c1", "type": "STATIC", "lb_subset_config": {}})).unwrap();
        let e = decode::<cl::Cluster>(CLUSTER, &bytes).unwrap_err().to_string();
        assert!(e.starts_with("Cluster \"c1\": lb_subset_config: unsupported field"), "{e}");

        let base = base();
        let mut d = DynamicResources::default();
        let mut bad = route("r1", "c1");
        bad["virtual_hosts"][0]["domains"] = json!(["a.*.com"]);
        d.routes.insert("r1".into(), accepted(ROUTE_CONFIGURATION, bad, "1"));
        let e = build(&base, &d, &mut TranslationCache::default()).unwrap_err().to_string();
        assert!(e.contains("RouteConfiguration \"r1\": virtual_hosts[0].domains[0]"), "{e}");

        let mut d = DynamicResources::default();
        d.listeners.insert("l1".into(), accepted(LISTENER, listener("l1", 10001, "r1"), "1"));
        d.listeners.insert("l2".into(), accepted(LISTENER, listener("l2", 10001, "r1"), "1"));
        let e = build(&base, &d, &mut TranslationCache::default()).unwrap_err().to_string();
        assert!(e.contains("Listener \"l2\": address: 127.0.0.1:10001 is already used by listener \"l1\""), "{e}");

        let mut d = DynamicResources::default();
        d.clusters.insert("xds_cluster".into(), accepted(CLUSTER, eds_cluster("xds_cluster"), "1"));
        let e = build(&base, &d, &mut TranslationCache::default()).unwrap_err().to_string();
        assert!(e.contains("Cluster \"xds_cluster\": name: a static cluster already has this name"), "{e}");
    }
}
