//! One downstream HTTP/2 stream, served by the HTTP/1 connection manager:
//! the request is translated to HTTP/1.1 bytes and written into a bounded
//! pipe whose other end is a `Conn::Bridged` the manager reads as a
//! one-request connection; the HTTP/1.1 response it writes back is parsed
//! and sent on the stream.
//!
//! Why a bridge and not a second connection manager: every request phase
//! (routing, RBAC, fault / rate-limit filters, mutations, rewrites,
//! redirects, direct responses, retries, upstream pools, stats) exists once,
//! in `proxy`, and HTTP/2 gets all of it with identical semantics.  The
//! price is one HTTP/1.1 encode and parse per stream, which is cheap next to
//! HPACK and the upstream exchange.
//!
//! Translation (RFC 9113 §8.3, RFC 9110 §7.6.1):
//!
//! * request: `:method` and `:path` form the request line (CONNECT: the
//!   authority); `:authority` becomes `Host`, replacing any `host` field
//!   (RFC 9113 §8.3.1); split `cookie` fields are joined with `"; "`
//!   (§8.2.3); connection-specific fields cannot occur (`h2` rejects them as
//!   malformed, §8.2.2).  A body is framed by its `content-length` when the
//!   client sent one, else chunked, so request trailers travel as chunked
//!   trailers.
//! * response: hop-by-hop fields are stripped (`Connection`, `Keep-Alive`,
//!   `Transfer-Encoding`, ...); interim 1xx responses are dropped (the
//!   manager answers `Expect: 100-continue` itself); chunked trailers become
//!   an HTTP/2 trailers HEADERS frame.
//!
//! Flow control end to end: a DATA frame's bytes are released to the
//! client's window only once the pipe took them, and the pipe is bounded,
//! so a slow upstream throttles the client; response bytes are sent only as
//! the client's stream window grants capacity, and the manager's writes
//! wait on the bounded pipe meanwhile.
//!
//! Cancellation: a client RST_STREAM ends the stream's task, dropping the
//! pipe and the manager's exchange (its upstream request is abandoned as for
//! a vanished HTTP/1 client); a response that breaks off after its head
//! resets the stream with INTERNAL_ERROR.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use h2::{Reason, RecvStream, SendStream};
use http::{HeaderMap, HeaderName, HeaderValue};

use super::pipe::{pipe, Bridged, PipeEnd};
use crate::http1::{
    encode_chunk_header, encode_last_chunk, parse_response_head, response_body_kind_for, strip_hop_by_hop, BodyDecoder,
    BodyKind, Decoded, Limits, Method,
};
use crate::proxy::{PooledResponseHead, RecvBuf};
use crate::shard::{HttpListener, ShardCtx};
use crate::tls::Conn;

/// Bytes each direction of a stream's pipe holds.
const PIPE_CAPACITY: usize = 32 * 1024;
/// Largest response head the manager writes (its upstream head limit plus
/// the headers it adds).
const RESPONSE_HEAD_LIMIT: usize = crate::proxy::UPSTREAM_HEAD_LIMIT + 4096;

/// How the translated request body is framed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum BodyFraming {
    None,
    Length,
    Chunked,
}

/// Serves one stream to completion (or until the client resets it).
pub async fn serve_stream(
    ctx: &ShardCtx,
    listener: &Rc<HttpListener>,
    outer: Rc<Conn>,
    peer: SocketAddr,
    req: http::Request<RecvStream>,
    respond: h2::server::SendResponse<Bytes>,
) {
    if let Some(protocol) = super::connect::extended_protocol(req.extensions(), req.method()) {
        let protocol = protocol.to_string();
        // Boxed where it starts: a tunnel is rare, and inline its state
        // would enlarge every stream's task.
        return Box::pin(super::connect::serve_stream(ctx, listener, outer, peer, req, respond, protocol)).await;
    }
    let (parts, mut body) = req.into_parts();
    let mut head = Vec::with_capacity(512);
    let framing = encode_request_head(&parts, body.is_end_stream(), &mut head);
    let method = Method::from_bytes(parts.method.as_str().as_bytes());
    drop(parts);
    let (near, far) = pipe(PIPE_CAPACITY);
    let bridged = Conn::Bridged(Box::new(Bridged { end: far, outer }));
    let mut downstream = pin!(crate::proxy::serve_bridged(ctx, listener, bridged, peer, &head));
    let mut request = pin!(pump_request(&mut body, &near, framing));
    let mut response = pin!(relay_response(&near, respond, method));
    let (mut manager_done, mut request_done, mut response_done) = (false, false, false);
    std::future::poll_fn(|cx| {
        if !manager_done && downstream.as_mut().poll(cx).is_ready() {
            manager_done = true;
        }
        if !request_done && request.as_mut().poll(cx).is_ready() {
            request_done = true;
        }
        if !response_done {
            if let Poll::Ready(r) = response.as_mut().poll(cx) {
                response_done = true;
                if r.is_err() {
                    // Reset by the client, or cut: abandon the exchange.
                    return Poll::Ready(());
                }
            }
        }
        if manager_done && response_done {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
}

/// Writes the HTTP/1.1 request head for an HTTP/2 request into `out`.
pub fn encode_request_head(parts: &http::request::Parts, end_of_stream: bool, out: &mut Vec<u8>) -> BodyFraming {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let authority = parts.uri.authority().map(|a| a.as_str());
    if parts.method == http::Method::CONNECT {
        out.extend_from_slice(authority.unwrap_or("").as_bytes());
    } else {
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        out.extend_from_slice(target.as_bytes());
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if let Some(a) = authority {
        field(out, b"host", a.as_bytes());
    }
    let mut cookies: Option<Vec<u8>> = None;
    for (name, value) in &parts.headers {
        let name = name.as_str();
        match name {
            "host" if authority.is_some() => continue,
            "cookie" => {
                let joined = cookies.get_or_insert_with(Vec::new);
                if !joined.is_empty() {
                    joined.extend_from_slice(b"; ");
                }
                joined.extend_from_slice(value.as_bytes());
                continue;
            }
            // Framing is this bridge's; connection-specific fields are
            // malformed in HTTP/2 (h2 refuses them before we get here).
            "transfer-encoding" | "connection" | "keep-alive" | "proxy-connection" | "upgrade" => continue,
            _ => {}
        }
        field(out, name.as_bytes(), value.as_bytes());
    }
    if let Some(c) = cookies {
        field(out, b"cookie", &c);
    }
    let framing = if end_of_stream {
        BodyFraming::None
    } else if parts.headers.contains_key(http::header::CONTENT_LENGTH) {
        BodyFraming::Length
    } else {
        field(out, b"transfer-encoding", b"chunked");
        BodyFraming::Chunked
    };
    out.extend_from_slice(b"\r\n");
    framing
}

/// One `name: value` HTTP/1 field line.
pub(super) fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Raw HTTP/1 trailer field lines for an HTTP/2 trailers block.
pub fn encode_trailer_lines(trailers: &HeaderMap, out: &mut Vec<u8>) {
    for (name, value) in trailers {
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
}

/// Parses validated HTTP/1 trailer field lines (as `BodyDecoder` returns
/// them) into an HTTP/2 trailers block; fields HTTP/2 cannot carry are dropped.
pub fn parse_trailer_lines(raw: &[u8]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for line in raw.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|b| *b == b':') else { continue };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) else { continue };
        if is_connection_specific(name.as_str()) {
            continue;
        }
        map.append(name, value);
    }
    map
}

fn is_connection_specific(name: &str) -> bool {
    matches!(name, "connection" | "keep-alive" | "proxy-connection" | "te" | "transfer-encoding" | "upgrade")
}

/// Copies the request body (and trailers) into the pipe, releasing flow
/// control capacity to the client as the pipe takes the bytes.
async fn pump_request(body: &mut RecvStream, pipe: &PipeEnd, framing: BodyFraming) -> Result<(), ()> {
    if framing == BodyFraming::None {
        return Ok(());
    }
    let mut frame = Vec::with_capacity(32);
    while let Some(data) = std::future::poll_fn(|cx| body.poll_data(cx)).await {
        let data = data.map_err(|_| ())?;
        let n = data.len();
        if n == 0 {
            continue;
        }
        write_body(pipe, &data, framing == BodyFraming::Chunked, &mut frame).await.map_err(|_| ())?;
        let _ = body.flow_control().release_capacity(n);
    }
    let trailers = std::future::poll_fn(|cx| body.poll_trailers(cx)).await.map_err(|_| ())?;
    if framing == BodyFraming::Chunked {
        write_last_chunk(pipe, trailers.as_ref(), &mut frame).await.map_err(|_| ())?;
    }
    Ok(())
}

/// Writes body bytes of an HTTP/1.1 message into a pipe, as one chunk when
/// the body is `chunked` (`frame` is scratch space).
pub(crate) async fn write_body(pipe: &PipeEnd, data: &[u8], chunked: bool, frame: &mut Vec<u8>) -> io::Result<()> {
    if chunked {
        frame.clear();
        encode_chunk_header(data.len(), frame);
        pipe.write_all(frame).await?;
        pipe.write_all(data).await?;
        pipe.write_all(b"\r\n").await
    } else {
        pipe.write_all(data).await
    }
}

/// Ends a chunked body in a pipe: the last chunk, with HTTP/2 `trailers`
/// as its trailer fields.
pub(crate) async fn write_last_chunk(
    pipe: &PipeEnd,
    trailers: Option<&HeaderMap>,
    frame: &mut Vec<u8>,
) -> io::Result<()> {
    frame.clear();
    let mut lines = Vec::new();
    if let Some(t) = trailers {
        encode_trailer_lines(t, &mut lines);
    }
    encode_last_chunk(&lines, frame);
    pipe.write_all(frame).await
}

/// Reads the manager's HTTP/1.1 response from the pipe and sends it on the
/// stream.  `Err`: the client reset the stream, or the response broke off.
async fn relay_response(
    pipe: &PipeEnd,
    mut respond: h2::server::SendResponse<Bytes>,
    method: Method,
) -> Result<(), ()> {
    let limits = Limits { max_request_line: 8192, max_head_bytes: RESPONSE_HEAD_LIMIT, max_headers: 400 };
    let mut buf = RecvBuf::new(16 * 1024, RESPONSE_HEAD_LIMIT);
    let mut head = PooledResponseHead::take();
    let consumed = loop {
        match parse_response_head(buf.filled(), &limits, &mut head) {
            Ok(Some(n)) if (100..200).contains(&head.status) => {
                buf.consume(n);
                head.clear();
                continue;
            }
            Ok(Some(n)) => break n,
            Ok(None) => {}
            Err(_) => {
                respond.send_reset(Reason::INTERNAL_ERROR);
                return Err(());
            }
        }
        match fill(&mut buf, pipe, &mut |cx| respond.poll_reset(cx).map(|_| ())).await {
            Ok(n) if n > 0 => {}
            Ok(_) | Err(_) => {
                respond.send_reset(Reason::INTERNAL_ERROR);
                return Err(());
            }
        }
    };
    buf.consume(consumed);
    let kind = response_body_kind_for(method, &head).map_err(|_| respond.send_reset(Reason::INTERNAL_ERROR))?;
    strip_hop_by_hop(&mut head.headers);
    let mut response = http::Response::new(());
    *response.status_mut() = http::StatusCode::from_u16(head.status).map_err(|_| ())?;
    let headers = response.headers_mut();
    headers.reserve(head.headers.len());
    // The values share one allocation (HeaderValue::from_bytes would copy
    // each into its own).
    let mut values = bytes::BytesMut::with_capacity(head.headers.iter().map(|(_, v)| v.len()).sum());
    for (_, value) in head.headers.iter() {
        values.extend_from_slice(value);
    }
    let mut values = values.freeze();
    for (name, value) in head.headers.iter() {
        let value = values.split_to(value.len());
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_maybe_shared(value)) {
            headers.append(n, v);
        }
    }
    let no_body = matches!(kind, BodyKind::Empty | BodyKind::Length(0));
    let mut send = respond.send_response(response, no_body).map_err(|_| ())?;
    if no_body {
        return Ok(());
    }
    let mut decoder = BodyDecoder::with_limits(kind, &limits);
    loop {
        let (n, event) = match decoder.decode(buf.filled()) {
            Ok(r) => r,
            Err(_) => {
                send.send_reset(Reason::INTERNAL_ERROR);
                return Err(());
            }
        };
        match event {
            Decoded::Data(data) => {
                let data = Bytes::copy_from_slice(data);
                buf.consume(n);
                send_data(&mut send, data).await?;
            }
            Decoded::End { trailers } => {
                let result = if trailers.is_empty() {
                    send.send_data(Bytes::new(), true)
                } else {
                    send.send_trailers(parse_trailer_lines(trailers))
                };
                buf.consume(n);
                return result.map_err(|_| ());
            }
            Decoded::NeedMore => {
                buf.consume(n);
                let read = fill(&mut buf, pipe, &mut |cx| send.poll_reset(cx).map(|_| ())).await;
                match read {
                    Ok(0) => {
                        if decoder.decode_eof().is_err() {
                            send.send_reset(Reason::INTERNAL_ERROR);
                            return Err(());
                        }
                    }
                    Ok(_) => {}
                    Err(_) => {
                        send.send_reset(Reason::INTERNAL_ERROR);
                        return Err(());
                    }
                }
            }
        }
    }
}

/// One read from the pipe, abandoned (as an error) if `reset` fires first.
async fn fill(
    buf: &mut RecvBuf,
    pipe: &PipeEnd,
    reset: &mut dyn FnMut(&mut Context<'_>) -> Poll<()>,
) -> io::Result<usize> {
    let mut read = pin!(buf.fill_from(pipe));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = read.as_mut().poll(cx) {
            return Poll::Ready(r);
        }
        if reset(cx).is_ready() {
            return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
        }
        Poll::Pending
    })
    .await
}

/// Sends `data` as the client's stream window allows.
pub(crate) async fn send_data(send: &mut SendStream<Bytes>, mut data: Bytes) -> Result<(), ()> {
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        let granted = match std::future::poll_fn(|cx| send.poll_capacity(cx)).await {
            Some(Ok(n)) => n,
            _ => return Err(()),
        };
        if granted == 0 {
            continue;
        }
        let chunk = data.split_to(granted.min(data.len()));
        send.send_data(chunk, false).map_err(|_| ())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(req: http::Request<()>) -> http::request::Parts {
        req.into_parts().0
    }

    #[test]
    fn authority_becomes_host_and_cookies_join() {
        let req = http::Request::builder()
            .method("POST")
            .uri("https://example.com:8443/a/b?c=d")
            .header("host", "ignored.example")
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .header("x-thing", "v")
            .body(())
            .unwrap();
        let mut out = Vec::new();
        let framing = encode_request_head(&parts(req), false, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(framing, BodyFraming::Chunked);
        assert!(text.starts_with("POST /a/b?c=d HTTP/1.1\r\nhost: example.com:8443\r\n"), "{text}");
        assert!(!text.contains("ignored.example"), "{text}");
        assert!(text.contains("cookie: a=1; b=2\r\n"), "{text}");
        assert!(text.contains("x-thing: v\r\n"), "{text}");
        assert!(text.ends_with("transfer-encoding: chunked\r\n\r\n"), "{text}");
    }

    #[test]
    fn content_length_frames_the_body_and_no_body_has_no_framing() {
        let req = http::Request::builder().method("PUT").uri("/x").header("content-length", "5").body(()).unwrap();
        let mut out = Vec::new();
        assert_eq!(encode_request_head(&parts(req), false, &mut out), BodyFraming::Length);
        assert!(!String::from_utf8_lossy(&out).contains("transfer-encoding"));
        let req = http::Request::builder().uri("/x").body(()).unwrap();
        let mut out = Vec::new();
        assert_eq!(encode_request_head(&parts(req), true, &mut out), BodyFraming::None);
        assert_eq!(out, b"GET /x HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn trailers_round_trip_without_connection_fields() {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", HeaderValue::from_static("0"));
        t.insert("grpc-message", HeaderValue::from_static("all good"));
        let mut lines = Vec::new();
        encode_trailer_lines(&t, &mut lines);
        lines.extend_from_slice(b"Connection: close\r\n");
        let back = parse_trailer_lines(&lines);
        assert_eq!(back.get("grpc-status").unwrap(), "0");
        assert_eq!(back.get("grpc-message").unwrap(), "all good");
        assert!(back.get("connection").is_none());
    }
}
