//! The engine's one error type. Every variant says what went wrong and, where the caller can
//! act, what to do. A returned error means the request changed nothing, except `Io` during a
//! flush, which is reported to every waiter of that flush (their records were not acknowledged).

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("record of {size} bytes exceeds the maximum of {max} bytes (Config::max_record_bytes)")]
    RecordTooLarge { size: usize, max: u32 },

    #[error("batch is empty or has {count} records, more than the maximum of {max}")]
    BadBatch { count: usize, max: usize },

    #[error("unknown log {name:?}: create it with create_log first")]
    UnknownLog { name: String },

    #[error("log {name:?} already exists")]
    LogExists { name: String },

    #[error("invalid log name: {reason}")]
    BadLogName { reason: &'static str },

    #[error("offset {offset} of log {log:?} is out of range: readable offsets are {first}..{next}")]
    OffsetOutOfRange {
        log: String,
        offset: u64,
        first: u64,
        next: u64,
    },

    #[error("log {log:?} belongs to shard {owner}, not to shard {this}: use spawn_on({owner}, …) or the Handle")]
    WrongShard { log: String, owner: usize, this: usize },

    #[error("shard {shard}'s memory budget for unflushed bytes is full ({used} of {budget} bytes); retry or use the awaiting append")]
    Backpressure { shard: usize, used: u64, budget: u64 },

    #[error("I/O error during {op} on {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("corruption in {path} at byte {pos}: {detail}")]
    Corruption { path: PathBuf, pos: u64, detail: String },

    /// The engine is closing, or the shard stopped before answering a request already sent
    /// to it (see [`Error::ShardFailed`]).
    #[error("the engine is shutting down")]
    ShuttingDown,

    /// The shard's thread panicked (a bug, in the engine or in a task given to `spawn_on`)
    /// and stopped: its logs are unavailable until the engine is reopened, and recovery then
    /// keeps every acknowledged record as after a crash. The other shards go on serving.
    #[error("shard {shard} has stopped after a panic on its thread (see the log output): close and reopen the engine to recover its logs")]
    ShardFailed { shard: usize },

    #[error("invalid configuration: {0}")]
    Config(String),

    #[error("start-up check failed: {problem}. Remedy: {remedy}")]
    Environment { problem: String, remedy: String },

    #[error("data directory {path} has logs on shard {found}, but the engine is configured with {configured} shards: open with at least {need} shards")]
    ShardCountTooSmall {
        path: PathBuf,
        found: usize,
        configured: usize,
        need: usize,
    },

    #[error("data directory {path} does not exist (set Config::create_if_missing to create it)")]
    MissingDirectory { path: PathBuf },

    #[error("data directory {path} is in use by another engine (lock file held)")]
    Locked { path: PathBuf },

    #[error("a previous I/O failure on log {log:?} left it read-only until restart: {detail}")]
    LogFailed {
        log: String,
        detail: String,
        kind: Option<std::io::ErrorKind>,
    },

    #[error("inbox of shard {shard} is full ({capacity} requests queued); retry, or use the waiting call")]
    InboxFull { shard: usize, capacity: usize },

    #[error(
        "batch of {bytes} bytes exceeds the maximum of {max} bytes (half the shard memory budget, and one segment)"
    )]
    BatchTooLarge { bytes: u64, max: u64 },

    #[error("shard {shard}'s local disk budget for sealed segments is exhausted ({used} of {budget} bytes) and nothing can be evicted safely (not yet in Tier2, or not expired); appends resume when space is freed")]
    DiskBudget { shard: usize, used: u64, budget: u64 },

    #[error("record {offset} of log {log:?} is only in Tier2 (its local copy was evicted); it cannot be read locally")]
    NotLocal { log: String, offset: u64 },

    #[error("record {offset} of log {log:?} lives only in Tier2 and could not be brought back: {detail}")]
    Tier2Unavailable { log: String, offset: u64, detail: String },

    #[error("segment {base} of log {log:?} is not a sealed segment of this log")]
    UnknownSegment { log: String, base: u64 },

    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Converts a glommio error into an I/O error carrying our operation name and path.
    pub(crate) fn glommio(op: &'static str, path: impl Into<PathBuf>, e: glommio::GlommioError<()>) -> Self {
        // Keep the OS error itself (errno and kind) so callers can match on it, e.g.
        // `ErrorKind::StorageFull` for a full disk.
        let source = match e {
            glommio::GlommioError::IoError(io) => io,
            glommio::GlommioError::EnhancedIoError { source, .. } => source,
            other => std::io::Error::other(other.to_string()),
        };
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// True if the error is the device running out of space (ENOSPC or EDQUOT).
    pub fn is_storage_full(&self) -> bool {
        self.io_kind()
            .is_some_and(|k| k == std::io::ErrorKind::StorageFull || k == std::io::ErrorKind::QuotaExceeded)
    }

    /// The OS error kind behind an I/O failure, if any.
    pub fn io_kind(&self) -> Option<std::io::ErrorKind> {
        match self {
            Error::Io { source, .. } => Some(source.kind()),
            Error::LogFailed { kind, .. } => *kind,
            _ => None,
        }
    }

    /// True if the error is transient and the same request may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Backpressure { .. }
                | Error::InboxFull { .. }
                | Error::Timeout(_)
                | Error::DiskBudget { .. }
                | Error::Tier2Unavailable { .. }
        )
    }
}
