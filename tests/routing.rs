//! Routing end to end, through a real `meshgate` in front of real
//! `mg-upstream` processes named `gray` and `stable`: header-based
//! colouring, an 80/20 weighted split, `cluster_header`, redirects, path and
//! host rewrites, header mutations with `append_action` and variables, and
//! a route's `idle_timeout` overriding the connection manager's.

use std::collections::HashMap;

use testkit::{Client, Echo, Gateway, Response, Upstream};

/// The listener (HCM fields `hcm_extra`; route configuration fields
/// `rc_extra`; one `*` virtual host with `vh_extra` and `routes`) in front
/// of clusters `gray` (upstream 1) and `stable` (upstream 2).  Fragments
/// are YAML at column 0.
fn config(hcm_extra: &str, rc_extra: &str, vh_extra: &str, routes: &str) -> String {
    let cluster = |name: &str, n: usize| {
        format!(
            "  - name: {name}\n    connect_timeout: 1s\n    load_assignment:\n      cluster_name: {name}\n      endpoints:\n      - lb_endpoints:\n        - endpoint: {{ address: {{ socket_address: {{ address: \"{{{{UPSTREAM_{n}}}}}\", port_value: {{{{UPSTREAM_{n}_PORT}}}} }} }} }}\n"
        )
    };
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
{hcm_extra}          route_config:
{rc_extra}            virtual_hosts:
            - name: all
              domains: ["*"]
{vh_extra}              routes:
{routes}          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
{gray}{stable}"#,
        hcm_extra = indent(hcm_extra, 10),
        rc_extra = indent(rc_extra, 12),
        vh_extra = indent(vh_extra, 14),
        routes = indent(routes, 14),
        gray = cluster("gray", 1),
        stable = cluster("stable", 2),
    )
}

fn indent(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    text.lines().filter(|l| !l.trim().is_empty()).map(|l| format!("{pad}{l}\n")).collect()
}

struct Setup {
    _gray: Upstream,
    _stable: Upstream,
    gw: Gateway,
}

#[track_caller]
fn start(hcm_extra: &str, rc_extra: &str, vh_extra: &str, routes: &str) -> Setup {
    let gray = Upstream::start("gray");
    let stable = Upstream::start("stable");
    let gw = Gateway::start(&config(hcm_extra, rc_extra, vh_extra, routes), &[gray.addr, stable.addr], &[]);
    Setup { _gray: gray, _stable: stable, gw }
}

fn upstream_of(r: &Response) -> &str {
    r.header("x-upstream-name").unwrap_or("<local reply>")
}

#[test]
fn header_matched_traffic_goes_to_gray_the_rest_to_stable() {
    let s = start(
        "",
        "",
        "",
        r#"
- match:
    prefix: "/"
    headers:
    - name: x-env
      string_match: { exact: gray }
  route: { cluster: gray }
- match: { prefix: "/" }
  route: { cluster: stable }
"#,
    );
    let mut c = Client::connect(s.gw.listener_addr);
    for i in 0..40 {
        let coloured = i % 2 == 0;
        let headers: &[(&str, &str)] = if coloured { &[("x-env", "gray")] } else { &[] };
        let r = c.request("GET", &format!("/item/{i}"), headers, b"");
        assert_eq!(r.status, 200);
        assert_eq!(upstream_of(&r), if coloured { "gray" } else { "stable" }, "request {i}");
    }
    // Other values and other casings of the value are not gray.
    for v in ["blue", "Gray", "grayish"] {
        let r = c.request("GET", "/", &[("x-env", v)], b"");
        assert_eq!(upstream_of(&r), "stable", "x-env: {v:?}");
    }
}

#[test]
fn weighted_80_20_split_over_2000_requests() {
    let s = start(
        "",
        "",
        "",
        r#"
- match: { prefix: "/" }
  route:
    weighted_clusters:
      clusters:
      - { name: stable, weight: 80 }
      - { name: gray, weight: 20 }
"#,
    );
    let mut counts: HashMap<String, u32> = HashMap::new();
    // Several connections, so several shards' generators take part.
    let mut clients: Vec<Client> = (0..4).map(|_| Client::connect(s.gw.listener_addr)).collect();
    for i in 0..2000 {
        let r = clients[i % 4].get("/");
        assert_eq!(r.status, 200);
        *counts.entry(upstream_of(&r).to_string()).or_default() += 1;
    }
    let stable = counts.get("stable").copied().unwrap_or(0);
    let gray = counts.get("gray").copied().unwrap_or(0);
    assert_eq!(stable + gray, 2000, "{counts:?}");
    let share = f64::from(stable) / 2000.0;
    assert!((share - 0.80).abs() <= 0.05, "stable got {:.1}% of 2000 requests ({counts:?})", share * 100.0);
}

#[test]
fn weighted_pick_follows_the_random_value_header() {
    let s = start(
        "",
        "",
        "",
        r#"
- match: { prefix: "/" }
  route:
    weighted_clusters:
      header_name: x-random
      clusters:
      - { name: stable, weight: 80 }
      - { name: gray, weight: 20 }
"#,
    );
    let mut c = Client::connect(s.gw.listener_addr);
    for (value, want) in [("0", "stable"), ("79", "stable"), ("80", "gray"), ("99", "gray"), ("180", "gray")] {
        let r = c.request("GET", "/", &[("x-random", value)], b"");
        assert_eq!(upstream_of(&r), want, "x-random: {value}");
    }
}

#[test]
fn cluster_header_routes_by_request_header() {
    let s = start(
        "",
        "",
        "",
        r#"
- match: { prefix: "/strict" }
  route: { cluster_header: x-target, cluster_not_found_response_code: NOT_FOUND }
- match: { prefix: "/" }
  route: { cluster_header: x-target }
"#,
    );
    let mut c = Client::connect(s.gw.listener_addr);
    assert_eq!(upstream_of(&c.request("GET", "/", &[("x-target", "gray")], b"")), "gray");
    assert_eq!(upstream_of(&c.request("GET", "/", &[("x-target", "stable")], b"")), "stable");
    // Absent or naming no cluster: cluster_not_found_response_code (503 by default).
    assert_eq!(c.request("GET", "/", &[], b"").status, 503);
    assert_eq!(c.request("GET", "/", &[("x-target", "nope")], b"").status, 503);
    assert_eq!(c.request("GET", "/strict", &[("x-target", "nope")], b"").status, 404);
    assert_eq!(s.gw.stat("http.ingress.no_cluster"), 3);
}

#[test]
fn redirects() {
    let s = start(
        "",
        "",
        "",
        r#"
- match: { prefix: "/secure" }
  redirect: { https_redirect: true }
- match: { prefix: "/moved" }
  redirect: { host_redirect: new.example, port_redirect: 8443, path_redirect: "/landing", strip_query: true, response_code: PERMANENT_REDIRECT }
- match: { prefix: "/old/" }
  redirect: { prefix_rewrite: "/new/", response_code: FOUND }
- match: { safe_regex: { regex: "/user/([0-9]+)" } }
  redirect: { regex_rewrite: { pattern: { regex: "^/user/([0-9]+)$" }, substitution: "/profiles/\\1" }, response_code: TEMPORARY_REDIRECT }
- match: { path: "/created" }
  direct_response: { status: 201 }
"#,
    );
    let mut c = Client::connect(s.gw.listener_addr);
    let r = c.request("GET", "/secure/page?x=1", &[("host", "shop.example:80")], b"");
    assert_eq!(r.status, 301, "MOVED_PERMANENTLY is the default");
    assert_eq!(r.header("location"), Some("https://shop.example/secure/page?x=1"), "the http default port goes");
    assert_eq!(r.header("content-length"), Some("0"));
    let r = c.request("GET", "/secure", &[("host", "shop.example:8080")], b"");
    assert_eq!(r.header("location"), Some("https://shop.example:8080/secure"));
    let r = c.request("GET", "/moved/x?drop=1", &[("host", "shop.example")], b"");
    assert_eq!(r.status, 308);
    assert_eq!(r.header("location"), Some("http://new.example:8443/landing"));
    let r = c.request("GET", "/old/a/b?keep=1", &[("host", "h")], b"");
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("http://h/new/a/b?keep=1"));
    let r = c.request("GET", "/user/42", &[("host", "h")], b"");
    assert_eq!(r.status, 307);
    assert_eq!(r.header("location"), Some("http://h/profiles/42"));
    // A 201 direct response points at the request's own URL (as Envoy's does).
    let r = c.request("POST", "/created", &[("host", "h")], b"x");
    assert_eq!(r.status, 201);
    assert_eq!(r.header("location"), Some("http://h/created"));
    assert_eq!(s.gw.stat("http.ingress.rq_redirect"), 5);
}

#[test]
fn path_and_host_rewrites() {
    let s = start(
        "",
        "",
        "",
        r#"
- match: { prefix: "/api/" }
  route: { cluster: stable, prefix_rewrite: "/echo/", host_rewrite_literal: backend.internal }
- match: { path_separated_prefix: "/svc" }
  route:
    cluster: stable
    regex_rewrite: { pattern: { regex: "^/svc(/.*)?$" }, substitution: "/echo/svc\\1" }
    host_rewrite_header: x-backend-host
    append_x_forwarded_host: true
- match: { prefix: "/" }
  route: { cluster: stable }
"#,
    );
    let mut c = Client::connect(s.gw.listener_addr);
    let r = c.request("GET", "/api/users?id=7", &[("host", "public.example")], b"");
    assert_eq!(r.status, 200);
    let e = Echo::from_response(&r);
    assert_eq!(e.path, "/echo/users?id=7");
    assert_eq!(e.header("host"), Some("backend.internal"));
    assert_eq!(e.header("x-envoy-original-host"), Some("public.example"));
    assert_eq!(e.header("x-envoy-original-path"), Some("/api/users?id=7"));

    let r = c.request("GET", "/svc/a/b?q", &[("host", "public.example"), ("x-backend-host", "svc.internal")], b"");
    let e = Echo::from_response(&r);
    assert_eq!(e.path, "/echo/svc/a/b?q");
    assert_eq!(e.header("host"), Some("svc.internal"));
    assert_eq!(e.header("x-forwarded-host"), Some("public.example"));
    // Without the header the Host is left alone.
    let r = c.request("GET", "/svc", &[("host", "public.example")], b"");
    let e = Echo::from_response(&r);
    assert_eq!(e.path, "/echo/svc");
    assert_eq!(e.header("host"), Some("public.example"));
    assert!(!e.has_header("x-envoy-original-host"));
    // Not a separated prefix of /svcx: falls through, unrewritten.
    let r = c.request("GET", "/svcx", &[], b"");
    assert_eq!(r.body_str(), "hello from stable\n");
    let r = c.request("GET", "/echo/plain", &[], b"");
    assert!(!Echo::from_response(&r).has_header("x-envoy-original-path"));
}

#[test]
fn header_mutations_with_append_action_at_every_level() {
    let s = start(
        "",
        r#"
request_headers_to_add:
- header: { key: x-level, value: config }
- header: { key: x-winner, value: config }
  append_action: OVERWRITE_IF_EXISTS_OR_ADD
response_headers_to_add:
- header: { key: x-served-by, value: meshgate }
"#,
        r#"
request_headers_to_add:
- header: { key: x-level, value: vhost }
- header: { key: x-winner, value: vhost }
  append_action: OVERWRITE_IF_EXISTS_OR_ADD
"#,
        r#"
- match: { prefix: "/direct" }
  direct_response: { status: 200, body: { inline_string: "ok" } }
  response_headers_to_add:
  - header: { key: x-direct, value: "yes" }
- match: { prefix: "/" }
  route: { cluster: gray }
  request_headers_to_add:
  - header: { key: x-level, value: route }
  - header: { key: x-client, value: "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%" }
  - header: { key: x-existing, value: added }
    append_action: ADD_IF_ABSENT
  - header: { key: x-absent, value: added }
    append_action: ADD_IF_ABSENT
  - header: { key: x-replace, value: replaced }
    append_action: OVERWRITE_IF_EXISTS
  - header: { key: x-not-there, value: replaced }
    append_action: OVERWRITE_IF_EXISTS
  - header: { key: x-copy, value: "id=%REQ(x-id)%" }
  - header: { key: x-empty, value: "%REQ(x-missing)%" }
  - header: { key: x-kept, value: "%REQ(x-missing)%" }
    keep_empty_value: true
  - header: { key: x-pct, value: "100%%" }
  request_headers_to_remove: [x-secret]
  response_headers_to_add:
  - header: { key: x-upstream-addr, value: "%UPSTREAM_REMOTE_ADDRESS%" }
  - header: { key: x-upstream-name, value: overwritten }
    append_action: OVERWRITE_IF_EXISTS_OR_ADD
  - header: { key: x-echo-id, value: "%REQ(x-id)%" }
  response_headers_to_remove: [x-upstream-conn]
"#,
    );
    let mut c = Client::connect(s.gw.listener_addr);
    let headers = [("x-existing", "orig"), ("x-replace", "orig"), ("x-id", "42"), ("x-secret", "s3cr3t")];
    let r = c.request("GET", "/echo", &headers, b"");
    assert_eq!(r.status, 200);
    let e = Echo::from_response(&r);
    // Most specific first, so the route configuration has the last word.
    assert_eq!(e.header_all("x-level"), vec!["route", "vhost", "config"]);
    assert_eq!(e.header_all("x-winner"), vec!["config"]);
    assert_eq!(e.header("x-client"), Some("127.0.0.1"));
    assert_eq!(e.header_all("x-existing"), vec!["orig"]);
    assert_eq!(e.header("x-absent"), Some("added"));
    assert_eq!(e.header_all("x-replace"), vec!["replaced"]);
    assert!(!e.has_header("x-not-there"));
    assert_eq!(e.header("x-copy"), Some("id=42"));
    assert!(!e.has_header("x-empty"), "an empty value is dropped");
    assert_eq!(e.header("x-kept"), Some(""));
    assert_eq!(e.header("x-pct"), Some("100%"));
    assert!(!e.has_header("x-secret"));
    // Response side, on the upstream's response.
    assert_eq!(r.header("x-served-by"), Some("meshgate"));
    let upstream = s._gray.addr.to_string();
    assert_eq!(r.header("x-upstream-addr"), Some(upstream.as_str()));
    assert_eq!(r.header_all("x-upstream-name"), vec!["overwritten"]);
    assert_eq!(r.header("x-echo-id"), Some("42"));
    assert!(!r.has_header("x-upstream-conn"));
    // ... and on a direct response.
    let r = c.request("GET", "/direct", &[], b"");
    assert_eq!(r.body_str(), "ok");
    assert_eq!(r.header("x-direct"), Some("yes"));
    assert_eq!(r.header("x-served-by"), Some("meshgate"));
    assert_eq!(r.header("content-length"), Some("2"));
}

#[test]
fn query_parameters_and_regex_routes() {
    let s = start(
        "",
        "",
        "",
        r#"
- match:
    prefix: "/"
    query_parameters:
    - { name: canary, string_match: { exact: "1" } }
  route: { cluster: gray }
- match: { safe_regex: { regex: "/v[0-9]+/gray/.*" } }
  route: { cluster: gray }
- match: { prefix: "/" }
  route: { cluster: stable }
"#,
    );
    let mut c = Client::connect(s.gw.listener_addr);
    assert_eq!(upstream_of(&c.get("/x?canary=1")), "gray");
    assert_eq!(upstream_of(&c.get("/x?a=b&canary=1")), "gray");
    assert_eq!(upstream_of(&c.get("/x?canary=0&canary=1")), "stable", "first occurrence only");
    assert_eq!(upstream_of(&c.get("/v2/gray/x?y")), "gray");
    assert_eq!(upstream_of(&c.get("/v2x/gray/x")), "stable");
}

#[test]
fn route_idle_timeout_overrides_the_connection_managers() {
    let s = start(
        "stream_idle_timeout: 0.3s",
        "",
        "",
        r#"
- match: { prefix: "/fast-idle/" }
  route: { cluster: stable, prefix_rewrite: "/", idle_timeout: 0.2s }
- match: { prefix: "/no-idle/" }
  route: { cluster: stable, prefix_rewrite: "/", idle_timeout: 0s }
- match: { prefix: "/" }
  route: { cluster: stable }
"#,
    );
    let mut c = Client::connect(s.gw.listener_addr);
    // The route's 0.2 s fires before the upstream answers after 0.25 s...
    let r = c.get("/fast-idle/delay/250");
    assert_eq!(r.status, 408, "{}", r.body_str());
    let mut c = Client::connect(s.gw.listener_addr);
    // ... where the HCM's 0.3 s would not have.
    assert_eq!(c.get("/delay/250").status, 200);
    // 0s disables it: 0.6 s of silence is fine on this route...
    assert_eq!(c.get("/no-idle/delay/600").status, 200);
    // ... but not on the others.
    let mut c = Client::connect(s.gw.listener_addr);
    assert_eq!(c.get("/delay/600").status, 408);
}

#[test]
fn auto_host_rewrite_uses_the_dns_name_of_the_picked_endpoint() {
    let gray = Upstream::start("gray");
    let stable = Upstream::start("stable");
    let mut yaml = config(
        "",
        "",
        "",
        r#"
- match: { prefix: "/dns" }
  route: { cluster: by-name, prefix_rewrite: "/echo", auto_host_rewrite: true }
- match: { prefix: "/ip" }
  route: { cluster: stable, prefix_rewrite: "/echo", auto_host_rewrite: true }
"#,
    );
    yaml.push_str(
        "  - name: by-name\n    type: STRICT_DNS\n    connect_timeout: 1s\n    dns_refresh_rate: 0.2s\n    load_assignment:\n      cluster_name: by-name\n      endpoints:\n      - lb_endpoints:\n        - endpoint: { address: { socket_address: { address: localhost, port_value: {{UPSTREAM_1_PORT}} } } }\n",
    );
    let gw = Gateway::start(&yaml, &[gray.addr, stable.addr], &[]);
    let mut c = Client::connect(gw.listener_addr);
    // The name resolves in the background; until then the cluster is empty.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let r = loop {
        let r = c.request("GET", "/dns", &[("host", "h.example")], b"");
        if r.status == 200 || std::time::Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(r.status, 200, "{}", r.body_str());
    let e = Echo::from_response(&r);
    assert_eq!(e.header("host"), Some("localhost"));
    assert_eq!(e.header("x-envoy-original-host"), Some("h.example"));
    // An IP endpoint has no host name: the Host is kept.
    let e = Echo::from_response(&c.request("GET", "/ip", &[("host", "h.example")], b""));
    assert_eq!(e.header("host"), Some("h.example"));
    assert!(!e.has_header("x-envoy-original-host"));
}
