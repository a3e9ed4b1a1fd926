//! Downloads: get, where it is saved, resumed gets.

use super::*;

/// The names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn get<S: Read + Write>(
    session: &mut Session<S>,
    name: &str,
    staging: Staging,
) -> Result<files::Saved, ClientError> {
    files::get_file(session, name, staging, &Meter::hidden(), &mut |_| {})
}

/// A fresh directory and a staging for `dest` in it.
fn staged(dest: &str, force: bool) -> (tempfile::TempDir, PathBuf, Staging) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(dest);
    let staging = Staging::open(&path, "x", options(force)).unwrap();
    (dir, path, staging)
}

#[test]
fn get_publishes_a_byte_identical_file_and_nothing_else() {
    let content = data(2 * CHUNK + 777);
    let (dir, path, staging) = staged("out.bin", false);
    assert_eq!(staging.part_path(), dir.path().join("out.bin.part"));
    let mut session = Script::welcome()
        .download(&content, hash(&content))
        .session();
    let saved = get(&mut session, "remote/x.bin", staging).unwrap();
    assert_eq!(saved.path, path);
    assert_eq!(saved.size, content.len() as u64);
    assert_eq!(saved.hash, hash(&content));
    assert!(fs::read(&path).unwrap() == content, "content differs");
    assert_eq!(listing(dir.path()), ["out.bin"]);
    assert!(session.is_usable());

    let mut sent = Sent::of(session);
    sent.hello();
    assert_eq!(
        sent.request(),
        Request::Get(Get {
            name: "remote/x.bin".into(),
            offset: 0,
            if_version: None,
        })
    );
    assert!(sent.rest().is_empty());
}

#[cfg(unix)]
#[test]
fn a_saved_file_gets_the_usual_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, path, staging) = staged("out", false);
    let mut session = Script::welcome().download(b"x", hash(b"x")).session();
    get(&mut session, "x", staging).unwrap();
    // Whatever the umask, a fresh file of the same directory gets the same
    // mode, and not the temporary file's private one.
    let reference = dir.path().join("reference");
    fs::write(&reference, b"").unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), mode(&reference));
}

#[test]
fn get_reads_a_body_that_arrives_in_tiny_pieces() {
    let content = data(10_000);
    let (_dir, path, staging) = staged("out", false);
    let mut peer = Script::welcome()
        .download(&content, hash(&content))
        .error(ErrorCode::NotFound, "gone")
        .peer();
    peer.max_read = 3;
    let mut session = Session::handshake(peer, None).unwrap();
    get(&mut session, "x", staging).unwrap();
    assert!(fs::read(&path).unwrap() == content);
    // The reply after the trailer is read as the next message.
    assert_eq!(
        refused_code(&session.stat("y").unwrap_err()),
        ErrorCode::NotFound
    );
}

#[test]
fn get_of_an_empty_file_creates_it() {
    let (dir, path, staging) = staged("empty", false);
    let mut session = Script::welcome().download(b"", hash(b"")).session();
    get(&mut session, "empty", staging).unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"");
    assert_eq!(listing(dir.path()), ["empty"]);
}

#[test]
fn get_with_a_wrong_trailer_leaves_nothing() {
    let content = data(CHUNK + 1);
    let mut altered = content.clone();
    altered[CHUNK / 2] ^= 1;
    let (dir, _path, staging) = staged("out", false);
    let mut session = Script::welcome()
        .download(&altered, hash(&content))
        .session();
    let err = get(&mut session, "x", staging).unwrap_err();
    assert!(matches!(err, ClientError::Integrity { .. }), "{err:?}");
    assert_eq!(err.exit(), Exit::Integrity);
    assert!(listing(dir.path()).is_empty());
    // The exchange completed: the connection is still in step.
    assert!(session.is_usable());
}

#[test]
fn get_cut_short_in_the_body_keeps_what_arrived_for_a_resume() {
    let content = data(CHUNK + 100);
    let (dir, _path, staging) = staged("out", false);
    let mut session = Script::welcome()
        .msg(&Response::GetReady {
            size: content.len() as u64,
            offset: 0,
            modified_ns: 0,
        })
        .raw(&content[..CHUNK + 10])
        .session();
    let err = get(&mut session, "x", staging).unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Truncated {
                received,
                expected,
            } if received == CHUNK as u64 + 10 && expected == content.len() as u64
        ),
        "{err:?}"
    );
    assert_eq!(err.exit(), Exit::Connection);
    assert_eq!(listing(dir.path()), ["out.part", "out.part.meta"]);
    assert!(fs::read(dir.path().join("out.part")).unwrap() == content[..CHUNK + 10]);
    assert_eq!(
        fs::read_to_string(dir.path().join("out.part.meta")).unwrap(),
        format!(
            "framekit partial download 1\nname: x\nsize: {}\nmodified_ns: 0\n",
            content.len()
        )
    );
    assert!(!session.is_usable());
}

#[test]
fn get_without_its_trailer_keeps_the_body_for_a_resume() {
    let (dir, _path, staging) = staged("out", false);
    let mut session = Script::welcome()
        .msg(&Response::GetReady {
            size: 5,
            offset: 0,
            modified_ns: 0,
        })
        .raw(b"hello")
        .session();
    let err = get(&mut session, "x", staging).unwrap_err();
    assert!(matches!(err, ClientError::Closed), "{err:?}");
    assert_eq!(listing(dir.path()), ["out.part", "out.part.meta"]);
    assert_eq!(fs::read(dir.path().join("out.part")).unwrap(), b"hello");
}

#[test]
fn get_of_a_missing_file_leaves_nothing() {
    let (dir, _path, staging) = staged("out", false);
    let mut session = Script::welcome()
        .error(ErrorCode::NotFound, "no such file")
        .session();
    let err = get(&mut session, "x", staging).unwrap_err();
    assert_eq!(err.exit(), Exit::NotFound);
    assert!(listing(dir.path()).is_empty());
    assert!(session.is_usable());
}

#[test]
fn get_ready_at_an_offset_not_asked_for_is_a_protocol_error() {
    let (dir, _path, staging) = staged("out", false);
    let mut session = Script::welcome()
        .msg(&Response::GetReady {
            size: 10,
            offset: 4,
            modified_ns: 0,
        })
        .raw(b"567890")
        .msg(&Trailer { hash: [0; 32] })
        .session();
    let err = get(&mut session, "x", staging).unwrap_err();
    assert!(
        matches!(err, ClientError::Protocol(ProtocolError::Offset { .. })),
        "{err:?}"
    );
    assert_eq!(err.exit(), Exit::Refused);
    assert!(listing(dir.path()).is_empty());
}

#[test]
fn get_refuses_an_existing_destination_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out");
    fs::write(&path, b"mine").unwrap();
    let err = Staging::open(&path, "x", options(false)).unwrap_err();
    assert!(
        matches!(err, ClientError::DestinationExists { .. }),
        "{err:?}"
    );
    assert_eq!(err.exit(), Exit::AlreadyExists);
    assert_eq!(listing(dir.path()), ["out"]);
    assert_eq!(fs::read(&path).unwrap(), b"mine");
}

#[cfg(unix)]
#[test]
fn get_refuses_a_dangling_symlink_as_destination_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("link");
    std::os::unix::fs::symlink(dir.path().join("nowhere"), &path).unwrap();
    let err = Staging::open(&path, "x", options(false)).unwrap_err();
    assert!(
        matches!(err, ClientError::DestinationExists { .. }),
        "{err:?}"
    );
    assert!(!dir.path().join("nowhere").exists());
}

#[test]
fn get_with_force_replaces_the_destination() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out");
    fs::write(&path, b"old content").unwrap();
    let staging = Staging::open(&path, "x", options(true)).unwrap();
    let mut session = Script::welcome().download(b"new", hash(b"new")).session();
    get(&mut session, "x", staging).unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"new");
    assert_eq!(listing(dir.path()), ["out"]);
}

#[test]
fn get_does_not_overwrite_a_file_that_appeared_meanwhile() {
    let (dir, path, staging) = staged("out", false);
    fs::write(&path, b"appeared").unwrap();
    let mut session = Script::welcome().download(b"new", hash(b"new")).session();
    let err = get(&mut session, "x", staging).unwrap_err();
    assert!(
        matches!(err, ClientError::DestinationExists { .. }),
        "{err:?}"
    );
    assert_eq!(fs::read(&path).unwrap(), b"appeared");
    // The verified copy stays for a get with --force, which needs no byte
    // more from the server.
    assert_eq!(listing(dir.path()), ["out", "out.part", "out.part.meta"]);
    let staging = Staging::open(&path, "x", options(true)).unwrap();
    assert_eq!(staging.resumable(), 3);
}

#[test]
fn get_never_replaces_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub");
    fs::create_dir(&path).unwrap();
    let err = Staging::open(&path, "x", options(true)).unwrap_err();
    assert_eq!(err.exit(), Exit::LocalFile);
    assert_eq!(listing(dir.path()), ["sub"]);
}

#[test]
fn destinations_use_only_the_last_component_of_the_name() {
    assert_eq!(
        files::destination("a/b/c.txt", None).unwrap(),
        PathBuf::from("c.txt")
    );
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        files::destination("a/b/c.txt", Some(dir.path())).unwrap(),
        dir.path().join("c.txt")
    );
    let file = dir.path().join("chosen");
    assert_eq!(files::destination("a/b/c.txt", Some(&file)).unwrap(), file);
    let missing_dir = PathBuf::from(format!("{}/nodir/", dir.path().display()));
    let err = files::destination("c.txt", Some(&missing_dir)).unwrap_err();
    assert_eq!(err.exit(), Exit::LocalFile);
    for bad in ["../../etc/passwd", "/etc/passwd", "a/..", "a\\..\\b", ""] {
        let err = files::destination(bad, None).unwrap_err();
        assert!(matches!(err, ClientError::InvalidName { .. }), "{bad:?}");
    }
}

#[test]
fn a_download_read_unhashed_is_checked_against_the_callers_hash() {
    for (claimed, ok) in [(hash(b"abc"), true), (hash(b"abd"), false)] {
        let mut session = Script::welcome().download(b"abc", hash(b"abc")).session();
        let mut download = session.start_get("f").unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(download.read_unhashed(&mut buf).unwrap(), 3);
        let err = download.read(&mut buf).unwrap_err();
        assert!(matches!(err, ClientError::Misuse(_)), "{err:?}");
        let finished = download.finish_with_hash(claimed);
        match ok {
            true => assert_eq!(finished.unwrap(), hash(b"abc")),
            false => assert!(
                matches!(finished, Err(ClientError::Integrity { .. })),
                "{finished:?}"
            ),
        }
        // Either way the exchange is complete.
        assert!(session.is_usable());
    }
}

#[test]
fn a_resumed_download_must_be_hashed_by_the_caller() {
    let version = FileVersion {
        size: 5,
        modified_ns: 1,
    };
    let mut session = Script::welcome()
        .msg(&Response::GetReady {
            size: 5,
            offset: 2,
            modified_ns: 1,
        })
        .raw(b"cde")
        .msg(&Trailer {
            hash: hash(b"abcde"),
        })
        .session();
    let mut download = session.start_get_from("f", 2, version).unwrap();
    let mut buf = [0u8; 8];
    let err = download.read(&mut buf).unwrap_err();
    assert!(matches!(err, ClientError::Misuse(_)), "{err:?}");
    let mut got = Vec::new();
    while download.remaining() > 0 {
        let n = download.read_unhashed(&mut buf).unwrap();
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, b"cde");
    assert_eq!(
        download.finish_with_hash(hash(b"abcde")).unwrap(),
        hash(b"abcde")
    );
}

/// A directory holding `out.part` with `held`, described as a partial
/// download of `name` at `version`.
fn partial_download(held: &[u8], name: &str, version: FileVersion) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("out.part"), held).unwrap();
    fs::write(
        dir.path().join("out.part.meta"),
        format!(
            "framekit partial download 1\nname: {name}\nsize: {}\nmodified_ns: {}\n",
            version.size, version.modified_ns
        ),
    )
    .unwrap();
    let path = dir.path().join("out");
    (dir, path)
}

fn get_notes<S: Read + Write>(
    session: &mut Session<S>,
    name: &str,
    staging: Staging,
) -> (Result<files::Saved, ClientError>, Vec<String>) {
    let mut notes = Vec::new();
    let result = files::get_file(session, name, staging, &Meter::hidden(), &mut |n| {
        notes.push(n.to_owned())
    });
    (result, notes)
}

#[test]
fn get_resumes_after_the_partial_file_and_verifies_the_whole() {
    for (len, held) in [(3 * CHUNK + 5, 2 * CHUNK + 1), (100_000, 60_000)] {
        let content = data(len);
        let version = FileVersion {
            size: len as u64,
            modified_ns: 77,
        };
        let (dir, path) = partial_download(&content[..held], "r/x", version);
        let staging = Staging::open(&path, "r/x", options(false)).unwrap();
        assert_eq!(staging.resumable(), held as u64);
        let mut session = Script::welcome()
            .msg(&Response::GetReady {
                size: len as u64,
                offset: held as u64,
                modified_ns: 77,
            })
            .raw(&content[held..])
            .msg(&Trailer {
                hash: hash(&content),
            })
            .session();
        let (saved, notes) = get_notes(&mut session, "r/x", staging);
        let saved = saved.unwrap();
        assert_eq!(saved.received, (len - held) as u64);
        assert_eq!(
            notes,
            [format!(
                "resuming the download of r/x at byte {held} of {len}"
            )]
        );
        assert!(fs::read(&path).unwrap() == content, "content differs");
        assert_eq!(listing(dir.path()), ["out"]);
        let mut sent = Sent::of(session);
        sent.hello();
        assert_eq!(
            sent.request(),
            Request::Get(Get {
                name: "r/x".into(),
                offset: held as u64,
                if_version: Some(version),
            })
        );
    }
}

#[test]
fn get_starts_over_when_the_remote_file_changed() {
    let old = data(200_000);
    let new = data(150_000);
    let version = FileVersion {
        size: 200_000,
        modified_ns: 1,
    };
    let (dir, path) = partial_download(&old[..100_000], "x", version);
    let staging = Staging::open(&path, "x", options(false)).unwrap();
    let mut session = Script::welcome()
        .msg(&Response::GetReady {
            size: 150_000,
            offset: 0,
            modified_ns: 2,
        })
        .raw(&new)
        .msg(&Trailer { hash: hash(&new) })
        .session();
    let (saved, notes) = get_notes(&mut session, "x", staging);
    assert_eq!(saved.unwrap().received, 150_000);
    assert_eq!(
        notes,
        ["x changed on the server since the partial download: starting over"]
    );
    assert!(fs::read(&path).unwrap() == new);
    assert_eq!(listing(dir.path()), ["out"]);
}

#[test]
fn a_resumed_get_that_does_not_verify_is_downloaded_again_whole() {
    let content = data(200_000);
    let mut other = content.clone();
    other[10] ^= 1;
    let version = FileVersion {
        size: 200_000,
        modified_ns: 5,
    };
    // The partial file's first part is not the server's.
    let (dir, path) = partial_download(&other[..100_000], "x", version);
    let staging = Staging::open(&path, "x", options(false)).unwrap();
    let mut session = Script::welcome()
        .msg(&Response::GetReady {
            size: 200_000,
            offset: 100_000,
            modified_ns: 5,
        })
        .raw(&content[100_000..])
        .msg(&Trailer {
            hash: hash(&content),
        })
        .download(&content, hash(&content))
        .session();
    let (saved, notes) = get_notes(&mut session, "x", staging);
    saved.unwrap();
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(notes[1].contains("did not verify"), "{notes:?}");
    assert!(fs::read(&path).unwrap() == content);
    assert_eq!(listing(dir.path()), ["out"]);
    let mut sent = Sent::of(session);
    sent.hello();
    assert!(matches!(sent.request(), Request::Get(g) if g.offset == 100_000));
    assert!(matches!(sent.request(), Request::Get(g) if g.offset == 0 && g.if_version.is_none()));
}

#[test]
fn a_partial_file_of_another_name_or_without_resume_is_started_over() {
    let content = data(100_000);
    let version = FileVersion {
        size: 100_000,
        modified_ns: 5,
    };
    let (_dir, path) = partial_download(&content[..50_000], "x", version);
    let staging = Staging::open(&path, "other", options(false)).unwrap();
    assert_eq!(staging.resumable(), 0);
    drop(staging);
    // Emptied, and removed since it held nothing.
    assert!(!path.with_file_name("out.part").exists());

    let (_dir, path) = partial_download(&content[..50_000], "x", version);
    let no_resume = Options {
        force: false,
        resume: false,
    };
    let staging = Staging::open(&path, "x", no_resume).unwrap();
    assert_eq!(staging.resumable(), 0);
    let mut session = Script::welcome()
        .download(&content, hash(&content))
        .session();
    get(&mut session, "x", staging).unwrap();
    let mut sent = Sent::of(session);
    sent.hello();
    assert!(matches!(sent.request(), Request::Get(g) if g.offset == 0 && g.if_version.is_none()));
}

#[test]
fn a_part_file_that_is_not_a_described_download_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out");
    fs::write(dir.path().join("out.part"), b"somebody's file").unwrap();
    let err = Staging::open(&path, "x", options(false)).unwrap_err();
    assert!(
        matches!(&err, ClientError::DestinationExists { path } if path.ends_with("out.part")),
        "{err:?}"
    );
    assert_eq!(
        fs::read(dir.path().join("out.part")).unwrap(),
        b"somebody's file"
    );
    // An empty one left by a download killed before its first byte is
    // reused.
    fs::write(dir.path().join("out.part"), b"").unwrap();
    Staging::open(&path, "x", options(false)).unwrap();
    // With --force, it is replaced.
    fs::write(dir.path().join("out.part"), b"somebody's file").unwrap();
    let staging = Staging::open(&path, "x", options(true)).unwrap();
    assert_eq!(staging.resumable(), 0);
}

#[test]
fn two_downloads_to_one_destination_cannot_run_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out");
    let first = Staging::open(&path, "x", options(false)).unwrap();
    let err = Staging::open(&path, "x", options(false)).unwrap_err();
    assert!(err.report().contains("another download"), "{err:?}");
    drop(first);
    Staging::open(&path, "x", options(false)).unwrap();
}

#[cfg(unix)]
#[test]
fn a_part_file_is_never_written_through_a_link() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target");
    fs::write(&target, b"precious").unwrap();
    std::os::unix::fs::symlink(&target, dir.path().join("out.part")).unwrap();
    let err = Staging::open(&dir.path().join("out"), "x", options(true)).unwrap_err();
    assert_eq!(err.exit(), Exit::LocalFile);
    assert_eq!(fs::read(&target).unwrap(), b"precious");
}
