//! The end-to-end demo: appends across all shards (on-shard producers and foreign threads, at
//! every durability), syncs, closes, reopens, reads everything back and verifies it, printing
//! what it did and the rates it saw.
//!
//!     cargo run --release -p aof-engine --example demo [-- DATA_DIR]

use aof_engine::{Config, Durability, Engine, NewRecord, OwnedRecord};
use hdrhistogram::Histogram;
use std::time::{Duration, Instant};

const RECORDS_PER_LOG: u64 = 200_000;
const RECORD_BYTES: usize = 256;
const SYNCED_THREADS: usize = 8;
const SYNCED_PER_THREAD: u64 = 500;

fn payload(log: usize, off: u64) -> Vec<u8> {
    let seed = (log as u64) << 40 ^ off;
    (0..RECORD_BYTES)
        .map(|i| (seed.wrapping_mul(31).wrapping_add(i as u64 * 7) % 251) as u8)
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::env::args()
        .nth(1)
        .map(Into::into)
        .unwrap_or_else(|| std::path::PathBuf::from("aof-demo-data"));
    let root: std::path::PathBuf = root;
    if root.exists() {
        std::fs::remove_dir_all(&root)?;
    }
    let cfg = Config::new(&root);
    println!("aof-engine demo: data in {}", root.display());
    let t = Instant::now();
    let engine = Engine::open(cfg.clone())?;
    let shards = engine.shards();
    println!(
        "[1/6] opened {shards} shard(s), one pinned executor each, in {:?}",
        t.elapsed()
    );
    for w in engine.warnings() {
        println!("      warning: {w}");
    }
    let h = engine.handle();

    // One log per shard, named so each lands on a different shard.
    let mut logs: Vec<String> = Vec::new();
    let mut i = 0;
    while logs.len() < shards {
        let name = format!("orders-{i}");
        if !logs.iter().any(|l| h.shard_of(l) == h.shard_of(&name)) {
            h.create_log(&name).wait()?;
            logs.push(name);
        }
        i += 1;
    }

    // On-shard producers: the thread-per-core path, no cross-thread hop per append.
    let t = Instant::now();
    let mut replies = Vec::new();
    for (li, name) in logs.iter().enumerate() {
        let name = name.clone();
        replies.push(engine.spawn_on(h.shard_of(&name), move |shard| async move {
            let log = shard.log(&name)?;
            let mut hist = Histogram::<u64>::new(3).expect("histogram");
            for off in 0..RECORDS_PER_LOG {
                let p = payload(li, off);
                let s = Instant::now();
                let got = log
                    .append_record(NewRecord::new(&p).with_tag(off), Durability::Memory)
                    .await?;
                hist.record(s.elapsed().as_nanos() as u64).ok();
                debug_assert_eq!(got, off);
                if off % 4096 == 0 {
                    glommio::yield_if_needed().await;
                }
            }
            log.sync().await?;
            Ok(hist)
        }));
    }
    let mut hist = Histogram::<u64>::new(3)?;
    for r in replies {
        hist.add(r.wait()?)?;
    }
    let el = t.elapsed();
    let n = RECORDS_PER_LOG * shards as u64;
    println!(
        "[2/6] on-shard Memory appends: {n} x {RECORD_BYTES} B in {el:.2?} = {:.0} rec/s, {:.1} MB/s (incl. final sync); append p50 {} ns, p99 {} ns, p99.99 {} ns",
        n as f64 / el.as_secs_f64(),
        (n as f64 * RECORD_BYTES as f64) / el.as_secs_f64() / 1e6,
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.99),
        hist.value_at_quantile(0.9999)
    );

    // Foreign threads, Synced: every append waits for fdatasync; concurrent ones share it.
    let t = Instant::now();
    let mut threads = Vec::new();
    for tid in 0..SYNCED_THREADS {
        let h = h.clone();
        let name = logs[tid % logs.len()].clone();
        threads.push(std::thread::spawn(
            move || -> Result<Histogram<u64>, aof_engine::Error> {
                let mut hist = Histogram::<u64>::new(3).expect("histogram");
                for k in 0..SYNCED_PER_THREAD {
                    let s = Instant::now();
                    h.append_record(
                        &name,
                        OwnedRecord::new(vec![tid as u8; RECORD_BYTES]).with_tag(k),
                        Durability::Synced,
                    )
                    .wait()?;
                    hist.record(s.elapsed().as_micros() as u64).ok();
                }
                Ok(hist)
            },
        ));
    }
    let mut hist = Histogram::<u64>::new(3)?;
    for t in threads {
        hist.add(t.join().expect("thread")?)?;
    }
    let el = t.elapsed();
    let n = SYNCED_THREADS as u64 * SYNCED_PER_THREAD;
    println!(
        "[3/6] {SYNCED_THREADS} foreign threads, Synced appends (group commit): {n} in {el:.2?} = {:.0} rec/s; latency p50 {} us, p99 {} us",
        n as f64 / el.as_secs_f64(),
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.99)
    );

    // Foreign-thread round trip for a Memory append: the cost of the cross-thread hop.
    let mut hist = Histogram::<u64>::new(3)?;
    for k in 0..5000u64 {
        let s = Instant::now();
        h.append(&logs[0], k.to_le_bytes().to_vec(), Durability::Memory)
            .wait()?;
        hist.record(s.elapsed().as_nanos() as u64).ok();
    }
    println!(
        "[4/6] foreign-thread Memory append round trip: p50 {:.1} us, p99 {:.1} us, max {:.1} us",
        hist.value_at_quantile(0.5) as f64 / 1e3,
        hist.value_at_quantile(0.99) as f64 / 1e3,
        hist.max() as f64 / 1e3
    );

    let mut expected = Vec::new();
    for name in &logs {
        h.sync(name).wait()?;
        expected.push(h.offsets(name).wait()?.1);
    }
    let t = Instant::now();
    engine.close()?;
    println!("[5/6] closed (everything synced) in {:?}", t.elapsed());

    let t = Instant::now();
    let engine = Engine::open(cfg)?;
    let h = engine.handle();
    let reopen = t.elapsed();
    let t = Instant::now();
    let mut read = 0u64;
    let mut bytes = 0u64;
    for (li, name) in logs.iter().enumerate() {
        let (_, next, _) = h.offsets(name).wait()?;
        assert_eq!(next, expected[li], "{name}: record count after reopen");
        let mut off = 0;
        while off < next {
            let batch = h.read_from(name, off, 4096, 8 << 20).wait()?;
            for r in &batch {
                if r.offset < RECORDS_PER_LOG {
                    assert_eq!(r.payload, payload(li, r.offset), "{name} offset {}", r.offset);
                    assert_eq!(r.tag, Some(r.offset));
                }
                bytes += r.payload.len() as u64;
            }
            read += batch.len() as u64;
            off += batch.len() as u64;
        }
    }
    let el = t.elapsed();
    println!(
        "[6/6] reopened in {reopen:.2?}; read back and verified {read} records ({:.1} MB) in {el:.2?} = {:.0} rec/s",
        bytes as f64 / 1e6,
        read as f64 / el.as_secs_f64()
    );
    engine.close()?;
    std::fs::remove_dir_all(&root)?;
    println!("ok: nothing lost, nothing altered");
    let _ = Duration::ZERO;
    Ok(())
}
