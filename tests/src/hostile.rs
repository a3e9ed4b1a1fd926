//! Helpers for the hostile-peer tests: raw handshakes with or without a
//! token, and [`Intact`], the checks every such test ends with.

use crate::{Memory, ServerProcess, Stored, random_bytes, stderr};
use framekit_codec::blocking::{read_message, write_message};
use framekit_transfer::{ErrorCode, Hello, Put, Request, Response, frame_config};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// 1 MiB.
pub const MIB: u64 = 1 << 20;

/// 1 GiB.
pub const GIB: u64 = 1 << 30;

/// The most the server's peak memory may grow while a peer declares
/// `declared` bytes it never sends: a sixteenth of it, and never more than
/// 64 MiB. Buffers of fixed size (a few 256 KiB body chunks, 64 KiB
/// frames) fit many times; anything sized by the declaration does not.
pub fn growth_bound(declared: u64) -> u64 {
    (declared / 16).min(64 * MIB)
}

/// Opens a connection, sends a hello carrying `token`, and returns the
/// stream (read timeout 30 s) with the server's answer.
pub fn hello(addr: SocketAddr, token: Option<&str>) -> (TcpStream, Response) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write_message(
        &mut stream,
        &frame_config(),
        &Hello::new(token.map(str::to_owned)),
    )
    .unwrap();
    let reply = read_message(&mut stream, &frame_config())
        .unwrap()
        .expect("an answer to the hello");
    (stream, reply)
}

/// The code of an error answer; panics on anything else.
pub fn error_code(response: Response) -> ErrorCode {
    match response {
        Response::Error(e) => e.code,
        other => panic!("expected an error, got {other:?}"),
    }
}

/// A put request.
pub fn put_request(name: &str, size: u64, overwrite: bool) -> Request {
    Request::Put(Put {
        name: name.into(),
        size,
        overwrite,
        resume_key: None,
    })
}

/// Reads until the server closes the connection; returns how many bytes
/// came before the end. A reset counts as the end: the server may close a
/// socket that still holds unread bytes of a hostile peer.
pub fn read_to_close(stream: &mut TcpStream) -> u64 {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return total,
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return total,
            Err(e) => panic!("expected the server to close the connection, got {e}"),
        }
    }
}

/// Waits until one line of the server's log contains every one of
/// `needles`, and returns it; panics after [`crate::PATIENCE`].
pub fn wait_for_line(server: &ServerProcess, needles: &[&str]) -> String {
    let deadline = Instant::now() + crate::PATIENCE;
    loop {
        let log = server.log();
        if let Some(line) = log
            .lines()
            .find(|line| needles.iter().all(|n| line.contains(n)))
        {
            return line.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no log line showed all of {needles:?}:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How the server's log names the connection of `stream`'s peer.
pub fn log_peer(stream: &TcpStream) -> String {
    format!("peer={}", stream.local_addr().unwrap())
}

/// Runs the `server` binary with `args`, expecting it to exit by itself
/// (within [`crate::PATIENCE`], else it is killed and the test fails), and returns its
/// output.
pub fn server_exit(args: &[&std::ffi::OsStr]) -> std::process::Output {
    let mut child = std::process::Command::new(crate::bin("server"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + crate::PATIENCE;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "the server kept running with {args:?}: {}{}",
                String::from_utf8_lossy(&output.stdout),
                stderr(&output)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// What is on disk at one path, as far as a change would show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A directory.
    Dir,
    /// A regular file: any write changes its size or modification time, a
    /// replacement its inode.
    File {
        /// Size in bytes.
        len: u64,
        /// Modification time, nanoseconds.
        modified: i128,
        /// Inode number.
        inode: u64,
    },
    /// A symbolic link and its target.
    Symlink(PathBuf),
    /// Anything else.
    Other,
}

/// Every path under `dir` (relative), with what it is, without following
/// symlinks.
pub fn disk(dir: &Path) -> BTreeMap<String, Node> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Node>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let Ok(entry) = entry else { continue };
            let path = entry.path();
            // An entry removed meanwhile (a staged upload) is not an error.
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let node = if meta.is_dir() {
                Node::Dir
            } else if meta.is_file() {
                Node::File {
                    len: meta.len(),
                    modified: i128::from(meta.mtime()) * 1_000_000_000
                        + i128::from(meta.mtime_nsec()),
                    inode: meta.ino(),
                }
            } else if meta.file_type().is_symlink() {
                Node::Symlink(std::fs::read_link(&path).unwrap_or_default())
            } else {
                Node::Other
            };
            let rel = path
                .strip_prefix(base)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let is_dir = node == Node::Dir;
            out.insert(rel, node);
            if is_dir {
                walk(base, &path, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

static ROUND_TRIPS: AtomicUsize = AtomicUsize::new(0);

/// The state a hostile-peer test must leave intact, recorded before the
/// peer acts: the disk around the server's root (its parent directory, so
/// anything written next to the root shows), on S3 the bucket, and the
/// server's memory.
///
/// [`Intact::check`] then asserts that nothing is left in the staging
/// area, that the disk (or bucket) changed only where the test expects,
/// that the server's peak memory did not grow with what a peer declared,
/// and that a new client can still put and get a file.
#[derive(Debug)]
pub struct Intact {
    parent: PathBuf,
    root: PathBuf,
    stored: Stored,
    disk: BTreeMap<String, Node>,
    /// On S3, every key and upload of the bucket.
    objects: BTreeSet<String>,
    memory: Memory,
    client_args: Vec<String>,
    token: Option<String>,
    work: tempfile::TempDir,
    /// Files the round trips put, relative to the root's parent.
    round_trips: std::sync::Mutex<Vec<String>>,
}

impl Intact {
    /// Records the state around `server` (a plain server without tokens).
    pub fn new(server: &ServerProcess) -> Intact {
        Intact::with_client(server, &[], None)
    }

    /// Records the state around `server`, reached by the `client` binary
    /// with `client_args` (e.g. `--tls --ca PEM`) and `token`.
    ///
    /// A first put and get runs before anything is recorded, so the
    /// buffers and threads every transfer uses are in the memory baseline,
    /// and so the test knows the checks themselves work.
    pub fn with_client(
        server: &ServerProcess,
        client_args: &[&str],
        token: Option<&str>,
    ) -> Intact {
        let parent = server
            .root
            .parent()
            .expect("the root has a parent")
            .to_owned();
        let mut intact = Intact {
            parent,
            root: server.root.clone(),
            stored: server.stored().clone(),
            disk: BTreeMap::new(),
            objects: BTreeSet::new(),
            memory: server.memory(),
            client_args: client_args.iter().map(|a| (*a).to_owned()).collect(),
            token: token.map(str::to_owned),
            work: tempfile::tempdir().unwrap(),
            round_trips: std::sync::Mutex::new(Vec::new()),
        };
        intact.round_trip(server);
        intact.record_disk();
        intact.memory = server.memory();
        intact
    }

    /// Every key and upload of an S3 store (nothing for a local one).
    fn objects(&self) -> BTreeSet<String> {
        match &self.stored {
            Stored::Local(_) => BTreeSet::new(),
            Stored::S3(_) => self.stored.everything().into_iter().collect(),
        }
    }

    /// The server's memory when the state was recorded.
    pub fn memory(&self) -> Memory {
        self.memory
    }

    /// Re-records the disk, after the test set up what the peer will
    /// attack.
    pub fn record_disk(&mut self) {
        self.disk = disk(&self.parent);
        self.objects = self.objects();
    }

    /// Puts a fresh file through the `client` binary and gets it back;
    /// panics unless both succeed and the content is byte-identical.
    pub fn round_trip(&self, server: &ServerProcess) {
        let n = ROUND_TRIPS.fetch_add(1, Ordering::Relaxed);
        let name = format!("intact-{n}");
        let content = random_bytes(0xC0FFEE ^ n as u64, 300_000 + n);
        let source = self.work.path().join(format!("{name}.src"));
        let dest = self.work.path().join(format!("{name}.dst"));
        std::fs::write(&source, &content).unwrap();
        let run = |args: &[&std::ffi::OsStr]| {
            let mut cmd = server.client(self.work.path());
            cmd.args(&self.client_args).args(args);
            if let Some(token) = &self.token {
                cmd.env("FRAMEKIT_TOKEN", token);
            }
            let output = cmd.output().unwrap();
            assert!(
                output.status.success(),
                "the server no longer serves a new client: {args:?} exited with {}: {}\nserver log:\n{}",
                output.status,
                stderr(&output),
                server.log()
            );
        };
        run(&[
            "put".as_ref(),
            source.as_os_str(),
            "--name".as_ref(),
            name.as_ref(),
        ]);
        run(&[
            "get".as_ref(),
            name.as_ref(),
            "--output".as_ref(),
            dest.as_os_str(),
        ]);
        assert!(
            std::fs::read(&dest).unwrap() == content,
            "the round trip of {name} changed the content"
        );
        let root_name = self.root.file_name().unwrap().to_string_lossy();
        self.round_trips
            .lock()
            .unwrap()
            .push(format!("{root_name}/{name}"));
    }

    /// Asserts what every hostile-peer test ends with:
    /// - the staging area is (eventually) empty;
    /// - the disk around the root differs from the recorded state only at
    ///   `changed` (paths relative to the root's parent, e.g. `root/a`) and
    ///   the files of [`Intact::round_trip`], and the records of their
    ///   hashes;
    /// - with `declared`, the server's peak memory grew by less than
    ///   [`growth_bound`] of it, and its virtual peak by less than half of
    ///   it;
    /// - a new client can put and get a file.
    pub fn check(&self, server: &ServerProcess, changed: &[&str], declared: Option<u64>) {
        let deadline = Instant::now() + crate::PATIENCE;
        while self.stored.uploads_in_progress() > 0 {
            assert!(
                Instant::now() < deadline,
                "the staging area still holds {:?}\nserver log:\n{}",
                self.stored.everything(),
                server.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }

        let round_trips = self.round_trips.lock().unwrap().clone();
        // A file the server published may come with the record of its hash.
        let records: Vec<String> = changed
            .iter()
            .copied()
            .chain(round_trips.iter().map(String::as_str))
            .filter_map(|path| path.split_once('/'))
            .map(|(root, name)| format!("{root}/{}", crate::digest_record(name)))
            .collect();
        let allowed: BTreeSet<&str> = changed
            .iter()
            .copied()
            .chain(round_trips.iter().map(String::as_str))
            .chain(records.iter().map(String::as_str))
            .collect();
        // In a bucket: the same names, without the root's, and their
        // records under the private area.
        let root_name = self.root.file_name().unwrap().to_string_lossy();
        let in_bucket: BTreeSet<String> = allowed
            .iter()
            .filter_map(|path| path.strip_prefix(&format!("{root_name}/")))
            .flat_map(|name| {
                [
                    name.to_owned(),
                    crate::stored::s3_private_key("digests", name),
                ]
            })
            .collect();
        loop {
            let objects = self.objects();
            let mut differences: Vec<String> = objects
                .symmetric_difference(&self.objects)
                .filter(|key| !in_bucket.contains(*key))
                .map(|key| {
                    format!(
                        "{key}: {}",
                        if objects.contains(key) {
                            "added"
                        } else {
                            "gone"
                        }
                    )
                })
                .collect();
            let now = disk(&self.parent);
            let paths: BTreeSet<&String> = self.disk.keys().chain(now.keys()).collect();
            differences.extend(
                paths
                    .into_iter()
                    .filter(|path| !allowed.contains(path.as_str()))
                    .filter(|path| self.disk.get(*path) != now.get(*path))
                    .map(|path| {
                        format!("{path}: {:?} -> {:?}", self.disk.get(path), now.get(path))
                    }),
            );
            if differences.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "unexpected changes on disk around the root:\n{}\nserver log:\n{}",
                differences.join("\n"),
                server.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }

        if let Some(declared) = declared {
            let now = server.memory();
            let growth = now.peak.saturating_sub(self.memory.peak);
            let reserved = now.virtual_peak.saturating_sub(self.memory.virtual_peak);
            eprintln!(
                "server memory: before {}, after {}; for {:.1} MiB declared, the peak grew by {:.1} MiB, the virtual peak by {:.1} MiB",
                self.memory,
                now,
                declared as f64 / MIB as f64,
                growth as f64 / MIB as f64,
                reserved as f64 / MIB as f64,
            );
            assert!(
                growth < growth_bound(declared),
                "the server's peak memory grew by {growth} bytes ({} -> {}) after a peer declared {declared} bytes",
                self.memory,
                now
            );
            // Address space reserved and never touched does not show in
            // the resident size; a reservation of the declared size would
            // show here.
            assert!(
                reserved < declared / 2,
                "the server's virtual memory grew by {reserved} bytes ({} -> {}) after a peer declared {declared} bytes",
                self.memory,
                now
            );
        }

        self.round_trip(server);
    }
}
