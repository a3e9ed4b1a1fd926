//! Where a download is written: `DEST.part` next to its destination,
//! described by `DEST.part.meta`, written and hashed on another thread,
//! then flushed to disk and renamed into place.

use super::Options;
use super::hashes::Stamp;
use super::pipeline::{BODY_CHUNK, Pipeline};
use crate::error::ClientError;
use crate::session::Download;
use framekit_transfer::{FileVersion, Hash, validate_name};
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Bodies up to this size are read whole, hashed and written in one go: a
/// thread would cost more than it saves.
const SMALL_BODY: usize = 64 * 1024;

/// The first line of a partial download's description.
const META_HEADER: &str = "framekit partial download 1";

/// The partial file of a download to `dest`, and its description:
/// `DEST.part` and `DEST.part.meta` next to it; for a name too long for
/// that, a name derived from its hash.
pub(super) fn part_paths(dest: &Path) -> (PathBuf, PathBuf) {
    const LONGEST_SUFFIX: usize = ".part.meta".len();
    let name = dest.file_name().unwrap_or_default();
    let stem = if name.len() + LONGEST_SUFFIX <= 255 {
        OsString::from(name)
    } else {
        let hash = blake3::hash(name.as_encoded_bytes()).to_hex();
        OsString::from(format!(".framekit-{}", &hash[..32]))
    };
    let with = |suffix: &str| {
        let mut file = stem.clone();
        file.push(suffix);
        dest.with_file_name(file)
    };
    (with(".part"), with(".part.meta"))
}

/// What `DEST.part.meta` says: the remote file `DEST.part` is a copy of.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PartMeta {
    name: String,
    version: FileVersion,
}

impl PartMeta {
    fn encode(&self) -> String {
        format!(
            "{META_HEADER}\nname: {}\nsize: {}\nmodified_ns: {}\n",
            self.name, self.version.size, self.version.modified_ns
        )
    }

    fn parse(text: &str) -> Option<PartMeta> {
        let mut lines = text.strip_suffix('\n')?.split('\n');
        if lines.next()? != META_HEADER {
            return None;
        }
        let mut field = |key: &str| lines.next()?.strip_prefix(key)?.strip_prefix(": ");
        let name = field("name")?.to_owned();
        let size = field("size")?.parse().ok()?;
        let modified_ns = field("modified_ns")?.parse().ok()?;
        if lines.next().is_some() || validate_name(&name).is_err() {
            return None;
        }
        Some(PartMeta {
            name,
            version: FileVersion { size, modified_ns },
        })
    }

    /// Reads `path`: `None` if it is missing or is not a description.
    fn read(path: &Path) -> Option<PartMeta> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(path)
            .ok()?;
        let mut text = String::new();
        file.take(4096).read_to_string(&mut text).ok()?;
        PartMeta::parse(&text)
    }
}

/// A download's partial file `DEST.part`, next to its destination, with its
/// description `DEST.part.meta`.
///
/// While it exists, the partial file is locked (`flock`), so that two
/// downloads cannot write it at once. Dropped before it is published, a
/// partial file that holds nothing is removed with its description; one
/// that holds part of the file is left for a later get to resume.
#[derive(Debug)]
pub struct Staging {
    file: File,
    part: PathBuf,
    meta: PathBuf,
    dest: PathBuf,
    force: bool,
    /// What the partial file holds, to resume from: its length and the
    /// version it is a copy of.
    resume: Option<(u64, FileVersion)>,
    done: bool,
}

impl Staging {
    /// Checks that `dest` may be written (it does not exist, or `force`) and
    /// opens `DEST.part` for a download of `name`: to resume it, if it holds
    /// part of a download of `name` and `resume`, else empty.
    ///
    /// A `DEST.part` that holds bytes but no description of them is not
    /// this client's: it is replaced only with `force`.
    ///
    /// Call this before requesting the file, so that a download that could
    /// not be saved is not even started.
    pub fn open(dest: &Path, name: &str, options: Options) -> Result<Self, ClientError> {
        match fs::symlink_metadata(dest) {
            Ok(_) if !options.force => {
                return Err(ClientError::DestinationExists {
                    path: dest.to_owned(),
                });
            }
            Ok(meta) if meta.is_dir() => {
                return Err(ClientError::Local {
                    action: "cannot replace",
                    path: dest.to_owned(),
                    source: io::Error::new(io::ErrorKind::IsADirectory, "is a directory"),
                });
            }
            _ => {}
        }
        let (part, meta) = part_paths(dest);
        let local = |action, source| ClientError::Local {
            action,
            path: part.clone(),
            source,
        };
        // Never through a symbolic link; the saved file gets the usual
        // permissions (0666 less the umask).
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(0o666)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&part)
            .map_err(|e| local("cannot create", e))?;
        let stat = file.metadata().map_err(|e| local("cannot read", e))?;
        if !stat.is_file() {
            return Err(local(
                "cannot use",
                io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
            ));
        }
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(local(
                    "cannot use",
                    io::Error::new(
                        io::ErrorKind::WouldBlock,
                        "another download to the same destination is in progress",
                    ),
                ));
            }
            Err(e) => return Err(local("cannot lock", e.into())),
        }
        let held = stat.len();
        let described = PartMeta::read(&meta);
        let resume = match &described {
            Some(m) if options.resume && m.name == name && held > 0 && held <= m.version.size => {
                Some((held, m.version))
            }
            _ => None,
        };
        if resume.is_none() && held > 0 {
            if described.is_none() && !options.force {
                return Err(ClientError::DestinationExists { path: part });
            }
            file.set_len(0).map_err(|e| local("cannot write", e))?;
        }
        if resume.is_none() {
            remove_if_there(&meta).map_err(|e| local("cannot remove", e))?;
        }
        file.seek(SeekFrom::Start(resume.map_or(0, |(held, _)| held)))
            .map_err(|e| local("cannot write", e))?;
        Ok(Staging {
            file,
            part,
            meta,
            dest: dest.to_owned(),
            force: options.force,
            resume,
            done: false,
        })
    }

    /// The destination.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// The partial file's path (`DEST.part`).
    pub fn part_path(&self) -> &Path {
        &self.part
    }

    /// The bytes the partial file holds that a download can start after.
    pub fn resumable(&self) -> u64 {
        self.resume.map_or(0, |(held, _)| held)
    }

    /// What the partial file holds to resume from: its length and the
    /// version it is a copy of.
    pub(super) fn resume(&self) -> Option<(u64, FileVersion)> {
        self.resume
    }

    fn error(&self, action: &'static str, source: io::Error) -> ClientError {
        ClientError::Local {
            action,
            path: self.part.clone(),
            source,
        }
    }

    /// Empties the partial file and describes it as a copy of `name` at
    /// `version`, for a download from byte 0.
    pub(super) fn restart(&mut self, name: &str, version: FileVersion) -> Result<(), ClientError> {
        self.resume = None;
        self.file
            .set_len(0)
            .and_then(|()| self.file.seek(SeekFrom::Start(0)).map(drop))
            .map_err(|e| self.error("cannot write", e))?;
        let meta = PartMeta {
            name: name.to_owned(),
            version,
        };
        fs::write(&self.meta, meta.encode()).map_err(|source| ClientError::Local {
            action: "cannot write",
            path: self.meta.clone(),
            source,
        })
    }

    /// Writes the rest of `download`'s body into the partial file, which
    /// holds its first [`Download::offset`] bytes and is positioned after
    /// them, and returns the hash of the whole file. The hashing and the
    /// disk writes run on another thread, so that neither holds up the
    /// reading.
    ///
    /// If the body is cut short, what arrived is written all the same, for
    /// a later get to resume after it. A write error stops the download
    /// (the session is then unusable).
    pub(super) fn receive<S: Read + Write>(
        &mut self,
        download: &mut Download<'_, S>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Hash, ClientError> {
        let remaining = download.remaining();
        if let Ok(len) = usize::try_from(remaining)
            && len <= SMALL_BODY
        {
            return self.receive_small(download, len, progress);
        }
        let Pipeline {
            to_full: to_writer,
            full: writer_rx,
            to_empty: to_reader,
            empty: reader_rx,
        } = Pipeline::new(remaining);
        let prefix = download.offset();
        let file = &mut self.file;
        let (read, written) = std::thread::scope(|scope| {
            // One worker hashes each buffer and writes it while it is still
            // in the core's cache.
            let writer = scope.spawn(move || -> Result<Hash, (bool, io::Error)> {
                let mut hasher = blake3::Hasher::new();
                // The part of the file already there comes first; the body
                // waits in the pipeline meanwhile.
                hash_range(&mut hasher, file, prefix).map_err(|e| (true, e))?;
                for (buf, n) in writer_rx {
                    let data = buf.get(..n).unwrap_or_default();
                    hasher.update(data);
                    file.write_all(data).map_err(|e| (false, e))?;
                    // The reader may be gone after a failure; the buffer
                    // is then dropped.
                    let _ = to_reader.send(buf);
                }
                Ok(hasher.finalize().into())
            });
            let read = read_into_buffers(download, &reader_rx, &to_writer, progress);
            drop(to_writer);
            let written = writer
                .join()
                .unwrap_or_else(|_| Err((false, io::Error::other("the writing thread failed"))));
            (read, written)
        });
        let hash = match written {
            Ok(hash) => hash,
            Err((true, e)) => return Err(self.error("cannot read", e)),
            Err((false, e)) => return Err(self.error("cannot write", e)),
        };
        read?;
        if download.remaining() > 0 {
            return Err(self.error(
                "cannot write",
                io::Error::other("the writing thread stopped early"),
            ));
        }
        Ok(hash)
    }

    /// [`Staging::receive`] of a body of `len` bytes, at most
    /// [`SMALL_BODY`]: read whole, then hashed and written.
    fn receive_small<S: Read + Write>(
        &mut self,
        download: &mut Download<'_, S>,
        len: usize,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Hash, ClientError> {
        let mut hasher = blake3::Hasher::new();
        hash_range(&mut hasher, &self.file, download.offset())
            .map_err(|e| self.error("cannot read", e))?;
        if len == 0 {
            return Ok(hasher.finalize().into());
        }
        let mut buf = vec![0u8; len];
        let mut filled = 0;
        while filled < len {
            let n = download.read_unhashed(&mut buf[filled..])?;
            filled += n;
            progress(n as u64);
        }
        hasher.update(&buf);
        self.file
            .write_all(&buf)
            .map_err(|e| self.error("cannot write", e))?;
        Ok(hasher.finalize().into())
    }

    /// Writes a body received whole, after what the partial file holds.
    pub(super) fn write_body(&mut self, body: &[u8]) -> Result<(), ClientError> {
        self.file
            .write_all(body)
            .map_err(|e| self.error("cannot write", e))
    }

    /// Forgets what the partial file holds.
    pub(super) fn discard(&mut self) {
        self.resume = None;
        let _ = self.file.set_len(0);
        let _ = remove_if_there(&self.meta);
    }

    /// Flushes the file to disk and renames it to the destination: without
    /// `force`, only if nothing appeared there meanwhile. Then removes the
    /// description. Returns the file's stamp in place (a rename moves its
    /// change time), if it can be read.
    pub(super) fn publish(mut self) -> Result<Option<Stamp>, ClientError> {
        self.file
            .sync_all()
            .map_err(|e| self.error("cannot write", e))?;
        let placed = if self.force {
            fs::rename(&self.part, &self.dest)
        } else {
            rename_noreplace(&self.part, &self.dest)
        };
        if let Err(e) = placed {
            if !self.force && e.kind() == io::ErrorKind::AlreadyExists {
                return Err(ClientError::DestinationExists {
                    path: self.dest.clone(),
                });
            }
            return Err(ClientError::Local {
                action: "cannot save",
                path: self.dest.clone(),
                source: e,
            });
        }
        self.done = true;
        let _ = remove_if_there(&self.meta);
        sync_parent(&self.dest)?;
        Ok(self.file.metadata().ok().map(|meta| Stamp::of(&meta)))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.done && self.file.metadata().is_ok_and(|m| m.len() == 0) {
            let _ = remove_if_there(&self.part);
            let _ = remove_if_there(&self.meta);
        }
    }
}

/// The reading side of [`Staging::receive`]: fills buffers from `empty`
/// with body bytes and passes them to `full`, until the body ends or the
/// writer stops (its error then says why).
fn read_into_buffers<S: Read + Write>(
    download: &mut Download<'_, S>,
    empty: &std::sync::mpsc::Receiver<Vec<u8>>,
    full: &std::sync::mpsc::SyncSender<(Vec<u8>, usize)>,
    progress: &mut dyn FnMut(u64),
) -> Result<(), ClientError> {
    while download.remaining() > 0 {
        let Ok(mut buf) = empty.recv() else {
            return Ok(());
        };
        let want = usize::try_from(download.remaining()).map_or(buf.len(), |r| r.min(buf.len()));
        let mut filled = 0;
        while filled < want {
            match download.read_unhashed(buf.get_mut(filled..want).unwrap_or_default()) {
                Ok(n) => {
                    filled += n;
                    progress(n as u64);
                }
                Err(e) => {
                    // What arrived is written all the same: a later
                    // download can resume after it.
                    if filled > 0 {
                        let _ = full.send((buf, filled));
                    }
                    return Err(e);
                }
            }
        }
        if full.send((buf, filled)).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// Feeds bytes `0..len` of `file` to `hasher`, with positioned reads.
fn hash_range(hasher: &mut blake3::Hasher, file: &File, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    let mut buf = vec![0u8; usize::try_from(len).map_or(BODY_CHUNK, |n| n.clamp(1, BODY_CHUNK))];
    let mut offset = 0u64;
    while offset < len {
        let want = usize::try_from(len - offset).map_or(buf.len(), |n| n.min(buf.len()));
        let chunk = buf.get_mut(..want).unwrap_or_default();
        file.read_exact_at(chunk, offset)?;
        hasher.update(chunk);
        offset += want as u64;
    }
    Ok(())
}

fn remove_if_there(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Renames `from` to `to` unless `to` exists.
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        // A file system without the flag: a link fails just the same if
        // the name is taken.
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {
            fs::hard_link(from, to)?;
            fs::remove_file(from)
        }
        Err(e) => Err(e.into()),
    }
}

/// Makes the rename durable.
fn sync_parent(path: &Path) -> Result<(), ClientError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| ClientError::Local {
            action: "cannot sync directory",
            path: dir.to_owned(),
            source,
        })
}
