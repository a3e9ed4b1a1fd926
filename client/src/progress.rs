//! Progress bars on stderr.
//!
//! A transfer reports its progress to a [`Meter`]: one bar for one file,
//! or, for a set of files, a bar for the current file under a bar for the
//! whole set ([`Meter::for_set`]). Bars are drawn only when enabled and
//! stderr is a terminal; otherwise a meter is hidden and costs nothing.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

const TEMPLATE: &str = "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}";

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
        self.file.reset_eta();
        if let Some(total) = &self.total {
            total.inc(skipped);
        }
    }

    /// `n` more bytes went through.
    pub fn inc(&self, n: u64) {
        self.file.inc(n);
        if let Some(total) = &self.total {
            total.inc(n);
        }
    }

    /// A file ends, done or not: the whole set's bar counts all of it, so
    /// that it ends full.
    pub fn end_file(&self) {
        if let Some(total) = &self.total {
            let rest = self
                .file
                .length()
                .unwrap_or(0)
                .saturating_sub(self.file.position());
            total.inc(rest);
        }
    }

    /// Counts a file that was skipped or failed before it started.
    pub fn skip(&self, size: u64) {
        if let Some(total) = &self.total {
            total.inc(size);
        }
    }

    /// Prints a line on stderr without breaking the bars.
    pub fn println(&self, line: &str) {
        match &self.multi {
            Some(multi) if !self.file.is_hidden() => {
                let _ = multi.println(line);
            }
            _ if !self.file.is_hidden() => self.file.suspend(|| eprintln!("{line}")),
            _ => eprintln!("{line}"),
        }
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
    fn a_set_meter_counts_skipped_and_transferred_bytes() {
        // Hidden bars still count.
        let meter = Meter {
            multi: None,
            file: ProgressBar::hidden(),
            total: Some(ProgressBar::hidden()),
        };
        meter.start(None, 100, 40);
        meter.inc(50);
        meter.end_file();
        meter.skip(7);
        let total = meter.total.as_ref().unwrap();
        assert_eq!(total.position(), 107);
        assert_eq!(meter.file.position(), 90);
    }
}
