//! Helpers for the end-to-end tests: start the real `server` binary on an
//! ephemeral loopback port, run the real `client` binary against it, and
//! speak the protocol directly when a test needs a misbehaving peer.
//!
//! The binaries are the ones `cargo test --workspace` builds next to the
//! test executables (`target/<profile>/server` and `client`).
//!
//! The server runs on the backend `FRAMEKIT_TEST_STORE` names: `local`
//! (the default: a root directory), `garage` or `moto` (a bucket of its own
//! per root, on a service shared by the test binary, see [`s3`]). Tests see
//! what it stored through [`ServerProcess::stored`], whichever it is. The
//! tests listed in `tests/local-only.txt` are about the local file system
//! and run only on it: `scripts/test` skips them in the S3 pass, and a
//! server started for one of them on S3 refuses to.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

pub mod corpus;
pub mod hostile;
pub mod proxy;
pub mod rsync;
pub mod s3;
pub mod stored;

pub use stored::Stored;

use framekit_codec::blocking::{read_message, write_message};
use framekit_transfer::{Hello, Response, Welcome, frame_config};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The storage the end-to-end tests run the server on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A root directory (`--root`).
    Local,
    /// A bucket on a single-node Garage (`--store`, with
    /// `--no-atomic-create`: Garage does not enforce conditional creates).
    Garage,
    /// A bucket on moto, which enforces conditional creates.
    Moto,
}

impl Backend {
    /// The backend `FRAMEKIT_TEST_STORE` names (`local`, `garage`, `moto`);
    /// local if unset.
    pub fn current() -> Backend {
        match std::env::var("FRAMEKIT_TEST_STORE").as_deref() {
            Err(_) | Ok("" | "local") => Backend::Local,
            Ok("garage") => Backend::Garage,
            Ok("moto") => Backend::Moto,
            Ok(other) => panic!("FRAMEKIT_TEST_STORE={other:?}: expected local, garage or moto"),
        }
    }

    /// Whether it is an S3 store.
    pub fn is_s3(self) -> bool {
        self != Backend::Local
    }
}

/// The tests that run only on the local backend, from
/// `tests/local-only.txt` (`name: why` per line): their names.
pub fn local_only() -> Vec<String> {
    include_str!("../local-only.txt")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_once(':').map(|(name, _)| name.trim().to_owned()))
        .collect()
}

/// The storage of a server started on `root` with the current backend: the
/// root itself, or the bucket for it (one per root, so that a server
/// started again on a root finds what it stored).
pub fn stored_for(root: &Path) -> Stored {
    let backend = Backend::current();
    if !backend.is_s3() {
        return Stored::Local(root.to_owned());
    }
    static BUCKETS: OnceLock<Mutex<HashMap<PathBuf, stored::S3Bucket>>> = OnceLock::new();
    let mut buckets = BUCKETS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let bucket = buckets.entry(root.to_owned()).or_insert_with(|| {
        stored::S3Bucket::new(match backend {
            Backend::Moto => s3::Moto::shared().bucket(),
            _ => s3::Garage::shared().bucket(),
        })
    });
    Stored::S3(bucket.clone())
}

/// The path of one of the workspace's binaries.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace` (scripts/test), which builds the binaries",
        path.display()
    );
    path
}

/// A running `server` process, killed when dropped.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The directory it serves (on S3, what names its bucket).
    pub root: PathBuf,
    stored: Stored,
    log: Arc<Mutex<String>>,
}

impl ServerProcess {
    /// Starts a server on `127.0.0.1:0` serving `root`, with extra
    /// arguments, and waits for its `listening on` line.
    pub fn start(root: &Path, extra: &[&str]) -> ServerProcess {
        ServerProcess::start_on("127.0.0.1:0", root, extra)
    }

    /// Starts a server listening on `listen` (a loopback address) serving
    /// `root`, with extra arguments, and waits for its `listening on` line.
    pub fn start_on(listen: &str, root: &Path, extra: &[&str]) -> ServerProcess {
        ServerProcess::spawn(listen, root, extra, None)
    }

    /// Like [`ServerProcess::start`], with the server's log written to
    /// `log_file`, as a daemon's would be, rather than read by this
    /// process (a benchmark must not pay for reading it).
    pub fn start_logging_to(root: &Path, extra: &[&str], log_file: &Path) -> ServerProcess {
        let file = std::fs::File::create(log_file).expect("create the server's log file");
        ServerProcess::spawn("127.0.0.1:0", root, extra, Some(file))
    }

    /// Starts a server on `bucket` (under `prefix`, if any), whatever the
    /// backend of the other tests, with extra arguments (on Garage, it
    /// needs `--no-atomic-create`).
    pub fn start_on_bucket(
        bucket: &s3::Bucket,
        prefix: Option<&str>,
        extra: &[&str],
    ) -> ServerProcess {
        let stored = Stored::S3(stored::S3Bucket::new(bucket.clone()));
        let root = PathBuf::from(bucket.url(prefix));
        ServerProcess::spawn_on("127.0.0.1:0", &root, stored, prefix, extra, None)
    }

    /// Like [`ServerProcess::start_on_bucket`], with the server's log
    /// written to `log_file` (see [`ServerProcess::start_logging_to`]).
    pub fn start_on_bucket_logging_to(
        bucket: &s3::Bucket,
        extra: &[&str],
        log_file: &Path,
    ) -> ServerProcess {
        let file = std::fs::File::create(log_file).expect("create the server's log file");
        let stored = Stored::S3(stored::S3Bucket::new(bucket.clone()));
        let root = PathBuf::from(bucket.url(None));
        ServerProcess::spawn_on("127.0.0.1:0", &root, stored, None, extra, Some(file))
    }

    fn spawn(
        listen: &str,
        root: &Path,
        extra: &[&str],
        log_file: Option<std::fs::File>,
    ) -> ServerProcess {
        let stored = stored_for(root);
        if let Stored::S3(_) = &stored {
            let test = std::thread::current().name().unwrap_or_default().to_owned();
            assert!(
                !local_only().contains(&test),
                "{test} is listed in tests/local-only.txt: it runs only on the local backend"
            );
        }
        let mut extra = extra.to_vec();
        if Backend::current() == Backend::Garage {
            extra.push("--no-atomic-create");
        }
        ServerProcess::spawn_on(listen, root, stored, None, &extra, log_file)
    }

    fn spawn_on(
        listen: &str,
        root: &Path,
        stored: Stored,
        prefix: Option<&str>,
        extra: &[&str],
        log_file: Option<std::fs::File>,
    ) -> ServerProcess {
        let logged_to_file = log_file.is_some();
        let stderr = log_file.map_or_else(Stdio::piped, Stdio::from);
        let mut cmd = Command::new(bin("server"));
        cmd.arg("--listen").arg(listen);
        match &stored {
            Stored::Local(root) => {
                cmd.arg("--root").arg(root);
            }
            Stored::S3(s3) => {
                s3.bucket
                    .configure(&mut cmd)
                    .arg("--store")
                    .arg(s3.bucket.url(prefix));
            }
        }
        let mut child = cmd
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start the server");
        let stdout = child.stdout.take().expect("server stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the server's first line");
        let log = Arc::new(Mutex::new(String::new()));
        if !logged_to_file {
            let stderr = child.stderr.take().expect("server stderr");
            collect(stderr, Arc::clone(&log));
        }
        let addr = line
            .strip_prefix("listening on ")
            .and_then(|a| a.trim().parse().ok())
            .unwrap_or_else(|| {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "unexpected first line {line:?}; log: {}",
                    log.lock().unwrap()
                )
            });
        ServerProcess {
            child,
            addr,
            root: root.to_owned(),
            stored,
            log,
        }
    }

    /// What the server stores, seen directly.
    pub fn stored(&self) -> &Stored {
        &self.stored
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's memory use now, from `/proc/<pid>/status`.
    pub fn memory(&self) -> Memory {
        Memory::of(self.pid())
    }

    /// What the server has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The requests the server has logged so far, in order.
    pub fn requests(&self) -> Vec<Logged> {
        self.log().lines().filter_map(Logged::parse).collect()
    }

    /// The requests of operation `op` on `name` logged so far.
    pub fn requests_of(&self, op: &str, name: &str) -> Vec<Logged> {
        self.requests()
            .into_iter()
            .filter(|r| r.op == op && r.name == name)
            .collect()
    }

    /// Waits until the log contains `needle`; panics after [`PATIENCE`].
    pub fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + PATIENCE;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "log never showed {needle:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server with SIGKILL and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a signal (e.g. `"TERM"`) to the server.
    pub fn signal(&self, name: &str) {
        signal(self.child.id(), name);
    }

    /// Waits for the server to exit, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the server") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A `client` command aimed at this server, quiet, run in `cwd`.
    pub fn client(&self, cwd: &Path) -> Command {
        client_at(self.addr, cwd)
    }

    /// A `client` command aimed at this server, not quiet, run in `cwd`.
    pub fn loud_client(&self, cwd: &Path) -> Command {
        loud_client_at(self.addr, cwd)
    }

    /// Opens a raw protocol connection and completes the handshake.
    pub fn connect(&self) -> RawPeer {
        RawPeer::connect(self.addr)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One request as the server logged it: `op="put" name=a/b offset=0
/// bytes=5 ms=1 outcome="ok"`, in the span of its connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    /// The client's address.
    pub peer: String,
    /// The operation: put, get, list...
    pub op: String,
    /// The name (escaped as the server logs it).
    pub name: String,
    /// Where the body started.
    pub offset: u64,
    /// The body bytes actually moved (the entries, for a listing).
    pub bytes: u64,
    /// `ok`, `failed`, or an error code's text.
    pub outcome: String,
}

impl Logged {
    /// Reads one log line; `None` if it is not a request's.
    pub fn parse(line: &str) -> Option<Logged> {
        let peer = line
            .split("conn{peer=")
            .nth(1)?
            .split('}')
            .next()?
            .to_owned();
        let rest = line.split(" op=\"").nth(1)?;
        let (op, rest) = rest.split_once("\" name=")?;
        let (name, rest) = rest.split_once(" offset=")?;
        let (offset, rest) = rest.split_once(" bytes=")?;
        let (bytes, rest) = rest.split_once(" ms=")?;
        let outcome = rest.split(" outcome=").nth(1)?;
        let outcome = outcome
            .split(" error=")
            .next()?
            .trim()
            .trim_matches('"')
            .to_owned();
        Some(Logged {
            peer,
            op: op.to_owned(),
            name: name.to_owned(),
            offset: offset.parse().ok()?,
            bytes: bytes.parse().ok()?,
            outcome,
        })
    }
}

/// Pseudo-random numbers for choosing points in a test, from a seed the
/// test prints so that a failure can be replayed.
#[derive(Debug, Clone)]
pub struct Dice(u64);

impl Dice {
    /// Seeded from `FRAMEKIT_TEST_SEED` if set, else from the clock; the
    /// seed is printed.
    pub fn new(what: &str) -> Dice {
        let seed = std::env::var("FRAMEKIT_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_secs() << 30 ^ u64::from(d.subsec_nanos()))
            });
        eprintln!("{what}: FRAMEKIT_TEST_SEED={seed}");
        Dice(seed)
    }

    /// A number in `range`.
    pub fn pick(&mut self, range: std::ops::Range<u64>) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        range.start + (z ^ (z >> 31)) % (range.end - range.start).max(1)
    }
}

/// A `client` command aimed at `addr`, quiet, run in `cwd`, with nothing
/// from the environment.
pub fn client_at(addr: SocketAddr, cwd: &Path) -> Command {
    let mut cmd = loud_client_at(addr, cwd);
    cmd.arg("--quiet");
    cmd
}

/// A `client` command aimed at `addr`, not quiet (result lines and the
/// summary are printed), run in `cwd`, with nothing from the environment.
/// Its records of local hashes are kept under `target/`, not in the
/// user's cache.
pub fn loud_client_at(addr: SocketAddr, cwd: &Path) -> Command {
    let mut cmd = Command::new(bin("client"));
    cmd.current_dir(cwd)
        .arg("--server")
        .arg(addr.to_string())
        .env_remove("FRAMEKIT_SERVER")
        .env_remove("FRAMEKIT_TOKEN")
        .env("XDG_CACHE_HOME", test_cache())
        .stdin(Stdio::null());
    cmd
}

/// Where the clients the tests run keep their records of local hashes.
pub fn test_cache() -> PathBuf {
    bin("client")
        .parent()
        .map(|dir| dir.join("test-cache"))
        .unwrap_or_default()
}

fn collect(mut stderr: ChildStderr, log: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            log.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
}

/// A process's resident memory, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// Resident set size now (`VmRSS`).
    pub rss: u64,
    /// The highest resident set size so far (`VmHWM`): what a transient
    /// allocation would have raised, even if it was freed since.
    pub peak: u64,
    /// The largest virtual memory size so far (`VmPeak`): address space
    /// reserved, even if never touched.
    pub virtual_peak: u64,
}

impl Memory {
    /// Reads the memory use of process `pid` from `/proc/<pid>/status`.
    pub fn of(pid: u32) -> Memory {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .expect("read /proc/<pid>/status (Linux only)");
        let field = |name: &str| -> u64 {
            let line = status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status:\n{status}"));
            let kib: u64 = line
                .trim()
                .strip_suffix("kB")
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or_else(|| panic!("unexpected {name} line {line:?}"));
            kib * 1024
        };
        Memory {
            rss: field("VmRSS:"),
            peak: field("VmHWM:"),
            virtual_peak: field("VmPeak:"),
        }
    }
}

impl std::fmt::Display for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RSS {:.1} MiB (peak {:.1} MiB, virtual peak {:.1} MiB)",
            self.rss as f64 / 1048576.0,
            self.peak as f64 / 1048576.0,
            self.virtual_peak as f64 / 1048576.0
        )
    }
}

/// A protocol peer that speaks through `framekit_codec::blocking` and can misbehave.
#[derive(Debug)]
pub struct RawPeer {
    /// The connection.
    pub stream: TcpStream,
    /// What the server said in the handshake.
    pub welcome: Welcome,
}

impl RawPeer {
    /// Connects and completes the handshake.
    pub fn connect(addr: SocketAddr) -> RawPeer {
        RawPeer::connect_with_token(addr, None)
    }

    /// Connects and completes the handshake, presenting `token`.
    pub fn connect_with_token(addr: SocketAddr, token: Option<&str>) -> RawPeer {
        RawPeer::handshake(TcpStream::connect(addr).expect("connect"), token)
    }

    /// Completes the handshake on `stream`, presenting `token`.
    pub fn handshake(mut stream: TcpStream, token: Option<&str>) -> RawPeer {
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        write_message(
            &mut stream,
            &frame_config(),
            &Hello::new(token.map(str::to_owned)),
        )
        .unwrap();
        let welcome = match read_message(&mut stream, &frame_config()).unwrap() {
            Some(Response::Welcome(welcome)) => welcome,
            other => panic!("expected a welcome, got {other:?}"),
        };
        RawPeer { stream, welcome }
    }

    /// Sends one message.
    pub fn send<T: serde::Serialize>(&mut self, msg: &T) {
        write_message(&mut self.stream, &frame_config(), msg).unwrap();
    }

    /// Receives one response.
    pub fn recv(&mut self) -> Response {
        read_message(&mut self.stream, &frame_config())
            .unwrap()
            .expect("a response, not the end of the stream")
    }

    /// Sends raw bytes.
    pub fn raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }
}

/// Opens a TCP connection to `addr` from the local address `from` (any
/// port), with a receive buffer of `window` bytes if given: set before
/// connecting, so that the window the peer sees stays that small and a
/// peer that does not read holds the other side's data back instead of
/// taking it all into its kernel buffers.
pub fn connect_from(
    from: Option<std::net::IpAddr>,
    addr: SocketAddr,
    window: Option<usize>,
) -> std::io::Result<TcpStream> {
    use rustix::net::{AddressFamily, SocketType};
    let family = if addr.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let socket = rustix::net::socket(family, SocketType::STREAM, None)?;
    if let Some(window) = window {
        rustix::net::sockopt::set_socket_recv_buffer_size(&socket, window)?;
    }
    if let Some(from) = from {
        rustix::net::bind(&socket, &SocketAddr::new(from, 0))?;
    }
    rustix::net::connect(&socket, &addr)?;
    Ok(TcpStream::from(socket))
}

/// Raises this process's limit of open files to its hard limit (a server
/// started afterwards inherits it), as `scripts/bench` does with `ulimit
/// -n`; returns the limit now in force.
pub fn raise_open_files_limit() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let raised = Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    if setrlimit(Resource::Nofile, raised).is_ok() {
        limit.maximum.unwrap_or(u64::MAX)
    } else {
        limit.current.unwrap_or(u64::MAX)
    }
}

/// Deterministic pseudo-random bytes (splitmix64), fast enough for
/// hundreds of MiB.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes `len` pseudo-random bytes to `path` without holding them all in
/// memory, and returns their BLAKE3 hash.
pub fn write_random_file(path: &Path, seed: u64, len: u64) -> blake3::Hash {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut hasher = blake3::Hasher::new();
    let mut written = 0u64;
    let mut block = 0u64;
    while written < len {
        let n = (len - written).min(1 << 20) as usize;
        let chunk = random_bytes(seed ^ block.wrapping_mul(0x1000_0000_01B3), n);
        hasher.update(&chunk);
        file.write_all(&chunk).unwrap();
        written += n as u64;
        block += 1;
    }
    file.flush().unwrap();
    hasher.finalize()
}

/// The BLAKE3 hash of a file, streamed.
pub fn hash_file(path: &Path) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new();
    hasher
        .update_reader(std::fs::File::open(path).unwrap())
        .unwrap();
    hasher.finalize()
}

/// Every path under `dir` (files, directories, links), relative, sorted.
pub fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let entry = entry.unwrap();
            let path = entry.path();
            out.push(
                path.strip_prefix(base)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
            if entry.file_type().unwrap().is_dir() {
                walk(base, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// What the server's reserved area holds when no upload is in progress or
/// kept, as [`tree`] lists it.
pub const RESERVED_TREE: [&str; 4] = [
    ".framekit",
    ".framekit/digests",
    ".framekit/partial",
    ".framekit/staging",
];

/// Where the server records the verified hash of the published file
/// `name` (files of 1 MiB or more), relative to its root: named after the
/// BLAKE3 hash of the name, it holds 8 bytes of magic, then the file's
/// hash, then the file's inode, size and times.
pub fn digest_record(name: &str) -> String {
    format!(
        ".framekit/digests/{}",
        blake3::hash(name.as_bytes()).to_hex()
    )
}

/// The files in the server's staging area (uploads in progress that cannot
/// be resumed).
pub fn staging(root: &Path) -> Vec<String> {
    tree(&root.join(".framekit/staging"))
}

/// The files in the server's area of resumable uploads: for each, its data
/// (named by its key in hex) and, once it was interrupted, its record
/// (`<key>.meta`).
pub fn partials(root: &Path) -> Vec<String> {
    tree(&root.join(".framekit/partial"))
}

/// The bytes written so far to the uploads in the server's staging and
/// partial areas (records excluded).
pub fn staged_bytes(root: &Path) -> u64 {
    let staged = staging(root)
        .into_iter()
        .map(|name| root.join(".framekit/staging").join(name));
    let partial = partials(root)
        .into_iter()
        .filter(|name| !name.ends_with(".meta") && !name.ends_with(".new"))
        .map(|name| root.join(".framekit/partial").join(name));
    staged
        .chain(partial)
        .filter_map(|path| std::fs::metadata(path).ok())
        .map(|meta| meta.len())
        .sum()
}

/// A temporary directory on a tmpfs (`/dev/shm`) where there is one, else
/// in the usual place: for tests that make many files or sync many times,
/// where a disk only adds time.
pub fn memory_tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

/// How long a test waits for what must happen before it fails: a bound
/// on a hang, not on speed, far above how long anything here takes when
/// it works (keeping an interrupted upload, which syncs it, has taken over
/// 20 s on a shared disk under load).
pub const PATIENCE: Duration = Duration::from_secs(120);

/// Waits until `check` holds; panics with `what` after [`PATIENCE`].
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// stdout of a finished command, as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// stderr of a finished command, as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Sends the signal `name` (e.g. `"TERM"`, `"STOP"`) to process `pid`.
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid}: {status:?}");
}

/// A child process (typically a `client`) killed when dropped, so that a
/// failing test leaves nothing running.
#[derive(Debug)]
pub struct Running {
    child: Option<Child>,
}

impl Running {
    /// Spawns `cmd` with its output captured.
    pub fn spawn(cmd: &mut Command) -> Running {
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the command");
        Running { child: Some(child) }
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.as_ref().expect("a running child").id()
    }

    /// Whether it has exited.
    pub fn has_exited(&mut self) -> bool {
        let child = self.child.as_mut().expect("a running child");
        child.try_wait().expect("poll the child").is_some()
    }

    /// Kills it with SIGKILL and collects its output.
    pub fn kill(mut self) -> Output {
        let mut child = self.child.take().expect("a running child");
        let _ = child.kill();
        child.wait_with_output().expect("wait for the command")
    }

    /// Waits for it to finish and collects its output.
    pub fn wait(mut self) -> Output {
        let child = self.child.take().expect("a running child");
        child.wait_with_output().expect("wait for the command")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Asserts that a client run failed with exit code `code`, printed nothing
/// on stdout, and exactly one line on stderr: `error: ` followed by text
/// containing `needle`, without control characters. Returns that line.
pub fn assert_error(output: &Output, code: i32, needle: &str) -> String {
    let err = stderr(output);
    assert_eq!(
        output.status.code(),
        Some(code),
        "exit status {:?}, stderr: {err}",
        output.status
    );
    assert_eq!(stdout(output), "", "stdout of a failed command");
    let line = err
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("stderr does not end with a newline: {err:?}"));
    assert!(line.starts_with("error: "), "stderr: {err:?}");
    assert!(
        !line.chars().any(char::is_control),
        "stderr is not one clean line: {err:?}"
    );
    assert!(line.contains(needle), "{needle:?} not in {err:?}");
    line.to_owned()
}

/// Asserts that a client run succeeded; returns its stdout.
pub fn assert_success(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit status {:?}, stderr: {}",
        output.status,
        stderr(output)
    );
    stdout(output)
}

/// A small tmpfs, unmounted when dropped.
#[derive(Debug)]
pub struct Tmpfs {
    /// Where it is mounted.
    pub path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `"4m"`) at `path`; `None` when not
    /// allowed to (not root).
    pub fn mount(path: &Path, size: &str) -> Option<Tmpfs> {
        Tmpfs::mount_with(path, &format!("size={size}")).ok()
    }

    /// Mounts a tmpfs with mount `options` (e.g. `"size=4m,nr_inodes=64"`)
    /// at `path`, or says why it cannot.
    pub fn mount_with(path: &Path, options: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).unwrap();
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "mount -t tmpfs -o {options} failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(Tmpfs {
            path: path.to_owned(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// A small file system for a test of what happens when a disk is full: a
/// tmpfs mounted with `options` (e.g. `"size=4m"`) under a new temporary
/// directory, returned with that directory. Panics, saying why, when it
/// cannot be mounted (the tests must run as root): a test that needs a
/// full disk fails rather than pass without one.
pub fn small_disk(options: &str) -> (tempfile::TempDir, Tmpfs) {
    assert!(
        is_root(),
        "this test mounts a small tmpfs, which needs root: run the tests as root (e.g. in a container)"
    );
    let dir = tempfile::tempdir().unwrap();
    let mnt = Tmpfs::mount_with(&dir.path().join("mnt"), options)
        .unwrap_or_else(|reason| panic!("this test needs a small tmpfs: {reason}"));
    (dir, mnt)
}

/// Whether the tests run as root (and may mount file systems).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}
