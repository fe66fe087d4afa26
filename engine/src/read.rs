//! The read path: point reads and scans over sealed segments (disk), rolled and active
//! segments (disk and write buffers), always through a verified frame.

use crate::error::{Error, Result};
use crate::format::segment::IndexEntry;
use crate::limits::FRAME_HEADER_BYTES;
use crate::log::{Log, LogInner};
use crate::record::Record;
use crate::segment::{decode_record, locate, read_disk, skip_len};
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
/// without the borrow: the disk part (final bytes below the memory floor) plus a copy of the
/// part held in memory.
struct Fetch {
    disk: Option<(Rc<DmaFile>, u64, usize, u64)>,
    mem: Vec<u8>,
    path: PathBuf,
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

    fn plan_fetch(&self, base: u64, pos: u64, len: usize) -> Option<Fetch> {
        if let Some(s) = self.open_segment(base) {
            let end = (pos + len as u64).min(s.end_pos);
            let floor = s.memory_floor().max(pos).min(end);
            let mut mem = Vec::with_capacity((end - floor) as usize);
            let mut at = floor;
            while at < end {
                // Prefer the write buffer: it holds the newest copy of the tail block.
                let chunk_end = if at >= s.stage_pos { end } else { end.min(s.stage_pos) };
                let bytes = s.read_memory(at, (chunk_end - at) as usize)?;
                mem.extend_from_slice(&bytes);
                at = chunk_end;
            }
            let disk = (pos < floor).then(|| (s.file.clone(), pos, (floor - pos) as usize, floor));
            return Some(Fetch {
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
        Some(Fetch {
            disk: Some((s.file.clone(), pos, len, s.data_end)),
            mem: Vec::new(),
            path: s.path.clone(),
        })
    }
}

impl Log {
    async fn fetch(&self, base: u64, pos: u64, len: usize) -> Result<(Vec<u8>, PathBuf)> {
        let plan = self.inner.borrow().plan_fetch(base, pos, len);
        let Some(plan) = plan else {
            return Err(Error::Corruption {
                path: self.dir.clone(),
                pos,
                detail: format!("segment {base} vanished during a read"),
            });
        };
        let mut out = match &plan.disk {
            Some((file, p, l, limit)) => read_disk(file, &plan.path, *p, *l, *limit).await?,
            None => Vec::new(),
        };
        out.extend_from_slice(&plan.mem);
        Ok((out, plan.path))
    }

    /// Reads up to `max_records` records (at least one if `from` is readable) starting at
    /// `from`, stopping before `max_bytes` of payload would be passed.
    pub(crate) async fn read_from(
        &self,
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
            let (mut buf, mut path) = self.fetch(found.base, found.entry.pos, window).await?;
            let mut buf_pos = found.entry.pos;
            let mut pos = found.entry.pos;
            let mut cur = found.entry.offset;
            while cur < seg_end && out.len() < max_records {
                let rel = (pos - buf_pos) as usize;
                if buf.len() < rel + FRAME_HEADER_BYTES {
                    (buf, path) = self.fetch(found.base, pos, window).await?;
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
                    (buf, path) = self.fetch(found.base, pos, (flen as usize).max(window)).await?;
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
