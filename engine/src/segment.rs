//! Segments at run time: the active one being appended (its unflushed bytes in memory), rolled
//! ones waiting for their seal, and sealed ones read from disk through their sparse index.

use crate::error::{Error, Result};
use crate::format::frame;
use crate::format::scan::IndexBuilder;
use crate::format::segment::IndexEntry;
use crate::format::tier1::{Codec, FrameEntry};
use crate::limits::FRAME_HEADER_BYTES;
use crate::record::Record;
use glommio::io::{DmaBuffer, DmaFile};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Instant;

/// The segment being appended to.
///
/// Bytes `[stage_pos, end_pos)` are in `staging`; `[BLOCK_SIZE or 0, disk_end)` are on disk;
/// a write in flight covers `[inflight_pos, inflight_pos + inflight.len())`. Together they
/// cover the whole segment, so a reader always finds a record somewhere.
pub struct ActiveSegment {
    pub base_offset: u64,
    pub path: PathBuf,
    pub file: Rc<DmaFile>,
    /// The file still has its spare name and must be renamed before its first write.
    pub spare_path: Option<PathBuf>,
    pub next_offset: u64,
    pub end_pos: u64,
    pub stage_pos: u64,
    pub staging: Vec<u8>,
    /// Bytes at the front of `staging` already written and no longer needed (compacted away
    /// lazily, so a large backlog is never shifted once per write).
    pub staging_head: usize,
    pub disk_end: u64,
    pub inflight: Option<(u64, Rc<DmaBuffer>)>,
    pub index: IndexBuilder,
    pub data_crc: u32,
    pub first_timestamp_ns: u64,
    pub last_timestamp_ns: u64,
    /// When the first record arrived, for the age-based roll.
    pub first_append_at: Option<Instant>,
    /// Its data is durable and its index and trailer are being written by a seal task.
    pub seal_started: bool,
    /// Frames may fill the file up to here (the configured segment size, or more for a
    /// recovered file that was already larger).
    pub segment_size_bytes: u64,
}

impl ActiveSegment {
    pub fn record_count(&self) -> u64 {
        self.next_offset - self.base_offset
    }

    /// The bytes `[stage_pos, end_pos)`.
    pub fn staged(&self) -> &[u8] {
        &self.staging[self.staging_head..]
    }

    pub fn unflushed_bytes(&self) -> u64 {
        self.end_pos - self.disk_end.max(self.stage_pos)
    }

    /// True if `frames_len` more bytes of frames fit under the segment size.
    pub fn fits(&self, frames_len: u64) -> bool {
        self.end_pos + frames_len <= self.segment_size_bytes
    }

    pub fn index_entries(&self) -> &[IndexEntry] {
        &self.index.entries
    }

    /// Copies `[pos, pos + len)` from memory if the whole range is held there.
    pub fn read_memory(&self, pos: u64, len: usize) -> Option<Vec<u8>> {
        let end = pos + len as u64;
        if end > self.end_pos {
            return None;
        }
        if pos >= self.stage_pos {
            let s = self.staging_head + (pos - self.stage_pos) as usize;
            return Some(self.staging[s..s + len].to_vec());
        }
        if let Some((ipos, buf)) = &self.inflight {
            if pos >= *ipos && end <= ipos + buf.len() as u64 {
                let s = (pos - ipos) as usize;
                return Some(buf.as_bytes()[s..s + len].to_vec());
            }
        }
        None
    }

    /// Lowest file position held in memory; bytes below it are on disk and final.
    pub fn memory_floor(&self) -> u64 {
        match &self.inflight {
            Some((ipos, _)) => (*ipos).min(self.stage_pos),
            None => self.stage_pos,
        }
    }
}

/// Where a sealed segment's bytes are read from.
pub enum Store {
    /// The raw `.seg` file, read with O_DIRECT.
    Raw(Rc<DmaFile>),
    /// The Tier1 `.t1` file: one frame is read and decoded per miss of the hot cache.
    Tier1 {
        file: Rc<DmaFile>,
        frames: Rc<Vec<FrameEntry>>,
        codec: Codec,
    },
    /// No local copy: the segment is only in Tier2.
    Remote,
    /// The manifest knows the segment but its file is gone and Tier2 has no copy: a
    /// placeholder (with no readable records) so reads in its range report the loss.
    Missing,
}

/// A segment whose seal has been written and synced.
pub struct SealedSegment {
    pub base_offset: u64,
    /// One past the last readable record. Below the next segment's base only if the segment
    /// was damaged: the records in between are reported as corruption, never invented.
    pub next_offset: u64,
    pub data_end: u64,
    /// The local file (`.seg` or `.t1`); meaningless for `Store::Remote`.
    pub path: PathBuf,
    pub store: Store,
    /// Sparse index: for a Tier1 segment, the first record of each frame.
    pub index: Vec<IndexEntry>,
    pub last_timestamp_ns: u64,
    pub data_crc: u32,
    /// Size of the local file, counted against the Tier1 budget.
    pub local_bytes: u64,
    /// When it was last read (a shard-wide tick), for least-recently-used eviction.
    pub last_read: std::cell::Cell<u64>,
}

impl SealedSegment {
    /// The sparse index a Tier1 file provides: each frame starts at a record boundary.
    pub fn frame_index(frames: &[FrameEntry]) -> Vec<IndexEntry> {
        frames
            .iter()
            .map(|f| IndexEntry {
                offset: f.first_offset,
                pos: f.raw_pos,
            })
            .collect()
    }

    /// Makes a Tier1 file the segment's local copy (after compression or hydration). Returns
    /// the store it replaces and that store's local bytes.
    pub fn set_tier1(
        &mut self,
        path: PathBuf,
        file: Rc<DmaFile>,
        frames: Vec<FrameEntry>,
        codec: Codec,
        file_len: u64,
    ) -> (Store, u64) {
        self.index = Self::frame_index(&frames);
        self.path = path;
        let old_bytes = std::mem::replace(&mut self.local_bytes, file_len);
        let frames = Rc::new(frames);
        (
            std::mem::replace(&mut self.store, Store::Tier1 { file, frames, codec }),
            old_bytes,
        )
    }

    /// Bytes of records (frames with padding) the segment holds.
    pub fn record_bytes(&self) -> u64 {
        self.data_end.saturating_sub(crate::limits::BLOCK_SIZE)
    }
}

/// Finds the index entry at or before `offset`. `entries` is sorted and non-empty for any
/// segment holding `offset`.
pub fn locate(entries: &[IndexEntry], offset: u64) -> Option<IndexEntry> {
    let i = entries.partition_point(|e| e.offset <= offset);
    if i == 0 {
        None
    } else {
        Some(entries[i - 1])
    }
}

/// Reads `[pos, pos + len)` of a segment file, clamped to `limit`.
pub async fn read_disk(file: &DmaFile, path: &std::path::Path, pos: u64, len: usize, limit: u64) -> Result<Vec<u8>> {
    let len = len.min(limit.saturating_sub(pos) as usize);
    if len == 0 {
        return Ok(Vec::new());
    }
    let r = file
        .read_at(pos, len)
        .await
        .map_err(|e| Error::glommio("read", path, e))?;
    Ok(r.to_vec())
}

/// Decodes the record at the start of `bytes`, which must hold the whole frame, and checks that
/// it is the one expected. Any mismatch is corruption: the index pointed at a frame that is
/// damaged, and a damaged record is never returned.
pub fn decode_record(bytes: &[u8], expect: u64, max_payload: u32, path: &std::path::Path, pos: u64) -> Result<Record> {
    let corrupt = |detail: String| Error::Corruption {
        path: path.to_path_buf(),
        pos,
        detail,
    };
    let h = frame::decode(bytes, max_payload).map_err(|e| corrupt(format!("record {expect}: {e:?}")))?;
    if h.offset != expect {
        return Err(corrupt(format!("expected record {expect}, found {}", h.offset)));
    }
    let payload = bytes[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + h.payload_len as usize].to_vec();
    Ok(Record {
        offset: h.offset,
        timestamp_ns: h.timestamp_ns,
        tag: h.tag,
        payload,
    })
}

/// Where the next frame starts, from a header that has not been crc-checked (used only to
/// skip frames; the target frame is fully verified).
pub fn skip_len(bytes: &[u8], max_payload: u32) -> Option<u64> {
    let len = frame::peek_len(bytes)?;
    if len > max_payload {
        return None;
    }
    Some(frame::frame_len(len as usize) as u64)
}
