//! File-system metadata operations for code running on a shard: rename, unlink and directory
//! fsync go through glommio's blocking pool or io_uring, never block the shard's thread. A
//! directory fsync forces a journal commit and unlinking a large file frees its extents; both
//! take milliseconds, which is what an append waiting behind them would see. Deleting a data
//! file also keeps the freeing of its blocks off the shard (`delete_data_file`).

use crate::error::{Error, Result};
use glommio::io::DmaFile;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Blocks freed per truncation when a raw segment is deleted (see `delete_data_file`).
const FREE_STEP: u64 = 4 << 20;

/// How long a deletion waits for reads in flight to let go of the file's handle.
const READERS_WAIT: Duration = Duration::from_secs(10);

pub async fn rename(from: &Path, to: &Path) -> Result<()> {
    glommio::io::rename(from, to)
        .await
        .map_err(|e| Error::glommio("rename", to, e))
}

pub async fn remove(path: &Path) -> Result<()> {
    glommio::io::remove(path)
        .await
        .map_err(|e| Error::glommio("remove", path, e))
}

pub async fn sync_dir(dir: &Path) -> Result<()> {
    let d = glommio::io::Directory::open(dir)
        .await
        .map_err(|e| Error::glommio("open directory", dir, e))?;
    let r = d.sync().await.map_err(|e| Error::glommio("fsync directory", dir, e));
    let _ = d.close().await;
    r
}

/// How a data file's blocks are freed (`delete_data_file`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Free {
    /// On the last close, off the shard. For files another process may still read (Tier1
    /// files, which the bridge uploads): its reference then keeps the data until it is done.
    OnClose,
    /// Truncated away `FREE_STEP` at a time first, at most this many bytes a second (`None`:
    /// unpaced). For raw segments, which nothing outside the engine reads.
    Truncate(Option<u64>),
}

/// Deletes a data file (`file` is this shard's handle to it) without freeing its blocks on the
/// shard's thread.
///
/// A file's blocks are freed when the last reference to it goes, and that was the shard's
/// close of its handle: the close runs on the shard's thread. On ext4 mounted with `discard`
/// the freeing is a synchronous discard of the whole file, measured here at 12-14 ms for a
/// 64 MiB segment, with every task on the shard (Memory appends included) stalled behind it,
/// each time a raw segment was replaced by its Tier1 copy or removed by retention.
///
/// So, once no read in flight on this shard holds the handle (new reads cannot find it: the
/// caller has already taken the file out of the log), another reference is opened on glommio's
/// blocking pool, the shard's handle is closed and the name unlinked, and that reference is
/// dropped on the pool, where the freeing then runs. With `Free::Truncate` the file is first
/// truncated `FREE_STEP` at a time on the pool, paced like the rest of the tiering I/O: each
/// discard is then short and rare, so this shard's fdatasyncs, queued on the same device, wait
/// behind one step at most. Unpaced, one 64 MiB deletion delayed every fdatasync for 13 ms
/// (Synced x16 p99.9 ~2.5 ms against ~1 ms); in one go, it made one wait 13 ms.
///
/// Returns whether the blocks were freed off the shard (false: a read held the handle for
/// `READERS_WAIT`, or the pool could not open the file; it was deleted all the same).
pub async fn delete_data_file(path: &Path, file: Rc<DmaFile>, free: Free) -> Result<bool> {
    let keep = if sole_holder(&file).await {
        let p = path.to_owned();
        let opened = glommio::executor()
            .spawn_blocking(move || std::fs::OpenOptions::new().write(true).open(&p))
            .await;
        match opened {
            Ok(f) => match free {
                Free::OnClose => Some(f),
                Free::Truncate(pace) => truncate_in_steps(f, pace).await,
            },
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "could not free a deleted file's blocks off the shard");
                None
            }
        }
    } else {
        tracing::warn!(path = %path.display(), "a read held a deleted file for {READERS_WAIT:?}: freeing it on the shard");
        None
    };
    // Closed here, not dropped: a dropped handle is closed later, possibly after `keep`.
    let _ = file.close_rc().await;
    let unlinked = remove(path).await;
    let off_shard = keep.is_some();
    if let Some(f) = keep {
        glommio::executor().spawn_blocking(move || drop(f)).await;
    }
    unlinked.map(|()| off_shard)
}

/// Waits, up to `READERS_WAIT`, until `file` is held only by the caller: reads in flight that
/// hold it finish first (new reads cannot find it, the caller has taken it out of its log).
/// Returns false if some read still holds it.
pub async fn sole_holder(file: &Rc<DmaFile>) -> bool {
    let deadline = Instant::now() + READERS_WAIT;
    while Rc::strong_count(file) > 1 {
        if Instant::now() >= deadline {
            return false;
        }
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
    true
}

/// Truncates `f` to nothing, `FREE_STEP` bytes per call on the blocking pool, pausing between
/// calls on the shard so that at most `pace` bytes a second are freed. Gives the file back
/// (`None` if a truncation failed: its last close then frees the rest).
async fn truncate_in_steps(f: std::fs::File, pace: Option<u64>) -> Option<std::fs::File> {
    let pause = pace.map(|bps| Duration::from_secs_f64(FREE_STEP as f64 / bps.max(1) as f64));
    let mut f = f;
    let mut first = true;
    loop {
        if !std::mem::take(&mut first) {
            if let Some(p) = pause {
                glommio::timer::sleep(p).await;
            }
        }
        let (back, left) = glommio::executor()
            .spawn_blocking(move || {
                let r = f.metadata().and_then(|m| {
                    let len = m.len().saturating_sub(FREE_STEP);
                    f.set_len(len).map(|()| len)
                });
                (f, r)
            })
            .await;
        f = back;
        match left {
            Ok(0) => return Some(f),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "could not truncate a deleted file");
                drop(f);
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn a_deleted_file_stays_whole_until_reads_in_flight_let_go() {
        crate::startup::with_dma_file("00000000000000000000.seg", |f, path| async move {
            // Three truncation steps' worth, each MiB with its own byte.
            for i in 0..12u8 {
                let mut b = f.alloc_dma_buffer(MIB);
                b.as_bytes_mut().fill(i + 1);
                f.write_at(b, i as u64 * MIB as u64).await.expect("write");
            }
            let reader = f.clone();
            let deleting = glommio::spawn_local({
                let path = path.clone();
                async move { delete_data_file(&path, f, Free::Truncate(None)).await }
            });
            glommio::timer::sleep(Duration::from_millis(50)).await;
            assert!(path.exists(), "unlinked while a read held the file");
            for i in 0..12u8 {
                let got = reader.read_at(i as u64 * MIB as u64, MIB).await.expect("read");
                assert_eq!(got.len(), MIB);
                assert!(got.iter().all(|&b| b == i + 1), "MiB {i} changed under a read");
            }
            drop(reader);
            assert!(deleting.await.expect("delete"), "freed on the shard");
            assert!(!path.exists(), "still there after the reads let go");
        });
    }
}
