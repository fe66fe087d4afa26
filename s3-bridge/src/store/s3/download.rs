//! Downloads: whole objects (verified against the crc32c metadata) and byte ranges.

use super::classify::{body_error, clean_etag, sdk_error, status};
use super::S3Store;
use crate::error::StoreError;
use crate::metrics::Op;
use crate::retry::Admission;
use crate::store::file::verify;
use crate::store::localfile::AtomicFile;
use crate::store::{crc_from_meta, ObjectMeta, META_CRC32C};
use aws_sdk_s3::operation::get_object::GetObjectOutput;
use bytes::Bytes;
use std::ops::Range;
use std::path::Path;

fn recorded_crc(out: &GetObjectOutput) -> Option<u32> {
    out.metadata()
        .and_then(|m| m.get(META_CRC32C))
        .and_then(|s| crc_from_meta(s))
}

impl S3Store {
    async fn get_object(&self, op: Op, key: &str, range: Option<String>) -> Result<GetObjectOutput, StoreError> {
        let req = self.client.get_object().bucket(&self.bucket).key(key).set_range(range);
        req.send().await.map_err(|e| sdk_error(op, key, e))
    }

    pub(super) async fn get_whole(&self, key: &str) -> Result<Bytes, StoreError> {
        self.res
            .call(Op::Get, key, Admission::Guarded, || async {
                let out = self.get_object(Op::Get, key, None).await?;
                let recorded = recorded_crc(&out);
                let data = out
                    .body
                    .collect()
                    .await
                    .map_err(|e| body_error(Op::Get, key, e))?
                    .into_bytes();
                verify(Op::Get, key, recorded, &data)?;
                let n = data.len() as u64;
                Ok((data, n))
            })
            .await
    }

    pub(super) async fn get_bytes_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        // HTTP ranges are inclusive at both ends.
        let header = format!("bytes={}-{}", range.start, range.end - 1);
        self.res
            .call(Op::GetRange, key, Admission::Guarded, || async {
                let req = self.client.get_object().bucket(&self.bucket).key(key).range(&header);
                let out = match req.send().await {
                    Ok(out) => out,
                    // 416: the range starts at or past the end; the contract says "cut at the end".
                    Err(e) if status(&e) == Some(416) => return Ok((Bytes::new(), 0)),
                    Err(e) => return Err(sdk_error(Op::GetRange, key, e)),
                };
                let data = out
                    .body
                    .collect()
                    .await
                    .map_err(|e| body_error(Op::GetRange, key, e))?
                    .into_bytes();
                let n = data.len() as u64;
                Ok((data, n))
            })
            .await
    }

    /// Streams the object into a temp file next to `dest`, verifies, fsyncs, renames.
    pub(super) async fn get_to_file(&self, key: &str, dest: &Path) -> Result<ObjectMeta, StoreError> {
        let local = |what: &str, e| StoreError::local_io(Op::Get, key, what, dest, e);
        self.res
            .call(Op::Get, key, Admission::Guarded, || async {
                let mut out = self.get_object(Op::Get, key, None).await?;
                let (recorded, etag) = (recorded_crc(&out), clean_etag(out.e_tag()));
                let mut file = AtomicFile::create(dest).await.map_err(|e| local("create", e))?;
                while let Some(chunk) = out.body.try_next().await.map_err(|e| body_error(Op::Get, key, e))? {
                    file.write(&chunk).await.map_err(|e| local("write", e))?;
                }
                let (crc, len) = file.crc_len();
                match recorded {
                    Some(expected) if expected == crc => {}
                    Some(expected) => return Err(StoreError::corrupt(Op::Get, key, expected, crc, len)),
                    None => {
                        let detail = "object has no crc32c metadata";
                        return Err(StoreError::new(
                            Op::Get,
                            key,
                            crate::failure::FailureKind::Corrupt,
                            detail,
                        ));
                    }
                }
                file.commit().await.map_err(|e| local("commit", e))?;
                Ok((
                    ObjectMeta {
                        size: len,
                        etag,
                        crc32c: recorded,
                    },
                    len,
                ))
            })
            .await
    }
}
