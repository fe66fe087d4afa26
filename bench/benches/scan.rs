//! Recovery scan throughput: `format::scan::scan` over ~16 MiB of valid frames (payloads of
//! mixed sizes, 1..=2000 bytes, or all 4 KiB) followed by 8 KiB of zeros, as an unsealed
//! segment looks. Records of one size let the scan extend the segment's crc from each frame's
//! own (`format::crc`) instead of a second pass.
//!
//! At start-up every unsealed (active) segment is scanned frame by frame, decoding and
//! verifying each crc32c, checking dense offsets and rebuilding the sparse index. This bench
//! says how long that takes per byte, i.e. how open time grows with segment size.

use aof_engine::format::frame::encode;
use aof_engine::format::scan::scan;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;

const TARGET_BYTES: usize = 16 << 20;
const ZERO_TAIL: usize = 8 << 10;
const MAX_PAYLOAD: u32 = 1 << 20;
const INDEX_INTERVAL: u64 = 16 << 10;

/// Encoded frames with offsets 0.. until `TARGET_BYTES`, then zeros: payloads of 1..=2000
/// bytes, or all of `fixed` bytes. Returns (data, records).
fn build(fixed: Option<usize>) -> (Vec<u8>, u64) {
    let mut data = Vec::with_capacity(TARGET_BYTES + ZERO_TAIL + 4096);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut offset = 0u64;
    let payload = vec![0xA5u8; 4096];
    while data.len() < TARGET_BYTES {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = fixed.unwrap_or(1 + (x % 2000) as usize);
        encode(&mut data, offset, offset * 1000, None, false, &payload[..len]);
        offset += 1;
    }
    data.resize(data.len() + ZERO_TAIL, 0);
    (data, offset)
}

fn bench_scan(c: &mut Criterion) {
    let mut g = c.benchmark_group("scan");
    g.sample_size(20);
    for (name, fixed) in [("16MiB_mixed_1..=2000", None), ("16MiB_4KiB", Some(4096))] {
        let (data, records) = build(fixed);
        let check = scan(&data, 0, MAX_PAYLOAD, INDEX_INTERVAL);
        assert_eq!(check.next_offset, records, "the scan must accept every frame");
        assert!(check.stopped.is_some_and(|(_, why)| why.is_clean_end()));
        g.throughput(Throughput::Bytes(data.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| scan(black_box(&data), 0, MAX_PAYLOAD, INDEX_INTERVAL))
        });
    }
    g.finish();
}

criterion_group!(benches, bench_scan);
criterion_main!(benches);
