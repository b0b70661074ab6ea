//! End-to-end per-type gRPC xDS services: a real `meshgate` process whose
//! `lds_config` names a `GRPC` (state of the world) `api_config_source` and
//! whose `cds_config` names a `DELTA_GRPC` (incremental) one, so meshgate
//! opens one stream per type on `ListenerDiscoveryService`,
//! `RouteDiscoveryService` (RDS follows LDS's source),
//! `ClusterDiscoveryService` and `EndpointDiscoveryService` (EDS follows
//! CDS's) of the test control plane (`testkit::xds_server`), and none on
//! `AggregatedDiscoveryService`.
//!
//! Covered: initial sync then traffic; one stream per service with the node
//! on its first request; route and endpoint updates; a NACK on one type's
//! stream; the streams dropped and re-established.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::xds_server::{XdsServer, CLUSTER, ENDPOINT, LISTENER, ROUTE};
use testkit::{free_port, Client, Gateway, Upstream};

const HCM: &str =
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const WAIT: Duration = Duration::from_secs(20);

fn bootstrap(xds: SocketAddr) -> String {
    format!(
        r#"node: {{ id: meshgate-per-type, cluster: test }}
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {{{{ADMIN_PORT}}}} }} }}
dynamic_resources:
  lds_config: {{ resource_api_version: V3, api_config_source: {{ api_type: GRPC, transport_api_version: V3, grpc_services: [{{ envoy_grpc: {{ cluster_name: xds_cluster, retry_policy: {{ retry_back_off: {{ base_interval: 0.1s, max_interval: 0.5s }} }} }} }}] }} }}
  cds_config: {{ resource_api_version: V3, api_config_source: {{ api_type: DELTA_GRPC, transport_api_version: V3, grpc_services: [{{ envoy_grpc: {{ cluster_name: xds_cluster, retry_policy: {{ retry_back_off: {{ base_interval: 0.1s, max_interval: 0.5s }} }} }} }}] }} }}
static_resources:
  clusters:
{xds_cluster}"#,
        xds_cluster = testkit::xds_cluster_yaml(xds),
    )
}

fn source(api_type: &str) -> Value {
    json!({"resource_api_version": "V3", "api_config_source": {"api_type": api_type, "transport_api_version": "V3",
        "grpc_services": [{"envoy_grpc": {"cluster_name": "xds_cluster"}}]}})
}

fn enc(full_name: &str, v: Value) -> (String, Vec<u8>) {
    let name = v.get("name").or_else(|| v.get("cluster_name")).and_then(Value::as_str).unwrap_or_default().to_string();
    (name, control::bootstrap::dynamic::encode_json(full_name, &v).expect("resource encodes"))
}

fn listener(name: &str, port: u16, rds: &str, extra_hcm: Value) -> (String, Vec<u8>) {
    let mut hcm = json!({"@type": HCM, "stat_prefix": name,
        "rds": {"route_config_name": rds, "config_source": source("GRPC")},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]});
    for (k, v) in extra_hcm.as_object().into_iter().flatten() {
        hcm[k] = v.clone();
    }
    enc(
        "envoy.config.listener.v3.Listener",
        json!({"name": name, "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
          "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}]}),
    )
}

fn routes(name: &str, routes: Value) -> (String, Vec<u8>) {
    enc(
        "envoy.config.route.v3.RouteConfiguration",
        json!({"name": name, "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]}),
    )
}

fn eds_cluster(name: &str) -> (String, Vec<u8>) {
    enc(
        "envoy.config.cluster.v3.Cluster",
        json!({"name": name, "type": "EDS", "connect_timeout": "1s", "eds_cluster_config": {"eds_config": source("DELTA_GRPC")}}),
    )
}

fn assignment(name: &str, upstreams: &[&Upstream]) -> (String, Vec<u8>) {
    let eps: Vec<Value> = upstreams
        .iter()
        .map(|u| json!({"endpoint": {"address": {"socket_address": {"address": u.addr.ip().to_string(), "port_value": u.addr.port()}}}}))
        .collect();
    enc(
        "envoy.config.endpoint.v3.ClusterLoadAssignment",
        json!({"cluster_name": name, "endpoints": [{"lb_endpoints": eps}]}),
    )
}

fn get(addr: SocketAddr, path: &str) -> Option<testkit::Response> {
    let mut c = Client::try_connect(addr).ok()?;
    c.set_read_timeout(Duration::from_secs(5));
    c.try_send(&testkit::build_request("GET", path, &[("host", "x")], b"")).ok()?;
    c.try_read_response().ok().flatten()
}

fn served_by(addr: SocketAddr, path: &str) -> Option<String> {
    get(addr, path).filter(|r| r.status == 200).and_then(|r| r.header("x-upstream-name").map(str::to_string))
}

#[track_caller]
fn wait_until(what: &str, gw: &Gateway, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}\n--- meshgate stderr ---\n{}", gw.stderr());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn per_type_grpc_services_sync_update_nack_and_reconnect() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let cp = XdsServer::start();
    let port = free_port();
    cp.set(CLUSTER, "c1", vec![eds_cluster("backend")]);
    cp.set(ENDPOINT, "e1", vec![assignment("backend", &[&a])]);
    cp.set(LISTENER, "l1", vec![listener("main", port, "routes", json!({}))]);
    cp.set(ROUTE, "r1", vec![routes("routes", json!([{"match": {"prefix": "/"}, "route": {"cluster": "backend"}}]))]);
    let gw = Gateway::start(&bootstrap(cp.addr()), &[], &[]);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_until("initial sync over per-type streams", &gw, || served_by(addr, "/echo").as_deref() == Some("a"));

    for service in
        ["ListenerDiscoveryService", "RouteDiscoveryService", "ClusterDiscoveryService", "EndpointDiscoveryService"]
    {
        assert_eq!(cp.streams_opened_on(service), 1, "one {service} stream");
    }
    assert_eq!(cp.streams_opened_on("AggregatedDiscoveryService"), 0);
    // State of the world for LDS / RDS: the node on each stream's first request.
    let sotw = cp.requests();
    for t in [LISTENER, ROUTE] {
        let first = sotw.iter().find(|r| r.type_url == t).unwrap();
        assert!(first.node.as_ref().is_some_and(|n| n.id == "meshgate-per-type"), "{t}: node on the first request");
        assert!(sotw.iter().filter(|r| r.type_url == t).skip(1).all(|r| r.node.is_none()), "{t}: node once");
    }
    assert!(sotw.iter().all(|r| r.type_url == LISTENER || r.type_url == ROUTE), "CDS / EDS are delta here");
    // Delta for CDS / EDS.
    let delta = cp.delta_requests();
    for t in [CLUSTER, ENDPOINT] {
        let first = delta.iter().find(|r| r.type_url == t).unwrap();
        assert!(first.node.is_some(), "{t}: node on the first delta request");
    }
    assert_eq!(gw.stat("control_plane.connected_state"), 1);

    // Updates on each stream.
    cp.set(ENDPOINT, "e2", vec![assignment("backend", &[&b])]);
    wait_until("EDS update over EndpointDiscoveryService", &gw, || served_by(addr, "/echo").as_deref() == Some("b"));
    cp.set(
        ROUTE,
        "r2",
        vec![routes(
            "routes",
            json!([{"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "r2"}}}]),
        )],
    );
    wait_until("RDS update over RouteDiscoveryService", &gw, || get(addr, "/").is_some_and(|r| r.body_str() == "r2"));

    // A NACK on the LDS stream; the last good config keeps serving.
    cp.set(LISTENER, "l2-bad", vec![listener("main", port, "routes", json!({"add_user_agent": true}))]);
    let nack = cp
        .wait_for_request(WAIT, |r| r.type_url == LISTENER && r.error_detail.is_some())
        .unwrap_or_else(|| panic!("no NACK\n{}", gw.stderr()));
    assert_eq!(nack.version_info, "l1");
    assert!(nack.error_detail.unwrap().message.contains("add_user_agent: unsupported field"));
    assert_eq!(get(addr, "/").map(|r| r.body_str().to_string()).as_deref(), Some("r2"));

    // Every stream dropped: each reconnects on its own service and re-syncs.
    cp.drop_streams();
    cp.set(LISTENER, "l3", vec![listener("main", port, "routes", json!({}))]);
    cp.set(ROUTE, "r3", vec![routes("routes", json!([{"match": {"prefix": "/"}, "route": {"cluster": "backend"}}]))]);
    cp.set(ENDPOINT, "e3", vec![assignment("backend", &[&a])]);
    wait_until("re-sync after the streams dropped", &gw, || served_by(addr, "/echo").as_deref() == Some("a"));
    wait_until("all four streams re-opened", &gw, || {
        ["ListenerDiscoveryService", "RouteDiscoveryService", "ClusterDiscoveryService", "EndpointDiscoveryService"]
            .iter()
            .all(|s| cp.streams_opened_on(s) >= 2)
    });
    assert!(gw.stat("listener_manager.lds.update_failure") >= 1 && gw.stat("eds.update_failure") >= 1);
}
