//! Storage in an S3-compatible object store (AWS S3, Garage, MinIO, Ceph
//! RGW, R2...), shared by any number of servers.
//!
//! # What is in the bucket
//!
//! Under the prefix of `s3://BUCKET/PREFIX` (the whole bucket without one):
//!
//! - the file `NAME` is the object `PREFIX/NAME`, with the BLAKE3 hash it
//!   was verified against in its metadata (`x-amz-meta-blake3`) when it was
//!   written in one request, and the token of the upload that wrote it
//!   (`x-amz-meta-framekit-upload`);
//! - an empty directory made with MakeDir is an empty object
//!   `PREFIX/DIR/` (a marker); other directories exist only as the common
//!   prefixes of their files, and vanish with them;
//! - `PREFIX/.framekit/` (a first component no name may have) holds the
//!   state of each resumable upload (`kept/`, see [`kept`]) and the hash of each file published by a multipart upload
//!   (`digests/`: S3 fixes an object's metadata when the upload starts,
//!   before the hash is known).
//!
//! # How operations map to S3 requests
//!
//! - A put of up to [`parts::MIN_PART`] (8 MiB) is held in memory and
//!   written with one PutObject carrying its hash. A larger one streams
//!   into a multipart upload, created before the client is told to send:
//!   parts of a power-of-two size are uploaded as they fill, a few at a
//!   time, each hashed on the way (see [`parts`]); the upload is completed
//!   only once the hash of the whole file matches the client's. Until then
//!   nothing is visible under the name.
//! - A put without overwrite is published with `If-None-Match: *` (on the
//!   PutObject or the CompleteMultipartUpload), so that of two servers
//!   racing for one new name exactly one wins, when the store enforces it.
//!   A startup probe checks that it does; a store that ignores the header
//!   (Garage 2.5) is refused unless the server is started with
//!   `--no-atomic-create`, and then a check of the name and a lock in this
//!   process stand in: two servers may still both publish a new name at the
//!   same moment, the later replacing the earlier.
//! - A get reads the object in one streamed GET (ranged from the offset
//!   when resuming), tied to its ETag: an object replaced meanwhile ends the
//!   body early rather than mixing versions. The hash comes from the
//!   metadata or the digest record; else it is computed on the way.
//! - list and tree page through ListObjectsV2 (1,000 keys at a time);
//!   stat is a HEAD; delete a DELETE, then the markers of the directories
//!   it left empty go; mkdir writes a marker; a rename copies, then deletes
//!   (a file in one CopyObject; a directory object by object, not atomic).
//! - An interrupted resumable upload keeps its completed parts: its state
//!   (upload id, each part's ETag and BLAKE3 chaining value) is in the
//!   bucket, so any server continues it.
//!
//! Names are not checked against each other by the store: a file `a` and a
//! file `a/b` can coexist in S3. Before writing, the server checks that the
//! name is not a directory and no parent is a file, but two servers writing
//! such names at the same moment can still both succeed.

mod config;
mod download;
mod kept;
mod keys;
mod listing;
mod names;
mod parts;
mod raw;
mod upload;

pub use config::{OpenError, S3Config};
pub use download::{S3Download, S3Source};
pub use listing::S3Listing;
pub use upload::{S3Sink, S3Upload};

use crate::storage::{Retention, SmallPut, Storage, StoreError};
use framekit_transfer::{Entry, Hash};
use keys::Keys;
use object_store::aws::AmazonS3;
use raw::Raw;
use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::{Arc, Mutex, Weak};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::Semaphore;

/// The metadata key of a file's verified BLAKE3 hash (hex).
const HASH_META: &str = "blake3";

/// The metadata key of the token of the upload that wrote an object.
const TOKEN_META: &str = "framekit-upload";

/// The staging quota without `--staging-quota`: there is no disk of the
/// server's to take a share of, so a fixed 64 GiB of stored parts.
pub const DEFAULT_QUOTA: u64 = 64 << 30;

/// An S3 bucket (or a prefix of one), served.
#[derive(Debug, Clone)]
pub struct S3Store {
    inner: Arc<Inner>,
}

/// What every operation shares.
#[derive(Debug)]
struct Inner {
    /// For everything but the bodies of downloads: requests time out.
    store: AmazonS3,
    /// For the bodies of downloads, read at the client's pace: no total
    /// timeout, only one between reads.
    reader: AmazonS3,
    /// For what `object_store` does not send.
    raw: Raw,
    keys: Keys,
    /// Whether the store refuses a conditional create of an existing key.
    atomic_create: bool,
    /// Part buffers in memory, in MiB, for all uploads together.
    memory: Arc<Semaphore>,
    /// The size of `memory`, in MiB.
    memory_mib: u32,
    retention: Retention,
    /// The staging quota: `--staging-quota`, or [`DEFAULT_QUOTA`].
    quota: u64,
    /// What this process is doing that a sweep must leave alone.
    active: Mutex<Active>,
    /// Woken when a resumable upload in progress here ends.
    ended: tokio::sync::Notify,
    /// Serialises puts without overwrite of one name, where the store does
    /// not.
    locks: NameLocks,
    /// The aborts of uploads dropped without an end (their connections
    /// aborted at shutdown), which [`Storage::close`] waits for.
    cleanup: tokio_util::task::TaskTracker,
}

#[derive(Debug, Default)]
struct Active {
    /// Names and resume keys (hex) of the resumable uploads in progress
    /// here, each with whether it is ending (its connection broke, and
    /// what it stored is being kept).
    kept: HashMap<(String, String), bool>,
    /// Multipart uploads in progress here.
    uploads: HashSet<String>,
}

impl Inner {
    fn active(&self) -> std::sync::MutexGuard<'_, Active> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl S3Store {
    /// Opens the store `config.url` names, configured from the `AWS_*`
    /// environment variables, and checks that it can be used: reachable,
    /// the credentials accepted, the bucket there, and conditional creates
    /// enforced (unless `config.no_atomic_create`). Fails fast: no request
    /// is retried.
    pub async fn open(config: S3Config) -> Result<S3Store, OpenError> {
        config::open(config).await
    }

    /// Whether a put without overwrite is published atomically (the store
    /// enforces conditional creates).
    pub fn atomic_create(&self) -> bool {
        self.inner.atomic_create
    }
}

impl Storage for S3Store {
    type Upload = S3Upload;
    type Download = S3Download;
    type Listing = S3Listing;

    async fn open_read(&self, name: &str) -> Result<S3Download, StoreError> {
        download::open(&self.inner, name).await
    }

    async fn create_upload(
        &self,
        name: &str,
        size: u64,
        overwrite: bool,
    ) -> Result<S3Upload, StoreError> {
        upload::create(&self.inner, name, size, overwrite).await
    }

    async fn resume_upload(
        &self,
        key: Hash,
        name: &str,
        size: u64,
        overwrite: bool,
    ) -> Result<S3Upload, StoreError> {
        upload::resume(&self.inner, key, name, size, overwrite).await
    }

    async fn publish(
        &self,
        upload: S3Upload,
        name: &str,
        overwrite: bool,
        hash: blake3::Hash,
    ) -> Result<(), StoreError> {
        upload::publish(&self.inner, upload, name, overwrite, hash).await
    }

    async fn store_batch(&self, batch: Vec<SmallPut>) -> Vec<Result<blake3::Hash, StoreError>> {
        upload::store_batch(&self.inner, batch).await
    }

    fn list(&self, prefix: &str, dirs: bool) -> S3Listing {
        S3Listing::list(Arc::clone(&self.inner), prefix, dirs)
    }

    fn tree(&self, dir: &str) -> S3Listing {
        S3Listing::tree(Arc::clone(&self.inner), dir)
    }

    async fn stat(&self, name: &str) -> Result<Entry, StoreError> {
        names::stat(&self.inner, name).await
    }

    async fn delete(&self, name: &str) -> Result<(), StoreError> {
        names::delete(&self.inner, name).await
    }

    async fn make_dir(&self, name: &str) -> Result<(), StoreError> {
        names::make_dir(&self.inner, name).await
    }

    async fn delete_dir(&self, name: &str, recursive: bool) -> Result<(), StoreError> {
        names::delete_dir(&self.inner, name, recursive).await
    }

    async fn rename(&self, from: &str, to: &str, overwrite: bool) -> Result<(), StoreError> {
        names::rename(&self.inner, from, to, overwrite).await
    }

    async fn sweep(&self) -> usize {
        kept::sweep(&self.inner).await
    }

    async fn close(&self) {
        self.inner.cleanup.close();
        self.inner.cleanup.wait().await;
    }
}

/// A store failure, for the client: "the server could not complete the
/// operation" (the details go to the log).
fn failure(error: impl std::fmt::Display) -> StoreError {
    StoreError::Io(io::Error::other(error.to_string()))
}

/// An `object_store` failure of a request about one name.
fn store_error(error: object_store::Error) -> StoreError {
    match error {
        object_store::Error::NotFound { .. } => StoreError::NotFound,
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. } => {
            StoreError::AlreadyExists
        }
        other => failure(other),
    }
}

/// Now, in milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The modification time of an object as the protocol reports it: S3 knows
/// it to the second (a HEAD says no more), so the nanoseconds below the
/// second are taken from the object's ETag. Two versions of a file then
/// differ even within one second, and a download resumes only on the
/// version it started on.
fn modified_ns(seconds: i64, e_tag: &str) -> u64 {
    let seconds = u64::try_from(seconds).unwrap_or(0);
    let etag = e_tag.trim_matches('"');
    let fraction = if etag.is_empty() {
        0
    } else {
        let hash = blake3::hash(etag.as_bytes());
        let mut low = [0u8; 8];
        low.copy_from_slice(&hash.as_bytes()[..8]);
        u64::from_le_bytes(low) % 1_000_000_000
    };
    seconds
        .saturating_mul(1_000_000_000)
        .saturating_add(fraction)
}

/// The seconds since the epoch of an RFC 3339 time, as S3 listings give.
fn rfc3339_seconds(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp())
}

/// A new random token, in hex: names an upload, so that a server can
/// recognise an object it wrote when the store's answer was lost.
fn token() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_err()
    {
        // Unique enough without it: the time, the process, a counter.
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let mut hasher = blake3::Hasher::new();
        hasher.update(&now_ms().to_le_bytes());
        hasher.update(&std::process::id().to_le_bytes());
        hasher.update(
            &COUNTER
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                .to_le_bytes(),
        );
        bytes.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One async lock per name, held while a put without overwrite checks the
/// name and publishes it, on stores without conditional creates.
#[derive(Debug, Default)]
struct NameLocks(Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>);

impl NameLocks {
    async fn lock(&self, name: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.0.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(lock) = locks.get(name).and_then(Weak::upgrade) {
                lock
            } else {
                if locks.len() > 1024 {
                    locks.retain(|_, lock| lock.strong_count() > 0);
                }
                let lock = Arc::new(tokio::sync::Mutex::new(()));
                locks.insert(name.to_owned(), Arc::downgrade(&lock));
                lock
            }
        };
        lock.lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modification_times_keep_the_second_and_tell_versions_apart() {
        let a = modified_ns(1_700_000_000, "\"abc\"");
        let b = modified_ns(1_700_000_000, "\"abd\"");
        assert_eq!(a / 1_000_000_000, 1_700_000_000);
        assert_eq!(b / 1_000_000_000, 1_700_000_000);
        assert_ne!(a, b);
        assert_eq!(a, modified_ns(1_700_000_000, "abc"));
        assert_eq!(modified_ns(-5, ""), 0);
        assert_eq!(
            rfc3339_seconds("2026-12-07T04:10:13.737Z"),
            rfc3339_seconds("2026-12-07T04:10:13Z")
        );
    }

    #[test]
    fn tokens_differ() {
        let (a, b) = (token(), token());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }

    #[tokio::test]
    async fn a_name_lock_is_held_by_one_at_a_time() {
        let locks = NameLocks::default();
        let first = locks.lock("a").await;
        let other = locks.lock("b").await;
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(20), locks.lock("a"))
                .await
                .is_err()
        );
        drop(first);
        let _again = locks.lock("a").await;
        drop(other);
    }
}
