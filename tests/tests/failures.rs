//! The real `client` when things go wrong: a corrupted download, a busy
//! server, no server, a missing file, either side killed mid-transfer, and
//! a full disk. Every failure is one `error:` line and a documented exit
//! code, and nothing partial is left under a real name.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use framekit_codec::blocking::{read_message, write_message};
use framekit_tests::{
    Backend, RawPeer, Running, ServerProcess, assert_error, assert_success, client_at, eventually,
    hash_file, random_bytes, signal, small_disk, staged_bytes, staging, stderr, stored_for, tree,
    write_random_file,
};
use framekit_transfer::{
    ErrorCode, ErrorReply, Hello, Request, Response, Trailer, VERSION, Welcome, frame_config,
};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::thread::JoinHandle;

/// A fake server for one connection: it completes the handshake, reads
/// one request and hands it to `serve` with the stream, then waits for the
/// client to hang up. Returns its address and what `serve` returned.
fn fake_server<T: Send + 'static>(
    serve: impl FnOnce(Request, &mut TcpStream) -> T + Send + 'static,
) -> (SocketAddr, JoinHandle<T>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let config = frame_config();
        let hello: Hello = read_message(&mut stream, &config).unwrap().unwrap();
        assert_eq!(hello, Hello::new(None));
        let welcome = Response::Welcome(Welcome {
            version: VERSION,
            max_file_size: 1 << 40,
            max_message_len: 65536,
            idle_timeout_ms: 30_000,
            read_only: false,
        });
        write_message(&mut stream, &config, &welcome).unwrap();
        let request: Request = read_message(&mut stream, &config).unwrap().unwrap();
        let result = serve(request, &mut stream);
        // Until the client has gone: closing first could reset the
        // connection before it read everything.
        let _ = std::io::copy(&mut stream, &mut std::io::sink());
        result
    });
    (addr, handle)
}

/// Serves one get of `body` with `trailer` as the announced hash.
fn serve_get(body: Vec<u8>, trailer: blake3::Hash) -> (SocketAddr, JoinHandle<Request>) {
    fake_server(move |request, stream| {
        let config = frame_config();
        let ready = Response::GetReady {
            size: body.len() as u64,
            offset: 0,
            modified_ns: 0,
        };
        write_message(&mut *stream, &config, &ready).unwrap();
        stream.write_all(&body).unwrap();
        let trailer = Trailer {
            hash: *trailer.as_bytes(),
        };
        write_message(&mut *stream, &config, &trailer).unwrap();
        request
    })
}

/// Runs `client get remote/file.bin --output dest/saved.bin` against a
/// server sending `body` and `trailer`, and checks that it fails with an
/// integrity error and leaves nothing: no file, no temporary file.
fn get_fails_integrity(body: Vec<u8>, trailer: blake3::Hash) {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(work.join("dest")).unwrap();
    let actual = blake3::hash(&body);
    let before = tree(dir.path());

    let (addr, server) = serve_get(body, trailer);
    let out = client_at(addr, &work)
        .args(["get", "remote/file.bin", "--output", "dest/saved.bin"])
        .output()
        .unwrap();
    assert_error(
        &out,
        6,
        &format!(
            "error: integrity mismatch: the content hashes to {}, the server announced {}",
            actual.to_hex(),
            trailer.to_hex()
        ),
    );
    let request = server.join().unwrap();
    assert!(
        matches!(&request, Request::Get(get) if get.name == "remote/file.bin" && get.offset == 0),
        "{request:?}"
    );
    assert_eq!(tree(dir.path()), before);
}

#[test]
fn get_of_a_body_with_one_altered_byte_exits_6_and_saves_nothing() {
    let body = random_bytes(100, (3 << 20) + 12345);
    let original = blake3::hash(&body);
    let mut altered = body;
    altered[2_000_000] ^= 0x01;
    get_fails_integrity(altered, original);
}

#[test]
fn get_with_a_wrong_trailer_exits_6_and_saves_nothing() {
    let body = random_bytes(101, 100_000);
    get_fails_integrity(body, blake3::hash(b"something else"));
}

#[test]
fn put_confirmed_with_another_hash_exits_6() {
    let dir = tempfile::tempdir().unwrap();
    let sent = write_random_file(&dir.path().join("f"), 102, 500_000);
    let (addr, server) = fake_server(|request, stream| {
        let config = frame_config();
        // The client first asks whether the file is there already.
        assert!(matches!(request, Request::Describe(_)), "{request:?}");
        let none = ErrorReply::new(ErrorCode::NotFound, "no such file");
        write_message(&mut *stream, &config, &Response::Error(none)).unwrap();
        let request: Request = read_message(&mut *stream, &config).unwrap().unwrap();
        let Request::Put(put) = request else {
            panic!("expected a put, got {request:?}")
        };
        write_message(&mut *stream, &config, &Response::PutReady { offset: 0 }).unwrap();
        let mut body = Vec::new();
        (&mut *stream)
            .take(put.size)
            .read_to_end(&mut body)
            .unwrap();
        let trailer: Trailer = read_message(&mut *stream, &config).unwrap().unwrap();
        let done = Response::PutDone {
            size: put.size,
            hash: *blake3::hash(b"not what was sent").as_bytes(),
        };
        write_message(&mut *stream, &config, &done).unwrap();
        (put.name, blake3::hash(&body), trailer.hash)
    });
    let out = client_at(addr, dir.path())
        .args(["put", "f", "--name", "up"])
        .output()
        .unwrap();
    assert_error(
        &out,
        6,
        &format!(
            "error: integrity mismatch: the content hashes to {}",
            sent.to_hex()
        ),
    );
    let (name, received, trailer) = server.join().unwrap();
    assert_eq!(name, "up");
    assert_eq!(received, sent);
    assert_eq!(trailer, *sent.as_bytes());
}

#[test]
fn a_client_over_the_connection_limit_exits_7_with_busy() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("root"), &["--max-connections", "2"]);
    // Both slots held by peers that completed the handshake.
    let first = server.connect();
    let _second = server.connect();

    let out = server
        .client(dir.path())
        .args(["list", "--no-retry"])
        .output()
        .unwrap();
    assert_error(
        &out,
        7,
        "error: the server refused the handshake: busy: the server is at its connection limit; try again later",
    );

    drop(first);
    eventually("the freed slot serves the client", || {
        server
            .client(dir.path())
            .arg("list")
            .output()
            .unwrap()
            .status
            .success()
    });
}

#[test]
fn a_client_turned_away_as_busy_tries_again_and_gets_in_when_a_slot_frees() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("root"), &["--max-connections", "1"]);
    let held = server.connect();
    let client = Running::spawn(server.client(dir.path()).arg("list"));
    // Once it has been turned away, the slot frees.
    eventually("the client is refused", || {
        server.log().contains("refused after its hello")
    });
    drop(held);
    let out = client.wait();
    assert_success(&out);
}

#[test]
fn no_server_listening_exits_3_and_get_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(&dir.path().join("root"), &[]);
    let addr = server.addr;
    server.kill();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    std::fs::write(work.join("f"), b"data").unwrap();
    let before = tree(dir.path());
    let expected = format!("error: cannot connect to {addr}: ");

    let cases: [&[&str]; 5] = [
        &["list"],
        &["stat", "f"],
        &["delete", "f"],
        &["put", "f"],
        &["get", "dir/file.bin"],
    ];
    for args in cases {
        let out = client_at(addr, &work).args(args).output().unwrap();
        let line = assert_error(&out, 3, &expected);
        assert!(line.contains("refused"), "{args:?}: {line}");
        assert_eq!(tree(dir.path()), before, "{args:?}");
    }
}

#[test]
fn get_of_a_missing_name_exits_4_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("root"), &[]);
    let work = dir.path().join("work");
    std::fs::create_dir_all(work.join("out")).unwrap();
    let before = tree(dir.path());
    for args in [
        &["get", "missing.bin"][..],
        &["get", "sub/missing.bin", "--output", "out"],
        &["get", "missing.bin", "--output", "out/named", "--force"],
    ] {
        let out = server.client(&work).args(args).output().unwrap();
        assert_error(
            &out,
            4,
            "error: the server refused the get: not found: no such file",
        );
        assert_eq!(tree(dir.path()), before, "{args:?}");
    }
}

/// Whether the client has a non-empty temporary file in `dir`.
fn has_partial_download(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().any(|entry| {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        name.ends_with(".part") && entry.metadata().unwrap().len() > 0
    })
}

/// Accepts the ways a client reports a connection that died under it.
fn assert_connection_lost(out: &Output) {
    let line = assert_error(out, 3, "error: ");
    assert!(
        line.contains("connection to the server lost")
            || line.contains("the server closed the connection"),
        "{line}"
    );
}

/// A server whose root holds `big.bin` (random, `size` bytes), and an empty
/// working directory for the client.
fn server_with_big_file(size: u64) -> (tempfile::TempDir, PathBuf, ServerProcess, blake3::Hash) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let hash = stored_for(&root).write_random("big.bin", 110, size);
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let server = ServerProcess::start(&root, &[]);
    (dir, work, server, hash)
}

#[test]
fn client_killed_mid_download_leaves_nothing_at_the_destination() {
    let (_dir, work, server, hash) = server_with_big_file(200 << 20);
    let client = Running::spawn(server.client(&work).args(["get", "big.bin"]));
    eventually("the download has started", || has_partial_download(&work));
    let out = client.kill();
    // Killed, not finished first.
    assert_eq!(out.status.signal(), Some(9), "{:?}", out.status);
    assert!(!work.join("big.bin").exists());
    // Only the killed client's partial file and its description.
    assert_eq!(tree(&work), ["big.bin.part", "big.bin.part.meta"]);

    // The server noticed and serves the next download whole.
    server.wait_for_log("connection dropped");
    assert_success(
        &server
            .client(&work)
            .args(["get", "big.bin"])
            .output()
            .unwrap(),
    );
    assert_eq!(hash_file(&work.join("big.bin")), hash);
    assert_eq!(tree(&work), ["big.bin"]);
}

#[test]
fn server_killed_mid_download_exits_3_and_leaves_only_a_partial_file() {
    let (_dir, work, mut server, hash) = server_with_big_file(64 << 20);
    let client = Running::spawn(server.client(&work).args(["get", "big.bin"]));
    eventually("the download has started", || has_partial_download(&work));
    server.kill();
    let out = client.wait();
    assert_connection_lost(&out);
    // No file under the name: what arrived waits for a resume.
    assert_eq!(tree(&work), ["big.bin.part", "big.bin.part.meta"]);

    let server = ServerProcess::start(&server.root, &[]);
    assert_success(
        &server
            .client(&work)
            .args(["get", "big.bin"])
            .output()
            .unwrap(),
    );
    assert_eq!(hash_file(&work.join("big.bin")), hash);
    assert_eq!(tree(&work), ["big.bin"]);
}

#[test]
fn server_killed_mid_upload_exits_3_and_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    write_random_file(&work.join("big.bin"), 111, 64 << 20);
    let mut server = ServerProcess::start(&root, &[]);

    let client = Running::spawn(server.client(&work).args(["put", "big.bin"]));
    eventually("the upload is being staged", || {
        server.stored().staged_bytes() > 0
    });
    server.kill();
    let out = client.wait();
    assert_connection_lost(&out);
    assert!(!server.stored().exists("big.bin"));

    // Restarted: nothing was published. What the killed server received
    // is gone from a local disk (it is kept only once the server has seen
    // the upload interrupted); a bucket keeps the parts stored, for the
    // client to resume through any server.
    let server = ServerProcess::start(&root, &[]);
    assert_eq!(server.stored().uploads_in_progress(), 0);
    match Backend::current() {
        Backend::Local => assert_eq!(tree(&root), framekit_tests::RESERVED_TREE),
        Backend::Garage | Backend::Moto => {
            assert_eq!(server.stored().names(), Vec::<String>::new());
            assert_eq!(server.stored().kept(), 1);
        }
    }
    assert_eq!(
        assert_success(&server.client(&work).arg("list").output().unwrap()),
        ""
    );
}

/// Writes to `path` until the disk is full.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0xA5u8; 64 << 10];
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::StorageFull, "{e}");
                break;
            }
        }
    }
}

const NO_SPACE: &str =
    "error: the server refused the put: no space: no space left on the server's disk";

#[test]
fn put_larger_than_the_free_space_exits_7_and_succeeds_once_space_is_freed() {
    let (dir, mnt) = small_disk("size=4m");
    let root = mnt.path.join("root");
    let server = ServerProcess::start(&root, &[]);
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let hash = write_random_file(&work.join("a.bin"), 120, 2 << 20);
    std::fs::write(mnt.path.join("filler"), vec![1u8; 3 << 20]).unwrap();

    let out = server
        .client(&work)
        .args(["put", "a.bin"])
        .output()
        .unwrap();
    assert_error(&out, 7, NO_SPACE);
    assert_eq!(tree(&root), framekit_tests::RESERVED_TREE);

    std::fs::remove_file(mnt.path.join("filler")).unwrap();
    let out = server
        .client(&work)
        .args(["put", "a.bin"])
        .output()
        .unwrap();
    assert_success(&out);
    assert_eq!(hash_file(&root.join("a.bin")), hash);
    assert!(staging(&root).is_empty());
}

#[test]
fn disk_filling_up_during_a_put_exits_7_publishes_nothing_and_the_next_put_succeeds() {
    let (dir, mnt) = small_disk("size=64m");
    let root = mnt.path.join("root");
    let server = ServerProcess::start(&root, &[]);
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    // Fits when announced; far more than the socket buffers can hold, so
    // most of it is still to be sent when the client is paused.
    write_random_file(&work.join("big.bin"), 121, 48 << 20);

    let client = Running::spawn(server.client(&work).args(["put", "big.bin"]));
    eventually("the upload is being staged", || staged_bytes(&root) > 0);
    signal(client.id(), "STOP");
    fill(&mnt.path.join("filler"));
    signal(client.id(), "CONT");
    let out = client.wait();
    assert_error(&out, 7, NO_SPACE);
    assert!(!root.join("big.bin").exists());
    assert!(staging(&root).is_empty());

    std::fs::remove_file(mnt.path.join("filler")).unwrap();
    let small = write_random_file(&work.join("small.bin"), 122, 1 << 20);
    let out = server
        .client(&work)
        .args(["put", "small.bin", "--name", "big.bin"])
        .output()
        .unwrap();
    assert_success(&out);
    assert_eq!(stderr(&out), "");
    assert_eq!(hash_file(&root.join("big.bin")), small);
    // 1 MiB: the hash is recorded.
    assert_eq!(
        tree(&root),
        [
            ".framekit",
            ".framekit/digests",
            &framekit_tests::digest_record("big.bin"),
            ".framekit/partial",
            ".framekit/staging",
            "big.bin"
        ]
    );
}

/// Fills the file system of `dir` with empty files in `dir` until only
/// `left` inodes are free.
fn use_inodes(dir: &Path, left: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let free = || rustix::fs::statvfs(dir).unwrap().f_ffree;
    let mut i = 0;
    while free() > left {
        std::fs::File::create(dir.join(i.to_string())).unwrap();
        i += 1;
    }
    assert_eq!(free(), left);
}

#[test]
fn puts_and_make_dirs_that_run_out_of_room_leave_no_directories_behind() {
    let (dir, mnt) = small_disk("size=4m,nr_inodes=64");
    let root = mnt.path.join("root");
    let server = ServerProcess::start(&root, &[]);
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    std::fs::write(work.join("a.bin"), random_bytes(130, 1000)).unwrap();

    // Room for the staged upload and two of the three directories it needs.
    use_inodes(&mnt.path.join("filler"), 3);
    let out = server
        .client(&work)
        .args(["put", "a.bin", "--name", "x/y/z/a.bin"])
        .output()
        .unwrap();
    assert_error(&out, 7, NO_SPACE);
    assert_eq!(tree(&root), framekit_tests::RESERVED_TREE);

    // Room for two of the three directories asked for.
    use_inodes(&mnt.path.join("filler"), 2);
    let mut peer = RawPeer::connect(server.addr);
    peer.send(&Request::MakeDir(framekit_transfer::MakeDir {
        name: "m/n/o".into(),
    }));
    match peer.recv() {
        Response::Error(e) => assert_eq!(e.code, framekit_transfer::ErrorCode::NoSpace),
        other => panic!("expected NoSpace, got {other:?}"),
    }
    assert_eq!(tree(&root), framekit_tests::RESERVED_TREE);
}
