//! Arbitrary bytes, cut into arbitrary chunks, through the sans-IO decoder
//! and the blocking reader, under configurations drawn from the whole space
//! (header offsets, every width and byte order, varints with and without a
//! byte limit, adjustments, stripping), checked against a plain reference
//! model of the framing.
#![no_main]

use bytes::BytesMut;
use framekit_codec::Error;
use framekit_codec::frame::{Builder, ByteOrder, Decoded, FrameConfig, LengthPrefix, Oversize};
use libfuzzer_sys::fuzz_target;
use std::io::Read;

/// The fuzz input: `[config, max_hi, max_lo, n, cut_1 .. cut_n, data..]`,
/// and when the high bit of `config` is set, `data` starts with
/// `[offset, shape]` (the seeds of `tests/src/corpus.rs` leave it clear).
struct Input<'a> {
    /// Selects the prefix, adjustment, maximum and oversize policy, and
    /// whether `offset` and `shape` are given.
    config: u8,
    /// The length field offset, modulo 33.
    offset: u8,
    /// Selects the length field (all widths and orders), the strip and the
    /// varint limit.
    shape: Option<u8>,
    max: u16,
    /// Chunk lengths; the stream is cut at these points.
    cuts: &'a [u8],
    data: &'a [u8],
}

impl<'a> Input<'a> {
    fn parse(bytes: &'a [u8]) -> Option<Input<'a>> {
        let (&[config, max_hi, max_lo, n], rest) = bytes.split_first_chunk::<4>()?;
        let (cuts, data) = rest.split_at_checked(usize::from(n))?;
        let (offset, shape, data) = if config & 0x80 != 0 {
            let (&[offset, shape], data) = data.split_first_chunk::<2>()?;
            (offset, Some(shape), data)
        } else {
            (0, None, data)
        };
        Some(Input {
            config,
            offset,
            shape,
            max: u16::from_be_bytes([max_hi, max_lo]),
            cuts,
            data,
        })
    }
}

/// The prefixes of the seeds' selector (the low three bits of `config`).
const BASIC: [LengthPrefix; 8] = [
    LengthPrefix::U8,
    LengthPrefix::U16Be,
    LengthPrefix::U16Le,
    LengthPrefix::U32Be,
    LengthPrefix::U32Le,
    LengthPrefix::U64Be,
    LengthPrefix::U64Le,
    LengthPrefix::Varint,
];

/// Every length field, selected by `shape`.
const PREFIXES: [LengthPrefix; 16] = [
    LengthPrefix::U8,
    LengthPrefix::U16Be,
    LengthPrefix::U16Le,
    LengthPrefix::U24Be,
    LengthPrefix::U24Le,
    LengthPrefix::U32Be,
    LengthPrefix::U32Le,
    LengthPrefix::U40Be,
    LengthPrefix::U40Le,
    LengthPrefix::U48Be,
    LengthPrefix::U48Le,
    LengthPrefix::U56Be,
    LengthPrefix::U56Le,
    LengthPrefix::U64Be,
    LengthPrefix::U64Le,
    LengthPrefix::Varint,
];

fn config(selector: u8, offset: u8, shape: Option<u8>, max: u16) -> FrameConfig {
    let offset = usize::from(offset % 33);
    let prefix = match shape {
        Some(shape) => PREFIXES[usize::from(shape & 15)],
        None => BASIC[usize::from(selector & 7)],
    };
    let shape = shape.unwrap_or(0);
    let width = prefix.width().unwrap_or(1);
    let adjustment = match (selector >> 3) & 3 {
        0 => 0,
        // A length that counts the whole frame.
        1 => -((offset + width) as i64),
        2 => 3,
        _ => -1000,
    };
    let shortest = offset + width + adjustment.max(0) as usize;
    let strip = match (shape >> 4) & 3 {
        0 => None,
        1 => Some(0),
        2 => Some(offset),
        _ => Some(shortest),
    };
    let varint_max_bytes = match (shape >> 6) & 3 {
        _ if prefix != LengthPrefix::Varint => None,
        0 => None,
        1 => Some(1),
        2 => Some(2),
        _ => Some(4),
    };
    let oversize = if selector & 0x20 != 0 {
        Oversize::Discard
    } else {
        Oversize::Error
    };
    let max = if selector & 0x40 != 0 {
        framekit_codec::frame::DEFAULT_MAX_FRAME_LENGTH
    } else {
        usize::from(max % 2048)
    };
    let mut builder = Builder::new();
    builder
        .length_field_offset(offset)
        .prefix(prefix)
        .length_adjustment(adjustment)
        .max_frame_length(max)
        .oversize(oversize);
    if let Some(strip) = strip {
        builder.strip(strip);
    }
    if let Some(bytes) = varint_max_bytes {
        builder.varint_max_bytes(bytes);
    }
    builder.config()
}

#[derive(Debug, PartialEq)]
enum Event {
    Frame(Vec<u8>),
    Discarded(u64),
}

/// How a stream ends.
#[derive(Debug, PartialEq)]
enum End {
    Clean,
    Truncated,
    TooLarge,
    InvalidLength,
    InvalidVarint,
}

fn end_of(error: &Error) -> End {
    match error {
        Error::Truncated { .. } => End::Truncated,
        Error::FrameTooLarge { .. } => End::TooLarge,
        Error::InvalidLength { .. } => End::InvalidLength,
        Error::InvalidVarint { .. } => End::InvalidVarint,
        other => panic!("unexpected decoding error {other:?}"),
    }
}

/// The reference: the whole stream at once, written as plainly as possible.
/// Frames come with their header and what follows the length field, for
/// re-encoding.
fn model(config: &FrameConfig, data: &[u8]) -> (Vec<Event>, End, Vec<(Vec<u8>, Vec<u8>)>) {
    let mut events = Vec::new();
    let mut parts = Vec::new();
    let mut pos = 0usize;
    let max = config.max_frame_length() as u64;
    let adjustment = i128::from(config.length_adjustment());
    let discard = config.oversize() == Oversize::Discard;
    let offset = config.length_field_offset();
    loop {
        if pos == data.len() {
            return (events, End::Clean, parts);
        }
        let start = pos;
        if data.len() - pos < offset {
            return (events, End::Truncated, parts);
        }
        pos += offset;
        // The length field.
        let wire: u64 = match config.prefix().width() {
            Some(width) => {
                if data.len() - pos < width {
                    return (events, End::Truncated, parts);
                }
                let bytes = &data[pos..pos + width];
                let mut value = 0u64;
                let big = config.prefix().byte_order() == Some(ByteOrder::BigEndian);
                for i in 0..width {
                    let byte = if big { bytes[i] } else { bytes[width - 1 - i] };
                    value = (value << 8) | u64::from(byte);
                }
                pos += width;
                value
            }
            None => {
                // The varint may be as long as its limit, and in error mode
                // no longer than the largest acceptable value needs.
                let mut limit = config.varint_max_bytes().unwrap_or(10);
                if !discard {
                    let largest =
                        (i128::from(max as i64) - adjustment).clamp(1, i128::from(u64::MAX));
                    let mut n = 1;
                    while (largest >> (7 * n)) > 0 {
                        n += 1;
                    }
                    limit = limit.min(n);
                }
                let mut value: u128 = 0;
                let mut i = 0;
                loop {
                    if i == limit {
                        return (events, End::InvalidVarint, parts);
                    }
                    let Some(&byte) = data.get(pos + i) else {
                        return (events, End::Truncated, parts);
                    };
                    value |= u128::from(byte & 0x7f) << (7 * i);
                    if value > u128::from(u64::MAX) {
                        return (events, End::InvalidVarint, parts);
                    }
                    i += 1;
                    if byte & 0x80 == 0 {
                        break;
                    }
                }
                pos += i;
                value as u64
            }
        };
        let head_len = pos - start;
        let declared = i128::from(wire) + adjustment;
        if declared < 0 || declared > i128::from(u64::MAX) {
            return (events, End::InvalidLength, parts);
        }
        let declared = declared as u64;
        let remaining = (data.len() - pos) as u64;
        if declared > max {
            if !discard {
                return (events, End::TooLarge, parts);
            }
            if remaining < declared {
                return (events, End::Truncated, parts);
            }
            pos += declared as usize;
            events.push(Event::Discarded(declared));
            continue;
        }
        if remaining < declared {
            return (events, End::Truncated, parts);
        }
        let end = pos + declared as usize;
        let strip = config.strip().unwrap_or(head_len);
        events.push(Event::Frame(data[start + strip..end].to_vec()));
        parts.push((
            data[start..start + offset].to_vec(),
            data[pos..end].to_vec(),
        ));
        pos = end;
    }
}

fn chunks<'a>(data: &'a [u8], cuts: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    let mut cuts = cuts.iter().cycle();
    while !rest.is_empty() {
        let n = cuts
            .next()
            .map_or(rest.len(), |&c| usize::from(c).max(1))
            .min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        out.push(chunk);
        rest = tail;
    }
    out
}

fn sans_io(config: &FrameConfig, pieces: &[&[u8]]) -> (Vec<Event>, End) {
    let mut codec = framekit_codec::frame::FrameCodec::with_config(*config);
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    let bound = config.max_encoded_len();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode_next(&mut buf) {
                Ok(Some(Decoded::Frame(frame))) => events.push(Event::Frame(frame.to_vec())),
                Ok(Some(Decoded::Discarded { length })) => events.push(Event::Discarded(length)),
                Ok(None) => break,
                Err(e) => return (events, end_of(&e)),
            }
        }
        // Only an incomplete frame is ever held back.
        assert!(
            buf.len() < bound,
            "{} bytes buffered, bound {bound}",
            buf.len()
        );
    }
    loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(frame)) => events.push(Event::Frame(frame.to_vec())),
            Ok(None) => return (events, End::Clean),
            Err(e) => return (events, end_of(&e)),
        }
    }
}

/// A reader that returns the pieces one read at a time.
struct Pieces<'a> {
    pieces: std::vec::IntoIter<&'a [u8]>,
    current: &'a [u8],
}

impl Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.pieces.next() {
                Some(next) => self.current = next,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = &self.current[n..];
        Ok(n)
    }
}

fn blocking(config: &FrameConfig, pieces: Vec<&[u8]>) -> (Vec<Event>, End) {
    let mut reader = Pieces {
        pieces: pieces.into_iter(),
        current: &[],
    };
    let mut events = Vec::new();
    loop {
        match framekit_codec::blocking::read_next(&mut reader, config) {
            Ok(Some(Decoded::Frame(frame))) => events.push(Event::Frame(frame.to_vec())),
            Ok(Some(Decoded::Discarded { length })) => events.push(Event::Discarded(length)),
            Ok(None) => return (events, End::Clean),
            Err(e) => return (events, end_of(&e)),
        }
    }
}

fuzz_target!(|bytes: &[u8]| {
    let Some(input) = Input::parse(bytes) else {
        return;
    };
    let config = config(input.config, input.offset, input.shape, input.max);
    let (events, end, parts) = model(&config, input.data);
    let expected = (events, end);
    let pieces = chunks(input.data, input.cuts);
    assert_eq!(sans_io(&config, &pieces), expected, "sans-IO, {config:?}");
    assert_eq!(blocking(&config, pieces), expected, "blocking, {config:?}");

    // Whatever decoded re-encodes to the same bytes (fixed prefixes are
    // canonical; varints may have been padded).
    if expected.1 == End::Clean
        && config.prefix() != LengthPrefix::Varint
        && expected.0.iter().all(|e| matches!(e, Event::Frame(_)))
    {
        let mut out = BytesMut::new();
        for (header, body) in &parts {
            config
                .encode_with_header(header, body, &mut out)
                .expect("a decoded frame re-encodes");
        }
        assert_eq!(&out[..], input.data);
    }
});
