//! Opening a session over TCP, or TLS over TCP.

use crate::error::ClientError;
use crate::session::Session;
use crate::tls::{self, TlsStream};
use framekit_transfer::DEFAULT_PORT;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A connection to the server: plain TCP or TLS.
#[derive(Debug)]
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream>),
}

impl Stream {
    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => &tls.sock,
        }
    }
}

/// A TLS stream sends its close_notify alert when it is dropped, so that
/// the server knows nothing was cut off. Best effort: a broken connection
/// just fails the write.
impl Drop for Stream {
    fn drop(&mut self) {
        if let Stream::Tls(tls) = self {
            tls.conn.send_close_notify();
            while tls.conn.wants_write() {
                if tls.conn.write_tls(&mut tls.sock).is_err() {
                    break;
                }
            }
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.read(buf),
            Stream::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.write(buf),
            Stream::Tls(tls) => tls.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.write_vectored(bufs),
            Stream::Tls(tls) => tls.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(tcp) => tcp.flush(),
            Stream::Tls(tls) => tls.flush(),
        }
    }
}

/// How to connect.
#[derive(Clone)]
pub struct ConnectOptions {
    /// The access token sent in the handshake.
    pub token: Option<String>,
    /// Connect with TLS, trusting these roots.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// How long to wait for the TCP connection.
    pub connect_timeout: Duration,
    /// How long to wait for the server during the handshake.
    pub handshake_timeout: Duration,
    /// After the handshake, the server's idle timeout plus this margin is
    /// how long the client waits for the server to answer or take data
    /// before giving up. The margin covers the server's own pauses (fsync
    /// of a large upload before it answers).
    pub idle_margin: Duration,
    /// The wait used instead of the server's idle timeout when it announces
    /// none (0).
    pub default_idle_timeout: Duration,
    /// How long to keep trying when the server is busy (it answers the
    /// hello with `Busy`, or closes the connection without answering it,
    /// as a server does when too many connections are saying hello);
    /// `None` to give up at once.
    pub busy_retry: Option<Duration>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            token: None,
            tls: None,
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(30),
            idle_margin: Duration::from_secs(60),
            default_idle_timeout: Duration::from_secs(300),
            busy_retry: Some(BUSY_RETRY),
        }
    }
}

/// How long a busy server is tried again, by default.
pub const BUSY_RETRY: Duration = Duration::from_secs(20);

/// The first pause before trying a busy server again; it doubles with
/// each try, up to [`MAX_PAUSE`], and is jittered (between half and all
/// of it) so that clients turned away together do not come back together.
const FIRST_PAUSE: Duration = Duration::from_millis(100);

/// The longest pause between two tries.
const MAX_PAUSE: Duration = Duration::from_secs(2);

// The token is a secret: keep it out of debug output.
impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .field("tls", &self.tls.is_some())
            .field("connect_timeout", &self.connect_timeout)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("idle_margin", &self.idle_margin)
            .field("default_idle_timeout", &self.default_idle_timeout)
            .field("busy_retry", &self.busy_retry)
            .finish()
    }
}

/// Connects to `addr` (`HOST:PORT`, `HOST`, `IP`, `[IPV6]:PORT`; the port
/// defaults to [`DEFAULT_PORT`]) and performs the handshake.
///
/// The socket has `TCP_NODELAY` set (requests and responses are small
/// frames that must not wait for more data), and read and write timeouts:
/// [`ConnectOptions::handshake_timeout`] during the handshake, then the
/// server's announced idle timeout plus [`ConnectOptions::idle_margin`], so
/// that a dead server cannot make the client wait forever.
///
/// A busy server (see [`ConnectOptions::busy_retry`]) is tried again after
/// a pause, for as long as the options allow; then its last answer is the
/// error. A server that cannot be reached is not tried again.
pub fn connect(addr: &str, options: &ConnectOptions) -> Result<Session<Stream>, ClientError> {
    let started = Instant::now();
    let mut jitter = Jitter::new();
    let mut pause = FIRST_PAUSE;
    loop {
        let error = match connect_once(addr, options) {
            Err(e) if is_busy(&e) => e,
            result => return result,
        };
        let Some(limit) = options.busy_retry else {
            return Err(error);
        };
        let wait = jitter.between(pause / 2, pause);
        if started.elapsed() + wait > limit {
            return Err(error);
        }
        std::thread::sleep(wait);
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// Whether a failed connection attempt means that the server is busy: it
/// said so, or it closed the connection without answering the hello.
fn is_busy(error: &ClientError) -> bool {
    match error {
        ClientError::Refused { reply, .. } => reply.code == framekit_transfer::ErrorCode::Busy,
        ClientError::Closed => true,
        ClientError::Io(e) => matches!(
            e.kind(),
            io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof
        ),
        _ => false,
    }
}

/// Pseudo-random pauses, different in every process.
pub(crate) struct Jitter(u64);

impl Jitter {
    pub(crate) fn new() -> Jitter {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        Jitter(hasher.finish() | 1)
    }

    /// A duration between `low` and `high`.
    pub(crate) fn between(&mut self, low: Duration, high: Duration) -> Duration {
        // xorshift64
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let span = high.saturating_sub(low).as_micros();
        let span = u64::try_from(span).unwrap_or(u64::MAX).max(1);
        low + Duration::from_micros(self.0 % span)
    }
}

/// One attempt of [`connect`].
fn connect_once(addr: &str, options: &ConnectOptions) -> Result<Session<Stream>, ClientError> {
    let connect_error = |source| ClientError::Connect {
        addr: addr.to_owned(),
        source,
    };
    let tcp = open(addr, options.connect_timeout).map_err(connect_error)?;
    tcp.set_nodelay(true).map_err(connect_error)?;
    set_timeouts(&tcp, options.handshake_timeout).map_err(connect_error)?;
    let stream = match &options.tls {
        None => Stream::Plain(tcp),
        Some(config) => {
            let name = tls::server_name(addr)?;
            Stream::Tls(Box::new(tls::handshake(
                Arc::clone(config),
                name,
                tcp,
                addr,
            )?))
        }
    };
    let session = Session::handshake(stream, options.token.clone())?;
    let idle = match session.welcome().idle_timeout_ms {
        0 => options.default_idle_timeout,
        ms => Duration::from_millis(ms),
    };
    let wait = idle.saturating_add(options.idle_margin);
    set_timeouts(session.get_ref().tcp(), wait).map_err(ClientError::Io)?;
    Ok(session)
}

/// The addresses `addr` stands for.
fn resolve(addr: &str) -> io::Result<Vec<SocketAddr>> {
    let bare_ip = addr
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(addr);
    if let Ok(ip) = bare_ip.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, DEFAULT_PORT)]);
    }
    let addrs: Vec<SocketAddr> = if addr.contains(':') {
        addr.to_socket_addrs()?.collect()
    } else {
        (addr, DEFAULT_PORT).to_socket_addrs()?.collect()
    };
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "the name resolves to no address",
        ));
    }
    Ok(addrs)
}

/// Connects to the first address of `addr` that answers.
fn open(addr: &str, timeout: Duration) -> io::Result<TcpStream> {
    let mut last = None;
    for candidate in resolve(addr)? {
        match TcpStream::connect_timeout(&candidate, timeout) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::from(io::ErrorKind::NotFound)))
}

fn set_timeouts(stream: &TcpStream, timeout: Duration) -> io::Result<()> {
    // A zero duration means "no timeout" to nobody: std refuses it.
    let timeout = Some(timeout.max(Duration::from_millis(1)));
    stream.set_read_timeout(timeout)?;
    stream.set_write_timeout(timeout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Exit;
    use framekit_codec::blocking::{read_message, write_message};
    use framekit_transfer::{Entry, Hello, Request, Response, Welcome, frame_config};
    use std::io::{BufReader, Read};
    use std::net::TcpListener;
    use std::thread;

    fn welcome(idle_timeout_ms: u64) -> Response {
        Response::Welcome(Welcome {
            version: framekit_transfer::VERSION,
            max_file_size: 1 << 30,
            max_message_len: 65536,
            idle_timeout_ms,
            read_only: false,
        })
    }

    #[test]
    fn addresses_without_a_port_use_the_default_port() {
        let port = DEFAULT_PORT;
        assert_eq!(
            resolve("127.0.0.1").unwrap(),
            vec![SocketAddr::from(([127, 0, 0, 1], port))]
        );
        assert_eq!(resolve("::1").unwrap()[0].port(), port);
        assert_eq!(resolve("[::1]").unwrap()[0].port(), port);
        assert_eq!(resolve("[::1]:9").unwrap()[0].port(), 9);
        assert_eq!(resolve("127.0.0.1:9").unwrap()[0].port(), 9);
        assert_eq!(resolve("localhost").unwrap()[0].port(), port);
    }

    #[test]
    fn a_closed_port_is_a_connection_error() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let err = connect(&addr, &ConnectOptions::default()).unwrap_err();
        assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
        assert_eq!(err.exit(), Exit::Connection);
        assert!(
            err.report()
                .starts_with(&format!("cannot connect to {addr}: "))
        );
    }

    #[test]
    fn connects_over_tcp_with_nodelay_and_the_token() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let config = frame_config();
            let mut reader = BufReader::new(&stream);
            let hello: Hello = read_message(&mut reader, &config).unwrap().unwrap();
            write_message(&mut &stream, &config, &welcome(2_000)).unwrap();
            let request: Request = read_message(&mut reader, &config).unwrap().unwrap();
            let Request::Stat(stat) = request else {
                panic!("{request:?}")
            };
            let entry = Entry {
                name: stat.name,
                size: 3,
                modified_ns: 0,
            };
            write_message(&mut &stream, &config, &Response::Entry(entry)).unwrap();
            hello
        });
        let options = ConnectOptions {
            token: Some("secret".into()),
            ..ConnectOptions::default()
        };
        let mut session = connect(&addr, &options).unwrap();
        assert!(session.get_ref().tcp().nodelay().unwrap());
        assert_eq!(
            session.get_ref().tcp().read_timeout().unwrap(),
            Some(Duration::from_secs(62))
        );
        let entry = session.stat("a/b").unwrap();
        assert_eq!((entry.name.as_str(), entry.size), ("a/b", 3));
        assert_eq!(server.join().unwrap(), Hello::new(Some("secret".into())));
    }

    #[test]
    fn a_silent_server_times_out_the_handshake() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        // Accepts, never answers, and holds the connection until the client
        // gives up and closes it.
        let server = thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            io::copy(&mut stream, &mut io::sink()).unwrap_or(0)
        });
        let options = ConnectOptions {
            handshake_timeout: Duration::from_millis(50),
            ..ConnectOptions::default()
        };
        let err = connect(&addr, &options).unwrap_err();
        assert!(matches!(err, ClientError::TimedOut), "{err:?}");
        assert_eq!(err.exit(), Exit::Connection);
        // The server received the hello, then the end of the stream.
        assert!(server.join().unwrap() > 0);
    }

    #[test]
    fn a_busy_server_that_closes_at_once_is_reported_as_busy() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let reply = framekit_transfer::ErrorReply::new(
                framekit_transfer::ErrorCode::Busy,
                "too many connections",
            );
            write_message(&mut &stream, &frame_config(), &Response::Error(reply)).unwrap();
            // Read the hello so that closing does not reset the connection.
            let mut buf = [0u8; 64];
            let _ = (&stream).read(&mut buf);
        });
        let options = ConnectOptions {
            busy_retry: None,
            ..ConnectOptions::default()
        };
        let err = connect(&addr, &options).unwrap_err();
        server.join().unwrap();
        match &err {
            ClientError::Refused { reply, .. } => {
                assert_eq!(reply.code, framekit_transfer::ErrorCode::Busy)
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(err.exit(), Exit::Refused);
    }

    /// A server that turns away its first `busy` connections, answering
    /// the hello with Busy, or closing without a word; then welcomes one.
    fn busy_then_welcoming(busy: usize, silent: bool) -> (String, thread::JoinHandle<usize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = thread::spawn(move || {
            for _ in 0..busy {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(&stream);
                let _: Option<Hello> = read_message(&mut reader, &frame_config()).unwrap();
                if !silent {
                    let reply = framekit_transfer::ErrorReply::new(
                        framekit_transfer::ErrorCode::Busy,
                        "too many connections",
                    );
                    write_message(&mut &stream, &frame_config(), &Response::Error(reply)).unwrap();
                }
            }
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(&stream);
            let _: Option<Hello> = read_message(&mut reader, &frame_config()).unwrap();
            write_message(&mut &stream, &frame_config(), &welcome(2_000)).unwrap();
            busy
        });
        (addr, server)
    }

    #[test]
    fn a_busy_server_is_tried_again_until_it_welcomes() {
        for silent in [false, true] {
            let (addr, server) = busy_then_welcoming(3, silent);
            let session = connect(&addr, &ConnectOptions::default()).unwrap();
            assert_eq!(session.welcome().idle_timeout_ms, 2_000);
            assert_eq!(server.join().unwrap(), 3);
        }
    }

    #[test]
    fn a_busy_server_is_tried_again_only_as_long_as_allowed() {
        let (addr, server) = busy_then_welcoming(1_000_000, false);
        let options = ConnectOptions {
            busy_retry: Some(Duration::from_millis(300)),
            ..ConnectOptions::default()
        };
        let err = connect(&addr, &options).unwrap_err();
        assert!(
            matches!(&err, ClientError::Refused { reply, .. } if reply.code == framekit_transfer::ErrorCode::Busy),
            "{err:?}"
        );
        drop(server);
    }

    #[test]
    fn pauses_are_jittered_within_their_bounds() {
        let mut jitter = Jitter::new();
        let pauses: Vec<Duration> = (0..100)
            .map(|_| jitter.between(Duration::from_millis(50), Duration::from_millis(100)))
            .collect();
        assert!(
            pauses
                .iter()
                .all(|p| *p >= Duration::from_millis(50) && *p < Duration::from_millis(100))
        );
        assert!(pauses.windows(2).any(|w| w[0] != w[1]));
    }
}
