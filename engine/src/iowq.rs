//! Where a shard's work off its own thread runs: the kernel's io_uring workers (below), and
//! the shard's helper threads (`pin_this_thread`, for the compression thread).
//!
//! An fdatasync, a fallocate, or a direct write that spans a written and an unwritten extent
//! (see `ActiveSegment::plan_write`) cannot finish inside `io_uring_enter`, so io_uring hands
//! it to a worker thread (`iou-wrk-<tid>`); so does any I/O submitted with `IOSQE_ASYNC`. The
//! workers belong to the thread that owns the rings and inherit its affinity: for a pinned
//! shard, its own core, where every one of them preempts the shard. Measured with a Memory
//! producer at half load on one shard: ~1,700 preemptions a second, 37 ms of every second,
//! up to 177 µs each. `IORING_REGISTER_IOWQ_AFF` sets the CPUs a thread's workers may use;
//! the setting belongs to the thread (all its rings share one worker pool), so it is made
//! through a throwaway ring of our own.

use std::io;

const IORING_REGISTER_IOWQ_AFF: libc::c_uint = 17;

/// The kernel's CPU set holding exactly `cpus`.
fn cpu_set(cpus: &[usize]) -> io::Result<libc::cpu_set_t> {
    if cpus.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "no CPUs given"));
    }
    // SAFETY: cpu_set_t is plain data and all-zero is the empty set; CPU_SET writes one bit
    // of it for an index we checked against CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            if c >= libc::CPU_SETSIZE as usize {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("CPU {c} out of range"),
                ));
            }
            libc::CPU_SET(c, &mut set);
        }
        Ok(set)
    }
}

/// Lets the calling thread run only on `cpus` (for a shard's helper threads, e.g. its
/// compression thread).
pub fn pin_this_thread(cpus: &[usize]) -> io::Result<()> {
    let set = cpu_set(cpus)?;
    // SAFETY: sched_setaffinity reads `size_of::<cpu_set_t>()` bytes from `&set`, which lives
    // until the call returns; pid 0 is the calling thread.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Lets the calling thread's io_uring workers run only on `cpus`.
pub fn set_worker_cpus(cpus: &[usize]) -> io::Result<()> {
    let set = cpu_set(cpus)?;
    // struct io_uring_params is 120 bytes of integers; all-zero asks for no features.
    let mut params = [0u64; 15];
    // SAFETY: io_uring_setup reads and writes `params` (120 bytes, which we own) and returns
    // a new file descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = fd as libc::c_int;
    // SAFETY: `fd` is the ring just created; IOWQ_AFF reads `size_of::<cpu_set_t>()` bytes
    // from `&set`, which lives until the call returns.
    let r = unsafe {
        libc::syscall(
            libc::SYS_io_uring_register,
            fd,
            IORING_REGISTER_IOWQ_AFF,
            &set as *const libc::cpu_set_t,
            std::mem::size_of::<libc::cpu_set_t>(),
        )
    };
    let err = (r < 0).then(io::Error::last_os_error);
    // SAFETY: we own `fd` and nothing else refers to it.
    unsafe { libc::close(fd) };
    match err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The CPUs a pinned shard's workers get by default: the allowed CPUs no shard is pinned
/// to, so kernel I/O work runs beside the shards instead of inside them; if every allowed
/// CPU has a shard, all of them (the work then lands where the scheduler finds room).
pub fn spare_cpus(allowed: &[usize], shards: usize) -> Vec<usize> {
    match cpus_without_shard(allowed, shards) {
        [] => allowed.to_vec(),
        spare => spare.to_vec(),
    }
}

/// The allowed CPUs no shard is pinned to (shards take the first ones, one each); empty when
/// every allowed CPU has a shard.
pub fn cpus_without_shard(allowed: &[usize], shards: usize) -> &[usize] {
    &allowed[shards.min(allowed.len())..]
}

/// The CPUs the io_uring workers of the calling thread may run on (read back from their
/// `/proc` status), or `None` if it has none yet.
#[cfg(test)]
pub fn worker_cpus_of_this_thread() -> Option<Vec<Vec<usize>>> {
    // SAFETY: gettid has no arguments and cannot fail.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) };
    let name = format!("iou-wrk-{tid}");
    let mut out = Vec::new();
    for t in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        let list = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .map(parse_cpu_list)
            .unwrap_or_default();
        out.push(list);
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
fn parse_cpu_list(s: &str) -> Vec<usize> {
    let mut v = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
                    v.extend(a..=b);
                }
            }
            None => v.extend(part.parse::<usize>().ok()),
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spare_cpus_are_those_without_a_shard() {
        assert_eq!(spare_cpus(&[0, 1, 2, 3], 2), vec![2, 3]);
        assert_eq!(spare_cpus(&[0, 1], 2), vec![0, 1]);
        assert_eq!(spare_cpus(&[0, 1], 4), vec![0, 1]);
        assert_eq!(spare_cpus(&[4, 5, 6], 1), vec![5, 6]);
        assert_eq!(cpus_without_shard(&[0, 1, 2, 3], 2), &[2, 3]);
        assert!(cpus_without_shard(&[0, 1], 2).is_empty());
        assert!(cpus_without_shard(&[0, 1], 4).is_empty());
        assert_eq!(parse_cpu_list("0-2,5\n"), vec![0, 1, 2, 5]);
    }

    #[test]
    fn bad_cpu_sets_are_refused() {
        assert!(set_worker_cpus(&[]).is_err());
        assert!(set_worker_cpus(&[libc::CPU_SETSIZE as usize]).is_err());
        assert!(pin_this_thread(&[]).is_err());
        assert!(pin_this_thread(&[libc::CPU_SETSIZE as usize]).is_err());
    }

    #[test]
    fn a_pinned_thread_runs_only_where_it_is_told() {
        let cpus = crate::engine::allowed_cpus();
        let last = *cpus.last().expect("some CPU");
        let seen = std::thread::spawn(move || {
            pin_this_thread(&[last]).expect("sched_setaffinity");
            crate::engine::allowed_cpus()
        })
        .join()
        .expect("join");
        assert_eq!(seen, vec![last]);
    }

    /// The workers that run a punted write on a thread pinned to one CPU are confined to the
    /// CPUs set, not to the thread's own.
    #[test]
    fn workers_of_a_pinned_thread_run_where_they_are_told() {
        let cpus = crate::engine::allowed_cpus();
        if cpus.len() < 2 {
            eprintln!("skipped: needs two CPUs");
            return;
        }
        let (own, other) = (cpus[0], cpus[1]);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let seen = glommio::LocalExecutorBuilder::new(glommio::Placement::Fixed(own))
            .spawn(move || async move {
                set_worker_cpus(&[other]).expect("IORING_REGISTER_IOWQ_AFF");
                // Writes into a preallocated file cannot complete inline on ext4/xfs; an
                // fdatasync never can. Either way a worker is started.
                let f = glommio::io::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .dma_open(&path)
                    .await
                    .expect("open");
                f.pre_allocate(1 << 20, false).await.expect("fallocate");
                for i in 0..8u64 {
                    let mut b = f.alloc_dma_buffer(4096);
                    b.as_bytes_mut().fill(i as u8);
                    f.write_at(b, i * 4096).await.expect("write");
                    f.fdatasync().await.expect("fdatasync");
                }
                let seen = worker_cpus_of_this_thread();
                f.close().await.expect("close");
                seen
            })
            .expect("executor")
            .join()
            .expect("join");
        let seen = seen.expect("a punted write started an io_uring worker");
        for w in seen {
            assert_eq!(w, vec![other], "worker CPUs");
        }
    }
}
