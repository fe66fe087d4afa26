//! Object stores: where Tier2 objects live.
//!
//! [`ObjectStore`] is the interface the bridge's work loop uses; [`FileStore`] (a local
//! directory, the embedded default) and [`S3Store`] (any S3-compatible service) implement it,
//! and [`AnyStore`] picks one from the config at run time.
//!
//! Integrity contract: the uploader passes the content's crc32c; it is stored with the object
//! (S3 user metadata `x-amz-meta-crc32c`, a sidecar file for `FileStore`) and every *whole*
//! download verifies it. A ranged read returns raw bytes: its caller verifies them against the
//! per-frame checksums of the segment format, which is the only checksum that covers a slice.

mod file;
mod localfile;
mod s3;

pub use file::FileStore;
pub use s3::S3Store;

use crate::error::StoreError;
use bytes::Bytes;
use std::future::Future;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// User-metadata name of the content crc32c (sent as `x-amz-meta-crc32c`), 8 lower-case hex.
pub const META_CRC32C: &str = "crc32c";

/// What HEAD says about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub size: u64,
    /// The store's ETag, quotes stripped (`None` if the store has none).
    pub etag: Option<String>,
    /// The crc32c recorded at upload (`None` if the object has no such metadata).
    pub crc32c: Option<u32>,
}

/// A completed upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutInfo {
    pub size: u64,
    pub etag: Option<String>,
    pub crc32c: u32,
    /// Whether it went up as a multipart upload.
    pub multipart: bool,
}

/// An upload that was started and neither completed nor aborted (e.g. its process died).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingUpload {
    pub key: String,
    pub upload_id: String,
    pub initiated: Option<SystemTime>,
}

/// The operations the bridge needs from an object store. Futures are `Send` so transfers can
/// run as tokio tasks.
pub trait ObjectStore: Send + Sync {
    /// Uploads the file at `path` under `key`, recording `crc32c` (the caller's checksum of the
    /// content) with it. Either the whole object becomes visible or none of it does.
    fn put_file(&self, key: &str, path: &Path, crc32c: u32)
        -> impl Future<Output = Result<PutInfo, StoreError>> + Send;

    /// The whole object, verified against its recorded crc32c.
    fn get(&self, key: &str) -> impl Future<Output = Result<Bytes, StoreError>> + Send;

    /// Bytes `range` of the object, unverified (see the module doc). A range reaching past the
    /// end is cut at the end.
    fn get_range(&self, key: &str, range: Range<u64>) -> impl Future<Output = Result<Bytes, StoreError>> + Send;

    /// Downloads the whole object to `dest` (temp file, fsync, rename: `dest` is never
    /// partial), verified against its recorded crc32c.
    fn download_to_file(&self, key: &str, dest: &Path) -> impl Future<Output = Result<ObjectMeta, StoreError>> + Send;

    fn head(&self, key: &str) -> impl Future<Output = Result<ObjectMeta, StoreError>> + Send;

    /// Deletes `key`; deleting an absent object succeeds (retention may repeat itself).
    fn delete(&self, key: &str) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Keys of the whole objects under the folder `prefix` (keys that start with `prefix/`),
    /// in no particular order. Unfinished uploads are not objects and are not listed.
    fn list_keys(&self, prefix: &str) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// Unfinished uploads under `prefix` started more than `older_than` ago.
    fn list_pending_uploads(
        &self,
        prefix: &str,
        older_than: Duration,
    ) -> impl Future<Output = Result<Vec<PendingUpload>, StoreError>> + Send;

    fn abort_upload(&self, upload: &PendingUpload) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Aborts every unfinished upload under `prefix` older than `older_than`; returns how many.
/// Run at start-up (a crashed bridge leaves its multipart uploads behind) and periodically.
pub async fn abort_stale_uploads<S: ObjectStore>(
    store: &S,
    prefix: &str,
    older_than: Duration,
) -> Result<usize, StoreError> {
    let pending = store.list_pending_uploads(prefix, older_than).await?;
    for upload in &pending {
        tracing::info!(key = %upload.key, upload_id = %upload.upload_id, "aborting stale upload");
        store.abort_upload(upload).await?;
    }
    Ok(pending.len())
}

/// crc32c as stored in metadata.
pub fn crc_to_meta(crc: u32) -> String {
    format!("{crc:08x}")
}

/// Parses a metadata crc32c; `None` if malformed.
pub fn crc_from_meta(s: &str) -> Option<u32> {
    (s.len() == 8).then(|| u32::from_str_radix(s, 16).ok()).flatten()
}

/// A store chosen at run time from the config.
#[derive(Clone)]
pub enum AnyStore {
    File(FileStore),
    S3(S3Store),
}

impl AnyStore {
    /// The pacer of uploads, if `transfer.upload_bytes_per_sec` is set.
    pub fn upload_pacer(&self) -> Option<&Arc<crate::pace::Pacer>> {
        match self {
            AnyStore::File(s) => s.pacer(),
            AnyStore::S3(s) => s.pacer(),
        }
    }
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            AnyStore::File($s) => $e,
            AnyStore::S3($s) => $e,
        }
    };
}

impl ObjectStore for AnyStore {
    async fn put_file(&self, key: &str, path: &Path, crc32c: u32) -> Result<PutInfo, StoreError> {
        dispatch!(self, s => s.put_file(key, path, crc32c).await)
    }
    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        dispatch!(self, s => s.get(key).await)
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        dispatch!(self, s => s.get_range(key, range).await)
    }
    async fn download_to_file(&self, key: &str, dest: &Path) -> Result<ObjectMeta, StoreError> {
        dispatch!(self, s => s.download_to_file(key, dest).await)
    }
    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        dispatch!(self, s => s.head(key).await)
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        dispatch!(self, s => s.delete(key).await)
    }
    async fn list_keys(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        dispatch!(self, s => s.list_keys(prefix).await)
    }
    async fn list_pending_uploads(&self, prefix: &str, older_than: Duration) -> Result<Vec<PendingUpload>, StoreError> {
        dispatch!(self, s => s.list_pending_uploads(prefix, older_than).await)
    }
    async fn abort_upload(&self, upload: &PendingUpload) -> Result<(), StoreError> {
        dispatch!(self, s => s.abort_upload(upload).await)
    }
}
