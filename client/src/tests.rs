//! The session and file operations against a scripted in-memory server.
//!
//! A [`FakePeer`] plays back prepared server bytes and records what the
//! client sends, so each test states exactly what the server says and
//! checks exactly what the client wrote.

use crate::error::{ClientError, Exit, Operation, ProtocolError};
use crate::files::{self, Source, Staging};

/// A size larger than one body buffer, so bodies span several.
const CHUNK: usize = 1 << 20;
use crate::session::Session;
use indicatif::ProgressBar;
use proto::blocking::read_message;
use proto::message::to_frame;
use proto::transfer::{
    Entry, ErrorCode, ErrorReply, Get, Hash, Hello, List, Put, Request, Response, Stat, Trailer,
    VERSION, Welcome, frame_config,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fs;
use std::io::{self, Cursor, Read, Write};
use std::path::{Path, PathBuf};

/// A stream whose reads return prepared bytes and whose writes are kept.
#[derive(Debug)]
struct FakePeer {
    input: Cursor<Vec<u8>>,
    output: Vec<u8>,
    /// The most bytes one read returns.
    max_read: usize,
    /// Writes fail with a broken pipe once this many bytes are written.
    write_limit: Option<usize>,
}

impl Read for FakePeer {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let len = buf.len().min(self.max_read);
        self.input.read(&mut buf[..len])
    }
}

impl Write for FakePeer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = match self.write_limit {
            Some(limit) if self.output.len() >= limit => {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            Some(limit) => limit - self.output.len(),
            None => usize::MAX,
        };
        let n = buf.len().min(room);
        self.output.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What the server says, in order.
#[derive(Debug, Default)]
struct Script(Vec<u8>);

impl Script {
    /// A script that starts with a successful handshake.
    fn welcome() -> Self {
        Script::default().msg(&Response::Welcome(Welcome {
            version: VERSION,
            max_file_size: 1 << 40,
            max_message_len: 65536,
            idle_timeout_ms: 30_000,
            read_only: false,
        }))
    }

    fn msg(mut self, msg: &impl Serialize) -> Self {
        self.0
            .extend_from_slice(&to_frame(&frame_config(), msg).unwrap());
        self
    }

    fn error(self, code: ErrorCode, message: &str) -> Self {
        self.msg(&Response::Error(ErrorReply::new(code, message)))
    }

    fn raw(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }

    /// A complete download of `body`, with the trailer `hash`.
    fn download(self, body: &[u8], hash: Hash) -> Self {
        self.msg(&Response::GetReady {
            size: body.len() as u64,
            offset: 0,
            modified_ns: 1,
        })
        .raw(body)
        .msg(&Trailer { hash })
    }

    fn peer(self) -> FakePeer {
        FakePeer {
            input: Cursor::new(self.0),
            output: Vec::new(),
            max_read: usize::MAX,
            write_limit: None,
        }
    }

    /// A session over this script, after the handshake.
    fn session(self) -> Session<FakePeer> {
        Session::handshake(self.peer(), None).unwrap()
    }
}

/// What the client sent, read back in order.
struct Sent(Cursor<Vec<u8>>);

impl Sent {
    fn of(session: Session<FakePeer>) -> Self {
        Sent(Cursor::new(session.into_inner().output))
    }

    fn msg<T: DeserializeOwned>(&mut self) -> T {
        read_message(&mut self.0, &frame_config()).unwrap().unwrap()
    }

    fn request(&mut self) -> Request {
        self.msg()
    }

    /// Reads the hello and checks it.
    fn hello(&mut self) -> &mut Self {
        assert_eq!(self.msg::<Hello>(), Hello::new(None));
        self
    }

    fn raw(&mut self, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len];
        self.0.read_exact(&mut buf).unwrap();
        buf
    }

    fn rest(&mut self) -> Vec<u8> {
        let mut rest = Vec::new();
        self.0.read_to_end(&mut rest).unwrap();
        rest
    }
}

/// Deterministic pseudo-random bytes.
fn data(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

fn hash(bytes: &[u8]) -> Hash {
    blake3::hash(bytes).into()
}

/// The names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn bar() -> ProgressBar {
    ProgressBar::hidden()
}

fn refused_code(err: &ClientError) -> ErrorCode {
    match err {
        ClientError::Refused { reply, .. } => reply.code,
        other => panic!("not a refusal: {other:?}"),
    }
}

// Handshake.

#[test]
fn handshake_sends_the_hello_and_keeps_the_welcome() {
    let session = Session::handshake(Script::welcome().peer(), Some("tok".into())).unwrap();
    assert_eq!(session.welcome().idle_timeout_ms, 30_000);
    assert!(session.is_usable());
    let mut sent = Sent::of(session);
    assert_eq!(sent.msg::<Hello>(), Hello::new(Some("tok".into())));
    assert!(sent.rest().is_empty());
}

#[test]
fn handshake_error_reply_is_a_refusal() {
    let script = Script::default().error(ErrorCode::Unauthorized, "wrong token");
    let err = Session::handshake(script.peer(), None).unwrap_err();
    assert_eq!(refused_code(&err), ErrorCode::Unauthorized);
    assert_eq!(err.exit(), Exit::Refused);
    assert_eq!(
        err.report(),
        "the server refused the handshake: unauthorized: wrong token"
    );
}

#[test]
fn handshake_answered_by_something_else_is_a_handshake_failure() {
    let script = Script::default().raw(b"HTTP/1.1 400 Bad Request\r\n\r\n");
    let err = Session::handshake(script.peer(), None).unwrap_err();
    assert!(
        matches!(err, ClientError::Handshake(ProtocolError::Malformed(_))),
        "{err:?}"
    );
    assert_eq!(err.exit(), Exit::Connection);
}

#[test]
fn handshake_answered_with_another_message_is_a_handshake_failure() {
    let script = Script::default().msg(&Response::Deleted);
    let err = Session::handshake(script.peer(), None).unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Handshake(ProtocolError::Unexpected { got: "Deleted", .. })
        ),
        "{err:?}"
    );
    assert_eq!(err.exit(), Exit::Connection);
}

#[test]
fn handshake_with_another_version_is_a_handshake_failure() {
    let script = Script::default().msg(&Response::Welcome(Welcome {
        version: VERSION + 1,
        max_file_size: 0,
        max_message_len: 0,
        idle_timeout_ms: 0,
        read_only: false,
    }));
    let err = Session::handshake(script.peer(), None).unwrap_err();
    assert!(
        matches!(err, ClientError::Handshake(ProtocolError::Version { .. })),
        "{err:?}"
    );
}

#[test]
fn handshake_closed_by_the_server_is_a_connection_failure() {
    for input in [&b""[..], b"\0\0"] {
        let script = Script::default().raw(input);
        let err = Session::handshake(script.peer(), None).unwrap_err();
        assert!(matches!(err, ClientError::Closed), "{err:?}");
        assert_eq!(err.exit(), Exit::Connection);
    }
}

#[test]
fn handshake_refused_before_the_hello_is_read_reports_the_reason() {
    let mut peer = Script::default()
        .error(ErrorCode::Busy, "too many connections")
        .peer();
    peer.write_limit = Some(0);
    let err = Session::handshake(peer, None).unwrap_err();
    assert_eq!(refused_code(&err), ErrorCode::Busy);
}

// Put.

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
    let done = files::put_file(&mut session, source, "dir/f", false, &bar()).unwrap();
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
fn put_of_an_empty_file_sends_the_trailer_only() {
    let dir = tempfile::tempdir().unwrap();
    let source = source_file(dir.path(), "empty", b"");
    let mut session = Script::welcome()
        .msg(&Response::PutReady { offset: 0 })
        .msg(&put_done(b""))
        .session();
    files::put_file(&mut session, source, "empty", true, &bar()).unwrap();
    let mut sent = Sent::of(session);
    sent.hello();
    let Request::Put(put) = sent.request() else {
        panic!("not a put")
    };
    assert!(put.overwrite);
    assert_eq!(put.size, 0);
    assert_eq!(sent.msg::<Trailer>().hash, hash(b""));
    assert!(sent.rest().is_empty());
}

#[test]
fn refused_put_sends_no_body_and_the_session_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let source = source_file(dir.path(), "f", b"content");
    let entry = Entry {
        name: "f".into(),
        size: 3,
        modified_ns: 0,
    };
    let mut session = Script::welcome()
        .error(ErrorCode::AlreadyExists, "f exists")
        .msg(&Response::Entry(entry.clone()))
        .session();
    let err = files::put_file(&mut session, source, "f", false, &bar()).unwrap_err();
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

#[test]
fn put_confirmed_with_another_hash_is_an_integrity_error() {
    let dir = tempfile::tempdir().unwrap();
    let source = source_file(dir.path(), "f", b"content");
    let mut session = Script::welcome()
        .msg(&Response::PutReady { offset: 0 })
        .msg(&Response::PutDone {
            size: 7,
            hash: hash(b"contenT"),
        })
        .session();
    let err = files::put_file(&mut session, source, "f", false, &bar()).unwrap_err();
    assert!(matches!(err, ClientError::Integrity { .. }), "{err:?}");
    assert_eq!(err.exit(), Exit::Integrity);
}

#[test]
fn put_confirmed_with_another_size_is_a_protocol_error() {
    let dir = tempfile::tempdir().unwrap();
    let source = source_file(dir.path(), "f", b"content");
    let mut session = Script::welcome()
        .msg(&Response::PutReady { offset: 0 })
        .msg(&Response::PutDone {
            size: 6,
            hash: hash(b"content"),
        })
        .session();
    let err = files::put_file(&mut session, source, "f", false, &bar()).unwrap_err();
    assert!(
        matches!(err, ClientError::Protocol(ProtocolError::StoredSize { .. })),
        "{err:?}"
    );
    assert_eq!(err.exit(), Exit::Refused);
}

#[test]
fn put_rejected_by_the_servers_check_keeps_its_code() {
    let dir = tempfile::tempdir().unwrap();
    let source = source_file(dir.path(), "f", b"content");
    let mut session = Script::welcome()
        .msg(&Response::PutReady { offset: 0 })
        .error(ErrorCode::IntegrityMismatch, "hash differs")
        .session();
    let err = files::put_file(&mut session, source, "f", false, &bar()).unwrap_err();
    assert_eq!(refused_code(&err), ErrorCode::IntegrityMismatch);
    assert_eq!(err.exit(), Exit::Integrity);
    assert!(session.is_usable());
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
    let mut session = Script::welcome()
        .msg(&Response::PutReady { offset: 0 })
        .session();
    let err = files::put_file(&mut session, source, "f", false, &bar()).unwrap_err();
    assert_eq!(err.exit(), Exit::LocalFile);
    assert!(!session.is_usable());
    let mut sent = Sent::of(session);
    sent.hello();
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
    let err = files::put_file(&mut session, source, "f", false, &bar()).unwrap_err();
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
    let err = files::put_file(&mut session, source, "f", false, &bar()).unwrap_err();
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

// Get.

/// A fresh directory and a staging for `dest` in it.
fn staged(dest: &str, force: bool) -> (tempfile::TempDir, PathBuf, Staging) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(dest);
    let staging = Staging::new(&path, force).unwrap();
    (dir, path, staging)
}

#[test]
fn get_publishes_a_byte_identical_file_and_nothing_else() {
    let content = data(2 * CHUNK + 777);
    let (dir, path, staging) = staged("out.bin", false);
    assert!(
        staging
            .temp_path()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with(".out.bin.")
    );
    let mut session = Script::welcome()
        .download(&content, hash(&content))
        .session();
    let saved = files::get_file(&mut session, "remote/x.bin", staging, &bar()).unwrap();
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
    files::get_file(&mut session, "x", staging, &bar()).unwrap();
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
    files::get_file(&mut session, "x", staging, &bar()).unwrap();
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
    files::get_file(&mut session, "empty", staging, &bar()).unwrap();
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
    let err = files::get_file(&mut session, "x", staging, &bar()).unwrap_err();
    assert!(matches!(err, ClientError::Integrity { .. }), "{err:?}");
    assert_eq!(err.exit(), Exit::Integrity);
    assert!(listing(dir.path()).is_empty());
    // The exchange completed: the connection is still in step.
    assert!(session.is_usable());
}

#[test]
fn get_cut_short_in_the_body_leaves_nothing() {
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
    let err = files::get_file(&mut session, "x", staging, &bar()).unwrap_err();
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
    assert!(listing(dir.path()).is_empty());
    assert!(!session.is_usable());
}

#[test]
fn get_without_its_trailer_leaves_nothing() {
    let (dir, _path, staging) = staged("out", false);
    let mut session = Script::welcome()
        .msg(&Response::GetReady {
            size: 5,
            offset: 0,
            modified_ns: 0,
        })
        .raw(b"hello")
        .session();
    let err = files::get_file(&mut session, "x", staging, &bar()).unwrap_err();
    assert!(matches!(err, ClientError::Closed), "{err:?}");
    assert!(listing(dir.path()).is_empty());
}

#[test]
fn get_of_a_missing_file_leaves_nothing() {
    let (dir, _path, staging) = staged("out", false);
    let mut session = Script::welcome()
        .error(ErrorCode::NotFound, "no such file")
        .session();
    let err = files::get_file(&mut session, "x", staging, &bar()).unwrap_err();
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
    let err = files::get_file(&mut session, "x", staging, &bar()).unwrap_err();
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
    let err = Staging::new(&path, false).unwrap_err();
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
    let err = Staging::new(&path, false).unwrap_err();
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
    let staging = Staging::new(&path, true).unwrap();
    let mut session = Script::welcome().download(b"new", hash(b"new")).session();
    files::get_file(&mut session, "x", staging, &bar()).unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"new");
    assert_eq!(listing(dir.path()), ["out"]);
}

#[test]
fn get_does_not_overwrite_a_file_that_appeared_meanwhile() {
    let (dir, path, staging) = staged("out", false);
    fs::write(&path, b"appeared").unwrap();
    let mut session = Script::welcome().download(b"new", hash(b"new")).session();
    let err = files::get_file(&mut session, "x", staging, &bar()).unwrap_err();
    assert!(
        matches!(err, ClientError::DestinationExists { .. }),
        "{err:?}"
    );
    assert_eq!(fs::read(&path).unwrap(), b"appeared");
    assert_eq!(listing(dir.path()), ["out"]);
}

#[test]
fn get_never_replaces_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub");
    fs::create_dir(&path).unwrap();
    let err = Staging::new(&path, true).unwrap_err();
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

// List, stat, delete.

fn entry(name: &str, size: u64) -> Entry {
    Entry {
        name: name.into(),
        size,
        modified_ns: 0,
    }
}

#[test]
fn list_streams_every_entry_and_checks_the_count() {
    let mut session = Script::welcome()
        .msg(&Response::Entry(entry("a", 1)))
        .msg(&Response::Entry(entry("b/c", 2)))
        .msg(&Response::ListEnd { count: 2 })
        .session();
    let mut seen = Vec::new();
    let count = session
        .list("", |e| {
            seen.push(e);
            Ok(())
        })
        .unwrap();
    assert_eq!(count, 2);
    assert_eq!(seen, [entry("a", 1), entry("b/c", 2)]);
    assert!(session.is_usable());
    let mut sent = Sent::of(session);
    sent.hello();
    assert_eq!(
        sent.request(),
        Request::List(List {
            prefix: String::new()
        })
    );
}

#[test]
fn list_prints_names_with_control_characters_escaped() {
    let mut session = Script::welcome()
        .msg(&Response::Entry(entry("x\u{1b}[31mred\u{9b}", 7)))
        .msg(&Response::Entry(entry("日本/ok.txt", 8)))
        .msg(&Response::ListEnd { count: 2 })
        .session();
    let mut out = Vec::new();
    session
        .list("pre", |e| crate::print_entry(&mut out, &e))
        .unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "7\tx\\u{1b}[31mred\\u{9b}\n8\t日本/ok.txt\n"
    );
}

#[test]
fn list_with_a_wrong_count_is_a_protocol_error() {
    let mut session = Script::welcome()
        .msg(&Response::Entry(entry("a", 1)))
        .msg(&Response::ListEnd { count: 3 })
        .session();
    let err = session.list("", |_| Ok(())).unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Protocol(ProtocolError::ListCount {
                announced: 3,
                received: 1
            })
        ),
        "{err:?}"
    );
}

#[test]
fn list_refused_is_reported() {
    let mut session = Script::welcome()
        .error(ErrorCode::Forbidden, "no")
        .session();
    let err = session.list("", |_| Ok(())).unwrap_err();
    assert_eq!(refused_code(&err), ErrorCode::Forbidden);
    assert!(matches!(
        err,
        ClientError::Refused {
            op: Operation::List,
            ..
        }
    ));
    assert!(session.is_usable());
}

#[test]
fn stat_prints_one_escaped_entry() {
    let mut session = Script::welcome()
        .msg(&Response::Entry(entry("a\tb", 12)))
        .session();
    let found = session.stat("ab").unwrap();
    let mut out = Vec::new();
    crate::print_entry(&mut out, &found).unwrap();
    assert_eq!(out, b"12\ta\\tb\n");
    let mut sent = Sent::of(session);
    sent.hello();
    assert_eq!(sent.request(), Request::Stat(Stat { name: "ab".into() }));
}

#[test]
fn stat_and_delete_of_missing_files_are_not_found() {
    let mut session = Script::welcome()
        .error(ErrorCode::NotFound, "no a")
        .error(ErrorCode::NotFound, "no b")
        .msg(&Response::Deleted)
        .session();
    assert_eq!(session.stat("a").unwrap_err().exit(), Exit::NotFound);
    assert_eq!(session.delete("b").unwrap_err().exit(), Exit::NotFound);
    session.delete("c").unwrap();
    let mut sent = Sent::of(session);
    sent.hello();
    assert!(matches!(sent.request(), Request::Stat(_)));
    assert!(matches!(sent.request(), Request::Delete(d) if d.name == "b"));
    assert!(matches!(sent.request(), Request::Delete(d) if d.name == "c"));
    assert!(sent.rest().is_empty());
}

#[test]
fn an_unexpected_answer_is_a_protocol_error_and_ends_the_session() {
    let mut session = Script::welcome()
        .msg(&Response::ListEnd { count: 0 })
        .session();
    let err = session.delete("a").unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Protocol(ProtocolError::Unexpected {
                expected: "Deleted",
                got: "ListEnd"
            })
        ),
        "{err:?}"
    );
    assert_eq!(err.exit(), Exit::Refused);
    assert!(!session.is_usable());
    assert!(matches!(
        session.stat("a").unwrap_err(),
        ClientError::Unusable
    ));
}

#[test]
fn a_malformed_answer_is_a_protocol_error() {
    let mut session = Script::welcome().raw(&[0, 0, 0, 2, 0xff, 0xff]).session();
    let err = session.stat("a").unwrap_err();
    assert!(
        matches!(err, ClientError::Protocol(ProtocolError::Malformed(_))),
        "{err:?}"
    );
    assert_eq!(err.exit(), Exit::Refused);
}

#[test]
fn an_oversized_frame_is_refused_without_reading_it() {
    let mut session = Script::welcome().raw(&[0x7f, 0xff, 0xff, 0xff]).session();
    let err = session.stat("a").unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Protocol(ProtocolError::Malformed(proto::Error::FrameTooLarge { .. }))
        ),
        "{err:?}"
    );
}

#[test]
fn the_server_closing_between_requests_is_a_connection_error() {
    let mut session = Script::welcome().session();
    let err = session.stat("a").unwrap_err();
    assert!(matches!(err, ClientError::Closed), "{err:?}");
    assert_eq!(err.exit(), Exit::Connection);
}
