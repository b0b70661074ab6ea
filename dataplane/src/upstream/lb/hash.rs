//! The request hash of a route's `hash_policy`, computed as Envoy's
//! `Http::HashPolicyImpl::generateHash` does, bit for bit: each policy
//! hashes its input with xxHash64 (seed 0), results are folded with
//! `rotl(acc, 1) ^ next`, and a `terminal` policy that produced a hash
//! ends the walk.  Same request → same 64-bit key on every shard, in every
//! process, and in Envoy, which is what makes ring hash and Maglev picks
//! consistent.
//!
//! Sans-IO: it reads a parsed request head and the connection's addresses,
//! and returns the hash plus any `set-cookie` value to add to the response
//! (cookie policies with a `ttl` generate the cookie when it is missing).
//! Nothing is allocated unless a cookie is generated or a header repeats
//! more than a handful of times.

use std::io::Write;
use std::net::SocketAddr;

use control::model::{CookieHashPolicy, HashPolicy, HashPolicyKind};
use xxhash_rust::xxh64::{xxh64, Xxh64};

use crate::http1::{RequestHead, WellKnown};

/// What the hash policies may look at.
pub struct HashInput<'a> {
    pub head: &'a RequestHead,
    /// The downstream peer (`connection_properties.source_ip`, and half of a
    /// generated cookie's value).
    pub peer: SocketAddr,
    /// The local address of the downstream connection (the other half).
    pub local: SocketAddr,
}

/// Evaluates `policies` in order.  Generated cookies are pushed onto
/// `set_cookies` as complete `set-cookie` header values.
pub fn request_hash(policies: &[HashPolicy], input: &HashInput<'_>, set_cookies: &mut Vec<String>) -> Option<u64> {
    let mut hash: Option<u64> = None;
    for p in policies {
        let next = match &p.kind {
            HashPolicyKind::Header { name } => header_hash(input.head, name),
            HashPolicyKind::Cookie(c) => cookie_hash(c, input, set_cookies),
            HashPolicyKind::SourceIp => Some(source_ip_hash(input.peer)),
            HashPolicyKind::QueryParameter { name } => query_hash(input.head.path_and_query(), name),
        };
        if let Some(n) = next {
            // Rotating keeps two identical policies from cancelling out.
            hash = Some(hash.map_or(0, |h| h.rotate_left(1)) ^ n);
        }
        if p.terminal && hash.is_some() {
            break;
        }
    }
    hash
}

fn header_hash(head: &RequestHead, name: &str) -> Option<u64> {
    match name {
        ":authority" | "host" => return head.host().map(|v| xxh64(v, 0)),
        ":path" => return Some(xxh64(head.path_and_query(), 0)),
        ":method" => return Some(xxh64(head.method_str().as_bytes(), 0)),
        _ => {}
    }
    const INLINE: usize = 8;
    let mut inline: [&[u8]; INLINE] = [&[]; INLINE];
    let mut n = 0;
    let mut spill: Vec<&[u8]> = Vec::new();
    for v in head.headers.get_all(name) {
        if n < INLINE {
            inline[n] = v;
        } else {
            if spill.is_empty() {
                spill.extend_from_slice(&inline);
            }
            spill.push(v);
        }
        n += 1;
    }
    let values: &mut [&[u8]] = if n > INLINE { &mut spill } else { &mut inline[..n] };
    match values.len() {
        0 => None,
        1 => Some(xxh64(values[0], 0)),
        _ => {
            // Sorted, so the order repeated headers arrive in does not
            // change the key; hashed as one concatenated stream, as Envoy's
            // span overload of xxHash64 does.
            values.sort_unstable();
            let mut h = Xxh64::new(0);
            for v in values.iter() {
                h.update(v);
            }
            Some(h.digest())
        }
    }
}

fn cookie_hash(c: &CookieHashPolicy, input: &HashInput<'_>, set_cookies: &mut Vec<String>) -> Option<u64> {
    if let Some(v) = cookie_value(input.head, &c.name).filter(|v| !v.is_empty()) {
        return Some(xxh64(v, 0));
    }
    let ttl = c.ttl_seconds?;
    // Envoy derives the value from the connection's two addresses, so all
    // requests of one connection get the same cookie.
    let mut addrs = Vec::with_capacity(96);
    let _ = write!(addrs, "{}{}", input.peer, input.local);
    let value = format!("{:016x}", xxh64(&addrs, 0));
    set_cookies.push(set_cookie_value(c, &value, ttl));
    Some(xxh64(value.as_bytes(), 0))
}

/// Envoy's `makeSetCookieValue` with `httponly`: `name="value"; Max-Age=N;
/// Path=p; attr=v; HttpOnly` (no Max-Age for a zero TTL: a session cookie).
fn set_cookie_value(c: &CookieHashPolicy, value: &str, ttl: u64) -> String {
    let mut s = format!("{}=\"{}\"", c.name, value);
    if ttl != 0 {
        s.push_str("; Max-Age=");
        s.push_str(itoa::Buffer::new().format(ttl));
    }
    if !c.path.is_empty() {
        s.push_str("; Path=");
        s.push_str(&c.path);
    }
    for (name, v) in &c.attributes {
        s.push_str("; ");
        s.push_str(name);
        if !v.is_empty() {
            s.push('=');
            s.push_str(v);
        }
    }
    s.push_str("; HttpOnly");
    s
}

/// The first cookie called `name` across all `cookie` headers, unquoted
/// (Envoy's `parseCookieValue`: `;`-separated pairs, leading spaces of the
/// name skipped, pairs without `=` ignored).
fn cookie_value<'h>(head: &'h RequestHead, name: &str) -> Option<&'h [u8]> {
    for header in head.headers.get_all(WellKnown::Cookie) {
        for pair in header.split(|b| *b == b';').filter(|p| !p.is_empty()) {
            let Some(eq) = pair.iter().position(|b| *b == b'=') else { continue };
            let start = pair.iter().position(|b| *b != b' ').unwrap_or(pair.len()).min(eq);
            if &pair[start..eq] != name.as_bytes() {
                continue;
            }
            let mut v = &pair[eq + 1..];
            if v.len() >= 2 && v[0] == b'"' && v[v.len() - 1] == b'"' {
                v = &v[1..v.len() - 1];
            }
            return Some(v);
        }
    }
    None
}

fn source_ip_hash(peer: SocketAddr) -> u64 {
    let mut buf = [0u8; 64];
    let mut cursor = &mut buf[..];
    let _ = write!(cursor, "{}", peer.ip());
    let written = 64 - cursor.len();
    xxh64(&buf[..written], 0)
}

/// The first value of query parameter `name`, raw (Envoy's
/// `parseQueryString` does not percent-decode); a bare `name` is "".
fn query_hash(path_and_query: &[u8], name: &str) -> Option<u64> {
    let q = path_and_query.iter().position(|b| *b == b'?')?;
    for param in path_and_query[q + 1..].split(|b| *b == b'&') {
        let (k, v) = match param.iter().position(|b| *b == b'=') {
            Some(eq) => (&param[..eq], &param[eq + 1..]),
            None => (param, &b""[..]),
        };
        if k == name.as_bytes() {
            return Some(xxh64(v, 0));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::{parse_request_head, Limits};

    fn head(raw: &str) -> RequestHead {
        let mut h = RequestHead::new();
        let limits = Limits { max_request_line: 8192, max_head_bytes: 65536, max_headers: 100 };
        parse_request_head(raw.as_bytes(), &limits, &mut h).unwrap().unwrap();
        h
    }

    fn input(h: &RequestHead) -> HashInput<'_> {
        HashInput { head: h, peer: "10.1.2.3:5555".parse().unwrap(), local: "10.0.0.1:80".parse().unwrap() }
    }

    fn pol(kind: HashPolicyKind, terminal: bool) -> HashPolicy {
        HashPolicy { kind, terminal }
    }

    fn header(name: &str) -> HashPolicyKind {
        HashPolicyKind::Header { name: name.into() }
    }

    fn hash(policies: &[HashPolicy], raw: &str) -> Option<u64> {
        let h = head(raw);
        request_hash(policies, &input(&h), &mut Vec::new())
    }

    #[test]
    fn header_value_is_xxhashed() {
        let p = [pol(header("x-user"), false)];
        assert_eq!(hash(&p, "GET / HTTP/1.1\r\nHost: a\r\nX-User: alice\r\n\r\n"), Some(xxh64(b"alice", 0)));
        assert_eq!(hash(&p, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"), None);
    }

    #[test]
    fn repeated_header_values_are_order_independent() {
        let p = [pol(header("x-k"), false)];
        let a = hash(&p, "GET / HTTP/1.1\r\nHost: a\r\nX-K: foo\r\nX-K: bar\r\n\r\n");
        let b = hash(&p, "GET / HTTP/1.1\r\nHost: a\r\nX-K: bar\r\nX-K: foo\r\n\r\n");
        assert_eq!(a, b);
        assert_eq!(a, Some(xxh64(b"barfoo", 0)));
        let many: String = (0..12).map(|i| format!("X-K: v{i}\r\n")).collect();
        let c = hash(&p, &format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n"));
        let mut vals: Vec<String> = (0..12).map(|i| format!("v{i}")).collect();
        vals.sort();
        assert_eq!(c, Some(xxh64(vals.concat().as_bytes(), 0)));
    }

    #[test]
    fn pseudo_headers() {
        let raw = "GET /p?q=1 HTTP/1.1\r\nHost: example.com\r\n\r\n";
        assert_eq!(hash(&[pol(header(":authority"), false)], raw), Some(xxh64(b"example.com", 0)));
        assert_eq!(hash(&[pol(header(":path"), false)], raw), Some(xxh64(b"/p?q=1", 0)));
        assert_eq!(hash(&[pol(header(":method"), false)], raw), Some(xxh64(b"GET", 0)));
    }

    #[test]
    fn policies_fold_with_rotation_and_terminal_stops() {
        let raw = "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nX-B: 2\r\n\r\n";
        let (a, b) = (xxh64(b"1", 0), xxh64(b"2", 0));
        assert_eq!(hash(&[pol(header("x-a"), false), pol(header("x-b"), false)], raw), Some(a.rotate_left(1) ^ b));
        // Identical policies do not cancel out.
        assert_eq!(hash(&[pol(header("x-a"), false), pol(header("x-a"), false)], raw), Some(a.rotate_left(1) ^ a));
        // A terminal policy that hashed ends the walk...
        assert_eq!(hash(&[pol(header("x-a"), true), pol(header("x-b"), false)], raw), Some(a));
        // ...one that did not falls through to the next.
        assert_eq!(hash(&[pol(header("x-missing"), true), pol(header("x-b"), false)], raw), Some(b));
    }

    #[test]
    fn source_ip() {
        assert_eq!(
            hash(&[pol(HashPolicyKind::SourceIp, false)], "GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
            Some(xxh64(b"10.1.2.3", 0))
        );
    }

    #[test]
    fn query_parameter_first_raw_value() {
        let p = [pol(HashPolicyKind::QueryParameter { name: "id".into() }, false)];
        assert_eq!(hash(&p, "GET /x?a=1&id=7%20&id=8 HTTP/1.1\r\nHost: a\r\n\r\n"), Some(xxh64(b"7%20", 0)));
        assert_eq!(hash(&p, "GET /x?id HTTP/1.1\r\nHost: a\r\n\r\n"), Some(xxh64(b"", 0)));
        assert_eq!(hash(&p, "GET /x?idx=1 HTTP/1.1\r\nHost: a\r\n\r\n"), None);
        assert_eq!(hash(&p, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n"), None);
    }

    fn cookie_policy(ttl: Option<u64>) -> HashPolicy {
        pol(
            HashPolicyKind::Cookie(CookieHashPolicy {
                name: "sid".into(),
                ttl_seconds: ttl,
                path: "/app".into(),
                attributes: vec![("SameSite".into(), "Lax".into()), ("Secure".into(), String::new())],
            }),
            false,
        )
    }

    #[test]
    fn cookie_present_is_hashed_unquoted() {
        let p = [cookie_policy(Some(60))];
        let h = head("GET / HTTP/1.1\r\nHost: a\r\nCookie: a=1;  sid=\"abc\"\r\n\r\n");
        let mut set = Vec::new();
        assert_eq!(request_hash(&p, &input(&h), &mut set), Some(xxh64(b"abc", 0)));
        assert!(set.is_empty());
        let h = head("GET / HTTP/1.1\r\nHost: a\r\nCookie: x=1\r\nCookie: sid=zz\r\n\r\n");
        assert_eq!(request_hash(&p, &input(&h), &mut set), Some(xxh64(b"zz", 0)));
    }

    #[test]
    fn missing_cookie_with_ttl_is_generated() {
        let h = head("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        let mut set = Vec::new();
        let got = request_hash(&[cookie_policy(Some(3600))], &input(&h), &mut set);
        let value = format!("{:016x}", xxh64(b"10.1.2.3:555510.0.0.1:80", 0));
        assert_eq!(got, Some(xxh64(value.as_bytes(), 0)));
        assert_eq!(set, vec![format!("sid=\"{value}\"; Max-Age=3600; Path=/app; SameSite=Lax; Secure; HttpOnly")]);
        // Presenting the generated cookie hashes to the same key.
        let h2 = head(&format!("GET / HTTP/1.1\r\nHost: a\r\nCookie: sid=\"{value}\"\r\n\r\n"));
        assert_eq!(request_hash(&[cookie_policy(Some(3600))], &input(&h2), &mut Vec::new()), got);
        // A zero TTL makes a session cookie (no Max-Age).
        let mut set = Vec::new();
        request_hash(&[cookie_policy(Some(0))], &input(&h), &mut set);
        assert!(!set[0].contains("Max-Age"), "{}", set[0]);
    }

    #[test]
    fn missing_cookie_without_ttl_hashes_nothing() {
        let h = head("GET / HTTP/1.1\r\nHost: a\r\nCookie: sid=\r\n\r\n");
        let mut set = Vec::new();
        assert_eq!(request_hash(&[cookie_policy(None)], &input(&h), &mut set), None);
        assert!(set.is_empty());
    }
}
