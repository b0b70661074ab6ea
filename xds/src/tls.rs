//! TLS to the management server: the xDS cluster's `transport_socket`
//! `envoy.transport_sockets.tls` (`UpstreamTlsContext`), used by the gRPC
//! transports (`grpc.rs`, through tonic's custom-connector hook) and the
//! REST pollers (`rest.rs`, under hyper's HTTP/1.1 client).
//!
//! It owns only the handshake on the control thread.  The context is the
//! one `control` translated for the static cluster (`model::Cluster::tls`,
//! the same code as any other cluster), and the rustls client config is the
//! data plane's (`dataplane::tls::client::client_config`), so the checks are
//! Envoy's and identical to proxied traffic: with a `validation_context`
//! the chain must lead to `trusted_ca` and a SAN must match one of the
//! `match_typed_subject_alt_names` when any are set; without one the server
//! certificate is not verified (Envoy's documented behaviour; a warning is
//! logged).  SNI is `sni` when set, none otherwise.  A client certificate
//! in `tls_certificates` is presented for mTLS.
//!
//! ALPN: the configured `alpn_protocols`, else `h2` for gRPC and `http/1.1`
//! for REST (Envoy offers the cluster's HTTP protocol as its ALPN fallback).
//! The config is rebuilt from the files on every connection attempt, so a
//! rotated certificate is used from the next reconnect (reconnects are
//! rare and happen on this thread, off the request path).
//!
//! It must not touch the shards: nothing here runs outside `meshgate-xds`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use control::model;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// ALPN fallbacks when `alpn_protocols` is empty.
pub(crate) const ALPN_GRPC: &[u8] = b"h2";
pub(crate) const ALPN_REST: &[u8] = b"http/1.1";

/// The TLS side of the xDS cluster, ready to wrap connections.
#[derive(Clone)]
pub(crate) struct XdsTls {
    context: Arc<model::UpstreamTls>,
    alpn: Vec<Vec<u8>>,
    cluster: String,
}

impl XdsTls {
    /// `None` when the xDS cluster is plaintext.
    pub(crate) fn for_cluster(base: &model::Config, cluster: &str, fallback_alpn: &[u8]) -> Option<XdsTls> {
        let context = base.clusters.get(cluster)?.tls.clone()?;
        // Once per process: REST polls come here every refresh_delay.
        static WARNED: AtomicBool = AtomicBool::new(false);
        if context.validation.is_none() && !WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                cluster,
                "TLS to the xDS server without validation_context: its certificate is not verified (as in Envoy)"
            );
        }
        let alpn = if context.alpn_protocols.is_empty() {
            vec![fallback_alpn.to_vec()]
        } else {
            context.alpn_protocols.iter().map(|a| a.as_bytes().to_vec()).collect()
        };
        Some(XdsTls { context, alpn, cluster: cluster.to_string() })
    }

    /// The client handshake over `tcp` (connected to `peer`).  The error
    /// names the server, the cluster and rustls' reason (e.g. `invalid peer
    /// certificate: UnknownIssuer`).
    pub(crate) async fn connect(&self, tcp: TcpStream, peer: SocketAddr) -> Result<TlsStream<TcpStream>, String> {
        let fail = |what: String| format!("TLS to xDS server {peer} (cluster {:?}): {what}", self.cluster);
        let config = dataplane::tls::client::client_config(&self.context, &self.alpn)
            .map_err(|e| fail(format!("loading the UpstreamTlsContext: {e}")))?;
        // Without `sni` no SNI is sent: rustls never sends an IP address,
        // and the verifier ignores the name (as Envoy does).
        let name = match &self.context.sni {
            Some(sni) => ServerName::try_from(sni.clone()).map_err(|e| fail(format!("sni {sni:?}: {e}")))?,
            None => ServerName::IpAddress(peer.ip().into()),
        };
        tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| fail(format!("handshake failed: {e}")))
    }
}

/// A connect error with its whole `source()` chain (tonic's transport
/// errors say only "transport error" at the top).
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = s.source();
    }
    out
}
