//! Ring messages: fixed 128-byte slots, each with its own crc32c.
//!
//! ```text
//! offset  size  field
//!      0     4  crc32c of bytes 4..128
//!      4     1  kind: 1 upload, 2 download, 3 delete, 4 done, 5 failed
//!      5     3  zero
//!      8     8  seq: the message's ring position (catches a stale slot from an earlier lap)
//!     16     8  id: request id, echoed by the reply
//!     24     8  log_id       ┐
//!     32     8  base         │ the segment (its object key is keys::SegmentId::key)
//!     40     4  crc32c       ┘
//!     44     …  per kind:
//!               upload:   44 file_id u64, 52 size u64
//!               download: 44 range start u64, 52 range end u64 (0..u64::MAX = whole object)
//!               delete:   nothing
//!               done:     44 size u64, 52 etag length u8, 53 etag bytes (at most 64)
//!               failed:   44 failure kind u8, 45 retryable u8 (0/1)
//! ```
//! Unused bytes are zero (and covered by the crc).

use super::layout::SLOT_BYTES;
use crate::tier2::failure::FailureKind;
use crate::tier2::keys::SegmentId;
use std::ops::Range;

/// Longest ETag a reply carries (S3's are 32 hex digits, plus "-N" for multipart).
pub const ETAG_MAX: usize = 64;

/// What a message asks or answers. Requests go shard → bridge, replies bridge → shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Upload the sealed segment file `file_id` (the shard's Tier1 file naming resolves it).
    Upload { seg: SegmentId, file_id: u64, size: u64 },
    /// Download the segment, or only `range` of it (a frame, for a point read).
    Download { seg: SegmentId, range: Option<Range<u64>> },
    /// Delete the segment's object (retention).
    Delete { seg: SegmentId },
    /// The request succeeded.
    Done { seg: SegmentId, size: u64, etag: String },
    /// The request failed; `retryable` says whether asking again can help.
    Failed {
        seg: SegmentId,
        kind: FailureKind,
        retryable: bool,
    },
}

/// One message: a request id (echoed by its reply) and a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: u64,
    pub body: Body,
}

impl Body {
    pub fn is_request(&self) -> bool {
        matches!(self, Body::Upload { .. } | Body::Download { .. } | Body::Delete { .. })
    }

    /// The segment the message is about.
    pub fn seg(&self) -> &SegmentId {
        match self {
            Body::Upload { seg, .. }
            | Body::Download { seg, .. }
            | Body::Delete { seg }
            | Body::Done { seg, .. }
            | Body::Failed { seg, .. } => seg,
        }
    }

    fn kind_byte(&self) -> u8 {
        match self {
            Body::Upload { .. } => 1,
            Body::Download { .. } => 2,
            Body::Delete { .. } => 3,
            Body::Done { .. } => 4,
            Body::Failed { .. } => 5,
        }
    }
}

/// Why a slot did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MsgError {
    #[error("slot crc32c {stored:08x}, contents hash to {computed:08x}")]
    Crc { stored: u32, computed: u32 },
    #[error("slot holds message {found}, expected {expected} (stale or misplaced)")]
    Seq { expected: u64, found: u64 },
    #[error("unknown message kind {0}")]
    Kind(u8),
    #[error("unknown failure kind {0}")]
    FailureKind(u8),
    #[error("etag of {0} bytes is longer than {ETAG_MAX}")]
    EtagTooLong(usize),
    #[error("etag is not UTF-8")]
    EtagUtf8,
}

fn put_u64(s: &mut [u8], o: usize, v: u64) {
    s[o..o + 8].copy_from_slice(&v.to_le_bytes());
}

fn get_u64(s: &[u8], o: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&s[o..o + 8]);
    u64::from_le_bytes(b)
}

fn get_u32(s: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([s[o], s[o + 1], s[o + 2], s[o + 3]])
}

/// Encodes `m` as ring message number `seq`.
pub fn encode(m: &Message, seq: u64) -> Result<[u8; SLOT_BYTES], MsgError> {
    let mut s = [0u8; SLOT_BYTES];
    s[4] = m.body.kind_byte();
    put_u64(&mut s, 8, seq);
    put_u64(&mut s, 16, m.id);
    let seg = m.body.seg();
    put_u64(&mut s, 24, seg.log_id);
    put_u64(&mut s, 32, seg.base);
    s[40..44].copy_from_slice(&seg.crc32c.to_le_bytes());
    match &m.body {
        Body::Upload { file_id, size, .. } => {
            put_u64(&mut s, 44, *file_id);
            put_u64(&mut s, 52, *size);
        }
        Body::Download { range, .. } => {
            let r = range.clone().unwrap_or(0..u64::MAX);
            put_u64(&mut s, 44, r.start);
            put_u64(&mut s, 52, r.end);
        }
        Body::Delete { .. } => {}
        Body::Done { size, etag, .. } => {
            if etag.len() > ETAG_MAX {
                return Err(MsgError::EtagTooLong(etag.len()));
            }
            put_u64(&mut s, 44, *size);
            s[52] = etag.len() as u8;
            s[53..53 + etag.len()].copy_from_slice(etag.as_bytes());
        }
        Body::Failed { kind, retryable, .. } => {
            s[44] = FailureKind::ALL.iter().position(|k| k == kind).unwrap_or(0) as u8;
            s[45] = u8::from(*retryable);
        }
    }
    let crc = crc32c::crc32c(&s[4..]);
    s[0..4].copy_from_slice(&crc.to_le_bytes());
    Ok(s)
}

/// Decodes and verifies a slot that should hold message number `seq`.
pub fn decode(s: &[u8; SLOT_BYTES], seq: u64) -> Result<Message, MsgError> {
    let (stored, computed) = (get_u32(s, 0), crc32c::crc32c(&s[4..]));
    if stored != computed {
        return Err(MsgError::Crc { stored, computed });
    }
    if get_u64(s, 8) != seq {
        return Err(MsgError::Seq {
            expected: seq,
            found: get_u64(s, 8),
        });
    }
    let seg = SegmentId {
        log_id: get_u64(s, 24),
        base: get_u64(s, 32),
        crc32c: get_u32(s, 40),
    };
    let (a, b) = (get_u64(s, 44), get_u64(s, 52));
    let body = match s[4] {
        1 => Body::Upload {
            seg,
            file_id: a,
            size: b,
        },
        2 => Body::Download {
            seg,
            range: ((a, b) != (0, u64::MAX)).then_some(a..b),
        },
        3 => Body::Delete { seg },
        4 => {
            let len = s[52] as usize;
            if len > ETAG_MAX {
                return Err(MsgError::EtagTooLong(len));
            }
            let etag = std::str::from_utf8(&s[53..53 + len]).map_err(|_| MsgError::EtagUtf8)?;
            Body::Done {
                seg,
                size: a,
                etag: etag.to_string(),
            }
        }
        5 => {
            let kind = *FailureKind::ALL
                .get(s[44] as usize)
                .ok_or(MsgError::FailureKind(s[44]))?;
            Body::Failed {
                seg,
                kind,
                retryable: s[45] != 0,
            }
        }
        k => return Err(MsgError::Kind(k)),
    };
    Ok(Message {
        id: get_u64(s, 16),
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: SegmentId = SegmentId {
        log_id: 7,
        base: 4096,
        crc32c: 0xdead_beef,
    };

    pub fn samples() -> Vec<Message> {
        let etag = "0123456789abcdef0123456789abcdef-12".to_string();
        [
            Body::Upload {
                seg: SEG,
                file_id: 11,
                size: 1 << 30,
            },
            Body::Download { seg: SEG, range: None },
            Body::Download {
                seg: SEG,
                range: Some(100..200),
            },
            Body::Delete { seg: SEG },
            Body::Done {
                seg: SEG,
                size: 5,
                etag,
            },
            Body::Done {
                seg: SEG,
                size: 5,
                etag: "x".repeat(ETAG_MAX),
            },
            Body::Failed {
                seg: SEG,
                kind: FailureKind::Throttled,
                retryable: true,
            },
            Body::Failed {
                seg: SEG,
                kind: FailureKind::BreakerOpen,
                retryable: false,
            },
        ]
        .into_iter()
        .enumerate()
        .map(|(i, body)| Message {
            id: i as u64 * 1000,
            body,
        })
        .collect()
    }

    #[test]
    fn every_kind_round_trips() {
        for (seq, m) in samples().into_iter().enumerate() {
            let slot = encode(&m, seq as u64).unwrap();
            assert_eq!(decode(&slot, seq as u64).unwrap(), m);
        }
    }

    #[test]
    fn damage_and_staleness_are_caught() {
        let m = &samples()[0];
        let slot = encode(m, 9).unwrap();
        for i in 0..SLOT_BYTES {
            let mut bad = slot;
            bad[i] ^= 0x10;
            assert!(matches!(decode(&bad, 9), Err(MsgError::Crc { .. })), "byte {i}");
        }
        assert_eq!(decode(&slot, 9 + 64), Err(MsgError::Seq { expected: 73, found: 9 }));
        let long = Message {
            id: 1,
            body: Body::Done {
                seg: SEG,
                size: 0,
                etag: "e".repeat(ETAG_MAX + 1),
            },
        };
        assert_eq!(encode(&long, 0), Err(MsgError::EtagTooLong(ETAG_MAX + 1)));
    }
}
