//! Tier1 frame cost per compression profile: compressing one 64 KiB frame of records (what the
//! background task does per frame) and decoding one (what a point read that misses the hot
//! cache does), with the compressed size reported so speed and ratio can be weighed together.
//!
//! The records are log-like text with varying fields, framed exactly as in a segment.

use aof_engine::format::frame::encode;
use aof_engine::Profile;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;

const FRAME: usize = 64 << 10;
const PROFILES: [(&str, Profile); 4] = [
    ("none", Profile::None),
    ("fast", Profile::Fast),
    ("balanced", Profile::Balanced),
    ("compact", Profile::Compact),
];

fn frame_bytes() -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME + 4096);
    let mut i = 0u64;
    while out.len() < FRAME {
        let rec = format!(
            "ts={} level=info svc=ingest user={} msg=\"accepted batch\" size={} ",
            1_700_000_000_000 + i * 13,
            i * 7919 % 1000,
            i * 104_729 % 100_000
        )
        .repeat(4);
        encode(&mut out, i, i, None, false, rec.as_bytes());
        i += 1;
    }
    out
}

fn compress(level: Option<i32>, src: &[u8], ctx: &mut zstd_safe::CCtx<'_>) -> Vec<u8> {
    match level {
        Some(l) => {
            let mut v = Vec::with_capacity(zstd_safe::compress_bound(src.len()));
            ctx.compress(&mut v, src, l).expect("compresses");
            v
        }
        None => src.to_vec(),
    }
}

fn bench(c: &mut Criterion) {
    let raw = frame_bytes();
    let mut ctx = zstd_safe::CCtx::create();
    let mut g = c.benchmark_group("tier1/compress");
    g.throughput(Throughput::Bytes(raw.len() as u64));
    for (name, p) in PROFILES {
        let out = compress(p.zstd_level(), &raw, &mut ctx);
        eprintln!(
            "tier1 {name}: {} -> {} bytes ({:.2}x)",
            raw.len(),
            out.len(),
            raw.len() as f64 / out.len() as f64
        );
        g.bench_with_input(BenchmarkId::from_parameter(name), &raw, |b, raw| {
            b.iter(|| compress(p.zstd_level(), black_box(raw), &mut ctx))
        });
    }
    g.finish();
    let mut g = c.benchmark_group("tier1/decode");
    g.throughput(Throughput::Bytes(raw.len() as u64));
    for (name, p) in PROFILES {
        let comp = compress(p.zstd_level(), &raw, &mut ctx);
        g.bench_with_input(BenchmarkId::from_parameter(name), &comp, |b, comp| {
            b.iter(|| {
                let mut v = Vec::with_capacity(raw.len());
                match p.zstd_level() {
                    Some(_) => {
                        zstd_safe::decompress(&mut v, black_box(comp)).expect("decodes");
                    }
                    None => v.extend_from_slice(black_box(comp)),
                }
                assert_eq!(v.len(), raw.len());
                v
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
