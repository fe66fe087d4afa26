//! The shard's background tiering task, in its own glommio task queue with few shares so it
//! only uses what appends and reads leave: it records sealed segments in the manifest,
//! recompresses them into Tier1, applies retention, and keeps sealed files within the Tier1
//! budget.
//!
//! Every lifecycle step follows the manifest rule (record first, act second): the Tier1 file
//! is durable before `Compressed` is recorded, and `Compressed` is durable before the raw file
//! is removed; `Evicted` and `Deleted` are durable before any file goes. A crash anywhere
//! leaves files the start-up reconciliation knows how to finish (`recovery.rs`).

use crate::config::Retention;
use crate::error::{Error, Result};
use crate::format::manifest::{ObjectRef, Record, Upload};
use crate::fsops;
use crate::fsops::Free;
use crate::log::Log;
use crate::segment::Store;
use crate::shard::ShardCore;
use crate::tier1;
use futures_lite::future;
use glommio::timer::Timer;
use std::rc::Rc;
use std::time::{Duration, Instant};

pub async fn run(core: Rc<ShardCore>) {
    let interval = core.config.housekeeping_interval;
    // Due at once: retention and the budget run before the first compression.
    let mut housekeeping_due = Instant::now();
    loop {
        if core.closing.get() {
            core.tiering_done.notify_all();
            return;
        }
        // Retention and the budget come first when due, also under a compression backlog:
        // otherwise a log outgrows its retention limit for as long as the backlog lasts, and
        // the segments retention is about to remove are compressed first for nothing.
        if Instant::now() >= housekeeping_due {
            housekeeping(&core).await;
            housekeeping_due = Instant::now() + interval;
            continue;
        }
        let job = core.tiering_queue.borrow_mut().pop_front();
        if let Some((log, base)) = job {
            core.tiering_busy.set(true);
            if let Err(e) = tier_segment(&core, &log, base).await {
                core.stats.borrow_mut().tiering_errors += 1;
                tracing::warn!(shard = core.id, log = %log.name, base, error = %e, "tiering a sealed segment failed; it stays as it is");
            }
            enforce_budget(&core).await;
            core.tiering_busy.set(false);
            core.tiering_done.notify_all();
            continue;
        }
        let left = housekeeping_due.saturating_duration_since(Instant::now());
        let wake = core.tiering_wake.next();
        future::or(wake, async {
            Timer::new(left.max(Duration::from_millis(1))).await;
        })
        .await;
    }
}

/// Retention, then the budget.
pub async fn housekeeping(core: &Rc<ShardCore>) {
    let logs: Vec<Rc<Log>> = core.logs.borrow().values().cloned().collect();
    for log in logs {
        if core.closing.get() {
            return;
        }
        if let Err(e) = apply_retention(core, &log).await {
            core.stats.borrow_mut().tiering_errors += 1;
            tracing::warn!(shard = core.id, log = %log.name, error = %e, "retention failed");
        }
    }
    enforce_budget(core).await;
}

fn is_sealed(log: &Log, base: u64) -> bool {
    log.inner.borrow().sealed_segment(base).is_some()
}

/// Records a sealed segment in the manifest (if it is not yet) and recompresses it.
async fn tier_segment(core: &Rc<ShardCore>, log: &Rc<Log>, base: u64) -> Result<()> {
    let m = core.manifest();
    ensure_recorded(core, log, base).await?;
    // Retention applies as segments are sealed, not only every `housekeeping_interval`: a
    // segment that retention removes anyway is removed now, not compressed first (under a
    // tight limit and a compression backlog, about half of the segments compressed were
    // removed by the next retention pass, measured in tests/stress.rs), and a fast writer's
    // removed segments come back as its next spares (`retire_raw`) at the pace it seals them.
    if over_retention(log, &policy(core, log)) > 0 {
        apply_retention(core, log).await?;
    }
    if !core.config.tier1_compress {
        return Ok(());
    }
    let src = {
        let i = log.inner.borrow();
        let Some(s) = i.sealed_segment(base) else {
            return Ok(());
        };
        match &s.store {
            Store::Raw(f) => (f.clone(), s.path.clone(), s.next_offset, s.data_end, s.data_crc),
            _ => return Ok(()),
        }
    };
    let (file, path, next_offset, data_end, data_crc) = src;
    let profile = core.profile.get();
    let started = Instant::now();
    let out = tier1::compress(
        tier1::Source {
            file: &file,
            path: &path,
            log_id: log.id,
            base_offset: base,
            next_offset,
            data_end,
            data_crc,
        },
        &log.dir,
        tier1::How {
            profile,
            frame_target: core.config.tier1_frame_bytes,
            worker: core.compressor.as_ref(),
            punt_io: core.io_workers_elsewhere,
        },
        core.config.tier1_io_bytes_per_sec,
        // Given up when retention comes to remove this segment: a fast writer at its limit
        // passes it long before a paced compression of it ends (a second or more per 64 MiB
        // segment at the default pace), and while it lasts no retention is applied and no
        // file comes back for reuse.
        &|| core.closing.get() || retention_removes(log, &policy(core, log), base),
    )
    .await?;
    // The raw file goes below once reads let go of it; this handle must not be one of them.
    drop(file);
    let Some(c) = out else {
        if !core.closing.get() && over_retention(log, &policy(core, log)) > 0 {
            core.stats.borrow_mut().compressions_abandoned += 1;
            apply_retention(core, log).await?;
        }
        return Ok(());
    };
    let elapsed = started.elapsed();
    let recorded = m
        .append(&[Record::Compressed {
            log_id: log.id,
            base,
            file_len: c.file_len,
            file_crc: c.file_crc,
            codec: c.codec as u32,
            level: c.level,
        }])
        .await;
    if let Err(e) = recorded {
        // Not recorded: the raw segment stays the truth, and the orphan goes.
        let _ = fsops::remove(&c.path).await;
        return Err(e);
    }
    let old = log
        .inner
        .borrow_mut()
        .sealed_segment_mut(base)
        .map(|s| s.set_tier1(c.path.clone(), c.file.clone(), c.frames, c.codec, c.file_len));
    let Some(old) = old else {
        // Retention removed it while it was being compressed.
        let _ = fsops::remove(&c.path).await;
        return Ok(());
    };
    core.tier1_bytes.set(core.tier1_bytes.get() - old.1 + c.file_len);
    {
        let mut st = core.stats.borrow_mut();
        st.segments_compressed += 1;
        st.compress_in_bytes += data_end - crate::limits::BLOCK_SIZE;
        st.compress_out_bytes += c.file_len;
        st.compress_nanos += elapsed.as_nanos() as u64;
        st.frames_compressed_off_shard += c.frames_off_shard;
        st.punted_tier1_ios += c.punted_ios;
    }
    if let Store::Raw(f) = old.0 {
        // Reads that already hold the raw file finish first; the name goes then. (By path:
        // glommio's `remove` unlinks the name a file was opened under, and segments are
        // renamed after opening.)
        retire_raw(core, log, path, f);
    }
    Ok(())
}

/// Raw segment files a log keeps for reuse as its next segments. Two cover the spare being
/// made and the next one; more would only hold disk space.
pub const RECYCLE_MAX: usize = 2;

/// Retires the file of a raw segment the log no longer holds: kept for reuse as a spare
/// (`flusher::make_spare`) if the log has room for it, deleted otherwise.
///
/// Why: first writes to blocks new to a file are slower than writes over blocks it already
/// used. Measured with fio, 512 KiB O_DIRECT writes at depth 4 with an fdatasync every 4 MiB:
/// 2.4-2.5 GB/s into a fallocated file against 3.2-3.6 GB/s over written blocks (2.6 against
/// 4.7 at depth 16). The cost is not ext4's unwritten-extent conversion: 1 MiB writes at depth
/// 16 into unwritten extents whose blocks had been written before (`fallocate --zero-range`)
/// ran at 2942 and 2671 MB/s, as fast as over written blocks (2753, 2497), against 1778 and 1945
/// into a new fallocated file. On this VM the file system is mounted with `discard`, so a
/// deleted file's blocks are discarded, and the virtual disk most likely gives them back to
/// the host, which allocates them again on their next first write. Reuse also spares the
/// device the discard of a deleted file.
///
/// Safe because a segment is recognised by its name and its contents together: the header
/// block is zeroed (durably) before the file can take a segment's name, a trailer counts only
/// if it names the segment's base, and the recovery scan accepts a frame only if it carries
/// the next expected offset, which no frame of an earlier life of the file can (this log's
/// earlier offsets are all lower). Readers that still hold the file finish first.
fn retire_raw(core: &Rc<ShardCore>, log: &Rc<Log>, path: std::path::PathBuf, file: Rc<glommio::io::DmaFile>) {
    // Checked again after the wait for readers: the log may have closed or kept another.
    let room = |log: &Log| {
        let i = log.inner.borrow();
        i.recycled.len() < RECYCLE_MAX && !i.closing
    };
    if !room(log) || !core.config.recycle_segments {
        return delete_paced(core, path, file);
    }
    let (core, log) = (core.clone(), log.clone());
    core.deletions.set(core.deletions.get() + 1);
    glommio::spawn_local(async move {
        if !fsops::sole_holder(&file).await || !room(&log) {
            delete_paced(&core, path, file);
        } else {
            let spare = crate::flusher::spare_path(&log, &core);
            match file.rename(&spare).await {
                Ok(()) => {
                    log.inner.borrow_mut().recycled.push((spare, file));
                    core.stats.borrow_mut().segments_recycled += 1;
                    log.flusher_wake.notify_all();
                }
                Err(e) => {
                    tracing::warn!(shard = core.id, path = %path.display(), error = %e, "could not keep a segment file for reuse; deleting it");
                    delete_paced(&core, path, file);
                }
            }
        }
        core.deletions.set(core.deletions.get() - 1);
        core.tiering_done.notify_all();
    })
    .detach();
}

/// Deletes a segment file that only this engine reads (a raw segment, or a Tier1 file without
/// a bridge) in a task of its own: its blocks are freed at the tiering pace
/// (`fsops::Free::Truncate`), which takes about a second for a 64 MiB segment at the default
/// 64 MiB/s, and the next compression need not wait for it. Its path is never used again (no
/// later segment starts at its base). If the engine stops first, the next open removes the
/// rest: the manifest already says the segment is recompressed, or deleted.
fn delete_paced(core: &Rc<ShardCore>, path: std::path::PathBuf, file: Rc<glommio::io::DmaFile>) {
    let core = core.clone();
    core.deletions.set(core.deletions.get() + 1);
    glommio::spawn_local(async move {
        let free = Free::Truncate(core.config.tier1_io_bytes_per_sec);
        match fsops::delete_data_file(&path, file, free).await {
            Ok(off_shard) => core.stats.borrow_mut().deletes_on_shard += u64::from(!off_shard),
            Err(e) => {
                core.stats.borrow_mut().tiering_errors += 1;
                tracing::warn!(shard = core.id, path = %path.display(), error = %e, "could not delete a raw segment");
            }
        }
        core.deletions.set(core.deletions.get() - 1);
        core.tiering_done.notify_all();
    })
    .detach();
}

fn policy(core: &ShardCore, log: &Log) -> Retention {
    let m = core.manifest();
    let st = m.state();
    match st.logs.get(&log.id).and_then(|l| l.retention) {
        Some((age, bytes)) => Retention {
            max_age: (age > 0).then(|| Duration::from_nanos(age)),
            max_bytes: (bytes > 0).then_some(bytes),
        },
        None => core.config.retention,
    }
}

/// How many of the oldest sealed segments the retention policy `p` removes right now: the
/// oldest goes while it is too old or the log is over its size limit, then the next.
fn over_retention(log: &Log, p: &Retention) -> usize {
    if p.max_age.is_none() && p.max_bytes.is_none() {
        return 0;
    }
    let i = log.inner.borrow();
    let mut total: u64 = i.sealed.iter().map(|s| s.record_bytes()).sum::<u64>()
        + i.rolled
            .iter()
            .map(|s| s.end_pos - crate::limits::BLOCK_SIZE)
            .sum::<u64>()
        + i.active.end_pos.saturating_sub(crate::limits::BLOCK_SIZE);
    let now = crate::record::now_ns();
    let mut n = 0;
    for s in &i.sealed {
        let too_old = p
            .max_age
            .is_some_and(|a| now.saturating_sub(s.last_timestamp_ns) > a.as_nanos() as u64);
        let too_big = p.max_bytes.is_some_and(|b| total > b);
        if !(too_old || too_big) {
            break;
        }
        total -= s.record_bytes();
        n += 1;
    }
    n
}

/// Whether retention, applied now, would remove the sealed segment with base `base`.
fn retention_removes(log: &Log, p: &Retention, base: u64) -> bool {
    let n = over_retention(log, p);
    n > 0 && log.inner.borrow().sealed.iter().take(n).any(|s| s.base_offset == base)
}

/// Removes the oldest sealed segments while the log breaks its retention policy.
async fn apply_retention(core: &Rc<ShardCore>, log: &Rc<Log>) -> Result<()> {
    loop {
        if over_retention(log, &policy(core, log)) == 0 {
            return Ok(());
        }
        let victim = {
            let i = log.inner.borrow();
            let Some(s) = i.sealed.first() else {
                return Ok(());
            };
            (s.base_offset, s.next_offset)
        };
        delete_oldest(core, log, victim.0, victim.1).await?;
    }
}

async fn delete_oldest(core: &Rc<ShardCore>, log: &Rc<Log>, base: u64, next_offset: u64) -> Result<()> {
    let m = core.manifest();
    let uploaded = matches!(
        m.state().segments.get(&(log.id, base)).map(|e| &e.upload),
        Some(Upload::Done(_))
    );
    m.append(&[Record::Deleted {
        log_id: log.id,
        base,
        next_offset,
        tier2_pending: uploaded,
    }])
    .await?;
    let seg = {
        let mut i = log.inner.borrow_mut();
        if i.sealed.first().map(|s| s.base_offset) != Some(base) {
            return Ok(());
        }
        let s = i.sealed.remove(0);
        let next_base = i
            .sealed
            .first()
            .map(|s| s.base_offset)
            .or(i.rolled.front().map(|s| s.base_offset))
            .unwrap_or(i.active.base_offset);
        debug_assert!(next_base >= i.first_offset);
        i.first_offset = next_base;
        s
    };
    core.hot.borrow_mut().forget_segment(log.id, base);
    core.tier1_bytes.set(core.tier1_bytes.get() - seg.local_bytes);
    {
        let mut st = core.stats.borrow_mut();
        st.retention_deleted_segments += 1;
        st.retention_deleted_bytes += seg.record_bytes();
        if matches!(seg.store, Store::Raw(_)) && core.config.tier1_compress {
            st.retention_deleted_uncompressed += 1;
        }
    }
    tracing::info!(shard = core.id, log = %log.name, base, next_offset, "retention removed a segment");
    remove_local(core, log, seg.store, &seg.path).await
}

/// Removes a segment's local file. A raw segment's file may be kept for reuse
/// (`retire_raw`). With a bridge, a Tier1 file is deleted before this
/// returns and never truncated: a hydration from Tier2 may later write a file under the same
/// name, and the bridge process may still be reading this one. Without one, nothing outside
/// the engine reads it and no name comes back, so it goes like a raw segment.
async fn remove_local(core: &Rc<ShardCore>, log: &Rc<Log>, store: Store, path: &std::path::Path) -> Result<()> {
    match store {
        Store::Raw(f) => retire_raw(core, log, path.to_owned(), f),
        Store::Tier1 { file, .. } if core.config.tier2.is_none() => delete_paced(core, path.to_owned(), file),
        Store::Tier1 { file, .. } => {
            let off_shard = fsops::delete_data_file(path, file, Free::OnClose).await?;
            core.stats.borrow_mut().deletes_on_shard += u64::from(!off_shard);
        }
        Store::Remote | Store::Missing => {}
    }
    Ok(())
}

/// Evicts least recently read segments that are safe in Tier2 until the shard is within its
/// Tier1 budget; if that is not enough, says so loudly and refuses appends.
pub async fn enforce_budget(core: &Rc<ShardCore>) {
    enforce_budget_sparing(core, None).await
}

/// `enforce_budget`, never evicting segment `spare` (`(log_id, base)`).
pub async fn enforce_budget_sparing(core: &Rc<ShardCore>, spare: Option<(u64, u64)>) {
    let Some(budget) = core.config.tier1_budget_bytes else {
        return;
    };
    while core.tier1_bytes.get() > budget {
        let Some((log, base)) = eviction_candidate(core, spare) else {
            break;
        };
        if let Err(e) = evict(core, &log, base).await {
            core.stats.borrow_mut().tiering_errors += 1;
            tracing::warn!(shard = core.id, log = %log.name, base, error = %e, "eviction failed");
            break;
        }
    }
    let over = core.tier1_bytes.get() > budget;
    if over != core.disk_full.get() {
        core.disk_full.set(over);
        if over {
            core.stats.borrow_mut().tier1_over_budget_events += 1;
            tracing::error!(
                shard = core.id,
                used = core.tier1_bytes.get(),
                budget,
                "Tier1 budget exceeded and no segment is safe to evict (not yet in Tier2): appends are refused with DiskBudget until space is freed"
            );
        } else {
            tracing::info!(shard = core.id, "back within the Tier1 budget; appends accepted again");
        }
    }
}

/// The least recently read local segment whose Tier2 copy is confirmed.
fn eviction_candidate(core: &ShardCore, spare: Option<(u64, u64)>) -> Option<(Rc<Log>, u64)> {
    let m = core.manifest();
    let st = m.state();
    let logs = core.logs.borrow();
    let mut best: Option<(u64, Rc<Log>, u64)> = None;
    for log in logs.values() {
        let i = log.inner.borrow();
        for s in &i.sealed {
            if matches!(s.store, Store::Remote | Store::Missing) || spare == Some((log.id, s.base_offset)) {
                continue;
            }
            let safe = matches!(
                st.segments.get(&(log.id, s.base_offset)).map(|e| &e.upload),
                Some(Upload::Done(_))
            );
            if safe && best.as_ref().is_none_or(|b| s.last_read.get() < b.0) {
                best = Some((s.last_read.get(), log.clone(), s.base_offset));
            }
        }
    }
    best.map(|(_, l, b)| (l, b))
}

async fn evict(core: &Rc<ShardCore>, log: &Rc<Log>, base: u64) -> Result<()> {
    let m = core.manifest();
    // The invariant this whole module exists for: a local copy goes only once Tier2 has one.
    let safe = matches!(
        m.state().segments.get(&(log.id, base)).map(|e| &e.upload),
        Some(Upload::Done(_))
    );
    assert!(safe, "eviction of a segment not confirmed in Tier2");
    m.append(&[Record::Evicted { log_id: log.id, base }]).await?;
    let (old, bytes, path) = {
        let mut i = log.inner.borrow_mut();
        let Some(s) = i.sealed_segment_mut(base) else {
            return Ok(());
        };
        let bytes = s.local_bytes;
        s.local_bytes = 0;
        s.index.clear();
        let old = std::mem::replace(&mut s.store, Store::Remote);
        (old, bytes, s.path.clone())
    };
    if let (Some(link), Store::Tier1 { frames, codec, .. }) = (core.link.get(), &old) {
        crate::tier2::link::keep_index(link, log.id, base, frames.clone(), *codec);
    }
    core.hot.borrow_mut().forget_segment(log.id, base);
    core.tier1_bytes.set(core.tier1_bytes.get() - bytes);
    {
        let mut st = core.stats.borrow_mut();
        st.tier1_evictions += 1;
        st.tier1_evicted_bytes += bytes;
    }
    remove_local(core, log, old, &path).await
}

/// Records that Tier2 holds a copy of a sealed segment (the bridge's confirmation).
pub async fn record_upload(core: &Rc<ShardCore>, log: &Rc<Log>, base: u64, object: ObjectRef) -> Result<()> {
    if !is_sealed(log, base) {
        return Err(Error::UnknownSegment {
            log: log.name.clone(),
            base,
        });
    }
    // Its tiering job may still be queued: record the segment first.
    ensure_recorded(core, log, base).await?;
    core.manifest()
        .append(&[Record::Uploaded {
            log_id: log.id,
            base,
            object,
        }])
        .await?;
    enforce_budget(core).await;
    Ok(())
}

/// Appends `Sealed` for a sealed segment the manifest does not know yet.
async fn ensure_recorded(core: &Rc<ShardCore>, log: &Rc<Log>, base: u64) -> Result<()> {
    if core.manifest().state().segments.contains_key(&(log.id, base)) {
        return Ok(());
    }
    let rec = {
        let i = log.inner.borrow();
        let Some(s) = i.sealed_segment(base) else {
            return Ok(());
        };
        Record::Sealed {
            log_id: log.id,
            base,
            next_offset: s.next_offset,
            data_end: s.data_end,
            data_crc: s.data_crc,
            last_timestamp_ns: s.last_timestamp_ns,
        }
    };
    core.manifest().append(&[rec]).await
}

/// Sets a log's retention and applies it at the next housekeeping pass.
pub async fn set_retention(core: &Rc<ShardCore>, log: &Rc<Log>, r: Retention) -> Result<()> {
    if matches!(r.max_age, Some(d) if d.is_zero()) || r.max_bytes == Some(0) {
        return Err(Error::Config(
            "retention limits must be positive (use None for no limit)".into(),
        ));
    }
    core.manifest()
        .append(&[Record::Retention {
            log_id: log.id,
            max_age_ns: r.max_age.map_or(0, |d| d.as_nanos().min(u64::MAX as u128) as u64),
            max_bytes: r.max_bytes.unwrap_or(0),
        }])
        .await?;
    apply_retention(core, log).await?;
    Ok(())
}

/// Where a segment lives, as `Handle::segments` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentState {
    /// Being appended to.
    Active,
    /// Rolled; its data or seal is still being written.
    Sealing,
    /// Sealed, in its raw `.seg` file.
    Sealed,
    /// Recompressed into a Tier1 `.t1` file.
    Tier1,
    /// Only in Tier2: the local copy was evicted.
    Tier2Only,
    /// Its file was lost and Tier2 has no copy (see `RecoveryReport::missing`).
    Missing,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    pub base_offset: u64,
    /// One past its last record (for the active segment: so far).
    pub next_offset: u64,
    pub state: SegmentState,
    /// Size of its local file (0 when only in Tier2; the active segment's preallocated size).
    pub local_bytes: u64,
    /// Where Tier2 holds it, once the bridge confirmed the upload.
    pub uploaded: Option<ObjectRef>,
    /// crc32c of its whole Tier1 file (the content checksum in its Tier2 object key).
    pub tier1_crc: Option<u32>,
    pub path: Option<std::path::PathBuf>,
}

pub fn segments(core: &ShardCore, log: &Log) -> Vec<SegmentInfo> {
    let m = core.manifest();
    let st = m.state();
    let i = log.inner.borrow();
    let mut out: Vec<SegmentInfo> = i
        .sealed
        .iter()
        .map(|s| {
            let entry = st.segments.get(&(log.id, s.base_offset));
            let uploaded = match entry.map(|e| &e.upload) {
                Some(Upload::Done(o)) => Some(o.clone()),
                _ => None,
            };
            let tier1_crc = entry.filter(|e| e.tier1_len > 0).map(|e| e.tier1_crc);
            let (state, path) = match s.store {
                Store::Raw(_) => (SegmentState::Sealed, Some(s.path.clone())),
                Store::Tier1 { .. } => (SegmentState::Tier1, Some(s.path.clone())),
                Store::Remote => (SegmentState::Tier2Only, None),
                Store::Missing => (SegmentState::Missing, None),
            };
            SegmentInfo {
                base_offset: s.base_offset,
                next_offset: s.next_offset,
                state,
                local_bytes: s.local_bytes,
                uploaded,
                tier1_crc,
                path,
            }
        })
        .collect();
    for (s, state) in i
        .rolled
        .iter()
        .map(|s| (s, SegmentState::Sealing))
        .chain(std::iter::once((&i.active, SegmentState::Active)))
    {
        out.push(SegmentInfo {
            base_offset: s.base_offset,
            next_offset: s.next_offset,
            state,
            local_bytes: s.segment_size_bytes,
            uploaded: None,
            tier1_crc: None,
            path: Some(s.path.clone()),
        });
    }
    out
}
