//! The Internet checksum of a TCP segment, timed: the vendored smoltcp's
//! patched sum (32-bit words into a 64-bit sum; vendor/README.md) against
//! upstream smoltcp's loop (one big-endian 16-bit word at a time), kept here
//! as the baseline.
//!
//! `checksum/patched/<bytes>`: `TcpPacket::fill_checksum` (pseudo-header
//! plus segment) on a segment of that many bytes.  `checksum/upstream/<bytes>`:
//! the same computation with upstream's loop.  40 bytes is a bare ACK's TCP header
//! plus options, 426 the benchmark request, 1,460 a full segment.
//!
//! Instruction counts are not the measure here: a 64-bit add-with-carry loop
//! ran fewer instructions than this one and took longer (a serial carry
//! chain); see docs/benchmarks.md.
//! Run: `cargo bench -p dataplane --bench checksum`.

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use smoltcp::wire::{IpAddress, TcpPacket};

const SIZES: [usize; 3] = [40, 426, 1_460];

/// Upstream smoltcp 0.13's `checksum::data`, unpatched, and
/// `TcpPacket::fill_checksum` around it (pseudo-header, combine, store), so
/// both rows do the same work.
fn upstream_fill_checksum(segment: &mut [u8], src: [u8; 4], dst: [u8; 4]) {
    segment[16..18].fill(0);
    let len = segment.len() as u16;
    let proto_len = [0, 6, (len >> 8) as u8, len as u8];
    let pseudo = fold(&[upstream_sum(&src), upstream_sum(&dst), upstream_sum(&proto_len)]);
    let sum = !fold(&[pseudo, upstream_sum(segment)]);
    segment[16..18].copy_from_slice(&sum.to_be_bytes());
}

fn fold(sums: &[u16]) -> u16 {
    let accum: u32 = sums.iter().map(|&s| u32::from(s)).sum();
    let sum = (accum >> 16) + (accum & 0xffff);
    ((sum >> 16) as u16) + (sum as u16)
}

fn upstream_sum(mut data: &[u8]) -> u16 {
    let mut accum: u32 = 0;
    while data.len() >= 32 {
        let mut chunk = &data[..32];
        while chunk.len() >= 2 {
            accum += u32::from(u16::from_be_bytes([chunk[0], chunk[1]]));
            chunk = &chunk[2..];
        }
        data = &data[32..];
    }
    while data.len() >= 2 {
        accum += u32::from(u16::from_be_bytes([data[0], data[1]]));
        data = &data[2..];
    }
    if let Some(&last) = data.first() {
        accum += u32::from(last) << 8;
    }
    let sum = (accum >> 16) + (accum & 0xffff);
    ((sum >> 16) as u16) + (sum as u16)
}

fn bench(c: &mut Criterion) {
    let bytes: Vec<u8> = (0..1_600u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let (src, dst) = (IpAddress::from(Ipv4Addr::new(10, 0, 0, 1)), IpAddress::from(Ipv4Addr::new(10, 0, 0, 2)));
    let mut g = c.benchmark_group("checksum");
    for n in SIZES {
        let mut segment = bytes[..n].to_vec();
        g.bench_function(BenchmarkId::new("patched", n), |b| {
            b.iter(|| TcpPacket::new_unchecked(black_box(&mut segment[..])).fill_checksum(&src, &dst))
        });
        let mut copy = bytes[..n].to_vec();
        g.bench_function(BenchmarkId::new("upstream", n), |b| {
            b.iter(|| upstream_fill_checksum(black_box(&mut copy[..]), [10, 0, 0, 1], [10, 0, 0, 2]))
        });
        // Same answer, or the comparison means nothing.
        TcpPacket::new_unchecked(&mut segment[..]).fill_checksum(&src, &dst);
        assert_eq!(segment, copy, "{n} bytes: the two checksums differ");
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
