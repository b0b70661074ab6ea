//! `mg-upstream --h2c`: the HTTP/2 (prior knowledge, RFC 9113 §3.3) mode of
//! the test origin, built on the `h2` crate over a single-threaded tokio
//! runtime (test tooling, not the data path).
//!
//! Every response carries `x-upstream-name`, `x-upstream-conn` (serial number
//! of the connection, from 1) and `x-upstream-proto: h2`.  Paths:
//!
//! * `/echo`: JSON `{method, path, headers, body_len, body_fnv64, trailers}`
//!   (as the HTTP/1 mode; `path` is `:path`, `headers` include `:authority`).
//! * `/upload`: JSON `{body_len, body_fnv64, trailers}`.
//! * `/echo-body`: the request body streamed back as it arrives (flow
//!   controlled both ways), then trailer `x-body-fnv64`.
//! * `/status/NNN`, `/delay/MS`: as the HTTP/1 mode.
//! * `/bytes/N`: N pattern bytes with content-length; `/stream/N`: the same
//!   without content-length.
//! * `/trailers`: body `trailers follow\n`, then trailers `x-trailer-one: 1`,
//!   `grpc-status: 0`, `grpc-message: all good`.
//! * `/reset` / `/refuse`: RST_STREAM(INTERNAL_ERROR / REFUSED_STREAM)
//!   before any response; `/reset-mid`: head and 1 KiB, then RST_STREAM.
//! * `/hang`: never answers; counts the client's RST_STREAM on it.
//! * `/__resets`: how many `/hang` streams the client reset so far.
//! * `/__conns`: how many connections were accepted so far.
//! * anything else: 200 `hello from NAME`.
//!
//! SETTINGS_MAX_CONCURRENT_STREAMS is `--h2-max-streams N` (default 1000).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream};
use http::{HeaderMap, HeaderValue, Request, Response};

use crate::{json_str, Fnv64, PatternGen};

static CONNS: AtomicU64 = AtomicU64::new(0);
static HANG_RESETS: AtomicU64 = AtomicU64::new(0);

/// Serves HTTP/2 with prior knowledge on `listener` forever.
pub fn serve(listener: std::net::TcpListener, name: Arc<str>, max_streams: u32) -> ! {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    rt.block_on(async move {
        listener.set_nonblocking(true).expect("nonblocking listener");
        let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
        loop {
            let Ok((sock, _)) = listener.accept().await else { continue };
            let _ = sock.set_nodelay(true);
            let id = CONNS.fetch_add(1, Ordering::Relaxed) + 1;
            let name = name.clone();
            tokio::spawn(async move {
                let mut builder = h2::server::Builder::new();
                builder.max_concurrent_streams(max_streams);
                let Ok(mut conn) = builder.handshake::<_, Bytes>(sock).await else { return };
                while let Some(Ok((req, respond))) = conn.accept().await {
                    let name = name.clone();
                    tokio::spawn(async move {
                        let _ = handle(req, respond, &name, id).await;
                    });
                }
            });
        }
    });
    unreachable!("the accept loop never ends")
}

fn head(status: u16, name: &str, conn: u64) -> Response<()> {
    let mut r = Response::builder().status(status).body(()).expect("response");
    let h = r.headers_mut();
    h.insert("x-upstream-name", HeaderValue::from_str(name).unwrap_or(HeaderValue::from_static("?")));
    h.insert("x-upstream-conn", HeaderValue::from(conn));
    h.insert("x-upstream-proto", HeaderValue::from_static("h2"));
    h.insert("server", HeaderValue::from_static("mg-upstream"));
    r
}

async fn handle(
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    name: &str,
    conn: u64,
) -> Result<(), h2::Error> {
    let path = req.uri().path().to_string();
    let mut segments = path.trim_start_matches('/').splitn(2, '/');
    let (first, rest) = (segments.next().unwrap_or(""), segments.next().unwrap_or(""));
    match first {
        "echo" | "upload" => {
            let full = first == "echo";
            let (parts, mut body) = req.into_parts();
            let (len, fnv, trailers) = drain(&mut body).await?;
            let mut json = String::from("{");
            if full {
                json.push_str(&format!("\"method\":\"{}\",\"path\":", parts.method));
                json_str(&mut json, parts.uri.path_and_query().map_or("/", |p| p.as_str()));
                json.push_str(",\"headers\":[[\":authority\",");
                json_str(&mut json, parts.uri.authority().map_or("", |a| a.as_str()));
                json.push(']');
                for (n, v) in &parts.headers {
                    json.push_str(",[");
                    json_str(&mut json, n.as_str());
                    json.push(',');
                    json_str(&mut json, &String::from_utf8_lossy(v.as_bytes()));
                    json.push(']');
                }
                json.push_str("],");
            }
            json.push_str(&format!("\"body_len\":{len},\"body_fnv64\":\"{}\",\"trailers\":[", fnv.hex()));
            for (i, (n, v)) in trailers.iter().enumerate() {
                if i > 0 {
                    json.push(',');
                }
                json.push('[');
                json_str(&mut json, n.as_str());
                json.push(',');
                json_str(&mut json, &String::from_utf8_lossy(v.as_bytes()));
                json.push(']');
            }
            json.push_str("]}\n");
            let mut r = head(200, name, conn);
            r.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
            r.headers_mut().insert("content-length", HeaderValue::from(json.len()));
            let mut send = respond.send_response(r, false)?;
            send_all(&mut send, Bytes::from(json), true).await
        }
        "echo-body" => {
            let mut body = req.into_body();
            let mut send = respond.send_response(head(200, name, conn), false)?;
            let mut fnv = Fnv64::new();
            while let Some(chunk) = body.data().await {
                let chunk = chunk?;
                let n = chunk.len();
                fnv.update(&chunk);
                send_all(&mut send, chunk, false).await?;
                let _ = body.flow_control().release_capacity(n);
            }
            let mut t = HeaderMap::new();
            t.insert("x-body-fnv64", HeaderValue::from_str(&fnv.hex()).expect("hex"));
            send.send_trailers(t)
        }
        "status" => {
            let code = rest.parse::<u16>().ok().filter(|c| (200..600).contains(c)).unwrap_or(400);
            drain(&mut req.into_body()).await?;
            let body = format!("status {code}\n");
            let mut send = respond.send_response(head(code, name, conn), false)?;
            send_all(&mut send, Bytes::from(body), true).await
        }
        "delay" => {
            let ms = rest.parse::<u64>().unwrap_or(0);
            drain(&mut req.into_body()).await?;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            let mut send = respond.send_response(head(200, name, conn), false)?;
            send_all(&mut send, Bytes::from(format!("delayed {ms} ms\n")), true).await
        }
        "bytes" | "stream" => {
            let n = rest.parse::<u64>().unwrap_or(0);
            drain(&mut req.into_body()).await?;
            let mut r = head(200, name, conn);
            if first == "bytes" {
                r.headers_mut().insert("content-length", HeaderValue::from(n));
            }
            let mut send = respond.send_response(r, n == 0)?;
            let mut gen = PatternGen::new();
            let mut left = n;
            while left > 0 {
                let take = left.min(64 * 1024) as usize;
                let mut buf = vec![0u8; take];
                gen.fill(&mut buf);
                left -= take as u64;
                send_all(&mut send, Bytes::from(buf), left == 0).await?;
            }
            Ok(())
        }
        "trailers" => {
            drain(&mut req.into_body()).await?;
            let mut send = respond.send_response(head(200, name, conn), false)?;
            send_all(&mut send, Bytes::from_static(b"trailers follow\n"), false).await?;
            let mut t = HeaderMap::new();
            t.insert("x-trailer-one", HeaderValue::from_static("1"));
            t.insert("grpc-status", HeaderValue::from_static("0"));
            t.insert("grpc-message", HeaderValue::from_static("all good"));
            send.send_trailers(t)
        }
        "reset" => {
            respond.send_reset(Reason::INTERNAL_ERROR);
            Ok(())
        }
        "refuse" => {
            respond.send_reset(Reason::REFUSED_STREAM);
            Ok(())
        }
        "reset-mid" => {
            let mut send = respond.send_response(head(200, name, conn), false)?;
            send_all(&mut send, Bytes::from(vec![b'x'; 1024]), false).await?;
            tokio::time::sleep(Duration::from_millis(50)).await;
            send.send_reset(Reason::INTERNAL_ERROR);
            Ok(())
        }
        "hang" => {
            let _body = req.into_body();
            let reason = std::future::poll_fn(|cx| respond.poll_reset(cx)).await;
            if reason.is_ok() {
                HANG_RESETS.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }
        "__resets" | "__conns" => {
            let v = if first == "__resets" { &HANG_RESETS } else { &CONNS };
            let mut send = respond.send_response(head(200, name, conn), false)?;
            send_all(&mut send, Bytes::from(format!("{}\n", v.load(Ordering::Relaxed))), true).await
        }
        _ => {
            drain(&mut req.into_body()).await?;
            let mut send = respond.send_response(head(200, name, conn), false)?;
            send_all(&mut send, Bytes::from(format!("hello from {name}\n")), true).await
        }
    }
}

/// Reads a request body to its end: length, FNV-1a 64 and trailers.
async fn drain(body: &mut RecvStream) -> Result<(u64, Fnv64, HeaderMap), h2::Error> {
    let mut fnv = Fnv64::new();
    let mut len = 0u64;
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        len += chunk.len() as u64;
        fnv.update(&chunk);
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let trailers = body.trailers().await?.unwrap_or_default();
    Ok((len, fnv, trailers))
}

/// Sends `data` as the peer's window allows.
async fn send_all(send: &mut h2::SendStream<Bytes>, mut data: Bytes, end: bool) -> Result<(), h2::Error> {
    if data.is_empty() {
        return if end { send.send_data(data, true) } else { Ok(()) };
    }
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        match std::future::poll_fn(|cx| send.poll_capacity(cx)).await {
            Some(Ok(0)) => continue,
            Some(Ok(n)) => {
                let chunk = data.split_to(n.min(data.len()));
                send.send_data(chunk, end && data.is_empty())?;
            }
            Some(Err(e)) => return Err(e),
            None => return Err(h2::Error::from(Reason::STREAM_CLOSED)),
        }
    }
    Ok(())
}
