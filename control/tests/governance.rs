//! Loader tests for upstream traffic governance: route and virtual-host
//! `retry_policy` (defaults, Envoy's checks, the route replacing the
//! virtual host's policy), buffer limits and attempt-count switches, and
//! cluster `circuit_breakers` per priority.

use std::time::Duration;

use control::bootstrap::{self, Format};
use control::model::{self, RetryOn, RouteAction};
use serde_json::{json, Value};

const MINIMAL: &str = r#"
static_resources:
  listeners:
  - name: l
    address: { socket_address: { address: 127.0.0.1, port_value: 8080 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            name: r
            virtual_hosts:
            - name: vh
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: backend }
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: backend
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 9000 } } }
"#;

const VH: &str = "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/route_config/virtual_hosts/0";
const VH_PATH: &str =
    "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0]";

fn with(edits: &[(&str, Value)]) -> Value {
    let mut doc: Value = serde_yaml::from_str(MINIMAL).unwrap();
    for (pointer, value) in edits {
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        doc.pointer_mut(parent).unwrap().as_object_mut().unwrap().insert(key.to_string(), value.clone());
    }
    doc
}

fn load(doc: &Value) -> Result<model::Config, String> {
    bootstrap::load_str(&doc.to_string(), Format::Json, "test.json").map_err(|e| e.to_string())
}

fn vhost(c: &model::Config) -> &model::VirtualHost {
    &c.listeners[0].http.route_config.virtual_hosts[0]
}

fn forward(c: &model::Config) -> &model::ForwardAction {
    match &vhost(c).routes[0].action {
        RouteAction::Forward(f) => f,
        other => panic!("{other:?}"),
    }
}

#[test]
fn route_retry_policy_with_defaults() {
    let c = load(&with(&[(&format!("{VH}/routes/0/route/retry_policy"), json!({"retry_on": "5xx,reset"}))])).unwrap();
    let p = forward(&c).retry.policy.as_ref().unwrap();
    assert_eq!(p.retry_on, RetryOn(RetryOn::FIVE_XX | RetryOn::RESET));
    assert_eq!(p.num_retries, 1);
    assert_eq!(p.per_try_timeout, None);
    assert_eq!(p.back_off_base, Duration::from_millis(25));
    assert_eq!(p.back_off_max, Duration::from_millis(250));
    assert!(!p.previous_hosts);
    assert_eq!(p.host_selection_retry_max_attempts, 1);
    assert!(vhost(&c).retry.policy.is_none());
}

#[test]
fn full_retry_policy_and_vhost_settings() {
    let c = load(&with(&[
        (
            &format!("{VH}/retry_policy"),
            json!({
                "retry_on": "gateway-error,retriable-status-codes,retriable-headers,retriable-4xx,connect-failure,refused-stream",
                "num_retries": 4,
                "per_try_timeout": "0.25s",
                "retry_back_off": {"base_interval": "0.01s", "max_interval": "1s"},
                "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}}],
                "host_selection_retry_max_attempts": 5,
                "retriable_status_codes": [418, 429],
                "retriable_headers": [{"name": "x-retry", "string_match": {"exact": "yes"}}]
            }),
        ),
        (&format!("{VH}/per_request_buffer_limit_bytes"), json!(4096)),
        (&format!("{VH}/include_request_attempt_count"), json!(true)),
        (&format!("{VH}/include_attempt_count_in_response"), json!(true)),
    ]))
    .unwrap();
    let r = &vhost(&c).retry;
    let p = r.policy.as_ref().unwrap();
    assert_eq!(p.num_retries, 4);
    assert_eq!(p.per_try_timeout, Some(Duration::from_millis(250)));
    assert_eq!((p.back_off_base, p.back_off_max), (Duration::from_millis(10), Duration::from_secs(1)));
    assert!(p.previous_hosts);
    assert_eq!(p.host_selection_retry_max_attempts, 5);
    assert_eq!(p.retriable_status_codes, vec![418, 429]);
    assert_eq!(p.retriable_headers.len(), 1);
    assert_eq!(r.per_request_buffer_limit_bytes, Some(4096));
    assert!(r.include_request_attempt_count && r.include_attempt_count_in_response);
    // The route has none of its own.
    assert!(forward(&c).retry.policy.is_none());
}

#[test]
fn retry_policy_errors_name_the_field() {
    let cases = [
        (json!({"retry_on": "5xx,cancelled"}), "retry_policy.retry_on", "cancelled"),
        (
            json!({"retry_on": "5xx", "retry_back_off": {"base_interval": "1s", "max_interval": "0.5s"}}),
            "retry_policy.retry_back_off.max_interval",
            "greater than or equal",
        ),
        (
            json!({"retry_on": "5xx", "retry_back_off": {"max_interval": "0.5s"}}),
            "retry_policy.retry_back_off.base_interval",
            "required",
        ),
        (
            json!({"retry_on": "5xx", "retriable_status_codes": [99]}),
            "retry_policy.retriable_status_codes[0]",
            "not an HTTP status",
        ),
        (
            json!({"retry_on": "5xx", "retry_host_predicate": [{"name": "envoy.retry_host_predicates.omit_canary_hosts"}]}),
            "retry_policy.retry_host_predicate[0]",
            "unsupported retry host predicate",
        ),
        (
            json!({"retry_on": "5xx", "retry_priority": {"name": "x"}}),
            "retry_policy.retry_priority",
            "unsupported field",
        ),
        (
            json!({"retry_on": "5xx", "per_try_idle_timeout": "1s"}),
            "retry_policy.per_try_idle_timeout",
            "unsupported field",
        ),
    ];
    for (policy, field, words) in cases {
        let err = load(&with(&[(&format!("{VH}/retry_policy"), policy.clone())])).unwrap_err();
        assert!(err.contains(&format!("{VH_PATH}.{field}")) && err.contains(words), "{policy}: {err}");
    }
}

#[test]
fn circuit_breakers_per_priority_with_envoy_defaults() {
    let c = load(&with(&[(
        "/static_resources/clusters/0/circuit_breakers",
        json!({"thresholds": [
            {"max_connections": 10, "max_requests": 20},
            {"priority": "HIGH", "max_retries": 7, "retry_budget": {"budget_percent": {"value": 25.0}}}
        ]}),
    )]))
    .unwrap();
    let cb = c.clusters["backend"].circuit_breakers;
    assert_eq!(cb.thresholds[0].max_connections, 10);
    // The idle pool is bounded by the DEFAULT priority's max_connections only.
    assert_eq!(c.clusters["backend"].max_idle_per_endpoint, 10);
    assert_eq!(cb.thresholds[0].max_requests, 20);
    assert_eq!(cb.thresholds[0].max_pending_requests, 1024);
    assert_eq!(cb.thresholds[0].max_retries, 3);
    assert_eq!(cb.thresholds[1].max_connections, 1024);
    assert_eq!(cb.thresholds[1].max_retries, 7);
    let b = cb.thresholds[1].retry_budget.unwrap();
    assert_eq!((b.budget_percent, b.min_retry_concurrency), (25.0, 3));
    // Unset: Envoy's defaults at both priorities.
    let d = load(&with(&[])).unwrap();
    assert_eq!(d.clusters["backend"].circuit_breakers, model::CircuitBreakers::default());
}

#[test]
fn circuit_breaker_errors() {
    let dup = load(&with(&[(
        "/static_resources/clusters/0/circuit_breakers",
        json!({"thresholds": [{"max_connections": 1}, {"priority": "DEFAULT"}]}),
    )]))
    .unwrap_err();
    assert!(dup.contains("circuit_breakers.thresholds[1].priority"), "{dup}");
    let pct = load(&with(&[(
        "/static_resources/clusters/0/circuit_breakers",
        json!({"thresholds": [{"retry_budget": {"budget_percent": {"value": 150.0}}}]}),
    )]))
    .unwrap_err();
    assert!(pct.contains("retry_budget.budget_percent"), "{pct}");
    let per_host = load(&with(&[(
        "/static_resources/clusters/0/circuit_breakers",
        json!({"per_host_thresholds": [{"max_connections": 1}]}),
    )]))
    .unwrap_err();
    assert!(
        per_host.contains("circuit_breakers.per_host_thresholds") && per_host.contains("unsupported field"),
        "{per_host}"
    );
}

#[test]
fn outlier_detection_defaults_and_errors() {
    let c = load(&with(&[(
        "/static_resources/clusters/0/outlier_detection",
        json!({"consecutive_5xx": 3, "interval": "2s"}),
    )]))
    .unwrap();
    let o = c.clusters["backend"].outlier_detection.clone().unwrap();
    assert_eq!(o.consecutive_5xx, 3);
    assert_eq!(o.interval, Duration::from_secs(2));
    let d = model::OutlierDetection::default();
    assert_eq!((o.base_ejection_time, o.max_ejection_time), (Duration::from_secs(30), Duration::from_secs(300)));
    assert_eq!((o.max_ejection_percent, o.enforcing_consecutive_gateway_failure), (10, 0));
    assert_eq!(o.success_rate_stdev_factor, d.success_rate_stdev_factor);
    assert!(load(&with(&[])).unwrap().clusters["backend"].outlier_detection.is_none());
    let err = load(&with(&[("/static_resources/clusters/0/outlier_detection", json!({"max_ejection_percent": 101}))]))
        .unwrap_err();
    assert!(err.contains("outlier_detection.max_ejection_percent"), "{err}");
    let err =
        load(&with(&[("/static_resources/clusters/0/outlier_detection", json!({"interval": "0s"}))])).unwrap_err();
    assert!(err.contains("outlier_detection.interval"), "{err}");
    let err =
        load(&with(&[("/static_resources/clusters/0/outlier_detection", json!({"max_ejection_time_jitter": "1s"}))]))
            .unwrap_err();
    assert!(err.contains("outlier_detection.max_ejection_time_jitter") && err.contains("unsupported field"), "{err}");
}

#[test]
fn grpc_health_check_translates_with_envoy_defaults() {
    let hc = |grpc: Value| {
        json!([{"timeout": "1s", "interval": "2s", "unhealthy_threshold": 2, "healthy_threshold": 1,
                "grpc_health_check": grpc}])
    };
    let c = load(&with(&[("/static_resources/clusters/0/health_checks", hc(json!({})))])).unwrap();
    let h = &c.clusters["backend"].health_checks[0];
    assert_eq!(h.kind, model::HealthCheckKind::Grpc { service_name: String::new(), authority: "backend".into() });
    assert_eq!((h.interval, h.unhealthy_threshold), (Duration::from_secs(2), 2));
    let c = load(&with(&[(
        "/static_resources/clusters/0/health_checks",
        hc(json!({"service_name": "shop.Cart", "authority": "cart.internal"})),
    )]))
    .unwrap();
    assert_eq!(
        c.clusters["backend"].health_checks[0].kind,
        model::HealthCheckKind::Grpc { service_name: "shop.Cart".into(), authority: "cart.internal".into() }
    );
    let err = load(&with(&[(
        "/static_resources/clusters/0/health_checks",
        hc(json!({"initial_metadata": [{"header": {"key": "x", "value": "y"}}]})),
    )]))
    .unwrap_err();
    assert!(
        err.contains("health_checks[0].grpc_health_check.initial_metadata") && err.contains("unsupported"),
        "{err}"
    );
}
