//! Uploads: a put with a go-ahead and a streamed body, and eager uploads
//! that send a small body with the request.

use super::{Session, State, check_name, closes, len64, salvage, unexpected};
use crate::error::{ClientError, Feature, ProtocolError};
use framekit_codec::blocking::write_all_vectored;
use framekit_transfer::{
    Hash, MAX_CHUNK_LEN, MAX_EAGER_BODY, Operation, Put, PutEager, PutStream, Request, Response,
    Trailer,
};
use std::io::{self, Read, Write};

/// The server's confirmation of an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutDone {
    /// The size of the stored file.
    pub size: u64,
    /// The BLAKE3 hash of the stored file, equal to the hash of what was
    /// sent.
    pub hash: Hash,
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

impl<S: Read + Write> Session<S> {
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
                    hasher: (offset == 0).then(blake3::Hasher::new),
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

    /// Starts uploading a body of unknown length as `name`, replacing an
    /// existing file only if `overwrite`: send it through the returned
    /// [`StreamUpload`] in pieces of any size, then
    /// [`finish`](StreamUpload::finish) it. Such an upload is never
    /// resumed.
    ///
    /// If the server refuses (the name exists...), no body is sent and the
    /// session stays usable; a server too old for such uploads is
    /// [`ClientError::TooOld`].
    pub fn start_put_stream(
        &mut self,
        name: &str,
        overwrite: bool,
    ) -> Result<StreamUpload<'_, S>, ClientError> {
        check_name(name)?;
        self.begin()?;
        let request = Request::PutStream(PutStream {
            name: name.to_owned(),
            overwrite,
        });
        self.send_request(&request)?;
        match self.receive()? {
            Response::PutReady { offset: 0 } => Ok(StreamUpload {
                session: self,
                sent: 0,
                hasher: blake3::Hasher::new(),
            }),
            Response::PutReady { offset } => Err(ProtocolError::Offset {
                offset,
                size: 0,
                expected: 0,
            }
            .into()),
            other => Err(self
                .refused_or_unexpected(Operation::Put, "PutReady", other)
                .too_old(Feature::PutStream)),
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
            State::Gets(_) => {
                return Err(ClientError::Misuse(
                    "pipelined gets must be answered before the next request",
                ));
            }
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
                check_stored(size, hash, sent.size, sent.hash)
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
}

/// Checks the server's confirmation (`stored`, `stored_hash`) against what
/// was sent.
fn check_stored(
    stored: u64,
    stored_hash: Hash,
    sent: u64,
    sent_hash: Hash,
) -> Result<PutDone, ClientError> {
    if stored != sent {
        return Err(ProtocolError::StoredSize { stored, sent }.into());
    }
    if stored_hash != sent_hash {
        return Err(ClientError::Integrity {
            expected: stored_hash,
            actual: sent_hash,
        });
    }
    Ok(PutDone {
        size: stored,
        hash: stored_hash,
    })
}

/// An upload in progress: send exactly [`Upload::size`] body bytes, then
/// [`finish`](Upload::finish).
///
/// The upload hashes what [`Upload::send`] sends. A caller that hashes the
/// file itself (on another thread, or because the server already holds the
/// first [`Upload::offset`] bytes and the hash covers them too) sends with
/// [`Upload::send_unhashed`] and ends with [`Upload::finish_with_hash`].
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
    /// The hash of the file so far, while the upload hashes it; `None`
    /// when the caller does.
    hasher: Option<blake3::Hasher>,
}

impl<S: Read + Write> Upload<'_, S> {
    /// The announced size of the file.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes of the file the server already holds from an interrupted
    /// upload: the body starts there, and the caller hashes the file (see
    /// [`Upload::send_unhashed`]), since the hash covers the whole file.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Body bytes still to send.
    pub fn remaining(&self) -> u64 {
        self.size - self.sent
    }

    /// Sends the next body bytes (all of them, however many writes it
    /// takes), and hashes them.
    ///
    /// Fails without sending anything if `chunk` goes past the announced
    /// size, or if the caller hashes this upload.
    pub fn send(&mut self, chunk: &[u8]) -> Result<(), ClientError> {
        if self.hasher.is_none() {
            return Err(ClientError::Misuse(
                "a resumed upload, or one sent with send_unhashed, is hashed by the caller",
            ));
        }
        self.check_room(chunk)?;
        if let Some(hasher) = &mut self.hasher {
            hasher.update(chunk);
        }
        self.send_body(chunk)
    }

    /// Sends the next body bytes without hashing them: from then on the
    /// caller hashes the whole file, and ends with
    /// [`Upload::finish_with_hash`].
    ///
    /// Fails without sending anything if `chunk` goes past the announced
    /// size.
    pub fn send_unhashed(&mut self, chunk: &[u8]) -> Result<(), ClientError> {
        self.check_room(chunk)?;
        self.hasher = None;
        self.send_body(chunk)
    }

    fn check_room(&self, chunk: &[u8]) -> Result<(), ClientError> {
        let len = len64(chunk);
        if len > self.remaining() {
            return Err(ClientError::BodyOverrun {
                size: self.size,
                extra: len - self.remaining(),
            });
        }
        Ok(())
    }

    fn send_body(&mut self, chunk: &[u8]) -> Result<(), ClientError> {
        self.session.send_body(chunk, Operation::Put.into())?;
        self.sent += len64(chunk);
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
        let Some(hasher) = &self.hasher else {
            return Err(ClientError::Misuse(
                "an upload hashed by the caller ends with finish_with_hash",
            ));
        };
        let hash = hasher.finalize().into();
        self.finish_with_hash(hash)
    }

    /// Like [`Upload::finish`], with `hash`, the caller's BLAKE3 hash of the
    /// whole file, as the trailer.
    pub fn finish_with_hash(self, hash: Hash) -> Result<PutDone, ClientError> {
        if self.sent != self.size {
            return Err(ClientError::BodyIncomplete {
                transferred: self.sent,
                expected: self.size,
            });
        }
        let session = self.session;
        session.send(&Trailer { hash }, Operation::Put.into())?;
        match session.receive()? {
            Response::PutDone { size, hash: stored } => {
                session.state = State::Ready;
                check_stored(size, stored, self.size, hash)
            }
            other => Err(session.refused_or_unexpected(Operation::Put, "PutDone", other)),
        }
    }
}

/// An upload of unknown length in progress: send the body with
/// [`StreamUpload::send`], then [`finish`](StreamUpload::finish).
///
/// Dropping it unfinished leaves the session unusable (the server is still
/// waiting for the end of the body).
#[derive(Debug)]
pub struct StreamUpload<'a, S> {
    session: &'a mut Session<S>,
    sent: u64,
    hasher: blake3::Hasher,
}

impl<S: Read + Write> StreamUpload<'_, S> {
    /// Body bytes sent so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Sends the next body bytes (as one chunk or more; none for an empty
    /// slice) and hashes them.
    pub fn send(&mut self, data: &[u8]) -> Result<(), ClientError> {
        let max = usize::try_from(MAX_CHUNK_LEN).unwrap_or(usize::MAX);
        for piece in data.chunks(max) {
            // A piece is at most MAX_CHUNK_LEN bytes long.
            let head = u32::try_from(piece.len()).unwrap_or(MAX_CHUNK_LEN);
            let written = write_all_vectored(
                self.session.stream.get_mut(),
                &mut [
                    io::IoSlice::new(&head.to_be_bytes()),
                    io::IoSlice::new(piece),
                ],
            );
            if let Err(e) = written {
                let error = ClientError::io(e);
                return Err(salvage(
                    &mut self.session.stream,
                    &self.session.config,
                    Operation::Put.into(),
                    error,
                ));
            }
            self.hasher.update(piece);
            self.sent += len64(piece);
        }
        Ok(())
    }

    /// Ends the body, sends the trailer with its hash and waits for the
    /// server to verify and publish the file, as [`Upload::finish`] does.
    pub fn finish(self) -> Result<PutDone, ClientError> {
        let hash: Hash = self.hasher.finalize().into();
        let session = self.session;
        session.send_body(&[0; 4], Operation::Put.into())?;
        session.send(&Trailer { hash }, Operation::Put.into())?;
        match session.receive()? {
            Response::PutDone { size, hash: stored } => {
                session.state = State::Ready;
                check_stored(size, stored, self.sent, hash)
            }
            other => Err(session.refused_or_unexpected(Operation::Put, "PutDone", other)),
        }
    }
}
