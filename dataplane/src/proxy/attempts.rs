//! The router's upstream attempts for one request: host pick, connection,
//! exchange — repeated under the route's retry policy.
//!
//! It owns the loop around the single exchange: when a retry policy (or an
//! internal request's `x-envoy-retry-on`) applies, it buffers a request body
//! of known length up to the buffer limit so it can be replayed, asks
//! `upstream::retry::RetryState` after every attempt whether to go again,
//! waits the back-off (never past the route timeout), and picks the next
//! host with the `previous_hosts` predicate.  A retriable response head is
//! judged before a byte of it reaches the client.  The exchange itself
//! (framing, pumps, relay) stays in `proxy/mod.rs`; retry arithmetic stays
//! in `upstream::retry`.
//!
//! Timeouts (Envoy's router): the route `timeout` starts when the whole
//! request has been received and bounds every attempt and back-off
//! together (`upstream_rq_timeout`, 504); `per_try_timeout` bounds one
//! attempt (`upstream_rq_per_try_timeout`, retriable, 504 when it is the
//! last word).

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::http1::{BodyKind, Headers};
use crate::runtime::{now, sleep_until, timeout};
use crate::upstream::circuit_breaker::Guard;
use crate::upstream::retry::{Decision, Failure, RetryState};
use crate::upstream::{lb, ClusterRuntime, ConnectFailure, Host, Picked};

use super::{After, Downstream, Exchange, ExchangeError, ReplyExtras};

/// The retry side of one request, set up by the router.
pub(super) struct RetrySetup {
    pub state: Option<RetryState>,
    /// `per_request_buffer_limit_bytes` in effect.
    pub buffer_limit: u64,
    /// `include_request_attempt_count`.
    pub attempt_count_upstream: bool,
    /// `include_attempt_count_in_response`.
    pub attempt_count_downstream: bool,
    /// The effective `per_try_timeout`.
    pub per_try_timeout: Option<Duration>,
    /// The circuit-breaker unit of the retry in progress (`max_retries`).
    pub outstanding: Option<Guard>,
}

/// The retry policy's look at a response head (status, headers).
pub(super) type RetryCheck<'b> = dyn FnMut(u16, &Headers) -> bool + 'b;

/// What one attempt's exchange is told beyond the `Exchange`.
pub(super) struct AttemptCtl<'b> {
    /// The request body, buffered for replay (written after the head).
    pub body: Option<&'b [u8]>,
    /// Judges a response head before it is relayed: `true` means "drop it,
    /// this request will be retried".
    pub retry_check: Option<&'b mut RetryCheck<'b>>,
    /// `x-envoy-attempt-count` for the response.
    pub attempt_count: Option<u32>,
    pub per_try_timeout: Option<Duration>,
}

/// How one attempt ended, for the loop.
enum AttemptEnd {
    /// A response was relayed (or the request ended for good).
    Done(After),
    /// Nothing reached the client; try again after this back-off.
    Retry(Duration),
}

impl<'a> Downstream<'a> {
    /// `ex` and `retry` are borrowed, not moved, into this future: at ~500
    /// bytes together, moving them cost a memcpy into cold lines on every
    /// request.
    pub(super) async fn forward(&mut self, ex: &mut Exchange<'_>, retry: &mut RetrySetup) -> After {
        let listener = ex.listener;
        let routed = ex.cluster;
        // A body of known length within the limit is buffered so it can be
        // replayed; anything else streams once and disables retries.
        let mut body: Option<Vec<u8>> = None;
        if let Some(state) = retry.state.as_mut() {
            match ex.body_kind {
                BodyKind::Empty | BodyKind::Length(0) => {}
                BodyKind::Length(n) if n <= retry.buffer_limit => match self.buffer_body(ex, n).await {
                    Ok(b) => body = Some(b),
                    Err(after) => return after,
                },
                _ => {
                    state.disable();
                    routed.retry_stats.retry_or_shadow_abandoned.inc();
                }
            }
        }
        if body.is_some() || matches!(ex.body_kind, BodyKind::Empty | BodyKind::Length(0)) {
            // The request is complete: the route timeout starts now.
            ex.global_deadline.set(ex.route_timeout.map(|t| now() + t));
        }
        // Only the previous_hosts predicate reads it, so only then is it kept
        // (a push would allocate on every request with a retry policy).
        let avoid_previous = retry.state.as_ref().and_then(|s| s.policy()).is_some_and(|p| p.previous_hosts);
        let mut tried: Vec<SocketAddr> = Vec::new();
        let mut hashed: Option<Option<u64>> = None;
        let mut first = true;
        let mut attempts: u32 = 0;
        // The head as built for the first attempt, without its final CRLF,
        // so later attempts only rewrite `x-envoy-attempt-count`.
        let mut base_head: Vec<u8> = Vec::new();
        loop {
            attempts += 1;
            let (picked, cookies) = self.pick_host(ex, retry, &tried, &mut hashed, first);
            if first {
                ex.set_cookies = cookies;
            }
            let Some(picked) = picked else {
                routed.stats.upstream_cx_none_healthy.inc();
                let route = ex.routing.reply_headers();
                let extras = ReplyExtras { location: None, route: route.as_ref(), ..Default::default() };
                return self
                    .reply_and_settle_with(listener, ex.body_kind, ex.client_keeps, 503, b"no healthy upstream", extras)
                    .await;
            };
            if avoid_previous {
                tried.push(picked.host.addr);
            }
            if first {
                self.build_upstream_head(ex, &picked.host);
                if retry.attempt_count_upstream {
                    base_head = self.out[..self.out.len() - 2].to_vec();
                }
                first = false;
            }
            if retry.attempt_count_upstream {
                self.out.clear();
                self.out.extend_from_slice(&base_head);
                self.out.extend_from_slice(b"x-envoy-attempt-count: ");
                self.out.extend_from_slice(itoa::Buffer::new().format(attempts).as_bytes());
                self.out.extend_from_slice(b"\r\n\r\n");
            }
            match self.attempt(ex, &picked, retry, body.as_deref(), attempts).await {
                AttemptEnd::Done(after) => return after,
                AttemptEnd::Retry(back_off) => {
                    let cluster = &picked.cluster;
                    cluster.stats.upstream_rq_retry.inc();
                    cluster.retry_stats.upstream_rq_retry_backoff_exponential.inc();
                    let deadline = ex.global_deadline.get();
                    let wake = now() + back_off;
                    if let Some(d) = deadline.filter(|d| *d <= wake) {
                        sleep_until(d).await;
                        return self.global_timeout(ex, cluster).await;
                    }
                    if !back_off.is_zero() {
                        sleep_until(wake).await;
                    }
                }
            }
        }
    }

    /// Picks the attempt's host; on retries with `previous_hosts`, re-picks
    /// up to `host_selection_retry_max_attempts` times to avoid hosts
    /// already tried, then takes the last pick anyway (Envoy's LB loop).
    fn pick_host(
        &mut self,
        ex: &Exchange<'_>,
        retry: &RetrySetup,
        tried: &[SocketAddr],
        hashed: &mut Option<Option<u64>>,
        first: bool,
    ) -> (Option<Picked>, Vec<String>) {
        let input = lb::HashInput { head: &self.head, peer: self.peer, local: self.stream.local_addr() };
        let mut cookies = Vec::new();
        let policy = retry.state.as_ref().and_then(|s| s.policy());
        let extra_picks = match policy {
            Some(p) if p.previous_hosts && !first => p.host_selection_retry_max_attempts,
            _ => 0,
        };
        let mut picked = None;
        for _ in 0..=extra_picks {
            // The hash is computed lazily: only a consistent-hashing cluster
            // asks, so a cookie is generated only when it decides the pick.
            let Some(p) = ex
                .cluster
                .pick(&mut || *hashed.get_or_insert_with(|| lb::request_hash(ex.hash_policy, &input, &mut cookies)))
            else {
                break;
            };
            let fresh = !tried.contains(&p.host.addr);
            picked = Some(p);
            if fresh {
                break;
            }
        }
        (picked, cookies)
    }

    /// One attempt: connection, exchange, and the retry decision.
    async fn attempt(
        &mut self,
        ex: &mut Exchange<'_>,
        picked: &Picked,
        retry: &mut RetrySetup,
        body: Option<&[u8]>,
        attempts: u32,
    ) -> AttemptEnd {
        // From here on the cluster that owns the host (an aggregate's member)
        // serves the request: its pool, timeouts and codec options.
        let cluster: &Rc<ClusterRuntime> = &picked.cluster;
        let host: &Rc<Host> = &picked.host;
        // `max_requests`: an overflow is answered at once, never retried.
        let _request = match cluster.admit_request() {
            Ok(g) => g,
            Err(f) => return AttemptEnd::Done(self.connect_failed(ex, f).await),
        };
        let mut upstream = match cluster.checkout_for(host, self.bridged).await {
            Ok(c) => c,
            Err(f @ ConnectFailure::Overflow) => return AttemptEnd::Done(self.connect_failed(ex, f).await),
            Err(f) => {
                cluster.host_failure(host);
                if let Some(b) = self.decide_failure(cluster, retry, Failure::ConnectFailure) {
                    return AttemptEnd::Retry(b);
                }
                return AttemptEnd::Done(self.connect_failed(ex, f).await);
            }
        };
        let active = ActiveRequest::start(cluster, host);
        let started = Instant::now();
        let retry_back_off: Cell<Option<Duration>> = Cell::new(None);
        let retry_guard: Cell<Option<Guard>> = Cell::new(None);
        let attempt_count = retry.attempt_count_downstream.then_some(attempts);
        let random = self.ctx.next_random();
        let mut result = {
            let mut check = |status: u16, headers: &Headers| -> bool {
                // The retry this attempt was (if any) ends with its response.
                retry.outstanding = None;
                let Some(state) = retry.state.as_mut() else { return false };
                match state.on_response(status, headers, random) {
                    Decision::Retry(b) => match cluster.admit_retry() {
                        Some(g) => {
                            retry_back_off.set(Some(b));
                            retry_guard.set(Some(g));
                            true
                        }
                        None => {
                            cluster.stats.upstream_rq_retry_overflow.inc();
                            false
                        }
                    },
                    Decision::LimitExceeded => {
                        cluster.retry_stats.upstream_rq_retry_limit_exceeded.inc();
                        false
                    }
                    Decision::NoRetry => {
                        if state.retries_done() > 0 {
                            cluster.stats.upstream_rq_retry_success.inc();
                        }
                        false
                    }
                }
            };
            let ctl = AttemptCtl {
                body,
                retry_check: Some(&mut check),
                attempt_count,
                per_try_timeout: retry.per_try_timeout,
            };
            self.exchange(ex, cluster, &mut upstream, ctl).await
        };
        // A pooled connection the upstream closed just before we used it
        // fails before any response byte.  Nothing reached the client and no
        // body was consumed, so one retry on a fresh connection is safe (this
        // is the connection pool's own retry, not the route's).
        if matches!(result, Err(ExchangeError::UpstreamReset { response_started: false, body_consumed: false }))
            && upstream.reused()
        {
            drop(upstream);
            upstream = match cluster.reconnect_for(host, self.bridged).await {
                Ok(c) => c,
                Err(f) => {
                    drop(active);
                    if let Some(b) = self.decide_failure(cluster, retry, Failure::ConnectFailure) {
                        return AttemptEnd::Retry(b);
                    }
                    return AttemptEnd::Done(self.connect_failed(ex, f).await);
                }
            };
            let ctl = AttemptCtl { body, retry_check: None, attempt_count, per_try_timeout: retry.per_try_timeout };
            result = self.exchange(ex, cluster, &mut upstream, ctl).await;
        }
        drop(active);
        let listener = ex.listener;
        match result {
            Ok(done) => {
                cluster.stats.upstream_rq_completed.inc();
                cluster.stats.record_response_code(done.status);
                cluster.stats.upstream_rq_time.record(started.elapsed());
                listener.stats.record_response_code(done.status);
                if done.status >= 500 {
                    host.stats.rq_error.inc();
                } else {
                    host.stats.rq_success.inc();
                }
                cluster.host_result(host, done.status);
                if done.upstream_reusable {
                    cluster.release(upstream);
                }
                AttemptEnd::Done(if done.downstream_keeps { After::KeepAlive } else { After::Close })
            }
            Err(ExchangeError::RetryResponse { status }) => {
                // The response head was judged retriable and dropped; the
                // connection goes with it (its body was never read).
                cluster.stats.upstream_rq_completed.inc();
                cluster.stats.record_response_code(status);
                host.stats.rq_error.inc();
                cluster.host_result(host, status);
                drop(upstream);
                retry.outstanding = retry_guard.take();
                AttemptEnd::Retry(retry_back_off.get().unwrap_or_default())
            }
            Err(err) => {
                host.stats.rq_error.inc();
                let refused = upstream.h2_reset() == Some(h2::Reason::REFUSED_STREAM);
                drop(upstream);
                let failure = match &err {
                    ExchangeError::Timeout { response_started: false, per_try: true } => {
                        cluster.retry_stats.upstream_rq_per_try_timeout.inc();
                        Some(Failure::PerTryTimeout)
                    }
                    ExchangeError::UpstreamReset { response_started: false, .. } if refused => {
                        Some(Failure::RefusedStream)
                    }
                    ExchangeError::UpstreamReset { response_started: false, .. }
                    | ExchangeError::BadResponse { response_started: false, .. } => Some(Failure::Reset),
                    _ => None,
                };
                if let Some(f) = failure {
                    cluster.host_failure(host);
                    if let Some(b) = self.decide_failure(cluster, retry, f) {
                        return AttemptEnd::Retry(b);
                    }
                }
                AttemptEnd::Done(self.exchange_failed(ex, cluster, err).await)
            }
        }
    }

    /// The retry decision for an attempt without a response; `Some` is the
    /// back-off of an admitted retry.
    fn decide_failure(&self, cluster: &ClusterRuntime, retry: &mut RetrySetup, f: Failure) -> Option<Duration> {
        // The retry this attempt was (if any) has ended.
        retry.outstanding = None;
        let state = retry.state.as_mut()?;
        match state.on_failure(f, self.ctx.next_random()) {
            Decision::Retry(b) => match cluster.admit_retry() {
                Some(g) => {
                    retry.outstanding = Some(g);
                    Some(b)
                }
                None => {
                    cluster.stats.upstream_rq_retry_overflow.inc();
                    None
                }
            },
            Decision::LimitExceeded => {
                cluster.retry_stats.upstream_rq_retry_limit_exceeded.inc();
                None
            }
            Decision::NoRetry => None,
        }
    }

    /// The route timeout expired between attempts.
    async fn global_timeout(&mut self, ex: &Exchange<'_>, cluster: &Rc<ClusterRuntime>) -> After {
        self.exchange_failed(ex, cluster, ExchangeError::Timeout { response_started: false, per_try: false }).await
    }

    /// Reads a request body of `length` bytes into memory (sending
    /// `100 Continue` first when the client waits for it).
    async fn buffer_body(&mut self, ex: &Exchange<'_>, length: u64) -> Result<Vec<u8>, After> {
        if ex.expect_continue
            && self.head.version == crate::http1::Version::Http11
            && self.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.is_err()
        {
            return Err(After::Close);
        }
        let mut body = Vec::with_capacity(length as usize);
        let idle = ex.idle_timeout;
        loop {
            let want = length as usize - body.len();
            let take = want.min(self.buf.len());
            body.extend_from_slice(&self.buf.filled()[..take]);
            self.buf.consume(take);
            if body.len() as u64 == length {
                return Ok(body);
            }
            match timeout(idle, self.buf.fill_from(&self.stream)).await {
                Ok(Ok(n)) if n > 0 => self.rx_bytes.set(self.rx_bytes.get() + n as u64),
                Ok(_) => {
                    ex.listener.stats.downstream_rq_rx_reset.inc();
                    return Err(After::Close);
                }
                Err(_) => {
                    ex.listener.stats.downstream_rq_idle_timeout.inc();
                    let _ = self.local_reply(ex.listener, 408, b"stream timeout", true).await;
                    return Err(After::Close);
                }
            }
        }
    }
}

/// One request in flight on a host: `upstream_rq_active` and the host's
/// active count (least-request balancing reads it) go back down however the
/// attempt ends — including when its future is dropped mid-exchange, as an
/// HTTP/2 stream's is when the client resets it.
pub(super) struct ActiveRequest<'a> {
    cluster: &'a ClusterRuntime,
    host: &'a Host,
}

impl<'a> ActiveRequest<'a> {
    pub(super) fn start(cluster: &'a ClusterRuntime, host: &'a Host) -> ActiveRequest<'a> {
        cluster.stats.upstream_rq_total.inc();
        cluster.stats.upstream_rq_active.inc();
        host.stats.rq_total.inc();
        host.request_started();
        ActiveRequest { cluster, host }
    }
}

impl Drop for ActiveRequest<'_> {
    fn drop(&mut self) {
        self.cluster.stats.upstream_rq_active.dec();
        self.host.request_finished();
    }
}
