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
//! was (its data is cut back to the recorded length), never longer. An
//! index in memory mirrors the directory, so that looking a key up costs no
//! disk access.
//!
//! What this directory may hold is bounded by the staging quota: the bytes
//! kept, plus the whole announced size of every resumable upload in
//! progress (which is what it may come to hold). An upload that does not
//! fit, even once the oldest kept uploads are dropped, goes to the staging
//! area as an ordinary upload and is not kept if interrupted. Kept uploads
//! also go when they expire, when their name is published (whichever of
//! the publish and the keeping comes second sees the first), and, oldest
//! first, when the disk needs room for an upload (see `space.rs`). Every
//! drop is logged with its reason.

use cap_std::fs::{Dir, MetadataExt as _, OpenOptions};
use framekit_transfer::{Hash, validate_name};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt as _;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::{info, warn};

/// Where interrupted uploads are kept, relative to the root.
pub(super) const PARTIAL: &str = ".framekit/partial";

/// The first line of every record.
const HEADER: &str = "framekit partial upload 1";

/// How long a put waits for another upload with its key to end, while
/// that upload is still receiving: long enough for the server to notice
/// that its client reconnected because the connection broke.
const WAIT_FOR_RECEIVING: Duration = Duration::from_secs(2);

/// How long a put waits for another upload with its key that is ending
/// (its connection broke, what it received is being synced and kept).
const WAIT_FOR_ENDING: Duration = Duration::from_secs(30);

/// How long interrupted uploads are kept, and how much of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// How long an interrupted upload is kept after it was last interrupted.
    pub ttl: Duration,
    /// The staging quota: the most bytes kept uploads, and resumable
    /// uploads in progress at their announced size, may take together.
    /// `None`: a quarter of the space available to uploads when the
    /// server starts (counting what kept uploads already hold).
    pub quota: Option<u64>,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            ttl: Duration::from_secs(24 * 60 * 60),
            quota: None,
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
    /// this key right now, or the file does not fit the staging quota.
    NotResumable,
}

/// A resumable upload in progress.
#[derive(Debug)]
struct Active {
    name: String,
    size: u64,
    /// Its connection broke: what it received is being kept.
    ending: bool,
    /// A put of its name was published since it started: it is not kept.
    superseded: bool,
}

#[derive(Debug, Default)]
struct State {
    /// Kept uploads, not in progress.
    kept: HashMap<Hash, Record>,
    /// Resumable uploads in progress.
    active: HashMap<Hash, Active>,
}

impl State {
    /// What the quota counts: bytes kept, and the announced size of every
    /// resumable upload in progress.
    fn claimed(&self) -> u64 {
        let kept: u64 = self.kept.values().map(|r| r.received).sum();
        let active: u64 = self.active.values().map(|a| a.size).sum();
        kept.saturating_add(active)
    }

    /// The oldest kept upload, but `spare`.
    fn oldest(&self, spare: Option<&Hash>) -> Option<Hash> {
        self.kept
            .iter()
            .filter(|(key, _)| Some(*key) != spare)
            .min_by_key(|(key, record)| (record.updated_ms, **key))
            .map(|(key, _)| *key)
    }
}

/// Why a kept upload is dropped, for the log.
#[derive(Debug, Clone, Copy)]
pub(super) enum Dropped {
    /// Its time to live is over.
    Expired,
    /// A put of its name was published.
    Superseded,
    /// A newer interrupted upload of the same name was kept.
    Replaced,
    /// To make room in the staging quota.
    Quota,
    /// To keep the disk's free space above the minimum.
    MinFree,
}

impl Dropped {
    fn reason(self) -> &'static str {
        match self {
            Dropped::Expired => "its time to live is over",
            Dropped::Superseded => "a put of its name was published",
            Dropped::Replaced => "a newer interrupted upload of its name was kept",
            Dropped::Quota => "to make room in the staging quota",
            Dropped::MinFree => "to keep the disk's free space above --min-free",
        }
    }
}

/// The directory of interrupted uploads and its index.
#[derive(Debug)]
pub(super) struct Partials {
    dir: Dir,
    ttl: Duration,
    /// The staging quota in bytes.
    quota: u64,
    state: Mutex<State>,
    /// Signalled when a resumable upload stops being in progress.
    ended: Condvar,
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
    /// record with its data, cut back to the recorded length. `available`
    /// is the space available to uploads on the disk now, from which the
    /// quota is derived if `retention` does not give one.
    pub(super) fn open(root: &Dir, retention: Retention, available: u64) -> io::Result<Partials> {
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
        let held: u64 = kept.values().map(|r: &Record| r.received).sum();
        let quota = retention
            .quota
            .unwrap_or_else(|| available.saturating_add(held) / 4);
        let partials = Partials {
            dir,
            ttl: retention.ttl,
            quota,
            state: Mutex::new(State {
                kept,
                active: HashMap::new(),
            }),
            ended: Condvar::new(),
        };
        {
            let mut state = partials.lock();
            while state.claimed() > quota {
                let Some(oldest) = state.oldest(None) else {
                    break;
                };
                partials.drop_kept(&mut state, &oldest, Dropped::Quota);
            }
        }
        let kept = partials.lock().kept.len();
        info!(
            kept,
            quota,
            derived = retention.quota.is_none(),
            "interrupted uploads kept for resuming"
        );
        Ok(partials)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The directory the data files are in.
    pub(super) fn dir(&self) -> &Dir {
        &self.dir
    }

    /// The bytes kept under `key` for an upload of `size` bytes as
    /// `name`, which a put of the same would not send again.
    pub(super) fn kept_for(&self, key: &Hash, name: &str, size: u64) -> u64 {
        match self.lock().kept.get(key) {
            Some(record) if record.name == name && record.size == size => record.received,
            _ => 0,
        }
    }

    /// The kept uploads, by key.
    #[cfg(test)]
    pub(super) fn kept(&self) -> Vec<(Hash, Record)> {
        let state = self.lock();
        state.kept.iter().map(|(k, r)| (*k, r.clone())).collect()
    }

    fn expired(&self, record: &Record, now: u64) -> bool {
        let ttl = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        now.saturating_sub(record.updated_ms) > ttl
    }

    /// Waits while another upload with `key` is in progress: for a short
    /// while if it is still receiving (its connection may have broken
    /// without the server noticing yet), longer if it is being kept.
    /// Returns the state, and whether the key is free.
    fn wait_for<'a>(
        &self,
        mut state: MutexGuard<'a, State>,
        key: &Hash,
    ) -> (MutexGuard<'a, State>, bool) {
        let started = Instant::now();
        loop {
            let limit = match state.active.get(key) {
                None => return (state, true),
                Some(active) if active.ending => WAIT_FOR_ENDING,
                Some(_) => WAIT_FOR_RECEIVING,
            };
            let Some(left) = limit
                .checked_sub(started.elapsed())
                .filter(|d| !d.is_zero())
            else {
                return (state, false);
            };
            state = match self.ended.wait_timeout(state, left) {
                Ok((state, _)) => state,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    /// Claims `key` for an upload of `size` bytes as `name`: the upload
    /// continues the kept one if it has the same name and size and is not
    /// expired (an expired one is dropped). An upload kept under this key
    /// for another name or size is left alone, and this upload cannot be
    /// kept: the key is not its own. If another upload with this key is in
    /// progress, waits a little for it to end (see [`Partials::wait_for`]).
    /// The upload is resumable only if its whole size fits the quota, once
    /// the oldest kept uploads are dropped if need be.
    pub(super) fn claim(&self, key: &Hash, name: &str, size: u64) -> Claim {
        if size > self.quota {
            return Claim::NotResumable;
        }
        let (mut state, free) = self.wait_for(self.lock(), key);
        if !free {
            return Claim::NotResumable;
        }
        let (claim, taken) = match state.kept.remove(key) {
            Some(record) if record.name == name && record.size == size => {
                if self.expired(&record, now_ms()) {
                    self.log_drop(&record, Dropped::Expired);
                    self.remove_files(key);
                    (Claim::Fresh, None)
                } else {
                    let claim = Claim::Resume {
                        offset: record.received,
                        created_ms: record.created_ms,
                    };
                    (claim, Some(record))
                }
            }
            Some(record) => {
                state.kept.insert(*key, record);
                return Claim::NotResumable;
            }
            None => (Claim::Fresh, None),
        };
        // Kept uploads are dropped only if that makes room: all of them
        // but this key's may go, and the uploads in progress stay.
        let freeable: u64 = state
            .kept
            .iter()
            .filter(|(kept, _)| *kept != key)
            .map(|(_, record)| record.received)
            .sum();
        let fits = state
            .claimed()
            .saturating_sub(freeable)
            .saturating_add(size)
            <= self.quota;
        while fits && state.claimed().saturating_add(size) > self.quota {
            let Some(oldest) = state.oldest(Some(key)) else {
                break;
            };
            self.drop_kept(&mut state, &oldest, Dropped::Quota);
        }
        if !fits || state.claimed().saturating_add(size) > self.quota {
            // What was kept under this key stays for a later attempt.
            if let Some(record) = taken {
                state.kept.insert(*key, record);
            }
            return Claim::NotResumable;
        }
        state.active.insert(
            *key,
            Active {
                name: name.to_owned(),
                size,
                ending: false,
                superseded: false,
            },
        );
        claim
    }

    /// The connection of the upload claimed under `key` broke: what it
    /// received is about to be kept, and a put with its key waits for that.
    pub(super) fn ending(&self, key: &Hash) {
        if let Some(active) = self.lock().active.get_mut(key) {
            active.ending = true;
        }
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
    /// Keeps nothing if `received` is 0, or if a put of its name was
    /// published while it was in progress.
    pub(super) fn keep(&self, key: &Hash, file: Option<&File>, mut record: Record) {
        if record.received == 0 {
            self.discard(key, "nothing was received");
            return;
        }
        if self.lock().active.get(key).is_some_and(|a| a.superseded) {
            self.discard(key, Dropped::Superseded.reason());
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
            self.discard(key, "it could not be stored");
            return;
        }
        let mut state = self.lock();
        // Decided under the lock that publishing takes too: a publish that
        // came first marked it, one that comes later finds it kept.
        let superseded = state.active.remove(key).is_some_and(|a| a.superseded);
        self.ended.notify_all();
        if superseded {
            self.log_drop(&record, Dropped::Superseded);
            self.remove_files(key);
            return;
        }
        info!(
            name = %record.name.escape_debug(),
            received = record.received,
            size = record.size,
            "interrupted upload kept for resuming"
        );
        // One kept upload per name: an older one is for older content.
        let same_name: Vec<Hash> = state
            .kept
            .iter()
            .filter(|(_, r)| r.name == record.name)
            .map(|(k, _)| *k)
            .collect();
        for other in same_name {
            self.drop_kept(&mut state, &other, Dropped::Replaced);
        }
        state.kept.insert(*key, record);
    }

    /// Drops the kept upload `key` and says why.
    fn drop_kept(&self, state: &mut State, key: &Hash, why: Dropped) {
        if let Some(record) = state.kept.remove(key) {
            self.log_drop(&record, why);
            self.remove_files(key);
        }
    }

    fn log_drop(&self, record: &Record, why: Dropped) {
        info!(
            name = %record.name.escape_debug(),
            bytes = record.received,
            reason = why.reason(),
            "kept upload dropped"
        );
    }

    /// The bytes all kept uploads but `spare` hold.
    pub(super) fn kept_bytes(&self, spare: Option<&Hash>) -> u64 {
        self.lock()
            .kept
            .iter()
            .filter(|(key, _)| Some(*key) != spare)
            .map(|(_, record)| record.received)
            .sum()
    }

    /// Drops the oldest kept upload but `spare` to make room on the disk;
    /// returns how many bytes that freed, or `None` if nothing else is
    /// kept.
    pub(super) fn drop_oldest(&self, why: Dropped, spare: Option<&Hash>) -> Option<u64> {
        let mut state = self.lock();
        let oldest = state.oldest(spare)?;
        let bytes = state.kept.get(&oldest).map_or(0, |r| r.received);
        self.drop_kept(&mut state, &oldest, why);
        Some(bytes)
    }

    /// Forgets a claimed upload and removes its files; `why` is logged
    /// unless it received nothing.
    pub(super) fn discard(&self, key: &Hash, why: &str) {
        self.remove_files(key);
        let mut state = self.lock();
        if let Some(active) = state.active.remove(key) {
            info!(
                name = %active.name.escape_debug(),
                reason = why,
                "interrupted upload not kept"
            );
        }
        state.kept.remove(key);
        self.ended.notify_all();
    }

    /// A claimed upload was published (its data file renamed away): its
    /// record goes.
    pub(super) fn published(&self, key: &Hash) {
        self.remove_files(key);
        self.lock().active.remove(key);
        self.ended.notify_all();
    }

    /// `name` was just published: kept uploads of it were for an older
    /// content, and so are resumable uploads of it in progress, which will
    /// not be kept.
    pub(super) fn forget_name(&self, name: &str) {
        let mut state = self.lock();
        let stale: Vec<Hash> = state
            .kept
            .iter()
            .filter(|(_, r)| r.name == name)
            .map(|(k, _)| *k)
            .collect();
        for key in stale {
            self.drop_kept(&mut state, &key, Dropped::Superseded);
        }
        for active in state.active.values_mut() {
            if active.name == name {
                active.superseded = true;
            }
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
            self.drop_kept(&mut state, key, Dropped::Expired);
        }
        expired.len()
    }

    fn remove_files(&self, key: &Hash) {
        remove(&self.dir, &record_name(key));
        remove(&self.dir, &data_name(key));
    }
}
