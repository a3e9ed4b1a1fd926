//! An rsync daemon on loopback, the reference the small-file benchmarks
//! compare with: started on a free port with a generated configuration,
//! serving one writable module, and stopped when dropped.
//!
//! `scripts/install-test-deps` installs rsync (the Debian package).

use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The module every daemon serves.
pub const MODULE: &str = "bench";

/// A running `rsync --daemon`, killed when dropped.
#[derive(Debug)]
pub struct RsyncDaemon {
    child: Child,
    port: u16,
    /// The directory the module serves.
    pub path: PathBuf,
}

/// Whether an `rsync` command can be run.
pub fn available() -> bool {
    Command::new("rsync")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

impl RsyncDaemon {
    /// Starts a daemon whose module serves `dir/module`, with its
    /// configuration and log in `dir`, writing files as the owner of
    /// `dir`; `None` if rsync is not installed.
    pub fn start(dir: &Path) -> Option<RsyncDaemon> {
        if !available() {
            return None;
        }
        let path = dir.join("module");
        std::fs::create_dir_all(&path).expect("create the module's directory");
        let owner = std::fs::metadata(dir).expect("stat the daemon's directory");
        let config = dir.join("rsyncd.conf");
        std::fs::write(
            &config,
            format!(
                "use chroot = no\nlog file = {log}\n[{MODULE}]\npath = {path}\nread only = no\nuid = {uid}\ngid = {gid}\n",
                log = dir.join("rsyncd.log").display(),
                path = path.display(),
                uid = owner.uid(),
                gid = owner.gid(),
            ),
        )
        .expect("write the daemon's configuration");
        // A port free a moment ago: the daemon fails to start if another
        // process takes it in between, which the wait below reports.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("find a free port")
            .port();
        let child = Command::new("rsync")
            .arg("--daemon")
            .arg("--no-detach")
            .arg(format!("--config={}", config.display()))
            .arg("--address=127.0.0.1")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rsync --daemon");
        let mut daemon = RsyncDaemon { child, port, path };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                panic!("rsync --daemon exited at once ({status})");
            }
            assert!(
                Instant::now() < deadline,
                "rsync --daemon did not listen on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(daemon)
    }

    /// The URL of `sub` (a path inside the module, or empty), for an
    /// rsync command: `rsync://127.0.0.1:PORT/bench/SUB`.
    pub fn url(&self, sub: &str) -> String {
        format!("rsync://127.0.0.1:{}/{MODULE}/{sub}", self.port)
    }
}

impl Drop for RsyncDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
