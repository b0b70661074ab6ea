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

    let mut clusters = json!({
        "@type": format!("{TYPE_PREFIX}envoy.admin.v3.ClustersConfigDump"),
        "static_clusters": static_clusters,
    });
    let mut listeners = json!({
        "@type": format!("{TYPE_PREFIX}envoy.admin.v3.ListenersConfigDump"),
        "static_listeners": static_listeners,
    });
    let mut routes = json!({
        "@type": format!("{TYPE_PREFIX}envoy.admin.v3.RoutesConfigDump"),
        "static_route_configs": static_route_configs,
    });
    if let Some(d) = &cfg.dynamic {
        add_dynamic(d, &mut clusters, &mut listeners, &mut routes);
    }
    json!({
        "configs": [
            {
                "@type": format!("{TYPE_PREFIX}envoy.admin.v3.BootstrapConfigDump"),
                "bootstrap": bootstrap,
                "last_updated": t,
            },
            clusters,
            listeners,
            routes,
        ]
    })
}

/// xDS resources in Envoy's shapes: `dynamic_active_clusters` /
/// `dynamic_warming_clusters`, `dynamic_listeners` with `active_state` or
/// `warming_state`, `dynamic_route_configs`, each with `version_info` and
/// `last_updated`.  (EDS assignments are left out, as Envoy leaves them out
/// unless asked with `?include_eds`.)
fn add_dynamic(d: &model::DynamicDump, clusters: &mut Value, listeners: &mut Value, routes: &mut Value) {
    let entry = |r: &model::DynamicResource, key: &str, ty: &str| json!({"version_info": r.version_info, key: typed(r.json.clone(), ty), "last_updated": r.last_updated});
    let cluster_ty = "envoy.config.cluster.v3.Cluster";
    let active: Vec<Value> =
        d.clusters.iter().filter(|c| !c.warming).map(|c| entry(c, "cluster", cluster_ty)).collect();
    let warming: Vec<Value> =
        d.clusters.iter().filter(|c| c.warming).map(|c| entry(c, "cluster", cluster_ty)).collect();
    clusters["dynamic_active_clusters"] = Value::Array(active);
    clusters["dynamic_warming_clusters"] = Value::Array(warming);
    let dynamic_listeners: Vec<Value> = d
        .listeners
        .iter()
        .map(|l| {
            let state = if l.warming { "warming_state" } else { "active_state" };
            json!({"name": l.name, state: entry(l, "listener", "envoy.config.listener.v3.Listener")})
        })
        .collect();
    listeners["dynamic_listeners"] = Value::Array(dynamic_listeners);
    routes["dynamic_route_configs"] = Value::Array(
        d.route_configs.iter().map(|r| entry(r, "route_config", "envoy.config.route.v3.RouteConfiguration")).collect(),
    );
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
