//! HTTP/1 parse + forward of one typical request, timed.
//!
//! * `forward/typical`: parse a 9-field, 426-byte browser/API request head, strip the
//!   hop-by-hop fields, append the peer to `x-forwarded-for`, set
//!   `x-forwarded-proto` and a fresh `x-request-id`, and encode the upstream
//!   head into a reused buffer — what the connection manager does before
//!   writing a request upstream (see `support::Forwarder`).
//! * `parse/typical`: only `parse_request_head` of the same bytes.
//!
//! Instruction counts of the same operation: `bench/callgrind.sh`.
//! Run: `cargo bench -p dataplane --bench http1`.

mod support;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dataplane::http1::{parse_request_head, Limits, RequestHead};
use support::{check_forwarded, Forwarder, REQUEST};

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("http1");
    g.throughput(Throughput::Elements(1));

    let mut fwd = Forwarder::new();
    check_forwarded(fwd.forward(REQUEST));
    g.bench_function("forward/typical", |b| b.iter(|| black_box(fwd.forward(black_box(REQUEST)).len())));

    let limits = Limits::default();
    let mut head = RequestHead::new();
    g.bench_function("parse/typical", |b| {
        b.iter(|| black_box(parse_request_head(black_box(REQUEST), &limits, &mut head).unwrap()))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
