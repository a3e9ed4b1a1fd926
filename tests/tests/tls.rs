//! TLS against the real binaries: a generated certificate, a verified
//! round trip, clear errors for every mismatch (plain text against TLS and
//! the reverse, an untrusted authority, a name the certificate does not
//! cover), peers that never finish the handshake, and the refusal to serve
//! in clear text beyond loopback.
//!
//! Every test with a running server ends with [`Intact::check`].
#![allow(clippy::unwrap_used, clippy::expect_used)]

use framekit_tests::hostile::{Intact, read_to_close, server_exit, wait_for_line};
use framekit_tests::{ServerProcess, hash_file, stderr, stdout, write_random_file};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

/// A certificate and key made by `server --generate-cert`.
struct Cert {
    cert: PathBuf,
    key: PathBuf,
}

impl Cert {
    /// Generates one in `dir` for the default names plus `names`.
    fn generate(dir: &Path, names: &[&str]) -> (Cert, Output) {
        let mut args = vec!["--generate-cert".as_ref(), dir.as_os_str()];
        for name in names {
            args.push("--cert-name".as_ref());
            args.push(name.as_ref());
        }
        let output = server_exit(&args);
        assert!(output.status.success(), "{}", stderr(&output));
        let cert = Cert {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        (cert, output)
    }

    /// The server arguments that use it.
    fn server_args(&self) -> [&str; 4] {
        [
            "--tls-cert",
            self.cert.to_str().unwrap(),
            "--tls-key",
            self.key.to_str().unwrap(),
        ]
    }

    /// The client arguments that trust it.
    fn client_args(&self) -> [&str; 3] {
        ["--tls", "--ca", self.cert.to_str().unwrap()]
    }
}

/// A TLS server on 127.0.0.1 with a certificate generated for it. The
/// certificate lives outside the root's parent, so the disk checks do not
/// see it.
fn tls_server(dir: &Path, extra: &[&str]) -> (ServerProcess, Cert, tempfile::TempDir) {
    let certs = tempfile::tempdir().unwrap();
    let (cert, _) = Cert::generate(&certs.path().join("server"), &[]);
    let mut args = cert.server_args().to_vec();
    args.extend(extra);
    let server = ServerProcess::start(&dir.join("root"), &args);
    (server, cert, certs)
}

/// The error line a failed client printed, after checking it is alone.
fn error_line(output: &Output) -> String {
    let err = stderr(output);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    lines[0].to_owned()
}

#[test]
fn generate_cert_writes_a_private_key_and_says_how_to_use_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tls");
    let (cert, output) = Cert::generate(&out, &["files.example"]);
    let text = stdout(&output);
    let (cert_path, key_path) = (cert.cert.display(), cert.key.display());
    assert!(
        text.contains(&format!(
            "server --tls-cert {cert_path} --tls-key {key_path}"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("client --tls --ca {cert_path}")),
        "{text}"
    );
    assert!(
        std::fs::read_to_string(&cert.cert)
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    let key_mode = std::fs::metadata(&cert.key).unwrap().permissions().mode();
    assert_eq!(key_mode & 0o777, 0o600, "the key is private");

    // Existing files are never replaced.
    let before = (
        std::fs::read(&cert.cert).unwrap(),
        std::fs::read(&cert.key).unwrap(),
    );
    let again = server_exit(&["--generate-cert".as_ref(), out.as_os_str()]);
    assert_eq!(again.status.code(), Some(5));
    assert!(stderr(&again).starts_with("error: "), "{}", stderr(&again));
    let after = (
        std::fs::read(&cert.cert).unwrap(),
        std::fs::read(&cert.key).unwrap(),
    );
    assert!(before == after, "the certificate or key was replaced");
}

#[test]
fn tls_round_trip_with_a_token_is_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "tls-token-40e1\n").unwrap();
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (server, cert, _certs) =
        tls_server(dir.path(), &["--token-file", tokens.to_str().unwrap()]);
    let intact = Intact::with_client(&server, &cert.client_args(), Some("tls-token-40e1"));

    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("data.bin");
    let hash = write_random_file(&source, 11, (3 << 20) + 1);
    for args in [
        &["put", "data.bin"][..],
        &["get", "data.bin", "--output", "back.bin"],
    ] {
        let output = server
            .client(work.path())
            .args(cert.client_args())
            .env("FRAMEKIT_TOKEN", "tls-token-40e1")
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success(), "{args:?}: {}", stderr(&output));
    }
    assert_eq!(hash_file(&work.path().join("back.bin")), hash);
    assert_eq!(hash_file(&server.root.join("data.bin")), hash);

    intact.check(&server, &["root/data.bin"], None);
}

#[test]
fn plain_client_against_a_tls_server_is_told_to_use_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (server, cert, _certs) = tls_server(dir.path(), &[]);
    let intact = Intact::with_client(&server, &cert.client_args(), None);
    let output = server.client(dir.path()).arg("list").output().unwrap();
    assert_eq!(output.status.code(), Some(3));
    assert_eq!(
        error_line(&output),
        "error: the server did not answer the handshake as a framekit server: the server speaks TLS: connect with --tls"
    );
    intact.check(&server, &[], None);
}

#[test]
fn tls_client_against_a_plain_server_is_told_it_does_not_speak_tls() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("root"), &[]);
    let intact = Intact::new(&server);
    let certs = tempfile::tempdir().unwrap();
    let (cert, _) = Cert::generate(certs.path(), &[]);
    let output = server
        .client(certs.path())
        .args(cert.client_args())
        .arg("list")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    assert_eq!(
        error_line(&output),
        format!(
            "error: TLS with {} failed: the server did not answer with TLS (does it run without --tls-cert? then connect without --tls)",
            server.addr
        )
    );
    wait_for_line(
        &server,
        &["a TLS client connected to this plain-text server"],
    );
    intact.check(&server, &[], None);
}

#[test]
fn certificate_from_an_untrusted_authority_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (server, cert, certs) = tls_server(dir.path(), &[]);
    let intact = Intact::with_client(&server, &cert.client_args(), None);
    // Another self-signed certificate, for the same names.
    let (other, _) = Cert::generate(&certs.path().join("other"), &[]);
    let output = server
        .client(certs.path())
        .args(other.client_args())
        .arg("list")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    assert_eq!(
        error_line(&output),
        format!(
            "error: TLS with {} failed: the server's certificate is not signed by a trusted authority (for a private CA or a self-signed certificate, pass it with --ca)",
            server.addr
        )
    );
    // Nor does a client without --ca trust it (the system's roots).
    let output = server
        .client(certs.path())
        .args(["--tls", "list"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(
        error_line(&output).contains("not signed by a trusted authority"),
        "{}",
        stderr(&output)
    );
    intact.check(&server, &[], None);
}

#[test]
fn certificate_not_valid_for_the_name_is_rejected() {
    // The generated certificate names localhost, 127.0.0.1 and ::1; the
    // server listens on 127.0.0.2, another loopback address.
    let dir = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let (cert, _) = Cert::generate(&certs.path().join("default"), &[]);
    let server =
        ServerProcess::start_on("127.0.0.2:0", &dir.path().join("root"), &cert.server_args());
    let output = server
        .client(certs.path())
        .args(cert.client_args())
        .arg("list")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    assert_eq!(
        error_line(&output),
        format!(
            "error: TLS with {} failed: the server's certificate is not valid for the name '127.0.0.2'",
            server.addr
        )
    );
    drop(server);

    // The same server with a certificate that names 127.0.0.2 is trusted,
    // so the name was the only problem.
    let (named, _) = Cert::generate(&certs.path().join("named"), &["127.0.0.2"]);
    let server = ServerProcess::start_on(
        "127.0.0.2:0",
        &dir.path().join("root"),
        &named.server_args(),
    );
    let intact = Intact::with_client(&server, &named.client_args(), None);
    intact.check(&server, &[], None);
}

#[test]
fn silent_peer_on_a_tls_server_is_dropped_at_the_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (server, cert, _certs) = tls_server(dir.path(), &["--idle-timeout", "1"]);
    let intact = Intact::with_client(&server, &cert.client_args(), None);
    // Connects and never starts the handshake.
    let mut silent = std::net::TcpStream::connect(server.addr).unwrap();
    assert_eq!(read_to_close(&mut silent), 0);
    wait_for_line(
        &server,
        &[
            &framekit_tests::hostile::log_peer(&silent),
            "TLS handshake timed out",
        ],
    );
    intact.check(&server, &[], None);
}

#[test]
fn garbage_instead_of_a_tls_handshake_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (server, cert, _certs) = tls_server(dir.path(), &[]);
    let intact = Intact::with_client(&server, &cert.client_args(), None);
    let mut peer = std::net::TcpStream::connect(server.addr).unwrap();
    // A framekit hello in clear text, then a frame prefix of 4 GiB.
    let mut wire = Vec::new();
    framekit_codec::blocking::write_message(
        &mut wire,
        &framekit_transfer::frame_config(),
        &framekit_transfer::Hello::new(None),
    )
    .unwrap();
    wire.extend(u32::MAX.to_be_bytes());
    peer.write_all(&wire).unwrap();
    // A TLS alert at most, then the end of the stream.
    read_to_close(&mut peer);
    wait_for_line(
        &server,
        &[
            &framekit_tests::hostile::log_peer(&peer),
            "TLS handshake failed",
        ],
    );
    intact.check(&server, &[], None);
}

#[test]
fn plain_text_beyond_loopback_is_refused_unless_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let output = server_exit(&[
        "--listen".as_ref(),
        "0.0.0.0:0".as_ref(),
        "--root".as_ref(),
        root.as_os_str(),
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(stdout(&output), "", "it never said it listens");
    let err = stderr(&output);
    assert!(
        err.starts_with("error: refusing to listen on 0.0.0.0:")
            && err.contains("without TLS: files and tokens would cross the network unencrypted")
            && err.contains("--insecure"),
        "{err}"
    );
    assert!(!root.exists(), "nothing was served");

    // With --insecure it serves, on every interface (reached here through
    // loopback).
    let mut server = ServerProcess::start_on("0.0.0.0:0", &root, &["--insecure"]);
    assert!(server.addr.ip().is_unspecified());
    server.addr.set_ip([127, 0, 0, 1].into());
    let intact = Intact::new(&server);
    intact.check(&server, &[], None);
}

#[test]
fn tls_beyond_loopback_needs_no_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let (cert, _) = Cert::generate(certs.path(), &[]);
    let mut server =
        ServerProcess::start_on("0.0.0.0:0", &dir.path().join("root"), &cert.server_args());
    server.addr.set_ip([127, 0, 0, 1].into());
    let intact = Intact::with_client(&server, &cert.client_args(), None);
    intact.check(&server, &[], None);
}
