//! Real S3 services for the tests, started on loopback on free ports, each
//! in a directory of its own, and stopped when dropped:
//!
//! - [`Garage`]: Garage 2.5.0, a distributed S3-compatible store, as one
//!   node (replication factor 1) or as a cluster of three (replication
//!   factor 3), with the sqlite metadata engine, a generated RPC secret,
//!   admin token and access key;
//! - [`Moto`]: `moto_server` (the Python package `moto[server]`), an
//!   in-memory S3 that enforces conditional writes.
//!
//! Each test asks its service for a [`Bucket`] of its own; a test binary
//! shares one service across its tests with [`Garage::shared`] and
//! [`Moto::shared`] (started once per process, stopped when it exits).
//!
//! `scripts/install-test-deps` installs both: Garage in
//! `$CARGO_HOME/bin/garage` (or `$FRAMEKIT_GARAGE`), moto in
//! `target/moto-venv` (or `$FRAMEKIT_MOTO_SERVER`).
//!
//! Every service process runs under a small `sh` that holds the read end of
//! a pipe from the test process: when the test process closes it (on drop)
//! or exits, however it exits, the shell kills the service. So a shared
//! service, kept in a static that is never dropped, still stops with its
//! test binary. Its directory is removed by the next process that starts a
//! service.
//!
//! # What the two services do, as measured (`tests/tests/s3_services.rs`)
//!
//! | request, on an existing key                      | Garage 2.5.0     | moto 5.2.6      |
//! |--------------------------------------------------|------------------|-----------------|
//! | PutObject `If-None-Match: *`                     | 200, overwrites  | 412, keeps      |
//! | PutObject `If-Match: <stale etag>`               | 200, overwrites  | 412, keeps      |
//! | CompleteMultipartUpload `If-None-Match: *`       | 200, overwrites  | 412, keeps      |
//! | CompleteMultipartUpload `If-Match: <stale etag>` | 200, overwrites  | 200, overwrites |
//! | CopyObject `If-None-Match: *`                    | 200, overwrites  | 200, overwrites |
//! | UploadPartCopy + Complete `If-None-Match: *`     | 200, overwrites  | 412, keeps      |
//! | the same CompleteMultipartUpload sent again      | 404 NoSuchUpload | 200             |
//! | GetObject `If-Match: <stale etag>`               | 412              | 412             |
//!
//! Garage ignores conditional headers on every write. moto enforces
//! `If-None-Match: *` on PutObject and CompleteMultipartUpload and
//! `If-Match` on PutObject only. The last row but one matters to a
//! completion retried after a lost response. Garage copies no part smaller
//! than 5 MiB (UploadPartCopy), even the only one.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The Garage version the tests are written against.
pub const GARAGE_VERSION: &str = "2.5.0";

/// Garage's region, as its configuration here names it.
pub const GARAGE_REGION: &str = "garage";

/// moto's default region (where a bucket created without a location
/// constraint lives).
pub const MOTO_REGION: &str = "us-east-1";

/// How long a service may take to become ready.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// One bucket on an S3 service, with what a client needs to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    /// The bucket's name.
    pub name: String,
    /// The service's URL, e.g. `http://127.0.0.1:39000`.
    pub endpoint: String,
    /// The region to sign requests for.
    pub region: String,
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
}

impl Bucket {
    /// The environment a framekit server reads its store's configuration
    /// from (as `object_store`'s `AmazonS3Builder::from_env` does), ready
    /// for [`Command::envs`]. See [`Bucket::configure`] to also drop the
    /// `AWS_*` variables a command would otherwise inherit.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", self.access_key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_access_key.clone()),
            ("AWS_REGION", self.region.clone()),
            ("AWS_ENDPOINT", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".to_owned()),
        ]
    }

    /// Gives `cmd` this bucket's [`Bucket::env`] and no other `AWS_*`
    /// variable, whether from this process's environment (a developer's
    /// session token or profile must not leak into a test) or set on `cmd`
    /// before.
    pub fn configure<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        let set: Vec<_> = cmd.get_envs().map(|(key, _)| key.to_owned()).collect();
        for key in std::env::vars_os().map(|(key, _)| key).chain(set) {
            if key.to_string_lossy().starts_with("AWS_") {
                cmd.env_remove(key);
            }
        }
        cmd.envs(self.env())
    }

    /// The store argument of a framekit server on this bucket:
    /// `s3://BUCKET`, or `s3://BUCKET/PREFIX`.
    pub fn url(&self, prefix: Option<&str>) -> String {
        match prefix {
            Some(prefix) => format!("s3://{}/{}", self.name, prefix.trim_matches('/')),
            None => format!("s3://{}", self.name),
        }
    }

    /// The same bucket reached through another endpoint (another node of a
    /// cluster).
    pub fn via(&self, endpoint: &str) -> Bucket {
        Bucket {
            endpoint: endpoint.to_owned(),
            ..self.clone()
        }
    }

    /// The name of the rclone remote that [`Bucket::rclone`] configures.
    pub const RCLONE_REMOTE: &'static str = "store";

    /// An `rclone` command whose remote `store:` is this service, configured
    /// through the environment only: no configuration file is read or
    /// written. Name objects as [`Bucket::rclone_path`] spells them.
    pub fn rclone(&self) -> Command {
        let mut cmd = Command::new("rclone");
        for (key, _) in std::env::vars_os() {
            let key_text = key.to_string_lossy();
            if key_text.starts_with("RCLONE_") || key_text.starts_with("AWS_") {
                cmd.env_remove(key);
            }
        }
        let remote = "RCLONE_CONFIG_STORE_";
        cmd.env("RCLONE_CONFIG", "/dev/null")
            .env(format!("{remote}TYPE"), "s3")
            .env(format!("{remote}PROVIDER"), "Other")
            .env(format!("{remote}ENV_AUTH"), "false")
            .env(format!("{remote}ACCESS_KEY_ID"), &self.access_key_id)
            .env(
                format!("{remote}SECRET_ACCESS_KEY"),
                &self.secret_access_key,
            )
            .env(format!("{remote}REGION"), &self.region)
            .env(format!("{remote}ENDPOINT"), &self.endpoint)
            .env(format!("{remote}FORCE_PATH_STYLE"), "true")
            .stdin(Stdio::null());
        cmd
    }

    /// `store:BUCKET/KEY`, the name of object `key` for [`Bucket::rclone`].
    pub fn rclone_path(&self, key: &str) -> String {
        format!("{}:{}/{}", Bucket::RCLONE_REMOTE, self.name, key)
    }
}

/// A Garage deployment on loopback: one node, or a cluster.
#[derive(Debug)]
pub struct Garage {
    nodes: Vec<GarageNode>,
    dir: PathBuf,
    access_key_id: String,
    secret_access_key: String,
}

#[derive(Debug)]
struct GarageNode {
    config: PathBuf,
    log: PathBuf,
    s3: SocketAddr,
    rpc: SocketAddr,
    admin: SocketAddr,
    process: Option<Supervised>,
}

impl Garage {
    /// Starts a single node (replication factor 1) with a layout, and an
    /// access key.
    pub fn start() -> Garage {
        Garage::start_nodes(1, &std::env::temp_dir())
    }

    /// Starts a single node keeping its data in a directory under `dir`
    /// (a benchmark chooses the file system).
    pub fn start_in(dir: &Path) -> Garage {
        Garage::start_nodes(1, dir)
    }

    /// Starts a cluster of three nodes on loopback, replication factor 3:
    /// every object is on every node, and reads and writes need two of
    /// them.
    pub fn start_cluster() -> Garage {
        Garage::start_nodes(3, &std::env::temp_dir())
    }

    /// One single-node Garage for the whole test binary, started by the
    /// first test that asks. Tests share it through buckets of their own;
    /// none may stop it.
    pub fn shared() -> &'static Garage {
        static SHARED: OnceLock<Garage> = OnceLock::new();
        SHARED.get_or_init(Garage::start)
    }

    fn start_nodes(count: usize, base: &Path) -> Garage {
        // A free port found by binding port 0 may be taken by someone else
        // before Garage binds it: try again with new ones.
        let mut failures = Vec::new();
        for _ in 0..3 {
            match Garage::try_start(count, base) {
                Ok(garage) => return garage,
                Err(failure) => failures.push(failure),
            }
        }
        panic!("cannot start Garage:\n{}", failures.join("\n---\n"));
    }

    fn try_start(count: usize, base: &Path) -> Result<Garage, String> {
        let program = garage_program();
        let dir = service_dir(base, "garage");
        let rpc_secret = random_hex(32);
        let admin_token = random_hex(32);
        let mut nodes = Vec::new();
        for i in 0..count {
            let node_dir = dir.join(format!("node{i}"));
            std::fs::create_dir_all(&node_dir).expect("create a Garage node's directory");
            let node = GarageNode {
                config: node_dir.join("garage.toml"),
                log: node_dir.join("garage.log"),
                s3: free_port(),
                rpc: free_port(),
                admin: free_port(),
                process: None,
            };
            let config = format!(
                r#"metadata_dir = "{dir}/meta"
data_dir = "{dir}/data"
db_engine = "sqlite"
replication_factor = {count}
metadata_fsync = false
data_fsync = false
disable_scrub = true
compression_level = "none"
rpc_secret = "{rpc_secret}"
rpc_bind_addr = "{rpc}"
rpc_public_addr = "{rpc}"

[s3_api]
api_bind_addr = "{s3}"
s3_region = "{GARAGE_REGION}"

[admin]
api_bind_addr = "{admin}"
admin_token = "{admin_token}"
"#,
                dir = node_dir.display(),
                rpc = node.rpc,
                s3 = node.s3,
                admin = node.admin,
            );
            write_private(&node.config, &config);
            nodes.push(node);
        }
        let mut garage = Garage {
            nodes,
            dir,
            access_key_id: format!("GK{}", random_hex(12)),
            secret_access_key: random_hex(32),
        };
        for i in 0..count {
            garage.nodes[i].process = Some(garage.spawn_node(&program, i));
        }
        let mut ids = Vec::new();
        for i in 0..count {
            ids.push(garage.wait_for_rpc(i)?);
        }
        for (i, id) in ids.iter().enumerate().skip(1) {
            garage.cli(&["node", "connect", &format!("{id}@{}", garage.nodes[i].rpc)]);
        }
        let mut assign = vec!["layout", "assign", "-z", "dc1", "-c", "1G"];
        assign.extend(ids.iter().map(String::as_str));
        garage.cli(&assign);
        garage.cli(&["layout", "apply", "--version", "1"]);
        for i in 0..count {
            garage.wait_until_healthy(i)?;
        }
        let (key, secret) = (
            garage.access_key_id.clone(),
            garage.secret_access_key.clone(),
        );
        garage.cli(&[
            "key",
            "import",
            "--yes",
            "-n",
            "framekit-tests",
            &key,
            &secret,
        ]);
        Ok(garage)
    }

    fn spawn_node(&self, program: &Path, i: usize) -> Supervised {
        let node = &self.nodes[i];
        let mut cmd = Command::new(program);
        cmd.arg("-c")
            .arg(&node.config)
            .arg("server")
            .env("RUST_LOG", "garage=warn");
        Supervised::spawn(&mut cmd, &node.log)
    }

    /// Waits until node `i` answers on its RPC port; returns its node id.
    fn wait_for_rpc(&self, i: usize) -> Result<String, String> {
        let deadline = Instant::now() + READY_WITHIN;
        // `node id` only reads the node's key from disk; `status` asks the
        // running node.
        while !self.cli_output(i, &["status"]).status.success() {
            if let Some(process) = &self.nodes[i].process
                && !process.alive()
            {
                return Err(format!("Garage node {i} exited:\n{}", self.node_log(i)));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "Garage node {i} not ready within {READY_WITHIN:?}:\n{}",
                    self.node_log(i)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = self.cli_output(i, &["node", "id", "-q"]);
        let text = String::from_utf8_lossy(&out.stdout);
        match text.trim().split_once('@') {
            Some((id, _)) if out.status.success() => Ok(id.to_owned()),
            _ => Err(format!("garage node id: {text}")),
        }
    }

    /// Waits until node `i` says it can serve requests (quorum reached).
    fn wait_until_healthy(&self, i: usize) -> Result<(), String> {
        let deadline = Instant::now() + READY_WITHIN;
        while http_status(self.nodes[i].admin, "GET", "/health") != Some(200) {
            if Instant::now() > deadline {
                return Err(format!(
                    "Garage node {i} not healthy within {READY_WITHIN:?}:\n{}",
                    self.node_log(i)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Runs the `garage` command line tool against the first running node;
    /// panics unless it succeeds. Returns its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let i = (0..self.nodes.len())
            .find(|&i| self.nodes[i].process.is_some())
            .expect("a running Garage node");
        let out = self.cli_output(i, args);
        assert!(
            out.status.success(),
            "garage {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn cli_output(&self, i: usize, args: &[&str]) -> std::process::Output {
        // A command whose node dies under it waits for minutes; `timeout`
        // also ends it if this process dies first.
        Command::new("timeout")
            .args(["-s", "KILL", "60"])
            .arg(garage_program())
            .arg("-c")
            .arg(&self.nodes[i].config)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .expect("run garage")
    }

    /// Creates a bucket of a new name that the access key may read, write
    /// and own, reached through the first node.
    pub fn bucket(&self) -> Bucket {
        let name = bucket_name();
        self.cli(&["bucket", "create", &name]);
        self.cli(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            &name,
            "--key",
            &self.access_key_id,
        ]);
        Bucket {
            name,
            endpoint: self.endpoint(0),
            region: GARAGE_REGION.to_owned(),
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.clone(),
        }
    }

    /// The directory that holds the nodes' configuration, data and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The number of nodes.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The S3 endpoint of node `i`.
    pub fn endpoint(&self, i: usize) -> String {
        format!("http://{}", self.nodes[i].s3)
    }

    /// The process id of node `i`, if it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].process.as_ref().map(|p| p.pid)
    }

    /// Kills node `i` (SIGKILL, as a crash would); its data stays for
    /// [`Garage::restart`].
    pub fn stop(&mut self, i: usize) {
        if let Some(mut process) = self.nodes[i].process.take() {
            process.kill();
        }
    }

    /// Starts node `i` again on its data, ports and configuration, and
    /// waits until the cluster is healthy.
    pub fn restart(&mut self, i: usize) {
        self.stop(i);
        self.nodes[i].process = Some(self.spawn_node(&garage_program(), i));
        self.wait_for_rpc(i).unwrap_or_else(|e| panic!("{e}"));
        self.wait_until_healthy(i).unwrap_or_else(|e| panic!("{e}"));
    }

    /// What node `i` has logged (warnings and errors).
    pub fn node_log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default()
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut process) = node.process.take() {
                process.kill();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A `moto_server` on loopback (an in-memory S3).
#[derive(Debug)]
pub struct Moto {
    addr: SocketAddr,
    tls: bool,
    dir: PathBuf,
    process: Option<Supervised>,
    access_key_id: String,
    secret_access_key: String,
}

impl Moto {
    /// Starts `moto_server` on a free loopback port.
    pub fn start() -> Moto {
        Moto::start_with(false)
    }

    /// Starts `moto_server` serving HTTPS with a self-signed certificate
    /// (clients must accept invalid certificates).
    pub fn start_tls() -> Moto {
        Moto::start_with(true)
    }

    fn start_with(tls: bool) -> Moto {
        let program = moto_program();
        let mut failures = Vec::new();
        for _ in 0..3 {
            let dir = service_dir(&std::env::temp_dir(), "moto");
            let addr = free_port();
            let log = dir.join("moto.log");
            let mut cmd = Command::new(&program);
            cmd.arg("-H")
                .arg(addr.ip().to_string())
                .arg("-p")
                .arg(addr.port().to_string())
                .current_dir(&dir);
            if tls {
                cmd.arg("--ssl");
            }
            let process = Supervised::spawn(&mut cmd, &log);
            let moto = Moto {
                addr,
                tls,
                dir,
                process: Some(process),
                access_key_id: format!("AKIA{}", random_hex(8).to_uppercase()),
                secret_access_key: random_hex(20),
            };
            match moto.wait_until_ready() {
                Ok(()) => return moto,
                Err(failure) => failures.push(failure),
            }
        }
        panic!("cannot start moto_server:\n{}", failures.join("\n---\n"));
    }

    /// One `moto_server` for the whole test binary, started by the first
    /// test that asks. Tests share it through buckets of their own.
    pub fn shared() -> &'static Moto {
        static SHARED: OnceLock<Moto> = OnceLock::new();
        SHARED.get_or_init(Moto::start)
    }

    fn wait_until_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + READY_WITHIN;
        // moto answers the root with 200 (a bucket listing) once it serves;
        // over TLS, accepting connections is all this can check.
        while !(if self.tls {
            TcpStream::connect(self.addr).is_ok()
        } else {
            http_status(self.addr, "GET", "/") == Some(200)
        }) {
            if !self.process.as_ref().is_some_and(Supervised::alive) {
                return Err(format!("moto_server exited:\n{}", self.log()));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "moto_server not ready within {READY_WITHIN:?}:\n{}",
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Creates a bucket of a new name. moto checks no signature: any key
    /// is accepted, so the returned one is only for the client's sake.
    pub fn bucket(&self) -> Bucket {
        let bucket = Bucket {
            name: bucket_name(),
            endpoint: self.endpoint(),
            region: MOTO_REGION.to_owned(),
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.clone(),
        };
        if self.tls {
            let out = bucket
                .rclone()
                .args(["mkdir", "--no-check-certificate"])
                .arg(bucket.rclone_path(""))
                .output()
                .expect("run rclone");
            assert!(
                out.status.success(),
                "rclone mkdir {}: {}\n{}",
                bucket.name,
                String::from_utf8_lossy(&out.stderr),
                self.log()
            );
        } else {
            let status = http_status(self.addr, "PUT", &format!("/{}", bucket.name));
            assert_eq!(
                status,
                Some(200),
                "moto: create bucket {}:\n{}",
                bucket.name,
                self.log()
            );
        }
        bucket
    }

    /// The S3 endpoint.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// What moto has logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("moto.log")).unwrap_or_default()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A service process run by `sh`, which kills it when its standard input
/// (a pipe from this process) closes: on [`Supervised::kill`], on drop, or
/// when this process dies.
#[derive(Debug)]
struct Supervised {
    shell: Child,
    stdin: Option<ChildStdin>,
    /// The service's own process id.
    pid: u32,
}

/// `sh -c` script: runs `"$@"` in the background with its output on
/// stderr, prints its pid, waits for the end of stdin, then kills it.
const SUPERVISOR: &str = r#""$@" >&2 & echo $!; cat >/dev/null; kill -KILL $! 2>/dev/null; wait"#;

impl Supervised {
    fn spawn(cmd: &mut Command, log: &Path) -> Supervised {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open the service's log");
        let mut shell = Command::new("sh")
            .arg("-c")
            .arg(SUPERVISOR)
            .arg("sh")
            .arg(cmd.get_program())
            .args(cmd.get_args())
            .envs(
                cmd.get_envs()
                    .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))),
            )
            .current_dir(cmd.get_current_dir().unwrap_or(Path::new(".")))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("run sh");
        let stdin = shell.stdin.take();
        let mut line = String::new();
        BufReader::new(shell.stdout.take().expect("the shell's stdout"))
            .read_line(&mut line)
            .expect("read the service's pid");
        let pid = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("sh printed {line:?}, not a pid"));
        Supervised { shell, stdin, pid }
    }

    /// Whether the service still runs (a dead one is a zombie until the
    /// shell reaps it).
    fn alive(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .ok()
            .and_then(|stat| {
                let state = stat.rsplit_once(") ")?.1.chars().next()?;
                Some(!matches!(state, 'Z' | 'X'))
            })
            .unwrap_or(false)
    }

    /// Kills the service (SIGKILL) and waits until it is gone.
    fn kill(&mut self) {
        self.stdin.take();
        let _ = self.shell.wait();
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The garage binary: `$FRAMEKIT_GARAGE`, else `$CARGO_HOME/bin/garage`.
fn garage_program() -> PathBuf {
    static PROGRAM: OnceLock<PathBuf> = OnceLock::new();
    PROGRAM
        .get_or_init(|| {
            let path = std::env::var_os("FRAMEKIT_GARAGE")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    let cargo_home = std::env::var_os("CARGO_HOME")
                        .map(PathBuf::from)
                        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
                        .expect("CARGO_HOME or HOME");
                    cargo_home.join("bin/garage")
                });
            let version = Command::new(&path).arg("--version").output();
            let text = version
                .as_ref()
                .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
                .unwrap_or_default();
            assert!(
                text.contains(&format!("cargo:{GARAGE_VERSION} ")),
                "Garage {GARAGE_VERSION} is needed at {} (found {:?}): run scripts/install-test-deps",
                path.display(),
                version.map(|_| text.trim().to_owned()).map_err(|e| e.to_string())
            );
            path
        })
        .clone()
}

/// moto_server: `$FRAMEKIT_MOTO_SERVER`, else the one in the virtual
/// environment `scripts/install-test-deps` makes in the target directory.
fn moto_program() -> PathBuf {
    let path = std::env::var_os("FRAMEKIT_MOTO_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("moto-venv/bin/moto_server"));
    assert!(
        path.exists(),
        "moto_server is needed at {}: run scripts/install-test-deps",
        path.display()
    );
    path
}

/// The target directory: the test executable is target/<profile>/deps/<name>
/// (an example's, target/<profile>/examples/<name>).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    exe.ancestors()
        .nth(3)
        .expect("an executable under target/<profile>/<dir>/")
        .to_owned()
}

/// A new directory for a service: `<base>/framekit-s3/<pid>-<random>`
/// (`base` is `$TMPDIR` but for a benchmark's Garage). Those of processes
/// that no longer run are removed first (a shared service's directory
/// outlives its process).
fn service_dir(base: &Path, what: &str) -> PathBuf {
    let base = base.join("framekit-s3");
    std::fs::create_dir_all(&base).expect("create the services' directory");
    static SWEPT: OnceLock<()> = OnceLock::new();
    SWEPT.get_or_init(|| {
        for entry in std::fs::read_dir(&base).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let owner = name.split('-').next().unwrap_or_default();
            if !owner.is_empty() && !Path::new("/proc").join(owner).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    });
    tempfile::Builder::new()
        .prefix(&format!("{}-{what}-", std::process::id()))
        .tempdir_in(&base)
        .expect("create a service's directory")
        .keep()
}

/// A loopback address with a port that was free a moment ago.
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind a loopback port")
}

/// A new bucket name, unique in this process and unlikely to collide with
/// another's: `fk-<pid>-<n>-<random>`.
fn bucket_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "fk-{}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        random_hex(3)
    )
}

/// `len` random bytes from the kernel, in hex.
fn random_hex(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes a file only its owner may read (it holds secrets).
fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .expect("create a configuration file");
    file.write_all(text.as_bytes())
        .expect("write a configuration file");
}

/// The status code of a bodyless HTTP/1.1 request, or `None` if nothing
/// answers.
fn http_status(addr: SocketAddr, method: &str, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}
