//! The protocol, server side: the handshake, then requests one after the
//! other until the peer leaves.

use crate::Shared;
use crate::body::{self, Transport};
use crate::conn::{Conn, ConnError};
use crate::security::{Access, FailureLimiter};
use crate::storage::local::store::{Found, Store, StoreError, Upload};
use framekit_codec::message;
use framekit_transfer::{
    Delete, ErrorCode, ErrorReply, Get, Hello, List, MAGIC, MAX_EAGER_BODY, MAX_NAME_LEN, MakeDir,
    Put, PutEager, Request, Response, Stat, Trailer, Tree, VERSION, Welcome, validate_name,
};
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Listing entries are sent in batches of about this many bytes.
const LIST_BATCH: usize = 32 * 1024;

/// How a request ended, for the log.
enum Outcome {
    /// It succeeded.
    Done,
    /// It was refused with this error, already sent to the client.
    Refused(ErrorCode),
}

/// What a request moved, for the log.
struct Summary {
    bytes: u64,
    outcome: Outcome,
}

impl Summary {
    fn done(bytes: u64) -> Self {
        Summary {
            bytes,
            outcome: Outcome::Done,
        }
    }

    fn refused(code: ErrorCode) -> Self {
        Summary {
            bytes: 0,
            outcome: Outcome::Refused(code),
        }
    }
}

/// Serves one connection until the peer closes it, breaks the protocol,
/// times out, or `stop` is cancelled while it is between requests.
///
/// `peer` is the client's address, used to slow down its repeated
/// authentication failures (`None` for streams without one).
pub async fn serve<S>(
    stream: S,
    shared: Arc<Shared>,
    stop: CancellationToken,
    peer: Option<IpAddr>,
) -> Result<(), ConnError>
where
    S: Transport,
{
    let mut session = Session {
        conn: Conn::new(stream, shared.config.idle_timeout),
        shared,
        access: Access::ReadWrite,
        peer,
        transferred: 0,
        offset: 0,
    };
    if !session.handshake().await? {
        return Ok(());
    }
    loop {
        let frame = tokio::select! {
            biased;
            () = stop.cancelled() => {
                let bye = ErrorReply::new(ErrorCode::ShuttingDown, "the server is shutting down");
                let _ = session.conn.send(&Response::Error(bye)).await;
                session.conn.shutdown().await;
                return Ok(());
            }
            frame = session.conn.read_frame() => match frame {
                Ok(frame) => frame,
                Err(ConnError::Protocol(e)) if !e.is_truncated() => {
                    // Tell the peer why before hanging up: the stream can no
                    // longer be followed.
                    session.refuse(ErrorCode::BadRequest, e.to_string()).await?;
                    session.conn.shutdown().await;
                    return Err(e.into());
                }
                Err(ConnError::Timeout) => {
                    let idle = session.shared.config.idle_timeout.as_secs();
                    let message = format!("closing the connection after {idle} s without a request");
                    let _ = session.refuse(ErrorCode::Timeout, message).await;
                    session.conn.shutdown().await;
                    return Err(ConnError::Timeout);
                }
                Err(e) => return Err(e),
            },
        };
        let Some(frame) = frame else {
            return Ok(());
        };
        let request: Request = match message::decode(&frame) {
            Ok(request) => request,
            Err(e) => {
                session.refuse(ErrorCode::BadRequest, e.to_string()).await?;
                session.conn.shutdown().await;
                return Err(e.into());
            }
        };
        session.request(request).await?;
    }
}

/// Logs one request: what it was, what it moved, how long it took, how
/// it ended.
fn log_request(
    op: &str,
    name: &str,
    offset: u64,
    bytes: u64,
    ms: u128,
    result: &Result<Summary, ConnError>,
) {
    let name = name.escape_debug();
    match result {
        Ok(Summary {
            outcome: Outcome::Done,
            ..
        }) => info!(op, name = %name, offset, bytes, ms, outcome = "ok"),
        Ok(Summary {
            outcome: Outcome::Refused(code),
            ..
        }) => info!(op, name = %name, offset, bytes, ms, outcome = %code),
        Err(e) => warn!(op, name = %name, offset, bytes, ms, outcome = "failed", error = %e),
    }
}

/// Room for the reads of an eager upload's body: enough for the next
/// few small uploads of a pipelining client to arrive with it.
const EAGER_READ: usize = 64 * 1024;

/// At most this many eager uploads are stored in one trip.
const EAGER_BATCH: usize = 32;

/// At most this many body bytes of eager uploads are stored in one trip
/// (the first one may go over it alone).
const EAGER_BATCH_BYTES: usize = 256 * 1024;

/// An eager upload read whole, waiting to be stored.
struct Eager {
    put: PutEager,
    body: bytes::Bytes,
    trailer: Trailer,
    /// When its request was taken up, for the log.
    started: Instant,
}

/// Why an upload (or another request) is refused.
enum Refusal {
    /// Refused with this code and message.
    Reply(ErrorCode, String),
    /// The store refused it.
    Store(StoreError),
    /// The body does not hash to the trailer's hash.
    Mismatch,
}

impl Refusal {
    /// A write on a read-only connection.
    fn read_only() -> Self {
        Refusal::Reply(
            ErrorCode::Forbidden,
            "this token only allows get, list and stat".into(),
        )
    }

    /// The answer to send; a storage failure is logged here.
    fn reply(self) -> ErrorReply {
        match self {
            Refusal::Reply(code, message) => ErrorReply::new(code, message),
            Refusal::Store(error) => {
                if let StoreError::Io(e) = &error {
                    warn!(error = %e, "storage failure");
                }
                ErrorReply::new(error.code(), error.client_message())
            }
            Refusal::Mismatch => ErrorReply::new(
                ErrorCode::IntegrityMismatch,
                "the received content does not match the trailer's BLAKE3 hash",
            ),
        }
    }
}

/// A trailer frame at the start of `bytes`, if it is whole and well-formed
/// there, and the length of that frame.
fn whole_trailer(bytes: &[u8]) -> Option<(Trailer, usize)> {
    // A trailer's payload is the 32-byte hash alone: its frame starts with
    // the prefix of that length.
    let head = framekit_transfer::frame_config()
        .encode_head(blake3::OUT_LEN)
        .ok()?;
    let payload = bytes
        .strip_prefix(head.as_slice())?
        .get(..blake3::OUT_LEN)?;
    let trailer = message::decode(payload).ok()?;
    Some((trailer, head.as_slice().len() + blake3::OUT_LEN))
}

/// Checks, writes, syncs and publishes one eager upload (blocking).
fn store_eager(store: &Store, eager: Eager) -> Result<blake3::Hash, Refusal> {
    let Eager {
        put, body, trailer, ..
    } = eager;
    store
        .check_put(&put.name, put.overwrite)
        .map_err(Refusal::Store)?;
    let hash = blake3::hash(&body);
    if trailer.hash != *hash.as_bytes() {
        return Err(Refusal::Mismatch);
    }
    let mut upload = store.begin_upload().map_err(Refusal::Store)?;
    let fits = store
        .available_space()
        .map_err(|e| Refusal::Store(e.into()))?
        >= put.size;
    if !fits {
        upload.discard();
        return Err(Refusal::Store(StoreError::NoSpace));
    }
    if let Err(e) = body::write_unwritten(&mut upload, &body) {
        upload.discard();
        return Err(Refusal::Store(e.into()));
    }
    store
        .publish(upload, &put.name, put.overwrite, &hash)
        .map_err(Refusal::Store)?;
    Ok(hash)
}

struct Session<S> {
    conn: Conn<S>,
    shared: Arc<Shared>,
    /// What the client's token allows.
    access: Access,
    peer: Option<IpAddr>,
    /// Body bytes moved by the current request so far, for the log of a
    /// request that fails midway.
    transferred: u64,
    /// Where the current request's body started (past what the other side
    /// already had), for the log.
    offset: u64,
}

impl<S: Transport> Session<S> {
    /// Reads the client's hello and answers it. `Ok(false)` if the client
    /// left without saying anything, or was refused.
    async fn handshake(&mut self) -> Result<bool, ConnError> {
        let frame = match self.conn.read_frame().await {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok(false),
            Err(ConnError::Protocol(e)) if !e.is_truncated() => {
                // Whatever this peer speaks, it is not our framing.
                if let [0x16, 0x03, ..] = self.conn.buffered() {
                    info!("a TLS client connected to this plain-text server");
                }
                self.refuse(ErrorCode::BadMagic, "not a framekit client")
                    .await?;
                self.conn.shutdown().await;
                return Err(e.into());
            }
            Err(e) => return Err(e),
        };
        if !frame.starts_with(&MAGIC) {
            self.refuse(ErrorCode::BadMagic, "not a framekit client")
                .await?;
            self.conn.shutdown().await;
            debug!("refused: bad magic");
            return Ok(false);
        }
        // The hello's layout is the magic, then a u16 version, in every
        // version: look at the version before decoding the rest, which a
        // later version may lay out differently.
        if let Some(&[low, high]) = frame.get(MAGIC.len()..MAGIC.len() + 2)
            && u16::from_le_bytes([low, high]) != VERSION
        {
            let version = u16::from_le_bytes([low, high]);
            let message = format!(
                "the server speaks protocol version {VERSION}, the client version {version}"
            );
            self.refuse(ErrorCode::UnsupportedVersion, message).await?;
            self.conn.shutdown().await;
            info!(version, "refused: unsupported version");
            return Ok(false);
        }
        let hello: Hello = match message::decode(&frame) {
            Ok(hello) => hello,
            Err(e) => {
                self.refuse(ErrorCode::BadRequest, e.to_string()).await?;
                self.conn.shutdown().await;
                return Err(e.into());
            }
        };
        if let Some(tokens) = &self.shared.config.tokens {
            match tokens.check(hello.token.as_deref()) {
                Some(access) => {
                    self.access = access;
                    if let Some(ip) = self.peer {
                        self.shared.limiter.success(ip);
                    }
                }
                None => {
                    let delay = match self.peer {
                        Some(ip) => self.shared.limiter.failure(ip, std::time::Instant::now()),
                        None => FailureLimiter::BASE_DELAY,
                    };
                    let missing = hello.token.is_none();
                    warn!(
                        delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        token = if missing { "missing" } else { "wrong" },
                        "authentication failed"
                    );
                    tokio::time::sleep(delay).await;
                    let message = if missing {
                        "this server requires an access token"
                    } else {
                        "the access token was not accepted"
                    };
                    self.refuse(ErrorCode::Unauthorized, message).await?;
                    self.conn.shutdown().await;
                    return Ok(false);
                }
            }
        }
        let config = &self.shared.config;
        let welcome = Welcome {
            version: VERSION,
            max_file_size: config.max_file_size,
            max_message_len: u32::try_from(framekit_transfer::MAX_MESSAGE_LEN).unwrap_or(u32::MAX),
            idle_timeout_ms: u64::try_from(config.idle_timeout.as_millis()).unwrap_or(u64::MAX),
            read_only: self.access == Access::ReadOnly,
        };
        self.conn.send(&Response::Welcome(welcome)).await?;
        Ok(true)
    }

    /// Handles one request and logs it.
    async fn request(&mut self, request: Request) -> Result<(), ConnError> {
        let started = Instant::now();
        self.transferred = 0;
        self.offset = 0;
        let operation = request.operation();
        let (op, name) = (operation.name(), request.subject().to_owned());
        let writes = operation.writes();
        let result = match request {
            // Its body follows whatever the answer: it checks access
            // itself, once it has read the body.
            Request::PutEager(r) => self.put_eager(r).await,
            _ if writes && self.access == Access::ReadOnly => {
                self.refuse_with(Refusal::read_only()).await
            }
            Request::Put(r) => self.put(r).await,
            Request::Get(r) => self.get(r).await,
            Request::List(r) => self.list(r).await,
            Request::Stat(r) => self.stat(r).await,
            Request::Delete(r) => self.delete(r).await,
            Request::MakeDir(r) => self.make_dir(r).await,
            Request::Tree(r) => self.tree(r).await,
        };
        let ms = started.elapsed().as_millis();
        let bytes = match &result {
            Ok(Summary {
                bytes,
                outcome: Outcome::Done,
            }) => *bytes,
            // A refusal may come after a body (a hash mismatch).
            _ => self.transferred,
        };
        log_request(op, &name, self.offset, bytes, ms, &result);
        result.map(|_| ())
    }

    async fn refuse(
        &mut self,
        code: ErrorCode,
        message: impl Into<String>,
    ) -> Result<Summary, ConnError> {
        self.conn
            .send(&Response::Error(ErrorReply::new(code, message)))
            .await?;
        Ok(Summary::refused(code))
    }

    async fn refuse_store(&mut self, error: StoreError) -> Result<Summary, ConnError> {
        self.refuse_with(Refusal::Store(error)).await
    }

    async fn refuse_with(&mut self, refusal: Refusal) -> Result<Summary, ConnError> {
        let reply = refusal.reply();
        let code = reply.code;
        self.conn.send(&Response::Error(reply)).await?;
        Ok(Summary::refused(code))
    }

    /// Why an upload of `size` bytes as `name` is refused before the file
    /// system is asked, if it is.
    fn upload_refusal(&self, name: &str, size: u64) -> Option<Refusal> {
        if let Err(e) = validate_name(name) {
            return Some(Refusal::Store(e.into()));
        }
        let max = self.shared.config.max_file_size;
        (size > max).then(|| {
            Refusal::Reply(
                ErrorCode::TooLarge,
                format!("{size} bytes is over the server's limit of {max} bytes"),
            )
        })
    }

    /// Runs blocking file-system work off the async threads.
    async fn blocking<T, F>(&self, f: F) -> Result<T, ConnError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> T + Send + 'static,
    {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || f(&shared.store))
            .await
            .map_err(|e| ConnError::Io(io::Error::other(e)))
    }

    async fn put(&mut self, put: Put) -> Result<Summary, ConnError> {
        if let Some(refusal) = self.upload_refusal(&put.name, put.size) {
            return self.refuse_with(refusal).await;
        }
        // A small body arrives in one piece: there is nothing to resume.
        let key = put
            .resume_key
            .filter(|_| put.size > body::SMALL_BODY as u64);
        let (name, size, overwrite) = (put.name.clone(), put.size, put.overwrite);
        let prepared = self
            .blocking(move |store| -> Result<Upload, StoreError> {
                store.check_put(&name, overwrite)?;
                let upload = match key {
                    Some(key) => store.begin_resumable(key, &name, size)?,
                    None => store.begin_upload()?,
                };
                // Refused for space, a resumable upload stays as it was.
                if store.available_space()? < size - upload.offset() {
                    return Err(StoreError::NoSpace);
                }
                Ok(upload)
            })
            .await?;
        let upload = match prepared {
            Ok(upload) => upload,
            Err(e) => return self.refuse_store(e).await,
        };
        let offset = upload.offset();
        self.offset = offset;
        if offset > 0 {
            info!(name = %put.name.escape_debug(), offset, size, "resuming an interrupted upload");
        }
        if let Err(e) = self.conn.send(&Response::PutReady { offset }).await {
            self.blocking(move |_| drop(upload)).await?;
            return Err(e);
        }

        let received =
            match body::receive(&mut self.conn, &self.shared.pool, upload, size - offset).await {
                Ok(received) => received,
                Err(interrupted) => {
                    self.transferred = interrupted.received;
                    // What arrived is kept for resuming, if the upload can be.
                    let upload = interrupted.upload;
                    self.blocking(move |_| drop(upload)).await?;
                    return Err(interrupted.error);
                }
            };
        self.transferred = size - offset;
        let (mut upload, hash, write_error) = (received.upload, received.hash, received.error);
        let unwritten = received.unwritten;
        let trailer: Trailer = match self.conn.read_message().await {
            Ok(trailer) => trailer,
            Err(ConnError::Protocol(e)) if !e.is_truncated() => {
                upload.discard();
                self.refuse(ErrorCode::BadRequest, format!("expected a trailer: {e}"))
                    .await?;
                // Hang up like every other protocol error: closing with the
                // peer's surplus unread would reset the connection and
                // destroy the answers still queued for it.
                self.conn.shutdown().await;
                return Err(e.into());
            }
            Err(e) => {
                // The whole body arrived: it is kept if it can be, and a
                // resumed upload only needs to send the trailer.
                self.blocking(move |_| drop(upload)).await?;
                return Err(e);
            }
        };
        // A failed upload is removed before the client hears about it.
        if let Some(error) = write_error {
            upload.discard();
            return self.refuse_store(error.into()).await;
        }
        if trailer.hash != *hash.as_bytes() {
            upload.discard();
            return self.refuse_with(Refusal::Mismatch).await;
        }
        let name = put.name.clone();
        match self
            .blocking(move |store| {
                if let Err(e) = body::write_unwritten(&mut upload, &unwritten) {
                    upload.discard();
                    return Err(StoreError::from(e));
                }
                store.publish(upload, &name, overwrite, &hash)
            })
            .await?
        {
            Ok(()) => {
                let done = Response::PutDone {
                    size,
                    hash: *hash.as_bytes(),
                };
                self.conn.send(&done).await?;
                Ok(Summary::done(size - offset))
            }
            Err(e) => self.refuse_store(e).await,
        }
    }

    /// An upload whose body and trailer follow the request at once: they
    /// are read whole before anything is decided, so that the connection
    /// stays in step whatever the answer; then the checks of a put, the
    /// hash, and the writing and publishing on a blocking thread.
    ///
    /// Eager uploads that a pipelining client sent behind this one, and
    /// that have already arrived whole, are taken along: one trip to the
    /// blocking thread stores them all, and their answers leave in one
    /// write. Each is still checked, answered and logged on its own, in
    /// order.
    async fn put_eager(&mut self, put: PutEager) -> Result<Summary, ConnError> {
        let Some(len) = usize::try_from(put.size)
            .ok()
            .filter(|_| put.size <= MAX_EAGER_BODY)
        else {
            let message = format!(
                "an eager upload carries at most {MAX_EAGER_BODY} bytes, not {}",
                put.size
            );
            self.refuse(ErrorCode::BadRequest, message.clone()).await?;
            self.conn.shutdown().await;
            return Err(ConnError::Violation(message));
        };
        let body = match self.conn.read_body_bytes(len, EAGER_READ).await {
            Ok(body) => body,
            Err((arrived, e)) => {
                self.transferred = arrived as u64;
                return Err(e);
            }
        };
        self.transferred = put.size;
        let trailer: Trailer = match self.conn.read_message().await {
            Ok(trailer) => trailer,
            Err(ConnError::Protocol(e)) if !e.is_truncated() => {
                self.refuse(ErrorCode::BadRequest, format!("expected a trailer: {e}"))
                    .await?;
                self.conn.shutdown().await;
                return Err(e.into());
            }
            Err(e) => return Err(e),
        };

        let mut batch = vec![Eager {
            put,
            body,
            trailer,
            started: Instant::now(),
        }];
        let mut bytes = len;
        while batch.len() < EAGER_BATCH && bytes < EAGER_BATCH_BYTES {
            let Some(next) = self.buffered_eager() else {
                break;
            };
            bytes += next.body.len();
            batch.push(next);
        }

        // The checks that need no file system, then the rest, for all of
        // them in one trip.
        let checked: Vec<(Eager, Option<Refusal>)> = batch
            .into_iter()
            .map(|eager| {
                let refusal = self.eager_refusal(&eager.put);
                (eager, refusal)
            })
            .collect();
        let logged: Vec<(String, u64, Instant)> = checked
            .iter()
            .map(|(eager, _)| (eager.put.name.clone(), eager.put.size, eager.started))
            .collect();
        let results: Vec<Result<blake3::Hash, Refusal>> =
            if checked.iter().all(|(_, refusal)| refusal.is_some()) {
                checked
                    .into_iter()
                    .filter_map(|(_, refusal)| refusal)
                    .map(Err)
                    .collect()
            } else {
                self.blocking(move |store| {
                    checked
                        .into_iter()
                        .map(|(eager, refusal)| match refusal {
                            Some(refusal) => Err(refusal),
                            None => store_eager(store, eager),
                        })
                        .collect()
                })
                .await?
            };

        let mut summaries = Vec::with_capacity(results.len());
        for (result, (_, size, _)) in results.into_iter().zip(&logged) {
            let (response, summary) = match result {
                Ok(hash) => (
                    Response::PutDone {
                        size: *size,
                        hash: *hash.as_bytes(),
                    },
                    Summary::done(*size),
                ),
                Err(refusal) => {
                    let reply = refusal.reply();
                    let summary = Summary::refused(reply.code);
                    (Response::Error(reply), summary)
                }
            };
            self.conn.queue(&response)?;
            summaries.push(summary);
        }
        let flushed = self.conn.flush().await;

        // The first is logged by `request`, the others here (stored even if
        // their answers could not be sent).
        let mut summaries = summaries.into_iter();
        let first = summaries.next().unwrap_or(Summary::done(0));
        for (summary, (name, size, started)) in summaries.zip(logged.iter().skip(1)) {
            log_request(
                "put",
                name,
                0,
                *size,
                started.elapsed().as_millis(),
                &Ok(summary),
            );
        }
        flushed?;
        Ok(first)
    }

    /// The next eager upload, if its request, body and trailer have all
    /// arrived already; otherwise nothing is taken.
    fn buffered_eager(&mut self) -> Option<Eager> {
        let frame = self.conn.buffered_frame()?;
        let put = match message::decode::<Request>(&frame) {
            Ok(Request::PutEager(put)) if put.size <= MAX_EAGER_BODY => put,
            _ => {
                self.conn.unread(frame);
                return None;
            }
        };
        let len = usize::try_from(put.size).unwrap_or(usize::MAX);
        // The trailer must be whole and well-formed too: a malformed one is
        // answered by the ordinary path, after the uploads before it.
        let trailer = self.conn.buffered().get(len..).and_then(whole_trailer);
        let Some((trailer, trailer_len)) = trailer else {
            self.conn.unread(frame);
            return None;
        };
        let body = self.conn.take_buffered_bytes(len);
        let _ = self.conn.take_buffered_bytes(trailer_len);
        Some(Eager {
            put,
            body,
            trailer,
            started: Instant::now(),
        })
    }

    /// Why an eager upload is refused before the file system is asked, if
    /// it is.
    fn eager_refusal(&self, put: &PutEager) -> Option<Refusal> {
        if self.access == Access::ReadOnly {
            return Some(Refusal::read_only());
        }
        self.upload_refusal(&put.name, put.size)
    }

    async fn get(&mut self, get: Get) -> Result<Summary, ConnError> {
        let name = get.name.clone();
        let opened = self
            .blocking(move |store| {
                let (file, entry) = store.open_read(&name)?;
                let known = store.known_hash(&name, &file);
                Ok::<_, StoreError>((file, entry, known))
            })
            .await?;
        let (file, entry, known) = match opened {
            Ok(opened) => opened,
            Err(e) => return self.refuse_store(e).await,
        };
        let offset = match get.if_version {
            Some(version) if version == entry.version() && get.offset <= entry.size => get.offset,
            _ => 0,
        };
        self.offset = offset;
        let ready = Response::GetReady {
            size: entry.size,
            offset,
            modified_ns: entry.modified_ns,
        };
        self.conn.send(&ready).await?;
        let hash = body::send(
            &mut self.conn,
            &self.shared.pool,
            file,
            entry.size,
            offset,
            known,
            &mut self.transferred,
        )
        .await?;
        self.conn
            .send(&Trailer {
                hash: *hash.as_bytes(),
            })
            .await?;
        Ok(Summary::done(entry.size - offset))
    }

    async fn list(&mut self, list: List) -> Result<Summary, ConnError> {
        if list.prefix.len() > MAX_NAME_LEN {
            return self
                .refuse(ErrorCode::InvalidName, "the prefix is longer than any name")
                .await;
        }
        let prefix = list.prefix;
        self.stream_listing(move |store, send| {
            store.list(&prefix, &mut |entry| send(Response::Entry(entry)))
        })
        .await
    }

    async fn tree(&mut self, tree: Tree) -> Result<Summary, ConnError> {
        self.stream_listing(move |store, send| {
            store.tree(&tree.dir, &mut |found| {
                send(match found {
                    Found::File(entry) => Response::Entry(entry),
                    Found::Dir(name) => Response::Directory { name },
                })
            })
        })
        .await
    }

    /// Sends what `walk` finds (on a blocking thread) as it finds it, in
    /// batches, then `ListEnd` with the count, or the error that stopped
    /// the walk. The walk stops early if the connection side goes away.
    async fn stream_listing<F>(&mut self, walk: F) -> Result<Summary, ConnError>
    where
        F: FnOnce(&Store, &mut dyn FnMut(Response) -> bool) -> Result<(), StoreError>
            + Send
            + 'static,
    {
        let (tx, mut rx) = mpsc::channel(256);
        let shared = Arc::clone(&self.shared);
        let walker = tokio::task::spawn_blocking(move || {
            walk(&shared.store, &mut |response| {
                tx.blocking_send(response).is_ok()
            })
        });
        let mut count = 0u64;
        while let Some(response) = rx.recv().await {
            self.conn.queue(&response)?;
            count += 1;
            if self.conn.queued() >= LIST_BATCH {
                self.conn.flush().await?;
            }
        }
        let result = walker
            .await
            .map_err(|e| ConnError::Io(io::Error::other(e)))?;
        match result {
            Ok(()) => {
                self.conn.queue(&Response::ListEnd { count })?;
                self.conn.flush().await?;
                Ok(Summary::done(count))
            }
            Err(e) => self.refuse_store(e).await,
        }
    }

    async fn make_dir(&mut self, make: MakeDir) -> Result<Summary, ConnError> {
        match self
            .blocking(move |store| store.make_dir(&make.name))
            .await?
        {
            Ok(()) => {
                self.conn.send(&Response::DirMade).await?;
                Ok(Summary::done(0))
            }
            Err(e) => self.refuse_store(e).await,
        }
    }

    async fn stat(&mut self, stat: Stat) -> Result<Summary, ConnError> {
        match self.blocking(move |store| store.stat(&stat.name)).await? {
            Ok(entry) => {
                self.conn.send(&Response::Entry(entry)).await?;
                Ok(Summary::done(0))
            }
            Err(e) => self.refuse_store(e).await,
        }
    }

    async fn delete(&mut self, delete: Delete) -> Result<Summary, ConnError> {
        match self
            .blocking(move |store| store.delete(&delete.name))
            .await?
        {
            Ok(()) => {
                self.conn.send(&Response::Deleted).await?;
                Ok(Summary::done(0))
            }
            Err(e) => self.refuse_store(e).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, Server};
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn a_trailer_is_taken_from_the_buffer_only_when_whole_and_well_formed() {
        let hash = *blake3::hash(b"body").as_bytes();
        let frame =
            message::to_frame(&framekit_transfer::frame_config(), &Trailer { hash }).unwrap();
        let mut buffered = frame.to_vec();
        buffered.extend_from_slice(b"next request");
        let (trailer, len) = whole_trailer(&buffered).unwrap();
        assert_eq!((trailer.hash, len), (hash, frame.len()));
        // Not all there yet.
        assert!(whole_trailer(&frame[..frame.len() - 1]).is_none());
        // A frame of another length is not a trailer.
        let mut longer = frame.to_vec();
        longer[3] += 1;
        longer.push(0);
        assert!(whole_trailer(&longer).is_none());
    }

    /// A disk that fills up mid-upload (`/dev/full` fails every write with
    /// ENOSPC): the body is still drained so the connection stays in step,
    /// and the error is reported.
    #[tokio::test]
    async fn disk_full_mid_body_is_reported_after_draining_the_body() {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::new(Config {
            root: dir.path().join("root"),
            ..Config::default()
        })
        .unwrap();
        let (mut client, server_end) = tokio::io::duplex(64 * 1024);
        let mut session = Session {
            conn: Conn::new(server_end, Duration::from_secs(5)),
            shared: server.shared(),
            access: Access::ReadWrite,
            peer: None,
            transferred: 0,
            offset: 0,
        };
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let upload = session.shared.store.upload_into(full);
        let body: Vec<u8> = (0..1_000_000u32).map(|i| i.to_le_bytes()[0]).collect();
        let sender = tokio::spawn(async move {
            client.write_all(&body).await.unwrap();
            client.write_all(b"next").await.unwrap();
            client
        });
        let shared = Arc::clone(&session.shared);
        let received = body::receive(&mut session.conn, &shared.pool, upload, 1_000_000)
            .await
            .expect("the body arrives whole");
        let error = received.error.expect("the write error is kept");
        assert_eq!(error.kind(), io::ErrorKind::StorageFull);
        assert_eq!(StoreError::from(error).code(), ErrorCode::NoSpace);
        let body: Vec<u8> = (0..1_000_000u32).map(|i| i.to_le_bytes()[0]).collect();
        assert_eq!(received.hash, blake3::hash(&body));
        // The bytes after the body are still there for the next message.
        let mut next = [0u8; 4];
        session.conn.read_body_exact(&mut next).await.unwrap();
        assert_eq!(&next, b"next");
        drop(sender.await.unwrap());
    }
}
