//! The HTTP/1.1 codec: sans-IO parsing and encoding of message heads and
//! bodies (RFC 9112), with the framing rules of RFC 9110 that a proxy must
//! enforce.
//!
//! # What it owns
//!
//! * Parsing request and response heads out of a byte buffer
//!   ([`parse_request_head`], [`parse_response_head`]) into reusable
//!   [`RequestHead`] / [`ResponseHead`] values, with the size limits of the
//!   listener ([`Limits`]: 414 for the request line, 431 for the head).
//! * Deciding how a body is framed ([`request_body_kind`],
//!   [`response_body_kind`]) and decoding it ([`BodyDecoder`]):
//!   Content-Length, chunked with extensions and trailers, close-delimited.
//! * Encoding heads and chunk framing for the other side, and removing the
//!   hop-by-hop fields that must not cross the proxy ([`strip_hop_by_hop`]).
//!
//! # What it must not touch
//!
//! Sockets, buffers it does not own, clocks, timers, routing, stats and
//! policy.  Callers hand in bytes and get back results; they decide what a
//! parse error means for the connection (always: answer `status()` if still
//! possible, then close — after a framing error the byte stream cannot be
//! trusted, RFC 9112 §11.2), whether HTTP/1.0 is accepted, and how long to
//! wait for bytes.  The codec never reads `Config`; limits arrive as a plain
//! [`Limits`] value.
//!
//! # Why so strict
//!
//! A proxy sits between two HTTP parsers.  Every input that two reasonable
//! parsers could read differently — Content-Length next to
//! Transfer-Encoding, a bare CR or LF, obs-fold, whitespace before a colon,
//! differing duplicate Content-Lengths, `chunked` not last — is how request
//! smuggling and response splitting work.  So wherever RFC 9112 says a
//! recipient MAY be lenient, requests are rejected instead, with the status
//! the RFC names; responses get the same rules (as 502) with two documented
//! repairs: bare LF line endings are accepted and Transfer-Encoding overrides
//! Content-Length, both safe because responses are re-encoded before they
//! are forwarded.
//!
//! # Performance shape
//!
//! httparse tokenizes (SIMD where available); a preceding memchr line scan
//! enforces what httparse does not, and keeps its progress in the head so a
//! head trickling in byte by byte still costs O(n).  Heads store method,
//! target and fields in arenas (`String` / `Vec<u8>` plus a range index) that
//! `clear()` empties without freeing, and body data is returned as slices of
//! the input: a connection in steady state parses and forwards requests
//! without allocating.

mod body;
mod encode;
mod framing;
mod headers;
mod parse;
#[cfg(test)]
mod tests;

use std::fmt;

pub use body::{BodyDecoder, Decoded};
pub use encode::{canonical_reason, encode_chunk_header, encode_last_chunk, encode_request_head, encode_response_head};
pub use framing::{
    request_body_kind, response_body_kind, response_body_kind_for, strip_hop_by_hop, ConnectionDirectives,
};
pub use headers::{is_valid_name, is_valid_value, FieldName, Headers, KnownSet, WellKnown};
pub use parse::{parse_request_head, parse_response_head, Method, RequestHead, ResponseHead, TargetForm};

/// Size limits for one listener's heads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest request line (method SP target SP version, without CRLF);
    /// longer → 414.  Also bounds a response's status line.
    pub max_request_line: usize,
    /// Longest head, start line to final CRLF inclusive; longer → 431.
    /// Also bounds a chunked body's trailer section.
    pub max_head_bytes: usize,
    /// Most field lines in a head; more → 431.
    pub max_headers: usize,
}

impl Default for Limits {
    /// 8 KiB request line, 60 KiB head, 100 fields (Envoy's defaults for
    /// the last two).
    fn default() -> Self {
        Limits { max_request_line: 8192, max_head_bytes: 60 * 1024, max_headers: 100 }
    }
}

impl Limits {
    /// The limits an HTTP connection manager configures.
    pub fn from_hcm(hcm: &control::model::HttpConnectionManager) -> Limits {
        Limits {
            max_request_line: hcm.max_request_line_bytes,
            max_head_bytes: hcm.max_request_headers_bytes,
            max_headers: hcm.max_headers_count,
        }
    }
}

/// The HTTP versions this codec speaks.  Anything else is refused with 505
/// before a head is produced; whether 1.0 is *accepted* is the caller's
/// policy (`accept_http_10`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }
}

/// How a message body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body at all.
    Empty,
    /// Exactly this many bytes (Content-Length).
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the connection closes (responses only; also CONNECT tunnels).
    CloseDelimited,
}

/// Everything that can be wrong with a message.  Each variant knows the
/// status code to answer with ([`H1Error::status`]); after any of them the
/// connection must be closed.  Body decoding errors carry request-side
/// statuses: when they come from an upstream response the caller maps them
/// to 502 (or just resets, if the response head was already sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum H1Error {
    // 400
    /// The request line is malformed (what is wrong is in the text).
    BadRequestLine(&'static str),
    /// The request-target is malformed or in the wrong form.
    BadTarget(&'static str),
    /// CR not followed by LF in the head (RFC 9112 §2.2).
    BareCr,
    /// LF without CR ending a request line or field line (RFC 9112 §2.2).
    BareLf,
    /// A field line starting with SP/HTAB (RFC 9112 §5.2).
    ObsFold,
    /// Whitespace between a field name and its colon (RFC 9112 §5.1).
    SpaceBeforeColon,
    /// Empty field name, non-token byte in it, or no colon.
    BadHeaderName,
    /// A CTL other than HTAB (or DEL) in a field value (RFC 9110 §5.5).
    BadHeaderValue,
    /// HTTP/1.1 request without Host (RFC 9112 §3.2).
    MissingHost,
    /// More than one Host field (RFC 9112 §3.2).
    MultipleHost,
    /// Host value that is not `uri-host [":" port]`.
    BadHost,
    /// Content-Length that is not 1*DIGIT or overflows u64.
    BadContentLength,
    /// Content-Length values that differ (RFC 9112 §6.3 item 5).
    ConflictingContentLength,
    /// Both Content-Length and Transfer-Encoding in a request (RFC 9112 §6.1).
    ContentLengthAndTransferEncoding,
    /// Transfer-Encoding in an HTTP/1.0 request (RFC 9112 §6.1).
    TransferEncodingInHttp10,
    /// `chunked` is not the final transfer coding (RFC 9112 §6.3 item 4).
    ChunkedNotLast,
    /// `chunked` applied more than once (RFC 9112 §6.1).
    ChunkedTwice,
    /// Malformed chunked framing.
    BadChunk(&'static str),
    /// Malformed trailer section.
    BadTrailer(&'static str),
    /// EOF before a Content-Length or chunked body was complete.
    IncompleteBody,
    // 414
    /// Request line longer than `Limits::max_request_line`.
    RequestLineTooLong,
    // 431
    /// Head longer than `Limits::max_head_bytes`.
    HeadTooLarge,
    /// More than `Limits::max_headers` field lines.
    TooManyHeaders,
    /// Trailer section longer than `Limits::max_head_bytes`.
    TrailersTooLarge,
    // 501
    /// A transfer coding other than chunked (RFC 9112 §6.1).
    UnsupportedTransferCoding,
    // 505
    /// HTTP version other than 1.0/1.1 (including HTTP/0.9 simple requests).
    UnsupportedVersion,
    // 502
    /// The upstream's response head or framing is invalid.
    BadUpstreamResponse(&'static str),
}

impl H1Error {
    /// The status code to answer with.
    pub fn status(&self) -> u16 {
        use H1Error::*;
        match self {
            RequestLineTooLong => 414,
            HeadTooLarge | TooManyHeaders | TrailersTooLarge => 431,
            UnsupportedTransferCoding => 501,
            UnsupportedVersion => 505,
            BadUpstreamResponse(_) => 502,
            _ => 400,
        }
    }

    /// A short, precise description (also what `Display` prints).
    pub fn reason(&self) -> &'static str {
        use H1Error::*;
        match self {
            BadRequestLine(r) | BadTarget(r) | BadChunk(r) | BadTrailer(r) => r,
            BareCr => "bare CR in message head",
            BareLf => "bare LF line ending in request head",
            ObsFold => "obsolete line folding (field line starting with whitespace)",
            SpaceBeforeColon => "whitespace between field name and colon",
            BadHeaderName => "invalid field name",
            BadHeaderValue => "invalid character in field value",
            MissingHost => "HTTP/1.1 request without Host",
            MultipleHost => "more than one Host field",
            BadHost => "invalid Host value",
            BadContentLength => "invalid Content-Length",
            ConflictingContentLength => "conflicting Content-Length values",
            ContentLengthAndTransferEncoding => "both Content-Length and Transfer-Encoding",
            TransferEncodingInHttp10 => "Transfer-Encoding in an HTTP/1.0 request",
            ChunkedNotLast => "chunked is not the final transfer coding",
            ChunkedTwice => "chunked transfer coding applied more than once",
            IncompleteBody => "connection closed before the end of the body",
            RequestLineTooLong => "request line too long",
            HeadTooLarge => "message head too large",
            TooManyHeaders => "too many header fields",
            TrailersTooLarge => "trailer section too large",
            UnsupportedTransferCoding => "unsupported transfer coding",
            UnsupportedVersion => "unsupported HTTP version",
            BadUpstreamResponse(r) => r,
        }
    }
}

impl fmt::Display for H1Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            H1Error::BadUpstreamResponse(r) => write!(f, "invalid upstream response: {r}"),
            e => write!(f, "{} ({})", e.reason(), e.status()),
        }
    }
}

impl std::error::Error for H1Error {}
