//! Helpers for the fuzz targets (compiled only under `cfg(fuzzing)`).

use crate::files::{Options, Staging, get_file};
use crate::progress::Meter;
use crate::session::Session;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

thread_local! {
    /// A hidden progress meter, made once: making one costs more than a
    /// short input.
    static METER: Meter = Meter::hidden();
}

/// The directory every input works in, made once per process: in memory
/// (`/dev/shm`) where there is one, since a download syncs its file, and a
/// disk's sync would set the pace (11,000 inputs a minute on a disk, see
/// docs/BENCHMARKS.md).
fn base() -> &'static Path {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| {
        let parent = parent();
        remove_stale(&parent);
        let base = parent.join(format!("framekit-client-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("out")).expect("create the fuzzing directory");
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
            .and_then(|n| n.strip_prefix("framekit-client-fuzz-"))
            .and_then(|pid| pid.parse::<u32>().ok());
        if let Some(pid) = pid
            && !Path::new("/proc").join(pid.to_string()).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A peer whose every answer is `input`, and which accepts whatever the
/// client sends.
struct Scripted<'a> {
    input: &'a [u8],
}

impl Read for Scripted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Scripted<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Plays `input` as everything a server answers, to a client that
/// handshakes, gets a file, then lists. Checks that nothing panics, that
/// nothing is written outside the destination directory or under another
/// name than the one chosen (or its partial file and description), and
/// that a file is published only with content whose hash the server sent.
pub fn responses(input: &[u8]) {
    let base = base();
    let out = base.join("out");
    let dest = out.join("chosen.bin");

    if let Ok(mut session) = Session::handshake(Scripted { input }, None) {
        let options = Options {
            force: false,
            resume: true,
        };
        let staging =
            Staging::open(&dest, "remote/name.bin", options).expect("a fresh destination");
        let fetched = get_file(
            &mut session,
            "remote/name.bin",
            staging,
            &METER.with(Meter::clone),
            &mut |_| {},
        );
        if fetched.is_ok() && session.is_usable() {
            let _ = session.list("", |_| Ok(()));
        }
    }

    let beside: Vec<_> = std::fs::read_dir(base)
        .expect("read the base directory")
        .map(|e| e.expect("an entry").file_name())
        .collect();
    assert_eq!(
        beside,
        ["out"],
        "files appeared outside the destination directory"
    );
    for entry in std::fs::read_dir(&out).expect("read the destination directory") {
        let entry = entry.expect("an entry");
        let name = entry.file_name();
        match name.to_str() {
            Some("chosen.bin") => {
                let content = std::fs::read(&dest).expect("read the saved file");
                let hash = blake3::hash(&content);
                assert!(
                    input.windows(32).any(|w| w == hash.as_bytes()),
                    "a file was saved without the server sending its hash"
                );
            }
            Some("chosen.bin.part" | "chosen.bin.part.meta") => {}
            _ => panic!("unexpected file in the destination directory: {name:?}"),
        }
        // Cleared for the next input; the directory itself stays.
        std::fs::remove_file(entry.path()).expect("clear the destination directory");
    }
}
