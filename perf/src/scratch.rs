//! The data a measurement writes lives in scratch paths under `--dir`, named for the process
//! that writes them (`run-<pid>`, `baseline-<pid>`, `device-probe-<pid>.dat`, …), and is removed
//! however the measurement ends.
//!
//! A closed-loop Memory run writes about 2 GB a second here, so a run that fails (the disk
//! filled, a bad record size) and leaves its directory behind can leave tens of GB: one did,
//! 68 GB, and every later run then failed with ENOSPC. So:
//! - a `Scratch` removes its path when dropped, on the error path and during unwinding too;
//! - opening one first removes what runs that were killed (kill -9, Ctrl-C, a crash) left in
//!   the same directory: names of exactly the harness's pattern for that directory
//!   (`run-` and digits, nothing after), whose number is a possible process id (at most the
//!   kernel's `pid_max`, so `run-20240101` is never taken for one) of a process that is gone.
//!   A path whose process is alive belongs to a run still going and is left alone; without
//!   `/proc` nothing is removed. (A run in another PID namespace sharing the directory would
//!   look dead: give such runs their own `--dir`.)

use std::path::{Path, PathBuf};

/// A scratch name: `prefix`, a process id, `suffix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pattern {
    pub prefix: &'static str,
    pub suffix: &'static str,
}

const fn pat(prefix: &'static str, suffix: &'static str) -> Pattern {
    Pattern { prefix, suffix }
}

/// What the harness writes directly under `--dir`.
pub const RUN: Pattern = pat("run-", "");
pub const BASELINE: Pattern = pat("baseline-", "");
pub const DEVICE_PROBE: Pattern = pat("device-probe-", ".dat");
pub const DEVICE_LIMIT: Pattern = pat("device-limit-", ".dat");
pub const RAW_PUT: Pattern = pat("raw-put-", ".bin");
pub const DISK_LOAD: Pattern = pat("disk-load-", ".dat");
const IN_DIR: [Pattern; 6] = [RUN, BASELINE, DEVICE_PROBE, DEVICE_LIMIT, RAW_PUT, DISK_LOAD];
/// What `bridge` writes in its default object store, `--dir/tier2-store`: its key prefix.
pub const BRIDGE_OBJECTS: Pattern = pat("perf-", "");
const IN_STORE: [Pattern; 1] = [BRIDGE_OBJECTS];

/// A path that is removed (file or directory) when this is dropped.
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// `dir/<prefix><pid><suffix>`, after removing left-overs of dead runs in `dir` and any
    /// stale copy of this one.
    pub fn new(dir: &Path, p: Pattern) -> Scratch {
        let family: &[Pattern] = if IN_STORE.contains(&p) { &IN_STORE } else { &IN_DIR };
        debug_assert!(family.contains(&p));
        remove_dead(dir, family);
        let path = dir.join(format!("{}{}{}", p.prefix, std::process::id(), p.suffix));
        remove(&path);
        Scratch { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        remove(&self.path);
    }
}

fn remove(path: &Path) {
    // Missing is the common case (nothing written yet, or already removed); other failures
    // leave the path as it is, which the next run retries.
    if path.is_dir() {
        let _ = std::fs::remove_dir_all(path);
    } else {
        let _ = std::fs::remove_file(path);
    }
}

/// The kernel's largest process id (4,194,304 at most on Linux).
fn pid_max() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1 << 22)
}

/// The pid `name` was made for, if it is exactly `prefix`, digits, `suffix` for one of
/// `patterns`, and the digits are a possible pid.
pub fn owner(name: &str, patterns: &[Pattern], pid_max: u32) -> Option<u32> {
    patterns.iter().find_map(|p| {
        let digits = name.strip_prefix(p.prefix)?.strip_suffix(p.suffix)?;
        if digits.is_empty()
            || digits.len() > 10
            || !digits.bytes().all(|b| b.is_ascii_digit())
            || digits.starts_with('0')
        {
            return None;
        }
        let pid: u32 = digits.parse().ok()?;
        (pid <= pid_max).then_some(pid)
    })
}

fn alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Removes the scratch paths in `dir` of `patterns` whose process is gone; returns their names.
pub fn remove_dead(dir: &Path, patterns: &[Pattern]) -> Vec<String> {
    let mut removed = Vec::new();
    // Without /proc every process would look gone.
    if !Path::new("/proc/self").exists() {
        return removed;
    }
    let max = pid_max();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return removed;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(pid) = owner(&name, patterns, max) {
            if pid != std::process::id() && !alive(pid) {
                remove(&e.path());
                removed.push(name);
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_reads_the_pid_of_exact_names_only() {
        let max = 4_194_304;
        assert_eq!(owner("run-123", &IN_DIR, max), Some(123));
        assert_eq!(owner("baseline-7", &IN_DIR, max), Some(7));
        assert_eq!(owner("device-probe-42.dat", &IN_DIR, max), Some(42));
        assert_eq!(owner("device-limit-42.dat", &IN_DIR, max), Some(42));
        assert_eq!(owner("raw-put-42.bin", &IN_DIR, max), Some(42));
        assert_eq!(owner("perf-42", &IN_STORE, max), Some(42));
        for name in [
            "run-",
            "run-12x",
            "runs-12",
            "my-data",
            "run-20240101",
            "run-99999999999999999999",
            "run-0",
            "run-012",
            "run-12.old",
            "device-probe-42",
            "device-probe-42.dat.bak",
            "perf-42",
            "perf-4242.data",
        ] {
            assert_eq!(owner(name, &IN_DIR, max), None, "{name}");
        }
        assert_eq!(owner("perf-4242.data", &IN_STORE, max), None);
        assert_eq!(owner("run-42", &IN_STORE, max), None);
    }

    #[test]
    fn dead_runs_are_removed_live_ones_and_other_names_kept() {
        let base = std::env::temp_dir().join(format!("aof-perf-scratch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        // A pid no process has now: the largest possible one, unless something runs as it.
        let dead = pid_max();
        assert!(!alive(dead), "a process runs as pid {dead}");
        let me = std::process::id();
        // PID 1 is always alive.
        for name in [
            format!("run-{dead}"),
            format!("baseline-{dead}"),
            "run-1".to_string(),
            "keep-me".to_string(),
            "run-20240101".to_string(),
            format!("perf-{dead}"),
        ] {
            std::fs::create_dir_all(base.join(&name).join("sub")).unwrap();
            std::fs::write(base.join(&name).join("sub/f"), b"x").unwrap();
        }
        std::fs::write(base.join(format!("device-probe-{dead}.dat")), b"x").unwrap();
        let mut removed = remove_dead(&base, &IN_DIR);
        removed.sort();
        assert_eq!(
            removed,
            vec![
                format!("baseline-{dead}"),
                format!("device-probe-{dead}.dat"),
                format!("run-{dead}")
            ]
        );
        for kept in ["run-1", "keep-me", "run-20240101"] {
            assert!(base.join(kept).join("sub/f").exists(), "{kept} was removed");
        }
        // `perf-` names are the bridge store's, not --dir's.
        assert!(base.join(format!("perf-{dead}/sub/f")).exists());
        {
            let s = Scratch::new(&base, RUN);
            assert_eq!(s.path(), base.join(format!("run-{me}")));
            std::fs::create_dir_all(s.path().join("x")).unwrap();
            std::fs::write(s.path().join("x/y"), b"data").unwrap();
        }
        assert!(
            !base.join(format!("run-{me}")).exists(),
            "a dropped scratch dir was left behind"
        );
        {
            let s = Scratch::new(&base, DEVICE_PROBE);
            std::fs::write(s.path(), b"data").unwrap();
        }
        assert!(!base.join(format!("device-probe-{me}.dat")).exists());
        let _ = std::fs::remove_dir_all(&base);
    }
}
