//! The admin HTTP server: Envoy's admin endpoints, paths and formats, on a
//! kernel socket and a thread of its own.
//!
//! # What it owns
//!
//! The admin listener, its accept thread and the short-lived threads that
//! serve one admin connection each; the mapping from Envoy's admin paths
//! (`/ready`, `/stats`, `/stats/prometheus`, `/clusters`, `/config_dump`,
//! `/server_info`, `/listeners`, `/healthcheck/fail|ok`, `/drain_listeners`,
//! `/quitquitquit`, `/help`) to reads of the stats store, the published config
//! snapshot and the server state.
//!
//! Admin is not the request path, so it is written the plain way: blocking
//! `std::net` I/O with read/write timeouts, `httparse` for the request head,
//! one response per connection (`connection: close`).  A slow or stuck client
//! ties up only its own thread, and the number of such threads is capped.
//!
//! # What it must not touch
//!
//! Shards and their connections.  It only reads stat slots (never writes a
//! shard's slot: resetting counters would break the single-writer rule, so
//! there is no `/reset_counters`), loads the config snapshot through its
//! `ArcSwap`, and flips `ServerState` flags that shards poll.  The config
//! dump's shape belongs to `control::bootstrap::config_dump_json`.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{json, Value};

use crate::server::{ServerState, ServerStateKind};
use crate::stats::render::{self, Selection, TypeFilter};
use crate::stats::{HostSnapshot, Scope, ServerStats, StatValue, StatsStore};

/// Everything the admin endpoints read or flip.
pub struct AdminContext {
    pub stats: Arc<StatsStore>,
    pub config: Arc<arc_swap::ArcSwap<control::model::Config>>,
    pub server: Arc<ServerState>,
    /// The process's argv, for `/server_info`'s `command_line_options`.
    pub command_line: Vec<String>,
    /// Number of shards (Envoy's `--concurrency`).
    pub concurrency: usize,
}

/// Admin connections served at once; past this a connection gets a 503 from
/// the accept thread and is closed, so a flood cannot spawn unbounded threads.
const MAX_ACTIVE_CONNECTIONS: usize = 16;
const READ_TIMEOUT: Duration = Duration::from_secs(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the accept loop checks `ServerState::admin_stop_requested`.
const STOP_POLL: Duration = Duration::from_millis(100);
const MAX_REQUEST_HEAD: usize = 64 * 1024;
const MAX_REQUEST_BODY: usize = 1024 * 1024;
/// Envoy's stats flush interval: histogram "interval" quantiles cover the
/// last closed period of at least this long.
const INTERVAL_PERIOD: Duration = Duration::from_secs(5);

const TEXT: &str = "text/plain; charset=UTF-8";
const JSON: &str = "application/json";

/// `(path, help, mutates_state)`, sorted by path as Envoy prints `/help`.
const HANDLERS: &[(&str, &str, bool)] = &[
    ("/", "Admin home page", false),
    ("/clusters", "upstream cluster status", false),
    ("/config_dump", "dump current Envoy configs (experimental)", false),
    ("/drain_listeners", "drain listeners", true),
    ("/healthcheck/fail", "cause the server to fail health checks", true),
    ("/healthcheck/ok", "cause the server to pass health checks", true),
    ("/help", "print out list of admin commands", false),
    ("/listeners", "print listener info", false),
    ("/quitquitquit", "exit the server", true),
    ("/ready", "print server state, return 200 if LIVE, otherwise return 503", false),
    ("/server_info", "print server version/status information", false),
    ("/stats", "print server stats", false),
    ("/stats/prometheus", "print server stats in prometheus format", false),
];

struct Admin {
    ctx: AdminContext,
    server_stats: ServerStats,
    active: AtomicUsize,
}

/// Binds `addr` (port 0 → a free port) and serves the admin API on a thread
/// named `admin`.  Returns the bound address and the thread's handle; the
/// thread ends after `ServerState::stop_admin` (within 100 ms), so admin keeps
/// answering `/ready` with `DRAINING` throughout a drain.
pub fn spawn_admin(addr: SocketAddr, ctx: AdminContext) -> io::Result<(SocketAddr, JoinHandle<()>)> {
    // std sets SO_REUSEADDR on Unix, so a restart does not wait out TIME_WAIT.
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let mut listener = mio::net::TcpListener::from_std(listener);
    let poll = mio::Poll::new()?;
    poll.registry().register(&mut listener, mio::Token(0), mio::Interest::READABLE)?;
    let admin = Arc::new(Admin { server_stats: ServerStats::new(&ctx.stats), ctx, active: AtomicUsize::new(0) });
    let handle =
        std::thread::Builder::new().name("admin".to_string()).spawn(move || accept_loop(poll, listener, admin))?;
    Ok((local, handle))
}

fn accept_loop(mut poll: mio::Poll, listener: mio::net::TcpListener, admin: Arc<Admin>) {
    let mut events = mio::Events::with_capacity(16);
    while !admin.ctx.server.admin_stop_requested() {
        if let Err(e) = poll.poll(&mut events, Some(STOP_POLL)) {
            if e.kind() != io::ErrorKind::Interrupted {
                tracing::error!("admin: poll failed, admin server stops: {e}");
                return;
            }
        }
        // Accept on every wake-up, not only on events: a connection left in
        // the backlog by an error below would get no new edge.
        loop {
            match listener.accept() {
                Ok((stream, peer)) => dispatch(TcpStream::from(stream), peer, &admin),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: back off until the next wake-up
                    // instead of spinning on the same error.
                    tracing::warn!("admin: accept failed: {e}");
                    break;
                }
            }
        }
    }
}

fn dispatch(stream: TcpStream, peer: SocketAddr, admin: &Arc<Admin>) {
    // Accepted sockets inherit O_NONBLOCK from mio's accept4; this code wants
    // blocking I/O with timeouts.
    if stream.set_nonblocking(false).is_err() {
        return;
    }
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let _ = stream.set_nodelay(true);
    if admin.active.fetch_add(1, Ordering::AcqRel) >= MAX_ACTIVE_CONNECTIONS {
        admin.active.fetch_sub(1, Ordering::AcqRel);
        let mut stream = stream;
        let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
        let resp = Response::text(503, "too many admin connections\n");
        let _ = stream.write_all(&resp.serialize(false));
        return;
    }
    let admin2 = admin.clone();
    let spawned = std::thread::Builder::new().name("admin-conn".to_string()).spawn(move || {
        serve_connection(stream, &admin2);
        admin2.active.fetch_sub(1, Ordering::AcqRel);
    });
    if let Err(e) = spawned {
        admin.active.fetch_sub(1, Ordering::AcqRel);
        tracing::warn!("admin: cannot spawn a thread for {peer}: {e}");
    }
}

// ---------------------------------------------------------------------------
// HTTP/1 plumbing
// ---------------------------------------------------------------------------

struct Request {
    method: String,
    path: String,
    query: Vec<(String, String)>,
}

impl Request {
    fn param(&self, key: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
    fn has(&self, key: &str) -> bool {
        self.query.iter().any(|(k, _)| k == key)
    }
}

struct Response {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    /// `/quitquitquit`: request shutdown once the response is on the wire,
    /// so the client sees `OK` before the process starts going away.
    then_shutdown: bool,
}

impl Response {
    fn text(status: u16, body: impl Into<String>) -> Response {
        Response { status, content_type: TEXT, body: body.into().into_bytes(), then_shutdown: false }
    }

    fn json(status: u16, value: &Value) -> Response {
        let mut body = serde_json::to_string_pretty(value).unwrap_or_else(|_| "{}".to_string());
        body.push('\n');
        Response { status, content_type: JSON, body: body.into_bytes(), then_shutdown: false }
    }

    fn serialize(&self, head_only: bool) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: {}\r\ncontent-length: {}\r\n\
             cache-control: no-cache, max-age=0\r\nx-content-type-options: nosniff\r\n\
             server: meshgate\r\nconnection: close\r\n\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        if !head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

impl Admin {
    /// Appends one line per admin request to the bootstrap's
    /// `admin.access_log_path` (Envoy's default format, abridged to the
    /// fields an admin request has).  Admin traffic is rare, so the file is
    /// opened per request, which also follows log rotation.
    fn log_access(&self, req: &Request, resp: &Response, stream: &TcpStream) {
        let cfg = self.ctx.config.load();
        let Some(path) = cfg.admin.as_ref().and_then(|a| a.access_log_path.as_deref()) else { return };
        let peer = stream.peer_addr().map(|p| p.to_string()).unwrap_or_else(|_| "-".to_string());
        let line = format!(
            "[{}] \"{} {} HTTP/1.1\" {} {} \"{}\"\n",
            control::bootstrap::now_rfc3339(),
            req.method,
            req.path,
            resp.status,
            resp.body.len(),
            peer
        );
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = written {
            tracing::warn!(path, error = %e, "admin: cannot write the access log");
        }
    }
}

fn serve_connection(mut stream: TcpStream, admin: &Admin) {
    let (req, head_only) = match read_request(&mut stream) {
        Ok(Some(r)) => {
            let head = r.method == "HEAD";
            (r, head)
        }
        Ok(None) => return,
        Err(resp) => {
            let _ = stream.write_all(&resp.serialize(false));
            finish(stream);
            return;
        }
    };
    let resp = admin.handle(&req);
    // Logged before answering, so a client that saw the response finds its line.
    admin.log_access(&req, &resp, &stream);
    let written = stream.write_all(&resp.serialize(head_only)).and_then(|_| stream.flush());
    if resp.then_shutdown {
        // Even if the client went away mid-response: it asked, and POSTed.
        admin.ctx.server.request_shutdown();
    }
    if written.is_ok() {
        finish(stream);
    }
}

/// Closes the connection without losing the response: half-close, then read
/// whatever the client still sends (a body we did not read, a pipelined
/// request) for a moment, because closing with unread bytes makes the kernel
/// send RST, which can destroy the response in the client's receive buffer.
fn finish(mut stream: TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut sink = [0u8; 4096];
    let mut total = 0usize;
    while total < 256 * 1024 {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
    }
}

/// Reads one request head (and discards a `content-length` body, which no
/// admin endpoint uses).  `Ok(None)`: the client left before sending one.
fn read_request(stream: &mut TcpStream) -> Result<Option<Request>, Response> {
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) if buf.is_empty() => return Ok(None),
            Ok(0) => return Err(Response::text(400, "incomplete request\n")),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return if buf.is_empty() { Ok(None) } else { Err(Response::text(408, "request timeout\n")) };
            }
            Err(_) => return Ok(None),
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(&buf) {
            Ok(httparse::Status::Complete(head_len)) => {
                let method = parsed.method.unwrap_or("GET").to_string();
                let target = parsed.path.unwrap_or("/").to_string();
                let mut content_length = 0usize;
                for h in parsed.headers.iter() {
                    if h.name.eq_ignore_ascii_case("content-length") {
                        content_length = std::str::from_utf8(h.value)
                            .ok()
                            .and_then(|v| v.trim().parse().ok())
                            .ok_or_else(|| Response::text(400, "invalid content-length\n"))?;
                    }
                }
                if content_length > MAX_REQUEST_BODY {
                    return Err(Response::text(413, "request body too large\n"));
                }
                let mut remaining = content_length.saturating_sub(buf.len() - head_len);
                while remaining > 0 {
                    match stream.read(&mut chunk[..remaining.min(4096)]) {
                        Ok(0) => break,
                        Ok(n) => remaining -= n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => break,
                    }
                }
                let (path, query) = split_target(&target);
                return Ok(Some(Request { method, path, query }));
            }
            Ok(httparse::Status::Partial) => {
                if buf.len() > MAX_REQUEST_HEAD {
                    return Err(Response::text(431, "request head too large\n"));
                }
            }
            Err(httparse::Error::TooManyHeaders) => return Err(Response::text(431, "too many headers\n")),
            Err(e) => return Err(Response::text(400, format!("malformed request: {e}\n"))),
        }
    }
}

/// `/stats?filter=a%2Bb&usedonly` → (`/stats`, [(filter, a+b), (usedonly, "")]).
/// `+` stays `+` (Envoy does not form-decode; `+` is common in regexes).
fn split_target(target: &str) -> (String, Vec<(String, String)>) {
    let target = target.split('#').next().unwrap_or("");
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, q),
        None => (target, ""),
    };
    let params = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect();
    (path.to_string(), params)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(v) = hex {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------
// Endpoints
// ---------------------------------------------------------------------------

impl Admin {
    fn handle(&self, req: &Request) -> Response {
        let Some(&(path, _, mutates)) = HANDLERS.iter().find(|(p, _, _)| *p == req.path) else {
            // Envoy: "invalid path. " followed by the help text.
            return Response::text(404, format!("invalid path. {}", help_text()));
        };
        if mutates && req.method != "POST" {
            tracing::warn!("admin path \"{path}\" mutates state, method={} rather than POST", req.method);
            return Response::text(405, format!("Method {} not allowed, POST required.", req.method));
        }
        match path {
            "/" | "/help" => Response::text(200, help_text()),
            "/ready" => self.ready(),
            "/stats" => self.stats(req),
            "/stats/prometheus" => self.stats_with_format(req, "prometheus"),
            "/clusters" => self.clusters(req),
            "/config_dump" => self.config_dump(),
            "/listeners" => self.listeners(req),
            "/server_info" => Response::json(200, &self.server_info()),
            "/healthcheck/fail" => {
                self.ctx.server.set_healthcheck_failed(true);
                Response::text(200, "OK\n")
            }
            "/healthcheck/ok" => {
                self.ctx.server.set_healthcheck_failed(false);
                Response::text(200, "OK\n")
            }
            "/drain_listeners" => {
                self.ctx.server.start_draining();
                Response::text(200, "OK\n")
            }
            "/quitquitquit" => {
                let mut r = Response::text(200, "OK\n");
                r.then_shutdown = true;
                r
            }
            _ => Response::text(500, "unrouted admin handler\n"),
        }
    }

    fn ready(&self) -> Response {
        match self.ctx.server.state() {
            ServerStateKind::Live => Response::text(200, "LIVE\n"),
            s => Response::text(503, format!("{}\n", s.as_str())),
        }
    }

    fn stats(&self, req: &Request) -> Response {
        let format = req.param("format").unwrap_or("text");
        self.stats_with_format(req, format)
    }

    fn stats_with_format(&self, req: &Request, format: &str) -> Response {
        if !matches!(format, "text" | "json" | "prometheus") {
            return Response::text(400, "usage: /stats?format=(json|prometheus|text)\n");
        }
        let mut sel = Selection { used_only: req.has("usedonly"), ..Selection::default() };
        if let Some(f) = req.param("filter") {
            match regex::Regex::new(f) {
                Ok(r) => sel.filter = Some(r),
                Err(e) => return Response::text(400, format!("Invalid regex: \"{f}\": {e}\n")),
            }
        }
        if let Some(t) = req.param("type") {
            match TypeFilter::parse(t) {
                Some(t) => sel.types = t,
                None => return Response::text(400, "usage: /stats?type=(All|Counters|Gauges|Histograms)\n"),
            }
        }
        self.refresh_server_stats();
        let store = &self.ctx.stats;
        store.flush_interval_if_due(INTERVAL_PERIOD);
        let mut all = store.snapshot();
        self.patch_total_connections(&mut all);
        let selected = sel.apply(&all);
        match format {
            "json" => Response::json(200, &render::json(&selected, &store.intervals())),
            "prometheus" => Response::text(200, render::prometheus(&selected)),
            _ => Response::text(200, render::text(&selected, &store.intervals())),
        }
    }

    /// `server.*` gauges describe the admin's own view of the process, so
    /// they are brought up to date right before each scrape instead of by a
    /// timer.
    fn refresh_server_stats(&self) {
        let s = &self.server_stats;
        let state = self.ctx.server.state();
        s.live.set(i64::from(state == ServerStateKind::Live));
        s.state.set(state.gauge_value());
        s.uptime.set(self.ctx.server.uptime().as_secs() as i64);
        s.concurrency.set(self.ctx.concurrency as i64);
        s.hot_restart_epoch.set(0);
        s.version.set(0);
    }

    /// `server.total_connections` is the sum of the listeners' active
    /// connection gauges in the same snapshot.
    fn patch_total_connections(&self, all: &mut [crate::stats::StatSnapshot]) {
        let total: i64 = all
            .iter()
            .filter(|s| matches!(s.scope, Scope::Listener(_)) && s.leaf == "downstream_cx_active")
            .map(|s| match s.value {
                StatValue::Gauge { value, .. } => value,
                _ => 0,
            })
            .sum();
        self.server_stats.total_connections.set(total);
        if let Some(s) = all.iter_mut().find(|s| s.name == "server.total_connections") {
            s.value = StatValue::Gauge { value: total, used: true };
        }
    }

    fn config_dump(&self) -> Response {
        let cfg = self.ctx.config.load();
        Response::json(200, &control::bootstrap::config_dump_json(&cfg))
    }

    /// The hosts `/clusters` shows for a cluster: for STATIC clusters, the
    /// configured endpoints (with their stats if a shard registered them); for
    /// other discovery types, the addresses the resolver registered (unresolved names are
    /// not hosts yet, as in Envoy).
    fn cluster_hosts(&self, cluster: &control::model::Cluster) -> Vec<HostSnapshot> {
        use control::model::{DiscoveryType, EndpointAddress};
        let registered = self.ctx.stats.hosts(&cluster.name);
        if cluster.discovery != DiscoveryType::Static {
            return registered;
        }
        cluster
            .endpoints
            .iter()
            .filter_map(|e| match &e.address {
                EndpointAddress::Socket(a) => Some((a.to_string(), e)),
                EndpointAddress::Dns { .. } => None,
            })
            .map(|(addr, e)| {
                registered.iter().find(|h| h.address == addr).cloned().unwrap_or_else(|| HostSnapshot {
                    address: addr.clone(),
                    hostname: String::new(),
                    weight: e.weight,
                    priority: e.priority,
                    stats: zero_host_stats(),
                })
            })
            .collect()
    }

    fn clusters(&self, req: &Request) -> Response {
        let cfg = self.ctx.config.load();
        if req.param("format") == Some("json") {
            let statuses: Vec<Value> = cfg
                .clusters
                .values()
                .map(|c| {
                    let hosts: Vec<Value> = self.cluster_hosts(c).iter().map(host_json).collect();
                    json!({
                        "name": c.name,
                        "observability_name": c.name,
                        "added_via_api": false,
                        "circuit_breakers": {"thresholds": [
                            circuit_breaker_json(None),
                            circuit_breaker_json(Some("HIGH")),
                        ]},
                        "host_statuses": hosts,
                    })
                })
                .collect();
            return Response::json(200, &json!({ "cluster_statuses": statuses }));
        }
        let mut out = String::new();
        for c in cfg.clusters.values() {
            let n = &c.name;
            out.push_str(&format!("{n}::observability_name::{n}\n"));
            for (prio, t) in ["default_priority", "high_priority"].iter().zip(&c.circuit_breakers.thresholds) {
                let limits = [
                    ("max_connections", t.max_connections),
                    ("max_pending_requests", t.max_pending_requests),
                    ("max_requests", t.max_requests),
                    ("max_retries", t.max_retries),
                ];
                for (k, v) in limits {
                    out.push_str(&format!("{n}::{prio}::{k}::{v}\n"));
                }
            }
            out.push_str(&format!("{n}::added_via_api::false\n"));
            for h in self.cluster_hosts(c) {
                let a = &h.address;
                for (name, value, _) in &h.stats {
                    out.push_str(&format!("{n}::{a}::{name}::{value}\n"));
                }
                out.push_str(&format!("{n}::{a}::hostname::{}\n", h.hostname));
                let flags = crate::upstream::outlier::health_flags(n, a);
                out.push_str(&format!("{n}::{a}::health_flags::{flags}\n"));
                out.push_str(&format!("{n}::{a}::weight::{}\n", h.weight));
                out.push_str(&format!("{n}::{a}::region::\n"));
                out.push_str(&format!("{n}::{a}::zone::\n"));
                out.push_str(&format!("{n}::{a}::sub_zone::\n"));
                out.push_str(&format!("{n}::{a}::canary::false\n"));
                out.push_str(&format!("{n}::{a}::priority::{}\n", h.priority));
                out.push_str(&format!("{n}::{a}::success_rate::-1\n"));
                out.push_str(&format!("{n}::{a}::local_origin_success_rate::-1\n"));
            }
        }
        Response::text(200, out)
    }

    fn listeners(&self, req: &Request) -> Response {
        let cfg = self.ctx.config.load();
        if req.param("format") == Some("json") {
            let statuses: Vec<Value> = cfg
                .listeners
                .iter()
                .map(|l| (&l.name, l.address))
                .chain(cfg.tcp_listeners.iter().map(|l| (&l.name, l.address)))
                .map(|(name, address)| {
                    json!({
                        "name": name,
                        "local_address": {"socket_address": {
                            "address": address.ip().to_string(),
                            "port_value": address.port(),
                        }},
                    })
                })
                .collect();
            return Response::json(200, &json!({ "listener_statuses": statuses }));
        }
        let out: String = cfg
            .listeners
            .iter()
            .map(|l| format!("{}::{}\n", l.name, l.address))
            .chain(cfg.tcp_listeners.iter().map(|l| format!("{}::{}\n", l.name, l.address)))
            .collect();
        Response::text(200, out)
    }

    fn server_info(&self) -> Value {
        let cfg = self.ctx.config.load();
        let state = self.ctx.server.state();
        let uptime = format!("{}s", self.ctx.server.uptime().as_secs());
        json!({
            "version": version_string(),
            "state": state.as_str(),
            "hot_restart_version": "disabled",
            "command_line_options": command_line_options(&self.ctx.command_line, self.ctx.concurrency),
            "node": {
                "id": cfg.node.id,
                "cluster": cfg.node.cluster,
                "user_agent_name": "meshgate",
            },
            "uptime_current_epoch": uptime,
            "uptime_all_epochs": uptime,
        })
    }
}

/// Envoy's defaults for a cluster without `circuit_breakers`.
const CIRCUIT_BREAKER_DEFAULTS: [(&str, u32); 4] =
    [("max_connections", 1024), ("max_pending_requests", 1024), ("max_requests", 1024), ("max_retries", 3)];

fn circuit_breaker_json(priority: Option<&str>) -> Value {
    let mut m = serde_json::Map::new();
    if let Some(p) = priority {
        m.insert("priority".to_string(), json!(p));
    }
    for (k, v) in CIRCUIT_BREAKER_DEFAULTS {
        m.insert(k.to_string(), json!(v));
    }
    Value::Object(m)
}

fn zero_host_stats() -> Vec<(&'static str, u64, bool)> {
    ["cx_active", "cx_connect_fail", "cx_total", "rq_active", "rq_error", "rq_success", "rq_timeout", "rq_total"]
        .into_iter()
        .map(|n| (n, 0, n.ends_with("_active")))
        .collect()
}

/// One `host_statuses` entry in Envoy's `ClusterStatus` JSON: counters first,
/// then gauges tagged `"type": "GAUGE"`, uint64 values as strings (proto3
/// JSON).
fn host_json(h: &HostSnapshot) -> Value {
    let (ip, port) = match h.address.parse::<SocketAddr>() {
        Ok(a) => (a.ip().to_string(), u32::from(a.port())),
        Err(_) => match h.address.rsplit_once(':') {
            Some((ip, port)) => (ip.to_string(), port.parse().unwrap_or(0)),
            None => (h.address.clone(), 0),
        },
    };
    let mut stats: Vec<Value> = h
        .stats
        .iter()
        .filter(|(_, _, gauge)| !gauge)
        .map(|(n, v, _)| json!({"name": n, "value": v.to_string()}))
        .collect();
    stats.extend(
        h.stats
            .iter()
            .filter(|(_, _, gauge)| *gauge)
            .map(|(n, v, _)| json!({"type": "GAUGE", "name": n, "value": v.to_string()})),
    );
    let mut v = json!({
        "address": {"socket_address": {"address": ip, "port_value": port}},
        "stats": stats,
        "health_status": {"eds_health_status": "HEALTHY"},
        "weight": h.weight,
        "priority": h.priority,
        "locality": {},
    });
    if !h.hostname.is_empty() {
        v["hostname"] = json!(h.hostname);
    }
    v
}

/// Envoy's `<sha>/<version>/<Clean|Modified>/<RELEASE|DEBUG>/<TLS library>`
/// shape, so tools that split on `/` find the version in the second field.
fn version_string() -> String {
    let build = if cfg!(debug_assertions) { "DEBUG" } else { "RELEASE" };
    format!("meshgate/{}/Clean/{build}/rustls", env!("CARGO_PKG_VERSION"))
}

/// `command_line_options` with Envoy's field names: the flags meshgate shares
/// with Envoy are read from argv (`--flag value` and `--flag=value`), the rest
/// carry Envoy's defaults.
fn command_line_options(argv: &[String], concurrency: usize) -> Value {
    let mut flags: BTreeMap<&str, String> = BTreeMap::new();
    let mut i = 0;
    while i < argv.len() {
        let arg = argv[i].as_str();
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with('-') => (n, Some(v.to_string())),
            _ => (arg, None),
        };
        let key = match name {
            "-c" | "--config-path" => Some("config_path"),
            "--config-yaml" => Some("config_yaml"),
            "-l" | "--log-level" => Some("log_level"),
            "--component-log-level" => Some("component_log_level"),
            "--log-path" => Some("log_path"),
            "--service-cluster" => Some("service_cluster"),
            "--service-node" => Some("service_node"),
            "--service-zone" => Some("service_zone"),
            "--drain-time-s" => Some("drain_time"),
            "--parent-shutdown-time-s" => Some("parent_shutdown_time"),
            "--drain-strategy" => Some("drain_strategy"),
            "--admin-address-path" => Some("admin_address_path"),
            "--base-id" => Some("base_id"),
            _ => None,
        };
        if let Some(key) = key {
            let value = match inline {
                Some(v) => Some(v),
                None if i + 1 < argv.len() => {
                    i += 1;
                    Some(argv[i].clone())
                }
                None => None,
            };
            if let Some(v) = value {
                flags.insert(key, v);
            }
        }
        i += 1;
    }
    let get = |k: &str, default: &str| flags.get(k).cloned().unwrap_or_else(|| default.to_string());
    let seconds = |k: &str, default: &str| format!("{}s", get(k, default));
    json!({
        "base_id": get("base_id", "0"),
        "use_dynamic_base_id": false,
        "base_id_path": "",
        "concurrency": concurrency,
        "config_path": get("config_path", ""),
        "config_yaml": get("config_yaml", ""),
        "allow_unknown_static_fields": false,
        "reject_unknown_dynamic_fields": false,
        "ignore_unknown_dynamic_fields": false,
        "admin_address_path": get("admin_address_path", ""),
        "local_address_ip_version": "v4",
        "log_level": get("log_level", "info"),
        "component_log_level": get("component_log_level", ""),
        "log_path": get("log_path", ""),
        "service_cluster": get("service_cluster", ""),
        "service_node": get("service_node", ""),
        "service_zone": get("service_zone", ""),
        "drain_strategy": get("drain_strategy", "Gradual"),
        "mode": "Serve",
        "disable_hot_restart": true,
        "enable_mutex_tracing": false,
        "restart_epoch": 0,
        "cpuset_threads": false,
        "disabled_extensions": [],
        "file_flush_interval": "10s",
        "drain_time": seconds("drain_time", "600"),
        "parent_shutdown_time": seconds("parent_shutdown_time", "900"),
    })
}

/// Envoy's `/help` text: `admin commands are:` then `  <path>: <help>` lines.
fn help_text() -> String {
    let mut out = String::from("admin commands are:\n");
    for (path, help, _) in HANDLERS {
        out.push_str(&format!("  {path}: {help}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_splitting_and_decoding() {
        let (p, q) = split_target("/stats?filter=a%2Bb%5C.c+d&usedonly&format=json");
        assert_eq!(p, "/stats");
        assert_eq!(
            q,
            vec![
                ("filter".to_string(), "a+b\\.c+d".to_string()),
                ("usedonly".to_string(), String::new()),
                ("format".to_string(), "json".to_string()),
            ]
        );
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%41"), "A");
        assert_eq!(percent_decode("%zz1"), "%zz1");
    }

    #[test]
    fn help_is_sorted_like_envoy() {
        let paths: Vec<&str> = HANDLERS.iter().map(|h| h.0).collect();
        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(paths, sorted);
        assert!(help_text().starts_with("admin commands are:\n  /: Admin home page\n"));
    }

    #[test]
    fn command_line_flags_are_read() {
        let argv: Vec<String> =
            ["meshgate", "-c", "/etc/m.yaml", "--log-level=debug", "--drain-time-s", "30"].map(String::from).to_vec();
        let v = command_line_options(&argv, 4);
        assert_eq!(v["config_path"], "/etc/m.yaml");
        assert_eq!(v["log_level"], "debug");
        assert_eq!(v["drain_time"], "30s");
        assert_eq!(v["concurrency"], 4);
        assert_eq!(v["parent_shutdown_time"], "900s");
    }
}
