//! Request and response heads: a line scanner that enforces the rules
//! httparse is lenient about, then httparse as the tokenizer.
//!
//! Parsing is two passes over the head, both linear:
//!
//! 1. [`scan_head`] walks the bytes line by line (memchr for CR/LF).  It owns
//!    everything about *line structure and size*: bare CR, bare LF, obs-fold,
//!    whitespace before the colon, the 414/431 limits — and it checks them as
//!    bytes arrive, so an over-long line is refused before its CRLF shows up.
//!    Its progress is kept in the head being filled, so feeding a head one
//!    byte at a time costs O(n) in total, not O(n²).
//! 2. Once the empty line has arrived, httparse tokenizes the complete head
//!    (strict default config: no obs-fold, no space before colon) and the
//!    result is copied into the head's arenas.
//!
//! The request line is split by hand rather than by httparse because the
//! status codes differ by what is wrong with it (400 vs 505) and httparse
//! reports both as one error.

use std::mem::MaybeUninit;

use super::headers::{is_tchar, Headers, WellKnown};
use super::{framing, H1Error, Limits, Version};

/// How many leading empty lines a request may carry (RFC 9112 §2.2 asks us to
/// ignore "at least one"; clients that append a stray CRLF after a body send
/// one or two).
const MAX_LEADING_EMPTY_LINES: u8 = 8;

/// Header slots on the stack for httparse; heads with more fields (possible
/// only when `max_headers` is configured above this) use a heap array.
const STACK_HEADERS: usize = 128;

/// Request methods with a variant of their own; anything else is `Other` and
/// its spelling is available from [`RequestHead::method_str`].  Methods are
/// case-sensitive (RFC 9110 §9.1): `get` is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Connect,
    Options,
    Trace,
    Patch,
    Other,
}

impl Method {
    pub fn from_bytes(m: &[u8]) -> Method {
        match m {
            b"GET" => Method::Get,
            b"HEAD" => Method::Head,
            b"POST" => Method::Post,
            b"PUT" => Method::Put,
            b"DELETE" => Method::Delete,
            b"CONNECT" => Method::Connect,
            b"OPTIONS" => Method::Options,
            b"TRACE" => Method::Trace,
            b"PATCH" => Method::Patch,
            _ => Method::Other,
        }
    }

    /// The spelling of a known method; `None` for `Other`.
    pub fn as_str(self) -> Option<&'static str> {
        Some(match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Connect => "CONNECT",
            Method::Options => "OPTIONS",
            Method::Trace => "TRACE",
            Method::Patch => "PATCH",
            Method::Other => return None,
        })
    }
}

/// The four request-target forms (RFC 9112 §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetForm {
    /// `/path?query` (§3.2.1).
    Origin,
    /// `http://authority/path?query` (§3.2.2), as sent to forward proxies.
    Absolute,
    /// `host:port`, CONNECT only (§3.2.3).
    Authority,
    /// `*`, OPTIONS only (§3.2.4).
    Asterisk,
}

/// Resumable progress of [`scan_head`], kept inside the head being parsed.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Scan {
    /// Next byte to look at.
    pos: usize,
    /// Start of the line `pos` is in.
    line_start: usize,
    /// Start of the start line (valid once `start_line_end != 0`).
    start: usize,
    /// End of the start line's content (before CRLF); 0 = not seen yet.
    start_line_end: usize,
    empty_lines: u8,
    /// Complete field lines seen so far.
    fields: usize,
}

/// Where a complete head lies in the buffer.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    /// Start of the start line (after skipped empty lines).
    start: usize,
    /// End of the start line's content (excluding CRLF).
    start_line_end: usize,
    /// One past the final empty line: bytes consumed.
    end: usize,
    fields: usize,
}

/// Line-structure pass.  `request` selects the request rules: bare LF is an
/// error and the method is checked early.  Responses tolerate a bare LF line
/// ending (RFC 9112 §2.2 MAY): the head is re-encoded with CRLF before it goes
/// anywhere, so the leniency cannot leak to another parser.
fn scan_head(buf: &[u8], limits: &Limits, st: &mut Scan, request: bool) -> Result<Option<Bounds>, H1Error> {
    if st.pos > buf.len() || st.line_start > st.pos {
        // Not the buffer we were scanning before: start over.
        *st = Scan::default();
    }
    let mut i = st.pos;
    loop {
        let Some(off) = memchr::memchr2(b'\r', b'\n', &buf[i..]) else {
            i = buf.len();
            break;
        };
        let j = i + off;
        let (content_end, next) = if buf[j] == b'\r' {
            match buf.get(j + 1) {
                // Wait for the byte after CR before judging it.
                None => {
                    i = j;
                    break;
                }
                Some(b'\n') => (j, j + 2),
                // RFC 9112 §2.2: a bare CR must be rejected or replaced; we reject.
                Some(_) => return Err(H1Error::BareCr),
            }
        } else {
            // RFC 9112 §2.2: the line terminator is CRLF; a recipient MAY
            // accept a bare LF.  Requests are where smuggling lives, so no.
            if request {
                return Err(H1Error::BareLf);
            }
            (j, j + 1)
        };
        let line = &buf[st.line_start..content_end];
        if st.start_line_end == 0 {
            if line.is_empty() {
                st.empty_lines += 1;
                if st.empty_lines > MAX_LEADING_EMPTY_LINES {
                    return Err(H1Error::BadRequestLine("too many empty lines before the start line"));
                }
            } else {
                if line.len() > limits.max_request_line {
                    return Err(H1Error::RequestLineTooLong);
                }
                // Judge the request line as soon as it is complete: an
                // HTTP/0.9 client sends one line and then waits for an
                // answer, so waiting for the empty line would hang it.
                if request {
                    split_request_line(line)?;
                }
                st.start = st.line_start;
                st.start_line_end = content_end;
            }
        } else {
            if next - st.start > limits.max_head_bytes {
                return Err(H1Error::HeadTooLarge);
            }
            if line.is_empty() {
                let b = Bounds { start: st.start, start_line_end: st.start_line_end, end: next, fields: st.fields };
                return Ok(Some(b));
            }
            check_field_line(line)?;
            st.fields += 1;
            if st.fields > limits.max_headers {
                return Err(H1Error::TooManyHeaders);
            }
        }
        st.line_start = next;
        i = next;
    }
    st.pos = i;
    // Incomplete: refuse now what can already be refused.
    if st.start_line_end == 0 {
        let partial = &buf[st.line_start..i];
        if partial.len() > limits.max_request_line {
            return Err(H1Error::RequestLineTooLong);
        }
        // A TLS ClientHello or other binary sent to a plain port fails here
        // instead of waiting for a CRLF that may never come.
        if request {
            for &b in partial.iter().take(24) {
                if b == b' ' {
                    break;
                }
                if !is_tchar(b) {
                    return Err(H1Error::BadRequestLine("invalid method"));
                }
            }
        }
    } else if buf.len() - st.start > limits.max_head_bytes {
        return Err(H1Error::HeadTooLarge);
    }
    Ok(None)
}

/// Rules about one field line that httparse either allows or reports too
/// vaguely to pick the right error.
fn check_field_line(line: &[u8]) -> Result<(), H1Error> {
    // RFC 9112 §5.2: obs-fold is only allowed in message/http; a server MUST
    // reject it (400).  A leading SP on the first field line is the §2.2
    // "whitespace between start-line and first field" case: also rejected.
    if matches!(line[0], b' ' | b'\t') {
        return Err(H1Error::ObsFold);
    }
    let Some(colon) = memchr::memchr(b':', line) else {
        return Err(H1Error::BadHeaderName);
    };
    if colon == 0 {
        return Err(H1Error::BadHeaderName);
    }
    // RFC 9112 §5.1: no whitespace between field name and colon; a server
    // MUST reject it (400) since a lenient peer may read a different name.
    if matches!(line[colon - 1], b' ' | b'\t') {
        return Err(H1Error::SpaceBeforeColon);
    }
    Ok(())
}

fn map_httparse(e: httparse::Error) -> H1Error {
    match e {
        httparse::Error::HeaderName => H1Error::BadHeaderName,
        httparse::Error::HeaderValue => H1Error::BadHeaderValue,
        httparse::Error::NewLine => H1Error::BadRequestLine("invalid line ending"),
        httparse::Error::Status => H1Error::BadUpstreamResponse("malformed status line"),
        httparse::Error::Token => H1Error::BadRequestLine("malformed start line"),
        httparse::Error::TooManyHeaders => H1Error::TooManyHeaders,
        httparse::Error::Version => H1Error::UnsupportedVersion,
    }
}

/// Binds `$slots` to uninitialised httparse header slots, exactly as many
/// as the scan counted: on the stack normally, on the heap only when a
/// configured `max_headers` lets a head outgrow the stack array.
macro_rules! with_header_slots {
    ($fields:expr, |$slots:ident| $body:expr) => {{
        let mut stack = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_HEADERS];
        let mut heap: Vec<MaybeUninit<httparse::Header<'_>>> = Vec::new();
        let $slots: &mut [MaybeUninit<httparse::Header<'_>>] = if $fields <= STACK_HEADERS {
            &mut stack[..$fields]
        } else {
            heap.resize_with($fields, MaybeUninit::uninit);
            &mut heap[..]
        };
        $body
    }};
}

// ---------------------------------------------------------------- requests

/// A parsed request head.  Method and target live in one reused string
/// arena; fields in [`Headers`].  Reuse one per connection: `clear()` (or a
/// successful parse) keeps all capacity.
#[derive(Debug, Clone)]
pub struct RequestHead {
    pub method: Method,
    pub version: Version,
    pub headers: Headers,
    /// `method` + raw target + (absolute-form with empty path only) the
    /// synthesized origin-form.
    line: String,
    method_end: u32,
    target_end: u32,
    /// origin-form path+query range in `line`.
    pq_start: u32,
    pq_end: u32,
    /// Position of `?` in `line`, or `pq_end` if there is no query.
    query_at: u32,
    /// Authority range in `line` (absolute- and authority-form); empty if none.
    auth_start: u32,
    auth_end: u32,
    form: TargetForm,
    pub(crate) scan: Scan,
}

impl Default for RequestHead {
    fn default() -> Self {
        RequestHead {
            method: Method::Get,
            version: Version::Http11,
            headers: Headers::new(),
            line: String::new(),
            method_end: 0,
            target_end: 0,
            pq_start: 0,
            pq_end: 0,
            query_at: 0,
            auth_start: 0,
            auth_end: 0,
            form: TargetForm::Origin,
            scan: Scan::default(),
        }
    }
}

impl RequestHead {
    pub fn new() -> RequestHead {
        RequestHead::default()
    }

    /// Resets for the next request, keeping capacity.  Also forgets partial
    /// scan progress: call it when switching to a different buffer while a
    /// parse is still incomplete.
    pub fn clear(&mut self) {
        let headers = std::mem::take(&mut self.headers);
        let line = std::mem::take(&mut self.line);
        *self = RequestHead { headers, line, ..RequestHead::default() };
        self.headers.clear();
        self.line.clear();
    }

    /// Bytes of storage the head holds (its arenas and request line).
    pub fn storage_capacity(&self) -> usize {
        self.headers.storage_capacity() + self.line.capacity()
    }

    /// The method as received (e.g. `"GET"`, `"PROPFIND"`).
    pub fn method_str(&self) -> &str {
        &self.line[..self.method_end as usize]
    }

    /// The request-target exactly as received.
    pub fn target(&self) -> &[u8] {
        self.target_str().as_bytes()
    }

    pub fn target_str(&self) -> &str {
        &self.line[self.method_end as usize..self.target_end as usize]
    }

    pub fn target_form(&self) -> TargetForm {
        self.form
    }

    /// Origin-form path and query: the target itself for origin-form, the
    /// part after the authority for absolute-form (`/` if the path is empty,
    /// RFC 9112 §3.2.1), `*` for asterisk-form, empty for authority-form.
    /// This is what the router matches and what goes upstream.
    pub fn path_and_query(&self) -> &[u8] {
        &self.line.as_bytes()[self.pq_start as usize..self.pq_end as usize]
    }

    /// The path: `path_and_query()` up to the first `?`.
    pub fn path(&self) -> &[u8] {
        &self.line.as_bytes()[self.pq_start as usize..self.query_at as usize]
    }

    /// The query after `?` (possibly empty), or `None` without a `?`.
    pub fn query(&self) -> Option<&[u8]> {
        if self.query_at == self.pq_end {
            None
        } else {
            Some(&self.line.as_bytes()[self.query_at as usize + 1..self.pq_end as usize])
        }
    }

    /// The authority of an absolute-form or authority-form target.
    pub fn authority(&self) -> Option<&[u8]> {
        match self.form {
            TargetForm::Absolute | TargetForm::Authority => {
                Some(&self.line.as_bytes()[self.auth_start as usize..self.auth_end as usize])
            }
            _ => None,
        }
    }

    /// The host to route on: the target's authority when it has one (RFC
    /// 9112 §3.2.2: it overrides Host), else the Host field.
    pub fn host(&self) -> Option<&[u8]> {
        self.authority().or_else(|| self.headers.get(WellKnown::Host))
    }

    #[cfg(test)]
    pub(crate) fn capacities(&self) -> (usize, (usize, usize, usize)) {
        (self.line.capacity(), self.headers.capacities())
    }

    pub fn is_head(&self) -> bool {
        self.method == Method::Head
    }
}

/// Parses one request head from the start of `buf`.
///
/// `Ok(None)`: need more bytes — call again with the same `head` and a
/// buffer that extends this one (scan progress is kept in `head`; errors that
/// the bytes so far already prove, like an over-long request line, are
/// returned without waiting).  `Ok(Some(n))`: `head` is filled and the first
/// `n` bytes of `buf` (leading empty lines included) were the head.  After an
/// error the connection must be closed (RFC 9112 §11.2: framing is lost).
pub fn parse_request_head(buf: &[u8], limits: &Limits, head: &mut RequestHead) -> Result<Option<usize>, H1Error> {
    let mut scan = head.scan;
    let bounds = match scan_head(buf, limits, &mut scan, true) {
        Ok(Some(b)) => b,
        Ok(None) => {
            head.scan = scan;
            return Ok(None);
        }
        Err(e) => {
            head.scan = Scan::default();
            return Err(e);
        }
    };
    head.clear();
    fill_request(buf, bounds, head)?;
    Ok(Some(bounds.end))
}

fn fill_request(buf: &[u8], b: Bounds, head: &mut RequestHead) -> Result<(), H1Error> {
    let (method, target, version) = split_request_line(&buf[b.start..b.start_line_end])?;
    head.version = version;
    head.method = Method::from_bytes(method);

    // Tokenize the whole head (it re-reads the request line, which is cheap).
    with_header_slots!(b.fields, |slots| {
        let mut req = httparse::Request::new(&mut []);
        match httparse::ParserConfig::default().parse_request_with_uninit_headers(&mut req, &buf[b.start..b.end], slots)
        {
            Ok(httparse::Status::Complete(n)) if n == b.end - b.start => {}
            Ok(_) => return Err(H1Error::BadRequestLine("malformed head")),
            Err(e) => return Err(map_httparse(e)),
        }
        for h in req.headers.iter() {
            head.headers.append(h.name, h.value);
        }
    });

    // method and target are tchar / visible ASCII (checked above), so the
    // arena stays valid UTF-8 without a re-check.
    head.line.push_str(std::str::from_utf8(method).unwrap_or_default());
    head.method_end = head.line.len() as u32;
    head.line.push_str(std::str::from_utf8(target).unwrap_or_default());
    head.target_end = head.line.len() as u32;
    classify_target(head)?;

    // RFC 9112 §3.2: a server MUST respond 400 to an HTTP/1.1 request without
    // Host, and to any request with more than one Host field.
    match head.headers.count(WellKnown::Host) {
        0 if version == Version::Http11 => return Err(H1Error::MissingHost),
        0 => {}
        1 => {
            let host = head.headers.get(WellKnown::Host).unwrap_or_default();
            if !host.iter().all(|&c| is_authority_char(c)) {
                return Err(H1Error::BadHost);
            }
        }
        _ => return Err(H1Error::MultipleHost),
    }
    framing::normalize_content_length(&mut head.headers)?;
    Ok(())
}

/// `method SP request-target SP HTTP-version` (RFC 9112 §3), split strictly
/// on single spaces: the lenient "any whitespace" split §3 permits is what
/// lets two parsers disagree about where the target ends.
fn split_request_line(line: &[u8]) -> Result<(&[u8], &[u8], Version), H1Error> {
    let Some(sp1) = memchr::memchr(b' ', line) else {
        return Err(H1Error::BadRequestLine("missing SP after method"));
    };
    let method = &line[..sp1];
    if method.is_empty() || !method.iter().all(|&c| is_tchar(c)) {
        return Err(H1Error::BadRequestLine("invalid method"));
    }
    let rest = &line[sp1 + 1..];
    let Some(sp2) = memchr::memchr(b' ', rest) else {
        // `GET /path` is an HTTP/0.9 simple request.
        if !rest.is_empty() && rest.iter().all(|&c| is_target_char(c)) {
            return Err(H1Error::UnsupportedVersion);
        }
        return Err(H1Error::BadRequestLine("missing HTTP version"));
    };
    let target = &rest[..sp2];
    let version = &rest[sp2 + 1..];
    if target.is_empty() {
        return Err(H1Error::BadRequestLine("empty request-target"));
    }
    if !target.iter().all(|&c| is_target_char(c)) {
        return Err(H1Error::BadTarget("invalid character in request-target"));
    }
    Ok((method, target, parse_version(version)?))
}

/// `HTTP-version = "HTTP" "/" DIGIT "." DIGIT` (RFC 9112 §2.3), case-sensitive.
fn parse_version(v: &[u8]) -> Result<Version, H1Error> {
    match v {
        b"HTTP/1.1" => Ok(Version::Http11),
        b"HTTP/1.0" => Ok(Version::Http10),
        [b'H', b'T', b'T', b'P', b'/', a, b'.', b] if a.is_ascii_digit() && b.is_ascii_digit() => {
            Err(H1Error::UnsupportedVersion)
        }
        _ => Err(H1Error::BadRequestLine("malformed HTTP version")),
    }
}

/// Bytes accepted in a request-target: visible ASCII except `#` (a fragment
/// is never sent, RFC 9112 §3.2; Envoy rejects it too).  Stricter RFC 3986
/// validation would refuse requests real clients send (`|`, `{`, `"`...).
fn is_target_char(c: u8) -> bool {
    (0x21..0x7f).contains(&c) && c != b'#'
}

/// `uri-host [":" port]` bytes (RFC 3986 §3.2.2): unreserved, pct-encoded,
/// sub-delims, `:` and the IP-literal brackets.
pub(crate) fn is_authority_char(c: u8) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'%'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'['
                | b']'
        )
}

/// Works out the target form and the path/query/authority ranges.
fn classify_target(head: &mut RequestHead) -> Result<(), H1Error> {
    let t0 = head.method_end as usize;
    let t1 = head.target_end as usize;
    let target = &head.line.as_bytes()[t0..t1];
    let is_connect = head.method == Method::Connect;
    let set_pq = |head: &mut RequestHead, start: usize, end: usize| {
        head.pq_start = start as u32;
        head.pq_end = end as u32;
        let q = memchr::memchr(b'?', &head.line.as_bytes()[start..end]);
        head.query_at = q.map_or(end, |q| start + q) as u32;
    };
    if is_connect {
        // RFC 9112 §3.2.3: CONNECT uses authority-form and only it.
        if target[0] == b'/' || target.contains(&b'@') || !target.iter().all(|&c| is_authority_char(c)) {
            return Err(H1Error::BadTarget("CONNECT needs an authority-form target"));
        }
        head.form = TargetForm::Authority;
        head.auth_start = t0 as u32;
        head.auth_end = t1 as u32;
        set_pq(head, t1, t1);
        return Ok(());
    }
    if target[0] == b'/' {
        head.form = TargetForm::Origin;
        set_pq(head, t0, t1);
        return Ok(());
    }
    if target == b"*" {
        // RFC 9112 §3.2.4: asterisk-form is only for server-wide OPTIONS.
        if head.method != Method::Options {
            return Err(H1Error::BadTarget("asterisk-form is only valid for OPTIONS"));
        }
        head.form = TargetForm::Asterisk;
        set_pq(head, t0, t1);
        return Ok(());
    }
    // absolute-form (RFC 9112 §3.2.2): scheme "://" authority path-abempty [ "?" query ]
    let Some(colon) = memchr::memchr(b':', target) else {
        return Err(H1Error::BadTarget("request-target is not origin, absolute or asterisk form"));
    };
    let scheme = &target[..colon];
    let scheme_ok = scheme.first().is_some_and(|c| c.is_ascii_alphabetic())
        && scheme.iter().all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'));
    if !scheme_ok || !target[colon + 1..].starts_with(b"//") {
        return Err(H1Error::BadTarget("malformed absolute-form target"));
    }
    let a0 = colon + 3;
    let a_len = target[a0..].iter().position(|&c| c == b'/' || c == b'?').unwrap_or(target.len() - a0);
    let authority = &target[a0..a0 + a_len];
    if authority.is_empty() {
        return Err(H1Error::BadTarget("absolute-form target without a host"));
    }
    // RFC 9110 §4.2.4: userinfo in an http(s) URI is to be treated as an error.
    if authority.contains(&b'@') || !authority.iter().all(|&c| is_authority_char(c)) {
        return Err(H1Error::BadTarget("invalid authority in absolute-form target"));
    }
    head.form = TargetForm::Absolute;
    head.auth_start = (t0 + a0) as u32;
    head.auth_end = (t0 + a0 + a_len) as u32;
    let p0 = t0 + a0 + a_len;
    if head.line.as_bytes().get(p0) == Some(&b'/') {
        set_pq(head, p0, t1);
    } else {
        // Empty path: origin-form needs "/" (RFC 9112 §3.2.1), so write the
        // synthesized form after the target in the arena.
        let start = head.line.len();
        head.line.push('/');
        for k in p0..t1 {
            // The target is ASCII (checked), so bytes are chars.
            let c = head.line.as_bytes()[k] as char;
            head.line.push(c);
        }
        let end = head.line.len();
        set_pq(head, start, end);
    }
    Ok(())
}

// --------------------------------------------------------------- responses

/// A parsed response head.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    pub status: u16,
    pub version: Version,
    pub headers: Headers,
    reason: String,
    pub(crate) scan: Scan,
}

impl Default for ResponseHead {
    fn default() -> Self {
        ResponseHead {
            status: 0,
            version: Version::Http11,
            headers: Headers::new(),
            reason: String::new(),
            scan: Scan::default(),
        }
    }
}

impl ResponseHead {
    pub fn new() -> ResponseHead {
        ResponseHead::default()
    }

    /// Resets for the next response, keeping capacity.
    pub fn clear(&mut self) {
        self.status = 0;
        self.version = Version::Http11;
        self.headers.clear();
        self.reason.clear();
        self.scan = Scan::default();
    }

    /// The reason phrase as received (empty if absent or not visible ASCII).
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// Bytes of storage the head has grown (kept across `clear`).
    pub fn storage_capacity(&self) -> usize {
        self.headers.storage_capacity() + self.reason.capacity()
    }

    pub fn set_reason(&mut self, reason: &str) {
        self.reason.clear();
        self.reason.push_str(reason);
    }
}

/// Parses one response head; same contract as [`parse_request_head`].  Every
/// error is [`H1Error::BadUpstreamResponse`] (502): a broken upstream is not
/// the client's fault.
///
/// Framing repairs done here (the head is mutable, the body-kind function is
/// not): identical repeated Content-Length values collapse to one field
/// (RFC 9112 §6.3 item 5), and when Transfer-Encoding is present any
/// Content-Length is removed — TE wins (§6.3 item 3, which also says a
/// proxy must not forward such a CL).  meshgate chooses repair over 502 here
/// because the response is re-framed before it is forwarded, so no
/// downstream parser ever sees the conflicting pair.
pub fn parse_response_head(buf: &[u8], limits: &Limits, head: &mut ResponseHead) -> Result<Option<usize>, H1Error> {
    let mut scan = head.scan;
    let bounds = match scan_head(buf, limits, &mut scan, false) {
        Ok(Some(b)) => b,
        Ok(None) => {
            head.scan = scan;
            return Ok(None);
        }
        Err(e) => {
            head.scan = Scan::default();
            return Err(upstream(e));
        }
    };
    head.clear();
    fill_response(buf, bounds, head).map_err(upstream)?;
    Ok(Some(bounds.end))
}

fn upstream(e: H1Error) -> H1Error {
    match e {
        H1Error::BadUpstreamResponse(_) => e,
        H1Error::RequestLineTooLong => H1Error::BadUpstreamResponse("status line too long"),
        H1Error::BadRequestLine(_) => H1Error::BadUpstreamResponse("malformed status line"),
        H1Error::UnsupportedVersion => H1Error::BadUpstreamResponse("unsupported HTTP version"),
        other => H1Error::BadUpstreamResponse(other.reason()),
    }
}

fn fill_response(buf: &[u8], b: Bounds, head: &mut ResponseHead) -> Result<(), H1Error> {
    with_header_slots!(b.fields, |slots| {
        let mut res = httparse::Response::new(&mut []);
        match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut res,
            &buf[b.start..b.end],
            slots,
        ) {
            Ok(httparse::Status::Complete(n)) if n == b.end - b.start => {}
            Ok(_) => return Err(H1Error::BadUpstreamResponse("malformed head")),
            Err(e) => return Err(map_httparse(e)),
        }
        head.version = if res.version == Some(0) { Version::Http10 } else { Version::Http11 };
        head.status = res.code.unwrap_or(0);
        head.reason.push_str(res.reason.unwrap_or(""));
        for h in res.headers.iter() {
            head.headers.append(h.name, h.value);
        }
    });
    // RFC 9110 §15: status codes outside 100..=599 are invalid.
    if !(100..=599).contains(&head.status) {
        return Err(H1Error::BadUpstreamResponse("status code outside 100..=599"));
    }
    framing::normalize_content_length(&mut head.headers)?;
    if head.headers.contains(WellKnown::TransferEncoding) {
        head.headers.remove(WellKnown::ContentLength);
    }
    Ok(())
}
