//! SNI chain selection and the model → rustls mapping helpers.

use super::*;
use control::model::TlsVersion;

#[test]
fn version_ranges_map_to_rustls_versions() {
    assert_eq!(versions(TlsVersion::Tls12, TlsVersion::Tls13).len(), 2);
    assert_eq!(versions(TlsVersion::Tls13, TlsVersion::Tls13), vec![&rustls::version::TLS13]);
    assert_eq!(versions(TlsVersion::Tls12, TlsVersion::Tls12), vec![&rustls::version::TLS12]);
}

#[test]
fn cipher_suite_restriction_keeps_tls13_suites() {
    let p = provider(&["ECDHE-RSA-AES128-GCM-SHA256".to_string()]);
    let tls12: Vec<_> = p.cipher_suites.iter().filter(|s| s.version() == &rustls::version::TLS12).collect();
    assert_eq!(tls12.len(), 1);
    assert!(p.cipher_suites.iter().any(|s| s.version() == &rustls::version::TLS13));
    for name in control::bootstrap::TLS12_CIPHER_SUITES {
        assert!(tls12_suite(name).is_some(), "{name} accepted by the loader but unknown to the data plane");
    }
}

/// Envoy's filter-chain order: server names, then transport protocol,
/// then ALPN, each falling back to chains without the criterion.
#[test]
fn chain_selection_follows_envoy_order() {
    use control::model::{DownstreamTls, TlsFilterChain};
    let ctx = Arc::new(TlsServerContext {
        certificates: Vec::new(),
        alpn_protocols: Vec::new(),
        min_version: TlsVersion::Tls12,
        max_version: TlsVersion::Tls13,
        cipher_suites: Vec::new(),
        validation: None,
        require_client_certificate: false,
    });
    let chain = |names: &[&str], transport: Option<&str>, alpn: &[&str], tls: bool| TlsFilterChain {
        server_names: names.iter().map(|s| s.to_string()).collect(),
        transport_protocol: transport.map(str::to_string),
        application_protocols: alpn.iter().map(|s| s.to_string()).collect(),
        context: tls.then(|| ctx.clone()),
    };
    let model = DownstreamTls {
        chains: vec![
            chain(&[], None, &[], false),
            chain(&["a.example.com"], Some("tls"), &[], true),
            chain(&["*.example.com"], Some("tls"), &["h2"], true),
            chain(&[], Some("tls"), &[], true),
        ],
        inspector: true,
    };
    let store = crate::stats::StatsStore::new(1);
    let addr: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
    // ServerTls reads the shard clock.
    let mut rt = crate::runtime::Runtime::new().unwrap();
    let server = rt.block_on(async move { ServerTls::new(&model, TlsStats::new(&store, &addr, 0), "test") });
    let index = |sni: Option<&str>, tls: bool, alpn: &[&[u8]]| {
        server.pick(sni, tls, alpn).map(|c| server.chains.iter().position(|x| std::ptr::eq(x, c)).unwrap())
    };
    assert_eq!(index(None, false, &[]), Some(0));
    assert_eq!(index(None, true, &[]), Some(3));
    assert_eq!(index(Some("A.example.com"), true, &[b"h2"]), Some(1));
    assert_eq!(index(Some("b.example.com"), true, &[b"http/1.1", b"h2"]), Some(2));
    // The wildcard chain wins on the name, then its ALPN does not match.
    assert_eq!(index(Some("b.example.com"), true, &[b"http/1.1"]), None);
    assert_eq!(index(Some("other.org"), true, &[]), Some(3));
    assert_eq!(index(Some("other.org"), false, &[]), Some(0));
}
