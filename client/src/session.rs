//! One connection to a framekit server, over any byte stream.
//!
//! A [`Session`] owns a stream (`TcpStream`, a TLS stream, or an in-memory
//! peer in tests) on which the handshake has succeeded, and runs requests on
//! it one after the other, as the protocol in [`proto::transfer`] describes.
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

use crate::error::{ClientError, Operation, ProtocolError};
use proto::blocking::{read_message, write_message};
use proto::frame::FrameConfig;
use proto::transfer::{
    Delete, Entry, Get, Hash, Hello, List, Put, Request, Response, Stat, Trailer, VERSION, Welcome,
    frame_config, validate_name,
};
use serde::de::DeserializeOwned;
use std::io::{self, BufRead, BufReader, Read, Write};

/// A connection to a server, after a successful handshake.
///
/// ```no_run
/// use client::session::Session;
/// use std::net::TcpStream;
///
/// let stream = TcpStream::connect("127.0.0.1:7878")?;
/// let mut session = Session::handshake(stream, None)?;
/// session.list("", |entry| {
///     eprintln!("{} {}", entry.size, client::escape::Escaped(&entry.name));
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
            return Err(salvage(&mut stream, &config, Operation::Handshake, error));
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
                op: Operation::Handshake,
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
        check_name(name)?;
        self.begin()?;
        let request = Request::Put(Put {
            name: name.to_owned(),
            size,
            overwrite,
            resume_key: None,
        });
        self.send(&request, Operation::Put)?;
        match self.receive()? {
            // Without a resume key, the server starts at 0.
            Response::PutReady { offset: 0 } => Ok(Upload {
                session: self,
                size,
                sent: 0,
                hasher: blake3::Hasher::new(),
            }),
            Response::PutReady { offset } => Err(ProtocolError::Offset {
                offset,
                size,
                expected: 0,
            }
            .into()),
            other => Err(self.refused_or_unexpected(Operation::Put, "PutReady", other)),
        }
    }

    /// Starts downloading `name`.
    ///
    /// If the server refuses (not found...), the session stays usable.
    /// Otherwise read the body through the returned [`Download`] and
    /// [`finish`](Download::finish) it to check its hash.
    pub fn start_get(&mut self, name: &str) -> Result<Download<'_, S>, ClientError> {
        check_name(name)?;
        self.begin()?;
        let request = Request::Get(Get {
            name: name.to_owned(),
            offset: 0,
            if_version: None,
        });
        self.send(&request, Operation::Get)?;
        match self.receive()? {
            Response::GetReady {
                size,
                offset: 0,
                modified_ns,
            } => Ok(Download {
                session: self,
                size,
                modified_ns,
                received: 0,
                hasher: blake3::Hasher::new(),
            }),
            Response::GetReady { size, offset, .. } => Err(ProtocolError::Offset {
                offset,
                size,
                expected: 0,
            }
            .into()),
            other => Err(self.refused_or_unexpected(Operation::Get, "GetReady", other)),
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
        self.send(&request, Operation::List)?;
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
        self.begin()?;
        let request = Request::Stat(Stat {
            name: name.to_owned(),
        });
        self.send(&request, Operation::Stat)?;
        match self.receive()? {
            Response::Entry(entry) => {
                self.state = State::Ready;
                Ok(entry)
            }
            other => Err(self.refused_or_unexpected(Operation::Stat, "Entry", other)),
        }
    }

    /// Deletes one file.
    pub fn delete(&mut self, name: &str) -> Result<(), ClientError> {
        check_name(name)?;
        self.begin()?;
        let request = Request::Delete(Delete {
            name: name.to_owned(),
        });
        self.send(&request, Operation::Delete)?;
        match self.receive()? {
            Response::Deleted => {
                self.state = State::Ready;
                Ok(())
            }
            other => Err(self.refused_or_unexpected(Operation::Delete, "Deleted", other)),
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
        }
    }

    /// Writes one message. If the connection fails while writing, a server
    /// that refused and closed may have said why: that reason is returned.
    fn send(&mut self, msg: &impl serde::Serialize, op: Operation) -> Result<(), ClientError> {
        write_message(self.stream.get_mut(), &self.config, msg).map_err(|e| {
            let error = ClientError::write(e);
            salvage(&mut self.stream, &self.config, op, error)
        })
    }

    /// Writes body bytes. See [`Session::send`].
    fn send_body(&mut self, chunk: &[u8], op: Operation) -> Result<(), ClientError> {
        self.stream.get_mut().write_all(chunk).map_err(|e| {
            let error = ClientError::io(e);
            salvage(&mut self.stream, &self.config, op, error)
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
                self.state = State::Ready;
                ClientError::Refused { op, reply }
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
    op: Operation,
    error: ClientError,
) -> ClientError {
    // Only when the connection is known to be broken: after a timeout, a
    // read would wait as long again.
    if !matches!(error, ClientError::Io(_)) {
        return error;
    }
    match read_message(stream, config) {
        Ok(Some(Response::Error(reply))) => ClientError::Refused { op, reply },
        _ => error,
    }
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
        },
    }
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
    sent: u64,
    hasher: blake3::Hasher,
}

impl<S: Read + Write> Upload<'_, S> {
    /// The announced size of the file.
    pub fn size(&self) -> u64 {
        self.size
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
        let len = len64(chunk);
        if len > self.remaining() {
            return Err(ClientError::BodyOverrun {
                size: self.size,
                extra: len - self.remaining(),
            });
        }
        self.hasher.update(chunk);
        self.session.send_body(chunk, Operation::Put)?;
        self.sent += len;
        Ok(())
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
        session.send(&Trailer { hash }, Operation::Put)?;
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
    received: u64,
    hasher: blake3::Hasher,
}

impl<S: Read + Write> Download<'_, S> {
    /// The size of the file.
    pub fn size(&self) -> u64 {
        self.size
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

    /// Reads the trailer and checks the body's hash against it, returning
    /// the hash.
    ///
    /// Fails with [`ClientError::BodyIncomplete`] if the body was not read
    /// in full, and [`ClientError::Integrity`] if the hashes differ (the
    /// session stays usable: the exchange is complete).
    pub fn finish(self) -> Result<Hash, ClientError> {
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
