//! Renders stat snapshots in the formats Envoy's admin serves: `/stats` text,
//! `/stats?format=json` and `/stats/prometheus` (Prometheus text format 0.0.4
//! with Envoy's tag extraction).
//!
//! Pure functions over `StatSnapshot`s: no locks, no I/O, so the admin server
//! stays a thin router and the formats are unit-tested byte for byte.  They run
//! on the admin thread only; nothing here is on the request path.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{HistogramSnapshot, Scope, StatSnapshot, StatValue, HISTOGRAM_BUCKETS_MS, SUPPORTED_QUANTILES};

/// Envoy's `P{:g}` labels for `SUPPORTED_QUANTILES` (written out: `0.995 * 100`
/// is `99.49999…` in binary floating point).
const QUANTILE_LABELS: [&str; 10] = ["0", "25", "50", "75", "90", "95", "99", "99.5", "99.9", "100"];

/// Which stat types `/stats?type=` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TypeFilter {
    #[default]
    All,
    Counters,
    Gauges,
    Histograms,
}

impl TypeFilter {
    /// Envoy's spellings (`Counters`, `Gauges`, `Histograms`, `All`).
    pub fn parse(s: &str) -> Option<TypeFilter> {
        match s {
            "All" => Some(TypeFilter::All),
            "Counters" => Some(TypeFilter::Counters),
            "Gauges" => Some(TypeFilter::Gauges),
            "Histograms" => Some(TypeFilter::Histograms),
            _ => None,
        }
    }
}

/// The selection a query asks for.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// `filter=<regex>`: kept if the regex matches anywhere in the full name
    /// (Envoy's `std::regex_search` semantics).
    pub filter: Option<regex::Regex>,
    /// `usedonly`.
    pub used_only: bool,
    pub types: TypeFilter,
}

impl Selection {
    pub fn keep(&self, s: &StatSnapshot) -> bool {
        let type_ok = matches!(
            (self.types, &s.value),
            (TypeFilter::All, _)
                | (TypeFilter::Counters, StatValue::Counter(_))
                | (TypeFilter::Gauges, StatValue::Gauge { .. })
                | (TypeFilter::Histograms, StatValue::Histogram(_))
        );
        type_ok && (!self.used_only || s.used()) && self.filter.as_ref().is_none_or(|r| r.is_match(&s.name))
    }

    pub fn apply<'a>(&self, stats: &'a [StatSnapshot]) -> Vec<&'a StatSnapshot> {
        stats.iter().filter(|s| self.keep(s)).collect()
    }
}

/// A double the way fmt's `{}` prints it in Envoy: shortest round-trip form,
/// `nan` for NaN.
pub fn fmt_double(v: f64) -> String {
    if v.is_nan() {
        "nan".to_string()
    } else if v.is_infinite() {
        if v > 0.0 { "inf" } else { "-inf" }.to_string()
    } else {
        format!("{v}")
    }
}

/// Envoy's `ParentHistogramImpl::quantileSummary`:
/// `P0(interval,cumulative) P25(…) … P100(…)`, or `No recorded values`.
pub fn quantile_summary(cumulative: &HistogramSnapshot, interval: Option<&HistogramSnapshot>) -> String {
    if cumulative.count == 0 {
        return "No recorded values".to_string();
    }
    let mut out = String::new();
    for (i, q) in SUPPORTED_QUANTILES.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let iv = interval.map_or(f64::NAN, |h| h.quantile(*q));
        let _ = write!(out, "P{}({},{})", QUANTILE_LABELS[i], fmt_double(iv), fmt_double(cumulative.quantile(*q)));
    }
    out
}

/// `/stats`: `name: value` for counters and gauges (merged, sorted by name),
/// then `name: P0(…) …` for histograms (sorted), as Envoy prints them.
pub fn text(stats: &[&StatSnapshot], intervals: &BTreeMap<String, HistogramSnapshot>) -> String {
    let mut out = String::with_capacity(stats.len() * 48);
    for s in stats {
        match &s.value {
            StatValue::Counter(v) => {
                let _ = writeln!(out, "{}: {}", s.name, v);
            }
            StatValue::Gauge { value, .. } => {
                let _ = writeln!(out, "{}: {}", s.name, value);
            }
            StatValue::Histogram(_) => {}
        }
    }
    for s in stats {
        if let StatValue::Histogram(h) = &s.value {
            let _ = writeln!(out, "{}: {}", s.name, quantile_summary(h, intervals.get(&s.name)));
        }
    }
    out
}

/// `/stats?format=json`: `{"stats":[{"name":…,"value":…},…,{"histograms":{…}}]}`
/// with Envoy's histogram layout (`supported_quantiles` ×100 and per-histogram
/// `computed_quantiles` of `{interval, cumulative}`, `null` where undefined).
pub fn json(stats: &[&StatSnapshot], intervals: &BTreeMap<String, HistogramSnapshot>) -> serde_json::Value {
    use serde_json::{json, Value};
    let mut entries: Vec<Value> = Vec::with_capacity(stats.len() + 1);
    let mut computed: Vec<Value> = Vec::new();
    for s in stats {
        match &s.value {
            StatValue::Counter(v) => entries.push(json!({"name": s.name, "value": v})),
            StatValue::Gauge { value, .. } => entries.push(json!({"name": s.name, "value": value})),
            StatValue::Histogram(h) => {
                let iv = intervals.get(&s.name);
                let values: Vec<Value> = SUPPORTED_QUANTILES
                    .iter()
                    .map(|q| {
                        let (i, c) = if h.count == 0 {
                            (f64::NAN, f64::NAN)
                        } else {
                            (iv.map_or(f64::NAN, |iv| iv.quantile(*q)), h.quantile(*q))
                        };
                        json!({"interval": Value::from(i), "cumulative": Value::from(c)})
                    })
                    .collect();
                computed.push(json!({"name": s.name, "values": values}));
            }
        }
    }
    if !computed.is_empty() {
        let supported: Vec<Value> = QUANTILE_LABELS
            .iter()
            .map(|l| match l.parse::<u64>() {
                Ok(n) => Value::from(n),
                Err(_) => Value::from(l.parse::<f64>().unwrap_or(f64::NAN)),
            })
            .collect();
        entries.push(json!({"histograms": {"supported_quantiles": supported, "computed_quantiles": computed}}));
    }
    json!({ "stats": entries })
}

// ---------------------------------------------------------------------------
// Prometheus
// ---------------------------------------------------------------------------

/// The tag-extracted Prometheus name and labels for a stat, as Envoy's default
/// tag extractors produce them:
///
/// * `http.<p>.X` → `envoy_http_X{envoy_http_conn_manager_prefix="<p>"}`
/// * `cluster.<c>.X` → `envoy_cluster_X{envoy_cluster_name="<c>"}`
/// * `listener.<a>.X` → `envoy_listener_X{envoy_listener_address="<a>"}`
/// * `…_rq_<N>xx` → `…_rq_xx{envoy_response_code_class="<N>",…}` (the class tag
///   comes first, as in Envoy's output)
/// * `server.X` → `envoy_server_X`
///
/// The tags are taken from the stat's `Scope` rather than re-parsed from the
/// dotted name, so a cluster named `a.b` is tagged `a.b` whole.
pub fn prometheus_name(scope: &Scope, leaf: &str) -> (String, Labels) {
    let mut labels = Vec::new();
    let leaf = match split_code_class(leaf) {
        Some((stripped, class)) => {
            labels.push(("envoy_response_code_class", class.to_string()));
            stripped
        }
        None => leaf.to_string(),
    };
    let (head, tag) = match scope {
        Scope::Server => ("server".to_string(), None),
        Scope::Named(n) => (n.clone(), None),
        Scope::Http(_) => ("http".to_string(), Some("envoy_http_conn_manager_prefix")),
        Scope::Cluster(_) => ("cluster".to_string(), Some("envoy_cluster_name")),
        Scope::Listener(_) => ("listener".to_string(), Some("envoy_listener_address")),
    };
    if let (Some(tag), Some(v)) = (tag, scope.tag_value()) {
        labels.push((tag, v));
    }
    (sanitize_metric_name(&format!("envoy_{head}_{leaf}")), labels)
}

/// `downstream_rq_2xx` → (`downstream_rq_xx`, '2'); Envoy's
/// `RESPONSE_CODE_CLASS` extractor (`_rq(_(\d)xx)$`).
fn split_code_class(leaf: &str) -> Option<(String, char)> {
    let b = leaf.as_bytes();
    let n = b.len();
    if n >= 7 && leaf.ends_with("xx") && b[n - 3].is_ascii_digit() && leaf[..n - 3].ends_with("_rq_") {
        Some((format!("{}xx", &leaf[..n - 3]), b[n - 3] as char))
    } else {
        None
    }
}

/// Prometheus metric names allow `[a-zA-Z_:][a-zA-Z0-9_:]*`; Envoy maps
/// everything else (dots first of all) to `_`.
fn sanitize_metric_name(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}

fn escape_label_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn label_string(labels: &[(&'static str, String)], extra: Option<(&str, &str)>) -> String {
    let mut parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape_label_value(v))).collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

type Labels = Vec<(&'static str, String)>;
/// Metric family name → its samples' labels and stats.
type Families<'a> = BTreeMap<String, Vec<(Labels, &'a StatSnapshot)>>;

/// `/stats/prometheus`: one `# TYPE` line per metric family, all of a family's
/// samples together; counters, then gauges, then histograms, each sorted by
/// family name and then by labels.
pub fn prometheus(stats: &[&StatSnapshot]) -> String {
    let mut counters: Families = BTreeMap::new();
    let mut gauges: Families = BTreeMap::new();
    let mut histograms: Families = BTreeMap::new();
    for s in stats {
        let (name, labels) = prometheus_name(&s.scope, &s.leaf);
        let fam = match s.value {
            StatValue::Counter(_) => &mut counters,
            StatValue::Gauge { .. } => &mut gauges,
            StatValue::Histogram(_) => &mut histograms,
        };
        fam.entry(name).or_default().push((labels, *s));
    }
    // A family name must carry one type.  Names come from our own leaves, so a
    // clash means two scopes produced the same family with different types;
    // the later type is renamed rather than emitting an unparsable page.
    let taken: std::collections::BTreeSet<String> = counters.keys().cloned().collect();
    let gauges = dedup_family_names(gauges, &taken);
    let taken: std::collections::BTreeSet<String> = taken.into_iter().chain(gauges.keys().cloned()).collect();
    let histograms = dedup_family_names(histograms, &taken);

    let mut out = String::with_capacity(stats.len() * 96);
    for (kind, fams) in [("counter", &counters), ("gauge", &gauges)] {
        for (name, samples) in fams {
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let mut rows: Vec<(String, String)> = samples
                .iter()
                .map(|(labels, s)| {
                    let v = match s.value {
                        StatValue::Counter(v) => v.to_string(),
                        StatValue::Gauge { value, .. } => value.to_string(),
                        StatValue::Histogram(_) => unreachable!("histograms are in their own map"),
                    };
                    (label_string(labels, None), v)
                })
                .collect();
            rows.sort();
            for (labels, v) in rows {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        }
    }
    for (name, samples) in &histograms {
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut rows: Vec<(String, &Labels, &HistogramSnapshot)> = samples
            .iter()
            .filter_map(|(labels, s)| match &s.value {
                StatValue::Histogram(h) => Some((label_string(labels, None), labels, h)),
                _ => None,
            })
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        for (plain, labels, h) in rows {
            let cum = h.cumulative();
            for (bound, c) in HISTOGRAM_BUCKETS_MS.iter().zip(cum.iter()) {
                let le = fmt_double(*bound);
                let _ = writeln!(out, "{name}_bucket{} {c}", label_string(labels, Some(("le", &le))));
            }
            let _ = writeln!(out, "{name}_bucket{} {}", label_string(labels, Some(("le", "+Inf"))), h.count);
            let _ = writeln!(out, "{name}_sum{plain} {}", fmt_double(h.sum_ms));
            let _ = writeln!(out, "{name}_count{plain} {}", h.count);
        }
    }
    out
}

fn dedup_family_names<'a>(fams: Families<'a>, taken: &std::collections::BTreeSet<String>) -> Families<'a> {
    fams.into_iter()
        .map(|(name, v)| {
            let mut n = name;
            while taken.contains(&n) {
                n.push('_');
            }
            (n, v)
        })
        .collect()
}
