//! Framing over blocking `std::io` readers and writers.
//!
//! [`write_frame`] writes every byte of a frame (vectored, without copying
//! the payload), retrying partial writes. [`read_frame`] reads exactly one
//! frame's bytes and never past its end, so a caller can go on reading
//! other data from the same reader after a frame. Wrap sockets in a
//! [`std::io::BufReader`] so that small frames do not cost a system call
//! each. Both follow the same rules as the sans-IO
//! [`FrameCodec`](crate::frame::FrameCodec): same limits, same errors.
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
use crate::frame::core::{Parsed, Verdict, read_ahead};
use crate::frame::{Decoded, FrameConfig, MIN_READ_AHEAD};
use crate::message;
use bytes::{Buf, Bytes, BytesMut};
use serde::{Serialize, de::DeserializeOwned};
use std::io::{self, IoSlice, Read, Write};

/// Writes one frame, every byte of it, like `sendall`.
///
/// The length field and the payload are passed to the writer as two slices
/// of a vectored write; the payload is not copied. If the payload cannot be
/// framed (too long for the maximum or for the length field, or a
/// configuration with a header: see [`write_frame_with_header`]), nothing is
/// written and the error says why.
///
/// Flushing a buffered writer is left to the caller.
pub fn write_frame<W: Write + ?Sized>(
    writer: &mut W,
    config: &FrameConfig,
    payload: &[u8],
) -> Result<(), Error> {
    write_frame_with_header(writer, config, &[], payload)
}

/// Writes one frame with its header: `header` (exactly the configured
/// length field offset), the length field for `payload`, then `payload`,
/// in one vectored write without copying. Nothing is written if the frame
/// cannot be encoded.
///
/// ```
/// use framekit_codec::blocking::write_frame_with_header;
/// use framekit_codec::frame::{Builder, LengthPrefix};
///
/// // A TLS record: type and version, then a 2-byte length.
/// let config = Builder::new().length_field_offset(3).prefix(LengthPrefix::U16Be).config();
/// let mut out = Vec::new();
/// write_frame_with_header(&mut out, &config, b"\x15\x03\x03", b"\x02\x28")?;
/// assert_eq!(out, b"\x15\x03\x03\x00\x02\x02\x28");
/// # Ok::<(), framekit_codec::Error>(())
/// ```
pub fn write_frame_with_header<W: Write + ?Sized>(
    writer: &mut W,
    config: &FrameConfig,
    header: &[u8],
    payload: &[u8],
) -> Result<(), Error> {
    config.check_header(header)?;
    let head = config.encode_head(payload.len())?;
    write_all_vectored(
        writer,
        &mut [
            IoSlice::new(header),
            IoSlice::new(head.as_slice()),
            IoSlice::new(payload),
        ],
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
/// maximum (in [`Oversize::Discard`](crate::frame::Oversize::Discard) mode
/// such frames are skipped instead). The payload buffer grows as bytes
/// arrive, by at most [`READ_AHEAD`](crate::frame::READ_AHEAD) bytes at a time and never more than has
/// arrived (at least [`MIN_READ_AHEAD`]), so a declared length costs nothing
/// until the data is actually sent. Only the frame's own bytes are read.
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
    // Heads up to this long are read into the stack; longer ones (large
    // header offsets) into a vector.
    const INLINE_HEAD: usize = 64;
    let mut inline = [0u8; INLINE_HEAD];
    let mut heap = Vec::new();
    let head: &mut [u8] = match inline.get_mut(..config.max_head_len()) {
        Some(head) => head,
        None => {
            heap.resize(config.max_head_len(), 0);
            &mut heap
        }
    };
    let mut filled = 0;
    // Reads exactly the bytes the parser asks for, so nothing past the head
    // is consumed before the length is known.
    let (head_len, wire) = loop {
        let needed = match config.parse_head(&head[..filled])? {
            Parsed::Complete { len, wire } => break (len, wire),
            Parsed::Incomplete { needed } => needed,
        };
        // `head` holds the longest head the configuration allows, and the
        // parser fails before asking for more.
        let Some(missing) = head.get_mut(filled..needed) else {
            return Err(Error::InvalidVarint { len: needed });
        };
        match read_full(reader, missing) {
            Ok(()) => filled = needed,
            Err(Short::Eof(0)) if filled == 0 => return Ok(None),
            Err(Short::Eof(got)) => {
                return Err(Error::Truncated {
                    received: (filled + got) as u64,
                    expected: None,
                });
            }
            Err(Short::Io(e)) => return Err(Error::Io(e)),
        }
    };
    let len = match config.judge(wire)? {
        Verdict::Take(len) => len,
        Verdict::Discard(length) => {
            let skipped = io::copy(&mut reader.take(length), &mut io::sink())?;
            if skipped < length {
                return Err(Error::Truncated {
                    received: skipped,
                    expected: Some(length),
                });
            }
            return Ok(Some(Decoded::Discarded { length }));
        }
    };

    // The head bytes that are delivered, then the body; a strip that reaches
    // past the head drops the body's first bytes at the end.
    let strip = config.strip_len(head_len);
    let kept = head.get(strip.min(head_len)..head_len).unwrap_or_default();
    let mut frame = BytesMut::with_capacity(kept.len() + len.min(MIN_READ_AHEAD));
    frame.extend_from_slice(kept);
    let mut body = 0;
    while body < len {
        let start = frame.len();
        let chunk = read_ahead(len - body, body);
        frame.resize(start + chunk, 0);
        if let Err(e) = read_full(reader, &mut frame[start..]) {
            return Err(match e {
                Short::Eof(got) => Error::Truncated {
                    received: (body + got) as u64,
                    expected: Some(len as u64),
                },
                Short::Io(e) => Error::Io(e),
            });
        }
        body += chunk;
    }
    let mut frame = frame.freeze();
    frame.advance(strip.saturating_sub(head_len));
    Ok(Some(Decoded::Frame(frame)))
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
