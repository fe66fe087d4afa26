//! Helpers shared by the harness's tests, which run the `aof-perf` binary itself.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A fresh, empty directory under the target dir for the test `name` of this process.
pub fn base(name: &str) -> PathBuf {
    let b = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("aof-perf-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&b);
    std::fs::create_dir_all(&b).expect("create the test's directory");
    b
}

/// Runs `aof-perf --dir data --out out ARGS` to the end, capturing its output.
pub fn aof_perf(data: &Path, out: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_aof-perf"))
        .arg("--dir")
        .arg(data)
        .arg("--out")
        .arg(out)
        .args(args)
        .output()
        .expect("run aof-perf")
}

/// A JSON report the harness wrote.
pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
