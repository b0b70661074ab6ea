//! Extended CONNECT (RFC 8441): WebSocket (and other upgrade protocols) over
//! one HTTP/2 stream, to an HTTP/1.1 upstream.
//!
//! The server advertises SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441 §3; `h2`
//! sends it when the connection manager enables it).  A client then opens a
//! tunnel with `:method CONNECT` + `:protocol websocket` + `:scheme`,
//! `:path`, `:authority` (§4).  Like Envoy for an HTTP/1.1 upstream
//! (`transformUpgradeRequestFromH2toH1`), the stream becomes an HTTP/1.1
//! upgrade request (`GET <path>`, `Connection: upgrade`, `Upgrade:
//! <protocol>`), and it goes through the HTTP/1 connection manager's upgrade
//! path (`proxy::upgrade`) over the stream's bridge pipe: `upgrade_configs`
//! (route entry, else HCM entry), the fresh upstream connection, the
//! route's idle timeout and the byte tunnel are that path's, unchanged.
//!
//! What this module adds is the translation at both ends of the pipe:
//!
//! * WebSocket over HTTP/2 carries no `Sec-WebSocket-Key` (RFC 8441 §5), but
//!   an HTTP/1.1 WebSocket server requires one (RFC 6455 §4.1), so a random
//!   key is supplied when the client sent none, and the upstream's
//!   `Sec-WebSocket-Accept` must match it (RFC 6455 §4.2.2: SHA-1 of the key
//!   and the GUID, base64); a mismatch is a failed upstream handshake (502).
//! * The upstream's `101 Switching Protocols` becomes `200` on the stream
//!   (RFC 8441 §5), without the hop-by-hop and handshake-only fields; any
//!   other answer (the manager's `403` for a refused upgrade, `503`, the
//!   upstream's own refusal) is relayed as an ordinary response.
//! * After the `200`, DATA frames are the tunnel's bytes: the client's
//!   END_STREAM half-closes the upstream direction (the manager's tunnel
//!   forwards it as a TCP half-close), the upstream's end of stream becomes
//!   END_STREAM, and a client RST_STREAM drops the pipe, which ends the
//!   tunnel and closes the upstream connection.  Flow control is end to end:
//!   the client's window is released only once the bounded pipe took its
//!   bytes.
//!
//! It must not decide anything the connection manager decides (routing,
//! RBAC, whether the upgrade is allowed, timeouts).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::rc::Rc;
use std::task::Poll;

use bytes::Bytes;
use h2::{Reason, RecvStream, SendStream};
use http::{HeaderName, HeaderValue};

use super::bridge::{field, send_data};
use super::pipe::{pipe, Bridged, PipeEnd};
use crate::http1::{
    parse_response_head, response_body_kind_for, strip_hop_by_hop, BodyDecoder, Decoded, Limits, Method, ResponseHead,
    WellKnown,
};
use crate::proxy::RecvBuf;
use crate::shard::{HttpListener, ShardCtx};
use crate::tls::Conn;

/// Bytes each direction of the tunnel's pipe holds.
const PIPE_CAPACITY: usize = 32 * 1024;
const RESPONSE_HEAD_LIMIT: usize = crate::proxy::UPSTREAM_HEAD_LIMIT + 4096;
/// RFC 6455 §1.3.
const WEBSOCKET_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The `:protocol` of an extended CONNECT request (RFC 8441 §4), if it is one.
pub fn extended_protocol<'a>(extensions: &'a http::Extensions, method: &http::Method) -> Option<&'a str> {
    if method != http::Method::CONNECT {
        return None;
    }
    extensions.get::<h2::ext::Protocol>().map(|p| p.as_str())
}

/// Writes the HTTP/1.1 upgrade request for an extended CONNECT into `out`.
/// Returns the `Sec-WebSocket-Key` supplied on the client's behalf, whose
/// `Sec-WebSocket-Accept` the upstream must then return.
pub fn encode_upgrade_head(parts: &http::request::Parts, protocol: &str, out: &mut Vec<u8>) -> Option<String> {
    out.extend_from_slice(b"GET ");
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let authority = parts.uri.authority().map(|a| a.as_str());
    if let Some(a) = authority {
        field(out, b"host", a.as_bytes());
    }
    field(out, b"connection", b"upgrade");
    field(out, b"upgrade", protocol.as_bytes());
    let mut cookies: Option<Vec<u8>> = None;
    for (name, value) in &parts.headers {
        match name.as_str() {
            "host" if authority.is_some() => continue,
            "cookie" => {
                let joined = cookies.get_or_insert_with(Vec::new);
                if !joined.is_empty() {
                    joined.extend_from_slice(b"; ");
                }
                joined.extend_from_slice(value.as_bytes());
                continue;
            }
            // The tunnel has no HTTP body framing; connection-specific
            // fields are the ones written above.
            "content-length" | "transfer-encoding" | "connection" | "keep-alive" | "proxy-connection" | "upgrade"
            | "te" => continue,
            name => field(out, name.as_bytes(), value.as_bytes()),
        }
    }
    if let Some(c) = cookies {
        field(out, b"cookie", &c);
    }
    let mut supplied = None;
    if protocol.eq_ignore_ascii_case("websocket") && !parts.headers.contains_key("sec-websocket-key") {
        let key = new_websocket_key();
        field(out, b"sec-websocket-key", key.as_bytes());
        if !parts.headers.contains_key("sec-websocket-version") {
            field(out, b"sec-websocket-version", b"13");
        }
        supplied = Some(key);
    }
    out.extend_from_slice(b"\r\n");
    supplied
}

/// A `Sec-WebSocket-Key`: 16 random bytes, base64 (RFC 6455 §4.1).
fn new_websocket_key() -> String {
    use base64::Engine as _;
    use ring::rand::SecureRandom as _;
    let mut nonce = [0u8; 16];
    // The key is a nonce against caches, not a secret; SystemRandom only
    // fails when the OS has no randomness, and then any value will do.
    let _ = ring::rand::SystemRandom::new().fill(&mut nonce);
    base64::engine::general_purpose::STANDARD.encode(nonce)
}

/// The `Sec-WebSocket-Accept` a server must answer `key` with (RFC 6455 §4.2.2).
pub fn websocket_accept(key: &str) -> String {
    use base64::Engine as _;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key.as_bytes());
    ctx.update(WEBSOCKET_GUID);
    base64::engine::general_purpose::STANDARD.encode(ctx.finish().as_ref())
}

/// Serves one extended CONNECT stream to completion.
pub async fn serve_stream(
    ctx: &ShardCtx,
    listener: &Rc<HttpListener>,
    outer: Rc<Conn>,
    peer: SocketAddr,
    req: http::Request<RecvStream>,
    respond: h2::server::SendResponse<Bytes>,
    protocol: String,
) {
    let (parts, mut body) = req.into_parts();
    let mut head = Vec::with_capacity(512);
    let supplied_key = encode_upgrade_head(&parts, &protocol, &mut head);
    drop(parts);
    let (near, far) = pipe(PIPE_CAPACITY);
    let bridged = Conn::Bridged(Box::new(Bridged { end: far, outer }));
    let mut manager = pin!(crate::proxy::serve_bridged(ctx, listener, bridged, peer, &head));
    let mut stream = pin!(relay(&near, &mut body, respond, supplied_key));
    let (mut manager_done, mut stream_done) = (false, false);
    std::future::poll_fn(|cx| {
        if !manager_done && manager.as_mut().poll(cx).is_ready() {
            manager_done = true;
        }
        if !stream_done && stream.as_mut().poll(cx).is_ready() {
            stream_done = true;
        }
        // The stream's side ending first (a client reset) abandons the
        // manager's tunnel: dropping the pipe closes the upstream.
        if stream_done {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
}

/// Reads the manager's answer from the pipe; on `101` answers `200` and
/// tunnels, else relays the answer.
async fn relay(
    pipe: &PipeEnd,
    body: &mut RecvStream,
    mut respond: h2::server::SendResponse<Bytes>,
    supplied_key: Option<String>,
) -> Result<(), ()> {
    let limits = Limits { max_request_line: 8192, max_head_bytes: RESPONSE_HEAD_LIMIT, max_headers: 400 };
    let mut buf = RecvBuf::new(16 * 1024, RESPONSE_HEAD_LIMIT);
    let mut head = ResponseHead::new();
    let consumed = loop {
        match parse_response_head(buf.filled(), &limits, &mut head) {
            Ok(Some(n)) => break n,
            Ok(None) => {}
            Err(_) => return reset(&mut respond, Reason::INTERNAL_ERROR),
        }
        let read = fill_or_reset(&mut buf, pipe, &mut respond).await;
        if !matches!(read, Ok(n) if n > 0) {
            return reset(&mut respond, Reason::INTERNAL_ERROR);
        }
    };
    buf.consume(consumed);
    if head.status != 101 {
        return relay_refusal(pipe, &mut buf, &mut head, respond, &limits).await;
    }
    if let Some(key) = &supplied_key {
        let accept = head.headers.get(WellKnown::SecWebsocketAccept).map(<[u8]>::to_vec);
        if accept.as_deref() != Some(websocket_accept(key).as_bytes()) {
            let mut response = http::Response::new(());
            *response.status_mut() = http::StatusCode::BAD_GATEWAY;
            let _ = respond.send_response(response, true);
            return Err(());
        }
    }
    strip_hop_by_hop(&mut head.headers);
    let mut response = http::Response::new(());
    let headers = response.headers_mut();
    for (name, value) in head.headers.iter() {
        if name.eq_ignore_ascii_case("sec-websocket-accept") || name.eq_ignore_ascii_case("content-length") {
            continue;
        }
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_bytes(value)) {
            headers.append(n, v);
        }
    }
    let mut send = respond.send_response(response, false).map_err(|_| ())?;
    // Bytes the upstream sent right behind its 101.
    let early = Bytes::copy_from_slice(buf.filled());
    buf.consume(early.len());
    if !early.is_empty() {
        send_data(&mut send, early).await?;
    }
    tunnel(pipe, body, &mut send).await
}

fn reset(respond: &mut h2::server::SendResponse<Bytes>, reason: Reason) -> Result<(), ()> {
    respond.send_reset(reason);
    Err(())
}

/// Both directions of the tunnel until both ended (or either side reset).
async fn tunnel(pipe: &PipeEnd, body: &mut RecvStream, send: &mut SendStream<Bytes>) -> Result<(), ()> {
    let upstream_bound = async {
        while let Some(data) = std::future::poll_fn(|cx| body.poll_data(cx)).await {
            let data = data.map_err(|_| ())?;
            let n = data.len();
            pipe.write_all(&data).await.map_err(|_| ())?;
            let _ = body.flow_control().release_capacity(n);
        }
        // END_STREAM: the client is done sending (RFC 8441 §4 half-close).
        pipe.shutdown_write();
        Ok::<(), ()>(())
    };
    let mut chunk = vec![0u8; 16 * 1024];
    let downstream_bound = async {
        loop {
            let n = std::future::poll_fn(|cx| {
                if let Poll::Ready(r) = pipe.poll_read(cx, &mut chunk) {
                    return Poll::Ready(r.map_err(|_| ()));
                }
                // The client's RST_STREAM while we wait for upstream bytes.
                if send.poll_reset(cx).is_ready() {
                    return Poll::Ready(Err(()));
                }
                Poll::Pending
            })
            .await?;
            if n == 0 {
                return send.send_data(Bytes::new(), true).map_err(|_| ());
            }
            send_data(send, Bytes::copy_from_slice(&chunk[..n])).await?;
        }
    };
    let mut up = pin!(upstream_bound);
    let mut down = pin!(downstream_bound);
    let (mut up_done, mut down_done) = (false, false);
    std::future::poll_fn(|cx| {
        if !up_done {
            if let Poll::Ready(r) = up.as_mut().poll(cx) {
                if r.is_err() {
                    return Poll::Ready(Err(()));
                }
                up_done = true;
            }
        }
        if !down_done {
            if let Poll::Ready(r) = down.as_mut().poll(cx) {
                if r.is_err() {
                    return Poll::Ready(Err(()));
                }
                down_done = true;
            }
        }
        if up_done && down_done {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    })
    .await
}

/// Relays a non-101 answer (the upgrade was refused) as a normal response.
async fn relay_refusal(
    pipe: &PipeEnd,
    buf: &mut RecvBuf,
    head: &mut ResponseHead,
    respond: h2::server::SendResponse<Bytes>,
    limits: &Limits,
) -> Result<(), ()> {
    let mut respond = respond;
    let kind = response_body_kind_for(Method::Get, head).map_err(|_| respond.send_reset(Reason::INTERNAL_ERROR))?;
    strip_hop_by_hop(&mut head.headers);
    let mut response = http::Response::new(());
    *response.status_mut() = http::StatusCode::from_u16(head.status).map_err(|_| ())?;
    for (name, value) in head.headers.iter() {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_bytes(value)) {
            response.headers_mut().append(n, v);
        }
    }
    let no_body = matches!(kind, crate::http1::BodyKind::Empty | crate::http1::BodyKind::Length(0));
    let mut send = respond.send_response(response, no_body).map_err(|_| ())?;
    if no_body {
        return Ok(());
    }
    let mut decoder = BodyDecoder::with_limits(kind, limits);
    loop {
        let (n, event) = decoder.decode(buf.filled()).map_err(|_| send.send_reset(Reason::INTERNAL_ERROR))?;
        match event {
            Decoded::Data(data) => {
                let data = Bytes::copy_from_slice(data);
                buf.consume(n);
                send_data(&mut send, data).await?;
            }
            Decoded::End { .. } => {
                buf.consume(n);
                return send.send_data(Bytes::new(), true).map_err(|_| ());
            }
            Decoded::NeedMore => {
                buf.consume(n);
                match buf.fill_from(pipe).await {
                    Ok(0) if decoder.decode_eof().is_ok() => {}
                    Ok(n) if n > 0 => {}
                    _ => {
                        send.send_reset(Reason::INTERNAL_ERROR);
                        return Err(());
                    }
                }
            }
        }
    }
}

async fn fill_or_reset(
    buf: &mut RecvBuf,
    pipe: &PipeEnd,
    respond: &mut h2::server::SendResponse<Bytes>,
) -> std::io::Result<usize> {
    let mut read = pin!(buf.fill_from(pipe));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = read.as_mut().poll(cx) {
            return Poll::Ready(r);
        }
        if respond.poll_reset(cx).is_ready() {
            return Poll::Ready(Err(std::io::ErrorKind::ConnectionReset.into()));
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(req: http::Request<()>) -> http::request::Parts {
        req.into_parts().0
    }

    /// RFC 6455 §1.3's worked example.
    #[test]
    fn accept_of_the_rfc_example_key() {
        assert_eq!(websocket_accept("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn extended_connect_becomes_an_http1_upgrade_with_a_supplied_key() {
        let mut req = http::Request::builder()
            .method("CONNECT")
            .uri("http://chat.example:8080/ws?room=1")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-protocol", "chat")
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .body(())
            .unwrap();
        req.extensions_mut().insert(h2::ext::Protocol::from_static("websocket"));
        let parts = parts(req);
        assert_eq!(extended_protocol(&parts.extensions, &parts.method), Some("websocket"));
        let mut out = Vec::new();
        let key = encode_upgrade_head(&parts, "websocket", &mut out).expect("a key is supplied");
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("GET /ws?room=1 HTTP/1.1\r\nhost: chat.example:8080\r\n"), "{text}");
        assert!(text.contains("\r\nconnection: upgrade\r\nupgrade: websocket\r\n"), "{text}");
        assert!(text.contains("\r\nsec-websocket-protocol: chat\r\n"), "{text}");
        assert!(text.contains("\r\ncookie: a=1; b=2\r\n"), "{text}");
        assert!(text.contains(&format!("\r\nsec-websocket-key: {key}\r\n")), "{text}");
        assert_eq!(text.matches("sec-websocket-version").count(), 1, "{text}");
        assert!(text.ends_with("\r\n\r\n"));
        assert_eq!(key.len(), 24);
    }

    #[test]
    fn a_client_key_is_kept_and_plain_connect_is_not_extended() {
        let mut req = http::Request::builder()
            .method("CONNECT")
            .uri("http://h/x")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .body(())
            .unwrap();
        req.extensions_mut().insert(h2::ext::Protocol::from_static("websocket"));
        let mut out = Vec::new();
        assert_eq!(encode_upgrade_head(&parts(req), "websocket", &mut out), None);
        assert_eq!(String::from_utf8(out).unwrap().matches("sec-websocket-key").count(), 1);
        let plain = parts(http::Request::builder().method("CONNECT").uri("h:443").body(()).unwrap());
        assert_eq!(extended_protocol(&plain.extensions, &plain.method), None);
        let mut get = http::Request::builder().uri("/").body(()).unwrap();
        get.extensions_mut().insert(h2::ext::Protocol::from_static("websocket"));
        let get = parts(get);
        assert_eq!(extended_protocol(&get.extensions, &get.method), None);
    }
}
