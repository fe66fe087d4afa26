//! `FileStore`: objects as files under a directory (`file://DIR`), for demos and first runs
//! without an S3 server. Same contract as S3: whole objects appear atomically (temp, fsync,
//! rename), the crc32c travels with the object (a `<key>.meta` sidecar written *before* the
//! object, so a visible object always has its checksum), whole reads are verified.

use super::localfile::{sync_dir, write_atomic, AtomicFile, TMP_MARKER};
use super::{crc_from_meta, crc_to_meta, ObjectMeta, ObjectStore, PendingUpload, PutInfo};
use crate::error::StoreError;
use crate::failure::FailureKind;
use crate::metrics::{Metrics, Op};
use crate::pace::Pacer;
use bytes::Bytes;
use std::io::{self, SeekFrom};
use std::ops::Range;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// Suffix of the metadata sidecar.
const META_SUFFIX: &str = ".meta";
/// Copy buffer: large enough that per-call overhead vanishes, small enough to not matter.
const COPY_CHUNK_BYTES: usize = 1 << 20;

#[derive(Clone)]
pub struct FileStore {
    root: PathBuf,
    metrics: Arc<Metrics>,
    /// Uploads (copies in) are paced like the S3 store's; see `crate::pace`.
    pacer: Option<Arc<Pacer>>,
}

impl FileStore {
    pub fn new(root: impl Into<PathBuf>, metrics: Arc<Metrics>) -> FileStore {
        FileStore {
            root: root.into(),
            metrics,
            pacer: None,
        }
    }

    /// Paces uploads (`transfer.upload_bytes_per_sec`); `None` leaves them unpaced.
    pub fn paced(mut self, pacer: Option<Arc<Pacer>>) -> FileStore {
        self.pacer = pacer;
        self
    }

    pub fn pacer(&self) -> Option<&Arc<Pacer>> {
        self.pacer.as_ref()
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The object's path; keys are relative and may not climb out of the root.
    fn path(&self, op: Op, key: &str) -> Result<PathBuf, StoreError> {
        let rel = Path::new(key);
        let ok = !key.is_empty()
            && !key.contains(TMP_MARKER)
            && !key.ends_with(META_SUFFIX)
            && rel.components().all(|c| matches!(c, Component::Normal(_)));
        if !ok {
            return Err(StoreError::new(
                op,
                key,
                FailureKind::Client,
                "invalid key for a file store",
            ));
        }
        Ok(self.root.join(rel))
    }

    fn io_err(op: Op, key: &str, what: &str, path: &Path, e: io::Error) -> StoreError {
        if e.kind() == io::ErrorKind::NotFound && matches!(op, Op::Get | Op::GetRange | Op::Head) {
            return StoreError::new(
                op,
                key,
                FailureKind::NotFound,
                format!("{} does not exist", path.display()),
            );
        }
        StoreError::local_io(op, key, what, path, e)
    }

    /// Records the operation's metrics around `f`.
    async fn timed<T>(
        &self,
        op: Op,
        f: impl std::future::Future<Output = Result<(T, u64), StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let r = f.await;
        match &r {
            Ok((_, bytes)) => self.metrics.op_done(op, true, *bytes, started.elapsed()),
            Err(e) => {
                self.metrics.attempt_failed(op, e.kind);
                self.metrics.op_done(op, false, 0, started.elapsed());
            }
        }
        r.map(|(v, _)| v)
    }

    async fn read_meta(&self, op: Op, key: &str, path: &Path) -> Result<ObjectMeta, StoreError> {
        let size = tokio::fs::metadata(path)
            .await
            .map_err(|e| Self::io_err(op, key, "stat", path, e))?
            .len();
        let meta_path = sidecar(path);
        let text = tokio::fs::read_to_string(&meta_path)
            .await
            .map_err(|e| Self::io_err(op, key, "read", &meta_path, e))?;
        let crc32c = text.trim().strip_prefix("crc32c=").and_then(crc_from_meta);
        Ok(ObjectMeta {
            size,
            etag: crc32c.map(crc_to_meta),
            crc32c,
        })
    }

    async fn copy_in(&self, key: &str, src: &Path, dest: &Path, crc32c: u32) -> Result<(PutInfo, u64), StoreError> {
        let op = Op::Put;
        let mut input = tokio::fs::File::open(src)
            .await
            .map_err(|e| Self::io_err(op, key, "open", src, e))?;
        write_atomic(&sidecar(dest), format!("crc32c={}\n", crc_to_meta(crc32c)).as_bytes())
            .await
            .map_err(|e| Self::io_err(op, key, "write", &sidecar(dest), e))?;
        let mut out = AtomicFile::create(dest)
            .await
            .map_err(|e| Self::io_err(op, key, "create", dest, e))?;
        Self::copy(&mut input, &mut out, self.pacer.as_deref(), (op, key), src, dest).await?;
        let (_, size) = out.crc_len();
        out.commit()
            .await
            .map_err(|e| Self::io_err(op, key, "commit", dest, e))?;
        let info = PutInfo {
            size,
            etag: Some(crc_to_meta(crc32c)),
            crc32c,
            multipart: false,
        };
        Ok((info, size))
    }

    /// Copies `input` (the file at `from`) into `out` (being written to `to`) in chunks, each
    /// released by `pacer` if there is one.
    async fn copy(
        input: &mut tokio::fs::File,
        out: &mut AtomicFile,
        pacer: Option<&Pacer>,
        (op, key): (Op, &str),
        from: &Path,
        to: &Path,
    ) -> Result<(), StoreError> {
        let chunk = if pacer.is_some() {
            crate::pace::CHUNK_BYTES
        } else {
            COPY_CHUNK_BYTES
        };
        let mut buf = vec![0u8; chunk];
        loop {
            let n = input
                .read(&mut buf)
                .await
                .map_err(|e| Self::io_err(op, key, "read", from, e))?;
            if n == 0 {
                return Ok(());
            }
            if let Some(p) = pacer {
                p.take(n as u64).await;
            }
            out.write(&buf[..n])
                .await
                .map_err(|e| Self::io_err(op, key, "write", to, e))?;
        }
    }

    /// Streams the object into `dest` (atomically), verifying the crc before the rename.
    async fn copy_out(&self, key: &str, path: &Path, dest: &Path) -> Result<(ObjectMeta, u64), StoreError> {
        let op = Op::Get;
        let meta = self.read_meta(op, key, path).await?;
        let mut input = tokio::fs::File::open(path)
            .await
            .map_err(|e| Self::io_err(op, key, "open", path, e))?;
        let mut out = AtomicFile::create(dest)
            .await
            .map_err(|e| Self::io_err(op, key, "create", dest, e))?;
        Self::copy(&mut input, &mut out, None, (op, key), path, dest).await?;
        let (crc, len) = out.crc_len();
        match meta.crc32c {
            Some(expected) if expected == crc => {}
            Some(expected) => return Err(StoreError::corrupt(op, key, expected, crc, len)),
            None => {
                return Err(StoreError::new(
                    op,
                    key,
                    FailureKind::Corrupt,
                    "object has no crc32c metadata",
                ))
            }
        }
        out.commit()
            .await
            .map_err(|e| Self::io_err(op, key, "commit", dest, e))?;
        Ok((ObjectMeta { size: len, ..meta }, len))
    }

    async fn read_range(&self, key: &str, path: &Path, range: Range<u64>) -> Result<(Bytes, u64), StoreError> {
        let op = Op::GetRange;
        let mut f = tokio::fs::File::open(path)
            .await
            .map_err(|e| Self::io_err(op, key, "open", path, e))?;
        let size = f
            .metadata()
            .await
            .map_err(|e| Self::io_err(op, key, "stat", path, e))?
            .len();
        let (start, end) = (range.start.min(size), range.end.min(size));
        f.seek(SeekFrom::Start(start))
            .await
            .map_err(|e| Self::io_err(op, key, "seek", path, e))?;
        let mut buf = vec![0u8; end.saturating_sub(start) as usize];
        f.read_exact(&mut buf)
            .await
            .map_err(|e| Self::io_err(op, key, "read", path, e))?;
        let n = buf.len() as u64;
        Ok((Bytes::from(buf), n))
    }

    async fn read_verified(&self, key: &str, path: &Path) -> Result<(Bytes, u64), StoreError> {
        let meta = self.read_meta(Op::Get, key, path).await?;
        let data = tokio::fs::read(path)
            .await
            .map_err(|e| Self::io_err(Op::Get, key, "read", path, e))?;
        verify(Op::Get, key, meta.crc32c, &data)?;
        let n = data.len() as u64;
        Ok((Bytes::from(data), n))
    }
}

/// Checks `data` against the recorded crc (a missing crc is corruption: we always write one).
pub(crate) fn verify(op: Op, key: &str, recorded: Option<u32>, data: &[u8]) -> Result<(), StoreError> {
    let found = crc32c::crc32c(data);
    match recorded {
        Some(expected) if expected == found => Ok(()),
        Some(expected) => Err(StoreError::corrupt(op, key, expected, found, data.len() as u64)),
        None => Err(StoreError::new(
            op,
            key,
            FailureKind::Corrupt,
            "object has no crc32c metadata",
        )),
    }
}

fn sidecar(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(META_SUFFIX);
    PathBuf::from(s)
}

impl ObjectStore for FileStore {
    async fn put_file(&self, key: &str, path: &Path, crc32c: u32) -> Result<PutInfo, StoreError> {
        let dest = self.path(Op::Put, key)?;
        self.timed(Op::Put, self.copy_in(key, path, &dest, crc32c)).await
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let path = self.path(Op::Get, key)?;
        self.timed(Op::Get, self.read_verified(key, &path)).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        let path = self.path(Op::GetRange, key)?;
        self.timed(Op::GetRange, self.read_range(key, &path, range)).await
    }

    async fn download_to_file(&self, key: &str, dest: &Path) -> Result<ObjectMeta, StoreError> {
        let path = self.path(Op::Get, key)?;
        self.timed(Op::Get, self.copy_out(key, &path, dest)).await
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        let path = self.path(Op::Head, key)?;
        self.timed(Op::Head, async { Ok((self.read_meta(Op::Head, key, &path).await?, 0)) })
            .await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path(Op::Delete, key)?;
        self.timed(Op::Delete, async {
            // Object first, sidecar second: a crash in between leaves an orphan sidecar, never
            // an object without its checksum.
            for p in [path.clone(), sidecar(&path)] {
                match tokio::fs::remove_file(&p).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Self::io_err(Op::Delete, key, "remove", &p, e)),
                }
            }
            let dir = path.parent().unwrap_or(&self.root);
            sync_dir(dir)
                .await
                .map_err(|e| Self::io_err(Op::Delete, key, "fsync", dir, e))?;
            Ok(((), 0))
        })
        .await
    }

    async fn list_keys(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let root = self.root.clone();
        let prefix = prefix.trim_matches('/').to_string();
        let found = tokio::task::spawn_blocking(move || find_objects(&root, &prefix))
            .await
            .map_err(|e| StoreError::new(Op::List, prefix_key(), FailureKind::LocalIo, e.to_string()))?;
        found.map_err(|e| StoreError::local_io(Op::List, prefix_key(), "walk", &self.root, e))
    }

    async fn list_pending_uploads(&self, prefix: &str, older_than: Duration) -> Result<Vec<PendingUpload>, StoreError> {
        let root = self.root.clone();
        let prefix = prefix.trim_matches('/').to_string();
        let cutoff = SystemTime::now() - older_than;
        let found = tokio::task::spawn_blocking(move || find_temps(&root, &prefix, cutoff))
            .await
            .map_err(|e| StoreError::new(Op::ListMultipart, prefix_key(), FailureKind::LocalIo, e.to_string()))?;
        found.map_err(|e| StoreError::local_io(Op::ListMultipart, prefix_key(), "walk", &self.root, e))
    }

    async fn abort_upload(&self, upload: &PendingUpload) -> Result<(), StoreError> {
        let tmp = self.root.join(&upload.upload_id);
        match tokio::fs::remove_file(&tmp).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::local_io(Op::AbortMultipart, &upload.key, "remove", &tmp, e)),
        }
    }
}

fn prefix_key() -> &'static str {
    "(prefix)"
}

/// Every file under `root/prefix` (an empty prefix: the whole root) and its subdirectories,
/// calling `f` with its path and metadata; a missing directory holds nothing.
fn walk(root: &Path, prefix: &str, mut f: impl FnMut(&Path, &std::fs::Metadata)) -> io::Result<()> {
    let mut stack = vec![if prefix.is_empty() {
        root.to_path_buf()
    } else {
        root.join(prefix)
    }];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                f(&entry.path(), &meta);
            }
        }
    }
    Ok(())
}

/// Keys of the objects under `root/prefix`: every file but sidecars and temp files.
fn find_objects(root: &Path, prefix: &str) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    walk(root, prefix, |path, _| {
        let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
        if name.contains(TMP_MARKER) || name.ends_with(META_SUFFIX) {
            return;
        }
        let rel = path.strip_prefix(root).unwrap_or(path);
        out.push(rel.to_string_lossy().into_owned());
    })?;
    Ok(out)
}

/// Temp files (left by a crash mid-write) under `root/prefix`, older than `cutoff`. The
/// "upload id" is the temp file's path relative to the root.
fn find_temps(root: &Path, prefix: &str, cutoff: SystemTime) -> io::Result<Vec<PendingUpload>> {
    let mut out = Vec::new();
    walk(root, prefix, |path, meta| {
        let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
        let Some((object, _)) = name.split_once(TMP_MARKER) else {
            return;
        };
        let initiated = meta.modified().ok();
        if initiated.is_some_and(|t| t > cutoff) {
            return;
        }
        let rel = path.strip_prefix(root).unwrap_or(path);
        out.push(PendingUpload {
            key: rel.with_file_name(object).to_string_lossy().into_owned(),
            upload_id: rel.to_string_lossy().into_owned(),
            initiated,
        });
    })?;
    Ok(out)
}
