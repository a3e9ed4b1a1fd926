//! `client get NAME... [--output PATH]`: files and directories, each saved
//! through a partial file and published only once verified; or one file
//! to standard output (`--output -`).
//!
//! A local file that is already what the server holds (same size and
//! BLAKE3 hash) is not downloaded again: a rerun of a get fetches only
//! what is missing or different, and a file that differs still needs
//! `--force` to be replaced.

use super::output::Ui;
use super::set::{Done, Link, Tally};
use crate::Exit;
use crate::cli::GetArgs;
use crate::connect::ConnectOptions;
use crate::error::{ClientError, ProtocolError};
use crate::escape::Escaped;
use crate::files::hashes::LocalHashes;
use crate::files::{
    self, Options, SMALL_GET, Saved, SmallGet, Staging, components_below, directory_destination,
    get_small_files, make_real_dir, prepare_path,
};
use crate::progress::Meter;
use crate::session::{Remote, TreeEntry};
use framekit_transfer::{Entry, ErrorCode, Hash};
use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// How much of a download is written to standard output at a time.
const STDOUT_BUFFER: usize = 256 * 1024;

/// What a get shares from one file to the next.
struct Ctx<'a> {
    transfer: Options,
    ui: Ui,
    hashes: &'a mut LocalHashes,
}

/// The most bytes of names a directory listing may hold, so that a server
/// cannot make the client hold an endless one in memory.
const MAX_LISTING_BYTES: usize = 256 << 20;

pub(super) fn run(
    server: &str,
    options: &ConnectOptions,
    args: &GetArgs,
    ui: Ui,
    out: &mut dyn Write,
) -> Result<(), ClientError> {
    let transfer = Options {
        force: args.force,
        resume: !args.no_resume,
    };
    let mut link = Link::new(server, options);
    let output = args.output.as_deref();
    if output == Some(Path::new("-")) {
        let [name] = args.names.as_slice() else {
            return Err(ClientError::Usage(
                "--output - writes one file to standard output: give one name",
            ));
        };
        if name.ends_with('/') || ui.json {
            return Err(ClientError::Usage(
                "--output - writes one file to standard output: not a directory, not with --json",
            ));
        }
        return get_to_stdout(&mut link, name, ui, out);
    }
    let mut hashes = LocalHashes::in_user_cache();
    let mut ctx = Ctx {
        transfer,
        ui,
        hashes: &mut hashes,
    };
    let result = get(&mut link, args, output, &mut ctx, out);
    let _ = hashes.save();
    result
}

fn get(
    link: &mut Link<'_>,
    args: &GetArgs,
    output: Option<&Path>,
    ctx: &mut Ctx<'_>,
    out: &mut dyn Write,
) -> Result<(), ClientError> {
    if let [name] = args.names.as_slice() {
        let mut tally = Tally::new("get", out, ctx.ui, true);
        get_one(link, name, output, ctx, &mut tally)?;
        return tally.end();
    }
    // With several names, --output is the directory to save them in.
    let into = match output {
        Some(output) => {
            if !output.is_dir() {
                make_real_dir(output)?;
            }
            output.to_owned()
        }
        None => PathBuf::from("."),
    };
    let mut tally = Tally::new("get", out, ctx.ui, false);
    let names = args.names.as_slice();
    let mut next = 0;
    while next < names.len() {
        // Names of files, up to the next directory, go pipelined.
        let end = (next..names.len())
            .find(|&i| names[i].ends_with('/'))
            .unwrap_or(names.len());
        match names.get(next..end) {
            Some(run) if !run.is_empty() => {
                get_names(link, run, &into, ctx, &mut tally)?;
                next = end;
            }
            _ => {
                get_into(link, &names[next], &into, ctx, &mut tally)?;
                next += 1;
            }
        }
    }
    tally.end()
}

/// What to do with one of several names, once described.
enum NamePlan {
    /// A small file to fetch to this path.
    Fetch(PathBuf),
    /// A small file already there, identical, with its size and hash.
    Unchanged(PathBuf, u64, Hash),
    /// Anything else (a directory, a large file, a name the server
    /// refused or could not describe): got on its own, as [`get_into`]
    /// gets it.
    Alone,
}

/// Gets several names of files (none ending with `/`) into `into`: the
/// server describes them all first, many at a time; then the small files
/// not there already go pipelined (see [`get_small_files`]), and the
/// others one by one, as [`get_into`] gets them, in order.
fn get_names(
    link: &mut Link<'_>,
    names: &[String],
    into: &Path,
    ctx: &mut Ctx<'_>,
    tally: &mut Tally<'_>,
) -> Result<(), ClientError> {
    let mut remote: Vec<Option<(u64, Hash)>> = vec![None; names.len()];
    let described = link.session()?.describe_each(names, |i, result| {
        if let (Ok(Remote::File(file)), Some(slot)) = (result, remote.get_mut(i)) {
            *slot = Some((file.size, file.hash));
        }
    });
    match described {
        Ok(()) | Err(ClientError::TooOld { .. }) => {}
        Err(e) => return Err(e),
    }
    let plans: Vec<NamePlan> = names
        .iter()
        .zip(&remote)
        .map(|(name, remote)| {
            let (Some((size, hash)), Ok(dest)) = (remote, files::destination(name, Some(into)))
            else {
                return NamePlan::Alone;
            };
            if *size > SMALL_GET || dest.is_dir() {
                return NamePlan::Alone;
            }
            let same = fs::symlink_metadata(&dest).is_ok_and(|m| m.is_file() && m.len() == *size)
                && ctx.hashes.hash_of(&dest).is_ok_and(|local| local == *hash);
            if same {
                NamePlan::Unchanged(dest, *size, *hash)
            } else {
                NamePlan::Fetch(dest)
            }
        })
        .collect();
    let mut next = 0;
    while next < names.len() {
        if let Some(NamePlan::Alone) = plans.get(next) {
            get_into(link, &names[next], into, ctx, tally)?;
            next += 1;
            continue;
        }
        let end = (next..names.len())
            .find(|&i| matches!(plans.get(i), Some(NamePlan::Alone)))
            .unwrap_or(names.len());
        let run = names.get(next..end).unwrap_or_default();
        let run_plans = plans.get(next..end).unwrap_or_default();
        let items: Vec<Option<SmallGet<'_>>> = run
            .iter()
            .zip(run_plans)
            .map(|(name, plan)| match plan {
                NamePlan::Fetch(dest) => Some(SmallGet { name, dest }),
                _ => None,
            })
            .collect();
        let session = link.session()?;
        let meter = Meter::hidden();
        let mut output = Ok(());
        let mut lost = None;
        let reported = get_small_files(session, &items, ctx.transfer, &mut |k, outcome| {
            let (Some(name), Some(plan)) = (run.get(k), run_plans.get(k)) else {
                return;
            };
            if output.is_err() || lost.is_some() {
                return;
            }
            output = match (outcome, plan) {
                (None, NamePlan::Unchanged(path, size, hash)) => {
                    let done = Done {
                        name,
                        path,
                        size: *size,
                        hash: *hash,
                        bytes: 0,
                        unchanged: true,
                    };
                    tally.done(&meter, &done)
                }
                (Some(Ok(saved)), _) => saved_file(ctx, tally, &meter, name, &saved),
                // Without a connection nothing more can be done.
                (Some(Err(e)), _) if e.exit() == Exit::Connection => {
                    lost = Some(e);
                    Ok(())
                }
                (Some(Err(e)), _) => tally.fail(&meter, name, None, &e),
                (None, _) => Ok(()),
            };
        });
        output?;
        if let Some(e) = lost {
            return Err(e);
        }
        next += reported.max(1);
    }
    Ok(())
}

/// Writes the file `name` to `out` as it arrives, and checks its hash at
/// the end: a mismatch is reported (exit code 6) after the bytes were
/// written, since they cannot be taken back.
fn get_to_stdout(
    link: &mut Link<'_>,
    name: &str,
    ui: Ui,
    out: &mut dyn Write,
) -> Result<(), ClientError> {
    let session = link.session()?;
    let mut download = session.start_get(name)?;
    let mut buf = vec![0u8; STDOUT_BUFFER];
    loop {
        let n = download.read(&mut buf)?;
        if n == 0 {
            break;
        }
        out.write_all(buf.get(..n).unwrap_or_default())
            .map_err(ClientError::Output)?;
    }
    out.flush().map_err(ClientError::Output)?;
    let size = download.size();
    download.finish()?;
    let mut stderr_only = std::io::sink();
    let mut tally = Tally::new("get", &mut stderr_only, ui, false);
    tally.files = 1;
    tally.bytes = size;
    tally.end()
}

/// Gets one name: a single transfer, with its own exit codes, until it
/// turns out to be a directory whose listing has arrived: then it is a set.
fn get_one(
    link: &mut Link<'_>,
    name: &str,
    output: Option<&Path>,
    ctx: &mut Ctx<'_>,
    tally: &mut Tally<'_>,
) -> Result<(), ClientError> {
    let (dir, entries) = match name.strip_suffix('/') {
        Some(dir) => {
            let dir = directory_name(dir)?;
            let entries = list_directory(link, &dir)?;
            (dir, entries)
        }
        None => match get_file_or_list(link, name, output, ctx, tally)? {
            Some(entries) => (name.to_owned(), entries),
            None => return Ok(()),
        },
    };
    // A directory is a set: its files get no line each.
    tally.lines = false;
    let dest = directory_destination(&dir, output);
    fetch_directory(link, &dir, &entries, &dest, ctx, tally)
}

/// Gets `name` as a file, unless it is a remote directory: then returns
/// its listing. It is taken for one when a local directory is where the
/// file would go (to merge into it), or when the server says it is not a
/// file.
fn get_file_or_list(
    link: &mut Link<'_>,
    name: &str,
    output: Option<&Path>,
    ctx: &mut Ctx<'_>,
    tally: &mut Tally<'_>,
) -> Result<Option<Vec<TreeEntry>>, ClientError> {
    let dest = files::destination(name, output)?;
    if dest.is_dir()
        && let Ok(entries) = list_directory(link, name)
    {
        return Ok(Some(entries));
    }
    if let Some(hash) = unchanged_file(link, name, &dest, ctx)? {
        let size = fs::metadata(&dest).map_or(0, |m| m.len());
        let done = Done {
            name,
            path: &dest,
            size,
            hash,
            bytes: 0,
            unchanged: true,
        };
        tally.done(&Meter::hidden(), &done)?;
        return Ok(None);
    }
    let staging = Staging::open(&dest, name, ctx.transfer)?;
    let session = link.session()?;
    let status = ctx.ui.status;
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
            saved_file(ctx, tally, &meter, name, &saved)?;
            Ok(None)
        }
        // Perhaps a directory: saved where the file would have been.
        Err(e) if refused_as_not_a_file(&e) => list_directory(link, name).map(Some).map_err(|_| e),
        Err(e) => Err(e),
    }
}

/// Counts a file saved, records its hash, and reports it.
fn saved_file(
    ctx: &mut Ctx<'_>,
    tally: &mut Tally<'_>,
    meter: &Meter,
    name: &str,
    saved: &Saved,
) -> Result<(), ClientError> {
    if let Some(stamp) = saved.stamp {
        ctx.hashes.record(stamp, saved.hash);
    }
    let done = Done {
        name,
        path: &saved.path,
        size: saved.size,
        hash: saved.hash,
        bytes: saved.received,
        unchanged: false,
    };
    tally.done(meter, &done)
}

/// The hash of the local file `dest`, if it is a regular file that is
/// already the server's `name`, identical: then it need not be
/// downloaded. Asks the server only when there is such a local file; a
/// server that cannot say (too old) gets the usual answer to a file in
/// the way.
fn unchanged_file(
    link: &mut Link<'_>,
    name: &str,
    dest: &Path,
    ctx: &mut Ctx<'_>,
) -> Result<Option<Hash>, ClientError> {
    let Ok(meta) = fs::symlink_metadata(dest) else {
        return Ok(None);
    };
    if !meta.is_file() {
        return Ok(None);
    }
    match link.session()?.describe(name) {
        Ok(Remote::File(file)) if file.size == meta.len() => Ok(ctx
            .hashes
            .hash_of(dest)
            .ok()
            .filter(|hash| *hash == file.hash)),
        Err(e) if e.exit() == Exit::Connection => Err(e),
        _ => Ok(None),
    }
}

/// Gets one of several names into the directory `into`, counting in
/// `tally`: a file, or a directory (a name ending with `/`, or one the
/// server says is not a file). A failure is reported and counted; only a
/// lost connection fails the whole.
fn get_into(
    link: &mut Link<'_>,
    name: &str,
    into: &Path,
    ctx: &mut Ctx<'_>,
    tally: &mut Tally<'_>,
) -> Result<(), ClientError> {
    let dir = match name.strip_suffix('/') {
        Some(dir) => dir,
        None => {
            let meter = Meter::single(ctx.ui.status, Escaped(name).to_string());
            let dest = files::destination(name, Some(into));
            let unchanged = match &dest {
                Ok(dest) => unchanged_file(link, name, dest, ctx)?,
                Err(_) => None,
            };
            if let (Some(hash), Ok(dest)) = (unchanged, &dest) {
                let size = fs::metadata(dest).map_or(0, |m| m.len());
                let done = Done {
                    name,
                    path: dest,
                    size,
                    hash,
                    bytes: 0,
                    unchanged: true,
                };
                return tally.done(&meter, &done);
            }
            let fetched = dest.and_then(|dest| fetch(link, name, &dest, ctx, &meter));
            meter.finish();
            match fetched {
                Ok(saved) => return saved_file(ctx, tally, &meter, name, &saved),
                Err(e) if refused_as_not_a_file(&e) => name,
                Err(e) if e.exit() == Exit::Connection => return Err(e),
                Err(e) => return tally.fail(&Meter::hidden(), name, None, &e),
            }
        }
    };
    let listed = directory_name(dir).and_then(|dir| {
        let entries = list_directory(link, &dir)?;
        Ok((dir, entries))
    });
    match listed {
        Ok((dir, entries)) => {
            let dest = directory_destination(&dir, Some(into));
            fetch_directory(link, &dir, &entries, &dest, ctx, tally)
        }
        Err(e) if e.exit() == Exit::Connection => Err(e),
        Err(e) => tally.fail(&Meter::hidden(), name, None, &e),
    }
}

/// Downloads `name` to `dest` through its staging file, resuming what an
/// earlier attempt left there; notes go above the progress bar when it is
/// shown.
fn fetch(
    link: &mut Link<'_>,
    name: &str,
    dest: &Path,
    ctx: &Ctx<'_>,
    meter: &Meter,
) -> Result<Saved, ClientError> {
    let staging = Staging::open(dest, name, ctx.transfer)?;
    let session = link.session()?;
    let status = ctx.ui.status;
    let mut note = |line: &str| {
        if status {
            meter.println(line);
        }
    };
    files::get_file(session, name, staging, meter, &mut note)
}

/// Whether the server refused a get because the name is not a file (it
/// may be a directory).
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
/// go on. Local files already identical to the server's are left as they
/// are. Fails as a whole only when the connection is lost for good.
fn fetch_directory(
    link: &mut Link<'_>,
    dir: &str,
    entries: &[TreeEntry],
    dest: &Path,
    ctx: &mut Ctx<'_>,
    tally: &mut Tally<'_>,
) -> Result<(), ClientError> {
    let bytes = entries
        .iter()
        .map(|e| match e {
            TreeEntry::File(Entry { size, .. }) => *size,
            TreeEntry::Dir(_) => 0,
        })
        .sum();
    let meter = Meter::for_set(ctx.ui.status, format!("get {}", Escaped(dir)), bytes);
    if let Err(error) = make_real_dir(dest).or_else(|e| match dest.is_dir() {
        // The destination itself is the user's choice: a link to a
        // directory is fine there.
        true => Ok(()),
        false => Err(e),
    }) {
        let result = tally.fail(&meter, &format!("{dir}/"), Some(dest), &error);
        meter.finish();
        return result;
    }
    let unchanged = match unchanged_files(link, dir, entries, dest, ctx) {
        Ok(unchanged) => unchanged,
        Err(e) => {
            meter.finish();
            return Err(e);
        }
    };
    let mut set = DirSet {
        dir,
        dest,
        unchanged: &unchanged,
        meter: &meter,
        total: entries
            .iter()
            .filter(|e| matches!(e, TreeEntry::File(_)))
            .count(),
        done: 0,
    };
    let mut next = 0;
    while next < entries.len() {
        let large = (next..entries.len())
            .find(|&i| set.is_large(i, &entries[i]))
            .unwrap_or(entries.len());
        let result = match entries.get(next..large) {
            Some(run) if !run.is_empty() => set.small_run(link, run, next, ctx, tally),
            _ => set.large(link, &entries[next], ctx, tally).map(|()| 1),
        };
        match result {
            Ok(reported) => next += reported,
            Err(e) => {
                // Every file not dealt with yet is said not to be there.
                if e.exit() == Exit::Connection {
                    let names: Vec<&str> = entries
                        .get(next..)
                        .unwrap_or_default()
                        .iter()
                        .filter_map(|entry| match entry {
                            TreeEntry::File(file) => Some(file.name.as_str()),
                            TreeEntry::Dir(_) => None,
                        })
                        .collect();
                    tally.lost(&meter, &format!("{dir}/"), &names, &e)?;
                }
                meter.finish();
                return Err(e);
            }
        }
    }
    meter.finish();
    Ok(())
}

/// A directory being fetched by [`fetch_directory`].
struct DirSet<'a> {
    /// The remote directory.
    dir: &'a str,
    /// Where it is saved.
    dest: &'a Path,
    /// The files already there, identical, by index in the listing.
    unchanged: &'a HashMap<usize, (PathBuf, Hash)>,
    meter: &'a Meter,
    /// Files in the listing, and how many were dealt with.
    total: usize,
    done: usize,
}

/// What to do with an entry of a run of [`DirSet::small_run`], decided
/// before anything is asked for.
enum Prepared {
    /// A directory, made (or why not).
    Dir(Result<(), ClientError>),
    /// A file already there, identical.
    Unchanged(PathBuf, Hash),
    /// A file to fetch to this path.
    Fetch(PathBuf),
    /// A file that cannot be fetched.
    Failed(ClientError),
}

impl DirSet<'_> {
    /// Whether the entry at `index` is a file to fetch on its own: one
    /// over [`SMALL_GET`], not there already, with a valid name.
    fn is_large(&self, index: usize, entry: &TreeEntry) -> bool {
        matches!(entry, TreeEntry::File(file) if file.size > SMALL_GET
            && !self.unchanged.contains_key(&index)
            && components_below(&file.name, self.dir).is_ok())
    }

    /// Fetches a file over [`SMALL_GET`] through its partial file, which a
    /// later get resumes if this one is interrupted.
    fn large(
        &mut self,
        link: &mut Link<'_>,
        entry: &TreeEntry,
        ctx: &mut Ctx<'_>,
        tally: &mut Tally<'_>,
    ) -> Result<(), ClientError> {
        let TreeEntry::File(file) = entry else {
            return Ok(());
        };
        let (name, size) = (&file.name, file.size);
        self.done += 1;
        let meter = self.meter;
        meter.start(
            Some(format!("[{}/{}] {}", self.done, self.total, Escaped(name))),
            size,
            0,
        );
        let fetched = components_below(name, self.dir)
            .and_then(|components| prepare_path(self.dest, &components, false))
            .and_then(|path| fetch(link, name, &path, ctx, meter));
        meter.end_file();
        match fetched {
            Ok(saved) => saved_file(ctx, tally, meter, name, &saved),
            Err(e) => {
                tally.fail(meter, name, None, &e)?;
                // Without a connection nothing more can be done.
                if e.exit() == Exit::Connection {
                    link.session()?;
                }
                Ok(())
            }
        }
    }

    /// Deals with `run`, entries of the listing from index `first` on
    /// with no file over [`SMALL_GET`] to fetch: makes the directories,
    /// checks every name and path, then fetches the files pipelined (see
    /// [`get_small_files`]), reporting each entry in order. Returns how
    /// many entries it dealt with, at least one: after a failure that
    /// breaks the connection, the rest of the run is left for a new one.
    fn small_run(
        &mut self,
        link: &mut Link<'_>,
        run: &[TreeEntry],
        first: usize,
        ctx: &mut Ctx<'_>,
        tally: &mut Tally<'_>,
    ) -> Result<usize, ClientError> {
        let prepared: Vec<Prepared> = run
            .iter()
            .enumerate()
            .map(|(k, entry)| {
                let (name, all) = match entry {
                    TreeEntry::Dir(name) => (name, true),
                    TreeEntry::File(file) => (&file.name, false),
                };
                if let Some((path, hash)) = self.unchanged.get(&(first + k)) {
                    return Prepared::Unchanged(path.clone(), *hash);
                }
                let path = components_below(name, self.dir)
                    .and_then(|components| prepare_path(self.dest, &components, all));
                match (all, path) {
                    (true, path) => Prepared::Dir(path.map(drop)),
                    (false, Ok(path)) => Prepared::Fetch(path),
                    (false, Err(e)) => Prepared::Failed(e),
                }
            })
            .collect();
        let items: Vec<Option<SmallGet<'_>>> = run
            .iter()
            .zip(&prepared)
            .map(|(entry, prepared)| match (entry, prepared) {
                (TreeEntry::File(file), Prepared::Fetch(path)) => Some(SmallGet {
                    name: &file.name,
                    dest: path,
                }),
                _ => None,
            })
            .collect();
        let session = link.session()?;
        let meter = self.meter;
        let mut output = Ok(());
        let reported = get_small_files(session, &items, ctx.transfer, &mut |k, outcome| {
            if output.is_err() {
                return;
            }
            let (Some(entry), Some(prepared)) = (run.get(k), prepared.get(k)) else {
                return;
            };
            let (name, size) = match entry {
                TreeEntry::Dir(name) => (name, 0),
                TreeEntry::File(file) => (&file.name, file.size),
            };
            if let TreeEntry::File(_) = entry {
                self.done += 1;
            }
            output = match (outcome, prepared) {
                (None, Prepared::Dir(Ok(()))) => Ok(()),
                (None, Prepared::Dir(Err(e))) => tally.fail(meter, &format!("{name}/"), None, e),
                (None, Prepared::Unchanged(path, hash)) => {
                    meter.skip(size);
                    let done = Done {
                        name,
                        path,
                        size,
                        hash: *hash,
                        bytes: 0,
                        unchanged: true,
                    };
                    tally.done(meter, &done)
                }
                (None, Prepared::Failed(e)) => {
                    meter.skip(size);
                    tally.fail(meter, name, None, e)
                }
                (Some(Ok(saved)), _) => {
                    let label = format!("[{}/{}] {}", self.done, self.total, Escaped(name));
                    meter.start(Some(label), size, 0);
                    meter.inc(size);
                    let result = saved_file(ctx, tally, meter, name, &saved);
                    meter.end_file();
                    result
                }
                (Some(Err(e)), _) => {
                    meter.skip(size);
                    tally.fail(meter, name, None, &e)
                }
                (None, Prepared::Fetch(_)) => Ok(()),
            };
        });
        output?;
        Ok(reported.max(1))
    }
}

/// The files of `entries` (by index) that are already in `dest`,
/// identical: a regular file of the same size under real directories,
/// whose hash is the one the server describes. The server is asked only
/// about such files, many at a time; a server too old to answer gets
/// every file downloaded (or refused as in the way, without `--force`).
fn unchanged_files(
    link: &mut Link<'_>,
    dir: &str,
    entries: &[TreeEntry],
    dest: &Path,
    ctx: &mut Ctx<'_>,
) -> Result<HashMap<usize, (PathBuf, Hash)>, ClientError> {
    let mut candidates = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let TreeEntry::File(file) = entry else {
            continue;
        };
        let Ok(components) = components_below(&file.name, dir) else {
            continue;
        };
        if let Some(path) = existing_file(dest, &components, file.size) {
            candidates.push((i, file.name.clone(), path));
        }
    }
    let mut unchanged = HashMap::new();
    if candidates.is_empty() {
        return Ok(unchanged);
    }
    let names: Vec<String> = candidates.iter().map(|(_, name, _)| name.clone()).collect();
    let mut remote: Vec<Option<(u64, Hash)>> = vec![None; names.len()];
    let described = link.session()?.describe_each(&names, |j, result| {
        if let Ok(Remote::File(file)) = result {
            remote[j] = Some((file.size, file.hash));
        }
    });
    match described {
        Ok(()) => {}
        Err(ClientError::TooOld { .. }) => return Ok(unchanged),
        Err(e) => return Err(e),
    }
    for ((i, _, path), remote) in candidates.into_iter().zip(remote) {
        let Some((size, hash)) = remote else {
            continue;
        };
        let same_size = fs::symlink_metadata(&path).is_ok_and(|m| m.len() == size);
        if same_size && ctx.hashes.hash_of(&path).is_ok_and(|local| local == hash) {
            unchanged.insert(i, (path, hash));
        }
    }
    Ok(unchanged)
}

/// The local path of `components` under `base`, if it is a regular file
/// of `size` bytes reached through real directories only (never through a
/// symbolic link), as a download would write it.
fn existing_file(base: &Path, components: &[&str], size: u64) -> Option<PathBuf> {
    let (last, dirs) = components.split_last()?;
    let mut path = base.to_owned();
    for dir in dirs {
        path.push(dir);
        if !fs::symlink_metadata(&path).ok()?.is_dir() {
            return None;
        }
    }
    path.push(last);
    let meta = fs::symlink_metadata(&path).ok()?;
    (meta.is_file() && meta.len() == size).then_some(path)
}
