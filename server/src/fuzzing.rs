//! Helpers for the fuzz targets (compiled only under `cfg(fuzzing)`).

use crate::storage::MinFree;
use crate::{Config, Server, handler};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;

/// The runtime every input runs on, built once per process: building one
/// (and its blocking threads) for each input cost more than the input
/// (61 inputs a second before, see docs/BENCHMARKS.md).
fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    })
}

/// The directory every input's root is made in, once per process: in
/// memory (`/dev/shm`) where there is one, since every published upload is
/// synced, and a disk's sync would set the pace.
fn base() -> &'static Path {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| {
        let parent = parent();
        remove_stale(&parent);
        let base = parent.join(format!("framekit-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).expect("create the fuzzing directory");
        base
    })
}

/// Where the fuzzing directory goes: `$FRAMEKIT_FUZZ_DIR` (which
/// `scripts/fuzz` makes, and removes when the run ends), else `/dev/shm`,
/// else the temporary directory.
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

/// Removes the fuzzing directories in `parent` of processes that are gone:
/// a fuzzer ends with `exit`, which runs no destructor, so each process
/// leaves its directory behind.
fn remove_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.strip_prefix("framekit-fuzz-"))
            .and_then(|pid| pid.parse::<u32>().ok());
        if let Some(pid) = pid
            && !Path::new("/proc").join(pid.to_string()).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Plays `input` as everything a client sends on one connection, against
/// the real connection handler with a fresh root, and checks that:
/// nothing panics or hangs; nothing exists beside the root afterwards;
/// the staging area is empty; and every published file's BLAKE3 hash was
/// sent by the client (so no unverified content was published).
pub fn session(input: &[u8]) {
    let base = base();
    let root = base.join("root");
    let server = Server::new(Config {
        root: root.clone(),
        max_file_size: 1 << 20,
        max_connections: 1,
        idle_timeout: Duration::from_secs(2),
        grace_period: Duration::ZERO,
        // The disk's fullness is not what is fuzzed.
        min_free: MinFree::Bytes(0),
        ..Config::default()
    })
    .expect("open a fresh root");
    runtime().block_on(async {
        let (client, server_end) = tokio::io::duplex(64 * 1024);
        let serve = tokio::spawn(handler::serve(
            server_end,
            server.shared(),
            CancellationToken::new(),
            None,
        ));
        let (mut from_server, mut to_server) = tokio::io::split(client);
        let write = async move {
            // The server may hang up early; that is not an error here.
            let _ = to_server.write_all(input).await;
            let _ = to_server.shutdown().await;
        };
        let read = async move {
            let mut sink = vec![0u8; 64 * 1024];
            while let Ok(n) = from_server.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        };
        tokio::join!(write, read);
        let _ = serve.await;
    });
    // The handler waited for its disk workers, which drop unfinished
    // uploads; a listing's step may still hold the store for a moment.
    drop(server);

    let beside: Vec<_> = std::fs::read_dir(base)
        .expect("read the base directory")
        .map(|e| e.expect("an entry").file_name())
        .collect();
    assert_eq!(beside, ["root"], "files appeared outside the root");
    let staged = std::fs::read_dir(root.join(".framekit/staging"))
        .expect("the staging area")
        .count();
    assert_eq!(staged, 0, "an unfinished upload was left in staging");
    for file in files(&root) {
        let content = std::fs::read(&file).expect("read a published file");
        let hash = blake3::hash(&content);
        assert!(
            input.windows(32).any(|w| w == hash.as_bytes()),
            "{} was published without the client sending its hash",
            file.display()
        );
    }
    std::fs::remove_dir_all(&root).expect("remove the fuzzing root");
}

/// Every file under `root` but the server's reserved area.
fn files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read a directory") {
            let entry = entry.expect("an entry");
            if dir == root && entry.file_name() == framekit_transfer::RESERVED_NAME {
                continue;
            }
            if entry.file_type().expect("a file type").is_dir() {
                stack.push(entry.path());
            } else {
                out.push(entry.path());
            }
        }
    }
    out
}
