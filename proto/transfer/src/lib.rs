//! The framekit file-transfer protocol: its messages, limits and name rules.
//!
//! Every message travels as one frame of [`frame_config`] (4-byte
//! big-endian length, at most [`MAX_MESSAGE_LEN`] bytes), encoded as
//! described in [`framekit_codec::message`]. File bodies are not framed: a header
//! message announces their exact size, the body follows as raw bytes, and a
//! [`Trailer`] frame with the BLAKE3 hash of the whole file closes it.
//!
//! ```text
//! client                                   server
//!   Hello{magic, version, token}  ------>
//!                                 <------  Response::Welcome | Response::Error
//!   Request::Put{name, size, ..}  ------>
//!                                 <------  Response::PutReady{offset} | Response::Error
//!   size - offset raw bytes       ------>
//!   Trailer{hash}                 ------>
//!                                 <------  Response::PutDone{size, hash} | Response::Error
//!   Request::PutEager{name, size} ------>
//!   size raw bytes                ------>
//!   Trailer{hash}                 ------>
//!                                 <------  Response::PutDone{size, hash} | Response::Error
//!   Request::Get{name, offset}    ------>
//!                                 <------  Response::GetReady{size, offset, ..} | Response::Error
//!                                 <------  size - offset raw bytes
//!                                 <------  Trailer{hash}
//!   Request::Tree{dir}            ------>
//!                                 <------  Response::Directory | Response::Entry (0 or more)
//!                                 <------  Response::ListEnd{count} | Response::Error
//!   Request::PutStream{name, ..}  ------>
//!                                 <------  Response::PutReady{offset: 0} | Response::Error
//!   chunks, then an empty one     ------>
//!   Trailer{hash}                 ------>
//!                                 <------  Response::PutDone{size, hash} | Response::Error
//! ```
//!
//! A body of unknown length ([`PutStream`]) travels as chunks: each a
//! 4-byte big-endian length (1 to [`MAX_CHUNK_LEN`]) and that many raw
//! bytes, ended by a chunk of length 0.
//!
//! Enums are encoded by variant index: new variants are only ever added at
//! the end, so a newer peer's messages stay decodable up to the new
//! variants, and the version in [`Hello`] tells each side what the other
//! understands. `PROTOCOL.md` at the repository root is the full contract.

use framekit_codec::frame::{Builder, FrameConfig, LengthPrefix};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The first bytes of every session: the client's [`Hello::magic`].
pub const MAGIC: [u8; 8] = *b"FRAMEKIT";

/// The protocol version this crate speaks.
pub const VERSION: u16 = 1;

/// The largest message frame either side sends or accepts.
pub const MAX_MESSAGE_LEN: usize = 64 * 1024;

/// The largest body of a [`PutEager`]: a larger one is a protocol
/// violation, and the server closes the connection.
pub const MAX_EAGER_BODY: u64 = 64 * 1024;

/// The largest chunk of a body of unknown length ([`PutStream`]).
pub const MAX_CHUNK_LEN: u32 = 1024 * 1024;

/// The port the server listens on by default.
pub const DEFAULT_PORT: u16 = 7878;

/// The longest file name, in bytes.
pub const MAX_NAME_LEN: usize = 1024;

/// The longest component of a file name (between slashes), in bytes.
pub const MAX_COMPONENT_LEN: usize = 255;

/// The top-level directory of the server's root reserved for its own use
/// (uploads in progress). No file name may start with it.
pub const RESERVED_NAME: &str = ".framekit";

/// A BLAKE3 hash.
pub type Hash = [u8; 32];

/// The framing of every protocol message.
pub fn frame_config() -> FrameConfig {
    Builder::new()
        .prefix(LengthPrefix::U32Be)
        .max_frame_length(MAX_MESSAGE_LEN)
        .config()
}

/// The client's first message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Always [`MAGIC`].
    pub magic: [u8; 8],
    /// The protocol version the client speaks.
    pub version: u16,
    /// An access token, for servers that require one.
    pub token: Option<String>,
}

impl Hello {
    /// A hello for this crate's version.
    pub fn new(token: Option<String>) -> Self {
        Hello {
            magic: MAGIC,
            version: VERSION,
            token,
        }
    }
}

// The token is a secret: keep it out of logs.
impl fmt::Display for Hello {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "hello v{}", self.version)
    }
}

/// The server's answer to a successful [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The protocol version the server speaks on this connection.
    pub version: u16,
    /// The largest file the server accepts, in bytes.
    pub max_file_size: u64,
    /// The largest message frame the server accepts.
    pub max_message_len: u32,
    /// How long the server waits for a silent peer before closing the
    /// connection, in milliseconds.
    pub idle_timeout_ms: u64,
    /// Whether this connection may only read (get, list, stat).
    pub read_only: bool,
}

/// A file's identity for resuming: it changes when the file is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileVersion {
    /// The file's size in bytes.
    pub size: u64,
    /// Its modification time, in nanoseconds since the Unix epoch.
    pub modified_ns: u64,
}

/// A request, sent by the client after the handshake. One connection
/// carries any number of requests, one after the other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Upload a file.
    Put(Put),
    /// Download a file.
    Get(Get),
    /// List files.
    List(List),
    /// Describe one file.
    Stat(Stat),
    /// Delete one file.
    Delete(Delete),
    /// Create a directory (and its missing parents).
    MakeDir(MakeDir),
    /// List everything under a directory, files and directories, at every
    /// depth.
    Tree(Tree),
    /// Upload a small file whose body follows at once.
    PutEager(PutEager),
    /// Move a file or directory to another name.
    Rename(Rename),
    /// Delete a directory, alone if empty or with everything in it.
    DeleteDir(DeleteDir),
    /// Describe one name, a file with its hash or a directory.
    Describe(Describe),
    /// List the files and directories whose names start with a prefix.
    ListAll(ListAll),
    /// Upload a file whose size is not known in advance.
    PutStream(PutStream),
}

impl Request {
    /// The operation this request asks for.
    pub fn operation(&self) -> Operation {
        match self {
            Request::Put(_) | Request::PutEager(_) | Request::PutStream(_) => Operation::Put,
            Request::Get(_) => Operation::Get,
            Request::List(_) | Request::ListAll(_) => Operation::List,
            Request::Stat(_) | Request::Describe(_) => Operation::Stat,
            Request::Delete(_) | Request::DeleteDir(_) => Operation::Delete,
            Request::MakeDir(_) => Operation::MakeDir,
            Request::Tree(_) => Operation::Tree,
            Request::Rename(_) => Operation::Rename,
        }
    }

    /// The name the request is about: a file or directory name (the old
    /// name of a rename), or a listing's prefix.
    pub fn subject(&self) -> &str {
        match self {
            Request::Put(Put { name, .. })
            | Request::PutEager(PutEager { name, .. })
            | Request::Get(Get { name, .. })
            | Request::Stat(Stat { name })
            | Request::Delete(Delete { name })
            | Request::MakeDir(MakeDir { name })
            | Request::DeleteDir(DeleteDir { name, .. })
            | Request::Describe(Describe { name })
            | Request::PutStream(PutStream { name, .. }) => name,
            Request::Rename(Rename { from, .. }) => from,
            Request::List(List { prefix }) | Request::ListAll(ListAll { prefix }) => prefix,
            Request::Tree(Tree { dir }) => dir,
        }
    }
}

/// What a request does, whatever its arguments: the one place that says
/// which operations exist, what they are called, and which of them change
/// what the server stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// An upload ([`Put`], [`PutEager`] or [`PutStream`]).
    Put,
    /// A download ([`Get`]).
    Get,
    /// A listing ([`List`] or [`ListAll`]).
    List,
    /// A description of one name ([`Stat`] or [`Describe`]).
    Stat,
    /// A deletion of a file or a directory ([`Delete`] or [`DeleteDir`]).
    Delete,
    /// A directory creation ([`MakeDir`]).
    MakeDir,
    /// A listing of a directory's tree ([`Tree`]).
    Tree,
    /// A move to another name ([`Rename`]).
    Rename,
}

impl Operation {
    /// Every operation.
    pub const ALL: [Operation; 8] = [
        Operation::Put,
        Operation::Get,
        Operation::List,
        Operation::Stat,
        Operation::Delete,
        Operation::MakeDir,
        Operation::Tree,
        Operation::Rename,
    ];

    /// A short name, as logs show it: `put`, `get`, `list`, `stat`,
    /// `delete`, `mkdir`, `tree`, `rename`.
    pub const fn name(self) -> &'static str {
        match self {
            Operation::Put => "put",
            Operation::Get => "get",
            Operation::List => "list",
            Operation::Stat => "stat",
            Operation::Delete => "delete",
            Operation::MakeDir => "mkdir",
            Operation::Tree => "tree",
            Operation::Rename => "rename",
        }
    }

    /// Whether the operation changes what the server stores: a read-only
    /// token may not perform it.
    pub const fn writes(self) -> bool {
        matches!(
            self,
            Operation::Put | Operation::Delete | Operation::MakeDir | Operation::Rename
        )
    }
}

/// What the operation is, in words: `put`, `get`, `list`, `stat`,
/// `delete`, `directory creation`, `directory listing`, `rename`.
impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::MakeDir => "directory creation",
            Operation::Tree => "directory listing",
            other => other.name(),
        })
    }
}

/// Upload `size` bytes as `name`.
///
/// The server answers [`Response::PutReady`] or [`Response::Error`]; only
/// after `PutReady { offset }` does the client send the `size - offset`
/// remaining body bytes, then a [`Trailer`] with the hash of the whole
/// file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Put {
    /// The remote name.
    pub name: String,
    /// The exact body size.
    pub size: u64,
    /// Replace an existing file of that name.
    pub overwrite: bool,
    /// A client-chosen identity of the local file's content; a server that
    /// keeps interrupted uploads continues one only for the same key, and
    /// says where in `PutReady::offset`. `None` always starts at 0.
    pub resume_key: Option<Hash>,
}

/// Upload a small file (at most [`MAX_EAGER_BODY`] bytes) in one go.
///
/// Unlike [`Put`], the client does not wait for a go-ahead: the `size` raw
/// body bytes follow the request at once, then a [`Trailer`]. The server
/// reads them all, whatever it then decides, and answers
/// [`Response::PutDone`] or [`Response::Error`]; a refusal leaves the
/// connection usable. A small file then costs one round trip, and a client
/// may send several before it reads their answers. Nothing is kept of an
/// interrupted eager upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutEager {
    /// The remote name.
    pub name: String,
    /// The exact body size, at most [`MAX_EAGER_BODY`].
    pub size: u64,
    /// Replace an existing file of that name.
    pub overwrite: bool,
}

/// Download `name`, starting at `offset`.
///
/// The server answers [`Response::GetReady`] or [`Response::Error`]. After
/// `GetReady { size, offset, .. }` it sends `size - offset` raw body bytes,
/// then a [`Trailer`] with the hash of the whole file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Get {
    /// The remote name.
    pub name: String,
    /// Where to start. Honoured only together with a matching `if_version`.
    pub offset: u64,
    /// The version the client's partial copy came from: if the file is no
    /// longer that version, the server starts over at 0.
    pub if_version: Option<FileVersion>,
}

/// List the files whose names start with `prefix` (all if empty).
///
/// The server answers one [`Response::Entry`] per file, in name order,
/// then [`Response::ListEnd`]; or [`Response::Error`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct List {
    /// A name prefix, compared byte by byte.
    pub prefix: String,
}

/// Describe `name`. The answer is a [`Response::Entry`] or an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stat {
    /// The remote name.
    pub name: String,
}

/// Delete `name`. The answer is [`Response::Deleted`] or an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delete {
    /// The remote name.
    pub name: String,
}

/// Create the directory `name`, and its missing parents. The answer is
/// [`Response::DirMade`] (also when the directory already existed) or an
/// error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MakeDir {
    /// The directory's name, checked like a file name.
    pub name: String,
}

/// List everything under the directory `dir` (the whole root if empty).
///
/// The server answers one [`Response::Directory`] per directory and one
/// [`Response::Entry`] per regular file, at every depth below `dir`
/// (not `dir` itself), a directory before what it holds; then
/// [`Response::ListEnd`] with the number of both. Or [`Response::Error`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    /// The directory, named like a file; empty for the root.
    pub dir: String,
}

/// Move the file or directory `from` to the name `to`, in one step. The
/// answer is [`Response::Renamed`] or an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rename {
    /// The current name.
    pub from: String,
    /// The new name; its missing parent directories are created.
    pub to: String,
    /// Replace a file already at `to`; without it, anything there makes
    /// the rename fail with [`ErrorCode::AlreadyExists`].
    pub overwrite: bool,
}

/// Delete the directory `name`. The answer is [`Response::Deleted`] or an
/// error ([`ErrorCode::NotEmpty`] for a directory that holds something
/// when `recursive` is false).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteDir {
    /// The directory's name.
    pub name: String,
    /// Delete everything in it too.
    pub recursive: bool,
}

/// Describe `name`: [`Response::Described`] for a regular file, with its
/// BLAKE3 hash, [`Response::Directory`] for a directory, or an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Describe {
    /// The remote name.
    pub name: String,
}

/// List the files and directories whose names start with `prefix` (all if
/// empty): one [`Response::Directory`] or [`Response::Entry`] each, in
/// byte order of the names (a directory's with a `/` appended), then
/// [`Response::ListEnd`]; or [`Response::Error`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListAll {
    /// A name prefix, compared byte by byte.
    pub prefix: String,
}

/// Upload a body of unknown length as `name`.
///
/// The server answers [`Response::PutReady`] (always at offset 0) or
/// [`Response::Error`]; only after `PutReady` does the client send the
/// body as chunks (each a 4-byte big-endian length from 1 to
/// [`MAX_CHUNK_LEN`] and that many raw bytes), then a chunk of length 0,
/// then a [`Trailer`]. Such an upload cannot be resumed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutStream {
    /// The remote name.
    pub name: String,
    /// Replace an existing file of that name.
    pub overwrite: bool,
}

/// Closes a file body, in both directions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trailer {
    /// The BLAKE3 hash of the whole file (not only the part sent after a
    /// resume offset).
    pub hash: Hash,
}

/// A file as listed by the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The file's name, relative to the served root.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its modification time, in nanoseconds since the Unix epoch.
    pub modified_ns: u64,
}

impl Entry {
    /// The file's identity for resuming.
    pub fn version(&self) -> FileVersion {
        FileVersion {
            size: self.size,
            modified_ns: self.modified_ns,
        }
    }
}

/// Everything the server sends as a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The handshake succeeded.
    Welcome(Welcome),
    /// The request (or handshake) failed.
    Error(ErrorReply),
    /// Go ahead with an upload: send the body from `offset` on.
    PutReady {
        /// Bytes of the file the server already holds from an interrupted
        /// upload with the same resume key; 0 for a fresh upload.
        offset: u64,
    },
    /// The upload was verified and published.
    PutDone {
        /// The file's size.
        size: u64,
        /// The BLAKE3 hash of the file.
        hash: Hash,
    },
    /// A download starts: `size - offset` raw bytes follow, then a trailer.
    GetReady {
        /// The file's total size.
        size: u64,
        /// Where the body starts.
        offset: u64,
        /// Its modification time, in nanoseconds since the Unix epoch.
        modified_ns: u64,
    },
    /// One file (for list and stat).
    Entry(Entry),
    /// The end of a listing.
    ListEnd {
        /// How many entries were sent.
        count: u64,
    },
    /// The file was deleted.
    Deleted,
    /// The directory exists now.
    DirMade,
    /// One directory (for tree, list-all and describe).
    Directory {
        /// The directory's full name, relative to the served root.
        name: String,
    },
    /// The name was moved.
    Renamed,
    /// One file, with its hash (for describe).
    Described(Description),
}

/// A file as described by the server, with its content's hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Description {
    /// The file's name, as asked.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its modification time, in nanoseconds since the Unix epoch.
    pub modified_ns: u64,
    /// The BLAKE3 hash of its content.
    pub hash: Hash,
}

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// What kind of failure.
    pub code: ErrorCode,
    /// A human-readable explanation.
    pub message: String,
}

impl ErrorReply {
    /// An error answer.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorReply {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

macro_rules! error_codes {
    ($($(#[$doc:meta])* $name:ident = $value:literal, $text:literal;)*) => {
        /// The kind of an [`ErrorReply`], encoded as a `u16`.
        ///
        /// Codes a peer does not know are kept as [`ErrorCode::Other`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(from = "u16", into = "u16")]
        pub enum ErrorCode {
            $($(#[$doc])* $name,)*
            /// A code this version does not know.
            Other(u16),
        }

        impl From<u16> for ErrorCode {
            fn from(value: u16) -> Self {
                match value {
                    $($value => ErrorCode::$name,)*
                    other => ErrorCode::Other(other),
                }
            }
        }

        impl From<ErrorCode> for u16 {
            fn from(code: ErrorCode) -> u16 {
                match code {
                    $(ErrorCode::$name => $value,)*
                    ErrorCode::Other(other) => other,
                }
            }
        }

        impl ErrorCode {
            /// Every known code.
            pub const ALL: &[ErrorCode] = &[$(ErrorCode::$name),*];

            /// A short lowercase name for the code.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$name => $text,)*
                    ErrorCode::Other(_) => "unknown error",
                }
            }
        }
    };
}

error_codes! {
    /// The peer broke the protocol (an unexpected or malformed message).
    BadRequest = 1, "bad request";
    /// The handshake did not start with [`MAGIC`].
    BadMagic = 2, "not a framekit client";
    /// The server does not speak the client's protocol version.
    UnsupportedVersion = 3, "unsupported version";
    /// A token is required and was missing or wrong.
    Unauthorized = 4, "unauthorized";
    /// The token does not allow this operation.
    Forbidden = 5, "forbidden";
    /// No file of that name.
    NotFound = 10, "not found";
    /// The file exists and overwriting was not requested.
    AlreadyExists = 11, "already exists";
    /// The name breaks the naming rules.
    InvalidName = 12, "invalid name";
    /// The file is larger than the server accepts.
    TooLarge = 13, "too large";
    /// The body's hash did not match the trailer.
    IntegrityMismatch = 14, "integrity mismatch";
    /// The server ran out of disk space.
    NoSpace = 15, "no space";
    /// The name is a directory, or a file stands where a directory is needed.
    NotAFile = 16, "not a file";
    /// The directory to delete on its own still holds something.
    NotEmpty = 17, "not empty";
    /// The server is at its connection limit.
    Busy = 20, "busy";
    /// The server is shutting down.
    ShuttingDown = 21, "shutting down";
    /// The peer was silent for too long.
    Timeout = 22, "timeout";
    /// Anything else that went wrong on the server.
    Internal = 30, "internal error";
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorCode::Other(code) => write!(f, "error code {code}"),
            known => f.write_str(known.as_str()),
        }
    }
}

/// Why a file name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// The name is empty.
    #[error("the name is empty")]
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`] bytes.
    #[error("the name is {0} bytes long, more than {MAX_NAME_LEN}")]
    TooLong(usize),
    /// The name starts with `/`.
    #[error("the name is an absolute path")]
    Absolute,
    /// The name has an empty component (`a//b`, or a trailing `/`).
    #[error("the name has an empty component")]
    EmptyComponent,
    /// The name has a `.` or `..` component.
    #[error("the name has a '.' or '..' component")]
    DotComponent,
    /// A component is longer than [`MAX_COMPONENT_LEN`] bytes.
    #[error("a component of the name is longer than {MAX_COMPONENT_LEN} bytes")]
    ComponentTooLong,
    /// The name contains a NUL byte.
    #[error("the name contains a NUL byte")]
    Nul,
    /// The name contains a backslash.
    #[error("the name contains a backslash")]
    Backslash,
    /// The name contains a control character.
    #[error("the name contains a control character")]
    Control,
    /// The name is in the server's reserved area.
    #[error("the name is reserved for the server's own use")]
    Reserved,
}

/// Checks a file name against the protocol's rules.
///
/// A valid name is a relative path of 1 to [`MAX_NAME_LEN`] bytes, made of
/// `/`-separated components that are each 1 to [`MAX_COMPONENT_LEN`] bytes,
/// none of them `.` or `..`, with no NUL, backslash or control character,
/// and not under [`RESERVED_NAME`].
///
/// ```
/// use framekit_transfer::{validate_name, NameError};
///
/// assert_eq!(validate_name("photos/2024/cat.jpg"), Ok(()));
/// assert_eq!(validate_name("../etc/passwd"), Err(NameError::DotComponent));
/// assert_eq!(validate_name("/etc/passwd"), Err(NameError::Absolute));
/// ```
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong(name.len()));
    }
    if name.starts_with('/') {
        return Err(NameError::Absolute);
    }
    for c in name.chars() {
        match c {
            '\0' => return Err(NameError::Nul),
            '\\' => return Err(NameError::Backslash),
            c if c.is_control() => return Err(NameError::Control),
            _ => {}
        }
    }
    for component in name.split('/') {
        match component {
            "" => return Err(NameError::EmptyComponent),
            "." | ".." => return Err(NameError::DotComponent),
            c if c.len() > MAX_COMPONENT_LEN => return Err(NameError::ComponentTooLong),
            _ => {}
        }
    }
    if name.split('/').next() == Some(RESERVED_NAME) {
        return Err(NameError::Reserved);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use framekit_codec::message;

    #[test]
    fn error_codes_round_trip_including_unknown_ones() {
        for &code in ErrorCode::ALL {
            let mut buf = BytesMut::new();
            message::encode(&code, &mut buf).unwrap();
            assert_eq!(buf.len(), 2);
            assert_eq!(message::decode::<ErrorCode>(&buf).unwrap(), code);
        }
        let unknown: ErrorCode = message::decode(&[0x39, 0x30]).unwrap();
        assert_eq!(unknown, ErrorCode::Other(12345));
        assert_eq!(unknown.to_string(), "error code 12345");
    }

    #[test]
    fn invalid_names_are_refused_with_their_reason() {
        let long_component = "a".repeat(256);
        let long_name = vec!["b".repeat(200); 6].join("/");
        let cases: &[(&str, NameError)] = &[
            ("", NameError::Empty),
            ("/abs", NameError::Absolute),
            ("a/../b", NameError::DotComponent),
            ("..", NameError::DotComponent),
            ("./a", NameError::DotComponent),
            ("a/.", NameError::DotComponent),
            ("a//b", NameError::EmptyComponent),
            ("dir/", NameError::EmptyComponent),
            ("a\0b", NameError::Nul),
            ("a\\b", NameError::Backslash),
            ("a\nb", NameError::Control),
            ("a\u{1b}[2J", NameError::Control),
            ("a\u{85}", NameError::Control),
            (&long_component, NameError::ComponentTooLong),
            (&long_name, NameError::TooLong(1205)),
            (".framekit", NameError::Reserved),
            (".framekit/staging/x", NameError::Reserved),
        ];
        for (name, reason) in cases {
            assert_eq!(validate_name(name), Err(*reason), "{name:?}");
        }
    }

    #[test]
    fn valid_names_are_accepted() {
        let max_component = "c".repeat(255);
        for name in [
            "a",
            "file with spaces.txt",
            "unicode/日本語/ファイル.txt",
            "deep/a/b/c/d",
            ".hidden",
            "..dots",
            ".framekit2",
            "sub/.framekit",
            &max_component,
        ] {
            assert_eq!(validate_name(name), Ok(()), "{name:?}");
        }
    }
}

/// The README's examples, compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
