//! Fixtures shared by the hot-path benchmarks: the criterion benches
//! (`http1.rs`, `lb.rs`) time them, `hotpaths.rs` runs them under callgrind
//! to count instructions.  Both measure exactly the same operation on the
//! same data, so a time and an instruction count can be read side by side.
//!
//! Every fixture is built once, outside what is measured, and every
//! operation checks its own answer once before being measured (a benchmark
//! of a wrong result is worth nothing).
//!
//! It owns no production logic: it calls the data plane's public APIs.  The
//! one exception is [`Forwarder::forward`], which repeats the steps of the
//! connection manager's `handle_request` + `build_upstream_head`
//! (`proxy/mod.rs`) for a route without header mutations or rewrites,
//! because those are methods of a live connection and need sockets; it
//! calls the same `http1` functions in the same order.
#![allow(dead_code)] // each bench binary uses a part of it

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use control::model::{
    CidrRange, DomainMatch, HeaderMatch, HeaderMatchSpec, HeaderMutations, LbPolicy, PathMatch, RbacAction,
    RbacPermission, RbacPolicy, RbacPrincipal, RbacRules, Route, RouteAction, RouteConfig, RouteMatch, SafeRegex,
    StringMatch, StringPattern, VirtualHost,
};
use dataplane::http1::{
    encode_request_head, parse_request_head, request_body_kind, strip_hop_by_hop, Limits, RequestHead, WellKnown,
};
use dataplane::matcher::NoHeaders;
use dataplane::proxy::{ip_text, IP_TEXT_MAX};
use dataplane::rbac::{Engine, Subject};
use dataplane::router::RouteTable;
use dataplane::upstream::lb::{Balancer, LbHost};

// ------------------------------------------------------------ HTTP/1 forward

/// A typical browser/API request: 9 fields, one of them hop-by-hop
/// (`Connection`), one an earlier proxy's `X-Forwarded-For`; 426 bytes.
pub const REQUEST: &[u8] = b"GET /api/v1/orders?page=2&sort=desc HTTP/1.1\r\n\
Host: shop.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: application/json, text/plain, */*\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br\r\n\
Referer: https://shop.example.com/orders\r\n\
Cookie: session=8f14e45fceea167a5a36dedd4bea2543; theme=dark\r\n\
Connection: keep-alive\r\n\
X-Forwarded-For: 203.0.113.7\r\n\
\r\n";

/// One downstream connection's reusable state: the parsed head, the
/// upstream head being encoded, the XFF join scratch and the request-id
/// generator — all allocated once, as the proxy does.
pub struct Forwarder {
    limits: Limits,
    peer: IpAddr,
    head: RequestHead,
    out: Vec<u8>,
    scratch: Vec<u8>,
    rng: u64,
}

impl Default for Forwarder {
    fn default() -> Self {
        Forwarder::new()
    }
}

impl Forwarder {
    pub fn new() -> Forwarder {
        Forwarder {
            limits: Limits::default(),
            peer: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 44)),
            head: RequestHead::new(),
            out: Vec::with_capacity(1024),
            scratch: Vec::with_capacity(256),
            rng: 0x5eed,
        }
    }

    /// Parses `raw` and encodes the head meshgate sends upstream for a
    /// listener with `use_remote_address: true` and `generate_request_id`
    /// (Envoy's edge configuration): hop-by-hop fields stripped (RFC 9110
    /// §7.6.1), `expect` handled, the peer appended to `x-forwarded-for`,
    /// `x-forwarded-proto` and a fresh UUIDv4 `x-request-id` set.  Returns
    /// the encoded head.
    pub fn forward(&mut self, raw: &[u8]) -> &[u8] {
        let n = parse_request_head(raw, &self.limits, &mut self.head).expect("valid request").expect("complete head");
        debug_assert_eq!(n, raw.len());
        debug_assert_eq!(self.head.headers.len(), 9);
        let _body = request_body_kind(&self.head).expect("framing");
        let directives = strip_hop_by_hop(&mut self.head.headers);
        let _keep_alive = directives.persistent(self.head.version);
        let _expect = self.head.headers.get(WellKnown::Expect).is_some();
        self.head.headers.remove(WellKnown::Expect);
        let _host = self.head.host();

        let headers = &mut self.head.headers;
        let mut ip_buf = [0u8; IP_TEXT_MAX];
        let ip = ip_text(self.peer, &mut ip_buf);
        self.scratch.clear();
        if let Some(prev) = headers.get(WellKnown::XForwardedFor) {
            self.scratch.extend_from_slice(prev);
            self.scratch.push(b',');
            self.scratch.extend_from_slice(ip);
            headers.set(WellKnown::XForwardedFor, &self.scratch);
        } else {
            headers.append(WellKnown::XForwardedFor, ip);
        }
        headers.set(WellKnown::XForwardedProto, b"http");
        let id = request_id(&mut self.rng);
        headers.set(WellKnown::XRequestId, &id);

        self.out.clear();
        encode_request_head(self.head.method_str(), self.head.path_and_query(), &self.head.headers, &mut self.out);
        &self.out
    }
}

/// `ShardCtx::request_id`: a UUIDv4 from two SplitMix64 draws.
fn request_id(state: &mut u64) -> [u8; 36] {
    let mut next = || {
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&next().to_le_bytes());
    bytes[8..].copy_from_slice(&next().to_le_bytes());
    let id = uuid::Builder::from_random_bytes(bytes).into_uuid();
    let mut out = [0u8; 36];
    id.hyphenated().encode_lower(&mut out);
    out
}

/// Checks one forwarded head field by field (everything but the random id).
pub fn check_forwarded(out: &[u8]) {
    let text = std::str::from_utf8(out).expect("ASCII head");
    let mut lines = text.split("\r\n");
    assert_eq!(lines.next(), Some("GET /api/v1/orders?page=2&sort=desc HTTP/1.1"));
    let fields: Vec<&str> = lines.take_while(|l| !l.is_empty()).collect();
    let field = |name: &str| fields.iter().find_map(|l| l.strip_prefix(name)).map(str::trim_start);
    assert_eq!(field("host:"), Some("shop.example.com"));
    assert_eq!(field("x-forwarded-for:"), Some("203.0.113.7,192.0.2.44"));
    assert_eq!(field("x-forwarded-proto:"), Some("http"));
    assert_eq!(field("x-request-id:").map(str::len), Some(36));
    assert_eq!(field("connection:"), None, "hop-by-hop field forwarded: {text}");
    assert_eq!(fields.len(), 10, "{text}");
    assert!(text.ends_with("\r\n\r\n"));
}

// ------------------------------------------------------------ route table

/// The route table of `benches/router.rs`: `n` routes, mostly `/svc<i>/`
/// prefixes, every tenth header-guarded (`x-env: gray`), every tenth an
/// exact path, one regex per hundred (at least three), then a catch-all.
pub fn route_table(n: usize) -> RouteTable {
    let route = |i: usize, path: PathMatch, headers: Vec<HeaderMatch>| Route {
        name: format!("r{i}"),
        matcher: RouteMatch { path, case_sensitive: true, headers, query_parameters: vec![] },
        action: RouteAction::DirectResponse { status: 200, body: None },
        typed_per_filter_config: Default::default(),
        request_headers: HeaderMutations::default(),
        response_headers: HeaderMutations::default(),
    };
    let gray = || HeaderMatch {
        name: "x-env".into(),
        spec: HeaderMatchSpec::String(StringMatch { pattern: StringPattern::Exact("gray".into()), ignore_case: false }),
        invert_match: false,
        treat_missing_header_as_empty: false,
    };
    let mut routes: Vec<Route> = (0..n - 1)
        .map(|i| {
            if is_regex_route(i, n) {
                route(i, PathMatch::Regex(SafeRegex::new(&format!("/re{i}/v[0-9]+/.*")).unwrap()), vec![])
            } else if i % 10 == 3 {
                route(i, PathMatch::Prefix(format!("/svc{i}/")), vec![gray()])
            } else if i % 10 == 7 {
                route(i, PathMatch::Exact(format!("/svc{i}/health")), vec![])
            } else {
                route(i, PathMatch::Prefix(format!("/svc{i}/")), vec![])
            }
        })
        .collect();
    routes.push(route(n - 1, PathMatch::Prefix("/".into()), vec![]));
    RouteTable::new(&Arc::new(RouteConfig {
        name: "bench".into(),
        virtual_hosts: vec![VirtualHost {
            name: "all".into(),
            domains: vec![DomainMatch::Any],
            routes,
            typed_per_filter_config: Default::default(),
            request_headers: HeaderMutations::default(),
            response_headers: HeaderMutations::default(),
            retry: Default::default(),
        }],
        typed_per_filter_config: Default::default(),
        request_headers: HeaderMutations::default(),
        response_headers: HeaderMutations::default(),
        most_specific_header_mutations_wins: false,
    }))
}

fn is_regex_route(i: usize, n: usize) -> bool {
    if n < 300 {
        i % (n / 3).max(1) == 1
    } else {
        i % 100 == 50
    }
}

/// The probe kinds of `benches/router.rs`.
pub const ROUTE_PROBES: [&str; 4] = ["prefix", "header", "regex", "miss"];

/// A parsed request for `probe` in an `n`-route table, and the route name it must match.
pub fn route_probe(n: usize, probe: &str) -> (RequestHead, String) {
    let last_where = |f: &dyn Fn(usize) -> bool| (0..n - 1).rev().find(|&i| f(i)).unwrap();
    let (path, gray, want) = match probe {
        "prefix" => {
            let i = last_where(&|i| !is_regex_route(i, n) && i % 10 != 3 && i % 10 != 7);
            (format!("/svc{i}/items?id=7"), false, i)
        }
        "header" => {
            let i = last_where(&|i| !is_regex_route(i, n) && i % 10 == 3);
            (format!("/svc{i}/items"), true, i)
        }
        "regex" => {
            let i = last_where(&|i| is_regex_route(i, n));
            (format!("/re{i}/v2/items"), false, i)
        }
        "miss" => ("/nothing/here".to_string(), false, n - 1),
        other => panic!("unknown route probe {other:?}"),
    };
    let env = if gray { "x-env: gray\r\n" } else { "" };
    let raw = format!("GET {path} HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: bench\r\nAccept: */*\r\n{env}\r\n");
    let mut h = RequestHead::new();
    parse_request_head(raw.as_bytes(), &Limits::default(), &mut h).unwrap().unwrap();
    (h, format!("r{want}"))
}

/// One lookup, as the connection manager makes it.
#[inline]
pub fn route_lookup<'t>(table: &'t RouteTable, req: &RequestHead) -> Option<&'t Route> {
    table.find(req.host().unwrap_or(b""), req.path_and_query(), req).map(|m| m.route)
}

// ------------------------------------------------------------ RBAC

/// The CIDR whitelist of `benches/rbac.rs`: `n` deterministic /16, /24 and
/// /32 ranges, first octet 11..=126.
pub fn cidr_ranges(n: usize) -> Vec<CidrRange> {
    let mut x: u32 = 0x9e37_79b9;
    (0..n)
        .map(|i| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let len = [24u8, 24, 32, 16][i % 4];
            let first = 11 + (x >> 24) % 116;
            let addr = (first << 24) | (x & 0x00ff_ffff);
            let masked = addr & (u32::MAX << (32 - u32::from(len)));
            CidrRange { address: IpAddr::V4(Ipv4Addr::from(masked)), prefix_len: len }
        })
        .collect()
}

/// An ALLOW engine whose one policy lists `ranges` as `remote_ip` principals.
pub fn rbac_engine(ranges: &[CidrRange]) -> Engine {
    Engine::new(&RbacRules {
        action: RbacAction::Allow,
        policies: vec![RbacPolicy {
            name: "whitelist".into(),
            permissions: vec![RbacPermission::Any],
            principals: ranges.iter().map(|c| RbacPrincipal::RemoteIp(*c)).collect(),
        }],
    })
}

fn in_ranges(ranges: &[CidrRange], ip: IpAddr) -> bool {
    let IpAddr::V4(a) = ip else { return false };
    let a = u32::from(a);
    ranges.iter().any(|c| {
        let IpAddr::V4(net) = c.address else { return false };
        let m = if c.prefix_len == 0 { 0 } else { u32::MAX << (32 - u32::from(c.prefix_len)) };
        a & m == u32::from(net)
    })
}

/// 256 subjects whose address is inside a listed range (`hit`) or in the
/// same space but outside all of them (`miss`), as in `benches/rbac.rs`.
pub fn rbac_subjects(ranges: &[CidrRange], hit: bool) -> Vec<Subject<'static>> {
    let mut x: u32 = 0x85eb_ca6b;
    let mut next = || {
        x = x.wrapping_mul(22_695_477).wrapping_add(1);
        x
    };
    let mut ips = Vec::with_capacity(256);
    while ips.len() < 256 {
        let ip = if hit {
            let c = ranges[next() as usize % ranges.len()];
            let IpAddr::V4(net) = c.address else { unreachable!() };
            let host = if c.prefix_len == 32 { 0 } else { next() & (u32::MAX >> c.prefix_len) };
            IpAddr::V4(Ipv4Addr::from(u32::from(net) | host))
        } else {
            let a = ((11 + next() % 116) << 24) | (next() & 0x00ff_ffff);
            let ip = IpAddr::V4(Ipv4Addr::from(a));
            if in_ranges(ranges, ip) {
                continue;
            }
            ip
        };
        ips.push(ip);
    }
    let destination: SocketAddr = "127.0.0.1:10000".parse().unwrap();
    ips.into_iter()
        .map(|ip| Subject { remote: ip, direct_remote: ip, source: ip, destination, headers: &NoHeaders, peer: None })
        .collect()
}

// ------------------------------------------------------------ load balancing

/// The policies benchmarked, by the name used in bench ids and reports.
/// `*_weighted` give hosts unequal weights, which switches ROUND_ROBIN and
/// LEAST_REQUEST from the unweighted pickers (cursor, power of two choices)
/// to the EDF scheduler.
pub const LB_POLICIES: [&str; 6] =
    ["round_robin", "round_robin_weighted", "least_request", "least_request_weighted", "ring_hash", "maglev"];

/// Envoy's `lb_policy` for a benchmarked policy name (defaults for its
/// config block: ring 1,024..8M entries, Maglev table 65,537, P2C).
fn lb_policy_name(policy: &str) -> &'static str {
    match policy {
        "round_robin" | "round_robin_weighted" => "ROUND_ROBIN",
        "least_request" | "least_request_weighted" => "LEAST_REQUEST",
        "ring_hash" => "RING_HASH",
        "maglev" => "MAGLEV",
        other => panic!("unknown lb policy {other:?}"),
    }
}

/// A shard's balancer for `policy` over `n` healthy hosts at priority 0
/// (weights 1..=5 cycling for the `_weighted` variants, else all 1).
pub fn balancer(policy: &str, n: usize) -> Balancer {
    let lb_policy = lb_policy_name(policy);
    let yaml = format!(
        r#"
static_resources:
  clusters:
  - name: c
    type: STATIC
    connect_timeout: 1s
    lb_policy: {lb_policy}
    load_assignment:
      cluster_name: c
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 10.0.0.1, port_value: 8080 }} }} }}
"#
    );
    let cfg = control::bootstrap::load_str(&yaml, control::bootstrap::Format::Yaml, "lb-bench.yaml")
        .unwrap_or_else(|e| panic!("{e}"));
    let cluster = cfg.clusters.get("c").expect("cluster c");
    let weighted = policy.ends_with("_weighted");
    let hosts = (0..n)
        .map(|i| LbHost {
            addr: SocketAddr::from(([10, (i >> 8) as u8, (i & 0xff) as u8, 1], 8080)),
            weight: if weighted { 1 + (i % 5) as u32 } else { 1 },
            priority: 0,
        })
        .collect();
    let loaded = match cluster.lb_policy {
        LbPolicy::RoundRobin => "ROUND_ROBIN",
        LbPolicy::LeastRequest { .. } => "LEAST_REQUEST",
        LbPolicy::RingHash { .. } => "RING_HASH",
        LbPolicy::Maglev { .. } => "MAGLEV",
        _ => "other",
    };
    assert_eq!(loaded, lb_policy);
    Balancer::new(cluster, hosts, &[], 42)
}

/// 256 well-mixed request hashes (what a `hash_policy` on a user header
/// gives), cycled through by the hashing policies.
pub fn request_hashes() -> Vec<u64> {
    (0..256).map(|i| xxhash_rust::xxh64::xxh64(format!("user-{i}").as_bytes(), 0)).collect()
}

/// Active request counts per host for LEAST_REQUEST: a fixed uneven spread.
pub fn active_requests(n: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 7919) % 13) as u32).collect()
}

/// One pick as `ClusterRuntime` makes it: a request hash for the hashing
/// policies (none for the others), the host's active count for LEAST_REQUEST.
#[inline]
pub fn lb_pick(b: &mut Balancer, hash: Option<u64>, active: &[u32]) -> u32 {
    b.pick(hash, &|h| active[h as usize]).expect("a healthy host").host
}

/// Whether `policy` takes the request hash.
pub fn lb_uses_hash(policy: &str) -> bool {
    matches!(policy, "ring_hash" | "maglev")
}
