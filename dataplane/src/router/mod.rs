//! The router: picks the virtual host and route for a request, Envoy-style,
//! from one immutable `RouteConfig` snapshot, and computes what a matched
//! route does to it.  Sans-IO: request parts in, borrowed routes and bytes
//! out.
//!
//! It owns the lookup structures built from a snapshot ([`RouteTable`]),
//! the matching of routes (path specifiers, header and query parameter
//! matchers; [`index`] keeps 10,000 routes fast), and the pure parts of
//! route actions: weighted cluster picks, path rewrites, redirect URLs
//! ([`action`]) and header mutations ([`mutate`]).  It must not touch
//! connections or clusters: the proxy passes the request it parsed and a
//! random number, and turns the results into replies and upstream heads.
//! A table is built once per snapshot on whichever thread picks the
//! snapshot up, then only read.
//!
//! Virtual host selection follows Envoy's `VirtualHost.domains` order:
//!
//! 1. exact domains (`www.foo.com`), case-insensitively;
//! 2. suffix wildcards (`*.foo.com`, `*-bar.foo.com`), longest first;
//! 3. prefix wildcards (`foo.*`, `foo-*`), longest first;
//! 4. the catch-all `*`.
//!
//! A wildcard never matches the empty string: `*.foo.com` matches
//! `bar.foo.com` but neither `foo.com` nor `.foo.com`.  Hosts are matched as
//! sent first and then, within each step, without their `:port`, so
//! `foo.com:8080` finds `foo.com` when no domain names the port, yet a
//! domain that does name it (`foo.com:8080`) wins over one that does not.
//!
//! Exact domains live in a hash map; wildcards are grouped by length, one
//! hash map per length, longest group first — so a lookup costs one hash
//! probe per distinct wildcard length however many thousand domains there
//! are (the same shape as Envoy's `wildcard_virtual_host_suffixes_`).
//!
//! Within the virtual host the first route whose every condition holds
//! wins, as in Envoy: the path specifier (compared with the path without
//! query and fragment), every `headers` matcher, every `query_parameters`
//! matcher.  Routes are not scanned one by one; see [`index`].

pub mod action;
mod index;
pub mod mutate;

use std::collections::HashMap;
use std::sync::Arc;

use control::model::{DomainMatch, PathMatch, QueryParameterSpec, Route, RouteConfig, VirtualHost};

use crate::matcher::{HeaderMatcher, HeaderSource, NoHeaders, StringMatcher};
use index::{Kind, PathIndex};

/// Hosts up to this long are lower-cased on the stack; longer ones (never
/// valid DNS names, but a client can send them) take a heap copy.
const STACK_HOST: usize = 320;

/// Wildcard domains of one length (without the `*`), lower-cased.
#[derive(Debug)]
struct WildcardGroup {
    len: usize,
    map: HashMap<Box<[u8]>, usize>,
}

/// Virtual-host and route lookup for one `RouteConfig` snapshot.
#[derive(Debug)]
pub struct RouteTable {
    cfg: Arc<RouteConfig>,
    /// Per virtual host (same order as `cfg.virtual_hosts`): its routes'
    /// index and compiled matchers.
    routes: Vec<VhostRoutes>,
    exact: HashMap<Box<[u8]>, usize>,
    /// By `len`, descending.
    suffixes: Vec<WildcardGroup>,
    /// By `len`, descending.
    prefixes: Vec<WildcardGroup>,
    any: Option<usize>,
}

fn insert_wildcard(groups: &mut Vec<WildcardGroup>, key: &str, vhost: usize) {
    let key = key.to_ascii_lowercase().into_bytes().into_boxed_slice();
    let len = key.len();
    let group = match groups.iter().position(|g| g.len == len) {
        Some(i) => &mut groups[i],
        None => {
            groups.push(WildcardGroup { len, map: HashMap::new() });
            groups.last_mut().expect("just pushed")
        }
    };
    // Envoy refuses duplicate domains at config load; if one slips through,
    // the first virtual host keeps it.
    group.map.entry(key).or_insert(vhost);
}

impl RouteTable {
    pub fn new(cfg: &Arc<RouteConfig>) -> RouteTable {
        let mut exact = HashMap::new();
        let mut suffixes = Vec::new();
        let mut prefixes = Vec::new();
        let mut any = None;
        for (i, vh) in cfg.virtual_hosts.iter().enumerate() {
            for d in &vh.domains {
                match d {
                    DomainMatch::Exact(name) => {
                        let key = name.to_ascii_lowercase().into_bytes().into_boxed_slice();
                        exact.entry(key).or_insert(i);
                    }
                    DomainMatch::Suffix(s) => insert_wildcard(&mut suffixes, s, i),
                    DomainMatch::Prefix(p) => insert_wildcard(&mut prefixes, p, i),
                    DomainMatch::Any => {
                        any.get_or_insert(i);
                    }
                }
            }
        }
        suffixes.sort_by_key(|g| std::cmp::Reverse(g.len));
        prefixes.sort_by_key(|g| std::cmp::Reverse(g.len));
        RouteTable {
            cfg: Arc::clone(cfg),
            routes: cfg.virtual_hosts.iter().map(VhostRoutes::new).collect(),
            exact,
            suffixes,
            prefixes,
            any,
        }
    }

    /// The snapshot this table was built from.
    pub fn config(&self) -> &Arc<RouteConfig> {
        &self.cfg
    }

    /// The virtual host for `host` (a Host / `:authority` value), if any.
    pub fn find_virtual_host(&self, host: &[u8]) -> Option<&VirtualHost> {
        self.find_vhost_index(host).map(|i| &self.cfg.virtual_hosts[i])
    }

    fn find_vhost_index(&self, host: &[u8]) -> Option<usize> {
        if self.exact.is_empty() && self.suffixes.is_empty() && self.prefixes.is_empty() {
            // The common sidecar/edge shape: one `*` virtual host.
            return self.any;
        }
        let mut stack = [0u8; STACK_HOST];
        let heap;
        let lower: &[u8] = if host.len() <= STACK_HOST {
            let s = &mut stack[..host.len()];
            s.copy_from_slice(host);
            s.make_ascii_lowercase();
            s
        } else {
            heap = host.to_ascii_lowercase();
            &heap
        };
        let bare = strip_port(lower);
        let candidates = [Some(lower), bare];
        let candidates = candidates.iter().flatten();

        for h in candidates.clone() {
            if let Some(&i) = self.exact.get(*h) {
                return Some(i);
            }
        }
        for h in candidates.clone() {
            if let Some(i) = lookup_wildcard(&self.suffixes, h, |h, n| &h[h.len() - n..]) {
                return Some(i);
            }
        }
        for h in candidates {
            if let Some(i) = lookup_wildcard(&self.prefixes, h, |h, n| &h[..n]) {
                return Some(i);
            }
        }
        self.any
    }

    /// The route for a request without headers: `host` = Host header (or
    /// `:authority`) value, `path` = request target path+query.  Routes
    /// with header matchers see no headers at all.  `None` → 404.
    pub fn route(&self, host: &[u8], path: &[u8]) -> Option<&Route> {
        self.find(host, path, &NoHeaders).map(|m| m.route)
    }

    /// The virtual host and route for a request (`path` = path and query
    /// as received), Envoy's first-match-wins.  `None` → 404 by the caller.
    pub fn find<H: HeaderSource + ?Sized>(&self, host: &[u8], path: &[u8], headers: &H) -> Option<Matched<'_>> {
        let v = self.find_vhost_index(host)?;
        let vhost = &self.cfg.virtual_hosts[v];
        let compiled = &self.routes[v];
        let (path_only, query) = split_path(path);
        let i = compiled.index.first(path_only, |i, kind| {
            if kind == Kind::Regex {
                if let PathMatch::Regex(re) = &vhost.routes[i].matcher.path {
                    if !re.is_match(path_only) {
                        return false;
                    }
                }
            }
            let c = &compiled.routes[i];
            c.headers.iter().all(|m| m.matches(headers)) && c.query.iter().all(|q| q.matches(query))
        })?;
        Some(Matched { config: &self.cfg, vhost, route: &vhost.routes[i] })
    }
}

/// What [`RouteTable::find`] found.
#[derive(Debug, Clone, Copy)]
pub struct Matched<'a> {
    pub config: &'a RouteConfig,
    pub vhost: &'a VirtualHost,
    pub route: &'a Route,
}

/// The routes of one virtual host, compiled.
#[derive(Debug)]
struct VhostRoutes {
    index: PathIndex,
    routes: Vec<CompiledRoute>,
}

/// The per-request matchers of one route (its path is in the index).
#[derive(Debug)]
struct CompiledRoute {
    headers: Box<[HeaderMatcher]>,
    query: Box<[QueryMatcher]>,
}

impl VhostRoutes {
    fn new(vh: &VirtualHost) -> VhostRoutes {
        let mut index = PathIndex::new();
        let mut routes = Vec::with_capacity(vh.routes.len());
        for (i, r) in vh.routes.iter().enumerate() {
            let m = &r.matcher;
            match &m.path {
                PathMatch::Prefix(p) => index.add(i, p.as_bytes(), Kind::Prefix, m.case_sensitive),
                PathMatch::Exact(p) => index.add(i, p.as_bytes(), Kind::Exact, m.case_sensitive),
                PathMatch::SeparatedPrefix(p) => index.add(i, p.as_bytes(), Kind::Separated, m.case_sensitive),
                // Regexes are case-sensitive whatever `case_sensitive` says
                // (Envoy ignores it for them); `(?i)` parts yield no literal.
                PathMatch::Regex(re) => {
                    index.add(i, &index::regex_literal_prefix(re.regex.as_str()), Kind::Regex, true)
                }
            }
            routes.push(CompiledRoute {
                headers: m.headers.iter().map(HeaderMatcher::new).collect(),
                query: m.query_parameters.iter().map(QueryMatcher::new).collect(),
            });
        }
        VhostRoutes { index, routes }
    }
}

/// A compiled `QueryParameterMatcher`.
#[derive(Debug)]
struct QueryMatcher {
    name: Box<[u8]>,
    spec: QuerySpec,
}

#[derive(Debug)]
enum QuerySpec {
    Present(bool),
    Value(StringMatcher),
}

impl QueryMatcher {
    fn new(q: &control::model::QueryParameterMatch) -> QueryMatcher {
        QueryMatcher {
            name: q.name.as_bytes().into(),
            spec: match &q.spec {
                QueryParameterSpec::Present(p) => QuerySpec::Present(*p),
                QueryParameterSpec::String(s) => QuerySpec::Value(StringMatcher::new(s)),
            },
        }
    }

    /// Envoy looks at the first occurrence only, not percent-decoded.
    fn matches(&self, query: Option<&[u8]>) -> bool {
        let value = query.and_then(|q| first_query_value(q, &self.name));
        match &self.spec {
            QuerySpec::Present(p) => value.is_some() == *p,
            QuerySpec::Value(m) => value.is_some_and(|v| m.matches(v)),
        }
    }
}

/// The value of the first `name` parameter of a query string (`a=1&b`:
/// `b` has the empty value), as Envoy's `QueryParamsMulti` parses it.
pub fn first_query_value<'q>(query: &'q [u8], name: &[u8]) -> Option<&'q [u8]> {
    query.split(|b| *b == b'&').find_map(|param| match memchr::memchr(b'=', param) {
        Some(eq) => (&param[..eq] == name).then(|| &param[eq + 1..]),
        None => (param == name).then_some(&b""[..]),
    })
}

/// `path?query#fragment` → (`path`, `Some(query)`); Envoy's path matchers
/// see the path without query and fragment (`removeQueryAndFragment`).
pub fn split_path(path_and_query: &[u8]) -> (&[u8], Option<&[u8]>) {
    let end = memchr::memchr2(b'?', b'#', path_and_query).unwrap_or(path_and_query.len());
    let path = &path_and_query[..end];
    if path_and_query.get(end) != Some(&b'?') {
        return (path, None);
    }
    let rest = &path_and_query[end + 1..];
    let q_end = memchr::memchr(b'#', rest).unwrap_or(rest.len());
    (path, Some(&rest[..q_end]))
}

/// Longest-first probe of wildcard groups; `part(host, n)` cuts the `n`
/// bytes a group of length `n` compares against.
fn lookup_wildcard(groups: &[WildcardGroup], host: &[u8], part: impl Fn(&[u8], usize) -> &[u8]) -> Option<usize> {
    groups
        .iter()
        // Strictly shorter: the `*` must stand for at least one byte.
        .filter(|g| g.len < host.len())
        .find_map(|g| g.map.get(part(host, g.len)).copied())
}

/// `host:port` → `host` (`[v6]:port` → `[v6]`); `None` when there is no
/// port.  An unbracketed IPv6 literal has colons but no port.
fn strip_port(host: &[u8]) -> Option<&[u8]> {
    let colon = memchr::memrchr(b':', host)?;
    let (name, port) = (&host[..colon], &host[colon + 1..]);
    if !port.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if name.first() == Some(&b'[') {
        if name.last() != Some(&b']') {
            return None;
        }
    } else if name.contains(&b':') {
        return None;
    }
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use control::model::{
        HeaderMatch, HeaderMatchSpec, HeaderMutations, QueryParameterMatch, RouteAction, RouteMatch, SafeRegex,
        StringMatch, StringPattern,
    };

    fn route_with(name: &str, matcher: RouteMatch) -> Route {
        Route {
            name: name.into(),
            matcher,
            action: RouteAction::DirectResponse { status: 200, body: None },
            typed_per_filter_config: Default::default(),
            request_headers: HeaderMutations::default(),
            response_headers: HeaderMutations::default(),
        }
    }

    fn route(name: &str, path: PathMatch, case_sensitive: bool) -> Route {
        route_with(name, RouteMatch { path, case_sensitive, headers: vec![], query_parameters: vec![] })
    }

    fn vhost(name: &str, domains: Vec<DomainMatch>) -> VirtualHost {
        VirtualHost {
            name: name.into(),
            domains,
            routes: vec![route(name, PathMatch::Prefix("/".into()), true)],
            typed_per_filter_config: Default::default(),
            request_headers: HeaderMutations::default(),
            response_headers: HeaderMutations::default(),
            retry: Default::default(),
        }
    }

    fn table(vhs: Vec<VirtualHost>) -> RouteTable {
        RouteTable::new(&Arc::new(RouteConfig {
            name: "rc".into(),
            virtual_hosts: vhs,
            typed_per_filter_config: Default::default(),
            request_headers: HeaderMutations::default(),
            response_headers: HeaderMutations::default(),
            most_specific_header_mutations_wins: false,
        }))
    }

    fn vh_name<'a>(t: &'a RouteTable, host: &str) -> Option<&'a str> {
        t.find_virtual_host(host.as_bytes()).map(|v| v.name.as_str())
    }

    use DomainMatch::*;

    fn standard() -> RouteTable {
        table(vec![
            vhost("any", vec![Any]),
            vhost("exact", vec![Exact("www.foo.com".into())]),
            vhost("suffix", vec![Suffix(".foo.com".into())]),
            vhost("longsuffix", vec![Suffix("-bar.foo.com".into())]),
            vhost("prefix", vec![Prefix("foo.".into())]),
            vhost("longprefix", vec![Prefix("foo.bar.".into())]),
            vhost("ported", vec![Exact("api.foo.com:8443".into())]),
        ])
    }

    #[test]
    fn domain_search_order() {
        let t = standard();
        assert_eq!(vh_name(&t, "www.foo.com"), Some("exact"));
        assert_eq!(vh_name(&t, "WWW.Foo.COM"), Some("exact"));
        assert_eq!(vh_name(&t, "x.foo.com"), Some("suffix"));
        assert_eq!(vh_name(&t, "baz-bar.foo.com"), Some("longsuffix"));
        // Suffix beats prefix even when the prefix is longer.
        assert_eq!(vh_name(&t, "foo.bar.foo.com"), Some("suffix"));
        assert_eq!(vh_name(&t, "foo.example"), Some("prefix"));
        assert_eq!(vh_name(&t, "foo.bar.example"), Some("longprefix"));
        assert_eq!(vh_name(&t, "other.org"), Some("any"));
        assert_eq!(vh_name(&t, ""), Some("any"));
    }

    #[test]
    fn wildcards_never_match_empty() {
        let t = table(vec![
            vhost("any", vec![Any]),
            vhost("suffix", vec![Suffix(".foo.com".into())]),
            vhost("longsuffix", vec![Suffix("-bar.foo.com".into())]),
            vhost("prefix", vec![Prefix("foo.".into())]),
        ]);
        // `*.foo.com` matches neither `foo.com` nor `.foo.com`...
        assert_eq!(vh_name(&t, "x.foo.com"), Some("suffix"));
        assert_eq!(vh_name(&t, ".foo.com"), Some("any"));
        // ... though `foo.*` does match `foo.com`.
        assert_eq!(vh_name(&t, "foo.com"), Some("prefix"));
        // `*-bar.foo.com` does not match `-bar.foo.com` but `*.foo.com` does.
        assert_eq!(vh_name(&t, "-bar.foo.com"), Some("suffix"));
        // `foo.*` does not match `foo.`.
        assert_eq!(vh_name(&t, "foo."), Some("any"));
        let t = table(vec![vhost("suffix", vec![Suffix(".foo.com".into())])]);
        assert_eq!(vh_name(&t, "foo.com"), None);
    }

    #[test]
    fn ports_are_matched_then_stripped() {
        let t = standard();
        assert_eq!(vh_name(&t, "www.foo.com:8080"), Some("exact"));
        assert_eq!(vh_name(&t, "x.foo.com:80"), Some("suffix"));
        assert_eq!(vh_name(&t, "foo.x:80"), Some("prefix"));
        // A domain naming the port matches first; without it the bare name.
        assert_eq!(vh_name(&t, "api.foo.com:8443"), Some("ported"));
        assert_eq!(vh_name(&t, "api.foo.com:9000"), Some("suffix"));
        assert_eq!(vh_name(&t, "api.foo.com"), Some("suffix"));

        assert_eq!(strip_port(b"[::1]:80"), Some(&b"[::1]"[..]));
        assert_eq!(strip_port(b"[::1]"), None);
        assert_eq!(strip_port(b"::1"), None);
        assert_eq!(strip_port(b"a:b"), None);
        assert_eq!(strip_port(b"a:"), Some(&b"a"[..]));
        let t = table(vec![vhost("v6", vec![Exact("[::1]".into())])]);
        assert_eq!(vh_name(&t, "[::1]:8080"), Some("v6"));
        assert_eq!(vh_name(&t, "[::2]:8080"), None);
    }

    #[test]
    fn no_catch_all_means_none() {
        let t = table(vec![vhost("exact", vec![Exact("a.com".into())])]);
        assert_eq!(vh_name(&t, "b.com"), None);
        assert!(t.route(b"b.com", b"/").is_none());
        let t = table(vec![]);
        assert!(t.route(b"a.com", b"/").is_none());
    }

    #[test]
    fn only_catch_all_fast_path() {
        let t = table(vec![vhost("any", vec![Any])]);
        assert_eq!(vh_name(&t, "whatever:1"), Some("any"));
    }

    #[test]
    fn duplicate_domains_first_vhost_wins() {
        let t = table(vec![
            vhost("first", vec![Exact("a.com".into()), Suffix(".b.com".into()), Any]),
            vhost("second", vec![Exact("A.com".into()), Suffix(".B.com".into()), Any]),
        ]);
        assert_eq!(vh_name(&t, "a.com"), Some("first"));
        assert_eq!(vh_name(&t, "x.b.com"), Some("first"));
        assert_eq!(vh_name(&t, "zzz"), Some("first"));
    }

    #[test]
    fn thousands_of_domains() {
        let mut vhs = Vec::new();
        for i in 0..3000 {
            vhs.push(vhost(
                &format!("v{i}"),
                vec![
                    Exact(format!("host{i}.example.com")),
                    Suffix(format!(".svc{i}.cluster.local")),
                    Prefix(format!("p{i}.")),
                ],
            ));
        }
        let t = table(vhs);
        assert_eq!(vh_name(&t, "host2999.example.com"), Some("v2999"));
        assert_eq!(vh_name(&t, "x.svc17.cluster.local"), Some("v17"));
        assert_eq!(vh_name(&t, "p123.anything"), Some("v123"));
        assert_eq!(vh_name(&t, "nothing"), None);
    }

    #[test]
    fn long_host_uses_heap_copy() {
        let long = format!("{}.foo.com", "a".repeat(1000));
        let t = standard();
        assert_eq!(vh_name(&t, &long), Some("suffix"));
        assert_eq!(vh_name(&t, &long.to_uppercase()), Some("suffix"));
    }

    fn routes_vh(routes: Vec<Route>) -> RouteTable {
        table(vec![VirtualHost { routes, ..vhost("vh", vec![Any]) }])
    }

    fn route_name<'a>(t: &'a RouteTable, path: &str) -> Option<&'a str> {
        t.route(b"h", path.as_bytes()).map(|r| r.name.as_str())
    }

    #[test]
    fn first_matching_route_wins() {
        let t = routes_vh(vec![
            route("exact", PathMatch::Exact("/api".into()), true),
            route("api", PathMatch::Prefix("/api/".into()), true),
            route("api2", PathMatch::Prefix("/api/v2".into()), true),
            route("root", PathMatch::Prefix("/".into()), true),
        ]);
        assert_eq!(route_name(&t, "/api"), Some("exact"));
        assert_eq!(route_name(&t, "/api?x=1"), Some("exact"));
        assert_eq!(route_name(&t, "/api/v2/x"), Some("api"));
        assert_eq!(route_name(&t, "/apix"), Some("root"));
        assert_eq!(route_name(&t, "/API"), Some("root"));
        assert_eq!(route_name(&t, "/"), Some("root"));
    }

    #[test]
    fn query_is_stripped_before_matching() {
        let t = routes_vh(vec![
            route("exact", PathMatch::Exact("/a".into()), true),
            route("qprefix", PathMatch::Prefix("/b?x".into()), true),
            route("pre", PathMatch::Prefix("/b".into()), true),
        ]);
        assert_eq!(route_name(&t, "/a?"), Some("exact"));
        assert_eq!(route_name(&t, "/a?b=c"), Some("exact"));
        assert_eq!(route_name(&t, "/a#frag"), Some("exact"));
        assert_eq!(route_name(&t, "/ab"), None);
        // A prefix never sees the query.
        assert_eq!(route_name(&t, "/b?x=1"), Some("pre"));
        assert_eq!(route_name(&t, "/c"), None);
    }

    #[test]
    fn case_insensitive_routes() {
        let t = routes_vh(vec![
            route("exact", PathMatch::Exact("/Login".into()), false),
            route("pre", PathMatch::Prefix("/Static/".into()), false),
            route("cs", PathMatch::Prefix("/CS".into()), true),
        ]);
        assert_eq!(route_name(&t, "/login"), Some("exact"));
        assert_eq!(route_name(&t, "/LOGIN?x"), Some("exact"));
        assert_eq!(route_name(&t, "/static/a.css"), Some("pre"));
        assert_eq!(route_name(&t, "/STATIC/a.css"), Some("pre"));
        assert_eq!(route_name(&t, "/CS/x"), Some("cs"));
        assert_eq!(route_name(&t, "/cs/x"), None);
    }

    #[test]
    fn empty_prefix_matches_everything() {
        let t = routes_vh(vec![route("all", PathMatch::Prefix(String::new()), true)]);
        assert_eq!(route_name(&t, "/anything?x"), Some("all"));
        assert_eq!(route_name(&t, "*"), Some("all"));
    }

    #[test]
    fn route_uses_host_then_path() {
        let t = table(vec![
            VirtualHost {
                routes: vec![route("a-only", PathMatch::Exact("/x".into()), true)],
                ..vhost("a", vec![Exact("a.com".into())])
            },
            vhost("fallback", vec![Any]),
        ]);
        assert_eq!(t.route(b"a.com", b"/x").map(|r| r.name.as_str()), Some("a-only"));
        // The vhost is chosen first; its routes not matching is a 404 even if
        // another vhost would have matched the path.
        assert!(t.route(b"a.com", b"/y").is_none());
        assert_eq!(t.route(b"b.com", b"/y").map(|r| r.name.as_str()), Some("fallback"));
    }

    fn regex(p: &str) -> PathMatch {
        PathMatch::Regex(SafeRegex::new(p).unwrap())
    }

    #[test]
    fn separated_prefix_and_regex_paths() {
        let t = routes_vh(vec![
            route("sep", PathMatch::SeparatedPrefix("/api/dev".into()), true),
            route("re", regex("/users/[0-9]+(/.*)?"), true),
            route("re-ci", regex("(?i)/Files/.*"), false),
            route("ci-sep", PathMatch::SeparatedPrefix("/Docs".into()), false),
        ]);
        for p in ["/api/dev", "/api/dev/", "/api/dev/v1", "/api/dev?param=true", "/api/dev#f"] {
            assert_eq!(route_name(&t, p), Some("sep"), "{p}");
        }
        assert_eq!(route_name(&t, "/api/developer"), None);
        assert_eq!(route_name(&t, "/api/de"), None);
        assert_eq!(route_name(&t, "/users/42"), Some("re"));
        assert_eq!(route_name(&t, "/users/42/x?y=1"), Some("re"), "query removed first");
        assert_eq!(route_name(&t, "/users/x"), None, "must match the whole path");
        assert_eq!(route_name(&t, "/Users/42"), None, "case_sensitive does not apply to regexes");
        assert_eq!(route_name(&t, "/FILES/a"), Some("re-ci"));
        assert_eq!(route_name(&t, "/docs/x"), Some("ci-sep"));
        assert_eq!(route_name(&t, "/DOCSx"), None);
    }

    fn exact_header(name: &str, value: &str) -> HeaderMatch {
        HeaderMatch {
            name: name.into(),
            spec: HeaderMatchSpec::String(StringMatch {
                pattern: StringPattern::Exact(value.into()),
                ignore_case: false,
            }),
            invert_match: false,
            treat_missing_header_as_empty: false,
        }
    }

    fn head(raw: &str) -> crate::http1::RequestHead {
        let mut h = crate::http1::RequestHead::new();
        crate::http1::parse_request_head(raw.as_bytes(), &crate::http1::Limits::default(), &mut h).unwrap().unwrap();
        h
    }

    fn find_name<'a>(t: &'a RouteTable, raw: &str) -> Option<&'a str> {
        let h = head(raw);
        t.find(h.host().unwrap_or(b""), h.path_and_query(), &h).map(|m| m.route.name.as_str())
    }

    #[test]
    fn header_and_query_conditions() {
        let gray = RouteMatch {
            path: PathMatch::Prefix("/".into()),
            case_sensitive: true,
            headers: vec![exact_header("x-env", "gray")],
            query_parameters: vec![],
        };
        let debug = RouteMatch {
            path: PathMatch::Prefix("/".into()),
            case_sensitive: true,
            headers: vec![],
            query_parameters: vec![QueryParameterMatch {
                name: "debug".into(),
                spec: QueryParameterSpec::String(StringMatch {
                    pattern: StringPattern::Exact("1".into()),
                    ignore_case: false,
                }),
            }],
        };
        let no_token = RouteMatch {
            path: PathMatch::Prefix("/".into()),
            case_sensitive: true,
            headers: vec![],
            query_parameters: vec![QueryParameterMatch {
                name: "token".into(),
                spec: QueryParameterSpec::Present(false),
            }],
        };
        let t = routes_vh(vec![
            route_with("gray", gray),
            route_with("debug", debug),
            route_with("no-token", no_token),
            route("stable", PathMatch::Prefix("/".into()), true),
        ]);
        assert_eq!(find_name(&t, "GET / HTTP/1.1\r\nHost: h\r\nx-env: gray\r\n\r\n"), Some("gray"));
        assert_eq!(find_name(&t, "GET /?token=1 HTTP/1.1\r\nHost: h\r\nx-env: blue\r\n\r\n"), Some("stable"));
        assert_eq!(find_name(&t, "GET /?a=b&debug=1 HTTP/1.1\r\nHost: h\r\n\r\n"), Some("debug"));
        assert_eq!(
            find_name(&t, "GET /?debug=1&debug=2&token HTTP/1.1\r\nHost: h\r\n\r\n"),
            Some("debug"),
            "first occurrence"
        );
        assert_eq!(find_name(&t, "GET /?debug=2&debug=1&token HTTP/1.1\r\nHost: h\r\n\r\n"), Some("stable"));
        assert_eq!(find_name(&t, "GET /x HTTP/1.1\r\nHost: h\r\n\r\n"), Some("no-token"), "present_match: false");
        assert_eq!(
            find_name(&t, "GET /x?debug%3D1 HTTP/1.1\r\nHost: h\r\n\r\n"),
            Some("no-token"),
            "not percent-decoded"
        );
        // Without headers at all (the compatibility entry point).
        assert_eq!(t.route(b"h", b"/?token").map(|r| r.name.as_str()), Some("stable"));
    }

    #[test]
    fn query_parsing() {
        assert_eq!(split_path(b"/a?b=1#f"), (&b"/a"[..], Some(&b"b=1"[..])));
        assert_eq!(split_path(b"/a#f?x"), (&b"/a"[..], None));
        assert_eq!(split_path(b"/a?"), (&b"/a"[..], Some(&b""[..])));
        assert_eq!(first_query_value(b"a=1&b&c=", b"b"), Some(&b""[..]));
        assert_eq!(first_query_value(b"a=1&b&c=", b"c"), Some(&b""[..]));
        assert_eq!(first_query_value(b"a=1=2", b"a"), Some(&b"1=2"[..]));
        assert_eq!(first_query_value(b"ab=1", b"a"), None);
    }

    /// The index must return exactly what Envoy's linear first-match scan
    /// returns, for any mix of route kinds.
    mod against_linear_scan {
        use super::*;
        use proptest::prelude::*;

        fn linear<'a>(routes: &'a [Route], path: &[u8]) -> Option<&'a str> {
            let (p, _) = split_path(path);
            routes
                .iter()
                .find(|r| {
                    let cs = r.matcher.case_sensitive;
                    let eq = |a: &[u8], b: &[u8]| if cs { a == b } else { a.eq_ignore_ascii_case(b) };
                    match &r.matcher.path {
                        PathMatch::Prefix(x) => p.len() >= x.len() && eq(&p[..x.len()], x.as_bytes()),
                        PathMatch::Exact(x) => eq(p, x.as_bytes()),
                        PathMatch::SeparatedPrefix(x) => {
                            p.len() >= x.len()
                                && eq(&p[..x.len()], x.as_bytes())
                                && (p.len() == x.len() || p[x.len()] == b'/')
                        }
                        PathMatch::Regex(re) => re.is_match(p),
                    }
                })
                .map(|r| r.name.as_str())
        }

        fn path_match() -> impl Strategy<Value = (PathMatch, bool)> {
            let lit = "(/[abAB]{0,3}){0,3}";
            prop_oneof![
                (lit, any::<bool>()).prop_map(|(s, cs)| (PathMatch::Prefix(s), cs)),
                (lit, any::<bool>()).prop_map(|(s, cs)| (PathMatch::Exact(s), cs)),
                ("(/[abAB]{1,3}){1,3}", any::<bool>()).prop_map(|(s, cs)| (PathMatch::SeparatedPrefix(s), cs)),
                prop_oneof![Just("/a.*"), Just("/[ab]+/b"), Just("(?i)/A.*"), Just("/a/b|/b"), Just("/ab?/.*"),]
                    .prop_map(|r| (PathMatch::Regex(SafeRegex::new(r).unwrap()), true)),
            ]
        }

        proptest! {
            #[test]
            fn same_route_as_a_linear_scan(
                specs in proptest::collection::vec(path_match(), 1..40),
                paths in proptest::collection::vec("(/[abAB]{0,3}){0,4}(\\?[ab=&]{0,4})?", 1..20),
            ) {
                let routes: Vec<Route> = specs
                    .into_iter()
                    .enumerate()
                    .map(|(i, (p, cs))| route(&format!("r{i}"), p, cs))
                    .collect();
                let t = routes_vh(routes.clone());
                for p in &paths {
                    prop_assert_eq!(route_name(&t, p), linear(&routes, p.as_bytes()), "path {}", p);
                }
            }
        }
    }
}
