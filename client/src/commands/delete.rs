//! `client delete NAME`: a confirmation on stderr unless `--quiet`.

use crate::cli::DeleteArgs;
use crate::connect::{ConnectOptions, connect};
use crate::error::ClientError;
use crate::escape::Escaped;

pub(super) fn run(
    server: &str,
    options: &ConnectOptions,
    args: &DeleteArgs,
    status: bool,
) -> Result<(), ClientError> {
    let mut session = connect(server, options)?;
    session.delete(&args.name)?;
    if status {
        eprintln!("deleted {}", Escaped(&args.name));
    }
    Ok(())
}
