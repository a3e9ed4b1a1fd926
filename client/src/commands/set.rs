//! What the transfers of several files share: one connection, made again
//! when a failure leaves it unusable ([`Link`]), and their counts and
//! summary line ([`Tally`]).

use crate::connect::{ConnectOptions, Stream, connect};
use crate::error::{ClientError, hex};
use crate::escape::Escaped;
use crate::files::Uploaded;
use crate::progress::Meter;
use crate::session::Session;
use std::io::Write;
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

    /// The session, connected if it was not or is no longer usable.
    pub(super) fn session(&mut self) -> Result<&mut Session<Stream>, ClientError> {
        let session = match self.session.take() {
            Some(session) if session.is_usable() => session,
            _ => connect(self.addr, self.options)?,
        };
        Ok(self.session.insert(session))
    }
}

/// How a set of transfers went.
pub(super) struct Tally {
    /// "put" or "get".
    op: &'static str,
    started: Instant,
    pub(super) files: usize,
    pub(super) failed: usize,
    pub(super) skipped: usize,
    pub(super) bytes: u64,
}

impl Tally {
    pub(super) fn new(op: &'static str) -> Self {
        Tally {
            op,
            started: Instant::now(),
            files: 0,
            failed: 0,
            skipped: 0,
            bytes: 0,
        }
    }

    /// Counts one upload and prints its line, or reports its failure.
    /// Fails only if the output cannot be written.
    pub(super) fn report(
        &mut self,
        meter: &Meter,
        out: &mut dyn Write,
        remote: &str,
        result: Result<Uploaded, ClientError>,
    ) -> Result<(), ClientError> {
        match result {
            Ok(uploaded) => {
                self.files += 1;
                self.bytes += uploaded.sent;
                let done = uploaded.done;
                writeln!(
                    out,
                    "put {}: {} bytes, blake3 {}",
                    Escaped(remote),
                    done.size,
                    hex(&done.hash)
                )
                .map_err(ClientError::Output)
            }
            Err(e) => {
                self.fail(meter, &Escaped(remote).to_string(), &e);
                Ok(())
            }
        }
    }

    /// Reports one failure on its own line.
    pub(super) fn fail(&mut self, meter: &Meter, what: &str, error: &ClientError) {
        self.failed += 1;
        meter.println(&format!("error: {what}: {}", error.report()));
    }

    /// Prints the summary line on stderr when `status`, and ends the set:
    /// [`ClientError::SomeFailed`] if any transfer failed.
    pub(super) fn end(&self, status: bool) -> Result<(), ClientError> {
        if status {
            eprintln!("{}", self.summary());
        }
        match self.failed {
            0 => Ok(()),
            failed => Err(ClientError::SomeFailed {
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
