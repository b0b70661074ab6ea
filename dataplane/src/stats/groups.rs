//! Grouped stat handles with Envoy's leaf names.
//!
//! A shard builds one `HttpStats` per HTTP connection manager, one
//! `ClusterStats` per cluster and one `ListenerStats` per listener when it
//! picks up a configuration snapshot, and keeps them next to the objects they
//! describe; the request path then only touches fields.  The field name *is*
//! the leaf name (`stringify!`), so a field cannot drift from the stat Envoy
//! users grep for.  Only the stats some part of meshgate can produce are
//! listed; adding one is adding a field.
//!
//! This file owns the names, not the counting: which event bumps which stat is
//! decided by the code that sees the event.

use std::sync::Arc;

use super::{Counter, CounterCell, Gauge, GaugeCell, Histogram, Scope, StatsStore};

macro_rules! stat_group {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            counters: [$($c:ident),* $(,)?],
            gauges: [$($g:ident),* $(,)?],
            histograms: [$($h:ident),* $(,)?] $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug)]
        pub struct $name {
            $(pub $c: Counter,)*
            $(pub $g: Gauge,)*
            $(pub $h: Histogram,)*
        }

        impl $name {
            /// Every leaf name in this group.
            pub const LEAVES: &'static [&'static str] =
                &[$(stringify!($c),)* $(stringify!($g),)* $(stringify!($h),)*];

            fn register(store: &StatsStore, scope: &Scope, slot: usize) -> Self {
                $name {
                    $($c: store.counter(scope, stringify!($c), slot),)*
                    $($g: store.gauge(scope, stringify!($g), slot),)*
                    $($h: store.histogram(scope, stringify!($h), slot),)*
                }
            }
        }
    };
}

stat_group! {
    /// `http.<stat_prefix>.*`: the HTTP connection manager's stats, plus the
    /// router filter's (`no_route`, `no_cluster`, `rq_direct_response`, …),
    /// which Envoy also keeps under `http.<stat_prefix>.`.
    pub struct HttpStats {
        counters: [
            downstream_cx_total,
            downstream_cx_http1_total,
            downstream_cx_http2_total,
            downstream_cx_destroy,
            downstream_cx_destroy_local,
            downstream_cx_destroy_remote,
            downstream_cx_destroy_active_rq,
            downstream_cx_destroy_local_active_rq,
            downstream_cx_destroy_remote_active_rq,
            downstream_cx_protocol_error,
            downstream_cx_rx_bytes_total,
            downstream_cx_tx_bytes_total,
            downstream_cx_idle_timeout,
            downstream_cx_drain_close,
            downstream_rq_total,
            downstream_rq_http1_total,
            downstream_rq_http2_total,
            downstream_rq_1xx,
            downstream_rq_2xx,
            downstream_rq_3xx,
            downstream_rq_4xx,
            downstream_rq_5xx,
            downstream_rq_completed,
            downstream_rq_timeout,
            downstream_rq_idle_timeout,
            downstream_rq_header_timeout,
            downstream_rq_rx_reset,
            downstream_rq_tx_reset,
            downstream_rq_too_large,
            downstream_rq_non_relative_path,
            downstream_rq_response_before_rq_complete,
            no_route,
            no_cluster,
            rq_direct_response,
            rq_redirect,
            rq_total,
        ],
        gauges: [
            downstream_cx_active,
            downstream_cx_http1_active,
            downstream_cx_http2_active,
            downstream_rq_active,
        ],
        histograms: [
            downstream_cx_length_ms,
            downstream_rq_time,
        ],
    }
}

impl HttpStats {
    pub fn new(store: &StatsStore, stat_prefix: &str, slot: usize) -> Self {
        Self::register(store, &Scope::Http(stat_prefix.to_string()), slot)
    }

    /// Bumps `downstream_rq_<N>xx` for the response's class.  Completion
    /// (`downstream_rq_completed`) is counted separately, by whoever knows the
    /// stream finished.
    #[inline]
    pub fn record_response_code(&self, status: u16) {
        match status / 100 {
            1 => self.downstream_rq_1xx.inc(),
            2 => self.downstream_rq_2xx.inc(),
            3 => self.downstream_rq_3xx.inc(),
            4 => self.downstream_rq_4xx.inc(),
            5 => self.downstream_rq_5xx.inc(),
            _ => {}
        }
    }
}

stat_group! {
    /// `cluster.<name>.*`.  The membership gauges describe the cluster, not a
    /// shard's share of it, so they are bound to the control slot whatever
    /// slot the rest of the group uses: writers `set()` them (idempotent), and
    /// several shards setting the same number leave it right.
    pub struct ClusterStats {
        counters: [
            upstream_cx_total,
            upstream_cx_http1_total,
            upstream_cx_http2_total,
            upstream_cx_connect_fail,
            upstream_cx_connect_timeout,
            upstream_cx_destroy,
            upstream_cx_destroy_local,
            upstream_cx_destroy_remote,
            upstream_cx_destroy_with_active_rq,
            upstream_cx_rx_bytes_total,
            upstream_cx_tx_bytes_total,
            upstream_cx_protocol_error,
            upstream_cx_idle_timeout,
            upstream_cx_max_requests,
            upstream_cx_none_healthy,
            upstream_cx_close_notify,
            upstream_rq_total,
            upstream_rq_completed,
            upstream_rq_1xx,
            upstream_rq_2xx,
            upstream_rq_3xx,
            upstream_rq_4xx,
            upstream_rq_5xx,
            upstream_rq_timeout,
            upstream_rq_rx_reset,
            upstream_rq_tx_reset,
            upstream_rq_pending_total,
            upstream_rq_pending_overflow,
            upstream_rq_cancelled,
            upstream_rq_retry,
            upstream_rq_retry_success,
            upstream_rq_retry_overflow,
            membership_change,
            update_attempt,
            update_success,
            update_failure,
            update_empty,
        ],
        gauges: [
            upstream_cx_active,
            upstream_rq_active,
            upstream_rq_pending_active,
            membership_total,
            membership_healthy,
            membership_degraded,
        ],
        histograms: [
            upstream_cx_connect_ms,
            upstream_cx_length_ms,
            upstream_rq_time,
        ],
    }
}

impl ClusterStats {
    pub fn new(store: &StatsStore, cluster: &str, slot: usize) -> Self {
        let scope = Scope::Cluster(cluster.to_string());
        let mut s = Self::register(store, &scope, slot);
        let control = store.control_slot();
        s.membership_total = store.gauge(&scope, "membership_total", control);
        s.membership_healthy = store.gauge(&scope, "membership_healthy", control);
        s.membership_degraded = store.gauge(&scope, "membership_degraded", control);
        s
    }

    /// Bumps `upstream_rq_<N>xx` for the upstream response's class.
    #[inline]
    pub fn record_response_code(&self, status: u16) {
        match status / 100 {
            1 => self.upstream_rq_1xx.inc(),
            2 => self.upstream_rq_2xx.inc(),
            3 => self.upstream_rq_3xx.inc(),
            4 => self.upstream_rq_4xx.inc(),
            5 => self.upstream_rq_5xx.inc(),
            _ => {}
        }
    }
}

stat_group! {
    /// `listener.<address>.*`.
    pub struct ListenerStats {
        counters: [
            downstream_cx_total,
            downstream_cx_destroy,
            downstream_cx_overflow,
            no_filter_chain_match,
        ],
        gauges: [
            downstream_cx_active,
        ],
        histograms: [
            downstream_cx_length_ms,
        ],
    }
}

impl ListenerStats {
    /// `address_name` is Envoy's spelling (`0.0.0.0_10000`); see
    /// `ListenerStats::for_address` to derive it from a `SocketAddr`.
    pub fn new(store: &StatsStore, address_name: &str, slot: usize) -> Self {
        Self::register(store, &Scope::Listener(address_name.to_string()), slot)
    }

    pub fn for_address(store: &StatsStore, addr: &std::net::SocketAddr, slot: usize) -> Self {
        Self::register(store, &Scope::listener(addr), slot)
    }
}

stat_group! {
    /// `server.*`, always on the control slot.  `state` is 0 LIVE, 1
    /// DRAINING (Envoy's `ServerInfo.State` numbering); the admin server
    /// refreshes `live`, `state`, `uptime` and `total_connections` before each
    /// scrape, so nobody has to tick them.
    pub struct ServerStats {
        counters: [],
        gauges: [
            live,
            uptime,
            concurrency,
            state,
            total_connections,
            hot_restart_epoch,
            version,
        ],
        histograms: [],
    }
}

impl ServerStats {
    pub fn new(store: &StatsStore) -> Self {
        Self::register(store, &Scope::Server, store.control_slot())
    }
}

/// Storage behind `HostStats` (one per cluster member, see
/// `StatsStore::register_host`).
pub(super) struct HostCells {
    cx_total: Arc<CounterCell>,
    cx_active: Arc<GaugeCell>,
    cx_connect_fail: Arc<CounterCell>,
    rq_total: Arc<CounterCell>,
    rq_active: Arc<GaugeCell>,
    rq_error: Arc<CounterCell>,
    rq_success: Arc<CounterCell>,
    rq_timeout: Arc<CounterCell>,
}

impl HostCells {
    pub(super) fn new(slots: usize) -> Self {
        let c = || Arc::new(CounterCell::new(slots));
        let g = || Arc::new(GaugeCell::new(slots));
        HostCells {
            cx_total: c(),
            cx_active: g(),
            cx_connect_fail: c(),
            rq_total: c(),
            rq_active: g(),
            rq_error: c(),
            rq_success: c(),
            rq_timeout: c(),
        }
    }

    /// `(name, value, is_gauge)` in the order Envoy prints them.
    pub(super) fn values(&self) -> Vec<(&'static str, u64, bool)> {
        let g = |c: &GaugeCell| c.sum().max(0) as u64;
        vec![
            ("cx_active", g(&self.cx_active), true),
            ("cx_connect_fail", self.cx_connect_fail.sum(), false),
            ("cx_total", self.cx_total.sum(), false),
            ("rq_active", g(&self.rq_active), true),
            ("rq_error", self.rq_error.sum(), false),
            ("rq_success", self.rq_success.sum(), false),
            ("rq_timeout", self.rq_timeout.sum(), false),
            ("rq_total", self.rq_total.sum(), false),
        ]
    }
}

/// Per-host counters, shown in `/clusters` only (Envoy keeps them out of
/// `/stats` too: there can be thousands of hosts).
#[derive(Clone, Debug)]
pub struct HostStats {
    pub cx_total: Counter,
    pub cx_active: Gauge,
    pub cx_connect_fail: Counter,
    pub rq_total: Counter,
    pub rq_active: Gauge,
    pub rq_error: Counter,
    pub rq_success: Counter,
    pub rq_timeout: Counter,
}

impl HostStats {
    pub(super) fn bind(cells: &HostCells, slot: usize, shared: bool) -> Self {
        let c = |cell: &Arc<CounterCell>| Counter { cell: cell.clone(), slot, shared };
        let g = |cell: &Arc<GaugeCell>| Gauge { cell: cell.clone(), slot, shared };
        HostStats {
            cx_total: c(&cells.cx_total),
            cx_active: g(&cells.cx_active),
            cx_connect_fail: c(&cells.cx_connect_fail),
            rq_total: c(&cells.rq_total),
            rq_active: g(&cells.rq_active),
            rq_error: c(&cells.rq_error),
            rq_success: c(&cells.rq_success),
            rq_timeout: c(&cells.rq_timeout),
        }
    }
}
