//! The read path: point reads and scans over sealed segments (disk), rolled and active
//! segments (disk and write buffers), always through a verified frame.

use crate::error::{Error, Result};
use crate::format::segment::IndexEntry;
use crate::format::tier1::{self as tier1_fmt, Codec, FrameEntry};
use crate::limits::FRAME_HEADER_BYTES;
use crate::log::{Log, LogInner};
use crate::record::Record;
use crate::segment::{decode_record, locate, read_disk, skip_len, Store};
use crate::shard::ShardCore;
use crate::tier1;
use glommio::io::DmaFile;
use std::path::PathBuf;
use std::rc::Rc;

/// Where a record lives: the segment's base, the index entry to walk from, and the first
/// offset past that segment's readable records.
struct Found {
    base: u64,
    entry: IndexEntry,
    seg_next: u64,
}

/// A read of bytes from a segment, planned while the log is borrowed and then performed
/// without the borrow.
enum Fetch {
    /// The disk part (final bytes below the memory floor) plus a copy of the part held in
    /// memory.
    Bytes {
        disk: Option<(Rc<DmaFile>, u64, usize, u64)>,
        mem: Vec<u8>,
        path: PathBuf,
    },
    /// The rest of one Tier1 frame from `pos`: from the hot cache, or read and decoded.
    Frame {
        file: Rc<DmaFile>,
        frames: Rc<Vec<FrameEntry>>,
        codec: Codec,
        idx: usize,
        pos: u64,
        path: PathBuf,
    },
    /// Evicted to Tier2 since the read started.
    Remote,
}

impl LogInner {
    fn find(&self, log: &str, offset: u64) -> Result<Found> {
        let visible = self.visible_upto();
        if offset < self.first_offset || offset >= visible {
            return Err(Error::OffsetOutOfRange {
                log: log.to_owned(),
                offset,
                first: self.first_offset,
                next: visible,
            });
        }
        for s in std::iter::once(&self.active).chain(self.rolled.iter()) {
            if s.base_offset <= offset && offset < s.next_offset {
                let entry = locate(s.index_entries(), offset).expect("open segment indexes its first record");
                return Ok(Found {
                    base: s.base_offset,
                    entry,
                    seg_next: s.next_offset,
                });
            }
        }
        let i = self.sealed.partition_point(|s| s.base_offset <= offset);
        if i > 0 {
            let s = &self.sealed[i - 1];
            if offset < s.next_offset && matches!(s.store, Store::Remote) {
                return Err(Error::NotLocal {
                    log: log.to_owned(),
                    offset,
                });
            }
            if offset < s.next_offset {
                if let Some(entry) = locate(&s.index, offset) {
                    return Ok(Found {
                        base: s.base_offset,
                        entry,
                        seg_next: s.next_offset,
                    });
                }
            }
            return Err(Error::Corruption {
                path: s.path.clone(),
                pos: s.data_end,
                detail: format!(
                    "record {offset} was lost to damage found at recovery (segment readable up to {})",
                    s.next_offset
                ),
            });
        }
        Err(Error::OffsetOutOfRange {
            log: log.to_owned(),
            offset,
            first: self.first_offset,
            next: visible,
        })
    }

    fn plan_fetch(&self, base: u64, pos: u64, len: usize, tick: u64) -> Option<Fetch> {
        if let Some(s) = self.open_segment(base) {
            let end = (pos + len as u64).min(s.end_pos);
            let floor = s.memory_floor().max(pos).min(end);
            let mem = s.read_memory(floor, (end - floor) as usize)?;
            let disk = (pos < floor).then(|| (s.file.clone(), pos, (floor - pos) as usize, floor));
            return Some(Fetch::Bytes {
                disk,
                mem,
                path: s.path.clone(),
            });
        }
        let i = self.sealed.partition_point(|s| s.base_offset <= base);
        let s = self.sealed.get(i.checked_sub(1)?)?;
        if s.base_offset != base {
            return None;
        }
        s.last_read.set(tick);
        Some(match &s.store {
            Store::Raw(file) => Fetch::Bytes {
                disk: Some((file.clone(), pos, len, s.data_end)),
                mem: Vec::new(),
                path: s.path.clone(),
            },
            Store::Tier1 { file, frames, codec } => Fetch::Frame {
                idx: tier1_fmt::frame_at(frames, pos)?,
                file: file.clone(),
                frames: frames.clone(),
                codec: *codec,
                pos,
                path: s.path.clone(),
            },
            Store::Remote => Fetch::Remote,
            Store::Missing => return None,
        })
    }
}

/// A failed fetch after some records were read hands those back (`None`); the next read,
/// starting at the failed record, reports the error.
fn partial<T>(r: Result<T>, out: &[Record]) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(_) if !out.is_empty() => Ok(None),
        Err(e) => Err(e),
    }
}

impl Log {
    /// Bytes of segment `base` from `pos` (at least up to the next record boundary), while
    /// reading record `offset`.
    async fn fetch(
        &self,
        core: &ShardCore,
        base: u64,
        pos: u64,
        len: usize,
        offset: u64,
    ) -> Result<(Vec<u8>, PathBuf)> {
        let plan = self.inner.borrow().plan_fetch(base, pos, len, core.tick());
        match plan {
            None => {
                let i = self.inner.borrow();
                if base < i.first_offset {
                    // Removed by retention while this read was under way.
                    return Err(Error::OffsetOutOfRange {
                        log: self.name.clone(),
                        offset,
                        first: i.first_offset,
                        next: i.visible_upto(),
                    });
                }
                Err(Error::Corruption {
                    path: self.dir.clone(),
                    pos,
                    detail: format!("segment {base} vanished during a read"),
                })
            }
            Some(Fetch::Remote) => Err(Error::NotLocal {
                log: self.name.clone(),
                offset,
            }),
            Some(Fetch::Bytes { disk, mem, path }) => {
                let mut out = match &disk {
                    Some((file, p, l, limit)) => read_disk(file, &path, *p, *l, *limit).await?,
                    None => Vec::new(),
                };
                out.extend_from_slice(&mem);
                Ok((out, path))
            }
            Some(Fetch::Frame {
                file,
                frames,
                codec,
                idx,
                pos,
                path,
            }) => {
                let key = (self.id, base, idx as u32);
                let hit = core.hot.borrow_mut().get(&key);
                let bytes = match hit {
                    Some(b) => b,
                    None => {
                        let b = Rc::new(tier1::read_frame(&file, &path, &frames[idx], codec).await?);
                        core.hot.borrow_mut().insert(key, b.clone(), core.hot_allowance());
                        b
                    }
                };
                let start = (pos - frames[idx].raw_pos) as usize;
                Ok((bytes[start..].to_vec(), path))
            }
        }
    }

    /// Reads up to `max_records` records (at least one if `from` is readable) starting at
    /// `from`, stopping before `max_bytes` of payload would be passed.
    pub(crate) async fn read_from(
        &self,
        core: &ShardCore,
        from: u64,
        max_records: usize,
        max_bytes: usize,
        max_payload: u32,
        window: usize,
    ) -> Result<Vec<Record>> {
        let visible = {
            let i = self.inner.borrow();
            let visible = i.visible_upto();
            if from < i.first_offset || from >= visible {
                return Err(Error::OffsetOutOfRange {
                    log: self.name.clone(),
                    offset: from,
                    first: i.first_offset,
                    next: visible,
                });
            }
            visible
        };
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut offset = from;
        let mut first = true;
        while out.len() < max_records && offset < visible {
            let found = match self.inner.borrow().find(&self.name, offset) {
                Ok(f) => f,
                Err(e) if first || out.is_empty() => return Err(e),
                Err(_) => break,
            };
            first = false;
            let seg_end = found.seg_next.min(visible);
            let Some((mut buf, mut path)) = partial(
                self.fetch(core, found.base, found.entry.pos, window, offset).await,
                &out,
            )?
            else {
                return Ok(out);
            };
            let mut buf_pos = found.entry.pos;
            let mut pos = found.entry.pos;
            let mut cur = found.entry.offset;
            while cur < seg_end && out.len() < max_records {
                let rel = (pos - buf_pos) as usize;
                if buf.len() < rel + FRAME_HEADER_BYTES {
                    let Some(f) = partial(self.fetch(core, found.base, pos, window, cur).await, &out)? else {
                        return Ok(out);
                    };
                    (buf, path) = f;
                    buf_pos = pos;
                    if buf.len() < FRAME_HEADER_BYTES {
                        return Err(self.corrupt(&path, pos, cur, "frame header past the end of the data"));
                    }
                    continue;
                }
                let Some(flen) = skip_len(&buf[rel..], max_payload) else {
                    if !out.is_empty() {
                        return Ok(out);
                    }
                    return Err(self.corrupt(&path, pos, cur, "bad frame header"));
                };
                if cur < offset {
                    pos += flen;
                    cur += 1;
                    continue;
                }
                if buf.len() < rel + flen as usize {
                    let len = (flen as usize).max(window);
                    let Some(f) = partial(self.fetch(core, found.base, pos, len, cur).await, &out)? else {
                        return Ok(out);
                    };
                    (buf, path) = f;
                    buf_pos = pos;
                    if buf.len() < flen as usize {
                        return Err(self.corrupt(&path, pos, cur, "frame runs past the end of the data"));
                    }
                    continue;
                }
                let rel = (pos - buf_pos) as usize;
                let rec = match decode_record(&buf[rel..rel + flen as usize], cur, max_payload, &path, pos) {
                    Ok(r) => r,
                    // Hand back the good records first; the next read from here reports it.
                    Err(_) if !out.is_empty() => return Ok(out),
                    Err(e) => return Err(e),
                };
                if !out.is_empty() && bytes + rec.payload.len() > max_bytes {
                    return Ok(out);
                }
                bytes += rec.payload.len();
                out.push(rec);
                pos += flen;
                cur += 1;
                offset = cur;
            }
            offset = offset.max(cur);
        }
        Ok(out)
    }

    fn corrupt(&self, path: &std::path::Path, pos: u64, offset: u64, what: &str) -> Error {
        Error::Corruption {
            path: path.to_path_buf(),
            pos,
            detail: format!("reading record {offset}: {what}"),
        }
    }

    /// Waits until `offset` is visible (or the log fails or the shard closes).
    pub(crate) async fn wait_visible(&self, offset: u64, closing: &std::cell::Cell<bool>) -> Result<()> {
        self.changed
            .wait_for(|| {
                let i = self.inner.borrow();
                if i.visible_upto() > offset {
                    Some(Ok(()))
                } else if closing.get() {
                    Some(Err(Error::ShuttingDown))
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
}
