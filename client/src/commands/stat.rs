//! `client stat NAME`: the file's line, as `list` prints it.

use super::print_entry;
use crate::cli::StatArgs;
use crate::connect::{ConnectOptions, connect};
use crate::error::ClientError;
use std::io::Write;

pub(super) fn run(
    server: &str,
    options: &ConnectOptions,
    args: &StatArgs,
    out: &mut dyn Write,
) -> Result<(), ClientError> {
    let mut session = connect(server, options)?;
    let entry = session.stat(&args.name)?;
    print_entry(out, &entry)
}
