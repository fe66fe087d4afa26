//! Tidy: formatting, clippy, and the rules the compiler cannot check — no locks and no
//! sleeping in the engine, a SAFETY comment on every unsafe block, no unwrap outside tests.

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn sources() -> Vec<(PathBuf, String)> {
    fn walk(d: &Path, out: &mut Vec<(PathBuf, String)>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let s = std::fs::read_to_string(&p).unwrap();
                out.push((p, s));
            }
        }
    }
    let mut v = Vec::new();
    walk(&workspace().join("engine/src"), &mut v);
    v
}

/// The part of a file before its `#[cfg(test)]` module.
fn non_test(s: &str) -> &str {
    s.split("#[cfg(test)]").next().unwrap_or(s)
}

#[test]
fn no_locks_or_sleeps_in_the_engine() {
    // A shard never takes a lock and never blocks its executor thread.
    let banned = [
        (
            "Mutex",
            "shard state is Rc/RefCell; cross-thread traffic goes through the Mailbox",
        ),
        (
            "RwLock",
            "shard state is Rc/RefCell; cross-thread traffic goes through the Mailbox",
        ),
        ("thread::sleep", "use glommio::timer::Timer on a shard"),
        (
            "tokio",
            "the engine never links tokio; Tier2 lives in the s3-bridge process",
        ),
    ];
    for (p, s) in sources() {
        for (word, why) in banned {
            for (n, line) in non_test(&s).lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                assert!(
                    !code.contains(word),
                    "{}:{}: `{word}` is banned: {why}",
                    p.display(),
                    n + 1
                );
            }
        }
    }
}

#[test]
fn unsafe_blocks_carry_a_safety_comment() {
    for (p, s) in sources() {
        let lines: Vec<&str> = s.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            if l.contains("unsafe {") || l.contains("unsafe{") {
                let before = &lines[i.saturating_sub(4)..i];
                assert!(
                    before.iter().any(|b| b.contains("SAFETY:")),
                    "{}:{}: unsafe block without a `// SAFETY:` comment above it",
                    p.display(),
                    i + 1
                );
            }
        }
    }
}

#[test]
fn no_unwrap_outside_tests() {
    // I/O errors are returned with their path; invariants use `expect` with the reason.
    for (p, s) in sources() {
        for (n, line) in non_test(&s).lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            assert!(
                !code.contains(".unwrap()"),
                "{}:{}: use `?` or `expect(\"why\")`",
                p.display(),
                n + 1
            );
        }
    }
}

fn cargo(args: &[&str]) {
    let out = Command::new(env!("CARGO"))
        .args(args)
        .current_dir(workspace())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo {} failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn rustfmt_is_clean() {
    cargo(&["fmt", "--all", "--", "--check"]);
}

#[test]
fn clippy_is_clean() {
    if std::env::var_os("AOF_SKIP_CLIPPY").is_some() {
        eprintln!("AOF_SKIP_CLIPPY set: clippy not run");
        return;
    }
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--target-dir",
        "target/clippy",
        "--",
        "-D",
        "warnings",
    ]);
}
