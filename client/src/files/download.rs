//! Getting remote files: [`get_file`] saves one through a [`Staging`];
//! the rest says where downloads of files and directories go.
//!
//! The names of a directory download come from the server: each is checked
//! against the protocol's rules, must lie below the directory asked for,
//! and its local path is built component by component under the
//! destination, creating real directories and never going through a
//! symbolic link, so that no name can lead a write outside the
//! destination.

use super::Staging;
use super::hashes::Stamp;
use crate::error::ClientError;
use crate::escape::Escaped;
use crate::progress::Meter;
use crate::session::Session;
use framekit_transfer::{Hash, validate_name};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

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
    /// The saved file's stamp once in place: its hash may be recorded
    /// under it.
    pub stamp: Option<Stamp>,
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
        let resumed = staging.resume();
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
        let hash = staging.receive(&mut download, &mut |n| meter.inc(n))?;
        match download.finish_with_hash(hash) {
            Ok(hash) => {
                let path = staging.dest().to_owned();
                let stamp = staging.publish()?;
                return Ok(Saved {
                    path,
                    size,
                    hash,
                    received: size - offset,
                    stamp,
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

/// Where a directory `dir` is saved: `output` itself (or in it, under the
/// directory's base name, if it is an existing directory), or
/// `./<base name>`.
pub(crate) fn directory_destination(dir: &str, output: Option<&Path>) -> PathBuf {
    let base = dir.rsplit('/').next().unwrap_or(dir);
    match output {
        Some(output) if output.is_dir() => output.join(base),
        Some(output) => output.to_owned(),
        None => PathBuf::from(base),
    }
}

/// Checks a name the server listed below the directory `dir` (empty for
/// the root): it must be valid by the protocol's rules and lie strictly
/// below `dir`. Returns its components below `dir`.
pub(crate) fn components_below<'a>(name: &'a str, dir: &str) -> Result<Vec<&'a str>, ClientError> {
    validate_name(name).map_err(|source| ClientError::InvalidName {
        name: name.to_owned(),
        source,
    })?;
    let rest = if dir.is_empty() {
        Some(name)
    } else {
        name.strip_prefix(dir).and_then(|r| r.strip_prefix('/'))
    };
    match rest {
        // A valid name's components are never empty, `.` or `..`, and hold
        // no separator.
        Some(rest) if !rest.is_empty() => Ok(rest.split('/').collect()),
        _ => Err(ClientError::Outside {
            name: name.to_owned(),
            dir: dir.to_owned(),
        }),
    }
}

/// The local path of `components` under `base`, creating the directories
/// it goes through (all but the last component, or all of them if
/// `all`), each a real directory: a symbolic link or a file in the way is
/// an error, never followed.
pub(crate) fn prepare_path(
    base: &Path,
    components: &[&str],
    all: bool,
) -> Result<PathBuf, ClientError> {
    let dirs = if all {
        components.len()
    } else {
        components.len().saturating_sub(1)
    };
    let mut path = base.to_owned();
    for (i, component) in components.iter().enumerate() {
        path.push(component);
        if i >= dirs {
            break;
        }
        make_real_dir(&path)?;
    }
    Ok(path)
}

/// Creates `path` as a directory if it is not one; fails if something
/// else, a symbolic link included, is there. A directory created is made
/// durable (its parent is synced) before this returns, so that the files
/// saved in it later are.
pub(crate) fn make_real_dir(path: &Path) -> Result<(), ClientError> {
    let error = |source| ClientError::Local {
        action: "cannot create the directory",
        path: path.to_owned(),
        source,
    };
    match fs::create_dir(path) {
        Ok(()) => {
            let parent = match path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir,
                _ => Path::new("."),
            };
            fs::File::open(parent)
                .and_then(|dir| dir.sync_all())
                .map_err(error)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match fs::symlink_metadata(path) {
            Ok(meta) if meta.is_dir() => Ok(()),
            Ok(_) => Err(error(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "something that is not a directory is in the way",
            ))),
            Err(e) => Err(error(e)),
        },
        Err(e) => Err(error(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn names_from_the_server_must_be_valid_and_below_the_directory() {
        assert_eq!(components_below("d/a/b", "d").unwrap(), ["a", "b"]);
        assert_eq!(components_below("a/b", "").unwrap(), ["a", "b"]);
        for (name, dir) in [
            ("../x", "d"),
            ("d/../x", "d"),
            ("/etc/passwd", "d"),
            ("d", "d"),
            ("dx/y", "d"),
            ("other/y", "d"),
            ("d//y", "d"),
            ("d/y/", "d"),
            ("d/a\\..\\..\\x", "d"),
            ("d/\u{1b}[2J", "d"),
            ("", ""),
        ] {
            assert!(components_below(name, dir).is_err(), "{name:?} in {dir:?}");
        }
    }

    #[test]
    fn local_paths_never_go_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("out");
        fs::create_dir(&base).unwrap();
        let path = prepare_path(&base, &["a", "b", "c.txt"], false).unwrap();
        assert_eq!(path, base.join("a/b/c.txt"));
        assert!(base.join("a/b").is_dir());
        assert!(!path.exists());
        symlink(dir.path(), base.join("evil")).unwrap();
        assert!(prepare_path(&base, &["evil", "x"], false).is_err());
        assert!(prepare_path(&base, &["evil"], true).is_err());
        fs::write(base.join("file"), b"").unwrap();
        assert!(prepare_path(&base, &["file", "x"], false).is_err());
    }

    #[test]
    fn directories_are_saved_under_their_base_name_or_where_asked() {
        assert_eq!(directory_destination("a/b", None), PathBuf::from("b"));
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            directory_destination("a/b", Some(dir.path())),
            dir.path().join("b")
        );
        let new = dir.path().join("new");
        assert_eq!(directory_destination("a/b", Some(&new)), new);
    }
}
