//! `client put FILE... [--name NAME]`: one file, or a set of files and
//! directories over one connection.

use super::set::{Link, Tally};
use crate::cli::PutArgs;
use crate::connect::{ConnectOptions, connect};
use crate::error::{ClientError, hex};
use crate::escape::Escaped;
use crate::files::plan::{Left, Plan, PutItem, plan_put};
use crate::files::{self, Options, SMALL_FILE, SmallFile, Source};
use crate::progress::Meter;
use crate::session::Session;
use std::io::{Read, Write};
use std::path::Path;

pub(super) fn run(
    server: &str,
    options: &ConnectOptions,
    args: &PutArgs,
    status: bool,
    out: &mut dyn Write,
) -> Result<(), ClientError> {
    let transfer = Options {
        force: args.force,
        resume: !args.no_resume,
    };
    // One file (or a link to one) is a single transfer, with its own exit
    // codes; anything else is a set.
    if let [file] = args.files.as_slice()
        && !file.is_dir()
    {
        return put_one(server, options, file, args, transfer, status, out);
    }
    let plan = plan_put(&args.files, args.name.as_deref(), args.follow_links);
    let mut set = PutSet {
        transfer,
        status,
        meter: Meter::for_set(status, "put".to_owned(), plan.bytes()),
        tally: Tally::new("put"),
        total: plan.files(),
    };
    set.run(&plan, &mut Link::new(server, options), out)
}

/// Puts one file, as `--name` or under its base name.
fn put_one(
    server: &str,
    options: &ConnectOptions,
    file: &Path,
    args: &PutArgs,
    transfer: Options,
    status: bool,
    out: &mut dyn Write,
) -> Result<(), ClientError> {
    let source = Source::open(file)?;
    let name = files::remote_name(file, args.name.as_deref())?;
    let mut session = connect(server, options)?;
    let meter = Meter::single(status, Escaped(&name).to_string());
    let mut note = |line: &str| {
        if status {
            meter.println(line);
        }
    };
    let result = files::put_file(&mut session, &source, &name, transfer, &meter, &mut note);
    meter.finish();
    let done = result?.done;
    writeln!(
        out,
        "put {}: {} bytes, blake3 {}",
        Escaped(&name),
        done.size,
        hex(&done.hash)
    )
    .map_err(ClientError::Output)
}

/// A put of several files and directories in progress.
struct PutSet {
    transfer: Options,
    status: bool,
    meter: Meter,
    tally: Tally,
    /// The number of files in the plan.
    total: usize,
}

impl PutSet {
    /// Carries out `plan`: reports what will not be sent, then makes each
    /// directory and sends each file in order, runs of small files
    /// pipelined. A failure is reported and the rest goes on, on a new
    /// connection if needed; the set fails as a whole only if it cannot
    /// connect, or cannot write `out`.
    fn run(
        &mut self,
        plan: &Plan,
        link: &mut Link<'_>,
        out: &mut dyn Write,
    ) -> Result<(), ClientError> {
        for left in &plan.left {
            match left {
                Left::Skipped { path, reason } => {
                    self.tally.skipped += 1;
                    if self.status {
                        self.meter
                            .println(&format!("warning: skipping {}: {reason}", path.display()));
                    }
                }
                Left::Failed { path, error } => {
                    self.tally
                        .fail(&self.meter, &path.display().to_string(), error);
                }
            }
        }
        let mut next = 0;
        while let Some(item) = plan.items.get(next) {
            let session = match link.session() {
                Ok(session) => session,
                Err(e) => {
                    self.meter.finish();
                    return Err(e);
                }
            };
            next += match item {
                PutItem::Dir { remote } => {
                    if let Err(e) = session.make_dir(remote) {
                        self.tally
                            .fail(&self.meter, &format!("{}/", Escaped(remote)), &e);
                    }
                    1
                }
                PutItem::File { .. } if is_small(item) => {
                    self.put_small_run(session, plan.items.get(next..).unwrap_or_default(), out)?
                }
                PutItem::File { path, remote, size } => {
                    self.put_large(session, path, remote, *size, out)?;
                    1
                }
            };
        }
        self.meter.finish();
        self.tally.end(self.status)
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

    /// Sends the run of small files at the start of `items`, pipelined, as
    /// eager uploads. Returns how many items it dealt with (at least one):
    /// after a failure that breaks the connection, the rest of the run is
    /// left for a new one.
    fn put_small_run<S: Read + Write>(
        &mut self,
        session: &mut Session<S>,
        items: &[PutItem],
        out: &mut dyn Write,
    ) -> Result<usize, ClientError> {
        let run: Vec<(&str, u64, SmallFile<'_>)> = items
            .iter()
            .take_while(|item| is_small(item))
            .filter_map(|item| match item {
                PutItem::File { path, remote, size } => {
                    Some((remote.as_str(), *size, SmallFile { path, remote }))
                }
                PutItem::Dir { .. } => None,
            })
            .collect();
        let small_files: Vec<SmallFile<'_>> = run.iter().map(|(_, _, file)| *file).collect();
        let mut output = Ok(());
        let reported = files::put_small_files(
            session,
            &small_files,
            self.transfer,
            &Meter::hidden(),
            &mut |i, result| {
                if output.is_ok()
                    && let Some(&(remote, size, _)) = run.get(i)
                {
                    self.meter.start(Some(self.label(remote)), size, 0);
                    output = self.tally.report(&self.meter, out, remote, result);
                    self.meter.end_file();
                }
            },
        );
        output?;
        Ok(reported.max(1))
    }

    /// Sends one file that is not small (or was not when it was planned).
    fn put_large<S: Read + Write>(
        &mut self,
        session: &mut Session<S>,
        path: &Path,
        remote: &str,
        size: u64,
        out: &mut dyn Write,
    ) -> Result<(), ClientError> {
        self.meter.start(Some(self.label(remote)), size, 0);
        let status = self.status;
        let meter = &self.meter;
        let mut note = |line: &str| {
            if status {
                meter.println(line);
            }
        };
        let sent = Source::open(path).and_then(|source| {
            files::put_file(session, &source, remote, self.transfer, meter, &mut note)
        });
        self.meter.end_file();
        self.tally.report(&self.meter, out, remote, sent)
    }
}

/// Whether `item` is a file small enough to go as an eager upload.
fn is_small(item: &PutItem) -> bool {
    matches!(item, PutItem::File { size, .. } if *size <= SMALL_FILE)
}
