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

/// Plays `input` as everything a client sends on one connection, against
/// the real connection handler with a fresh root made in `base` (an empty
/// directory, best in memory: every published upload is synced), and
/// checks that:
/// nothing panics or hangs; nothing exists beside the root afterwards;
/// the staging area is empty; and every published file's BLAKE3 hash was
/// sent by the client (so no unverified content was published).
pub fn session(input: &[u8], base: &Path) {
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
