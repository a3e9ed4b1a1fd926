//! Interrupted uploads, kept so that the same client can resume them.
//!
//! An upload whose client sent a resume key is written to
//! `.framekit/partial/<key in hex>` instead of the staging area. If the
//! connection is lost before the upload completes, what was received is
//! synced to disk and recorded in `<key>.meta` (the name, the announced
//! size, how many bytes are kept, when): a later put of the same name and
//! size with the same key continues after those bytes. Nothing in this
//! directory is ever visible under a client's name until it has been
//! received whole and verified, like any other upload.
//!
//! The record on disk is only written once the data it describes is
//! synced, so after a crash a partial upload is at worst shorter than it
//! was (its data is cut back to the recorded length), never longer. Kept
//! uploads expire after a time to live, and their total size is bounded by
//! a quota: keeping one more evicts the oldest first. An index in memory
//! mirrors the directory, so that looking a key up costs no disk access.

use cap_std::fs::{Dir, MetadataExt as _, OpenOptions};
use framekit_transfer::{Hash, validate_name};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt as _;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::{info, warn};

/// Where interrupted uploads are kept, relative to the root.
pub(super) const PARTIAL: &str = ".framekit/partial";

/// The first line of every record.
const HEADER: &str = "framekit partial upload 1";

/// How long interrupted uploads are kept, and how much of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// How long an interrupted upload is kept after it was last interrupted.
    pub ttl: Duration,
    /// The most bytes all kept uploads may hold together.
    pub quota: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            ttl: Duration::from_secs(24 * 60 * 60),
            quota: 64 << 30,
        }
    }
}

/// What is known of a kept upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Record {
    /// The name it is being uploaded as.
    pub name: String,
    /// Its announced size.
    pub size: u64,
    /// The bytes kept: the first `received` bytes of the file.
    pub received: u64,
    /// When the upload started, in milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// When it was last interrupted.
    pub updated_ms: u64,
}

impl Record {
    fn encode(&self) -> String {
        format!(
            "{HEADER}\nname: {}\nsize: {}\nreceived: {}\ncreated_ms: {}\nupdated_ms: {}\n",
            self.name, self.size, self.received, self.created_ms, self.updated_ms
        )
    }

    /// Reads a record back; `None` for anything that is not one exactly.
    fn parse(text: &str) -> Option<Record> {
        let mut lines = text.strip_suffix('\n')?.split('\n');
        if lines.next()? != HEADER {
            return None;
        }
        let mut field = |key: &str| lines.next()?.strip_prefix(key)?.strip_prefix(": ");
        let name = field("name")?.to_owned();
        let size = field("size")?.parse().ok()?;
        let received = field("received")?.parse().ok()?;
        let created_ms = field("created_ms")?.parse().ok()?;
        let updated_ms = field("updated_ms")?.parse().ok()?;
        if lines.next().is_some() || validate_name(&name).is_err() || received > size {
            return None;
        }
        Some(Record {
            name,
            size,
            received,
            created_ms,
            updated_ms,
        })
    }
}

/// The outcome of [`Partials::claim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Claim {
    /// Continue the kept upload after its first `offset` bytes.
    Resume {
        /// Bytes already held.
        offset: u64,
        /// When the upload first started.
        created_ms: u64,
    },
    /// Nothing to continue: start a new resumable upload at 0.
    Fresh,
    /// The upload cannot be kept: another connection is uploading with
    /// this key right now, or the file is larger than the whole quota.
    NotResumable,
}

#[derive(Debug, Default)]
struct State {
    /// Kept uploads, not in progress.
    kept: HashMap<Hash, Record>,
    /// Keys of uploads in progress.
    active: HashSet<Hash>,
}

/// The directory of interrupted uploads and its index.
#[derive(Debug)]
pub(super) struct Partials {
    dir: Dir,
    retention: Retention,
    state: Mutex<State>,
}

/// The file name of a key's data.
pub(super) fn data_name(key: &Hash) -> String {
    blake3::Hash::from_bytes(*key).to_hex().to_string()
}

fn record_name(key: &Hash) -> String {
    format!("{}.meta", data_name(key))
}

fn parse_key(hex: &str) -> Option<Hash> {
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    blake3::Hash::from_hex(hex).ok().map(|h| *h.as_bytes())
}

/// Now, in milliseconds since the Unix epoch.
pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Removes a file, ignoring one that is already gone.
fn remove(dir: &Dir, name: &str) {
    match dir.remove_file(name) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => warn!(error = %e, file = name, "cannot remove a partial upload"),
    }
}

impl Partials {
    /// Opens the directory of kept uploads under `root` (creating it),
    /// and keeps only what is complete, consistent and not expired: each
    /// record with its data, cut back to the recorded length.
    pub(super) fn open(root: &Dir, retention: Retention) -> io::Result<Partials> {
        root.create_dir_all(PARTIAL)?;
        let dir = root.open_dir(PARTIAL)?;
        let now = now_ms();
        let ttl = u64::try_from(retention.ttl.as_millis()).unwrap_or(u64::MAX);
        let mut kept = HashMap::new();
        for entry in dir.entries()? {
            let entry = entry?;
            let Ok(file_name) = entry.file_name().into_string() else {
                continue;
            };
            let Some(key) = file_name.strip_suffix(".meta").and_then(parse_key) else {
                continue;
            };
            let usable = (|| -> io::Result<Option<Record>> {
                let Some(record) = Record::parse(&dir.read_to_string(&file_name)?) else {
                    return Ok(None);
                };
                if record.received == 0 || now.saturating_sub(record.updated_ms) > ttl {
                    return Ok(None);
                }
                let data = dir.open_with(data_name(&key), OpenOptions::new().write(true))?;
                let meta = data.metadata()?;
                // A second link would be a published file: never write to it.
                if !meta.is_file() || meta.nlink() != 1 || meta.len() < record.received {
                    return Ok(None);
                }
                // Bytes past the record were never confirmed on disk.
                data.set_len(record.received)?;
                Ok(Some(record))
            })();
            match usable {
                Ok(Some(record)) => {
                    kept.insert(key, record);
                }
                Ok(None) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        // Everything else goes: data without a record, stale records,
        // records being written when the server stopped.
        for entry in dir.entries()? {
            let entry = entry?;
            let file_name = entry.file_name();
            let name = file_name.to_string_lossy();
            let stem = name.strip_suffix(".meta").unwrap_or(&name);
            let wanted = parse_key(stem).is_some_and(|key| kept.contains_key(&key));
            if !wanted {
                if entry.file_type()?.is_dir() {
                    dir.remove_dir_all(&file_name)?;
                } else {
                    dir.remove_file(&file_name)?;
                }
            }
        }
        let partials = Partials {
            dir,
            retention,
            state: Mutex::new(State {
                kept,
                active: HashSet::new(),
            }),
        };
        partials.evict_beyond_quota(&mut partials.lock(), false);
        let kept = partials.lock().kept.len();
        if kept > 0 {
            info!(kept, "interrupted uploads kept for resuming");
        }
        Ok(partials)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The directory the data files are in.
    pub(super) fn dir(&self) -> &Dir {
        &self.dir
    }

    /// The kept uploads, by key.
    #[cfg(test)]
    pub(super) fn kept(&self) -> Vec<(Hash, Record)> {
        let state = self.lock();
        state.kept.iter().map(|(k, r)| (*k, r.clone())).collect()
    }

    fn expired(&self, record: &Record, now: u64) -> bool {
        let ttl = u64::try_from(self.retention.ttl.as_millis()).unwrap_or(u64::MAX);
        now.saturating_sub(record.updated_ms) > ttl
    }

    /// Claims `key` for an upload of `size` bytes as `name`: the upload
    /// continues the kept one if it has the same name and size and is not
    /// expired (an expired one is dropped). An upload kept under this key
    /// for another name or size is left alone, and this upload cannot be
    /// kept: the key is not its own.
    pub(super) fn claim(&self, key: &Hash, name: &str, size: u64) -> Claim {
        if size > self.retention.quota {
            return Claim::NotResumable;
        }
        let mut state = self.lock();
        if state.active.contains(key) {
            return Claim::NotResumable;
        }
        let claim = match state.kept.remove(key) {
            Some(record) if record.name == name && record.size == size => {
                if self.expired(&record, now_ms()) {
                    self.remove_files(key);
                    Claim::Fresh
                } else {
                    Claim::Resume {
                        offset: record.received,
                        created_ms: record.created_ms,
                    }
                }
            }
            Some(record) => {
                state.kept.insert(*key, record);
                return Claim::NotResumable;
            }
            None => Claim::Fresh,
        };
        state.active.insert(*key);
        claim
    }

    /// Opens the data file of a claimed key: the kept one, cut to `offset`
    /// bytes, or a new empty one. Returns the file and the offset it
    /// really has (0 if the kept data went missing).
    pub(super) fn open_data(&self, key: &Hash, offset: u64) -> io::Result<(File, u64)> {
        let name = data_name(key);
        if offset > 0 {
            match self
                .dir
                .open_with(&name, OpenOptions::new().read(true).write(true))
            {
                Ok(file) => {
                    let mut file = file.into_std();
                    let meta = file.metadata()?;
                    if meta.is_file() && meta.nlink() == 1 && meta.len() >= offset {
                        file.set_len(offset)?;
                        // The body is appended after what is kept.
                        file.seek(SeekFrom::Start(offset))?;
                        return Ok((file, offset));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        // A fresh start: the old record must not describe the new data, and
        // the old data may not be written to (it might be linked elsewhere).
        remove(&self.dir, &record_name(key));
        remove(&self.dir, &name);
        let file = self.dir.open_with(
            &name,
            OpenOptions::new().read(true).write(true).create_new(true),
        )?;
        Ok((file.into_std(), 0))
    }

    /// Keeps the first `received` bytes of a claimed upload, whose data is
    /// in `file` (`None` if already synced and closed), for a later resume.
    /// Keeps nothing if `received` is 0.
    pub(super) fn keep(&self, key: &Hash, file: Option<&File>, mut record: Record) {
        if record.received == 0 {
            self.discard(key);
            return;
        }
        let stored = (|| -> io::Result<()> {
            if let Some(file) = file {
                file.set_len(record.received)?;
                file.sync_all()?;
            }
            record.updated_ms = now_ms();
            let temp = format!("{}.new", record_name(key));
            let mut out = self.dir.open_with(
                &temp,
                OpenOptions::new().write(true).create(true).truncate(true),
            )?;
            out.write_all(record.encode().as_bytes())?;
            out.sync_all()?;
            self.dir.rename(&temp, &self.dir, record_name(key))?;
            // Best effort: the record is complete either way.
            if let Ok(dir) = self.dir.open(".") {
                let _ = dir.sync_all();
            }
            Ok(())
        })();
        if let Err(e) = stored {
            warn!(error = %e, "cannot keep an interrupted upload");
            self.discard(key);
            return;
        }
        info!(
            name = %record.name.escape_debug(),
            received = record.received,
            size = record.size,
            "interrupted upload kept for resuming"
        );
        let mut state = self.lock();
        state.active.remove(key);
        // One kept upload per name: an older one is for older content.
        let same_name: Vec<Hash> = state
            .kept
            .iter()
            .filter(|(_, r)| r.name == record.name)
            .map(|(k, _)| *k)
            .collect();
        for other in same_name {
            state.kept.remove(&other);
            self.remove_files(&other);
        }
        state.kept.insert(*key, record);
        self.evict_beyond_quota(&mut state, true);
    }

    /// Removes the oldest kept uploads until they fit the quota, sparing
    /// the newest one if `spare_newest` (it was just kept, and a file over
    /// the quota is never kept).
    fn evict_beyond_quota(&self, state: &mut State, spare_newest: bool) {
        let mut total: u64 = state.kept.values().map(|r| r.received).sum();
        if total <= self.retention.quota {
            return;
        }
        let mut by_age: Vec<(u64, Hash, u64)> = state
            .kept
            .iter()
            .map(|(k, r)| (r.updated_ms, *k, r.received))
            .collect();
        by_age.sort_unstable();
        let newest = by_age.last().map(|(_, k, _)| *k);
        for (_, key, received) in by_age {
            if total <= self.retention.quota {
                break;
            }
            if spare_newest && Some(key) == newest {
                continue;
            }
            state.kept.remove(&key);
            self.remove_files(&key);
            total -= received;
            info!(
                bytes = received,
                "partial upload evicted by the staging quota"
            );
        }
    }

    /// Forgets a claimed upload and removes its files.
    pub(super) fn discard(&self, key: &Hash) {
        self.remove_files(key);
        let mut state = self.lock();
        state.active.remove(key);
        state.kept.remove(key);
    }

    /// A claimed upload was published (its data file renamed away): its
    /// record goes.
    pub(super) fn published(&self, key: &Hash) {
        self.remove_files(key);
        self.lock().active.remove(key);
    }

    /// Drops kept uploads of `name`, which was just published: they were
    /// for an older content.
    pub(super) fn forget_name(&self, name: &str) {
        let mut state = self.lock();
        let stale: Vec<Hash> = state
            .kept
            .iter()
            .filter(|(_, r)| r.name == name)
            .map(|(k, _)| *k)
            .collect();
        for key in stale {
            state.kept.remove(&key);
            self.remove_files(&key);
        }
    }

    /// Removes the kept uploads whose time to live is over; returns how
    /// many.
    pub(super) fn sweep(&self) -> usize {
        let now = now_ms();
        let mut state = self.lock();
        let expired: Vec<Hash> = state
            .kept
            .iter()
            .filter(|(_, r)| self.expired(r, now))
            .map(|(k, _)| *k)
            .collect();
        for key in &expired {
            state.kept.remove(key);
            self.remove_files(key);
        }
        expired.len()
    }

    fn remove_files(&self, key: &Hash) {
        remove(&self.dir, &record_name(key));
        remove(&self.dir, &data_name(key));
    }
}
