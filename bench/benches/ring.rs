//! The shard ↔ bridge rings (`aof_engine::tier2::ring`): fixed 128-byte messages, each with
//! its own crc32c, in a memory-mapped single-producer single-consumer queue.
//! - `ring/codec`: encoding and decoding one message (the crc and field packing), per kind.
//! - `ring/push_pop`: one push and one pop on the same thread, through the mapped file: the
//!   cost a shard pays to hand over a notification, with no other core involved.
//! - `ring/cross_core`: messages/s from a producer thread (the shard's side) to a consumer
//!   thread on another core (the bridge's side), the consumer spinning. What the handoff can
//!   carry when both sides are busy; a full ring makes the producer retry, as a shard would
//!   report it.
//!
//! Both ends are opened in this one process (two mappings of the same file), as the bridge
//! and a shard would map it from two processes.

use aof_engine::tier2::failure::FailureKind;
use aof_engine::tier2::keys::SegmentId;
use aof_engine::tier2::ring::msg;
use aof_engine::tier2::ring::{Body, BridgeEnd, Message, ShardEnd};
use core_affinity::CoreId;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::path::{Path, PathBuf};
use std::time::Instant;

const SEG: SegmentId = SegmentId {
    log_id: 0x3fd4_8083_ee28_c273,
    base: 1 << 20,
    crc32c: 0x1234_5678,
};

/// One message of each kind, as the shard and the bridge send them.
fn messages() -> Vec<(&'static str, Message)> {
    vec![
        (
            "upload",
            Message {
                id: 1,
                body: Body::Upload {
                    seg: SEG,
                    file_id: 42,
                    size: 64 << 20,
                },
            },
        ),
        (
            "download_range",
            Message {
                id: 2,
                body: Body::Download {
                    seg: SEG,
                    range: Some(4096..20_480),
                },
            },
        ),
        (
            "done_etag",
            Message {
                id: 3,
                body: Body::Done {
                    seg: SEG,
                    size: 64 << 20,
                    etag: "0123456789abcdef0123456789abcdef-12".to_string(),
                },
            },
        ),
        (
            "failed",
            Message {
                id: 4,
                body: Body::Failed {
                    seg: SEG,
                    kind: FailureKind::Throttled,
                    retryable: true,
                },
            },
        ),
    ]
}

fn upload(id: u64) -> Message {
    Message {
        id,
        body: Body::Upload {
            seg: SEG,
            file_id: id,
            size: 64 << 20,
        },
    }
}

fn data_dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("aof-bench-ring-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("bench directory");
    d
}

fn bench_codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring/codec");
    g.throughput(Throughput::Elements(1));
    for (name, m) in messages() {
        g.bench_function(BenchmarkId::new("encode", name), |b| {
            let mut seq = 0u64;
            b.iter(|| {
                seq += 1;
                msg::encode(std::hint::black_box(&m), seq).expect("encodes")
            })
        });
        let slot = msg::encode(&m, 7).expect("encodes");
        g.bench_function(BenchmarkId::new("decode", name), |b| {
            b.iter(|| msg::decode(std::hint::black_box(&slot), 7).expect("decodes"))
        });
    }
    g.finish();
}

fn bench_push_pop(c: &mut Criterion) {
    let dir = data_dir("push-pop");
    let mut shard = ShardEnd::open(&dir, 0, 1024).expect("shard end");
    let mut bridge = BridgeEnd::open(&dir, 0, 1024).expect("bridge end");
    let m = upload(9);
    let mut g = c.benchmark_group("ring/push_pop");
    g.throughput(Throughput::Elements(1));
    g.bench_function("same_thread", |b| {
        b.iter(|| {
            shard.requests.push(&m).expect("ring").expect("room");
            bridge.requests.pop().expect("ring").expect("a message")
        })
    });
    g.finish();
    drop((shard, bridge));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Moves `n` messages from a producer on `from` to a consumer on `to`; returns the time from
/// the first push to the last pop, and how often the producer found the ring full.
fn transfer(dir: &Path, capacity: u64, n: u64, from: Option<CoreId>, to: Option<CoreId>) -> (std::time::Duration, u64) {
    let mut shard = ShardEnd::open(dir, 0, capacity).expect("shard end");
    let mut bridge = BridgeEnd::open(dir, 0, capacity).expect("bridge end");
    bridge.requests.reset();
    std::thread::scope(|s| {
        let consumer = s.spawn(move || {
            if let Some(core) = to {
                core_affinity::set_for_current(core);
            }
            let mut got = 0u64;
            while got < n {
                match bridge.requests.pop().expect("ring") {
                    Some(m) => {
                        assert_eq!(m.id, got, "messages arrive in order");
                        got += 1;
                    }
                    None => std::hint::spin_loop(),
                }
            }
            Instant::now()
        });
        if let Some(core) = from {
            core_affinity::set_for_current(core);
        }
        let start = Instant::now();
        let mut full = 0u64;
        for id in 0..n {
            let m = upload(id);
            while shard.requests.push(&m).expect("ring").is_err() {
                full += 1;
                std::hint::spin_loop();
            }
        }
        let end = consumer.join().expect("consumer");
        (end - start, full)
    })
}

fn bench_cross_core(c: &mut Criterion) {
    let ids = core_affinity::get_core_ids().unwrap_or_default();
    let (first, last) = (ids.first().copied(), ids.last().copied());
    let mut g = c.benchmark_group("ring/cross_core");
    const BATCH: u64 = 10_000;
    g.throughput(Throughput::Elements(BATCH));
    for capacity in [64u64, 1024] {
        let dir = data_dir(&format!("cross-{capacity}"));
        g.bench_function(BenchmarkId::new("capacity", capacity), |b| {
            b.iter_custom(|iters| {
                let mut total = std::time::Duration::ZERO;
                for _ in 0..iters {
                    // The process's main thread may share a core with either side: pin both.
                    let (took, _full) = std::thread::scope(|s| {
                        s.spawn(|| transfer(&dir, capacity, BATCH, last, first))
                            .join()
                            .expect("producer")
                    });
                    total += took;
                }
                total
            })
        });
        let _ = std::fs::remove_dir_all(&dir);
    }
    g.finish();
}

criterion_group!(benches, bench_codec, bench_push_pop, bench_cross_core);
criterion_main!(benches);
