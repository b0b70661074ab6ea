//! Cluster `transport_socket` `envoy.transport_sockets.tls`
//! (`UpstreamTlsContext`) → `model::UpstreamTls`: TLS origination to a
//! cluster's endpoints.
//!
//! Semantics follow Envoy's `extensions.transport_sockets.tls.v3`
//! reference (UpstreamTlsContext, CommonTlsContext, TlsParameters,
//! CertificateValidationContext): a client context defaults to TLS 1.2 as
//! both minimum and maximum version; it holds at most one client
//! certificate; without a `validation_context` the server certificate is
//! not verified (Envoy's behaviour, logged as a warning by the data plane);
//! `max_session_keys` defaults to 1 and 0 disables resumption;
//! `allow_renegotiation: true` is refused (rustls never renegotiates).
//! Everything the allowlist does not name (`auto_host_sni`,
//! `auto_sni_san_validation`, ...) is a load error there; SDS references
//! are resolved by `sds.rs`.

use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3 as cl;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use prost::Message;

use super::packed_type;
use super::tls::{certificates, common_validation, version, CIPHER_SUITES};
use crate::bootstrap::supported::{DOWNSTREAM_TLS, UPSTREAM_TLS};
use crate::bootstrap::{join, Errors};
use crate::model;

/// The cluster's TLS: `Some(None)` for plaintext, `None` after reporting errors.
pub(super) fn upstream(
    c: &cl::Cluster,
    cluster_path: &str,
    errors: &mut Errors,
) -> Option<Option<Arc<model::UpstreamTls>>> {
    let Some(ts) = &c.transport_socket else { return Some(None) };
    let path = join(cluster_path, "transport_socket");
    let Some(core::transport_socket::ConfigType::TypedConfig(any)) = &ts.config_type else {
        errors.add(join(&path, "typed_config"), "required (an UpstreamTlsContext)");
        return None;
    };
    let path = join(&path, "typed_config");
    match packed_type(any) {
        UPSTREAM_TLS => {}
        DOWNSTREAM_TLS => {
            errors.add(path, "a cluster needs an UpstreamTlsContext, not a DownstreamTlsContext");
            return None;
        }
        _ => return None, // reported by the allowlist walk
    }
    let ctx = match tls::UpstreamTlsContext::decode(any.value.as_slice()) {
        Ok(ctx) => ctx,
        Err(e) => {
            errors.add(path, format!("cannot decode: {e}"));
            return None;
        }
    };
    client_context(&ctx, &path, errors).map(|t| Some(Arc::new(t)))
}

fn client_context(t: &tls::UpstreamTlsContext, path: &str, errors: &mut Errors) -> Option<model::UpstreamTls> {
    let mut ok = true;
    if t.allow_renegotiation {
        errors.add(join(path, "allow_renegotiation"), "renegotiation is not supported (rustls never renegotiates)");
        ok = false;
    }
    let sni = if t.sni.is_empty() {
        None
    } else if t.sni.len() > 255
        || t.sni.parse::<std::net::IpAddr>().is_ok()
        || rustls_pki_types::ServerName::try_from(t.sni.as_str()).is_err()
    {
        errors.add(join(path, "sni"), format!("{:?} is not a DNS name", t.sni));
        ok = false;
        None
    } else {
        Some(t.sni.clone())
    };
    let empty = tls::CommonTlsContext::default();
    let common = t.common_tls_context.as_ref().unwrap_or(&empty);
    let cpath = join(path, "common_tls_context");
    if common.tls_certificates.len() > 1 {
        errors.add(
            format!("{cpath}.tls_certificates[1]"),
            "a client context holds at most one certificate (as in Envoy)",
        );
        ok = false;
    }
    if common.tls_certificate_sds_secret_configs.len() > 1 {
        errors.add(
            format!("{cpath}.tls_certificate_sds_secret_configs[1]"),
            "a client context holds at most one certificate (as in Envoy)",
        );
        ok = false;
    }
    let client_certificate = match certificates(common, &cpath, errors) {
        Some(list) => list.into_iter().next(),
        None => {
            ok = false;
            None
        }
    };
    for (i, a) in common.alpn_protocols.iter().enumerate() {
        if a.is_empty() || a.len() > 255 {
            errors.add(format!("{cpath}.alpn_protocols[{i}]"), "must be 1 to 255 bytes");
            ok = false;
        }
    }
    let (mut min_version, mut max_version, mut cipher_suites) =
        (model::TlsVersion::Tls12, model::TlsVersion::Tls12, Vec::new());
    if let Some(p) = &common.tls_params {
        let ppath = join(&cpath, "tls_params");
        let min = version(
            p.tls_minimum_protocol_version,
            model::TlsVersion::Tls12,
            &join(&ppath, "tls_minimum_protocol_version"),
            errors,
        );
        let max = version(
            p.tls_maximum_protocol_version,
            model::TlsVersion::Tls12,
            &join(&ppath, "tls_maximum_protocol_version"),
            errors,
        );
        match (min, max) {
            (Some(min), Some(max)) if min > max => {
                errors.add(join(&ppath, "tls_minimum_protocol_version"), "is above tls_maximum_protocol_version");
                ok = false;
            }
            (Some(min), Some(max)) => (min_version, max_version) = (min, max),
            _ => ok = false,
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
        cipher_suites = p.cipher_suites.clone();
    }
    let validation = common_validation(common, &cpath, errors);
    ok &= validation.is_some();
    let validation = validation.flatten();
    let max_session_keys = t.max_session_keys.map_or(1, |v| v.value);
    ok.then_some(model::UpstreamTls {
        sni,
        client_certificate,
        alpn_protocols: common.alpn_protocols.clone(),
        min_version,
        max_version,
        cipher_suites,
        validation,
        max_session_keys,
    })
}
