//! End-to-end RBAC through a real `meshgate` in front of a real
//! `mg-upstream`: listed CIDRs pass, others get Envoy's 403 on a connection
//! that stays usable, a spoofed `x-forwarded-for` never passes a
//! `direct_remote_ip` whitelist, shadow rules only count, per-route
//! overrides open or lock a route, the network filter closes denied
//! connections, and a 10,000-entry whitelist loads and enforces.
//!
//! Every client here is on loopback; the source address is varied by binding
//! the client socket to another 127/8 address (127.0.0.5) before connecting.

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use socket2::{Domain, Socket, Type};
use testkit::{build_request, try_read_response, Gateway, Response, Upstream};

/// A keep-alive connection from a chosen local address.
struct From {
    reader: BufReader<TcpStream>,
}

impl From {
    #[track_caller]
    fn connect(src: &str, dst: SocketAddr) -> From {
        let sock = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        let src: SocketAddr = format!("{src}:0").parse().unwrap();
        sock.bind(&src.into()).unwrap_or_else(|e| panic!("bind {src}: {e}"));
        sock.connect_timeout(&dst.into(), Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect {dst} from {src}: {e}"));
        let s: TcpStream = sock.into();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        From { reader: BufReader::new(s) }
    }

    fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let mut s = self.reader.get_ref();
        s.write_all(bytes)
    }

    #[track_caller]
    fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Response {
        self.send(&build_request("GET", path, headers, b"")).expect("write request");
        match try_read_response(&mut self.reader, false) {
            Ok(Some(r)) => r,
            Ok(None) => panic!("connection closed before a response to GET {path}"),
            Err(e) => panic!("reading the response to GET {path}: {e}"),
        }
    }

    /// Whether the gateway closed the connection without answering.
    fn closed_without_response(&mut self) -> bool {
        match try_read_response(&mut self.reader, false) {
            Ok(None) => true,
            Err(e) => matches!(e.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof),
            Ok(Some(r)) => panic!("expected a close, got {} {}", r.status, r.body_str()),
        }
    }
}

fn get_from(src: &str, dst: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response {
    From::connect(src, dst).get(path, headers)
}

/// A bootstrap with an RBAC filter (`rbac`: YAML at column 0, the filter's
/// typed_config body), optional HCM keys, routes (column 0, list items) and
/// network filters placed before the HCM.
fn config(network: &str, hcm_extra: &str, rbac: &str, routes: &str) -> String {
    fn indent(s: &str, n: usize) -> String {
        let pad = " ".repeat(n);
        s.trim_matches('\n').lines().filter(|l| !l.trim().is_empty()).map(|l| format!("{pad}{l}\n")).collect()
    }
    format!(
        r#"admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {{{{ADMIN_PORT}}}} }} }}
static_resources:
  listeners:
  - name: ingress_listener
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {{{{LISTEN_PORT}}}} }} }}
    filter_chains:
    - filters:
{network}      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
{hcm_extra}          http_filters:
          - name: envoy.filters.http.rbac
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
{rbac}          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
          route_config:
            name: local_route
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
{routes}  clusters:
  - name: backend
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{ address: "{{{{UPSTREAM_1}}}}", port_value: {{{{UPSTREAM_1_PORT}}}} }}
"#,
        network = indent(network, 6),
        hcm_extra = indent(hcm_extra, 10),
        rbac = indent(rbac, 14),
        routes = indent(routes, 14),
    )
}

const ALL_TO_BACKEND: &str = r#"
- match: { prefix: "/" }
  route: { cluster: backend }
"#;

/// ALLOW rules with one policy whose principals are `principals` (flow YAML).
fn allow(principals: &str) -> String {
    format!(
        "rules:\n  action: ALLOW\n  policies:\n    whitelist:\n      permissions: [{{ any: true }}]\n      principals: {principals}\n"
    )
}

fn start(yaml: &str) -> (Upstream, Gateway) {
    let up = Upstream::start("up");
    let gw = Gateway::start(yaml, &[up.addr], &[]);
    (up, gw)
}

#[test]
fn listed_cidr_is_allowed_and_others_get_403_on_a_live_connection() {
    let rbac = allow("[{ direct_remote_ip: { address_prefix: 127.0.0.1, prefix_len: 32 } }]");
    let (_up, gw) = start(&config("", "", &rbac, ALL_TO_BACKEND));

    let r = get_from("127.0.0.1", gw.listener_addr, "/", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body_str(), "hello from up\n");

    let mut denied = From::connect("127.0.0.5", gw.listener_addr);
    let r = denied.get("/", &[]);
    assert_eq!(r.status, 403);
    assert_eq!(r.body_str(), "RBAC: access denied");
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert!(!r.connection_close(), "Envoy keeps the connection after a local 403");
    // The same connection carries the next request (denied again).
    let r = denied.get("/again", &[]);
    assert_eq!(r.status, 403);

    assert_eq!(gw.wait_stat("http.ingress.rbac.allowed", 1, Duration::from_secs(2)), 1);
    assert_eq!(gw.wait_stat("http.ingress.rbac.denied", 2, Duration::from_secs(2)), 2);
    assert_eq!(gw.stat("http.ingress.downstream_rq_4xx"), 2);
    assert_eq!(gw.stat("cluster.backend.upstream_rq_total"), 1, "denied requests never reach the upstream");
}

#[test]
fn loopback_cidr_allows_and_a_foreign_cidr_denies() {
    let rbac = allow("[{ remote_ip: { address_prefix: 127.0.0.0, prefix_len: 8 } }]");
    let (_up, gw) = start(&config("", "use_remote_address: true", &rbac, ALL_TO_BACKEND));
    assert_eq!(get_from("127.0.0.1", gw.listener_addr, "/", &[]).status, 200);
    assert_eq!(get_from("127.0.0.5", gw.listener_addr, "/", &[]).status, 200);

    let rbac = allow("[{ remote_ip: { address_prefix: 10.0.0.0, prefix_len: 8 } }]");
    let (_up, gw) = start(&config("", "use_remote_address: true", &rbac, ALL_TO_BACKEND));
    let r = get_from("127.0.0.1", gw.listener_addr, "/", &[]);
    assert_eq!(r.status, 403);
    assert_eq!(r.body_str(), "RBAC: access denied");
}

#[test]
fn spoofed_x_forwarded_for_does_not_pass_direct_remote_ip() {
    // Whitelist 10/8 by the physical peer: a loopback client claiming a
    // 10/8 address in x-forwarded-for must still be refused.
    let rbac = allow("[{ direct_remote_ip: { address_prefix: 10.0.0.0, prefix_len: 8 } }]");
    for hcm in ["use_remote_address: false", "use_remote_address: true", "xff_num_trusted_hops: 1"] {
        let (_up, gw) = start(&config("", hcm, &rbac, ALL_TO_BACKEND));
        let r = get_from("127.0.0.1", gw.listener_addr, "/", &[("x-forwarded-for", "10.1.2.3")]);
        assert_eq!(r.status, 403, "{hcm}: spoofed XFF must not pass direct_remote_ip");
    }
}

#[test]
fn remote_ip_follows_use_remote_address_and_trusted_hops() {
    let rbac = allow("[{ remote_ip: { address_prefix: 10.0.0.0, prefix_len: 8 } }]");
    let xff = [("x-forwarded-for", "10.1.2.3")];

    // use_remote_address: true, no trusted hops → the peer, XFF ignored.
    let (_up, gw) = start(&config("", "use_remote_address: true", &rbac, ALL_TO_BACKEND));
    assert_eq!(get_from("127.0.0.1", gw.listener_addr, "/", &xff).status, 403);

    // use_remote_address: true with one trusted hop → the last XFF entry.
    let (_up, gw) = start(&config("", "use_remote_address: true\nxff_num_trusted_hops: 1", &rbac, ALL_TO_BACKEND));
    assert_eq!(get_from("127.0.0.1", gw.listener_addr, "/", &xff).status, 200);
    let spoofed = [("x-forwarded-for", "10.1.2.3, 192.0.2.7")];
    assert_eq!(get_from("127.0.0.1", gw.listener_addr, "/", &spoofed).status, 403);

    // use_remote_address unset (Envoy's default false) → XFF decides (this
    // is why edge proxies set use_remote_address); no XFF → the peer.
    let (_up, gw) = start(&config("", "", &rbac, ALL_TO_BACKEND));
    assert_eq!(get_from("127.0.0.1", gw.listener_addr, "/", &xff).status, 200);
    assert_eq!(get_from("127.0.0.1", gw.listener_addr, "/", &[]).status, 403);
}

#[test]
fn shadow_rules_count_without_enforcing() {
    let rbac = r#"
rules:
  action: DENY
  policies: {}
shadow_rules:
  action: ALLOW
  policies:
    only-one:
      permissions: [{ any: true }]
      principals: [{ direct_remote_ip: { address_prefix: 127.0.0.1, prefix_len: 32 } }]
"#;
    let (_up, gw) = start(&config("", "", rbac, ALL_TO_BACKEND));
    assert_eq!(get_from("127.0.0.1", gw.listener_addr, "/", &[]).status, 200);
    assert_eq!(get_from("127.0.0.5", gw.listener_addr, "/", &[]).status, 200, "shadow denial is not enforced");
    assert_eq!(get_from("127.0.0.5", gw.listener_addr, "/", &[]).status, 200);
    assert_eq!(gw.wait_stat("http.ingress.rbac.shadow_allowed", 1, Duration::from_secs(2)), 1);
    assert_eq!(gw.wait_stat("http.ingress.rbac.shadow_denied", 2, Duration::from_secs(2)), 2);
    assert_eq!(gw.stat("http.ingress.rbac.allowed"), 3);
    assert_eq!(gw.stat("http.ingress.rbac.denied"), 0);
}

#[test]
fn per_route_overrides_open_and_lock_routes() {
    let rbac = allow("[{ direct_remote_ip: { address_prefix: 127.0.0.1, prefix_len: 32 } }]");
    let routes = r#"
- match: { prefix: "/public" }
  route: { cluster: backend }
  typed_per_filter_config:
    envoy.filters.http.rbac:
      "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute
- match: { prefix: "/admin" }
  route: { cluster: backend }
  typed_per_filter_config:
    envoy.filters.http.rbac:
      "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute
      rbac:
        rules:
          action: ALLOW
          policies:
            ops-header:
              permissions: [{ any: true }]
              principals: [{ header: { name: x-ops, string_match: { exact: "yes" } } }]
- match: { prefix: "/" }
  route: { cluster: backend }
"#;
    let (_up, gw) = start(&config("", "", &rbac, routes));
    let a = gw.listener_addr;
    // The filter's rules on an ordinary route.
    assert_eq!(get_from("127.0.0.1", a, "/x", &[]).status, 200);
    assert_eq!(get_from("127.0.0.5", a, "/x", &[]).status, 403);
    // Opened: RBACPerRoute without `rbac`.
    assert_eq!(get_from("127.0.0.5", a, "/public/page", &[]).status, 200);
    // Locked down: its own policy replaces the whitelist, even for 127.0.0.1.
    assert_eq!(get_from("127.0.0.1", a, "/admin", &[]).status, 403);
    assert_eq!(get_from("127.0.0.5", a, "/admin", &[("x-ops", "yes")]).status, 200);
}

#[test]
fn denied_before_404_and_direct_response() {
    let rbac = allow("[{ direct_remote_ip: { address_prefix: 127.0.0.1, prefix_len: 32 } }]");
    let routes = r#"
- match: { path: "/direct" }
  direct_response: { status: 200, body: { inline_string: "direct" } }
"#;
    let (_up, gw) = start(&config("", "", &rbac, routes));
    assert_eq!(get_from("127.0.0.1", gw.listener_addr, "/direct", &[]).body_str(), "direct");
    assert_eq!(get_from("127.0.0.1", gw.listener_addr, "/none", &[]).status, 404);
    assert_eq!(get_from("127.0.0.5", gw.listener_addr, "/direct", &[]).status, 403);
    assert_eq!(get_from("127.0.0.5", gw.listener_addr, "/none", &[]).status, 403);
}

#[test]
fn network_rbac_closes_denied_connections() {
    let network = r#"
- name: envoy.filters.network.rbac
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC
    stat_prefix: tcp
    rules:
      action: ALLOW
      policies:
        loopback-one:
          permissions: [{ any: true }]
          principals: [{ direct_remote_ip: { address_prefix: 127.0.0.1, prefix_len: 32 } }]
"#;
    let (_up, gw) = start(&config(network, "", "rules: { action: DENY }", ALL_TO_BACKEND));
    let mut ok = From::connect("127.0.0.1", gw.listener_addr);
    assert_eq!(ok.get("/", &[]).status, 200);
    assert_eq!(ok.get("/", &[]).status, 200, "decided once per connection");

    let mut denied = From::connect("127.0.0.5", gw.listener_addr);
    // The decision waits for the first bytes, as Envoy's ONE_TIME_ON_FIRST_BYTE.
    let _ = denied.send(&build_request("GET", "/", &[], b""));
    assert!(denied.closed_without_response());

    assert_eq!(gw.wait_stat("tcp.rbac.allowed", 1, Duration::from_secs(2)), 1);
    assert_eq!(gw.wait_stat("tcp.rbac.denied", 1, Duration::from_secs(2)), 1);
    assert_eq!(gw.stat("cluster.backend.upstream_rq_total"), 2);
}

#[test]
fn ten_thousand_cidr_whitelist() {
    // 10,000 /32s in 10.0.0.0/8 plus the one loopback address allowed.
    let mut principals = String::from("\n");
    for i in 0..10_000u32 {
        let a = 0x0a00_0000u32 + i * 7;
        principals.push_str(&format!(
            "      - direct_remote_ip: {{ address_prefix: {}.{}.{}.{}, prefix_len: 32 }}\n",
            a >> 24,
            (a >> 16) & 0xff,
            (a >> 8) & 0xff,
            a & 0xff
        ));
    }
    principals.push_str("      - direct_remote_ip: { address_prefix: 127.0.0.1, prefix_len: 32 }");
    let rbac = allow(&principals);
    let (_up, gw) = start(&config("", "", &rbac, ALL_TO_BACKEND));
    let mut ok = From::connect("127.0.0.1", gw.listener_addr);
    for _ in 0..20 {
        assert_eq!(ok.get("/", &[]).status, 200);
    }
    assert_eq!(get_from("127.0.0.5", gw.listener_addr, "/", &[]).status, 403);
}
