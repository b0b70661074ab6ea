//! gRPC active health checks (`HealthCheck.grpc_health_check`).
//!
//! Speaks the gRPC health checking protocol
//! (<https://github.com/grpc/grpc/blob/master/doc/health-checking.md>,
//! `grpc/health/v1/health.proto`): one unary `grpc.health.v1.Health/Check`
//! call over HTTP/2 cleartext (h2c, prior knowledge; upstream TLS is refused
//! by the config loader) with `HealthCheckRequest { string service = 1; }`,
//! `:authority` set to the configured `authority` (default: the cluster
//! name).  As in Envoy's gRPC health checker, the host passes only when the
//! response is HTTP 200 with a gRPC content type, carries exactly one
//! uncompressed `HealthCheckResponse { ServingStatus status = 1; }` whose
//! status is `SERVING` (1), and ends with `grpc-status: 0`; any other status
//! (`UNKNOWN`, `NOT_SERVING`, `SERVICE_UNKNOWN`), a non-200 response, a
//! missing or non-zero `grpc-status` or a malformed body fails the check.
//! Connect errors, resets and the `timeout` are network failures.
//!
//! It runs only on the cluster's health-checker thread (never on a shard):
//! the HTTP/2 client is the `h2` crate driven by a current-thread tokio
//! runtime owned by that thread.  Deviation from Envoy, documented: every
//! check opens a fresh connection (Envoy reuses one by default).  The two
//! messages are a single field each, so they are encoded by hand here
//! instead of pulling protobuf code generation into the data plane.
//!
//! Must not touch host state: it returns a verdict; `health_check.rs` owns
//! the thresholds and the shared host flags.

use std::cell::OnceCell;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;

/// `grpc.health.v1.HealthCheckResponse.ServingStatus.SERVING`.
const SERVING: u64 = 1;
/// Bound on the response body read (a `HealthCheckResponse` is a few bytes).
const MAX_BODY: usize = 16 * 1024;

/// What the checker saw of one `Check` call.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CheckResponse {
    pub http_status: u16,
    pub content_type: Option<String>,
    /// `grpc-status` from the trailers, or from the headers of a
    /// trailers-only response.
    pub grpc_status: Option<String>,
    pub body: Vec<u8>,
}

/// The gRPC-framed `HealthCheckRequest { service }` body.
pub fn request_body(service: &str) -> Vec<u8> {
    let mut msg = Vec::with_capacity(service.len() + 6);
    if !service.is_empty() {
        msg.push(0x0A); // field 1, wire type 2 (length-delimited)
        put_varint(&mut msg, service.len() as u64);
        msg.extend_from_slice(service.as_bytes());
    }
    let mut framed = Vec::with_capacity(5 + msg.len());
    framed.push(0); // not compressed
    framed.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    framed.extend_from_slice(&msg);
    framed
}

/// Envoy's decision: healthy only on a clean `SERVING` answer.
pub fn passed(r: &CheckResponse) -> bool {
    if r.http_status != 200 {
        return false;
    }
    // `application/grpc` or `application/grpc+proto` etc.
    let grpc_type = r.content_type.as_deref().is_some_and(|t| {
        t == "application/grpc" || t.starts_with("application/grpc+") || t.starts_with("application/grpc;")
    });
    if !grpc_type || r.grpc_status.as_deref().map(str::trim) != Some("0") {
        return false;
    }
    matches!(single_message(&r.body).and_then(serving_status), Some(SERVING))
}

/// The one uncompressed gRPC message in `body`, if that is what it holds.
fn single_message(body: &[u8]) -> Option<&[u8]> {
    let (&flag, rest) = body.split_first()?;
    if flag != 0 || rest.len() < 4 {
        return None;
    }
    let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    let msg = &rest[4..];
    (msg.len() == len).then_some(msg)
}

/// `HealthCheckResponse.status` (absent = `UNKNOWN` = 0); `None` when the
/// message does not parse.  Unknown fields are skipped, as protobuf requires.
fn serving_status(mut msg: &[u8]) -> Option<u64> {
    let mut status = 0;
    while !msg.is_empty() {
        let key = take_varint(&mut msg)?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                let v = take_varint(&mut msg)?;
                if field == 1 {
                    status = v;
                }
            }
            1 => msg = msg.get(8..)?,
            2 => {
                let n = usize::try_from(take_varint(&mut msg)?).ok()?;
                msg = msg.get(n..)?;
            }
            5 => msg = msg.get(4..)?,
            _ => return None,
        }
    }
    Some(status)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn take_varint(buf: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for i in 0..10 {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        v |= u64::from(b & 0x7F) << (7 * i);
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

thread_local! {
    /// The checker thread's runtime (built on its first gRPC check).
    static RUNTIME: OnceCell<Option<tokio::runtime::Runtime>> = const { OnceCell::new() };
}

/// One check: `Ok(passed)`, or `Err` for a network failure or timeout.
pub(super) fn probe(addr: SocketAddr, service: &str, authority: &str, timeout: Duration) -> Result<bool, ()> {
    RUNTIME.with(|cell| {
        let rt = cell.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_all().build().ok());
        let Some(rt) = rt else { return Err(()) };
        rt.block_on(async {
            match tokio::time::timeout(timeout, call(addr, service, authority)).await {
                Ok(Ok(resp)) => Ok(passed(&resp)),
                Ok(Err(())) | Err(_) => Err(()),
            }
        })
    })
}

async fn call(addr: SocketAddr, service: &str, authority: &str) -> Result<CheckResponse, ()> {
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|_| ())?;
    let _ = tcp.set_nodelay(true);
    let (client, connection) = h2::client::handshake(tcp).await.map_err(|_| ())?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let result = exchange(client, service, authority).await;
    driver.abort();
    result
}

async fn exchange(client: h2::client::SendRequest<Bytes>, service: &str, authority: &str) -> Result<CheckResponse, ()> {
    let mut client = client.ready().await.map_err(|_| ())?;
    let request = http::Request::builder()
        .method(http::Method::POST)
        .uri(format!("http://{authority}/grpc.health.v1.Health/Check"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("user-agent", "meshgate-hc")
        .body(())
        .map_err(|_| ())?;
    let (response, mut send) = client.send_request(request, false).map_err(|_| ())?;
    send.send_data(Bytes::from(request_body(service)), true).map_err(|_| ())?;
    let response = response.await.map_err(|_| ())?;
    let (parts, mut body) = response.into_parts();
    let header = |m: &http::HeaderMap, name: &str| m.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let mut out = CheckResponse {
        http_status: parts.status.as_u16(),
        content_type: header(&parts.headers, "content-type"),
        grpc_status: header(&parts.headers, "grpc-status"),
        body: Vec::new(),
    };
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|_| ())?;
        let _ = body.flow_control().release_capacity(chunk.len());
        out.body.extend_from_slice(&chunk);
        if out.body.len() > MAX_BODY {
            return Ok(CheckResponse { body: Vec::new(), grpc_status: None, ..out });
        }
    }
    if let Some(trailers) = body.trailers().await.map_err(|_| ())? {
        out.grpc_status = header(&trailers, "grpc-status");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u64) -> Vec<u8> {
        let mut msg = Vec::new();
        if status != 0 {
            msg.push(0x08); // field 1, varint
            put_varint(&mut msg, status);
        }
        let mut framed = vec![0];
        framed.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        framed.extend_from_slice(&msg);
        framed
    }

    fn ok(status: u64) -> CheckResponse {
        CheckResponse {
            http_status: 200,
            content_type: Some("application/grpc".into()),
            grpc_status: Some("0".into()),
            body: response(status),
        }
    }

    #[test]
    fn request_encodes_the_service_field() {
        assert_eq!(request_body(""), vec![0, 0, 0, 0, 0]);
        assert_eq!(request_body("svc"), vec![0, 0, 0, 0, 5, 0x0A, 3, b's', b'v', b'c']);
    }

    #[test]
    fn only_serving_passes() {
        assert!(passed(&ok(1)), "SERVING");
        assert!(!passed(&ok(0)), "UNKNOWN (field absent)");
        assert!(!passed(&ok(2)), "NOT_SERVING");
        assert!(!passed(&ok(3)), "SERVICE_UNKNOWN");
        let proto = CheckResponse { content_type: Some("application/grpc+proto".into()), ..ok(1) };
        assert!(passed(&proto));
    }

    #[test]
    fn anything_but_a_clean_answer_fails() {
        assert!(!passed(&CheckResponse { http_status: 503, ..ok(1) }), "non-200");
        assert!(!passed(&CheckResponse { content_type: Some("text/plain".into()), ..ok(1) }));
        assert!(!passed(&CheckResponse { content_type: None, ..ok(1) }));
        assert!(!passed(&CheckResponse { grpc_status: None, ..ok(1) }), "no grpc-status");
        assert!(!passed(&CheckResponse { grpc_status: Some("14".into()), ..ok(1) }), "UNAVAILABLE");
        assert!(!passed(&CheckResponse { body: Vec::new(), ..ok(1) }), "trailers-only, no message");
        let mut compressed = response(1);
        compressed[0] = 1;
        assert!(!passed(&CheckResponse { body: compressed, ..ok(1) }), "compressed: not negotiated");
        let mut two = response(1);
        two.extend(response(1));
        assert!(!passed(&CheckResponse { body: two, ..ok(1) }), "two messages");
        let mut short = response(1);
        short.pop();
        assert!(!passed(&CheckResponse { body: short, ..ok(1) }), "truncated");
    }

    #[test]
    fn unknown_fields_are_skipped() {
        // field 2 (length-delimited "xy"), field 3 fixed32, then status = SERVING.
        let msg = [0x12, 2, b'x', b'y', 0x1D, 1, 2, 3, 4, 0x08, 1];
        assert_eq!(serving_status(&msg), Some(1));
        assert_eq!(serving_status(&[0x08]), None, "truncated varint");
        assert_eq!(serving_status(&[0x0B]), None, "group wire types are not valid here");
    }

    #[test]
    fn refused_connection_is_a_network_failure() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        assert_eq!(probe(closed, "", "c", Duration::from_secs(1)), Err(()));
    }

    #[test]
    fn silent_peer_times_out() {
        // Accepts TCP but never speaks HTTP/2: the timeout is a network failure.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::time::Instant::now();
        assert_eq!(probe(addr, "", "c", Duration::from_millis(300)), Err(()));
        assert!(t.elapsed() >= Duration::from_millis(250));
        drop(l);
    }
}
