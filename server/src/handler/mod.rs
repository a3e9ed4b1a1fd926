//! The protocol, server side: the handshake, then requests one after the
//! other until the peer leaves.

mod admin;
mod download;
mod handshake;
mod listing;
mod upload;

use crate::Shared;
use crate::Transport;
use crate::conn::{Conn, ConnError};
use crate::logging::{REQUEST_FAILED, STORAGE_FAILURE};
use crate::security::Access;
use crate::storage::{Storage, StoreError};
use framekit_codec::message;
use framekit_transfer::{ErrorCode, ErrorReply, Request, Response};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

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
pub async fn serve<S, B>(
    stream: S,
    shared: Arc<Shared<B>>,
    stop: CancellationToken,
    peer: Option<IpAddr>,
) -> Result<(), ConnError>
where
    S: Transport,
    B: Storage,
{
    match greet(stream, shared, peer, None).await? {
        Some(greeted) => greeted.serve(stop).await,
        None => Ok(()),
    }
}

/// Reads a connection's hello and checks it (and its token): `None` if the
/// client left without a word or was refused (it was told why). The whole
/// hello must arrive by `deadline`, if there is one, else within the idle
/// timeout.
pub(crate) async fn greet<S, B>(
    stream: S,
    shared: Arc<Shared<B>>,
    peer: Option<IpAddr>,
    deadline: Option<tokio::time::Instant>,
) -> Result<Option<Greeted<S, B>>, ConnError>
where
    S: Transport,
    B: Storage,
{
    let mut session = Session {
        conn: Conn::new(stream, shared.config.idle_timeout),
        shared,
        access: Access::ReadWrite,
        peer,
        transferred: 0,
        offset: 0,
    };
    Ok(session
        .hello(deadline)
        .await?
        .then_some(Greeted { session }))
}

/// A connection whose hello was accepted, not welcomed yet: the server
/// decides whether it has room for it.
pub(crate) struct Greeted<S, B> {
    session: Session<S, B>,
}

impl<S: Transport, B: Storage> Greeted<S, B> {
    /// Welcomes the client and serves its requests until it leaves, breaks
    /// the protocol, times out, or `stop` is cancelled between requests.
    pub(crate) async fn serve(mut self, stop: CancellationToken) -> Result<(), ConnError> {
        self.session.welcome().await?;
        self.session.requests(stop).await
    }

    /// Refuses the client with `code` and `message`, and closes.
    pub(crate) async fn refuse(mut self, code: ErrorCode, message: &str) {
        if self.session.refuse(code, message).await.is_ok() {
            self.session.conn.shutdown().await;
        }
    }
}

impl<S: Transport, B: Storage> Session<S, B> {
    /// Reads and carries out requests, one after the other.
    async fn requests(&mut self, stop: CancellationToken) -> Result<(), ConnError> {
        let session = self;
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
        Err(e) => REQUEST_FAILED.log(|| {
            warn!(op, name = %name, offset, bytes, ms, outcome = "failed", error = %e);
        }),
    }
}

/// Why an upload (or another request) is refused.
enum Refusal {
    /// Refused with this code and message.
    Reply(ErrorCode, String),
    /// The store refused it.
    Store(StoreError),
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
                    STORAGE_FAILURE.log(|| warn!(error = %e, "storage failure"));
                }
                ErrorReply::new(error.code(), error.client_message())
            }
        }
    }
}

struct Session<S, B> {
    conn: Conn<S>,
    shared: Arc<Shared<B>>,
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

impl<S: Transport, B: Storage> Session<S, B> {
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
            Request::Rename(r) => self.rename(r).await,
            Request::DeleteDir(r) => self.delete_dir(r).await,
            Request::Describe(r) => self.describe(r).await,
            Request::ListAll(r) => self.list_all(r).await,
            Request::PutStream(r) => self.put_stream(r).await,
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
}
