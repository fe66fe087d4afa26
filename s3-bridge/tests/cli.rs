//! The documented CLI exists and works end to end on a file:// target.

use std::process::Command;

fn bridge() -> Command {
    Command::new(env!("CARGO_BIN_EXE_aof-s3-bridge"))
}

#[test]
fn help_lists_the_commands() {
    let out = bridge().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in ["put", "get", "head", "delete", "make-bucket", "sweep", "serve"] {
        assert!(text.contains(cmd), "--help lacks {cmd}:\n{text}");
    }
}

#[test]
fn put_head_get_delete_on_a_file_target() {
    let dir = tempfile::tempdir().unwrap();
    let target = format!("file://{}", dir.path().join("tier2").display());
    let src = dir.path().join("src.bin");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&src, &data).unwrap();
    let run = |args: &[&str]| {
        let out = bridge()
            .args(["--target", &target, "--prefix", "p"])
            .args(args)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (ok, text) = run(&["put", src.to_str().unwrap(), "seg"]);
    assert!(ok, "{text}");
    let crc = crc32c::crc32c(&data);
    assert!(text.contains(&format!("crc32c: {crc}")), "{text}");
    let (ok, text) = run(&["head", "seg"]);
    assert!(ok && text.contains("size: 3000000"), "{text}");
    let back = dir.path().join("back.bin");
    assert!(run(&["get", "seg", back.to_str().unwrap()]).0);
    assert!(std::fs::read(&back).unwrap() == data);
    assert!(run(&["delete", "seg"]).0);
    let (ok, text) = run(&["head", "seg"]);
    assert!(!ok && text.contains("not_found"), "{text}");
}
