//! The shard manifest: the durable truth about each sealed segment's lifecycle (sealed,
//! compressed into Tier1, upload requested, uploaded, evicted from Tier1, deleted), as
//! append-only records with a crc32c each, and the snapshot that compacts them.
//!
//! ```text
//! manifest.log:  | file header (32 B) | record | record | …
//! manifest.snap: | file header (32 B) | record | record | …   (written whole, then renamed)
//! record:        | body_len u32 | crc32c(body) u32 | body: kind u8, fields … |
//! ```
//!
//! Both files start with the same header carrying a generation number. The log applies on top
//! of the snapshot with the same generation; a log with another generation is stale (a crash
//! during compaction, after the new snapshot was in place) and is ignored. `State::apply` gives
//! the records their meaning, with no I/O, so replay is unit-tested. See `docs/format.md`.

use crate::format::{le_u32, le_u64, put_u32, put_u64};
use std::collections::BTreeMap;

pub const LOG_MAGIC: [u8; 8] = *b"AOFMLOG\x01";
pub const SNAP_MAGIC: [u8; 8] = *b"AOFMSNP\x01";
pub const VERSION: u32 = 1;
pub const FILE_HEADER_BYTES: usize = 32;
pub const RECORD_PREFIX_BYTES: usize = 8;
/// A record body is far smaller; anything larger is damage, not a record.
pub const RECORD_BODY_MAX: usize = 4096;
pub const LOG_FILE: &str = "manifest.log";
pub const SNAP_FILE: &str = "manifest.snap";

/// Where a Tier2 copy lives, as the bridge reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    pub key: String,
    pub size: u64,
    pub crc32c: u32,
    pub etag: String,
}

/// One change to the manifest. Every variant names a segment by `(log_id, base)` except
/// `Retention`, which is per log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// The segment's seal is durable; `data_end`/`data_crc` are from its trailer.
    Sealed {
        log_id: u64,
        base: u64,
        next_offset: u64,
        data_end: u64,
        data_crc: u32,
        last_timestamp_ns: u64,
    },
    /// Its Tier1 file is durable (`file_len` bytes, crc32c `file_crc` over all of them: the
    /// content checksum its Tier2 object key and integrity checks use); the raw `.seg` file
    /// may now go.
    Compressed {
        log_id: u64,
        base: u64,
        file_len: u64,
        file_crc: u32,
        codec: u32,
        level: i32,
    },
    /// The Tier1 file was lost or found damaged and the raw segment is the local copy again.
    Uncompressed {
        log_id: u64,
        base: u64,
    },
    UploadRequested {
        log_id: u64,
        base: u64,
    },
    Uploaded {
        log_id: u64,
        base: u64,
        object: ObjectRef,
    },
    /// The local copy was removed; the Tier2 copy is the only one.
    Evicted {
        log_id: u64,
        base: u64,
    },
    /// Removed by retention, with every segment of the log below it. `tier2_pending`: the
    /// Tier2 copy still has to be deleted.
    Deleted {
        log_id: u64,
        base: u64,
        next_offset: u64,
        tier2_pending: bool,
    },
    /// The Tier2 copy of a deleted segment is gone too.
    Tier2Deleted {
        log_id: u64,
        base: u64,
    },
    /// The log's retention policy; 0 means no limit.
    Retention {
        log_id: u64,
        max_age_ns: u64,
        max_bytes: u64,
    },
}

const K_SEALED: u8 = 1;
const K_COMPRESSED: u8 = 2;
const K_UNCOMPRESSED: u8 = 3;
const K_UPLOAD_REQUESTED: u8 = 4;
const K_UPLOADED: u8 = 5;
const K_EVICTED: u8 = 6;
const K_DELETED: u8 = 7;
const K_TIER2_DELETED: u8 = 8;
const K_RETENTION: u8 = 9;

impl Record {
    /// Appends the encoded record (prefix and body) to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0u8; RECORD_PREFIX_BYTES]);
        let u64s = |out: &mut Vec<u8>, vs: &[u64]| vs.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
        match self {
            Record::Sealed {
                log_id,
                base,
                next_offset,
                data_end,
                data_crc,
                last_timestamp_ns,
            } => {
                out.push(K_SEALED);
                u64s(out, &[*log_id, *base, *next_offset, *data_end, *last_timestamp_ns]);
                out.extend_from_slice(&data_crc.to_le_bytes());
            }
            Record::Compressed {
                log_id,
                base,
                file_len,
                file_crc,
                codec,
                level,
            } => {
                out.push(K_COMPRESSED);
                u64s(out, &[*log_id, *base, *file_len]);
                out.extend_from_slice(&file_crc.to_le_bytes());
                out.extend_from_slice(&codec.to_le_bytes());
                out.extend_from_slice(&level.to_le_bytes());
            }
            Record::Uncompressed { log_id, base } => {
                out.push(K_UNCOMPRESSED);
                u64s(out, &[*log_id, *base]);
            }
            Record::UploadRequested { log_id, base } => {
                out.push(K_UPLOAD_REQUESTED);
                u64s(out, &[*log_id, *base]);
            }
            Record::Uploaded { log_id, base, object } => {
                out.push(K_UPLOADED);
                u64s(out, &[*log_id, *base, object.size]);
                out.extend_from_slice(&object.crc32c.to_le_bytes());
                for s in [&object.key, &object.etag] {
                    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                    out.extend_from_slice(s.as_bytes());
                }
            }
            Record::Evicted { log_id, base } => {
                out.push(K_EVICTED);
                u64s(out, &[*log_id, *base]);
            }
            Record::Deleted {
                log_id,
                base,
                next_offset,
                tier2_pending,
            } => {
                out.push(K_DELETED);
                u64s(out, &[*log_id, *base, *next_offset]);
                out.push(*tier2_pending as u8);
            }
            Record::Tier2Deleted { log_id, base } => {
                out.push(K_TIER2_DELETED);
                u64s(out, &[*log_id, *base]);
            }
            Record::Retention {
                log_id,
                max_age_ns,
                max_bytes,
            } => {
                out.push(K_RETENTION);
                u64s(out, &[*log_id, *max_age_ns, *max_bytes]);
            }
        }
        let body_len = out.len() - start - RECORD_PREFIX_BYTES;
        debug_assert!(body_len <= RECORD_BODY_MAX);
        let crc = crc32c::crc32c(&out[start + RECORD_PREFIX_BYTES..]);
        put_u32(out, start, body_len as u32);
        put_u32(out, start + 4, crc);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode_into(&mut v);
        v
    }

    fn decode_body(b: &[u8]) -> Option<Record> {
        let mut r = Reader { b, at: 1 };
        let kind = *b.first()?;
        let rec = match kind {
            K_SEALED => Record::Sealed {
                log_id: r.u64()?,
                base: r.u64()?,
                next_offset: r.u64()?,
                data_end: r.u64()?,
                last_timestamp_ns: r.u64()?,
                data_crc: r.u32()?,
            },
            K_COMPRESSED => Record::Compressed {
                log_id: r.u64()?,
                base: r.u64()?,
                file_len: r.u64()?,
                file_crc: r.u32()?,
                codec: r.u32()?,
                level: r.u32()? as i32,
            },
            K_UNCOMPRESSED => Record::Uncompressed {
                log_id: r.u64()?,
                base: r.u64()?,
            },
            K_UPLOAD_REQUESTED => Record::UploadRequested {
                log_id: r.u64()?,
                base: r.u64()?,
            },
            K_UPLOADED => {
                let (log_id, base, size, crc32c) = (r.u64()?, r.u64()?, r.u64()?, r.u32()?);
                let key = r.string()?;
                let etag = r.string()?;
                Record::Uploaded {
                    log_id,
                    base,
                    object: ObjectRef {
                        key,
                        size,
                        crc32c,
                        etag,
                    },
                }
            }
            K_EVICTED => Record::Evicted {
                log_id: r.u64()?,
                base: r.u64()?,
            },
            K_DELETED => Record::Deleted {
                log_id: r.u64()?,
                base: r.u64()?,
                next_offset: r.u64()?,
                tier2_pending: r.u8()? != 0,
            },
            K_TIER2_DELETED => Record::Tier2Deleted {
                log_id: r.u64()?,
                base: r.u64()?,
            },
            K_RETENTION => Record::Retention {
                log_id: r.u64()?,
                max_age_ns: r.u64()?,
                max_bytes: r.u64()?,
            },
            _ => return None,
        };
        (r.at == b.len()).then_some(rec)
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(le_u32(self.take(4)?, 0))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(le_u64(self.take(8)?, 0))
    }
    fn string(&mut self) -> Option<String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

/// Why decoding a stream of records stopped before the end of the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// Fewer bytes than a record needs: a torn append.
    Torn,
    /// A record whose checksum or contents do not verify.
    Damaged,
}

/// Decodes records from `b` until the end or the first record that does not verify.
/// Returns the records, the length of the valid prefix, and why it stopped early (if it did).
pub fn decode_records(b: &[u8]) -> (Vec<Record>, usize, Option<Stop>) {
    let mut out = Vec::new();
    let mut at = 0;
    while at < b.len() {
        if b.len() - at < RECORD_PREFIX_BYTES {
            return (out, at, Some(Stop::Torn));
        }
        let len = le_u32(b, at) as usize;
        let crc = le_u32(b, at + 4);
        if len == 0 && crc == 0 && b[at..].iter().all(|&x| x == 0) {
            // Zeroed space after the last record (a preallocated or zero-extended tail).
            return (out, at, Some(Stop::Torn));
        }
        if len == 0 || len > RECORD_BODY_MAX {
            return (out, at, Some(Stop::Damaged));
        }
        let Some(body) = b.get(at + RECORD_PREFIX_BYTES..at + RECORD_PREFIX_BYTES + len) else {
            return (out, at, Some(Stop::Torn));
        };
        if crc32c::crc32c(body) != crc {
            return (out, at, Some(Stop::Damaged));
        }
        let Some(rec) = Record::decode_body(body) else {
            return (out, at, Some(Stop::Damaged));
        };
        out.push(rec);
        at += RECORD_PREFIX_BYTES + len;
    }
    (out, at, None)
}

/// The 32-byte header of `manifest.log` and `manifest.snap`.
pub fn encode_file_header(magic: [u8; 8], generation: u64) -> Vec<u8> {
    let mut b = vec![0u8; FILE_HEADER_BYTES];
    b[0..8].copy_from_slice(&magic);
    put_u32(&mut b, 8, VERSION);
    put_u64(&mut b, 16, generation);
    let crc = crc32c::crc32c(&b[0..28]);
    put_u32(&mut b, 28, crc);
    b
}

/// Checks a file header; returns its generation.
pub fn decode_file_header(b: &[u8], magic: [u8; 8]) -> Result<u64, &'static str> {
    if b.len() < FILE_HEADER_BYTES {
        return Err("manifest file header truncated");
    }
    if b[0..8] != magic {
        return Err("bad manifest magic");
    }
    if crc32c::crc32c(&b[0..28]) != le_u32(b, 28) {
        return Err("manifest header checksum mismatch");
    }
    if le_u32(b, 8) != VERSION {
        return Err("unsupported manifest version");
    }
    Ok(le_u64(b, 16))
}

/// Where a sealed segment's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Residency {
    /// The raw `.seg` file (sealed, not yet compressed).
    Raw,
    /// The Tier1 `.t1` file.
    Tier1,
    /// Only in Tier2 (evicted locally).
    Tier2Only,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upload {
    None,
    Requested,
    Done(ObjectRef),
}

/// What the manifest knows about one live (not deleted) segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentEntry {
    pub next_offset: u64,
    pub data_end: u64,
    pub data_crc: u32,
    pub last_timestamp_ns: u64,
    pub residency: Residency,
    /// Size and crc32c of the Tier1 file, once compressed.
    pub tier1_len: u64,
    pub tier1_crc: u32,
    pub upload: Upload,
}

/// Per-log state: retention and what has been deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogEntry {
    /// `(max_age_ns, max_bytes)` set for this log (0: no limit); `None`: the config default.
    pub retention: Option<(u64, u64)>,
    /// Every record below this offset was removed by retention.
    pub deleted_below: u64,
}

/// The manifest's meaning: the state its records build.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    pub segments: BTreeMap<(u64, u64), SegmentEntry>,
    pub logs: BTreeMap<u64, LogEntry>,
    /// Deleted segments whose Tier2 copy still has to go: `(log_id, base) -> key`.
    pub tier2_deletes: BTreeMap<(u64, u64), String>,
}

impl State {
    /// Applies one record. Records that name a segment the state does not know (say, after a
    /// damaged tail was cut) are ignored rather than inventing an entry: reconciliation with
    /// the files on disk fills such gaps.
    pub fn apply(&mut self, r: &Record) {
        match r {
            Record::Sealed {
                log_id,
                base,
                next_offset,
                data_end,
                data_crc,
                last_timestamp_ns,
            } => {
                if *next_offset <= self.logs.get(log_id).map_or(0, |l| l.deleted_below) && next_offset > base {
                    return;
                }
                self.segments.insert(
                    (*log_id, *base),
                    SegmentEntry {
                        next_offset: *next_offset,
                        data_end: *data_end,
                        data_crc: *data_crc,
                        last_timestamp_ns: *last_timestamp_ns,
                        residency: Residency::Raw,
                        tier1_len: 0,
                        tier1_crc: 0,
                        upload: Upload::None,
                    },
                );
            }
            Record::Compressed {
                log_id,
                base,
                file_len,
                file_crc,
                ..
            } => {
                if let Some(e) = self.segments.get_mut(&(*log_id, *base)) {
                    e.residency = Residency::Tier1;
                    e.tier1_len = *file_len;
                    e.tier1_crc = *file_crc;
                    // A Tier1 file made again (the first was lost) has other bytes: the Tier2
                    // copy of the old one is not a copy of this one, so it must be uploaded anew.
                    if matches!(&e.upload, Upload::Done(o) if o.crc32c != *file_crc) {
                        e.upload = Upload::None;
                    }
                }
            }
            Record::Uncompressed { log_id, base } => {
                if let Some(e) = self.segments.get_mut(&(*log_id, *base)) {
                    e.residency = Residency::Raw;
                    e.tier1_len = 0;
                    e.tier1_crc = 0;
                }
            }
            Record::UploadRequested { log_id, base } => {
                if let Some(e) = self.segments.get_mut(&(*log_id, *base)) {
                    if e.upload == Upload::None {
                        e.upload = Upload::Requested;
                    }
                }
            }
            Record::Uploaded { log_id, base, object } => {
                if let Some(e) = self.segments.get_mut(&(*log_id, *base)) {
                    e.upload = Upload::Done(object.clone());
                }
            }
            Record::Evicted { log_id, base } => {
                if let Some(e) = self.segments.get_mut(&(*log_id, *base)) {
                    debug_assert!(matches!(e.upload, Upload::Done(_)), "evicted before upload");
                    e.residency = Residency::Tier2Only;
                }
            }
            Record::Deleted {
                log_id,
                base,
                next_offset,
                tier2_pending,
            } => {
                let removed = self.segments.remove(&(*log_id, *base));
                if *tier2_pending {
                    if let Some(SegmentEntry {
                        upload: Upload::Done(o),
                        ..
                    }) = removed
                    {
                        self.tier2_deletes.insert((*log_id, *base), o.key);
                    }
                }
                let l = self.logs.entry(*log_id).or_default();
                l.deleted_below = l.deleted_below.max(*next_offset);
            }
            Record::Tier2Deleted { log_id, base } => {
                self.tier2_deletes.remove(&(*log_id, *base));
            }
            Record::Retention {
                log_id,
                max_age_ns,
                max_bytes,
            } => {
                self.logs.entry(*log_id).or_default().retention = Some((*max_age_ns, *max_bytes));
            }
        }
    }

    /// Records that rebuild this state from nothing: the body of a snapshot.
    pub fn to_records(&self) -> Vec<Record> {
        let mut out = Vec::new();
        for (&log_id, l) in &self.logs {
            if let Some((max_age_ns, max_bytes)) = l.retention {
                out.push(Record::Retention {
                    log_id,
                    max_age_ns,
                    max_bytes,
                });
            }
            if l.deleted_below > 0 {
                // A zero-length deletion carries the watermark alone.
                out.push(Record::Deleted {
                    log_id,
                    base: l.deleted_below,
                    next_offset: l.deleted_below,
                    tier2_pending: false,
                });
            }
        }
        for (&(log_id, base), e) in &self.segments {
            out.push(Record::Sealed {
                log_id,
                base,
                next_offset: e.next_offset,
                data_end: e.data_end,
                data_crc: e.data_crc,
                last_timestamp_ns: e.last_timestamp_ns,
            });
            if e.residency != Residency::Raw {
                out.push(Record::Compressed {
                    log_id,
                    base,
                    file_len: e.tier1_len,
                    file_crc: e.tier1_crc,
                    codec: 0,
                    level: 0,
                });
            }
            match &e.upload {
                Upload::None => {}
                Upload::Requested => out.push(Record::UploadRequested { log_id, base }),
                Upload::Done(o) => out.push(Record::Uploaded {
                    log_id,
                    base,
                    object: o.clone(),
                }),
            }
            if e.residency == Residency::Tier2Only {
                out.push(Record::Evicted { log_id, base });
            }
        }
        // Pending Tier2 deletes: re-create the entry just long enough to delete it with the
        // key it was uploaded under.
        for (&(log_id, base), key) in &self.tier2_deletes {
            let object = ObjectRef {
                key: key.clone(),
                size: 0,
                crc32c: 0,
                etag: String::new(),
            };
            out.push(Record::Sealed {
                log_id,
                base,
                next_offset: base,
                data_end: 0,
                data_crc: 0,
                last_timestamp_ns: 0,
            });
            out.push(Record::Uploaded { log_id, base, object });
            out.push(Record::Deleted {
                log_id,
                base,
                next_offset: base,
                tier2_pending: true,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Record> {
        let object = ObjectRef {
            key: "p/0000000000000007/00000000000000000000-deadbeef.t1".into(),
            size: 1234,
            crc32c: 0xdeadbeef,
            etag: "\"abc\"".into(),
        };
        vec![
            Record::Retention {
                log_id: 7,
                max_age_ns: 5,
                max_bytes: 0,
            },
            Record::Sealed {
                log_id: 7,
                base: 0,
                next_offset: 100,
                data_end: 9000,
                data_crc: 1,
                last_timestamp_ns: 2,
            },
            Record::Sealed {
                log_id: 7,
                base: 100,
                next_offset: 200,
                data_end: 9000,
                data_crc: 3,
                last_timestamp_ns: 4,
            },
            Record::Sealed {
                log_id: 8,
                base: 0,
                next_offset: 10,
                data_end: 5000,
                data_crc: 5,
                last_timestamp_ns: 6,
            },
            Record::Compressed {
                log_id: 7,
                base: 0,
                file_len: 8192,
                file_crc: 0xabcd,
                codec: 1,
                level: 3,
            },
            Record::UploadRequested { log_id: 7, base: 0 },
            Record::Uploaded {
                log_id: 7,
                base: 0,
                object,
            },
            Record::Evicted { log_id: 7, base: 0 },
            Record::Compressed {
                log_id: 7,
                base: 100,
                file_len: 4096,
                file_crc: 0x1234,
                codec: 1,
                level: 3,
            },
            Record::Uncompressed { log_id: 7, base: 100 },
            Record::Deleted {
                log_id: 7,
                base: 0,
                next_offset: 100,
                tier2_pending: true,
            },
        ]
    }

    #[test]
    fn records_round_trip_and_stop_at_damage() {
        let recs = sample();
        let mut b = Vec::new();
        for r in &recs {
            r.encode_into(&mut b);
        }
        let (got, len, stop) = decode_records(&b);
        assert_eq!(got, recs);
        assert_eq!((len, stop), (b.len(), None));
        // Every truncation keeps exactly the whole records before the cut.
        for cut in 0..b.len() {
            let (got, len, stop) = decode_records(&b[..cut]);
            assert!(len <= cut);
            assert_eq!(got[..], recs[..got.len()]);
            assert_eq!(stop.is_some(), len < cut);
        }
        // Every bit flip is caught: the flipped record and everything after it are dropped.
        for bit in 0..b.len() * 8 {
            let mut d = b.clone();
            d[bit / 8] ^= 1 << (bit % 8);
            let (got, _, _) = decode_records(&d);
            assert!(got.len() < recs.len(), "bit {bit}");
            assert_eq!(got[..], recs[..got.len()]);
        }
        // A zeroed tail is a clean torn end.
        let mut z = b.clone();
        z.extend_from_slice(&[0u8; 100]);
        let (got, len, stop) = decode_records(&z);
        assert_eq!((got.len(), len, stop), (recs.len(), b.len(), Some(Stop::Torn)));
    }

    #[test]
    fn state_and_snapshot_agree() {
        let mut s = State::default();
        for r in sample() {
            s.apply(&r);
        }
        assert!(!s.segments.contains_key(&(7, 0)), "deleted");
        assert_eq!(s.logs[&7].deleted_below, 100);
        assert_eq!(s.segments[&(7, 100)].residency, Residency::Raw);
        assert_eq!(s.tier2_deletes.len(), 1);
        // A Sealed record below the deletion watermark (a replayed old record) is ignored.
        s.apply(&Record::Sealed {
            log_id: 7,
            base: 0,
            next_offset: 50,
            data_end: 1,
            data_crc: 0,
            last_timestamp_ns: 0,
        });
        assert!(!s.segments.contains_key(&(7, 0)));
        let mut rebuilt = State::default();
        for r in s.to_records() {
            rebuilt.apply(&r);
        }
        assert_eq!(rebuilt, s);
        let h = encode_file_header(LOG_MAGIC, 42);
        assert_eq!(decode_file_header(&h, LOG_MAGIC), Ok(42));
        assert!(decode_file_header(&h, SNAP_MAGIC).is_err());
    }
}
