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
