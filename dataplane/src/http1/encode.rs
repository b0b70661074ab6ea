//! Head and chunk encoding.  Everything appends to a caller-owned `Vec<u8>`
//! (the connection's write buffer), so encoding allocates only when that
//! buffer has to grow.  Bodies are never copied here: the caller writes
//! chunk data itself, vectored, between a chunk header and its CRLF.

use super::framing::format_decimal;
use super::Headers;

fn write_fields(headers: &Headers, out: &mut Vec<u8>) {
    for (name, value) in headers.iter() {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends `method SP target SP HTTP/1.1 CRLF fields CRLF`.  Upstream
/// requests are always HTTP/1.1 (RFC 9110 §2.5: send the highest version we
/// conform to).  `target` should be origin-form.  Field names go out
/// lower-case.
pub fn encode_request_head(method: &str, target: &[u8], headers: &Headers, out: &mut Vec<u8>) {
    out.reserve(method.len() + target.len() + 12 + headers.byte_len() + 4 * headers.len() + 2);
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    write_fields(headers, out);
}

/// Appends `HTTP/1.1 SP status SP reason CRLF fields CRLF`.  An empty
/// `reason` becomes the canonical phrase; for a code without one the phrase
/// stays empty, which the grammar allows (RFC 9112 §4).
pub fn encode_response_head(status: u16, reason: &str, headers: &Headers, out: &mut Vec<u8>) {
    let reason = if reason.is_empty() { canonical_reason(status) } else { reason };
    out.reserve(reason.len() + 15 + headers.byte_len() + 4 * headers.len() + 2);
    out.extend_from_slice(b"HTTP/1.1 ");
    let mut digits = [0u8; 20];
    let d = format_decimal(u64::from(status), &mut digits);
    // status-code = 3DIGIT: pad in the unlikely case a caller passes < 100.
    for _ in d.len()..3 {
        out.push(b'0');
    }
    out.extend_from_slice(d);
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    write_fields(headers, out);
}

/// Appends `{len:x}\r\n`, the size line of one chunk (RFC 9112 §7.1).  The
/// caller writes the data and the trailing CRLF.  `len` must not be 0: that
/// is the last chunk, see [`encode_last_chunk`].
pub fn encode_chunk_header(len: usize, out: &mut Vec<u8>) {
    debug_assert!(len != 0, "a zero-size chunk ends the body");
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 16];
    let mut i = buf.len();
    let mut n = len as u64;
    loop {
        i -= 1;
        buf[i] = HEX[(n & 0xf) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
    out.extend_from_slice(b"\r\n");
}

/// Appends `0\r\n` + trailers + `\r\n`: the last chunk and the trailer
/// section (RFC 9112 §7.1.2).  `trailers` are complete field lines, each
/// ending CRLF, as [`Decoded::End`](super::Decoded::End) hands them out.
pub fn encode_last_chunk(trailers: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b"0\r\n");
    out.extend_from_slice(trailers);
    out.extend_from_slice(b"\r\n");
}

/// The reason phrase RFC 9110 §15 gives a status code (plus the registered
/// extensions in common use); empty for unknown codes.
pub fn canonical_reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        102 => "Processing",
        103 => "Early Hints",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        207 => "Multi-Status",
        208 => "Already Reported",
        226 => "IM Used",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        305 => "Use Proxy",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        418 => "I'm a teapot",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        423 => "Locked",
        424 => "Failed Dependency",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        506 => "Variant Also Negotiates",
        507 => "Insufficient Storage",
        508 => "Loop Detected",
        510 => "Not Extended",
        511 => "Network Authentication Required",
        _ => "",
    }
}
