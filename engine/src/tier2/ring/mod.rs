//! Shard ↔ bridge rings: per shard, one request ring (shard → bridge) and one reply ring
//! (bridge → shard), each a single-producer single-consumer queue of fixed 128-byte messages
//! in a memory-mapped file under the data directory.
//!
//! Why this shape: a shard must never block on the bridge or take a lock, and the bridge may
//! be another process. A shared-memory SPSC ring needs two atomic counters and no syscalls on
//! the fast path; a full ring is reported, not waited on. The rings carry *notifications*
//! only. The shard's manifest is the truth about what is uploaded, so anything lost here (a
//! full ring, a restart of either side, a damaged slot) is rebuilt by reconciling the manifest;
//! that is why a consumer may simply `reset()` after a restart.
//!
//! This module uses only std, memmap2, crc32c and thiserror (no tokio): it is meant to move
//! into the engine crate, where the shard side lives. Waking the other side (eventfd, futex,
//! or polling on a timer) is deliberately not here yet.

pub mod layout;
pub mod msg;
mod spsc;

pub use layout::{Direction, Geometry};
pub use msg::{Body, Message};
pub use spsc::{Consumer, Full, Producer, RingError, RingFile};

use std::path::{Path, PathBuf};

/// The file of one shard's ring in `dir`: `ring-<shard>.req` or `ring-<shard>.rep`.
pub fn ring_path(dir: &Path, shard: u32, direction: Direction) -> PathBuf {
    let ext = match direction {
        Direction::Requests => "req",
        Direction::Replies => "rep",
    };
    dir.join(format!("ring-{shard:04}.{ext}"))
}

/// Opens (creating if needed) one shard's ring in `dir`.
pub fn open_ring(dir: &Path, shard: u32, direction: Direction, capacity: u64) -> Result<RingFile, RingError> {
    RingFile::open(
        &ring_path(dir, shard, direction),
        Geometry {
            capacity,
            direction,
            shard,
        },
    )
}

/// The bridge's ends of one shard's rings: it consumes requests and produces replies.
pub struct BridgeEnd {
    pub requests: Consumer,
    pub replies: Producer,
}

/// The shard's ends of its rings: it produces requests and consumes replies.
pub struct ShardEnd {
    pub requests: Producer,
    pub replies: Consumer,
}

impl BridgeEnd {
    /// Opens (creating if needed) both rings of `shard` in `dir`, each `capacity` slots.
    pub fn open(dir: &Path, shard: u32, capacity: u64) -> Result<BridgeEnd, RingError> {
        Ok(BridgeEnd {
            requests: Consumer::new(open_ring(dir, shard, Direction::Requests, capacity)?),
            replies: Producer::new(open_ring(dir, shard, Direction::Replies, capacity)?),
        })
    }
}

impl ShardEnd {
    /// Opens (creating if needed) both rings of `shard` in `dir`, each `capacity` slots.
    pub fn open(dir: &Path, shard: u32, capacity: u64) -> Result<ShardEnd, RingError> {
        Ok(ShardEnd {
            requests: Producer::new(open_ring(dir, shard, Direction::Requests, capacity)?),
            replies: Consumer::new(open_ring(dir, shard, Direction::Replies, capacity)?),
        })
    }
}
