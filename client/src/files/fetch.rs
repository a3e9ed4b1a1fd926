//! Getting many small files over one session: [`get_small_files`] keeps
//! gets in flight while it saves what arrived, and saves the files in
//! batches (see `commit.rs`).

use super::Options;
use super::Staging;
use super::commit::{self, Pending, Saving};
use super::download::Saved;
use crate::error::ClientError;
use crate::session::{Download, Session};
use framekit_transfer::Hash;
use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Files up to this size are read whole and saved in batches.
pub const SMALL_GET: u64 = 64 * 1024;

/// At most this many gets are in flight; more are sent when half of them
/// are answered.
const GET_WINDOW: usize = 64;

/// A batch is saved once it holds this many files...
const BATCH_FILES: usize = 256;

/// ...or this many bytes.
const BATCH_BYTES: u64 = 8 << 20;

/// One file of [`get_small_files`].
#[derive(Debug, Clone, Copy)]
pub struct SmallGet<'a> {
    /// Its remote name.
    pub name: &'a str,
    /// Where to save it; its directory exists.
    pub dest: &'a Path,
}

/// What became of one item, not reported yet.
enum Slot {
    /// Requested, not answered yet.
    Requested,
    /// Received and verified, held in memory: saved with the next batch.
    Unsaved(Pending, Saved),
    /// Being saved with its batch.
    Saving(Saved),
    /// Done: nothing to fetch (`None`), saved, or failed.
    Done(Option<Result<Saved, ClientError>>),
}

/// Gets the files `items` names over one session (`None` is an item with
/// nothing to fetch, reported in its place), up to 64 gets in flight:
/// the server sends the next files while the client saves the ones
/// before, and many small files go at the speed of the disks rather than
/// of round trips.
///
/// A file is held in memory once verified, and saved with the others of
/// its batch (at most 256 files or 8 MiB): written to unnamed files in
/// their destinations' directories and synced, several at once, then
/// linked under their names (never over an existing file), then their
/// directories synced (see `commit.rs`). A batch is saved on a thread of
/// its own while the next one arrives; one batch at a time. With
/// `options.force`, a file whose destination exists, and a file that has
/// a partial download (`DEST.part`), are saved one at a time through a
/// [`Staging`], as [`get_file`](super::get_file) saves them; so is every
/// file where unnamed files cannot be made. A file that turned out larger
/// than [`SMALL_GET`] is streamed to its partial file, as
/// [`get_file`](super::get_file) does.
///
/// `done(i, result)` is called for the items in order, a file's only once
/// it is saved (durable) or failed; `None` for an item with nothing to
/// fetch. It stops after the first failure that leaves the session
/// unusable: the files received before it are saved and reported, that
/// failure is reported as the failure of the oldest file not answered,
/// and it returns how many items it reported. The others were not
/// fetched, and can be tried again on a new session. That is all of them
/// when it returns `items.len()`, and at least one if there was any.
pub fn get_small_files<S: Read + Write>(
    session: &mut Session<S>,
    items: &[Option<SmallGet<'_>>],
    options: Options,
    done: &mut dyn FnMut(usize, Option<Result<Saved, ClientError>>),
) -> usize {
    let mut run = Run {
        slots: VecDeque::new(),
        first: 0,
        unsaved: 0,
        unsaved_bytes: 0,
        saving: None,
    };
    let mut unnamed = HashMap::new();
    let mut next = 0;
    loop {
        // Top up the window once half of it is answered.
        if session.gets_unanswered() <= GET_WINDOW / 2 && next < items.len() {
            let room = GET_WINDOW - session.gets_unanswered();
            let mut names = Vec::new();
            while next < items.len() && names.len() < room {
                let slot = match items.get(next).copied().flatten() {
                    None => Slot::Done(None),
                    Some(file) => match ready_to_save(file.dest, options) {
                        Ok(()) => {
                            names.push(file.name);
                            Slot::Requested
                        }
                        Err(e) => Slot::Done(Some(Err(e))),
                    },
                };
                run.slots.push_back(slot);
                next += 1;
            }
            if let Err(e) = session.send_gets(&names) {
                return run.broken(e, done);
            }
        }
        let Some(i) = run.oldest_requested() else {
            // Everything sent was answered: report what can be, and go on
            // if there is more to send.
            run.save_batch();
            if next < items.len() {
                run.report(done);
                continue;
            }
            run.saved();
            run.report(done);
            return run.first;
        };
        let Some(file) = items.get(i).copied().flatten() else {
            return run.broken(
                ClientError::Misuse("a get was sent for an item without a file"),
                done,
            );
        };
        let outcome = receive(session, file, options, &mut unnamed);
        if session.is_broken() {
            let error = match outcome {
                Err(e) => e,
                Ok(_) => ClientError::Unusable,
            };
            return run.broken(error, done);
        }
        run.set(i, outcome);
        if run.unsaved >= BATCH_FILES || run.unsaved_bytes >= BATCH_BYTES {
            run.save_batch();
        }
        run.report(done);
    }
}

/// The items of [`get_small_files`] not reported yet, from `first` on.
struct Run {
    slots: VecDeque<Slot>,
    /// The index of the first slot: how many items were reported.
    first: usize,
    /// Files received and not saved yet, and their bytes.
    unsaved: usize,
    unsaved_bytes: u64,
    /// The batch being saved, and the index of each of its items.
    saving: Option<(Saving, Vec<usize>)>,
}

impl Run {
    /// The index of the oldest item requested and not answered.
    fn oldest_requested(&self) -> Option<usize> {
        self.slots
            .iter()
            .position(|slot| matches!(slot, Slot::Requested))
            .map(|k| self.first + k)
    }

    /// Records what became of item `i`.
    fn set(&mut self, i: usize, outcome: Result<Received, ClientError>) {
        let slot = match outcome {
            Ok(Received::Unsaved(unnamed, saved)) => {
                self.unsaved += 1;
                self.unsaved_bytes += saved.size;
                Slot::Unsaved(unnamed, saved)
            }
            Ok(Received::Saved(saved)) => Slot::Done(Some(Ok(saved))),
            Err(e) => Slot::Done(Some(Err(e))),
        };
        if let Some(place) = self.slots.get_mut(i - self.first) {
            *place = slot;
        }
    }

    /// Starts saving every file received and not saved yet, as one batch,
    /// once the batch before it is saved.
    fn save_batch(&mut self) {
        if self.unsaved == 0 {
            return;
        }
        self.saved();
        let mut items = Vec::new();
        let mut files = Vec::new();
        for (k, slot) in self.slots.iter_mut().enumerate() {
            *slot = match std::mem::replace(slot, Slot::Done(None)) {
                Slot::Unsaved(file, saved) => {
                    items.push(self.first + k);
                    files.push(file);
                    Slot::Saving(saved)
                }
                other => other,
            };
        }
        self.saving = Some((Saving::start(files), items));
        self.unsaved = 0;
        self.unsaved_bytes = 0;
    }

    /// Waits until the batch being saved, if any, is saved, and records
    /// what became of its files.
    fn saved(&mut self) {
        let Some((saving, items)) = self.saving.take() else {
            return;
        };
        for (i, result) in items.into_iter().zip(saving.wait()) {
            let Some(slot) = i
                .checked_sub(self.first)
                .and_then(|k| self.slots.get_mut(k))
            else {
                continue;
            };
            *slot = match std::mem::replace(slot, Slot::Done(None)) {
                Slot::Saving(saved) => {
                    Slot::Done(Some(result.map(|stamp| Saved { stamp, ..saved })))
                }
                other => other,
            };
        }
    }

    /// Reports the items done at the front, in order.
    fn report(&mut self, done: &mut dyn FnMut(usize, Option<Result<Saved, ClientError>>)) {
        while let Some(Slot::Done(_)) = self.slots.front() {
            if let Some(Slot::Done(outcome)) = self.slots.pop_front() {
                done(self.first, outcome);
                self.first += 1;
            }
        }
    }

    /// After a failure that broke the session: saves and reports what was
    /// received, then reports `error` as the failure of the oldest item
    /// not answered. Returns how many items were reported.
    fn broken(
        mut self,
        error: ClientError,
        done: &mut dyn FnMut(usize, Option<Result<Saved, ClientError>>),
    ) -> usize {
        self.save_batch();
        self.saved();
        self.report(done);
        if let Some(Slot::Requested) = self.slots.front() {
            done(self.first, Some(Err(error)));
            return self.first + 1;
        }
        self.first
    }
}

/// What came of one answer.
enum Received {
    /// Verified, to be saved with its batch.
    Unsaved(Pending, Saved),
    /// Verified and saved (through a [`Staging`]).
    Saved(Saved),
}

/// Why a file cannot be saved at `dest`, if it cannot: something is there
/// and `force` was not given. Checked before the file is asked for, so
/// that nothing is fetched that could not be saved.
fn ready_to_save(dest: &Path, options: Options) -> Result<(), ClientError> {
    match std::fs::symlink_metadata(dest) {
        Ok(_) if !options.force => Err(ClientError::DestinationExists {
            path: dest.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// Reads the answer to the get of `file` and saves it, or verifies it and
/// holds it to be saved with its batch.
///
/// `unnamed` says, by directory, whether unnamed files can be made there
/// (asked once a directory).
fn receive<S: Read + Write>(
    session: &mut Session<S>,
    file: SmallGet<'_>,
    options: Options,
    unnamed: &mut HashMap<PathBuf, bool>,
) -> Result<Received, ClientError> {
    let mut download = session.get_answer()?;
    let (size, version) = (download.size(), download.version());
    if size > SMALL_GET {
        return receive_large(download, file, options);
    }
    let len = usize::try_from(size).map_err(|_| ClientError::Misuse("a small file's size"))?;
    let mut body = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        filled += download.read(body.get_mut(filled..).unwrap_or_default())?;
    }
    let hash = download.finish()?;
    let saved = Saved {
        path: file.dest.to_owned(),
        size,
        hash,
        received: size,
        stamp: None,
    };
    // A file to replace, or one with a partial download, is saved alone.
    let in_the_way = std::fs::symlink_metadata(file.dest).is_ok()
        || std::fs::symlink_metadata(part_path(file.dest)).is_ok();
    let dir = match file.dest.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let supported = *unnamed
        .entry(dir.to_owned())
        .or_insert_with(|| commit::unnamed_supported(dir));
    if !in_the_way && supported {
        let pending = Pending {
            dest: file.dest.to_owned(),
            body,
        };
        return Ok(Received::Unsaved(pending, saved));
    }
    let mut staging = Staging::open(file.dest, file.name, options)?;
    staging.restart(file.name, version)?;
    staging.write_body(&body)?;
    let stamp = staging.publish()?;
    Ok(Received::Saved(Saved { stamp, ..saved }))
}

/// Saves a file that grew past [`SMALL_GET`] since it was listed: its
/// body is streamed to its partial file, as [`get_file`](super::get_file) does, or read
/// and dropped if that file cannot be opened, so that the session stays in
/// step.
fn receive_large<S: Read + Write>(
    mut download: Download<'_, S>,
    file: SmallGet<'_>,
    options: Options,
) -> Result<Received, ClientError> {
    let staging = match Staging::open(file.dest, file.name, options) {
        Ok(staging) => staging,
        Err(e) => {
            let mut sink = vec![0u8; 64 * 1024];
            while download.read(&mut sink)? > 0 {}
            download.finish()?;
            return Err(e);
        }
    };
    let saved = get_file_answered(download, file.name, staging)?;
    Ok(Received::Saved(saved))
}

/// [`get_file`](super::get_file) of a download already started from byte 0.
fn get_file_answered<S: Read + Write>(
    mut download: Download<'_, S>,
    name: &str,
    mut staging: Staging,
) -> Result<Saved, ClientError> {
    let size = download.size();
    staging.restart(name, download.version())?;
    let hash: Hash = staging.receive(&mut download, &mut |_| {})?;
    let hash = match download.finish_with_hash(hash) {
        Ok(hash) => hash,
        Err(e) => {
            if matches!(e, ClientError::Integrity { .. }) {
                staging.discard();
            }
            return Err(e);
        }
    };
    let path = staging.dest().to_owned();
    let stamp = staging.publish()?;
    Ok(Saved {
        path,
        size,
        hash,
        received: size,
        stamp,
    })
}

/// `DEST.part`: where an interrupted download of `dest` was left.
fn part_path(dest: &Path) -> PathBuf {
    super::staging::part_paths(dest).0
}
