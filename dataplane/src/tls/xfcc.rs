//! `x-forwarded-client-cert` (XFCC) per the HTTP connection manager's
//! `forward_client_cert_details` and `set_current_client_cert_details`
//! (Envoy "HTTP header manipulation: x-forwarded-client-cert").
//!
//! Modes (mTLS = a TLS connection whose client presented a certificate):
//! SANITIZE (default) removes the header; FORWARD_ONLY keeps it on mTLS
//! connections and removes it otherwise; APPEND_FORWARD appends this hop's
//! element on mTLS (removes otherwise); SANITIZE_SET replaces it with this
//! hop's element on mTLS (removes otherwise); ALWAYS_FORWARD_ONLY leaves it.
//! An element is `By=<local URI SAN>;Hash=<SHA-256 hex of the client
//! certificate>` plus, when configured, `Cert="<URL-encoded PEM>"`,
//! `Chain="<URL-encoded PEM chain>"`, `Subject="<RFC 2253 subject>"`,
//! `URI=<URI SAN>` and `DNS=<DNS SAN>` (one key per SAN), in that order.

use base64::Engine;
use control::model::{ClientCertDetails, ForwardClientCert};

use super::TlsStream;
use crate::http1::{Headers, WellKnown};

pub const XFCC: WellKnown = WellKnown::XForwardedClientCert;

/// Applies the mode to a request's headers before it goes upstream.
pub fn apply(headers: &mut Headers, mode: ForwardClientCert, details: ClientCertDetails, tls: Option<&TlsStream>) {
    let mtls = tls.filter(|t| t.connection().peer_certificates().is_some_and(|c| !c.is_empty()));
    match (mode, mtls) {
        (ForwardClientCert::AlwaysForwardOnly, _) | (ForwardClientCert::ForwardOnly, Some(_)) => {}
        (ForwardClientCert::Sanitize, _) | (_, None) => {
            headers.remove(XFCC);
        }
        (ForwardClientCert::AppendForward, Some(t)) => {
            let element = element(t, details);
            let joined = match headers.get(XFCC) {
                Some(prev) if !prev.is_empty() => {
                    let mut v = prev.to_vec();
                    v.push(b',');
                    v.extend_from_slice(element.as_bytes());
                    v
                }
                _ => element.into_bytes(),
            };
            headers.remove(XFCC);
            headers.append(XFCC, &joined);
        }
        (ForwardClientCert::SanitizeSet, Some(t)) => {
            let element = element(t, details);
            headers.remove(XFCC);
            headers.append(XFCC, element.as_bytes());
        }
    }
}

fn pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + 64);
    out.push_str("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or(""));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// This hop's XFCC element for the connection's client certificate.
pub fn element(t: &TlsStream, details: ClientCertDetails) -> String {
    let conn = t.connection();
    let certs = conn.peer_certificates().unwrap_or(&[]);
    let mut parts: Vec<String> = Vec::new();
    for uri in t.local_uri_sans().iter() {
        parts.push(format!("By={uri}"));
    }
    if let Some(leaf) = certs.first() {
        let digest = ring::digest::digest(&ring::digest::SHA256, leaf.as_ref());
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        parts.push(format!("Hash={hex}"));
        if details.cert {
            parts.push(format!("Cert=\"{}\"", url_encode(&pem(leaf.as_ref()))));
        }
    }
    if details.chain {
        let chain: String = certs.iter().map(|c| pem(c.as_ref())).collect();
        parts.push(format!("Chain=\"{}\"", url_encode(&chain)));
    }
    let peer = t.peer();
    if let Some(id) = peer.as_ref() {
        if details.subject {
            parts.push(format!("Subject=\"{}\"", id.subject.replace('"', "\\\"")));
        }
        if details.uri {
            parts.extend(id.uri_sans.iter().map(|u| format!("URI={u}")));
        }
        if details.dns {
            parts.extend(id.dns_sans.iter().map(|d| format!("DNS={d}")));
        }
    }
    parts.join(";")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_encoding_keeps_only_unreserved_characters() {
        assert_eq!(url_encode("a-B_c.d~"), "a-B_c.d~");
        assert_eq!(url_encode("-----BEGIN X-----\n+/="), "-----BEGIN%20X-----%0A%2B%2F%3D");
    }

    #[test]
    fn pem_wraps_base64_at_64_columns() {
        let p = pem(&[0u8; 100]);
        let lines: Vec<&str> = p.lines().collect();
        assert_eq!(lines[0], "-----BEGIN CERTIFICATE-----");
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines.last(), Some(&"-----END CERTIFICATE-----"));
    }
}
