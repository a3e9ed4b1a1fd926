//! What a put of files and directories sends, in order.
//!
//! A directory is walked in name order: every directory becomes a remote
//! directory (so that empty ones arrive too), every regular file a remote
//! file, named by its path relative to the directory, under the
//! directory's own name (or another). Symbolic links found in the walk are
//! skipped unless asked to follow them, and so is anything that is neither
//! a file nor a directory.

use super::source::base_name;
use crate::error::ClientError;
use framekit_transfer::validate_name;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Something to upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutItem {
    /// A directory to create on the server.
    Dir {
        /// Its remote name.
        remote: String,
    },
    /// A file to upload.
    File {
        /// Where it is.
        path: PathBuf,
        /// Its remote name.
        remote: String,
        /// Its size when it was found.
        size: u64,
    },
}

/// Something found that will not be uploaded.
#[derive(Debug)]
pub enum Left {
    /// Skipped on purpose (a symbolic link, a special file): a warning.
    Skipped {
        /// What.
        path: PathBuf,
        /// Why, in a few words.
        reason: &'static str,
    },
    /// Cannot be uploaded: a failure of the transfer.
    Failed {
        /// What.
        path: PathBuf,
        /// Why.
        error: ClientError,
    },
}

/// What a put of files and directories does, in order.
#[derive(Debug, Default)]
pub struct Plan {
    /// The directories to create and files to send, in order.
    pub items: Vec<PutItem>,
    /// What was found and will not be sent, in the order found.
    pub left: Vec<Left>,
}

impl Plan {
    /// The number of files to send.
    pub fn files(&self) -> usize {
        self.items
            .iter()
            .filter(|i| matches!(i, PutItem::File { .. }))
            .count()
    }

    /// The bytes of the files to send.
    pub fn bytes(&self) -> u64 {
        self.items
            .iter()
            .map(|i| match i {
                PutItem::File { size, .. } => *size,
                PutItem::Dir { .. } => 0,
            })
            .sum()
    }
}

/// Plans the upload of `sources`: each file under its base name, each
/// directory with everything in it under its base name. With several
/// sources, `name` is a remote directory to put them all in; with one, it
/// is the remote name of that file or directory.
///
/// A source given by a symbolic link is followed; links found inside
/// directories only if `follow_links`.
pub fn plan_put(sources: &[PathBuf], name: Option<&str>, follow_links: bool) -> Plan {
    let mut plan = Plan::default();
    for source in sources {
        let remote = match (name, sources.len()) {
            (Some(name), 1) => Ok(name.to_owned()),
            (Some(name), _) => base_name(source).map(|base| format!("{name}/{base}")),
            (None, _) => base_name(source),
        };
        let remote = remote.and_then(|remote| {
            validate_name(&remote)
                .map(|()| remote.clone())
                .map_err(|source| ClientError::InvalidName {
                    name: remote,
                    source,
                })
        });
        let remote = match remote {
            Ok(remote) => remote,
            Err(error) => {
                plan.left.push(Left::Failed {
                    path: source.clone(),
                    error,
                });
                continue;
            }
        };
        match fs::metadata(source) {
            Ok(meta) if meta.is_dir() => {
                let mut ancestors = vec![(meta.dev(), meta.ino())];
                plan.items.push(PutItem::Dir {
                    remote: remote.clone(),
                });
                walk(source, &remote, follow_links, &mut ancestors, &mut plan);
            }
            Ok(meta) if meta.is_file() => plan.items.push(PutItem::File {
                path: source.clone(),
                remote,
                size: meta.len(),
            }),
            Ok(_) => plan.left.push(Left::Skipped {
                path: source.clone(),
                reason: "not a regular file or a directory",
            }),
            Err(e) => plan.left.push(Left::Failed {
                path: source.clone(),
                error: ClientError::Local {
                    action: "cannot read",
                    path: source.clone(),
                    source: e,
                },
            }),
        }
    }
    plan
}

/// Adds what is in the directory `dir` (remote name `remote`) to `plan`.
/// `ancestors` are the directories being walked, to stop at a link cycle.
fn walk(
    dir: &Path,
    remote: &str,
    follow_links: bool,
    ancestors: &mut Vec<(u64, u64)>,
    plan: &mut Plan,
) {
    let failed = |path: &Path, source| Left::Failed {
        path: path.to_owned(),
        error: ClientError::Local {
            action: "cannot read",
            path: path.to_owned(),
            source,
        },
    };
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            plan.left.push(failed(dir, e));
            return;
        }
    };
    let mut children = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) => children.push(entry.path()),
            Err(e) => plan.left.push(failed(dir, e)),
        }
    }
    children.sort();
    for path in children {
        let child = match path.file_name().and_then(|n| n.to_str()) {
            Some(name) => format!("{remote}/{name}"),
            None => {
                plan.left.push(Left::Failed {
                    error: ClientError::NoRemoteName { path: path.clone() },
                    path,
                });
                continue;
            }
        };
        if let Err(source) = validate_name(&child) {
            plan.left.push(Left::Failed {
                path,
                error: ClientError::InvalidName {
                    name: child,
                    source,
                },
            });
            continue;
        }
        let meta = match fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) => {
                plan.left.push(failed(&path, e));
                continue;
            }
        };
        let meta = if meta.file_type().is_symlink() {
            if !follow_links {
                plan.left.push(Left::Skipped {
                    path,
                    reason: "a symbolic link (use --follow-links to follow it)",
                });
                continue;
            }
            match fs::metadata(&path) {
                Ok(meta) => meta,
                Err(e) => {
                    plan.left.push(failed(&path, e));
                    continue;
                }
            }
        } else {
            meta
        };
        if meta.is_dir() {
            let id = (meta.dev(), meta.ino());
            if ancestors.contains(&id) {
                plan.left.push(Left::Skipped {
                    path,
                    reason: "a link to a directory that contains it",
                });
                continue;
            }
            plan.items.push(PutItem::Dir {
                remote: child.clone(),
            });
            ancestors.push(id);
            walk(&path, &child, follow_links, ancestors, plan);
            ancestors.pop();
        } else if meta.is_file() {
            plan.items.push(PutItem::File {
                path,
                remote: child,
                size: meta.len(),
            });
        } else {
            plan.left.push(Left::Skipped {
                path,
                reason: "not a regular file or a directory",
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn remotes(plan: &Plan) -> Vec<String> {
        plan.items
            .iter()
            .map(|i| match i {
                PutItem::Dir { remote } => format!("{remote}/"),
                PutItem::File { remote, .. } => remote.clone(),
            })
            .collect()
    }

    #[test]
    fn a_directory_is_planned_in_name_order_with_its_empty_directories() {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().join("top");
        fs::create_dir_all(top.join("b/empty")).unwrap();
        fs::write(top.join("a.txt"), b"a").unwrap();
        fs::write(top.join("b/c"), b"cc").unwrap();
        fs::write(top.join("z"), b"").unwrap();
        let plan = plan_put(std::slice::from_ref(&top), None, false);
        assert_eq!(
            remotes(&plan),
            [
                "top/",
                "top/a.txt",
                "top/b/",
                "top/b/c",
                "top/b/empty/",
                "top/z"
            ]
        );
        assert!(plan.left.is_empty(), "{:?}", plan.left);
        assert_eq!((plan.files(), plan.bytes()), (3, 3));

        let renamed = plan_put(std::slice::from_ref(&top), Some("x/y"), false);
        assert_eq!(remotes(&renamed)[..2], ["x/y/", "x/y/a.txt"]);
        let several = plan_put(&[top.clone(), top.join("a.txt")], Some("into"), false);
        assert_eq!(remotes(&several)[0], "into/top/");
        assert_eq!(remotes(&several).last().unwrap(), "into/a.txt");
    }

    #[test]
    fn links_and_special_files_are_skipped_unless_links_are_followed() {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().join("top");
        fs::create_dir(&top).unwrap();
        fs::write(dir.path().join("outside"), b"o").unwrap();
        symlink(dir.path().join("outside"), top.join("link")).unwrap();
        symlink(&top, top.join("loop")).unwrap();
        symlink(dir.path().join("nowhere"), top.join("dangling")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            top.join("fifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();

        let plan = plan_put(std::slice::from_ref(&top), None, false);
        assert_eq!(remotes(&plan), ["top/"]);
        assert_eq!(plan.left.len(), 4);
        assert!(
            plan.left.iter().all(|l| matches!(l, Left::Skipped { .. })),
            "{:?}",
            plan.left
        );

        let followed = plan_put(std::slice::from_ref(&top), None, true);
        assert_eq!(remotes(&followed), ["top/", "top/link"]);
        let failed: Vec<_> = followed
            .left
            .iter()
            .filter(|l| matches!(l, Left::Failed { .. }))
            .collect();
        assert_eq!(failed.len(), 1, "{:?}", followed.left);
    }

    #[test]
    fn names_that_cannot_be_remote_names_fail_alone() {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().join("top");
        fs::create_dir(&top).unwrap();
        fs::write(top.join("ok"), b"1").unwrap();
        fs::write(top.join("tab\there"), b"2").unwrap();
        fs::write(top.join("back\\slash"), b"3").unwrap();
        let plan = plan_put(std::slice::from_ref(&top), None, false);
        assert_eq!(remotes(&plan), ["top/", "top/ok"]);
        assert_eq!(plan.left.len(), 2);
    }
}
