//! The machine's own open-loop floor: how late a thread pinned to a core runs work it was
//! scheduled to run, with nothing else on the core. Interrupts, the host's scheduling of the
//! vCPU and timer ticks all show up here, and no engine on that core can do better; the
//! Memory latency targets are read against it, as bandwidth is read against the device.

use crate::workload::{new_hist, send_time, Latency};
use std::time::{Duration, Instant};

/// Runs `rate` units of work per second for `dur` (after `warmup`) on a thread pinned to
/// `cpu`, each unit a copy of `size` bytes into a 1 MiB ring plus a crc32c over them (what an
/// append does to a record), and returns how late each unit finished against its scheduled
/// time, measured like the engine's open-loop runs.
pub fn open_loop(cpu: usize, rate: f64, size: usize, warmup: Duration, dur: Duration) -> Latency {
    let size = size.clamp(1, 64 << 10);
    let worker = std::thread::spawn(move || {
        crate::cores::pin(cpu);
        let mut hist = new_hist();
        let src = vec![0xA5u8; size];
        let mut ring = vec![0u8; 1 << 20];
        let mut acc = 0u32;
        let start = Instant::now();
        let measure_from = start + warmup;
        let end = measure_from + dur;
        let mut k = 0u64;
        while let Some(at) = send_time(start, end, Some(rate), k) {
            while Instant::now() < at {
                std::hint::spin_loop();
            }
            let off = (k as usize * size) % (ring.len() - size);
            ring[off..off + size].copy_from_slice(&src);
            acc = crc32c::crc32c_append(acc, std::hint::black_box(&ring[off..off + size]));
            let done = Instant::now();
            if at >= measure_from {
                hist.saturating_record(done.duration_since(at).as_nanos() as u64);
            }
            k += 1;
        }
        std::hint::black_box(acc);
        hist
    });
    let hist = worker.join().unwrap_or_else(|_| new_hist());
    Latency::from_hist(&hist)
}

/// The first CPU this process may run on: the one the engine pins shard 0 to.
pub fn first_cpu() -> usize {
    // SAFETY: `set` is a zeroed cpu_set_t owned by this frame that sched_getaffinity fills;
    // CPU_ISSET only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return 0;
        }
        (0..libc::CPU_SETSIZE as usize)
            .find(|&c| libc::CPU_ISSET(c, &set))
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn an_easy_schedule_is_met_and_every_unit_is_measured() {
        let l = super::open_loop(
            super::first_cpu(),
            10_000.0,
            256,
            Duration::from_millis(10),
            Duration::from_millis(100),
        );
        // 100 ms at 10k/s: every unit due in the window is run and measured, however late
        // (no timing is asserted: a loaded CI host may run them all late).
        assert!((999..=1001).contains(&l.samples), "{l:?}");
        assert!(l.p50_us <= l.p99_us && l.p99_us <= l.max_us, "{l:?}");
    }

    #[test]
    fn lateness_is_measured_from_the_schedule_so_an_overload_shows() {
        // 2M units a second of 64 KiB copies + crc32c (several microseconds each) for 10 ms:
        // 20,000 units that take far longer than 10 ms. Measured from each unit's scheduled
        // time, the last ones are late by more than the whole window; measured from when each
        // started (coordinated omission), none would be.
        let window = Duration::from_millis(10);
        let l = super::open_loop(super::first_cpu(), 2e6, 64 << 10, Duration::ZERO, window);
        assert!((19_999..=20_001).contains(&l.samples), "{l:?}");
        assert!(l.max_us > window.as_micros() as f64, "{l:?}");
    }
}
