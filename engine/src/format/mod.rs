//! The on-disk format: pure encode/decode functions with no I/O, so every byte layout can be
//! tested (and fuzzed) without a disk. `docs/format.md` is the reference; each module here
//! implements one structure from it. All integers are little-endian.

pub mod crc;
pub mod frame;
pub mod logmeta;
pub mod manifest;
pub mod scan;
pub mod segment;
pub mod tier1;

pub(crate) fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub(crate) fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

pub(crate) fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
