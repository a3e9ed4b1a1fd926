//! Interrupted transfers continue where they stopped: clients killed in the
//! middle of a put or a get, again and again, then a transfer that
//! finishes; the result is whole and the bytes sent after each restart are
//! what was missing. And what must not be resumed is not.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use framekit_tests::{
    Backend, Dice, Logged, Running, ServerProcess, assert_success, eventually, hash_file, stderr,
    stored_for, tree, write_random_file,
};
use std::path::Path;
use std::time::{Duration, Instant};

/// The file killed again and again: large enough that what the receiving
/// side loses at each kill (on S3, up to the one 8 MiB part it had not
/// stored yet) stays under the 10% bound of [`check_resumed`], with room
/// for [`tail`] after the last kill point.
fn size() -> u64 {
    match Backend::current() {
        Backend::Local => 200 << 20,
        Backend::Garage | Backend::Moto => 320 << 20,
    }
}

/// What stays unsent at every kill point: more than the kernel's socket
/// buffers (up to 32 MiB received, 4 MiB sent here) and the receiver's
/// pipeline (on S3, four parts of 8 MiB) can hold, so that a receiver left
/// to drain a paused sender cannot finish the transfer before it is
/// killed.
fn tail() -> u64 {
    match Backend::current() {
        Backend::Local => 48 << 20,
        Backend::Garage | Backend::Moto => 80 << 20,
    }
}

/// The size of the files the other tests interrupt once, at most 32 MiB
/// in: with [`tail`] to spare.
fn file_size() -> u64 {
    32 * (1 << 20) + tail() + (16 << 20)
}

/// How many times each transfer is killed before it is let finish.
const KILLS: usize = 3;

/// Points to kill a transfer at, when `held` bytes of the file are on the
/// receiving side: one in each third of the file, at random within it,
/// and never in the last [`tail`] bytes.
fn kill_points(dice: &mut Dice) -> Vec<u64> {
    let size = size();
    (0..KILLS as u64)
        .map(|k| {
            let third = size / 3;
            let end = ((k + 1) * third - third / 10).min(size - tail());
            dice.pick(k * third + third / 10..end)
        })
        .collect()
}

/// Polls `held` every `poll` until it reaches `point`; panics if `client`
/// exits first.
fn wait_until_held(client: &mut Running, point: u64, poll: Duration, held: impl Fn() -> u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while held() < point {
        assert!(
            !client.has_exited(),
            "the transfer ended before it could be interrupted at {point}"
        );
        assert!(Instant::now() < deadline, "the transfer stalled");
        std::thread::sleep(poll);
    }
}

/// Waits until the server has logged `count` requests of `op` on `name`.
fn logged(server: &ServerProcess, op: &str, name: &str, count: usize) -> Vec<Logged> {
    eventually(&format!("the server logged {count} {op}s"), || {
        server.requests_of(op, name).len() >= count
    });
    server.requests_of(op, name)
}

/// Checks the log of a transfer killed after holding `held[i]` bytes each
/// time, then finished: each restart started exactly at what the other
/// side held, the last one sent exactly the rest, and in all, less than
/// 10% more than the file was sent. Returns the bytes sent in all.
fn check_resumed(runs: &[Logged], held: &[u64], what: &str) -> u64 {
    let size = size();
    assert_eq!(runs.len(), held.len() + 1, "{runs:?}");
    assert_eq!(runs[0].offset, 0);
    for (run, held) in runs[1..].iter().zip(held) {
        assert_eq!(run.offset, *held, "a restart started elsewhere: {runs:?}");
    }
    let last = runs.last().unwrap();
    assert_eq!(last.outcome, "ok");
    assert_eq!(last.bytes, size - held.last().unwrap());
    assert!(runs[..held.len()].iter().all(|r| r.outcome == "failed"));
    let total: u64 = runs.iter().map(|r| r.bytes).sum();
    let extra = total - size;
    eprintln!(
        "{what}: held at the kills {held:?}, sent per run {:?}: {total} bytes for a {size}-byte file, {extra} extra ({:.2}%)",
        runs.iter().map(|r| r.bytes).collect::<Vec<_>>(),
        extra as f64 * 100.0 / size as f64
    );
    assert!(
        extra * 10 < size,
        "{what}: {extra} bytes sent more than the file's {size}"
    );
    total
}

#[test]
fn a_put_killed_again_and_again_resumes_and_sends_only_what_was_missing() {
    let mut dice = Dice::new("put kills");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let hash = write_random_file(&work.join("big.bin"), 801, size());
    let server = ServerProcess::start(&root, &[]);
    let stored = server.stored();

    let mut held = Vec::new();
    for (i, point) in kill_points(&mut dice).into_iter().enumerate() {
        let mut client = Running::spawn(server.client(&work).args(["put", "big.bin"]));
        wait_until_held(&mut client, point, stored.poll(), || stored.staged_bytes());
        let out = client.kill();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&out.status),
            Some(9)
        );
        // The server noticed, and kept what it had received.
        logged(&server, "put", "big.bin", i + 1);
        assert!(!stored.exists("big.bin"));
        assert_eq!(stored.uploads_in_progress(), 0);
        assert_eq!(stored.kept(), 1, "{:?}", stored.everything());
        held.push(stored.staged_bytes());
    }
    let out = server
        .client(&work)
        .args(["put", "big.bin"])
        .output()
        .unwrap();
    assert_success(&out);
    assert_eq!(stored.hash("big.bin"), hash);
    assert_eq!(stored.kept(), 0, "{:?}", stored.everything());

    let runs = logged(&server, "put", "big.bin", KILLS + 1);
    check_resumed(&runs, &held, "put");
}

/// The size of `path`, 0 if it does not exist.
fn size_of(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

#[test]
fn a_get_killed_again_and_again_resumes_and_sends_only_what_was_missing() {
    let mut dice = Dice::new("get kills");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let hash = stored_for(&root).write_random("big.bin", 802, size());
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let server = ServerProcess::start(&root, &[]);
    let part = work.join("big.bin.part");

    let mut held = Vec::new();
    for (i, point) in kill_points(&mut dice).into_iter().enumerate() {
        let mut client = Running::spawn(server.client(&work).args(["get", "big.bin"]));
        wait_until_held(&mut client, point, Duration::from_millis(1), || {
            size_of(&part)
        });
        // A killed receiver loses what its kernel had buffered for it (up
        // to tcp_rmem's limit), whatever the protocol; so that the bytes
        // counted are those of resuming, the server is paused first and
        // the client left to drain the connection, then killed.
        server.signal("STOP");
        let mut last = u64::MAX;
        while size_of(&part) != last {
            last = size_of(&part);
            std::thread::sleep(Duration::from_millis(100));
        }
        let out = client.kill();
        server.signal("CONT");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&out.status),
            Some(9),
            "{out:?}"
        );
        logged(&server, "get", "big.bin", i + 1);
        assert_eq!(tree(&work), ["big.bin.part", "big.bin.part.meta"]);
        held.push(size_of(&part));
    }
    let out = server
        .client(&work)
        .args(["get", "big.bin"])
        .output()
        .unwrap();
    assert_success(&out);
    assert_eq!(hash_file(&work.join("big.bin")), hash);
    assert_eq!(tree(&work), ["big.bin"]);

    let runs = logged(&server, "get", "big.bin", KILLS + 1);
    check_resumed(&runs, &held, "get");
}

/// Puts `local` as `name` until the server holds `point` bytes of it, then
/// kills the client and waits until the server has kept them.
fn interrupted_put(server: &ServerProcess, work: &Path, local: &str, name: &str, point: u64) {
    let before = server.requests_of("put", name).len();
    let mut client = Running::spawn(server.client(work).args(["put", local, "--name", name]));
    let stored = server.stored();
    wait_until_held(&mut client, point, stored.poll(), || stored.staged_bytes());
    client.kill();
    logged(server, "put", name, before + 1);
}

#[test]
fn another_file_of_the_same_name_and_size_is_never_continued_from_a_partial_upload() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let server = ServerProcess::start(&dir.path().join("root"), &[]);
    let size = file_size();
    write_random_file(&work.join("f"), 810, size);
    interrupted_put(&server, &work, "f", "same", 21 << 20);
    assert_eq!(server.stored().kept(), 1);

    // Another content, same name and size: a fresh start.
    let other = write_random_file(&work.join("f"), 811, size);
    assert_success(
        &server
            .client(&work)
            .args(["put", "f", "--name", "same"])
            .output()
            .unwrap(),
    );
    assert_eq!(server.stored().hash("same"), other);
    let runs = logged(&server, "put", "same", 2);
    assert_eq!(runs.last().unwrap().offset, 0, "{runs:?}");
    assert_eq!(runs.last().unwrap().bytes, size);
    // The partial upload of the first content is gone with the publish.
    assert_eq!(server.stored().kept(), 0);
    assert_eq!(server.stored().uploads_in_progress(), 0);
}

#[test]
fn a_changed_file_that_keeps_its_key_is_caught_by_the_hash_and_sent_whole() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let server = ServerProcess::start(&dir.path().join("root"), &[]);
    let size = file_size();
    let path = work.join("f");
    write_random_file(&path, 820, size);
    let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
    interrupted_put(&server, &work, "f", "f", 32 << 20);

    // Changed in the middle only, and its time set back: its resume key is
    // the same, so the server offers to continue.
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.seek(SeekFrom::Start(16 << 20)).unwrap();
        file.write_all(b"changed").unwrap();
        file.set_modified(modified).unwrap();
    }
    let changed = hash_file(&path);
    // Not quiet: the notes say what happened.
    let out = std::process::Command::new(framekit_tests::bin("client"))
        .current_dir(&work)
        .args(["--server", &server.addr.to_string(), "put", "f"])
        .env_remove("FRAMEKIT_TOKEN")
        .output()
        .unwrap();
    assert_success(&out);
    let err = stderr(&out);
    assert!(err.contains("resuming the upload of f at byte "), "{err}");
    assert!(
        err.contains("did not verify with this file: sending it whole"),
        "{err}"
    );
    assert_eq!(server.stored().hash("f"), changed);
    let runs = logged(&server, "put", "f", 3);
    let outcomes: Vec<_> = runs.iter().map(|r| r.outcome.as_str()).collect();
    assert_eq!(outcomes, ["failed", "integrity mismatch", "ok"], "{runs:?}");
    assert!(runs[1].offset > 0);
    assert_eq!(runs[2].offset, 0);
    assert_eq!(server.stored().kept(), 0);
}

#[test]
fn kept_uploads_survive_a_restart_and_expire_after_their_time_to_live() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    // Interrupted after some whole parts (of 8 MiB on S3).
    write_random_file(&work.join("f"), 830, file_size());
    let mut server = ServerProcess::start(&root, &[]);
    interrupted_put(&server, &work, "f", "f", 16 << 20);
    let held = server.stored().staged_bytes();
    server.kill();

    // A restarted server still has it...
    let mut server = ServerProcess::start(&root, &[]);
    assert_eq!(server.stored().kept(), 1);
    assert_eq!(server.stored().staged_bytes(), held);
    server.kill();
    // ...until its time to live is over.
    let server = ServerProcess::start(&root, &["--partial-ttl", "1"]);
    eventually("the kept upload expires", || server.stored().kept() == 0);
    assert_success(&server.client(&work).args(["put", "f"]).output().unwrap());
    let runs = logged(&server, "put", "f", 1);
    assert_eq!(runs.last().unwrap().offset, 0, "{runs:?}");
}

#[test]
fn put_without_resume_keeps_nothing_of_an_interrupted_upload() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    write_random_file(&work.join("f"), 840, file_size());
    let server = ServerProcess::start(&root, &[]);
    let stored = server.stored();
    let mut client = Running::spawn(server.client(&work).args(["put", "f", "--no-resume"]));
    wait_until_held(&mut client, 16 << 20, stored.poll(), || {
        stored.staged_bytes()
    });
    client.kill();
    logged(&server, "put", "f", 1);
    eventually("the upload is dropped", || {
        stored.uploads_in_progress() == 0
    });
    assert_eq!(stored.kept(), 0);
    assert!(stored.is_empty(), "{:?}", stored.everything());
}

#[test]
fn get_starts_over_when_the_remote_file_changed_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    stored_for(&root).write_random("f", 850, 32 << 20);
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let server = ServerProcess::start(&root, &[]);
    let mut client = Running::spawn(server.client(&work).args(["get", "f"]));
    wait_until_held(&mut client, 1 << 20, Duration::from_millis(1), || {
        size_of(&work.join("f.part"))
    });
    client.kill();
    logged(&server, "get", "f", 1);
    assert!(size_of(&work.join("f.part")) > 0);

    // Replaced on the server meanwhile.
    let new = write_random_file(&dir.path().join("new"), 851, 20 << 20);
    assert_success(
        &server
            .client(dir.path())
            .args(["put", "new", "--name", "f", "--force"])
            .output()
            .unwrap(),
    );
    let out = std::process::Command::new(framekit_tests::bin("client"))
        .current_dir(&work)
        .args(["--server", &server.addr.to_string(), "get", "f"])
        .env_remove("FRAMEKIT_TOKEN")
        .output()
        .unwrap();
    assert_success(&out);
    let err = stderr(&out);
    assert!(
        err.contains("f changed on the server since the partial download: starting over"),
        "{err}"
    );
    assert_eq!(hash_file(&work.join("f")), new);
    assert_eq!(tree(&work), ["f"]);
    let runs = logged(&server, "get", "f", 2);
    assert_eq!(runs.last().unwrap().offset, 0);
    assert_eq!(runs.last().unwrap().bytes, 20 << 20);
}

#[test]
fn get_without_resume_discards_a_partial_download() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let hash = stored_for(&root).write_random("f", 860, 32 << 20);
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let server = ServerProcess::start(&root, &[]);
    let mut client = Running::spawn(server.client(&work).args(["get", "f"]));
    wait_until_held(&mut client, 1 << 20, Duration::from_millis(1), || {
        size_of(&work.join("f.part"))
    });
    client.kill();
    logged(&server, "get", "f", 1);

    assert_success(
        &server
            .client(&work)
            .args(["get", "f", "--no-resume"])
            .output()
            .unwrap(),
    );
    assert_eq!(hash_file(&work.join("f")), hash);
    assert_eq!(tree(&work), ["f"]);
    let runs = logged(&server, "get", "f", 2);
    assert_eq!(runs.last().unwrap().offset, 0);
    assert_eq!(runs.last().unwrap().bytes, 32 << 20);
}
