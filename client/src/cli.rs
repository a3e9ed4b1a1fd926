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

    /// Print nothing but errors: no progress bar, no result lines, no
    /// summary (what list and stat are asked for, and --json records, are
    /// still printed)
    #[arg(long, short, global = true)]
    pub quiet: bool,

    /// Print results as JSON, one object per line, on stdout (list, stat,
    /// put, get)
    #[arg(long, global = true)]
    pub json: bool,

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

    /// Give up at once when the server is busy, instead of trying again
    /// for up to 20 s with growing pauses
    #[arg(long, global = true)]
    pub no_retry: bool,

    /// What to do
    #[command(subcommand)]
    pub command: Command,
}

/// The client's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Upload files and directories
    ///
    /// On success, prints `put NAME: SIZE bytes, blake3 HASH` for each file,
    /// with the size and hash the server stored (`put NAME: unchanged,
    /// ...` for a file the server already holds, identical, which is not
    /// sent again). A directory is uploaded with everything in it, its
    /// empty directories included, over one connection; so are several
    /// files. An upload of a file over 64 KiB that is interrupted is kept
    /// by the server, and the next put of the same file under the same
    /// name sends only the rest. `put - --name NAME` uploads standard
    /// input.
    Put(PutArgs),
    /// Download files and directories
    ///
    /// Each file is written to DEST.part next to its destination (with
    /// DEST.part.meta, which says what it is a copy of), verified against
    /// the server's BLAKE3 hash, then renamed into place: the destination
    /// never holds a partial or corrupted file. An interrupted download
    /// leaves DEST.part, and the next get of the same name to the same
    /// destination continues it if the remote file has not changed. A NAME
    /// that is a directory (or ends with /) is downloaded with everything
    /// in it. A file that is already there, identical, is not downloaded
    /// again. Nothing is printed on stdout (but with --json); a summary
    /// goes to stderr unless --quiet. `get NAME -o -` writes the file to
    /// standard output.
    Get(GetArgs),
    /// List remote files and directories
    ///
    /// Prints one line per name: the size in bytes, a tab, the name; a
    /// directory as `-`, a tab, its name and a `/`. Control characters in
    /// names are escaped.
    List(ListArgs),
    /// Describe one remote file or directory
    ///
    /// Prints `name:`, `kind:` (file or dir), and for a file `size:`,
    /// `modified:` (RFC 3339, UTC) and `blake3:`, one per line.
    Stat(StatArgs),
    /// Delete remote files and directories
    ///
    /// A directory is deleted if it is empty, or with everything in it
    /// with -r. Nothing is printed on stdout; a confirmation goes to
    /// stderr unless --quiet.
    Delete(DeleteArgs),
    /// Rename a remote file or directory
    ///
    /// The move is atomic on the server: readers see the old name or the
    /// new one. An existing NEW is replaced only with --force. A NEW
    /// ending with / is a directory to move OLD into, under its base name.
    Mv(MvArgs),
    /// Print a shell completion script
    ///
    /// For example: `client completions bash >
    /// ~/.local/share/bash-completion/completions/client`.
    Completions(CompletionsArgs),
    /// Print the manual page (roff)
    ///
    /// For example: `client man > ~/.local/share/man/man1/client.1`.
    Man,
}

/// Arguments of `put`.
#[derive(Debug, Args)]
pub struct PutArgs {
    /// The local files and directories to upload; `-` alone is standard
    /// input, uploaded as --name
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,

    /// The remote name of the file or directory (default: its base name);
    /// with several, the remote directory to put them in. `/` separates
    /// directories, which the server creates
    #[arg(long, short)]
    pub name: Option<String>,

    /// Replace remote files of the same names
    #[arg(long, short)]
    pub force: bool,

    /// Send every file whole, and let the server keep nothing of an upload
    /// that is interrupted
    #[arg(long)]
    pub no_resume: bool,

    /// Follow symbolic links found in directories (they are skipped with a
    /// warning otherwise)
    #[arg(long, short = 'L')]
    pub follow_links: bool,

    /// Accepted for scp habits: directories are always uploaded with
    /// everything in them
    #[arg(long, short)]
    pub recursive: bool,
}

/// Arguments of `get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The remote names of files or directories (a name ending with / is a
    /// directory)
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,

    /// Where to save a file or directory (default: its base name in the
    /// current directory); if PATH is an existing directory, it is saved
    /// in it under its base name. With several names, PATH is a directory
    /// (created if missing) to save them all in. `-` writes one file to
    /// standard output
    #[arg(long, short, value_name = "PATH")]
    pub output: Option<PathBuf>,

    /// Replace existing local files
    #[arg(long, short)]
    pub force: bool,

    /// Download every file whole, discarding what an interrupted download
    /// left
    #[arg(long)]
    pub no_resume: bool,

    /// Accepted for scp habits: directories are always downloaded with
    /// everything in them
    #[arg(long, short)]
    pub recursive: bool,
}

/// Arguments of `list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// List only names that start with PREFIX (compared byte by byte, so
    /// `dir/` lists what is in a directory)
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
    /// The remote names (a name ending with / is a directory)
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,

    /// Delete directories with everything in them
    #[arg(long, short)]
    pub recursive: bool,
}

/// Arguments of `mv`.
#[derive(Debug, Args)]
pub struct MvArgs {
    /// The current remote name
    #[arg(value_name = "OLD")]
    pub from: String,

    /// The new remote name; ending with /, the directory to move OLD into
    #[arg(value_name = "NEW")]
    pub to: String,

    /// Replace a file already at NEW
    #[arg(long, short)]
    pub force: bool,
}

/// Arguments of `completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
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
        assert_eq!(get.names, ["a/b"]);
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
