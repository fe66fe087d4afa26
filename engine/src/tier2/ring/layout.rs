//! The ring file's bytes. Little-endian throughout; pure functions, no I/O.
//!
//! ```text
//! offset  size  field
//!      0     8  magic "AOFRING1"
//!      8     4  version (1)
//!     12     4  slot_bytes (128)
//!     16     8  capacity: slots, a power of two
//!     24     4  direction: 1 = requests (shard → bridge), 2 = replies (bridge → shard)
//!     28     4  shard index
//!     32    28  reserved, zero
//!     60     4  crc32c of bytes 0..60
//!     64    64  zero
//!    128     8  head: AtomicU64, next slot the consumer reads (written by the consumer only)
//!    136   120  zero: head alone on its 128-byte pair of cache lines
//!    256     8  tail: AtomicU64, next slot the producer writes (written by the producer only)
//!    264   120  zero
//!    384     …  capacity × slot_bytes slots; slot i holds message number n where n % capacity = i
//! ```
//!
//! head and tail are free-running u64 counters (never wrapped: at 10^9 messages a second they
//! last 584 years); `tail - head` is the number of queued messages, at most `capacity`. Each
//! counter has 128 bytes to itself because x86's adjacent-line prefetcher pulls cache lines in
//! pairs: with 64 bytes, the producer's tail and the consumer's head could still ping-pong.
//! The static fields are covered by a crc so that a torn or foreign file is refused at open.

/// File magic; the trailing digit is not the version (that is the next field).
pub const MAGIC: [u8; 8] = *b"AOFRING1";
pub const VERSION: u32 = 1;
pub const SLOT_BYTES: usize = 128;
pub const HEADER_CRC_OFFSET: usize = 60;
pub const HEAD_OFFSET: usize = 128;
pub const TAIL_OFFSET: usize = 256;
pub const SLOTS_OFFSET: usize = 384;
/// Largest ring accepted: 2^20 slots × 128 B = 128 MiB of shared memory.
pub const CAPACITY_MAX: u64 = 1 << 20;

const _: () = assert!(HEAD_OFFSET >= HEADER_CRC_OFFSET + 4 && HEAD_OFFSET.is_multiple_of(128));
const _: () = assert!(TAIL_OFFSET == HEAD_OFFSET + 128 && SLOTS_OFFSET == TAIL_OFFSET + 128);
const _: () = assert!(SLOT_BYTES.is_power_of_two() && SLOTS_OFFSET.is_multiple_of(SLOT_BYTES));

/// Which way a ring carries messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Shard → bridge.
    Requests = 1,
    /// Bridge → shard.
    Replies = 2,
}

/// What a ring file is: checked against the header at every open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub capacity: u64,
    pub direction: Direction,
    pub shard: u32,
}

impl Geometry {
    /// Total file size.
    pub fn file_bytes(&self) -> u64 {
        SLOTS_OFFSET as u64 + self.capacity * SLOT_BYTES as u64
    }

    pub fn valid(&self) -> bool {
        self.capacity.is_power_of_two() && self.capacity <= CAPACITY_MAX
    }
}

/// Why a header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    #[error("not a ring file (magic {0:02x?})")]
    Magic([u8; 8]),
    #[error("header crc32c {stored:08x} does not match its contents ({computed:08x})")]
    Crc { stored: u32, computed: u32 },
    #[error("unsupported ring version {0}")]
    Version(u32),
    #[error("slot size {0}, expected {SLOT_BYTES}")]
    SlotBytes(u32),
    #[error("ring is {found:?}, expected {expected:?}")]
    Geometry { expected: Geometry, found: GeometryFields },
    #[error("reserved header bytes are not zero")]
    Reserved,
}

/// The geometry fields as found (a direction may be invalid in a bad file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GeometryFields {
    pub capacity: u64,
    pub direction: u32,
    pub shard: u32,
}

/// The first `SLOTS_OFFSET` bytes of a new ring (head = tail = 0).
pub fn encode_header(g: &Geometry) -> [u8; SLOTS_OFFSET] {
    let mut h = [0u8; SLOTS_OFFSET];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(SLOT_BYTES as u32).to_le_bytes());
    h[16..24].copy_from_slice(&g.capacity.to_le_bytes());
    h[24..28].copy_from_slice(&(g.direction as u32).to_le_bytes());
    h[28..32].copy_from_slice(&g.shard.to_le_bytes());
    let crc = crc32c::crc32c(&h[..HEADER_CRC_OFFSET]);
    h[HEADER_CRC_OFFSET..HEADER_CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Checks the static header (the first 128 bytes) against what the opener expects.
pub fn check_header(h: &[u8], expected: &Geometry) -> Result<(), HeaderError> {
    let u32_at = |o: usize| u32::from_le_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
    let mut magic = [0u8; 8];
    magic.copy_from_slice(&h[0..8]);
    if magic != MAGIC {
        return Err(HeaderError::Magic(magic));
    }
    let stored = u32_at(HEADER_CRC_OFFSET);
    let computed = crc32c::crc32c(&h[..HEADER_CRC_OFFSET]);
    if stored != computed {
        return Err(HeaderError::Crc { stored, computed });
    }
    if u32_at(8) != VERSION {
        return Err(HeaderError::Version(u32_at(8)));
    }
    if u32_at(12) as usize != SLOT_BYTES {
        return Err(HeaderError::SlotBytes(u32_at(12)));
    }
    if h[32..HEADER_CRC_OFFSET]
        .iter()
        .chain(&h[64..HEAD_OFFSET])
        .any(|b| *b != 0)
    {
        return Err(HeaderError::Reserved);
    }
    let mut cap = [0u8; 8];
    cap.copy_from_slice(&h[16..24]);
    let found = GeometryFields {
        capacity: u64::from_le_bytes(cap),
        direction: u32_at(24),
        shard: u32_at(28),
    };
    let want = GeometryFields {
        capacity: expected.capacity,
        direction: expected.direction as u32,
        shard: expected.shard,
    };
    if found != want {
        return Err(HeaderError::Geometry {
            expected: *expected,
            found,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: Geometry = Geometry {
        capacity: 8,
        direction: Direction::Replies,
        shard: 3,
    };

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let h = encode_header(&G);
        check_header(&h, &G).unwrap();
        assert_eq!(G.file_bytes(), 384 + 8 * 128);

        let mut bad = h;
        bad[0] = b'X';
        assert!(matches!(check_header(&bad, &G), Err(HeaderError::Magic(_))));
        let mut bad = h;
        bad[17] ^= 1;
        assert!(matches!(check_header(&bad, &G), Err(HeaderError::Crc { .. })));
        let other = Geometry { shard: 4, ..G };
        assert!(matches!(check_header(&h, &other), Err(HeaderError::Geometry { .. })));
        let other = Geometry {
            direction: Direction::Requests,
            ..G
        };
        assert!(matches!(check_header(&h, &other), Err(HeaderError::Geometry { .. })));
        let mut bad = h;
        bad[70] = 1;
        assert_eq!(check_header(&bad, &G), Err(HeaderError::Reserved));
    }

    #[test]
    fn geometry_limits() {
        assert!(G.valid());
        assert!(!Geometry { capacity: 6, ..G }.valid());
        assert!(!Geometry {
            capacity: CAPACITY_MAX * 2,
            ..G
        }
        .valid());
    }
}
