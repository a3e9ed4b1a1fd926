//! Uploads: put, and eager uploads taken in batches.

use super::{Refusal, Session, Summary, log_request};
use crate::Transport;
use crate::body::{self, Received, StreamFailure};
use crate::conn::ConnError;
use crate::security::Access;
use crate::storage::{SMALL_BODY, SmallPut, Storage, StoreError, Upload};
use framekit_codec::message;
use framekit_transfer::{
    ErrorCode, MAX_EAGER_BODY, Put, PutEager, PutStream, Request, Response, Trailer, validate_name,
};
use std::io;
use std::time::Instant;
use tracing::info;

/// Room for the reads of an eager upload's body: enough for a whole
/// batch of the small uploads a pipelining client sent behind it to
/// arrive with it, since a batch takes only what has arrived. (With 64
/// KiB, batches of 4 KiB files held about 15.)
const EAGER_READ: usize = 512 * 1024;

/// At most this many eager uploads are stored in one trip. Each trip
/// costs the disk two journal commits, so larger batches go faster there:
/// 64 (with 512 KiB) against 32 (with 256 KiB) measured 1.08-1.10 times
/// as fast on ext4, 1.03 on tmpfs (docs/BENCHMARKS.md).
const EAGER_BATCH: usize = 64;

/// At most this many body bytes of eager uploads are stored in one trip
/// (the first one may go over it alone).
const EAGER_BATCH_BYTES: usize = 512 * 1024;

/// An eager upload read whole, waiting to be stored.
struct Eager {
    put: PutEager,
    body: bytes::Bytes,
    trailer: Trailer,
    /// When its request was taken up, for the log.
    started: Instant,
}

/// A trailer frame at the start of `bytes`, if it is whole and well-formed
/// there, and the length of that frame.
fn whole_trailer(bytes: &[u8]) -> Option<(Trailer, usize)> {
    // A trailer's payload is the 32-byte hash alone: its frame starts with
    // the prefix of that length.
    let head = framekit_transfer::frame_config()
        .encode_head(blake3::OUT_LEN)
        .ok()?;
    let payload = bytes
        .strip_prefix(head.as_slice())?
        .get(..blake3::OUT_LEN)?;
    let trailer = message::decode(payload).ok()?;
    Some((trailer, head.as_slice().len() + blake3::OUT_LEN))
}

impl<S: Transport, B: Storage> Session<S, B> {
    /// Why an upload of `size` bytes as `name` is refused before the
    /// storage is asked, if it is.
    fn upload_refusal(&self, name: &str, size: u64) -> Option<Refusal> {
        if let Err(e) = validate_name(name) {
            return Some(Refusal::Store(e.into()));
        }
        let max = self.shared.config.max_file_size;
        (size > max).then(|| {
            Refusal::Reply(
                ErrorCode::TooLarge,
                format!("{size} bytes is over the server's limit of {max} bytes"),
            )
        })
    }

    pub(super) async fn put(&mut self, put: Put) -> Result<Summary, ConnError> {
        if let Some(refusal) = self.upload_refusal(&put.name, put.size) {
            return self.refuse_with(refusal).await;
        }
        // A small body arrives in one piece: there is nothing to resume.
        let key = put.resume_key.filter(|_| put.size > SMALL_BODY as u64);
        let storage = &self.shared.storage;
        let begun = match key {
            Some(key) => {
                storage
                    .resume_upload(key, &put.name, put.size, put.overwrite)
                    .await
            }
            None => {
                storage
                    .create_upload(&put.name, put.size, put.overwrite)
                    .await
            }
        };
        let upload = match begun {
            Ok(upload) => upload,
            Err(e) => return self.refuse_store(e).await,
        };
        let offset = upload.offset();
        self.offset = offset;
        if offset > 0 {
            info!(name = %put.name.escape_debug(), offset, size = put.size, "resuming an interrupted upload");
        }
        if let Err(e) = self.conn.send(&Response::PutReady { offset }).await {
            upload.abandon().await;
            return Err(e);
        }
        let body_size = put.size - offset;
        match body::receive(&mut self.conn, &self.shared.pool, upload, body_size).await {
            Ok(received) => {
                self.transferred = body_size;
                self.finish_put(&put.name, put.overwrite, put.size, received)
                    .await
            }
            Err(interrupted) => {
                self.transferred = interrupted.received;
                // What arrived is kept for resuming, if the upload can be.
                if let Some(upload) = interrupted.upload {
                    upload.abandon().await;
                }
                Err(interrupted.error)
            }
        }
    }

    /// An upload of unknown length: the checks of a put (but for the
    /// size and the room, which are not known), then the body in chunks,
    /// at most the largest file accepted, then the trailer as for a put.
    /// Nothing of it is kept if it is interrupted.
    pub(super) async fn put_stream(&mut self, put: PutStream) -> Result<Summary, ConnError> {
        if let Some(refusal) = self.upload_refusal(&put.name, 0) {
            return self.refuse_with(refusal).await;
        }
        let storage = &self.shared.storage;
        let upload = match storage.create_upload(&put.name, 0, put.overwrite).await {
            Ok(upload) => upload,
            Err(e) => return self.refuse_store(e).await,
        };
        if let Err(e) = self.conn.send(&Response::PutReady { offset: 0 }).await {
            upload.discard().await;
            return Err(e);
        }
        let max = self.shared.config.max_file_size;
        match body::receive_stream(&mut self.conn, &self.shared.pool, upload, max).await {
            Ok((received, size)) => {
                self.transferred = size;
                self.finish_put(&put.name, put.overwrite, size, received)
                    .await
            }
            Err((failure, upload, arrived)) => {
                self.transferred = arrived;
                if let Some(upload) = upload {
                    upload.discard().await;
                }
                let (code, message) = match failure {
                    StreamFailure::Conn(e) => return Err(e),
                    StreamFailure::ChunkTooLong(len) => (
                        ErrorCode::BadRequest,
                        format!(
                            "a chunk declares {len} bytes, over the limit of {}",
                            framekit_transfer::MAX_CHUNK_LEN
                        ),
                    ),
                    StreamFailure::TooLarge(max) => (
                        ErrorCode::TooLarge,
                        format!("the body is over the server's limit of {max} bytes"),
                    ),
                };
                // The rest of the body cannot be skipped: hang up, telling
                // the client why.
                self.refuse(code, message.clone()).await?;
                self.conn.shutdown().await;
                Err(ConnError::Violation(message))
            }
        }
    }

    /// Reads the trailer of a put whose body (of `size` bytes in all) was
    /// received, checks the body against it, and publishes the upload as
    /// `name`.
    async fn finish_put(
        &mut self,
        name: &str,
        overwrite: bool,
        size: u64,
        received: Received<B::Upload>,
    ) -> Result<Summary, ConnError> {
        let Received {
            upload,
            hash,
            error,
        } = received;
        let trailer: Trailer = match self.conn.read_message().await {
            Ok(trailer) => trailer,
            Err(ConnError::Protocol(e)) if !e.is_truncated() => {
                upload.discard().await;
                self.refuse(ErrorCode::BadRequest, format!("expected a trailer: {e}"))
                    .await?;
                // Hang up like every other protocol error: closing with the
                // peer's surplus unread would reset the connection and
                // destroy the answers still queued for it.
                self.conn.shutdown().await;
                return Err(e.into());
            }
            Err(e) => {
                // The whole body arrived: it is kept if it can be, and a
                // resumed upload only needs to send the trailer.
                upload.abandon().await;
                return Err(e);
            }
        };
        // A failed upload is removed before the client hears about it.
        if let Some(error) = error {
            upload.discard().await;
            return self.refuse_store(error.into()).await;
        }
        if trailer.hash != *hash.as_bytes() {
            upload.discard().await;
            return self.refuse_store(StoreError::Mismatch).await;
        }
        let storage = &self.shared.storage;
        match storage.publish(upload, name, overwrite, hash).await {
            Ok(()) => {
                let done = Response::PutDone {
                    size,
                    hash: *hash.as_bytes(),
                };
                self.conn.send(&done).await?;
                Ok(Summary::done(size - self.offset))
            }
            Err(e) => self.refuse_store(e).await,
        }
    }

    /// An upload whose body and trailer follow the request at once: they
    /// are read whole before anything is decided, so that the connection
    /// stays in step whatever the answer; then the checks of a put, the
    /// hash, and the storing.
    ///
    /// Eager uploads that a pipelining client sent behind this one, and
    /// that have already arrived whole, are taken along: one trip to the
    /// storage stores them all, and their answers leave in one write. Each
    /// is still checked, answered and logged on its own, in order.
    pub(super) async fn put_eager(&mut self, put: PutEager) -> Result<Summary, ConnError> {
        let first = self.read_eager(put).await?;
        let mut batch = vec![first];
        let mut bytes = batch[0].body.len();
        while batch.len() < EAGER_BATCH && bytes < EAGER_BATCH_BYTES {
            let Some(next) = self.buffered_eager() else {
                break;
            };
            bytes += next.body.len();
            batch.push(next);
        }
        let logged: Vec<(String, u64, Instant)> = batch
            .iter()
            .map(|eager| (eager.put.name.clone(), eager.put.size, eager.started))
            .collect();
        let results = self.store_eager(batch).await;
        self.answer_eager(results, &logged).await
    }

    /// Reads an eager upload's body and trailer.
    async fn read_eager(&mut self, put: PutEager) -> Result<Eager, ConnError> {
        let Some(len) = usize::try_from(put.size)
            .ok()
            .filter(|_| put.size <= MAX_EAGER_BODY)
        else {
            let message = format!(
                "an eager upload carries at most {MAX_EAGER_BODY} bytes, not {}",
                put.size
            );
            self.refuse(ErrorCode::BadRequest, message.clone()).await?;
            self.conn.shutdown().await;
            return Err(ConnError::Violation(message));
        };
        let body = match self.conn.read_body_bytes(len, EAGER_READ).await {
            Ok(body) => body,
            Err((arrived, e)) => {
                self.transferred = arrived as u64;
                return Err(e);
            }
        };
        self.transferred = put.size;
        let trailer: Trailer = match self.conn.read_message().await {
            Ok(trailer) => trailer,
            Err(ConnError::Protocol(e)) if !e.is_truncated() => {
                self.refuse(ErrorCode::BadRequest, format!("expected a trailer: {e}"))
                    .await?;
                self.conn.shutdown().await;
                return Err(e.into());
            }
            Err(e) => return Err(e),
        };
        Ok(Eager {
            put,
            body,
            trailer,
            started: Instant::now(),
        })
    }

    /// Checks a batch of eager uploads, those that need no storage first,
    /// and stores the others in one trip: one result each, in order.
    async fn store_eager(&self, batch: Vec<Eager>) -> Vec<Result<blake3::Hash, Refusal>> {
        let mut refused = Vec::with_capacity(batch.len());
        let mut puts = Vec::new();
        for eager in batch {
            let refusal = self.eager_refusal(&eager.put);
            if refusal.is_none() {
                puts.push(SmallPut {
                    name: eager.put.name,
                    overwrite: eager.put.overwrite,
                    body: eager.body,
                    expected: eager.trailer.hash,
                });
            }
            refused.push(refusal);
        }
        let stored = if puts.is_empty() {
            Vec::new()
        } else {
            self.shared.storage.store_batch(puts).await
        };
        let mut stored = stored.into_iter();
        refused
            .into_iter()
            .map(|refusal| match refusal {
                Some(refusal) => Err(refusal),
                None => match stored.next() {
                    Some(result) => result.map_err(Refusal::Store),
                    None => Err(Refusal::Store(StoreError::Io(io::Error::other(
                        "the storage left an upload of a batch unanswered",
                    )))),
                },
            })
            .collect()
    }

    /// Answers a batch of eager uploads in one write, and logs all but the
    /// first (which `request` logs).
    async fn answer_eager(
        &mut self,
        results: Vec<Result<blake3::Hash, Refusal>>,
        logged: &[(String, u64, Instant)],
    ) -> Result<Summary, ConnError> {
        let mut summaries = Vec::with_capacity(results.len());
        for (result, (_, size, _)) in results.into_iter().zip(logged) {
            let (response, summary) = match result {
                Ok(hash) => (
                    Response::PutDone {
                        size: *size,
                        hash: *hash.as_bytes(),
                    },
                    Summary::done(*size),
                ),
                Err(refusal) => {
                    let reply = refusal.reply();
                    let summary = Summary::refused(reply.code);
                    (Response::Error(reply), summary)
                }
            };
            self.conn.queue(&response)?;
            summaries.push(summary);
        }
        let flushed = self.conn.flush().await;

        // The others are stored even if their answers could not be sent.
        let mut summaries = summaries.into_iter();
        let first = summaries.next().unwrap_or(Summary::done(0));
        for (summary, (name, size, started)) in summaries.zip(logged.iter().skip(1)) {
            log_request(
                "put",
                name,
                0,
                *size,
                started.elapsed().as_millis(),
                &Ok(summary),
            );
        }
        flushed?;
        Ok(first)
    }

    /// The next eager upload, if its request, body and trailer have all
    /// arrived already; otherwise nothing is taken.
    fn buffered_eager(&mut self) -> Option<Eager> {
        let frame = self.conn.buffered_frame()?;
        let put = match message::decode::<Request>(&frame) {
            Ok(Request::PutEager(put)) if put.size <= MAX_EAGER_BODY => put,
            _ => {
                self.conn.unread(frame);
                return None;
            }
        };
        let len = usize::try_from(put.size).unwrap_or(usize::MAX);
        // The trailer must be whole and well-formed too: a malformed one is
        // answered by the ordinary path, after the uploads before it.
        let trailer = self.conn.buffered().get(len..).and_then(whole_trailer);
        let Some((trailer, trailer_len)) = trailer else {
            self.conn.unread(frame);
            return None;
        };
        let body = self.conn.take_buffered_bytes(len);
        let _ = self.conn.take_buffered_bytes(trailer_len);
        Some(Eager {
            put,
            body,
            trailer,
            started: Instant::now(),
        })
    }

    /// Why an eager upload is refused before the storage is asked, if it
    /// is.
    fn eager_refusal(&self, put: &PutEager) -> Option<Refusal> {
        if self.access == Access::ReadOnly {
            return Some(Refusal::read_only());
        }
        self.upload_refusal(&put.name, put.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trailer_is_taken_from_the_buffer_only_when_whole_and_well_formed() {
        let hash = *blake3::hash(b"body").as_bytes();
        let frame =
            message::to_frame(&framekit_transfer::frame_config(), &Trailer { hash }).unwrap();
        let mut buffered = frame.to_vec();
        buffered.extend_from_slice(b"next request");
        let (trailer, len) = whole_trailer(&buffered).unwrap();
        assert_eq!((trailer.hash, len), (hash, frame.len()));
        // Not all there yet.
        assert!(whole_trailer(&frame[..frame.len() - 1]).is_none());
        // A frame of another length is not a trailer.
        let mut longer = frame.to_vec();
        longer[3] += 1;
        longer.push(0);
        assert!(whole_trailer(&longer).is_none());
    }
}
