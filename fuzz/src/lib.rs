//! What the fuzz targets share: the directory the session targets work in.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// An empty directory for this fuzzing process, made once: in
/// `$FRAMEKIT_FUZZ_DIR` (which `scripts/fuzz` makes, and removes when the
/// run ends), else in `/dev/shm`, else in the temporary directory. Those
/// of processes that are gone are removed first: a fuzzer ends with
/// `exit`, which runs no destructor, so each process leaves its own behind.
pub fn work_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let parent = parent();
        remove_stale(&parent);
        let dir = parent.join(format!("{PREFIX}{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the fuzzing directory");
        dir
    })
}

const PREFIX: &str = "framekit-fuzz-";

fn parent() -> PathBuf {
    if let Some(dir) = std::env::var_os("FRAMEKIT_FUZZ_DIR") {
        return PathBuf::from(dir);
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_owned()
    } else {
        std::env::temp_dir()
    }
}

/// Removes the fuzzing directories in `parent` of processes that are gone.
fn remove_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|pid| pid.parse::<u32>().ok());
        if let Some(pid) = pid
            && !Path::new("/proc").join(pid.to_string()).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
