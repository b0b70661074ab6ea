//! The `meshgate` binary: command line, mode choice and wiring.  It stays
//! thin on purpose: config loading lives in `control`, everything that
//! touches traffic in `dataplane`, and DPDK in `dpdk`.
#![forbid(unsafe_code)]

mod dpdk_setup;

/// jemalloc, configured in `.cargo/config.toml` to give freed pages back to
/// the kernel about a second after their last use.  glibc's malloc keeps a
/// burst's freed memory resident for good (it only trims the top of a heap):
/// 10,000 idle connections opened 200 at a time left 1.5 KiB of RSS each,
/// about 0.9 KiB of it freed memory from the burst.  Envoy does the same with
/// tcmalloc (its `shrink_heap` overload action).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use clap::{Parser, ValueEnum};

use dataplane::admin::{spawn_admin, AdminContext};
use dataplane::dns::{spawn_refresher, DnsResults};
use dataplane::server::ServerState;
use dataplane::shard::{spawn_shard_with, ShardHandle, Shared};
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
    /// DPDK EAL arguments, e.g. "-l 0-1 --no-huge --no-pci --vdev=net_af_packet0,iface=veth-mg".
    #[arg(long = "dpdk-eal", value_name = "ARGS", allow_hyphen_values = true)]
    dpdk_eal: Option<String>,
    /// DPDK port id to serve.
    #[arg(long = "dpdk-port", default_value_t = 0)]
    dpdk_port: u16,
    /// IPv4 address and prefix of the DPDK port, e.g. 10.77.0.2/24.
    #[arg(long = "dpdk-addr", value_name = "CIDR")]
    dpdk_addr: Option<String>,
    /// Next hop for destinations outside the DPDK port's subnet.
    #[arg(long = "dpdk-gateway", value_name = "IP")]
    dpdk_gateway: Option<std::net::Ipv4Addr>,
    /// Once a DPDK queue has been empty this many microseconds, sleep as long
    /// between polls instead of spinning (like F-Stack's idle_sleep).  0 (the
    /// default) always busy-polls: right when the shard has a core to itself;
    /// 20-100 suits shards sharing cores with other work.
    #[arg(long = "dpdk-idle-sleep-us", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=100_000))]
    dpdk_idle_sleep_us: u64,
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
    control::bootstrap::release_descriptor_pool();
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let wanted_shards = cli.shards.unwrap_or(cores.len().max(1)).max(1);
    let opts = dpdk_setup::DpdkOptions {
        eal: cli.dpdk_eal.clone().unwrap_or_default(),
        port: cli.dpdk_port,
        addr: cli.dpdk_addr.clone(),
        gateway: cli.dpdk_gateway,
        idle_nap: std::time::Duration::from_micros(cli.dpdk_idle_sleep_us),
    };
    let datapath = match cli.mode {
        Mode::Dpdk if cli.dpdk_eal.is_none() => {
            eprintln!("error: --mode dpdk needs --dpdk-eal \"<EAL arguments>\" and --dpdk-addr");
            return ExitCode::from(1);
        }
        Mode::Dpdk => match dpdk_setup::start(&opts, wanted_shards) {
            Ok(d) => Some(d),
            Err(e) => {
                eprintln!("error: --mode dpdk: {e}");
                return ExitCode::from(1);
            }
        },
        Mode::Auto if cli.dpdk_eal.is_some() => match dpdk_setup::start(&opts, wanted_shards) {
            Ok(d) => Some(d),
            Err(e) => {
                tracing::warn!("mode auto: DPDK unavailable ({e}); using kernel sockets");
                None
            }
        },
        Mode::Auto => {
            tracing::info!("mode auto: no DPDK port configured, using kernel sockets");
            None
        }
        Mode::Kernel => None,
    };
    if let Some(d) = &datapath {
        tracing::info!(
            port = d.port.id(),
            driver = %d.driver,
            shards = d.links.len(),
            addr = opts.addr.as_deref().unwrap_or(""),
            "DPDK data path started"
        );
    }
    match run(cli, config, datapath) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli, config: control::model::Config, datapath: Option<dpdk_setup::DpdkDataPath>) -> Result<(), String> {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let mut shards = cli.shards.unwrap_or(cores.len().max(1)).max(1);
    // One shard per DPDK link (a queue pair, or rings to the dispatching
    // shard): every shard serves the userspace stack's address.
    let (dpdk_port, mut links) = match datapath {
        Some(d) => {
            shards = d.links.len();
            (Some(d.port), d.links.into_iter().map(Some).collect::<Vec<_>>())
        }
        None => (None, Vec::new()),
    };
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
        let link = links.get_mut(i).and_then(Option::take);
        match spawn_shard_with(i, core, shared.clone(), drain_time, link) {
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
    // xDS: the control thread publishes whole new configs into `config`.
    let xds_wakers = wakers.clone();
    let publisher =
        xds::Publisher { config: config.clone(), wake: Box::new(move || xds_wakers.iter().for_each(|w| w.wake())) };
    let _xds_thread = xds::spawn(config.load_full(), publisher, &stats).map_err(|e| format!("xds thread: {e}"))?;
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
    drop(dpdk_port);
    tracing::info!("exited cleanly");
    Ok(())
}
