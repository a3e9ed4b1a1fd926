//! The server on an S3 store, where it differs from a local root: several
//! servers on one bucket, a put resumed through another server after its
//! first one was killed, conditional creates enforced (moto) or not
//! (Garage), the store failing mid-transfer, a bad configuration at start,
//! and what the bucket holds besides files.
//!
//! These tests choose their services themselves, whatever
//! `FRAMEKIT_TEST_STORE` says.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use framekit_tests::hostile::wait_for_line;
use framekit_tests::s3::{Bucket, Garage, Moto};
use framekit_tests::stored::{S3Bucket, s3_private_key};
use framekit_tests::{
    RawPeer, Running, ServerProcess, Stored, assert_error, assert_success, bin, client_at,
    eventually, hash_file, random_bytes, stderr, stdout, write_random_file,
};
use framekit_transfer::{ErrorCode, Put, Request, Response, Trailer};
use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

/// A server on a Garage bucket (which needs `--no-atomic-create`).
fn on_garage(bucket: &Bucket, extra: &[&str]) -> ServerProcess {
    let mut args = vec!["--no-atomic-create"];
    args.extend_from_slice(extra);
    ServerProcess::start_on_bucket(bucket, None, &args)
}

fn run(server: &ServerProcess, work: &Path, args: &[&str]) -> Output {
    server.client(work).args(args).output().unwrap()
}

fn work() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn a_file_put_through_one_server_is_served_by_another_on_the_same_bucket() {
    let bucket = Garage::shared().bucket();
    let (a, b) = (on_garage(&bucket, &[]), on_garage(&bucket, &[]));
    let dir = work();
    let big = write_random_file(&dir.path().join("big"), 1, 20 * MIB + 3);
    std::fs::write(dir.path().join("small"), b"small").unwrap();
    assert_success(&run(
        &a,
        dir.path(),
        &["put", "big", "small", "--name", "d"],
    ));

    assert_eq!(
        assert_success(&run(&b, dir.path(), &["list", "d/"])),
        format!("{}\td/big\n5\td/small\n", 20 * MIB + 3)
    );
    let stat = assert_success(&run(&b, dir.path(), &["stat", "d/big"]));
    assert!(
        stat.contains(&format!("size: {}\n", 20 * MIB + 3)),
        "{stat}"
    );
    assert!(
        stat.contains(&format!("blake3: {}\n", big.to_hex())),
        "{stat}"
    );
    assert_success(&run(&b, dir.path(), &["get", "d/", "--output", "back"]));
    assert_eq!(hash_file(&dir.path().join("back/big")), big);
    assert_eq!(
        std::fs::read(dir.path().join("back/small")).unwrap(),
        b"small"
    );
    // Deleted through B, gone for A.
    assert_success(&run(&b, dir.path(), &["delete", "d/small"]));
    assert_eq!(
        assert_success(&run(&a, dir.path(), &["list"])),
        format!("-\td/\n{}\td/big\n", 20 * MIB + 3)
    );
}

/// Puts `count` different files as the one new name `name` through
/// `servers` in turn, all at once, without `--force`; returns the hashes
/// of the versions and each client's output.
fn racing_puts(
    servers: &[&ServerProcess],
    dir: &Path,
    name: &str,
    count: u64,
    size: u64,
) -> (Vec<blake3::Hash>, Vec<Output>) {
    let hashes: Vec<blake3::Hash> = (0..count)
        .map(|i| write_random_file(&dir.join(format!("v{i}")), 100 + i, size))
        .collect();
    let running: Vec<Running> = (0..count)
        .map(|i| {
            let server = servers[usize::try_from(i).unwrap() % servers.len()];
            Running::spawn(
                server
                    .client(dir)
                    .args(["put", &format!("v{i}"), "--name", name]),
            )
        })
        .collect();
    (hashes, running.into_iter().map(Running::wait).collect())
}

#[test]
fn of_eight_puts_of_one_new_name_through_two_servers_only_the_first_published_wins_on_a_store_with_conditional_creates()
 {
    // All eight pass the check made before their bodies (the name is
    // free), upload at once, and are published one after the other: only
    // the store's conditional create can refuse the other seven, and it
    // does. (moto checks the condition and then writes, in two steps:
    // completions arriving in the very same instant can all pass it there,
    // 5 of 8 when measured, so they are not sent at once. AWS S3 checks
    // atomically.)
    let bucket = Moto::shared().bucket();
    let a = ServerProcess::start_on_bucket(&bucket, None, &[]);
    let b = ServerProcess::start_on_bucket(&bucket, None, &[]);
    // Written in one PutObject; streamed into a multipart upload.
    for (name, size) in [("small", 3 * MIB), ("big", 12 * MIB)] {
        let bodies: Vec<Vec<u8>> = (0..8u64)
            .map(|i| random_bytes(i, usize::try_from(size).unwrap()))
            .collect();
        let mut peers: Vec<RawPeer> = (0..8)
            .map(|i| if i % 2 == 0 { a.connect() } else { b.connect() })
            .collect();
        for peer in &mut peers {
            peer.send(&Request::Put(Put {
                name: name.into(),
                size,
                overwrite: false,
                resume_key: None,
            }));
            assert_eq!(peer.recv(), Response::PutReady { offset: 0 });
        }
        std::thread::scope(|scope| {
            for (peer, body) in peers.iter_mut().zip(&bodies) {
                scope.spawn(move || peer.raw(body));
            }
        });
        let mut answers = Vec::new();
        for (peer, body) in peers.iter_mut().zip(&bodies) {
            peer.send(&Trailer {
                hash: *blake3::hash(body).as_bytes(),
            });
            answers.push(peer.recv());
        }
        assert!(
            matches!(answers[0], Response::PutDone { .. }),
            "{name}: {answers:?}"
        );
        for answer in &answers[1..] {
            assert!(
                matches!(answer, Response::Error(e) if e.code == ErrorCode::AlreadyExists),
                "{name}: {answers:?}"
            );
        }
        assert_eq!(a.stored().hash(name), blake3::hash(&bodies[0]), "{name}");
    }
    eventually("nothing is left in progress", || {
        a.stored().uploads_in_progress() == 0
    });
}

#[test]
fn puts_of_one_new_name_through_two_servers_on_garage_each_publish_a_whole_version() {
    // Garage ignores If-None-Match: each server refuses a put of a name it
    // sees taken, and never lets two of its own through, but two servers
    // may both publish: the last one stays, whole.
    let bucket = Garage::shared().bucket();
    let (a, b) = (on_garage(&bucket, &[]), on_garage(&bucket, &[]));
    let dir = work();
    for (name, size) in [("small", 3 * MIB), ("big", 12 * MIB)] {
        let (hashes, outputs) = racing_puts(&[&a, &b], dir.path(), name, 8, size);
        let won: Vec<usize> = (0..outputs.len())
            .filter(|&i| outputs[i].status.success())
            .collect();
        assert!(
            (1..=2).contains(&won.len()),
            "{name}: {} won: {outputs:?}",
            won.len()
        );
        for (i, out) in outputs.iter().enumerate() {
            if !won.contains(&i) {
                assert_error(out, 5, "already exists");
            }
        }
        let stored = a.stored().hash(name);
        assert!(
            won.iter().any(|&i| hashes[i] == stored),
            "{name}: the stored file is none of the winners"
        );
    }
}

#[test]
fn forced_puts_racing_gets_through_the_other_server_each_see_one_whole_version() {
    let bucket = Garage::shared().bucket();
    let (a, b) = (on_garage(&bucket, &[]), on_garage(&bucket, &[]));
    let dir = work();
    let versions: Vec<blake3::Hash> = (0..6)
        .map(|i| write_random_file(&dir.path().join(format!("v{i}")), 200 + i, 10 * MIB))
        .collect();
    assert_success(&run(&a, dir.path(), &["put", "v0", "--name", "same"]));
    let mut running = Vec::new();
    for i in 1..versions.len() {
        running.push(Running::spawn(a.client(dir.path()).args([
            "put",
            &format!("v{i}"),
            "--name",
            "same",
            "--force",
        ])));
        running.push(Running::spawn(b.client(dir.path()).args([
            "get",
            "same",
            "--output",
            &format!("got-{i}"),
        ])));
    }
    for client in running {
        assert_success(&client.wait());
    }
    let known: HashSet<blake3::Hash> = versions.iter().copied().collect();
    for i in 1..versions.len() {
        let got = hash_file(&dir.path().join(format!("got-{i}")));
        assert!(known.contains(&got), "download {i} is none of the versions");
    }
    assert!(known.contains(&a.stored().hash("same")));
}

/// A TCP forwarder to `target` that counts the bytes its clients send.
struct CountingProxy {
    addr: SocketAddr,
    sent: Arc<AtomicU64>,
}

impl CountingProxy {
    fn start(target: SocketAddr) -> CountingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let sent = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&sent);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let (mut client_in, mut server_out) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                let counter = Arc::clone(&counter);
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 256 * 1024];
                    while let Ok(n) = client_in.read(&mut buf) {
                        if n == 0 || server_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        counter.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    let _ = server_out.shutdown(std::net::Shutdown::Write);
                });
                let (mut server_in, mut client_out) = (server, client);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut server_in, &mut client_out);
                    let _ = client_out.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        CountingProxy { addr, sent }
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

#[test]
fn a_put_whose_server_is_killed_resumes_through_the_other_sending_less_than_a_tenth_more() {
    let bucket = Garage::shared().bucket();
    let mut a = on_garage(&bucket, &[]);
    let b = on_garage(&bucket, &[]);
    let (to_a, to_b) = (CountingProxy::start(a.addr), CountingProxy::start(b.addr));
    let dir = work();
    // What the killed server had received but not stored is lost: up to
    // four parts in its memory and what the socket buffers held, some
    // 70 MiB at most; a tenth of this file.
    let size = 700 * MIB;
    let hash = write_random_file(&dir.path().join("big"), 3, size);

    let mut client = Running::spawn(client_at(to_a.addr, dir.path()).args(["put", "big"]));
    let stored = a.stored().clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    while stored.staged_bytes() < 128 * MIB {
        assert!(!client.has_exited(), "the put ended before the kill");
        assert!(Instant::now() < deadline, "the put stalled");
        std::thread::sleep(stored.poll());
    }
    a.kill();
    let out = client.wait();
    assert_error(&out, 3, "error: ");
    // Nothing under the name; the parts stored are kept in the bucket.
    assert!(!stored.exists("big"));
    assert_eq!(stored.kept(), 1);
    let kept = stored.kept_offset("big").unwrap();
    // The parts recorded in its state; the last few stored may have gone
    // unrecorded when the server died.
    assert!(kept >= 64 * MIB, "{kept}");

    let out = client_at(to_b.addr, dir.path())
        .args(["put", "big"])
        .output()
        .unwrap();
    assert_success(&out);
    assert_eq!(stored.hash("big"), hash);
    assert_eq!(stored.kept(), 0);
    let runs = b.requests_of("put", "big");
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].offset, kept, "B resumed elsewhere than what A kept");
    assert_eq!(runs[0].bytes, size - kept);
    // Everything the client sent to either server, requests included.
    let total = to_a.sent() + to_b.sent();
    eprintln!(
        "sent {} MiB to A, {} MiB to B, for a {} MiB file ({:.3}x)",
        to_a.sent() / MIB,
        to_b.sent() / MIB,
        size / MIB,
        total as f64 / size as f64
    );
    assert!(total * 10 < size * 11, "{total} bytes sent for {size}");
}

#[test]
fn a_three_node_garage_cluster_serves_a_file_through_another_server_with_a_node_stopped() {
    let mut cluster = Garage::start_cluster();
    let bucket = cluster.bucket();
    let a = on_garage(&bucket, &[]);
    let b = on_garage(&bucket.via(&cluster.endpoint(1)), &[]);
    let dir = work();
    let hash = write_random_file(&dir.path().join("f"), 4, 12 * MIB);
    assert_success(&run(&a, dir.path(), &["put", "f"]));
    cluster.stop(0);
    assert_success(&run(&b, dir.path(), &["get", "f", "--output", "back"]));
    assert_eq!(hash_file(&dir.path().join("back")), hash);
}

/// A single-node Garage of the test's own, with a bucket, and a server on
/// it that gives up on the store after 3 s.
fn own_garage() -> (Garage, Bucket, ServerProcess) {
    let garage = Garage::start();
    let bucket = garage.bucket();
    let server = on_garage(&bucket, &["--store-retry-timeout", "3"]);
    (garage, bucket, server)
}

#[test]
fn the_store_stopped_mid_put_fails_the_put_clearly_publishes_nothing_and_the_server_goes_on() {
    let (mut garage, _bucket, server) = own_garage();
    let dir = work();
    write_random_file(&dir.path().join("big"), 5, 96 * MIB);
    let stored = server.stored().clone();
    let client = Running::spawn(server.client(dir.path()).args(["put", "big"]));
    eventually("the upload has started", || stored.staged_bytes() > 0);
    garage.stop(0);
    let out = client.wait();
    assert_error(
        &out,
        7,
        "error: the server refused the put: internal error: the server could not complete the operation",
    );
    server.wait_for_log("storing an upload failed");
    // The server still answers, if only to say the store is away...
    let out = run(&server, dir.path(), &["list"]);
    assert_error(&out, 7, "internal error");

    // ...and serves again once it is back, with nothing from the failed
    // put under the name.
    garage.restart(0);
    assert_eq!(assert_success(&run(&server, dir.path(), &["list"])), "");
    assert!(!stored.exists("big"));
    std::fs::write(dir.path().join("small"), b"back").unwrap();
    assert_success(&run(
        &server,
        dir.path(),
        &["put", "small", "--name", "big"],
    ));
    assert_eq!(stored.read("big").unwrap(), b"back");
}

#[test]
fn the_store_stopped_mid_get_ends_the_download_and_it_resumes_once_the_store_is_back() {
    let (mut garage, _bucket, server) = own_garage();
    let hash = server.stored().write_random("big", 6, 96 * MIB);
    let dir = work();
    let part = dir.path().join("big.part");
    let client = Running::spawn(server.client(dir.path()).args(["get", "big"]));
    eventually("the download has started", || {
        std::fs::metadata(&part).is_ok_and(|m| m.len() > 0)
    });
    garage.stop(0);
    let out = client.wait();
    assert_error(&out, 3, "error: ");
    assert!(!dir.path().join("big").exists());

    garage.restart(0);
    assert_success(&run(&server, dir.path(), &["get", "big"]));
    assert_eq!(hash_file(&dir.path().join("big")), hash);
    let runs = server.requests_of("get", "big");
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(runs[1].offset > 0, "{runs:?}");
}

/// Runs the server on `store` with `bucket`'s environment and `extra`
/// arguments, expecting it to stop by itself; returns its output.
fn server_that_stops(bucket: &Bucket, store: &str, extra: &[&str]) -> Output {
    let mut cmd = Command::new(bin("server"));
    bucket
        .configure(&mut cmd)
        .args(["--listen", "127.0.0.1:0", "--store", store])
        .args(extra)
        .stdin(Stdio::null());
    cmd.output().unwrap()
}

/// Asserts that the server stopped with `code` and one line on stderr
/// containing `needle`, before saying it listens.
fn assert_refused_to_start(out: &Output, code: i32, needle: &str) {
    assert_eq!(out.status.code(), Some(code), "{}", stderr(out));
    assert_eq!(stdout(out), "", "it said it listens");
    let err = stderr(out);
    let lines: Vec<&str> = err.lines().filter(|l| !l.contains(" WARN ")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(lines[0].contains(needle), "{needle:?} not in {err}");
}

#[test]
fn wrong_credentials_stop_the_server_with_exit_7_before_it_listens() {
    let mut bucket = Garage::shared().bucket();
    bucket.secret_access_key = "0".repeat(64);
    let out = server_that_stops(&bucket, &bucket.url(None), &["--no-atomic-create"]);
    assert_refused_to_start(&out, 7, "the S3 store refused access to bucket");
    // Missing ones too.
    let mut cmd = Command::new(bin("server"));
    let out = bucket
        .configure(&mut cmd)
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .args(["--listen", "127.0.0.1:0", "--store", &bucket.url(None)])
        .output()
        .unwrap();
    assert_refused_to_start(
        &out,
        7,
        "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set",
    );
}

#[test]
fn a_missing_bucket_stops_the_server_with_exit_8_before_it_listens() {
    for mut bucket in [Garage::shared().bucket(), Moto::shared().bucket()] {
        bucket.name = "fk-no-such-bucket".to_owned();
        let out = server_that_stops(&bucket, &bucket.url(None), &["--no-atomic-create"]);
        assert_refused_to_start(&out, 8, "the S3 bucket fk-no-such-bucket does not exist");
    }
}

#[test]
fn an_unreachable_store_stops_the_server_with_exit_6() {
    let mut bucket = Garage::shared().bucket();
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    bucket.endpoint = format!("http://{closed}");
    let out = server_that_stops(&bucket, &bucket.url(None), &[]);
    assert_refused_to_start(&out, 6, "cannot reach the S3 store at http://");
}

#[test]
fn the_startup_check_fails_fast_without_trying_again() {
    // An endpoint that hangs up on every connection: the server stops at
    // the first, where its requests to the store would try again.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    {
        let accepted = Arc::clone(&accepted);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                accepted.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
    }
    let mut bucket = Garage::shared().bucket();
    bucket.endpoint = format!("http://{endpoint}");
    let out = server_that_stops(&bucket, &bucket.url(None), &[]);
    assert_refused_to_start(&out, 6, "cannot reach the S3 store at http://");
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "{}", stderr(&out));
}

#[test]
fn garage_without_conditional_creates_is_refused_with_exit_9_unless_the_weaker_guarantee_is_accepted()
 {
    let bucket = Garage::shared().bucket();
    let out = server_that_stops(&bucket, &bucket.url(None), &[]);
    assert_refused_to_start(&out, 9, "does not enforce conditional creates");
    let server = on_garage(&bucket, &[]);
    server.wait_for_log("the store does not enforce conditional creates");
    // The probe leaves nothing behind.
    let stored = server.stored();
    assert!(stored.is_empty(), "{:?}", stored.everything());
    // moto enforces them: no flag needed.
    let moto = ServerProcess::start_on_bucket(&Moto::shared().bucket(), None, &[]);
    assert!(!moto.log().contains("does not enforce"), "{}", moto.log());
}

#[test]
fn a_server_on_a_prefix_never_reaches_keys_outside_it_and_skips_keys_that_are_not_names() {
    let bucket = Garage::shared().bucket();
    let s3 = S3Bucket::new(bucket.clone());
    for key in [
        "secret",
        "team-other/x",
        "team/ok",
        "team/a//b",
        "team/back\\slash",
        "team/.framekit/kept/forged",
    ] {
        s3.put_raw(key, b"content".to_vec());
    }
    let server = ServerProcess::start_on_bucket(&bucket, Some("team"), &["--no-atomic-create"]);
    let dir = work();
    assert_eq!(
        assert_success(&run(&server, dir.path(), &["list"])),
        "7\tok\n"
    );
    for name in [
        "../secret",
        "../team-other/x",
        "a//b",
        ".framekit/kept/forged",
    ] {
        assert_error(
            &run(&server, dir.path(), &["get", name]),
            7,
            "invalid remote name",
        );
    }
    assert_error(
        &run(&server, dir.path(), &["get", "secret"]),
        4,
        "not found",
    );
    // What it writes stays under the prefix.
    std::fs::write(dir.path().join("f"), b"mine").unwrap();
    assert_success(&run(&server, dir.path(), &["put", "f"]));
    assert_eq!(s3.get("team/f").unwrap(), b"mine");
    assert_eq!(s3.get("secret").unwrap(), b"content");
    assert!(s3.get("f").is_none());
}

#[test]
fn a_file_published_by_a_multipart_upload_is_served_with_its_recorded_hash_until_replaced() {
    let bucket = Garage::shared().bucket();
    let server = on_garage(&bucket, &[]);
    let stored = server.stored();
    let dir = work();
    let hash = write_random_file(&dir.path().join("big"), 7, 20 * MIB);
    assert_success(&run(&server, dir.path(), &["put", "big"]));
    // Over 8 MiB: no hash in the object's metadata, a record instead.
    let Stored::S3(s3) = stored else { panic!() };
    assert_eq!(s3.metadata("big", "blake3"), None);
    assert!(s3.get(&s3_private_key("digests", "big")).is_some());
    assert_eq!(stored.recorded_hash("big"), Some(hash));

    // The server sends the recorded hash without reading the object: a
    // record changed behind its back shows in the client's check...
    let key = s3_private_key("digests", "big");
    let record = String::from_utf8(s3.get(&key).unwrap()).unwrap();
    let forged = record.replace(
        &hash.to_hex().to_string(),
        blake3::hash(b"x").to_hex().as_str(),
    );
    s3.put(&key, forged.into_bytes(), &[]);
    assert_error(
        &run(&server, dir.path(), &["get", "big", "--output", "a"]),
        6,
        "integrity mismatch",
    );
    // ...and a record of another version of the object is not used.
    let replaced = stored.write_random("big", 8, 20 * MIB);
    assert_success(&run(&server, dir.path(), &["get", "big", "--output", "b"]));
    assert_eq!(hash_file(&dir.path().join("b")), replaced);
    // Deleting the file removes its record.
    assert_success(&run(&server, dir.path(), &["delete", "big"]));
    assert!(s3.get(&key).is_none());
}

#[test]
fn empty_directories_are_markers_that_go_with_their_last_file() {
    let bucket = Garage::shared().bucket();
    let server = on_garage(&bucket, &[]);
    let s3 = S3Bucket::new(bucket.clone());
    let dir = work();
    std::fs::create_dir_all(dir.path().join("tree/empty")).unwrap();
    std::fs::write(dir.path().join("tree/f"), b"f").unwrap();
    assert_success(&run(&server, dir.path(), &["put", "tree"]));
    // A directory made before its files keeps its marker.
    let keys: Vec<String> = s3.keys("").into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["tree/", "tree/empty/", "tree/f"]);
    assert_success(&run(
        &server,
        dir.path(),
        &["get", "tree", "--output", "back"],
    ));
    assert!(dir.path().join("back/empty").is_dir());
    assert_success(&run(&server, dir.path(), &["delete", "tree/f"]));
    // tree/ still holds the empty directory: the markers stay.
    let keys: Vec<String> = s3.keys("").into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["tree/", "tree/empty/"]);
    // A directory is not deleted as a file.
    let mut peer = server.connect();
    peer.send(&Request::Delete(framekit_transfer::Delete {
        name: "tree/empty".into(),
    }));
    assert!(matches!(peer.recv(), Response::Error(e) if e.code == ErrorCode::NotAFile));
    // A file where a directory is, and the other way round, are refused.
    std::fs::write(dir.path().join("x"), b"x").unwrap();
    assert_error(
        &run(&server, dir.path(), &["put", "x", "--name", "tree/empty"]),
        7,
        "not a file",
    );
    assert_success(&run(
        &server,
        dir.path(),
        &["put", "x", "--name", "tree/empty/x"],
    ));
    assert_error(
        &run(
            &server,
            dir.path(),
            &["put", "x", "--name", "tree/empty/x/y"],
        ),
        7,
        "not a file",
    );
}

#[test]
fn interrupted_uploads_beyond_the_staging_quota_are_dropped_oldest_first() {
    let bucket = Garage::shared().bucket();
    // Two parts in memory at most: the client cannot run far ahead of
    // what is stored.
    let server = on_garage(
        &bucket,
        &["--staging-quota", "160M", "--store-memory", "16M"],
    );
    let stored = server.stored().clone();
    let dir = work();
    for (i, name) in ["first", "second"].into_iter().enumerate() {
        write_random_file(&dir.path().join(name), 10 + i as u64, 160 * MIB);
        let client = Running::spawn(server.client(dir.path()).args(["put", name]));
        // Stopped once 88 MiB are stored, it has sent less than the whole
        // file (what two parts in memory and the socket buffers hold), and
        // what is kept reaches at least 88 MiB.
        eventually("the upload is well under way", || {
            stored.uploading_bytes(name) >= 88 * MIB
        });
        framekit_tests::signal(client.id(), "STOP");
        client.kill();
        eventually("the upload is kept", || {
            server.requests_of("put", name).len() == 1
        });
        assert!(!stored.exists(name));
    }
    // Both together hold more than 160 MiB: only the second is kept.
    assert_eq!(stored.kept(), 1);
    assert!(stored.kept_offset("second").unwrap() >= 88 * MIB);
    assert_eq!(stored.kept_offset("first"), None);
    let Stored::S3(s3) = &stored else { panic!() };
    eventually("the first one's parts are gone", || {
        s3.uploads().iter().all(|(key, _)| key == "second")
    });
}

/// Starts a resumable put of `size` bytes as `name` on a connection of
/// its own, and sends `sent` bytes of its body; once they are stored
/// (whole parts), returns the connection, the upload in progress.
fn put_until_stored(server: &ServerProcess, name: &str, size: u64, sent: u64) -> RawPeer {
    let mut peer = server.connect();
    peer.send(&Request::Put(Put {
        name: name.into(),
        size,
        overwrite: false,
        resume_key: Some(*blake3::hash(name.as_bytes()).as_bytes()),
    }));
    assert_eq!(peer.recv(), Response::PutReady { offset: 0 }, "{name}");
    peer.raw(&random_bytes(sent, usize::try_from(sent).unwrap()));
    let stored = server.stored().clone();
    eventually("the parts are stored", || {
        stored.uploading_bytes(name) >= sent
    });
    peer
}

/// The names of the uploads whose state is kept (in progress or
/// interrupted).
fn kept_names(stored: &Stored) -> Vec<&'static str> {
    ["a", "b", "c", "d", "e"]
        .into_iter()
        .filter(|name| stored.kept_offset(name).is_some())
        .collect()
}

#[test]
fn the_staging_quota_counts_uploads_in_progress_at_their_whole_size_on_s3() {
    let bucket = Garage::shared().bucket();
    let server = on_garage(&bucket, &["--staging-quota", "48M"]);
    let stored = server.stored().clone();
    // Kept: 8 MiB of a.
    drop(put_until_stored(&server, "a", 16 * MIB, 8 * MIB));
    wait_for_line(&server, &["interrupted upload kept", "name=a "]);
    // In progress, nothing sent yet: b and c count 16 MiB each, 40 in all.
    let b = put_until_stored(&server, "b", 16 * MIB, 0);
    let c = put_until_stored(&server, "c", 16 * MIB, 0);
    assert_eq!(kept_names(&stored), ["a", "b", "c"]);
    // d does not fit beside them but in a's room: a goes.
    let d = put_until_stored(&server, "d", 16 * MIB, 0);
    wait_for_line(
        &server,
        &[
            "kept upload dropped",
            "name=a ",
            "to make room in the staging quota",
        ],
    );
    assert_eq!(kept_names(&stored), ["b", "c", "d"]);
    // e does not fit at all: an ordinary upload, and nothing is dropped.
    let e = put_until_stored(&server, "e", 16 * MIB, 0);
    assert_eq!(kept_names(&stored), ["b", "c", "d"]);
    assert_eq!(stored.uploads_in_progress(), 1);
    drop((b, c, d, e));
}

#[test]
fn every_object_written_whole_carries_its_hash_and_the_upload_that_wrote_it() {
    let bucket = Moto::shared().bucket();
    let server = ServerProcess::start_on_bucket(&bucket, None, &[]);
    let s3 = S3Bucket::new(bucket);
    let dir = work();
    let body = random_bytes(9, 100_000);
    std::fs::write(dir.path().join("f"), &body).unwrap();
    assert_success(&run(&server, dir.path(), &["put", "f"]));
    assert_eq!(
        s3.metadata("f", "blake3"),
        Some(blake3::hash(&body).to_hex().to_string())
    );
    assert_eq!(
        s3.metadata("f", "framekit-upload").map(|t| t.len()),
        Some(32)
    );
}
