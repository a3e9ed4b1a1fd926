//! Progress bars on stderr.
//!
//! A transfer reports its progress to a [`Meter`]: one bar for one file,
//! or, for a set of files, a bar for the current file under a bar for the
//! whole set ([`Meter::for_set`]). Bars are drawn only when enabled and
//! stderr is a terminal; otherwise a meter is hidden and costs nothing.
//!
//! Whatever is printed while bars are drawn goes through the meter
//! ([`Meter::println`] for stderr, [`Meter::print_to`] for results on
//! stdout, which is often the same terminal): the bars are cleared, the
//! line written, and the bars drawn again below it, so that no line is
//! overwritten and no stale bar is left.
//!
//! Rates and times to go count only the bytes that travel: the part of a
//! file the other side already has (a resumed transfer) moves the bar but
//! not the estimate, and a set's bar leaves out what is not transferred.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{self, IsTerminal, Write};

const TEMPLATE: &str = "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}";

/// A transfer whose size is not known (a stream from standard input).
const STREAM_TEMPLATE: &str = "{msg} {bytes} {binary_bytes_per_sec} {elapsed}";

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

fn drawn(enabled: bool) -> bool {
    enabled && std::io::stderr().is_terminal()
}

/// A progress bar for a transfer, labelled `label`: drawn on stderr when
/// `enabled` and stderr is a terminal, hidden otherwise. Its length is set
/// once the transfer's size is known.
fn transfer_bar(enabled: bool, label: String) -> ProgressBar {
    if !drawn(enabled) {
        return ProgressBar::hidden();
    }
    ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
        .with_style(style(TEMPLATE))
        .with_message(label)
}

/// Where a transfer reports its progress.
#[derive(Debug, Clone)]
pub struct Meter {
    multi: Option<MultiProgress>,
    file: ProgressBar,
    total: Option<ProgressBar>,
}

impl Meter {
    /// A meter that shows nothing.
    pub fn hidden() -> Meter {
        Meter {
            multi: None,
            file: ProgressBar::hidden(),
            total: None,
        }
    }

    /// One bar, for one file labelled `label`.
    pub fn single(enabled: bool, label: String) -> Meter {
        Meter {
            multi: None,
            file: transfer_bar(enabled, label),
            total: None,
        }
    }

    /// One bar without a length, for a transfer of unknown size labelled
    /// `label`.
    pub fn stream(enabled: bool, label: String) -> Meter {
        if !drawn(enabled) {
            return Meter::hidden();
        }
        let file = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
            .with_style(style(STREAM_TEMPLATE))
            .with_message(label);
        Meter {
            multi: None,
            file,
            total: None,
        }
    }

    /// Two bars for a set of files of `total` bytes in all, labelled
    /// `label`: the whole set, and under it the file in progress.
    pub fn for_set(enabled: bool, label: String, total: u64) -> Meter {
        if !drawn(enabled) {
            return Meter::hidden();
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let whole = multi.add(
            ProgressBar::new(total)
                .with_style(style(TEMPLATE))
                .with_message(label),
        );
        let file = multi.add(ProgressBar::new(0).with_style(style(TEMPLATE)));
        Meter {
            multi: Some(multi),
            file,
            total: Some(whole),
        }
    }

    /// A file starts: `size` bytes, of which the first `skipped` are not
    /// transferred (the other side has them already).
    pub fn start(&self, label: Option<String>, size: u64, skipped: u64) {
        if let Some(label) = label {
            self.file.set_message(label);
        }
        self.file.set_length(size);
        self.file.set_position(skipped);
        // The estimate must start from here: a tick makes it see the
        // skipped bytes (it only looks at the position when it ticks),
        // and the reset then forgets the time before now.
        self.file.tick();
        self.file.reset_eta();
        self.leave_out(skipped);
    }

    /// The whole set's bar leaves out `bytes` that will not travel (the
    /// part of a file the other side already has, a file that is not
    /// transferred), so that its rate and time to go stay those of what
    /// does.
    fn leave_out(&self, bytes: u64) {
        if let Some(total) = &self.total {
            let length = total.length().unwrap_or(0);
            total.set_length(length.saturating_sub(bytes));
        }
    }

    /// `n` more bytes went through.
    pub fn inc(&self, n: u64) {
        self.file.inc(n);
        if let Some(total) = &self.total {
            total.inc(n);
        }
    }

    /// A file ends, done or not: what of it did not travel is left out
    /// of the whole set's bar, so that it ends full.
    pub fn end_file(&self) {
        let rest = self
            .file
            .length()
            .unwrap_or(0)
            .saturating_sub(self.file.position());
        self.leave_out(rest);
    }

    /// Counts a file that is not transferred (unchanged, skipped, or
    /// failed before it started).
    pub fn skip(&self, size: u64) {
        self.leave_out(size);
    }

    /// Runs `print` with the bars cleared, then draws them again.
    fn suspended<T>(&self, print: impl FnOnce() -> T) -> T {
        match &self.multi {
            Some(multi) => multi.suspend(print),
            None => self.file.suspend(print),
        }
    }

    /// Prints a line on stderr without breaking the bars.
    pub fn println(&self, line: &str) {
        self.suspended(|| eprintln!("{line}"));
    }

    /// Runs `print`, which writes elsewhere than stderr (typically
    /// stdout), with the bars cleared.
    pub fn print_with<T>(&self, print: impl FnOnce() -> T) -> T {
        self.suspended(print)
    }

    /// Writes a line (a result) to `out`, typically stdout, without
    /// breaking the bars on stderr.
    pub fn print_to(&self, out: &mut dyn Write, line: &str) -> io::Result<()> {
        self.suspended(|| {
            writeln!(out, "{line}")?;
            out.flush()
        })
    }

    /// Removes the bars.
    pub fn finish(&self) {
        self.file.finish_and_clear();
        if let Some(total) = &self.total {
            total.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_is_valid() {
        assert!(ProgressStyle::with_template(TEMPLATE).is_ok());
    }

    #[test]
    fn a_disabled_bar_is_hidden() {
        assert!(transfer_bar(false, "x".into()).is_hidden());
        assert!(Meter::for_set(false, "x".into(), 10).file.is_hidden());
    }

    #[test]
    fn a_set_meter_counts_only_what_travels() {
        // Hidden bars still count.
        let meter = Meter {
            multi: None,
            file: ProgressBar::hidden(),
            total: Some(ProgressBar::new(200)),
        };
        // 40 bytes resumed, 50 sent, the last 10 never sent.
        meter.start(None, 100, 40);
        meter.inc(50);
        meter.end_file();
        // An unchanged file of 7 bytes.
        meter.skip(7);
        let total = meter.total.as_ref().unwrap();
        assert_eq!(total.position(), 50);
        assert_eq!(total.length(), Some(200 - 40 - 10 - 7));
        assert_eq!(meter.file.position(), 90);
    }

    #[test]
    fn the_time_to_go_after_a_resume_counts_only_the_bytes_sent_since() {
        // A billion bytes are left after the resume, one is sent: at the
        // rate of the bytes that travelled, that is far from done. Counted
        // with the resumed bytes as if they had just been sent, it would
        // be nearly done.
        let size = 1u64 << 50;
        let skipped = size - 1_000_000_000;
        let meter = Meter {
            multi: None,
            file: ProgressBar::hidden(),
            total: None,
        };
        // A file before it, as in a set: the bar has just been drawn often.
        meter.start(None, 100, 0);
        for _ in 0..100 {
            meter.inc(1);
        }
        meter.start(None, size, skipped);
        std::thread::sleep(std::time::Duration::from_millis(2));
        meter.inc(1);
        meter.file.tick();
        assert_eq!(meter.file.position(), skipped + 1);
        let eta = meter.file.eta();
        assert!(eta > std::time::Duration::from_secs(3600), "{eta:?}");
    }
}
