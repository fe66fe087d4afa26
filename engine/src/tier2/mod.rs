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

use std::path::{Path, PathBuf};

/// Where a shard keeps the Tier1 file of segment `base` of log `log_id` under the data
/// directory `root` (`docs/format.md`): the file the bridge uploads and hydrates into.
pub fn tier1_path(root: &Path, shard: usize, log_id: u64, base: u64) -> PathBuf {
    root.join(crate::shard::shard_dir_name(shard))
        .join(crate::format::logmeta::dir_name(log_id))
        .join(crate::format::tier1::file_name(log_id, base))
}

/// Where the bytes of a ranged download land for the shard to pick up: beside the segment's
/// Tier1 path, named by the range and the request's id (`<name>.t1.range-<start>-<end>-<id>`):
/// readers of one hot frame ask for the same range at once, and each must get a file of its own
/// (with a shared name the bridge's writes renamed over each other and the first reader to
/// finish removed the file the others were about to open).
pub fn range_path(tier1: &Path, r: &std::ops::Range<u64>, request_id: u64) -> PathBuf {
    let mut name = tier1.as_os_str().to_owned();
    name.push(format!(".range-{}-{}-{request_id}", r.start, r.end));
    PathBuf::from(name)
}
