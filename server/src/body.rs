//! File bodies between a connection and the disk.
//!
//! A body flows through a ring of buffers shared by three workers: the
//! connection (on the async runtime), the disk (a blocking thread) and the
//! BLAKE3 hasher (another blocking thread). Each works on a different
//! buffer at the same time, so a transfer goes at the pace of its slowest
//! stage instead of the sum of all three. Downloads over plain TCP skip the
//! buffers: the kernel copies the file into the socket (`sendfile`) while a
//! thread hashes it.
//!
//! Memory is bounded: large buffers come from a shared budget, and
//! transfers beyond it get small ones.

use crate::conn::{Conn, ConnError};
use crate::store::Upload;
use std::fs::File;
use std::io::{self, Read, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// A connection stream, and whether file bodies may be written to it with
/// `sendfile`.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send {
    /// The TCP socket under the stream, when bytes written to it reach the
    /// peer unchanged (no encryption layer in between).
    fn sendfile_socket(&self) -> Option<&TcpStream> {
        None
    }
}

impl Transport for TcpStream {
    fn sendfile_socket(&self) -> Option<&TcpStream> {
        Some(self)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Transport for tokio_rustls::server::TlsStream<S> {}

impl Transport for tokio::io::DuplexStream {}

/// Bodies up to this size are moved in one piece, without worker threads.
pub const SMALL_BODY: usize = 64 * 1024;

/// The size of a large body buffer.
const LARGE: usize = 1 << 20;

/// The size of a small body buffer.
const SMALL: usize = 64 * 1024;

/// Buffers in a transfer's ring.
const RING: usize = 3;

/// How many large buffers may exist at once (about 15 MiB): a few
/// transfers at full speed; more share small buffers.
const LARGE_BUDGET: usize = 5 * RING;

/// Large body buffers, shared by all transfers within a budget.
#[derive(Debug, Default)]
pub struct BufferPool {
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

impl Drop for Ring<'_> {
    fn drop(&mut self) {
        if self.large {
            self.pool.give_back(std::mem::take(&mut self.buffers));
            self.pool.large_in_use.fetch_sub(RING, Ordering::AcqRel);
        }
    }
}

/// A buffer and the part of it that holds data.
struct Filled {
    buf: Vec<u8>,
    range: Range<usize>,
}

/// What receiving a body produced.
#[derive(Debug)]
pub struct Received {
    /// The upload, its file complete and synced unless `error` is set.
    pub upload: Upload,
    /// The BLAKE3 hash of the body.
    pub hash: blake3::Hash,
    /// The first disk error, if writing failed. The body was still read to
    /// its end, so the connection is in step.
    pub error: Option<io::Error>,
}

fn worker_gone() -> ConnError {
    ConnError::Io(io::Error::other("a body worker stopped unexpectedly"))
}

/// Receives `size` body bytes into the upload's file, hashing them on the
/// way. Each buffer must fill within the idle timeout, so a peer cannot
/// hold the connection by trickling the body.
pub async fn receive<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    pool: &BufferPool,
    mut upload: Upload,
    size: u64,
) -> Result<Received, ConnError> {
    if let Ok(len) = usize::try_from(size)
        && len <= SMALL_BODY
    {
        let mut buf = vec![0u8; len];
        conn.read_body_exact(&mut buf).await?;
        return tokio::task::spawn_blocking(move || {
            let hash = blake3::hash(&buf);
            let error = match upload.file() {
                Some(file) => file.write_all(&buf).and_then(|()| file.sync_all()).err(),
                None => None,
            };
            Received {
                upload,
                hash,
                error,
            }
        })
        .await
        .map_err(|_| worker_gone());
    }

    let mut ring = pool.ring(size);
    let count = ring.buffers.len();
    let (to_writer, mut writer_rx) = mpsc::channel::<Filled>(count);
    let (to_hasher, hasher_rx) = std::sync::mpsc::sync_channel::<Filled>(count);
    let (to_reader, mut reader_rx) = mpsc::channel::<Vec<u8>>(count);
    for buf in ring.buffers.drain(..) {
        let _ = to_reader.try_send(buf);
    }

    let writer = tokio::task::spawn_blocking(move || {
        let mut error = None;
        let mut written = 0u64;
        while let Some(filled) = writer_rx.blocking_recv() {
            let data = &filled.buf[filled.range.clone()];
            if error.is_none()
                && let Some(file) = upload.file()
                && let Err(e) = file.write_all(data)
            {
                error = Some(e);
            }
            written += data.len() as u64;
            if to_hasher.send(filled).is_err() {
                break;
            }
        }
        // Only a complete body is worth syncing; an incomplete one is about
        // to be dropped.
        if written == size
            && error.is_none()
            && let Some(file) = upload.file()
            && let Err(e) = file.sync_all()
        {
            error = Some(e);
        }
        (upload, error)
    });
    let hasher = tokio::task::spawn_blocking(move || {
        let mut hasher = blake3::Hasher::new();
        for filled in hasher_rx {
            hasher.update(&filled.buf[filled.range]);
            if to_reader.blocking_send(filled.buf).is_err() {
                break;
            }
        }
        hasher.finalize()
    });

    let mut remaining = size;
    while remaining > 0 {
        let mut buf = reader_rx.recv().await.ok_or_else(worker_gone)?;
        let want = usize::try_from(remaining).map_or(buf.len(), |r| r.min(buf.len()));
        conn.read_body_exact(&mut buf[..want]).await?;
        remaining -= want as u64;
        to_writer
            .send(Filled {
                buf,
                range: 0..want,
            })
            .await
            .map_err(|_| worker_gone())?;
    }
    drop(to_writer);
    let (upload, error) = writer.await.map_err(|_| worker_gone())?;
    let hash = hasher.await.map_err(|_| worker_gone())?;
    while let Ok(buf) = reader_rx.try_recv() {
        ring.buffers.push(buf);
    }
    Ok(Received {
        upload,
        hash,
        error,
    })
}

/// Sends bytes `offset..size` of `file` and returns the hash of the whole
/// file (the part before `offset` counts in the hash but is not sent).
pub async fn send<S: Transport>(
    conn: &mut Conn<S>,
    pool: &BufferPool,
    file: File,
    size: u64,
    offset: u64,
) -> Result<blake3::Hash, ConnError> {
    if let Ok(len) = usize::try_from(size)
        && len <= SMALL_BODY
    {
        let (buf, hash) = tokio::task::spawn_blocking(move || -> io::Result<_> {
            let mut buf = vec![0u8; len];
            file.read_exact_at(&mut buf, 0)?;
            let hash = blake3::hash(&buf);
            Ok((buf, hash))
        })
        .await
        .map_err(|_| worker_gone())??;
        let start = usize::try_from(offset).unwrap_or(len).min(len);
        conn.write_body(&buf[start..]).await?;
        return Ok(hash);
    }

    if conn.stream().sendfile_socket().is_some() {
        let hashing = file.try_clone()?;
        let hasher = tokio::task::spawn_blocking(move || hash_file(&hashing, size));
        let sent = conn.sendfile(&file, offset, size).await;
        let hash = hasher.await.map_err(|_| worker_gone())?;
        sent?;
        return Ok(hash?);
    }

    let mut ring = pool.ring(size);
    let count = ring.buffers.len();
    let (to_hasher, hasher_rx) = std::sync::mpsc::sync_channel::<Filled>(count);
    let (to_conn, mut conn_rx) = mpsc::channel::<Filled>(count);
    let (to_reader, reader_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(count);
    for buf in ring.buffers.drain(..) {
        let _ = to_reader.try_send(buf);
    }
    let reader = tokio::task::spawn_blocking(move || -> io::Result<()> {
        let mut file = file;
        let mut position = 0u64;
        while position < size {
            let Ok(mut buf) = reader_rx.recv() else { break };
            let want = usize::try_from(size - position).map_or(buf.len(), |n| n.min(buf.len()));
            // A file that shrinks while it is read ends in UnexpectedEof.
            file.read_exact(&mut buf[..want])?;
            // The part the client already has is hashed, not sent.
            let skip =
                usize::try_from(offset.saturating_sub(position)).map_or(want, |n| n.min(want));
            position += want as u64;
            if to_hasher
                .send(Filled {
                    buf,
                    range: skip..want,
                })
                .is_err()
            {
                break;
            }
        }
        Ok(())
    });
    let hasher = tokio::task::spawn_blocking(move || {
        let mut hasher = blake3::Hasher::new();
        for filled in hasher_rx {
            hasher.update(&filled.buf[..filled.range.end]);
            if to_conn.blocking_send(filled).is_err() {
                break;
            }
        }
        hasher.finalize()
    });
    let mut sent = offset;
    while sent < size {
        let Some(filled) = conn_rx.recv().await else {
            break;
        };
        conn.write_body(&filled.buf[filled.range.clone()]).await?;
        sent += filled.range.len() as u64;
        let _ = to_reader.send(filled.buf);
    }
    drop(to_reader);
    reader.await.map_err(|_| worker_gone())??;
    let hash = hasher.await.map_err(|_| worker_gone())?;
    while let Ok(filled) = conn_rx.try_recv() {
        ring.buffers.push(filled.buf);
    }
    if sent < size {
        return Err(ConnError::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the file ended before its announced size",
        )));
    }
    Ok(hash)
}

/// Hashes bytes `0..size` of `file` with positioned reads.
fn hash_file(file: &File, size: u64) -> io::Result<blake3::Hash> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; LARGE];
    let mut offset = 0u64;
    while offset < size {
        let want = usize::try_from(size - offset).map_or(buf.len(), |n| n.min(buf.len()));
        file.read_exact_at(&mut buf[..want], offset)?;
        hasher.update(&buf[..want]);
        offset += want as u64;
    }
    Ok(hasher.finalize())
}
