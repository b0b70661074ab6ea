//! HTTP/2 floods against a real `meshgate` (h2c, prior knowledge), written
//! frame by frame by `testkit/py/h2_flood.py`: rapid reset
//! (CVE-2023-44487), CONTINUATION flood (CVE-2024-27316 class), PING flood,
//! SETTINGS flood, and an oversized header list.  Each flood must end in
//! GOAWAY(ENHANCE_YOUR_CALM) long before the attacker ran out of frames (the
//! oversized header list: a refusal of that one stream), with the gateway's
//! memory and CPU bounded (`/proc`: VmRSS and utime+stime before and
//! after, generous bounds for a shared 2-core machine, no timings), while a
//! well-behaved HTTP/2 client on its own connection keeps getting 200s.
//!
//! Needs the test venv that `scripts/install-deps.sh` creates
//! (`target/test-venv`, with `h2`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::Value;
use testkit::{start_basic, Gateway};

fn python() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-venv/bin/python3");
    let ok = Command::new(&venv)
        .args(["-c", "import h2, hyperframe, hpack"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "{} with `h2` missing: run scripts/install-deps.sh", venv.display());
    venv
}

fn flood_command(gw: &Gateway, args: &[&str]) -> Command {
    let mut cmd = Command::new(python());
    cmd.arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testkit/py/h2_flood.py"))
        .arg(gw.listener_addr.to_string())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    cmd
}

fn report(out: std::process::Output, what: &str) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{what}: flood client failed: {text}");
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{what}: bad report {text:?}: {e}"))
}

fn run(gw: &Gateway, args: &[&str]) -> Value {
    report(flood_command(gw, args).output().expect("run the flood client"), &args.join(" "))
}

const BYSTANDER_REQUESTS: u32 = 200;

/// A well-behaved client on its own connection while the flood runs.
struct Bystander(Child);

impl Bystander {
    fn start(gw: &Gateway) -> Bystander {
        let n = BYSTANDER_REQUESTS.to_string();
        Bystander(flood_command(gw, &["steady", "--frames", &n]).spawn().expect("start the bystander"))
    }

    fn assert_served(self) {
        let out = self.0.wait_with_output().expect("bystander");
        let r = report(out, "bystander");
        assert_eq!(r["ok_responses"], BYSTANDER_REQUESTS, "the well-behaved client was hurt: {r}");
        assert!(r["goaway"].is_null(), "the well-behaved client got a GOAWAY: {r}");
    }
}

/// Runs one flood against a fresh gateway with a bystander, and checks what
/// every flood must leave behind: the bystander served, memory and CPU
/// bounded, the gateway serving new clients.  Returns the flood's report.
fn flood(args: &[&str]) -> Value {
    let (_up, gw) = start_basic("", "", "", &[]);
    let warmup = run(&gw, &["steady", "--frames", "5"]);
    assert_eq!(warmup["ok_responses"], 5, "HTTP/2 through the gateway before any flood: {warmup}");
    let pid = gw.pid();
    let (rss_before, cpu_before) = (gw.rss_kib(), testkit::cpu_seconds_of(pid));

    let bystander = Bystander::start(&gw);
    let r = run(&gw, args);
    bystander.assert_served();

    let (rss_after, cpu_after) = (gw.rss_kib(), testkit::cpu_seconds_of(pid));
    let cpu_seconds = cpu_after - cpu_before;
    eprintln!("{}: {r}\n  gateway RSS {rss_before} KiB -> {rss_after} KiB, CPU {cpu_seconds:.2} s", args.join(" "));
    // Generous bounds: a debug build on a shared machine.  Unbounded
    // handling of these floods grows by hundreds of MiB or burns the whole
    // attack's worth of CPU.
    assert!(rss_after < rss_before + 64 * 1024, "gateway RSS grew from {rss_before} KiB to {rss_after} KiB");
    assert!(cpu_seconds < 20.0, "gateway burnt {cpu_seconds:.2} s of CPU on one flood");

    let after = run(&gw, &["steady", "--frames", "5"]);
    assert_eq!(after["ok_responses"], 5, "a new client after the flood: {after}");
    r
}

fn assert_goaway_calm(r: &Value, max_frames: u64) {
    assert_eq!(r["goaway"]["name"], "ENHANCE_YOUR_CALM", "expected GOAWAY(ENHANCE_YOUR_CALM): {r}");
    let sent = r["frames_sent"].as_u64().unwrap();
    assert!(sent < max_frames, "the flood was not cut short: {sent} frames of {max_frames} sent: {r}");
}

#[test]
fn rapid_reset_ends_in_goaway() {
    let r = flood(&["rapid_reset", "--frames", "400000"]);
    assert_goaway_calm(&r, 400_000);
}

/// Each stream is accepted (and its request started) before its reset
/// arrives: h2's pending-accept limit does not apply, the premature-reset
/// rule (guard.rs) does: GOAWAY once 500 streams closed, most of them early.
#[test]
fn paced_rapid_reset_of_accepted_streams_ends_in_goaway() {
    let r = flood(&["rapid_reset", "--frames", "20000", "--batch", "1", "--pause-ms", "1"]);
    assert_goaway_calm(&r, 20_000);
    let pairs = r["frames_sent"].as_u64().unwrap() / 2;
    assert!(pairs >= 250, "cut off after {pairs} streams, before the premature-reset rule could apply: {r}");
}

#[test]
fn continuation_flood_ends_in_goaway() {
    let r = flood(&["continuation", "--frames", "200000", "--size", "1000"]);
    assert_goaway_calm(&r, 200_000);
}

#[test]
fn ping_flood_ends_in_goaway() {
    let r = flood(&["ping", "--frames", "1000000"]);
    assert_goaway_calm(&r, 1_000_000);
}

#[test]
fn settings_flood_ends_in_goaway() {
    let r = flood(&["settings", "--frames", "1000000"]);
    assert_goaway_calm(&r, 1_000_000);
}

#[test]
fn oversized_header_list_is_refused() {
    // 100 KB of headers against the default 60 KiB max_request_headers_kb.
    let r = flood(&["big_headers", "--size", "100000"]);
    let refused = r["status"] == 431 || r["rst_stream"].as_u64().unwrap_or(0) > 0 || !r["goaway"].is_null();
    assert!(refused && r["status"] != 200, "an oversized header list was not refused: {r}");
}
