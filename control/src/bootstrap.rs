//! The Envoy v3 bootstrap loader: a static Envoy config file (YAML or JSON)
//! in, a validated [`model::Config`] out.
//!
//! # What this owns
//!
//! The whole path from file text to model, in four stages:
//!
//! 1. **Syntax.** YAML (a JSON superset, merge keys included) or JSON into a
//!    `serde_json::Value`.
//! 2. **Envoy's schema.** `prost_reflect` maps that value onto the
//!    `envoy.config.bootstrap.v3.Bootstrap` descriptor with the canonical
//!    proto3 JSON mapping, so whatever real Envoy accepts syntactically is
//!    accepted here too: snake_case or lowerCamelCase names, `"5s"`
//!    durations, enum names, `typed_config` with `@type`.  Names Envoy does not
//!    know are rejected here, with the path the serde error occurred at.
//! 3. **meshgate's subset** (`supported`).  Every field that is *set* is
//!    checked against an allowlist per message, recursing into `Any`s whose
//!    `@type` meshgate knows.  Anything else is an error naming its path:
//!    nothing in an operator's file is ever silently ignored, because a
//!    proxy that quietly drops a timeout or a TLS block is worse than one
//!    that refuses to start.
//! 4. **Semantics** (`translate`).  The message is re-encoded and decoded
//!    into the typed `envoy-types` structs (easier to read than reflection),
//!    Envoy's defaults and meshgate's own are applied, and cross references
//!    (route → cluster, duplicate names, domains, addresses) are checked.
//!
//! Errors are collected rather than returned at the first one, so a single
//! run shows an operator everything there is to fix.  Stage 2 first scans
//! the whole document for unknown names and unknown `@type`s (the commonest
//! mistakes) and reports them all; only a value of the wrong shape stops it
//! at the first, as serde does.  Stage 4 runs even when stage 3 found
//! unsupported fields; it stays quiet about things stage 3 already reported
//! (an `rds` instead of a `route_config` is one error, not two).
//!
//! It also renders the admin `/config_dump` view ([`config_dump_json`]) from
//! the canonical JSON kept in the model, because that JSON is exactly what
//! was validated.
//!
//! # What it must not touch
//!
//! No sockets, threads or shards: loading is a pure function of the text
//! (plus files named by `DataSource.filename`).  It must not let protobuf
//! types leak into [`model`]; the data plane never sees them.  Publishing a
//! snapshot is the caller's business.

use std::path::Path;
use std::sync::{Mutex, PoisonError};

use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};

use crate::error::{ConfigError, ConfigErrors};
use crate::model;

mod dump;
pub mod dynamic;
mod matchers;
mod rbac;
mod supported;
mod translate;
pub use translate::sds::{read_sds_file_field, sds_file_watch_paths};

pub use dump::config_dump_json;
pub use translate::TLS12_CIPHER_SUITES;

/// Syntax of a bootstrap document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
}

impl Format {
    /// `.json` → JSON, anything else → YAML, like Envoy's `-c` does (YAML is a
    /// superset of JSON, so guessing YAML is never wrong, only less precise
    /// in its syntax errors).
    pub fn from_path(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("json") => Format::Json,
            _ => Format::Yaml,
        }
    }
}

const BOOTSTRAP: &str = "envoy.config.bootstrap.v3.Bootstrap";

/// Envoy's descriptors, decoded on first use and cached.  Also the pool
/// `Any` types are resolved in, so an `@type` meshgate never compiled in
/// fails at stage 2.  A handle: clones share one decoded pool.
pub fn descriptor_pool() -> DescriptorPool {
    let mut cached = DESCRIPTOR_POOL.lock().unwrap_or_else(PoisonError::into_inner);
    cached
        .get_or_insert_with(|| {
            DescriptorPool::decode(crate::DESCRIPTOR_SET)
                .expect("the descriptor set embedded by build.rs is valid by construction")
        })
        .clone()
}

/// Drops the cached descriptor pool (the largest allocation of start-up).  The binary calls
/// it once the bootstrap is loaded: a static configuration never needs the
/// pool again, and xDS, SDS files or `/config_dump` decode it once more on
/// their first use and keep it from then on.
pub fn release_descriptor_pool() {
    DESCRIPTOR_POOL.lock().unwrap_or_else(PoisonError::into_inner).take();
}

static DESCRIPTOR_POOL: Mutex<Option<DescriptorPool>> = Mutex::new(None);

pub(crate) fn message_descriptor(full_name: &str) -> MessageDescriptor {
    descriptor_pool()
        .get_message_by_name(full_name)
        .unwrap_or_else(|| panic!("{full_name} is compiled into the descriptor set by build.rs"))
}

/// Reads and loads a bootstrap file; errors are reported against `path`.
pub fn load_file(path: &Path) -> Result<model::Config, ConfigErrors> {
    let source = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(source.clone(), "", format!("cannot read config file: {e}")))?;
    load_str(&text, Format::from_path(path), &source)
}

/// Loads a bootstrap document; `source_name` only labels the errors.
pub fn load_str(text: &str, format_hint: Format, source_name: &str) -> Result<model::Config, ConfigErrors> {
    let value = parse(text, format_hint, source_name)?;
    let message = deserialize(&value, source_name)?;

    let mut errors = Errors::new(source_name);
    supported::check_bootstrap(&message, &mut errors);

    // Re-encoding a message prost-reflect just built cannot fail, and the
    // typed structs come from the same .proto files: a decode failure here
    // is a meshgate bug, but still reported rather than panicking on input.
    let typed =
        match envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap::decode(message.encode_to_vec().as_slice()) {
            Ok(b) => b,
            Err(e) => {
                errors.add("", format!("internal error: re-decoding the bootstrap failed: {e}"));
                return Err(errors.finish().unwrap_err());
            }
        };
    let bootstrap_json = canonical_json(&message);
    let config = translate::translate(&typed, bootstrap_json, now_rfc3339(), &mut errors);
    errors.finish()?;
    Ok(config)
}

/// The message back in canonical proto3 JSON, with proto field names as
/// Envoy's own `/config_dump` prints them.
pub(crate) fn canonical_json(message: &DynamicMessage) -> serde_json::Value {
    let options = SerializeOptions::new().use_proto_field_name(true);
    message
        .serialize_with_options(serde_json::value::Serializer, &options)
        .unwrap_or_else(|e| serde_json::Value::String(format!("unserializable: {e}")))
}

fn parse(text: &str, format: Format, source: &str) -> Result<serde_json::Value, ConfigErrors> {
    let value = match format {
        Format::Json => serde_json::from_str::<serde_json::Value>(text)
            .map_err(|e| ConfigError::new(source, "", format!("JSON syntax error: {e}")))?,
        Format::Yaml => {
            let mut yaml: serde_yaml::Value = serde_yaml::from_str(text)
                .map_err(|e| ConfigError::new(source, "", format!("YAML syntax error: {e}")))?;
            // Envoy's YAML loader honours `<<: *anchor`; configs in the wild use it.
            yaml.apply_merge().map_err(|e| ConfigError::new(source, "", format!("YAML merge key error: {e}")))?;
            serde_json::to_value(&yaml)
                .map_err(|e| ConfigError::new(source, "", format!("YAML not representable as JSON: {e}")))?
        }
    };
    // An empty file is an empty bootstrap, as for Envoy.
    Ok(match value {
        serde_json::Value::Null => serde_json::Value::Object(Default::default()),
        v => v,
    })
}

fn deserialize(value: &serde_json::Value, source: &str) -> Result<DynamicMessage, ConfigErrors> {
    let root = message_descriptor(BOOTSTRAP);
    // serde stops at the first problem; misspelt names are the commonest
    // mistake, so find all of them first.
    let mut errors = Errors::new(source);
    unknown_names(value, &root, None, "", &mut errors);
    errors.finish()?;

    let mut track = serde_path_to_error::Track::new();
    let result = DynamicMessage::deserialize(root.clone(), serde_path_to_error::Deserializer::new(value, &mut track));
    match result {
        Ok(m) => Ok(m),
        Err(e) => {
            let segments: Vec<_> = track.path().iter().cloned().collect();
            let (mut path, field) = proto_path(&segments, root, value);
            let raw = e.to_string();
            let message = if let Some(name) = between(&raw, "unrecognized field name '", "'") {
                path = join(&path, name);
                format!("unknown field `{name}`")
            } else if let Some(ty) = between(&raw, "message '", "' not found") {
                supported::unknown_any_type(field.as_ref(), ty)
            } else if ["invalid type", "invalid value", "invalid length", "multiple", "expected"]
                .iter()
                .any(|p| raw.starts_with(p))
            {
                raw
            } else {
                format!("invalid value: {raw}")
            };
            Err(ConfigError::new(source, path, message).into())
        }
    }
}

/// Reports every object key that names no field of the message it sits in
/// (either spelling), and every `@type` the pool does not know.  Values of
/// the wrong shape are left for serde to report.
fn unknown_names(
    value: &serde_json::Value,
    message: &MessageDescriptor,
    container: Option<&prost_reflect::FieldDescriptor>,
    path: &str,
    errors: &mut Errors,
) {
    let Some(object) = value.as_object() else {
        return;
    };
    if message.full_name() == "google.protobuf.Any" {
        let Some(ty) = object.get("@type").and_then(|t| t.as_str()).map(type_name) else {
            return;
        };
        match descriptor_pool().get_message_by_name(ty) {
            None => errors.add(path, supported::unknown_any_type(container, ty)),
            Some(inner) if inner.full_name().starts_with("google.protobuf.") => {}
            Some(inner) => {
                let mut fields = object.clone();
                fields.remove("@type");
                unknown_names(&serde_json::Value::Object(fields), &inner, None, path, errors);
            }
        }
        return;
    }
    if message.full_name().starts_with("google.protobuf.") {
        return; // Struct, Value & co. take arbitrary keys; the rest are scalars in JSON.
    }
    for (key, item) in object {
        let Some(field) = message.get_field_by_json_name(key).or_else(|| message.get_field_by_name(key)) else {
            errors.add(join(path, key), format!("unknown field `{key}` (not in Envoy's {})", message.full_name()));
            continue;
        };
        let field_path = join(path, field.name());
        if field.is_map() {
            let entry = field.kind();
            let Some(inner) = entry.as_message().and_then(|e| e.map_entry_value_field().kind().as_message().cloned())
            else {
                continue;
            };
            for (k, v) in item.as_object().into_iter().flatten() {
                unknown_names(v, &inner, Some(&field), &format!("{field_path}[{k:?}]"), errors);
            }
        } else if let Some(inner) = field.kind().as_message() {
            if field.is_list() {
                for (i, v) in item.as_array().into_iter().flatten().enumerate() {
                    unknown_names(v, inner, Some(&field), &format!("{field_path}[{i}]"), errors);
                }
            } else {
                unknown_names(item, inner, Some(&field), &field_path, errors);
            }
        }
    }
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let rest = &s[s.find(start)? + start.len()..];
    Some(&rest[..rest.find(end)?])
}

/// Turns serde's path (keys as written: camelCase or snake_case, map keys
/// indistinguishable from field names) into the proto path used by every
/// other error, by walking the descriptors (and, for `Any`, the `@type`
/// found in the document) alongside.  Also returns the last field reached.
fn proto_path(
    segments: &[serde_path_to_error::Segment],
    root: MessageDescriptor,
    json: &serde_json::Value,
) -> (String, Option<prost_reflect::FieldDescriptor>) {
    use serde_path_to_error::Segment;

    let mut out = String::new();
    let mut message = Some(root);
    // A repeated or map field whose element comes next.
    let mut container: Option<prost_reflect::FieldDescriptor> = None;
    let mut last_field = None;
    let mut json = Some(json);

    let element = |f: &prost_reflect::FieldDescriptor| {
        if f.is_map() {
            f.kind().as_message().and_then(|entry| entry.map_entry_value_field().kind().as_message().cloned())
        } else {
            f.kind().as_message().cloned()
        }
    };

    for segment in segments {
        match segment {
            Segment::Seq { index } => {
                out.push_str(&format!("[{index}]"));
                json = json.and_then(|j| j.get(*index));
                message = container.take().and_then(|f| element(&f));
            }
            Segment::Map { key } => {
                json = json.and_then(|j| j.get(key));
                if let Some(map_field) = container.take().filter(|f| f.is_map()) {
                    out.push_str(&format!("[{key:?}]"));
                    message = element(&map_field);
                } else if let Some(field) =
                    message.take().and_then(|m| m.get_field_by_json_name(key).or_else(|| m.get_field_by_name(key)))
                {
                    out = join(&out, field.name());
                    if field.is_list() || field.is_map() {
                        container = Some(field.clone());
                    } else {
                        message = field.kind().as_message().cloned();
                    }
                    last_field = Some(field);
                } else {
                    out = join(&out, key);
                }
            }
            Segment::Enum { .. } | Segment::Unknown => {}
        }
        // Inside an `Any` the keys belong to the packed message.
        if let (Some(m), Some(j)) = (&message, json) {
            if m.full_name() == "google.protobuf.Any" {
                message = j
                    .get("@type")
                    .and_then(|t| t.as_str())
                    .and_then(|t| descriptor_pool().get_message_by_name(type_name(t)));
            }
        }
    }
    (out, last_field)
}

/// `type.googleapis.com/a.b.C` → `a.b.C` (any prefix up to the last `/`, as Envoy allows).
pub(crate) fn type_name(type_url: &str) -> &str {
    type_url.rsplit('/').next().unwrap_or(type_url)
}

pub(crate) fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

/// Error collector shared by the stages, labelled with the source name.
pub(crate) struct Errors {
    source: String,
    list: Vec<ConfigError>,
}

impl Errors {
    pub(crate) fn new(source: &str) -> Self {
        Errors { source: source.to_string(), list: Vec::new() }
    }

    pub(crate) fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let mut path = path.into();
        // Translators build `{path}.field`; an xDS resource is its own root.
        if path.starts_with('.') {
            path.remove(0);
        }
        let e = ConfigError::new(self.source.clone(), path, message);
        if !self.list.contains(&e) {
            self.list.push(e);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    pub(crate) fn finish(self) -> Result<(), ConfigErrors> {
        match ConfigErrors::from_vec(self.list) {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }
}

/// Now, in RFC 3339 UTC with second precision (what `/config_dump` shows).
/// The current time as RFC 3339 UTC to the second (admin access log, `last_updated`).
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    rfc3339(secs)
}

/// Formats seconds since the Unix epoch; days → civil date after Howard
/// Hinnant's `civil_from_days`, to avoid a date crate for one timestamp.
fn rfc3339(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let rem = unix_secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(4_107_542_399), "2100-02-28T23:59:59Z");
    }

    #[test]
    fn format_from_extension() {
        assert_eq!(Format::from_path(Path::new("a/b.json")), Format::Json);
        assert_eq!(Format::from_path(Path::new("a/b.JSON")), Format::Json);
        assert_eq!(Format::from_path(Path::new("a/b.yaml")), Format::Yaml);
        assert_eq!(Format::from_path(Path::new("envoy")), Format::Yaml);
    }

    #[test]
    fn pool_knows_the_types_the_loader_relies_on() {
        for name in [
            BOOTSTRAP,
            supported::HCM,
            supported::ROUTER,
            supported::UPSTREAM_HTTP_OPTIONS,
            "envoy.config.cluster.v3.Cluster",
        ] {
            assert!(descriptor_pool().get_message_by_name(name).is_some(), "{name}");
        }
    }

    /// The binary releases the pool after the bootstrap; xDS updates load
    /// configuration afterwards and must find it again.
    #[test]
    fn loading_after_the_pool_was_released_decodes_it_again() {
        let yaml = "static_resources:\n  clusters:\n  - name: c\n    connect_timeout: 1s\n";
        assert!(load_str(yaml, Format::Yaml, "a.yaml").is_ok());
        release_descriptor_pool();
        let held = descriptor_pool();
        release_descriptor_pool();
        // A handle taken before the release stays usable.
        assert!(held.get_message_by_name(BOOTSTRAP).is_some());
        let config = load_str(yaml, Format::Yaml, "b.yaml").expect("loads after the release");
        assert_eq!(config.clusters.len(), 1);
    }

    #[test]
    fn syntax_errors_carry_line_and_column() {
        let e = load_str("static_resources:\n  listeners: [\n", Format::Yaml, "x.yaml").unwrap_err();
        assert!(e.first().message.contains("line"), "{e}");
        assert_eq!(e.first().path, "");
        let e = load_str("{\"static_resources\": ", Format::Json, "x.json").unwrap_err();
        assert!(e.first().message.contains("line 1"), "{e}");
    }

    #[test]
    fn empty_document_is_an_empty_bootstrap() {
        let cfg = load_str("", Format::Yaml, "empty.yaml").unwrap();
        assert!(cfg.listeners.is_empty() && cfg.clusters.is_empty() && cfg.admin.is_none());
    }
}
