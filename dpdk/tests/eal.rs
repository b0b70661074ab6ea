//! The wrappers against virtual devices.  DPDK's EAL initialises once per
//! process, so this file is one test binary with ONE test function that
//! starts the EAL and checks everything in sequence.
//!
//! Devices: `net_ring0` (with no arguments the ring PMD uses the same ring
//! for a queue's rx and tx, so what is sent comes back: a loopback wire) and
//! `net_null0` (drops what is sent; receive yields frames of a fixed size).

use dpdk::{Eal, Mempool, Port, PortConfig, AVAILABLE};

fn skip(reason: &str) {
    println!("skipped: {reason}");
}

#[test]
fn eal_ports_queues_and_mbufs_on_virtual_devices() {
    if !AVAILABLE {
        return skip("libdpdk not available");
    }
    let prefix = format!("--file-prefix=mg-dpdk-test-{}", std::process::id());
    let args = [
        "-l",
        "0",
        "--no-huge",
        "--no-pci",
        "--no-shconf",
        "-m",
        "128",
        "--log-level=error",
        prefix.as_str(),
        "--vdev=net_ring0",
        "--vdev=net_null0,size=64",
    ];
    let eal = match Eal::init(&args) {
        Ok(e) => e,
        Err(e) => {
            if !is_root() {
                return skip(&format!("needs root (EAL init failed: {e})"));
            }
            panic!("EAL init failed as root: {e}");
        }
    };
    // A second init in the same process is refused, not attempted.
    let again = Eal::init(&args).err().expect("second init must fail");
    assert!(again.message.contains("already"), "{again}");
    assert_eq!(eal.port_count(), 2);

    let pool = Mempool::new(eal, "mg_test_pool", 1023, 32, 2048).expect("mempool");
    let free_at_start = pool.available();
    assert!(free_at_start >= 1000, "{free_at_start}");

    // Mbuf basics.
    let mut m = pool.alloc().expect("alloc");
    assert_eq!(m.len(), 0);
    assert!(m.tailroom() >= 2048);
    m.append(60).expect("append").copy_from_slice(&[7u8; 60]);
    assert_eq!(m.data(), &[7u8; 60][..]);
    assert!(m.append(100_000).is_none());
    assert!(m.trim(10));
    assert_eq!(m.len(), 50);
    assert_eq!(pool.available(), free_at_start - 1);
    drop(m);
    assert_eq!(pool.available(), free_at_start);

    // Port 0: net_ring loopback.
    let info = Port::info_of(eal, 0).expect("info");
    assert_eq!(info.driver, "net_ring");
    let too_many = PortConfig { rx_queues: info.max_rx_queues + 1, ..PortConfig::default() };
    let err = Port::open(eal, 0, &too_many, pool).err().expect("too many queues must fail");
    assert!(err.message.contains("supports"), "{err}");
    let missing = Port::open(eal, 9, &PortConfig::default(), pool).err().expect("no port 9");
    assert!(missing.message.contains("no DPDK port 9"), "{missing}");

    let (ring, mut rx, mut tx) = Port::open(eal, 0, &PortConfig::default(), pool).expect("open net_ring0");
    assert!(ring.is_started());
    assert_eq!((rx.len(), tx.len()), (1, 1));
    assert!(ring.link().expect("link").up);
    ring.mac().expect("mac");
    ring.set_promiscuous(true).expect("promisc on");
    assert!(ring.promiscuous().expect("promisc get"));
    ring.reset_stats().unwrap();

    let mut out = Vec::new();
    for i in 0..40u8 {
        let mut f = pool.alloc().expect("alloc");
        let body = f.append(64 + i as usize).unwrap();
        body.fill(i);
        out.push(f);
    }
    let sent = tx[0].send(&mut out);
    assert_eq!(sent, 40);
    assert!(out.is_empty());
    let mut got = Vec::new();
    while rx[0].recv(&mut got) > 0 {}
    assert_eq!(got.len(), 40);
    for (i, f) in got.iter().enumerate() {
        assert_eq!(f.len(), 64 + i);
        assert!(f.data().iter().all(|&b| b == i as u8));
        assert_eq!(f.segments(), 1);
    }
    let stats = ring.stats().expect("stats");
    assert_eq!(stats.tx_packets, 40);
    assert_eq!(stats.rx_packets, 40);
    // (The ring PMD counts packets only; byte counters are the driver's business.)
    drop(got);

    // Stop/start round trip: a stopped port reports so.
    ring.stop().expect("stop");
    assert!(!ring.is_started());
    ring.start().expect("start");

    // Port 1: net_null generates 64-byte frames on receive and swallows tx.
    let (null, mut nrx, mut ntx) = Port::open(eal, 1, &PortConfig::default(), pool).expect("open net_null0");
    assert_eq!(null.info().unwrap().driver, "net_null");
    // net_null makes up a random (locally administered) MAC.
    assert_ne!(null.mac().expect("mac"), [0u8; 6]);
    let mut frames = Vec::new();
    let n = nrx[0].recv(&mut frames);
    assert_eq!(n, dpdk::BURST);
    assert!(frames.iter().all(|f| f.len() == 64));
    assert_eq!(ntx[0].send(&mut frames), n);
    assert!(null.stats().unwrap().tx_packets >= n as u64);

    // Every mbuf went back to the pool (the ring and null PMDs hold none).
    drop((rx, tx, nrx, ntx, ring, null));
    assert_eq!(pool.available(), free_at_start);
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/mg-dpdk-test-{}", std::process::id()));
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}
