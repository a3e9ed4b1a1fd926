//! The Python client (`examples/python/framekit_client.py`), written from
//! PROTOCOL.md alone, against the real server (plain, with access tokens,
//! over TLS); and cross-checks with the Rust client: what one puts, the
//! other gets byte for byte, and both fail alike.
//!
//! The interpreter is `$FRAMEKIT_PYTHON` (set by `scripts/test`, which
//! installs the `blake3` package if needed), else `python3`. Without
//! Python or without blake3 these tests fail, saying how to fix it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use framekit_codec::blocking::{read_message, write_message};
use framekit_tests::{
    ServerProcess, bin, client_at, hash_file, random_bytes, staging, stderr, stdout, tree,
    write_random_file,
};
use framekit_transfer::{
    ErrorCode, ErrorReply, Hello, Request, Response, Trailer, VERSION, Welcome, frame_config,
};
use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
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
    py_to(&addr.to_string(), cwd)
}

/// The Python client aimed at `server` (`HOST:PORT`), quiet, run in `cwd`,
/// with nothing from the environment.
fn py_to(server: &str, cwd: &Path) -> Command {
    let mut cmd = Command::new(python());
    cmd.current_dir(cwd)
        .arg(script())
        .arg("--server")
        .arg(server)
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
    setup_in(tempfile::tempdir().unwrap(), extra)
}

/// A server serving `dir/root`, with `dir/work` as the scratch directory;
/// `dir` may already hold the server's certificate or token file.
fn setup_in(dir: tempfile::TempDir, extra: &[&str]) -> Setup {
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
fn the_python_client_escapes_exactly_what_the_rust_client_escapes() {
    // Every Unicode scalar value, in one string.
    let all: String = (0u32..0x11_0000).filter_map(char::from_u32).collect();
    let code = "import sys; sys.path.insert(0, sys.argv[1]); import framekit_client as f; \
                text = sys.stdin.buffer.read().decode(); \
                sys.stdout.buffer.write(f.escape(text).encode())";
    let mut child = Command::new(python())
        .args(["-c", code])
        .arg(script().parent().unwrap())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = {
        let all = all.clone();
        std::thread::spawn(move || stdin.write_all(all.as_bytes()).unwrap())
    };
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success());
    let python = String::from_utf8(out.stdout).unwrap();
    let rust = framekit_client::escape::Escaped(&all).to_string();
    if python != rust {
        let first = python
            .chars()
            .zip(rust.chars())
            .position(|(p, r)| p != r)
            .unwrap_or(0);
        panic!(
            "the clients escape differently from character {first}: python {:?}, rust {:?}",
            python.chars().skip(first).take(12).collect::<String>(),
            rust.chars().skip(first).take(12).collect::<String>()
        );
    }
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
    assert_eq!(stdout(&python), files_only(&stdout(&rust)));
}

/// A listing of the Rust client without its directories (`-<TAB>NAME/`
/// lines), which the Python client does not show.
fn files_only(listing: &str) -> String {
    listing
        .lines()
        .filter(|line| !line.starts_with("-\t"))
        .map(|line| format!("{line}\n"))
        .collect()
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

#[test]
fn an_idle_timeout_answer_is_a_refusal_as_in_the_rust_client() {
    let dir = tempfile::tempdir().unwrap();
    fn timeout(stream: &mut std::net::TcpStream, request: Request) {
        // The Python client asks for a stat, the Rust one for a
        // description (with the hash): the same operation.
        assert!(
            matches!(request, Request::Stat(_) | Request::Describe(_)),
            "{request:?}"
        );
        let reply = ErrorReply::new(
            ErrorCode::Timeout,
            "closing the connection after 30 s without a request",
        );
        write_message(stream, &frame_config(), &Response::Error(reply)).unwrap();
    }
    let expected =
        "the server refused the stat: timeout: closing the connection after 30 s without a request";
    let (addr, server) = fake_server(welcome(), timeout);
    let python = run(&mut py_at(addr, dir.path()), &["stat", "f"]);
    assert_error(&python, 7, expected);
    server.join().unwrap();
    let (addr, server) = fake_server(welcome(), timeout);
    let rust = client_at(addr, dir.path())
        .args(["stat", "f"])
        .output()
        .unwrap();
    assert_error(&rust, 7, expected);
    server.join().unwrap();
    assert_eq!(stderr(&python), stderr(&rust));
}

#[test]
fn token_file_is_sent_in_the_hello_instead_of_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    // The first line that is not blank, trimmed.
    std::fs::write(
        dir.path().join("token"),
        "\n  \n  from-the-file \nsecond line\n",
    )
    .unwrap();
    let (addr, server) = fake_server(welcome(), |stream, _| {
        write_message(stream, &frame_config(), &Response::ListEnd { count: 0 }).unwrap();
    });
    let out = run(
        py_at(addr, dir.path())
            .env("FRAMEKIT_TOKEN", "from-the-environment")
            .args(["--token-file", "token"]),
        &["list"],
    );
    assert_exit(&out, 0);
    assert_eq!(
        server.join().unwrap(),
        Hello::new(Some("from-the-file".into()))
    );
}

#[test]
fn unusable_token_and_certificate_files_exit_8_as_in_the_rust_client() {
    // Nothing listens there: these must fail before connecting.
    let nowhere: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("blank"), "\n   \n").unwrap();
    std::fs::write(dir.path().join("not-a-cert.pem"), "hello\n").unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--token-file", "missing"],
            "cannot read the token file missing",
        ),
        (
            &["--token-file", "blank"],
            "cannot read the token file blank: the file holds no token",
        ),
        (
            &["--ca", "missing.pem"],
            "cannot use missing.pem as trusted certificates",
        ),
        (
            &["--ca", "not-a-cert.pem"],
            "cannot use not-a-cert.pem as trusted certificates: no CERTIFICATE block found",
        ),
    ];
    for (options, needle) in cases {
        let python = run(py_at(nowhere, dir.path()).args(*options), &["list"]);
        assert_error(&python, 8, needle);
        let rust = client_at(nowhere, dir.path())
            .args(*options)
            .arg("list")
            .output()
            .unwrap();
        assert_error(&rust, 8, needle);
    }
}

/// The read-write and read-only tokens of [`secure_server`].
const RW_TOKEN: &str = "rw-6f1c0a9e";
const RO_TOKEN: &str = "ro-2b7d44c1";

/// Runs `server --generate-cert dir`; returns the certificate and the key.
fn generate_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let out = Command::new(bin("server"))
        .arg("--generate-cert")
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    (dir.join("cert.pem"), dir.join("key.pem"))
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A server with TLS (a certificate from `server --generate-cert`) if
/// `tls`, and requiring [`RW_TOKEN`] or the read-only [`RO_TOKEN`] if
/// `tokens`. Returns it and the certificate (generated even without TLS,
/// for clients that try it anyway). The work directory holds the client
/// token files `rw.token`, `ro.token` and `wrong.token`.
fn secure_server(tls: bool, tokens: bool) -> (Setup, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = generate_cert(&dir.path().join("certs"));
    let token_file = dir.path().join("tokens");
    std::fs::write(
        &token_file,
        format!("# who may do what\n{RW_TOKEN}\n\nro:{RO_TOKEN}\n"),
    )
    .unwrap();
    // The server refuses a token file that other users can read.
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut extra = Vec::new();
    if tls {
        extra.extend(["--tls-cert", path_str(&cert), "--tls-key", path_str(&key)]);
    }
    if tokens {
        extra.extend(["--token-file", path_str(&token_file)]);
    }
    let s = setup_in(dir, &extra);
    for (name, token) in [
        ("rw.token", RW_TOKEN),
        ("ro.token", RO_TOKEN),
        ("wrong.token", "rw-6f1c0a9f"),
    ] {
        std::fs::write(s.work.join(name), format!("\n  {token}  \n")).unwrap();
    }
    (s, cert)
}

#[test]
fn python_client_with_the_right_token_file_does_every_operation() {
    let (s, _) = secure_server(false, true);
    std::fs::write(s.work.join("f"), b"content").unwrap();
    let py_rw = || {
        let mut cmd = py(&s.server, &s.work);
        cmd.args(["--token-file", "rw.token"]);
        cmd
    };
    assert_exit(&run(&mut py_rw(), &["put", "f", "--name", "d/e/f"]), 0);
    assert_eq!(
        std::fs::read(s.server.root.join("d/e/f")).unwrap(),
        b"content"
    );
    assert_eq!(stdout(&run(&mut py_rw(), &["list"])), "7\td/e/f\n");
    assert_eq!(stdout(&run(&mut py_rw(), &["stat", "d/e/f"])), "7\td/e/f\n");
    assert_exit(&run(&mut py_rw(), &["get", "d/e/f", "-o", "back"]), 0);
    assert_eq!(std::fs::read(s.work.join("back")).unwrap(), b"content");
    assert_exit(&run(&mut py_rw(), &["delete", "d/e/f"]), 0);
    // The directories the deletion left empty went with the file.
    assert!(!s.server.root.join("d").exists());
    // The token may come from the environment instead.
    let out = run(
        py(&s.server, &s.work).env("FRAMEKIT_TOKEN", RW_TOKEN),
        &["list"],
    );
    assert_exit(&out, 0);
}

#[test]
fn python_client_with_a_wrong_or_missing_token_exits_7() {
    let (s, _) = secure_server(false, true);
    std::fs::write(s.work.join("f"), b"x").unwrap();
    let out = run(
        py(&s.server, &s.work).args(["--token-file", "wrong.token"]),
        &["put", "f"],
    );
    assert_error(
        &out,
        7,
        "the server refused the handshake: unauthorized: the access token was not accepted",
    );
    let out = run(&mut py(&s.server, &s.work), &["put", "f"]);
    assert_error(
        &out,
        7,
        "the server refused the handshake: unauthorized: this server requires an access token",
    );
    // The token file wins over a right token in the environment.
    let out = run(
        py(&s.server, &s.work)
            .env("FRAMEKIT_TOKEN", RW_TOKEN)
            .args(["--token-file", "wrong.token"]),
        &["put", "f"],
    );
    assert_error(&out, 7, "unauthorized");
    assert!(!s.server.root.join("f").exists());
    assert!(staging(&s.server.root).is_empty());
    s.server.wait_for_log("authentication failed");
}

#[test]
fn read_only_token_may_get_list_and_stat_but_not_put_or_delete() {
    let (s, _) = secure_server(false, true);
    std::fs::write(s.server.root.join("kept"), b"remote").unwrap();
    std::fs::write(s.work.join("new"), b"local").unwrap();
    let py_ro = || {
        let mut cmd = py(&s.server, &s.work);
        cmd.args(["--token-file", "ro.token"]);
        cmd
    };
    let out = run(&mut py_ro(), &["put", "new"]);
    assert_error(
        &out,
        7,
        "the server refused the put: forbidden: this token only allows get, list and stat",
    );
    assert!(!s.server.root.join("new").exists());
    assert!(staging(&s.server.root).is_empty());
    let out = run(&mut py_ro(), &["delete", "kept"]);
    assert_error(&out, 7, "the server refused the delete: forbidden");
    assert_eq!(
        std::fs::read(s.server.root.join("kept")).unwrap(),
        b"remote"
    );

    assert_exit(&run(&mut py_ro(), &["get", "kept"]), 0);
    assert_eq!(std::fs::read(s.work.join("kept")).unwrap(), b"remote");
    assert_eq!(stdout(&run(&mut py_ro(), &["list"])), "6\tkept\n");
    assert_eq!(stdout(&run(&mut py_ro(), &["stat", "kept"])), "6\tkept\n");
}

#[test]
fn python_client_round_trips_over_tls_with_the_generated_certificate() {
    let (s, cert) = secure_server(true, false);
    let local = s.work.join("big.bin");
    let hash = write_random_file(&local, 21, 3 * (1 << 20) + 5);
    std::fs::write(s.work.join("empty"), b"").unwrap();
    let py_tls = || {
        let mut cmd = py(&s.server, &s.work);
        cmd.args(["--ca", path_str(&cert)]);
        cmd
    };
    let out = run(&mut py_tls(), &["put", "big.bin", "--name", "t/big.bin"]);
    assert_exit(&out, 0);
    assert_eq!(
        stdout(&out),
        format!("put t/big.bin: 3145733 bytes, blake3 {}\n", hash.to_hex())
    );
    assert_eq!(hash_file(&s.server.root.join("t/big.bin")), hash);
    assert_exit(&run(&mut py_tls(), &["put", "empty"]), 0);
    assert_eq!(
        stdout(&run(&mut py_tls(), &["list"])),
        "0\tempty\n3145733\tt/big.bin\n"
    );
    assert_exit(
        &run(&mut py_tls(), &["get", "t/big.bin", "-o", "back.bin"]),
        0,
    );
    assert_eq!(hash_file(&s.work.join("back.bin")), hash);

    // By name: the certificate is also valid for localhost.
    let by_name = format!("localhost:{}", s.server.addr.port());
    let out = run(
        py_to(&by_name, &s.work).args(["--tls", "--ca", path_str(&cert)]),
        &["stat", "empty"],
    );
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "0\tempty\n");
    assert!(staging(&s.server.root).is_empty());
}

#[test]
fn python_plain_client_of_a_tls_server_exits_3_saying_so() {
    let (s, _) = secure_server(true, false);
    std::fs::write(s.work.join("f"), b"x").unwrap();
    for args in [&["list"][..], &["put", "f"]] {
        let out = run(&mut py(&s.server, &s.work), args);
        assert_error(
            &out,
            3,
            "the server did not answer the handshake as a framekit server: the server speaks TLS: connect with --tls",
        );
    }
    assert!(!s.server.root.join("f").exists());
}

#[test]
fn python_tls_client_of_a_plain_server_exits_3_saying_so() {
    let (s, cert) = secure_server(false, false);
    for options in [&["--tls"][..], &["--ca", path_str(&cert)]] {
        let out = run(py(&s.server, &s.work).args(options), &["list"]);
        assert_error(
            &out,
            3,
            &format!(
                "TLS with {} failed: the server did not answer with TLS",
                s.server.addr
            ),
        );
    }
}

#[test]
fn python_tls_client_refuses_a_certificate_it_does_not_trust() {
    let (s, _) = secure_server(true, false);
    let (other, _) = generate_cert(&s.work.join("other"));
    let needle = "the server's certificate is not signed by a trusted authority";
    // Another self-signed certificate, then the system's roots.
    let out = run(
        py(&s.server, &s.work).args(["--ca", path_str(&other)]),
        &["list"],
    );
    assert_error(&out, 3, needle);
    let out = run(py(&s.server, &s.work).arg("--tls"), &["list"]);
    assert_error(&out, 3, needle);
}

#[test]
fn python_tls_client_checks_the_certificate_name_as_the_rust_client_does() {
    // A certificate for another host only.
    let dir = tempfile::tempdir().unwrap();
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["files.example".to_owned()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, signing_key.serialize_pem()).unwrap();
    let (cert_arg, key_arg) = (
        path_str(&cert_path).to_owned(),
        path_str(&key_path).to_owned(),
    );
    let s = setup_in(dir, &["--tls-cert", &cert_arg, "--tls-key", &key_arg]);
    let port = s.server.addr.port();
    for (host, server) in [
        ("127.0.0.1", s.server.addr.to_string()),
        ("localhost", format!("localhost:{port}")),
    ] {
        let needle = format!("the server's certificate is not valid for the name '{host}'");
        let python = run(py_to(&server, &s.work).args(["--ca", &cert_arg]), &["list"]);
        assert_error(&python, 3, &needle);
        let rust = Command::new(bin("client"))
            .current_dir(&s.work)
            .args(["--server", &server, "--quiet", "--ca", &cert_arg, "list"])
            .env_remove("FRAMEKIT_SERVER")
            .env_remove("FRAMEKIT_TOKEN")
            .output()
            .unwrap();
        assert_error(&rust, 3, &needle);
        assert_eq!(stderr(&python), stderr(&rust));
    }
}

#[test]
fn python_and_rust_clients_exchange_files_over_tls_with_tokens() {
    let (s, cert) = secure_server(true, true);
    let ca = ["--ca", path_str(&cert)];
    let py_with = |token: &str| {
        let mut cmd = py(&s.server, &s.work);
        cmd.args(ca).args(["--token-file", token]);
        cmd
    };
    let rust_with = |token: &str| {
        let mut cmd = s.server.client(&s.work);
        cmd.args(ca).args(["--token-file", token]);
        cmd
    };

    // Python puts, Rust gets with the read-only token.
    let hash = write_random_file(&s.work.join("p.bin"), 31, 2 * (1 << 20) + 3);
    assert_exit(
        &run(
            &mut py_with("rw.token"),
            &["put", "p.bin", "--name", "x/p.bin"],
        ),
        0,
    );
    let out = rust_with("ro.token")
        .args(["get", "x/p.bin", "-o", "p-by-rust.bin"])
        .output()
        .unwrap();
    assert_exit(&out, 0);
    assert_eq!(hash_file(&s.work.join("p-by-rust.bin")), hash);

    // Rust puts, Python gets with the read-only token.
    let hash = write_random_file(&s.work.join("r.bin"), 32, 2 * (1 << 20) + 7);
    let out = rust_with("rw.token")
        .args(["put", "r.bin", "--name", "y/r.bin"])
        .output()
        .unwrap();
    assert_exit(&out, 0);
    assert_exit(
        &run(
            &mut py_with("ro.token"),
            &["get", "y/r.bin", "-o", "r-by-python.bin"],
        ),
        0,
    );
    assert_eq!(hash_file(&s.work.join("r-by-python.bin")), hash);

    // Both list alike, and fail alike.
    let python = run(&mut py_with("ro.token"), &["list"]);
    let rust = rust_with("ro.token").arg("list").output().unwrap();
    assert_exit(&python, 0);
    assert_eq!(stdout(&python), files_only(&stdout(&rust)));
    for (token, args, code) in [
        ("ro.token", &["put", "r.bin", "--name", "z"][..], 7),
        ("ro.token", &["delete", "x/p.bin"], 7),
        ("wrong.token", &["list"], 7),
    ] {
        let python = run(&mut py_with(token), args);
        let rust = rust_with(token).args(args).output().unwrap();
        assert_exit(&python, code);
        assert_exit(&rust, code);
        assert_eq!(stderr(&python), stderr(&rust), "{token} {args:?}");
    }
    assert!(!s.server.root.join("z").exists());
    assert!(s.server.root.join("x/p.bin").exists());
}
