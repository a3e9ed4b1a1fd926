//! Names as a file system has them, on a store that only has keys: the
//! checks that keep a name from being both a file and a directory, and
//! stat, delete, make-dir, delete-dir and rename.

use super::kept::forget_digest;
use super::keys::parents;
use super::parts::MIN_PART;
use super::{Inner, failure, modified_ns, store_error};
use crate::storage::StoreError;
use framekit_transfer::{Entry, validate_name};
use futures_util::future::join_all;
use futures_util::stream::{self, StreamExt};
use object_store::ObjectStoreExt;
use object_store::path::Path;

/// How many requests a directory operation has in flight at once.
const CONCURRENCY: usize = 16;

/// Whether the file `name` exists.
pub(super) async fn is_file(inner: &Inner, name: &str) -> Result<bool, StoreError> {
    match inner
        .store
        .head(&inner.keys.path(name).map_err(failure)?)
        .await
    {
        Ok(_) => Ok(true),
        Err(object_store::Error::NotFound { .. }) => Ok(false),
        Err(e) => Err(failure(e)),
    }
}

/// Whether the directory `name` exists: any key under it, its marker
/// included.
pub(super) async fn is_dir(inner: &Inner, name: &str) -> Result<bool, StoreError> {
    let page = inner
        .raw
        .list_page(&inner.keys.dir(name), None, None, 1)
        .await
        .map_err(failure)?;
    Ok(!page.keys.is_empty())
}

/// Whether one of the parents of `name` is a file.
pub(super) async fn under_a_file(inner: &Inner, name: &str) -> Result<bool, StoreError> {
    let found = join_all(parents(name).map(|parent| is_file(inner, parent))).await;
    let mut under = false;
    for found in found {
        under |= found?;
    }
    Ok(under)
}

/// What stands at a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Standing {
    /// Nothing.
    Free,
    /// A file.
    File,
    /// A directory (a marker, or keys under it).
    Dir,
}

/// What stands at each of `names` (valid names, all in the directory
/// `dir`, sorted): found in one listing of the directory, one level deep,
/// from just before the first name to just after the last, rather than
/// two requests per name. Usually one request for a batch of small
/// uploads.
pub(super) async fn scan(
    inner: &Inner,
    dir: &str,
    names: &[&str],
) -> Result<Vec<Standing>, StoreError> {
    let (Some(first), Some(last)) = (names.first(), names.last()) else {
        return Ok(Vec::new());
    };
    let base = inner.keys.dir(dir);
    // Keys after the first name's key without its last character: the
    // first name and its neighbours, not the whole directory before it.
    let start = inner.keys.file(first);
    let start = start
        .char_indices()
        .last()
        .map(|(i, _)| start[..i].to_owned());
    let end = format!("{}/", inner.keys.file(last));
    let mut standing = vec![Standing::Free; names.len()];
    let mut token = None;
    loop {
        let page = inner
            .raw
            .list_dir_page(&base, start.as_deref(), token.as_deref(), 1000)
            .await
            .map_err(failure)?;
        let found = page
            .keys
            .iter()
            .map(|listed| (listed.key.as_str(), Standing::File))
            .chain(page.prefixes.iter().map(|p| (p.as_str(), Standing::Dir)));
        let mut past_end = false;
        for (key, what) in found {
            past_end |= key > end.as_str();
            let Some(name) = inner.keys.name_of(key) else {
                continue;
            };
            let name = name.strip_suffix('/').unwrap_or(name);
            if let Ok(i) = names.binary_search(&name) {
                // A file and a directory of one name: the directory counts.
                if standing[i] != Standing::Dir {
                    standing[i] = what;
                }
            }
        }
        token = page.token;
        if past_end || token.is_none() {
            return Ok(standing);
        }
    }
}

/// Checks that `name` could be published: a valid name, neither a
/// directory nor under a file, and absent unless `overwrite`.
pub(super) async fn check_put(
    inner: &Inner,
    name: &str,
    overwrite: bool,
) -> Result<(), StoreError> {
    validate_name(name)?;
    let (file, dir, under) = futures_util::join!(
        async {
            if overwrite {
                Ok(false)
            } else {
                is_file(inner, name).await
            }
        },
        is_dir(inner, name),
        under_a_file(inner, name),
    );
    if dir? || under? {
        return Err(StoreError::NotAFile);
    }
    if file? {
        return Err(StoreError::AlreadyExists);
    }
    Ok(())
}

/// Checks, just before publishing, that `name` is still neither a
/// directory nor under a file.
pub(super) async fn check_structure(inner: &Inner, name: &str) -> Result<(), StoreError> {
    validate_name(name)?;
    let (dir, under) = futures_util::join!(is_dir(inner, name), under_a_file(inner, name));
    if dir? || under? {
        return Err(StoreError::NotAFile);
    }
    Ok(())
}

/// Why there is no file `name`: it is a directory or lies under a file
/// ([`StoreError::NotAFile`]), or there is nothing.
pub(super) async fn missing(inner: &Inner, name: &str) -> StoreError {
    let (dir, under) = futures_util::join!(is_dir(inner, name), under_a_file(inner, name));
    match (dir, under) {
        (Err(e), _) | (_, Err(e)) => e,
        (Ok(true), _) | (_, Ok(true)) => StoreError::NotAFile,
        _ => StoreError::NotFound,
    }
}

pub(super) async fn stat(inner: &Inner, name: &str) -> Result<Entry, StoreError> {
    validate_name(name)?;
    match inner
        .store
        .head(&inner.keys.path(name).map_err(failure)?)
        .await
    {
        Ok(meta) => Ok(Entry {
            name: name.to_owned(),
            size: meta.size,
            modified_ns: modified_ns(
                meta.last_modified.timestamp(),
                meta.e_tag.as_deref().unwrap_or_default(),
            ),
        }),
        Err(object_store::Error::NotFound { .. }) => Err(missing(inner, name).await),
        Err(e) => Err(failure(e)),
    }
}

pub(super) async fn delete(inner: &Inner, name: &str) -> Result<(), StoreError> {
    validate_name(name)?;
    let path = inner.keys.path(name).map_err(failure)?;
    let meta = match inner.store.head(&path).await {
        Ok(meta) => meta,
        Err(object_store::Error::NotFound { .. }) => return Err(missing(inner, name).await),
        Err(e) => return Err(failure(e)),
    };
    inner.store.delete(&path).await.map_err(store_error)?;
    if meta.size > MIN_PART {
        forget_digest(inner, name).await;
    }
    remove_empty_markers(inner, name).await
}

/// After `name` went, removes the markers of the directories it left
/// empty, from the nearest up: directories exist only to hold files, as on
/// a disk, so that the name can become a file again.
async fn remove_empty_markers(inner: &Inner, name: &str) -> Result<(), StoreError> {
    for parent in parents(name) {
        let dir = inner.keys.dir(parent);
        let page = inner
            .raw
            .list_page(&dir, None, None, 2)
            .await
            .map_err(failure)?;
        match page.keys.as_slice() {
            // Nothing: the directory vanished with its last key.
            [] => {}
            [only] if only.key == dir => inner.raw.delete(&dir).await.map_err(failure)?,
            _ => break,
        }
    }
    Ok(())
}

pub(super) async fn make_dir(inner: &Inner, name: &str) -> Result<(), StoreError> {
    validate_name(name)?;
    let (file, under, dir) = futures_util::join!(
        is_file(inner, name),
        under_a_file(inner, name),
        is_dir(inner, name)
    );
    if file? || under? {
        return Err(StoreError::NotAFile);
    }
    if !dir? {
        inner
            .raw
            .put_empty(&inner.keys.dir(name))
            .await
            .map_err(failure)?;
    }
    Ok(())
}

/// Deletes every key that starts with `dir_key`, page by page; returns
/// whether there was any.
async fn delete_all(inner: &Inner, dir_key: &str) -> Result<bool, StoreError> {
    let mut any = false;
    let mut token = None;
    loop {
        let page = inner
            .raw
            .list_page(dir_key, None, token.as_deref(), 1000)
            .await
            .map_err(failure)?;
        any |= !page.keys.is_empty();
        let deleted: Vec<Result<(), StoreError>> = stream::iter(page.keys)
            .map(|listed| async move {
                inner.raw.delete(&listed.key).await.map_err(failure)?;
                if listed.size > MIN_PART
                    && let Some(name) = inner.keys.name_of(&listed.key)
                    && validate_name(name).is_ok()
                {
                    forget_digest(inner, name).await;
                }
                Ok(())
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        deleted.into_iter().collect::<Result<(), StoreError>>()?;
        token = page.token;
        if token.is_none() {
            return Ok(any);
        }
    }
}

pub(super) async fn delete_dir(
    inner: &Inner,
    name: &str,
    recursive: bool,
) -> Result<(), StoreError> {
    validate_name(name)?;
    if is_file(inner, name).await? {
        return Err(StoreError::NotAFile);
    }
    let dir = inner.keys.dir(name);
    if recursive {
        if !delete_all(inner, &dir).await? {
            return Err(missing_dir(inner, name).await);
        }
    } else {
        let page = inner
            .raw
            .list_page(&dir, None, None, 2)
            .await
            .map_err(failure)?;
        match page.keys.as_slice() {
            [] => return Err(missing_dir(inner, name).await),
            [only] if only.key == dir => inner.raw.delete(&dir).await.map_err(failure)?,
            _ => return Err(StoreError::NotEmpty),
        }
    }
    remove_empty_markers(inner, name).await
}

/// Why there is no directory `name` (which is not a file).
async fn missing_dir(inner: &Inner, name: &str) -> StoreError {
    match under_a_file(inner, name).await {
        Ok(true) => StoreError::NotAFile,
        Ok(false) => StoreError::NotFound,
        Err(e) => e,
    }
}

/// Moves a file (one CopyObject, then a DELETE) or a directory (each key
/// under it, one after the other: not atomic; a failure midway leaves
/// some keys moved). Without `overwrite`, fails if `to` exists, checked
/// first: through this server, renames and puts of the two names wait
/// for each other; through another, a move that races a write of `to` may
/// still replace it. A moved file's recorded hash is dropped, as on a
/// disk.
pub(super) async fn rename(
    inner: &Inner,
    from: &str,
    to: &str,
    overwrite: bool,
) -> Result<(), StoreError> {
    validate_name(from)?;
    validate_name(to)?;
    // Through this server, a rename is one step for other renames and puts
    // of these names: both locked, in order.
    let (first, second) = if from <= to { (from, to) } else { (to, from) };
    let _first = inner.locks.lock(first).await;
    let _second = if first == second {
        None
    } else {
        Some(inner.locks.lock(second).await)
    };
    let (from_file, from_dir) = futures_util::join!(is_file(inner, from), is_dir(inner, from));
    let (from_file, from_dir) = (from_file?, from_dir?);
    if !from_file && !from_dir {
        return Err(missing(inner, from).await);
    }
    if from == to {
        return if overwrite {
            Ok(())
        } else {
            Err(StoreError::AlreadyExists)
        };
    }
    let (to_file, to_dir, to_under) = futures_util::join!(
        is_file(inner, to),
        is_dir(inner, to),
        under_a_file(inner, to)
    );
    let (to_file, to_dir) = (to_file?, to_dir?);
    if to_under? || to.starts_with(&format!("{from}/")) {
        return Err(StoreError::NotAFile);
    }
    if from_file {
        if to_dir {
            return Err(StoreError::NotAFile);
        }
        if to_file && !overwrite {
            return Err(StoreError::AlreadyExists);
        }
        let (source, target) = (
            inner.keys.path(from).map_err(failure)?,
            inner.keys.path(to).map_err(failure)?,
        );
        inner
            .store
            .copy(&source, &target)
            .await
            .map_err(store_error)?;
        forget_digest(inner, to).await;
        inner.store.delete(&source).await.map_err(store_error)?;
        forget_digest(inner, from).await;
    } else {
        if to_file {
            return Err(StoreError::NotAFile);
        }
        if to_dir {
            if !overwrite {
                return Err(StoreError::AlreadyExists);
            }
            let page = inner
                .raw
                .list_page(&inner.keys.dir(to), None, None, 2)
                .await
                .map_err(failure)?;
            if page.keys.iter().any(|k| k.key != inner.keys.dir(to)) {
                return Err(StoreError::NotAFile);
            }
        }
        move_dir(inner, from, to).await?;
    }
    remove_empty_markers(inner, from).await
}

/// Copies every key under `from/` to the same place under `to/`, then
/// deletes it.
async fn move_dir(inner: &Inner, from: &str, to: &str) -> Result<(), StoreError> {
    let (source_dir, target_dir) = (inner.keys.dir(from), inner.keys.dir(to));
    let mut token = None;
    loop {
        let page = inner
            .raw
            .list_page(&source_dir, None, token.as_deref(), 1000)
            .await
            .map_err(failure)?;
        let moved: Vec<Result<(), StoreError>> = stream::iter(page.keys)
            .map(|listed| {
                let target = format!(
                    "{target_dir}{}",
                    listed.key.get(source_dir.len()..).unwrap_or_default()
                );
                async move {
                    if target.ends_with('/') {
                        inner.raw.put_empty(&target).await.map_err(failure)?;
                    } else {
                        let (from, to) = (
                            Path::parse(&listed.key).map_err(failure)?,
                            Path::parse(&target).map_err(failure)?,
                        );
                        inner.store.copy(&from, &to).await.map_err(store_error)?;
                    }
                    inner.raw.delete(&listed.key).await.map_err(failure)?;
                    if listed.size > MIN_PART
                        && let Some(name) = inner.keys.name_of(&listed.key)
                        && validate_name(name).is_ok()
                    {
                        forget_digest(inner, name).await;
                    }
                    Ok(())
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        moved.into_iter().collect::<Result<(), StoreError>>()?;
        token = page.token;
        if token.is_none() {
            return Ok(());
        }
    }
}
