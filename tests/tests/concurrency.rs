//! Many real `client` processes against one real `server` at the same
//! time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use framekit_tests::{
    RawPeer, Running, ServerProcess, assert_success, hash_file, stderr, tree, write_random_file,
};
use framekit_transfer::{Delete, ErrorCode, MakeDir, PutEager, Request, Response, Stat, Trailer};
use std::collections::HashSet;

#[test]
fn fifty_clients_put_and_get_distinct_files_at_once() {
    const CLIENTS: usize = 50;
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let server = ServerProcess::start(&dir.path().join("root"), &[]);
    // About 1 MiB each, all sizes different.
    let files: Vec<(String, u64, blake3::Hash)> = (0..CLIENTS)
        .map(|i| {
            let i = i as u64;
            let size = (1 << 20) + i * 997;
            let local = format!("in-{i}");
            (
                local.clone(),
                size,
                write_random_file(&work.join(&local), 200 + i, size),
            )
        })
        .collect();

    // Every upload runs at the same time as the others...
    let puts: Vec<Running> = files
        .iter()
        .enumerate()
        .map(|(i, (local, _, _))| {
            let name = format!("client {i}/file.bin");
            Running::spawn(
                server
                    .loud_client(&work)
                    .args(["put", local.as_str(), "--name", &name]),
            )
        })
        .collect();
    for (i, (put, (_, size, hash))) in puts.into_iter().zip(&files).enumerate() {
        let out = put.wait();
        assert_eq!(
            assert_success(&out),
            format!(
                "put client {i}/file.bin: {size} bytes, blake3 {}\n",
                hash.to_hex()
            )
        );
    }
    // ...and so does every download.
    let gets: Vec<Running> = (0..CLIENTS)
        .map(|i| {
            let name = format!("client {i}/file.bin");
            let output = format!("out-{i}");
            Running::spawn(
                server
                    .client(&work)
                    .args(["get", &name, "--output", &output]),
            )
        })
        .collect();
    for get in gets {
        let out = get.wait();
        assert_eq!(assert_success(&out), "");
        assert_eq!(stderr(&out), "");
    }

    for (i, (_, size, hash)) in files.iter().enumerate() {
        let out = work.join(format!("out-{i}"));
        assert_eq!(std::fs::metadata(&out).unwrap().len(), *size);
        assert_eq!(hash_file(&out), *hash, "client {i}");
        let stored = server.stored().hash(&format!("client {i}/file.bin"));
        assert_eq!(stored, *hash, "client {i}");
    }
    // Inputs and outputs, and no temporary file.
    assert_eq!(tree(&work).len(), 2 * CLIENTS);
    assert_eq!(server.stored().uploads_in_progress(), 0);
}

/// Eight random files of 2 MiB in `dir`, as (path, hash).
fn eight_versions(dir: &std::path::Path) -> Vec<(String, blake3::Hash)> {
    (0..8)
        .map(|i| {
            let local = format!("v{i}");
            (
                local.clone(),
                write_random_file(&dir.join(&local), 300 + i, 2 << 20),
            )
        })
        .collect()
}

#[test]
fn eight_forced_puts_of_one_name_at_once_leave_one_whole_content() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let server = ServerProcess::start(&dir.path().join("root"), &[]);
    let versions = eight_versions(&work);

    let puts: Vec<Running> = versions
        .iter()
        .map(|(local, _)| {
            Running::spawn(server.loud_client(&work).args([
                "put",
                local.as_str(),
                "--name",
                "same.bin",
                "--force",
            ]))
        })
        .collect();
    for (put, (_, hash)) in puts.into_iter().zip(&versions) {
        let out = put.wait();
        assert_eq!(
            assert_success(&out),
            format!(
                "put same.bin: {} bytes, blake3 {}\n",
                2 << 20,
                hash.to_hex()
            )
        );
    }

    let stored = server.stored().hash("same.bin");
    let hashes: HashSet<blake3::Hash> = versions.iter().map(|(_, hash)| *hash).collect();
    assert!(
        hashes.contains(&stored),
        "the stored file is none of the uploads"
    );
    assert_eq!(server.stored().size("same.bin"), Some(2 << 20));
    // One file, a hash recorded for it (a local record is checked against
    // the file when it is read: one of a concurrent upload may be there),
    // nothing staged or kept.
    assert_eq!(server.stored().names(), ["same.bin"]);
    assert!(server.stored().recorded_hash("same.bin").is_some());
    assert_eq!(server.stored().uploads_in_progress(), 0);
    assert_eq!(server.stored().kept(), 0);
    // What the client downloads is that same content.
    assert_success(
        &server
            .client(&work)
            .args(["get", "same.bin"])
            .output()
            .unwrap(),
    );
    assert_eq!(hash_file(&work.join("same.bin")), stored);
}

#[test]
fn gets_during_forced_replacements_each_see_one_whole_version() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let server = ServerProcess::start(&dir.path().join("root"), &[]);
    let versions = eight_versions(&work);
    let (first, _) = &versions[0];
    assert_success(
        &server
            .client(&work)
            .args(["put", first.as_str(), "--name", "same.bin"])
            .output()
            .unwrap(),
    );

    // Replacements and downloads interleaved, all at once.
    let mut running = Vec::new();
    for (i, (local, _)) in versions.iter().enumerate().skip(1) {
        running.push(Running::spawn(server.client(&work).args([
            "put",
            local.as_str(),
            "--name",
            "same.bin",
            "--force",
        ])));
        running.push(Running::spawn(server.client(&work).args([
            "get",
            "same.bin",
            "--output",
            &format!("got-{i}"),
        ])));
    }
    for client in running {
        assert_success(&client.wait());
    }

    let hashes: HashSet<blake3::Hash> = versions.iter().map(|(_, hash)| *hash).collect();
    for i in 1..versions.len() {
        let got = hash_file(&work.join(format!("got-{i}")));
        assert!(
            hashes.contains(&got),
            "download {i} is none of the versions"
        );
    }
    assert!(hashes.contains(&server.stored().hash("same.bin")));
    assert_eq!(server.stored().uploads_in_progress(), 0);
}

/// Sends an eager upload of `body` as `name` and returns the answer.
fn put_eager(peer: &mut RawPeer, name: &str, body: &[u8], overwrite: bool) -> Response {
    peer.send(&Request::PutEager(PutEager {
        name: name.into(),
        size: body.len() as u64,
        overwrite,
    }));
    peer.raw(body);
    peer.send(&Trailer {
        hash: *blake3::hash(body).as_bytes(),
    });
    peer.recv()
}

/// Peers put fresh names into `d/e` and delete them again at once, which
/// removes `d/e` and `d` each time they are left empty, while other peers
/// ask for `d/e` to be made, again and again. A put of a fresh name and a
/// MakeDir may fail only with NotFound (a parent removed again while they
/// worked, which the protocol allows), never with AlreadyExists; what a
/// put said it stored is there, and deleting it says it was deleted.
#[test]
fn puts_and_make_dirs_racing_the_removal_of_their_parent_never_answer_already_exists() {
    const PEERS: usize = 4;
    const ROUNDS: usize = 300;
    // On a disk, where syncing a directory takes long enough for the
    // others to remove it meanwhile.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let server = ServerProcess::start(&root, &[]);
    let wrong = std::sync::Mutex::new(Vec::new());
    let retried = std::sync::atomic::AtomicUsize::new(0);
    let not_found = || retried.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::thread::scope(|scope| {
        for p in 0..PEERS {
            let (server, wrong, not_found) = (&server, &wrong, &not_found);
            scope.spawn(move || {
                let mut peer = server.connect();
                let wrong_answer = |what: String| wrong.lock().unwrap().push(what);
                for round in 0..ROUNDS {
                    if p % 2 == 1 {
                        peer.send(&Request::MakeDir(MakeDir { name: "d/e".into() }));
                        match peer.recv() {
                            Response::DirMade => {}
                            Response::Error(e) if e.code == ErrorCode::NotFound => {
                                not_found();
                            }
                            other => wrong_answer(format!("make d/e: {other:?}")),
                        }
                        continue;
                    }
                    let name = format!("d/e/{p}-{round}");
                    match put_eager(&mut peer, &name, name.as_bytes(), round % 2 == 0) {
                        Response::PutDone { .. } => {
                            peer.send(&Request::Stat(Stat { name: name.clone() }));
                            if !matches!(peer.recv(), Response::Entry(_)) {
                                wrong_answer(format!("{name}: stored, then gone"));
                            }
                            peer.send(&Request::Delete(Delete { name: name.clone() }));
                            let deleted = peer.recv();
                            if deleted != Response::Deleted {
                                wrong_answer(format!("delete {name}: {deleted:?}"));
                            }
                        }
                        Response::Error(e) if e.code == ErrorCode::NotFound => {
                            not_found();
                        }
                        other => wrong_answer(format!("put {name}: {other:?}")),
                    }
                }
            });
        }
    });
    let wrong = wrong.into_inner().unwrap();
    eprintln!(
        "{} answers NotFound of {}",
        retried.into_inner(),
        PEERS * ROUNDS
    );
    assert!(
        wrong.is_empty(),
        "{} wrong answers: {wrong:#?}",
        wrong.len()
    );
    assert_eq!(server.stored().uploads_in_progress(), 0);
}
