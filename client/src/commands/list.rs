//! `client list [PREFIX]`: one line per file, `SIZE<TAB>NAME`.

use super::print_entry;
use crate::cli::ListArgs;
use crate::connect::{ConnectOptions, connect};
use crate::error::ClientError;
use std::io::Write;

pub(super) fn run(
    server: &str,
    options: &ConnectOptions,
    args: &ListArgs,
    out: &mut dyn Write,
) -> Result<(), ClientError> {
    let mut session = connect(server, options)?;
    session.list(&args.prefix, |entry| print_entry(out, &entry))?;
    Ok(())
}
