//! DPDK bindings for meshgate: the only crate allowed to hold `unsafe` code.
//!
//! What it will own (the DPDK data-path issue): linking Debian's DPDK 22.11
//! through pkg-config, a small C shim (built with the `cc` crate) exporting
//! the `static inline` calls (rx/tx burst, mbuf alloc/free/data access), and
//! safe RAII wrappers — `Eal`, `Port`, `Mempool`, `Mbuf`, per-shard
//! `RxQueue`/`TxQueue` — that the data plane's userspace transport (smoltcp)
//! builds on.  The `dpdk` cargo feature is enabled only when libdpdk is
//! found, so the rest of the workspace builds and tests without it.
//!
//! What it must not touch: sockets, HTTP, configuration, shards.  It moves
//! frames between NIC queues and mbufs and nothing else.
//!
//! Today this crate is an empty shell: `meshgate --mode dpdk` reports that
//! the DPDK data path is not in this build, and `--mode auto` uses kernel
//! sockets.

/// Whether this build carries the DPDK data path.
pub const AVAILABLE: bool = false;
