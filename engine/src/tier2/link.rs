//! The shard's side of the bridge: asks for uploads of Tier1 segments and for deletes of
//! segments retention removed, hydrates Tier2-only segments on read, and applies the answers to
//! the manifest. Runs in the shard's tiering task queue and never blocks: a full ring just
//! means "ask again later", and the manifest says what is still owed.
//!
//! What the shard owes the bridge is derived from the manifest every `retry_interval`:
//! a Tier1 segment not yet uploaded gets an `Upload` (after `UploadRequested` is recorded), a
//! deleted segment with a pending Tier2 delete gets a `Delete`. So a lost notification, a
//! restarted bridge or a restarted shard all end the same way: the work is asked again, and
//! since object keys are deterministic, asking twice uploads the same bytes to the same key.
//!
//! Asking again must not mean forgetting the first ask: a slow answer (a paced upload of a big
//! segment, an upload retried through an outage) is as good as a fast one. Every request id of
//! a segment stays answerable until one answer lands, and background work (uploads, deletes) is
//! asked again with a growing interval, so an unanswered request costs a few duplicates, not a
//! flood that fills the ring while the bridge is busy.

use crate::config::Tier2Config;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::format::manifest::{ObjectRef, Record, Residency, Upload};
use crate::format::tier1::{Codec, FrameEntry};
use crate::log::Log;
use crate::shard::ShardCore;
use crate::tier2::keys::SegmentId;
use crate::tier2::ring::{open_ring, Body, Consumer, Direction, Message, Producer};
use futures_lite::future;
use glommio::timer::Timer;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// How often replies are looked for: while a reader waits (a hydration or a ranged read), while
/// only background requests (uploads, deletes) are outstanding, and when idle. The rings carry
/// no wake-up signal across processes (yet), so these bound the added latency of a Tier2 read;
/// a timer tick on a shard costs a few microseconds.
const POLL_READER: Duration = Duration::from_micros(250);
const POLL_BUSY: Duration = Duration::from_millis(2);
const POLL_IDLE: Duration = Duration::from_millis(50);

/// A segment: `(log_id, base offset)`.
type SegKey = (u64, u64);
/// A Tier1 file's frame index and codec.
type FrameIndex = (Rc<Vec<FrameEntry>>, Codec);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Upload,
    Download,
    Delete,
    /// A byte range of an object, for a point read.
    Range,
}

/// How a hydration ended, for the reads waiting on it.
#[derive(Debug, Clone)]
enum Hydration {
    Pending,
    Failed(String),
}

/// The outstanding asks for one segment and kind.
struct Asked {
    /// When it was last asked.
    at: Instant,
    /// How many times it was asked without an answer.
    tries: u32,
    /// The request ids still answerable (oldest first); any one answer settles them all.
    ids: Vec<u64>,
}

/// Request ids kept answerable per segment and kind: older ones are presumed lost (a bridge
/// that restarted drops what was queued before it).
const ANSWERABLE_IDS: usize = 4;
/// Background asks back off to at most this many `retry_interval`s between tries.
const MAX_BACKOFF_INTERVALS: u32 = 8;

pub struct Link {
    cfg: Tier2Config,
    req: RefCell<Producer>,
    rep: RefCell<Consumer>,
    next_id: Cell<u64>,
    /// Request id → (segment, kind).
    inflight: RefCell<HashMap<u64, (SegKey, Kind)>>,
    /// What each segment was asked for and not yet answered; see [`Asked`].
    asked: RefCell<HashMap<(SegKey, Kind), Asked>>,
    hydrations: RefCell<HashMap<SegKey, Hydration>>,
    /// Ranged reads in flight: request id → `None` while pending, then the outcome.
    ranges: RefCell<HashMap<u64, Option<std::result::Result<(), String>>>>,
    /// Frame indexes of segments that live only in Tier2, for point reads.
    remote_index: RefCell<HashMap<SegKey, FrameIndex>>,
    /// A reply was applied (hydration waiters re-check).
    pub answered: Event,
    pub wake: Event,
}

impl Link {
    /// Opens (creating if needed) the shard's two rings in its directory.
    pub fn open(core: &ShardCore, cfg: Tier2Config) -> Result<Link> {
        let ring = |d| {
            open_ring(&core.dir, core.id as u32, d, cfg.ring_capacity).map_err(|e| Error::Environment {
                problem: format!("cannot open the Tier2 ring: {e}"),
                remedy: "remove the ring files in the shard directory if they are from another version".into(),
            })
        };
        let req = Producer::new(ring(Direction::Requests)?);
        let rep = Consumer::new(ring(Direction::Replies)?);
        Ok(Link {
            cfg,
            req: RefCell::new(req),
            rep: RefCell::new(rep),
            next_id: Cell::new(first_request_id()),
            inflight: RefCell::new(HashMap::new()),
            asked: RefCell::new(HashMap::new()),
            hydrations: RefCell::new(HashMap::new()),
            ranges: RefCell::new(HashMap::new()),
            remote_index: RefCell::new(HashMap::new()),
            answered: Event::default(),
            wake: Event::default(),
        })
    }

    /// Sends a request; `false` if the ring is full (asked again at the next rescan).
    fn ask(&self, core: &ShardCore, seg: SegmentId, kind: Kind, body: Body) -> bool {
        self.send(core, seg, kind, body).is_some()
    }

    /// Sends a request and returns its id; `None` if the ring is full.
    fn send(&self, core: &ShardCore, seg: SegmentId, kind: Kind, body: Body) -> Option<u64> {
        let id = self.next_id.get();
        let m = Message { id, body };
        match self.req.borrow_mut().push(&m) {
            Ok(Ok(())) => {
                self.next_id.set(id + 1);
                let key = (seg.log_id, seg.base);
                let mut inflight = self.inflight.borrow_mut();
                inflight.insert(id, (key, kind));
                // Ranged reads are many per segment and each waits for its own answer.
                if kind != Kind::Range {
                    let mut asked = self.asked.borrow_mut();
                    let a = asked.entry((key, kind)).or_insert(Asked {
                        at: Instant::now(),
                        tries: 0,
                        ids: Vec::new(),
                    });
                    a.at = Instant::now();
                    a.tries += 1;
                    a.ids.push(id);
                    if a.ids.len() > ANSWERABLE_IDS {
                        let lost = a.ids.remove(0);
                        inflight.remove(&lost);
                    }
                }
                core.stats.borrow_mut().tier2_requests += 1;
                Some(id)
            }
            Ok(Err(_full)) => {
                core.stats.borrow_mut().tier2_ring_full += 1;
                None
            }
            Err(e) => {
                tracing::warn!(shard = core.id, error = %e, "Tier2 request ring refused a message");
                None
            }
        }
    }

    /// Whether `kind` for `key` should be asked (again) now. A hydration, which a reader waits
    /// on, is re-asked every `retry_interval`; background work backs off, doubling up to
    /// `MAX_BACKOFF_INTERVALS` intervals.
    fn due(&self, key: SegKey, kind: Kind) -> bool {
        let asked = self.asked.borrow();
        let Some(a) = asked.get(&(key, kind)) else {
            return true;
        };
        let factor = match kind {
            Kind::Download | Kind::Range => 1,
            Kind::Upload | Kind::Delete => (1u32 << a.tries.saturating_sub(1).min(31)).min(MAX_BACKOFF_INTERVALS),
        };
        a.at.elapsed() >= self.cfg.retry_interval * factor
    }

    /// An answer for `key`/`kind` landed: its other ids will not be waited for. With `backoff`
    /// (a failed upload or delete) the tries are kept, so the next ask waits longer.
    fn settle(&self, key: SegKey, kind: Kind, backoff: bool) {
        let mut asked = self.asked.borrow_mut();
        let ids = if backoff {
            asked.get_mut(&(key, kind)).map(|a| std::mem::take(&mut a.ids))
        } else {
            asked.remove(&(key, kind)).map(|a| a.ids)
        };
        let mut inflight = self.inflight.borrow_mut();
        for id in ids.into_iter().flatten() {
            inflight.remove(&id);
        }
    }
}

/// The first request id of this run of the shard. The bridge outlives shard restarts and may
/// still answer requests of an earlier run: ids must not repeat across runs, or such an answer
/// would be taken for a new request about another segment. Microseconds since the epoch,
/// shifted left 12 bits: a later run starts above every id an earlier run could have used
/// unless that run sent 4096 requests per microsecond of its life.
fn first_request_id() -> u64 {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    (micros << 12).max(1)
}

fn log_by_id(core: &ShardCore, log_id: u64) -> Option<Rc<Log>> {
    core.logs.borrow().values().find(|l| l.id == log_id).cloned()
}

/// The shard's Tier2 task: rescans the manifest for owed work and applies replies.
pub async fn run(core: Rc<ShardCore>, link: Rc<Link>) {
    let mut last_scan: Option<Instant> = None;
    loop {
        if core.closing.get() {
            link.answered.notify_all();
            return;
        }
        if last_scan.is_none_or(|t| t.elapsed() >= link.cfg.retry_interval) {
            rescan(&core, &link).await;
            last_scan = Some(Instant::now());
        }
        let mut n = 0;
        loop {
            let popped = link.rep.borrow_mut().pop();
            match popped {
                Ok(Some(m)) => {
                    apply(&core, &link, m).await;
                    n += 1;
                }
                Ok(None) => break,
                Err(e) => tracing::warn!(shard = core.id, error = %e, "damaged Tier2 reply skipped"),
            }
        }
        if n > 0 {
            link.answered.notify_all();
            continue;
        }
        let reader_waits = !link.ranges.borrow().is_empty()
            || link
                .hydrations
                .borrow()
                .values()
                .any(|h| matches!(h, Hydration::Pending));
        let poll = if reader_waits {
            POLL_READER
        } else if link.inflight.borrow().is_empty() {
            POLL_IDLE
        } else {
            POLL_BUSY
        };
        future::or(link.wake.next(), async {
            Timer::new(poll).await;
        })
        .await;
    }
}

/// Asks for everything the manifest says is owed and was not asked for recently.
async fn rescan(core: &Rc<ShardCore>, link: &Link) {
    let (uploads, deletes) = {
        let st = core.manifest().state();
        let uploads: Vec<(u64, u64, u32, u64, bool)> = st
            .segments
            .iter()
            .filter(|(_, e)| e.residency == Residency::Tier1 && !matches!(e.upload, Upload::Done(_)))
            .map(|(&(l, b), e)| (l, b, e.tier1_crc, e.tier1_len, e.upload == Upload::None))
            .collect();
        let deletes: Vec<(u64, u64, String)> = st.tier2_deletes.iter().map(|(&(l, b), k)| (l, b, k.clone())).collect();
        (uploads, deletes)
    };
    for (log_id, base, crc, size, unrecorded) in uploads {
        if !link.due((log_id, base), Kind::Upload) {
            continue;
        }
        if unrecorded {
            if let Err(e) = core
                .manifest()
                .append(&[Record::UploadRequested { log_id, base }])
                .await
            {
                tracing::warn!(shard = core.id, error = %e, "cannot record an upload request");
                return;
            }
        }
        let seg = SegmentId {
            log_id,
            base,
            crc32c: crc,
        };
        if !link.ask(core, seg, Kind::Upload, Body::Upload { seg, file_id: 0, size }) {
            return;
        }
    }
    for (log_id, base, key) in deletes {
        if !link.due((log_id, base), Kind::Delete) {
            continue;
        }
        let Some(seg) = SegmentId::parse("", &key) else {
            tracing::warn!(shard = core.id, key, "pending Tier2 delete with an unparsable key");
            continue;
        };
        if !link.ask(core, seg, Kind::Delete, Body::Delete { seg }) {
            return;
        }
    }
}

async fn apply(core: &Rc<ShardCore>, link: &Link, m: Message) {
    let Some((key, kind)) = link.inflight.borrow_mut().remove(&m.id) else {
        // An answer to a request from before a restart: the manifest rescan covers it.
        return;
    };
    let about = m.body.seg();
    if (about.log_id, about.base) != key {
        // Never apply an answer to the wrong segment (ids are unique per run; this guards it).
        tracing::warn!(shard = core.id, id = m.id, ?key, seg = %about, "Tier2 reply about another segment ignored");
        return;
    }
    if kind == Kind::Range {
        let outcome = match m.body {
            Body::Done { .. } => Ok(()),
            Body::Failed { kind, retryable, .. } => Err(format!("{kind} (retryable: {retryable})")),
            other => Err(format!("unexpected reply {other:?}")),
        };
        if let Some(slot) = link.ranges.borrow_mut().get_mut(&m.id) {
            *slot = Some(outcome);
        }
        return;
    }
    let Some(log) = log_by_id(core, key.0) else {
        return;
    };
    let backoff = matches!(m.body, Body::Failed { .. }) && matches!(kind, Kind::Upload | Kind::Delete);
    let result = match (kind, m.body) {
        (Kind::Upload, Body::Done { seg, size, etag }) => {
            // The object must hold this segment's current Tier1 bytes: an answer about an
            // older file of the same segment (remade since, with another crc) is not a copy.
            let (current, deleted) = {
                let st = core.manifest().state();
                let deleted = st.logs.get(&key.0).is_some_and(|l| l.deleted_below > key.1);
                (st.segments.get(&key).map(|e| e.tier1_crc), deleted)
            };
            if current.is_none() && deleted {
                // Retention removed the segment while its upload was in flight, so its delete
                // had no Tier2 copy to remove: this object is nobody's. Ask for its delete now.
                // Not recorded in the manifest (no record names an object without its
                // segment): a crash before the delete is done leaves the object behind.
                tracing::info!(shard = core.id, %seg, "uploaded after retention removed it: deleting the object");
                link.settle(key, kind, false);
                link.ask(core, seg, Kind::Delete, Body::Delete { seg });
                return;
            }
            if current != Some(seg.crc32c) {
                tracing::warn!(shard = core.id, %seg, ?current, "upload answer for another Tier1 file ignored");
                return;
            }
            let object = ObjectRef {
                key: seg.to_string(),
                size,
                crc32c: seg.crc32c,
                etag,
            };
            {
                let mut st = core.stats.borrow_mut();
                st.tier2_uploads += 1;
                st.tier2_uploaded_bytes += size;
            }
            crate::tiering::record_upload(core, &log, key.1, object).await
        }
        (Kind::Delete, Body::Done { .. }) => {
            core.manifest()
                .append(&[Record::Tier2Deleted {
                    log_id: key.0,
                    base: key.1,
                }])
                .await
        }
        (Kind::Download, Body::Done { .. }) => finish_hydration(core, link, &log, key.1).await,
        (
            kind,
            Body::Failed {
                kind: why, retryable, ..
            },
        ) => {
            core.stats.borrow_mut().tier2_failures += 1;
            tracing::warn!(shard = core.id, log = %log.name, base = key.1, ?kind, failure = %why, retryable, "Tier2 request failed");
            if kind == Kind::Download {
                link.hydrations
                    .borrow_mut()
                    .insert(key, Hydration::Failed(format!("{why} (retryable: {retryable})")));
            }
            // Uploads and deletes are asked again at a later rescan, after a longer wait.
            Ok(())
        }
        (kind, body) => {
            tracing::warn!(shard = core.id, ?kind, ?body, "unexpected Tier2 reply");
            Ok(())
        }
    };
    if result.is_ok() {
        link.settle(key, kind, backoff);
    }
    if let Err(e) = result {
        tracing::warn!(shard = core.id, log = %log.name, base = key.1, error = %e, "applying a Tier2 reply failed");
        if kind == Kind::Download {
            link.hydrations
                .borrow_mut()
                .insert(key, Hydration::Failed(e.to_string()));
        }
    }
}

/// The bridge wrote the segment's Tier1 file back into the log directory: verify it, record
/// it, and make it the segment's local copy again.
async fn finish_hydration(core: &Rc<ShardCore>, link: &Link, log: &Rc<Log>, base: u64) -> Result<()> {
    let name = crate::format::tier1::file_name(log.id, base);
    let path = log.dir.join(&name);
    let (crc, next_offset) = {
        let st = core.manifest().state();
        let e = st.segments.get(&(log.id, base));
        match e {
            Some(e) if log.inner.borrow().sealed_segment(base).is_some() => (e.tier1_crc, e.next_offset),
            _ => {
                // Deleted by retention meanwhile: the download is nobody's. Remove it, or it
                // would sit outside the budget's count until the next restart.
                drop(st);
                link.hydrations.borrow_mut().remove(&(log.id, base));
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io("remove hydrated file of a deleted segment", &path, e)),
                }
                return Ok(());
            }
        }
    };
    let loaded = crate::tier1::load(&path, log.id, base).map_err(|d| Error::Corruption {
        path: path.clone(),
        pos: 0,
        detail: format!("hydrated tier1 file: {d}"),
    })?;
    if loaded.header.next_offset != next_offset {
        return Err(Error::Corruption {
            path,
            pos: 0,
            detail: "hydrated tier1 file holds another range of records".into(),
        });
    }
    core.manifest()
        .append(&[Record::Compressed {
            log_id: log.id,
            base,
            file_len: loaded.file_len,
            file_crc: crc,
            codec: loaded.header.codec as u32,
            level: loaded.header.level,
        }])
        .await?;
    let file = Rc::new(
        glommio::io::OpenOptions::new()
            .read(true)
            .dma_open(&path)
            .await
            .map_err(|e| Error::glommio("open hydrated segment", &path, e))?,
    );
    let placed = log.inner.borrow_mut().sealed_segment_mut(base).map(|s| {
        s.last_read.set(core.tick());
        s.set_tier1(path, file, loaded.frames, loaded.header.codec, loaded.file_len)
    });
    if let Some((_, old_bytes)) = placed {
        debug_assert_eq!(old_bytes, 0, "hydrated a segment that was still local");
        core.tier1_bytes
            .set(core.tier1_bytes.get() - old_bytes + loaded.file_len);
    }
    core.stats.borrow_mut().tier2_hydrations += 1;
    link.hydrations.borrow_mut().remove(&(log.id, base));
    // The budget is enforced sparing this segment: it is the one a reader waits for, and
    // evicting it now (it may be the only one safe to evict) would send the reader back to
    // Tier2 for nothing.
    crate::tiering::enforce_budget_sparing(core, Some((log.id, base))).await;
    Ok(())
}

/// Brings a Tier2-only segment back to local disk, waiting at most the configured read
/// timeout. Concurrent readers of one segment share one download.
pub async fn hydrate(core: &Rc<ShardCore>, link: &Rc<Link>, log: &Rc<Log>, base: u64, offset: u64) -> Result<()> {
    let key = (log.id, base);
    let crc = {
        let st = core.manifest().state();
        match st.segments.get(&key) {
            Some(e) if e.residency == Residency::Tier2Only => e.tier1_crc,
            _ => return Ok(()), // local again already (or gone: the read says which)
        }
    };
    let seg = SegmentId {
        log_id: log.id,
        base,
        crc32c: crc,
    };
    let started = !link.hydrations.borrow().contains_key(&key);
    let name = log.name.clone();
    let unavailable = move |detail: String| Error::Tier2Unavailable {
        log: name.clone(),
        offset,
        detail,
    };
    if started {
        if !link.ask(core, seg, Kind::Download, Body::Download { seg, range: None }) {
            return Err(unavailable("the request ring to the bridge is full".into()));
        }
        link.hydrations.borrow_mut().insert(key, Hydration::Pending);
        link.wake.notify_all();
    }
    let deadline = Instant::now() + link.cfg.read_timeout;
    let waited = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break Err(unavailable(format!(
                "no copy from the bridge within {:?}",
                link.cfg.read_timeout
            )));
        }
        let answer = future::or(
            async {
                Some(
                    link.answered
                        .wait_for(|| {
                            if core.closing.get() {
                                return Some(Err(Error::ShuttingDown));
                            }
                            match link.hydrations.borrow().get(&key) {
                                None => Some(Ok(())),
                                Some(Hydration::Pending) => None,
                                Some(Hydration::Failed(why)) => Some(Err(unavailable(why.clone()))),
                            }
                        })
                        .await,
                )
            },
            async {
                Timer::new(left.min(link.cfg.retry_interval)).await;
                None
            },
        )
        .await;
        match answer {
            Some(r) => break r,
            // No answer yet: the request may have been dropped (a bridge that restarted
            // drops what was queued before it); ask again.
            None if started && link.due(key, Kind::Download) => {
                link.ask(core, seg, Kind::Download, Body::Download { seg, range: None });
            }
            None => {}
        }
    };
    if waited.is_err() {
        // The next read asks again.
        let mut h = link.hydrations.borrow_mut();
        if !matches!(h.get(&key), Some(Hydration::Pending)) || started {
            h.remove(&key);
        }
    }
    waited
}

/// Bytes `range` of a Tier2 object, through the bridge (which writes them next to the
/// segment's Tier1 path for this shard to pick up).
async fn fetch_range(
    core: &Rc<ShardCore>,
    link: &Link,
    log: &Log,
    seg: SegmentId,
    range: std::ops::Range<u64>,
    offset: u64,
) -> Result<Vec<u8>> {
    let unavailable = |detail: String| Error::Tier2Unavailable {
        log: log.name.clone(),
        offset,
        detail,
    };
    let Some(id) = link.send(
        core,
        seg,
        Kind::Range,
        Body::Download {
            seg,
            range: Some(range.clone()),
        },
    ) else {
        return Err(unavailable("the request ring to the bridge is full".into()));
    };
    link.ranges.borrow_mut().insert(id, None);
    link.wake.notify_all();
    let outcome = future::or(
        async {
            link.answered
                .wait_for(|| {
                    if core.closing.get() {
                        return Some(Err("the engine is shutting down".to_string()));
                    }
                    link.ranges.borrow().get(&id).cloned().flatten()
                })
                .await
        },
        async {
            Timer::new(link.cfg.read_timeout).await;
            Err(format!("no answer from the bridge within {:?}", link.cfg.read_timeout))
        },
    )
    .await;
    link.ranges.borrow_mut().remove(&id);
    outcome.map_err(&unavailable)?;
    let tier1 = log.dir.join(crate::format::tier1::file_name(seg.log_id, seg.base));
    let path = crate::tier2::range_path(&tier1, &range, id);
    let f = glommio::io::BufferedFile::open(&path)
        .await
        .map_err(|e| Error::glommio("open ranged read", &path, e))?;
    let len = range.end - range.start;
    let bytes = f
        .read_at(0, len as usize)
        .await
        .map_err(|e| Error::glommio("read ranged read", &path, e))?
        .to_vec();
    let _ = f.close().await;
    let _ = crate::fsops::remove(&path).await;
    core.stats.borrow_mut().tier2_range_reads += 1;
    Ok(bytes)
}

/// The Tier2 object of segment `base`, which the manifest records as uploaded: its id (with
/// the crc that names it) and its size. `NotLocal` if there is none.
fn uploaded_object(core: &ShardCore, log: &Log, base: u64, offset: u64) -> Result<(SegmentId, u64)> {
    let st = core.manifest().state();
    match st.segments.get(&(log.id, base)).map(|e| (e.tier1_crc, &e.upload)) {
        Some((crc32c, Upload::Done(o))) => Ok((
            SegmentId {
                log_id: log.id,
                base,
                crc32c,
            },
            o.size,
        )),
        _ => Err(Error::NotLocal {
            log: log.name.clone(),
            offset,
        }),
    }
}

/// The frame index of the Tier2 object `seg` (`size` bytes): kept from its eviction, or read
/// from the object's header, trailer and index with three ranged reads.
async fn remote_index(
    core: &Rc<ShardCore>,
    link: &Link,
    log: &Log,
    (seg, size): (SegmentId, u64),
    offset: u64,
) -> Result<FrameIndex> {
    use crate::format::tier1 as fmt;
    if let Some(v) = link.remote_index.borrow().get(&(seg.log_id, seg.base)) {
        return Ok(v.clone());
    }
    let corrupt = |d: &str| Error::Corruption {
        path: log.dir.join(seg.to_string()),
        pos: 0,
        detail: format!("Tier2 object: {d}"),
    };
    let too_small = (fmt::HEADER_USED_BYTES + fmt::TRAILER_BYTES) as u64;
    if size < too_small {
        return Err(corrupt("smaller than a header and a trailer"));
    }
    let h = fetch_range(core, link, log, seg, 0..fmt::HEADER_USED_BYTES as u64, offset).await?;
    let header = fmt::Header::decode(&h).map_err(corrupt)?;
    // Ranged reads carry no object-wide checksum and records carry no log id, so an object
    // replaced by another segment's (another log's at the same base, say) would pass every
    // frame check: the header must name this very segment, as the manifest recorded it.
    let expected = core
        .manifest()
        .state()
        .segments
        .get(&(seg.log_id, seg.base))
        .map(|e| (e.next_offset, e.data_end, e.data_crc));
    let found = (header.next_offset, header.data_end, header.data_crc);
    if header.log_id != seg.log_id || header.base_offset != seg.base || expected != Some(found) {
        return Err(corrupt(&format!(
            "its header names log {:016x} base {} (next {}, data_end {}, crc {:08x}), not this segment (log {:016x} base {}, manifest {expected:?})",
            header.log_id, header.base_offset, found.0, found.1, found.2, seg.log_id, seg.base
        )));
    }
    let tr = fetch_range(core, link, log, seg, size - fmt::TRAILER_BYTES as u64..size, offset).await?;
    let t = fmt::decode_trailer(&tr, size).map_err(corrupt)?;
    let index_end = t.index_pos + t.frame_count as u64 * fmt::FRAME_ENTRY_BYTES as u64;
    let ib = fetch_range(core, link, log, seg, t.index_pos..index_end, offset).await?;
    let frames = Rc::new(fmt::decode_index(&ib, &t, header.data_end).map_err(corrupt)?);
    let v = (frames, header.codec);
    link.remote_index.borrow_mut().insert((seg.log_id, seg.base), v.clone());
    Ok(v)
}

/// Remembers a segment's frame index as it is evicted, so point reads need no index fetch.
pub fn keep_index(link: &Link, log_id: u64, base: u64, frames: Rc<Vec<FrameEntry>>, codec: Codec) {
    link.remote_index.borrow_mut().insert((log_id, base), (frames, codec));
}

/// A point read of one record of a Tier2-only segment: one ranged read of the frame that
/// holds it (plus the index, the first time), checked and decoded here.
pub async fn read_remote(
    core: &Rc<ShardCore>,
    link: &Rc<Link>,
    log: &Rc<Log>,
    base: u64,
    offset: u64,
) -> Result<crate::record::Record> {
    let object = uploaded_object(core, log, base, offset)?;
    let seg = object.0;
    let (frames, codec) = remote_index(core, link, log, object, offset).await?;
    let path = log.dir.join(seg.to_string());
    let i = frames.partition_point(|f| f.first_offset <= offset);
    let f = *i
        .checked_sub(1)
        .map(|k| &frames[k])
        .filter(|f| offset < f.first_offset + f.records as u64)
        .ok_or(Error::NotLocal {
            log: log.name.clone(),
            offset,
        })?;
    let comp = fetch_range(core, link, log, seg, f.comp_pos..f.comp_pos + f.comp_len as u64, offset).await?;
    let raw = crate::tier1::decode_frame(&comp, &path, &f, codec)?;
    let ceiling = crate::limits::RECORD_BYTES_CEILING;
    let mut pos = 0usize;
    for _ in f.first_offset..offset {
        let len = crate::segment::skip_len(&raw[pos..], ceiling).ok_or_else(|| Error::Corruption {
            path: path.clone(),
            pos: f.raw_pos + pos as u64,
            detail: "bad frame header in a Tier2 frame".into(),
        })?;
        pos += len as usize;
    }
    let len = crate::segment::skip_len(&raw[pos..], ceiling).unwrap_or(0) as usize;
    let end = (pos + len).min(raw.len());
    crate::segment::decode_record(&raw[pos..end], offset, ceiling, &path, f.raw_pos + pos as u64)
}
