//! The client's commands, as run from the command line.

use crate::cli::{Cli, Command, DeleteArgs, GetArgs, ListArgs, PutArgs, StatArgs};
use crate::connect::{ConnectOptions, connect};
use crate::error::{ClientError, hex};
use crate::escape::Escaped;
use crate::files::{self, Source, Staging};
use crate::progress::transfer_bar;
use proto::transfer::Entry;
use std::io::Write;

/// The environment variable holding the access token.
pub const TOKEN_VAR: &str = "FRAMEKIT_TOKEN";

/// Runs one command, writing its results to `out`.
///
/// Local checks (the file to put can be read, the destination of a get may
/// be written, names are valid) come before connecting, so they fail fast
/// and touch nothing on the server.
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

fn put(
    cli: &Cli,
    options: &ConnectOptions,
    args: &PutArgs,
    out: &mut dyn Write,
) -> Result<(), ClientError> {
    let source = Source::open(&args.file)?;
    let name = files::remote_name(&args.file, args.name.as_deref())?;
    let mut session = connect(&cli.server, options)?;
    let progress = transfer_bar(!cli.quiet, Escaped(&name).to_string());
    let result = files::put_file(&mut session, source, &name, args.force, &progress);
    progress.finish_and_clear();
    let done = result?;
    writeln!(
        out,
        "put {}: {} bytes, blake3 {}",
        Escaped(&name),
        done.size,
        hex(&done.hash)
    )
    .map_err(ClientError::Output)
}

fn get(
    cli: &Cli,
    options: &ConnectOptions,
    args: &GetArgs,
    status: bool,
) -> Result<(), ClientError> {
    let dest = files::destination(&args.name, args.output.as_deref())?;
    let staging = Staging::new(&dest, args.force)?;
    let mut session = connect(&cli.server, options)?;
    let progress = transfer_bar(status, Escaped(&args.name).to_string());
    let result = files::get_file(&mut session, &args.name, staging, &progress);
    progress.finish_and_clear();
    let saved = result?;
    if status {
        eprintln!(
            "get {} -> {}: {} bytes, blake3 {}",
            Escaped(&args.name),
            saved.path.display(),
            saved.size,
            hex(&saved.hash)
        );
    }
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
}
