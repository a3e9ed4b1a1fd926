//! Putting local files: one file ([`put_file`]), or many small ones
//! pipelined ([`put_small_files`]).

use super::Options;
use super::hashes::Stamp;
use super::pipeline::Pipeline;
use super::source::{FileSent, Source};
use crate::error::ClientError;
use crate::escape::Escaped;
use crate::progress::Meter;
use crate::session::{EagerSent, PutDone, Session, Upload};
use framekit_transfer::{ErrorCode, Hash, MAX_EAGER_BODY};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::path::Path;

/// Files up to this size go in one piece, as eager uploads, and are never
/// resumed.
pub const SMALL_FILE: u64 = MAX_EAGER_BODY;

/// At most this many eager uploads are sent ahead of their answers: two
/// of the server's batches, so that one arrives while the other is
/// stored.
const EAGER_WINDOW: usize = 128;

/// At most this many body bytes of eager uploads are sent ahead of their
/// answers.
const EAGER_WINDOW_BYTES: u64 = 2 * 1024 * 1024;

/// A finished upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uploaded {
    /// What the server stored.
    pub done: PutDone,
    /// Bytes actually sent: the server had the others already.
    pub sent: u64,
    /// The local file's stamp, if it did not change while it was sent:
    /// its hash may be recorded under it.
    pub stamp: Option<Stamp>,
}

/// Uploads `source` as `name`, resuming an interrupted upload of the same
/// file if `options.resume` and the server kept one, and showing progress
/// on `meter`. `note` receives status messages (a resume, a restart).
///
/// If the file turns out shorter or longer than its size when opened, the
/// upload fails with [`ClientError::FileChanged`] before the trailer is
/// sent, so the server publishes nothing; the session is then unusable.
/// If a resumed upload does not verify as a whole (the server's part came
/// from other content), it is sent again whole, once.
pub fn put_file<S: Read + Write>(
    session: &mut Session<S>,
    source: &Source,
    name: &str,
    options: Options,
    meter: &Meter,
    note: &mut dyn FnMut(&str),
) -> Result<Uploaded, ClientError> {
    let mut attempt = Attempt::default();
    put_file_attempt(session, source, name, options, meter, note, &mut attempt).map_err(|failure| {
        match failure {
            PutFailure::Error(e) => e,
            PutFailure::NotKept => ClientError::Unusable,
        }
    })
}

/// What a put of a resumable upload (see [`put_file_attempt`]) expects of
/// the server, and what it did.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Attempt {
    /// The server should hold part of the file: an earlier attempt's
    /// connection broke after some of its body was sent.
    pub(crate) expect_kept: bool,
    /// Body bytes this attempt sent after the server's go-ahead, with a
    /// resume key: what the server may keep if the connection breaks.
    pub(crate) body_sent: u64,
}

/// Why [`put_file_attempt`] did not store the file.
#[derive(Debug)]
pub(crate) enum PutFailure {
    /// It failed.
    Error(ClientError),
    /// The server answered at offset 0 where the attempt expected it to
    /// hold part of the file: the upload was abandoned, and the session
    /// is unusable.
    NotKept,
}

impl From<ClientError> for PutFailure {
    fn from(error: ClientError) -> Self {
        PutFailure::Error(error)
    }
}

/// [`put_file`], for a caller that continues on a new connection when
/// this one breaks: `attempt` says whether the server should hold part of
/// the file, and records how much of the body went out.
pub(crate) fn put_file_attempt<S: Read + Write>(
    session: &mut Session<S>,
    source: &Source,
    name: &str,
    options: Options,
    meter: &Meter,
    note: &mut dyn FnMut(&str),
    attempt: &mut Attempt,
) -> Result<Uploaded, PutFailure> {
    attempt.body_sent = 0;
    let size = source.size();
    if size <= SMALL_FILE {
        let body = source.read_small()?;
        meter.start(None, size, 0);
        let stamp = source.unchanged_stamp();
        let done = session.put_eager(name, &body, options.force)?;
        meter.inc(size);
        return Ok(Uploaded {
            done,
            sent: size,
            stamp,
        });
    }
    let key = match options.resume {
        true => Some(source.resume_key(name)?),
        false => None,
    };
    let mut retried = false;
    loop {
        let mut upload = session.start_put_with_key(name, size, options.force, key)?;
        let offset = upload.offset();
        if offset == 0 && attempt.expect_kept && key.is_some() {
            // Dropped before its body: the connection is given up.
            return Err(PutFailure::NotKept);
        }
        if offset > 0 {
            note(&format!(
                "resuming the upload of {} at byte {offset} of {size}",
                Escaped(name)
            ));
        }
        meter.start(None, size, offset);
        let resumable = key.is_some();
        let hash = send_file(&mut upload, source, &mut |n| {
            meter.inc(n);
            if resumable {
                attempt.body_sent += n;
            }
        })?;
        match upload.finish_with_hash(hash) {
            Err(ClientError::Refused { reply, .. })
                if reply.code == ErrorCode::IntegrityMismatch && offset > 0 && !retried =>
            {
                // The server dropped its part: the next attempt starts at 0.
                note(&format!(
                    "the server's partial upload of {} did not verify with this file: sending it whole",
                    Escaped(name)
                ));
                retried = true;
            }
            Ok(done) => {
                return Ok(Uploaded {
                    done,
                    sent: size - offset,
                    stamp: source.unchanged_stamp(),
                });
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Sends the rest of `upload`'s body (from [`Upload::offset`] on) from
/// `source`, and returns the hash of the whole file: another thread reads
/// and hashes each buffer (see [`Source::read_and_hash`]) while this one
/// sends the one before.
///
/// Fails with [`ClientError::FileChanged`] if the file is shorter or longer
/// than the announced size; nothing more is sent then, and no trailer: the
/// server publishes nothing.
fn send_file<S: Read + Write>(
    upload: &mut Upload<'_, S>,
    source: &Source,
    progress: &mut dyn FnMut(u64),
) -> Result<Hash, ClientError> {
    let (start, end) = (upload.offset(), upload.size());
    let Pipeline {
        to_full: to_sender,
        full: sender_rx,
        to_empty: to_reader,
        empty: reader_rx,
    } = Pipeline::new(end);
    let mut hasher = blake3::Hasher::new();
    let hashing = &mut hasher;
    let (sent, read) = std::thread::scope(|scope| {
        let reader =
            scope.spawn(move || source.read_and_hash(hashing, start, end, &reader_rx, &to_sender));
        let mut sent = Ok(());
        for (buf, n) in sender_rx {
            if let Err(e) = upload.send_unhashed(buf.get(..n).unwrap_or_default()) {
                sent = Err(e);
                break;
            }
            progress(n as u64);
            // The reader may be done; the buffer is then dropped.
            let _ = to_reader.send(buf);
        }
        drop(to_reader);
        let read = reader
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the reading thread failed")));
        (sent, read)
    });
    sent?;
    match read {
        Ok(FileSent::All) => Ok(hasher.finalize().into()),
        Ok(FileSent::EndedAt(at)) => Err(source.changed(Some(at))),
        Ok(FileSent::Longer) => Err(source.changed(None)),
        Err(e) => Err(source.read_error(e)),
    }
}

/// One file of [`put_small_files`].
#[derive(Debug, Clone, Copy)]
pub struct SmallFile<'a> {
    /// Where it is.
    pub path: &'a Path,
    /// Its remote name.
    pub remote: &'a str,
}

/// Uploads files expected to be small over one session, each as an eager
/// upload, sending the next while the server stores the ones before (up to
/// 64 files or 1 MiB ahead): many small files go at the speed of the
/// server's disk rather than of round trips. A file that turns out to be
/// over [`SMALL_FILE`] goes through [`put_file`] once the ones before it
/// are answered.
///
/// `done(i, result)` is called for the files in order. It stops after the
/// first failure that leaves the session unusable, which it reports, and
/// returns how many files it reported: the others were not sent, or not
/// carried out, and can be tried again on a new session. That is all of
/// them when it returns `files.len()`, and at least one if there was any.
pub fn put_small_files<S: Read + Write>(
    session: &mut Session<S>,
    files: &[SmallFile<'_>],
    options: Options,
    meter: &Meter,
    done: &mut dyn FnMut(usize, Result<Uploaded, ClientError>),
) -> usize {
    let mut ahead = Ahead {
        sent: VecDeque::new(),
        bytes: 0,
        reported: 0,
    };
    for (i, file) in files.iter().enumerate() {
        let source = match Source::open(file.path) {
            Ok(source) => source,
            Err(e) => {
                // Reported in order, after the files before it.
                if !ahead.answer_all(session, done) {
                    return ahead.reported;
                }
                done(i, Err(e));
                ahead.reported += 1;
                continue;
            }
        };
        if source.size() > SMALL_FILE {
            if !ahead.answer_all(session, done) {
                return ahead.reported;
            }
            let result = put_file(session, &source, file.remote, options, meter, &mut |_| {});
            done(i, result);
            ahead.reported += 1;
            if session.is_broken() {
                return ahead.reported;
            }
            continue;
        }
        while ahead.sent.len() >= EAGER_WINDOW
            || (!ahead.sent.is_empty() && ahead.bytes + source.size() > EAGER_WINDOW_BYTES)
        {
            if !ahead.answer_oldest(session, done) {
                return ahead.reported;
            }
        }
        let sent = source.read_small().and_then(|body| {
            let stamp = source.unchanged_stamp();
            session
                .send_eager(file.remote, &body, options.force)
                .map(|sent| (sent, stamp))
        });
        match sent {
            Ok((sent, stamp)) => {
                ahead.bytes += sent.size();
                ahead.sent.push_back((i, sent, stamp));
            }
            // A local failure, or a name refused before sending: this
            // file's own failure, reported after the ones before it.
            Err(e) if !session.is_broken() => {
                if !ahead.answer_all(session, done) {
                    return ahead.reported;
                }
                done(i, Err(e));
                ahead.reported += 1;
            }
            // The connection failed: it is the failure of the oldest file
            // not answered yet, and the rest can go on a new session.
            Err(e) => {
                let oldest = ahead.sent.front().map_or(i, |&(j, _, _)| j);
                done(oldest, Err(e));
                return ahead.reported + 1;
            }
        }
    }
    ahead.answer_all(session, done);
    ahead.reported
}

/// The eager uploads of [`put_small_files`] sent and not answered yet.
struct Ahead {
    /// Each one's index in the files, what was sent, and the file's stamp
    /// if it did not change while it was read.
    sent: VecDeque<(usize, EagerSent, Option<Stamp>)>,
    /// Their body bytes.
    bytes: u64,
    /// How many files were reported so far: files are reported in order,
    /// so this is also the index of the next one to report.
    reported: usize,
}

impl Ahead {
    /// Reads the oldest answer and reports it. False if the session broke.
    fn answer_oldest<S: Read + Write>(
        &mut self,
        session: &mut Session<S>,
        done: &mut dyn FnMut(usize, Result<Uploaded, ClientError>),
    ) -> bool {
        let Some((i, sent, stamp)) = self.sent.pop_front() else {
            return true;
        };
        self.bytes -= sent.size();
        let result = session.eager_answer(sent).map(|done| Uploaded {
            done,
            sent: sent.size(),
            stamp,
        });
        done(i, result);
        self.reported += 1;
        !session.is_broken()
    }

    /// Reads and reports every answer due. False if the session broke.
    fn answer_all<S: Read + Write>(
        &mut self,
        session: &mut Session<S>,
        done: &mut dyn FnMut(usize, Result<Uploaded, ClientError>),
    ) -> bool {
        while !self.sent.is_empty() {
            if !self.answer_oldest(session, done) {
                return false;
            }
        }
        true
    }
}
