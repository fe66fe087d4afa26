//! One background task per log moves bytes from memory to disk: it seals rolled segments,
//! writes the active segment's buffer with O_DIRECT (rewriting the partial tail block), runs
//! group-commit fdatasyncs, keeps a preallocated spare file ready for the next roll, and rolls
//! by age. It never waits on a timer while there is work a caller is waiting for.

use crate::error::{Error, Result};
use crate::format::segment::{align_down, align_up, encode_seal, Trailer};
use crate::limits::BLOCK_SIZE;
use crate::log::Log;
use crate::segment::{SealedSegment, Store};
use crate::shard::ShardCore;
use futures_lite::future;
use glommio::io::{Directory, OpenOptions};
use glommio::timer::Timer;
use std::rc::Rc;
use std::time::Duration;

enum Action {
    SealRolled,
    Flush {
        sync: bool,
    },
    Sync,
    MakeSpare,
    /// Swap the spare in: by age, or because `roll` was asked for.
    Roll,
    Wait(Option<Duration>),
    Exit,
}

fn next_action(log: &Log, core: &ShardCore) -> Action {
    let cfg = &core.config;
    let i = log.inner.borrow();
    if i.failed.is_some() {
        return Action::Exit;
    }
    let closing = i.closing;
    // Starting the next segment's preallocation comes first: it only spawns a task, and under
    // a steady stream of flushes it would otherwise never get its turn. It starts an eighth of
    // the way into the segment so a fast writer never catches up with it.
    let can_make_spare = i.spare.is_none() && i.spare_error.is_none() && !i.spare_in_progress && !closing;
    let early = i.active.end_pos >= i.active.segment_size_bytes / 8;
    if can_make_spare && (i.spare_wanted || early) {
        return Action::MakeSpare;
    }
    if i.rolled.iter().any(|s| !s.seal_started) {
        return Action::SealRolled;
    }
    let unflushed = i.active.unflushed_bytes() > 0 || i.active.spare_path.is_some() && i.active.record_count() > 0;
    // With a sync in flight, the next one waits for it (it wakes the flusher when done); the
    // bytes behind it may be written meanwhile, so the next sync finds them on disk.
    let want_sync = !i.sync_in_flight && (i.want_synced > i.synced_upto || (closing && i.synced_upto < i.next_offset));
    let sync_pending = i.sync_in_flight && (i.want_synced > i.synced_upto || closing);
    let age = i.unflushed_since.map(|t| t.elapsed());
    if unflushed {
        let due = i.want_written > i.written_upto
            || want_sync
            || sync_pending
            || closing
            || i.active.unflushed_bytes() >= cfg.flush_threshold_bytes
            || age.is_some_and(|a| a >= cfg.flush_interval);
        if due {
            return Action::Flush { sync: want_sync };
        }
    } else if want_sync {
        return Action::Sync;
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
    }
    if closing && i.rolled.is_empty() && !i.spare_in_progress && !i.sync_in_flight {
        return Action::Exit;
    }
    let flush_in = age.filter(|_| unflushed).map(|a| cfg.flush_interval.saturating_sub(a));
    let wait = match (flush_in, aged.filter(|d| !d.is_zero())) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    // A spare that failed (full disk) is retried when asked; until then nothing to poll for.
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
            Action::SealRolled => seal_front(&log, &core).await,
            Action::Flush { sync } => flush_active(&log, &core, sync).await,
            Action::Sync => sync_active(&log, &core).await,
            Action::MakeSpare => {
                // Preallocating a whole segment can take a while (fallocate runs on glommio's
                // blocking pool); flushes and syncs carry on meanwhile.
                log.inner.borrow_mut().spare_in_progress = true;
                glommio::spawn_local(make_spare(log.clone(), core.clone())).detach();
                Ok(())
            }
            Action::Roll => {
                let cfg = &core.config;
                log.inner
                    .borrow_mut()
                    .roll(log.id, &log.dir, cfg.segment_size_bytes, cfg.index_interval_bytes);
                log.changed.notify_all();
                Ok(())
            }
        };
        if let Err(e) = result {
            log.fail(&e);
            core.budget_freed.notify_all();
            break;
        }
    }
    log.inner.borrow_mut().flusher_exited = true;
    log.changed.notify_all();
}

/// Writes the next chunk of unflushed bytes of the open segment with base `base`: everything
/// if it fits in one write of `flush_threshold_bytes`, else that many whole blocks. Returns
/// `Some(offset)` once the segment is written up to its end (records below `offset` are on
/// disk), `None` after a partial chunk. Bounding each write keeps the copy into the DMA buffer
/// short, so appends on this shard are never held up behind one huge write.
async fn write_segment(log: &Log, core: &ShardCore, base: u64) -> Result<Option<u64>> {
    let max_write = align_down(core.config.flush_threshold_bytes).max(BLOCK_SIZE);
    let (file, path, spare, pos, buf, end, upto, old_disk_end) = {
        let mut inner = log.inner.borrow_mut();
        let Some(s) = inner.open_segment_mut(base) else {
            return Err(Error::Corruption {
                path: log.dir.clone(),
                pos: 0,
                detail: format!("segment {base} missing"),
            });
        };
        debug_assert_eq!(s.stage_pos % BLOCK_SIZE, 0);
        debug_assert!(s.inflight.is_none(), "one write per segment at a time");
        let staged = s.end_pos - s.stage_pos;
        let (len, end, upto) = if staged <= max_write {
            (staged as usize, s.end_pos, Some(s.next_offset))
        } else {
            (max_write as usize, s.stage_pos + max_write, None)
        };
        let mut buf = s.file.alloc_dma_buffer(align_up(len as u64) as usize);
        buf.as_bytes_mut()[..len].copy_from_slice(&s.staged()[..len]);
        buf.as_bytes_mut()[len..].fill(0);
        let pos = s.stage_pos;
        // Whole blocks leave the buffer; a partial tail block stays, to be rewritten (extended)
        // by the next write.
        let new_stage = align_down(end);
        s.staging_head += (new_stage - pos) as usize;
        s.stage_pos = new_stage;
        if s.staging_head >= 1 << 20 && s.staging_head * 2 >= s.staging.len() {
            s.staging.drain(..s.staging_head);
            s.staging_head = 0;
        }
        let buf = Rc::new(buf);
        s.inflight = Some((pos, buf.clone()));
        (
            s.file.clone(),
            s.path.clone(),
            s.spare_path.take(),
            pos,
            buf,
            end,
            upto,
            s.disk_end,
        )
    };
    if let Some(spare) = spare {
        // The file takes its real name before its first byte of data is written, so a record
        // acknowledged as written is always found by recovery under the right name.
        file.rename(&path)
            .await
            .map_err(|e| Error::glommio("rename spare segment", &spare, e))?;
        let dir = Directory::open(&log.dir)
            .await
            .map_err(|e| Error::glommio("open directory", &log.dir, e))?;
        dir.sync()
            .await
            .map_err(|e| Error::glommio("fsync directory", &log.dir, e))?;
    }
    let n = file
        .write_rc_at(buf.clone(), pos)
        .await
        .map_err(|e| Error::glommio("write", &path, e))?;
    if n != buf.len() {
        return Err(Error::io(
            "write",
            &path,
            std::io::Error::other(format!("short write: {n} of {}", buf.len())),
        ));
    }
    {
        let mut st = core.stats.borrow_mut();
        st.writes += 1;
        st.written_bytes += n as u64;
    }
    let mut inner = log.inner.borrow_mut();
    if let Some(s) = inner.open_segment_mut(base) {
        s.inflight = None;
        debug_assert!(end >= s.disk_end);
        s.disk_end = end;
    }
    let released = end - old_disk_end.max(BLOCK_SIZE);
    core.unflushed.set(core.unflushed.get() - released);
    if let Some(upto) = upto {
        inner.written_upto = inner.written_upto.max(upto);
        inner.settle();
    }
    drop(inner);
    core.budget_freed.notify_all();
    log.changed.notify_all();
    Ok(upto)
}

async fn flush_active(log: &Rc<Log>, core: &Rc<ShardCore>, sync: bool) -> Result<()> {
    let base = log.inner.borrow().active.base_offset;
    let Some(upto) = write_segment(log, core, base).await? else {
        // More chunks to go; the next round writes them (and syncs after the last).
        return Ok(());
    };
    {
        let mut i = log.inner.borrow_mut();
        let idle = i.open_segment(base).is_some_and(|s| s.unflushed_bytes() == 0);
        if idle && i.active.base_offset == base {
            i.unflushed_since = None;
        }
    }
    if sync {
        // Overlap only pays when there is something to write meanwhile; otherwise the hop to
        // another task would only add to a lone writer's latency.
        let more = log.inner.borrow().active.unflushed_bytes() > 0;
        if more {
            start_sync(log, core, base, upto);
        } else {
            fdatasync_segment(log, core, base).await?;
            mark_synced(log, upto);
        }
    }
    Ok(())
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
    }
    core.stats.borrow_mut().overlapped_syncs += 1;
    let (log, core) = (log.clone(), core.clone());
    glommio::spawn_local(async move {
        let result = fdatasync_segment(&log, &core, base).await;
        log.inner.borrow_mut().sync_in_flight = false;
        match result {
            Ok(()) => mark_synced(&log, upto),
            Err(e) => {
                log.fail(&e);
                core.budget_freed.notify_all();
            }
        }
        log.flusher_wake.notify_all();
    })
    .detach();
}

/// Syncs what is already written of the active segment (nothing is left to write).
async fn sync_active(log: &Log, core: &ShardCore) -> Result<()> {
    let (base, upto) = {
        let i = log.inner.borrow();
        (i.active.base_offset, i.written_upto)
    };
    fdatasync_segment(log, core, base).await?;
    mark_synced(log, upto);
    Ok(())
}

/// fdatasyncs the open (active or rolled) segment with base `base`.
async fn fdatasync_segment(log: &Log, core: &ShardCore, base: u64) -> Result<()> {
    let (file, path) = {
        let i = log.inner.borrow();
        let s = i.open_segment(base).expect("segment being synced is open");
        (s.file.clone(), s.path.clone())
    };
    file.fdatasync()
        .await
        .map_err(|e| Error::glommio("fdatasync", &path, e))?;
    core.stats.borrow_mut().fdatasyncs += 1;
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
    let (base, needs_write) = {
        let i = log.inner.borrow();
        let s = i.rolled.iter().find(|s| !s.seal_started).expect("rolled segment");
        (s.base_offset, s.unflushed_bytes() > 0 || s.spare_path.is_some())
    };
    if needs_write && write_segment(log, core, base).await?.is_none() {
        return Ok(()); // more chunks first
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
        Err(e) => log.fail(&e),
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

/// Creates and preallocates the file the next segment will live in.
async fn make_spare(log: Rc<Log>, core: Rc<ShardCore>) {
    let path = log
        .dir
        .join(format!("spare-{}-{}.tmp", crate::record::now_ns(), core.next_serial()));
    let size = core.config.segment_size_bytes;
    let prealloc = core.config.preallocate;
    let result = async {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .dma_open(&path)
            .await
            .map_err(|e| Error::glommio("create spare segment", &path, e))?;
        if prealloc {
            if let Err(e) = f.pre_allocate(size, false).await {
                let _ = f.close().await;
                let _ = std::fs::remove_file(&path);
                return Err(Error::glommio("preallocate spare segment", &path, e));
            }
        }
        Ok(f)
    }
    .await;
    let mut i = log.inner.borrow_mut();
    i.spare_wanted = false;
    i.spare_in_progress = false;
    match result {
        Ok(f) => i.spare = Some((path, Rc::new(f))),
        Err(e) => {
            tracing::warn!(log = %log.name, error = %e, "cannot create the next segment");
            i.spare_error = Some(e);
        }
    }
    drop(i);
    log.changed.notify_all();
    log.flusher_wake.notify_all();
}
