//! HTTP/1.1 upgrades (RFC 9110 §7.8; WebSocket is RFC 6455 §4) through the
//! connection manager, per Envoy's `upgrade_configs` (HCM and route).
//!
//! It owns three decisions and one phase: whether a request is an upgrade
//! (a `Connection: upgrade` token plus an `Upgrade` header; `h2c` is not
//! one — Envoy's HTTP/1 codec strips h2c upgrade headers and serves the
//! request normally), whether this upgrade type is allowed (route entry,
//! else HCM entry, else refused with Envoy's `403` and
//! `downstream_rq_ws_on_non_ws_route`), and what to do with the upstream's
//! answer: a `101 Switching Protocols` turns both connections into a byte
//! tunnel (`tunnel::splice`, half-close both ways, the route's idle timeout
//! or the HCM's `stream_idle_timeout`); any other answer is relayed as a
//! normal response and the connection closes.
//!
//! It must not touch request admission, routing or the pooled-request
//! exchange: it is entered from `route_action` only for an allowed upgrade
//! whose route forwards, and reuses the connection manager's head building
//! and response relay.  An upgrade always opens a fresh upstream connection
//! (an upgraded connection never returns to the pool, and a reused one that
//! turns out closed could not be retried safely once bytes were tunnelled).

use std::cell::Cell;

use control::model::{Route, RouteAction, ServerHeaderTransformation, UpgradeConfig};

use super::*;
use crate::stats::{Counter, Gauge, Scope, StatsStore};
use crate::tunnel::{splice, TunnelEnd, TunnelObserver};
use crate::upstream::lb;

/// Per-direction tunnel buffer of an upgraded connection.
const TUNNEL_BUFFER: usize = 16 * 1024;

/// `http.<stat_prefix>.` upgrade stats, with Envoy's leaf names.
#[derive(Clone, Debug)]
pub struct UpgradeStats {
    pub downstream_cx_upgrades_total: Counter,
    pub downstream_cx_upgrades_active: Gauge,
    pub downstream_rq_ws_on_non_ws_route: Counter,
}

impl UpgradeStats {
    pub fn new(store: &StatsStore, stat_prefix: &str, slot: usize) -> UpgradeStats {
        let scope = Scope::Http(stat_prefix.to_string());
        UpgradeStats {
            downstream_cx_upgrades_total: store.counter(&scope, "downstream_cx_upgrades_total", slot),
            downstream_cx_upgrades_active: store.gauge(&scope, "downstream_cx_upgrades_active", slot),
            downstream_rq_ws_on_non_ws_route: store.counter(&scope, "downstream_rq_ws_on_non_ws_route", slot),
        }
    }
}

/// The `Upgrade` value of a request head, read before the hop-by-hop
/// fields are stripped (allocates only when the header is there).
pub(super) fn upgrade_header(head: &RequestHead) -> Option<Vec<u8>> {
    head.headers.get(WellKnown::Upgrade).map(<[u8]>::to_vec)
}

/// Decides, after the hop-by-hop fields were stripped, whether the request
/// is an upgrade: `Connection: upgrade` and an `Upgrade` header, except
/// `h2c`, which is served as a plain request (its `HTTP2-Settings` goes too).
pub(super) fn requested(head: &mut RequestHead, upgrade: Option<Vec<u8>>, connection_upgrade: bool) -> Option<Vec<u8>> {
    let value = upgrade.filter(|v| connection_upgrade && !v.trim_ascii().is_empty())?;
    if first_protocol(&value).eq_ignore_ascii_case(b"h2c") {
        head.headers.remove(WellKnown::Http2Settings);
        return None;
    }
    Some(value)
}

/// The protocol name an upgrade is configured by: the first listed
/// protocol, without a `/version` (`websocket`, `WebSocket/13` → `WebSocket`).
fn first_protocol(value: &[u8]) -> &[u8] {
    let first = value.split(|b| *b == b',').next().unwrap_or(b"").trim_ascii();
    first.split(|b| *b == b'/').next().unwrap_or(b"")
}

/// Envoy's decision (`createUpgradeFilterChain`): a route entry for the
/// type decides when present (disabled → refused, enabled → allowed even
/// without an HCM entry); otherwise the HCM entry's `enabled`; no entry at
/// all → refused.
pub fn upgrade_allowed(hcm: &[UpgradeConfig], route: &[UpgradeConfig], upgrade_type: &[u8]) -> bool {
    let find = |list: &[UpgradeConfig]| {
        list.iter().find(|c| c.upgrade_type.as_bytes().eq_ignore_ascii_case(upgrade_type)).map(|c| c.enabled)
    };
    match find(route) {
        Some(enabled) => enabled,
        None => find(hcm).unwrap_or(false),
    }
}

/// Whether the upgrade `value` may proceed on `route` (`None`: no route).
pub(super) fn allowed(listener: &HttpListener, route: Option<&Route>, value: &[u8]) -> bool {
    let route_configs = match route.map(|r| &r.action) {
        Some(RouteAction::Forward(a)) => a.upgrade_configs.as_slice(),
        _ => &[],
    };
    upgrade_allowed(&listener.hcm.upgrade_configs, route_configs, first_protocol(value))
}

/// Byte counters of the tunnel: `a` is the downstream, `b` the upstream.
struct TunnelBytes<'a> {
    rx: &'a Cell<u64>,
    tx: &'a Cell<u64>,
    upstream_tx: &'a Counter,
    upstream_rx: &'a Counter,
}

impl TunnelObserver for TunnelBytes<'_> {
    fn a_read(&self, n: usize) {
        self.rx.set(self.rx.get() + n as u64);
    }
    fn b_written(&self, n: usize) {
        self.upstream_tx.add(n as u64);
    }
    fn b_read(&self, n: usize) {
        self.upstream_rx.add(n as u64);
    }
    fn a_written(&self, n: usize) {
        self.tx.set(self.tx.get() + n as u64);
    }
}

impl Downstream<'_> {
    /// Forwards an allowed upgrade request (`self.upgrade` holds its
    /// `Upgrade` value) and, on `101`, tunnels until both sides are done.
    pub(super) async fn forward_upgrade(&mut self, ex: Exchange<'_>) -> After {
        let protocol = self.upgrade.take().unwrap_or_default();
        let listener = ex.listener;
        let routed = ex.cluster;
        let mut set_cookies = Vec::new();
        let picked = {
            let input = lb::HashInput { head: &self.head, peer: self.peer, local: self.stream.local_addr() };
            let mut hashed: Option<Option<u64>> = None;
            routed
                .pick(&mut || *hashed.get_or_insert_with(|| lb::request_hash(ex.hash_policy, &input, &mut set_cookies)))
        };
        let Some(picked) = picked else {
            routed.stats.upstream_cx_none_healthy.inc();
            let route = ex.routing.reply_headers();
            let extras = ReplyExtras { location: None, route: route.as_ref(), overloaded: false };
            return self
                .reply_and_settle_with(listener, ex.body_kind, false, 503, b"no healthy upstream", extras)
                .await;
        };
        let ex = Exchange { cluster: &picked.cluster, set_cookies, client_keeps: false, ..ex };
        let cluster = ex.cluster;
        let host = &picked.host;
        let mut upstream = match cluster.connect(host).await {
            Ok(c) => c,
            Err(f) => return self.connect_failed(&ex, f).await,
        };
        self.build_upstream_head(&ex, host);
        // The head ends with its empty line; the upgrade fields go before it.
        self.out.truncate(self.out.len() - 2);
        self.out.extend_from_slice(b"connection: upgrade\r\nupgrade: ");
        self.out.extend_from_slice(&protocol);
        self.out.extend_from_slice(b"\r\n\r\n");
        let _active = super::attempts::ActiveRequest::start(cluster, host);
        self.upgrade_exchange(&ex, &mut upstream).await
    }

    async fn upgrade_exchange(&mut self, ex: &Exchange<'_>, upstream: &mut UpstreamConn) -> After {
        let listener = ex.listener;
        let cluster = ex.cluster;
        let host = upstream.host.clone();
        let UpstreamConn { stream: up, buf: ubuf, head: uhead, .. } = upstream;
        let up = &*up;
        if up.write_all(&self.out).await.is_err() {
            host.stats.rq_error.inc();
            return self
                .exchange_failed(
                    ex,
                    ex.cluster,
                    ExchangeError::UpstreamReset { response_started: false, body_consumed: false },
                )
                .await;
        }
        cluster.stats.upstream_cx_tx_bytes_total.add(self.out.len() as u64);
        // The route timeout covers the wait for the upstream's answer, as for
        // any request; once switched, only the idle timeout applies.
        let limits = http1::Limits { max_request_line: 8192, max_head_bytes: UPSTREAM_HEAD_LIMIT, max_headers: 200 };
        let answer = timeout(ex.route_timeout, async {
            uhead.clear();
            loop {
                match parse_response_head(ubuf.filled(), &limits, uhead) {
                    Ok(Some(n)) => return Ok((n, uhead.status)),
                    Ok(None) => {}
                    Err(_) => return Err(true),
                }
                match ubuf.fill_from(up).await {
                    Ok(0) | Err(_) => return Err(false),
                    Ok(n) => cluster.stats.upstream_cx_rx_bytes_total.add(n as u64),
                }
            }
        })
        .await;
        let (head_len, status) = match answer {
            Ok(Ok(v)) => v,
            Ok(Err(bad)) => {
                host.stats.rq_error.inc();
                let err = if bad {
                    ExchangeError::BadResponse { response_started: false, _error: H1Error::HeadTooLarge }
                } else {
                    ExchangeError::UpstreamReset { response_started: false, body_consumed: false }
                };
                return self.exchange_failed(ex, ex.cluster, err).await;
            }
            Err(_) => {
                host.stats.rq_error.inc();
                return self
                    .exchange_failed(ex, ex.cluster, ExchangeError::Timeout { response_started: false, per_try: false })
                    .await;
            }
        };
        if status != 101 {
            // Refused (or answered) without switching: relay the answer as a
            // normal response, then close (the request may have carried
            // bytes meant for the new protocol).
            uhead.clear();
            return self.relay_refused_upgrade(ex, up, ubuf, uhead).await;
        }
        ubuf.consume(head_len);
        let switched_to = uhead.headers.get(WellKnown::Upgrade).map(<[u8]>::to_vec).unwrap_or_default();
        strip_hop_by_hop(&mut uhead.headers);
        if let (false, Some(vars)) = (ex.routing.response.is_empty(), ex.routing.vars) {
            let vars = mutate::Vars { upstream: Some(up.peer_addr()), ..vars };
            mutate::apply_to_response(&ex.routing.response, &mut uhead.headers, &self.head, &vars, &mut self.mutations);
            for name in ["transfer-encoding", "connection", "content-length", "upgrade"] {
                uhead.headers.remove(name);
            }
        }
        let h = &mut uhead.headers;
        let server_name = listener.hcm.server_name.as_bytes();
        match listener.hcm.server_header_transformation {
            ServerHeaderTransformation::Overwrite => h.set(WellKnown::Server, server_name),
            ServerHeaderTransformation::AppendIfAbsent if !h.contains(WellKnown::Server) => {
                h.append(WellKnown::Server, server_name)
            }
            _ => {}
        }
        if !h.contains(WellKnown::Date) {
            h.append(WellKnown::Date, &self.ctx.http_date());
        }
        for cookie in &ex.set_cookies {
            h.append("set-cookie", cookie.as_bytes());
        }
        h.append(WellKnown::Connection, b"upgrade");
        h.append(WellKnown::Upgrade, &switched_to);
        self.out.clear();
        encode_response_head(101, uhead.reason(), &uhead.headers, &mut self.out);
        if self.stream.write_all(&self.out).await.is_err() {
            cluster.stats.upstream_rq_cancelled.inc();
            listener.stats.downstream_rq_rx_reset.inc();
            return After::Close;
        }
        self.tx_bytes.set(self.tx_bytes.get() + self.out.len() as u64);
        listener.stats.record_response_code(101);
        cluster.stats.record_response_code(101);
        cluster.stats.upstream_rq_completed.inc();
        host.stats.rq_success.inc();

        let stats = &listener.upgrade_stats;
        stats.downstream_cx_upgrades_total.inc();
        stats.downstream_cx_upgrades_active.inc();
        let observer = TunnelBytes {
            rx: &self.rx_bytes,
            tx: &self.tx_bytes,
            upstream_tx: &cluster.stats.upstream_cx_tx_bytes_total,
            upstream_rx: &cluster.stats.upstream_cx_rx_bytes_total,
        };
        // Bytes the client sent after its request head (already read) go
        // first, as do bytes the upstream sent right after its 101.
        let early_down = self.buf.filled().to_vec();
        self.buf.consume(early_down.len());
        let (end, _) =
            splice(&self.stream, up, &early_down, ubuf.filled(), TUNNEL_BUFFER, ex.idle_timeout, &observer).await;
        let early_up = ubuf.filled().len();
        ubuf.consume(early_up);
        stats.downstream_cx_upgrades_active.dec();
        if end == TunnelEnd::IdleTimeout {
            listener.stats.downstream_rq_idle_timeout.inc();
        }
        After::Close
    }

    /// Relays a non-101 answer to an upgrade request with the connection
    /// manager's relay, then closes both connections.
    async fn relay_refused_upgrade(
        &mut self,
        ex: &Exchange<'_>,
        up: &Conn,
        ubuf: &mut RecvBuf,
        uhead: &mut ResponseHead,
    ) -> After {
        let started = Cell::new(false);
        let activity = Cell::new(now());
        let relay = relay_response(RelayArgs {
            up,
            ubuf,
            head: uhead,
            down: &self.stream,
            method: self.head.method,
            client_version: self.head.version,
            is_head: self.head.method == Method::Head,
            client_keeps: false,
            ctx: self.ctx,
            listener: ex.listener,
            cluster: ex.cluster,
            started: &started,
            tx_bytes: &self.tx_bytes,
            forward_trailers: ex.listener.hcm.enable_trailers && ex.cluster.config.enable_trailers,
            activity: &activity,
            set_cookies: &ex.set_cookies,
            mutations: ex
                .routing
                .vars
                .filter(|_| !ex.routing.response.is_empty())
                .map(|v| (&ex.routing.response, v, &self.head)),
            scratch: &mut self.mutations,
            x_ratelimit: self.x_ratelimit,
            retry_check: None,
            attempt_count: None,
        });
        let result = timeout(ex.idle_timeout, relay).await;
        match result {
            Ok(Ok(done)) => {
                ex.cluster.stats.upstream_rq_completed.inc();
                ex.cluster.stats.record_response_code(done.status);
                ex.listener.stats.record_response_code(done.status);
                After::Close
            }
            Ok(Err(_)) | Err(_) if started.get() => After::Close,
            // No retry check is installed for a refused upgrade's response.
            Ok(Err(RelayError::Downstream | RelayError::Retry(_))) => After::Close,
            Ok(Err(RelayError::Bad(e))) => {
                self.exchange_failed(ex, ex.cluster, ExchangeError::BadResponse { response_started: false, _error: e })
                    .await
            }
            Ok(Err(RelayError::Upstream)) => {
                let err = ExchangeError::UpstreamReset { response_started: false, body_consumed: true };
                self.exchange_failed(ex, ex.cluster, err).await
            }
            Err(_) => self.exchange_failed(ex, ex.cluster, ExchangeError::RequestTimeout { idle: true }).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(t: &str, enabled: bool) -> UpgradeConfig {
        UpgradeConfig { upgrade_type: t.to_string(), enabled }
    }

    /// Envoy's documented table (HCM × route) plus the unconfigured cases.
    #[test]
    fn route_entry_overrides_the_hcm_entry() {
        let ws = b"WebSocket";
        assert!(upgrade_allowed(&[cfg("websocket", true)], &[], ws));
        assert!(!upgrade_allowed(&[cfg("websocket", true)], &[cfg("websocket", false)], ws));
        assert!(upgrade_allowed(&[cfg("websocket", false)], &[cfg("websocket", true)], ws));
        assert!(!upgrade_allowed(&[cfg("websocket", false)], &[], ws));
        assert!(!upgrade_allowed(&[], &[], ws));
        assert!(upgrade_allowed(&[], &[cfg("websocket", true)], ws));
        assert!(!upgrade_allowed(&[cfg("websocket", true)], &[], b"h2c"));
    }

    #[test]
    fn the_first_listed_protocol_without_version_is_the_type() {
        assert_eq!(first_protocol(b"WebSocket"), b"WebSocket");
        assert_eq!(first_protocol(b" websocket/13 , foo"), b"websocket");
        assert_eq!(first_protocol(b""), b"");
    }
}
