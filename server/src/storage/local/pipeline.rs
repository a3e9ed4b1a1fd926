//! File bodies between the connection and the disk: a worker thread per
//! transfer reads or writes the file and hashes each buffer while it is
//! still in the core's cache, while the connection works on another buffer
//! of the ring (see [`crate::body`]). A separate hashing thread would read
//! every byte from memory once more. (`sendfile` does not pay here: the
//! bytes must be read into memory for the hash anyway, and reading them
//! twice costs more than the copy it saves.)

use super::partial::Partials;
use super::store::LocalUpload;
use crate::storage::{BodySink, BodySource, Chunk, SinkEnd, SourceEnd, Stopped};
use framekit_transfer::Hash;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

fn stopped() -> io::Error {
    io::Error::other(Stopped)
}

/// `buffers`, or one small buffer if there are none: a ring without
/// buffers would never move a byte.
fn at_least_one(mut buffers: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    if buffers.is_empty() {
        buffers.push(vec![0; 64 * 1024]);
    }
    buffers
}

/// What the disk worker of an upload ends with.
#[derive(Debug)]
struct Written {
    upload: LocalUpload,
    error: Option<io::Error>,
    hash: io::Result<blake3::Hash>,
}

/// The body of an upload on its way to the disk.
#[derive(Debug)]
pub struct LocalSink {
    to_disk: mpsc::Sender<Chunk>,
    free: mpsc::Receiver<Vec<u8>>,
    /// Raised when the hash is of no use any more.
    stop: Arc<AtomicBool>,
    /// Raised when the whole body was taken: it is then synced.
    complete: Arc<AtomicBool>,
    /// Told when the body stops short, for a resumable upload: a put with
    /// its key then waits for it to be kept.
    ending: Option<(Arc<Partials>, Hash)>,
    worker: JoinHandle<Written>,
}

impl LocalSink {
    /// Starts the disk worker of a body of `size` bytes (or at most that
    /// many, for a body of unknown length).
    pub(super) fn start(mut upload: LocalUpload, size: u64, buffers: Vec<Vec<u8>>) -> LocalSink {
        let buffers = at_least_one(buffers);
        let count = buffers.len();
        let (to_disk, mut from_conn) = mpsc::channel::<Chunk>(count);
        let (to_conn, free) = mpsc::channel::<Vec<u8>>(count);
        for buf in buffers {
            let _ = to_conn.try_send(buf);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let worker_stop = Arc::clone(&stop);
        let complete = Arc::new(AtomicBool::new(false));
        let worker_complete = Arc::clone(&complete);
        let ending = upload.ending_handle();
        let worker = tokio::task::spawn_blocking(move || {
            let mut hasher = blake3::Hasher::new();
            // What the upload already holds comes first; the body waits in
            // the ring meanwhile.
            let mut hash_error = upload.hash_held(&mut hasher, &worker_stop).err();
            let mut error = None;
            let mut written = 0u64;
            while let Some(chunk) = from_conn.blocking_recv() {
                let data = chunk.data();
                if hash_error.is_none() && !worker_stop.load(Ordering::Relaxed) {
                    hasher.update(data);
                }
                // Every byte that arrived is written, even after a failure:
                // it may be kept for resuming.
                if error.is_none()
                    && let Err(e) = upload.write(data)
                {
                    error = Some(e);
                }
                written += data.len() as u64;
                // The connection may be gone after a failure; the buffer is
                // then dropped.
                let _ = to_conn.blocking_send(chunk.buf);
            }
            // Only a complete body is worth syncing here; an incomplete one
            // is synced if it is kept.
            if worker_complete.load(Ordering::Acquire)
                && written <= size
                && error.is_none()
                && let Err(e) = upload.sync()
            {
                error = Some(e);
            }
            let hash = match hash_error.take() {
                None => Ok(hasher.finalize()),
                Some(e) => Err(e),
            };
            Written {
                upload,
                error,
                hash,
            }
        });
        LocalSink {
            to_disk,
            free,
            stop,
            complete,
            ending,
            worker,
        }
    }
}

impl BodySink for LocalSink {
    type Upload = LocalUpload;

    async fn buffer(&mut self) -> Option<Vec<u8>> {
        self.free.recv().await
    }

    async fn take(&mut self, chunk: Chunk) -> Result<(), Stopped> {
        self.to_disk.send(chunk).await.map_err(|_| Stopped)
    }

    async fn finish(self, complete: bool) -> SinkEnd<LocalUpload> {
        let LocalSink {
            to_disk,
            mut free,
            stop,
            complete: whole,
            ending,
            worker,
        } = self;
        if !complete && let Some((partials, key)) = &ending {
            partials.ending(key);
        }
        // Before the channel closes: the worker reads it at the end.
        whole.store(complete, Ordering::Release);
        drop(to_disk);
        if !complete {
            // The hash is of no use now: let the worker stop hashing.
            stop.store(true, Ordering::Relaxed);
            free.close();
        }
        let done = worker.await;
        let mut buffers = Vec::new();
        while let Ok(buf) = free.try_recv() {
            buffers.push(buf);
        }
        match done {
            Ok(Written {
                upload,
                error,
                hash,
            }) => {
                let (hash, error) = match hash {
                    Ok(hash) => (Some(hash), error),
                    // The held part could not be read back: a disk error
                    // like any other.
                    Err(e) => (None, Some(error.unwrap_or(e))),
                };
                SinkEnd {
                    upload: Some(upload),
                    hash: hash.filter(|_| complete),
                    error,
                    buffers,
                }
            }
            Err(_) => SinkEnd {
                upload: None,
                hash: None,
                error: Some(stopped()),
                buffers,
            },
        }
    }
}

/// Reads bytes `0..len` of `file` whole (a small file), with its hash:
/// `known` if given, else computed.
pub(super) async fn read_small(
    file: File,
    len: u64,
    known: Option<blake3::Hash>,
) -> io::Result<(Vec<u8>, blake3::Hash)> {
    let len = usize::try_from(len).map_err(io::Error::other)?;
    tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, 0)?;
        let hash = known.unwrap_or_else(|| blake3::hash(&buf));
        Ok((buf, hash))
    })
    .await
    .map_err(|_| stopped())?
}

/// The body of a download on its way from the disk.
#[derive(Debug)]
pub struct LocalSource {
    from_disk: mpsc::Receiver<Chunk>,
    to_disk: std::sync::mpsc::SyncSender<Vec<u8>>,
    worker: JoinHandle<io::Result<blake3::Hash>>,
}

impl LocalSource {
    /// Starts the disk worker that reads bytes `offset..size` of `file`
    /// and hashes the whole file, unless its hash is `known`.
    pub(super) fn start(
        file: File,
        size: u64,
        offset: u64,
        known: Option<blake3::Hash>,
        buffers: Vec<Vec<u8>>,
    ) -> LocalSource {
        let buffers = at_least_one(buffers);
        let count = buffers.len();
        let (to_conn, from_disk) = mpsc::channel::<Chunk>(count);
        let (to_disk, free) = std::sync::mpsc::sync_channel::<Vec<u8>>(count);
        for buf in buffers {
            let _ = to_disk.try_send(buf);
        }
        let worker = tokio::task::spawn_blocking(move || -> io::Result<blake3::Hash> {
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
                    None => match free.recv() {
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
                    .blocking_send(Chunk {
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
        LocalSource {
            from_disk,
            to_disk,
            worker,
        }
    }
}

impl BodySource for LocalSource {
    async fn next(&mut self) -> Option<Chunk> {
        self.from_disk.recv().await
    }

    fn recycle(&mut self, buf: Vec<u8>) {
        let _ = self.to_disk.send(buf);
    }

    async fn finish(self) -> SourceEnd {
        let LocalSource {
            mut from_disk,
            to_disk,
            worker,
        } = self;
        drop(to_disk);
        let hash = worker.await.map_err(|_| stopped()).and_then(|hash| hash);
        let mut buffers = Vec::new();
        while let Ok(chunk) = from_disk.try_recv() {
            buffers.push(chunk.buf);
        }
        SourceEnd { hash, buffers }
    }
}
