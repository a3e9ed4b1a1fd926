//! Listings, page by page: one page of keys (at most [`PAGE`]) in memory
//! at a time, whatever the bucket holds.
//!
//! S3 lists keys in byte order, and a directory's keys all start with its
//! name and a `/`: so the flat listing is already in the order of a tree
//! (depth first, a directory compared as its name with a `/`), and a
//! directory is announced when the first key under it goes by. Keys that
//! are not valid names (written by other tools) are skipped, and so is
//! the private area, by starting the listing again after it.

use super::{Inner, failure, modified_ns, names, rfc3339_seconds};
use crate::storage::{Found, Listing, StoreError};
use framekit_transfer::{Entry, RESERVED_NAME, validate_name};
use std::collections::VecDeque;
use std::sync::Arc;

/// Keys asked for per page (S3's largest page).
const PAGE: usize = 1000;

/// A listing of the S3 store in progress.
#[derive(Debug)]
pub struct S3Listing {
    inner: Arc<Inner>,
    /// For a tree, the directory listed (which must exist).
    tree: Option<String>,
    /// With directories, what their names start with.
    dirs: Option<String>,
    /// The directories the last key was in, from the top, as announced.
    open: Vec<String>,
    /// What every key listed starts with.
    prefix: String,
    start_after: Option<String>,
    token: Option<String>,
    found: VecDeque<Found>,
    first: bool,
    done: bool,
    /// Why it cannot start, found before any request.
    refused: Option<StoreError>,
}

impl S3Listing {
    pub(super) fn list(inner: Arc<Inner>, prefix: &str, dirs: bool) -> S3Listing {
        let key_prefix = format!("{}{prefix}", inner.keys.prefix());
        let dirs = dirs.then(|| prefix.to_owned());
        S3Listing::new(inner, None, dirs, key_prefix, None)
    }

    pub(super) fn tree(inner: Arc<Inner>, dir: &str) -> S3Listing {
        let refused = if dir.is_empty() {
            None
        } else {
            validate_name(dir).err().map(StoreError::from)
        };
        let prefix = inner.keys.dir(dir);
        let below = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        S3Listing::new(inner, Some(dir.to_owned()), Some(below), prefix, refused)
    }

    fn new(
        inner: Arc<Inner>,
        tree: Option<String>,
        dirs: Option<String>,
        prefix: String,
        refused: Option<StoreError>,
    ) -> Self {
        S3Listing {
            inner,
            tree,
            dirs,
            open: Vec::new(),
            prefix,
            start_after: None,
            token: None,
            found: VecDeque::new(),
            first: true,
            done: false,
            refused,
        }
    }

    async fn fetch(&mut self) -> Result<(), StoreError> {
        let page = self
            .inner
            .raw
            .list_page(
                &self.prefix,
                self.start_after.as_deref(),
                self.token.as_deref(),
                PAGE,
            )
            .await
            .map_err(failure)?;
        if std::mem::take(&mut self.first)
            && page.keys.is_empty()
            && let Some(dir) = &self.tree
            && !dir.is_empty()
        {
            return Err(missing_dir(&self.inner, dir).await);
        }
        self.token = page.token;
        for listed in page.keys {
            let Some(name) = self.inner.keys.name_of(&listed.key) else {
                continue;
            };
            if name
                .strip_prefix(RESERVED_NAME)
                .is_some_and(|rest| rest.starts_with('/'))
            {
                // Start again after the private area.
                self.token = None;
                self.start_after = Some(self.inner.keys.after_private_area());
                return Ok(());
            }
            self.take(name, &listed);
        }
        if self.token.is_none() {
            self.done = true;
        }
        Ok(())
    }

    /// What one key adds to the listing: the directories it is in that
    /// were not announced yet (a directory comes before its content), then
    /// the file, unless it is a directory's marker.
    fn take(&mut self, name: &str, listed: &super::raw::Listed) {
        let (name, marker) = match name.strip_suffix('/') {
            Some(dir) => (dir, true),
            None => (name, false),
        };
        if validate_name(name).is_err() {
            return;
        }
        if let Some(filter) = &self.dirs {
            let mut dirs: Vec<&str> = name
                .match_indices('/')
                .map(|(i, _)| &name[..i])
                .chain(marker.then_some(name))
                .filter(|dir| dir.starts_with(filter.as_str()))
                .collect();
            let same = self
                .open
                .iter()
                .zip(&dirs)
                .take_while(|(open, dir)| open.as_str() == **dir)
                .count();
            self.open.truncate(same);
            for dir in dirs.drain(same..) {
                self.open.push(dir.to_owned());
                self.found.push_back(Found::Dir(dir.to_owned()));
            }
        }
        if !marker {
            self.found.push_back(Found::File(Entry {
                name: name.to_owned(),
                size: listed.size,
                modified_ns: modified_ns(
                    rfc3339_seconds(&listed.last_modified).unwrap_or(0),
                    &listed.e_tag,
                ),
            }));
        }
    }
}

/// Why the directory `dir` cannot be listed: a file, under a file, or
/// nothing there.
async fn missing_dir(inner: &Inner, dir: &str) -> StoreError {
    match names::is_file(inner, dir).await {
        Ok(true) => StoreError::NotAFile,
        Ok(false) => names::missing(inner, dir).await,
        Err(e) => e,
    }
}

impl Listing for S3Listing {
    async fn next(&mut self) -> Option<Result<Found, StoreError>> {
        if let Some(refused) = self.refused.take() {
            self.done = true;
            return Some(Err(refused));
        }
        loop {
            if let Some(found) = self.found.pop_front() {
                return Some(Ok(found));
            }
            if self.done {
                return None;
            }
            if let Err(e) = self.fetch().await {
                self.done = true;
                return Some(Err(e));
            }
        }
    }
}
