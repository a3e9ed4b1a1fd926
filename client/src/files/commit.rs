//! Saving many small downloads durably at the cost of a few journal
//! commits instead of two per file.
//!
//! A batch of downloads received whole is saved in three steps, each
//! finished for every file before the next starts:
//!
//! 1. each file is written to an unnamed file in its destination's
//!    directory (`O_TMPFILE`: nothing of it is visible, and nothing is
//!    left if the client dies) and synced, several files at once on
//!    several threads: the file system commits their `fsync`s together,
//!    and creating files, which costs the kernel more CPU than writing
//!    4 KiB, runs on both cores;
//! 2. each file is linked under its name, which fails if the name exists
//!    (the check and the publish are one step);
//! 3. each directory that received a file is synced, once.
//!
//! A file is reported saved only after the third step: what the client
//! says it saved survives a crash or a power loss, and a name never shows
//! a partial or unverified file.

use super::hashes::Stamp;
use crate::error::ClientError;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// At most this many threads sync the files of a batch at once.
const SYNC_THREADS: usize = 8;

/// A step of saving a batch, as the tests that check their order see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// The content of the file to be saved at this path was synced.
    SyncFile(PathBuf),
    /// The file was linked at this path.
    Link(PathBuf),
    /// This directory was synced.
    SyncDir(PathBuf),
}

/// A download received whole and verified, to be saved at `dest`.
#[derive(Debug)]
pub(crate) struct Pending {
    /// Where to save it; its directory exists.
    pub(crate) dest: PathBuf,
    /// Its content.
    pub(crate) body: Vec<u8>,
}

/// Whether unnamed files can be made in `dir`: if not, the caller saves
/// its files another way. An error other than the file system's refusal
/// is left for the save to report.
pub(crate) fn unnamed_supported(dir: &Path) -> bool {
    !matches!(
        open_unnamed(dir),
        Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::ISDIR | rustix::io::Errno::INVAL)
    )
}

/// A new unnamed file in `dir`, with the usual permissions (0666 less the
/// umask).
fn open_unnamed(dir: &Path) -> rustix::io::Result<File> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC;
    rustix::fs::open(dir, flags, Mode::from_raw_mode(0o666)).map(File::from)
}

/// A download written to an unnamed file next to its destination, and
/// synced.
#[derive(Debug)]
struct Unnamed {
    file: File,
    dest: PathBuf,
}

/// Writes `pending` to a new unnamed file in its destination's directory
/// and syncs it.
fn write_unnamed(
    pending: &Pending,
    record: &(dyn Fn(Step) + Sync),
) -> Result<Unnamed, ClientError> {
    let dir = parent(&pending.dest);
    let mut file =
        open_unnamed(dir).map_err(|e| local("cannot create a file in", dir, e.into()))?;
    file.write_all(&pending.body)
        .and_then(|()| file.sync_all())
        .map_err(|e| local("cannot write", &pending.dest, e))?;
    record(Step::SyncFile(pending.dest.clone()));
    Ok(Unnamed {
        file,
        dest: pending.dest.clone(),
    })
}

/// Saves a batch of downloads under their names (see the module's
/// documentation), calling `record` with each step as it is taken. One
/// result per file, in order: the saved file's stamp, if it can be read,
/// or why it was not saved. A file whose directory could not be synced is
/// visible under its name, but reported failed.
pub(crate) fn commit(files: &[Pending], record: &(dyn Fn(Step) + Sync)) -> Committed {
    let written = write_together(files, record);
    let linked: Vec<Result<Unnamed, ClientError>> = written
        .into_iter()
        .map(|written| {
            let unnamed = written?;
            link(&unnamed)?;
            record(Step::Link(unnamed.dest.clone()));
            Ok(unnamed)
        })
        .collect();
    // Each directory once, with why it could not be synced.
    let mut dirs: Vec<(PathBuf, Option<io::Error>)> = Vec::new();
    for unnamed in linked.iter().flatten() {
        let dir = parent(&unnamed.dest);
        if !dirs.iter().any(|(synced, _)| synced == dir) {
            let failure = File::open(dir).and_then(|d| d.sync_all()).err();
            if failure.is_none() {
                record(Step::SyncDir(dir.to_owned()));
            }
            dirs.push((dir.to_owned(), failure));
        }
    }
    linked
        .into_iter()
        .map(|linked| {
            let unnamed = linked?;
            let dir = parent(&unnamed.dest);
            match dirs.iter().find(|(synced, _)| synced == dir) {
                Some((_, Some(e))) => Err(local(
                    "cannot sync directory",
                    dir,
                    io::Error::new(e.kind(), e.to_string()),
                )),
                // Linking changed the file's change time: its stamp now.
                _ => Ok(unnamed.file.metadata().ok().map(|meta| Stamp::of(&meta))),
            }
        })
        .collect()
}

/// The results of [`commit`]: one per file, in order.
pub(crate) type Committed = Vec<Result<Option<Stamp>, ClientError>>;

/// A batch being saved by [`commit`] on a thread of its own, while its
/// caller receives the next one: the file system's journal commits for
/// one batch overlap the transfer of the next.
#[derive(Debug)]
pub(crate) enum Saving {
    /// Being saved by this thread, into these destinations.
    Thread(std::thread::JoinHandle<Committed>, Vec<PathBuf>),
    /// No thread could be started: saved at once, with these results.
    Saved(Committed),
}

impl Saving {
    /// Starts saving `files`.
    pub(crate) fn start(files: Vec<Pending>) -> Saving {
        let dests = files.iter().map(|f| f.dest.clone()).collect();
        let files = std::sync::Arc::new(files);
        let theirs = std::sync::Arc::clone(&files);
        let spawned = std::thread::Builder::new()
            .name("save batch".into())
            .spawn(move || commit(&theirs, &|_| {}));
        match spawned {
            Ok(thread) => Saving::Thread(thread, dests),
            Err(_) => Saving::Saved(commit(&files, &|_| {})),
        }
    }

    /// Waits until the batch is saved: one result per file, in order, as
    /// [`commit`] gives them. A thread that panicked saved nothing that
    /// can be vouched for: each of its files is reported failed.
    pub(crate) fn wait(self) -> Committed {
        match self {
            Saving::Saved(done) => done,
            Saving::Thread(thread, dests) => thread.join().unwrap_or_else(|_| {
                dests
                    .iter()
                    .map(|dest| {
                        Err(local(
                            "cannot save",
                            dest,
                            io::Error::other("saving the batch failed"),
                        ))
                    })
                    .collect()
            }),
        }
    }
}

/// Writes and syncs the files, from up to [`SYNC_THREADS`] threads at
/// once, so that the file system commits them in a few journal
/// transactions instead of one each. (Measured on ext4 here: 32 files of
/// 4 KiB synced from 8 threads went 2.2x as fast as one after the other.
/// One `syncfs` was as fast on an idle disk, but it flushes everything
/// written to the file system, and with another process writing a big
/// file meanwhile it went 3.7x slower than the threads: see
/// docs/BENCHMARKS.md.)
fn write_together(
    files: &[Pending],
    record: &(dyn Fn(Step) + Sync),
) -> Vec<Result<Unnamed, ClientError>> {
    let threads = files.len().min(SYNC_THREADS);
    if threads <= 1 {
        return files.iter().map(|p| write_unnamed(p, record)).collect();
    }
    let mut results: Vec<Option<Result<Unnamed, ClientError>>> =
        files.iter().map(|_| None).collect();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    files
                        .iter()
                        .enumerate()
                        .skip(t)
                        .step_by(threads)
                        .map(|(i, pending)| (i, write_unnamed(pending, record)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for worker in workers {
            // A thread that panicked leaves its files unwritten: they are
            // reported failed below, never linked.
            if let Ok(written) = worker.join() {
                for (i, result) in written {
                    if let Some(slot) = results.get_mut(i) {
                        *slot = Some(result);
                    }
                }
            }
        }
    });
    results
        .into_iter()
        .zip(files)
        .map(|(result, pending)| {
            result.unwrap_or_else(|| {
                Err(local(
                    "cannot write",
                    &pending.dest,
                    io::Error::other("the file was not written"),
                ))
            })
        })
        .collect()
}

/// Links the unnamed file at its destination, unless something is there.
fn link(unnamed: &Unnamed) -> Result<(), ClientError> {
    use rustix::fs::{AtFlags, CWD, linkat};
    // Through /proc, which needs no privilege; without /proc, by the
    // descriptor itself, which needs CAP_DAC_READ_SEARCH.
    let proc_path = format!("/proc/self/fd/{}", unnamed.file.as_raw_fd());
    let linked = match linkat(CWD, &proc_path, CWD, &unnamed.dest, AtFlags::SYMLINK_FOLLOW) {
        Err(rustix::io::Errno::NOENT) if !Path::new("/proc/self/fd").is_dir() => {
            linkat(&unnamed.file, "", CWD, &unnamed.dest, AtFlags::EMPTY_PATH)
        }
        other => other,
    };
    match linked {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::EXIST) => Err(ClientError::DestinationExists {
            path: unnamed.dest.clone(),
        }),
        Err(e) => Err(local("cannot save", &unnamed.dest, e.into())),
    }
}

/// The directory of `path` (`.` for a bare name).
fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

fn local(action: &'static str, path: &Path, source: io::Error) -> ClientError {
    ClientError::Local {
        action,
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn pending(dest: &Path, body: &[u8]) -> Pending {
        Pending {
            dest: dest.to_owned(),
            body: body.to_vec(),
        }
    }

    #[test]
    fn a_batch_is_synced_whole_before_any_file_is_linked_and_its_directories_after() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = Vec::new();
        for i in 0..20 {
            let sub = dir.path().join(format!("d{}", i % 3));
            std::fs::create_dir_all(&sub).unwrap();
            files.push(pending(
                &sub.join(format!("f{i}")),
                format!("file {i}").as_bytes(),
            ));
        }
        let steps = Mutex::new(Vec::new());
        let results = commit(&files, &|step| steps.lock().unwrap().push(step));
        assert!(results.iter().all(Result::is_ok));
        let steps = steps.into_inner().unwrap();
        let at = |step: &Step| steps.iter().position(|s| s == step).unwrap();
        let first_link = steps
            .iter()
            .position(|s| matches!(s, Step::Link(_)))
            .unwrap();
        for (i, file) in files.iter().enumerate() {
            let dest = &file.dest;
            assert!(at(&Step::SyncFile(dest.clone())) < first_link);
            let linked = at(&Step::Link(dest.clone()));
            assert!(linked < at(&Step::SyncDir(parent(dest).to_owned())));
            assert_eq!(std::fs::read(dest).unwrap(), format!("file {i}").as_bytes());
        }
        let dirs = steps
            .iter()
            .filter(|s| matches!(s, Step::SyncDir(_)))
            .count();
        assert_eq!(dirs, 3, "{steps:?}");
        assert_eq!(steps.len(), 20 + 20 + 3);
        // Nothing but the files.
        for i in 0..3 {
            let sub = dir.path().join(format!("d{i}"));
            assert_eq!(
                std::fs::read_dir(sub).unwrap().count(),
                7 - usize::from(i == 2)
            );
        }
    }

    #[test]
    fn a_name_taken_meanwhile_is_left_alone_and_the_others_are_saved() {
        let dir = tempfile::tempdir().unwrap();
        let taken = dir.path().join("taken");
        let free = dir.path().join("free");
        std::fs::write(&taken, b"someone else's").unwrap();
        let results = commit(&[pending(&taken, b"new"), pending(&free, b"free")], &|_| {});
        assert!(matches!(
            &results[0],
            Err(ClientError::DestinationExists { path }) if *path == taken
        ));
        assert!(matches!(results[1], Ok(Some(_))));
        assert_eq!(std::fs::read(&taken).unwrap(), b"someone else's");
        assert_eq!(std::fs::read(&free).unwrap(), b"free");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn a_batch_saved_on_a_thread_of_its_own_gives_each_file_its_result_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let taken = dir.path().join("taken");
        std::fs::write(&taken, b"someone else's").unwrap();
        let mut files: Vec<Pending> = (0..40)
            .map(|i| pending(&dir.path().join(format!("f{i}")), format!("{i}").as_bytes()))
            .collect();
        files.insert(7, pending(&taken, b"new"));
        let results = Saving::start(files).wait();
        assert_eq!(results.len(), 41);
        for (k, result) in results.iter().enumerate() {
            if k == 7 {
                assert!(matches!(result, Err(ClientError::DestinationExists { .. })));
            } else {
                assert!(matches!(result, Ok(Some(_))), "{k}: {result:?}");
            }
        }
        for i in 0..40 {
            let saved = std::fs::read(dir.path().join(format!("f{i}"))).unwrap();
            assert_eq!(saved, format!("{i}").as_bytes());
        }
        assert_eq!(std::fs::read(&taken).unwrap(), b"someone else's");
    }

    #[test]
    fn files_that_cannot_be_written_leave_nothing_and_fail_alone() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no such directory/f");
        let fine = dir.path().join("fine");
        let results = commit(
            &[pending(&missing, b"body"), pending(&fine, b"ok")],
            &|_| {},
        );
        assert!(matches!(&results[0], Err(ClientError::Local { .. })));
        assert!(results[1].is_ok());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(unnamed_supported(dir.path()));
    }
}
