//! Process lifecycle: SIGTERM drain, `--validate`, and loading a config written
//! for Envoy unchanged.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use testkit::{
    basic_config, build_request, closed_addr, read_until_close, run_meshgate, start_basic, validate_config, Client,
    Gateway, Upstream,
};

fn envoy_basic_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/envoy-basic.yaml")
}

/// After SIGTERM a new connection is refused, closed without a response, or
/// answered with `connection: close`.
fn assert_new_connection_not_served(addr: SocketAddr) {
    let s = match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        Err(_) => return, // refused: listener closed
        Ok(s) => s,
    };
    let mut w = &s;
    let _ = w.write_all(&build_request("GET", "/", &[], b""));
    let out = read_until_close(&s, Instant::now() + Duration::from_secs(5));
    let (rs, _) = out.responses();
    match rs.first() {
        None => assert!(out.closed, "new connection after SIGTERM neither served nor closed"),
        Some(r) => assert!(
            r.connection_close() || out.closed,
            "new connection after SIGTERM served as keep-alive: {:?}",
            out.text()
        ),
    }
}

#[test]
fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let (_up, mut gw) = start_basic("", "timeout: 10s", "", &["--drain-time-s", "10"]);
    let addr = gw.listener_addr;
    let (sent_tx, sent_rx) = mpsc::channel();
    let workers: Vec<_> = (0..20)
        .map(|i| {
            let sent_tx = sent_tx.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                c.send(&build_request("GET", &format!("/delay/1500?i={i}"), &[], b""));
                let _ = sent_tx.send(());
                let r = c.read_response();
                (r.status, r.body_str())
            })
        })
        .collect();
    drop(sent_tx);
    for _ in 0..20 {
        sent_rx.recv_timeout(Duration::from_secs(10)).expect("client threads sent their requests");
    }
    std::thread::sleep(Duration::from_millis(200));
    let signalled = Instant::now();
    gw.sigterm();
    std::thread::sleep(Duration::from_millis(300));
    assert_new_connection_not_served(addr);

    for (i, w) in workers.into_iter().enumerate() {
        let (status, body) = w.join().expect("client thread");
        assert_eq!(status, 200, "in-flight request {i} during drain");
        assert_eq!(body, "delayed 1500ms\n");
    }
    let st = gw
        .wait_exit(Duration::from_secs(12).saturating_sub(signalled.elapsed()))
        .expect("meshgate did not exit within the drain time");
    assert!(st.success(), "exit status after SIGTERM: {st}");
}

#[test]
fn sigterm_closes_idle_keep_alive_connections() {
    let (_up, mut gw) = start_basic("", "", "", &["--drain-time-s", "5"]);
    let mut c = Client::connect(gw.listener_addr);
    assert_eq!(c.get("/").status, 200);
    gw.sigterm();
    std::thread::sleep(Duration::from_millis(300));
    // Either the gateway already closed the idle connection, or the next
    // response on it says `connection: close`.
    match c.try_send(&build_request("GET", "/", &[], b"")) {
        Err(_) => {}
        Ok(()) => match c.try_read_response() {
            Err(_) | Ok(None) => {}
            Ok(Some(r)) => assert!(r.connection_close(), "idle connection kept alive while draining"),
        },
    }
    let st = gw.wait_exit(Duration::from_secs(8)).expect("meshgate did not exit");
    assert!(st.success(), "exit status: {st}");
}

#[test]
fn sigterm_when_idle_exits_zero() {
    let (_up, mut gw) = start_basic("", "", "", &["--drain-time-s", "2"]);
    gw.sigterm();
    let st = gw.wait_exit(Duration::from_secs(5)).expect("meshgate did not exit");
    assert!(st.success(), "exit status: {st}");
}

#[test]
fn validate_accepts_a_valid_config() {
    let out = validate_config(&basic_config("", "timeout: 2s", ""), &[closed_addr()]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn validate_rejects_unsupported_field_with_its_path() {
    let cluster_extra = "
upstream_connection_options:
  tcp_keepalive: {}
";
    let out = validate_config(&basic_config("", "", cluster_extra), &[closed_addr()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("static_resources.clusters[0].upstream_connection_options"),
        "field path missing from stderr: {stderr}"
    );
}

#[test]
fn validate_rejects_unknown_field() {
    let out = validate_config(&basic_config("", "", "no_such_field_anywhere: 1"), &[closed_addr()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.contains("no_such_field_anywhere"), "stderr: {stderr}");
}

#[test]
fn validate_rejects_broken_yaml() {
    let out = validate_config("static_resources: [ this is : not yaml", &[]);
    assert_eq!(out.status.code(), Some(1), "stderr: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn missing_config_file_fails() {
    let out = run_meshgate(&["--config", "/nonexistent/meshgate.yaml", "--validate"], Duration::from_secs(20));
    assert_ne!(out.status.code(), Some(0));
    assert!(!out.stderr.is_empty(), "no error message for a missing file");
}

#[test]
fn envoy_config_validates_unchanged() {
    let path = envoy_basic_path();
    let out = run_meshgate(&["--config", path.to_str().expect("utf-8 path"), "--validate"], Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn envoy_config_proxies_with_ports_swapped() {
    let yaml = std::fs::read_to_string(envoy_basic_path()).expect("read tests/data/envoy-basic.yaml");
    let yaml = yaml
        .replace("port_value: 10000", "port_value: {{LISTEN_PORT}}")
        .replace("port_value: 9901", "port_value: {{ADMIN_PORT}}")
        .replace("port_value: 8080", "port_value: {{UPSTREAM_1_PORT}}");
    let up = Upstream::start("envoy-basic");
    let gw = Gateway::start(&yaml, &[up.addr], &[]);
    let mut c = Client::connect(gw.listener_addr);
    let r = c.get("/some/path");
    assert_eq!(r.status, 200);
    assert_eq!(r.body_str(), "hello from envoy-basic\n");
    assert_eq!(gw.wait_stat("http.ingress_http.downstream_rq_total", 1, Duration::from_secs(5)), 1);
}
