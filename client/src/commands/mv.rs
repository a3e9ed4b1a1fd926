//! `client mv OLD NEW [--force]`: a rename on the server, in one step.

use super::output::Ui;
use crate::cli::MvArgs;
use crate::connect::{ConnectOptions, connect};
use crate::error::ClientError;
use crate::escape::Escaped;

pub(super) fn run(
    server: &str,
    options: &ConnectOptions,
    args: &MvArgs,
    ui: Ui,
) -> Result<(), ClientError> {
    let from = args.from.trim_end_matches('/');
    // `mv a d/` moves a into d, as mv does.
    let to = match args.to.strip_suffix('/') {
        Some(dir) => {
            let base = from.rsplit('/').next().unwrap_or(from);
            format!("{}/{base}", dir.trim_end_matches('/'))
        }
        None => args.to.clone(),
    };
    let mut session = connect(server, options)?;
    session.rename(from, &to, args.force)?;
    if ui.status {
        eprintln!("renamed {} -> {}", Escaped(from), Escaped(&to));
    }
    Ok(())
}
