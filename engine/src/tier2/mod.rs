//! Tier2: what the engine shares with the S3 bridge process, and the shard's side of it.
//!
//! The bridge is a separate tokio process (`s3-bridge/`); a shard never touches tokio, TLS or
//! the AWS SDK. They meet in two single-producer single-consumer rings per shard, in
//! memory-mapped files under the shard's directory (`ring`): the shard asks (upload a Tier1
//! file, download one back, delete one) and the bridge answers. The rings carry notifications
//! only: the shard's manifest is the truth, so anything lost on a ring (a restart, a full ring,
//! a damaged slot) is asked again from the manifest.
//!
//! `keys` names objects deterministically from the log's persistent id, the segment's base
//! offset and the Tier1 file's crc32c; `failure` is the coarse failure vocabulary both sides
//! use.

pub mod failure;
pub mod keys;
pub(crate) mod link;
pub mod ring;
