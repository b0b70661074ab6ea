//! The request path's hot operations as a plain program, for counting
//! instructions under callgrind (`bench/callgrind.sh`).
//!
//! `hotpaths <path> <iterations>` builds the fixture for `<path>` (see
//! `support`), checks its answer once, then runs the operation
//! `<iterations>` times inside `measured`, the only function callgrind
//! collects (`--toggle-collect`).  Setup, checking and process start-up are
//! therefore not counted, and what is left — N operations plus a constant
//! loop entry — is cancelled by the driver, which runs N and 2N iterations
//! and reports (Ir(2N) − Ir(N)) / N.  Inputs cycle with period 256, so
//! iteration counts that are multiples of 256 see identical input mixes.
//!
//! `hotpaths --list` prints the paths.  Without a path (as `cargo test
//! --benches` and `cargo bench` run it) every path runs a few iterations
//! as a smoke test and nothing is measured.
//!
//! Paths:
//! * `baseline/empty`: the loop and the indirect call around an empty
//!   operation — the harness's own share of every other figure;
//! * `http1/forward`: parse + forward of a typical request (`support::Forwarder`);
//! * `http1/parse`: only `parse_request_head` of the same request;
//! * `router/<routes>/<probe>`: `RouteTable::find`, 10 / 1,000 / 10,000 routes;
//! * `rbac/<cidrs>/<hit|miss>`: `rbac::Engine::evaluate` over a CIDR whitelist;
//! * `lb/<policy>/<hosts>`: `Balancer::pick`, 10 / 1,000 hosts;
//! * `tcp/userspace`: RESERVED for the userspace (DPDK + smoltcp) TCP path,
//!   being built on the DPDK branch; it is listed so the driver and the
//!   report carry its row, and exits with status 2 ("not available") until
//!   an operation is wired in here.

mod support;

use std::hint::black_box;
use std::process::ExitCode;

use dataplane::http1::{parse_request_head, Limits, RequestHead};
use support::*;

const ROUTE_SIZES: [usize; 3] = [10, 1_000, 10_000];
const CIDR_SIZES: [usize; 3] = [10, 1_000, 10_000];
const LB_SIZES: [usize; 2] = [10, 1_000];

/// Exit status for a path that has no operation yet (the driver reports it as pending).
const NOT_AVAILABLE: u8 = 2;

fn paths() -> Vec<String> {
    let mut p = vec!["baseline/empty".to_string(), "http1/forward".to_string(), "http1/parse".to_string()];
    for n in ROUTE_SIZES {
        for probe in ROUTE_PROBES {
            p.push(format!("router/{n}/{probe}"));
        }
    }
    for n in CIDR_SIZES {
        for kind in ["hit", "miss"] {
            p.push(format!("rbac/{n}/{kind}"));
        }
    }
    for policy in LB_POLICIES {
        for n in LB_SIZES {
            p.push(format!("lb/{policy}/{n}"));
        }
    }
    p.push("tcp/userspace".to_string());
    p
}

/// The loop callgrind counts.  Never inlined, so `--toggle-collect` finds it.
#[inline(never)]
fn measured(iterations: u64, op: &mut dyn FnMut(usize)) {
    for i in 0..iterations {
        op(i as usize & 255);
    }
}

/// Builds `path`'s fixture, checks it, runs it `iterations` times.
fn run(path: &str, iterations: u64) -> Result<(), u8> {
    let parts: Vec<&str> = path.split('/').collect();
    match parts.as_slice() {
        ["baseline", "empty"] => {
            measured(iterations, &mut |i| {
                black_box(i);
            });
        }
        ["http1", "forward"] => {
            let mut fwd = Forwarder::new();
            check_forwarded(fwd.forward(REQUEST));
            measured(iterations, &mut |_| {
                black_box(fwd.forward(black_box(REQUEST)).len());
            });
        }
        ["http1", "parse"] => {
            let limits = Limits::default();
            let mut head = RequestHead::new();
            assert_eq!(parse_request_head(REQUEST, &limits, &mut head), Ok(Some(REQUEST.len())));
            measured(iterations, &mut |_| {
                black_box(parse_request_head(black_box(REQUEST), &limits, &mut head).is_ok());
            });
        }
        ["router", n, probe] => {
            let n: usize = n.parse().map_err(|_| 1u8)?;
            let table = route_table(n);
            let (req, want) = route_probe(n, probe);
            assert_eq!(route_lookup(&table, &req).map(|r| r.name.as_str()), Some(want.as_str()));
            measured(iterations, &mut |_| {
                black_box(route_lookup(&table, black_box(&req)));
            });
        }
        ["rbac", n, kind] => {
            let n: usize = n.parse().map_err(|_| 1u8)?;
            let ranges = cidr_ranges(n);
            let engine = rbac_engine(&ranges);
            let hit = match *kind {
                "hit" => true,
                "miss" => false,
                _ => return Err(1),
            };
            let subjects = rbac_subjects(&ranges, hit);
            assert!(subjects.iter().all(|s| engine.evaluate(s).allowed == hit));
            measured(iterations, &mut |i| {
                black_box(engine.evaluate(black_box(&subjects[i])).allowed);
            });
        }
        ["lb", policy, n] => {
            let n: usize = n.parse().map_err(|_| 1u8)?;
            if !LB_POLICIES.contains(policy) {
                return Err(1);
            }
            let mut b = balancer(policy, n);
            let active = active_requests(n);
            let hashes = request_hashes();
            let hashing = lb_uses_hash(policy);
            assert!((lb_pick(&mut b, hashing.then_some(hashes[0]), &active) as usize) < n);
            measured(iterations, &mut |i| {
                let h = if hashing { Some(hashes[i]) } else { None };
                black_box(lb_pick(&mut b, black_box(h), &active));
            });
        }
        ["tcp", "userspace"] => {
            // RESERVED: the userspace TCP path (dpdk crate, smoltcp) is being
            // built on the DPDK branch.  Wire one segment in + one segment out
            // through its stack here (no NIC: a loopback device), then drop
            // this early return.
            return Err(NOT_AVAILABLE);
        }
        _ => return Err(1),
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    match args.as_slice() {
        [flag] if flag == "--list" => {
            for p in paths() {
                println!("{p}");
            }
            ExitCode::SUCCESS
        }
        [path, iterations] => {
            let Ok(iterations) = iterations.parse::<u64>() else {
                eprintln!("hotpaths: iterations must be a number, got {iterations:?}");
                return ExitCode::from(1);
            };
            match run(path, iterations) {
                Ok(()) => ExitCode::SUCCESS,
                Err(NOT_AVAILABLE) => {
                    eprintln!("hotpaths: {path}: not available yet");
                    ExitCode::from(NOT_AVAILABLE)
                }
                Err(code) => {
                    eprintln!("hotpaths: unknown path {path:?} (see --list)");
                    ExitCode::from(code)
                }
            }
        }
        // Smoke test (`cargo test --benches`, `cargo bench`): every path
        // builds, answers correctly and runs.
        [] => {
            for p in paths() {
                match run(&p, 300) {
                    Ok(()) | Err(NOT_AVAILABLE) => {}
                    Err(_) => {
                        eprintln!("hotpaths: {p} failed");
                        return ExitCode::FAILURE;
                    }
                }
            }
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("usage: hotpaths <path> <iterations> | --list");
            ExitCode::from(1)
        }
    }
}
