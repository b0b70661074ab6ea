//! The `meshgate` binary: command line, mode choice and wiring.  It stays
//! thin on purpose: config loading lives in `control`, everything that
//! touches traffic in `dataplane`, and DPDK in `dpdk`.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use clap::{Parser, ValueEnum};

use dataplane::admin::{spawn_admin, AdminContext};
use dataplane::dns::{spawn_refresher, DnsResults};
use dataplane::server::ServerState;
use dataplane::shard::{spawn_shard, ShardHandle, Shared};
use dataplane::stats::{ServerStats, StatsStore};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// DPDK when `--dpdk-eal` is given and the port starts, kernel sockets otherwise.
    Auto,
    /// Kernel sockets (epoll) only.
    Kernel,
    /// DPDK poll-mode drivers with the userspace TCP stack; fails if unavailable.
    Dpdk,
}

/// meshgate: a per-node L7 gateway driven by Envoy v3 configuration.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Envoy v3 bootstrap file (YAML or JSON).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: PathBuf,
    /// Check the configuration and exit (0 valid, 1 invalid).
    #[arg(long)]
    validate: bool,
    /// Worker shards (pinned threads); default: the cores this process may use.
    #[arg(long, alias = "concurrency")]
    shards: Option<usize>,
    /// Data path.
    #[arg(long, value_enum, default_value_t = Mode::Auto)]
    mode: Mode,
    /// trace, debug, info, warn, error, or a tracing filter directive.
    #[arg(short = 'l', long, default_value = "info")]
    log_level: String,
    /// How long in-flight requests get to finish after SIGTERM/SIGINT.
    #[arg(long = "drain-time-s", default_value_t = 600)]
    drain_time_s: u64,
    /// Do not pin shards to cores.
    #[arg(long)]
    no_pin: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();

    let config = match control::bootstrap::load_file(&cli.config) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("error: invalid configuration '{}':", cli.config.display());
            for e in errors.iter() {
                eprintln!("  {e}");
            }
            return ExitCode::from(1);
        }
    };
    if cli.validate {
        println!("configuration '{}' OK", cli.config.display());
        return ExitCode::SUCCESS;
    }
    match cli.mode {
        Mode::Dpdk if !dpdk::AVAILABLE => {
            eprintln!("error: --mode dpdk: this build has no DPDK data path yet; use --mode kernel or auto");
            return ExitCode::from(1);
        }
        Mode::Dpdk => {}
        Mode::Auto => tracing::info!("mode auto: no DPDK port configured, using kernel sockets"),
        Mode::Kernel => {}
    }
    match run(cli, config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli, config: control::model::Config) -> Result<(), String> {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let shards = cli.shards.unwrap_or(cores.len().max(1)).max(1);
    let stats = StatsStore::new(shards);
    let server_stats = ServerStats::new(&stats);
    server_stats.concurrency.set(shards as i64);
    let server = ServerState::new();
    let admin_addr = config.admin.as_ref().map(|a| a.address);
    let config = Arc::new(ArcSwap::from_pointee(config));
    let dns = Arc::new(DnsResults::default());
    // First resolution before traffic, so STRICT_DNS clusters start populated.
    dns.refresh(&config.load(), None);
    let shared =
        Arc::new(Shared { config: config.clone(), stats: stats.clone(), server: server.clone(), dns: dns.clone() });

    let drain_time = Duration::from_secs(cli.drain_time_s);
    let mut handles: Vec<ShardHandle> = Vec::with_capacity(shards);
    for i in 0..shards {
        let core = if cli.no_pin || cores.is_empty() { None } else { Some(cores[i % cores.len()]) };
        match spawn_shard(i, core, shared.clone(), drain_time) {
            Ok(h) => handles.push(h),
            Err(e) => {
                server.start_draining();
                for h in &handles {
                    h.wake();
                }
                return Err(format!("shard {i} could not start: {e}"));
            }
        }
    }
    let wakers: Vec<_> = handles.iter().map(|h| h.waker()).collect();
    let _dns_thread =
        spawn_refresher(dns, config.clone(), server.clone(), move || wakers.iter().for_each(|w| w.wake()))
            .map_err(|e| format!("dns thread: {e}"))?;
    if let Some(addr) = admin_addr {
        let ctx = AdminContext {
            stats: stats.clone(),
            config: config.clone(),
            server: server.clone(),
            command_line: std::env::args().collect(),
            concurrency: shards,
        };
        let (bound, _thread) = spawn_admin(addr, ctx).map_err(|e| format!("admin listener on {addr}: {e}"))?;
        tracing::info!(address = %bound, "admin listening");
    }
    for l in &config.load().listeners {
        tracing::info!(listener = %l.name, address = %l.address, shards, "listening");
    }
    for l in &config.load().tcp_listeners {
        tracing::info!(listener = %l.name, address = %l.address, shards, "listening (tcp_proxy)");
    }

    let flag = server.clone();
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])
        .map_err(|e| format!("signal handlers: {e}"))?;
    std::thread::Builder::new()
        .name("meshgate-signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                tracing::info!(signal = sig, "shutdown requested; draining");
                flag.request_shutdown();
            }
        })
        .map_err(|e| format!("signal thread: {e}"))?;

    server.wait_for_shutdown();
    server.start_draining();
    for h in &handles {
        h.wake();
    }
    let deadline = Instant::now() + drain_time + Duration::from_secs(1);
    while Instant::now() < deadline && handles.iter().any(|h| !h.is_finished()) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let unfinished = handles.iter().filter(|h| !h.is_finished()).count();
    if unfinished > 0 {
        tracing::warn!(shards = unfinished, "drain time over with requests still in flight");
    } else {
        for h in handles {
            h.join();
        }
    }
    server.stop_admin();
    tracing::info!("exited cleanly");
    Ok(())
}
