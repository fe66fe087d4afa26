//! The public face: `Engine` (start, stop), `Handle` (any thread), `Shard` and `LocalLog`
//! (code running on a shard's own executor, no cross-thread hop).

use crate::catalog::{DirLock, Placement};
use crate::config::{Config, Durability, Profile, Retention};
use crate::error::{Error, Result};
use crate::format::manifest::ObjectRef;
use crate::log::Log;
use crate::mailbox::{Job, Mailbox, SendError};
use crate::record::{NewRecord, OwnedRecord, Record};
use crate::recovery::RecoveryReport;
use crate::reply::Reply;
use crate::shard::{serve_mailbox, ShardCore, ShardRef, ShardStats};
use crate::tiering::SegmentInfo;
use futures_channel::oneshot;
use std::collections::VecDeque;
use std::future::Future;
use std::ops::Range;
use std::rc::Rc;
use std::sync::Arc;

/// A running engine: one pinned executor thread per shard.
pub struct Engine {
    handle: Handle,
    threads: Vec<glommio::ExecutorJoinHandle<Result<()>>>,
    reports: Vec<RecoveryReport>,
    warnings: Vec<String>,
    _lock: Option<DirLock>,
}

impl Engine {
    /// Checks the environment, recovers every shard's logs and starts the shards.
    pub fn open(config: Config) -> Result<Engine> {
        config.validate()?;
        let root = &config.root.clone();
        if !root.is_dir() {
            if !config.create_if_missing {
                return Err(Error::MissingDirectory { path: root.clone() });
            }
            std::fs::create_dir(root).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Error::MissingDirectory { path: root.clone() },
                _ => Error::io("create data directory", root, e),
            })?;
            if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
                crate::recovery::sync_dir(parent)?;
            }
        }
        // Absolute paths from here on: io_uring opens are relative to no working directory.
        let mut config = config;
        config.root = config
            .root
            .canonicalize()
            .map_err(|e| Error::io("resolve data directory", &config.root, e))?;
        let root = &config.root;
        crate::startup::check_io_uring()?;
        crate::startup::check_direct_io(root)?;
        let mut warnings = Vec::new();
        if let Some(e) = config
            .dsync_writes
            .then(|| crate::startup::dsync_writes_work(root).err())
            .flatten()
        {
            let w = format!(
                "a direct write with RWF_DSYNC in {} failed ({e}): every Synced append takes a write and an fdatasync",
                root.display()
            );
            tracing::warn!("{w}");
            warnings.push(w);
            config.dsync_writes = false;
        }
        for w in crate::startup::check_memory(&config)? {
            tracing::warn!("{w}");
            warnings.push(w);
        }
        let lock = DirLock::acquire(root)?;
        let shards = config.effective_shards();
        let placement = Arc::new(Placement::load(root, shards)?);
        let config = Arc::new(config);
        let cpus = allowed_cpus();
        if config.pin_cores && shards > cpus.len() {
            let w = format!("{shards} shards on {} cores: shards will share cores", cpus.len());
            tracing::warn!("{w}");
            warnings.push(w);
        }
        let mut mailboxes = Vec::new();
        let mut threads = Vec::new();
        let mut started = Vec::new();
        let pinned = config.pin_cores && !cpus.is_empty();
        // The same for every shard: where its io_uring workers may run, if not on its core.
        let io_cpus = match &config.io_worker_cpus {
            crate::config::IoWorkerCpus::Spare if pinned => Some(crate::iowq::spare_cpus(&cpus, shards)),
            crate::config::IoWorkerCpus::Cpus(list) if pinned => Some(list.clone()),
            _ => None,
        };
        // Where each shard's compression thread may run, if it gets one.
        let zstd_cpus = match &config.compression_cpus {
            _ if !config.tier1_compress => None,
            crate::config::CompressionCpus::Shard => None,
            crate::config::CompressionCpus::Spare if pinned => {
                let spare = crate::iowq::cpus_without_shard(&cpus, shards);
                (!spare.is_empty()).then(|| spare.to_vec())
            }
            crate::config::CompressionCpus::Spare => None,
            crate::config::CompressionCpus::Cpus(list) => Some(list.clone()),
        };
        for id in 0..shards {
            let mailbox = Arc::new(Mailbox::new(id, config.inbox_capacity));
            let zstd_cpus = zstd_cpus.clone();
            let (tx, rx) = oneshot::channel::<Result<(Vec<RecoveryReport>, Vec<String>)>>();
            let io_cpus = io_cpus.clone();
            let placement_kind = if pinned {
                glommio::Placement::Fixed(cpus[id % cpus.len()])
            } else {
                glommio::Placement::Unbound
            };
            let mut b = glommio::LocalExecutorBuilder::new(placement_kind)
                .name(&format!("aof-shard-{id}"))
                .io_memory(config.io_memory_bytes)
                .ring_depth(config.ring_depth)
                .preempt_timer(config.preempt_interval);
            if let Some(spin) = config.spin_before_park {
                b = b.spin_before_park(spin);
            }
            let (cfg, pl, mb) = (config.clone(), placement.clone(), mailbox.clone());
            let own_cpu = pinned.then(|| cpus[id % cpus.len()]);
            let spawned = b.spawn(move || async move {
                let _close_on_panic = crate::mailbox::CloseOnPanic(mb.clone());
                let mut io_workers_elsewhere = false;
                if let Some(c) = io_cpus {
                    // Not fatal: without it (kernels before 5.14) the workers share the
                    // shard's core, as they always did.
                    match crate::iowq::set_worker_cpus(&c) {
                        Ok(()) => io_workers_elsewhere = own_cpu.is_some_and(|own| !c.contains(&own)),
                        Err(e) => {
                            tracing::warn!(shard = id, cpus = ?c, error = %e, "cannot move io_uring workers off the shard's core")
                        }
                    }
                }
                let compressor = zstd_cpus.and_then(|c| match crate::compressor::Compressor::start(id, c) {
                    Ok(z) => Some(z),
                    Err(e) => {
                        tracing::warn!(shard = id, error = %e, "no compression thread: compressing on the shard");
                        None
                    }
                });
                let core = Rc::new(ShardCore::new(id, cfg, pl, mb, compressor, io_workers_elsewhere));
                match core.recover().await {
                    Ok(r) => {
                        let _ = tx.send(Ok(r));
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        core.mailbox.close();
                        return Ok(());
                    }
                }
                // The inbox runs in the default task queue. A `Latency::Matters` queue was
                // tried: with glommio 0.9 it stalled group-commit workloads indefinitely
                // (tasks it woke in another queue never ran), so it is not offered. That was
                // most likely the executor bug now patched in `third_party/glommio` (a short
                // preemption period let it park with runnable queues); not retried since.
                serve_mailbox(core.clone()).await;
                core.close().await
            });
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    let err = Error::Environment {
                        problem: format!("cannot start the executor for shard {id}: {e}"),
                        remedy: "check RLIMIT_MEMLOCK (ulimit -l), io_uring availability and the cpu set".into(),
                    };
                    shutdown(&mailboxes, threads);
                    return Err(err);
                }
            }
            mailboxes.push(mailbox);
            started.push(rx);
        }
        let mut reports = Vec::new();
        let mut failure = None;
        for rx in started {
            match futures_lite::future::block_on(rx) {
                Ok(Ok((r, notes))) => {
                    reports.extend(r);
                    for n in notes {
                        tracing::warn!("{n}");
                        warnings.push(n);
                    }
                }
                Ok(Err(e)) => {
                    failure.get_or_insert(e);
                }
                Err(_) => {
                    failure.get_or_insert(Error::Environment {
                        problem: "a shard thread died during recovery".into(),
                        remedy: "see the log output of the failing shard".into(),
                    });
                }
            }
        }
        if let Some(e) = failure {
            shutdown(&mailboxes, threads);
            return Err(e);
        }
        for r in &reports {
            if r.truncated_bytes > 0 || !r.lost_ranges.is_empty() || !r.notes.is_empty() {
                tracing::warn!(log = %r.log, ?r, "recovery repaired damage");
            }
        }
        let handle = Handle {
            inner: Arc::new(HandleInner {
                mailboxes,
                placement,
                config,
            }),
        };
        Ok(Engine {
            handle,
            threads,
            reports,
            warnings,
            _lock: Some(lock),
        })
    }

    /// A cloneable, `Send + Sync` handle for any thread.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    pub fn shards(&self) -> usize {
        self.handle.inner.mailboxes.len()
    }

    /// What recovery found and repaired at open, one report per log.
    pub fn recovery_reports(&self) -> &[RecoveryReport] {
        &self.reports
    }

    /// Start-up warnings (locked memory, core oversubscription).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Runs `f` on shard `shard`'s executor; see [`Handle::spawn_on`].
    pub fn spawn_on<F, Fut, T>(&self, shard: usize, f: F) -> Reply<T>
    where
        F: FnOnce(Shard) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + 'static,
        T: Send + 'static,
    {
        self.handle.spawn_on(shard, f)
    }

    /// Stops accepting work, syncs everything appended, and joins the shard threads.
    pub fn close(mut self) -> Result<()> {
        self.shutdown_inner()
    }

    fn shutdown_inner(&mut self) -> Result<()> {
        let threads = std::mem::take(&mut self.threads);
        let mut first = None;
        for mb in &self.handle.inner.mailboxes {
            mb.request_close();
        }
        for t in threads {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first.get_or_insert(e);
                }
                Err(e) => {
                    first.get_or_insert(Error::Environment {
                        problem: format!("shard thread failed: {e}"),
                        remedy: "see the log output".into(),
                    });
                }
            }
        }
        self._lock = None;
        first.map_or(Ok(()), Err)
    }
}

impl Drop for Engine {
    /// Dropping without `close` still syncs and joins; errors are logged, not lost silently.
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            if let Err(e) = self.shutdown_inner() {
                tracing::error!(error = %e, "engine shutdown on drop failed");
            }
        }
    }
}

fn shutdown(mailboxes: &[Arc<Mailbox>], threads: Vec<glommio::ExecutorJoinHandle<Result<()>>>) {
    for mb in mailboxes {
        mb.request_close();
    }
    for t in threads {
        let _ = t.join();
    }
}

pub(crate) fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it for the calling thread and
    // CPU_ISSET only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

struct HandleInner {
    mailboxes: Vec<Arc<Mailbox>>,
    placement: Arc<Placement>,
    config: Arc<Config>,
}

/// The way in from any thread. Every method sends one request to the owning shard through its
/// lock-free mailbox and returns a [`Reply`] to await or `wait()` on.
#[derive(Clone)]
pub struct Handle {
    inner: Arc<HandleInner>,
}

impl Handle {
    /// The shard that owns the log `name` (whether or not it exists yet).
    pub fn shard_of(&self, name: &str) -> usize {
        self.inner.placement.shard_of(name)
    }

    pub fn shards(&self) -> usize {
        self.inner.mailboxes.len()
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    fn request<T, F, Fut>(&self, shard: usize, fail_fast: bool, f: F) -> Reply<T>
    where
        T: Send + 'static,
        F: FnOnce(ShardRef) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + 'static,
    {
        let Some(mailbox) = self.inner.mailboxes.get(shard) else {
            return Reply::ready(Err(Error::Config(format!(
                "no shard {shard}: the engine has {}",
                self.shards()
            ))));
        };
        let spin = self.inner.config.reply_spin;
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |core: &ShardRef| {
            let fut = f(core.clone());
            glommio::spawn_local(async move {
                let _ = tx.send(fut.await);
            })
            .detach();
        });
        if fail_fast {
            return match mailbox.try_send(job) {
                Ok(()) => Reply::sent(rx).with_spin(spin),
                Err(SendError::Closed) => Reply::ready(Err(mailbox.closed_error())),
                Err(SendError::Full(_)) => Reply::ready(Err(Error::InboxFull {
                    shard,
                    capacity: self.inner.config.inbox_capacity,
                })),
            };
        }
        // Sent now, not when first polled: a request is in flight as soon as the call returns,
        // like a message, so several can be issued before any is awaited. Only a full mailbox
        // defers the send to the Reply, which then waits for room.
        match mailbox.try_send(job) {
            Ok(()) => Reply::sent(rx).with_spin(spin),
            Err(SendError::Closed) => Reply::ready(Err(mailbox.closed_error())),
            Err(SendError::Full(job)) => Reply::unsent(job, mailbox.clone(), rx).with_spin(spin),
        }
    }

    fn to_log<T, F, Fut>(&self, name: &str, fail_fast: bool, f: F) -> Reply<T>
    where
        T: Send + 'static,
        F: FnOnce(ShardRef, Rc<Log>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + 'static,
    {
        let name = name.to_owned();
        self.request(self.shard_of(&name), fail_fast, move |core| async move {
            let log = core.log(&name)?;
            f(core, log).await
        })
    }

    /// Runs `f` on shard `shard`'s executor with local access to its logs, and returns its
    /// result. This is the thread-per-core way in: inside `f`, appends involve no other thread.
    pub fn spawn_on<F, Fut, T>(&self, shard: usize, f: F) -> Reply<T>
    where
        F: FnOnce(Shard) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + 'static,
        T: Send + 'static,
    {
        self.request(shard, false, move |core| {
            let stop = core.clone();
            // User code may never finish (or wait on a timer when the executor exits, and
            // never be dropped): at the end of close it is cut short, so its reply comes.
            futures_lite::future::or(f(Shard { core }), async move {
                stop.stopped_event.wait_for(|| stop.stopped.get().then_some(())).await;
                Err(Error::ShuttingDown)
            })
        })
    }

    pub fn create_log(&self, name: &str) -> Reply<()> {
        let name = name.to_owned();
        self.request(self.shard_of(&name), false, move |core| async move {
            core.create_log(&name).await
        })
    }

    /// Appends one record; waits for memory budget if the shard is full.
    pub fn append(&self, name: &str, payload: impl Into<Vec<u8>>, d: Durability) -> Reply<u64> {
        self.append_record(name, OwnedRecord::new(payload), d)
    }

    pub fn append_record(&self, name: &str, rec: OwnedRecord, d: Durability) -> Reply<u64> {
        self.to_log(name, false, move |core, log| async move {
            log.foreign_arrived(d);
            log.append(&core, &[rec.as_new()], d, true).await.map(|r| r.start)
        })
    }

    /// Appends one record or fails at once: `Backpressure` if the shard's memory budget is
    /// full, `InboxFull` if its cross-thread queue is.
    pub fn try_append(&self, name: &str, payload: impl Into<Vec<u8>>, d: Durability) -> Reply<u64> {
        let rec = OwnedRecord::new(payload);
        self.to_log(name, true, move |core, log| async move {
            log.foreign_arrived(d);
            log.append(&core, &[rec.as_new()], d, false).await.map(|r| r.start)
        })
    }

    /// Appends records with contiguous offsets, all or nothing (also across a crash).
    pub fn append_batch(&self, name: &str, recs: Vec<OwnedRecord>, d: Durability) -> Reply<Range<u64>> {
        self.to_log(name, false, move |core, log| async move {
            log.foreign_arrived(d);
            let v: Vec<NewRecord<'_>> = recs.iter().map(|r| r.as_new()).collect();
            log.append(&core, &v, d, true).await
        })
    }

    /// Waits until everything appended to the log so far is fdatasync'ed.
    pub fn sync(&self, name: &str) -> Reply<()> {
        self.to_log(name, false, |_, log| async move { log.sync().await })
    }

    /// Seals the active segment now and starts a new one.
    pub fn roll(&self, name: &str) -> Reply<()> {
        self.to_log(name, false, |_, log| async move { log.roll_now().await })
    }

    pub fn read(&self, name: &str, offset: u64) -> Reply<Record> {
        let name = name.to_owned();
        self.request(self.shard_of(&name), false, move |core| async move {
            let mut v = core.read_from(&name, offset, 1, usize::MAX).await?;
            // A readable offset always yields its record or an error, never nothing.
            v.pop().ok_or(Error::OffsetOutOfRange {
                log: name,
                offset,
                first: 0,
                next: 0,
            })
        })
    }

    /// Reads up to `max_records` records from `offset` on, across segments, with at most
    /// `max_bytes` of payload (at least one record if `offset` is readable). If a record
    /// cannot be read (damage, a file gone, a segment only in Tier2), the records before it
    /// are returned without an error, so fewer than asked may come back before the end of
    /// the log; the next read, from the first record not returned, reports the error.
    pub fn read_from(&self, name: &str, offset: u64, max_records: usize, max_bytes: usize) -> Reply<Vec<Record>> {
        let name = name.to_owned();
        self.request(self.shard_of(&name), false, move |core| async move {
            core.read_from(&name, offset, max_records, max_bytes).await
        })
    }

    /// Resolves once `offset` is readable (its append acknowledged).
    pub fn wait_for(&self, name: &str, offset: u64) -> Reply<()> {
        self.to_log(name, false, move |core, log| async move {
            log.wait_visible(offset, &core.closing).await
        })
    }

    /// `(first readable offset, next offset to be assigned, visible up to)`.
    pub fn offsets(&self, name: &str) -> Reply<(u64, u64, u64)> {
        self.to_log(name, false, |_, log| async move {
            let i = log.inner.borrow();
            Ok((i.first_offset, i.next_offset, i.visible_upto()))
        })
    }

    /// Sets the retention of one log (persisted in its shard's manifest; it overrides
    /// `Config::retention`) and applies it now.
    pub fn set_retention(&self, name: &str, r: Retention) -> Reply<()> {
        self.to_log(name, false, move |core, log| async move {
            crate::tiering::set_retention(&core, &log, r).await
        })
    }

    /// Changes the compression profile of shard `shard` for Tier1 files made from now on.
    pub fn set_compression(&self, shard: usize, p: Profile) -> Reply<()> {
        self.request(shard, false, move |core| async move {
            core.profile.set(p);
            Ok(())
        })
    }

    /// Records that Tier2 holds a verified copy of sealed segment `base` of log `name`. This is
    /// the Tier2 bridge's confirmation; only after it may the local copy be evicted.
    pub fn mark_uploaded(&self, name: &str, base: u64, object: ObjectRef) -> Reply<()> {
        self.to_log(name, false, move |core, log| async move {
            crate::tiering::record_upload(&core, &log, base, object).await
        })
    }

    /// Every segment of a log with where it lives, oldest first.
    pub fn segments(&self, name: &str) -> Reply<Vec<SegmentInfo>> {
        self.to_log(name, false, |core, log| async move {
            Ok(crate::tiering::segments(&core, &log))
        })
    }

    /// Runs the shard's retention and Tier1 budget checks now instead of at the next
    /// `Config::housekeeping_interval`.
    pub fn housekeeping(&self, shard: usize) -> Reply<()> {
        self.request(shard, false, |core| async move {
            crate::tiering::housekeeping(&core).await;
            Ok(())
        })
    }

    /// Resolves once every sealed segment queued for Tier1 work on `shard` is done, the
    /// deletion of the raw files it replaced included.
    pub fn tiering_idle(&self, shard: usize) -> Reply<()> {
        self.request(shard, false, |core| async move {
            // Close stops the tiering task with work still queued: waiting on would outlive
            // the shard, so a close ends the wait.
            core.tiering_done
                .wait_for(|| {
                    if core.tiering_queue.borrow().is_empty() && !core.tiering_busy.get() && core.deletions.get() == 0 {
                        Some(Ok(()))
                    } else {
                        core.closing.get().then_some(Err(Error::ShuttingDown))
                    }
                })
                .await
        })
    }

    /// Counters of shard `shard`.
    pub fn stats(&self, shard: usize) -> Reply<ShardStats> {
        self.request(shard, false, |core| async move { Ok(core.snapshot_stats()) })
    }

    /// A blocking iterator over the log from `from`, following it as it grows.
    pub fn follow(&self, name: &str, from: u64) -> Follow {
        Follow {
            handle: self.clone(),
            name: name.to_owned(),
            next: from,
            buf: VecDeque::new(),
        }
    }
}

/// Follows a log from another thread: `next()` blocks until the next record is readable.
pub struct Follow {
    handle: Handle,
    name: String,
    next: u64,
    buf: VecDeque<Record>,
}

impl Follow {
    pub fn next_record(&mut self) -> Result<Record> {
        if let Some(r) = self.buf.pop_front() {
            return Ok(r);
        }
        self.handle.wait_for(&self.name, self.next).wait()?;
        let v = self.handle.read_from(&self.name, self.next, 1024, 4 << 20).wait()?;
        self.next += v.len() as u64;
        self.buf.extend(v);
        self.buf.pop_front().ok_or(Error::ShuttingDown)
    }
}

/// A shard, as seen by code running on its own executor (see [`Handle::spawn_on`]).
#[derive(Clone)]
pub struct Shard {
    core: ShardRef,
}

impl Shard {
    pub fn id(&self) -> usize {
        self.core.id
    }

    pub fn shard_of(&self, name: &str) -> usize {
        self.core.placement.shard_of(name)
    }

    pub async fn create_log(&self, name: &str) -> Result<()> {
        self.core.create_log(name).await
    }

    /// A local handle to a log owned by this shard. `WrongShard` if another shard owns it.
    pub fn log(&self, name: &str) -> Result<LocalLog> {
        Ok(LocalLog {
            log: self.core.log(name)?,
            core: self.core.clone(),
        })
    }

    pub fn stats(&self) -> ShardStats {
        self.core.snapshot_stats()
    }

    /// Changes this shard's compression profile for Tier1 files made from now on.
    pub fn set_compression(&self, p: Profile) {
        self.core.profile.set(p);
    }

    /// Bytes appended on this shard and not yet written.
    pub fn unflushed_bytes(&self) -> u64 {
        self.core.unflushed.get()
    }
}

/// A log, used from its own shard: no lookups, no locks, no cross-thread traffic.
#[derive(Clone)]
pub struct LocalLog {
    log: Rc<Log>,
    core: ShardRef,
}

impl LocalLog {
    pub fn name(&self) -> &str {
        &self.log.name
    }

    pub async fn append(&self, payload: &[u8], d: Durability) -> Result<u64> {
        self.append_record(NewRecord::new(payload), d).await
    }

    pub async fn append_record(&self, rec: NewRecord<'_>, d: Durability) -> Result<u64> {
        self.log.append(&self.core, &[rec], d, true).await.map(|r| r.start)
    }

    /// Like `append_record`, but fails with `Backpressure` instead of waiting for budget.
    pub async fn try_append(&self, rec: NewRecord<'_>, d: Durability) -> Result<u64> {
        self.log.append(&self.core, &[rec], d, false).await.map(|r| r.start)
    }

    /// The fastest path: `Memory` durability, never awaits. `Backpressure` if the shard's
    /// budget is full or the next segment is not ready yet: then fall back to the awaiting
    /// [`append_record`](Self::append_record), which waits for exactly what is missing. (Do not
    /// spin on this call with `yield_now`: glommio polls I/O only when the task queue runs
    /// dry or every 100 ms, so a spinning retry starves the very flush it waits for.)
    /// Behind a `Written` or `Synced` append of this log not yet acknowledged, the record is
    /// staged but readers see it only once that one is: acknowledgement follows offset order,
    /// and this call cannot wait (the awaiting appends do).
    pub fn append_buffered(&self, rec: NewRecord<'_>) -> Result<u64> {
        match self.log.try_stage(&self.core, &[rec], Durability::Memory)? {
            Ok(r) => Ok(r.start),
            Err(_) => Err(self.core.backpressure()),
        }
    }

    pub async fn append_batch(&self, recs: &[NewRecord<'_>], d: Durability) -> Result<Range<u64>> {
        self.log.append(&self.core, recs, d, true).await
    }

    pub async fn sync(&self) -> Result<()> {
        self.log.sync().await
    }

    pub async fn roll(&self) -> Result<()> {
        self.log.roll_now().await
    }

    pub async fn read(&self, offset: u64) -> Result<Record> {
        let mut v = self.read_from(offset, 1, usize::MAX).await?;
        v.pop().ok_or(Error::OffsetOutOfRange {
            log: self.log.name.clone(),
            offset,
            first: 0,
            next: 0,
        })
    }

    /// Like [`Handle::read_from`]: a record that cannot be read ends the batch before it, and
    /// the next read from there reports the error.
    pub async fn read_from(&self, offset: u64, max_records: usize, max_bytes: usize) -> Result<Vec<Record>> {
        self.core
            .read_from(&self.log.name, offset, max_records, max_bytes)
            .await
    }

    /// Waits until `offset` is readable.
    pub async fn wait_for(&self, offset: u64) -> Result<()> {
        self.log.wait_visible(offset, &self.core.closing).await
    }

    /// A reader that yields records from `from` on and waits for new ones.
    pub fn tail(&self, from: u64) -> Tail {
        Tail {
            log: self.clone(),
            next: from,
            buf: VecDeque::new(),
        }
    }

    pub fn next_offset(&self) -> u64 {
        self.log.inner.borrow().next_offset
    }

    pub fn visible_upto(&self) -> u64 {
        self.log.inner.borrow().visible_upto()
    }

    pub fn first_offset(&self) -> u64 {
        self.log.inner.borrow().first_offset
    }

    /// Number of sealed segments (for tests and metrics).
    pub fn sealed_segments(&self) -> usize {
        self.log.inner.borrow().sealed.len()
    }
}

/// Follows a log on its own shard.
pub struct Tail {
    log: LocalLog,
    next: u64,
    buf: VecDeque<Record>,
}

impl Tail {
    pub async fn next(&mut self) -> Result<Record> {
        if let Some(r) = self.buf.pop_front() {
            return Ok(r);
        }
        self.log.wait_for(self.next).await?;
        let v = self.log.read_from(self.next, 1024, 4 << 20).await?;
        self.next += v.len() as u64;
        self.buf.extend(v);
        self.buf.pop_front().ok_or(Error::ShuttingDown)
    }
}
