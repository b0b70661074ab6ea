//! The gray-release recipe switched live over xDS with zero failed
//! requests: a real `meshgate` driven over ADS by the test control plane
//! (`testkit::xds_server`), two real `mg-upstream` versions of a service
//! (`v1`, `v2`, one EDS cluster each), and clients sending continuously —
//! one over a single keep-alive connection, one on a new connection per
//! request — as plain users, gray users by header (`x-user-group: gray`)
//! and gray users by cookie (`gray=1`).  RDS moves through four phases:
//!
//! 0. everything to v1;
//! 1. business gray: header / cookie users to v2, everyone else v1;
//! 2. traffic gray: plain users 90/10 weighted v1/v2, gray users v2;
//! 3. everything to v2.
//!
//! Every request must succeed, in every phase and across every switch.
//! Once a phase's route version is ACKed (plus a settle margin for the
//! shards to pick up the snapshot), each response must come from a backend
//! that phase allows; requests that straddle a switch may come from either
//! the old or the new phase's backends.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::xds_server::{XdsServer, CLUSTER, ENDPOINT, LISTENER, ROUTE};
use testkit::{free_port, Client, Gateway, Upstream};

const HCM: &str =
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

fn bootstrap(xds: SocketAddr) -> String {
    format!(
        r#"node: {{ id: meshgate-gray, cluster: test }}
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {{{{ADMIN_PORT}}}} }} }}
dynamic_resources:
  ads_config:
    api_type: GRPC
    transport_api_version: V3
    grpc_services: [{{ envoy_grpc: {{ cluster_name: xds_cluster }} }}]
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

fn listener(port: u16) -> (String, Vec<u8>) {
    enc(
        "envoy.config.listener.v3.Listener",
        json!({"name": "shop", "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
          "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
            "@type": HCM, "stat_prefix": "shop",
            "rds": {"route_config_name": "shop", "config_source": {"ads": {}, "resource_api_version": "V3"}},
            "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}]}),
    )
}

fn eds_cluster(name: &str) -> (String, Vec<u8>) {
    enc(
        "envoy.config.cluster.v3.Cluster",
        json!({"name": name, "type": "EDS", "connect_timeout": "1s",
            "eds_cluster_config": {"eds_config": {"ads": {}, "resource_api_version": "V3"}}}),
    )
}

fn assignment(name: &str, u: &Upstream) -> (String, Vec<u8>) {
    enc(
        "envoy.config.endpoint.v3.ClusterLoadAssignment",
        json!({"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
            "address": u.addr.ip().to_string(), "port_value": u.addr.port()}}}}]}]}),
    )
}

/// The route table of a phase (see the module doc).
fn phase_routes(phase: usize) -> (String, Vec<u8>) {
    let gray_users = |cluster: &str| {
        json!([
            {"match": {"prefix": "/", "headers": [{"name": "x-user-group", "string_match": {"exact": "gray"}}]},
             "route": {"cluster": cluster}},
            {"match": {"prefix": "/", "headers": [{"name": "cookie", "string_match": {"safe_regex": {"regex": "(.*;\\s*)?gray=1(;.*)?"}}}]},
             "route": {"cluster": cluster}}
        ])
    };
    let everyone = |action: Value| json!({"match": {"prefix": "/"}, "route": action});
    let mut routes: Vec<Value> = match phase {
        0 => vec![],
        1 | 2 => gray_users("shop_v2").as_array().unwrap().clone(),
        _ => vec![],
    };
    routes.push(match phase {
        0 => everyone(json!({"cluster": "shop_v1"})),
        1 => everyone(json!({"cluster": "shop_v1"})),
        2 => everyone(json!({"weighted_clusters": {"clusters": [
            {"name": "shop_v1", "weight": 90}, {"name": "shop_v2", "weight": 10}]}})),
        _ => everyone(json!({"cluster": "shop_v2"})),
    });
    enc(
        "envoy.config.route.v3.RouteConfiguration",
        json!({"name": "shop", "virtual_hosts": [{"name": "shop", "domains": ["*"], "routes": routes}]}),
    )
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum User {
    Plain,
    HeaderGray,
    CookieGray,
}

const USERS: [User; 3] = [User::Plain, User::HeaderGray, User::CookieGray];

/// The backends phase `phase` allows for `user`.
fn allowed(phase: usize, user: User) -> &'static [&'static str] {
    match (phase, user) {
        (0, _) => &["v1"],
        (1, User::Plain) => &["v1"],
        (2, User::Plain) => &["v1", "v2"],
        (1 | 2, _) => &["v2"],
        _ => &["v2"],
    }
}

fn headers(user: User) -> Vec<(&'static str, &'static str)> {
    match user {
        User::Plain => vec![("cookie", "session=abc")],
        User::HeaderGray => vec![("x-user-group", "gray")],
        User::CookieGray => vec![("cookie", "session=abc; gray=1")],
    }
}

/// Where the switch stands: `phase` is the newest route version pushed;
/// `settled` is true once it is ACKed and applied everywhere.
struct Switch {
    phase: AtomicUsize,
    settled: AtomicBool,
    stop: AtomicBool,
}

impl Switch {
    /// The settled phase, if any (read before and after a request).
    fn settled_phase(&self) -> Option<usize> {
        let p = self.phase.load(SeqCst);
        (self.settled.load(SeqCst) && self.phase.load(SeqCst) == p).then_some(p)
    }
}

#[derive(Default)]
struct Tally {
    /// Per phase, per user: responses by backend name (strictly checked ones).
    by_phase: Vec<[(usize, usize); 3]>,
    total: usize,
    failures: Vec<String>,
}

fn record(
    tally: &Mutex<Tally>,
    before: Option<usize>,
    after: Option<usize>,
    user: User,
    outcome: Result<String, String>,
) {
    let mut t = tally.lock().unwrap();
    t.total += 1;
    let name = match outcome {
        Ok(name) => name,
        Err(e) => {
            t.failures.push(format!("{user:?}: {e}"));
            return;
        }
    };
    if name != "v1" && name != "v2" {
        t.failures.push(format!("{user:?}: served by {name:?}"));
        return;
    }
    // Strict check only when the request ran entirely inside one settled phase.
    if let (Some(p), Some(q)) = (before, after) {
        if p == q {
            if !allowed(p, user).contains(&name.as_str()) {
                t.failures.push(format!("phase {p}: {user:?} served by {name}"));
            }
            let u = USERS.iter().position(|x| *x == user).unwrap();
            let slot = &mut t.by_phase[p][u];
            if name == "v1" {
                slot.0 += 1;
            } else {
                slot.1 += 1;
            }
        }
    }
}

fn one_request(c: &mut Client, user: User, n: usize) -> Result<String, String> {
    let req = testkit::build_request("GET", &format!("/cart/{n}"), &headers(user), b"");
    c.try_send(&req).map_err(|e| format!("send: {e}"))?;
    match c.try_read_response() {
        Ok(Some(r)) if r.status == 200 => Ok(r.header("x-upstream-name").unwrap_or("<no x-upstream-name>").to_string()),
        Ok(Some(r)) => Err(format!("status {}: {}", r.status, r.body_str())),
        Ok(None) => Err("connection closed without a response".into()),
        Err(e) => Err(format!("read: {e}")),
    }
}

fn client_loop(addr: SocketAddr, keep_alive: bool, switch: Arc<Switch>, tally: Arc<Mutex<Tally>>) {
    let connect = || -> Result<Client, String> {
        let c = Client::try_connect(addr).map_err(|e| format!("connect: {e}"))?;
        c.set_read_timeout(Duration::from_secs(10));
        Ok(c)
    };
    let mut conn: Option<Client> = None;
    let mut n = 0usize;
    while !switch.stop.load(SeqCst) {
        let user = USERS[n % 3];
        n += 1;
        let before = switch.settled_phase();
        let outcome = match conn.take().map_or_else(connect, Ok) {
            Ok(mut c) => {
                let r = one_request(&mut c, user, n);
                if keep_alive && r.is_ok() {
                    conn = Some(c);
                }
                r
            }
            Err(e) => Err(e),
        };
        let after = switch.settled_phase();
        record(&tally, before, after, user, outcome);
        // Paced: a steady stream, not a load test (the machine is shared).
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn acked(cp: &XdsServer, version: &str) -> bool {
    cp.requests().iter().any(|r| {
        r.type_url == ROUTE && r.version_info == version && r.error_detail.is_none() && !r.response_nonce.is_empty()
    })
}

#[test]
fn gray_release_phases_switch_over_xds_with_zero_failed_requests() {
    let (v1, v2) = (Upstream::start("v1"), Upstream::start("v2"));
    let cp = XdsServer::start();
    let port = free_port();
    cp.set(CLUSTER, "c1", vec![eds_cluster("shop_v1"), eds_cluster("shop_v2")]);
    cp.set(ENDPOINT, "e1", vec![assignment("shop_v1", &v1), assignment("shop_v2", &v2)]);
    cp.set(LISTENER, "l1", vec![listener(port)]);
    cp.set(ROUTE, "r0", vec![phase_routes(0)]);
    let gw = Gateway::start(&bootstrap(cp.addr()), &[], &[]);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let up = Client::try_connect(addr).ok().and_then(|mut c| one_request(&mut c, User::Plain, 0).ok());
        if up.as_deref() == Some("v1") && acked(&cp, "r0") {
            break;
        }
        assert!(Instant::now() < deadline, "initial sync\n{}", gw.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }

    // Shards rebuild their snapshot from the shared config on their next
    // event; this margin covers a request already parsed on the old one.
    const SETTLE: Duration = Duration::from_millis(300);
    const PHASE: Duration = Duration::from_secs(3);
    let switch =
        Arc::new(Switch { phase: AtomicUsize::new(0), settled: AtomicBool::new(false), stop: AtomicBool::new(false) });
    let tally = Arc::new(Mutex::new(Tally { by_phase: vec![[(0, 0); 3]; 4], ..Default::default() }));
    std::thread::sleep(SETTLE);
    switch.settled.store(true, SeqCst);
    let clients: Vec<_> = [true, false, true, false]
        .into_iter()
        .map(|keep_alive| {
            let (s, t) = (switch.clone(), tally.clone());
            std::thread::spawn(move || client_loop(addr, keep_alive, s, t))
        })
        .collect();

    let t0 = Instant::now();
    for phase in 1..=3 {
        std::thread::sleep(PHASE);
        eprintln!("{:?}: switching to phase {phase}", t0.elapsed());
        switch.settled.store(false, SeqCst);
        switch.phase.store(phase, SeqCst);
        let version = format!("r{phase}");
        cp.set(ROUTE, &version, vec![phase_routes(phase)]);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !acked(&cp, &version) {
            assert!(Instant::now() < deadline, "route {version} never ACKed\n{}", gw.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{:?}: phase {phase} ACKed", t0.elapsed());
        std::thread::sleep(SETTLE);
        switch.settled.store(true, SeqCst);
    }
    std::thread::sleep(PHASE);
    switch.stop.store(true, SeqCst);
    for c in clients {
        c.join().expect("client thread");
    }

    eprintln!("{:?}: clients stopped", t0.elapsed());
    let t = tally.lock().unwrap();
    eprintln!("{} requests; per phase [(v1, v2) for plain, header, cookie]: {:?}", t.total, t.by_phase);
    assert!(
        t.failures.is_empty(),
        "{} of {} requests failed or went astray: {:?}",
        t.failures.len(),
        t.total,
        &t.failures[..t.failures.len().min(20)]
    );
    // Each phase was really exercised, and shows its own routing.
    for (phase, users) in t.by_phase.iter().enumerate() {
        for (u, (on_v1, on_v2)) in users.iter().enumerate() {
            assert!(on_v1 + on_v2 >= 20, "phase {phase} {:?}: only {} checked requests", USERS[u], on_v1 + on_v2);
        }
    }
    let (plain_v1, plain_v2) = t.by_phase[2][0];
    let share = plain_v2 as f64 / (plain_v1 + plain_v2) as f64;
    assert!(plain_v2 > 0 && share < 0.3, "phase 2 sent {share:.3} of plain users to v2, configured 10%");
    assert!(gw.stat("http.shop.downstream_rq_2xx") >= t.total as u64);
    assert_eq!(gw.stat("http.shop.downstream_rq_5xx"), 0);
}
