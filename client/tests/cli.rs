//! The `client` binary: help, exit codes, and output, against scripted
//! servers on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use assert_cmd::Command;
use framekit_codec::blocking::{read_message, write_message};
use framekit_transfer::{
    Entry, ErrorCode, ErrorReply, Hello, Request, Response, Trailer, VERSION, Welcome, frame_config,
};
use predicates::prelude::*;
use std::io::{BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::thread::{self, JoinHandle};

fn client() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_client"));
    cmd.env_remove("FRAMEKIT_SERVER")
        .env_remove("FRAMEKIT_TOKEN");
    cmd
}

/// An address where nothing listens.
fn closed_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    addr
}

/// A one-connection server: sends the welcome, then runs `serve` with the
/// stream and a reader over it. Returns the address and what `serve`
/// returns.
fn serve_once<T: Send + 'static>(
    serve: impl FnOnce(&TcpStream, &mut BufReader<&TcpStream>) -> T + Send + 'static,
) -> (String, JoinHandle<(Hello, T)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let handle = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let config = frame_config();
        let mut reader = BufReader::new(&stream);
        let hello: Hello = read_message(&mut reader, &config).unwrap().unwrap();
        let welcome = Response::Welcome(Welcome {
            version: VERSION,
            max_file_size: 1 << 30,
            max_message_len: 65536,
            idle_timeout_ms: 10_000,
            read_only: false,
        });
        write_message(&mut &stream, &config, &welcome).unwrap();
        let result = serve(&stream, &mut reader);
        (hello, result)
    });
    (addr, handle)
}

fn request(reader: &mut BufReader<&TcpStream>) -> Request {
    read_message(reader, &frame_config()).unwrap().unwrap()
}

fn reply(stream: &TcpStream, response: &Response) {
    write_message(&mut &*stream, &frame_config(), response).unwrap();
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn help_describes_commands_environment_and_exit_codes() {
    client().arg("--help").assert().success().stdout(
        predicate::str::contains("--server <ADDR>")
            .and(predicate::str::contains("--quiet"))
            .and(predicate::str::contains("FRAMEKIT_SERVER"))
            .and(predicate::str::contains("FRAMEKIT_TOKEN"))
            .and(predicate::str::contains("Exit codes:"))
            .and(predicate::str::contains("3  connection failed"))
            .and(predicate::str::contains("8  local file"))
            .and(predicate::str::contains("put"))
            .and(predicate::str::contains("get"))
            .and(predicate::str::contains("list"))
            .and(predicate::str::contains("stat"))
            .and(predicate::str::contains("delete")),
    );
}

#[test]
fn each_command_has_complete_help() {
    let cases: &[(&str, &[&str])] = &[
        ("put", &["<FILE>", "--name <NAME>", "--force", "base name"]),
        ("get", &["<NAME>", "--output <PATH>", "--force", "verified"]),
        ("list", &["[PREFIX]", "a tab"]),
        ("stat", &["<NAME>", "blake3:", "modified:"]),
        ("delete", &["<NAME>", "--recursive"]),
        ("mv", &["<OLD>", "<NEW>", "--force"]),
        ("completions", &["<SHELL>", "bash"]),
        ("man", &["manual page"]),
    ];
    for (command, words) in cases {
        let mut expected = predicate::str::contains("--server").boxed();
        for word in *words {
            expected = expected.and(predicate::str::contains(*word)).boxed();
        }
        client()
            .args([command, "--help"])
            .assert()
            .success()
            .stdout(expected);
    }
}

#[test]
fn usage_errors_exit_with_2() {
    client().assert().code(2);
    client().arg("frobnicate").assert().code(2);
    client().args(["get"]).assert().code(2);
}

#[test]
fn an_unreachable_server_exits_with_3() {
    let addr = closed_port();
    client()
        .args(["--server", &addr, "list"])
        .assert()
        .code(3)
        .stdout("")
        .stderr(
            predicate::str::starts_with(format!("error: cannot connect to {addr}: "))
                .and(predicate::str::ends_with("\n"))
                .and(predicate::str::contains("\n").count(1)),
        );
}

#[test]
fn the_server_defaults_to_framekit_server() {
    let addr = closed_port();
    client()
        .env("FRAMEKIT_SERVER", &addr)
        .args(["stat", "x"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains(format!(
            "cannot connect to {addr}"
        )));
}

#[test]
fn get_leaves_an_existing_destination_alone_when_it_cannot_compare_it() {
    // An existing destination is compared with the server's file (it may
    // be the same); without a server, it stays as it is.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x.txt"), b"mine").unwrap();
    client()
        .current_dir(dir.path())
        .args(["--server", &closed_port(), "get", "remote/x.txt"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("nothing is listening there"));
    assert_eq!(std::fs::read(dir.path().join("x.txt")).unwrap(), b"mine");
    assert_eq!(entries(dir.path()), ["x.txt"]);
}

#[test]
fn put_of_a_missing_file_exits_with_8() {
    let dir = tempfile::tempdir().unwrap();
    client()
        .args(["--server", &closed_port(), "put"])
        .arg(dir.path().join("missing"))
        .assert()
        .code(8)
        .stderr(predicate::str::starts_with("error: cannot read "));
}

#[test]
fn invalid_names_exit_with_7_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    std::fs::write(&file, b"x").unwrap();
    let server = closed_port();
    client()
        .args(["--server", &server, "put", "--name", "../escape"])
        .arg(&file)
        .assert()
        .code(7)
        .stderr(predicate::str::contains("invalid remote name"));
    client()
        .current_dir(dir.path())
        .args(["--server", &server, "get", "/etc/passwd"])
        .assert()
        .code(7);
    assert_eq!(entries(dir.path()), ["f"]);
}

#[test]
fn list_prints_size_tab_name_with_control_characters_escaped() {
    let (addr, server) = serve_once(|stream, reader| {
        let request = request(reader);
        for e in [
            ("a.txt", 5),
            ("evil\u{1b}]0;owned\u{7}", 6),
            ("dir/日本", 0),
        ] {
            let entry = Entry {
                name: e.0.into(),
                size: e.1,
                modified_ns: 0,
            };
            reply(stream, &Response::Entry(entry));
        }
        reply(stream, &Response::ListEnd { count: 3 });
        request
    });
    client()
        .env("FRAMEKIT_TOKEN", "t0k")
        .args(["--server", &addr, "list", "pre"])
        .assert()
        .success()
        .stdout("5\ta.txt\n6\tevil\\u{1b}]0;owned\\u{7}\n0\tdir/日本\n")
        .stderr("");
    let (hello, request) = server.join().unwrap();
    assert_eq!(hello, Hello::new(Some("t0k".into())));
    assert!(matches!(request, Request::ListAll(l) if l.prefix == "pre"));
}

#[test]
fn stat_of_a_missing_file_exits_with_4_and_escapes_the_message() {
    let (addr, server) = serve_once(|stream, reader| {
        let request = request(reader);
        let reply_msg = ErrorReply::new(ErrorCode::NotFound, "no \u{1b}[2J here");
        reply(stream, &Response::Error(reply_msg));
        request
    });
    client()
        .args(["--server", &addr, "stat", "nope"])
        .assert()
        .code(4)
        .stdout("")
        .stderr("error: the server refused the stat: not found: no \\u{1b}[2J here\n");
    server.join().unwrap();
}

#[test]
fn put_then_get_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let content: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let file = dir.path().join("local name.bin");
    std::fs::write(&file, &content).unwrap();
    let hash: [u8; 32] = blake3::hash(&content).into();

    // Put: the server receives the body and confirms it.
    let (addr, server) = serve_once(move |stream, reader| {
        // First: is the file there already?
        assert!(matches!(request(reader), Request::Describe(d) if d.name == "local name.bin"));
        reply(
            stream,
            &Response::Error(ErrorReply::new(ErrorCode::NotFound, "no such file")),
        );
        let Request::Put(put) = request(reader) else {
            panic!("not a put")
        };
        reply(stream, &Response::PutReady { offset: 0 });
        let mut body = vec![0; usize::try_from(put.size).unwrap()];
        reader.read_exact(&mut body).unwrap();
        let trailer: Trailer = read_message(reader, &frame_config()).unwrap().unwrap();
        let hash: [u8; 32] = blake3::hash(&body).into();
        assert_eq!(trailer.hash, hash);
        reply(
            stream,
            &Response::PutDone {
                size: put.size,
                hash,
            },
        );
        (put.name, body)
    });
    client()
        .args(["--server", &addr, "put"])
        .arg(&file)
        .assert()
        .success()
        .stdout(format!(
            "put local name.bin: {} bytes, blake3 {}\n",
            content.len(),
            blake3::Hash::from(hash).to_hex()
        ));
    let (_, (name, body)) = server.join().unwrap();
    assert_eq!(name, "local name.bin");
    assert!(body == content);

    // Get: saved under the base name in the working directory.
    let out = tempfile::tempdir().unwrap();
    let served = content.clone();
    let (addr, server) = serve_once(move |stream, reader| {
        let request = request(reader);
        reply(
            stream,
            &Response::GetReady {
                size: served.len() as u64,
                offset: 0,
                modified_ns: 0,
            },
        );
        (&*stream).write_all(&served).unwrap();
        let hash: [u8; 32] = blake3::hash(&served).into();
        reply_trailer(stream, hash);
        request
    });
    client()
        .current_dir(out.path())
        .args(["--server", &addr, "get", "sub/dir/copy.bin"])
        .assert()
        .success()
        .stdout("")
        .stderr(predicate::str::contains("get sub/dir/copy.bin -> copy.bin"));
    server.join().unwrap();
    assert!(std::fs::read(out.path().join("copy.bin")).unwrap() == content);
    assert_eq!(entries(out.path()), ["copy.bin"]);
}

#[test]
fn get_with_a_corrupted_body_exits_with_6_and_saves_nothing() {
    let out = tempfile::tempdir().unwrap();
    let (addr, server) = serve_once(|stream, reader| {
        request(reader);
        reply(
            stream,
            &Response::GetReady {
                size: 4,
                offset: 0,
                modified_ns: 0,
            },
        );
        (&*stream).write_all(b"data").unwrap();
        reply_trailer(stream, blake3::hash(b"date").into());
    });
    client()
        .current_dir(out.path())
        .args(["--quiet", "--server", &addr, "get", "f", "-o", "saved"])
        .assert()
        .code(6)
        .stderr(predicate::str::starts_with("error: integrity mismatch"));
    server.join().unwrap();
    assert!(entries(out.path()).is_empty());
}

#[test]
fn delete_confirms_on_stderr_unless_quiet() {
    for (quiet, expected) in [(false, "deleted a/b\n"), (true, "")] {
        let (addr, server) = serve_once(|stream, reader| {
            let request = request(reader);
            reply(stream, &Response::Deleted);
            request
        });
        let mut cmd = client();
        if quiet {
            cmd.arg("-q");
        }
        cmd.args(["--server", &addr, "delete", "a/b"])
            .assert()
            .success()
            .stdout("")
            .stderr(expected);
        let (_, request) = server.join().unwrap();
        assert!(matches!(request, Request::Delete(d) if d.name == "a/b"));
    }
}

fn reply_trailer(stream: &TcpStream, hash: [u8; 32]) {
    write_message(&mut &*stream, &frame_config(), &Trailer { hash }).unwrap();
}
