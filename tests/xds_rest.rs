//! End-to-end REST-JSON xDS polling: a real `meshgate` process whose
//! `lds_config` / `cds_config` (and so RDS / EDS) name a REST
//! `api_config_source`, polling the test REST server
//! (`testkit::xds_rest_server`, which writes and reads the JSON itself), in
//! front of real `mg-upstream`s.
//!
//! Covered: initial sync (CDS→EDS, LDS→RDS) then traffic; the requests'
//! shape (canonical JSON, node on every poll, no nonce, versions ACKed by the
//! next poll); route and endpoint updates; an invalid resource NACKed (the
//! next poll carries the previous version and an `error_detail`) while the
//! last good config keeps serving; the server down (traffic continues,
//! `update_failure` counts the failed polls) then back (new versions apply).
//! `refresh_delay` is 0.2 s to keep the tests short.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::xds_rest_server::{XdsRestServer, CLUSTER, ENDPOINT, LISTENER, ROUTE};
use testkit::{free_port, Client, Gateway, Upstream};

const HCM: &str =
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const WAIT: Duration = Duration::from_secs(20);

fn bootstrap(rest: SocketAddr) -> String {
    format!(
        r#"node: {{ id: meshgate-rest, cluster: test }}
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {{{{ADMIN_PORT}}}} }} }}
dynamic_resources:
  lds_config: {{ resource_api_version: V3, api_config_source: {{ api_type: REST, transport_api_version: V3, cluster_names: [xds_rest], refresh_delay: 0.2s, request_timeout: 1s }} }}
  cds_config: {{ resource_api_version: V3, api_config_source: {{ api_type: REST, transport_api_version: V3, cluster_names: [xds_rest], refresh_delay: 0.2s, request_timeout: 1s }} }}
static_resources:
  clusters:
  - name: xds_rest
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: xds_rest
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: {ip}, port_value: {port} }} }} }} }}] }}]
"#,
        ip = rest.ip(),
        port = rest.port()
    )
}

fn rest_source() -> Value {
    json!({"resource_api_version": "V3", "api_config_source": {"api_type": "REST", "transport_api_version": "V3", "cluster_names": ["xds_rest"], "refresh_delay": "0.2s"}})
}

fn listener(name: &str, port: u16, rds: &str, extra_hcm: Value) -> Value {
    let mut hcm = json!({"@type": HCM, "stat_prefix": name,
        "rds": {"route_config_name": rds, "config_source": rest_source()},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]});
    for (k, v) in extra_hcm.as_object().into_iter().flatten() {
        hcm[k] = v.clone();
    }
    json!({"@type": LISTENER, "name": name, "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}]})
}

fn routes(name: &str, routes: Value) -> Value {
    json!({"@type": ROUTE, "name": name, "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]})
}

fn to_cluster(cluster: &str) -> Value {
    json!([{"match": {"prefix": "/"}, "route": {"cluster": cluster}}])
}

fn eds_cluster(name: &str) -> Value {
    json!({"@type": CLUSTER, "name": name, "type": "EDS", "connect_timeout": "1s",
        "eds_cluster_config": {"eds_config": rest_source()}})
}

fn assignment(name: &str, upstreams: &[&Upstream]) -> Value {
    let eps: Vec<Value> = upstreams
        .iter()
        .map(|u| json!({"endpoint": {"address": {"socket_address": {"address": u.addr.ip().to_string(), "port_value": u.addr.port()}}}}))
        .collect();
    json!({"@type": ENDPOINT, "cluster_name": name, "endpoints": [{"lb_endpoints": eps}]})
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

/// A poll of `type_url` acknowledging `version` (REST: the next poll carries it).
fn acked(cp: &XdsRestServer, type_url: &str, version: &str) -> bool {
    cp.requests().iter().any(|r| r.type_url == type_url && r.version_info == version && r.error_detail.is_none())
}

fn start() -> (XdsRestServer, Gateway, Upstream, Upstream, SocketAddr) {
    start_with(&[])
}

fn start_with(args: &[&str]) -> (XdsRestServer, Gateway, Upstream, Upstream, SocketAddr) {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let cp = XdsRestServer::start();
    let port = free_port();
    cp.set(CLUSTER, "c1", vec![eds_cluster("backend")]);
    cp.set(ENDPOINT, "e1", vec![assignment("backend", &[&a])]);
    cp.set(LISTENER, "l1", vec![listener("main", port, "routes", json!({}))]);
    cp.set(ROUTE, "r1", vec![routes("routes", to_cluster("backend"))]);
    let gw = Gateway::start(&bootstrap(cp.addr()), &[], args);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_until("initial REST sync: traffic to upstream a", &gw, || served_by(addr, "/echo").as_deref() == Some("a"));
    (cp, gw, a, b, addr)
}

#[test]
fn rest_polling_sync_updates_and_nack() {
    let (cp, gw, a, b, addr) = start();
    for (t, v) in [(CLUSTER, "c1"), (ENDPOINT, "e1"), (LISTENER, "l1"), (ROUTE, "r1")] {
        wait_until(&format!("{t} {v} acknowledged by a poll"), &gw, || acked(&cp, t, v));
    }
    let reqs = cp.requests();
    // The first poll of each type starts from no version; every poll has the node, none a nonce.
    let first_lds = reqs.iter().find(|r| r.type_url == LISTENER).unwrap();
    assert_eq!((first_lds.path.as_str(), first_lds.version_info.as_str()), ("/v3/discovery:listeners", ""));
    assert!(first_lds.resource_names.is_empty(), "LDS is a wildcard subscription");
    assert!(reqs.iter().all(|r| r.node_id.as_deref() == Some("meshgate-rest")), "node on every poll");
    assert!(reqs.iter().all(|r| r.response_nonce.is_empty()), "REST has no nonce");
    let rds = reqs.iter().find(|r| r.type_url == ROUTE).unwrap();
    assert_eq!((rds.path.as_str(), rds.resource_names.clone()), ("/v3/discovery:routes", vec!["routes".to_string()]));
    let eds = reqs.iter().find(|r| r.type_url == ENDPOINT).unwrap();
    assert_eq!(eds.path, "/v3/discovery:endpoints");
    // Unchanged versions are answered 304, which changes nothing.
    assert!(reqs.iter().any(|r| r.answered == 304), "304 Not Modified while nothing changes");
    assert_eq!(gw.stat("listener_manager.lds.update_success"), 1, "a 304 is not an update");
    assert!(gw.stat("cluster_manager.cds.update_success") >= 1);
    assert!(gw.stat("rds.update_success") >= 1 && gw.stat("eds.update_success") >= 1);
    // Envoy's per-resource names: per route configuration (under the HCM's stat_prefix) and per EDS cluster.
    assert!(gw.stat("http.main.rds.routes.update_success") >= 1);
    assert!(gw.stat("cluster.backend.update_attempt") >= 1 && gw.stat("cluster.backend.update_success") >= 1);

    // Updates: endpoints, then routes.
    cp.set(ENDPOINT, "e2", vec![assignment("backend", &[&b])]);
    wait_until("EDS update to upstream b", &gw, || served_by(addr, "/echo").as_deref() == Some("b"));
    cp.set(
        ROUTE,
        "r2",
        vec![routes(
            "routes",
            json!([{"match": {"prefix": "/v2"}, "direct_response": {"status": 200, "body": {"inline_string": "route v2"}}},
                   {"match": {"prefix": "/"}, "route": {"cluster": "backend"}}]),
        )],
    );
    wait_until("route v2", &gw, || get(addr, "/v2").is_some_and(|r| r.body_str() == "route v2"));

    // An invalid listener: NACKed on the next poll, with the previous version and the detail.
    cp.set(LISTENER, "l2-bad", vec![listener("main", addr.port(), "routes", json!({"add_user_agent": true}))]);
    let nack = cp
        .wait_for_request(WAIT, |r| r.type_url == LISTENER && r.error_detail.is_some())
        .unwrap_or_else(|| panic!("no NACK\n{}", gw.stderr()));
    let detail = nack.error_detail.as_deref().unwrap();
    assert!(
        detail
            .contains("Listener \"main\": filter_chains[0].filters[0].typed_config.add_user_agent: unsupported field"),
        "{detail}"
    );
    assert_eq!(nack.version_info, "l1", "a NACK carries the last accepted version");
    assert!(gw.stat("listener_manager.lds.update_rejected") >= 1);
    assert_eq!(served_by(addr, "/echo").as_deref(), Some("b"), "the last good config keeps serving");
    assert_eq!(get(addr, "/v2").map(|r| r.body_str().to_string()).as_deref(), Some("route v2"));

    // A good version afterwards applies.
    cp.set(ENDPOINT, "e3", vec![assignment("backend", &[&a])]);
    cp.set(LISTENER, "l3", vec![listener("main", addr.port(), "routes", json!({}))]);
    wait_until("l3 acknowledged", &gw, || acked(&cp, LISTENER, "l3"));
    wait_until("EDS back to a", &gw, || served_by(addr, "/echo").as_deref() == Some("a"));
}

#[test]
fn rest_server_down_then_back() {
    let (cp, gw, _a, b, addr) = start();
    let failures_before = gw.stat("listener_manager.lds.update_failure");
    let requests_before = cp.requests().len();
    let stopped = cp.stop();
    // Down for 2 s (10 refresh periods): traffic flows on the last config.
    let down_until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < down_until {
        assert_eq!(served_by(addr, "/echo").as_deref(), Some("a"), "traffic while the server is down");
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_until("failed polls counted", &gw, || gw.stat("listener_manager.lds.update_failure") > failures_before);
    assert!(gw.stat("cluster_manager.cds.update_failure") >= 1);
    let cp = stopped.restart();
    cp.set(ENDPOINT, "e9", vec![assignment("backend", &[&b])]);
    wait_until("re-sync after the server is back", &gw, || served_by(addr, "/echo").as_deref() == Some("b"));
    // Polls after the restart carried the versions accepted before.
    wait_until("LDS polled again", &gw, || cp.requests()[requests_before..].iter().any(|r| r.type_url == LISTENER));
    let after = cp.requests()[requests_before..].to_vec();
    let lds = after.iter().find(|r| r.type_url == LISTENER).unwrap();
    assert_eq!((lds.version_info.as_str(), lds.answered), ("l1", 304));
}

/// Publication: every accepted update gets a new config generation
/// (`control_plane.config_generation`), and every shard reports the one it
/// serves (`server.worker_<i>.config_generation`) once its snapshot is
/// rebuilt.  No timing is asserted, only that each update reaches every shard.
#[test]
fn each_update_reaches_every_shard() {
    let (cp, gw, _a, b, addr) = start_with(&["--shards", "2"]);
    let generation = |name: &str| gw.stat_opt(name).unwrap_or_else(|| panic!("{name} in /stats"));
    let all_serve = |g: u64| (0..2).all(|i| generation(&format!("server.worker_{i}.config_generation")) == g);
    let published = generation("control_plane.config_generation");
    assert!(published > 0, "the initial sync published configs");
    wait_until("both shards serve the published generation", &gw, || {
        all_serve(generation("control_plane.config_generation"))
    });
    let published = generation("control_plane.config_generation");

    cp.set(ENDPOINT, "e2", vec![assignment("backend", &[&b])]);
    wait_until("EDS update to upstream b", &gw, || served_by(addr, "/echo").as_deref() == Some("b"));
    let next = generation("control_plane.config_generation");
    assert!(next > published, "a new generation per accepted update");
    wait_until("both shards serve the new generation", &gw, || all_serve(next));
}

/// A TCP proxy listener (`envoy.filters.network.tcp_proxy`) delivered over
/// LDS carries bytes to its (EDS) cluster, and goes away with LDS.
#[test]
fn tcp_proxy_listener_over_lds() {
    let (cp, gw, _a, _b, addr) = start();
    let tcp_port = free_port();
    let tcp_addr: SocketAddr = ([127, 0, 0, 1], tcp_port).into();
    let tcp = json!({"@type": LISTENER, "name": "tcp", "address": {"socket_address": {"address": "127.0.0.1", "port_value": tcp_port}},
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            "stat_prefix": "tcp", "cluster": "backend"}}]}]});
    cp.set(LISTENER, "l2", vec![listener("main", addr.port(), "routes", json!({})), tcp]);
    // Raw bytes through the TCP proxy reach upstream a (an HTTP request, so mg-upstream answers).
    wait_until("the TCP proxy listener forwards", &gw, || served_by(tcp_addr, "/echo").as_deref() == Some("a"));
    assert_eq!(served_by(addr, "/echo").as_deref(), Some("a"), "the HTTP listener is unaffected");
    cp.set(LISTENER, "l3", vec![listener("main", addr.port(), "routes", json!({}))]);
    wait_until("the TCP proxy listener removed", &gw, || std::net::TcpStream::connect(tcp_addr).is_err());
}

/// REST polling over TLS: the xDS cluster's `UpstreamTlsContext` trusts the
/// test CA and requires the server's SAN; the polls sync and serve.
#[test]
fn rest_polling_over_tls() {
    use testkit::certs::{make_ca, make_leaf};
    let dir = tempfile::tempdir().unwrap();
    make_ca(dir.path(), "ca");
    make_leaf(dir.path(), "ca", "server", "xds.test", &["DNS:xds.test"]);
    let read = |f: &str| std::fs::read(dir.path().join(f)).unwrap();
    let cp = XdsRestServer::start_tls(&read("server.pem"), &read("server.key"));
    let a = Upstream::start("a");
    let port = free_port();
    cp.set(CLUSTER, "c1", vec![eds_cluster("backend")]);
    cp.set(ENDPOINT, "e1", vec![assignment("backend", &[&a])]);
    cp.set(LISTENER, "l1", vec![listener("main", port, "routes", json!({}))]);
    cp.set(ROUTE, "r1", vec![routes("routes", to_cluster("backend"))]);
    let socket = format!(
        r#"    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        common_tls_context:
          validation_context:
            trusted_ca: {{ filename: {} }}
            match_typed_subject_alt_names: [{{ san_type: DNS, matcher: {{ exact: xds.test }} }}]
    load_assignment:
"#,
        dir.path().join("ca.pem").display()
    );
    let gw = Gateway::start(&bootstrap(cp.addr()).replace("    load_assignment:\n", &socket), &[], &[]);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_until("REST sync over TLS: traffic to upstream a", &gw, || served_by(addr, "/echo").as_deref() == Some("a"));
    // REST's ACK is the next poll (refresh_delay later).
    wait_until("LDS and RDS acknowledged over TLS", &gw, || acked(&cp, LISTENER, "l1") && acked(&cp, ROUTE, "r1"));
    assert_eq!(gw.stat("listener_manager.lds.update_failure"), 0, "no failed poll");
}
