//! The router: picks the virtual host and route for a request, Envoy-style,
//! from one immutable `RouteConfig` snapshot.  Sans-IO: bytes in, a borrowed
//! `Route` out.
//!
//! It owns the lookup structures built from a snapshot ([`RouteTable`]) and
//! the path rewriting a matched route asks for ([`rewrite_prefix`]).  It must
//! not touch requests, connections or clusters: the caller passes the host
//! and path it parsed, and turns `None` into a 404 and a `Route` into a
//! forward or a direct response.  A table is built once per snapshot on
//! whichever thread picks the snapshot up, then only read.
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

use std::collections::HashMap;
use std::sync::Arc;

use control::model::{DomainMatch, PathMatch, Route, RouteConfig, RouteMatch, VirtualHost};

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
            groups.push(WildcardGroup {
                len,
                map: HashMap::new(),
            });
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
        self.find_vhost_index(host)
            .map(|i| &self.cfg.virtual_hosts[i])
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

    /// The route for a request: `host` = Host header (or `:authority`)
    /// value, `path` = request target path+query.  `None` → 404 by caller.
    pub fn route(&self, host: &[u8], path: &[u8]) -> Option<&Route> {
        let vh = self.find_virtual_host(host)?;
        vh.routes.iter().find(|r| path_matches(&r.matcher, path))
    }
}

/// Longest-first probe of wildcard groups; `part(host, n)` cuts the `n`
/// bytes a group of length `n` compares against.
fn lookup_wildcard(
    groups: &[WildcardGroup],
    host: &[u8],
    part: impl Fn(&[u8], usize) -> &[u8],
) -> Option<usize> {
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

/// Envoy's path matchers compare the path with query and fragment removed
/// (`PathUtil::removeQueryAndFragment`), so `/a?x` matches `path: /a`.
fn path_matches(m: &RouteMatch, path_and_query: &[u8]) -> bool {
    let end = memchr::memchr2(b'?', b'#', path_and_query).unwrap_or(path_and_query.len());
    let path = &path_and_query[..end];
    match &m.path {
        PathMatch::Prefix(p) => {
            let p = p.as_bytes();
            path.len() >= p.len() && bytes_eq(&path[..p.len()], p, m.case_sensitive)
        }
        PathMatch::Exact(p) => bytes_eq(path, p.as_bytes(), m.case_sensitive),
    }
}

fn bytes_eq(a: &[u8], b: &[u8], case_sensitive: bool) -> bool {
    if case_sensitive {
        a == b
    } else {
        a.eq_ignore_ascii_case(b)
    }
}

/// `prefix_rewrite` (Envoy semantics): replaces the first
/// `matched_prefix.len()` bytes of `path_and_query` — the part the route's
/// prefix matched, whatever its case — with `new_prefix`; the rest, query
/// included, is kept.  `out` is cleared first.  Like Envoy, no slash is
/// added or collapsed: prefix `/api` rewritten to `/` turns `/api/x` into
/// `//x`, so configs pair `/api/` with `/`.
pub fn rewrite_prefix(
    path_and_query: &[u8],
    matched_prefix: &str,
    new_prefix: &str,
    out: &mut Vec<u8>,
) {
    out.clear();
    let n = matched_prefix.len();
    if path_and_query.len() >= n
        && path_and_query[..n].eq_ignore_ascii_case(matched_prefix.as_bytes())
    {
        out.extend_from_slice(new_prefix.as_bytes());
        out.extend_from_slice(&path_and_query[n..]);
    } else {
        // Not a path this prefix matched: leave it alone rather than cut a
        // random number of bytes.
        out.extend_from_slice(path_and_query);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use control::model::{ForwardAction, RouteAction};

    fn route(name: &str, path: PathMatch, case_sensitive: bool) -> Route {
        Route {
            name: name.into(),
            matcher: RouteMatch {
                path,
                case_sensitive,
            },
            action: RouteAction::Forward(ForwardAction {
                cluster: format!("c-{name}"),
                timeout: None,
                prefix_rewrite: None,
                hash_policy: Vec::new(),
            }),
            typed_per_filter_config: Default::default(),
        }
    }

    fn vhost(name: &str, domains: Vec<DomainMatch>) -> VirtualHost {
        VirtualHost {
            name: name.into(),
            domains,
            routes: vec![route(name, PathMatch::Prefix("/".into()), true)],
            typed_per_filter_config: Default::default(),
        }
    }

    fn table(vhs: Vec<VirtualHost>) -> RouteTable {
        RouteTable::new(&Arc::new(RouteConfig {
            name: "rc".into(),
            virtual_hosts: vhs,
            typed_per_filter_config: Default::default(),
        }))
    }

    fn vh_name<'a>(t: &'a RouteTable, host: &str) -> Option<&'a str> {
        t.find_virtual_host(host.as_bytes())
            .map(|v| v.name.as_str())
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
            vhost(
                "first",
                vec![Exact("a.com".into()), Suffix(".b.com".into()), Any],
            ),
            vhost(
                "second",
                vec![Exact("A.com".into()), Suffix(".B.com".into()), Any],
            ),
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
        table(vec![VirtualHost {
            name: "vh".into(),
            domains: vec![Any],
            routes,
            typed_per_filter_config: Default::default(),
        }])
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
                name: "a".into(),
                domains: vec![Exact("a.com".into())],
                routes: vec![route("a-only", PathMatch::Exact("/x".into()), true)],
                typed_per_filter_config: Default::default(),
            },
            vhost("fallback", vec![Any]),
        ]);
        assert_eq!(
            t.route(b"a.com", b"/x").map(|r| r.name.as_str()),
            Some("a-only")
        );
        // The vhost is chosen first; its routes not matching is a 404 even if
        // another vhost would have matched the path.
        assert!(t.route(b"a.com", b"/y").is_none());
        assert_eq!(
            t.route(b"b.com", b"/y").map(|r| r.name.as_str()),
            Some("fallback")
        );
    }

    #[test]
    fn prefix_rewrite() {
        let mut out = Vec::new();
        rewrite_prefix(b"/api/v1/users?id=3", "/api/v1", "/v1", &mut out);
        assert_eq!(out, b"/v1/users?id=3");
        rewrite_prefix(b"/api/x", "/api", "/", &mut out);
        assert_eq!(out, b"//x", "Envoy does not collapse slashes");
        rewrite_prefix(b"/api/x", "/api/", "/", &mut out);
        assert_eq!(out, b"/x");
        rewrite_prefix(b"/API/x?q", "/api/", "/new/", &mut out);
        assert_eq!(
            out, b"/new/x?q",
            "case-insensitive matches are replaced too"
        );
        rewrite_prefix(b"/api", "/api", "", &mut out);
        assert_eq!(out, b"");
        rewrite_prefix(b"/other", "/api", "/x", &mut out);
        assert_eq!(out, b"/other");
        rewrite_prefix(b"/a?x", "/a", "/b/c", &mut out);
        assert_eq!(out, b"/b/c?x");
    }
}
