//! The HTTP/1.1 connection manager: one task per downstream connection that
//! reads requests, routes them and proxies them to upstream pools.
//!
//! It owns the request phases and their error mapping; it must not know
//! which transport backend carries its bytes, how config is loaded, or how
//! hosts are discovered.  Parsing and framing are the sans-IO `http1` codec's;
//! matching is the `router`'s; connections come from `upstream`.
//!
//! Phases of one request (Envoy's names in brackets):
//!
//! ```text
//!  wait head ──(idle_timeout / request_headers_timeout → 408)──┐
//!    │ parse (codec error → 400/414/431/501/505, close)        │
//!  route ──(no match → 404; direct_response)                   │
//!    │                                                         │
//!  pick host ── checkout/connect ──(fail → 503)                │
//!    │                                                         │
//!  send head ─┬─ pump request body  ──────────┐                │
//!             └─ read response head, stream body back          │
//!                (route timeout from end of request → 504;     │
//!                 bad response → 502 / cut once bytes went out)│
//!  keep-alive? ── loop ◄───────────────────────────────────────┘
//! ```
//! Request and response bodies stream through fixed-size buffers with
//! backpressure: nothing ever holds a whole body.  Both pumps run in the same
//! task, polled together, so an upstream that answers before reading the
//! whole request body cannot deadlock the exchange.

mod attempts;
mod buf;
mod mirror;
mod park;
pub mod upgrade;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use control::model::{
    ClusterSpecifier, ForwardAction, HostRewrite, PathMatch, Redirect, RouteAction, ServerHeaderTransformation,
};

pub(crate) use buf::trim_pools;
use buf::{ConnState, ScratchBuf};
pub use buf::{PooledResponseHead, RecvBuf};

use crate::filters::{fault, local_ratelimit, HttpGovernance};
use crate::http1::{
    self, encode_chunk_header, encode_last_chunk, encode_request_head, encode_response_head, parse_request_head,
    parse_response_head, request_body_kind, response_body_kind_for, strip_hop_by_hop, BodyDecoder, BodyKind, Decoded,
    H1Error, KnownSet, Method, RequestHead, ResponseHead, Version, WellKnown,
};
use crate::router::{action as route_action, mutate, Matched};
use crate::runtime::{now, sleep_until, timeout, Sleep};
use crate::shard::{HttpListener, ShardCtx};
use crate::tls::Conn;
use crate::upstream::retry::{self as upstream_retry, HeaderOverrides, RetryState};
use crate::upstream::{ClusterRuntime, ConnectFailure, UpstreamConn};

use attempts::{AttemptCtl, RetrySetup};

/// Fields that frame a message on the wire: the gateway sets them itself,
/// whatever a header mutation wrote.
const GATEWAY_FRAMING: KnownSet =
    KnownSet::of(&[WellKnown::TransferEncoding, WellKnown::Connection, WellKnown::ContentLength]);
const INITIAL_BUF: usize = 16 * 1024;
/// Largest upstream response head accepted (Envoy's 60 KiB default).
pub(crate) const UPSTREAM_HEAD_LIMIT: usize = 60 * 1024;
/// A response head is held back until it and the body bytes behind it reach
/// this many bytes, or the (fixed-length) body is complete — nginx's
/// `postpone_output`.  Upstreams commonly write a head and its body in two
/// system calls (nginx with `sendfile`), so relaying the head the moment it
/// arrives sends the client two segments and wakes it twice for one small
/// response.  1460 bytes is an Ethernet MSS and nginx's default: past it
/// the client gets full segments either way.
const POSTPONE_OUTPUT: usize = 1460;
/// A request body this small is read and discarded to keep the connection
/// after a local reply; anything larger (or unknown) closes it instead.
const DISCARD_BODY_LIMIT: u64 = 64 * 1024;

/// Serves one downstream connection until it closes.
pub async fn serve_connection(ctx: Rc<ShardCtx>, listener: Rc<HttpListener>, stream: Conn, peer: SocketAddr) {
    serve_connection_prefixed(ctx, listener, stream, peer, &[]).await
}

/// `serve_connection` for a connection whose first bytes (`prefix`) were
/// already read to choose its protocol (`http2::serve_http`).
pub async fn serve_connection_prefixed(
    ctx: Rc<ShardCtx>,
    listener: Rc<HttpListener>,
    stream: Conn,
    peer: SocketAddr,
    prefix: &[u8],
) {
    count_connection_opened(&listener, false);
    let parked = ParkedConn { stream, peer, opened: Instant::now(), rx_bytes: 0, tx_bytes: 0, idle_deadline: None };
    serve_boxed(ctx, listener, parked, true, prefix).await
}

/// `serve`'s future (~10 KB) built directly in its own allocation.  Moved by
/// value instead — through `Box::pin`, every enclosing future, `spawn` and
/// into the task — it was copied about six times: ~60 KB of memcpy per
/// resumed connection (half of a parked request's instructions under
/// callgrind, and an L1 cache's worth of memory touched).
fn serve_boxed<'a>(
    ctx: Rc<ShardCtx>,
    listener: Rc<HttpListener>,
    conn: ParkedConn,
    fresh: bool,
    prefix: &'a [u8],
) -> Pin<Box<impl Future<Output = ()> + 'a>> {
    Box::into_pin(Box::write(Box::new_uninit(), serve(ctx, listener, conn, fresh, prefix)))
}

/// Serves one HTTP/2 stream presented as a one-request HTTP/1.1 connection
/// (`http2::bridge`): `head` is the request head already translated, the
/// body (if any) follows through `stream`.  Connection-level work (stats,
/// network filters, parking) belongs to the HTTP/2 connection, not to this.
pub async fn serve_bridged(ctx: &ShardCtx, listener: &Rc<HttpListener>, stream: Conn, peer: SocketAddr, head: &[u8]) {
    let mut conn = Downstream::new(ctx, stream, peer, listener);
    conn.bridged = true;
    conn.buf.prefill(head);
    let _ = conn.run(listener).await;
    conn.recycle_state();
}

/// How long a keep-alive connection waits for its next request inside its
/// connection task before it is parked, while the shard has more than
/// [`PARK_FREE_CONNECTIONS`] unparked connections: the task (about 10 KB of
/// future state, the receive buffer, the encode buffer) ends and the socket
/// with its counters waits in the shard's parking lot (`park`) instead.
/// Busy connections (a request at least every 20 ms) never park, so parking
/// costs nothing per request under saturation.  The delay is short because
/// every connection still unparked holds its full state: a burst of new
/// connections that then go idle peaks at (arrival rate × delay) full
/// states.  Measured with 10,000 idle connections opened 200 at a time
/// (`bench/idle_conns.py`), with glibc's allocator: 0.71 KiB of RSS each at
/// 20 ms, 0.89 KiB at 100 ms, 0.69 KiB at 5 ms; 11.3 KiB before parking
/// existed.  docs/benchmarks.md has the later figures.
const PARK_IDLE_AFTER: Duration = Duration::from_millis(20);

/// Up to this many unparked connections per shard, an idle connection parks
/// only after [`PARK_IDLE_AFTER_FEW`].  Parking and resuming is not free: a
/// resumed connection rebuilds its state in cold memory, and the park timer
/// wakes the shard.  At 1,600 req/s over 40 connections (a request every
/// 25 ms on each) parking at 20 ms raised the proxy's CPU per request from
/// ~56 to ~76 µs (user and system time, `/proc`), to save 40 × ~26 KB.
/// Below this count the memory parking would save is bounded (~1.7 MB per
/// shard), so the shard keeps those connections whole.
const PARK_FREE_CONNECTIONS: usize = 64;

/// The park delay while a shard has at most [`PARK_FREE_CONNECTIONS`]
/// unparked connections.
const PARK_IDLE_AFTER_FEW: Duration = Duration::from_secs(1);

/// A downstream connection between tasks: everything that must survive
/// parking, and nothing else.
struct ParkedConn {
    stream: Conn,
    peer: SocketAddr,
    opened: Instant,
    rx_bytes: u64,
    tx_bytes: u64,
    /// When the idle timeout closes it, counted from when it went idle.
    idle_deadline: Option<Instant>,
}

/// Runs a connection (fresh, or resumed from parking) until it ends or parks.
async fn serve(ctx: Rc<ShardCtx>, listener: Rc<HttpListener>, conn: ParkedConn, fresh: bool, prefix: &[u8]) {
    let ParkedConn { stream, peer, opened, rx_bytes, tx_bytes, .. } = conn;
    let unparked = ctx.count_unparked();
    let mut conn = Downstream::new(&ctx, stream, peer, &listener);
    if !prefix.is_empty() {
        conn.buf.prefill(prefix);
    }
    conn.rx_bytes.set(rx_bytes);
    conn.tx_bytes.set(tx_bytes);
    // Network filters act once per connection: envoy.filters.network.local_ratelimit
    // on the new connection before any byte is read, then the network RBAC
    // filter on its first bytes.  A connection resumed from parking skips both.
    let end = if fresh && !listener.filters.admit_connection(now()) {
        ConnEnd::Local
    } else {
        let rbac_end = if fresh { conn.network_rbac(&listener).await } else { None };
        match rbac_end {
            Some(end) => end,
            None => {
                let run = pin!(conn.run(&listener));
                match ctx.until_hard_close(&listener.config.name, run).await {
                    Some(end) => end,
                    // Removed listener, still busy after --drain-time-s: closed
                    // with its request in flight.
                    None => {
                        listener.stats.downstream_cx_destroy_active_rq.inc();
                        listener.stats.downstream_cx_destroy_local_active_rq.inc();
                        tracing::debug!(listener = %listener.config.name, %peer, "drain time over: connection closed");
                        ConnEnd::Local
                    }
                }
            }
        }
    };
    conn.recycle_state();
    drop(unparked);
    if let ConnEnd::Park(idle_deadline) = end {
        let parked = ParkedConn {
            rx_bytes: conn.rx_bytes.get(),
            tx_bytes: conn.tx_bytes.get(),
            stream: conn.stream,
            peer,
            opened,
            idle_deadline,
        };
        park::park(&ctx, listener, parked);
        return;
    }
    finish_connection(&listener, end, opened, conn.rx_bytes.get(), conn.tx_bytes.get());
}

fn finish_connection(listener: &HttpListener, end: ConnEnd, opened: Instant, rx_bytes: u64, tx_bytes: u64) {
    let local = match end {
        ConnEnd::Local => true,
        ConnEnd::Remote => false,
        ConnEnd::Park(_) => unreachable!("a parked connection is not finished"),
    };
    count_connection_closed(listener, false, local, opened, rx_bytes, tx_bytes);
}

/// Counts a new downstream connection of an HTTP listener (HTTP/1 or HTTP/2).
pub(crate) fn count_connection_opened(listener: &HttpListener, http2: bool) {
    let stats = &listener.stats;
    stats.downstream_cx_total.inc();
    stats.downstream_cx_active.inc();
    if http2 {
        stats.downstream_cx_http2_total.inc();
        stats.downstream_cx_http2_active.inc();
    } else {
        stats.downstream_cx_http1_total.inc();
        stats.downstream_cx_http1_active.inc();
    }
    listener.listener_stats.downstream_cx_total.inc();
    listener.listener_stats.downstream_cx_active.inc();
}

/// Counts the end of a connection `count_connection_opened` counted;
/// `local`: the gateway closed it.
pub(crate) fn count_connection_closed(
    listener: &HttpListener,
    http2: bool,
    local: bool,
    opened: Instant,
    rx_bytes: u64,
    tx_bytes: u64,
) {
    let stats = &listener.stats;
    if local {
        stats.downstream_cx_destroy_local.inc();
    } else {
        stats.downstream_cx_destroy_remote.inc();
    }
    stats.downstream_cx_destroy.inc();
    stats.downstream_cx_rx_bytes_total.add(rx_bytes);
    stats.downstream_cx_tx_bytes_total.add(tx_bytes);
    stats.downstream_cx_active.dec();
    if http2 {
        stats.downstream_cx_http2_active.dec();
    } else {
        stats.downstream_cx_http1_active.dec();
    }
    stats.downstream_cx_length_ms.record(opened.elapsed());
    listener.listener_stats.downstream_cx_active.dec();
    listener.listener_stats.downstream_cx_destroy.inc();
    listener.listener_stats.downstream_cx_length_ms.record(opened.elapsed());
}

enum ConnEnd {
    Local,
    Remote,
    /// Idle long enough to give up its task (see `PARK_IDLE_AFTER`); carries
    /// the idle timeout's deadline.
    Park(Option<Instant>),
}

/// What the request phase decided about the downstream connection.
enum After {
    KeepAlive,
    Close,
}

struct Downstream<'a> {
    ctx: &'a ShardCtx,
    stream: Conn,
    peer: SocketAddr,
    buf: RecvBuf,
    head: RequestHead,
    /// Scratch for encoding heads; reused for every request.
    out: Vec<u8>,
    /// Scratch for route header mutations; reused for every request.
    mutations: mutate::Scratch,
    rx_bytes: Cell<u64>,
    tx_bytes: Cell<u64>,
    /// `tx_bytes` when the current request began: more than that means part
    /// of its response reached the client, which can then only be cut.
    tx_at_request: u64,
    /// `local_rate_limit_per_downstream_connection` buckets.
    conn_buckets: local_ratelimit::ConnectionBuckets,
    /// The `x-ratelimit-*` values the current request's response carries.
    x_ratelimit: Option<local_ratelimit::XRateLimit>,
    /// Headers the next local reply carries for the filter that sends it.
    filter_reply: Option<crate::filters::FilterReply>,
    /// The current request's `Upgrade` value when it is an upgrade request.
    upgrade: Option<Vec<u8>>,
    /// One HTTP/2 stream served through `http2::bridge` (one request, then done).
    bridged: bool,
    /// The read deadline (idle or headers timeout) and the park deadline,
    /// kept across requests so pushing them back costs no timer work (see
    /// `Sleep::defer_to`).
    read_timer: Option<Sleep>,
    park_timer: Option<Sleep>,
    /// The route (or per-try) timeout and the stream idle timeout of the
    /// exchange in progress, kept across requests the same way.
    route_timer: Option<Sleep>,
    stream_idle_timer: Option<Sleep>,
}

/// Points a connection's persistent timer at `deadline` (none: disarmed)
/// and lends it out for one wait.
fn rearm(timer: &mut Option<Sleep>, deadline: Option<Instant>) -> Option<&mut Sleep> {
    match (timer.as_mut(), deadline) {
        (_, None) => *timer = None,
        (Some(t), Some(d)) => t.defer_to(d),
        (None, Some(d)) => *timer = Some(sleep_until(d)),
    }
    timer.as_mut()
}

impl<'a> Downstream<'a> {
    fn new(ctx: &'a ShardCtx, stream: Conn, peer: SocketAddr, listener: &HttpListener) -> Downstream<'a> {
        let cap = listener.limits.max_head_bytes + 4096;
        let ConnState { head, out, mutations } = ConnState::take();
        Downstream {
            ctx,
            stream,
            peer,
            buf: RecvBuf::new(INITIAL_BUF.min(cap), cap),
            head,
            out,
            mutations,
            rx_bytes: Cell::new(0),
            tx_bytes: Cell::new(0),
            tx_at_request: 0,
            conn_buckets: Default::default(),
            x_ratelimit: None,
            filter_reply: None,
            upgrade: None,
            bridged: false,
            read_timer: None,
            park_timer: None,
            route_timer: None,
            stream_idle_timer: None,
        }
    }

    /// Gives the grown head, encode and mutation storage back to the
    /// shard's pool (`ConnState`) when the connection task ends or parks.
    fn recycle_state(&mut self) {
        ConnState {
            head: std::mem::take(&mut self.head),
            out: std::mem::take(&mut self.out),
            mutations: std::mem::take(&mut self.mutations),
        }
        .give_back();
    }

    /// `downstream_rq_http1_total` or `downstream_rq_http2_total`.
    fn count_protocol_request(&self, listener: &HttpListener) {
        if self.bridged {
            listener.stats.downstream_rq_http2_total.inc();
        } else {
            listener.stats.downstream_rq_http1_total.inc();
        }
    }

    async fn run(&mut self, listener: &Rc<HttpListener>) -> ConnEnd {
        loop {
            // A newer snapshot's listener of the same name serves new requests.
            let snapshot = self.ctx.snapshot();
            let listener = snapshot.listeners.get(&listener.config.name).cloned().unwrap_or_else(|| listener.clone());
            match self.read_head(&listener).await {
                HeadOutcome::Ready(consumed) => {
                    self.buf.consume(consumed);
                }
                HeadOutcome::Closed => return ConnEnd::Remote,
                HeadOutcome::Idle => return ConnEnd::Local,
                HeadOutcome::Park(idle_deadline) => return ConnEnd::Park(idle_deadline),
                HeadOutcome::Failed(status, reason) => {
                    listener.stats.downstream_rq_total.inc();
                    self.count_protocol_request(&listener);
                    listener.stats.downstream_cx_protocol_error.inc();
                    let _ = self.local_reply(&listener, status, reason.as_bytes(), true).await;
                    return ConnEnd::Local;
                }
            }
            // The snapshot in force when the head arrived serves it: a config
            // published while the connection sat idle applies to this request.
            // A listener removed from the config finishes this request and
            // closes (it drains instead of serving on forever).
            let snapshot = self.ctx.snapshot();
            let (listener, removed) = match snapshot.listeners.get(&listener.config.name) {
                Some(l) => (l.clone(), false),
                None => (listener, true),
            };
            let started = Instant::now();
            listener.stats.downstream_rq_total.inc();
            self.count_protocol_request(&listener);
            listener.stats.downstream_rq_active.inc();
            let after = self.handle_request(&snapshot, &listener, removed).await;
            let after = if removed { After::Close } else { after };
            listener.stats.downstream_rq_active.dec();
            listener.stats.downstream_rq_completed.inc();
            listener.stats.downstream_rq_time.record(started.elapsed());
            if self.bridged {
                return ConnEnd::Local;
            }
            match after {
                After::KeepAlive if !self.ctx.draining() => {}
                After::KeepAlive => {
                    listener.stats.downstream_cx_drain_close.inc();
                    return ConnEnd::Local;
                }
                After::Close => return ConnEnd::Local,
            }
        }
    }

    /// Waits for and parses the next request head, enforcing the idle
    /// timeout before its first byte and the headers timeout after it.
    async fn read_head(&mut self, listener: &HttpListener) -> HeadOutcome {
        let hcm = &listener.hcm;
        let mut header_deadline: Option<Instant> = None;
        self.head.clear();
        self.x_ratelimit = None;
        loop {
            if !self.buf.is_empty() {
                match parse_request_head(self.buf.filled(), &listener.limits, &mut self.head) {
                    Ok(Some(consumed)) => return HeadOutcome::Ready(consumed),
                    Ok(None) => {}
                    Err(e) => return HeadOutcome::Failed(e.status(), error_body(&e)),
                }
                if header_deadline.is_none() {
                    header_deadline = hcm.request_headers_timeout.map(|t| now() + t);
                }
            }
            let waiting_for_first_byte = self.buf.is_empty();
            if waiting_for_first_byte && (self.ctx.draining() || self.ctx.listener_removed(&listener.config.name)) {
                return HeadOutcome::Idle;
            }
            let deadline = if waiting_for_first_byte { hcm.idle_timeout.map(|t| now() + t) } else { header_deadline };
            let park_after =
                if self.ctx.unparked() > PARK_FREE_CONNECTIONS { PARK_IDLE_AFTER } else { PARK_IDLE_AFTER_FEW };
            let park = waiting_for_first_byte.then(|| now() + park_after);
            let read = self.fill_or_drain(deadline, waiting_for_first_byte, park, &listener.config.name).await;
            match read {
                Fill::Read(0) => {
                    return if self.buf.is_empty() {
                        HeadOutcome::Closed
                    } else {
                        // A client that gives up mid-head gets nothing back.
                        listener.stats.downstream_rq_rx_reset.inc();
                        HeadOutcome::Closed
                    };
                }
                Fill::Read(_) => {}
                Fill::Full => {
                    // Only reachable when the parser could not decide yet; the
                    // buffer cap is above every head limit, so this is 431.
                    return HeadOutcome::Failed(431, error_body(&H1Error::HeadTooLarge));
                }
                Fill::Error => return HeadOutcome::Closed,
                Fill::TimedOut if waiting_for_first_byte => {
                    listener.stats.downstream_cx_idle_timeout.inc();
                    return HeadOutcome::Idle;
                }
                Fill::TimedOut => {
                    listener.stats.downstream_rq_header_timeout.inc();
                    return HeadOutcome::Failed(408, "request headers timeout".to_string());
                }
                Fill::Draining => return HeadOutcome::Idle,
                Fill::Park => return HeadOutcome::Park(deadline),
            }
        }
    }

    /// One read into the buffer, bounded by `deadline`, abandoned when the
    /// shard starts draining or `listener` is removed if `idle` (no request
    /// in progress), or at `park` if nothing arrived by then.
    async fn fill_or_drain(
        &mut self,
        deadline: Option<Instant>,
        idle: bool,
        park: Option<Instant>,
        listener: &str,
    ) -> Fill {
        let mut sleep = rearm(&mut self.read_timer, deadline);
        let mut park = rearm(&mut self.park_timer, park);
        let mut drain = pin!(self.ctx.listener_drain_signal(listener));
        if idle {
            // Between requests the connection waits without a buffer, which
            // keeps an idle keep-alive connection to a few hundred bytes.
            self.buf.release();
            let stream = &self.stream;
            let woke = std::future::poll_fn(|cx| {
                if stream.poll_read_ready(cx).is_ready() {
                    return Poll::Ready(None);
                }
                if let Some(s) = sleep.as_mut() {
                    if Pin::new(s).poll(cx).is_ready() {
                        return Poll::Ready(Some(Fill::TimedOut));
                    }
                }
                if drain.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Fill::Draining));
                }
                if let Some(p) = park.as_mut() {
                    if Pin::new(p).poll(cx).is_ready() {
                        return Poll::Ready(Some(Fill::Park));
                    }
                }
                Poll::Pending
            })
            .await;
            if let Some(outcome) = woke {
                return outcome;
            }
        }
        let read = self.buf.fill_from(&self.stream);
        let mut read = pin!(read);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = read.as_mut().poll(cx) {
                return Poll::Ready(match r {
                    Ok(n) => {
                        self.rx_bytes.set(self.rx_bytes.get() + n as u64);
                        Fill::Read(n)
                    }
                    Err(e) if e.kind() == buf::BUFFER_FULL => Fill::Full,
                    Err(_) => Fill::Error,
                });
            }
            if let Some(s) = sleep.as_mut() {
                if Pin::new(s).poll(cx).is_ready() {
                    return Poll::Ready(Fill::TimedOut);
                }
            }
            if idle && drain.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Fill::Draining);
            }
            Poll::Pending
        })
        .await
    }

    /// `listener_removed`: the listener is gone from the config; this is
    /// the connection's last request, answered with `Connection: close`.
    async fn handle_request(
        &mut self,
        snapshot: &crate::shard::ShardSnapshot,
        listener: &Rc<HttpListener>,
        listener_removed: bool,
    ) -> After {
        self.tx_at_request = self.tx_bytes.get();
        let hcm = &listener.hcm;
        let body_kind = match request_body_kind(&self.head) {
            Ok(k) => k,
            Err(e) => {
                listener.stats.downstream_cx_protocol_error.inc();
                let _ = self.local_reply(listener, e.status(), error_body(&e).as_bytes(), true).await;
                return After::Close;
            }
        };
        if self.head.version == Version::Http10 && !hcm.accept_http_10 {
            let _ = self.local_reply(listener, 426, b"Upgrade Required", true).await;
            return After::Close;
        }
        let upgrade_value = upgrade::upgrade_header(&self.head);
        let directives = strip_hop_by_hop(&mut self.head.headers);
        self.upgrade = upgrade::requested(&mut self.head, upgrade_value, directives.upgrade);
        let client_keeps = directives.persistent(self.head.version) && !listener_removed;
        let expect_continue = match self.head.headers.get(WellKnown::Expect) {
            Some(v) if v.eq_ignore_ascii_case(b"100-continue") => true,
            Some(_) => {
                let _ = self.local_reply(listener, 417, b"Expectation Failed", true).await;
                return After::Close;
            }
            None => false,
        };
        self.head.headers.remove(WellKnown::Expect);

        let host = self.head.host().unwrap_or(b"");
        let path = self.head.path_and_query();
        let matched = listener.routes.find(host, path, &self.head);
        let route = matched.map(|m| m.route);
        // Envoy refuses an upgrade its config does not allow before any filter runs.
        if let Some(value) = &self.upgrade {
            if !upgrade::allowed(listener, route, value) {
                listener.upgrade_stats.downstream_rq_ws_on_non_ws_route.inc();
                return self.reply_and_settle(listener, body_kind, client_keeps, 403, b"").await;
            }
        }
        // RBAC runs after routing (so per-route overrides apply) and before
        // the router's 404 / direct response / forward, as Envoy's filter does.
        if listener.rbac.has_http() && self.rbac_denies(listener, route, host) {
            let body = crate::rbac::DENIED_BODY;
            return self.reply_and_settle(listener, body_kind, client_keeps, 403, body).await;
        }
        // Local rate limiting and fault injection, in their chain order
        // (after RBAC, whatever the order: see docs/configuration-filters.md).
        let _active_faults = if listener.filters.http().is_empty() {
            Vec::new()
        } else {
            match self.governance(listener, matched, body_kind, client_keeps).await {
                Ok(active) => active,
                Err(after) => return after,
            }
        };
        let Some(matched) = matched else {
            listener.stats.no_route.inc();
            return self.reply_and_settle(listener, body_kind, client_keeps, 404, b"").await;
        };
        let framing = Framing { body_kind, client_keeps, expect_continue };
        self.route_action(snapshot, listener, matched, framing).await
    }

    /// The router filter's part of a request: the matched route's action —
    /// a direct response, a redirect, or a forward to the cluster its
    /// cluster specifier names.
    async fn route_action(
        &mut self,
        snapshot: &crate::shard::ShardSnapshot,
        listener: &Rc<HttpListener>,
        m: Matched<'_>,
        framing: Framing,
    ) -> After {
        let Framing { body_kind, client_keeps, .. } = framing;
        let route = m.route;
        let action = match &route.action {
            RouteAction::DirectResponse { status, body } => {
                listener.stats.rq_direct_response.inc();
                let headers = self.route_reply_headers(listener, m, None);
                // Envoy points 201 and 3xx direct responses at the request's own URL.
                let location = (*status == 201 || (300..400).contains(status))
                    .then(|| self.redirect_location(listener, None, &route.matcher.path));
                let body: &[u8] = body.as_deref().unwrap_or(b"");
                let extras =
                    ReplyExtras { location: location.as_deref(), route: headers.as_ref(), ..Default::default() };
                return self.reply_and_settle_with(listener, body_kind, client_keeps, *status, body, extras).await;
            }
            RouteAction::Redirect(r) => {
                listener.stats.rq_redirect.inc();
                let headers = self.route_reply_headers(listener, m, None);
                let location = self.redirect_location(listener, Some(r), &route.matcher.path);
                let extras = ReplyExtras { location: Some(&location), route: headers.as_ref(), ..Default::default() };
                return self
                    .reply_and_settle_with(listener, body_kind, client_keeps, r.response_code, b"", extras)
                    .await;
            }
            RouteAction::Forward(action) => action,
        };
        // The cluster: named, from a request header, or a weighted pick.
        let mut weighted = None;
        let name: Option<&str> = match &action.cluster {
            ClusterSpecifier::Cluster(name) => Some(name),
            ClusterSpecifier::Header(h) => {
                route_action::first_header(&self.head, h).and_then(|n| std::str::from_utf8(n).ok())
            }
            ClusterSpecifier::Weighted(w) => {
                let random = route_action::weighted_random(w, &self.head, self.ctx.next_random());
                let picked = route_action::pick_weighted(w, random);
                weighted = Some(picked);
                route_action::weighted_cluster_name(picked, &self.head).and_then(|n| std::str::from_utf8(n).ok())
            }
        };
        let cluster = name.and_then(|n| snapshot.clusters.get(n)).cloned();
        let Some(cluster) = cluster else {
            listener.stats.no_cluster.inc();
            let headers = self.route_reply_headers(listener, m, weighted);
            let extras = ReplyExtras { location: None, route: headers.as_ref(), ..Default::default() };
            let status = action.cluster_not_found_response_code;
            return self.reply_and_settle_with(listener, body_kind, client_keeps, status, b"", extras).await;
        };
        if !action.request_mirror_policies.is_empty() {
            mirror::spawn_mirrors(
                self.ctx,
                snapshot,
                &action.request_mirror_policies,
                &self.head,
                body_kind,
                self.buf.filled(),
                listener.config.per_connection_buffer_limit_bytes,
                action.timeout,
            );
        }
        let request = mutate::Levels::new(m.config, m.vhost, route, weighted, false);
        let response = mutate::Levels::new(m.config, m.vhost, route, weighted, true);
        let vars = (!request.is_empty() || !response.is_empty()).then(|| self.mutation_vars(listener));
        let (mut retry, route_timeout) = self.retry_setup(listener, m.vhost, action);
        let mut exchange = Exchange {
            listener,
            cluster: &cluster,
            body_kind,
            client_keeps,
            expect_continue: framing.expect_continue,
            route_timeout,
            global_deadline: Cell::new(None),
            // A route's idle_timeout replaces the HCM's stream_idle_timeout
            // (`0s`: none at all), as Envoy's does.
            idle_timeout: action.idle_timeout.unwrap_or(listener.hcm.stream_idle_timeout),
            routing: Routing {
                path: &route.matcher.path,
                action,
                request,
                response,
                weighted_host: weighted.and_then(|w| w.host_rewrite_literal.as_deref()),
                vars,
            },
            hash_policy: &action.hash_policy,
            set_cookies: Vec::new(),
        };
        if self.upgrade.is_some() {
            // Boxed: an upgrade's state (3.8 KB) would otherwise be part of
            // every request's; an upgrade happens at most once a connection.
            return Box::pin(self.forward_upgrade(exchange)).await;
        }
        self.forward(&mut exchange, &mut retry).await
    }

    /// The router's retry and timeout setup for a forwarded request: the
    /// route's retry policy (or else its virtual host's, never merged), and
    /// an internal request's `x-envoy-*` overrides.  Those headers are
    /// consumed here, and an external request's are ignored: with
    /// `use_remote_address` a request from a non-internal address is an
    /// edge request, whose `x-envoy-*` headers Envoy strips.
    fn retry_setup(
        &mut self,
        listener: &HttpListener,
        vhost: &control::model::VirtualHost,
        action: &ForwardAction,
    ) -> (RetrySetup, Option<Duration>) {
        let trusted = !listener.hcm.use_remote_address || upstream_retry::is_internal(self.peer.ip());
        let overrides = if trusted && upstream_retry::has_overrides(&self.head.headers) {
            HeaderOverrides::read(&self.head.headers)
        } else {
            HeaderOverrides::default()
        };
        upstream_retry::strip_consumed(&mut self.head.headers);
        let policy = action.retry.policy.as_ref().or(vhost.retry.policy.as_ref());
        let state = RetryState::new(policy.map(upstream_retry::compile), &overrides);
        let per_try_timeout = overrides.per_try_timeout.or_else(|| policy.and_then(|p| p.per_try_timeout));
        let buffer_limit = action
            .retry
            .per_request_buffer_limit_bytes
            .or(vhost.retry.per_request_buffer_limit_bytes)
            .unwrap_or(listener.config.per_connection_buffer_limit_bytes);
        let route_timeout = overrides.timeout.unwrap_or_else(|| {
            crate::http2::grpc::route_timeout(action.timeout, action.grpc_timeout.as_ref(), &self.head.headers)
        });
        let setup = RetrySetup {
            state,
            buffer_limit: u64::from(buffer_limit),
            attempt_count_upstream: vhost.retry.include_request_attempt_count,
            attempt_count_downstream: vhost.retry.include_attempt_count_in_response,
            per_try_timeout,
            outstanding: None,
        };
        (setup, route_timeout)
    }

    /// The values route header formats read (`%DOWNSTREAM_REMOTE_ADDRESS%`
    /// ...), from the request as received: call before the upstream head
    /// changes `x-forwarded-for`.
    fn mutation_vars(&self, listener: &HttpListener) -> mutate::Vars {
        let hcm = &listener.hcm;
        let trusted = crate::rbac::trusted_client_address(
            self.peer.ip(),
            hcm.use_remote_address,
            hcm.xff_num_trusted_hops,
            self.head.headers.get_all(WellKnown::XForwardedFor),
        );
        // An address taken from x-forwarded-for has no port (Envoy prints :0).
        let remote = if trusted == self.peer.ip() { self.peer } else { SocketAddr::new(trusted, 0) };
        mutate::Vars {
            remote,
            direct_remote: self.peer,
            local: self.stream.local_addr(),
            upstream: None,
            protocol: if self.bridged {
                "HTTP/2"
            } else if self.head.version == Version::Http10 {
                "HTTP/1.0"
            } else {
                "HTTP/1.1"
            },
        }
    }

    /// The matched route's response header mutations for a local reply
    /// (`None` when it has none).
    fn route_reply_headers<'r>(
        &self,
        listener: &HttpListener,
        m: Matched<'r>,
        weighted: Option<&'r control::model::ClusterWeight>,
    ) -> Option<RouteHeaders<'r>> {
        let levels = mutate::Levels::new(m.config, m.vhost, m.route, weighted, true);
        (!levels.is_empty()).then(|| RouteHeaders { levels, vars: self.mutation_vars(listener) })
    }

    /// Envoy's redirect URL for this request (`redirect: None`: its own URL).
    fn redirect_location(&self, listener: &HttpListener, redirect: Option<&Redirect>, matched: &PathMatch) -> Vec<u8> {
        // x-forwarded-proto as the connection manager will leave it.
        let scheme: &[u8] = if self.stream.tls().is_some() { b"https" } else { b"http" };
        let forwarded_proto: &[u8] = if listener.hcm.use_remote_address {
            scheme
        } else {
            self.head.headers.get(WellKnown::XForwardedProto).unwrap_or(scheme)
        };
        let input = route_action::RedirectInput {
            host: self.head.host().unwrap_or(b""),
            path_and_query: self.head.path_and_query(),
            scheme: route_action::request_scheme(&self.head, forwarded_proto),
            forwarded_proto,
        };
        let mut out = Vec::with_capacity(64);
        route_action::redirect_location(redirect, matched, input, &mut out);
        out
    }

    /// Runs the local rate limit and fault filters in chain order.  `Err`
    /// carries the end of a request a filter answered itself; `Ok` the
    /// request's places in `active_faults`, held until it ends.
    async fn governance(
        &mut self,
        listener: &HttpListener,
        matched: Option<Matched<'_>>,
        body_kind: BodyKind,
        client_keeps: bool,
    ) -> Result<Vec<fault::ActiveFault>, After> {
        let ctx = self.ctx;
        let mut active = Vec::new();
        for filter in listener.filters.http() {
            match filter {
                HttpGovernance::RateLimit(rl) => {
                    let limiter = rl.select(matched);
                    let route_limits = match matched.map(|m| &m.route.action) {
                        Some(RouteAction::Forward(a)) if limiter.has_descriptors() && !a.rate_limits.is_empty() => {
                            let hcm = &listener.hcm;
                            Some(local_ratelimit::RouteDescriptors {
                                policies: &a.rate_limits,
                                stage: limiter.config.stage,
                                head: &self.head,
                                remote: crate::rbac::trusted_client_address(
                                    self.peer.ip(),
                                    hcm.use_remote_address,
                                    hcm.xff_num_trusted_hops,
                                    crate::rbac::forwarded_for(&self.head.headers),
                                ),
                            })
                        }
                        _ => None,
                    };
                    let descriptors: &dyn local_ratelimit::DescriptorSource = match &route_limits {
                        Some(r) => r,
                        None => &(),
                    };
                    let decision = local_ratelimit::decide(
                        limiter,
                        now(),
                        &mut || ctx.next_random(),
                        &mut self.conn_buckets,
                        descriptors,
                    );
                    match decision {
                        local_ratelimit::Decision::Skip => {}
                        local_ratelimit::Decision::Pass { x } => self.x_ratelimit = x.or(self.x_ratelimit),
                        local_ratelimit::Decision::NotEnforced { request_headers, x } => {
                            self.x_ratelimit = x.or(self.x_ratelimit);
                            if !request_headers.is_empty() {
                                let vars = self.mutation_vars(listener);
                                let levels = mutate::Levels::single(request_headers);
                                mutate::apply_to_request(&levels, &mut self.head, &vars, &mut self.mutations);
                            }
                        }
                        local_ratelimit::Decision::Limited { status, response_headers, x } => {
                            self.x_ratelimit = x.or(self.x_ratelimit);
                            let route = (!response_headers.is_empty()).then(|| RouteHeaders {
                                levels: mutate::Levels::single(response_headers),
                                vars: self.mutation_vars(listener),
                            });
                            let extras = ReplyExtras { location: None, route: route.as_ref(), overloaded: false };
                            self.filter_reply = Some(crate::filters::FilterReply::RateLimited);
                            let body = local_ratelimit::LIMITED_BODY;
                            return Err(self
                                .reply_and_settle_with(listener, body_kind, client_keeps, status, body, extras)
                                .await);
                        }
                    }
                }
                HttpGovernance::Fault(f) => {
                    let config = f.select(matched);
                    let plan = f.run(config, &self.head, &mut || ctx.next_random());
                    if !plan.any() {
                        continue;
                    }
                    active.push(f.activate());
                    if let Some(delay) = plan.delay {
                        f.stats.delays_injected.inc();
                        sleep_until(now() + delay).await;
                    }
                    let Some(abort) = plan.abort else { continue };
                    f.stats.aborts_injected.inc();
                    let body = fault::abort_body(config).as_bytes();
                    let after = match abort {
                        fault::Abort::Http(status) => {
                            self.reply_and_settle(listener, body_kind, client_keeps, status, body).await
                        }
                        fault::Abort::Grpc(code) => {
                            // A trailers-only gRPC reply: HTTP 200 carrying the status.
                            let message = String::from_utf8_lossy(body).into_owned();
                            self.filter_reply = Some(crate::filters::FilterReply::GrpcStatus { code, message });
                            self.reply_and_settle(listener, body_kind, client_keeps, 200, b"").await
                        }
                    };
                    return Err(after);
                }
            }
        }
        Ok(active)
    }

    /// Envoy's network RBAC filter (ONE_TIME_ON_FIRST_BYTE): decides once,
    /// when the connection's first bytes arrive, whether it may go on.
    /// `Some` ends the connection (closed, or denied and closed).
    async fn network_rbac(&mut self, listener: &HttpListener) -> Option<ConnEnd> {
        if !listener.rbac.has_network() {
            return None;
        }
        // Bytes already read to choose the protocol are the first bytes.
        let deadline = listener.hcm.idle_timeout.map(|t| now() + t);
        let first = if self.buf.is_empty() {
            self.fill_or_drain(deadline, true, None, &listener.config.name).await
        } else {
            Fill::Full
        };
        match first {
            Fill::Read(0) | Fill::Error => return Some(ConnEnd::Remote),
            Fill::Read(_) | Fill::Full => {}
            Fill::TimedOut => {
                listener.stats.downstream_cx_idle_timeout.inc();
                return Some(ConnEnd::Local);
            }
            Fill::Draining => return Some(ConnEnd::Local),
            Fill::Park => unreachable!("no park deadline was given"),
        }
        let identity = self.stream.tls().map(|t| t.peer());
        let identity = identity.as_ref().and_then(|p| p.as_ref());
        match listener.rbac.check_connection_with(self.peer, self.stream.local_addr(), identity) {
            crate::rbac::ConnVerdict::Allowed => None,
            crate::rbac::ConnVerdict::Denied { delay } => {
                if let Some(d) = delay {
                    sleep_until(now() + d).await;
                }
                Some(ConnEnd::Local)
            }
        }
    }

    /// Evaluates the HTTP RBAC filters for the current request.
    fn rbac_denies(&self, listener: &HttpListener, route: Option<&control::model::Route>, host: &[u8]) -> bool {
        let hcm = &listener.hcm;
        let peer = self.peer.ip();
        let remote = if listener.rbac.uses_remote_ip() {
            crate::rbac::trusted_client_address(
                peer,
                hcm.use_remote_address,
                hcm.xff_num_trusted_hops,
                crate::rbac::forwarded_for(&self.head.headers),
            )
        } else {
            peer
        };
        let identity = self.stream.tls().map(|t| t.peer());
        let subject = crate::rbac::Subject {
            remote,
            direct_remote: peer,
            source: peer,
            destination: self.stream.local_addr(),
            headers: &self.head,
            peer: identity.as_ref().and_then(|p| p.as_ref()),
        };
        listener.rbac.check_request(&subject, route, &listener.routes, host) == crate::rbac::Verdict::Denied
    }

    /// Answers locally, then keeps the connection only if the request body
    /// can be skipped cheaply (none, or small and already arriving).
    async fn reply_and_settle(
        &mut self,
        listener: &HttpListener,
        body_kind: BodyKind,
        client_keeps: bool,
        status: u16,
        body: &[u8],
    ) -> After {
        self.reply_and_settle_with(listener, body_kind, client_keeps, status, body, ReplyExtras::default()).await
    }

    /// `reply_and_settle` for a reply the router makes on a matched route
    /// (its response header mutations apply, and a redirect's `location`).
    async fn reply_and_settle_with(
        &mut self,
        listener: &HttpListener,
        body_kind: BodyKind,
        client_keeps: bool,
        status: u16,
        body: &[u8],
        extras: ReplyExtras<'_>,
    ) -> After {
        let skippable = match body_kind {
            BodyKind::Empty | BodyKind::Length(0) => true,
            BodyKind::Length(n) => n <= DISCARD_BODY_LIMIT,
            _ => false,
        };
        let keep =
            client_keeps && skippable && !self.ctx.draining() && !self.ctx.listener_removed(&listener.config.name);
        if self.local_reply_with(listener, status, body, !keep, extras).await.is_err() {
            return After::Close;
        }
        if !keep {
            return After::Close;
        }
        let mut decoder = BodyDecoder::with_limits(body_kind, &listener.limits);
        loop {
            match decoder.decode(self.buf.filled()) {
                Ok((n, Decoded::End { .. })) => {
                    self.buf.consume(n);
                    return After::KeepAlive;
                }
                Ok((n, _)) => self.buf.consume(n),
                Err(_) => return After::Close,
            }
            match timeout(listener.hcm.request_headers_timeout, self.buf.fill_from(&self.stream)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return After::Close,
            }
        }
    }

    /// Writes a locally generated response (Envoy's "local reply").
    async fn local_reply(&mut self, listener: &HttpListener, status: u16, body: &[u8], close: bool) -> io::Result<()> {
        self.local_reply_with(listener, status, body, close, ReplyExtras::default()).await
    }

    async fn local_reply_with(
        &mut self,
        listener: &HttpListener,
        status: u16,
        body: &[u8],
        close: bool,
        extras: ReplyExtras<'_>,
    ) -> io::Result<()> {
        // A gRPC request's local reply is a trailers-only gRPC response
        // (HTTP 200, grpc-status from the HTTP status), as Envoy sends it;
        // a fault filter's gRPC abort already is one.
        let grpc_request = !matches!(self.filter_reply, Some(crate::filters::FilterReply::GrpcStatus { .. }))
            && self.head.headers.get(WellKnown::ContentType).is_some_and(crate::http2::grpc::is_grpc_content_type);
        let (grpc_for, message) = if grpc_request { (Some(status), body) } else { (None, &b""[..]) };
        let (status, body) = if grpc_request { (200, &b""[..]) } else { (status, body) };
        listener.stats.record_response_code(status);
        let mut headers = http1::Headers::new();
        if !body.is_empty() {
            headers.append(WellKnown::ContentType, b"text/plain");
        }
        if let Some(http_status) = grpc_for {
            crate::http2::grpc::append_trailers_only(&mut headers, http_status, message);
        }
        if let Some(location) = extras.location {
            headers.append("location", location);
        }
        if let Some(reply) = self.filter_reply.take() {
            reply.append_to(&mut headers);
        }
        if extras.overloaded {
            headers.append(WellKnown::XEnvoyOverloaded, b"true");
        }
        if let Some(route) = extras.route {
            mutate::apply_to_response(&route.levels, &mut headers, &self.head, &route.vars, &mut self.mutations);
            // The gateway frames and dates its own replies, whatever a
            // mutation says; `server` follows server_header_transformation.
            for name in ["content-length", "transfer-encoding", "connection", "date"] {
                headers.remove(name);
            }
            if listener.hcm.server_header_transformation == ServerHeaderTransformation::Overwrite {
                headers.remove(WellKnown::Server);
            }
        }
        if let Some(x) = self.x_ratelimit {
            x.append_to(&mut headers);
        }
        headers.append(WellKnown::ContentLength, itoa::Buffer::new().format(body.len()).as_bytes());
        headers.append(WellKnown::Date, &self.ctx.http_date());
        if !headers.contains(WellKnown::Server) {
            headers.append(WellKnown::Server, listener.hcm.server_name.as_bytes());
        }
        if close {
            headers.append(WellKnown::Connection, b"close");
        }
        self.out.clear();
        encode_response_head(status, "", &headers, &mut self.out);
        let is_head = self.head.method == Method::Head;
        let body = if is_head { &[][..] } else { body };
        self.tx_bytes.set(self.tx_bytes.get() + (self.out.len() + body.len()) as u64);
        self.stream.write_all_vectored(&[&self.out, body]).await
    }

    async fn connect_failed(&mut self, ex: &Exchange<'_>, failure: ConnectFailure) -> After {
        let body =
            format!("upstream connect error or disconnect/reset before headers. reset reason: {}", failure.reason());
        let route = ex.routing.reply_headers();
        let overloaded = failure == ConnectFailure::Overflow;
        let extras = ReplyExtras { location: None, route: route.as_ref(), overloaded };
        self.reply_and_settle_with(ex.listener, ex.body_kind, ex.client_keeps, 503, body.as_bytes(), extras).await
    }

    async fn exchange_failed(&mut self, ex: &Exchange<'_>, cluster: &ClusterRuntime, err: ExchangeError) -> After {
        let stats = &cluster.stats;
        let (status, body): (u16, String) = match err {
            ExchangeError::ResponseCut => return After::Close,
            ExchangeError::Downstream => {
                stats.upstream_rq_cancelled.inc();
                ex.listener.stats.downstream_rq_rx_reset.inc();
                return After::Close;
            }
            ExchangeError::BadRequestBody(e) => {
                ex.listener.stats.downstream_cx_protocol_error.inc();
                (e.status(), error_body(&e))
            }
            // A per-try timeout that is not retried is answered as Envoy's
            // router does: 504, counted by `upstream_rq_per_try_timeout`.
            ExchangeError::Timeout { per_try: true, .. } => (504, "upstream request timeout".to_string()),
            ExchangeError::RetryResponse { .. } => {
                unreachable!("a retriable response is either retried or relayed by the attempt loop")
            }
            ExchangeError::Timeout { per_try: false, .. } => {
                stats.upstream_rq_timeout.inc();
                ex.listener.stats.downstream_rq_timeout.inc();
                (504, "upstream request timeout".to_string())
            }
            ExchangeError::RequestTimeout { idle } => {
                if idle {
                    ex.listener.stats.downstream_rq_idle_timeout.inc();
                } else {
                    ex.listener.stats.downstream_rq_timeout.inc();
                }
                (408, "stream timeout".to_string())
            }
            ExchangeError::UpstreamReset { .. } => {
                stats.upstream_rq_rx_reset.inc();
                (
                    503,
                    "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
                        .to_string(),
                )
            }
            ExchangeError::BadResponse { .. } => {
                stats.upstream_cx_protocol_error.inc();
                (
                    502,
                    "upstream connect error or disconnect/reset before headers. reset reason: protocol error"
                        .to_string(),
                )
            }
        };
        // Once bytes of the response went out, only closing tells the client
        // it was cut.  A head the upstream sent but the gateway still holds
        // for its body (POSTPONE_OUTPUT) has not: the client gets the error.
        if self.tx_bytes.get() > self.tx_at_request {
            return After::Close;
        }
        // The router's own replies (502/503/504) carry the route's response
        // header mutations; the connection manager's (400/408) do not.
        let route = ex.routing.reply_headers().filter(|_| matches!(status, 502..=504));
        let extras = ReplyExtras { location: None, route: route.as_ref(), overloaded: false };
        let _ = self.local_reply_with(ex.listener, status, body.as_bytes(), true, extras).await;
        After::Close
    }

    /// Encodes the head sent upstream into `self.out`: the connection
    /// manager's forwarding headers, then the route's request header
    /// mutations, host rewrite and path rewrite, in Envoy's order.
    fn build_upstream_head(&mut self, ex: &Exchange<'_>, upstream_host: &crate::upstream::Host) {
        let hcm = &ex.listener.hcm;
        // The downstream connection's scheme (TLS terminated here → https).
        let scheme: &[u8] = if self.stream.tls().is_some() { b"https" } else { b"http" };
        let headers = &mut self.head.headers;
        // RFC 9110 §7.6.1 hop-by-hop fields were stripped; now Envoy's
        // forwarding headers.  With use_remote_address the peer is the
        // trusted client address and the request is "external".
        if hcm.use_remote_address {
            let mut ip_buf = [0u8; IP_TEXT_MAX];
            let ip = ip_text(self.peer.ip(), &mut ip_buf);
            HEAD_SCRATCH.with_borrow_mut(|joined| {
                joined.clear();
                if let Some(prev) = headers.get(WellKnown::XForwardedFor) {
                    joined.extend_from_slice(prev);
                    joined.push(b',');
                    joined.extend_from_slice(ip);
                    headers.set(WellKnown::XForwardedFor, joined);
                } else {
                    headers.append(WellKnown::XForwardedFor, ip);
                }
            });
            headers.set(WellKnown::XForwardedProto, scheme);
        } else if !headers.contains(WellKnown::XForwardedProto) {
            headers.append(WellKnown::XForwardedProto, scheme);
        }
        crate::tls::xfcc::apply(headers, hcm.forward_client_cert, hcm.client_cert_details, self.stream.tls());
        if hcm.generate_request_id {
            let external = hcm.use_remote_address && !hcm.preserve_external_request_id;
            if external || !headers.contains(WellKnown::XRequestId) {
                headers.set(WellKnown::XRequestId, &self.ctx.request_id());
            }
        }
        let routing = &ex.routing;
        if let (false, Some(vars)) = (routing.request.is_empty(), &routing.vars) {
            HEAD_SCRATCH.with_borrow_mut(|length| {
                length.clear();
                let had_length = match self.head.headers.get(WellKnown::ContentLength) {
                    Some(v) => {
                        length.extend_from_slice(v);
                        true
                    }
                    None => false,
                };
                mutate::apply_to_request(&routing.request, &mut self.head, vars, &mut self.mutations);
                // Framing stays the gateway's, whatever a mutation says.
                let h = &mut self.head.headers;
                h.remove_all(GATEWAY_FRAMING);
                if had_length {
                    h.append(WellKnown::ContentLength, length);
                }
            });
        }
        self.rewrite_host(routing, upstream_host);
        match ex.body_kind {
            BodyKind::Chunked => self.head.headers.append(WellKnown::TransferEncoding, b"chunked"),
            BodyKind::Length(_) | BodyKind::Empty | BodyKind::CloseDelimited => {}
        }
        self.out.clear();
        let method = self.head.method_str();
        let target = self.head.path_and_query();
        let mut rewritten = REWRITE_SCRATCH.take();
        if route_action::rewrite_forward_path(routing.action, routing.path, target, &mut rewritten) {
            // Envoy keeps the path as received in x-envoy-original-path.
            let mut original = HEAD_SCRATCH.take();
            original.clear();
            original.extend_from_slice(target);
            self.head.headers.set(WellKnown::XEnvoyOriginalPath, &original);
            HEAD_SCRATCH.set(original);
            encode_request_head(self.head.method_str(), &rewritten, &self.head.headers, &mut self.out);
        } else {
            encode_request_head(method, target, &self.head.headers, &mut self.out);
        }
        REWRITE_SCRATCH.set(rewritten);
    }

    /// The Host a forwarded request carries: a weighted cluster's literal,
    /// then the route's `host_rewrite_*` (which records the Host it replaces
    /// in `x-envoy-original-host` and, with `append_x_forwarded_host`, in
    /// `x-forwarded-host`), then `auto_host_rewrite` with the picked host's
    /// DNS name.
    fn rewrite_host(&mut self, routing: &Routing<'_>, upstream_host: &crate::upstream::Host) {
        if let Some(h) = routing.weighted_host {
            self.head.headers.set(WellKnown::Host, h.as_bytes());
        }
        // Both values are copied into shard scratch (not fresh `Vec`s): the
        // header map is edited while they are read.
        let mut new_host = REWRITE_SCRATCH.take();
        new_host.clear();
        match &routing.action.host_rewrite {
            None => {}
            Some(HostRewrite::Literal(h)) => new_host.extend_from_slice(h.as_bytes()),
            Some(HostRewrite::Header(name)) => {
                new_host.extend_from_slice(route_action::first_header(&self.head, name).unwrap_or(b""))
            }
            Some(HostRewrite::Auto) => new_host.extend_from_slice(upstream_host.hostname.as_bytes()),
        }
        if !new_host.is_empty() {
            let headers = &mut self.head.headers;
            let mut old = HEAD_SCRATCH.take();
            old.clear();
            old.extend_from_slice(headers.get(WellKnown::Host).unwrap_or(b""));
            if !old.is_empty() {
                headers.set(WellKnown::XEnvoyOriginalHost, &old);
                if routing.action.append_x_forwarded_host {
                    append_forwarded_host(headers, &old);
                }
            }
            headers.set(WellKnown::Host, &new_host);
            HEAD_SCRATCH.set(old);
        }
        REWRITE_SCRATCH.set(new_host);
    }

    /// Sends the request upstream and the response downstream, concurrently.
    async fn exchange(
        &mut self,
        ex: &Exchange<'_>,
        cluster: &ClusterRuntime,
        upstream: &mut UpstreamConn,
        ctl: AttemptCtl<'_>,
    ) -> Result<Done, ExchangeError> {
        // HTTP/2 carries trailers natively on the upstream side too.
        let upstream_trailers = cluster.config.enable_trailers || upstream.is_h2();
        let UpstreamConn { stream: up, buf: ubuf, head: uhead, .. } = upstream;
        let up = &*up;
        let buffered = ctl.body;
        let written = match buffered {
            Some(body) => up.write_all_vectored(&[&self.out, body]).await.map(|_| self.out.len() + body.len()),
            None => up.write_all(&self.out).await.map(|_| self.out.len()),
        };
        match written {
            Ok(n) => cluster.stats.upstream_cx_tx_bytes_total.add(n as u64),
            Err(_) => return Err(ExchangeError::UpstreamReset { response_started: false, body_consumed: false }),
        }
        if buffered.is_none()
            && ex.expect_continue
            && ex.body_kind != BodyKind::Empty
            && self.head.version == Version::Http11
        {
            // proxy_100_continue is off: the gateway answers 100 itself.
            if self.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.is_err() {
                return Err(ExchangeError::Downstream);
            }
        }
        let response_started = Cell::new(false);
        let body_consumed = Cell::new(false);
        let activity = Cell::new(now());
        let is_head = self.head.method == Method::Head;
        let method = self.head.method;
        let client_version = self.head.version;
        let down = &self.stream;
        let tx_bytes = &self.tx_bytes;
        let rx_bytes = &self.rx_bytes;
        let limits = ex.listener.limits;
        let request_chunked = ex.body_kind == BodyKind::Chunked;
        // HTTP/2 carries trailers natively: `enable_trailers` is an HTTP/1 codec option.
        let forward_trailers = (self.bridged || ex.listener.hcm.enable_trailers) && upstream_trailers;

        let request = pump_request_body(
            down,
            &mut self.buf,
            BodyDecoder::with_limits(ex.body_kind, &limits),
            up,
            request_chunked,
            forward_trailers,
            &body_consumed,
            rx_bytes,
            &activity,
        );
        let response = relay_response(RelayArgs {
            up,
            ubuf,
            head: uhead,
            down,
            method,
            client_version,
            is_head,
            client_keeps: ex.client_keeps,
            ctx: self.ctx,
            listener: ex.listener,
            cluster,
            started: &response_started,
            tx_bytes,
            forward_trailers,
            activity: &activity,
            set_cookies: &ex.set_cookies,
            retry_check: match ctl.retry_check {
                Some(c) => Some(c as &mut attempts::RetryCheck<'_>),
                None => None,
            },
            attempt_count: ctl.attempt_count,
            mutations: ex
                .routing
                .vars
                .filter(|_| !ex.routing.response.is_empty())
                .map(|v| (&ex.routing.response, v, &self.head)),
            scratch: &mut self.mutations,
            x_ratelimit: self.x_ratelimit,
        });
        let mut request = pin!(request);
        let mut response = pin!(response);
        let mut request_done =
            buffered.is_some() || ex.body_kind == BodyKind::Empty || ex.body_kind == BodyKind::Length(0);
        // The route timeout runs from the end of the request across every
        // attempt; the per-try timeout from the end of this attempt's
        // request.  `per_try` says which of the two the deadline is.
        // The deadline's timer is the connection's, kept across requests
        // (`Sleep::defer_to`); `deadline` holds only which timeout it is.
        let route_timer = &mut self.route_timer;
        let arm = |timer: &mut Option<Sleep>| -> Option<bool> {
            let t = now();
            let global = match ex.global_deadline.get() {
                Some(d) => Some(d),
                None => {
                    let d = ex.route_timeout.map(|r| t + r);
                    ex.global_deadline.set(d);
                    d
                }
            };
            let per_try = ctl.per_try_timeout.map(|p| t + p);
            let (at, per_try) = match (global, per_try) {
                (Some(g), Some(p)) if p < g => (Some(p), true),
                (Some(g), _) => (Some(g), false),
                (None, Some(p)) => (Some(p), true),
                (None, None) => (None, false),
            };
            rearm(timer, at).map(|_| per_try)
        };
        let mut deadline: Option<bool> = None;
        if request_done {
            deadline = arm(route_timer);
        }
        let hcm = &ex.listener.hcm;
        // request_timeout: the whole request must arrive (or the response
        // start) in time; stream_idle_timeout (or the route's idle_timeout):
        // bytes must keep moving.
        let mut request_deadline = hcm.request_timeout.filter(|_| !request_done).map(|t| sleep_until(now() + t));
        let idle_timeout = ex.idle_timeout;
        let mut idle = rearm(&mut self.stream_idle_timer, idle_timeout.map(|t| now() + t));
        std::future::poll_fn(|cx| {
            if !request_done {
                match request.as_mut().poll(cx) {
                    Poll::Ready(Ok(())) => {
                        request_done = true;
                        deadline = arm(route_timer);
                    }
                    Poll::Ready(Err(e)) => {
                        return Poll::Ready(Err(match e {
                            BodyError::Downstream => ExchangeError::Downstream,
                            BodyError::Upstream => ExchangeError::UpstreamReset {
                                response_started: response_started.get(),
                                body_consumed: true,
                            },
                            BodyError::Malformed(e) if !response_started.get() => ExchangeError::BadRequestBody(e),
                            BodyError::Malformed(_) => ExchangeError::ResponseCut,
                        }));
                    }
                    Poll::Pending => {}
                }
            }
            if let Poll::Ready(r) = response.as_mut().poll(cx) {
                return Poll::Ready(match r {
                    Ok(mut done) => {
                        if !request_done {
                            // Envoy resets a stream whose response completed
                            // before its request: the rest of the body would
                            // be read as the next request.
                            done.downstream_keeps = false;
                            done.upstream_reusable = false;
                        }
                        Ok(done)
                    }
                    Err(RelayError::Upstream) => Err(ExchangeError::UpstreamReset {
                        response_started: response_started.get(),
                        body_consumed: body_consumed.get(),
                    }),
                    Err(RelayError::Downstream) => Err(ExchangeError::Downstream),
                    Err(RelayError::Retry(status)) => Err(ExchangeError::RetryResponse { status }),
                    Err(RelayError::Bad(e)) => {
                        Err(ExchangeError::BadResponse { response_started: response_started.get(), _error: e })
                    }
                });
            }
            if let (Some(per_try), Some(d)) = (deadline, route_timer.as_mut()) {
                if Pin::new(d).poll(cx).is_ready() {
                    let response_started = response_started.get();
                    return Poll::Ready(Err(ExchangeError::Timeout { response_started, per_try }));
                }
            }
            if request_done || response_started.get() {
                request_deadline = None;
            }
            if let Some(d) = request_deadline.as_mut() {
                if Pin::new(d).poll(cx).is_ready() {
                    return Poll::Ready(Err(ExchangeError::RequestTimeout { idle: false }));
                }
            }
            if let (Some(d), Some(limit)) = (idle.as_mut(), idle_timeout) {
                // Re-armed lazily: activity only moves the deadline when the
                // timer comes due, so busy streams cost no timer churn.
                while Pin::new(&mut **d).poll(cx).is_ready() {
                    let due = activity.get() + limit;
                    if due <= now() {
                        return Poll::Ready(Err(ExchangeError::RequestTimeout { idle: true }));
                    }
                    d.reset(due);
                }
            }
            Poll::Pending
        })
        .await
    }
}

struct Exchange<'a> {
    listener: &'a Rc<HttpListener>,
    cluster: &'a Rc<ClusterRuntime>,
    body_kind: BodyKind,
    client_keeps: bool,
    expect_continue: bool,
    route_timeout: Option<Duration>,
    /// When the route timeout expires: set when the request has been
    /// received in full, shared by every attempt.
    global_deadline: Cell<Option<Instant>>,
    /// `stream_idle_timeout`, or the route's `idle_timeout` instead.
    idle_timeout: Option<Duration>,
    /// What the matched route does to the request and response heads.
    routing: Routing<'a>,
    /// The route's `hash_policy` (consistent-hashing clusters use it).
    hash_policy: &'a [control::model::HashPolicy],
    /// `set-cookie` values a cookie hash policy generated for this request.
    set_cookies: Vec<String>,
}

/// How the request is framed, as the connection manager read it.
#[derive(Clone, Copy)]
struct Framing {
    body_kind: BodyKind,
    client_keeps: bool,
    expect_continue: bool,
}

/// The matched route's transforms of a forwarded request.
struct Routing<'a> {
    /// The path specifier (what `prefix_rewrite` swaps).
    path: &'a PathMatch,
    action: &'a ForwardAction,
    request: mutate::Levels<'a>,
    response: mutate::Levels<'a>,
    /// The picked weighted cluster's `host_rewrite_literal`.
    weighted_host: Option<&'a str>,
    /// Set when any header mutation applies (read before the request head changes).
    vars: Option<mutate::Vars>,
}

impl<'a> Routing<'a> {
    /// The response header mutations for a local reply, if any.
    fn reply_headers(&self) -> Option<RouteHeaders<'a>> {
        let vars = self.vars.filter(|_| !self.response.is_empty())?;
        Some(RouteHeaders { levels: self.response, vars })
    }
}

/// A matched route's response header mutations, ready to apply.
struct RouteHeaders<'r> {
    levels: mutate::Levels<'r>,
    vars: mutate::Vars,
}

/// What a router-made local reply adds to the connection manager's.
#[derive(Default, Clone, Copy)]
struct ReplyExtras<'a> {
    /// `location` (redirects, 201/3xx direct responses).
    location: Option<&'a [u8]>,
    route: Option<&'a RouteHeaders<'a>>,
    /// `x-envoy-overloaded: true` (circuit-breaker overflow).
    overloaded: bool,
}

/// `append_x_forwarded_host`: the replaced Host joins `x-forwarded-host`
/// unless it is already its last entry.
fn append_forwarded_host(headers: &mut http1::Headers, host: &[u8]) {
    let Some(existing) = headers.get(WellKnown::XForwardedHost) else {
        headers.append(WellKnown::XForwardedHost, host);
        return;
    };
    let last = existing.rsplit(|b| *b == b',').next().unwrap_or(b"").trim_ascii();
    if last == host {
        return;
    }
    let mut joined = existing.to_vec();
    joined.push(b',');
    joined.extend_from_slice(host);
    headers.set(WellKnown::XForwardedHost, &joined);
}

enum HeadOutcome {
    Ready(usize),
    Closed,
    Idle,
    /// Nothing arrived for `PARK_IDLE_AFTER`; carries the idle deadline.
    Park(Option<Instant>),
    Failed(u16, String),
}

enum Fill {
    Read(usize),
    Full,
    Error,
    TimedOut,
    Draining,
    Park,
}

struct Done {
    status: u16,
    upstream_reusable: bool,
    downstream_keeps: bool,
}

enum ExchangeError {
    /// The downstream client went away or sent garbage mid-exchange.
    Downstream,
    BadRequestBody(H1Error),
    UpstreamReset {
        response_started: bool,
        body_consumed: bool,
    },
    BadResponse {
        response_started: bool,
        _error: H1Error,
    },
    Timeout {
        response_started: bool,
        /// The attempt's `per_try_timeout` (else the route timeout).
        per_try: bool,
    },
    /// The response head was judged retriable and dropped unread.
    RetryResponse {
        status: u16,
    },
    /// `request_timeout` or `stream_idle_timeout` (Envoy answers both 408).
    RequestTimeout {
        idle: bool,
    },
    /// The response was cut after it started; the client sees a short body.
    ResponseCut,
}

enum BodyError {
    Downstream,
    Upstream,
    Malformed(H1Error),
}

enum RelayError {
    /// The retry check claimed the response: nothing was written.
    Retry(u16),
    Upstream,
    Downstream,
    Bad(H1Error),
}

/// Forwards the request body, re-framed for the upstream.
#[allow(clippy::too_many_arguments)]
async fn pump_request_body(
    down: &Conn,
    buf: &mut RecvBuf,
    mut decoder: BodyDecoder,
    up: &Conn,
    chunked: bool,
    forward_trailers: bool,
    consumed: &Cell<bool>,
    rx_bytes: &Cell<u64>,
    activity: &Cell<Instant>,
) -> Result<(), BodyError> {
    let mut frame = ScratchBuf::take();
    loop {
        if decoder.is_done() {
            return Ok(());
        }
        let (n, event) = decoder.decode(buf.filled()).map_err(BodyError::Malformed)?;
        match event {
            Decoded::Data(data) => {
                consumed.set(true);
                let res = if chunked {
                    frame.clear();
                    encode_chunk_header(data.len(), &mut frame);
                    up.write_all_vectored(&[&frame, data, b"\r\n"]).await
                } else {
                    up.write_all(data).await
                };
                res.map_err(|_| BodyError::Upstream)?;
                buf.consume(n);
            }
            Decoded::End { trailers } => {
                if chunked {
                    frame.clear();
                    encode_last_chunk(if forward_trailers { trailers } else { b"" }, &mut frame);
                    up.write_all(&frame).await.map_err(|_| BodyError::Upstream)?;
                }
                buf.consume(n);
                return Ok(());
            }
            Decoded::NeedMore => {
                buf.consume(n);
                match buf.fill_from(down).await {
                    Ok(0) | Err(_) => return Err(BodyError::Downstream),
                    Ok(r) => {
                        rx_bytes.set(rx_bytes.get() + r as u64);
                        activity.set(now());
                    }
                }
            }
        }
    }
}

struct RelayArgs<'a> {
    up: &'a Conn,
    ubuf: &'a mut RecvBuf,
    head: &'a mut ResponseHead,
    down: &'a Conn,
    method: Method,
    client_version: Version,
    is_head: bool,
    client_keeps: bool,
    ctx: &'a ShardCtx,
    listener: &'a HttpListener,
    cluster: &'a ClusterRuntime,
    started: &'a Cell<bool>,
    tx_bytes: &'a Cell<u64>,
    forward_trailers: bool,
    /// Last time bytes moved, for `stream_idle_timeout`.
    activity: &'a Cell<Instant>,
    /// Generated hash-policy cookies (Envoy's router adds them to the
    /// upstream response's headers).
    set_cookies: &'a [String],
    /// The route's response header mutations, with the request they may read.
    mutations: Option<(&'a mutate::Levels<'a>, mutate::Vars, &'a RequestHead)>,
    scratch: &'a mut mutate::Scratch,
    /// `x-ratelimit-*` from the local rate limit filter.
    x_ratelimit: Option<local_ratelimit::XRateLimit>,
    /// The retry policy's look at the response head before it is relayed.
    retry_check: Option<&'a mut attempts::RetryCheck<'a>>,
    /// `x-envoy-attempt-count` to add to the response.
    attempt_count: Option<u32>,
}

/// Reads the upstream response and streams it to the client.
async fn relay_response(a: RelayArgs<'_>) -> Result<Done, RelayError> {
    let limits = http1::Limits { max_request_line: 8192, max_head_bytes: UPSTREAM_HEAD_LIMIT, max_headers: 200 };
    let ubuf = a.ubuf;
    let head = a.head;
    head.clear();
    let cluster_stats = &a.cluster.stats;
    // Interim 1xx responses are consumed here: the gateway already answered
    // `Expect` itself, and 101 needs upgrade support this listener lacks.
    let consumed = loop {
        match parse_response_head(ubuf.filled(), &limits, head) {
            Ok(Some(n)) if (100..200).contains(&head.status) && head.status != 101 => {
                ubuf.consume(n);
                head.clear();
                continue;
            }
            Ok(Some(_)) if head.status == 101 => {
                return Err(RelayError::Bad(H1Error::BadUpstreamResponse("unexpected 101")))
            }
            Ok(Some(n)) => break n,
            Ok(None) => {}
            Err(e) => return Err(RelayError::Bad(e)),
        }
        match fill_from_upstream(ubuf, a.up, cluster_stats, a.activity).await {
            Ok(0) => return Err(RelayError::Upstream),
            Ok(_) => {}
            Err(e) if e.kind() == buf::BUFFER_FULL => return Err(RelayError::Bad(H1Error::HeadTooLarge)),
            Err(_) => return Err(RelayError::Upstream),
        }
    };
    if let Some(check) = a.retry_check {
        if check(head.status, &head.headers) {
            return Err(RelayError::Retry(head.status));
        }
    }
    ubuf.consume(consumed);
    let kind = response_body_kind_for(a.method, head).map_err(RelayError::Bad)?;
    let upstream_directives = strip_hop_by_hop(&mut head.headers);
    let upstream_keeps = upstream_directives.persistent(head.version) && kind != BodyKind::CloseDelimited;
    if let Some((levels, vars, request)) = a.mutations {
        let vars = mutate::Vars { upstream: Some(a.up.peer_addr()), ..vars };
        HEAD_SCRATCH.with_borrow_mut(|length| {
            length.clear();
            let had_length = match head.headers.get(WellKnown::ContentLength) {
                Some(v) => {
                    length.extend_from_slice(v);
                    true
                }
                None => false,
            };
            mutate::apply_to_response(levels, &mut head.headers, request, &vars, a.scratch);
            // The body is framed by the gateway, whatever a mutation says.
            head.headers.remove_all(GATEWAY_FRAMING);
            if had_length {
                head.headers.append(WellKnown::ContentLength, length);
            }
        });
    }
    // How the body is framed towards the client (RFC 9112 §6.1, §6.3).
    let (down_chunked, mut downstream_keeps) = match kind {
        BodyKind::Chunked => (a.client_version == Version::Http11, a.client_keeps),
        BodyKind::CloseDelimited if a.client_version == Version::Http11 => (true, a.client_keeps),
        BodyKind::CloseDelimited => (false, false),
        BodyKind::Length(_) | BodyKind::Empty => (false, a.client_keeps),
    };
    if a.client_version == Version::Http10 && kind == BodyKind::Chunked {
        // An HTTP/1.0 client cannot read chunked: delimit by close instead.
        downstream_keeps = false;
    }
    // Draining, or the listener was removed while this request was in
    // flight: `Connection: close` on this response, then the connection ends.
    if a.ctx.draining() || a.ctx.listener_removed(&a.listener.config.name) {
        downstream_keeps = false;
    }
    let h = &mut head.headers;
    if down_chunked {
        h.remove(WellKnown::ContentLength);
        h.append(WellKnown::TransferEncoding, b"chunked");
    }
    let server_name = a.listener.hcm.server_name.as_bytes();
    match a.listener.hcm.server_header_transformation {
        ServerHeaderTransformation::Overwrite => h.set(WellKnown::Server, server_name),
        ServerHeaderTransformation::AppendIfAbsent if !h.contains(WellKnown::Server) => {
            h.append(WellKnown::Server, server_name)
        }
        _ => {}
    }
    if !h.contains(WellKnown::Date) {
        h.append(WellKnown::Date, &a.ctx.http_date());
    }
    for cookie in a.set_cookies {
        h.append("set-cookie", cookie.as_bytes());
    }
    if let Some(x) = a.x_ratelimit {
        x.append_to(h);
    }
    if let Some(n) = a.attempt_count {
        h.set(WellKnown::XEnvoyAttemptCount, itoa::Buffer::new().format(n).as_bytes());
    }
    if !downstream_keeps {
        h.append(WellKnown::Connection, b"close");
    } else if a.client_version == Version::Http10 {
        h.append(WellKnown::Connection, b"keep-alive");
    }
    let status = head.status;
    let mut out = ScratchBuf::take();
    encode_response_head(status, head.reason(), &head.headers, &mut out);
    a.started.set(true);
    let mut decoder = BodyDecoder::with_limits(kind, &limits);
    let body_writes_allowed = !a.is_head;
    // The head goes out together with whatever body bytes already arrived;
    // after its first write this slice is empty.
    let mut head_bytes: &[u8] = &out;
    // Allocates only when the body is chunked.
    let mut frame = Vec::new();
    // The head waits for a small fixed-length body (POSTPONE_OUTPUT).
    // Streamed bodies (chunked, close-delimited) are relayed as they come:
    // their pieces may be messages a client acts on.
    if let BodyKind::Length(body_len) = kind {
        while body_writes_allowed && (ubuf.len() as u64) < body_len && out.len() + ubuf.len() < POSTPONE_OUTPUT {
            match fill_from_upstream(ubuf, a.up, cluster_stats, a.activity).await {
                // The decoder reports the short body.
                Ok(0) => break,
                Ok(_) => {}
                Err(_) => return Err(RelayError::Upstream),
            }
        }
    }
    loop {
        let (n, event) = match decoder.decode(ubuf.filled()) {
            Ok(r) => r,
            Err(e) => return Err(if e == H1Error::IncompleteBody { RelayError::Upstream } else { RelayError::Bad(e) }),
        };
        match event {
            Decoded::Data(data) if body_writes_allowed => {
                frame.clear();
                if down_chunked {
                    encode_chunk_header(data.len(), &mut frame);
                }
                let tail: &[u8] = if down_chunked { b"\r\n" } else { b"" };
                a.down
                    .write_all_vectored(&[head_bytes, &frame, data, tail])
                    .await
                    .map_err(|_| RelayError::Downstream)?;
                a.tx_bytes.set(a.tx_bytes.get() + (head_bytes.len() + frame.len() + data.len() + tail.len()) as u64);
                head_bytes = &[];
                ubuf.consume(n);
            }
            Decoded::Data(_) => ubuf.consume(n),
            Decoded::End { trailers } => {
                frame.clear();
                if down_chunked && body_writes_allowed {
                    encode_last_chunk(if a.forward_trailers { trailers } else { b"" }, &mut frame);
                }
                a.down.write_all_vectored(&[head_bytes, &frame]).await.map_err(|_| RelayError::Downstream)?;
                a.tx_bytes.set(a.tx_bytes.get() + (head_bytes.len() + frame.len()) as u64);
                ubuf.consume(n);
                // Bytes after the response on a keep-alive connection mean
                // the upstream is out of step; never reuse it then.
                let upstream_reusable = upstream_keeps && ubuf.is_empty();
                return Ok(Done { status, upstream_reusable, downstream_keeps });
            }
            Decoded::NeedMore => {
                ubuf.consume(n);
                if !head_bytes.is_empty() {
                    a.down.write_all(head_bytes).await.map_err(|_| RelayError::Downstream)?;
                    a.tx_bytes.set(a.tx_bytes.get() + head_bytes.len() as u64);
                    head_bytes = &[];
                }
                match fill_from_upstream(ubuf, a.up, cluster_stats, a.activity).await {
                    Ok(0) => {
                        decoder.decode_eof().map_err(|_| RelayError::Upstream)?;
                    }
                    Ok(_) => {}
                    Err(_) => return Err(RelayError::Upstream),
                }
            }
        }
    }
}

/// One read from the upstream into `ubuf`, counted in the cluster's received
/// bytes and as stream activity (`stream_idle_timeout`).
async fn fill_from_upstream(
    ubuf: &mut RecvBuf,
    up: &Conn,
    stats: &crate::stats::ClusterStats,
    activity: &Cell<Instant>,
) -> io::Result<usize> {
    let n = ubuf.fill_from(up).await?;
    if n > 0 {
        stats.upstream_cx_rx_bytes_total.add(n as u64);
        activity.set(now());
    }
    Ok(n)
}

/// Longest textual IPv6 address ("ffff:...:255.255.255.255" is 45 bytes).
pub const IP_TEXT_MAX: usize = 48;

thread_local! {
    /// Shard-wide scratch for synchronous head edits (an `x-forwarded-for`
    /// join, a header value copied before the map is mutated).  Shared by all
    /// connections of the shard instead of one buffer per connection, so idle
    /// connections hold none; taken and put back (or borrowed) only between
    /// two `.await`s.
    static HEAD_SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(256));
    /// Shard-wide scratch for a rewritten request target.
    static REWRITE_SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(256));
}

/// An address as `x-forwarded-for` carries it (IPv4-mapped IPv6 shown as
/// IPv4), formatted into `buf` without allocating.
pub fn ip_text(ip: IpAddr, buf: &mut [u8; IP_TEXT_MAX]) -> &[u8] {
    use std::io::Write as _;
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    let written = match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => write!(cursor, "{v4}"),
            None => write!(cursor, "{v6}"),
        },
        IpAddr::V4(v4) => write!(cursor, "{v4}"),
    };
    debug_assert!(written.is_ok(), "IP_TEXT_MAX holds any address");
    let len = cursor.position() as usize;
    &buf[..len]
}

fn error_body(e: &H1Error) -> String {
    e.to_string()
}
