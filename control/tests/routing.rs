//! The loader's routing fields: route matching (path specifiers, header and
//! query parameter matchers), route actions (cluster specifiers, rewrites,
//! host rewrites, timeouts), redirects, direct responses and header
//! mutations at every level — what each translates to, and the path each
//! rejection names.

use std::time::Duration;

use control::bootstrap::{self, Format};
use control::error::ConfigErrors;
use control::model::{
    self, AppendAction, ClusterSpecifier, FormatPart, FormatVar, HostRewrite, PathMatch, QueryParameterSpec,
    RedirectPath, RouteAction, WeightedTarget,
};

const RC: &str = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config";

/// A listener whose route configuration is `rc_extra` (fields of the
/// `RouteConfiguration`, e.g. headers to add) plus one virtual host with
/// `vh_extra` and the given `routes` (a YAML list), and clusters `a`, `b`.
fn config_with(rc_extra: &str, vh_extra: &str, routes: &str) -> String {
    format!(
        r#"
static_resources:
  listeners:
  - name: l
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 8080 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
{rc_extra}            virtual_hosts:
            - name: vh
              domains: ["*"]
{vh_extra}              routes:
{routes}          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: a
    load_assignment:
      cluster_name: a
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: 9001 }} }} }} }}] }}]
  - name: b
    load_assignment:
      cluster_name: b
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: 9002 }} }} }} }}] }}]
"#,
        rc_extra = indent(rc_extra, 12),
        vh_extra = indent(vh_extra, 14),
        routes = indent(routes, 14),
    )
}

fn config(routes: &str) -> String {
    config_with("", "", routes)
}

fn indent(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let strip = lines.iter().map(|l| l.len() - l.trim_start().len()).min().unwrap_or(0);
    lines.iter().map(|l| format!("{pad}{}\n", &l[strip..])).collect()
}

fn load(text: &str) -> Result<model::Config, ConfigErrors> {
    bootstrap::load_str(text, Format::Yaml, "routing.yaml")
}

#[track_caller]
fn ok(text: &str) -> model::Config {
    load(text).unwrap_or_else(|e| panic!("{e}\n--- config ---\n{text}"))
}

#[track_caller]
fn assert_error(text: &str, path: &str, needle: &str) {
    let errs = match load(text) {
        Ok(_) => panic!("expected an error at {path}\n{text}"),
        Err(e) => e,
    };
    assert!(
        errs.iter().any(|e| e.path == path && e.message.contains(needle)),
        "no error at {path:?} containing {needle:?}; got:\n{errs}"
    );
}

fn routes(cfg: &model::Config) -> &[model::Route] {
    &cfg.listeners[0].http.route_config.virtual_hosts[0].routes
}

fn forward(r: &model::Route) -> &model::ForwardAction {
    match &r.action {
        RouteAction::Forward(f) => f,
        other => panic!("{other:?}"),
    }
}

fn r0() -> String {
    format!("{RC}.virtual_hosts[0].routes[0]")
}

// ------------------------------------------------------------------ matching

#[test]
fn path_specifiers_and_case() {
    let cfg = ok(&config(
        r#"
        - match: { prefix: "/p" }
          route: { cluster: a }
        - match: { path: "/exact", case_sensitive: false }
          route: { cluster: a }
        - match: { safe_regex: { regex: "/users/[0-9]+" } }
          route: { cluster: a }
        - match: { path_separated_prefix: "/api/dev" }
          route: { cluster: a }
        "#,
    ));
    let r = routes(&cfg);
    assert_eq!(r[0].matcher.path, PathMatch::Prefix("/p".into()));
    assert!(r[0].matcher.case_sensitive);
    assert_eq!(r[1].matcher.path, PathMatch::Exact("/exact".into()));
    assert!(!r[1].matcher.case_sensitive);
    match &r[2].matcher.path {
        PathMatch::Regex(re) => {
            assert!(re.is_match(b"/users/12"));
            assert!(!re.is_match(b"/users/12/x"), "full match");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(r[3].matcher.path, PathMatch::SeparatedPrefix("/api/dev".into()));
}

#[test]
fn path_specifier_errors() {
    for bad in ["/api/", "/a?b", "/a#b"] {
        let text = config(&format!("- match: {{ path_separated_prefix: {bad:?} }}\n  route: {{ cluster: a }}"));
        assert_error(&text, &format!("{}.match.path_separated_prefix", r0()), "must be non-empty");
    }
    let text = config("- match: { safe_regex: { regex: \"/a(\" } }\n  route: { cluster: a }");
    assert_error(&text, &format!("{}.match.safe_regex.regex", r0()), "invalid regex");
    // What RE2 would reject is rejected even where the regex crate would not.
    let text = config("- match: { safe_regex: { regex: \"(?x) /a\" } }\n  route: { cluster: a }");
    assert_error(&text, &format!("{}.match.safe_regex.regex", r0()), "RE2 supports the flags i, m, s, U");
    let text = config("- match: { safe_regex: { regex: \"/a(?=b)\" } }\n  route: { cluster: a }");
    assert_error(&text, &format!("{}.match.safe_regex.regex", r0()), "lookaround");
    let text = config("- match: { safe_regex: { regex: \"/a{1001}\" } }\n  route: { cluster: a }");
    assert_error(&text, &format!("{}.match.safe_regex.regex", r0()), "bad repetition operator");
    let text = config("- match: { case_sensitive: true }\n  route: { cluster: a }");
    assert_error(&text, &format!("{}.match", r0()), "needs one of prefix, path, safe_regex, path_separated_prefix");
}

#[test]
fn runtime_fraction_is_rejected_with_a_reason() {
    let text = config(
        r#"
        - match:
            prefix: "/"
            runtime_fraction: { default_value: { numerator: 50 }, runtime_key: routing.shift }
          route: { cluster: a }
        "#,
    );
    assert_error(&text, &format!("{}.match.runtime_fraction", r0()), "no runtime layer");
}

#[test]
fn header_and_query_matchers() {
    let cfg = ok(&config(
        r#"
        - match:
            prefix: "/"
            headers:
            - { name: X-Env, string_match: { exact: gray } }
            - { name: x-canary, present_match: true }
            - { name: x-n, range_match: { start: 1, end: 5 }, invert_match: true }
            query_parameters:
            - { name: debug, string_match: { exact: "1" } }
            - { name: token, present_match: false }
            - { name: flag }
          route: { cluster: a }
        "#,
    ));
    let m = &routes(&cfg)[0].matcher;
    assert_eq!(m.headers.len(), 3);
    assert_eq!(m.headers[0].name, "x-env", "lower-cased");
    assert!(m.headers[2].invert_match);
    let q = &m.query_parameters;
    assert_eq!(q[0].name, "debug");
    assert!(matches!(&q[0].spec, QueryParameterSpec::String(_)));
    assert_eq!(q[1].spec, QueryParameterSpec::Present(false));
    assert_eq!(q[2].spec, QueryParameterSpec::Present(true), "no specifier is a presence test");

    let text = config(
        "- match: { prefix: /, headers: [{ name: \"bad name\", present_match: true }] }\n  route: { cluster: a }",
    );
    assert_error(&text, &format!("{}.match.headers[0].name", r0()), "not a valid HTTP header name");
    let text = config("- match: { prefix: /, query_parameters: [{ name: \"\" }] }\n  route: { cluster: a }");
    assert_error(&text, &format!("{}.match.query_parameters[0].name", r0()), "1 to 1024 bytes");
    let text = config("- match: { prefix: /, query_parameters: [{ name: q, string_match: { safe_regex: { regex: \"(\" } } }] }\n  route: { cluster: a }");
    assert_error(&text, &format!("{}.match.query_parameters[0].string_match.safe_regex.regex", r0()), "invalid regex");
}

// ------------------------------------------------------------------ actions

#[test]
fn cluster_specifiers() {
    let cfg = ok(&config(
        r#"
        - match: { prefix: "/h" }
          route: { cluster_header: X-Target, cluster_not_found_response_code: NOT_FOUND }
        - match: { prefix: "/w" }
          route:
            weighted_clusters:
              clusters:
              - { name: a, weight: 80 }
              - { name: b, weight: 20, host_rewrite_literal: b.internal }
              - { cluster_header: x-pick, weight: 0 }
              header_name: x-random
              runtime_key_prefix: routing.weights
        - match: { prefix: "/" }
          route: { cluster: a, cluster_not_found_response_code: INTERNAL_SERVER_ERROR }
        "#,
    ));
    let r = routes(&cfg);
    assert_eq!(forward(&r[0]).cluster, ClusterSpecifier::Header("x-target".into()));
    assert_eq!(forward(&r[0]).cluster_not_found_response_code, 404);
    let ClusterSpecifier::Weighted(w) = &forward(&r[1]).cluster else { panic!() };
    assert_eq!(w.total_weight, 100);
    assert_eq!(w.random_value_header.as_deref(), Some("x-random"));
    assert_eq!(w.clusters[0].target, WeightedTarget::Name("a".into()));
    assert_eq!(w.clusters[1].host_rewrite_literal.as_deref(), Some("b.internal"));
    assert_eq!(w.clusters[2].target, WeightedTarget::Header("x-pick".into()));
    assert_eq!(forward(&r[1]).cluster_not_found_response_code, 503, "default");
    assert_eq!(forward(&r[2]).cluster_not_found_response_code, 500);
}

#[test]
fn weighted_cluster_errors() {
    let w = |clusters: &str, extra: &str| {
        config(&format!(
            "- match: {{ prefix: / }}\n  route:\n    weighted_clusters:\n      clusters: {clusters}\n{extra}"
        ))
    };
    let path = format!("{}.route.weighted_clusters", r0());
    // The deprecated total_weight must equal the sum when set.
    assert_error(
        &w("[{ name: a, weight: 3 }, { name: b, weight: 3 }]", "      total_weight: 100"),
        &format!("{path}.total_weight"),
        "should add up to 100",
    );
    ok(&w("[{ name: a, weight: 30 }, { name: b, weight: 70 }]", "      total_weight: 100"));
    assert_error(
        &w("[{ name: a, weight: 0 }, { name: b, weight: 0 }]", ""),
        &format!("{path}.clusters"),
        "must be greater than 0",
    );
    assert_error(
        &w("[{ name: a, weight: 4294967295 }, { name: b, weight: 1 }]", ""),
        &format!("{path}.clusters"),
        "exceeds 4294967295",
    );
    assert_error(&w("[{ name: a }]", ""), &format!("{path}.clusters[0].weight"), "required");
    assert_error(
        &w("[{ name: nope, weight: 1 }]", ""),
        &format!("{path}.clusters[0].name"),
        "unknown weighted cluster",
    );
    assert_error(
        &w("[{ name: a, cluster_header: x, weight: 1 }]", ""),
        &format!("{path}.clusters[0]"),
        "Only one of name or cluster_header",
    );
    assert_error(&w("[{ weight: 1 }]", ""), &format!("{path}.clusters[0]"), "At least one of name or cluster_header");
    assert_error(&w("[]", ""), &format!("{path}.clusters"), "at least one cluster");
    // Extensions of the cluster entry meshgate does not implement are named.
    assert_error(
        &w("[{ name: a, weight: 1, metadata_match: { filter_metadata: {} } }]", ""),
        &format!("{path}.clusters[0].metadata_match"),
        "unsupported field",
    );
}

#[test]
fn rewrites_and_timeouts() {
    let cfg = ok(&config(
        r#"
        - match: { prefix: "/api/" }
          route: { cluster: a, prefix_rewrite: "/", host_rewrite_literal: api.internal, timeout: 3s, idle_timeout: 0s }
        - match: { prefix: "/svc/" }
          route:
            cluster: a
            regex_rewrite: { pattern: { regex: "^/svc/([^/]+)(/.*)$" }, substitution: "\\2/instance/\\1" }
            auto_host_rewrite: true
            idle_timeout: 7s
        - match: { prefix: "/h" }
          route: { cluster: a, host_rewrite_header: X-Host, append_x_forwarded_host: true }
        - match: { prefix: "/" }
          route: { cluster: a, auto_host_rewrite: false }
        "#,
    ));
    let r = routes(&cfg);
    let f = forward(&r[0]);
    assert_eq!(f.prefix_rewrite.as_deref(), Some("/"));
    assert_eq!(f.host_rewrite, Some(HostRewrite::Literal("api.internal".into())));
    assert_eq!(f.timeout, Some(Duration::from_secs(3)));
    assert_eq!(f.idle_timeout, Some(None), "0s disables the stream idle timeout on this route");
    let f = forward(&r[1]);
    let rr = f.regex_rewrite.as_ref().unwrap();
    assert_eq!(&*rr.replace_all(b"/svc/foo/v1"), b"/v1/instance/foo");
    assert_eq!(f.host_rewrite, Some(HostRewrite::Auto));
    assert_eq!(f.idle_timeout, Some(Some(Duration::from_secs(7))));
    let f = forward(&r[2]);
    assert_eq!(f.host_rewrite, Some(HostRewrite::Header("x-host".into())));
    assert!(f.append_x_forwarded_host);
    let f = forward(&r[3]);
    assert_eq!(f.host_rewrite, None);
    assert_eq!(f.idle_timeout, None, "unset: the HCM's stream_idle_timeout applies");
    assert_eq!(f.timeout, Some(Duration::from_secs(15)), "Envoy's default");
}

#[test]
fn rewrite_errors() {
    let text = config(
        "- match: { prefix: / }\n  route: { cluster: a, prefix_rewrite: /x, regex_rewrite: { pattern: { regex: a }, substitution: b } }",
    );
    assert_error(&text, &format!("{}.route", r0()), "Specify only one of prefix_rewrite, regex_rewrite");
    let text = config(
        "- match: { prefix: / }\n  route: { cluster: a, regex_rewrite: { pattern: { regex: \"(a)\" }, substitution: \"\\\\2\" } }",
    );
    assert_error(&text, &format!("{}.route.regex_rewrite", r0()), "only 1 capture group");
    let text = config("- match: { prefix: / }\n  route: { cluster: a, regex_rewrite: { pattern: { regex: \"(\" } } }");
    assert_error(&text, &format!("{}.route.regex_rewrite", r0()), "invalid regex_rewrite");
    let text = config("- match: { prefix: / }\n  route: { cluster: a, path_rewrite: /x }");
    assert_error(&text, &format!("{}.route.path_rewrite", r0()), "unsupported field");
}

#[test]
fn redirects() {
    let cfg = ok(&config(
        r#"
        - match: { prefix: "/a" }
          redirect: { https_redirect: true, host_redirect: example.com, port_redirect: 8443, path_redirect: "/new", response_code: PERMANENT_REDIRECT, strip_query: true }
        - match: { prefix: "/b" }
          redirect: { scheme_redirect: ws, prefix_rewrite: "/v2/", response_code: FOUND }
        - match: { prefix: "/c" }
          redirect: { regex_rewrite: { pattern: { regex: "^/c/(.*)$" }, substitution: "/d/\\1" }, response_code: SEE_OTHER }
        - match: { prefix: "/" }
          redirect: { response_code: TEMPORARY_REDIRECT }
        "#,
    ));
    let r = routes(&cfg);
    let redirect = |i: usize| match &r[i].action {
        RouteAction::Redirect(x) => x.clone(),
        other => panic!("{other:?}"),
    };
    let a = redirect(0);
    assert_eq!(a.scheme.as_deref(), Some("https"));
    assert_eq!(a.host.as_deref(), Some("example.com"));
    assert_eq!(a.port, Some(8443));
    assert_eq!(a.path, RedirectPath::Path("/new".into()));
    assert_eq!(a.response_code, 308);
    assert!(a.strip_query);
    let b = redirect(1);
    assert_eq!(b.scheme.as_deref(), Some("ws"));
    assert_eq!(b.path, RedirectPath::Prefix("/v2/".into()));
    assert_eq!(b.response_code, 302);
    assert!(matches!(redirect(2).path, RedirectPath::Regex(_)));
    assert_eq!(redirect(2).response_code, 303);
    let d = redirect(3);
    assert_eq!(d.response_code, 307);
    assert_eq!((d.scheme, d.host, d.port, d.path), (None, None, None, RedirectPath::Keep));

    let text = config("- match: { prefix: / }\n  redirect: { port_redirect: 70000 }");
    assert_error(&text, &format!("{}.redirect.port_redirect", r0()), "not a TCP port");
    let text = config("- match: { prefix: / }\n  redirect: { scheme_redirect: \"1http\" }");
    assert_error(&text, &format!("{}.redirect.scheme_redirect", r0()), "not a URI scheme");
    let text = config("- match: { prefix: / }\n  redirect: { path_rewrite: \"/%REQ(x)%\" }");
    assert_error(&text, &format!("{}.redirect.path_rewrite", r0()), "unsupported field");
}

#[test]
fn direct_response_body_limit() {
    let big = "x".repeat(5000);
    let route =
        format!("- match: {{ prefix: / }}\n  direct_response: {{ status: 200, body: {{ inline_string: {big} }} }}");
    assert_error(
        &config(&route),
        &format!("{}.direct_response.body", r0()),
        "response body size is 5000 bytes; maximum is 4096",
    );
    ok(&config_with("max_direct_response_body_size_bytes: 8192", "", &route));
}

// ------------------------------------------------------------------ header mutations

#[test]
fn header_mutations_at_every_level() {
    let cfg = ok(&config_with(
        r#"
        request_headers_to_add:
        - header: { key: x-rc, value: rc }
        response_headers_to_remove: [x-internal]
        most_specific_header_mutations_wins: true
        "#,
        r#"
        request_headers_to_add:
        - header: { key: x-vh, value: "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%" }
          append_action: OVERWRITE_IF_EXISTS_OR_ADD
        "#,
        r#"
        - match: { prefix: "/" }
          route:
            weighted_clusters:
              clusters:
              - name: a
                weight: 1
                request_headers_to_add: [{ header: { key: x-w, value: w } }]
                response_headers_to_remove: [x-w]
          request_headers_to_add:
          - { header: { key: X-Route, value: "100%% %REQ(x-id?x-alt):4%" }, append: false }
          - { header: { key: x-empty, value: "%UPSTREAM_REMOTE_ADDRESS%" }, keep_empty_value: true, append_action: ADD_IF_ABSENT }
          - { header: { key: x-oe, value: v }, append_action: OVERWRITE_IF_EXISTS }
          request_headers_to_remove: [X-Secret]
          response_headers_to_add:
          - header: { key: x-served-by, value: "%UPSTREAM_REMOTE_ADDRESS% %RESP(server)% %PROTOCOL%" }
        "#,
    ));
    let rc = &cfg.listeners[0].http.route_config;
    assert!(rc.most_specific_header_mutations_wins);
    assert_eq!(rc.request_headers.add[0].name, "x-rc");
    assert_eq!(rc.request_headers.add[0].action, AppendAction::AppendIfExistsOrAdd, "the default");
    assert_eq!(rc.response_headers.remove, vec!["x-internal".to_string()]);
    let vh = &rc.virtual_hosts[0];
    assert_eq!(vh.request_headers.add[0].action, AppendAction::OverwriteIfExistsOrAdd);
    assert_eq!(
        vh.request_headers.add[0].value.parts,
        vec![FormatPart::Var(FormatVar::DownstreamRemoteAddressWithoutPort)]
    );
    let r = &vh.routes[0];
    let add = &r.request_headers.add;
    assert_eq!(add[0].name, "x-route");
    assert_eq!(add[0].action, AppendAction::OverwriteIfExistsOrAdd, "append: false");
    assert_eq!(
        add[0].value.parts,
        vec![
            FormatPart::Literal("100% ".into()),
            FormatPart::Var(FormatVar::RequestHeader { names: vec!["x-id".into(), "x-alt".into()], max_len: Some(4) })
        ]
    );
    assert!(add[1].keep_empty_value);
    assert_eq!(add[1].action, AppendAction::AddIfAbsent);
    assert_eq!(add[2].action, AppendAction::OverwriteIfExists);
    assert_eq!(r.request_headers.remove, vec!["x-secret".to_string()]);
    assert_eq!(r.response_headers.add[0].value.parts.len(), 5);
    let ClusterSpecifier::Weighted(w) = &forward(r).cluster else { panic!() };
    assert_eq!(w.clusters[0].request_headers.add[0].name, "x-w");
    assert_eq!(w.clusters[0].response_headers.remove, vec!["x-w".to_string()]);
}

#[test]
fn header_mutation_errors() {
    let route = |mutation: &str| {
        config(&format!("- match: {{ prefix: / }}\n  route: {{ cluster: a }}\n{}", indent(mutation, 2)))
    };
    let p = r0();
    assert_error(
        &route("request_headers_to_add: [{ header: { key: host, value: x } }]"),
        &format!("{p}.request_headers_to_add[0].header.key"),
        ":-prefixed or host headers may not be modified",
    );
    assert_error(
        &route("response_headers_to_add: [{ header: { key: \":status\", value: \"200\" } }]"),
        &format!("{p}.response_headers_to_add[0].header.key"),
        ":-prefixed or host headers may not be modified",
    );
    assert_error(
        &route("request_headers_to_remove: [\":path\"]"),
        &format!("{p}.request_headers_to_remove[0]"),
        ":-prefixed or host headers may not be removed",
    );
    assert_error(
        &route(
            "request_headers_to_add: [{ header: { key: x, value: y }, append: true, append_action: ADD_IF_ABSENT }]",
        ),
        &format!("{p}.request_headers_to_add[0]"),
        "Both append and append_action are set",
    );
    assert_error(
        &route("request_headers_to_add: [{ header: { key: x, value: \"%START_TIME%\" } }]"),
        &format!("{p}.request_headers_to_add[0].header.value"),
        "unsupported substitution %START_TIME%",
    );
    assert_error(
        &route("request_headers_to_add: [{ header: { key: x, value: \"50%\" } }]"),
        &format!("{p}.request_headers_to_add[0].header.value"),
        "Couldn't find valid command",
    );
    assert_error(
        &route("request_headers_to_add: [{ header: { key: \"a b\", value: y } }]"),
        &format!("{p}.request_headers_to_add[0].header.key"),
        "not a valid HTTP header name",
    );
    assert_error(
        &route("request_headers_to_add: [{ header: { key: x, raw_value: eQ== } }]"),
        &format!("{p}.request_headers_to_add[0].header.raw_value"),
        "unsupported field",
    );
    // Same checks at the virtual host and route configuration levels.
    let text = config_with("", "response_headers_to_remove: [host]", "- match: { prefix: / }\n  route: { cluster: a }");
    assert_error(&text, &format!("{RC}.virtual_hosts[0].response_headers_to_remove[0]"), "may not be removed");
    let text = config_with(
        "request_headers_to_add: [{ header: { key: x, value: \"%NOPE%\" } }]",
        "",
        "- match: { prefix: / }\n  route: { cluster: a }",
    );
    assert_error(&text, &format!("{RC}.request_headers_to_add[0].header.value"), "unsupported substitution %NOPE%");
}
