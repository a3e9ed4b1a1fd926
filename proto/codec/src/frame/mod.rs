//! Length-prefixed framing: the sans-IO core and its configuration.
//!
//! A frame on the wire is a length prefix followed by exactly that many
//! payload bytes (after the optional [length adjustment]):
//!
//! ```text
//! +---- prefix ----+--------- payload ---------+
//! | 00 00 00 0B    | h e l l o   w o r l d     |
//! +----------------+---------------------------+
//!   4 bytes, BE       11 bytes
//! ```
//!
//! [`FrameCodec`] holds the configuration and the decoding state. It never
//! performs I/O: bytes go in through a [`BytesMut`] and complete frames come
//! out as [`Bytes`] that share the input buffer's memory. The tokio
//! adapter (tokio-util's `Decoder` and `Encoder`, feature `tokio`) and the
//! [`crate::blocking`] reader and writer are thin layers over the same
//! code: the rules (where the length is, the adjustment, the limits and the
//! read-ahead) live in one private module that both decoders call.
//!
//! # Decode contract
//!
//! [`FrameCodec::decode_next`], [`FrameCodec::decode_frame`] (which counts
//! discarded frames instead of reporting them) and the `Decoder`
//! implementation (which is `decode_frame`) are called with everything
//! received so far that has not been consumed:
//!
//! - `Ok(Some(_))`: one event was produced and its bytes were removed from
//!   the buffer; call again, more may be buffered.
//! - `Ok(None)`: the buffer holds no complete frame; read more bytes into it
//!   and call again. A partially received prefix stays in the buffer; once
//!   the prefix is complete it is consumed and the payload length is
//!   remembered by the codec, so it is not parsed again while the payload
//!   arrives.
//! - `Err(_)`: the stream is corrupt (a length above the maximum, an invalid
//!   varint, a length that the adjustment makes negative). The codec does
//!   not know where the next frame starts: drop the connection.
//!
//! At end of stream, call [`FrameCodec::decode_eof`]: an empty buffer at a
//! frame boundary is `Ok(None)` (a clean end); any other leftover is
//! [`Error::Truncated`](crate::Error::Truncated).
//!
//! [length adjustment]: Builder::length_adjustment
//! [`Bytes`]: bytes::Bytes
//! [`BytesMut`]: bytes::BytesMut

pub(crate) mod core;
mod decode;
mod encode;
#[cfg(feature = "tokio")]
mod tokio_codec;

use self::core::{MAX_VARINT_LEN, varint_len};

pub use decode::Decoded;
pub use encode::Head;
#[cfg(feature = "tokio")]
pub use tokio_codec::write_frame;

/// The default maximum frame length: 16 MiB.
pub const DEFAULT_MAX_FRAME_LENGTH: usize = 16 * 1024 * 1024;

/// The most payload buffer the decoder reserves ahead of the bytes that
/// have actually arrived, while a frame is incomplete.
///
/// Within that, it reserves no more than has arrived, and at least
/// [`MIN_READ_AHEAD`]: the buffer doubles as bytes come. A peer that
/// declares a 16 MiB frame and sends one byte costs a few kilobytes, not
/// 16 MiB.
pub const READ_AHEAD: usize = 64 * 1024;

/// The least the decoder reserves ahead for an incomplete frame.
pub const MIN_READ_AHEAD: usize = 4 * 1024;

/// The length prefix's encoding on the wire.
///
/// Affects both encoding and decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum LengthPrefix {
    /// One byte: lengths up to 255.
    U8,
    /// Two bytes, big-endian (network order).
    U16Be,
    /// Two bytes, little-endian.
    U16Le,
    /// Four bytes, big-endian (network order). The default.
    #[default]
    U32Be,
    /// Four bytes, little-endian.
    U32Le,
    /// Eight bytes, big-endian (network order).
    U64Be,
    /// Eight bytes, little-endian.
    U64Le,
    /// An unsigned LEB128 varint, 1 to 10 bytes, as used by length-delimited
    /// protobuf streams: 7 bits per byte, least significant group first, the
    /// high bit set on every byte but the last.
    Varint,
}

impl LengthPrefix {
    /// The prefix width in bytes, or `None` for a varint.
    pub const fn width(self) -> Option<usize> {
        match self {
            LengthPrefix::U8 => Some(1),
            LengthPrefix::U16Be | LengthPrefix::U16Le => Some(2),
            LengthPrefix::U32Be | LengthPrefix::U32Le => Some(4),
            LengthPrefix::U64Be | LengthPrefix::U64Le => Some(8),
            LengthPrefix::Varint => None,
        }
    }

    /// The largest value the prefix can carry.
    pub const fn max_value(self) -> u64 {
        match self {
            LengthPrefix::U8 => u8::MAX as u64,
            LengthPrefix::U16Be | LengthPrefix::U16Le => u16::MAX as u64,
            LengthPrefix::U32Be | LengthPrefix::U32Le => u32::MAX as u64,
            LengthPrefix::U64Be | LengthPrefix::U64Le | LengthPrefix::Varint => u64::MAX,
        }
    }

    /// The most bytes a prefix of this kind can take on the wire.
    pub const fn max_len(self) -> usize {
        match self.width() {
            Some(width) => width,
            None => MAX_VARINT_LEN,
        }
    }
}

/// What the decoder does with a frame whose length exceeds the maximum.
///
/// Affects decoding only; the encoder always refuses such a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Oversize {
    /// Fail with [`Error::FrameTooLarge`](crate::Error::FrameTooLarge) as soon as the prefix is read. The
    /// default: an oversized frame usually means a broken or hostile peer.
    #[default]
    Error,
    /// Skip exactly the declared number of bytes as they arrive, without
    /// buffering them, report [`Decoded::Discarded`], then go on with the
    /// next frame.
    Discard,
}

/// The framing parameters shared by encoding and decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameConfig {
    pub(crate) prefix: LengthPrefix,
    pub(crate) adjustment: i64,
    pub(crate) max_frame_length: usize,
    pub(crate) oversize: Oversize,
    /// The longest varint accepted: enough for the largest wire value that
    /// can describe a frame of `max_frame_length` bytes, and never over 10.
    pub(crate) max_varint_len: usize,
}

impl Default for FrameConfig {
    fn default() -> Self {
        Builder::new().config()
    }
}

impl FrameConfig {
    /// The length prefix encoding.
    pub fn prefix(&self) -> LengthPrefix {
        self.prefix
    }

    /// The value added to the length read from the wire to get the payload
    /// length.
    pub fn length_adjustment(&self) -> i64 {
        self.adjustment
    }

    /// The largest payload accepted or produced, in bytes.
    pub fn max_frame_length(&self) -> usize {
        self.max_frame_length
    }

    /// What happens to an oversized incoming frame.
    pub fn oversize(&self) -> Oversize {
        self.oversize
    }

    /// The largest number of bytes a complete frame (prefix and payload)
    /// occupies on the wire.
    pub fn max_encoded_len(&self) -> usize {
        self.max_frame_length.saturating_add(self.prefix.max_len())
    }
}

/// Builds a [`FrameCodec`] (or a bare [`FrameConfig`]).
///
/// The defaults are a 4-byte big-endian prefix that counts the payload only,
/// a 16 MiB maximum, and an error on oversized frames.
///
/// ```
/// use framekit_codec::frame::{FrameCodec, LengthPrefix};
///
/// let codec = FrameCodec::builder()
///     .prefix(LengthPrefix::U16Le)
///     .max_frame_length(1024)
///     .new_codec();
/// assert_eq!(codec.config().max_frame_length(), 1024);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Builder {
    prefix: LengthPrefix,
    adjustment: i64,
    max_frame_length: usize,
    oversize: Oversize,
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

impl Builder {
    /// A builder with the defaults.
    pub fn new() -> Self {
        Builder {
            prefix: LengthPrefix::U32Be,
            adjustment: 0,
            max_frame_length: DEFAULT_MAX_FRAME_LENGTH,
            oversize: Oversize::Error,
        }
    }

    /// Sets the length prefix encoding. Affects encoding and decoding.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use framekit_codec::frame::{FrameCodec, LengthPrefix};
    ///
    /// let codec = FrameCodec::builder().prefix(LengthPrefix::Varint).new_codec();
    /// let mut out = BytesMut::new();
    /// codec.encode(&[7u8; 300], &mut out).unwrap();
    /// // 300 = 0b10_0101100: low 7 bits with the continuation bit, then 2.
    /// assert_eq!(&out[..2], &[0xAC, 0x02]);
    /// ```
    pub fn prefix(&mut self, prefix: LengthPrefix) -> &mut Self {
        self.prefix = prefix;
        self
    }

    /// Sets a value added to the length read from the wire to obtain the
    /// payload length (the encoder subtracts it). Affects encoding and
    /// decoding.
    ///
    /// Use `-(prefix width)` for protocols whose length counts the prefix
    /// itself, as PostgreSQL's messages do. Arithmetic is checked: a wire
    /// length that the adjustment would make negative is
    /// [`Error::InvalidLength`](crate::Error::InvalidLength).
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use framekit_codec::frame::FrameCodec;
    ///
    /// // The length 0x0000_0008 counts its own 4 bytes: the payload is 4 bytes.
    /// let mut codec = FrameCodec::builder().length_adjustment(-4).new_codec();
    /// let mut buf = BytesMut::from(&[0, 0, 0, 8, b'p', b'i', b'n', b'g'][..]);
    /// let frame = codec.decode_frame(&mut buf).unwrap().unwrap();
    /// assert_eq!(&frame[..], b"ping");
    /// ```
    pub fn length_adjustment(&mut self, adjustment: i64) -> &mut Self {
        self.adjustment = adjustment;
        self
    }

    /// Sets the largest payload, in bytes (after adjustment). Affects
    /// encoding (larger payloads are refused) and decoding (larger declared
    /// lengths are refused or discarded as soon as the prefix is read,
    /// before any payload buffer is reserved).
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use framekit_codec::Error;
    /// use framekit_codec::frame::FrameCodec;
    ///
    /// let mut codec = FrameCodec::builder().max_frame_length(4).new_codec();
    /// let mut buf = BytesMut::from(&[0, 0, 0, 5][..]);
    /// let err = codec.decode_frame(&mut buf).unwrap_err();
    /// assert!(matches!(err, Error::FrameTooLarge { declared: 5, max: 4 }));
    /// ```
    pub fn max_frame_length(&mut self, max: usize) -> &mut Self {
        self.max_frame_length = max;
        self
    }

    /// Sets what decoding does with an oversized frame. Affects decoding
    /// only.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use framekit_codec::frame::{Decoded, FrameCodec, Oversize};
    ///
    /// let mut codec = FrameCodec::builder()
    ///     .max_frame_length(2)
    ///     .oversize(Oversize::Discard)
    ///     .new_codec();
    /// let mut buf = BytesMut::from(&[0, 0, 0, 3, 1, 2, 3, 0, 0, 0, 1, 9][..]);
    /// assert_eq!(codec.decode_next(&mut buf).unwrap(), Some(Decoded::Discarded { length: 3 }));
    /// assert_eq!(codec.decode_next(&mut buf).unwrap(), Some(Decoded::Frame(vec![9].into())));
    /// ```
    pub fn oversize(&mut self, oversize: Oversize) -> &mut Self {
        self.oversize = oversize;
        self
    }

    /// The configuration built so far.
    pub fn config(&self) -> FrameConfig {
        let mut config = FrameConfig {
            prefix: self.prefix,
            adjustment: self.adjustment,
            max_frame_length: self.max_frame_length,
            oversize: self.oversize,
            max_varint_len: MAX_VARINT_LEN,
        };
        // The largest wire value that may describe an acceptable frame. In
        // discard mode any length must be readable, so the varint may take
        // its full 10 bytes.
        if self.oversize == Oversize::Error {
            config.max_varint_len = varint_len(config.max_wire_len());
        }
        config
    }

    /// Builds a codec with this configuration.
    pub fn new_codec(&self) -> FrameCodec {
        FrameCodec::with_config(self.config())
    }
}

/// Where the decoder is within the current frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DecodeState {
    /// Waiting for a complete length prefix.
    Head,
    /// The head was consumed; waiting for this many payload bytes.
    Data(usize),
    /// Skipping an oversized frame: `remaining` of `length` bytes to go.
    Discard { remaining: u64, length: u64 },
}

/// A length-prefixed frame codec: a configuration plus the decoding state.
///
/// With the `tokio` feature it implements tokio-util's `Decoder` (items are
/// [`Bytes`](bytes::Bytes) payloads) and `Encoder` for byte payloads. It
/// offers the same operations without I/O:
/// [`decode_frame`](Self::decode_frame), [`decode_next`](Self::decode_next),
/// [`decode_eof`](Self::decode_eof), [`encode`](Self::encode) and
/// [`encode_head`](Self::encode_head).
///
/// ```
/// use bytes::BytesMut;
/// use framekit_codec::frame::FrameCodec;
///
/// let mut codec = FrameCodec::new();
/// let mut wire = BytesMut::new();
/// codec.encode(b"hello", &mut wire).unwrap();
/// codec.encode(b"world", &mut wire).unwrap();
///
/// // Two frames glued together and cut at an arbitrary point.
/// let mut rest = wire.split_off(7);
/// assert_eq!(codec.decode_frame(&mut wire).unwrap(), None);
/// wire.unsplit(rest);
/// assert_eq!(&codec.decode_frame(&mut wire).unwrap().unwrap()[..], b"hello");
/// assert_eq!(&codec.decode_frame(&mut wire).unwrap().unwrap()[..], b"world");
/// assert_eq!(codec.decode_eof(&mut wire).unwrap(), None);
/// ```
#[derive(Debug, Clone)]
pub struct FrameCodec {
    config: FrameConfig,
    state: DecodeState,
    discarded: u64,
}

impl Default for FrameCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameCodec {
    /// A codec with the default configuration.
    pub fn new() -> Self {
        Self::with_config(FrameConfig::default())
    }

    /// A builder to configure a codec.
    pub fn builder() -> Builder {
        Builder::new()
    }

    /// A codec with the given configuration.
    pub fn with_config(config: FrameConfig) -> Self {
        FrameCodec {
            config,
            state: DecodeState::Head,
            discarded: 0,
        }
    }

    /// The codec's configuration.
    pub fn config(&self) -> &FrameConfig {
        &self.config
    }

    /// How many oversized frames have been skipped in
    /// [`Oversize::Discard`] mode.
    pub fn discarded(&self) -> u64 {
        self.discarded
    }

    /// Whether the codec is between frames: no prefix byte consumed and no
    /// payload pending. A stream that ends here ends cleanly.
    pub fn is_at_boundary(&self) -> bool {
        self.state == DecodeState::Head
    }
}
