//! Opening a log at start-up: verify sealed segments by their trailer (falling back to a scan),
//! scan the unsealed tail frame by frame, cut off the torn part, remove leftovers, and report
//! what was dropped. Also creates the first segment of a new log.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::format::logmeta::{self, LogMeta};
use crate::format::manifest::{Record, Residency, SegmentEntry, Upload};
use crate::format::scan::{self, IndexBuilder, Scan};
use crate::format::segment::{self as fmt, align_down, align_up, SegmentHeader, TRAILER_BYTES};
use crate::format::tier1 as tier1_fmt;
use crate::limits::{BLOCK_SIZE, RECORD_BYTES_CEILING};
use crate::log::{Log, LogInner};
use crate::manifest::Manifest;
use crate::record::now_ns;
use crate::segment::{ActiveSegment, FileName, SealedSegment, Store};
use crate::staging::Staging;
use crate::tier1;
use glommio::io::{DmaFile, OpenOptions};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
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
    /// Segments the manifest knows whose local file is missing or unusable, with the state
    /// the manifest recorded.
    pub missing: Vec<MissingFile>,
    /// Human-readable notes: leftover files removed, where a scan stopped and why.
    pub notes: Vec<String>,
}

/// A segment file the manifest expects but start-up did not find (or could not use).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingFile {
    pub base: u64,
    /// The manifest state: "sealed" (raw file expected) or "tier1".
    pub state: String,
    pub detail: String,
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

/// Writes `log.meta` crash-safely.
pub fn write_meta(dir: &Path, meta: &LogMeta) -> Result<()> {
    write_file_atomic(dir, logmeta::FILE_NAME, &meta.encode())
}

/// Replaces `dir/name` with `bytes` crash-safely with blocking calls (start-up and log
/// creation only): `name.tmp`, fsync, rename, directory fsync.
pub fn write_file_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!("{name}.tmp"));
    let dst = dir.join(name);
    let mut f = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
    f.write_all(bytes).map_err(io("write", &tmp))?;
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
        name: FileName::Real,
        next_offset: base,
        end_pos: BLOCK_SIZE,
        staging: Staging::new(cfg.write_max_bytes()),
        disk_end: BLOCK_SIZE,
        // Created and fdatasync'ed above.
        durable_end: BLOCK_SIZE,
        inflight: VecDeque::new(),
        index: IndexBuilder::new(cfg.index_interval_bytes),
        data_crc: 0,
        frame_crc: Default::default(),
        first_timestamp_ns: 0,
        last_timestamp_ns: 0,
        first_append_at: None,
        seal_started: false,
        segment_size_bytes: cfg.segment_size_bytes,
        fresh_blocks: true,
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
            drained_at: None,
            spare: None,
            spare_wanted: false,
            spare_in_progress: false,
            recycled: Vec::new(),
            sync_in_flight: false,
            foreign: Default::default(),
            spare_error: None,
            roll_requested: false,
            syncs_seen: false,
            failed: None,
            failed_kind: None,
            closing: false,
            flusher_exited: false,
        }),
        changed: Event::default(),
        flusher_wake: Event::default(),
        spare_waited: Event::default(),
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

/// The files of one log directory, by base offset.
#[derive(Default)]
struct Listing {
    segs: BTreeMap<u64, PathBuf>,
    tier1: BTreeMap<u64, PathBuf>,
}

fn list_files(dir: &Path, log_id: u64, report: &mut RecoveryReport) -> Result<Listing> {
    let mut l = Listing::default();
    for e in std::fs::read_dir(dir).map_err(io("list log directory", dir))? {
        let e = e.map_err(io("list log directory", dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        if name.ends_with(".tmp") || name.contains(".t1.range-") {
            // Spare segments, half-written Tier1 files and metadata, bytes a ranged Tier2 read
            // left behind: never the only copy of acknowledged data.
            std::fs::remove_file(&path).map_err(io("remove leftover", &path))?;
            report.notes.push(format!("removed leftover {name}"));
            continue;
        }
        let (parsed, map) = match fmt::parse_file_name(&name) {
            Some(p) => (Some(p), &mut l.segs),
            None => (tier1_fmt::parse_file_name(&name), &mut l.tier1),
        };
        match parsed {
            Some((id, base)) if id == log_id => {
                map.insert(base, path);
            }
            Some(_) => report.notes.push(format!("ignored {name}: belongs to another log id")),
            None if name == logmeta::FILE_NAME => {}
            None => report.notes.push(format!("ignored unknown file {name}")),
        }
    }
    Ok(l)
}

fn remove(path: &Path, why: &str, report: &mut RecoveryReport) -> Result<()> {
    std::fs::remove_file(path).map_err(io("remove", path))?;
    report.notes.push(format!("removed {}: {why}", path.display()));
    Ok(())
}

/// Tries the seal trailer; `Ok(None)` means the segment is not (validly) sealed.
fn read_sealed(path: &Path, base: u64) -> Result<Option<(fmt::Trailer, Vec<fmt::IndexEntry>, u64)>> {
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
    Ok(Some((t, index, len)))
}

/// A log opened at start-up, and the sealed segments that still need Tier1 work.
pub struct Opened {
    pub log: Log,
    pub report: RecoveryReport,
    pub to_tier: Vec<u64>,
}

fn sealed_raw(
    t: &fmt::Trailer,
    index: Vec<fmt::IndexEntry>,
    path: PathBuf,
    file: Rc<DmaFile>,
    len: u64,
) -> SealedSegment {
    SealedSegment {
        base_offset: t.base_offset,
        next_offset: t.next_offset,
        data_end: t.data_end,
        path,
        store: Store::Raw(file),
        index,
        last_timestamp_ns: t.last_timestamp_ns,
        data_crc: t.data_crc,
        local_bytes: len,
        last_read: Cell::new(0),
    }
}

async fn sealed_tier1(path: PathBuf, l: tier1::Loaded, last_timestamp_ns: u64) -> Result<SealedSegment> {
    let file = open_dma(&path, false).await?;
    Ok(SealedSegment {
        base_offset: l.header.base_offset,
        next_offset: l.header.next_offset,
        data_end: l.header.data_end,
        path,
        index: SealedSegment::frame_index(&l.frames),
        store: Store::Tier1 {
            file,
            frames: Rc::new(l.frames),
            codec: l.header.codec,
        },
        last_timestamp_ns,
        data_crc: l.header.data_crc,
        local_bytes: l.file_len,
        last_read: Cell::new(0),
    })
}

/// A segment whose records are lost: it holds none (`next_offset == base`), so every read
/// in its range reports corruption and the gap to the next segment is a lost range.
fn missing(base: u64, dir: &Path) -> SealedSegment {
    SealedSegment {
        base_offset: base,
        next_offset: base,
        data_end: 0,
        path: dir.to_path_buf(),
        store: Store::Missing,
        index: Vec::new(),
        last_timestamp_ns: 0,
        data_crc: 0,
        local_bytes: 0,
        last_read: Cell::new(0),
    }
}

fn remote(base: u64, e: &SegmentEntry, dir: &Path) -> SealedSegment {
    SealedSegment {
        base_offset: base,
        next_offset: e.next_offset,
        data_end: e.data_end,
        path: dir.to_path_buf(),
        store: Store::Remote,
        index: Vec::new(),
        last_timestamp_ns: e.last_timestamp_ns,
        data_crc: e.data_crc,
        local_bytes: 0,
        last_read: Cell::new(0),
    }
}

/// Opens an existing log directory: reconciles its files with the shard manifest, verifies
/// sealed segments, and repairs the tail.
///
/// Reconciliation, per segment, trusts the manifest for what it recorded and the files for the
/// rest: files below the retention watermark or already replaced (raw after Tier1, any copy
/// after eviction) are removed; a Tier1 file the manifest does not know is removed if the raw
/// segment is still there (an interrupted compression, redone) and adopted if it is the only
/// copy; a missing file is reported with its manifest state, and its records are reported
/// lost unless Tier2 holds them.
pub async fn open_log(cfg: &Config, dir: PathBuf, manifest: &Manifest) -> Result<Opened> {
    let meta = read_meta(&dir)?;
    let mut report = RecoveryReport {
        log: meta.name.clone(),
        ..Default::default()
    };
    let mut files = list_files(&dir, meta.log_id, &mut report)?;
    let (entries, deleted_below) = {
        let st = manifest.state();
        let entries: BTreeMap<u64, SegmentEntry> = st
            .segments
            .range((meta.log_id, 0)..=(meta.log_id, u64::MAX))
            .map(|(&(_, b), e)| (b, e.clone()))
            .collect();
        (entries, st.logs.get(&meta.log_id).map_or(0, |l| l.deleted_below))
    };
    // Files left by a retention delete that was recorded but not finished.
    for map in [&mut files.segs, &mut files.tier1] {
        let below: Vec<u64> = map.range(..deleted_below).map(|(b, _)| *b).collect();
        for b in below {
            if let Some(p) = map.remove(&b) {
                remove(&p, "deleted by retention", &mut report)?;
            }
        }
    }
    let mut bases: Vec<u64> = files
        .segs
        .keys()
        .chain(files.tier1.keys())
        .chain(entries.keys())
        .copied()
        .collect();
    bases.sort_unstable();
    bases.dedup();
    let last_base = bases.last().copied();
    let mut sealed: Vec<SealedSegment> = Vec::new();
    let mut to_tier = Vec::new();
    let mut adopt = Vec::new();
    let mut tail: Option<(SegFile, Scan, Vec<u8>)> = None;
    for base in bases {
        let entry = entries.get(&base);
        let seg = files.segs.remove(&base);
        let t1 = files.tier1.remove(&base);
        if let Some(prev) = sealed.last() {
            if base < prev.next_offset {
                return Err(Error::Corruption {
                    path: seg.or(t1).unwrap_or_else(|| dir.clone()),
                    pos: 0,
                    detail: format!(
                        "segment base {base} overlaps the previous segment ending at {}",
                        prev.next_offset
                    ),
                });
            }
            if base > prev.next_offset {
                report.lost_ranges.push((prev.next_offset, base));
            }
        }
        if let Some(e) = entry {
            let uploaded = matches!(e.upload, Upload::Done(_));
            match e.residency {
                Residency::Tier2Only => {
                    for p in seg.iter().chain(t1.iter()) {
                        remove(p, "evicted to Tier2", &mut report)?;
                    }
                    sealed.push(remote(base, e, &dir));
                    continue;
                }
                Residency::Tier1 => {
                    let loaded = t1.as_ref().map(|p| tier1::load(p, meta.log_id, base));
                    match loaded {
                        Some(Ok(l)) if l.header.next_offset == e.next_offset => {
                            if let Some(p) = &seg {
                                remove(p, "already recompressed into Tier1", &mut report)?;
                            }
                            sealed.push(sealed_tier1(t1.expect("loaded"), l, e.last_timestamp_ns).await?);
                            continue;
                        }
                        other => {
                            let why = match other {
                                None => "missing".to_string(),
                                Some(Err(w)) => w,
                                Some(Ok(_)) => "for another range of records".into(),
                            };
                            report.missing.push(MissingFile {
                                base,
                                state: "tier1".into(),
                                detail: format!("tier1 file {why}"),
                            });
                            if let Some(p) = &t1 {
                                if seg.is_some() || uploaded {
                                    remove(p, "damaged tier1 file; another copy exists", &mut report)?;
                                }
                            }
                            // Fall through to the raw segment, if it is still there.
                            if seg.is_some() {
                                adopt.push(Record::Uncompressed {
                                    log_id: meta.log_id,
                                    base,
                                });
                            } else if uploaded {
                                adopt.push(Record::Evicted {
                                    log_id: meta.log_id,
                                    base,
                                });
                                sealed.push(remote(base, e, &dir));
                                continue;
                            } else {
                                sealed.push(missing(base, &dir));
                                continue;
                            }
                        }
                    }
                }
                Residency::Raw => {
                    if let Some(p) = &t1 {
                        if seg.is_some() {
                            remove(p, "interrupted compression; it is redone", &mut report)?;
                        }
                    }
                    if seg.is_none() {
                        if let Some(Ok(l)) = t1.as_ref().map(|p| tier1::load(p, meta.log_id, base)) {
                            adopt.push(Record::Compressed {
                                log_id: meta.log_id,
                                base,
                                file_len: l.file_len,
                                file_crc: tier1::file_crc(t1.as_ref().expect("loaded")).map_err(|d| {
                                    Error::Corruption {
                                        path: t1.clone().unwrap_or_default(),
                                        pos: 0,
                                        detail: d,
                                    }
                                })?,
                                codec: l.header.codec as u32,
                                level: l.header.level,
                            });
                            sealed.push(sealed_tier1(t1.expect("loaded"), l, e.last_timestamp_ns).await?);
                            continue;
                        }
                        report.missing.push(MissingFile {
                            base,
                            state: "sealed".into(),
                            detail: "segment file missing".into(),
                        });
                        if uploaded {
                            adopt.push(Record::Evicted {
                                log_id: meta.log_id,
                                base,
                            });
                            sealed.push(remote(base, e, &dir));
                        } else {
                            sealed.push(missing(base, &dir));
                        }
                        continue;
                    }
                }
            }
        } else if let Some(p) = &t1 {
            // A Tier1 file the manifest never recorded: an interrupted compression if the raw
            // segment is still here (redone), else the only copy (adopted once it verifies).
            if seg.is_some() {
                remove(p, "interrupted compression; it is redone", &mut report)?;
            } else {
                match tier1::load(p, meta.log_id, base) {
                    Ok(l) => {
                        report
                            .notes
                            .push(format!("{}: adopted tier1 file the manifest did not know", p.display()));
                        adopt.push(Record::Sealed {
                            log_id: meta.log_id,
                            base,
                            next_offset: l.header.next_offset,
                            data_end: l.header.data_end,
                            data_crc: l.header.data_crc,
                            last_timestamp_ns: 0,
                        });
                        adopt.push(Record::Compressed {
                            log_id: meta.log_id,
                            base,
                            file_len: l.file_len,
                            file_crc: tier1::file_crc(p).map_err(|d| Error::Corruption {
                                path: p.clone(),
                                pos: 0,
                                detail: d,
                            })?,
                            codec: l.header.codec as u32,
                            level: l.header.level,
                        });
                        sealed.push(sealed_tier1(t1.expect("checked"), l, 0).await?);
                    }
                    Err(why) => {
                        report.notes.push(format!(
                            "{}: unusable tier1 file kept for inspection: {why}",
                            p.display()
                        ));
                        // Its records existed and cannot be served: they are lost up to the
                        // next segment (reported there), never a log that silently starts
                        // later. With nothing after it, where its records ended is unknown,
                        // and any new offset might reuse one: refuse rather than guess.
                        if Some(base) == last_base {
                            return Err(Error::Corruption {
                                path: p.clone(),
                                pos: 0,
                                detail: format!("the log's last segment is an unusable tier1 file the manifest does not know ({why}); where its records end is unknown: restore the file or the manifest, or move the file away to give its records up"),
                            });
                        }
                        report.missing.push(MissingFile {
                            base,
                            state: "tier1".into(),
                            detail: format!("unusable tier1 file the manifest does not know: {why}"),
                        });
                        sealed.push(missing(base, &dir));
                    }
                }
                continue;
            }
        }
        let Some(path) = seg else {
            continue;
        };
        let sf = SegFile { base, path };
        let last = Some(base) == last_base;
        if let Some((t, index, len)) = read_sealed(&sf.path, sf.base)? {
            let file = open_dma(&sf.path, false).await?;
            if entry.is_none_or(|e| e.residency == Residency::Raw || seg_reverted(&adopt, base)) {
                to_tier.push(base);
            }
            sealed.push(sealed_raw(&t, index, sf.path, file, len));
            continue;
        }
        // An unsealed (or damaged) segment is read whole and scanned, with ordinary reads: the
        // page cache is coherent with the O_DIRECT writes that made it, and start-up is not on
        // the latency path.
        let bytes = std::fs::read(&sf.path).map_err(io("read segment", &sf.path))?;
        report.scanned += 1;
        if let Ok(h) = SegmentHeader::decode(&bytes) {
            // The unsealed last segment is cut at the end of its valid frames; if its header
            // names another segment (files renamed or swapped by hand), "its" frames are
            // someone else's, and cutting would destroy them. Refuse and change nothing.
            if last && entry.is_none() && (h.log_id != meta.log_id || h.base_offset != sf.base) {
                return Err(Error::Corruption {
                    path: sf.path.clone(),
                    pos: 0,
                    detail: format!(
                        "the header of the log's last segment says log {:016x} base {}, its name says log {:016x} base {}: put the file back under its own name",
                        h.log_id, h.base_offset, meta.log_id, sf.base
                    ),
                });
            }
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
            let clean = why.is_clean_end() || why.is_earlier_life(sf.base);
            if !clean || !last {
                report
                    .notes
                    .push(format!("{}: scan stopped at byte {pos}: {why:?}", sf.path.display()));
            }
        }
        if last && entry.is_none() {
            tail = Some((sf, s, bytes));
        } else {
            // A sealed segment whose seal does not verify: keep its valid prefix; anything
            // after it up to the next segment is reported lost, never invented. It stays raw
            // (its seal cannot vouch for its bytes, so it is not recompressed).
            let file = open_dma(&sf.path, false).await?;
            sealed.push(SealedSegment {
                base_offset: sf.base,
                next_offset: s.next_offset,
                data_end: s.data_end,
                path: sf.path,
                store: Store::Raw(file),
                index: s.index,
                last_timestamp_ns: s.last_timestamp_ns,
                data_crc: s.data_crc,
                local_bytes: bytes.len() as u64,
                last_read: Cell::new(0),
            });
        }
    }
    if !adopt.is_empty() {
        manifest.append(&adopt).await?;
    }
    let first = sealed
        .first()
        .map(|s| s.base_offset)
        .or(tail.as_ref().map(|t| t.0.base))
        .unwrap_or(deleted_below)
        .max(deleted_below);
    let tail_base = tail.as_ref().map(|t| t.0.base);
    // Where a new segment may start: after every record the manifest knows was sealed, even
    // if the copy here now ends earlier (a damaged seal falls back to the scan, which keeps
    // the valid prefix only). Starting lower would hand out acknowledged offsets again; the
    // records in between are reported lost below.
    let next_base = |sealed: &[SealedSegment], otherwise: u64| {
        let known = entries.values().map(|e| e.next_offset).max().unwrap_or(0);
        sealed.last().map_or(otherwise, |s| s.next_offset).max(known)
    };
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
            let base = next_base(&sealed, sf.base);
            let (path, file) = create_segment(cfg, &dir, meta.log_id, base).await?;
            fresh_active(cfg, base, path, file)
        }
        None => {
            let base = next_base(&sealed, deleted_below);
            let (path, file) = create_segment(cfg, &dir, meta.log_id, base).await?;
            fresh_active(cfg, base, path, file)
        }
    };
    // The loop above counted a gap in front of every base, the unsealed tail's too; that one
    // is decided here, where the tail is kept at its base (the gap stands, counted once) or
    // removed as empty (the log goes on from the previous segment: nothing is lost).
    if let Some(tail_base) = tail_base {
        report.lost_ranges.retain(|&(_, end)| end != tail_base);
    }
    if let Some(prev) = sealed.last() {
        if active.base_offset > prev.next_offset {
            report.lost_ranges.push((prev.next_offset, active.base_offset));
        }
    }
    report.segments = sealed.len() + 1;
    report.next_offset = active.next_offset;
    let log = new_log(&meta, dir, sealed, active, first);
    Ok(Opened { log, report, to_tier })
}

fn seg_reverted(adopt: &[Record], base: u64) -> bool {
    adopt
        .iter()
        .any(|r| matches!(r, Record::Uncompressed { base: b, .. } if *b == base))
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
    // In a reused file, an earlier life's frames lie past this segment's data: they are not
    // counted as cut (a clean close would otherwise look like damage at every restart).
    let data = bytes.get(BLOCK_SIZE as usize..).unwrap_or(&[]);
    let from = (valid_end - BLOCK_SIZE) as usize;
    let used_end = match scan::reused_tail_end(data, from, sf.base, RECORD_BYTES_CEILING) {
        Some(own) => BLOCK_SIZE + own as u64,
        None => last_nonzero(bytes),
    }
    .max(valid_end);
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
    let tail = &bytes[stage_pos as usize..valid_end as usize];
    // Rewrite the tail block with zeros after the valid end, drop the blocks past it, then
    // preallocate again (fresh zeroed space) and sync before anything new is acknowledged.
    if valid_end > stage_pos {
        let mut buf = file.alloc_dma_buffer(BLOCK_SIZE as usize);
        buf.as_bytes_mut().fill(0);
        buf.as_bytes_mut()[..tail.len()].copy_from_slice(tail);
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
    // Past the data the blocks are new (cut at the valid end and preallocated again), so the
    // partial tail block is rewritten by a write of its own.
    let mut staging = Staging::new(cfg.write_max_bytes());
    if !tail.is_empty() {
        staging.resume(&file, stage_pos, tail, true);
    }
    Ok(ActiveSegment {
        base_offset: sf.base,
        path: sf.path,
        file,
        name: FileName::Real,
        next_offset: s.next_offset,
        end_pos: valid_end,
        staging,
        disk_end: valid_end,
        // Cut to its valid end and fdatasync'ed above.
        durable_end: valid_end,
        inflight: VecDeque::new(),
        index: IndexBuilder::from_entries(cfg.index_interval_bytes, s.index),
        data_crc: s.data_crc,
        frame_crc: Default::default(),
        first_timestamp_ns: s.first_timestamp_ns,
        last_timestamp_ns: s.last_timestamp_ns,
        first_append_at: None,
        seal_started: false,
        segment_size_bytes: cfg.segment_size_bytes.max(align_up(valid_end)),
        // Cut at the valid end and preallocated again: past the data, the blocks are new.
        fresh_blocks: true,
    })
}

fn last_nonzero(bytes: &[u8]) -> u64 {
    bytes.iter().rposition(|&b| b != 0).map(|p| p as u64 + 1).unwrap_or(0)
}
