//! File bodies between a connection and the storage.
//!
//! A body flows through a small ring of buffers between the connection (on
//! the async runtime) and the storage backend's [`BodySink`] or
//! [`BodySource`], which hashes and stores (or reads) each buffer while the
//! connection works on the next one, so a transfer goes at the pace of the
//! slower of the two. Small bodies move in one piece.
//!
//! Memory is bounded: large buffers come from a shared budget, and
//! transfers beyond it get small ones.

use crate::conn::{Conn, ConnError};
use crate::storage::{BodySink, BodySource, Chunk, Download, SMALL_BODY, SinkEnd, Stopped, Upload};
use framekit_transfer::MAX_CHUNK_LEN;
use std::io;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncRead, AsyncWrite};

/// The size of a large body buffer: small enough to stay in a core's L2
/// cache between the copy from the socket and the hashing and writing.
const LARGE: usize = 256 * 1024;

/// The size of a small body buffer.
const SMALL: usize = 64 * 1024;

/// Buffers in a transfer's ring.
const RING: usize = 4;

/// How many large buffers may exist at once (8 MiB): a few transfers at
/// full speed; more get small buffers.
const LARGE_BUDGET: usize = 8 * RING;

/// Large body buffers, shared by all transfers within a budget.
#[derive(Debug, Default)]
pub(crate) struct BufferPool {
    large_in_use: AtomicUsize,
    free: Mutex<Vec<Vec<u8>>>,
}

impl BufferPool {
    /// The ring of buffers for a body of `size` bytes: large ones while the
    /// budget allows, small ones otherwise.
    fn ring(&self, size: u64) -> Ring<'_> {
        let taken = self
            .large_in_use
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n + RING <= LARGE_BUDGET).then_some(n + RING)
            })
            .is_ok();
        let buffers = if taken {
            let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
            (0..RING)
                .map(|_| free.pop().unwrap_or_else(|| vec![0u8; LARGE]))
                .collect()
        } else {
            let len = usize::try_from(size).map_or(SMALL, |n| n.min(SMALL));
            (0..RING).map(|_| vec![0u8; len]).collect()
        };
        Ring {
            pool: self,
            large: taken,
            buffers,
        }
    }

    fn give_back(&self, buffers: Vec<Vec<u8>>) {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        for buf in buffers {
            if buf.len() == LARGE && free.len() < LARGE_BUDGET {
                free.push(buf);
            }
        }
    }
}

/// A transfer's buffers; returns its share of the budget when dropped.
struct Ring<'a> {
    pool: &'a BufferPool,
    large: bool,
    buffers: Vec<Vec<u8>>,
}

impl Ring<'_> {
    /// The buffers, lent out to a sink or a source.
    fn lend(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.buffers)
    }

    /// Buffers given back.
    fn give_back(&mut self, buffers: Vec<Vec<u8>>) {
        self.buffers.extend(buffers);
    }
}

impl Drop for Ring<'_> {
    fn drop(&mut self) {
        if self.large {
            self.pool.give_back(std::mem::take(&mut self.buffers));
            self.pool.large_in_use.fetch_sub(RING, Ordering::AcqRel);
        }
    }
}

/// What receiving a body produced.
#[derive(Debug)]
pub(crate) struct Received<U> {
    /// The upload, its file complete and synced unless `error` is set
    /// (a small body is held in memory until it is published).
    pub(crate) upload: U,
    /// The BLAKE3 hash of the whole file: the part the upload already held
    /// (see [`Upload::offset`]), then the body.
    pub(crate) hash: blake3::Hash,
    /// The first storage error, if storing failed. The body was still read
    /// to its end, so the connection is in step.
    pub(crate) error: Option<io::Error>,
}

/// A body that did not arrive whole.
#[derive(Debug)]
pub(crate) struct Interrupted<U> {
    /// Why: the peer left, went silent, or the stream failed.
    pub(crate) error: ConnError,
    /// The upload, holding every body byte that arrived (`None` only if a
    /// worker failed).
    pub(crate) upload: Option<U>,
    /// How many body bytes arrived.
    pub(crate) received: u64,
}

fn stopped() -> ConnError {
    ConnError::Io(io::Error::other(Stopped))
}

/// Receives `size` body bytes into the upload, after what it already
/// holds, hashing the whole file on the way. Each buffer must fill within
/// the idle timeout, so a peer cannot hold the connection by trickling the
/// body.
///
/// If the body does not arrive whole, every byte that did is given to the
/// upload before it is handed back in [`Interrupted`].
pub(crate) async fn receive<S, U>(
    conn: &mut Conn<S>,
    pool: &BufferPool,
    mut upload: U,
    size: u64,
) -> Result<Received<U>, Interrupted<U>>
where
    S: AsyncRead + AsyncWrite + Unpin,
    U: Upload,
{
    if upload.offset() == 0
        && let Ok(len) = usize::try_from(size)
        && len <= SMALL_BODY
    {
        // A whole small file: it is stored when it is published, in the
        // same trip to the storage. Nothing of it is kept if it is cut
        // short (small uploads are not resumable).
        let mut buf = vec![0u8; len];
        let (filled, read) = conn.read_body_fill(&mut buf).await;
        return match read {
            Ok(()) => {
                let hash = blake3::hash(&buf);
                upload.hold(buf);
                Ok(Received {
                    upload,
                    hash,
                    error: None,
                })
            }
            Err(error) => Err(Interrupted {
                error,
                upload: Some(upload),
                received: filled as u64,
            }),
        };
    }

    let mut ring = pool.ring(size);
    let mut sink = upload.sink(size, ring.lend());
    let (received, failure) = pump(conn, &mut sink, &mut ring, size).await;
    let end: SinkEnd<U> = sink.finish(failure.is_none()).await;
    ring.give_back(end.buffers);
    match (failure, end.upload) {
        (None, Some(upload)) => Ok(Received {
            upload,
            // Without a hash, `error` says why.
            hash: end.hash.unwrap_or(blake3::Hash::from_bytes([0; 32])),
            error: match (end.error, end.hash) {
                (None, None) => Some(io::Error::other(Stopped)),
                (error, _) => error,
            },
        }),
        (Some(error), upload @ Some(_)) => Err(Interrupted {
            error,
            upload,
            received,
        }),
        (_, None) => Err(Interrupted {
            error: stopped(),
            upload: None,
            received,
        }),
    }
}

/// Moves `size` body bytes from the connection into `sink`. Returns how
/// many arrived, and why the body stopped short, if it did.
async fn pump<S, K>(
    conn: &mut Conn<S>,
    sink: &mut K,
    ring: &mut Ring<'_>,
    size: u64,
) -> (u64, Option<ConnError>)
where
    S: AsyncRead + AsyncWrite + Unpin,
    K: BodySink,
{
    let mut remaining = size;
    let mut received = 0u64;
    loop {
        if remaining == 0 {
            return (received, None);
        }
        let Some(mut buf) = sink.buffer().await else {
            return (received, Some(stopped()));
        };
        let want = usize::try_from(remaining).map_or(buf.len(), |r| r.min(buf.len()));
        let (filled, read) = conn.read_body_fill(&mut buf[..want]).await;
        remaining -= filled as u64;
        received += filled as u64;
        if filled == 0 {
            ring.buffers.push(buf);
        } else if sink
            .take(Chunk {
                buf,
                range: 0..filled,
            })
            .await
            .is_err()
        {
            return (received, Some(stopped()));
        }
        if let Err(e) = read {
            return (received, Some(e));
        }
    }
}

/// Why a body of unknown length stopped before its end.
#[derive(Debug)]
pub(crate) enum StreamFailure {
    /// The connection failed, closed or went silent.
    Conn(ConnError),
    /// A chunk declared more than [`MAX_CHUNK_LEN`] bytes.
    ChunkTooLong(u32),
    /// The body grew past the largest file accepted.
    TooLarge(u64),
}

/// Receives a body of unknown length, sent as chunks (see
/// [`framekit_transfer::PutStream`]), into the upload, hashing it on the
/// way; at most `max` bytes. Returns what [`receive`] returns, with the
/// body's length. Each chunk's length and every buffer of its data must
/// arrive within the idle timeout.
///
/// On a failure the upload comes back, if it can, for the caller to
/// discard: nothing of such a body is kept.
pub(crate) async fn receive_stream<S, U>(
    conn: &mut Conn<S>,
    pool: &BufferPool,
    upload: U,
    max: u64,
) -> Result<(Received<U>, u64), (StreamFailure, Option<U>, u64)>
where
    S: AsyncRead + AsyncWrite + Unpin,
    U: Upload,
{
    let mut ring = pool.ring(max);
    let mut sink = upload.sink(max, ring.lend());
    let (received, failure) = pump_chunks(conn, &mut sink, &mut ring, max).await;
    let end: SinkEnd<U> = sink.finish(failure.is_none()).await;
    ring.give_back(end.buffers);
    match (failure, end.upload) {
        (None, Some(upload)) => {
            let error = match (end.error, end.hash) {
                (None, None) => Some(io::Error::other(Stopped)),
                (error, _) => error,
            };
            let hash = end.hash.unwrap_or(blake3::Hash::from_bytes([0; 32]));
            Ok((
                Received {
                    upload,
                    hash,
                    error,
                },
                received,
            ))
        }
        (Some(failure), upload) => Err((failure, upload, received)),
        (None, None) => Err((StreamFailure::Conn(stopped()), None, received)),
    }
}

/// Moves the chunks of a body of unknown length from the connection into
/// `sink`, filling each buffer across chunks. Returns how many body bytes
/// arrived, and why the body stopped short, if it did.
async fn pump_chunks<S, K>(
    conn: &mut Conn<S>,
    sink: &mut K,
    ring: &mut Ring<'_>,
    max: u64,
) -> (u64, Option<StreamFailure>)
where
    S: AsyncRead + AsyncWrite + Unpin,
    K: BodySink,
{
    let mut received = 0u64;
    // The buffer being filled, and how much of it is.
    let mut current: Option<(Vec<u8>, usize)> = None;
    let failure = loop {
        let mut head = [0u8; 4];
        if let (_, Err(e)) = conn.read_body_fill(&mut head).await {
            break Some(StreamFailure::Conn(e));
        }
        let len = u32::from_be_bytes(head);
        if len == 0 {
            break None;
        }
        if len > MAX_CHUNK_LEN {
            break Some(StreamFailure::ChunkTooLong(len));
        }
        if received + u64::from(len) > max {
            break Some(StreamFailure::TooLarge(max));
        }
        let mut left = u64::from(len);
        let mut stopped_short = None;
        while left > 0 {
            let (mut buf, fill) = match current.take() {
                Some(current) => current,
                None => match sink.buffer().await {
                    Some(buf) => (buf, 0),
                    None => {
                        stopped_short = Some(StreamFailure::Conn(stopped()));
                        break;
                    }
                },
            };
            let room = buf.len() - fill;
            let want = usize::try_from(left).map_or(room, |l| l.min(room));
            let (filled, read) = conn.read_body_fill(&mut buf[fill..fill + want]).await;
            left -= filled as u64;
            received += filled as u64;
            let fill = fill + filled;
            if fill == buf.len() || read.is_err() {
                let chunk = Chunk {
                    buf,
                    range: 0..fill,
                };
                if sink.take(chunk).await.is_err() {
                    stopped_short = Some(StreamFailure::Conn(stopped()));
                    break;
                }
            } else {
                current = Some((buf, fill));
            }
            if let Err(e) = read {
                stopped_short = Some(StreamFailure::Conn(e));
                break;
            }
        }
        if stopped_short.is_some() {
            break stopped_short;
        }
    };
    match current {
        Some((buf, fill)) if fill > 0 => {
            let taken = sink
                .take(Chunk {
                    buf,
                    range: 0..fill,
                })
                .await;
            if taken.is_err() && failure.is_none() {
                return (received, Some(StreamFailure::Conn(stopped())));
            }
        }
        Some((buf, _)) => ring.buffers.push(buf),
        None => {}
    }
    (received, failure)
}

/// The BLAKE3 hash of the whole file: the one the storage knows, or one
/// computed by reading the file.
pub(crate) async fn hash<D: Download>(pool: &BufferPool, download: D) -> io::Result<blake3::Hash> {
    let info = download.info();
    if let Some(hash) = info.hash {
        return Ok(hash);
    }
    let size = info.size;
    if usize::try_from(size).is_ok_and(|len| len <= SMALL_BODY) {
        return download.read_small().await.map(|(_, hash)| hash);
    }
    let mut ring = pool.ring(size);
    let mut source = download.source(0, ring.lend());
    let mut read = 0u64;
    while let Some(chunk) = source.next().await {
        read += chunk.range.len() as u64;
        source.recycle(chunk.buf);
    }
    let end = source.finish().await;
    ring.give_back(end.buffers);
    let hash = end.hash?;
    if read < size {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the file ended before its size",
        ));
    }
    Ok(hash)
}

/// Sends the file from `offset` on and returns the hash of the whole file
/// (the part before `offset` counts in the hash but is not sent).
///
/// `sent` counts the body bytes handed to the connection as they go, for
/// the log of a download that fails midway.
pub(crate) async fn send<S, D>(
    conn: &mut Conn<S>,
    pool: &BufferPool,
    download: D,
    offset: u64,
    sent: &mut u64,
) -> Result<blake3::Hash, ConnError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    D: Download,
{
    let size = download.info().size;
    if let Ok(len) = usize::try_from(size)
        && len <= SMALL_BODY
    {
        let (buf, hash) = download.read_small().await?;
        let start = usize::try_from(offset).unwrap_or(len).min(buf.len());
        conn.write_body(&buf[start..]).await?;
        *sent += (buf.len() - start) as u64;
        return Ok(hash);
    }

    let mut ring = pool.ring(size);
    let mut source = download.source(offset, ring.lend());
    let mut position = offset;
    while position < size {
        let Some(chunk) = source.next().await else {
            break;
        };
        conn.write_body(chunk.data()).await?;
        position += chunk.range.len() as u64;
        *sent += chunk.range.len() as u64;
        source.recycle(chunk.buf);
    }
    let end = source.finish().await;
    ring.give_back(end.buffers);
    let hash = end.hash?;
    if position < size {
        return Err(ConnError::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the file ended before its announced size",
        )));
    }
    Ok(hash)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{LocalStore, Retention, StoreError};
    use framekit_transfer::ErrorCode;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;

    /// A disk that fills up mid-upload (`/dev/full` fails every write with
    /// ENOSPC): the body is still drained so the connection stays in step,
    /// and the error is reported.
    #[tokio::test]
    async fn disk_full_mid_body_is_reported_after_draining_the_body() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(&dir.path().join("root"), Retention::default()).unwrap();
        let pool = BufferPool::default();
        let (mut client, server_end) = tokio::io::duplex(64 * 1024);
        let mut conn = Conn::new(server_end, Duration::from_secs(5));
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let upload = store.upload_into(full);
        let body: Vec<u8> = (0..1_000_000u32).map(|i| i.to_le_bytes()[0]).collect();
        let sender = tokio::spawn(async move {
            client.write_all(&body).await.unwrap();
            client.write_all(b"next").await.unwrap();
            client
        });
        let received = receive(&mut conn, &pool, upload, 1_000_000)
            .await
            .expect("the body arrives whole");
        let error = received.error.expect("the write error is kept");
        assert_eq!(error.kind(), io::ErrorKind::StorageFull);
        assert_eq!(StoreError::from(error).code(), ErrorCode::NoSpace);
        let body: Vec<u8> = (0..1_000_000u32).map(|i| i.to_le_bytes()[0]).collect();
        assert_eq!(received.hash, blake3::hash(&body));
        // The bytes after the body are still there for the next message.
        let mut next = [0u8; 4];
        conn.read_body_fill(&mut next).await.1.unwrap();
        assert_eq!(&next, b"next");
        drop(sender.await.unwrap());
    }
}
