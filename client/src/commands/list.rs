//! `client list [PREFIX]`: one line per name, `SIZE<TAB>NAME` for a file,
//! `-<TAB>NAME/` for a directory; or a JSON record each.

use super::output::{NameRecord, Ui, json_line};
use super::print_entry;
use crate::cli::ListArgs;
use crate::connect::{ConnectOptions, connect};
use crate::error::ClientError;
use std::io::Write;

pub(super) fn run(
    server: &str,
    options: &ConnectOptions,
    args: &ListArgs,
    ui: Ui,
    out: &mut dyn Write,
) -> Result<(), ClientError> {
    let mut session = connect(server, options)?;
    let listed = session.list_all(&args.prefix, |entry| {
        let record = NameRecord::of_tree(&entry);
        match ui.json {
            true => json_line(out, &record),
            false => writeln!(out, "{}", record.list_line()).map_err(ClientError::Output),
        }
    });
    match listed {
        Ok(_) => Ok(()),
        // Files only, from a server that predates listings with
        // directories.
        Err(ClientError::TooOld { .. }) => {
            if ui.status {
                eprintln!("note: the server is too old to list directories: files only");
            }
            let mut session = connect(server, options)?;
            session.list(&args.prefix, |entry| match ui.json {
                true => json_line(out, &NameRecord::of_entry(&entry)),
                false => print_entry(out, &entry),
            })?;
            Ok(())
        }
        Err(e) => Err(e),
    }
}
