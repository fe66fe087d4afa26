//! The log a user would otherwise write: buffered `std::fs` appends behind a mutex, with
//! group commit (one fdatasync covers every append that finished before it started), driven
//! by the same workload generator as the engine (foreign threads).

use crate::workload::{new_hist, progress, send_time, Counted, Latency, Mode, Spec};
use serde::Serialize;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Serialize)]
pub struct BaselineResult {
    pub spec: Spec,
    pub records: u64,
    pub records_per_s: f64,
    pub mb_per_s: f64,
    pub latency: Latency,
}

struct Log {
    file: Mutex<(std::io::BufWriter<std::fs::File>, u64)>,
    sync: Mutex<()>,
    synced: AtomicU64,
    sync_file: std::fs::File,
}

impl Log {
    fn append(&self, payload: &[u8], mode: Mode) -> std::io::Result<u64> {
        let off = {
            let mut g = self.file.lock().expect("baseline mutex");
            let (w, next) = &mut *g;
            let crc = crc32c::crc32c(payload);
            w.write_all(&(payload.len() as u32).to_le_bytes())?;
            w.write_all(&crc.to_le_bytes())?;
            w.write_all(payload)?;
            if mode != Mode::Memory {
                w.flush()?;
            }
            *next += 1;
            *next
        };
        if mode == Mode::Synced && self.synced.load(Ordering::Acquire) < off {
            let _g = self.sync.lock().expect("baseline sync mutex");
            if self.synced.load(Ordering::Acquire) < off {
                let upto = self.file.lock().expect("baseline mutex").1;
                self.sync_file.sync_data()?;
                self.synced.fetch_max(upto, Ordering::AcqRel);
            }
        }
        Ok(off - 1)
    }
}

pub fn run(dir: &Path, spec: &Spec) -> std::io::Result<BaselineResult> {
    let scratch = crate::scratch::Scratch::new(dir, crate::scratch::BASELINE);
    let root = scratch.path();
    std::fs::create_dir_all(root)?;
    let mut logs = Vec::new();
    for i in 0..spec.logs {
        let p = root.join(format!("log-{i}"));
        let f = std::fs::OpenOptions::new().create(true).append(true).open(&p)?;
        let sync_file = f.try_clone()?;
        logs.push(Arc::new(Log {
            file: Mutex::new((std::io::BufWriter::with_capacity(256 << 10, f), 0)),
            sync: Mutex::new(()),
            synced: AtomicU64::new(0),
            sync_file,
        }));
    }
    let start = Instant::now();
    let measure_from = start + spec.warmup;
    let end = measure_from + spec.duration;
    let producers = (spec.logs * spec.concurrency) as f64;
    let rate = spec.rate.map(|r| r / producers);
    let pb = progress(&spec.label, spec.warmup + spec.duration);
    let mut threads = Vec::new();
    for log in &logs {
        for p in 0..spec.concurrency {
            let (log, spec) = (log.clone(), spec.clone());
            threads.push(std::thread::spawn(
                move || -> std::io::Result<(hdrhistogram::Histogram<u64>, Counted)> {
                    let mut h = new_hist();
                    let mut n = Counted::default();
                    let mut k = 0u64;
                    let buf = vec![0xA5u8; spec.size.max];
                    while let Some(intended) = send_time(start, end, rate, k) {
                        while Instant::now() < intended {
                            std::hint::spin_loop();
                        }
                        let len = spec.size.pick(p as u64, k);
                        log.append(&buf[..len], spec.mode)?;
                        let done = Instant::now();
                        if done >= measure_from {
                            h.saturating_record(done.duration_since(intended).as_nanos() as u64);
                            n.add(1, len);
                        }
                        k += 1;
                    }
                    Ok((h, n))
                },
            ));
        }
    }
    while Instant::now() < end {
        pb.set_position(start.elapsed().as_millis() as u64);
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut hist = new_hist();
    let mut total = Counted::default();
    for t in threads {
        let (h, n) = t.join().expect("baseline thread")?;
        hist.add(&h).ok();
        total.merge(n);
    }
    pb.finish_and_clear();
    drop(logs);
    drop(scratch);
    let secs = spec.duration.as_secs_f64();
    Ok(BaselineResult {
        spec: spec.clone(),
        records: total.records,
        records_per_s: total.records as f64 / secs,
        mb_per_s: total.bytes as f64 / secs / 1e6,
        latency: Latency::from_hist(&hist),
    })
}
