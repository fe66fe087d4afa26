//! File-system metadata operations for code running on a shard: rename, unlink and directory
//! fsync go through glommio's blocking pool or io_uring, never block the shard's thread. A
//! directory fsync forces a journal commit and unlinking a large file frees its extents; both
//! take milliseconds, which is what an append waiting behind them would see.

use crate::error::{Error, Result};
use std::path::Path;

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
