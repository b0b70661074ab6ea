//! Test kit for meshgate's end-to-end tests.
//!
//! It owns two things:
//!
//! * the `mg-upstream` binary (`src/bin/mg-upstream.rs`): a real HTTP/1.1 origin
//!   server process with scripted behaviours by path (echo, delays, big and
//!   chunked bodies with trailers, broken responses...), used by the tests and
//!   by the `make run` demo;
//! * this library: process handles for an upstream ([`Upstream`]) and for the
//!   gateway under test ([`Gateway`], with config templating, readiness wait,
//!   admin/stats access, signals, RSS), and a small, strict HTTP/1.1 client
//!   ([`Client`], [`read_response`], [`raw_exchange`], [`parse_responses`])
//!   that lets tests see exactly what went over the wire;
//! * a scriptable xDS management server ([`xds_server`]) for the xDS tests,
//!   and a REST-JSON one ([`xds_rest_server`]).
//!
//! It must not depend on meshgate's crates: the tests drive the gateway only
//! through its binary, its config file, its sockets and its admin endpoint.
//! Everything binds port 0 or freshly picked free ports so tests run in
//! parallel, and every socket read has a timeout.
#![forbid(unsafe_code)]

pub mod certs;
pub mod h2_origin;
pub mod nginx;
pub mod xds_rest_server;
pub mod xds_server;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Default timeout for client socket operations.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Hashing and the byte pattern shared by mg-upstream and the tests.
// ---------------------------------------------------------------------------

/// 64-bit FNV-1a, computed incrementally (so 1 GiB bodies are never held).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Self::new()
    }
}

impl Fnv64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    pub const fn new() -> Self {
        Fnv64(Self::OFFSET)
    }

    pub fn update(&mut self, data: &[u8]) {
        let mut h = self.0;
        for &b in data {
            h ^= b as u64;
            h = h.wrapping_mul(Self::PRIME);
        }
        self.0 = h;
    }

    pub fn finish(&self) -> u64 {
        self.0
    }

    /// Lower-case hex, 16 digits (the format mg-upstream reports).
    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

/// FNV-1a 64 of `data` as 16 lower-case hex digits.
pub fn fnv64_hex(data: &[u8]) -> String {
    let mut f = Fnv64::new();
    f.update(data);
    f.hex()
}

/// The body pattern: byte `i` of a generated body is `b"0123456789"[i % 10]`.
pub const PATTERN: &[u8; 10] = b"0123456789";

fn pattern_table() -> &'static [u8] {
    static TABLE: OnceLock<Vec<u8>> = OnceLock::new();
    TABLE.get_or_init(|| (0..(64 * 1024 + 16)).map(|i| PATTERN[i % 10]).collect())
}

/// Generates the repeating `0123456789` pattern, continuing across calls.
#[derive(Clone, Debug, Default)]
pub struct PatternGen {
    pos: u64,
}

impl PatternGen {
    pub fn new() -> Self {
        PatternGen { pos: 0 }
    }

    /// Bytes produced so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Fills `buf` with the next `buf.len()` pattern bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let table = pattern_table();
        let step = 64 * 1024;
        let mut off = 0;
        while off < buf.len() {
            let n = (buf.len() - off).min(step);
            let start = (self.pos % 10) as usize;
            buf[off..off + n].copy_from_slice(&table[start..start + n]);
            off += n;
            self.pos += n as u64;
        }
    }
}

/// The first `n` pattern bytes.
pub fn pattern(n: usize) -> Vec<u8> {
    let mut v = vec![0; n];
    PatternGen::new().fill(&mut v);
    v
}

/// Checks that `data` is the pattern starting at absolute offset `offset`
/// (compares 64 KiB slices against a table: fast enough for GiB bodies).
pub fn is_pattern_at(data: &[u8], offset: u64) -> bool {
    let table = pattern_table();
    let step = 64 * 1024;
    let mut off = 0usize;
    while off < data.len() {
        let n = (data.len() - off).min(step);
        let start = ((offset + off as u64) % 10) as usize;
        if data[off..off + n] != table[start..start + n] {
            return false;
        }
        off += n;
    }
    true
}

// ---------------------------------------------------------------------------
// Binaries and ports.
// ---------------------------------------------------------------------------

/// The directory holding the workspace's binaries for the running test's
/// profile: the test executable lives in `target/<profile>/deps/`.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("test executable has a parent dir").to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    dir
}

/// Path of workspace binary `name` next to the test executable
/// (`target/<profile>/NAME`). Panics with a clear message if it is not built.
///
/// `mg-upstream` is (re)built on first use with `cargo build -p testkit --bin
/// mg-upstream` when running under cargo (it lives in a dependency, so `cargo
/// test` at the root does not build it); set `MG_TESTKIT_NO_AUTOBUILD=1` to
/// skip that.
#[track_caller]
pub fn bin_path(name: &str) -> PathBuf {
    if name == "mg-upstream" {
        ensure_upstream_built();
    }
    let p = bin_dir().join(name);
    if !p.is_file() {
        panic!(
            "binary {name:?} not found at {}: build it first (e.g. `cargo build --workspace --bins`{})",
            p.display(),
            if bin_dir().ends_with("release") { " --release" } else { "" }
        );
    }
    p
}

fn ensure_upstream_built() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        if std::env::var_os("MG_TESTKIT_NO_AUTOBUILD").is_some() {
            return;
        }
        let cargo = std::env::var_os("CARGO").map(PathBuf::from).or_else(|| option_env!("CARGO").map(PathBuf::from));
        let Some(cargo) = cargo else { return };
        let dir = bin_dir();
        let profile = dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug").to_owned();
        // target/<profile> → target dir
        let target_dir = dir.parent().map(Path::to_path_buf);
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", "testkit", "--bin", "mg-upstream"]);
        match profile.as_str() {
            "debug" => {}
            "release" => {
                cmd.arg("--release");
            }
            other => {
                cmd.args(["--profile", other]);
            }
        }
        if let Some(t) = target_dir {
            cmd.arg("--target-dir").arg(t);
        }
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
        // `cargo test` gives the test process the variables it sets for a
        // crate (CARGO_MANIFEST_DIR, CARGO_PKG_*, ...); inherited by this
        // build, they change build-script fingerprints (ring's, rustls's)
        // and every later `cargo test` would rebuild half the tree.
        for (key, _) in std::env::vars_os() {
            let Some(key) = key.to_str() else { continue };
            let set_for_crate =
                ["CARGO_MANIFEST_", "CARGO_PKG_", "CARGO_CRATE_", "CARGO_BIN_", "CARGO_PRIMARY_PACKAGE"]
                    .iter()
                    .any(|p| key.starts_with(p))
                    || matches!(key, "CARGO_TARGET_TMPDIR" | "OUT_DIR" | "CARGO_RUSTC_CURRENT_DIR");
            if set_for_crate {
                cmd.env_remove(key);
            }
        }
        match cmd.status() {
            Ok(s) if s.success() => {}
            Ok(s) => eprintln!("testkit: building mg-upstream failed ({s}); using what is there"),
            Err(e) => eprintln!("testkit: cannot run cargo to build mg-upstream: {e}"),
        }
    });
}

/// A port on 127.0.0.1 that was free a moment ago (bind :0, read, drop).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind 127.0.0.1:0").port()
}

/// A port on 127.0.0.1 where nothing listens and nothing else can start
/// listening while this value lives: a socket is bound to it but never
/// listens, so connecting is refused (RST).  A port that was merely free a
/// moment ago could be handed out again, e.g. as the gateway's admin port,
/// and a "refused" upstream would then answer.
pub struct ClosedPort {
    pub addr: SocketAddr,
    _socket: socket2::Socket,
}

/// See [`ClosedPort`]; drop it to let something listen there later.
pub fn closed_port() -> ClosedPort {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).expect("bind 127.0.0.1:0");
    let addr = socket.local_addr().ok().and_then(|a| a.as_socket()).expect("bound address");
    ClosedPort { addr, _socket: socket }
}

/// An address on 127.0.0.1 where nothing listens, for the life of the test
/// process (for "connection refused" tests; see [`ClosedPort`]).
pub fn closed_addr() -> SocketAddr {
    static HELD: std::sync::Mutex<Vec<ClosedPort>> = std::sync::Mutex::new(Vec::new());
    let port = closed_port();
    let addr = port.addr;
    HELD.lock().unwrap_or_else(|e| e.into_inner()).push(port);
    addr
}

// ---------------------------------------------------------------------------
// The upstream process.
// ---------------------------------------------------------------------------

/// Appends `v` as a JSON string literal (what `mg-upstream` answers with).
pub fn json_str(out: &mut String, v: &str) {
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A running `mg-upstream` process; killed on drop.
pub struct Upstream {
    pub addr: SocketAddr,
    pub name: String,
    child: Child,
}

impl Upstream {
    /// Spawns `mg-upstream --listen 127.0.0.1:0 --name NAME` and waits for its
    /// `listening on` line.
    #[track_caller]
    pub fn start(name: &str) -> Upstream {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), name)
    }

    /// Like [`Upstream::start`] on a fixed address.
    #[track_caller]
    pub fn start_on(addr: SocketAddr, name: &str) -> Upstream {
        Self::start_with(addr, name, &[])
    }

    /// `mg-upstream --h2c` (HTTP/2 prior knowledge, see `h2_origin`) plus `extra` arguments.
    #[track_caller]
    pub fn start_h2c(name: &str, extra: &[&str]) -> Upstream {
        let mut args = vec!["--h2c"];
        args.extend_from_slice(extra);
        Self::start_with(SocketAddr::from(([127, 0, 0, 1], 0)), name, &args)
    }

    /// Like [`Upstream::start_on`] with extra command-line arguments.
    #[track_caller]
    pub fn start_with(addr: SocketAddr, name: &str, extra: &[&str]) -> Upstream {
        let mut child = Command::new(bin_path("mg-upstream"))
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--name")
            .arg(name)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn mg-upstream");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            let res = r.read_line(&mut line).map(|_| line);
            let _ = tx.send(res);
            // Keep draining so the child never blocks on (or dies from) a closed pipe.
            let mut sink = Vec::new();
            let _ = r.read_to_end(&mut sink);
        });
        let line = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => {
                let _ = child.kill();
                panic!("mg-upstream {name}: reading stdout: {e}");
            }
            Err(_) => {
                let _ = child.kill();
                panic!("mg-upstream {name}: no `listening on` line within 20 s");
            }
        };
        let addr =
            line.trim().strip_prefix("listening on ").and_then(|a| a.parse::<SocketAddr>().ok()).unwrap_or_else(|| {
                let _ = child.kill();
                let _ = child.wait();
                panic!("mg-upstream {name}: unexpected first line {line:?}")
            });
        Upstream { addr, name: name.to_owned(), child }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process now (idempotent).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------
// The gateway process.
// ---------------------------------------------------------------------------

/// Ports picked for one gateway start.
#[derive(Clone, Debug)]
pub struct Ports {
    /// `{{LISTEN_PORT}}`, `{{LISTEN_PORT_2}}`, ... in order (only those used).
    pub listen: Vec<u16>,
    /// `{{ADMIN_PORT}}`.
    pub admin: u16,
}

/// Replaces the config placeholders:
///
/// * `{{UPSTREAM_N}}` → IP of `upstreams[N-1]`, `{{UPSTREAM_N_PORT}}` → its port,
///   `{{UPSTREAM_N_ADDR}}` → `IP:PORT` (N from 1);
/// * `{{LISTEN_PORT}}`, `{{LISTEN_PORT_2}}` … `{{LISTEN_PORT_8}}` and
///   `{{ADMIN_PORT}}` → free ports picked now.
///
/// Panics if a `{{...}}` placeholder is left over.
pub fn render_config(yaml: &str, upstreams: &[SocketAddr]) -> (String, Ports) {
    let mut out = yaml.to_owned();
    for (i, a) in upstreams.iter().enumerate().rev() {
        let n = i + 1;
        out = out
            .replace(&format!("{{{{UPSTREAM_{n}_PORT}}}}"), &a.port().to_string())
            .replace(&format!("{{{{UPSTREAM_{n}_ADDR}}}}"), &a.to_string())
            .replace(&format!("{{{{UPSTREAM_{n}}}}}"), &a.ip().to_string());
    }
    let mut listen = Vec::new();
    for n in 1..=8 {
        let ph = if n == 1 { "{{LISTEN_PORT}}".to_owned() } else { format!("{{{{LISTEN_PORT_{n}}}}}") };
        if out.contains(&ph) {
            let p = free_port();
            listen.push(p);
            out = out.replace(&ph, &p.to_string());
        } else {
            break;
        }
    }
    let admin = free_port();
    out = out.replace("{{ADMIN_PORT}}", &admin.to_string());
    if let Some(i) = out.find("{{") {
        let end = out[i..].find("}}").map(|e| i + e + 2).unwrap_or(out.len());
        panic!("config placeholder {} left unreplaced (upstreams given: {})", &out[i..end], upstreams.len());
    }
    (out, Ports { listen, admin })
}

/// A running `meshgate` process; killed on drop (its stderr is printed if the
/// test is panicking).
pub struct Gateway {
    child: Child,
    exit: Option<ExitStatus>,
    /// The first listener (`{{LISTEN_PORT}}` on 127.0.0.1).
    pub listener_addr: SocketAddr,
    /// All listeners, in placeholder order.
    pub listener_addrs: Vec<SocketAddr>,
    /// The admin endpoint (`{{ADMIN_PORT}}` on 127.0.0.1).
    pub admin_addr: SocketAddr,
    /// The rendered config file.
    pub config_path: PathBuf,
    /// The rendered config text.
    pub config: String,
    _config_file: tempfile::NamedTempFile,
    stderr_file: tempfile::NamedTempFile,
    stdout_file: tempfile::NamedTempFile,
}

/// How long [`Gateway::start`] waits for `/ready`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

impl Gateway {
    /// Renders `yaml` (see [`render_config`]) with `upstreams`, starts
    /// `meshgate --config FILE --shards 2 --log-level info EXTRA...` (the two
    /// defaults are left out when `extra_args` sets them) and waits until the
    /// admin `/ready` answers 200. Panics with the gateway's stderr on failure.
    #[track_caller]
    pub fn start(yaml: &str, upstreams: &[SocketAddr], extra_args: &[&str]) -> Gateway {
        match Self::try_start(yaml, upstreams, extra_args) {
            Ok(g) => g,
            Err(e) => panic!("{e}"),
        }
    }

    /// Like [`Gateway::start`], returning the failure (with stderr) instead of panicking.
    /// Retries with fresh ports when a picked port turned out to be taken.
    pub fn try_start(yaml: &str, upstreams: &[SocketAddr], extra_args: &[&str]) -> Result<Gateway, String> {
        let mut last = String::new();
        for _attempt in 0..3 {
            match Self::start_once(yaml, upstreams, extra_args) {
                Ok(g) => return Ok(g),
                Err((msg, retry)) => {
                    last = msg;
                    if !retry {
                        break;
                    }
                }
            }
        }
        Err(last)
    }

    fn start_once(yaml: &str, upstreams: &[SocketAddr], extra_args: &[&str]) -> Result<Gateway, (String, bool)> {
        let (config, ports) = render_config(yaml, upstreams);
        let mut config_file = tempfile::Builder::new()
            .prefix("meshgate-test-")
            .suffix(".yaml")
            .tempfile()
            .expect("create config tempfile");
        config_file.write_all(config.as_bytes()).expect("write config");
        config_file.flush().expect("flush config");
        let config_path = config_file.path().to_path_buf();
        let stderr_file = tempfile::NamedTempFile::new().expect("stderr tempfile");
        let stdout_file = tempfile::NamedTempFile::new().expect("stdout tempfile");
        let mut cmd = Command::new(bin_path("meshgate"));
        cmd.arg("--config").arg(&config_path);
        if !extra_args.contains(&"--shards") {
            cmd.args(["--shards", "2"]);
        }
        if !extra_args.contains(&"--log-level") {
            cmd.args(["--log-level", "info"]);
        }
        cmd.args(extra_args)
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout_file.reopen().expect("reopen stdout file")))
            .stderr(Stdio::from(stderr_file.reopen().expect("reopen stderr file")));
        let child = cmd.spawn().map_err(|e| (format!("cannot spawn meshgate: {e}"), false))?;
        let ip = [127, 0, 0, 1];
        let listener_addrs: Vec<SocketAddr> = ports.listen.iter().map(|&p| SocketAddr::from((ip, p))).collect();
        let mut gw = Gateway {
            child,
            exit: None,
            listener_addr: listener_addrs.first().copied().unwrap_or_else(|| SocketAddr::from((ip, 0))),
            listener_addrs,
            admin_addr: SocketAddr::from((ip, ports.admin)),
            config_path,
            config,
            _config_file: config_file,
            stderr_file,
            stdout_file,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(st) = gw.try_exit() {
                let err = gw.stderr();
                let retry = err.contains("in use") || err.contains("AddrInUse");
                return Err((
                    format!(
                        "meshgate exited ({st}) before becoming ready\n--- config ---\n{}\n--- stderr ---\n{}",
                        gw.config,
                        tail(&err, 16 * 1024)
                    ),
                    retry,
                ));
            }
            if let Ok(r) = try_get(gw.admin_addr, "/ready", Duration::from_secs(1)) {
                if r.status == 200 {
                    return Ok(gw);
                }
            }
            if Instant::now() > deadline {
                let err = gw.stderr();
                return Err((
                    format!(
                        "meshgate: admin /ready on {} not 200 within {:?}\n--- config ---\n{}\n--- stderr ---\n{}",
                        gw.admin_addr,
                        READY_TIMEOUT,
                        gw.config,
                        tail(&err, 16 * 1024)
                    ),
                    false,
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the gateway wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read(self.stderr_file.path()).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    /// Everything the gateway wrote to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read(self.stdout_file.path()).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    /// GET `path` on the admin endpoint.
    #[track_caller]
    pub fn admin_get(&self, path: &str) -> Response {
        match try_get(self.admin_addr, path, IO_TIMEOUT) {
            Ok(r) => r,
            Err(e) => panic!("admin GET {path}: {e}\n--- stderr ---\n{}", tail(&self.stderr(), 8192)),
        }
    }

    /// The `health_flags` that admin `/clusters` shows for `addr` in
    /// `cluster` (`healthy`, `/failed_outlier_check`, ...), or `?`.
    #[track_caller]
    pub fn health_flags(&self, cluster: &str, addr: SocketAddr) -> String {
        let text = self.admin_get("/clusters").body_str();
        let key = format!("{cluster}::{addr}::health_flags::");
        text.lines().find_map(|l| l.strip_prefix(&key)).unwrap_or("?").to_string()
    }

    /// Admin `/stats` body (`name: value` lines).
    #[track_caller]
    pub fn stats(&self) -> String {
        let r = self.admin_get("/stats");
        assert_eq!(r.status, 200, "admin /stats status; body: {}", r.body_str());
        r.body_str()
    }

    /// The value of stat `name` from `/stats`, or `None` if it is not listed.
    #[track_caller]
    pub fn stat_opt(&self, name: &str) -> Option<u64> {
        parse_stat(&self.stats(), name)
    }

    /// The value of stat `name` from `/stats` (0 when not listed).
    #[track_caller]
    pub fn stat(&self, name: &str) -> u64 {
        self.stat_opt(name).unwrap_or(0)
    }

    /// Polls `/stats` until `name` equals `want` or `timeout` passes; returns the
    /// last value seen (shards may publish their counters with a small delay).
    #[track_caller]
    pub fn wait_stat(&self, name: &str, want: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.stat(name);
            if v == want || Instant::now() > deadline {
                return v;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGTERM (via the `kill` command: no unsafe code here).
    #[track_caller]
    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Sends the named signal (`TERM`, `INT`, `HUP`, `KILL`...).
    #[track_caller]
    pub fn signal(&self, sig: &str) {
        let st =
            Command::new("kill").arg(format!("-{sig}")).arg(self.child.id().to_string()).status().expect("run kill");
        assert!(st.success(), "kill -{sig} {} failed: {st}", self.child.id());
    }

    fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.exit = Some(st);
            }
        }
        self.exit
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.try_exit().is_none()
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_exit() {
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Resident set size in KiB (`VmRSS` of /proc/PID/status).
    pub fn rss_kib(&self) -> u64 {
        rss_kib_of(self.child.id()).unwrap_or(0)
    }

    /// Kills the process now (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if self.try_exit().is_none() {
            let _ = self.child.kill();
            if let Ok(st) = self.child.wait() {
                self.exit = Some(st);
            }
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let was_running = self.try_exit().is_none();
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- meshgate (pid {}, {}) stderr ---\n{}\n--- end of meshgate stderr ---",
                self.child.id(),
                if was_running { "killed by the test" } else { "had exited" },
                tail(&self.stderr(), 32 * 1024)
            );
        }
    }
}

/// `VmRSS` of a process in KiB.
pub fn rss_kib_of(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// CPU time (utime + stime) a process has used so far, in seconds.
pub fn cpu_seconds_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // utime and stime are the 14th and 15th fields; the command name before
    // them is parenthesised and may hold spaces.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let out = std::process::Command::new("getconf").arg("CLK_TCK").output().expect("getconf CLK_TCK");
    let per_second: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(100);
    ticks as f64 / per_second as f64
}

/// Finds `name: value` in an Envoy-style `/stats` text.
pub fn parse_stat(stats: &str, name: &str) -> Option<u64> {
    stats.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        if n.trim() == name {
            v.trim().parse().ok()
        } else {
            None
        }
    })
}

fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut i = s.len() - max;
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

/// Runs `meshgate ARGS` to completion (at most `timeout`), capturing output.
#[track_caller]
pub fn run_meshgate(args: &[&str], timeout: Duration) -> Output {
    let out = tempfile::NamedTempFile::new().expect("tempfile");
    let err = tempfile::NamedTempFile::new().expect("tempfile");
    let mut child = Command::new(bin_path("meshgate"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out.reopen().expect("reopen")))
        .stderr(Stdio::from(err.reopen().expect("reopen")))
        .spawn()
        .expect("spawn meshgate");
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Ok(Some(st)) = child.try_wait() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "meshgate {args:?} did not exit within {timeout:?}; stderr:\n{}",
                String::from_utf8_lossy(&std::fs::read(err.path()).unwrap_or_default())
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: std::fs::read(out.path()).unwrap_or_default(),
        stderr: std::fs::read(err.path()).unwrap_or_default(),
    }
}

/// Renders `yaml` (placeholders as in [`render_config`]), writes it to a temp
/// file and runs `meshgate --config FILE --validate`.
#[track_caller]
pub fn validate_config(yaml: &str, upstreams: &[SocketAddr]) -> Output {
    let (config, _) = render_config(yaml, upstreams);
    let mut f = tempfile::Builder::new().prefix("meshgate-validate-").suffix(".yaml").tempfile().expect("tempfile");
    f.write_all(config.as_bytes()).expect("write config");
    f.flush().expect("flush");
    let path = f.path().to_str().expect("utf-8 temp path").to_owned();
    run_meshgate(&["--config", &path, "--validate"], Duration::from_secs(30))
}

// ---------------------------------------------------------------------------
// Config templates.
// ---------------------------------------------------------------------------

/// Listener name used by [`basic_config`].
pub const LISTENER_NAME: &str = "ingress_listener";
/// HCM `stat_prefix` used by [`basic_config`].
pub const STAT_PREFIX: &str = "ingress";
/// Cluster name used by [`basic_config`].
pub const CLUSTER_NAME: &str = "backend";

fn indent(fragment: &str, spaces: usize) -> String {
    let pad = " ".repeat(spaces);
    let mut s = String::new();
    for line in fragment.trim_matches('\n').lines() {
        if line.trim().is_empty() {
            continue;
        }
        s.push_str(&pad);
        s.push_str(line);
        s.push('\n');
    }
    s
}

/// A complete Envoy v3 bootstrap: admin on `{{ADMIN_PORT}}`, one listener
/// `ingress_listener` on 127.0.0.1:`{{LISTEN_PORT}}` with an HTTP connection
/// manager (stat_prefix `ingress`, one virtual host `*`, prefix `/` → cluster
/// `backend`, router filter) and a STATIC cluster `backend` with one endpoint
/// `{{UPSTREAM_1}}:{{UPSTREAM_1_PORT}}`.
///
/// The three fragments are YAML written at column 0 and are inserted,
/// re-indented, as extra keys of the HCM `typed_config`, of the route action
/// (`route:`), and of the cluster.
pub fn basic_config(hcm_extra: &str, route_extra: &str, cluster_extra: &str) -> String {
    format!(
        r#"admin:
  address:
    socket_address:
      address: 127.0.0.1
      port_value: {{{{ADMIN_PORT}}}}
static_resources:
  listeners:
  - name: {LISTENER_NAME}
    address:
      socket_address:
        address: 127.0.0.1
        port_value: {{{{LISTEN_PORT}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {STAT_PREFIX}
          route_config:
            name: local_route
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match:
                  prefix: "/"
                route:
                  cluster: {CLUSTER_NAME}
{route_extra}          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
{hcm_extra}  clusters:
  - name: {CLUSTER_NAME}
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: {CLUSTER_NAME}
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address:
                address: {{{{UPSTREAM_1}}}}
                port_value: {{{{UPSTREAM_1_PORT}}}}
{cluster_extra}"#,
        route_extra = indent(route_extra, 18),
        hcm_extra = indent(hcm_extra, 10),
        cluster_extra = indent(cluster_extra, 4),
    )
}

/// The gateway config `filters_config` and `backend_route_config` share:
/// listener `ingress` with `network_filters` ahead of its connection manager,
/// `routes` in its one catch-all virtual host, `http_filters` ahead of the
/// router, then `clusters`.  Every part is YAML at column 0 (may be empty).
fn ingress_config(network_filters: &str, http_filters: &str, routes: &str, clusters: &str) -> String {
    let ind =
        |s: &str, n: usize| s.trim_matches('\n').lines().map(|l| format!("{}{l}\n", " ".repeat(n))).collect::<String>();
    format!(
        r#"admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {{{{ADMIN_PORT}}}} }} }}
static_resources:
  listeners:
  - name: ingress
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {{{{LISTEN_PORT}}}} }} }}
    filter_chains:
    - filters:
{network}      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            name: local
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
{routes}          http_filters:
{http}          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
  clusters:
{clusters}"#,
        network = ind(network_filters, 6),
        http = ind(http_filters, 10),
        routes = ind(routes, 14),
        clusters = ind(clusters, 2),
    )
}

/// A gateway config: one listener `ingress` whose connection manager has
/// `http_filters` (YAML list items at column 0; the router is appended) and
/// `routes` (at column 0) in one catch-all virtual host, `network_filters`
/// (at column 0, may be empty) ahead of it, and one cluster `backend` on
/// `{{UPSTREAM_1}}`.  For filter tests that vary only those three parts.
pub fn filters_config(network_filters: &str, http_filters: &str, routes: &str) -> String {
    let backend = r#"- name: backend
  connect_timeout: 1s
  load_assignment:
    cluster_name: backend
    endpoints:
    - lb_endpoints:
      - endpoint: { address: { socket_address: { address: "{{UPSTREAM_1}}", port_value: {{UPSTREAM_1_PORT}} } } }
"#;
    ingress_config(network_filters, http_filters, routes, backend)
}

/// The static cluster `xds_cluster` (HTTP/2, one endpoint at `xds`) that an
/// xDS bootstrap points its config sources at: YAML list items indented for
/// `static_resources:` / `  clusters:`, ending with a newline.
pub fn xds_cluster_yaml(xds: SocketAddr) -> String {
    format!(
        r#"  - name: xds_cluster
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http2_protocol_options: {{}} }}
    load_assignment:
      cluster_name: xds_cluster
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: {ip}, port_value: {port} }} }} }} }}] }}]
"#,
        ip = xds.ip(),
        port = xds.port()
    )
}

/// A gateway config: one listener `ingress` routing every path to cluster
/// `backend`, `route_extra` (at column 0) added to that route's action, and
/// `clusters` (YAML list items at column 0) as the cluster list.  For
/// cluster-level tests (balancing, breakers, outlier detection) that shape
/// their clusters and endpoints themselves.
pub fn backend_route_config(route_extra: &str, clusters: &str) -> String {
    let route_extra: String = route_extra.trim_matches('\n').lines().map(|l| format!("    {l}\n")).collect();
    let routes = format!("- match: {{ prefix: \"/\" }}\n  route:\n    cluster: backend\n{route_extra}");
    ingress_config("", "", &routes, clusters)
}

/// A STATIC cluster `name` as a YAML list item at column 0, for
/// [`backend_route_config`]'s `clusters`: `extra` (cluster fields at
/// column 0, e.g. `lb_policy: RANDOM` or a `health_checks:` block) is
/// indented under it, and each endpoint `(n, priority, weight)` is the
/// `{{UPSTREAM_n}}` placeholder [`Gateway::start`] fills in, in a locality
/// of its own.
pub fn static_cluster(name: &str, extra: &str, endpoints: &[(usize, u32, u32)]) -> String {
    let mut s = format!("- name: {name}\n  type: STATIC\n  connect_timeout: 1s\n");
    for l in extra.lines().filter(|l| !l.trim().is_empty()) {
        s.push_str(&format!("  {l}\n"));
    }
    s.push_str(&format!("  load_assignment:\n    cluster_name: {name}\n    endpoints:\n"));
    for (n, priority, weight) in endpoints {
        s.push_str(&format!(
            "    - priority: {priority}\n      lb_endpoints:\n      - load_balancing_weight: {weight}\n        endpoint: {{ address: {{ socket_address: {{ address: \"{{{{UPSTREAM_{n}}}}}\", port_value: {{{{UPSTREAM_{n}_PORT}}}} }} }} }}\n"
        ));
    }
    s
}

/// Starts an `mg-upstream` named `up` and a gateway running
/// [`basic_config`]`(hcm_extra, route_extra, cluster_extra)` in front of it.
#[track_caller]
pub fn start_basic(
    hcm_extra: &str,
    route_extra: &str,
    cluster_extra: &str,
    extra_args: &[&str],
) -> (Upstream, Gateway) {
    let up = Upstream::start("up");
    let gw = Gateway::start(&basic_config(hcm_extra, route_extra, cluster_extra), &[up.addr], extra_args);
    (up, gw)
}

// ---------------------------------------------------------------------------
// A strict HTTP/1.1 client.
// ---------------------------------------------------------------------------

/// How a response body was delimited on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body by definition (HEAD, 1xx, 204, 304).
    None,
    ContentLength(u64),
    Chunked,
    /// Read until the peer closed.
    CloseDelimited,
}

/// One parsed HTTP/1.x response.
#[derive(Clone, Debug)]
pub struct Response {
    /// e.g. `HTTP/1.1`.
    pub version: String,
    pub status: u16,
    pub reason: String,
    /// Header fields in received order, names as received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Trailer fields of a chunked body.
    pub trailers: Vec<(String, String)>,
    pub framing: Framing,
}

impl Response {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// All values of header `name`.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }

    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    /// First value of trailer `name`.
    pub fn trailer(&self, name: &str) -> Option<&str> {
        self.trailers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Whether the response announces `connection: close`.
    pub fn connection_close(&self) -> bool {
        self.header_all("connection").iter().flat_map(|v| v.split(',')).any(|t| t.trim().eq_ignore_ascii_case("close"))
    }

    /// Body as (lossy) UTF-8.
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Body parsed as JSON (panics with the body on failure).
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        match serde_json::from_slice(&self.body) {
            Ok(v) => v,
            Err(e) => panic!("response body is not JSON ({e}): {:?}", self.body_str()),
        }
    }
}

/// The request as an mg-upstream `/echo` saw it.
#[derive(Clone, Debug)]
pub struct Echo {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body_len: u64,
    pub body_fnv64: String,
    pub trailers: Vec<(String, String)>,
}

impl Echo {
    /// Parses an `/echo`, `/expect` or `/upload` response body.
    #[track_caller]
    pub fn from_response(r: &Response) -> Echo {
        let v = r.json();
        let pairs = |key: &str| -> Vec<(String, String)> {
            v.get(key)
                .and_then(|h| h.as_array())
                .map(|a| {
                    a.iter()
                        .map(|p| {
                            (p[0].as_str().unwrap_or_default().to_owned(), p[1].as_str().unwrap_or_default().to_owned())
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        Echo {
            method: v["method"].as_str().unwrap_or_default().to_owned(),
            path: v["path"].as_str().unwrap_or_default().to_owned(),
            headers: pairs("headers"),
            body_len: v["body_len"].as_u64().unwrap_or(0),
            body_fnv64: v["body_fnv64"].as_str().unwrap_or_default().to_owned(),
            trailers: pairs("trailers"),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }

    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    pub fn trailer(&self, name: &str) -> Option<&str> {
        self.trailers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn read_byte<R: Read + ?Sized>(r: &mut R) -> io::Result<Option<u8>> {
    let mut b = [0u8; 1];
    loop {
        match r.read(&mut b) {
            Ok(0) => return Ok(None),
            Ok(_) => return Ok(Some(b[0])),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Reads one CRLF (or bare LF) terminated line, byte by byte (never past it).
fn read_line_raw<R: Read + ?Sized>(r: &mut R, max: usize) -> io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    loop {
        match read_byte(r)? {
            None => {
                if line.is_empty() {
                    return Ok(None);
                }
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "EOF inside a line"));
            }
            Some(b'\n') => {
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(Some(line));
            }
            Some(b) => {
                line.push(b);
                if line.len() > max {
                    return Err(invalid("line too long"));
                }
            }
        }
    }
}

fn parse_field(line: &[u8]) -> io::Result<(String, String)> {
    let s = String::from_utf8_lossy(line);
    match s.split_once(':') {
        Some((n, v)) if !n.is_empty() && !n.ends_with(' ') && !n.ends_with('\t') => {
            Ok((n.to_owned(), v.trim().to_owned()))
        }
        _ => Err(invalid(format!("invalid header line {s:?}"))),
    }
}

/// The head of a response: everything but the body.
fn read_head<R: Read + ?Sized>(r: &mut R) -> io::Result<Option<Response>> {
    let status_line = match read_line_raw(r, 64 * 1024)? {
        None => return Ok(None),
        Some(l) => l,
    };
    let sl = String::from_utf8_lossy(&status_line).into_owned();
    let mut parts = sl.splitn(3, ' ');
    let version = parts.next().unwrap_or("").to_owned();
    if !version.starts_with("HTTP/1.") {
        return Err(invalid(format!("not an HTTP/1.x status line: {sl:?}")));
    }
    let status: u16 = parts
        .next()
        .and_then(|c| if c.len() == 3 { c.parse().ok() } else { None })
        .ok_or_else(|| invalid(format!("bad status code in {sl:?}")))?;
    let reason = parts.next().unwrap_or("").to_owned();
    let mut headers = Vec::new();
    loop {
        let line = read_line_raw(r, 256 * 1024)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "EOF inside response head"))?;
        if line.is_empty() {
            break;
        }
        headers.push(parse_field(&line)?);
        if headers.len() > 1000 {
            return Err(invalid("too many response headers"));
        }
    }
    Ok(Some(Response {
        version,
        status,
        reason,
        headers,
        body: Vec::new(),
        trailers: Vec::new(),
        framing: Framing::None,
    }))
}

fn framing_for(resp: &Response, head_request: bool) -> io::Result<Framing> {
    if head_request || resp.status < 200 || resp.status == 204 || resp.status == 304 {
        return Ok(Framing::None);
    }
    let te: Vec<String> = resp
        .header_all("transfer-encoding")
        .iter()
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    if !te.is_empty() {
        if te.last().map(String::as_str) == Some("chunked") {
            if resp.has_header("content-length") {
                return Err(invalid("response has both transfer-encoding and content-length"));
            }
            return Ok(Framing::Chunked);
        }
        return Ok(Framing::CloseDelimited);
    }
    let cls = resp.header_all("content-length");
    let mut len: Option<u64> = None;
    for v in cls {
        for p in v.split(',') {
            let n: u64 = p.trim().parse().map_err(|_| invalid(format!("invalid content-length {v:?}")))?;
            if len.is_some_and(|l| l != n) {
                return Err(invalid("conflicting content-length values"));
            }
            len = Some(n);
        }
    }
    Ok(match len {
        Some(n) => Framing::ContentLength(n),
        None => Framing::CloseDelimited,
    })
}

fn read_n<R: Read + ?Sized>(
    r: &mut R,
    mut n: u64,
    buf: &mut [u8],
    sink: &mut dyn FnMut(&[u8]),
    total: &mut u64,
) -> io::Result<()> {
    while n > 0 {
        let want = n.min(buf.len() as u64) as usize;
        let got = match r.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("EOF with {n} body bytes still expected"),
                ))
            }
            Ok(g) => g,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        sink(&buf[..got]);
        n -= got as u64;
        *total += got as u64;
    }
    Ok(())
}

fn read_body<R: Read + ?Sized>(
    r: &mut R,
    framing: Framing,
    trailers: &mut Vec<(String, String)>,
    sink: &mut dyn FnMut(&[u8]),
) -> io::Result<u64> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    match framing {
        Framing::None => {}
        Framing::ContentLength(n) => read_n(r, n, &mut buf, sink, &mut total)?,
        Framing::Chunked => loop {
            let line = read_line_raw(r, 4096)?
                .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "EOF before chunk size"))?;
            let s = String::from_utf8_lossy(&line).into_owned();
            let size_s = s.split(';').next().unwrap_or("").trim();
            let size = u64::from_str_radix(size_s, 16).map_err(|_| invalid(format!("bad chunk size line {s:?}")))?;
            if size == 0 {
                loop {
                    let t = read_line_raw(r, 64 * 1024)?
                        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "EOF in trailers"))?;
                    if t.is_empty() {
                        break;
                    }
                    trailers.push(parse_field(&t)?);
                }
                break;
            }
            read_n(r, size, &mut buf, sink, &mut total)?;
            let crlf = read_line_raw(r, 16)?;
            if crlf.as_deref() != Some(&b""[..]) {
                return Err(invalid("chunk data not followed by CRLF"));
            }
        },
        Framing::CloseDelimited => loop {
            let got = match r.read(&mut buf) {
                Ok(0) => break,
                Ok(g) => g,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            sink(&buf[..got]);
            total += got as u64;
        },
    }
    Ok(total)
}

/// Reads exactly one response (an interim 1xx counts as one) from `r`, never
/// reading past its end, so it can be called again on a keep-alive or
/// pipelined stream. `head_request`: the response answers a HEAD (no body).
/// Returns `Ok(None)` on a clean EOF before any byte.
pub fn try_read_response<R: Read + ?Sized>(r: &mut R, head_request: bool) -> io::Result<Option<Response>> {
    let mut body = Vec::new();
    let resp = read_response_streaming(r, head_request, &mut |d| body.extend_from_slice(d))?;
    Ok(resp.map(|mut resp| {
        resp.body = body;
        resp
    }))
}

/// Like [`try_read_response`] but hands body bytes to `sink` instead of
/// keeping them (the returned `body` is empty): for huge downloads.
pub fn read_response_streaming<R: Read + ?Sized>(
    r: &mut R,
    head_request: bool,
    sink: &mut dyn FnMut(&[u8]),
) -> io::Result<Option<Response>> {
    let Some(mut resp) = read_head(r)? else {
        return Ok(None);
    };
    let framing = framing_for(&resp, head_request)?;
    resp.framing = framing;
    let mut trailers = Vec::new();
    read_body(r, framing, &mut trailers, sink)?;
    resp.trailers = trailers;
    Ok(Some(resp))
}

/// Reads exactly one HTTP/1.1 response (Content-Length, chunked with trailers,
/// or close-delimited) from a stream; panics on EOF or error. A 1xx interim
/// response is returned as such.
#[track_caller]
pub fn read_response<R: Read + ?Sized>(stream: &mut R) -> Response {
    match try_read_response(stream, false) {
        Ok(Some(r)) => r,
        Ok(None) => panic!("connection closed before a response"),
        Err(e) => panic!("reading response: {e}"),
    }
}

/// Parses a byte capture into responses, in order. Returns the complete
/// responses and the error that stopped parsing (`None` if the bytes ended
/// cleanly between responses). A truncated last message is reported as an error.
pub fn parse_responses(bytes: &[u8]) -> (Vec<Response>, Option<io::Error>) {
    let mut cur = io::Cursor::new(bytes);
    let mut out = Vec::new();
    loop {
        match try_read_response(&mut cur, false) {
            Ok(Some(r)) => out.push(r),
            Ok(None) => return (out, None),
            Err(e) => return (out, Some(e)),
        }
    }
}

/// Builds a request. Adds `Host: localhost` unless a host header is given, and
/// `Content-Length` when `body` is non-empty and no framing header is given.
pub fn build_request(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut r = format!("{method} {target} HTTP/1.1\r\n").into_bytes();
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        r.extend_from_slice(b"Host: localhost\r\n");
    }
    for (n, v) in headers {
        r.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
    }
    let framed = headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("transfer-encoding"));
    if !body.is_empty() && !framed {
        r.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    r.extend_from_slice(b"\r\n");
    r.extend_from_slice(body);
    r
}

/// A keep-alive client connection.
pub struct Client {
    reader: BufReader<TcpStream>,
    pub peer: SocketAddr,
}

impl Client {
    /// Connects with [`IO_TIMEOUT`] read/write timeouts; panics on failure.
    #[track_caller]
    pub fn connect(addr: SocketAddr) -> Client {
        match Self::try_connect(addr) {
            Ok(c) => c,
            Err(e) => panic!("connect {addr}: {e}"),
        }
    }

    pub fn try_connect(addr: SocketAddr) -> io::Result<Client> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.set_write_timeout(Some(IO_TIMEOUT))?;
        s.set_nodelay(true)?;
        Ok(Client { reader: BufReader::with_capacity(256 * 1024, s), peer: addr })
    }

    /// The underlying socket (for writes, timeouts, shutdown).
    pub fn stream(&self) -> &TcpStream {
        self.reader.get_ref()
    }

    /// The buffered reader (for [`read_response_streaming`] and friends).
    pub fn reader(&mut self) -> &mut BufReader<TcpStream> {
        &mut self.reader
    }

    pub fn set_read_timeout(&self, t: Duration) {
        self.stream().set_read_timeout(Some(t)).expect("set_read_timeout");
    }

    /// Writes raw bytes; panics on failure.
    #[track_caller]
    pub fn send(&mut self, bytes: &[u8]) {
        if let Err(e) = self.try_send(bytes) {
            panic!("write to {}: {e}", self.peer);
        }
    }

    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut s = self.reader.get_ref();
        s.write_all(bytes)?;
        s.flush()
    }

    /// Reads one response (see [`read_response`]); panics on failure.
    #[track_caller]
    pub fn read_response(&mut self) -> Response {
        read_response(&mut self.reader)
    }

    /// Reads one response to a HEAD request.
    #[track_caller]
    pub fn read_head_response(&mut self) -> Response {
        match try_read_response(&mut self.reader, true) {
            Ok(Some(r)) => r,
            Ok(None) => panic!("connection closed before a response"),
            Err(e) => panic!("reading response: {e}"),
        }
    }

    pub fn try_read_response(&mut self) -> io::Result<Option<Response>> {
        try_read_response(&mut self.reader, false)
    }

    /// Sends a request and reads its final response (1xx skipped).
    #[track_caller]
    pub fn request(&mut self, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        self.send(&build_request(method, target, headers, body));
        loop {
            let r = if method.eq_ignore_ascii_case("HEAD") { self.read_head_response() } else { self.read_response() };
            if r.status >= 200 {
                return r;
            }
        }
    }

    #[track_caller]
    pub fn get(&mut self, target: &str) -> Response {
        self.request("GET", target, &[], b"")
    }

    /// Whether the peer has closed the connection (EOF or reset), waiting at most `wait`.
    /// Data arriving instead counts as "open".
    pub fn is_closed(&mut self, wait: Duration) -> bool {
        if !self.reader.buffer().is_empty() {
            return false;
        }
        let old = self.stream().read_timeout().ok().flatten();
        let _ = self.stream().set_read_timeout(Some(wait.max(Duration::from_millis(1))));
        let res = match self.reader.fill_buf() {
            Ok(b) => b.is_empty(),
            Err(e) => !matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut),
        };
        let _ = self.stream().set_read_timeout(old);
        res
    }

    /// Half-closes the write side.
    pub fn shutdown_write(&self) {
        let _ = self.stream().shutdown(Shutdown::Write);
    }
}

/// One-shot GET on a fresh connection (10 s timeouts); panics on failure.
#[track_caller]
pub fn get(addr: SocketAddr, path: &str) -> Response {
    match try_get(addr, path, IO_TIMEOUT) {
        Ok(r) => r,
        Err(e) => panic!("GET http://{addr}{path}: {e}"),
    }
}

/// One-shot GET on a fresh connection.
pub fn try_get(addr: SocketAddr, path: &str, timeout: Duration) -> io::Result<Response> {
    let s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let mut w = &s;
    w.write_all(&build_request("GET", path, &[], b""))?;
    let mut r = BufReader::new(&s);
    loop {
        match try_read_response(&mut r, false)? {
            Some(resp) if resp.status < 200 => continue,
            Some(resp) => return Ok(resp),
            None => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before a response")),
        }
    }
}

/// What a raw exchange saw.
#[derive(Debug)]
pub struct RawOutcome {
    /// Everything received.
    pub bytes: Vec<u8>,
    /// The peer closed (EOF or reset) before the timeout.
    pub closed: bool,
    /// The close was a reset (ECONNRESET).
    pub reset: bool,
    /// From connect to close (or timeout).
    pub elapsed: Duration,
}

impl RawOutcome {
    /// The received bytes parsed as responses (see [`parse_responses`]).
    pub fn responses(&self) -> (Vec<Response>, Option<io::Error>) {
        parse_responses(&self.bytes)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// Connects, writes `request` (while reading concurrently, so an early
/// response is not lost), and reads until the server closes or `timeout`.
/// Never half-closes its own side. Returns the bytes received.
#[track_caller]
pub fn raw_exchange(addr: SocketAddr, request: &[u8], timeout: Duration) -> Vec<u8> {
    raw_exchange_detailed(addr, request, timeout).bytes
}

/// [`raw_exchange`] with whether/how the connection ended.
#[track_caller]
pub fn raw_exchange_detailed(addr: SocketAddr, request: &[u8], timeout: Duration) -> RawOutcome {
    let start = Instant::now();
    let s = match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
        Ok(s) => s,
        Err(e) => panic!("connect {addr}: {e}"),
    };
    let _ = s.set_nodelay(true);
    let _ = s.set_write_timeout(Some(timeout));
    let ws = s.try_clone().expect("clone stream");
    let req = request.to_vec();
    let writer = std::thread::spawn(move || {
        let mut w = &ws;
        let _ = w.write_all(&req);
        let _ = w.flush();
    });
    let out = read_until_close(&s, start + timeout);
    let _ = writer.join();
    RawOutcome { elapsed: start.elapsed(), ..out }
}

/// Reads from `s` until EOF/reset or `deadline`.
pub fn read_until_close(s: &TcpStream, deadline: Instant) -> RawOutcome {
    let start = Instant::now();
    let mut bytes = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut closed = false;
    let mut reset = false;
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let _ = s.set_read_timeout(Some((deadline - now).max(Duration::from_millis(1))));
        let mut r = s;
        match r.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => continue,
            Err(_) => {
                closed = true;
                reset = true;
                break;
            }
        }
    }
    RawOutcome { bytes, closed, reset, elapsed: start.elapsed() }
}

/// Whether `s` looks like a version-4 UUID (`xxxxxxxx-xxxx-4xxx-[89ab]xxx-xxxxxxxxxxxx`).
pub fn is_uuid_v4(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 36 {
        return false;
    }
    for (i, &c) in b.iter().enumerate() {
        let ok = match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        };
        if !ok {
            return false;
        }
    }
    b[14] == b'4' && matches!(b[19].to_ascii_lowercase(), b'8' | b'9' | b'a' | b'b')
}

/// Serialises tests that need the machine to themselves (e.g. RSS measurements).
pub fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_known_values() {
        assert_eq!(fnv64_hex(b""), "cbf29ce484222325");
        assert_eq!(fnv64_hex(b"a"), "af63dc4c8601ec8c");
        let mut f = Fnv64::new();
        f.update(b"foo");
        f.update(b"bar");
        assert_eq!(f.hex(), fnv64_hex(b"foobar"));
        assert_eq!(fnv64_hex(b"foobar"), "85944171f73967e8");
    }

    #[test]
    fn pattern_continues_across_calls() {
        let mut g = PatternGen::new();
        let mut a = vec![0; 7];
        let mut b = vec![0; 70_000];
        g.fill(&mut a);
        g.fill(&mut b);
        assert_eq!(&a, b"0123456");
        assert!(is_pattern_at(&b, 7));
        assert_eq!(pattern(12), b"012345678901");
    }

    #[test]
    fn parses_pipelined_and_chunked_responses() {
        let wire = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nx-sum: 1\r\n\r\nHTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\n\r\nrest";
        let (rs, err) = parse_responses(wire);
        assert!(err.is_none(), "{err:?}");
        assert_eq!(rs.len(), 5);
        assert_eq!(rs[0].status, 100);
        assert_eq!(rs[1].body, b"hello");
        assert_eq!(rs[2].body, b"abcde");
        assert_eq!(rs[2].trailer("X-Sum"), Some("1"));
        assert_eq!(rs[3].status, 204);
        assert_eq!(rs[4].framing, Framing::CloseDelimited);
        assert_eq!(rs[4].body, b"rest");
    }

    #[test]
    fn truncated_response_is_an_error() {
        let (rs, err) = parse_responses(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
        assert!(rs.is_empty());
        assert!(err.is_some());
    }

    #[test]
    fn uuid_check() {
        assert!(is_uuid_v4("123e4567-e89b-42d3-a456-426614174000"));
        assert!(!is_uuid_v4("123e4567-e89b-12d3-a456-426614174000"));
        assert!(!is_uuid_v4("abc"));
    }

    #[test]
    fn render_replaces_placeholders() {
        let up: SocketAddr = "127.0.0.1:4567".parse().unwrap();
        let (y, ports) = render_config(&basic_config("", "timeout: 1s", ""), &[up]);
        assert!(y.contains("port_value: 4567"));
        assert!(y.contains("address: 127.0.0.1"));
        assert!(y.contains(&format!("port_value: {}", ports.admin)));
        assert_eq!(ports.listen.len(), 1);
        assert!(y.contains("                  timeout: 1s\n"));
        assert!(!y.contains("{{"));
    }

    #[test]
    fn parse_stat_finds_values() {
        let s = "cluster.backend.upstream_rq_total: 7\nhttp.ingress.downstream_rq_total: 12\n";
        assert_eq!(parse_stat(s, "http.ingress.downstream_rq_total"), Some(12));
        assert_eq!(parse_stat(s, "nope"), None);
    }
}
