//! Length-prefixed framing: the sans-IO core and its configuration.
//!
//! In the default layout a frame on the wire is a length prefix followed by
//! exactly that many payload bytes (after the optional [length adjustment]);
//! a header may come before the length field, and the decoder may deliver
//! the head too (see the crate docs, "Frame layout"):
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

use self::core::{MAX_VARINT_LEN, Shortcut, varint_len};
pub use crate::error::ConfigError;

pub use decode::Decoded;
pub use encode::Head;
#[cfg(feature = "tokio")]
pub use tokio_codec::{write_frame, write_frame_with_header};

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

/// The length field's encoding on the wire.
///
/// Affects both encoding and decoding. Every width from 1 to 8 bytes in
/// either byte order, or a varint; [`LengthPrefix::fixed`] picks the
/// variant for a width and a byte order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum LengthPrefix {
    /// One byte: lengths up to 255.
    U8,
    /// Two bytes, big-endian (network order).
    U16Be,
    /// Two bytes, little-endian.
    U16Le,
    /// Three bytes, big-endian (network order).
    U24Be,
    /// Three bytes, little-endian, as MySQL's packets have.
    U24Le,
    /// Four bytes, big-endian (network order). The default.
    #[default]
    U32Be,
    /// Four bytes, little-endian.
    U32Le,
    /// Five bytes, big-endian (network order).
    U40Be,
    /// Five bytes, little-endian.
    U40Le,
    /// Six bytes, big-endian (network order).
    U48Be,
    /// Six bytes, little-endian.
    U48Le,
    /// Seven bytes, big-endian (network order).
    U56Be,
    /// Seven bytes, little-endian.
    U56Le,
    /// Eight bytes, big-endian (network order).
    U64Be,
    /// Eight bytes, little-endian.
    U64Le,
    /// An unsigned LEB128 varint, 1 to 10 bytes (fewer with
    /// [`Builder::varint_max_bytes`]), as length-delimited protobuf streams
    /// and MQTT's remaining length have: 7 bits per byte, least significant
    /// group first, the high bit set on every byte but the last.
    Varint,
}

/// The byte order of a fixed-width length field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ByteOrder {
    /// Most significant byte first (network order). The default.
    #[default]
    BigEndian,
    /// Least significant byte first.
    LittleEndian,
}

impl LengthPrefix {
    /// The fixed-width prefix of `width` bytes in `order`, or `None` unless
    /// `width` is 1 to 8. A one-byte prefix has no byte order.
    ///
    /// ```
    /// use framekit_codec::frame::{ByteOrder, LengthPrefix};
    ///
    /// assert_eq!(LengthPrefix::fixed(3, ByteOrder::LittleEndian), Some(LengthPrefix::U24Le));
    /// assert_eq!(LengthPrefix::fixed(9, ByteOrder::BigEndian), None);
    /// ```
    pub const fn fixed(width: usize, order: ByteOrder) -> Option<LengthPrefix> {
        use ByteOrder::{BigEndian as Be, LittleEndian as Le};
        Some(match (width, order) {
            (1, _) => LengthPrefix::U8,
            (2, Be) => LengthPrefix::U16Be,
            (2, Le) => LengthPrefix::U16Le,
            (3, Be) => LengthPrefix::U24Be,
            (3, Le) => LengthPrefix::U24Le,
            (4, Be) => LengthPrefix::U32Be,
            (4, Le) => LengthPrefix::U32Le,
            (5, Be) => LengthPrefix::U40Be,
            (5, Le) => LengthPrefix::U40Le,
            (6, Be) => LengthPrefix::U48Be,
            (6, Le) => LengthPrefix::U48Le,
            (7, Be) => LengthPrefix::U56Be,
            (7, Le) => LengthPrefix::U56Le,
            (8, Be) => LengthPrefix::U64Be,
            (8, Le) => LengthPrefix::U64Le,
            _ => return None,
        })
    }

    /// The prefix width in bytes, or `None` for a varint.
    pub const fn width(self) -> Option<usize> {
        match self {
            LengthPrefix::U8 => Some(1),
            LengthPrefix::U16Be | LengthPrefix::U16Le => Some(2),
            LengthPrefix::U24Be | LengthPrefix::U24Le => Some(3),
            LengthPrefix::U32Be | LengthPrefix::U32Le => Some(4),
            LengthPrefix::U40Be | LengthPrefix::U40Le => Some(5),
            LengthPrefix::U48Be | LengthPrefix::U48Le => Some(6),
            LengthPrefix::U56Be | LengthPrefix::U56Le => Some(7),
            LengthPrefix::U64Be | LengthPrefix::U64Le => Some(8),
            LengthPrefix::Varint => None,
        }
    }

    /// The byte order of a fixed-width prefix: `None` for a varint, big-endian
    /// for a single byte.
    pub const fn byte_order(self) -> Option<ByteOrder> {
        match self {
            LengthPrefix::Varint => None,
            LengthPrefix::U16Le
            | LengthPrefix::U24Le
            | LengthPrefix::U32Le
            | LengthPrefix::U40Le
            | LengthPrefix::U48Le
            | LengthPrefix::U56Le
            | LengthPrefix::U64Le => Some(ByteOrder::LittleEndian),
            _ => Some(ByteOrder::BigEndian),
        }
    }

    /// The largest value the prefix can carry (for a varint, what 10 bytes
    /// can carry; see [`FrameConfig::max_payload_len`] for a configuration's
    /// limit).
    pub const fn max_value(self) -> u64 {
        match self.width() {
            Some(width) if width < 8 => (1 << (8 * width)) - 1,
            _ => u64::MAX,
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
///
/// A frame on the wire is a header of [`length_field_offset`] bytes, the
/// length field, and the bytes the length describes (after the
/// [`length_adjustment`]); the decoder delivers the frame without its first
/// [`strip`] bytes. Built by [`Builder`].
///
/// [`length_field_offset`]: Self::length_field_offset
/// [`length_adjustment`]: Self::length_adjustment
/// [`strip`]: Self::strip
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameConfig {
    pub(crate) prefix: LengthPrefix,
    pub(crate) offset: usize,
    pub(crate) adjustment: i64,
    /// `None`: the whole head (header and length field).
    pub(crate) strip: Option<usize>,
    pub(crate) max_frame_length: usize,
    pub(crate) oversize: Oversize,
    /// The configured limit on a varint's length, if any.
    pub(crate) varint_max_bytes: Option<usize>,
    /// The longest varint accepted: that limit, or 10, and no more than the
    /// largest acceptable length field value needs.
    pub(crate) max_varint_len: usize,
}

impl Default for FrameConfig {
    fn default() -> Self {
        Builder::new().config()
    }
}

impl FrameConfig {
    /// The length field's encoding.
    pub fn prefix(&self) -> LengthPrefix {
        self.prefix
    }

    /// How many header bytes precede the length field.
    pub fn length_field_offset(&self) -> usize {
        self.offset
    }

    /// The value added to the length field's value to get the number of
    /// bytes that follow the length field.
    pub fn length_adjustment(&self) -> i64 {
        self.adjustment
    }

    /// How many leading bytes of each frame the decoder drops, or `None`
    /// for the whole head (the header and the length field), the default.
    pub fn strip(&self) -> Option<usize> {
        self.strip
    }

    /// The most bytes a varint length field may take, if limited by
    /// [`Builder::varint_max_bytes`].
    pub fn varint_max_bytes(&self) -> Option<usize> {
        self.varint_max_bytes
    }

    /// The largest adjusted length accepted or produced: the most bytes that
    /// may follow the length field.
    pub fn max_frame_length(&self) -> usize {
        self.max_frame_length
    }

    /// What happens to an oversized incoming frame.
    pub fn oversize(&self) -> Oversize {
        self.oversize
    }

    /// The largest number of bytes a complete frame (header, length field
    /// and what follows it) occupies on the wire.
    pub fn max_encoded_len(&self) -> usize {
        self.max_frame_length.saturating_add(self.max_head_len())
    }
}

/// Builds a [`FrameCodec`] (or a bare [`FrameConfig`]).
///
/// The defaults are a 4-byte big-endian length at the start of the frame
/// that counts the payload only, the whole head stripped, a 16 MiB maximum,
/// and an error on oversized frames. [`try_config`](Self::try_config)
/// checks the combination; the crate docs have a
/// [configuration for each common protocol](crate#protocols).
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
    /// A width [`Builder::length_field`] could not accept.
    bad_width: Option<usize>,
    offset: usize,
    adjustment: i64,
    strip: Option<usize>,
    max_frame_length: usize,
    oversize: Oversize,
    varint_max_bytes: Option<usize>,
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
            bad_width: None,
            offset: 0,
            adjustment: 0,
            strip: None,
            max_frame_length: DEFAULT_MAX_FRAME_LENGTH,
            oversize: Oversize::Error,
            varint_max_bytes: None,
        }
    }

    /// Sets the length field's encoding. Affects encoding and decoding.
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
        self.bad_width = None;
        self
    }

    /// Sets a fixed-width length field of `width` bytes (1 to 8) in `order`.
    /// Affects encoding and decoding. Another width is reported by
    /// [`try_config`](Self::try_config).
    ///
    /// ```
    /// use framekit_codec::frame::{Builder, ByteOrder, LengthPrefix};
    ///
    /// let config = Builder::new().length_field(3, ByteOrder::LittleEndian).try_config()?;
    /// assert_eq!(config.prefix(), LengthPrefix::U24Le);
    /// assert!(Builder::new().length_field(0, ByteOrder::BigEndian).try_config().is_err());
    /// # Ok::<(), framekit_codec::ConfigError>(())
    /// ```
    pub fn length_field(&mut self, width: usize, order: ByteOrder) -> &mut Self {
        match LengthPrefix::fixed(width, order) {
            Some(prefix) => self.prefix(prefix),
            None => {
                self.bad_width = Some(width);
                self
            }
        }
    }

    /// Sets how many header bytes precede the length field (0 by default).
    /// Affects encoding (the header is given with the payload, see
    /// [`FrameConfig::encode_with_header`]) and decoding.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use framekit_codec::frame::{FrameCodec, LengthPrefix};
    ///
    /// // A type byte, then a 2-byte length; the type byte is kept.
    /// let mut codec = FrameCodec::builder()
    ///     .length_field_offset(1)
    ///     .prefix(LengthPrefix::U16Be)
    ///     .strip(0)
    ///     .new_codec();
    /// let mut buf = BytesMut::from(&b"T\x00\x02hi"[..]);
    /// assert_eq!(&codec.decode_frame(&mut buf)?.unwrap()[..], b"T\x00\x02hi");
    /// # Ok::<(), framekit_codec::Error>(())
    /// ```
    pub fn length_field_offset(&mut self, offset: usize) -> &mut Self {
        self.offset = offset;
        self
    }

    /// Sets a value added to the length field's value to obtain the number
    /// of bytes that follow the length field (the encoder subtracts it).
    /// Affects encoding and decoding.
    ///
    /// Use `-(offset + width)` for a length that counts the whole frame,
    /// `-width` for one that counts itself (PostgreSQL), and a positive value
    /// for bytes after the length field that it does not count (MySQL's
    /// sequence id, AMQP's frame-end octet). Arithmetic is checked: a length
    /// that the adjustment would make negative is
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

    /// Sets how many leading bytes of each frame the decoder drops. By
    /// default it drops the whole head (the header and the length field),
    /// delivering what follows the length field; `0` delivers the frame as
    /// it was on the wire. Affects decoding only.
    ///
    /// It may reach past the length field into bytes every frame has (a
    /// positive adjustment's), but no further: [`try_config`](Self::try_config)
    /// refuses a strip longer than the shortest possible frame.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use framekit_codec::frame::{FrameCodec, LengthPrefix};
    ///
    /// // A 3-byte length, then a sequence byte it does not count: strip the
    /// // length, keep the sequence byte.
    /// let mut codec = FrameCodec::builder()
    ///     .prefix(LengthPrefix::U24Le)
    ///     .length_adjustment(1)
    ///     .strip(3)
    ///     .new_codec();
    /// let mut buf = BytesMut::from(&b"\x02\x00\x00\x07hi"[..]);
    /// assert_eq!(&codec.decode_frame(&mut buf)?.unwrap()[..], b"\x07hi");
    /// # Ok::<(), framekit_codec::Error>(())
    /// ```
    pub fn strip(&mut self, bytes: usize) -> &mut Self {
        self.strip = Some(bytes);
        self
    }

    /// Limits a varint length field to `bytes` bytes (1 to 10; MQTT's
    /// remaining length takes at most 4). Affects decoding (a longer varint
    /// is [`Error::InvalidVarint`](crate::Error::InvalidVarint)) and encoding
    /// (lengths that need more bytes are refused).
    pub fn varint_max_bytes(&mut self, bytes: usize) -> &mut Self {
        self.varint_max_bytes = Some(bytes);
        self
    }

    /// Sets the largest adjusted length, in bytes: the most bytes that may
    /// follow the length field (the header before it and the field itself
    /// are not counted). Affects encoding (larger payloads are refused) and
    /// decoding (larger declared lengths are refused or discarded as soon as
    /// the length field is read, before any buffer is reserved for them).
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

    /// The configuration built so far, or why it is impossible.
    ///
    /// ```
    /// use framekit_codec::ConfigError;
    /// use framekit_codec::frame::Builder;
    ///
    /// // A 2-byte length at offset 1 makes a 3-byte head: 4 bytes cannot be
    /// // stripped from every frame.
    /// let err = Builder::new()
    ///     .length_field_offset(1)
    ///     .prefix(framekit_codec::frame::LengthPrefix::U16Be)
    ///     .strip(4)
    ///     .try_config()
    ///     .unwrap_err();
    /// assert_eq!(err, ConfigError::StripBeyondFrame { strip: 4, shortest: 3 });
    /// ```
    pub fn try_config(&self) -> Result<FrameConfig, ConfigError> {
        if let Some(width) = self.bad_width {
            return Err(ConfigError::Width { width });
        }
        let varint = self.prefix == LengthPrefix::Varint;
        match self.varint_max_bytes {
            Some(_) if !varint => return Err(ConfigError::VarintLimitWithoutVarint),
            Some(bytes) if !(1..=MAX_VARINT_LEN).contains(&bytes) => {
                return Err(ConfigError::VarintLimit { bytes });
            }
            _ => {}
        }
        if self.offset.checked_add(MAX_VARINT_LEN).is_none() {
            return Err(ConfigError::OffsetTooLarge {
                offset: self.offset,
            });
        }
        if let Some(strip) = self.strip {
            // Every frame has its header, at least one length field byte,
            // and at least a positive adjustment's bytes after the field.
            let shortest = (self.offset + self.prefix.width().unwrap_or(1))
                .saturating_add(usize::try_from(self.adjustment).unwrap_or(0));
            if strip > shortest {
                return Err(ConfigError::StripBeyondFrame { strip, shortest });
            }
        }
        let mut config = FrameConfig {
            prefix: self.prefix,
            offset: self.offset,
            adjustment: self.adjustment,
            strip: self.strip,
            max_frame_length: self.max_frame_length,
            oversize: self.oversize,
            varint_max_bytes: self.varint_max_bytes,
            max_varint_len: self.varint_max_bytes.unwrap_or(MAX_VARINT_LEN),
        };
        // In error mode a varint need not be longer than the largest value
        // that describes an acceptable frame; in discard mode any length
        // must be readable.
        if self.oversize == Oversize::Error {
            config.max_varint_len = config.max_varint_len.min(varint_len(config.max_wire_len()));
        }
        Ok(config)
    }

    /// The configuration built so far.
    ///
    /// # Panics
    ///
    /// If the configuration is impossible (see
    /// [`try_config`](Self::try_config), which reports it instead). The
    /// settings that existed before offsets, widths and stripping never
    /// make it so.
    pub fn config(&self) -> FrameConfig {
        match self.try_config() {
            Ok(config) => config,
            Err(e) => panic!("impossible frame configuration: {e}"),
        }
    }

    /// Builds a codec with this configuration.
    ///
    /// # Panics
    ///
    /// As [`config`](Self::config) does.
    pub fn new_codec(&self) -> FrameCodec {
        FrameCodec::with_config(self.config())
    }

    /// Builds a codec with this configuration, or says why it is impossible.
    pub fn try_new_codec(&self) -> Result<FrameCodec, ConfigError> {
        self.try_config().map(FrameCodec::with_config)
    }
}

/// Where the decoder is within the current frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DecodeState {
    /// Waiting for a complete head whose length field is big-endian (or a
    /// single byte).
    HeadBig,
    /// Waiting for a complete head whose length field is little-endian (or
    /// a varint).
    HeadLittle,
    /// The head was parsed and its stripped bytes consumed: the frame ends
    /// `len` bytes from the start of the buffer. Its first `kept` bytes are
    /// head bytes that are delivered; then `skip` more bytes are dropped (a
    /// strip that reaches past the head).
    Data {
        len: usize,
        kept: usize,
        skip: usize,
    },
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
    /// The fast path's rules, derived from `config` once.
    shortcut: Shortcut,
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
            shortcut: config.shortcut(),
            state: DecodeState::HeadBig,
            discarded: 0,
        }
        .at_boundary()
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
        matches!(self.state, DecodeState::HeadBig | DecodeState::HeadLittle)
    }

    /// The state between frames for this codec's layout.
    fn head_state(&self) -> DecodeState {
        if self.shortcut.big_endian() {
            DecodeState::HeadBig
        } else {
            DecodeState::HeadLittle
        }
    }

    fn at_boundary(mut self) -> Self {
        self.state = self.head_state();
        self
    }
}
