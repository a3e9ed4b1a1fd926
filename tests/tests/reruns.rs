//! Reruns send only what differs: a put or get done again transfers
//! nothing of the files already identical on the other side, and a put cut
//! short sends, when done again, only what was missing and the rest of the
//! file it was cut in. Bytes are counted by a forwarder between the client
//! and the server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use framekit_tests::proxy::CountingProxy;
use framekit_tests::{
    Dice, ServerProcess, assert_success, client_at, eventually, hash_file, loud_client_at,
    random_bytes, stderr, tree, write_random_file,
};
use std::path::Path;

/// Writes 1,000 files of 1 to 48 KiB (about 24 MiB) under `dir/many`, and
/// returns their total size.
fn thousand_files(dir: &Path) -> u64 {
    let mut dice = Dice::new("file sizes");
    let mut total = 0;
    for i in 0..1000u64 {
        let len = dice.pick(1024..48 * 1024);
        let sub = dir.join(format!("many/d{}", i % 10));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(
            sub.join(format!("f{i:04}")),
            random_bytes(i, usize::try_from(len).unwrap()),
        )
        .unwrap();
        total += len;
    }
    total
}

#[test]
fn a_rerun_of_a_completed_put_of_1000_files_sends_under_5_percent() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let total = thousand_files(&work);
    let server = ServerProcess::start(&dir.path().join("root"), &[]);
    let cache = dir.path().join("cache");

    let first = CountingProxy::start(server.addr);
    let out = client_at(first.addr, &work)
        .env("XDG_CACHE_HOME", &cache)
        .args(["put", "many"])
        .output()
        .unwrap();
    assert_success(&out);
    assert!(first.sent() > total, "{} of {total}", first.sent());

    let rerun = CountingProxy::start(server.addr);
    let out = loud_client_at(rerun.addr, &work)
        .env("XDG_CACHE_HOME", &cache)
        .args(["put", "many"])
        .output()
        .unwrap();
    let lines = assert_success(&out);
    assert_eq!(lines.lines().count(), 1000);
    assert!(
        lines.lines().all(|l| l.contains(": unchanged, ")),
        "{lines}"
    );
    assert!(
        stderr(&out).starts_with("put: 1000 files, 1000 unchanged, 0 bytes sent in "),
        "{}",
        stderr(&out)
    );
    eprintln!(
        "put of 1000 files: first run sent {} bytes (received {}), rerun sent {} bytes (received {})",
        first.sent(),
        first.received(),
        rerun.sent(),
        rerun.received()
    );
    assert!(
        rerun.sent() * 20 < first.sent(),
        "the rerun sent {} bytes, the first run {}",
        rerun.sent(),
        first.sent()
    );
    // One changed file is found and refused without --force, sent with it.
    let changed = work.join("many/d3/f0003");
    std::fs::write(&changed, b"new content").unwrap();
    let out = client_at(server.addr, &work)
        .args(["put", "many"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(9), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "\"many/d3/f0003\" exists on the server with other content (use --force to replace it)"
        ),
        "{}",
        stderr(&out)
    );
    let out = client_at(server.addr, &work)
        .args(["put", "many", "--force"])
        .output()
        .unwrap();
    assert_success(&out);
    assert_eq!(
        server.stored().read("many/d3/f0003").unwrap(),
        b"new content"
    );
    // The client kept the hash of every file it sent: a rerun reads none.
    let records = std::fs::read_to_string(cache.join("framekit/hashes")).unwrap();
    assert_eq!(records.lines().count(), 1 + 1000);
}

#[test]
fn a_rerun_after_an_interrupted_put_sends_only_what_was_missing() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let src = work.join("tree");
    let mut small = 0u64;
    for (sub, seed) in [("a", 0u64), ("c", 1000)] {
        std::fs::create_dir_all(src.join(sub)).unwrap();
        for i in 0..200u64 {
            let len = 2000 + (i * 97) % 20_000;
            std::fs::write(
                src.join(format!("{sub}/f{i:03}")),
                random_bytes(seed + i, usize::try_from(len).unwrap()),
            )
            .unwrap();
            if sub == "a" {
                small += len;
            }
        }
    }
    // In name order: a/..., then b.bin, then c/... (An S3 store keeps
    // whole parts of 8 MiB: the cut, in the middle, leaves one.)
    let big = 32u64 << 20;
    write_random_file(&src.join("b.bin"), 77, big);
    let server = ServerProcess::start(&dir.path().join("root"), &[]);

    // Cut in the middle of b.bin. (Without --no-retry the client would
    // try again for a while on new connections, which the proxy closes.)
    let cut = CountingProxy::cutting_after(server.addr, small + big / 2);
    let out = client_at(cut.addr, &work)
        .args(["put", "tree", "--no-retry"])
        .output()
        .unwrap();
    assert!(cut.was_cut());
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    eventually("the server kept the interrupted upload", || {
        server.requests_of("put", "tree/b.bin").len() == 1
    });
    assert_eq!(server.stored().kept(), 1);
    let kept = server.stored().staged_bytes();
    assert!(kept > 0 && kept < big, "{kept}");

    // What the server is missing: files it does not hold identical.
    let missing: u64 = tree(&src)
        .into_iter()
        .filter(|rel| src.join(rel).is_file())
        .filter(|rel| {
            let name = format!("tree/{rel}");
            server.stored().size(&name).is_none()
                || server.stored().hash(&name) != hash_file(&src.join(rel))
        })
        .map(|rel| std::fs::metadata(src.join(rel)).unwrap().len())
        .sum();
    assert!(missing > big, "{missing}");

    let rerun = CountingProxy::start(server.addr);
    let out = loud_client_at(rerun.addr, &work)
        .args(["put", "tree"])
        .output()
        .unwrap();
    assert_success(&out);
    let needed = missing - kept;
    eprintln!(
        "interrupted put: cut after {} bytes sent; the server kept {kept} bytes of b.bin; \
         {missing} bytes of files were missing; the rerun sent {} bytes (received {})",
        cut.sent(),
        rerun.sent(),
        rerun.received()
    );
    // What was needed, and little more: requests, trailers and
    // descriptions, under 200 bytes a file.
    assert!(rerun.sent() >= needed, "{} < {needed}", rerun.sent());
    assert!(
        rerun.sent() < needed + 401 * 200,
        "{} sent for {needed} needed",
        rerun.sent()
    );
    assert!(
        stderr(&out).contains(&format!("resuming the upload of tree/b.bin at byte {kept}")),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        server.stored().hash("tree/b.bin"),
        hash_file(&src.join("b.bin"))
    );
}

#[test]
fn a_rerun_of_a_completed_get_receives_under_5_percent_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    thousand_files(&work);
    let server = ServerProcess::start(&dir.path().join("root"), &[]);
    assert_success(
        &client_at(server.addr, &work)
            .args(["put", "many"])
            .output()
            .unwrap(),
    );
    let back = dir.path().join("back");
    std::fs::create_dir(&back).unwrap();

    let first = CountingProxy::start(server.addr);
    assert_success(
        &client_at(first.addr, &back)
            .args(["get", "many/"])
            .output()
            .unwrap(),
    );
    let before: Vec<_> = tree(&back)
        .into_iter()
        .map(|rel| {
            let meta = std::fs::metadata(back.join(&rel)).unwrap();
            (rel, meta.modified().unwrap())
        })
        .collect();

    let rerun = CountingProxy::start(server.addr);
    let out = loud_client_at(rerun.addr, &back)
        .args(["--json", "get", "many/"])
        .output()
        .unwrap();
    let records = assert_success(&out);
    let records: Vec<serde_json::Value> = records
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 1000);
    assert!(
        records
            .iter()
            .all(|r| r["outcome"] == "unchanged" && r["bytes"] == 0)
    );
    eprintln!(
        "get of 1000 files: first run received {} bytes (sent {}), rerun received {} bytes (sent {})",
        first.received(),
        first.sent(),
        rerun.received(),
        rerun.sent()
    );
    assert!(rerun.received() * 20 < first.received());
    // Not written again.
    let after: Vec<_> = tree(&back)
        .into_iter()
        .map(|rel| {
            let meta = std::fs::metadata(back.join(&rel)).unwrap();
            (rel, meta.modified().unwrap())
        })
        .collect();
    assert_eq!(before, after);
}
