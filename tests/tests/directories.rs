//! Several files and whole directories in one command: trees round-trip
//! byte for byte over one connection, a file that fails does so alone, and
//! a hostile server cannot make the client write outside its destination.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use framekit_codec::blocking::{read_message, write_message};
use framekit_tests::{
    Running, ServerProcess, assert_success, bin, client_at, eventually, hash_file, is_root,
    random_bytes, signal, stderr, stdout, tree, write_random_file,
};
use framekit_transfer::{
    Entry, ErrorCode, ErrorReply, Hello, Request, Response, Trailer, VERSION, Welcome, frame_config,
};
use std::collections::BTreeSet;
use std::io::BufReader;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Command;

/// Every path under `dir` with the BLAKE3 hash of each file (`-` for a
/// directory).
fn snapshot(dir: &Path) -> Vec<(String, String)> {
    tree(dir)
        .into_iter()
        .map(|rel| {
            let path = dir.join(&rel);
            let what = if path.is_dir() {
                "-".to_owned()
            } else {
                hash_file(&path).to_hex().to_string()
            };
            (rel, what)
        })
        .collect()
}

/// A tree with nested directories, empty files, empty directories,
/// unicode names, a file large enough to be resumable, and 1,000 small
/// files. Returns how many files it has.
fn build_tree(src: &Path) -> usize {
    let mut files = 0;
    let mut write = |rel: &str, content: &[u8]| {
        let path = src.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
        files += 1;
    };
    write("top.txt", b"at the top");
    write("a/b/c/d/deep.txt", b"deep down");
    write("a/b/empty file", b"");
    write("a/also empty", b"");
    write("日本語/ファイル.txt", "こんにちは".as_bytes());
    write("émoji 🎉/naïve café.bin", &random_bytes(1, 3000));
    write("spaces in a name/x y z", b"spaced");
    for i in 0..1000u64 {
        let len = usize::try_from(i * 7 % 1500).unwrap();
        write(&format!("many/f{i:04}"), &random_bytes(i, len));
    }
    std::fs::create_dir_all(src.join("empty dir")).unwrap();
    std::fs::create_dir_all(src.join("a/b/empty too")).unwrap();
    write_random_file(&src.join("a/big.bin"), 9, (1 << 20) + 1);
    files + 1
}

/// The distinct client addresses of the requests the server logged for
/// operations in `ops`.
fn peers(server: &ServerProcess, ops: &[&str]) -> BTreeSet<String> {
    server
        .requests()
        .into_iter()
        .filter(|r| ops.contains(&r.op.as_str()))
        .map(|r| r.peer)
        .collect()
}

#[test]
fn a_tree_round_trips_byte_identical_over_one_connection_each_way() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let src = work.join("src");
    let files = build_tree(&src);
    let server = ServerProcess::start(&dir.path().join("root"), &[]);

    let out = server
        .loud_client(&work)
        .args(["put", "src"])
        .output()
        .unwrap();
    let lines = assert_success(&out);
    assert_eq!(lines.lines().count(), files);
    assert!(lines.contains("put src/日本語/ファイル.txt: 15 bytes, blake3 "));
    assert!(
        stderr(&out).starts_with(&format!("put: {files} files, ")),
        "{}",
        stderr(&out)
    );
    eventually("the server logged every put", || {
        server.requests().iter().filter(|r| r.op == "put").count() == files
    });
    assert_eq!(peers(&server, &["put", "mkdir"]).len(), 1);

    // Back under another name, and under its own name elsewhere.
    let out = server
        .client(&work)
        .args(["get", "src/", "--output", "back"])
        .output()
        .unwrap();
    assert_success(&out);
    assert_eq!(snapshot(&work.join("back")), snapshot(&src));
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    assert_success(
        &server
            .client(&elsewhere)
            .args(["get", "src"])
            .output()
            .unwrap(),
    );
    assert_eq!(snapshot(&elsewhere.join("src")), snapshot(&src));
    eventually("the server logged every get", || {
        server.requests().iter().filter(|r| r.op == "get").count() == 2 * files + 1
    });
    // Each get of the tree used one connection (the plain `get src` first
    // asked for a file named src, on the same connection). The put listed
    // the tree too, on its own connection.
    let put_peers = peers(&server, &["put"]);
    let gets: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| (r.op == "get" || r.op == "tree") && !put_peers.contains(&r.peer))
        .collect();
    let distinct: BTreeSet<_> = gets.iter().map(|r| r.peer.clone()).collect();
    assert_eq!(distinct.len(), 2, "{distinct:?}");
    // Nothing was left behind.
    assert!(!tree(&work).iter().any(|p| p.contains(".part")));
}

#[test]
fn the_summary_and_the_progress_go_to_stderr_unless_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let src = work.join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a"), b"12345").unwrap();
    std::fs::write(src.join("sub/b"), b"678").unwrap();
    let server = ServerProcess::start(&dir.path().join("root"), &[]);
    let loud = |args: &[&str]| {
        Command::new(bin("client"))
            .current_dir(&work)
            .arg("--server")
            .arg(server.addr.to_string())
            .args(args)
            .env_remove("FRAMEKIT_TOKEN")
            .output()
            .unwrap()
    };
    let out = loud(&["put", "src"]);
    assert_success(&out);
    let err = stderr(&out);
    assert!(
        err.starts_with("put: 2 files, 8 bytes sent in ") && err.ends_with("/s)\n"),
        "{err:?}"
    );
    let out = loud(&["get", "src/", "-o", "copy"]);
    assert_success(&out);
    let err = stderr(&out);
    assert!(
        err.starts_with("get: 2 files, 8 bytes received in "),
        "{err:?}"
    );
    assert_eq!(stdout(&out), "");
}

#[test]
fn several_files_and_names_go_over_one_connection() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    for (name, seed) in [("one", 1), ("two", 2), ("three", 3)] {
        std::fs::write(work.join(name), random_bytes(seed, 100_000)).unwrap();
    }
    let server = ServerProcess::start(&dir.path().join("root"), &[]);
    let out = server
        .loud_client(&work)
        .args(["put", "one", "two", "three", "--name", "in/here"])
        .output()
        .unwrap();
    assert_eq!(assert_success(&out).lines().count(), 3);
    for name in ["one", "two", "three"] {
        assert_eq!(
            server.stored().hash(&format!("in/here/{name}")),
            hash_file(&work.join(name))
        );
    }
    let out = server
        .client(&work)
        .args(["get", "in/here/one", "in/here/two", "in/here/", "-o", "out"])
        .output()
        .unwrap();
    assert_success(&out);
    assert_eq!(
        tree(&work.join("out")),
        ["here", "here/one", "here/three", "here/two", "one", "two"]
    );
    eventually("the server logged the gets", || {
        server.requests().iter().filter(|r| r.op == "get").count() == 5
    });
    assert_eq!(peers(&server, &["put"]).len(), 1);
    assert_eq!(peers(&server, &["get", "tree"]).len(), 1);
}

#[test]
fn links_and_special_files_are_skipped_with_a_warning_unless_links_are_followed() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let src = work.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("real"), b"real").unwrap();
    std::fs::write(dir.path().join("outside"), b"outside").unwrap();
    std::os::unix::fs::symlink(dir.path().join("outside"), src.join("link")).unwrap();
    let fifo = Command::new("mkfifo")
        .arg(src.join("fifo"))
        .status()
        .unwrap();
    assert!(fifo.success());
    let server = ServerProcess::start(&dir.path().join("root"), &[]);

    let out = Command::new(bin("client"))
        .current_dir(&work)
        .args(["--server", &server.addr.to_string(), "put", "src"])
        .env_remove("FRAMEKIT_TOKEN")
        .output()
        .unwrap();
    assert_success(&out);
    let err = stderr(&out);
    assert!(
        err.contains(
            "warning: skipping src/link: a symbolic link (use --follow-links to follow it)\n"
        ),
        "{err}"
    );
    assert!(
        err.contains("warning: skipping src/fifo: not a regular file or a directory\n"),
        "{err}"
    );
    assert!(err.contains("put: 1 files, 2 skipped, "), "{err}");
    assert_eq!(server.stored().names_under("src"), ["real"]);

    let out = server
        .client(&work)
        .args(["put", "src", "--follow-links", "--force"])
        .output()
        .unwrap();
    assert_success(&out);
    assert_eq!(server.stored().names_under("src"), ["link", "real"]);
    assert_eq!(server.stored().read("src/link").unwrap(), b"outside");
}

/// The `error:` lines of a run.
fn error_lines(out: &std::process::Output) -> Vec<String> {
    stderr(out)
        .lines()
        .filter(|l| l.starts_with("error: "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn files_that_cannot_be_sent_fail_alone_and_the_others_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let src = work.join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("good"), b"good").unwrap();
    std::fs::write(src.join("sub/also good"), b"also").unwrap();
    // A name no server accepts.
    std::fs::write(src.join("tab\there"), b"x").unwrap();
    // A link that leads nowhere, followed.
    std::os::unix::fs::symlink(dir.path().join("nowhere"), src.join("dangling")).unwrap();
    let mut failing = 2;
    if !is_root() {
        // A file nobody may read (root may read anything).
        let locked = src.join("locked");
        std::fs::write(&locked, b"secret").unwrap();
        std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o000))
            .unwrap();
        failing += 1;
    }
    let server = ServerProcess::start(&dir.path().join("root"), &[]);
    let out = server
        .loud_client(&work)
        .args(["put", "src", "--follow-links"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(9), "{}", stderr(&out));
    let errors = error_lines(&out);
    assert_eq!(errors.len(), failing + 1, "{errors:?}");
    assert!(
        errors.iter().any(|l| l.contains("tab\\there")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|l| l.contains("dangling") && l.contains("cannot read")),
        "{errors:?}"
    );
    assert_eq!(
        errors.last().unwrap(),
        &format!("error: {failing} of {} transfers failed", failing + 2)
    );
    assert_eq!(stdout(&out).lines().count(), 2);
    assert_eq!(
        server.stored().names_under("src"),
        ["good", "sub", "sub/also good"]
    );
}

#[test]
fn a_file_deleted_between_the_listing_and_its_turn_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let src = work.join("src");
    std::fs::create_dir_all(&src).unwrap();
    // Sent first, and big enough to be caught in the middle.
    write_random_file(&src.join("a big"), 5, 32 << 20);
    std::fs::write(src.join("b"), b"b").unwrap();
    std::fs::write(src.join("c gone"), b"c").unwrap();
    std::fs::write(src.join("d"), b"d").unwrap();
    let root = dir.path().join("root");
    let server = ServerProcess::start(&root, &[]);
    let client = Running::spawn(server.client(&work).args(["put", "src"]));
    eventually("the first file is being sent", || {
        server.stored().uploading()
    });
    signal(client.id(), "STOP");
    std::fs::remove_file(src.join("c gone")).unwrap();
    signal(client.id(), "CONT");
    let out = client.wait();
    assert_eq!(out.status.code(), Some(9), "{}", stderr(&out));
    let errors = error_lines(&out);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].starts_with("error: src/c gone: cannot read ")
            && errors[0].ends_with("No such file or directory (os error 2)"),
        "{errors:?}"
    );
    assert_eq!(errors[1], "error: 1 of 4 transfers failed");
    assert_eq!(server.stored().names_under("src"), ["a big", "b", "d"]);
}

/// A server that answers a tree of `dir` with `listing`, a get of each of
/// `files` with its content, and anything else with an error. Returns its
/// address and, once the client is gone, the requests it received.
fn hostile_server(
    listing: Vec<Response>,
    files: Vec<(&'static str, &'static [u8])>,
) -> (SocketAddr, std::thread::JoinHandle<Vec<Request>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let config = frame_config();
        let mut reader = BufReader::new(&stream);
        let _: Hello = read_message(&mut reader, &config).unwrap().unwrap();
        let welcome = Response::Welcome(Welcome {
            version: VERSION,
            max_file_size: 1 << 30,
            max_message_len: 65536,
            idle_timeout_ms: 30_000,
            read_only: false,
        });
        write_message(&mut &stream, &config, &welcome).unwrap();
        let mut seen = Vec::new();
        while let Ok(Some(request)) = read_message::<_, Request>(&mut reader, &config) {
            seen.push(request.clone());
            match request {
                Request::Tree(_) => {
                    for entry in &listing {
                        write_message(&mut &stream, &config, entry).unwrap();
                    }
                    let count = listing.len() as u64;
                    write_message(&mut &stream, &config, &Response::ListEnd { count }).unwrap();
                }
                Request::Get(get) => match files.iter().find(|(n, _)| *n == get.name) {
                    Some((_, body)) => {
                        let ready = Response::GetReady {
                            size: body.len() as u64,
                            offset: 0,
                            modified_ns: 1,
                        };
                        write_message(&mut &stream, &config, &ready).unwrap();
                        std::io::Write::write_all(&mut &stream, body).unwrap();
                        let trailer = Trailer {
                            hash: *blake3::hash(body).as_bytes(),
                        };
                        write_message(&mut &stream, &config, &trailer).unwrap();
                    }
                    None => {
                        let no = Response::Error(ErrorReply::new(ErrorCode::NotFound, "no"));
                        write_message(&mut &stream, &config, &no).unwrap();
                    }
                },
                _ => {
                    let no = Response::Error(ErrorReply::new(ErrorCode::Forbidden, "no"));
                    write_message(&mut &stream, &config, &no).unwrap();
                }
            }
        }
        seen
    });
    (addr, handle)
}

fn file(name: &str, size: u64) -> Response {
    Response::Entry(Entry {
        name: name.into(),
        size,
        modified_ns: 1,
    })
}

fn directory(name: &str) -> Response {
    Response::Directory { name: name.into() }
}

#[test]
fn a_hostile_server_cannot_make_a_directory_download_write_outside_it() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(work.join("out/d")).unwrap();
    std::fs::create_dir(&elsewhere).unwrap();
    // A link planted in the destination, that the listing tries to use.
    std::os::unix::fs::symlink(&elsewhere, work.join("out/d/trap")).unwrap();
    let listing = vec![
        file("../evil", 4),
        file("/etc/evil", 4),
        file("d/../../evil", 4),
        file("dx/evil", 4),
        file("other/evil", 4),
        directory("d"),
        file("d", 4),
        file("d/back\\..\\..\\evil", 4),
        file("d/esc\u{1b}[2J", 4),
        file("d//evil", 4),
        file(".framekit/staging/evil", 4),
        directory("d/trap"),
        file("d/trap/planted", 4),
        directory("d/sub"),
        file("d/sub/ok.txt", 5),
    ];
    let bad = listing.len() - 2;
    let (addr, fake) = hostile_server(
        listing,
        vec![("d/sub/ok.txt", b"hello"), ("d/trap/planted", b"evil")],
    );
    let out = client_at(addr, &work)
        .args(["get", "d/", "--output", "out"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(9), "{}", stderr(&out));
    let errors = error_lines(&out);
    assert_eq!(errors.len(), bad + 1, "{errors:?}");
    assert!(errors.iter().all(|l| !l.chars().any(char::is_control)));
    assert!(
        errors
            .iter()
            .any(|l| l.contains("\"dx/evil\", which is not below \"d/\"")),
        "{errors:?}"
    );
    // Only the one honest file arrived, where it belongs; nothing went
    // through the planted link, and nothing else was written anywhere.
    assert_eq!(
        tree(dir.path()),
        [
            "elsewhere",
            "work",
            "work/out",
            "work/out/d",
            "work/out/d/sub",
            "work/out/d/sub/ok.txt",
            "work/out/d/trap",
        ]
    );
    assert_eq!(
        std::fs::read(work.join("out/d/sub/ok.txt")).unwrap(),
        b"hello"
    );
    // And the client asked for nothing but the tree and that file.
    let asked = fake.join().unwrap();
    assert_eq!(asked.len(), 2, "{asked:?}");
    assert!(matches!(&asked[1], Request::Get(g) if g.name == "d/sub/ok.txt"));
}

#[test]
fn a_hostile_listing_refused_whole_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    // Names only, all outside the directory asked for.
    let (addr, fake) = hostile_server(vec![file("../../x", 1), directory("/tmp")], vec![]);
    let out = client_at(addr, &work).args(["get", "d/"]).output().unwrap();
    assert_eq!(out.status.code(), Some(9), "{}", stderr(&out));
    assert_eq!(error_lines(&out).len(), 3);
    // The directory asked for exists (empty), nothing else does.
    assert_eq!(tree(dir.path()), ["work", "work/d"]);
    assert_eq!(fake.join().unwrap().len(), 1);
}
