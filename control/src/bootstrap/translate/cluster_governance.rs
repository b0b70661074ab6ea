//! Stage 4 for a cluster's traffic governance: `circuit_breakers` →
//! `model::CircuitBreakers` (per routing priority, Envoy's defaults).
//!
//! Checks are Envoy's: one `Thresholds` entry per priority (a second entry
//! for the same priority is refused rather than silently winning), a
//! defined `RoutingPriority`, and a `retry_budget.budget_percent` within
//! 0..=100.  `per_host_thresholds`, `track_remaining`, `max_connection_pools`
//! and `retry_budget.budget_interval` are refused by the allowlist walk.

use envoy_types::pb::envoy::config::cluster::v3 as cl;
use envoy_types::pb::envoy::config::core::v3 as core;

use super::super::{join, Errors};
use crate::model;

/// `Cluster.circuit_breakers`; `path` names the cluster.
pub(super) fn circuit_breakers(c: &cl::Cluster, path: &str, errors: &mut Errors) -> Option<model::CircuitBreakers> {
    let mut out = model::CircuitBreakers::default();
    let Some(cb) = &c.circuit_breakers else { return Some(out) };
    let mut ok = true;
    let mut seen = [false; 2];
    for (i, t) in cb.thresholds.iter().enumerate() {
        let tp = format!("{}[{i}]", join(&join(path, "circuit_breakers"), "thresholds"));
        let index = match core::RoutingPriority::try_from(t.priority) {
            Ok(core::RoutingPriority::Default) => 0,
            Ok(core::RoutingPriority::High) => 1,
            Err(_) => {
                errors.add(join(&tp, "priority"), format!("unknown RoutingPriority {}", t.priority));
                ok = false;
                continue;
            }
        };
        if std::mem::replace(&mut seen[index], true) {
            errors.add(join(&tp, "priority"), "a second thresholds entry for the same priority");
            ok = false;
            continue;
        }
        let d = model::Thresholds::default();
        let mut th = model::Thresholds {
            max_connections: t.max_connections.map_or(d.max_connections, |v| v.value),
            max_pending_requests: t.max_pending_requests.map_or(d.max_pending_requests, |v| v.value),
            max_requests: t.max_requests.map_or(d.max_requests, |v| v.value),
            max_retries: t.max_retries.map_or(d.max_retries, |v| v.value),
            retry_budget: None,
        };
        if let Some(b) = &t.retry_budget {
            let percent = b.budget_percent.as_ref().map_or(20.0, |p| p.value);
            if !(0.0..=100.0).contains(&percent) || percent.is_nan() {
                errors.add(
                    join(&join(&tp, "retry_budget"), "budget_percent"),
                    format!("{percent} is not within 0..=100"),
                );
                ok = false;
            }
            th.retry_budget = Some(model::RetryBudget {
                budget_percent: percent,
                min_retry_concurrency: b.min_retry_concurrency.map_or(3, |v| v.value),
            });
        }
        out.thresholds[index] = th;
    }
    ok.then_some(out)
}
