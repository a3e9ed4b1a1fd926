//! `client get NAME... [--output PATH]`: files and directories, each saved
//! through a partial file and published only once verified.

use super::set::{Link, Tally};
use crate::Exit;
use crate::cli::GetArgs;
use crate::connect::ConnectOptions;
use crate::error::{ClientError, ProtocolError, hex};
use crate::escape::Escaped;
use crate::files::{
    self, Options, Saved, Staging, components_below, directory_destination, make_real_dir,
    prepare_path,
};
use crate::progress::Meter;
use crate::session::TreeEntry;
use framekit_transfer::{Entry, ErrorCode};
use std::path::{Path, PathBuf};

/// The most bytes of names a directory listing may hold, so that a server
/// cannot make the client hold an endless one in memory.
const MAX_LISTING_BYTES: usize = 256 << 20;

pub(super) fn run(
    server: &str,
    options: &ConnectOptions,
    args: &GetArgs,
    status: bool,
) -> Result<(), ClientError> {
    let transfer = Options {
        force: args.force,
        resume: !args.no_resume,
    };
    let mut link = Link::new(server, options);
    let output = args.output.as_deref();
    if let [name] = args.names.as_slice() {
        return get_one(&mut link, name, output, transfer, status);
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
    let mut tally = Tally::new("get");
    for name in &args.names {
        get_into(&mut link, name, &into, transfer, status, &mut tally)?;
    }
    tally.end(status)
}

/// Gets one name: a single transfer, with its own exit codes, until it
/// turns out to be a directory whose listing has arrived: then it is a set.
fn get_one(
    link: &mut Link<'_>,
    name: &str,
    output: Option<&Path>,
    transfer: Options,
    status: bool,
) -> Result<(), ClientError> {
    let mut tally = Tally::new("get");
    let (dir, entries) = match name.strip_suffix('/') {
        Some(dir) => {
            let dir = directory_name(dir)?;
            let entries = list_directory(link, &dir)?;
            (dir, entries)
        }
        None => match get_file_or_list(link, name, output, transfer, status)? {
            Some(entries) => (name.to_owned(), entries),
            None => return Ok(()),
        },
    };
    let dest = directory_destination(&dir, output);
    fetch_directory(link, &dir, &entries, &dest, transfer, status, &mut tally)?;
    tally.end(status)
}

/// Gets `name` as a file, unless it is a remote directory: then returns
/// its listing. It is taken for one when a local directory is where the
/// file would go (to merge into it), or when the server says it is not a
/// file.
fn get_file_or_list(
    link: &mut Link<'_>,
    name: &str,
    output: Option<&Path>,
    transfer: Options,
    status: bool,
) -> Result<Option<Vec<TreeEntry>>, ClientError> {
    let dest = files::destination(name, output)?;
    if dest.is_dir()
        && let Ok(entries) = list_directory(link, name)
    {
        return Ok(Some(entries));
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
            Ok(None)
        }
        // Perhaps a directory: saved where the file would have been.
        Err(e) if refused_as_not_a_file(&e) => list_directory(link, name).map(Some).map_err(|_| e),
        Err(e) => Err(e),
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
    transfer: Options,
    status: bool,
    tally: &mut Tally,
) -> Result<(), ClientError> {
    let dir = match name.strip_suffix('/') {
        Some(dir) => dir,
        None => {
            let meter = Meter::single(status, Escaped(name).to_string());
            let fetched = files::destination(name, Some(into))
                .and_then(|dest| fetch(link, name, &dest, transfer, &meter, status));
            meter.finish();
            match fetched {
                Ok(saved) => {
                    tally.files += 1;
                    tally.bytes += saved.received;
                    return Ok(());
                }
                Err(e) if refused_as_not_a_file(&e) => name,
                Err(e) if e.exit() == Exit::Connection => return Err(e),
                Err(e) => {
                    tally.fail(&Meter::hidden(), &Escaped(name).to_string(), &e);
                    return Ok(());
                }
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
            fetch_directory(link, &dir, &entries, &dest, transfer, status, tally)
        }
        Err(e) if e.exit() == Exit::Connection => Err(e),
        Err(e) => {
            tally.fail(&Meter::hidden(), &Escaped(name).to_string(), &e);
            Ok(())
        }
    }
}

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
) -> Result<Saved, ClientError> {
    let staging = Staging::open(dest, name, transfer)?;
    let session = link.session()?;
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
                if e.exit() == Exit::Connection
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
