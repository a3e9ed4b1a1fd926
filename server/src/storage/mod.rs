//! Where files are stored: the [`Storage`] trait the connection handler
//! talks to, and its implementations.
//!
//! [`LocalStore`] serves a directory on the local file system,
//! [`S3Store`] a bucket of an S3-compatible object store. A backend
//! implements [`Storage`] and the handle types it names: an [`Upload`]
//! whose body arrives through a [`BodySink`], a [`Download`] whose body
//! leaves through a [`BodySource`], and a [`Listing`]. Names reach a backend
//! as the client sent them; checking them against the protocol's rules
//! ([`validate_name`](framekit_transfer::validate_name)) is the backend's
//! job, as is keeping clients out of whatever it reserves for itself.
//!
//! The handler is generic over the backend (static dispatch): the handle
//! types differ per backend (a local file, a multipart upload), and calls
//! on the body path then cost nothing over calling the backend directly.
//! Choosing a backend at run time costs one `match` where the server is
//! built, and one more copy of the handler in the binary.

pub mod local;
pub mod s3;

use framekit_transfer::{Entry, ErrorCode, FileVersion, Hash, NameError};
use std::future::Future;
use std::io;
use std::ops::Range;

pub use local::{LocalStore, MinFree, Retention};
pub use s3::S3Store;

/// Bodies up to this size are moved in one piece, held in memory.
pub const SMALL_BODY: usize = 64 * 1024;

/// Why a storage operation failed, in terms a client can be told.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The name breaks the protocol's rules.
    #[error("invalid name: {0}")]
    InvalidName(#[from] NameError),
    /// No file of that name.
    #[error("no such file")]
    NotFound,
    /// A file of that name exists and overwriting was not requested.
    #[error("a file of that name already exists")]
    AlreadyExists,
    /// The name is a directory, or one of its parents is a file.
    #[error("the name is a directory or lies under a file")]
    NotAFile,
    /// A directory to be removed on its own still holds something.
    #[error("the directory is not empty")]
    NotEmpty,
    /// Access was denied: resolving the name would leave the root
    /// (through a symlink), or the storage refused.
    #[error("access to that name is denied")]
    Denied,
    /// The storage is full.
    #[error("no space left on the server's disk")]
    NoSpace,
    /// The content does not hash to what the client said it would.
    #[error("the received content does not match the trailer's BLAKE3 hash")]
    Mismatch,
    /// Any other I/O failure.
    #[error("storage error: {0}")]
    Io(io::Error),
}

impl StoreError {
    /// The protocol error code for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            StoreError::InvalidName(_) => ErrorCode::InvalidName,
            StoreError::NotFound => ErrorCode::NotFound,
            StoreError::AlreadyExists => ErrorCode::AlreadyExists,
            StoreError::NotAFile => ErrorCode::NotAFile,
            StoreError::NotEmpty => ErrorCode::NotEmpty,
            StoreError::Denied => ErrorCode::Forbidden,
            StoreError::NoSpace => ErrorCode::NoSpace,
            StoreError::Mismatch => ErrorCode::IntegrityMismatch,
            StoreError::Io(_) => ErrorCode::Internal,
        }
    }

    /// The message sent to the client: no server-side paths or OS details
    /// for internal errors.
    pub fn client_message(&self) -> String {
        match self {
            StoreError::Io(_) => "the server could not complete the operation".to_owned(),
            other => other.to_string(),
        }
    }
}

impl From<io::Error> for StoreError {
    fn from(error: io::Error) -> Self {
        // A loop of symbolic links, and a socket or device that cannot be
        // opened, are names that are not files; the kinds std gives them
        // cannot be matched on stable Rust.
        let not_a_file = [rustix::io::Errno::LOOP, rustix::io::Errno::NXIO]
            .map(|errno| Some(errno.raw_os_error()));
        if not_a_file.contains(&error.raw_os_error()) {
            return StoreError::NotAFile;
        }
        match error.kind() {
            io::ErrorKind::NotFound => StoreError::NotFound,
            io::ErrorKind::AlreadyExists => StoreError::AlreadyExists,
            io::ErrorKind::IsADirectory
            | io::ErrorKind::NotADirectory
            | io::ErrorKind::DirectoryNotEmpty => StoreError::NotAFile,
            // cap-std reports an attempt to leave the root as PermissionDenied.
            io::ErrorKind::PermissionDenied => StoreError::Denied,
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => StoreError::NoSpace,
            _ => StoreError::Io(error),
        }
    }
}

/// What a listing finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// A regular file.
    File(Entry),
    /// A directory, by its full name.
    Dir(String),
}

/// What is known of a file opened for reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// Its size in bytes.
    pub size: u64,
    /// When it was last modified, in nanoseconds since the Unix epoch.
    pub modified_ns: u64,
    /// Its BLAKE3 hash, if the storage knows it without reading the file
    /// (recorded when a verified upload published it).
    pub hash: Option<blake3::Hash>,
}

/// A small upload received whole, to be stored with others in one trip
/// (see [`Storage::store_batch`]).
#[derive(Debug, Clone)]
pub struct SmallPut {
    /// The name to publish it as.
    pub name: String,
    /// Whether an existing file of that name is replaced.
    pub overwrite: bool,
    /// The whole content.
    pub body: bytes::Bytes,
    /// The BLAKE3 hash the client says the content has.
    pub expected: Hash,
}

/// A body buffer and the part of it that holds data.
#[derive(Debug)]
pub struct Chunk {
    /// The buffer.
    pub buf: Vec<u8>,
    /// Where its data is.
    pub range: Range<usize>,
}

impl Chunk {
    /// The data.
    pub fn data(&self) -> &[u8] {
        self.buf.get(self.range.clone()).unwrap_or_default()
    }
}

/// A storage backend: everything the connection handler asks of storage.
///
/// Each method is one trip to the storage (for the local backend, one
/// blocking task), so a request costs as few trips as it can.
pub trait Storage: Send + Sync + 'static {
    /// An upload in progress.
    type Upload: Upload;
    /// A file opened for reading.
    type Download: Download;
    /// A listing in progress.
    type Listing: Listing;

    /// Opens the regular file `name` for reading, with what is known of it.
    fn open_read(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Self::Download, StoreError>> + Send;

    /// Checks that `size` bytes could be published as `name` (a valid name,
    /// not a directory, absent unless `overwrite`, room for it), then
    /// starts a fresh upload, staged where no client can see it.
    ///
    /// A body of unknown length is started with `size` 0: its room is
    /// then checked only as it is written (a full disk fails the upload,
    /// as for any body).
    fn create_upload(
        &self,
        name: &str,
        size: u64,
        overwrite: bool,
    ) -> impl Future<Output = Result<Self::Upload, StoreError>> + Send;

    /// Checks as [`Storage::create_upload`] does, then continues the upload
    /// interrupted under `key` if it was of the same name and size (see
    /// [`Upload::offset`]), or starts a fresh one that is kept under `key`
    /// if it is interrupted. An upload that cannot be kept (the key is in
    /// use, the size is over what is kept) is an ordinary one.
    fn resume_upload(
        &self,
        key: Hash,
        name: &str,
        size: u64,
        overwrite: bool,
    ) -> impl Future<Output = Result<Self::Upload, StoreError>> + Send;

    /// Makes a complete, verified upload visible as `name` in one step:
    /// replacing an existing file if `overwrite`, otherwise failing with
    /// [`StoreError::AlreadyExists`] if the name was taken meanwhile.
    /// Missing parent directories are created. `hash` is the content's
    /// verified BLAKE3 hash, kept for downloads.
    fn publish(
        &self,
        upload: Self::Upload,
        name: &str,
        overwrite: bool,
        hash: blake3::Hash,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Stores small uploads received whole, in order, in one trip: each is
    /// checked as [`Storage::create_upload`] checks, then its content is
    /// hashed and compared with what the client expects
    /// ([`StoreError::Mismatch`]), then stored durably and published as
    /// [`Storage::publish`] does. One result per upload, in order: the
    /// verified hash, or why it was refused.
    fn store_batch(
        &self,
        batch: Vec<SmallPut>,
    ) -> impl Future<Output = Vec<Result<blake3::Hash, StoreError>>> + Send;

    /// Every regular file whose name starts with `prefix`, and with `dirs`
    /// every directory too, in byte order of the names (a directory's with
    /// a `/` appended, so that it comes just before its content).
    fn list(&self, prefix: &str, dirs: bool) -> Self::Listing;

    /// Every directory and regular file below the directory `dir` (the root
    /// if empty), depth first, a directory before its content, siblings in
    /// byte order of their names (a directory's with a `/` appended).
    fn tree(&self, dir: &str) -> Self::Listing;

    /// Describes the regular file `name`.
    fn stat(&self, name: &str) -> impl Future<Output = Result<Entry, StoreError>> + Send;

    /// Describes `name`, a regular file or a directory;
    /// [`StoreError::NotAFile`] for anything else, or a name under a file.
    ///
    /// The default asks [`Storage::stat`], then, if the name is not a file,
    /// whether [`Storage::tree`] can list it; a backend that can tell a
    /// directory in one trip overrides it.
    fn describe(&self, name: &str) -> impl Future<Output = Result<Found, StoreError>> + Send {
        async move {
            match self.stat(name).await {
                Ok(entry) => Ok(Found::File(entry)),
                Err(StoreError::NotAFile) => match self.tree(name).next().await {
                    Some(Err(e)) => Err(e),
                    _ => Ok(Found::Dir(name.to_owned())),
                },
                Err(e) => Err(e),
            }
        }
    }

    /// Deletes the file `name`, and the directories this leaves empty.
    fn delete(&self, name: &str) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Creates the directory `name` and its missing parents; fine if it
    /// exists already.
    fn make_dir(&self, name: &str) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Deletes the directory `name`: with everything in it if `recursive`,
    /// otherwise only if it is empty ([`StoreError::NotEmpty`]). The
    /// directories this leaves empty go too.
    fn delete_dir(
        &self,
        name: &str,
        recursive: bool,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Moves the file or directory `from` to `to`, which appears whole or
    /// not at all (in one step where the backend can): failing with
    /// [`StoreError::AlreadyExists`] if `to` exists, unless `overwrite`.
    /// Missing parents of `to` are created; the directories `from` leaves
    /// empty go.
    fn rename(
        &self,
        from: &str,
        to: &str,
        overwrite: bool,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Removes the interrupted uploads whose time to live is over; returns
    /// how many.
    fn sweep(&self) -> impl Future<Output = usize> + Send;

    /// Waits for what the backend still has to do once the server stops:
    /// the clean-up of uploads dropped when their connections were aborted
    /// (a store reached over the network needs requests for it).
    fn close(&self) -> impl Future<Output = ()> + Send;
}

/// An upload in progress: where its body goes until it is published.
pub trait Upload: Send + Sized + 'static {
    /// Where a streamed body goes.
    type Sink: BodySink<Upload = Self>;

    /// Bytes of the file the upload already holds (a resumed upload): its
    /// body starts there.
    fn offset(&self) -> u64;

    /// Gives an upload that holds nothing yet its whole body, received in
    /// memory: it is stored when the upload is published.
    fn hold(&mut self, body: Vec<u8>);

    /// Starts taking a body of `size` bytes, after what the upload holds,
    /// through `buffers` (the caller's memory budget; the sink gives them
    /// back when it finishes). For a body of unknown length, `size` is the
    /// most it may be (the server's largest file), and the body is what
    /// was taken when the sink finishes complete.
    fn sink(self, size: u64, buffers: Vec<Vec<u8>>) -> Self::Sink;

    /// Ends an upload that failed and must start over: nothing of it is
    /// kept, resumable or not.
    fn discard(self) -> impl Future<Output = ()> + Send;

    /// Ends an upload whose body will not be completed on this connection:
    /// what it holds is kept for resuming if it can be, removed otherwise.
    fn abandon(self) -> impl Future<Output = ()> + Send;
}

/// Where a streamed upload body goes: the backend hashes what it takes
/// (after what the upload held) and stores it.
pub trait BodySink: Send {
    /// The upload the body belongs to.
    type Upload;

    /// An empty buffer for the next body bytes; `None` if the sink has
    /// stopped (a worker failed).
    fn buffer(&mut self) -> impl Future<Output = Option<Vec<u8>>> + Send;

    /// Takes the next body bytes. Fails if the sink has stopped.
    fn take(&mut self, chunk: Chunk) -> impl Future<Output = Result<(), Stopped>> + Send;

    /// No more body bytes will come; `complete` if the whole body arrived.
    /// Waits until everything taken is stored (and, when complete, synced).
    fn finish(self, complete: bool) -> impl Future<Output = SinkEnd<Self::Upload>> + Send;
}

/// A sink or source whose worker stopped unexpectedly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a body worker stopped unexpectedly")]
pub struct Stopped;

/// What a [`BodySink`] ends with.
#[derive(Debug)]
pub struct SinkEnd<U> {
    /// The upload, holding every byte taken; `None` only if a worker failed.
    pub upload: Option<U>,
    /// For a complete body, the hash of the whole file: what the upload
    /// held before, then the body. `None` if it could not be computed
    /// (then `error` says why) or the body was not complete.
    pub hash: Option<blake3::Hash>,
    /// The first storage failure. The sink still took the body to its
    /// end, so the connection stays in step.
    pub error: Option<io::Error>,
    /// The buffers it was given, back.
    pub buffers: Vec<Vec<u8>>,
}

/// A file opened for reading.
pub trait Download: Send + 'static {
    /// Where a streamed body comes from.
    type Source: BodySource;

    /// What is known of the file.
    fn info(&self) -> &FileInfo;

    /// Whether `version` (as a client saw it in an earlier answer) is the
    /// version of the file opened, so that a download may resume.
    fn has_version(&self, version: &FileVersion) -> bool;

    /// Reads a small file (at most [`SMALL_BODY`]
    /// bytes) whole, with the BLAKE3 hash of its content.
    fn read_small(self) -> impl Future<Output = io::Result<(Vec<u8>, blake3::Hash)>> + Send;

    /// Starts reading the file from `offset` on, through `buffers`; the
    /// hash covers the whole file.
    fn source(self, offset: u64, buffers: Vec<Vec<u8>>) -> Self::Source;
}

/// Where a streamed download body comes from.
pub trait BodySource: Send {
    /// The next body bytes; `None` once there are no more (or the source
    /// stopped: [`BodySource::finish`] says why).
    fn next(&mut self) -> impl Future<Output = Option<Chunk>> + Send;

    /// Gives back a buffer whose bytes were sent.
    fn recycle(&mut self, buf: Vec<u8>);

    /// Stops the source and waits for it.
    fn finish(self) -> impl Future<Output = SourceEnd> + Send;
}

/// What a [`BodySource`] ends with.
#[derive(Debug)]
pub struct SourceEnd {
    /// The hash of the whole file, or why it is not known (the file could
    /// not be read).
    pub hash: io::Result<blake3::Hash>,
    /// The buffers it was given and still held, back.
    pub buffers: Vec<Vec<u8>>,
}

/// A listing in progress, handed out as it is found: a backend keeps in
/// memory only what it needs to find the next entries.
pub trait Listing: Send {
    /// The next thing found; `None` at the end. An error ends the listing.
    fn next(&mut self) -> impl Future<Output = Option<Result<Found, StoreError>>> + Send;
}
