//! TLS with rustls, as a layer above `transport::Stream` (never a variant
//! of it, so every transport backend gets TLS the same way).
//!
//! It owns: turning the model's `DownstreamTls` into rustls server configs
//! (one per filter chain, picked by the client's SNI before the handshake
//! with rustls' sans-IO `Acceptor`), the handshake and its `ssl.*` stats,
//! certificate rotation (certificate, key and CA files are checked for a
//! new mtime at most once per second, when a connection arrives — no
//! timer task, so an idle shard does no work and drains promptly; a
//! rebuilt config serves new connections while established ones keep
//! theirs), and the peer identity (URI/DNS SANs, subject) that
//! RBAC `authenticated` principals read.  It must not know HTTP or which
//! filter runs on top; ALPN is negotiated here and exposed, so an HTTP/2
//! codec can branch on `h2` later.
//!
//! Envoy references: `extensions.transport_sockets.tls.v3` (DownstreamTlsContext,
//! CommonTlsContext, TlsParameters, CertificateValidationContext); listener
//! `filter_chain_match.server_names`; stats `listener.<address>.ssl.*`.

pub mod client;
pub mod stream;
pub mod xfcc;

use std::cell::{Cell, RefCell};
use std::io;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use control::model::{DownstreamTls, SanMatch, SanType, TlsServerContext, TlsSource, TlsValidation, TlsVersion};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{Acceptor, ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};

pub use stream::{Conn, ReplayStream, TlsStream};

use crate::matcher::StringMatcher;
use crate::runtime::now;
use crate::stats::{Counter, Scope, StatsStore};
use crate::transport::Stream;

/// How long a client gets to complete the TLS handshake (meshgate's
/// default; Envoy's `transport_socket_connect_timeout` is not supported).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often (at most) certificate files are checked for a new modification time.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// `listener.<address>.ssl.*` (Envoy's leaf names).
#[derive(Clone, Debug)]
pub struct TlsStats {
    pub handshake: Counter,
    pub connection_error: Counter,
    pub no_certificate: Counter,
    pub fail_verify_no_cert: Counter,
    pub fail_verify_error: Counter,
    pub fail_verify_san: Counter,
    pub versions_tls12: Counter,
    pub versions_tls13: Counter,
    /// `listener.<address>.no_filter_chain_match`.
    pub no_filter_chain_match: Counter,
}

impl TlsStats {
    pub fn new(store: &StatsStore, addr: &std::net::SocketAddr, slot: usize) -> TlsStats {
        let scope = Scope::listener(addr);
        let c = |leaf: &str| store.counter(&scope, leaf, slot);
        TlsStats {
            handshake: c("ssl.handshake"),
            connection_error: c("ssl.connection_error"),
            no_certificate: c("ssl.no_certificate"),
            fail_verify_no_cert: c("ssl.fail_verify_no_cert"),
            fail_verify_error: c("ssl.fail_verify_error"),
            fail_verify_san: c("ssl.fail_verify_san"),
            versions_tls12: c("ssl.versions.TLSv1.2"),
            versions_tls13: c("ssl.versions.TLSv1.3"),
            no_filter_chain_match: c("no_filter_chain_match"),
        }
    }
}

/// The authenticated peer of a TLS connection, from its (verified) certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    pub uri_sans: Vec<String>,
    pub dns_sans: Vec<String>,
    pub email_sans: Vec<String>,
    pub ip_sans: Vec<IpAddr>,
    /// RFC 2253 form (`CN=client,O=example`), as Envoy prints it.
    pub subject: String,
}

impl PeerIdentity {
    /// Reads the end-entity certificate's SANs and subject.
    pub fn from_der(der: &[u8]) -> Option<PeerIdentity> {
        use x509_parser::extensions::GeneralName;
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let mut id = PeerIdentity::default();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::URI(u) => id.uri_sans.push(u.to_string()),
                    GeneralName::DNSName(d) => id.dns_sans.push(d.to_string()),
                    GeneralName::RFC822Name(e) => id.email_sans.push(e.to_string()),
                    GeneralName::IPAddress(b) => match b.len() {
                        4 => id.ip_sans.push(IpAddr::from(<[u8; 4]>::try_from(*b).ok()?)),
                        16 => id.ip_sans.push(IpAddr::from(<[u8; 16]>::try_from(*b).ok()?)),
                        _ => {}
                    },
                    _ => {}
                }
            }
        }
        let registry = x509_parser::objects::oid_registry();
        let mut parts = Vec::new();
        for rdn in cert.subject().iter_rdn() {
            let attrs: Vec<String> = rdn
                .iter()
                .map(|a| {
                    let key = x509_parser::objects::oid2abbrev(a.attr_type(), registry)
                        .map(str::to_string)
                        .unwrap_or_else(|_| a.attr_type().to_id_string());
                    format!("{key}={}", a.as_str().unwrap_or(""))
                })
                .collect();
            parts.push(attrs.join("+"));
        }
        parts.reverse();
        id.subject = parts.join(",");
        Some(id)
    }

    fn matches_san(&self, m: &SanMatch) -> bool {
        let matcher = StringMatcher::new(&m.matcher);
        let any = |list: &[String]| list.iter().any(|v| matcher.matches(v.as_bytes()));
        let ip = || self.ip_sans.iter().any(|ip| matcher.matches(ip.to_string().as_bytes()));
        match m.san_type {
            Some(SanType::Dns) => any(&self.dns_sans),
            Some(SanType::Uri) => any(&self.uri_sans),
            Some(SanType::Email) => any(&self.email_sans),
            Some(SanType::IpAddress) => ip(),
            None => any(&self.dns_sans) || any(&self.uri_sans) || any(&self.email_sans) || ip(),
        }
    }
}

/// Certificate selection within one filter chain: the first certificate
/// whose key can sign with a scheme the client offers (RSA and ECDSA
/// certificates side by side, as Envoy allows).
#[derive(Debug)]
struct Certificates(Vec<Arc<CertifiedKey>>);

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let schemes = hello.signature_schemes();
        self.0.iter().find(|c| c.key.choose_scheme(schemes).is_some()).or(self.0.first()).cloned()
    }
}

fn read_pem(source: &TlsSource) -> io::Result<Vec<u8>> {
    match source {
        TlsSource::Inline(b) => Ok(b.clone()),
        TlsSource::File(f) => std::fs::read(f),
        TlsSource::SdsFile(r) => {
            control::bootstrap::read_sds_file_field(r).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
        }
    }
}

/// The paths whose modification time tells that a source may have
/// changed: the file itself, or for a file-based SDS secret the SDS file,
/// its `watched_directory` and the file the secret names now.
pub(crate) fn watch_paths(source: &TlsSource, out: &mut Vec<String>) {
    match source {
        TlsSource::Inline(_) => {}
        TlsSource::File(f) => out.push(f.clone()),
        TlsSource::SdsFile(r) => {
            for p in control::bootstrap::sds_file_watch_paths(r) {
                if !out.contains(&p) {
                    out.push(p);
                }
            }
        }
    }
}

fn tls12_suite(name: &str) -> Option<rustls::SupportedCipherSuite> {
    use rustls::crypto::ring::cipher_suite as cs;
    Some(match name {
        "ECDHE-ECDSA-AES128-GCM-SHA256" => cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "ECDHE-RSA-AES128-GCM-SHA256" => cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "ECDHE-ECDSA-AES256-GCM-SHA384" => cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "ECDHE-RSA-AES256-GCM-SHA384" => cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "ECDHE-ECDSA-CHACHA20-POLY1305" => cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        "ECDHE-RSA-CHACHA20-POLY1305" => cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        _ => return None,
    })
}

/// The ring provider restricted to the configured TLS 1.2 suites (TLS 1.3
/// suites stay: they are not configurable, as in Envoy).
pub(crate) fn provider(cipher_suites: &[String]) -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    if !cipher_suites.is_empty() {
        let chosen: Vec<_> = cipher_suites.iter().filter_map(|n| tls12_suite(n)).collect();
        p.cipher_suites.retain(|s| s.version() == &rustls::version::TLS13 || chosen.contains(s));
    }
    Arc::new(p)
}

pub(crate) fn versions(min: TlsVersion, max: TlsVersion) -> Vec<&'static rustls::SupportedProtocolVersion> {
    let mut v = Vec::new();
    if min <= TlsVersion::Tls12 && max >= TlsVersion::Tls12 {
        v.push(&rustls::version::TLS12);
    }
    if max >= TlsVersion::Tls13 {
        v.push(&rustls::version::TLS13);
    }
    v
}

pub(crate) fn root_store(ca: &TlsSource) -> io::Result<RootCertStore> {
    let pem = read_pem(ca)?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        roots.add(cert).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    }
    Ok(roots)
}

/// Builds the rustls server config of one filter chain from its sources
/// as they are on disk now.
pub fn server_config(ctx: &TlsServerContext) -> io::Result<Arc<ServerConfig>> {
    let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidData, e);
    let provider = provider(&ctx.cipher_suites);
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions(ctx.min_version, ctx.max_version))
        .map_err(|e| invalid(e.to_string()))?;
    let builder = match &ctx.validation {
        Some(v) => {
            let roots = root_store(&v.trusted_ca)?;
            let mut verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            if !ctx.require_client_certificate {
                verifier = verifier.allow_unauthenticated();
            }
            builder.with_client_cert_verifier(verifier.build().map_err(|e| invalid(e.to_string()))?)
        }
        None => builder.with_no_client_auth(),
    };
    let mut keys = Vec::new();
    for c in &ctx.certificates {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read_pem(&c.certificate_chain)?)
            .collect::<Result<_, _>>()
            .map_err(|e| invalid(e.to_string()))?;
        let key = PrivateKeyDer::from_pem_slice(&read_pem(&c.private_key)?).map_err(|e| invalid(e.to_string()))?;
        let signing = provider.key_provider.load_private_key(key).map_err(|e| invalid(e.to_string()))?;
        let certified = CertifiedKey::new(chain, signing);
        certified.keys_match().map_err(|e| invalid(format!("certificate and private key do not match: {e}")))?;
        keys.push(Arc::new(certified));
    }
    let mut config = builder.with_cert_resolver(Arc::new(Certificates(keys)));
    config.alpn_protocols = ctx.alpn_protocols.iter().map(|a| a.as_bytes().to_vec()).collect();
    Ok(Arc::new(config))
}

/// URI SANs of a context's first certificate.
fn local_uri_sans(ctx: &TlsServerContext) -> Rc<[String]> {
    let first = ctx.certificates.first().and_then(|c| read_pem(&c.certificate_chain).ok());
    let der = first.and_then(|pem| CertificateDer::pem_slice_iter(&pem).next().and_then(Result::ok));
    der.and_then(|d| PeerIdentity::from_der(d.as_ref())).map(|id| id.uri_sans.into()).unwrap_or_else(|| Rc::from([]))
}

/// The files a context reads (watched for rotation).
fn files(ctx: &TlsServerContext) -> Vec<String> {
    let mut out = Vec::new();
    for c in &ctx.certificates {
        watch_paths(&c.certificate_chain, &mut out);
        watch_paths(&c.private_key, &mut out);
    }
    if let Some(TlsValidation { trusted_ca, .. }) = &ctx.validation {
        watch_paths(trusted_ca, &mut out);
    }
    out
}

fn mtimes(files: &[String]) -> Vec<Option<SystemTime>> {
    files.iter().map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok()).collect()
}

/// One filter chain's TLS on one shard.
struct ServerChain {
    /// URI SANs of this chain's (first) certificate: XFCC's `By`.
    local_uri_sans: RefCell<Rc<[String]>>,
    server_names: Vec<String>,
    transport_protocol: Option<String>,
    application_protocols: Vec<Vec<u8>>,
    /// `None`: a plaintext chain (tls_inspector listeners only).
    context: Option<Arc<TlsServerContext>>,
    config: RefCell<Option<Arc<ServerConfig>>>,
    /// Recomputed on reload: an SDS file may name other files.
    files: RefCell<Vec<String>>,
    seen: RefCell<Vec<Option<SystemTime>>>,
}

/// A listener's TLS on one shard.
pub struct ServerTls {
    chains: Vec<ServerChain>,
    /// tls_inspector: the first byte tells TLS (a handshake record) from
    /// plaintext, and plaintext chains exist.
    inspect: bool,
    pub stats: TlsStats,
    listener: String,
    last_check: Cell<Instant>,
}

/// Why a TLS connection did not get established.
#[derive(Debug)]
pub enum HandshakeError {
    NoFilterChain,
    Failed(io::Error),
    TimedOut,
}

impl ServerTls {
    /// Builds the configs now (a chain whose files fail to load refuses
    /// connections until a good version appears).
    pub fn new(model: &DownstreamTls, stats: TlsStats, listener: &str) -> Rc<ServerTls> {
        let chains = model
            .chains
            .iter()
            .map(|c| {
                let files = c.context.as_deref().map(files).unwrap_or_default();
                let seen = mtimes(&files);
                let config = match c.context.as_deref().map(server_config) {
                    Some(Ok(cfg)) => Some(cfg),
                    Some(Err(e)) => {
                        tracing::error!(listener, error = %e, "TLS context failed to load; its connections are refused");
                        None
                    }
                    None => None,
                };
                ServerChain {
                    local_uri_sans: RefCell::new(
                        c.context.as_deref().map(local_uri_sans).unwrap_or_else(|| Rc::from([])),
                    ),
                    server_names: c.server_names.clone(),
                    transport_protocol: c.transport_protocol.clone(),
                    application_protocols: c.application_protocols.iter().map(|a| a.as_bytes().to_vec()).collect(),
                    context: c.context.clone(),
                    config: RefCell::new(config),
                    files: RefCell::new(files),
                    seen: RefCell::new(seen),
                }
            })
            .collect();
        Rc::new(ServerTls {
            chains,
            inspect: model.inspector,
            stats,
            listener: listener.to_string(),
            last_check: Cell::new(now()),
        })
    }

    /// Reloads every chain whose files changed since last seen, at most
    /// once per `WATCH_INTERVAL`.
    fn reload_if_due(&self) {
        let t = now();
        if t.duration_since(self.last_check.get()) < WATCH_INTERVAL {
            return;
        }
        self.last_check.set(t);
        let listener = self.listener.as_str();
        for chain in &self.chains {
            let Some(context) = &chain.context else { continue };
            if chain.files.borrow().is_empty() {
                continue;
            }
            if *chain.seen.borrow() == mtimes(&chain.files.borrow()) {
                continue;
            }
            // Seen before reading, so a change during the read is seen next time.
            let files = files(context);
            let now_seen = mtimes(&files);
            match server_config(context) {
                Ok(cfg) => {
                    *chain.config.borrow_mut() = Some(cfg);
                    *chain.local_uri_sans.borrow_mut() = local_uri_sans(context);
                    *chain.seen.borrow_mut() = now_seen;
                    tracing::info!(listener, files = ?files, "TLS certificates reloaded");
                    *chain.files.borrow_mut() = files;
                }
                // A half-written rotation: try again on the next tick.
                Err(e) => {
                    tracing::warn!(listener, error = %e, "TLS certificate reload failed; keeping the previous ones")
                }
            }
        }
    }

    /// The filter chain for a connection, in Envoy's order: `server_names`
    /// (exact name, then the longest `*.` wildcard suffix, then chains
    /// without names), then `transport_protocol` (`tls` / `raw_buffer`,
    /// then chains without one), then `application_protocols` (any ALPN
    /// the client offers, then chains without them).
    fn pick(&self, sni: Option<&str>, tls: bool, alpn: &[&[u8]]) -> Option<&ServerChain> {
        let mut candidates: Vec<&ServerChain> = Vec::new();
        if let Some(name) = sni {
            let name = name.to_ascii_lowercase();
            candidates = self.chains.iter().filter(|c| c.server_names.contains(&name)).collect();
            if candidates.is_empty() {
                let mut best = 0;
                for c in &self.chains {
                    for n in &c.server_names {
                        if let Some(suffix) = n.strip_prefix('*') {
                            if name.len() > suffix.len() && name.ends_with(suffix) && suffix.len() >= best {
                                if suffix.len() > best {
                                    candidates.clear();
                                    best = suffix.len();
                                }
                                candidates.push(c);
                            }
                        }
                    }
                }
            }
        }
        if candidates.is_empty() {
            candidates = self.chains.iter().filter(|c| c.server_names.is_empty()).collect();
        }
        let transport = if tls { "tls" } else { "raw_buffer" };
        let exact: Vec<&ServerChain> =
            candidates.iter().copied().filter(|c| c.transport_protocol.as_deref() == Some(transport)).collect();
        let candidates = if exact.is_empty() {
            candidates.into_iter().filter(|c| c.transport_protocol.is_none()).collect()
        } else {
            exact
        };
        candidates
            .iter()
            .copied()
            .find(|c| c.application_protocols.iter().any(|p| alpn.contains(&p.as_slice())))
            .or_else(|| candidates.iter().copied().find(|c| c.application_protocols.is_empty()))
    }

    /// Accepts a TLS connection: reads the ClientHello, picks the chain by
    /// SNI, handshakes, checks `match_subject_alt_names`, counts `ssl.*`.
    pub async fn accept(&self, stream: Stream) -> Result<Conn, HandshakeError> {
        self.reload_if_due();
        match crate::runtime::timeout(Some(HANDSHAKE_TIMEOUT), self.inspect_and_handshake(stream)).await {
            Ok(r) => r,
            Err(_) => {
                self.stats.connection_error.inc();
                Err(HandshakeError::TimedOut)
            }
        }
    }

    /// tls_inspector: the first byte read tells a TLS handshake record
    /// (0x16) from plaintext; a plaintext connection goes to its chain with
    /// the bytes read so far replayed.  Without the inspector every
    /// connection is TLS.
    async fn inspect_and_handshake(&self, stream: Stream) -> Result<Conn, HandshakeError> {
        if !self.inspect {
            return self.handshake(stream, Vec::new()).await.map(|s| Conn::Tls(Box::new(s)));
        }
        let mut first = vec![0u8; 512];
        let n = match stream.read(&mut first).await {
            Ok(0) => return Err(HandshakeError::Failed(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => n,
            Err(e) => return Err(HandshakeError::Failed(e)),
        };
        first.truncate(n);
        if first[0] == 0x16 {
            return self.handshake(stream, first).await.map(|s| Conn::Tls(Box::new(s)));
        }
        match self.pick(None, false, &[]) {
            Some(chain) if chain.context.is_none() => Ok(Conn::Replay(Box::new(ReplayStream::new(stream, first)))),
            // The matching chain terminates TLS: this is not a TLS client.
            Some(_) => {
                self.stats.connection_error.inc();
                Err(HandshakeError::Failed(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "plaintext on a TLS filter chain",
                )))
            }
            None => {
                self.stats.no_filter_chain_match.inc();
                Err(HandshakeError::NoFilterChain)
            }
        }
    }

    async fn handshake(&self, stream: Stream, prefix: Vec<u8>) -> Result<TlsStream, HandshakeError> {
        let mut acceptor = Acceptor::default();
        let mut prefix: &[u8] = &prefix;
        let accepted = loop {
            if !prefix.is_empty() {
                // Bytes the inspector already read go first.
                if let Err(e) = acceptor.read_tls(&mut prefix) {
                    self.stats.connection_error.inc();
                    return Err(HandshakeError::Failed(e));
                }
                match acceptor.accept() {
                    Ok(Some(a)) => break a,
                    Ok(None) => continue,
                    Err((e, mut alert)) => {
                        let _ = alert.write(&mut std::io::sink());
                        self.stats.connection_error.inc();
                        return Err(HandshakeError::Failed(io::Error::new(io::ErrorKind::InvalidData, e)));
                    }
                }
            }
            let read = std::future::poll_fn(|cx| {
                let mut io = stream::SyncIo { stream: &stream, cx };
                match acceptor.read_tls(&mut io) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::task::Poll::Pending,
                    r => std::task::Poll::Ready(r),
                }
            })
            .await;
            match read {
                Ok(0) => {
                    self.stats.connection_error.inc();
                    return Err(HandshakeError::Failed(io::ErrorKind::UnexpectedEof.into()));
                }
                Ok(_) => {}
                Err(e) => {
                    self.stats.connection_error.inc();
                    return Err(HandshakeError::Failed(e));
                }
            }
            match acceptor.accept() {
                Ok(Some(a)) => break a,
                Ok(None) => continue,
                Err((e, mut alert)) => {
                    let _ = alert.write(&mut std::io::sink());
                    self.stats.connection_error.inc();
                    return Err(HandshakeError::Failed(io::Error::new(io::ErrorKind::InvalidData, e)));
                }
            }
        };
        let hello = accepted.client_hello();
        let sni = hello.server_name().map(str::to_string);
        let alpn: Vec<&[u8]> = hello.alpn().map(|a| a.collect()).unwrap_or_default();
        let Some(chain) = self.pick(sni.as_deref(), true, &alpn) else {
            self.stats.no_filter_chain_match.inc();
            return Err(HandshakeError::NoFilterChain);
        };
        let Some(config) = chain.config.borrow().clone() else {
            self.stats.connection_error.inc();
            return Err(HandshakeError::NoFilterChain);
        };
        let conn = match accepted.into_connection(config) {
            Ok(c) => c,
            Err((e, mut alert)) => {
                // The alert goes out best effort; the peer learns why.
                let mut buf = Vec::new();
                let _ = alert.write(&mut buf);
                let _ = stream.write_all(&buf).await;
                self.count_failure(&e);
                return Err(HandshakeError::Failed(io::Error::new(io::ErrorKind::InvalidData, e)));
            }
        };
        let tls = TlsStream::new(stream, rustls::Connection::Server(conn));
        if let Err(e) = tls.handshake().await {
            match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
                Some(err) => self.count_failure(err),
                None => self.stats.connection_error.inc(),
            }
            return Err(HandshakeError::Failed(e));
        }
        let peer = tls.connection().peer_certificates().and_then(|c| c.first()).and_then(|c| PeerIdentity::from_der(c));
        if let Some(v) = chain.context.as_ref().and_then(|c| c.validation.as_ref()) {
            if !v.subject_alt_names.is_empty() {
                let ok = peer.as_ref().is_some_and(|p| v.subject_alt_names.iter().any(|m| p.matches_san(m)));
                if !ok && peer.is_some() {
                    self.stats.fail_verify_san.inc();
                    return Err(HandshakeError::Failed(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        "peer certificate SANs do not match",
                    )));
                }
            }
        }
        if peer.is_none() {
            self.stats.no_certificate.inc();
        }
        match tls.connection().protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => self.stats.versions_tls13.inc(),
            Some(rustls::ProtocolVersion::TLSv1_2) => self.stats.versions_tls12.inc(),
            _ => {}
        }
        self.stats.handshake.inc();
        tls.set_peer(peer);
        tls.set_local_uri_sans(chain.local_uri_sans.borrow().clone());
        Ok(tls)
    }

    fn count_failure(&self, e: &rustls::Error) {
        match e {
            rustls::Error::NoCertificatesPresented => self.stats.fail_verify_no_cert.inc(),
            rustls::Error::InvalidCertificate(_) => self.stats.fail_verify_error.inc(),
            _ => self.stats.connection_error.inc(),
        }
    }
}

/// Completes the downstream side of a new connection: TLS when the
/// listener has it, plain otherwise.  `None`: the handshake failed (counted).
pub async fn establish(tls: Option<&ServerTls>, stream: Stream) -> Option<Conn> {
    match tls {
        None => Some(Conn::Plain(stream)),
        Some(t) => match t.accept(stream).await {
            Ok(conn) => Some(conn),
            Err(e) => {
                tracing::debug!(error = ?e, "TLS handshake failed");
                None
            }
        },
    }
}

/// Serves one accepted connection of an HTTP listener: the TLS handshake
/// first when the listener has TLS, then the connection manager.
pub async fn serve_http(
    ctx: Rc<crate::shard::ShardCtx>,
    listener: Rc<crate::shard::HttpListener>,
    stream: Stream,
    peer: std::net::SocketAddr,
) {
    let Some(conn) = establish(listener.tls.as_deref(), stream).await else { return };
    crate::http2::serve_http(ctx, listener, conn, peer).await;
}

#[cfg(test)]
mod tests;
