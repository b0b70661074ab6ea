//! Unit tests: every permission and principal kind, the actions, policy
//! order, the gathering of CIDR leaves, per-route overrides, stats, and the
//! trusted client address.  Policies come from real bootstrap YAML through
//! `control`'s loader, so they are exactly what a config file produces.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use control::bootstrap::{load_str, Format};
use control::model::{
    CidrRange, HeaderMatch, HeaderMatchSpec, Listener, RbacAction, RbacPermission, RbacPolicy, RbacPrincipal,
    RbacRules, StringMatch, StringPattern,
};

use super::*;
use crate::matcher::NoHeaders;
use crate::router::RouteTable;
use crate::stats::StatsStore;

// ------------------------------------------------------------ engine level

struct Req {
    headers: Vec<(&'static str, &'static str)>,
}

impl HeaderSource for Req {
    fn header(&self, name: &str) -> Option<Cow<'_, [u8]>> {
        join_values(self.headers.iter().filter(|(n, _)| *n == name).map(|(_, v)| v.as_bytes()))
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn cidr(s: &str) -> CidrRange {
    let (a, l) = s.split_once('/').unwrap();
    let prefix_len: u8 = l.parse().unwrap();
    CidrRange { address: ip(a), prefix_len }
}

/// A subject with every address field set from `peer` unless overridden.
struct S {
    remote: &'static str,
    direct: &'static str,
    dest: &'static str,
    req: Req,
}

impl S {
    fn new(peer: &'static str) -> S {
        S {
            remote: peer,
            direct: peer,
            dest: "10.9.9.9:8080",
            req: Req { headers: vec![(":path", "/"), (":method", "GET")] },
        }
    }

    fn subject(&self) -> Subject<'_> {
        Subject {
            remote: ip(self.remote),
            direct_remote: ip(self.direct),
            source: ip(self.direct),
            destination: self.dest.parse().unwrap(),
            headers: &self.req,
            peer: None,
        }
    }
}

fn engine(action: RbacAction, policies: Vec<(&str, Vec<RbacPermission>, Vec<RbacPrincipal>)>) -> Engine {
    Engine::new(&RbacRules {
        action,
        policies: policies
            .into_iter()
            .map(|(name, permissions, principals)| RbacPolicy { name: name.into(), permissions, principals })
            .collect(),
    })
}

fn allow_principals(principals: Vec<RbacPrincipal>) -> Engine {
    engine(RbacAction::Allow, vec![("p", vec![RbacPermission::Any], principals)])
}

fn allow_permissions(permissions: Vec<RbacPermission>) -> Engine {
    engine(RbacAction::Allow, vec![("p", permissions, vec![RbacPrincipal::Any])])
}

fn allowed(e: &Engine, s: &S) -> bool {
    e.evaluate(&s.subject()).allowed
}

fn header_exact(name: &str, v: &str) -> HeaderMatch {
    HeaderMatch {
        name: name.into(),
        spec: HeaderMatchSpec::String(StringMatch { pattern: StringPattern::Exact(v.into()), ignore_case: false }),
        invert_match: false,
        treat_missing_header_as_empty: false,
    }
}

fn prefix(p: &str) -> StringMatch {
    StringMatch { pattern: StringPattern::Prefix(p.into()), ignore_case: false }
}

#[test]
fn principal_any() {
    let e = allow_principals(vec![RbacPrincipal::Any]);
    assert!(allowed(&e, &S::new("203.0.113.7")));
}

#[test]
fn principal_direct_remote_ip_ignores_the_trusted_address() {
    let e = allow_principals(vec![RbacPrincipal::DirectRemoteIp(cidr("127.0.0.0/8"))]);
    let mut s = S::new("127.0.0.1");
    s.remote = "10.1.1.1";
    assert!(allowed(&e, &s));
    let mut s = S::new("10.1.1.1");
    s.remote = "127.0.0.1"; // e.g. taken from a spoofed XFF
    assert!(!allowed(&e, &s));
}

#[test]
fn principal_remote_ip_uses_the_trusted_address() {
    let e = allow_principals(vec![RbacPrincipal::RemoteIp(cidr("192.0.2.0/24"))]);
    let mut s = S::new("127.0.0.1");
    s.remote = "192.0.2.10";
    assert!(allowed(&e, &s));
    assert!(!allowed(&e, &S::new("192.0.3.1")));
}

#[test]
fn principal_source_ip_is_the_connection_source() {
    let e = allow_principals(vec![RbacPrincipal::SourceIp(cidr("127.0.0.0/8"))]);
    let mut s = S::new("127.0.0.5");
    s.remote = "10.0.0.1";
    assert!(allowed(&e, &s));
    assert!(!allowed(&e, &S::new("10.0.0.1")));
}

#[test]
fn principal_header_and_url_path() {
    let e = allow_principals(vec![RbacPrincipal::Header(header_exact("x-user", "alice"))]);
    let mut s = S::new("10.0.0.1");
    assert!(!allowed(&e, &s));
    s.req.headers.push(("x-user", "alice"));
    assert!(allowed(&e, &s));

    let e = allow_principals(vec![RbacPrincipal::UrlPath(prefix("/public"))]);
    let mut s = S::new("10.0.0.1");
    s.req.headers[0].1 = "/public/x?y=1";
    assert!(allowed(&e, &s));
    s.req.headers[0].1 = "/private";
    assert!(!allowed(&e, &s));
}

#[test]
fn principal_and_or_not() {
    let lo = || RbacPrincipal::DirectRemoteIp(cidr("127.0.0.0/8"));
    let admin = || RbacPrincipal::Header(header_exact("x-role", "admin"));
    let e = allow_principals(vec![RbacPrincipal::And(vec![lo(), admin()])]);
    let mut s = S::new("127.0.0.1");
    assert!(!allowed(&e, &s));
    s.req.headers.push(("x-role", "admin"));
    assert!(allowed(&e, &s));

    let e = allow_principals(vec![RbacPrincipal::Or(vec![lo(), admin()])]);
    assert!(allowed(&e, &S::new("127.0.0.1")));
    let mut s = S::new("10.0.0.1");
    assert!(!allowed(&e, &s));
    s.req.headers.push(("x-role", "admin"));
    assert!(allowed(&e, &s));

    let e = allow_principals(vec![RbacPrincipal::Not(Box::new(lo()))]);
    assert!(!allowed(&e, &S::new("127.0.0.1")));
    assert!(allowed(&e, &S::new("10.0.0.1")));
}

#[test]
fn permissions_each_kind() {
    let s = |path: &'static str, dest: &'static str| {
        let mut s = S::new("10.0.0.1");
        s.req.headers[0].1 = path;
        s.dest = dest;
        s
    };
    let e = allow_permissions(vec![RbacPermission::Header(header_exact(":method", "GET"))]);
    assert!(allowed(&e, &s("/", "10.9.9.9:80")));
    let e = allow_permissions(vec![RbacPermission::Header(header_exact(":method", "POST"))]);
    assert!(!allowed(&e, &s("/", "10.9.9.9:80")));

    let e = allow_permissions(vec![RbacPermission::UrlPath(prefix("/api"))]);
    assert!(allowed(&e, &s("/api/v1?q=/x", "10.9.9.9:80")));
    assert!(!allowed(&e, &s("/other?/api", "10.9.9.9:80")), "the query is not part of url_path");

    let e = allow_permissions(vec![RbacPermission::DestinationIp(cidr("10.9.0.0/16"))]);
    assert!(allowed(&e, &s("/", "10.9.9.9:80")));
    assert!(!allowed(&e, &s("/", "10.8.9.9:80")));

    let e = allow_permissions(vec![RbacPermission::DestinationPort(443)]);
    assert!(allowed(&e, &s("/", "10.9.9.9:443")));
    assert!(!allowed(&e, &s("/", "10.9.9.9:80")));

    let e = allow_permissions(vec![RbacPermission::DestinationPortRange { start: 8000, end: 8080 }]);
    assert!(allowed(&e, &s("/", "10.9.9.9:8000")));
    assert!(allowed(&e, &s("/", "10.9.9.9:8079")));
    assert!(!allowed(&e, &s("/", "10.9.9.9:8080")), "end is exclusive");

    let get = || RbacPermission::Header(header_exact(":method", "GET"));
    let api = || RbacPermission::UrlPath(prefix("/api"));
    let e = allow_permissions(vec![RbacPermission::And(vec![get(), api()])]);
    assert!(allowed(&e, &s("/api", "10.9.9.9:80")));
    assert!(!allowed(&e, &s("/web", "10.9.9.9:80")));
    let e = allow_permissions(vec![RbacPermission::Or(vec![RbacPermission::DestinationPort(1), api()])]);
    assert!(allowed(&e, &s("/api", "10.9.9.9:80")));
    assert!(allowed(&e, &s("/web", "10.9.9.9:1")));
    assert!(!allowed(&e, &s("/web", "10.9.9.9:80")));
    let e = allow_permissions(vec![RbacPermission::Not(Box::new(api()))]);
    assert!(!allowed(&e, &s("/api", "10.9.9.9:80")));
    assert!(allowed(&e, &s("/web", "10.9.9.9:80")));
}

#[test]
fn policy_needs_a_permission_and_a_principal() {
    let e = engine(
        RbacAction::Allow,
        vec![(
            "p",
            vec![RbacPermission::DestinationPort(80)],
            vec![RbacPrincipal::DirectRemoteIp(cidr("127.0.0.0/8"))],
        )],
    );
    let mut s = S::new("127.0.0.1");
    s.dest = "1.1.1.1:80";
    assert!(allowed(&e, &s));
    s.dest = "1.1.1.1:81";
    assert!(!allowed(&e, &s));
    let mut s = S::new("10.0.0.1");
    s.dest = "1.1.1.1:80";
    assert!(!allowed(&e, &s));
}

#[test]
fn actions_and_empty_policies() {
    let lo = vec![RbacPrincipal::DirectRemoteIp(cidr("127.0.0.0/8"))];
    let deny = engine(RbacAction::Deny, vec![("block", vec![RbacPermission::Any], lo.clone())]);
    assert!(!allowed(&deny, &S::new("127.0.0.1")));
    assert!(allowed(&deny, &S::new("10.0.0.1")));
    let log = engine(RbacAction::Log, vec![("log", vec![RbacPermission::Any], lo)]);
    assert!(allowed(&log, &S::new("127.0.0.1")));
    assert!(allowed(&log, &S::new("10.0.0.1")));
    assert_eq!(log.evaluate(&S::new("127.0.0.1").subject()).policy, Some("log"));

    // Envoy: rules present but empty → ALLOW denies all, DENY allows all.
    assert!(!allowed(&engine(RbacAction::Allow, vec![]), &S::new("127.0.0.1")));
    assert!(allowed(&engine(RbacAction::Deny, vec![]), &S::new("127.0.0.1")));
}

#[test]
fn first_matching_policy_in_name_order() {
    let any = || vec![RbacPrincipal::Any];
    let e = engine(
        RbacAction::Allow,
        vec![
            ("zeta", vec![RbacPermission::Any], any()),
            ("alpha", vec![RbacPermission::Any], any()),
            ("mid", vec![RbacPermission::DestinationPort(1)], any()),
        ],
    );
    let d = e.evaluate(&S::new("10.0.0.1").subject());
    assert_eq!(d, Decision { allowed: true, policy: Some("alpha") });
}

#[test]
fn ipv6_principals() {
    let e = allow_principals(vec![RbacPrincipal::DirectRemoteIp(cidr("2001:db8::/32"))]);
    assert!(allowed(&e, &S::new("2001:db8::7")));
    assert!(!allowed(&e, &S::new("2001:db9::7")));
    assert!(!allowed(&e, &S::new("10.0.0.1")));
}

/// A 10,000-entry whitelist, written as separate principals and as a nested
/// `or_ids`, gives the same answers as a linear scan of the ranges.
#[test]
fn large_whitelists_agree_with_a_linear_scan() {
    let mut x: u32 = 0xdead_beef;
    let mut ranges = Vec::new();
    for i in 0..10_000u32 {
        x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let len = [8u8, 16, 24, 32][(i % 4) as usize];
        let net = if len == 32 { x } else { x & (u32::MAX << (32 - len)) };
        ranges.push(CidrRange { address: IpAddr::V4(net.into()), prefix_len: len });
    }
    let flat: Vec<_> = ranges.iter().map(|c| RbacPrincipal::RemoteIp(*c)).collect();
    let nested = vec![RbacPrincipal::Or(vec![
        RbacPrincipal::Or(flat[..5000].to_vec()),
        RbacPrincipal::Or(flat[5000..].to_vec()),
    ])];
    let a = allow_principals(flat);
    let b = allow_principals(nested);
    // Everything was gathered into one trie: no subtree left to scan.
    assert!(a.policies[0].principals.rest.is_empty());
    assert!(b.policies[0].principals.rest.is_empty());
    let mut y: u32 = 7;
    for i in 0..20_000u32 {
        y = y.wrapping_mul(22_695_477).wrapping_add(1);
        let probe = if i % 2 == 0 {
            y
        } else {
            u32::from(match ranges[(y % 10_000) as usize].address {
                IpAddr::V4(a) => a,
                IpAddr::V6(_) => unreachable!(),
            }) | (y & 0xff)
        };
        let addr = IpAddr::V4(probe.into());
        let expect = ranges.iter().any(|c| in_range(addr, c));
        let mut s = S::new("127.0.0.1");
        let text: &'static str = Box::leak(addr.to_string().into_boxed_str());
        s.remote = text;
        assert_eq!(allowed(&a, &s), expect, "{addr}");
        assert_eq!(allowed(&b, &s), expect, "{addr}");
    }
}

// ------------------------------------------------------- trusted address

fn xff(peer: &str, use_remote: bool, hops: u32, values: &[&str]) -> IpAddr {
    trusted_client_address(ip(peer), use_remote, hops, values.iter().map(|v| v.as_bytes()))
}

#[test]
fn trusted_address_with_use_remote_address() {
    let v = ["192.0.2.10, 192.0.2.1, 10.0.0.1"];
    assert_eq!(xff("127.0.0.9", true, 0, &v), ip("127.0.0.9"), "XFF is never trusted without hops");
    assert_eq!(xff("127.0.0.9", true, 1, &v), ip("10.0.0.1"));
    assert_eq!(xff("127.0.0.9", true, 2, &v), ip("192.0.2.1"));
    assert_eq!(xff("127.0.0.9", true, 3, &v), ip("192.0.2.10"));
    assert_eq!(xff("127.0.0.9", true, 4, &v), ip("127.0.0.9"), "too few entries → peer");
    assert_eq!(xff("127.0.0.9", true, 1, &[]), ip("127.0.0.9"));
}

#[test]
fn trusted_address_without_use_remote_address() {
    let v = ["192.0.2.10, 192.0.2.1 ,10.0.0.1"];
    assert_eq!(xff("127.0.0.9", false, 0, &v), ip("10.0.0.1"));
    assert_eq!(xff("127.0.0.9", false, 1, &v), ip("192.0.2.1"));
    assert_eq!(xff("127.0.0.9", false, 2, &v), ip("192.0.2.10"));
    assert_eq!(xff("127.0.0.9", false, 3, &v), ip("127.0.0.9"));
    assert_eq!(xff("127.0.0.9", false, 0, &[]), ip("127.0.0.9"));
    assert_eq!(xff("127.0.0.9", false, 0, &[""]), ip("127.0.0.9"));
    assert_eq!(xff("127.0.0.9", false, 0, &["not-an-ip"]), ip("127.0.0.9"));
    assert_eq!(xff("127.0.0.9", false, 0, &["10.0.0.1,"]), ip("127.0.0.9"), "trailing comma");
    assert_eq!(xff("127.0.0.9", false, 0, &["2001:db8::1"]), ip("2001:db8::1"));
    // Repeated headers form one list.
    assert_eq!(xff("127.0.0.9", false, 0, &["1.1.1.1", "2.2.2.2"]), ip("2.2.2.2"));
    assert_eq!(xff("127.0.0.9", false, 1, &["1.1.1.1", "2.2.2.2"]), ip("1.1.1.1"));
}

// -------------------------------------------------- filters from bootstrap

fn listener(yaml_filters: &str, routes: &str, extra_vhost: &str, extra_rc: &str) -> Arc<Listener> {
    load_listener(&listener_yaml(yaml_filters, routes, extra_vhost, extra_rc))
}

fn load_listener(yaml: &str) -> Arc<Listener> {
    let cfg = load_str(yaml, Format::Yaml, "test.yaml").unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    cfg.listeners[0].clone()
}

fn listener_yaml(yaml_filters: &str, routes: &str, extra_vhost: &str, extra_rc: &str) -> String {
    format!(
        r#"
static_resources:
  listeners:
  - name: l
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 10000 }} }}
    filter_chains:
    - filters:
{yaml_filters}
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          http_filters:
          - name: envoy.filters.http.rbac
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
              rules:
                action: ALLOW
                policies:
                  loopback:
                    permissions: [{{ any: true }}]
                    principals: [{{ direct_remote_ip: {{ address_prefix: 127.0.0.0, prefix_len: 8 }} }}]
              shadow_rules:
                action: ALLOW
                policies:
                  five:
                    permissions: [{{ any: true }}]
                    principals: [{{ direct_remote_ip: {{ address_prefix: 127.0.0.5, prefix_len: 32 }} }}]
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
          route_config:
            name: rc
{extra_rc}
            virtual_hosts:
            - name: vh
              domains: ["*"]
{extra_vhost}
              routes:
{routes}
"#
    )
}

const PLAIN_ROUTES: &str = r#"
              - match: { prefix: "/" }
                direct_response: { status: 200 }
"#;

struct Fixture {
    listener: Arc<Listener>,
    table: RouteTable,
    rbac: ListenerRbac,
    store: Arc<StatsStore>,
}

impl Fixture {
    fn new(l: Arc<Listener>) -> Fixture {
        let store = StatsStore::new(1);
        Fixture {
            table: RouteTable::new(&l.http.route_config),
            rbac: ListenerRbac::new(&l, &store, 0),
            listener: l,
            store,
        }
    }

    fn check(&self, peer: &str, path: &str) -> Verdict {
        let req = Req { headers: vec![(":path", Box::leak(path.to_string().into_boxed_str()))] };
        let peer = ip(peer);
        let subject = Subject {
            remote: peer,
            direct_remote: peer,
            source: peer,
            destination: self.listener.address,
            headers: &req,
            peer: None,
        };
        let route = self.table.route(b"host", path.as_bytes());
        self.rbac.check_request(&subject, route, &self.table, b"host")
    }

    fn stat(&self, name: &str) -> u64 {
        self.store.counter_value(name).unwrap_or_else(|| panic!("no stat {name}"))
    }
}

#[test]
fn http_filter_enforces_and_counts_with_envoys_names() {
    let f = Fixture::new(listener("", PLAIN_ROUTES, "", ""));
    assert!(f.rbac.has_http());
    assert!(!f.rbac.has_network());
    assert_eq!(f.check("127.0.0.5", "/"), Verdict::Allowed);
    assert_eq!(f.check("127.0.0.1", "/"), Verdict::Allowed);
    assert_eq!(f.check("10.0.0.1", "/"), Verdict::Denied);
    assert_eq!(f.stat("http.ingress.rbac.allowed"), 2);
    assert_eq!(f.stat("http.ingress.rbac.denied"), 1);
    assert_eq!(f.stat("http.ingress.rbac.shadow_allowed"), 1);
    assert_eq!(f.stat("http.ingress.rbac.shadow_denied"), 2);
}

#[test]
fn per_route_override_opens_or_locks_down_a_route() {
    let routes = r#"
              - match: { prefix: "/open" }
                direct_response: { status: 200 }
                typed_per_filter_config:
                  envoy.filters.http.rbac:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute
              - match: { prefix: "/locked" }
                direct_response: { status: 200 }
                typed_per_filter_config:
                  envoy.filters.http.rbac:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute
                    rbac:
                      rules: { action: ALLOW }
              - match: { prefix: "/" }
                direct_response: { status: 200 }
"#;
    let f = Fixture::new(listener("", routes, "", ""));
    // An RBACPerRoute without `rbac` disables RBAC (and its shadow rules).
    assert_eq!(f.check("10.0.0.1", "/open"), Verdict::Allowed);
    assert_eq!(f.stat("http.ingress.rbac.allowed"), 0);
    assert_eq!(f.stat("http.ingress.rbac.shadow_denied"), 0);
    // Empty ALLOW rules deny everyone, loopback included.
    assert_eq!(f.check("127.0.0.1", "/locked"), Verdict::Denied);
    assert_eq!(f.stat("http.ingress.rbac.shadow_denied"), 0, "the override has no shadow rules");
    // Other routes keep the filter's rules.
    assert_eq!(f.check("10.0.0.1", "/x"), Verdict::Denied);
    assert_eq!(f.check("127.0.0.1", "/x"), Verdict::Allowed);
    // No route at all: the filter's rules still apply (RBAC runs before the router's 404).
    let no_route = Fixture::new(listener(
        "",
        "              - match: { path: \"/only\" }\n                direct_response: { status: 200 }\n",
        "",
        "",
    ));
    assert_eq!(no_route.check("10.0.0.1", "/nothing"), Verdict::Denied);
}

#[test]
fn virtual_host_and_route_config_overrides_route_most_specific() {
    let vhost = r#"
              typed_per_filter_config:
                envoy.filters.http.rbac:
                  "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute
"#;
    let routes = r#"
              - match: { prefix: "/route-locked" }
                direct_response: { status: 200 }
                typed_per_filter_config:
                  envoy.filters.http.rbac:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute
                    rbac: { rules: { action: ALLOW } }
              - match: { prefix: "/" }
                direct_response: { status: 200 }
"#;
    let f = Fixture::new(listener("", routes, vhost, ""));
    assert_eq!(f.check("10.0.0.1", "/anything"), Verdict::Allowed, "vhost opens it");
    assert_eq!(f.check("127.0.0.1", "/route-locked"), Verdict::Denied, "route beats vhost");

    let rc = r#"
            typed_per_filter_config:
              envoy.filters.http.rbac:
                "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute
"#;
    let f = Fixture::new(listener("", PLAIN_ROUTES, "", rc));
    assert_eq!(f.check("10.0.0.1", "/anything"), Verdict::Allowed, "route configuration opens it");
}

#[test]
fn per_route_lookup_by_filter_name_then_canonical_name() {
    let open = |key: &str| {
        format!(
            r#"
              - match: {{ prefix: "/" }}
                direct_response: {{ status: 200 }}
                typed_per_filter_config:
                  {key}:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute
"#
        )
    };
    // The filter is configured as `envoy.filters.http.rbac`: a key naming
    // some other filter is not for it.
    let f = Fixture::new(listener("", &open("some-other-filter"), "", ""));
    assert_eq!(f.check("10.0.0.1", "/"), Verdict::Denied);

    // Renamed to `edge-rbac`: its own name works, and so does the canonical
    // name (Envoy's fallback).
    let renamed = |routes: &str| {
        listener_yaml("", routes, "", "").replace("- name: envoy.filters.http.rbac\n", "- name: edge-rbac\n")
    };
    for key in ["edge-rbac", "envoy.filters.http.rbac"] {
        let yaml = renamed(&open(key));
        assert!(yaml.contains("name: edge-rbac"));
        let f = Fixture::new(load_listener(&yaml));
        assert_eq!(f.check("10.0.0.1", "/"), Verdict::Allowed, "{key}");
    }
    // Both present: the filter's own name wins.
    let both = r#"
              - match: { prefix: "/" }
                direct_response: { status: 200 }
                typed_per_filter_config:
                  envoy.filters.http.rbac:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute
                  edge-rbac:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute
                    rbac: { rules: { action: ALLOW } }
"#;
    let f = Fixture::new(load_listener(&renamed(both)));
    assert_eq!(f.check("127.0.0.1", "/"), Verdict::Denied);
}

#[test]
fn network_filter_checks_connections() {
    let net = r#"
      - name: envoy.filters.network.rbac
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC
          stat_prefix: tcp.
          rules:
            action: DENY
            policies:
              block-ten:
                permissions: [{ any: true }]
                principals: [{ remote_ip: { address_prefix: 10.0.0.0, prefix_len: 8 } }]
          shadow_rules:
            action: ALLOW
            policies:
              v6-only:
                permissions: [{ destination_port: 10000 }]
                principals: [{ source_ip: { address_prefix: "::", prefix_len: 0 } }]
"#;
    let f = Fixture::new(listener(net, PLAIN_ROUTES, "", ""));
    assert!(f.rbac.has_network());
    let local: SocketAddr = "127.0.0.1:10000".parse().unwrap();
    assert_eq!(f.rbac.check_connection("127.0.0.1:5000".parse().unwrap(), local), ConnVerdict::Allowed);
    assert_eq!(f.rbac.check_connection("10.1.2.3:5000".parse().unwrap(), local), ConnVerdict::Denied { delay: None });
    assert_eq!(f.stat("tcp.rbac.allowed"), 1);
    assert_eq!(f.stat("tcp.rbac.denied"), 1);
    assert_eq!(f.stat("tcp.rbac.shadow_denied"), 2);
    assert_eq!(f.stat("tcp.rbac.shadow_allowed"), 0);
}

#[test]
fn stat_prefix_join_follows_envoy() {
    assert_eq!(stat_prefix_join("rbac.", ""), "rbac.");
    assert_eq!(stat_prefix_join("rbac.", "mine_"), "rbac.mine_");
    assert_eq!(stat_prefix_join("tcp", "rbac."), "tcp.rbac.");
    assert_eq!(stat_prefix_join("tcp.", "rbac."), "tcp.rbac.");
    assert_eq!(stat_prefix_join("", "x"), "x");
}

#[test]
fn connection_subject_has_no_headers() {
    // A header-free subject: url_path never matches, presence tests see absence.
    let e = allow_permissions(vec![RbacPermission::UrlPath(prefix("/"))]);
    let s = Subject {
        remote: ip("127.0.0.1"),
        direct_remote: ip("127.0.0.1"),
        source: ip("127.0.0.1"),
        destination: "127.0.0.1:1".parse().unwrap(),
        headers: &NoHeaders,
        peer: None,
    };
    assert!(!e.evaluate(&s).allowed);
}

#[test]
fn remote_ip_use_is_detected_so_xff_can_be_skipped() {
    let f = Fixture::new(listener("", PLAIN_ROUTES, "", ""));
    assert!(!f.rbac.uses_remote_ip(), "direct_remote_ip only");
    let nested = allow_principals(vec![RbacPrincipal::And(vec![
        RbacPrincipal::Any,
        RbacPrincipal::Not(Box::new(RbacPrincipal::RemoteIp(cidr("10.0.0.0/8")))),
    ])]);
    assert!(nested.uses_remote_ip());
    let routes = r#"
              - match: { prefix: "/" }
                direct_response: { status: 200 }
                typed_per_filter_config:
                  envoy.filters.http.rbac:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute
                    rbac:
                      rules:
                        policies:
                          p: { permissions: [{ any: true }], principals: [{ remote_ip: { address_prefix: 10.0.0.0, prefix_len: 8 } }] }
"#;
    let f = Fixture::new(listener("", routes, "", ""));
    assert!(f.rbac.uses_remote_ip(), "found in a per-route override");
}

#[test]
fn forwarded_for_finds_every_field_whatever_its_case() {
    let mut head = crate::http1::RequestHead::new();
    let raw = b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.1.1.1\r\nx-forwarded-for: 2.2.2.2\r\n\r\n";
    crate::http1::parse_request_head(raw, &crate::http1::Limits::default(), &mut head).unwrap().unwrap();
    let values: Vec<_> = forwarded_for(&head.headers).collect();
    assert_eq!(values, vec![&b"1.1.1.1"[..], &b"2.2.2.2"[..]]);
    assert_eq!(trusted_client_address(ip("9.9.9.9"), false, 0, forwarded_for(&head.headers)), ip("2.2.2.2"));
}

#[test]
fn authenticated_principal_matches_uri_then_dns_then_subject() {
    use control::model::{RbacPolicy, RbacPrincipal, RbacRules, StringMatch, StringPattern};
    let exact = |v: &str| StringMatch { pattern: StringPattern::Exact(v.to_string()), ignore_case: false };
    let rules = |p: RbacPrincipal| RbacRules {
        action: RbacAction::Allow,
        policies: vec![RbacPolicy { name: "p".into(), permissions: vec![RbacPermission::Any], principals: vec![p] }],
    };
    let id = crate::tls::PeerIdentity {
        uri_sans: vec!["spiffe://mesh/sa/frontend".into()],
        dns_sans: vec!["frontend.mesh".into()],
        subject: "CN=frontend,O=mesh".into(),
        ..Default::default()
    };
    let subject = |peer| Subject {
        remote: ip("127.0.0.1"),
        direct_remote: ip("127.0.0.1"),
        source: ip("127.0.0.1"),
        destination: "127.0.0.1:1".parse().unwrap(),
        headers: &NoHeaders,
        peer,
    };
    for (name, want) in [
        (Some("spiffe://mesh/sa/frontend"), true),
        (Some("frontend.mesh"), true),
        (Some("CN=frontend,O=mesh"), true),
        (Some("spiffe://mesh/sa/batch"), false),
        (None, true),
    ] {
        let e = Engine::new(&rules(RbacPrincipal::Authenticated(name.map(exact))));
        assert_eq!(e.evaluate(&subject(Some(&id))).allowed, want, "{name:?}");
        assert!(!e.evaluate(&subject(None)).allowed, "{name:?} without TLS");
    }
}
