//! Every fixed limit of the engine, in one place, with the reason for its value.
//!
//! Tunable values live in [`crate::Config`]; these are the ones the on-disk format or the
//! kernel interface fixes.

/// O_DIRECT I/O must start and end on a block boundary. 4 KiB is the logical block size of
/// every NVMe and virtual disk we target; a device with a larger logical block is refused at
/// start-up by the direct-I/O probe rather than silently misaligned.
pub const BLOCK_SIZE: u64 = 4096;

/// The segment header occupies the whole first block so record frames start aligned.
pub const SEGMENT_HEADER_BYTES: u64 = BLOCK_SIZE;

/// Bytes of a record frame before its payload (see `docs/format.md`).
pub const FRAME_HEADER_BYTES: usize = 40;

/// Frames are padded so every frame header starts on an 8-byte boundary.
pub const FRAME_ALIGN: usize = 8;

/// Hard ceiling for one record's payload: the frame length field is a `u32`, and a record must
/// be much smaller than a segment. Configurable limits must stay below this.
pub const RECORD_BYTES_CEILING: u32 = 64 << 20;

/// Longest log name, in bytes. Names live in `log.meta`, never in file names, so any UTF-8 is
/// allowed; the bound keeps the metadata file within one block.
pub const LOG_NAME_BYTES_MAX: usize = 1024;

/// Records in one `append_batch`. A batch is written contiguously into one segment.
pub const BATCH_RECORDS_MAX: usize = 65_536;

const _: () = assert!(SEGMENT_HEADER_BYTES.is_multiple_of(BLOCK_SIZE));
const _: () = assert!(FRAME_HEADER_BYTES.is_multiple_of(FRAME_ALIGN));
const _: () = assert!((BLOCK_SIZE as usize).is_multiple_of(FRAME_ALIGN));
