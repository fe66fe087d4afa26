//! Frame codec cost: `encode` (header, copy, crc32c) and `decode` (checks and crc32c
//! verification) of one record, for payloads from 16 B to 64 KiB.
//!
//! Every append encodes its frames and every read and recovery decodes them, so this is the
//! per-record CPU floor of the engine, and the bytes-per-second figure shows where crc32c
//! rather than fixed header overhead starts to dominate.

use aof_engine::format::crc::FrameCrc;
use aof_engine::format::frame::{decode, encode, frame_len};
use aof_engine::limits::FRAME_HEADER_BYTES;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;

const SIZES: [usize; 4] = [16, 256, 4096, 65536];
const MAX_PAYLOAD: u32 = 1 << 20;

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + 7) as u8).collect()
}

fn bench_encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame/encode");
    for len in SIZES {
        let p = payload(len);
        let mut out = Vec::with_capacity(frame_len(len));
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_with_input(BenchmarkId::from_parameter(len), &p, |b, p| {
            b.iter(|| {
                out.clear();
                encode(&mut out, black_box(42), black_box(7), Some(9), false, black_box(p))
            })
        });
    }
    g.finish();
}

fn bench_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame/decode");
    for len in SIZES {
        let mut frame = Vec::new();
        encode(&mut frame, 42, 7, Some(9), false, &payload(len));
        assert_eq!(
            decode(&frame, MAX_PAYLOAD).expect("valid frame").payload_len as usize,
            len
        );
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_with_input(BenchmarkId::from_parameter(len), &frame, |b, f| {
            b.iter(|| decode(black_box(f), MAX_PAYLOAD))
        });
    }
    g.finish();
}

/// Extending a segment's running `data_crc` over one encoded frame: a second crc32c pass over
/// its bytes against the arithmetic from the frame's own crc (`format::crc`), which the append
/// path uses from `format::crc::MIN_FRAME` bytes up. The operator is cached per length, as on
/// the append path for records of one size.
fn bench_data_crc(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame/data_crc");
    for len in [256usize, 512, 1024, 4096, 65536] {
        let mut frame = Vec::new();
        encode(&mut frame, 42, 7, None, false, &payload(len));
        let covered = FRAME_HEADER_BYTES - 4 + len;
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_with_input(BenchmarkId::new("pass", len), &frame, |b, f| {
            b.iter(|| crc32c::crc32c_append(black_box(0x1234_5678), black_box(f)))
        });
        let mut fc = FrameCrc::default();
        g.bench_with_input(BenchmarkId::new("arithmetic", len), &frame, |b, f| {
            b.iter(|| fc.append(black_box(0x1234_5678), black_box(f), covered))
        });
    }
    g.finish();
}

criterion_group!(benches, bench_encode, bench_decode, bench_data_crc);
criterion_main!(benches);
