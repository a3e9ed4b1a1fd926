//! Taking connections in: the connection limits, TLS, one task per
//! connection, refusals when the server is full, and the shutdown of what
//! is in flight.

use crate::conn::Conn;
use crate::storage::Storage;
use crate::{Shared, handler};
use framekit_transfer::{ErrorCode, ErrorReply, Response};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

/// How many refused connections are answered at once; beyond that, extra
/// connections are closed without an answer.
const BUSY_RESPONDERS: usize = 64;

/// How long a refused connection is given to say hello and read the answer.
const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection's stream: plain TCP, or TLS over it.
type Stream = Either<TcpStream, TlsStream<TcpStream>>;

/// The next connection. An accept error (typically out of file
/// descriptors) is logged and retried after a pause, instead of spinning.
pub(crate) async fn next_connection(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(e) => {
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The connections being served, and what limits them.
pub(crate) struct Connections<B> {
    shared: Arc<Shared<B>>,
    tls: Option<TlsAcceptor>,
    slots: Arc<Semaphore>,
    busy_slots: Arc<Semaphore>,
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
    tracker: TaskTracker,
    /// Cancelled at shutdown: connections stop between requests.
    stop: CancellationToken,
    /// Cancelled when the grace period is over: transfers are aborted.
    abort: CancellationToken,
}

impl<B: Storage> Connections<B> {
    pub(crate) fn new(shared: Arc<Shared<B>>) -> Self {
        Connections {
            tls: shared.config.tls.clone().map(TlsAcceptor::from),
            slots: Arc::new(Semaphore::new(shared.config.max_connections)),
            busy_slots: Arc::new(Semaphore::new(BUSY_RESPONDERS)),
            per_ip: Arc::new(Mutex::new(HashMap::new())),
            tracker: TaskTracker::new(),
            stop: CancellationToken::new(),
            abort: CancellationToken::new(),
            shared,
        }
    }

    /// Serves a new connection in a task of its own if the limits allow,
    /// or tells it the server is busy.
    pub(crate) fn admit(&self, stream: TcpStream, peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let limit = self.shared.config.max_connections_per_ip;
        let per_ip = PerIp::claim(&self.per_ip, peer.ip(), limit);
        match (Arc::clone(&self.slots).try_acquire_owned(), per_ip) {
            (Ok(permit), Some(per_ip)) => {
                let (shared, tls) = (Arc::clone(&self.shared), self.tls.clone());
                let (stop, abort) = (self.stop.clone(), self.abort.clone());
                // The connection's future is made inside the task's: moved
                // in whole, it would be stored twice (11 KB more for each
                // idle connection, measured).
                let task = async move {
                    serve(shared, tls, stream, peer.ip(), stop, abort).await;
                    drop(permit);
                    drop(per_ip);
                };
                self.tracker
                    .spawn(task.instrument(info_span!("conn", %peer)));
            }
            (_, per_ip) => {
                let reason = if per_ip.is_none() {
                    "the server is at its connection limit for your address; try again later"
                } else {
                    "the server is at its connection limit; try again later"
                };
                if let Ok(permit) = Arc::clone(&self.busy_slots).try_acquire_owned() {
                    let tls = self.tls.clone();
                    self.tracker.spawn(async move {
                        refuse(tls, stream, peer, reason).await;
                        drop(permit);
                    });
                }
            }
        }
    }

    /// Stops the connections between requests, lets transfers in flight
    /// finish for `grace`, then aborts what is left (uploads not finished
    /// are never published).
    pub(crate) async fn shut_down(self, grace: Duration) {
        self.stop.cancel();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            warn!("grace period over, aborting transfers in flight");
            self.abort.cancel();
            self.tracker.wait().await;
        }
    }
}

/// Why a TLS handshake did not complete.
enum Handshake {
    Failed(std::io::Error),
    TimedOut,
}

/// Sets up TLS on a new connection, if the server speaks it, within
/// `limit`.
async fn secure(
    tls: Option<TlsAcceptor>,
    stream: TcpStream,
    limit: Duration,
) -> Result<Stream, Handshake> {
    let Some(acceptor) = tls else {
        return Ok(Either::Left(stream));
    };
    match tokio::time::timeout(limit, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Ok(Either::Right(stream)),
        Ok(Err(e)) => Err(Handshake::Failed(e)),
        Err(_) => Err(Handshake::TimedOut),
    }
}

/// Serves one connection until it ends, or until `abort`.
async fn serve<B: Storage>(
    shared: Arc<Shared<B>>,
    tls: Option<TlsAcceptor>,
    stream: TcpStream,
    ip: IpAddr,
    stop: CancellationToken,
    abort: CancellationToken,
) {
    debug!("connected");
    let served = async {
        // The stream is taken out of the handshake's result before the
        // handler starts: a result matched around the handler's future
        // would be stored beside it (1.2 KB more for each connection).
        let stream = match secure(tls, stream, shared.config.idle_timeout).await {
            Ok(stream) => stream,
            Err(Handshake::Failed(e)) => {
                info!(error = %e, "TLS handshake failed");
                return Ok(());
            }
            Err(Handshake::TimedOut) => {
                info!("TLS handshake timed out");
                return Ok(());
            }
        };
        handler::serve(stream, shared, stop, Some(ip)).await
    };
    tokio::select! {
        result = served => match result {
            Ok(()) => debug!("closed"),
            Err(e) if e.is_disconnect() => info!(error = %e, "connection dropped"),
            Err(e) => warn!(error = %e, "connection closed on protocol error"),
        },
        () = abort.cancelled() => warn!("transfer aborted by shutdown"),
    }
}

/// Tells a connection over the limit that the server is busy, within
/// [`BUSY_TIMEOUT`]. The hello is read first, so that closing the socket
/// does not reset the connection before the client has read the answer.
async fn refuse(tls: Option<TlsAcceptor>, stream: TcpStream, peer: SocketAddr, reason: &str) {
    info!(%peer, "refused: too many connections");
    let _ = tokio::time::timeout(BUSY_TIMEOUT, async {
        let Ok(stream) = secure(tls, stream, BUSY_TIMEOUT).await else {
            return;
        };
        let reply = Response::Error(ErrorReply::new(ErrorCode::Busy, reason));
        let mut conn = Conn::new(stream, BUSY_TIMEOUT);
        let _ = conn.read_frame().await;
        if conn.send(&reply).await.is_ok() {
            conn.shutdown().await;
        }
    })
    .await;
}

/// One connection's claim on its address's share of the slots; released
/// when dropped.
struct PerIp {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl PerIp {
    /// Counts a new connection from `ip`, unless it already has `limit`.
    fn claim(
        counts: &Arc<Mutex<HashMap<IpAddr, usize>>>,
        ip: IpAddr,
        limit: usize,
    ) -> Option<PerIp> {
        let mut map = counts.lock().unwrap_or_else(|p| p.into_inner());
        let count = map.entry(ip).or_insert(0);
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(PerIp {
            counts: Arc::clone(counts),
            ip,
        })
    }
}

impl Drop for PerIp {
    fn drop(&mut self) {
        let mut map = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = map.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.ip);
            }
        }
    }
}
