//! Upload pacing: a cap on the bytes per second the bridge sends, shared by every upload.
//!
//! Why: the bridge runs on the shards' host. Everything it sends is first read from the shards'
//! disk, and when the object store is on the same host (a gateway in a test rig, an appliance
//! next to the service) also written to it again. At full speed that traffic sits in front of
//! the shards' fdatasyncs and multiplies their p99 (`aof-perf bridge` measures it). A pace keeps
//! the bridge a background citizen; a backlog then drains at the paced rate instead.
//!
//! The pace is applied per chunk inside a transfer (a throttled request body), not per object:
//! pacing whole objects would still send each 8 MiB part at line rate, which is exactly the
//! burst that hurts. Only uploads are paced: downloads serve a reader that is waiting.

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;

/// Bytes read and sent per paced step. Small enough that one step is a few milliseconds of disk
/// at any sane pace; large enough that the per-step overhead (a read, a channel hop) vanishes.
pub const CHUNK_BYTES: usize = 128 * 1024;

/// A token bucket with no burst: byte `n` of all uploads may leave no earlier than
/// `n / bytes_per_sec` after the pacer was last idle. Lock-free (one CAS per chunk).
#[derive(Debug)]
pub struct Pacer {
    bytes_per_sec: u64,
    origin: Instant,
    /// Nanoseconds after `origin` at which the next chunk may go.
    next_ns: AtomicU64,
    /// Bytes released so far (reserved; a chunk is sent right after its wait).
    released: AtomicU64,
}

impl Pacer {
    /// `None` for 0 (unpaced).
    pub fn new(bytes_per_sec: u64) -> Option<Arc<Pacer>> {
        (bytes_per_sec > 0).then(|| {
            Arc::new(Pacer {
                bytes_per_sec,
                origin: Instant::now(),
                next_ns: AtomicU64::new(0),
                released: AtomicU64::new(0),
            })
        })
    }

    pub fn bytes_per_sec(&self) -> u64 {
        self.bytes_per_sec
    }

    /// Bytes released so far: what the paced uploads have sent or are sending, including
    /// uploads not finished yet.
    pub fn released_bytes(&self) -> u64 {
        self.released.load(Ordering::Relaxed)
    }

    /// Reserves `bytes` and returns how long the caller must wait before sending them.
    /// An idle pacer does not bank credit: the reservation starts now, not in the past.
    pub fn reserve(&self, bytes: u64) -> Duration {
        let cost = (bytes as u128 * 1_000_000_000 / self.bytes_per_sec as u128) as u64;
        self.released.fetch_add(bytes, Ordering::Relaxed);
        let now = self.origin.elapsed().as_nanos() as u64;
        let mut prev = self.next_ns.load(Ordering::Relaxed);
        loop {
            let start = prev.max(now);
            match self
                .next_ns
                .compare_exchange_weak(prev, start + cost, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Duration::from_nanos(start - now),
                Err(actual) => prev = actual,
            }
        }
    }

    /// Waits for the turn of `bytes`.
    pub async fn take(&self, bytes: u64) {
        let wait = self.reserve(bytes);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// A request body that streams `len` bytes of the file at `path` from `offset`, chunk by chunk.
/// A task reads ahead by at most two chunks; each chunk takes its turn from the pacer only when
/// the HTTP client asks for it, so an attempt that fails before sending (a refused connection)
/// costs the pace nothing. Dropping the body (a cancelled or timed-out request) ends the task.
pub struct PacedFile {
    pacer: Arc<Pacer>,
    rx: mpsc::Receiver<io::Result<Bytes>>,
    /// A chunk that has its turn reserved and waits for it.
    held: Option<(Bytes, Pin<Box<tokio::time::Sleep>>)>,
    remaining: u64,
}

impl PacedFile {
    pub fn open(pacer: Arc<Pacer>, path: PathBuf, offset: u64, len: u64) -> PacedFile {
        let (tx, rx) = mpsc::channel(2);
        tokio::spawn(async move {
            if let Err(e) = feed(&path, offset, len, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        PacedFile {
            pacer,
            rx,
            held: None,
            remaining: len,
        }
    }
}

async fn feed(path: &std::path::Path, offset: u64, len: u64, tx: &mpsc::Sender<io::Result<Bytes>>) -> io::Result<()> {
    let mut file = tokio::fs::File::open(path).await?;
    file.seek(io::SeekFrom::Start(offset)).await?;
    let mut left = len;
    while left > 0 {
        let n = left.min(CHUNK_BYTES as u64) as usize;
        let mut buf = BytesMut::zeroed(n);
        file.read_exact(&mut buf).await?;
        if tx.send(Ok(buf.freeze())).await.is_err() {
            return Ok(()); // the request was dropped
        }
        left -= n as u64;
    }
    Ok(())
}

impl Body for PacedFile {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        if this.held.is_none() {
            if this.remaining == 0 {
                return Poll::Ready(None);
            }
            let chunk = match this.rx.poll_recv(cx) {
                Poll::Ready(Some(Ok(chunk))) => chunk,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => {
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "paced reader stopped before the end of the range",
                    ))))
                }
                Poll::Pending => return Poll::Pending,
            };
            let wait = this.pacer.reserve(chunk.len() as u64);
            this.held = Some((chunk, Box::pin(tokio::time::sleep(wait))));
        }
        let (_, sleep) = this.held.as_mut().expect("held just above");
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        let (chunk, _) = this.held.take().expect("held just above");
        debug_assert!(chunk.len() as u64 <= this.remaining, "feed sends exactly len bytes");
        this.remaining -= chunk.len() as u64;
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[test]
    fn reservations_are_spaced_by_cost_and_idle_time_is_not_banked() {
        let p = Pacer::new(1_000_000).unwrap(); // 1 MB/s: 1000 bytes cost 1 ms
        assert!(Pacer::new(0).is_none());
        // A reservation's turn is fixed when it is made; the wait returned is measured from the
        // call, so a slow (descheduled) caller sees less. Bound each wait from both sides with
        // the time that passed since just before the first reservation: no sleep-based slack.
        let t0 = Instant::now();
        assert_eq!(p.reserve(1000), Duration::ZERO);
        let slack = Duration::from_micros(1); // nanosecond truncation of the pacer's clock
        for k in 1..=2u32 {
            let wait = p.reserve(1000);
            let passed = t0.elapsed();
            let turn = Duration::from_millis(k as u64);
            assert!(wait <= turn, "reservation {k}: {wait:?} > {turn:?}");
            assert!(
                wait + passed + slack >= turn,
                "reservation {k}: {wait:?} after {passed:?} comes before its turn at {turn:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(20));
        // Idle for longer than the backlog: no credit, and no debt.
        let t1 = Instant::now();
        assert_eq!(p.reserve(1000), Duration::ZERO);
        let next = p.reserve(1000);
        let passed = t1.elapsed();
        let turn = Duration::from_millis(1);
        assert!(
            next <= turn && next + passed + slack >= turn,
            "{next:?} after {passed:?}"
        );
        assert_eq!(p.released_bytes(), 5000);
    }

    #[tokio::test]
    async fn paced_body_streams_the_exact_range_at_the_pace() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..(3 * CHUNK_BYTES + 1000) as u32).map(|i| (i * 7) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        // 4 MB/s: chunks of 128 KiB, 128 KiB and 64 KiB; the third may go only after the first
        // two have had their 2 x 32.8 ms.
        let pacer = Pacer::new(4_000_000).unwrap();
        let (off, len) = (500u64, (2 * CHUNK_BYTES + CHUNK_BYTES / 2) as u64);
        let started = Instant::now();
        let body = PacedFile::open(pacer, path.clone(), off, len);
        assert_eq!(body.size_hint().exact(), Some(len));
        let got = body.collect().await.unwrap().to_bytes();
        assert_eq!(&got[..], &data[off as usize..(off + len) as usize]);
        assert!(
            started.elapsed() >= Duration::from_millis(65),
            "{:?}",
            started.elapsed()
        );

        // A body the client never reads (a request that failed before sending) takes no turn.
        let pacer = Pacer::new(4_000_000).unwrap();
        let unread = PacedFile::open(pacer.clone(), path.clone(), 0, len);
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(unread);
        assert_eq!(pacer.released_bytes(), 0);

        // A range past the end of the file is an error in the body, not a short body.
        let pacer = Pacer::new(1 << 30).unwrap();
        let body = PacedFile::open(pacer, path, data.len() as u64 - 10, 100);
        assert!(body.collect().await.is_err());
    }
}
