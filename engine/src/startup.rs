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

/// io_uring rings per executor (main, latency, poll). Each registers the shard's whole DMA
/// pool, and the kernel charges the pinned pages to `RLIMIT_MEMLOCK` once per ring.
const RINGS_PER_SHARD: u64 = 3;

/// CAP_IPC_LOCK lifts the locked-memory limit for io_uring buffer registration.
const CAP_IPC_LOCK: u32 = 14;

/// Whether this process holds CAP_IPC_LOCK (its effective set, from /proc/self/status).
fn has_ipc_lock() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| effective_cap(&s, CAP_IPC_LOCK))
}

/// Whether a /proc/<pid>/status text lists capability `cap` in the effective set.
fn effective_cap(status: &str, cap: u32) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << cap) != 0)
}

/// Checks the locked-memory limit and the DMA pool size. Returns warnings for setups that
/// work but slower: io_uring buffer registration skipped (an extra page pinning per I/O), or
/// a pool too small for the writes in flight (their buffers then come from the heap); fails
/// if executors cannot start at all.
pub fn check_memory(cfg: &Config) -> Result<Vec<String>> {
    let mut warnings = Vec::new();
    let write_bytes = cfg.flush_pool_bytes();
    if (cfg.io_memory_bytes as u64) < write_bytes {
        warnings.push(format!(
            "io_memory_bytes {} is below what a busy log's writes take: flush_writes_in_flight {} \
             writes of flush_threshold_bytes {} (at most shard_memory_budget_bytes {} of them) and \
             the chunk being appended to, each rounded up to a power of two: write buffers will \
             come from the heap, which stalls the shard while they are mapped and unmapped. Raise \
             io_memory_bytes to at least {write_bytes}.",
            cfg.io_memory_bytes, cfg.flush_writes_in_flight, cfg.flush_threshold_bytes, cfg.shard_memory_budget_bytes
        ));
    }
    let Some(limit) = memlock_limit() else {
        return Ok(warnings);
    };
    if limit == libc::RLIM_INFINITY {
        return Ok(warnings);
    }
    if limit < MEMLOCK_MIN_BYTES {
        return Err(Error::Environment {
            problem: format!("RLIMIT_MEMLOCK is {limit} bytes; io_uring executors need at least {MEMLOCK_MIN_BYTES}"),
            remedy: "raise it (ulimit -l, LimitMEMLOCK= in systemd, memlock in /etc/security/limits.conf)".into(),
        });
    }
    let want = cfg.io_memory_bytes as u64 * RINGS_PER_SHARD * cfg.effective_shards() as u64;
    if want > limit && !has_ipc_lock() {
        warnings.push(format!(
            "RLIMIT_MEMLOCK is {limit} bytes but {} shards x {RINGS_PER_SHARD} io_uring rings x io_memory_bytes {} \
             need {want}: registered io_uring buffers will be skipped on some shards (I/O still works, \
             pinning its pages on every request). Raise the limit (or grant CAP_IPC_LOCK).",
            cfg.effective_shards(),
            cfg.io_memory_bytes
        ));
    }
    Ok(warnings)
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
    let r = create_direct(&probe);
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

/// Creates (or empties) `path` for writing with O_DIRECT, for the probes below.
fn create_direct(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
}

/// Whether the file system under `dir` takes a direct write with `RWF_DSYNC`
/// (`Config::dsync_writes`): one block written so to a scratch file. Every block-device file
/// system Linux has does; a write refused there would fail its log, so the engine asks first.
pub fn dsync_writes_work(dir: &Path) -> std::io::Result<()> {
    use std::io::{Error as IoError, ErrorKind};
    use std::os::unix::io::AsRawFd;
    let probe = dir.join(".dsync-probe.tmp");
    let block = crate::limits::BLOCK_SIZE as usize;
    let write = |f: std::fs::File| -> std::io::Result<()> {
        let layout = std::alloc::Layout::from_size_align(block, block)
            .map_err(|e| IoError::new(ErrorKind::InvalidInput, e.to_string()))?;
        // SAFETY: a non-zero size and a power-of-two alignment (checked by `from_size_align`).
        let buf = unsafe { std::alloc::alloc_zeroed(layout) };
        if buf.is_null() {
            return Err(IoError::new(ErrorKind::OutOfMemory, "no memory for a 4 KiB buffer"));
        }
        let iov = libc::iovec {
            iov_base: buf.cast(),
            iov_len: block,
        };
        // SAFETY: pwritev2 reads `block` bytes from `buf`, allocated above with that size and
        // alignment and freed only after the call; `iov` lives until it returns.
        let n = unsafe { libc::pwritev2(f.as_raw_fd(), &iov, 1, 0, libc::RWF_DSYNC) };
        let err = IoError::last_os_error();
        // SAFETY: `buf` came from `alloc_zeroed` with this layout and is freed once.
        unsafe { std::alloc::dealloc(buf, layout) };
        match n {
            n if n == block as isize => Ok(()),
            n if n < 0 => Err(err),
            n => Err(IoError::other(format!("short write: {n} of {block} bytes"))),
        }
    };
    let r = create_direct(&probe).and_then(write);
    let _ = std::fs::remove_file(&probe);
    r
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

/// For unit tests: runs `body` on an executor of its own with a new, empty O_DIRECT file
/// `name` in a temporary directory (removed after), the device probe primed first as a shard
/// does.
#[cfg(test)]
pub fn with_dma_file<F, Fut>(name: &str, body: F)
where
    F: FnOnce(std::rc::Rc<glommio::io::DmaFile>, std::path::PathBuf) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(name);
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .spawn(move || async move {
            prime_dma_probe(path.parent().expect("dir")).await.expect("probe");
            let file = glommio::io::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .dma_open(&path)
                .await
                .expect("create");
            body(std::rc::Rc::new(file), path).await
        })
        .expect("executor")
        .join()
        .expect("join");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dsync_probe_writes_a_block_and_leaves_nothing() {
        let dir = std::env::temp_dir().join(format!("aof-dsync-probe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // The engine's data directories are never on tmpfs, which refuses O_DIRECT; only an
        // answer from a disk file system says anything.
        if check_direct_io(&dir).is_ok() {
            dsync_writes_work(&dir).expect("ext4/xfs take RWF_DSYNC direct writes");
        }
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "the probe file is removed");
        std::fs::remove_dir(&dir).unwrap();
        let e = dsync_writes_work(&dir).expect_err("no directory, no write");
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}");
    }

    #[test]
    fn io_uring_probe_runs_here() {
        check_io_uring().unwrap();
        assert!(memlock_limit().is_some());
    }

    #[test]
    fn a_pool_too_small_for_the_writes_in_flight_is_warned_about() {
        let mut cfg = Config::new("/nonexistent");
        let pool_warning = |cfg: &Config| {
            check_memory(cfg)
                .unwrap()
                .into_iter()
                .any(|w| w.contains("write buffers will come from the heap"))
        };
        assert!(!pool_warning(&cfg), "the defaults fit");
        cfg.io_memory_bytes = 3 << 20;
        assert!(pool_warning(&cfg), "8 writes of 1 MiB and a chunk do not fit in 3 MiB");
        cfg.flush_writes_in_flight = 2;
        assert!(!pool_warning(&cfg));
        // 600 KiB writes take 1 MiB blocks of the buddy allocator.
        cfg.flush_threshold_bytes = 600 << 10;
        cfg.flush_writes_in_flight = 3;
        assert!(pool_warning(&cfg));
        // Past the memory budget no more writes are in flight: a 64 MiB threshold with a
        // 64 MiB budget needs 128 MiB (a write and a chunk), not 9 x 64 MiB.
        let mut big = Config::new("/nonexistent");
        big.flush_threshold_bytes = 64 << 20;
        assert_eq!(big.flush_pool_bytes(), 128 << 20);
        let w = check_memory(&big).unwrap();
        assert!(
            w.iter().any(|w| w.ends_with(&format!("at least {}.", 128u64 << 20))),
            "{w:?}"
        );
    }

    #[test]
    fn the_effective_capability_set_is_read_from_status() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapPrm:\t0000000000004000\nCapEff:\t0000000000004000\n";
        assert!(effective_cap(status, CAP_IPC_LOCK));
        let status = "CapPrm:\t0000000000004000\nCapEff:\t0000000000000000\n";
        assert!(!effective_cap(status, CAP_IPC_LOCK), "permitted is not effective");
        assert!(!effective_cap("Name:\tx\n", CAP_IPC_LOCK));
        assert!(effective_cap("CapEff:\t000001ffffffffff\n", CAP_IPC_LOCK));
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
