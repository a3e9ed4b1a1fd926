//! Uploads: put, eager puts, resumed puts, small files pipelined.

use super::*;

/// Uploads without a resume key.
fn put<S: Read + Write>(
    session: &mut Session<S>,
    source: Source,
    name: &str,
    force: bool,
) -> Result<PutDone, ClientError> {
    let options = Options {
        force,
        resume: false,
    };
    files::put_file(
        session,
        &source,
        name,
        options,
        &Meter::hidden(),
        &mut |_| {},
    )
    .map(|uploaded| uploaded.done)
}

fn source_file(dir: &Path, name: &str, content: &[u8]) -> Source {
    let path = dir.join(name);
    fs::write(&path, content).unwrap();
    Source::open(&path).unwrap()
}

fn put_done(content: &[u8]) -> Response {
    Response::PutDone {
        size: content.len() as u64,
        hash: hash(content),
    }
}

#[test]
fn put_sends_the_request_exactly_size_bytes_then_the_trailer() {
    let dir = tempfile::tempdir().unwrap();
    let content = data(2 * CHUNK + 12345);
    let source = source_file(dir.path(), "f", &content);
    let mut session = Script::welcome()
        .msg(&Response::PutReady { offset: 0 })
        .msg(&put_done(&content))
        .session();
    let done = put(&mut session, source, "dir/f", false).unwrap();
    assert_eq!(done.size, content.len() as u64);
    assert_eq!(done.hash, hash(&content));
    assert!(session.is_usable());

    let mut sent = Sent::of(session);
    sent.hello();
    assert_eq!(
        sent.request(),
        Request::Put(Put {
            name: "dir/f".into(),
            size: content.len() as u64,
            overwrite: false,
            resume_key: None,
        })
    );
    assert!(sent.raw(content.len()) == content, "body differs");
    assert_eq!(
        sent.msg::<Trailer>(),
        Trailer {
            hash: hash(&content)
        }
    );
    assert!(sent.rest().is_empty());
}

#[test]
fn small_put_sends_request_body_and_trailer_at_once() {
    let dir = tempfile::tempdir().unwrap();
    for content in [
        Vec::new(),
        data(5000),
        data(usize::try_from(files::SMALL_FILE).unwrap()),
    ] {
        let source = source_file(dir.path(), "small", &content);
        // No go-ahead: the answer to the whole upload is all there is.
        let mut session = Script::welcome().msg(&put_done(&content)).session();
        let done = put(&mut session, source, "small", true).unwrap();
        assert_eq!(done.hash, hash(&content));
        assert!(session.is_usable());
        let mut sent = Sent::of(session);
        sent.hello();
        assert_eq!(
            sent.request(),
            Request::PutEager(PutEager {
                name: "small".into(),
                size: content.len() as u64,
                overwrite: true,
            })
        );
        assert!(sent.raw(content.len()) == content, "body differs");
        assert_eq!(sent.msg::<Trailer>().hash, hash(&content));
        assert!(sent.rest().is_empty());
    }
}

#[test]
fn refused_small_put_keeps_the_session_usable() {
    let dir = tempfile::tempdir().unwrap();
    let source = source_file(dir.path(), "f", b"content");
    let mut session = Script::welcome()
        .error(ErrorCode::AlreadyExists, "f exists")
        .msg(&put_done(b"content"))
        .session();
    let err = put(&mut session, source, "f", false).unwrap_err();
    assert_eq!(refused_code(&err), ErrorCode::AlreadyExists);
    assert!(session.is_usable());
    let source = source_file(dir.path(), "f", b"content");
    put(&mut session, source, "f", true).unwrap();
}

#[test]
fn a_small_put_refused_with_a_closing_code_breaks_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let source = source_file(dir.path(), "f", b"content");
    let mut session = Script::welcome()
        .error(ErrorCode::BadRequest, "unknown request")
        .session();
    let err = put(&mut session, source, "f", false).unwrap_err();
    assert_eq!(refused_code(&err), ErrorCode::BadRequest);
    assert!(session.is_broken());
    assert!(matches!(session.stat("f"), Err(ClientError::Unusable)));
}

#[test]
fn refused_put_sends_no_body_and_the_session_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let source = source_file(dir.path(), "f", &data(CHUNK));
    let entry = Entry {
        name: "f".into(),
        size: 3,
        modified_ns: 0,
    };
    let mut session = Script::welcome()
        .error(ErrorCode::AlreadyExists, "f exists")
        .msg(&Response::Entry(entry.clone()))
        .session();
    let err = put(&mut session, source, "f", false).unwrap_err();
    assert_eq!(refused_code(&err), ErrorCode::AlreadyExists);
    assert_eq!(err.exit(), Exit::AlreadyExists);
    assert!(session.is_usable());
    assert_eq!(session.stat("f").unwrap(), entry);

    let mut sent = Sent::of(session);
    sent.hello();
    assert!(matches!(sent.request(), Request::Put(_)));
    assert!(matches!(sent.request(), Request::Stat(_)));
    assert!(sent.rest().is_empty());
}

/// A small file (an eager upload) and a large one (a put with a go-ahead).
fn small_and_large() -> [Vec<u8>; 2] {
    [b"content".to_vec(), data(CHUNK)]
}

/// The script of a server that accepts an upload of `content`, up to the
/// point where the body has been sent.
fn accepting(content: &[u8]) -> Script {
    match content.len() as u64 <= files::SMALL_FILE {
        true => Script::welcome(),
        false => Script::welcome().msg(&Response::PutReady { offset: 0 }),
    }
}

#[test]
fn put_confirmed_with_another_hash_is_an_integrity_error() {
    let dir = tempfile::tempdir().unwrap();
    for content in small_and_large() {
        let source = source_file(dir.path(), "f", &content);
        let mut altered = content.clone();
        altered[0] ^= 1;
        let mut session = accepting(&content)
            .msg(&Response::PutDone {
                size: content.len() as u64,
                hash: hash(&altered),
            })
            .session();
        let err = put(&mut session, source, "f", false).unwrap_err();
        assert!(matches!(err, ClientError::Integrity { .. }), "{err:?}");
        assert_eq!(err.exit(), Exit::Integrity);
    }
}

#[test]
fn put_confirmed_with_another_size_is_a_protocol_error() {
    let dir = tempfile::tempdir().unwrap();
    for content in small_and_large() {
        let source = source_file(dir.path(), "f", &content);
        let mut session = accepting(&content)
            .msg(&Response::PutDone {
                size: content.len() as u64 - 1,
                hash: hash(&content),
            })
            .session();
        let err = put(&mut session, source, "f", false).unwrap_err();
        assert!(
            matches!(err, ClientError::Protocol(ProtocolError::StoredSize { .. })),
            "{err:?}"
        );
        assert_eq!(err.exit(), Exit::Refused);
    }
}

#[test]
fn put_rejected_by_the_servers_check_keeps_its_code() {
    let dir = tempfile::tempdir().unwrap();
    for content in small_and_large() {
        let source = source_file(dir.path(), "f", &content);
        let mut session = accepting(&content)
            .error(ErrorCode::IntegrityMismatch, "hash differs")
            .session();
        let err = put(&mut session, source, "f", false).unwrap_err();
        assert_eq!(refused_code(&err), ErrorCode::IntegrityMismatch);
        assert_eq!(err.exit(), Exit::Integrity);
        assert!(session.is_usable());
    }
}

#[test]
fn put_ready_at_an_offset_not_asked_for_is_a_protocol_error() {
    let mut session = Script::welcome()
        .msg(&Response::PutReady { offset: 3 })
        .session();
    let err = session.start_put("f", 10, false).err().unwrap();
    assert!(
        matches!(err, ClientError::Protocol(ProtocolError::Offset { .. })),
        "{err:?}"
    );
    assert!(!session.is_usable());
}

/// Puts a file that was `announced` bytes long when opened and is `now`
/// bytes long when sent; returns the error and the body bytes sent.
fn put_changed_file(announced: usize, now: usize) -> (ClientError, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    fs::write(&path, data(announced)).unwrap();
    let source = Source::open(&path).unwrap();
    fs::write(&path, data(now)).unwrap();
    let mut session = accepting(&data(announced)).session();
    let err = put(&mut session, source, "f", false).unwrap_err();
    assert_eq!(err.exit(), Exit::LocalFile);
    let mut sent = Sent::of(session);
    sent.hello();
    if announced as u64 <= files::SMALL_FILE {
        // Read whole before anything is sent: nothing went out.
        return (err, sent.rest());
    }
    sent.request();
    // Never a trailer: the server publishes nothing.
    (err, sent.rest())
}

#[test]
fn a_file_that_shrinks_while_sent_fails_before_the_trailer() {
    // A small file is read whole first: nothing of it is sent.
    let (err, rest) = put_changed_file(100, 60);
    assert!(
        matches!(
            err,
            ClientError::FileChanged {
                announced: 100,
                read: Some(60),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(rest.is_empty());
    // A large one is streamed: what could be read went out.
    let (err, rest) = put_changed_file(200_000, 150_000);
    assert!(
        matches!(
            err,
            ClientError::FileChanged {
                announced: 200_000,
                read: Some(150_000),
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(rest, data(150_000));
}

#[test]
fn a_file_that_grows_while_sent_fails_before_the_trailer() {
    let (err, rest) = put_changed_file(100, 101);
    assert!(
        matches!(
            err,
            ClientError::FileChanged {
                announced: 100,
                read: None,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(rest.is_empty());
    let (err, rest) = put_changed_file(200_000, 200_001);
    assert!(
        matches!(
            err,
            ClientError::FileChanged {
                announced: 200_000,
                read: None,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(rest, data(200_000));
}

#[test]
fn a_server_that_stops_reading_the_body_can_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let source = source_file(dir.path(), "f", &data(3 * CHUNK));
    let mut peer = Script::welcome()
        .msg(&Response::PutReady { offset: 0 })
        .error(ErrorCode::NoSpace, "disk full")
        .peer();
    peer.write_limit = Some(CHUNK);
    let mut session = Session::handshake(peer, None).unwrap();
    let err = put(&mut session, source, "f", false).unwrap_err();
    assert_eq!(refused_code(&err), ErrorCode::NoSpace);
    assert_eq!(err.exit(), Exit::Refused);
    assert!(!session.is_usable());
}

#[test]
fn a_connection_lost_mid_body_is_a_connection_error() {
    let dir = tempfile::tempdir().unwrap();
    let source = source_file(dir.path(), "f", &data(3 * CHUNK));
    let mut peer = Script::welcome()
        .msg(&Response::PutReady { offset: 0 })
        .peer();
    peer.write_limit = Some(CHUNK);
    let mut session = Session::handshake(peer, None).unwrap();
    let err = put(&mut session, source, "f", false).unwrap_err();
    assert!(matches!(err, ClientError::Io(_)), "{err:?}");
    assert_eq!(err.exit(), Exit::Connection);
}

#[test]
fn an_upload_takes_exactly_its_size() {
    let mut session = Script::welcome()
        .msg(&Response::PutReady { offset: 0 })
        .session();
    let mut upload = session.start_put("f", 4, false).unwrap();
    let err = upload.send(b"12345").unwrap_err();
    assert!(
        matches!(err, ClientError::BodyOverrun { size: 4, extra: 1 }),
        "{err:?}"
    );
    upload.send(b"123").unwrap();
    assert_eq!(upload.remaining(), 1);
    let err = upload.finish().unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::BodyIncomplete {
                transferred: 3,
                expected: 4
            }
        ),
        "{err:?}"
    );
    // An unfinished upload leaves the connection unusable.
    assert!(matches!(
        session.stat("f").unwrap_err(),
        ClientError::Unusable
    ));
    let mut sent = Sent::of(session);
    sent.hello();
    sent.request();
    assert_eq!(sent.rest(), b"123");
}

#[test]
fn an_upload_hashed_by_the_caller_sends_the_callers_hash() {
    let mut session = Script::welcome()
        .msg(&Response::PutReady { offset: 0 })
        .msg(&put_done(b"abc"))
        .session();
    let mut upload = session.start_put("f", 3, false).unwrap();
    upload.send_unhashed(b"ab").unwrap();
    // The upload no longer knows the hash of what it sent.
    let err = upload.send(b"c").unwrap_err();
    assert!(matches!(err, ClientError::Misuse(_)), "{err:?}");
    upload.send_unhashed(b"c").unwrap();
    let done = upload.finish_with_hash(hash(b"abc")).unwrap();
    assert_eq!(done.hash, hash(b"abc"));
    assert!(session.is_usable());
    let mut sent = Sent::of(session);
    sent.hello();
    sent.request();
    assert_eq!(sent.raw(3), b"abc");
    assert_eq!(sent.msg::<Trailer>().hash, hash(b"abc"));
    assert!(sent.rest().is_empty());
}

#[test]
fn a_resumed_upload_must_be_hashed_by_the_caller() {
    let mut session = Script::welcome()
        .msg(&Response::PutReady { offset: 2 })
        .session();
    let mut upload = session
        .start_put_with_key("f", 5, false, Some([7; 32]))
        .unwrap();
    assert_eq!((upload.offset(), upload.remaining()), (2, 3));
    let err = upload.send(b"cde").unwrap_err();
    assert!(matches!(err, ClientError::Misuse(_)), "{err:?}");
    upload.send_unhashed(b"cde").unwrap();
    let err = upload.finish().unwrap_err();
    assert!(matches!(err, ClientError::Misuse(_)), "{err:?}");
    // Nothing but the request and the body went out: no trailer.
    let mut sent = Sent::of(session);
    sent.hello();
    sent.request();
    assert_eq!(sent.rest(), b"cde");
}

#[test]
fn remote_names_default_to_the_base_name_and_are_checked() {
    let path = Path::new("some/dir/file name.txt");
    assert_eq!(files::remote_name(path, None).unwrap(), "file name.txt");
    assert_eq!(files::remote_name(path, Some("a/b")).unwrap(), "a/b");
    for bad in ["../x", "/abs", "a//b", "", ".framekit/x", "a\nb"] {
        let err = files::remote_name(path, Some(bad)).unwrap_err();
        assert!(matches!(err, ClientError::InvalidName { .. }), "{bad:?}");
        assert_eq!(err.exit(), Exit::Refused);
    }
    let err = files::remote_name(Path::new("/"), None).unwrap_err();
    assert!(matches!(err, ClientError::NoRemoteName { .. }), "{err:?}");
}

#[cfg(unix)]
#[test]
fn a_non_utf8_file_name_needs_an_explicit_name() {
    use std::os::unix::ffi::OsStrExt;
    let path = Path::new(std::ffi::OsStr::from_bytes(b"dir/\xff.bin"));
    let err = files::remote_name(path, None).unwrap_err();
    assert!(matches!(err, ClientError::NoRemoteName { .. }), "{err:?}");
    assert_eq!(files::remote_name(path, Some("ok.bin")).unwrap(), "ok.bin");
}

#[test]
fn only_readable_regular_files_can_be_sent() {
    let dir = tempfile::tempdir().unwrap();
    for path in [dir.path().to_owned(), dir.path().join("missing")] {
        let err = Source::open(&path).unwrap_err();
        assert!(matches!(err, ClientError::Local { .. }), "{err:?}");
        assert_eq!(err.exit(), Exit::LocalFile);
    }
}

#[test]
fn invalid_names_are_refused_before_anything_is_sent() {
    let mut session = Script::welcome().session();
    for name in ["", "/etc/passwd", "a/../b", "a\\b", "x\u{1b}"] {
        assert!(matches!(
            session.start_put(name, 1, false).err().unwrap(),
            ClientError::InvalidName { .. }
        ));
        assert!(matches!(
            session.start_get(name).err().unwrap(),
            ClientError::InvalidName { .. }
        ));
        assert!(matches!(
            session.stat(name).unwrap_err(),
            ClientError::InvalidName { .. }
        ));
        assert!(matches!(
            session.delete(name).unwrap_err(),
            ClientError::InvalidName { .. }
        ));
    }
    assert!(session.is_usable());
    let mut sent = Sent::of(session);
    sent.hello();
    assert!(sent.rest().is_empty());
}

#[test]
fn put_sends_a_resume_key_and_only_the_rest_when_the_server_has_a_part() {
    let dir = tempfile::tempdir().unwrap();
    let content = data(2 * CHUNK + 999);
    let source = source_file(dir.path(), "f", &content);
    let key = source.resume_key("d/f").unwrap();
    let offset = CHUNK + 7;
    let mut session = Script::welcome()
        .msg(&Response::PutReady {
            offset: offset as u64,
        })
        .msg(&put_done(&content))
        .session();
    let mut notes = Vec::new();
    let resume = Options {
        force: false,
        resume: true,
    };
    let uploaded = files::put_file(
        &mut session,
        &source,
        "d/f",
        resume,
        &Meter::hidden(),
        &mut |n| notes.push(n.to_owned()),
    )
    .unwrap();
    assert_eq!(uploaded.sent, (content.len() - offset) as u64);
    assert_eq!(
        notes,
        [format!(
            "resuming the upload of d/f at byte {offset} of {}",
            content.len()
        )]
    );
    let mut sent = Sent::of(session);
    sent.hello();
    assert_eq!(
        sent.request(),
        Request::Put(Put {
            name: "d/f".into(),
            size: content.len() as u64,
            overwrite: false,
            resume_key: Some(key),
        })
    );
    assert!(sent.raw(content.len() - offset) == content[offset..]);
    assert_eq!(
        sent.msg::<Trailer>(),
        Trailer {
            hash: hash(&content)
        }
    );
}

#[test]
fn a_resumed_put_that_does_not_verify_is_sent_again_whole() {
    let dir = tempfile::tempdir().unwrap();
    let content = data(300_000);
    let source = source_file(dir.path(), "f", &content);
    let mut session = Script::welcome()
        .msg(&Response::PutReady { offset: 100_000 })
        .error(ErrorCode::IntegrityMismatch, "no")
        .msg(&Response::PutReady { offset: 0 })
        .msg(&put_done(&content))
        .session();
    let resume = Options {
        force: true,
        resume: true,
    };
    files::put_file(
        &mut session,
        &source,
        "f",
        resume,
        &Meter::hidden(),
        &mut |_| {},
    )
    .unwrap();
    let mut sent = Sent::of(session);
    sent.hello();
    assert!(matches!(sent.request(), Request::Put(p) if p.resume_key.is_some()));
    assert!(sent.raw(200_000) == content[100_000..]);
    sent.msg::<Trailer>();
    assert!(matches!(sent.request(), Request::Put(_)));
    assert!(sent.raw(300_000) == content);
}

#[test]
fn small_files_and_no_resume_send_no_key() {
    let dir = tempfile::tempdir().unwrap();
    let small = source_file(dir.path(), "s", &data(1000));
    let large = source_file(dir.path(), "l", &data(100_000));
    let mut session = Script::welcome()
        .msg(&put_done(&data(1000)))
        .msg(&Response::PutReady { offset: 0 })
        .msg(&put_done(&data(100_000)))
        .session();
    let resume = options(false);
    files::put_file(
        &mut session,
        &small,
        "s",
        resume,
        &Meter::hidden(),
        &mut |_| {},
    )
    .unwrap();
    put(&mut session, large, "l", false).unwrap();
    let mut sent = Sent::of(session);
    sent.hello();
    assert!(matches!(sent.request(), Request::PutEager(_)));
    sent.raw(1000);
    sent.msg::<Trailer>();
    assert!(matches!(sent.request(), Request::Put(p) if p.resume_key.is_none()));
}

#[test]
fn resume_keys_change_with_the_name_and_the_content() {
    let dir = tempfile::tempdir().unwrap();
    let content = data(500_000);
    let a = source_file(dir.path(), "a", &content);
    let mut changed_end = content.clone();
    *changed_end.last_mut().unwrap() ^= 1;
    let b = source_file(dir.path(), "b", &changed_end);
    let key = a.resume_key("n").unwrap();
    assert_eq!(key, a.resume_key("n").unwrap());
    assert_ne!(key, a.resume_key("m").unwrap());
    assert_ne!(key, b.resume_key("n").unwrap());
}

/// What [`files::put_small_files`] reported for one file: its index and
/// the outcome.
type SmallReport = (usize, Result<PutDone, ClientError>);

/// Runs [`files::put_small_files`] over `session` for files named `f0`,
/// `f1`... in `dir`; returns how many it reported and what, in order.
fn put_small(
    session: &mut Session<FakePeer>,
    dir: &Path,
    count: usize,
) -> (usize, Vec<SmallReport>) {
    let paths: Vec<PathBuf> = (0..count).map(|i| dir.join(format!("f{i}"))).collect();
    let names: Vec<String> = (0..count).map(|i| format!("r/f{i}")).collect();
    let small: Vec<files::SmallFile<'_>> = paths
        .iter()
        .zip(&names)
        .map(|(path, remote)| files::SmallFile { path, remote })
        .collect();
    let mut reports = Vec::new();
    let reported = files::put_small_files(
        session,
        &small,
        options(false),
        &Meter::hidden(),
        &mut |i, result| reports.push((i, result.map(|uploaded| uploaded.done))),
    );
    (reported, reports)
}

#[test]
fn small_files_are_sent_ahead_of_their_answers_and_reported_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let contents: Vec<Vec<u8>> = (0..5).map(|i| data(100 * i)).collect();
    for (i, content) in contents.iter().enumerate() {
        fs::write(dir.path().join(format!("f{i}")), content).unwrap();
    }
    let mut session = Script::welcome()
        .msg(&put_done(&contents[0]))
        .error(ErrorCode::AlreadyExists, "taken")
        .msg(&put_done(&contents[2]))
        .msg(&put_done(&contents[3]))
        .msg(&put_done(&contents[4]))
        .session();
    let (reported, reports) = put_small(&mut session, dir.path(), 5);
    assert_eq!(reported, 5);
    let order: Vec<usize> = reports.iter().map(|(i, _)| *i).collect();
    assert_eq!(order, [0, 1, 2, 3, 4]);
    assert_eq!(
        refused_code(reports[1].1.as_ref().unwrap_err()),
        ErrorCode::AlreadyExists
    );
    for i in [0, 2, 3, 4] {
        assert_eq!(reports[i].1.as_ref().unwrap().hash, hash(&contents[i]));
    }
    assert!(session.is_usable());

    let mut sent = Sent::of(session);
    sent.hello();
    for (i, content) in contents.iter().enumerate() {
        assert_eq!(
            sent.request(),
            Request::PutEager(PutEager {
                name: format!("r/f{i}"),
                size: content.len() as u64,
                overwrite: false,
            })
        );
        assert!(sent.raw(content.len()) == *content);
        assert_eq!(sent.msg::<Trailer>().hash, hash(content));
    }
    assert!(sent.rest().is_empty());
}

#[test]
fn small_files_stop_at_a_broken_connection_and_leave_the_rest_to_retry() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..5 {
        fs::write(dir.path().join(format!("f{i}")), data(10 + i)).unwrap();
    }
    // One answer, then the server is gone.
    let mut session = Script::welcome().msg(&put_done(&data(10))).session();
    let (reported, reports) = put_small(&mut session, dir.path(), 5);
    assert_eq!(reported, 2);
    assert_eq!(reports.len(), 2);
    assert!(reports[0].1.is_ok());
    assert!(
        matches!(reports[1], (1, Err(ClientError::Closed))),
        "{:?}",
        reports[1]
    );
    assert!(session.is_broken());
}

#[test]
fn small_files_report_a_local_failure_in_its_place() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("f0"), data(10)).unwrap();
    // f1 is missing.
    fs::write(dir.path().join("f2"), data(30)).unwrap();
    let mut session = Script::welcome()
        .msg(&put_done(&data(10)))
        .msg(&put_done(&data(30)))
        .session();
    let (reported, reports) = put_small(&mut session, dir.path(), 3);
    assert_eq!(reported, 3);
    let order: Vec<usize> = reports.iter().map(|(i, _)| *i).collect();
    assert_eq!(order, [0, 1, 2]);
    assert!(matches!(reports[1].1, Err(ClientError::Local { .. })));
    assert!(reports[0].1.is_ok() && reports[2].1.is_ok());
}

#[test]
fn a_small_file_grown_large_goes_as_an_ordinary_put_after_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let large = data(CHUNK);
    fs::write(dir.path().join("f0"), data(10)).unwrap();
    fs::write(dir.path().join("f1"), &large).unwrap();
    let mut session = Script::welcome()
        .msg(&put_done(&data(10)))
        .msg(&Response::PutReady { offset: 0 })
        .msg(&put_done(&large))
        .session();
    let (reported, reports) = put_small(&mut session, dir.path(), 2);
    assert_eq!(reported, 2);
    assert!(reports.iter().all(|(_, result)| result.is_ok()));
    let mut sent = Sent::of(session);
    sent.hello();
    assert!(matches!(sent.request(), Request::PutEager(_)));
    sent.raw(10);
    sent.msg::<Trailer>();
    assert!(matches!(sent.request(), Request::Put(p) if p.size == CHUNK as u64));
}

#[test]
fn a_stream_is_sent_in_chunks_ended_by_an_empty_one_then_the_trailer() {
    let body = data(3 * 1024 * 1024 + 5);
    let mut session = Script::welcome()
        .msg(&Response::PutReady { offset: 0 })
        .msg(&put_done(&body))
        .session();
    let mut upload = session.start_put_stream("s", false).unwrap();
    upload.send(&body[..10]).unwrap();
    upload.send(&[]).unwrap();
    upload.send(&body[10..]).unwrap();
    assert_eq!(upload.sent(), body.len() as u64);
    let done = upload.finish().unwrap();
    assert_eq!(done.hash, hash(&body));
    assert!(session.is_usable());

    let mut sent = Sent::of(session);
    sent.hello();
    assert_eq!(
        sent.request(),
        Request::PutStream(framekit_transfer::PutStream {
            name: "s".into(),
            overwrite: false
        })
    );
    let mut received = Vec::new();
    let mut lengths = Vec::new();
    loop {
        let len = u32::from_be_bytes(sent.raw(4).try_into().unwrap());
        lengths.push(len);
        if len == 0 {
            break;
        }
        assert!(len <= framekit_transfer::MAX_CHUNK_LEN);
        received.extend_from_slice(&sent.raw(len as usize));
    }
    assert_eq!(received, body);
    assert_eq!(lengths, [10, 1 << 20, 1 << 20, (1 << 20) - 5, 0]);
    assert_eq!(sent.msg::<Trailer>().hash, hash(&body));
    assert!(sent.rest().is_empty());
}

#[test]
fn a_refused_stream_sends_no_body() {
    let mut session = Script::welcome()
        .error(ErrorCode::AlreadyExists, "exists")
        .session();
    let err = session.start_put_stream("s", false).unwrap_err();
    assert_eq!(refused_code(&err), ErrorCode::AlreadyExists);
    assert!(session.is_usable());
    let mut sent = Sent::of(session);
    sent.hello();
    assert!(matches!(sent.request(), Request::PutStream(_)));
    assert!(sent.rest().is_empty());
}
