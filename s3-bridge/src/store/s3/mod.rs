//! `S3Store`: any S3-compatible service through `aws-sdk-s3`, every call wrapped by
//! [`Resilience`] (timeout, retry with jitter, circuit breaker).
//!
//! Client settings that matter against non-AWS servers (RGW, MinIO):
//! - request checksum calculation and response checksum validation are "when required": by
//!   default the SDK adds CRC trailers to streaming uploads, which such servers reject as a
//!   signature mismatch. Our integrity check is the crc32c metadata instead (see `store`);
//! - the SDK's own retries are off: the retry loop here owns attempts, backoff and the breaker,
//!   and one layer of retries keeps the worst-case latency computable;
//! - path-style addressing by default (self-hosted gateways rarely have wildcard DNS).

mod classify;
mod download;
mod upload;

use super::{crc_from_meta, ObjectMeta, ObjectStore, PendingUpload, PutInfo, META_CRC32C};
use crate::breaker::Breaker;
use crate::config::{BridgeConfig, Credentials, TransferConfig};
use crate::error::StoreError;
use crate::metrics::{Metrics, Op};
use crate::pace::Pacer;
use crate::retry::{Admission, Resilience};
use aws_sdk_s3::config::{
    retry::RetryConfig as SdkRetry, timeout::TimeoutConfig, BehaviorVersion, Region, RequestChecksumCalculation,
    ResponseChecksumValidation,
};
use aws_sdk_s3::Client;
use bytes::Bytes;
use classify::{clean_etag, sdk_error};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{Semaphore, SemaphorePermit};

/// The SDK's connect timeout: a refused or black-holed connect is reported as such (Connect)
/// well inside the per-call timeout.
const CONNECT_TIMEOUT_MS_MAX: u64 = 3_000;

/// An S3 bucket as an object store. Cheap to clone (everything inside is shared).
#[derive(Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    transfer: TransferConfig,
    /// Whole transfers (put/get/download/ranged get) in flight at once: `transfer.concurrency`.
    /// Beyond it callers queue here instead of opening ever more connections.
    transfers: Arc<Semaphore>,
    /// `transfer.upload_bytes_per_sec`, shared by every upload of this store.
    pacer: Option<Arc<Pacer>>,
    res: Resilience,
}

impl S3Store {
    /// Builds the client from `cfg.s3` (credentials from the standard chain unless explicit).
    pub async fn connect(cfg: &BridgeConfig, metrics: Arc<Metrics>) -> S3Store {
        let s3 = &cfg.s3;
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).region(Region::new(s3.region.clone()));
        if let Credentials::Static {
            access_key_id,
            secret_access_key,
            session_token,
        } = &s3.credentials
        {
            let creds = aws_sdk_s3::config::Credentials::new(
                access_key_id,
                secret_access_key,
                session_token.clone(),
                None,
                "aof-config",
            );
            loader = loader.credentials_provider(creds);
        }
        let shared = loader.load().await;
        let connect_ms = cfg.retry.call_timeout_ms.min(CONNECT_TIMEOUT_MS_MAX);
        let mut b = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(s3.force_path_style)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .retry_config(SdkRetry::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_millis(connect_ms))
                    .build(),
            );
        if let Some(ep) = &s3.endpoint {
            b = b.endpoint_url(ep);
        }
        let breaker = Breaker::new(cfg.breaker.clone(), metrics.clone());
        S3Store {
            client: Client::from_conf(b.build()),
            bucket: s3.bucket.clone(),
            transfer: cfg.transfer.clone(),
            transfers: Arc::new(Semaphore::new(cfg.transfer.concurrency)),
            pacer: Pacer::new(cfg.transfer.upload_bytes_per_sec),
            res: Resilience::new(cfg.retry.clone(), breaker, metrics),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn pacer(&self) -> Option<&Arc<Pacer>> {
        self.pacer.as_ref()
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn breaker(&self) -> &Breaker {
        self.res.breaker()
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        self.res.metrics()
    }

    /// Creates the bucket if it does not exist (tests and first runs; production buckets are
    /// usually provisioned outside).
    pub async fn ensure_bucket(&self) -> Result<(), StoreError> {
        let b = &self.bucket;
        self.res
            .call(Op::CreateBucket, b, Admission::Guarded, || async {
                match self.client.create_bucket().bucket(b).send().await {
                    Ok(_) => Ok(((), 0)),
                    Err(e) if matches!(classify::status(&e), Some(409)) => Ok(((), 0)), // already ours
                    Err(e) => Err(sdk_error(Op::CreateBucket, b, e)),
                }
            })
            .await
    }

    async fn transfer_slot(&self, op: Op, key: &str) -> Result<SemaphorePermit<'_>, StoreError> {
        // The semaphore is never closed; the error arm exists only because the type has one.
        let closed = |_| StoreError::new(op, key, crate::failure::FailureKind::Client, "store closed");
        self.transfers.acquire().await.map_err(closed)
    }

    async fn head_object(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        self.res
            .call(Op::Head, key, Admission::Guarded, || async {
                let out = self.client.head_object().bucket(&self.bucket).key(key).send().await;
                let out = out.map_err(|e| sdk_error(Op::Head, key, e))?;
                let crc32c = out
                    .metadata()
                    .and_then(|m| m.get(META_CRC32C))
                    .and_then(|s| crc_from_meta(s));
                let size = out.content_length().unwrap_or(0).max(0) as u64;
                Ok((
                    ObjectMeta {
                        size,
                        etag: clean_etag(out.e_tag()),
                        crc32c,
                    },
                    0,
                ))
            })
            .await
    }

    async fn list_page(
        &self,
        prefix: &str,
        markers: (Option<String>, Option<String>),
    ) -> Result<aws_sdk_s3::operation::list_multipart_uploads::ListMultipartUploadsOutput, StoreError> {
        self.res
            .call(Op::ListMultipart, prefix, Admission::Guarded, || async {
                let req = self.client.list_multipart_uploads().bucket(&self.bucket).prefix(prefix);
                let out = req
                    .set_key_marker(markers.0.clone())
                    .set_upload_id_marker(markers.1.clone())
                    .send()
                    .await;
                Ok((out.map_err(|e| sdk_error(Op::ListMultipart, prefix, e))?, 0))
            })
            .await
    }
}

impl ObjectStore for S3Store {
    async fn put_file(&self, key: &str, path: &Path, crc32c: u32) -> Result<PutInfo, StoreError> {
        let _slot = self.transfer_slot(Op::Put, key).await?;
        self.upload_file(key, path, crc32c).await
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let _slot = self.transfer_slot(Op::Get, key).await?;
        self.get_whole(key).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        let _slot = self.transfer_slot(Op::GetRange, key).await?;
        self.get_bytes_range(key, range).await
    }

    async fn download_to_file(&self, key: &str, dest: &Path) -> Result<ObjectMeta, StoreError> {
        let _slot = self.transfer_slot(Op::Get, key).await?;
        self.get_to_file(key, dest).await
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        self.head_object(key).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.res
            .call(Op::Delete, key, Admission::Guarded, || async {
                match self.client.delete_object().bucket(&self.bucket).key(key).send().await {
                    Ok(_) => Ok(((), 0)),
                    Err(e) if classify::status(&e) == Some(404) => Ok(((), 0)),
                    Err(e) => Err(sdk_error(Op::Delete, key, e)),
                }
            })
            .await
    }

    async fn list_keys(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        // A folder is listed as "name/" (not "name-2/..."); an empty prefix is the whole bucket.
        let folder = match prefix.trim_matches('/') {
            "" => String::new(),
            p => format!("{p}/"),
        };
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .res
                .call(Op::List, &folder, Admission::Guarded, || async {
                    let out = self
                        .client
                        .list_objects_v2()
                        .bucket(&self.bucket)
                        .prefix(&folder)
                        .set_continuation_token(token.clone())
                        .send()
                        .await;
                    Ok((out.map_err(|e| sdk_error(Op::List, &folder, e))?, 0))
                })
                .await?;
            keys.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_owned)));
            match page.next_continuation_token() {
                Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_owned()),
                _ => return Ok(keys),
            }
        }
    }

    async fn list_pending_uploads(&self, prefix: &str, older_than: Duration) -> Result<Vec<PendingUpload>, StoreError> {
        let cutoff = SystemTime::now() - older_than;
        let mut found = Vec::new();
        let mut markers = (None, None);
        loop {
            let page = self.list_page(prefix, markers).await?;
            for u in page.uploads() {
                let initiated = u.initiated().and_then(|t| SystemTime::try_from(*t).ok());
                if initiated.is_some_and(|t| t > cutoff) {
                    continue;
                }
                if let (Some(key), Some(id)) = (u.key(), u.upload_id()) {
                    found.push(PendingUpload {
                        key: key.into(),
                        upload_id: id.into(),
                        initiated,
                    });
                }
            }
            let next = (
                page.next_key_marker().map(String::from),
                page.next_upload_id_marker().map(String::from),
            );
            if page.is_truncated() != Some(true) || next == (None, None) {
                return Ok(found);
            }
            markers = next;
        }
    }

    async fn abort_upload(&self, upload: &PendingUpload) -> Result<(), StoreError> {
        self.abort_multipart(&upload.key, &upload.upload_id).await
    }
}
