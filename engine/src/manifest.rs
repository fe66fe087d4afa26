//! The shard's manifest at run time: replayed at start, appended (write + fdatasync) before
//! every lifecycle step it guards, and compacted into a snapshot (temp file, fsync, rename,
//! directory fsync) once the log grows. The encoding and the meaning of records are in
//! `format/manifest.rs`.
//!
//! Rule for callers: append the record first, act second. A record is applied to the
//! in-memory state only after it is durable, so the state never runs ahead of the disk, and a
//! crash between the record and the action leaves a state that start-up reconciliation
//! finishes (see `recovery.rs`).

use crate::error::{Error, Result};
use crate::event::Event;
use crate::format::manifest::{
    decode_file_header, decode_records, encode_file_header, Record, State, Stop, FILE_HEADER_BYTES, LOG_FILE,
    LOG_MAGIC, SNAP_FILE, SNAP_MAGIC,
};
use glommio::io::{BufferedFile, OpenOptions};
use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;

pub struct Manifest {
    dir: PathBuf,
    state: RefCell<State>,
    file: RefCell<Option<Rc<BufferedFile>>>,
    /// Where the next record goes in `manifest.log`.
    len: Cell<u64>,
    generation: Cell<u64>,
    since_snapshot: Cell<u64>,
    compact_after: u64,
    busy: Cell<bool>,
    idle: Event,
    pub records_written: Cell<u64>,
    pub compactions: Cell<u64>,
}

/// What replay found, for the recovery report.
pub struct Replay {
    pub notes: Vec<String>,
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |e| Error::io(op, path, e)
}

fn corrupt(path: &Path, detail: String) -> Error {
    Error::Corruption {
        path: path.to_path_buf(),
        pos: 0,
        detail,
    }
}

impl Manifest {
    /// Replays `manifest.snap` and `manifest.log` in `dir` with ordinary blocking reads (start-up
    /// only). A torn or damaged tail of the log is cut off; a damaged snapshot or log header
    /// is an error, because each was written whole and renamed into place.
    pub fn replay(dir: &Path, compact_after: u64) -> Result<(Manifest, Replay)> {
        let mut notes = Vec::new();
        let mut state = State::default();
        let snap_path = dir.join(SNAP_FILE);
        let mut generation = 0;
        match std::fs::read(&snap_path) {
            Ok(b) => {
                generation = decode_file_header(&b, SNAP_MAGIC).map_err(|d| corrupt(&snap_path, d.into()))?;
                let (recs, _, stop) = decode_records(&b[FILE_HEADER_BYTES..]);
                if stop.is_some() {
                    return Err(corrupt(&snap_path, "snapshot record does not verify".into()));
                }
                recs.iter().for_each(|r| state.apply(r));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("read manifest snapshot", &snap_path, e)),
        }
        let log_path = dir.join(LOG_FILE);
        let mut count = 0;
        let valid_len = match std::fs::read(&log_path) {
            Ok(b) => match decode_file_header(&b, LOG_MAGIC) {
                Ok(g) if g == generation => {
                    let (recs, len, stop) = decode_records(&b[FILE_HEADER_BYTES..]);
                    recs.iter().for_each(|r| state.apply(r));
                    count = recs.len() as u64;
                    if let Some(stop) = stop {
                        let cut = b.len() - FILE_HEADER_BYTES - len;
                        if stop == Stop::Damaged || b[FILE_HEADER_BYTES + len..].iter().any(|&x| x != 0) {
                            notes.push(format!(
                                "manifest: {stop:?} record at byte {}: cut {cut} bytes, kept {} records",
                                FILE_HEADER_BYTES + len,
                                recs.len()
                            ));
                        }
                    }
                    Some((FILE_HEADER_BYTES + len) as u64)
                }
                Ok(g) => {
                    notes.push(format!(
                        "manifest: log of generation {g} is older than snapshot {generation}; ignored"
                    ));
                    None
                }
                // The header was written whole and renamed into place (as the snapshot was), so
                // only media damage gets here; starting a new log would forget every record
                // after the snapshot, Tier2-only segments among them, whose data is nowhere
                // else on this machine. Refuse, as for a damaged snapshot.
                Err(d) => return Err(corrupt(&log_path, format!("manifest log header: {d}"))),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io("read manifest", &log_path, e)),
        };
        let len = match valid_len {
            Some(len) => {
                // Cut whatever follows the last good record, so new records are never
                // appended after damage.
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&log_path)
                    .map_err(io("open manifest", &log_path))?;
                if f.metadata().map_err(io("stat manifest", &log_path))?.len() != len {
                    f.set_len(len).map_err(io("truncate manifest", &log_path))?;
                    f.sync_all().map_err(io("fsync manifest", &log_path))?;
                }
                len
            }
            None => {
                crate::recovery::write_file_atomic(dir, LOG_FILE, &encode_file_header(LOG_MAGIC, generation))?;
                FILE_HEADER_BYTES as u64
            }
        };
        for leftover in [format!("{SNAP_FILE}.tmp"), format!("{LOG_FILE}.tmp")] {
            let p = dir.join(&leftover);
            if p.exists() {
                std::fs::remove_file(&p).map_err(io("remove leftover", &p))?;
                notes.push(format!("manifest: removed leftover {leftover}"));
            }
        }
        let m = Manifest {
            dir: dir.to_path_buf(),
            state: RefCell::new(state),
            file: RefCell::new(None),
            len: Cell::new(len),
            generation: Cell::new(generation),
            since_snapshot: Cell::new(count),
            compact_after: compact_after.max(1),
            busy: Cell::new(false),
            idle: Event::default(),
            records_written: Cell::new(0),
            compactions: Cell::new(0),
        };
        Ok((m, Replay { notes }))
    }

    pub fn state(&self) -> std::cell::Ref<'_, State> {
        self.state.borrow()
    }

    /// Makes `recs` durable, then applies them. Serialized with every other append and with
    /// compaction.
    pub async fn append(&self, recs: &[Record]) -> Result<()> {
        self.lock().await;
        let r = self.append_locked(recs).await;
        let r = match r {
            Ok(()) if self.since_snapshot.get() >= self.compact_after => self.compact_locked().await,
            r => r,
        };
        self.unlock();
        r
    }

    async fn lock(&self) {
        self.idle
            .wait_for(|| {
                if self.busy.get() {
                    None
                } else {
                    self.busy.set(true);
                    Some(())
                }
            })
            .await
    }

    fn unlock(&self) {
        self.busy.set(false);
        self.idle.notify_all();
    }

    async fn file(&self) -> Result<Rc<BufferedFile>> {
        if let Some(f) = self.file.borrow().as_ref() {
            return Ok(f.clone());
        }
        let p = self.dir.join(LOG_FILE);
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .buffered_open(&p)
            .await
            .map_err(|e| Error::glommio("open manifest", &p, e))?;
        let f = Rc::new(f);
        *self.file.borrow_mut() = Some(f.clone());
        Ok(f)
    }

    async fn append_locked(&self, recs: &[Record]) -> Result<()> {
        let mut bytes = Vec::new();
        for r in recs {
            r.encode_into(&mut bytes);
        }
        let f = self.file().await?;
        let p = self.dir.join(LOG_FILE);
        let pos = self.len.get();
        write_all(&f, bytes.clone(), pos, &p).await?;
        f.fdatasync()
            .await
            .map_err(|e| Error::glommio("fdatasync manifest", &p, e))?;
        self.len.set(pos + bytes.len() as u64);
        let mut s = self.state.borrow_mut();
        recs.iter().for_each(|r| s.apply(r));
        self.since_snapshot.set(self.since_snapshot.get() + recs.len() as u64);
        self.records_written.set(self.records_written.get() + recs.len() as u64);
        Ok(())
    }

    async fn compact_locked(&self) -> Result<()> {
        let g = self.generation.get() + 1;
        let mut snap = encode_file_header(SNAP_MAGIC, g);
        for r in self.state.borrow().to_records() {
            r.encode_into(&mut snap);
        }
        // The snapshot takes over first; only then is the log replaced. A crash in between
        // leaves a log of the old generation, which replay ignores.
        write_whole_async(&self.dir, SNAP_FILE, snap).await?;
        let old = self.file.borrow_mut().take();
        close_file(old).await;
        write_whole_async(&self.dir, LOG_FILE, encode_file_header(LOG_MAGIC, g)).await?;
        self.generation.set(g);
        self.len.set(FILE_HEADER_BYTES as u64);
        self.since_snapshot.set(0);
        self.compactions.set(self.compactions.get() + 1);
        Ok(())
    }

    pub async fn close(&self) {
        self.lock().await;
        let f = self.file.borrow_mut().take();
        close_file(f).await;
        self.unlock();
    }
}

/// Closes the manifest file if this was its last user (all users hold the manifest lock, so
/// it is).
async fn close_file(f: Option<Rc<BufferedFile>>) {
    if let Some(f) = f.and_then(|f| Rc::try_unwrap(f).ok()) {
        let _ = f.close().await;
    }
}

async fn write_all(f: &BufferedFile, mut bytes: Vec<u8>, mut pos: u64, path: &Path) -> Result<()> {
    while !bytes.is_empty() {
        let n = f
            .write_at(bytes.clone(), pos)
            .await
            .map_err(|e| Error::glommio("write manifest", path, e))?;
        if n == 0 {
            return Err(Error::io(
                "write manifest",
                path,
                std::io::Error::from(std::io::ErrorKind::StorageFull),
            ));
        }
        bytes.drain(..n);
        pos += n as u64;
    }
    Ok(())
}

/// Replaces `dir/name` with `bytes` crash-safely through the shard's io_uring: temp file,
/// fdatasync, rename, directory fsync.
async fn write_whole_async(dir: &Path, name: &str, bytes: Vec<u8>) -> Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let dst = dir.join(name);
    let f = BufferedFile::create(&tmp)
        .await
        .map_err(|e| Error::glommio("create", &tmp, e))?;
    let r = async {
        write_all(&f, bytes, 0, &tmp).await?;
        f.fdatasync().await.map_err(|e| Error::glommio("fdatasync", &tmp, e))
    }
    .await;
    let _ = f.close().await;
    if let Err(e) = r {
        let _ = crate::fsops::remove(&tmp).await;
        return Err(e);
    }
    crate::fsops::rename(&tmp, &dst).await?;
    crate::fsops::sync_dir(dir).await
}
