//! Upstream TLS origination (cluster `transport_socket`
//! `envoy.transport_sockets.tls`, `UpstreamTlsContext`): rustls client
//! configs built from `model::UpstreamTls`, the handshake over a freshly
//! connected `transport::Stream`, and the cluster's `ssl.*` stats.
//!
//! It owns the server-certificate check, which follows Envoy rather than
//! the web PKI: with a `validation_context` the chain must lead to
//! `trusted_ca` and, when SAN matchers are configured, a SAN must match one
//! (`ssl.fail_verify_san`); the certificate is *not* checked against the
//! SNI unless a matcher says so (Envoy does not either).  Without a
//! `validation_context` the certificate is not verified at all (Envoy's
//! documented behaviour; a warning is logged once per cluster and shard),
//! but handshake signatures still are.  SNI is `sni` when configured;
//! otherwise none is sent (the session cache is then keyed by the host's IP
//! address, so resumption stays per host).
//!
//! One `ClientTls` per cluster per shard (no cross-shard locking; rustls'
//! session cache is the shard's own).  Certificate, key and CA files are
//! re-checked for a new mtime at most once per second, when a connection
//! is opened, exactly as listeners do.  It must not know HTTP or the pools:
//! `upstream::ClusterRuntime` calls `handshake` inside its connect timeout.
//!
//! Envoy references: `extensions.transport_sockets.tls.v3.UpstreamTlsContext`,
//! `TlsParameters` (client default TLSv1_2..TLSv1_2), cluster stats
//! `cluster.<name>.ssl.*`.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use control::model::{SanMatch, UpstreamTls};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::{mtimes, provider, read_pem, root_store, versions, watch_paths, PeerIdentity, TlsStream, WATCH_INTERVAL};
use crate::runtime::now;
use crate::stats::{Counter, Scope, StatsStore};
use crate::transport::Stream;

/// `cluster.<name>.ssl.*` (Envoy's leaf names).
#[derive(Clone, Debug)]
pub struct ClientTlsStats {
    pub handshake: Counter,
    pub connection_error: Counter,
    pub fail_verify_error: Counter,
    pub fail_verify_san: Counter,
    pub session_reused: Counter,
    pub versions_tls12: Counter,
    pub versions_tls13: Counter,
}

impl ClientTlsStats {
    pub fn new(store: &StatsStore, cluster: &str, slot: usize) -> ClientTlsStats {
        let scope = Scope::Cluster(cluster.to_string());
        let c = |leaf: &str| store.counter(&scope, leaf, slot);
        ClientTlsStats {
            handshake: c("ssl.handshake"),
            connection_error: c("ssl.connection_error"),
            fail_verify_error: c("ssl.fail_verify_error"),
            fail_verify_san: c("ssl.fail_verify_san"),
            session_reused: c("ssl.session_reused"),
            versions_tls12: c("ssl.versions.TLSv1.2"),
            versions_tls13: c("ssl.versions.TLSv1.3"),
        }
    }
}

/// Envoy's server-certificate check (see the module docs).
#[derive(Debug)]
struct ServerVerifier {
    /// `None`: no `validation_context`, the certificate is not verified.
    roots: Option<RootCertStore>,
    sans: Vec<SanMatch>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(roots) = &self.roots else { return Ok(ServerCertVerified::assertion()) };
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        if !self.sans.is_empty() {
            let id = PeerIdentity::from_der(end_entity.as_ref()).unwrap_or_default();
            if !self.sans.iter().any(|m| id.matches_san(m)) {
                // Only this check reports NotValidForName (the SNI is never
                // compared), so it counts as `fail_verify_san`.
                return Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForName));
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// Builds a rustls client config from the context's sources as they are
/// on disk now, offering `alpn` (in order).
pub fn client_config(ctx: &UpstreamTls, alpn: &[Vec<u8>]) -> io::Result<Arc<ClientConfig>> {
    let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidData, e);
    let provider = provider(&ctx.cipher_suites);
    let (roots, sans) = match &ctx.validation {
        Some(v) => (Some(root_store(&v.trusted_ca)?), v.subject_alt_names.clone()),
        None => (None, Vec::new()),
    };
    let verifier = Arc::new(ServerVerifier { roots, sans, provider: provider.clone() });
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions(ctx.min_version, ctx.max_version))
        .map_err(|e| invalid(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match &ctx.client_certificate {
        Some(c) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read_pem(&c.certificate_chain)?)
                .collect::<Result<_, _>>()
                .map_err(|e| invalid(e.to_string()))?;
            let key = PrivateKeyDer::from_pem_slice(&read_pem(&c.private_key)?).map_err(|e| invalid(e.to_string()))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| invalid(format!("client certificate: {e}")))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.to_vec();
    config.resumption = match ctx.max_session_keys {
        0 => Resumption::disabled(),
        n => Resumption::in_memory_sessions(n as usize),
    };
    Ok(Arc::new(config))
}

/// The files a context reads (watched for rotation).
fn files(ctx: &UpstreamTls) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(c) = &ctx.client_certificate {
        watch_paths(&c.certificate_chain, &mut out);
        watch_paths(&c.private_key, &mut out);
    }
    if let Some(v) = &ctx.validation {
        watch_paths(&v.trusted_ca, &mut out);
    }
    out
}

/// A client config per offered ALPN list.
type ConfigsByAlpn = Vec<(Vec<Vec<u8>>, Arc<ClientConfig>)>;

/// Why an upstream TLS handshake failed (already counted in `ssl.*`).
#[derive(Debug)]
pub struct HandshakeFailed(pub io::Error);

/// A cluster's TLS origination on one shard.
pub struct ClientTls {
    context: Arc<UpstreamTls>,
    configured_alpn: Vec<Vec<u8>>,
    /// Configs by offered ALPN list (the configured list first); emptied
    /// when the files change.  They share one session cache.
    configs: RefCell<ConfigsByAlpn>,
    sni: Option<ServerName<'static>>,
    /// Recomputed on reload: an SDS file may name other files.
    files: RefCell<Vec<String>>,
    seen: RefCell<Vec<Option<SystemTime>>>,
    last_check: Cell<Instant>,
    pub stats: ClientTlsStats,
    cluster: String,
}

impl ClientTls {
    pub fn new(context: Arc<UpstreamTls>, stats: ClientTlsStats, cluster: &str) -> ClientTls {
        if context.validation.is_none() {
            tracing::warn!(
                cluster,
                "upstream TLS without validation_context: server certificates are not verified (as in Envoy)"
            );
        }
        let files = files(&context);
        let seen = RefCell::new(mtimes(&files));
        let sni = context.sni.as_deref().and_then(|s| ServerName::try_from(s.to_string()).ok());
        ClientTls {
            configured_alpn: context.alpn_protocols.iter().map(|a| a.as_bytes().to_vec()).collect(),
            context,
            configs: RefCell::new(Vec::new()),
            sni,
            files: RefCell::new(files),
            seen,
            last_check: Cell::new(now()),
            stats,
            cluster: cluster.to_string(),
        }
    }

    /// The configured `alpn_protocols`.
    pub fn configured_alpn(&self) -> &[Vec<u8>] {
        &self.configured_alpn
    }

    fn reload_if_due(&self) {
        let t = now();
        if self.files.borrow().is_empty() || t.duration_since(self.last_check.get()) < WATCH_INTERVAL {
            return;
        }
        self.last_check.set(t);
        if *self.seen.borrow() == mtimes(&self.files.borrow()) {
            return;
        }
        // Seen before reading, so a change during the read is seen next time.
        let files = files(&self.context);
        let now_seen = mtimes(&files);
        // Validate the new set before dropping the configs in use: a
        // half-written rotation keeps the previous files' configs.
        match client_config(&self.context, &self.configured_alpn) {
            Ok(cfg) => {
                *self.configs.borrow_mut() = vec![(self.configured_alpn.clone(), cfg)];
                *self.seen.borrow_mut() = now_seen;
                tracing::info!(cluster = %self.cluster, files = ?files, "upstream TLS files reloaded");
                *self.files.borrow_mut() = files;
            }
            Err(e) => {
                tracing::warn!(cluster = %self.cluster, error = %e, "upstream TLS reload failed; keeping the previous files")
            }
        }
    }

    fn config_for(&self, alpn: &[Vec<u8>]) -> io::Result<Arc<ClientConfig>> {
        self.reload_if_due();
        if let Some((_, c)) = self.configs.borrow().iter().find(|(a, _)| a == alpn) {
            return Ok(c.clone());
        }
        let base = self.configs.borrow().first().map(|(_, c)| c.clone());
        let config = match base {
            // Same certificates and session cache, another ALPN list.
            Some(base) => {
                let mut c = (*base).clone();
                c.alpn_protocols = alpn.to_vec();
                Arc::new(c)
            }
            None => client_config(&self.context, alpn)?,
        };
        self.configs.borrow_mut().push((alpn.to_vec(), config.clone()));
        Ok(config)
    }

    /// Runs the client handshake over a connected stream, offering `alpn`
    /// (`None`: the configured `alpn_protocols`).  The caller bounds it
    /// with the cluster's connect timeout.  Failures are counted here.
    pub async fn handshake(
        &self,
        stream: Stream,
        peer: SocketAddr,
        alpn: Option<&[Vec<u8>]>,
    ) -> Result<TlsStream, HandshakeFailed> {
        let config = match self.config_for(alpn.unwrap_or(&self.configured_alpn)) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(cluster = %self.cluster, error = %e, "upstream TLS context failed to load");
                self.stats.connection_error.inc();
                return Err(HandshakeFailed(e));
            }
        };
        let name = self.sni.clone().unwrap_or(ServerName::IpAddress(peer.ip().into()));
        let conn = match ClientConnection::new(config, name) {
            Ok(c) => c,
            Err(e) => {
                self.stats.connection_error.inc();
                return Err(HandshakeFailed(io::Error::new(io::ErrorKind::InvalidData, e)));
            }
        };
        let tls = TlsStream::new(stream, rustls::Connection::Client(conn));
        if let Err(e) = tls.handshake().await {
            match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
                Some(rustls::Error::InvalidCertificate(CertificateError::NotValidForName)) => {
                    self.stats.fail_verify_san.inc()
                }
                Some(rustls::Error::InvalidCertificate(_)) => self.stats.fail_verify_error.inc(),
                _ => self.stats.connection_error.inc(),
            }
            return Err(HandshakeFailed(e));
        }
        {
            let conn = tls.connection();
            match conn.protocol_version() {
                Some(rustls::ProtocolVersion::TLSv1_3) => self.stats.versions_tls13.inc(),
                Some(rustls::ProtocolVersion::TLSv1_2) => self.stats.versions_tls12.inc(),
                _ => {}
            }
            if conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
                self.stats.session_reused.inc();
            }
        }
        self.stats.handshake.inc();
        let peer_id =
            tls.connection().peer_certificates().and_then(|c| c.first()).and_then(|c| PeerIdentity::from_der(c));
        tls.set_peer(peer_id);
        Ok(tls)
    }
}
