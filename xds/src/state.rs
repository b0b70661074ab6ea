//! The ADS state-of-the-world protocol as a sans-IO state machine.
//!
//! Inputs are a stream starting, a `DiscoveryResponse`, and the passing of
//! time (`now` is always passed in, never read); outputs are the
//! `DiscoveryRequest`s to send, in order, the config to publish, and what
//! happened per type (for stats).  The driver (`grpc.rs`) only moves bytes.
//!
//! The rules followed are those of Envoy's "xDS REST and gRPC protocol"
//! document (envoyproxy.io, api-docs/xds_protocol):
//!
//! * **ACK / NACK.**  Every response is answered on the same type with its
//!   `response_nonce`.  An ACK carries the response's `version_info`; a NACK
//!   carries the last *accepted* `version_info` and an `error_detail` whose
//!   message lists every error with the resource and field path
//!   (`Listener "l1": filter_chains[0]...: unsupported field`).  A rejected
//!   response changes nothing: the whole response is refused and the
//!   previous resources of that type keep serving.
//! * **Wildcard and named subscriptions.**  LDS and CDS subscribe with no
//!   names (wildcard: "everything for me"); RDS and EDS subscribe to exactly
//!   the route configurations the accepted listeners name and the EDS
//!   clusters the accepted clusters name, and send a new request whenever
//!   that set changes.
//! * **Removal.**  LDS and CDS responses are the complete set: a listener or
//!   cluster missing from one is removed.  RDS and EDS resources are removed
//!   when nothing names them any more (unsubscribed), not when a response
//!   omits them.
//! * **Ordering / warming.**  A listener waits for its RouteConfiguration
//!   and an EDS cluster for its assignment (see `control::bootstrap::dynamic`),
//!   until the type's `initial_fetch_timeout`; the follow-up RDS / EDS
//!   requests are sent before the ACK of the LDS / CDS response that
//!   caused them, as Envoy does.
//! * **Node** is sent on the first request of each stream only.  On a new
//!   stream, every subscription is re-sent with the last accepted version
//!   so the server can skip what the client has.
//!
//! Publication: each accepted response builds one whole new config (static
//! resources + every accepted dynamic resource) through
//! `control::bootstrap::dynamic::build`; if that whole-config validation
//! fails, the response is NACKed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use control::bootstrap::dynamic::{self as dynamic, Accepted, DynamicResources, TranslationCache};
use control::model;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::pb::google::rpc::Status;
use prost::Message;

/// The four resource types, in the order Envoy subscribes to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Cluster,
    ClusterLoadAssignment,
    Listener,
    RouteConfiguration,
    /// SDS: TLS secrets the accepted listeners and clusters name with
    /// `sds_config: {ads: {}}` (named subscription, ADS only).
    Secret,
}

pub const ALL_KINDS: [Kind; 5] =
    [Kind::Cluster, Kind::ClusterLoadAssignment, Kind::Listener, Kind::RouteConfiguration, Kind::Secret];

const TYPE_PREFIX: &str = "type.googleapis.com/";
/// gRPC INVALID_ARGUMENT, what Envoy puts in a NACK's `error_detail.code`.
const INVALID_ARGUMENT: i32 = 3;

impl Kind {
    pub fn full_name(self) -> &'static str {
        match self {
            Kind::Listener => dynamic::LISTENER,
            Kind::RouteConfiguration => dynamic::ROUTE_CONFIGURATION,
            Kind::Cluster => dynamic::CLUSTER,
            Kind::ClusterLoadAssignment => dynamic::CLUSTER_LOAD_ASSIGNMENT,
            Kind::Secret => dynamic::SECRET,
        }
    }

    pub fn type_url(self) -> String {
        format!("{TYPE_PREFIX}{}", self.full_name())
    }

    /// `lds`, `rds`, `cds`, `eds`.
    pub fn short(self) -> &'static str {
        match self {
            Kind::Listener => "lds",
            Kind::RouteConfiguration => "rds",
            Kind::Cluster => "cds",
            Kind::ClusterLoadAssignment => "eds",
            Kind::Secret => "sds",
        }
    }

    pub fn from_type_url(url: &str) -> Option<Kind> {
        let name = url.rsplit('/').next().unwrap_or(url);
        ALL_KINDS.into_iter().find(|k| k.full_name() == name)
    }

    /// LDS and CDS are wildcard subscriptions whose responses are complete.
    fn is_wildcard(self) -> bool {
        matches!(self, Kind::Listener | Kind::Cluster)
    }
}

/// What a response or a timer did to one type (drives the stats).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Accepted; the xxHash64 of `version_info` (Envoy's `version` gauge).
    Accepted { kind: Kind, version_info: String },
    /// NACKed with this detail.
    Rejected { kind: Kind, detail: String },
    /// The initial fetch did not complete in time.
    InitFetchTimeout { kind: Kind },
    /// Envoy's per-resource update stats: an RDS / EDS response counted
    /// for each route configuration / EDS cluster subscribed when it
    /// arrived, under `http.<stat_prefix>.rds.<route_config_name>` /
    /// `cluster.<cluster_name>`.
    ResourceUpdate { scope: String, accepted: bool },
    /// Envoy's per-resource `update_empty`: an accepted state-of-the-world
    /// RDS / EDS response that did not carry this subscribed resource (the
    /// previous one stays, as in Envoy).
    ResourceEmpty { scope: String },
    /// Envoy's per-resource `version` gauge: the resource arrived in an
    /// accepted response with this `version_info` (`system_version_info`
    /// in delta xDS).
    ResourceVersion { scope: String, version_info: String },
}

/// What the driver must do after one delta input.
#[derive(Debug, Default)]
pub struct DeltaStep {
    pub requests: Vec<DeltaDiscoveryRequest>,
    pub publish: Option<Arc<model::Config>>,
    pub events: Vec<Event>,
}

/// Everything the driver must do after one input.
#[derive(Debug, Default)]
pub struct Step {
    pub requests: Vec<DiscoveryRequest>,
    pub publish: Option<Arc<model::Config>>,
    pub events: Vec<Event>,
}

/// The names a dependent type (RDS / EDS) subscribes to changed.
struct NamesChanged {
    kind: Kind,
    added: Vec<String>,
    removed: Vec<String>,
}

/// One response's resources of one type, applied to that type's map.
struct Batch<'a> {
    kind: Kind,
    incoming: &'a [(&'a Any, Option<&'a str>)],
    removed: &'a [String],
    /// The set replaces the type's resources (state-of-the-world LDS / CDS).
    complete: bool,
    version_info: &'a str,
    subscribed: &'a BTreeSet<String>,
    stamp: String,
}

impl Batch<'_> {
    /// Decodes every resource into a copy of `map` and stores the copy;
    /// problems go to `errors` (the caller restores the previous resources
    /// when there are any), the names seen to `names`.
    fn apply<T: Message + Default + Clone>(
        &self,
        map: &mut BTreeMap<String, Accepted<T>>,
        names: &mut BTreeSet<String>,
        errors: &mut Vec<String>,
    ) {
        let kind = self.kind;
        let mut next = if self.complete { BTreeMap::new() } else { map.clone() };
        for name in self.removed {
            next.remove(name);
        }
        for (any, resource_version) in self.incoming {
            let version = resource_version.unwrap_or(self.version_info).to_string();
            if Kind::from_type_url(&any.type_url) != Some(kind) {
                errors.push(format!("resource of type {} in a {} response", any.type_url, kind.type_url()));
                continue;
            }
            let res = match dynamic::decode::<T>(kind.full_name(), &any.value) {
                Ok(res) => res,
                Err(e) => {
                    errors.extend(e.iter().map(|e| e.to_string()));
                    continue;
                }
            };
            if !names.insert(res.name.clone()) {
                errors.push(format!("duplicate resource name {:?} in one response", res.name));
                continue;
            }
            if !kind.is_wildcard() && !self.subscribed.contains(&res.name) {
                continue; // not (or no longer) subscribed: ignored, as Envoy does
            }
            let acc = match map.get(&res.name) {
                Some(o) if o.resource.bytes == res.bytes => Accepted {
                    resource: o.resource.clone(),
                    version_info: version,
                    last_updated: o.last_updated.clone(),
                },
                _ => Accepted { resource: Arc::new(res), version_info: version, last_updated: self.stamp.clone() },
            };
            next.insert(acc.resource.name.clone(), acc);
        }
        *map = next;
    }
}

#[derive(Debug, Default)]
struct Subscription {
    enabled: bool,
    /// Named types: the names subscribed (as last requested).
    names: BTreeSet<String>,
    /// Last accepted `version_info`.
    version_info: String,
    /// Last received nonce on the current stream.
    nonce: String,
    /// Initial fetch: when it gives up (wildcard types), or per name.
    initial_deadline: Option<Instant>,
    name_deadlines: HashMap<String, Instant>,
    received: bool,
}

pub struct AdsState {
    base: Arc<model::Config>,
    node: Node,
    subs: BTreeMap<Kind, Subscription>,
    resources: DynamicResources,
    cache: TranslationCache,
    /// Per stream (named by the first kind it carries): the node was sent.
    node_sent: BTreeSet<Kind>,
    /// Which stream carries each kind (all one ADS stream by default).
    stream_of: BTreeMap<Kind, Kind>,
    published: u64,
    lds_timeout: Option<Duration>,
    cds_timeout: Option<Duration>,
    /// The resource names the last applied response carried.
    last_delivered: BTreeSet<String>,
}

impl AdsState {
    /// `base` is the static config the bootstrap produced (its `xds` says
    /// which types are wanted); `node` is sent on each stream's first request.
    pub fn new(base: Arc<model::Config>, node: Node, now: Instant) -> AdsState {
        let xds = base.xds.clone();
        let lds = xds.as_ref().and_then(|x| x.lds.clone());
        let cds = xds.as_ref().and_then(|x| x.cds.clone());
        let mut subs = BTreeMap::new();
        for k in ALL_KINDS {
            subs.insert(k, Subscription::default());
        }
        let lds_timeout = lds.as_ref().and_then(|s| s.initial_fetch_timeout);
        let cds_timeout = cds.as_ref().and_then(|s| s.initial_fetch_timeout);
        if let Some(s) = &lds {
            let sub = subs.get_mut(&Kind::Listener).unwrap();
            sub.enabled = true;
            sub.initial_deadline = s.initial_fetch_timeout.map(|t| now + t);
        }
        if let Some(s) = &cds {
            let sub = subs.get_mut(&Kind::Cluster).unwrap();
            sub.enabled = true;
            sub.initial_deadline = s.initial_fetch_timeout.map(|t| now + t);
        }
        AdsState {
            base,
            node,
            subs,
            resources: DynamicResources::default(),
            cache: TranslationCache::default(),
            node_sent: BTreeSet::new(),
            stream_of: BTreeMap::new(),
            published: 0,
            lds_timeout,
            cds_timeout,
            last_delivered: BTreeSet::new(),
        }
    }

    /// A new ADS stream: the first request of each active subscription, CDS
    /// first (clusters before the listeners that route to them).
    pub fn stream_started(&mut self) -> Vec<DiscoveryRequest> {
        self.stream_started_for(&ALL_KINDS)
    }

    /// A new stream carrying `kinds` (all of them for ADS, one for a
    /// per-type service such as `ListenerDiscoveryService`): the node goes
    /// on its first request, nonces of the previous stream are forgotten.
    pub fn stream_started_for(&mut self, kinds: &[Kind]) -> Vec<DiscoveryRequest> {
        let active = self.reset_stream(kinds);
        active.into_iter().map(|k| self.request(k, None)).collect()
    }

    /// Marks `kinds` as one stream (see [`Self::stream_started_for`]) and
    /// returns those with something to ask for, in subscription order.
    fn reset_stream(&mut self, kinds: &[Kind]) -> Vec<Kind> {
        let Some(&first) = kinds.iter().min() else { return Vec::new() };
        self.node_sent.remove(&first);
        for &k in kinds {
            self.stream_of.insert(k, first);
            self.subs.get_mut(&k).unwrap().nonce.clear();
        }
        ALL_KINDS
            .into_iter()
            .filter(|k| kinds.contains(k))
            .filter(|k| {
                let s = &self.subs[k];
                s.enabled && (k.is_wildcard() || !s.names.is_empty())
            })
            .collect()
    }

    /// Takes the node for a request of `kind` when it is the first request
    /// of its stream.
    fn node_for(&mut self, kind: Kind) -> Option<Node> {
        let stream = self.stream_of.get(&kind).copied().unwrap_or(Kind::Cluster);
        self.node_sent.insert(stream).then(|| self.node.clone())
    }

    /// The earliest time `on_tick` has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.subs
            .values()
            .filter(|s| !s.received)
            .filter_map(|s| s.initial_deadline)
            .chain(self.subs.values().flat_map(|s| s.name_deadlines.values().copied()))
            .min()
    }

    /// Initial fetch timeouts: count them, and let what waits for an RDS /
    /// EDS resource that never came go live without it (Envoy's init
    /// manager does the same).
    pub fn on_tick(&mut self, now: Instant) -> Step {
        let mut step = Step::default();
        let mut rebuild = false;
        for k in ALL_KINDS {
            let s = self.subs.get_mut(&k).unwrap();
            if !s.received && s.initial_deadline.is_some_and(|d| d <= now) {
                s.initial_deadline = None;
                step.events.push(Event::InitFetchTimeout { kind: k });
            }
            let expired: Vec<String> =
                s.name_deadlines.iter().filter(|(_, d)| **d <= now).map(|(n, _)| n.clone()).collect();
            if !expired.is_empty() {
                step.events.push(Event::InitFetchTimeout { kind: k });
            }
            for n in expired {
                s.name_deadlines.remove(&n);
                let given_up = match k {
                    Kind::RouteConfiguration => &mut self.resources.rds_given_up,
                    Kind::ClusterLoadAssignment => &mut self.resources.eds_given_up,
                    _ => continue,
                };
                given_up.insert(n);
                rebuild = true;
            }
        }
        if rebuild {
            if let Ok((cfg, _)) = dynamic::build(&self.base, &self.resources, &mut self.cache) {
                step.publish = Some(self.stamp(cfg));
            }
        }
        step
    }

    pub fn on_response(&mut self, response: DiscoveryResponse, now: Instant) -> Step {
        let mut step = Step::default();
        let Some(kind) = Kind::from_type_url(&response.type_url) else {
            // Not a type meshgate subscribes to: NACK it on its own type URL.
            let detail = format!("meshgate does not subscribe to {}", response.type_url);
            step.requests.push(DiscoveryRequest {
                type_url: response.type_url.clone(),
                response_nonce: response.nonce.clone(),
                error_detail: Some(Status { code: INVALID_ARGUMENT, message: detail, details: vec![] }),
                ..Default::default()
            });
            return step;
        };
        self.subs.get_mut(&kind).unwrap().nonce = response.nonce.clone();
        let scopes = self.resource_scopes_by_name(kind);
        let previous = self.resources.clone();
        let result = self.apply(kind, &response);
        let accepted = result.is_ok();
        step.events.extend(scopes.iter().map(|(_, scope)| Event::ResourceUpdate { scope: scope.clone(), accepted }));
        if accepted {
            for (name, scope) in scopes {
                step.events.push(if self.last_delivered.contains(&name) {
                    Event::ResourceVersion { scope, version_info: response.version_info.clone() }
                } else {
                    Event::ResourceEmpty { scope }
                });
            }
        }
        match result {
            Ok(cfg) => {
                let (publish, follow_up) = self.accepted(kind, &response.version_info, cfg, now, &mut step.events);
                step.publish = Some(publish);
                // Follow-ups first: new RDS / EDS / SDS names, then the ACK.
                for NamesChanged { kind: d, .. } in follow_up {
                    step.requests.push(self.request(d, None));
                }
                step.requests.push(self.request(kind, None));
            }
            Err(detail) => {
                self.resources = previous;
                step.events.push(Event::Rejected { kind, detail: detail.clone() });
                step.requests.push(self.request(kind, Some(detail)));
            }
        }
        step
    }

    /// After a response of `kind` was accepted (its resources already in
    /// place): records the version, and re-derives the names the dependent
    /// type (RDS for LDS, EDS for CDS) must subscribe to.  Returns the config
    /// to publish and, when those names changed, what changed.
    fn accepted(
        &mut self,
        kind: Kind,
        version_info: &str,
        cfg: model::Config,
        now: Instant,
        events: &mut Vec<Event>,
    ) -> (Arc<model::Config>, Vec<NamesChanged>) {
        let s = self.subs.get_mut(&kind).unwrap();
        s.version_info = version_info.to_string();
        s.received = true;
        events.push(Event::Accepted { kind, version_info: version_info.to_string() });
        let mut publish = self.stamp(cfg);
        let dependents: &[Kind] = match kind {
            Kind::Listener => &[Kind::RouteConfiguration, Kind::Secret],
            Kind::Cluster => &[Kind::ClusterLoadAssignment, Kind::Secret],
            _ => return (publish, Vec::new()),
        };
        let mut changes = Vec::new();
        for &dependent in dependents {
            let before = self.subs[&dependent].names.clone();
            if !self.resubscribe(dependent, now) {
                continue;
            }
            let after = &self.subs[&dependent].names;
            changes.push(NamesChanged {
                kind: dependent,
                added: after.difference(&before).cloned().collect(),
                removed: before.difference(after).cloned().collect(),
            });
        }
        // Dropping names may have removed resources.
        if !changes.is_empty() {
            if let Ok((cfg, _)) = dynamic::build(&self.base, &self.resources, &mut self.cache) {
                publish = self.stamp(cfg);
            }
        }
        (publish, changes)
    }

    /// Incremental (delta) xDS: the first request of each active type on a
    /// new stream — wildcard types subscribe with no names (the protocol's
    /// legacy wildcard, which every server understands), named types with
    /// their names; `initial_resource_versions` lists what the client holds
    /// so the server sends only what changed.
    pub fn delta_stream_started(&mut self) -> Vec<DeltaDiscoveryRequest> {
        self.delta_stream_started_for(&ALL_KINDS)
    }

    /// [`Self::delta_stream_started`] for a stream carrying only `kinds`.
    pub fn delta_stream_started_for(&mut self, kinds: &[Kind]) -> Vec<DeltaDiscoveryRequest> {
        self.reset_stream(kinds)
            .into_iter()
            .map(|k| {
                let names = if k.is_wildcard() { Vec::new() } else { self.subs[&k].names.iter().cloned().collect() };
                let mut r = self.delta_request(k, names, Vec::new(), None);
                r.initial_resource_versions = self.held_versions(k);
                r
            })
            .collect()
    }

    fn held_versions(&self, kind: Kind) -> HashMap<String, String> {
        fn versions<T>(m: &BTreeMap<String, Accepted<T>>) -> HashMap<String, String> {
            m.iter().map(|(n, a)| (n.clone(), a.version_info.clone())).collect()
        }
        let r = &self.resources;
        match kind {
            Kind::Listener => versions(&r.listeners),
            Kind::RouteConfiguration => versions(&r.routes),
            Kind::Cluster => versions(&r.clusters),
            Kind::ClusterLoadAssignment => versions(&r.endpoints),
            Kind::Secret => versions(&r.secrets),
        }
    }

    /// A `DeltaDiscoveryResponse`: resources upserted with their own
    /// versions, `removed_resources` removed; ACK / NACK by nonce.
    pub fn on_delta_response(&mut self, response: DeltaDiscoveryResponse, now: Instant) -> DeltaStep {
        let mut step = DeltaStep::default();
        let Some(kind) = Kind::from_type_url(&response.type_url) else {
            let detail = format!("meshgate does not subscribe to {}", response.type_url);
            step.requests.push(DeltaDiscoveryRequest {
                type_url: response.type_url.clone(),
                response_nonce: response.nonce.clone(),
                error_detail: Some(Status { code: INVALID_ARGUMENT, message: detail, details: vec![] }),
                ..Default::default()
            });
            return step;
        };
        self.subs.get_mut(&kind).unwrap().nonce = response.nonce.clone();
        let previous = self.resources.clone();
        let incoming: Vec<(&Any, Option<&str>)> = response
            .resources
            .iter()
            .filter_map(|r| r.resource.as_ref().map(|a| (a, Some(r.version.as_str()))))
            .collect();
        let scopes = self.resource_scopes_by_name(kind);
        let result =
            self.apply_resources(kind, &incoming, &response.removed_resources, false, &response.system_version_info);
        let accepted = result.is_ok();
        step.events.extend(scopes.iter().map(|(_, scope)| Event::ResourceUpdate { scope: scope.clone(), accepted }));
        if accepted {
            // Delta responses carry only what changed: no update_empty.
            for (_, scope) in scopes.into_iter().filter(|(n, _)| self.last_delivered.contains(n)) {
                step.events.push(Event::ResourceVersion { scope, version_info: response.system_version_info.clone() });
            }
        }
        match result {
            Ok(cfg) => {
                let (publish, follow_up) =
                    self.accepted(kind, &response.system_version_info, cfg, now, &mut step.events);
                step.publish = Some(publish);
                for c in follow_up {
                    step.requests.push(self.delta_request(c.kind, c.added, c.removed, None));
                }
                step.requests.push(self.delta_request(kind, Vec::new(), Vec::new(), None));
            }
            Err(detail) => {
                self.resources = previous;
                step.events.push(Event::Rejected { kind, detail: detail.clone() });
                step.requests.push(self.delta_request(kind, Vec::new(), Vec::new(), Some(detail)));
            }
        }
        step
    }

    fn delta_request(
        &mut self,
        kind: Kind,
        subscribe: Vec<String>,
        unsubscribe: Vec<String>,
        nack: Option<String>,
    ) -> DeltaDiscoveryRequest {
        let node = self.node_for(kind);
        DeltaDiscoveryRequest {
            node,
            type_url: kind.type_url(),
            // A nonce marks an ACK / NACK; a subscription change carries none.
            response_nonce: if subscribe.is_empty() && unsubscribe.is_empty() {
                self.subs[&kind].nonce.clone()
            } else {
                String::new()
            },
            resource_names_subscribe: subscribe,
            resource_names_unsubscribe: unsubscribe,
            error_detail: nack.map(|message| Status { code: INVALID_ARGUMENT, message, details: vec![] }),
            ..Default::default()
        }
    }

    fn stamp(&mut self, mut cfg: model::Config) -> Arc<model::Config> {
        self.published += 1;
        cfg.version = self.base.version + self.published;
        Arc::new(cfg)
    }

    /// Decodes the response into the tentative resource set and builds the
    /// whole config; the error string is the NACK detail.
    fn apply(&mut self, kind: Kind, r: &DiscoveryResponse) -> Result<model::Config, String> {
        let incoming: Vec<(&Any, Option<&str>)> = r.resources.iter().map(|a| (a, None)).collect();
        self.apply_resources(kind, &incoming, &[], kind.is_wildcard(), &r.version_info)
    }

    /// Applies received resources (with their own version in delta xDS,
    /// else the response's) and removals; `complete` when the set replaces
    /// the type's resources (state-of-the-world LDS / CDS).
    fn apply_resources(
        &mut self,
        kind: Kind,
        incoming: &[(&Any, Option<&str>)],
        removed: &[String],
        complete: bool,
        version_info: &str,
    ) -> Result<model::Config, String> {
        let batch = Batch {
            kind,
            incoming,
            removed,
            complete,
            version_info,
            subscribed: &self.subs[&kind].names,
            stamp: control::bootstrap::now_rfc3339(),
        };
        let mut errors: Vec<String> = Vec::new();
        let mut names = BTreeSet::new();
        let r = &mut self.resources;
        match kind {
            Kind::Listener => batch.apply(&mut r.listeners, &mut names, &mut errors),
            Kind::RouteConfiguration => batch.apply(&mut r.routes, &mut names, &mut errors),
            Kind::Cluster => batch.apply(&mut r.clusters, &mut names, &mut errors),
            Kind::ClusterLoadAssignment => batch.apply(&mut r.endpoints, &mut names, &mut errors),
            Kind::Secret => batch.apply(&mut r.secrets, &mut names, &mut errors),
        }
        if !errors.is_empty() {
            return Err(errors.join("\n"));
        }
        match kind {
            Kind::RouteConfiguration => self.resources.rds_given_up.retain(|n| !names.contains(n)),
            Kind::ClusterLoadAssignment => self.resources.eds_given_up.retain(|n| !names.contains(n)),
            _ => {}
        }
        let s = self.subs.get_mut(&kind).unwrap();
        for n in &names {
            s.name_deadlines.remove(n);
        }
        self.last_delivered = names;
        dynamic::build(&self.base, &self.resources, &mut self.cache)
            .map(|(cfg, _)| cfg)
            .map_err(|e| e.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))
    }

    /// Recomputes the names `kind` (RDS / EDS) must subscribe to from the
    /// accepted listeners / clusters; true when they changed.
    fn resubscribe(&mut self, kind: Kind, now: Instant) -> bool {
        let wanted: BTreeSet<String> = match kind {
            Kind::RouteConfiguration => {
                self.resources.listeners.values().flat_map(|l| dynamic::rds_names(&l.resource.message)).collect()
            }
            Kind::ClusterLoadAssignment => {
                self.resources.clusters.values().filter_map(|c| dynamic::eds_name(&c.resource.message)).collect()
            }
            Kind::Secret => self.secret_timeouts().into_keys().collect(),
            _ => return false,
        };
        let secret_timeouts = self.secret_timeouts();
        let (lds_timeout, cds_timeout) = (self.lds_timeout, self.cds_timeout);
        let timeout = |n: &str| match kind {
            Kind::RouteConfiguration => lds_timeout,
            Kind::Secret => secret_timeouts.get(n).copied().flatten(),
            _ => cds_timeout,
        };
        let s = self.subs.get_mut(&kind).unwrap();
        if s.names == wanted {
            return false;
        }
        for n in wanted.difference(&s.names) {
            let have = match kind {
                Kind::RouteConfiguration => self.resources.routes.contains_key(n),
                Kind::Secret => self.resources.secrets.contains_key(n),
                _ => self.resources.endpoints.contains_key(n),
            };
            if let (Some(t), false) = (timeout(n), have) {
                s.name_deadlines.insert(n.clone(), now + t);
            }
        }
        s.name_deadlines.retain(|n, _| wanted.contains(n));
        s.enabled = true;
        s.names = wanted.clone();
        match kind {
            Kind::RouteConfiguration => {
                self.resources.routes.retain(|n, _| wanted.contains(n));
                self.resources.rds_given_up.retain(|n| wanted.contains(n));
            }
            Kind::Secret => self.resources.secrets.retain(|n, _| wanted.contains(n)),
            _ => {
                self.resources.endpoints.retain(|n, _| wanted.contains(n));
                self.resources.eds_given_up.retain(|n| wanted.contains(n));
            }
        }
        true
    }

    /// The secrets the accepted listeners and clusters request over ADS,
    /// with their `initial_fetch_timeout`.
    fn secret_timeouts(&self) -> BTreeMap<String, Option<Duration>> {
        let listeners = self.resources.listeners.values().map(|l| dynamic::listener_tls_contexts(&l.resource.message));
        let clusters = self.resources.clusters.values().map(|c| dynamic::cluster_tls_contexts(&c.resource.message));
        listeners.chain(clusters).flat_map(|contexts| dynamic::ads_secret_refs(&contexts)).collect()
    }

    fn request(&mut self, kind: Kind, nack: Option<String>) -> DiscoveryRequest {
        let node = self.node_for(kind);
        let s = &self.subs[&kind];
        DiscoveryRequest {
            version_info: s.version_info.clone(),
            node,
            resource_names: if kind.is_wildcard() { Vec::new() } else { s.names.iter().cloned().collect() },
            type_url: kind.type_url(),
            response_nonce: s.nonce.clone(),
            error_detail: nack.map(|message| Status { code: INVALID_ARGUMENT, message, details: vec![] }),
            ..Default::default()
        }
    }

    /// Per-resource stat scopes of the names `kind` is subscribed to (RDS:
    /// `http.<stat_prefix>.rds.<name>` per HCM naming it; EDS:
    /// `cluster.<name>` per cluster using the assignment); none for LDS / CDS.
    pub fn resource_scopes(&self, kind: Kind) -> Vec<String> {
        self.resource_scopes_by_name(kind).into_iter().map(|(_, scope)| scope).collect()
    }

    /// [`Self::resource_scopes`] with the RDS / EDS resource name each
    /// scope counts for, sorted by scope.
    fn resource_scopes_by_name(&self, kind: Kind) -> Vec<(String, String)> {
        let names = &self.subs[&kind].names;
        let mut out: Vec<(String, String)> = match kind {
            Kind::RouteConfiguration => self
                .resources
                .listeners
                .values()
                .flat_map(|l| dynamic::rds_stat_scopes(&l.resource.message))
                .filter(|(name, _)| names.contains(name))
                .map(|(name, prefix)| (name.clone(), format!("http.{prefix}.rds.{name}")))
                .collect(),
            Kind::ClusterLoadAssignment => self
                .resources
                .clusters
                .values()
                .filter_map(|c| {
                    dynamic::eds_name(&c.resource.message)
                        .filter(|n| names.contains(n))
                        .map(|n| (n, format!("cluster.{}", c.resource.name)))
                })
                .collect(),
            _ => Vec::new(),
        };
        out.sort_by(|a, b| a.1.cmp(&b.1));
        out.dedup_by(|a, b| a.1 == b.1);
        out
    }

    /// The last accepted `version_info` of a type (tests, admin).
    pub fn version_info(&self, kind: Kind) -> &str {
        &self.subs[&kind].version_info
    }
}

/// `Node` from the bootstrap's canonical JSON (`node`), with meshgate's
/// `user_agent_name` / `user_agent_version` as Envoy fills in its own.
pub fn node_from_bootstrap(bootstrap_json: &serde_json::Value) -> Node {
    let mut node = bootstrap_json
        .get("node")
        .and_then(|n| control::bootstrap::dynamic::encode_json("envoy.config.core.v3.Node", n).ok())
        .and_then(|b| Node::decode(b.as_slice()).ok())
        .unwrap_or_default();
    node.user_agent_name = "meshgate".to_string();
    node.user_agent_version_type =
        Some(envoy_types::pb::envoy::config::core::v3::node::UserAgentVersionType::UserAgentVersion(
            env!("CARGO_PKG_VERSION").to_string(),
        ));
    node
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::Any;
    use serde_json::json;

    const HCM: &str = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

    fn base() -> Arc<model::Config> {
        let text = r#"
node: { id: n1, cluster: c1 }
dynamic_resources:
  ads_config: { api_type: GRPC, transport_api_version: V3, grpc_services: [{ envoy_grpc: { cluster_name: xds }}] }
  lds_config: { ads: {}, resource_api_version: V3, initial_fetch_timeout: 5s }
  cds_config: { ads: {}, resource_api_version: V3, initial_fetch_timeout: 5s }
static_resources:
  clusters:
  - name: xds
    http2_protocol_options: {}
    load_assignment:
      cluster_name: xds
      endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 18000 }}}}]}]
"#;
        Arc::new(control::bootstrap::load_str(text, control::bootstrap::Format::Yaml, "b.yaml").unwrap())
    }

    fn any(kind: Kind, v: serde_json::Value) -> Any {
        Any { type_url: kind.type_url(), value: dynamic::encode_json(kind.full_name(), &v).unwrap() }
    }

    fn response(kind: Kind, version: &str, nonce: &str, resources: Vec<serde_json::Value>) -> DiscoveryResponse {
        DiscoveryResponse {
            version_info: version.into(),
            nonce: nonce.into(),
            type_url: kind.type_url(),
            resources: resources.into_iter().map(|r| any(kind, r)).collect(),
            ..Default::default()
        }
    }

    fn listener(name: &str, port: u16, rds: &str) -> serde_json::Value {
        json!({"name": name, "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
          "filter_chains": [{"filters": [{"name": "hcm", "typed_config": {
            "@type": format!("type.googleapis.com/{HCM}"), "stat_prefix": "in",
            "rds": {"route_config_name": rds, "config_source": {"ads": {}}},
            "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}]})
    }

    fn route(name: &str, cluster: &str) -> serde_json::Value {
        json!({"name": name, "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}]}]})
    }

    fn eds_cluster(name: &str) -> serde_json::Value {
        json!({"name": name, "type": "EDS", "eds_cluster_config": {"eds_config": {"ads": {}}}})
    }

    fn cla(name: &str, ports: &[u16]) -> serde_json::Value {
        let eps: Vec<_> = ports
            .iter()
            .map(|p| json!({"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}}))
            .collect();
        json!({"cluster_name": name, "endpoints": [{"lb_endpoints": eps}]})
    }

    fn summary(r: &DiscoveryRequest) -> (Kind, String, String, Vec<String>, bool, bool) {
        (
            Kind::from_type_url(&r.type_url).unwrap(),
            r.version_info.clone(),
            r.response_nonce.clone(),
            r.resource_names.clone(),
            r.node.is_some(),
            r.error_detail.is_some(),
        )
    }

    fn new_state(t0: Instant) -> AdsState {
        AdsState::new(base(), node_from_bootstrap(&base().bootstrap_json), t0)
    }

    /// Two self-signed CA certificates (public; their keys were discarded).
    const CA_A: &str = "-----BEGIN CERTIFICATE-----\nMIIBhzCCAS2gAwIBAgIUGLdo7RTj9dKYl3kq8vANSkWgCMkwCgYIKoZIzj0EAwIw\nGDEWMBQGA1UEAwwNc2RzLXRlc3QtY2EtYTAgFw0yNjExMjYwODIyMDlaGA8yMTI2\nMTEwMjA4MjIwOVowGDEWMBQGA1UEAwwNc2RzLXRlc3QtY2EtYTBZMBMGByqGSM49\nAgEGCCqGSM49AwEHA0IABA4BWDoKdSZMn9AxBU8VH5ozwsqRa48QMfgoOdR4q5tl\nPk3+pEJnL1eFA09aVE3n8BmezU7xO2quFZ+Uy8joyMCjUzBRMB0GA1UdDgQWBBRP\nSCdBLkA/LJpCOtG9s5Hp5uid1jAfBgNVHSMEGDAWgBRPSCdBLkA/LJpCOtG9s5Hp\n5uid1jAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0gAMEUCIDtCFK4I6Ie7\nczc4xhPBkUyhwMJ/nldqcDumoLK8SqwRAiEA6LWGy1DkpWA2Avi57eoSgfgA3rFD\noCZcINftP9v3gWo=\n-----END CERTIFICATE-----\n";
    const CA_B: &str = "-----BEGIN CERTIFICATE-----\nMIIBhzCCAS2gAwIBAgIUa0fLKoW6zjQEdS3DQOyggL/134MwCgYIKoZIzj0EAwIw\nGDEWMBQGA1UEAwwNc2RzLXRlc3QtY2EtYjAgFw0yNjExMjYwODIyMDlaGA8yMTI2\nMTEwMjA4MjIwOVowGDEWMBQGA1UEAwwNc2RzLXRlc3QtY2EtYjBZMBMGByqGSM49\nAgEGCCqGSM49AwEHA0IABJ29LaI7wNi0BVO4qAOg5cjRUHg9inuK7GHHsdp4d5ks\nmVoYIZOBWljRV/5keyDN39YdvbqPurmaq0Edx4bwQ+OjUzBRMB0GA1UdDgQWBBTe\nv9XVEJ24JLaYT8Z6qq5xW4aJljAfBgNVHSMEGDAWgBTev9XVEJ24JLaYT8Z6qq5x\nW4aJljAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0gAMEUCIQCowMmOiX+p\nRe8qEHy2gHr8A5gjCRgBpAFEtuozdGbE9QIgZnCweDZI03vTZBRreWSYTVRtSXTo\nt4qnwanlOLT+m6Q=\n-----END CERTIFICATE-----\n";

    fn tls_cluster_with_ads_ca(name: &str) -> serde_json::Value {
        json!({"name": name, "type": "STATIC", "load_assignment": {"cluster_name": name, "endpoints": []},
          "transport_socket": {"name": "tls", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "common_tls_context": {"validation_context_sds_secret_config": {"name": "mesh_ca", "sds_config": {"ads": {}, "initial_fetch_timeout": "3s"}}}}}})
    }

    fn ca_secret(pem: &str) -> serde_json::Value {
        json!({"name": "mesh_ca", "validation_context": {"trusted_ca": {"inline_string": pem}}})
    }

    #[test]
    fn sds_secrets_are_subscribed_by_name_and_the_cluster_warms_until_its_secret_arrives() {
        let t0 = Instant::now();
        let mut s = new_state(t0);
        s.stream_started();
        let step = s.on_response(response(Kind::Cluster, "c1", "n1", vec![tls_cluster_with_ads_ca("secure")]), t0);
        let reqs: Vec<_> = step.requests.iter().map(summary).collect();
        assert_eq!(
            reqs,
            vec![
                (Kind::Secret, "".into(), "".into(), vec!["mesh_ca".into()], false, false),
                (Kind::Cluster, "c1".into(), "n1".into(), vec![], false, false),
            ]
        );
        // Warming: not in the published config yet.
        assert!(!step.publish.unwrap().clusters.contains_key("secure"));
        // The per-secret initial_fetch_timeout (3 s) counts, the cluster keeps waiting.
        assert_eq!(s.next_deadline(), Some(t0 + Duration::from_secs(3)));
        let step = s.on_tick(t0 + Duration::from_secs(3));
        assert_eq!(step.events, vec![Event::InitFetchTimeout { kind: Kind::Secret }]);
        assert!(step.publish.is_none());

        // A secret that is not a supported kind is NACKed with its name.
        let bad = json!({"name": "mesh_ca", "validation_context": {"trusted_ca": {"inline_string": "not PEM"}}});
        let step = s.on_response(response(Kind::Secret, "s1", "n2", vec![bad]), t0);
        let nack = &step.requests[0];
        assert_eq!(summary(nack).0, Kind::Secret);
        let detail = &nack.error_detail.as_ref().unwrap().message;
        assert!(detail.contains("Secret \"mesh_ca\"") && detail.contains("trusted_ca"), "{detail}");

        // The secret arrives: the cluster goes live with it.
        let step = s.on_response(response(Kind::Secret, "s2", "n3", vec![ca_secret(CA_A)]), t0);
        assert!(step.requests.iter().all(|r| r.error_detail.is_none()));
        let cfg = step.publish.unwrap();
        let tls = cfg.clusters["secure"].tls.clone().unwrap();
        let ca = tls.validation.as_ref().unwrap().trusted_ca.clone();
        assert_eq!(ca, model::TlsSource::Inline(CA_A.as_bytes().to_vec()));

        // Rotation: a new secret version is a new cluster config.
        let step = s.on_response(response(Kind::Secret, "s3", "n4", vec![ca_secret(CA_B)]), t0);
        let cfg = step.publish.unwrap();
        let ca = cfg.clusters["secure"].tls.as_ref().unwrap().validation.as_ref().unwrap().trusted_ca.clone();
        assert_eq!(ca, model::TlsSource::Inline(CA_B.as_bytes().to_vec()));

        // The cluster goes away: the secret is unsubscribed.
        let step = s.on_response(response(Kind::Cluster, "c2", "n5", vec![]), t0);
        let reqs: Vec<_> = step.requests.iter().map(summary).collect();
        assert_eq!(reqs[0], (Kind::Secret, "s3".into(), "n4".into(), vec![], false, false));
    }

    #[test]
    fn first_requests_are_wildcard_cds_then_lds_with_node_once() {
        let mut s = new_state(Instant::now());
        let reqs: Vec<_> = s.stream_started().iter().map(summary).collect();
        assert_eq!(
            reqs,
            vec![
                (Kind::Cluster, "".into(), "".into(), vec![], true, false),
                (Kind::Listener, "".into(), "".into(), vec![], false, false),
            ]
        );
        let first = s.stream_started();
        assert_eq!(first[0].node.as_ref().unwrap().id, "n1");
        assert_eq!(first[0].node.as_ref().unwrap().user_agent_name, "meshgate");
    }

    #[test]
    fn cds_then_eds_warming_then_ack() {
        let t0 = Instant::now();
        let mut s = new_state(t0);
        s.stream_started();
        let step = s.on_response(response(Kind::Cluster, "c1", "n1", vec![eds_cluster("backend")]), t0);
        let reqs: Vec<_> = step.requests.iter().map(summary).collect();
        assert_eq!(
            reqs,
            vec![
                (Kind::ClusterLoadAssignment, "".into(), "".into(), vec!["backend".into()], false, false),
                (Kind::Cluster, "c1".into(), "n1".into(), vec![], false, false),
            ]
        );
        // Warming: not in the published config yet.
        assert!(!step.publish.unwrap().clusters.contains_key("backend"));
        let step =
            s.on_response(response(Kind::ClusterLoadAssignment, "e1", "n2", vec![cla("backend", &[9001, 9002])]), t0);
        let reqs: Vec<_> = step.requests.iter().map(summary).collect();
        assert_eq!(
            reqs,
            vec![(Kind::ClusterLoadAssignment, "e1".into(), "n2".into(), vec!["backend".into()], false, false)]
        );
        let cfg = step.publish.unwrap();
        assert_eq!(cfg.clusters["backend"].endpoints.len(), 2);
        assert!(cfg.clusters.contains_key("xds"), "static clusters stay");
        assert_eq!(
            step.events,
            vec![
                Event::ResourceUpdate { scope: "cluster.backend".into(), accepted: true },
                Event::ResourceVersion { scope: "cluster.backend".into(), version_info: "e1".into() },
                Event::Accepted { kind: Kind::ClusterLoadAssignment, version_info: "e1".into() }
            ]
        );
        // A response without the subscribed assignment: update_empty, and
        // the previous endpoints keep serving (as in Envoy).
        let step = s.on_response(response(Kind::ClusterLoadAssignment, "e2", "n3", vec![]), t0);
        assert_eq!(
            step.events,
            vec![
                Event::ResourceUpdate { scope: "cluster.backend".into(), accepted: true },
                Event::ResourceEmpty { scope: "cluster.backend".into() },
                Event::Accepted { kind: Kind::ClusterLoadAssignment, version_info: "e2".into() }
            ]
        );
        assert_eq!(step.publish.unwrap().clusters["backend"].endpoints.len(), 2);
    }

    #[test]
    fn lds_then_rds_and_nack_keeps_the_previous_version() {
        let t0 = Instant::now();
        let mut s = new_state(t0);
        s.stream_started();
        let step = s.on_response(response(Kind::Listener, "l1", "a", vec![listener("http", 10080, "routes")]), t0);
        assert_eq!(summary(&step.requests[0]).3, vec!["routes".to_string()]);
        assert!(step.publish.unwrap().listeners.is_empty(), "the listener waits for its routes");
        let step = s.on_response(response(Kind::RouteConfiguration, "r1", "b", vec![route("routes", "backend")]), t0);
        let cfg = step.publish.unwrap();
        assert_eq!(cfg.listeners.len(), 1);
        assert_eq!(cfg.listeners[0].http.route_config.name, "routes");
        let dump = cfg.dynamic.clone().unwrap();
        assert_eq!(
            (dump.listeners[0].version_info.as_str(), dump.route_configs[0].version_info.as_str()),
            ("l1", "r1")
        );

        // An unsupported field: NACK with the accepted version and a precise detail.
        let mut bad = listener("http", 10080, "routes");
        bad["filter_chains"][0]["filters"][0]["typed_config"]["add_user_agent"] = json!(true);
        let step = s.on_response(response(Kind::Listener, "l2", "c", vec![bad]), t0);
        assert!(step.publish.is_none());
        let r = &step.requests[0];
        assert_eq!((r.version_info.as_str(), r.response_nonce.as_str()), ("l1", "c"));
        let detail = &r.error_detail.as_ref().unwrap().message;
        assert!(
            detail.starts_with(
                "Listener \"http\": filter_chains[0].filters[0].typed_config.add_user_agent: unsupported field"
            ),
            "{detail}"
        );
        assert_eq!(s.version_info(Kind::Listener), "l1");
        // A semantic error in RDS is NACKed too, and the old routes stay.
        let mut bad = route("routes", "backend");
        bad["virtual_hosts"][0]["domains"] = json!(["a.*.b"]);
        let step = s.on_response(response(Kind::RouteConfiguration, "r2", "d", vec![bad]), t0);
        assert!(step.events.contains(&Event::ResourceUpdate { scope: "http.in.rds.routes".into(), accepted: false }));
        let detail = &step.requests[0].error_detail.as_ref().unwrap().message;
        assert!(detail.starts_with("RouteConfiguration \"routes\": virtual_hosts[0].domains[0]"), "{detail}");
        assert_eq!(step.requests[0].version_info, "r1");
        // The next good update builds on the last good state.
        let step = s.on_response(response(Kind::RouteConfiguration, "r3", "e", vec![route("routes", "other")]), t0);
        assert!(step.requests[0].error_detail.is_none());
        assert_eq!(step.publish.unwrap().listeners.len(), 1);
    }

    #[test]
    fn removal_and_unsubscription() {
        let t0 = Instant::now();
        let mut s = new_state(t0);
        s.stream_started();
        s.on_response(
            response(Kind::Listener, "1", "a", vec![listener("a", 10001, "ra"), listener("b", 10002, "rb")]),
            t0,
        );
        let step =
            s.on_response(response(Kind::RouteConfiguration, "1", "b", vec![route("ra", "x"), route("rb", "x")]), t0);
        assert_eq!(step.publish.unwrap().listeners.len(), 2);
        // LDS is complete: "b" is gone, and so is the subscription to "rb".
        let step = s.on_response(response(Kind::Listener, "2", "c", vec![listener("a", 10001, "ra")]), t0);
        let reqs: Vec<_> = step.requests.iter().map(summary).collect();
        assert_eq!(reqs[0], (Kind::RouteConfiguration, "1".into(), "b".into(), vec!["ra".into()], false, false));
        let cfg = step.publish.unwrap();
        assert_eq!(cfg.listeners.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(), ["a"]);
        assert_eq!(cfg.dynamic.as_ref().unwrap().route_configs.len(), 1);
        // RDS responses are not complete: one omitting "ra" removes nothing.
        let step = s.on_response(response(Kind::RouteConfiguration, "2", "d", vec![]), t0);
        assert_eq!(step.publish.unwrap().listeners.len(), 1);
    }

    #[test]
    fn reconnect_resends_versions_and_names_with_node() {
        let t0 = Instant::now();
        let mut s = new_state(t0);
        s.stream_started();
        s.on_response(response(Kind::Cluster, "c7", "a", vec![eds_cluster("backend")]), t0);
        s.on_response(response(Kind::ClusterLoadAssignment, "e3", "b", vec![cla("backend", &[9001])]), t0);
        let reqs: Vec<_> = s.stream_started().iter().map(summary).collect();
        assert_eq!(
            reqs,
            vec![
                (Kind::Cluster, "c7".into(), "".into(), vec![], true, false),
                (Kind::ClusterLoadAssignment, "e3".into(), "".into(), vec!["backend".into()], false, false),
                (Kind::Listener, "".into(), "".into(), vec![], false, false),
            ]
        );
    }

    #[test]
    fn initial_fetch_timeout_on_a_virtual_clock() {
        let t0 = Instant::now();
        let mut s = new_state(t0);
        s.stream_started();
        assert_eq!(s.next_deadline(), Some(t0 + Duration::from_secs(5)));
        let step =
            s.on_response(response(Kind::Cluster, "1", "a", vec![eds_cluster("backend")]), t0 + Duration::from_secs(1));
        assert!(!step.publish.unwrap().clusters.contains_key("backend"));
        // LDS never answered: its timeout fires at 5 s; EDS "backend" at 1 + 5 s.
        let step = s.on_tick(t0 + Duration::from_secs(5));
        assert_eq!(step.events, vec![Event::InitFetchTimeout { kind: Kind::Listener }]);
        assert!(step.publish.is_none());
        assert_eq!(s.next_deadline(), Some(t0 + Duration::from_secs(6)));
        let step = s.on_tick(t0 + Duration::from_secs(6));
        assert_eq!(step.events, vec![Event::InitFetchTimeout { kind: Kind::ClusterLoadAssignment }]);
        let cfg = step.publish.unwrap();
        assert!(cfg.clusters["backend"].endpoints.is_empty(), "gave up waiting: live with no endpoints");
        assert_eq!(s.next_deadline(), None);
        // A late assignment still applies.
        let step = s.on_response(
            response(Kind::ClusterLoadAssignment, "1", "b", vec![cla("backend", &[9001])]),
            t0 + Duration::from_secs(9),
        );
        assert_eq!(step.publish.unwrap().clusters["backend"].endpoints.len(), 1);
    }

    #[test]
    fn wrong_type_and_duplicates_are_nacked() {
        let t0 = Instant::now();
        let mut s = new_state(t0);
        s.stream_started();
        let mut r = response(Kind::Cluster, "1", "a", vec![eds_cluster("x")]);
        r.resources.push(any(Kind::Cluster, eds_cluster("x")));
        let step = s.on_response(r, t0);
        assert!(step.requests[0].error_detail.as_ref().unwrap().message.contains("duplicate resource name \"x\""));
        let step = s.on_response(
            DiscoveryResponse {
                type_url: "type.googleapis.com/envoy.config.route.v3.ScopedRouteConfiguration".into(),
                nonce: "z".into(),
                ..Default::default()
            },
            t0,
        );
        assert!(step.requests[0].error_detail.is_some());
        assert_eq!(step.requests[0].response_nonce, "z");
    }

    fn delta(
        kind: Kind,
        sys: &str,
        nonce: &str,
        resources: Vec<(serde_json::Value, &str)>,
        removed: &[&str],
    ) -> DeltaDiscoveryResponse {
        DeltaDiscoveryResponse {
            system_version_info: sys.into(),
            nonce: nonce.into(),
            type_url: kind.type_url(),
            resources: resources
                .into_iter()
                .map(|(v, ver)| envoy_types::pb::envoy::service::discovery::v3::Resource {
                    name: v
                        .get("name")
                        .or_else(|| v.get("cluster_name"))
                        .and_then(|n| n.as_str())
                        .unwrap_or_default()
                        .into(),
                    version: ver.into(),
                    resource: Some(any(kind, v)),
                    ..Default::default()
                })
                .collect(),
            removed_resources: removed.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn delta_upserts_removes_and_resubscribes() {
        let t0 = Instant::now();
        let mut s = new_state(t0);
        let first = s.delta_stream_started();
        assert_eq!(first.len(), 2);
        assert!(first[0].node.is_some() && first[1].node.is_none());
        assert!(first[0].resource_names_subscribe.is_empty(), "legacy wildcard");
        let step = s.on_delta_response(
            delta(Kind::Cluster, "s1", "n1", vec![(eds_cluster("x"), "1"), (eds_cluster("y"), "1")], &[]),
            t0,
        );
        let sub = &step.requests[0];
        assert_eq!(
            (sub.resource_names_subscribe.clone(), sub.response_nonce.as_str()),
            (vec!["x".to_string(), "y".to_string()], "")
        );
        assert_eq!(step.requests[1].response_nonce, "n1");
        s.on_delta_response(
            delta(
                Kind::ClusterLoadAssignment,
                "s1",
                "n2",
                vec![(cla("x", &[9001]), "7"), (cla("y", &[9002]), "7")],
                &[],
            ),
            t0,
        );
        // Delta responses are not complete: upserting x keeps y; removing y drops it and unsubscribes.
        let step = s.on_delta_response(delta(Kind::Cluster, "s2", "n3", vec![(eds_cluster("x"), "2")], &["y"]), t0);
        assert_eq!(step.requests[0].resource_names_unsubscribe, vec!["y".to_string()]);
        let cfg = step.publish.unwrap();
        assert!(cfg.clusters.contains_key("x") && !cfg.clusters.contains_key("y"));
        assert_eq!(cfg.dynamic.as_ref().unwrap().clusters[0].version_info, "2", "per-resource version");
        // NACK: error detail, nothing changes.
        let mut bad = eds_cluster("z");
        bad["lb_subset_config"] = json!({});
        let step = s.on_delta_response(delta(Kind::Cluster, "s3", "n4", vec![(bad, "3")], &["x"]), t0);
        assert!(step.publish.is_none());
        let nack = &step.requests[0];
        assert_eq!(nack.response_nonce, "n4");
        assert!(nack
            .error_detail
            .as_ref()
            .unwrap()
            .message
            .starts_with("Cluster \"z\": lb_subset_config: unsupported field"));
        // Reconnect: initial_resource_versions lists what is held.
        let again = s.delta_stream_started();
        assert_eq!(again[0].initial_resource_versions.get("x").map(String::as_str), Some("2"));
        assert_eq!(again[1].resource_names_subscribe, vec!["x".to_string()]);
        assert_eq!(again[1].initial_resource_versions.get("x").map(String::as_str), Some("7"));
    }
}
