//! `client stat NAME`: a file's name, size, modification time and BLAKE3
//! hash, or a directory's name; one `key: value` per line, or a JSON
//! record.

use super::output::{NameRecord, Ui, json_line};
use crate::cli::StatArgs;
use crate::connect::{ConnectOptions, connect};
use crate::error::ClientError;
use std::io::Write;

pub(super) fn run(
    server: &str,
    options: &ConnectOptions,
    args: &StatArgs,
    ui: Ui,
    out: &mut dyn Write,
) -> Result<(), ClientError> {
    let mut session = connect(server, options)?;
    let print = |out: &mut dyn Write, record: NameRecord<'_>| match ui.json {
        true => json_line(out, &record),
        false => write!(out, "{}", record.stat_lines()).map_err(ClientError::Output),
    };
    match session.describe(&args.name) {
        Ok(remote) => print(out, NameRecord::of_remote(&remote)),
        // A server that predates descriptions: no hash, files only.
        Err(ClientError::TooOld { .. }) => {
            let entry = connect(server, options)?.stat(&args.name)?;
            print(out, NameRecord::of_entry(&entry))
        }
        Err(e) => Err(e),
    }
}
