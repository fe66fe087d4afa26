//! The data a measurement writes lives in scratch paths under `--dir`, named for the process
//! that writes them (`run-<pid>`, `baseline-<pid>`, `device-probe-<pid>.dat`, …), and is removed
//! however the measurement ends.
//!
//! A closed-loop Memory run writes about 2 GB a second here, so a run that fails (the disk
//! filled, a bad record size) and leaves its directory behind can leave tens of GB: one did,
//! 68 GB, and every later run then failed with ENOSPC. So:
//! - a `Scratch` removes its path when dropped, on the error path and during unwinding too;
//! - opening one first removes what runs that were killed (kill -9, Ctrl-C, a crash) left
//!   under `--dir`: paths of ours whose process is gone. A path whose process is alive belongs
//!   to a run still going (another `aof-perf` on the same directory) and is left alone.

use std::path::{Path, PathBuf};

/// The prefixes of the scratch paths the harness writes. Names outside this list are never
/// touched, whatever else the directory holds.
/// (`perf-<pid>` is a bridge run's objects in the default `file://` store, `--dir/tier2-store`.)
pub const PREFIXES: [&str; 5] = ["run-", "baseline-", "device-probe-", "device-limit-", "perf-"];

/// A path under `--dir` that is removed (file or directory) when this is dropped.
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// `dir/<prefix><pid><suffix>`, after removing left-overs of dead runs and any stale copy
    /// of this one. `prefix` must be one of `PREFIXES`.
    pub fn new(dir: &Path, prefix: &str, suffix: &str) -> Scratch {
        debug_assert!(PREFIXES.contains(&prefix), "unlisted scratch prefix {prefix}");
        remove_dead(dir);
        let path = dir.join(format!("{prefix}{}{suffix}", std::process::id()));
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

/// The pid a scratch name was made for: `run-123`, `device-probe-123.dat` -> 123.
pub fn owner(name: &str) -> Option<u32> {
    let rest = PREFIXES.iter().find_map(|p| name.strip_prefix(p))?;
    let digits = rest.split('.').next()?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Removes the scratch paths under `dir` whose process no longer exists; returns their names.
pub fn remove_dead(dir: &Path) -> Vec<String> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return removed;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(pid) = owner(&name) {
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
    fn owner_reads_the_pid_of_our_names_only() {
        assert_eq!(owner("run-123"), Some(123));
        assert_eq!(owner("baseline-7"), Some(7));
        assert_eq!(owner("device-probe-42.dat"), Some(42));
        assert_eq!(owner("device-limit-42.dat"), Some(42));
        assert_eq!(owner("run-"), None);
        assert_eq!(owner("run-12x"), None);
        assert_eq!(owner("runs-12"), None);
        assert_eq!(owner("my-data"), None);
        assert_eq!(owner("run-99999999999999999999"), None);
    }

    #[test]
    fn dead_runs_are_removed_live_ones_and_other_names_kept() {
        let base = std::env::temp_dir().join(format!("aof-perf-scratch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        // A pid that cannot be running: above the kernel's pid_max ceiling (2^22).
        let dead = 4_194_305 + 17;
        let me = std::process::id();
        // PID 1 is always alive.
        for name in [
            format!("run-{dead}"),
            format!("baseline-{dead}"),
            "run-1".to_string(),
            "keep-me".to_string(),
        ] {
            std::fs::create_dir_all(base.join(&name).join("sub")).unwrap();
            std::fs::write(base.join(&name).join("sub/f"), b"x").unwrap();
        }
        std::fs::write(base.join(format!("device-probe-{dead}.dat")), b"x").unwrap();
        let mut removed = remove_dead(&base);
        removed.sort();
        assert_eq!(
            removed,
            vec![
                format!("baseline-{dead}"),
                format!("device-probe-{dead}.dat"),
                format!("run-{dead}")
            ]
        );
        assert!(base.join("run-1/sub/f").exists());
        assert!(base.join("keep-me/sub/f").exists());
        {
            let s = Scratch::new(&base, "run-", "");
            assert_eq!(s.path(), base.join(format!("run-{me}")));
            std::fs::create_dir_all(s.path().join("x")).unwrap();
            std::fs::write(s.path().join("x/y"), b"data").unwrap();
        }
        assert!(
            !base.join(format!("run-{me}")).exists(),
            "a dropped scratch dir was left behind"
        );
        {
            let s = Scratch::new(&base, "device-probe-", ".dat");
            std::fs::write(s.path(), b"data").unwrap();
        }
        assert!(!base.join(format!("device-probe-{me}.dat")).exists());
        let _ = std::fs::remove_dir_all(&base);
    }
}
