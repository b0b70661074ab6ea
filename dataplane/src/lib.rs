//! The data plane: shards, their executor and reactor, transports, the HTTP/1
//! codec, the router, upstream pools, stats and the admin server.
//!
//! It owns everything that touches a request.  It must not touch protobuf wire
//! types or config sources: it sees only `control::model`, published as an
//! immutable `Arc<Config>` snapshot.  Each shard is one pinned thread that owns
//! its sockets, pools, timers and stat slots; nothing on the request path is
//! shared between shards except read-only snapshots, single-writer counters
//! and the local rate limiters' lock-free token buckets (`filters`), which
//! Envoy's semantics make per process.
#![forbid(unsafe_code)]

pub mod admin;
pub mod dns;
pub mod filters;
pub mod http1;
pub mod http2;
pub mod matcher;
mod pool;
pub mod proxy;
pub mod rbac;
pub mod router;
pub mod runtime;
pub mod server;
pub mod shard;
pub mod stats;
pub mod tcp_proxy;
pub mod tls;
pub mod transport;
pub mod tunnel;
pub mod upstream;
