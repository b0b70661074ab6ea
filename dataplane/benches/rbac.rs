//! RBAC evaluation cost at 10 / 1,000 / 10,000 CIDR principals.
//!
//! * `engine/<n>/hit` and `/miss`: one `Engine::evaluate` of an ALLOW policy
//!   whose principals are `n` `remote_ip` ranges (a mix of /16, /24 and /32,
//!   as real whitelists are), for an address inside a listed range and for
//!   one outside every range (the worst case: nothing ends the walk early).
//! * `linear/<n>/miss`: the same question answered by scanning the ranges,
//!   the structure the trie replaces, for comparison.
//! * `request/<kind>/<n>`: the whole per-request path the proxy runs —
//!   trusted client address from `x-forwarded-for` (for `remote_ip` only),
//!   shadow + enforced engines, stat increments — on a parsed HTTP/1
//!   request, through `ListenerRbac` built from a bootstrap file by the
//!   real loader.
//!
//! Run: `cargo bench -p dataplane --bench rbac`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use control::model::{CidrRange, RbacAction, RbacPermission, RbacPolicy, RbacPrincipal, RbacRules};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use dataplane::http1::{parse_request_head, Limits, RequestHead};
use dataplane::matcher::NoHeaders;
use dataplane::rbac::{forwarded_for, trusted_client_address, Engine, ListenerRbac, Subject};
use dataplane::router::RouteTable;
use dataplane::stats::StatsStore;

const SIZES: [usize; 3] = [10, 1_000, 10_000];

/// `n` deterministic ranges; never inside 127/8 or 192.0.2/24 (the probes).
fn ranges(n: usize) -> Vec<CidrRange> {
    let mut x: u32 = 0x9e37_79b9;
    (0..n)
        .map(|i| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let len = [24u8, 24, 32, 16][i % 4];
            // Keep the first octet in 11..=126 so no range covers a probe.
            let first = 11 + (x >> 24) % 116;
            let addr = (first << 24) | (x & 0x00ff_ffff);
            let masked = addr & (u32::MAX << (32 - u32::from(len)));
            CidrRange { address: IpAddr::V4(Ipv4Addr::from(masked)), prefix_len: len }
        })
        .collect()
}

fn rules(ranges: &[CidrRange]) -> RbacRules {
    RbacRules {
        action: RbacAction::Allow,
        policies: vec![RbacPolicy {
            name: "whitelist".into(),
            permissions: vec![RbacPermission::Any],
            principals: ranges.iter().map(|c| RbacPrincipal::RemoteIp(*c)).collect(),
        }],
    }
}

fn subject(ip: IpAddr) -> Subject<'static> {
    Subject {
        remote: ip,
        direct_remote: ip,
        source: ip,
        destination: "127.0.0.1:10000".parse().unwrap(),
        headers: &NoHeaders,
        peer: None,
    }
}

fn linear(ranges: &[CidrRange], ip: IpAddr) -> bool {
    let IpAddr::V4(a) = ip else { return false };
    let a = u32::from(a);
    ranges.iter().any(|c| {
        let IpAddr::V4(net) = c.address else { return false };
        let m = if c.prefix_len == 0 { 0 } else { u32::MAX << (32 - u32::from(c.prefix_len)) };
        a & m == u32::from(net)
    })
}

fn engine(c: &mut Criterion) {
    let mut g = c.benchmark_group("engine");
    for n in SIZES {
        let rs = ranges(n);
        let e = Engine::new(&rules(&rs));
        // 256 addresses inside listed ranges and 256 inside the populated
        // space but outside every range; the loop cycles through them so
        // the figure is an average over trie depths, not one lucky path.
        let (hits, misses) = probes(&rs);
        assert!(hits.iter().all(|ip| e.evaluate(&subject(*ip)).allowed));
        assert!(misses.iter().all(|ip| !e.evaluate(&subject(*ip)).allowed));
        for (name, set) in [("hit", hits), ("miss", misses)] {
            let subjects: Vec<_> = set.iter().map(|ip| subject(*ip)).collect();
            g.bench_function(BenchmarkId::new(format!("{n}"), name), |b| {
                let mut i = 0;
                b.iter(|| {
                    i = (i + 1) & 255;
                    black_box(e.evaluate(black_box(&subjects[i])).allowed)
                })
            });
        }
    }
    g.finish();

    let mut g = c.benchmark_group("linear");
    for n in SIZES {
        let rs = ranges(n);
        let (_, misses) = probes(&rs);
        g.bench_function(BenchmarkId::new(format!("{n}"), "miss"), |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) & 255;
                black_box(linear(black_box(&rs), misses[i]))
            })
        });
    }
    g.finish();
}

/// 256 addresses inside listed ranges and 256 outside all of them (but in
/// the same address space, so lookups walk the trie before failing).
fn probes(rs: &[CidrRange]) -> (Vec<IpAddr>, Vec<IpAddr>) {
    let mut x: u32 = 0x85eb_ca6b;
    let mut next = || {
        x = x.wrapping_mul(22_695_477).wrapping_add(1);
        x
    };
    let mut hits = Vec::new();
    while hits.len() < 256 {
        let c = rs[next() as usize % rs.len()];
        let IpAddr::V4(net) = c.address else { unreachable!() };
        let host = if c.prefix_len == 32 { 0 } else { next() & (u32::MAX >> c.prefix_len) };
        hits.push(IpAddr::V4(Ipv4Addr::from(u32::from(net) | host)));
    }
    let mut misses = Vec::new();
    while misses.len() < 256 {
        let a = ((11 + next() % 116) << 24) | (next() & 0x00ff_ffff);
        let ip = IpAddr::V4(Ipv4Addr::from(a));
        if !linear(rs, ip) {
            misses.push(ip);
        }
    }
    (hits, misses)
}

/// A bootstrap whose whitelist has `n` ranges of principal kind `field`
/// plus the one the benchmark's client is in.
fn bootstrap(n: usize, field: &str, client: &str) -> String {
    let mut principals = String::new();
    for c in ranges(n) {
        principals.push_str(&format!(
            "                    - {field}: {{ address_prefix: {}, prefix_len: {} }}\n",
            c.address, c.prefix_len
        ));
    }
    principals.push_str(&format!("                    - {field}: {{ address_prefix: {client}, prefix_len: 24 }}\n"));
    format!(
        r#"
static_resources:
  listeners:
  - name: l
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 10000 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          xff_num_trusted_hops: 0
          http_filters:
          - name: envoy.filters.http.rbac
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
              rules:
                action: ALLOW
                policies:
                  whitelist:
                    permissions: [{{ any: true }}]
                    principals:
{principals}              shadow_rules:
                action: DENY
                policies:
                  block-admin:
                    permissions: [{{ url_path: {{ path: {{ prefix: /admin }} }} }}]
                    principals: [{{ any: true }}]
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
          route_config:
            virtual_hosts:
            - name: vh
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                direct_response: {{ status: 200 }}
"#
    )
}

fn request(c: &mut Criterion) {
    let mut g = c.benchmark_group("request");
    // `remote_ip` takes the client from x-forwarded-for (127.0.0.9 here);
    // `direct_remote_ip` is the peer (192.0.2.1) and skips the XFF walk.
    for (field, client) in [("remote_ip", "127.0.0.0"), ("direct_remote_ip", "192.0.2.0")] {
        for n in SIZES {
            let cfg = control::bootstrap::load_str(
                &bootstrap(n, field, client),
                control::bootstrap::Format::Yaml,
                "bench.yaml",
            )
            .unwrap_or_else(|e| panic!("{e}"));
            let l = &cfg.listeners[0];
            let store = StatsStore::new(1);
            let rbac = ListenerRbac::new(l, &store, 0);
            let table = RouteTable::new(&l.http.route_config);
            let mut head = RequestHead::new();
            let raw = b"GET /api/items?page=2 HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: bench\r\nAccept: */*\r\nX-Forwarded-For: 127.0.0.9\r\n\r\n";
            parse_request_head(raw, &Limits::default(), &mut head).unwrap().unwrap();
            let peer: SocketAddr = "192.0.2.1:40000".parse().unwrap();
            let local: SocketAddr = "127.0.0.1:10000".parse().unwrap();
            let hcm = &l.http;
            // Routing is the router's cost, paid anyway; only RBAC is timed.
            let host = head.host().unwrap_or(b"");
            let route = table.route(host, head.path_and_query());
            g.bench_function(BenchmarkId::new(field, n), |b| {
                b.iter(|| {
                    let head = black_box(&head);
                    // What the proxy does: the XFF walk only when a policy reads remote_ip.
                    let remote = if rbac.uses_remote_ip() {
                        trusted_client_address(
                            peer.ip(),
                            hcm.use_remote_address,
                            hcm.xff_num_trusted_hops,
                            forwarded_for(&head.headers),
                        )
                    } else {
                        peer.ip()
                    };
                    let s = Subject {
                        remote,
                        direct_remote: peer.ip(),
                        source: peer.ip(),
                        destination: local,
                        headers: head,
                        peer: None,
                    };
                    black_box(rbac.check_request(&s, route, &table, host))
                })
            });
            assert_eq!(store.counter_value("http.ingress.rbac.denied"), Some(0));
        }
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(40)
}

criterion_group! { name = benches; config = config(); targets = engine, request }
criterion_main!(benches);
