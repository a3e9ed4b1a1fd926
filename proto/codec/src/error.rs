//! The crate's error type.

use std::{fmt, io};

/// Everything that can go wrong while framing, encoding or decoding.
///
/// Decoding errors other than [`Error::Io`] mean the byte stream is corrupt
/// or hostile: the position of the next frame is unknown and the connection
/// should be closed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A peer declared a frame longer than the maximum. Raised as soon as the
    /// prefix is read, before any of the payload is buffered.
    #[error("frame of {declared} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge {
        /// The payload length the peer declared (after adjustment).
        declared: u64,
        /// The configured maximum.
        max: u64,
    },

    /// A payload is longer than the maximum frame length, or than the
    /// length prefix can describe. Nothing was written.
    #[error("payload of {len} bytes is longer than the {max} bytes a frame can carry")]
    PayloadTooLarge {
        /// The payload's length.
        len: u64,
        /// The longest payload this configuration can encode.
        max: u64,
    },

    /// A payload is shorter than a positive length adjustment, so its length
    /// field would be negative. Nothing was written.
    #[error(
        "payload of {len} bytes is shorter than the {min} bytes the length adjustment requires"
    )]
    PayloadTooShort {
        /// The payload's length.
        len: u64,
        /// The shortest payload this configuration can encode.
        min: u64,
    },

    /// The header given to the encoder is not as long as the configured
    /// length field offset. Nothing was written.
    #[error("header of {len} bytes where the length field is at offset {expected}")]
    HeaderLength {
        /// The header's length.
        len: usize,
        /// The configured length field offset.
        expected: usize,
    },

    /// The length adjustment takes the length read from the wire out of
    /// range (below zero, or past `u64::MAX`).
    #[error("length field {wire} with adjustment {adjustment} does not describe a valid frame")]
    InvalidLength {
        /// The value of the length field.
        wire: u64,
        /// The configured adjustment.
        adjustment: i64,
    },

    /// A varint length prefix is longer than the maximum frame length can
    /// need (or than 10 bytes), or overflows 64 bits.
    #[error("invalid varint length prefix: malformed at byte {len}")]
    InvalidVarint {
        /// The prefix byte (1-based) at which it became invalid.
        len: usize,
    },

    /// The stream ended inside a frame.
    #[error("stream ended inside a frame ({received} bytes received{})", Expected(*.expected))]
    Truncated {
        /// Bytes of the unfinished frame that had arrived (payload bytes if
        /// the prefix was complete, prefix bytes otherwise).
        received: u64,
        /// The payload length, if the prefix had been read.
        expected: Option<u64>,
    },

    /// A frame did not hold a valid message of the expected type.
    #[error("malformed {message} message: {source}")]
    Decode {
        /// The Rust type that was expected.
        message: &'static str,
        /// What failed.
        source: MessageError,
    },

    /// A message could not be serialized.
    #[error("cannot encode {message} message: {source}")]
    Encode {
        /// The Rust type being encoded.
        message: &'static str,
        /// What failed.
        source: MessageError,
    },

    /// The underlying reader or writer failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

struct Expected(Option<u64>);

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(len) => write!(f, " of a {len}-byte payload"),
            None => f.write_str(" of a length prefix"),
        }
    }
}

impl Error {
    /// Whether this error means the peer closed the stream inside a frame.
    pub fn is_truncated(&self) -> bool {
        match self {
            Error::Truncated { .. } => true,
            Error::Io(e) => e.kind() == io::ErrorKind::UnexpectedEof,
            _ => false,
        }
    }
}

impl From<Error> for io::Error {
    /// Maps a truncated stream to [`io::ErrorKind::UnexpectedEof`], I/O
    /// errors to themselves, and everything else to
    /// [`io::ErrorKind::InvalidData`].
    fn from(error: Error) -> Self {
        match error {
            Error::Io(e) => e,
            e @ Error::Truncated { .. } => io::Error::new(io::ErrorKind::UnexpectedEof, e),
            e @ (Error::PayloadTooLarge { .. }
            | Error::PayloadTooShort { .. }
            | Error::HeaderLength { .. }
            | Error::Encode { .. }) => io::Error::new(io::ErrorKind::InvalidInput, e),
            e => io::Error::new(io::ErrorKind::InvalidData, e),
        }
    }
}

/// Why a [`Builder`](crate::frame::Builder) cannot make a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A fixed-width length field must be 1 to 8 bytes wide.
    #[error("a length field of {width} bytes: the width must be 1 to 8")]
    Width {
        /// The width asked for.
        width: usize,
    },

    /// A varint may be limited to 1 to 10 bytes.
    #[error("a varint limit of {bytes} bytes: the limit must be 1 to 10")]
    VarintLimit {
        /// The limit asked for.
        bytes: usize,
    },

    /// A varint limit was set for a fixed-width length field.
    #[error("a varint byte limit is set, but the length field is not a varint")]
    VarintLimitWithoutVarint,

    /// The length field offset is too large to add the field's width to.
    #[error("a length field offset of {offset} bytes is too large")]
    OffsetTooLarge {
        /// The offset asked for.
        offset: usize,
    },

    /// More bytes would be stripped than the shortest frame has.
    #[error("cannot strip {strip} bytes: the shortest frame of this configuration has {shortest}")]
    StripBeyondFrame {
        /// The bytes to strip asked for.
        strip: usize,
        /// The shortest possible frame: the header, the smallest length
        /// field and the bytes a positive adjustment adds.
        shortest: usize,
    },
}

/// Why a message could not be encoded or decoded.
///
/// The wire format's own error is kept as the source, without making it part
/// of this crate's API.
#[derive(Debug)]
pub struct MessageError(Box<dyn std::error::Error + Send + Sync + 'static>);

impl MessageError {
    pub(crate) fn new(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        MessageError(Box::new(error))
    }
}

impl fmt::Display for MessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for MessageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}
