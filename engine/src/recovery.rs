//! Opening a log at start-up: verify sealed segments by their trailer (falling back to a scan),
//! scan the unsealed tail frame by frame, cut off the torn part, remove leftovers, and report
//! what was dropped. Also creates the first segment of a new log.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::format::logmeta::{self, LogMeta};
use crate::format::scan::{self, IndexBuilder, Scan};
use crate::format::segment::{self as fmt, align_down, align_up, SegmentHeader, TRAILER_BYTES};
use crate::limits::{BLOCK_SIZE, RECORD_BYTES_CEILING};
use crate::log::{Log, LogInner};
use crate::record::now_ns;
use crate::segment::{ActiveSegment, SealedSegment};
use glommio::io::{DmaFile, OpenOptions};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// What recovery found and did, per log. Returned by `Engine::open` so operators can see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub log: String,
    pub segments: usize,
    pub next_offset: u64,
    /// Segments that needed a frame-by-frame scan (unsealed, or a trailer that failed).
    pub scanned: usize,
    /// Bytes cut from the end of the active segment (torn or damaged frames).
    pub truncated_bytes: u64,
    /// Records of an incomplete batch that were dropped.
    pub dropped_batch_records: u64,
    /// Offset ranges that were lost to damage inside sealed segments.
    pub lost_ranges: Vec<(u64, u64)>,
    /// Human-readable notes: leftover files removed, where a scan stopped and why.
    pub notes: Vec<String>,
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |e| Error::io(op, path, e)
}

pub fn read_meta(dir: &Path) -> Result<LogMeta> {
    let p = dir.join(logmeta::FILE_NAME);
    let b = std::fs::read(&p).map_err(io("read", &p))?;
    LogMeta::decode(&b).map_err(|d| Error::Corruption {
        path: p,
        pos: 0,
        detail: d.into(),
    })
}

/// Writes `log.meta` crash-safely: temp file, fsync, rename, directory fsync.
pub fn write_meta(dir: &Path, meta: &LogMeta) -> Result<()> {
    use std::io::Write;
    let tmp = dir.join("log.meta.tmp");
    let dst = dir.join(logmeta::FILE_NAME);
    let mut f = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
    f.write_all(&meta.encode()).map_err(io("write", &tmp))?;
    f.sync_all().map_err(io("fsync", &tmp))?;
    std::fs::rename(&tmp, &dst).map_err(io("rename", &dst))?;
    sync_dir(dir)
}

pub fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync directory", dir))
}

/// Creates a segment file with its header written and synced, preallocated to full size.
async fn create_segment(cfg: &Config, dir: &Path, log_id: u64, base: u64) -> Result<(PathBuf, Rc<DmaFile>)> {
    let path = dir.join(fmt::file_name(log_id, base));
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .dma_open(&path)
        .await
        .map_err(|e| Error::glommio("create segment", &path, e))?;
    if cfg.preallocate {
        f.pre_allocate(cfg.segment_size_bytes, false)
            .await
            .map_err(|e| Error::glommio("preallocate segment", &path, e))?;
    }
    let header = SegmentHeader {
        log_id,
        base_offset: base,
        created_ns: now_ns(),
    }
    .encode();
    let mut buf = f.alloc_dma_buffer(header.len());
    buf.as_bytes_mut().copy_from_slice(&header);
    f.write_at(buf, 0)
        .await
        .map_err(|e| Error::glommio("write header", &path, e))?;
    f.fdatasync().await.map_err(|e| Error::glommio("fdatasync", &path, e))?;
    sync_dir(dir)?;
    Ok((path, Rc::new(f)))
}

fn fresh_active(cfg: &Config, base: u64, path: PathBuf, file: Rc<DmaFile>) -> ActiveSegment {
    ActiveSegment {
        base_offset: base,
        path,
        file,
        spare_path: None,
        next_offset: base,
        end_pos: BLOCK_SIZE,
        stage_pos: BLOCK_SIZE,
        staging: Vec::new(),
        staging_head: 0,
        disk_end: BLOCK_SIZE,
        inflight: None,
        index: IndexBuilder::new(cfg.index_interval_bytes),
        data_crc: 0,
        first_timestamp_ns: 0,
        last_timestamp_ns: 0,
        first_append_at: None,
        seal_started: false,
        segment_size_bytes: cfg.segment_size_bytes,
    }
}

fn new_log(meta: &LogMeta, dir: PathBuf, sealed: Vec<SealedSegment>, active: ActiveSegment, first: u64) -> Log {
    let next = active.next_offset;
    Log {
        name: meta.name.clone(),
        id: meta.log_id,
        dir,
        inner: RefCell::new(LogInner {
            sealed,
            rolled: VecDeque::new(),
            active,
            next_offset: next,
            first_offset: first,
            written_upto: next,
            synced_upto: next,
            want_written: next,
            want_synced: next,
            unacked: VecDeque::new(),
            unflushed_since: None,
            spare: None,
            spare_wanted: false,
            spare_in_progress: false,
            spare_error: None,
            roll_requested: false,
            failed: None,
            failed_kind: None,
            closing: false,
            flusher_exited: false,
        }),
        changed: Event::default(),
        flusher_wake: Event::default(),
    }
}

/// Creates a new, empty log directory with its metadata and first segment.
pub async fn create_log(cfg: &Config, dir: PathBuf, meta: &LogMeta) -> Result<Log> {
    std::fs::create_dir(&dir).map_err(io("create log directory", &dir))?;
    write_meta(&dir, meta)?;
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    let (path, file) = create_segment(cfg, &dir, meta.log_id, 0).await?;
    Ok(new_log(meta, dir, Vec::new(), fresh_active(cfg, 0, path, file), 0))
}

struct SegFile {
    base: u64,
    path: PathBuf,
}

fn list_segments(dir: &Path, log_id: u64, report: &mut RecoveryReport) -> Result<Vec<SegFile>> {
    let mut segs = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io("list log directory", dir))? {
        let e = e.map_err(io("list log directory", dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        if name.ends_with(".tmp") {
            // Spare segments and half-written metadata: never hold acknowledged data.
            std::fs::remove_file(&path).map_err(io("remove leftover", &path))?;
            report.notes.push(format!("removed leftover {name}"));
            continue;
        }
        match fmt::parse_file_name(&name) {
            Some((id, base)) if id == log_id => segs.push(SegFile { base, path }),
            Some(_) => report.notes.push(format!("ignored {name}: belongs to another log id")),
            None if name == logmeta::FILE_NAME => {}
            None => report.notes.push(format!("ignored unknown file {name}")),
        }
    }
    segs.sort_by_key(|s| s.base);
    Ok(segs)
}

/// Tries the seal trailer; `Ok(None)` means the segment is not (validly) sealed.
fn read_sealed(path: &Path, base: u64) -> Result<Option<(fmt::Trailer, Vec<fmt::IndexEntry>)>> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path).map_err(io("open segment", path))?;
    let len = f.metadata().map_err(io("stat segment", path))?.len();
    if len < BLOCK_SIZE + TRAILER_BYTES as u64 {
        return Ok(None);
    }
    // Only the trailer and the index are read: opening a sealed segment needs no scan.
    let mut tr = [0u8; TRAILER_BYTES];
    f.read_exact_at(&mut tr, len - TRAILER_BYTES as u64)
        .map_err(io("read trailer", path))?;
    let Ok(t) = fmt::decode_trailer(&tr, len) else {
        return Ok(None);
    };
    if t.base_offset != base {
        return Ok(None);
    }
    let index_len = (t.index_count as usize).saturating_mul(fmt::INDEX_ENTRY_BYTES);
    let mut index_bytes = vec![0u8; index_len];
    f.read_exact_at(&mut index_bytes, t.index_pos)
        .map_err(io("read index", path))?;
    let Ok(index) = fmt::decode_index(&index_bytes, &t) else {
        return Ok(None);
    };
    if t.next_offset > t.base_offset && index.first().map(|e| e.offset) != Some(base) {
        return Ok(None);
    }
    Ok(Some((t, index)))
}

/// Opens an existing log directory, repairing its tail.
pub async fn open_log(cfg: &Config, dir: PathBuf) -> Result<(Log, RecoveryReport)> {
    let meta = read_meta(&dir)?;
    let mut report = RecoveryReport {
        log: meta.name.clone(),
        ..Default::default()
    };
    let files = list_segments(&dir, meta.log_id, &mut report)?;
    let mut sealed: Vec<SealedSegment> = Vec::new();
    let mut tail: Option<(SegFile, Scan, Vec<u8>)> = None;
    let n = files.len();
    for (i, sf) in files.into_iter().enumerate() {
        let last = i + 1 == n;
        if let Some(prev) = sealed.last() {
            if sf.base < prev.next_offset {
                return Err(Error::Corruption {
                    path: sf.path.clone(),
                    pos: 0,
                    detail: format!(
                        "segment base {} overlaps the previous segment ending at {}",
                        sf.base, prev.next_offset
                    ),
                });
            }
            if sf.base > prev.next_offset {
                report.lost_ranges.push((prev.next_offset, sf.base));
            }
        }
        if let Some((t, index)) = read_sealed(&sf.path, sf.base)? {
            let file = open_dma(&sf.path, false).await?;
            sealed.push(SealedSegment {
                base_offset: t.base_offset,
                next_offset: t.next_offset,
                data_end: t.data_end,
                path: sf.path,
                file,
                index,
                last_timestamp_ns: t.last_timestamp_ns,
            });
            continue;
        }
        // An unsealed (or damaged) segment is read whole and scanned, with ordinary reads: the
        // page cache is coherent with the O_DIRECT writes that made it, and start-up is not on
        // the latency path.
        let bytes = std::fs::read(&sf.path).map_err(io("read segment", &sf.path))?;
        report.scanned += 1;
        if let Ok(h) = SegmentHeader::decode(&bytes) {
            if h.log_id != meta.log_id || h.base_offset != sf.base {
                report.notes.push(format!(
                    "{}: header says log {:016x} base {}, the file name disagrees; trusting the name and the frames",
                    sf.path.display(),
                    h.log_id,
                    h.base_offset
                ));
            }
        } else {
            report.notes.push(format!(
                "{}: segment header damaged or never written",
                sf.path.display()
            ));
        }
        let data = bytes.get(BLOCK_SIZE as usize..).unwrap_or(&[]);
        // Bound lengths by the format's ceiling, not today's config: lowering max_record_bytes
        // must never turn valid old records into "damage".
        let s = scan::scan(data, sf.base, RECORD_BYTES_CEILING, cfg.index_interval_bytes);
        if let Some((pos, why)) = s.stopped {
            if !why.is_clean_end() || !last {
                report
                    .notes
                    .push(format!("{}: scan stopped at byte {pos}: {why:?}", sf.path.display()));
            }
        }
        if last {
            tail = Some((sf, s, bytes));
        } else {
            // A sealed segment whose seal does not verify: keep its valid prefix; anything
            // after it up to the next segment is reported lost, never invented.
            let file = open_dma(&sf.path, false).await?;
            sealed.push(SealedSegment {
                base_offset: sf.base,
                next_offset: s.next_offset,
                data_end: s.data_end,
                path: sf.path,
                file,
                index: s.index,
                last_timestamp_ns: s.last_timestamp_ns,
            });
        }
    }
    let first = sealed
        .first()
        .map(|s| s.base_offset)
        .or(tail.as_ref().map(|t| t.0.base))
        .unwrap_or(0);
    let active = match tail {
        Some((sf, s, bytes)) if s.next_offset > sf.base || SegmentHeader::decode(&bytes).is_ok() => {
            repair_tail(cfg, meta.log_id, sf, s, &bytes, &mut report).await?
        }
        Some((sf, _, _)) => {
            // A segment file that never received its header (crash right after it was named):
            // it holds nothing; start the log's next segment afresh.
            std::fs::remove_file(&sf.path).map_err(io("remove empty segment", &sf.path))?;
            report
                .notes
                .push(format!("removed empty segment {}", sf.path.display()));
            let base = sealed.last().map(|s| s.next_offset).unwrap_or(sf.base);
            let (path, file) = create_segment(cfg, &dir, meta.log_id, base).await?;
            fresh_active(cfg, base, path, file)
        }
        None => {
            let base = sealed.last().map(|s| s.next_offset).unwrap_or(0);
            let (path, file) = create_segment(cfg, &dir, meta.log_id, base).await?;
            fresh_active(cfg, base, path, file)
        }
    };
    if let Some(prev) = sealed.last() {
        if active.base_offset > prev.next_offset {
            report.lost_ranges.push((prev.next_offset, active.base_offset));
        }
    }
    report.segments = sealed.len() + 1;
    report.next_offset = active.next_offset;
    let log = new_log(&meta, dir, sealed, active, first);
    Ok((log, report))
}

async fn open_dma(path: &Path, write: bool) -> Result<Rc<DmaFile>> {
    let f = OpenOptions::new()
        .read(true)
        .write(write)
        .dma_open(path)
        .await
        .map_err(|e| Error::glommio("open segment", path, e))?;
    Ok(Rc::new(f))
}

/// Makes the unsealed last segment appendable again: everything after the valid prefix is
/// cut off and zeroed, so a stale frame can never reappear behind new appends.
async fn repair_tail(
    cfg: &Config,
    log_id: u64,
    sf: SegFile,
    s: Scan,
    bytes: &[u8],
    report: &mut RecoveryReport,
) -> Result<ActiveSegment> {
    let file = open_dma(&sf.path, true).await?;
    let valid_end = s.data_end;
    let used_end = last_nonzero(bytes).max(valid_end);
    report.truncated_bytes = used_end - valid_end;
    report.dropped_batch_records = s.dropped_batch_records;
    if SegmentHeader::decode(bytes).is_err() {
        // The frames verified on their own; rewrite the header so the file is whole again.
        let h = SegmentHeader {
            log_id,
            base_offset: sf.base,
            created_ns: now_ns(),
        }
        .encode();
        let mut buf = file.alloc_dma_buffer(h.len());
        buf.as_bytes_mut().copy_from_slice(&h);
        file.write_at(buf, 0)
            .await
            .map_err(|e| Error::glommio("rewrite header", &sf.path, e))?;
        report
            .notes
            .push(format!("{}: rewrote damaged header", sf.path.display()));
    }
    let stage_pos = align_down(valid_end);
    let staging = bytes[stage_pos as usize..valid_end as usize].to_vec();
    // Rewrite the tail block with zeros after the valid end, drop the blocks past it, then
    // preallocate again (fresh zeroed space) and sync before anything new is acknowledged.
    if valid_end > stage_pos {
        let mut buf = file.alloc_dma_buffer(BLOCK_SIZE as usize);
        buf.as_bytes_mut().fill(0);
        buf.as_bytes_mut()[..staging.len()].copy_from_slice(&staging);
        file.write_at(buf, stage_pos)
            .await
            .map_err(|e| Error::glommio("rewrite tail block", &sf.path, e))?;
    }
    file.truncate(align_up(valid_end))
        .await
        .map_err(|e| Error::glommio("truncate", &sf.path, e))?;
    if cfg.preallocate {
        file.pre_allocate(cfg.segment_size_bytes.max(align_up(valid_end)), false)
            .await
            .map_err(|e| Error::glommio("preallocate segment", &sf.path, e))?;
    }
    file.fdatasync()
        .await
        .map_err(|e| Error::glommio("fdatasync", &sf.path, e))?;
    Ok(ActiveSegment {
        base_offset: sf.base,
        path: sf.path,
        file,
        spare_path: None,
        next_offset: s.next_offset,
        end_pos: valid_end,
        stage_pos,
        staging,
        staging_head: 0,
        disk_end: valid_end,
        inflight: None,
        index: IndexBuilder::from_entries(cfg.index_interval_bytes, s.index),
        data_crc: s.data_crc,
        first_timestamp_ns: s.first_timestamp_ns,
        last_timestamp_ns: s.last_timestamp_ns,
        first_append_at: None,
        seal_started: false,
        segment_size_bytes: cfg.segment_size_bytes.max(align_up(valid_end)),
    })
}

fn last_nonzero(bytes: &[u8]) -> u64 {
    bytes.iter().rposition(|&b| b != 0).map(|p| p as u64 + 1).unwrap_or(0)
}
