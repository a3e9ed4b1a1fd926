//! The client's commands, as run from the command line.

use crate::cli::{Cli, Command, DeleteArgs, GetArgs, ListArgs, PutArgs, StatArgs};
use crate::connect::{ConnectOptions, Stream, connect};
use crate::error::{ClientError, ProtocolError, hex};
use crate::escape::Escaped;
use crate::files::plan::{Left, PutItem, plan_put};
use crate::files::{self, Options, Source, Staging};
use crate::files::{components_below, make_real_dir, prepare_path};
use crate::progress::Meter;
use crate::session::{Session, TreeEntry};
use framekit_transfer::{Entry, ErrorCode};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The environment variable holding the access token.
pub const TOKEN_VAR: &str = "FRAMEKIT_TOKEN";

/// The most bytes of names a directory listing may hold, so that a server
/// cannot make the client hold an endless one in memory.
const MAX_LISTING_BYTES: usize = 256 << 20;

/// Runs one command, writing its results to `out`.
///
/// Local checks (the file to put can be read, the destination of a get may
/// be written, names are valid) come before connecting, so they fail fast
/// and touch nothing on the server.
///
/// A put or get of several files or of a directory goes on after a file
/// fails: each failure is printed on stderr as an `error:` line, and the
/// command ends with [`ClientError::SomeFailed`].
pub fn run(cli: &Cli, out: &mut dyn Write) -> Result<(), ClientError> {
    let token = match &cli.token_file {
        Some(path) => Some(token_from_file(path)?),
        None => token_from_env()?,
    };
    let tls = if cli.tls || cli.ca.is_some() {
        Some(crate::tls::config(cli.ca.as_deref())?)
    } else {
        None
    };
    let options = ConnectOptions {
        token,
        tls,
        ..ConnectOptions::default()
    };
    let status = !cli.quiet;
    match &cli.command {
        Command::Put(args) => put(cli, &options, args, out)?,
        Command::Get(args) => get(cli, &options, args, status)?,
        Command::List(ListArgs { prefix }) => {
            let mut session = connect(&cli.server, &options)?;
            session.list(prefix, |entry| print_entry(out, &entry))?;
        }
        Command::Stat(StatArgs { name }) => {
            let mut session = connect(&cli.server, &options)?;
            let entry = session.stat(name)?;
            print_entry(out, &entry)?;
        }
        Command::Delete(DeleteArgs { name }) => {
            let mut session = connect(&cli.server, &options)?;
            session.delete(name)?;
            if status {
                eprintln!("deleted {}", Escaped(name));
            }
        }
    }
    out.flush().map_err(ClientError::Output)
}

/// One connection for a whole set of transfers, made again if a failure
/// left it unusable.
struct Link<'a> {
    addr: &'a str,
    options: &'a ConnectOptions,
    session: Option<Session<Stream>>,
}

impl<'a> Link<'a> {
    fn new(addr: &'a str, options: &'a ConnectOptions) -> Self {
        Link {
            addr,
            options,
            session: None,
        }
    }

    /// The session, connected if it was not or is no longer usable.
    fn session(&mut self) -> Result<&mut Session<Stream>, ClientError> {
        let session = match self.session.take() {
            Some(session) if session.is_usable() => session,
            _ => connect(self.addr, self.options)?,
        };
        Ok(self.session.insert(session))
    }
}

/// How a set of transfers went.
struct Tally {
    /// "put" or "get".
    op: &'static str,
    started: Instant,
    files: usize,
    failed: usize,
    skipped: usize,
    bytes: u64,
}

impl Tally {
    fn new(op: &'static str) -> Self {
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
    fn report(
        &mut self,
        meter: &Meter,
        out: &mut dyn Write,
        remote: &str,
        result: Result<files::Uploaded, ClientError>,
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
    fn fail(&mut self, meter: &Meter, what: &str, error: &ClientError) {
        self.failed += 1;
        meter.println(&format!("error: {what}: {}", error.report()));
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

    fn result(&self) -> Result<(), ClientError> {
        match self.failed {
            0 => Ok(()),
            failed => Err(ClientError::SomeFailed {
                failed,
                total: self.files + failed,
            }),
        }
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

fn put(
    cli: &Cli,
    options: &ConnectOptions,
    args: &PutArgs,
    out: &mut dyn Write,
) -> Result<(), ClientError> {
    let transfer = Options {
        force: args.force,
        resume: !args.no_resume,
    };
    let status = !cli.quiet;
    // One file (or a link to one) is a single transfer, with its own exit
    // codes; anything else is a set.
    if let [file] = args.files.as_slice()
        && !file.is_dir()
    {
        let source = Source::open(file)?;
        let name = files::remote_name(file, args.name.as_deref())?;
        let mut session = connect(&cli.server, options)?;
        let meter = Meter::single(status, Escaped(&name).to_string());
        let mut note = |line: &str| {
            if status {
                meter.println(line);
            }
        };
        let result = files::put_file(&mut session, &source, &name, transfer, &meter, &mut note);
        meter.finish();
        let done = result?.done;
        return writeln!(
            out,
            "put {}: {} bytes, blake3 {}",
            Escaped(&name),
            done.size,
            hex(&done.hash)
        )
        .map_err(ClientError::Output);
    }

    let plan = plan_put(&args.files, args.name.as_deref(), args.follow_links);
    let mut tally = Tally::new("put");
    let meter = Meter::for_set(status, "put".to_owned(), plan.bytes());
    for left in &plan.left {
        match left {
            Left::Skipped { path, reason } => {
                tally.skipped += 1;
                if status {
                    meter.println(&format!("warning: skipping {}: {reason}", path.display()));
                }
            }
            Left::Failed { path, error } => tally.fail(&meter, &path.display().to_string(), error),
        }
    }
    let mut link = Link::new(&cli.server, options);
    let total = plan.files();
    let small =
        |item: &PutItem| matches!(item, PutItem::File { size, .. } if *size <= files::SMALL_FILE);
    let mut next = 0;
    while let Some(item) = plan.items.get(next) {
        let session = match link.session() {
            Ok(session) => session,
            Err(e) => {
                meter.finish();
                return Err(e);
            }
        };
        match item {
            PutItem::Dir { remote } => {
                next += 1;
                if let Err(e) = session.make_dir(remote) {
                    tally.fail(&meter, &format!("{}/", Escaped(remote)), &e);
                }
            }
            // A run of small files goes pipelined, as eager uploads.
            PutItem::File { .. } if small(item) => {
                let run: Vec<(&PutItem, files::SmallFile<'_>)> = plan.items[next..]
                    .iter()
                    .take_while(|item| small(item))
                    .filter_map(|item| match item {
                        PutItem::File { path, remote, .. } => {
                            Some((item, files::SmallFile { path, remote }))
                        }
                        PutItem::Dir { .. } => None,
                    })
                    .collect();
                let small_files: Vec<files::SmallFile<'_>> =
                    run.iter().map(|(_, file)| *file).collect();
                let mut report = |i: usize,
                                  result: Result<files::Uploaded, ClientError>|
                 -> Result<(), ClientError> {
                    let Some((PutItem::File { remote, size, .. }, _)) = run.get(i) else {
                        return Ok(());
                    };
                    let label = format!(
                        "[{}/{total}] {}",
                        tally.files + tally.failed + 1,
                        Escaped(remote)
                    );
                    meter.start(Some(label), *size, 0);
                    let reported = tally.report(&meter, out, remote, result);
                    meter.end_file();
                    reported
                };
                let mut output = Ok(());
                let reported = files::put_small_files(
                    session,
                    &small_files,
                    transfer,
                    &Meter::hidden(),
                    &mut |i, result| {
                        if output.is_ok() {
                            output = report(i, result);
                        }
                    },
                );
                output?;
                next += reported.max(1);
            }
            PutItem::File { path, remote, size } => {
                next += 1;
                let label = format!(
                    "[{}/{total}] {}",
                    tally.files + tally.failed + 1,
                    Escaped(remote)
                );
                meter.start(Some(label), *size, 0);
                let mut note = |line: &str| {
                    if status {
                        meter.println(line);
                    }
                };
                let sent = Source::open(path).and_then(|source| {
                    files::put_file(session, &source, remote, transfer, &meter, &mut note)
                });
                meter.end_file();
                tally.report(&meter, out, remote, sent)?;
            }
        }
    }
    meter.finish();
    if status {
        eprintln!("{}", tally.summary());
    }
    tally.result()
}

/// Where a directory `dir` is saved: `output` itself (or in it, under the
/// directory's base name, if it is an existing directory), or
/// `./<base name>`.
fn directory_destination(dir: &str, output: Option<&Path>) -> PathBuf {
    let base = dir.rsplit('/').next().unwrap_or(dir);
    match output {
        Some(output) if output.is_dir() => output.join(base),
        Some(output) => output.to_owned(),
        None => PathBuf::from(base),
    }
}

fn get(
    cli: &Cli,
    options: &ConnectOptions,
    args: &GetArgs,
    status: bool,
) -> Result<(), ClientError> {
    let transfer = Options {
        force: args.force,
        resume: !args.no_resume,
    };
    let mut link = Link::new(&cli.server, options);
    // One name is a single transfer, with its own exit codes, until its
    // directory's listing has arrived: then it is a set.
    if let [name] = args.names.as_slice() {
        let mut tally = Tally::new("get");
        if let Some(dir) = name.strip_suffix('/') {
            let dir = directory_name(dir)?;
            let entries = list_directory(&mut link, &dir)?;
            let dest = directory_destination(&dir, args.output.as_deref());
            fetch_directory(
                &mut link, &dir, &entries, &dest, transfer, status, &mut tally,
            )?;
        } else {
            let dest = files::destination(name, args.output.as_deref())?;
            // A local directory where the file would go: perhaps the name
            // is a remote directory to merge into it.
            if dest.is_dir()
                && let Ok(entries) = list_directory(&mut link, name)
            {
                let dest = directory_destination(name, args.output.as_deref());
                fetch_directory(
                    &mut link, name, &entries, &dest, transfer, status, &mut tally,
                )?;
                if status {
                    eprintln!("{}", tally.summary());
                }
                return tally.result();
            }
            let staging = Staging::open(&dest, name, transfer)?;
            let session = link.session()?;
            let meter = Meter::single(status, Escaped(name).to_string());
            let mut note = |line: &str| {
                if status {
                    meter.println(line);
                }
            };
            let result = files::get_file(session, name, staging, &meter, &mut note);
            meter.finish();
            match result {
                Ok(saved) => {
                    if status {
                        eprintln!(
                            "get {} -> {}: {} bytes, blake3 {}",
                            Escaped(name),
                            saved.path.display(),
                            saved.size,
                            hex(&saved.hash)
                        );
                    }
                    return Ok(());
                }
                // Perhaps a directory: saved where the file would have been.
                Err(e @ ClientError::Refused { .. }) if refused_as_not_a_file(&e) => {
                    let Ok(entries) = list_directory(&mut link, name) else {
                        return Err(e);
                    };
                    let dest = directory_destination(name, args.output.as_deref());
                    fetch_directory(
                        &mut link, name, &entries, &dest, transfer, status, &mut tally,
                    )?;
                }
                Err(e) => return Err(e),
            }
        }
        if status {
            eprintln!("{}", tally.summary());
        }
        return tally.result();
    }

    // With several names, --output is the directory to save them in.
    let into = match &args.output {
        Some(output) => {
            if !output.is_dir() {
                make_real_dir(output)?;
            }
            output.clone()
        }
        None => PathBuf::from("."),
    };
    let mut tally = Tally::new("get");
    for name in &args.names {
        let dir = match name.strip_suffix('/') {
            Some(dir) => Some(dir),
            None => {
                let meter = Meter::single(status, Escaped(name).to_string());
                let fetched = files::destination(name, Some(&into))
                    .and_then(|dest| fetch(&mut link, name, &dest, transfer, &meter, status));
                meter.finish();
                match fetched {
                    Ok(saved) => {
                        tally.files += 1;
                        tally.bytes += saved.received;
                        None
                    }
                    Err(e) if refused_as_not_a_file(&e) => Some(name.as_str()),
                    Err(e) if e.exit() == crate::Exit::Connection => return Err(e),
                    Err(e) => {
                        tally.fail(&Meter::hidden(), &Escaped(name).to_string(), &e);
                        None
                    }
                }
            }
        };
        let Some(dir) = dir else {
            continue;
        };
        let listed = directory_name(dir).and_then(|dir| {
            let entries = list_directory(&mut link, &dir)?;
            Ok((dir, entries))
        });
        match listed {
            Ok((dir, entries)) => {
                let dest = directory_destination(&dir, Some(&into));
                fetch_directory(
                    &mut link, &dir, &entries, &dest, transfer, status, &mut tally,
                )?;
            }
            Err(e) if e.exit() == crate::Exit::Connection => return Err(e),
            Err(e) => tally.fail(&Meter::hidden(), &Escaped(name).to_string(), &e),
        }
    }
    if status {
        eprintln!("{}", tally.summary());
    }
    tally.result()
}

/// Whether the server refused a get because the name is not a file (it
/// may be a directory).
/// Downloads `name` to `dest` through its staging file, resuming what an
/// earlier attempt left there; notes go above the progress bar when it is
/// shown.
fn fetch(
    link: &mut Link<'_>,
    name: &str,
    dest: &Path,
    transfer: Options,
    meter: &Meter,
    status: bool,
) -> Result<files::Saved, ClientError> {
    let staging = Staging::open(dest, name, transfer)?;
    let session = link.session()?;
    let mut note = |line: &str| {
        if status {
            meter.println(line);
        }
    };
    files::get_file(session, name, staging, meter, &mut note)
}

fn refused_as_not_a_file(error: &ClientError) -> bool {
    matches!(error, ClientError::Refused { reply, .. } if reply.code == ErrorCode::NotAFile)
}

/// The remote directory of `get DIR/`: the name without its trailing
/// slashes, which must be a valid name.
fn directory_name(dir: &str) -> Result<String, ClientError> {
    let dir = dir.trim_end_matches('/');
    framekit_transfer::validate_name(dir).map_err(|source| ClientError::InvalidName {
        name: format!("{dir}/"),
        source,
    })?;
    Ok(dir.to_owned())
}

/// Everything below the remote directory `dir`, as the server lists it
/// (names unchecked yet).
fn list_directory(link: &mut Link<'_>, dir: &str) -> Result<Vec<TreeEntry>, ClientError> {
    // The whole listing first: the connection carries one exchange at a
    // time.
    let mut entries = Vec::new();
    let mut listed_bytes = 0usize;
    link.session()?.tree(dir, |entry| {
        listed_bytes += match &entry {
            TreeEntry::Dir(name) => name.len(),
            TreeEntry::File(file) => file.name.len(),
        };
        if listed_bytes > MAX_LISTING_BYTES {
            return Err(ProtocolError::ListingTooLarge {
                limit: MAX_LISTING_BYTES,
            }
            .into());
        }
        entries.push(entry);
        Ok(())
    })?;
    Ok(entries)
}

/// Downloads what `entries` lists below the remote directory `dir` into
/// `dest`, counting in `tally`: every name is checked first, and a name
/// that fails, or a file that cannot be fetched, is reported and the rest
/// go on. Fails as a whole only when the connection is lost for good.
fn fetch_directory(
    link: &mut Link<'_>,
    dir: &str,
    entries: &[TreeEntry],
    dest: &Path,
    transfer: Options,
    status: bool,
    tally: &mut Tally,
) -> Result<(), ClientError> {
    let bytes = entries
        .iter()
        .map(|e| match e {
            TreeEntry::File(Entry { size, .. }) => *size,
            TreeEntry::Dir(_) => 0,
        })
        .sum();
    let meter = Meter::for_set(status, format!("get {}", Escaped(dir)), bytes);
    if let Err(error) = make_real_dir(dest).or_else(|e| match dest.is_dir() {
        // The destination itself is the user's choice: a link to a
        // directory is fine there.
        true => Ok(()),
        false => Err(e),
    }) {
        tally.fail(&meter, &format!("{}/", Escaped(dir)), &error);
        meter.finish();
        return Ok(());
    }
    let total = entries
        .iter()
        .filter(|e| matches!(e, TreeEntry::File(_)))
        .count();
    let mut done = 0;
    for entry in entries {
        let (name, size) = match entry {
            TreeEntry::Dir(name) => (name, 0),
            TreeEntry::File(file) => (&file.name, file.size),
        };
        let components = match components_below(name, dir) {
            Ok(components) => components,
            Err(e) => {
                meter.skip(size);
                tally.fail(&meter, &Escaped(name).to_string(), &e);
                continue;
            }
        };
        if let TreeEntry::Dir(_) = entry {
            if let Err(e) = prepare_path(dest, &components, true) {
                tally.fail(&meter, &format!("{}/", Escaped(name)), &e);
            }
            continue;
        }
        done += 1;
        meter.start(Some(format!("[{done}/{total}] {}", Escaped(name))), size, 0);
        let fetched = prepare_path(dest, &components, false)
            .and_then(|path| fetch(link, name, &path, transfer, &meter, status));
        meter.end_file();
        match fetched {
            Ok(saved) => {
                tally.files += 1;
                tally.bytes += saved.received;
            }
            Err(e) => {
                tally.fail(&meter, &Escaped(name).to_string(), &e);
                // Without a connection nothing more can be done.
                if e.exit() == crate::Exit::Connection
                    && let Err(e) = link.session()
                {
                    meter.finish();
                    return Err(e);
                }
            }
        }
    }
    meter.finish();
    Ok(())
}

/// Prints an entry as `SIZE<TAB>NAME`, the name escaped.
pub fn print_entry(out: &mut dyn Write, entry: &Entry) -> Result<(), ClientError> {
    writeln!(out, "{}\t{}", entry.size, Escaped(&entry.name)).map_err(ClientError::Output)
}

/// The token in a file: its first line that is not blank, trimmed.
fn token_from_file(path: &std::path::Path) -> Result<String, ClientError> {
    let local = |source| ClientError::Local {
        action: "cannot read the token file",
        path: path.to_owned(),
        source,
    };
    let text = std::fs::read_to_string(path).map_err(local)?;
    text.lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| {
            local(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the file holds no token",
            ))
        })
}

/// The token from the environment: `None` if unset or empty.
fn token_from_env() -> Result<Option<String>, ClientError> {
    match std::env::var(TOKEN_VAR) {
        Ok(token) if token.is_empty() => Ok(None),
        Ok(token) => Ok(Some(token)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(ClientError::TokenNotUtf8),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_print_as_size_tab_escaped_name() {
        let mut out = Vec::new();
        let entry = Entry {
            name: "evil\u{1b}]0;pwned\u{7}\nname".into(),
            size: 42,
            modified_ns: 0,
        };
        print_entry(&mut out, &entry).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "42\tevil\\u{1b}]0;pwned\\u{7}\\nname\n"
        );
    }

    #[test]
    fn rates_are_in_binary_units() {
        assert_eq!(rate(0, Duration::from_secs(1)), "0.0 B/s");
        assert_eq!(rate(3 << 20, Duration::from_secs(2)), "1.5 MiB/s");
        assert_eq!(rate(5 << 30, Duration::from_secs(1)), "5.0 GiB/s");
    }

    #[test]
    fn directories_are_saved_under_their_base_name_or_where_asked() {
        assert_eq!(directory_destination("a/b", None), PathBuf::from("b"));
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            directory_destination("a/b", Some(dir.path())),
            dir.path().join("b")
        );
        let new = dir.path().join("new");
        assert_eq!(directory_destination("a/b", Some(&new)), new);
    }
}
