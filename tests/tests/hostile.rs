//! The server against hostile peers on raw sockets: lengths it is told but
//! never sent, bodies that do not match their header, peers that hold
//! connections open, trickle bytes or stop reading, names that try to
//! leave the root, and symlinks that point out of it.
//!
//! Every test ends with [`Intact::check`]: nothing staged, nothing changed
//! on disk around the root but what the test expects, the server's peak
//! memory not grown with what a peer declared, and a new client served.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use framekit_tests::hostile::{
    GIB, Intact, MIB, error_code, log_peer, put_request, read_to_close, wait_for_line,
};
use framekit_tests::{
    Backend, RawPeer, ServerProcess, connect_from, memory_tempdir, random_bytes, stored_for,
};
use framekit_transfer::{
    Delete, ErrorCode, Get, List, MakeDir, Request, Response, Stat, Trailer, Tree, frame_config,
};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

fn get(name: &str) -> Request {
    Request::Get(Get {
        name: name.into(),
        offset: 0,
        if_version: None,
    })
}

fn stat(name: &str) -> Request {
    Request::Stat(Stat { name: name.into() })
}

fn delete(name: &str) -> Request {
    Request::Delete(Delete { name: name.into() })
}

/// Lists `prefix` and returns the names, checking the announced count.
fn list(peer: &mut RawPeer, prefix: &str) -> Result<Vec<String>, ErrorCode> {
    peer.send(&Request::List(List {
        prefix: prefix.into(),
    }));
    let mut names = Vec::new();
    loop {
        match peer.recv() {
            Response::Entry(entry) => names.push(entry.name),
            Response::ListEnd { count } => {
                assert_eq!(count, names.len() as u64);
                return Ok(names);
            }
            Response::Error(e) => return Err(e.code),
            other => panic!("unexpected answer to a list: {other:?}"),
        }
    }
}

/// Writes `bytes` from another thread, ignoring failures: the server may
/// hang up on a hostile peer before it has sent everything.
fn send_in_background(stream: &TcpStream, bytes: Vec<u8>) -> std::thread::JoinHandle<()> {
    let mut stream = stream.try_clone().unwrap();
    std::thread::spawn(move || {
        let _ = stream.write_all(&bytes);
    })
}

/// The message frame of `msg`, as sent on the wire.
fn frame_of<T: serde::Serialize>(msg: &T) -> Vec<u8> {
    let mut buf = bytes::BytesMut::new();
    framekit_codec::message::encode_frame(&frame_config(), msg, &mut buf).unwrap();
    buf.to_vec()
}

#[test]
fn frame_declaring_four_gib_is_refused_without_growing_memory() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("root"), &[]);
    let intact = Intact::new(&server);
    let mut peer = server.connect();

    // The prefix announces 4 GiB - 1; 8 MiB of it follow, more than the
    // server may buffer.
    let mut wire = u32::MAX.to_be_bytes().to_vec();
    wire.extend(random_bytes(1, 8 << 20));
    let writer = send_in_background(&peer.stream, wire);
    match peer.recv() {
        Response::Error(e) => {
            assert_eq!(e.code, ErrorCode::BadRequest);
            assert!(
                e.message.contains("4294967295 bytes exceeds the maximum"),
                "{}",
                e.message
            );
        }
        other => panic!("expected an error, got {other:?}"),
    }
    read_to_close(&mut peer.stream);
    writer.join().unwrap();

    intact.check(&server, &[], Some(4 * GIB));
}

#[test]
fn first_frame_declaring_four_gib_is_refused_as_not_a_client() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("root"), &[]);
    let intact = Intact::new(&server);
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut wire = u32::MAX.to_be_bytes().to_vec();
    wire.extend(random_bytes(2, 1 << 20));
    let writer = send_in_background(&stream, wire);
    let reply: Response = framekit_codec::blocking::read_message(&mut stream, &frame_config())
        .unwrap()
        .unwrap();
    assert_eq!(error_code(reply), ErrorCode::BadMagic);
    read_to_close(&mut stream);
    writer.join().unwrap();

    intact.check(&server, &[], Some(4 * GIB));
}

#[test]
fn put_over_the_size_limit_is_refused_before_any_body_byte() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("root"), &["--max-file-size", "1M"]);
    let intact = Intact::new(&server);
    let mut peer = server.connect();
    assert_eq!(peer.welcome.max_file_size, MIB);

    // Refused while the peer has sent nothing but the request...
    for size in [GIB, u64::MAX, MIB + 1] {
        peer.send(&put_request("big", size, false));
        assert_eq!(error_code(peer.recv()), ErrorCode::TooLarge, "{size}");
        // ...and no body is expected: the next message is a request.
        peer.send(&stat("big"));
        assert_eq!(error_code(peer.recv()), ErrorCode::NotFound);
    }

    // The limit itself is allowed.
    let body = random_bytes(3, 1 << 20);
    peer.send(&put_request("exact", MIB, false));
    assert_eq!(peer.recv(), Response::PutReady { offset: 0 });
    peer.raw(&body);
    peer.send(&Trailer {
        hash: *blake3::hash(&body).as_bytes(),
    });
    assert!(matches!(peer.recv(), Response::PutDone { size, .. } if size == MIB));
    assert_eq!(server.stored().read("exact").unwrap(), body);
    assert!(!server.stored().exists("big"));

    intact.check(&server, &["root/exact"], Some(GIB));
}

#[test]
fn put_declaring_four_gib_and_sending_little_holds_only_fixed_buffers() {
    // The put needs 4 GiB free, and the server's minimum free space on
    // top: a tmpfs has them where a full build disk may not.
    let dir = memory_tempdir();
    let root = dir.path().join("root");
    let server = ServerProcess::start(&root, &[]);
    let intact = Intact::new(&server);
    let mut peer = server.connect();
    // Within the default 64 GiB limit; needs 4 GiB free on the disk.
    peer.send(&put_request("declared", 4 * GIB, false));
    assert_eq!(peer.recv(), Response::PutReady { offset: 0 });
    peer.raw(&random_bytes(4, 2 << 20));
    framekit_tests::eventually("the upload is staged", || {
        server.stored().uploads_in_progress() > 0
    });
    drop(peer);

    intact.check(&server, &[], Some(4 * GIB));
    assert!(!server.stored().exists("declared"));
}

/// A put that declares `declared` body bytes, followed by `wire`: the
/// server takes exactly `declared` bytes as the body and must find the
/// trailer frame right after them. Whatever else is there is a protocol
/// error: a BadRequest answer saying a trailer was expected, the
/// connection closed, nothing published.
fn body_then(declared: usize, wire: Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let server = ServerProcess::start(&root, &[]);
    let intact = Intact::new(&server);
    let mut peer = server.connect();
    peer.send(&put_request("long", declared as u64, false));
    assert_eq!(peer.recv(), Response::PutReady { offset: 0 });
    let writer = send_in_background(&peer.stream, wire);
    match peer.recv() {
        Response::Error(e) => {
            assert_eq!(e.code, ErrorCode::BadRequest);
            assert!(e.message.contains("expected a trailer"), "{}", e.message);
        }
        other => panic!("expected an error, got {other:?}"),
    }
    assert_eq!(read_to_close(&mut peer.stream), 0);
    writer.join().unwrap();

    intact.check(&server, &[], None);
    assert!(!server.stored().exists("long"));
}

#[test]
fn body_longer_than_declared_is_a_protocol_error_and_publishes_nothing() {
    // The client sends 64 KiB more than it declared, then the trailer of
    // everything it sent. The surplus starts with "EXTR", read as the
    // length prefix of a frame far over the maximum.
    let declared = 100_000;
    let mut content = random_bytes(5, declared);
    content.extend(b"EXTRA BYTES");
    content.extend(random_bytes(6, 64 * 1024));
    let mut wire = content.clone();
    wire.extend(frame_of(&Trailer {
        hash: *blake3::hash(&content).as_bytes(),
    }));
    body_then(declared, wire);
}

#[test]
fn body_one_byte_longer_than_declared_shifts_the_trailer_and_publishes_nothing() {
    // One surplus zero byte: the trailer's frame is read one byte late, so
    // its prefix reads as an empty frame, which is no trailer.
    let declared = 100_000;
    let body = random_bytes(7, declared);
    let mut wire = body.clone();
    wire.push(0);
    wire.extend(frame_of(&Trailer {
        hash: *blake3::hash(&body).as_bytes(),
    }));
    body_then(declared, wire);
}

#[test]
fn body_longer_than_declared_does_not_destroy_the_answers_queued_before_it() {
    // A peer pipelines a get of 512 KiB and an upload with 128 KiB more
    // than it declared, and reads nothing until the server has given up on
    // the upload. The get's answer and the error are still queued for it
    // when the server hangs up: they must arrive whole, followed by the end
    // of the stream, not destroyed by a connection reset.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let file = random_bytes(9, 512 * 1024);
    stored_for(&root).write("f", &file);
    let server = ServerProcess::start(&root, &[]);
    let intact = Intact::new(&server);

    let mut peer = server.connect();
    let declared = 100_000;
    let mut wire = frame_of(&get("f"));
    wire.extend(frame_of(&put_request("long", declared as u64, false)));
    wire.extend(random_bytes(10, declared));
    wire.extend(b"EXTRA BYTES");
    wire.extend(random_bytes(11, 128 * 1024));
    peer.stream.write_all(&wire).unwrap();
    peer.stream.shutdown(std::net::Shutdown::Write).unwrap();
    wait_for_line(
        &server,
        &[&log_peer(&peer.stream), "op=\"put\" name=long", "failed"],
    );

    assert!(matches!(peer.recv(), Response::GetReady { size, .. } if size == file.len() as u64));
    let mut body = vec![0u8; file.len()];
    std::io::Read::read_exact(&mut peer.stream, &mut body).unwrap();
    assert!(body == file, "the get body arrived altered");
    let trailer: Trailer =
        framekit_codec::blocking::read_message(&mut peer.stream, &frame_config())
            .unwrap()
            .unwrap();
    assert_eq!(trailer.hash, *blake3::hash(&file).as_bytes());
    assert_eq!(peer.recv(), Response::PutReady { offset: 0 });
    match peer.recv() {
        Response::Error(e) => {
            assert_eq!(e.code, ErrorCode::BadRequest);
            assert!(e.message.contains("expected a trailer"), "{}", e.message);
        }
        other => panic!("expected an error, got {other:?}"),
    }
    let mut rest = Vec::new();
    assert_eq!(
        std::io::Read::read_to_end(&mut peer.stream, &mut rest).unwrap(),
        0,
        "a clean end of the stream"
    );

    intact.check(&server, &[], None);
    assert!(!server.stored().exists("long"));
}

#[test]
fn missing_trailer_drops_a_silent_peer_at_the_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let server = ServerProcess::start(&root, &["--idle-timeout", "1"]);
    let intact = Intact::new(&server);
    let mut peer = server.connect();
    let body = random_bytes(8, 1 << 20);
    peer.send(&put_request("untrailed", body.len() as u64, false));
    assert_eq!(peer.recv(), Response::PutReady { offset: 0 });
    peer.raw(&body);
    // No trailer, and the connection stays open: the server hangs up.
    assert_eq!(read_to_close(&mut peer.stream), 0);
    wait_for_line(&server, &[&log_peer(&peer.stream), "idle timeout"]);

    intact.check(&server, &[], None);
    assert!(!server.stored().exists("untrailed"));
}

/// How many connections this process may hold open with room to spare,
/// from its open-files limit (the server inherits the same limit).
fn connection_budget(wanted: usize) -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let soft: usize = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(3))
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX);
    wanted.min(soft.saturating_sub(256))
}

#[test]
fn thousand_idle_connections_leave_the_server_responsive_and_small() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(
        &dir.path().join("root"),
        &[
            "--max-connections",
            "2000",
            "--max-connections-per-ip",
            "2000",
        ],
    );
    let intact = Intact::new(&server);
    let count = connection_budget(1000);
    if count < 1000 {
        eprintln!("the open-files limit allows only {count} connections, not 1000");
    }
    assert!(
        count >= 100,
        "the open-files limit is too low for this test"
    );

    // Each one completes the handshake, then stays silent.
    let peers: Vec<RawPeer> = (0..count).map(|_| server.connect()).collect();
    let held = server.memory();
    let per_connection = held.rss.saturating_sub(intact.memory().rss) / count as u64;
    eprintln!(
        "server memory with {count} idle connections: {held} (before: {}), about {} KiB each",
        intact.memory(),
        per_connection / 1024
    );
    assert!(
        held.rss < 64 * MIB,
        "{count} idle connections take {held} of server memory"
    );

    // Served while all of them are held.
    intact.check(&server, &[], None);
    drop(peers);
}

#[test]
fn connections_idle_after_a_batch_of_eager_uploads_hold_no_batch_sized_buffer() {
    // Each connection pipelines a full batch of eager uploads, reads the
    // answers, then stays silent: what it read them into is let go.
    const PEERS: usize = 100;
    const FILES: usize = 64;
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(
        &dir.path().join("root"),
        &["--max-connections-per-ip", "200"],
    );
    let intact = Intact::new(&server);
    let body = random_bytes(60, 4096);
    let hash = *blake3::hash(&body).as_bytes();
    let batch_from = |p: usize| {
        let mut peer = server.connect();
        let mut batch = Vec::new();
        for f in 0..FILES {
            let put = Request::PutEager(framekit_transfer::PutEager {
                name: format!("p{p}/f{f}"),
                size: body.len() as u64,
                overwrite: false,
            });
            batch.extend(frame_of(&put));
            batch.extend_from_slice(&body);
            batch.extend(frame_of(&Trailer { hash }));
        }
        peer.raw(&batch);
        for f in 0..FILES {
            let answer = peer.recv();
            assert!(
                matches!(answer, Response::PutDone { .. }),
                "p{p}/f{f}: {answer:?}"
            );
        }
        peer
    };
    // One first, so that what the storage keeps for later (an S3 store's
    // pool of HTTP connections) is counted before, not per connection.
    let first = batch_from(PEERS);
    let before = server.memory();
    let peers: Vec<RawPeer> = (0..PEERS).map(batch_from).collect();
    let held = server.memory();
    let per_connection = held.rss.saturating_sub(before.rss) / PEERS as u64;
    eprintln!(
        "server memory with {PEERS} connections idle after {FILES} eager uploads each: {held} (before: {before}), about {} KiB each",
        per_connection / 1024
    );
    // Measured here: 32-37 KiB a connection on the local root, 57 on
    // Garage; 123 and 149 while each kept the buffer of its batch (room
    // for 512 KiB, partly filled).
    assert!(
        per_connection < 90 * 1024,
        "{} KiB a connection",
        per_connection / 1024
    );
    intact.round_trip(&server);
    drop((first, peers));
}

/// Files in the directory of the listing tests.
const HUGE_DIRECTORY: usize = 300_000;

#[test]
fn listings_of_a_huge_directory_to_peers_that_never_read_hold_bounded_memory() {
    // 300,000 files are made faster in memory.
    let dir = memory_tempdir();
    let root = dir.path().join("root");
    let many = root.join("many");
    std::fs::create_dir_all(&many).unwrap();
    // Created in an order unlike the names': the listing sorts them.
    for i in 0..HUGE_DIRECTORY {
        let n = (i * 7919) % HUGE_DIRECTORY;
        std::fs::File::create(many.join(format!("file-{n:06}"))).unwrap();
    }
    std::fs::write(root.join("many.txt"), b"sorts before many/").unwrap();
    std::fs::write(root.join("many0"), b"sorts after many/").unwrap();
    let server = ServerProcess::start(&root, &["--max-connections-per-ip", "100"]);
    let intact = Intact::new(&server);

    // 64 peers ask for everything and read only the start of the answer
    // (so the listing is known to be under way), then nothing more. Their
    // receive windows are small, so that the listings stop midway rather
    // than all go into the kernel's buffers.
    let peers: Vec<RawPeer> = (0..64)
        .map(|i| {
            let stream = connect_from(None, server.addr, Some(16 * 1024)).unwrap();
            let mut peer = RawPeer::handshake(stream, None);
            let request = if i % 2 == 0 {
                Request::List(List { prefix: "".into() })
            } else {
                Request::Tree(Tree { dir: "".into() })
            };
            peer.send(&request);
            assert!(
                matches!(peer.recv(), Response::Entry(_) | Response::Directory { .. }),
                "a listing starts"
            );
            peer
        })
        .collect();
    // Meanwhile a client that reads gets everything, in byte order.
    let mut reader = server.connect();
    let names = list(&mut reader, "").unwrap();
    let expected_count =
        HUGE_DIRECTORY + 2 + names.iter().filter(|n| n.starts_with("intact-")).count();
    assert_eq!(names.len(), expected_count);
    assert!(names.windows(2).all(|w| w[0] < w[1]), "not in byte order");
    let many_txt = names.iter().position(|n| n == "many.txt").unwrap();
    assert_eq!(names[many_txt + 1], "many/file-000000");
    assert_eq!(names[many_txt + HUGE_DIRECTORY], "many/file-299999");
    assert_eq!(names[many_txt + HUGE_DIRECTORY + 1], "many0");

    let memory = server.memory();
    eprintln!(
        "server memory with 64 listings of {HUGE_DIRECTORY} files held by peers that do not read: {memory} (before: {})",
        intact.memory()
    );
    assert!(
        memory.peak <= 64 * MIB,
        "64 unread listings of {HUGE_DIRECTORY} files took the server's peak memory to {memory}"
    );
    intact.check(&server, &[], None);
    drop(peers);
}

/// Sends `frame` one byte per second on a connection (after the handshake
/// when `handshake` is set) while other clients are served, and checks
/// that the server hangs up on it before the frame is complete: each
/// byte comes well within the idle timeout, but the whole message must.
fn trickle(handshake: bool, frame: Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("root"), &["--idle-timeout", "2"]);
    let intact = Intact::new(&server);
    let mut stream = if handshake {
        server.connect().stream
    } else {
        TcpStream::connect(server.addr).unwrap()
    };
    let frame_len = frame.len();
    let sent = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let mut stream = stream.try_clone().unwrap();
        let (sent, stop) = (Arc::clone(&sent), Arc::clone(&stop));
        std::thread::spawn(move || {
            for byte in frame {
                if stop.load(Ordering::SeqCst) || stream.write_all(&[byte]).is_err() {
                    return;
                }
                sent.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };

    // Others are served meanwhile.
    intact.round_trip(&server);

    // The server hangs up, after saying why if the connection was past the
    // handshake (a stranger's hello gets no answer).
    let mut said = Vec::new();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let _ = stream.read_to_end(&mut said);
    if handshake {
        let reply: Response = framekit_codec::message::decode(said.get(4..).unwrap_or_default())
            .unwrap_or_else(|e| panic!("expected a timeout error, got {said:?}: {e}"));
        assert!(
            matches!(&reply, Response::Error(e) if e.code == ErrorCode::Timeout),
            "{reply:?}"
        );
    } else {
        assert!(said.is_empty(), "{said:?}");
    }
    let sent_before_close = sent.load(Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    assert!(
        sent_before_close < frame_len,
        "the whole {frame_len}-byte frame was sent before the server hung up"
    );
    wait_for_line(&server, &[&log_peer(&stream), "idle timeout"]);

    intact.check(&server, &[], None);
}

#[test]
fn a_connection_saying_hello_slowly_holds_no_session_slot() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("root"), &["--max-connections", "1"]);
    let mut slow = TcpStream::connect(server.addr).unwrap();
    let hello = frame_of(&framekit_transfer::Hello::new(Some("t".repeat(200))));
    slow.write_all(&hello[..10]).unwrap();
    // The one session slot is free for a client that says hello at once.
    let out = server
        .client(dir.path())
        .args(["list", "--no-retry"])
        .output()
        .unwrap();
    framekit_tests::assert_success(&out);
    drop(slow);
}

#[test]
fn a_hello_must_arrive_whole_within_the_hello_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(
        &dir.path().join("root"),
        &["--hello-timeout", "1", "--idle-timeout", "300"],
    );
    let mut slow = TcpStream::connect(server.addr).unwrap();
    let hello = frame_of(&framekit_transfer::Hello::new(Some("t".repeat(200))));
    // A byte at a time, each well within the idle timeout: the server
    // hangs up once the hello's second is over, without a word.
    let mut sent = 0;
    for byte in &hello {
        if slow.write_all(&[*byte]).is_err() {
            break;
        }
        sent += 1;
        if server.log().contains(&log_peer(&slow)) && server.log().contains("idle timeout") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(sent < hello.len(), "the whole hello went through");
    assert_eq!(read_to_close(&mut slow), 0);
    wait_for_line(&server, &[&log_peer(&slow), "idle timeout"]);
}

/// The trickled frames are at least this long: 100 seconds at one byte per
/// second, far beyond the idle timeout.
const MIN_TRICKLED: usize = 100;

#[test]
fn slowloris_request_is_dropped_at_the_whole_message_deadline() {
    let frame = frame_of(&stat(&"s".repeat(200)));
    assert!(frame.len() >= MIN_TRICKLED);
    trickle(true, frame);
}

#[test]
fn slowloris_hello_is_dropped_at_the_whole_message_deadline() {
    let frame = frame_of(&framekit_transfer::Hello::new(Some("t".repeat(200))));
    assert!(frame.len() >= MIN_TRICKLED);
    trickle(false, frame);
}

#[test]
fn peer_that_never_reads_a_get_body_blocks_nobody_and_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let size = match Backend::current() {
        Backend::Local => {
            // Sparse: 1 GiB to serve without using the disk.
            std::fs::create_dir_all(&root).unwrap();
            std::fs::File::create(root.join("big"))
                .unwrap()
                .set_len(GIB)
                .unwrap();
            GIB
        }
        // Still far more than the socket buffers can take.
        Backend::Garage | Backend::Moto => {
            stored_for(&root).write_random("big", 9, 256 * MIB);
            256 * MIB
        }
    };
    let server = ServerProcess::start(&root, &["--idle-timeout", "2"]);
    let intact = Intact::new(&server);

    let mut stalled = server.connect();
    stalled.send(&get("big"));
    assert!(matches!(stalled.recv(), Response::GetReady { size: s, .. } if s == size));
    // It reads nothing more. Meanwhile others list, put and get.
    let mut other = server.connect();
    let names = list(&mut other, "").unwrap();
    assert!(names.contains(&"big".to_owned()), "{names:?}");
    drop(other);
    intact.round_trip(&server);

    // The server gives up on the stalled download...
    let line = wait_for_line(&server, &[&log_peer(&stalled.stream), "idle timeout"]);
    assert!(line.contains("op=\"get\" name=big"), "{line}");
    // ...having sent no more than the socket buffers took.
    let received = read_to_close(&mut stalled.stream);
    eprintln!("the stalled peer had {received} bytes waiting of {size}");
    assert!(received < size);

    intact.check(&server, &[], Some(size));
}

/// Every name form the naming rules refuse.
fn invalid_names() -> Vec<String> {
    let mut names: Vec<String> = [
        "",
        "/etc/passwd",
        "/",
        "..",
        "../outside",
        "../outside/secret",
        "a/../../outside",
        "a/..",
        ".",
        "./here",
        "a/./b",
        "a//b",
        "trailing/",
        "nul\0byte",
        "back\\slash",
        "..\\outside",
        "control\u{7}char",
        "new\nline",
        "escape\u{1b}[31m",
        "c1\u{85}control",
        ".framekit",
        ".framekit/staging",
        ".framekit/staging/x",
    ]
    .map(String::from)
    .to_vec();
    names.push("c".repeat(256));
    names.push(vec!["n".repeat(200); 6].join("/"));
    names
}

#[test]
fn invalid_names_are_refused_by_stat_delete_and_list() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let server = ServerProcess::start(&root, &[]);
    let mut intact = Intact::new(&server);
    std::fs::create_dir(dir.path().join("outside")).unwrap();
    std::fs::write(dir.path().join("outside/secret"), b"outside").unwrap();
    server.stored().write("inside.txt", b"inside");
    intact.record_disk();
    // An upload in progress, so the staging area holds a file (over 8 MiB:
    // on S3 too, not held in memory).
    let mut uploading = server.connect();
    uploading.send(&put_request("staged", 10_000_000, false));
    assert_eq!(uploading.recv(), Response::PutReady { offset: 0 });
    uploading.raw(&[1; 10]);
    framekit_tests::eventually("the upload is staged", || {
        server.stored().uploads_in_progress() > 0
    });

    let mut peer = server.connect();
    for name in invalid_names() {
        peer.send(&stat(&name));
        assert_eq!(
            error_code(peer.recv()),
            ErrorCode::InvalidName,
            "stat {name:?}"
        );
        peer.send(&delete(&name));
        assert_eq!(
            error_code(peer.recv()),
            ErrorCode::InvalidName,
            "delete {name:?}"
        );
        if name.is_empty() {
            continue; // the empty prefix lists everything
        }
        // As a prefix, a name that no file can have lists nothing, and one
        // longer than any name is refused.
        let expected = if name.len() > framekit_transfer::MAX_NAME_LEN {
            Err(ErrorCode::InvalidName)
        } else {
            Ok(vec![])
        };
        assert_eq!(list(&mut peer, &name), expected, "list {name:?}");
    }
    // Neither the staging area nor anything outside shows in a listing.
    let everything = list(&mut peer, "").unwrap();
    assert!(
        everything
            .iter()
            .all(|n| n == "inside.txt" || n.starts_with("intact-")),
        "{everything:?}"
    );
    drop(uploading);

    intact.check(&server, &[], None);
    assert_eq!(server.stored().read("inside.txt").unwrap(), b"inside");
}

#[test]
fn symlinks_pointing_out_of_the_root_are_never_followed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let server = ServerProcess::start(&root, &[]);
    let mut intact = Intact::new(&server);
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let secret = b"the content of a file outside the root";
    std::fs::write(outside.join("secret"), secret).unwrap();
    let link =
        |target: &Path, name: &str| std::os::unix::fs::symlink(target, root.join(name)).unwrap();
    link(&outside.join("secret"), "file_link"); // absolute, to a file
    link(Path::new("../outside"), "dir_link"); // relative, to a directory
    link(Path::new(".."), "up"); // the root's parent
    link(&outside.join("new"), "dangling"); // to a file not there yet
    intact.record_disk();

    let mut peer = server.connect();
    let escapes = [
        "file_link",
        "dir_link/secret",
        "up/outside/secret",
        "dangling",
    ];
    for name in escapes {
        peer.send(&get(name));
        assert_eq!(error_code(peer.recv()), ErrorCode::Forbidden, "get {name}");
        peer.send(&stat(name));
        assert_eq!(error_code(peer.recv()), ErrorCode::Forbidden, "stat {name}");
    }
    for name in ["file_link", "dir_link/new", "up/outside/new", "dangling"] {
        for overwrite in [false, true] {
            peer.send(&put_request(name, 5, overwrite));
            // A link at the name itself occupies it: without overwrite,
            // that is what the refusal says.
            let expected = if !overwrite && matches!(name, "file_link" | "dangling") {
                ErrorCode::AlreadyExists
            } else {
                ErrorCode::Forbidden
            };
            assert_eq!(
                error_code(peer.recv()),
                expected,
                "put {name} overwrite={overwrite}"
            );
        }
    }
    for name in ["dir_link/secret", "up/outside/secret"] {
        peer.send(&delete(name));
        assert_eq!(
            error_code(peer.recv()),
            ErrorCode::Forbidden,
            "delete {name}"
        );
    }
    for prefix in ["", "dir_link", "up/", "file_link"] {
        let names = list(&mut peer, prefix).unwrap();
        assert!(
            names.iter().all(|n| n.starts_with("intact-")),
            "list {prefix:?}: {names:?}"
        );
    }
    // Deleting a link removes the link, never its target.
    peer.send(&delete("file_link"));
    assert_eq!(peer.recv(), Response::Deleted);
    assert!(std::fs::symlink_metadata(root.join("file_link")).is_err());

    intact.check(&server, &["root/file_link"], None);
    assert_eq!(std::fs::read(outside.join("secret")).unwrap(), secret);
    assert!(!outside.join("new").exists());
}

#[test]
fn a_link_to_nothing_where_a_directory_must_be_is_not_a_file_and_never_already_exists() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let server = ServerProcess::start(&root, &[]);
    let mut intact = Intact::new(&server);
    std::os::unix::fs::symlink("nowhere", root.join("d")).unwrap();
    intact.record_disk();

    let mut peer = server.connect();
    for name in ["d", "d/e"] {
        peer.send(&Request::MakeDir(MakeDir { name: name.into() }));
        assert_eq!(error_code(peer.recv()), ErrorCode::NotAFile, "make {name}");
    }
    for (name, overwrite) in [("d/x", false), ("d/x", true), ("d/e/x", false)] {
        let body = random_bytes(12, 100_000);
        peer.send(&put_request(name, body.len() as u64, overwrite));
        assert_eq!(peer.recv(), Response::PutReady { offset: 0 });
        peer.raw(&body);
        peer.send(&Trailer {
            hash: *blake3::hash(&body).as_bytes(),
        });
        assert_eq!(
            error_code(peer.recv()),
            ErrorCode::NotAFile,
            "put {name} overwrite={overwrite}"
        );
        peer.send(&stat(name));
        assert_eq!(error_code(peer.recv()), ErrorCode::NotFound, "stat {name}");
    }

    intact.check(&server, &[], None);
}

/// A loopback address other than 127.0.0.1: the `n`th after it.
fn loopback(n: u16) -> std::net::IpAddr {
    let [high, low] = (n + 1).to_be_bytes();
    std::net::IpAddr::from([127, 0, high, low])
}

#[test]
fn a_client_with_a_token_gets_in_past_idle_connections_and_slowloris_hellos_from_many_addresses() {
    const IDLE: u16 = 2_000;
    const IDLE_ADDRESSES: u16 = 40;
    const SLOWLORIS: u16 = 300;
    let limit = framekit_tests::raise_open_files_limit();
    assert!(
        limit >= u64::from(IDLE + SLOWLORIS) + 1024,
        "the open-files limit ({limit}) is too low for this test: raise the hard limit"
    );
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "the-valid-token\n").unwrap();
    std::fs::set_permissions(&tokens, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let server = ServerProcess::start(
        &dir.path().join("root"),
        &["--token-file", tokens.to_str().unwrap()],
    );

    // 2,000 connections from 127.0.0.2-127.0.0.41 that never say a word.
    let idle: Vec<TcpStream> = (0..IDLE)
        .map(|i| connect_from(Some(loopback(1 + i % IDLE_ADDRESSES)), server.addr, None).unwrap())
        .collect();
    // 300 more, each from an address of its own, trickling a hello a
    // byte a second.
    let hello = frame_of(&framekit_transfer::Hello::new(Some("t".repeat(200))));
    let slow: Vec<TcpStream> = (0..SLOWLORIS)
        .map(|i| connect_from(Some(loopback(1 + IDLE_ADDRESSES + i)), server.addr, None).unwrap())
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let trickler = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut slow = slow;
            for byte in hello {
                for stream in &mut slow {
                    let _ = stream.write_all(&[byte]);
                }
                for _ in 0..10 {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        })
    };

    // Meanwhile a client with the token puts a file, while the hellos are
    // still trickling. It may be told Busy while every pending connection
    // is under a second old, and tries again as it does by default; it
    // gives up after 20 s of that, which fails the put.
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let content = random_bytes(40, 300_000);
    std::fs::write(work.join("in"), &content).unwrap();
    let out = server
        .client(&work)
        .env("FRAMEKIT_TOKEN", "the-valid-token")
        .args(["put", "in", "--name", "got-in"])
        .output()
        .unwrap();
    let trickling = !trickler.is_finished();
    stop.store(true, Ordering::SeqCst);
    trickler.join().unwrap();
    assert!(trickling, "the slow hellos were over before the put ended");
    framekit_tests::assert_success(&out);
    assert_eq!(server.stored().read("got-in").unwrap(), content);
    drop(idle);
}

#[test]
fn a_flood_of_malformed_connections_is_logged_in_a_few_lines_and_summaries() {
    const FLOOD: u64 = 3_000;
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("root"), &[]);
    let intact = Intact::new(&server);
    for _ in 0..FLOOD {
        let mut stream = TcpStream::connect(server.addr).unwrap();
        // A length far over the maximum: not this protocol at all.
        let _ = stream.write_all(&u32::MAX.to_be_bytes());
        read_to_close(&mut stream);
    }
    const WHAT: &str = "connection closed on protocol error";
    let count = |log: &str| -> (u64, u64) {
        let written = log
            .lines()
            .filter(|line| line.contains(WHAT) && !line.contains("left out"))
            .count() as u64;
        let left_out = log
            .lines()
            .filter(|line| line.contains("log lines left out") && line.contains(WHAT))
            .filter_map(|line| {
                line.split("left_out=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum::<u64>();
        (written, left_out)
    };
    // Every one is accounted for, once its window's summary is out.
    framekit_tests::eventually("the summaries account for every connection", || {
        let (written, left_out) = count(&server.log());
        written + left_out == FLOOD
    });
    let (written, left_out) = count(&server.log());
    eprintln!(
        "{FLOOD} malformed connections: {written} lines written, {left_out} left out and counted"
    );
    assert!(
        written <= FLOOD / 20,
        "{written} lines for {FLOOD} connections"
    );
    assert!(
        server.log().lines().count() < 500,
        "{}",
        server.log().lines().count()
    );
    intact.check(&server, &[], None);
}

#[test]
fn a_socket_and_a_loop_of_links_in_the_root_are_not_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let server = ServerProcess::start(&root, &[]);
    let mut intact = Intact::new(&server);
    let _socket = std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap();
    std::os::unix::fs::symlink("loop-b", root.join("loop-a")).unwrap();
    std::os::unix::fs::symlink("loop-a", root.join("loop-b")).unwrap();
    intact.record_disk();

    let mut peer = server.connect();
    for name in ["sock", "loop-a", "loop-a/under"] {
        peer.send(&get(name));
        assert_eq!(error_code(peer.recv()), ErrorCode::NotAFile, "get {name}");
        peer.send(&stat(name));
        assert_eq!(error_code(peer.recv()), ErrorCode::NotAFile, "stat {name}");
    }
    intact.check(&server, &[], None);
}

#[test]
fn a_malformed_request_is_answered_in_words_not_debug_output() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("root"), &[]);
    let intact = Intact::new(&server);
    let mut peer = server.connect();
    // A get whose if_version option has the tag 7.
    let mut payload = 1u32.to_le_bytes().to_vec();
    payload.extend(1u64.to_le_bytes());
    payload.push(b'f');
    payload.extend(0u64.to_le_bytes());
    payload.push(7);
    let mut frame = u32::try_from(payload.len()).unwrap().to_be_bytes().to_vec();
    frame.extend(payload);
    peer.raw(&frame);
    match peer.recv() {
        Response::Error(e) => {
            assert_eq!(e.code, ErrorCode::BadRequest);
            assert_eq!(
                e.message,
                "malformed Request message: an option's tag is 7, not 0 (none) or 1 (some)"
            );
        }
        other => panic!("expected an error, got {other:?}"),
    }
    read_to_close(&mut peer.stream);
    intact.check(&server, &[], None);
}

#[test]
fn only_relative_links_inside_the_root_are_followed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let server = ServerProcess::start(&root, &[]);
    let mut intact = Intact::new(&server);
    std::fs::create_dir(root.join("d")).unwrap();
    std::fs::write(root.join("d/target"), b"inside").unwrap();
    std::os::unix::fs::symlink("d/target", root.join("relative")).unwrap();
    std::os::unix::fs::symlink(root.join("d/target"), root.join("absolute")).unwrap();
    intact.record_disk();

    let mut peer = server.connect();
    peer.send(&stat("relative"));
    assert!(matches!(peer.recv(), Response::Entry(e) if e.size == 6));
    peer.send(&get("absolute"));
    assert_eq!(error_code(peer.recv()), ErrorCode::Forbidden);
    peer.send(&stat("absolute"));
    assert_eq!(error_code(peer.recv()), ErrorCode::Forbidden);
    intact.check(&server, &[], None);
}
