//! Token authentication against the real server: wrong, missing and
//! read-only tokens through the client and on raw sockets, what the log
//! shows (and never shows), throttling of repeated failures, and a token
//! file others could read.
//!
//! Every test with a running server ends with [`Intact::check`].
#![allow(clippy::unwrap_used, clippy::expect_used)]

use framekit_tests::hostile::{
    Intact, error_code, hello, log_peer, put_request, read_to_close, server_exit, wait_for_line,
};
use framekit_tests::{RawPeer, ServerProcess, stderr, stdout};
use framekit_transfer::{
    Delete, DeleteDir, Describe, ErrorCode, Get, MakeDir, PutStream, Rename, Request, Response,
    Stat, Trailer, Tree, frame_config,
};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const READ_WRITE: &str = "rw-7c1e0b9a4f2d";
const READ_ONLY: &str = "ro-93d5a8e61b04";
const WRONG: &str = "guess-5b8f2c7d1e";
const OTHER_WRONG: &str = "try-0a6e4d2c9b";

/// Writes the token file (mode 0600): one read-write token, one read-only.
fn token_file(dir: &Path) -> PathBuf {
    let path = dir.join("tokens");
    std::fs::write(
        &path,
        format!("# access tokens\n{READ_WRITE}\nro:{READ_ONLY}\n"),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// A server requiring a token, with a file `keep` in its root.
fn start(dir: &Path) -> (ServerProcess, Intact) {
    let tokens = token_file(dir);
    let root = dir.join("root");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("keep"), b"kept").unwrap();
    let server = ServerProcess::start(&root, &["--token-file", tokens.to_str().unwrap()]);
    let intact = Intact::with_client(&server, &[], Some(READ_WRITE));
    (server, intact)
}

/// The error line a refused client printed, after checking it is alone.
fn error_line(output: &std::process::Output) -> String {
    let err = stderr(output);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    lines[0].to_owned()
}

#[test]
fn client_with_a_wrong_token_exits_7_unauthorized() {
    let dir = tempfile::tempdir().unwrap();
    let (server, intact) = start(dir.path());
    let output = server
        .client(dir.path())
        .env("FRAMEKIT_TOKEN", WRONG)
        .args(["stat", "keep"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(7));
    assert_eq!(stdout(&output), "");
    assert_eq!(
        error_line(&output),
        "error: the server refused the handshake: unauthorized: the access token was not accepted"
    );
    intact.check(&server, &[], None);
}

#[test]
fn client_without_a_token_exits_7_unauthorized() {
    let dir = tempfile::tempdir().unwrap();
    let (server, intact) = start(dir.path());
    let output = server.client(dir.path()).args(["list"]).output().unwrap();
    assert_eq!(output.status.code(), Some(7));
    assert_eq!(stdout(&output), "");
    assert_eq!(
        error_line(&output),
        "error: the server refused the handshake: unauthorized: this server requires an access token"
    );
    intact.check(&server, &[], None);
}

#[test]
fn client_with_a_read_only_token_reads_but_cannot_put_or_delete() {
    let dir = tempfile::tempdir().unwrap();
    let (server, intact) = start(dir.path());
    let work = tempfile::tempdir().unwrap();
    let ro_file = work.path().join("ro-token");
    std::fs::write(&ro_file, format!("{READ_ONLY}\n")).unwrap();
    std::fs::write(work.path().join("new"), b"new content").unwrap();
    let client = |args: &[&str]| {
        server
            .client(work.path())
            .arg("--token-file")
            .arg(&ro_file)
            .args(args)
            .output()
            .unwrap()
    };

    for args in [
        &["put", "new"][..],
        &["put", "new", "--name", "keep", "--force"],
    ] {
        let output = client(args);
        assert_eq!(output.status.code(), Some(7), "{args:?}");
        assert_eq!(
            error_line(&output),
            "error: the server refused the put: forbidden: this token only allows get, list and stat"
        );
    }
    let output = client(&["delete", "keep"]);
    assert_eq!(output.status.code(), Some(7));
    assert_eq!(
        error_line(&output),
        "error: the server refused the delete: forbidden: this token only allows get, list and stat"
    );

    // Reading is allowed.
    let output = client(&["stat", "keep"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).starts_with("name: keep\nkind: file\nsize: 4\n"),
        "{}",
        stdout(&output)
    );
    let output = client(&["get", "keep"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(std::fs::read(work.path().join("keep")).unwrap(), b"kept");

    intact.check(&server, &[], None);
    assert_eq!(std::fs::read(server.root.join("keep")).unwrap(), b"kept");
}

/// A peer that sends a refused hello and, without waiting, a delete and a
/// whole upload: it gets Unauthorized, then the end of the stream, and
/// neither request is served.
fn refused_hello_serves_nothing(token: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let (server, intact) = start(dir.path());
    let config = frame_config();
    let mut wire = Vec::new();
    framekit_codec::blocking::write_message(
        &mut wire,
        &config,
        &framekit_transfer::Hello::new(token.map(str::to_owned)),
    )
    .unwrap();
    let delete = Request::Delete(Delete {
        name: "keep".into(),
    });
    framekit_codec::blocking::write_message(&mut wire, &config, &delete).unwrap();
    framekit_codec::blocking::write_message(&mut wire, &config, &put_request("new", 3, false))
        .unwrap();
    wire.extend(b"new");
    let trailer = Trailer {
        hash: *blake3::hash(b"new").as_bytes(),
    };
    framekit_codec::blocking::write_message(&mut wire, &config, &trailer).unwrap();

    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    stream.write_all(&wire).unwrap();
    let reply: Response = framekit_codec::blocking::read_message(&mut stream, &config)
        .unwrap()
        .unwrap();
    assert_eq!(error_code(reply), ErrorCode::Unauthorized);
    assert_eq!(read_to_close(&mut stream), 0, "nothing follows the refusal");

    intact.check(&server, &[], None);
    assert_eq!(std::fs::read(server.root.join("keep")).unwrap(), b"kept");
    assert!(!server.root.join("new").exists());
    assert!(!server.root.join("newdir").exists());
}

#[test]
fn wrong_token_closes_the_connection_before_any_request_is_served() {
    refused_hello_serves_nothing(Some(WRONG));
}

#[test]
fn missing_token_closes_the_connection_before_any_request_is_served() {
    refused_hello_serves_nothing(None);
}

#[test]
fn read_only_token_put_and_delete_are_forbidden_and_reads_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let (server, intact) = start(dir.path());
    let mut peer = RawPeer::connect_with_token(server.addr, Some(READ_ONLY));
    assert!(peer.welcome.read_only);

    // Refused at once: no go-ahead, and no body is expected after it.
    for overwrite in [false, true] {
        peer.send(&put_request("keep", 4, overwrite));
        assert_eq!(error_code(peer.recv()), ErrorCode::Forbidden);
    }
    peer.send(&put_request("new", 4, false));
    assert_eq!(error_code(peer.recv()), ErrorCode::Forbidden);
    peer.send(&Request::Delete(Delete {
        name: "keep".into(),
    }));
    assert_eq!(error_code(peer.recv()), ErrorCode::Forbidden);
    peer.send(&Request::MakeDir(MakeDir {
        name: "newdir".into(),
    }));
    assert_eq!(error_code(peer.recv()), ErrorCode::Forbidden);
    // So are the newer writing requests: rename, directory deletion, and
    // an upload of unknown length (refused before its body).
    for request in [
        Request::Rename(Rename {
            from: "keep".into(),
            to: "moved".into(),
            overwrite: true,
        }),
        Request::DeleteDir(DeleteDir {
            name: "somedir".into(),
            recursive: true,
        }),
        Request::PutStream(PutStream {
            name: "streamed".into(),
            overwrite: true,
        }),
    ] {
        peer.send(&request);
        assert_eq!(error_code(peer.recv()), ErrorCode::Forbidden, "{request:?}");
    }
    // And a description is a read.
    peer.send(&Request::Describe(Describe {
        name: "keep".into(),
    }));
    assert!(
        matches!(peer.recv(), Response::Described(d) if d.hash == *blake3::hash(b"kept").as_bytes())
    );

    // The same connection still reads, trees included.
    peer.send(&Request::Tree(Tree { dir: String::new() }));
    let mut names = Vec::new();
    loop {
        match peer.recv() {
            Response::Entry(e) => names.push(e.name),
            Response::Directory { name } => names.push(name),
            Response::ListEnd { count } => {
                assert_eq!(count, names.len() as u64);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(names.iter().any(|n| n == "keep"), "{names:?}");
    peer.send(&Request::Stat(Stat {
        name: "keep".into(),
    }));
    assert!(matches!(peer.recv(), Response::Entry(e) if e.size == 4));
    peer.send(&Request::Get(Get {
        name: "keep".into(),
        offset: 0,
        if_version: None,
    }));
    assert!(matches!(peer.recv(), Response::GetReady { size: 4, .. }));

    // A read-write token is not read-only.
    let writer = RawPeer::connect_with_token(server.addr, Some(READ_WRITE));
    assert!(!writer.welcome.read_only);
    drop((peer, writer));

    intact.check(&server, &[], None);
    assert_eq!(std::fs::read(server.root.join("keep")).unwrap(), b"kept");
    assert!(!server.root.join("new").exists());
}

#[test]
fn authentication_failures_are_logged_with_the_peer_address_never_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let (server, intact) = start(dir.path());
    for (token, shown) in [
        (Some(WRONG), "token=\"wrong\""),
        (None, "token=\"missing\""),
    ] {
        let (stream, reply) = hello(server.addr, token);
        assert_eq!(error_code(reply), ErrorCode::Unauthorized);
        let line = wait_for_line(&server, &[&log_peer(&stream), "authentication failed"]);
        assert!(line.contains(shown), "{line}");
    }
    // And a read-only token's refused put, for good measure.
    let mut peer = RawPeer::connect_with_token(server.addr, Some(READ_ONLY));
    peer.send(&put_request("x", 1, false));
    assert_eq!(error_code(peer.recv()), ErrorCode::Forbidden);
    wait_for_line(&server, &[&log_peer(&peer.stream), "forbidden"]);

    intact.check(&server, &[], None);
    let log = server.log();
    for secret in [WRONG, READ_WRITE, READ_ONLY] {
        assert!(!log.contains(secret), "the log shows a token:\n{log}");
    }
}

/// The `delay_ms` of every authentication failure logged so far.
fn failure_delays(server: &ServerProcess) -> Vec<u64> {
    server
        .log()
        .lines()
        .filter(|line| line.contains("authentication failed"))
        .map(|line| {
            line.split_once("delay_ms=")
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no delay_ms in {line:?}"))
        })
        .collect()
}

#[test]
fn repeated_failures_from_one_address_are_answered_ever_later() {
    let dir = tempfile::tempdir().unwrap();
    let (server, intact) = start(dir.path());
    for (i, token) in [Some(WRONG), None, Some(WRONG)].into_iter().enumerate() {
        let (_stream, reply) = hello(server.addr, token);
        assert_eq!(error_code(reply), ErrorCode::Unauthorized);
        framekit_tests::eventually("the failure is logged", || {
            failure_delays(&server).len() == i + 1
        });
    }
    let delays = failure_delays(&server);
    assert!(delays[0] > 0, "{delays:?}");
    assert!(
        delays.windows(2).all(|w| w[1] == 2 * w[0]),
        "each failure should wait twice as long as the one before: {delays:?}"
    );

    // A success forgets the failures of the address: the next one starts
    // over (with a token that starts differently: failures are also
    // counted by the start of the token, and a success does not forget
    // those).
    drop(RawPeer::connect_with_token(server.addr, Some(READ_WRITE)));
    let (_stream, reply) = hello(server.addr, Some(OTHER_WRONG));
    assert_eq!(error_code(reply), ErrorCode::Unauthorized);
    framekit_tests::eventually("the failure is logged", || {
        failure_delays(&server).len() == 4
    });
    assert_eq!(failure_delays(&server)[3], delays[0]);

    intact.check(&server, &[], None);
}

#[test]
fn a_read_only_login_does_not_forgive_the_failures_of_its_address() {
    let dir = tempfile::tempdir().unwrap();
    let (server, intact) = start(dir.path());
    // Guesses of a full-access token, each after a read-only login.
    for (i, guess) in ["a-guess", "b-guess", "c-guess", "d-guess"]
        .into_iter()
        .enumerate()
    {
        let (_stream, reply) = hello(server.addr, Some(guess));
        assert_eq!(error_code(reply), ErrorCode::Unauthorized);
        framekit_tests::eventually("the failure is logged", || {
            failure_delays(&server).len() == i + 1
        });
        drop(RawPeer::connect_with_token(server.addr, Some(READ_ONLY)));
    }
    assert_eq!(failure_delays(&server), [200, 400, 800, 1600]);
    intact.check(&server, &[], None);
}

#[test]
fn failures_are_counted_by_the_start_of_the_token_from_any_address() {
    let dir = tempfile::tempdir().unwrap();
    let (server, intact) = start(dir.path());
    // The same first bytes from a new address each time.
    for (i, last) in [2u8, 3, 4].into_iter().enumerate() {
        let from = std::net::IpAddr::from([127, 0, 0, last]);
        let stream = framekit_tests::connect_from(Some(from), server.addr, None).unwrap();
        let mut peer = std::io::BufReader::new(stream);
        framekit_codec::blocking::write_message(
            peer.get_mut(),
            &frame_config(),
            &framekit_transfer::Hello::new(Some(format!("rw-0{i}"))),
        )
        .unwrap();
        let reply: Response = framekit_codec::blocking::read_message(&mut peer, &frame_config())
            .unwrap()
            .unwrap();
        assert_eq!(error_code(reply), ErrorCode::Unauthorized);
        framekit_tests::eventually("the failure is logged", || {
            failure_delays(&server).len() == i + 1
        });
    }
    assert_eq!(failure_delays(&server), [200, 400, 800]);
    intact.check(&server, &[], None);
}

#[test]
fn token_file_others_can_access_stops_the_server_with_exit_5() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = token_file(dir.path());
    let root = dir.path().join("root");
    for mode in [0o644, 0o604, 0o602] {
        std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(mode)).unwrap();
        let output = server_exit(&[
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--root".as_ref(),
            root.as_os_str(),
            "--token-file".as_ref(),
            tokens.as_os_str(),
        ]);
        assert_eq!(output.status.code(), Some(5), "mode {mode:o}");
        assert_eq!(stdout(&output), "", "it never listened");
        let err = stderr(&output);
        assert!(
            err.contains(&format!(
                "error: the token file {} is accessible to other users (mode {mode:03o})",
                tokens.display()
            )) && err.contains("chmod 600"),
            "{err}"
        );
        assert!(
            !err.contains(READ_WRITE) && !err.contains(READ_ONLY),
            "{err}"
        );
        assert!(!root.exists(), "nothing was served");
    }
}
