//! The admin `/config_dump` view, in the shape Envoy's admin API returns.
//!
//! Built from `Config::bootstrap_json` rather than from the model: tools
//! that read Envoy's dump (istioctl, dashboards, diffing scripts) expect
//! Envoy's field names and structure, and the canonical JSON already is
//! exactly what was loaded.

use serde_json::{json, Map, Value};

use super::supported::HCM;
use super::type_name;
use crate::model;

const TYPE_PREFIX: &str = "type.googleapis.com/";

/// Envoy admin `/config_dump` JSON for a snapshot: bootstrap, then static
/// clusters, listeners and (inline) route configurations.
pub fn config_dump_json(cfg: &model::Config) -> Value {
    let t = &cfg.last_updated;
    let bootstrap = &cfg.bootstrap_json;
    let resources = bootstrap.get("static_resources");
    let items = |name: &str| -> Vec<Value> {
        resources.and_then(|r| r.get(name)).and_then(Value::as_array).cloned().unwrap_or_default()
    };
    let listeners = items("listeners");

    let static_clusters: Vec<Value> = items("clusters")
        .into_iter()
        .map(|c| json!({"cluster": typed(c, "envoy.config.cluster.v3.Cluster"), "last_updated": t}))
        .collect();
    let static_route_configs: Vec<Value> = listeners
        .iter()
        .flat_map(inline_route_configs)
        .map(|rc| json!({"route_config": typed(rc, "envoy.config.route.v3.RouteConfiguration"), "last_updated": t}))
        .collect();
    let static_listeners: Vec<Value> = listeners
        .into_iter()
        .map(|l| json!({"listener": typed(l, "envoy.config.listener.v3.Listener"), "last_updated": t}))
        .collect();

    json!({
        "configs": [
            {
                "@type": format!("{TYPE_PREFIX}envoy.admin.v3.BootstrapConfigDump"),
                "bootstrap": bootstrap,
                "last_updated": t,
            },
            {
                "@type": format!("{TYPE_PREFIX}envoy.admin.v3.ClustersConfigDump"),
                "static_clusters": static_clusters,
            },
            {
                "@type": format!("{TYPE_PREFIX}envoy.admin.v3.ListenersConfigDump"),
                "static_listeners": static_listeners,
            },
            {
                "@type": format!("{TYPE_PREFIX}envoy.admin.v3.RoutesConfigDump"),
                "static_route_configs": static_route_configs,
            },
        ]
    })
}

/// The resource as an `Any` in JSON: `@type` first, then its own fields.
fn typed(resource: Value, type_full_name: &str) -> Value {
    let mut out = Map::new();
    out.insert("@type".to_string(), Value::String(format!("{TYPE_PREFIX}{type_full_name}")));
    if let Value::Object(fields) = resource {
        out.extend(fields);
    }
    Value::Object(out)
}

/// Route configurations inlined in a listener's HTTP connection managers,
/// without the `Any`'s own `@type`.
fn inline_route_configs(listener: &Value) -> Vec<Value> {
    let chains = listener.get("filter_chains").and_then(Value::as_array);
    chains
        .into_iter()
        .flatten()
        .filter_map(|chain| chain.get("filters").and_then(Value::as_array))
        .flatten()
        .filter_map(|filter| filter.get("typed_config"))
        .filter(|tc| tc.get("@type").and_then(Value::as_str).map(type_name) == Some(HCM))
        .filter_map(|tc| tc.get("route_config").cloned())
        .collect()
}
