//! The framekit file-transfer client, as a library.
//!
//! The `client` binary parses its command line into a [`cli::Cli`] and
//! hands it to [`run`]. Everything else is usable on its own:
//!
//! - [`session::Session`] speaks the protocol over any `Read + Write`
//!   stream (TCP, TLS, an in-memory peer): handshake, put (of a known or
//!   unknown length), get, list, stat, describe, delete, rename, with
//!   bodies streamed and hashed. It knows nothing of local files.
//! - [`connect::connect`] opens a session over TCP with the right socket
//!   options and timeouts.
//! - [`files`] is the local side: it uploads a local file and saves a
//!   download atomically (partial file, verification, fsync, rename), and
//!   resumes either after an interruption; [`files::hashes`] keeps the
//!   hashes of local files between runs.
//! - [`error::ClientError`] says what went wrong, and
//!   [`error::Exit`] which exit code that is.
//! - [`escape::Escaped`] prints text from the server safely.

pub mod cli;
mod commands;
pub mod connect;
pub mod error;
pub mod escape;
pub mod files;
#[cfg(fuzzing)]
pub mod fuzzing;
pub mod progress;
pub mod session;
pub mod tls;

#[cfg(test)]
mod tests;

pub use commands::run;
pub use error::{ClientError, Exit};
