//! One connection to a framekit server, over any byte stream.
//!
//! A [`Session`] owns a stream (`TcpStream`, a TLS stream, or an in-memory
//! peer in tests) on which the handshake has succeeded, and runs requests on
//! it one after the other, as the protocol in [`framekit_transfer`] describes.
//! Messages are read through a [`BufReader`] so that small frames cost no
//! system call each; file bodies are read through the same buffer (bytes
//! that arrived together with a header are body bytes) and written with
//! `write_all` straight to the stream.
//!
//! Uploads and downloads are streamed: [`Session::start_put`] returns an
//! [`Upload`] that takes the body chunk by chunk, [`Session::start_get`] a
//! [`Download`] that gives it chunk by chunk; both hash the body with
//! BLAKE3 as it passes and check the hash when finished.
//!
//! # Failures
//!
//! An error the server reports ([`ClientError::Refused`]) leaves the session
//! ready for the next request. Any other failure in the middle of an
//! exchange (a lost connection, a malformed message, a body cut short, an
//! [`Upload`] or [`Download`] dropped before it was finished) leaves the
//! stream at an unknown position: the session refuses further requests with
//! [`ClientError::Unusable`], and should be dropped.

use crate::error::{ClientError, ProtocolError, Step};
use framekit_codec::blocking::{read_message, write_all_vectored, write_message};
use framekit_codec::frame::FrameConfig;
use framekit_transfer::{
    Delete, Entry, ErrorCode, FileVersion, Get, Hash, Hello, List, MAX_EAGER_BODY, MakeDir,
    Operation, Put, PutEager, Request, Response, Stat, Trailer, Tree, VERSION, Welcome,
    frame_config, validate_name,
};
use serde::de::DeserializeOwned;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc;

/// A connection to a server, after a successful handshake.
///
/// ```no_run
/// use framekit_client::session::Session;
/// use std::net::TcpStream;
///
/// let stream = TcpStream::connect("127.0.0.1:7878")?;
/// let mut session = Session::handshake(stream, None)?;
/// session.list("", |entry| {
///     eprintln!("{} {}", entry.size, framekit_client::escape::Escaped(&entry.name));
///     Ok(())
/// })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Session<S> {
    stream: BufReader<S>,
    config: FrameConfig,
    welcome: Welcome,
    state: State,
}

/// Whether the stream is at a message boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Ready,
    /// In the middle of an exchange, or after a failure in one.
    Busy,
    /// This many eager uploads were sent and not answered yet.
    Eager(usize),
}

/// An eager upload sent and not answered yet: pass it to
/// [`Session::eager_answer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "every eager upload sent must be answered"]
pub struct EagerSent {
    size: u64,
    hash: Hash,
}

impl EagerSent {
    /// The size of the file sent.
    pub fn size(&self) -> u64 {
        self.size
    }
}

/// One thing below a directory, as the server lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeEntry {
    /// A directory, by its full name.
    Dir(String),
    /// A regular file.
    File(Entry),
}

/// The server's confirmation of an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutDone {
    /// The size of the stored file.
    pub size: u64,
    /// The BLAKE3 hash of the stored file, equal to the hash of what was
    /// sent.
    pub hash: Hash,
}

impl<S: Read + Write> Session<S> {
    /// Sends the hello (with `token`, if any) and waits for the server's
    /// welcome.
    ///
    /// Fails with [`ClientError::Refused`] if the server answers with an
    /// error (busy, unauthorized, unsupported version...),
    /// [`ClientError::Handshake`] if what it answers is not a framekit
    /// welcome, or a connection error.
    pub fn handshake(stream: S, token: Option<String>) -> Result<Self, ClientError> {
        let config = frame_config();
        let mut stream = BufReader::new(stream);
        if let Err(e) = write_message(stream.get_mut(), &config, &Hello::new(token)) {
            let error = ClientError::write(e);
            return Err(salvage(&mut stream, &config, Step::Handshake, error));
        }
        // A TLS server answers a plain-text hello with a TLS alert record,
        // which no framekit frame starts with (its length is far below
        // 0x15000000).
        if let Ok([0x15 | 0x16, 0x03, ..]) = stream.fill_buf() {
            return Err(ClientError::Handshake(ProtocolError::TlsAnswer));
        }
        let response = receive::<_, Response>(&mut stream, &config).map_err(|e| match e {
            ClientError::Protocol(e) => ClientError::Handshake(e),
            other => other,
        })?;
        match response {
            Response::Welcome(welcome) if welcome.version == VERSION => Ok(Session {
                stream,
                config,
                welcome,
                state: State::Ready,
            }),
            Response::Welcome(welcome) => Err(ClientError::Handshake(ProtocolError::Version {
                got: welcome.version,
                ours: VERSION,
            })),
            Response::Error(reply) => Err(ClientError::Refused {
                step: Step::Handshake,
                reply,
            }),
            other => Err(ClientError::Handshake(unexpected("Welcome", &other))),
        }
    }

    /// What the server said about itself and its limits.
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// Whether the session can take another request: false after a failure
    /// that left the stream in the middle of an exchange.
    pub fn is_usable(&self) -> bool {
        self.state == State::Ready
    }

    /// Whether a failure left the stream in the middle of an exchange: the
    /// session can take nothing more, not even the answers to eager
    /// uploads sent before, and should be dropped.
    pub fn is_broken(&self) -> bool {
        self.state == State::Busy
    }

    /// The underlying stream (to set socket options, for example).
    pub fn get_ref(&self) -> &S {
        self.stream.get_ref()
    }

    /// The underlying stream. Bytes already read from it into the session's
    /// buffer are lost.
    pub fn into_inner(self) -> S {
        self.stream.into_inner()
    }

    /// Starts uploading `size` bytes as `name`, replacing an existing file
    /// only if `overwrite`.
    ///
    /// The server checks everything it can (name, size, existence, space)
    /// before answering; if it refuses, no body is sent and the session stays
    /// usable. Otherwise send the body through the returned [`Upload`] and
    /// [`finish`](Upload::finish) it.
    pub fn start_put(
        &mut self,
        name: &str,
        size: u64,
        overwrite: bool,
    ) -> Result<Upload<'_, S>, ClientError> {
        self.start_put_with_key(name, size, overwrite, None)
    }

    /// Like [`Session::start_put`], with a resume key: an identity of the
    /// file's content, by which the server may keep the upload if it is
    /// interrupted, and continue it later. The returned [`Upload`] then
    /// starts at [`Upload::offset`], the bytes the server already holds.
    pub fn start_put_with_key(
        &mut self,
        name: &str,
        size: u64,
        overwrite: bool,
        resume_key: Option<Hash>,
    ) -> Result<Upload<'_, S>, ClientError> {
        check_name(name)?;
        self.begin()?;
        let request = Request::Put(Put {
            name: name.to_owned(),
            size,
            overwrite,
            resume_key,
        });
        self.send_request(&request)?;
        match self.receive()? {
            // Without a resume key, the server starts at 0.
            Response::PutReady { offset }
                if offset <= size && (offset == 0 || resume_key.is_some()) =>
            {
                Ok(Upload {
                    session: self,
                    size,
                    offset,
                    sent: offset,
                    hasher: blake3::Hasher::new(),
                    trailer_sent: false,
                })
            }
            Response::PutReady { offset } => Err(ProtocolError::Offset {
                offset,
                size,
                expected: 0,
            }
            .into()),
            other => Err(self.refused_or_unexpected(Operation::Put, "PutReady", other)),
        }
    }

    /// Uploads `body` (at most [`MAX_EAGER_BODY`] bytes) as `name` in one
    /// round trip: the request, the body and its hash go out together,
    /// without waiting for a go-ahead.
    ///
    /// A refusal ([`ClientError::Refused`]) leaves the session usable;
    /// the body was sent anyway, which is why only small files go this way.
    /// Nothing of an interrupted eager upload is kept by the server.
    pub fn put_eager(
        &mut self,
        name: &str,
        body: &[u8],
        overwrite: bool,
    ) -> Result<PutDone, ClientError> {
        let sent = self.send_eager(name, body, overwrite)?;
        self.eager_answer(sent)
    }

    /// Sends an eager upload (see [`Session::put_eager`]) without reading
    /// its answer, so that the server can store one file while the next is
    /// on its way.
    ///
    /// Read the answers with [`Session::eager_answer`], in the order the
    /// uploads were sent, before any other request. Keep what is unanswered
    /// bounded (PROTOCOL.md suggests 64 uploads and 1 MiB): the server does
    /// not read on while an answer waits for a client that is only writing.
    pub fn send_eager(
        &mut self,
        name: &str,
        body: &[u8],
        overwrite: bool,
    ) -> Result<EagerSent, ClientError> {
        check_name(name)?;
        let size = len64(body);
        if size > MAX_EAGER_BODY {
            return Err(ClientError::Misuse(
                "an eager upload carries at most MAX_EAGER_BODY bytes",
            ));
        }
        let unanswered = match self.state {
            State::Ready => 0,
            State::Eager(n) => n,
            State::Busy => return Err(ClientError::Unusable),
        };
        let request = Request::PutEager(PutEager {
            name: name.to_owned(),
            size,
            overwrite,
        });
        let hash: Hash = blake3::hash(body).into();
        let head = framekit_codec::message::to_frame(&self.config, &request)
            .map_err(ClientError::write)?;
        let tail = framekit_codec::message::to_frame(&self.config, &Trailer { hash })
            .map_err(ClientError::write)?;
        self.state = State::Busy;
        let written = write_all_vectored(
            self.stream.get_mut(),
            &mut [
                io::IoSlice::new(&head),
                io::IoSlice::new(body),
                io::IoSlice::new(&tail),
            ],
        );
        if let Err(e) = written {
            let error = ClientError::io(e);
            // With answers still due, the next frame is one of them, not
            // an explanation of this failure.
            return Err(match unanswered {
                0 => salvage(&mut self.stream, &self.config, Operation::Put.into(), error),
                _ => error,
            });
        }
        self.state = State::Eager(unanswered + 1);
        Ok(EagerSent { size, hash })
    }

    /// Reads the answer to the oldest eager upload not answered yet, which
    /// must be `sent`, and checks that the server stored what was sent.
    ///
    /// A refusal ([`ClientError::Refused`]) is this upload's failure alone,
    /// unless its code closes the connection; any other error leaves the
    /// session unusable, and the uploads still unanswered were not carried
    /// out, or not known to be.
    pub fn eager_answer(&mut self, sent: EagerSent) -> Result<PutDone, ClientError> {
        let State::Eager(unanswered) = self.state else {
            return Err(match self.state {
                State::Busy => ClientError::Unusable,
                _ => ClientError::Misuse("no eager upload is waiting for its answer"),
            });
        };
        self.state = State::Busy;
        let response = self.receive()?;
        let answered = match unanswered - 1 {
            0 => State::Ready,
            n => State::Eager(n),
        };
        match response {
            Response::PutDone { size, hash } => {
                self.state = answered;
                if size != sent.size {
                    return Err(ProtocolError::StoredSize {
                        stored: size,
                        sent: sent.size,
                    }
                    .into());
                }
                if hash != sent.hash {
                    return Err(ClientError::Integrity {
                        expected: hash,
                        actual: sent.hash,
                    });
                }
                Ok(PutDone { size, hash })
            }
            Response::Error(reply) => {
                if !closes(reply.code) {
                    self.state = answered;
                }
                Err(ClientError::Refused {
                    step: Operation::Put.into(),
                    reply,
                })
            }
            other => Err(unexpected("PutDone", &other).into()),
        }
    }

    /// Starts downloading `name`.
    ///
    /// If the server refuses (not found...), the session stays usable.
    /// Otherwise read the body through the returned [`Download`] and
    /// [`finish`](Download::finish) it to check its hash.
    pub fn start_get(&mut self, name: &str) -> Result<Download<'_, S>, ClientError> {
        self.request_get(name, 0, None)
    }

    /// Starts downloading `name` from byte `offset` on, to complete a copy
    /// of its first `offset` bytes taken from the file's `version`.
    ///
    /// The server starts at `offset` only if the file is still that
    /// version, else at 0: check [`Download::offset`]. A download that
    /// starts at `offset` must be given those first bytes to hash (see
    /// [`Download::receive_into`]).
    pub fn start_get_from(
        &mut self,
        name: &str,
        offset: u64,
        version: FileVersion,
    ) -> Result<Download<'_, S>, ClientError> {
        self.request_get(name, offset, Some(version))
    }

    fn request_get(
        &mut self,
        name: &str,
        offset: u64,
        if_version: Option<FileVersion>,
    ) -> Result<Download<'_, S>, ClientError> {
        check_name(name)?;
        self.begin()?;
        let request = Request::Get(Get {
            name: name.to_owned(),
            offset,
            if_version,
        });
        self.send_request(&request)?;
        match self.receive()? {
            Response::GetReady {
                size,
                offset: start,
                modified_ns,
            } if start <= size && (start == 0 || start == offset) => Ok(Download {
                session: self,
                size,
                modified_ns,
                offset: start,
                received: start,
                prefix_hashed: start == 0,
                hasher: blake3::Hasher::new(),
            }),
            Response::GetReady {
                size,
                offset: start,
                ..
            } => Err(ProtocolError::Offset {
                offset: start,
                size,
                expected: offset,
            }
            .into()),
            other => Err(self.refused_or_unexpected(Operation::Get, "GetReady", other)),
        }
    }

    /// Creates the directory `name` on the server, and its missing
    /// parents; fine if it exists.
    pub fn make_dir(&mut self, name: &str) -> Result<(), ClientError> {
        check_name(name)?;
        let request = Request::MakeDir(MakeDir {
            name: name.to_owned(),
        });
        self.exchange(&request, "DirMade", |response| match response {
            Response::DirMade => Ok(()),
            other => Err(other),
        })
    }

    /// Lists everything below the directory `dir` (the whole root if
    /// empty), calling `each` with every directory and file as it
    /// arrives, in the server's order. Returns the number of entries.
    ///
    /// The names are the server's: check them before using them (see
    /// [`crate::local`]). An error returned by `each` stops the listing
    /// and is returned; the session is then unusable.
    pub fn tree(
        &mut self,
        dir: &str,
        mut each: impl FnMut(TreeEntry) -> Result<(), ClientError>,
    ) -> Result<u64, ClientError> {
        if !dir.is_empty() {
            check_name(dir)?;
        }
        self.begin()?;
        let request = Request::Tree(Tree {
            dir: dir.to_owned(),
        });
        self.send_request(&request)?;
        let mut received = 0u64;
        loop {
            match self.receive()? {
                Response::Entry(entry) => {
                    received += 1;
                    each(TreeEntry::File(entry))?;
                }
                Response::Directory { name } => {
                    received += 1;
                    each(TreeEntry::Dir(name))?;
                }
                Response::ListEnd { count } => {
                    self.state = State::Ready;
                    if count != received {
                        return Err(ProtocolError::ListCount {
                            announced: count,
                            received,
                        }
                        .into());
                    }
                    return Ok(count);
                }
                other => {
                    return Err(self.refused_or_unexpected(
                        Operation::Tree,
                        "Directory, Entry or ListEnd",
                        other,
                    ));
                }
            }
        }
    }

    /// Lists the files whose names start with `prefix` (every file if it is
    /// empty), calling `each` with every entry as it arrives, in the
    /// server's order. Returns the number of entries.
    ///
    /// An error returned by `each` stops the listing and is returned; the
    /// session is then unusable (the rest of the listing is unread).
    pub fn list(
        &mut self,
        prefix: &str,
        mut each: impl FnMut(Entry) -> Result<(), ClientError>,
    ) -> Result<u64, ClientError> {
        self.begin()?;
        let request = Request::List(List {
            prefix: prefix.to_owned(),
        });
        self.send_request(&request)?;
        let mut received = 0u64;
        loop {
            match self.receive()? {
                Response::Entry(entry) => {
                    received += 1;
                    each(entry)?;
                }
                Response::ListEnd { count } => {
                    self.state = State::Ready;
                    if count != received {
                        return Err(ProtocolError::ListCount {
                            announced: count,
                            received,
                        }
                        .into());
                    }
                    return Ok(count);
                }
                other => {
                    return Err(self.refused_or_unexpected(
                        Operation::List,
                        "Entry or ListEnd",
                        other,
                    ));
                }
            }
        }
    }

    /// Describes one file.
    pub fn stat(&mut self, name: &str) -> Result<Entry, ClientError> {
        check_name(name)?;
        let request = Request::Stat(Stat {
            name: name.to_owned(),
        });
        self.exchange(&request, "Entry", |response| match response {
            Response::Entry(entry) => Ok(entry),
            other => Err(other),
        })
    }

    /// Deletes one file.
    pub fn delete(&mut self, name: &str) -> Result<(), ClientError> {
        check_name(name)?;
        let request = Request::Delete(Delete {
            name: name.to_owned(),
        });
        self.exchange(&request, "Deleted", |response| match response {
            Response::Deleted => Ok(()),
            other => Err(other),
        })
    }

    /// One request answered by one response: `accept` takes the expected
    /// response (giving any other back), an error reply is a refusal.
    fn exchange<T>(
        &mut self,
        request: &Request,
        expected: &'static str,
        accept: impl FnOnce(Response) -> Result<T, Response>,
    ) -> Result<T, ClientError> {
        let op = request.operation();
        self.begin()?;
        self.send_request(request)?;
        match accept(self.receive()?) {
            Ok(value) => {
                self.state = State::Ready;
                Ok(value)
            }
            Err(other) => Err(self.refused_or_unexpected(op, expected, other)),
        }
    }

    /// Marks the start of an exchange; fails if an earlier one was left
    /// unfinished.
    fn begin(&mut self) -> Result<(), ClientError> {
        match self.state {
            State::Ready => {
                self.state = State::Busy;
                Ok(())
            }
            State::Busy => Err(ClientError::Unusable),
            State::Eager(_) => Err(ClientError::Misuse(
                "eager uploads must be answered before the next request",
            )),
        }
    }

    /// Writes one message. If the connection fails while writing, a server
    /// that refused and closed may have said why: that reason is returned.
    fn send(&mut self, msg: &impl serde::Serialize, step: Step) -> Result<(), ClientError> {
        write_message(self.stream.get_mut(), &self.config, msg).map_err(|e| {
            let error = ClientError::write(e);
            salvage(&mut self.stream, &self.config, step, error)
        })
    }

    /// Writes a request. See [`Session::send`].
    fn send_request(&mut self, request: &Request) -> Result<(), ClientError> {
        self.send(request, request.operation().into())
    }

    /// Writes the last body bytes and a message after them in one write,
    /// so that they leave in one segment. See [`Session::send`].
    fn send_body_then(
        &mut self,
        chunk: &[u8],
        msg: &impl serde::Serialize,
        step: Step,
    ) -> Result<(), ClientError> {
        let frame =
            framekit_codec::message::to_frame(&self.config, msg).map_err(ClientError::write)?;
        write_all_vectored(
            self.stream.get_mut(),
            &mut [io::IoSlice::new(chunk), io::IoSlice::new(&frame)],
        )
        .map_err(|e| {
            let error = ClientError::io(e);
            salvage(&mut self.stream, &self.config, step, error)
        })
    }

    /// Writes body bytes. See [`Session::send`].
    fn send_body(&mut self, chunk: &[u8], step: Step) -> Result<(), ClientError> {
        self.stream.get_mut().write_all(chunk).map_err(|e| {
            let error = ClientError::io(e);
            salvage(&mut self.stream, &self.config, step, error)
        })
    }

    /// Hashes bytes `0..end` of `file` into `hasher`, and sends bytes
    /// `start..end` as body bytes. Returns how far the file went if it
    /// ended early.
    ///
    /// Another thread reads and hashes each buffer while this one sends the
    /// one before. This beats `sendfile` when the bytes must be hashed
    /// anyway: the file is read from memory once instead of twice.
    fn send_file_body(
        &mut self,
        file: &File,
        hasher: &mut blake3::Hasher,
        start: u64,
        end: u64,
        progress: &mut dyn FnMut(u64),
    ) -> Result<FileSent, ClientError> {
        let Pipeline {
            to_full: to_sender,
            full: sender_rx,
            to_empty: to_reader,
            empty: reader_rx,
        } = Pipeline::new(end);
        std::thread::scope(|scope| {
            let reader = scope
                .spawn(move || read_and_hash(file, hasher, start, end, &reader_rx, &to_sender));
            let mut sent = Ok(());
            for (buf, n) in sender_rx {
                if let Err(e) =
                    self.send_body(buf.get(..n).unwrap_or_default(), Operation::Put.into())
                {
                    sent = Err(e);
                    break;
                }
                progress(n as u64);
                // The reader may be done; the buffer is then dropped.
                let _ = to_reader.send(buf);
            }
            drop(to_reader);
            let read = reader
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the reading thread failed")));
            sent?;
            read.map_err(ClientError::LocalRead)
        })
    }

    /// Reads one response.
    fn receive(&mut self) -> Result<Response, ClientError> {
        receive(&mut self.stream, &self.config)
    }

    /// The error for a response that is not the expected one: the server's
    /// refusal (after which the session is usable again), or a protocol
    /// error.
    fn refused_or_unexpected(
        &mut self,
        op: Operation,
        expected: &'static str,
        response: Response,
    ) -> ClientError {
        match response {
            Response::Error(reply) => {
                if !closes(reply.code) {
                    self.state = State::Ready;
                }
                ClientError::Refused {
                    step: op.into(),
                    reply,
                }
            }
            other => unexpected(expected, &other).into(),
        }
    }
}

/// Reads one message; a clean end of stream is [`ClientError::Closed`].
fn receive<S: Read, T: DeserializeOwned>(
    stream: &mut BufReader<S>,
    config: &FrameConfig,
) -> Result<T, ClientError> {
    read_message(stream, config)
        .map_err(ClientError::read)?
        .ok_or(ClientError::Closed)
}

/// After a failed write: if the server sent an error reply before it closed
/// the connection (busy, no space...), that is the better explanation.
fn salvage<S: Read>(
    stream: &mut BufReader<S>,
    config: &FrameConfig,
    step: Step,
    error: ClientError,
) -> ClientError {
    // Only when the connection is known to be broken: after a timeout, a
    // read would wait as long again.
    if !matches!(error, ClientError::Io(_)) {
        return error;
    }
    match read_message(stream, config) {
        Ok(Some(Response::Error(reply))) => ClientError::Refused { step, reply },
        _ => error,
    }
}

/// Whether the server closes the connection after an error of this code.
fn closes(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::BadRequest
            | ErrorCode::BadMagic
            | ErrorCode::UnsupportedVersion
            | ErrorCode::Unauthorized
            | ErrorCode::Busy
            | ErrorCode::ShuttingDown
            | ErrorCode::Timeout
    )
}

fn check_name(name: &str) -> Result<(), ClientError> {
    validate_name(name).map_err(|source| ClientError::InvalidName {
        name: name.to_owned(),
        source,
    })
}

fn unexpected(expected: &'static str, got: &Response) -> ProtocolError {
    ProtocolError::Unexpected {
        expected,
        got: match got {
            Response::Welcome(_) => "Welcome",
            Response::Error(_) => "Error",
            Response::PutReady { .. } => "PutReady",
            Response::PutDone { .. } => "PutDone",
            Response::GetReady { .. } => "GetReady",
            Response::Entry(_) => "Entry",
            Response::ListEnd { .. } => "ListEnd",
            Response::Deleted => "Deleted",
            Response::DirMade => "DirMade",
            Response::Directory { .. } => "Directory",
        },
    }
}

/// Size of the buffers file bodies go through: small enough to stay in a
/// core's L2 cache from the copy to the hashing and the next copy.
const BODY_CHUNK: usize = 256 * 1024;

/// Files up to this size are sent from memory, hashed inline.
const SMALL_FILE: usize = 64 * 1024;

/// Buffers circulating between the network and the disk.
const PIPELINE_BUFFERS: usize = 4;

/// How far a file body went.
enum FileSent {
    /// Every byte, and the file ends there.
    All,
    /// The file ended at this offset, before the body's end.
    EndedAt(u64),
    /// The file has more bytes than the body.
    Longer,
}

/// The channels of a two-stage pipeline: full buffers one way (with how
/// much of each holds data), empty ones back.
struct Pipeline {
    to_full: mpsc::SyncSender<(Vec<u8>, usize)>,
    full: mpsc::Receiver<(Vec<u8>, usize)>,
    to_empty: mpsc::SyncSender<Vec<u8>>,
    empty: mpsc::Receiver<Vec<u8>>,
}

impl Pipeline {
    /// The pipeline for a body of `size` bytes, every buffer waiting in
    /// the empty channel.
    fn new(size: u64) -> Self {
        let len = usize::try_from(size).map_or(BODY_CHUNK, |n| n.clamp(1, BODY_CHUNK));
        let count = if size > len as u64 {
            PIPELINE_BUFFERS
        } else {
            1
        };
        let (to_full, full) = mpsc::sync_channel(count);
        let (to_empty, empty) = mpsc::sync_channel(count);
        for _ in 0..count {
            let _ = to_empty.send(vec![0u8; len]);
        }
        Pipeline {
            to_full,
            full,
            to_empty,
            empty,
        }
    }
}

/// Reads bytes `0..end` of `file` into buffers from `free`, hashes them,
/// and passes those from `start` on to `full`; then checks that the file
/// ends at `end`. Stops early, without error, if the other side hangs up.
fn read_and_hash(
    file: &File,
    hasher: &mut blake3::Hasher,
    start: u64,
    end: u64,
    free: &mpsc::Receiver<Vec<u8>>,
    full: &mpsc::SyncSender<(Vec<u8>, usize)>,
) -> io::Result<FileSent> {
    let mut offset = 0;
    let mut spare = None;
    while offset < end {
        let mut buf = match spare.take() {
            Some(buf) => buf,
            None => match free.recv() {
                Ok(buf) => buf,
                Err(_) => return Ok(FileSent::All),
            },
        };
        // The part the server already has is hashed, not sent.
        let stop = if offset < start { start } else { end };
        let want = usize::try_from(stop - offset).map_or(buf.len(), |n| n.min(buf.len()));
        let chunk = buf.get_mut(..want).unwrap_or_default();
        let n = match file.read_at(chunk, offset) {
            Ok(0) => return Ok(FileSent::EndedAt(offset)),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                spare = Some(buf);
                continue;
            }
            Err(e) => return Err(e),
        };
        hasher.update(chunk.get(..n).unwrap_or_default());
        if offset >= start {
            if full.send((buf, n)).is_err() {
                return Ok(FileSent::All);
            }
        } else {
            spare = Some(buf);
        }
        offset += n as u64;
    }
    let mut extra = [0u8; 1];
    loop {
        match file.read_at(&mut extra, end) {
            Ok(0) => return Ok(FileSent::All),
            Ok(_) => return Ok(FileSent::Longer),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Feeds bytes `0..len` of `file` to `hasher`, with positioned reads.
fn hash_range(hasher: &mut blake3::Hasher, file: &File, len: u64) -> io::Result<()> {
    let mut buf = vec![0u8; usize::try_from(len).map_or(BODY_CHUNK, |n| n.clamp(1, BODY_CHUNK))];
    let mut offset = 0u64;
    while offset < len {
        let want = usize::try_from(len - offset).map_or(buf.len(), |n| n.min(buf.len()));
        let chunk = buf.get_mut(..want).unwrap_or_default();
        file.read_exact_at(chunk, offset)?;
        hasher.update(chunk);
        offset += want as u64;
    }
    Ok(())
}

/// Reads the whole of a small `file` (at `path`), which must be exactly
/// `len` bytes long, else [`ClientError::FileChanged`].
pub(crate) fn read_whole(file: &File, path: &Path, len: usize) -> Result<Vec<u8>, ClientError> {
    let mut buf = vec![0u8; len + 1];
    let mut read = 0;
    while read < buf.len() {
        match file.read_at(&mut buf[read..], read as u64) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(ClientError::Local {
                    action: "cannot read",
                    path: path.to_owned(),
                    source,
                });
            }
        }
    }
    if read != len {
        return Err(ClientError::FileChanged {
            path: path.to_owned(),
            announced: len as u64,
            read: (read < len).then_some(read as u64),
        });
    }
    buf.truncate(len);
    Ok(buf)
}

fn len64(buf: &[u8]) -> u64 {
    // usize is at most 64 bits on every supported target.
    buf.len() as u64
}

/// An upload in progress: send exactly [`Upload::size`] body bytes, then
/// [`finish`](Upload::finish).
///
/// Dropping it unfinished leaves the session unusable (the server is still
/// waiting for body bytes).
#[derive(Debug)]
pub struct Upload<'a, S> {
    session: &'a mut Session<S>,
    size: u64,
    /// Where the body starts: the bytes the server already holds.
    offset: u64,
    sent: u64,
    hasher: blake3::Hasher,
    /// Whether the trailer went out with the last body bytes.
    trailer_sent: bool,
}

impl<S: Read + Write> Upload<'_, S> {
    /// The announced size of the file.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes of the file the server already holds from an interrupted
    /// upload: the body starts there. Only [`Upload::send_file`] can send
    /// such a body, since the hash covers the whole file.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Body bytes still to send.
    pub fn remaining(&self) -> u64 {
        self.size - self.sent
    }

    /// Sends the next body bytes (all of them, however many writes it
    /// takes).
    ///
    /// Fails without sending anything if `chunk` goes past the announced
    /// size.
    pub fn send(&mut self, chunk: &[u8]) -> Result<(), ClientError> {
        if self.offset > 0 {
            return Err(ClientError::Misuse(
                "a resumed upload is sent with send_file, which hashes the part not sent",
            ));
        }
        let len = len64(chunk);
        if len > self.remaining() {
            return Err(ClientError::BodyOverrun {
                size: self.size,
                extra: len - self.remaining(),
            });
        }
        self.hasher.update(chunk);
        self.session.send_body(chunk, Operation::Put.into())?;
        self.sent += len;
        Ok(())
    }

    /// Sends the rest of the body (from [`Upload::remaining`] on) from
    /// `file`, whose bytes are the body's bytes, and hashes the whole file
    /// as it goes, each buffer while it is still in the cache.
    ///
    /// The hash covers the file from its first byte, whatever was sent
    /// before (an upload resumed by the server starts past the part it
    /// already has); nothing may have been sent with [`Upload::send`].
    ///
    /// Fails with [`ClientError::FileChanged`] (about `path`) if the file is
    /// shorter or longer than the announced size; nothing more is sent then,
    /// and no trailer: the server publishes nothing.
    pub fn send_file(
        &mut self,
        file: &File,
        path: &Path,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), ClientError> {
        let (size, start) = (self.size, self.sent);
        let changed = |read| ClientError::FileChanged {
            path: path.to_owned(),
            announced: size,
            read,
        };
        let local = |source| ClientError::Local {
            action: "cannot read",
            path: path.to_owned(),
            source,
        };
        // A small file is read once, hashed and sent from memory with its
        // trailer: a thread would cost more than it saves.
        if let Ok(len) = usize::try_from(size)
            && len <= SMALL_FILE
            && start == 0
        {
            let body = read_whole(file, path, len)?;
            // The whole body is here: the trailer goes out with it.
            let body = body.as_slice();
            self.hasher.update(body);
            let hash: Hash = self.hasher.finalize().into();
            self.session
                .send_body_then(body, &Trailer { hash }, Operation::Put.into())?;
            self.sent = size;
            self.trailer_sent = true;
            progress(size);
            return Ok(());
        }
        let mut hasher = blake3::Hasher::new();
        match self
            .session
            .send_file_body(file, &mut hasher, start, size, progress)
        {
            Ok(FileSent::All) => {
                self.sent = size;
                self.hasher = hasher;
                Ok(())
            }
            Ok(FileSent::EndedAt(at)) => Err(changed(Some(at))),
            Ok(FileSent::Longer) => Err(changed(None)),
            Err(ClientError::LocalRead(e)) => Err(local(e)),
            Err(e) => Err(e),
        }
    }

    /// Sends the trailer with the hash of the body and waits for the server
    /// to verify and publish the file.
    ///
    /// Fails with [`ClientError::BodyIncomplete`] if the body was not sent
    /// in full, [`ClientError::Refused`] if the server could not store it
    /// (the session stays usable), [`ClientError::Integrity`] if the server
    /// reports a different hash than the one of the bytes sent.
    pub fn finish(self) -> Result<PutDone, ClientError> {
        if self.sent != self.size {
            return Err(ClientError::BodyIncomplete {
                transferred: self.sent,
                expected: self.size,
            });
        }
        let hash: Hash = self.hasher.finalize().into();
        let session = self.session;
        if !self.trailer_sent {
            session.send(&Trailer { hash }, Operation::Put.into())?;
        }
        match session.receive()? {
            Response::PutDone { size, hash: stored } => {
                session.state = State::Ready;
                if size != self.size {
                    return Err(ProtocolError::StoredSize {
                        stored: size,
                        sent: self.size,
                    }
                    .into());
                }
                if stored != hash {
                    return Err(ClientError::Integrity {
                        expected: stored,
                        actual: hash,
                    });
                }
                Ok(PutDone { size, hash })
            }
            other => Err(session.refused_or_unexpected(Operation::Put, "PutDone", other)),
        }
    }
}

/// A download in progress: read [`Download::size`] body bytes, then
/// [`finish`](Download::finish) to check them.
///
/// Dropping it unfinished leaves the session unusable (the rest of the body
/// is unread).
#[derive(Debug)]
pub struct Download<'a, S> {
    session: &'a mut Session<S>,
    size: u64,
    modified_ns: u64,
    /// Where the body starts.
    offset: u64,
    received: u64,
    /// Whether the bytes before `offset` are in `hasher`.
    prefix_hashed: bool,
    hasher: blake3::Hasher,
}

impl<S: Read + Write> Download<'_, S> {
    /// The size of the file.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Where the body starts: the offset asked for with
    /// [`Session::start_get_from`] if the file was still the same version,
    /// else 0.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The version of the file being downloaded.
    pub fn version(&self) -> FileVersion {
        FileVersion {
            size: self.size,
            modified_ns: self.modified_ns,
        }
    }

    /// Hashes the first [`Download::offset`] bytes of the file, read from
    /// `file` (the copy being completed), as the whole-file hash needs;
    /// [`Download::receive_into`] does it itself.
    pub fn hash_prefix(&mut self, file: &File) -> Result<(), ClientError> {
        if !self.prefix_hashed {
            hash_range(&mut self.hasher, file, self.offset).map_err(ClientError::LocalRead)?;
            self.prefix_hashed = true;
        }
        Ok(())
    }

    /// The file's modification time on the server, in nanoseconds since
    /// the Unix epoch.
    pub fn modified_ns(&self) -> u64 {
        self.modified_ns
    }

    /// Body bytes still to read.
    pub fn remaining(&self) -> u64 {
        self.size - self.received
    }

    /// Reads the next body bytes into `buf`, returning how many; 0 only
    /// once the whole body has been read (or if `buf` is empty).
    ///
    /// Fails with [`ClientError::Truncated`] if the server closes the
    /// connection before the end of the body.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, ClientError> {
        if !self.prefix_hashed {
            return Err(ClientError::Misuse(
                "a resumed download hashes the part it already has before the rest",
            ));
        }
        let want = usize::try_from(self.remaining()).map_or(buf.len(), |r| r.min(buf.len()));
        let Some(buf) = buf.get_mut(..want) else {
            return Ok(0);
        };
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match self.session.stream.read(buf) {
                Ok(0) => {
                    return Err(ClientError::Truncated {
                        received: self.received,
                        expected: self.size,
                    });
                }
                Ok(n) => {
                    let got = buf.get(..n).unwrap_or_default();
                    self.hasher.update(got);
                    self.received += len64(got);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ClientError::io(e)),
            }
        }
    }

    /// Reads the rest of the body into `file` at its current position,
    /// with the hashing and the disk writes on another thread, so that
    /// neither holds up the reading.
    ///
    /// When the download starts past 0 (a resumed download), `file` must
    /// hold the file's first [`Download::offset`] bytes, and be positioned
    /// after them: they are hashed first, from `file`.
    ///
    /// A write error stops the download (the session is then unusable) and
    /// is returned as [`ClientError::Local`] about `path`.
    pub fn receive_into(
        &mut self,
        file: &mut File,
        path: &Path,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), ClientError> {
        let local = |source| ClientError::Local {
            action: "cannot write",
            path: path.to_owned(),
            source,
        };
        let read_back = |source| ClientError::Local {
            action: "cannot read",
            path: path.to_owned(),
            source,
        };
        let remaining = self.remaining();
        // A small body is read, hashed and written in one go.
        if let Ok(len) = usize::try_from(remaining)
            && len <= SMALL_FILE
        {
            self.hash_prefix(file).map_err(|e| match e {
                ClientError::LocalRead(e) => read_back(e),
                other => other,
            })?;
            if remaining == 0 {
                return Ok(());
            }
            let mut buf = vec![0u8; len];
            let mut filled = 0;
            while filled < len {
                let n = self.read(&mut buf[filled..])?;
                filled += n;
                progress(n as u64);
            }
            return file.write_all(&buf).map_err(local);
        }
        let Pipeline {
            to_full: to_writer,
            full: writer_rx,
            to_empty: to_reader,
            empty: reader_rx,
        } = Pipeline::new(remaining);
        let mut hasher = std::mem::take(&mut self.hasher);
        let prefix = match self.prefix_hashed {
            true => None,
            false => Some((file.try_clone().map_err(read_back)?, self.offset)),
        };
        let (read, written) = std::thread::scope(|scope| {
            // One worker hashes each buffer and writes it while it is still
            // in the core's cache.
            let writer = scope.spawn(move || -> Result<blake3::Hasher, (bool, io::Error)> {
                // The part of the file already there comes first; the body
                // waits in the pipeline meanwhile.
                if let Some((copy, len)) = &prefix {
                    hash_range(&mut hasher, copy, *len).map_err(|e| (true, e))?;
                }
                for (buf, n) in writer_rx {
                    let data = buf.get(..n).unwrap_or_default();
                    hasher.update(data);
                    file.write_all(data).map_err(|e| (false, e))?;
                    // The reader may be gone after a failure; the buffer
                    // is then dropped.
                    let _ = to_reader.send(buf);
                }
                Ok(hasher)
            });
            let read = (|| -> Result<(), ClientError> {
                while self.remaining() > 0 {
                    let Ok(mut buf) = reader_rx.recv() else {
                        // The writer stopped: its error says why.
                        return Ok(());
                    };
                    let want =
                        usize::try_from(self.remaining()).map_or(buf.len(), |r| r.min(buf.len()));
                    let mut filled = 0;
                    while filled < want {
                        match self.read_raw(buf.get_mut(filled..want).unwrap_or_default()) {
                            Ok(n) => {
                                filled += n;
                                progress(n as u64);
                            }
                            Err(e) => {
                                // What arrived is written all the same: a
                                // later download can resume after it.
                                if filled > 0 {
                                    let _ = to_writer.send((buf, filled));
                                }
                                return Err(e);
                            }
                        }
                    }
                    if to_writer.send((buf, filled)).is_err() {
                        return Ok(());
                    }
                }
                Ok(())
            })();
            drop(to_writer);
            let written = writer
                .join()
                .unwrap_or_else(|_| Err((false, io::Error::other("the writing thread failed"))));
            (read, written)
        });
        self.hasher = match written {
            Ok(hasher) => hasher,
            Err((true, e)) => return Err(read_back(e)),
            Err((false, e)) => return Err(local(e)),
        };
        read?;
        self.prefix_hashed = true;
        if self.remaining() > 0 {
            return Err(local(io::Error::other("the writing thread stopped early")));
        }
        Ok(())
    }

    /// Reads body bytes without hashing them; fails on a truncated body.
    fn read_raw(&mut self, buf: &mut [u8]) -> Result<usize, ClientError> {
        loop {
            match self.session.stream.read(buf) {
                Ok(0) => {
                    return Err(ClientError::Truncated {
                        received: self.received,
                        expected: self.size,
                    });
                }
                Ok(n) => {
                    self.received += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ClientError::io(e)),
            }
        }
    }

    /// Reads the trailer and checks the body's hash against it, returning
    /// the hash.
    ///
    /// Fails with [`ClientError::BodyIncomplete`] if the body was not read
    /// in full, and [`ClientError::Integrity`] if the hashes differ (the
    /// session stays usable: the exchange is complete).
    pub fn finish(self) -> Result<Hash, ClientError> {
        if !self.prefix_hashed {
            return Err(ClientError::Misuse(
                "a resumed download hashes the part it already has before the rest",
            ));
        }
        if self.received != self.size {
            return Err(ClientError::BodyIncomplete {
                transferred: self.received,
                expected: self.size,
            });
        }
        let session = self.session;
        let trailer: Trailer = receive(&mut session.stream, &session.config)?;
        session.state = State::Ready;
        let hash: Hash = self.hasher.finalize().into();
        if trailer.hash != hash {
            return Err(ClientError::Integrity {
                expected: trailer.hash,
                actual: hash,
            });
        }
        Ok(hash)
    }
}
