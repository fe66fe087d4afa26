//! How well this machine's cores scale on their own: a CPU-bound loop (crc32c over a 64 KiB
//! buffer, cache-resident) on 1 thread and then on N threads pinned to N cores. The shard
//! scaling target is read against it: on a VM whose vCPUs share physical cores, no engine can
//! beat the machine.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

/// Total loop iterations per second with `threads` threads, each pinned to its own core.
fn rate(threads: usize, dur: Duration) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(threads + 1));
    let workers: Vec<_> = (0..threads)
        .map(|cpu| {
            let (stop, start) = (stop.clone(), start.clone());
            std::thread::spawn(move || {
                pin(cpu);
                let buf = vec![0x5au8; 64 << 10];
                let mut n = 0u64;
                let mut acc = 0u32;
                start.wait();
                while !stop.load(Ordering::Relaxed) {
                    acc = crc32c::crc32c_append(acc, std::hint::black_box(&buf));
                    n += 1;
                }
                std::hint::black_box(acc);
                n
            })
        })
        .collect();
    start.wait();
    let t = std::time::Instant::now();
    std::thread::sleep(dur);
    stop.store(true, Ordering::Relaxed);
    let total: u64 = workers.into_iter().map(|w| w.join().unwrap_or(0)).sum();
    total as f64 / t.elapsed().as_secs_f64()
}

pub fn pin(cpu: usize) {
    // SAFETY: `set` is a zeroed cpu_set_t owned by this frame; CPU_SET writes one bit of it
    // and sched_setaffinity(0, ..) only reads it. Failure leaves the thread unpinned, which
    // only makes the measurement less exact.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// `scaling`, with the disk kept as busy as an engine run keeps it: while one thread runs,
/// sequential O_DIRECT writes into new blocks go on at `mb_per_s_one`, while `threads` run at
/// `mb_per_s_many` (the MB/s the engine's 1-shard and N-shard runs wrote). The writes cost CPU
/// time outside any thread of ours (completions, the file system's extent conversions, and on
/// a VM the host's own device work), which a 1-shard run gets for free on an idle core and an
/// N-shard run does not.
pub fn scaling_under_writes(
    threads: usize,
    dur: Duration,
    dir: &std::path::Path,
    mb_per_s_one: f64,
    mb_per_s_many: f64,
) -> Result<UnderWrites, String> {
    let under = |n: usize, mb: f64| -> Result<(f64, f64), String> {
        let stop = Arc::new(AtomicBool::new(false));
        let (dir, s2) = (dir.to_path_buf(), stop.clone());
        let writer = std::thread::spawn(move || crate::device::paced_writes(&dir, mb, s2));
        // Let the writes reach their pace before measuring.
        std::thread::sleep(Duration::from_millis(100));
        let r = rate(n, dur);
        stop.store(true, Ordering::Relaxed);
        let written = writer.join().map_err(|_| "the disk writer panicked".to_string())??;
        Ok((r, written))
    };
    let (one, mb_per_s_1) = under(1, mb_per_s_one)?;
    let (many, mb_per_s_2) = under(threads, mb_per_s_many)?;
    Ok(UnderWrites {
        ratio: many / one,
        mb_per_s_1,
        mb_per_s_2,
    })
}

/// What `scaling_under_writes` measured: the ratio, and the MB/s its writer achieved beside
/// one thread and beside the N.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct UnderWrites {
    pub ratio: f64,
    pub mb_per_s_1: f64,
    pub mb_per_s_2: f64,
}

/// Throughput of `threads` pinned threads over that of one, for a CPU-bound loop.
pub fn scaling(threads: usize, dur: Duration) -> f64 {
    let one = rate(1, dur);
    let many = rate(threads, dur);
    many / one
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_thread_scales_to_itself_and_two_do_more_work() {
        let d = std::time::Duration::from_millis(100);
        let r1 = super::scaling(1, d);
        assert!(r1 > 0.2 && r1 < 5.0, "one thread against itself: {r1}");
        let r2 = super::scaling(2, d);
        assert!(r2.is_finite() && r2 > 0.0, "{r2}");
    }
}
