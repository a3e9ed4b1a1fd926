//! A TCP forwarder on loopback that counts the bytes going each way, to
//! measure what a command sends; it can also cut every connection once the
//! client has sent a given number of bytes, to interrupt a transfer at a
//! known point.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

/// What the forwarder's threads share.
#[derive(Debug, Default)]
struct Counts {
    to_server: AtomicU64,
    to_client: AtomicU64,
    /// Client bytes after which everything is cut; `u64::MAX` for never.
    limit: AtomicU64,
    /// Set once the limit was reached: new connections are closed at once.
    cut: AtomicBool,
    stop: AtomicBool,
    /// The sockets of the connections in progress, to cut them.
    open: Mutex<Vec<TcpStream>>,
}

/// A forwarder from its own address to `target`, stopped when dropped.
#[derive(Debug)]
pub struct CountingProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    counts: Arc<Counts>,
}

impl CountingProxy {
    /// Forwards everything to `target`.
    pub fn start(target: SocketAddr) -> CountingProxy {
        CountingProxy::with_limit(target, u64::MAX)
    }

    /// Forwards to `target` until the clients have sent `limit` bytes in
    /// all: then it closes every connection, and every later one as soon
    /// as it is accepted.
    pub fn cutting_after(target: SocketAddr, limit: u64) -> CountingProxy {
        CountingProxy::with_limit(target, limit)
    }

    fn with_limit(target: SocketAddr, limit: u64) -> CountingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let counts = Arc::new(Counts {
            limit: AtomicU64::new(limit),
            ..Counts::default()
        });
        let shared = Arc::clone(&counts);
        thread::spawn(move || {
            for client in listener.incoming() {
                if shared.stop.load(Ordering::Acquire) {
                    break;
                }
                let Ok(client) = client else { continue };
                if shared.cut.load(Ordering::Acquire) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                forward(client, server, &shared);
            }
        });
        CountingProxy { addr, counts }
    }

    /// Bytes the clients sent to the server so far.
    pub fn sent(&self) -> u64 {
        self.counts.to_server.load(Ordering::Acquire)
    }

    /// Bytes the server sent to the clients so far.
    pub fn received(&self) -> u64 {
        self.counts.to_client.load(Ordering::Acquire)
    }

    /// Whether the limit was reached and the connections cut.
    pub fn was_cut(&self) -> bool {
        self.counts.cut.load(Ordering::Acquire)
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.counts.stop.store(true, Ordering::Release);
        cut_all(&self.counts);
        // Wake the accepting thread.
        let _ = TcpStream::connect(self.addr);
    }
}

fn cut_all(counts: &Counts) {
    let open = counts.open.lock().unwrap_or_else(|p| p.into_inner());
    for stream in open.iter() {
        let _ = stream.shutdown(Shutdown::Both);
    }
}

/// Copies both ways between `client` and `server` on two threads.
fn forward(client: TcpStream, server: TcpStream, counts: &Arc<Counts>) {
    let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    {
        let mut open = counts.open.lock().unwrap_or_else(|p| p.into_inner());
        for stream in [&client, &server] {
            if let Ok(clone) = stream.try_clone() {
                open.push(clone);
            }
        }
    }
    let up = Arc::clone(counts);
    thread::spawn(move || copy(client, server, &up, true));
    let down = Arc::clone(counts);
    thread::spawn(move || copy(server2, client2, &down, false));
}

fn copy(mut from: TcpStream, mut to: TcpStream, counts: &Counts, upstream: bool) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let n = if upstream {
            // Take what the limit still allows, and cut at it.
            let limit = counts.limit.load(Ordering::Acquire);
            let before = counts.to_server.load(Ordering::Acquire);
            let allowed = limit.saturating_sub(before);
            let take = usize::try_from(allowed).map_or(n, |a| a.min(n));
            counts.to_server.fetch_add(take as u64, Ordering::AcqRel);
            if take < n || before + take as u64 >= limit {
                let _ = to.write_all(&buf[..take]);
                counts.cut.store(true, Ordering::Release);
                cut_all(counts);
                break;
            }
            n
        } else {
            counts.to_client.fetch_add(n as u64, Ordering::AcqRel);
            n
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    // The other side sees the end of this direction.
    let _ = to.shutdown(Shutdown::Write);
}
