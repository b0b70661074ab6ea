//! The loader's load-balancing fields: `lb_policy` and its configs,
//! `common_lb_config`, `load_assignment.policy`, priorities, aggregate
//! clusters and the route's `hash_policy` — defaults, translation, and the
//! path each rejection names.

use control::bootstrap::{self, Format};
use control::error::ConfigErrors;
use control::model::{self, CookieHashPolicy, DiscoveryType, HashPolicy, HashPolicyKind, LbPolicy, RouteAction};

/// Listener → HCM (route `/` → `{cluster}` with `{route_extra}`) and the
/// clusters given.
fn config(route_extra: &str, clusters: &str) -> String {
    format!(
        r#"
static_resources:
  listeners:
  - name: l
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 8080 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: vh
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route:
                  cluster: backend
{route_extra}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
{clusters}
"#,
        route_extra = indent(route_extra, 18),
        clusters = indent(clusters, 2),
    )
}

fn indent(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    text.lines().filter(|l| !l.trim().is_empty()).map(|l| format!("{pad}{l}\n")).collect()
}

/// A STATIC cluster `name` with one endpoint per (port, priority, weight).
fn static_cluster(name: &str, extra: &str, endpoints: &[(u16, u32, u32)]) -> String {
    let mut s = format!("- name: {name}\n  type: STATIC\n");
    for l in extra.lines().filter(|l| !l.trim().is_empty()) {
        s.push_str(&format!("  {l}\n"));
    }
    s.push_str(&format!("  load_assignment:\n    cluster_name: {name}\n    endpoints:\n"));
    for (port, priority, weight) in endpoints {
        s.push_str(&format!(
            "    - priority: {priority}\n      lb_endpoints:\n      - load_balancing_weight: {weight}\n        endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }}\n"
        ));
    }
    s
}

fn load(text: &str) -> Result<model::Config, ConfigErrors> {
    bootstrap::load_str(text, Format::Yaml, "lb.yaml")
}

fn ok(text: &str) -> model::Config {
    load(text).unwrap_or_else(|e| panic!("{e}\n--- config ---\n{text}"))
}

#[track_caller]
fn assert_error(text: &str, path: &str, needle: &str) {
    let errs = match load(text) {
        Ok(_) => panic!("expected an error at {path}\n{text}"),
        Err(e) => e,
    };
    assert!(
        errs.iter().any(|e| e.path == path && e.message.contains(needle)),
        "no error at {path:?} containing {needle:?}; got:\n{errs}"
    );
}

const C0: &str = "static_resources.clusters[0]";

fn backend(cfg: &model::Config) -> &model::Cluster {
    &cfg.clusters["backend"]
}

fn hash_policy(cfg: &model::Config) -> Vec<HashPolicy> {
    let vh = &cfg.listeners[0].http.route_config.virtual_hosts[0];
    match &vh.routes[0].action {
        RouteAction::Forward(f) => f.hash_policy.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn defaults() {
    let cfg = ok(&config("", &static_cluster("backend", "", &[(9000, 0, 1)])));
    let c = backend(&cfg);
    assert_eq!(c.lb_policy, LbPolicy::RoundRobin);
    assert_eq!(c.overprovisioning_factor, 140);
    assert!(!c.weighted_priority_health);
    assert_eq!(c.healthy_panic_threshold, 50);
    assert!(c.aggregate_clusters.is_empty());
    assert!(hash_policy(&cfg).is_empty());
}

#[test]
fn policies_and_their_configs() {
    let cases: &[(&str, LbPolicy)] = &[
        ("lb_policy: RANDOM", LbPolicy::Random),
        ("lb_policy: LEAST_REQUEST", LbPolicy::LeastRequest { choice_count: 2, active_request_bias: 1.0 }),
        (
            "lb_policy: LEAST_REQUEST\nleast_request_lb_config: { choice_count: 3, active_request_bias: { default_value: 0.5, runtime_key: lr.bias } }",
            LbPolicy::LeastRequest { choice_count: 3, active_request_bias: 0.5 },
        ),
        ("lb_policy: RING_HASH", LbPolicy::RingHash { minimum_ring_size: 1024, maximum_ring_size: 8 << 20 }),
        (
            "lb_policy: RING_HASH\nring_hash_lb_config: { minimum_ring_size: 64, maximum_ring_size: 4096, hash_function: XX_HASH }",
            LbPolicy::RingHash { minimum_ring_size: 64, maximum_ring_size: 4096 },
        ),
        ("lb_policy: MAGLEV", LbPolicy::Maglev { table_size: 65537 }),
        ("lb_policy: MAGLEV\nmaglev_lb_config: { table_size: 251 }", LbPolicy::Maglev { table_size: 251 }),
        ("lb_policy: ROUND_ROBIN\nround_robin_lb_config: {}", LbPolicy::RoundRobin),
    ];
    for (extra, want) in cases {
        let cfg = ok(&config("", &static_cluster("backend", extra, &[(9000, 0, 1)])));
        assert_eq!(backend(&cfg).lb_policy, *want, "{extra}");
    }
}

#[test]
fn lowercamel_json_names_work_too() {
    let text = config(
        "",
        &static_cluster("backend", "lbPolicy: RING_HASH\nringHashLbConfig: { minimumRingSize: 128 }", &[(9000, 0, 1)]),
    );
    let cfg = ok(&text);
    assert_eq!(backend(&cfg).lb_policy, LbPolicy::RingHash { minimum_ring_size: 128, maximum_ring_size: 8 << 20 });
}

#[test]
fn invalid_lb_configs_name_their_field() {
    let c = |extra: &str| config("", &static_cluster("backend", extra, &[(9000, 0, 1)]));
    assert_error(
        &c("lb_policy: RING_HASH\nring_hash_lb_config: { minimum_ring_size: 4096, maximum_ring_size: 1024 }"),
        &format!("{C0}.ring_hash_lb_config.minimum_ring_size"),
        "minimum_ring_size (4096) > maximum_ring_size (1024)",
    );
    assert_error(
        &c("lb_policy: RING_HASH\nring_hash_lb_config: { hash_function: MURMUR_HASH_2 }"),
        &format!("{C0}.ring_hash_lb_config.hash_function"),
        "unsupported value MURMUR_HASH_2 (meshgate supports: XX_HASH)",
    );
    assert_error(
        &c("lb_policy: MAGLEV\nmaglev_lb_config: { table_size: 65536 }"),
        &format!("{C0}.maglev_lb_config.table_size"),
        "must be a prime number",
    );
    assert_error(
        &c("lb_policy: LEAST_REQUEST\nleast_request_lb_config: { choice_count: 1 }"),
        &format!("{C0}.least_request_lb_config.choice_count"),
        "below the minimum of 2",
    );
    assert_error(
        &c("lb_policy: LEAST_REQUEST\nleast_request_lb_config: { active_request_bias: { default_value: -1, runtime_key: k } }"),
        &format!("{C0}.least_request_lb_config.active_request_bias.default_value"),
        "not a non-negative number",
    );
    // A config for another policy would be ignored: Envoy refuses it too.
    assert_error(
        &c("lb_policy: ROUND_ROBIN\nmaglev_lb_config: { table_size: 251 }"),
        &format!("{C0}.maglev_lb_config"),
        "does not apply to lb_policy ROUND_ROBIN",
    );
    assert_error(
        &c("lb_policy: LEAST_REQUEST\nleast_request_lb_config: { slow_start_config: { slow_start_window: 1s } }"),
        &format!("{C0}.least_request_lb_config.slow_start_config"),
        "unsupported field",
    );
    assert_error(&c("lb_policy: LOAD_BALANCING_POLICY_CONFIG"), &format!("{C0}.lb_policy"), "unsupported value");
    assert_error(
        &c("common_lb_config: { consistent_hashing_lb_config: { use_hostname_for_hashing: true } }"),
        &format!("{C0}.common_lb_config.consistent_hashing_lb_config"),
        "meshgate supports: healthy_panic_threshold",
    );
}

#[test]
fn panic_threshold_and_assignment_policy() {
    let extra = "common_lb_config: { healthy_panic_threshold: { value: 25.6 } }";
    let mut text = static_cluster("backend", extra, &[(9000, 0, 1), (9001, 1, 3)]);
    text.push_str("    policy: { overprovisioning_factor: 100, weighted_priority_health: true }\n");
    let cfg = ok(&config("", &text));
    let c = backend(&cfg);
    assert_eq!(c.healthy_panic_threshold, 26);
    assert_eq!(c.overprovisioning_factor, 100);
    assert!(c.weighted_priority_health);
    let eps: Vec<(u32, u32)> = c.endpoints.iter().map(|e| (e.priority, e.weight)).collect();
    assert_eq!(eps, vec![(0, 1), (1, 3)]);

    let bad =
        static_cluster("backend", "common_lb_config: { healthy_panic_threshold: { value: 120 } }", &[(9000, 0, 1)]);
    assert_error(
        &config("", &bad),
        &format!("{C0}.common_lb_config.healthy_panic_threshold.value"),
        "not a percentage",
    );
    let mut zero = static_cluster("backend", "", &[(9000, 0, 1)]);
    zero.push_str("    policy: { overprovisioning_factor: 0 }\n");
    assert_error(&config("", &zero), &format!("{C0}.load_assignment.policy.overprovisioning_factor"), "greater than 0");
    let mut drops = static_cluster("backend", "", &[(9000, 0, 1)]);
    drops.push_str("    policy: { drop_overloads: [{ category: x, drop_percentage: { numerator: 1 } }] }\n");
    assert_error(&config("", &drops), &format!("{C0}.load_assignment.policy.drop_overloads"), "unsupported field");
    let high = static_cluster("backend", "", &[(9000, 129, 1)]);
    assert_error(&config("", &high), &format!("{C0}.load_assignment.endpoints[0].priority"), "maximum of 128");
}

const AGGREGATE: &str = r#"- name: backend
  connect_timeout: 1s
  lb_policy: CLUSTER_PROVIDED
  cluster_type:
    name: envoy.clusters.aggregate
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.clusters.aggregate.v3.ClusterConfig
      clusters: [primary, secondary]
"#;

fn aggregate_with(members: &str) -> String {
    format!("{AGGREGATE}{}{}", static_cluster("primary", "", &[(9000, 0, 1)]), members)
}

#[test]
fn aggregate_cluster_loads() {
    let cfg = ok(&config("", &aggregate_with(&static_cluster("secondary", "lb_policy: MAGLEV", &[(9001, 0, 1)]))));
    let c = backend(&cfg);
    assert_eq!(c.discovery, DiscoveryType::Aggregate);
    assert_eq!(c.lb_policy, LbPolicy::ClusterProvided);
    assert_eq!(c.aggregate_clusters, vec!["primary".to_string(), "secondary".to_string()]);
    assert!(c.endpoints.is_empty());
}

#[test]
fn aggregate_cluster_rules() {
    let secondary = static_cluster("secondary", "", &[(9001, 0, 1)]);
    let member_path = "static_resources.clusters[0].cluster_type.typed_config.clusters";
    // Unknown member.
    assert_error(&config("", &aggregate_with("")), &format!("{member_path}[1]"), "unknown cluster \"secondary\"");
    // Self-reference and nesting.
    let selfref = AGGREGATE.replace("[primary, secondary]", "[primary, backend]");
    assert_error(
        &config("", &format!("{selfref}{}", static_cluster("primary", "", &[(9000, 0, 1)]))),
        &format!("{member_path}[1]"),
        "cannot contain itself",
    );
    let nested = format!(
        "{}{}{}",
        AGGREGATE,
        static_cluster("primary", "", &[(9000, 0, 1)]),
        AGGREGATE.replace("name: backend", "name: secondary").replace("[primary, secondary]", "[primary]")
    );
    assert_error(&config("", &nested), &format!("{member_path}[1]"), "itself an aggregate cluster");
    // Duplicates.
    let dup = AGGREGATE.replace("[primary, secondary]", "[primary, primary]");
    assert_error(
        &config("", &format!("{dup}{}", static_cluster("primary", "", &[(9000, 0, 1)]))),
        &format!("{member_path}[1]"),
        "listed twice",
    );
    // lb_policy pairing, both ways.
    let rr = AGGREGATE.replace("  lb_policy: CLUSTER_PROVIDED\n", "");
    assert_error(
        &config("", &format!("{rr}{}{secondary}", static_cluster("primary", "", &[(9000, 0, 1)]))),
        &format!("{C0}.lb_policy"),
        "must be CLUSTER_PROVIDED, not ROUND_ROBIN",
    );
    let provided = static_cluster("backend", "lb_policy: CLUSTER_PROVIDED", &[(9000, 0, 1)]);
    assert_error(&config("", &provided), &format!("{C0}.lb_policy"), "CLUSTER_PROVIDED needs a cluster type");
    // Endpoints of its own would be ignored.
    let with_eps = format!(
        "{AGGREGATE}  load_assignment: {{ cluster_name: backend }}\n{}{secondary}",
        static_cluster("primary", "", &[(9000, 0, 1)])
    );
    assert_error(&config("", &with_eps), &format!("{C0}.load_assignment"), "no endpoints of its own");
    // Other custom cluster types.
    let other = AGGREGATE.replace("name: envoy.clusters.aggregate", "name: envoy.clusters.redis");
    assert_error(
        &config("", &format!("{other}{}{secondary}", static_cluster("primary", "", &[(9000, 0, 1)]))),
        &format!("{C0}.cluster_type.name"),
        "meshgate supports: envoy.clusters.aggregate",
    );
}

#[test]
fn hash_policies_translate() {
    let route = r#"hash_policy:
- header: { header_name: X-User }
  terminal: true
- cookie: { name: sid, ttl: 3600.5s, path: /app, attributes: [{ name: SameSite, value: Lax }, { name: Secure }] }
- connection_properties: { source_ip: true }
- connection_properties: { source_ip: false }
- query_parameter: { name: id }
- cookie: { name: plain }
"#;
    let cfg = ok(&config(route, &static_cluster("backend", "lb_policy: RING_HASH", &[(9000, 0, 1)])));
    let hp = hash_policy(&cfg);
    assert_eq!(
        hp,
        vec![
            HashPolicy { kind: HashPolicyKind::Header { name: "x-user".into() }, terminal: true },
            HashPolicy {
                kind: HashPolicyKind::Cookie(CookieHashPolicy {
                    name: "sid".into(),
                    ttl_seconds: Some(3600),
                    path: "/app".into(),
                    attributes: vec![("SameSite".into(), "Lax".into()), ("Secure".into(), String::new())],
                }),
                terminal: false,
            },
            HashPolicy { kind: HashPolicyKind::SourceIp, terminal: false },
            HashPolicy { kind: HashPolicyKind::QueryParameter { name: "id".into() }, terminal: false },
            HashPolicy {
                kind: HashPolicyKind::Cookie(CookieHashPolicy {
                    name: "plain".into(),
                    ttl_seconds: None,
                    path: String::new(),
                    attributes: Vec::new(),
                }),
                terminal: false,
            },
        ]
    );
}

#[test]
fn unsupported_hash_policies_name_their_field() {
    let c = |route: &str| config(route, &static_cluster("backend", "lb_policy: RING_HASH", &[(9000, 0, 1)]));
    let route_path = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].routes[0].route";
    assert_error(
        &c("hash_policy: [{ filter_state: { key: k } }]"),
        &format!("{route_path}.hash_policy[0].filter_state"),
        "unsupported field",
    );
    assert_error(
        &c("hash_policy: [{ header: { header_name: x, regex_rewrite: { pattern: { regex: a }, substitution: b } } }]"),
        &format!("{route_path}.hash_policy[0].header.regex_rewrite"),
        "unsupported field",
    );
    assert_error(
        &c("hash_policy: [{ header: { header_name: \":scheme\" } }]"),
        &format!("{route_path}.hash_policy[0].header.header_name"),
        "unsupported pseudo-header",
    );
    assert_error(
        &c("hash_policy: [{ cookie: { name: \"a b\" } }]"),
        &format!("{route_path}.hash_policy[0].cookie.name"),
        "not a valid cookie name",
    );
    assert_error(&c("hash_policy: [{ terminal: true }]"), &format!("{route_path}.hash_policy[0]"), "needs one of");
}
