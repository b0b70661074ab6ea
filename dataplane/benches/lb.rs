//! Load-balancer pick cost at 10 and 1,000 hosts, timed.
//!
//! `pick/<policy>/<hosts>`: one `Balancer::pick` on a shard's balancer for
//! a cluster loaded from a bootstrap by the real loader, all hosts healthy,
//! one priority level.  Policies: `round_robin` (equal weights: the cursor),
//! `round_robin_weighted` (weights 1..5: EDF), `least_request` (equal
//! weights: power of two choices), `least_request_weighted` (EDF with
//! weight / (active + 1)), `ring_hash` and `maglev` (Envoy's default sizes,
//! cycling through 256 request hashes).
//!
//! Instruction counts of the same operation: `bench/callgrind.sh`.
//! Run: `cargo bench -p dataplane --bench lb`.

mod support;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use support::{active_requests, balancer, lb_pick, lb_uses_hash, request_hashes, LB_POLICIES};

const SIZES: [usize; 2] = [10, 1_000];

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("pick");
    let hashes = request_hashes();
    for policy in LB_POLICIES {
        for n in SIZES {
            let mut b = balancer(policy, n);
            let active = active_requests(n);
            let hashing = lb_uses_hash(policy);
            // Every host is reachable: a picker that always answers 0 would be fast and wrong.
            let mut seen = vec![false; n];
            for i in 0..n * 64 {
                let h = hashing.then(|| xxhash_rust::xxh64::xxh64(&(i as u64).to_le_bytes(), 0));
                seen[lb_pick(&mut b, h, &active) as usize] = true;
            }
            assert!(seen.iter().filter(|s| **s).count() >= n * 9 / 10, "{policy}/{n}: picks do not spread");
            g.bench_function(BenchmarkId::new(policy, n), |bench| {
                let mut i = 0usize;
                bench.iter(|| {
                    i = (i + 1) & 255;
                    let h = if hashing { Some(hashes[i]) } else { None };
                    black_box(lb_pick(&mut b, black_box(h), &active))
                })
            });
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
