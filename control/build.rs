//! Compiles the vendored Envoy protos (control/proto, see scripts/vendor-protos.py)
//! into one descriptor set that the loader embeds: prost-reflect uses it for the
//! canonical proto3 JSON mapping, `typed_config` `@type` resolution included.
use prost::Message;

const ROOTS: &[&str] = &[
    "envoy/config/bootstrap/v3/bootstrap.proto",
    "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto",
    "envoy/extensions/filters/http/router/v3/router.proto",
    "envoy/extensions/filters/http/rbac/v3/rbac.proto",
    "envoy/extensions/filters/network/rbac/v3/rbac.proto",
    "envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.proto",
    "envoy/extensions/filters/http/local_ratelimit/v3/local_rate_limit.proto",
    "envoy/extensions/filters/network/local_ratelimit/v3/local_rate_limit.proto",
    "envoy/extensions/filters/http/fault/v3/fault.proto",
    "envoy/extensions/transport_sockets/tls/v3/tls.proto",
    "envoy/extensions/filters/listener/tls_inspector/v3/tls_inspector.proto",
    "envoy/extensions/upstreams/http/v3/http_protocol_options.proto",
    "envoy/extensions/clusters/aggregate/v3/cluster.proto",
    "envoy/extensions/retry/host/previous_hosts/v3/previous_hosts.proto",
    "envoy/service/discovery/v3/ads.proto",
    "envoy/service/listener/v3/lds.proto",
    "envoy/service/route/v3/rds.proto",
    "envoy/service/cluster/v3/cds.proto",
    "envoy/service/endpoint/v3/eds.proto",
    "envoy/service/secret/v3/sds.proto",
    "envoy/admin/v3/config_dump.proto",
    "google/protobuf/wrappers.proto",
];

fn main() {
    println!("cargo:rerun-if-changed=proto");
    // Without source info (comments and spans of every element, more than half
    // of the set): nothing reads it, and the decoded pool is what sets the
    // process's peak RSS at start-up.
    let set = protox::Compiler::new(["proto"])
        .expect("vendored proto include path")
        .include_imports(true)
        .include_source_info(false)
        .open_files(ROOTS)
        .expect("compiling vendored Envoy protos")
        .file_descriptor_set();
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("envoy_descriptor_set.bin");
    // Write-then-rename: a target dir seeded with hard links must not have
    // another checkout's build rewrite this file in place.
    let tmp = out.with_extension("bin.tmp");
    std::fs::write(&tmp, set.encode_to_vec()).unwrap();
    std::fs::rename(&tmp, &out).unwrap();
}
