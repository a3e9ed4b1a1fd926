//! Helpers for the fuzz targets (compiled only under `cfg(fuzzing)`).

use crate::files::{Options, Staging, get_file};
use crate::progress::Meter;
use crate::session::Session;
use std::io::{self, Read, Write};
use std::path::Path;

thread_local! {
    /// A hidden progress meter, made once: making one costs more than a
    /// short input.
    static METER: Meter = Meter::hidden();
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
/// handshakes, gets a file into `base/out`, then lists (`base`: a
/// directory holding nothing else, best in memory: a download syncs its
/// file, and a disk's sync would set the pace). Checks that nothing panics, that
/// nothing is written outside the destination directory or under another
/// name than the one chosen (or its partial file and description), and
/// that a file is published only with content whose hash the server sent.
pub fn responses(input: &[u8], base: &Path) {
    let out = base.join("out");
    std::fs::create_dir_all(&out).expect("create the destination directory");
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
