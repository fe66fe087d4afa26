//! One background task per log moves bytes from memory to disk: it seals rolled segments,
//! writes the active segment's buffer with O_DIRECT (rewriting the partial tail block), runs
//! group-commit fdatasyncs, keeps a preallocated spare file ready for the next roll, and rolls
//! by age. It never waits on a timer while there is work a caller is waiting for.

use crate::error::{Error, Result};
use crate::format::segment::{align_up, encode_seal, Trailer};
use crate::fsops;
use crate::limits::BLOCK_SIZE;
use crate::log::{Log, LogInner, Spare};
use crate::rush::rushed;
use crate::segment::{FileName, SealedSegment, Store};
use crate::shard::ShardCore;
use futures_lite::future;
use glommio::io::{Directory, DmaBuffer, DmaFile, OpenOptions};
use glommio::timer::Timer;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

enum Action {
    /// Give the segment with this base its real name (it still has its spare's).
    Rename(u64),
    SealRolled,
    /// Issue the next write of the active segment.
    Flush,
    /// fdatasync what is written.
    Sync,
    MakeSpare,
    /// Give back the staging memory an idle log holds beyond the smallest chunk.
    ReleaseIdle,
    /// Swap the spare in: by age, or because `roll` was asked for.
    Roll,
    Wait(Option<Duration>),
    Exit,
}

fn next_action(log: &Log, core: &ShardCore) -> Action {
    let cfg = &core.config;
    let mut i = log.inner.borrow_mut();
    if i.failed.is_some() {
        return Action::Exit;
    }
    let closing = i.closing;
    // A segment swapped in at a roll is renamed at once, while the rolled one is sealed, so
    // its first write does not wait for a rename and a directory sync after that seal
    // (measured at up to ~2 ms per roll, with producers idle behind it).
    let spare_named = std::iter::once(&i.active)
        .chain(i.rolled.iter())
        .find(|s| matches!(s.name, FileName::Spare(_)));
    if let Some(s) = spare_named {
        return Action::Rename(s.base_offset);
    }
    // Starting the next segment's preallocation comes first: it only spawns a task, and under
    // a steady stream of flushes it would otherwise never get its turn. It starts an eighth of
    // the way into the segment so a fast writer never catches up with it.
    let can_make_spare = i.spare.is_none() && i.spare_error.is_none() && !i.spare_in_progress && !closing;
    // A fresh active segment of a log that syncs gets its spare at once: zero-filled, it is
    // rolled onto early (`make_spare`).
    let zero_fill = core.config.zero_fill_pace().is_some();
    let early =
        i.active.end_pos >= i.active.segment_size_bytes / 8 || zero_fill && i.syncs_seen && i.active.fresh_blocks;
    if can_make_spare && (i.spare_wanted || early) {
        return Action::MakeSpare;
    }
    if i.rolled.iter().any(|s| !s.seal_started) {
        return Action::SealRolled;
    }
    // One sync at a time, of what is written so far: a sync in flight wakes the flusher when
    // done, and writes completed meanwhile are covered by the next one (group commit). It
    // comes before the next flush: with no write in flight it runs inline, so records staged
    // meanwhile join one later group instead of splitting producers into two half-size groups
    // that take turns (measured: 16 Synced 1 KiB producers, 43k rec/s flush-first, 58k before
    // the writes-in-flight change).
    // A sync may be held a little for producers on other threads (see `group`); records are
    // written meanwhile.
    let want_sync = i.want_synced > i.synced_upto || closing && i.synced_upto < i.next_offset;
    let mut hold = None;
    if want_sync && !i.sync_in_flight && i.written_upto > i.synced_upto {
        hold = i.foreign.hold(Instant::now()).filter(|_| !closing);
        if hold.is_none() {
            return Action::Sync;
        }
        if i.foreign.first_hold() {
            core.stats.borrow_mut().held_syncs += 1;
        }
    }
    let unflushed = i.active.needs_write();
    let age = i.unflushed_since.map(|t| t.elapsed());
    let can_issue = i.active.can_issue(cfg.flush_writes_in_flight);
    if unflushed && can_issue {
        let due = i.want_written > i.written_upto
            || want_sync
            || closing
            || i.active.unflushed_bytes() >= cfg.flush_threshold_bytes
            || age.is_some_and(|a| a >= cfg.flush_interval);
        if due {
            return Action::Flush;
        }
    }
    if i.roll_requested && i.active.record_count() > 0 && !closing {
        if i.spare.is_some() {
            return Action::Roll;
        }
        if can_make_spare {
            return Action::MakeSpare;
        }
    }
    let aged = match (cfg.segment_max_age, i.active.first_append_at) {
        (Some(max), Some(t)) if i.active.record_count() > 0 => Some(max.saturating_sub(t.elapsed())),
        _ => None,
    };
    if aged == Some(Duration::ZERO) && !closing {
        if i.spare.is_some() {
            return Action::Roll;
        }
        if can_make_spare {
            return Action::MakeSpare;
        }
        if i.spare_in_progress && !i.spare_wanted {
            // A spare being zero-filled goes into use now rather than when it is done.
            i.spare_wanted = true;
            log.spare_waited.notify_all();
        }
    }
    // A log with nothing unflushed and no write in flight for `IDLE_RELEASE` after the write
    // that drained it gives back its staging chunk if it is larger than the smallest: it was
    // sized for the log's last burst (up to the largest write) and otherwise stays held for
    // as long as the log stays idle.
    let release_in =
        (!closing && !unflushed && i.active.inflight.is_empty() && i.active.staging.holds_more_than_idle())
            .then(|| IDLE_RELEASE.saturating_sub(i.drained_at.map_or(IDLE_RELEASE, |t| t.elapsed())));
    if release_in == Some(Duration::ZERO) {
        return Action::ReleaseIdle;
    }
    let idle = !unflushed
        && i.active.inflight.is_empty()
        && !i.sync_in_flight
        && i.synced_upto >= i.next_offset
        && i.active.named();
    if closing && idle && i.rolled.is_empty() && !i.spare_in_progress {
        return Action::Exit;
    }
    // While writes block the next one, their completions wake the flusher; a due flush timer
    // must not (a zero wait would spin without ever letting the reactor reap them).
    let flush_in = age
        .filter(|_| unflushed && can_issue)
        .map(|a| cfg.flush_interval.saturating_sub(a));
    let wait = [flush_in, aged.filter(|d| !d.is_zero()), hold, release_in]
        .into_iter()
        .flatten()
        .min();
    // A spare that failed (full disk) is retried when asked; until then nothing to poll for.
    debug_assert!(wait.is_none_or(|d| !d.is_zero()), "a zero wait spins the flusher");
    Action::Wait(wait)
}

pub async fn run(log: Rc<Log>, core: Rc<ShardCore>) {
    loop {
        let result = match next_action(&log, &core) {
            Action::Exit => break,
            Action::Wait(d) => {
                let wake = log.flusher_wake.next();
                match d {
                    Some(d) => {
                        future::or(wake, async {
                            Timer::new(d).await;
                        })
                        .await
                    }
                    None => {
                        // Also wake when another task's request makes the next action change.
                        future::or(wake, async {
                            Timer::new(Duration::from_millis(100)).await;
                        })
                        .await
                    }
                }
                Ok(())
            }
            Action::Rename(base) => {
                start_rename(&log, &core, base);
                Ok(())
            }
            Action::SealRolled => seal_front(&log, &core).await,
            Action::Flush => flush_active(&log, &core).await,
            Action::Sync => sync_active(&log, &core).await,
            Action::MakeSpare => {
                // Preallocating a whole segment can take a while (fallocate runs on glommio's
                // blocking pool); flushes and syncs carry on meanwhile.
                log.inner.borrow_mut().spare_in_progress = true;
                glommio::spawn_local(make_spare(log.clone(), core.clone())).detach();
                Ok(())
            }
            Action::ReleaseIdle => {
                let freed = log.inner.borrow_mut().active.release_idle_staging();
                core.stats.borrow_mut().idle_staging_released_bytes += freed;
                Ok(())
            }
            Action::Roll => {
                let cfg = &core.config;
                log.inner.borrow_mut().roll(log.id, &log.dir, cfg);
                log.changed.notify_all();
                Ok(())
            }
        };
        if let Err(e) = result {
            fail(&log, &core, &e);
            break;
        }
    }
    trim_at_close(&log).await;
    log.inner.borrow_mut().flusher_exited = true;
    log.changed.notify_all();
}

/// After a clean close, cuts the active segment's file at the end of its data (whole blocks).
/// Past that end a reused file still holds an earlier life's bytes, which the next open would
/// count as a torn tail it cut whenever they do not parse as whole frames (the tail of a large
/// frame whose header this life overwrote): a clean close must read as one. The next open
/// preallocates the file again (`recovery::repair_tail`). Not fatal: the data is durable.
async fn trim_at_close(log: &Log) {
    let (file, end, path) = {
        let i = log.inner.borrow();
        let a = &i.active;
        if i.failed.is_some() || !i.closing || !a.named() || !a.inflight.is_empty() || a.unflushed_bytes() > 0 {
            return;
        }
        (
            a.file.clone(),
            crate::format::segment::align_up(a.disk_end.max(crate::limits::BLOCK_SIZE)),
            a.path.clone(),
        )
    };
    let trimmed = async {
        file.truncate(end).await?;
        file.fdatasync().await
    };
    if let Err(e) = trimmed.await {
        tracing::warn!(log = %log.name, path = %path.display(), error = %e, "could not cut the active segment at its end on close");
    }
}

/// Fails the log after an I/O error in the flusher or one of its write or sync tasks, and
/// wakes appends waiting for budget so they see the failure instead of waiting on.
fn fail(log: &Log, core: &ShardCore, e: &Error) {
    log.fail(e);
    core.budget_freed.notify_all();
}

/// A write carved out of a segment's staged bytes, not yet submitted.
struct Issued {
    base: u64,
    pos: u64,
    buf: Rc<DmaBuffer>,
    file: Rc<DmaFile>,
    path: PathBuf,
    /// See `WritePlan::head_only`.
    head_only: bool,
    /// No append was waiting for a write or a sync when it was issued (Memory data flushed
    /// by size or age): it may be handed to io_uring's workers (`perform`).
    background: bool,
}

/// Takes the next write of the open segment with base `base` (see
/// `ActiveSegment::take_write`): a staged chunk, whole, with nothing copied.
fn issue_write(log: &Log, core: &ShardCore, base: u64) -> Result<Issued> {
    let mut inner = log.inner.borrow_mut();
    let mut issued = put_in_flight(&mut inner, core, base).ok_or_else(|| Error::Corruption {
        path: log.dir.clone(),
        pos: 0,
        detail: format!("segment {base} missing, or nothing staged in it to write"),
    })?;
    issued.background = !inner.someone_waits();
    Ok(issued)
}

/// Puts the next write of the open segment with base `base` in flight, and returns it for
/// `perform`: `None` if there is no such segment or nothing staged in it.
fn put_in_flight(inner: &mut LogInner, core: &ShardCore, base: u64) -> Option<Issued> {
    let s = inner.open_segment_mut(base)?;
    let overlapped = s.inflight.iter().any(|w| !w.done);
    let (plan, buf) = s.take_write()?;
    {
        let mut st = core.stats.borrow_mut();
        st.overlapped_writes += overlapped as u64;
        st.head_block_writes += plan.head_only as u64;
    }
    let issued = Issued {
        base,
        pos: plan.pos,
        buf,
        file: s.file.clone(),
        path: s.path.clone(),
        head_only: plan.head_only,
        background: false,
    };
    // A write that took every byte staged leaves only bytes appended later, whose age counts
    // from their own first append.
    if inner.active.base_offset == base && inner.active.unflushed_bytes() == 0 {
        inner.unflushed_since = None;
        inner.drained_at = Some(Instant::now());
    }
    Some(issued)
}

/// Performs an issued write in a task of its own; failing it fails the log.
fn perform_in_task(log: &Rc<Log>, core: &Rc<ShardCore>, w: Issued) {
    let (log, core) = (log.clone(), core.clone());
    glommio::spawn_local(async move {
        if let Err(e) = perform(&log, &core, w).await {
            fail(&log, &core, &e);
        }
        log.flusher_wake.notify_all();
    })
    .detach();
}

/// Issues a write from the producer whose Synced or Written append filled a staging chunk, at
/// once, instead of at the flusher's next turn.
///
/// Why: when a group commit completes, every producer it acknowledged is woken before the
/// flusher (which their appends wake after them), so the flusher's first write of the next
/// group started only once all of them had staged: several MiB of copying and checksumming
/// with the device idle. Writing from the producer starts the device after the first few.
/// Measured, 64 producers in batches of 16 x 4 KiB / 64 x 1 KiB, Synced: 1262-1303 ->
/// 1532-1565 MB/s and 1128-1222 -> 1452-1474 MB/s.
///
/// It is skipped while a rolled segment's data is not yet durable, and whenever the flusher
/// could not issue a write either.
pub fn issue_full_write(log: &Rc<Log>, core: &Rc<ShardCore>) {
    // A second write when the first was only a rewrite of the partial head block (see
    // `ActiveSegment::take_write`).
    for _ in 0..2 {
        match issue_one_full_write(log, core) {
            Some(w) => {
                let head_only = w.head_only;
                perform_in_task(log, core, w);
                if !head_only {
                    return;
                }
            }
            None => return,
        }
    }
}

/// How long a log takes no append before it gives back its staging chunk (`ReleaseIdle`).
const IDLE_RELEASE: Duration = Duration::from_millis(100);

/// The smallest write a producer issues itself: below it, the flusher's next turn does as well.
const PRODUCER_WRITE_MIN: u64 = 64 << 10;

fn issue_one_full_write(log: &Rc<Log>, core: &Rc<ShardCore>) -> Option<Issued> {
    let cfg = &core.config;
    let min_write = cfg.write_max_bytes().min(PRODUCER_WRITE_MIN);
    let mut inner = log.inner.borrow_mut();
    // Nothing of a new segment may reach the disk before every earlier segment's data has
    // (the flusher writes and syncs a rolled segment first): otherwise a crash leaves a hole,
    // the rolled segment's unwritten tail, in front of records that survived, and a write
    // ending at `end_pos` would acknowledge records of that tail as written.
    let base = inner.active.base_offset;
    if inner.failed.is_some() || inner.closing || !inner.earlier_segments_durable(base) {
        return None;
    }
    let a = &inner.active;
    let whole = a.staging.front_is_full() && a.unflushed_bytes() >= min_write;
    if !whole || !a.can_issue(cfg.flush_writes_in_flight) {
        return None;
    }
    let issued = put_in_flight(&mut inner, core, base)?;
    core.stats.borrow_mut().producer_writes += 1;
    Some(issued)
}

/// Performs an issued write, then retires it (with every completed write before it) and
/// acknowledges the records that are now wholly on disk.
async fn perform(log: &Log, core: &ShardCore, w: Issued) -> Result<()> {
    perform_as(log, core, w, false).await
}

/// `perform`; with `dsync`, the write carries `RWF_DSYNC` and its completion also makes every
/// written record durable (the caller checked that all bytes before it were: see
/// `flush_active`).
async fn perform_as(log: &Log, core: &ShardCore, w: Issued, dsync: bool) -> Result<()> {
    // Every write, the flusher's and the producers', comes through here. The rule holds
    // from here to the completion below (a rolled segment's seal never un-starts, and later
    // rolls have higher bases), so records this write completes are acknowledged only once
    // everything before them is on disk.
    debug_assert!(
        log.inner.borrow().earlier_segments_durable(w.base),
        "segment {} written before an earlier one is durable",
        w.base
    );
    // The file has its real name before any of its data is written (see `FileName`). The
    // rename started at the roll, so this rarely waits.
    let named = log
        .flusher_wake
        .wait_for(|| {
            let i = log.inner.borrow();
            match i.open_segment(w.base) {
                _ if i.failed.is_some() => Some(false),
                None => Some(false),
                Some(s) => s.named().then_some(true),
            }
        })
        .await;
    if !named {
        return Ok(()); // the log failed meanwhile (its rename, perhaps): nothing to write
    }
    // A write nobody waits for goes straight to the io_uring workers when they run on other
    // CPUs: submitted inline, a write costs the shard ~20-40 µs inside io_uring_enter on this
    // VM (fio's submission latency: 20-23 µs for a 4 KiB or 1 MiB O_DIRECT write), time no
    // task on the shard runs. Traced at Memory half load, io workers spare: the reactor passes
    // over 20 µs fell from 2,269-2,507 to 826-1,004 per run and the p99 from 31-46 to 23-26
    // µs. Writes an append waits for stay inline: the hop to a worker and back adds to their
    // latency.
    let punt = w.background && core.io_workers_elsewhere;
    let write = if dsync {
        core.stats.borrow_mut().rushed_io += 1;
        rushed(w.file.write_rc_at_dsync(w.buf.clone(), w.pos)).await
    } else if punt {
        w.file.write_rc_at_punted(w.buf.clone(), w.pos).await
    } else if w.background {
        w.file.write_rc_at(w.buf.clone(), w.pos).await
    } else {
        core.stats.borrow_mut().rushed_io += 1;
        rushed(w.file.write_rc_at(w.buf.clone(), w.pos)).await
    };
    let n = write.map_err(|e| Error::glommio("write", &w.path, e))?;
    if n != w.buf.len() {
        return Err(Error::io(
            "write",
            &w.path,
            std::io::Error::other(format!("short write: {n} of {}", w.buf.len())),
        ));
    }
    {
        let mut st = core.stats.borrow_mut();
        st.writes += 1;
        st.written_bytes += n as u64;
        st.punted_writes += punt as u64;
        st.dsync_writes += dsync as u64;
    }
    let mut inner = log.inner.borrow_mut();
    let Some(s) = inner.open_segment_mut(w.base) else {
        return Ok(()); // the log failed and was torn down meanwhile
    };
    let (released, upto) = s.complete_write(w.pos);
    if dsync {
        // It was the only write in flight and began at or below `durable_end`: everything
        // below its end is durable now.
        debug_assert!(s.inflight.is_empty(), "a dsync write is issued alone");
        debug_assert!(w.pos <= s.durable_end, "a dsync write starts on durable bytes");
        s.durable_end = s.durable_end.max(s.disk_end);
    }
    core.unflushed.set(core.unflushed.get() - released);
    if let Some(upto) = upto {
        inner.written_upto = inner.written_upto.max(upto);
    }
    if dsync {
        inner.synced_upto = inner.synced_upto.max(inner.written_upto);
        inner.foreign.sync_done(Instant::now());
    }
    if upto.is_some() || dsync {
        inner.settle();
    }
    drop(inner);
    core.budget_freed.notify_all();
    log.changed.notify_all();
    Ok(())
}

/// Issues the next write of the active segment and runs it in its own task, so the flusher
/// can issue the next one (up to `flush_writes_in_flight`) or start a sync meanwhile. A write
/// that is alone and ends mid-block runs inline instead: nothing can be issued until it
/// completes, and the hop to a task and back would only delay the sync waiting for it
/// (measured: Synced 1 KiB from 16 foreign threads, 23k rec/s with the hop).
async fn flush_active(log: &Rc<Log>, core: &Rc<ShardCore>) -> Result<()> {
    let base = log.inner.borrow().active.base_offset;
    let w = issue_write(log, core, base)?;
    let (alone, dsync) = {
        let i = log.inner.borrow();
        let alone = i.active.inflight.len() == 1 && !i.active.can_issue(core.config.flush_writes_in_flight);
        // A lone write that a Synced append waits for, with no sync running and every byte
        // before it durable, goes with `RWF_DSYNC`: one request where a write and then an
        // fdatasync took two trips through the kernel and the shard, with the shard woken
        // in between to issue the second (see `Config::dsync_writes`).
        // A sync held for producers on other threads (`group`) is not taken early this way:
        // the write goes plain, and the held fdatasync covers it with the rest of the group.
        // Earlier segments are durable already: `next_action` seals rolled ones before any
        // `Flush`, and `perform_as` asserts it for every write.
        let dsync = alone
            && core.config.dsync_writes
            && i.want_synced > i.synced_upto
            && !i.sync_in_flight
            && !i.closing
            && w.pos <= i.active.durable_end
            && i.foreign.hold(Instant::now()).is_none();
        (alone, dsync)
    };
    if alone {
        if dsync {
            // It is the sync of its group, as the foreign producers' accounting sees it.
            log.inner.borrow_mut().foreign.sync_started(Instant::now());
        }
        return perform_as(log, core, w, dsync).await;
    }
    perform_in_task(log, core, w);
    Ok(())
}

/// Renames the segment with base `base` from its spare name to its own, and syncs the
/// directory, in a task of its own; its writes wait for that (see `FileName`).
fn start_rename(log: &Rc<Log>, core: &Rc<ShardCore>, base: u64) {
    let (file, from, to) = {
        let mut i = log.inner.borrow_mut();
        let s = i.open_segment_mut(base).expect("segment being renamed is open");
        let FileName::Spare(from) = std::mem::replace(&mut s.name, FileName::Renaming) else {
            unreachable!("only a segment under its spare name is renamed");
        };
        (s.file.clone(), from, s.path.clone())
    };
    let (log, core) = (log.clone(), core.clone());
    glommio::spawn_local(async move {
        let result = async {
            file.rename(&to)
                .await
                .map_err(|e| Error::glommio("rename spare segment", &from, e))?;
            let dir = Directory::open(&log.dir)
                .await
                .map_err(|e| Error::glommio("open directory", &log.dir, e))?;
            dir.sync()
                .await
                .map_err(|e| Error::glommio("fsync directory", &log.dir, e))
        }
        .await;
        match result {
            Ok(()) => {
                if let Some(s) = log.inner.borrow_mut().open_segment_mut(base) {
                    s.name = FileName::Real;
                }
            }
            Err(e) => fail(&log, &core, &e),
        }
        log.flusher_wake.notify_all();
    })
    .detach();
}

/// Starts the fdatasync that makes records below `upto` durable, in its own task, so the
/// flusher can write the next bytes while the device flushes: a cycle then costs the longer of
/// the write and the sync, not their sum. Records are acknowledged when it completes; if it
/// fails, the log fails as if the flusher had failed.
fn start_sync(log: &Rc<Log>, core: &Rc<ShardCore>, base: u64, upto: u64) {
    {
        let mut i = log.inner.borrow_mut();
        debug_assert!(!i.sync_in_flight, "one sync at a time");
        debug_assert!(upto <= i.written_upto, "only written records are synced");
        i.sync_in_flight = true;
        i.foreign.sync_started(Instant::now());
    }
    core.stats.borrow_mut().overlapped_syncs += 1;
    let (log, core) = (log.clone(), core.clone());
    glommio::spawn_local(async move {
        let result = fdatasync_segment(&log, &core, base).await;
        {
            let mut i = log.inner.borrow_mut();
            i.sync_in_flight = false;
            i.foreign.sync_done(Instant::now());
        }
        match result {
            Ok(()) => mark_synced(&log, upto),
            Err(e) => fail(&log, &core, &e),
        }
        log.flusher_wake.notify_all();
    })
    .detach();
}

/// Syncs what is written of the active segment: in its own task if writes are still going
/// on (the sync then overlaps them), inline for a lone writer (a hop to another task would
/// only add to its latency).
async fn sync_active(log: &Rc<Log>, core: &Rc<ShardCore>) -> Result<()> {
    let (base, upto, busy) = {
        let i = log.inner.borrow();
        let busy = i.active.unflushed_bytes() > 0 || !i.active.inflight.is_empty();
        (i.active.base_offset, i.written_upto, busy)
    };
    if busy {
        start_sync(log, core, base, upto);
        return Ok(());
    }
    log.inner.borrow_mut().foreign.sync_started(Instant::now());
    fdatasync_segment(log, core, base).await?;
    log.inner.borrow_mut().foreign.sync_done(Instant::now());
    mark_synced(log, upto);
    Ok(())
}

/// fdatasyncs the open (active or rolled) segment with base `base`; rushed to the kernel if
/// an append waits on it (a rolled segment's sync may be Memory data's alone).
async fn fdatasync_segment(log: &Log, core: &ShardCore, base: u64) -> Result<()> {
    let (file, path, waited_on, disk_end) = {
        let i = log.inner.borrow();
        let s = i.open_segment(base).expect("segment being synced is open");
        (s.file.clone(), s.path.clone(), i.someone_waits(), s.disk_end)
    };
    let synced = if waited_on {
        core.stats.borrow_mut().rushed_io += 1;
        rushed(file.fdatasync()).await
    } else {
        file.fdatasync().await
    };
    synced.map_err(|e| Error::glommio("fdatasync", &path, e))?;
    core.stats.borrow_mut().fdatasyncs += 1;
    // Bytes on disk when it started are durable now.
    if let Some(s) = log.inner.borrow_mut().open_segment_mut(base) {
        s.durable_end = s.durable_end.max(disk_end);
    }
    Ok(())
}

/// Records that every record below `upto` is synced and wakes whoever waits for it.
fn mark_synced(log: &Log, upto: u64) {
    let mut i = log.inner.borrow_mut();
    i.synced_upto = i.synced_upto.max(upto);
    i.settle();
    drop(i);
    log.changed.notify_all();
}

/// Makes the oldest rolled segment's data durable (write, fdatasync) so the records in it,
/// and then those of the next segment, can be acknowledged; the seal itself (index, trailer,
/// trim, sync) is written by a separate task so it never holds up the active segment.
async fn seal_front(log: &Rc<Log>, core: &Rc<ShardCore>) -> Result<()> {
    let (base, needs_write, writing) = {
        let i = log.inner.borrow();
        let s = i.rolled.iter().find(|s| !s.seal_started).expect("rolled segment");
        (s.base_offset, s.needs_write(), !s.inflight.is_empty())
    };
    if writing {
        // Writes issued while it was active are still running; each wakes the flusher.
        log.flusher_wake
            .wait_for(|| {
                let i = log.inner.borrow();
                let idle = i.open_segment(base).is_none_or(|s| s.inflight.is_empty());
                (idle || i.failed.is_some()).then_some(())
            })
            .await;
        return Ok(());
    }
    if needs_write {
        let w = issue_write(log, core, base)?;
        perform(log, core, w).await?;
        return Ok(()); // the next round writes more, or syncs
    }
    fdatasync_segment(log, core, base).await?;
    let next = {
        let mut i = log.inner.borrow_mut();
        let s = i.open_segment_mut(base).expect("rolled segment");
        debug_assert_eq!(s.disk_end, s.end_pos);
        s.seal_started = true;
        let next = s.next_offset;
        i.written_upto = i.written_upto.max(next);
        next
    };
    mark_synced(log, next);
    glommio::spawn_local(finish_seal(log.clone(), core.clone(), base)).detach();
    Ok(())
}

/// Writes the seal of a rolled segment whose data is already durable, then moves it to the
/// sealed list. A crash before this completes leaves an unsealed segment that recovery scans.
async fn finish_seal(log: Rc<Log>, core: Rc<ShardCore>, base: u64) {
    match write_seal(&log, &core, base).await {
        Ok(()) => core.enqueue_tiering(&log, base),
        // Also wakes appends waiting for budget: they check for a failed log only when woken,
        // and a failed log frees no budget, so without this they could wait for ever.
        Err(e) => fail(&log, &core, &e),
    }
    log.flusher_wake.notify_all();
    log.changed.notify_all();
}

async fn write_seal(log: &Log, core: &ShardCore, base: u64) -> Result<()> {
    let (file, path, trailer, index) = {
        let i = log.inner.borrow();
        let s = i.open_segment(base).expect("rolled segment");
        let t = Trailer {
            base_offset: s.base_offset,
            next_offset: s.next_offset,
            data_end: s.end_pos,
            index_pos: 0,
            index_count: 0,
            first_timestamp_ns: s.first_timestamp_ns,
            last_timestamp_ns: s.last_timestamp_ns,
            data_crc: s.data_crc,
            index_crc: 0,
        };
        (s.file.clone(), s.path.clone(), t, s.index.entries.clone())
    };
    let seal = encode_seal(trailer, &index);
    let seal_pos = align_up(trailer.data_end);
    let mut buf = file.alloc_dma_buffer(seal.len());
    buf.as_bytes_mut().copy_from_slice(&seal);
    file.write_at(buf, seal_pos)
        .await
        .map_err(|e| Error::glommio("write seal", &path, e))?;
    file.truncate(seal_pos + seal.len() as u64)
        .await
        .map_err(|e| Error::glommio("truncate", &path, e))?;
    file.fdatasync()
        .await
        .map_err(|e| Error::glommio("fdatasync", &path, e))?;
    {
        let mut st = core.stats.borrow_mut();
        st.fdatasyncs += 1;
        st.segments_sealed += 1;
    }
    let mut i = log.inner.borrow_mut();
    let pos = i
        .rolled
        .iter()
        .position(|s| s.base_offset == base)
        .expect("rolled segment");
    let s = i.rolled.remove(pos).expect("rolled segment");
    let at = i.sealed.partition_point(|x| x.base_offset < base);
    let local_bytes = seal_pos + seal.len() as u64;
    i.sealed.insert(
        at,
        SealedSegment {
            base_offset: s.base_offset,
            next_offset: s.next_offset,
            data_end: s.end_pos,
            path: s.path,
            store: Store::Raw(s.file),
            index: s.index.entries,
            last_timestamp_ns: s.last_timestamp_ns,
            data_crc: s.data_crc,
            local_bytes,
            last_read: std::cell::Cell::new(0),
        },
    );
    core.tier1_bytes.set(core.tier1_bytes.get() + local_bytes);
    Ok(())
}

/// Makes a kept file of an earlier segment (`tiering::retire_raw`) ready to be the next
/// segment: its header block zeroed, so that once it takes the next segment's name it reads as
/// a segment never written until its first write lands; preallocated again to the segment
/// size (sealing cut it to its data); and both made durable before it can be renamed.
async fn reuse_spare(path: &std::path::Path, f: &DmaFile, size: u64, prealloc: bool) -> Result<()> {
    f.write_at(zeroed_buffer(f, BLOCK_SIZE as usize), 0)
        .await
        .map_err(|e| Error::glommio("zero reused segment header", path, e))?;
    if prealloc {
        f.pre_allocate(size, false)
            .await
            .map_err(|e| Error::glommio("preallocate reused segment", path, e))?;
    }
    f.fdatasync()
        .await
        .map_err(|e| Error::glommio("fdatasync reused segment", path, e))
}

/// A DMA buffer of `len` zero bytes.
fn zeroed_buffer(f: &DmaFile, len: usize) -> DmaBuffer {
    let mut b = f.alloc_dma_buffer(len);
    b.as_bytes_mut().fill(0);
    b
}

/// A new name for a spare file of `log` (`spare-<unix ns>-<per-shard serial>.tmp`).
pub fn spare_path(log: &Log, core: &ShardCore) -> PathBuf {
    log.dir
        .join(format!("spare-{}-{}.tmp", crate::record::now_ns(), core.next_serial()))
}

/// Creates and preallocates the file the next segment will live in, or reuses one kept from
/// an earlier segment.
async fn make_spare(log: Rc<Log>, core: Rc<ShardCore>) {
    let result = match reuse_kept(&log, &core).await {
        Some((path, file)) => Ok((
            Spare {
                path,
                file,
                fresh: false,
            },
            false,
        )),
        None => new_zero_filled_spare(&log, &core).await,
    };
    let mut i = log.inner.borrow_mut();
    i.spare_wanted = false;
    i.spare_in_progress = false;
    match result {
        Ok((spare, zeroed_whole)) => {
            i.spare = Some(spare);
            // The segment a log is created with (or restarts in) is in new blocks, and a
            // slow Synced log could spend minutes in it. Once a spare is zeroed whole, a fresh
            // active segment with most of it still to fill is rolled at once: every sync
            // after that runs over written blocks.
            let a = &i.active;
            if zeroed_whole
                && a.fresh_blocks
                && a.record_count() > 0
                && a.end_pos <= a.segment_size_bytes / 2
                && !i.roll_requested
            {
                i.roll_requested = true;
                core.stats.borrow_mut().early_rolls += 1;
            }
        }
        Err(e) => {
            tracing::warn!(log = %log.name, error = %e, "cannot create the next segment");
            i.spare_error = Some(e);
        }
    }
    drop(i);
    log.changed.notify_all();
    log.flusher_wake.notify_all();
}

/// A new spare, zero-filled first in a log that syncs (`zero_fill`), and whether it was
/// zeroed whole. A file that cannot be zeroed is removed.
async fn new_zero_filled_spare(log: &Log, core: &ShardCore) -> Result<(Spare, bool)> {
    let (path, file) = new_spare(log, core).await?;
    let cfg = &core.config;
    let zeroed = match cfg.zero_fill_pace() {
        Some(rate) if log.inner.borrow().syncs_seen => zero_fill(log, core, &path, &file, rate).await,
        _ => Ok(0),
    };
    match zeroed {
        Ok(zeroed) => Ok((
            Spare {
                path,
                file,
                // Without preallocation every write extends the file: no unwritten extents;
                // zero-filled whole, none left.
                fresh: cfg.preallocate && zeroed < cfg.segment_size_bytes,
            },
            zeroed == cfg.segment_size_bytes,
        )),
        Err(e) => {
            let _ = file.close_rc().await;
            let _ = fsops::remove(&path).await;
            Err(e)
        }
    }
}

/// Bytes per write of zeros into a spare. A zero write queued at the device ahead of a Synced
/// append's write delays that append by its own length: with 512 KiB steps the depth-1 p99
/// did not improve (347-391 µs against 371-462 without zero-filling), with 64 KiB it did
/// (325-364 µs). 1024 writes a second at the default pace; 64 KiB of the shard's DMA pool,
/// shared by all its logs, for as long as the shard runs.
const ZERO_STEP: u64 = 64 << 10;

/// Writes zeros through a new, preallocated spare from its start, at most `rate` bytes a
/// second for the whole shard, so that the segment it becomes is written over written
/// blocks: an fdatasync then has no unwritten-extent conversions to make durable
/// (`Config::zero_fill_spares_bytes_per_sec`). Stops as soon as a roll wants the spare, or the
/// log closes or fails; the spare is not published before this returns, so no zero can land
/// on a block a record was written to. A file zeroed whole is fdatasync'ed, so its
/// conversions are durable before any record needs a sync. Returns the bytes zeroed from the
/// start of the file.
async fn zero_fill(log: &Log, core: &ShardCore, path: &std::path::Path, f: &DmaFile, rate: u64) -> Result<u64> {
    let size = core.config.segment_size_bytes;
    let zeros = core
        .zeros
        .get_or_init(|| Rc::new(zeroed_buffer(f, ZERO_STEP as usize)))
        .clone();
    let stop = || {
        let i = log.inner.borrow();
        i.spare_wanted || i.closing || i.failed.is_some()
    };
    let mut pos = 0;
    while pos < size && !stop() {
        // Segment sizes are whole blocks, so a last, shorter step is too.
        let len = ZERO_STEP.min(size - pos);
        // The pace is the shard's, shared by all its logs: many Synced logs making spares at
        // once (all of them at start-up, say) must not multiply it. Each step takes the next
        // slot of the shard's schedule and waits for it.
        let now = Instant::now();
        let slot = core.zero_fill_next.get().max(now);
        core.zero_fill_next
            .set(slot + Duration::from_secs_f64(len as f64 / rate as f64));
        while !stop() {
            let Some(left) = slot.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) else {
                break;
            };
            future::or(log.spare_waited.next(), async {
                Timer::new(left).await;
            })
            .await;
        }
        if stop() {
            break;
        }
        let buf = if len == ZERO_STEP {
            zeros.clone()
        } else {
            Rc::new(zeroed_buffer(f, len as usize))
        };
        let done = if core.io_workers_elsewhere {
            f.write_rc_at_punted(buf, pos).await
        } else {
            f.write_rc_at(buf, pos).await
        }
        .map_err(|e| Error::glommio("zero-fill spare segment", path, e))?;
        if (done as u64) < len {
            return Err(Error::Io {
                op: "zero-fill spare segment",
                path: path.to_owned(),
                source: std::io::Error::new(
                    std::io::ErrorKind::WriteZero,
                    format!("short write: {done} of {len} bytes"),
                ),
            });
        }
        pos += len;
        core.stats.borrow_mut().spare_zeroed_bytes += len;
    }
    if pos == size {
        f.fdatasync()
            .await
            .map_err(|e| Error::glommio("fdatasync zero-filled spare segment", path, e))?;
        core.stats.borrow_mut().spares_zeroed += 1;
    }
    debug_assert!(pos <= size && pos.is_multiple_of(BLOCK_SIZE));
    Ok(pos)
}

/// A kept file of an earlier segment made ready as the next spare, if the log has one and it
/// can be made ready (otherwise it is removed, and a new spare is created instead).
async fn reuse_kept(log: &Log, core: &ShardCore) -> Option<(PathBuf, Rc<DmaFile>)> {
    let kept = log.inner.borrow_mut().recycled.pop();
    let (path, f) = kept?;
    let cfg = &core.config;
    match reuse_spare(&path, &f, cfg.segment_size_bytes, cfg.preallocate).await {
        Ok(()) => {
            core.stats.borrow_mut().spares_reused += 1;
            Some((path, f))
        }
        Err(e) => {
            tracing::warn!(log = %log.name, error = %e, "cannot reuse a kept segment file; creating a new one");
            let _ = f.close_rc().await;
            let _ = fsops::remove(&path).await;
            None
        }
    }
}

/// Creates and preallocates a new spare file.
async fn new_spare(log: &Log, core: &ShardCore) -> Result<(PathBuf, Rc<DmaFile>)> {
    let path = spare_path(log, core);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .dma_open(&path)
        .await
        .map_err(|e| Error::glommio("create spare segment", &path, e))?;
    if core.config.preallocate {
        if let Err(e) = f.pre_allocate(core.config.segment_size_bytes, false).await {
            let _ = f.close().await;
            let _ = std::fs::remove_file(&path);
            return Err(Error::glommio("preallocate spare segment", &path, e));
        }
    }
    Ok((path, Rc::new(f)))
}
