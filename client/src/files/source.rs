//! A local file to upload: everything a put reads from it.

use super::hashes::Stamp;
use crate::error::ClientError;
use framekit_transfer::{Hash, validate_name};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{SystemTime, UNIX_EPOCH};

/// How much of each end of a file goes into its resume key.
const KEY_BLOCK: u64 = 64 * 1024;

/// The context string of resume keys (BLAKE3 key derivation).
const KEY_CONTEXT: &str = "framekit client 2025-06 put resume key v1";

/// A local file opened for upload.
#[derive(Debug)]
pub struct Source {
    file: File,
    path: PathBuf,
    size: u64,
    modified: Option<SystemTime>,
    stamp: Stamp,
}

/// How far [`Source::read_and_hash`] went.
pub(super) enum FileSent {
    /// Every byte, and the file ends there.
    All,
    /// The file ended at this offset, before the body's end.
    EndedAt(u64),
    /// The file has more bytes than the body.
    Longer,
}

impl Source {
    /// Opens a regular file for reading and takes its size.
    pub fn open(path: &Path) -> Result<Self, ClientError> {
        let local = |source| ClientError::Local {
            action: "cannot read",
            path: path.to_owned(),
            source,
        };
        // O_NONBLOCK: a FIFO must not hang the client; it is refused below.
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
            .open(path)
            .map_err(local)?;
        let meta = file.metadata().map_err(local)?;
        if meta.is_dir() {
            return Err(local(io::Error::new(
                io::ErrorKind::IsADirectory,
                "is a directory",
            )));
        }
        if !meta.is_file() {
            return Err(local(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            )));
        }
        Ok(Source {
            file,
            path: path.to_owned(),
            size: meta.len(),
            modified: meta.modified().ok(),
            stamp: Stamp::of(&meta),
        })
    }

    /// The file's stamp when it was opened, if it still has it: what was
    /// read since is then the content of that version.
    pub(super) fn unchanged_stamp(&self) -> Option<Stamp> {
        let now = Stamp::of(&self.file.metadata().ok()?);
        (now == self.stamp).then_some(self.stamp)
    }

    /// The file's size when it was opened.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A failure to read the file.
    pub(super) fn read_error(&self, source: io::Error) -> ClientError {
        ClientError::Local {
            action: "cannot read",
            path: self.path.clone(),
            source,
        }
    }

    /// The file is not [`Source::size`] bytes long any more: it ended at
    /// `read`, or is longer (`None`).
    pub(super) fn changed(&self, read: Option<u64>) -> ClientError {
        ClientError::FileChanged {
            path: self.path.clone(),
            announced: self.size,
            read,
        }
    }

    /// The whole content of a small file; [`ClientError::FileChanged`] if
    /// it is no longer [`Source::size`] bytes long.
    pub(super) fn read_small(&self) -> Result<Vec<u8>, ClientError> {
        let len = usize::try_from(self.size).map_err(|_| self.changed(None))?;
        let mut buf = vec![0u8; len + 1];
        let mut read = 0;
        while read < buf.len() {
            match self.file.read_at(&mut buf[read..], read as u64) {
                Ok(0) => break,
                Ok(n) => read += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.read_error(e)),
            }
        }
        if read != len {
            return Err(self.changed((read < len).then_some(read as u64)));
        }
        buf.truncate(len);
        Ok(buf)
    }

    /// Reads bytes `0..end` of the file into buffers from `free`, hashes
    /// them, and passes those from `start` on to `full` (the bytes before
    /// are the part the server already has); then checks that the file
    /// ends at `end`. Stops early, without error, if the other side hangs
    /// up.
    ///
    /// Runs on its own thread while the caller's thread sends the buffer
    /// before: this beats `sendfile` when the bytes must be hashed anyway,
    /// since the file is read from memory once instead of twice.
    pub(super) fn read_and_hash(
        &self,
        hasher: &mut blake3::Hasher,
        start: u64,
        end: u64,
        free: &mpsc::Receiver<Vec<u8>>,
        full: &mpsc::SyncSender<(Vec<u8>, usize)>,
    ) -> io::Result<FileSent> {
        let mut offset = 0;
        let mut spare = None;
        while offset < end {
            let mut buf = match spare.take() {
                Some(buf) => buf,
                None => match free.recv() {
                    Ok(buf) => buf,
                    Err(_) => return Ok(FileSent::All),
                },
            };
            let stop = if offset < start { start } else { end };
            let want = usize::try_from(stop - offset).map_or(buf.len(), |n| n.min(buf.len()));
            let chunk = buf.get_mut(..want).unwrap_or_default();
            let n = match self.file.read_at(chunk, offset) {
                Ok(0) => return Ok(FileSent::EndedAt(offset)),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    spare = Some(buf);
                    continue;
                }
                Err(e) => return Err(e),
            };
            hasher.update(chunk.get(..n).unwrap_or_default());
            if offset >= start {
                if full.send((buf, n)).is_err() {
                    return Ok(FileSent::All);
                }
            } else {
                spare = Some(buf);
            }
            offset += n as u64;
        }
        let mut extra = [0u8; 1];
        loop {
            match self.file.read_at(&mut extra, end) {
                Ok(0) => return Ok(FileSent::All),
                Ok(_) => return Ok(FileSent::Longer),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The key by which an interrupted upload of this file as `name` can
    /// be resumed: a BLAKE3 key derivation over the name, the size, the
    /// modification time and the first and last 64 KiB. Another file, or
    /// this one changed, gets another key; and the server verifies the
    /// whole file anyway.
    pub fn resume_key(&self, name: &str) -> Result<Hash, ClientError> {
        let mut hasher = blake3::Hasher::new_derive_key(KEY_CONTEXT);
        hasher.update(&(name.len() as u64).to_le_bytes());
        hasher.update(name.as_bytes());
        hasher.update(&self.size.to_le_bytes());
        let modified = self
            .modified
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        hasher.update(&modified.to_le_bytes());
        let first = self.size.min(KEY_BLOCK);
        let last_start = self.size.saturating_sub(KEY_BLOCK);
        let mut block = vec![0u8; usize::try_from(first).unwrap_or(0)];
        for start in [0, last_start] {
            self.file
                .read_exact_at(&mut block, start)
                .map_err(|e| self.read_error(e))?;
            hasher.update(&block);
        }
        Ok(*hasher.finalize().as_bytes())
    }
}

/// The remote name for uploading `path`: `name` if given, else the file's
/// base name. Either way it must be a valid protocol name.
pub fn remote_name(path: &Path, name: Option<&str>) -> Result<String, ClientError> {
    let name = match name {
        Some(name) => name.to_owned(),
        None => base_name(path)?,
    };
    validate_name(&name).map_err(|source| ClientError::InvalidName {
        name: name.clone(),
        source,
    })?;
    Ok(name)
}

/// The last component of `path` as UTF-8: of the path itself, or of where
/// it leads when it has none (`.`, `..`, `/`...).
pub(crate) fn base_name(path: &Path) -> Result<String, ClientError> {
    let no_name = || ClientError::NoRemoteName {
        path: path.to_owned(),
    };
    match path.file_name() {
        Some(name) => name.to_str().map(str::to_owned).ok_or_else(no_name),
        None => fs::canonicalize(path)
            .ok()
            .and_then(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_owned))
            .ok_or_else(no_name),
    }
}
