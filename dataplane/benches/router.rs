//! Route lookup cost at 10 / 1,000 / 10,000 routes in one virtual host.
//!
//! The table mixes what real route tables hold: mostly `prefix` routes
//! (`/svc<i>/`), every tenth one guarded by a header matcher
//! (`x-env: gray`), every tenth an exact `path`, one `safe_regex` per hundred
//! routes (at least three), and a catch-all `prefix: /` at the end.
//!
//! * `index/<n>/<probe>`: `RouteTable::find` (virtual host, then the route
//!   index: radix tries over literal prefixes, candidates merged in route
//!   order) on a parsed HTTP/1 request.
//! * `linear/<n>/<probe>`: the same answer from a first-match scan over
//!   the routes with the same compiled matchers — what the index replaces.
//!
//! Probes: `prefix` hits a prefix route near the end of the table, `header`
//! a header-matched route near the end (sent with the header), `regex` the
//! last regex route, `miss` nothing but the catch-all.
//!
//! Run: `cargo bench -p dataplane --bench router`.

use std::hint::black_box;
use std::sync::Arc;

use control::model::{
    DomainMatch, HeaderMatch, HeaderMatchSpec, HeaderMutations, PathMatch, Route, RouteAction, RouteConfig, RouteMatch,
    SafeRegex, StringMatch, StringPattern, VirtualHost,
};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use dataplane::http1::{parse_request_head, Limits, RequestHead};
use dataplane::matcher::HeaderMatcher;
use dataplane::router::{split_path, RouteTable};

const SIZES: [usize; 3] = [10, 1_000, 10_000];

fn route(i: usize, path: PathMatch, headers: Vec<HeaderMatch>) -> Route {
    Route {
        name: format!("r{i}"),
        matcher: RouteMatch { path, case_sensitive: true, headers, query_parameters: vec![] },
        action: RouteAction::DirectResponse { status: 200, body: None },
        typed_per_filter_config: Default::default(),
        request_headers: HeaderMutations::default(),
        response_headers: HeaderMutations::default(),
    }
}

fn gray() -> HeaderMatch {
    HeaderMatch {
        name: "x-env".into(),
        spec: HeaderMatchSpec::String(StringMatch { pattern: StringPattern::Exact("gray".into()), ignore_case: false }),
        invert_match: false,
        treat_missing_header_as_empty: false,
    }
}

fn is_regex(i: usize, n: usize) -> bool {
    // One per hundred routes, and at least three in small tables.
    if n < 300 {
        i % (n / 3).max(1) == 1
    } else {
        i % 100 == 50
    }
}

/// `n` routes (the last one the catch-all).
fn routes(n: usize) -> Vec<Route> {
    let mut out: Vec<Route> = (0..n - 1)
        .map(|i| {
            if is_regex(i, n) {
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
    out.push(route(n - 1, PathMatch::Prefix("/".into()), vec![]));
    out
}

fn table(routes: Vec<Route>) -> RouteTable {
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

fn head(path: &str, gray: bool) -> RequestHead {
    let env = if gray { "x-env: gray\r\n" } else { "" };
    let raw = format!("GET {path} HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: bench\r\nAccept: */*\r\n{env}\r\n");
    let mut h = RequestHead::new();
    parse_request_head(raw.as_bytes(), &Limits::default(), &mut h).unwrap().unwrap();
    h
}

/// (probe name, request, expected route name).
fn probes(n: usize) -> Vec<(&'static str, RequestHead, String)> {
    let last_where = |f: &dyn Fn(usize) -> bool| (0..n - 1).rev().find(|&i| f(i)).unwrap();
    let plain = last_where(&|i| !is_regex(i, n) && i % 10 != 3 && i % 10 != 7);
    let header = last_where(&|i| !is_regex(i, n) && i % 10 == 3);
    let regex = last_where(&|i| is_regex(i, n));
    vec![
        ("prefix", head(&format!("/svc{plain}/items?id=7"), false), format!("r{plain}")),
        ("header", head(&format!("/svc{header}/items"), true), format!("r{header}")),
        ("regex", head(&format!("/re{regex}/v2/items"), false), format!("r{regex}")),
        ("miss", head("/nothing/here", false), format!("r{}", n - 1)),
    ]
}

/// Envoy's literal algorithm: the first route, in order, whose path
/// specifier and header matchers hold.
struct Linear {
    routes: Vec<(Route, Vec<HeaderMatcher>)>,
}

impl Linear {
    fn new(routes: Vec<Route>) -> Linear {
        Linear {
            routes: routes
                .into_iter()
                .map(|r| {
                    let h = r.matcher.headers.iter().map(HeaderMatcher::new).collect();
                    (r, h)
                })
                .collect(),
        }
    }

    fn find(&self, head: &RequestHead) -> Option<&Route> {
        let (path, _) = split_path(head.path_and_query());
        self.routes
            .iter()
            .find(|(r, headers)| {
                let path_ok = match &r.matcher.path {
                    PathMatch::Prefix(p) => path.starts_with(p.as_bytes()),
                    PathMatch::Exact(p) => path == p.as_bytes(),
                    PathMatch::SeparatedPrefix(p) => {
                        path.starts_with(p.as_bytes()) && (path.len() == p.len() || path[p.len()] == b'/')
                    }
                    PathMatch::Regex(re) => re.is_match(path),
                };
                path_ok && headers.iter().all(|m| m.matches(head))
            })
            .map(|(r, _)| r)
    }
}

fn bench(c: &mut Criterion) {
    for n in SIZES {
        let t = table(routes(n));
        let linear = Linear::new(routes(n));
        for (probe, req, want) in probes(n) {
            let host = req.host().unwrap();
            assert_eq!(t.find(host, req.path_and_query(), &req).map(|m| m.route.name.as_str()), Some(want.as_str()));
            assert_eq!(linear.find(&req).map(|r| r.name.as_str()), Some(want.as_str()));
            c.bench_with_input(BenchmarkId::new(format!("index/{n}"), probe), &req, |b, req| {
                b.iter(|| {
                    let req = black_box(req);
                    black_box(t.find(req.host().unwrap_or(b""), req.path_and_query(), req).map(|m| m.route))
                })
            });
            c.bench_with_input(BenchmarkId::new(format!("linear/{n}"), probe), &req, |b, req| {
                b.iter(|| black_box(linear.find(black_box(req))))
            });
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
