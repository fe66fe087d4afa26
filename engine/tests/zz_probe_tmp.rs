mod common;
use aof_engine::Durability;
use common::*;
fn fds_under(p: &std::path::Path) -> Vec<String> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        if let Ok(t) = std::fs::read_link(e.path()) {
            if t.starts_with(p) { v.push(t.display().to_string()); }
        }
    }
    v
}
#[test]
fn probe() {
    let dir = tempdir("probe");
    let e = open(small_config(&dir, 1));
    let h = e.handle();
    h.create_log("x").wait().unwrap();
    for i in 0..100u64 { h.append("x", payload(0, i, 20000), Durability::Written).wait().unwrap(); }
    eprintln!("open: {:?}", fds_under(&dir).len());
    e.close().unwrap();
    eprintln!("after close: {:?}", fds_under(&dir));
    std::thread::sleep(std::time::Duration::from_secs(1));
    eprintln!("after 1s: {:?}", fds_under(&dir));
}
