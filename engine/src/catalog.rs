//! Where each log lives. Placement is decided once, when a log is created (a stable hash of
//! its name over the shard count of that moment), and persisted by where its directory is.
//! At start-up every shard directory is read once to build an immutable name → shard map, so
//! the lookup on the request path takes no lock.

use crate::error::{Error, Result};
use crate::format::logmeta::FILE_NAME;
use crate::recovery::read_meta;
use crate::shard::shard_dir_name;
use std::collections::HashMap;
use std::path::Path;

pub struct Placement {
    shards: usize,
    existing: HashMap<String, usize>,
}

impl Placement {
    /// Reads the data directory. Fails if a log lives on a shard this configuration lacks.
    pub fn load(root: &Path, shards: usize) -> Result<Placement> {
        let mut existing = HashMap::new();
        for e in std::fs::read_dir(root).map_err(|e| Error::io("list data directory", root, e))? {
            let e = e.map_err(|e| Error::io("list data directory", root, e))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_prefix("shard-").and_then(|n| n.parse::<usize>().ok()) else {
                continue;
            };
            if shard_dir_name(id) != name {
                continue;
            }
            for l in std::fs::read_dir(e.path()).map_err(|err| Error::io("list shard directory", e.path(), err))? {
                let l = l.map_err(|err| Error::io("list shard directory", e.path(), err))?;
                if !l.path().join(FILE_NAME).exists() {
                    // A crash between a create's mkdir and its `log.meta` leaves a directory
                    // with nothing in it worth keeping (skipped). Segments without `log.meta`
                    // are damage: skipping them would hide the log's records, and a later
                    // create of the same name would start an empty log beside them.
                    if let Some(seg) = segment_file_in(&l.path())? {
                        return Err(Error::Corruption {
                            path: l.path().join(FILE_NAME),
                            pos: 0,
                            detail: format!(
                                "missing, but the log directory holds segment files ({}): restore log.meta from a backup, or move the directory out of the data directory to drop the log",
                                seg
                            ),
                        });
                    }
                    continue;
                }
                if id >= shards {
                    return Err(Error::ShardCountTooSmall {
                        path: root.to_path_buf(),
                        found: id,
                        configured: shards,
                        need: id + 1,
                    });
                }
                let meta = read_meta(&l.path())?;
                if let Some(other) = existing.insert(meta.name.clone(), id) {
                    return Err(Error::Corruption {
                        path: l.path(),
                        pos: 0,
                        detail: format!("log {:?} exists on shards {other} and {id}", meta.name),
                    });
                }
            }
        }
        Ok(Placement { shards, existing })
    }

    /// The shard that owns (or will own) the log `name`.
    pub fn shard_of(&self, name: &str) -> usize {
        match self.existing.get(name) {
            Some(&s) => s,
            None => (stable_hash(name) % self.shards as u64) as usize,
        }
    }
}

/// The name of a raw or Tier1 segment file in `dir`, if there is one.
fn segment_file_in(dir: &Path) -> Result<Option<String>> {
    if !dir.is_dir() {
        return Ok(None);
    }
    for f in std::fs::read_dir(dir).map_err(|e| Error::io("list log directory", dir, e))? {
        let name = f
            .map_err(|e| Error::io("list log directory", dir, e))?
            .file_name()
            .to_string_lossy()
            .into_owned();
        if crate::format::segment::parse_file_name(&name).is_some()
            || crate::format::tier1::parse_file_name(&name).is_some()
        {
            return Ok(Some(name));
        }
    }
    Ok(None)
}

/// FNV-1a: stable across processes, versions and platforms, unlike std's hasher.
fn stable_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// An exclusive `flock` on `root/LOCK`, held for the engine's lifetime, so two processes
/// never write the same data directory. Released by the kernel if the process dies.
pub struct DirLock {
    _file: std::fs::File,
}

impl DirLock {
    pub fn acquire(root: &Path) -> Result<DirLock> {
        use std::os::fd::AsRawFd;
        let path = root.join("LOCK");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("open lock file", &path, e))?;
        // SAFETY: `file` is an open descriptor owned by this function for the duration of the
        // call; flock does not retain the pointer-free fd argument beyond the syscall.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(Error::Locked {
                    path: root.to_path_buf(),
                });
            }
            return Err(Error::io("flock", &path, err));
        }
        Ok(DirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable() {
        // Pinned values: placement must never change between releases.
        assert_eq!(stable_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash("a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn second_lock_is_refused() {
        let d = std::env::temp_dir().join(format!("aof-lock-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let a = DirLock::acquire(&d).unwrap();
        assert!(matches!(DirLock::acquire(&d), Err(Error::Locked { .. })));
        drop(a);
        DirLock::acquire(&d).unwrap();
        std::fs::remove_dir_all(&d).unwrap();
    }
}
