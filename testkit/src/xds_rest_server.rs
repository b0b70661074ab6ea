//! A REST-JSON xDS management server for end-to-end tests: answers
//! `POST /v3/discovery:{listeners,routes,clusters,endpoints}` as Envoy's
//! "xDS REST and gRPC protocol" document describes, on its own thread and
//! tokio runtime (hyper HTTP/1.1).
//!
//! Tests set resources per type as proto3 JSON (`Any` form, with `@type`),
//! so the JSON meshgate parses is written here by hand, independently of
//! meshgate's own codec; requests are read from their JSON with either
//! field-name style.  Semantics follow go-control-plane's REST handler: a
//! request whose `version_info` equals the type's current version gets
//! `304 Not Modified`; otherwise `200` with the current version and the
//! resources (all of them for LDS / CDS, the named ones for RDS / EDS).
//! The server can withhold a type (always 304), stop and restart on the
//! same port, and records every request (version, names, `error_detail`).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

pub use crate::xds_server::{CLUSTER, ENDPOINT, LISTENER, ROUTE};

/// One request as received.
#[derive(Debug, Clone)]
pub struct RestRequest {
    /// `/v3/discovery:listeners`, ...
    pub path: String,
    pub type_url: String,
    pub version_info: String,
    pub resource_names: Vec<String>,
    /// `error_detail.message` (a NACK), if any.
    pub error_detail: Option<String>,
    pub node_id: Option<String>,
    /// The `response_nonce` field, which REST requests must not carry.
    pub response_nonce: String,
    /// The status answered.
    pub answered: u16,
}

#[derive(Default, Clone)]
struct TypeState {
    version: String,
    resources: BTreeMap<String, Value>,
    withheld: bool,
}

#[derive(Default)]
struct Shared {
    types: HashMap<String, TypeState>,
    requests: Vec<RestRequest>,
}

type SharedRef = Arc<Mutex<Shared>>;

/// The running server.  Dropping it stops it.
pub struct XdsRestServer {
    addr: SocketAddr,
    shared: SharedRef,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Kept for `restart`.
    tls: Option<tokio_rustls::TlsAcceptor>,
}

fn type_of_path(path: &str) -> Option<&'static str> {
    match path {
        "/v3/discovery:listeners" => Some(LISTENER),
        "/v3/discovery:routes" => Some(ROUTE),
        "/v3/discovery:clusters" => Some(CLUSTER),
        "/v3/discovery:endpoints" => Some(ENDPOINT),
        _ => None,
    }
}

fn field<'a>(v: &'a Value, camel: &str, snake: &str) -> Option<&'a Value> {
    v.get(camel).or_else(|| v.get(snake))
}

fn respond(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, "application/json".parse().unwrap());
    r
}

async fn handle(shared: SharedRef, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let Some(type_url) = type_of_path(&path).filter(|_| req.method() == hyper::Method::POST) else {
        return respond(StatusCode::NOT_FOUND, String::new());
    };
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return respond(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return respond(StatusCode::BAD_REQUEST, format!("not JSON: {e}")),
    };
    let text = |camel: &str, snake: &str| field(&v, camel, snake).and_then(Value::as_str).unwrap_or("").to_string();
    let mut record = RestRequest {
        path: path.clone(),
        type_url: text("typeUrl", "type_url"),
        version_info: text("versionInfo", "version_info"),
        resource_names: field(&v, "resourceNames", "resource_names")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default(),
        error_detail: field(&v, "errorDetail", "error_detail")
            .and_then(|e| e.get("message"))
            .and_then(Value::as_str)
            .map(str::to_string),
        node_id: v.get("node").and_then(|n| n.get("id")).and_then(Value::as_str).map(str::to_string),
        response_nonce: text("responseNonce", "response_nonce"),
        answered: 0,
    };
    let mut s = shared.lock().unwrap();
    let t = s.types.get(type_url).cloned().unwrap_or_default();
    let response = if record.type_url != type_url {
        respond(StatusCode::BAD_REQUEST, format!("type_url {:?} on {path}", record.type_url))
    } else if t.withheld || t.version.is_empty() || t.version == record.version_info {
        respond(StatusCode::NOT_MODIFIED, String::new())
    } else {
        let wildcard = type_url == LISTENER || type_url == CLUSTER;
        let resources: Vec<Value> = t
            .resources
            .iter()
            .filter(|(n, _)| wildcard || record.resource_names.contains(n))
            .map(|(_, r)| r.clone())
            .collect();
        let body = json!({"versionInfo": t.version, "typeUrl": type_url, "resources": resources});
        respond(StatusCode::OK, body.to_string())
    };
    record.answered = response.status().as_u16();
    s.requests.push(record);
    response
}

impl XdsRestServer {
    /// Starts on a free port of 127.0.0.1.
    pub fn start() -> XdsRestServer {
        Self::start_on("127.0.0.1:0".parse().unwrap(), Arc::new(Mutex::new(Shared::default())), None)
    }

    /// Starts on a free port of 127.0.0.1, serving HTTPS (TLS 1.2 / 1.3,
    /// ALPN `http/1.1`) with the PEM certificate chain and key.
    pub fn start_tls(cert_pem: &[u8], key_pem: &[u8]) -> XdsRestServer {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert_pem).collect::<Result<_, _>>().expect("certificate PEM");
        let key = PrivateKeyDer::from_pem_slice(key_pem).expect("key PEM");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
            .expect("test REST control plane TLS config");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        Self::start_on("127.0.0.1:0".parse().unwrap(), Arc::new(Mutex::new(Shared::default())), Some(acceptor))
    }

    fn start_on(addr: SocketAddr, shared: SharedRef, tls: Option<tokio_rustls::TlsAcceptor>) -> XdsRestServer {
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let serving = shared.clone();
        let tls_kept = tls.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                // Retry the bind briefly: a restart reuses the port just released.
                let deadline = Instant::now() + Duration::from_secs(10);
                let listener = loop {
                    match tokio::net::TcpListener::bind(addr).await {
                        Ok(l) => break l,
                        Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
                        Err(e) => panic!("test REST control plane cannot bind {addr}: {e}"),
                    }
                };
                ready_tx.send(listener.local_addr().unwrap()).unwrap();
                let mut connections = tokio::task::JoinSet::new();
                loop {
                    tokio::select! {
                        _ = &mut stop_rx => break,
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            let shared = serving.clone();
                            let tls = tls.clone();
                            connections.spawn(async move {
                                match tls {
                                    None => serve_connection(TokioIo::new(stream), shared).await,
                                    Some(tls) => {
                                        if let Ok(stream) = tls.accept(stream).await {
                                            serve_connection(TokioIo::new(stream), shared).await
                                        }
                                    }
                                }
                            });
                        }
                    }
                }
                // Stopping closes the port and every open connection.
                connections.abort_all();
            });
        });
        let addr = ready_rx.recv_timeout(Duration::from_secs(15)).expect("test REST control plane started");
        XdsRestServer { addr, shared, stop: Some(stop_tx), thread: Some(thread), tls: tls_kept }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets a type's resources (proto3 JSON with `@type`) at `version`.
    pub fn set(&self, type_url: &str, version: &str, resources: Vec<Value>) {
        let mut s = self.shared.lock().unwrap();
        let t = s.types.entry(type_url.to_string()).or_default();
        t.version = version.to_string();
        t.resources = resources
            .into_iter()
            .map(|r| {
                let name = r.get("name").or_else(|| r.get("cluster_name")).and_then(Value::as_str).unwrap_or("");
                (name.to_string(), r)
            })
            .collect();
    }

    /// Answers `304 Not Modified` for a type while withheld.
    pub fn withhold(&self, type_url: &str, withheld: bool) {
        self.shared.lock().unwrap().types.entry(type_url.to_string()).or_default().withheld = withheld;
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RestRequest> {
        self.shared.lock().unwrap().requests.clone()
    }

    /// Waits until a received request satisfies `pred`; returns it.
    pub fn wait_for_request(&self, timeout: Duration, pred: impl Fn(&RestRequest) -> bool) -> Option<RestRequest> {
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

    /// Stops the server (port closed) and returns what `restart` needs to
    /// come back on the same port with the same resources.
    pub fn stop(mut self) -> StoppedXdsRestServer {
        self.shutdown();
        StoppedXdsRestServer { addr: self.addr, shared: self.shared.clone(), tls: self.tls.take() }
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for XdsRestServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// One HTTP/1.1 connection to the test server.
async fn serve_connection<Io>(io: Io, shared: SharedRef)
where
    Io: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(shared, req).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
}

/// A stopped server's port and resources.
pub struct StoppedXdsRestServer {
    addr: SocketAddr,
    shared: SharedRef,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl StoppedXdsRestServer {
    /// Starts again on the same port, with the resources it had.
    pub fn restart(self) -> XdsRestServer {
        XdsRestServer::start_on(self.addr, self.shared, self.tls)
    }
}
