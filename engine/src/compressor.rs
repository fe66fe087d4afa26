//! A shard's compression thread: zstd runs here, beside the shard, instead of on it.
//!
//! Recompressing a sealed segment is the one long CPU job a shard has. Run on the shard in
//! 16 KiB steps it still held the core for ~28 µs per step, ~11 % of the time at the default
//! pace, and that was most of a `Memory` producer's p99 at half load (measured with a poll
//! timer on every task: ~400 polls a second of 25-50 µs, all in the tiering task). On a host
//! with a CPU no shard is pinned to, each shard gets one of these threads there: the shard
//! hands over one frame's bytes at a time through a lock-free queue and awaits the result,
//! serving appends meanwhile. Where every CPU has a shard, a thread of its own would take its
//! time from a shard at the kernel's whim (milliseconds, not microseconds), so compression
//! stays on the shard in steps (`tier1::compress_frame`).
//!
//! The thread shares nothing with the shard but the queue and each job's reply channel; it
//! owns its zstd context. It parks when idle and is unparked by each job, so an idle shard
//! costs no CPU here.

use crossbeam_queue::ArrayQueue;
use futures_channel::oneshot;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Jobs waiting at once. The tiering task awaits each frame before sending the next, so one
/// would do; a few leave room without changing that.
const QUEUE: usize = 4;

/// One frame to compress: its bytes, the zstd level, and where the answer goes.
struct Job {
    src: Vec<u8>,
    level: i32,
    reply: oneshot::Sender<Result<Compressed, String>>,
}

/// A compressed frame and the crc32c of its compressed bytes (computed on the thread too).
pub struct Compressed {
    pub bytes: Vec<u8>,
    pub crc: u32,
}

struct Shared {
    jobs: ArrayQueue<Job>,
    closed: AtomicBool,
}

pub struct Compressor {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Compressor {
    /// Starts shard `shard`'s compression thread, allowed to run only on `cpus`.
    pub fn start(shard: usize, cpus: Vec<usize>) -> std::io::Result<Compressor> {
        let shared = Arc::new(Shared {
            jobs: ArrayQueue::new(QUEUE),
            closed: AtomicBool::new(false),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("aof-zstd-{shard}"))
            .spawn(move || {
                if let Err(e) = crate::iowq::pin_this_thread(&cpus) {
                    tracing::warn!(shard, ?cpus, error = %e, "compression thread runs unpinned");
                }
                work(&s);
            })?;
        Ok(Compressor {
            shared,
            thread: Some(thread),
        })
    }

    /// Compresses `src` into one zstd frame at `level`, on the thread. `Err` carries zstd's
    /// reason, or says the thread is gone (the caller then compresses on the shard).
    pub async fn compress(&self, src: Vec<u8>, level: i32) -> Result<Compressed, Refused> {
        let (tx, rx) = oneshot::channel();
        let job = Job { src, level, reply: tx };
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(Refused::Gone(job.src));
        }
        if let Err(job) = self.shared.jobs.push(job) {
            return Err(Refused::Gone(job.src));
        }
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
        match rx.await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(Refused::Zstd(e)),
            // The thread dropped the job unanswered: it stopped (closed, or killed by
            // something a panic guard cannot catch). The bytes went with it.
            Err(_) => Err(Refused::Lost),
        }
    }
}

/// Why the thread did not compress a frame.
pub enum Refused {
    /// The thread has stopped or its queue is full; the bytes are handed back.
    Gone(Vec<u8>),
    /// The thread stopped with the job in its queue.
    Lost,
    /// zstd failed, with its error name.
    Zstd(String),
}

impl Drop for Compressor {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            // The thread finishes at most the job in hand (one frame, well under a
            // millisecond) and sees `closed`.
            let _ = t.join();
        }
    }
}

fn work(s: &Shared) {
    let mut cctx = zstd_safe::CCtx::create();
    loop {
        while let Some(job) = s.jobs.pop() {
            // A panic must not end the thread: later jobs would then wait in the queue for
            // ever. It fails this frame (the segment stays raw and is retried later).
            let run = std::panic::AssertUnwindSafe(|| compress_one(&mut cctx, &job.src, job.level));
            let out = std::panic::catch_unwind(run).unwrap_or_else(|_| {
                cctx = zstd_safe::CCtx::create();
                Err("the compression thread panicked on this frame".to_string())
            });
            // The shard may have stopped waiting (closing): nothing to do then.
            let _ = job.reply.send(out);
        }
        if s.closed.load(Ordering::Acquire) {
            // Jobs left behind are dropped: their senders go, and any waiter sees `Lost`.
            return;
        }
        // A job pushed between the pop above and this park unparked us first, and a pending
        // unpark makes `park` return at once: no job waits for a later one.
        std::thread::park();
    }
}

/// A level no profile uses, on which tests make `compress_one` panic.
#[cfg(test)]
const PANIC_LEVEL: i32 = i32::MIN;

fn compress_one(cctx: &mut zstd_safe::CCtx<'static>, src: &[u8], level: i32) -> Result<Compressed, String> {
    #[cfg(test)]
    assert_ne!(level, PANIC_LEVEL, "test: a panic while compressing");
    let name = |code| zstd_safe::get_error_name(code).to_string();
    cctx.reset(zstd_safe::ResetDirective::SessionAndParameters)
        .map_err(name)?;
    cctx.set_parameter(zstd_safe::CParameter::CompressionLevel(level))
        .map_err(name)?;
    let mut bytes: Vec<u8> = Vec::with_capacity(zstd_safe::compress_bound(src.len()));
    cctx.compress2(&mut bytes, src).map_err(name)?;
    let crc = crc32c::crc32c(&bytes);
    Ok(Compressed { bytes, crc })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f`'s future on an executor thread of its own, as a shard does.
    fn run<T, F>(f: impl FnOnce() -> F + Send + 'static) -> T
    where
        T: Send + 'static,
        F: std::future::Future<Output = T> + 'static,
    {
        glommio::LocalExecutorBuilder::default()
            .spawn(f)
            .expect("executor")
            .join()
            .expect("join")
    }

    #[test]
    fn frames_compressed_on_the_thread_decode_to_their_input() {
        let cpus = crate::engine::allowed_cpus();
        let out = run(move || async move {
            let c = Compressor::start(0, cpus).expect("thread");
            let mut got = Vec::new();
            for i in 0..20u32 {
                let src: Vec<u8> = (0..(i as usize * 3001 + 1)).map(|k| (k as u32 / 7 + i) as u8).collect();
                let level = [1, 3, 9][i as usize % 3];
                match c.compress(src.clone(), level).await {
                    Ok(z) => got.push((src, z)),
                    Err(_) => panic!("frame {i} refused"),
                }
            }
            got
        });
        for (src, z) in out {
            assert_eq!(z.crc, crc32c::crc32c(&z.bytes));
            let mut back = Vec::with_capacity(src.len());
            zstd_safe::decompress(&mut back, &z.bytes).expect("a valid zstd frame");
            assert_eq!(back, src);
        }
    }

    #[test]
    fn a_panic_fails_its_frame_and_the_thread_goes_on() {
        let cpus = crate::engine::allowed_cpus();
        let r = run(move || async move {
            let c = Compressor::start(0, cpus).expect("thread");
            let failed = match c.compress(vec![1; 1000], PANIC_LEVEL).await {
                Err(Refused::Zstd(e)) => e.contains("panicked"),
                _ => false,
            };
            let next = c.compress(vec![2; 1000], 3).await;
            (failed, next.is_ok())
        });
        assert_eq!(r, (true, true));
    }

    #[test]
    fn a_stopped_thread_hands_the_bytes_back() {
        let cpus = crate::engine::allowed_cpus();
        let r = run(move || async move {
            let c = Compressor::start(0, cpus).expect("thread");
            c.shared.closed.store(true, Ordering::Release);
            match c.compress(vec![7; 100], 3).await {
                Err(Refused::Gone(b)) => b == vec![7; 100],
                _ => false,
            }
        });
        assert!(r);
    }
}
