//! What the transfers of several files share: one connection, made again
//! when a failure leaves it unusable ([`Link`]), and their counts and
//! summary line ([`Tally`]).

use super::output::{Outcome, TransferRecord, Ui, json_line};
use crate::connect::{ConnectOptions, Stream, connect};
use crate::error::{ClientError, hex};
use crate::escape::Escaped;
use crate::files::Uploaded;
use crate::files::hashes::LocalHashes;
use crate::progress::Meter;
use crate::session::Session;
use framekit_transfer::Hash;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// One connection for a whole set of transfers, made again if a failure
/// left it unusable.
pub(super) struct Link<'a> {
    addr: &'a str,
    options: &'a ConnectOptions,
    session: Option<Session<Stream>>,
}

impl<'a> Link<'a> {
    pub(super) fn new(addr: &'a str, options: &'a ConnectOptions) -> Self {
        Link {
            addr,
            options,
            session: None,
        }
    }

    /// Whether a failed transfer may be tried again (`--no-retry` was not
    /// given).
    pub(super) fn retries(&self) -> bool {
        self.options.busy_retry.is_some()
    }

    /// Whether the session failed in the middle of an exchange.
    pub(super) fn is_broken(&self) -> bool {
        self.session.as_ref().is_some_and(Session::is_broken)
    }

    /// The session, connected if it was not or is no longer usable.
    pub(super) fn session(&mut self) -> Result<&mut Session<Stream>, ClientError> {
        let session = match self.session.take() {
            Some(session) if session.is_usable() => session,
            _ => connect(self.addr, self.options)?,
        };
        Ok(self.session.insert(session))
    }
}

/// One file done: transferred, or found identical on the other side.
pub(super) struct Done<'a> {
    /// The remote name.
    pub(super) name: &'a str,
    /// The local path.
    pub(super) path: &'a Path,
    pub(super) size: u64,
    pub(super) hash: Hash,
    /// Body bytes that travelled: 0 for an unchanged file.
    pub(super) bytes: u64,
    pub(super) unchanged: bool,
}

/// How a set of transfers (or a single one) went, and where it says so:
/// result lines (or JSON records) and the summary.
pub(super) struct Tally<'o> {
    /// "put" or "get".
    op: &'static str,
    started: Instant,
    out: &'o mut dyn Write,
    ui: Ui,
    /// Whether each file done gets a plain line (put: on stdout; a
    /// single get: on stderr).
    pub(super) lines: bool,
    pub(super) files: usize,
    pub(super) unchanged: usize,
    pub(super) failed: usize,
    pub(super) skipped: usize,
    pub(super) bytes: u64,
}

impl<'o> Tally<'o> {
    pub(super) fn new(op: &'static str, out: &'o mut dyn Write, ui: Ui, lines: bool) -> Self {
        Tally {
            op,
            started: Instant::now(),
            out,
            ui,
            lines,
            files: 0,
            unchanged: 0,
            failed: 0,
            skipped: 0,
            bytes: 0,
        }
    }

    /// How the command speaks.
    pub(super) fn ui(&self) -> Ui {
        self.ui
    }

    /// Counts one file done and reports it. Fails only if the output
    /// cannot be written.
    pub(super) fn done(&mut self, meter: &Meter, done: &Done<'_>) -> Result<(), ClientError> {
        self.files += 1;
        self.bytes += done.bytes;
        if done.unchanged {
            self.unchanged += 1;
        }
        if self.ui.json {
            let outcome = match (done.unchanged, self.op) {
                (true, _) => Outcome::Unchanged,
                (false, "put") => Outcome::Sent,
                (false, _) => Outcome::Received,
            };
            let record = TransferRecord {
                op: self.op,
                name: Some(done.name),
                path: Some(done.path.display().to_string()),
                kind: "file",
                size: Some(done.size),
                blake3: Some(hex(&done.hash)),
                outcome,
                bytes: done.bytes,
                error: None,
            };
            return meter.print_with(|| json_line(self.out, &record));
        }
        if !(self.ui.status && self.lines) {
            return Ok(());
        }
        let what = if done.unchanged { "unchanged, " } else { "" };
        let line = match self.op {
            "put" => format!(
                "put {}: {what}{} bytes, blake3 {}",
                Escaped(done.name),
                done.size,
                hex(&done.hash)
            ),
            _ => format!(
                "get {} -> {}: {what}{} bytes, blake3 {}",
                Escaped(done.name),
                done.path.display(),
                done.size,
                hex(&done.hash)
            ),
        };
        if self.op == "put" {
            meter.print_to(self.out, &line).map_err(ClientError::Output)
        } else {
            meter.println(&line);
            Ok(())
        }
    }

    /// Counts one upload and reports it, or reports its failure. Fails
    /// only if the output cannot be written.
    pub(super) fn report(
        &mut self,
        meter: &Meter,
        remote: &str,
        path: &Path,
        result: Result<Uploaded, ClientError>,
        hashes: &mut LocalHashes,
    ) -> Result<(), ClientError> {
        match result {
            Ok(uploaded) => {
                if let Some(stamp) = uploaded.stamp {
                    hashes.record(stamp, uploaded.done.hash);
                }
                let done = Done {
                    name: remote,
                    path,
                    size: uploaded.done.size,
                    hash: uploaded.done.hash,
                    bytes: uploaded.sent,
                    unchanged: false,
                };
                self.done(meter, &done)
            }
            Err(e) => self.fail(meter, remote, Some(path), &e),
        }
    }

    /// Reports one failure on its own line on stderr (and as a record
    /// with `--json`).
    pub(super) fn fail(
        &mut self,
        meter: &Meter,
        what: &str,
        path: Option<&Path>,
        error: &ClientError,
    ) -> Result<(), ClientError> {
        self.failed += 1;
        meter.println(&format!("error: {}: {}", Escaped(what), error.report()));
        if self.ui.json {
            let record = TransferRecord {
                op: self.op,
                name: Some(what),
                path: path.map(|p| p.display().to_string()),
                kind: "file",
                size: None,
                blake3: None,
                outcome: Outcome::Failed,
                bytes: 0,
                error: Some(error.report()),
            };
            return meter.print_with(|| json_line(self.out, &record));
        }
        Ok(())
    }

    /// Reports `names`, files that were not transferred because the
    /// connection was lost for good: each counts as failed, with one line
    /// on stderr for all of them (and a record each with `--json`).
    pub(super) fn lost(
        &mut self,
        meter: &Meter,
        what: &str,
        names: &[&str],
        error: &ClientError,
    ) -> Result<(), ClientError> {
        if names.is_empty() {
            return Ok(());
        }
        self.failed += names.len();
        meter.println(&format!(
            "error: {}: {} files not transferred: {}",
            Escaped(what),
            names.len(),
            error.report()
        ));
        if !self.ui.json {
            return Ok(());
        }
        let report = error.report();
        meter.print_with(|| {
            for name in names {
                let record = TransferRecord {
                    op: self.op,
                    name: Some(name),
                    path: None,
                    kind: "file",
                    size: None,
                    blake3: None,
                    outcome: Outcome::Failed,
                    bytes: 0,
                    error: Some(report.clone()),
                };
                json_line(self.out, &record)?;
            }
            Ok(())
        })
    }

    /// Reports something left out on purpose: a warning, unless quiet.
    pub(super) fn skip(
        &mut self,
        meter: &Meter,
        path: &Path,
        reason: &str,
    ) -> Result<(), ClientError> {
        self.skipped += 1;
        if self.ui.status {
            meter.println(&format!("warning: skipping {}: {reason}", path.display()));
        }
        if self.ui.json {
            let record = TransferRecord {
                op: self.op,
                name: None,
                path: Some(path.display().to_string()),
                kind: "file",
                size: None,
                blake3: None,
                outcome: Outcome::Skipped,
                bytes: 0,
                error: Some(reason.to_owned()),
            };
            return meter.print_with(|| json_line(self.out, &record));
        }
        Ok(())
    }

    /// Reports a directory made on the server (only with `--json`).
    pub(super) fn made_dir(&mut self, meter: &Meter, remote: &str) -> Result<(), ClientError> {
        if !self.ui.json {
            return Ok(());
        }
        let record = TransferRecord {
            op: self.op,
            name: Some(remote),
            path: None,
            kind: "dir",
            size: None,
            blake3: None,
            outcome: Outcome::Created,
            bytes: 0,
            error: None,
        };
        meter.print_with(|| json_line(self.out, &record))
    }

    /// Prints the summary line on stderr, unless quiet, and ends the set:
    /// [`ClientError::SomeFailed`] if any transfer failed.
    pub(super) fn end(&self) -> Result<(), ClientError> {
        if self.ui.status {
            eprintln!("{}", self.summary());
        }
        match self.failed {
            0 => Ok(()),
            failed => Err(ClientError::SomeFailed {
                what: "transfers",
                failed,
                total: self.files + failed,
            }),
        }
    }

    /// The summary line: files, bytes, time, rate.
    fn summary(&self) -> String {
        let elapsed = self.started.elapsed();
        let secs = elapsed.as_secs_f64();
        let verb = if self.op == "put" { "sent" } else { "received" };
        let mut line = format!("{}: {} files", self.op, self.files);
        if self.unchanged > 0 {
            line.push_str(&format!(", {} unchanged", self.unchanged));
        }
        if self.failed > 0 {
            line.push_str(&format!(", {} failed", self.failed));
        }
        if self.skipped > 0 {
            line.push_str(&format!(", {} skipped", self.skipped));
        }
        line.push_str(&format!(
            ", {} bytes {verb} in {secs:.1} s ({})",
            self.bytes,
            rate(self.bytes, elapsed)
        ));
        line
    }
}

/// A transfer rate in binary units.
fn rate(bytes: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-3);
    let per_sec = bytes as f64 / secs;
    let units = ["B/s", "KiB/s", "MiB/s", "GiB/s"];
    let mut value = per_sec;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", units[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_in_binary_units() {
        assert_eq!(rate(0, Duration::from_secs(1)), "0.0 B/s");
        assert_eq!(rate(3 << 20, Duration::from_secs(2)), "1.5 MiB/s");
        assert_eq!(rate(5 << 30, Duration::from_secs(1)), "5.0 GiB/s");
    }
}
