//! `envoy.filters.network.tcp_proxy` → `model::TcpProxy`.
//!
//! A listener whose filter chain ends in a tcp_proxy filter is a TCP proxy
//! listener (`model::TcpListener`) instead of an HTTP one.  Semantics and
//! defaults follow Envoy's `extensions.filters.network.tcp_proxy.v3.TcpProxy`
//! reference: `idle_timeout` defaults to 1 hour and `0s` disables it;
//! `max_connect_attempts` defaults to 1 and must be at least 1; weighted
//! cluster entries need a weight of at least 1.  Network RBAC filters may
//! precede the proxy (they are translated by `bootstrap::rbac`); nothing may
//! follow it, because it is terminal.

use std::collections::HashSet;

use envoy_types::pb::envoy::config::listener::v3 as lis;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3 as tcp;
use prost::Message;

use super::{packed_type, timeout, HOUR};
use crate::bootstrap::supported::{HCM, TCP_PROXY};
use crate::bootstrap::{join, Errors};
use crate::model;

/// Whether the listener's (first) filter chain is terminated by a tcp_proxy.
pub(super) fn is_tcp_proxy_chain(chains: &[lis::FilterChain]) -> bool {
    chains.first().is_some_and(|c| {
        c.filters.iter().any(|f| {
            matches!(&f.config_type, Some(lis::filter::ConfigType::TypedConfig(any)) if packed_type(any) == TCP_PROXY)
        })
    })
}

/// Translates the tcp_proxy filter of a TCP proxy listener's filter chain.
pub(super) fn filter_chain(
    chains: &[lis::FilterChain],
    listener_path: &str,
    clusters: &HashSet<&str>,
    errors: &mut Errors,
) -> Option<model::TcpProxy> {
    // Several chains are checked (same filters, TLS) by tls::downstream.
    let path = join(listener_path, "filter_chains");
    let chain = chains.first()?;
    let path = format!("{path}[0].filters");
    let mut result = None;
    let mut terminal_at: Option<usize> = None;
    for (i, f) in chain.filters.iter().enumerate() {
        let fpath = format!("{path}[{i}]");
        if f.name.is_empty() {
            errors.add(join(&fpath, "name"), "required");
        }
        let any = match &f.config_type {
            Some(lis::filter::ConfigType::TypedConfig(any)) => any,
            Some(_) => continue,
            None => {
                errors.add(
                    join(&fpath, "typed_config"),
                    "required (meshgate identifies filters by their typed_config @type)",
                );
                continue;
            }
        };
        let ty = packed_type(any);
        if let Some(first) = terminal_at {
            errors.add(
                &fpath,
                format!("envoy.filters.network.tcp_proxy is terminal ({path}[{first}]); no filter may follow it"),
            );
            continue;
        }
        if ty == HCM {
            errors.add(&fpath, "a filter chain ends in one terminal filter: http_connection_manager or tcp_proxy");
            continue;
        }
        if ty != TCP_PROXY {
            // Network RBAC is translated by bootstrap::rbac; anything else is
            // reported by the allowlist walk.
            continue;
        }
        terminal_at = Some(i);
        let tpath = join(&fpath, "typed_config");
        match tcp::TcpProxy::decode(any.value.as_slice()) {
            Ok(t) => result = tcp_proxy(&t, &tpath, clusters, errors),
            Err(e) => errors.add(tpath, format!("cannot decode: {e}")),
        }
    }
    result
}

fn tcp_proxy(t: &tcp::TcpProxy, path: &str, clusters: &HashSet<&str>, errors: &mut Errors) -> Option<model::TcpProxy> {
    let p = |f: &str| join(path, f);
    let mut ok = true;
    if t.stat_prefix.is_empty() {
        errors.add(p("stat_prefix"), "required");
        ok = false;
    }
    let known = |name: &str, at: String, errors: &mut Errors| {
        if name.is_empty() {
            errors.add(at, "required");
            false
        } else if !clusters.contains(name) {
            errors.add(at, format!("unknown cluster {name:?}"));
            false
        } else {
            true
        }
    };
    use tcp::tcp_proxy::ClusterSpecifier;
    let target = match &t.cluster_specifier {
        Some(ClusterSpecifier::Cluster(name)) => {
            ok &= known(name, p("cluster"), errors);
            Some(model::TcpProxyTarget::Cluster(name.clone()))
        }
        Some(ClusterSpecifier::WeightedClusters(w)) => {
            let wpath = p("weighted_clusters");
            if w.clusters.is_empty() {
                errors.add(join(&wpath, "clusters"), "at least one cluster is required");
                ok = false;
            }
            let mut out = Vec::with_capacity(w.clusters.len());
            for (i, c) in w.clusters.iter().enumerate() {
                let cpath = format!("{wpath}.clusters[{i}]");
                ok &= known(&c.name, join(&cpath, "name"), errors);
                if c.weight == 0 {
                    errors.add(join(&cpath, "weight"), "must be at least 1");
                    ok = false;
                }
                out.push((c.name.clone(), c.weight));
            }
            Some(model::TcpProxyTarget::Weighted(out))
        }
        // `on_demand` and friends are rejected by the allowlist walk.
        None => {
            errors.add(p("cluster"), "required (or weighted_clusters)");
            None
        }
    };
    let idle_timeout = timeout(t.idle_timeout.as_ref(), Some(HOUR), &p("idle_timeout"), errors);
    let max_connect_attempts = match t.max_connect_attempts {
        None => 1,
        Some(v) if v.value >= 1 => v.value,
        Some(_) => {
            errors.add(p("max_connect_attempts"), "must be at least 1");
            ok = false;
            1
        }
    };
    let target = target?;
    ok.then(|| model::TcpProxy { stat_prefix: t.stat_prefix.clone(), target, idle_timeout, max_connect_attempts })
}
