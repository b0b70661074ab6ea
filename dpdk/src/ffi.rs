//! Declarations of the C shim (`csrc/shim.c`), or, in a build without
//! libdpdk, functions with the same signatures that report "not available"
//! (EAL init fails, so nothing else is ever reached with a live handle).

#![allow(non_camel_case_types)]

use std::os::raw::{c_char, c_int, c_uint};

/// Opaque DPDK types: only ever handled by pointer.
#[repr(C)]
pub struct rte_mbuf {
    _private: [u8; 0],
}
#[repr(C)]
pub struct rte_mempool {
    _private: [u8; 0],
}

#[cfg(has_dpdk)]
extern "C" {
    pub fn mg_eal_init(argc: c_int, argv: *mut *mut c_char) -> c_int;
    pub fn mg_errno() -> c_int;
    pub fn mg_strerror(err: c_int) -> *const c_char;
    pub fn mg_eth_dev_count_avail() -> u16;
    pub fn mg_eth_dev_is_valid_port(port: u16) -> c_int;
    pub fn mg_eth_dev_info(
        port: u16,
        driver: *mut c_char,
        driver_len: usize,
        max_rx: *mut u16,
        max_tx: *mut u16,
        rss_offloads: *mut u64,
    ) -> c_int;
    pub fn mg_eth_dev_configure(port: u16, nb_rx: u16, nb_tx: u16, rss: c_int, key: *const u8, key_len: u8) -> c_int;
    pub fn mg_eth_rx_queue_setup(port: u16, queue: u16, nb_desc: u16, pool: *mut rte_mempool) -> c_int;
    pub fn mg_eth_tx_queue_setup(port: u16, queue: u16, nb_desc: u16) -> c_int;
    pub fn mg_eth_dev_start(port: u16) -> c_int;
    pub fn mg_eth_dev_stop(port: u16) -> c_int;
    pub fn mg_eth_dev_close(port: u16) -> c_int;
    pub fn mg_eth_promiscuous_enable(port: u16) -> c_int;
    pub fn mg_eth_promiscuous_disable(port: u16) -> c_int;
    pub fn mg_eth_promiscuous_get(port: u16) -> c_int;
    pub fn mg_eth_macaddr_get(port: u16, out: *mut u8) -> c_int;
    pub fn mg_eth_link_get_nowait(port: u16, speed: *mut u32, up: *mut c_int, full_duplex: *mut c_int) -> c_int;
    pub fn mg_eth_stats_get(port: u16, out: *mut u64) -> c_int;
    pub fn mg_eth_stats_reset(port: u16) -> c_int;
    pub fn mg_rx_burst(port: u16, queue: u16, pkts: *mut *mut rte_mbuf, n: u16) -> u16;
    pub fn mg_tx_burst(port: u16, queue: u16, pkts: *mut *mut rte_mbuf, n: u16) -> u16;
    pub fn mg_pktmbuf_pool_create(name: *const c_char, n: c_uint, cache: c_uint, data_room: u16) -> *mut rte_mempool;
    pub fn mg_mempool_avail_count(mp: *const rte_mempool) -> c_uint;
    pub fn mg_pktmbuf_alloc(mp: *mut rte_mempool) -> *mut rte_mbuf;
    pub fn mg_pktmbuf_free(m: *mut rte_mbuf);
    pub fn mg_pktmbuf_data(m: *mut rte_mbuf) -> *mut u8;
    pub fn mg_pktmbuf_data_len(m: *const rte_mbuf) -> u16;
    pub fn mg_pktmbuf_pkt_len(m: *const rte_mbuf) -> u32;
    pub fn mg_pktmbuf_nb_segs(m: *const rte_mbuf) -> u16;
    pub fn mg_pktmbuf_tailroom(m: *const rte_mbuf) -> u16;
    pub fn mg_pktmbuf_append(m: *mut rte_mbuf, len: u16) -> *mut u8;
    pub fn mg_pktmbuf_trim(m: *mut rte_mbuf, len: u16) -> c_int;
    pub fn mg_pktmbuf_rss_hash(m: *const rte_mbuf) -> u32;
}

#[cfg(not(has_dpdk))]
pub use unavailable::*;

/// Without libdpdk: EAL init fails with ENOTSUP; every other call fails or
/// yields nothing, and is unreachable anyway because no `Eal` can exist.
#[cfg(not(has_dpdk))]
#[allow(clippy::missing_safety_doc)]
mod unavailable {
    use super::*;
    const ENOTSUP: c_int = 95;
    pub unsafe fn mg_eal_init(_: c_int, _: *mut *mut c_char) -> c_int {
        -1
    }
    pub unsafe fn mg_errno() -> c_int {
        ENOTSUP
    }
    pub unsafe fn mg_strerror(_: c_int) -> *const c_char {
        c"this meshgate build has no DPDK (libdpdk was not found at build time)".as_ptr()
    }
    pub unsafe fn mg_eth_dev_count_avail() -> u16 {
        0
    }
    pub unsafe fn mg_eth_dev_is_valid_port(_: u16) -> c_int {
        0
    }
    pub unsafe fn mg_eth_dev_info(_: u16, _: *mut c_char, _: usize, _: *mut u16, _: *mut u16, _: *mut u64) -> c_int {
        -ENOTSUP
    }
    pub unsafe fn mg_eth_dev_configure(_: u16, _: u16, _: u16, _: c_int, _: *const u8, _: u8) -> c_int {
        -ENOTSUP
    }
    pub unsafe fn mg_eth_rx_queue_setup(_: u16, _: u16, _: u16, _: *mut rte_mempool) -> c_int {
        -ENOTSUP
    }
    pub unsafe fn mg_eth_tx_queue_setup(_: u16, _: u16, _: u16) -> c_int {
        -ENOTSUP
    }
    pub unsafe fn mg_eth_dev_start(_: u16) -> c_int {
        -ENOTSUP
    }
    pub unsafe fn mg_eth_dev_stop(_: u16) -> c_int {
        -ENOTSUP
    }
    pub unsafe fn mg_eth_dev_close(_: u16) -> c_int {
        -ENOTSUP
    }
    pub unsafe fn mg_eth_promiscuous_enable(_: u16) -> c_int {
        -ENOTSUP
    }
    pub unsafe fn mg_eth_promiscuous_disable(_: u16) -> c_int {
        -ENOTSUP
    }
    pub unsafe fn mg_eth_promiscuous_get(_: u16) -> c_int {
        -ENOTSUP
    }
    pub unsafe fn mg_eth_macaddr_get(_: u16, _: *mut u8) -> c_int {
        -ENOTSUP
    }
    pub unsafe fn mg_eth_link_get_nowait(_: u16, _: *mut u32, _: *mut c_int, _: *mut c_int) -> c_int {
        -ENOTSUP
    }
    pub unsafe fn mg_eth_stats_get(_: u16, _: *mut u64) -> c_int {
        -ENOTSUP
    }
    pub unsafe fn mg_eth_stats_reset(_: u16) -> c_int {
        -ENOTSUP
    }
    pub unsafe fn mg_rx_burst(_: u16, _: u16, _: *mut *mut rte_mbuf, _: u16) -> u16 {
        0
    }
    pub unsafe fn mg_tx_burst(_: u16, _: u16, _: *mut *mut rte_mbuf, _: u16) -> u16 {
        0
    }
    pub unsafe fn mg_pktmbuf_pool_create(_: *const c_char, _: c_uint, _: c_uint, _: u16) -> *mut rte_mempool {
        std::ptr::null_mut()
    }
    pub unsafe fn mg_mempool_avail_count(_: *const rte_mempool) -> c_uint {
        0
    }
    pub unsafe fn mg_pktmbuf_alloc(_: *mut rte_mempool) -> *mut rte_mbuf {
        std::ptr::null_mut()
    }
    pub unsafe fn mg_pktmbuf_free(_: *mut rte_mbuf) {}
    pub unsafe fn mg_pktmbuf_data(_: *mut rte_mbuf) -> *mut u8 {
        std::ptr::NonNull::dangling().as_ptr()
    }
    pub unsafe fn mg_pktmbuf_data_len(_: *const rte_mbuf) -> u16 {
        0
    }
    pub unsafe fn mg_pktmbuf_pkt_len(_: *const rte_mbuf) -> u32 {
        0
    }
    pub unsafe fn mg_pktmbuf_nb_segs(_: *const rte_mbuf) -> u16 {
        1
    }
    pub unsafe fn mg_pktmbuf_tailroom(_: *const rte_mbuf) -> u16 {
        0
    }
    pub unsafe fn mg_pktmbuf_append(_: *mut rte_mbuf, _: u16) -> *mut u8 {
        std::ptr::null_mut()
    }
    pub unsafe fn mg_pktmbuf_trim(_: *mut rte_mbuf, _: u16) -> c_int {
        -1
    }
    pub unsafe fn mg_pktmbuf_rss_hash(_: *const rte_mbuf) -> u32 {
        0
    }
}
