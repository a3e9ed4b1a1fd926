//! File bodies between a connection and the disk.
//!
//! A body flows through a small ring of buffers between two workers: the
//! connection (on the async runtime) and a blocking thread that reads or
//! writes the file and hashes each buffer while it is still in the core's
//! cache. The two work on different buffers at the same time, so a
//! transfer goes at the pace of the slower one. (`sendfile` does not pay
//! here: the bytes must be read into memory for the hash anyway, and
//! reading them twice costs more than the copy it saves.) A download whose
//! hash was recorded when the file was published skips the hashing (see
//! [`crate::storage::local::digest`]).
//!
//! Memory is bounded: large buffers come from a shared budget, and
//! transfers beyond it get small ones.

use crate::conn::{Conn, ConnError};
use crate::storage::local::store::Upload;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

/// A connection stream the server speaks over: plain TCP, TLS, or an
/// in-memory stream in tests.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Transport for S {}

/// Bodies up to this size are moved in one piece, without worker threads.
pub const SMALL_BODY: usize = 64 * 1024;

/// The size of a large body buffer: small enough to stay in a core's L2
/// cache between the copy from the socket and the hashing and writing.
const LARGE: usize = 256 * 1024;

/// The size of a small body buffer.
const SMALL: usize = 64 * 1024;

/// The buffer the part of a file held before a resumed upload is hashed
/// through.
const PREFIX_CHUNK: usize = 256 * 1024;

/// Buffers in a transfer's ring.
const RING: usize = 4;

/// How many large buffers may exist at once (8 MiB): a few transfers at
/// full speed; more get small buffers.
const LARGE_BUDGET: usize = 8 * RING;

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
    /// The upload, its file complete and synced unless `error` is set or
    /// `unwritten` holds the body.
    pub upload: Upload,
    /// The BLAKE3 hash of the whole file: the part the upload already held
    /// (see [`Upload::offset`]), then the body.
    pub hash: blake3::Hash,
    /// The first disk error, if writing failed. The body was still read to
    /// its end, so the connection is in step.
    pub error: Option<io::Error>,
    /// A small body not written yet (see [`write_unwritten`]); empty
    /// otherwise.
    pub unwritten: Vec<u8>,
}

/// Writes and syncs the body a [`Received`] still holds in memory, if any.
/// Blocking: it runs with the publishing, in one trip to a blocking thread.
pub fn write_unwritten(upload: &mut Upload, unwritten: &[u8]) -> io::Result<()> {
    if unwritten.is_empty() {
        return Ok(());
    }
    upload.write(unwritten)?;
    upload.sync()
}

/// A body that did not arrive whole.
#[derive(Debug)]
pub struct Interrupted {
    /// Why: the peer left, went silent, or the stream failed.
    pub error: ConnError,
    /// The upload, holding every body byte that arrived (`None` only if a
    /// worker thread failed).
    pub upload: Option<Upload>,
    /// How many body bytes arrived.
    pub received: u64,
}

fn worker_gone() -> ConnError {
    ConnError::Io(io::Error::other("a body worker stopped unexpectedly"))
}

/// Feeds bytes `0..len` of `file` to `hasher`, unless `stop` is raised.
fn hash_prefix(
    hasher: &mut blake3::Hasher,
    file: &File,
    len: u64,
    stop: &AtomicBool,
) -> io::Result<()> {
    // Outside the buffer budget, so kept small: resumed uploads are few.
    let mut buf =
        vec![0u8; usize::try_from(len).map_or(PREFIX_CHUNK, |n| n.clamp(1, PREFIX_CHUNK))];
    let mut offset = 0u64;
    while offset < len && !stop.load(Ordering::Relaxed) {
        let want = usize::try_from(len - offset).map_or(buf.len(), |n| n.min(buf.len()));
        file.read_exact_at(&mut buf[..want], offset)?;
        hasher.update(&buf[..want]);
        offset += want as u64;
    }
    Ok(())
}

/// Receives `size` body bytes into the upload's file, after what it
/// already holds, hashing the whole file on the way. Each buffer must fill
/// within the idle timeout, so a peer cannot hold the connection by
/// trickling the body.
///
/// If the body does not arrive whole, every byte that did is written to
/// the upload before it is handed back in [`Interrupted`].
pub async fn receive<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    pool: &BufferPool,
    mut upload: Upload,
    size: u64,
) -> Result<Received, Interrupted> {
    let prefix = match upload.offset() {
        0 => None,
        len => match upload.reader() {
            Ok(Some(file)) => Some((file, len)),
            Ok(None) => None,
            Err(e) => {
                return Err(Interrupted {
                    error: e.into(),
                    upload: Some(upload),
                    received: 0,
                });
            }
        },
    };
    if let Ok(len) = usize::try_from(size)
        && len <= SMALL_BODY
    {
        let mut buf = vec![0u8; len];
        let (filled, read) = conn.read_body_fill(&mut buf).await;
        let received = filled as u64;
        if prefix.is_none() {
            // A whole small file: it is written when it is published, in
            // the same trip to a blocking thread. Nothing of it is kept if
            // it is cut short (small uploads are not resumable).
            return match read {
                Ok(()) => Ok(Received {
                    upload,
                    hash: blake3::hash(&buf),
                    error: None,
                    unwritten: buf,
                }),
                Err(error) => Err(Interrupted {
                    error,
                    upload: Some(upload),
                    received,
                }),
            };
        }
        return match tokio::task::spawn_blocking(move || {
            let mut hasher = blake3::Hasher::new();
            let mut error = match &prefix {
                Some((file, len)) => {
                    hash_prefix(&mut hasher, file, *len, &AtomicBool::new(false)).err()
                }
                None => None,
            };
            hasher.update(&buf[..filled]);
            if error.is_none() {
                error = upload.write(&buf[..filled]).err();
            }
            if error.is_none() && read.is_ok() {
                error = upload.sync().err();
            }
            (upload, hasher.finalize(), error, read)
        })
        .await
        {
            Ok((upload, hash, error, Ok(()))) => Ok(Received {
                upload,
                hash,
                error,
                unwritten: Vec::new(),
            }),
            Ok((upload, _, _, Err(error))) => Err(Interrupted {
                error,
                upload: Some(upload),
                received,
            }),
            Err(_) => Err(Interrupted {
                error: worker_gone(),
                upload: None,
                received,
            }),
        };
    }

    let mut ring = pool.ring(size);
    let count = ring.buffers.len();
    let (to_disk, mut disk_rx) = mpsc::channel::<Filled>(count);
    let (to_reader, mut reader_rx) = mpsc::channel::<Vec<u8>>(count);
    for buf in ring.buffers.drain(..) {
        let _ = to_reader.try_send(buf);
    }
    let stop = Arc::new(AtomicBool::new(false));

    // One worker hashes each buffer and writes it while it is still in
    // the core's cache: a separate hashing thread would read every byte
    // from memory once more.
    let disk_stop = Arc::clone(&stop);
    let disk = tokio::task::spawn_blocking(move || {
        let mut hasher = blake3::Hasher::new();
        // What the upload already holds comes first; the body waits in the
        // ring meanwhile.
        let mut hash_error = match &prefix {
            Some((file, len)) => hash_prefix(&mut hasher, file, *len, &disk_stop).err(),
            None => None,
        };
        let mut error = None;
        let mut written = 0u64;
        while let Some(filled) = disk_rx.blocking_recv() {
            let data = &filled.buf[filled.range.clone()];
            if hash_error.is_none() && !disk_stop.load(Ordering::Relaxed) {
                hasher.update(data);
            }
            // Every byte that arrived is written, even after a failure: it
            // may be kept for resuming.
            if error.is_none()
                && let Err(e) = upload.write(data)
            {
                error = Some(e);
            }
            written += data.len() as u64;
            // The reader may be gone after a failure; the buffer is then
            // dropped.
            let _ = to_reader.blocking_send(filled.buf);
        }
        // Only a complete body is worth syncing here; an incomplete one is
        // synced if it is kept.
        if written == size
            && error.is_none()
            && let Err(e) = upload.sync()
        {
            error = Some(e);
        }
        let hash = match hash_error.take() {
            None => Ok(hasher.finalize()),
            Some(e) => Err(e),
        };
        (upload, error, hash)
    });

    let mut remaining = size;
    let mut received = 0u64;
    let failure = loop {
        if remaining == 0 {
            break None;
        }
        let Some(mut buf) = reader_rx.recv().await else {
            break Some(worker_gone());
        };
        let want = usize::try_from(remaining).map_or(buf.len(), |r| r.min(buf.len()));
        let (filled, read) = conn.read_body_fill(&mut buf[..want]).await;
        remaining -= filled as u64;
        received += filled as u64;
        if filled == 0 {
            ring.buffers.push(buf);
        } else if to_disk
            .send(Filled {
                buf,
                range: 0..filled,
            })
            .await
            .is_err()
        {
            break Some(worker_gone());
        }
        if let Err(e) = read {
            break Some(e);
        }
    };
    drop(to_disk);
    if failure.is_some() {
        // The hash is of no use now: let the worker stop hashing.
        stop.store(true, Ordering::Relaxed);
        reader_rx.close();
    }
    let done = disk.await;
    while let Ok(buf) = reader_rx.try_recv() {
        ring.buffers.push(buf);
    }
    match (failure, done) {
        (None, Ok((upload, error, Ok(hash)))) => Ok(Received {
            upload,
            hash,
            error,
            unwritten: Vec::new(),
        }),
        // The prefix could not be read back: a disk error like any other.
        (None, Ok((upload, error, Err(e)))) => Ok(Received {
            upload,
            hash: blake3::Hash::from_bytes([0; 32]),
            error: Some(error.unwrap_or(e)),
            unwritten: Vec::new(),
        }),
        (Some(error), Ok((upload, _, _))) => Err(Interrupted {
            error,
            upload: Some(upload),
            received,
        }),
        (_, Err(_)) => Err(Interrupted {
            error: worker_gone(),
            upload: None,
            received,
        }),
    }
}

/// Sends bytes `offset..size` of `file` and returns the hash of the whole
/// file (the part before `offset` counts in the hash but is not sent).
///
/// With the hash `known` already (see [`crate::storage::local::digest`]), the file is sent
/// without being hashed, from `offset` on, and `known` is returned.
///
/// `sent` counts the body bytes handed to the connection as they go, for
/// the log of a download that fails midway.
pub async fn send<S: Transport>(
    conn: &mut Conn<S>,
    pool: &BufferPool,
    file: File,
    size: u64,
    offset: u64,
    known: Option<blake3::Hash>,
    sent: &mut u64,
) -> Result<blake3::Hash, ConnError> {
    if let Ok(len) = usize::try_from(size)
        && len <= SMALL_BODY
    {
        let (buf, hash) = tokio::task::spawn_blocking(move || -> io::Result<_> {
            let mut buf = vec![0u8; len];
            file.read_exact_at(&mut buf, 0)?;
            let hash = known.unwrap_or_else(|| blake3::hash(&buf));
            Ok((buf, hash))
        })
        .await
        .map_err(|_| worker_gone())??;
        let start = usize::try_from(offset).unwrap_or(len).min(len);
        conn.write_body(&buf[start..]).await?;
        *sent += (len - start) as u64;
        return Ok(hash);
    }

    let mut ring = pool.ring(size);
    let count = ring.buffers.len();
    let (to_conn, mut conn_rx) = mpsc::channel::<Filled>(count);
    let (to_reader, reader_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(count);
    for buf in ring.buffers.drain(..) {
        let _ = to_reader.try_send(buf);
    }
    // One worker reads each buffer from the file and hashes it while it is
    // still in the core's cache; the connection sends it meanwhile.
    let reader = tokio::task::spawn_blocking(move || -> io::Result<blake3::Hash> {
        let mut file = file;
        let mut hasher = blake3::Hasher::new();
        // With the hash known, nothing before `offset` needs reading.
        let mut position = match known {
            Some(_) => file.seek(SeekFrom::Start(offset))?,
            None => 0,
        };
        let mut spare = None;
        while position < size {
            let mut buf = match spare.take() {
                Some(buf) => buf,
                None => match reader_rx.recv() {
                    Ok(buf) => buf,
                    Err(_) => break,
                },
            };
            let want = usize::try_from(size - position).map_or(buf.len(), |n| n.min(buf.len()));
            // A file that shrinks while it is read ends in UnexpectedEof.
            file.read_exact(&mut buf[..want])?;
            if known.is_none() {
                hasher.update(&buf[..want]);
            }
            // The part the client already has is hashed, not sent.
            let skip =
                usize::try_from(offset.saturating_sub(position)).map_or(want, |n| n.min(want));
            position += want as u64;
            if skip == want {
                spare = Some(buf);
                continue;
            }
            if to_conn
                .blocking_send(Filled {
                    buf,
                    range: skip..want,
                })
                .is_err()
            {
                break;
            }
        }
        Ok(known.unwrap_or_else(|| hasher.finalize()))
    });
    let mut position = offset;
    while position < size {
        let Some(filled) = conn_rx.recv().await else {
            break;
        };
        conn.write_body(&filled.buf[filled.range.clone()]).await?;
        position += filled.range.len() as u64;
        *sent += filled.range.len() as u64;
        let _ = to_reader.send(filled.buf);
    }
    drop(to_reader);
    let hash = reader.await.map_err(|_| worker_gone())??;
    while let Ok(filled) = conn_rx.try_recv() {
        ring.buffers.push(filled.buf);
    }
    if position < size {
        return Err(ConnError::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the file ended before its announced size",
        )));
    }
    Ok(hash)
}
