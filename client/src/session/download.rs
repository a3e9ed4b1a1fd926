//! Downloads: a get, from the start or from an offset, and its streamed
//! body.

use super::{Session, State, check_name, closes, receive, salvage};
use crate::error::{ClientError, ProtocolError};
use framekit_transfer::{FileVersion, Get, Hash, Operation, Request, Response, Trailer};
use std::io::{self, Read, Write};

impl<S: Read + Write> Session<S> {
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
    /// starts past 0 is hashed by the caller, who has the first bytes (see
    /// [`Download::read_unhashed`]).
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
                hasher: (start == 0).then(blake3::Hasher::new),
                after: State::Ready,
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
}

impl<S: Read + Write> Session<S> {
    /// Sends a get of each of `names` from byte 0, in one write, without
    /// reading the answers, so that the server sends one file while the
    /// client saves the one before: many small files then go at the speed
    /// of the disks rather than of round trips.
    ///
    /// Read the answers with [`Session::get_answer`], in the order the
    /// names were sent, before any other request. Keep what is unanswered
    /// bounded (this client keeps 64 gets of small files in flight): the
    /// server does not read on while an answer waits for a client that is
    /// only writing.
    pub fn send_gets(&mut self, names: &[&str]) -> Result<(), ClientError> {
        let unanswered = match self.state {
            State::Ready => 0,
            State::Gets(n) => n,
            State::Busy => return Err(ClientError::Unusable),
            State::Eager(_) => {
                return Err(ClientError::Misuse(
                    "eager uploads must be answered before the next request",
                ));
            }
        };
        let mut frames = Vec::new();
        for name in names {
            check_name(name)?;
            let request = Request::Get(Get {
                name: (*name).to_owned(),
                offset: 0,
                if_version: None,
            });
            let frame = framekit_codec::message::to_frame(&self.config, &request)
                .map_err(ClientError::write)?;
            frames.extend_from_slice(&frame);
        }
        if frames.is_empty() {
            return Ok(());
        }
        self.state = State::Busy;
        if let Err(e) = self.stream.get_mut().write_all(&frames) {
            let error = ClientError::io(e);
            // With answers still due, the next frame is one of them, not
            // an explanation of this failure.
            return Err(match unanswered {
                0 => salvage(&mut self.stream, &self.config, Operation::Get.into(), error),
                _ => error,
            });
        }
        self.state = State::Gets(unanswered + names.len());
        Ok(())
    }

    /// Reads the answer to the oldest get sent with [`Session::send_gets`]
    /// and not answered yet: a [`Download`] of the whole file, to read
    /// and [`finish`](Download::finish) before the next answer, or the
    /// server's refusal ([`ClientError::Refused`]), which is this get's
    /// failure alone unless its code closes the connection. Any other
    /// error leaves the session unusable: the gets still unanswered were
    /// not carried out.
    pub fn get_answer(&mut self) -> Result<Download<'_, S>, ClientError> {
        let State::Gets(unanswered) = self.state else {
            return Err(match self.state {
                State::Busy => ClientError::Unusable,
                _ => ClientError::Misuse("no get is waiting for its answer"),
            });
        };
        self.state = State::Busy;
        let answered = match unanswered - 1 {
            0 => State::Ready,
            n => State::Gets(n),
        };
        match self.receive()? {
            Response::GetReady {
                size,
                offset: 0,
                modified_ns,
            } => Ok(Download {
                session: self,
                size,
                modified_ns,
                offset: 0,
                received: 0,
                hasher: Some(blake3::Hasher::new()),
                after: answered,
            }),
            Response::GetReady { size, offset, .. } => Err(ProtocolError::Offset {
                offset,
                size,
                expected: 0,
            }
            .into()),
            Response::Error(reply) => {
                if !closes(reply.code) {
                    self.state = answered;
                }
                Err(ClientError::Refused {
                    step: Operation::Get.into(),
                    reply,
                })
            }
            other => Err(super::unexpected("GetReady", &other).into()),
        }
    }

    /// How many gets sent with [`Session::send_gets`] are not answered
    /// yet.
    pub fn gets_unanswered(&self) -> usize {
        match self.state {
            State::Gets(n) => n,
            _ => 0,
        }
    }
}

/// A download in progress: read [`Download::size`] body bytes, then
/// [`finish`](Download::finish) to check them.
///
/// The download hashes what [`Download::read`] reads. A caller that hashes
/// the file itself (on another thread, or because it holds the first
/// [`Download::offset`] bytes and the hash covers them too) reads with
/// [`Download::read_unhashed`] and ends with [`Download::finish_with_hash`].
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
    /// The hash of the file so far, while the download hashes it; `None`
    /// when the caller does.
    hasher: Option<blake3::Hasher>,
    /// The session's state once the download is finished: more pipelined
    /// gets may be waiting for their answers.
    after: State,
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

    /// The file's modification time on the server, in nanoseconds since
    /// the Unix epoch.
    pub fn modified_ns(&self) -> u64 {
        self.modified_ns
    }

    /// Body bytes still to read.
    pub fn remaining(&self) -> u64 {
        self.size - self.received
    }

    /// Reads the next body bytes into `buf` and hashes them, returning how
    /// many; 0 only once the whole body has been read (or if `buf` is
    /// empty).
    ///
    /// Fails with [`ClientError::Truncated`] if the server closes the
    /// connection before the end of the body.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, ClientError> {
        if self.hasher.is_none() {
            return Err(ClientError::Misuse(
                "a resumed download, or one read with read_unhashed, is hashed by the caller",
            ));
        }
        let n = self.read_body(buf)?;
        if let Some(hasher) = &mut self.hasher {
            hasher.update(buf.get(..n).unwrap_or_default());
        }
        Ok(n)
    }

    /// Like [`Download::read`], without hashing: from then on the caller
    /// hashes the whole file, and ends with [`Download::finish_with_hash`].
    pub fn read_unhashed(&mut self, buf: &mut [u8]) -> Result<usize, ClientError> {
        self.hasher = None;
        self.read_body(buf)
    }

    fn read_body(&mut self, buf: &mut [u8]) -> Result<usize, ClientError> {
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
        let Some(hasher) = &self.hasher else {
            return Err(ClientError::Misuse(
                "a download hashed by the caller ends with finish_with_hash",
            ));
        };
        let hash = hasher.finalize().into();
        self.finish_with_hash(hash)
    }

    /// Like [`Download::finish`], with `hash`, the caller's BLAKE3 hash of
    /// the whole file, to check against the trailer.
    pub fn finish_with_hash(self, hash: Hash) -> Result<Hash, ClientError> {
        if self.received != self.size {
            return Err(ClientError::BodyIncomplete {
                transferred: self.received,
                expected: self.size,
            });
        }
        let session = self.session;
        let trailer: Trailer = receive(&mut session.stream, &session.config)?;
        session.state = self.after;
        if trailer.hash != hash {
            return Err(ClientError::Integrity {
                expected: trailer.hash,
                actual: hash,
            });
        }
        Ok(hash)
    }
}
