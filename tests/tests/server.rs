//! The server binary against raw protocol peers over loopback: limits,
//! integrity, truncation, crashes and shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use framekit_tests::{RawPeer, ServerProcess, eventually, random_bytes, small_disk, staging, tree};
use framekit_transfer::{ErrorCode, Get, Hello, Put, Request, Response, Trailer, frame_config};
use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

fn error_code(response: Response) -> ErrorCode {
    match response {
        Response::Error(e) => e.code,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn start_put(peer: &mut RawPeer, name: &str, size: u64, overwrite: bool) -> Response {
    peer.send(&Request::Put(Put {
        name: name.into(),
        size,
        overwrite,
        resume_key: None,
    }));
    peer.recv()
}

fn put(peer: &mut RawPeer, name: &str, body: &[u8]) -> Response {
    assert_eq!(
        start_put(peer, name, body.len() as u64, false),
        Response::PutReady { offset: 0 }
    );
    peer.raw(body);
    peer.send(&Trailer {
        hash: *blake3::hash(body).as_bytes(),
    });
    peer.recv()
}

#[test]
fn altered_body_byte_is_an_integrity_error_and_nothing_is_published() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("root"), &[]);
    let mut peer = server.connect();
    let body = random_bytes(1, 300_000);
    let mut altered = body.clone();
    altered[123_456] ^= 0x01;

    assert_eq!(
        start_put(&mut peer, "f.bin", body.len() as u64, false),
        Response::PutReady { offset: 0 }
    );
    peer.raw(&altered);
    peer.send(&Trailer {
        hash: *blake3::hash(&body).as_bytes(),
    });
    assert_eq!(error_code(peer.recv()), ErrorCode::IntegrityMismatch);
    assert!(!server.stored().exists("f.bin"));
    assert_eq!(server.stored().uploads_in_progress(), 0);

    // The same connection goes on and the honest upload succeeds.
    assert!(matches!(
        put(&mut peer, "f.bin", &body),
        Response::PutDone { .. }
    ));
    assert_eq!(server.stored().read("f.bin").unwrap(), body);
}

#[test]
fn peer_closing_mid_body_leaves_no_file_and_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("root"), &[]);
    let mut peer = server.connect();
    assert_eq!(
        start_put(&mut peer, "cut.bin", 10_000_000, false),
        Response::PutReady { offset: 0 }
    );
    peer.raw(&random_bytes(2, 3_000_000));
    eventually("the partial upload is staged", || {
        server.stored().uploads_in_progress() > 0
    });
    drop(peer);
    server.wait_for_log("connection dropped");
    eventually("the staging area is empty", || {
        server.stored().uploads_in_progress() == 0
    });
    assert!(!server.stored().exists("cut.bin"));
    assert!(
        server.stored().is_empty(),
        "{:?}",
        server.stored().everything()
    );
}

#[test]
fn missing_trailer_then_close_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("root"), &[]);
    let mut peer = server.connect();
    assert_eq!(
        start_put(&mut peer, "t", 5, false),
        Response::PutReady { offset: 0 }
    );
    peer.raw(b"hello");
    drop(peer);
    server.wait_for_log("connection dropped");
    eventually("the staging area is empty", || {
        server.stored().uploads_in_progress() == 0
    });
    assert!(!server.stored().exists("t"));
}

#[test]
fn connection_over_the_limit_gets_busy_and_a_freed_slot_is_reused() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("root"), &["--max-connections", "2"]);
    let first = server.connect();
    let _second = server.connect();

    let mut third = TcpStream::connect(server.addr).unwrap();
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    framekit_codec::blocking::write_message(&mut third, &frame_config(), &Hello::new(None))
        .unwrap();
    let reply: Response = framekit_codec::blocking::read_message(&mut third, &frame_config())
        .unwrap()
        .unwrap();
    assert_eq!(error_code(reply), ErrorCode::Busy);

    drop(first);
    eventually("a slot is free again", || {
        let mut stream = TcpStream::connect(server.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        framekit_codec::blocking::write_message(&mut stream, &frame_config(), &Hello::new(None))
            .unwrap();
        matches!(
            framekit_codec::blocking::read_message(&mut stream, &frame_config()),
            Ok(Some(Response::Welcome(_)))
        )
    });
}

#[test]
fn idle_connection_is_dropped_after_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("root"), &["--idle-timeout", "1"]);
    let mut peer = server.connect();
    assert_eq!(peer.welcome.idle_timeout_ms, 1000);
    // The server says why, then closes the connection.
    match peer.recv() {
        Response::Error(e) => {
            assert_eq!(e.code, ErrorCode::Timeout);
            assert!(
                e.message.contains("after 1 s without a request"),
                "{}",
                e.message
            );
        }
        other => panic!("expected a timeout error, got {other:?}"),
    }
    let mut buf = [0u8; 16];
    assert_eq!(peer.stream.read(&mut buf).unwrap(), 0);
    server.wait_for_log("idle timeout");
}

#[test]
fn idle_upload_is_dropped_and_its_temporary_file_removed() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("root"), &["--idle-timeout", "1"]);
    let mut peer = server.connect();
    assert_eq!(
        start_put(&mut peer, "slow", 1000, false),
        Response::PutReady { offset: 0 }
    );
    peer.raw(&[1; 10]);
    let mut buf = [0u8; 16];
    assert_eq!(peer.stream.read(&mut buf).unwrap(), 0);
    eventually("the staging area is empty", || {
        server.stored().uploads_in_progress() == 0
    });
    assert!(!server.stored().exists("slow"));
}

#[test]
fn killed_server_leaves_no_partial_file_and_restart_cleans_staging() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let mut server = ServerProcess::start(&root, &[]);
    let mut peer = server.connect();
    assert_eq!(
        start_put(&mut peer, "big.bin", 50_000_000, false),
        Response::PutReady { offset: 0 }
    );
    peer.raw(&random_bytes(3, 5_000_000));
    eventually("the partial upload is staged", || {
        server.stored().uploads_in_progress() > 0
    });
    server.kill();
    assert!(!server.stored().exists("big.bin"));

    // What the dead server left goes: at once from a local disk; from a
    // bucket, where other servers may be uploading, once its time to live
    // is over.
    let server = ServerProcess::start(&root, &["--partial-ttl", "1"]);
    eventually("the leftover is removed", || {
        server.stored().uploads_in_progress() == 0
    });
    assert!(!server.stored().exists("big.bin"));
    // And it serves.
    let mut peer = server.connect();
    assert!(matches!(
        put(&mut peer, "big.bin", b"small now"),
        Response::PutDone { .. }
    ));
}

#[test]
fn sigterm_lets_a_transfer_in_flight_finish_then_exits() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(&dir.path().join("root"), &["--grace-period", "20"]);
    let mut peer = server.connect();
    let body = random_bytes(4, 2_000_000);
    assert_eq!(
        start_put(&mut peer, "inflight", body.len() as u64, false),
        Response::PutReady { offset: 0 }
    );
    peer.raw(&body[..1_000_000]);
    server.signal("TERM");
    server.wait_for_log("shutting down");
    // New connections are refused once the listener is closed.
    eventually("the listener is closed", || {
        TcpStream::connect(server.addr).is_err()
    });
    peer.raw(&body[1_000_000..]);
    peer.send(&Trailer {
        hash: *blake3::hash(&body).as_bytes(),
    });
    assert!(matches!(peer.recv(), Response::PutDone { .. }));
    // Between requests, the connection is told the server is going away.
    assert_eq!(error_code(peer.recv()), ErrorCode::ShuttingDown);
    let status = server
        .wait_exit(framekit_tests::PATIENCE)
        .expect("the server exits");
    assert!(status.success(), "{status:?}");
    assert_eq!(server.stored().read("inflight").unwrap(), body);
}

#[test]
fn a_signal_sent_as_soon_as_the_address_is_announced_is_a_clean_shutdown() {
    // The handlers must be in place before `listening on` is printed: a
    // supervisor may stop the server the moment it has read that line.
    for name in ["INT", "TERM", "INT", "TERM"] {
        let dir = tempfile::tempdir().unwrap();
        let mut server = ServerProcess::start(&dir.path().join("root"), &[]);
        server.signal(name);
        let status = server
            .wait_exit(framekit_tests::PATIENCE)
            .expect("the server exits");
        assert!(status.success(), "SIG{name}: {status:?}");
    }
}

#[test]
fn sigterm_aborts_a_stalled_upload_after_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(&dir.path().join("root"), &["--grace-period", "1"]);
    let mut peer = server.connect();
    // Over 8 MiB: staged in the bucket too, not held in memory.
    assert_eq!(
        start_put(&mut peer, "stalled", 10_000_000, false),
        Response::PutReady { offset: 0 }
    );
    peer.raw(&[0; 1000]);
    eventually("the partial upload is staged", || {
        server.stored().uploads_in_progress() > 0
    });
    server.signal("INT");
    let status = server
        .wait_exit(framekit_tests::PATIENCE)
        .expect("the server exits");
    assert!(status.success(), "{status:?}");
    assert!(
        server.log().contains("aborting transfers"),
        "{}",
        server.log()
    );
    assert!(!server.stored().exists("stalled"));
    assert_eq!(server.stored().uploads_in_progress(), 0);
}

#[test]
fn invalid_names_are_refused_and_nothing_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let server = ServerProcess::start(&root, &[]);
    let before_parent = tree(dir.path());
    let long_component = "c".repeat(256);
    let long_name = vec!["n".repeat(200); 6].join("/");
    let names = [
        "",
        "/etc/passwd",
        "../outside",
        "a/../../outside",
        "./here",
        "a/./b",
        "a//b",
        "trailing/",
        "nul\0byte",
        "back\\slash",
        "control\u{7}char",
        "escape\u{1b}[31m",
        long_component.as_str(),
        long_name.as_str(),
        ".framekit/staging/x",
        ".framekit",
    ];
    let mut peer = server.connect();
    for name in names {
        assert_eq!(
            error_code(start_put(&mut peer, name, 1, true)),
            ErrorCode::InvalidName,
            "put {name:?}"
        );
        peer.send(&Request::Get(Get {
            name: name.into(),
            offset: 0,
            if_version: None,
        }));
        assert_eq!(
            error_code(peer.recv()),
            ErrorCode::InvalidName,
            "get {name:?}"
        );
    }
    assert_eq!(tree(dir.path()), before_parent);
}

#[test]
fn a_frame_declaring_four_gib_is_refused_without_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("root"), &[]);
    let mut peer = server.connect();
    peer.raw(&u32::MAX.to_be_bytes());
    peer.raw(&[0; 100]);
    // The server answers as soon as it reads the prefix, then hangs up.
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
    let mut buf = [0u8; 64];
    assert!(matches!(peer.stream.read(&mut buf), Ok(0) | Err(_)));
    server.wait_for_log("exceeds the maximum");
    // Others are still served.
    let mut other = server.connect();
    assert!(matches!(
        put(&mut other, "ok", b"fine"),
        Response::PutDone { .. }
    ));
}

#[test]
fn full_disk_is_reported_nothing_is_published_and_the_server_goes_on() {
    let (_dir, mnt) = small_disk("size=4m");
    let root = mnt.path.join("root");
    let server = ServerProcess::start(&root, &[]);
    let mut peer = server.connect();

    // Larger than the disk: refused before any body byte.
    assert_eq!(
        error_code(start_put(&mut peer, "huge", 8 << 20, false)),
        ErrorCode::NoSpace
    );

    // Fits when announced, but the disk fills up during the upload.
    let body = random_bytes(5, 3 << 20);
    assert_eq!(
        start_put(&mut peer, "a", body.len() as u64, false),
        Response::PutReady { offset: 0 }
    );
    std::fs::write(mnt.path.join("filler"), vec![1u8; 3 << 20]).unwrap();
    peer.raw(&body);
    peer.send(&Trailer {
        hash: *blake3::hash(&body).as_bytes(),
    });
    assert_eq!(error_code(peer.recv()), ErrorCode::NoSpace);
    assert!(!root.join("a").exists());
    assert!(staging(&root).is_empty());

    // Space again: the next upload that fits succeeds on the same connection.
    std::fs::remove_file(mnt.path.join("filler")).unwrap();
    let small = random_bytes(6, 1 << 20);
    assert!(matches!(
        put(&mut peer, "a", &small),
        Response::PutDone { .. }
    ));
    assert_eq!(std::fs::read(root.join("a")).unwrap(), small);
    drop(server);
}

#[test]
fn connections_over_the_per_address_limit_get_busy() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(
        &dir.path().join("root"),
        &["--max-connections", "10", "--max-connections-per-ip", "2"],
    );
    let first = server.connect();
    let _second = server.connect();
    let mut third = TcpStream::connect(server.addr).unwrap();
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    framekit_codec::blocking::write_message(&mut third, &frame_config(), &Hello::new(None))
        .unwrap();
    match framekit_codec::blocking::read_message(&mut third, &frame_config()).unwrap() {
        Some(Response::Error(e)) => {
            assert_eq!(e.code, ErrorCode::Busy);
            assert!(e.message.contains("for your address"), "{}", e.message);
        }
        other => panic!("expected busy, got {other:?}"),
    }
    drop(first);
    eventually("the address has a slot again", || {
        let mut stream = TcpStream::connect(server.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        framekit_codec::blocking::write_message(&mut stream, &frame_config(), &Hello::new(None))
            .unwrap();
        matches!(
            framekit_codec::blocking::read_message(&mut stream, &frame_config()),
            Ok(Some(Response::Welcome(_)))
        )
    });
}
