//! `aof-s3-bridge`: Tier2 for aof. Moves sealed segments from a host's local disk to S3 and
//! back, in its own process (or on its own tokio threads inside the service's process).
//!
//! Why a separate process: a shard is one pinned io_uring executor whose append latency is
//! measured in microseconds. TLS, the AWS SDK, DNS and HTTP connection pools bring threads,
//! allocations and tail latencies of their own; keeping them out of the shard threads (and
//! out of the engine crate) means an S3 outage or a slow endpoint can cost the engine Tier1
//! disk space, never append latency. Shards talk to the bridge through per-shard SPSC rings in
//! shared memory that carry notifications only; each shard's manifest stays the truth.
//!
//! What this crate has so far (issue 5, foundations):
//! - [`config`]: every tunable, documented, validated, loadable from TOML;
//! - [`keys`]: deterministic object keys from (log id, base offset, content crc32c);
//! - [`store`]: the [`ObjectStore`] interface, [`FileStore`] (`file://DIR`) and [`S3Store`];
//! - [`retry`] and [`breaker`]: per-call timeout, backoff with full jitter, circuit breaker;
//! - [`failure`]: the coarse [`FailureKind`] every error reduces to;
//! - [`metrics`] and [`server`]: Prometheus text over HTTP, `/metrics` and `/health`;
//! - [`ring`]: the shard ↔ bridge SPSC rings in shared memory (tokio-free, bound for the engine).
//!
//! Integrity is end to end: the engine computes a segment's crc32c, the key and the object's
//! metadata carry it, and every whole download is verified against it before it is trusted.

pub mod breaker;
pub mod config;
pub mod error;
pub mod metrics;
pub mod pace;
pub mod retry;
pub mod server;
pub mod store;
pub mod worker;

// The ring, the key scheme and the failure vocabulary are shared with the shards, so they live
// in the engine (which never links tokio); re-exported here under their old paths.
pub use aof_engine::tier2::{failure, keys, ring};

pub use breaker::{Breaker, BreakerState};
pub use config::{BridgeConfig, ConfigError, Target};
pub use error::StoreError;
pub use failure::FailureKind;
pub use keys::SegmentId;
pub use metrics::{Metrics, Op};
pub use store::{abort_stale_uploads, AnyStore, FileStore, ObjectMeta, ObjectStore, PendingUpload, PutInfo, S3Store};

use std::sync::Arc;

/// Opens the store the config names. `S3Store` creation does no I/O (credentials are resolved
/// on first use), so this fails only on an invalid config.
pub async fn open_store(cfg: &BridgeConfig, metrics: Arc<Metrics>) -> Result<AnyStore, ConfigError> {
    cfg.validate()?;
    Ok(match cfg.target()? {
        Target::File(dir) => AnyStore::File(
            FileStore::new(dir, metrics).paced(crate::pace::Pacer::new(cfg.transfer.upload_bytes_per_sec)),
        ),
        Target::S3 => AnyStore::S3(S3Store::connect(cfg, metrics).await),
    })
}
