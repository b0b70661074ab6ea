//! Finds Debian's DPDK (`libdpdk`, 22.11) with pkg-config and compiles the C
//! shim against it.  When libdpdk is missing (or `MESHGATE_NO_DPDK=1`), the
//! crate builds without it: `cfg(has_dpdk)` stays unset, `AVAILABLE` is
//! false and `Eal::init` reports that the build has no DPDK.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(has_dpdk)");
    println!("cargo:rerun-if-changed=csrc/shim.c");
    println!("cargo:rerun-if-env-changed=MESHGATE_NO_DPDK");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    if std::env::var("MESHGATE_NO_DPDK").is_ok_and(|v| v == "1") {
        println!("cargo:warning=MESHGATE_NO_DPDK=1: building without DPDK");
        return;
    }
    // Shared libraries: the poll-mode drivers are plugins EAL loads from its
    // driver directory, which only works with the shared build.
    let lib = match pkg_config::Config::new().atleast_version("21.11").probe("libdpdk") {
        Ok(lib) => lib,
        Err(e) => {
            println!("cargo:warning=libdpdk not found ({e}); building meshgate without the DPDK data path");
            return;
        }
    };
    let mut build = cc::Build::new();
    build.file("csrc/shim.c").warnings(true);
    for path in &lib.include_paths {
        build.include(path);
    }
    // DPDK's headers expect rte_config.h first and SSE4.2 (its own -march).
    build.flag("-include").flag("rte_config.h").flag("-msse4.2");
    for (name, value) in &lib.defines {
        build.define(name, value.as_deref());
    }
    build.compile("meshgate_dpdk_shim");
    // The shim is a static library; its DPDK references are satisfied by the
    // shared libraries pkg-config already listed.  `--as-needed` (in
    // libdpdk.pc) would drop them when linked before the shim, so re-list the
    // few the shim uses after it.
    for l in ["rte_ethdev", "rte_mbuf", "rte_mempool", "rte_eal"] {
        println!("cargo:rustc-link-lib=dylib={l}");
    }
    println!("cargo:rustc-cfg=has_dpdk");
}
