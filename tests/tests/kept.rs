//! Interrupted uploads kept for resuming, against the real server: what
//! they may take of the staging quota and of the disk, which publish they
//! give way to, and a client that reconnects at once after its connection
//! broke.
//!
//! The tests of what a publish does to a kept upload, and of reconnecting,
//! run on every backend: their files are over 8 MiB and their cuts after
//! the first 8 MiB, since an S3 store keeps only whole parts of 8 MiB.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use framekit_tests::hostile::{MIB, wait_for_line};
use framekit_tests::{
    Backend, RawPeer, ServerProcess, partials, random_bytes, small_disk, staged_bytes, staging,
};
use framekit_transfer::{ErrorCode, Put, PutEager, Request, Response, Trailer};
use std::io::Write;
use std::path::Path;

/// The size of the files the tests on every backend cut: more than one
/// part of 8 MiB, the least an S3 store keeps.
const SIZE: u64 = 12 * MIB;

/// Where those tests cut them: after the first part.
const CUT: u64 = 9 * MIB;

/// What the server keeps of an upload cut after `sent` bytes: all of it on
/// a local disk, the whole parts of 8 MiB on an S3 store.
fn held(sent: u64) -> u64 {
    if Backend::current().is_s3() {
        sent / (8 * MIB) * (8 * MIB)
    } else {
        sent
    }
}

/// Starts a put of `size` bytes as `name` with the resume key `key`, and
/// sends `sent` of its body.
fn start_keyed(server: &ServerProcess, name: &str, size: u64, key: u8, sent: &[u8]) -> RawPeer {
    let mut peer = server.connect();
    peer.send(&Request::Put(Put {
        name: name.into(),
        size,
        overwrite: false,
        resume_key: Some([key; 32]),
    }));
    assert_eq!(peer.recv(), Response::PutReady { offset: 0 }, "{name}");
    peer.raw(sent);
    peer
}

/// A put of `size` bytes as `name` (replacing what is there) with the key
/// `key` is answered: the offset it may start at.
fn offset_of(peer: &mut RawPeer, name: &str, size: u64, key: u8) -> u64 {
    peer.send(&Request::Put(Put {
        name: name.into(),
        size,
        overwrite: true,
        resume_key: Some([key; 32]),
    }));
    match peer.recv() {
        Response::PutReady { offset } => offset,
        other => panic!("expected PutReady, got {other:?}"),
    }
}

/// Stores `body` as `name` with an eager upload, replacing what is there.
fn put_small(peer: &mut RawPeer, name: &str, body: &[u8]) {
    peer.send(&Request::PutEager(PutEager {
        name: name.into(),
        size: body.len() as u64,
        overwrite: true,
    }));
    peer.raw(body);
    peer.send(&Trailer {
        hash: *blake3::hash(body).as_bytes(),
    });
    assert!(
        matches!(peer.recv(), Response::PutDone { .. }),
        "eager put of {name}"
    );
}

/// The bytes of the kept and resumable uploads in the partial area.
fn partial_bytes(root: &Path) -> u64 {
    partials(root)
        .into_iter()
        .filter(|name| !name.ends_with(".meta") && !name.ends_with(".new"))
        .filter_map(|name| std::fs::metadata(root.join(".framekit/partial").join(name)).ok())
        .map(|meta| meta.len())
        .sum()
}

#[test]
fn kept_uploads_are_dropped_oldest_first_to_make_room_for_a_put() {
    let (dir, mnt) = small_disk("size=20m");
    let root = mnt.path.join("root");
    let server = ServerProcess::start(&root, &["--staging-quota", "16M"]);
    // Three uploads of 6 MiB each cut after 5 MiB: 15 MiB kept.
    for (key, name) in [(1, "one"), (2, "two"), (3, "three")] {
        let peer = start_keyed(
            &server,
            name,
            6 * MIB,
            key,
            &random_bytes(key.into(), 5 << 20),
        );
        framekit_tests::eventually("the body is written", || {
            staged_bytes(&root) >= u64::from(key) * (5 << 20)
        });
        drop(peer);
        wait_for_line(
            &server,
            &["interrupted upload kept", &format!("name={name} ")],
        );
    }
    assert_eq!(partial_bytes(&root), 15 << 20);

    // A put of 6 MiB fits once the oldest is dropped.
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let hash = framekit_tests::write_random_file(&work.join("six"), 9, 6 * MIB);
    let out = server
        .client(&work)
        .args(["put", "six", "--no-resume"])
        .output()
        .unwrap();
    framekit_tests::assert_success(&out);
    assert_eq!(framekit_tests::hash_file(&root.join("six")), hash);
    let line = wait_for_line(&server, &["kept upload dropped", "name=one "]);
    assert!(line.contains("--min-free"), "{line}");
    assert_eq!(partial_bytes(&root), 10 << 20);
    assert!(!server.log().contains("name=two bytes"));

    // More than dropping every kept upload would free: refused, and
    // nothing is dropped for it.
    framekit_tests::write_random_file(&work.join("big"), 10, 16 * MIB);
    let out = server
        .client(&work)
        .args(["put", "big", "--no-resume"])
        .output()
        .unwrap();
    framekit_tests::assert_error(&out, 7, "no space");
    assert_eq!(partial_bytes(&root), 10 << 20);
    assert!(staging(&root).is_empty());
}

#[test]
fn a_stream_of_unknown_size_is_refused_where_it_would_cross_min_free() {
    let (dir, mnt) = small_disk("size=20m");
    let root = mnt.path.join("root");
    let server = ServerProcess::start(&root, &["--min-free", "8M"]);
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let mut child = server
        .client(&work)
        .args(["put", "-", "--name", "stream"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        // 16 MiB would leave about 4 MiB of the 20 free: under the floor.
        for block in 0..16 {
            if stdin.write_all(&random_bytes(block, 1 << 20)).is_err() {
                break;
            }
        }
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    framekit_tests::assert_error(&out, 7, "no space");
    assert!(!root.join("stream").exists());
    framekit_tests::eventually("the stream's file is removed", || staging(&root).is_empty());
    // A put that leaves the floor is still accepted.
    let hash = framekit_tests::write_random_file(&work.join("small"), 3, 4 * MIB);
    let out = server
        .client(&work)
        .args(["put", "small"])
        .output()
        .unwrap();
    framekit_tests::assert_success(&out);
    assert_eq!(framekit_tests::hash_file(&root.join("small")), hash);
}

#[test]
fn the_default_staging_quota_is_a_quarter_of_the_free_space_and_bounds_what_is_kept() {
    let (_dir, mnt) = small_disk("size=20m");
    let root = mnt.path.join("root");
    let server = ServerProcess::start(&root, &[]);
    let line = wait_for_line(&server, &["quota="]);
    let quota: u64 = line
        .split("quota=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no quota in {line:?}"));
    assert!(
        quota > 4 * MIB && quota <= 5 * MIB,
        "a quarter of a free 20 MiB: {quota}"
    );
    // An upload larger than the quota is not kept when it is cut.
    let peer = start_keyed(&server, "large", 6 * MIB, 1, &random_bytes(1, 1 << 20));
    framekit_tests::eventually("the body is staged", || {
        staging(&root).len() == 1 && staged_bytes(&root) == 1 << 20
    });
    drop(peer);
    framekit_tests::eventually("the cut upload is removed", || staging(&root).is_empty());
    assert_eq!(partial_bytes(&root), 0);
    let mut peer = server.connect();
    assert_eq!(offset_of(&mut peer, "large", 6 * MIB, 1), 0);
}

#[test]
fn the_staging_quota_counts_uploads_in_progress_at_their_whole_size() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let server = ServerProcess::start(&root, &["--staging-quota", "4M"]);
    // Ten uploads of 1 MiB in progress, half sent each.
    let peers: Vec<RawPeer> = (0..10u8)
        .map(|i| {
            start_keyed(
                &server,
                &format!("u{i}"),
                MIB,
                i,
                &random_bytes(i.into(), 512 << 10),
            )
        })
        .collect();
    framekit_tests::eventually("every body is written", || {
        staged_bytes(&root) == 10 * (512 << 10)
    });
    // Four of them fit the quota whole: the others are ordinary uploads.
    assert_eq!(partial_bytes(&root), 4 * (512 << 10));
    assert_eq!(staging(&root).len(), 6);
    drop(peers);
    framekit_tests::eventually("the cut uploads are kept or removed", || {
        staging(&root).is_empty() && server.log().matches("interrupted upload kept").count() == 4
    });
    assert!(partial_bytes(&root) <= 4 * MIB);
}

#[test]
fn a_complete_upload_that_loses_the_publish_race_keeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let server = ServerProcess::start(&root, &[]);
    let stored = server.stored().clone();
    let body = random_bytes(5, usize::try_from(SIZE).unwrap());
    let mut slow = start_keyed(&server, "n", SIZE, 5, &body);
    framekit_tests::eventually("the body is stored", || stored.staged_bytes() >= held(SIZE));
    let mut fast = server.connect();
    put_small(&mut fast, "n", b"first");
    slow.send(&Trailer {
        hash: *blake3::hash(&body).as_bytes(),
    });
    match slow.recv() {
        Response::Error(e) => assert_eq!(e.code, ErrorCode::AlreadyExists),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    wait_for_line(&server, &["not kept", "name=n ", "its publish failed"]);
    assert_eq!(stored.kept(), 0, "{:?}", stored.everything());
    assert_eq!(stored.staged_bytes(), 0, "{:?}", stored.everything());
    assert_eq!(stored.read("n").unwrap(), b"first");
    assert_eq!(offset_of(&mut slow, "n", SIZE, 5), 0);
}

#[test]
fn an_upload_interrupted_after_its_name_was_published_is_not_kept() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let server = ServerProcess::start(&root, &[]);
    let stored = server.stored().clone();
    let body = random_bytes(6, usize::try_from(CUT).unwrap());
    let cut = start_keyed(&server, "n", SIZE, 6, &body);
    framekit_tests::eventually("the body is stored", || stored.staged_bytes() >= held(CUT));
    let mut other = server.connect();
    put_small(&mut other, "n", b"published while the other was under way");
    drop(cut);
    wait_for_line(
        &server,
        &["not kept", "name=n ", "a put of its name was published"],
    );
    assert_eq!(stored.kept(), 0, "{:?}", stored.everything());
    assert_eq!(stored.staged_bytes(), 0, "{:?}", stored.everything());
    assert_eq!(offset_of(&mut other, "n", SIZE, 6), 0);
}

#[test]
fn an_upload_kept_before_its_name_was_published_is_dropped_by_the_publish() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let server = ServerProcess::start(&root, &[]);
    let stored = server.stored().clone();
    let body = random_bytes(7, usize::try_from(CUT).unwrap());
    let cut = start_keyed(&server, "n", SIZE, 7, &body);
    framekit_tests::eventually("the body is stored", || stored.staged_bytes() >= held(CUT));
    drop(cut);
    wait_for_line(&server, &["interrupted upload kept", "name=n "]);
    assert_eq!(stored.kept(), 1);
    let mut other = server.connect();
    put_small(&mut other, "n", b"published after the other was kept");
    wait_for_line(
        &server,
        &[
            "kept upload dropped",
            "name=n ",
            "a put of its name was published",
        ],
    );
    assert_eq!(stored.kept(), 0, "{:?}", stored.everything());
    assert_eq!(stored.staged_bytes(), 0, "{:?}", stored.everything());
    assert_eq!(offset_of(&mut other, "n", SIZE, 7), 0);
}

#[test]
fn a_put_sent_at_once_after_the_connection_broke_resumes_where_it_was_cut() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let server = ServerProcess::start(&root, &[]);
    let stored = server.stored().clone();
    for attempt in 0..5u8 {
        let name = format!("again-{attempt}");
        let sent = random_bytes(attempt.into(), usize::try_from(CUT).unwrap());
        let cut = start_keyed(&server, &name, SIZE, attempt, &sent);
        // On S3, a part is stored only whole: its last bytes must be in.
        if Backend::current().is_s3() {
            framekit_tests::eventually("the first part is stored", || {
                stored.staged_bytes() >= held(CUT) * u64::from(attempt + 1)
            });
        }
        cut.stream.shutdown(std::net::Shutdown::Both).unwrap();
        drop(cut);
        let mut again = server.connect();
        assert_eq!(
            offset_of(&mut again, &name, SIZE, attempt),
            held(CUT),
            "attempt {attempt}"
        );
    }
}

/// A forwarder to `target` whose first connection breaks on the client's
/// side once the client has sent `after` bytes (the forwarder shuts that
/// socket, so the client's next writes are reset), while the server's
/// side stays open and silent, as when a network fails; later connections
/// are forwarded whole.
struct SilentBreak {
    addr: std::net::SocketAddr,
}

impl SilentBreak {
    fn start(target: std::net::SocketAddr, after: u64) -> SilentBreak {
        use std::io::{Read, Write};
        use std::net::{Shutdown, TcpListener, TcpStream};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            // The server's side of the broken connection, held open.
            let mut silent = Vec::new();
            for (n, client) in listener.incoming().enumerate() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let breaks = n == 0;
                let (mut client_in, mut client_out) = (client.try_clone().unwrap(), client);
                let (mut server_in, mut server_out) = (server.try_clone().unwrap(), server);
                if breaks {
                    silent.push(server_out.try_clone().unwrap());
                }
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 16 * 1024];
                    let mut sent = 0u64;
                    while let Ok(read) = client_in.read(&mut buf) {
                        if read == 0 {
                            break;
                        }
                        if breaks && sent + read as u64 >= after {
                            let _ = client_in.shutdown(Shutdown::Both);
                            return;
                        }
                        sent += read as u64;
                        if server_out.write_all(&buf[..read]).is_err() {
                            break;
                        }
                    }
                    let _ = server_out.shutdown(Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut server_in, &mut client_out);
                    let _ = client_out.shutdown(Shutdown::Write);
                });
            }
            drop(silent);
        });
        SilentBreak { addr }
    }
}

#[test]
fn a_put_whose_connection_breaks_silently_continues_where_the_server_kept_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    // Longer than a put waits for the upload of its key to end (2 s): the
    // client is first told 0, and tries again until the server has given
    // up on the silent connection and kept what it had.
    let server = ServerProcess::start(&root, &["--idle-timeout", "4"]);
    let forwarder = SilentBreak::start(server.addr, CUT);
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let hash = framekit_tests::write_random_file(&work.join("big"), 21, SIZE);
    let out = framekit_tests::client_at(forwarder.addr, &work)
        .args(["put", "big"])
        .output()
        .unwrap();
    framekit_tests::assert_success(&out);
    assert_eq!(server.stored().hash("big"), hash);
    // The first put broke; the one that finished started where the server
    // had kept the first one's bytes.
    let puts = server.requests_of("put", "big");
    eprintln!("{puts:#?}");
    let last = puts.last().unwrap();
    assert_eq!(last.outcome, "ok", "{puts:?}");
    assert!(last.offset > 0, "the put did not resume: {puts:?}");
    assert_eq!(last.offset + last.bytes, SIZE, "{puts:?}");
}
