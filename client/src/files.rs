//! Uploading a local file and saving a download, safely.
//!
//! An upload streams the file (with `sendfile` on plain TCP), hashes it on
//! another thread, and checks that it ends exactly where its size said it
//! would. A download goes to a
//! temporary file next to its destination and is renamed into place only
//! after its hash has been verified and its content flushed to disk: there
//! is never a partial or unverified file under the destination's name, and
//! the temporary file is removed on any failure.

use crate::error::ClientError;
use crate::session::{PutDone, Session};
use indicatif::ProgressBar;
use proto::transfer::Hash;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use tempfile::NamedTempFile;

/// A local file opened for upload.
#[derive(Debug)]
pub struct Source {
    file: File,
    path: PathBuf,
    size: u64,
}

impl Source {
    /// Opens a regular file for reading and takes its size.
    pub fn open(path: &Path) -> Result<Self, ClientError> {
        let local = |source| ClientError::Local {
            action: "cannot read",
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(local)?;
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
}

/// The remote name for uploading `path`: `name` if given, else the file's
/// base name. Either way it must be a valid protocol name.
pub fn remote_name(path: &Path, name: Option<&str>) -> Result<String, ClientError> {
    let name =
        match name {
            Some(name) => name,
            None => path.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
                ClientError::NoRemoteName {
                    path: path.to_owned(),
                }
            })?,
        };
    proto::transfer::validate_name(name).map_err(|source| ClientError::InvalidName {
        name: name.to_owned(),
        source,
    })?;
    Ok(name.to_owned())
}

/// Uploads `source` as `name`, showing progress on `progress`.
///
/// If the file turns out shorter or longer than its size when opened, the
/// upload fails with [`ClientError::FileChanged`] before the trailer is
/// sent, so the server publishes nothing; the session is then unusable.
pub fn put_file<S: Read + Write>(
    session: &mut Session<S>,
    source: Source,
    name: &str,
    overwrite: bool,
    progress: &ProgressBar,
) -> Result<PutDone, ClientError> {
    let mut upload = session.start_put(name, source.size, overwrite)?;
    progress.set_length(source.size);
    upload.send_file(&source.file, &source.path, &mut |n| progress.inc(n))?;
    upload.finish()
}

/// Where to save a download of `name`: `output`, or inside it if it is an
/// existing directory, or `./<base name of name>` without it.
///
/// Only the last component of `name` is used, and `name` is checked
/// against the protocol's rules first, so the result never escapes the
/// chosen directory.
pub fn destination(name: &str, output: Option<&Path>) -> Result<PathBuf, ClientError> {
    proto::transfer::validate_name(name).map_err(|source| ClientError::InvalidName {
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

/// A download's temporary file, next to its destination.
#[derive(Debug)]
pub struct Staging {
    temp: NamedTempFile,
    dest: PathBuf,
    force: bool,
}

impl Staging {
    /// Checks that `dest` may be written (it does not exist, or `force`) and
    /// creates the temporary file in its directory, named `.NAME.XXXXXX.part`.
    ///
    /// Call this before requesting the file, so that a download that could
    /// not be saved is not even started.
    pub fn new(dest: &Path, force: bool) -> Result<Self, ClientError> {
        match fs::symlink_metadata(dest) {
            Ok(_) if !force => {
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
        let dir = match dest.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let file_name = dest.file_name().unwrap_or_default().to_string_lossy();
        let prefix = format!(".{file_name}.");
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix).suffix(".part");
        // The saved file gets the usual permissions (0666 less the umask),
        // not the temporary file's private 0600.
        #[cfg(unix)]
        builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
        let temp = builder
            .tempfile_in(dir)
            .map_err(|source| ClientError::Local {
                action: "cannot create a temporary file in",
                path: dir.to_owned(),
                source,
            })?;
        Ok(Staging {
            temp,
            dest: dest.to_owned(),
            force,
        })
    }

    /// The destination.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// The temporary file's path.
    pub fn temp_path(&self) -> &Path {
        self.temp.path()
    }

    fn write_error(&self, source: io::Error) -> ClientError {
        ClientError::Local {
            action: "cannot write",
            path: self.temp.path().to_owned(),
            source,
        }
    }

    /// Flushes the file to disk and renames it to the destination: without
    /// `force`, only if nothing appeared there meanwhile.
    fn publish(self) -> Result<(), ClientError> {
        self.temp
            .as_file()
            .sync_all()
            .map_err(|e| self.write_error(e))?;
        let Staging { temp, dest, force } = self;
        let persisted = if force {
            temp.persist(&dest)
        } else {
            temp.persist_noclobber(&dest)
        };
        // On failure the temporary file is dropped with the error: removed.
        if let Err(e) = persisted {
            if !force && e.error.kind() == io::ErrorKind::AlreadyExists {
                return Err(ClientError::DestinationExists { path: dest });
            }
            return Err(ClientError::Local {
                action: "cannot save",
                path: dest,
                source: e.error,
            });
        }
        sync_parent(&dest)
    }
}

/// Makes the rename durable.
#[cfg(unix)]
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

#[cfg(not(unix))]
fn sync_parent(_path: &Path) -> Result<(), ClientError> {
    Ok(())
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
}

/// Downloads `name` into `staging`'s temporary file, verifies it, and
/// publishes it at the destination.
///
/// On any failure, nothing is left at the destination or in the temporary
/// file.
pub fn get_file<S: Read + Write>(
    session: &mut Session<S>,
    name: &str,
    mut staging: Staging,
    progress: &ProgressBar,
) -> Result<Saved, ClientError> {
    let mut download = session.start_get(name)?;
    let size = download.size();
    progress.set_length(size);
    let temp = staging.temp.path().to_owned();
    download.receive_into(staging.temp.as_file_mut(), &temp, &mut |n| progress.inc(n))?;
    let hash = download.finish()?;
    let path = staging.dest.clone();
    staging.publish()?;
    Ok(Saved { path, size, hash })
}
