//! A scriptable xDS management server for end-to-end tests: a real tonic
//! `AggregatedDiscoveryService` (state of the world and delta), and the
//! per-type `ListenerDiscoveryService`, `RouteDiscoveryService`,
//! `ClusterDiscoveryService` and `EndpointDiscoveryService` (one type per
//! stream, same semantics, same resources), built from the same
//! Envoy protos (`envoy-types`) meshgate's client uses, on its own thread
//! and tokio runtime.
//!
//! Tests set resources per type (raw `Any`s: the test encodes them, so this
//! module needs none of meshgate's crates), and the server pushes them to
//! every stream subscribed to the type.  It can also withhold a type (never
//! answer it), push resources meshgate must reject, drop every stream, and
//! stop and restart on the same port (a control-plane outage).  Every
//! request received is recorded, so tests can check ACKs, NACKs and their
//! `error_detail`.
//!
//! Semantics follow go-control-plane's simple cache: on a stream's first
//! request for a type, or when the subscribed names change, or when the
//! type's resources change, the server sends the type's current version;
//! RDS / EDS responses carry only the names the request asked for.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service as svc;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::Resource;
pub use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
pub use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::protobuf::Any;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::codegen::{http, BoxFuture, Service};

pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

#[derive(Clone, Default)]
struct TypeState {
    version: String,
    /// Resource name → bytes.
    resources: BTreeMap<String, Vec<u8>>,
    withheld: bool,
}

#[derive(Default)]
struct Shared {
    types: HashMap<String, TypeState>,
    requests: Vec<DiscoveryRequest>,
    delta_requests: Vec<DeltaDiscoveryRequest>,
    streams_opened: usize,
    /// Streams opened per gRPC service (`AggregatedDiscoveryService`,
    /// `ListenerDiscoveryService`, ...).
    streams_by_service: HashMap<&'static str, usize>,
}

type SharedRef = Arc<Mutex<Shared>>;

/// The running server.  Dropping it stops it.
pub struct XdsServer {
    addr: SocketAddr,
    shared: SharedRef,
    /// Bumped on every change; stream tasks watch it.
    changes: watch::Sender<u64>,
    /// Bumped to make every stream end with UNAVAILABLE.
    drops: watch::Sender<u64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Kept for `restart`.
    tls: Option<tonic::transport::ServerTlsConfig>,
}

#[derive(Clone)]
struct Ads {
    shared: SharedRef,
    changes: watch::Receiver<u64>,
    drops: watch::Receiver<u64>,
}

type ResponseStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<DiscoveryResponse, tonic::Status>> + Send>>;
type DeltaStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<DeltaDiscoveryResponse, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream = ResponseStream;
    type DeltaAggregatedResourcesStream = DeltaStream;

    async fn stream_aggregated_resources(
        &self,
        request: tonic::Request<tonic::Streaming<DiscoveryRequest>>,
    ) -> Result<tonic::Response<ResponseStream>, tonic::Status> {
        Ok(self.sotw("AggregatedDiscoveryService", request.into_inner()))
    }

    async fn delta_aggregated_resources(
        &self,
        request: tonic::Request<tonic::Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<tonic::Response<DeltaStream>, tonic::Status> {
        Ok(self.delta("AggregatedDiscoveryService", request.into_inner()))
    }
}

impl Ads {
    /// A state-of-the-world stream (ADS or one of the per-type services).
    fn sotw(
        &self,
        service: &'static str,
        mut inbound: tonic::Streaming<DiscoveryRequest>,
    ) -> tonic::Response<ResponseStream> {
        let (tx, rx) = mpsc::channel::<Result<DiscoveryResponse, tonic::Status>>(64);
        let shared = self.shared.clone();
        let mut changes = self.changes.clone();
        let mut drops = self.drops.clone();
        drops.mark_unchanged();
        {
            let mut s = shared.lock().unwrap();
            s.streams_opened += 1;
            *s.streams_by_service.entry(service).or_default() += 1;
        }
        tokio::spawn(async move {
            // Per type: the names subscribed and the version last sent.
            let mut subscribed: HashMap<String, Vec<String>> = HashMap::new();
            let mut sent: HashMap<String, String> = HashMap::new();
            let mut nonce = 0u64;
            loop {
                tokio::select! {
                    msg = inbound.next() => {
                        let Some(Ok(req)) = msg else { return };
                        let url = req.type_url.clone();
                        let names_changed = subscribed.get(&url) != Some(&req.resource_names);
                        shared.lock().unwrap().requests.push(req.clone());
                        if names_changed || req.response_nonce.is_empty() {
                            subscribed.insert(url.clone(), req.resource_names.clone());
                            sent.remove(&url);
                        }
                    }
                    r = changes.changed() => { if r.is_err() { return } }
                    _ = drops.changed() => {
                        let _ = tx.send(Err(tonic::Status::unavailable("stream dropped by the test control plane"))).await;
                        return;
                    }
                }
                // Send whatever a subscribed type has that this stream has not seen.
                let mut out = Vec::new();
                {
                    let s = shared.lock().unwrap();
                    for (url, names) in &subscribed {
                        let Some(t) = s.types.get(url) else { continue };
                        if t.withheld || sent.get(url) == Some(&t.version) {
                            continue;
                        }
                        let wildcard = url == LISTENER || url == CLUSTER || names.is_empty();
                        let resources = t
                            .resources
                            .iter()
                            .filter(|(n, _)| wildcard || names.contains(n))
                            .map(|(_, b)| Any { type_url: url.clone(), value: b.clone() })
                            .collect();
                        nonce += 1;
                        sent.insert(url.clone(), t.version.clone());
                        out.push(DiscoveryResponse {
                            version_info: t.version.clone(),
                            resources,
                            type_url: url.clone(),
                            nonce: nonce.to_string(),
                            ..Default::default()
                        });
                    }
                }
                // CDS before EDS before LDS before RDS, as management servers order pushes.
                out.sort_by_key(|r| [CLUSTER, ENDPOINT, LISTENER, ROUTE].iter().position(|u| *u == r.type_url));
                for r in out {
                    if tx.send(Ok(r)).await.is_err() {
                        return;
                    }
                }
            }
        });
        tonic::Response::new(Box::pin(ReceiverStream::new(rx)))
    }

    /// Incremental: per type, what the client holds (name → version, from
    /// `initial_resource_versions` and what was sent); a change sends the
    /// resources whose version differs and `removed_resources` for what the
    /// client holds but the server no longer has.  A resource's version is
    /// the FNV-1a hash of its bytes.
    fn delta(
        &self,
        service: &'static str,
        mut inbound: tonic::Streaming<DeltaDiscoveryRequest>,
    ) -> tonic::Response<DeltaStream> {
        let (tx, rx) = mpsc::channel::<Result<DeltaDiscoveryResponse, tonic::Status>>(64);
        let shared = self.shared.clone();
        let mut changes = self.changes.clone();
        let mut drops = self.drops.clone();
        drops.mark_unchanged();
        {
            let mut s = shared.lock().unwrap();
            s.streams_opened += 1;
            *s.streams_by_service.entry(service).or_default() += 1;
        }
        tokio::spawn(async move {
            struct Sub {
                wildcard: bool,
                names: std::collections::BTreeSet<String>,
                known: HashMap<String, String>,
            }
            let mut subs: HashMap<String, Sub> = HashMap::new();
            let mut nonce = 0u64;
            loop {
                tokio::select! {
                    msg = inbound.next() => {
                        let Some(Ok(req)) = msg else { return };
                        shared.lock().unwrap().delta_requests.push(req.clone());
                        let sub = subs.entry(req.type_url.clone()).or_insert_with(|| Sub {
                            wildcard: req.resource_names_subscribe.is_empty() || req.resource_names_subscribe.iter().any(|n| n == "*"),
                            names: Default::default(),
                            known: req.initial_resource_versions.clone(),
                        });
                        for n in &req.resource_names_subscribe {
                            sub.names.insert(n.clone());
                        }
                        for n in &req.resource_names_unsubscribe {
                            sub.names.remove(n);
                            sub.known.remove(n);
                        }
                    }
                    r = changes.changed() => { if r.is_err() { return } }
                    _ = drops.changed() => {
                        let _ = tx.send(Err(tonic::Status::unavailable("stream dropped by the test control plane"))).await;
                        return;
                    }
                }
                let mut out = Vec::new();
                {
                    let s = shared.lock().unwrap();
                    for (url, sub) in subs.iter_mut() {
                        let Some(t) = s.types.get(url) else { continue };
                        if t.withheld {
                            continue;
                        }
                        let mut resources = Vec::new();
                        for (name, bytes) in &t.resources {
                            if !sub.wildcard && !sub.names.contains(name) {
                                continue;
                            }
                            let version = crate::fnv64_hex(bytes);
                            if sub.known.get(name) != Some(&version) {
                                sub.known.insert(name.clone(), version.clone());
                                resources.push(Resource {
                                    name: name.clone(),
                                    version,
                                    resource: Some(Any { type_url: url.clone(), value: bytes.clone() }),
                                    ..Default::default()
                                });
                            }
                        }
                        let removed: Vec<String> =
                            sub.known.keys().filter(|n| !t.resources.contains_key(*n)).cloned().collect();
                        for n in &removed {
                            sub.known.remove(n);
                        }
                        if resources.is_empty() && removed.is_empty() {
                            continue;
                        }
                        nonce += 1;
                        out.push(DeltaDiscoveryResponse {
                            system_version_info: t.version.clone(),
                            resources,
                            removed_resources: removed,
                            type_url: url.clone(),
                            nonce: nonce.to_string(),
                            ..Default::default()
                        });
                    }
                }
                out.sort_by_key(|r| [CLUSTER, ENDPOINT, LISTENER, ROUTE].iter().position(|u| *u == r.type_url));
                for r in out {
                    if tx.send(Ok(r)).await.is_err() {
                        return;
                    }
                }
            }
        });
        tonic::Response::new(Box::pin(ReceiverStream::new(rx)))
    }
}

/// The per-type services (`api_config_source` with GRPC / DELTA_GRPC): the
/// same streams as ADS, one type per stream.  The unary `Fetch*` methods
/// are not served (meshgate does not use them).
macro_rules! per_type_service {
    ($module:ident, $server:ident :: $trait:ident, $name:literal, $stream:ident, $stream_ty:ident, $delta:ident, $delta_ty:ident, $fetch:ident) => {
        #[tonic::async_trait]
        impl envoy_types::pb::envoy::service::$module::v3::$server::$trait for Ads {
            type $stream_ty = ResponseStream;
            type $delta_ty = DeltaStream;

            async fn $stream(
                &self,
                request: tonic::Request<tonic::Streaming<DiscoveryRequest>>,
            ) -> Result<tonic::Response<ResponseStream>, tonic::Status> {
                Ok(self.sotw($name, request.into_inner()))
            }

            async fn $delta(
                &self,
                request: tonic::Request<tonic::Streaming<DeltaDiscoveryRequest>>,
            ) -> Result<tonic::Response<DeltaStream>, tonic::Status> {
                Ok(self.delta($name, request.into_inner()))
            }

            async fn $fetch(
                &self,
                _request: tonic::Request<DiscoveryRequest>,
            ) -> Result<tonic::Response<DiscoveryResponse>, tonic::Status> {
                Err(tonic::Status::unimplemented("the test control plane serves streams only"))
            }
        }
    };
}

per_type_service!(
    listener,
    listener_discovery_service_server::ListenerDiscoveryService,
    "ListenerDiscoveryService",
    stream_listeners,
    StreamListenersStream,
    delta_listeners,
    DeltaListenersStream,
    fetch_listeners
);
per_type_service!(
    route,
    route_discovery_service_server::RouteDiscoveryService,
    "RouteDiscoveryService",
    stream_routes,
    StreamRoutesStream,
    delta_routes,
    DeltaRoutesStream,
    fetch_routes
);
per_type_service!(
    cluster,
    cluster_discovery_service_server::ClusterDiscoveryService,
    "ClusterDiscoveryService",
    stream_clusters,
    StreamClustersStream,
    delta_clusters,
    DeltaClustersStream,
    fetch_clusters
);
per_type_service!(
    endpoint,
    endpoint_discovery_service_server::EndpointDiscoveryService,
    "EndpointDiscoveryService",
    stream_endpoints,
    StreamEndpointsStream,
    delta_endpoints,
    DeltaEndpointsStream,
    fetch_endpoints
);

/// Routes each call to its service by path (tonic's multi-service router
/// needs its `router` feature, i.e. axum, which this test server avoids).
#[derive(Clone)]
struct Dispatch {
    ads: AggregatedDiscoveryServiceServer<Ads>,
    lds: svc::listener::v3::listener_discovery_service_server::ListenerDiscoveryServiceServer<Ads>,
    rds: svc::route::v3::route_discovery_service_server::RouteDiscoveryServiceServer<Ads>,
    cds: svc::cluster::v3::cluster_discovery_service_server::ClusterDiscoveryServiceServer<Ads>,
    eds: svc::endpoint::v3::endpoint_discovery_service_server::EndpointDiscoveryServiceServer<Ads>,
}

impl Dispatch {
    fn new(ads: Ads) -> Dispatch {
        Dispatch {
            lds: svc::listener::v3::listener_discovery_service_server::ListenerDiscoveryServiceServer::new(ads.clone()),
            rds: svc::route::v3::route_discovery_service_server::RouteDiscoveryServiceServer::new(ads.clone()),
            cds: svc::cluster::v3::cluster_discovery_service_server::ClusterDiscoveryServiceServer::new(ads.clone()),
            eds: svc::endpoint::v3::endpoint_discovery_service_server::EndpointDiscoveryServiceServer::new(ads.clone()),
            ads: AggregatedDiscoveryServiceServer::new(ads),
        }
    }
}

impl Service<http::Request<tonic::body::Body>> for Dispatch {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        // Every generated service is always ready.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let path = req.uri().path();
        if path.starts_with("/envoy.service.listener.v3.") {
            self.lds.call(req)
        } else if path.starts_with("/envoy.service.route.v3.") {
            self.rds.call(req)
        } else if path.starts_with("/envoy.service.cluster.v3.") {
            self.cds.call(req)
        } else if path.starts_with("/envoy.service.endpoint.v3.") {
            self.eds.call(req)
        } else {
            self.ads.call(req)
        }
    }
}

impl XdsServer {
    /// Starts on a free port of 127.0.0.1.
    pub fn start() -> XdsServer {
        Self::start_on("127.0.0.1:0".parse().unwrap(), Arc::new(Mutex::new(Shared::default())), None)
    }

    /// Starts on a free port of 127.0.0.1, serving gRPC over TLS (ALPN
    /// `h2`) with the PEM certificate chain and key; with `client_ca`, a
    /// client certificate signed by it is required (mTLS).
    pub fn start_tls(cert_pem: &[u8], key_pem: &[u8], client_ca: Option<&[u8]>) -> XdsServer {
        let mut tls =
            tonic::transport::ServerTlsConfig::new().identity(tonic::transport::Identity::from_pem(cert_pem, key_pem));
        if let Some(ca) = client_ca {
            tls = tls.client_ca_root(tonic::transport::Certificate::from_pem(ca));
        }
        Self::start_on("127.0.0.1:0".parse().unwrap(), Arc::new(Mutex::new(Shared::default())), Some(tls))
    }

    fn start_on(addr: SocketAddr, shared: SharedRef, tls: Option<tonic::transport::ServerTlsConfig>) -> XdsServer {
        let (changes, changes_rx) = watch::channel(0u64);
        let (drops, drops_rx) = watch::channel(0u64);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let ads = Ads { shared: shared.clone(), changes: changes_rx, drops: drops_rx };
        let tls_kept = tls.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                // Retry the bind briefly: a restart reuses the port just released.
                let deadline = Instant::now() + Duration::from_secs(10);
                let listener = loop {
                    match tokio::net::TcpListener::bind(addr).await {
                        Ok(l) => break l,
                        Err(e) if Instant::now() < deadline => {
                            let _ = e;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(e) => panic!("test control plane cannot bind {addr}: {e}"),
                    }
                };
                ready_tx.send(listener.local_addr().unwrap()).unwrap();
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                let mut builder = tonic::transport::Server::builder();
                if let Some(tls) = tls {
                    builder = builder.tls_config(tls).expect("test control plane TLS config");
                }
                let _ = builder
                    .serve_with_incoming_shutdown(Dispatch::new(ads), incoming, async {
                        let _ = stop_rx.await;
                    })
                    .await;
            });
        });
        let addr = ready_rx.recv_timeout(Duration::from_secs(15)).expect("test control plane started");
        XdsServer { addr, shared, changes, drops, stop: Some(stop_tx), thread: Some(thread), tls: tls_kept }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets a type's resources (name, encoded bytes) at `version` and pushes
    /// them to every subscribed stream.
    pub fn set(&self, type_url: &str, version: &str, resources: Vec<(String, Vec<u8>)>) {
        {
            let mut s = self.shared.lock().unwrap();
            let t = s.types.entry(type_url.to_string()).or_default();
            t.version = version.to_string();
            t.resources = resources.into_iter().collect();
        }
        self.changes.send_modify(|v| *v += 1);
    }

    /// Stops (or resumes) answering a type.
    pub fn withhold(&self, type_url: &str, withheld: bool) {
        self.shared.lock().unwrap().types.entry(type_url.to_string()).or_default().withheld = withheld;
        self.changes.send_modify(|v| *v += 1);
    }

    /// Ends every open stream with UNAVAILABLE.
    pub fn drop_streams(&self) {
        self.drops.send_modify(|v| *v += 1);
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<DiscoveryRequest> {
        self.shared.lock().unwrap().requests.clone()
    }

    /// Every delta (incremental) request received so far, in order.
    pub fn delta_requests(&self) -> Vec<DeltaDiscoveryRequest> {
        self.shared.lock().unwrap().delta_requests.clone()
    }

    pub fn streams_opened(&self) -> usize {
        self.shared.lock().unwrap().streams_opened
    }

    /// Streams opened on one service (`"AggregatedDiscoveryService"`,
    /// `"ListenerDiscoveryService"`, `"RouteDiscoveryService"`,
    /// `"ClusterDiscoveryService"`, `"EndpointDiscoveryService"`).
    pub fn streams_opened_on(&self, service: &str) -> usize {
        self.shared.lock().unwrap().streams_by_service.get(service).copied().unwrap_or(0)
    }

    /// Waits until a received request satisfies `pred`; returns it.
    pub fn wait_for_request(
        &self,
        timeout: Duration,
        pred: impl Fn(&DiscoveryRequest) -> bool,
    ) -> Option<DiscoveryRequest> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(r) = self.requests().into_iter().find(|r| pred(r)) {
                return Some(r);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server (streams dropped, port closed) and returns what
    /// `restart` needs to come back on the same port with the same state.
    pub fn stop(mut self) -> StoppedXdsServer {
        self.shutdown();
        StoppedXdsServer { addr: self.addr, shared: self.shared.clone(), tls: self.tls.take() }
    }

    fn shutdown(&mut self) {
        self.drop_streams();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for XdsServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A stopped server's port and resources.
pub struct StoppedXdsServer {
    addr: SocketAddr,
    shared: SharedRef,
    tls: Option<tonic::transport::ServerTlsConfig>,
}

impl StoppedXdsServer {
    /// Starts again on the same port, with the resources it had.
    pub fn restart(self) -> XdsServer {
        XdsServer::start_on(self.addr, self.shared, self.tls)
    }
}
