//! `upgrade_configs` (HCM and route) → `model::UpgradeConfig`.
//!
//! Envoy's HTTP upgrade support ("HTTP upgrades" architecture overview):
//! the HCM lists the upgrade types it proxies (`enabled` default true), a
//! route may override per type (`enabled` default true).  meshgate carries
//! HTTP/1.1 upgrades (WebSocket and any other `Upgrade:` token); `CONNECT`
//! (a method, not an `Upgrade:` token, and extended CONNECT over HTTP/2)
//! is refused here, as are the HCM's per-upgrade `filters` and the route's
//! `connect_config` (by the allowlist walk).

use envoy_types::pb::envoy::config::route::v3 as rt;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;

use crate::bootstrap::{join, Errors};
use crate::model;

fn one(upgrade_type: &str, enabled: Option<bool>, path: &str, errors: &mut Errors) -> Option<model::UpgradeConfig> {
    let tpath = join(path, "upgrade_type");
    if upgrade_type.is_empty() {
        errors.add(tpath, "required");
        return None;
    }
    if upgrade_type.eq_ignore_ascii_case("connect") {
        errors.add(tpath, "CONNECT is not supported yet (meshgate proxies HTTP/1.1 Upgrade: tokens such as websocket)");
        return None;
    }
    // RFC 9110 §7.8: a protocol name is a token (optionally `/version`).
    let token = |c: u8| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/".contains(&c);
    if !upgrade_type.bytes().all(token) {
        errors.add(tpath, format!("{upgrade_type:?} is not an Upgrade protocol token"));
        return None;
    }
    Some(model::UpgradeConfig { upgrade_type: upgrade_type.to_ascii_lowercase(), enabled: enabled.unwrap_or(true) })
}

fn no_duplicates(list: &[model::UpgradeConfig], path: &str, errors: &mut Errors) {
    for (i, c) in list.iter().enumerate() {
        if list[..i].iter().any(|o| o.upgrade_type == c.upgrade_type) {
            errors.add(format!("{path}[{i}].upgrade_type"), format!("duplicate upgrade type {:?}", c.upgrade_type));
        }
    }
}

pub(super) fn hcm_upgrade_configs(
    list: &[hcm::http_connection_manager::UpgradeConfig],
    path: &str,
    errors: &mut Errors,
) -> Vec<model::UpgradeConfig> {
    let out: Vec<_> = list
        .iter()
        .enumerate()
        .filter_map(|(i, c)| one(&c.upgrade_type, c.enabled.map(|b| b.value), &format!("{path}[{i}]"), errors))
        .collect();
    no_duplicates(&out, path, errors);
    out
}

pub(super) fn route_upgrade_configs(
    list: &[rt::route_action::UpgradeConfig],
    path: &str,
    errors: &mut Errors,
) -> Vec<model::UpgradeConfig> {
    let out: Vec<_> = list
        .iter()
        .enumerate()
        .filter_map(|(i, c)| one(&c.upgrade_type, c.enabled.map(|b| b.value), &format!("{path}[{i}]"), errors))
        .collect();
    no_duplicates(&out, path, errors);
    out
}
