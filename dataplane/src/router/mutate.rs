//! Envoy's custom request/response headers: the `*_headers_to_add` and
//! `*_headers_to_remove` lists of weighted clusters, routes, virtual hosts
//! and route configurations, applied the way Envoy's `HeaderParser` does.
//!
//! Per level: the removals first, then every value is formatted against
//! the headers as they stand (so `%REQ(x)%` sees neither this level's
//! additions nor their order), then overwrites, then appends.  Levels run
//! most specific first by default (weighted cluster, route, virtual host,
//! route configuration), so the least specific has the last word on an
//! overwritten header; `most_specific_header_mutations_wins` reverses the
//! three route-table levels (a weighted cluster's always runs first).
//!
//! Values come from `%VARIABLE%`s parsed at load time; formatting writes
//! into one reusable scratch buffer, so the only allocation is the
//! header arena's own growth.  A value that formats to nothing is dropped
//! unless `keep_empty_value` is set.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};

use control::model::{
    AppendAction, ClusterWeight, FormatPart, FormatVar, HeaderMutations, Route, RouteConfig, VirtualHost,
};

use crate::http1::{Headers, RequestHead};

/// Up to four levels, in the order they apply.
#[derive(Debug, Clone, Copy, Default)]
pub struct Levels<'a> {
    levels: [Option<&'a HeaderMutations>; 4],
}

impl<'a> Levels<'a> {
    /// The request (`response == false`) or response levels of a matched
    /// route, `weighted` being the weighted cluster entry it picked.
    pub fn new(
        config: &'a RouteConfig,
        vhost: &'a VirtualHost,
        route: &'a Route,
        weighted: Option<&'a ClusterWeight>,
        response: bool,
    ) -> Levels<'a> {
        let (r, v, c) = if response {
            (&route.response_headers, &vhost.response_headers, &config.response_headers)
        } else {
            (&route.request_headers, &vhost.request_headers, &config.request_headers)
        };
        let w = weighted.map(|w| if response { &w.response_headers } else { &w.request_headers });
        let non_empty = |m: &'a HeaderMutations| (!m.is_empty()).then_some(m);
        let levels = if config.most_specific_header_mutations_wins {
            [w.and_then(non_empty), non_empty(c), non_empty(v), non_empty(r)]
        } else {
            [w.and_then(non_empty), non_empty(r), non_empty(v), non_empty(c)]
        };
        Levels { levels }
    }

    pub fn is_empty(&self) -> bool {
        self.levels.iter().all(Option::is_none)
    }

    /// One list on its own (a filter's `*_headers_to_add`).
    pub fn single(mutations: &'a HeaderMutations) -> Levels<'a> {
        Levels { levels: [Some(mutations), None, None, None] }
    }
}

/// The connection-level values variables read.
#[derive(Debug, Clone, Copy)]
pub struct Vars {
    /// The trusted client address (from `x-forwarded-for` per
    /// `use_remote_address` / `xff_num_trusted_hops`; port 0 when it came
    /// from there), Envoy's "downstream remote address".
    pub remote: SocketAddr,
    /// The TCP peer.
    pub direct_remote: SocketAddr,
    pub local: SocketAddr,
    /// The upstream host, once one is picked (responses only).
    pub upstream: Option<SocketAddr>,
    /// `HTTP/1.1` / `HTTP/1.0`.
    pub protocol: &'static str,
}

/// Reusable buffers for formatting (one per connection is plenty).
#[derive(Debug, Default)]
pub struct Scratch {
    bytes: Vec<u8>,
    /// (index into the level's `add`, start, end in `bytes`, overwrite).
    ops: Vec<(u32, u32, u32, bool)>,
}

/// Where header values are read from while formatting.
trait Source {
    fn target(&self) -> &Headers;
    fn request(&self, name: &str) -> Option<&[u8]>;
    fn response(&self, name: &str) -> Option<&[u8]>;
}

struct RequestSide<'a>(&'a RequestHead);

impl Source for RequestSide<'_> {
    fn target(&self) -> &Headers {
        &self.0.headers
    }
    fn request(&self, name: &str) -> Option<&[u8]> {
        request_value(self.0, name)
    }
    fn response(&self, _: &str) -> Option<&[u8]> {
        None
    }
}

struct ResponseSide<'a> {
    response: &'a Headers,
    request: &'a RequestHead,
}

impl Source for ResponseSide<'_> {
    fn target(&self) -> &Headers {
        self.response
    }
    fn request(&self, name: &str) -> Option<&[u8]> {
        request_value(self.request, name)
    }
    fn response(&self, name: &str) -> Option<&[u8]> {
        self.response.get(name)
    }
}

/// `%REQ(name)%`: the first value, with the request line as pseudo-headers
/// (`host` is answered with the Host too, as `:authority`).
fn request_value<'h>(head: &'h RequestHead, name: &str) -> Option<&'h [u8]> {
    match name {
        ":authority" | "host" => head.host(),
        _ => super::action::first_header(head, name),
    }
}

/// Applies `levels` to a request's headers (forwarded upstream).
pub fn apply_to_request(levels: &Levels<'_>, head: &mut RequestHead, vars: &Vars, scratch: &mut Scratch) {
    for m in levels.levels.iter().flatten() {
        for name in &m.remove {
            head.headers.remove(name);
        }
        if m.add.is_empty() {
            continue;
        }
        plan(m, &RequestSide(head), vars, scratch);
        execute(m, &mut head.headers, scratch);
    }
}

/// Applies `levels` to response headers (from upstream or a local reply).
pub fn apply_to_response(
    levels: &Levels<'_>,
    response: &mut Headers,
    request: &RequestHead,
    vars: &Vars,
    scratch: &mut Scratch,
) {
    for m in levels.levels.iter().flatten() {
        for name in &m.remove {
            response.remove(name);
        }
        if m.add.is_empty() {
            continue;
        }
        plan(m, &ResponseSide { response, request }, vars, scratch);
        execute(m, response, scratch);
    }
}

/// Formats every value of one level and decides what each does, against
/// the headers as they are now.
fn plan(m: &HeaderMutations, src: &dyn Source, vars: &Vars, scratch: &mut Scratch) {
    scratch.bytes.clear();
    scratch.ops.clear();
    for (i, h) in m.add.iter().enumerate() {
        let start = scratch.bytes.len();
        for part in &h.value.parts {
            format_part(part, src, vars, &mut scratch.bytes);
        }
        let end = scratch.bytes.len();
        if start == end && !h.keep_empty_value {
            continue;
        }
        let present = || src.target().contains(&h.name);
        let overwrite = match h.action {
            AppendAction::AppendIfExistsOrAdd => false,
            AppendAction::AddIfAbsent if present() => continue,
            AppendAction::AddIfAbsent => false,
            AppendAction::OverwriteIfExists if !present() => continue,
            AppendAction::OverwriteIfExists | AppendAction::OverwriteIfExistsOrAdd => true,
        };
        scratch.ops.push((i as u32, start as u32, end as u32, overwrite));
    }
}

/// Overwrites first, then appends (Envoy's order).
fn execute(m: &HeaderMutations, target: &mut Headers, scratch: &Scratch) {
    for overwrite_pass in [true, false] {
        for &(i, start, end, overwrite) in &scratch.ops {
            if overwrite != overwrite_pass {
                continue;
            }
            let name = &m.add[i as usize].name;
            let value = &scratch.bytes[start as usize..end as usize];
            if overwrite {
                target.set(name, value);
            } else {
                target.append(name, value);
            }
        }
    }
}

fn format_part(part: &FormatPart, src: &dyn Source, vars: &Vars, out: &mut Vec<u8>) {
    let var = match part {
        FormatPart::Literal(text) => {
            out.extend_from_slice(text.as_bytes());
            return;
        }
        FormatPart::Var(v) => v,
    };
    match var {
        FormatVar::DownstreamRemoteAddress => write_addr(out, vars.remote),
        FormatVar::DownstreamRemoteAddressWithoutPort => write_ip(out, vars.remote.ip()),
        FormatVar::DownstreamRemotePort => write_port(out, vars.remote.port()),
        FormatVar::DownstreamDirectRemoteAddress => write_addr(out, vars.direct_remote),
        FormatVar::DownstreamDirectRemoteAddressWithoutPort => write_ip(out, vars.direct_remote.ip()),
        FormatVar::DownstreamDirectRemotePort => write_port(out, vars.direct_remote.port()),
        FormatVar::DownstreamLocalAddress => write_addr(out, vars.local),
        FormatVar::DownstreamLocalAddressWithoutPort => write_ip(out, vars.local.ip()),
        FormatVar::DownstreamLocalPort => write_port(out, vars.local.port()),
        FormatVar::UpstreamRemoteAddress => {
            if let Some(u) = vars.upstream {
                write_addr(out, u);
            }
        }
        FormatVar::UpstreamRemoteAddressWithoutPort => {
            if let Some(u) = vars.upstream {
                write_ip(out, u.ip());
            }
        }
        FormatVar::UpstreamRemotePort => {
            if let Some(u) = vars.upstream {
                write_port(out, u.port());
            }
        }
        FormatVar::Protocol => out.extend_from_slice(vars.protocol.as_bytes()),
        FormatVar::RequestHeader { names, max_len } => {
            if let Some(v) = names.iter().find_map(|n| src.request(n)) {
                out.extend_from_slice(&v[..max_len.map_or(v.len(), |m| m.min(v.len()))]);
            }
        }
        FormatVar::ResponseHeader { names, max_len } => {
            if let Some(v) = names.iter().find_map(|n| src.response(n)) {
                out.extend_from_slice(&v[..max_len.map_or(v.len(), |m| m.min(v.len()))]);
            }
        }
    }
}

/// IPv4-mapped IPv6 addresses print as IPv4, as Envoy's do once
/// normalised.
fn plain_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn write_ip(out: &mut Vec<u8>, ip: IpAddr) {
    let _ = write!(out, "{}", plain_ip(ip));
}

fn write_port(out: &mut Vec<u8>, port: u16) {
    out.extend_from_slice(itoa::Buffer::new().format(port).as_bytes());
}

fn write_addr(out: &mut Vec<u8>, a: SocketAddr) {
    let _ = write!(out, "{}", SocketAddr::new(plain_ip(a.ip()), a.port()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use control::model::{HeaderFormat, HeaderToAdd};

    fn lit(s: &str) -> HeaderFormat {
        HeaderFormat { parts: vec![FormatPart::Literal(s.into())] }
    }

    fn add(name: &str, value: HeaderFormat, action: AppendAction) -> HeaderToAdd {
        HeaderToAdd { name: name.into(), value, action, keep_empty_value: false }
    }

    fn vars() -> Vars {
        Vars {
            remote: "10.0.0.9:0".parse().unwrap(),
            direct_remote: "[::ffff:127.0.0.1]:5555".parse().unwrap(),
            local: "[::1]:8080".parse().unwrap(),
            upstream: None,
            protocol: "HTTP/1.1",
        }
    }

    fn head(extra: &str) -> RequestHead {
        let raw = format!("GET /p?q=1 HTTP/1.1\r\nHost: h.com\r\n{extra}\r\n");
        let mut h = RequestHead::new();
        crate::http1::parse_request_head(raw.as_bytes(), &crate::http1::Limits::default(), &mut h).unwrap().unwrap();
        h
    }

    fn values<'a>(h: &'a Headers, name: &'a str) -> Vec<&'a str> {
        h.get_all(name).map(|v| std::str::from_utf8(v).unwrap()).collect()
    }

    fn one_level(m: &HeaderMutations) -> Levels<'_> {
        Levels { levels: [Some(m), None, None, None] }
    }

    #[test]
    fn append_actions() {
        let m = HeaderMutations {
            add: vec![
                add("x-app", lit("new"), AppendAction::AppendIfExistsOrAdd),
                add("x-abs", lit("new"), AppendAction::AddIfAbsent),
                add("x-abs2", lit("new"), AppendAction::AddIfAbsent),
                add("x-ow", lit("new"), AppendAction::OverwriteIfExistsOrAdd),
                add("x-ow2", lit("new"), AppendAction::OverwriteIfExistsOrAdd),
                add("x-oe", lit("new"), AppendAction::OverwriteIfExists),
                add("x-oe2", lit("new"), AppendAction::OverwriteIfExists),
            ],
            remove: vec![],
        };
        let mut h = head("x-app: old\r\nx-abs: old\r\nx-ow: a\r\nx-ow: b\r\nx-oe: old\r\n");
        apply_to_request(&one_level(&m), &mut h, &vars(), &mut Scratch::default());
        assert_eq!(values(&h.headers, "x-app"), ["old", "new"]);
        assert_eq!(values(&h.headers, "x-abs"), ["old"]);
        assert_eq!(values(&h.headers, "x-abs2"), ["new"]);
        assert_eq!(values(&h.headers, "x-ow"), ["new"]);
        assert_eq!(values(&h.headers, "x-ow2"), ["new"]);
        assert_eq!(values(&h.headers, "x-oe"), ["new"]);
        assert_eq!(values(&h.headers, "x-oe2"), Vec::<&str>::new());
    }

    #[test]
    fn remove_runs_first_and_values_see_the_headers_before_adding() {
        let req_x = HeaderFormat {
            parts: vec![FormatPart::Var(FormatVar::RequestHeader { names: vec!["x-a".into()], max_len: None })],
        };
        let m = HeaderMutations {
            add: vec![
                add("x-a", lit("added"), AppendAction::OverwriteIfExistsOrAdd),
                add("x-copy", req_x, AppendAction::AppendIfExistsOrAdd),
                add("x-gone", lit("back"), AppendAction::AddIfAbsent),
            ],
            remove: vec!["x-gone".into()],
        };
        let mut h = head("x-a: original\r\nx-gone: 1\r\n");
        apply_to_request(&one_level(&m), &mut h, &vars(), &mut Scratch::default());
        assert_eq!(values(&h.headers, "x-a"), ["added"]);
        assert_eq!(values(&h.headers, "x-copy"), ["original"], "formatted before the overwrite");
        assert_eq!(values(&h.headers, "x-gone"), ["back"], "removed, then absent");
    }

    #[test]
    fn variables_and_empty_values() {
        let v = |var: FormatVar| HeaderFormat {
            parts: vec![FormatPart::Literal("<".into()), FormatPart::Var(var), FormatPart::Literal(">".into())],
        };
        let bare = |var: FormatVar| HeaderFormat { parts: vec![FormatPart::Var(var)] };
        let m = HeaderMutations {
            add: vec![
                add("x-remote", v(FormatVar::DownstreamRemoteAddress), AppendAction::AppendIfExistsOrAdd),
                add(
                    "x-direct",
                    v(FormatVar::DownstreamDirectRemoteAddressWithoutPort),
                    AppendAction::AppendIfExistsOrAdd,
                ),
                add("x-dport", v(FormatVar::DownstreamDirectRemotePort), AppendAction::AppendIfExistsOrAdd),
                add("x-local", v(FormatVar::DownstreamLocalAddress), AppendAction::AppendIfExistsOrAdd),
                add("x-proto", v(FormatVar::Protocol), AppendAction::AppendIfExistsOrAdd),
                add(
                    "x-path",
                    v(FormatVar::RequestHeader { names: vec![":path".into()], max_len: Some(3) }),
                    AppendAction::AppendIfExistsOrAdd,
                ),
                add(
                    "x-alt",
                    v(FormatVar::RequestHeader { names: vec!["x-none".into(), "host".into()], max_len: None }),
                    AppendAction::AppendIfExistsOrAdd,
                ),
                add("x-up", bare(FormatVar::UpstreamRemoteAddress), AppendAction::AppendIfExistsOrAdd),
                HeaderToAdd {
                    keep_empty_value: true,
                    ..add("x-kept", bare(FormatVar::UpstreamRemoteAddress), AppendAction::AppendIfExistsOrAdd)
                },
            ],
            remove: vec![],
        };
        let mut h = head("");
        apply_to_request(&one_level(&m), &mut h, &vars(), &mut Scratch::default());
        assert_eq!(values(&h.headers, "x-remote"), ["<10.0.0.9:0>"]);
        assert_eq!(values(&h.headers, "x-direct"), ["<127.0.0.1>"]);
        assert_eq!(values(&h.headers, "x-dport"), ["<5555>"]);
        assert_eq!(values(&h.headers, "x-local"), ["<[::1]:8080>"]);
        assert_eq!(values(&h.headers, "x-proto"), ["<HTTP/1.1>"]);
        assert_eq!(values(&h.headers, "x-path"), ["</p?>"]);
        assert_eq!(values(&h.headers, "x-alt"), ["<h.com>"]);
        assert!(values(&h.headers, "x-up").is_empty(), "no upstream on a request: empty, dropped");
        assert_eq!(values(&h.headers, "x-kept"), [""]);
    }

    #[test]
    fn response_side_reads_both_maps() {
        let m = HeaderMutations {
            add: vec![
                add(
                    "x-echo",
                    HeaderFormat {
                        parts: vec![FormatPart::Var(FormatVar::RequestHeader {
                            names: vec!["x-id".into()],
                            max_len: None,
                        })],
                    },
                    AppendAction::AppendIfExistsOrAdd,
                ),
                add(
                    "x-type",
                    HeaderFormat {
                        parts: vec![FormatPart::Var(FormatVar::ResponseHeader {
                            names: vec!["content-type".into()],
                            max_len: None,
                        })],
                    },
                    AppendAction::AppendIfExistsOrAdd,
                ),
                add(
                    "x-up",
                    HeaderFormat { parts: vec![FormatPart::Var(FormatVar::UpstreamRemoteAddress)] },
                    AppendAction::AppendIfExistsOrAdd,
                ),
            ],
            remove: vec!["server".into()],
        };
        let req = head("x-id: 42\r\n");
        let mut resp = Headers::new();
        resp.append("content-type", b"text/plain");
        resp.append("server", b"up");
        let vars = Vars { upstream: Some("10.1.1.1:80".parse().unwrap()), ..vars() };
        apply_to_response(&one_level(&m), &mut resp, &req, &vars, &mut Scratch::default());
        assert_eq!(values(&resp, "x-echo"), ["42"]);
        assert_eq!(values(&resp, "x-type"), ["text/plain"]);
        assert_eq!(values(&resp, "x-up"), ["10.1.1.1:80"]);
        assert!(!resp.contains("server"));
    }

    #[test]
    fn level_order() {
        let lvl = |v: &str| HeaderMutations {
            add: vec![
                add("x-o", lit(v), AppendAction::OverwriteIfExistsOrAdd),
                add("x-a", lit(v), AppendAction::AppendIfExistsOrAdd),
            ],
            remove: vec![],
        };
        let mut rc = RouteConfig {
            name: "rc".into(),
            virtual_hosts: vec![],
            typed_per_filter_config: Default::default(),
            request_headers: lvl("config"),
            response_headers: HeaderMutations::default(),
            most_specific_header_mutations_wins: false,
        };
        let vh = VirtualHost {
            name: "vh".into(),
            domains: vec![],
            routes: vec![],
            typed_per_filter_config: Default::default(),
            request_headers: lvl("vhost"),
            response_headers: HeaderMutations::default(),
            retry: Default::default(),
        };
        let route = Route {
            name: "r".into(),
            matcher: control::model::RouteMatch {
                path: control::model::PathMatch::Prefix("/".into()),
                case_sensitive: true,
                headers: vec![],
                query_parameters: vec![],
            },
            action: control::model::RouteAction::DirectResponse { status: 200, body: None },
            typed_per_filter_config: Default::default(),
            request_headers: lvl("route"),
            response_headers: HeaderMutations::default(),
        };
        let weighted = control::model::ClusterWeight {
            target: control::model::WeightedTarget::Name("c".into()),
            weight: 1,
            request_headers: lvl("weighted"),
            response_headers: HeaderMutations::default(),
            host_rewrite_literal: None,
        };
        let run = |rc: &RouteConfig| {
            let mut h = head("");
            let levels = Levels::new(rc, &vh, &route, Some(&weighted), false);
            apply_to_request(&levels, &mut h, &vars(), &mut Scratch::default());
            (values(&h.headers, "x-o").join(","), values(&h.headers, "x-a").join(","))
        };
        assert_eq!(run(&rc), ("config".to_string(), "weighted,route,vhost,config".to_string()));
        rc.most_specific_header_mutations_wins = true;
        assert_eq!(run(&rc), ("route".to_string(), "weighted,config,vhost,route".to_string()));
        assert!(Levels::new(&rc, &vh, &route, None, true).is_empty());
    }
}
