//! Uploads: put, and eager uploads taken in batches.

use super::{Refusal, Session, Summary, log_request};
use crate::body::{self, Transport};
use crate::conn::ConnError;
use crate::security::Access;
use crate::storage::local::store::{Store, StoreError, Upload};
use framekit_codec::message;
use framekit_transfer::{
    ErrorCode, MAX_EAGER_BODY, Put, PutEager, Request, Response, Trailer, validate_name,
};
use std::time::Instant;
use tracing::info;

/// Room for the reads of an eager upload's body: enough for the next
/// few small uploads of a pipelining client to arrive with it.
const EAGER_READ: usize = 64 * 1024;

/// At most this many eager uploads are stored in one trip.
const EAGER_BATCH: usize = 32;

/// At most this many body bytes of eager uploads are stored in one trip
/// (the first one may go over it alone).
const EAGER_BATCH_BYTES: usize = 256 * 1024;

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

/// Checks, writes, syncs and publishes one eager upload (blocking).
fn store_eager(store: &Store, eager: Eager) -> Result<blake3::Hash, Refusal> {
    let Eager {
        put, body, trailer, ..
    } = eager;
    store
        .check_put(&put.name, put.overwrite)
        .map_err(Refusal::Store)?;
    let hash = blake3::hash(&body);
    if trailer.hash != *hash.as_bytes() {
        return Err(Refusal::Mismatch);
    }
    let mut upload = store.begin_upload().map_err(Refusal::Store)?;
    let fits = store
        .available_space()
        .map_err(|e| Refusal::Store(e.into()))?
        >= put.size;
    if !fits {
        upload.discard();
        return Err(Refusal::Store(StoreError::NoSpace));
    }
    if let Err(e) = body::write_unwritten(&mut upload, &body) {
        upload.discard();
        return Err(Refusal::Store(e.into()));
    }
    store
        .publish(upload, &put.name, put.overwrite, &hash)
        .map_err(Refusal::Store)?;
    Ok(hash)
}

impl<S: Transport> Session<S> {
    /// Why an upload of `size` bytes as `name` is refused before the file
    /// system is asked, if it is.
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
        let key = put
            .resume_key
            .filter(|_| put.size > body::SMALL_BODY as u64);
        let (name, size, overwrite) = (put.name.clone(), put.size, put.overwrite);
        let prepared = self
            .blocking(move |store| -> Result<Upload, StoreError> {
                store.check_put(&name, overwrite)?;
                let upload = match key {
                    Some(key) => store.begin_resumable(key, &name, size)?,
                    None => store.begin_upload()?,
                };
                // Refused for space, a resumable upload stays as it was.
                if store.available_space()? < size - upload.offset() {
                    return Err(StoreError::NoSpace);
                }
                Ok(upload)
            })
            .await?;
        let upload = match prepared {
            Ok(upload) => upload,
            Err(e) => return self.refuse_store(e).await,
        };
        let offset = upload.offset();
        self.offset = offset;
        if offset > 0 {
            info!(name = %put.name.escape_debug(), offset, size, "resuming an interrupted upload");
        }
        if let Err(e) = self.conn.send(&Response::PutReady { offset }).await {
            self.blocking(move |_| drop(upload)).await?;
            return Err(e);
        }

        let received =
            match body::receive(&mut self.conn, &self.shared.pool, upload, size - offset).await {
                Ok(received) => received,
                Err(interrupted) => {
                    self.transferred = interrupted.received;
                    // What arrived is kept for resuming, if the upload can be.
                    let upload = interrupted.upload;
                    self.blocking(move |_| drop(upload)).await?;
                    return Err(interrupted.error);
                }
            };
        self.transferred = size - offset;
        let (mut upload, hash, write_error) = (received.upload, received.hash, received.error);
        let unwritten = received.unwritten;
        let trailer: Trailer = match self.conn.read_message().await {
            Ok(trailer) => trailer,
            Err(ConnError::Protocol(e)) if !e.is_truncated() => {
                upload.discard();
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
                self.blocking(move |_| drop(upload)).await?;
                return Err(e);
            }
        };
        // A failed upload is removed before the client hears about it.
        if let Some(error) = write_error {
            upload.discard();
            return self.refuse_store(error.into()).await;
        }
        if trailer.hash != *hash.as_bytes() {
            upload.discard();
            return self.refuse_with(Refusal::Mismatch).await;
        }
        let name = put.name.clone();
        match self
            .blocking(move |store| {
                if let Err(e) = body::write_unwritten(&mut upload, &unwritten) {
                    upload.discard();
                    return Err(StoreError::from(e));
                }
                store.publish(upload, &name, overwrite, &hash)
            })
            .await?
        {
            Ok(()) => {
                let done = Response::PutDone {
                    size,
                    hash: *hash.as_bytes(),
                };
                self.conn.send(&done).await?;
                Ok(Summary::done(size - offset))
            }
            Err(e) => self.refuse_store(e).await,
        }
    }

    /// An upload whose body and trailer follow the request at once: they
    /// are read whole before anything is decided, so that the connection
    /// stays in step whatever the answer; then the checks of a put, the
    /// hash, and the writing and publishing on a blocking thread.
    ///
    /// Eager uploads that a pipelining client sent behind this one, and
    /// that have already arrived whole, are taken along: one trip to the
    /// blocking thread stores them all, and their answers leave in one
    /// write. Each is still checked, answered and logged on its own, in
    /// order.
    pub(super) async fn put_eager(&mut self, put: PutEager) -> Result<Summary, ConnError> {
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

        let mut batch = vec![Eager {
            put,
            body,
            trailer,
            started: Instant::now(),
        }];
        let mut bytes = len;
        while batch.len() < EAGER_BATCH && bytes < EAGER_BATCH_BYTES {
            let Some(next) = self.buffered_eager() else {
                break;
            };
            bytes += next.body.len();
            batch.push(next);
        }

        // The checks that need no file system, then the rest, for all of
        // them in one trip.
        let checked: Vec<(Eager, Option<Refusal>)> = batch
            .into_iter()
            .map(|eager| {
                let refusal = self.eager_refusal(&eager.put);
                (eager, refusal)
            })
            .collect();
        let logged: Vec<(String, u64, Instant)> = checked
            .iter()
            .map(|(eager, _)| (eager.put.name.clone(), eager.put.size, eager.started))
            .collect();
        let results: Vec<Result<blake3::Hash, Refusal>> =
            if checked.iter().all(|(_, refusal)| refusal.is_some()) {
                checked
                    .into_iter()
                    .filter_map(|(_, refusal)| refusal)
                    .map(Err)
                    .collect()
            } else {
                self.blocking(move |store| {
                    checked
                        .into_iter()
                        .map(|(eager, refusal)| match refusal {
                            Some(refusal) => Err(refusal),
                            None => store_eager(store, eager),
                        })
                        .collect()
                })
                .await?
            };

        let mut summaries = Vec::with_capacity(results.len());
        for (result, (_, size, _)) in results.into_iter().zip(&logged) {
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

        // The first is logged by `request`, the others here (stored even if
        // their answers could not be sent).
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

    /// Why an eager upload is refused before the file system is asked, if
    /// it is.
    fn eager_refusal(&self, put: &PutEager) -> Option<Refusal> {
        if self.access == Access::ReadOnly {
            return Some(Refusal::read_only());
        }
        self.upload_refusal(&put.name, put.size)
    }
}

#[cfg(test)]
#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::Conn;
    use crate::{Config, Server};
    use std::io;
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;

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

    /// A disk that fills up mid-upload (`/dev/full` fails every write with
    /// ENOSPC): the body is still drained so the connection stays in step,
    /// and the error is reported.
    #[tokio::test]
    async fn disk_full_mid_body_is_reported_after_draining_the_body() {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::new(Config {
            root: dir.path().join("root"),
            ..Config::default()
        })
        .unwrap();
        let (mut client, server_end) = tokio::io::duplex(64 * 1024);
        let mut session = Session {
            conn: Conn::new(server_end, Duration::from_secs(5)),
            shared: server.shared(),
            access: Access::ReadWrite,
            peer: None,
            transferred: 0,
            offset: 0,
        };
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let upload = session.shared.store.upload_into(full);
        let body: Vec<u8> = (0..1_000_000u32).map(|i| i.to_le_bytes()[0]).collect();
        let sender = tokio::spawn(async move {
            client.write_all(&body).await.unwrap();
            client.write_all(b"next").await.unwrap();
            client
        });
        let shared = Arc::clone(&session.shared);
        let received = body::receive(&mut session.conn, &shared.pool, upload, 1_000_000)
            .await
            .expect("the body arrives whole");
        let error = received.error.expect("the write error is kept");
        assert_eq!(error.kind(), io::ErrorKind::StorageFull);
        assert_eq!(StoreError::from(error).code(), ErrorCode::NoSpace);
        let body: Vec<u8> = (0..1_000_000u32).map(|i| i.to_le_bytes()[0]).collect();
        assert_eq!(received.hash, blake3::hash(&body));
        // The bytes after the body are still there for the next message.
        let mut next = [0u8; 4];
        session.conn.read_body_exact(&mut next).await.unwrap();
        assert_eq!(&next, b"next");
        drop(sender.await.unwrap());
    }
}
