//! Uploads: one PUT below the multipart threshold, a multipart upload above it.
//!
//! A multipart upload is all-or-nothing from a reader's view (S3 shows the object only after
//! CompleteMultipartUpload). What can leak is the upload itself with its parts, which S3 keeps
//! (and bills) until aborted: so any failure after CreateMultipartUpload aborts the upload
//! (a cleanup call, not refused by the breaker), and `abort_stale_uploads` sweeps what a
//! crashed process, an abort that failed during an outage, or a caller that dropped the
//! upload future mid-way left behind.

use super::classify::{clean_etag, local_body_error, sdk_error};
use super::S3Store;
use crate::error::StoreError;
use crate::failure::FailureKind;
use crate::metrics::Op;
use crate::pace::PacedFile;
use crate::retry::Admission;
use crate::store::{crc_to_meta, PutInfo, META_CRC32C};
use aws_sdk_s3::primitives::{ByteStream, Length, SdkBody};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use std::path::{Path, PathBuf};
use tokio::task::JoinSet;

impl S3Store {
    pub(super) async fn upload_file(&self, key: &str, path: &Path, crc32c: u32) -> Result<PutInfo, StoreError> {
        let size = tokio::fs::metadata(path)
            .await
            .map_err(|e| StoreError::local_io(Op::Put, key, "stat", path, e))?
            .len();
        if size < self.transfer.multipart_threshold_bytes {
            return self.put_single(key, path, size, crc32c).await;
        }
        let upload_id = self.create_multipart(key, crc32c).await?;
        match self.finish_multipart(key, path, size, crc32c, &upload_id).await {
            Ok(info) => Ok(info),
            Err(e) => {
                if let Err(abort) = self.abort_multipart(key, &upload_id).await {
                    // Left for the stale-upload sweep; the upload's own error is what matters.
                    tracing::warn!(%abort, "could not abort failed multipart upload");
                }
                Err(e)
            }
        }
    }

    async fn put_single(&self, key: &str, path: &Path, size: u64, crc32c: u32) -> Result<PutInfo, StoreError> {
        let etag = self
            .res
            .call(Op::Put, key, Admission::Guarded, || async {
                let body = self.upload_body(Op::Put, key, path, 0, size).await?;
                let req = self
                    .client
                    .put_object()
                    .bucket(&self.bucket)
                    .key(key)
                    .content_length(size as i64);
                let out = req.metadata(META_CRC32C, crc_to_meta(crc32c)).body(body).send().await;
                let out = out.map_err(|e| sdk_error(Op::Put, key, e))?;
                Ok((clean_etag(out.e_tag()), size))
            })
            .await?;
        Ok(PutInfo {
            size,
            etag,
            crc32c,
            multipart: false,
        })
    }

    async fn create_multipart(&self, key: &str, crc32c: u32) -> Result<String, StoreError> {
        self.res
            .call(Op::CreateMultipart, key, Admission::Guarded, || async {
                let req = self.client.create_multipart_upload().bucket(&self.bucket).key(key);
                let out = req.metadata(META_CRC32C, crc_to_meta(crc32c)).send().await;
                let out = out.map_err(|e| sdk_error(Op::CreateMultipart, key, e))?;
                let id = out.upload_id().filter(|id| !id.is_empty()).map(String::from);
                let id =
                    id.ok_or_else(|| StoreError::new(Op::CreateMultipart, key, FailureKind::Server, "no upload id"))?;
                Ok((id, 0))
            })
            .await
    }

    /// Parts, complete, then HEAD: RGW answers CompleteMultipartUpload with an empty ETag, and
    /// HEAD also proves the object is whole (size and crc metadata as sent).
    async fn finish_multipart(
        &self,
        key: &str,
        path: &Path,
        size: u64,
        crc32c: u32,
        upload_id: &str,
    ) -> Result<PutInfo, StoreError> {
        let parts = self.upload_parts(key, path, size, upload_id).await?;
        let completed = CompletedMultipartUpload::builder().set_parts(Some(parts)).build();
        let done = self
            .res
            .call(Op::CompleteMultipart, key, Admission::Guarded, || async {
                let req = self.client.complete_multipart_upload().bucket(&self.bucket).key(key);
                let out = req
                    .upload_id(upload_id)
                    .multipart_upload(completed.clone())
                    .send()
                    .await;
                out.map_err(|e| sdk_error(Op::CompleteMultipart, key, e))?;
                Ok(((), size))
            })
            .await;
        match done {
            // A retry whose first attempt did complete finds no upload: HEAD below decides.
            Err(e) if e.kind == FailureKind::NotFound && e.attempts > 1 => {}
            other => other?,
        }
        let meta = self.head_object(key).await?;
        if meta.size != size || meta.crc32c != Some(crc32c) {
            let detail = format!(
                "after complete: size {} crc {:?}, sent size {size} crc {crc32c:08x}",
                meta.size, meta.crc32c
            );
            return Err(StoreError::new(
                Op::CompleteMultipart,
                key,
                FailureKind::Corrupt,
                detail,
            ));
        }
        Ok(PutInfo {
            size,
            etag: meta.etag,
            crc32c,
            multipart: true,
        })
    }

    /// Uploads every part, `part_concurrency` at a time, each streamed from its file range.
    async fn upload_parts(
        &self,
        key: &str,
        path: &Path,
        size: u64,
        upload_id: &str,
    ) -> Result<Vec<CompletedPart>, StoreError> {
        let part_bytes = self.transfer.part_size_bytes;
        let count = size.div_ceil(part_bytes);
        let mut parts = Vec::with_capacity(count as usize);
        let mut tasks = JoinSet::new();
        let mut next = 0u64;
        loop {
            while next < count && tasks.len() < self.transfer.part_concurrency {
                let offset = next * part_bytes;
                let part = PartJob {
                    store: self.clone(),
                    key: key.to_string(),
                    path: path.to_path_buf(),
                    upload_id: upload_id.to_string(),
                    number: (next + 1) as i32,
                    offset,
                    len: part_bytes.min(size - offset),
                };
                tasks.spawn(part.run());
                next += 1;
            }
            let Some(joined) = tasks.join_next().await else { break };
            let result =
                joined.unwrap_or_else(|e| Err(StoreError::new(Op::PutPart, key, FailureKind::Client, e.to_string())));
            match result {
                Ok(p) => parts.push(p),
                Err(e) => {
                    // Stop the other parts before the caller aborts the upload, so none lands
                    // after the abort.
                    tasks.abort_all();
                    while tasks.join_next().await.is_some() {}
                    return Err(e);
                }
            }
        }
        parts.sort_by_key(|p| p.part_number());
        Ok(parts)
    }

    /// The body of one PUT or part: `len` bytes of `path` from `offset`, streamed from the file,
    /// paced when `transfer.upload_bytes_per_sec` is set. A fresh one per attempt: a stream
    /// cannot be rewound after a failed send.
    async fn upload_body(
        &self,
        op: Op,
        key: &str,
        path: &Path,
        offset: u64,
        len: u64,
    ) -> Result<ByteStream, StoreError> {
        if let Some(pacer) = &self.pacer {
            let body = PacedFile::open(pacer.clone(), path.to_path_buf(), offset, len);
            return Ok(ByteStream::new(SdkBody::from_body_1_x(body)));
        }
        let body = ByteStream::read_from()
            .path(path)
            .offset(offset)
            .length(Length::Exact(len));
        body.build().await.map_err(|e| local_body_error(op, key, path, e))
    }

    pub(super) async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), StoreError> {
        self.res
            .call(Op::AbortMultipart, key, Admission::Cleanup, || async {
                let req = self.client.abort_multipart_upload().bucket(&self.bucket).key(key);
                match req.upload_id(upload_id).send().await {
                    Ok(_) => Ok(((), 0)),
                    Err(e) if super::classify::status(&e) == Some(404) => Ok(((), 0)), // already gone
                    Err(e) => Err(sdk_error(Op::AbortMultipart, key, e)),
                }
            })
            .await
    }
}

/// One part, owned so it can run as its own task.
struct PartJob {
    store: S3Store,
    key: String,
    path: PathBuf,
    upload_id: String,
    number: i32,
    offset: u64,
    len: u64,
}

impl PartJob {
    async fn run(self) -> Result<CompletedPart, StoreError> {
        let (s, key) = (&self.store, self.key.as_str());
        s.res
            .call(Op::PutPart, key, Admission::Guarded, || async {
                let body = s
                    .upload_body(Op::PutPart, key, &self.path, self.offset, self.len)
                    .await?;
                let req = s
                    .client
                    .upload_part()
                    .bucket(&s.bucket)
                    .key(key)
                    .upload_id(&self.upload_id);
                let out = req
                    .part_number(self.number)
                    .content_length(self.len as i64)
                    .body(body)
                    .send()
                    .await;
                let out = out.map_err(|e| sdk_error(Op::PutPart, key, e))?;
                let part = CompletedPart::builder()
                    .part_number(self.number)
                    .set_e_tag(out.e_tag().map(String::from));
                Ok((part.build(), self.len))
            })
            .await
    }
}
