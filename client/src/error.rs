//! The client's errors and the exit codes they map to.

use crate::escape::Escaped;
use framekit_transfer::{ErrorCode, ErrorReply, Hash, NameError, Operation};
use std::error::Error as _;
use std::fmt;
use std::io;
use std::path::PathBuf;

/// The exit status of the `client` binary.
///
/// | code | meaning |
/// |-----:|---------|
/// | 0 | success |
/// | 1 | any other failure (an internal error, stdout unwritable) |
/// | 2 | usage: invalid arguments or options |
/// | 3 | connection failed: connect refused or timed out, handshake failed, the connection was lost or closed by the server, the server went silent |
/// | 4 | not found: the remote file does not exist |
/// | 5 | already exists: the remote file (put without `--force`) or the local destination (get without `--force`) |
/// | 6 | integrity mismatch: the content's BLAKE3 hash differs from the one announced, on either side |
/// | 7 | refused: the server refused the request for another reason (invalid name, too large, busy, unauthorized, forbidden, no space, ...) or broke the protocol; names the client can tell are invalid are refused with this code before anything is sent |
/// | 8 | local file error: the file to put cannot be read or changed while it was sent, the destination of a get cannot be written |
/// | 9 | some failed: a put or get of several files or of a directory, or a delete of several names, went on after some of them failed, each reported on its own `error:` line |
///
/// The codes are stable: scripts may rely on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Exit {
    /// 0: the command succeeded.
    Success,
    /// 1: any failure without a more specific code.
    Other,
    /// 2: invalid arguments (clap reports these itself).
    Usage,
    /// 3: the connection could not be made or did not last.
    Connection,
    /// 4: the remote file does not exist.
    NotFound,
    /// 5: the target of the operation already exists.
    AlreadyExists,
    /// 6: a hash did not match.
    Integrity,
    /// 7: the server refused the request, or broke the protocol.
    Refused,
    /// 8: a local file could not be read or written.
    LocalFile,
    /// 9: some transfers of a set (or deletions of several names) failed,
    /// the others were done.
    SomeFailed,
}

impl Exit {
    /// Every exit status, in code order.
    pub const ALL: &[Exit] = &[
        Exit::Success,
        Exit::Other,
        Exit::Usage,
        Exit::Connection,
        Exit::NotFound,
        Exit::AlreadyExists,
        Exit::Integrity,
        Exit::Refused,
        Exit::LocalFile,
        Exit::SomeFailed,
    ];

    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Other => 1,
            Exit::Usage => 2,
            Exit::Connection => 3,
            Exit::NotFound => 4,
            Exit::AlreadyExists => 5,
            Exit::Integrity => 6,
            Exit::Refused => 7,
            Exit::LocalFile => 8,
            Exit::SomeFailed => 9,
        }
    }

    /// A few words describing the status, as printed in `client --help`.
    pub fn description(self) -> &'static str {
        match self {
            Exit::Success => "success",
            Exit::Other => "other error",
            Exit::Usage => "usage error (invalid arguments)",
            Exit::Connection => "connection failed, lost, or timed out; handshake failed",
            Exit::NotFound => "remote file not found",
            Exit::AlreadyExists => "already exists (remote file, or local destination)",
            Exit::Integrity => "integrity mismatch (BLAKE3 hash differs)",
            Exit::Refused => {
                "refused by the server (invalid name, too large, busy, unauthorized, ...) \
                 or protocol error"
            }
            Exit::LocalFile => "local file cannot be read or written",
            Exit::SomeFailed => {
                "some of several files, directories or names failed (each reported), \
                 the others were done"
            }
        }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        std::process::ExitCode::from(exit.code())
    }
}

/// What a server's refusal answered: the handshake, or a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// The handshake, which is not a request.
    Handshake,
    /// A request, by its operation.
    Request(Operation),
}

impl From<Operation> for Step {
    fn from(op: Operation) -> Self {
        Step::Request(op)
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Handshake => f.write_str("handshake"),
            Step::Request(op) => op.fmt(f),
        }
    }
}

/// A feature that needs a request older servers do not know: they
/// answer it as a malformed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Feature {
    /// Creating and listing directories (`MakeDir`, `Tree`).
    Directories,
    /// Deleting directories (`DeleteDir`).
    DeleteDir,
    /// Renaming (`Rename`).
    Rename,
    /// Describing a name with its hash (`Describe`).
    Describe,
    /// Listing directories with files (`ListAll`).
    ListAll,
    /// Uploads of unknown length (`PutStream`).
    PutStream,
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Feature::Directories => "directories",
            Feature::DeleteDir => "deleting directories",
            Feature::Rename => "renaming",
            Feature::Describe => "hashes of stored files",
            Feature::ListAll => "listing directories",
            Feature::PutStream => "uploads from standard input",
        })
    }
}

/// The server broke the protocol.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A frame could not be read as the expected message (bad length,
    /// undecodable content).
    #[error("malformed message from the server")]
    Malformed(#[source] framekit_codec::Error),
    /// A valid message arrived where another was expected.
    #[error("the server sent {got} while {expected} was expected")]
    Unexpected {
        /// What the client was waiting for.
        expected: &'static str,
        /// What arrived.
        got: &'static str,
    },
    /// The server answered the plain-text handshake with TLS.
    #[error("the server speaks TLS: connect with --tls")]
    TlsAnswer,
    /// The server speaks another protocol version.
    #[error("the server answered with protocol version {got}, this client speaks {ours}")]
    Version {
        /// The version in the server's welcome.
        got: u16,
        /// This client's version.
        ours: u16,
    },
    /// A body offset the client did not ask for, or past the file's end.
    #[error("the server announced a body starting at byte {offset} of {size}, expected {expected}")]
    Offset {
        /// Where the server said the body starts.
        offset: u64,
        /// The file's size.
        size: u64,
        /// Where the client asked it to start.
        expected: u64,
    },
    /// The server stored a different number of bytes than were sent.
    #[error("the server stored {stored} bytes, {sent} were sent")]
    StoredSize {
        /// The size in the server's confirmation.
        stored: u64,
        /// The size of the upload.
        sent: u64,
    },
    /// A directory listing holds more names than the client accepts.
    #[error("the server's listing is over {limit} bytes of names")]
    ListingTooLarge {
        /// The most bytes of names accepted.
        limit: usize,
    },
    /// A listing's announced count differs from the entries received.
    #[error("the server announced {announced} entries and sent {received}")]
    ListCount {
        /// The count in the end-of-list message.
        announced: u64,
        /// Entries received.
        received: u64,
    },
}

/// Everything that can make a client command fail.
///
/// Each error maps to an [`Exit`] status through [`ClientError::exit`].
/// Display messages do not repeat their source: print the whole chain, as
/// [`ClientError::report`] does.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server address could not be resolved or connected to.
    #[error("cannot connect to {addr}")]
    Connect {
        /// The address as given.
        addr: String,
        /// Why.
        source: io::Error,
    },
    /// The peer answered the handshake with something that is not
    /// framekit.
    #[error("the server did not answer the handshake as a framekit server")]
    Handshake(#[source] ProtocolError),
    /// The server closed the connection while an answer was awaited.
    #[error("the server closed the connection")]
    Closed,
    /// The server closed the connection in the middle of a file body.
    #[error("the server closed the connection after {received} of {expected} body bytes")]
    Truncated {
        /// Body bytes received.
        received: u64,
        /// Body bytes announced.
        expected: u64,
    },
    /// The server did not answer within the read timeout, or did not take
    /// what was sent within the write timeout.
    #[error("the server stopped responding (timed out)")]
    TimedOut,
    /// Reading from or writing to the connection failed.
    #[error("connection to the server lost")]
    Io(#[source] io::Error),
    /// The server broke the protocol.
    #[error("protocol error")]
    Protocol(#[from] ProtocolError),
    /// The server refused the request.
    #[error("the server refused the {step}: {}: {}", .reply.code, Escaped(&.reply.message))]
    Refused {
        /// What was refused.
        step: Step,
        /// The server's answer.
        reply: ErrorReply,
    },
    /// The server does not know the request a feature needs.
    #[error(
        "the server is too old for {feature} (it does not know the request: {})",
        Escaped(&.reply.message)
    )]
    TooOld {
        /// What was asked for.
        feature: Feature,
        /// The server's answer.
        reply: ErrorReply,
    },
    /// A remote file exists with other content than the local one, and
    /// `--force` was not given.
    #[error("\"{}\" exists on the server with other content (use --force to replace it)", Escaped(.name))]
    RemoteDiffers {
        /// The remote name.
        name: String,
    },
    /// A BLAKE3 hash did not match the content.
    #[error(
        "integrity mismatch: the content hashes to {}, the server announced {}",
        hex(.actual),
        hex(.expected)
    )]
    Integrity {
        /// The hash the server announced.
        expected: Hash,
        /// The hash of the content sent or received.
        actual: Hash,
    },
    /// A remote name breaks the protocol's rules.
    #[error("invalid remote name \"{}\"", Escaped(.name))]
    InvalidName {
        /// The name.
        name: String,
        /// Which rule it breaks.
        source: NameError,
    },
    /// A name the server listed is not below the directory asked for.
    #[error("the server listed \"{}\", which is not below \"{}/\"", Escaped(.name), Escaped(.dir))]
    Outside {
        /// The name.
        name: String,
        /// The directory asked for.
        dir: String,
    },
    /// No remote name can be derived from a local path.
    #[error(
        "cannot use the file name of {} as a remote name (none, or not UTF-8): give one with --name",
        .path.display()
    )]
    NoRemoteName {
        /// The local path.
        path: PathBuf,
    },
    /// The local destination of a get exists and `--force` was not given.
    #[error("{} already exists (use --force to replace it)", .path.display())]
    DestinationExists {
        /// The destination.
        path: PathBuf,
    },
    /// A local file could not be read, written or published.
    #[error("{action} {}", .path.display())]
    Local {
        /// What was being done, e.g. "cannot read".
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file being uploaded changed size while it was read.
    #[error(
        "{} changed while it was sent: {} bytes announced, {}",
        .path.display(),
        .announced,
        ReadCount(*.read)
    )]
    FileChanged {
        /// The file.
        path: PathBuf,
        /// The size sent to the server.
        announced: u64,
        /// How many bytes could be read, when fewer than announced; `None`
        /// when the file grew.
        read: Option<u64>,
    },
    /// A body chunk went past the announced size (a bug in the caller).
    #[error("{extra} bytes more than the announced {size}-byte body")]
    BodyOverrun {
        /// The announced body size.
        size: u64,
        /// The excess.
        extra: u64,
    },
    /// A transfer was finished before all of its body was sent or read (a
    /// bug in the caller).
    #[error("transfer finished after {transferred} of {expected} body bytes")]
    BodyIncomplete {
        /// Body bytes sent or read.
        transferred: u64,
        /// Body bytes announced.
        expected: u64,
    },
    /// An earlier failure left the connection in the middle of a transfer.
    #[error("the connection is unusable after an earlier failure")]
    Unusable,
    /// The library was used against its rules (a bug in the caller).
    #[error("{0} (a bug in the caller)")]
    Misuse(&'static str),
    /// Some transfers of a set failed; each was reported.
    #[error("{failed} of {total} {what} failed")]
    SomeFailed {
        /// What they were: "transfers", "deletions".
        what: &'static str,
        /// How many failed.
        failed: usize,
        /// How many there were.
        total: usize,
    },
    /// A request could not be encoded (too large for a frame).
    #[error("cannot encode the request")]
    Encode(#[source] framekit_codec::Error),
    /// Arguments that go together badly (those clap cannot check).
    #[error("{0}")]
    Usage(&'static str),
    /// `$FRAMEKIT_TOKEN` is not valid UTF-8.
    #[error("$FRAMEKIT_TOKEN is not valid UTF-8")]
    TokenNotUtf8,
    /// The TLS handshake failed.
    #[error("TLS with {addr} failed: {reason}")]
    Tls {
        /// The server address.
        addr: String,
        /// What went wrong, in words.
        reason: String,
    },
    /// The certificates to trust could not be loaded.
    #[error("cannot use {} as trusted certificates: {reason}", .path.display())]
    Ca {
        /// The file (or store) they were read from.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Writing results to standard output failed.
    #[error("cannot write to standard output")]
    Output(#[source] io::Error),
}

impl ClientError {
    /// The exit status this error ends the program with.
    pub fn exit(&self) -> Exit {
        match self {
            ClientError::Connect { .. }
            | ClientError::Handshake(_)
            | ClientError::Closed
            | ClientError::Truncated { .. }
            | ClientError::TimedOut
            | ClientError::Tls { .. }
            | ClientError::Io(_) => Exit::Connection,
            ClientError::Refused { reply, .. } => match reply.code {
                ErrorCode::NotFound => Exit::NotFound,
                ErrorCode::AlreadyExists => Exit::AlreadyExists,
                ErrorCode::IntegrityMismatch => Exit::Integrity,
                _ => Exit::Refused,
            },
            ClientError::Protocol(_)
            | ClientError::TooOld { .. }
            | ClientError::Outside { .. }
            | ClientError::InvalidName { .. }
            | ClientError::NoRemoteName { .. } => Exit::Refused,
            ClientError::Integrity { .. } => Exit::Integrity,
            ClientError::DestinationExists { .. } | ClientError::RemoteDiffers { .. } => {
                Exit::AlreadyExists
            }
            ClientError::Local { .. }
            | ClientError::FileChanged { .. }
            | ClientError::Ca { .. } => Exit::LocalFile,
            ClientError::TokenNotUtf8 | ClientError::Usage(_) => Exit::Usage,
            ClientError::SomeFailed { .. } => Exit::SomeFailed,
            ClientError::BodyOverrun { .. }
            | ClientError::BodyIncomplete { .. }
            | ClientError::Unusable
            | ClientError::Misuse(_)
            | ClientError::Encode(_)
            | ClientError::Output(_) => Exit::Other,
        }
    }

    /// The error and its sources on one line, separated by `: `, then
    /// what to do about it, when that can be told.
    pub fn report(&self) -> String {
        let mut line = self.to_string();
        let mut source = self.source();
        while let Some(cause) = source {
            line.push_str(": ");
            line.push_str(&cause.to_string());
            source = cause.source();
        }
        if let Some(hint) = self.hint() {
            line.push_str(hint);
        }
        // Sources are not supposed to span lines; make sure of it.
        line.replace(['\n', '\r'], " ")
    }

    /// What the user can do about the error, when it is clear.
    fn hint(&self) -> Option<&'static str> {
        match self {
            ClientError::Connect { source, .. } => Some(match source.kind() {
                io::ErrorKind::ConnectionRefused => {
                    " (nothing is listening there: is the server running? \
                     Check --server or $FRAMEKIT_SERVER)"
                }
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
                    " (no answer: check --server or $FRAMEKIT_SERVER, and that the host \
                     is reachable)"
                }
                _ => " (check --server or $FRAMEKIT_SERVER)",
            }),
            ClientError::Refused { step, reply } => match (reply.code, step) {
                (ErrorCode::AlreadyExists, Step::Request(Operation::Put | Operation::Rename)) => {
                    Some(" (use --force to replace it)")
                }
                (ErrorCode::NotEmpty, Step::Request(Operation::Delete)) => {
                    Some(" (use -r to delete it with everything in it)")
                }
                _ => None,
            },
            _ => None,
        }
    }

    /// A refusal of a request the server does not know (a malformed
    /// request, to a server that predates it) as [`ClientError::TooOld`];
    /// any other error as it is.
    pub(crate) fn too_old(self, feature: Feature) -> Self {
        match self {
            ClientError::Refused { reply, .. } if reply.code == ErrorCode::BadRequest => {
                ClientError::TooOld { feature, reply }
            }
            other => other,
        }
    }

    /// Whether this is a failure to write to a closed standard output
    /// (`client list | head -1`), which is not worth reporting.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, ClientError::Output(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }

    /// A connection-level I/O error: a timeout is reported as such.
    pub(crate) fn io(error: io::Error) -> Self {
        match error.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ClientError::TimedOut,
            _ => ClientError::Io(error),
        }
    }

    /// An error reading a message from the server.
    pub(crate) fn read(error: framekit_codec::Error) -> Self {
        match error {
            framekit_codec::Error::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                ClientError::Closed
            }
            framekit_codec::Error::Io(e) => ClientError::io(e),
            framekit_codec::Error::Truncated { .. } => ClientError::Closed,
            other => ClientError::Protocol(ProtocolError::Malformed(other)),
        }
    }

    /// An error writing a message to the server.
    pub(crate) fn write(error: framekit_codec::Error) -> Self {
        match error {
            framekit_codec::Error::Io(e) => ClientError::io(e),
            other => ClientError::Encode(other),
        }
    }
}

/// A hash as lowercase hexadecimal.
pub(crate) fn hex(hash: &Hash) -> String {
    blake3::Hash::from_bytes(*hash).to_hex().to_string()
}

/// How much of a changed file could be read.
struct ReadCount(Option<u64>);

impl fmt::Display for ReadCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(read) => write!(f, "only {read} could be read"),
            None => f.write_str("more could be read"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_distinct_and_in_order() {
        for (i, exit) in Exit::ALL.iter().enumerate() {
            assert_eq!(usize::from(exit.code()), i, "{exit:?}");
        }
    }

    #[test]
    fn server_error_codes_map_to_their_exit_codes() {
        let refused = |code| ClientError::Refused {
            step: Operation::Put.into(),
            reply: ErrorReply::new(code, "x"),
        };
        assert_eq!(refused(ErrorCode::NotFound).exit(), Exit::NotFound);
        assert_eq!(
            refused(ErrorCode::AlreadyExists).exit(),
            Exit::AlreadyExists
        );
        assert_eq!(
            refused(ErrorCode::IntegrityMismatch).exit(),
            Exit::Integrity
        );
        for code in [
            ErrorCode::BadRequest,
            ErrorCode::BadMagic,
            ErrorCode::UnsupportedVersion,
            ErrorCode::Unauthorized,
            ErrorCode::Forbidden,
            ErrorCode::InvalidName,
            ErrorCode::TooLarge,
            ErrorCode::NoSpace,
            ErrorCode::NotAFile,
            ErrorCode::Busy,
            ErrorCode::ShuttingDown,
            ErrorCode::Timeout,
            ErrorCode::Internal,
            ErrorCode::Other(999),
        ] {
            assert_eq!(refused(code).exit(), Exit::Refused, "{code:?}");
        }
    }

    #[test]
    fn a_server_message_cannot_drive_the_terminal() {
        let error = ClientError::Refused {
            step: Operation::Get.into(),
            reply: ErrorReply::new(ErrorCode::NotFound, "no \u{1b}[2Jfile\nhere"),
        };
        let line = error.report();
        assert_eq!(
            line,
            "the server refused the get: not found: no \\u{1b}[2Jfile\\nhere"
        );
    }

    #[test]
    fn a_refusal_names_the_handshake_or_the_operation_refused() {
        let refused = |step: Step| {
            ClientError::Refused {
                step,
                reply: ErrorReply::new(ErrorCode::Forbidden, "no"),
            }
            .report()
        };
        assert_eq!(
            refused(Step::Handshake),
            "the server refused the handshake: forbidden: no"
        );
        let names: Vec<String> = Operation::ALL
            .into_iter()
            .map(|op| refused(op.into()))
            .collect();
        assert_eq!(
            names,
            [
                "the server refused the put: forbidden: no",
                "the server refused the get: forbidden: no",
                "the server refused the list: forbidden: no",
                "the server refused the stat: forbidden: no",
                "the server refused the delete: forbidden: no",
                "the server refused the directory creation: forbidden: no",
                "the server refused the directory listing: forbidden: no",
                "the server refused the rename: forbidden: no",
            ]
        );
    }

    #[test]
    fn report_chains_sources_on_one_line() {
        let error = ClientError::Connect {
            addr: "127.0.0.1:1".into(),
            source: io::Error::new(io::ErrorKind::ConnectionRefused, "refused"),
        };
        assert_eq!(
            error.report(),
            "cannot connect to 127.0.0.1:1: refused (nothing is listening there: \
             is the server running? Check --server or $FRAMEKIT_SERVER)"
        );
        assert_eq!(error.exit(), Exit::Connection);
    }

    #[test]
    fn refusals_that_an_option_overcomes_name_it() {
        let refused = |op: Operation, code| ClientError::Refused {
            step: op.into(),
            reply: ErrorReply::new(code, "x"),
        };
        assert_eq!(
            refused(Operation::Put, ErrorCode::AlreadyExists).report(),
            "the server refused the put: already exists: x (use --force to replace it)"
        );
        assert_eq!(
            refused(Operation::Delete, ErrorCode::NotEmpty).report(),
            "the server refused the delete: not empty: x (use -r to delete it with everything in it)"
        );
        assert_eq!(
            refused(Operation::Get, ErrorCode::NotFound).report(),
            "the server refused the get: not found: x"
        );
        let old = refused(Operation::Rename, ErrorCode::BadRequest).too_old(Feature::Rename);
        assert_eq!(
            old.report(),
            "the server is too old for renaming (it does not know the request: x)"
        );
        assert_eq!(old.exit(), Exit::Refused);
    }

    #[test]
    fn timeouts_are_reported_as_such() {
        let timeout = ClientError::io(io::Error::from(io::ErrorKind::WouldBlock));
        assert!(matches!(timeout, ClientError::TimedOut));
        let eof = ClientError::read(framekit_codec::Error::Truncated {
            received: 1,
            expected: None,
        });
        assert!(matches!(eof, ClientError::Closed));
    }
}
