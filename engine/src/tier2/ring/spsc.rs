//! The single-producer single-consumer ring over a shared memory-mapped file.
//!
//! Fast path: the producer writes a slot, then publishes it with a Release store of `tail`;
//! the consumer's Acquire load of `tail` makes the slot's bytes visible before it reads them,
//! and its Release store of `head` after copying a slot out tells the producer (through an
//! Acquire load) that the slot may be reused. Each side caches the other's counter and reloads
//! it only when the ring looks full (producer) or empty (consumer), so an uncontended push or
//! pop touches one shared cache line. No locks, no syscalls, no waiting: a full ring is
//! reported as [`Full`], never blocked on.
//!
//! One producer and one consumer per ring is a contract between the shard and the bridge, not
//! something this code can enforce across processes: `Producer` and `Consumer` are not
//! `Clone` or `Sync`, so within a process the type system keeps it.

use super::layout::{self, Direction, Geometry, HeaderError, HEAD_OFFSET, SLOTS_OFFSET, SLOT_BYTES, TAIL_OFFSET};
use super::msg::{self, Message, MsgError};
use memmap2::MmapRaw;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

// The counters live in memory shared with another process: they must be lock-free atomics.
#[cfg(not(target_has_atomic = "64"))]
compile_error!("the ring needs 64-bit atomics");

/// Typed ring errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RingError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{path}: {source}")]
    Header { path: PathBuf, source: HeaderError },
    #[error("{path}: {len} bytes, expected {expected} for {geometry:?}")]
    Size {
        path: PathBuf,
        len: u64,
        expected: u64,
        geometry: Geometry,
    },
    #[error("invalid geometry {0:?}: capacity must be a power of two up to {max}", max = layout::CAPACITY_MAX)]
    Geometry(Geometry),
    #[error("{path}: head {head} and tail {tail} are inconsistent for capacity {capacity}")]
    Counters {
        path: PathBuf,
        head: u64,
        tail: u64,
        capacity: u64,
    },
    /// A slot failed its checks; the consumer has moved past it (the message is lost, which
    /// the manifest reconciliation covers).
    #[error("message {seq}: {source}")]
    Message { seq: u64, source: MsgError },
    #[error("a {found} message on a {direction:?} ring")]
    WrongDirection { found: &'static str, direction: Direction },
}

/// `push` found no free slot. The message is not queued; the caller keeps its state in the
/// manifest and retries later (or lets start-up reconciliation pick it up).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("ring full")]
pub struct Full;

/// A mapped ring file: header checked, counters sane.
pub struct RingFile {
    map: MmapRaw,
    geometry: Geometry,
    path: PathBuf,
}

impl RingFile {
    /// Opens the ring at `path`, creating it if absent. Either side may create it; a file
    /// made by a racing opener is used as is. An existing file must match `geometry`.
    pub fn open(path: &Path, geometry: Geometry) -> Result<RingFile, RingError> {
        if !geometry.valid() {
            return Err(RingError::Geometry(geometry));
        }
        let io_err = |op, source| RingError::Io {
            op,
            path: path.to_path_buf(),
            source,
        };
        let file = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => create(path, &geometry)?,
            Err(e) => return Err(io_err("open", e)),
        };
        let len = file.metadata().map_err(|e| io_err("stat", e))?.len();
        if len != geometry.file_bytes() {
            let expected = geometry.file_bytes();
            return Err(RingError::Size {
                path: path.to_path_buf(),
                len,
                expected,
                geometry,
            });
        }
        let map = MmapRaw::map_raw(&file).map_err(|e| io_err("mmap", e))?;
        let ring = RingFile {
            map,
            geometry,
            path: path.to_path_buf(),
        };
        // SAFETY: the mapping is `file_bytes()` long (checked above), which exceeds
        // HEAD_OFFSET, so the first HEAD_OFFSET bytes are in bounds. The static header is
        // written once before the file gets its name (see `create`) and never again, so no
        // one writes it while we read it.
        let header = unsafe { std::slice::from_raw_parts(ring.map.as_ptr(), HEAD_OFFSET) };
        layout::check_header(header, &geometry).map_err(|source| RingError::Header {
            path: path.to_path_buf(),
            source,
        })?;
        let (head, tail) = ring.counters_snapshot();
        if tail < head || tail - head > geometry.capacity {
            return Err(RingError::Counters {
                path: path.to_path_buf(),
                head,
                tail,
                capacity: geometry.capacity,
            });
        }
        Ok(ring)
    }

    /// (head, tail) as they were at one instant, even while the peer moves them: head is
    /// read before and after tail, and only counts if it did not move in between (both
    /// counters only grow, so "unchanged" really means unchanged). Reading them one after the
    /// other without this can see a later tail with an earlier head, more than `capacity` apart.
    fn counters_snapshot(&self) -> (u64, u64) {
        const TRIES: u32 = 1000;
        let mut last = (0, 0);
        for _ in 0..TRIES {
            let head = self.head().load(Ordering::Acquire);
            let tail = self.tail().load(Ordering::Acquire);
            if self.head().load(Ordering::Acquire) == head {
                return (head, tail);
            }
            last = (head, tail);
            std::hint::spin_loop();
        }
        // A consumer this busy is alive and well; its head is at most one read stale.
        (last.0, last.1.max(last.0))
    }

    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Messages queued right now (a snapshot: either side may move it at once).
    pub fn len(&self) -> u64 {
        let tail = self.tail().load(Ordering::Acquire);
        tail.saturating_sub(self.head().load(Ordering::Acquire))
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn counter(&self, offset: usize) -> &AtomicU64 {
        // SAFETY: `offset` is HEAD_OFFSET or TAIL_OFFSET, both multiples of 128 inside the
        // mapping (whose length was checked at open), and the mapping starts page-aligned, so
        // the address is valid and 8-byte aligned for the lifetime of `self.map`. AtomicU64
        // has the layout of u64. All accesses, in every process, go through atomics.
        unsafe { &*(self.map.as_ptr().add(offset) as *const AtomicU64) }
    }

    fn head(&self) -> &AtomicU64 {
        self.counter(HEAD_OFFSET)
    }

    fn tail(&self) -> &AtomicU64 {
        self.counter(TAIL_OFFSET)
    }

    fn slot_ptr(&self, seq: u64) -> *mut u8 {
        let index = (seq & (self.geometry.capacity - 1)) as usize;
        // SAFETY: index < capacity, so the slot lies within SLOTS_OFFSET..file_bytes(), the
        // mapped length checked at open.
        unsafe { self.map.as_mut_ptr().add(SLOTS_OFFSET + index * SLOT_BYTES) }
    }
}

/// Creates the file under a temporary name, writes the header, then links it into place:
/// an opener sees either no file or a complete header. `hard_link` fails if another opener
/// linked first, and then theirs is used.
fn create(path: &Path, geometry: &Geometry) -> Result<File, RingError> {
    let io_err = |op, source| RingError::Io {
        op,
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".creating-{}-{:x}", std::process::id(), fastrand::u64(..)));
    let tmp = PathBuf::from(tmp);
    let result = (|| {
        let f = OpenOptions::new().read(true).write(true).create_new(true).open(&tmp)?;
        f.set_len(geometry.file_bytes())?;
        std::os::unix::fs::FileExt::write_all_at(&f, &layout::encode_header(geometry), 0)?;
        match std::fs::hard_link(&tmp, path) {
            Ok(()) => Ok(Some(f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(e),
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    match result.map_err(|e| io_err("create", e))? {
        Some(f) => Ok(f),
        None => OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| io_err("open", e)),
    }
}

/// The writing side of a ring.
pub struct Producer {
    ring: RingFile,
    /// Our own counter: only we write `tail`, so a local copy is always current.
    tail: u64,
    /// Last seen `head`; reloaded only when the ring looks full.
    head_seen: u64,
}

impl Producer {
    /// Takes the producer role; resumes at the ring's current tail (a restarted producer
    /// continues where its predecessor published last).
    pub fn new(ring: RingFile) -> Producer {
        let tail = ring.tail().load(Ordering::Acquire);
        let head_seen = ring.head().load(Ordering::Acquire);
        Producer { ring, tail, head_seen }
    }

    /// Queues `m`, or returns `Full` at once.
    pub fn push(&mut self, m: &Message) -> Result<Result<(), Full>, RingError> {
        let want_request = self.ring.geometry.direction == Direction::Requests;
        if m.body.is_request() != want_request {
            let found = if m.body.is_request() { "request" } else { "reply" };
            return Err(RingError::WrongDirection {
                found,
                direction: self.ring.geometry.direction,
            });
        }
        let cap = self.ring.geometry.capacity;
        if self.tail - self.head_seen >= cap {
            // Acquire pairs with the consumer's Release of `head`: its reads of the slot we
            // are about to overwrite happened before.
            self.head_seen = self.ring.head().load(Ordering::Acquire);
            if self.tail - self.head_seen >= cap {
                return Ok(Err(Full));
            }
        }
        let slot = msg::encode(m, self.tail).map_err(|source| RingError::Message { seq: self.tail, source })?;
        // SAFETY: slot_ptr points at SLOT_BYTES in bounds (see slot_ptr). The consumer does
        // not read this slot: it is at position `tail`, which is not published yet, and the
        // check above proved the consumer is done with its previous lap (head > tail - cap).
        unsafe { std::ptr::copy_nonoverlapping(slot.as_ptr(), self.ring.slot_ptr(self.tail), SLOT_BYTES) };
        self.tail += 1;
        // Release: the slot's bytes become visible no later than the new tail.
        self.ring.tail().store(self.tail, Ordering::Release);
        Ok(Ok(()))
    }

    pub fn ring(&self) -> &RingFile {
        &self.ring
    }
}

/// The reading side of a ring.
pub struct Consumer {
    ring: RingFile,
    /// Our own counter: only we write `head`.
    head: u64,
    /// Last seen `tail`; reloaded only when the ring looks empty.
    tail_seen: u64,
}

impl Consumer {
    /// Takes the consumer role; resumes at the ring's current head, so messages published
    /// but not yet taken before a restart are still delivered.
    pub fn new(ring: RingFile) -> Consumer {
        let head = ring.head().load(Ordering::Acquire);
        let tail_seen = ring.tail().load(Ordering::Acquire);
        Consumer { ring, head, tail_seen }
    }

    /// The next message, `Ok(None)` if the ring is empty. A damaged slot is skipped and
    /// reported as `Err(RingError::Message)`; the next call continues after it.
    pub fn pop(&mut self) -> Result<Option<Message>, RingError> {
        if self.head == self.tail_seen {
            // Acquire pairs with the producer's Release of `tail`: the slot is fully written.
            self.tail_seen = self.ring.tail().load(Ordering::Acquire);
            if self.head == self.tail_seen {
                return Ok(None);
            }
        }
        let mut slot = [0u8; SLOT_BYTES];
        // SAFETY: slot_ptr points at SLOT_BYTES in bounds. The slot at `head` was published
        // (head < tail) and the producer will not overwrite it until we move head past it.
        unsafe { std::ptr::copy_nonoverlapping(self.ring.slot_ptr(self.head), slot.as_mut_ptr(), SLOT_BYTES) };
        let seq = self.head;
        self.head += 1;
        // Release: our copy of the slot is complete before the producer may reuse it.
        self.ring.head().store(self.head, Ordering::Release);
        msg::decode(&slot, seq)
            .map(Some)
            .map_err(|source| RingError::Message { seq, source })
    }

    /// Drops everything queued (what a restarted bridge does when it rebuilds its work from
    /// the manifests instead). Returns how many messages were dropped.
    pub fn reset(&mut self) -> u64 {
        self.tail_seen = self.ring.tail().load(Ordering::Acquire);
        let dropped = self.tail_seen - self.head;
        self.head = self.tail_seen;
        self.ring.head().store(self.head, Ordering::Release);
        dropped
    }

    pub fn ring(&self) -> &RingFile {
        &self.ring
    }
}
