//! One log on its shard: offsets, the active segment, the acknowledgement watermarks and the
//! append path. Reads live in `read.rs`, background I/O in `flusher.rs`, start-up in
//! `recovery.rs`.
//!
//! Everything here runs on the owning shard's thread; `RefCell` borrows never cross an
//! `.await` (the I/O paths copy what they need, release the borrow, then await).

use crate::config::{Config, Durability};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::format::frame;
use crate::format::scan::IndexBuilder;
use crate::format::segment::{file_name, SegmentHeader};
use crate::group::ForeignGroups;
use crate::limits::{BATCH_RECORDS_MAX, BLOCK_SIZE};
use crate::record::{now_ns, NewRecord};
use crate::segment::{ActiveSegment, FileName, SealedSegment};
use crate::shard::ShardCore;
use crate::staging::Staging;
use glommio::io::DmaFile;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::ops::Range;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The longest preemption interval at which a `Memory` producer that is ahead of the flusher
/// yields rather than sleeping 1 µs: up to 2 ms, 1 MiB writes still keep up with a producer at
/// half of the maximum rate (measured; at 10 ms they do not).
const YIELD_PREEMPT_MAX: Duration = Duration::from_millis(2);

pub struct Log {
    pub name: String,
    pub id: u64,
    pub dir: PathBuf,
    pub inner: RefCell<LogInner>,
    /// Watermarks, visibility, failure or spare availability changed.
    pub changed: Event,
    /// Something for the flusher to do.
    pub flusher_wake: Event,
    /// An append or a roll found no spare ready: a spare being zero-filled goes into use now.
    pub spare_waited: Event,
}

/// A file made ready to become the next segment (`flusher::make_spare`).
pub struct Spare {
    pub path: PathBuf,
    pub file: Rc<DmaFile>,
    /// Newly created and preallocated, not a reused segment file (`ActiveSegment::fresh_blocks`).
    pub fresh: bool,
}

pub struct LogInner {
    pub sealed: Vec<SealedSegment>,
    pub rolled: VecDeque<ActiveSegment>,
    pub active: ActiveSegment,
    pub next_offset: u64,
    pub first_offset: u64,
    /// Every record below is written to its file (O_DIRECT write completed).
    pub written_upto: u64,
    /// Every record below is fdatasync'ed.
    pub synced_upto: u64,
    pub want_written: u64,
    pub want_synced: u64,
    /// Appends not yet acknowledged at their durability: `(first, end, durability)`, in offset
    /// order. Records from the first of them on are not visible to readers.
    pub unacked: VecDeque<(u64, u64, Durability)>,
    /// When the oldest unflushed byte of the active segment was appended.
    pub unflushed_since: Option<Instant>,
    /// When a write last took every byte staged in the active segment: with nothing unflushed
    /// since, the log has been idle that long (`flusher`, releasing its staging chunk).
    pub drained_at: Option<Instant>,
    /// A preallocated file ready to become the next segment.
    pub spare: Option<Spare>,
    pub spare_wanted: bool,
    pub spare_in_progress: bool,
    /// Files of raw segments this log no longer holds, under spare names, for `make_spare` to
    /// reuse (see `tiering::retire_raw`): at most `RECYCLE_MAX`.
    pub recycled: Vec<(PathBuf, Rc<DmaFile>)>,
    /// An fdatasync of the active segment is running in its own task (`flusher::start_sync`);
    /// meanwhile the flusher may write the next bytes, but starts no second sync.
    pub sync_in_flight: bool,
    /// Paces group commit for producers on other threads (see `group`).
    pub foreign: ForeignGroups,
    pub spare_error: Option<Error>,
    pub roll_requested: bool,
    /// A Synced append or a `sync` was asked of this log since it opened: its new spares are
    /// zero-filled (`Config::zero_fill_spares_bytes_per_sec`).
    pub syncs_seen: bool,
    pub failed: Option<String>,
    pub failed_kind: Option<std::io::ErrorKind>,
    pub closing: bool,
    pub flusher_exited: bool,
}

pub(crate) enum Blocked {
    Budget,
    Spare,
}

impl LogInner {
    pub fn visible_upto(&self) -> u64 {
        self.unacked.front().map(|u| u.0).unwrap_or(self.next_offset)
    }

    /// Drops acknowledged entries from the front of `unacked`.
    pub fn settle(&mut self) {
        while let Some(&(_, end, d)) = self.unacked.front() {
            let done = match d {
                Durability::Memory => true,
                Durability::Written => end <= self.written_upto,
                Durability::Synced => end <= self.synced_upto,
            };
            if !done {
                break;
            }
            self.unacked.pop_front();
        }
        debug_assert!(self.synced_upto <= self.written_upto);
        debug_assert!(self.written_upto <= self.next_offset);
    }

    /// True if an append (or `close`) is waiting for bytes to be written or synced: I/O done
    /// now is I/O someone waits on, and is rushed to the kernel (`rush`).
    pub fn someone_waits(&self) -> bool {
        self.want_written > self.written_upto || self.want_synced > self.synced_upto || self.closing
    }

    /// True if every segment before the open segment `base` has its data on disk and synced
    /// (a rolled segment's seal has started). A segment's bytes may be written only then: a
    /// crash must never leave an earlier segment's unwritten tail as a hole in front of later
    /// records, and a write's completion must never acknowledge records of that tail.
    pub fn earlier_segments_durable(&self, base: u64) -> bool {
        self.rolled.iter().all(|r| r.base_offset >= base || r.seal_started)
    }

    /// The segment with base `base` among those still being written.
    pub fn open_segment_mut(&mut self, base: u64) -> Option<&mut ActiveSegment> {
        if self.active.base_offset == base {
            return Some(&mut self.active);
        }
        self.rolled.iter_mut().find(|s| s.base_offset == base)
    }

    pub fn open_segment(&self, base: u64) -> Option<&ActiveSegment> {
        if self.active.base_offset == base {
            return Some(&self.active);
        }
        self.rolled.iter().find(|s| s.base_offset == base)
    }

    /// The sealed segment with base `base`.
    pub fn sealed_segment(&self, base: u64) -> Option<&SealedSegment> {
        let at = self.sealed.partition_point(|s| s.base_offset < base);
        self.sealed.get(at).filter(|s| s.base_offset == base)
    }

    pub fn sealed_segment_mut(&mut self, base: u64) -> Option<&mut SealedSegment> {
        let at = self.sealed.partition_point(|s| s.base_offset < base);
        self.sealed.get_mut(at).filter(|s| s.base_offset == base)
    }

    /// Swaps the spare file in as the new active segment. The old one is sealed by the
    /// flusher. Returns false if no spare is ready.
    pub fn roll(&mut self, log_id: u64, dir: &std::path::Path, cfg: &Config) -> bool {
        let Some(Spare {
            path: spare_path,
            file,
            fresh,
        }) = self.spare.take()
        else {
            self.spare_wanted = true;
            return false;
        };
        let base = self.next_offset;
        let header = SegmentHeader {
            log_id,
            base_offset: base,
            created_ns: now_ns(),
        }
        .encode();
        let mut new = ActiveSegment {
            base_offset: base,
            path: dir.join(file_name(log_id, base)),
            file,
            name: FileName::Spare(spare_path),
            next_offset: base,
            end_pos: 0,
            staging: Staging::new(cfg.write_max_bytes()),
            disk_end: 0,
            durable_end: 0,
            inflight: VecDeque::new(),
            index: IndexBuilder::new(cfg.index_interval_bytes),
            data_crc: 0,
            frame_crc: Default::default(),
            first_timestamp_ns: 0,
            last_timestamp_ns: 0,
            first_append_at: None,
            seal_started: false,
            segment_size_bytes: cfg.segment_size_bytes,
            fresh_blocks: fresh,
        };
        debug_assert_eq!(header.len() as u64, BLOCK_SIZE);
        new.append_bytes(&header);
        let old = std::mem::replace(&mut self.active, new);
        self.rolled.push_back(old);
        self.roll_requested = false;
        self.unflushed_since = None;
        true
    }
}

impl Log {
    /// Validates a request without changing anything.
    fn check(&self, core: &ShardCore, recs: &[NewRecord<'_>]) -> Result<u64> {
        let cfg = &core.config;
        if recs.is_empty() || recs.len() > BATCH_RECORDS_MAX {
            return Err(Error::BadBatch {
                count: recs.len(),
                max: BATCH_RECORDS_MAX,
            });
        }
        let mut total = 0u64;
        for r in recs {
            if r.payload.len() > cfg.max_record_bytes as usize {
                return Err(Error::RecordTooLarge {
                    size: r.payload.len(),
                    max: cfg.max_record_bytes,
                });
            }
            total += frame::frame_len(r.payload.len()) as u64;
        }
        let max = (cfg.segment_size_bytes - BLOCK_SIZE).min(cfg.shard_memory_budget_bytes / 2);
        if total > max {
            return Err(Error::BatchTooLarge { bytes: total, max });
        }
        if core.closing.get() {
            return Err(Error::ShuttingDown);
        }
        if core.disk_full.get() {
            return Err(core.disk_budget_error());
        }
        let inner = self.inner.borrow();
        if let Some(f) = &inner.failed {
            return Err(Error::LogFailed {
                log: self.name.clone(),
                detail: f.clone(),
                kind: inner.failed_kind,
            });
        }
        Ok(total)
    }

    /// The synchronous core of every append: copies the records into the active segment's
    /// write buffer, or says why it cannot right now. Never awaits.
    pub(crate) fn try_stage(
        &self,
        core: &ShardCore,
        recs: &[NewRecord<'_>],
        durability: Durability,
    ) -> Result<std::result::Result<Range<u64>, Blocked>> {
        let total = self.check(core, recs)?;
        let cfg: &Config = &core.config;
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        if !inner.active.fits(total) || (inner.roll_requested && inner.active.record_count() > 0) {
            if let Some(e) = inner.spare_error.take() {
                // Report the failure to create the next segment (e.g. a full disk) to this
                // caller; the next attempt asks the flusher to try again.
                inner.spare_wanted = true;
                self.flusher_wake.notify_all();
                return Err(e);
            }
            if !inner.roll(self.id, &self.dir, cfg) {
                self.flusher_wake.notify_all();
                self.spare_waited.notify_all();
                return Ok(Err(Blocked::Spare));
            }
            self.flusher_wake.notify_all();
            // Appends parked for the spare can go on in the new segment.
            self.changed.notify_all();
        }
        if core.unflushed.get() + total > cfg.shard_memory_budget_bytes {
            return Ok(Err(Blocked::Budget));
        }
        let now = now_ns();
        let first = inner.next_offset;
        let a = &mut inner.active;
        debug_assert_eq!(a.next_offset, first);
        debug_assert_eq!(a.stage_pos() + a.staging.len(), a.end_pos);
        let n = recs.len();
        for (i, r) in recs.iter().enumerate() {
            let ts = r.timestamp_ns.unwrap_or(now);
            a.index.note(a.next_offset, a.end_pos);
            a.append_frame(a.next_offset, ts, r.tag, i + 1 < n, r.payload);
            if a.next_offset == a.base_offset {
                a.first_timestamp_ns = ts;
            }
            a.last_timestamp_ns = ts;
            a.next_offset += 1;
        }
        a.first_append_at.get_or_insert_with(Instant::now);
        let end = a.next_offset;
        inner.next_offset = end;
        inner.unflushed_since.get_or_insert_with(Instant::now);
        core.unflushed.set(core.unflushed.get() + total);
        // Writers come first in Tier0: hot bytes make room before anyone waits.
        core.relieve_tier0();
        {
            let mut st = core.stats.borrow_mut();
            st.appends += 1;
            st.records += n as u64;
            st.payload_bytes += recs.iter().map(|r| r.payload.len() as u64).sum::<u64>();
        }
        let flush_now = match durability {
            Durability::Memory => inner.active.unflushed_bytes() >= cfg.flush_threshold_bytes,
            Durability::Written => {
                inner.want_written = end;
                true
            }
            Durability::Synced => {
                inner.want_written = end;
                inner.want_synced = end;
                inner.syncs_seen = true;
                true
            }
        };
        if durability != Durability::Memory || !inner.unacked.is_empty() {
            inner.unacked.push_back((first, end, durability));
        }
        if flush_now {
            self.flusher_wake.notify_all();
        }
        if inner.unacked.is_empty() {
            self.changed.notify_all();
        }
        Ok(Ok(first..end))
    }

    /// Appends, waiting for memory budget or the next segment if needed, then for the
    /// requested durability.
    pub(crate) async fn append(
        self: &Rc<Self>,
        core: &Rc<ShardCore>,
        recs: &[NewRecord<'_>],
        durability: Durability,
        wait_for_budget: bool,
    ) -> Result<Range<u64>> {
        let range = loop {
            match self.try_stage(core, recs, durability)? {
                Ok(r) => break r,
                // Full budget, or no next segment ready yet: the non-waiting call refuses.
                Err(_) if !wait_for_budget => return Err(core.backpressure()),
                Err(Blocked::Budget) => {
                    core.stats.borrow_mut().backpressure_events += 1;
                    let need = core.config.shard_memory_budget_bytes / 2;
                    core.budget_freed
                        .wait_for(|| {
                            (core.unflushed.get() <= need || core.closing.get() || self.inner.borrow().failed.is_some())
                                .then_some(())
                        })
                        .await;
                }
                Err(Blocked::Spare) => {
                    core.stats.borrow_mut().spare_waits += 1;
                    // Wake when a spare arrives, or when another append has already rolled
                    // (then the new segment has room and no second spare is coming).
                    let base = self.inner.borrow().active.base_offset;
                    self.changed
                        .wait_for(|| {
                            let i = self.inner.borrow();
                            (i.spare.is_some()
                                || i.active.base_offset != base
                                || i.spare_error.is_some()
                                || i.failed.is_some()
                                || core.closing.get())
                            .then_some(())
                        })
                        .await;
                }
            }
        };
        if durability == Durability::Memory {
            // A `Memory` append completes without awaiting, so a producer that appends in a
            // loop would never let this shard's flusher run. Once two flushes' worth waits
            // shard-wide, step aside. With a short preemption interval, a yield: the flusher
            // issues its write and the preemption timer gets it submitted within that
            // interval (a 1 µs timer here made the half-load p99 2-5 ms instead of ~0.1 ms).
            // With a long one, a yield would hold writes unsubmitted for the whole interval
            // (measured at 10 ms: the producer fell 0.5 s behind at half load), so a 1 µs
            // timer forces the reactor's pass instead.
            if core.unflushed.get() >= 2 * core.config.flush_threshold_bytes {
                if core.config.preempt_interval <= YIELD_PREEMPT_MAX {
                    futures_lite::future::yield_now().await;
                } else {
                    glommio::timer::sleep(Duration::from_micros(1)).await;
                }
            }
        }
        if durability != Durability::Memory {
            // The device starts on a full write now, not after every producer woken with
            // this one has staged (see `flusher::issue_full_write`).
            crate::flusher::issue_full_write(self, core);
        }
        self.wait_durable(range.end, durability).await?;
        Ok(range)
    }

    /// Waits until every record below `end` has reached `durability` and is visible.
    /// Acknowledgement follows offset order: a reader sees a record only once every record
    /// before it is acknowledged (`visible_upto`), so an append acknowledged before an earlier
    /// one (a Memory append behind a Synced one waiting for its fdatasync) would not be
    /// readable when its caller is told it is done; it waits for the earlier ones. With one
    /// durability per log a Memory append never waits here.
    pub(crate) async fn wait_durable(&self, end: u64, durability: Durability) -> Result<()> {
        let reached = |i: &LogInner| {
            let mark = match durability {
                Durability::Memory => i.next_offset,
                Durability::Written => i.written_upto,
                Durability::Synced => i.synced_upto,
            };
            mark >= end && i.visible_upto() >= end
        };
        if reached(&self.inner.borrow()) {
            return Ok(());
        }
        self.changed
            .wait_for(|| {
                let i = self.inner.borrow();
                if reached(&i) {
                    Some(Ok(()))
                } else {
                    i.failed.as_ref().map(|f| {
                        Err(Error::LogFailed {
                            log: self.name.clone(),
                            detail: f.clone(),
                            kind: i.failed_kind,
                        })
                    })
                }
            })
            .await
    }

    /// Counts a Synced append from another thread for group-commit pacing (`group`).
    pub(crate) fn foreign_arrived(&self, d: Durability) {
        if d == Durability::Synced {
            self.inner.borrow_mut().foreign.arrived();
        }
    }

    /// Waits until everything appended so far is synced.
    pub(crate) async fn sync(&self) -> Result<()> {
        let end = {
            let mut i = self.inner.borrow_mut();
            let end = i.next_offset;
            if i.synced_upto >= end {
                return Ok(());
            }
            i.want_written = i.want_written.max(end);
            i.want_synced = i.want_synced.max(end);
            i.syncs_seen = true;
            end
        };
        self.flusher_wake.notify_all();
        self.wait_durable(end, Durability::Synced).await
    }

    /// Asks for the active segment to be sealed and a new one started, and waits until the
    /// seal is durable.
    pub(crate) async fn roll_now(&self) -> Result<()> {
        let end = {
            let mut i = self.inner.borrow_mut();
            if i.active.record_count() == 0 {
                return Ok(());
            }
            // A previous failure to make the next segment (say, a full disk) is retried now.
            i.spare_error = None;
            i.roll_requested = true;
            i.spare_wanted = true;
            i.next_offset
        };
        self.flusher_wake.notify_all();
        self.spare_waited.notify_all();
        self.changed
            .wait_for(|| {
                let mut i = self.inner.borrow_mut();
                if let Some(f) = &i.failed {
                    return Some(Err(Error::LogFailed {
                        log: self.name.clone(),
                        detail: f.clone(),
                        kind: i.failed_kind,
                    }));
                }
                if i.active.base_offset >= end && i.rolled.is_empty() {
                    return Some(Ok(()));
                }
                // Closing flushers take no more rolls: waiting on would outlive the shard.
                if i.closing {
                    return Some(Err(Error::ShuttingDown));
                }
                // The segment could not be created: hand the error (with its OS error kind)
                // to the caller and leave the log as it was.
                i.spare_error.take().map(|e| {
                    i.roll_requested = false;
                    Err(e)
                })
            })
            .await
    }

    /// Marks the log failed after an I/O error: waiters and later appends get the error; what
    /// was acknowledged stays readable. Recovery at the next start decides what is durable.
    pub(crate) fn fail(&self, err: &Error) {
        tracing::error!(log = %self.name, error = %err, "log failed; appends refused until restart");
        let mut i = self.inner.borrow_mut();
        i.failed = Some(err.to_string());
        i.failed_kind = err.io_kind();
        drop(i);
        self.changed.notify_all();
    }
}
