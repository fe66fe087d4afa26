//! The bridge's work loop: for every shard of a data directory, take requests off the shard's
//! request ring, run them as tokio tasks (at most `transfer.concurrency` at once per bridge),
//! and answer on the shard's reply ring.
//!
//! The rings carry notifications only: whatever a restart loses, the shards ask again for from
//! their manifests. Requests queued before the bridge started are served, because every
//! request is idempotent: an upload first asks the store whether an object with this exact key (which
//! names the content's crc32c) is already there, a download writes to a temp file and renames,
//! a delete of an absent object succeeds.

use crate::failure::FailureKind;
use crate::keys::SegmentId;
use crate::metrics::{Metrics, Queue};
use crate::ring::{open_ring, Body, Consumer, Direction, Message, Producer};
use crate::store::{AnyStore, ObjectStore};
use crate::StoreError;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch, Semaphore};

/// How often an idle request ring is looked at, and a full reply ring retried. It bounds the
/// added latency of a Tier2 point read (the rings carry no cross-process wake-up yet); a tokio
/// timer tick per shard per millisecond costs next to nothing.
const POLL: Duration = Duration::from_millis(1);
/// How often the data directory is scanned for shards that appeared since.
const SHARD_SCAN: Duration = Duration::from_secs(1);
/// How often a shard's ring files are checked for having been replaced.
const RING_CHECK: Duration = Duration::from_secs(1);

#[derive(PartialEq, Eq)]
enum Served {
    Stopped,
    Replaced,
}

/// The file at `p` as (device, inode), `None` if it is gone.
fn file_identity(p: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

/// What the work loop needs; cheap to clone into tasks.
#[derive(Clone)]
pub struct Worker {
    pub root: PathBuf,
    pub store: AnyStore,
    pub prefix: String,
    pub ring_capacity: u64,
    pub metrics: Arc<Metrics>,
    pub transfers: Arc<Semaphore>,
    /// Requests taken and not yet answered, per kind (upload, download, delete).
    pub depth: Arc<[AtomicI64; 3]>,
    /// One upload per object key at a time: a shard that asks again while a slow (paced, or
    /// retrying) upload is under way gets the first one's outcome (its HEAD then finds the
    /// object) instead of a second copy of the same bytes on the wire.
    uploading: Arc<std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

fn queue_of(b: &Body) -> Option<(usize, Queue)> {
    match b {
        Body::Upload { .. } => Some((0, Queue::Upload)),
        Body::Download { .. } => Some((1, Queue::Download)),
        Body::Delete { .. } => Some((2, Queue::Delete)),
        _ => None,
    }
}

/// The Tier1 file of `seg` on shard `shard` (the engine's naming, from the engine).
fn tier1_path(root: &Path, shard: u32, seg: &SegmentId) -> PathBuf {
    aof_engine::tier2::tier1_path(root, shard as usize, seg.log_id, seg.base)
}

impl Worker {
    /// A worker for the data directory `root` (the engine's `Config::root`). `ring_capacity`
    /// must equal the engine's `Tier2Config::ring_capacity`.
    pub fn new(
        root: PathBuf,
        store: AnyStore,
        cfg: &crate::BridgeConfig,
        ring_capacity: u64,
        metrics: Arc<Metrics>,
    ) -> Worker {
        Worker {
            root,
            store,
            prefix: cfg.prefix.clone(),
            ring_capacity,
            metrics,
            transfers: Arc::new(Semaphore::new(cfg.transfer.concurrency.max(1))),
            depth: Arc::new(Default::default()),
            uploading: Arc::default(),
        }
    }

    /// Serves every shard directory under `root` until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut serving = std::collections::BTreeSet::new();
        let mut tasks = Vec::new();
        loop {
            for shard in shard_dirs(&self.root) {
                if serving.insert(shard) {
                    let w = self.clone();
                    let stop = stop.clone();
                    tasks.push(tokio::spawn(async move { w.serve_shard(shard, stop).await }));
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(SHARD_SCAN) => {}
                _ = stop.changed() => break,
            }
            if *stop.borrow() {
                break;
            }
        }
        for t in tasks {
            let _ = t.await;
        }
    }

    async fn serve_shard(self, shard: u32, stop: watch::Receiver<bool>) {
        // Ring files replaced while this bridge runs (removed while the engine was down, as
        // its own error message suggests for damaged ones, and made anew by the engine) are
        // opened again: served through the old, unlinked files, the shard would never be
        // answered.
        while self.clone().serve_rings(shard, stop.clone()).await == Served::Replaced {
            tracing::info!(shard, "the shard's ring files were replaced; opening them again");
        }
    }

    async fn serve_rings(self, shard: u32, mut stop: watch::Receiver<bool>) -> Served {
        let dir = self.root.join(format!("shard-{shard:03}"));
        let open = |d| open_ring(&dir, shard, d, self.ring_capacity);
        let (req, rep) = match (open(Direction::Requests), open(Direction::Replies)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(shard, error = %e, "cannot open the shard's rings; not serving it");
                return Served::Stopped;
            }
        };
        let paths = [req.path().to_path_buf(), rep.path().to_path_buf()];
        let opened = paths.clone().map(|p| file_identity(&p));
        let mut checked = std::time::Instant::now();
        // Requests queued before this bridge started are served, not dropped: every request is
        // idempotent, and dropping them would leave the shard waiting for its next rescan.
        let mut req = Consumer::new(req);
        let mut rep = Producer::new(rep);
        let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
        let mut pending_reply: Option<Message> = None;
        loop {
            if *stop.borrow() {
                return Served::Stopped;
            }
            if checked.elapsed() >= RING_CHECK {
                checked = std::time::Instant::now();
                if paths.clone().map(|p| file_identity(&p)) != opened {
                    return Served::Replaced;
                }
            }
            let mut busy = false;
            // Answers first: they free the shard's waiters and the reply ring.
            loop {
                let m = match pending_reply.take() {
                    Some(m) => m,
                    None => match rx.try_recv() {
                        Ok(m) => m,
                        Err(_) => break,
                    },
                };
                match rep.push(&m) {
                    Ok(Ok(())) => busy = true,
                    Ok(Err(_full)) => {
                        pending_reply = Some(m);
                        break;
                    }
                    Err(e) => tracing::warn!(shard, error = %e, "reply not sent"),
                }
            }
            match req.pop() {
                Ok(Some(m)) => {
                    busy = true;
                    let q = queue_of(&m.body);
                    if let Some((i, q)) = q {
                        let d = self.depth[i].fetch_add(1, Ordering::Relaxed) + 1;
                        self.metrics.set_queue_depth(q, d);
                    }
                    let (w, tx) = (self.clone(), tx.clone());
                    let permit = self.transfers.clone().acquire_owned().await;
                    tokio::spawn(async move {
                        let _permit = permit;
                        let reply = w.handle(shard, m).await;
                        if let Some((i, q)) = q {
                            let d = w.depth[i].fetch_sub(1, Ordering::Relaxed) - 1;
                            w.metrics.set_queue_depth(q, d);
                        }
                        let _ = tx.send(reply);
                    });
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(shard, error = %e, "damaged request skipped; the shard asks again"),
            }
            if !busy {
                tokio::select! {
                    _ = tokio::time::sleep(POLL) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }

    /// Runs one request; always produces the reply.
    pub async fn handle(&self, shard: u32, m: Message) -> Message {
        let id = m.id;
        let (seg, result) = match m.body {
            Body::Upload { seg, .. } => (seg, self.upload(shard, &seg).await),
            Body::Download { seg, range: None } => (seg, self.download(shard, &seg).await),
            Body::Download { seg, range: Some(r) } => (seg, self.download_range(shard, id, &seg, r).await),
            Body::Delete { seg } => (seg, self.delete(&seg).await.map(|()| (0, String::new()))),
            other => {
                tracing::warn!(?other, "a reply on the request ring");
                return Message {
                    id,
                    body: Body::Failed {
                        seg: SegmentId {
                            log_id: 0,
                            base: 0,
                            crc32c: 0,
                        },
                        kind: FailureKind::Client,
                        retryable: false,
                    },
                };
            }
        };
        let body = match result {
            Ok((size, etag)) => Body::Done { seg, size, etag },
            Err(e) => {
                tracing::warn!(shard, %seg, error = %e, "request failed");
                Body::Failed {
                    seg,
                    kind: e.kind,
                    retryable: e.retryable(),
                }
            }
        };
        Message { id, body }
    }

    async fn upload(&self, shard: u32, seg: &SegmentId) -> Result<(u64, String), StoreError> {
        let key = seg.key(&self.prefix);
        let lock = {
            let mut map = self.uploading.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(key.clone()).or_default().clone()
        };
        let held = lock.lock().await;
        let result = self.upload_once(shard, seg, &key).await;
        drop(held);
        let mut map = self.uploading.lock().unwrap_or_else(|p| p.into_inner());
        // The map's reference and ours: nobody else waits on this key.
        if Arc::strong_count(&lock) == 2 {
            map.remove(&key);
        }
        result
    }

    async fn upload_once(&self, shard: u32, seg: &SegmentId, key: &str) -> Result<(u64, String), StoreError> {
        // Idempotent: the key names the content, so an object already there is this upload.
        if let Ok(meta) = self.store.head(key).await {
            if meta.crc32c == Some(seg.crc32c) {
                return Ok((meta.size, meta.etag.unwrap_or_default()));
            }
        }
        let path = tier1_path(&self.root, shard, seg);
        let crc = file_crc(&path)
            .await
            .map_err(|e| StoreError::local_io(crate::Op::Put, key, "read", &path, e))?;
        if crc != seg.crc32c {
            // Damaged on local disk since it was written: never upload it as good.
            return Err(StoreError::corrupt(crate::Op::Put, key, seg.crc32c, crc, 0));
        }
        let put = self.store.put_file(key, &path, crc).await?;
        let etag = match put.etag {
            Some(e) if !e.is_empty() => e,
            // Some servers return no ETag from CompleteMultipartUpload; HEAD has it.
            _ => self.store.head(key).await?.etag.unwrap_or_default(),
        };
        Ok((put.size, etag))
    }

    async fn download(&self, shard: u32, seg: &SegmentId) -> Result<(u64, String), StoreError> {
        let key = seg.key(&self.prefix);
        let path = tier1_path(&self.root, shard, seg);
        let meta = self.store.download_to_file(&key, &path).await?;
        if meta.crc32c != Some(seg.crc32c) {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(StoreError::corrupt(
                crate::Op::Get,
                &key,
                seg.crc32c,
                meta.crc32c.unwrap_or(0),
                meta.size,
            ));
        }
        Ok((meta.size, meta.etag.unwrap_or_default()))
    }

    /// A byte range of the object (one frame, or the trailer and index, for a point read),
    /// written to `range_path` for the shard, which verifies it against its own checksums.
    async fn download_range(
        &self,
        shard: u32,
        request_id: u64,
        seg: &SegmentId,
        r: std::ops::Range<u64>,
    ) -> Result<(u64, String), StoreError> {
        let key = seg.key(&self.prefix);
        let bytes = self.store.get_range(&key, r.clone()).await?;
        let dest = aof_engine::tier2::range_path(&tier1_path(&self.root, shard, seg), &r, request_id);
        let mut tmp = dest.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let write = async {
            tokio::fs::write(&tmp, &bytes).await?;
            tokio::fs::rename(&tmp, &dest).await
        };
        write
            .await
            .map_err(|e| StoreError::local_io(crate::Op::Get, &key, "write", &dest, e))?;
        Ok((bytes.len() as u64, String::new()))
    }

    async fn delete(&self, seg: &SegmentId) -> Result<(), StoreError> {
        self.store.delete(&seg.key(&self.prefix)).await
    }
}

/// A [`Worker`] on tokio threads of its own inside this process (for tests, the perf harness,
/// and services that prefer one process): it serves until [`InProcess::stop`] or drop, which
/// wait for the requests under way to finish.
pub struct InProcess {
    rt: tokio::runtime::Runtime,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl InProcess {
    /// Starts `worker` on a runtime of `threads` worker threads.
    pub fn start(worker: Worker, threads: usize) -> std::io::Result<InProcess> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .enable_all()
            .build()?;
        let (stop, rx) = watch::channel(false);
        let task = rt.spawn(worker.run(rx));
        Ok(InProcess {
            rt,
            stop,
            task: Some(task),
        })
    }

    /// Stops serving and waits for the requests under way.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            let _ = self.rt.block_on(t);
        }
    }
}

/// The shard indexes of `root/shard-NNN` directories.
fn shard_dirs(root: &Path) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("shard-")?.parse().ok())
        .collect()
}

async fn file_crc(path: &Path) -> std::io::Result<u32> {
    use tokio::io::AsyncReadExt;
    let mut f = tokio::fs::File::open(path).await?;
    let mut buf = vec![0u8; 1 << 20];
    let mut crc = 0u32;
    loop {
        let n = f.read(&mut buf).await?;
        if n == 0 {
            return Ok(crc);
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
    }
}
