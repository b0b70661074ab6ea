//! The ADS gRPC driver: one `StreamAggregatedResources` stream at a time
//! over a tonic channel (HTTP/2 on a kernel socket, with HTTP/2 keepalive
//! PINGs), feeding responses to [`AdsState`] and sending what it says.
//! Reconnects with jittered exponential back-off (`backoff.rs`), resetting
//! it once a stream delivered a response; the published config stays as it
//! is while disconnected.  It holds no protocol logic of its own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use control::model;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

use crate::backoff::Backoff;
use crate::state::{AdsState, DeltaStep, Step};
use crate::{Publisher, XdsStats};

/// HTTP/2 keepalive on the xDS connection: a PING after this much silence,
/// and the connection is dropped if the answer takes longer than the timeout.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) async fn run(
    mut state: AdsState,
    server: model::XdsServer,
    base: Arc<model::Config>,
    publisher: Publisher,
    stats: XdsStats,
) {
    let mut backoff = Backoff::new(server.backoff_base, server.backoff_max);
    let mut attempt: usize = 0;
    let mut rng = seed();
    loop {
        let result = stream_once(&mut state, &server, &base, &publisher, &stats, &mut backoff, attempt).await;
        stats.connected_state.set(0);
        attempt = attempt.wrapping_add(1);
        rng = splitmix(rng);
        let wait = backoff.next(rng);
        match result {
            Ok(()) => tracing::warn!(retry_in_ms = wait.as_millis() as u64, "xDS stream closed by the server"),
            Err(e) => tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "xDS stream failed"),
        }
        for k in crate::state::ALL_KINDS {
            stats.kind(k).update_failure.inc();
        }
        // Initial fetch timeouts keep running while disconnected.
        let until = tokio::time::Instant::now() + wait;
        loop {
            let next = state.next_deadline().map(to_tokio).filter(|d| *d < until);
            match next {
                Some(d) => {
                    tokio::time::sleep_until(d).await;
                    let step = state.on_tick(Instant::now());
                    apply(step, &publisher, &stats, None).await;
                }
                None => {
                    tokio::time::sleep_until(until).await;
                    break;
                }
            }
        }
    }
}

async fn stream_once(
    state: &mut AdsState,
    server: &model::XdsServer,
    base: &model::Config,
    publisher: &Publisher,
    stats: &XdsStats,
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
    let channel = endpoint.connect().await.map_err(|e| format!("connecting to {addr}: {e}"))?;
    let mut client = AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(usize::MAX);
    if server.api_type == model::XdsApiType::DeltaGrpc {
        return delta_stream(state, client, addr, publisher, stats, backoff).await;
    }
    let (tx, rx) = mpsc::channel::<DiscoveryRequest>(64);
    for r in state.stream_started() {
        tx.send(r).await.map_err(|_| "request channel closed".to_string())?;
    }
    let mut inbound = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .map_err(|e| format!("opening the ADS stream on {addr}: {e}"))?
        .into_inner();
    stats.connected_state.set(1);
    tracing::info!(server = %addr, "xDS stream established");
    loop {
        let deadline = state.next_deadline().map(to_tokio);
        tokio::select! {
            msg = inbound.message() => match msg {
                Ok(Some(response)) => {
                    backoff.reset();
                    let step = state.on_response(response, Instant::now());
                    apply(step, publisher, stats, Some(&tx)).await;
                }
                Ok(None) => return Ok(()),
                Err(status) => return Err(format!("{status}")),
            },
            _ = sleep_opt(deadline) => {
                let step = state.on_tick(Instant::now());
                apply(step, publisher, stats, Some(&tx)).await;
            }
        }
    }
}

/// `DeltaAggregatedResources`: the same loop with the delta messages.
async fn delta_stream(
    state: &mut AdsState,
    mut client: AggregatedDiscoveryServiceClient<tonic::transport::Channel>,
    addr: SocketAddr,
    publisher: &Publisher,
    stats: &XdsStats,
    backoff: &mut Backoff,
) -> Result<(), String> {
    let (tx, rx) = mpsc::channel::<DeltaDiscoveryRequest>(64);
    for r in state.delta_stream_started() {
        tx.send(r).await.map_err(|_| "request channel closed".to_string())?;
    }
    let mut inbound = client
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
        .map_err(|e| format!("opening the delta ADS stream on {addr}: {e}"))?
        .into_inner();
    stats.connected_state.set(1);
    tracing::info!(server = %addr, "xDS delta stream established");
    loop {
        let deadline = state.next_deadline().map(to_tokio);
        let step = tokio::select! {
            msg = inbound.message() => match msg {
                Ok(Some(response)) => {
                    backoff.reset();
                    state.on_delta_response(response, Instant::now())
                }
                Ok(None) => return Ok(()),
                Err(status) => return Err(format!("{status}")),
            },
            _ = sleep_opt(deadline) => {
                let tick = state.on_tick(Instant::now());
                DeltaStep { requests: Vec::new(), publish: tick.publish, events: tick.events }
            }
        };
        for e in &step.events {
            stats.record(e);
        }
        if let Some(cfg) = step.publish {
            publisher.publish(cfg);
        }
        for r in step.requests {
            if let Some(e) = &r.error_detail {
                tracing::warn!(type_url = %r.type_url, detail = %e.message, "xDS update rejected (NACK)");
            }
            tx.send(r).await.map_err(|_| "request channel closed".to_string())?;
        }
    }
}

async fn sleep_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn to_tokio(i: Instant) -> tokio::time::Instant {
    tokio::time::Instant::from_std(i)
}

/// Publishes, counts, and sends the requests (ACK / NACK / subscriptions).
async fn apply(step: Step, publisher: &Publisher, stats: &XdsStats, tx: Option<&mpsc::Sender<DiscoveryRequest>>) {
    for e in &step.events {
        stats.record(e);
    }
    if let Some(cfg) = step.publish {
        publisher.publish(cfg);
    }
    if let Some(tx) = tx {
        for r in step.requests {
            if let Some(e) = &r.error_detail {
                tracing::warn!(type_url = %r.type_url, detail = %e.message, "xDS update rejected (NACK)");
            }
            if tx.send(r).await.is_err() {
                return;
            }
        }
    }
}

/// The management server's address: an endpoint of the static xDS
/// cluster, a different one on each attempt; host names are resolved here.
async fn target(base: &model::Config, cluster: &str, attempt: usize) -> Result<SocketAddr, String> {
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

fn seed() -> u64 {
    let t =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    splitmix(t ^ u64::from(std::process::id()))
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
