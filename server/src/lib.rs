//! The framekit file-transfer server.
//!
//! [`Server::run`] takes an already bound listener and a shutdown future,
//! so tests bind port 0 and drive it directly; [`handler::serve`] serves
//! one connection over any `AsyncRead + AsyncWrite` stream (TCP, TLS, or an
//! in-memory pipe).

pub mod body;
pub mod conn;
#[cfg(fuzzing)]
pub mod fuzzing;
pub mod handler;
pub mod security;
pub mod storage;

use framekit_transfer::{ErrorCode, ErrorReply, Response};
use security::{FailureLimiter, Tokens};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use storage::{LocalStore, Retention, Storage};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

/// The server's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The directory served.
    pub root: PathBuf,
    /// The largest file accepted, in bytes.
    pub max_file_size: u64,
    /// How many connections are served at once; more are refused as busy.
    pub max_connections: usize,
    /// How many of those may come from one address.
    pub max_connections_per_ip: usize,
    /// How long a silent peer is waited for before it is dropped.
    pub idle_timeout: Duration,
    /// On shutdown, how long transfers in flight may take to finish before
    /// they are aborted.
    pub grace_period: Duration,
    /// The accepted access tokens; `None` lets every client in.
    pub tokens: Option<Tokens>,
    /// TLS, if connections are encrypted.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// How long interrupted uploads are kept for resuming, and how much of
    /// them.
    pub retention: Retention,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            root: PathBuf::from("storage"),
            max_file_size: 64 << 30,
            max_connections: 256,
            max_connections_per_ip: 64,
            idle_timeout: Duration::from_secs(30),
            grace_period: Duration::from_secs(10),
            tokens: None,
            tls: None,
            retention: Retention::default(),
        }
    }
}

/// State shared by every connection.
#[derive(Debug)]
pub struct Shared<B = LocalStore> {
    /// Where files are stored.
    pub storage: B,
    /// The settings.
    pub config: Config,
    /// Throttles failed authentications per address.
    pub limiter: FailureLimiter,
    /// Buffers for file bodies.
    pub pool: body::BufferPool,
}

/// How many refused connections are answered at once; beyond that, extra
/// connections are closed without an answer.
const BUSY_RESPONDERS: usize = 64;

/// How long a refused connection is given to say hello and read the answer.
const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

/// A server ready to run.
#[derive(Debug)]
pub struct Server<B = LocalStore> {
    shared: Arc<Shared<B>>,
}

impl Server<LocalStore> {
    /// A server of the directory `config.root`: opens it (creating it if
    /// needed), removes leftovers of uploads in progress when a previous
    /// server stopped, and keeps the interrupted uploads that can still be
    /// resumed.
    pub fn new(config: Config) -> io::Result<Server> {
        let storage = LocalStore::open(&config.root, config.retention)?;
        Ok(Server::with_storage(config, storage))
    }
}

impl<B: Storage> Server<B> {
    /// A server of what `storage` holds.
    pub fn with_storage(config: Config, storage: B) -> Server<B> {
        Server {
            shared: Arc::new(Shared {
                storage,
                config,
                limiter: FailureLimiter::default(),
                pool: body::BufferPool::default(),
            }),
        }
    }

    /// The state shared by connections, to serve streams directly with
    /// [`handler::serve`].
    pub fn shared(&self) -> Arc<Shared<B>> {
        Arc::clone(&self.shared)
    }

    /// Accepts and serves connections until `shutdown` completes. Then it
    /// stops accepting, lets transfers in flight finish for the grace
    /// period, and aborts what is left (uploads not finished are never
    /// published).
    pub async fn run(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let shared = self.shared;
        let slots = Arc::new(Semaphore::new(shared.config.max_connections));
        let busy_slots = Arc::new(Semaphore::new(BUSY_RESPONDERS));
        let per_ip = Arc::new(Mutex::new(HashMap::new()));
        let tracker = TaskTracker::new();
        let stop = CancellationToken::new();
        let abort = CancellationToken::new();
        tokio::pin!(shutdown);
        let sweeper = tokio::spawn(sweep_partials(Arc::clone(&shared)));

        loop {
            let (stream, peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Typically out of file descriptors: wait for some
                        // to be released instead of spinning.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let per_ip = PerIp::claim(&per_ip, peer.ip(), shared.config.max_connections_per_ip);
            match (Arc::clone(&slots).try_acquire_owned(), per_ip) {
                (Ok(permit), Some(per_ip)) => {
                    let shared = Arc::clone(&shared);
                    let stop = stop.clone();
                    let abort = abort.clone();
                    let span = info_span!("conn", %peer);
                    let tls = shared.config.tls.clone().map(TlsAcceptor::from);
                    tracker.spawn(
                        async move {
                            debug!("connected");
                            let served = async {
                                match tls {
                                    None => handler::serve(stream, shared, stop, Some(peer.ip())).await,
                                    Some(acceptor) => {
                                        let idle = shared.config.idle_timeout;
                                        let stream = match tokio::time::timeout(idle, acceptor.accept(stream)).await {
                                            Ok(Ok(stream)) => stream,
                                            Ok(Err(e)) => {
                                                info!(error = %e, "TLS handshake failed");
                                                return Ok(());
                                            }
                                            Err(_) => {
                                                info!("TLS handshake timed out");
                                                return Ok(());
                                            }
                                        };
                                        handler::serve(stream, shared, stop, Some(peer.ip())).await
                                    }
                                }
                            };
                            tokio::select! {
                                result = served => match result {
                                    Ok(()) => debug!("closed"),
                                    Err(e) if e.is_disconnect() => info!(error = %e, "connection dropped"),
                                    Err(e) => warn!(error = %e, "connection closed on protocol error"),
                                },
                                () = abort.cancelled() => warn!("transfer aborted by shutdown"),
                            }
                            drop(permit);
                            drop(per_ip);
                        }
                        .instrument(span),
                    );
                }
                (_, per_ip) => {
                    let reason = if per_ip.is_none() {
                        "the server is at its connection limit for your address; try again later"
                    } else {
                        "the server is at its connection limit; try again later"
                    };
                    if let Ok(permit) = Arc::clone(&busy_slots).try_acquire_owned() {
                        let tls = shared.config.tls.clone().map(TlsAcceptor::from);
                        tracker.spawn(async move {
                            info!(%peer, "refused: too many connections");
                            let _ = tokio::time::timeout(BUSY_TIMEOUT, async {
                                match tls {
                                    None => refuse_busy(stream, reason).await,
                                    Some(acceptor) => {
                                        if let Ok(stream) = acceptor.accept(stream).await {
                                            refuse_busy(stream, reason).await;
                                        }
                                    }
                                }
                            })
                            .await;
                            drop(permit);
                        });
                    }
                }
            }
        }

        drop(listener);
        sweeper.abort();
        info!("shutting down");
        stop.cancel();
        tracker.close();
        if tokio::time::timeout(shared.config.grace_period, tracker.wait())
            .await
            .is_err()
        {
            warn!("grace period over, aborting transfers in flight");
            abort.cancel();
            tracker.wait().await;
        }
    }
}

/// Removes expired interrupted uploads every little while: a quarter of
/// their time to live, between 1 s and 1 min.
async fn sweep_partials<B: Storage>(shared: Arc<Shared<B>>) {
    let period =
        (shared.config.retention.ttl / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let removed = shared.storage.sweep().await;
        if removed > 0 {
            info!(removed, "expired interrupted uploads removed");
        }
    }
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

/// Tells a connection over the limit that the server is busy. The hello is
/// read first, so that closing the socket does not reset the connection
/// before the client has read the answer.
async fn refuse_busy<S: AsyncRead + AsyncWrite + Unpin>(stream: S, reason: &str) {
    let reply = Response::Error(ErrorReply::new(ErrorCode::Busy, reason));
    let mut conn = conn::Conn::new(stream, BUSY_TIMEOUT);
    let _ = conn.read_frame().await;
    if conn.send(&reply).await.is_ok() {
        conn.shutdown().await;
    }
}
