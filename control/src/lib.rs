//! Configuration: the validated immutable model the data plane runs on, and
//! the sources that produce it (the Envoy v3 bootstrap file today, xDS later).
//!
//! This crate owns the translation from Envoy's protobuf API (through
//! `envoy-types` and a descriptor pool of Envoy's own .proto files) into
//! `model`.  It must not touch sockets on the request path or know about
//! shards; the data plane depends on `model` only, never on wire types.
#![forbid(unsafe_code)]

pub mod bootstrap;
pub mod error;
pub mod governance;
pub mod model;
pub mod re2;

/// Envoy's protos compiled by build.rs (see scripts/vendor-protos.py).
pub static DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/envoy_descriptor_set.bin"));
