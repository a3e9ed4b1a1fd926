//! The framekit file-transfer server.
//!
//! [`Server::run`] takes an already bound listener and a shutdown future,
//! so tests bind port 0 and drive it directly; [`handler::serve`] serves
//! one connection over any `AsyncRead + AsyncWrite` stream (TCP, TLS, or an
//! in-memory pipe). Files are kept by a [`storage::Storage`] backend: a
//! local directory ([`storage::LocalStore`]) unless
//! [`Server::with_storage`] is given another.

mod accept;
mod body;
mod conn;
#[cfg(fuzzing)]
pub mod fuzzing;
pub mod handler;
mod logging;
pub mod security;
pub mod storage;

pub use conn::{ConnError, Transport};

use accept::Connections;
use security::{FailureLimiter, Tokens};
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use storage::{LocalStore, MinFree, Retention, Storage};
use tokio::net::TcpListener;
use tracing::info;

/// The server's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The directory served.
    pub root: PathBuf,
    /// The largest file accepted, in bytes.
    pub max_file_size: u64,
    /// How many connections are served at once (once they said hello);
    /// more are refused as busy.
    pub max_connections: usize,
    /// How many of those may come from one address.
    pub max_connections_per_ip: usize,
    /// How many connections may be saying hello at once (TLS handshake,
    /// hello, token check), an eighth of them from one address; a newer
    /// one pushes out the oldest that has not finished within a second.
    pub max_pending: usize,
    /// How long a connection may take to say hello, TLS handshake
    /// included (at most the idle timeout).
    pub hello_timeout: Duration,
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
    /// How much of the disk uploads must leave free.
    pub min_free: MinFree,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            root: PathBuf::from("storage"),
            max_file_size: 64 << 30,
            max_connections: 256,
            max_connections_per_ip: 64,
            max_pending: 256,
            hello_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            grace_period: Duration::from_secs(10),
            tokens: None,
            tls: None,
            retention: Retention::default(),
            min_free: MinFree::default(),
        }
    }
}

/// State shared by every connection.
#[derive(Debug)]
pub struct Shared<B = LocalStore> {
    /// Where files are stored.
    pub(crate) storage: B,
    /// The settings.
    pub(crate) config: Config,
    /// Throttles failed authentications per address.
    pub(crate) limiter: FailureLimiter,
    /// Buffers for file bodies.
    pub(crate) pool: body::BufferPool,
}

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
        let storage = LocalStore::open_with(&config.root, config.retention, config.min_free)?;
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
        let connections = Connections::new(Arc::clone(&self.shared));
        let sweeper = tokio::spawn(sweep_partials(Arc::clone(&self.shared)));
        let summaries = tokio::spawn(summarize_logs());
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                (stream, peer) = accept::next_connection(&listener) => {
                    connections.admit(stream, peer);
                }
            }
        }
        drop(listener);
        sweeper.abort();
        summaries.abort();
        info!("shutting down");
        connections.shut_down(self.shared.config.grace_period).await;
        self.shared.storage.close().await;
    }
}

/// Writes the summaries of the throttled log lines, every second.
async fn summarize_logs() {
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        logging::flush_all();
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
