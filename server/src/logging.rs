//! Throttled log lines, for what a peer can cause at will.
//!
//! Each kind of line a peer can make the server write without limit (a
//! malformed connection, a failed authentication, a request that fails) is
//! a [`Limited`]: at most [`BURST`] lines of a kind are written in each
//! window of [`WINDOW`]; the others are counted, and once the window is
//! over one summary line says how many of that kind were left out. 20 s of
//! malformed connections used to write 169,000 lines (31 MB). The line of
//! each request that succeeds or is refused is not throttled: one line a
//! request is the server's record of its normal traffic.

use std::sync::Mutex;
use std::time::{Duration, Instant};
use tracing::warn;

/// How long a window lasts.
pub(crate) const WINDOW: Duration = Duration::from_secs(5);

/// At most this many lines of one kind are written in a window.
pub(crate) const BURST: u32 = 20;

/// One kind of log line, throttled.
#[derive(Debug)]
pub(crate) struct Limited {
    /// What the lines say, for the summary.
    what: &'static str,
    window: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    start: Option<Instant>,
    written: u32,
    left_out: u64,
}

impl Limited {
    pub(crate) const fn new(what: &'static str) -> Limited {
        Limited {
            what,
            window: Mutex::new(Window {
                start: None,
                written: 0,
                left_out: 0,
            }),
        }
    }

    /// Writes a line with `log`, unless this kind has had its share of
    /// the window; then it is only counted.
    pub(crate) fn log(&self, log: impl FnOnce()) {
        let now = Instant::now();
        let (ended, write) = {
            let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
            let ended = window.end_if_over(now);
            if window.start.is_none() {
                window.start = Some(now);
            }
            let write = window.written < BURST;
            if write {
                window.written += 1;
            } else {
                window.left_out += 1;
            }
            (ended, write)
        };
        self.summarize(ended);
        if write {
            log();
        }
    }

    /// Writes the summary of a window that is over, if lines were left
    /// out in it.
    pub(crate) fn flush(&self) {
        let ended = {
            let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
            window.end_if_over(Instant::now())
        };
        self.summarize(ended);
    }

    fn summarize(&self, left_out: u64) {
        if left_out > 0 {
            warn!(
                what = self.what,
                left_out,
                seconds = WINDOW.as_secs(),
                "log lines left out"
            );
        }
    }
}

impl Window {
    /// Ends the current window if it is over (the next line starts a new
    /// one); returns how many lines it left out.
    fn end_if_over(&mut self, now: Instant) -> u64 {
        match self.start {
            Some(start) if now.duration_since(start) >= WINDOW => {
                self.start = None;
                self.written = 0;
                std::mem::take(&mut self.left_out)
            }
            _ => 0,
        }
    }
}

/// Every throttled kind, flushed together by [`flush_all`].
pub(crate) static ACCEPT_FAILED: Limited = Limited::new("accept failed");
pub(crate) static REFUSED: Limited = Limited::new("connection refused: the server is full");
pub(crate) static PUSHED_OUT: Limited = Limited::new("pending connection pushed out");
pub(crate) static DROPPED: Limited = Limited::new("connection dropped");
pub(crate) static PROTOCOL_ERROR: Limited = Limited::new("connection closed on protocol error");
pub(crate) static TLS_FAILED: Limited = Limited::new("TLS handshake failed");
pub(crate) static NOT_A_CLIENT: Limited = Limited::new("refused a peer that is not a client");
pub(crate) static AUTH_FAILED: Limited = Limited::new("authentication failed");
pub(crate) static REQUEST_FAILED: Limited = Limited::new("request failed");
pub(crate) static STORAGE_FAILURE: Limited = Limited::new("storage failure");

static ALL: [&Limited; 10] = [
    &ACCEPT_FAILED,
    &REFUSED,
    &PUSHED_OUT,
    &DROPPED,
    &PROTOCOL_ERROR,
    &TLS_FAILED,
    &NOT_A_CLIENT,
    &AUTH_FAILED,
    &REQUEST_FAILED,
    &STORAGE_FAILURE,
];

/// Writes the summaries of every kind whose window is over.
pub(crate) fn flush_all() {
    for limited in ALL {
        limited.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_writes_its_burst_and_counts_the_rest() {
        let limited = Limited::new("test");
        let mut written = 0;
        for _ in 0..100 {
            limited.log(|| written += 1);
        }
        assert_eq!(written, BURST);
        let mut window = limited.window.lock().unwrap();
        assert_eq!(window.left_out, 100 - u64::from(BURST));
        // The window is not over yet.
        let now = Instant::now();
        assert_eq!(window.end_if_over(now), 0);
        let later = now + WINDOW;
        assert_eq!(window.end_if_over(later), 100 - u64::from(BURST));
        assert_eq!((window.written, window.left_out), (0, 0));
        // A window in which nothing was written ends with nothing to say.
        assert_eq!(window.end_if_over(later + WINDOW), 0);
        assert_eq!(window.start, None);
    }
}
