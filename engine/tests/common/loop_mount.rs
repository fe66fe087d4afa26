//! A small ext4 file system on a loop device, for tests that need a real full disk (ENOSPC
//! under O_DIRECT). Needs root; callers skip when `running_as_root()` is false. Shared by the
//! engine's tests and, through `#[path]`, by the perf harness's.

use std::path::{Path, PathBuf};

/// Mounts a small ext4 image through a loop device; unmounts and detaches on drop, also when
/// the test panics.
pub struct LoopMount {
    image: PathBuf,
    pub mnt: PathBuf,
    mounted: bool,
}

impl LoopMount {
    pub fn new(base: &Path, size: &str) -> Result<LoopMount, String> {
        let image = base.join("disk.img");
        let mnt = base.join("mnt");
        std::fs::create_dir_all(&mnt).map_err(|e| e.to_string())?;
        let mut m = LoopMount {
            image,
            mnt,
            mounted: false,
        };
        let run = |args: &[&str]| -> Result<(), String> {
            let o = std::process::Command::new(args[0])
                .args(&args[1..])
                .output()
                .map_err(|e| format!("{}: {e}", args[0]))?;
            if o.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{args:?} failed: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ))
            }
        };
        let img = m.image.to_str().unwrap().to_owned();
        let mnt_s = m.mnt.to_str().unwrap().to_owned();
        run(&["truncate", "-s", size, &img])?;
        run(&["mkfs.ext4", "-q", "-F", "-b", "4096", &img])?;
        run(&["mount", "-o", "loop", &img, &mnt_s])?;
        m.mounted = true;
        Ok(m)
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        if self.mounted {
            let out = std::process::Command::new("umount").arg(&self.mnt).output();
            let ok = out.as_ref().map(|o| o.status.success()).unwrap_or(false);
            if !ok {
                let why = out
                    .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_owned())
                    .unwrap_or_default();
                eprintln!("umount {} failed ({why}); detaching lazily", self.mnt.display());
                let _ = std::process::Command::new("umount").arg("-l").arg(&self.mnt).status();
            }
        }
        // `mount -o loop` sets autoclear; detach explicitly anyway in case it did not.
        if let Ok(o) = std::process::Command::new("losetup")
            .arg("-j")
            .arg(&self.image)
            .output()
        {
            for line in String::from_utf8_lossy(&o.stdout).lines() {
                if let Some(dev) = line.split(':').next().filter(|d| d.starts_with("/dev/loop")) {
                    let _ = std::process::Command::new("losetup").arg("-d").arg(dev).status();
                }
            }
        }
        let _ = std::fs::remove_file(&self.image);
        let _ = std::fs::remove_dir(&self.mnt);
    }
}

pub fn running_as_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}
