//! The object-store error: which operation, on which key, what kind of failure, and detail.

use crate::failure::FailureKind;
use crate::metrics::Op;

/// A failed object-store operation. `kind` is what callers branch on; `detail` is for humans.
#[derive(Debug, thiserror::Error)]
#[error("{op} {key}: {kind}: {detail}{}", attempts_note(*.attempts))]
pub struct StoreError {
    pub op: Op,
    pub key: String,
    pub kind: FailureKind,
    pub detail: String,
    /// Attempts made (1 = no retry), filled in by the retry loop.
    pub attempts: u32,
}

fn attempts_note(attempts: u32) -> String {
    if attempts > 1 {
        format!(" (after {attempts} attempts)")
    } else {
        String::new()
    }
}

impl StoreError {
    pub fn new(op: Op, key: &str, kind: FailureKind, detail: impl Into<String>) -> StoreError {
        StoreError {
            op,
            key: key.to_string(),
            kind,
            detail: detail.into(),
            attempts: 1,
        }
    }

    /// A local file failed (read for upload, write for download).
    pub fn local_io(op: Op, key: &str, what: &str, path: &std::path::Path, e: std::io::Error) -> StoreError {
        StoreError::new(op, key, FailureKind::LocalIo, format!("{what} {}: {e}", path.display()))
    }

    /// Content does not match its checksum.
    pub fn corrupt(op: Op, key: &str, expected: u32, found: u32, len: u64) -> StoreError {
        let detail = format!("crc32c expected {expected:08x}, found {found:08x} over {len} bytes");
        StoreError::new(op, key, FailureKind::Corrupt, detail)
    }

    pub fn retryable(&self) -> bool {
        self.kind.retryable()
    }
}
