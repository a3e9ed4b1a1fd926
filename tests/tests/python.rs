//! The Python client (`examples/python/framekit_client.py`), written from
//! PROTOCOL.md alone, against the real server; and cross-checks with the
//! Rust client: what one puts, the other gets byte for byte.
//!
//! The interpreter is `$FRAMEKIT_PYTHON` (set by `scripts/test`, which
//! installs the `blake3` package if needed), else `python3`. Without
//! Python or without blake3 these tests fail, saying how to fix it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use framekit_tests::{
    ServerProcess, hash_file, random_bytes, staging, stderr, stdout, tree, write_random_file,
};
use proto::blocking::{read_message, write_message};
use proto::transfer::{
    ErrorCode, ErrorReply, Hello, Request, Response, Trailer, VERSION, Welcome, frame_config,
};
use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::thread::JoinHandle;

/// Whether `python` can run and import blake3.
fn has_blake3(python: &OsStr) -> bool {
    Command::new(python)
        .args(["-c", "import blake3"])
        .output()
        .is_ok_and(|out| out.status.success())
}

/// The Python interpreter for the client: `$FRAMEKIT_PYTHON` if set, else
/// `python3` if it has the blake3 package, else a virtual environment under
/// the target directory, created (and blake3 installed into it) the first
/// time it is needed.
fn python() -> &'static OsString {
    static PYTHON: OnceLock<OsString> = OnceLock::new();
    PYTHON.get_or_init(|| {
        if let Some(python) = std::env::var_os("FRAMEKIT_PYTHON") {
            assert!(
                has_blake3(&python),
                "FRAMEKIT_PYTHON={} cannot import blake3, which the Python client needs",
                python.to_string_lossy()
            );
            return python;
        }
        if has_blake3(OsStr::new("python3")) {
            return "python3".into();
        }
        // target/<profile>/deps/<test> -> target/python-venv
        let exe = std::env::current_exe().expect("test executable path");
        let target = exe.ancestors().nth(3).expect("a target directory");
        let venv = target.join("python-venv");
        let python = venv.join("bin/python").into_os_string();
        if !has_blake3(&python) {
            let requirements =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/python/requirements.txt");
            let created = Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv)
                .output()
                .expect("run python3 -m venv: the Python client's tests need python3");
            assert!(
                created.status.success(),
                "cannot create a virtual environment in {}: {}",
                venv.display(),
                String::from_utf8_lossy(&created.stderr)
            );
            let installed = Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "-r",
                ])
                .arg(&requirements)
                .output()
                .expect("run pip");
            assert!(
                installed.status.success() && has_blake3(&python),
                "cannot install blake3 into {} for the Python client's tests: {}",
                venv.display(),
                String::from_utf8_lossy(&installed.stderr)
            );
        }
        python
    })
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/python/framekit_client.py")
}

/// The Python client aimed at `addr`, quiet, run in `cwd`.
fn py_at(addr: SocketAddr, cwd: &Path) -> Command {
    let mut cmd = Command::new(python());
    cmd.current_dir(cwd)
        .arg(script())
        .arg("--server")
        .arg(addr.to_string())
        .arg("--quiet")
        .env_remove("FRAMEKIT_SERVER")
        .env_remove("FRAMEKIT_TOKEN")
        .stdin(Stdio::null());
    cmd
}

fn py(server: &ServerProcess, cwd: &Path) -> Command {
    py_at(server.addr, cwd)
}

fn run(cmd: &mut Command, args: &[&str]) -> Output {
    cmd.args(args).output().expect("run the client")
}

/// Asserts a command's exit code, showing its output otherwise.
fn assert_exit(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        stdout(output),
        stderr(output)
    );
}

/// Asserts a failure: the exit code and one `error: ` line on stderr.
fn assert_error(output: &Output, code: i32, needle: &str) {
    assert_exit(output, code);
    let err = stderr(output);
    assert!(err.starts_with("error: "), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains(needle), "{needle:?} not in {err}");
}

struct Setup {
    _dir: tempfile::TempDir,
    server: ServerProcess,
    /// A scratch directory for local files.
    work: PathBuf,
}

fn setup(extra: &[&str]) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let server = ServerProcess::start(&dir.path().join("root"), extra);
    Setup {
        _dir: dir,
        server,
        work,
    }
}

#[test]
fn python_client_does_every_operation() {
    let s = setup(&[]);
    let cases: &[(&str, &[u8])] = &[
        ("empty", b""),
        ("one byte", b"x"),
        ("dir/sub/日本語 ファイル.txt", b"unicode and a subdirectory"),
        ("file with spaces.txt", b"spaces"),
    ];
    for (i, (name, content)) in cases.iter().enumerate() {
        let local = s.work.join(format!("local{i}"));
        std::fs::write(&local, content).unwrap();
        let out = run(
            &mut py(&s.server, &s.work),
            &["put", local.to_str().unwrap(), "--name", name],
        );
        assert_exit(&out, 0);
        assert_eq!(
            stdout(&out),
            format!(
                "put {name}: {} bytes, blake3 {}\n",
                content.len(),
                blake3::hash(content).to_hex()
            )
        );
        assert_eq!(std::fs::read(s.server.root.join(name)).unwrap(), *content);
    }

    // list: one `SIZE<TAB>NAME` line per file, in name order.
    let out = run(&mut py(&s.server, &s.work), &["list"]);
    assert_exit(&out, 0);
    assert_eq!(
        stdout(&out),
        "26\tdir/sub/日本語 ファイル.txt\n0\tempty\n6\tfile with spaces.txt\n1\tone byte\n"
    );
    let out = run(&mut py(&s.server, &s.work), &["list", "dir/"]);
    assert_eq!(stdout(&out), "26\tdir/sub/日本語 ファイル.txt\n");
    let out = run(&mut py(&s.server, &s.work), &["list", "nothing-here"]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "");

    // stat
    let out = run(&mut py(&s.server, &s.work), &["stat", "one byte"]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "1\tone byte\n");

    // get: to the current directory under the base name, into a
    // directory, and to a chosen path.
    let out = run(
        &mut py(&s.server, &s.work),
        &["get", "dir/sub/日本語 ファイル.txt"],
    );
    assert_exit(&out, 0);
    assert_eq!(
        std::fs::read(s.work.join("日本語 ファイル.txt")).unwrap(),
        b"unicode and a subdirectory"
    );
    let into = s.work.join("into");
    std::fs::create_dir(&into).unwrap();
    let out = run(
        &mut py(&s.server, &s.work),
        &["get", "empty", "--output", into.to_str().unwrap()],
    );
    assert_exit(&out, 0);
    assert_eq!(std::fs::read(into.join("empty")).unwrap(), b"");
    let out = run(
        &mut py(&s.server, &s.work),
        &["get", "one byte", "-o", "renamed.bin"],
    );
    assert_exit(&out, 0);
    assert_eq!(std::fs::read(s.work.join("renamed.bin")).unwrap(), b"x");
    // No temporary file is left behind.
    assert!(
        !tree(&s.work).iter().any(|p| p.ends_with(".part")),
        "{:?}",
        tree(&s.work)
    );

    // delete
    let out = run(&mut py(&s.server, &s.work), &["delete", "empty"]);
    assert_exit(&out, 0);
    assert!(!s.server.root.join("empty").exists());
    let out = run(&mut py(&s.server, &s.work), &["stat", "empty"]);
    assert_error(&out, 4, "not found");
    assert!(staging(&s.server.root).is_empty());
}

#[test]
fn python_client_round_trips_a_50_mib_file() {
    let s = setup(&[]);
    let local = s.work.join("big.bin");
    let hash = write_random_file(&local, 50, 50 << 20);
    let out = run(
        &mut py(&s.server, &s.work),
        &["put", "big.bin", "--name", "nested/big.bin"],
    );
    assert_exit(&out, 0);
    assert_eq!(
        stdout(&out),
        format!(
            "put nested/big.bin: 52428800 bytes, blake3 {}\n",
            hash.to_hex()
        )
    );
    assert_eq!(hash_file(&s.server.root.join("nested/big.bin")), hash);
    assert!(staging(&s.server.root).is_empty());

    let out = run(
        &mut py(&s.server, &s.work),
        &["get", "nested/big.bin", "-o", "back.bin"],
    );
    assert_exit(&out, 0);
    let back = s.work.join("back.bin");
    assert_eq!(std::fs::metadata(&back).unwrap().len(), 50 << 20);
    assert_eq!(hash_file(&back), hash);

    let out = run(&mut py(&s.server, &s.work), &["stat", "nested/big.bin"]);
    assert_eq!(stdout(&out), "52428800\tnested/big.bin\n");
}

#[test]
fn missing_remote_file_exits_4() {
    let s = setup(&[]);
    for args in [&["get", "nope"][..], &["stat", "nope"], &["delete", "nope"]] {
        let out = run(&mut py(&s.server, &s.work), args);
        assert_error(&out, 4, "not found");
    }
    // A failed get leaves nothing behind.
    assert!(tree(&s.work).is_empty(), "{:?}", tree(&s.work));
}

#[test]
fn existing_remote_file_exits_5_without_force_and_is_replaced_with_it() {
    let s = setup(&[]);
    std::fs::write(s.work.join("f"), b"first").unwrap();
    assert_exit(&run(&mut py(&s.server, &s.work), &["put", "f"]), 0);
    std::fs::write(s.work.join("f"), b"second").unwrap();

    let out = run(&mut py(&s.server, &s.work), &["put", "f"]);
    assert_error(&out, 5, "already exists");
    assert_eq!(std::fs::read(s.server.root.join("f")).unwrap(), b"first");

    assert_exit(
        &run(&mut py(&s.server, &s.work), &["put", "f", "--force"]),
        0,
    );
    assert_eq!(std::fs::read(s.server.root.join("f")).unwrap(), b"second");
    assert!(staging(&s.server.root).is_empty());
}

#[test]
fn existing_local_file_exits_5_without_force_and_is_replaced_with_it() {
    let s = setup(&[]);
    std::fs::write(s.server.root.join("f"), b"remote").unwrap();
    std::fs::write(s.work.join("f"), b"local").unwrap();

    let out = run(&mut py(&s.server, &s.work), &["get", "f"]);
    assert_error(&out, 5, "already exists (use --force to replace it)");
    assert_eq!(std::fs::read(s.work.join("f")).unwrap(), b"local");
    // Refused before anything was requested: the server logs every
    // request, and has logged none.
    let logged_get = "op=\"get\"";
    assert!(!s.server.log().contains(logged_get), "{}", s.server.log());
    assert_eq!(tree(&s.work), ["f"]);

    assert_exit(
        &run(&mut py(&s.server, &s.work), &["get", "f", "--force"]),
        0,
    );
    assert_eq!(std::fs::read(s.work.join("f")).unwrap(), b"remote");
    assert_eq!(tree(&s.work), ["f"]);
    s.server.wait_for_log(logged_get);
}

#[test]
fn invalid_names_are_refused_before_connecting() {
    // Nothing listens there: an attempt to connect would exit 3.
    let nowhere: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), b"x").unwrap();
    let long_component = "a".repeat(256);
    for name in [
        "",
        "/abs",
        "a/../b",
        "./a",
        "a//b",
        "dir/",
        "a\\b",
        "tab\there",
        ".framekit/staging/x",
        &long_component,
    ] {
        for args in [
            &["put", "f", "--name", name][..],
            &["get", name],
            &["stat", name],
            &["delete", name],
        ] {
            let out = run(&mut py_at(nowhere, dir.path()), args);
            assert_error(&out, 7, "invalid remote name");
        }
    }
    assert_eq!(tree(dir.path()), ["f"]);
}

#[test]
fn names_from_the_server_are_printed_escaped() {
    let s = setup(&[]);
    // A valid name holding a right-to-left override and a line separator,
    // which could disguise what is printed.
    let name = "evil\u{202e}txt.exe\u{2028}x";
    std::fs::write(s.server.root.join(name), b"12345").unwrap();
    let out = run(&mut py(&s.server, &s.work), &["list"]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "5\tevil\\u{202e}txt.exe\\u{2028}x\n");
    let out = run(&mut py(&s.server, &s.work), &["stat", name]);
    assert_eq!(stdout(&out), "5\tevil\\u{202e}txt.exe\\u{2028}x\n");
}

#[test]
fn connection_failures_exit_3_and_usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let nowhere: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let out = run(&mut py_at(nowhere, dir.path()), &["list"]);
    assert_error(&out, 3, "cannot connect to 127.0.0.1:1");

    let out = run(&mut py_at(nowhere, dir.path()), &["frobnicate"]);
    assert_exit(&out, 2);
    let out = run(&mut py_at(nowhere, dir.path()), &["get"]);
    assert_exit(&out, 2);
}

#[test]
fn local_file_errors_exit_8() {
    let s = setup(&[]);
    let out = run(&mut py(&s.server, &s.work), &["put", "missing.txt"]);
    assert_error(&out, 8, "cannot read missing.txt");
    let out = run(&mut py(&s.server, &s.work), &["put", "."]);
    assert_error(&out, 8, "cannot read .");
    std::fs::write(s.server.root.join("f"), b"x").unwrap();
    let out = run(
        &mut py(&s.server, &s.work),
        &["get", "f", "-o", "no/such/dir/f"],
    );
    assert_error(&out, 8, "cannot create a temporary file in no/such/dir");
    assert!(staging(&s.server.root).is_empty());
}

#[test]
fn busy_server_is_a_refusal() {
    let s = setup(&["--max-connections", "1"]);
    let _held = s.server.connect();
    let out = run(&mut py(&s.server, &s.work), &["list"]);
    assert_error(&out, 7, "busy");
}

#[test]
fn file_put_by_python_is_fetched_identical_by_the_rust_client() {
    let s = setup(&[]);
    let local = s.work.join("from-python.bin");
    let hash = write_random_file(&local, 7, 3 * (1 << 20) + 17);
    assert_exit(
        &run(
            &mut py(&s.server, &s.work),
            &["put", "from-python.bin", "--name", "x/from-python.bin"],
        ),
        0,
    );
    let out = s
        .server
        .client(&s.work)
        .args(["get", "x/from-python.bin", "--output", "fetched.bin"])
        .output()
        .unwrap();
    assert_exit(&out, 0);
    assert_eq!(hash_file(&s.work.join("fetched.bin")), hash);
}

#[test]
fn file_put_by_the_rust_client_is_fetched_identical_by_python() {
    let s = setup(&[]);
    let local = s.work.join("from-rust.bin");
    let hash = write_random_file(&local, 8, 3 * (1 << 20) + 19);
    let out = s
        .server
        .client(&s.work)
        .args(["put", "from-rust.bin", "--name", "y/from-rust.bin"])
        .output()
        .unwrap();
    assert_exit(&out, 0);
    assert_eq!(hash_file(&s.server.root.join("y/from-rust.bin")), hash);
    assert_exit(
        &run(
            &mut py(&s.server, &s.work),
            &["get", "y/from-rust.bin", "-o", "fetched.bin"],
        ),
        0,
    );
    assert_eq!(hash_file(&s.work.join("fetched.bin")), hash);
}

#[test]
fn python_and_rust_clients_print_the_same_listing() {
    let s = setup(&[]);
    for (name, len) in [("b", 3), ("a/c", 0), ("a.txt", 10), ("évian\u{202e}", 4)] {
        let path = s.server.root.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, random_bytes(len as u64, len)).unwrap();
    }
    let rust = s.server.client(&s.work).arg("list").output().unwrap();
    let python = run(&mut py(&s.server, &s.work), &["list"]);
    assert_exit(&python, 0);
    assert_exit(&rust, 0);
    assert_eq!(stdout(&python), stdout(&rust));
}

/// A one-connection fake server: answers the hello with `welcome`, reads
/// one request, and lets `serve` answer it. Returns the hello it got.
fn fake_server(
    welcome: Welcome,
    serve: impl FnOnce(&mut std::net::TcpStream, Request) + Send + 'static,
) -> (SocketAddr, JoinHandle<Hello>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let config = frame_config();
        let hello: Hello = read_message(&mut stream, &config).unwrap().unwrap();
        write_message(&mut stream, &config, &Response::Welcome(welcome)).unwrap();
        if let Ok(Some(request)) = read_message::<_, Request>(&mut stream, &config) {
            serve(&mut stream, request);
        }
        hello
    });
    (addr, handle)
}

fn welcome() -> Welcome {
    Welcome {
        version: VERSION,
        max_file_size: 1 << 30,
        max_message_len: 65536,
        idle_timeout_ms: 30_000,
        read_only: false,
    }
}

/// Serves a get of `body` with the trailer `trailer`, closing after
/// `send` body bytes.
fn serve_body(
    body: Vec<u8>,
    send: usize,
    trailer: [u8; 32],
) -> impl FnOnce(&mut std::net::TcpStream, Request) + Send {
    move |stream, request| {
        assert!(matches!(request, Request::Get(_)), "{request:?}");
        let config = frame_config();
        let ready = Response::GetReady {
            size: body.len() as u64,
            offset: 0,
            modified_ns: 0,
        };
        write_message(&mut *stream, &config, &ready).unwrap();
        stream.write_all(&body[..send]).unwrap();
        if send == body.len() {
            write_message(&mut *stream, &config, &Trailer { hash: trailer }).unwrap();
        }
    }
}

#[test]
fn download_with_a_wrong_hash_exits_6_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let body = random_bytes(3, 2_000_000);
    let wrong = *blake3::hash(b"something else").as_bytes();
    let (addr, server) = fake_server(welcome(), serve_body(body.clone(), body.len(), wrong));
    let out = run(&mut py_at(addr, dir.path()), &["get", "f.bin"]);
    assert_error(&out, 6, "integrity mismatch");
    server.join().unwrap();
    assert!(tree(dir.path()).is_empty(), "{:?}", tree(dir.path()));
}

#[test]
fn download_cut_short_exits_3_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let body = random_bytes(4, 2_000_000);
    let hash = *blake3::hash(&body).as_bytes();
    let (addr, server) = fake_server(welcome(), serve_body(body, 1_000_000, hash));
    let out = run(&mut py_at(addr, dir.path()), &["get", "f.bin"]);
    assert_error(
        &out,
        3,
        "the server closed the connection after 1000000 of 2000000 body bytes",
    );
    server.join().unwrap();
    assert!(tree(dir.path()).is_empty(), "{:?}", tree(dir.path()));
}

#[test]
fn token_from_the_environment_is_sent_in_the_hello() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, server) = fake_server(welcome(), |stream, request| {
        assert!(matches!(request, Request::List(_)), "{request:?}");
        write_message(stream, &frame_config(), &Response::ListEnd { count: 0 }).unwrap();
    });
    let out = run(
        py_at(addr, dir.path()).env("FRAMEKIT_TOKEN", "s3cret"),
        &["list"],
    );
    assert_exit(&out, 0);
    let hello = server.join().unwrap();
    assert_eq!(hello, Hello::new(Some("s3cret".into())));
}

#[test]
fn a_welcome_in_another_version_is_a_handshake_failure() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, server) = fake_server(
        Welcome {
            version: VERSION + 1,
            ..welcome()
        },
        |_, _| {},
    );
    let out = run(&mut py_at(addr, dir.path()), &["list"]);
    assert_error(&out, 3, "protocol version 2");
    server.join().unwrap();
}

#[test]
fn unknown_error_codes_are_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, server) = fake_server(welcome(), |stream, _| {
        let reply = ErrorReply::new(ErrorCode::Other(999), "from the future\u{1b}[2J");
        write_message(stream, &frame_config(), &Response::Error(reply)).unwrap();
    });
    let out = run(&mut py_at(addr, dir.path()), &["stat", "f"]);
    assert_error(&out, 7, "error code 999: from the future\\u{1b}[2J");
    server.join().unwrap();
}
