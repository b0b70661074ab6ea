//! gRPC active health checks end to end: a real `meshgate` probes two real
//! gRPC health servers (Python `grpcio` + `grpcio-health-checking`,
//! `grpc.health.v1.Health/Check` over h2c) that also answer the HTTP/1.1
//! traffic on the same port (`tests/data/grpc_health_peer.py`).  A host
//! whose health server turns NOT_SERVING is marked `/failed_active_hc` and
//! leaves load balancing (a check failure, not a network failure); back on
//! SERVING it returns to load balancing.
//!
//! Needs the test venv that `scripts/install-deps.sh` creates
//! (`target/test-venv`, with `grpcio` and `grpcio-health-checking`).

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use testkit::{backend_route_config, static_cluster, Client, Gateway};

fn python() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-venv/bin/python3");
    let ok = Command::new(&venv)
        .args(["-c", "import grpc, grpc_health.v1.health"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "{} with `grpcio-health-checking` missing: run scripts/install-deps.sh", venv.display());
    venv
}

/// One Python backend (gRPC health + HTTP/1.1 on one port); killed on drop.
struct HealthPeer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    addr: SocketAddr,
}

impl HealthPeer {
    fn start(name: &str) -> HealthPeer {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/grpc_health_peer.py");
        let mut child = Command::new(python())
            .arg(script)
            .arg(name)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the gRPC health peer");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).expect("peer port line");
        let Some(port) = line.trim().strip_prefix("PORT ").and_then(|p| p.parse::<u16>().ok()) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("unexpected peer line {line:?}");
        };
        HealthPeer { child, stdin, stdout, addr: SocketAddr::from(([127, 0, 0, 1], port)) }
    }

    /// Sets the serving status the health server reports.
    fn set(&mut self, status: &str) {
        writeln!(self.stdin, "{status}").expect("command the peer");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("peer ack");
        assert_eq!(line.trim(), format!("OK {status}"));
    }
}

impl Drop for HealthPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Cluster `backend` over two peers, gRPC health checks of service `svc`
/// every 0.2 s (2 failures → unhealthy, 2 passes → healthy).
fn config(grpc_check: &str) -> String {
    let health_checks = format!(
        "health_checks:
- timeout: 1s
  interval: 0.2s
  no_traffic_interval: 0.2s
  unhealthy_threshold: 2
  healthy_threshold: 2
  grpc_health_check: {grpc_check}"
    );
    backend_route_config("", &static_cluster("backend", &health_checks, &[(1, 0, 1), (2, 0, 1)]))
}

fn flags(gw: &Gateway, addr: SocketAddr) -> String {
    gw.health_flags("backend", addr)
}

fn wait_flags(gw: &Gateway, addr: SocketAddr, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while flags(gw, addr) != want {
        assert!(Instant::now() < deadline, "{addr} never became {want}: {}", flags(gw, addr));
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Names of the backends that served `n` requests on new connections.
fn served(gw: &Gateway, n: usize) -> Vec<String> {
    let mut names: Vec<String> = (0..n)
        .map(|i| {
            let r = Client::connect(gw.listener_addr).get(&format!("/r{i}"));
            assert_eq!(r.status, 200, "{}", r.body_str());
            r.header("x-upstream-name").unwrap_or("?").to_string()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn not_serving_host_leaves_load_balancing_and_comes_back() {
    let a = HealthPeer::start("a");
    let mut b = HealthPeer::start("b");
    let gw = Gateway::start(&config(r#"{ service_name: svc }"#), &[a.addr, b.addr], &[]);
    assert!(gw.wait_stat("cluster.backend.health_check.success", 4, Duration::from_secs(15)) >= 4);
    assert_eq!(flags(&gw, b.addr), "healthy");
    assert_eq!(served(&gw, 20), ["a", "b"]);

    b.set("NOT_SERVING");
    wait_flags(&gw, b.addr, "/failed_active_hc");
    assert_eq!(flags(&gw, a.addr), "healthy");
    assert_eq!(served(&gw, 20), ["a"], "the NOT_SERVING host left load balancing");
    assert!(gw.stat("cluster.backend.health_check.failure") >= 2);
    assert_eq!(gw.stat("cluster.backend.health_check.network_failure"), 0, "NOT_SERVING is a check failure");
    assert_eq!(gw.stat("cluster.backend.health_check.healthy"), 1);

    b.set("SERVING");
    wait_flags(&gw, b.addr, "healthy");
    assert_eq!(served(&gw, 20), ["a", "b"], "back in load balancing on SERVING");
    assert_eq!(gw.stat("cluster.backend.health_check.healthy"), 2);
}

#[test]
fn unknown_service_fails_the_check() {
    // grpcio answers NOT_FOUND (grpc-status 5) for a service it does not
    // know: never healthy, so the hosts go out after unhealthy_threshold.
    let a = HealthPeer::start("a");
    let b = HealthPeer::start("b");
    let gw = Gateway::start(&config(r#"{ service_name: nope, authority: health.example }"#), &[a.addr, b.addr], &[]);
    wait_flags(&gw, a.addr, "/failed_active_hc");
    wait_flags(&gw, b.addr, "/failed_active_hc");
    assert_eq!(gw.stat("cluster.backend.health_check.success"), 0);
    assert_eq!(gw.stat("cluster.backend.health_check.network_failure"), 0);
}

#[test]
fn unsupported_grpc_health_check_fields_are_rejected() {
    let cfg = config(r#"{ service_name: svc, initial_metadata: [{ header: { key: x, value: y } }] }"#);
    let addr = testkit::closed_addr();
    let out = testkit::validate_config(&cfg, &[addr, addr]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("health_checks[0].grpc_health_check.initial_metadata") && err.contains("unsupported"),
        "{err}"
    );
    let ok = testkit::validate_config(&config("{ service_name: svc }"), &[addr, addr]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
}
