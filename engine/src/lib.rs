//! # aof-engine: a thread-per-core, io_uring, tiered append-only log
//!
//! A service opens one [`Engine`]; it starts one glommio executor per shard, each pinned to a
//! core, and each shard owns a disjoint set of named logs outright: their files, their write
//! buffers, their memory budget. Shards share nothing, so the append path takes no lock and
//! touches no other core's cache lines. Code that runs on a shard ([`Handle::spawn_on`],
//! [`LocalLog`]) appends with no thread hop at all; any other thread uses a [`Handle`], whose
//! requests cross one lock-free queue.
//!
//! Records are framed with a crc32c, written with O_DIRECT from aligned buffers into
//! preallocated segment files, and acknowledged at the [`Durability`] the caller picked.
//! Sealed segments carry a footer with a sparse index. Recovery keeps exactly the valid
//! prefix of what was written. `docs/format.md` documents every byte.
//!
//! What the machine must give: Linux with io_uring (5.8+), an RLIMIT_MEMLOCK of at least
//! 512 KiB (more lets io_uring register buffers: `Config::io_memory_bytes` in each of a
//! shard's 3 rings), and a
//! data directory on a file system that supports O_DIRECT. `Engine::open` checks each and
//! says what to change.

mod catalog;
mod compressor;
mod config;
mod engine;
mod error;
mod event;
mod flusher;
pub mod format;
mod fsops;
mod group;
mod iowq;
pub mod limits;
mod log;
mod mailbox;
mod manifest;
mod read;
mod record;
mod recovery;
mod reply;
mod rush;
mod segment;
mod shard;
mod staging;
mod startup;
mod tier0;
mod tier1;
pub mod tier2;
mod tiering;

pub use config::{CompressionCpus, Config, Durability, IoWorkerCpus, Profile, Retention, Tier2Config};
pub use engine::{Engine, Follow, Handle, LocalLog, Shard, Tail};
pub use error::{Error, Result};
pub use format::manifest::ObjectRef;
pub use record::{NewRecord, OwnedRecord, Record};
pub use recovery::{MissingFile, RecoveryReport};
pub use reply::Reply;
pub use shard::ShardStats;
pub use tiering::{SegmentInfo, SegmentState};

/// Checks that the existing directory `dir` is on durable storage that takes O_DIRECT, as
/// `Engine::open` does for its data directory: memory file systems (tmpfs, ramfs) are
/// refused with `Error::Environment`. For tools that write beside the engine (the perf
/// harness's device and baseline measurements) and want the same rule.
pub fn check_data_dir(dir: &std::path::Path) -> Result<()> {
    startup::check_direct_io(dir)
}
