//! The harness removes the data it writes however a run ends. A closed-loop Memory run writes
//! about 2 GB a second; one that failed (the disk filled) left 68 GB behind in `run-<pid>`,
//! and every later run failed with ENOSPC until it was removed by hand.

#[path = "../../engine/tests/common/loop_mount.rs"]
mod loop_mount;

mod common;

use common::{aof_perf as perf, base};
use std::path::Path;
use std::process::Command;

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// What killed runs left (kill -9, Ctrl-C) is removed by the next run; a name that is not the
/// harness's, or whose process is alive, is kept; the run itself leaves nothing behind.
#[test]
fn leftovers_of_dead_runs_are_removed_and_a_run_leaves_nothing() {
    let b = base("leftovers");
    let (data, out) = (b.join("data"), b.join("out"));
    // The largest pid the kernel hands out, which no process has now (checked), stands for
    // a run that was killed; a number above it (a date, say) is nobody's pid and is kept.
    let dead: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!Path::new("/proc").join(dead.to_string()).exists());
    for d in [
        format!("run-{dead}"),
        format!("baseline-{dead}"),
        "run-1".into(),
        "mine".into(),
        "run-20240101".into(),
    ] {
        std::fs::create_dir_all(data.join(&d).join("shard-000")).unwrap();
        std::fs::write(data.join(&d).join("shard-000/seg"), vec![7u8; 1 << 20]).unwrap();
    }
    std::fs::write(data.join(format!("device-limit-{dead}.dat")), vec![7u8; 1 << 20]).unwrap();
    let o = perf(
        &data,
        &out,
        &["run", "--secs", "0.3", "--warmup-secs", "0", "--size", "256"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // PID 1 is alive, so its `run-1` is somebody's run in progress.
    let kept = vec!["mine".to_string(), "run-1".to_string(), "run-20240101".to_string()];
    assert_eq!(names(&data), kept);
    assert!(data.join("mine/shard-000/seg").exists());
    let o = perf(
        &data,
        &out,
        &["baseline", "--secs", "0.3", "--warmup-secs", "0", "--mode", "written"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(names(&data), kept);
    let _ = std::fs::remove_dir_all(&b);
}

/// A run that fills the disk fails with the engine's error and a hint, and removes what it
/// wrote: the file system is as empty afterwards as before.
#[test]
fn a_run_that_fills_the_disk_says_so_and_removes_its_data() {
    if !loop_mount::running_as_root() {
        eprintln!("SKIPPED a_run_that_fills_the_disk_says_so_and_removes_its_data: needs root to mount a loop device");
        return;
    }
    let b = base("full");
    let mount = match loop_mount::LoopMount::new(&b, "48M") {
        Ok(m) => m,
        Err(why) => {
            eprintln!(
                "SKIPPED a_run_that_fills_the_disk_says_so_and_removes_its_data: cannot mount a loop device: {why}"
            );
            return;
        }
    };
    let data = mount.mnt.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let free_before = free_bytes(&mount.mnt);
    // 4 MiB segments: a growing log passes 48 MiB within a fraction of a second.
    let o = perf(
        &data,
        &b.join("out"),
        &[
            "run",
            "--mode",
            "written",
            "--size",
            "65536",
            "--concurrency",
            "4",
            "--segment-mib",
            "4",
            "--secs",
            "20",
            "--warmup-secs",
            "0",
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "a run on a 48 MiB disk did not fail: {err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(err.contains("file system is full"), "no hint: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(names(&data).is_empty(), "left behind: {:?}", names(&data));
    let free_after = free_bytes(&mount.mnt);
    assert!(
        free_after + (256 << 10) >= free_before,
        "free space {free_before} before the run, {free_after} after"
    );
    drop(mount);
    let _ = std::fs::remove_dir_all(&b);
}

fn free_bytes(p: &Path) -> u64 {
    let o = Command::new("df")
        .arg("-B1")
        .arg("--output=avail")
        .arg(p)
        .output()
        .expect("df");
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df output")
}

/// A memory file system is refused for every subcommand, as the engine refuses it (the device
/// pass would time memory, the baseline's fdatasync would cost nothing), and nothing is left
/// there: a directory made for the run is removed again.
#[test]
fn memory_file_systems_are_refused_and_left_as_they_were() {
    let shm = Path::new("/dev/shm");
    let is_tmpfs = Command::new("stat")
        .args(["-f", "-c", "%T", "/dev/shm"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "tmpfs")
        .unwrap_or(false);
    if !is_tmpfs {
        eprintln!("SKIPPED memory_file_systems_are_refused_and_left_as_they_were: /dev/shm is not a tmpfs here");
        return;
    }
    let out = base("shm-out");
    for args in [
        &["device", "--bytes", "1048576", "--ops", "10"][..],
        &["baseline", "--secs", "0.2"][..],
        &["run", "--secs", "0.2"][..],
    ] {
        let data = shm.join(format!("aof-perf-shm-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        let o = perf(&data, &out, args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success(),
            "{args:?} ran on tmpfs: {}",
            String::from_utf8_lossy(&o.stdout)
        );
        assert!(err.contains("memory file system"), "{args:?}: {err}");
        assert!(!data.exists(), "{args:?} left {}", data.display());
    }
    let _ = std::fs::remove_dir_all(&out);
}

/// The bridge scenario's default object store (`file://`, under --dir) loses this run's
/// objects when the run ends; they once stayed, a backlog's worth (256 MiB by default) a run.
#[test]
fn a_bridge_run_removes_its_objects_from_the_default_store() {
    let b = base("bridge-objects");
    let (data, out) = (b.join("data"), b.join("out"));
    let o = perf(
        &data,
        &out,
        &["bridge", "--secs", "0.3", "--backlog-mib", "4", "--pace-mib", "0"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.join("bridge.json").exists());
    let store = data.join("tier2-store");
    let left = if store.exists() { names(&store) } else { Vec::new() };
    assert!(left.is_empty(), "objects left in the default store: {left:?}");
    // Nothing of the run stays under --dir: no engine data, no raw PUT file, no empty store.
    assert!(names(&data).is_empty(), "left under --dir: {:?}", names(&data));
    let _ = std::fs::remove_dir_all(&b);
}

/// A store the user names (`--target file://DIR` here; an S3 bucket takes the same path
/// through the store's listing) keeps nothing of the run: every object under the run's key
/// prefix is listed and deleted at the end, and the store's other objects stay.
#[test]
fn a_bridge_run_removes_its_objects_from_a_named_store_and_nothing_else() {
    let b = base("bridge-named");
    let (data, out, store) = (b.join("data"), b.join("out"), b.join("store"));
    std::fs::create_dir_all(store.join("someone-else")).unwrap();
    std::fs::write(store.join("someone-else/obj"), b"keep me").unwrap();
    let target = format!("file://{}", store.display());
    let o = perf(
        &data,
        &out,
        &[
            "bridge",
            "--target",
            &target,
            "--secs",
            "0.3",
            "--backlog-mib",
            "4",
            "--pace-mib",
            "0",
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    // It did upload (else there was nothing to remove), and says how many it removed.
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("bridge.json")).unwrap()).unwrap();
    let uploaded = r["busy"][0]["run"]["engine"][0]["tier2_uploaded_bytes"]
        .as_u64()
        .unwrap();
    assert!(uploaded > 0, "{r}");
    let line = err
        .lines()
        .find(|l| l.starts_with("removed this run's "))
        .unwrap_or_else(|| panic!("no cleanup line: {err}"));
    let n: usize = line.split(' ').nth(3).unwrap().parse().unwrap();
    assert!(n > 0, "{line}");
    assert_eq!(names(&store), ["someone-else"], "{line}");
    assert_eq!(std::fs::read(store.join("someone-else/obj")).unwrap(), b"keep me");
    let _ = std::fs::remove_dir_all(&b);
}
