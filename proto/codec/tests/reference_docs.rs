//! The examples of tokio-util's `LengthDelimitedCodec` and Netty's
//! `LengthFieldBasedFrameDecoder` documentation, each with its parameters
//! and the byte diagram it decodes.
//!
//! Netty's parameters map one to one onto ours. `LengthDelimitedCodec`
//! counts its adjusted length from the end of the bytes it skips
//! (`num_skip`), ours from the end of the length field, so its adjustment
//! converts as `ours = theirs + num_skip - (offset + width)`; every
//! `LengthDelimitedCodec` example is also decoded by `LengthDelimitedCodec`
//! itself, so the conversion is checked too.
#![cfg(feature = "tokio")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::{Bytes, BytesMut};
use common::{decode_blocking, decode_framed, decode_sans_io};
use framekit_codec::frame::{Builder, ByteOrder, FrameConfig};
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

/// One documented example: a length field of `width` bytes at `offset`,
/// the input and the decoded frame.
struct Example {
    offset: usize,
    width: usize,
    adjustment: i64,
    /// `LengthDelimitedCodec::num_skip`, or Netty's `initialBytesToStrip`.
    strip: Option<usize>,
    input: &'static [u8],
    decoded: &'static [u8],
}

fn ours(example: &Example, adjustment: i64) -> FrameConfig {
    let mut builder = Builder::new();
    builder
        .length_field_offset(example.offset)
        .length_field(example.width, ByteOrder::BigEndian)
        .length_adjustment(adjustment);
    if let Some(strip) = example.strip {
        builder.strip(strip);
    }
    builder.try_config().unwrap()
}

/// Decodes the input, twice over (so that a second frame follows the
/// first), with every API, whole and one byte at a time.
fn assert_decodes(config: &FrameConfig, input: &[u8], decoded: &[u8]) {
    let twice = [input, input].concat();
    let whole = vec![twice.clone()];
    let bytes: Vec<Vec<u8>> = twice.iter().map(|&b| vec![b]).collect();
    for chunks in [&whole, &bytes] {
        for decode in [decode_sans_io, decode_framed, decode_blocking] {
            let frames = decode(config, chunks).unwrap();
            assert_eq!(frames, [decoded, decoded], "{config:?}");
        }
    }
}

fn ldc_decode(mut codec: LengthDelimitedCodec, input: &[u8]) -> Bytes {
    let mut buf = BytesMut::from(input);
    let frame = codec.decode(&mut buf).unwrap().unwrap().freeze();
    assert!(buf.is_empty());
    frame
}

/// Offset, width, adjustment, `num_skip`, input, decoded.
type LdcRow = (
    usize,
    usize,
    isize,
    Option<usize>,
    &'static [u8],
    &'static [u8],
);

/// Offset, width, adjustment, bytes to strip, input, decoded.
type NettyRow = (usize, usize, i64, usize, &'static [u8], &'static [u8]);

/// `LengthDelimitedCodec`'s examples, with its own parameters.
fn ldc_examples() -> Vec<(LengthDelimitedCodec, Example)> {
    let ldc = |offset, width, adjustment, skip: Option<usize>| {
        let mut builder = LengthDelimitedCodec::builder();
        builder
            .length_field_offset(offset)
            .length_field_length(width)
            .length_adjustment(adjustment);
        if let Some(skip) = skip {
            builder.num_skip(skip);
        }
        builder.new_codec()
    };
    let table: [LdcRow; 8] = [
        // Getting started: the default 4-byte big-endian length.
        (
            0,
            4,
            0,
            None,
            b"\x00\x00\x00\x0bhello world",
            b"hello world",
        ),
        // Example 1: a 2-byte length.
        (0, 2, 0, None, b"\x00\x0BHello world", b"Hello world"),
        // Example 2: the head kept.
        (
            0,
            2,
            2,
            Some(0),
            b"\x00\x0BHello world",
            b"\x00\x0BHello world",
        ),
        // Example 3: the length counts the head.
        (0, 2, -2, None, b"\x00\x0DHello world", b"Hello world"),
        // Example 4: a 3-byte length and a 2-byte header after it, kept.
        (
            0,
            3,
            5,
            Some(0),
            b"\x00\x00\x0B\xCA\xFEHello world",
            b"\x00\x00\x0B\xCA\xFEHello world",
        ),
        // Example 5: a header before and after the length; the second kept.
        (
            1,
            2,
            1,
            Some(3),
            b"\xCA\x00\x0B\xFEHello world",
            b"\xFEHello world",
        ),
        // Example 6: the same, the length counting the whole frame.
        (
            1,
            2,
            -3,
            Some(3),
            b"\xCA\x00\x0F\xFEHello world",
            b"\xFEHello world",
        ),
        // Example 7: a byte between the length and the payload, skipped.
        (
            0,
            3,
            0,
            Some(4),
            b"\x00\x00\x0B\xFFHello world",
            b"Hello world",
        ),
    ];
    table
        .into_iter()
        .map(|(offset, width, adjustment, skip, input, decoded)| {
            let head = offset + width;
            let example = Example {
                offset,
                width,
                adjustment: adjustment as i64 + skip.unwrap_or(head) as i64 - head as i64,
                strip: skip,
                input,
                decoded,
            };
            (ldc(offset, width, adjustment, skip), example)
        })
        .collect()
}

#[test]
fn length_delimited_codec_examples_decode_as_documented() {
    for (ldc, example) in ldc_examples() {
        assert_eq!(&ldc_decode(ldc, example.input)[..], example.decoded);
        assert_decodes(
            &ours(&example, example.adjustment),
            example.input,
            example.decoded,
        );
    }
}

#[test]
fn length_delimited_codec_encoding_example_encodes_as_documented() {
    // A 2-byte length before "hello world".
    let config = Builder::new()
        .length_field(2, ByteOrder::BigEndian)
        .try_config()
        .unwrap();
    let mut ours = BytesMut::new();
    config.encode(b"hello world", &mut ours).unwrap();
    let mut theirs = BytesMut::new();
    LengthDelimitedCodec::builder()
        .length_field_type::<u16>()
        .new_codec()
        .encode(Bytes::from_static(b"hello world"), &mut theirs)
        .unwrap();
    assert_eq!(&ours[..], b"\x00\x0bhello world");
    assert_eq!(ours, theirs);
}

/// Netty's `LengthFieldBasedFrameDecoder` examples: (lengthFieldOffset,
/// lengthFieldLength, lengthAdjustment, initialBytesToStrip, input,
/// decoded).
const NETTY: [NettyRow; 7] = [
    // 2 bytes length field at offset 0, do not strip header.
    (0, 2, 0, 0, b"\x00\x0CHELLO, WORLD", b"\x00\x0CHELLO, WORLD"),
    // 2 bytes length field at offset 0, strip header.
    (0, 2, 0, 2, b"\x00\x0CHELLO, WORLD", b"HELLO, WORLD"),
    // 2 bytes length field at offset 0, do not strip header, the length
    // field represents the length of the whole message.
    (
        0,
        2,
        -2,
        0,
        b"\x00\x0EHELLO, WORLD",
        b"\x00\x0EHELLO, WORLD",
    ),
    // 3 bytes length field at the end of 5 bytes header, do not strip
    // header.
    (
        2,
        3,
        0,
        0,
        b"\xCA\xFE\x00\x00\x0CHELLO, WORLD",
        b"\xCA\xFE\x00\x00\x0CHELLO, WORLD",
    ),
    // 3 bytes length field at the beginning of 5 bytes header, do not strip
    // header.
    (
        0,
        3,
        2,
        0,
        b"\x00\x00\x0C\xCA\xFEHELLO, WORLD",
        b"\x00\x00\x0C\xCA\xFEHELLO, WORLD",
    ),
    // 2 bytes length field at offset 1 in the middle of 4 bytes header,
    // strip the first header field and the length field.
    (
        1,
        2,
        1,
        3,
        b"\xCA\x00\x0C\xFEHELLO, WORLD",
        b"\xFEHELLO, WORLD",
    ),
    // The same, the length field representing the length of the whole
    // message.
    (
        1,
        2,
        -3,
        3,
        b"\xCA\x00\x10\xFEHELLO, WORLD",
        b"\xFEHELLO, WORLD",
    ),
];

#[test]
fn netty_length_field_based_frame_decoder_examples_decode_as_documented() {
    for (offset, width, adjustment, strip, input, decoded) in NETTY {
        let example = Example {
            offset,
            width,
            adjustment,
            strip: Some(strip),
            input,
            decoded,
        };
        assert_decodes(&ours(&example, adjustment), input, decoded);
    }
}
