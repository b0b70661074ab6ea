//! The bootstrap loader against configs written for Envoy: what loads, what
//! the model looks like, and which path each rejection names.

use std::path::Path;
use std::time::Duration;

use control::bootstrap::{self, Format};
use control::error::ConfigErrors;
use control::model::{self, DiscoveryType, DomainMatch, EndpointAddress, PathMatch, RouteAction};
use serde_json::{json, Value};

fn data(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

/// The smallest useful config: listener → HCM → router, one STATIC cluster.
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

const HCM: &str = "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config";
const HCM_PATH: &str = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config";

fn minimal() -> Value {
    serde_yaml::from_str(MINIMAL).unwrap()
}

/// MINIMAL with `value` set at a JSON pointer (parents must exist).
fn with(edits: &[(&str, Value)]) -> Value {
    let mut doc = minimal();
    for (pointer, value) in edits {
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let parent = doc.pointer_mut(parent).unwrap_or_else(|| panic!("{parent}"));
        match parent {
            Value::Object(m) => {
                m.insert(key.to_string(), value.clone());
            }
            Value::Array(a) => {
                let i: usize = key.parse().unwrap();
                if i == a.len() {
                    a.push(value.clone());
                } else {
                    a[i] = value.clone();
                }
            }
            _ => panic!("{pointer}"),
        }
    }
    doc
}

fn load_json(doc: &Value) -> Result<model::Config, ConfigErrors> {
    bootstrap::load_str(&doc.to_string(), Format::Json, "test.json")
}

fn errors(doc: &Value) -> ConfigErrors {
    match load_json(doc) {
        Ok(_) => panic!("expected errors for {doc:#}"),
        Err(e) => e,
    }
}

#[track_caller]
fn assert_error(errs: &ConfigErrors, path: &str, needle: &str) {
    assert!(
        errs.iter().any(|e| e.path == path && e.message.contains(needle)),
        "no error at {path:?} containing {needle:?}; got:\n{errs}"
    );
}

fn hcm(cfg: &model::Config) -> &model::HttpConnectionManager {
    &cfg.listeners[0].http
}

// ---------------------------------------------------------------- the example

fn check_basic(cfg: &model::Config) {
    assert_eq!(cfg.version, 0);
    assert_eq!(cfg.node.id, "edge-1");
    assert_eq!(cfg.node.cluster, "edge");
    let admin = cfg.admin.as_ref().unwrap();
    assert_eq!(admin.address, "127.0.0.1:9901".parse().unwrap());
    assert_eq!(admin.access_log_path.as_deref(), Some("/dev/null"));

    assert_eq!(cfg.listeners.len(), 1);
    let l = &cfg.listeners[0];
    assert_eq!(l.name, "listener_http");
    assert_eq!(l.address, "0.0.0.0:10000".parse().unwrap());
    assert_eq!(l.per_connection_buffer_limit_bytes, 1 << 20);
    let h = &l.http;
    assert_eq!(h.stat_prefix, "ingress_http");
    assert!(h.use_remote_address);
    assert_eq!(h.idle_timeout, Some(Duration::from_secs(300)));
    assert_eq!(h.http_filters, vec![model::HttpFilter::Router]);

    let rc = &h.route_config;
    assert_eq!(rc.name, "local_route");
    assert_eq!(rc.virtual_hosts.len(), 2);
    let api = &rc.virtual_hosts[0];
    assert_eq!(
        api.domains,
        vec![DomainMatch::Exact("api.example.com".into()), DomainMatch::Exact("api.example.com:10000".into())]
    );
    assert_eq!(api.routes[0].matcher.path, PathMatch::Prefix("/v1/".into()));
    assert!(api.routes[0].matcher.case_sensitive);
    match &api.routes[0].action {
        RouteAction::Forward(f) => {
            assert_eq!(f.cluster, model::ClusterSpecifier::Cluster("api_backend".into()));
            assert_eq!(f.timeout, Some(Duration::from_secs(30)));
            assert_eq!(f.prefix_rewrite.as_deref(), Some("/"));
        }
        other => panic!("{other:?}"),
    }
    let default = &rc.virtual_hosts[1];
    assert_eq!(default.domains, vec![DomainMatch::Any]);
    assert_eq!(default.routes[0].matcher.path, PathMatch::Exact("/healthz".into()));
    match &default.routes[0].action {
        RouteAction::DirectResponse { status, body } => {
            assert_eq!(*status, 200);
            assert_eq!(body.as_deref(), Some(&b"ok\n"[..]));
        }
        other => panic!("{other:?}"),
    }
    match &default.routes[1].action {
        RouteAction::Forward(f) => {
            assert_eq!(f.cluster, model::ClusterSpecifier::Cluster("web".into()));
            assert_eq!(f.timeout, Some(Duration::from_secs(15)));
            assert_eq!(f.prefix_rewrite, None);
        }
        other => panic!("{other:?}"),
    }

    assert_eq!(cfg.clusters.len(), 2);
    let api = &cfg.clusters["api_backend"];
    assert_eq!(api.discovery, DiscoveryType::Static);
    assert_eq!(api.connect_timeout, Duration::from_millis(250));
    assert_eq!(api.lb_policy, model::LbPolicy::RoundRobin);
    assert_eq!(api.upstream_idle_timeout, Duration::from_secs(60));
    assert_eq!(api.max_requests_per_connection, Some(1000));
    assert_eq!(api.max_idle_per_endpoint, 1024);
    assert_eq!(api.endpoints.len(), 2);
    assert_eq!(api.endpoints[0].address, EndpointAddress::Socket("10.0.0.11:8080".parse().unwrap()));
    assert_eq!(api.endpoints[0].weight, 1);
    assert_eq!(api.endpoints[1].weight, 3);

    let web = &cfg.clusters["web"];
    assert_eq!(web.discovery, DiscoveryType::StrictDns);
    assert_eq!(web.dns_refresh_rate, Duration::from_secs(10));
    assert_eq!(web.connect_timeout, Duration::from_secs(5));
    assert_eq!(web.endpoints[0].address, EndpointAddress::Dns { host: "web.internal".into(), port: 80 });
    assert_eq!(web.endpoints[0].priority, 0);
    assert_eq!(web.endpoints[1].address, EndpointAddress::Socket("192.0.2.7:8080".parse().unwrap()));
    assert_eq!(web.endpoints[1].priority, 1);
}

#[test]
fn envoy_example_loads_from_yaml_file() {
    let cfg = bootstrap::load_file(&data("envoy-basic.yaml")).unwrap();
    check_basic(&cfg);
}

#[test]
fn envoy_example_loads_from_json() {
    let yaml: Value = serde_yaml::from_str(&std::fs::read_to_string(data("envoy-basic.yaml")).unwrap()).unwrap();
    let dir = std::env::temp_dir().join(format!("meshgate-control-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("envoy-basic.json");
    std::fs::write(&file, serde_json::to_string_pretty(&yaml).unwrap()).unwrap();
    let cfg = bootstrap::load_file(&file).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    check_basic(&cfg);
}

#[test]
fn camel_case_json_names_work() {
    let text = r#"{
      "node": {"id": "n"},
      "staticResources": {
        "listeners": [{
          "name": "l",
          "address": {"socketAddress": {"address": "::1", "portValue": 8080}},
          "perConnectionBufferLimitBytes": 32768,
          "filterChains": [{"filters": [{
            "name": "hcm",
            "typedConfig": {
              "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
              "statPrefix": "s",
              "codecType": "HTTP1",
              "maxRequestHeadersKb": 16,
              "commonHttpProtocolOptions": {"maxHeadersCount": 50},
              "streamIdleTimeout": "0s",
              "requestTimeout": "20s",
              "xffNumTrustedHops": 2,
              "serverName": "edge",
              "serverHeaderTransformation": "PASS_THROUGH",
              "generateRequestId": false,
              "preserveExternalRequestId": true,
              "httpProtocolOptions": {"acceptHttp10": true},
              "routeConfig": {"virtualHosts": [{
                "name": "v", "domains": ["*.Example.com", "www.*"],
                "routes": [{"match": {"prefix": "/A", "caseSensitive": false},
                            "directResponse": {"status": 404}}]
              }]},
              "httpFilters": [{"name": "envoy.filters.http.router",
                               "typedConfig": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]
            }
          }]}]
        }]
      }
    }"#;
    let cfg = bootstrap::load_str(text, Format::Json, "camel.json").unwrap();
    let l = &cfg.listeners[0];
    assert_eq!(l.address, "[::1]:8080".parse().unwrap());
    assert_eq!(l.per_connection_buffer_limit_bytes, 32768);
    let h = hcm(&cfg);
    assert_eq!(h.max_request_headers_bytes, 16 * 1024);
    assert_eq!(h.max_headers_count, 50);
    assert_eq!(h.stream_idle_timeout, None);
    assert_eq!(h.request_timeout, Some(Duration::from_secs(20)));
    assert_eq!(h.xff_num_trusted_hops, 2);
    assert_eq!(h.server_name, "edge");
    assert_eq!(h.server_header_transformation, model::ServerHeaderTransformation::PassThrough);
    assert!(!h.generate_request_id);
    assert!(h.preserve_external_request_id);
    assert!(h.accept_http_10);
    let vh = &h.route_config.virtual_hosts[0];
    assert_eq!(vh.domains, vec![DomainMatch::Suffix(".example.com".into()), DomainMatch::Prefix("www.".into())]);
    assert!(!vh.routes[0].matcher.case_sensitive);
    assert!(matches!(vh.routes[0].action, RouteAction::DirectResponse { status: 404, body: None }));
    assert!(cfg.clusters.is_empty());
}

// ---------------------------------------------------------------- defaults

#[test]
fn defaults_are_applied() {
    let cfg = load_json(&minimal()).unwrap();
    assert_eq!(cfg.node.id, "");
    assert!(cfg.admin.is_none());
    let h = hcm(&cfg);
    assert_eq!(h.max_request_headers_bytes, 60 * 1024);
    assert_eq!(h.max_headers_count, 100);
    assert_eq!(h.max_request_line_bytes, 8 * 1024);
    assert_eq!(h.request_headers_timeout, Some(Duration::from_secs(10)));
    assert_eq!(h.stream_idle_timeout, Some(Duration::from_secs(300)));
    assert_eq!(h.request_timeout, None);
    assert_eq!(h.idle_timeout, Some(Duration::from_secs(3600)));
    assert_eq!(h.drain_timeout, Duration::from_secs(5));
    assert!(!h.use_remote_address);
    assert_eq!(h.xff_num_trusted_hops, 0);
    assert_eq!(h.server_name, "meshgate");
    assert_eq!(h.server_header_transformation, model::ServerHeaderTransformation::Overwrite);
    assert!(h.generate_request_id);
    assert!(!h.preserve_external_request_id);
    assert!(!h.accept_http_10);
    let route = &h.route_config.virtual_hosts[0].routes[0];
    assert!(route.matcher.case_sensitive);
    match &route.action {
        RouteAction::Forward(f) => assert_eq!(f.timeout, Some(Duration::from_secs(15))),
        other => panic!("{other:?}"),
    }
    let c = &cfg.clusters["backend"];
    assert_eq!(c.discovery, DiscoveryType::Static);
    assert_eq!(c.connect_timeout, Duration::from_secs(5));
    assert_eq!(c.dns_refresh_rate, Duration::from_secs(5));
    assert_eq!(c.upstream_idle_timeout, Duration::from_secs(3600));
    assert_eq!(c.max_requests_per_connection, None);
    assert_eq!(c.per_connection_buffer_limit_bytes, 1 << 20);
    assert_eq!(c.max_idle_per_endpoint, 1024);
    assert_eq!(c.endpoints[0].weight, 1);
    assert_eq!(c.endpoints[0].priority, 0);
}

#[test]
fn zero_timeouts_disable() {
    let cfg = load_json(&with(&[
        (&format!("{HCM}/request_headers_timeout"), json!("0s")),
        (&format!("{HCM}/request_timeout"), json!("0s")),
        (&format!("{HCM}/common_http_protocol_options"), json!({"idle_timeout": "0s"})),
        (&format!("{HCM}/drain_timeout"), json!("1.5s")),
        (&format!("{HCM}/route_config/virtual_hosts/0/routes/0/route/timeout"), json!("0s")),
    ]))
    .unwrap();
    let h = hcm(&cfg);
    assert_eq!(h.request_headers_timeout, None);
    assert_eq!(h.request_timeout, None);
    assert_eq!(h.idle_timeout, None);
    assert_eq!(h.drain_timeout, Duration::from_millis(1500));
    match &h.route_config.virtual_hosts[0].routes[0].action {
        RouteAction::Forward(f) => assert_eq!(f.timeout, None),
        other => panic!("{other:?}"),
    }
}

#[test]
fn deprecated_cluster_max_requests_per_connection() {
    let cfg = load_json(&with(&[("/static_resources/clusters/0/max_requests_per_connection", json!(7))])).unwrap();
    assert_eq!(cfg.clusters["backend"].max_requests_per_connection, Some(7));
}

#[test]
fn yaml_merge_keys_and_anchors() {
    let text = r#"
x-endpoint: &ep
  endpoint: { address: { socket_address: { address: 10.1.1.1, port_value: 80 } } }
"#;
    // `x-endpoint` is not a Bootstrap field: anchors must live inside it.
    let e = bootstrap::load_str(text, Format::Yaml, "a.yaml").unwrap_err();
    assert_error(&e, "x-endpoint", "unknown field");

    let text = r#"
static_resources:
  clusters:
  - &base
    name: a
    connect_timeout: 2s
    load_assignment: { cluster_name: a }
  - <<: *base
    name: b
"#;
    let cfg = bootstrap::load_str(text, Format::Yaml, "m.yaml").unwrap();
    assert_eq!(cfg.clusters["b"].connect_timeout, Duration::from_secs(2));
}

// ---------------------------------------------------------------- STRICT_DNS, direct_response

#[test]
fn strict_dns_cluster() {
    let cfg = load_json(&with(&[(
        "/static_resources/clusters/0",
        json!({
            "name": "backend", "type": "STRICT_DNS", "dns_refresh_rate": "30s",
            "load_assignment": {"cluster_name": "backend", "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "backend.svc.cluster.local", "port_value": 8080}}}},
                {"endpoint": {"address": {"socket_address": {"address": "10.2.0.1", "port_value": 8081}}}, "load_balancing_weight": 5}
            ]}]}
        }),
    )]))
    .unwrap();
    let c = &cfg.clusters["backend"];
    assert_eq!(c.discovery, DiscoveryType::StrictDns);
    assert_eq!(c.dns_refresh_rate, Duration::from_secs(30));
    assert_eq!(c.endpoints[0].address, EndpointAddress::Dns { host: "backend.svc.cluster.local".into(), port: 8080 });
    assert_eq!(c.endpoints[1].address, EndpointAddress::Socket("10.2.0.1:8081".parse().unwrap()));
    assert_eq!(c.endpoints[1].weight, 5);
}

#[test]
fn static_cluster_needs_ip_literals() {
    let errs = errors(&with(&[(
        "/static_resources/clusters/0/load_assignment/endpoints/0/lb_endpoints/0/endpoint/address/socket_address/address",
        json!("backend.local"),
    )]));
    assert_error(
        &errs,
        "static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address",
        "IP address",
    );
}

#[test]
fn direct_response_bodies() {
    let dir = std::env::temp_dir().join(format!("meshgate-control-dr-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let body_file = dir.join("body.txt");
    std::fs::write(&body_file, "from file").unwrap();
    let routes = json!([
        {"match": {"path": "/a"}, "direct_response": {"status": 503, "body": {"inline_bytes": "aGk="}}},
        {"match": {"path": "/b"}, "direct_response": {"status": 200, "body": {"filename": body_file.to_str().unwrap()}}},
        {"match": {"path": "/c"}, "direct_response": {"status": 204}},
    ]);
    let cfg = load_json(&with(&[(&format!("{HCM}/route_config/virtual_hosts/0/routes"), routes)])).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    let bodies: Vec<_> = hcm(&cfg).route_config.virtual_hosts[0]
        .routes
        .iter()
        .map(|r| match &r.action {
            RouteAction::DirectResponse { status, body } => (*status, body.as_deref().map(|b| b.to_vec())),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(bodies, vec![(503, Some(b"hi".to_vec())), (200, Some(b"from file".to_vec())), (204, None)]);
}

#[test]
fn direct_response_errors() {
    let routes = json!([
        {"match": {"path": "/a"}, "direct_response": {"status": 700}},
        {"match": {"path": "/b"}, "direct_response": {"status": 200, "body": {"filename": "/nonexistent/meshgate/body"}}},
        {"match": {"path": "/c"}},
    ]);
    let errs = errors(&with(&[(&format!("{HCM}/route_config/virtual_hosts/0/routes"), routes)]));
    let r = format!("{HCM_PATH}.route_config.virtual_hosts[0].routes");
    assert_error(&errs, &format!("{r}[0].direct_response.status"), "200..=599");
    assert_error(&errs, &format!("{r}[1].direct_response.body.filename"), "cannot read");
    assert_error(&errs, &format!("{r}[2]"), "needs `route`, `redirect` or `direct_response`");
    assert_eq!(errs.len(), 3, "{errs}");
}

// ---------------------------------------------------------------- unsupported

#[test]
fn unknown_network_filter_type() {
    let errs = errors(&with(&[(
        "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config",
        // An HTTP filter where a network filter belongs: a known type, not a network filter.
        json!({"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}),
    )]));
    assert_error(&errs, HCM_PATH, "unsupported filter type envoy.extensions.filters.http.router.v3.Router");
}

#[test]
fn filter_type_outside_the_descriptor_set() {
    let errs = errors(&with(&[(
        "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config",
        json!({"@type": "type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy",
               "stat_prefix": "r"}),
    )]));
    assert_error(&errs, HCM_PATH, "unsupported filter type envoy.extensions.filters.network.redis_proxy.v3.RedisProxy");
}

#[test]
fn unknown_http_filter_type() {
    let errs = errors(&with(&[(
        &format!("{HCM}/http_filters/0"),
        json!({"name": "envoy.filters.http.cors", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"}}),
    )]));
    assert_error(
        &errs,
        &format!("{HCM_PATH}.http_filters[0].typed_config"),
        "unsupported HTTP filter type envoy.extensions.filters.http.cors.v3.Cors",
    );
    // (A type outside the descriptor set stops the load at stage 2, so the
    // missing router is not reported as well.)
}

#[test]
fn circuit_breakers_on_cluster() {
    // Supported (see tests/circuit_breakers.rs); a field meshgate lacks in
    // the message is still an error naming its path.
    let errs = errors(&with(&[(
        "/static_resources/clusters/0/circuit_breakers",
        json!({"thresholds": [{"max_connections": 10, "track_remaining": true}]}),
    )]));
    assert_error(
        &errs,
        "static_resources.clusters[0].circuit_breakers.thresholds[0].track_remaining",
        "unsupported field",
    );
    assert_eq!(errs.len(), 1, "{errs}");
}

#[test]
fn rds_on_hcm() {
    let mut doc = minimal();
    let h = doc.pointer_mut(HCM).unwrap().as_object_mut().unwrap();
    h.remove("route_config");
    h.insert("rds".into(), json!({"route_config_name": "r", "config_source": {"ads": {}}}));
    let errs = errors(&doc);
    assert_error(&errs, &format!("{HCM_PATH}.rds"), "RDS is supported only in listeners delivered over LDS");
    // One problem, one error: no extra "route_config required".
    assert_eq!(errs.len(), 1, "{errs}");
}

#[test]
fn filter_chain_match() {
    // server_names picks among TLS filter chains only.
    let errs = errors(&with(&[(
        "/static_resources/listeners/0/filter_chains/0/filter_chain_match",
        json!({"server_names": ["a.com"]}),
    )]));
    assert_error(
        &errs,
        "static_resources.listeners[0].filter_chains[0].filter_chain_match",
        "server_names, application_protocols and transport_protocol tls need a TLS transport_socket",
    );
    let errs = errors(&with(&[(
        "/static_resources/listeners/0/filter_chains/0/filter_chain_match",
        json!({"destination_port": 80}),
    )]));
    assert_error(
        &errs,
        "static_resources.listeners[0].filter_chains[0].filter_chain_match.destination_port",
        "unsupported field (meshgate supports: server_names, transport_protocol, application_protocols)",
    );
}

#[test]
fn unsupported_field_inside_typed_config() {
    let errs = errors(&with(&[
        (&format!("{HCM}/http2_protocol_options"), json!({"hpack_table_size": 1024})),
        (&format!("{HCM}/add_user_agent"), json!(true)),
        (&format!("{HCM}/common_http_protocol_options"), json!({"max_connection_duration": "10s"})),
    ]));
    assert_error(
        &errs,
        &format!("{HCM_PATH}.http2_protocol_options.hpack_table_size"),
        "meshgate supports: max_concurrent_streams, initial_stream_window_size, initial_connection_window_size",
    );
    assert_error(&errs, &format!("{HCM_PATH}.add_user_agent"), "unsupported field (meshgate supports: stat_prefix");
    assert_error(
        &errs,
        &format!("{HCM_PATH}.common_http_protocol_options.max_connection_duration"),
        "meshgate supports: idle_timeout, max_headers_count",
    );
    assert_eq!(errs.len(), 3, "{errs}");
}

#[test]
fn unsupported_node_fields_and_protocol_options() {
    let errs = errors(&with(&[
        ("/node", json!({"id": "a", "user_agent_name": "z"})),
        (
            "/static_resources/clusters/0/typed_extension_protocol_options",
            json!({"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {"hpack_table_size": 100}}}}),
        ),
        ("/static_resources/clusters/0/type", json!("EDS")),
        ("/static_resources/clusters/0/lb_policy", json!("LOAD_BALANCING_POLICY_CONFIG")),
    ]));
    assert_error(&errs, "node.user_agent_name", "meshgate supports: id, cluster");
    assert_error(
        &errs,
        "static_resources.clusters[0].typed_extension_protocol_options[\"envoy.extensions.upstreams.http.v3.HttpProtocolOptions\"].explicit_http_config.http2_protocol_options.hpack_table_size",
        "meshgate supports: max_concurrent_streams",
    );
    assert_error(&errs, "static_resources.clusters[0].type", "unsupported cluster type EDS");
    assert_error(&errs, "static_resources.clusters[0].lb_policy", "unsupported value LOAD_BALANCING_POLICY_CONFIG");
}

#[test]
fn unknown_field_name_in_yaml() {
    let text = MINIMAL.replace("stat_prefix: ingress", "stat_prefix: ingress\n          stat_prefx: oops");
    let errs = bootstrap::load_str(&text, Format::Yaml, "typo.yaml").unwrap_err();
    assert_error(&errs, &format!("{HCM_PATH}.stat_prefx"), "stat_prefx");
    let line = errs.to_string();
    assert!(line.starts_with("typo.yaml: static_resources.listeners[0]"), "{line}");
}

#[test]
fn bad_value_names_its_path() {
    let errs = errors(&with(&[("/static_resources/clusters/0/connect_timeout", json!("five seconds"))]));
    assert_eq!(errs.first().path, "static_resources.clusters[0].connect_timeout", "{errs}");
    let errs = errors(&with(&[(&format!("{HCM}/codec_type"), json!("HTTP9"))]));
    assert_eq!(errs.first().path, format!("{HCM_PATH}.codec_type"), "{errs}");
}

// ---------------------------------------------------------------- semantics

#[test]
fn route_to_unknown_cluster() {
    let errs = errors(&with(&[(&format!("{HCM}/route_config/virtual_hosts/0/routes/0/route/cluster"), json!("nope"))]));
    assert_error(
        &errs,
        &format!("{HCM_PATH}.route_config.virtual_hosts[0].routes[0].route.cluster"),
        "unknown cluster \"nope\"",
    );
    assert!(errs.first().path.starts_with("static_resources.listeners[0]"));
}

#[test]
fn duplicates_are_rejected() {
    let mut doc = minimal();
    let listener = doc.pointer("/static_resources/listeners/0").unwrap().clone();
    let cluster = doc.pointer("/static_resources/clusters/0").unwrap().clone();
    doc.pointer_mut("/static_resources/listeners").unwrap().as_array_mut().unwrap().push(listener);
    doc.pointer_mut("/static_resources/clusters").unwrap().as_array_mut().unwrap().push(cluster);
    let errs = errors(&doc);
    assert_error(&errs, "static_resources.listeners[1].name", "duplicate listener name");
    assert_error(&errs, "static_resources.listeners[1].address", "duplicate listener address");
    assert_error(&errs, "static_resources.clusters[1].name", "duplicate cluster name");
}

#[test]
fn domain_rules() {
    let vhosts = json!([
        {"name": "a", "domains": ["*", "a.com", "x.*.com"], "routes": []},
        {"name": "b", "domains": ["A.com", "*"], "routes": []},
    ]);
    let errs = errors(&with(&[(&format!("{HCM}/route_config/virtual_hosts"), vhosts)]));
    let v = format!("{HCM_PATH}.route_config.virtual_hosts");
    assert_error(&errs, &format!("{v}[0].domains[2]"), "wildcard");
    assert_error(&errs, &format!("{v}[1].domains[0]"), "duplicate domain \"A.com\"");
    assert_error(&errs, &format!("{v}[1].domains[1]"), "duplicate domain \"*\"");
    assert_eq!(errs.len(), 3, "{errs}");
}

#[test]
fn listener_address_rules() {
    let errs = errors(&with(&[(
        "/static_resources/listeners/0/address/socket_address",
        json!({"address": "localhost", "port_value": 80, "protocol": "UDP"}),
    )]));
    assert_error(&errs, "static_resources.listeners[0].address.socket_address.protocol", "meshgate supports: TCP");
    let errs = errors(&with(&[(
        "/static_resources/listeners/0/address/socket_address",
        json!({"address": "localhost", "port_value": 80}),
    )]));
    assert_error(&errs, "static_resources.listeners[0].address.socket_address.address", "IP address literal");
    let errs =
        errors(&with(&[("/static_resources/listeners/0/address/socket_address", json!({"address": "127.0.0.1"}))]));
    assert_error(&errs, "static_resources.listeners[0].address.socket_address.port_value", "required");
}

#[test]
fn filter_chain_rules() {
    let mut doc = minimal();
    let chain = doc.pointer("/static_resources/listeners/0/filter_chains/0").unwrap().clone();
    doc.pointer_mut("/static_resources/listeners/0/filter_chains").unwrap().as_array_mut().unwrap().push(chain);
    let errs = errors(&doc);
    assert_error(&errs, "static_resources.listeners[0].filter_chains[1]", "need TLS transport sockets");

    let errs = errors(&with(&[("/static_resources/listeners/0/filter_chains", json!([]))]));
    assert_error(&errs, "static_resources.listeners[0].filter_chains", "exactly one filter chain");
}

#[test]
fn router_must_be_last_and_present() {
    let router = minimal().pointer(&format!("{HCM}/http_filters/0")).unwrap().clone();
    let errs = errors(&with(&[(&format!("{HCM}/http_filters"), json!([router.clone(), router]))]));
    assert_error(&errs, &format!("{HCM_PATH}.http_filters[0]"), "must be the last HTTP filter");

    let errs = errors(&with(&[(&format!("{HCM}/http_filters"), json!([]))]));
    assert_error(&errs, &format!("{HCM_PATH}.http_filters"), "must end with envoy.filters.http.router");

    // Router options are not supported: setting one is an error, not a no-op.
    let errs = errors(&with(&[(&format!("{HCM}/http_filters/0/typed_config/suppress_envoy_headers"), json!(true))]));
    assert_error(
        &errs,
        &format!("{HCM_PATH}.http_filters[0].typed_config.suppress_envoy_headers"),
        "unsupported field (meshgate supports: no fields)",
    );
}

#[test]
fn hcm_value_rules() {
    let mut doc = with(&[
        (&format!("{HCM}/max_request_headers_kb"), json!(9000)),
        (&format!("{HCM}/stream_idle_timeout"), json!("-1s")),
    ]);
    doc.pointer_mut(HCM).unwrap().as_object_mut().unwrap().remove("stat_prefix");
    let errs = errors(&doc);
    assert_error(&errs, &format!("{HCM_PATH}.stat_prefix"), "required");
    assert_error(&errs, &format!("{HCM_PATH}.max_request_headers_kb"), "8192");
    assert_error(&errs, &format!("{HCM_PATH}.stream_idle_timeout"), "negative");
}

#[test]
fn all_errors_are_collected() {
    let errs = errors(&with(&[
        ("/static_resources/clusters/0/upstream_connection_options", json!({})),
        ("/static_resources/clusters/0/connect_timeout", json!("0s")),
        (&format!("{HCM}/route_config/virtual_hosts/0/routes/0/route/cluster"), json!("nope")),
        (
            "/admin",
            json!({"address": {"socket_address": {"address": "127.0.0.1", "port_value": 9901}}, "profile_path": "/tmp/p"}),
        ),
    ]));
    assert_eq!(errs.len(), 4, "{errs}");
    assert_eq!(errs.to_string().lines().count(), 4);
}

// ---------------------------------------------------------------- /config_dump

#[test]
fn config_dump_has_envoys_shape() {
    let cfg = bootstrap::load_file(&data("envoy-basic.yaml")).unwrap();
    // RFC 3339 UTC, second precision.
    assert_eq!(cfg.last_updated.len(), 20, "{}", cfg.last_updated);
    assert!(cfg.last_updated.ends_with('Z'));

    // Canonical JSON with proto field names, `@type` in Anys.
    let tc = &cfg.bootstrap_json["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
    assert_eq!(
        tc["@type"],
        "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
    );
    assert_eq!(tc["stat_prefix"], "ingress_http");
    assert_eq!(cfg.bootstrap_json["static_resources"]["clusters"][0]["connect_timeout"], "0.250s");

    let dump = bootstrap::config_dump_json(&cfg);
    let configs = dump["configs"].as_array().unwrap();
    let types: Vec<_> = configs.iter().map(|c| c["@type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump",
            "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
            "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
            "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
        ]
    );
    assert_eq!(configs[0]["bootstrap"], cfg.bootstrap_json);
    assert_eq!(configs[0]["last_updated"], cfg.last_updated.as_str());
    let clusters = configs[1]["static_clusters"].as_array().unwrap();
    assert_eq!(clusters.len(), 2);
    assert_eq!(clusters[0]["cluster"]["@type"], "type.googleapis.com/envoy.config.cluster.v3.Cluster");
    assert_eq!(clusters[0]["cluster"]["name"], "api_backend");
    assert_eq!(clusters[1]["last_updated"], cfg.last_updated.as_str());
    let listeners = configs[2]["static_listeners"].as_array().unwrap();
    assert_eq!(listeners[0]["listener"]["@type"], "type.googleapis.com/envoy.config.listener.v3.Listener");
    assert_eq!(listeners[0]["listener"]["name"], "listener_http");
    let routes = configs[3]["static_route_configs"].as_array().unwrap();
    assert_eq!(routes.len(), 1);
    assert_eq!(routes[0]["route_config"]["@type"], "type.googleapis.com/envoy.config.route.v3.RouteConfiguration");
    assert_eq!(routes[0]["route_config"]["name"], "local_route");

    // The dump of a bootstrap is itself a loadable bootstrap.
    let again = bootstrap::load_str(&configs[0]["bootstrap"].to_string(), Format::Json, "dump.json").unwrap();
    assert_eq!(again.bootstrap_json, cfg.bootstrap_json);
}

#[test]
fn every_misspelt_name_is_reported_at_once() {
    let errs = errors(&with(&[
        ("/static_resources/listeners/0/colour", json!("blue")),
        ("/static_resources/clusters/0/conect_timeout", json!("1s")),
        (&format!("{HCM}/statPrefx"), json!("x")),
    ]));
    assert_error(&errs, "static_resources.listeners[0].colour", "unknown field `colour`");
    assert_error(&errs, "static_resources.clusters[0].conect_timeout", "envoy.config.cluster.v3.Cluster");
    assert_error(&errs, &format!("{HCM_PATH}.statPrefx"), "unknown field `statPrefx`");
    assert_eq!(errs.len(), 3, "{errs}");
}

#[test]
fn legacy_router_without_typed_config() {
    let cfg =
        load_json(&with(&[(&format!("{HCM}/http_filters/0"), json!({"name": "envoy.filters.http.router"}))])).unwrap();
    assert_eq!(hcm(&cfg).http_filters, vec![model::HttpFilter::Router]);
}

#[test]
fn missing_file_is_one_error_naming_it() {
    let errs = bootstrap::load_file(Path::new("/nonexistent/meshgate.yaml")).unwrap_err();
    assert_eq!(errs.len(), 1);
    assert!(errs.to_string().starts_with("/nonexistent/meshgate.yaml: cannot read"), "{errs}");
}

#[test]
fn upstream_http_protocol_options_rules() {
    let key = "static_resources.clusters[0].typed_extension_protocol_options[\"envoy.extensions.upstreams.http.v3.HttpProtocolOptions\"]";
    let errs = errors(&with(&[(
        "/static_resources/clusters/0/typed_extension_protocol_options",
        json!({"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "common_http_protocol_options": {"idle_timeout": "0s", "max_headers_count": 5}
        }}),
    )]));
    assert_error(&errs, &format!("{key}.common_http_protocol_options.idle_timeout"), "not supported");
    assert_error(
        &errs,
        &format!("{key}.common_http_protocol_options.max_headers_count"),
        "meshgate supports: idle_timeout, max_requests_per_connection",
    );

    let errs = errors(&with(&[(
        "/static_resources/clusters/0/typed_extension_protocol_options",
        json!({"envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"}}),
    )]));
    assert_error(
        &errs,
        "static_resources.clusters[0].typed_extension_protocol_options[\"envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions\"]",
        "unsupported key",
    );
}
