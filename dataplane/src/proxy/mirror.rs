//! Request mirroring (`RouteAction.request_mirror_policies`): a sampled
//! copy of a request goes to a shadow cluster, fire-and-forget.
//!
//! Envoy's semantics, as far as they carry over: each policy samples
//! requests with its `runtime_fraction` (default: all), sends the copy to
//! its `cluster` (or the cluster a `cluster_header` names; an unknown one
//! mirrors nothing) with `-shadow` appended to the Host's name
//! (`host:port` → `host-shadow:port`) unless
//! `disable_shadow_host_suffix_append`, and discards the response.
//!
//! # Never slowing or failing the primary
//!
//! The copy is built from bytes the connection already holds and handed to
//! a task of its own on the shard ([`spawn_mirrors`] returns at once); that
//! task picks a host of the shadow cluster, uses the shard's pool for that
//! cluster (so the shadow's `upstream_rq_*` / `upstream_cx_*` stats count
//! it), reads the response to its end only to keep the connection reusable,
//! and gives up at the route's timeout (15 s when the route has none).  A
//! shadow that is down, slow or broken costs the primary nothing beyond
//! building the copy.
//!
//! # Bodies
//!
//! A request without a body is always mirrored.  A `content-length` body is
//! mirrored when it is no larger than the listener's
//! `per_connection_buffer_limit_bytes` *and* it has fully arrived with the
//! head (it sits in the connection's receive buffer when the route is
//! chosen) — small bodies usually do.  A body still in flight, larger than
//! the limit, or chunked is not mirrored: the request then goes to the
//! primary only (it is never delayed to wait for its body).  The shadow
//! copy carries the request's headers as received (hop-by-hop fields
//! removed), before the route's header mutations and the connection
//! manager's `x-forwarded-*` / `x-request-id` additions.

use std::rc::Rc;
use std::time::Duration;

use control::model::{MirrorCluster, MirrorPolicy};

use super::RecvBuf;
use crate::http1::{
    self, encode_request_head, parse_response_head, response_body_kind_for, strip_hop_by_hop, BodyDecoder, BodyKind,
    Decoded, Method, RequestHead, ResponseHead, WellKnown,
};
use crate::router::action as route_action;
use crate::runtime::{spawn, timeout};
use crate::shard::{ShardCtx, ShardSnapshot};
use crate::upstream::{ClusterRuntime, UpstreamConn};

/// How long a shadow request may take when its route has no timeout.
const DEFAULT_SHADOW_TIMEOUT: Duration = Duration::from_secs(15);

/// `host[:port]` → `host-shadow[:port]` (an IPv6 literal keeps its brackets).
pub fn shadow_host(host: &[u8]) -> Vec<u8> {
    let name_end = match host.iter().rposition(|b| *b == b':') {
        Some(colon) if !host[colon..].contains(&b']') && !host[..colon].contains(&b':') => colon,
        Some(colon) if host.first() == Some(&b'[') && host[..colon].ends_with(b"]") => colon,
        _ => host.len(),
    };
    let mut out = Vec::with_capacity(host.len() + 7);
    out.extend_from_slice(&host[..name_end]);
    out.extend_from_slice(b"-shadow");
    out.extend_from_slice(&host[name_end..]);
    out
}

/// The body a mirror may carry, if the request can be mirrored at all.
fn mirrorable_body(kind: BodyKind, buffered: &[u8], limit: u32) -> Option<&[u8]> {
    match kind {
        BodyKind::Empty | BodyKind::Length(0) => Some(&[]),
        BodyKind::Length(n) if n <= u64::from(limit) && buffered.len() as u64 >= n => Some(&buffered[..n as usize]),
        _ => None,
    }
}

/// Spawns one shadow request per sampled policy and returns at once.
#[allow(clippy::too_many_arguments)]
pub(super) fn spawn_mirrors(
    ctx: &ShardCtx,
    snapshot: &ShardSnapshot,
    policies: &[MirrorPolicy],
    head: &RequestHead,
    body_kind: BodyKind,
    buffered: &[u8],
    buffer_limit: u32,
    route_timeout: Option<Duration>,
) {
    for policy in policies {
        if !policy.fraction.hits(ctx.next_random()) {
            continue;
        }
        let name = match &policy.cluster {
            MirrorCluster::Name(n) => Some(n.as_bytes()),
            MirrorCluster::Header(h) => route_action::first_header(head, h),
        };
        let Some(cluster) = name.and_then(|n| std::str::from_utf8(n).ok()).and_then(|n| snapshot.clusters.get(n))
        else {
            continue;
        };
        let Some(body) = mirrorable_body(body_kind, buffered, buffer_limit) else {
            tracing::debug!(cluster = %cluster.config.name, "request body not mirrored (in flight, chunked or over the buffer limit)");
            continue;
        };
        let mut headers = head.headers.clone();
        let host = head.host().unwrap_or(b"");
        if !policy.disable_shadow_host_suffix_append {
            headers.set(WellKnown::Host, &shadow_host(host));
        }
        let mut request = Vec::with_capacity(256 + body.len());
        encode_request_head(head.method_str(), head.path_and_query(), &headers, &mut request);
        request.extend_from_slice(body);
        let deadline = route_timeout.unwrap_or(DEFAULT_SHADOW_TIMEOUT);
        spawn(shadow(cluster.clone(), request, head.method, deadline)).detach();
    }
}

/// Decrements the shadow cluster's `upstream_rq_active` however the task ends.
struct Active<'a>(&'a ClusterRuntime);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.stats.upstream_rq_active.dec();
    }
}

async fn shadow(cluster: Rc<ClusterRuntime>, request: Vec<u8>, method: Method, deadline: Duration) {
    let Some(picked) = cluster.pick(&mut || None) else {
        cluster.stats.upstream_cx_none_healthy.inc();
        return;
    };
    let owner = picked.cluster;
    let host = picked.host;
    let work = async {
        let mut conn = owner.checkout(&host).await.ok()?;
        owner.stats.upstream_rq_total.inc();
        owner.stats.upstream_rq_active.inc();
        let _active = Active(&owner);
        host.stats.rq_total.inc();
        let (status, reusable) = exchange(&mut conn, &request, method).await?;
        owner.stats.upstream_rq_completed.inc();
        owner.stats.record_response_code(status);
        if reusable {
            owner.release(conn);
        }
        Some(())
    };
    if timeout(Some(deadline), work).await.is_err() {
        owner.stats.upstream_rq_timeout.inc();
    }
}

/// Sends the copy and reads the response to its end; `(status, reusable)`.
async fn exchange(conn: &mut UpstreamConn, request: &[u8], method: Method) -> Option<(u16, bool)> {
    let UpstreamConn { stream, buf, head, .. } = conn;
    stream.write_all(request).await.ok()?;
    let limits = http1::Limits { max_request_line: 8192, max_head_bytes: super::UPSTREAM_HEAD_LIMIT, max_headers: 200 };
    let consumed = read_head(stream, buf, head, &limits).await?;
    buf.consume(consumed);
    let kind = response_body_kind_for(method, head).ok()?;
    let keeps = strip_hop_by_hop(&mut head.headers).persistent(head.version) && kind != BodyKind::CloseDelimited;
    let mut decoder = BodyDecoder::with_limits(kind, &limits);
    loop {
        let (n, event) = decoder.decode(buf.filled()).ok()?;
        let done = matches!(event, Decoded::End { .. });
        let need_more = matches!(event, Decoded::NeedMore);
        buf.consume(n);
        if done {
            return Some((head.status, keeps && buf.is_empty()));
        }
        if need_more {
            match buf.fill_from(stream).await {
                Ok(0) => {
                    decoder.decode_eof().ok()?;
                    return Some((head.status, false));
                }
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }
}

async fn read_head(
    stream: &crate::tls::Conn,
    buf: &mut RecvBuf,
    head: &mut ResponseHead,
    limits: &http1::Limits,
) -> Option<usize> {
    head.clear();
    loop {
        match parse_response_head(buf.filled(), limits, head) {
            Ok(Some(n)) if (100..200).contains(&head.status) => {
                buf.consume(n);
                head.clear();
                continue;
            }
            Ok(Some(n)) => return Some(n),
            Ok(None) => {}
            Err(_) => return None,
        }
        match buf.fill_from(stream).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_host_suffix() {
        assert_eq!(shadow_host(b"example.com"), b"example.com-shadow");
        assert_eq!(shadow_host(b"example.com:8080"), b"example.com-shadow:8080");
        assert_eq!(shadow_host(b"[::1]:80"), b"[::1]-shadow:80");
        assert_eq!(shadow_host(b"[::1]"), b"[::1]-shadow");
        assert_eq!(shadow_host(b""), b"-shadow");
    }

    #[test]
    fn which_bodies_are_mirrored() {
        assert_eq!(mirrorable_body(BodyKind::Empty, b"", 10), Some(&b""[..]));
        assert_eq!(mirrorable_body(BodyKind::Length(3), b"abcde", 10), Some(&b"abc"[..]));
        assert_eq!(mirrorable_body(BodyKind::Length(6), b"abcde", 10), None, "still in flight");
        assert_eq!(mirrorable_body(BodyKind::Length(11), &[0; 20], 10), None, "over the limit");
        assert_eq!(mirrorable_body(BodyKind::Chunked, b"5\r\nabcde\r\n0\r\n\r\n", 100), None);
    }
}
