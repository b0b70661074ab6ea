//! Message framing (RFC 9112 §6) and connection management fields
//! (RFC 9110 §7.6.1, RFC 9112 §9).
//!
//! Framing disagreements between two HTTP/1 parsers are how request
//! smuggling works, so every ambiguous combination is an error here rather
//! than a guess: the caller answers with the status and closes.

use super::headers::{list_elements, trim_ows, Headers, KnownSet, WellKnown};
use super::parse::Method;
use super::{BodyKind, H1Error, RequestHead, ResponseHead, Version};

/// Validates every Content-Length field and collapses them to one.
///
/// RFC 9112 §6.3 item 5: several fields, or one field holding a list, with
/// one identical decimal value may be treated as that value; differing or
/// non-decimal values are unrecoverable (400 in a request).  Collapsing means
/// whatever forwards the head later sees a single clean field.
pub(crate) fn normalize_content_length(headers: &mut Headers) -> Result<Option<u64>, H1Error> {
    let mut value: Option<u64> = None;
    let mut fields = 0usize;
    let mut rewrite = false;
    for v in headers.get_all(WellKnown::ContentLength) {
        fields += 1;
        let mut elements = 0usize;
        for e in v.split(|&b| b == b',') {
            elements += 1;
            let n = parse_decimal(trim_ows(e)).ok_or(H1Error::BadContentLength)?;
            match value {
                Some(prev) if prev != n => return Err(H1Error::ConflictingContentLength),
                _ => value = Some(n),
            }
        }
        // A lone field is left as received (leading zeros are valid
        // 1*DIGIT); only duplicates and lists are rewritten.
        rewrite |= elements > 1;
    }
    if let Some(n) = value {
        if fields > 1 || rewrite {
            let mut digits = [0u8; 20];
            headers.set(WellKnown::ContentLength, format_decimal(n, &mut digits));
        }
    }
    Ok(value)
}

/// `1*DIGIT` into a u64; `None` on anything else or overflow.
fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(n)
}

/// Writes `n` in decimal into `buf` without allocating.
pub(crate) fn format_decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

/// What the Transfer-Encoding fields say, read once.
struct Codings {
    /// `chunked` is the final coding.
    chunked_last: bool,
    /// `chunked` appears more than once.
    chunked_twice: bool,
    /// Some coding other than `chunked` appears.
    other: bool,
}

fn read_codings(headers: &Headers) -> Codings {
    let mut c = Codings { chunked_last: false, chunked_twice: false, other: false };
    let mut seen_chunked = false;
    for v in headers.get_all(WellKnown::TransferEncoding) {
        for e in list_elements(v) {
            // Codings are case-insensitive (RFC 9112 §7).
            let is_chunked = e.eq_ignore_ascii_case(b"chunked");
            if is_chunked {
                c.chunked_twice |= seen_chunked;
                seen_chunked = true;
            } else {
                c.other = true;
            }
            c.chunked_last = is_chunked;
        }
    }
    c
}

/// Framing of the request body per RFC 9112 §6 (call after
/// [`parse_request_head`](super::parse_request_head)).
///
/// * Transfer-Encoding in HTTP/1.0 → 400 (§6.1: such framing is faulty);
/// * Transfer-Encoding with Content-Length → 400 (§6.1 allows "process as
///   chunked", but a server MAY reject and a proxy that forwards either
///   interpretation is the smuggling vector; Envoy rejects too);
/// * `chunked` not the final coding (or applied twice) → 400 (§6.3 item 4,
///   §6.1);  any other coding → 501 (§6.1: we don't decode it);
/// * Content-Length → `Length(n)` (`Length(0)` is kept distinct from `Empty`
///   only so callers can tell the field was present);
/// * neither → `Empty` (§6.3 item 7: a request has no body then).
pub fn request_body_kind(head: &RequestHead) -> Result<BodyKind, H1Error> {
    let h = &head.headers;
    if h.contains(WellKnown::TransferEncoding) {
        if head.version == Version::Http10 {
            return Err(H1Error::TransferEncodingInHttp10);
        }
        if h.contains(WellKnown::ContentLength) {
            return Err(H1Error::ContentLengthAndTransferEncoding);
        }
        let c = read_codings(h);
        if !c.chunked_last {
            return Err(H1Error::ChunkedNotLast);
        }
        if c.chunked_twice {
            return Err(H1Error::ChunkedTwice);
        }
        if c.other {
            return Err(H1Error::UnsupportedTransferCoding);
        }
        return Ok(BodyKind::Chunked);
    }
    content_length(h).map(|n| n.map_or(BodyKind::Empty, BodyKind::Length))
}

/// Content-Length of an already-normalized head (re-validated: heads can be
/// built by hand).
fn content_length(h: &Headers) -> Result<Option<u64>, H1Error> {
    let mut value = None;
    for v in h.get_all(WellKnown::ContentLength) {
        for e in v.split(|&b| b == b',') {
            let n = parse_decimal(trim_ows(e)).ok_or(H1Error::BadContentLength)?;
            if value.is_some_and(|p| p != n) {
                return Err(H1Error::ConflictingContentLength);
            }
            value = Some(n);
        }
    }
    Ok(value)
}

/// RFC 9112 §6.3 for a response to a request that was (or was not) HEAD.
/// See [`response_body_kind_for`] for the CONNECT case.
pub fn response_body_kind(request_method_is_head: bool, head: &ResponseHead) -> Result<BodyKind, H1Error> {
    let method = if request_method_is_head { Method::Head } else { Method::Get };
    response_body_kind_for(method, head)
}

/// RFC 9112 §6.3, in its order:
///
/// 1. a response to HEAD, any 1xx, 204 and 304 have no body, whatever the
///    fields say;
/// 2. a 2xx to CONNECT turns the connection into a tunnel: reported as
///    `CloseDelimited` (bytes flow until either side closes);
/// 3. Transfer-Encoding wins over Content-Length (the parser already dropped
///    the CL).  meshgate decodes only `chunked`, and the forwarded response
///    loses its Transfer-Encoding (hop-by-hop), so any other coding would
///    reach the client undeclared: 502 instead.  HTTP/1.0 with
///    Transfer-Encoding is faulty framing (§6.1): 502;
/// 4. Content-Length → `Length(n)`;
/// 5. otherwise the body runs until the server closes.
///
/// Errors are [`H1Error::BadUpstreamResponse`].
pub fn response_body_kind_for(request_method: Method, head: &ResponseHead) -> Result<BodyKind, H1Error> {
    let s = head.status;
    if request_method == Method::Head || (100..200).contains(&s) || s == 204 || s == 304 {
        return Ok(BodyKind::Empty);
    }
    if request_method == Method::Connect && (200..300).contains(&s) {
        return Ok(BodyKind::CloseDelimited);
    }
    let h = &head.headers;
    if h.contains(WellKnown::TransferEncoding) {
        if head.version == Version::Http10 {
            return Err(H1Error::BadUpstreamResponse("Transfer-Encoding in an HTTP/1.0 response"));
        }
        let c = read_codings(h);
        if !c.chunked_last || c.chunked_twice || c.other {
            return Err(H1Error::BadUpstreamResponse("unsupported Transfer-Encoding in response"));
        }
        return Ok(BodyKind::Chunked);
    }
    match content_length(h) {
        Ok(Some(n)) => Ok(BodyKind::Length(n)),
        Ok(None) => Ok(BodyKind::CloseDelimited),
        Err(e) => Err(H1Error::BadUpstreamResponse(e.reason())),
    }
}

/// What the Connection field said (RFC 9112 §9.3, RFC 9110 §7.6.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionDirectives {
    /// `close`: the sender will close after this message.
    pub close: bool,
    /// `keep-alive`: HTTP/1.0 persistence (RFC 9112 Appendix C.2.2).
    pub keep_alive: bool,
    /// `upgrade`: the Upgrade field is meant for us (RFC 9110 §7.8).
    pub upgrade: bool,
}

impl ConnectionDirectives {
    /// Whether the connection persists after a message of `version` carrying
    /// these directives (RFC 9112 §9.3): `close` always ends it, HTTP/1.1
    /// defaults to persistent, HTTP/1.0 needs `keep-alive`.
    pub fn persistent(&self, version: Version) -> bool {
        !self.close && (version == Version::Http11 || self.keep_alive)
    }
}

/// Fields a connection-nominated option may not remove: taking Host or
/// Content-Length away from a request that is forwarded anyway is an attack
/// on the next hop (e.g. a body left without framing), not a hop-by-hop use.
fn protected(name: &str) -> bool {
    name.eq_ignore_ascii_case("host") || name.eq_ignore_ascii_case("content-length")
}

/// Removes hop-by-hop fields (RFC 9110 §7.6.1): every field the Connection
/// options name (except Host and Content-Length), then Connection,
/// Keep-Alive, Proxy-Connection, TE, Transfer-Encoding and Upgrade.  Returns
/// the Connection directives seen before removal.
///
/// TE goes too: an HTTP/1 upstream gets no `te: trailers`.  (An HTTP/2 or
/// gRPC path must re-add it.)  Transfer-Encoding goes because the body is
/// re-framed by whoever forwards it.
pub fn strip_hop_by_hop(headers: &mut Headers) -> ConnectionDirectives {
    let mut d = ConnectionDirectives::default();
    if !headers.contains_any(HOP_BY_HOP) {
        return d;
    }
    for v in headers.get_all(WellKnown::Connection) {
        for opt in list_elements(v) {
            if opt.eq_ignore_ascii_case(b"close") {
                d.close = true;
            } else if opt.eq_ignore_ascii_case(b"keep-alive") {
                d.keep_alive = true;
            } else if opt.eq_ignore_ascii_case(b"upgrade") {
                d.upgrade = true;
            }
        }
    }
    headers.remove_listed(WellKnown::Connection, protected);
    headers.remove_all(HOP_BY_HOP);
    d
}

/// The fields [`strip_hop_by_hop`] always removes.
const HOP_BY_HOP: KnownSet = KnownSet::of(&[
    WellKnown::Connection,
    WellKnown::KeepAlive,
    WellKnown::ProxyConnection,
    WellKnown::Te,
    WellKnown::TransferEncoding,
    WellKnown::Upgrade,
]);
