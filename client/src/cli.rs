//! The command line.

use crate::error::Exit;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Send files to a framekit server and fetch them back, verified.
///
/// Every transfer is checked end to end with BLAKE3; a download is saved
/// under its name only once it is complete and verified.
#[derive(Debug, Parser)]
#[command(name = "client", version, after_help = after_help())]
pub struct Cli {
    /// The server's address: HOST:PORT, HOST, or IP (the port defaults to
    /// 7878)
    #[arg(
        long,
        global = true,
        value_name = "ADDR",
        env = "FRAMEKIT_SERVER",
        default_value = "127.0.0.1:7878"
    )]
    pub server: String,

    /// Show no progress bar and no status messages (results and errors are
    /// still printed)
    #[arg(long, short, global = true)]
    pub quiet: bool,

    /// Encrypt the connection with TLS, checking the server's certificate
    /// against the system's trusted roots (or --ca)
    #[arg(long, global = true)]
    pub tls: bool,

    /// Trust the certificates in this PEM file (a private CA, or the
    /// server's self-signed certificate) instead of the system's roots;
    /// implies --tls
    #[arg(long, global = true, value_name = "PEM")]
    pub ca: Option<PathBuf>,

    /// Read the access token from the first non-blank line of this file (overrides
    /// $FRAMEKIT_TOKEN)
    #[arg(long, global = true, value_name = "PATH")]
    pub token_file: Option<PathBuf>,

    /// What to do
    #[command(subcommand)]
    pub command: Command,
}

/// The client's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Upload a file
    ///
    /// On success, prints `put NAME: SIZE bytes, blake3 HASH` with the size
    /// and hash the server stored.
    Put(PutArgs),
    /// Download a file
    ///
    /// The file is written to a temporary file next to the destination,
    /// verified against the server's BLAKE3 hash, then renamed into place:
    /// the destination never holds a partial or corrupted file. Nothing is
    /// printed on stdout; a summary goes to stderr unless --quiet.
    Get(GetArgs),
    /// List remote files
    ///
    /// Prints one line per file: the size in bytes, a tab, the name.
    /// Control characters in names are escaped.
    List(ListArgs),
    /// Describe one remote file
    ///
    /// Prints the size in bytes, a tab, the name.
    Stat(StatArgs),
    /// Delete a remote file
    ///
    /// Nothing is printed on stdout; a confirmation goes to stderr unless
    /// --quiet.
    Delete(DeleteArgs),
}

/// Arguments of `put`.
#[derive(Debug, Args)]
pub struct PutArgs {
    /// The local file to upload
    pub file: PathBuf,

    /// The remote name (default: the file's base name); `/` separates
    /// directories, which the server creates
    #[arg(long, short)]
    pub name: Option<String>,

    /// Replace a remote file of the same name
    #[arg(long, short)]
    pub force: bool,
}

/// Arguments of `get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The remote name
    pub name: String,

    /// Where to save the file (default: its base name in the current
    /// directory); if PATH is an existing directory, the file is saved in
    /// it under its base name
    #[arg(long, short, value_name = "PATH")]
    pub output: Option<PathBuf>,

    /// Replace an existing local file
    #[arg(long, short)]
    pub force: bool,
}

/// Arguments of `list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// List only names that start with PREFIX (compared byte by byte, so
    /// `dir/` lists a directory)
    #[arg(default_value = "", hide_default_value = true)]
    pub prefix: String,
}

/// Arguments of `stat`.
#[derive(Debug, Args)]
pub struct StatArgs {
    /// The remote name
    pub name: String,
}

/// Arguments of `delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The remote name
    pub name: String,
}

/// The text after `client --help`: environment and exit codes.
fn after_help() -> String {
    let mut text = String::from(
        "Environment:\n  \
         FRAMEKIT_SERVER  the default for --server\n  \
         FRAMEKIT_TOKEN   the access token sent to the server, if it requires one\n\n\
         Exit codes:\n",
    );
    for exit in Exit::ALL {
        text.push_str(&format!("  {}  {}\n", exit.code(), exit.description()));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_lists_every_exit_code() {
        let help = Cli::command().render_long_help().to_string();
        for exit in Exit::ALL {
            let line = format!("  {}  {}", exit.code(), exit.description());
            assert!(help.contains(&line), "{line:?} missing from\n{help}");
        }
    }

    #[test]
    fn options_are_accepted_after_the_subcommand() {
        let cli = Cli::try_parse_from([
            "client", "get", "a/b", "--server", "h:1", "-q", "-o", "x", "--force",
        ])
        .unwrap();
        assert_eq!(cli.server, "h:1");
        assert!(cli.quiet);
        let Command::Get(get) = cli.command else {
            panic!("{:?}", cli.command)
        };
        assert_eq!(get.name, "a/b");
        assert_eq!(get.output, Some(PathBuf::from("x")));
        assert!(get.force);
    }

    #[test]
    fn list_prefix_is_optional() {
        let cli = Cli::try_parse_from(["client", "list"]).unwrap();
        let Command::List(list) = cli.command else {
            panic!("{:?}", cli.command)
        };
        assert_eq!(list.prefix, "");
    }
}
