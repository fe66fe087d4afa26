//! Deterministic object keys.
//!
//! A key is a pure function of (log's persistent id, segment base offset, content crc32c):
//!
//! ```text
//! <prefix>/<log_id:016x>/<base:020>-<crc:08x>.t1
//! tier2/00000000000000ab/00000000000000001000-1a2b3c4d.t1
//! ```
//!
//! Why each part: the log id (not its name or a registration counter) survives renames and
//! restarts; the base offset orders a log's segments and is unique per log; the crc makes a key
//! name one exact content, so a retried upload writes the same bytes under the same key
//! (idempotent), and a segment rewritten with different content (e.g. recompressed) can never
//! overwrite the copy that another manifest entry still points at. Base is zero-padded decimal
//! so a lexicographic LIST returns segments in offset order and a human can read it.

use std::fmt;

/// Suffix of Tier2 segment objects (Tier1 zstd-seekable format).
pub const SEGMENT_SUFFIX: &str = ".t1";

/// The identity of one uploaded segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SegmentId {
    pub log_id: u64,
    pub base: u64,
    pub crc32c: u32,
}

impl SegmentId {
    /// The object key under `prefix` (no leading/trailing slash needed; empty prefix allowed).
    pub fn key(&self, prefix: &str) -> String {
        format!("{}{}", dir_prefix(prefix), self)
    }

    /// Inverse of [`SegmentId::key`]: `None` if `key` is not a segment key under `prefix`.
    pub fn parse(prefix: &str, key: &str) -> Option<SegmentId> {
        let rest = key.strip_prefix(&dir_prefix(prefix))?;
        let (log, file) = rest.split_once('/')?;
        let file = file.strip_suffix(SEGMENT_SUFFIX)?;
        let (base, crc) = file.split_once('-')?;
        if log.len() != 16 || base.len() != 20 || crc.len() != 8 {
            return None;
        }
        let id = SegmentId {
            log_id: u64::from_str_radix(log, 16).ok()?,
            base: base.parse().ok()?,
            crc32c: u32::from_str_radix(crc, 16).ok()?,
        };
        // Reject anything that does not print back identically (signs, upper-case hex, ...).
        (id.key(prefix) == key).then_some(id)
    }
}

impl fmt::Display for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:016x}/{:020}-{:08x}{}",
            self.log_id, self.base, self.crc32c, SEGMENT_SUFFIX
        )
    }
}

/// The listing prefix of one log's segments.
pub fn log_prefix(prefix: &str, log_id: u64) -> String {
    format!("{}{:016x}/", dir_prefix(prefix), log_id)
}

/// `prefix` normalised to "" or "a/b/" so keys never contain "//" or a leading "/".
pub fn dir_prefix(prefix: &str) -> String {
    let p = prefix.trim_matches('/');
    if p.is_empty() {
        String::new()
    } else {
        format!("{p}/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_fixed() {
        let id = SegmentId {
            log_id: 0xab,
            base: 4096,
            crc32c: 0x1a2b3c4d,
        };
        assert_eq!(
            id.key("tier2"),
            "tier2/00000000000000ab/00000000000000004096-1a2b3c4d.t1"
        );
        assert_eq!(id.key("/a/b/"), "a/b/00000000000000ab/00000000000000004096-1a2b3c4d.t1");
        assert_eq!(id.key(""), "00000000000000ab/00000000000000004096-1a2b3c4d.t1");
        assert_eq!(log_prefix("tier2", 0xab), "tier2/00000000000000ab/");
    }

    #[test]
    fn deterministic_and_round_trips() {
        for id in [
            SegmentId {
                log_id: 0,
                base: 0,
                crc32c: 0,
            },
            SegmentId {
                log_id: u64::MAX,
                base: u64::MAX,
                crc32c: u32::MAX,
            },
            SegmentId {
                log_id: 7,
                base: 123_456_789,
                crc32c: 0xdead_beef,
            },
        ] {
            assert_eq!(id.key("p"), id.key("p"));
            assert_eq!(SegmentId::parse("p", &id.key("p")), Some(id));
            assert_eq!(SegmentId::parse("q", &id.key("p")), None);
        }
    }

    #[test]
    fn distinct_segments_never_collide() {
        let mut seen = std::collections::HashSet::new();
        for log_id in [0u64, 1, 255, 1 << 40] {
            for base in [0u64, 1, 10, 4096, u64::MAX] {
                for crc32c in [0u32, 1, 0xffff_ffff] {
                    assert!(seen.insert(SegmentId { log_id, base, crc32c }.key("t")));
                }
            }
        }
        // Lexicographic order of keys is base order within a log (what LIST returns).
        let a = SegmentId {
            log_id: 1,
            base: 9,
            crc32c: 0xffff_ffff,
        }
        .key("t");
        let b = SegmentId {
            log_id: 1,
            base: 10,
            crc32c: 0,
        }
        .key("t");
        assert!(a < b);
    }

    #[test]
    fn rejects_foreign_keys() {
        for k in [
            "t/00000000000000ab/00000000000000004096-1a2b3c4d.tmp",
            "t/00000000000000AB/00000000000000004096-1a2b3c4d.t1",
            "t/ab/4096-1a2b3c4d.t1",
            "t/00000000000000ab/+0000000000000004096-1a2b3c4d.t1",
            "t/00000000000000ab/00000000000000004096-1a2b3c4d.t1/x",
        ] {
            assert_eq!(SegmentId::parse("t", k), None, "{k}");
        }
    }
}
