//! Saving many small downloads durably at the cost of a few journal
//! commits instead of two per file.
//!
//! Each file is written to an unnamed file in its destination's directory
//! (`O_TMPFILE`): nothing of it is visible, and nothing is left if the
//! client dies. A batch is then saved in three steps, each finished for
//! every file before the next starts:
//!
//! 1. every file's content is synced, the `fsync`s issued at once from
//!    several threads so that the file system commits them together;
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

/// A downloaded file written to an unnamed file next to its destination,
/// not synced yet: nothing of it is visible until it is committed.
#[derive(Debug)]
pub(crate) struct Unnamed {
    file: File,
    dest: PathBuf,
}

impl Unnamed {
    /// Writes `body` to a new unnamed file in the directory of `dest`;
    /// `None` if the file system cannot make one (the caller then saves
    /// the file another way).
    pub(crate) fn write(dest: &Path, body: &[u8]) -> Result<Option<Unnamed>, ClientError> {
        use rustix::fs::{Mode, OFlags};
        let dir = parent(dest);
        let flags = OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC;
        // The saved file gets the usual permissions (0666 less the umask).
        let file = match rustix::fs::open(dir, flags, Mode::from_raw_mode(0o666)) {
            Ok(fd) => File::from(fd),
            Err(
                rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::ISDIR | rustix::io::Errno::INVAL,
            ) => return Ok(None),
            Err(e) => return Err(local("cannot create a file in", dir, e.into())),
        };
        let mut unnamed = Unnamed {
            file,
            dest: dest.to_owned(),
        };
        unnamed
            .file
            .write_all(body)
            .map_err(|e| local("cannot write", dest, e))?;
        Ok(Some(unnamed))
    }

    /// Where it is to be saved.
    #[cfg(test)]
    pub(crate) fn dest(&self) -> &Path {
        &self.dest
    }
}

/// Saves a batch of unnamed files under their names (see the module's
/// documentation), calling `record` with each step as it is taken. One
/// result per file, in order: the saved file's stamp, if it can be read,
/// or why it was not saved. A file whose directory could not be synced is
/// visible under its name, but reported failed.
pub(crate) fn commit(
    files: Vec<Unnamed>,
    record: &(dyn Fn(Step) + Sync),
) -> Vec<Result<Option<Stamp>, ClientError>> {
    let synced = sync_together(&files, record);
    let linked: Vec<Result<&Unnamed, ClientError>> = files
        .iter()
        .zip(synced)
        .map(|(unnamed, synced)| {
            synced.map_err(|e| local("cannot write", &unnamed.dest, e))?;
            link(unnamed)?;
            record(Step::Link(unnamed.dest.clone()));
            Ok(unnamed)
        })
        .collect();
    // Each directory once, with why it could not be synced.
    let mut dirs: Vec<(&Path, Option<io::Error>)> = Vec::new();
    for unnamed in linked.iter().flatten() {
        let dir = parent(&unnamed.dest);
        if !dirs.iter().any(|(synced, _)| *synced == dir) {
            let failure = File::open(dir).and_then(|d| d.sync_all()).err();
            if failure.is_none() {
                record(Step::SyncDir(dir.to_owned()));
            }
            dirs.push((dir, failure));
        }
    }
    linked
        .into_iter()
        .map(|linked| {
            let unnamed = linked?;
            let dir = parent(&unnamed.dest);
            match dirs.iter().find(|(synced, _)| *synced == dir) {
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

/// Syncs the files' contents, from up to [`SYNC_THREADS`] threads at
/// once, so that the file system commits them in a few journal
/// transactions instead of one each. (Measured on ext4 here: 32 files of
/// 4 KiB synced from 8 threads went 2.2x as fast as one after the other.
/// One `syncfs` was as fast on an idle disk, but it flushes everything
/// written to the file system, and with another process writing a big
/// file meanwhile it went 3.7x slower than the threads: see
/// docs/BENCHMARKS.md.)
fn sync_together(files: &[Unnamed], record: &(dyn Fn(Step) + Sync)) -> Vec<io::Result<()>> {
    let threads = files.len().min(SYNC_THREADS);
    if threads <= 1 {
        return files
            .iter()
            .map(|unnamed| sync_one(unnamed, record))
            .collect();
    }
    let mut results: Vec<Option<io::Result<()>>> = files.iter().map(|_| None).collect();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    files
                        .iter()
                        .enumerate()
                        .skip(t)
                        .step_by(threads)
                        .map(|(i, unnamed)| (i, sync_one(unnamed, record)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for worker in workers {
            // A thread that panicked leaves its files unsynced: they are
            // reported failed below, never linked.
            if let Ok(synced) = worker.join() {
                for (i, result) in synced {
                    if let Some(slot) = results.get_mut(i) {
                        *slot = Some(result);
                    }
                }
            }
        }
    });
    results
        .into_iter()
        .map(|result| result.unwrap_or_else(|| Err(io::Error::other("the file was not synced"))))
        .collect()
}

fn sync_one(unnamed: &Unnamed, record: &(dyn Fn(Step) + Sync)) -> io::Result<()> {
    unnamed.file.sync_all()?;
    record(Step::SyncFile(unnamed.dest.clone()));
    Ok(())
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

    #[test]
    fn a_batch_is_synced_whole_before_any_file_is_linked_and_its_directories_after() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = Vec::new();
        for i in 0..20 {
            let sub = dir.path().join(format!("d{}", i % 3));
            std::fs::create_dir_all(&sub).unwrap();
            let dest = sub.join(format!("f{i}"));
            files.push(
                Unnamed::write(&dest, format!("file {i}").as_bytes())
                    .unwrap()
                    .unwrap(),
            );
        }
        // Nothing is visible before the commit.
        for i in 0..3 {
            let sub = dir.path().join(format!("d{i}"));
            assert_eq!(std::fs::read_dir(sub).unwrap().count(), 0);
        }
        let dests: Vec<PathBuf> = files.iter().map(|f| f.dest().to_owned()).collect();
        let steps = Mutex::new(Vec::new());
        let results = commit(files, &|step| steps.lock().unwrap().push(step));
        assert!(results.iter().all(Result::is_ok));
        let steps = steps.into_inner().unwrap();
        let at = |step: &Step| steps.iter().position(|s| s == step).unwrap();
        let first_link = steps
            .iter()
            .position(|s| matches!(s, Step::Link(_)))
            .unwrap();
        for (i, dest) in dests.iter().enumerate() {
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
    }

    #[test]
    fn a_name_taken_meanwhile_is_left_alone_and_the_others_are_saved() {
        let dir = tempfile::tempdir().unwrap();
        let taken = dir.path().join("taken");
        let free = dir.path().join("free");
        let files = vec![
            Unnamed::write(&taken, b"new").unwrap().unwrap(),
            Unnamed::write(&free, b"free").unwrap().unwrap(),
        ];
        std::fs::write(&taken, b"someone else's").unwrap();
        let results = commit(files, &|_| {});
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
    fn files_never_committed_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let unnamed = Unnamed::write(&dir.path().join("f"), b"body")
            .unwrap()
            .unwrap();
        drop(unnamed);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
