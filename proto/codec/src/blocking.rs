//! Framing over blocking `std::io` readers and writers.
//!
//! # Why `write` is not enough
//!
//! [`Write::write`] may write only part of its buffer and report how much it
//! took: a TCP socket whose send buffer is nearly full accepts what fits.
//! Code that calls `write` once per frame and ignores the count silently
//! drops the rest of the frame, and the peer then reads the next frame's
//! bytes as the end of this one. This is the difference between BSD
//! `send`, which returns a count, and Python's `socket.sendall`, which loops
//! until every byte is out. [`write_frame`] is the `sendall` of frames: it
//! loops (with vectored writes, so the prefix and payload go out together
//! without being copied into one buffer) until every byte is written.
//!
//! Reading has the mirror problem: [`Read::read`] returns whatever has
//! arrived, which may be half a prefix or several frames at once.
//! [`read_frame`] uses [`Read::read_exact`] for exactly the prefix and then
//! exactly the payload. Wrap sockets in a [`std::io::BufReader`] so that
//! small frames do not cost a system call each.
//!
//! ```
//! use std::io::Cursor;
//! use framekit_codec::blocking::{read_frame, write_frame};
//! use framekit_codec::frame::FrameConfig;
//!
//! let config = FrameConfig::default();
//! let mut wire = Vec::new();
//! write_frame(&mut wire, &config, b"one")?;
//! write_frame(&mut wire, &config, b"")?;
//!
//! let mut reader = Cursor::new(wire);
//! assert_eq!(&read_frame(&mut reader, &config)?.unwrap()[..], b"one");
//! assert_eq!(&read_frame(&mut reader, &config)?.unwrap()[..], b"");
//! assert_eq!(read_frame(&mut reader, &config)?, None); // clean end of stream
//! # Ok::<(), framekit_codec::Error>(())
//! ```

use crate::error::Error;
use crate::frame::{
    Decoded, FrameConfig, LengthPrefix, MIN_READ_AHEAD, Oversize, READ_AHEAD, varint_step,
};
use crate::message;
use bytes::{Bytes, BytesMut};
use serde::{Serialize, de::DeserializeOwned};
use std::io::{self, IoSlice, Read, Write};

/// Writes one frame, every byte of it, like `sendall`.
///
/// The prefix and the payload are passed to the writer as two slices of a
/// vectored write; the payload is not copied. If the payload cannot be
/// framed (too long for the maximum or for the prefix), nothing is written
/// and [`Error::PayloadTooLarge`] is returned.
///
/// Flushing a buffered writer is left to the caller.
pub fn write_frame<W: Write + ?Sized>(
    writer: &mut W,
    config: &FrameConfig,
    payload: &[u8],
) -> Result<(), Error> {
    let head = config.encode_head(payload.len())?;
    write_all_vectored(
        writer,
        &mut [IoSlice::new(head.as_slice()), IoSlice::new(payload)],
    )?;
    Ok(())
}

/// Writes every byte of `bufs`, retrying on partial writes and
/// interruptions (a stable counterpart of `Write::write_all_vectored`).
pub fn write_all_vectored<W: Write + ?Sized>(
    writer: &mut W,
    mut bufs: &mut [IoSlice<'_>],
) -> io::Result<()> {
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        match writer.write_vectored(bufs) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads one frame's payload.
///
/// Returns `Ok(None)` when the stream ends cleanly at a frame boundary,
/// [`Error::Truncated`] when it ends inside a frame, and
/// [`Error::FrameTooLarge`] as soon as a prefix declares more than the
/// maximum (in [`Oversize::Discard`] mode such frames are skipped instead).
/// The payload buffer grows as bytes arrive, by at most
/// [`READ_AHEAD`] bytes at a time and never more than has arrived (at least
/// [`MIN_READ_AHEAD`]), so a declared length costs nothing
/// until the data is actually sent.
pub fn read_frame<R: Read + ?Sized>(
    reader: &mut R,
    config: &FrameConfig,
) -> Result<Option<Bytes>, Error> {
    loop {
        match read_next(reader, config)? {
            Some(Decoded::Frame(frame)) => return Ok(Some(frame)),
            Some(Decoded::Discarded { .. }) => continue,
            None => return Ok(None),
        }
    }
}

/// Reads the next frame or skips the next oversized frame, reporting which.
/// See [`read_frame`].
pub fn read_next<R: Read + ?Sized>(
    reader: &mut R,
    config: &FrameConfig,
) -> Result<Option<Decoded>, Error> {
    let Some(wire) = read_head(reader, config)? else {
        return Ok(None);
    };
    let declared = config.payload_len(wire)?;
    let len = match usize::try_from(declared) {
        Ok(len) if len <= config.max_frame_length() => len,
        _ if config.oversize() == Oversize::Discard => {
            let skipped = io::copy(&mut reader.take(declared), &mut io::sink())?;
            if skipped < declared {
                return Err(Error::Truncated {
                    received: skipped,
                    expected: Some(declared),
                });
            }
            return Ok(Some(Decoded::Discarded { length: declared }));
        }
        _ => {
            return Err(Error::FrameTooLarge {
                declared,
                max: config.max_frame_length() as u64,
            });
        }
    };

    let mut payload = BytesMut::with_capacity(len.min(MIN_READ_AHEAD));
    while payload.len() < len {
        let start = payload.len();
        // Grow with what has arrived: double, within the read-ahead.
        let chunk = (len - start).min(start.max(MIN_READ_AHEAD)).min(READ_AHEAD);
        payload.resize(start + chunk, 0);
        if let Err(e) = read_full(reader, &mut payload[start..]) {
            return Err(match e {
                Short::Eof(got) => Error::Truncated {
                    received: (start + got) as u64,
                    expected: Some(len as u64),
                },
                Short::Io(e) => Error::Io(e),
            });
        }
    }
    Ok(Some(Decoded::Frame(payload.freeze())))
}

/// Reads a length prefix. `Ok(None)` on a clean end of stream.
fn read_head<R: Read + ?Sized>(reader: &mut R, config: &FrameConfig) -> Result<Option<u64>, Error> {
    let truncated = |received: usize| Error::Truncated {
        received: received as u64,
        expected: None,
    };
    let Some(width) = config.prefix().width() else {
        return read_varint(reader, config.max_varint_len);
    };
    let mut bytes = [0u8; 8];
    match read_full(reader, &mut bytes[..width]) {
        Ok(()) => {}
        Err(Short::Eof(0)) => return Ok(None),
        Err(Short::Eof(got)) => return Err(truncated(got)),
        Err(Short::Io(e)) => return Err(Error::Io(e)),
    }
    let [b0, b1, b2, b3, b4, b5, b6, b7] = bytes;
    Ok(Some(match config.prefix() {
        LengthPrefix::U8 => u64::from(b0),
        LengthPrefix::U16Be => u64::from(u16::from_be_bytes([b0, b1])),
        LengthPrefix::U16Le => u64::from(u16::from_le_bytes([b0, b1])),
        LengthPrefix::U32Be => u64::from(u32::from_be_bytes([b0, b1, b2, b3])),
        LengthPrefix::U32Le => u64::from(u32::from_le_bytes([b0, b1, b2, b3])),
        LengthPrefix::U64Be => u64::from_be_bytes(bytes),
        LengthPrefix::U64Le | LengthPrefix::Varint => {
            u64::from_le_bytes([b0, b1, b2, b3, b4, b5, b6, b7])
        }
    }))
}

fn read_varint<R: Read + ?Sized>(reader: &mut R, max_len: usize) -> Result<Option<u64>, Error> {
    let mut value = 0u64;
    for i in 0..max_len {
        let mut byte = [0u8; 1];
        match read_full(reader, &mut byte) {
            Ok(()) => {}
            Err(Short::Eof(_)) if i == 0 => return Ok(None),
            Err(Short::Eof(_)) => {
                return Err(Error::Truncated {
                    received: i as u64,
                    expected: None,
                });
            }
            Err(Short::Io(e)) => return Err(Error::Io(e)),
        }
        if varint_step(&mut value, i, byte[0])? {
            return Ok(Some(value));
        }
    }
    Err(Error::InvalidVarint { len: max_len + 1 })
}

/// Why `read_full` stopped early.
enum Short {
    /// End of stream after this many bytes.
    Eof(usize),
    Io(io::Error),
}

/// `read_exact` that reports how many bytes arrived before end of stream.
fn read_full<R: Read + ?Sized>(reader: &mut R, buf: &mut [u8]) -> Result<(), Short> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => return Err(Short::Eof(filled)),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Short::Io(e)),
        }
    }
    Ok(())
}

/// Writes `msg` as one frame, every byte of it. The message is encoded
/// into a buffer first so that it goes out in a single write.
pub fn write_message<W: Write + ?Sized, T: Serialize + ?Sized>(
    writer: &mut W,
    config: &FrameConfig,
    msg: &T,
) -> Result<(), Error> {
    let frame = message::to_frame(config, msg)?;
    writer.write_all(&frame)?;
    Ok(())
}

/// Reads one frame and decodes it as a `T`. `Ok(None)` on a clean end of
/// stream at a frame boundary.
pub fn read_message<R: Read + ?Sized, T: DeserializeOwned>(
    reader: &mut R,
    config: &FrameConfig,
) -> Result<Option<T>, Error> {
    match read_frame(reader, config)? {
        Some(frame) => message::decode(&frame).map(Some),
        None => Ok(None),
    }
}
