//! A shard: one glommio executor pinned to one core, owning its logs outright.
//!
//! Architecture invariant: nothing here is shared with another thread except the shard's
//! `Mailbox`. All state is `Rc`/`Cell`/`RefCell`, which the compiler keeps on this thread.

use crate::catalog::Placement;
use crate::config::{Config, Durability};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::format::logmeta::LogMeta;
use crate::limits::LOG_NAME_BYTES_MAX;
use crate::log::Log;
use crate::mailbox::Mailbox;
use crate::record::{now_ns, NewRecord, Record};
use crate::recovery::{self, RecoveryReport};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ops::Range;
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
    pub mailbox: Arc<Mailbox>,
    serial: Cell<u64>,
    pub stats: RefCell<ShardStats>,
    flushers: RefCell<Vec<glommio::Task<()>>>,
}

impl ShardCore {
    pub fn new(id: usize, config: Arc<Config>, placement: Arc<Placement>, mailbox: Arc<Mailbox>) -> Self {
        let dir = config.root.join(shard_dir_name(id));
        ShardCore {
            id,
            config,
            dir,
            placement,
            logs: RefCell::new(HashMap::new()),
            unflushed: Cell::new(0),
            budget_freed: Event::default(),
            closing: Cell::new(false),
            mailbox,
            serial: Cell::new(0),
            stats: RefCell::new(ShardStats {
                shard: id,
                ..Default::default()
            }),
            flushers: RefCell::new(Vec::new()),
        }
    }

    pub fn snapshot_stats(&self) -> ShardStats {
        let mut s = self.stats.borrow().clone();
        s.logs = self.logs.borrow().len();
        s.unflushed_bytes = self.unflushed.get();
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
    pub async fn recover(self: &Rc<Self>) -> Result<Vec<RecoveryReport>> {
        if !self.dir.is_dir() {
            std::fs::create_dir_all(&self.dir).map_err(|e| Error::io("create shard directory", &self.dir, e))?;
            recovery::sync_dir(&self.config.root)?;
        }
        crate::startup::prime_dma_probe(&self.dir).await?;
        let mut reports = Vec::new();
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map_err(|e| Error::io("list shard directory", &self.dir, e))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_dir() && p.join(crate::format::logmeta::FILE_NAME).exists())
            .collect();
        dirs.sort();
        for d in dirs {
            let (log, report) = recovery::open_log(&self.config, d).await?;
            self.install(Rc::new(log));
            reports.push(report);
        }
        Ok(reports)
    }

    fn install(self: &Rc<Self>, log: Rc<Log>) {
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
            let dir = self.dir.join(format!("log-{id:016x}"));
            if !dir.exists() {
                break LogMeta {
                    log_id: id,
                    created_ns: now_ns(),
                    name: name.to_owned(),
                };
            }
        };
        let dir = self.dir.join(format!("log-{:016x}", meta.log_id));
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

    pub async fn append(
        self: &Rc<Self>,
        name: &str,
        recs: &[NewRecord<'_>],
        d: Durability,
        wait: bool,
    ) -> Result<Range<u64>> {
        let log = self.log(name)?;
        log.append(self, recs, d, wait).await
    }

    pub async fn read_from(&self, name: &str, from: u64, max_records: usize, max_bytes: usize) -> Result<Vec<Record>> {
        let log = self.log(name)?;
        let window = (self.config.index_interval_bytes + 4096) as usize;
        log.read_from(
            from,
            max_records.max(1),
            max_bytes,
            crate::limits::RECORD_BYTES_CEILING,
            window,
        )
        .await
    }

    /// Graceful stop: refuse new work, flush and sync everything, stop the flushers.
    pub async fn close(self: &Rc<Self>) -> Result<()> {
        // Requests that arrived before the close have been spawned as tasks; let each take its
        // first step (an append stages its records) so work accepted before close is finished.
        futures_lite::future::yield_now().await;
        self.closing.set(true);
        self.mailbox.close();
        let logs: Vec<Rc<Log>> = self.logs.borrow().values().cloned().collect();
        for l in &logs {
            l.inner.borrow_mut().closing = true;
            l.flusher_wake.notify_all();
            l.changed.notify_all();
        }
        self.budget_freed.notify_all();
        let tasks = std::mem::take(&mut *self.flushers.borrow_mut());
        for t in tasks {
            t.await;
        }
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
            if let Some((p, _)) = l.inner.borrow_mut().spare.take() {
                let _ = std::fs::remove_file(p);
            }
        }
        // Release every file: glommio closes a dropped DmaFile asynchronously at the next I/O
        // cycle, so drop all references and give the reactor a few cycles before the executor
        // exits; otherwise descriptors (and the space of removed spare files) would leak.
        drop(logs);
        self.logs.borrow_mut().clear();
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
    pub segments_sealed: u64,
    /// Appends that had to wait for memory budget (or got `Backpressure`).
    pub backpressure_events: u64,
    /// Appends that waited for the next segment's file to be preallocated.
    pub spare_waits: u64,
    /// Bytes appended and not yet written, now.
    pub unflushed_bytes: u64,
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
