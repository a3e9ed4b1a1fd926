//! Taking connections in: admission before and after the hello, TLS, one
//! task per connection, refusals when the server is full, and the
//! shutdown of what is in flight.
//!
//! A connection is admitted twice. Until its hello has been read and its
//! token checked it is *pending*: pending connections have a pool of their
//! own (`--max-pending`, and an eighth of it per address), and the whole
//! hello (with the TLS handshake) must arrive within the hello deadline.
//! When the pool is full, a new connection takes the place of the oldest
//! pending one of the address that holds the most, provided that one has
//! had a second to say hello; so connections that do not complete their
//! hello cannot keep others out for long, while those that do complete it
//! in a moment are never pushed out. Then a *session* slot is taken
//! (`--max-connections`, `--max-connections-per-ip`): the slots of the
//! sessions are never held by a peer that has not said hello, nor, with
//! `--token-file`, by one without a valid token.

use crate::conn::Conn;
use crate::logging::{ACCEPT_FAILED, DROPPED, PROTOCOL_ERROR, PUSHED_OUT, REFUSED, TLS_FAILED};
use crate::storage::Storage;
use crate::{Shared, handler};
use framekit_transfer::{ErrorCode, ErrorReply, Response};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info_span, warn};

/// How many refused connections are answered at once; beyond that, extra
/// connections are closed without an answer.
const BUSY_RESPONDERS: usize = 64;

/// How long a refused connection is given to say hello and read the answer.
const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a pending connection is safe from being pushed out by a new
/// one: a client that means it says hello well within this.
const PENDING_GRACE: Duration = Duration::from_secs(1);

/// A connection's stream: plain TCP, or TLS over it.
type Stream = Either<TcpStream, TlsStream<TcpStream>>;

/// The next connection. An accept error (typically out of file
/// descriptors) is logged and retried after a pause, instead of spinning.
pub(crate) async fn next_connection(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(e) => {
                ACCEPT_FAILED.log(|| warn!(error = %e, "accept failed"));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The connections being served, and what limits them.
pub(crate) struct Connections<B> {
    shared: Arc<Shared<B>>,
    tls: Option<TlsAcceptor>,
    pending: Arc<Pending>,
    sessions: Arc<Sessions>,
    busy_slots: Arc<Semaphore>,
    tracker: TaskTracker,
    /// Cancelled at shutdown: connections stop between requests.
    stop: CancellationToken,
    /// Cancelled when the grace period is over: transfers are aborted.
    abort: CancellationToken,
}

impl<B: Storage> Connections<B> {
    pub(crate) fn new(shared: Arc<Shared<B>>) -> Self {
        let config = &shared.config;
        Connections {
            tls: config.tls.clone().map(TlsAcceptor::from),
            pending: Arc::new(Pending::new(config.max_pending)),
            sessions: Arc::new(Sessions {
                slots: Arc::new(Semaphore::new(config.max_connections)),
                per_ip: Arc::new(Mutex::new(HashMap::new())),
                per_ip_limit: config.max_connections_per_ip,
            }),
            busy_slots: Arc::new(Semaphore::new(BUSY_RESPONDERS)),
            tracker: TaskTracker::new(),
            stop: CancellationToken::new(),
            abort: CancellationToken::new(),
            shared,
        }
    }

    /// Serves a new connection in a task of its own if the pending pool
    /// has room for it, or tells it the server is busy.
    pub(crate) fn admit(&self, stream: TcpStream, peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let Some(ticket) = self.pending.enter(peer.ip(), Instant::now()) else {
            REFUSED.log(|| tracing::info!(%peer, "refused: too many connections saying hello"));
            self.refuse(
                stream,
                peer,
                "the server is at its limit of connections saying hello; try again later",
            );
            return;
        };
        let (shared, tls) = (Arc::clone(&self.shared), self.tls.clone());
        let (stop, abort) = (self.stop.clone(), self.abort.clone());
        let sessions = Arc::clone(&self.sessions);
        // The connection's future is made inside the task's: moved in
        // whole, it would be stored twice (11 KB more for each idle
        // connection, measured).
        let task = async move {
            let connection = Connection {
                shared,
                tls,
                ip: peer.ip(),
                sessions,
            };
            connection.serve(stream, ticket, stop, abort).await;
        };
        self.tracker
            .spawn(task.instrument(info_span!("conn", %peer)));
    }

    /// Tells `stream` the server is busy, if not too many are being told
    /// already; otherwise closes it.
    fn refuse(&self, stream: TcpStream, peer: SocketAddr, reason: &'static str) {
        if let Ok(permit) = Arc::clone(&self.busy_slots).try_acquire_owned() {
            let tls = self.tls.clone();
            self.tracker.spawn(async move {
                refuse(tls, stream, peer, reason).await;
                drop(permit);
            });
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

/// What serving one connection needs.
struct Connection<B> {
    shared: Arc<Shared<B>>,
    tls: Option<TlsAcceptor>,
    ip: IpAddr,
    sessions: Arc<Sessions>,
}

impl<B: Storage> Connection<B> {
    /// Serves the connection until it ends, or until `abort`: its hello
    /// while it is pending (unless it is pushed out), then, if a session
    /// slot is free, its requests.
    async fn serve(
        self,
        stream: TcpStream,
        ticket: Ticket,
        stop: CancellationToken,
        abort: CancellationToken,
    ) {
        debug!("connected");
        let config = &self.shared.config;
        let deadline = Instant::now() + config.hello_timeout.min(config.idle_timeout);
        let greeted = tokio::select! {
            () = ticket.pushed_out.cancelled() => {
                PUSHED_OUT.log(|| debug!("closed before its hello: a newer connection needed the room"));
                return;
            }
            () = abort.cancelled() => return,
            greeted = self.greet(stream, deadline) => greeted,
        };
        drop(ticket);
        let greeted = match greeted {
            Ok(Some(greeted)) => greeted,
            Ok(None) => return,
            Err(e) => return log_end(&Err(e)),
        };
        let Some(slot) = self.sessions.claim(self.ip) else {
            let reason = self.sessions.why_full(self.ip);
            REFUSED.log(|| tracing::info!("refused after its hello: {reason}"));
            greeted.refuse(ErrorCode::Busy, reason).await;
            return;
        };
        tokio::select! {
            result = greeted.serve(stop) => log_end(&result),
            () = abort.cancelled() => warn!("transfer aborted by shutdown"),
        }
        drop(slot);
    }

    /// Sets up TLS if the server speaks it, and reads and checks the hello,
    /// all by `deadline`.
    async fn greet(
        &self,
        stream: TcpStream,
        deadline: Instant,
    ) -> Result<Option<handler::Greeted<Stream, B>>, crate::ConnError> {
        // The stream is taken out of the handshake's result before the
        // handler starts: a result matched around the handler's future
        // would be stored beside it (1.2 KB more for each connection).
        let stream = match secure(self.tls.clone(), stream, deadline).await {
            Ok(stream) => stream,
            Err(Handshake::Failed(e)) => {
                TLS_FAILED.log(|| tracing::info!(error = %e, "TLS handshake failed"));
                return Ok(None);
            }
            Err(Handshake::TimedOut) => {
                TLS_FAILED.log(|| tracing::info!("TLS handshake timed out"));
                return Ok(None);
            }
        };
        handler::greet(
            stream,
            Arc::clone(&self.shared),
            Some(self.ip),
            Some(deadline),
        )
        .await
    }
}

/// Logs how a connection ended.
fn log_end(result: &Result<(), crate::ConnError>) {
    match result {
        Ok(()) => debug!("closed"),
        Err(e) if e.is_disconnect() => {
            DROPPED.log(|| tracing::info!(error = %e, "connection dropped"));
        }
        Err(e) => PROTOCOL_ERROR.log(|| warn!(error = %e, "connection closed on protocol error")),
    }
}

/// Why a TLS handshake did not complete.
enum Handshake {
    Failed(std::io::Error),
    TimedOut,
}

/// Sets up TLS on a new connection, if the server speaks it, by
/// `deadline`.
async fn secure(
    tls: Option<TlsAcceptor>,
    stream: TcpStream,
    deadline: Instant,
) -> Result<Stream, Handshake> {
    let Some(acceptor) = tls else {
        return Ok(Either::Left(stream));
    };
    match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Ok(Either::Right(stream)),
        Ok(Err(e)) => Err(Handshake::Failed(e)),
        Err(_) => Err(Handshake::TimedOut),
    }
}

/// Tells a connection over the limit that the server is busy, within
/// [`BUSY_TIMEOUT`]. The hello is read first, so that closing the socket
/// does not reset the connection before the client has read the answer.
async fn refuse(tls: Option<TlsAcceptor>, stream: TcpStream, peer: SocketAddr, reason: &str) {
    let _ = tokio::time::timeout(BUSY_TIMEOUT, async {
        let deadline = Instant::now() + BUSY_TIMEOUT;
        let Ok(stream) = secure(tls, stream, deadline).await else {
            return;
        };
        let reply = Response::Error(ErrorReply::new(ErrorCode::Busy, reason));
        let mut conn = Conn::new(stream, BUSY_TIMEOUT);
        let _ = conn.read_frame().await;
        if conn.send(&reply).await.is_ok() {
            conn.shutdown().await;
        }
    })
    .instrument(info_span!("conn", %peer))
    .await;
}

/// Connections that have not said hello yet (or whose token is being
/// checked), in the order they arrived.
struct Pending {
    state: Mutex<PendingState>,
    limit: usize,
    per_ip: usize,
}

#[derive(Default)]
struct PendingState {
    next: u64,
    /// By order of arrival: the address, when, and how to push it out.
    entries: BTreeMap<u64, (IpAddr, Instant, CancellationToken)>,
    per_ip: HashMap<IpAddr, usize>,
}

impl PendingState {
    fn remove(&mut self, id: u64) -> Option<CancellationToken> {
        let (ip, _, token) = self.entries.remove(&id)?;
        if let Some(count) = self.per_ip.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                self.per_ip.remove(&ip);
            }
        }
        Some(token)
    }

    /// The oldest pending connection that has had its grace, from an
    /// address with the most pending connections if one of them has, else
    /// from any.
    fn oldest_of_busiest(&self, now: Instant) -> Option<u64> {
        let most = self.per_ip.values().copied().max()?;
        let graced = || {
            self.entries
                .iter()
                .filter(|(_, (_, since, _))| now.duration_since(*since) >= PENDING_GRACE)
        };
        graced()
            .find(|(_, (ip, _, _))| self.per_ip.get(ip) == Some(&most))
            .or_else(|| graced().next())
            .map(|(id, _)| *id)
    }

    /// The oldest pending connection from `ip`, if it has had its grace.
    fn oldest_of(&self, ip: IpAddr, now: Instant) -> Option<u64> {
        self.entries
            .iter()
            .find(|(_, (from, _, _))| *from == ip)
            .filter(|(_, (_, since, _))| now.duration_since(*since) >= PENDING_GRACE)
            .map(|(id, _)| *id)
    }
}

impl Pending {
    fn new(limit: usize) -> Pending {
        Pending {
            state: Mutex::new(PendingState::default()),
            limit: limit.max(1),
            per_ip: (limit / 8).max(1),
        }
    }

    /// Makes room for a connection from `ip`, pushing out an older pending
    /// one if need be (see the module's documentation); `None` if there is
    /// no room.
    fn enter(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Option<Ticket> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let from_ip = state.per_ip.get(&ip).copied().unwrap_or(0);
        let victim = if from_ip >= self.per_ip {
            Some(state.oldest_of(ip, now)?)
        } else if state.entries.len() >= self.limit {
            Some(state.oldest_of_busiest(now)?)
        } else {
            None
        };
        if let Some(victim) = victim
            && let Some(token) = state.remove(victim)
        {
            token.cancel();
        }
        let id = state.next;
        state.next += 1;
        let pushed_out = CancellationToken::new();
        state.entries.insert(id, (ip, now, pushed_out.clone()));
        *state.per_ip.entry(ip).or_insert(0) += 1;
        Some(Ticket {
            pending: Arc::clone(self),
            id,
            pushed_out,
        })
    }
}

/// A connection's place among the pending ones; left when dropped.
struct Ticket {
    pending: Arc<Pending>,
    id: u64,
    /// Cancelled when a newer connection took its place.
    pushed_out: CancellationToken,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut state = self.pending.state.lock().unwrap_or_else(|p| p.into_inner());
        state.remove(self.id);
    }
}

/// The slots of the sessions: connections that said hello.
struct Sessions {
    slots: Arc<Semaphore>,
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
    per_ip_limit: usize,
}

impl Sessions {
    /// A slot for a session from `ip`, if the limits allow.
    fn claim(&self, ip: IpAddr) -> Option<(tokio::sync::OwnedSemaphorePermit, PerIp)> {
        let per_ip = PerIp::claim(&self.per_ip, ip, self.per_ip_limit)?;
        let slot = Arc::clone(&self.slots).try_acquire_owned().ok()?;
        Some((slot, per_ip))
    }

    /// Why a session from `ip` has no slot.
    fn why_full(&self, ip: IpAddr) -> &'static str {
        let mine = self
            .per_ip
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&ip)
            .copied()
            .unwrap_or(0);
        if mine >= self.per_ip_limit {
            "the server is at its connection limit for your address; try again later"
        } else {
            "the server is at its connection limit; try again later"
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn a_full_pending_pool_pushes_out_the_oldest_of_the_busiest_address_after_its_grace() {
        let pending = Arc::new(Pending::new(16));
        let t0 = Instant::now();
        // Two per address at most (16 / 8).
        let a1 = pending.enter(ip(1), t0).unwrap();
        let a2 = pending.enter(ip(1), t0).unwrap();
        // Too soon to push one of them out for a third.
        assert!(pending.enter(ip(1), t0).is_none());
        let later = t0 + PENDING_GRACE;
        let a3 = pending.enter(ip(1), later).unwrap();
        assert!(a1.pushed_out.is_cancelled());
        assert!(!a2.pushed_out.is_cancelled());
        drop(a1);
        // Fill the pool with others.
        let others: Vec<_> = (2..16)
            .map(|i| pending.enter(ip(i), later).unwrap())
            .collect();
        // Full, and nobody has had a second yet but a2.
        let newcomer = pending.enter(ip(100), later).unwrap();
        assert!(a2.pushed_out.is_cancelled());
        assert!(pending.enter(ip(101), later).is_none());
        // Once they have, the busiest address gives first.
        let much_later = later + PENDING_GRACE;
        let b = pending.enter(ip(101), much_later).unwrap();
        assert!(a3.pushed_out.is_cancelled());
        assert!(others.iter().all(|t| !t.pushed_out.is_cancelled()));
        assert!(!newcomer.pushed_out.is_cancelled());
        drop((a2, a3, others, newcomer, b));
        assert!(pending.state.lock().unwrap().entries.is_empty());
        assert!(pending.state.lock().unwrap().per_ip.is_empty());
    }
}
