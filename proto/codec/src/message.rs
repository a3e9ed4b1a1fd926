//! Typed messages: serde values carried one per frame.
//!
//! This module is the only place that knows the wire format of a message
//! (bincode 2, see [`FORMAT`](self#wire-format)); replacing the format means
//! changing this file alone.
//!
//! # Wire format
//!
//! bincode 2 with its standard configuration changed to **fixed-width
//! little-endian integers**: `u8`/`bool` take 1 byte, `u16` 2, `u32` 4,
//! `u64` 8; lengths of strings, byte strings and sequences are `u64`; an
//! enum is its variant index as `u32` followed by the variant's fields; an
//! `Option` is a byte 0 (`None`) or 1 followed by the value; arrays and
//! structs are their fields in order, with no length or padding. A frame
//! holds exactly one message: trailing bytes are an error.
//!
//! # Bounded decoding
//!
//! A declared string length is only a claim. Decoding runs with a bincode
//! byte limit chosen from the frame's actual length (the smallest power of
//! two not below it), so no string or byte buffer larger than that is ever
//! allocated, whatever lengths a hostile frame declares: decoding a frame
//! of `n` bytes allocates less than `2n` bytes for its contents. Sequences
//! (`Vec<T>`) are pre-sized by serde, which caps the guess at 1 MiB; the
//! framekit protocol avoids them in favour of one frame per item.
//!
//! ```
//! use bytes::BytesMut;
//! use framekit_codec::frame::FrameConfig;
//! use framekit_codec::message;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, PartialEq, Serialize, Deserialize)]
//! struct Greeting { name: String, times: u32 }
//!
//! let mut wire = BytesMut::new();
//! let msg = Greeting { name: "ada".into(), times: 2 };
//! message::encode_frame(&FrameConfig::default(), &msg, &mut wire).unwrap();
//! // 4-byte prefix, u64 string length, "ada", u32.
//! assert_eq!(wire.len(), 4 + 8 + 3 + 4);
//! let back: Greeting = message::decode(&wire[4..]).unwrap();
//! assert_eq!(back, msg);
//! ```

use crate::error::{Error, MessageError};
#[cfg(feature = "tokio")]
use crate::frame::FrameCodec;
use crate::frame::FrameConfig;
use bincode::config::{Configuration, Fixint, LittleEndian, NoLimit};
use bytes::{BufMut, Bytes, BytesMut};
use serde::{Serialize, de::DeserializeOwned};
use std::any::type_name;
#[cfg(feature = "tokio")]
use std::marker::PhantomData;
#[cfg(feature = "tokio")]
use tokio_util::codec::{Decoder, Encoder};

/// The bincode configuration of every message.
const FORMAT: Configuration<LittleEndian, Fixint, NoLimit> = bincode::config::standard()
    .with_little_endian()
    .with_fixed_int_encoding();

/// A frame held bytes after a complete message.
#[derive(Debug, thiserror::Error)]
#[error("{extra} unexpected bytes after the message")]
struct TrailingBytes {
    extra: usize,
}

/// Why bytes are not a valid encoding, in words: bincode's own errors
/// print as Rust debug output (`UnexpectedVariant { type_name: ... }`),
/// and these texts reach peers in error answers.
#[derive(Debug)]
struct Invalid(bincode::error::DecodeError);

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use bincode::error::DecodeError as E;
        match &self.0 {
            E::UnexpectedEnd { .. } => f.write_str("it ends before its last field"),
            E::LimitExceeded => f.write_str("it declares more bytes than its frame holds"),
            E::InvalidBooleanValue(byte) => write!(f, "a boolean is {byte}, not 0 or 1"),
            E::UnexpectedVariant {
                type_name, found, ..
            } if type_name.starts_with("Option") => {
                write!(f, "an option's tag is {found}, not 0 (none) or 1 (some)")
            }
            E::UnexpectedVariant { found, .. } => write!(f, "no variant has the index {found}"),
            E::Utf8 { .. } | E::InvalidCharEncoding(_) => {
                f.write_str("a string is not valid UTF-8")
            }
            E::ArrayLengthMismatch { required, found } => {
                write!(f, "an array of {found} items where {required} are expected")
            }
            E::OutsideUsizeRange(len) => write!(f, "a length of {len} is out of range"),
            // serde's own words: "invalid value: integer `9`, expected ...".
            E::OtherString(text) => f.write_str(text),
            E::Other(text) => f.write_str(text),
            _ => f.write_str("the bytes are not a valid encoding"),
        }
    }
}

impl std::error::Error for Invalid {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// The frame is too large to be decoded as one message.
#[derive(Debug, thiserror::Error)]
#[error("a {len}-byte message is too large to decode")]
struct TooLarge {
    len: usize,
}

fn short_name<T: ?Sized>() -> &'static str {
    let name = type_name::<T>();
    // Keep the last path segment of the outer type: `framekit_transfer::Request`
    // becomes `Request`.
    let outer = name.split('<').next().unwrap_or(name);
    outer.rsplit("::").next().unwrap_or(outer)
}

/// Decodes one message that fills `bytes` exactly.
///
/// Fails with [`Error::Decode`] naming the expected type when the bytes are
/// not a valid encoding, are cut short, or are followed by extra bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let failed = |source| Error::Decode {
        message: short_name::<T>(),
        source,
    };
    let (value, read) =
        decode_limited::<T>(bytes)?.map_err(|e| failed(MessageError::new(Invalid(e))))?;
    if read != bytes.len() {
        return Err(failed(MessageError::new(TrailingBytes {
            extra: bytes.len() - read,
        })));
    }
    Ok(value)
}

/// Runs bincode with a byte limit that is the smallest power of two not
/// below `bytes.len()`.
///
/// bincode's limit is a compile-time constant, hence one instantiation per
/// size class.
fn decode_limited<T: DeserializeOwned>(
    bytes: &[u8],
) -> Result<Result<(T, usize), bincode::error::DecodeError>, Error> {
    macro_rules! by_size_class {
        ($($bits:literal)*) => {
            $(
                if bytes.len() <= (1usize << $bits) {
                    return Ok(bincode::serde::decode_from_slice(
                        bytes,
                        FORMAT.with_limit::<{ 1usize << $bits }>(),
                    ));
                }
            )*
        };
    }
    by_size_class!(6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30);
    Err(Error::Decode {
        message: short_name::<T>(),
        source: MessageError::new(TooLarge { len: bytes.len() }),
    })
}

/// Appends the encoding of `msg` (without a frame prefix) to `dst`.
pub fn encode<T: Serialize + ?Sized>(msg: &T, dst: &mut BytesMut) -> Result<(), Error> {
    let start = dst.len();
    bincode::serde::encode_into_writer(msg, BytesWriter(dst), FORMAT).map_err(|e| {
        dst.truncate(start);
        Error::Encode {
            message: short_name::<T>(),
            source: MessageError::new(e),
        }
    })
}

/// The length of the encoding of `msg`.
pub fn encoded_len<T: Serialize + ?Sized>(msg: &T) -> Result<usize, Error> {
    let mut size = bincode::enc::write::SizeWriter::default();
    bincode::serde::encode_into_writer(msg, &mut size, FORMAT).map_err(|e| Error::Encode {
        message: short_name::<T>(),
        source: MessageError::new(e),
    })?;
    Ok(size.bytes_written)
}

/// Appends `msg` to `dst` as one frame: the prefix, then the encoding.
/// On error (the message is larger than a frame may be), nothing is written.
pub fn encode_frame<T: Serialize + ?Sized>(
    config: &FrameConfig,
    msg: &T,
    dst: &mut BytesMut,
) -> Result<(), Error> {
    let len = encoded_len(msg)?;
    let head = config.encode_head(len)?;
    dst.reserve(head.as_slice().len() + len);
    dst.put_slice(head.as_slice());
    encode(msg, dst)
}

/// Encodes `msg` as one frame into a new buffer.
pub fn to_frame<T: Serialize + ?Sized>(config: &FrameConfig, msg: &T) -> Result<Bytes, Error> {
    let mut dst = BytesMut::new();
    encode_frame(config, msg, &mut dst)?;
    Ok(dst.freeze())
}

/// A bincode writer that appends to a `BytesMut`.
struct BytesWriter<'a>(&'a mut BytesMut);

impl bincode::enc::write::Writer for BytesWriter<'_> {
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }
}

/// A typed codec: frames of [`FrameCodec`] carrying one message each.
///
/// It decodes values of type `D` and encodes any `Serialize` value, so one
/// codec type serves a side that receives `D` and sends replies of another
/// type.
///
/// ```
/// use bytes::BytesMut;
/// use framekit_codec::message::MessageCodec;
/// use framekit_codec::{Decoder, Encoder};
///
/// let mut codec = MessageCodec::<(u32, String)>::new();
/// let mut wire = BytesMut::new();
/// codec.encode((7u32, "seven".to_string()), &mut wire).unwrap();
/// assert_eq!(codec.decode(&mut wire).unwrap(), Some((7, "seven".to_string())));
/// ```
#[cfg(feature = "tokio")]
#[derive(Debug)]
pub struct MessageCodec<D> {
    frames: FrameCodec,
    _decodes: PhantomData<fn() -> D>,
}

#[cfg(feature = "tokio")]
impl<D> Clone for MessageCodec<D> {
    fn clone(&self) -> Self {
        MessageCodec {
            frames: self.frames.clone(),
            _decodes: PhantomData,
        }
    }
}

#[cfg(feature = "tokio")]
impl<D> Default for MessageCodec<D> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(feature = "tokio")]
impl<D> MessageCodec<D> {
    /// A codec with the default framing.
    pub fn new() -> Self {
        Self::with_frames(FrameCodec::new())
    }

    /// A codec over the given frame codec.
    pub fn with_frames(frames: FrameCodec) -> Self {
        MessageCodec {
            frames,
            _decodes: PhantomData,
        }
    }

    /// The underlying frame codec.
    pub fn frames(&self) -> &FrameCodec {
        &self.frames
    }

    /// The underlying frame codec, to change its state.
    pub fn frames_mut(&mut self) -> &mut FrameCodec {
        &mut self.frames
    }
}

#[cfg(feature = "tokio")]
impl<D: DeserializeOwned> Decoder for MessageCodec<D> {
    type Item = D;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<D>, Error> {
        match self.frames.decode_frame(src)? {
            Some(frame) => decode(&frame).map(Some),
            None => Ok(None),
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<D>, Error> {
        match self.frames.decode_eof(src)? {
            Some(frame) => decode(&frame).map(Some),
            None => Ok(None),
        }
    }
}

#[cfg(feature = "tokio")]
impl<D, E: Serialize> Encoder<E> for MessageCodec<D> {
    type Error = Error;

    fn encode(&mut self, item: E, dst: &mut BytesMut) -> Result<(), Error> {
        encode_frame(self.frames.config(), &item, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_are_short() {
        assert_eq!(short_name::<String>(), "String");
        assert_eq!(short_name::<Vec<u8>>(), "Vec");
        assert_eq!(short_name::<u32>(), "u32");
    }

    #[test]
    fn decoding_errors_are_said_in_words_not_in_debug_output() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Message {
            flag: bool,
            name: Option<String>,
        }
        for (bytes, expected) in [
            (&[2u8, 0][..], "a boolean is 2, not 0 or 1"),
            (&[1, 7], "an option's tag is 7, not 0 (none) or 1 (some)"),
            (
                &[1, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xfe],
                "not valid UTF-8",
            ),
            (&[1], "it ends before its last field"),
        ] {
            let err = decode::<Message>(bytes).unwrap_err().to_string();
            assert!(err.starts_with("malformed Message message: "), "{err}");
            assert!(err.contains(expected), "{err}");
            assert!(!err.contains('{') && !err.contains("type_name"), "{err}");
        }
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut buf = BytesMut::new();
        encode(&5u32, &mut buf).unwrap();
        buf.put_u8(0);
        let err = decode::<u32>(&buf).unwrap_err();
        assert!(err.to_string().contains("1 unexpected bytes"), "{err}");
    }

    #[test]
    fn a_declared_string_length_is_not_allocated() {
        // A u64 length of 2^62 followed by nothing: bincode must refuse it by
        // its limit rather than try to allocate.
        let mut buf = BytesMut::new();
        buf.put_u64_le(1 << 62);
        let err = decode::<String>(&buf).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Decode {
                    message: "String",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn messages_larger_than_a_frame_are_refused_without_writing() {
        let config = crate::frame::FrameCodec::builder()
            .max_frame_length(8)
            .new_codec()
            .config()
            .to_owned();
        let mut buf = BytesMut::new();
        let err = encode_frame(&config, &"nine char", &mut buf).unwrap_err();
        assert!(matches!(err, Error::PayloadTooLarge { len: 17, max: 8 }));
        assert!(buf.is_empty());
    }
}
