//! HTTP/2 (RFC 9113) for the data plane.
//!
//! `guard`: flood protections for downstream connections that `h2` does not
//! keep itself (premature resets, PING/SETTINGS rates, PRIORITY and empty
//! frames).
pub mod guard;
