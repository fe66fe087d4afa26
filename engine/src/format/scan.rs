//! The recovery scan: walks the frames of a segment and keeps the longest valid prefix.
//!
//! A frame is accepted only if it decodes (magic, length, flags, crc) and carries the next
//! expected offset: the dense-offset check rejects a stale but intact frame left over from
//! an earlier write at the same place. Frames of a batch are accepted together once the
//! frame that ends the batch is accepted, so a torn batch vanishes whole.

use crate::format::crc::FrameCrc;
use crate::format::frame::{self, FrameError};
use crate::format::segment::IndexEntry;
use crate::limits::{BLOCK_SIZE, FRAME_HEADER_BYTES};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// One past the last accepted record.
    pub next_offset: u64,
    /// File position just after the last accepted frame.
    pub data_end: u64,
    pub index: Vec<IndexEntry>,
    pub first_timestamp_ns: u64,
    pub last_timestamp_ns: u64,
    /// crc32c over the accepted frames, as the seal trailer records it.
    pub data_crc: u32,
    /// Where and why the scan stopped, if before the end of the buffer.
    pub stopped: Option<(u64, StopReason)>,
    /// Records read but dropped because their batch was incomplete.
    pub dropped_batch_records: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Frame(FrameError),
    /// A valid frame with the wrong offset (stale data from an earlier life of the file).
    OffsetGap {
        expected: u64,
        found: u64,
    },
}

impl StopReason {
    /// True if the scan stopped at a frame from an earlier life of a reused file (see
    /// `tiering::retire_raw`): intact, but with an offset below the segment's base, which no
    /// frame of this segment can carry (a log's offsets only grow). What follows is that
    /// earlier life's data, not damage.
    pub fn is_earlier_life(&self, base: u64) -> bool {
        matches!(self, StopReason::OffsetGap { found, .. } if *found < base)
    }

    /// True if the stop looks like never-written space rather than damage.
    pub fn is_clean_end(&self) -> bool {
        matches!(
            self,
            StopReason::Frame(FrameError::BadMagic) | StopReason::Frame(FrameError::Truncated)
        )
    }
}

/// Where this segment's own bytes past position `from` of `data` end, if the file holds frames
/// of an earlier life (a reused file, see `tiering::retire_raw`): the end of the last intact
/// frame past `from` with an offset of at least `base`, or `from`. `None` if no intact frame of
/// an earlier life lies past `from` (then whatever is there is this segment's own, torn).
/// Used only to report how much recovery cut; it never decides what is kept.
pub fn reused_tail_end(data: &[u8], from: usize, base: u64, max_payload: u32) -> Option<usize> {
    let magic = frame::FRAME_MAGIC.to_le_bytes();
    let (mut own_end, mut earlier) = (from, false);
    let mut p = from;
    while p + crate::limits::FRAME_HEADER_BYTES <= data.len() {
        if data[p + 36..p + 40] != magic {
            p += 1;
            continue;
        }
        match frame::decode(&data[p..], max_payload) {
            Ok(h) if p + h.frame_len() <= data.len() => {
                if h.offset >= base {
                    own_end = own_end.max(p + h.frame_len());
                } else {
                    earlier = true;
                }
                p += h.frame_len();
            }
            _ => p += 1,
        }
    }
    earlier.then_some(own_end)
}

/// Incremental index builder shared by the scan and the live append path, so both produce the
/// same entries for the same frames.
#[derive(Debug, Clone)]
pub struct IndexBuilder {
    interval: u64,
    pub entries: Vec<IndexEntry>,
}

impl IndexBuilder {
    pub fn new(interval: u64) -> Self {
        debug_assert!(interval > 0);
        Self {
            interval,
            entries: Vec::new(),
        }
    }

    pub fn from_entries(interval: u64, entries: Vec<IndexEntry>) -> Self {
        Self { interval, entries }
    }

    /// Records that the frame for `offset` starts at `pos`.
    pub fn note(&mut self, offset: u64, pos: u64) {
        match self.entries.last() {
            Some(last) if pos < last.pos + self.interval => {}
            _ => self.entries.push(IndexEntry { offset, pos }),
        }
    }
}

/// Scans `data`, the bytes of a segment file starting at [`BLOCK_SIZE`] (after the header).
pub fn scan(data: &[u8], base_offset: u64, max_payload: u32, index_interval: u64) -> Scan {
    let mut committed = Scan {
        next_offset: base_offset,
        data_end: BLOCK_SIZE,
        index: Vec::new(),
        first_timestamp_ns: 0,
        last_timestamp_ns: 0,
        data_crc: 0,
        stopped: None,
        dropped_batch_records: 0,
    };
    let mut index = IndexBuilder::new(index_interval);
    let mut committed_index_len = 0;
    let mut pos = 0usize;
    let mut next = base_offset;
    let mut crc = 0u32;
    let mut frame_crc = FrameCrc::default();
    let mut first_ts = None;
    let mut last_ts;
    let mut pending_batch = 0u64;
    while pos < data.len() {
        let h = match frame::decode(&data[pos..], max_payload) {
            Ok(h) => h,
            Err(e) => {
                committed.stopped = Some((BLOCK_SIZE + pos as u64, StopReason::Frame(e)));
                break;
            }
        };
        if h.offset != next {
            let gap = StopReason::OffsetGap {
                expected: next,
                found: h.offset,
            };
            committed.stopped = Some((BLOCK_SIZE + pos as u64, gap));
            break;
        }
        let len = h.frame_len();
        if pos + len > data.len() {
            committed.stopped = Some((BLOCK_SIZE + pos as u64, StopReason::Frame(FrameError::Truncated)));
            break;
        }
        index.note(next, BLOCK_SIZE + pos as u64);
        // `decode` verified the frame's own crc, so the running crc extends from it.
        let covered = FRAME_HEADER_BYTES - 4 + h.payload_len as usize;
        crc = frame_crc.append(crc, &data[pos..pos + len], covered);
        first_ts.get_or_insert(h.timestamp_ns);
        last_ts = h.timestamp_ns;
        pos += len;
        next += 1;
        if h.batch_continues {
            pending_batch += 1;
            continue;
        }
        pending_batch = 0;
        committed.next_offset = next;
        committed.data_end = BLOCK_SIZE + pos as u64;
        committed.first_timestamp_ns = first_ts.unwrap_or(0);
        committed.last_timestamp_ns = last_ts;
        committed.data_crc = crc;
        committed_index_len = index.entries.len();
    }
    committed.dropped_batch_records = pending_batch;
    index.entries.truncate(committed_index_len);
    committed.index = index.entries;
    committed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::frame::encode;

    fn segment(records: &[(u64, usize, bool)]) -> Vec<u8> {
        let mut out = Vec::new();
        for &(off, len, cont) in records {
            encode(&mut out, off, off * 10, None, cont, &vec![off as u8; len]);
        }
        out.resize(out.len() + 8192, 0);
        out
    }

    #[test]
    fn stops_at_zeroes_and_counts() {
        let d = segment(&[(5, 3, false), (6, 100, false), (7, 0, false)]);
        let s = scan(&d, 5, 1000, 64);
        assert_eq!(s.next_offset, 8);
        assert!(s.stopped.unwrap().1.is_clean_end());
        assert_eq!(s.first_timestamp_ns, 50);
        assert_eq!(s.last_timestamp_ns, 70);
    }

    #[test]
    fn torn_batch_is_dropped_whole() {
        let d = segment(&[(0, 3, false), (1, 3, true), (2, 3, true)]);
        let s = scan(&d, 0, 1000, 64);
        assert_eq!(s.next_offset, 1);
        assert_eq!(s.dropped_batch_records, 2);
        let d = segment(&[(0, 3, false), (1, 3, true), (2, 3, false)]);
        assert_eq!(scan(&d, 0, 1000, 64).next_offset, 3);
    }

    #[test]
    fn stale_frame_with_wrong_offset_is_rejected() {
        let d = segment(&[(0, 3, false), (1, 3, false), (7, 3, false)]);
        let s = scan(&d, 0, 1000, 64);
        assert_eq!(s.next_offset, 2);
        assert_eq!(s.stopped.unwrap().1, StopReason::OffsetGap { expected: 2, found: 7 });
    }

    #[test]
    fn index_matches_interval() {
        let recs: Vec<_> = (0..100).map(|i| (i, 50, false)).collect();
        let d = segment(&recs);
        let s = scan(&d, 0, 1000, 500);
        assert!(s.index.len() > 5);
        assert_eq!(
            s.index[0],
            IndexEntry {
                offset: 0,
                pos: BLOCK_SIZE
            }
        );
        for w in s.index.windows(2) {
            assert!(w[1].pos - w[0].pos >= 500);
        }
    }

    /// A reused file: this segment's frames (offsets from 100) over an earlier life's (offsets
    /// from 5, same frame sizes, so the new data ends on an old frame's boundary).
    #[test]
    fn an_earlier_lifes_frames_end_the_scan_and_are_not_counted_as_cut() {
        let old: Vec<(u64, usize, bool)> = (5..25).map(|o| (o, 100, false)).collect();
        let new: Vec<(u64, usize, bool)> = (100..105).map(|o| (o, 100, false)).collect();
        let mut data = segment(&old);
        let fresh = segment(&new);
        let new_end = frame::frame_len(100) * 5;
        data[..new_end].copy_from_slice(&fresh[..new_end]);
        let s = scan(&data, 100, 1 << 20, 4096);
        assert_eq!(s.next_offset, 105);
        let (pos, why) = s.stopped.unwrap();
        assert_eq!(pos, BLOCK_SIZE + new_end as u64);
        assert_eq!(
            why,
            StopReason::OffsetGap {
                expected: 105,
                found: 10
            }
        );
        assert!(why.is_earlier_life(100) && !why.is_clean_end());
        assert_eq!(reused_tail_end(&data, new_end, 100, 1 << 20), Some(new_end));
        // A frame of this life past `from` counts as this life's bytes.
        let torn: Vec<(u64, usize, bool)> = (100..106).map(|o| (o, 100, false)).collect();
        let t = segment(&torn);
        let six = frame::frame_len(100) * 6;
        data[..six].copy_from_slice(&t[..six]);
        let s = scan(&data[..], 100, 1 << 20, 4096);
        assert_eq!(s.next_offset, 106);
        assert_eq!(reused_tail_end(&data, new_end, 100, 1 << 20), Some(six));
        // A file with no earlier life: nothing to say, the caller counts non-zero bytes.
        let plain = segment(&new);
        assert_eq!(reused_tail_end(&plain, new_end, 100, 1 << 20), None);
        // A stale frame of this segment's own offsets is not an earlier life.
        assert!(!StopReason::OffsetGap {
            expected: 105,
            found: 103
        }
        .is_earlier_life(100));
    }
}
