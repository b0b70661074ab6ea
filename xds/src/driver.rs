//! The control thread's loop: one [`AdsState`] fed by every transport.
//!
//! Each resource type comes from exactly one transport, as the bootstrap
//! says (`dynamic_resources`, docs/xds.md): the ADS stream carries every
//! type whose `ConfigSource` is `ads: {}`; a per-type gRPC stream or a REST
//! poller carries one type (RDS follows LDS's source, EDS follows CDS's).
//! Transports run as tasks on this thread's runtime and talk to the loop
//! over channels; the loop owns the state machine, so all types are still
//! validated and published as one whole config, and the requests the state
//! machine emits are routed to the transport that carries their type.
//!
//! A request for a type whose transport is down is dropped: when the
//! transport comes back, the new stream (or poller) starts from the state's
//! current subscriptions and versions, as the protocol asks.

use std::sync::Arc;
use std::time::Instant;

use control::model;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use tokio::sync::mpsc;

use crate::state::{AdsState, Event, Kind};
use crate::{Publisher, XdsStats};

pub(crate) type TransportId = usize;

/// Where a transport's requests go, for its current stream.
pub(crate) enum Requests {
    Sotw(mpsc::UnboundedSender<DiscoveryRequest>),
    Delta(mpsc::UnboundedSender<DeltaDiscoveryRequest>),
}

/// What transports tell the loop.
pub(crate) enum Inbound {
    /// A new stream (or the REST poller) is starting: send its first requests here.
    Connected {
        transport: TransportId,
        requests: Requests,
    },
    /// The gRPC stream is open (drives `control_plane.connected_state`).
    Up {
        transport: TransportId,
    },
    Response {
        transport: TransportId,
        response: DiscoveryResponse,
    },
    Delta {
        transport: TransportId,
        response: DeltaDiscoveryResponse,
    },
    /// The stream failed or closed, or a REST poll failed.
    Failed {
        transport: TransportId,
        error: String,
    },
}

/// One transport as the loop sees it.
pub(crate) struct Route {
    /// The types it carries.
    pub kinds: Vec<Kind>,
    /// A gRPC stream (counts for `connected_state`), not a REST poller.
    pub streaming: bool,
    requests: Option<Requests>,
    up: bool,
}

impl Route {
    pub(crate) fn new(kinds: Vec<Kind>, streaming: bool) -> Route {
        Route { kinds, streaming, requests: None, up: false }
    }
}

pub(crate) async fn run(
    mut state: AdsState,
    mut routes: Vec<Route>,
    mut inbound: mpsc::UnboundedReceiver<Inbound>,
    publisher: Publisher,
    stats: XdsStats,
) {
    loop {
        let deadline = state.next_deadline().map(tokio::time::Instant::from_std);
        let message = tokio::select! {
            m = inbound.recv() => match m {
                Some(m) => m,
                None => return,
            },
            _ = sleep_opt(deadline) => {
                let step = state.on_tick(Instant::now());
                record(&step.events, &stats);
                if let Some(cfg) = step.publish {
                    publish(cfg, &publisher, &stats);
                }
                continue;
            }
        };
        match message {
            Inbound::Connected { transport, requests } => {
                let kinds = routes[transport].kinds.clone();
                match &requests {
                    Requests::Sotw(tx) => {
                        for r in state.stream_started_for(&kinds) {
                            let _ = tx.send(r);
                        }
                    }
                    Requests::Delta(tx) => {
                        for r in state.delta_stream_started_for(&kinds) {
                            let _ = tx.send(r);
                        }
                    }
                }
                routes[transport].requests = Some(requests);
            }
            Inbound::Up { transport } => {
                routes[transport].up = true;
                tracing::info!(types = ?routes[transport].kinds, "xDS stream established");
                connected_state(&routes, &stats);
            }
            Inbound::Failed { transport, error } => {
                let route = &mut routes[transport];
                tracing::debug!(types = ?route.kinds, error = %error, "xDS transport failed");
                // A failed poll leaves a REST poller in place; a failed stream is gone.
                if route.streaming {
                    route.requests = None;
                }
                route.up = false;
                // Each type counts each failure of the stream that carries it, as in Envoy.
                for k in &route.kinds {
                    stats.kind(*k).update_failure.inc();
                    stats.resources_failed(&state.resource_scopes(*k));
                }
                connected_state(&routes, &stats);
            }
            Inbound::Response { transport, response } => {
                let step = state.on_response(response, Instant::now());
                record(&step.events, &stats);
                if let Some(cfg) = step.publish {
                    publish(cfg, &publisher, &stats);
                }
                for r in step.requests {
                    if let Some(e) = &r.error_detail {
                        tracing::warn!(type_url = %r.type_url, detail = %e.message, "xDS update rejected (NACK)");
                    }
                    let to = route_of(&routes, &r.type_url).unwrap_or(transport);
                    if let Some(Requests::Sotw(tx)) = &routes[to].requests {
                        let _ = tx.send(r);
                    }
                }
            }
            Inbound::Delta { transport, response } => {
                let step = state.on_delta_response(response, Instant::now());
                record(&step.events, &stats);
                if let Some(cfg) = step.publish {
                    publish(cfg, &publisher, &stats);
                }
                for r in step.requests {
                    if let Some(e) = &r.error_detail {
                        tracing::warn!(type_url = %r.type_url, detail = %e.message, "xDS update rejected (NACK)");
                    }
                    let to = route_of(&routes, &r.type_url).unwrap_or(transport);
                    if let Some(Requests::Delta(tx)) = &routes[to].requests {
                        let _ = tx.send(r);
                    }
                }
            }
        }
    }
}

fn publish(cfg: Arc<model::Config>, publisher: &Publisher, stats: &XdsStats) {
    stats.config_generation.set(cfg.version as i64);
    publisher.publish(cfg);
}

fn route_of(routes: &[Route], type_url: &str) -> Option<TransportId> {
    let kind = Kind::from_type_url(type_url)?;
    routes.iter().position(|r| r.kinds.contains(&kind))
}

/// `control_plane.connected_state`: 1 while every gRPC stream is up.
fn connected_state(routes: &[Route], stats: &XdsStats) {
    let mut streams = routes.iter().filter(|r| r.streaming).peekable();
    let connected = streams.peek().is_some() && streams.all(|r| r.up);
    stats.connected_state.set(i64::from(connected));
}

fn record(events: &[Event], stats: &XdsStats) {
    for e in events {
        stats.record(e);
    }
}

async fn sleep_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Which transports the bootstrap asks for: the ADS stream for every type
/// sourced from `ads: {}`, else per type (RDS with LDS's server, EDS with
/// CDS's) a per-type gRPC stream or a REST poller.
pub(crate) fn plan(xds: &model::Xds) -> Vec<(Route, Transport)> {
    let mut ads_kinds = Vec::new();
    let mut out = Vec::new();
    let sources = [
        (xds.cds.as_ref(), [Kind::Cluster, Kind::ClusterLoadAssignment]),
        (xds.lds.as_ref(), [Kind::Listener, Kind::RouteConfiguration]),
    ];
    for (source, kinds) in sources {
        let Some(source) = source else { continue };
        match &source.server {
            None => ads_kinds.extend(kinds),
            Some(server) => {
                for k in kinds {
                    let streaming = server.api_type != model::XdsApiType::Rest;
                    let transport = if streaming {
                        Transport::Grpc(crate::grpc::Service::PerType(k), server.clone())
                    } else {
                        Transport::Rest(k, server.clone())
                    };
                    out.push((Route::new(vec![k], streaming), transport));
                }
            }
        }
    }
    // SDS comes over ADS only (`sds_config: {ads: {}}`), named on demand.
    if xds.ads.is_some() {
        ads_kinds.push(Kind::Secret);
    }
    if let (false, Some(server)) = (ads_kinds.is_empty(), xds.ads.as_ref()) {
        ads_kinds.sort();
        out.insert(0, (Route::new(ads_kinds, true), Transport::Grpc(crate::grpc::Service::Aggregated, server.clone())));
    }
    out
}

pub(crate) enum Transport {
    Grpc(crate::grpc::Service, model::XdsServer),
    Rest(Kind, model::XdsServer),
}

/// Starts the transports and runs the loop (on the control thread's runtime).
pub(crate) async fn start(
    state: AdsState,
    plan: Vec<(Route, Transport)>,
    base: Arc<model::Config>,
    node: envoy_types::pb::envoy::config::core::v3::Node,
    publisher: Publisher,
    stats: XdsStats,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut routes = Vec::new();
    for (id, (route, transport)) in plan.into_iter().enumerate() {
        routes.push(route);
        match transport {
            Transport::Grpc(service, server) => {
                tokio::spawn(crate::grpc::run(id, service, server, base.clone(), tx.clone()));
            }
            Transport::Rest(kind, server) => {
                tokio::spawn(crate::rest::run(id, kind, server, base.clone(), node.clone(), tx.clone()));
            }
        }
    }
    drop(tx);
    run(state, routes, rx, publisher, stats).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::ALL_KINDS;

    const XDS_CLUSTER: &str = r#"
static_resources:
  clusters:
  - name: xds
    http2_protocol_options: {}
    load_assignment:
      cluster_name: xds
      endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 18000 }}}}]}]
"#;

    fn plan_of(dynamic: &str) -> Vec<(Vec<Kind>, bool, String)> {
        let text = format!("node: {{ id: n1 }}\ndynamic_resources:\n{dynamic}{XDS_CLUSTER}");
        let cfg = control::bootstrap::load_str(&text, control::bootstrap::Format::Yaml, "b.yaml").unwrap();
        plan(cfg.xds.as_ref().unwrap())
            .into_iter()
            .map(|(route, transport)| {
                let t = match transport {
                    Transport::Grpc(service, server) => format!("{service:?} {:?}", server.api_type),
                    Transport::Rest(kind, _) => format!("REST {kind:?}"),
                };
                (route.kinds, route.streaming, t)
            })
            .collect()
    }

    #[test]
    fn every_type_has_exactly_one_transport() {
        let ads = "  ads_config: { api_type: GRPC, grpc_services: [{ envoy_grpc: { cluster_name: xds }}] }\n  lds_config: { ads: {} }\n  cds_config: { ads: {} }";
        assert_eq!(
            plan_of(ads),
            vec![(ALL_KINDS.to_vec(), true, "Aggregated Grpc".to_string())],
            "ADS: one stream for everything"
        );
        let mixed = "  ads_config: { api_type: DELTA_GRPC, grpc_services: [{ envoy_grpc: { cluster_name: xds }}] }\n  lds_config: { ads: {} }\n  cds_config: { api_config_source: { api_type: REST, cluster_names: [xds] } }";
        assert_eq!(
            plan_of(mixed),
            vec![
                (
                    vec![Kind::Listener, Kind::RouteConfiguration, Kind::Secret],
                    true,
                    "Aggregated DeltaGrpc".to_string()
                ),
                (vec![Kind::Cluster], false, "REST Cluster".to_string()),
                (vec![Kind::ClusterLoadAssignment], false, "REST ClusterLoadAssignment".to_string()),
            ]
        );
        let per_type = "  lds_config: { api_config_source: { api_type: GRPC, grpc_services: [{ envoy_grpc: { cluster_name: xds }}] } }";
        assert_eq!(
            plan_of(per_type),
            vec![
                (vec![Kind::Listener], true, "PerType(Listener) Grpc".to_string()),
                (vec![Kind::RouteConfiguration], true, "PerType(RouteConfiguration) Grpc".to_string()),
            ],
            "no cds_config: no CDS / EDS at all"
        );
    }
}
