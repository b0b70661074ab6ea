//! End-to-end xDS: a real `meshgate` process driven over ADS (gRPC, state of
//! the world) by the test control plane (`testkit::xds_server`, a tonic
//! server built from Envoy's protos), in front of real `mg-upstream`s.
//!
//! Covered (state of the world unless said): initial sync (CDS→EDS, LDS→RDS) then traffic; route change; EDS
//! endpoint change; cluster removed; listener added and removed; an invalid
//! resource NACKed with a precise detail while traffic carries on; a
//! control-plane outage (traffic continues, reconnect with back-off,
//! re-sync); an RBAC whitelist changed over LDS applying to the next request
//! on an already open connection; pooled connections surviving an EDS
//! update; the delta protocol with `removed_resources`; the subscription
//! stats; a busy connection on a removed listener closed after
//! `--drain-time-s`; TLS / mTLS to the control plane (the xDS cluster's
//! `UpstreamTlsContext`), and a wrong CA or SAN refused with the reason
//! logged (certificates made at run time with the `openssl` CLI).
//!
//! The outage test shortens Envoy's 500 ms / 30 s back-off with
//! `envoy_grpc.retry_policy.retry_back_off` (100 ms / 1 s) and keeps the
//! server down for 3 s instead of 30 s; the behaviour exercised (stream
//! failure, retries with growing back-off, re-sync on reconnect) is the same.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::xds_server::{XdsServer, CLUSTER, ENDPOINT, LISTENER, ROUTE};
use testkit::{free_port, Client, Gateway, Response, Upstream};

const HCM: &str =
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const WAIT: Duration = Duration::from_secs(20);

fn bootstrap(xds: SocketAddr, backoff: &str) -> String {
    format!(
        r#"node: {{ id: meshgate-test, cluster: test, metadata: {{ role: gateway }} }}
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {{{{ADMIN_PORT}}}} }} }}
dynamic_resources:
  ads_config:
    api_type: GRPC
    transport_api_version: V3
    grpc_services: [{{ envoy_grpc: {{ cluster_name: xds_cluster {backoff} }} }}]
  lds_config: {{ ads: {{}}, resource_api_version: V3 }}
  cds_config: {{ ads: {{}}, resource_api_version: V3 }}
static_resources:
  clusters:
{xds_cluster}"#,
        xds_cluster = testkit::xds_cluster_yaml(xds),
    )
}

fn enc(full_name: &str, v: Value) -> (String, Vec<u8>) {
    let name = v.get("name").or_else(|| v.get("cluster_name")).and_then(Value::as_str).unwrap_or_default().to_string();
    (name, control::bootstrap::dynamic::encode_json(full_name, &v).expect("resource encodes"))
}

fn router() -> Value {
    json!({"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}})
}

fn listener(name: &str, port: u16, rds: &str) -> (String, Vec<u8>) {
    listener_with(name, port, rds, vec![router()])
}

fn listener_with(name: &str, port: u16, rds: &str, http_filters: Vec<Value>) -> (String, Vec<u8>) {
    enc(
        "envoy.config.listener.v3.Listener",
        json!({"name": name, "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
          "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
            "@type": HCM, "stat_prefix": name,
            "rds": {"route_config_name": rds, "config_source": {"ads": {}, "resource_api_version": "V3"}},
            "http_filters": http_filters}}]}]}),
    )
}

fn routes(name: &str, routes: Value) -> (String, Vec<u8>) {
    enc(
        "envoy.config.route.v3.RouteConfiguration",
        json!({"name": name, "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]}),
    )
}

fn to_cluster(cluster: &str) -> Value {
    json!([{"match": {"prefix": "/"}, "route": {"cluster": cluster}}])
}

fn eds_cluster(name: &str) -> (String, Vec<u8>) {
    enc(
        "envoy.config.cluster.v3.Cluster",
        json!({"name": name, "type": "EDS", "connect_timeout": "1s",
            "eds_cluster_config": {"eds_config": {"ads": {}, "resource_api_version": "V3"}}}),
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

/// One GET on a fresh connection, `None` when nothing answers.
fn get(addr: SocketAddr, path: &str) -> Option<Response> {
    let mut c = Client::try_connect(addr).ok()?;
    c.set_read_timeout(Duration::from_secs(5));
    c.try_send(&testkit::build_request("GET", path, &[("host", "x")], b"")).ok()?;
    c.try_read_response().ok().flatten()
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

fn served_by(addr: SocketAddr, path: &str) -> Option<String> {
    get(addr, path).filter(|r| r.status == 200).and_then(|r| r.header("x-upstream-name").map(str::to_string))
}

/// The common start: CDS (EDS cluster `backend` → `a`), LDS (listener
/// `main` on a fresh port, RDS `routes` → `backend`).
fn start(backoff: &str) -> (XdsServer, Gateway, Upstream, Upstream, SocketAddr) {
    start_with_args(backoff, &[])
}

fn start_with_args(backoff: &str, args: &[&str]) -> (XdsServer, Gateway, Upstream, Upstream, SocketAddr) {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let cp = XdsServer::start();
    let port = free_port();
    cp.set(CLUSTER, "c1", vec![eds_cluster("backend")]);
    cp.set(ENDPOINT, "e1", vec![assignment("backend", &[&a])]);
    cp.set(LISTENER, "l1", vec![listener("main", port, "routes")]);
    cp.set(ROUTE, "r1", vec![routes("routes", to_cluster("backend"))]);
    let gw = Gateway::start(&bootstrap(cp.addr(), backoff), &[], args);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_until("initial sync: traffic to upstream a", &gw, || served_by(addr, "/echo").as_deref() == Some("a"));
    (cp, gw, a, b, addr)
}

fn acked(cp: &XdsServer, type_url: &str, version: &str) -> bool {
    cp.requests().iter().any(|r| {
        r.type_url == type_url && r.version_info == version && r.error_detail.is_none() && !r.response_nonce.is_empty()
    })
}

#[test]
fn initial_sync_then_route_endpoint_and_cluster_changes() {
    let (cp, gw, a, b, addr) = start("");
    // Every type was ACKed with its version; the node came on the first request only.
    for (t, v) in [(CLUSTER, "c1"), (ENDPOINT, "e1"), (LISTENER, "l1"), (ROUTE, "r1")] {
        assert!(acked(&cp, t, v), "{t} {v} ACKed: {:?}", cp.requests());
    }
    let reqs = cp.requests();
    assert_eq!(reqs.iter().filter(|r| r.node.is_some()).count(), 1);
    let node = reqs[0].node.as_ref().unwrap();
    assert_eq!((node.id.as_str(), node.cluster.as_str()), ("meshgate-test", "test"));
    assert_eq!(gw.stat("control_plane.connected_state"), 1);
    assert!(gw.stat("listener_manager.lds.update_success") >= 1);
    assert!(gw.stat("cluster_manager.cds.update_success") >= 1);
    assert!(gw.stat("rds.update_success") >= 1 && gw.stat("eds.update_success") >= 1);
    assert_ne!(gw.stat_opt("listener_manager.lds.version"), None);
    let prom = gw.admin_get("/stats/prometheus").body_str();
    for name in [
        "envoy_control_plane_connected_state",
        "envoy_listener_manager_lds_update_success",
        "envoy_cluster_manager_cds_update_attempt",
    ] {
        assert!(prom.lines().any(|l| l.starts_with(name)), "{name} in /stats/prometheus");
    }

    // /config_dump: static and dynamic resources, with version and time.
    let dump = gw.admin_get("/config_dump").json();
    let configs = dump["configs"].as_array().unwrap();
    let of = |t: &str| configs.iter().find(|c| c["@type"].as_str().unwrap().ends_with(t)).unwrap().clone();
    let clusters = of("ClustersConfigDump");
    assert_eq!(clusters["static_clusters"][0]["cluster"]["name"], "xds_cluster");
    assert_eq!(clusters["dynamic_active_clusters"][0]["cluster"]["name"], "backend");
    assert_eq!(clusters["dynamic_active_clusters"][0]["version_info"], "c1");
    assert!(clusters["dynamic_active_clusters"][0]["last_updated"].as_str().unwrap().ends_with('Z'));
    let listeners = of("ListenersConfigDump");
    assert_eq!(listeners["dynamic_listeners"][0]["name"], "main");
    assert_eq!(listeners["dynamic_listeners"][0]["active_state"]["version_info"], "l1");
    assert_eq!(
        listeners["dynamic_listeners"][0]["active_state"]["listener"]["@type"],
        "type.googleapis.com/envoy.config.listener.v3.Listener"
    );
    assert_eq!(of("RoutesConfigDump")["dynamic_route_configs"][0]["route_config"]["name"], "routes");

    // EDS: the endpoint moves from a to b.
    cp.set(ENDPOINT, "e2", vec![assignment("backend", &[&b])]);
    wait_until("EDS change to upstream b", &gw, || served_by(addr, "/echo").as_deref() == Some("b"));
    // EDS: both endpoints; both get traffic.
    cp.set(ENDPOINT, "e3", vec![assignment("backend", &[&a, &b])]);
    let mut seen = std::collections::HashSet::new();
    wait_until("EDS with both endpoints", &gw, || {
        if let Some(n) = served_by(addr, "/echo") {
            seen.insert(n);
        }
        seen.len() == 2
    });

    // RDS: a route change takes effect.
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
    assert!(served_by(addr, "/echo").is_some());

    // CDS: the cluster goes away; its route answers 503 (no cluster).
    cp.set(CLUSTER, "c2", vec![]);
    wait_until("cluster removed → 503", &gw, || get(addr, "/echo").is_some_and(|r| r.status == 503));
    // (ACKs may reach the server just after the shards switched.)
    wait_until("c2 ACKed", &gw, || acked(&cp, CLUSTER, "c2"));
    // The EDS subscription was dropped with it.
    wait_until("EDS unsubscribed", &gw, || {
        cp.requests().iter().any(|r| r.type_url == ENDPOINT && r.resource_names.is_empty() && r.version_info == "e3")
    });
    drop(gw);
}

#[test]
fn invalid_resource_is_nacked_with_detail_and_traffic_is_unaffected() {
    let (cp, gw, _a, _b, addr) = start("");
    // An HCM field meshgate does not implement.
    let (name, _) = listener("main", addr.port(), "routes");
    let bad = enc(
        "envoy.config.listener.v3.Listener",
        json!({"name": name, "address": {"socket_address": {"address": "127.0.0.1", "port_value": addr.port()}},
          "filter_chains": [{"filters": [{"name": "hcm", "typed_config": {
            "@type": HCM, "stat_prefix": "main", "add_user_agent": true,
            "rds": {"route_config_name": "routes", "config_source": {"ads": {}}},
            "http_filters": [router()]}}]}]}),
    );
    cp.set(LISTENER, "l2-bad", vec![bad]);
    let nack = cp
        .wait_for_request(WAIT, |r| r.type_url == LISTENER && r.error_detail.is_some())
        .unwrap_or_else(|| panic!("no NACK\n{}", gw.stderr()));
    let detail = &nack.error_detail.as_ref().unwrap().message;
    assert!(
        detail
            .contains("Listener \"main\": filter_chains[0].filters[0].typed_config.add_user_agent: unsupported field"),
        "{detail}"
    );
    assert_eq!(nack.version_info, "l1", "a NACK carries the last accepted version");
    assert_eq!(served_by(addr, "/echo").as_deref(), Some("a"), "traffic unaffected");
    gw.wait_stat("listener_manager.lds.update_rejected", 1, WAIT);
    assert_eq!(gw.stat("listener_manager.lds.update_rejected"), 1);

    // A semantic error in RDS (bad domain) is NACKed too; the old routes keep serving.
    cp.set(
        ROUTE,
        "r2-bad",
        vec![enc(
            "envoy.config.route.v3.RouteConfiguration",
            json!({"name": "routes", "virtual_hosts": [{"name": "all", "domains": ["a.*.com"], "routes": to_cluster("backend")}]}),
        )],
    );
    let nack = cp.wait_for_request(WAIT, |r| r.type_url == ROUTE && r.error_detail.is_some()).expect("RDS NACK");
    assert!(nack
        .error_detail
        .unwrap()
        .message
        .starts_with("RouteConfiguration \"routes\": virtual_hosts[0].domains[0]"));
    assert_eq!(nack.version_info, "r1");
    assert_eq!(served_by(addr, "/echo").as_deref(), Some("a"));

    // A good update afterwards applies normally.
    cp.set(LISTENER, "l3", vec![listener("main", addr.port(), "routes")]);
    wait_until("l3 ACKed", &gw, || acked(&cp, LISTENER, "l3"));
    assert_eq!(served_by(addr, "/echo").as_deref(), Some("a"));
}

/// The peer closed the connection (EOF or reset), as opposed to a read timeout.
fn closed(c: &mut Client) -> bool {
    match c.try_read_response() {
        Ok(None) => true,
        Ok(Some(_)) => false,
        Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
    }
}

#[test]
fn listeners_added_and_removed() {
    let (cp, gw, _a, b, addr) = start("");
    let port2 = free_port();
    let addr2: SocketAddr = ([127, 0, 0, 1], port2).into();
    cp.set(CLUSTER, "c2", vec![eds_cluster("backend"), eds_cluster("other")]);
    cp.set(ENDPOINT, "e2", vec![assignment("backend", &[&_a]), assignment("other", &[&b])]);
    cp.set(ROUTE, "r2", vec![routes("routes", to_cluster("backend")), routes("second", to_cluster("other"))]);
    cp.set(LISTENER, "l2", vec![listener("main", addr.port(), "routes"), listener("second", port2, "second")]);
    wait_until("the added listener serves", &gw, || served_by(addr2, "/echo").as_deref() == Some("b"));
    assert_eq!(served_by(addr, "/echo").as_deref(), Some("a"));

    // On the listener about to go: an idle keep-alive connection parked
    // (idle past the gateway's park delay, 1 s with few connections), one
    // idle but not yet parked, and one with a request in flight (the
    // upstream answers after 3 s).
    let mut idle = Client::connect(addr2);
    assert_eq!(idle.get("/echo").status, 200);
    std::thread::sleep(Duration::from_millis(1500));
    let mut fresh_idle = Client::connect(addr2);
    assert_eq!(fresh_idle.get("/echo").status, 200);
    let mut busy = Client::connect(addr2);
    busy.set_read_timeout(Duration::from_secs(15));
    busy.send(&testkit::build_request("GET", "/delay/3000", &[("host", "x")], b""));
    std::thread::sleep(Duration::from_millis(300));
    cp.set(LISTENER, "l3", vec![listener("main", addr.port(), "routes")]);
    wait_until("the removed listener refuses connections", &gw, || std::net::TcpStream::connect(addr2).is_err());
    // The idle connection is closed at once (not at its idle timeout, 1 h by default).
    idle.set_read_timeout(Duration::from_secs(10));
    assert!(closed(&mut idle), "parked idle connection closed by the drain");
    fresh_idle.set_read_timeout(Duration::from_secs(10));
    assert!(closed(&mut fresh_idle), "unparked idle connection closed by the drain");
    // The request in flight completes, with `Connection: close`, and the connection ends.
    let r = busy.try_read_response().expect("the in-flight response").expect("a response");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"), "the last response says close");
    assert!(closed(&mut busy), "closed after the response");
    assert_eq!(served_by(addr, "/echo").as_deref(), Some("a"));
}

#[test]
fn busy_connection_on_a_removed_listener_is_closed_after_drain_time() {
    let (cp, gw, _a, _b, addr) = start_with_args("", &["--drain-time-s", "2"]);
    let port2 = free_port();
    let addr2: SocketAddr = ([127, 0, 0, 1], port2).into();
    cp.set(LISTENER, "l2", vec![listener("main", addr.port(), "routes"), listener("second", port2, "routes")]);
    wait_until("the added listener serves", &gw, || served_by(addr2, "/echo").as_deref() == Some("a"));
    // A request that would take 20 s, in flight when the listener goes.
    let mut busy = Client::connect(addr2);
    busy.set_read_timeout(Duration::from_secs(30));
    busy.send(&testkit::build_request("GET", "/delay/20000", &[("host", "x")], b""));
    std::thread::sleep(Duration::from_millis(300));
    cp.set(LISTENER, "l3", vec![listener("main", addr.port(), "routes")]);
    let removed = Instant::now();
    wait_until("the removed listener refuses connections", &gw, || std::net::TcpStream::connect(addr2).is_err());
    // Closed without a response once --drain-time-s (2 s) has passed.
    let read = busy.try_read_response();
    let waited = removed.elapsed();
    assert!(matches!(read, Ok(None)) || read.is_err(), "no response, the connection was closed: {read:?}");
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(15),
        "closed {waited:?} after the removal (drain time 2 s, request 20 s)"
    );
    assert_eq!(gw.wait_stat("http.second.downstream_cx_destroy_local_active_rq", 1, WAIT), 1);
    assert_eq!(served_by(addr, "/echo").as_deref(), Some("a"), "the remaining listener serves");
}

/// The same bound for an HTTP/2 connection (GOAWAY at the removal, the open
/// stream cut at `--drain-time-s`) and for a TCP proxy connection.
#[test]
fn busy_http2_and_tcp_proxy_connections_on_a_removed_listener_are_closed_after_drain_time() {
    let (cp, gw, _a, _b, addr) = start_with_args("", &["--drain-time-s", "2"]);
    let (h2_port, tcp_port) = (free_port(), free_port());
    let h2_addr: SocketAddr = ([127, 0, 0, 1], h2_port).into();
    let tcp_addr: SocketAddr = ([127, 0, 0, 1], tcp_port).into();
    let tcp = enc(
        "envoy.config.listener.v3.Listener",
        json!({"name": "tcp", "address": {"socket_address": {"address": "127.0.0.1", "port_value": tcp_port}},
          "filter_chains": [{"filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            "stat_prefix": "tcp", "cluster": "backend"}}]}]}),
    );
    cp.set(LISTENER, "l2", vec![listener("main", addr.port(), "routes"), listener("second", h2_port, "routes"), tcp]);
    wait_until("the added listeners serve", &gw, || {
        served_by(h2_addr, "/echo").as_deref() == Some("a") && served_by(tcp_addr, "/echo").as_deref() == Some("a")
    });
    // Requests that would take 20 s: one HTTP/2 stream, one through the TCP proxy.
    let h2_client = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "--http2-prior-knowledge", "--max-time", "30"])
        .arg(format!("http://{h2_addr}/delay/20000"))
        .spawn()
        .expect("curl runs");
    let mut tcp_client = Client::connect(tcp_addr);
    tcp_client.set_read_timeout(Duration::from_secs(30));
    tcp_client.send(&testkit::build_request("GET", "/delay/20000", &[("host", "x")], b""));
    std::thread::sleep(Duration::from_millis(500));
    cp.set(LISTENER, "l3", vec![listener("main", addr.port(), "routes")]);
    let removed = Instant::now();
    let tcp_read = tcp_client.try_read_response();
    let tcp_waited = removed.elapsed();
    let h2_status = h2_client.wait_with_output().expect("curl ends").status;
    let h2_waited = removed.elapsed();
    assert!(matches!(tcp_read, Ok(None)) || tcp_read.is_err(), "no response through the TCP proxy: {tcp_read:?}");
    assert!(!h2_status.success(), "the HTTP/2 stream was cut, not answered");
    for (what, waited) in [("TCP proxy", tcp_waited), ("HTTP/2", h2_waited)] {
        assert!(
            waited >= Duration::from_millis(1500) && waited < Duration::from_secs(15),
            "{what} connection closed {waited:?} after the removal (drain time 2 s, request 20 s)"
        );
    }
    assert_eq!(gw.wait_stat("http.second.downstream_cx_destroy_local_active_rq", 1, WAIT), 1);
    assert_eq!(served_by(addr, "/echo").as_deref(), Some("a"), "the remaining listener serves");
}

/// Envoy's subscription stats: per type (`eds.init_fetch_timeout`,
/// `rds.version`) and per resource (`http.<stat_prefix>.rds.<name>.*`,
/// `cluster.<name>.*`: `version`, `update_empty`, `update_failure`).
#[test]
fn subscription_stats_per_type_and_per_resource() {
    let a = Upstream::start("a");
    let cp = XdsServer::start();
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    cp.set(CLUSTER, "c1", vec![eds_cluster("backend")]);
    cp.withhold(ENDPOINT, true);
    cp.set(ENDPOINT, "e1", vec![assignment("backend", &[&a])]);
    cp.set(LISTENER, "l1", vec![listener("main", port, "routes")]);
    cp.set(ROUTE, "r1", vec![routes("routes", to_cluster("backend"))]);
    let yaml = bootstrap(cp.addr(), ", retry_policy: { retry_back_off: { base_interval: 0.1s, max_interval: 0.5s } }")
        .replace(
            "cds_config: { ads: {}, resource_api_version: V3 }",
            "cds_config: { ads: {}, resource_api_version: V3, initial_fetch_timeout: 1s }",
        );
    let gw = Gateway::start(&yaml, &[], &[]);
    // EDS withheld: after 1 s the cluster goes live without endpoints.
    assert_eq!(gw.wait_stat("eds.init_fetch_timeout", 1, WAIT), 1);
    wait_until("503 without endpoints", &gw, || get(addr, "/echo").is_some_and(|r| r.status == 503));
    cp.withhold(ENDPOINT, false);
    wait_until("endpoints delivered", &gw, || served_by(addr, "/echo").as_deref() == Some("a"));

    // `version`: the xxHash64 of the version_info, per type and per resource.
    let hash = |v: &str| xxhash_rust::xxh64::xxh64(v.as_bytes(), 0) as i64;
    let gauge = |name: &str| {
        gw.stats().lines().find_map(|l| l.strip_prefix(&format!("{name}: ")).map(|v| v.trim().parse::<i64>().unwrap()))
    };
    assert_eq!(gauge("rds.version"), Some(hash("r1")));
    assert_eq!(gauge("http.main.rds.routes.version"), Some(hash("r1")));
    assert_eq!(gauge("cluster.backend.version"), Some(hash("e1")));
    assert_eq!(gw.stat("http.main.rds.routes.update_success"), 1);

    // An RDS response without the subscribed route configuration:
    // `update_empty`, and the previous routes keep serving (as in Envoy).
    cp.set(ROUTE, "r2", vec![]);
    assert_eq!(gw.wait_stat("http.main.rds.routes.update_empty", 1, WAIT), 1);
    assert_eq!(served_by(addr, "/echo").as_deref(), Some("a"));
    assert_eq!(gauge("http.main.rds.routes.version"), Some(hash("r1")), "unchanged by an empty update");

    // The stream fails: every subscribed resource counts `update_failure`.
    cp.drop_streams();
    wait_until("per-resource update_failure", &gw, || {
        gw.stat("http.main.rds.routes.update_failure") >= 1
            && gw.stat("cluster.backend.update_failure") >= 1
            && gw.stat("rds.update_failure") >= 1
    });
}

#[test]
fn control_plane_outage_keeps_traffic_then_resyncs() {
    let backoff = ", retry_policy: { retry_back_off: { base_interval: 0.1s, max_interval: 1s } }";
    let (cp, gw, _a, b, addr) = start(backoff);
    let streams_before = cp.streams_opened();
    let requests_before = cp.requests().len();
    let stopped = cp.stop();
    wait_until("connected_state 0", &gw, || gw.stat("control_plane.connected_state") == 0);
    // Down for 3 s (see the file comment): traffic flows on the last config.
    let down_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < down_until {
        assert_eq!(served_by(addr, "/echo").as_deref(), Some("a"), "traffic during the outage");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(gw.stat("listener_manager.lds.update_failure") >= 1);
    let cp = stopped.restart();
    cp.set(ENDPOINT, "e9", vec![assignment("backend", &[&b])]);
    wait_until("re-sync after reconnect", &gw, || served_by(addr, "/echo").as_deref() == Some("b"));
    assert_eq!(gw.stat("control_plane.connected_state"), 1);
    assert!(cp.streams_opened() > streams_before);
    // The re-sent subscriptions carried the versions accepted before the outage.
    let after = &cp.requests()[requests_before..];
    let first = after.iter().find(|r| r.type_url == LISTENER).expect("LDS re-subscribed");
    assert_eq!(first.version_info, "l1");
    assert!(first.response_nonce.is_empty());
    assert_eq!(after.iter().filter(|r| r.node.is_some()).count(), 1, "node once on the new stream");

    // Dropping the stream (not the server) is survived too.
    cp.drop_streams();
    cp.set(ENDPOINT, "e10", vec![assignment("backend", &[&_a])]);
    wait_until("re-sync after a dropped stream", &gw, || served_by(addr, "/echo").as_deref() == Some("a"));
}

#[test]
fn rbac_whitelist_changed_over_lds_applies_to_the_next_request() {
    let (cp, gw, _a, _b, addr) = start("");
    let rbac = |cidr: &str| {
        json!({"name": "envoy.filters.http.rbac", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "rules": {"action": "ALLOW", "policies": {"whitelist": {
                "permissions": [{"any": true}],
                "principals": [{"direct_remote_ip": {"address_prefix": cidr, "prefix_len": 32}}]}}}}})
    };
    cp.set(LISTENER, "l2", vec![listener_with("main", addr.port(), "routes", vec![rbac("127.0.0.1"), router()])]);
    wait_until("whitelist with 127.0.0.1", &gw, || acked(&cp, LISTENER, "l2"));
    let mut conn = Client::connect(addr);
    assert_eq!(conn.get("/echo").status, 200);
    // The whitelist no longer lists us: the next request on the same connection is denied.
    cp.set(LISTENER, "l3", vec![listener_with("main", addr.port(), "routes", vec![rbac("10.9.9.9"), router()])]);
    wait_until("whitelist without 127.0.0.1", &gw, || acked(&cp, LISTENER, "l3"));
    // Publication reaches the shards right after the ACK; allow a moment.
    let deadline = Instant::now() + WAIT;
    loop {
        let r = conn.get("/echo");
        if r.status == 403 {
            break;
        }
        assert_eq!(r.status, 200);
        assert!(Instant::now() < deadline, "whitelist change never applied");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(get(addr, "/echo").map(|r| r.status), Some(403));
}

#[test]
fn eds_update_keeps_pooled_connections_to_endpoints_that_stay() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let cp = XdsServer::start();
    let port = free_port();
    cp.set(CLUSTER, "c1", vec![eds_cluster("backend")]);
    cp.set(ENDPOINT, "e1", vec![assignment("backend", &[&a])]);
    cp.set(LISTENER, "l1", vec![listener("main", port, "routes")]);
    cp.set(ROUTE, "r1", vec![routes("routes", to_cluster("backend"))]);
    // One shard: one upstream pool to look at.
    let gw = Gateway::start(&bootstrap(cp.addr(), ""), &[], &["--shards", "1"]);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_until("initial sync", &gw, || served_by(addr, "/echo").as_deref() == Some("a"));
    let first = get(addr, "/echo").unwrap();
    let conn_a = first.header("x-upstream-conn").unwrap().to_string();

    // b joins; a stays: requests that land on a reuse the pooled connection.
    cp.set(ENDPOINT, "e2", vec![assignment("backend", &[&a, &b])]);
    wait_until("b gets traffic", &gw, || served_by(addr, "/echo").as_deref() == Some("b"));
    let mut reused = false;
    for _ in 0..20 {
        let r = get(addr, "/echo").unwrap();
        if r.header("x-upstream-name") == Some("a") {
            assert_eq!(
                r.header("x-upstream-conn"),
                Some(conn_a.as_str()),
                "a's pooled connection survived the EDS update"
            );
            reused = true;
            break;
        }
    }
    assert!(reused, "no request reached a");
    assert_eq!(gw.stat("cluster.backend.upstream_cx_total"), 2, "one connection to a, one to b");
}

#[test]
fn delta_protocol_with_removed_resources() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let cp = XdsServer::start();
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    cp.set(CLUSTER, "c1", vec![eds_cluster("backend")]);
    cp.set(ENDPOINT, "e1", vec![assignment("backend", &[&a])]);
    cp.set(LISTENER, "l1", vec![listener("main", port, "routes")]);
    cp.set(ROUTE, "r1", vec![routes("routes", to_cluster("backend"))]);
    let gw = Gateway::start(&bootstrap(cp.addr(), "").replace("api_type: GRPC", "api_type: DELTA_GRPC"), &[], &[]);
    wait_until("initial delta sync", &gw, || served_by(addr, "/echo").as_deref() == Some("a"));
    let reqs = cp.delta_requests();
    assert!(cp.requests().is_empty(), "no state-of-the-world stream");
    assert_eq!(reqs.iter().filter(|r| r.node.is_some()).count(), 1);
    assert!(reqs.iter().any(|r| r.type_url == ROUTE && r.resource_names_subscribe == ["routes"]));
    assert!(reqs.iter().any(|r| r.type_url == LISTENER && !r.response_nonce.is_empty() && r.error_detail.is_none()));

    // Only the changed resource travels; the endpoint moves to b.
    cp.set(ENDPOINT, "e2", vec![assignment("backend", &[&b])]);
    wait_until("EDS change over delta", &gw, || served_by(addr, "/echo").as_deref() == Some("b"));

    // A second listener added, then removed with removed_resources.
    let port2 = free_port();
    let addr2: SocketAddr = ([127, 0, 0, 1], port2).into();
    cp.set(LISTENER, "l2", vec![listener("main", port, "routes"), listener("second", port2, "routes")]);
    wait_until("second listener", &gw, || served_by(addr2, "/echo").as_deref() == Some("b"));
    cp.set(LISTENER, "l3", vec![listener("main", port, "routes")]);
    wait_until("second listener removed", &gw, || std::net::TcpStream::connect(addr2).is_err());

    // Cluster removed → its route answers 503; the EDS name is unsubscribed.
    cp.set(CLUSTER, "c2", vec![]);
    wait_until("cluster removed → 503", &gw, || get(addr, "/echo").is_some_and(|r| r.status == 503));
    // (The unsubscribe may reach the server just after the shards switched.)
    wait_until("the EDS name unsubscribed", &gw, || {
        cp.delta_requests().iter().any(|r| r.type_url == ENDPOINT && r.resource_names_unsubscribe == ["backend"])
    });

    // An invalid resource: NACK with the detail; traffic as before.
    cp.set(
        ROUTE,
        "r2",
        vec![enc(
            "envoy.config.route.v3.RouteConfiguration",
            json!({"name": "routes", "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": to_cluster("backend"),
                   "rate_limits": [{"actions": [{"generic_key": {"descriptor_value": "x"}}]}]}]}),
        )],
    );
    let deadline = Instant::now() + WAIT;
    let nack = loop {
        if let Some(r) = cp.delta_requests().into_iter().find(|r| r.error_detail.is_some()) {
            break r;
        }
        assert!(Instant::now() < deadline, "no delta NACK\n{}", gw.stderr());
        std::thread::sleep(Duration::from_millis(20));
    };
    let detail = nack.error_detail.unwrap().message;
    assert!(
        detail.starts_with("RouteConfiguration \"routes\": virtual_hosts[0].rate_limits: unsupported field"),
        "{detail}"
    );
    assert_eq!(get(addr, "/echo").map(|r| r.status), Some(503));
    assert_eq!(gw.stat("rds.update_rejected"), 1);
}

// ------------------------------------------------------------ TLS to the server

/// The `transport_socket` of the xDS cluster: TLS trusting `<dir>/<ca>.pem`,
/// presenting `<dir>/client.pem`, SNI `xds.test`, the server's SAN must be
/// DNS `san`.
fn tls_bootstrap(xds: SocketAddr, dir: &std::path::Path, ca: &str, san: &str) -> String {
    let p = |f: &str| dir.join(f).display().to_string();
    let socket = format!(
        r#"    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: xds.test
        common_tls_context:
          tls_certificates: [{{ certificate_chain: {{ filename: {} }}, private_key: {{ filename: {} }} }}]
          validation_context:
            trusted_ca: {{ filename: {} }}
            match_typed_subject_alt_names: [{{ san_type: DNS, matcher: {{ exact: {san} }} }}]
    load_assignment:
"#,
        p("client.pem"),
        p("client.key"),
        p(&format!("{ca}.pem"))
    );
    let backoff = ", retry_policy: { retry_back_off: { base_interval: 0.1s, max_interval: 0.5s } }";
    bootstrap(xds, backoff).replace("    load_assignment:\n", &socket)
}

/// A CA `ca` with a server leaf (`DNS:xds.test`) and a client leaf, and an
/// unrelated CA `other`; and the test control plane serving over TLS,
/// requiring a client certificate signed by `ca` (mTLS).
fn mtls_control_plane() -> (tempfile::TempDir, XdsServer) {
    use testkit::certs::{make_ca, make_leaf};
    let dir = tempfile::tempdir().unwrap();
    make_ca(dir.path(), "ca");
    make_ca(dir.path(), "other");
    make_leaf(dir.path(), "ca", "server", "xds.test", &["DNS:xds.test"]);
    make_leaf(dir.path(), "ca", "client", "meshgate", &["URI:spiffe://test/meshgate"]);
    let read = |f: &str| std::fs::read(dir.path().join(f)).unwrap();
    let cp = XdsServer::start_tls(&read("server.pem"), &read("server.key"), Some(&read("ca.pem")));
    (dir, cp)
}

fn serve_config(cp: &XdsServer, port: u16, up: &Upstream) {
    cp.set(CLUSTER, "c1", vec![eds_cluster("backend")]);
    cp.set(ENDPOINT, "e1", vec![assignment("backend", &[up])]);
    cp.set(LISTENER, "l1", vec![listener("main", port, "routes")]);
    cp.set(ROUTE, "r1", vec![routes("routes", to_cluster("backend"))]);
}

#[test]
fn tls_mtls_to_the_management_server_syncs_and_serves() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let (dir, cp) = mtls_control_plane();
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    serve_config(&cp, port, &a);
    let gw = Gateway::start(&tls_bootstrap(cp.addr(), dir.path(), "ca", "xds.test"), &[], &[]);
    wait_until("sync over mTLS, then traffic", &gw, || served_by(addr, "/echo").as_deref() == Some("a"));
    assert_eq!(gw.stat("control_plane.connected_state"), 1);
    for (t, v) in [(CLUSTER, "c1"), (ENDPOINT, "e1"), (LISTENER, "l1"), (ROUTE, "r1")] {
        assert!(acked(&cp, t, v), "{t} {v} ACKed over TLS");
    }
    // An update over the same TLS stream takes effect.
    cp.set(ENDPOINT, "e2", vec![assignment("backend", &[&b])]);
    wait_until("EDS update over mTLS", &gw, || served_by(addr, "/echo").as_deref() == Some("b"));
}

/// meshgate against the mTLS control plane with a bootstrap that must not
/// connect: it stays disconnected and logs `expected` as the reason.
fn tls_refused(ca: &str, san: &str, expected: &str) {
    let (dir, cp) = mtls_control_plane();
    serve_config(&cp, free_port(), &Upstream::start("unused"));
    let gw = Gateway::start(&tls_bootstrap(cp.addr(), dir.path(), ca, san), &[], &[]);
    // Several attempts (back-off 100 ms .. 500 ms) fail meanwhile.
    wait_until("three failed attempts logged", &gw, || gw.stderr().matches("xDS stream failed").count() >= 3);
    let log = gw.stderr();
    assert!(log.contains("TLS to xDS server") && log.contains(expected), "a clear TLS error in the log:\n{log}");
    assert_eq!(gw.stat("control_plane.connected_state"), 0);
    assert!(gw.stat("listener_manager.lds.update_failure") >= 3);
    assert!(cp.requests().is_empty(), "no request may reach the server: {:?}", cp.requests());
    assert_eq!(cp.streams_opened(), 0);
}

#[test]
fn tls_wrong_ca_is_not_connected_and_says_why() {
    tls_refused("other", "xds.test", "UnknownIssuer");
}

#[test]
fn tls_san_mismatch_is_not_connected_and_says_why() {
    tls_refused("ca", "not-the-server.test", "NotValidForName");
}
