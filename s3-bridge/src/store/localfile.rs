//! Writing a local file so that it is either complete or absent: write to a temp name in the
//! same directory, fsync it, rename over the destination, fsync the directory (without the last
//! step a crash can forget the rename on ext4/xfs even though the data is durable).

use std::io;
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

/// Marker in temp file names; also how leftovers from a crash are recognised.
pub const TMP_MARKER: &str = ".tmp-";

/// A file being written under a temporary name. Dropped without `commit`, it is removed.
pub struct AtomicFile {
    dest: PathBuf,
    tmp: PathBuf,
    file: Option<tokio::fs::File>,
    crc: u32,
    len: u64,
}

impl AtomicFile {
    /// Creates the temp file next to `dest` (creating parent directories).
    pub async fn create(dest: &Path) -> io::Result<AtomicFile> {
        let dir = parent(dest);
        tokio::fs::create_dir_all(dir).await?;
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(
            "{name}{TMP_MARKER}{}-{:016x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .await?;
        Ok(AtomicFile {
            dest: dest.to_path_buf(),
            tmp,
            file: Some(file),
            crc: 0,
            len: 0,
        })
    }

    pub async fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.crc = crc32c::crc32c_append(self.crc, chunk);
        self.len += chunk.len() as u64;
        match self.file.as_mut() {
            Some(f) => f.write_all(chunk).await,
            None => Err(io::Error::other("write after commit")),
        }
    }

    /// crc32c and length of everything written so far.
    pub fn crc_len(&self) -> (u32, u64) {
        (self.crc, self.len)
    }

    /// Makes the file durable and visible under its destination name.
    pub async fn commit(mut self) -> io::Result<()> {
        if let Some(mut f) = self.file.take() {
            f.flush().await?;
            f.sync_all().await?;
        }
        tokio::fs::rename(&self.tmp, &self.dest).await?;
        sync_dir(parent(&self.dest)).await
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.is_some() {
            // Not committed: the partial file must not linger (best effort; a crash leaves it
            // for the stale-upload sweep, which recognises TMP_MARKER).
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

fn parent(p: &Path) -> &Path {
    p.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// fsyncs a directory so a rename or unlink in it is durable.
pub async fn sync_dir(dir: &Path) -> io::Result<()> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || std::fs::File::open(&dir)?.sync_all())
        .await
        .map_err(io::Error::other)?
}

/// Writes `bytes` to `dest` atomically (see module doc).
pub async fn write_atomic(dest: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = AtomicFile::create(dest).await?;
    f.write(bytes).await?;
    f.commit().await
}
