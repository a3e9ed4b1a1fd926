//! Eager uploads (`PutEager`) against the real server on raw sockets: a
//! small body sent with its request, without waiting for a go-ahead, and
//! many such requests pipelined on one connection.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use framekit_codec::blocking::read_message;
use framekit_codec::message::to_frame;
use framekit_tests::hostile::{Intact, error_code, read_to_close};
use framekit_tests::{RawPeer, ServerProcess, eventually, random_bytes, stored_for};
use framekit_transfer::{
    ErrorCode, Get, MAX_EAGER_BODY, PutEager, Request, Response, Stat, Trailer, frame_config,
};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;

/// The bytes of one eager upload: request, body, trailer (with `hash`).
fn eager_with_hash(name: &str, body: &[u8], overwrite: bool, hash: [u8; 32]) -> Vec<u8> {
    let config = frame_config();
    let request = Request::PutEager(PutEager {
        name: name.into(),
        size: body.len() as u64,
        overwrite,
    });
    let mut bytes = to_frame(&config, &request).unwrap().to_vec();
    bytes.extend_from_slice(body);
    bytes.extend_from_slice(&to_frame(&config, &Trailer { hash }).unwrap());
    bytes
}

/// The bytes of one eager upload of `body`, with its true hash.
fn eager(name: &str, body: &[u8], overwrite: bool) -> Vec<u8> {
    eager_with_hash(name, body, overwrite, *blake3::hash(body).as_bytes())
}

fn done(body: &[u8]) -> Response {
    Response::PutDone {
        size: body.len() as u64,
        hash: *blake3::hash(body).as_bytes(),
    }
}

fn stat(peer: &mut RawPeer, name: &str) -> Response {
    peer.send(&Request::Stat(Stat { name: name.into() }));
    peer.recv()
}

#[test]
fn eager_uploads_are_stored_whole_and_served_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("root"), &[]);
    let mut peer = server.connect();
    for (name, body) in [
        ("empty", Vec::new()),
        ("a/b/four-k", random_bytes(1, 4096)),
        (
            "largest",
            random_bytes(2, usize::try_from(MAX_EAGER_BODY).unwrap()),
        ),
    ] {
        peer.raw(&eager(name, &body, false));
        assert_eq!(peer.recv(), done(&body), "{name}");
        assert_eq!(server.stored().read(name).unwrap(), body);

        peer.send(&Request::Get(Get {
            name: name.into(),
            offset: 0,
            if_version: None,
        }));
        let size = body.len() as u64;
        assert!(matches!(peer.recv(), Response::GetReady { size: s, offset: 0, .. } if s == size));
        let mut back = vec![0; body.len()];
        peer.stream.read_exact(&mut back).unwrap();
        assert_eq!(back, body);
        let trailer: Trailer = read_message(&mut peer.stream, &frame_config())
            .unwrap()
            .unwrap();
        assert_eq!(trailer.hash, *blake3::hash(&body).as_bytes());
    }
    assert_eq!(server.stored().uploads_in_progress(), 0);
    eventually("one log line for the upload", || {
        server.requests_of("put", "a/b/four-k").len() == 1
    });
}

#[test]
fn pipelined_eager_uploads_are_answered_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("root"), &[]);
    let mut peer = server.connect();
    let bodies: Vec<Vec<u8>> = (0..200usize)
        .map(|i| random_bytes(100 + i as u64, (i * 331) % 9000))
        .collect();
    // All of them in one write, before reading any answer.
    let mut all = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        all.extend(eager(&format!("many/f{i:03}"), body, false));
    }
    peer.raw(&all);
    for (i, body) in bodies.iter().enumerate() {
        assert_eq!(peer.recv(), done(body), "answer {i}");
    }
    for (i, body) in bodies.iter().enumerate() {
        let stored = server.stored().read(&format!("many/f{i:03}")).unwrap();
        assert!(stored == *body, "many/f{i:03}");
    }
    // The connection goes on with ordinary requests.
    assert!(matches!(stat(&mut peer, "many/f007"), Response::Entry(_)));
}

#[test]
fn refused_eager_uploads_publish_nothing_and_keep_the_connection_in_step() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let stored = stored_for(&root);
    stored.write("taken", b"old");
    stored.make_dir("folder");
    let server = ServerProcess::start(&root, &["--max-file-size", "1000"]);
    let mut peer = server.connect();
    let body = random_bytes(3, 900);
    let mut wrong = *blake3::hash(&body).as_bytes();
    wrong[0] ^= 1;
    // Each refusal is pipelined with the next request: the server must
    // read every refused body whole to find it.
    let mut all = Vec::new();
    all.extend(eager("../escape", &body, false));
    all.extend(eager("taken", &body, false));
    all.extend(eager("folder", &body, true));
    all.extend(eager("big", &random_bytes(4, 1001), false));
    all.extend(eager_with_hash("altered", &body, false, wrong));
    all.extend(eager(".framekit/staging/x", &body, true));
    all.extend(eager("fine", &body, false));
    peer.raw(&all);
    let codes: Vec<ErrorCode> = (0..6).map(|_| error_code(peer.recv())).collect();
    assert_eq!(
        codes,
        [
            ErrorCode::InvalidName,
            ErrorCode::AlreadyExists,
            ErrorCode::NotAFile,
            ErrorCode::TooLarge,
            ErrorCode::IntegrityMismatch,
            ErrorCode::InvalidName,
        ]
    );
    assert_eq!(peer.recv(), done(&body));
    assert_eq!(stored.read("taken").unwrap(), b"old");
    assert_eq!(stored.read("fine").unwrap(), body);
    for name in ["big", "altered"] {
        assert_eq!(error_code(stat(&mut peer, name)), ErrorCode::NotFound);
    }
    assert_eq!(stored.uploads_in_progress(), 0);
    assert_eq!(stored.kept(), 0);
    assert_eq!(stored.names(), ["fine", "folder", "taken"]);
}

#[test]
fn an_eager_upload_over_the_limit_is_a_protocol_error_that_closes() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("root"), &[]);
    let intact = Intact::new(&server);
    let mut peer = server.connect();
    // Declared only: the body is not sent, and the server must not wait
    // for it or allocate it.
    peer.send(&Request::PutEager(PutEager {
        name: "huge".into(),
        size: MAX_EAGER_BODY + 1,
        overwrite: false,
    }));
    assert_eq!(error_code(peer.recv()), ErrorCode::BadRequest);
    read_to_close(&mut peer.stream);
    intact.check(&server, &[], Some(MAX_EAGER_BODY + 1));
}

#[test]
fn an_eager_upload_cut_short_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("root"), &[]);
    let intact = Intact::new(&server);

    // The body ends early.
    let mut peer = server.connect();
    let bytes = eager("cut", &random_bytes(5, 8000), false);
    peer.raw(&bytes[..bytes.len() - 5000]);
    drop(peer);

    // The trailer is not a trailer.
    let mut peer = server.connect();
    let mut bytes = eager("garbled", &random_bytes(6, 100), false);
    let trailer_start = bytes.len() - 36;
    bytes[trailer_start + 3] = 7; // a 7-byte frame
    bytes.truncate(trailer_start + 11);
    peer.raw(&bytes);
    assert_eq!(error_code(peer.recv()), ErrorCode::BadRequest);
    read_to_close(&mut peer.stream);

    intact.check(&server, &[], None);
    assert!(!server.stored().exists("cut"));
    assert!(!server.stored().exists("garbled"));
}

#[test]
fn a_read_only_token_cannot_upload_eagerly_and_stays_connected() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "rw-5d1f0c2e9a7b\nro:ro-8e4b2a6c1d3f\n").unwrap();
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o600)).unwrap();
    let server = ServerProcess::start(
        &dir.path().join("root"),
        &["--token-file", tokens.to_str().unwrap()],
    );
    let mut peer = RawPeer::connect_with_token(server.addr, Some("ro-8e4b2a6c1d3f"));
    let body = random_bytes(7, 3000);
    let mut all = eager("denied", &body, false);
    all.extend(eager("denied-too", &body, true));
    peer.raw(&all);
    assert_eq!(error_code(peer.recv()), ErrorCode::Forbidden);
    assert_eq!(error_code(peer.recv()), ErrorCode::Forbidden);
    assert_eq!(error_code(stat(&mut peer, "denied")), ErrorCode::NotFound);
    assert!(!server.stored().exists("denied"));
}

#[test]
fn pipelined_eager_uploads_mixed_with_other_requests_are_answered_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("root"), &[]);
    let mut peer = server.connect();
    let (a, b, c) = (
        random_bytes(8, 4096),
        random_bytes(9, 100),
        random_bytes(10, 5000),
    );
    let config = frame_config();
    let mut all = eager("a", &a, false);
    all.extend(eager("b", &b, false));
    all.extend_from_slice(&to_frame(&config, &Request::Stat(Stat { name: "a".into() })).unwrap());
    all.extend(eager("c", &c, false));
    // Then an eager upload whose trailer frame is 33 bytes long.
    let mut broken = eager("d", &b, false);
    let trailer_start = broken.len() - 36;
    broken[trailer_start + 3] = 33;
    broken.push(0);
    all.extend(broken);
    peer.raw(&all);

    assert_eq!(peer.recv(), done(&a));
    assert_eq!(peer.recv(), done(&b));
    assert!(matches!(peer.recv(), Response::Entry(entry) if entry.size == 4096));
    assert_eq!(peer.recv(), done(&c));
    assert_eq!(error_code(peer.recv()), ErrorCode::BadRequest);
    read_to_close(&mut peer.stream);
    for (name, body) in [("a", &a), ("b", &b), ("c", &c)] {
        assert_eq!(server.stored().read(name).unwrap(), *body);
        eventually("one log line for each upload", || {
            server.requests_of("put", name).len() == 1
        });
    }
    assert!(!server.stored().exists("d"));
    assert_eq!(server.stored().uploads_in_progress(), 0);
}
