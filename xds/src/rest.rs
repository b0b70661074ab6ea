//! The REST-JSON transport: polls one resource type with
//! `POST /v3/discovery:<type>` (`listeners`, `routes`, `clusters`,
//! `endpoints`) carrying a `DiscoveryRequest` in canonical proto3 JSON, and
//! reads a `DiscoveryResponse` in proto3 JSON (`resources` as `Any` with
//! `@type`).  Specification: Envoy's "xDS REST and gRPC protocol" document,
//! section "REST-JSON polling subscriptions", and `ApiConfigSource`
//! (`refresh_delay`, `request_timeout`).
//!
//! * Each poll is a unary request; REST has no nonce.  The request carries
//!   the last accepted `version_info` (empty before the first) and the
//!   subscribed names (none for LDS / CDS), and the node on every request,
//!   as Envoy's HTTP subscription does.
//! * The state machine answers each response with an ACK (the new
//!   `version_info`) or a NACK (the previous `version_info` and an
//!   `error_detail`); here that answer simply becomes the body of the next
//!   poll, so a NACK's detail reaches the server on the next poll.
//! * `200` with a body: a response, handed to the state machine.
//!   `304 Not Modified`: nothing changed.  Anything else, a connection error
//!   or no answer within `request_timeout`: a failure (`update_failure`),
//!   the config in force keeps serving.
//! * The next poll is `refresh_delay` after the previous one ended, or at
//!   once when the subscribed names change (a new RDS / EDS name must not
//!   wait a whole period).
//!
//! HTTP/1.1 over a kernel socket, one connection per poll (hyper's client
//! connection; the control thread's runtime drives it).

use std::time::Duration;

use bytes::Bytes;
use control::model;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use prost::Message;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::driver::{Inbound, Requests, TransportId};
use crate::state::Kind;

const DISCOVERY_REQUEST: &str = "envoy.service.discovery.v3.DiscoveryRequest";
const DISCOVERY_RESPONSE: &str = "envoy.service.discovery.v3.DiscoveryResponse";

/// `/v3/discovery:<type>` for a kind.
pub fn path(kind: Kind) -> &'static str {
    match kind {
        Kind::Listener => "/v3/discovery:listeners",
        Kind::RouteConfiguration => "/v3/discovery:routes",
        Kind::Cluster => "/v3/discovery:clusters",
        Kind::ClusterLoadAssignment => "/v3/discovery:endpoints",
        Kind::Secret => "/v3/discovery:secrets",
    }
}

/// What one poll returned.
#[derive(Debug)]
pub enum Polled {
    Updated(DiscoveryResponse),
    NotModified,
}

/// Polls `kind` forever (until the driver goes away).
pub(crate) async fn run(
    id: TransportId,
    kind: Kind,
    server: model::XdsServer,
    base: std::sync::Arc<model::Config>,
    node: Node,
    inbound: mpsc::UnboundedSender<Inbound>,
) {
    let (tx, mut answers) = mpsc::unbounded_channel::<DiscoveryRequest>();
    if inbound.send(Inbound::Connected { transport: id, requests: Requests::Sotw(tx) }).is_err() {
        return;
    }
    // The request of the next poll, as the state machine last wrote it.
    let mut next: Option<DiscoveryRequest> = None;
    let mut polled_names: Option<Vec<String>> = None;
    let mut poll_at = Instant::now();
    let mut attempt: usize = 0;
    let named = matches!(kind, Kind::RouteConfiguration | Kind::ClusterLoadAssignment);
    loop {
        tokio::select! {
            r = answers.recv() => {
                let Some(r) = r else { return };
                if polled_names.as_ref() != Some(&r.resource_names) {
                    poll_at = Instant::now();
                }
                // RDS / EDS with no names left: nothing to poll (an empty
                // name list would read as a wildcard request).
                next = if named && r.resource_names.is_empty() { None } else { Some(r) };
                continue;
            }
            _ = tokio::time::sleep_until(poll_at), if next.is_some() => {}
        }
        let mut request = next.clone().expect("polls only with a request");
        request.response_nonce.clear();
        request.node = Some(node.clone());
        polled_names = Some(request.resource_names.clone());
        match poll(&base, &server, kind, &request, attempt).await {
            Ok(Polled::Updated(response)) if response.type_url == kind.type_url() => {
                if inbound.send(Inbound::Response { transport: id, response }).is_err() {
                    return;
                }
                // The ACK or NACK is the next poll's request.
                match tokio::time::timeout(Duration::from_secs(5), answers.recv()).await {
                    Ok(Some(r)) => next = Some(r),
                    Ok(None) => return,
                    Err(_) => tracing::warn!(?kind, "no answer from the xDS state machine"),
                }
            }
            Ok(Polled::Updated(response)) => {
                let error = format!("a {} response to a {} poll", response.type_url, kind.type_url());
                tracing::warn!(error = %error, "xDS REST poll failed");
                attempt = attempt.wrapping_add(1);
                if inbound.send(Inbound::Failed { transport: id, error }).is_err() {
                    return;
                }
            }
            Ok(Polled::NotModified) => {}
            Err(error) => {
                tracing::warn!(?kind, error = %error, "xDS REST poll failed");
                attempt = attempt.wrapping_add(1);
                if inbound.send(Inbound::Failed { transport: id, error }).is_err() {
                    return;
                }
            }
        }
        poll_at = Instant::now() + server.refresh_delay;
    }
}

/// One `POST /v3/discovery:<type>`, bounded by `request_timeout`.
pub async fn poll(
    base: &model::Config,
    server: &model::XdsServer,
    kind: Kind,
    request: &DiscoveryRequest,
    attempt: usize,
) -> Result<Polled, String> {
    let addr = crate::grpc::target(base, &server.cluster, attempt).await?;
    let body = control::bootstrap::dynamic::to_canonical_json(DISCOVERY_REQUEST, &request.encode_to_vec())?;
    let tls = crate::tls::XdsTls::for_cluster(base, &server.cluster, crate::tls::ALPN_REST);
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connecting to {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let http_request = hyper::Request::post(path(kind))
            .header(hyper::header::HOST, addr.to_string())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        match tls {
            None => exchange(TokioIo::new(stream), http_request, addr).await,
            Some(tls) => exchange(TokioIo::new(tls.connect(stream, addr).await?), http_request, addr).await,
        }
    };
    let (status, body) = tokio::time::timeout(server.request_timeout, exchange)
        .await
        .map_err(|_| format!("no response from {addr} within request_timeout ({:?})", server.request_timeout))??;
    match status {
        hyper::StatusCode::NOT_MODIFIED => Ok(Polled::NotModified),
        hyper::StatusCode::OK => {
            let text = std::str::from_utf8(&body).map_err(|_| "the response body is not UTF-8".to_string())?;
            let bytes = control::bootstrap::dynamic::from_proto3_json(DISCOVERY_RESPONSE, text)
                .map_err(|e| format!("the DiscoveryResponse JSON does not parse: {e}"))?;
            DiscoveryResponse::decode(bytes.as_slice()).map(Polled::Updated).map_err(|e| e.to_string())
        }
        other => Err(format!(
            "{} {} answered {other}: {}",
            addr,
            path(kind),
            String::from_utf8_lossy(&body[..body.len().min(200)])
        )),
    }
}

/// One HTTP/1.1 request on a fresh connection (plaintext or TLS).
async fn exchange<Io>(
    io: Io,
    request: hyper::Request<Full<Bytes>>,
    addr: std::net::SocketAddr,
) -> Result<(hyper::StatusCode, Bytes), String>
where
    Io: hyper::rt::Read + hyper::rt::Write + Send + Unpin + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(io).await.map_err(|e| format!("{addr}: {e}"))?;
    tokio::spawn(connection);
    let response = sender.send_request(request).await.map_err(|e| format!("{addr}: {e}"))?;
    let status = response.status();
    let body = response.into_body().collect().await.map_err(|e| format!("{addr}: {e}"))?.to_bytes();
    Ok((status, body))
}
