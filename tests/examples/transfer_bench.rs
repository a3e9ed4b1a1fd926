//! Throughput and memory of the file transfer, against a raw TCP copy of
//! the same file measured in the same run.
//!
//! Run with `scripts/bench` (release build), or `scripts/bench --quick`
//! for a smoke run with small sizes. See docs/BENCHMARKS.md.
//!
//! - big: a random file copied file -> TCP -> file by a minimal program
//!   (sendfile on the sending side, 1 MiB reads on the receiving side);
//!   by a minimal verified copy in two processes (the hashing, reading and
//!   writing of a put, nothing else); then `client put` and `client get` of
//!   the same file against a running `server`, and `client get` again
//!   after the file was touched, so that the server cannot send the hash it
//!   recorded at the put and hashes the file as it sends it; alternating,
//!   with the median of several runs each.
//! - small: 4 KiB files put over one connection (`client put DIR`, and a
//!   library loop of `put_file`), and by 16 clients at once; then sets of
//!   2,000 files of 4 KiB put and got whole (`client put DIR`, `client get
//!   DIR/`) on a tmpfs and on a disk, against `rsync -a --fsync` and
//!   `rsync -a` through an rsync daemon on loopback, in the same runs.
//! - memory: the server's peak RSS while 100 clients upload 64 MiB each at
//!   once, while 100 clients each put 100 files of 64 KiB at once, and with
//!   1,000 idle connections, and with 64 listings of a directory of
//!   300,000 files held by clients that never read (and how long one full
//!   listing of it takes).
//! - s3: the server on an S3 store (a single-node Garage, its data in the
//!   benchmark's directory) against `rclone copy` to and from the same
//!   bucket and against the local backend, alternating: a big file and
//!   2,000 files of 4 KiB each way, with the CPU time the server and
//!   Garage spent; then the server's peak RSS while 100 clients upload
//!   64 MiB each at once to the store. Not part of the default run
//!   (`--only s3`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]
// Sizes here are small constants and measured figures, printed as floats.
#![allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]

use framekit_client::connect::{ConnectOptions, connect};
use framekit_client::files::{Options, Source, put_file};
use framekit_client::progress::Meter;
use framekit_tests::rsync::RsyncDaemon;
use framekit_tests::s3::{Bucket, Garage};
use framekit_tests::{ServerProcess, random_bytes, write_random_file};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

struct Settings {
    dir: PathBuf,
    /// A directory on a disk, for the small-file sets.
    disk: PathBuf,
    /// Files in each small-file set.
    set_files: usize,
    big: u64,
    runs: usize,
    small_files: usize,
    s3_small_files: usize,
    uploads: usize,
    upload_size: u64,
    idle: usize,
    listed_files: usize,
    only: Option<String>,
}

fn settings() -> Settings {
    let mut args = std::env::args().skip(1);
    let mut quick = false;
    let mut dir = None;
    let mut disk = None;
    let mut runs = None;
    let mut only = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--dir" => dir = args.next().map(PathBuf::from),
            "--disk" => disk = args.next().map(PathBuf::from),
            "--runs" => runs = args.next().and_then(|r| r.parse().ok()),
            "--only" => only = args.next(),
            other => {
                eprintln!(
                    "usage: transfer_bench [--quick] [--dir DIR] [--disk DIR] [--runs N] [--only big|small|sets|memory|listings|s3|s3-big|s3-small|s3-memory] (got {other})"
                );
                std::process::exit(2);
            }
        }
    }
    let dir = dir.unwrap_or_else(|| {
        if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        }
    });
    // The small-file sets go to a disk as well as to a tmpfs: `--disk`,
    // else `--dir` if it is not a tmpfs, else /var/tmp.
    let disk = disk.unwrap_or_else(|| {
        if on_tmpfs(&dir) {
            PathBuf::from("/var/tmp")
        } else {
            dir.clone()
        }
    });
    if quick {
        Settings {
            dir,
            disk,
            set_files: 500,
            big: 64 * MIB,
            runs: runs.unwrap_or(1),
            small_files: 500,
            s3_small_files: 200,
            uploads: 10,
            upload_size: 4 * MIB,
            idle: 100,
            listed_files: 20_000,
            only,
        }
    } else {
        Settings {
            dir,
            disk,
            set_files: 2_000,
            big: 1024 * MIB,
            runs: runs.unwrap_or(5),
            small_files: 10_000,
            s3_small_files: 2_000,
            uploads: 100,
            upload_size: 64 * MIB,
            idle: 1_000,
            listed_files: 300_000,
            only,
        }
    }
}

/// Whether `path` is on a tmpfs (memory) rather than a disk.
fn on_tmpfs(path: &Path) -> bool {
    let out = Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(path)
        .output()
        .expect("run stat");
    String::from_utf8_lossy(&out.stdout).trim() == "tmpfs"
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn mib_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / MIB as f64 / elapsed.as_secs_f64()
}

/// Writes and deletes a scratch file of `size` bytes in `dir`: memory the
/// VM has just taken back is slow to write to, and every receiver below
/// writes a fresh file; this makes each run start from the same state.
fn warm(dir: &Path, size: u64) {
    let path = dir.join("scratch.tmp");
    let mut file = std::fs::File::create(&path).unwrap();
    let block = vec![0x5au8; MIB as usize];
    let mut left = size;
    while left > 0 {
        let n = left.min(MIB);
        file.write_all(&block[..n as usize]).unwrap();
        left -= n;
    }
    drop(file);
    std::fs::remove_file(&path).unwrap();
}

/// file -> TCP -> file with nothing else: `std::io::copy` from the file to
/// the socket (sendfile on Linux), 1 MiB reads into the destination.
fn raw_copy(src: &Path, dst: &Path) -> Duration {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let dst = dst.to_owned();
    let receiver = std::thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        let mut out = std::fs::File::create(&dst).unwrap();
        let mut buf = vec![0u8; MIB as usize];
        loop {
            let n = sock.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n]).unwrap();
        }
        out.sync_all().unwrap();
    });
    let start = Instant::now();
    let mut sock = TcpStream::connect(addr).unwrap();
    let mut file = std::fs::File::open(src).unwrap();
    std::io::copy(&mut file, &mut sock).unwrap();
    drop(sock);
    receiver.join().unwrap();
    start.elapsed()
}

/// The piece size of the verified floor: the client's and server's body
/// buffer size.
const FLOOR_PIECE: usize = 256 * 1024;

/// The least a verified copy costs here: the work of a put and nothing
/// else, its two ends in two processes as a client and a server are. This
/// process reads the file in 256 KiB pieces, hashes each and sends it,
/// then the 32-byte hash; the receiver (this program again, run with
/// `--floor-receive`) reads the socket on one thread while another hashes
/// and writes, then checks the hash and syncs the file.
fn verified_floor(src: &Path, dst: &Path, size: u64) -> Duration {
    let mut receiver = Command::new(std::env::current_exe().unwrap())
        .args(["--floor-receive", dst.to_str().unwrap(), &size.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(receiver.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    let port: u16 = line.trim().parse().unwrap();
    let start = Instant::now();
    let mut sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let file = std::fs::File::open(src).unwrap();
    let mut buf = vec![0u8; FLOOR_PIECE];
    let mut hasher = blake3::Hasher::new();
    let mut offset = 0;
    while offset < size {
        let n = std::os::unix::fs::FileExt::read_at(&file, &mut buf, offset).unwrap();
        assert!(n > 0, "the source file ended early");
        hasher.update(&buf[..n]);
        sock.write_all(&buf[..n]).unwrap();
        offset += n as u64;
    }
    sock.write_all(hasher.finalize().as_bytes()).unwrap();
    assert!(
        receiver.wait().unwrap().success(),
        "the floor's receiver failed"
    );
    start.elapsed()
}

/// The receiving end of [`verified_floor`], in its own process.
fn floor_receive(dst: &Path, size: u64) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    println!("{}", listener.local_addr().unwrap().port());
    std::io::stdout().flush().unwrap();
    let (mut sock, _) = listener.accept().unwrap();
    let mut out = std::fs::File::create(dst).unwrap();
    let (to_worker, full) = std::sync::mpsc::sync_channel::<(Vec<u8>, usize)>(4);
    let (to_reader, empty) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
    for _ in 0..4 {
        to_reader.send(vec![0u8; FLOOR_PIECE]).unwrap();
    }
    let worker = std::thread::spawn(move || {
        let mut hasher = blake3::Hasher::new();
        for (buf, n) in full {
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).unwrap();
            let _ = to_reader.send(buf);
        }
        out.sync_all().unwrap();
        hasher.finalize()
    });
    let mut left = size;
    while left > 0 {
        let mut buf = empty.recv().unwrap();
        let want = (left as usize).min(buf.len());
        sock.read_exact(&mut buf[..want]).unwrap();
        to_worker.send((buf, want)).unwrap();
        left -= want as u64;
    }
    drop(to_worker);
    let mut sent = [0u8; 32];
    sock.read_exact(&mut sent).unwrap();
    let hash = worker.join().unwrap();
    assert_eq!(hash.as_bytes(), &sent, "the floor's copy does not verify");
}

fn run_client(server: &ServerProcess, cwd: &Path, args: &[&str]) -> Duration {
    let start = Instant::now();
    let out = server.client(cwd).args(args).output().unwrap();
    let elapsed = start.elapsed();
    assert!(
        out.status.success(),
        "client {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    elapsed
}

#[allow(clippy::too_many_lines)] // one measurement section, read top to bottom
fn big(settings: &Settings) {
    let dir = tempfile::tempdir_in(&settings.dir).unwrap();
    let src = dir.path().join("source.bin");
    let size = settings.big;
    println!(
        "## big file: {} MiB in {} ({})",
        size / MIB,
        settings.dir.display(),
        if on_tmpfs(&settings.dir) {
            "tmpfs"
        } else {
            "disk"
        }
    );
    let hash = write_random_file(&src, 1, size);
    let server = ServerProcess::start_logging_to(
        &dir.path().join("root"),
        &[],
        &dir.path().join("server.log"),
    );
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();

    let (mut raw, mut floor, mut put, mut get) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut get_hashed = Vec::new();
    for run in 0..settings.runs {
        warm(dir.path(), size);
        let t = raw_copy(&src, &work.join("raw.bin"));
        std::fs::remove_file(work.join("raw.bin")).unwrap();
        raw.push(mib_per_s(size, t));

        warm(dir.path(), size);
        let t = verified_floor(&src, &work.join("floor.bin"), size);
        std::fs::remove_file(work.join("floor.bin")).unwrap();
        floor.push(mib_per_s(size, t));

        warm(dir.path(), size);
        let t = run_client(
            &server,
            &work,
            &["put", src.to_str().unwrap(), "--name", "big.bin", "--force"],
        );
        put.push(mib_per_s(size, t));

        // A get as a user runs it, checked and removed afterwards.
        let timed_get = || {
            warm(dir.path(), size);
            let t = run_client(
                &server,
                &work,
                &["get", "big.bin", "--output", "got.bin", "--force"],
            );
            assert_eq!(framekit_tests::hash_file(&work.join("got.bin")), hash);
            std::fs::remove_file(work.join("got.bin")).unwrap();
            mib_per_s(size, t)
        };
        get.push(timed_get());

        // The same file touched behind the server's back: the hash it
        // recorded at the put no longer applies, and it hashes the file
        // as it sends it, as for any file it did not receive itself.
        std::fs::File::options()
            .write(true)
            .open(server.root.join("big.bin"))
            .unwrap()
            .set_modified(std::time::SystemTime::now())
            .unwrap();
        get_hashed.push(timed_get());
        std::fs::remove_file(server.root.join("big.bin")).unwrap();
        println!(
            "run {}: raw {:.0} MiB/s, verified floor {:.0} MiB/s, put {:.0} MiB/s, get {:.0} MiB/s, get hashed {:.0} MiB/s",
            run + 1,
            raw[run],
            floor[run],
            put[run],
            get[run],
            get_hashed[run]
        );
    }
    // Each transfer against the raw copy of its own round: the machine's
    // mood changes from minute to minute, and a round takes a few seconds.
    let per_run = |of: &[f64]| -> String {
        let mut ratios: Vec<f64> = of.iter().zip(&raw).map(|(x, r)| x / r).collect();
        let m = median(&mut ratios);
        format!("{m:.2} [{:.2}-{:.2}]", ratios[0], ratios[ratios.len() - 1])
    };
    let per_run_line = format!(
        "ratios to the raw copy of the same run, median [min-max]: verified floor {}, put {}, get {}, get hashed {}",
        per_run(&floor),
        per_run(&put),
        per_run(&get),
        per_run(&get_hashed)
    );
    let (raw, floor) = (median(&mut raw), median(&mut floor));
    let (put, get) = (median(&mut put), median(&mut get));
    let get_hashed = median(&mut get_hashed);
    println!("{per_run_line}");
    println!("| transfer | median MiB/s | ratio to raw | ratio to the verified floor |");
    println!("|---|---:|---:|---:|");
    println!("| raw TCP copy | {raw:.0} | 1.00 | |");
    println!(
        "| verified floor (two processes, nothing but the work) | {floor:.0} | {:.2} | 1.00 |",
        floor / raw
    );
    println!(
        "| client put (BLAKE3 verified) | {put:.0} | {:.2} | {:.2} |",
        put / raw,
        put / floor
    );
    println!(
        "| client get (BLAKE3 verified; the server sends the hash it recorded at the put) | {get:.0} | {:.2} | {:.2} |",
        get / raw,
        get / floor
    );
    println!(
        "| client get of a file changed since its put (the server hashes it as it sends it) | {get_hashed:.0} | {:.2} | {:.2} |",
        get_hashed / raw,
        get_hashed / floor
    );
}

fn small(settings: &Settings) {
    let dir = tempfile::tempdir_in(&settings.dir).unwrap();
    let files = dir.path().join("files");
    std::fs::create_dir(&files).unwrap();
    let n = settings.small_files;
    println!("## small files: {n} x 4 KiB");
    for i in 0..n {
        std::fs::write(files.join(format!("f{i:05}")), random_bytes(i as u64, 4096)).unwrap();
    }
    let server = ServerProcess::start_logging_to(
        &dir.path().join("root"),
        &[],
        &dir.path().join("server.log"),
    );
    let addr = server.addr.to_string();

    // One file after the other on one connection, each waiting for its
    // answer: what a program calling put_file in a loop gets.
    let put_range = |range: std::ops::Range<usize>, prefix: &str| {
        let mut session = connect(&addr, &ConnectOptions::default()).unwrap();
        for i in range {
            let source = Source::open(&files.join(format!("f{i:05}"))).unwrap();
            let name = format!("{prefix}/f{i:05}");
            let options = Options {
                force: true,
                resume: true,
            };
            put_file(
                &mut session,
                &source,
                &name,
                options,
                &Meter::hidden(),
                &mut |_| {},
            )
            .unwrap();
        }
    };
    let rate = |start: Instant| n as f64 / start.elapsed().as_secs_f64();

    let clients = 16;
    let (mut cli, mut looped, mut many) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..settings.runs {
        // The directory with the client binary: one connection, the files
        // pipelined.
        let start = Instant::now();
        let name = format!("cli-{run}");
        run_client(
            &server,
            dir.path(),
            &["put", files.to_str().unwrap(), "--name", &name],
        );
        cli.push(rate(start));

        let start = Instant::now();
        put_range(0..n, &format!("loop-{run}"));
        looped.push(rate(start));

        let start = Instant::now();
        let prefix = format!("many-{run}");
        std::thread::scope(|scope| {
            for c in 0..clients {
                let range = (c * n / clients)..((c + 1) * n / clients);
                let (put_range, prefix) = (&put_range, &prefix);
                scope.spawn(move || put_range(range, prefix));
            }
        });
        many.push(rate(start));
        println!(
            "run {}: client put DIR {:.0} files/s, put_file loop {:.0} files/s, {clients} clients {:.0} files/s",
            run + 1,
            cli[run],
            looped[run],
            many[run]
        );
    }
    let (cli, looped, many) = (median(&mut cli), median(&mut looped), median(&mut many));
    println!("| 4 KiB puts | median files/s |");
    println!("|---|---:|");
    println!("| one connection: `client put DIR` (pipelined) | {cli:.0} |");
    println!("| one connection: `put_file` loop, one at a time | {looped:.0} |");
    println!("| {clients} clients at once, one at a time each | {many:.0} |");
}

/// The small-file sets, on a tmpfs and on a disk: see [`small_sets_in`].
fn small_sets(settings: &Settings) {
    let tmpfs = Path::new("/dev/shm");
    if tmpfs.is_dir() && on_tmpfs(tmpfs) {
        small_sets_in(settings, tmpfs);
    } else {
        println!("## small-file sets: no tmpfs at /dev/shm, skipped there");
    }
    if on_tmpfs(&settings.disk) {
        println!(
            "## small-file sets: {} is a tmpfs, not a disk: give one with --disk",
            settings.disk.display()
        );
    } else {
        small_sets_in(settings, &settings.disk);
    }
}

/// The file system of `path` and its mount options, from /proc/mounts (the
/// longest mount point above it).
fn file_system(path: &Path) -> String {
    let path = std::fs::canonicalize(path).unwrap();
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let [device, mount, kind, options, ..] = fields.as_slice() else {
                return None;
            };
            path.starts_with(mount)
                .then(|| (mount.len(), format!("{kind} on {device} ({options})")))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "unknown file system".to_owned(), |(_, fs)| fs)
}

/// The machine, in one line: CPU model and count, memory, kernel.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map_or("unknown CPU", |m| m.trim_start_matches([' ', '\t', ':']));
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / (1024.0 * 1024.0));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cpus} x {model}, {mem_gib:.0} GiB, Linux {}",
        kernel.trim()
    )
}

/// Runs `rsync` with `args`; its time.
fn run_rsync(args: &[&str]) -> Duration {
    let start = Instant::now();
    let out = Command::new("rsync").args(args).output().unwrap();
    let elapsed = start.elapsed();
    assert!(
        out.status.success(),
        "rsync {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    elapsed
}

/// Runs the client as [`run_client`] does, with a cache of local hashes
/// of its own in `cwd`, emptied first: every run then appends its records
/// to an empty file, rather than now and then rewriting the records of
/// the runs before (which is not what is measured here).
fn run_set_client(server: &ServerProcess, cwd: &Path, args: &[&str]) -> Duration {
    let cache = cwd.join("cache");
    let _ = std::fs::remove_dir_all(&cache);
    let start = Instant::now();
    let out = server
        .client(cwd)
        .env("XDG_CACHE_HOME", &cache)
        .args(args)
        .output()
        .unwrap();
    let elapsed = start.elapsed();
    assert!(
        out.status.success(),
        "client {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    elapsed
}

/// Writes every dirty page of every file system to its disk, so that
/// each timed transfer starts from the same state and pays for no other
/// one's writes.
fn settle() {
    assert!(Command::new("sync").status().unwrap().success());
}

/// The number of regular files below `dir`.
fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                count_files(&entry.path())
            } else {
                usize::from(kind.is_file())
            }
        })
        .sum()
}

/// One of the transfers of a small-file set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SetTransfer {
    FramekitPut,
    RsyncFsyncPut,
    RsyncPut,
    FramekitGet,
    RsyncFsyncGet,
    RsyncGet,
}

const SET_TRANSFERS: [SetTransfer; 6] = [
    SetTransfer::FramekitPut,
    SetTransfer::RsyncFsyncPut,
    SetTransfer::RsyncPut,
    SetTransfer::FramekitGet,
    SetTransfer::RsyncFsyncGet,
    SetTransfer::RsyncGet,
];

/// A set of small files put and got whole in `base`: `client put DIR` and
/// `client get DIR/` against a server whose root is there, and `rsync -a
/// --fsync` and `rsync -a` to and from an rsync daemon whose module is
/// there, into and out of a directory there; the six in a rotating order,
/// each after a `sync`, `runs` times. Each framekit rate is compared with
/// rsync's of the same run: a disk's speed changes from minute to minute.
#[allow(clippy::too_many_lines)] // one measurement section, read top to bottom
fn small_sets_in(settings: &Settings, base: &Path) {
    let n = settings.set_files;
    println!(
        "## small-file sets: {n} x 4 KiB in {}: {}",
        base.display(),
        file_system(base)
    );
    println!("machine: {}", machine());
    let dir = tempfile::tempdir_in(base).unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    for i in 0..n {
        std::fs::write(src.join(format!("f{i:05}")), random_bytes(i as u64, 4096)).unwrap();
    }
    let copy_set = |to: &Path| {
        std::fs::create_dir_all(to).unwrap();
        for i in 0..n {
            let name = format!("f{i:05}");
            std::fs::copy(src.join(&name), to.join(&name)).unwrap();
        }
    };
    let server = ServerProcess::start_logging_to(
        &dir.path().join("root"),
        &[],
        &dir.path().join("server.log"),
    );
    copy_set(&server.root.join("set"));
    let rsync_dir = dir.path().join("rsync");
    std::fs::create_dir(&rsync_dir).unwrap();
    let daemon = RsyncDaemon::start(&rsync_dir);
    match &daemon {
        Some(daemon) => copy_set(&daemon.path.join("set")),
        None => println!("rsync is not installed (scripts/install-test-deps): no reference"),
    }
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let src_arg = format!("{}/", src.display());

    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); SET_TRANSFERS.len()];
    for run in 0..settings.runs {
        for k in 0..SET_TRANSFERS.len() {
            let what = SET_TRANSFERS[(k + run) % SET_TRANSFERS.len()];
            let rsync = |fsync: bool, args: [&str; 2]| {
                let mut all = vec!["-a"];
                if fsync {
                    all.push("--fsync");
                }
                all.extend(args);
                run_rsync(&all)
            };
            let (elapsed, written) = match (what, &daemon) {
                (SetTransfer::FramekitPut, _) => {
                    let name = format!("put-{run}");
                    settle();
                    let t = run_set_client(
                        &server,
                        &work,
                        &["put", src.to_str().unwrap(), "--name", &name],
                    );
                    (t, server.root.join(name))
                }
                (SetTransfer::FramekitGet, _) => {
                    let out = work.join(format!("get-{run}"));
                    settle();
                    let t = run_set_client(
                        &server,
                        &work,
                        &["get", "set/", "--output", out.to_str().unwrap()],
                    );
                    (t, out)
                }
                (_, None) => continue,
                (SetTransfer::RsyncFsyncPut | SetTransfer::RsyncPut, Some(daemon)) => {
                    let fsync = what == SetTransfer::RsyncFsyncPut;
                    let sub = format!("put-{fsync}-{run}/");
                    settle();
                    let t = rsync(fsync, [&src_arg, &daemon.url(&sub)]);
                    (t, daemon.path.join(sub))
                }
                (SetTransfer::RsyncFsyncGet | SetTransfer::RsyncGet, Some(daemon)) => {
                    let fsync = what == SetTransfer::RsyncFsyncGet;
                    let out = work.join(format!("rsync-{fsync}-{run}"));
                    let out_arg = format!("{}/", out.display());
                    settle();
                    let t = rsync(fsync, [&daemon.url("set/"), &out_arg]);
                    (t, out)
                }
            };
            assert_eq!(count_files(&written), n, "{what:?} left {written:?} short");
            std::fs::remove_dir_all(&written).unwrap();
            let index = SET_TRANSFERS.iter().position(|t| *t == what).unwrap();
            rates[index].push(n as f64 / elapsed.as_secs_f64());
        }
        let line: Vec<String> = SET_TRANSFERS
            .iter()
            .zip(&rates)
            .filter_map(|(what, r)| r.get(run).map(|rate| format!("{what:?} {rate:.0}")))
            .collect();
        println!("run {}: files/s: {}", run + 1, line.join(", "));
    }
    let [fk_put, fs_put, rs_put, fk_get, fs_get, rs_get] = rates.as_slice() else {
        unreachable!("six transfers");
    };
    // Each framekit rate over the reference's of the same run.
    let ratio = |ours: &[f64], reference: &[f64]| -> String {
        if reference.is_empty() {
            return "-".to_owned();
        }
        let mut ratios: Vec<f64> = ours.iter().zip(reference).map(|(a, b)| a / b).collect();
        let m = median(&mut ratios);
        format!("{m:.2} [{:.2}-{:.2}]", ratios[0], ratios[ratios.len() - 1])
    };
    let med = |rates: &[f64]| -> String {
        if rates.is_empty() {
            return "-".to_owned();
        }
        format!("{:.0}", median(&mut rates.to_vec()))
    };
    println!(
        "| {n} x 4 KiB, {} runs | framekit files/s | `rsync -a --fsync` files/s | `rsync -a` files/s | framekit / `rsync -a --fsync` | framekit / `rsync -a` |",
        settings.runs
    );
    println!("|---|---:|---:|---:|---:|---:|");
    println!(
        "| `client put DIR` | {} | {} | {} | {} | {} |",
        med(fk_put),
        med(fs_put),
        med(rs_put),
        ratio(fk_put, fs_put),
        ratio(fk_put, rs_put)
    );
    println!(
        "| `client get DIR/` | {} | {} | {} | {} | {} |",
        med(fk_get),
        med(fs_get),
        med(rs_get),
        ratio(fk_get, fs_get),
        ratio(fk_get, rs_get)
    );
}

fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[allow(clippy::too_many_lines)] // one measurement section, read top to bottom
fn memory(settings: &Settings) {
    println!("## server memory");
    let dir = tempfile::tempdir_in(&settings.dir).unwrap();
    let uploads = settings.uploads;
    let size = settings.upload_size;
    {
        let server = ServerProcess::start_logging_to(
            &dir.path().join("root"),
            &[
                "--max-connections",
                "2000",
                "--max-connections-per-ip",
                "2000",
            ],
            &dir.path().join("server.log"),
        );
        let (_, before) = rss(server.pid());
        let block = random_bytes(7, MIB as usize);
        let mut hasher = blake3::Hasher::new();
        for _ in 0..size / MIB {
            hasher.update(&block);
        }
        let hash = *hasher.finalize().as_bytes();
        let addr = server.addr.to_string();
        let barrier = std::sync::Barrier::new(uploads);
        std::thread::scope(|scope| {
            for u in 0..uploads {
                let (addr, block, barrier) = (&addr, &block, &barrier);
                scope.spawn(move || {
                    let mut session = connect(addr, &ConnectOptions::default()).unwrap();
                    barrier.wait();
                    let mut upload = session.start_put(&format!("up{u}"), size, true).unwrap();
                    for _ in 0..size / MIB {
                        upload.send(block).unwrap();
                    }
                    let done = upload.finish().unwrap();
                    assert_eq!(done.hash, hash);
                });
            }
        });
        let (_, peak) = rss(server.pid());
        println!(
            "| {uploads} clients uploading {} MiB each at once | peak RSS {:.1} MiB (at start {:.1} MiB) |",
            size / MIB,
            peak as f64 / 1024.0,
            before as f64 / 1024.0
        );
    }
    {
        // Small files pipelined as eager uploads by as many clients at
        // once: what the server holds for batches is bounded too.
        let files = dir.path().join("small");
        std::fs::create_dir(&files).unwrap();
        for i in 0..100 {
            std::fs::write(files.join(format!("f{i:03}")), random_bytes(i, 64 * 1024)).unwrap();
        }
        let server = ServerProcess::start_logging_to(
            &dir.path().join("root3"),
            &[
                "--max-connections",
                "2000",
                "--max-connections-per-ip",
                "2000",
            ],
            &dir.path().join("server3.log"),
        );
        let (_, before) = rss(server.pid());
        let clients: Vec<_> = (0..uploads)
            .map(|c| {
                server
                    .client(dir.path())
                    .args(["put", files.to_str().unwrap(), "--name", &format!("c{c}")])
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for mut client in clients {
            assert!(
                client.wait().unwrap().success(),
                "a small-file client failed"
            );
        }
        let (_, peak) = rss(server.pid());
        println!(
            "| {uploads} clients each putting 100 files of 64 KiB at once (eager, pipelined) | peak RSS {:.1} MiB (at start {:.1} MiB) |",
            peak as f64 / 1024.0,
            before as f64 / 1024.0
        );
    }
    {
        let server = ServerProcess::start_logging_to(
            &dir.path().join("root2"),
            &[
                "--max-connections",
                "2000",
                "--max-connections-per-ip",
                "2000",
            ],
            &dir.path().join("server2.log"),
        );
        let peers: Vec<_> = (0..settings.idle).map(|_| server.connect()).collect();
        let (now, peak) = rss(server.pid());
        println!(
            "| {} idle connections | RSS {:.1} MiB, peak {:.1} MiB |",
            peers.len(),
            now as f64 / 1024.0,
            peak as f64 / 1024.0
        );
        drop(peers);
    }
}

/// The server's peak memory while 64 clients each ask for a listing of a
/// directory of `settings.listed_files` files and read only its first
/// entry, then how long a client that reads takes to list it all.
fn listings(settings: &Settings) {
    println!("## server memory: listings");
    let dir = tempfile::tempdir_in(&settings.dir).unwrap();
    let dir = dir.path();
    let root = dir.join("root4");
    let many = root.join("many");
    std::fs::create_dir_all(&many).unwrap();
    for i in 0..settings.listed_files {
        std::fs::File::create(many.join(format!("file-{i:06}"))).unwrap();
    }
    let server = ServerProcess::start_logging_to(
        &root,
        &["--max-connections-per-ip", "100"],
        &dir.join("server4.log"),
    );
    let (_, before) = rss(server.pid());
    let list_all = || {
        let mut session = connect(&server.addr.to_string(), &ConnectOptions::default()).unwrap();
        let started = Instant::now();
        let mut count = 0;
        session
            .list("", |_| {
                count += 1;
                Ok(())
            })
            .unwrap();
        assert_eq!(count, settings.listed_files);
        started.elapsed()
    };
    let alone = list_all();
    let peers: Vec<_> = (0..64)
        .map(|_| {
            let mut peer = server.connect();
            peer.send(&framekit_transfer::Request::List(framekit_transfer::List {
                prefix: String::new(),
            }));
            assert!(matches!(peer.recv(), framekit_transfer::Response::Entry(_)));
            peer
        })
        .collect();
    let loaded = list_all();
    let (_, peak) = rss(server.pid());
    println!(
        "| 64 listings of {} files, unread | peak RSS {:.1} MiB (at start {:.1} MiB) |",
        settings.listed_files,
        peak as f64 / 1024.0,
        before as f64 / 1024.0,
    );
    println!(
        "| one full listing of them | {:.2} s alone, {:.2} s beside the 64 |",
        alone.as_secs_f64(),
        loaded.as_secs_f64()
    );
    drop(peers);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, dst, size] = args.as_slice()
        && flag == "--floor-receive"
    {
        floor_receive(Path::new(dst), size.parse().unwrap());
        return;
    }
    let settings = settings();
    let wants = |part: &str| settings.only.as_deref().is_none_or(|only| only == part);
    if settings
        .only
        .as_deref()
        .is_some_and(|only| only.starts_with("s3"))
    {
        s3(&settings);
        return;
    }
    if wants("big") {
        big(&settings);
    }
    if wants("small") {
        small(&settings);
    }
    if wants("small") || settings.only.as_deref() == Some("sets") {
        small_sets(&settings);
    }
    if wants("memory") {
        memory(&settings);
    }
    if wants("listings") {
        listings(&settings);
    }
}

/// CPU seconds process `pid` has used so far (user and system).
fn cpu_seconds(pid: u32) -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let ticks = *TICKS.get_or_init(|| {
        let out = Command::new("getconf").arg("CLK_TCK").output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    });
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name, which may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    let utime: f64 = fields[11].parse().unwrap();
    let stime: f64 = fields[12].parse().unwrap();
    (utime + stime) / ticks
}

/// CPU seconds the processes this one has waited for have used (the
/// `client` or `rclone` of a finished transfer).
fn children_cpu_seconds() -> f64 {
    let ticks = {
        let out = Command::new("getconf").arg("CLK_TCK").output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<f64>()
            .unwrap()
    };
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    let cutime: f64 = fields[13].parse().unwrap();
    let cstime: f64 = fields[14].parse().unwrap();
    (cutime + cstime) / ticks
}

/// What one timed transfer cost: wall time, and the CPU time of the
/// framekit server (if one took part), of Garage, and of the program that
/// ran the transfer (`client` or `rclone`).
#[derive(Default, Clone, Copy)]
struct Cost {
    seconds: f64,
    server_cpu: f64,
    garage_cpu: f64,
    tool_cpu: f64,
}

/// Runs `transfer` (which runs one program and waits for it), measuring
/// its wall time and the CPU time `server`, Garage (`garage`) and the
/// program spent meanwhile.
fn measure(server: Option<u32>, garage: u32, transfer: impl FnOnce()) -> Cost {
    let (server_before, garage_before) = (server.map(cpu_seconds), cpu_seconds(garage));
    let tool_before = children_cpu_seconds();
    let start = Instant::now();
    transfer();
    let seconds = start.elapsed().as_secs_f64();
    Cost {
        seconds,
        server_cpu: server.map_or(0.0, |pid| cpu_seconds(pid) - server_before.unwrap_or(0.0)),
        garage_cpu: cpu_seconds(garage) - garage_before,
        tool_cpu: children_cpu_seconds() - tool_before,
    }
}

/// Runs an rclone command on `bucket` (its remote is `store:`); panics
/// unless it succeeds.
fn rclone(bucket: &Bucket, args: &[&str]) {
    let out = bucket.rclone().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "rclone {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The median of `costs` by one field.
fn median_of(costs: &[Cost], field: impl Fn(&Cost) -> f64) -> f64 {
    let mut values: Vec<f64> = costs.iter().map(field).collect();
    median(&mut values)
}

/// Prints a table row: median rate, the median of the per-run ratios to
/// rclone, the server's and Garage's CPU seconds per GiB moved.
fn s3_row(what: &str, costs: &[Cost], rclone: &[Cost], amount: f64, unit: &str, gib: f64) {
    let rate = median_of(costs, |c| amount / c.seconds);
    let mut ratios: Vec<f64> = costs
        .iter()
        .zip(rclone)
        .map(|(c, r)| r.seconds / c.seconds)
        .collect();
    let ratio = median(&mut ratios);
    let server = median_of(costs, |c| c.server_cpu / gib);
    let garage = median_of(costs, |c| c.garage_cpu / gib);
    let tool = median_of(costs, |c| c.tool_cpu / gib);
    println!(
        "| {what} | {rate:.0} {unit} | {ratio:.2} [{:.2}-{:.2}] | {} | {garage:.2} | {tool:.2} |",
        ratios[0],
        ratios[ratios.len() - 1],
        if costs.iter().all(|c| c.server_cpu == 0.0) {
            "-".to_owned()
        } else {
            format!("{server:.2}")
        }
    );
}

/// What the S3 section's parts share: Garage, a bucket, a server on it and
/// one on a local root, their working directory.
struct S3Bench {
    dir: tempfile::TempDir,
    garage: Garage,
    garage_pid: u32,
    bucket: Bucket,
    server: ServerProcess,
    local: ServerProcess,
    work: PathBuf,
}

fn s3(settings: &Settings) {
    // Garage's data too: it keeps one copy of identical 1 MiB blocks, so
    // the copies of the big file take the room of one.
    let dir = tempfile::tempdir_in(&settings.dir).unwrap();
    let garage = Garage::start_in(dir.path());
    let garage_pid = garage.pid(0).unwrap();
    let bucket = garage.bucket();
    let server = ServerProcess::start_on_bucket_logging_to(
        &bucket,
        &["--no-atomic-create"],
        &dir.path().join("server.log"),
    );
    let local = ServerProcess::start_logging_to(
        &dir.path().join("root"),
        &[],
        &dir.path().join("local.log"),
    );
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    println!(
        "## S3 store (Garage {}, one node, data in {}, {}): framekit against rclone copy",
        framekit_tests::s3::GARAGE_VERSION,
        settings.dir.display(),
        if on_tmpfs(&settings.dir) {
            "tmpfs"
        } else {
            "disk"
        }
    );
    let bench = S3Bench {
        dir,
        garage,
        garage_pid,
        bucket,
        server,
        local,
        work,
    };
    let only = settings.only.as_deref().unwrap_or("s3");
    if matches!(only, "s3" | "s3-big") {
        s3_big(settings, &bench);
    }
    if matches!(only, "s3" | "s3-small") {
        s3_small(settings, &bench);
    }
    if matches!(only, "s3" | "s3-memory") {
        s3_memory(settings, &bench);
    }
    drop(bench.garage);
}

#[allow(clippy::too_many_lines)] // one measurement section, read top to bottom
fn s3_big(settings: &Settings, bench: &S3Bench) {
    let S3Bench {
        dir,
        garage_pid,
        bucket,
        server,
        local,
        work,
        ..
    } = bench;
    let (dir, garage_pid, work) = (dir, *garage_pid, work.as_path());
    let size = settings.big;
    let gib = size as f64 / (1u64 << 30) as f64;
    let src = work.join("big.bin");
    let hash = write_random_file(&src, 2, size);
    let src_arg = src.to_str().unwrap();
    let (mut put, mut rput, mut lput) = (Vec::new(), Vec::new(), Vec::new());
    let (mut get, mut rget, mut lget) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..settings.runs {
        // A new name each time, for both: rclone skips a copy whose
        // destination it finds identical.
        let name = format!("big-{run}.bin");
        let remote = bucket.rclone_path(&format!("rclone/{name}"));
        warm(dir.path(), size);
        put.push(measure(Some(server.pid()), garage_pid, || {
            run_client(server, work, &["put", src_arg, "--name", &name]);
        }));
        warm(dir.path(), size);
        rput.push(measure(None, garage_pid, || {
            rclone(bucket, &["copyto", src_arg, &remote]);
        }));
        warm(dir.path(), size);
        lput.push(measure(Some(local.pid()), garage_pid, || {
            run_client(local, work, &["put", src_arg, "--name", &name]);
        }));

        let got = work.join("got.bin");
        let got_arg = got.to_str().unwrap();
        for (what, costs) in [("framekit", &mut get), ("local", &mut lget)] {
            let server = if what == "local" { &local } else { &server };
            warm(dir.path(), size);
            costs.push(measure(Some(server.pid()), garage_pid, || {
                run_client(server, work, &["get", &name, "--output", got_arg]);
            }));
            assert_eq!(framekit_tests::hash_file(&got), hash, "{what}");
            std::fs::remove_file(&got).unwrap();
            if what == "framekit" {
                warm(dir.path(), size);
                rget.push(measure(None, garage_pid, || {
                    rclone(bucket, &["copyto", &remote, got_arg]);
                }));
                assert_eq!(framekit_tests::hash_file(&got), hash, "rclone");
                std::fs::remove_file(&got).unwrap();
            }
        }
        // Room for the next runs.
        run_client(server, work, &["delete", &name]);
        run_client(local, work, &["delete", &name]);
        rclone(bucket, &["deletefile", &remote]);
        let mib = size as f64 / MIB as f64;
        println!(
            "run {}: put MiB/s framekit {:.0}, rclone {:.0}, local {:.0}; get MiB/s framekit {:.0}, rclone {:.0}, local {:.0}",
            run + 1,
            mib / put[run].seconds,
            mib / rput[run].seconds,
            mib / lput[run].seconds,
            mib / get[run].seconds,
            mib / rget[run].seconds,
            mib / lget[run].seconds,
        );
    }
    let mib = size as f64 / MIB as f64;
    println!(
        "| {} MiB file | median | ratio to rclone, median of runs [min-max] | server CPU s/GiB | Garage CPU s/GiB | client or rclone CPU s/GiB |",
        size / MIB
    );
    println!("|---|---:|---:|---:|---:|---:|");
    s3_row("put, framekit on Garage", &put, &rput, mib, "MiB/s", gib);
    s3_row(
        "put, rclone copy to Garage",
        &rput,
        &rput,
        mib,
        "MiB/s",
        gib,
    );
    s3_row(
        "put, framekit on the local backend",
        &lput,
        &rput,
        mib,
        "MiB/s",
        gib,
    );
    s3_row("get, framekit on Garage", &get, &rget, mib, "MiB/s", gib);
    s3_row(
        "get, rclone copy from Garage",
        &rget,
        &rget,
        mib,
        "MiB/s",
        gib,
    );
    s3_row(
        "get, framekit on the local backend",
        &lget,
        &rget,
        mib,
        "MiB/s",
        gib,
    );
}

#[allow(clippy::too_many_lines)] // one measurement section, read top to bottom
fn s3_small(settings: &Settings, bench: &S3Bench) {
    let S3Bench {
        garage_pid,
        bucket,
        server,
        local,
        work,
        ..
    } = bench;
    let (garage_pid, work) = (*garage_pid, work.as_path());
    // Small files.
    let n = settings.s3_small_files;
    let files = work.join("small");
    std::fs::create_dir(&files).unwrap();
    for i in 0..n {
        std::fs::write(files.join(format!("f{i:05}")), random_bytes(i as u64, 4096)).unwrap();
    }
    let files_arg = files.to_str().unwrap();
    let small_gib = (n * 4096) as f64 / (1u64 << 30) as f64;
    println!("## S3 store: {n} files of 4 KiB");
    let (mut put, mut rput, mut lput) = (Vec::new(), Vec::new(), Vec::new());
    let (mut get, mut rget, mut lget) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..settings.runs {
        let name = format!("small-{run}");
        put.push(measure(Some(server.pid()), garage_pid, || {
            run_client(server, work, &["put", files_arg, "--name", &name]);
        }));
        let remote = bucket.rclone_path(&format!("rclone/{name}"));
        rput.push(measure(None, garage_pid, || {
            rclone(bucket, &["copy", files_arg, &remote]);
        }));
        lput.push(measure(Some(local.pid()), garage_pid, || {
            run_client(local, work, &["put", files_arg, "--name", &name]);
        }));
        let out = work.join(format!("out-{run}"));
        let (rout, lout) = (
            work.join(format!("rout-{run}")),
            work.join(format!("lout-{run}")),
        );
        get.push(measure(Some(server.pid()), garage_pid, || {
            run_client(
                server,
                work,
                &[
                    "get",
                    &format!("{name}/"),
                    "--output",
                    out.to_str().unwrap(),
                ],
            );
        }));
        rget.push(measure(None, garage_pid, || {
            rclone(bucket, &["copy", &remote, rout.to_str().unwrap()]);
        }));
        lget.push(measure(Some(local.pid()), garage_pid, || {
            run_client(
                local,
                work,
                &[
                    "get",
                    &format!("{name}/"),
                    "--output",
                    lout.to_str().unwrap(),
                ],
            );
        }));
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), n);
        assert_eq!(std::fs::read_dir(&rout).unwrap().count(), n);
        for out in [out, rout, lout] {
            std::fs::remove_dir_all(out).unwrap();
        }
        println!(
            "run {}: put files/s framekit {:.0}, rclone {:.0}, local {:.0}; get files/s framekit {:.0}, rclone {:.0}, local {:.0}",
            run + 1,
            n as f64 / put[run].seconds,
            n as f64 / rput[run].seconds,
            n as f64 / lput[run].seconds,
            n as f64 / get[run].seconds,
            n as f64 / rget[run].seconds,
            n as f64 / lget[run].seconds,
        );
    }
    println!(
        "| {n} x 4 KiB | median | ratio to rclone, median of runs [min-max] | server CPU s/GiB | Garage CPU s/GiB | client or rclone CPU s/GiB |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let files_n = n as f64;
    s3_row(
        "put, framekit on Garage",
        &put,
        &rput,
        files_n,
        "files/s",
        small_gib,
    );
    s3_row(
        "put, rclone copy to Garage",
        &rput,
        &rput,
        files_n,
        "files/s",
        small_gib,
    );
    s3_row(
        "put, framekit on the local backend",
        &lput,
        &rput,
        files_n,
        "files/s",
        small_gib,
    );
    s3_row(
        "get, framekit on Garage",
        &get,
        &rget,
        files_n,
        "files/s",
        small_gib,
    );
    s3_row(
        "get, rclone copy from Garage",
        &rget,
        &rget,
        files_n,
        "files/s",
        small_gib,
    );
    s3_row(
        "get, framekit on the local backend",
        &lget,
        &rget,
        files_n,
        "files/s",
        small_gib,
    );
}

fn s3_memory(settings: &Settings, bench: &S3Bench) {
    let S3Bench { dir, bucket, .. } = bench;
    // Memory: many uploads at once, each needing parts in memory.
    let uploads = settings.uploads;
    let upload_size = settings.upload_size;
    let server = ServerProcess::start_on_bucket_logging_to(
        bucket,
        &[
            "--no-atomic-create",
            "--max-connections",
            "2000",
            "--max-connections-per-ip",
            "2000",
        ],
        &dir.path().join("memory.log"),
    );
    let (_, before) = rss(server.pid());
    let block = random_bytes(7, MIB as usize);
    let mut hasher = blake3::Hasher::new();
    for _ in 0..upload_size / MIB {
        hasher.update(&block);
    }
    let expected = *hasher.finalize().as_bytes();
    let addr = server.addr.to_string();
    let barrier = std::sync::Barrier::new(uploads);
    let start = Instant::now();
    std::thread::scope(|scope| {
        for u in 0..uploads {
            let (addr, block, barrier) = (&addr, &block, &barrier);
            scope.spawn(move || {
                let mut session = connect(addr, &ConnectOptions::default()).unwrap();
                barrier.wait();
                let mut upload = session
                    .start_put(&format!("memory/up{u}"), upload_size, true)
                    .unwrap();
                for _ in 0..upload_size / MIB {
                    upload.send(block).unwrap();
                }
                let done = upload.finish().unwrap();
                assert_eq!(done.hash, expected);
            });
        }
    });
    let took = start.elapsed();
    let (_, peak) = rss(server.pid());
    println!(
        "| {uploads} clients uploading {} MiB each at once to Garage | peak RSS {:.1} MiB (at start {:.1} MiB), {:.1} s |",
        upload_size / MIB,
        peak as f64 / 1024.0,
        before as f64 / 1024.0,
        took.as_secs_f64()
    );
}
