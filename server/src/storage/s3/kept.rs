//! What the server keeps in the bucket about uploads: the state of each
//! resumable upload, the hashes of files published by multipart uploads,
//! and the sweep of what interrupted uploads leave behind.
//!
//! The state of a resumable upload of `NAME` with the resume key `KEY` is
//! the small JSON object `.framekit/kept/<BLAKE3 of NAME>/<KEY>`: the size,
//! the multipart upload's id, and for each part stored so far its ETag and
//! BLAKE3 chaining value. It is written when the upload starts, after each
//! part (and at least every [`HEARTBEAT`] while the body comes), and when
//! the upload is interrupted, so whichever server the client comes back
//! to continues after the last part stored, and verifies the whole file
//! without reading those parts back. Only whole parts are kept: a resumed
//! upload starts at a multiple of the part size.
//!
//! One upload per name is kept, as on a local disk: keeping or publishing
//! a name drops the other uploads kept for it, except those in progress
//! (on another server: its state says so and changed in the last
//! [`LIVE_MS`]). An upload in progress when its name is published is not
//! kept when it is interrupted afterwards: its state records the ETag of
//! the file the name held when it started, and a file of another ETag
//! there means a publish came between (checked when it is kept, and when
//! it is resumed). Every upload dropped or not kept is logged with the
//! reason. Kept uploads expire after `--partial-ttl` without progress,
//! and all of them together hold at most `--staging-quota` bytes (the
//! oldest go first). The sweep also aborts multipart uploads under the
//! prefix that were started more than `--partial-ttl` ago and that no
//! state names (left by a server killed before it wrote one, or uploads
//! without a resume key whose server died): `--partial-ttl` must exceed
//! the longest upload.

use super::keys::Private;
use super::parts::{part_count, part_len, part_size};
use super::{Inner, failure, now_ms, rfc3339_seconds};
use crate::storage::StoreError;
use blake3::hazmat::ChainingValue;
use bytes::Bytes;
use framekit_transfer::{Hash, validate_name};
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tracing::{info, warn};

/// The state of a resumable upload.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(super) struct KeptState {
    /// Always 1.
    pub(super) version: u32,
    pub(super) name: String,
    /// The client's resume key, in hex.
    pub(super) key: String,
    pub(super) size: u64,
    pub(super) part_size: u64,
    pub(super) upload_id: String,
    /// The token in the metadata of the object it will publish.
    pub(super) token: String,
    pub(super) created_ms: u64,
    /// When it last made progress or was interrupted.
    pub(super) updated_ms: u64,
    /// Whether a server is receiving its body (false once interrupted).
    pub(super) in_progress: bool,
    /// The ETag of the file at the name when the upload started, if there
    /// was one: a file of another ETag there later was published since,
    /// and the upload is for older content.
    #[serde(default)]
    pub(super) replaces: Option<String>,
    /// The parts stored, from the first.
    pub(super) parts: Vec<KeptPart>,
}

/// A part stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(super) struct KeptPart {
    pub(super) etag: String,
    /// Its BLAKE3 chaining value, in hex.
    pub(super) cv: String,
}

impl KeptState {
    /// The bytes its parts hold.
    pub(super) fn received(&self) -> u64 {
        (0..self.parts.len() as u64)
            .map(|i| part_len(self.size, self.part_size, i))
            .sum()
    }

    /// The chaining values of its parts, if they all read back.
    pub(super) fn cvs(&self) -> Option<Vec<ChainingValue>> {
        self.parts
            .iter()
            .map(|part| blake3::Hash::from_hex(&part.cv).ok().map(|h| *h.as_bytes()))
            .collect()
    }

    /// Whether it is a state this server wrote for `name`, consistent.
    fn valid(&self, name: &str) -> bool {
        self.version == 1
            && self.name == name
            && self.part_size == part_size(self.size)
            && self.size > self.part_size
            && (self.parts.len() as u64) <= part_count(self.size, self.part_size)
            && !self.upload_id.is_empty()
            && self.cvs().is_some()
    }
}

/// How long an upload counts as in progress, somewhere, after its state
/// last changed: three times [`HEARTBEAT`].
pub(super) const LIVE_MS: u64 = 90_000;

/// How often an upload in progress writes its state, even without a new
/// part, so that other servers see it is alive.
pub(super) const HEARTBEAT: Duration = Duration::from_secs(30);

/// How long a put waits for an upload of its name and key in progress
/// here to end, while that upload still receives: long enough for the
/// server to notice that its client reconnected because the connection
/// broke (as on a local root).
const WAIT_FOR_RECEIVING: Duration = Duration::from_secs(2);

/// How long a put waits for an upload of its name and key in progress
/// here that is ending (what it stored is being kept).
const WAIT_FOR_ENDING: Duration = Duration::from_secs(30);

/// Why a kept upload is dropped, or an interrupted one is not kept: the
/// reasons the log gives, in the words of the local store's.
pub(super) mod why {
    pub(in crate::storage::s3) const EXPIRED: &str = "its time to live is over";
    pub(in crate::storage::s3) const SUPERSEDED: &str = "a put of its name was published";
    pub(in crate::storage::s3) const REPLACED: &str =
        "a newer interrupted upload of its name was kept";
    pub(in crate::storage::s3) const QUOTA: &str = "to make room in the staging quota";
    pub(in crate::storage::s3) const PUBLISH_FAILED: &str = "its publish failed";
    pub(in crate::storage::s3) const FAILED: &str = "the upload failed";
    pub(in crate::storage::s3) const NO_PART: &str = "no whole part was stored";
}

/// Whether the file at a name, of ETag `now` (`None`: no file), was
/// published over the one of ETag `replaced` an upload started on.
pub(super) fn published_over(replaced: Option<&str>, now: Option<&str>) -> bool {
    let bare = |etag: &str| etag.trim_matches('"').to_owned();
    now.is_some_and(|now| Some(bare(now)) != replaced.map(bare))
}

/// A resume key in hex.
pub(super) fn key_hex(key: &Hash) -> String {
    blake3::Hash::from_bytes(*key).to_hex().to_string()
}

async fn get_json<T: for<'de> Deserialize<'de>>(
    inner: &Inner,
    path: &Path,
) -> Result<Option<T>, StoreError> {
    // Through the reader: a small GET on a reused connection waits for a
    // delayed ACK on Garage (see `config::clients`).
    match inner.reader.get(path).await {
        Ok(result) => {
            let bytes = result.bytes().await.map_err(failure)?;
            Ok(serde_json::from_slice(&bytes).ok())
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(failure(e)),
    }
}

async fn put_json<T: Serialize>(inner: &Inner, path: &Path, value: &T) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(value).map_err(failure)?;
    inner
        .store
        .put(path, PutPayload::from(Bytes::from(bytes)))
        .await
        .map(drop)
        .map_err(failure)
}

/// The state kept for `name` under `key` (hex), if there is one this
/// server can use.
pub(super) async fn load(
    inner: &Inner,
    name: &str,
    key: &str,
) -> Result<Option<KeptState>, StoreError> {
    let state: Option<KeptState> = get_json(inner, &inner.keys.kept(name, key)).await?;
    Ok(state.filter(|s| s.valid(name) && s.key == key))
}

/// The states kept for `name`, whatever their keys.
async fn states_of(inner: &Inner, name: &str) -> Result<Vec<KeptState>, StoreError> {
    let page = inner
        .raw
        .list_page(&inner.keys.kept_dir(name), None, None, 1000)
        .await
        .map_err(failure)?;
    let mut states = Vec::new();
    for listed in page.keys {
        let Ok(path) = Path::parse(&listed.key) else {
            continue;
        };
        if let Some(state) = get_json::<KeptState>(inner, &path).await?
            && state.valid(name)
        {
            states.push(state);
        }
    }
    Ok(states)
}

/// Writes the state of an upload.
pub(super) async fn save(inner: &Inner, state: &KeptState) -> Result<(), StoreError> {
    put_json(inner, &inner.keys.kept(&state.name, &state.key), state).await
}

/// Removes the state kept for `name` under `key` (not its upload).
pub(super) async fn delete_state(inner: &Inner, name: &str, key: &str) {
    if let Err(e) = inner.store.delete(&inner.keys.kept(name, key)).await {
        warn!(error = %e, "cannot remove the state of a kept upload");
    }
}

/// Aborts a multipart upload of the object `key`, whatever its key.
pub(super) async fn abort(inner: &Inner, key: &str, upload_id: &str) {
    let aborted = inner
        .raw
        .send(
            http::Method::DELETE,
            key,
            &[("uploadId", upload_id)],
            &[],
            Bytes::new(),
            true,
        )
        .await;
    match aborted {
        Ok(_) => {}
        Err(e) if e.status() == Some(http::StatusCode::NOT_FOUND) => {}
        Err(e) => warn!(error = %e, "cannot abort a multipart upload"),
    }
}

/// Drops a kept upload: aborts it, removes its state, and says why.
async fn drop_kept(inner: &Inner, state: &KeptState, why: &str) {
    abort(inner, &inner.keys.file(&state.name), &state.upload_id).await;
    delete_state(inner, &state.name, &state.key).await;
    info!(
        name = %state.name.escape_debug(),
        bytes = state.received(),
        reason = why,
        "kept upload dropped"
    );
}

/// Whether this process is uploading it now (or keeping it).
fn active(inner: &Inner, state: &KeptState) -> bool {
    inner
        .active()
        .kept
        .contains_key(&(state.name.clone(), state.key.clone()))
}

/// Whether this process, or (by its recent progress) another server, is
/// receiving it now. One this process is keeping is not: a publish of its
/// name that comes while it is kept drops it, as one that came before
/// stops it from being kept (see `S3Upload::abandon`).
fn live(inner: &Inner, state: &KeptState) -> bool {
    let here = inner
        .active()
        .kept
        .get(&(state.name.clone(), state.key.clone()))
        .copied();
    match here {
        Some(ending) => !ending,
        None => state.in_progress && now_ms().saturating_sub(state.updated_ms) < LIVE_MS,
    }
}

/// What a resumable upload may do with what is kept for it.
#[derive(Debug)]
pub(super) enum Claim {
    /// Continue this kept upload.
    Resume(KeptState),
    /// Start a new one, kept if interrupted.
    Fresh,
    /// Start one that is not kept: an upload of the name with this key is
    /// in progress here already, what is kept under this key is for
    /// another size, or the file is larger than the whole quota.
    NotResumable,
}

/// Claims the resumable upload of `size` bytes as `name` with `key` (see
/// [`Claim`]), the file at the name being of ETag `current` (`None`: no
/// file) now. Unless it is [`Claim::NotResumable`], the name and key are
/// this upload's in this process until [`release`]d. An upload kept under
/// them that expired, or whose name was published since it started, is
/// dropped. If an upload of the name and key is in progress here, waits
/// a little for it to end first (see [`wait_to_claim`]).
pub(super) async fn claim(
    inner: &Inner,
    key: &Hash,
    name: &str,
    size: u64,
    current: Option<&str>,
) -> Result<Claim, StoreError> {
    let key = key_hex(key);
    if size > inner.quota {
        return Ok(Claim::NotResumable);
    }
    if !wait_to_claim(inner, name, &key).await {
        return Ok(Claim::NotResumable);
    }
    let state = match load(inner, name, &key).await {
        Ok(state) => state,
        Err(e) => {
            release(inner, name, &key);
            return Err(e);
        }
    };
    let ttl = u64::try_from(inner.retention.ttl.as_millis()).unwrap_or(u64::MAX);
    Ok(match state {
        Some(state) if state.size == size => {
            if now_ms().saturating_sub(state.updated_ms) > ttl {
                drop_kept(inner, &state, why::EXPIRED).await;
                Claim::Fresh
            } else if published_over(state.replaces.as_deref(), current) {
                drop_kept(inner, &state, why::SUPERSEDED).await;
                Claim::Fresh
            } else {
                Claim::Resume(state)
            }
        }
        Some(_) => {
            release(inner, name, &key);
            Claim::NotResumable
        }
        None => Claim::Fresh,
    })
}

/// Waits while an upload of `name` with `key` is in progress here: up to
/// [`WAIT_FOR_ENDING`] while what it stored is being kept, up to
/// [`WAIT_FOR_RECEIVING`] while it still receives (its connection may have
/// broken without the server noticing yet). Claims the name and key once
/// they are free; `false` if they are not by then.
async fn wait_to_claim(inner: &Inner, name: &str, key: &str) -> bool {
    let started = tokio::time::Instant::now();
    let id = (name.to_owned(), key.to_owned());
    loop {
        // Listening before looking: an end between the two still wakes.
        let ended = inner.ended.notified();
        tokio::pin!(ended);
        ended.as_mut().enable();
        let limit = {
            let mut active = inner.active();
            match active.kept.get(&id) {
                None => {
                    active.kept.insert(id, false);
                    return true;
                }
                Some(true) => WAIT_FOR_ENDING,
                Some(false) => WAIT_FOR_RECEIVING,
            }
        };
        let Some(left) = limit
            .checked_sub(started.elapsed())
            .filter(|left| !left.is_zero())
        else {
            return false;
        };
        let _ = tokio::time::timeout(left, ended).await;
    }
}

/// The upload of `name` with `key` in progress here is ending: its
/// connection broke, and what it stored is about to be kept.
pub(super) fn ending(inner: &Inner, name: &str, key: &str) {
    if let Some(ending) = inner
        .active()
        .kept
        .get_mut(&(name.to_owned(), key.to_owned()))
    {
        *ending = true;
    }
}

/// Gives up this process's claim on `name` with `key`.
pub(super) fn release(inner: &Inner, name: &str, key: &str) {
    inner
        .active()
        .kept
        .remove(&(name.to_owned(), key.to_owned()));
    inner.ended.notify_waiters();
}

/// Whether anything is kept at all (a check worth one request before
/// looking for the kept uploads of many names).
pub(super) async fn any(inner: &Inner) -> bool {
    inner
        .raw
        .list_page(&inner.keys.private_dir(Private::Kept), None, None, 1)
        .await
        .map_or(true, |page| !page.keys.is_empty())
}

/// Drops the uploads kept for `name` but the one under `except` (hex),
/// when `name` was just published or another upload of it kept (`why`
/// says which): they were for an older content. Those in progress (see
/// [`live`]) stay.
pub(super) async fn forget_name(inner: &Inner, name: &str, except: Option<&str>, why: &str) {
    match states_of(inner, name).await {
        Ok(states) => {
            for state in states {
                if Some(state.key.as_str()) != except && !live(inner, &state) {
                    drop_kept(inner, &state, why).await;
                }
            }
        }
        Err(e) => warn!(error = %e, "cannot look for the kept uploads of a name"),
    }
}

/// Keeps what resumable uploads hold within the staging quota: the parts
/// of the kept ones, and the whole size of every one in progress (here,
/// or by its state on another server), as on a local root. Drops the
/// oldest kept uploads but the one of `name` under `key` until that fits;
/// drops none if dropping them all would not make it fit. Returns whether
/// it fits (or could not be told: the states could not be listed).
pub(super) async fn enforce_quota(inner: &Inner, name: &str, key: &str) -> bool {
    let mut states = Vec::new();
    let dir = inner.keys.private_dir(Private::Kept);
    let mut token = None;
    loop {
        let page = match inner
            .raw
            .list_page(&dir, None, token.as_deref(), 1000)
            .await
        {
            Ok(page) => page,
            Err(e) => {
                warn!(error = %e, "cannot list the kept uploads");
                return true;
            }
        };
        for listed in page.keys {
            let Ok(path) = Path::parse(&listed.key) else {
                continue;
            };
            if let Ok(Some(state)) = get_json::<KeptState>(inner, &path).await {
                states.push(state);
            }
        }
        token = page.token;
        if token.is_none() {
            break;
        }
    }
    let in_progress = |state: &KeptState| {
        active(inner, state)
            || (state.in_progress && now_ms().saturating_sub(state.updated_ms) < LIVE_MS)
    };
    let held = |state: &KeptState| {
        if in_progress(state) {
            state.size
        } else {
            state.received()
        }
    };
    let mut total: u64 = states.iter().map(held).sum();
    if total <= inner.quota {
        return true;
    }
    let mut droppable: Vec<KeptState> = states
        .into_iter()
        .filter(|s| !(in_progress(s) || (s.name == name && s.key == key)))
        .collect();
    let freeable: u64 = droppable.iter().map(KeptState::received).sum();
    if total.saturating_sub(freeable) > inner.quota {
        return false;
    }
    droppable.sort_by_key(|s| s.updated_ms);
    for state in droppable {
        if total <= inner.quota {
            break;
        }
        drop_kept(inner, &state, why::QUOTA).await;
        total = total.saturating_sub(state.received());
    }
    true
}

/// Removes the kept uploads whose time to live is over, and the multipart
/// uploads nobody will complete; returns how many.
pub(super) async fn sweep(inner: &Inner) -> usize {
    sweep_states(inner).await + sweep_orphans(inner).await
}

fn older_than_ttl(inner: &Inner, rfc3339: &str) -> bool {
    let ttl = u64::try_from(inner.retention.ttl.as_millis()).unwrap_or(u64::MAX);
    rfc3339_seconds(rfc3339)
        .and_then(|s| u64::try_from(s).ok())
        .is_some_and(|s| now_ms().saturating_sub(s.saturating_mul(1000)) > ttl)
}

async fn sweep_states(inner: &Inner) -> usize {
    let ttl = u64::try_from(inner.retention.ttl.as_millis()).unwrap_or(u64::MAX);
    let dir = inner.keys.private_dir(Private::Kept);
    let mut removed = 0;
    let mut token = None;
    loop {
        let page = match inner
            .raw
            .list_page(&dir, None, token.as_deref(), 1000)
            .await
        {
            Ok(page) => page,
            Err(e) => {
                warn!(error = %e, "cannot list the kept uploads");
                return removed;
            }
        };
        for listed in page.keys {
            if !older_than_ttl(inner, &listed.last_modified) {
                continue;
            }
            let Ok(path) = Path::parse(&listed.key) else {
                continue;
            };
            match get_json::<KeptState>(inner, &path).await {
                Ok(Some(state)) => {
                    if active(inner, &state) || now_ms().saturating_sub(state.updated_ms) <= ttl {
                        continue;
                    }
                    abort(inner, &inner.keys.file(&state.name), &state.upload_id).await;
                    let _ = inner.store.delete(&path).await;
                    info!(
                        name = %state.name.escape_debug(),
                        bytes = state.received(),
                        reason = why::EXPIRED,
                        "kept upload dropped"
                    );
                    removed += 1;
                }
                // Not a state this server can read: it is no use to anyone.
                Ok(None) => {
                    let _ = inner.store.delete(&path).await;
                }
                Err(e) => warn!(error = %e, "cannot read the state of a kept upload"),
            }
        }
        token = page.token;
        if token.is_none() {
            return removed;
        }
    }
}

async fn sweep_orphans(inner: &Inner) -> usize {
    let mut removed = 0;
    let mut after = None;
    loop {
        let page = match inner
            .raw
            .uploads_page(inner.keys.prefix(), after.as_ref())
            .await
        {
            Ok(page) => page,
            Err(e) => {
                warn!(error = %e, "cannot list the multipart uploads in progress");
                return removed;
            }
        };
        for upload in page.uploads {
            if inner.active().uploads.contains(&upload.upload_id)
                || !older_than_ttl(inner, &upload.initiated)
            {
                continue;
            }
            if let Some(name) = inner.keys.name_of(&upload.key)
                && validate_name(name).is_ok()
                && let Ok(states) = states_of(inner, name).await
                && states.iter().any(|s| s.upload_id == upload.upload_id)
            {
                // Kept: the states' sweep decides.
                continue;
            }
            abort(inner, &upload.key, &upload.upload_id).await;
            info!(key = %upload.key.escape_debug(), "stale multipart upload aborted");
            removed += 1;
        }
        after = page.next;
        if after.is_none() {
            return removed;
        }
    }
}

/// The hash of a file published by a multipart upload.
#[derive(Debug, Serialize, Deserialize)]
struct DigestRecord {
    version: u32,
    name: String,
    /// The ETag of the object it describes: the record holds only for it.
    e_tag: String,
    size: u64,
    blake3: String,
}

/// Records the verified hash of `name`, just published as the object with
/// `e_tag`. A failure is logged: downloads then hash the file as they go.
pub(super) async fn record_digest(
    inner: &Inner,
    name: &str,
    e_tag: &str,
    size: u64,
    hash: &blake3::Hash,
) {
    let record = DigestRecord {
        version: 1,
        name: name.to_owned(),
        e_tag: e_tag.trim_matches('"').to_owned(),
        size,
        blake3: hash.to_hex().to_string(),
    };
    if let Err(e) = put_json(inner, &inner.keys.private(Private::Digest, name), &record).await {
        warn!(name = %name.escape_debug(), error = %e, "could not record the hash of a published file");
    }
}

/// The hash recorded for `name`, if it is for the object with `e_tag` and
/// `size`.
pub(super) async fn lookup_digest(
    inner: &Inner,
    name: &str,
    e_tag: &str,
    size: u64,
) -> Option<blake3::Hash> {
    let record: DigestRecord = get_json(inner, &inner.keys.private(Private::Digest, name))
        .await
        .ok()
        .flatten()?;
    (record.version == 1
        && record.name == name
        && record.size == size
        && record.e_tag == e_tag.trim_matches('"'))
    .then(|| blake3::Hash::from_hex(&record.blake3).ok())
    .flatten()
}

/// Removes the hash recorded for `name` (a stale one does no harm: it is
/// checked against the ETag).
pub(super) async fn forget_digest(inner: &Inner, name: &str) {
    let _ = inner
        .store
        .delete(&inner.keys.private(Private::Digest, name))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::s3::parts::MIN_PART;

    fn state(parts: usize) -> KeptState {
        KeptState {
            version: 1,
            name: "a/b".into(),
            key: key_hex(&[7; 32]),
            size: 3 * MIN_PART + 5,
            part_size: MIN_PART,
            upload_id: "id".into(),
            token: "t".into(),
            created_ms: 1,
            updated_ms: 2,
            in_progress: false,
            replaces: None,
            parts: (0..parts)
                .map(|i| KeptPart {
                    etag: format!("\"e{i}\""),
                    cv: blake3::hash(&i.to_le_bytes()).to_hex().to_string(),
                })
                .collect(),
        }
    }

    #[test]
    fn a_file_of_another_etag_at_the_name_was_published_over_the_upload() {
        assert!(!published_over(None, None));
        assert!(published_over(None, Some("\"a\"")));
        assert!(!published_over(Some("\"a\""), Some("\"a\"")));
        assert!(!published_over(Some("a"), Some("\"a\"")));
        assert!(published_over(Some("\"a\""), Some("\"b\"")));
        // Deleted since: not a publish.
        assert!(!published_over(Some("\"a\""), None));
    }

    #[test]
    fn a_state_without_the_etag_it_replaces_reads_back() {
        let mut text = serde_json::to_value(state(1)).unwrap();
        text.as_object_mut().unwrap().remove("replaces");
        let back: KeptState = serde_json::from_value(text).unwrap();
        assert_eq!(back.replaces, None);
        assert!(back.valid("a/b"));
    }

    #[test]
    fn a_state_reads_back_and_counts_its_parts() {
        let kept = state(2);
        let text = serde_json::to_string(&kept).unwrap();
        let back: KeptState = serde_json::from_str(&text).unwrap();
        assert_eq!(back, kept);
        assert!(back.valid("a/b"));
        assert!(!back.valid("a/c"));
        assert_eq!(back.received(), 2 * MIN_PART);
        assert_eq!(state(4).received(), 3 * MIN_PART + 5);
        assert!(!state(5).valid("a/b"));
        let mut bad = state(1);
        bad.parts[0].cv = "zz".into();
        assert!(!bad.valid("a/b"));
    }
}
