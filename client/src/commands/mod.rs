//! The client's commands, as run from the command line: one module each,
//! and [`set`] for what the transfers of several files share.

mod delete;
mod get;
mod list;
mod mv;
mod output;
mod put;
mod set;
mod stat;

use crate::cli::{Cli, Command};
use crate::connect::ConnectOptions;
use crate::error::ClientError;
use crate::escape::Escaped;
use clap::CommandFactory;
use framekit_transfer::Entry;
use output::Ui;
use std::io::Write;
use std::path::Path;

/// The environment variable holding the access token.
const TOKEN_VAR: &str = "FRAMEKIT_TOKEN";

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
    match &cli.command {
        Command::Completions(args) => {
            clap_complete::generate(args.shell, &mut Cli::command(), "client", out);
            return out.flush().map_err(ClientError::Output);
        }
        Command::Man => {
            clap_mangen::Man::new(Cli::command())
                .render(out)
                .map_err(ClientError::Output)?;
            return out.flush().map_err(ClientError::Output);
        }
        _ => {}
    }
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
        busy_retry: (!cli.no_retry).then_some(crate::connect::BUSY_RETRY),
        ..ConnectOptions::default()
    };
    let server = cli.server.as_str();
    let ui = Ui {
        status: !cli.quiet,
        json: cli.json,
    };
    match &cli.command {
        Command::Put(args) => put::run(server, &options, args, ui, out)?,
        Command::Get(args) => get::run(server, &options, args, ui, out)?,
        Command::List(args) => list::run(server, &options, args, ui, out)?,
        Command::Stat(args) => stat::run(server, &options, args, ui, out)?,
        Command::Delete(args) => delete::run(server, &options, args, ui)?,
        Command::Mv(args) => mv::run(server, &options, args, ui)?,
        Command::Completions(_) | Command::Man => {}
    }
    out.flush().map_err(ClientError::Output)
}

/// Prints an entry as `SIZE<TAB>NAME`, the name escaped.
pub(crate) fn print_entry(out: &mut dyn Write, entry: &Entry) -> Result<(), ClientError> {
    writeln!(out, "{}\t{}", entry.size, Escaped(&entry.name)).map_err(ClientError::Output)
}

/// The token in a file: its first line that is not blank, trimmed.
fn token_from_file(path: &Path) -> Result<String, ClientError> {
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
