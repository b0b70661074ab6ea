//! `envoy.filters.http.fault`: delays and aborts injected into a
//! configured share of requests, to test how callers cope.
//!
//! Follows Envoy's fault filter: a fault applies only to requests that
//! match every `headers` matcher and, when `downstream_nodes` is set, carry
//! an `x-envoy-downstream-service-node` naming one of them.  The delay
//! (`fixed_delay`, or with `header_delay` the milliseconds in
//! `x-envoy-fault-delay-request`) is injected with probability
//! `percentage`; then the abort (`http_status`, `grpc_status`, or with
//! `header_abort` the status in `x-envoy-fault-abort-request` /
//! `x-envoy-fault-abort-grpc-request`) with its own `percentage`.  For
//! header-controlled faults, `x-envoy-fault-delay-request-percentage` /
//! `x-envoy-fault-abort-request-percentage` replace the numerator, capped at
//! the configured one, over the configured denominator.  When
//! `max_active_faults` requests already have a fault (counted across all
//! shards: the gauge's shard slots summed), the request gets none and
//! `faults_overflow` counts it.  Stats: `http.<stat_prefix>.fault.{delays_injected,
//! aborts_injected,faults_overflow}` and the gauge `...fault.active_faults`.
//!
//! The decision is sans-IO ([`decide`]): random numbers and the active
//! count come in, a [`Plan`] goes out; the proxy sleeps and replies.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use control::model::{Fault, FaultAbortKind, FaultDelayKind, FractionalPercent, PerFilterConfig, RouteConfig};

use crate::http1::RequestHead;
use crate::matcher::HeaderMatcher;
use crate::router::Matched;
use crate::stats::{Counter, Gauge, Scope, StatsStore};

pub const FILTER_NAME: &str = "envoy.filters.http.fault";
/// Envoy's local reply body for an injected abort.
pub const ABORT_BODY: &str = "fault filter abort";

pub const DELAY_HEADER: &str = "x-envoy-fault-delay-request";
pub const DELAY_PERCENTAGE_HEADER: &str = "x-envoy-fault-delay-request-percentage";
pub const ABORT_HEADER: &str = "x-envoy-fault-abort-request";
pub const ABORT_GRPC_HEADER: &str = "x-envoy-fault-abort-grpc-request";
pub const ABORT_PERCENTAGE_HEADER: &str = "x-envoy-fault-abort-request-percentage";
pub const DOWNSTREAM_NODE_HEADER: &str = "x-envoy-downstream-service-node";

/// One fault config (the filter's own or a per-route override), compiled.
pub struct FaultConfig {
    pub config: Arc<Fault>,
    headers: Box<[HeaderMatcher]>,
}

impl FaultConfig {
    fn new(config: &Arc<Fault>) -> FaultConfig {
        FaultConfig { config: config.clone(), headers: config.headers.iter().map(HeaderMatcher::new).collect() }
    }
}

pub struct FaultStats {
    pub delays_injected: Counter,
    pub aborts_injected: Counter,
    pub faults_overflow: Counter,
    pub active_faults: Gauge,
}

/// One `envoy.filters.http.fault` of an HTTP connection manager.
pub struct HttpFault {
    own: FaultConfig,
    overrides: HashMap<usize, FaultConfig>,
    pub stats: FaultStats,
}

impl HttpFault {
    pub fn new(config: &Arc<Fault>, routes: &RouteConfig, stat_prefix: &str, store: &StatsStore, slot: usize) -> Self {
        let mut overrides = HashMap::new();
        for c in super::all_per_route_configs(routes, &config.name, FILTER_NAME) {
            if let PerFilterConfig::Fault(o) = c {
                overrides.entry(Arc::as_ptr(o) as usize).or_insert_with(|| FaultConfig::new(o));
            }
        }
        let scope = Scope::Http(stat_prefix.to_string());
        HttpFault {
            own: FaultConfig::new(config),
            overrides,
            stats: FaultStats {
                delays_injected: store.counter(&scope, "fault.delays_injected", slot),
                aborts_injected: store.counter(&scope, "fault.aborts_injected", slot),
                faults_overflow: store.counter(&scope, "fault.faults_overflow", slot),
                active_faults: store.gauge(&scope, "fault.active_faults", slot),
            },
        }
    }

    pub fn select(&self, matched: Option<Matched<'_>>) -> &FaultConfig {
        if self.overrides.is_empty() {
            return &self.own;
        }
        match super::per_route_config(matched, &self.own.config.name, FILTER_NAME) {
            Some(PerFilterConfig::Fault(o)) => self.overrides.get(&(Arc::as_ptr(o) as usize)).unwrap_or(&self.own),
            _ => &self.own,
        }
    }

    /// [`decide`] with this filter's stats; the returned guard holds the
    /// request's place in `active_faults` until dropped.
    pub fn run(&self, config: &FaultConfig, head: &RequestHead, random: &mut dyn FnMut() -> u64) -> Plan {
        let active = self.stats.active_faults.value();
        let plan = decide(config, head, random, active);
        if plan.overflow {
            self.stats.faults_overflow.inc();
        }
        plan
    }

    /// Marks a request as carrying a fault (for `max_active_faults`).
    pub fn activate(&self) -> ActiveFault {
        self.stats.active_faults.inc();
        ActiveFault { gauge: self.stats.active_faults.clone() }
    }
}

/// Holds one request's slot in `active_faults`.
pub struct ActiveFault {
    gauge: Gauge,
}

impl Drop for ActiveFault {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abort {
    Http(u16),
    Grpc(u32),
}

/// The faults one request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Plan {
    pub delay: Option<Duration>,
    pub abort: Option<Abort>,
    /// A fault was due but `max_active_faults` were already active.
    pub overflow: bool,
}

impl Plan {
    pub fn any(&self) -> bool {
        self.delay.is_some() || self.abort.is_some()
    }
}

fn header_number<T: std::str::FromStr>(head: &RequestHead, name: &str) -> Option<T> {
    std::str::from_utf8(head.headers.get(name)?).ok()?.trim().parse().ok()
}

/// The configured fraction, or for header-controlled faults the header's
/// numerator capped at the configured one.
fn fraction(
    configured: FractionalPercent,
    header_controlled: bool,
    head: &RequestHead,
    header: &str,
) -> FractionalPercent {
    if !header_controlled {
        return configured;
    }
    match header_number::<u32>(head, header) {
        Some(n) => configured.with_numerator_capped(n),
        None => configured,
    }
}

/// Envoy's fault decision for one request, `active` faults being in
/// progress process-wide.
pub fn decide(c: &FaultConfig, head: &RequestHead, random: &mut dyn FnMut() -> u64, active: i64) -> Plan {
    let f = &*c.config;
    if !c.headers.iter().all(|m| m.matches(head)) {
        return Plan::default();
    }
    if !f.downstream_nodes.is_empty() {
        let node = head.headers.get(DOWNSTREAM_NODE_HEADER);
        if !node.is_some_and(|n| f.downstream_nodes.iter().any(|d| d.as_bytes() == n)) {
            return Plan::default();
        }
    }
    let mut plan = Plan::default();
    if let Some(d) = &f.delay {
        let header = d.kind == FaultDelayKind::Header;
        if fraction(d.percentage, header, head, DELAY_PERCENTAGE_HEADER).hits(random()) {
            plan.delay = match d.kind {
                FaultDelayKind::Fixed(t) => Some(t),
                FaultDelayKind::Header => header_number::<u64>(head, DELAY_HEADER).map(Duration::from_millis),
            };
        }
    }
    if let Some(a) = &f.abort {
        let header = a.kind == FaultAbortKind::Header;
        if fraction(a.percentage, header, head, ABORT_PERCENTAGE_HEADER).hits(random()) {
            plan.abort = match a.kind {
                FaultAbortKind::Http(s) => Some(Abort::Http(s)),
                FaultAbortKind::Grpc(s) => Some(Abort::Grpc(s)),
                FaultAbortKind::Header => header_number::<u16>(head, ABORT_HEADER)
                    .filter(|s| (200..600).contains(s))
                    .map(Abort::Http)
                    .or_else(|| header_number::<u32>(head, ABORT_GRPC_HEADER).map(Abort::Grpc)),
            };
        }
    }
    if plan.any() {
        if let Some(max) = f.max_active_faults {
            if active >= i64::from(max) {
                return Plan { overflow: true, ..Plan::default() };
            }
        }
    }
    plan
}

/// The abort's response body: `response_body`, else Envoy's.
pub fn abort_body(c: &FaultConfig) -> &str {
    match &c.config.abort {
        Some(a) if !a.response_body.is_empty() => &a.response_body,
        _ => ABORT_BODY,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use control::model::{FaultAbort, FaultDelay, HeaderMatch, HeaderMatchSpec, StringMatch, StringPattern};

    fn head(headers: &[(&str, &str)]) -> RequestHead {
        let mut raw = String::from("GET / HTTP/1.1\r\nhost: x\r\n");
        for (n, v) in headers {
            raw.push_str(&format!("{n}: {v}\r\n"));
        }
        raw.push_str("\r\n");
        let mut h = RequestHead::new();
        let limits = crate::http1::Limits { max_request_line: 8192, max_head_bytes: 65536, max_headers: 100 };
        crate::http1::parse_request_head(raw.as_bytes(), &limits, &mut h).unwrap().unwrap();
        h
    }

    fn pct(n: u32) -> FractionalPercent {
        FractionalPercent { numerator: n, denominator: 100 }
    }

    fn fault(delay: Option<FaultDelay>, abort: Option<FaultAbort>) -> Fault {
        Fault { name: "f".into(), delay, abort, headers: vec![], downstream_nodes: vec![], max_active_faults: None }
    }

    fn compiled(f: Fault) -> FaultConfig {
        FaultConfig::new(&Arc::new(f))
    }

    #[test]
    fn fixed_faults_follow_the_percentages() {
        let c = compiled(fault(
            Some(FaultDelay { kind: FaultDelayKind::Fixed(Duration::from_millis(5)), percentage: pct(30) }),
            Some(FaultAbort { kind: FaultAbortKind::Http(503), percentage: pct(10), response_body: String::new() }),
        ));
        let h = head(&[]);
        let mut seq = 0u64;
        let (mut delays, mut aborts) = (0, 0);
        for _ in 0..10_000 {
            let mut r = || {
                seq += 1;
                seq
            };
            let p = decide(&c, &h, &mut r, 0);
            delays += p.delay.is_some() as u32;
            aborts += (p.abort == Some(Abort::Http(503))) as u32;
        }
        // The draws walk 1, 2, 3, ...: exactly 30% / 10% of each residue class.
        assert_eq!(delays, 3_000);
        assert_eq!(aborts, 1_000);
    }

    #[test]
    fn header_controlled_faults() {
        let c = compiled(fault(
            Some(FaultDelay { kind: FaultDelayKind::Header, percentage: pct(50) }),
            Some(FaultAbort { kind: FaultAbortKind::Header, percentage: pct(100), response_body: String::new() }),
        ));
        // Without headers: nothing, whatever the draw.
        assert_eq!(decide(&c, &head(&[]), &mut || 0, 0), Plan::default());
        let h = head(&[(DELAY_HEADER, "250"), (ABORT_HEADER, "418")]);
        let p = decide(&c, &h, &mut || 0, 0);
        assert_eq!(p.delay, Some(Duration::from_millis(250)));
        assert_eq!(p.abort, Some(Abort::Http(418)));
        // The percentage header is capped at the configured 50%.
        let h = head(&[(DELAY_HEADER, "10"), (DELAY_PERCENTAGE_HEADER, "90")]);
        assert_eq!(decide(&c, &h, &mut || 60, 0).delay, None);
        assert_eq!(decide(&c, &h, &mut || 40, 0).delay, Some(Duration::from_millis(10)));
        let h = head(&[(ABORT_GRPC_HEADER, "14")]);
        assert_eq!(decide(&c, &h, &mut || 0, 0).abort, Some(Abort::Grpc(14)));
        let h = head(&[(ABORT_HEADER, "abc")]);
        assert_eq!(decide(&c, &h, &mut || 0, 0).abort, None);
    }

    #[test]
    fn matchers_nodes_and_overflow() {
        let mut f = fault(
            None,
            Some(FaultAbort { kind: FaultAbortKind::Http(500), percentage: pct(100), response_body: String::new() }),
        );
        f.headers = vec![HeaderMatch {
            name: "x-canary".into(),
            spec: HeaderMatchSpec::String(StringMatch {
                pattern: StringPattern::Exact("1".into()),
                ignore_case: false,
            }),
            invert_match: false,
            treat_missing_header_as_empty: false,
        }];
        f.downstream_nodes = vec!["svc-a".into()];
        f.max_active_faults = Some(2);
        let c = compiled(f);
        assert_eq!(decide(&c, &head(&[(DOWNSTREAM_NODE_HEADER, "svc-a")]), &mut || 0, 0).abort, None);
        assert_eq!(decide(&c, &head(&[("x-canary", "1")]), &mut || 0, 0).abort, None);
        let ok = head(&[("x-canary", "1"), (DOWNSTREAM_NODE_HEADER, "svc-a")]);
        assert_eq!(decide(&c, &ok, &mut || 0, 1).abort, Some(Abort::Http(500)));
        let p = decide(&c, &ok, &mut || 0, 2);
        assert!(p.overflow && !p.any());
    }
}
