//! nginx (Debian `nginx-light`) as a real upstream server for tests: one
//! foreground, single-process nginx per test, its files under a temp dir.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::certs::p;
use crate::free_port;

/// Waits until something accepts TCP connections on `addr`; panics if
/// `child` exits first or nothing listens within 15 s.
pub fn wait_listening(addr: SocketAddr, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if TcpStream::connect(addr).is_ok() {
            return;
        }
        if let Ok(Some(st)) = child.try_wait() {
            panic!("{what} exited early: {st}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what} did not listen on {addr}");
}

/// An nginx on 127.0.0.1 (killed on drop).
pub struct Nginx {
    child: Child,
    pub addr: SocketAddr,
}

impl Nginx {
    /// Starts nginx with one `server { listen 127.0.0.1:PORT <listen>; <server> }`
    /// block (PORT is free, chosen here); its files go to `dir`.
    pub fn start(dir: &Path, listen: &str, server: &str) -> Nginx {
        let port = free_port();
        let name = format!("nginx-{port}");
        let tmp = p(dir, &format!("{name}-tmp"));
        std::fs::create_dir_all(&tmp).unwrap();
        let conf = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {pid};
error_log {err} info;
events {{ worker_connections 128; }}
http {{
  access_log off;
  client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp};
  uwsgi_temp_path {tmp}; scgi_temp_path {tmp};
  server {{
    listen 127.0.0.1:{port} {listen};
{server}
  }}
}}
"#,
            pid = p(dir, &format!("{name}.pid")),
            err = p(dir, &format!("{name}.err")),
        );
        let conf_path = dir.join(format!("{name}.conf"));
        std::fs::write(&conf_path, conf).unwrap();
        let mut child = Command::new("nginx")
            .args(["-p", &p(dir, ""), "-e", &p(dir, &format!("{name}.err")), "-c"])
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx (apt-get install nginx-light)");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        wait_listening(addr, &mut child, "nginx");
        Nginx { child, addr }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
