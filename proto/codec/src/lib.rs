//! Length-prefixed framing for TCP, typed messages, and the framekit
//! file-transfer protocol.
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
//! [`message`]; the file-transfer protocol built on them is the `framekit-transfer` crate.
//!
//! # Limits
//!
//! A length prefix is a claim, not a fact. The decoder checks it against a
//! maximum (16 MiB by default) as soon as it is read, and reserves buffer
//! space only as payload bytes actually arrive, so a peer that declares a
//! huge frame and stalls costs almost nothing.

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
