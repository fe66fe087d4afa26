//! What goes into a log and what comes out.

/// A record to append. Borrowed, so the on-shard path copies the payload exactly once (into
/// the write buffer).
#[derive(Debug, Clone, Copy)]
pub struct NewRecord<'a> {
    pub payload: &'a [u8],
    /// Optional user value stored with the record (e.g. a consensus index).
    pub tag: Option<u64>,
    /// Nanoseconds since the Unix epoch. `None`: the shard stamps the time of the append.
    pub timestamp_ns: Option<u64>,
}

impl<'a> NewRecord<'a> {
    pub fn new(payload: &'a [u8]) -> Self {
        NewRecord {
            payload,
            tag: None,
            timestamp_ns: None,
        }
    }

    pub fn with_tag(mut self, tag: u64) -> Self {
        self.tag = Some(tag);
        self
    }

    pub fn with_timestamp_ns(mut self, ts: u64) -> Self {
        self.timestamp_ns = Some(ts);
        self
    }
}

/// An owned record to append from another thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedRecord {
    pub payload: Vec<u8>,
    pub tag: Option<u64>,
    pub timestamp_ns: Option<u64>,
}

impl OwnedRecord {
    pub fn new(payload: impl Into<Vec<u8>>) -> Self {
        OwnedRecord {
            payload: payload.into(),
            tag: None,
            timestamp_ns: None,
        }
    }

    pub fn with_tag(mut self, tag: u64) -> Self {
        self.tag = Some(tag);
        self
    }

    pub fn as_new(&self) -> NewRecord<'_> {
        NewRecord {
            payload: &self.payload,
            tag: self.tag,
            timestamp_ns: self.timestamp_ns,
        }
    }
}

/// A record read back, verified against its checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: u64,
    pub timestamp_ns: u64,
    pub tag: Option<u64>,
    pub payload: Vec<u8>,
}

pub(crate) fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
