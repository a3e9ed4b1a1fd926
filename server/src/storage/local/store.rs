//! The served directory: name resolution confined to the root, uploads
//! staged and published atomically.
//!
//! Every path is resolved by `cap-std` relative to an open handle on the
//! root, component by component (with `openat2(RESOLVE_BENEATH)` where the
//! kernel has it): `..` and symlinks cannot lead outside the root, whatever
//! the name says, and no string prefix check is involved. Names are also
//! checked against the protocol's rules ([`validate_name`]) before anything
//! is touched.
//!
//! Uploads are written to a temporary file under `.framekit/staging/`, a
//! directory no client name can reach; uploads that may be resumed go to
//! `.framekit/partial/` instead (see [`super::partial`]). Publishing is a
//! single `rename` (replace) or `link` (create only if absent), so readers
//! see the old file or the new one, never a partial one, and two uploads of
//! the same new name cannot both succeed. The hash of a big published
//! file is recorded under `.framekit/digests/` (see [`super::digest`]).

use super::digest::Digests;
use super::partial::{Claim, Partials, Record, Retention, data_name, now_ms};
use super::space::{GROW_STEP, MinFree, Reservation, Space};
use super::walk::{ListingMemory, Walk};
use crate::storage::{Found, SmallPut, StoreError};
use cap_std::ambient_authority;
use cap_std::fs::{Dir, MetadataExt, OpenOptions, OpenOptionsExt};
use framekit_transfer::{Entry, Hash, RESERVED_NAME, validate_name};
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Where uploads in progress live, relative to the root.
const STAGING: &str = ".framekit/staging";

/// How many times a step that a concurrent delete undid (removing a
/// directory, left empty, between its making and its use) is tried again.
const RETRIES: usize = 16;

/// What [`Store::make_one`] found.
enum Made {
    /// It made the directory.
    Created,
    /// A directory (or a link to one) was there.
    Existed,
    /// Its parent is missing, or what was in the way went meanwhile.
    Vanished,
    /// Something else is in the way, or the file system refused.
    Failed(StoreError),
}

/// The served root.
#[derive(Debug)]
pub(super) struct Store {
    root: Dir,
    staging: Dir,
    partials: Arc<Partials>,
    digests: Digests,
    next_upload: AtomicU64,
    /// The memory of listings in progress.
    listings: Arc<ListingMemory>,
    /// The room uploads take on the disk.
    space: Arc<Space>,
    /// The steps of making uploads durable, in order (see [`Store::note`]).
    #[cfg(test)]
    steps: std::sync::Mutex<Vec<Step>>,
}

/// A directory by its name, `None` for the root.
type DirName = Option<String>;

/// A step of making an upload durable, as the tests that check their
/// order see it (see [`Store::note`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step {
    /// The content of the upload to be published under this name was
    /// synced.
    SyncFile(String),
    /// The upload was linked or renamed to this name.
    Publish(String),
    /// This directory (empty for the root) was synced.
    SyncDir(String),
}

/// A small upload received whole, checked and verified
/// ([`Store::check_small`]), to be staged.
#[derive(Debug)]
pub(super) struct Checked {
    name: String,
    overwrite: bool,
    body: bytes::Bytes,
    hash: blake3::Hash,
}

impl Checked {
    /// Writes the upload to a staged file and flushes it to disk; an
    /// upload that cannot be written or synced is removed.
    pub(super) fn stage(self, store: &Store) -> Result<Staged, StoreError> {
        let mut upload = store.begin_upload(self.body.len() as u64)?;
        if let Err(e) = upload.write(&self.body).and_then(|()| upload.sync()) {
            upload.discard();
            return Err(e.into());
        }
        store.note(|| Step::SyncFile(self.name.clone()));
        Ok(Staged {
            upload,
            name: self.name,
            overwrite: self.overwrite,
            hash: self.hash,
        })
    }
}

/// A small upload written to its staged file and synced
/// ([`Checked::stage`]), to be published.
#[derive(Debug)]
pub(super) struct Staged {
    pub(super) upload: LocalUpload,
    pub(super) name: String,
    pub(super) overwrite: bool,
    pub(super) hash: blake3::Hash,
}

impl Store {
    /// Opens (creating it if needed) the directory to serve, with the
    /// default retention of interrupted uploads. See [`Store::open_with`].
    #[cfg(test)]
    pub(super) fn open(path: &Path) -> io::Result<Store> {
        Store::open_with(path, Retention::default(), MinFree::Bytes(0))
    }

    /// Opens (creating it if needed) the directory to serve, removes the
    /// leftovers of uploads that were in progress when a previous server
    /// stopped, and keeps the interrupted uploads that can still be
    /// resumed under `retention`. Uploads must leave `min_free` of the disk
    /// free.
    pub(super) fn open_with(
        path: &Path,
        retention: Retention,
        min_free: MinFree,
    ) -> io::Result<Store> {
        std::fs::create_dir_all(path)?;
        let root = Dir::open_ambient_dir(path, ambient_authority())?;
        root.create_dir_all(STAGING)?;
        let staging = root.open_dir(STAGING)?;
        for entry in staging.entries()? {
            let entry = entry?;
            let name = entry.file_name();
            if entry.file_type()?.is_dir() {
                staging.remove_dir_all(&name)?;
            } else {
                staging.remove_file(&name)?;
            }
        }
        let (available, _) = Space::available(&root)?;
        let partials = Arc::new(Partials::open(&root, retention, available)?);
        let digests = Digests::open(&root)?;
        let space = Arc::new(Space::new(
            min_free,
            root.try_clone()?,
            Arc::clone(&partials),
        ));
        Ok(Store {
            root,
            staging,
            partials,
            digests,
            next_upload: AtomicU64::new(0),
            listings: Arc::default(),
            space,
            #[cfg(test)]
            steps: std::sync::Mutex::default(),
        })
    }

    /// The interrupted uploads kept for resuming.
    pub(super) fn partials(&self) -> &Partials {
        &self.partials
    }

    /// Checks, before any body byte is sent, that `name` could be published:
    /// a valid name, not a directory, not under a file, not outside the
    /// root, and absent unless `overwrite`.
    pub(super) fn check_put(&self, name: &str, overwrite: bool) -> Result<(), StoreError> {
        validate_name(name)?;
        self.outside_reserved(parent_of(name))?;
        // Without overwrite, anything at the name (even a dangling link,
        // which the final link step would not replace) is in the way.
        match self.root.symlink_metadata(name) {
            Ok(meta) if meta.is_dir() => return Err(StoreError::NotAFile),
            Ok(_) if !overwrite => return Err(StoreError::AlreadyExists),
            _ => {}
        }
        match self.root.metadata(name) {
            Ok(meta) if meta.is_dir() => Err(StoreError::NotAFile),
            Ok(_) if !overwrite => Err(StoreError::AlreadyExists),
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates a fresh temporary file in the staging area for an upload
    /// that will write `size` bytes, if the disk has room for them (see
    /// [`Space::admit`]).
    pub(super) fn begin_upload(&self, size: u64) -> Result<LocalUpload, StoreError> {
        let reservation = self.space.admit(size, None)?;
        self.staged(reservation)
    }

    /// Creates a fresh temporary file in the staging area.
    fn staged(&self, reservation: Reservation) -> Result<LocalUpload, StoreError> {
        // A name left by another process (which the start would have
        // removed) is skipped, not taken for a client's name in the way.
        let mut attempt = 0;
        let (temp, file) = loop {
            let id = self.next_upload.fetch_add(1, Ordering::Relaxed);
            let temp = format!("upload-{}-{id}.part", std::process::id());
            match self
                .staging
                .open_with(&temp, OpenOptions::new().write(true).create_new(true))
            {
                Ok(file) => break (temp, file),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < RETRIES => {
                    attempt += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(StoreError::Io(io::Error::other(e)));
                }
                Err(e) => return Err(e.into()),
            }
        };
        Ok(LocalUpload {
            file: Some(file.into_std()),
            temp,
            dir: self.staging.try_clone()?,
            published: false,
            offset: 0,
            written: 0,
            held: Vec::new(),
            resume: None,
            reservation: Some(reservation),
        })
    }

    /// Starts an upload of `size` bytes as `name` that can be resumed with
    /// `key` if it is interrupted: it continues an interrupted upload of
    /// the same name and size with the same key (see [`LocalUpload::offset`]),
    /// or starts afresh. When it cannot be kept (the key is in use by
    /// another upload, or it does not fit the staging quota), it is an
    /// ordinary upload. Either way, only if the disk has room for what it
    /// still needs.
    pub(super) fn begin_resumable(
        &self,
        key: Hash,
        name: &str,
        size: u64,
    ) -> Result<LocalUpload, StoreError> {
        let dir = self.partials.dir().try_clone()?;
        // What is kept for it is not dropped to make room for it.
        let held = self.partials.kept_for(&key, name, size);
        let mut reservation = self.space.admit(size - held, Some(&key))?;
        let (offset, created_ms) = match self.partials.claim(&key, name, size) {
            Claim::NotResumable => {
                drop(reservation);
                return self.begin_upload(size);
            }
            Claim::Resume { offset, created_ms } => (offset, created_ms),
            Claim::Fresh => (0, now_ms()),
        };
        let (file, offset) = match self.partials.open_data(&key, offset) {
            Ok(opened) => opened,
            Err(e) => {
                self.partials.discard(&key, "its data could not be opened");
                return Err(e.into());
            }
        };
        // Less was kept than when it was admitted (dropped meanwhile, or
        // its data missing): the rest needs room too.
        let short = (size - offset).saturating_sub(reservation.left());
        if short > 0
            && let Err(e) = reservation.grow(short, Some(&key))
        {
            self.partials
                .discard(&key, "the disk has no room for the rest");
            return Err(e);
        }
        Ok(LocalUpload {
            file: Some(file),
            temp: data_name(&key),
            dir,
            published: false,
            offset,
            written: 0,
            held: Vec::new(),
            resume: Some(Resume {
                partials: Arc::clone(&self.partials),
                key,
                name: name.to_owned(),
                size,
                created_ms: if offset > 0 { created_ms } else { now_ms() },
                discard: None,
            }),
            reservation: Some(reservation),
        })
    }

    /// Makes a complete, verified and synced upload visible as `name`
    /// (writing and syncing first the body it holds in memory, if any):
    /// atomically replacing an existing file if `overwrite`, otherwise
    /// failing with [`StoreError::AlreadyExists`] if the name was taken in
    /// the meantime. Creates missing parent directories and syncs the
    /// directories that received them and the file. `hash` is the file's verified
    /// BLAKE3 hash, recorded for downloads.
    pub(super) fn publish(
        &self,
        mut upload: LocalUpload,
        name: &str,
        overwrite: bool,
        hash: &blake3::Hash,
    ) -> Result<(), StoreError> {
        let held = std::mem::take(&mut upload.held);
        if let Err(e) = upload.write_whole(&held) {
            upload.discard();
            return Err(e.into());
        }
        // A streamed body was synced by its sink.
        if !held.is_empty() {
            self.note(|| Step::SyncFile(name.to_owned()));
        }
        for dir in self.place(upload, name, overwrite, hash)? {
            self.sync_existing(dir.as_deref())?;
        }
        Ok(())
    }

    /// [`Store::publish`] of an upload whose content is synced, but for
    /// the last step: the directories to sync, returned in order (`None`
    /// for the root), are those that received a directory created for it
    /// (the nearest one that existed first, then each directory created),
    /// then the one that received the file. A failed publish removes the
    /// directories it made and keeps nothing of the upload.
    pub(super) fn place(
        &self,
        mut upload: LocalUpload,
        name: &str,
        overwrite: bool,
        hash: &blake3::Hash,
    ) -> Result<Vec<DirName>, StoreError> {
        // The file's content is synced by the caller and nothing more is
        // written through this handle; it is kept to describe the
        // published file in its hash's record.
        let file = upload.file.take();
        let parent = parent_of(name);
        let mut made = Vec::new();
        let placed = validate_name(name)
            .map_err(StoreError::from)
            .and_then(|()| self.outside_reserved(parent))
            .and_then(|()| self.link(&upload, name, overwrite, &mut made));
        if let Err(e) = placed {
            // Directories made for it go again (if nothing else went in
            // them meanwhile): a failed put leaves nothing behind. Nor is
            // a complete upload that lost its publish kept: the name has
            // another content, or cannot have this one.
            self.remove_made(&made);
            upload.discard_because("its publish failed");
            return Err(e);
        }
        let to_sync = dirs_to_sync(parent, &made);
        upload.published = true;
        self.note(|| Step::Publish(name.to_owned()));
        match &upload.resume {
            Some(resume) => resume.partials.published(&resume.key),
            None if !overwrite => upload.dir.remove_file(&upload.temp)?,
            None => {}
        }
        // Interrupted uploads of this name were for an older content.
        self.partials.forget_name(name);
        // Last: linking, moving and unlinking the file change the time
        // the record holds. The file is published whatever happens here;
        // without a record, downloads hash it as they send it.
        let size = upload.offset + upload.written;
        if let Some(file) = file.as_ref().filter(|_| size >= super::digest::MIN_SIZE)
            && let Err(e) = self.digests.record(name, file, hash)
        {
            tracing::warn!(name, error = %e, "could not record the hash of a published file");
        }
        Ok(to_sync)
    }

    /// Moves (`overwrite`) or links a staged upload to `name`, making its
    /// missing parents (recorded in `made`). A parent that a concurrent
    /// delete removes again in between is made again, a few times; a name
    /// taken meanwhile is [`StoreError::AlreadyExists`] only if something
    /// other than a directory is there when the link failed.
    fn link<'a>(
        &self,
        upload: &LocalUpload,
        name: &'a str,
        overwrite: bool,
        made: &mut Vec<&'a str>,
    ) -> Result<(), StoreError> {
        let parent = parent_of(name);
        for _ in 0..RETRIES {
            if let Some(parent) = parent {
                made.extend(self.create_dirs(parent)?);
            }
            let placed = if overwrite {
                upload.dir.rename(&upload.temp, &self.root, name)
            } else {
                // `link` fails if the name exists: the check and the publish
                // are one step. The staged name is removed afterwards.
                upload.dir.hard_link(&upload.temp, &self.root, name)
            };
            match placed {
                Ok(()) => return Ok(()),
                // A delete removed the parent, left empty, in between.
                Err(e) if e.kind() == io::ErrorKind::NotFound && parent.is_some() => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    match self.root.symlink_metadata(name) {
                        Ok(meta) if meta.is_dir() => return Err(StoreError::NotAFile),
                        Ok(_) => return Err(StoreError::AlreadyExists),
                        // Gone again: try again.
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::NotFound)
    }

    /// Creates the directory `path` and its missing parents, inside the
    /// root; a directory already there is fine, and so is a symlink to one
    /// inside the root. Returns the directories it created, outermost
    /// first. A directory that a concurrent delete removes while this
    /// works is made again, a few times, and then the answer is
    /// [`StoreError::NotFound`]; what is in the way and is not a
    /// directory (a file, a link to nothing) is [`StoreError::NotAFile`].
    /// On a failure, the directories it created are removed again.
    fn create_dirs<'a>(&self, path: &'a str) -> Result<Vec<&'a str>, StoreError> {
        // Most often the parents exist: one call.
        match self.make_one(path) {
            Made::Created => return Ok(vec![path]),
            Made::Existed => return Ok(Vec::new()),
            Made::Failed(e) => return Err(e),
            Made::Vanished => {}
        }
        let mut created = Vec::new();
        for _ in 0..RETRIES {
            let mut vanished = false;
            let ancestors = path
                .match_indices('/')
                .map(|(at, _)| &path[..at])
                .chain(std::iter::once(path));
            for dir in ancestors {
                match self.make_one(dir) {
                    Made::Created => created.push(dir),
                    Made::Existed => {}
                    Made::Vanished => {
                        vanished = true;
                        break;
                    }
                    Made::Failed(e) => {
                        self.remove_made(&created);
                        return Err(e);
                    }
                }
            }
            if !vanished {
                return Ok(created);
            }
        }
        self.remove_made(&created);
        Err(StoreError::NotFound)
    }

    /// Creates the directory `dir`, whose parent should exist.
    fn make_one(&self, dir: &str) -> Made {
        match self.root.create_dir(dir) {
            Ok(()) => Made::Created,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match self.root.metadata(dir) {
                Ok(meta) if meta.is_dir() => Made::Existed,
                Ok(_) => Made::Failed(StoreError::NotAFile),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    match self.root.symlink_metadata(dir) {
                        // A link to nothing is in the way.
                        Ok(_) => Made::Failed(StoreError::NotAFile),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => Made::Vanished,
                        Err(e) => Made::Failed(e.into()),
                    }
                }
                Err(e) => Made::Failed(e.into()),
            },
            // The parent is missing, or was removed since it was made.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Made::Vanished,
            Err(e) => Made::Failed(e.into()),
        }
    }

    /// Removes directories `create_dirs` made, innermost first, those
    /// that are still empty.
    fn remove_made(&self, made: &[&str]) {
        for dir in made.iter().rev() {
            let _ = self.root.remove_dir(dir);
        }
    }

    /// Checks, hashes and verifies one small upload received whole:
    /// [`Checked::stage`] then writes and syncs it, and [`Store::place`]
    /// publishes it.
    pub(super) fn check_small(&self, put: SmallPut) -> Result<Checked, StoreError> {
        let SmallPut {
            name,
            overwrite,
            body,
            expected,
        } = put;
        self.check_put(&name, overwrite)?;
        let hash = blake3::hash(&body);
        if expected != *hash.as_bytes() {
            return Err(StoreError::Mismatch);
        }
        Ok(Checked {
            name,
            overwrite,
            body,
            hash,
        })
    }

    /// Publishes synced uploads as [`Store::place`] does, then syncs each
    /// directory that received one of them once, after all of them are in
    /// place. One result per upload, in order: as for [`Store::publish`],
    /// an upload whose directory could not be synced is reported failed,
    /// although it is visible under its name.
    pub(super) fn publish_batch(
        &self,
        synced: Vec<Result<Staged, StoreError>>,
    ) -> Vec<Result<blake3::Hash, StoreError>> {
        let placed: Vec<Result<(blake3::Hash, Vec<DirName>), StoreError>> = synced
            .into_iter()
            .map(|staged| {
                let Staged {
                    upload,
                    name,
                    overwrite,
                    hash,
                } = staged?;
                let dirs = self.place(upload, &name, overwrite, &hash)?;
                Ok((hash, dirs))
            })
            .collect();
        // Each directory once, with why it could not be synced.
        let mut synced: Vec<(DirName, Option<String>)> = Vec::new();
        for (_, dirs) in placed.iter().flatten() {
            for dir in dirs {
                if !synced.iter().any(|(done, _)| done == dir) {
                    let failure = self
                        .sync_existing(dir.as_deref())
                        .err()
                        .map(|e| e.to_string());
                    synced.push((dir.clone(), failure));
                }
            }
        }
        placed
            .into_iter()
            .map(|result| {
                let (hash, dirs) = result?;
                let failure = synced
                    .iter()
                    .filter(|(done, _)| dirs.contains(done))
                    .find_map(|(_, failure)| failure.clone());
                match failure {
                    Some(failure) => Err(StoreError::Io(io::Error::other(failure))),
                    None => Ok(hash),
                }
            })
            .collect()
    }

    /// Syncs the directory `dir` (the root for `None`): what was linked,
    /// renamed or removed in it is then durable.
    pub(super) fn sync_dir(&self, dir: Option<&str>) -> Result<(), StoreError> {
        // A directory handle from `open_dir` may be an O_PATH descriptor,
        // which cannot be synced: open the directory for reading instead.
        let handle = self.root.open(dir.unwrap_or("."))?;
        handle.sync_all()?;
        self.note(|| Step::SyncDir(dir.unwrap_or_default().to_owned()));
        Ok(())
    }

    /// Records a step of making files durable, for the tests that check
    /// their order; nothing outside tests.
    #[cfg(not(test))]
    pub(super) fn note(&self, _step: impl FnOnce() -> Step) {}

    /// Records a step of making files durable, for the tests that check
    /// their order.
    #[cfg(test)]
    pub(super) fn note(&self, step: impl FnOnce() -> Step) {
        self.steps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(step());
    }

    /// The steps recorded so far.
    #[cfg(test)]
    pub(super) fn steps(&self) -> Vec<Step> {
        self.steps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Opens a regular file for reading. Returns it with its size and
    /// modification time.
    pub(super) fn open_read(&self, name: &str) -> Result<(File, Entry), StoreError> {
        validate_name(name)?;
        self.outside_reserved(Some(name))?;
        // O_NONBLOCK: opening a FIFO placed in the root must not hang the
        // server; it is then refused as not a regular file.
        let file = self.root.open_with(
            name,
            OpenOptions::new()
                .read(true)
                .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32),
        )?;
        let file = file.into_std();
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(StoreError::NotAFile);
        }
        let entry = Entry {
            name: name.to_owned(),
            size: meta.len(),
            modified_ns: std_mtime_ns(&meta),
        };
        Ok((file, entry))
    }

    /// The BLAKE3 hash of the file `name`, opened as `file` by
    /// [`Store::open_read`], if it was recorded when the file was
    /// published and the file has not changed since.
    pub(super) fn known_hash(&self, name: &str, file: &File) -> Option<blake3::Hash> {
        let meta = file.metadata().ok()?;
        self.digests.lookup(name, &meta)
    }

    /// Describes one regular file.
    pub(super) fn stat(&self, name: &str) -> Result<Entry, StoreError> {
        validate_name(name)?;
        self.outside_reserved(Some(name))?;
        let meta = self.root.metadata(name)?;
        if !meta.is_file() {
            return Err(StoreError::NotAFile);
        }
        Ok(Entry {
            name: name.to_owned(),
            size: meta.len(),
            modified_ns: mtime_ns(meta.mtime(), meta.mtime_nsec()),
        })
    }

    /// Deletes one file (a symlink is removed itself, never its target).
    pub(super) fn delete(&self, name: &str) -> Result<(), StoreError> {
        validate_name(name)?;
        self.outside_reserved(parent_of(name))?;
        let meta = self.root.symlink_metadata(name)?;
        if meta.is_dir() {
            return Err(StoreError::NotAFile);
        }
        self.root.remove_file(name)?;
        // A record left behind would not match a later file of this name
        // anyway (another inode): failing to remove it loses nothing.
        let _ = self.digests.forget(name);
        // Directories exist only to hold files: remove the ones this left
        // empty, so the name can become a file again.
        let parent = self.remove_empty_parents(name);
        self.sync_existing(parent)?;
        Ok(())
    }

    /// Describes a regular file or a directory (a symlink inside the root
    /// is followed, as for [`Store::stat`]).
    pub(super) fn describe(&self, name: &str) -> Result<Found, StoreError> {
        validate_name(name)?;
        self.outside_reserved(Some(name))?;
        let meta = self.root.metadata(name)?;
        if meta.is_dir() {
            return Ok(Found::Dir(name.to_owned()));
        }
        if !meta.is_file() {
            return Err(StoreError::NotAFile);
        }
        Ok(Found::File(Entry {
            name: name.to_owned(),
            size: meta.len(),
            modified_ns: mtime_ns(meta.mtime(), meta.mtime_nsec()),
        }))
    }

    /// A listing of every regular file whose name starts with `prefix`,
    /// and every directory too if `dirs`, in byte order of the names (a
    /// directory's with a `/` appended; see [`Walk`]). Symlinks are not
    /// followed and the reserved area is never listed; names that the
    /// protocol could not address are skipped.
    pub(super) fn list(&self, prefix: &str, dirs: bool) -> Result<Walk, StoreError> {
        Ok(Walk::new(
            &self.root,
            String::new(),
            prefix.to_owned(),
            dirs,
            Arc::clone(&self.listings),
        )?)
    }

    /// A listing of every directory and regular file below the directory
    /// `dir` (the root if empty), depth first, a directory before its
    /// content, siblings in byte order of their names (a directory's with
    /// a `/` appended). What [`Store::list`] leaves out is left out, and
    /// so are directories whose names the protocol could not address, with
    /// their content.
    pub(super) fn tree(&self, dir: &str) -> Result<Walk, StoreError> {
        if dir.is_empty() {
            return Ok(Walk::new(
                &self.root,
                String::new(),
                String::new(),
                true,
                Arc::clone(&self.listings),
            )?);
        }
        validate_name(dir)?;
        self.outside_reserved(Some(dir))?;
        let handle = self.root.open_dir(dir)?;
        Ok(Walk::new(
            &handle,
            format!("{dir}/"),
            String::new(),
            true,
            Arc::clone(&self.listings),
        )?)
    }

    /// Creates the directory `name` and its missing parents; fine if it
    /// exists already.
    pub(super) fn make_dir(&self, name: &str) -> Result<(), StoreError> {
        validate_name(name)?;
        self.outside_reserved(Some(name))?;
        let made = self.create_dirs(name)?;
        if let Err(e) = self.sync_existing(parent_of(name)) {
            self.remove_made(&made);
            return Err(e);
        }
        Ok(())
    }

    /// Deletes the directory `name`: with everything in it if `recursive`
    /// (symlinks inside are removed, never followed), otherwise only if it
    /// is empty. Then removes the directories this left empty, as
    /// [`Store::delete`] does.
    pub(super) fn delete_dir(&self, name: &str, recursive: bool) -> Result<(), StoreError> {
        validate_name(name)?;
        self.outside_reserved(Some(name))?;
        // A symlink to a directory is not a directory here.
        if !self.root.symlink_metadata(name)?.is_dir() {
            return Err(StoreError::NotAFile);
        }
        let removed = if recursive {
            self.root.remove_dir_all(name)
        } else {
            self.root.remove_dir(name)
        };
        match removed {
            Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => {
                return Err(StoreError::NotEmpty);
            }
            result => result?,
        }
        let parent = self.remove_empty_parents(name);
        self.sync_dir(parent)?;
        Ok(())
    }

    /// Moves the file or directory `from` to `to` in one step
    /// (`renameat2`; a symlink is moved itself). Without `overwrite`,
    /// fails with [`StoreError::AlreadyExists`] if anything is at `to`
    /// (`RENAME_NOREPLACE`: the check and the move are one step). With it,
    /// a file at `to` is replaced. Creates the missing parents of `to`,
    /// removes the directories `from` leaves empty, and syncs both
    /// parents. A moved file's recorded hash is dropped (moving it changes
    /// its change time): it is hashed when it is next read.
    pub(super) fn rename(&self, from: &str, to: &str, overwrite: bool) -> Result<(), StoreError> {
        validate_name(from)?;
        validate_name(to)?;
        let (from_parent, to_parent) = (parent_of(from), parent_of(to));
        self.outside_reserved(from_parent)?;
        self.outside_reserved(to_parent)?;
        let flags = if overwrite {
            rustix::fs::RenameFlags::empty()
        } else {
            rustix::fs::RenameFlags::NOREPLACE
        };
        // The parents are opened beneath the root; the last components are
        // single names, which `renameat2` does not follow.
        let place = || -> Result<(), StoreError> {
            if let Some(parent) = to_parent {
                self.create_dirs(parent)?;
            }
            let source = self.open_parent(from_parent)?;
            let target = self.open_parent(to_parent)?;
            rustix::fs::renameat_with(&source, base_of(from), &target, base_of(to), flags)
                .map_err(io::Error::from)?;
            Ok(())
        };
        match place() {
            // A delete may have removed the new parent, left empty, in
            // between.
            Err(StoreError::NotFound) if to_parent.is_some() => place()?,
            result => result?,
        }
        let _ = self.digests.forget(from);
        let _ = self.digests.forget(to);
        self.sync_existing(to_parent)?;
        let from_parent = self.remove_empty_parents(from);
        self.sync_existing(from_parent)?;
        Ok(())
    }

    /// The directory `dir` (the root for `None`), opened beneath the root.
    fn open_parent(&self, dir: Option<&str>) -> io::Result<Dir> {
        match dir {
            Some(dir) => self.root.open_dir(dir),
            None => self.root.try_clone(),
        }
    }

    /// Removes the parents of `name` that are empty, innermost first;
    /// returns the first one that stays (`None` for the root).
    fn remove_empty_parents<'a>(&self, name: &'a str) -> Option<&'a str> {
        let mut parent = parent_of(name);
        while let Some(dir) = parent {
            if self.root.remove_dir(dir).is_err() {
                break;
            }
            parent = parent_of(dir);
        }
        parent
    }

    /// Refuses a path that resolves into the reserved area through a
    /// symlink someone placed in the root (names themselves cannot say
    /// `.framekit`). The longest part of the path that exists is checked,
    /// so that directories created under it later stay out of the area.
    fn outside_reserved(&self, path: Option<&str>) -> Result<(), StoreError> {
        let mut path = path;
        while let Some(existing) = path {
            match self.root.canonicalize(existing) {
                Ok(resolved) => {
                    return match resolved.components().next() {
                        Some(std::path::Component::Normal(first)) if first == RESERVED_NAME => {
                            Err(StoreError::Denied)
                        }
                        _ => Ok(()),
                    };
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => path = parent_of(existing),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Syncs the directory `dir` (the root for `None`), or, if a
    /// concurrent delete removed it, the nearest parent that is still there
    /// (which recorded the removal).
    fn sync_existing(&self, mut dir: Option<&str>) -> Result<(), StoreError> {
        loop {
            match self.sync_dir(dir) {
                Err(StoreError::NotFound) if dir.is_some() => dir = dir.and_then(parent_of),
                result => return result,
            }
        }
    }
}

/// The directories to sync once a file is placed in `parent` (`None` for
/// the root), given the directories made for it (`made`, outermost
/// first): those that received one of them, then `parent`.
fn dirs_to_sync(parent: Option<&str>, made: &[&str]) -> Vec<DirName> {
    let mut dirs: Vec<DirName> = Vec::new();
    let received = made.iter().map(|dir| parent_of(dir)).chain([parent]);
    for dir in received {
        let dir = dir.map(str::to_owned);
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    dirs
}

fn parent_of(name: &str) -> Option<&str> {
    name.rsplit_once('/').map(|(parent, _)| parent)
}

/// The last component of a name.
fn base_of(name: &str) -> &str {
    name.rsplit_once('/').map_or(name, |(_, base)| base)
}

pub(super) fn mtime_ns(secs: i64, nsec: i64) -> u64 {
    let ns = i128::from(secs) * 1_000_000_000 + i128::from(nsec);
    u64::try_from(ns.max(0)).unwrap_or(u64::MAX)
}

fn std_mtime_ns(meta: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    mtime_ns(meta.mtime(), meta.mtime_nsec())
}

/// A file being uploaded, in the staging area (or the partial area, for
/// an upload that may be resumed).
///
/// Dropped without being published, an ordinary upload removes its
/// temporary file, and a resumable one is kept for resuming with what it
/// received, unless [discarded](crate::storage::Upload::discard). Keeping
/// syncs the file: drop it where blocking is fine.
#[derive(Debug)]
pub struct LocalUpload {
    file: Option<File>,
    temp: String,
    dir: Dir,
    published: bool,
    /// Bytes of the file already there when the upload started.
    offset: u64,
    /// Bytes written since.
    written: u64,
    /// A body received whole, written when the upload is published.
    held: Vec<u8>,
    resume: Option<Resume>,
    /// The room on the disk it was promised and has not written yet.
    reservation: Option<Reservation>,
}

/// What a resumable upload needs to be kept.
#[derive(Debug)]
struct Resume {
    partials: Arc<Partials>,
    key: Hash,
    name: String,
    size: u64,
    created_ms: u64,
    /// Why it is not to be kept, if it is not.
    discard: Option<&'static str>,
}

impl LocalUpload {
    /// Bytes of the file the upload already holds: the body starts there.
    pub(super) fn offset(&self) -> u64 {
        self.offset
    }

    /// Appends body bytes to the file. Beyond the room the upload was
    /// admitted for (an upload of unknown size), asks for more first:
    /// [`io::ErrorKind::StorageFull`] if the disk does not have it.
    pub(super) fn write(&mut self, data: &[u8]) -> io::Result<()> {
        let len = data.len() as u64;
        if let Some(reservation) = self.reservation.as_mut()
            && reservation.left() < len
        {
            let more = (len - reservation.left()).max(GROW_STEP);
            reservation.grow(more, None).map_err(|e| match e {
                StoreError::NoSpace => io::Error::from(io::ErrorKind::StorageFull),
                other => io::Error::other(other),
            })?;
        }
        if let Some(file) = self.file.as_mut() {
            file.write_all(data)?;
        }
        self.written += data.len() as u64;
        if let Some(reservation) = self.reservation.as_mut() {
            reservation.wrote(data.len() as u64);
        }
        Ok(())
    }

    /// Flushes the file to disk.
    pub(super) fn sync(&self) -> io::Result<()> {
        match &self.file {
            Some(file) => file.sync_all(),
            None => Ok(()),
        }
    }

    /// Writes and syncs `data`, if there is any.
    pub(super) fn write_whole(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.write(data)?;
        self.sync()
    }

    /// Keeps `body` to be written when the upload is published.
    pub(super) fn hold(&mut self, body: Vec<u8>) {
        self.held = body;
    }

    /// Feeds the first [`LocalUpload::offset`] bytes of the file to
    /// `hasher`, unless `stop` is raised meanwhile.
    pub(super) fn hash_held(
        &self,
        hasher: &mut blake3::Hasher,
        stop: &AtomicBool,
    ) -> io::Result<()> {
        // Outside the body buffers' budget, so kept small: resumed uploads
        // are few.
        const CHUNK: usize = 256 * 1024;
        let (Some(file), len @ 1..) = (&self.file, self.offset) else {
            return Ok(());
        };
        let mut buf = vec![0u8; usize::try_from(len).map_or(CHUNK, |n| n.clamp(1, CHUNK))];
        let mut offset = 0u64;
        while offset < len && !stop.load(Ordering::Relaxed) {
            let want = usize::try_from(len - offset).map_or(buf.len(), |n| n.min(buf.len()));
            file.read_exact_at(&mut buf[..want], offset)?;
            hasher.update(&buf[..want]);
            offset += want as u64;
        }
        Ok(())
    }

    /// Drops the upload without keeping anything, resumable or not: for
    /// an upload that failed and must start over.
    pub(super) fn discard(self) {
        self.discard_because("the upload failed");
    }

    /// Drops the upload without keeping anything, for the reason given.
    pub(super) fn discard_because(mut self, why: &'static str) {
        if let Some(resume) = self.resume.as_mut() {
            resume.discard = Some(why);
        }
    }

    /// Its connection broke: a put with its key waits for it to be kept.
    pub(super) fn ending(&self) {
        if let Some(resume) = &self.resume {
            resume.partials.ending(&resume.key);
        }
    }

    /// What to tell when the connection of a resumable upload breaks (see
    /// [`LocalUpload::ending`]), for a sink that has taken the upload.
    pub(super) fn ending_handle(&self) -> Option<(Arc<Partials>, Hash)> {
        self.resume
            .as_ref()
            .map(|resume| (Arc::clone(&resume.partials), resume.key))
    }
}

#[cfg(test)]
impl Store {
    /// An upload whose data goes to `file` instead of a staged file.
    pub(super) fn upload_into(&self, file: File) -> LocalUpload {
        LocalUpload {
            file: Some(file),
            temp: "never-created".to_owned(),
            dir: self.staging.try_clone().unwrap(),
            published: false,
            offset: 0,
            written: 0,
            held: Vec::new(),
            resume: None,
            reservation: None,
        }
    }
}

impl Drop for LocalUpload {
    fn drop(&mut self) {
        if self.published {
            return;
        }
        match &self.resume {
            Some(resume) if resume.discard.is_none() => {
                let record = Record {
                    name: resume.name.clone(),
                    size: resume.size,
                    received: self.offset + self.written,
                    created_ms: resume.created_ms,
                    updated_ms: 0,
                };
                resume
                    .partials
                    .keep(&resume.key, self.file.as_ref(), record);
            }
            Some(resume) => {
                drop(self.file.take());
                let why = resume.discard.unwrap_or("the upload failed");
                resume.partials.discard(&resume.key, why);
            }
            None => {
                drop(self.file.take());
                // Best effort: a leftover is also removed at the next start.
                let _ = self.dir.remove_file(&self.temp);
            }
        }
    }
}

#[cfg(test)]
mod tests;
