//! A shard: one glommio executor pinned to one core, owning its logs outright.
//!
//! Architecture invariant: nothing here is shared with another thread except the shard's
//! `Mailbox`. All state is `Rc`/`Cell`/`RefCell`, which the compiler keeps on this thread.

use crate::catalog::Placement;
use crate::compressor::Compressor;
use crate::config::{Config, Profile};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::format::logmeta::LogMeta;
use crate::limits::LOG_NAME_BYTES_MAX;
use crate::log::Log;
use crate::mailbox::Mailbox;
use crate::manifest::Manifest;
use crate::record::{now_ns, Record};
use crate::recovery::{self, RecoveryReport};
use crate::tier0::HotCache;
use crate::tier2::link::Link;
use std::cell::{Cell, OnceCell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

pub type ShardRef = Rc<ShardCore>;

pub struct ShardCore {
    pub id: usize,
    pub config: Arc<Config>,
    pub dir: PathBuf,
    pub placement: Arc<Placement>,
    pub logs: RefCell<HashMap<String, Rc<Log>>>,
    /// Bytes appended to this shard's logs and not yet written: the Tier0 budget's measure.
    pub unflushed: Cell<u64>,
    pub budget_freed: Event,
    pub closing: Cell<bool>,
    /// Set near the end of `close`, once everything is flushed: tasks given to `spawn_on` that
    /// are still running end with `ShuttingDown` (see `Handle::spawn_on`).
    pub stopped: Cell<bool>,
    pub stopped_event: Event,
    pub mailbox: Arc<Mailbox>,
    serial: Cell<u64>,
    pub stats: RefCell<ShardStats>,
    flushers: RefCell<Vec<glommio::Task<()>>>,
    /// The durable truth about sealed segments; set once by `recover`.
    pub manifest: OnceCell<Manifest>,
    /// Tier0's hot part: decoded Tier1 frames kept for readers.
    pub hot: RefCell<HotCache>,
    /// Profile for the next Tier1 file.
    pub profile: Cell<Profile>,
    /// Bytes of sealed segment files on local disk (raw and Tier1): the Tier1 budget's measure.
    pub tier1_bytes: Cell<u64>,
    /// Over the Tier1 budget with nothing safe to evict: appends get `DiskBudget`.
    pub disk_full: Cell<bool>,
    /// Sealed segments waiting for Tier1 work, oldest first.
    pub tiering_queue: RefCell<VecDeque<(Rc<Log>, u64)>>,
    pub tiering_wake: Event,
    /// A tiering job finished; with `tiering_busy` false and an empty queue, all are done.
    pub tiering_done: Event,
    pub tiering_busy: Cell<bool>,
    /// Segment files being deleted in tasks of their own (`tiering::delete_paced`).
    pub deletions: Cell<u64>,
    tiering_task: RefCell<Option<glommio::Task<()>>>,
    /// The shard's compression thread (`Config::compression_cpus`); `None`: zstd runs here.
    pub compressor: Option<Compressor>,
    /// Its io_uring workers are confined to CPUs other than its own (`Config::io_worker_cpus`),
    /// so writes no append waits for are handed to them (`flusher::perform`).
    pub io_workers_elsewhere: bool,
    read_tick: Cell<u64>,
    /// One DMA buffer of zeros, shared by every zero-filling spare of the shard
    /// (`flusher::zero_fill`), taken from the pool on first use.
    pub zeros: OnceCell<Rc<glommio::io::DmaBuffer>>,
    /// When the shard's next zero-fill step may start (`flusher::zero_fill`'s pace).
    pub zero_fill_next: Cell<std::time::Instant>,
    /// The bridge link, if `Config::tier2` is set.
    pub link: OnceCell<Rc<Link>>,
    link_task: RefCell<Option<glommio::Task<()>>>,
}

impl ShardCore {
    pub fn new(
        id: usize,
        config: Arc<Config>,
        placement: Arc<Placement>,
        mailbox: Arc<Mailbox>,
        compressor: Option<Compressor>,
        io_workers_elsewhere: bool,
    ) -> Self {
        let dir = config.root.join(shard_dir_name(id));
        let profile = config.compression;
        ShardCore {
            id,
            config,
            dir,
            placement,
            logs: RefCell::new(HashMap::new()),
            unflushed: Cell::new(0),
            budget_freed: Event::default(),
            closing: Cell::new(false),
            stopped: Cell::new(false),
            stopped_event: Event::default(),
            mailbox,
            serial: Cell::new(0),
            stats: RefCell::new(ShardStats {
                shard: id,
                ..Default::default()
            }),
            flushers: RefCell::new(Vec::new()),
            manifest: OnceCell::new(),
            hot: RefCell::new(HotCache::default()),
            profile: Cell::new(profile),
            tier1_bytes: Cell::new(0),
            disk_full: Cell::new(false),
            tiering_queue: RefCell::new(VecDeque::new()),
            tiering_wake: Event::default(),
            tiering_done: Event::default(),
            tiering_busy: Cell::new(false),
            deletions: Cell::new(0),
            tiering_task: RefCell::new(None),
            compressor,
            io_workers_elsewhere,
            read_tick: Cell::new(0),
            zeros: OnceCell::new(),
            zero_fill_next: Cell::new(std::time::Instant::now()),
            link: OnceCell::new(),
            link_task: RefCell::new(None),
        }
    }

    pub fn manifest(&self) -> &Manifest {
        self.manifest
            .get()
            .expect("the manifest is loaded before the shard serves anything")
    }

    /// A new tick of the read clock, for least-recently-used order.
    pub fn tick(&self) -> u64 {
        let t = self.read_tick.get() + 1;
        self.read_tick.set(t);
        t
    }

    /// Hot bytes may use what write buffers leave, minus one flush of headroom.
    pub fn hot_allowance(&self) -> u64 {
        crate::tier0::hot_allowance(
            self.config.shard_memory_budget_bytes,
            self.unflushed.get(),
            self.config.flush_threshold_bytes,
        )
    }

    /// Drops hot bytes that write buffers now need.
    pub fn relieve_tier0(&self) {
        let allowed = self.hot_allowance();
        let mut h = self.hot.borrow_mut();
        if h.bytes() > allowed {
            h.shrink_to(allowed);
        }
    }

    /// Queues a sealed segment for Tier1 work.
    pub fn enqueue_tiering(&self, log: &Rc<Log>, base: u64) {
        self.tiering_queue.borrow_mut().push_back((log.clone(), base));
        self.tiering_wake.notify_all();
    }

    pub fn disk_budget_error(&self) -> Error {
        self.stats.borrow_mut().disk_budget_refusals += 1;
        Error::DiskBudget {
            shard: self.id,
            used: self.tier1_bytes.get(),
            budget: self.config.tier1_budget_bytes.unwrap_or(u64::MAX),
        }
    }

    pub fn snapshot_stats(&self) -> ShardStats {
        let mut s = self.stats.borrow().clone();
        s.logs = self.logs.borrow().len();
        s.unflushed_bytes = self.unflushed.get();
        s.staging_capacity_bytes = self
            .logs
            .borrow()
            .values()
            .map(|l| {
                let i = l.inner.borrow();
                i.active.staging.capacity() + i.rolled.iter().map(|r| r.staging.capacity()).sum::<u64>()
            })
            .sum();
        let h = self.hot.borrow();
        s.tier0_budget_bytes = self.config.shard_memory_budget_bytes;
        s.tier0_hot_bytes = h.bytes();
        s.tier0_pressure_permille = ((s.unflushed_bytes + h.bytes()) * 1000 / s.tier0_budget_bytes.max(1)) as u32;
        s.tier0_evictions = h.evictions;
        s.tier0_evicted_bytes = h.evicted_bytes;
        s.tier0_hits = h.hits;
        s.tier0_misses = h.misses;
        s.tier1_bytes = self.tier1_bytes.get();
        s.tier1_budget_bytes = self.config.tier1_budget_bytes;
        s.tier1_over_budget = self.disk_full.get();
        s.compression = self.profile.get();
        s.tiering_queue = self.tiering_queue.borrow().len();
        if let Some(m) = self.manifest.get() {
            s.manifest_records = m.records_written.get();
            s.manifest_compactions = m.compactions.get();
            s.tier2_pending_deletes = m.state().tier2_deletes.len();
        }
        s
    }

    /// Counts a refused append and builds the error for it.
    pub fn backpressure(&self) -> Error {
        self.stats.borrow_mut().backpressure_events += 1;
        Error::Backpressure {
            shard: self.id,
            used: self.unflushed.get(),
            budget: self.config.shard_memory_budget_bytes,
        }
    }

    pub fn next_serial(&self) -> u64 {
        let s = self.serial.get();
        self.serial.set(s + 1);
        s
    }

    /// Opens every log in this shard's directory.
    pub async fn recover(self: &Rc<Self>) -> Result<(Vec<RecoveryReport>, Vec<String>)> {
        if !self.dir.is_dir() {
            std::fs::create_dir_all(&self.dir).map_err(|e| Error::io("create shard directory", &self.dir, e))?;
            recovery::sync_dir(&self.config.root)?;
        }
        crate::startup::prime_dma_probe(&self.dir).await?;
        let (manifest, replay) = Manifest::replay(&self.dir, self.config.manifest_compact_records)?;
        let notes: Vec<String> = replay
            .notes
            .into_iter()
            .map(|n| format!("shard {}: {n}", self.id))
            .collect();
        if self.manifest.set(manifest).is_err() {
            unreachable!("recover runs once");
        }
        let mut reports = Vec::new();
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map_err(|e| Error::io("list shard directory", &self.dir, e))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_dir() && p.join(crate::format::logmeta::FILE_NAME).exists())
            .collect();
        dirs.sort();
        for d in dirs {
            let opened = recovery::open_log(&self.config, d, self.manifest()).await?;
            let log = Rc::new(opened.log);
            let local: u64 = log.inner.borrow().sealed.iter().map(|s| s.local_bytes).sum();
            self.tier1_bytes.set(self.tier1_bytes.get() + local);
            for base in opened.to_tier {
                self.enqueue_tiering(&log, base);
            }
            self.install(log);
            reports.push(opened.report);
        }
        let tq = glommio::executor().create_task_queue(
            glommio::Shares::Static(self.config.tiering_shares),
            glommio::Latency::NotImportant,
            "aof-tiering",
        );
        let spawn_err = |e: glommio::GlommioError<()>| Error::Environment {
            problem: format!("cannot start a background task: {e}"),
            remedy: "report this as a bug".into(),
        };
        let task = glommio::spawn_local_into(crate::tiering::run(self.clone()), tq).map_err(spawn_err)?;
        *self.tiering_task.borrow_mut() = Some(task);
        if let Some(t2) = self.config.tier2 {
            let link = Rc::new(Link::open(self, t2)?);
            let _ = self.link.set(link.clone());
            let task = glommio::spawn_local_into(crate::tier2::link::run(self.clone(), link), tq).map_err(spawn_err)?;
            *self.link_task.borrow_mut() = Some(task);
        }
        Ok((reports, notes))
    }

    fn install(self: &Rc<Self>, log: Rc<Log>) {
        // A create that was under way when close began finishes now: its log is durable and
        // stays, but its flusher must see the close too (close marked only the logs it found),
        // or close would wait for it forever.
        if self.closing.get() {
            log.inner.borrow_mut().closing = true;
        }
        let task = glommio::spawn_local(crate::flusher::run(log.clone(), self.clone()));
        self.flushers.borrow_mut().push(task);
        self.logs.borrow_mut().insert(log.name.clone(), log);
    }

    pub fn log(&self, name: &str) -> Result<Rc<Log>> {
        if let Some(l) = self.logs.borrow().get(name) {
            return Ok(l.clone());
        }
        let owner = self.placement.shard_of(name);
        if owner != self.id {
            return Err(Error::WrongShard {
                log: name.to_owned(),
                owner,
                this: self.id,
            });
        }
        Err(Error::UnknownLog { name: name.to_owned() })
    }

    pub async fn create_log(self: &Rc<Self>, name: &str) -> Result<()> {
        validate_name(name)?;
        let owner = self.placement.shard_of(name);
        if owner != self.id {
            return Err(Error::WrongShard {
                log: name.to_owned(),
                owner,
                this: self.id,
            });
        }
        if self.closing.get() {
            return Err(Error::ShuttingDown);
        }
        if self.logs.borrow().contains_key(name) {
            return Err(Error::LogExists { name: name.to_owned() });
        }
        // The id is the log's persistent identity: random, so names can be reused after a
        // delete without ever colliding with the files of an earlier log.
        let meta = loop {
            let id = random_u64();
            let dir = self.dir.join(crate::format::logmeta::dir_name(id));
            if !dir.exists() {
                break LogMeta {
                    log_id: id,
                    created_ns: now_ns(),
                    name: name.to_owned(),
                };
            }
        };
        let dir = self.dir.join(crate::format::logmeta::dir_name(meta.log_id));
        let log = recovery::create_log(&self.config, dir.clone(), &meta).await;
        let log = match log {
            Ok(l) => l,
            Err(e) => {
                // Leave nothing half-made behind: the request changed nothing.
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        // Two concurrent creates of one name: the first to finish wins.
        if self.logs.borrow().contains_key(name) {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(Error::LogExists { name: name.to_owned() });
        }
        self.install(Rc::new(log));
        Ok(())
    }

    pub async fn read_from(
        self: &Rc<Self>,
        name: &str,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>> {
        let log = self.log(name)?;
        let window = (self.config.index_interval_bytes + 4096) as usize;
        // Hydrations this read may start. More than one: a segment brought back can be
        // evicted again before the read gets to it (the budget is enforced by other tasks
        // too), and a read should not fail for that; bounded, so a budget that cannot hold
        // the segment ends in an error rather than a loop.
        let mut hydrations_left = 3u32;
        loop {
            let r = log
                .read_from(
                    self,
                    from,
                    max_records.max(1),
                    max_bytes,
                    crate::limits::RECORD_BYTES_CEILING,
                    window,
                )
                .await;
            // A segment that lives only in Tier2: bring it back through the bridge and read
            // again.
            let (Err(Error::NotLocal { offset, .. }), Some(link), 1..) = (&r, self.link.get(), hydrations_left) else {
                return r;
            };
            let offset = *offset;
            let base = {
                let i = log.inner.borrow();
                let at = i.sealed.partition_point(|s| s.base_offset <= offset);
                match at.checked_sub(1).map(|k| i.sealed[k].base_offset) {
                    Some(b) => b,
                    None => return r,
                }
            };
            if max_records <= 1 {
                // A point read fetches just the frame that holds the record.
                return Ok(vec![
                    crate::tier2::link::read_remote(self, link, &log, base, offset).await?,
                ]);
            }
            crate::tier2::link::hydrate(self, link, &log, base, offset).await?;
            hydrations_left -= 1;
        }
    }

    /// Graceful stop: refuse new work, flush and sync everything, stop the flushers.
    pub async fn close(self: &Rc<Self>) -> Result<()> {
        // Requests that arrived before the close have been spawned as tasks; let each take its
        // first step (an append stages its records) so work accepted before close is finished.
        futures_lite::future::yield_now().await;
        self.closing.set(true);
        self.mailbox.close();
        let mut logs: Vec<Rc<Log>> = self.logs.borrow().values().cloned().collect();
        for l in &logs {
            l.inner.borrow_mut().closing = true;
            l.flusher_wake.notify_all();
            l.changed.notify_all();
            l.spare_waited.notify_all();
        }
        self.budget_freed.notify_all();
        self.tiering_wake.notify_all();
        self.tiering_done.notify_all();
        let tiering = self.tiering_task.borrow_mut().take();
        if let Some(t) = tiering {
            t.await;
        }
        if let Some(l) = self.link.get() {
            l.wake.notify_all();
            l.answered.notify_all();
        }
        let link = self.link_task.borrow_mut().take();
        if let Some(t) = link {
            t.await;
        }
        // Until none is left: a create in flight installs its log (and flusher) meanwhile.
        loop {
            let tasks = std::mem::take(&mut *self.flushers.borrow_mut());
            if tasks.is_empty() {
                break;
            }
            for t in tasks {
                t.await;
            }
        }
        // Again, with the logs of creates that finished meanwhile (the old list is dropped
        // here: a reference kept past the release below would keep its files open).
        logs = self.logs.borrow().values().cloned().collect();
        let mut first_err = None;
        for l in &logs {
            let i = l.inner.borrow();
            if let Some(f) = &i.failed {
                first_err.get_or_insert(Error::LogFailed {
                    log: l.name.clone(),
                    detail: f.clone(),
                    kind: i.failed_kind,
                });
            } else {
                debug_assert_eq!(i.synced_upto, i.next_offset, "close leaves everything synced");
            }
        }
        // Remove unused spare files so a clean shutdown leaves no leftovers.
        for l in &logs {
            let mut i = l.inner.borrow_mut();
            let spare = i.spare.take().map(|s| (s.path, s.file));
            for (p, _) in spare.into_iter().chain(i.recycled.drain(..)) {
                let _ = std::fs::remove_file(p);
            }
        }
        // Tasks given to `spawn_on` that have not finished (pending forever, or parked on a
        // timer, which glommio would never drop) end now with `ShuttingDown`, so their callers
        // are answered and the logs they hold are let go before the files are released.
        self.stopped.set(true);
        self.stopped_event.notify_all();
        futures_lite::future::yield_now().await;
        // Release every file: glommio closes a dropped DmaFile asynchronously at the next I/O
        // cycle, so drop all references and give the reactor a few cycles before the executor
        // exits; otherwise descriptors (and the space of removed spare files) would leak.
        drop(logs);
        self.logs.borrow_mut().clear();
        self.tiering_queue.borrow_mut().clear();
        *self.hot.borrow_mut() = HotCache::default();
        if let Some(m) = self.manifest.get() {
            m.close().await;
        }
        for _ in 0..4 {
            glommio::timer::Timer::new(std::time::Duration::from_millis(1)).await;
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Counters of one shard since it started. Cheap to keep (plain integers on the shard's own
/// thread); read them with `Handle::stats` or `Shard::stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ShardStats {
    pub shard: usize,
    pub logs: usize,
    pub appends: u64,
    pub records: u64,
    pub payload_bytes: u64,
    /// O_DIRECT writes of write buffers and the bytes they carried (tail-block rewrites
    /// included, so `written_bytes / payload_bytes` is the write amplification).
    pub writes: u64,
    pub written_bytes: u64,
    pub fdatasyncs: u64,
    /// Writes issued with `RWF_DSYNC` in place of a write and an fdatasync (`Config::dsync_writes`).
    pub dsync_writes: u64,
    /// fdatasyncs run in their own task while the flusher wrote the next bytes (group commit
    /// pipelined: the write of group n+1 overlaps the sync of group n).
    pub overlapped_syncs: u64,
    /// fdatasyncs held back for producers on other threads to rejoin the group (`group`).
    pub held_syncs: u64,
    /// Writes issued while an earlier write of the same log was still running (several
    /// bounded writes in flight, `Config::flush_writes_in_flight`).
    pub overlapped_writes: u64,
    /// Rewrites of a partly written block issued apart from the new blocks behind it, in a
    /// new file (see `ActiveSegment::plan_write`).
    pub head_block_writes: u64,
    /// Writes no append was waiting for, handed straight to the io_uring workers on other
    /// CPUs (`IOSQE_ASYNC`), so the shard does not pay for submitting them.
    pub punted_writes: u64,
    /// Writes issued by the Synced or Written append that filled them, not by the flusher
    /// (`flusher::issue_full_write`).
    pub producer_writes: u64,
    /// Writes and fdatasyncs an append waited on, submitted to the kernel when started rather
    /// than at the executor's next trip through its reactor (`rush`).
    pub rushed_io: u64,
    /// Data files whose blocks were freed on the shard's thread after all, because a read
    /// held the file too long (`fsops::delete_data_file`); each may have stalled the shard.
    pub deletes_on_shard: u64,
    pub segments_sealed: u64,
    /// Appends that had to wait for memory budget (or got `Backpressure`).
    pub backpressure_events: u64,
    /// Appends that waited for the next segment's file to be preallocated.
    pub spare_waits: u64,
    /// Bytes appended and not yet written, now.
    pub unflushed_bytes: u64,
    /// DMA memory the logs' staging chunks hold now (appended bytes, the partial block each
    /// write leaves, and the chunks' free room).
    pub staging_capacity_bytes: u64,
    /// Staging memory given back by logs that went idle (`Staging::release_idle`).
    pub idle_staging_released_bytes: u64,
    /// Tier0: the budget, hot bytes (decoded Tier1 frames kept for readers) and how full the
    /// two together are, in thousandths of the budget.
    pub tier0_budget_bytes: u64,
    pub tier0_hot_bytes: u64,
    pub tier0_pressure_permille: u32,
    /// Hot frames dropped to make room (for writers or newer frames).
    pub tier0_evictions: u64,
    pub tier0_evicted_bytes: u64,
    pub tier0_hits: u64,
    pub tier0_misses: u64,
    /// Sealed segment files on local disk (raw and Tier1), and the budget for them.
    pub tier1_bytes: u64,
    pub tier1_budget_bytes: Option<u64>,
    /// Over budget with nothing safe to evict (appends are refused with `DiskBudget`).
    pub tier1_over_budget: bool,
    /// Times the shard went over its Tier1 budget with nothing to evict.
    pub tier1_over_budget_events: u64,
    pub disk_budget_refusals: u64,
    pub tier1_evictions: u64,
    pub tier1_evicted_bytes: u64,
    /// Compression: segments done, bytes in (segment record bytes) and out (Tier1 file
    /// bytes), and time spent, per shard since start.
    pub compression: Profile,
    pub segments_compressed: u64,
    pub compress_in_bytes: u64,
    pub compress_out_bytes: u64,
    pub compress_nanos: u64,
    /// Tier1 frames zstd compressed on the shard's compression thread
    /// (`Config::compression_cpus`) instead of on the shard.
    pub frames_compressed_off_shard: u64,
    /// Tier1 recompression reads and writes handed straight to io_uring's workers on other
    /// CPUs (`IOSQE_ASYNC`; see `punted_writes`).
    pub punted_tier1_ios: u64,
    /// Sealed segments waiting for Tier1 work.
    pub tiering_queue: usize,
    pub tiering_errors: u64,
    pub retention_deleted_segments: u64,
    pub retention_deleted_bytes: u64,
    /// Of `retention_deleted_segments`, those removed before they were compressed (with
    /// compression on: compression work saved).
    pub retention_deleted_uncompressed: u64,
    /// Compressions given up part-way because retention came to remove their segment (the
    /// segment was then removed; it counts in `retention_deleted_uncompressed` too).
    pub compressions_abandoned: u64,
    /// Raw segment files kept for reuse as the next segment instead of deleted, and spares
    /// made from them: their blocks are already written, so writes over them are not first
    /// writes to new blocks (see `tiering::retire_raw`).
    pub segments_recycled: u64,
    pub spares_reused: u64,
    /// Bytes of zeros written through new spares before they became segments
    /// (`Config::zero_fill_spares_bytes_per_sec`), and the spares zeroed whole; the others
    /// were wanted by a roll first and went into use as far as they were zeroed.
    pub spare_zeroed_bytes: u64,
    pub spares_zeroed: u64,
    /// Rolls onto a spare zeroed whole before the fresh active segment was half full
    /// (`flusher::make_spare`): a new or restarted Synced log leaves its new blocks early.
    pub early_rolls: u64,
    pub manifest_records: u64,
    pub manifest_compactions: u64,
    /// Deleted segments whose Tier2 copy the bridge still has to delete.
    pub tier2_pending_deletes: usize,
    /// Requests sent to the bridge, refused by a full ring, confirmed uploads, hydrations
    /// done, and failures the bridge reported.
    pub tier2_requests: u64,
    pub tier2_ring_full: u64,
    pub tier2_uploads: u64,
    pub tier2_uploaded_bytes: u64,
    /// Point reads served from Tier2 by a ranged read of one frame (no hydration).
    pub tier2_range_reads: u64,
    pub tier2_hydrations: u64,
    pub tier2_failures: u64,
}

pub fn shard_dir_name(id: usize) -> String {
    format!("shard-{id:03}")
}

fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::BadLogName { reason: "empty" });
    }
    if name.len() > LOG_NAME_BYTES_MAX {
        return Err(Error::BadLogName {
            reason: "longer than 1024 bytes",
        });
    }
    if name.chars().any(|c| c.is_control()) {
        return Err(Error::BadLogName {
            reason: "contains control characters",
        });
    }
    Ok(())
}

fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS's randomness per process; mixing in the time makes
    // two ids from one process differ.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now_ns());
    h.finish()
}

/// The shard's inbox task: runs jobs sent from other threads, in arrival order.
pub async fn serve_mailbox(core: Rc<ShardCore>) {
    let mailbox = core.mailbox.clone();
    loop {
        let mut n = 0;
        while let Some(job) = mailbox.pop() {
            job(&core);
            n += 1;
            if n % 64 == 0 {
                mailbox.wake_space_waiters();
                glommio::yield_if_needed().await;
            }
        }
        if n > 0 {
            mailbox.wake_space_waiters();
        }
        if core.closing.get() || mailbox.close_requested() {
            return;
        }
        std::future::poll_fn(|cx| {
            mailbox.register_inbox(cx.waker());
            if !mailbox.is_empty() || core.closing.get() || mailbox.close_requested() {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await;
    }
}
