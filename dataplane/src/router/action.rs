//! The pure parts of route actions: which cluster a request goes to
//! (`cluster_header`, `weighted_clusters`), the path it carries upstream
//! (`prefix_rewrite`, `regex_rewrite`), and the URL a redirect (or a 3xx
//! `direct_response`) points at — each exactly as Envoy computes it.
//!
//! Nothing here reads a socket or a clock: randomness comes in as a number,
//! request parts as slices, results go into caller-owned buffers.

use control::model::{
    ClusterWeight, ForwardAction, PathMatch, Redirect, RedirectPath, RegexRewrite, WeightedClusters, WeightedTarget,
};

use crate::http1::{RequestHead, TargetForm};

/// The first value of request header `name` (lower-case), with Envoy's
/// pseudo-headers: `:authority` is the Host, `:path` the request target,
/// `:method` the method.  "If the header appears multiple times only the
/// first value is used" (`cluster_header`, `host_rewrite_header`).
pub fn first_header<'h>(head: &'h RequestHead, name: &str) -> Option<&'h [u8]> {
    match name {
        ":authority" => head.host(),
        ":path" => Some(head.path_and_query()),
        ":method" => Some(head.method_str().as_bytes()),
        ":scheme" => Some(b"http"),
        n if n.starts_with(':') => None,
        n => head.headers.get(n),
    }
}

/// The random number a weighted pick uses: the `header_name` header when
/// it holds exactly one unsigned 64-bit integer (so tiers of proxies pick
/// alike), else `random`.
pub fn weighted_random(w: &WeightedClusters, head: &RequestHead, random: u64) -> u64 {
    let Some(name) = &w.random_value_header else {
        return random;
    };
    let mut values = head.headers.get_all(name);
    match (values.next(), values.next()) {
        (Some(v), None) => parse_u64(v).unwrap_or(random),
        _ => random,
    }
}

/// `absl::SimpleAtoi` for `uint64_t`: optional surrounding whitespace and
/// `+`, decimal digits, no overflow.
fn parse_u64(v: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(v).ok()?.trim_matches(|c: char| c.is_ascii_whitespace());
    let digits = s.strip_prefix('+').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Envoy's `pickClusterIndex`: `random % total` falls into one cluster's
/// interval `[sum of earlier weights, + weight)`.  Every weight is hit
/// exactly in proportion when `random` is uniform over a multiple of the
/// total (and within 2^-32 relative error over all of `u64`).
pub fn pick_weighted(w: &WeightedClusters, random: u64) -> &ClusterWeight {
    let selected = random % w.total_weight;
    let mut end = 0u64;
    for c in &w.clusters {
        end += u64::from(c.weight);
        if selected < end {
            return c;
        }
    }
    // Unreachable: the weights sum to `total_weight` (checked at load).
    w.clusters.last().expect("weighted_clusters has at least one cluster")
}

/// The cluster name a weighted entry stands for (`None`: its
/// `cluster_header` is absent from the request).
pub fn weighted_cluster_name<'a>(c: &'a ClusterWeight, head: &'a RequestHead) -> Option<&'a [u8]> {
    match &c.target {
        WeightedTarget::Name(n) => Some(n.as_bytes()),
        WeightedTarget::Header(h) => first_header(head, h),
    }
}

/// How much of the path-and-query a route's path specifier matched: what
/// `prefix_rewrite` replaces.  Literal specifiers matched their own length
/// (an exact path: all of the path); a regex matched the whole path.
pub fn matched_len(path: &PathMatch, path_and_query: &[u8]) -> usize {
    match path {
        PathMatch::Prefix(p) | PathMatch::Exact(p) | PathMatch::SeparatedPrefix(p) => p.len(),
        PathMatch::Regex(_) => super::split_path(path_and_query).0.len(),
    }
    .min(path_and_query.len())
}

/// The path a forwarded request carries upstream when its route rewrites
/// it (written to `out`; `false`: no rewrite, the path stays).
pub fn rewrite_forward_path(a: &ForwardAction, path: &PathMatch, path_and_query: &[u8], out: &mut Vec<u8>) -> bool {
    if let Some(prefix) = &a.prefix_rewrite {
        rewrite_prefix(path_and_query, matched_len(path, path_and_query), prefix, out);
        return true;
    }
    match &a.regex_rewrite {
        Some(rr) => rewrite_regex(path_and_query, rr, out),
        None => false,
    }
}

/// `prefix_rewrite` (Envoy's `generateNewPath`): the first `matched` bytes
/// are swapped for `new_prefix`; the rest, query included, is kept.  Like
/// Envoy, no slash is added or collapsed: prefix `/api` rewritten to `/`
/// turns `/api/x` into `//x`, so configs pair `/api/` with `/`.
pub fn rewrite_prefix(path_and_query: &[u8], matched: usize, new_prefix: &str, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(new_prefix.as_bytes());
    out.extend_from_slice(&path_and_query[matched..]);
}

/// `regex_rewrite`: every match in the path (query and fragment excluded)
/// replaced, the rest kept.  A rewrite that leaves nothing is ignored, as in
/// Envoy (`false`).
pub fn rewrite_regex(path_and_query: &[u8], rr: &RegexRewrite, out: &mut Vec<u8>) -> bool {
    let path_len = super::split_path(path_and_query).0.len();
    let replaced = rr.replace_all(&path_and_query[..path_len]);
    if replaced.is_empty() {
        return false;
    }
    out.clear();
    out.extend_from_slice(&replaced);
    out.extend_from_slice(&path_and_query[path_len..]);
    true
}

/// What a redirect URL is built from.
#[derive(Debug, Clone, Copy)]
pub struct RedirectInput<'a> {
    /// Host header (or the absolute-form authority).
    pub host: &'a [u8],
    pub path_and_query: &'a [u8],
    /// The request's scheme (`:scheme`).
    pub scheme: &'a str,
    /// `x-forwarded-proto` as the connection manager leaves it.
    pub forwarded_proto: &'a [u8],
}

/// Envoy's redirect URL (`Utility::newUri` after the route's redirect path
/// rewrite); `redirect: None` is a `direct_response`'s own URL.  `matched`
/// is the route's path specifier (what `prefix_rewrite` swaps).
pub fn redirect_location(redirect: Option<&Redirect>, matched: &PathMatch, req: RedirectInput<'_>, out: &mut Vec<u8>) {
    // finalizePathHeaderForRedirect: prefix / regex rewrites edit the path first.
    let mut rewritten = Vec::new();
    let path: &[u8] = match redirect.map(|r| &r.path) {
        Some(RedirectPath::Prefix(p)) => {
            rewrite_prefix(req.path_and_query, matched_len(matched, req.path_and_query), p, &mut rewritten);
            &rewritten
        }
        Some(RedirectPath::Regex(rr)) if rewrite_regex(req.path_and_query, rr, &mut rewritten) => &rewritten,
        _ => req.path_and_query,
    };
    let scheme = redirect.and_then(|r| r.scheme.as_deref()).unwrap_or(req.scheme);
    let port = redirect.and_then(|r| r.port);
    let mut port_text = String::new();
    if let Some(p) = port {
        port_text = format!(":{p}");
    }
    let host: &[u8] = match redirect.and_then(|r| r.host.as_deref()) {
        Some(h) => h.as_bytes(),
        None => request_host_for_redirect(req.host, scheme, port.is_some(), req.forwarded_proto),
    };
    // path_redirect: its own query wins (and is never stripped); without
    // one the request's query is carried over.
    let mut final_path = Vec::with_capacity(path.len() + 8);
    let mut path_has_own_query = false;
    match redirect.map(|r| &r.path) {
        Some(RedirectPath::Path(p)) => {
            final_path.extend_from_slice(p.as_bytes());
            if p.contains('?') {
                path_has_own_query = true;
            } else if let Some(q) = memchr::memchr(b'?', path) {
                final_path.extend_from_slice(&path[q..]);
            }
        }
        _ => final_path.extend_from_slice(path),
    }
    if final_path.first() != Some(&b'/') {
        final_path.insert(0, b'/');
    }
    if redirect.is_some_and(|r| r.strip_query) && !path_has_own_query {
        if let Some(q) = memchr::memchr(b'?', &final_path) {
            final_path.truncate(q);
        }
    }
    out.clear();
    out.extend_from_slice(scheme.as_bytes());
    out.extend_from_slice(b"://");
    out.extend_from_slice(host);
    out.extend_from_slice(port_text.as_bytes());
    out.extend_from_slice(&final_path);
}

/// Envoy's `processRequestHost`: the request's host, without its port when
/// the redirect sets one, or when the scheme changes and the port is the
/// default of the scheme the request came in on (`x-forwarded-proto`).
fn request_host_for_redirect<'h>(host: &'h [u8], new_scheme: &str, new_port: bool, forwarded_proto: &[u8]) -> &'h [u8] {
    if host.is_empty() {
        return host;
    }
    let port_at =
        if host[0] == b'[' { memchr::memmem::rfind(host, b"]:").map(|i| i + 1) } else { memchr::memrchr(b':', host) };
    let Some(at) = port_at else {
        return host;
    };
    let port = &host[at..];
    let mut remove = new_port;
    if new_scheme.as_bytes() != forwarded_proto {
        remove |= forwarded_proto == b"https" && port == b":443";
        remove |= forwarded_proto == b"http" && port == b":80";
    }
    if remove {
        &host[..at]
    } else {
        host
    }
}

/// The request's `:scheme` as Envoy derives it for HTTP/1: the absolute
/// URL's scheme, else `x-forwarded-proto` when it names http or https,
/// else `http` (no TLS listeners yet).
pub fn request_scheme<'h>(head: &'h RequestHead, forwarded_proto: &'h [u8]) -> &'h str {
    if head.target_form() == TargetForm::Absolute {
        let target = head.target_str();
        if let Some(colon) = target.find("://") {
            return &target[..colon];
        }
    }
    if forwarded_proto.eq_ignore_ascii_case(b"http") || forwarded_proto.eq_ignore_ascii_case(b"https") {
        // Valid, so ASCII.
        return std::str::from_utf8(forwarded_proto).unwrap_or("http");
    }
    "http"
}

#[cfg(test)]
mod tests {
    use super::*;
    use control::model::{HeaderMutations, SafeRegex};

    fn cw(name: &str, weight: u32) -> ClusterWeight {
        ClusterWeight {
            target: WeightedTarget::Name(name.into()),
            weight,
            request_headers: HeaderMutations::default(),
            response_headers: HeaderMutations::default(),
            host_rewrite_literal: None,
        }
    }

    fn wc(weights: &[(&str, u32)]) -> WeightedClusters {
        WeightedClusters {
            clusters: weights.iter().map(|(n, w)| cw(n, *w)).collect(),
            total_weight: weights.iter().map(|(_, w)| u64::from(*w)).sum(),
            random_value_header: Some("x-rand".into()),
        }
    }

    fn name(c: &ClusterWeight) -> &str {
        match &c.target {
            WeightedTarget::Name(n) => n,
            WeightedTarget::Header(h) => h,
        }
    }

    #[test]
    fn weighted_intervals_are_envoys() {
        let w = wc(&[("a", 80), ("zero", 0), ("b", 20)]);
        assert_eq!(name(pick_weighted(&w, 0)), "a");
        assert_eq!(name(pick_weighted(&w, 79)), "a");
        assert_eq!(name(pick_weighted(&w, 80)), "b");
        assert_eq!(name(pick_weighted(&w, 99)), "b");
        assert_eq!(name(pick_weighted(&w, 100)), "a", "modulo the total");
        // Over one full period every weight is hit exactly.
        let mut counts = [0u32; 3];
        for r in 0..1000u64 {
            let c = pick_weighted(&w, r);
            counts[w.clusters.iter().position(|x| std::ptr::eq(x, c)).unwrap()] += 1;
        }
        assert_eq!(counts, [800, 0, 200]);
    }

    /// The shard's generator (SplitMix64), as `ShardCtx::next_random` runs it.
    fn splitmix(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    mod split_property {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(24))]
            /// Over 100,000 picks every cluster's observed share is within
            /// 2% (of all picks) of its configured share.
            #[test]
            fn observed_share_tracks_weights(
                weights in proptest::collection::vec(0u32..1000, 2..6),
                seed in any::<u64>(),
            ) {
                prop_assume!(weights.iter().any(|w| *w > 0));
                let names: Vec<String> = (0..weights.len()).map(|i| format!("c{i}")).collect();
                let pairs: Vec<(&str, u32)> = names.iter().map(String::as_str).zip(weights.iter().copied()).collect();
                let w = wc(&pairs);
                let mut counts = vec![0u64; weights.len()];
                let mut state = seed;
                const PICKS: u64 = 100_000;
                for _ in 0..PICKS {
                    let c = pick_weighted(&w, splitmix(&mut state));
                    counts[w.clusters.iter().position(|x| std::ptr::eq(x, c)).unwrap()] += 1;
                }
                for (i, weight) in weights.iter().enumerate() {
                    let want = f64::from(*weight) / w.total_weight as f64;
                    let got = counts[i] as f64 / PICKS as f64;
                    prop_assert!((got - want).abs() <= 0.02, "cluster {} weight {}: {:.4} vs {:.4} ({:?})", i, weight, got, want, weights);
                    if *weight == 0 {
                        prop_assert_eq!(counts[i], 0);
                    }
                }
            }
        }
    }

    fn head(raw: &str) -> RequestHead {
        let mut h = RequestHead::new();
        crate::http1::parse_request_head(raw.as_bytes(), &crate::http1::Limits::default(), &mut h).unwrap().unwrap();
        h
    }

    #[test]
    fn random_value_header() {
        let w = wc(&[("a", 1), ("b", 1)]);
        assert_eq!(weighted_random(&w, &head("GET / HTTP/1.1\r\nHost: h\r\nx-rand: 7\r\n\r\n"), 99), 7);
        assert_eq!(weighted_random(&w, &head("GET / HTTP/1.1\r\nHost: h\r\nx-rand: +8 \r\n\r\n"), 99), 8);
        assert_eq!(weighted_random(&w, &head("GET / HTTP/1.1\r\nHost: h\r\nx-rand: -1\r\n\r\n"), 99), 99);
        assert_eq!(weighted_random(&w, &head("GET / HTTP/1.1\r\nHost: h\r\nx-rand: 1\r\nx-rand: 2\r\n\r\n"), 99), 99);
        assert_eq!(weighted_random(&w, &head("GET / HTTP/1.1\r\nHost: h\r\n\r\n"), 99), 99);
        assert_eq!(
            weighted_random(&w, &head("GET / HTTP/1.1\r\nHost: h\r\nx-rand: 18446744073709551616\r\n\r\n"), 5),
            5
        );
    }

    #[test]
    fn pseudo_headers() {
        let h = head("POST /p?q HTTP/1.1\r\nHost: a.com\r\nX-C: one\r\nx-c: two\r\n\r\n");
        assert_eq!(first_header(&h, ":authority"), Some(&b"a.com"[..]));
        assert_eq!(first_header(&h, ":path"), Some(&b"/p?q"[..]));
        assert_eq!(first_header(&h, ":method"), Some(&b"POST"[..]));
        assert_eq!(first_header(&h, "x-c"), Some(&b"one"[..]));
        assert_eq!(first_header(&h, ":nope"), None);
    }

    fn rr(p: &str, s: &str) -> RegexRewrite {
        RegexRewrite::new(p, s).unwrap()
    }

    #[test]
    fn path_rewrites() {
        let mut out = Vec::new();
        rewrite_prefix(b"/api/v1/users?id=3", 7, "/v1", &mut out);
        assert_eq!(out, b"/v1/users?id=3");
        rewrite_prefix(b"/api/x", 4, "/", &mut out);
        assert_eq!(out, b"//x", "Envoy does not collapse slashes");
        rewrite_prefix(b"/API/x?q", 5, "/new/", &mut out);
        assert_eq!(out, b"/new/x?q", "case-insensitive matches are replaced too");

        assert!(rewrite_regex(
            b"/service/foo/v1/api?x=1",
            &rr("^/service/([^/]+)(/.*)$", "\\2/instance/\\1"),
            &mut out
        ));
        assert_eq!(out, b"/v1/api/instance/foo?x=1");
        assert!(rewrite_regex(b"/xxx/one/yyy/one/zzz", &rr("one", "two"), &mut out));
        assert_eq!(out, b"/xxx/two/yyy/two/zzz");
        assert!(rewrite_regex(b"/xxx/one/yyy/one/zzz", &rr("^(.*?)one(.*)$", "\\1two\\2"), &mut out));
        assert_eq!(out, b"/xxx/two/yyy/one/zzz");
        assert!(rewrite_regex(b"/aaa/XxX/bbb", &rr("(?i)/xxx/", "/yyy/"), &mut out));
        assert_eq!(out, b"/aaa/yyy/bbb");
        assert!(!rewrite_regex(b"/gone?q", &rr("^.*$", ""), &mut out), "an empty result is ignored");
        // The query is never rewritten.
        assert!(rewrite_regex(b"/a?one", &rr("one", "two"), &mut out));
        assert_eq!(out, b"/a?one");

        let re = PathMatch::Regex(SafeRegex::new("/b/[0-9]+").unwrap());
        assert_eq!(matched_len(&re, b"/b/12?x"), 5);
        assert_eq!(matched_len(&PathMatch::Exact("/e".into()), b"/e?x"), 2);
    }

    fn redirect(path: RedirectPath) -> Redirect {
        Redirect { scheme: None, host: None, port: None, path, response_code: 301, strip_query: false }
    }

    fn loc(r: Option<&Redirect>, matched: &PathMatch, host: &str, pq: &str, xfp: &str) -> String {
        let mut out = Vec::new();
        let h = head("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        let input = RedirectInput {
            host: host.as_bytes(),
            path_and_query: pq.as_bytes(),
            scheme: request_scheme(&h, xfp.as_bytes()),
            forwarded_proto: xfp.as_bytes(),
        };
        redirect_location(r, matched, input, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn redirects_follow_envoys_new_uri() {
        let any = PathMatch::Prefix("/".into());
        let https = Redirect { scheme: Some("https".into()), ..redirect(RedirectPath::Keep) };
        assert_eq!(loc(Some(&https), &any, "a.com", "/x?y", "http"), "https://a.com/x?y");
        assert_eq!(loc(Some(&https), &any, "a.com:80", "/x", "http"), "https://a.com/x", ":80 goes with http");
        assert_eq!(loc(Some(&https), &any, "a.com:8080", "/x", "http"), "https://a.com:8080/x");
        assert_eq!(loc(Some(&https), &any, "[::1]:80", "/", "http"), "https://[::1]/");
        // Same scheme: the port stays.
        assert_eq!(loc(Some(&https), &any, "a.com:443", "/", "https"), "https://a.com:443/");
        let host = Redirect { host: Some("b.org".into()), ..redirect(RedirectPath::Keep) };
        assert_eq!(loc(Some(&host), &any, "a.com:8080", "/p", "http"), "http://b.org/p");
        let port = Redirect { port: Some(8443), ..redirect(RedirectPath::Keep) };
        assert_eq!(loc(Some(&port), &any, "a.com:8080", "/p", "http"), "http://a.com:8443/p");
        let both = Redirect { host: Some("b.org".into()), port: Some(9), ..redirect(RedirectPath::Keep) };
        assert_eq!(loc(Some(&both), &any, "a.com", "/p", "http"), "http://b.org:9/p");

        let path = redirect(RedirectPath::Path("/new".into()));
        assert_eq!(loc(Some(&path), &any, "a", "/old?bar=1", "http"), "http://a/new?bar=1");
        let strip = Redirect { strip_query: true, ..redirect(RedirectPath::Path("/new".into())) };
        assert_eq!(loc(Some(&strip), &any, "a", "/old?bar=1", "http"), "http://a/new");
        let own = Redirect { strip_query: true, ..redirect(RedirectPath::Path("/new?foo=1".into())) };
        assert_eq!(loc(Some(&own), &any, "a", "/old?bar=1", "http"), "http://a/new?foo=1");
        let rel = redirect(RedirectPath::Path("rel".into()));
        assert_eq!(loc(Some(&rel), &any, "a", "/old", "http"), "http://a/rel");

        let pre = PathMatch::Prefix("/old/".into());
        let prefix = redirect(RedirectPath::Prefix("/new/".into()));
        assert_eq!(loc(Some(&prefix), &pre, "a", "/old/x?q=1", "http"), "http://a/new/x?q=1");
        let regex = redirect(RedirectPath::Regex(rr("^/service/([^/]+)(/.*)$", "\\2/instance/\\1")));
        assert_eq!(loc(Some(&regex), &any, "a", "/service/foo/v1?z", "http"), "http://a/v1/instance/foo?z");
        let strip_only = Redirect { strip_query: true, ..redirect(RedirectPath::Keep) };
        assert_eq!(loc(Some(&strip_only), &any, "a", "/k?z", "http"), "http://a/k");

        // A direct response's own URL.
        assert_eq!(loc(None, &any, "a.com:80", "/d?x", "http"), "http://a.com:80/d?x");
        assert_eq!(loc(None, &any, "a.com", "/d", "https"), "https://a.com/d", ":scheme follows x-forwarded-proto");
    }
}
