//! Uploading a local file and saving a download, safely, and resuming
//! either after an interruption.
//!
//! An upload streams the file, read and hashed on another thread, and
//! checks that it ends exactly where its size said it would. A file over
//! 64 KiB is sent with a resume key, derived from its
//! name, size, modification time and first and last blocks: if the upload
//! is interrupted, the server keeps what it received, and the next put of
//! the same file under the same name sends only the rest.
//!
//! A download goes to `DEST.part` next to its destination, described by
//! `DEST.part.meta` (the remote name and the version of the file it is a
//! copy of), and is renamed into place only after the hash of the whole
//! file has been verified and its content flushed to disk: there is never
//! a partial or unverified file under the destination's name. If the
//! download is interrupted, the next get of the same name to the same
//! destination asks the server for the rest only, provided the remote file
//! is still the same version.

use crate::error::ClientError;
use crate::escape::Escaped;
use crate::progress::Meter;
use crate::session::{EagerSent, PutDone, Session, read_whole};
use framekit_transfer::{ErrorCode, FileVersion, Hash, MAX_EAGER_BODY, validate_name};
use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Files up to this size go in one piece, as eager uploads, and are never
/// resumed.
pub const SMALL_FILE: u64 = MAX_EAGER_BODY;

/// At most this many eager uploads are sent ahead of their answers.
const EAGER_WINDOW: usize = 64;

/// At most this many body bytes of eager uploads are sent ahead of their
/// answers.
const EAGER_WINDOW_BYTES: u64 = 1024 * 1024;

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
        })
    }

    /// The file's size when it was opened.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The whole content of a small file; [`ClientError::FileChanged`] if
    /// it is no longer [`Source::size`] bytes long.
    fn read_small(&self) -> Result<Vec<u8>, ClientError> {
        let len = usize::try_from(self.size).map_err(|_| ClientError::FileChanged {
            path: self.path.clone(),
            announced: self.size,
            read: None,
        })?;
        read_whole(&self.file, &self.path, len)
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
                .map_err(|source| ClientError::Local {
                    action: "cannot read",
                    path: self.path.clone(),
                    source,
                })?;
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
pub fn base_name(path: &Path) -> Result<String, ClientError> {
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

/// How to transfer a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Replace an existing file on the receiving side.
    pub force: bool,
    /// Continue an interrupted transfer, and let this one be continued.
    pub resume: bool,
}

/// A finished upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uploaded {
    /// What the server stored.
    pub done: PutDone,
    /// Bytes actually sent: the server had the others already.
    pub sent: u64,
}

/// Uploads `source` as `name`, resuming an interrupted upload of the same
/// file if `options.resume` and the server kept one, and showing progress
/// on `meter`. `note` receives status messages (a resume, a restart).
///
/// If the file turns out shorter or longer than its size when opened, the
/// upload fails with [`ClientError::FileChanged`] before the trailer is
/// sent, so the server publishes nothing; the session is then unusable.
/// If a resumed upload does not verify as a whole (the server's part came
/// from other content), it is sent again whole, once.
pub fn put_file<S: Read + Write>(
    session: &mut Session<S>,
    source: &Source,
    name: &str,
    options: Options,
    meter: &Meter,
    note: &mut dyn FnMut(&str),
) -> Result<Uploaded, ClientError> {
    if source.size <= SMALL_FILE {
        let body = source.read_small()?;
        meter.start(None, source.size, 0);
        let done = session.put_eager(name, &body, options.force)?;
        meter.inc(source.size);
        return Ok(Uploaded {
            done,
            sent: source.size,
        });
    }
    let key = match options.resume && source.size > SMALL_FILE {
        true => Some(source.resume_key(name)?),
        false => None,
    };
    let mut retried = false;
    loop {
        let mut upload = session.start_put_with_key(name, source.size, options.force, key)?;
        let offset = upload.offset();
        if offset > 0 {
            note(&format!(
                "resuming the upload of {} at byte {offset} of {}",
                Escaped(name),
                source.size
            ));
        }
        meter.start(None, source.size, offset);
        upload.send_file(&source.file, &source.path, &mut |n| meter.inc(n))?;
        match upload.finish() {
            Err(ClientError::Refused { reply, .. })
                if reply.code == ErrorCode::IntegrityMismatch && offset > 0 && !retried =>
            {
                // The server dropped its part: the next attempt starts at 0.
                note(&format!(
                    "the server's partial upload of {} did not verify with this file: sending it whole",
                    Escaped(name)
                ));
                retried = true;
            }
            Ok(done) => {
                return Ok(Uploaded {
                    done,
                    sent: source.size - offset,
                });
            }
            Err(e) => return Err(e),
        }
    }
}

/// One file of [`put_small_files`].
#[derive(Debug, Clone, Copy)]
pub struct SmallFile<'a> {
    /// Where it is.
    pub path: &'a Path,
    /// Its remote name.
    pub remote: &'a str,
}

/// Uploads files expected to be small over one session, each as an eager
/// upload, sending the next while the server stores the ones before (up to
/// 64 files or 1 MiB ahead): many small files go at the speed of the
/// server's disk rather than of round trips. A file that turns out to be
/// over [`SMALL_FILE`] goes through [`put_file`] once the ones before it
/// are answered.
///
/// `done(i, result)` is called for the files in order. It stops after the
/// first failure that leaves the session unusable, which it reports, and
/// returns how many files it reported: the others were not sent, or not
/// carried out, and can be tried again on a new session. That is all of
/// them when it returns `files.len()`, and at least one if there was any.
pub fn put_small_files<S: Read + Write>(
    session: &mut Session<S>,
    files: &[SmallFile<'_>],
    options: Options,
    meter: &Meter,
    done: &mut dyn FnMut(usize, Result<Uploaded, ClientError>),
) -> usize {
    let mut ahead = Ahead {
        sent: VecDeque::new(),
        bytes: 0,
        reported: 0,
    };
    for (i, file) in files.iter().enumerate() {
        let source = match Source::open(file.path) {
            Ok(source) => source,
            Err(e) => {
                // Reported in order, after the files before it.
                if !ahead.answer_all(session, done) {
                    return ahead.reported;
                }
                done(i, Err(e));
                ahead.reported += 1;
                continue;
            }
        };
        if source.size > SMALL_FILE {
            if !ahead.answer_all(session, done) {
                return ahead.reported;
            }
            let result = put_file(session, &source, file.remote, options, meter, &mut |_| {});
            done(i, result);
            ahead.reported += 1;
            if session.is_broken() {
                return ahead.reported;
            }
            continue;
        }
        while ahead.sent.len() >= EAGER_WINDOW
            || (!ahead.sent.is_empty() && ahead.bytes + source.size > EAGER_WINDOW_BYTES)
        {
            if !ahead.answer_oldest(session, done) {
                return ahead.reported;
            }
        }
        let sent = source
            .read_small()
            .and_then(|body| session.send_eager(file.remote, &body, options.force));
        match sent {
            Ok(sent) => {
                ahead.bytes += sent.size();
                ahead.sent.push_back((i, sent));
            }
            // A local failure, or a name refused before sending: this
            // file's own failure, reported after the ones before it.
            Err(e) if !session.is_broken() => {
                if !ahead.answer_all(session, done) {
                    return ahead.reported;
                }
                done(i, Err(e));
                ahead.reported += 1;
            }
            // The connection failed: it is the failure of the oldest file
            // not answered yet, and the rest can go on a new session.
            Err(e) => {
                let oldest = ahead.sent.front().map_or(i, |&(j, _)| j);
                done(oldest, Err(e));
                return ahead.reported + 1;
            }
        }
    }
    ahead.answer_all(session, done);
    ahead.reported
}

/// The eager uploads of [`put_small_files`] sent and not answered yet.
struct Ahead {
    /// Each one's index in the files, and what was sent.
    sent: VecDeque<(usize, EagerSent)>,
    /// Their body bytes.
    bytes: u64,
    /// How many files were reported so far: files are reported in order,
    /// so this is also the index of the next one to report.
    reported: usize,
}

impl Ahead {
    /// Reads the oldest answer and reports it. False if the session broke.
    fn answer_oldest<S: Read + Write>(
        &mut self,
        session: &mut Session<S>,
        done: &mut dyn FnMut(usize, Result<Uploaded, ClientError>),
    ) -> bool {
        let Some((i, sent)) = self.sent.pop_front() else {
            return true;
        };
        self.bytes -= sent.size();
        let result = session.eager_answer(sent).map(|done| Uploaded {
            done,
            sent: sent.size(),
        });
        done(i, result);
        self.reported += 1;
        !session.is_broken()
    }

    /// Reads and reports every answer due. False if the session broke.
    fn answer_all<S: Read + Write>(
        &mut self,
        session: &mut Session<S>,
        done: &mut dyn FnMut(usize, Result<Uploaded, ClientError>),
    ) -> bool {
        while !self.sent.is_empty() {
            if !self.answer_oldest(session, done) {
                return false;
            }
        }
        true
    }
}

/// Where to save a download of `name`: `output`, or inside it if it is an
/// existing directory, or `./<base name of name>` without it.
///
/// Only the last component of `name` is used, and `name` is checked
/// against the protocol's rules first, so the result never escapes the
/// chosen directory.
pub fn destination(name: &str, output: Option<&Path>) -> Result<PathBuf, ClientError> {
    validate_name(name).map_err(|source| ClientError::InvalidName {
        name: name.to_owned(),
        source,
    })?;
    // A valid name's last component is a plain file name: not empty, not
    // `.` or `..`, no separator.
    let base = name.rsplit('/').next().unwrap_or(name);
    let Some(output) = output else {
        return Ok(PathBuf::from(base));
    };
    if output.is_dir() {
        return Ok(output.join(base));
    }
    if output.as_os_str().as_encoded_bytes().ends_with(b"/") {
        return Err(ClientError::Local {
            action: "cannot write to",
            path: output.to_owned(),
            source: io::Error::new(io::ErrorKind::NotFound, "no such directory"),
        });
    }
    Ok(output.to_owned())
}

/// The partial file of a download to `dest`, and its description:
/// `DEST.part` and `DEST.part.meta` next to it; for a name too long for
/// that, a name derived from its hash.
fn part_paths(dest: &Path) -> (PathBuf, PathBuf) {
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

/// The first line of a partial download's description.
const META_HEADER: &str = "framekit partial download 1";

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

    fn error(&self, action: &'static str, source: io::Error) -> ClientError {
        ClientError::Local {
            action,
            path: self.part.clone(),
            source,
        }
    }

    /// Empties the partial file and describes it as a copy of `name` at
    /// `version`, for a download from byte 0.
    fn restart(&mut self, name: &str, version: FileVersion) -> Result<(), ClientError> {
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

    /// Forgets what the partial file holds.
    fn discard(&mut self) {
        self.resume = None;
        let _ = self.file.set_len(0);
        let _ = remove_if_there(&self.meta);
    }

    /// Flushes the file to disk and renames it to the destination: without
    /// `force`, only if nothing appeared there meanwhile. Then removes the
    /// description.
    fn publish(mut self) -> Result<(), ClientError> {
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
        sync_parent(&self.dest)
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

/// A verified download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    /// Where it was saved.
    pub path: PathBuf,
    /// Its size.
    pub size: u64,
    /// Its BLAKE3 hash, as announced by the server and verified.
    pub hash: Hash,
    /// Bytes actually received: the partial file had the others.
    pub received: u64,
}

/// Downloads `name` into `staging`'s partial file, after what it holds if
/// the remote file is still the version it came from, verifies the whole
/// file, and publishes it at the destination. `note` receives status
/// messages (a resume, a restart).
///
/// If the download fails before any byte arrives, nothing is left; if it is
/// cut short, the partial file keeps what arrived, for a later get to
/// resume; if the whole file does not verify, the partial file is emptied
/// (and a resumed download is tried again from 0, once).
pub fn get_file<S: Read + Write>(
    session: &mut Session<S>,
    name: &str,
    mut staging: Staging,
    meter: &Meter,
    note: &mut dyn FnMut(&str),
) -> Result<Saved, ClientError> {
    loop {
        let resumed = staging.resume;
        let mut download = match resumed {
            Some((held, version)) => session.start_get_from(name, held, version)?,
            None => session.start_get(name)?,
        };
        let (size, offset) = (download.size(), download.offset());
        match resumed {
            Some(_) if offset == 0 => note(&format!(
                "{} changed on the server since the partial download: starting over",
                Escaped(name)
            )),
            Some(_) => note(&format!(
                "resuming the download of {} at byte {offset} of {size}",
                Escaped(name)
            )),
            None => {}
        }
        if offset == 0 {
            staging.restart(name, download.version())?;
        }
        meter.start(None, size, offset);
        let part = staging.part.clone();
        download.receive_into(&mut staging.file, &part, &mut |n| meter.inc(n))?;
        match download.finish() {
            Ok(hash) => {
                let path = staging.dest.clone();
                staging.publish()?;
                return Ok(Saved {
                    path,
                    size,
                    hash,
                    received: size - offset,
                });
            }
            Err(ClientError::Integrity { .. }) if offset > 0 => {
                note(&format!(
                    "the partial download of {} did not verify with the rest: downloading it whole",
                    Escaped(name)
                ));
                staging.discard();
            }
            Err(e) => {
                if matches!(e, ClientError::Integrity { .. }) {
                    staging.discard();
                }
                return Err(e);
            }
        }
    }
}
