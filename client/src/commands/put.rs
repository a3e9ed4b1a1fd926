//! `client put FILE... [--name NAME]`: one file, a set of files and
//! directories over one connection, or standard input (`put - --name
//! NAME`).
//!
//! Files the server already holds, identical (same size and BLAKE3 hash),
//! are not sent again: a rerun of a put sends only what is missing or
//! different, and a file that differs still needs `--force`. The server's
//! sizes come from one listing of each directory put, its hashes from
//! descriptions asked for many at a time, and the local hashes from the
//! records of earlier runs when the files have not changed since.

use super::output::Ui;
use super::set::{Done, Link, Tally};
use crate::cli::PutArgs;
use crate::connect::{ConnectOptions, connect};
use crate::error::{ClientError, Exit};
use crate::escape::Escaped;
use crate::files::hashes::LocalHashes;
use crate::files::plan::{Left, Plan, PutItem, plan_put};
use crate::files::{self, Options, SMALL_FILE, SmallFile, Source};
use crate::progress::Meter;
use crate::session::{Remote, Session, TreeEntry};
use framekit_transfer::{Entry, ErrorCode, Hash};
use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The most bytes of names a listing of what the server holds may take.
const MAX_LISTING_BYTES: usize = 256 << 20;

/// How much of standard input is read at a time.
const STDIN_BUFFER: usize = 256 * 1024;

pub(super) fn run(
    server: &str,
    options: &ConnectOptions,
    args: &PutArgs,
    ui: Ui,
    out: &mut dyn Write,
) -> Result<(), ClientError> {
    let transfer = Options {
        force: args.force,
        resume: !args.no_resume,
    };
    let stdin = Path::new("-");
    if args.files.iter().any(|f| f == stdin) {
        if args.files.len() > 1 {
            return Err(ClientError::Usage(
                "`-` (standard input) cannot be put with other files",
            ));
        }
        return put_stdin(server, options, args, ui, out);
    }
    let mut hashes = LocalHashes::in_user_cache();
    let result = put(server, options, args, transfer, ui, out, &mut hashes);
    let _ = hashes.save();
    result
}

fn put(
    server: &str,
    options: &ConnectOptions,
    args: &PutArgs,
    transfer: Options,
    ui: Ui,
    out: &mut dyn Write,
    hashes: &mut LocalHashes,
) -> Result<(), ClientError> {
    let mut link = Link::new(server, options);
    // One file (or a link to one) is a single transfer, with its own exit
    // codes; anything else is a set.
    if let [file] = args.files.as_slice()
        && !file.is_dir()
    {
        let source = Source::open(file)?;
        let name = files::remote_name(file, args.name.as_deref())?;
        let mut tally = Tally::new("put", out, ui, true);
        put_one(&mut link, &source, &name, transfer, &mut tally, hashes)?;
        return tally.end();
    }
    let plan = plan_put(&args.files, args.name.as_deref(), args.follow_links);
    let meter = Meter::for_set(ui.status, "put".to_owned(), plan.bytes());
    let mut tally = Tally::new("put", out, ui, true);
    let result = PutSet {
        transfer,
        meter: &meter,
        tally: &mut tally,
        hashes,
        total: plan.files(),
    }
    .run(&plan, &mut link);
    meter.finish();
    result?;
    tally.end()
}

/// Puts one file as `name`, unless the server holds it already.
fn put_one(
    link: &mut Link<'_>,
    source: &Source,
    name: &str,
    transfer: Options,
    tally: &mut Tally<'_>,
    hashes: &mut LocalHashes,
) -> Result<(), ClientError> {
    let file = Local {
        path: source.path(),
        remote: name,
        size: source.size(),
    };
    let verdict = compare(link, &[file], None, transfer.force, hashes)?;
    let meter = Meter::single(tally_status(tally), Escaped(name).to_string());
    match verdict.first() {
        Some(Verdict::Unchanged(hash)) => {
            let done = Done {
                name,
                path: source.path(),
                size: source.size(),
                hash: *hash,
                bytes: 0,
                unchanged: true,
            };
            return tally.done(&meter, &done);
        }
        Some(Verdict::Differs) => {
            return Err(ClientError::RemoteDiffers {
                name: name.to_owned(),
            });
        }
        _ => {}
    }
    let status = tally_status(tally);
    let mut note = |line: &str| {
        if status {
            meter.println(line);
        }
    };
    let result = put_resuming(link, source, name, transfer, &meter, &mut note);
    meter.finish();
    let uploaded = result?;
    if let Some(stamp) = uploaded.stamp {
        hashes.record(stamp, uploaded.done.hash);
    }
    let done = Done {
        name,
        path: source.path(),
        size: uploaded.done.size,
        hash: uploaded.done.hash,
        bytes: uploaded.sent,
        unchanged: false,
    };
    tally.done(&meter, &done)
}

/// At most this many times a put continues on a new connection after the
/// connection broke in the middle of its body.
const MAX_RECONNECTS: usize = 5;

/// How long after the server's idle timeout a put still waits for the
/// server to keep what it received, when its connection broke without the
/// server noticing.
const KEPT_MARGIN: Duration = Duration::from_secs(2);

/// The longest a put waits for the server to keep what it received,
/// whatever idle timeout the server announces.
const MAX_KEPT_WAIT: Duration = Duration::from_secs(60);

/// Puts `source` as `name` over `link`; if the connection breaks in the
/// middle of the body of a resumable upload (and retrying is allowed),
/// continues on a new connection where the server kept it.
///
/// The server keeps what it received as soon as it sees the break, which
/// for a connection that went silent (a network failure) is only after its
/// idle timeout. Until then a put with the same key starts at 0: this one
/// then drops that connection and tries again, after growing jittered
/// pauses, until the server's idle timeout (plus a margin) has passed since
/// the break, and then sends the file whole.
fn put_resuming(
    link: &mut Link<'_>,
    source: &Source,
    name: &str,
    transfer: Options,
    meter: &Meter,
    note: &mut dyn FnMut(&str),
) -> Result<files::Uploaded, ClientError> {
    let retry = link.retries();
    let mut attempt = files::Attempt::default();
    let mut broke: Option<(Instant, Duration, ClientError)> = None;
    let mut reconnects = 0;
    let mut pause = Duration::from_millis(250);
    let mut jitter = crate::connect::Jitter::new();
    loop {
        let session = match (link.session(), broke.take()) {
            (Ok(session), broke_before) => {
                broke = broke_before;
                session
            }
            // The server is gone: the break is what to report.
            (Err(_), Some((_, _, lost))) => return Err(lost),
            (Err(e), None) => return Err(e),
        };
        let idle = Duration::from_millis(session.welcome().idle_timeout_ms).min(MAX_KEPT_WAIT);
        match files::put_file_attempt(session, source, name, transfer, meter, note, &mut attempt) {
            Ok(uploaded) => return Ok(uploaded),
            Err(files::PutFailure::NotKept) => {
                let Some((at, idle, _)) = &broke else {
                    return Err(ClientError::Unusable);
                };
                if at.elapsed() >= *idle + KEPT_MARGIN {
                    note(&format!(
                        "the server did not keep the interrupted upload of {}: sending it whole",
                        Escaped(name)
                    ));
                    attempt.expect_kept = false;
                } else {
                    std::thread::sleep(jitter.between(pause / 2, pause));
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
            }
            Err(files::PutFailure::Error(e))
                if retry
                    && attempt.body_sent > 0
                    && reconnects < MAX_RECONNECTS
                    && link.is_broken()
                    && e.exit() == Exit::Connection =>
            {
                note(&format!(
                    "the connection broke while sending {} ({e}): continuing on a new connection",
                    Escaped(name),
                    e = e.report()
                ));
                reconnects += 1;
                broke = Some((Instant::now(), idle, e));
                attempt.expect_kept = true;
                pause = Duration::from_millis(250);
            }
            Err(files::PutFailure::Error(e)) => return Err(e),
        }
    }
}

/// Whether progress and notes are shown: not when quiet.
fn tally_status(tally: &Tally<'_>) -> bool {
    tally.ui().status
}

/// A local file to compare with the server's.
#[derive(Debug, Clone, Copy)]
struct Local<'a> {
    path: &'a Path,
    remote: &'a str,
    size: u64,
}

/// What to do with a file, once compared with the server's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Send it: the server has no such file, or it is to be replaced, or
    /// it cannot be told.
    Send,
    /// The server holds it, identical, with this hash.
    Unchanged(Hash),
    /// The server holds another content under its name, and `--force`
    /// was not given.
    Differs,
}

/// What the server holds where a put goes, from listings: file sizes, and
/// directories. `None` for a name nothing was listed about.
#[derive(Debug, Default)]
struct Survey {
    /// The directories listed, whole.
    listed: Vec<String>,
    files: HashMap<String, u64>,
    dirs: HashSet<String>,
}

impl Survey {
    /// What is known of `remote`: `Some(None)` if it is in a listed
    /// directory and absent, `Some(Some(size))` if it is a file there,
    /// `None` if it is in no listed directory.
    fn size_of(&self, remote: &str) -> Option<Option<u64>> {
        let known = self.listed.iter().any(|dir| {
            remote
                .strip_prefix(dir.as_str())
                .is_some_and(|r| r.starts_with('/'))
        });
        known.then(|| self.files.get(remote).copied())
    }
}

/// Lists what the server holds under each directory of the plan that is
/// not inside another: one request each. A directory the server does not
/// have is listed as empty; one it cannot list is left out (its files are
/// described one by one instead).
fn survey(plan: &Plan, link: &mut Link<'_>) -> Result<Survey, ClientError> {
    let dirs: HashSet<&str> = plan
        .items
        .iter()
        .filter_map(|item| match item {
            PutItem::Dir { remote } => Some(remote.as_str()),
            PutItem::File { .. } => None,
        })
        .collect();
    let mut survey = Survey::default();
    for dir in &dirs {
        let inside_another = dir
            .rsplit_once('/')
            .is_some_and(|(parent, _)| dirs.contains(parent));
        if inside_another {
            continue;
        }
        let mut listed_bytes = 0usize;
        let mut files = Vec::new();
        let mut subdirs = Vec::new();
        let listing = link.session()?.tree(dir, |entry| {
            listed_bytes += match &entry {
                TreeEntry::Dir(name) => name.len(),
                TreeEntry::File(file) => file.name.len(),
            };
            if listed_bytes > MAX_LISTING_BYTES {
                return Err(crate::error::ProtocolError::ListingTooLarge {
                    limit: MAX_LISTING_BYTES,
                }
                .into());
            }
            match entry {
                TreeEntry::Dir(name) => subdirs.push(name),
                TreeEntry::File(Entry { name, size, .. }) => files.push((name, size)),
            }
            Ok(())
        });
        match listing {
            Ok(_) => {
                survey.dirs.insert((*dir).to_owned());
            }
            Err(ClientError::Refused { reply, .. }) if reply.code == ErrorCode::NotFound => {}
            Err(e) if e.exit() == crate::Exit::Connection => return Err(e),
            // Not listed: compared file by file.
            Err(_) => continue,
        }
        survey.listed.push((*dir).to_owned());
        survey.files.extend(files);
        survey.dirs.extend(subdirs);
    }
    Ok(survey)
}

/// Compares `files` with what the server holds, by size first (from
/// `survey`, when it knows), then by hash: the server's from
/// descriptions, many asked for at a time, the local one recorded or
/// computed. With `force`, a file that differs is sent.
///
/// A server too old to describe files gets everything sent, as before
/// hashes could be compared: it refuses what exists without `--force`.
fn compare(
    link: &mut Link<'_>,
    files: &[Local<'_>],
    survey: Option<&Survey>,
    force: bool,
    hashes: &mut LocalHashes,
) -> Result<Vec<Verdict>, ClientError> {
    let differs = if force {
        Verdict::Send
    } else {
        Verdict::Differs
    };
    let mut verdicts = vec![Verdict::Send; files.len()];
    let mut asked = Vec::new();
    for (i, file) in files.iter().enumerate() {
        match survey.and_then(|s| s.size_of(file.remote)) {
            Some(None) => {}
            Some(Some(size)) if size != file.size => verdicts[i] = differs,
            _ => asked.push(i),
        }
    }
    if asked.is_empty() {
        return Ok(verdicts);
    }
    let names: Vec<String> = asked.iter().map(|&i| files[i].remote.to_owned()).collect();
    let mut remote: Vec<Option<(u64, Hash)>> = vec![None; asked.len()];
    let described = link.session()?.describe_each(&names, |j, result| {
        if let Ok(Remote::File(file)) = result {
            remote[j] = Some((file.size, file.hash));
        }
    });
    match described {
        Ok(()) => {}
        Err(ClientError::TooOld { .. }) => return Ok(verdicts),
        Err(e) => return Err(e),
    }
    for (j, &i) in asked.iter().enumerate() {
        let file = files[i];
        verdicts[i] = match remote[j] {
            None => Verdict::Send,
            Some((size, _)) if size != file.size => differs,
            Some((_, hash)) => match hashes.hash_of(file.path) {
                Ok(local) if local == hash => Verdict::Unchanged(hash),
                Ok(_) => differs,
                // Unreadable: the upload says why.
                Err(_) => Verdict::Send,
            },
        };
    }
    Ok(verdicts)
}

/// One step of a put of several files and directories.
#[derive(Debug, Clone, Copy)]
enum Step<'p> {
    /// A directory to make, or that the server has already.
    Dir { remote: &'p str, present: bool },
    /// A file, and what to do with it.
    File {
        path: &'p Path,
        remote: &'p str,
        size: u64,
        verdict: Verdict,
    },
}

/// A put of several files and directories in progress.
struct PutSet<'a, 'o> {
    transfer: Options,
    meter: &'a Meter,
    tally: &'a mut Tally<'o>,
    hashes: &'a mut LocalHashes,
    /// The number of files in the plan.
    total: usize,
}

impl PutSet<'_, '_> {
    /// Carries out `plan`: reports what will not be sent, compares the
    /// files with the server's, then makes each directory the server does
    /// not have and sends each file that is not there already, in order,
    /// runs of small files pipelined. A failure is reported and the rest
    /// goes on, on a new connection if needed; the set fails as a whole
    /// only if it cannot connect, or cannot write its output.
    fn run(&mut self, plan: &Plan, link: &mut Link<'_>) -> Result<(), ClientError> {
        for left in &plan.left {
            match left {
                Left::Skipped { path, reason } => self.tally.skip(self.meter, path, reason)?,
                Left::Failed { path, error } => {
                    let what = path.display().to_string();
                    self.tally.fail(self.meter, &what, Some(path), error)?;
                }
            }
        }
        let steps = self.steps(plan, link)?;
        let mut next = 0;
        while let Some(step) = steps.get(next) {
            next += match *step {
                Step::Dir { present: true, .. } => 1,
                Step::Dir { remote, .. } => {
                    match link.session()?.make_dir(remote) {
                        Ok(()) => self.tally.made_dir(self.meter, remote)?,
                        Err(e) => self
                            .tally
                            .fail(self.meter, &format!("{remote}/"), None, &e)?,
                    }
                    1
                }
                Step::File {
                    path,
                    remote,
                    size,
                    verdict: Verdict::Unchanged(hash),
                } => {
                    self.meter.skip(size);
                    let done = Done {
                        name: remote,
                        path,
                        size,
                        hash,
                        bytes: 0,
                        unchanged: true,
                    };
                    self.tally.done(self.meter, &done)?;
                    1
                }
                Step::File {
                    path,
                    remote,
                    size,
                    verdict: Verdict::Differs,
                } => {
                    self.meter.skip(size);
                    let error = ClientError::RemoteDiffers {
                        name: remote.to_owned(),
                    };
                    self.tally.fail(self.meter, remote, Some(path), &error)?;
                    1
                }
                Step::File { size, .. } if size <= SMALL_FILE => {
                    let session = link.session()?;
                    self.put_small_run(session, steps.get(next..).unwrap_or_default())?
                }
                Step::File {
                    path, remote, size, ..
                } => {
                    self.put_large(link, path, remote, size)?;
                    1
                }
            };
        }
        Ok(())
    }

    /// What to do with each item of `plan`: which directories the server
    /// has already, which files it holds identical.
    fn steps<'p>(
        &mut self,
        plan: &'p Plan,
        link: &mut Link<'_>,
    ) -> Result<Vec<Step<'p>>, ClientError> {
        let survey = survey(plan, link)?;
        let locals: Vec<Local<'_>> = plan
            .items
            .iter()
            .filter_map(|item| match item {
                PutItem::File { path, remote, size } => Some(Local {
                    path,
                    remote,
                    size: *size,
                }),
                PutItem::Dir { .. } => None,
            })
            .collect();
        let mut verdicts = compare(
            link,
            &locals,
            Some(&survey),
            self.transfer.force,
            self.hashes,
        )?
        .into_iter();
        let steps: Vec<Step<'p>> = plan
            .items
            .iter()
            .map(|item| match item {
                PutItem::Dir { remote } => Step::Dir {
                    remote,
                    present: survey.dirs.contains(remote),
                },
                PutItem::File { path, remote, size } => Step::File {
                    path,
                    remote,
                    size: *size,
                    verdict: verdicts.next().unwrap_or(Verdict::Send),
                },
            })
            .collect();
        Ok(steps)
    }

    /// The label of the next file's bar: `[N/TOTAL] NAME`.
    fn label(&self, remote: &str) -> String {
        format!(
            "[{}/{}] {}",
            self.tally.files + self.tally.failed + 1,
            self.total,
            Escaped(remote)
        )
    }

    /// Sends the run of small files to send at the start of `steps`,
    /// pipelined, as eager uploads. Returns how many steps it dealt with
    /// (at least one): after a failure that breaks the connection, the
    /// rest of the run is left for a new one.
    fn put_small_run<S: Read + Write>(
        &mut self,
        session: &mut Session<S>,
        steps: &[Step<'_>],
    ) -> Result<usize, ClientError> {
        let run: Vec<(&Path, &str, u64)> = steps
            .iter()
            .map_while(|step| match *step {
                Step::File {
                    path,
                    remote,
                    size,
                    verdict: Verdict::Send,
                } if size <= SMALL_FILE => Some((path, remote, size)),
                _ => None,
            })
            .collect();
        let small_files: Vec<SmallFile<'_>> = run
            .iter()
            .map(|&(path, remote, _)| SmallFile { path, remote })
            .collect();
        let mut output = Ok(());
        let reported = files::put_small_files(
            session,
            &small_files,
            self.transfer,
            &Meter::hidden(),
            &mut |i, result| {
                if output.is_ok()
                    && let Some(&(path, remote, size)) = run.get(i)
                {
                    self.meter.start(Some(self.label(remote)), size, 0);
                    if result.is_ok() {
                        self.meter.inc(size);
                    }
                    output = self
                        .tally
                        .report(self.meter, remote, path, result, self.hashes);
                    self.meter.end_file();
                }
            },
        );
        output?;
        Ok(reported.max(1))
    }

    /// Sends one file that is not small (or was not when it was planned).
    fn put_large(
        &mut self,
        link: &mut Link<'_>,
        path: &Path,
        remote: &str,
        size: u64,
    ) -> Result<(), ClientError> {
        self.meter.start(Some(self.label(remote)), size, 0);
        let status = self.tally.ui().status;
        let meter = self.meter;
        let mut note = |line: &str| {
            if status {
                meter.println(line);
            }
        };
        let sent = Source::open(path).and_then(|source| {
            put_resuming(link, &source, remote, self.transfer, meter, &mut note)
        });
        self.meter.end_file();
        self.tally
            .report(self.meter, remote, path, sent, self.hashes)
    }
}

/// `put - --name NAME`: standard input, of unknown length, in chunks.
fn put_stdin(
    server: &str,
    options: &ConnectOptions,
    args: &PutArgs,
    ui: Ui,
    out: &mut dyn Write,
) -> Result<(), ClientError> {
    let Some(name) = args.name.as_deref() else {
        return Err(ClientError::Usage(
            "`put -` reads standard input: give its remote name with --name",
        ));
    };
    framekit_transfer::validate_name(name).map_err(|source| ClientError::InvalidName {
        name: name.to_owned(),
        source,
    })?;
    let stdin_path = PathBuf::from("-");
    let mut session = connect(server, options)?;
    let mut tally = Tally::new("put", out, ui, true);
    let meter = Meter::stream(ui.status, Escaped(name).to_string());
    let mut upload = session.start_put_stream(name, args.force)?;
    let mut stdin = io::stdin().lock();
    let mut buf = vec![0u8; STDIN_BUFFER];
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                meter.finish();
                // Dropped unfinished: the server publishes nothing.
                return Err(ClientError::Local {
                    action: "cannot read",
                    path: PathBuf::from("standard input"),
                    source,
                });
            }
        };
        upload.send(buf.get(..n).unwrap_or_default())?;
        meter.inc(n as u64);
    }
    let sent = upload.sent();
    let result = upload.finish();
    meter.finish();
    let stored = result?;
    let done = Done {
        name,
        path: &stdin_path,
        size: stored.size,
        hash: stored.hash,
        bytes: sent,
        unchanged: false,
    };
    tally.done(&meter, &done)?;
    tally.end()
}
