//! The HTTP version a cluster speaks to its hosts: cluster
//! `typed_extension_protocol_options` `envoy.extensions.upstreams.http.v3.HttpProtocolOptions`
//! (`explicit_http_config`, `use_downstream_protocol_config`) and the
//! deprecated `Cluster.http2_protocol_options` → `model::UpstreamProtocol`
//! plus the cluster's `model::Http2Options`.
//!
//! Semantics follow Envoy's HttpProtocolOptions reference: without
//! `upstream_protocol_options` a cluster speaks HTTP/1.1;
//! `explicit_http_config` picks exactly one version;
//! `use_downstream_protocol_config` uses HTTP/2 for requests that arrived
//! over HTTP/2 and HTTP/1.1 for the others.  Setting the deprecated cluster
//! field together with the typed options is refused (Envoy refuses it too).
//! `auto_config` (ALPN choice) and HTTP/3 are left to the allowlist, which
//! rejects them with their field path.  Only the `http2_protocol_options`
//! fields the allowlist admits are read (`translate::http2_options`).
//! Parse errors of the Any itself are reported by `protocol_options`.

use envoy_types::pb::envoy::config::cluster::v3 as cl;
use envoy_types::pb::envoy::extensions::upstreams::http::v3 as up;
use prost::Message;

use super::{http2_options, packed_type};
use crate::bootstrap::supported::UPSTREAM_HTTP_OPTIONS;
use crate::bootstrap::{join, Errors};
use crate::model::{Http2Options, UpstreamProtocol};

/// What the cluster's HTTP protocol options say about the upstream codec.
pub(super) struct UpstreamHttp {
    pub protocol: UpstreamProtocol,
    pub http2: Http2Options,
    /// `use_downstream_protocol_config.http_protocol_options.enable_trailers`.
    pub downstream_config_trailers: bool,
}

pub(super) fn protocol(c: &cl::Cluster, cluster_path: &str, errors: &mut Errors) -> UpstreamHttp {
    let mut out = UpstreamHttp {
        protocol: UpstreamProtocol::Http1,
        http2: Http2Options::upstream_default(),
        downstream_config_trailers: false,
    };
    #[allow(deprecated)]
    let legacy = c.http2_protocol_options.as_ref();
    let typed = c
        .typed_extension_protocol_options
        .get(UPSTREAM_HTTP_OPTIONS)
        .filter(|any| packed_type(any) == UPSTREAM_HTTP_OPTIONS)
        .and_then(|any| up::HttpProtocolOptions::decode(any.value.as_slice()).ok());
    let typed_path = format!("{}[{UPSTREAM_HTTP_OPTIONS:?}]", join(cluster_path, "typed_extension_protocol_options"));
    use up::http_protocol_options::{explicit_http_config::ProtocolConfig, UpstreamProtocolOptions};
    let chosen = typed.as_ref().and_then(|o| o.upstream_protocol_options.as_ref());
    if let Some(o) = legacy {
        if chosen.is_some() {
            errors.add(
                join(cluster_path, "http2_protocol_options"),
                "set together with typed_extension_protocol_options HttpProtocolOptions upstream protocol options; \
                 Envoy rejects this (use explicit_http_config.http2_protocol_options)",
            );
            return out;
        }
        out.protocol = UpstreamProtocol::Http2;
        out.http2 = upstream_http2(o, &join(cluster_path, "http2_protocol_options"), errors);
        return out;
    }
    match chosen {
        None => {}
        Some(UpstreamProtocolOptions::ExplicitHttpConfig(e)) => {
            // Anything else is HTTP/1.1 (HTTP/3 is rejected by the allowlist).
            if let Some(ProtocolConfig::Http2ProtocolOptions(o)) = &e.protocol_config {
                out.protocol = UpstreamProtocol::Http2;
                let path = format!("{typed_path}.explicit_http_config.http2_protocol_options");
                out.http2 = upstream_http2(o, &path, errors);
            }
        }
        Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(u)) => {
            out.protocol = UpstreamProtocol::UseDownstream;
            if let Some(o) = &u.http2_protocol_options {
                let path = format!("{typed_path}.use_downstream_protocol_config.http2_protocol_options");
                out.http2 = upstream_http2(o, &path, errors);
            }
            out.downstream_config_trailers = u.http_protocol_options.as_ref().is_some_and(|h| h.enable_trailers);
        }
        // Rejected by the allowlist.
        Some(UpstreamProtocolOptions::AutoConfig(_)) => {}
    }
    out
}

/// `http2_options` with the upstream default for an unset
/// `max_concurrent_streams` (the windows' defaults are the same both ways).
fn upstream_http2(
    o: &envoy_types::pb::envoy::config::core::v3::Http2ProtocolOptions,
    path: &str,
    errors: &mut Errors,
) -> Http2Options {
    let mut set = http2_options(Some(o), path, errors);
    if o.max_concurrent_streams.is_none() {
        set.max_concurrent_streams = Http2Options::upstream_default().max_concurrent_streams;
    }
    set
}

#[cfg(test)]
mod tests {
    use crate::bootstrap::{load_str, Format};
    use crate::model::{Http2Options, UpstreamProtocol};

    fn config(cluster_extra: &str) -> String {
        format!(
            r#"
static_resources:
  clusters:
  - name: backend
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: 9000 }} }} }}
{cluster_extra}
"#
        )
    }

    fn typed(options: &str) -> String {
        format!(
            r#"    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
{options}"#
        )
    }

    fn load(extra: &str) -> Result<crate::model::Cluster, String> {
        load_str(&config(extra), Format::Yaml, "c.yaml")
            .map(|c| (*c.clusters["backend"]).clone())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn default_is_http1() {
        let c = load("").unwrap();
        assert_eq!(c.upstream_protocol, UpstreamProtocol::Http1);
    }

    #[test]
    fn explicit_http2_with_limits() {
        let c = load(&typed(
            "        explicit_http_config:\n          http2_protocol_options: { max_concurrent_streams: 7, initial_stream_window_size: 131072 }",
        ))
        .unwrap();
        assert_eq!(c.upstream_protocol, UpstreamProtocol::Http2);
        assert_eq!(c.upstream_http2.max_concurrent_streams, 7);
        assert_eq!(c.upstream_http2.initial_stream_window_size, 131072);
        assert_eq!(
            c.upstream_http2.initial_connection_window_size,
            Http2Options::default().initial_connection_window_size
        );
    }

    #[test]
    fn explicit_http2_defaults_to_unlimited_streams() {
        let c = load(&typed("        explicit_http_config: { http2_protocol_options: {} }")).unwrap();
        assert_eq!(c.upstream_http2, Http2Options::upstream_default());
        assert_eq!(c.upstream_http2.max_concurrent_streams, 2_147_483_647);
    }

    #[test]
    fn use_downstream_and_legacy_field() {
        let c = load(&typed(
            "        use_downstream_protocol_config:\n          http2_protocol_options: { max_concurrent_streams: 3 }\n          http_protocol_options: { enable_trailers: true }",
        ))
        .unwrap();
        assert_eq!(c.upstream_protocol, UpstreamProtocol::UseDownstream);
        assert_eq!(c.upstream_http2.max_concurrent_streams, 3);
        assert!(c.enable_trailers);
        let c = load("    http2_protocol_options: { max_concurrent_streams: 9 }").unwrap();
        assert_eq!(c.upstream_protocol, UpstreamProtocol::Http2);
        assert_eq!(c.upstream_http2.max_concurrent_streams, 9);
    }

    #[test]
    fn unsupported_shapes_name_their_path() {
        let e = load(&typed("        auto_config: { http2_protocol_options: {} }")).unwrap_err();
        assert!(e.contains("HttpProtocolOptions\"].auto_config: unsupported field"), "{e}");
        let e = load(&typed("        explicit_http_config: { http2_protocol_options: { max_concurrent_streams: 0 } }"))
            .unwrap_err();
        assert!(
            e.contains("explicit_http_config.http2_protocol_options.max_concurrent_streams: must be between 1"),
            "{e}"
        );
        let e =
            load(&typed("        use_downstream_protocol_config: { http2_protocol_options: { allow_connect: true } }"))
                .unwrap_err();
        assert!(e.contains("use_downstream_protocol_config.http2_protocol_options.allow_connect"), "{e}");
        let both = format!(
            "    http2_protocol_options: {{}}\n{}",
            typed("        explicit_http_config: { http2_protocol_options: {} }")
        );
        let e = load(&both).unwrap_err();
        assert!(e.contains("clusters[0].http2_protocol_options: set together"), "{e}");
    }
}
