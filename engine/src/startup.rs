//! Start-up checks, each failing with the problem and its remedy: io_uring usable, enough
//! locked memory for the executors, and O_DIRECT supported where the data lives.

use crate::config::Config;
use crate::error::{Error, Result};
use std::path::Path;

/// glommio refuses to start an executor below this RLIMIT_MEMLOCK.
const MEMLOCK_MIN_BYTES: u64 = 512 << 10;

pub fn memlock_limit() -> Option<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and nothing else.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) };
    (rc == 0).then_some(r.rlim_cur)
}

/// Checks the locked-memory limit. Returns a warning if the io_uring buffer registration will
/// be skipped (slower I/O, still correct); fails if executors cannot start at all.
pub fn check_memlock(cfg: &Config) -> Result<Option<String>> {
    let Some(limit) = memlock_limit() else { return Ok(None) };
    if limit == libc::RLIM_INFINITY {
        return Ok(None);
    }
    if limit < MEMLOCK_MIN_BYTES {
        return Err(Error::Environment {
            problem: format!("RLIMIT_MEMLOCK is {limit} bytes; io_uring executors need at least {MEMLOCK_MIN_BYTES}"),
            remedy: "raise it (ulimit -l, LimitMEMLOCK= in systemd, memlock in /etc/security/limits.conf)".into(),
        });
    }
    let want = cfg.io_memory_bytes as u64 * cfg.effective_shards() as u64;
    if want > limit {
        return Ok(Some(format!(
            "RLIMIT_MEMLOCK is {limit} bytes but {} shards x io_memory_bytes {} need {want}: \
             registered io_uring buffers will be skipped on some shards (I/O still works, with an extra copy). \
             Raise the limit or lower io_memory_bytes.",
            cfg.effective_shards(),
            cfg.io_memory_bytes
        )));
    }
    Ok(None)
}

/// Checks that io_uring can be set up at all (kernel support, not disabled by sysctl/seccomp).
pub fn check_io_uring() -> Result<()> {
    let mut params = [0u8; 120]; // struct io_uring_params, zeroed
                                 // SAFETY: io_uring_setup reads and writes only the params buffer we pass (120 bytes is the
                                 // kernel's struct size); on success we own the returned fd and close it at once.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        return Err(Error::Environment {
            problem: format!("io_uring is not usable: {err}"),
            remedy: "use Linux 5.8 or newer with io_uring enabled (sysctl kernel.io_uring_disabled=0; \
                     containers: allow io_uring_* syscalls in the seccomp profile)"
                .into(),
        });
    }
    // SAFETY: fd is a descriptor we just received from the kernel and own exclusively.
    unsafe { libc::close(fd as i32) };
    Ok(())
}

const TMPFS_MAGIC: i64 = 0x0102_1994;
const RAMFS_MAGIC: i64 = 0x8584_58f6;

/// Checks that `dir` is on durable storage that takes O_DIRECT. Memory file systems are
/// refused outright: older kernels reject O_DIRECT on tmpfs, newer ones accept it, and on
/// neither does a "synced" record survive a reboot.
pub fn check_direct_io(dir: &Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::OpenOptionsExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| Error::Config("data directory path contains NUL".into()))?;
    // SAFETY: statfs writes into the zeroed struct we own; `c` is a valid NUL-terminated path.
    let fs_type = unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        (libc::statfs(c.as_ptr(), &mut st) == 0).then_some(st.f_type as i64)
    };
    if matches!(fs_type, Some(TMPFS_MAGIC) | Some(RAMFS_MAGIC)) {
        return Err(Error::Environment {
            problem: format!(
                "{} is on a memory file system (tmpfs/ramfs): nothing written there is durable",
                dir.display()
            ),
            remedy: "put the data directory on ext4, xfs or another block-device file system".into(),
        });
    }
    let probe = dir.join(".direct-io-probe.tmp");
    let r = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&probe);
    let _ = std::fs::remove_file(&probe);
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Err(Error::Environment {
            problem: format!(
                "{} does not support O_DIRECT (tmpfs and some FUSE file systems do not)",
                dir.display()
            ),
            remedy: "put the data directory on ext4, xfs or another block-device file system".into(),
        }),
        Err(e) => Err(Error::io("O_DIRECT probe", probe, e)),
    }
}

/// Makes glommio's one-time io_uring poll-mode probe give the right answer.
///
/// glommio decides per block device whether to use its IOPOLL ring by reading the first block
/// of the first O_DIRECT file it opens there. If that file is empty the read succeeds
/// trivially, the device is wrongly marked pollable, and every later read fails with
/// EOPNOTSUPP on devices without poll queues (seen on virtio disks). Opening a file with a
/// real block of data first makes the probe meaningful. Call on each executor before any
/// other DMA file is opened.
pub async fn prime_dma_probe(dir: &Path) -> Result<()> {
    let probe = dir.join(".dma-probe.tmp");
    std::fs::write(&probe, vec![0xA5u8; crate::limits::BLOCK_SIZE as usize])
        .map_err(|e| Error::io("write probe file", &probe, e))?;
    let r = glommio::io::DmaFile::open(&probe).await;
    let _ = std::fs::remove_file(&probe);
    let f = r.map_err(|e| Error::glommio("O_DIRECT open", &probe, e))?;
    let alignment = f.alignment();
    let _ = f.close().await;
    if alignment > crate::limits::BLOCK_SIZE {
        return Err(Error::Environment {
            problem: format!(
                "{} is on a device with {alignment}-byte logical blocks; the segment format aligns to {}",
                dir.display(),
                crate::limits::BLOCK_SIZE
            ),
            remedy: "use a device (or namespace format) with 512-byte or 4 KiB logical blocks".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_uring_probe_runs_here() {
        check_io_uring().unwrap();
        assert!(memlock_limit().is_some());
    }

    #[test]
    fn tmpfs_is_refused() {
        let d = Path::new("/dev/shm");
        if d.exists() {
            let e = check_direct_io(d).unwrap_err();
            assert!(matches!(e, Error::Environment { .. }), "{e}");
        }
        check_direct_io(&std::env::temp_dir())
            .or_else(|_| check_direct_io(Path::new(".")))
            .unwrap();
    }
}
