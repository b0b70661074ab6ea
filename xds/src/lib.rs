//! meshgate's xDS client: the thin control thread that keeps the shards'
//! configuration in step with an Envoy-compatible management server
//! (Istio's istiod, go-control-plane, ...).
//!
//! # What it owns
//!
//! * One dedicated OS thread (`meshgate-xds`) with its own tokio
//!   current-thread runtime.  tonic and tokio live only here: the shards run
//!   their own executor and never see a tokio type.  The connection to the
//!   management server is a kernel socket (even in DPDK mode, control-plane
//!   traffic stays on the kernel stack).
//! * The protocol, as a sans-IO state machine ([`state::AdsState`]): per-type
//!   subscriptions, versions, nonces, ACK/NACK, wildcard and named
//!   subscriptions, removal, warming, initial fetch timeouts.  It is unit
//!   tested with a virtual clock and no sockets.  The transports only move
//!   messages: the ADS stream or per-type gRPC streams (`grpc.rs`, with
//!   jittered exponential back-off, `backoff.rs`: Envoy's 500 ms base, 30 s
//!   cap unless `retry_back_off` says otherwise) and REST-JSON pollers
//!   (`rest.rs`), over TLS / mTLS when the xDS cluster has a
//!   `transport_socket` (`tls.rs`, rustls configured as for any cluster);
//!   `driver.rs` feeds them all into the one state machine and routes its
//!   requests to the transport carrying each type.
//! * Publication: every accepted update yields a whole new validated
//!   `model::Config` (built by `control::bootstrap::dynamic`), stored into
//!   the `ArcSwap<Config>` the shards already watch, then the shards are
//!   woken.  Each shard swaps its snapshot between tasks; requests in flight
//!   finish on the snapshot they started with.
//! * The `control_plane.*` and per-type update stats, with Envoy's names.
//!
//! The specification followed is Envoy's "xDS REST and gRPC protocol"
//! document (api-docs/xds_protocol) and the v3 API (envoy.service.discovery.v3).
//!
//! # What it must not touch
//!
//! The request path: nothing here runs on a shard, takes a lock a shard
//! takes, or allocates on a shard's behalf.  It never translates protobuf
//! itself either: `control` owns the translation, so a resource from xDS
//! and the same resource in a bootstrap file produce the same model and the
//! same errors.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use control::model;
use dataplane::stats::{Counter, Gauge, Scope, StatsStore};

pub mod backoff;
mod driver;
mod grpc;
pub mod rest;
pub mod state;
mod tls;

use state::{Event, Kind};

/// Stores a new config and wakes whoever reads it.
pub struct Publisher {
    pub config: Arc<ArcSwap<model::Config>>,
    pub wake: Box<dyn Fn() + Send>,
}

impl Publisher {
    fn publish(&self, cfg: Arc<model::Config>) {
        tracing::info!(
            version = cfg.version,
            listeners = cfg.listeners.len(),
            clusters = cfg.clusters.len(),
            "xDS config published"
        );
        self.config.store(cfg);
        (self.wake)();
    }
}

/// Per-type update stats, as Envoy counts them.
pub struct KindStats {
    pub update_attempt: Counter,
    pub update_success: Counter,
    pub update_rejected: Counter,
    pub update_failure: Counter,
    pub init_fetch_timeout: Counter,
    pub version: Gauge,
}

/// Envoy's per-resource subscription stats (`http.<stat_prefix>.rds.<name>.*`,
/// `cluster.<name>.*` for EDS).
struct ResourceStats {
    update_attempt: Counter,
    update_success: Counter,
    update_rejected: Counter,
    update_failure: Counter,
    update_empty: Counter,
    version: Gauge,
}

/// The client's stats, all on the store's control slot.
pub struct XdsStats {
    store: Arc<StatsStore>,
    /// Per-resource stats by scope, registered on first use (control
    /// thread only).
    per_resource: std::cell::RefCell<std::collections::HashMap<String, ResourceStats>>,
    pub connected_state: Gauge,
    /// `control_plane.config_generation`: the version of the last config
    /// published (compare `server.worker_<i>.config_generation`, what each
    /// shard serves).
    pub config_generation: Gauge,
    kinds: Vec<(Kind, KindStats)>,
}

impl XdsStats {
    /// Registers `control_plane.connected_state` and, per type,
    /// `listener_manager.lds.*`, `cluster_manager.cds.*` (Envoy's names), and
    /// `rds.*` / `eds.*` (Envoy counts those per route configuration /
    /// cluster; meshgate per type — see docs/xds.md).
    pub fn new(store: &Arc<StatsStore>) -> XdsStats {
        let slot = store.control_slot();
        let kinds = state::ALL_KINDS
            .into_iter()
            .map(|k| {
                let scope = Scope::Named(
                    match k {
                        Kind::Listener => "listener_manager.lds",
                        Kind::Cluster => "cluster_manager.cds",
                        Kind::RouteConfiguration => "rds",
                        Kind::ClusterLoadAssignment => "eds",
                        Kind::Secret => "sds",
                    }
                    .to_string(),
                );
                let c = |leaf: &str| store.counter(&scope, leaf, slot);
                let s = KindStats {
                    update_attempt: c("update_attempt"),
                    update_success: c("update_success"),
                    update_rejected: c("update_rejected"),
                    update_failure: c("update_failure"),
                    init_fetch_timeout: c("init_fetch_timeout"),
                    version: store.gauge(&scope, "version", slot),
                };
                (k, s)
            })
            .collect();
        XdsStats {
            store: store.clone(),
            per_resource: Default::default(),
            connected_state: store.gauge(&Scope::Named("control_plane".to_string()), "connected_state", slot),
            config_generation: store.gauge(&Scope::Named("control_plane".to_string()), "config_generation", slot),
            kinds,
        }
    }

    pub fn kind(&self, k: Kind) -> &KindStats {
        &self.kinds.iter().find(|(kind, _)| *kind == k).expect("every kind is registered").1
    }

    fn record(&self, e: &Event) {
        match e {
            Event::Accepted { kind, version_info } => {
                let s = self.kind(*kind);
                s.update_attempt.inc();
                s.update_success.inc();
                s.version.set(version_hash(version_info));
            }
            Event::Rejected { kind, .. } => {
                let s = self.kind(*kind);
                s.update_attempt.inc();
                s.update_rejected.inc();
            }
            Event::InitFetchTimeout { kind } => self.kind(*kind).init_fetch_timeout.inc(),
            Event::ResourceUpdate { scope, accepted } => self.resource(scope, |r| {
                r.update_attempt.inc();
                if *accepted {
                    r.update_success.inc()
                } else {
                    r.update_rejected.inc()
                }
            }),
            Event::ResourceEmpty { scope } => self.resource(scope, |r| r.update_empty.inc()),
            Event::ResourceVersion { scope, version_info } => {
                self.resource(scope, |r| r.version.set(version_hash(version_info)))
            }
        }
    }

    /// A stream carrying RDS / EDS failed: `update_failure` for each
    /// resource subscribed (each Envoy subscription counts it).
    fn resources_failed(&self, scopes: &[String]) {
        for scope in scopes {
            self.resource(scope, |r| r.update_failure.inc());
        }
    }

    fn resource(&self, scope: &str, f: impl FnOnce(&ResourceStats)) {
        let mut per = self.per_resource.borrow_mut();
        let stats = per.entry(scope.to_string()).or_insert_with(|| {
            let named = Scope::Named(scope.to_string());
            let slot = self.store.control_slot();
            let c = |leaf: &str| self.store.counter(&named, leaf, slot);
            ResourceStats {
                update_attempt: c("update_attempt"),
                update_success: c("update_success"),
                update_rejected: c("update_rejected"),
                update_failure: c("update_failure"),
                update_empty: c("update_empty"),
                version: self.store.gauge(&named, "version", slot),
            }
        });
        f(stats)
    }
}

/// Starts the xDS control thread when the bootstrap has `dynamic_resources`
/// naming a management server (ADS, per-type gRPC or REST); `None` for
/// static configs.  `base` is the config the bootstrap produced (static
/// resources only).
pub fn spawn(
    base: Arc<model::Config>,
    publisher: Publisher,
    stats: &Arc<StatsStore>,
) -> std::io::Result<Option<std::thread::JoinHandle<()>>> {
    let Some(xds) = base.xds.clone() else {
        return Ok(None);
    };
    let plan = driver::plan(&xds);
    if plan.is_empty() {
        return Ok(None);
    }
    let stats = XdsStats::new(stats);
    let node = state::node_from_bootstrap(&base.bootstrap_json);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let thread = std::thread::Builder::new().name("meshgate-xds".into()).spawn(move || {
        let state = state::AdsState::new(base.clone(), node.clone(), Instant::now());
        runtime.block_on(driver::start(state, plan, base, node, publisher, stats));
    })?;
    Ok(Some(thread))
}

/// Envoy's `version` gauge: the xxHash64 (seed 0) of the `version_info`.
fn version_hash(version_info: &str) -> i64 {
    xxhash_rust::xxh64::xxh64(version_info.as_bytes(), 0) as i64
}

fn seed() -> u64 {
    let t =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    splitmix(t ^ u64::from(std::process::id()))
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
