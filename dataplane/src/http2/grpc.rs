//! gRPC helpers for the connection manager: recognising a gRPC request and
//! answering its local replies as gRPC.
//!
//! Per gRPC over HTTP/2 (grpc/grpc `doc/PROTOCOL-HTTP2.md`), a gRPC request
//! has `content-type: application/grpc` (optionally `+proto`, `+json`, ...),
//! and a call that fails before any message is answered "trailers-only":
//! HTTP status 200 and one HEADERS frame carrying `grpc-status` and a
//! percent-encoded `grpc-message`.  Envoy's local replies do exactly that
//! for gRPC requests (`Http::Utility::sendLocalReply` with `is_grpc`),
//! mapping the HTTP status it would have sent with `Grpc::Utility::
//! httpToGrpcStatus`, which follows grpc/grpc `doc/http-grpc-status-mapping.md`:
//! 400 INTERNAL, 401 UNAUTHENTICATED, 403 PERMISSION_DENIED, 404
//! UNIMPLEMENTED, 429/502/503 UNAVAILABLE, anything else UNKNOWN.
//!
//! One deliberate difference: a 504 (the route timeout, which `grpc-timeout`
//! sets through `max_stream_duration`) is DEADLINE_EXCEEDED, the status
//! Envoy's connection manager gives a gRPC stream whose max stream duration
//! ran out; the HTTP table's UNAVAILABLE would invite the client to retry a
//! call whose deadline already passed.

use std::time::Duration;

use control::model::GrpcTimeoutPolicy;

use crate::http1::WellKnown;

/// gRPC status codes used here (grpc/grpc `doc/statuscodes.md`).
pub mod code {
    pub const UNKNOWN: u32 = 2;
    pub const DEADLINE_EXCEEDED: u32 = 4;
    pub const PERMISSION_DENIED: u32 = 7;
    pub const UNIMPLEMENTED: u32 = 12;
    pub const INTERNAL: u32 = 13;
    pub const UNAVAILABLE: u32 = 14;
    pub const UNAUTHENTICATED: u32 = 16;
}

/// Whether a `content-type` value names gRPC (`application/grpc` or
/// `application/grpc+<format>`, case-insensitive), as Envoy's
/// `Grpc::Common::isGrpcRequestHeaders` checks.
pub fn is_grpc_content_type(value: &[u8]) -> bool {
    const BASE: &[u8] = b"application/grpc";
    value.len() >= BASE.len()
        && value[..BASE.len()].eq_ignore_ascii_case(BASE)
        && (value.len() == BASE.len() || value[BASE.len()] == b'+' || value[BASE.len()] == b';')
}

/// The `grpc-status` of a local reply the gateway would send as `http_status`.
pub fn status_for_local_reply(http_status: u16) -> u32 {
    match http_status {
        400 => code::INTERNAL,
        401 => code::UNAUTHENTICATED,
        403 => code::PERMISSION_DENIED,
        404 => code::UNIMPLEMENTED,
        429 | 502 | 503 => code::UNAVAILABLE,
        504 => code::DEADLINE_EXCEEDED,
        _ => code::UNKNOWN,
    }
}

/// `grpc-message` encoding: bytes outside printable ASCII, and `%`, as
/// `%XX` (PROTOCOL-HTTP2.md "Percent-Encoded").
pub fn percent_encode_message(message: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in message {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
}

/// Turns a local reply's head into a trailers-only gRPC response: the
/// fields to add to an HTTP 200 with an empty body.
pub fn append_trailers_only(headers: &mut crate::http1::Headers, http_status: u16, message: &[u8]) {
    headers.set(WellKnown::ContentType, b"application/grpc");
    headers.set(WellKnown::GrpcStatus, itoa::Buffer::new().format(status_for_local_reply(http_status)).as_bytes());
    if !message.is_empty() {
        let mut encoded = Vec::with_capacity(message.len());
        percent_encode_message(message, &mut encoded);
        headers.set(WellKnown::GrpcMessage, &encoded);
    }
}

/// Parses `grpc-timeout` (PROTOCOL-HTTP2.md: `TimeoutValue TimeoutUnit`,
/// at most 8 ASCII digits, then one of `H M S m u n`).  `None`: malformed.
pub fn parse_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits.iter().fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The route timeout of a request, as Envoy's router computes it when the
/// route has `max_stream_duration.grpc_timeout_header_max`: a gRPC request's
/// `grpc-timeout` (a missing or malformed one leaves `route`), capped by the
/// max unless that is `0s`, zero meaning no timeout, then reduced by the
/// offset when the offset is smaller.
pub fn route_timeout(
    route: Option<Duration>,
    policy: Option<&GrpcTimeoutPolicy>,
    headers: &crate::http1::Headers,
) -> Option<Duration> {
    let Some(policy) = policy else { return route };
    if !headers.get(WellKnown::ContentType).is_some_and(is_grpc_content_type) {
        return route;
    }
    let Some(mut t) = headers.get(WellKnown::GrpcTimeout).and_then(parse_timeout) else { return route };
    if let Some(max) = policy.max {
        if t.is_zero() || t > max {
            t = max;
        }
    }
    if t.is_zero() {
        return None;
    }
    if policy.offset < t {
        t -= policy.offset;
    }
    Some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_values() {
        assert_eq!(parse_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_timeout(b"2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_timeout(b"3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_timeout(b"250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_timeout(b"99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(parse_timeout(b"5n"), Some(Duration::from_nanos(5)));
        for bad in [&b""[..], b"S", b"123456789S", b"10x", b"-1S", b"1.5S", b"10 S"] {
            assert_eq!(parse_timeout(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn grpc_timeout_sets_the_route_timeout() {
        let route = Some(Duration::from_secs(15));
        let grpc = |timeout: &[u8]| {
            let mut h = crate::http1::Headers::new();
            h.append("content-type", b"application/grpc");
            h.append("grpc-timeout", timeout);
            h
        };
        let capped = GrpcTimeoutPolicy { max: Some(Duration::from_secs(2)), offset: Duration::ZERO };
        let uncapped = GrpcTimeoutPolicy { max: None, offset: Duration::from_millis(100) };
        assert_eq!(route_timeout(route, Some(&capped), &grpc(b"500m")), Some(Duration::from_millis(500)));
        assert_eq!(route_timeout(route, Some(&capped), &grpc(b"10S")), Some(Duration::from_secs(2)));
        assert_eq!(route_timeout(route, Some(&capped), &grpc(b"0S")), Some(Duration::from_secs(2)));
        assert_eq!(route_timeout(route, Some(&uncapped), &grpc(b"0S")), None, "zero: no timeout");
        assert_eq!(route_timeout(route, Some(&uncapped), &grpc(b"60S")), Some(Duration::from_millis(59_900)));
        assert_eq!(route_timeout(route, Some(&uncapped), &grpc(b"50m")), Some(Duration::from_millis(50)));
        assert_eq!(route_timeout(route, Some(&capped), &grpc(b"bogus")), route);
        assert_eq!(route_timeout(route, None, &grpc(b"500m")), route, "no policy: header ignored");
        let mut plain = crate::http1::Headers::new();
        plain.append("grpc-timeout", b"500m");
        assert_eq!(route_timeout(route, Some(&capped), &plain), route, "not a gRPC request");
    }

    #[test]
    fn content_types() {
        assert!(is_grpc_content_type(b"application/grpc"));
        assert!(is_grpc_content_type(b"application/grpc+proto"));
        assert!(is_grpc_content_type(b"Application/GRPC+json"));
        assert!(!is_grpc_content_type(b"application/grpc-web"));
        assert!(!is_grpc_content_type(b"application/json"));
        assert!(!is_grpc_content_type(b"application/grp"));
    }

    #[test]
    fn http_to_grpc_mapping() {
        assert_eq!(status_for_local_reply(400), code::INTERNAL);
        assert_eq!(status_for_local_reply(401), code::UNAUTHENTICATED);
        assert_eq!(status_for_local_reply(403), code::PERMISSION_DENIED);
        assert_eq!(status_for_local_reply(404), code::UNIMPLEMENTED);
        for s in [429, 502, 503] {
            assert_eq!(status_for_local_reply(s), code::UNAVAILABLE, "{s}");
        }
        assert_eq!(status_for_local_reply(504), code::DEADLINE_EXCEEDED);
        for s in [200, 301, 408, 500] {
            assert_eq!(status_for_local_reply(s), code::UNKNOWN, "{s}");
        }
    }

    #[test]
    fn message_percent_encoding() {
        let mut out = Vec::new();
        percent_encode_message("no healthy upstream: 100% \u{e9}\n".as_bytes(), &mut out);
        assert_eq!(out, b"no healthy upstream: 100%25 %C3%A9%0A");
    }

    #[test]
    fn trailers_only_fields() {
        let mut h = crate::http1::Headers::new();
        h.append("content-type", b"text/plain");
        append_trailers_only(&mut h, 503, b"no healthy upstream");
        assert_eq!(h.get("content-type"), Some(&b"application/grpc"[..]));
        assert_eq!(h.get("grpc-status"), Some(&b"14"[..]));
        assert_eq!(h.get("grpc-message"), Some(&b"no healthy upstream"[..]));
        assert_eq!(h.count("content-type"), 1);
    }
}
