//! xDS churn: the test control plane pushes a new route / cluster /
//! endpoint version every 100 ms for 60 s while clients send requests
//! continuously, one over a keep-alive connection and one opening a new
//! connection per request.  Acceptance: zero failed requests, and every
//! response comes from a backend valid for the snapshot that served it.
//!
//! How "valid for the snapshot" is checked: version `k` of the route
//! configuration sends everything to cluster `c{k % 3}` and stamps the
//! request with `x-config-version: k`; cluster `cN` only ever has endpoints
//! of upstreams named `a`/`b`/`c` (N = 0/1/2), while its EDS assignment
//! churns between {N1}, {N2} and {N1, N2}.  So the echoed
//! `x-config-version` names the route version that served the request and
//! `x-upstream-name` must be exactly that version's backend letter — a
//! request routed with one snapshot's routes and another's clusters would
//! show up as a mismatch.  Versions seen on the keep-alive connection must
//! also never go backwards.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::xds_server::{XdsServer, CLUSTER, ENDPOINT, LISTENER, ROUTE};
use testkit::{build_request, free_port, Client, Echo, Gateway, Upstream};

const HCM: &str =
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const CHURN: Duration = Duration::from_secs(60);
const STEP: Duration = Duration::from_millis(100);
const LETTERS: [&str; 3] = ["a", "b", "c"];

fn enc(full_name: &str, v: Value) -> (String, Vec<u8>) {
    let name = v.get("name").or_else(|| v.get("cluster_name")).and_then(Value::as_str).unwrap_or_default().to_string();
    (name, control::bootstrap::dynamic::encode_json(full_name, &v).expect("resource encodes"))
}

fn bootstrap(xds: SocketAddr) -> String {
    format!(
        r#"admin: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {{{{ADMIN_PORT}}}} }} }} }}
dynamic_resources:
  ads_config: {{ api_type: GRPC, transport_api_version: V3, grpc_services: [{{ envoy_grpc: {{ cluster_name: xds }} }}] }}
  lds_config: {{ ads: {{}}, resource_api_version: V3 }}
  cds_config: {{ ads: {{}}, resource_api_version: V3 }}
static_resources:
  clusters:
  - name: xds
    http2_protocol_options: {{}}
    load_assignment:
      cluster_name: xds
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: {ip}, port_value: {port} }} }} }} }}] }}]
"#,
        ip = xds.ip(),
        port = xds.port()
    )
}

fn clusters(k: u64) -> Vec<(String, Vec<u8>)> {
    (0..3)
        .map(|n| {
            // The clusters not in use change too (connect_timeout), so CDS churns.
            let timeout = if n as u64 == (k + 1) % 3 && k % 2 == 1 { "2s" } else { "1s" };
            enc(
                "envoy.config.cluster.v3.Cluster",
                json!({"name": format!("c{n}"), "type": "EDS", "connect_timeout": timeout,
                       "eds_cluster_config": {"eds_config": {"ads": {}}}}),
            )
        })
        .collect()
}

fn assignments(k: u64, ups: &[Vec<Upstream>]) -> Vec<(String, Vec<u8>)> {
    (0..3)
        .map(|n| {
            let pick: Vec<&Upstream> = match (k + n as u64) % 3 {
                0 => vec![&ups[n][0]],
                1 => vec![&ups[n][1]],
                _ => vec![&ups[n][0], &ups[n][1]],
            };
            let eps: Vec<Value> = pick
                .iter()
                .map(|u| json!({"endpoint": {"address": {"socket_address": {"address": u.addr.ip().to_string(), "port_value": u.addr.port()}}}}))
                .collect();
            enc(
                "envoy.config.endpoint.v3.ClusterLoadAssignment",
                json!({"cluster_name": format!("c{n}"), "endpoints": [{"lb_endpoints": eps}]}),
            )
        })
        .collect()
}

fn routes(k: u64) -> Vec<(String, Vec<u8>)> {
    vec![enc(
        "envoy.config.route.v3.RouteConfiguration",
        json!({"name": "routes", "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "route": {"cluster": format!("c{}", k % 3)},
             "request_headers_to_add": [{"header": {"key": "x-config-version", "value": k.to_string()}}]}]}]}),
    )]
}

fn listener(port: u16) -> (String, Vec<u8>) {
    enc(
        "envoy.config.listener.v3.Listener",
        json!({"name": "main", "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
          "filter_chains": [{"filters": [{"name": "hcm", "typed_config": {
            "@type": HCM, "stat_prefix": "main",
            "rds": {"route_config_name": "routes", "config_source": {"ads": {}}},
            "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}]}),
    )
}

fn push(cp: &XdsServer, k: u64, ups: &[Vec<Upstream>]) {
    let v = k.to_string();
    cp.set(CLUSTER, &v, clusters(k));
    cp.set(ENDPOINT, &v, assignments(k, ups));
    cp.set(ROUTE, &v, routes(k));
}

/// Checks one response; returns its config version.
fn check(r: &testkit::Response) -> Result<u64, String> {
    if r.status != 200 {
        return Err(format!("status {} body {}", r.status, r.body_str()));
    }
    let echo = Echo::from_response(r);
    let k: u64 = echo.header("x-config-version").ok_or("no x-config-version")?.parse().map_err(|e| format!("{e}"))?;
    let name = r.header("x-upstream-name").ok_or("no x-upstream-name")?;
    if name != LETTERS[(k % 3) as usize] {
        return Err(format!("version {k} routes to c{} ({}), but {name} answered", k % 3, LETTERS[(k % 3) as usize]));
    }
    Ok(k)
}

#[test]
fn churn_every_100ms_for_60s_without_a_failed_request() {
    let ups: Vec<Vec<Upstream>> = LETTERS.iter().map(|l| vec![Upstream::start(l), Upstream::start(l)]).collect();
    let cp = XdsServer::start();
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    cp.set(LISTENER, "1", vec![listener(port)]);
    push(&cp, 0, &ups);
    let gw = Gateway::start(&bootstrap(cp.addr()), &[], &[]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while Client::try_connect(addr).is_err() {
        assert!(Instant::now() < deadline, "initial sync\n{}", gw.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let keepalive = {
        let stop = stop.clone();
        std::thread::spawn(move || -> Result<(u64, u64), String> {
            let mut c = Client::connect(addr);
            let (mut n, mut last) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                c.try_send(&build_request("GET", "/echo", &[("host", "x")], b"")).map_err(|e| format!("send: {e}"))?;
                let r = c.try_read_response().map_err(|e| format!("read: {e}"))?.ok_or("connection closed")?;
                let k = check(&r).map_err(|e| format!("keep-alive request {n}: {e}"))?;
                if k < last {
                    return Err(format!("version went backwards on one connection: {last} then {k}"));
                }
                last = k;
                n += 1;
            }
            Ok((n, last))
        })
    };
    let fresh = {
        let stop = stop.clone();
        std::thread::spawn(move || -> Result<u64, String> {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mut c = Client::try_connect(addr).map_err(|e| format!("connect: {e}"))?;
                c.try_send(&build_request("GET", "/echo", &[("host", "x"), ("connection", "close")], b""))
                    .map_err(|e| format!("send: {e}"))?;
                let r = c.try_read_response().map_err(|e| format!("read: {e}"))?.ok_or("connection closed")?;
                check(&r).map_err(|e| format!("new-connection request {n}: {e}"))?;
                n += 1;
            }
            Ok(n)
        })
    };

    let start = Instant::now();
    let mut k = 0;
    while start.elapsed() < CHURN {
        k += 1;
        push(&cp, k, &ups);
        // On a fixed 100 ms schedule (the push's own time included).
        let next = start + STEP * k as u32;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    stop.store(true, Ordering::Relaxed);
    let ka = keepalive.join().unwrap();
    let fr = fresh.join().unwrap();
    let (ka_n, ka_last) = ka.unwrap_or_else(|e| panic!("keep-alive client: {e}\n{}", gw.stderr()));
    let fr_n = fr.unwrap_or_else(|e| panic!("new-connection client: {e}\n{}", gw.stderr()));
    eprintln!(
        "churn: {k} versions pushed; {ka_n} keep-alive and {fr_n} new-connection requests; last version seen {ka_last}"
    );
    assert!(ka_n > 100 && fr_n > 100, "both clients kept sending");
    // The gateway kept up: the last version it served is recent.
    assert!(ka_last + 50 >= k, "served version {ka_last} lags far behind pushed {k}");
    assert_eq!(
        gw.stat("rds.update_rejected")
            + gw.stat("eds.update_rejected")
            + gw.stat("cluster_manager.cds.update_rejected"),
        0
    );
}
