//! The client in a terminal: run under a pseudo-terminal, its output (the
//! result lines on stdout, the progress bars on stderr, both on the same
//! screen) is fed to a terminal emulator, and every result line must be on
//! the screen at the end, with no bar left behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use framekit_tests::{ServerProcess, write_random_file};
use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
use rustix::termios::{Winsize, tcsetwinsize};
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

/// The screen: tall enough for every line of the run.
const ROWS: u16 = 120;
const COLS: u16 = 200;

/// Runs `cmd` with stdout and stderr on a new pseudo-terminal of
/// `ROWS` x `COLS`, and returns everything it wrote to it and its status.
fn run_in_terminal(mut cmd: Command) -> (Vec<u8>, std::process::ExitStatus) {
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).unwrap();
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    let name = ptsname(&master, Vec::new()).unwrap();
    let slave = OpenOptions::new()
        .read(true)
        .write(true)
        .open(Path::new(name.to_str().unwrap()))
        .unwrap();
    tcsetwinsize(
        &slave,
        Winsize {
            ws_row: ROWS,
            ws_col: COLS,
            ws_xpixel: 0,
            ws_ypixel: 0,
        },
    )
    .unwrap();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave.try_clone().unwrap())
        .env("TERM", "xterm-256color")
        .spawn()
        .unwrap();
    // The command holds its copies of the terminal too: the reader sees
    // the end only once every copy is closed.
    drop(cmd);
    drop(slave);
    let reader = std::thread::spawn(move || {
        let mut master = File::from(master);
        let mut screen = Vec::new();
        let mut buf = [0u8; 65536];
        // Linux answers EIO once no one holds the other side any more.
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            screen.extend_from_slice(&buf[..n]);
        }
        screen
    });
    let status = child.wait().unwrap();
    (reader.join().unwrap(), status)
}

#[test]
fn every_result_line_is_on_the_screen_at_the_end_and_no_bar_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let src = work.join("files");
    std::fs::create_dir_all(&src).unwrap();
    let mut hashes = Vec::new();
    // Big files, so that the bars are drawn while files finish, and small
    // ones, which finish between two drawings.
    for i in 0..30u64 {
        let size = if i % 3 == 0 { 3000 } else { 3 << 20 };
        let name = format!("f{i:02}");
        hashes.push((
            name.clone(),
            size,
            write_random_file(&src.join(&name), i, size),
        ));
    }
    let server = ServerProcess::start(&dir.path().join("root"), &[]);
    let mut cmd = server.loud_client(&work);
    cmd.args(["put", "files"]);
    let (output, status) = run_in_terminal(cmd);
    assert!(status.success(), "{}", String::from_utf8_lossy(&output));

    let rows = std::num::NonZeroU16::new(ROWS).unwrap();
    let cols = std::num::NonZeroU16::new(COLS).unwrap();
    let mut parser = vt100::Parser::new(rows, cols, 0);
    parser.process(&output);
    let screen = parser.screen().contents();
    let lines: Vec<&str> = screen.lines().map(str::trim_end).collect();
    for (name, size, hash) in &hashes {
        let expected = format!("put files/{name}: {size} bytes, blake3 {}", hash.to_hex());
        assert!(
            lines.contains(&expected.as_str()),
            "{expected:?} is not on the screen:\n{screen}"
        );
    }
    assert!(
        lines.iter().any(|l| l.starts_with("put: 30 files, ")),
        "no summary on the screen:\n{screen}"
    );
    // The bars went: nothing on the screen but the lines printed.
    assert_eq!(
        lines.iter().filter(|l| !l.is_empty()).count(),
        hashes.len() + 1,
        "{screen}"
    );
    // And they were drawn at all: the test saw a terminal's output.
    assert!(
        String::from_utf8_lossy(&output).contains("ETA"),
        "no progress bar was drawn"
    );
}
