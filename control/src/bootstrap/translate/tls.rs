//! Listener `transport_socket` `envoy.transport_sockets.tls`
//! (`DownstreamTlsContext`) and `filter_chain_match.server_names` →
//! `model::DownstreamTls`.
//!
//! Semantics follow Envoy's `extensions.transport_sockets.tls.v3` reference:
//! TLS 1.2 is the default minimum and TLS 1.3 the default maximum for
//! servers; meshgate refuses anything below TLS 1.2.  `cipher_suites` take
//! BoringSSL names and apply to TLS 1.2 (TLS 1.3 suites are not
//! configurable, as in Envoy).  Certificates and keys are PEM, from a file
//! (watched for rotation by the data plane) or inline; they are parsed here
//! so a broken file is a load error naming its field.
//!
//! Multiple filter chains are supported when every chain has a TLS
//! transport socket and the same network filters: the client's SNI picks
//! the chain (and so its certificate and validation context), exact names
//! before `*.` wildcards before a chain without `server_names`.

use std::collections::HashMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::listener::v3 as lis;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use prost::Message;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::packed_type;
use crate::bootstrap::matchers;
use crate::bootstrap::supported::{DOWNSTREAM_TLS, TLS_INSPECTOR};
use crate::bootstrap::{join, Errors};
use crate::model;

/// TLS 1.2 cipher suites meshgate (rustls) implements, by their BoringSSL
/// names as Envoy configs spell them.
pub const CIPHER_SUITES: &[&str] = &[
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
];

/// `listener_filters`: whether `envoy.filters.listener.tls_inspector` is
/// there (`None` after reporting errors).  It is the only listener filter.
fn tls_inspector(filters: &[lis::ListenerFilter], listener_path: &str, errors: &mut Errors) -> Option<bool> {
    let mut found = false;
    let mut ok = true;
    for (i, f) in filters.iter().enumerate() {
        let fpath = format!("{listener_path}.listener_filters[{i}]");
        let typed = match &f.config_type {
            Some(lis::listener_filter::ConfigType::TypedConfig(any)) => Some(packed_type(any)),
            Some(_) => {
                ok = false; // reported by the allowlist walk
                continue;
            }
            None => None,
        };
        match typed {
            Some(TLS_INSPECTOR) => {}
            Some(_) => {
                ok = false; // reported by the allowlist walk
                continue;
            }
            None if f.name == "envoy.filters.listener.tls_inspector" => {}
            None => {
                errors.add(
                    join(&fpath, "typed_config"),
                    format!("required for {:?} (meshgate supports only envoy.filters.listener.tls_inspector)", f.name),
                );
                ok = false;
                continue;
            }
        }
        if found {
            errors.add(fpath, "tls_inspector is listed twice");
            ok = false;
        }
        found = true;
    }
    ok.then_some(found)
}

/// The listener's TLS, `Some(None)` for a plain listener, `None` after
/// reporting errors.
///
/// Without `tls_inspector` every chain of a TLS listener is TLS and SNI
/// picks the chain (meshgate reads the ClientHello itself).  With it, chains
/// may also be plaintext and match on `transport_protocol` and
/// `application_protocols`, as in Envoy.
pub(super) fn downstream(
    chains: &[lis::FilterChain],
    listener_filters: &[lis::ListenerFilter],
    listener_path: &str,
    errors: &mut Errors,
) -> Option<Option<Arc<model::DownstreamTls>>> {
    let inspector = tls_inspector(listener_filters, listener_path, errors)?;
    let path = join(listener_path, "filter_chains");
    let with_tls = chains.iter().filter(|c| c.transport_socket.is_some()).count();
    let mut ok = true;
    if !inspector {
        for (i, c) in chains.iter().enumerate() {
            let Some(m) = &c.filter_chain_match else { continue };
            if !m.transport_protocol.is_empty() {
                errors.add(
                    format!("{path}[{i}].filter_chain_match.transport_protocol"),
                    "needs the envoy.filters.listener.tls_inspector listener filter",
                );
                ok = false;
            }
            if !m.application_protocols.is_empty() {
                errors.add(
                    format!("{path}[{i}].filter_chain_match.application_protocols"),
                    "needs the envoy.filters.listener.tls_inspector listener filter",
                );
                ok = false;
            }
        }
        if !ok {
            return None;
        }
    }
    if with_tls == 0 {
        if chains.len() > 1 {
            errors.add(
                format!("{path}[1]"),
                "several filter chains need TLS transport sockets (SNI picks the chain); plain listeners have one",
            );
            return None;
        }
        if let Some(m) = chains.first().and_then(|c| c.filter_chain_match.as_ref()) {
            if !m.server_names.is_empty() || !m.application_protocols.is_empty() || m.transport_protocol == "tls" {
                errors.add(
                    format!("{path}[0].filter_chain_match"),
                    "server_names, application_protocols and transport_protocol tls need a TLS transport_socket (TLS passthrough is not supported)",
                );
                return None;
            }
        }
        return Some(None);
    }
    let mut out = Vec::with_capacity(chains.len());
    // (server name, transport protocol, ALPN) → the chain it selects.
    let mut seen_keys: HashMap<(String, String, String), usize> = HashMap::new();
    for (i, chain) in chains.iter().enumerate() {
        let cpath = format!("{path}[{i}]");
        if i > 0 && chain.filters != chains[0].filters {
            errors.add(
                join(&cpath, "filters"),
                format!("filter chains of one listener must have the same filters as {path}[0] (the match picks the transport only)"),
            );
            ok = false;
        }
        let m = chain.filter_chain_match.clone().unwrap_or_default();
        let mpath = join(&cpath, "filter_chain_match");
        let server_names: Vec<String> = m.server_names.iter().map(|n| n.to_ascii_lowercase()).collect();
        for (j, n) in server_names.iter().enumerate() {
            let npath = format!("{mpath}.server_names[{j}]");
            let bare = n.strip_prefix("*.").unwrap_or(n);
            if bare.is_empty()
                || bare.contains('*')
                || !bare.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
            {
                errors.add(&npath, format!("{n:?} is not a server name or *.suffix wildcard"));
                ok = false;
            }
        }
        let transport_protocol = match m.transport_protocol.as_str() {
            "" => None,
            "tls" | "raw_buffer" => Some(m.transport_protocol.clone()),
            other => {
                errors.add(join(&mpath, "transport_protocol"), format!("{other:?} is not tls or raw_buffer"));
                ok = false;
                None
            }
        };
        for (j, a) in m.application_protocols.iter().enumerate() {
            if a.is_empty() || a.len() > 255 {
                errors.add(format!("{mpath}.application_protocols[{j}]"), "must be 1 to 255 bytes");
                ok = false;
            }
        }
        for n in if server_names.is_empty() { vec![String::new()] } else { server_names.clone() } {
            for a in
                if m.application_protocols.is_empty() { vec![String::new()] } else { m.application_protocols.clone() }
            {
                let key = (n.clone(), transport_protocol.clone().unwrap_or_default(), a);
                if let Some(first) = seen_keys.insert(key, i) {
                    errors.add(&mpath, format!("matches the same connections as {path}[{first}]"));
                    ok = false;
                }
            }
        }
        let Some(ts) = &chain.transport_socket else {
            if !inspector {
                errors.add(
                    join(&cpath, "transport_socket"),
                    "required: every filter chain of a TLS listener uses TLS (add the tls_inspector listener filter to mix TLS and plaintext chains)",
                );
                ok = false;
            } else if !server_names.is_empty() || !m.application_protocols.is_empty() || m.transport_protocol == "tls" {
                errors.add(
                    &mpath,
                    "server_names, application_protocols and transport_protocol tls need a TLS transport_socket (TLS passthrough is not supported)",
                );
                ok = false;
            } else {
                out.push(model::TlsFilterChain {
                    server_names,
                    transport_protocol,
                    application_protocols: Vec::new(),
                    context: None,
                });
            }
            continue;
        };
        if m.transport_protocol == "raw_buffer" {
            errors.add(join(&mpath, "transport_protocol"), "raw_buffer never matches a chain that terminates TLS");
            ok = false;
        }
        let tpath = join(&cpath, "transport_socket");
        let Some(core::transport_socket::ConfigType::TypedConfig(any)) = &ts.config_type else {
            errors.add(join(&tpath, "typed_config"), "required");
            ok = false;
            continue;
        };
        if packed_type(any) != DOWNSTREAM_TLS {
            if packed_type(any) == crate::bootstrap::supported::UPSTREAM_TLS {
                errors.add(
                    join(&tpath, "typed_config"),
                    "a listener needs a DownstreamTlsContext, not an UpstreamTlsContext",
                );
            }
            ok = false; // other types: reported by the allowlist walk
            continue;
        }
        let tpath = join(&tpath, "typed_config");
        match tls::DownstreamTlsContext::decode(any.value.as_slice()) {
            Ok(ctx) => match server_context(&ctx, &tpath, errors) {
                Some(context) => out.push(model::TlsFilterChain {
                    server_names,
                    transport_protocol,
                    application_protocols: m.application_protocols.clone(),
                    context: Some(Arc::new(context)),
                }),
                None => ok = false,
            },
            Err(e) => {
                errors.add(tpath, format!("cannot decode: {e}"));
                ok = false;
            }
        }
    }
    ok.then(|| Some(Arc::new(model::DownstreamTls { chains: out, inspector })))
}

fn server_context(t: &tls::DownstreamTlsContext, path: &str, errors: &mut Errors) -> Option<model::TlsServerContext> {
    let mut ok = true;
    let empty = tls::CommonTlsContext::default();
    let common = t.common_tls_context.as_ref().unwrap_or(&empty);
    let cpath = join(path, "common_tls_context");
    if common.tls_certificates.is_empty() && common.tls_certificate_sds_secret_configs.is_empty() {
        errors.add(join(&cpath, "tls_certificates"), "at least one certificate is required for a server");
        ok = false;
    }
    let certificates = certificates(common, &cpath, errors).unwrap_or_else(|| {
        ok = false;
        Vec::new()
    });
    for (i, a) in common.alpn_protocols.iter().enumerate() {
        if a.is_empty() || a.len() > 255 {
            errors.add(format!("{cpath}.alpn_protocols[{i}]"), "must be 1 to 255 bytes");
            ok = false;
        }
    }
    let (min_version, max_version, cipher_suites) = match &common.tls_params {
        None => (model::TlsVersion::Tls12, model::TlsVersion::Tls13, Vec::new()),
        Some(p) => {
            let ppath = join(&cpath, "tls_params");
            let min = version(
                p.tls_minimum_protocol_version,
                model::TlsVersion::Tls12,
                &join(&ppath, "tls_minimum_protocol_version"),
                errors,
            );
            let max = version(
                p.tls_maximum_protocol_version,
                model::TlsVersion::Tls13,
                &join(&ppath, "tls_maximum_protocol_version"),
                errors,
            );
            let (Some(min), Some(max)) = (min, max) else { return None };
            if min > max {
                errors.add(join(&ppath, "tls_minimum_protocol_version"), "is above tls_maximum_protocol_version");
                ok = false;
            }
            for (i, c) in p.cipher_suites.iter().enumerate() {
                if !CIPHER_SUITES.contains(&c.as_str()) {
                    errors.add(
                        format!("{ppath}.cipher_suites[{i}]"),
                        format!("unsupported cipher suite {c:?} (meshgate supports: {})", CIPHER_SUITES.join(", ")),
                    );
                    ok = false;
                }
            }
            (min, max, p.cipher_suites.clone())
        }
    };
    let validation = common_validation(common, &cpath, errors);
    ok &= validation.is_some();
    let validation = validation.flatten();
    let require_client_certificate = t.require_client_certificate.is_some_and(|b| b.value);
    if ok && require_client_certificate && validation.is_none() {
        errors.add(
            join(&cpath, "validation_context"),
            "require_client_certificate needs validation_context.trusted_ca to verify client certificates",
        );
        ok = false;
    }
    if !ok {
        return None;
    }
    Some(model::TlsServerContext {
        certificates,
        alpn_protocols: common.alpn_protocols.clone(),
        min_version,
        max_version,
        cipher_suites,
        validation,
        require_client_certificate,
    })
}

/// `tls_certificates` or `tls_certificate_sds_secret_configs` (named
/// secrets were folded into `tls_certificates` by `sds::resolve_*`; what
/// is left reads from SDS files).  `None` after reporting errors.
pub(super) fn certificates(
    common: &tls::CommonTlsContext,
    cpath: &str,
    errors: &mut Errors,
) -> Option<Vec<model::TlsCertificate>> {
    if !common.tls_certificates.is_empty() && !common.tls_certificate_sds_secret_configs.is_empty() {
        errors.add(
            join(cpath, "tls_certificate_sds_secret_configs"),
            "only one of tls_certificates and tls_certificate_sds_secret_configs may be set (a list mixing file and named secrets counts as both)",
        );
        return None;
    }
    let mut ok = true;
    let mut out = Vec::new();
    for (i, c) in common.tls_certificates.iter().enumerate() {
        match certificate(c, &format!("{cpath}.tls_certificates[{i}]"), errors) {
            Some(c) => out.push(c),
            None => ok = false,
        }
    }
    for (i, r) in common.tls_certificate_sds_secret_configs.iter().enumerate() {
        let p = format!("{cpath}.tls_certificate_sds_secret_configs[{i}]");
        match super::sds::certificate_from_file(r, &p, errors) {
            Some(c) => out.push(c),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// One `TlsCertificate`, its chain and key checked now.
pub(super) fn certificate(c: &tls::TlsCertificate, p: &str, errors: &mut Errors) -> Option<model::TlsCertificate> {
    let chain = source(c.certificate_chain.as_ref(), &join(p, "certificate_chain"), errors);
    let key = source(c.private_key.as_ref(), &join(p, "private_key"), errors);
    let (chain, key) = (chain?, key?);
    let chain_ok = check_certificates(&chain, &join(p, "certificate_chain"), errors);
    let key_ok = check_key(&key, &join(p, "private_key"), errors);
    if !(chain_ok && key_ok && check_key_matches(&chain, &key, &join(p, "private_key"), errors)) {
        return None;
    }
    Some(model::TlsCertificate { certificate_chain: chain, private_key: key })
}

/// The key is the private half of the chain's first certificate (both
/// already parsed by the callers' checks).
fn check_key_matches(chain: &model::TlsSource, key: &model::TlsSource, path: &str, errors: &mut Errors) -> bool {
    let mut scratch = Errors::new("");
    let (Some(chain_pem), Some(key_pem)) =
        (read_source(chain, path, &mut scratch), read_source(key, path, &mut scratch))
    else {
        return true; // unreadable: already reported
    };
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&chain_pem).filter_map(Result::ok).collect();
    let Ok(key) = PrivateKeyDer::from_pem_slice(&key_pem) else { return true };
    let signing = match rustls::crypto::ring::sign::any_supported_type(&key) {
        Ok(k) => k,
        Err(e) => {
            errors.add(path, format!("unsupported private key: {e}"));
            return false;
        }
    };
    match rustls::sign::CertifiedKey::new(certs, signing).keys_match() {
        Ok(()) => true,
        Err(e) => {
            errors.add(path, format!("does not match the certificate: {e}"));
            false
        }
    }
}

/// The context's validation: `Some(None)` without one, `None` after
/// reporting errors.  `validation_context_sds_secret_config` and
/// `combined_validation_context` naming a static or ADS secret were folded
/// into `validation_context` by `sds::resolve_*`; what is left reads from
/// an SDS file.
pub(super) fn common_validation(
    common: &tls::CommonTlsContext,
    cpath: &str,
    errors: &mut Errors,
) -> Option<Option<model::TlsValidation>> {
    use tls::common_tls_context::ValidationContextType as V;
    let v = match &common.validation_context_type {
        None => return Some(None),
        Some(V::ValidationContext(v)) => validation_context(v, &join(cpath, "validation_context"), errors),
        Some(V::ValidationContextSdsSecretConfig(r)) => {
            super::sds::validation_from_file(None, r, &join(cpath, "validation_context_sds_secret_config"), errors)
        }
        Some(V::CombinedValidationContext(c)) => {
            let path = join(cpath, "combined_validation_context");
            let Some(r) = &c.validation_context_sds_secret_config else {
                errors.add(join(&path, "validation_context_sds_secret_config"), "required");
                return None;
            };
            super::sds::validation_from_file(
                c.default_validation_context.as_ref(),
                r,
                &join(&path, "validation_context_sds_secret_config"),
                errors,
            )
        }
        Some(_) => None, // certificate providers: reported by the allowlist walk
    };
    v.map(Some)
}

pub(super) fn version(
    v: i32,
    default: model::TlsVersion,
    path: &str,
    errors: &mut Errors,
) -> Option<model::TlsVersion> {
    use tls::tls_parameters::TlsProtocol as P;
    match P::try_from(v) {
        Ok(P::TlsAuto) => Some(default),
        Ok(P::TlSv12) => Some(model::TlsVersion::Tls12),
        Ok(P::TlSv13) => Some(model::TlsVersion::Tls13),
        Ok(other) => {
            errors.add(path, format!("{} is not supported (meshgate speaks TLSv1_2 and TLSv1_3)", other.as_str_name()));
            None
        }
        Err(_) => {
            errors.add(path, format!("unknown value {v}"));
            None
        }
    }
}

pub(super) fn validation_context(
    v: &tls::CertificateValidationContext,
    path: &str,
    errors: &mut Errors,
) -> Option<model::TlsValidation> {
    let trusted_ca = source(v.trusted_ca.as_ref(), &join(path, "trusted_ca"), errors)?;
    if !check_certificates(&trusted_ca, &join(path, "trusted_ca"), errors) {
        return None;
    }
    let mut subject_alt_names = Vec::new();
    let mut ok = true;
    for (i, m) in v.match_typed_subject_alt_names.iter().enumerate() {
        let mpath = format!("{path}.match_typed_subject_alt_names[{i}]");
        use tls::subject_alt_name_matcher::SanType as T;
        let san_type = match T::try_from(m.san_type) {
            Ok(T::Email) => model::SanType::Email,
            Ok(T::Dns) => model::SanType::Dns,
            Ok(T::Uri) => model::SanType::Uri,
            Ok(T::IpAddress) => model::SanType::IpAddress,
            _ => {
                errors.add(join(&mpath, "san_type"), "must be EMAIL, DNS, URI or IP_ADDRESS");
                ok = false;
                continue;
            }
        };
        let Some(sm) = &m.matcher else {
            errors.add(join(&mpath, "matcher"), "required");
            ok = false;
            continue;
        };
        match matchers::string_matcher(sm, &join(&mpath, "matcher"), errors) {
            Some(matcher) => subject_alt_names.push(model::SanMatch { san_type: Some(san_type), matcher }),
            None => ok = false,
        }
    }
    #[allow(deprecated)]
    for (i, sm) in v.match_subject_alt_names.iter().enumerate() {
        match matchers::string_matcher(sm, &format!("{path}.match_subject_alt_names[{i}]"), errors) {
            Some(matcher) => subject_alt_names.push(model::SanMatch { san_type: None, matcher }),
            None => ok = false,
        }
    }
    ok.then_some(model::TlsValidation { trusted_ca, subject_alt_names })
}

/// A `DataSource` holding PEM.
pub(super) fn source(d: Option<&core::DataSource>, path: &str, errors: &mut Errors) -> Option<model::TlsSource> {
    use core::data_source::Specifier as S;
    match d.and_then(|d| d.specifier.as_ref()) {
        Some(S::Filename(f)) if !f.is_empty() => Some(model::TlsSource::File(f.clone())),
        Some(S::InlineString(s)) if !s.is_empty() => Some(model::TlsSource::Inline(s.as_bytes().to_vec())),
        Some(S::InlineBytes(b)) if !b.is_empty() => Some(model::TlsSource::Inline(b.clone())),
        Some(S::EnvironmentVariable(_)) => {
            errors.add(path, "environment_variable is not supported (use filename or inline_string)");
            None
        }
        _ => {
            errors.add(path, "required: filename, inline_string or inline_bytes with PEM data");
            None
        }
    }
}

/// The PEM text of a source (`path` names the field for errors).
pub(crate) fn read_source(s: &model::TlsSource, path: &str, errors: &mut Errors) -> Option<Vec<u8>> {
    match s {
        model::TlsSource::Inline(b) => Some(b.clone()),
        model::TlsSource::File(f) => match std::fs::read(f) {
            Ok(b) => Some(b),
            Err(e) => {
                errors.add(join(path, "filename"), format!("cannot read {f}: {e}"));
                None
            }
        },
        model::TlsSource::SdsFile(r) => match super::sds::read_sds_file_field(r) {
            Ok(b) => Some(b),
            Err(e) => {
                errors.add(path, e);
                None
            }
        },
    }
}

pub(super) fn check_certificates(s: &model::TlsSource, path: &str, errors: &mut Errors) -> bool {
    let Some(pem) = read_source(s, path, errors) else { return false };
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&pem).collect();
    match certs {
        Ok(c) if !c.is_empty() => true,
        Ok(_) => {
            errors.add(path, "no PEM CERTIFICATE found");
            false
        }
        Err(e) => {
            errors.add(path, format!("invalid PEM certificate: {e}"));
            false
        }
    }
}

pub(super) fn check_key(s: &model::TlsSource, path: &str, errors: &mut Errors) -> bool {
    let Some(pem) = read_source(s, path, errors) else { return false };
    match PrivateKeyDer::from_pem_slice(&pem) {
        Ok(_) => true,
        Err(e) => {
            errors.add(path, format!("no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"));
            false
        }
    }
}

/// `forward_client_cert_details`.
pub(super) fn forward_client_cert(v: i32, path: &str, errors: &mut Errors) -> model::ForwardClientCert {
    use hcm::http_connection_manager::ForwardClientCertDetails as F;
    match F::try_from(v) {
        Ok(F::Sanitize) => model::ForwardClientCert::Sanitize,
        Ok(F::ForwardOnly) => model::ForwardClientCert::ForwardOnly,
        Ok(F::AppendForward) => model::ForwardClientCert::AppendForward,
        Ok(F::SanitizeSet) => model::ForwardClientCert::SanitizeSet,
        Ok(F::AlwaysForwardOnly) => model::ForwardClientCert::AlwaysForwardOnly,
        Err(_) => {
            errors.add(path, format!("unknown value {v}"));
            model::ForwardClientCert::Sanitize
        }
    }
}

/// `set_current_client_cert_details`.
pub(super) fn client_cert_details(
    d: Option<&hcm::http_connection_manager::SetCurrentClientCertDetails>,
) -> model::ClientCertDetails {
    let Some(d) = d else { return model::ClientCertDetails::default() };
    model::ClientCertDetails {
        subject: d.subject.is_some_and(|b| b.value),
        cert: d.cert,
        chain: d.chain,
        dns: d.dns,
        uri: d.uri,
    }
}
