//! Record frames: the unit appended to a segment.
//!
//! ```text
//! 0        4        8                16               24               32       36       40
//! | crc32c | len    | offset         | timestamp_ns   | tag            | flags  | magic  | payload … | pad to 8 |
//! ```
//! The crc covers bytes 4..40+len (every header field after itself, and the payload), so a
//! flipped bit anywhere in the frame is caught. `magic` is a constant that makes an all-zero
//! region (preallocated space, a zeroed tail) fail fast before the crc is even computed.

use crate::format::{le_u32, le_u64, put_u32, put_u64};
use crate::limits::{FRAME_ALIGN, FRAME_HEADER_BYTES};

pub const FRAME_MAGIC: u32 = 0xA0F1_F7A3;

/// The record carries a user tag.
pub const FLAG_HAS_TAG: u32 = 1 << 0;
/// More records of the same batch follow this one. Recovery keeps a batch only if the frame
/// that ends it (flag clear) is intact: batches are all-or-nothing across a crash.
pub const FLAG_BATCH_CONTINUES: u32 = 1 << 1;
const FLAGS_KNOWN: u32 = FLAG_HAS_TAG | FLAG_BATCH_CONTINUES;

/// Bytes a frame with `payload_len` bytes of payload occupies on disk, padding included.
pub const fn frame_len(payload_len: usize) -> usize {
    (FRAME_HEADER_BYTES + payload_len + FRAME_ALIGN - 1) & !(FRAME_ALIGN - 1)
}

/// The decoded header of a frame whose crc has been verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub payload_len: u32,
    pub offset: u64,
    pub timestamp_ns: u64,
    pub tag: Option<u64>,
    pub batch_continues: bool,
}

impl FrameHeader {
    pub fn frame_len(&self) -> usize {
        frame_len(self.payload_len as usize)
    }
}

/// Appends one encoded frame to `out`. Returns the number of bytes written.
pub fn encode(
    out: &mut Vec<u8>,
    offset: u64,
    timestamp_ns: u64,
    tag: Option<u64>,
    batch_continues: bool,
    payload: &[u8],
) -> usize {
    let total = frame_len(payload.len());
    let h = header(offset, timestamp_ns, tag, batch_continues, payload);
    out.reserve(total);
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    out.extend_from_slice(&PAD[..total - FRAME_HEADER_BYTES - payload.len()]);
    total
}

/// Encodes one frame into `out`, which must be exactly `frame_len(payload.len())` bytes (the
/// active segment's DMA buffer: see `staging`). Every byte of `out` is written.
pub fn encode_into(
    out: &mut [u8],
    offset: u64,
    timestamp_ns: u64,
    tag: Option<u64>,
    batch_continues: bool,
    payload: &[u8],
) {
    debug_assert_eq!(out.len(), frame_len(payload.len()));
    let h = header(offset, timestamp_ns, tag, batch_continues, payload);
    let (head, rest) = out.split_at_mut(FRAME_HEADER_BYTES);
    head.copy_from_slice(&h);
    let (body, pad) = rest.split_at_mut(payload.len());
    body.copy_from_slice(payload);
    pad.fill(0);
}

const PAD: [u8; FRAME_ALIGN] = [0; FRAME_ALIGN];

/// A frame's header, its crc over the header fields and the payload included. Built on the
/// stack so the payload is copied once, with no zero-fill first.
fn header(
    offset: u64,
    timestamp_ns: u64,
    tag: Option<u64>,
    batch_continues: bool,
    payload: &[u8],
) -> [u8; FRAME_HEADER_BYTES] {
    let mut flags = 0;
    if tag.is_some() {
        flags |= FLAG_HAS_TAG;
    }
    if batch_continues {
        flags |= FLAG_BATCH_CONTINUES;
    }
    let mut h = [0u8; FRAME_HEADER_BYTES];
    put_u32(&mut h, 4, payload.len() as u32);
    put_u64(&mut h, 8, offset);
    put_u64(&mut h, 16, timestamp_ns);
    put_u64(&mut h, 24, tag.unwrap_or(0));
    put_u32(&mut h, 32, flags);
    put_u32(&mut h, 36, FRAME_MAGIC);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&h[4..]), payload);
    put_u32(&mut h, 0, crc);
    h
}

/// Why bytes at a position are not a valid frame. Recovery stops at the first one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes remain than a frame header (or the frame) needs.
    Truncated,
    /// The magic is wrong: typically zeroed or never-written space.
    BadMagic,
    /// The payload length exceeds the configured maximum.
    BadLength,
    /// Unknown flag bits are set.
    BadFlags,
    /// The crc does not match the content.
    BadChecksum,
}

/// Decodes and verifies the frame at the start of `b`. `max_payload` bounds the length field so
/// a corrupted length cannot make the caller read far past the frame.
pub fn decode(b: &[u8], max_payload: u32) -> Result<FrameHeader, FrameError> {
    if b.len() < FRAME_HEADER_BYTES {
        return Err(FrameError::Truncated);
    }
    if le_u32(b, 36) != FRAME_MAGIC {
        return Err(FrameError::BadMagic);
    }
    let len = le_u32(b, 4);
    if len > max_payload {
        return Err(FrameError::BadLength);
    }
    let flags = le_u32(b, 32);
    if flags & !FLAGS_KNOWN != 0 {
        return Err(FrameError::BadFlags);
    }
    let end = FRAME_HEADER_BYTES + len as usize;
    if b.len() < end {
        return Err(FrameError::Truncated);
    }
    if crc32c::crc32c(&b[4..end]) != le_u32(b, 0) {
        return Err(FrameError::BadChecksum);
    }
    Ok(FrameHeader {
        payload_len: len,
        offset: le_u64(b, 8),
        timestamp_ns: le_u64(b, 16),
        tag: (flags & FLAG_HAS_TAG != 0).then(|| le_u64(b, 24)),
        batch_continues: flags & FLAG_BATCH_CONTINUES != 0,
    })
}

/// Reads only the length field of a frame header, without verification, so a reader can tell
/// how many bytes to fetch before calling [`decode`]. `None` if the header is not all there or
/// the magic is wrong.
pub fn peek_len(b: &[u8]) -> Option<u32> {
    if b.len() < FRAME_HEADER_BYTES || le_u32(b, 36) != FRAME_MAGIC {
        return None;
    }
    Some(le_u32(b, 4))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_many_lengths() {
        for len in [0usize, 1, 7, 8, 9, 31, 32, 33, 4095, 4096, 4097, 100_003] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 31 + len) as u8).collect();
            let mut out = Vec::new();
            let n = encode(&mut out, 42, 7, Some(9), len % 2 == 0, &payload);
            assert_eq!(n, out.len());
            assert_eq!(n % FRAME_ALIGN, 0);
            let h = decode(&out, 1 << 20).unwrap();
            assert_eq!(h.offset, 42);
            assert_eq!(h.timestamp_ns, 7);
            assert_eq!(h.tag, Some(9));
            assert_eq!(h.batch_continues, len % 2 == 0);
            assert_eq!(h.payload_len as usize, len);
            assert_eq!(&out[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + len], &payload[..]);
            // Padding is zero so the region is deterministic for checksums over whole segments.
            assert!(out[FRAME_HEADER_BYTES + len..].iter().all(|&b| b == 0));
        }
    }

    /// Encoding into a slice (the staged DMA buffer, full of an earlier write's bytes) gives
    /// exactly the bytes `encode` appends: the padding is zeroed, not left over.
    #[test]
    fn encode_into_a_dirty_slice_matches_encode() {
        for len in [0usize, 1, 7, 8, 9, 33, 4096, 4097] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 17 + 3) as u8).collect();
            let mut want = Vec::new();
            let n = encode(&mut want, 5, 6, None, true, &payload);
            let mut out = vec![0xAB; n];
            encode_into(&mut out, 5, 6, None, true, &payload);
            assert_eq!(out, want, "payload of {len} bytes");
        }
    }

    #[test]
    fn every_bit_flip_is_detected() {
        let mut out = Vec::new();
        encode(&mut out, 1, 2, None, false, b"hello world, odd length!");
        let used = FRAME_HEADER_BYTES + 24;
        for bit in 0..used * 8 {
            let mut d = out.clone();
            d[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(&d, 1 << 20).is_err(), "flip of bit {bit} not detected");
        }
    }

    #[test]
    fn zeroes_and_truncation_are_rejected() {
        assert_eq!(decode(&[0u8; 64], 100), Err(FrameError::BadMagic));
        let mut out = Vec::new();
        encode(&mut out, 1, 2, None, false, &[5u8; 100]);
        for cut in 0..FRAME_HEADER_BYTES + 100 {
            assert!(decode(&out[..cut], 1000).is_err());
        }
        assert_eq!(decode(&out, 99), Err(FrameError::BadLength));
    }
}
