//! gRPC transports: one bidirectional stream at a time over a tonic channel
//! (HTTP/2 on a kernel socket, with HTTP/2 keepalive PINGs), either the
//! aggregated one (`AggregatedDiscoveryService`, every ADS type on one
//! stream) or a per-type service (`ListenerDiscoveryService`,
//! `RouteDiscoveryService`, `ClusterDiscoveryService`,
//! `EndpointDiscoveryService`: one stream per type, as Envoy opens them when
//! `api_config_source` names `GRPC` / `DELTA_GRPC`), in the state-of-the-world
//! or the incremental variant.
//!
//! A transport only moves messages: it tells the driver (`driver.rs`) when
//! a stream is up (and hands it the sender for that stream's requests),
//! forwards every response, reports failures, and reconnects with jittered
//! exponential back-off (`backoff.rs`), reset once a stream delivered a
//! response.  The protocol lives in the state machine.

use std::net::SocketAddr;
use std::time::Duration;

use control::model;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};

use crate::backoff::Backoff;
use crate::driver::{Inbound, Requests, TransportId};
use crate::state::Kind;

/// HTTP/2 keepalive on the xDS connection: a PING after this much silence,
/// and the connection is dropped if the answer takes longer than the timeout.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Which gRPC service a transport calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Service {
    Aggregated,
    PerType(Kind),
}

impl Service {
    /// The method paths (state of the world, incremental), from the
    /// `envoy.service.*.v3` service definitions.
    fn paths(self) -> (&'static str, &'static str) {
        match self {
            Service::Aggregated => (
                "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources",
                "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources",
            ),
            Service::PerType(Kind::Listener) => (
                "/envoy.service.listener.v3.ListenerDiscoveryService/StreamListeners",
                "/envoy.service.listener.v3.ListenerDiscoveryService/DeltaListeners",
            ),
            Service::PerType(Kind::RouteConfiguration) => (
                "/envoy.service.route.v3.RouteDiscoveryService/StreamRoutes",
                "/envoy.service.route.v3.RouteDiscoveryService/DeltaRoutes",
            ),
            Service::PerType(Kind::Cluster) => (
                "/envoy.service.cluster.v3.ClusterDiscoveryService/StreamClusters",
                "/envoy.service.cluster.v3.ClusterDiscoveryService/DeltaClusters",
            ),
            Service::PerType(Kind::ClusterLoadAssignment) => (
                "/envoy.service.endpoint.v3.EndpointDiscoveryService/StreamEndpoints",
                "/envoy.service.endpoint.v3.EndpointDiscoveryService/DeltaEndpoints",
            ),
            Service::PerType(Kind::Secret) => (
                "/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets",
                "/envoy.service.secret.v3.SecretDiscoveryService/DeltaSecrets",
            ),
        }
    }
}

/// Runs one gRPC transport forever (until the driver goes away).
pub(crate) async fn run(
    id: TransportId,
    service: Service,
    server: model::XdsServer,
    base: std::sync::Arc<model::Config>,
    inbound: mpsc::UnboundedSender<Inbound>,
) {
    let mut backoff = Backoff::new(server.backoff_base, server.backoff_max);
    let mut attempt: usize = 0;
    let mut rng = crate::seed() ^ (id as u64);
    loop {
        let result = stream_once(id, service, &server, &base, &inbound, &mut backoff, attempt).await;
        attempt = attempt.wrapping_add(1);
        rng = crate::splitmix(rng);
        let wait = backoff.next(rng);
        let error = match result {
            Ok(()) => "stream closed by the server".to_string(),
            Err(e) => e,
        };
        tracing::warn!(?service, error = %error, retry_in_ms = wait.as_millis() as u64, "xDS stream failed");
        if inbound.send(Inbound::Failed { transport: id, error }).is_err() {
            return;
        }
        tokio::time::sleep(wait).await;
    }
}

async fn stream_once(
    id: TransportId,
    service: Service,
    server: &model::XdsServer,
    base: &model::Config,
    inbound: &mpsc::UnboundedSender<Inbound>,
    backoff: &mut Backoff,
    attempt: usize,
) -> Result<(), String> {
    let addr = target(base, &server.cluster, attempt).await?;
    let connect_timeout = base.clusters.get(&server.cluster).map_or(Duration::from_secs(5), |c| c.connect_timeout);
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    let channel = match crate::tls::XdsTls::for_cluster(base, &server.cluster, crate::tls::ALPN_GRPC) {
        None => endpoint.connect().await,
        // TLS (the xDS cluster's `transport_socket`): tonic keeps its
        // `http` scheme (HTTP/2 with prior knowledge, ALPN `h2`); the
        // connector does TCP and the handshake, inside connect_timeout.
        Some(tls) => {
            endpoint
                .connect_with_connector(tower::service_fn(move |_: tonic::codegen::http::Uri| {
                    let tls = tls.clone();
                    async move {
                        let tcp = tokio::net::TcpStream::connect(addr)
                            .await
                            .map_err(|e| format!("connecting to {addr}: {e}"))?;
                        let _ = tcp.set_nodelay(true);
                        let stream = tls.connect(tcp, addr).await?;
                        Ok::<_, String>(hyper_util::rt::TokioIo::new(stream))
                    }
                }))
                .await
        }
    }
    .map_err(|e| format!("connecting to {addr}: {}", crate::tls::error_chain(&e)))?;
    let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(usize::MAX);
    grpc.ready().await.map_err(|e| format!("{addr}: {e}"))?;
    let (sotw_path, delta_path) = service.paths();
    // The requests channel goes to the driver before the call is opened:
    // some servers send no headers until they have a first request.
    if server.api_type == model::XdsApiType::DeltaGrpc {
        let (tx, rx) = mpsc::unbounded_channel::<DeltaDiscoveryRequest>();
        inbound.send(Inbound::Connected { transport: id, requests: Requests::Delta(tx) }).map_err(|_| "driver gone")?;
        let mut responses =
            open::<DeltaDiscoveryRequest, DeltaDiscoveryResponse>(&mut grpc, delta_path, rx, addr).await?;
        inbound.send(Inbound::Up { transport: id }).map_err(|_| "driver gone")?;
        loop {
            match responses.message().await {
                Ok(Some(response)) => {
                    backoff.reset();
                    inbound.send(Inbound::Delta { transport: id, response }).map_err(|_| "driver gone")?;
                }
                Ok(None) => return Ok(()),
                Err(status) => return Err(format!("{status}")),
            }
        }
    } else {
        let (tx, rx) = mpsc::unbounded_channel::<DiscoveryRequest>();
        inbound.send(Inbound::Connected { transport: id, requests: Requests::Sotw(tx) }).map_err(|_| "driver gone")?;
        let mut responses = open::<DiscoveryRequest, DiscoveryResponse>(&mut grpc, sotw_path, rx, addr).await?;
        inbound.send(Inbound::Up { transport: id }).map_err(|_| "driver gone")?;
        loop {
            match responses.message().await {
                Ok(Some(response)) => {
                    backoff.reset();
                    inbound.send(Inbound::Response { transport: id, response }).map_err(|_| "driver gone")?;
                }
                Ok(None) => return Ok(()),
                Err(status) => return Err(format!("{status}")),
            }
        }
    }
}

async fn open<Req, Resp>(
    grpc: &mut tonic::client::Grpc<Channel>,
    path: &'static str,
    requests: mpsc::UnboundedReceiver<Req>,
    addr: SocketAddr,
) -> Result<tonic::Streaming<Resp>, String>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
    let request = tonic::Request::new(UnboundedReceiverStream::new(requests));
    grpc.streaming(request, PathAndQuery::from_static(path), codec)
        .await
        .map(tonic::Response::into_inner)
        .map_err(|e| format!("opening {path} on {addr}: {e}"))
}

/// The management server's address: an endpoint of the static xDS
/// cluster, a different one on each attempt; host names are resolved here.
pub(crate) async fn target(base: &model::Config, cluster: &str, attempt: usize) -> Result<SocketAddr, String> {
    let c = base.clusters.get(cluster).ok_or_else(|| format!("xDS cluster {cluster:?} is not defined"))?;
    if c.endpoints.is_empty() {
        return Err(format!("xDS cluster {cluster:?} has no endpoints"));
    }
    match &c.endpoints[attempt % c.endpoints.len()].address {
        model::EndpointAddress::Socket(a) => Ok(*a),
        model::EndpointAddress::Dns { host, port } => tokio::net::lookup_host((host.as_str(), *port))
            .await
            .map_err(|e| format!("resolving {host}: {e}"))?
            .next()
            .ok_or_else(|| format!("{host} resolved to no address")),
    }
}
