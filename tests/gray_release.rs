//! The origin design's gray-release recipe, end to end, with two real
//! `mg-upstream` versions of a service behind `meshgate`:
//!
//! * **business gray** — chosen users go to the new version: a route with a
//!   header matcher on a user-group header, or on a cookie, ahead of the
//!   default route;
//! * **traffic gray** — a share of everyone else goes to the new version:
//!   `weighted_clusters`.
//!
//! Both in one route table, as operators combine them.  Moving the share
//! (10% → 50% → 100%) is a config change; switching a running gateway
//! over xDS without a failed request is tests/gray_release_xds.rs.

use testkit::{Client, Gateway, Upstream};

fn config(v2_weight: u32) -> String {
    let v1_weight = 100 - v2_weight;
    format!(
        r#"admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {{{{ADMIN_PORT}}}} }} }}
static_resources:
  listeners:
  - name: ingress
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {{{{LISTEN_PORT}}}} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            name: local
            virtual_hosts:
            - name: shop
              domains: ["*"]
              routes:
              # Business gray, by user group header.
              - match:
                  prefix: "/"
                  headers:
                  - name: x-user-group
                    string_match: {{ exact: gray }}
                route: {{ cluster: shop_v2 }}
              # Business gray, by cookie.
              - match:
                  prefix: "/"
                  headers:
                  - name: cookie
                    string_match: {{ safe_regex: {{ regex: "(.*;\\s*)?gray=1(;.*)?" }} }}
                route: {{ cluster: shop_v2 }}
              # Traffic gray for everyone else.
              - match: {{ prefix: "/" }}
                route:
                  weighted_clusters:
                    clusters:
                    - {{ name: shop_v1, weight: {v1_weight} }}
                    - {{ name: shop_v2, weight: {v2_weight} }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
  clusters:
  - name: shop_v1
    load_assignment:
      cluster_name: shop_v1
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: "{{{{UPSTREAM_1}}}}", port_value: {{{{UPSTREAM_1_PORT}}}} }} }} }}
  - name: shop_v2
    load_assignment:
      cluster_name: shop_v2
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: "{{{{UPSTREAM_2}}}}", port_value: {{{{UPSTREAM_2_PORT}}}} }} }} }}
"#
    )
}

fn version(c: &mut Client, headers: &[(&str, &str)]) -> String {
    let r = c.request("GET", "/cart", headers, b"");
    assert_eq!(r.status, 200, "{}", r.body_str());
    r.body_str().trim().trim_start_matches("hello from ").to_string()
}

#[test]
fn business_gray_by_header_and_cookie() {
    let (v1, v2) = (Upstream::start("v1"), Upstream::start("v2"));
    // No traffic share: only chosen users see v2.
    let gw = Gateway::start(&config(0), &[v1.addr, v2.addr], &[]);
    let mut c = Client::connect(gw.listener_addr);
    for _ in 0..20 {
        assert_eq!(version(&mut c, &[]), "v1");
    }
    assert_eq!(version(&mut c, &[("x-user-group", "gray")]), "v2");
    assert_eq!(version(&mut c, &[("x-user-group", "stable")]), "v1");
    assert_eq!(version(&mut c, &[("cookie", "session=abc; gray=1")]), "v2");
    assert_eq!(version(&mut c, &[("cookie", "gray=1")]), "v2");
    assert_eq!(version(&mut c, &[("cookie", "gray=10; nogray=1")]), "v1");
    assert_eq!(version(&mut c, &[("cookie", "session=abc")]), "v1");
}

#[test]
fn traffic_gray_by_weight_with_business_gray_on_top() {
    let (v1, v2) = (Upstream::start("v1"), Upstream::start("v2"));
    let gw = Gateway::start(&config(10), &[v1.addr, v2.addr], &[]);
    let mut c = Client::connect(gw.listener_addr);
    const TOTAL: usize = 2_000;
    let on_v2 = (0..TOTAL).filter(|_| version(&mut c, &[]) == "v2").count();
    let share = on_v2 as f64 / TOTAL as f64;
    eprintln!("v2 share {share:.3}");
    assert!((share - 0.10).abs() <= 0.03, "v2 got {share} of the traffic, configured 10%");
    // Gray users stay on v2 whatever the split.
    for _ in 0..50 {
        assert_eq!(version(&mut c, &[("x-user-group", "gray")]), "v2");
    }
    assert_eq!(
        gw.stat("cluster.shop_v1.upstream_rq_completed") + gw.stat("cluster.shop_v2.upstream_rq_completed"),
        TOTAL as u64 + 50
    );
}
