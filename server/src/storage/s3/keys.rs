//! Where things live in the bucket: a file `NAME` is the object
//! `PREFIX/NAME`, an empty directory `DIR` is the empty object
//! `PREFIX/DIR/` (a marker), and what the server keeps for itself is under
//! `PREFIX/.framekit/`, a first component no name may have.

use framekit_transfer::{RESERVED_NAME, validate_name};
use object_store::path::Path;

/// A kind of object the server keeps for itself, named after the hash of
/// a name: `kept/` for the state of resumable uploads, `digests/` for the
/// hashes of files published by multipart uploads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Private {
    /// The state of a resumable upload of a name.
    Kept,
    /// The verified hash of a name published by a multipart upload.
    Digest,
}

impl Private {
    fn dir(self) -> &'static str {
        match self {
            Private::Kept => "kept",
            Private::Digest => "digests",
        }
    }
}

/// The mapping between names and keys, under an optional prefix.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    /// Empty, or the prefix with a `/` after it.
    prefix: String,
}

impl Keys {
    /// Keys under `prefix` (no leading or trailing `/`; empty for the
    /// whole bucket), which must be a valid name itself.
    pub(super) fn new(prefix: &str) -> Result<Keys, framekit_transfer::NameError> {
        if prefix.is_empty() {
            return Ok(Keys {
                prefix: String::new(),
            });
        }
        validate_name(prefix)?;
        Ok(Keys {
            prefix: format!("{prefix}/"),
        })
    }

    /// The prefix, with its `/` (empty for the whole bucket).
    pub(super) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The key of the file `name` (a valid name).
    pub(super) fn file(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// The same key as a path for `object_store`. Valid names are valid
    /// paths (no empty, `.` or `..` component, no control character), so
    /// this fails only for a name that was not checked.
    pub(super) fn path(&self, name: &str) -> Result<Path, object_store::path::Error> {
        Path::parse(self.file(name))
    }

    /// What every key under the directory `dir` starts with; its marker,
    /// when it is empty, is this very key.
    pub(super) fn dir(&self, dir: &str) -> String {
        if dir.is_empty() {
            self.prefix.clone()
        } else {
            format!("{}{dir}/", self.prefix)
        }
    }

    /// The name a key stands for, if it is under the prefix.
    pub(super) fn name_of<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(self.prefix.as_str())
    }

    /// What the private area's keys start with.
    pub(super) fn private_area(&self) -> String {
        format!("{}{RESERVED_NAME}/", self.prefix)
    }

    /// A key after every key of the private area (they are ASCII): a
    /// listing that meets the area continues after it.
    pub(super) fn after_private_area(&self) -> String {
        format!("{}{RESERVED_NAME}/\u{7f}", self.prefix)
    }

    /// The private object of `kind` for `name`.
    pub(super) fn private(&self, kind: Private, name: &str) -> Path {
        self.private_path(&format!(
            "{}/{}",
            kind.dir(),
            blake3::hash(name.as_bytes()).to_hex()
        ))
    }

    /// What the states of the resumable uploads of `name` start with.
    pub(super) fn kept_dir(&self, name: &str) -> String {
        format!(
            "{}{}/",
            self.private_dir(Private::Kept),
            blake3::hash(name.as_bytes()).to_hex()
        )
    }

    /// The state of the resumable upload of `name` with the resume key
    /// `key` (hex).
    pub(super) fn kept(&self, name: &str, key: &str) -> Path {
        self.private_path(&format!(
            "kept/{}/{key}",
            blake3::hash(name.as_bytes()).to_hex()
        ))
    }

    /// Where the private objects of `kind` are, as a key prefix.
    pub(super) fn private_dir(&self, kind: Private) -> String {
        format!("{}{}/", self.private_area(), kind.dir())
    }

    /// A private object by its path in the area (ASCII, no empty
    /// component).
    pub(super) fn private_path(&self, rest: &str) -> Path {
        Path::from_iter(
            format!("{}{RESERVED_NAME}/{rest}", self.prefix)
                .split('/')
                .filter(|part| !part.is_empty()),
        )
    }
}

/// The parents of `name`, from the nearest up: `a/b/c` has `a/b`, `a`.
pub(super) fn parents(name: &str) -> impl Iterator<Item = &str> {
    let mut rest = name;
    std::iter::from_fn(move || {
        let (parent, _) = rest.rsplit_once('/')?;
        rest = parent;
        Some(parent)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_keys_under_the_prefix_and_back() {
        let keys = Keys::new("team/a").unwrap();
        assert_eq!(keys.file("x/y"), "team/a/x/y");
        assert_eq!(keys.dir("x"), "team/a/x/");
        assert_eq!(keys.dir(""), "team/a/");
        assert_eq!(keys.name_of("team/a/x/y"), Some("x/y"));
        assert_eq!(keys.name_of("team/b"), None);
        assert_eq!(keys.path("a b/c~d").unwrap().as_ref(), "team/a/a b/c~d");
        let private = keys.kept("x", "00").to_string();
        assert!(private.starts_with(&keys.kept_dir("x")), "{private}");
        assert!(private.starts_with("team/a/.framekit/kept/"), "{private}");
        assert!(private.as_str() < keys.after_private_area().as_str());
        assert!(keys.private_area().as_str() < private.as_str());

        let root = Keys::new("").unwrap();
        assert_eq!(root.file("x"), "x");
        assert_eq!(root.private_dir(Private::Digest), ".framekit/digests/");
        assert!(Keys::new("a//b").is_err());
        assert!(Keys::new(".framekit").is_err());
    }

    #[test]
    fn parents_go_from_the_nearest_up() {
        assert_eq!(parents("a/b/c").collect::<Vec<_>>(), ["a/b", "a"]);
        assert_eq!(parents("a").count(), 0);
    }
}
