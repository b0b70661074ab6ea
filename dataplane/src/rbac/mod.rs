//! RBAC: Envoy's role-based access control, evaluated locally on the request
//! path (`envoy.filters.http.rbac`) and on new connections
//! (`envoy.filters.network.rbac`).
//!
//! # What it owns
//!
//! * The **engine** ([`Engine`]): `control::model::RbacRules` compiled once
//!   per config snapshot into a tree of matchers, evaluated against a small
//!   [`Subject`] (addresses, destination port, a header lookup).  Policies
//!   run in name order and the first match decides, as in Envoy: ALLOW
//!   allows iff a policy matches, DENY iff none does, LOG always allows.
//! * The **cost model**.  The origin design learnt that per-request policy
//!   calls collapse throughput, so evaluation here takes no lock, allocates
//!   nothing (except joining a repeated header a matcher asks for) and does
//!   not grow with table size where it need not: inside every OR list
//!   (a policy's permissions, its principals, `or_rules`, `or_ids`) the IP
//!   leaves of one kind are gathered into a [`CidrSet`] trie and the port
//!   leaves into a sorted table, so a 10,000-CIDR whitelist costs one trie
//!   walk — O(address bits), about 14 nodes — instead of 10,000 compares.
//!   Nested ORs are flattened into their parent first so the gathering sees
//!   every leaf.  What cannot be gathered (headers, paths, AND/NOT
//!   subtrees) is tried afterwards, in order.
//! * The **filters' runtime state**: per-filter engines, their per-route
//!   overrides (`RBACPerRoute` on a route, its virtual host or the route
//!   configuration, most specific first), and the stat handles Envoy names
//!   (`http.<prefix>.rbac.allowed`, `<stat_prefix>.rbac.shadow_denied`, ...),
//!   all created when a shard builds its snapshot.
//! * The **trusted client address** Envoy's `remote_ip` principal uses
//!   ([`trusted_client_address`]): the peer with `use_remote_address`, else
//!   the `x-forwarded-for` entry `xff_num_trusted_hops` from the right.
//!
//! # What it must not touch
//!
//! Sockets, responses and timers: the proxy asks for a verdict and writes the
//! 403 or closes the connection itself.  It never parses protobuf or reads
//! config sources; it sees `control::model` only.  Matcher semantics
//! (string and header matching) belong to [`crate::matcher`], shared with
//! routing, and are not redefined here.

mod trie;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use control::model::{
    CidrRange, HttpFilter, Listener, NetworkRbac, PerFilterConfig, RbacAction, RbacPermission, RbacPrincipal,
    RbacRules, Route, RouteConfig,
};

use crate::matcher::{join_values, HeaderMatcher, HeaderSource, StringMatcher};
use crate::router::RouteTable;
use crate::stats::{Counter, Scope, StatsStore};

pub use trie::CidrSet;

/// The name Envoy registers the HTTP filter under; per-route configs keyed
/// by it apply when none is keyed by the filter's own configured name.
pub const HTTP_FILTER_NAME: &str = "envoy.filters.http.rbac";

/// The local reply body of a denied request (Envoy's).
pub const DENIED_BODY: &[u8] = b"RBAC: access denied";

/// What a policy is evaluated against: one request, or one connection.
pub struct Subject<'a> {
    /// `remote_ip`: the trusted client address.
    pub remote: IpAddr,
    /// `direct_remote_ip`: the physical peer.
    pub direct_remote: IpAddr,
    /// `source_ip`: the connection's source (no PROXY protocol yet, so the peer).
    pub source: IpAddr,
    /// The local address the connection arrived on (`destination_ip` / `_port`).
    pub destination: SocketAddr,
    /// Request headers, pseudo-headers included; [`crate::matcher::NoHeaders`]
    /// for a plain connection.
    pub headers: &'a dyn HeaderSource,
    /// The TLS peer's verified certificate identity (`authenticated`).
    pub peer: Option<&'a crate::tls::PeerIdentity>,
}

impl Subject<'_> {
    fn ip(&self, field: IpField) -> IpAddr {
        match field {
            IpField::Source => self.source,
            IpField::DirectRemote => self.direct_remote,
            IpField::Remote => self.remote,
            IpField::Destination => self.destination.ip(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IpField {
    Source,
    DirectRemote,
    Remote,
    Destination,
}

const IP_FIELDS: [IpField; 4] = [IpField::Source, IpField::DirectRemote, IpField::Remote, IpField::Destination];

/// A compiled permission or principal.
#[derive(Debug, Clone)]
enum Node {
    And(Box<[Node]>),
    Or(Box<OrGroup>),
    Not(Box<Node>),
    Header(HeaderMatcher),
    /// Matched against `:path` without query and fragment.
    UrlPath(StringMatcher),
    Ip(IpField, CidrRange),
    PortRange {
        start: u32,
        end: u32,
    },
    /// `authenticated` (`None`: any verified peer certificate).
    Authenticated(Option<StringMatcher>),
}

/// An OR list with its cheap leaves gathered into lookup structures.
#[derive(Debug, Clone, Default)]
struct OrGroup {
    any: bool,
    /// One trie per IP field that has leaves here, indexed like `IP_FIELDS`.
    ips: [Option<CidrSet>; 4],
    /// `destination_port` leaves, sorted.
    ports: Box<[u16]>,
    rest: Box<[Node]>,
}

/// A leaf or subtree on its way into an [`OrGroup`].
enum Item {
    Any,
    Ip(IpField, CidrRange),
    Port(u16),
    Other(Node),
    /// A nested OR whose members join the parent.
    Flatten(Vec<Item>),
}

impl OrGroup {
    fn build(items: Vec<Item>) -> OrGroup {
        let mut group = OrGroup::default();
        let mut ports = Vec::new();
        let mut rest = Vec::new();
        for item in items {
            group.gather(item, &mut ports, &mut rest);
        }
        ports.sort_unstable();
        ports.dedup();
        group.ports = ports.into_boxed_slice();
        group.rest = rest.into_boxed_slice();
        group
    }

    /// Files one item; subtrees keep their configured order.
    fn gather(&mut self, item: Item, ports: &mut Vec<u16>, rest: &mut Vec<Node>) {
        match item {
            Item::Any => self.any = true,
            Item::Ip(field, cidr) => {
                let slot = IP_FIELDS.iter().position(|f| *f == field).expect("listed");
                self.ips[slot].get_or_insert_with(CidrSet::new).insert(cidr.address, cidr.prefix_len);
            }
            Item::Port(p) => ports.push(p),
            Item::Other(n) => rest.push(n),
            Item::Flatten(items) => {
                for i in items {
                    self.gather(i, ports, rest);
                }
            }
        }
    }

    fn matches(&self, s: &Subject<'_>) -> bool {
        if self.any {
            return true;
        }
        for (i, set) in self.ips.iter().enumerate() {
            if let Some(set) = set {
                if set.contains(s.ip(IP_FIELDS[i])) {
                    return true;
                }
            }
        }
        if !self.ports.is_empty() && self.ports.binary_search(&s.destination.port()).is_ok() {
            return true;
        }
        self.rest.iter().any(|n| n.matches(s))
    }

    fn uses(&self, field: IpField) -> bool {
        let slot = IP_FIELDS.iter().position(|f| *f == field).expect("listed");
        self.ips[slot].is_some() || self.rest.iter().any(|n| n.uses(field))
    }

    /// A group that is exactly one subtree needs no group around it.
    fn into_node(self) -> Node {
        let gathered = self.any || self.ips.iter().any(Option::is_some) || !self.ports.is_empty();
        if !gathered && self.rest.len() == 1 {
            return self.rest.into_vec().pop().expect("one");
        }
        Node::Or(Box::new(self))
    }
}

impl Node {
    fn uses(&self, field: IpField) -> bool {
        match self {
            Node::And(all) => all.iter().any(|n| n.uses(field)),
            Node::Or(group) => group.uses(field),
            Node::Not(n) => n.uses(field),
            Node::Ip(f, _) => *f == field,
            Node::Header(_) | Node::UrlPath(_) | Node::PortRange { .. } | Node::Authenticated(_) => false,
        }
    }

    fn matches(&self, s: &Subject<'_>) -> bool {
        match self {
            Node::And(all) => all.iter().all(|n| n.matches(s)),
            Node::Or(group) => group.matches(s),
            Node::Not(n) => !n.matches(s),
            Node::Header(h) => h.matches(s.headers),
            Node::UrlPath(m) => match s.headers.header(":path") {
                Some(p) => m.matches(strip_query(&p)),
                None => false,
            },
            Node::Ip(field, cidr) => in_range(s.ip(*field), cidr),
            Node::PortRange { start, end } => {
                let p = u32::from(s.destination.port());
                p >= *start && p < *end
            }
            // Envoy's AuthenticatedMatcher: URI SANs, then DNS SANs, then the subject.
            Node::Authenticated(name) => match (s.peer, name) {
                (None, _) => false,
                (Some(_), None) => true,
                (Some(p), Some(m)) => {
                    p.uri_sans.iter().any(|v| m.matches(v.as_bytes()))
                        || p.dns_sans.iter().any(|v| m.matches(v.as_bytes()))
                        || m.matches(p.subject.as_bytes())
                }
            },
        }
    }
}

/// Envoy's `PathUtil::removeQueryAndFragment`.
fn strip_query(path: &[u8]) -> &[u8] {
    let end = memchr::memchr2(b'?', b'#', path).unwrap_or(path.len());
    &path[..end]
}

fn in_range(ip: IpAddr, cidr: &CidrRange) -> bool {
    let len = u32::from(cidr.prefix_len);
    match (ip, cidr.address) {
        (IpAddr::V4(a), IpAddr::V4(net)) => {
            let m = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(a) & m == u32::from(net) & m
        }
        (IpAddr::V6(a), IpAddr::V6(net)) => {
            let m = if len == 0 { 0 } else { u128::MAX << (128 - len) };
            u128::from(a) & m == u128::from(net) & m
        }
        _ => false,
    }
}

fn permission_item(p: &RbacPermission) -> Item {
    match p {
        RbacPermission::Any => Item::Any,
        RbacPermission::Or(list) => Item::Flatten(list.iter().map(permission_item).collect()),
        RbacPermission::DestinationIp(c) => Item::Ip(IpField::Destination, *c),
        RbacPermission::DestinationPort(port) => Item::Port(*port),
        other => Item::Other(permission_node(other)),
    }
}

fn permission_node(p: &RbacPermission) -> Node {
    match p {
        RbacPermission::Any | RbacPermission::Or(_) | RbacPermission::DestinationPort(_) => {
            OrGroup::build(vec![permission_item(p)]).into_node()
        }
        RbacPermission::And(list) => Node::And(list.iter().map(permission_node).collect()),
        RbacPermission::Not(inner) => Node::Not(Box::new(permission_node(inner))),
        RbacPermission::Header(h) => Node::Header(HeaderMatcher::new(h)),
        RbacPermission::UrlPath(m) => Node::UrlPath(StringMatcher::new(m)),
        RbacPermission::DestinationIp(c) => Node::Ip(IpField::Destination, *c),
        RbacPermission::DestinationPortRange { start, end } => Node::PortRange { start: *start, end: *end },
    }
}

fn principal_item(p: &RbacPrincipal) -> Item {
    match p {
        RbacPrincipal::Any => Item::Any,
        RbacPrincipal::Or(list) => Item::Flatten(list.iter().map(principal_item).collect()),
        RbacPrincipal::SourceIp(c) => Item::Ip(IpField::Source, *c),
        RbacPrincipal::DirectRemoteIp(c) => Item::Ip(IpField::DirectRemote, *c),
        RbacPrincipal::RemoteIp(c) => Item::Ip(IpField::Remote, *c),
        other => Item::Other(principal_node(other)),
    }
}

fn principal_node(p: &RbacPrincipal) -> Node {
    match p {
        RbacPrincipal::Any | RbacPrincipal::Or(_) => OrGroup::build(vec![principal_item(p)]).into_node(),
        RbacPrincipal::And(list) => Node::And(list.iter().map(principal_node).collect()),
        RbacPrincipal::Not(inner) => Node::Not(Box::new(principal_node(inner))),
        RbacPrincipal::SourceIp(c) => Node::Ip(IpField::Source, *c),
        RbacPrincipal::DirectRemoteIp(c) => Node::Ip(IpField::DirectRemote, *c),
        RbacPrincipal::RemoteIp(c) => Node::Ip(IpField::Remote, *c),
        RbacPrincipal::Header(h) => Node::Header(HeaderMatcher::new(h)),
        RbacPrincipal::UrlPath(m) => Node::UrlPath(StringMatcher::new(m)),
        RbacPrincipal::Authenticated(m) => Node::Authenticated(m.as_ref().map(StringMatcher::new)),
    }
}

#[derive(Debug, Clone)]
struct Policy {
    name: Box<str>,
    permissions: OrGroup,
    principals: OrGroup,
}

/// Compiled `RbacRules`.
#[derive(Debug, Clone)]
pub struct Engine {
    action: RbacAction,
    /// In name order.
    policies: Box<[Policy]>,
}

/// An engine's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision<'e> {
    pub allowed: bool,
    /// The first policy (in name order) that matched, if any.
    pub policy: Option<&'e str>,
}

impl Engine {
    pub fn new(rules: &RbacRules) -> Engine {
        let mut policies: Vec<Policy> = rules
            .policies
            .iter()
            .map(|p| Policy {
                name: p.name.as_str().into(),
                permissions: OrGroup::build(p.permissions.iter().map(permission_item).collect()),
                principals: OrGroup::build(p.principals.iter().map(principal_item).collect()),
            })
            .collect();
        // The model keeps them sorted; an engine must not depend on that.
        policies.sort_by(|a, b| a.name.cmp(&b.name));
        Engine { action: rules.action, policies: policies.into_boxed_slice() }
    }

    pub fn action(&self) -> RbacAction {
        self.action
    }

    /// Whether any policy looks at `remote_ip` (so callers can skip
    /// deriving the trusted client address from `x-forwarded-for`).
    pub fn uses_remote_ip(&self) -> bool {
        self.policies.iter().any(|p| p.permissions.uses(IpField::Remote) || p.principals.uses(IpField::Remote))
    }

    /// The first policy, in name order, whose permissions and principals
    /// both match.
    pub fn matched_policy(&self, s: &Subject<'_>) -> Option<&str> {
        self.policies.iter().find(|p| p.permissions.matches(s) && p.principals.matches(s)).map(|p| &*p.name)
    }

    pub fn evaluate(&self, s: &Subject<'_>) -> Decision<'_> {
        let policy = self.matched_policy(s);
        let allowed = match self.action {
            RbacAction::Allow => policy.is_some(),
            RbacAction::Deny => policy.is_none(),
            RbacAction::Log => true,
        };
        Decision { allowed, policy }
    }
}

/// Envoy's `statPrefixJoin`: joins with a `.` unless `prefix` already ends
/// with one.
fn stat_prefix_join(prefix: &str, token: &str) -> String {
    if prefix.is_empty() {
        token.to_string()
    } else if prefix.ends_with('.') {
        format!("{prefix}{token}")
    } else {
        format!("{prefix}.{token}")
    }
}

/// The four counters of one RBAC filter instance.
#[derive(Debug, Clone)]
pub struct RbacStats {
    pub allowed: Counter,
    pub denied: Counter,
    pub shadow_allowed: Counter,
    pub shadow_denied: Counter,
}

impl RbacStats {
    /// `leaf_base` is the part after the scope, ending in `rbac.`;
    /// Envoy appends the rules / shadow prefixes to it without a separator.
    fn new(
        store: &StatsStore,
        scope: &Scope,
        leaf_base: &str,
        rules_prefix: &str,
        shadow_prefix: &str,
        slot: usize,
    ) -> RbacStats {
        let enforced = stat_prefix_join(leaf_base, rules_prefix);
        let shadow = stat_prefix_join(leaf_base, shadow_prefix);
        let c = |leaf: String| store.counter(scope, &leaf, slot);
        RbacStats {
            allowed: c(format!("{enforced}allowed")),
            denied: c(format!("{enforced}denied")),
            shadow_allowed: c(format!("{shadow}shadow_allowed")),
            shadow_denied: c(format!("{shadow}shadow_denied")),
        }
    }
}

/// Enforced and shadow engines that apply together.
#[derive(Debug, Clone, Default)]
struct Engines {
    rules: Option<Engine>,
    shadow: Option<Engine>,
}

impl Engines {
    fn uses_remote_ip(&self) -> bool {
        self.rules.iter().chain(&self.shadow).any(Engine::uses_remote_ip)
    }

    fn new(rules: Option<&RbacRules>, shadow: Option<&RbacRules>) -> Engines {
        Engines { rules: rules.map(Engine::new), shadow: shadow.map(Engine::new) }
    }

    /// Shadow first (counted, never enforced), then the enforced rules;
    /// `true` = allowed.  Without enforced rules nothing is counted for them
    /// and the subject is allowed, as Envoy's "no engine" case.
    fn check(&self, s: &Subject<'_>, stats: &RbacStats) -> bool {
        if let Some(shadow) = &self.shadow {
            if shadow.evaluate(s).allowed {
                stats.shadow_allowed.inc();
            } else {
                stats.shadow_denied.inc();
            }
        }
        match &self.rules {
            None => true,
            Some(engine) => {
                let allowed = engine.evaluate(s).allowed;
                if allowed {
                    stats.allowed.inc();
                } else {
                    stats.denied.inc();
                }
                allowed
            }
        }
    }
}

/// One `envoy.filters.http.rbac` instance of an HTTP connection manager.
pub struct HttpRbacFilter {
    /// `http_filters[].name`, the first key per-route configs are found by.
    config_name: Box<str>,
    engines: Engines,
    /// Compiled `RBACPerRoute`s of the route configuration, by the address
    /// of their model `Arc`: the route's map hands back that `Arc`, so the
    /// lookup needs neither a string key nor the router's internals.
    overrides: HashMap<usize, Engines>,
    /// Whether any virtual host carries an override (only then is the
    /// virtual host looked up again on the request path).
    vhost_overrides: bool,
    stats: RbacStats,
}

impl HttpRbacFilter {
    fn new(
        filter: &control::model::RbacFilter,
        routes: &RouteConfig,
        stat_prefix: &str,
        store: &StatsStore,
        slot: usize,
    ) -> HttpRbacFilter {
        let mut overrides = HashMap::new();
        // Only entries this filter can ever select: keyed by its own name or
        // by the canonical one.
        let mine = |key: &str| key == filter.name || key == HTTP_FILTER_NAME;
        let mut add = |map: &control::model::PerFilterConfigs| {
            for (key, config) in map {
                // Irrefutable today; other filters' variants join later.
                #[allow(irrefutable_let_patterns)]
                if let PerFilterConfig::Rbac(per_route) = config {
                    if mine(key) {
                        overrides
                            .entry(Arc::as_ptr(per_route) as usize)
                            .or_insert_with(|| Engines::new(per_route.rules.as_ref(), per_route.shadow_rules.as_ref()));
                    }
                }
            }
        };
        add(&routes.typed_per_filter_config);
        for vh in &routes.virtual_hosts {
            add(&vh.typed_per_filter_config);
            for r in &vh.routes {
                add(&r.typed_per_filter_config);
            }
        }
        let vhost_overrides = routes.virtual_hosts.iter().any(|vh| vh.typed_per_filter_config.keys().any(|k| mine(k)));
        HttpRbacFilter {
            config_name: filter.name.as_str().into(),
            engines: Engines::new(filter.rules.as_ref(), filter.shadow_rules.as_ref()),
            overrides,
            vhost_overrides,
            stats: RbacStats::new(
                store,
                &Scope::Http(stat_prefix.to_string()),
                "rbac.",
                &filter.rules_stat_prefix,
                &filter.shadow_rules_stat_prefix,
                slot,
            ),
        }
    }

    /// Envoy's most specific per-filter config: the route's, its virtual
    /// host's, then the route configuration's — first under the filter's
    /// configured name, then under the canonical filter name.
    fn per_route(&self, route: Option<&Route>, table: &RouteTable, host: &[u8]) -> Option<&Engines> {
        if self.overrides.is_empty() {
            return None;
        }
        let route = route?;
        let lookup = |key: &str| {
            route
                .typed_per_filter_config
                .get(key)
                .or_else(|| {
                    self.vhost_overrides
                        .then(|| table.find_virtual_host(host))
                        .flatten()
                        .and_then(|vh| vh.typed_per_filter_config.get(key))
                })
                .or_else(|| table.config().typed_per_filter_config.get(key))
        };
        let found = lookup(&self.config_name)
            .or_else(|| (&*self.config_name != HTTP_FILTER_NAME).then(|| lookup(HTTP_FILTER_NAME)).flatten())?;
        #[allow(irrefutable_let_patterns)]
        let PerFilterConfig::Rbac(per_route) = found
        else {
            return None;
        };
        self.overrides.get(&(Arc::as_ptr(per_route) as usize))
    }
}

/// One `envoy.filters.network.rbac` instance of a listener's filter chain.
pub struct NetworkRbacFilter {
    engines: Engines,
    delay_deny: Option<Duration>,
    stats: RbacStats,
}

impl NetworkRbacFilter {
    fn new(n: &NetworkRbac, store: &StatsStore, slot: usize) -> NetworkRbacFilter {
        // `<stat_prefix>.rbac.` however the prefix ends: the scope adds the dot.
        let prefix = n.stat_prefix.strip_suffix('.').unwrap_or(&n.stat_prefix);
        NetworkRbacFilter {
            engines: Engines::new(n.rules.as_ref(), n.shadow_rules.as_ref()),
            delay_deny: n.delay_deny,
            stats: RbacStats::new(
                store,
                &Scope::Named(prefix.to_string()),
                "rbac.",
                "",
                &n.shadow_rules_stat_prefix,
                slot,
            ),
        }
    }
}

/// Every RBAC filter of one listener, compiled for one shard's snapshot.
pub struct ListenerRbac {
    http: Box<[HttpRbacFilter]>,
    network: Box<[NetworkRbacFilter]>,
    /// Whether any HTTP engine (per-route ones included) reads `remote_ip`.
    http_uses_remote_ip: bool,
}

/// A request's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Answer 403 `RBAC: access denied`.
    Denied,
}

/// A connection's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnVerdict {
    Allowed,
    /// Close the connection, after `delay` if set (`delay_deny`).
    Denied {
        delay: Option<Duration>,
    },
}

impl ListenerRbac {
    pub fn new(listener: &Listener, store: &StatsStore, slot: usize) -> ListenerRbac {
        let hcm = &listener.http;
        let http: Box<[HttpRbacFilter]> = hcm
            .http_filters
            .iter()
            .filter_map(|f| match f {
                HttpFilter::Rbac(r) => Some(HttpRbacFilter::new(r, &hcm.route_config, &hcm.stat_prefix, store, slot)),
                _ => None,
            })
            .collect();
        let network = listener.network_rbac.iter().map(|n| NetworkRbacFilter::new(n, store, slot)).collect();
        let http_uses_remote_ip =
            http.iter().any(|f| f.engines.uses_remote_ip() || f.overrides.values().any(Engines::uses_remote_ip));
        ListenerRbac { http, network, http_uses_remote_ip }
    }

    /// Network filters only: for listeners without an HTTP connection
    /// manager (TCP proxy).
    pub fn network_only(filters: &[Arc<NetworkRbac>], store: &StatsStore, slot: usize) -> ListenerRbac {
        let network = filters.iter().map(|n| NetworkRbacFilter::new(n, store, slot)).collect();
        ListenerRbac { http: Box::new([]), network, http_uses_remote_ip: false }
    }

    /// Whether requests need [`check_request`](Self::check_request) at all.
    pub fn has_http(&self) -> bool {
        !self.http.is_empty()
    }

    pub fn has_network(&self) -> bool {
        !self.network.is_empty()
    }

    /// Whether requests need their trusted client address at all: without a
    /// `remote_ip` matcher the `x-forwarded-for` walk is skipped.
    pub fn uses_remote_ip(&self) -> bool {
        self.http_uses_remote_ip
    }

    /// Runs the HTTP RBAC filters in chain order; the first denial stops the
    /// chain, as a filter that sends a local reply does in Envoy.  `route`
    /// is the route the request matched (`None`: no route, so only the
    /// filters' own rules apply); `table` and `host` find its virtual host
    /// when an override sits there.
    pub fn check_request(
        &self,
        subject: &Subject<'_>,
        route: Option<&Route>,
        table: &RouteTable,
        host: &[u8],
    ) -> Verdict {
        for f in self.http.iter() {
            let engines = f.per_route(route, table, host).unwrap_or(&f.engines);
            if !engines.check(subject, &f.stats) {
                return Verdict::Denied;
            }
        }
        Verdict::Allowed
    }

    /// Runs the network RBAC filters once for a connection.
    pub fn check_connection(&self, peer: SocketAddr, local: SocketAddr) -> ConnVerdict {
        self.check_connection_with(peer, local, None)
    }

    /// `check_connection` for a connection whose TLS peer is `identity`.
    pub fn check_connection_with(
        &self,
        peer: SocketAddr,
        local: SocketAddr,
        identity: Option<&crate::tls::PeerIdentity>,
    ) -> ConnVerdict {
        let subject = Subject {
            remote: peer.ip(),
            direct_remote: peer.ip(),
            source: peer.ip(),
            destination: local,
            headers: &crate::matcher::NoHeaders,
            peer: identity,
        };
        for f in self.network.iter() {
            if !f.engines.check(&subject, &f.stats) {
                return ConnVerdict::Denied { delay: f.delay_deny };
            }
        }
        ConnVerdict::Allowed
    }
}

/// The `x-forwarded-for` values of a request, in order.  Field names are
/// stored lower-case, so a plain compare finds them (cheaper than the
/// case-folding lookup, and this runs per request).
pub fn forwarded_for(headers: &crate::http1::Headers) -> impl Iterator<Item = &[u8]> {
    headers.iter().filter(|(n, _)| *n == "x-forwarded-for").map(|(_, v)| v)
}

/// Envoy's trusted client address (`ConnectionManagerUtility::
/// mutateRequestHeaders`): with `use_remote_address`, the peer — or, with
/// `xff_num_trusted_hops` = n > 0, the n-th `x-forwarded-for` entry from
/// the right as received; without it, the entry `xff_num_trusted_hops`
/// places from the right.  Whenever that entry is missing or not an IP
/// address, the peer.
pub fn trusted_client_address<'a>(
    peer: IpAddr,
    use_remote_address: bool,
    xff_num_trusted_hops: u32,
    xff_values: impl Iterator<Item = &'a [u8]>,
) -> IpAddr {
    let skip = if use_remote_address {
        if xff_num_trusted_hops == 0 {
            return peer;
        }
        xff_num_trusted_hops - 1
    } else {
        xff_num_trusted_hops
    };
    // Repeated fields are one comma-separated list (Envoy keeps
    // x-forwarded-for as one inline header, joined with `,`).
    match join_values(xff_values) {
        Some(xff) => last_address_from_xff(&xff, skip).unwrap_or(peer),
        None => peer,
    }
}

/// Envoy's `Utility::getLastAddressFromXFF`: drop `skip` entries from the
/// right, then parse the last one (trimmed).  A trailing comma leaves the
/// whole remaining text, which then fails to parse — as in Envoy.
fn last_address_from_xff(xff: &[u8], skip: u32) -> Option<IpAddr> {
    let mut rest = xff;
    for _ in 0..skip {
        let comma = memchr::memrchr(b',', rest)?;
        rest = &rest[..comma];
    }
    if let Some(comma) = memchr::memrchr(b',', rest) {
        if comma + 1 < rest.len() {
            rest = &rest[comma + 1..];
        }
    }
    let text = std::str::from_utf8(rest).ok()?;
    text.trim_matches(|c: char| matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')).parse().ok()
}
