//! Retry decisions for one downstream request: Envoy's `RetryStateImpl`,
//! sans-IO.
//!
//! The router (proxy) asks this state machine, after each attempt, whether
//! to try again: on a response head (before a byte of it reaches the
//! client) or on a failure that produced no response (connect failure,
//! reset, per-try timeout).  It answers with a back-off to wait, or no.
//! It owns the `retry_on` semantics (router filter docs, `x-envoy-retry-on`),
//! the retry count, the fully jittered exponential back-off and the
//! internal-request header overrides; it must not do I/O, read clocks or
//! touch the circuit breakers — the caller admits each retry against the
//! cluster's `max_retries` / retry budget and owns timers.
//!
//! Back-off (Envoy's router docs): for retry number N (1-based) with base
//! interval B the wait is uniform in [0, (2^N − 1)·B), capped at
//! `max_interval` (default 10·B).  Randomness is passed in.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use control::model::{RetryOn, RetryPolicy};

use crate::http1::{Headers, KnownSet, WellKnown};
use crate::matcher::{join_values, HeaderMatcher, HeaderSource};

/// A retry policy with its `retriable_headers` compiled (once per shard
/// per policy, see [`compile`]).
#[derive(Debug)]
pub struct CompiledRetry {
    pub policy: Arc<RetryPolicy>,
    retriable_headers: Vec<HeaderMatcher>,
}

thread_local! {
    /// Compiled policies by address; the `Arc` inside keeps the address
    /// from being reused while the entry lives.  Entries of replaced
    /// configs are dropped when the cache grows past a bound.
    static COMPILED: RefCell<HashMap<usize, Rc<CompiledRetry>>> = RefCell::new(HashMap::new());
}

/// The shard's compiled form of `policy`.
pub fn compile(policy: &Arc<RetryPolicy>) -> Rc<CompiledRetry> {
    let key = Arc::as_ptr(policy) as usize;
    COMPILED.with(|c| {
        let mut c = c.borrow_mut();
        if let Some(hit) = c.get(&key) {
            return hit.clone();
        }
        if c.len() >= 4096 {
            // Policies of superseded snapshots: keep only what is shared
            // with a live request; the rest is recompiled on demand.
            c.retain(|_, v| Rc::strong_count(v) > 1);
        }
        let compiled = Rc::new(CompiledRetry {
            policy: policy.clone(),
            retriable_headers: policy.retriable_headers.iter().map(HeaderMatcher::new).collect(),
        });
        c.insert(key, compiled.clone());
        compiled
    })
}

/// What an internal request's `x-envoy-*` headers ask for (all `None` for
/// external requests, whose headers are stripped instead).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderOverrides {
    /// `x-envoy-retry-on`: added to the policy's conditions.
    pub retry_on: Option<RetryOn>,
    /// `x-envoy-max-retries`: replaces `num_retries`.
    pub max_retries: Option<u32>,
    /// `x-envoy-retriable-status-codes`: added to `retriable_status_codes`.
    pub retriable_status_codes: Vec<u16>,
    /// `x-envoy-upstream-rq-timeout-ms`: replaces the route timeout (0: none).
    pub timeout: Option<Option<Duration>>,
    /// `x-envoy-upstream-rq-per-try-timeout-ms`: replaces `per_try_timeout`.
    pub per_try_timeout: Option<Duration>,
}

/// The request headers the router consumes (Envoy's list); they never go
/// upstream, and an external request's are ignored.
pub const CONSUMED_HEADERS: KnownSet = KnownSet::of(&[
    WellKnown::XEnvoyRetryOn,
    WellKnown::XEnvoyRetryGrpcOn,
    WellKnown::XEnvoyMaxRetries,
    WellKnown::XEnvoyRetriableStatusCodes,
    WellKnown::XEnvoyRetriableHeaderNames,
    WellKnown::XEnvoyUpstreamRqTimeoutMs,
    WellKnown::XEnvoyUpstreamRqPerTryTimeoutMs,
    WellKnown::XEnvoyUpstreamRqTimeoutAltResponse,
    WellKnown::XEnvoyHedgeOnPerTryTimeout,
    // The attempt count is the router's to set.
    WellKnown::XEnvoyAttemptCount,
]);

/// Whether any header the router consumes may be present (the common case
/// is none: one bit says no field starts with `x-envoy-`).
pub fn has_overrides(headers: &Headers) -> bool {
    headers.has_envoy_prefixed()
}

/// Removes the consumed headers so they never reach the upstream.
pub fn strip_consumed(headers: &mut Headers) {
    headers.remove_all(CONSUMED_HEADERS);
}

/// Envoy's default internal addresses (`internal_address_config` unset):
/// RFC 1918, loopback, and IPv6 unique-local/loopback.  With
/// `use_remote_address` a request from anywhere else is an edge request.
pub fn is_internal(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => v4.is_private() || v4.is_loopback(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.is_private() || v4.is_loopback(),
            None => v6.is_loopback() || (v6.segments()[0] & 0xfe00) == 0xfc00,
        },
    }
}

fn parse_u64(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

impl HeaderOverrides {
    /// Reads the overrides from an internal request's headers.  Malformed
    /// values are ignored, as Envoy's router ignores them.
    pub fn read(headers: &Headers) -> HeaderOverrides {
        let mut o = HeaderOverrides::default();
        if let Some(v) = headers.get(WellKnown::XEnvoyRetryOn) {
            o.retry_on = Some(RetryOn::parse_lenient(v));
        }
        o.max_retries =
            headers.get(WellKnown::XEnvoyMaxRetries).and_then(parse_u64).map(|n| n.min(u64::from(u32::MAX)) as u32);
        if let Some(v) = headers.get(WellKnown::XEnvoyRetriableStatusCodes) {
            for code in v.split(|b| *b == b',') {
                if let Some(c) = parse_u64(code).filter(|c| (100..=599).contains(c)) {
                    o.retriable_status_codes.push(c as u16);
                }
            }
        }
        o.timeout = headers
            .get(WellKnown::XEnvoyUpstreamRqTimeoutMs)
            .and_then(parse_u64)
            .map(|ms| Some(Duration::from_millis(ms)).filter(|d| !d.is_zero()));
        o.per_try_timeout = headers
            .get(WellKnown::XEnvoyUpstreamRqPerTryTimeoutMs)
            .and_then(parse_u64)
            .map(Duration::from_millis)
            .filter(|d| !d.is_zero());
        o
    }
}

/// Why an attempt produced no response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The connection could not be opened (refused, connect timeout).
    ConnectFailure,
    /// The connection closed or failed before a response head arrived.
    Reset,
    /// `per_try_timeout` expired before a response head arrived.
    PerTryTimeout,
    /// An HTTP/2 upstream refused the stream (RST_STREAM or GOAWAY with
    /// REFUSED_STREAM, RFC 9113 §8.7): it was not processed.
    RefusedStream,
}

/// The state machine's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Retry after this back-off (the caller still has to admit it against
    /// the circuit breakers).
    Retry(Duration),
    /// The outcome is not retriable (or retries are disabled): pass it on.
    NoRetry,
    /// Retriable, but `num_retries` is used up (`upstream_rq_retry_limit_exceeded`).
    LimitExceeded,
}

/// One request's retry state.
#[derive(Debug)]
pub struct RetryState {
    compiled: Option<Rc<CompiledRetry>>,
    retry_on: RetryOn,
    retries_left: u32,
    extra_status_codes: Vec<u16>,
    /// Retries granted so far (the back-off exponent).
    retries_done: u32,
    back_off_base: Duration,
    back_off_max: Duration,
    /// Set when the request body outgrew the buffer limit: the body can no
    /// longer be replayed.
    disabled: bool,
}

impl RetryState {
    /// The state for a request whose route (or virtual host) has `policy`,
    /// with an internal request's `overrides`.  `None` when nothing asks for
    /// retries (no policy and no `x-envoy-retry-on`), as in Envoy.
    pub fn new(policy: Option<Rc<CompiledRetry>>, overrides: &HeaderOverrides) -> Option<RetryState> {
        let (base_on, num_retries, base, max) = match &policy {
            Some(c) => (c.policy.retry_on, c.policy.num_retries, c.policy.back_off_base, c.policy.back_off_max),
            None => {
                let d = RetryPolicy::header_only();
                (d.retry_on, d.num_retries, d.back_off_base, d.back_off_max)
            }
        };
        let retry_on = RetryOn(base_on.0 | overrides.retry_on.map_or(0, |o| o.0));
        if policy.is_none() && overrides.retry_on.is_none() {
            return None;
        }
        Some(RetryState {
            compiled: policy,
            retry_on,
            retries_left: overrides.max_retries.unwrap_or(num_retries),
            extra_status_codes: overrides.retriable_status_codes.clone(),
            retries_done: 0,
            back_off_base: base,
            back_off_max: max,
            disabled: false,
        })
    }

    pub fn policy(&self) -> Option<&RetryPolicy> {
        self.compiled.as_ref().map(|c| &*c.policy)
    }

    /// Retries granted so far.
    pub fn retries_done(&self) -> u32 {
        self.retries_done
    }

    /// The body can no longer be replayed: no more retries.
    pub fn disable(&mut self) {
        self.disabled = true;
    }

    pub fn is_disabled(&self) -> bool {
        self.disabled
    }

    /// Whether a response head with `status` and `headers` is retriable
    /// under this request's conditions (Envoy's `wouldRetryFromHeaders`).
    pub fn response_retriable(&self, status: u16, headers: &Headers) -> bool {
        // An upstream that says it is overloaded is not retried.
        if headers.get(WellKnown::XEnvoyOverloaded).is_some() {
            return false;
        }
        let on = self.retry_on;
        if on.has(RetryOn::FIVE_XX) && (500..600).contains(&status) {
            return true;
        }
        if on.has(RetryOn::GATEWAY_ERROR) && matches!(status, 502..=504) {
            return true;
        }
        if on.has(RetryOn::RETRIABLE_4XX) && status == 409 {
            return true;
        }
        if on.has(RetryOn::RETRIABLE_STATUS_CODES) {
            let listed = self.compiled.as_ref().is_some_and(|c| c.policy.retriable_status_codes.contains(&status));
            if listed || self.extra_status_codes.contains(&status) {
                return true;
            }
        }
        if on.has(RetryOn::RETRIABLE_HEADERS) {
            if let Some(c) = &self.compiled {
                let source = ResponseHeaders(headers);
                if c.retriable_headers.iter().any(|m| m.matches(&source)) {
                    return true;
                }
            }
        }
        false
    }

    /// Whether an attempt that produced no response is retriable (Envoy's
    /// `wouldRetryFromReset`: 5xx and gateway-error count a missing
    /// response as one; reset covers disconnects and per-try timeouts).
    pub fn failure_retriable(&self, failure: Failure) -> bool {
        let on = self.retry_on;
        if on.has(RetryOn::FIVE_XX) || on.has(RetryOn::GATEWAY_ERROR) || on.has(RetryOn::RESET) {
            return true;
        }
        match failure {
            Failure::ConnectFailure => on.has(RetryOn::CONNECT_FAILURE),
            Failure::RefusedStream => on.has(RetryOn::REFUSED_STREAM),
            Failure::Reset | Failure::PerTryTimeout => false,
        }
    }

    /// Decides about a response head.  `random` feeds the back-off jitter.
    pub fn on_response(&mut self, status: u16, headers: &Headers, random: u64) -> Decision {
        let retriable = self.response_retriable(status, headers);
        self.decide(retriable, random)
    }

    /// Decides about an attempt that produced no response.
    pub fn on_failure(&mut self, failure: Failure, random: u64) -> Decision {
        let retriable = self.failure_retriable(failure);
        self.decide(retriable, random)
    }

    fn decide(&mut self, retriable: bool, random: u64) -> Decision {
        if !retriable || self.disabled {
            return Decision::NoRetry;
        }
        if self.retries_left == 0 {
            return Decision::LimitExceeded;
        }
        self.retries_left -= 1;
        self.retries_done += 1;
        Decision::Retry(back_off(self.retries_done, self.back_off_base, self.back_off_max, random))
    }
}

/// Envoy's fully jittered exponential back-off for retry number `n`
/// (1-based): uniform in [0, (2^n − 1)·base), at most `max`.
pub fn back_off(n: u32, base: Duration, max: Duration, random: u64) -> Duration {
    let base_ms = base.as_millis().max(1) as u64;
    let max_ms = max.as_millis() as u64;
    let multiplier = (1u64 << n.clamp(1, 32)) - 1;
    let ceiling = base_ms.saturating_mul(multiplier);
    Duration::from_millis((random % ceiling).min(max_ms))
}

/// A response head as a header matcher sees it.
struct ResponseHeaders<'a>(&'a Headers);

impl HeaderSource for ResponseHeaders<'_> {
    fn header(&self, name: &str) -> Option<std::borrow::Cow<'_, [u8]>> {
        if name.starts_with(':') {
            return None;
        }
        join_values(self.0.iter().filter(|(n, _)| *n == name).map(|(_, v)| v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use control::model::{HeaderMatch, HeaderMatchSpec, StringMatch, StringPattern};

    fn policy(on: &str, num_retries: u32) -> Rc<CompiledRetry> {
        let mut p = RetryPolicy::header_only();
        p.retry_on = RetryOn::parse(on).unwrap();
        p.num_retries = num_retries;
        compile(&Arc::new(p))
    }

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        let mut h = Headers::new();
        for (n, v) in pairs {
            h.append(n, v.as_bytes());
        }
        h
    }

    #[test]
    fn no_policy_and_no_header_means_no_state() {
        assert!(RetryState::new(None, &HeaderOverrides::default()).is_none());
        let o = HeaderOverrides { retry_on: Some(RetryOn::parse("5xx").unwrap()), ..Default::default() };
        let mut s = RetryState::new(None, &o).unwrap();
        // Header-only retries default to one retry.
        assert!(matches!(s.on_response(503, &Headers::new(), 0), Decision::Retry(_)));
        assert_eq!(s.on_response(503, &Headers::new(), 0), Decision::LimitExceeded);
    }

    #[test]
    fn five_xx_covers_every_5xx_and_missing_responses() {
        let s = RetryState::new(Some(policy("5xx", 3)), &HeaderOverrides::default()).unwrap();
        let none = Headers::new();
        for status in [500, 501, 502, 503, 504, 599] {
            assert!(s.response_retriable(status, &none), "{status}");
        }
        for status in [200, 404, 409, 499] {
            assert!(!s.response_retriable(status, &none), "{status}");
        }
        for f in [Failure::ConnectFailure, Failure::Reset, Failure::PerTryTimeout] {
            assert!(s.failure_retriable(f));
        }
    }

    #[test]
    fn gateway_error_is_502_to_504() {
        let s = RetryState::new(Some(policy("gateway-error", 1)), &HeaderOverrides::default()).unwrap();
        let none = Headers::new();
        assert!(!s.response_retriable(500, &none));
        assert!(s.response_retriable(502, &none));
        assert!(s.response_retriable(503, &none));
        assert!(s.response_retriable(504, &none));
        assert!(s.failure_retriable(Failure::Reset));
    }

    #[test]
    fn refused_stream_only_for_refused_streams_or_resets() {
        let s = RetryState::new(Some(policy("refused-stream", 1)), &HeaderOverrides::default()).unwrap();
        assert!(s.failure_retriable(Failure::RefusedStream));
        assert!(!s.failure_retriable(Failure::Reset));
        assert!(!s.failure_retriable(Failure::ConnectFailure));
        let s = RetryState::new(Some(policy("reset", 1)), &HeaderOverrides::default()).unwrap();
        assert!(s.failure_retriable(Failure::RefusedStream));
    }

    #[test]
    fn connect_failure_and_reset_are_distinct() {
        let s = RetryState::new(Some(policy("connect-failure", 1)), &HeaderOverrides::default()).unwrap();
        assert!(s.failure_retriable(Failure::ConnectFailure));
        assert!(!s.failure_retriable(Failure::Reset));
        assert!(!s.failure_retriable(Failure::PerTryTimeout));
        assert!(!s.response_retriable(503, &Headers::new()));
        let s = RetryState::new(Some(policy("reset", 1)), &HeaderOverrides::default()).unwrap();
        assert!(s.failure_retriable(Failure::Reset));
        assert!(s.failure_retriable(Failure::PerTryTimeout));
        assert!(!s.response_retriable(503, &Headers::new()));
    }

    #[test]
    fn retriable_4xx_is_409_only() {
        let s = RetryState::new(Some(policy("retriable-4xx", 1)), &HeaderOverrides::default()).unwrap();
        assert!(s.response_retriable(409, &Headers::new()));
        assert!(!s.response_retriable(429, &Headers::new()));
        assert!(!s.response_retriable(503, &Headers::new()));
    }

    #[test]
    fn retriable_status_codes_from_policy_and_header() {
        let mut p = RetryPolicy::header_only();
        p.retry_on = RetryOn::parse("retriable-status-codes").unwrap();
        p.retriable_status_codes = vec![418];
        let o = HeaderOverrides { retriable_status_codes: vec![429], ..Default::default() };
        let s = RetryState::new(Some(compile(&Arc::new(p))), &o).unwrap();
        assert!(s.response_retriable(418, &Headers::new()));
        assert!(s.response_retriable(429, &Headers::new()));
        assert!(!s.response_retriable(503, &Headers::new()));
    }

    #[test]
    fn retriable_headers_match_the_response() {
        let mut p = RetryPolicy::header_only();
        p.retry_on = RetryOn::parse("retriable-headers").unwrap();
        p.retriable_headers = vec![HeaderMatch {
            name: "x-upstream-retry".into(),
            spec: HeaderMatchSpec::String(StringMatch {
                pattern: StringPattern::Exact("yes".into()),
                ignore_case: false,
            }),
            invert_match: false,
            treat_missing_header_as_empty: false,
        }];
        let s = RetryState::new(Some(compile(&Arc::new(p))), &HeaderOverrides::default()).unwrap();
        assert!(s.response_retriable(200, &headers(&[("x-upstream-retry", "yes")])));
        assert!(!s.response_retriable(200, &headers(&[("x-upstream-retry", "no")])));
        assert!(!s.response_retriable(500, &Headers::new()));
    }

    #[test]
    fn overloaded_upstreams_are_not_retried() {
        let s = RetryState::new(Some(policy("5xx", 1)), &HeaderOverrides::default()).unwrap();
        assert!(!s.response_retriable(503, &headers(&[("x-envoy-overloaded", "true")])));
    }

    #[test]
    fn num_retries_and_max_retries_header() {
        let mut s = RetryState::new(Some(policy("5xx", 2)), &HeaderOverrides::default()).unwrap();
        let none = Headers::new();
        assert!(matches!(s.on_response(500, &none, 7), Decision::Retry(_)));
        assert!(matches!(s.on_failure(Failure::Reset, 7), Decision::Retry(_)));
        assert_eq!(s.on_response(500, &none, 7), Decision::LimitExceeded);
        assert_eq!(s.on_response(200, &none, 7), Decision::NoRetry);
        assert_eq!(s.retries_done(), 2);
        let o = HeaderOverrides { max_retries: Some(0), ..Default::default() };
        let mut s = RetryState::new(Some(policy("5xx", 2)), &o).unwrap();
        assert_eq!(s.on_response(500, &none, 7), Decision::LimitExceeded);
    }

    #[test]
    fn header_retry_on_adds_to_the_policy() {
        let o =
            HeaderOverrides { retry_on: Some(RetryOn::parse_lenient(b"retriable-4xx, bogus")), ..Default::default() };
        let s = RetryState::new(Some(policy("connect-failure", 1)), &o).unwrap();
        assert!(s.response_retriable(409, &Headers::new()));
        assert!(s.failure_retriable(Failure::ConnectFailure));
        assert!(!s.failure_retriable(Failure::Reset));
    }

    #[test]
    fn disabled_state_never_retries() {
        let mut s = RetryState::new(Some(policy("5xx", 5)), &HeaderOverrides::default()).unwrap();
        s.disable();
        assert_eq!(s.on_response(503, &Headers::new(), 1), Decision::NoRetry);
    }

    #[test]
    fn back_off_is_fully_jittered_exponential() {
        let base = Duration::from_millis(25);
        let max = Duration::from_millis(250);
        // Ceilings 25, 75, 175, then capped at 250.
        for (n, ceiling) in [(1u32, 25u64), (2, 75), (3, 175)] {
            let mut seen_max = 0;
            for r in 0..10_000u64 {
                let d = back_off(n, base, max, r.wrapping_mul(0x9E37_79B9_7F4A_7C15)).as_millis() as u64;
                assert!(d < ceiling, "retry {n}: {d} ms");
                seen_max = seen_max.max(d);
            }
            assert_eq!(seen_max, ceiling - 1, "retry {n} reaches its ceiling");
        }
        for r in 0..10_000u64 {
            assert!(back_off(10, base, max, r * 7919) <= max);
        }
        assert_eq!(back_off(1, base, max, 0), Duration::ZERO);
    }

    #[test]
    fn internal_addresses() {
        for ip in ["10.1.2.3", "172.16.0.1", "192.168.1.1", "127.0.0.1", "::1", "fd00::1", "::ffff:10.0.0.1"] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "172.32.0.1", "2001:db8::1", "::ffff:1.1.1.1"] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn consumed_headers_are_stripped() {
        let mut h = headers(&[("x-envoy-retry-on", "5xx"), ("x-envoy-attempt-count", "9"), ("x-keep", "1")]);
        strip_consumed(&mut h);
        assert_eq!(h.get("x-envoy-retry-on"), None);
        assert_eq!(h.get("x-envoy-attempt-count"), None);
        assert_eq!(h.get("x-keep"), Some(&b"1"[..]));
    }

    #[test]
    fn overrides_are_read_from_headers() {
        let h = headers(&[
            ("x-envoy-retry-on", "5xx,connect-failure"),
            ("x-envoy-max-retries", "4"),
            ("x-envoy-retriable-status-codes", "418, 429,abc"),
            ("x-envoy-upstream-rq-timeout-ms", "1500"),
            ("x-envoy-upstream-rq-per-try-timeout-ms", "200"),
        ]);
        let o = HeaderOverrides::read(&h);
        assert_eq!(o.retry_on, Some(RetryOn(RetryOn::FIVE_XX | RetryOn::CONNECT_FAILURE)));
        assert_eq!(o.max_retries, Some(4));
        assert_eq!(o.retriable_status_codes, vec![418, 429]);
        assert_eq!(o.timeout, Some(Some(Duration::from_millis(1500))));
        assert_eq!(o.per_try_timeout, Some(Duration::from_millis(200)));
        let o = HeaderOverrides::read(&headers(&[("x-envoy-upstream-rq-timeout-ms", "0")]));
        assert_eq!(o.timeout, Some(None));
        assert_eq!(HeaderOverrides::read(&headers(&[("x-envoy-max-retries", "x")])), HeaderOverrides::default());
    }
}
