//! Segments at run time: the active one being appended (its unflushed bytes in memory), rolled
//! ones waiting for their seal, and sealed ones read from disk through their sparse index.

use crate::error::{Error, Result};
use crate::format::crc::FrameCrc;
use crate::format::frame;
use crate::format::scan::IndexBuilder;
use crate::format::segment::align_down;
use crate::format::segment::IndexEntry;
use crate::format::tier1::{Codec, FrameEntry};
use crate::limits::{BLOCK_SIZE, FRAME_HEADER_BYTES};
use crate::record::Record;
use crate::staging::Staging;
use glommio::io::{DmaBuffer, DmaFile};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Instant;

/// One O_DIRECT write of a segment, from its issue until it is retired in file order.
pub struct Write {
    pub pos: u64,
    /// Where its data ends; mid-block for the write that carries a partial tail block.
    pub end: u64,
    /// A copy of the bytes, kept for readers until the write is retired.
    pub buf: Rc<DmaBuffer>,
    /// Set on the write that reached `end_pos` when it was issued: once it and every write
    /// before it have completed, records below this offset are on disk.
    pub upto: Option<u64>,
    pub done: bool,
}

/// A write just taken from a segment's staged bytes (see `ActiveSegment::take_write`).
#[derive(Debug, Clone, Copy)]
pub struct WritePlan {
    pub pos: u64,
    /// Bytes of data, from `pos`; the write is this rounded up to whole blocks.
    pub len: usize,
    pub upto: Option<u64>,
    /// Only the rewrite of a partly written block, with more staged behind it (see
    /// `ActiveSegment::take_write`).
    pub head_only: bool,
}

impl WritePlan {
    /// Where its data ends.
    pub fn end(&self) -> u64 {
        self.pos + self.len as u64
    }
}

/// The segment being appended to.
///
/// Bytes `[stage_pos, end_pos)` are in `staging`, in the DMA buffers their writes will send;
/// `[BLOCK_SIZE or 0, disk_end)` are on disk;
/// the writes in flight cover `[inflight[0].pos, inflight.back().end)`. Together they cover the
/// whole segment, so a reader always finds a record somewhere.
///
/// Several writes may be in flight; they complete in any order and are retired in file order,
/// so `disk_end` only grows over a prefix that is wholly on disk. A write whose data ends
/// mid-block is rewritten (extended) by the next one, so no write is issued while such a write
/// is still running: two writes of the same block in flight could land in either order.
/// The name a segment's file goes by. A spare swapped in at a roll keeps its spare name until
/// the flusher renames it and syncs the directory, which it starts at once, beside the
/// previous segment's seal. No write of the segment is performed before that is done, so a
/// record acknowledged as written is always found by recovery under the right name; a crash
/// in between leaves a file with its real name and no header, which recovery removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileName {
    /// Still the spare's name; the rename has not started.
    Spare(PathBuf),
    /// A rename (and directory sync) is in flight.
    Renaming,
    /// The segment's own name, durably.
    Real,
}

pub struct ActiveSegment {
    pub base_offset: u64,
    pub path: PathBuf,
    pub file: Rc<DmaFile>,
    /// The name its file goes by (see `FileName`).
    pub name: FileName,
    pub next_offset: u64,
    pub end_pos: u64,
    pub staging: Staging,
    pub disk_end: u64,
    /// Bytes `[0, durable_end)` are durable: covered by a completed fdatasync of the file, or by
    /// a completed `RWF_DSYNC` write that started at or below the previous `durable_end`. A
    /// write may be issued with `RWF_DSYNC` in place of a later fdatasync only from below it
    /// (see `flusher::flush_active`): the flag promises only the write's own range.
    pub durable_end: u64,
    pub inflight: VecDeque<Write>,
    pub index: IndexBuilder,
    pub data_crc: u32,
    /// Extends `data_crc` over each frame from the frame's own crc (see `format::crc`).
    pub frame_crc: FrameCrc,
    pub first_timestamp_ns: u64,
    pub last_timestamp_ns: u64,
    /// When the first record arrived, for the age-based roll.
    pub first_append_at: Option<Instant>,
    /// Its data is durable and its index and trailer are being written by a seal task.
    pub seal_started: bool,
    /// Frames may fill the file up to here (the configured segment size, or more for a
    /// recovered file that was already larger).
    pub segment_size_bytes: u64,
    /// The file's blocks past the data were preallocated and never written (a new file, not a
    /// reused one), so the filesystem holds them as unwritten extents; see `plan_write`.
    pub fresh_blocks: bool,
}

impl ActiveSegment {
    pub fn record_count(&self) -> u64 {
        self.next_offset - self.base_offset
    }

    /// Where the staged bytes start: the first chunk's position, a block boundary (`end_pos`
    /// when nothing is staged, which happens only on a block boundary too).
    pub fn stage_pos(&self) -> u64 {
        self.staging.front().map_or(self.end_pos, |c| c.pos)
    }

    /// Appends raw bytes (a segment header) at `end_pos`.
    pub fn append_bytes(&mut self, bytes: &[u8]) {
        self.staging.push(&self.file, self.end_pos, bytes);
        self.end_pos += bytes.len() as u64;
    }

    /// Encodes one frame at `end_pos`, straight into the buffer its write will send, and
    /// folds it into the segment's `data_crc`. Returns its length.
    pub fn append_frame(
        &mut self,
        offset: u64,
        timestamp_ns: u64,
        tag: Option<u64>,
        batch_continues: bool,
        payload: &[u8],
    ) -> usize {
        let len = frame::frame_len(payload.len());
        let data_crc = self.data_crc;
        let frame_crc = &mut self.frame_crc;
        self.data_crc = self.staging.append(&self.file, self.end_pos, len, |out| {
            frame::encode_into(out, offset, timestamp_ns, tag, batch_continues, payload);
            // From the frame's own crc where that pays (see `format::crc`).
            frame_crc.append(data_crc, out, FRAME_HEADER_BYTES - 4 + payload.len())
        });
        self.end_pos += len as u64;
        debug_assert_eq!(self.staging.end(), Some(self.end_pos));
        len
    }

    /// Bytes appended and not yet part of any write.
    pub fn unflushed_bytes(&self) -> u64 {
        let issued = self.inflight.back().map_or(0, |w| w.end);
        self.end_pos - self.disk_end.max(self.stage_pos()).max(issued)
    }

    /// Gives back the staging memory an idle log holds beyond the smallest chunk (see
    /// `Staging::release_idle`); returns the bytes released.
    pub fn release_idle_staging(&mut self) -> u64 {
        debug_assert!(!self.needs_write());
        self.staging.release_idle(&self.file)
    }

    /// True if the segment has bytes that no write has taken yet.
    pub fn needs_write(&self) -> bool {
        self.unflushed_bytes() > 0
    }

    /// True once its file has its real name, durably: only then may a write of it be performed.
    pub fn named(&self) -> bool {
        matches!(self.name, FileName::Real)
    }

    /// True if another write may start now: fewer than `max` are unretired and none that
    /// ends mid-block is still running (the next write rewrites that block).
    pub fn can_issue(&self, max: usize) -> bool {
        self.inflight.len() < max && !self.inflight.iter().any(|w| !w.done && w.end % BLOCK_SIZE != 0)
    }

    /// Takes the next write: the first chunk of staged bytes, whole (see `staging`). Nothing
    /// is copied but a partial block it ends in, which stays staged to be rewritten by the
    /// next write.
    ///
    /// In a file with fresh blocks, a partial block already written is rewritten by a write of
    /// its own, apart from the new blocks behind it (staging keeps it in a chunk of its own).
    /// ext4 can only perform a direct write without blocking when the range is all written or
    /// all unwritten extents; a write that spans both needs the inode lock exclusively, so
    /// io_uring gets `EAGAIN` and hands it to a worker thread. At half load in Memory mode that
    /// was every write after a segment's first partial one (traced: ~1,500 a second), and each
    /// worker preempted the shard or kept the writes of a growing log from running side by
    /// side. Both halves now complete inline.
    pub fn take_write(&mut self) -> Option<(WritePlan, Rc<DmaBuffer>)> {
        debug_assert_eq!(self.stage_pos() % BLOCK_SIZE, 0);
        debug_assert!(self.unflushed_bytes() > 0);
        let head_written = self.head_block_written();
        let c = self.staging.take_front(&self.file, self.fresh_blocks)?;
        let end = c.end();
        let last = end == self.end_pos;
        let plan = WritePlan {
            pos: c.pos,
            len: c.len,
            upto: last.then_some(self.next_offset),
            head_only: c.head && !last,
        };
        debug_assert!(!plan.head_only || head_written);
        debug_assert_eq!(plan.end(), end);
        debug_assert_eq!(self.stage_pos(), align_down(end), "the next write follows this one");
        let buf = Rc::new(c.into_write_buffer());
        debug_assert!(
            self.inflight
                .back()
                .is_none_or(|w| w.end <= end && align_down(w.end) == plan.pos),
            "writes follow each other"
        );
        self.inflight.push_back(Write {
            pos: plan.pos,
            end,
            buf: buf.clone(),
            upto: plan.upto,
            done: false,
        });
        Some((plan, buf))
    }

    /// True if the block at `stage_pos` was partly written by an earlier write (its data ended
    /// mid-block), so the next write rewrites it.
    fn head_block_written(&self) -> bool {
        let issued = self.inflight.back().map_or(self.disk_end, |w| w.end.max(self.disk_end));
        issued > self.stage_pos()
    }

    /// Marks the write at `pos` complete and retires every completed write at the front.
    /// Returns the bytes newly on disk and the highest record offset now wholly on disk, if
    /// a retired write carried one.
    pub fn complete_write(&mut self, pos: u64) -> (u64, Option<u64>) {
        let w = self.inflight.iter_mut().find(|w| w.pos == pos && !w.done);
        debug_assert!(w.is_some(), "completed write {pos} is in flight");
        if let Some(w) = w {
            w.done = true;
        }
        let old_end = self.disk_end;
        let mut upto = None;
        while self.inflight.front().is_some_and(|w| w.done) {
            let Some(w) = self.inflight.pop_front() else { break };
            debug_assert!(w.end >= self.disk_end);
            self.disk_end = w.end;
            upto = w.upto.or(upto);
        }
        // The header block is not data: it never counted as unflushed.
        let released = self.disk_end.saturating_sub(old_end.max(BLOCK_SIZE));
        (released, upto)
    }

    /// True if `frames_len` more bytes of frames fit under the segment size.
    pub fn fits(&self, frames_len: u64) -> bool {
        self.end_pos + frames_len <= self.segment_size_bytes
    }

    pub fn index_entries(&self) -> &[IndexEntry] {
        &self.index.entries
    }

    /// Copies `[pos, pos + len)` from memory if the whole range is held there: the range
    /// may span several writes in flight and the staged bytes after them.
    pub fn read_memory(&self, pos: u64, len: usize) -> Option<Vec<u8>> {
        let end = pos + len as u64;
        if end > self.end_pos {
            return None;
        }
        let mut out = Vec::with_capacity(len);
        let mut at = pos;
        while at < end {
            if at >= self.stage_pos() {
                self.staging.read(at, end, &mut out);
                break;
            }
            // A block rewritten by a later write has the same bytes in both (frames are only
            // appended), so whichever write holds `at` will do; a write's bytes past its `end`
            // are padding and never copied.
            let w = self.inflight.iter().find(|w| w.pos <= at && at < w.end)?;
            let upto = end.min(w.end);
            let s = (at - w.pos) as usize;
            out.extend_from_slice(&w.buf.as_bytes()[s..s + (upto - at) as usize]);
            at = upto;
        }
        debug_assert_eq!(out.len(), len);
        Some(out)
    }

    /// Lowest file position held in memory; bytes below it are on disk and final.
    pub fn memory_floor(&self) -> u64 {
        self.inflight
            .front()
            .map_or(self.stage_pos(), |w| w.pos.min(self.stage_pos()))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An active segment whose staged bytes are `bytes` from position 0 (no header: the
    /// test only cares where bytes are held), with writes of at most `max_write`.
    fn segment(file: Rc<DmaFile>, bytes: &[u8], max_write: u64) -> ActiveSegment {
        let mut s = ActiveSegment {
            base_offset: 0,
            path: PathBuf::new(),
            file,
            name: FileName::Real,
            next_offset: 1,
            end_pos: 0,
            staging: Staging::new(max_write),
            disk_end: 0,
            durable_end: 0,
            inflight: VecDeque::new(),
            index: IndexBuilder::new(1),
            data_crc: 0,
            frame_crc: FrameCrc::default(),
            first_timestamp_ns: 0,
            last_timestamp_ns: 0,
            first_append_at: None,
            seal_started: false,
            segment_size_bytes: 1 << 20,
            fresh_blocks: false,
        };
        s.append_bytes(bytes);
        s
    }

    fn issue(s: &mut ActiveSegment) -> WritePlan {
        s.take_write().expect("staged bytes").0
    }

    /// A reader's range may start in one write in flight and end in another, or in the
    /// staged bytes after them; every byte from the memory floor up is readable, and a
    /// range reaching below it (on disk) is not served from memory.
    #[test]
    fn memory_reads_span_writes_in_flight_and_the_staged_tail() {
        crate::startup::with_dma_file("seg", |file, _| async move {
            let block = BLOCK_SIZE as usize;
            let all: Vec<u8> = (0..7 * block + 1000).map(|i| (i * 131 % 251) as u8).collect();
            // Two whole-chunk writes, then one ending mid-block; more bytes arrive after.
            let first = 5 * block + 300;
            let mut s = segment(file, &all[..first], 2 * BLOCK_SIZE);
            issue(&mut s);
            issue(&mut s);
            let p = issue(&mut s);
            assert_eq!((p.pos, p.len, p.upto), (4 * BLOCK_SIZE, block + 300, Some(1)));
            assert_eq!(s.inflight.len(), 3);
            assert_eq!(s.stage_pos(), 5 * BLOCK_SIZE, "the partial tail block stays staged");
            s.append_bytes(&all[first..]);

            let check = |s: &ActiveSegment| {
                let floor = s.memory_floor();
                for pos in (floor..s.end_pos).step_by(509) {
                    for len in [1usize, 700, block, 3 * block + 17, all.len()] {
                        let len = len.min((s.end_pos - pos) as usize);
                        let got = s.read_memory(pos, len);
                        let want = &all[pos as usize..pos as usize + len];
                        assert_eq!(got.as_deref(), Some(want), "read [{pos}, +{len})");
                    }
                }
                if floor > 0 {
                    assert!(
                        s.read_memory(floor - 1, 2).is_none(),
                        "a range on disk is not in memory"
                    );
                }
                assert!(s.read_memory(s.end_pos - 1, 2).is_none(), "past the end");
            };
            check(&s);
            // Completing the second write retires nothing; the first retires it too.
            assert_eq!(s.complete_write(2 * BLOCK_SIZE).0, 0);
            check(&s);
            s.complete_write(0);
            assert_eq!(s.memory_floor(), 4 * BLOCK_SIZE);
            check(&s);
            // The writes send exactly the appended bytes, zero-padded.
            let w = s.inflight.back().expect("a write");
            assert_eq!(&w.buf.as_bytes()[..block + 300], &all[4 * block..first]);
            assert!(w.buf.as_bytes()[block + 300..].iter().all(|&b| b == 0));
        });
    }

    /// In a file with fresh blocks, the block a write left partly written is rewritten alone
    /// and the new blocks behind it in a second write; in a reused file, one write does both.
    /// Either way the bytes on disk and in memory are the staged ones, in file order.
    #[test]
    fn a_partly_written_block_is_rewritten_alone_in_a_fresh_file() {
        crate::startup::with_dma_file("seg", |file, _| async move {
            let block = BLOCK_SIZE as usize;
            let all: Vec<u8> = (0..6 * block + 100).map(|i| (i * 7 % 253) as u8).collect();
            for fresh in [true, false] {
                let first = 2 * block + 300;
                let mut s = segment(file.clone(), &all[..first], 8 * BLOCK_SIZE);
                s.fresh_blocks = fresh;
                // The first write ends mid-block: nothing was written before it, so it is whole.
                let p = issue(&mut s);
                assert!(!p.head_only);
                assert_eq!(s.stage_pos(), 2 * BLOCK_SIZE);
                assert!(!s.can_issue(4), "no write while one ending mid-block runs");
                s.complete_write(0);
                s.append_bytes(&all[first..]);

                if fresh {
                    let p = issue(&mut s);
                    assert_eq!(p.pos, 2 * BLOCK_SIZE);
                    assert!(p.head_only, "the partly written block goes alone");
                    assert_eq!((p.len, p.upto), (block, None), "it acknowledges nothing");
                    assert!(s.can_issue(4), "it ends on a block boundary");
                    let rest = issue(&mut s);
                    assert!(!rest.head_only, "a block boundary: no rewrite");
                    assert_eq!(rest.pos, 3 * BLOCK_SIZE);
                    assert_eq!(rest.end(), all.len() as u64);
                    assert_eq!(rest.upto, Some(s.next_offset));
                    assert_eq!(s.inflight.len(), 2);
                } else {
                    let p = issue(&mut s);
                    assert_eq!(p.pos, 2 * BLOCK_SIZE);
                    assert!(!p.head_only);
                    assert_eq!(p.end(), all.len() as u64, "one write takes it all");
                    assert_eq!(s.inflight.len(), 1);
                }
                let floor = s.memory_floor();
                assert_eq!(floor, 2 * BLOCK_SIZE);
                let got = s.read_memory(floor, all.len() - floor as usize);
                assert_eq!(got.as_deref(), Some(&all[floor as usize..]));
                // Retired in file order whichever completes first.
                let last = s.inflight.back().map(|w| w.pos).unwrap_or_default();
                assert_eq!(s.complete_write(last).1, if fresh { None } else { Some(1) });
                if fresh {
                    assert_eq!(s.complete_write(2 * BLOCK_SIZE).1, Some(1));
                }
                assert_eq!(s.disk_end, all.len() as u64);
            }
        });
    }
}
