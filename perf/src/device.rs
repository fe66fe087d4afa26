//! The raw device, measured in the same run with the same block sizes as the engine, so every
//! engine figure can be stated as a ratio to the physical limit: sequential O_DIRECT write
//! bandwidth at depth 16, and depth-1 latency of a 4 KiB write and of a write + fdatasync.

use crate::workload::{new_hist, Latency};
use glommio::io::{DmaFile, OpenOptions};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::cell::Cell;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Bandwidth {
    pub block_bytes: usize,
    pub depth: usize,
    /// Written over blocks that already hold data, instead of into freshly preallocated ones:
    /// first writes to new blocks are slower (on this VM, where freed blocks are discarded; see
    /// `aof_engine`'s `tiering::retire_raw`).
    #[serde(default)]
    pub overwrite: bool,
    pub mb_per_s: f64,
    pub iops: f64,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct DeviceResult {
    pub seq_write: Vec<Bandwidth>,
    pub write_4k_latency: Latency,
    pub write_fdatasync_4k_latency: Latency,
    pub fdatasyncs_per_s: f64,
    /// The same writes each with `RWF_DSYNC` instead of a following fdatasync: the one request
    /// the engine sends for a lone Synced append (`Config::dsync_writes`). Absent from reports
    /// of earlier builds.
    #[serde(default)]
    pub write_dsync_4k_latency: Option<Latency>,
}

/// Runs `f` on an executor of its own with a scratch path of pattern `p` under `dir`, which
/// is removed afterwards however `f` ends.
fn in_scratch<T, F, Fut>(dir: &Path, p: crate::scratch::Pattern, f: F) -> Result<T, String>
where
    T: Send + 'static,
    F: FnOnce(std::path::PathBuf) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, String>> + 'static,
{
    let scratch = crate::scratch::Scratch::new(dir, p);
    let path = scratch.path().to_path_buf();
    let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name("aof-perf-device")
        .spawn(move || f(path))
        .map_err(|e| e.to_string())?;
    let r = ex.join().map_err(|e| e.to_string())?;
    drop(scratch);
    r
}

pub fn measure(dir: &Path, bytes_per_size: u64, latency_ops: u64) -> Result<DeviceResult, String> {
    in_scratch(dir, crate::scratch::DEVICE_PROBE, move |p| async move {
        run(&p, bytes_per_size, latency_ops).await
    })
}

/// The device's sequential limit alone: a 1 MiB pass into a preallocated file, then the
/// pass over its written blocks, which is returned. Cheaper than `measure` (two passes), so
/// `quick` can take it again right before the runs it is compared with.
pub fn measure_limit(dir: &Path, bytes: u64) -> Result<Bandwidth, String> {
    in_scratch(dir, crate::scratch::DEVICE_LIMIT, move |p| async move {
        let f = open(&p, bytes).await?;
        seq_pass(&f, 1 << 20, bytes, false).await?;
        let r = seq_pass(&f, 1 << 20, bytes, true).await;
        let _ = f.close_rc().await;
        r
    })
}

/// Sequential 1 MiB O_DIRECT writes at `mb_per_s` into new preallocated blocks under `dir`
/// (8 in flight, each sent at its due time, from 8 buffers filled once), until `stop` is set;
/// returns the MB/s written. The disk traffic of an engine run without the engine, for
/// `cores::scaling_under_writes`.
pub fn paced_writes(dir: &Path, mb_per_s: f64, stop: Arc<AtomicBool>) -> Result<f64, String> {
    const BS: usize = 1 << 20;
    const DEPTH: usize = 8;
    // Room for 1.5 s at this rate (a measurement takes 0.6 s); past it the writes wrap around.
    let size = ((mb_per_s * 1e6 * 1.5) as u64).clamp(64 << 20, 4 << 30) / BS as u64 * BS as u64;
    in_scratch(dir, crate::scratch::DISK_LOAD, move |p| async move {
        let f = open(&p, size).await?;
        let next = Rc::new(Cell::new(0u64));
        let written = Rc::new(Cell::new(0u64));
        let start = Instant::now();
        let per_write = Duration::from_secs_f64(BS as f64 / (mb_per_s.max(1.0) * 1e6));
        let tasks: Vec<_> = (0..DEPTH)
            .map(|_| {
                let (f, next, written, stop) = (f.clone(), next.clone(), written.clone(), stop.clone());
                let mut b = f.alloc_dma_buffer(BS);
                b.as_bytes_mut().fill(0x5A);
                let b = Rc::new(b);
                glommio::spawn_local(async move {
                    loop {
                        let i = next.get();
                        next.set(i + 1);
                        let due = start + per_write * i as u32;
                        let now = Instant::now();
                        if due > now {
                            glommio::timer::sleep(due - now).await;
                        }
                        if stop.load(Ordering::Relaxed) {
                            return Ok::<(), String>(());
                        }
                        let pos = i * BS as u64 % size;
                        f.write_rc_at(b.clone(), pos).await.map_err(|e| e.to_string())?;
                        written.set(written.get() + 1);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await?;
        }
        let secs = start.elapsed().as_secs_f64();
        let _ = f.close_rc().await;
        Ok(written.get() as f64 * BS as f64 / secs / 1e6)
    })
}

/// `ops` 4 KiB writes one at a time over the first `ops` blocks of `f`, block `i` filled with
/// `i ^ fill` and written (and synced, if it does) by `write`; each one timed. Returns their
/// latencies and how many a second went.
async fn depth_one<W, Fut>(f: &Rc<DmaFile>, ops: u64, fill: u8, write: W) -> Result<(Histogram<u64>, f64), String>
where
    W: Fn(Rc<DmaFile>, glommio::io::DmaBuffer, u64) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut h = new_hist();
    let start = Instant::now();
    for i in 0..ops {
        let mut b = f.alloc_dma_buffer(4096);
        b.as_bytes_mut().fill(i as u8 ^ fill);
        let s = Instant::now();
        write(f.clone(), b, i * 4096).await?;
        h.saturating_record(s.elapsed().as_nanos() as u64);
    }
    Ok((h, ops as f64 / start.elapsed().as_secs_f64()))
}

/// Bytes of the 4 KiB pass at most (~1 s at 300 MB/s).
const SMALL_BLOCK_BYTES: u64 = 256 << 20;

async fn open(path: &Path, size: u64) -> Result<Rc<DmaFile>, String> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .dma_open(path)
        .await
        .map_err(|e| e.to_string())?;
    f.pre_allocate(size, false).await.map_err(|e| e.to_string())?;
    Ok(Rc::new(f))
}

async fn run(path: &Path, total: u64, ops: u64) -> Result<DeviceResult, String> {
    // Make glommio's poll-ring probe meaningful (see aof_engine's start-up notes).
    std::fs::write(path, vec![1u8; 4096]).map_err(|e| e.to_string())?;
    drop(DmaFile::open(path).await.map_err(|e| e.to_string())?);
    std::fs::remove_file(path).map_err(|e| e.to_string())?;
    let mut seq = Vec::new();
    for &bs in &[4096usize, 65536, 1 << 20] {
        // A pass must last long enough to pass the device's ramp-up: 64 MiB passes measured
        // 2038-2183 MB/s over written blocks where 1 GiB passes measured 2813-3286 on this
        // disk, alternating. 4 KiB writes are IOPS-bound and reach their rate sooner.
        let total = if bs == 4096 {
            total.min(SMALL_BLOCK_BYTES)
        } else {
            total
        };
        let f = open(path, total).await?;
        seq.push(seq_pass(&f, bs, total, false).await?);
        if bs == 1 << 20 {
            // The same file again: every block now holds data, so no write is a first one. This
            // is the device's own limit; the first pass is what writes into new segments cost.
            seq.push(seq_pass(&f, bs, total, true).await?);
        }
        let _ = f.close_rc().await;
        let _ = std::fs::remove_file(path);
    }
    let f = open(path, ops * 4096 + 4096).await?;
    let (w, _) = depth_one(&f, ops, 0, |f, b, pos| async move {
        f.write_at(b, pos).await.map_err(|e| e.to_string())?;
        Ok(())
    })
    .await?;
    let (ws, rate) = depth_one(&f, ops, 0, |f, b, pos| async move {
        f.write_at(b, pos).await.map_err(|e| e.to_string())?;
        f.fdatasync().await.map_err(|e| e.to_string())
    })
    .await?;
    // A file system that refuses the flag (the engine then does without it) leaves this
    // row out instead of failing the whole measurement.
    let wd = depth_one(&f, ops, 0xFF, |f, b, pos| async move {
        f.write_rc_at_dsync(Rc::new(b), pos).await.map_err(|e| e.to_string())?;
        Ok(())
    })
    .await
    .map_err(|e| eprintln!("aof-perf: warning: RWF_DSYNC writes not measured: {e}"))
    .ok()
    .map(|(h, _)| h);
    let _ = f.close_rc().await;
    Ok(DeviceResult {
        seq_write: seq,
        write_4k_latency: Latency::from_hist(&w),
        write_fdatasync_4k_latency: Latency::from_hist(&ws),
        fdatasyncs_per_s: rate,
        write_dsync_4k_latency: wd.as_ref().map(Latency::from_hist),
    })
}

/// One sequential pass over `total` bytes of `f` in `bs`-byte O_DIRECT writes, 16 in flight.
async fn seq_pass(f: &Rc<DmaFile>, bs: usize, total: u64, overwrite: bool) -> Result<Bandwidth, String> {
    let depth = 16;
    let next = Rc::new(Cell::new(0u64));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..depth {
        let (f, next) = (f.clone(), next.clone());
        tasks.push(glommio::spawn_local(async move {
            loop {
                let pos = next.get();
                if pos + bs as u64 > total {
                    return Ok::<(), String>(());
                }
                next.set(pos + bs as u64);
                let mut b = f.alloc_dma_buffer(bs);
                b.as_bytes_mut().fill(0x5A);
                f.write_at(b, pos).await.map_err(|e| e.to_string())?;
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    f.fdatasync().await.map_err(|e| e.to_string())?;
    let secs = start.elapsed().as_secs_f64();
    Ok(Bandwidth {
        block_bytes: bs,
        depth,
        overwrite,
        mb_per_s: total as f64 / secs / 1e6,
        iops: (total / bs as u64) as f64 / secs,
    })
}
