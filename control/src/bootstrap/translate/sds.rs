//! SDS: TLS secrets referenced by name from a `CommonTlsContext`
//! (`tls_certificate_sds_secret_configs`, `validation_context_sds_secret_config`,
//! `combined_validation_context`) instead of written inline.
//!
//! Follows Envoy's "Secret discovery service (SDS)" configuration reference
//! and the `extensions.transport_sockets.tls.v3.Secret` / `SdsSecretConfig`
//! and `config.core.v3.PathConfigSource` API docs.  A reference resolves in
//! one of three ways, by its `sds_config`:
//!
//! * **absent**: the `Secret` of that name in `static_resources.secrets`;
//! * **`ads: {}`**: the `Secret` received over ADS (`xds` crate,
//!   `Kind::Secret`); a listener or cluster waits (warms) until it arrives;
//! * **`path_config_source`** (or the deprecated `path`): a
//!   DiscoveryResponse-shaped YAML/JSON file whose `resources` are
//!   `Secret`s.  It must exist at load time; the data plane re-reads it, and
//!   the certificate/key/CA files it names, when they (or
//!   `watched_directory`) change — `model::TlsSource::SdsFile`.
//!
//! Named (static and ADS) secrets are folded into the listener or cluster
//! proto before translation ([`resolve_listener`], [`resolve_cluster`]),
//! the way `rds` is replaced by its RouteConfiguration, so the TLS
//! translation sees ordinary `tls_certificates` / `validation_context`.
//! File secrets stay references ([`certificate_from_file`],
//! [`validation_from_file`]).  This module must not read anything on the
//! request path: the data plane calls [`read_sds_file_field`] only when a
//! watched file changed.

use std::collections::{BTreeMap, HashMap};

use envoy_types::pb::envoy::config::cluster::v3 as cl;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::listener::v3 as lis;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use prost_reflect::DynamicMessage;

use super::packed_type;
use crate::bootstrap::supported::{DOWNSTREAM_TLS, UPSTREAM_TLS};
use crate::bootstrap::{join, message_descriptor, type_name, Errors, Format};
use crate::model;

/// `envoy.extensions.transport_sockets.tls.v3.Secret`.
pub const SECRET: &str = "envoy.extensions.transport_sockets.tls.v3.Secret";

/// The named secrets a translation can see.
#[derive(Clone, Copy)]
pub struct KnownSecrets<'a> {
    /// `static_resources.secrets` (references without `sds_config`).
    pub statics: &'a HashMap<String, tls::Secret>,
    /// Secrets received over ADS (references with `sds_config: {ads: {}}`);
    /// `None` when translating the bootstrap's static resources.
    pub ads: Option<&'a BTreeMap<String, tls::Secret>>,
}

impl KnownSecrets<'_> {
    fn find(&self, r: &tls::SdsSecretConfig) -> Option<&tls::Secret> {
        use core::config_source::ConfigSourceSpecifier as S;
        match r.sds_config.as_ref().map(|c| c.config_source_specifier.as_ref()) {
            None => self.statics.get(&r.name),
            Some(Some(S::Ads(_))) => self.ads.and_then(|a| a.get(&r.name)),
            Some(_) => None,
        }
    }
}

/// Checks `static_resources.secrets` and indexes the good ones by name.
pub(crate) fn static_secrets(list: &[tls::Secret], errors: &mut Errors) -> HashMap<String, tls::Secret> {
    let mut out = HashMap::new();
    let mut first: HashMap<&str, usize> = HashMap::new();
    for (i, s) in list.iter().enumerate() {
        let path = format!("static_resources.secrets[{i}]");
        if s.name.is_empty() {
            errors.add(join(&path, "name"), "required (listeners and clusters reference secrets by name)");
            continue;
        }
        if let Some(f) = first.insert(&s.name, i) {
            errors.add(
                join(&path, "name"),
                format!("duplicate secret name {:?} (also static_resources.secrets[{f}])", s.name),
            );
            continue;
        }
        if check_secret(s, &path, errors) {
            out.insert(s.name.clone(), s.clone());
        }
    }
    out
}

/// Whether a secret is usable: a `tls_certificate` whose chain and key
/// load, or a `validation_context` meshgate supports.
pub fn check_secret(s: &tls::Secret, path: &str, errors: &mut Errors) -> bool {
    use tls::secret::Type;
    match &s.r#type {
        Some(Type::TlsCertificate(c)) => super::tls::certificate(c, &join(path, "tls_certificate"), errors).is_some(),
        Some(Type::ValidationContext(v)) => {
            super::tls::validation_context(v, &join(path, "validation_context"), errors).is_some()
        }
        Some(_) => false, // session_ticket_keys, generic_secret: reported by the allowlist walk
        None => {
            errors.add(path, "needs tls_certificate or validation_context");
            false
        }
    }
}

/// The secrets a listener or cluster's TLS contexts request over ADS
/// (`sds_config: {ads: {}}`), each with its `initial_fetch_timeout`
/// (Envoy's default 15 s; 0 disables it), for the xDS client to subscribe to.
pub fn ads_secret_refs(contexts: &[tls::CommonTlsContext]) -> Vec<(String, Option<std::time::Duration>)> {
    let mut out: Vec<(String, Option<std::time::Duration>)> = Vec::new();
    for common in contexts {
        for r in references(common) {
            let Some(cs) = &r.sds_config else { continue };
            if !matches!(cs.config_source_specifier, Some(core::config_source::ConfigSourceSpecifier::Ads(_))) {
                continue;
            }
            let timeout = match &cs.initial_fetch_timeout {
                None => Some(std::time::Duration::from_secs(15)),
                Some(d) if d.seconds >= 0 && (0..1_000_000_000).contains(&d.nanos) => {
                    Some(std::time::Duration::new(d.seconds as u64, d.nanos as u32)).filter(|d| !d.is_zero())
                }
                Some(_) => None,
            };
            if !out.iter().any(|(n, _)| n == &r.name) {
                out.push((r.name.clone(), timeout));
            }
        }
    }
    out
}

/// `static_resources.secrets` of a loaded bootstrap (from its canonical
/// JSON, which `model::Config` keeps), for dynamic listeners and clusters
/// that name them.
pub fn static_secrets_of(bootstrap_json: &serde_json::Value) -> HashMap<String, tls::Secret> {
    let Some(serde_json::Value::Array(list)) = bootstrap_json.pointer("/static_resources/secrets") else {
        return HashMap::new();
    };
    list.iter()
        .filter_map(|item| crate::bootstrap::dynamic::encode_json(SECRET, item).ok())
        .filter_map(|bytes| tls::Secret::decode(bytes.as_slice()).ok())
        .map(|s| (s.name.clone(), s))
        .collect()
}

fn references(common: &tls::CommonTlsContext) -> Vec<&tls::SdsSecretConfig> {
    use tls::common_tls_context::ValidationContextType as V;
    let mut refs: Vec<&tls::SdsSecretConfig> = common.tls_certificate_sds_secret_configs.iter().collect();
    match &common.validation_context_type {
        Some(V::ValidationContextSdsSecretConfig(r)) => refs.push(r),
        Some(V::CombinedValidationContext(c)) => refs.extend(c.validation_context_sds_secret_config.as_ref()),
        _ => {}
    }
    refs
}

/// The `CommonTlsContext`s of a listener's filter chains.
pub fn listener_tls_contexts(l: &lis::Listener) -> Vec<tls::CommonTlsContext> {
    l.filter_chains
        .iter()
        .filter_map(|c| typed_config(c.transport_socket.as_ref(), DOWNSTREAM_TLS))
        .filter_map(|any| tls::DownstreamTlsContext::decode(any.value.as_slice()).ok())
        .filter_map(|t| t.common_tls_context)
        .collect()
}

/// The `CommonTlsContext` of a cluster's transport socket.
pub fn cluster_tls_contexts(c: &cl::Cluster) -> Vec<tls::CommonTlsContext> {
    typed_config(c.transport_socket.as_ref(), UPSTREAM_TLS)
        .and_then(|any| tls::UpstreamTlsContext::decode(any.value.as_slice()).ok())
        .and_then(|t| t.common_tls_context)
        .into_iter()
        .collect()
}

fn typed_config<'a>(ts: Option<&'a core::TransportSocket>, full_name: &str) -> Option<&'a Any> {
    match ts.and_then(|t| t.config_type.as_ref()) {
        Some(core::transport_socket::ConfigType::TypedConfig(any)) if packed_type(any) == full_name => Some(any),
        _ => None,
    }
}

/// The listener with every reference to a known named secret replaced by
/// the secret's content.
pub fn resolve_listener(l: &lis::Listener, known: KnownSecrets<'_>) -> lis::Listener {
    let mut out = l.clone();
    for chain in &mut out.filter_chains {
        rewrite::<tls::DownstreamTlsContext>(chain.transport_socket.as_mut(), DOWNSTREAM_TLS, known, |t| {
            t.common_tls_context.as_mut()
        });
    }
    out
}

/// The cluster with every reference to a known named secret replaced by
/// the secret's content.
pub fn resolve_cluster(c: &cl::Cluster, known: KnownSecrets<'_>) -> cl::Cluster {
    let mut out = c.clone();
    rewrite::<tls::UpstreamTlsContext>(out.transport_socket.as_mut(), UPSTREAM_TLS, known, |t| {
        t.common_tls_context.as_mut()
    });
    out
}

fn rewrite<T: Message + Default>(
    ts: Option<&mut core::TransportSocket>,
    full_name: &str,
    known: KnownSecrets<'_>,
    common: impl Fn(&mut T) -> Option<&mut tls::CommonTlsContext>,
) {
    let Some(core::transport_socket::ConfigType::TypedConfig(any)) = ts.and_then(|t| t.config_type.as_mut()) else {
        return;
    };
    if packed_type(any) != full_name {
        return;
    }
    let Ok(mut ctx) = T::decode(any.value.as_slice()) else { return };
    if let Some(c) = common(&mut ctx) {
        if resolve_common(c, known) {
            any.value = ctx.encode_to_vec();
        }
    }
}

/// Folds known secrets into one context; true when something changed.  A
/// certificate list is replaced only when every reference resolves (a list
/// mixing file and named secrets stays, and translation refuses it).
fn resolve_common(common: &mut tls::CommonTlsContext, known: KnownSecrets<'_>) -> bool {
    use tls::common_tls_context::ValidationContextType as V;
    use tls::secret::Type;
    let mut changed = false;
    if !common.tls_certificate_sds_secret_configs.is_empty() && common.tls_certificates.is_empty() {
        let found: Option<Vec<tls::TlsCertificate>> = common
            .tls_certificate_sds_secret_configs
            .iter()
            .map(|r| match known.find(r).and_then(|s| s.r#type.as_ref()) {
                Some(Type::TlsCertificate(c)) => Some(c.clone()),
                _ => None,
            })
            .collect();
        if let Some(certs) = found {
            common.tls_certificates = certs;
            common.tls_certificate_sds_secret_configs.clear();
            changed = true;
        }
    }
    let validation = |r: &tls::SdsSecretConfig| match known.find(r).and_then(|s| s.r#type.as_ref()) {
        Some(Type::ValidationContext(v)) => Some(v.clone()),
        _ => None,
    };
    let replacement = match &common.validation_context_type {
        Some(V::ValidationContextSdsSecretConfig(r)) => validation(r),
        Some(V::CombinedValidationContext(c)) => c
            .validation_context_sds_secret_config
            .as_ref()
            .and_then(validation)
            .map(|v| merge_validation(c.default_validation_context.as_ref(), &v)),
        _ => None,
    };
    if let Some(v) = replacement {
        common.validation_context_type = Some(V::ValidationContext(v));
        changed = true;
    }
    changed
}

/// `combined_validation_context`: the SDS context merged into the default
/// one with protobuf merge semantics (singular fields replaced, repeated
/// ones appended), as Envoy does.
fn merge_validation(
    default: Option<&tls::CertificateValidationContext>,
    dynamic: &tls::CertificateValidationContext,
) -> tls::CertificateValidationContext {
    let mut merged = default.cloned().unwrap_or_default();
    // Merging bytes this process just encoded from the same type cannot fail.
    let _ = merged.merge(dynamic.encode_to_vec().as_slice());
    merged
}

/// A file reference's (path, watched_directory), or `None` after reporting
/// why the reference cannot be read from a file here.
fn file_source(r: &tls::SdsSecretConfig, path: &str, errors: &mut Errors) -> Option<(String, Option<String>)> {
    use core::config_source::ConfigSourceSpecifier as S;
    if r.name.is_empty() {
        errors.add(join(path, "name"), "required");
        return None;
    }
    let Some(cs) = &r.sds_config else {
        errors.add(path, format!("no secret named {:?} of this kind in static_resources.secrets", r.name));
        return None;
    };
    let cpath = join(path, "sds_config");
    if !matches!(cs.resource_api_version, 0 | 2) {
        errors.add(join(&cpath, "resource_api_version"), "only V3 (or AUTO) is supported");
        return None;
    }
    #[allow(deprecated)]
    let (file, watched) = match &cs.config_source_specifier {
        Some(S::PathConfigSource(p)) => {
            (p.path.clone(), p.watched_directory.as_ref().map(|w| w.path.clone()).filter(|w| !w.is_empty()))
        }
        Some(S::Path(p)) => (p.clone(), None),
        Some(S::Ads(_)) => {
            errors.add(
                join(&cpath, "ads"),
                "secrets over ADS are supported for listeners and clusters received over LDS/CDS, not static ones",
            );
            return None;
        }
        _ => {
            errors
                .add(&cpath, "needs `ads: {}` or `path_config_source` (meshgate fetches SDS over ADS or from a file)");
            return None;
        }
    };
    if file.is_empty() {
        errors.add(join(&cpath, "path_config_source.path"), "required");
        return None;
    }
    Some((file, watched))
}

/// `tls_certificate_sds_secret_configs[i]` read from a file.
pub(super) fn certificate_from_file(
    r: &tls::SdsSecretConfig,
    path: &str,
    errors: &mut Errors,
) -> Option<model::TlsCertificate> {
    let (file, watched_directory) = file_source(r, path, errors)?;
    let secret = load_file_secret(&file, &r.name, path, errors)?;
    let Some(tls::secret::Type::TlsCertificate(c)) = &secret.r#type else {
        errors.add(path, format!("secret {:?} in {file} is not a tls_certificate", r.name));
        return None;
    };
    // Checks the content now, with paths inside the file.
    super::tls::certificate(c, &format!("{file}: secret {:?}.tls_certificate", r.name), errors)?;
    let field = |field| {
        model::TlsSource::SdsFile(model::SdsFileRef {
            path: file.clone(),
            watched_directory: watched_directory.clone(),
            secret: r.name.clone(),
            field,
        })
    };
    Some(model::TlsCertificate {
        certificate_chain: field(model::SecretField::CertificateChain),
        private_key: field(model::SecretField::PrivateKey),
    })
}

/// `validation_context_sds_secret_config` (or the SDS half of
/// `combined_validation_context`, merged into `default`) read from a file.
/// The trusted CA follows the file; the SAN matchers are read at load.
pub(super) fn validation_from_file(
    default: Option<&tls::CertificateValidationContext>,
    r: &tls::SdsSecretConfig,
    path: &str,
    errors: &mut Errors,
) -> Option<model::TlsValidation> {
    let (file, watched_directory) = file_source(r, path, errors)?;
    let secret = load_file_secret(&file, &r.name, path, errors)?;
    let Some(tls::secret::Type::ValidationContext(v)) = &secret.r#type else {
        errors.add(path, format!("secret {:?} in {file} is not a validation_context", r.name));
        return None;
    };
    let merged = merge_validation(default, v);
    let mut out =
        super::tls::validation_context(&merged, &format!("{file}: secret {:?}.validation_context", r.name), errors)?;
    if v.trusted_ca.is_some() {
        out.trusted_ca = model::TlsSource::SdsFile(model::SdsFileRef {
            path: file,
            watched_directory,
            secret: r.name.clone(),
            field: model::SecretField::TrustedCa,
        });
    }
    Some(out)
}

fn load_file_secret(file: &str, name: &str, path: &str, errors: &mut Errors) -> Option<tls::Secret> {
    match secrets_in_file(file) {
        Ok(list) => match list.into_iter().find(|s| s.name == name) {
            Some(s) => Some(s),
            None => {
                errors.add(join(path, "name"), format!("no secret named {name:?} in {file}"));
                None
            }
        },
        Err(e) => {
            errors.add(join(path, "sds_config"), e);
            None
        }
    }
}

/// The `Secret`s of an SDS file (a DiscoveryResponse in YAML or JSON, as
/// Envoy's `path_config_source` reads it), each checked against the
/// allowlist.  Errors name the file and the path inside it.
pub fn secrets_in_file(file: &str) -> Result<Vec<tls::Secret>, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read SDS file {file}: {e}"))?;
    let value = crate::bootstrap::parse(&text, Format::from_path(std::path::Path::new(file)), file)
        .map_err(|e| e.to_string())?;
    let mut errors = Errors::new(file);
    let resources = match value.get("resources") {
        Some(serde_json::Value::Array(items)) => items.as_slice(),
        _ => {
            errors.add("resources", "required: a list of envoy.extensions.transport_sockets.tls.v3.Secret");
            return Err(errors.finish().unwrap_err().to_string());
        }
    };
    let mut out = Vec::new();
    for (i, item) in resources.iter().enumerate() {
        let rpath = format!("resources[{i}]");
        let mut item = item.clone();
        let type_url = item.as_object_mut().and_then(|o| o.remove("@type"));
        match type_url.as_ref().and_then(|t| t.as_str()) {
            Some(t) if type_name(t) == SECRET => {}
            other => {
                errors.add(join(&rpath, "@type"), format!("must be type.googleapis.com/{SECRET}, not {other:?}"));
                continue;
            }
        }
        let message = match DynamicMessage::deserialize(message_descriptor(SECRET), &item) {
            Ok(m) => m,
            Err(e) => {
                errors.add(&rpath, format!("invalid Secret: {e}"));
                continue;
            }
        };
        let before = errors.len();
        crate::bootstrap::supported::check_message(&message, &rpath, None, &mut errors);
        if errors.len() != before {
            continue;
        }
        match tls::Secret::decode(message.encode_to_vec().as_slice()) {
            Ok(s) => out.push(s),
            Err(e) => errors.add(&rpath, format!("cannot decode: {e}")),
        }
    }
    errors.finish().map_err(|e| e.to_string())?;
    Ok(out)
}

/// The PEM bytes of one field of a file-based SDS secret as it is on disk
/// now (the data plane calls this when a watched file changed).
pub fn read_sds_file_field(r: &model::SdsFileRef) -> Result<Vec<u8>, String> {
    let data = secret_field_source(r)?;
    use core::data_source::Specifier as S;
    match data.specifier {
        Some(S::Filename(f)) => std::fs::read(&f).map_err(|e| format!("cannot read {f} (secret {:?}): {e}", r.secret)),
        Some(S::InlineString(s)) => Ok(s.into_bytes()),
        Some(S::InlineBytes(b)) => Ok(b),
        _ => Err(format!("secret {:?} in {}: filename, inline_string or inline_bytes required", r.secret, r.path)),
    }
}

/// The files whose change means a file-based SDS field may have changed:
/// the SDS file, its `watched_directory`, and the file the field names now.
pub fn sds_file_watch_paths(r: &model::SdsFileRef) -> Vec<String> {
    let mut out = vec![r.path.clone()];
    out.extend(r.watched_directory.clone());
    if let Ok(core::DataSource { specifier: Some(core::data_source::Specifier::Filename(f)), .. }) =
        secret_field_source(r)
    {
        out.push(f);
    }
    out
}

fn secret_field_source(r: &model::SdsFileRef) -> Result<core::DataSource, String> {
    use tls::secret::Type;
    let secret = secrets_in_file(&r.path)?
        .into_iter()
        .find(|s| s.name == r.secret)
        .ok_or_else(|| format!("no secret named {:?} in {}", r.secret, r.path))?;
    let source = match (r.field, secret.r#type) {
        (model::SecretField::CertificateChain, Some(Type::TlsCertificate(c))) => c.certificate_chain,
        (model::SecretField::PrivateKey, Some(Type::TlsCertificate(c))) => c.private_key,
        (model::SecretField::TrustedCa, Some(Type::ValidationContext(v))) => v.trusted_ca,
        _ => return Err(format!("secret {:?} in {} changed kind", r.secret, r.path)),
    };
    source.ok_or_else(|| format!("secret {:?} in {}: {:?} missing", r.secret, r.path, r.field))
}
