//! The on-shard append path in `Memory` mode: `LocalLog::append_buffered` (never awaits) and
//! the async `LocalLog::append(.., Durability::Memory)`, for 64 B and 1 KiB payloads.
//!
//! This is the thread-per-core entry point: code already running on the owning shard appends
//! with no thread hop, so the cost is framing, crc32c, the copy into the staging buffer and
//! the log's bookkeeping. That is what is timed. The loop runs in chunks of at most half the
//! shard's memory budget, and between chunks, off the clock, `sync` drains what was appended,
//! so a timed append never meets a full budget. The sustained rate, which the disk bounds, is
//! measured by the perf harness (`aof-perf`), not here.
//!
//! If an append still reports `Backpressure` (a roll found no spare segment ready), the loop
//! falls back to the awaiting append, on the clock. Retrying after `yield_now` or
//! `yield_if_needed` would spin: glommio polls io_uring only when the task queue runs dry or
//! its 100 ms preemption timer fires, so the flusher's I/O would not even be submitted.

use aof_engine::format::frame::frame_len;
use aof_engine::{Config, Durability, Engine, Error, LocalLog, NewRecord};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const LOG: &str = "b";
const SIZES: [usize; 2] = [64, 1024];

/// Under the target dir, not /tmp: the engine refuses tmpfs (no O_DIRECT).
fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("aof-bench-append")
}

#[derive(Clone, Copy)]
enum Api {
    Buffered,
    Awaited,
}

async fn append_one(log: &LocalLog, payload: &[u8], api: Api) -> aof_engine::Result<u64> {
    match api {
        Api::Buffered => match log.append_buffered(NewRecord::new(payload)) {
            Err(Error::Backpressure { .. }) => log.append(payload, Durability::Memory).await,
            r => r,
        },
        Api::Awaited => log.append(payload, Durability::Memory).await,
    }
}

/// Runs `iters` appends of `len` bytes on shard 0 and returns the time spent appending.
fn run(engine: &Engine, api: Api, len: usize, iters: u64) -> Duration {
    let chunk = (engine.handle().config().shard_memory_budget_bytes / 2) / frame_len(len) as u64;
    engine
        .spawn_on(0, move |shard| async move {
            let log = shard.log(LOG)?;
            let payload = vec![0x5A; len];
            let (mut left, mut timed) = (iters, Duration::ZERO);
            while left > 0 {
                let n = left.min(chunk);
                let start = Instant::now();
                for _ in 0..n {
                    append_one(&log, &payload, api).await?;
                }
                timed += start.elapsed();
                left -= n;
                log.sync().await?;
            }
            Ok(timed)
        })
        .wait()
        .expect("appends")
}

fn bench_append(c: &mut Criterion) {
    let _ = std::fs::remove_dir_all(data_dir());
    let mut config = Config::new(data_dir());
    config.shards = 1;
    let engine = Engine::open(config).expect("engine opens");
    engine.handle().create_log(LOG).wait().expect("log created");

    let mut g = c.benchmark_group("append");
    for len in SIZES {
        g.throughput(Throughput::Bytes(len as u64));
        for (name, api) in [("buffered", Api::Buffered), ("async_memory", Api::Awaited)] {
            g.bench_function(BenchmarkId::new(name, len), |b| {
                b.iter_custom(|iters| run(&engine, api, len, iters))
            });
        }
    }
    g.finish();
    engine.close().expect("engine closes cleanly");
    let _ = std::fs::remove_dir_all(data_dir());
}

criterion_group!(benches, bench_append);
criterion_main!(benches);
