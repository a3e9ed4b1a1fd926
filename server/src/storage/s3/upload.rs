//! Uploads: a small file held in memory and written in one request, a
//! large one streamed into a multipart upload, and publishing either.
//!
//! Part buffers come from a budget shared by every upload (`--store-memory`,
//! counted in MiB): a part takes its share before its first byte is
//! copied, and gives it back once the store has it. An upload whose part
//! cannot get its share waits, and so does its client (TCP flow control):
//! memory stays bounded however many clients upload at once.

use super::kept::{self, Claim, KeptPart, KeptState, key_hex, why};
use super::parts::{MIN_PART, PartHasher, merge, part_len, part_size};
use super::{HASH_META, Inner, TOKEN_META, failure, names, now_ms, token};
use crate::storage::{BodySink, Chunk, SinkEnd, SmallPut, Stopped, StoreError, Upload};
use blake3::hazmat::ChainingValue;
use bytes::Bytes;
use framekit_transfer::{Hash, validate_name};
use futures_util::stream::{self, StreamExt};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, GetOptions, ObjectStore, ObjectStoreExt, PutMode, PutMultipartOptions,
    PutOptions, PutPayload,
};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// Parts of one upload on their way to the store at once.
const IN_FLIGHT: usize = 3;

/// The size of the blocks a part is gathered in: memory grows with what
/// arrives, never with what a client declared.
const BLOCK: usize = 1 << 20;

/// Small uploads of a batch written at once: a whole batch of the handler.
const BATCH_CONCURRENCY: usize = 32;

/// Bytes gathered in blocks of [`BLOCK`].
#[derive(Debug, Default)]
struct Blocks {
    full: Vec<Bytes>,
    current: Vec<u8>,
    len: u64,
}

impl Blocks {
    fn whole(body: Vec<u8>) -> Blocks {
        Blocks {
            len: body.len() as u64,
            full: vec![Bytes::from(body)],
            current: Vec::new(),
        }
    }

    fn push(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.current.capacity() == 0 {
                self.current = Vec::with_capacity(BLOCK);
            }
            let n = (BLOCK - self.current.len()).min(data.len());
            let (now, rest) = data.split_at(n);
            self.current.extend_from_slice(now);
            self.len += n as u64;
            data = rest;
            if self.current.len() == BLOCK {
                self.full
                    .push(Bytes::from(std::mem::take(&mut self.current)));
            }
        }
    }

    fn payload(mut self) -> PutPayload {
        if !self.current.is_empty() {
            self.full.push(Bytes::from(self.current));
        }
        self.full.into_iter().collect()
    }
}

/// A part stored in the multipart upload.
#[derive(Debug, Clone)]
struct DonePart {
    /// What the store gave for it (its ETag).
    id: String,
    cv: ChainingValue,
}

/// A multipart upload in progress.
#[derive(Debug)]
struct Multipart {
    path: Path,
    id: String,
    part: u64,
    /// The parts stored, from the first.
    parts: Vec<DonePart>,
}

/// Where an upload's bytes are.
#[derive(Debug)]
enum Body {
    /// The whole file, in memory (at most [`MIN_PART`] bytes).
    Memory {
        data: Blocks,
        permit: Option<OwnedSemaphorePermit>,
    },
    /// In a multipart upload.
    Multipart(Multipart),
}

/// An upload in progress to the S3 store.
#[derive(Debug)]
pub struct S3Upload {
    inner: Arc<Inner>,
    name: String,
    size: u64,
    token: String,
    body: Body,
    /// For a resumable upload: its key (hex) and when it started.
    kept: Option<(String, u64)>,
    /// For a resumable upload: the ETag of the file at its name when it
    /// started, if there was one (see [`kept::published_over`]).
    replaces: Option<String>,
    /// Whether it replaces an existing file.
    overwrite: bool,
    /// Cancelled by the store because another upload of the name completed
    /// meanwhile (Garage does that): an overwrite is then done, as if it
    /// had been published just before the other.
    superseded: bool,
    /// Published, discarded or abandoned: nothing left to do when dropped.
    done: bool,
}

/// Takes the share of the memory budget of `bytes` bytes of part buffers.
async fn reserve(inner: &Inner, bytes: u64) -> io::Result<OwnedSemaphorePermit> {
    let mib = u32::try_from(bytes.div_ceil(1 << 20))
        .unwrap_or(u32::MAX)
        .clamp(1, inner.memory_mib);
    Arc::clone(&inner.memory)
        .acquire_many_owned(mib)
        .await
        .map_err(io::Error::other)
}

fn token_attributes(token: &str) -> Attributes {
    let mut attributes = Attributes::new();
    attributes.insert(
        Attribute::Metadata(TOKEN_META.into()),
        token.to_owned().into(),
    );
    attributes
}

/// The ETag in a part id (plain, or in XML when checksums are on).
fn etag_of(id: &str) -> String {
    id.split_once("<ETag>")
        .and_then(|(_, rest)| rest.split_once("</ETag>"))
        .map_or(id, |(etag, _)| etag)
        .to_owned()
}

impl S3Upload {
    fn new(inner: &Arc<Inner>, name: &str, size: u64, body: Body, token: String) -> S3Upload {
        if let Body::Multipart(multipart) = &body {
            inner.active().uploads.insert(multipart.id.clone());
        }
        S3Upload {
            inner: Arc::clone(inner),
            name: name.to_owned(),
            size,
            token,
            body,
            kept: None,
            replaces: None,
            overwrite: false,
            superseded: false,
            done: false,
        }
    }

    /// What a resumable upload's state says now, receiving its body or
    /// interrupted.
    fn state(&self, in_progress: bool) -> Option<KeptState> {
        let (key, created_ms) = self.kept.as_ref()?;
        let Body::Multipart(multipart) = &self.body else {
            return None;
        };
        Some(KeptState {
            version: 1,
            name: self.name.clone(),
            key: key.clone(),
            size: self.size,
            part_size: multipart.part,
            upload_id: multipart.id.clone(),
            token: self.token.clone(),
            created_ms: *created_ms,
            updated_ms: now_ms(),
            in_progress,
            replaces: self.replaces.clone(),
            parts: multipart
                .parts
                .iter()
                .map(|part| KeptPart {
                    etag: part.id.clone(),
                    cv: blake3::Hash::from_bytes(part.cv).to_hex().to_string(),
                })
                .collect(),
        })
    }

    /// Writes a resumable upload's state; a failure only costs a resume.
    async fn save_state(&self, in_progress: bool) {
        if let Some(state) = self.state(in_progress)
            && let Err(e) = kept::save(&self.inner, &state).await
        {
            warn!(error = %e, "cannot record the progress of a resumable upload");
        }
    }

    /// Lets go of what this process holds for the upload.
    fn release(&mut self) {
        self.done = true;
        let mut active = self.inner.active();
        if let Some((key, _)) = &self.kept {
            active.kept.remove(&(self.name.clone(), key.clone()));
        }
        if let Body::Multipart(multipart) = &self.body {
            active.uploads.remove(&multipart.id);
        }
        drop(active);
        if self.kept.is_some() {
            self.inner.ended.notify_waiters();
        }
    }

    /// Its connection broke: a put of its name and key waits for it to be
    /// kept.
    fn ending(&self) {
        if let Some((key, _)) = &self.kept {
            kept::ending(&self.inner, &self.name, key);
        }
    }

    /// Drops what the upload stored, and, for a resumable one that stored
    /// parts, says why it is not kept.
    async fn not_kept(&mut self, why: &str) {
        if self.kept.is_some() && matches!(self.body, Body::Multipart(_)) {
            info!(
                name = %self.name.escape_debug(),
                reason = why,
                "interrupted upload not kept"
            );
        }
        self.drop_stored().await;
    }

    /// Whether a put of its name was published since it started: the name
    /// holds a file it did not start on.
    async fn published_over(&self) -> bool {
        let Ok(path) = self.inner.keys.path(&self.name) else {
            return false;
        };
        match self.inner.store.head(&path).await {
            Ok(meta) => kept::published_over(self.replaces.as_deref(), meta.e_tag.as_deref()),
            Err(_) => false,
        }
    }

    /// Aborts the multipart upload, and removes its state if it had one.
    async fn drop_stored(&mut self) {
        if let Body::Multipart(multipart) = &self.body {
            kept::abort(&self.inner, multipart.path.as_ref(), &multipart.id).await;
            if let Some((key, _)) = &self.kept {
                kept::delete_state(&self.inner, &self.name, key).await;
            }
        }
        self.release();
    }
}

impl Drop for S3Upload {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // Dropped without an end (a connection aborted at shutdown): a
        // resumable upload's state already names its parts; any other
        // multipart upload is aborted, if a runtime is left to do it.
        if let (Body::Multipart(multipart), None) = (&self.body, &self.kept)
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let inner = Arc::clone(&self.inner);
            let (key, id) = (multipart.path.to_string(), multipart.id.clone());
            let tracker = inner.cleanup.clone();
            tracker.spawn_on(
                async move { kept::abort(&inner, &key, &id).await },
                &runtime,
            );
        }
        self.release();
    }
}

/// The ETag of the file `name`, if there is one.
async fn file_etag(inner: &Inner, name: &str) -> Result<Option<String>, StoreError> {
    match inner
        .store
        .head(&inner.keys.path(name).map_err(failure)?)
        .await
    {
        Ok(meta) => Ok(meta.e_tag),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(failure(e)),
    }
}

/// Starts a multipart upload of `name` in parts of `part` bytes.
async fn start_multipart(
    inner: &Inner,
    name: &str,
    part: u64,
    token: &str,
) -> Result<Multipart, StoreError> {
    let path = inner.keys.path(name).map_err(failure)?;
    let id = inner
        .store
        .create_multipart_opts(
            &path,
            PutMultipartOptions {
                attributes: token_attributes(token),
                ..Default::default()
            },
        )
        .await
        .map_err(failure)?;
    Ok(Multipart {
        path,
        id,
        part,
        parts: Vec::new(),
    })
}

/// An upload that is not kept if interrupted.
async fn ordinary(inner: &Arc<Inner>, name: &str, size: u64) -> Result<S3Upload, StoreError> {
    let token = token();
    let body = if size <= MIN_PART {
        Body::Memory {
            data: Blocks::default(),
            permit: None,
        }
    } else {
        Body::Multipart(start_multipart(inner, name, part_size(size), &token).await?)
    };
    Ok(S3Upload::new(inner, name, size, body, token))
}

pub(super) async fn create(
    inner: &Arc<Inner>,
    name: &str,
    size: u64,
    overwrite: bool,
) -> Result<S3Upload, StoreError> {
    names::check_put(inner, name, overwrite).await?;
    let mut upload = ordinary(inner, name, size).await?;
    upload.overwrite = overwrite;
    Ok(upload)
}

pub(super) async fn resume(
    inner: &Arc<Inner>,
    key: Hash,
    name: &str,
    size: u64,
    overwrite: bool,
) -> Result<S3Upload, StoreError> {
    let mut upload = resumable(inner, key, name, size, overwrite).await?;
    upload.overwrite = overwrite;
    Ok(upload)
}

async fn resumable(
    inner: &Arc<Inner>,
    key: Hash,
    name: &str,
    size: u64,
    overwrite: bool,
) -> Result<S3Upload, StoreError> {
    names::check_put(inner, name, overwrite).await?;
    // A file of one part is written whole at the end: nothing to keep.
    if size <= MIN_PART {
        return ordinary(inner, name, size).await;
    }
    // Without overwrite, the name was just found free.
    let current = if overwrite {
        file_etag(inner, name).await?
    } else {
        None
    };
    match kept::claim(inner, &key, name, size, current.as_deref()).await? {
        Claim::NotResumable => ordinary(inner, name, size).await,
        Claim::Resume(state) => {
            let parts = state
                .cvs()
                .unwrap_or_default()
                .into_iter()
                .zip(&state.parts)
                .map(|(cv, part)| DonePart {
                    id: part.etag.clone(),
                    cv,
                })
                .collect();
            let multipart = Multipart {
                path: inner.keys.path(name).map_err(failure)?,
                id: state.upload_id.clone(),
                part: state.part_size,
                parts,
            };
            let mut upload = S3Upload::new(
                inner,
                name,
                size,
                Body::Multipart(multipart),
                state.token.clone(),
            );
            upload.kept = Some((state.key, state.created_ms));
            upload.replaces = state.replaces;
            // In progress again: counted at its whole size in the quota.
            upload.save_state(true).await;
            Ok(upload)
        }
        Claim::Fresh => {
            let token = token();
            let multipart = match start_multipart(inner, name, part_size(size), &token).await {
                Ok(multipart) => multipart,
                Err(e) => {
                    kept::release(inner, name, &key_hex(&key));
                    return Err(e);
                }
            };
            let mut upload = S3Upload::new(inner, name, size, Body::Multipart(multipart), token);
            upload.kept = Some((key_hex(&key), now_ms()));
            upload.replaces = current;
            // Written now, so that a server killed before the first part
            // leaves a state the sweep finds.
            if let Some(state) = upload.state(true)
                && let Err(e) = kept::save(inner, &state).await
            {
                upload.drop_stored().await;
                return Err(e);
            }
            // The quota counts it at its whole size from now on: if that
            // does not fit, once the oldest kept uploads are dropped, it is
            // an ordinary upload, not kept if it is interrupted.
            let key = key_hex(&key);
            if !kept::enforce_quota(inner, name, &key).await {
                kept::delete_state(inner, name, &key).await;
                upload.kept = None;
                kept::release(inner, name, &key);
            }
            Ok(upload)
        }
    }
}

impl Upload for S3Upload {
    type Sink = S3Sink;

    fn offset(&self) -> u64 {
        match &self.body {
            Body::Memory { .. } => 0,
            Body::Multipart(multipart) => (0..multipart.parts.len() as u64)
                .map(|i| part_len(self.size, multipart.part, i))
                .sum(),
        }
    }

    fn hold(&mut self, body: Vec<u8>) {
        if let Body::Memory { data, .. } = &mut self.body {
            *data = Blocks::whole(body);
        }
    }

    fn sink(self, size: u64, buffers: Vec<Vec<u8>>) -> S3Sink {
        let mut buffers = buffers;
        if buffers.is_empty() {
            buffers.push(vec![0; 64 * 1024]);
        }
        // A body of unknown length (an upload started with size 0, a sink
        // of the largest size): held in memory while it fits one part, in
        // a multipart upload beyond.
        let stream = (size > self.size).then(|| part_size(size));
        let (whole, cvs) = match &self.body {
            Body::Memory { .. } if stream.is_none() => (Some(blake3::Hasher::new()), Vec::new()),
            Body::Memory { .. } => (None, Vec::new()),
            Body::Multipart(multipart) => (None, multipart.parts.iter().map(|p| p.cv).collect()),
        };
        S3Sink {
            upload: self,
            free: buffers,
            remaining: size,
            taken: 0,
            stream,
            whole,
            filling: None,
            cvs,
            in_flight: VecDeque::new(),
            error: None,
            saved: Instant::now(),
        }
    }

    async fn discard(mut self) {
        self.not_kept(why::FAILED).await;
    }

    /// Keeps a resumable upload's parts, unless a put of its name was
    /// published since it started. The state says it is interrupted before
    /// the name is looked at, and the upload is let go only after: so a
    /// publish whose completion comes after that look finds the state
    /// interrupted, and drops it, on any server (see `kept::live`).
    async fn abandon(mut self) {
        if self.kept.is_none() {
            self.drop_stored().await;
            return;
        }
        self.ending();
        let received = self.offset();
        if received == 0 {
            self.not_kept(why::NO_PART).await;
            return;
        }
        self.save_state(false).await;
        if self.published_over().await {
            self.not_kept(why::SUPERSEDED).await;
            return;
        }
        info!(
            name = %self.name.escape_debug(),
            received,
            size = self.size,
            "interrupted upload kept for resuming"
        );
        self.release();
        if let Some((key, _)) = self.kept.clone() {
            // One kept upload per name: an older one is for older content.
            kept::forget_name(&self.inner, &self.name, Some(&key), why::REPLACED).await;
            kept::enforce_quota(&self.inner, &self.name, &key).await;
        }
    }
}

/// A part being filled.
#[derive(Debug)]
struct Filling {
    index: u64,
    len: u64,
    blocks: Blocks,
    hasher: PartHasher,
    permit: OwnedSemaphorePermit,
}

/// Where a streamed body goes: into memory, or part after part into the
/// multipart upload.
#[derive(Debug)]
pub struct S3Sink {
    upload: S3Upload,
    /// The connection's buffers, handed back as soon as copied.
    free: Vec<Vec<u8>>,
    /// Body bytes still to come (at most, for a body of unknown length).
    remaining: u64,
    /// Body bytes taken so far.
    taken: u64,
    /// For a body of unknown length, its part size.
    stream: Option<u64>,
    /// The hash of a file held in memory.
    whole: Option<blake3::Hasher>,
    filling: Option<Filling>,
    /// The chaining value of every part hashed so far, stored or on its
    /// way (the next part is the one after them).
    cvs: Vec<ChainingValue>,
    in_flight: VecDeque<JoinHandle<Result<DonePart, object_store::Error>>>,
    /// The first failure: the rest of the body is read and dropped.
    error: Option<io::Error>,
    /// When a resumable upload's state was last written.
    saved: Instant,
}

impl S3Sink {
    async fn absorb(&mut self, mut data: &[u8]) -> io::Result<()> {
        self.remaining = self.remaining.saturating_sub(data.len() as u64);
        self.taken += data.len() as u64;
        let size = self.upload.size;
        let inner = Arc::clone(&self.upload.inner);
        if self.stream.is_none()
            && let Body::Memory { data: held, permit } = &mut self.upload.body
        {
            if permit.is_none() {
                *permit = Some(reserve(&inner, size).await?);
            }
            held.push(data);
            if let Some(whole) = &mut self.whole {
                whole.update(data);
            }
            return Ok(());
        }
        while !data.is_empty() {
            let part = match (&self.upload.body, self.stream) {
                (Body::Multipart(multipart), _) => multipart.part,
                (Body::Memory { .. }, Some(part)) => part,
                (Body::Memory { .. }, None) => return Ok(()),
            };
            if self.filling.is_none() {
                let index = self.cvs.len() as u64;
                let len = match self.stream {
                    Some(part) => part,
                    None => part_len(size, part, index),
                };
                if len == 0 {
                    return Err(io::Error::other("more body bytes than the file's size"));
                }
                let permit = reserve(&inner, len).await?;
                self.filling = Some(Filling {
                    index,
                    len,
                    blocks: Blocks::default(),
                    hasher: PartHasher::new(index * part),
                    permit,
                });
            }
            let Some(filling) = self.filling.as_mut() else {
                continue;
            };
            let room = usize::try_from(filling.len - filling.blocks.len).unwrap_or(usize::MAX);
            let (now, rest) = data.split_at(room.min(data.len()));
            filling.hasher.update(now);
            filling.blocks.push(now);
            data = rest;
            if filling.blocks.len == filling.len
                && let Some(full) = self.filling.take()
            {
                self.launch(full).await?;
            }
        }
        Ok(())
    }

    /// Sends a full part to the store, once fewer than [`IN_FLIGHT`] are
    /// on their way.
    async fn launch(&mut self, part: Filling) -> io::Result<()> {
        let Filling {
            index,
            blocks,
            hasher,
            permit,
            ..
        } = part;
        let cv = hasher.finish();
        self.cvs.push(cv);
        if self.upload.superseded {
            return Ok(());
        }
        // A body of unknown length goes to a multipart upload once it fills
        // more than one part.
        if let (Body::Memory { .. }, Some(part)) = (&self.upload.body, self.stream) {
            let multipart = start_multipart(
                &self.upload.inner,
                &self.upload.name,
                part,
                &self.upload.token,
            )
            .await
            .map_err(io::Error::other)?;
            self.upload
                .inner
                .active()
                .uploads
                .insert(multipart.id.clone());
            self.upload.body = Body::Multipart(multipart);
        }
        while self.in_flight.len() >= IN_FLIGHT {
            self.collect_one().await?;
        }
        let Body::Multipart(multipart) = &self.upload.body else {
            return Ok(());
        };
        if self.upload.superseded {
            return Ok(());
        }
        let store = self.upload.inner.store.clone();
        let (path, id) = (multipart.path.clone(), multipart.id.clone());
        let index = usize::try_from(index).map_err(io::Error::other)?;
        self.in_flight.push_back(tokio::spawn(async move {
            let stored = store.put_part(&path, &id, index, blocks.payload()).await;
            drop(permit);
            stored.map(|part| DonePart {
                id: part.content_id,
                cv,
            })
        }));
        Ok(())
    }

    /// Waits for the oldest part on its way, and records it.
    async fn collect_one(&mut self) -> io::Result<()> {
        let Some(task) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let part = match task.await.map_err(io::Error::other)? {
            Ok(part) => part,
            Err(object_store::Error::NotFound { .. }) => return self.cancelled().await,
            Err(e) => return Err(io::Error::other(e)),
        };
        if let Body::Multipart(multipart) = &mut self.upload.body {
            multipart.parts.push(part);
        }
        self.upload.save_state(true).await;
        self.saved = Instant::now();
        Ok(())
    }

    /// The multipart upload is gone: if another upload of the name was
    /// published meanwhile, this one is refused (without overwrite) or
    /// superseded (with it, and then the rest of its body is only hashed).
    async fn cancelled(&mut self) -> io::Result<()> {
        let gone = || io::Error::other("the multipart upload is gone from the store");
        let Body::Multipart(multipart) = &self.upload.body else {
            return Err(gone());
        };
        match self.upload.inner.store.head(&multipart.path).await {
            Ok(_) if self.upload.overwrite => {
                for task in self.in_flight.drain(..) {
                    task.abort();
                }
                self.upload.superseded = true;
                Ok(())
            }
            Ok(_) => Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "another upload published the name first",
            )),
            Err(_) => Err(gone()),
        }
    }

    async fn collect_all(&mut self) {
        while !self.in_flight.is_empty() {
            if let Err(e) = self.collect_one().await {
                self.fail(e);
            }
        }
    }

    fn fail(&mut self, error: io::Error) {
        if self.error.is_none() {
            warn!(error = %error, "storing an upload failed");
            self.error = Some(error);
        }
        for task in self.in_flight.drain(..) {
            task.abort();
        }
        self.filling = None;
    }

    /// Ends a body of unknown length: the upload takes its size; a body
    /// that fits one part stays in memory, to be written whole.
    async fn finish_stream(&mut self) -> Option<blake3::Hash> {
        self.upload.size = self.taken;
        if let Body::Memory { data, permit } = &mut self.upload.body {
            let Some(only) = self.filling.take() else {
                return Some(blake3::hash(b""));
            };
            let hash = only.hasher.root();
            *data = only.blocks;
            *permit = Some(only.permit);
            return Some(hash);
        }
        if let Some(last) = self.filling.take()
            && let Err(e) = self.launch(last).await
        {
            self.fail(e);
        }
        self.collect_all().await;
        if self.error.is_some() {
            return None;
        }
        let hash = self.hash();
        if hash.is_none() {
            self.fail(io::Error::other("parts of the upload are missing"));
        }
        hash
    }

    /// The hash of the whole file, once every part is stored (or, for a
    /// superseded upload, hashed).
    fn hash(&mut self) -> Option<blake3::Hash> {
        match &self.upload.body {
            Body::Memory { .. } => self.whole.as_ref().map(blake3::Hasher::finalize),
            Body::Multipart(multipart) => {
                let stored = multipart.parts.len() == self.cvs.len();
                (stored || self.upload.superseded)
                    .then(|| merge(self.upload.size, multipart.part, &self.cvs))
                    .flatten()
            }
        }
    }
}

impl BodySink for S3Sink {
    type Upload = S3Upload;

    async fn buffer(&mut self) -> Option<Vec<u8>> {
        self.free.pop()
    }

    async fn take(&mut self, chunk: Chunk) -> Result<(), Stopped> {
        if self.error.is_none()
            && let Err(e) = self.absorb(chunk.data()).await
        {
            self.fail(e);
        }
        self.free.push(chunk.buf);
        // Other servers must see a slow upload is alive.
        if self.upload.kept.is_some() && self.saved.elapsed() >= kept::HEARTBEAT {
            self.upload.save_state(true).await;
            self.saved = Instant::now();
        }
        Ok(())
    }

    async fn finish(mut self, complete: bool) -> SinkEnd<S3Upload> {
        let mut hash = None;
        if complete && self.error.is_none() && self.stream.is_some() {
            hash = self.finish_stream().await;
        } else if complete && self.error.is_none() && self.remaining == 0 {
            if let Some(last) = self.filling.take()
                && let Err(e) = self.launch(last).await
            {
                self.fail(e);
            }
            self.collect_all().await;
            if self.error.is_none() {
                hash = self.hash();
                if hash.is_none() {
                    self.fail(io::Error::other("parts of the upload are missing"));
                }
            }
        } else {
            // What is stored is kept, if the upload can be resumed; a put
            // of its name and key waits for that.
            self.upload.ending();
            self.filling = None;
            self.collect_all().await;
        }
        SinkEnd {
            upload: Some(self.upload),
            hash,
            error: self.error,
            buffers: self.free,
        }
    }
}

/// The ETag of the object at `path` if the upload with `token` wrote it:
/// a write whose answer was lost and that was sent again finds the object
/// there, its own.
async fn written_by(inner: &Inner, path: &Path, token: &str) -> Option<String> {
    let head = inner
        .store
        .get_opts(path, GetOptions::new().with_head(true))
        .await
        .ok()?;
    let found = head
        .attributes
        .get(&Attribute::Metadata(TOKEN_META.into()))?;
    (found.as_ref() == token).then(|| head.meta.e_tag.unwrap_or_default())
}

/// Writes a file held in memory in one request, with its hash.
async fn write_whole(
    inner: &Inner,
    name: &str,
    data: Blocks,
    create: bool,
    hash: &blake3::Hash,
    token: &str,
) -> Result<(), StoreError> {
    let path = inner.keys.path(name).map_err(failure)?;
    let mut attributes = token_attributes(token);
    attributes.insert(
        Attribute::Metadata(HASH_META.into()),
        hash.to_hex().to_string().into(),
    );
    let options = PutOptions {
        mode: if create {
            PutMode::Create
        } else {
            PutMode::Overwrite
        },
        attributes,
        ..Default::default()
    };
    match inner.store.put_opts(&path, data.payload(), options).await {
        Ok(_) => Ok(()),
        Err(
            object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. },
        ) if create => match written_by(inner, &path, token).await {
            Some(_) => Ok(()),
            None => Err(StoreError::AlreadyExists),
        },
        Err(e) => Err(failure(e)),
    }
}

/// How a multipart upload ended up published.
enum Completed {
    /// As the object with this ETag.
    Published(String),
    /// Replaced by another upload of the name that completed while this one
    /// was in progress (Garage cancels an upload then): as if it had been
    /// published just before the other.
    Superseded,
}

/// Completes a multipart upload (with `If-None-Match: *` if `create`).
async fn complete(
    inner: &Inner,
    multipart: &Multipart,
    create: bool,
    overwrite: bool,
    token: &str,
) -> Result<Completed, StoreError> {
    // The upload is gone: its completion succeeded and the answer was lost,
    // or another upload of the name cancelled it.
    let gone = || async move {
        if let Some(etag) = written_by(inner, &multipart.path, token).await {
            return Ok(Completed::Published(etag));
        }
        match inner.store.head(&multipart.path).await {
            Ok(_) if !overwrite => Err(StoreError::AlreadyExists),
            Ok(_) => Ok(Completed::Superseded),
            Err(e) => Err(failure(format!("the upload is gone ({e})"))),
        }
    };
    if create {
        let etags: Vec<String> = multipart.parts.iter().map(|p| etag_of(&p.id)).collect();
        match inner
            .raw
            .complete_if_absent(multipart.path.as_ref(), &multipart.id, &etags)
            .await
        {
            Ok(Some(etag)) => Ok(Completed::Published(etag)),
            Ok(None) => match written_by(inner, &multipart.path, token).await {
                Some(etag) => Ok(Completed::Published(etag)),
                None => Err(StoreError::AlreadyExists),
            },
            Err(e) if e.status() == Some(http::StatusCode::NOT_FOUND) => gone().await,
            Err(e) => Err(failure(e)),
        }
    } else {
        let parts = multipart
            .parts
            .iter()
            .map(|p| PartId {
                content_id: p.id.clone(),
            })
            .collect();
        match inner
            .store
            .complete_multipart(&multipart.path, &multipart.id, parts)
            .await
        {
            Ok(done) => Ok(Completed::Published(done.e_tag.unwrap_or_default())),
            Err(object_store::Error::NotFound { .. }) => gone().await,
            Err(e) => Err(failure(e)),
        }
    }
}

pub(super) async fn publish(
    inner: &Arc<Inner>,
    mut upload: S3Upload,
    name: &str,
    overwrite: bool,
    hash: blake3::Hash,
) -> Result<(), StoreError> {
    if let Err(e) = names::check_structure(inner, name).await {
        upload.not_kept(why::PUBLISH_FAILED).await;
        return Err(e);
    }
    // Without conditional creates, this process at least never lets two
    // of its own puts of a new name both through.
    let checked = !inner.atomic_create && !overwrite;
    let _lock = if checked {
        Some(inner.locks.lock(name).await)
    } else {
        None
    };
    if checked {
        match names::is_file(inner, name).await {
            Ok(false) => {}
            Ok(true) => {
                upload.not_kept(why::PUBLISH_FAILED).await;
                return Err(StoreError::AlreadyExists);
            }
            Err(e) => {
                upload.abandon().await;
                return Err(e);
            }
        }
    }
    if upload.superseded {
        if let Some((key, _)) = &upload.kept {
            kept::delete_state(inner, name, key).await;
        }
        upload.release();
        return Ok(());
    }
    let create = inner.atomic_create && !overwrite;
    let token = upload.token.clone();
    let written = match &mut upload.body {
        Body::Memory { data, .. } => {
            let data = std::mem::take(data);
            write_whole(inner, name, data, create, &hash, &token)
                .await
                .map(|()| None)
        }
        Body::Multipart(multipart) => complete(inner, multipart, create, overwrite, &token)
            .await
            .map(Some),
    };
    match written {
        Ok(completed) => {
            if let Some(Completed::Published(etag)) = completed {
                kept::record_digest(inner, name, &etag, upload.size, &hash).await;
            }
            if let Some((key, _)) = &upload.kept {
                kept::delete_state(inner, name, key).await;
            }
            upload.release();
            // Interrupted uploads of this name were for an older content.
            kept::forget_name(inner, name, None, why::SUPERSEDED).await;
            Ok(())
        }
        Err(e @ StoreError::AlreadyExists) => {
            upload.not_kept(why::PUBLISH_FAILED).await;
            Err(e)
        }
        Err(e) => {
            // Perhaps only the store's trouble: a resumable upload stays.
            upload.abandon().await;
            Err(e)
        }
    }
}

/// Whether two names cannot be written at once: one is the other, or
/// lies under it.
fn conflict(a: &str, b: &str) -> bool {
    let under =
        |x: &str, y: &str| x.len() > y.len() && x.starts_with(y) && x.as_bytes()[y.len()] == b'/';
    a == b || under(a, b) || under(b, a)
}

/// The batch cut into runs of uploads that do not conflict, in order.
fn runs(batch: &[SmallPut]) -> Vec<Vec<usize>> {
    let mut runs: Vec<Vec<usize>> = Vec::new();
    for (i, put) in batch.iter().enumerate() {
        match runs.last_mut() {
            Some(run) if !run.iter().any(|&j| conflict(&batch[j].name, &put.name)) => run.push(i),
            _ => runs.push(vec![i]),
        }
    }
    runs
}

pub(super) async fn store_batch(
    inner: &Arc<Inner>,
    batch: Vec<SmallPut>,
) -> Vec<Result<blake3::Hash, StoreError>> {
    // One request tells whether a kept upload may need dropping at all; it
    // goes with the checks of the first run.
    let mut any_kept = None;
    let mut results: Vec<Option<Result<blake3::Hash, StoreError>>> =
        batch.iter().map(|_| None).collect();
    for run in runs(&batch) {
        let valid: Vec<usize> = run
            .iter()
            .copied()
            .filter(|&i| validate_name(&batch[i].name).is_ok())
            .collect();
        // Without conditional creates, the names stay this run's from their
        // check to their write (taken in order: no two runs wait for each
        // other).
        let mut locked: Vec<&str> = valid
            .iter()
            .filter(|&&i| !inner.atomic_create && !batch[i].overwrite)
            .map(|&i| batch[i].name.as_str())
            .collect();
        locked.sort_unstable();
        let mut _locks = Vec::with_capacity(locked.len());
        for name in locked {
            _locks.push(inner.locks.lock(name).await);
        }
        let (checks, kept) = futures_util::join!(check_run(inner, &batch, &valid), async {
            match any_kept {
                Some(any) => any,
                None => kept::any(inner).await,
            }
        });
        any_kept = Some(kept);
        let any_kept = kept;
        let stored: Vec<(usize, Result<blake3::Hash, StoreError>)> = stream::iter(run)
            .map(|i| {
                let check = checks.get(&i).cloned().unwrap_or(Check::Free);
                let put = &batch[i];
                async move { (i, store_small(inner, put, check, any_kept).await) }
            })
            .buffered(BATCH_CONCURRENCY)
            .collect()
            .await;
        for (i, result) in stored {
            results[i] = Some(result);
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(failure("an upload of the batch was not stored"))))
        .collect()
}

/// What the checks of a batch found at one of its names.
#[derive(Debug, Clone)]
enum Check {
    /// Nothing in the way.
    Free,
    /// A file of that name.
    File,
    /// A directory of that name, or a file at one of its parents.
    NotAFile,
    /// The checks failed.
    Failed(String),
}

/// Checks the uploads `run` of `batch` (valid names that do not conflict)
/// in a few requests: one listing per directory they are in (see
/// [`names::scan`]), and one HEAD per parent of them.
async fn check_run(inner: &Inner, batch: &[SmallPut], run: &[usize]) -> HashMap<usize, Check> {
    let mut parents: Vec<&str> = run
        .iter()
        .flat_map(|&i| super::keys::parents(&batch[i].name))
        .collect();
    parents.sort_unstable();
    parents.dedup();
    let mut dirs: HashMap<&str, Vec<&str>> = HashMap::new();
    for &i in run {
        let name = batch[i].name.as_str();
        let dir = name.rsplit_once('/').map_or("", |(dir, _)| dir);
        dirs.entry(dir).or_default().push(name);
    }
    for names in dirs.values_mut() {
        names.sort_unstable();
    }
    let (files, scans) = futures_util::join!(
        futures_util::future::join_all(parents.iter().map(|p| names::is_file(inner, p))),
        futures_util::future::join_all(
            dirs.iter()
                .map(|(dir, names)| names::scan(inner, dir, names))
        ),
    );
    let files: HashMap<&str, Result<bool, String>> = parents
        .into_iter()
        .zip(files)
        .map(|(parent, found)| (parent, found.map_err(|e| e.to_string())))
        .collect();
    let mut standing: HashMap<&str, Result<names::Standing, String>> = HashMap::new();
    for ((_, names), scanned) in dirs.iter().zip(scans) {
        match scanned {
            Ok(found) => standing.extend(names.iter().copied().zip(found.into_iter().map(Ok))),
            Err(e) => standing.extend(names.iter().map(|name| (*name, Err(e.to_string())))),
        }
    }
    run.iter()
        .map(|&i| {
            let name = batch[i].name.as_str();
            let mut check = match standing.get(name) {
                Some(Ok(names::Standing::Free)) | None => Check::Free,
                Some(Ok(names::Standing::File)) => Check::File,
                Some(Ok(names::Standing::Dir)) => Check::NotAFile,
                Some(Err(e)) => Check::Failed(e.clone()),
            };
            for parent in super::keys::parents(name) {
                match files.get(parent) {
                    Some(Ok(true)) => check = Check::NotAFile,
                    Some(Err(e)) => check = Check::Failed(e.clone()),
                    _ => {}
                }
            }
            (i, check)
        })
        .collect()
}

/// Verifies and writes one small upload received whole, checked as
/// `check` says.
async fn store_small(
    inner: &Inner,
    put: &SmallPut,
    check: Check,
    any_kept: bool,
) -> Result<blake3::Hash, StoreError> {
    let name = put.name.as_str();
    validate_name(name)?;
    match check {
        Check::Free => {}
        Check::File if put.overwrite => {}
        Check::File => return Err(StoreError::AlreadyExists),
        Check::NotAFile => return Err(StoreError::NotAFile),
        Check::Failed(e) => return Err(failure(e)),
    }
    let hash = blake3::hash(&put.body);
    if put.expected != *hash.as_bytes() {
        return Err(StoreError::Mismatch);
    }
    let create = inner.atomic_create && !put.overwrite;
    let data = Blocks {
        len: put.body.len() as u64,
        full: vec![put.body.clone()],
        current: Vec::new(),
    };
    write_whole(inner, name, data, create, &hash, &token()).await?;
    if any_kept {
        kept::forget_name(inner, name, None, why::SUPERSEDED).await;
    }
    Ok(hash)
}
