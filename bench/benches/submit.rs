//! The cross-thread path, timed from a thread that is not a shard:
//! - `queue_round_trip`: a raw `crossbeam_queue::ArrayQueue<u64>` ping-pong with a spinning
//!   echo thread (push, pop there, push back, pop here). The floor for any lock-free hop.
//! - `handle_append`: `Handle::append(name, vec, Durability::Memory).wait()`, a full round trip
//!   through the shard's mailbox, its inbox task, the append, and the oneshot reply. Variants:
//!   the shard parks when idle (the default) or spins 1 ms first (`spin_before_park`), with
//!   the caller on another core; and parking with the caller on the shard's own core.
//!
//! The gap between the two is what the mailbox, the executor wake-up and the reply cost, and
//! why code that can run on the shard (`spawn_on`, `LocalLog`) should.
//!
//! Placement matters more than anything else here, so it is fixed: the far side (echo thread,
//! shard 0) is on the first core, and the timed loop runs on a thread pinned to the chosen
//! core. The main thread stays unpinned, because `Engine::open` places shards on the cores
//! the opening thread may use.

use aof_engine::{Config, Durability, Engine};
use core_affinity::CoreId;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use crossbeam_queue::ArrayQueue;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LOG: &str = "s";
const PAYLOAD: usize = 64;

/// The first and the last core this process may use (the engine puts shard 0 on the first).
fn cores() -> (Option<CoreId>, Option<CoreId>) {
    let ids = core_affinity::get_core_ids().unwrap_or_default();
    (ids.first().copied(), ids.last().copied())
}

/// Runs `f` on a new thread pinned to `core` and returns its result.
fn on_core<T: Send>(core: Option<CoreId>, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            if let Some(core) = core {
                core_affinity::set_for_current(core);
            }
            f()
        })
        .join()
        .expect("timed thread")
    })
}

/// Pops from `q`, spinning briefly and then yielding the core, so two spinners that end up
/// on one core do not starve each other.
fn pop_spin(q: &ArrayQueue<u64>, stop: &AtomicBool) -> Option<u64> {
    let mut spins = 0u32;
    loop {
        if let Some(v) = q.pop() {
            return Some(v);
        }
        if stop.load(Ordering::Relaxed) {
            return None;
        }
        spins += 1;
        if spins < 1000 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

fn bench_queue(c: &mut Criterion) {
    let (first, last) = cores();
    let ping = Arc::new(ArrayQueue::<u64>::new(64));
    let pong = Arc::new(ArrayQueue::<u64>::new(64));
    let stop = Arc::new(AtomicBool::new(false));
    let echo = {
        let (ping, pong, stop) = (ping.clone(), pong.clone(), stop.clone());
        std::thread::spawn(move || {
            on_core(first, || {
                while let Some(v) = pop_spin(&ping, &stop) {
                    pong.push(v).expect("pong has room");
                }
            })
        })
    };
    let never = AtomicBool::new(false);
    c.bench_function("submit/queue_round_trip", |b| {
        b.iter_custom(|iters| {
            on_core(last, || {
                let start = Instant::now();
                for i in 0..iters {
                    ping.push(i).expect("ping has room");
                    assert_eq!(pop_spin(&pong, &never), Some(i));
                }
                start.elapsed()
            })
        })
    });
    stop.store(true, Ordering::Relaxed);
    echo.join().expect("echo thread");
}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("aof-bench-submit")
}

fn bench_handle(c: &mut Criterion) {
    let (first, last) = cores();
    // (label, the shard's spin_before_park, the caller's reply_spin, the caller's core)
    let variants = [
        ("park", None, None, last),
        ("spin_1ms", Some(Duration::from_millis(1)), None, last),
        ("park_same_core", None, None, first),
        ("reply_spin_100us", None, Some(Duration::from_micros(100)), last),
        (
            "reply_spin_100us_shard_spin_200us",
            Some(Duration::from_micros(200)),
            Some(Duration::from_micros(100)),
            last,
        ),
    ];
    let mut g = c.benchmark_group("submit/handle_append");
    for (label, spin, reply_spin, caller) in variants {
        let _ = std::fs::remove_dir_all(data_dir());
        let mut config = Config::new(data_dir());
        config.shards = 1;
        config.spin_before_park = spin;
        config.reply_spin = reply_spin;
        let engine = Engine::open(config).expect("engine opens");
        let handle = engine.handle();
        handle.create_log(LOG).wait().expect("log created");
        g.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter_custom(|iters| {
                // The API takes the payload by value: build them all before the clock starts.
                let payloads: Vec<Vec<u8>> = (0..iters).map(|_| vec![0x5A; PAYLOAD]).collect();
                on_core(caller, || {
                    let start = Instant::now();
                    for p in payloads {
                        handle.append(LOG, p, Durability::Memory).wait().expect("append");
                    }
                    start.elapsed()
                })
            })
        });
        engine.close().expect("engine closes cleanly");
    }
    g.finish();
    let _ = std::fs::remove_dir_all(data_dir());
}

criterion_group!(benches, bench_queue, bench_handle);
criterion_main!(benches);
