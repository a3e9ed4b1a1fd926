//! One connection to a framekit server, over any byte stream: the protocol
//! and nothing about local files.
//!
//! A [`Session`] owns a stream (`TcpStream`, a TLS stream, or an in-memory
//! peer in tests) on which the handshake has succeeded, and runs requests on
//! it one after the other, as [`framekit_transfer`] describes. Messages are
//! read through a [`BufReader`] so that small frames cost no system call
//! each; bodies are read through the same buffer (bytes that arrived with a
//! header are body bytes) and written with `write_all` straight to the
//! stream.
//!
//! - `upload.rs`: put, eager puts and puts of unknown length; an
//!   [`Upload`] or a [`StreamUpload`] takes the body piece by piece.
//! - `download.rs`: get, one at a time or pipelined; a [`Download`] gives
//!   the body chunk by chunk.
//! - `listing.rs`: list, list with directories, tree, stat, describe.
//! - `admin.rs`: delete a file or a directory, make a directory, rename.
//!
//! Both body types hash the body with BLAKE3 as it passes and check the
//! hash when finished, unless the caller hashes it itself (the file side
//! does, on another thread, and for resumed transfers whose hash covers
//! bytes that do not travel).
//!
//! # Failures
//!
//! An error the server reports ([`ClientError::Refused`]) leaves the session
//! ready for the next request. Any other failure in the middle of an
//! exchange (a lost connection, a malformed message, a body cut short, an
//! [`Upload`] or [`Download`] dropped before it was finished) leaves the
//! stream at an unknown position: the session refuses further requests with
//! [`ClientError::Unusable`], and should be dropped.

mod admin;
mod download;
mod listing;
mod upload;

pub use download::Download;
pub use listing::{Remote, TreeEntry};
pub use upload::{EagerSent, PutDone, StreamUpload, Upload};

use crate::error::{ClientError, ProtocolError, Step};
use framekit_codec::blocking::{read_message, write_message};
use framekit_codec::frame::FrameConfig;
use framekit_transfer::{
    ErrorCode, Hello, Operation, Request, Response, VERSION, Welcome, frame_config, validate_name,
};
use serde::de::DeserializeOwned;
use std::io::{BufRead, BufReader, Read, Write};

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
    /// This many gets were sent and not answered yet.
    Gets(usize),
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

    /// One request answered by one response: `accept` takes the expected
    /// response (giving any other back), an error reply is a refusal.
    fn exchange<T>(
        &mut self,
        request: &Request,
        expected: &'static str,
        accept: impl FnOnce(Response) -> Result<T, Response>,
    ) -> Result<T, ClientError> {
        self.begin()?;
        self.send_request(request)?;
        match accept(self.receive()?) {
            Ok(value) => {
                self.state = State::Ready;
                Ok(value)
            }
            Err(other) => Err(self.refused_or_unexpected(request.operation(), expected, other)),
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
            State::Gets(_) => Err(ClientError::Misuse(
                "pipelined gets must be answered before the next request",
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

    /// Writes body bytes. See [`Session::send`].
    fn send_body(&mut self, chunk: &[u8], step: Step) -> Result<(), ClientError> {
        self.stream.get_mut().write_all(chunk).map_err(|e| {
            let error = ClientError::io(e);
            salvage(&mut self.stream, &self.config, step, error)
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
            Response::Renamed => "Renamed",
            Response::Described(_) => "Described",
        },
    }
}

fn len64(buf: &[u8]) -> u64 {
    // usize is at most 64 bits on every supported target.
    buf.len() as u64
}
