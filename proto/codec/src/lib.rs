//! Length-prefixed framing for TCP: the framekit protocol's own frames,
//! and the frames of protocols people already speak (PostgreSQL, MySQL, TLS
//! records, AMQP, Bitcoin, MQTT, Kafka, DNS over TCP, protobuf streams);
//! typed messages on top.
//!
//! # Why frames
//!
//! TCP delivers a stream of bytes, not messages. What one side sends with
//! two `send` calls may arrive in one `recv` (glued together: "sticky
//! packets"), and what it sends in one call may arrive in several pieces
//! (split packets):
//!
//! ```text
//! sent:      [ hello ][ world ]
//! received:  [ hel ][ loworld ]        split, then glued
//!
//! framed:    [00 00 00 05|h e l l o][00 00 00 05|w o r l d]
//! received:  [00 00 00 05 h e l][l o 00 00 00 05 w o r l d]
//! decoded:   "hello"  "world"          whatever the cut points
//! ```
//!
//! Each frame starts with its payload's length, so the receiver knows where
//! the frame ends however the bytes arrive, and a writer must write every
//! byte (`write_all`, like Python's `sendall`), not only what one `write`
//! accepted.
//!
//! # One core, three ways to use it
//!
//! The [`frame::FrameCodec`] core performs no I/O: it takes bytes in and
//! gives frames out, as [`bytes::Bytes`] that share the receive buffer
//! without copying the payload.
//!
//! **Sans-IO**, with any source of bytes:
//!
//! ```
//! use bytes::BytesMut;
//! use framekit_codec::frame::FrameCodec;
//!
//! let mut codec = FrameCodec::new();
//! let mut buf = BytesMut::new();
//! for chunk in [&b"\0\0\0\x05hel"[..], b"lo\0\0", b"\0\x05world"] {
//!     buf.extend_from_slice(chunk);
//!     while let Some(frame) = codec.decode_frame(&mut buf)? {
//!         println!("{frame:?}");
//!     }
//! }
//! assert_eq!(codec.decode_eof(&mut buf)?, None);
//! # Ok::<(), framekit_codec::Error>(())
//! ```
//!
//! **tokio**, through tokio-util's `Framed`:
//!
//! ```no_run
//! # #[cfg(feature = "tokio")] mod example {
//! use futures_util::{SinkExt, StreamExt};
//! use framekit_codec::frame::FrameCodec;
//! use tokio_util::codec::Framed;
//!
//! # async fn run() -> Result<(), framekit_codec::Error> {
//! let stream = tokio::net::TcpStream::connect("127.0.0.1:7000").await?;
//! let mut framed = Framed::new(stream, FrameCodec::new());
//! framed.send(bytes::Bytes::from_static(b"ping")).await?;
//! while let Some(frame) = framed.next().await {
//!     let frame = frame?; // a truncated stream is an error, not a short frame
//!     println!("{} bytes", frame.len());
//! }
//! # Ok(())
//! # }
//! # }
//! ```
//!
//! **Blocking `std::io`**:
//!
//! ```no_run
//! use framekit_codec::blocking::{read_frame, write_frame};
//! use framekit_codec::frame::FrameConfig;
//! use std::io::BufReader;
//! use std::net::TcpStream;
//!
//! let config = FrameConfig::default();
//! let stream = TcpStream::connect("127.0.0.1:7000")?;
//! write_frame(&mut &stream, &config, b"ping")?;
//! let mut reader = BufReader::new(&stream);
//! while let Some(frame) = read_frame(&mut reader, &config)? {
//!     println!("{} bytes", frame.len());
//! }
//! # Ok::<(), framekit_codec::Error>(())
//! ```
//!
//! Typed messages (serde values encoded with bincode, one per frame) are in
//! [`message`]; the file-transfer protocol built on them is the
//! `framekit-transfer` crate.
//!
//! # Frame layout
//!
//! ```text
//! +--- header ---+-- length field --+--------- rest of the frame ---------+
//! |  offset bytes |  width bytes    |  length field value + adjustment     |
//! +--------------+------------------+--------------------------------------+
//! |<------------- strip ----------->|  delivered (by default)
//! ```
//!
//! [`Builder`] sets each part:
//!
//! - [`length_field_offset`](Builder::length_field_offset): header bytes
//!   before the length field (0 by default);
//! - [`prefix`](Builder::prefix) or [`length_field`](Builder::length_field):
//!   the length field, 1 to 8 bytes in either byte order, or a LEB128 varint
//!   (with [`varint_max_bytes`](Builder::varint_max_bytes) to limit it);
//! - [`length_adjustment`](Builder::length_adjustment): added to the length
//!   field's value to give the number of bytes after the length field;
//! - [`strip`](Builder::strip): how many leading bytes of each frame are
//!   dropped before it is delivered; by default the header and the length
//!   field, so that the bytes after the length field are delivered; `0`
//!   delivers the whole frame, header included;
//! - [`max_frame_length`](Builder::max_frame_length): the largest adjusted
//!   length, that is the most bytes that may follow the length field. The
//!   header and the length field are not counted, nor does stripping change
//!   it: a frame occupies at most offset + field width + maximum bytes on the
//!   wire ([`FrameConfig::max_encoded_len`]).
//!
//! A delivered frame is always one [`Bytes`](bytes::Bytes) slice of the
//! receive buffer, header included or not: the decoder leaves the head in
//! the buffer until the frame is complete, cuts the whole frame off, and
//! skips the stripped bytes on the frozen slice. Nothing is copied, and a
//! kept header costs nothing more than a stripped one.
//!
//! The encoder writes each layout from the header bytes and what follows the
//! length field: [`FrameConfig::encode_with_header`],
//! [`blocking::write_frame_with_header`] and, with tokio,
//! `frame::write_frame_with_header`. It applies the adjustment in reverse
//! and refuses lengths the field cannot carry.
//!
//! # Protocols
//!
//! | protocol | offset | length field | adjustment | strip | delivered |
//! |---|---:|---|---:|---:|---|
//! | plain length prefix (framekit's own, the default) | 0 | 4 bytes, big-endian | 0 | head | payload |
//! | PostgreSQL frontend/backend, after startup | 1 | 4 bytes, big-endian, counts itself | -4 | 0 | type byte, length, body |
//! | MySQL client/server packets | 0 | 3 bytes, little-endian | +1 (the sequence id) | 3 | sequence id, payload |
//! | TLS records | 3 | 2 bytes, big-endian | 0 | 0 | type, version, length, fragment |
//! | AMQP 0-9-1 frames | 3 | 4 bytes, big-endian | +1 (the frame-end octet) | 0 | the whole frame |
//! | Bitcoin P2P messages | 16 | 4 bytes, little-endian | +4 (the checksum) | 0 | 24-byte header, payload |
//! | MQTT control packets | 1 | varint, at most 4 bytes | 0 | 0 | the whole packet |
//! | protobuf, varint-delimited | 0 | varint | 0 | head | message |
//! | Kafka requests and responses | 0 | 4 bytes, big-endian | 0 | head | request or response |
//! | DNS over TCP | 0 | 2 bytes, big-endian | 0 | head | DNS message |
//!
//! Each protocol below decodes a message written by hand from its
//! specification. Checking what the framing does not cover (AMQP's frame-end
//! octet, Bitcoin's checksum, MySQL's sequence ids and the continuation of
//! a payload of exactly 2^24 - 1 bytes, PostgreSQL's startup message, which
//! has no type byte) is the caller's job.
//!
//! **PostgreSQL**: a type byte, then an `Int32` length that counts itself but
//! not the type byte.
//!
//! ```
//! use bytes::BytesMut;
//! use framekit_codec::frame::{FrameCodec, LengthPrefix};
//!
//! let mut codec = FrameCodec::builder()
//!     .length_field_offset(1)
//!     .prefix(LengthPrefix::U32Be)
//!     .length_adjustment(-4)
//!     .strip(0)
//!     .new_codec();
//! let mut buf = BytesMut::from(&b"Q\x00\x00\x00\x0DSELECT 1\x00Z\x00\x00\x00\x05I"[..]);
//! assert_eq!(&codec.decode_frame(&mut buf)?.unwrap()[..], b"Q\x00\x00\x00\x0DSELECT 1\x00");
//! assert_eq!(&codec.decode_frame(&mut buf)?.unwrap()[..], b"Z\x00\x00\x00\x05I");
//! # Ok::<(), framekit_codec::Error>(())
//! ```
//!
//! **MySQL**: a 3-byte little-endian payload length, then a sequence id that
//! it does not count. A payload of exactly `0xFFFFFF` bytes is continued by
//! the next packet; the codec delivers each packet, the caller joins them.
//!
//! ```
//! use bytes::BytesMut;
//! use framekit_codec::frame::{FrameCodec, LengthPrefix};
//!
//! let mut codec = FrameCodec::builder()
//!     .prefix(LengthPrefix::U24Le)
//!     .length_adjustment(1)
//!     .strip(3)
//!     .max_frame_length(1 << 24) // a full packet and its sequence id
//!     .new_codec();
//! // COM_QUERY "SELECT 1", sequence id 0.
//! let mut buf = BytesMut::from(&b"\x09\x00\x00\x00\x03SELECT 1"[..]);
//! let packet = codec.decode_frame(&mut buf)?.unwrap();
//! assert_eq!(packet[0], 0); // the sequence id
//! assert_eq!(&packet[1..], b"\x03SELECT 1");
//! # Ok::<(), framekit_codec::Error>(())
//! ```
//!
//! **TLS records**: content type, legacy version, then a 2-byte length.
//!
//! ```
//! use bytes::BytesMut;
//! use framekit_codec::frame::{FrameCodec, LengthPrefix};
//!
//! let mut codec = FrameCodec::builder()
//!     .length_field_offset(3)
//!     .prefix(LengthPrefix::U16Be)
//!     .strip(0)
//!     .max_frame_length((1 << 14) + 256) // TLSCiphertext's limit
//!     .new_codec();
//! // A fatal handshake_failure alert.
//! let mut buf = BytesMut::from(&b"\x15\x03\x03\x00\x02\x02\x28"[..]);
//! assert_eq!(&codec.decode_frame(&mut buf)?.unwrap()[..], b"\x15\x03\x03\x00\x02\x02\x28");
//! # Ok::<(), framekit_codec::Error>(())
//! ```
//!
//! **AMQP 0-9-1**: type, channel, a 4-byte size, the payload, then the
//! frame-end octet `0xCE`, which the size does not count. The codec delivers
//! a frame whatever its last octet; check it.
//!
//! ```
//! use bytes::BytesMut;
//! use framekit_codec::frame::{FrameCodec, LengthPrefix};
//!
//! let mut codec = FrameCodec::builder()
//!     .length_field_offset(3)
//!     .prefix(LengthPrefix::U32Be)
//!     .length_adjustment(1)
//!     .strip(0)
//!     .new_codec();
//! // A heartbeat frame.
//! let mut buf = BytesMut::from(&b"\x08\x00\x00\x00\x00\x00\x00\xCE"[..]);
//! let frame = codec.decode_frame(&mut buf)?.unwrap();
//! assert_eq!(frame[0], 8);
//! assert_eq!(frame.last(), Some(&0xCE), "a frame must end with 0xCE");
//! # Ok::<(), framekit_codec::Error>(())
//! ```
//!
//! **Bitcoin P2P**: a 24-byte header (magic, command, payload length at
//! offset 16, little-endian, then a 4-byte checksum), then the payload.
//!
//! ```
//! use bytes::BytesMut;
//! use framekit_codec::frame::{FrameCodec, LengthPrefix};
//!
//! let mut codec = FrameCodec::builder()
//!     .length_field_offset(16)
//!     .prefix(LengthPrefix::U32Le)
//!     .length_adjustment(4) // the checksum follows the length
//!     .strip(0)
//!     .max_frame_length(4 + 32 * 1024 * 1024)
//!     .new_codec();
//! // verack on mainnet: no payload.
//! let verack = b"\xF9\xBE\xB4\xD9verack\0\0\0\0\0\0\0\0\0\0\x5D\xF6\xE0\xE2";
//! let mut buf = BytesMut::from(&verack[..]);
//! assert_eq!(&codec.decode_frame(&mut buf)?.unwrap()[..], verack);
//! # Ok::<(), framekit_codec::Error>(())
//! ```
//!
//! **MQTT**: a fixed header byte, then the remaining length as a variable
//! byte integer of at most 4 bytes.
//!
//! ```
//! use bytes::BytesMut;
//! use framekit_codec::frame::{FrameCodec, LengthPrefix};
//!
//! let mut codec = FrameCodec::builder()
//!     .length_field_offset(1)
//!     .prefix(LengthPrefix::Varint)
//!     .varint_max_bytes(4)
//!     .strip(0)
//!     .max_frame_length(268_435_455)
//!     .new_codec();
//! // PUBLISH, QoS 0, topic "a/b", payload "hi"; then PINGREQ.
//! let mut buf = BytesMut::from(&b"\x30\x07\x00\x03a/bhi\xC0\x00"[..]);
//! assert_eq!(&codec.decode_frame(&mut buf)?.unwrap()[..], b"\x30\x07\x00\x03a/bhi");
//! assert_eq!(&codec.decode_frame(&mut buf)?.unwrap()[..], b"\xC0\x00");
//! # Ok::<(), framekit_codec::Error>(())
//! ```
//!
//! **protobuf, varint-delimited** (`writeDelimitedTo`): a varint length, then
//! the message.
//!
//! ```
//! use bytes::BytesMut;
//! use framekit_codec::frame::{FrameCodec, LengthPrefix};
//!
//! let mut codec = FrameCodec::builder().prefix(LengthPrefix::Varint).new_codec();
//! // A message with field 1 = 150.
//! let mut buf = BytesMut::from(&b"\x03\x08\x96\x01"[..]);
//! assert_eq!(&codec.decode_frame(&mut buf)?.unwrap()[..], b"\x08\x96\x01");
//! # Ok::<(), framekit_codec::Error>(())
//! ```
//!
//! **Kafka**: a 4-byte big-endian size, then the request or response.
//!
//! ```
//! use bytes::BytesMut;
//! use framekit_codec::frame::FrameCodec;
//!
//! let mut codec = FrameCodec::builder().max_frame_length(100 * 1024 * 1024).new_codec();
//! // ApiVersions v0, correlation id 1, client id "x".
//! let mut buf = BytesMut::from(&b"\x00\x00\x00\x0B\x00\x12\x00\x00\x00\x00\x00\x01\x00\x01x"[..]);
//! let request = codec.decode_frame(&mut buf)?.unwrap();
//! assert_eq!(&request[..2], b"\x00\x12"); // api_key 18
//! # Ok::<(), framekit_codec::Error>(())
//! ```
//!
//! **DNS over TCP**: a 2-byte big-endian length, then the DNS message.
//!
//! ```
//! use bytes::BytesMut;
//! use framekit_codec::frame::{FrameCodec, LengthPrefix};
//!
//! let mut codec = FrameCodec::builder().prefix(LengthPrefix::U16Be).new_codec();
//! // A query for "a." type A, id 0x1234.
//! let query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01a\x00\x00\x01\x00\x01";
//! let mut buf = BytesMut::from(&b"\x00\x13"[..]);
//! buf.extend_from_slice(query);
//! assert_eq!(&codec.decode_frame(&mut buf)?.unwrap()[..], query);
//! # Ok::<(), framekit_codec::Error>(())
//! ```
//!
//! **Plain 4-byte big-endian prefix** (the default, and the file-transfer
//! protocol's frames):
//!
//! ```
//! use bytes::BytesMut;
//! use framekit_codec::frame::FrameCodec;
//!
//! let mut codec = FrameCodec::new();
//! let mut buf = BytesMut::from(&b"\x00\x00\x00\x02hi"[..]);
//! assert_eq!(&codec.decode_frame(&mut buf)?.unwrap()[..], b"hi");
//! # Ok::<(), framekit_codec::Error>(())
//! ```
//!
//! # Coming from `LengthDelimitedCodec` or Netty
//!
//! Netty's `LengthFieldBasedFrameDecoder` parameters map one to one:
//! `lengthFieldOffset`, `lengthFieldLength`, `lengthAdjustment` and
//! `initialBytesToStrip` are the offset, the width, the adjustment and the
//! strip. Its `maxFrameLength` counts the whole frame, ours only what follows
//! the length field.
//!
//! tokio-util's `LengthDelimitedCodec` counts its adjusted length from the end
//! of the bytes it skips (`num_skip`), ours from the end of the length
//! field: with the same offset, width and `strip = num_skip`, our adjustment
//! is `length_adjustment + num_skip - (offset + width)`. Its
//! `max_frame_length` is compared with the length field's value before the
//! adjustment, ours with the adjusted length. It also accepts a `num_skip`
//! longer than any frame, which our builder refuses. The tests reproduce the
//! examples of both documentations with these conversions.
//!
//! # Limits
//!
//! A length is a claim, not a fact. The decoder checks the adjusted length
//! against the maximum (16 MiB by default) as soon as the length field is
//! complete, before anything is reserved for the frame, and reserves buffer
//! space only as bytes actually arrive, so a peer that declares a huge frame
//! and stalls costs almost nothing. In [`Oversize::Discard`] mode an
//! oversized frame is skipped as it arrives, without being buffered, and
//! decoding goes on with the next frame. A stream that ends inside a frame
//! is [`Error::Truncated`].

#![deny(missing_docs)]

/// The crate's README, whose examples run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub mod blocking;
mod error;
pub mod frame;
pub mod message;

pub use bytes;
pub use error::{ConfigError, Error, MessageError};
pub use frame::{
    Builder, ByteOrder, DEFAULT_MAX_FRAME_LENGTH, Decoded, FrameCodec, FrameConfig, Head,
    LengthPrefix, Oversize,
};

#[cfg(feature = "tokio")]
pub use futures_util::{SinkExt, StreamExt};
#[cfg(feature = "tokio")]
pub use message::MessageCodec;
#[cfg(feature = "tokio")]
pub use tokio_util::codec::{Decoder, Encoder, Framed, FramedRead, FramedWrite};
