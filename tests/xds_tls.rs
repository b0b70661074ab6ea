//! End-to-end xDS over TLS: the test control plane (`testkit::xds_server`)
//! serves gRPC over TLS and requires a client certificate (mTLS); a real
//! `meshgate` process names it through the xDS cluster's `transport_socket`
//! `envoy.transport_sockets.tls` (`UpstreamTlsContext`: `sni`,
//! `trusted_ca`, a SAN matcher, a client certificate).
//!
//! * the right CA: meshgate syncs (CDS→EDS, LDS→RDS over ADS) and proxies;
//! * a CA that did not sign the server: no stream comes up
//!   (`control_plane.connected_state` stays 0, the server sees no request)
//!   and the log says why (the certificate's issuer is unknown);
//! * the right CA but a SAN matcher the server's certificate fails: same.
//!
//! Certificates are generated at run time with the `openssl` CLI.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::certs::{make_ca, make_leaf};
use testkit::xds_server::{XdsServer, CLUSTER, ENDPOINT, LISTENER, ROUTE};
use testkit::{free_port, Client, Gateway, Upstream};

const HCM: &str =
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const WAIT: Duration = Duration::from_secs(20);

/// A bootstrap whose xDS cluster speaks TLS to `xds`, trusting `ca` and
/// presenting `client` (`<dir>/<name>.pem` / `.key`), requiring `san`.
fn bootstrap(xds: SocketAddr, dir: &Path, ca: &str, san: &str) -> String {
    let p = |f: &str| dir.join(f).display().to_string();
    format!(
        r#"node: {{ id: meshgate-tls, cluster: test }}
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {{{{ADMIN_PORT}}}} }} }}
dynamic_resources:
  ads_config:
    api_type: GRPC
    transport_api_version: V3
    grpc_services: [{{ envoy_grpc: {{ cluster_name: xds_cluster, retry_policy: {{ retry_back_off: {{ base_interval: 0.1s, max_interval: 0.5s }} }} }} }}]
  lds_config: {{ ads: {{}}, resource_api_version: V3 }}
  cds_config: {{ ads: {{}}, resource_api_version: V3 }}
static_resources:
  clusters:
  - name: xds_cluster
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http2_protocol_options: {{}} }}
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: xds.test
        common_tls_context:
          tls_certificates:
          - certificate_chain: {{ filename: {client_pem} }}
            private_key: {{ filename: {client_key} }}
          validation_context:
            trusted_ca: {{ filename: {ca_pem} }}
            match_typed_subject_alt_names: [{{ san_type: DNS, matcher: {{ exact: {san} }} }}]
    load_assignment:
      cluster_name: xds_cluster
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: {ip}, port_value: {port} }} }} }} }}] }}]
"#,
        client_pem = p("client.pem"),
        client_key = p("client.key"),
        ca_pem = p(&format!("{ca}.pem")),
        ip = xds.ip(),
        port = xds.port()
    )
}

fn enc(full_name: &str, v: Value) -> (String, Vec<u8>) {
    let name = v.get("name").or_else(|| v.get("cluster_name")).and_then(Value::as_str).unwrap_or_default().to_string();
    (name, control::bootstrap::dynamic::encode_json(full_name, &v).expect("resource encodes"))
}

/// CDS (EDS cluster `backend` → `up`), EDS, LDS (`main` on `port`, RDS
/// `routes`), RDS.
fn serve_config(cp: &XdsServer, port: u16, up: &Upstream) {
    let ads = json!({"ads": {}, "resource_api_version": "V3"});
    cp.set(
        CLUSTER,
        "c1",
        vec![enc(
            "envoy.config.cluster.v3.Cluster",
            json!({"name": "backend", "type": "EDS", "connect_timeout": "1s", "eds_cluster_config": {"eds_config": ads}}),
        )],
    );
    cp.set(
        ENDPOINT,
        "e1",
        vec![enc(
            "envoy.config.endpoint.v3.ClusterLoadAssignment",
            json!({"cluster_name": "backend", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                "address": up.addr.ip().to_string(), "port_value": up.addr.port()}}}}]}]}),
        )],
    );
    cp.set(
        LISTENER,
        "l1",
        vec![enc(
            "envoy.config.listener.v3.Listener",
            json!({"name": "main", "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
              "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
                "@type": HCM, "stat_prefix": "main",
                "rds": {"route_config_name": "routes", "config_source": ads},
                "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}]}),
        )],
    );
    cp.set(
        ROUTE,
        "r1",
        vec![enc(
            "envoy.config.route.v3.RouteConfiguration",
            json!({"name": "routes", "virtual_hosts": [{"name": "all", "domains": ["*"],
                "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "backend"}}]}]}),
        )],
    );
}

/// A CA `ca` with a server leaf (`DNS:xds.test`) and a client leaf, and a
/// second, unrelated CA `other`.
fn certificates() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    make_ca(dir.path(), "ca");
    make_ca(dir.path(), "other");
    make_leaf(dir.path(), "ca", "server", "xds.test", &["DNS:xds.test"]);
    make_leaf(dir.path(), "ca", "client", "meshgate", &["URI:spiffe://test/meshgate"]);
    dir
}

fn mtls_server(dir: &Path) -> XdsServer {
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    XdsServer::start_tls(&read("server.pem"), &read("server.key"), Some(&read("ca.pem")))
}

fn served_by(addr: SocketAddr) -> Option<String> {
    let mut c = Client::try_connect(addr).ok()?;
    c.set_read_timeout(Duration::from_secs(5));
    c.try_send(&testkit::build_request("GET", "/echo", &[("host", "x")], b"")).ok()?;
    let r = c.try_read_response().ok().flatten()?;
    (r.status == 200).then(|| r.header("x-upstream-name").map(str::to_string)).flatten()
}

#[test]
fn mtls_to_the_management_server_syncs_and_serves() {
    let dir = certificates();
    let up = Upstream::start("tls-backend");
    let cp = mtls_server(dir.path());
    let port = free_port();
    serve_config(&cp, port, &up);
    let gw = Gateway::start(&bootstrap(cp.addr(), dir.path(), "ca", "xds.test"), &[], &[]);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + WAIT;
    while served_by(addr).as_deref() != Some("tls-backend") {
        assert!(Instant::now() < deadline, "no traffic after an xDS sync over mTLS\n{}", gw.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(gw.stat("control_plane.connected_state"), 1);
    let reqs = cp.requests();
    for t in [CLUSTER, ENDPOINT, LISTENER, ROUTE] {
        assert!(reqs.iter().any(|r| r.type_url == t && !r.version_info.is_empty()), "{t} ACKed over TLS");
    }
    // An update over the same TLS stream takes effect.
    let up2 = Upstream::start("tls-backend-2");
    cp.set(
        ENDPOINT,
        "e2",
        vec![enc(
            "envoy.config.endpoint.v3.ClusterLoadAssignment",
            json!({"cluster_name": "backend", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                "address": up2.addr.ip().to_string(), "port_value": up2.addr.port()}}}}]}]}),
        )],
    );
    while served_by(addr).as_deref() != Some("tls-backend-2") {
        assert!(Instant::now() < deadline, "EDS update over mTLS not applied\n{}", gw.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts meshgate against the mTLS server with a bootstrap that must not
/// connect; checks it stays disconnected and logs `expected` in the
/// reason.
fn refused(ca: &str, san: &str, expected: &str) {
    let dir = certificates();
    let cp = mtls_server(dir.path());
    serve_config(&cp, free_port(), &Upstream::start("unused"));
    let gw = Gateway::start(&bootstrap(cp.addr(), dir.path(), ca, san), &[], &[]);
    // Several attempts (back-off 100 ms .. 500 ms) have failed by then.
    let deadline = Instant::now() + WAIT;
    loop {
        let log = gw.stderr();
        if log.matches("xDS stream failed").count() >= 3 {
            assert!(log.contains("TLS to xDS server") && log.contains(expected), "clear TLS error in the log:\n{log}");
            break;
        }
        assert!(Instant::now() < deadline, "no failed xDS attempts logged\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(gw.stat("control_plane.connected_state"), 0);
    assert!(cp.requests().is_empty(), "no request may reach the server: {:?}", cp.requests());
    assert_eq!(cp.streams_opened(), 0);
}

#[test]
fn wrong_ca_is_not_connected_and_says_why() {
    refused("other", "xds.test", "UnknownIssuer");
}

#[test]
fn san_mismatch_is_not_connected_and_says_why() {
    refused("ca", "not-the-server.test", "NotValidForName");
}
