//! Segment header (block 0) and seal trailer (last bytes of a sealed file), plus file naming.
//!
//! A segment file is `header block | frames … | zero pad to a block | index | pad | trailer`.
//! Only sealed segments have an index and trailer; an active segment ends in zeroed,
//! preallocated space. See `docs/format.md` for the byte diagrams.

use crate::format::{le_u32, le_u64, put_u32, put_u64};
use crate::limits::BLOCK_SIZE;

pub const HEADER_MAGIC: [u8; 8] = *b"AOFSEG\0\x01";
pub const TRAILER_MAGIC: [u8; 8] = *b"AOFSEAL\x01";
pub const FORMAT_VERSION: u32 = 1;
pub const HEADER_USED_BYTES: usize = 64;
pub const TRAILER_BYTES: usize = 128;
pub const INDEX_ENTRY_BYTES: usize = 16;

/// Segment file name: the log's persistent id and the segment's base offset, both fixed width
/// so a directory listing sorts in offset order. Never derived from process-local state.
pub fn file_name(log_id: u64, base_offset: u64) -> String {
    format!("{log_id:016x}-{base_offset:020}.seg")
}

/// Parses a name produced by [`file_name`]; `None` for any other file.
pub fn parse_file_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".seg")?;
    let (id, base) = stem.split_once('-')?;
    if id.len() != 16 || base.len() != 20 {
        return None;
    }
    Some((u64::from_str_radix(id, 16).ok()?, base.parse().ok()?))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub log_id: u64,
    pub base_offset: u64,
    pub created_ns: u64,
}

impl SegmentHeader {
    /// Encodes into a full block (the rest zeroed).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; BLOCK_SIZE as usize];
        b[0..8].copy_from_slice(&HEADER_MAGIC);
        put_u32(&mut b, 8, FORMAT_VERSION);
        put_u32(&mut b, 12, 0); // flags
        put_u64(&mut b, 16, self.log_id);
        put_u64(&mut b, 24, self.base_offset);
        put_u64(&mut b, 32, self.created_ns);
        put_u32(&mut b, 40, BLOCK_SIZE as u32);
        let crc = crc32c::crc32c(&b[0..60]);
        put_u32(&mut b, 60, crc);
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self, &'static str> {
        if b.len() < HEADER_USED_BYTES {
            return Err("header truncated");
        }
        if b[0..8] != HEADER_MAGIC {
            return Err("bad header magic");
        }
        if crc32c::crc32c(&b[0..60]) != le_u32(b, 60) {
            return Err("header checksum mismatch");
        }
        if le_u32(b, 8) != FORMAT_VERSION {
            return Err("unsupported segment format version");
        }
        if le_u32(b, 40) as u64 != BLOCK_SIZE {
            return Err("segment written with a different block size");
        }
        Ok(Self {
            log_id: le_u64(b, 16),
            base_offset: le_u64(b, 24),
            created_ns: le_u64(b, 32),
        })
    }
}

/// One sparse index entry: the frame holding `offset` starts at byte `pos` of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub offset: u64,
    pub pos: u64,
}

/// What the trailer of a sealed segment says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    pub base_offset: u64,
    /// One past the last record's offset.
    pub next_offset: u64,
    /// Byte position just after the last frame.
    pub data_end: u64,
    pub index_pos: u64,
    pub index_count: u64,
    pub first_timestamp_ns: u64,
    pub last_timestamp_ns: u64,
    /// crc32c over bytes `[BLOCK_SIZE, data_end)`: every frame with its padding. Carried for
    /// end-to-end integrity checks of whole segments (tiering) without re-framing.
    pub data_crc: u32,
    pub index_crc: u32,
}

/// Encodes the seal region that follows the frames: it starts at `align_up(data_end)` and
/// ends with the trailer as the file's last bytes. Returns the bytes to write at
/// `align_up(trailer.data_end)`; their length is a multiple of the block size.
pub fn encode_seal(mut t: Trailer, index: &[IndexEntry]) -> Vec<u8> {
    let index_bytes = index.len() * INDEX_ENTRY_BYTES;
    let total = align_up((index_bytes + TRAILER_BYTES) as u64) as usize;
    let mut b = vec![0u8; total];
    for (i, e) in index.iter().enumerate() {
        put_u64(&mut b, i * INDEX_ENTRY_BYTES, e.offset);
        put_u64(&mut b, i * INDEX_ENTRY_BYTES + 8, e.pos);
    }
    t.index_pos = align_up(t.data_end);
    t.index_count = index.len() as u64;
    t.index_crc = crc32c::crc32c(&b[..index_bytes]);
    let tr = &mut b[total - TRAILER_BYTES..];
    tr[0..8].copy_from_slice(&TRAILER_MAGIC);
    put_u32(tr, 8, FORMAT_VERSION);
    put_u32(tr, 12, 0);
    put_u64(tr, 16, t.base_offset);
    put_u64(tr, 24, t.next_offset);
    put_u64(tr, 32, t.data_end);
    put_u64(tr, 40, t.index_pos);
    put_u64(tr, 48, t.index_count);
    put_u64(tr, 56, t.first_timestamp_ns);
    put_u64(tr, 64, t.last_timestamp_ns);
    put_u32(tr, 72, t.data_crc);
    put_u32(tr, 76, t.index_crc);
    let crc = crc32c::crc32c(&tr[0..124]);
    put_u32(tr, 124, crc);
    b
}

/// Decodes the last [`TRAILER_BYTES`] of a file, given the file length.
pub fn decode_trailer(tr: &[u8], file_len: u64) -> Result<Trailer, &'static str> {
    if tr.len() != TRAILER_BYTES {
        return Err("trailer truncated");
    }
    if tr[0..8] != TRAILER_MAGIC {
        return Err("no seal trailer");
    }
    if crc32c::crc32c(&tr[0..124]) != le_u32(tr, 124) {
        return Err("trailer checksum mismatch");
    }
    if le_u32(tr, 8) != FORMAT_VERSION {
        return Err("unsupported trailer version");
    }
    let t = Trailer {
        base_offset: le_u64(tr, 16),
        next_offset: le_u64(tr, 24),
        data_end: le_u64(tr, 32),
        index_pos: le_u64(tr, 40),
        index_count: le_u64(tr, 48),
        first_timestamp_ns: le_u64(tr, 56),
        last_timestamp_ns: le_u64(tr, 64),
        data_crc: le_u32(tr, 72),
        index_crc: le_u32(tr, 76),
    };
    let index_end = t.index_pos + t.index_count * INDEX_ENTRY_BYTES as u64;
    let consistent = t.next_offset >= t.base_offset
        && t.data_end >= BLOCK_SIZE
        && t.index_pos == align_up(t.data_end)
        && index_end + TRAILER_BYTES as u64 <= file_len
        && file_len.is_multiple_of(BLOCK_SIZE);
    if !consistent {
        return Err("trailer fields inconsistent with the file");
    }
    Ok(t)
}

pub fn decode_index(b: &[u8], t: &Trailer) -> Result<Vec<IndexEntry>, &'static str> {
    let n = t.index_count as usize;
    if b.len() < n * INDEX_ENTRY_BYTES {
        return Err("index truncated");
    }
    if crc32c::crc32c(&b[..n * INDEX_ENTRY_BYTES]) != t.index_crc {
        return Err("index checksum mismatch");
    }
    let v: Vec<IndexEntry> = (0..n)
        .map(|i| IndexEntry {
            offset: le_u64(b, i * INDEX_ENTRY_BYTES),
            pos: le_u64(b, i * INDEX_ENTRY_BYTES + 8),
        })
        .collect();
    let sorted = v.windows(2).all(|w| w[0].offset < w[1].offset && w[0].pos < w[1].pos);
    if !sorted || v.iter().any(|e| e.pos < BLOCK_SIZE || e.pos >= t.data_end) {
        return Err("index entries out of order or out of range");
    }
    Ok(v)
}

pub const fn align_up(v: u64) -> u64 {
    (v + BLOCK_SIZE - 1) & !(BLOCK_SIZE - 1)
}

pub const fn align_down(v: u64) -> u64 {
    v & !(BLOCK_SIZE - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort() {
        let a = file_name(0xabc, 9);
        let b = file_name(0xabc, 10);
        assert!(a < b);
        assert_eq!(parse_file_name(&a), Some((0xabc, 9)));
        assert_eq!(parse_file_name("junk.seg"), None);
        assert_eq!(parse_file_name("0000000000000abc-00000000000000000009.tmp"), None);
    }

    #[test]
    fn header_round_trip_and_damage() {
        let h = SegmentHeader {
            log_id: 5,
            base_offset: 77,
            created_ns: 3,
        };
        let b = h.encode();
        assert_eq!(SegmentHeader::decode(&b), Ok(h));
        for bit in 0..64 * 8 {
            let mut d = b.clone();
            d[bit / 8] ^= 1 << (bit % 8);
            assert!(SegmentHeader::decode(&d).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn seal_round_trip() {
        let index = vec![
            IndexEntry { offset: 10, pos: 4096 },
            IndexEntry { offset: 20, pos: 9000 },
        ];
        let t = Trailer {
            base_offset: 10,
            next_offset: 30,
            data_end: 12_345,
            index_pos: 0,
            index_count: 0,
            first_timestamp_ns: 1,
            last_timestamp_ns: 2,
            data_crc: 99,
            index_crc: 0,
        };
        let seal = encode_seal(t, &index);
        let file_len = align_up(12_345) + seal.len() as u64;
        let got = decode_trailer(&seal[seal.len() - TRAILER_BYTES..], file_len).unwrap();
        assert_eq!(got.next_offset, 30);
        assert_eq!(got.index_pos, align_up(12_345));
        assert_eq!(decode_index(&seal, &got).unwrap(), index);
        let mut bad = seal.clone();
        bad[3] ^= 1;
        assert!(decode_index(&bad, &got).is_err());
        let n = bad.len();
        bad[n - 20] ^= 1;
        assert!(decode_trailer(&bad[n - TRAILER_BYTES..], file_len).is_err());
    }
}
