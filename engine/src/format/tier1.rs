//! Tier1 files: a sealed segment recompressed into independently decodable frames, so a point
//! read decodes one frame and never the whole segment.
//!
//! ```text
//! | header block | frame 0 | frame 1 | … | zero pad to block | frame index | zero pad | trailer |
//!  0             4096                comp_end               index_pos                 len-64
//! ```
//!
//! A frame holds the bytes of whole records exactly as they were in the segment (frames with
//! their own crc32c), compressed as one zstd frame (or stored as is for the `none` profile).
//! The frame index maps each frame to its first record offset, its position in the original
//! segment (`raw_pos`) and its compressed bytes, with a crc32c of those compressed bytes, so a
//! damaged frame is detected before it reaches the decompressor. See `docs/format.md`.

use crate::format::segment::align_up;
use crate::format::{le_u32, le_u64, put_u32, put_u64};
use crate::limits::BLOCK_SIZE;

pub const HEADER_MAGIC: [u8; 8] = *b"AOFT1\0\0\x01";
pub const TRAILER_MAGIC: [u8; 8] = *b"AOFT1END";
pub const VERSION: u32 = 1;
pub const HEADER_USED_BYTES: usize = 128;
pub const FRAME_ENTRY_BYTES: usize = 40;
pub const TRAILER_BYTES: usize = 64;

/// Tier1 file name: the segment's name with `.t1` for `.seg`.
pub fn file_name(log_id: u64, base_offset: u64) -> String {
    format!("{log_id:016x}-{base_offset:020}.t1")
}

/// Parses a name produced by [`file_name`].
pub fn parse_file_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".t1")?;
    crate::format::segment::parse_file_name(&format!("{stem}.seg"))
}

/// How frames are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Frames hold the segment bytes unchanged (`comp_len == raw_len`).
    Stored = 0,
    Zstd = 1,
}

impl Codec {
    pub fn from_u32(v: u32) -> Option<Codec> {
        match v {
            0 => Some(Codec::Stored),
            1 => Some(Codec::Zstd),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub codec: Codec,
    pub log_id: u64,
    pub base_offset: u64,
    pub next_offset: u64,
    /// `data_end` of the segment this was made from: frames cover `[4096, data_end)`.
    pub data_end: u64,
    /// The segment's `data_crc` (crc32c of `[4096, data_end)`), checked while compressing.
    pub data_crc: u32,
    pub level: i32,
    pub frame_target: u32,
    pub created_ns: u64,
}

impl Header {
    /// Encodes into a full block.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; BLOCK_SIZE as usize];
        b[0..8].copy_from_slice(&HEADER_MAGIC);
        put_u32(&mut b, 8, VERSION);
        put_u32(&mut b, 12, self.codec as u32);
        put_u64(&mut b, 16, self.log_id);
        put_u64(&mut b, 24, self.base_offset);
        put_u64(&mut b, 32, self.next_offset);
        put_u64(&mut b, 40, self.data_end);
        put_u64(&mut b, 48, self.created_ns);
        put_u32(&mut b, 56, self.data_crc);
        put_u32(&mut b, 60, self.level as u32);
        put_u32(&mut b, 64, self.frame_target);
        let crc = crc32c::crc32c(&b[0..124]);
        put_u32(&mut b, 124, crc);
        b
    }

    pub fn decode(b: &[u8]) -> Result<Header, &'static str> {
        if b.len() < HEADER_USED_BYTES {
            return Err("tier1 header truncated");
        }
        if b[0..8] != HEADER_MAGIC {
            return Err("bad tier1 header magic");
        }
        if crc32c::crc32c(&b[0..124]) != le_u32(b, 124) {
            return Err("tier1 header checksum mismatch");
        }
        if le_u32(b, 8) != VERSION {
            return Err("unsupported tier1 version");
        }
        let codec = Codec::from_u32(le_u32(b, 12)).ok_or("unknown tier1 codec")?;
        Ok(Header {
            codec,
            log_id: le_u64(b, 16),
            base_offset: le_u64(b, 24),
            next_offset: le_u64(b, 32),
            data_end: le_u64(b, 40),
            created_ns: le_u64(b, 48),
            data_crc: le_u32(b, 56),
            level: le_u32(b, 60) as i32,
            frame_target: le_u32(b, 64),
        })
    }
}

/// One frame of a Tier1 file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameEntry {
    /// Offset of the first record in the frame.
    pub first_offset: u64,
    /// Where the frame's bytes started in the original segment.
    pub raw_pos: u64,
    /// Where the compressed frame starts in the Tier1 file.
    pub comp_pos: u64,
    pub comp_len: u32,
    pub raw_len: u32,
    /// crc32c of the compressed bytes.
    pub comp_crc: u32,
    pub records: u32,
}

/// The trailer, the file's last 64 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    pub frame_count: u32,
    pub index_pos: u64,
    /// One past the last compressed byte.
    pub comp_end: u64,
    pub base_offset: u64,
    pub next_offset: u64,
    pub index_crc: u32,
}

/// Encodes the index and trailer that follow the frames: the returned bytes go at
/// `align_up(comp_end)` and their length is a multiple of the block size.
pub fn encode_tail(frames: &[FrameEntry], comp_end: u64, base_offset: u64, next_offset: u64) -> Vec<u8> {
    let index_bytes = frames.len() * FRAME_ENTRY_BYTES;
    let total = align_up((index_bytes + TRAILER_BYTES) as u64) as usize;
    let mut b = vec![0u8; total];
    for (i, f) in frames.iter().enumerate() {
        let at = i * FRAME_ENTRY_BYTES;
        put_u64(&mut b, at, f.first_offset);
        put_u64(&mut b, at + 8, f.raw_pos);
        put_u64(&mut b, at + 16, f.comp_pos);
        put_u32(&mut b, at + 24, f.comp_len);
        put_u32(&mut b, at + 28, f.raw_len);
        put_u32(&mut b, at + 32, f.comp_crc);
        put_u32(&mut b, at + 36, f.records);
    }
    let index_crc = crc32c::crc32c(&b[..index_bytes]);
    let tr = &mut b[total - TRAILER_BYTES..];
    tr[0..8].copy_from_slice(&TRAILER_MAGIC);
    put_u32(tr, 8, VERSION);
    put_u32(tr, 12, frames.len() as u32);
    put_u64(tr, 16, align_up(comp_end));
    put_u64(tr, 24, comp_end);
    put_u64(tr, 32, base_offset);
    put_u64(tr, 40, next_offset);
    put_u32(tr, 48, index_crc);
    let crc = crc32c::crc32c(&tr[0..60]);
    put_u32(tr, 60, crc);
    b
}

pub fn decode_trailer(tr: &[u8], file_len: u64) -> Result<Trailer, &'static str> {
    if tr.len() != TRAILER_BYTES {
        return Err("tier1 trailer truncated");
    }
    if tr[0..8] != TRAILER_MAGIC {
        return Err("no tier1 trailer");
    }
    if crc32c::crc32c(&tr[0..60]) != le_u32(tr, 60) {
        return Err("tier1 trailer checksum mismatch");
    }
    if le_u32(tr, 8) != VERSION {
        return Err("unsupported tier1 trailer version");
    }
    let t = Trailer {
        frame_count: le_u32(tr, 12),
        index_pos: le_u64(tr, 16),
        comp_end: le_u64(tr, 24),
        base_offset: le_u64(tr, 32),
        next_offset: le_u64(tr, 40),
        index_crc: le_u32(tr, 48),
    };
    let index_end = t.index_pos + t.frame_count as u64 * FRAME_ENTRY_BYTES as u64;
    let ok = t.comp_end >= BLOCK_SIZE
        && t.index_pos == align_up(t.comp_end)
        && index_end + TRAILER_BYTES as u64 <= file_len
        && file_len.is_multiple_of(BLOCK_SIZE)
        && t.next_offset >= t.base_offset;
    if !ok {
        return Err("tier1 trailer fields inconsistent with the file");
    }
    Ok(t)
}

/// Decodes and checks the frame index: frames tile `[4096, comp_end)` of the file and
/// `[4096, data_end)` of the original segment, in offset order, inside `[base, next)`.
pub fn decode_index(b: &[u8], t: &Trailer, data_end: u64) -> Result<Vec<FrameEntry>, &'static str> {
    let n = t.frame_count as usize;
    if b.len() < n * FRAME_ENTRY_BYTES {
        return Err("tier1 index truncated");
    }
    if crc32c::crc32c(&b[..n * FRAME_ENTRY_BYTES]) != t.index_crc {
        return Err("tier1 index checksum mismatch");
    }
    let frames: Vec<FrameEntry> = (0..n)
        .map(|i| {
            let at = i * FRAME_ENTRY_BYTES;
            FrameEntry {
                first_offset: le_u64(b, at),
                raw_pos: le_u64(b, at + 8),
                comp_pos: le_u64(b, at + 16),
                comp_len: le_u32(b, at + 24),
                raw_len: le_u32(b, at + 28),
                comp_crc: le_u32(b, at + 32),
                records: le_u32(b, at + 36),
            }
        })
        .collect();
    let (mut comp, mut raw, mut next) = (BLOCK_SIZE, BLOCK_SIZE, t.base_offset);
    for f in &frames {
        if f.comp_pos != comp || f.raw_pos != raw || f.first_offset != next || f.records == 0 || f.raw_len == 0 {
            return Err("tier1 frames do not tile the file");
        }
        comp += f.comp_len as u64;
        raw += f.raw_len as u64;
        next += f.records as u64;
    }
    if comp != t.comp_end || raw != data_end || next != t.next_offset {
        return Err("tier1 frames do not cover the segment");
    }
    Ok(frames)
}

/// The frame holding raw segment position `pos`.
pub fn frame_at(frames: &[FrameEntry], pos: u64) -> Option<usize> {
    let i = frames.partition_point(|f| f.raw_pos <= pos);
    let i = i.checked_sub(1)?;
    (pos < frames[i].raw_pos + frames[i].raw_len as u64).then_some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames() -> Vec<FrameEntry> {
        vec![
            FrameEntry {
                first_offset: 10,
                raw_pos: 4096,
                comp_pos: 4096,
                comp_len: 100,
                raw_len: 1000,
                comp_crc: 1,
                records: 5,
            },
            FrameEntry {
                first_offset: 15,
                raw_pos: 5096,
                comp_pos: 4196,
                comp_len: 50,
                raw_len: 400,
                comp_crc: 2,
                records: 2,
            },
        ]
    }

    #[test]
    fn tail_round_trip_and_damage() {
        let f = frames();
        let tail = encode_tail(&f, 4246, 10, 17);
        let len = align_up(4246) + tail.len() as u64;
        let t = decode_trailer(&tail[tail.len() - TRAILER_BYTES..], len).unwrap();
        assert_eq!(t.frame_count, 2);
        assert_eq!(decode_index(&tail, &t, 5496).unwrap(), f);
        assert!(decode_index(&tail, &t, 5497).is_err(), "frames must cover data_end");
        for bit in 0..(2 * FRAME_ENTRY_BYTES * 8) {
            let mut d = tail.clone();
            d[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_index(&d, &t, 5496).is_err(), "index bit {bit}");
        }
        for bit in 0..(TRAILER_BYTES * 8) {
            let mut d = tail.clone();
            let n = d.len();
            d[n - TRAILER_BYTES + bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode_trailer(&d[n - TRAILER_BYTES..], len).is_err(),
                "trailer bit {bit}"
            );
        }
        assert_eq!(frame_at(&f, 4096), Some(0));
        assert_eq!(frame_at(&f, 5095), Some(0));
        assert_eq!(frame_at(&f, 5096), Some(1));
        assert_eq!(frame_at(&f, 5496), None);
        assert_eq!(frame_at(&f, 100), None);
    }

    #[test]
    fn header_round_trip_and_damage() {
        let h = Header {
            codec: Codec::Zstd,
            log_id: 7,
            base_offset: 10,
            next_offset: 17,
            data_end: 5496,
            data_crc: 0xdead,
            level: -3,
            frame_target: 65536,
            created_ns: 9,
        };
        let b = h.encode();
        assert_eq!(Header::decode(&b), Ok(h));
        for bit in 0..(HEADER_USED_BYTES * 8) {
            let mut d = b.clone();
            d[bit / 8] ^= 1 << (bit % 8);
            assert!(Header::decode(&d).is_err(), "bit {bit}");
        }
        assert_eq!(parse_file_name(&file_name(7, 10)), Some((7, 10)));
        assert_eq!(parse_file_name("0000000000000007-00000000000000000010.seg"), None);
    }
}
