//! `client delete [-r] NAME...`: files, and directories (empty ones, or
//! whole with `-r`); a confirmation on stderr for each unless `--quiet`.

use super::output::Ui;
use crate::Exit;
use crate::cli::DeleteArgs;
use crate::connect::ConnectOptions;
use crate::error::ClientError;
use crate::escape::Escaped;
use crate::session::Session;
use framekit_transfer::ErrorCode;
use std::io::{Read, Write};

use super::set::Link;

pub(super) fn run(
    server: &str,
    options: &ConnectOptions,
    args: &DeleteArgs,
    ui: Ui,
) -> Result<(), ClientError> {
    let mut link = Link::new(server, options);
    if let [name] = args.names.as_slice() {
        let deleted = delete(link.session()?, name, args.recursive)?;
        if ui.status {
            eprintln!("deleted {deleted}");
        }
        return Ok(());
    }
    let mut failed = 0;
    for name in &args.names {
        let result = link
            .session()
            .and_then(|session| delete(session, name, args.recursive));
        match result {
            Ok(deleted) if ui.status => eprintln!("deleted {deleted}"),
            Ok(_) => {}
            // Without a connection nothing more can be done.
            Err(e) if e.exit() == Exit::Connection => return Err(e),
            Err(e) => {
                failed += 1;
                eprintln!("error: {}: {}", Escaped(name), e.report());
            }
        }
    }
    match failed {
        0 => Ok(()),
        failed => Err(ClientError::SomeFailed {
            what: "deletions",
            failed,
            total: args.names.len(),
        }),
    }
}

/// Deletes `name`: a file, or a directory (a name ending with `/` is one).
/// Returns what was deleted, for the confirmation.
fn delete<S: Read + Write>(
    session: &mut Session<S>,
    name: &str,
    recursive: bool,
) -> Result<String, ClientError> {
    if let Some(dir) = name.strip_suffix('/') {
        session.delete_dir(dir, recursive)?;
        return Ok(format!("{}/", Escaped(dir)));
    }
    match session.delete(name) {
        Ok(()) => Ok(Escaped(name).to_string()),
        // Perhaps a directory.
        Err(ClientError::Refused { reply, .. }) if reply.code == ErrorCode::NotAFile => {
            session.delete_dir(name, recursive)?;
            Ok(format!("{}/", Escaped(name)))
        }
        Err(e) => Err(e),
    }
}
