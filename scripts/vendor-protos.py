#!/usr/bin/env python3
"""Copy the import closure of the Envoy protos meshgate uses into control/proto/.

The .proto sources come from the `envoy-types` crate (which ships Envoy's
data-plane-api and its dependencies under proto/).  control/build.rs compiles the
vendored copies with protox into a descriptor set, so the build needs no protoc
and no path into the cargo registry.  Re-run after bumping envoy-types:

    python3 scripts/vendor-protos.py ~/.cargo/registry/src/*/envoy-types-0.7.7/proto
"""
import os, re, shutil, sys

ROOTS = [
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
    "envoy/service/discovery/v3/ads.proto",
    "envoy/service/listener/v3/lds.proto",
    "envoy/service/route/v3/rds.proto",
    "envoy/service/cluster/v3/cds.proto",
    "envoy/service/endpoint/v3/eds.proto",
    "envoy/service/secret/v3/sds.proto",
    "envoy/admin/v3/config_dump.proto",
    "envoy/config/rbac/v3/rbac.proto",
    "google/protobuf/wrappers.proto",
]
INCLUDES = ["data-plane-api", "xds", "googleapis", "protoc-gen-validate",
            "cel-spec", "opentelemetry-proto", "client_model"]
IMPORT = re.compile(r'^\s*import\s+(?:public\s+|weak\s+)?"([^"]+)"\s*;', re.M)


def main():
    src = sys.argv[1]
    here = os.path.dirname(os.path.abspath(__file__))
    dst = os.path.join(here, "..", "control", "proto")
    seen, todo = {}, list(ROOTS)
    while todo:
        name = todo.pop()
        if name in seen or name.startswith("google/protobuf/"):
            # google/protobuf/* well-known types are built into protox.
            continue
        for inc in INCLUDES:
            path = os.path.join(src, inc, name)
            if os.path.exists(path):
                seen[name] = path
                todo.extend(IMPORT.findall(open(path).read()))
                break
        else:
            sys.exit(f"not found in any include root: {name}")
    shutil.rmtree(dst, ignore_errors=True)
    for name, path in seen.items():
        out = os.path.join(dst, name)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        shutil.copyfile(path, out)
    print(f"vendored {len(seen)} files into control/proto")


if __name__ == "__main__":
    main()
