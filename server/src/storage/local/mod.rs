//! Storage in a directory of the local file system: names confined to the
//! root, uploads staged, synced and published atomically, interrupted
//! uploads kept for resuming, and the hashes of published files recorded.
//! `store.rs` says how.
//!
//! The file system's calls block: each operation runs as one blocking task
//! on the runtime's blocking pool, and each body transfer has a worker
//! thread of its own (`pipeline.rs`).

mod digest;
mod partial;
mod pipeline;
mod space;
mod store;
mod walk;

pub use partial::Retention;
pub use pipeline::{LocalSink, LocalSource};
pub use space::MinFree;
pub use store::LocalUpload;

use crate::storage::{Download, FileInfo, Found, Listing, SmallPut, Storage, StoreError, Upload};
use framekit_transfer::{Entry, FileVersion, Hash};
use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;
use store::{Checked, Staged, Store};
use walk::Walk;

/// At most this many threads sync the files of a batch at once.
const SYNC_TASKS: usize = 8;

/// A directory on the local file system, served.
#[derive(Debug, Clone)]
pub struct LocalStore {
    store: Arc<Store>,
}

impl LocalStore {
    /// Opens (creating it if needed) the directory to serve, removes the
    /// leftovers of uploads that were in progress when a previous server
    /// stopped, and keeps the interrupted uploads that can still be
    /// resumed under `retention`.
    pub fn open(path: &Path, retention: Retention) -> io::Result<LocalStore> {
        LocalStore::open_with(path, retention, MinFree::default())
    }

    /// Opens the directory to serve as [`LocalStore::open`] does; uploads
    /// must leave `min_free` of its disk free (see [`MinFree`]).
    pub fn open_with(
        path: &Path,
        retention: Retention,
        min_free: MinFree,
    ) -> io::Result<LocalStore> {
        Ok(LocalStore {
            store: Arc::new(Store::open_with(path, retention, min_free)?),
        })
    }

    /// Runs `work` on the blocking pool.
    async fn blocking<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || work(&store))
            .await
            .unwrap_or_else(|e| Err(StoreError::Io(io::Error::other(e))))
    }

    /// A listing that starts with `start`, run on the blocking pool a
    /// step at a time as it is read.
    fn listing<F>(&self, start: F) -> LocalListing
    where
        F: FnOnce(&Store) -> Result<Walk, StoreError> + Send + 'static,
    {
        LocalListing {
            store: Arc::clone(&self.store),
            state: ListingState::Start(Box::new(start)),
            found: VecDeque::new(),
        }
    }

    /// Writes the checked uploads of a batch to staged files and syncs
    /// them, from up to [`SYNC_TASKS`] threads of the blocking pool at
    /// once: the file system commits their `fsync`s in a few journal
    /// transactions instead of one each, and creating the files, which
    /// costs the kernel more CPU than writing 4 KiB, runs on every core.
    /// (Measured on ext4 here, 32 files of 4 KiB synced from 8 threads
    /// went 2.2x as fast as one after the other; one `syncfs` was as fast
    /// when the disk was idle, but it also flushes everything else written
    /// to the file system, and with another process writing a big file
    /// meanwhile it went 3.7x slower than the threads: see
    /// docs/BENCHMARKS.md.)
    async fn stage_together(
        &self,
        checked: Vec<Result<Checked, StoreError>>,
    ) -> Vec<Result<Staged, StoreError>> {
        let tasks = checked.iter().filter(|s| s.is_ok()).count().min(SYNC_TASKS);
        let mut results: Vec<Option<Result<Staged, StoreError>>> = Vec::new();
        let mut groups: Vec<Vec<(usize, Checked)>> = (0..tasks).map(|_| Vec::new()).collect();
        let mut next = 0;
        for (i, checked) in checked.into_iter().enumerate() {
            match checked {
                Ok(checked) => {
                    if let Some(group) = groups.get_mut(next % tasks.max(1)) {
                        group.push((i, checked));
                    }
                    next += 1;
                    results.push(None);
                }
                Err(e) => results.push(Some(Err(e))),
            }
        }
        let running: Vec<_> = groups
            .into_iter()
            .map(|group| {
                let store = Arc::clone(&self.store);
                let indices: Vec<usize> = group.iter().map(|(i, _)| *i).collect();
                let task = tokio::task::spawn_blocking(move || {
                    group
                        .into_iter()
                        .map(|(i, checked)| (i, checked.stage(&store)))
                        .collect::<Vec<_>>()
                });
                (indices, task)
            })
            .collect();
        for (indices, task) in running {
            match task.await {
                Ok(synced) => {
                    for (i, result) in synced {
                        if let Some(slot) = results.get_mut(i) {
                            *slot = Some(result);
                        }
                    }
                }
                // The uploads went with the task: their staged files, if
                // any, were removed when they were dropped.
                Err(e) => {
                    let message = e.to_string();
                    for i in indices {
                        if let Some(slot) = results.get_mut(i) {
                            *slot = Some(Err(StoreError::Io(io::Error::other(message.clone()))));
                        }
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|result| {
                result.unwrap_or_else(|| {
                    Err(StoreError::Io(io::Error::other(
                        "an upload of a batch was left unstaged",
                    )))
                })
            })
            .collect()
    }

    /// The steps of making uploads durable taken so far, in order.
    #[cfg(test)]
    fn steps(&self) -> Vec<store::Step> {
        self.store.steps()
    }

    /// An upload whose data goes to `file` instead of a staged file.
    #[cfg(test)]
    pub(crate) fn upload_into(&self, file: File) -> LocalUpload {
        self.store.upload_into(file)
    }
}

impl Storage for LocalStore {
    type Upload = LocalUpload;
    type Download = LocalDownload;
    type Listing = LocalListing;

    async fn open_read(&self, name: &str) -> Result<LocalDownload, StoreError> {
        let name = name.to_owned();
        self.blocking(move |store| {
            let (file, entry) = store.open_read(&name)?;
            let hash = store.known_hash(&name, &file);
            Ok(LocalDownload {
                file,
                info: FileInfo {
                    size: entry.size,
                    modified_ns: entry.modified_ns,
                    hash,
                },
            })
        })
        .await
    }

    async fn create_upload(
        &self,
        name: &str,
        size: u64,
        overwrite: bool,
    ) -> Result<LocalUpload, StoreError> {
        let name = name.to_owned();
        self.blocking(move |store| {
            store.check_put(&name, overwrite)?;
            store.begin_upload(size)
        })
        .await
    }

    async fn resume_upload(
        &self,
        key: Hash,
        name: &str,
        size: u64,
        overwrite: bool,
    ) -> Result<LocalUpload, StoreError> {
        let name = name.to_owned();
        self.blocking(move |store| {
            store.check_put(&name, overwrite)?;
            store.begin_resumable(key, &name, size)
        })
        .await
    }

    async fn publish(
        &self,
        upload: LocalUpload,
        name: &str,
        overwrite: bool,
        hash: blake3::Hash,
    ) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.blocking(move |store| store.publish(upload, &name, overwrite, &hash))
            .await
    }

    /// The uploads are checked in one trip, written to their staged files
    /// and synced together (see [`LocalStore::stage_together`]), then
    /// published in one more trip, which syncs each directory that
    /// received one of them once, after all of them are in place. Only
    /// then are they answered: what is reported stored is durable.
    async fn store_batch(&self, batch: Vec<SmallPut>) -> Vec<Result<blake3::Hash, StoreError>> {
        let count = batch.len();
        let failed = |e: StoreError| {
            let message = e.to_string();
            (0..count)
                .map(|_| Err(StoreError::Io(io::Error::other(message.clone()))))
                .collect()
        };
        let checked = self
            .blocking(move |store| {
                Ok(batch
                    .into_iter()
                    .map(|put| store.check_small(put))
                    .collect::<Vec<_>>())
            })
            .await;
        let staged = match checked {
            Ok(checked) => self.stage_together(checked).await,
            Err(e) => return failed(e),
        };
        self.blocking(move |store| Ok(store.publish_batch(staged)))
            .await
            .unwrap_or_else(failed)
    }

    fn list(&self, prefix: &str, dirs: bool) -> LocalListing {
        let prefix = prefix.to_owned();
        self.listing(move |store| store.list(&prefix, dirs))
    }

    fn tree(&self, dir: &str) -> LocalListing {
        let dir = dir.to_owned();
        self.listing(move |store| store.tree(&dir))
    }

    async fn stat(&self, name: &str) -> Result<Entry, StoreError> {
        let name = name.to_owned();
        self.blocking(move |store| store.stat(&name)).await
    }

    async fn describe(&self, name: &str) -> Result<Found, StoreError> {
        let name = name.to_owned();
        self.blocking(move |store| store.describe(&name)).await
    }

    async fn delete(&self, name: &str) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.blocking(move |store| store.delete(&name)).await
    }

    async fn make_dir(&self, name: &str) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.blocking(move |store| store.make_dir(&name)).await
    }

    async fn delete_dir(&self, name: &str, recursive: bool) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.blocking(move |store| store.delete_dir(&name, recursive))
            .await
    }

    async fn rename(&self, from: &str, to: &str, overwrite: bool) -> Result<(), StoreError> {
        let (from, to) = (from.to_owned(), to.to_owned());
        self.blocking(move |store| store.rename(&from, &to, overwrite))
            .await
    }

    async fn sweep(&self) -> usize {
        self.blocking(|store| Ok(store.partials().sweep()))
            .await
            .unwrap_or(0)
    }

    /// Nothing is left to do: a dropped upload cleans up after itself.
    async fn close(&self) {}
}

impl Upload for LocalUpload {
    type Sink = LocalSink;

    fn offset(&self) -> u64 {
        LocalUpload::offset(self)
    }

    fn hold(&mut self, body: Vec<u8>) {
        LocalUpload::hold(self, body);
    }

    fn sink(self, size: u64, buffers: Vec<Vec<u8>>) -> LocalSink {
        LocalSink::start(self, size, buffers)
    }

    async fn discard(self) {
        LocalUpload::discard(self);
    }

    async fn abandon(self) {
        self.ending();
        // Keeping an upload syncs its file.
        let _ = tokio::task::spawn_blocking(move || drop(self)).await;
    }
}

/// A local file opened for reading.
#[derive(Debug)]
pub struct LocalDownload {
    file: File,
    info: FileInfo,
}

impl Download for LocalDownload {
    type Source = LocalSource;

    fn info(&self) -> &FileInfo {
        &self.info
    }

    fn has_version(&self, version: &FileVersion) -> bool {
        version.size == self.info.size && version.modified_ns == self.info.modified_ns
    }

    async fn read_small(self) -> io::Result<(Vec<u8>, blake3::Hash)> {
        pipeline::read_small(self.file, self.info.size, self.info.hash).await
    }

    fn source(self, offset: u64, buffers: Vec<Vec<u8>>) -> LocalSource {
        LocalSource::start(self.file, self.info.size, offset, self.info.hash, buffers)
    }
}

/// A listing of the local directory in progress: the walk makes a step
/// (on the blocking pool) whenever what the last one found has been
/// handed out, so that it holds a bounded amount of memory however slowly
/// its client reads, and no thread while it waits (see `walk.rs`).
pub struct LocalListing {
    store: Arc<Store>,
    state: ListingState,
    /// Found by the last step, not handed out yet.
    found: VecDeque<Found>,
}

/// How a listing starts: its walk, made by the first step.
type Start = Box<dyn FnOnce(&Store) -> Result<Walk, StoreError> + Send>;

/// Where a listing is.
enum ListingState {
    /// Not started.
    Start(Start),
    /// Walking.
    Walking(Box<Walk>),
    /// Finished, or failed and already said so; or a step was under way
    /// when its future was dropped.
    Over,
}

impl std::fmt::Debug for LocalListing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            ListingState::Start(_) => "start",
            ListingState::Walking(_) => "walking",
            ListingState::Over => "over",
        };
        f.debug_struct("LocalListing")
            .field("state", &state)
            .field("found", &self.found.len())
            .finish()
    }
}

impl Listing for LocalListing {
    async fn next(&mut self) -> Option<Result<Found, StoreError>> {
        loop {
            if let Some(found) = self.found.pop_front() {
                return Some(Ok(found));
            }
            let state = std::mem::replace(&mut self.state, ListingState::Over);
            let walk = match state {
                ListingState::Over => return None,
                ListingState::Walking(walk) if walk.is_done() => return None,
                ListingState::Walking(walk) => Ok(walk),
                ListingState::Start(start) => Err(start),
            };
            let store = Arc::clone(&self.store);
            let stepped = tokio::task::spawn_blocking(move || {
                let mut walk = match walk {
                    Ok(walk) => walk,
                    Err(start) => Box::new(start(&store)?),
                };
                let mut found = Vec::with_capacity(walk::STEP);
                walk.step(&mut found, walk::STEP)?;
                Ok::<_, StoreError>((walk, found))
            })
            .await
            .unwrap_or_else(|e| Err(StoreError::Io(io::Error::other(e))));
            match stepped {
                Ok((walk, found)) => {
                    self.found.extend(found);
                    self.state = ListingState::Walking(walk);
                }
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{BodySink, BodySource, Chunk};

    fn local() -> (tempfile::TempDir, LocalStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(&dir.path().join("root"), Retention::default()).unwrap();
        (dir, store)
    }

    async fn found(mut listing: LocalListing) -> Result<Vec<String>, StoreError> {
        let mut names = Vec::new();
        while let Some(found) = listing.next().await {
            names.push(match found? {
                Found::File(entry) => entry.name,
                Found::Dir(name) => format!("{name}/"),
            });
        }
        Ok(names)
    }

    #[tokio::test]
    async fn a_streamed_upload_is_published_and_read_back_from_an_offset() {
        let (_dir, store) = local();
        let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let upload = store.create_upload("d/f", 300_000, false).await.unwrap();
        let mut sink = upload.sink(300_000, vec![vec![0; 64 * 1024]; 2]);
        for piece in body.chunks(100_000) {
            let mut buf = sink.buffer().await.unwrap();
            buf.clear();
            buf.extend_from_slice(piece);
            let range = 0..buf.len();
            sink.take(Chunk { buf, range }).await.unwrap();
        }
        let end = sink.finish(true).await;
        assert!(end.error.is_none());
        assert_eq!(end.buffers.len(), 2);
        let hash = end.hash.unwrap();
        assert_eq!(hash, blake3::hash(&body));
        store
            .publish(end.upload.unwrap(), "d/f", false, hash)
            .await
            .unwrap();

        let download = store.open_read("d/f").await.unwrap();
        assert_eq!(download.info().size, 300_000);
        let version = FileVersion {
            size: 300_000,
            modified_ns: download.info().modified_ns,
        };
        assert!(download.has_version(&version));
        let mut source = download.source(123_456, vec![vec![0; 64 * 1024]; 2]);
        let mut read = Vec::new();
        while let Some(chunk) = source.next().await {
            read.extend_from_slice(chunk.data());
            source.recycle(chunk.buf);
        }
        let end = source.finish().await;
        assert_eq!(end.hash.unwrap(), hash);
        assert_eq!(read, &body[123_456..]);
    }

    #[tokio::test]
    async fn a_batch_is_stored_in_order_with_a_result_for_each() {
        let (dir, store) = local();
        let small = |name: &str, body: &'static [u8], expected: &[u8]| SmallPut {
            name: name.into(),
            overwrite: false,
            body: bytes::Bytes::from_static(body),
            expected: *blake3::hash(expected).as_bytes(),
        };
        let results = store
            .store_batch(vec![
                small("a", b"one", b"one"),
                small("a", b"two", b"two"),
                small("b", b"three", b"not three"),
                small("../c", b"four", b"four"),
            ])
            .await;
        assert!(matches!(results[0], Ok(hash) if hash == blake3::hash(b"one")));
        assert!(matches!(results[1], Err(StoreError::AlreadyExists)));
        assert!(matches!(results[2], Err(StoreError::Mismatch)));
        assert!(matches!(results[3], Err(StoreError::InvalidName(_))));
        assert_eq!(std::fs::read(dir.path().join("root/a")).unwrap(), b"one");
        assert!(!dir.path().join("root/b").exists());
    }

    #[tokio::test]
    async fn a_batch_is_synced_whole_before_any_of_it_is_published_and_its_directories_after() {
        use store::Step;
        let (_dir, store) = local();
        let small = |name: &str, body: &'static [u8]| SmallPut {
            name: name.into(),
            overwrite: false,
            body: bytes::Bytes::from_static(body),
            expected: *blake3::hash(body).as_bytes(),
        };
        let mut batch: Vec<SmallPut> = (0..20)
            .map(|i| small(&format!("d{}/f{i}", i % 3), b"content"))
            .collect();
        batch.push(small("top", b"top"));
        let mut refused = small("d0/bad", b"body");
        refused.expected = [0; 32];
        batch.push(refused);
        let names: Vec<String> = batch.iter().take(21).map(|p| p.name.clone()).collect();
        let results = store.store_batch(batch).await;
        assert!(results[..21].iter().all(Result::is_ok));
        assert!(matches!(results[21], Err(StoreError::Mismatch)));

        let steps = store.steps();
        let at = |step: &Step| steps.iter().position(|s| s == step).unwrap();
        let first_publish = steps
            .iter()
            .position(|s| matches!(s, Step::Publish(_)))
            .unwrap();
        for name in &names {
            let synced = at(&Step::SyncFile(name.clone()));
            let published = at(&Step::Publish(name.clone()));
            let parent = name.rsplit_once('/').map_or("", |(p, _)| p);
            let dir_synced = at(&Step::SyncDir(parent.to_owned()));
            assert!(synced < first_publish, "{name} was synced after a publish");
            assert!(
                published < dir_synced,
                "{name} was published after its directory was synced"
            );
        }
        // Each directory once, the root included; nothing of the refused one.
        let dirs: Vec<&Step> = steps
            .iter()
            .filter(|s| matches!(s, Step::SyncDir(_)))
            .collect();
        assert_eq!(dirs.len(), 4, "{steps:?}");
        assert_eq!(steps.len(), 21 + 21 + 4, "{steps:?}");
    }

    #[tokio::test]
    async fn a_single_upload_is_synced_then_published_then_its_directories_synced() {
        use store::Step;
        let (_dir, store) = local();
        for name in ["a/b/c", "a/b/d"] {
            let mut upload = store.create_upload(name, 3, false).await.unwrap();
            upload.hold(b"abc".to_vec());
            store
                .publish(upload, name, false, blake3::hash(b"abc"))
                .await
                .unwrap();
        }
        let step = |kind: fn(String) -> Step, name: &str| kind(name.to_owned());
        assert_eq!(
            store.steps(),
            [
                step(Step::SyncFile, "a/b/c"),
                step(Step::Publish, "a/b/c"),
                // The directories created for it, in those that received
                // them, outermost first, then its own.
                step(Step::SyncDir, ""),
                step(Step::SyncDir, "a"),
                step(Step::SyncDir, "a/b"),
                step(Step::SyncFile, "a/b/d"),
                step(Step::Publish, "a/b/d"),
                step(Step::SyncDir, "a/b"),
            ]
        );
    }

    #[tokio::test]
    async fn listings_stream_and_directories_move_and_go() {
        let (_dir, store) = local();
        for name in ["x/a", "x/b/c", "y"] {
            let mut upload = store.create_upload(name, 1, false).await.unwrap();
            upload.hold(b"1".to_vec());
            store
                .publish(upload, name, false, blake3::hash(b"1"))
                .await
                .unwrap();
        }
        assert_eq!(
            found(store.list("x/", false)).await.unwrap(),
            ["x/a", "x/b/c"]
        );
        assert_eq!(
            found(store.list("x", true)).await.unwrap(),
            ["x/", "x/a", "x/b/", "x/b/c"]
        );
        assert_eq!(
            store.describe("x/b").await.unwrap(),
            Found::Dir("x/b".into())
        );
        assert!(matches!(
            store.describe("x/a").await.unwrap(),
            Found::File(Entry { size: 1, .. })
        ));
        assert!(matches!(
            store.describe("x/a/under").await,
            Err(StoreError::NotAFile)
        ));
        assert!(matches!(
            store.describe("x/none").await,
            Err(StoreError::NotFound)
        ));
        assert_eq!(
            found(store.tree("")).await.unwrap(),
            ["x/", "x/a", "x/b/", "x/b/c", "y"]
        );
        assert!(matches!(
            found(store.tree("missing")).await,
            Err(StoreError::NotFound)
        ));

        store.rename("x", "z/x", false).await.unwrap();
        assert!(matches!(
            store.rename("y", "z/x/a", false).await,
            Err(StoreError::AlreadyExists)
        ));
        assert!(matches!(
            store.delete_dir("z/x", false).await,
            Err(StoreError::NotEmpty)
        ));
        store.delete_dir("z/x", true).await.unwrap();
        assert_eq!(found(store.tree("")).await.unwrap(), ["y"]);
        assert_eq!(store.stat("y").await.unwrap().size, 1);
    }
}
