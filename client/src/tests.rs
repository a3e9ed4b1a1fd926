//! The session and file operations against a scripted in-memory server.
//!
//! A [`FakePeer`] plays back prepared server bytes and records what the
//! client sends, so each test states exactly what the server says and
//! checks exactly what the client wrote.

use crate::error::{ClientError, Exit, ProtocolError, Step};
use crate::files::{self, Options, Source, Staging};
use crate::progress::Meter;

/// A size larger than one body buffer, so bodies span several.
const CHUNK: usize = 1 << 20;
use crate::session::{PutDone, Session, TreeEntry};
use framekit_codec::blocking::read_message;
use framekit_codec::message::to_frame;
use framekit_transfer::{
    Entry, ErrorCode, ErrorReply, FileVersion, Get, Hash, Hello, List, MakeDir, Operation, Put,
    PutEager, Request, Response, Stat, Trailer, Tree, VERSION, Welcome, frame_config,
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

fn options(force: bool) -> Options {
    Options {
        force,
        resume: true,
    }
}

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

fn get<S: Read + Write>(
    session: &mut Session<S>,
    name: &str,
    staging: Staging,
) -> Result<files::Saved, ClientError> {
    files::get_file(session, name, staging, &Meter::hidden(), &mut |_| {})
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
        .list("pre", |e| crate::commands::print_entry(&mut out, &e))
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
            step: Step::Request(Operation::List),
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
    crate::commands::print_entry(&mut out, &found).unwrap();
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
            ClientError::Protocol(ProtocolError::Malformed(
                framekit_codec::Error::FrameTooLarge { .. }
            ))
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

// Resuming.

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

// Directories.

#[test]
fn tree_lists_directories_and_files_and_checks_the_count() {
    let mut session = Script::welcome()
        .msg(&Response::Directory { name: "d/e".into() })
        .msg(&Response::Entry(entry("d/e/f", 3)))
        .msg(&Response::ListEnd { count: 2 })
        .msg(&Response::DirMade)
        .session();
    let mut seen = Vec::new();
    assert_eq!(
        session
            .tree("d", |e| {
                seen.push(e);
                Ok(())
            })
            .unwrap(),
        2
    );
    assert_eq!(
        seen,
        [
            TreeEntry::Dir("d/e".into()),
            TreeEntry::File(entry("d/e/f", 3))
        ]
    );
    session.make_dir("d/new").unwrap();
    let mut sent = Sent::of(session);
    sent.hello();
    assert_eq!(sent.request(), Request::Tree(Tree { dir: "d".into() }));
    assert_eq!(
        sent.request(),
        Request::MakeDir(MakeDir {
            name: "d/new".into()
        })
    );
}

// Small files, pipelined.

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
