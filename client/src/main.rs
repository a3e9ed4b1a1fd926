//! `client`: put, get, list, stat and delete files on a framekit server.
//!
//! Exit codes are listed in `client --help` and documented on
//! [`framekit_client::Exit`].

use clap::Parser;
use framekit_client::cli::Cli;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut stdout = std::io::stdout().lock();
    match framekit_client::run(&cli, &mut stdout) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output went away (`client list | head`): not
        // an error worth a message.
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.report());
            e.exit().into()
        }
    }
}
