//! The session and file operations against a scripted in-memory server.
//!
//! A [`FakePeer`] plays back prepared server bytes and records what the
//! client sends, so each test states exactly what the server says and
//! checks exactly what the client wrote.

mod test_download;
mod test_handshake;
mod test_listing;
mod test_upload;

use crate::error::{ClientError, Exit, ProtocolError, Step};
use crate::files::{self, Options, Source, Staging};
use crate::progress::Meter;
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

/// A size larger than one body buffer, so bodies span several.
const CHUNK: usize = 1 << 20;

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

fn options(force: bool) -> Options {
    Options {
        force,
        resume: true,
    }
}

fn refused_code(err: &ClientError) -> ErrorCode {
    match err {
        ClientError::Refused { reply, .. } => reply.code,
        other => panic!("not a refusal: {other:?}"),
    }
}
