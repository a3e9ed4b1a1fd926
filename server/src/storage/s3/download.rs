//! Downloads: the object read in one streamed GET, tied to the ETag it
//! had when it was opened.

use super::parts::MIN_PART;
use super::{HASH_META, Inner, failure, kept, modified_ns, names};
use crate::storage::{BodySource, Chunk, Download, FileInfo, SourceEnd, Stopped, StoreError};
use framekit_transfer::{FileVersion, validate_name};
use futures_util::StreamExt;
use object_store::path::Path;
use object_store::{Attribute, GetOptions, GetRange, GetResult, ObjectStore};
use std::io;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::warn;

/// Times a body that broke off is asked for again, from where it broke,
/// before the download fails (each time after object_store's own retries).
const RESTARTS: u32 = 3;

/// An object opened for reading: its GET is under way.
#[derive(Debug)]
pub struct S3Download {
    inner: Arc<Inner>,
    path: Path,
    info: FileInfo,
    e_tag: Option<String>,
    body: Option<GetResult>,
}

pub(super) async fn open(inner: &Arc<Inner>, name: &str) -> Result<S3Download, StoreError> {
    validate_name(name)?;
    let path = inner.keys.path(name).map_err(failure)?;
    let body = match inner.reader.get_opts(&path, GetOptions::default()).await {
        Ok(body) => body,
        Err(object_store::Error::NotFound { .. }) => return Err(names::missing(inner, name).await),
        Err(e) => return Err(failure(e)),
    };
    let e_tag = body.meta.e_tag.clone();
    let size = body.meta.size;
    let mut hash = body
        .attributes
        .get(&Attribute::Metadata(HASH_META.into()))
        .and_then(|value| blake3::Hash::from_hex(value.as_ref()).ok());
    // Only a multipart upload leaves its hash in a record.
    if hash.is_none()
        && size > MIN_PART
        && let Some(e_tag) = &e_tag
    {
        hash = kept::lookup_digest(inner, name, e_tag, size).await;
    }
    Ok(S3Download {
        inner: Arc::clone(inner),
        path,
        info: FileInfo {
            size,
            modified_ns: modified_ns(
                body.meta.last_modified.timestamp(),
                e_tag.as_deref().unwrap_or_default(),
            ),
            hash,
        },
        e_tag,
        body: Some(body),
    })
}

impl Download for S3Download {
    type Source = S3Source;

    fn info(&self) -> &FileInfo {
        &self.info
    }

    fn has_version(&self, version: &FileVersion) -> bool {
        version.size == self.info.size && version.modified_ns == self.info.modified_ns
    }

    async fn read_small(mut self) -> io::Result<(Vec<u8>, blake3::Hash)> {
        let body = self
            .body
            .take()
            .ok_or_else(|| io::Error::other("the object was already read"))?;
        let bytes = body.bytes().await.map_err(io::Error::other)?;
        if bytes.len() as u64 != self.info.size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the object is not its announced size",
            ));
        }
        let hash = self.info.hash.unwrap_or_else(|| blake3::hash(&bytes));
        Ok((bytes.to_vec(), hash))
    }

    fn source(self, offset: u64, buffers: Vec<Vec<u8>>) -> S3Source {
        S3Source::start(self, offset, buffers)
    }
}

/// A download's body on its way from the store: a task reads the object
/// and copies it into the connection's buffers.
#[derive(Debug)]
pub struct S3Source {
    from_store: mpsc::Receiver<Chunk>,
    to_store: mpsc::Sender<Vec<u8>>,
    worker: JoinHandle<io::Result<blake3::Hash>>,
}

impl S3Source {
    fn start(download: S3Download, offset: u64, buffers: Vec<Vec<u8>>) -> S3Source {
        let mut buffers = buffers;
        if buffers.is_empty() {
            buffers.push(vec![0; 64 * 1024]);
        }
        let count = buffers.len();
        let (to_conn, from_store) = mpsc::channel(count);
        let (to_store, free) = mpsc::channel(count);
        for buf in buffers {
            let _ = to_store.try_send(buf);
        }
        let worker = tokio::spawn(read(download, offset, to_conn, free));
        S3Source {
            from_store,
            to_store,
            worker,
        }
    }
}

/// Copies bytes into the connection's buffers, sending each once full.
struct Filler {
    to_conn: mpsc::Sender<Chunk>,
    free: mpsc::Receiver<Vec<u8>>,
    buf: Option<Vec<u8>>,
    filled: usize,
}

impl Filler {
    async fn push(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let buf = match &mut self.buf {
                Some(buf) => buf,
                None => {
                    let buf = self
                        .free
                        .recv()
                        .await
                        .ok_or_else(|| io::Error::other(Stopped))?;
                    self.filled = 0;
                    self.buf.insert(buf)
                }
            };
            let n = (buf.len() - self.filled).min(data.len());
            let (now, rest) = data.split_at(n);
            buf[self.filled..self.filled + n].copy_from_slice(now);
            self.filled += n;
            data = rest;
            if self.filled == buf.len() {
                self.flush().await?;
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> io::Result<()> {
        if let Some(buf) = self.buf.take().filter(|_| self.filled > 0) {
            let chunk = Chunk {
                buf,
                range: 0..self.filled,
            };
            self.to_conn
                .send(chunk)
                .await
                .map_err(|_| io::Error::other(Stopped))?;
        }
        Ok(())
    }
}

/// Reads bytes `offset..size` of the object into the connection's buffers
/// and returns the hash of the whole object: the one known, or computed
/// from byte 0 on.
async fn read(
    mut download: S3Download,
    offset: u64,
    to_conn: mpsc::Sender<Chunk>,
    free: mpsc::Receiver<Vec<u8>>,
) -> io::Result<blake3::Hash> {
    let size = download.info.size;
    let known = download.info.hash;
    let mut hasher = blake3::Hasher::new();
    // With the hash known, nothing before the offset is needed.
    let mut position = if known.is_some() { offset } else { 0 };
    let mut body = download.body.take().filter(|_| position == 0);
    let mut filler = Filler {
        to_conn,
        free,
        buf: None,
        filled: 0,
    };
    let mut restarts = 0;
    while position < size {
        let stream = match body.take() {
            Some(body) => body,
            None => {
                let options = GetOptions {
                    range: Some(GetRange::Offset(position)),
                    if_match: download.e_tag.clone(),
                    ..Default::default()
                };
                download
                    .inner
                    .reader
                    .get_opts(&download.path, options)
                    .await
                    .map_err(io::Error::other)?
            }
        };
        let mut stream = stream.into_stream();
        let mut broke = None;
        while let Some(bytes) = stream.next().await {
            let bytes = match bytes {
                Ok(bytes) => bytes,
                Err(e) => {
                    broke = Some(e);
                    break;
                }
            };
            let len = bytes.len() as u64;
            if len > size - position {
                return Err(io::Error::other("the object is longer than announced"));
            }
            if known.is_none() {
                hasher.update(&bytes);
            }
            // The part the client already has is hashed, not sent.
            let skip = usize::try_from(offset.saturating_sub(position))
                .map_or(bytes.len(), |n| n.min(bytes.len()));
            filler.push(&bytes[skip..]).await?;
            position += len;
            restarts = 0;
        }
        if position < size {
            if let Some(object_store::Error::Precondition { .. }) = broke {
                return Err(io::Error::other("the object was replaced while being read"));
            }
            restarts += 1;
            if restarts > RESTARTS {
                return Err(match broke {
                    Some(e) => io::Error::other(e),
                    None => io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the object ended before its announced size",
                    ),
                });
            }
            warn!(position, size, error = ?broke, "a download's body broke off; asking for the rest");
        }
    }
    filler.flush().await?;
    Ok(known.unwrap_or_else(|| hasher.finalize()))
}

impl BodySource for S3Source {
    async fn next(&mut self) -> Option<Chunk> {
        self.from_store.recv().await
    }

    fn recycle(&mut self, buf: Vec<u8>) {
        let _ = self.to_store.try_send(buf);
    }

    async fn finish(self) -> SourceEnd {
        let S3Source {
            mut from_store,
            to_store,
            worker,
        } = self;
        drop(to_store);
        let hash = worker.await.map_err(io::Error::other).and_then(|hash| hash);
        let mut buffers = Vec::new();
        while let Ok(chunk) = from_store.try_recv() {
            buffers.push(chunk.buf);
        }
        SourceEnd { hash, buffers }
    }
}
