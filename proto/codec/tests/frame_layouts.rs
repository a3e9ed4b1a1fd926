//! The whole configuration space: a header of 0 to 32 bytes before the
//! length field, every width in both byte orders and the varint (with and
//! without a byte limit), adjustments, and every strip the builder accepts.
//! Frames are written here from the configuration's description, never by
//! the codec, and must come out of every API however the stream is cut; the
//! encoders must write the same bytes; and every safety property holds.
#![cfg(feature = "tokio")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::{Bytes, BytesMut};
use common::*;
use framekit_codec::Error;
use framekit_codec::frame::{
    Builder, ByteOrder, Decoded, FrameCodec, FrameConfig, LengthPrefix, MIN_READ_AHEAD, Oversize,
};
use proptest::prelude::*;
use std::io::{self, Read};
use tokio_util::codec::{Decoder, LengthDelimitedCodec};

const FIXED: [LengthPrefix; 15] = [
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
];

/// A configuration's parts, before the builder checks them.
#[derive(Debug, Clone, Copy)]
struct Layout {
    offset: usize,
    prefix: LengthPrefix,
    varint_max_bytes: Option<usize>,
    adjustment: i64,
    strip: Option<usize>,
}

impl Layout {
    fn builder(&self, max_frame_length: usize, oversize: Oversize) -> Builder {
        let mut builder = Builder::new();
        builder
            .length_field_offset(self.offset)
            .prefix(self.prefix)
            .length_adjustment(self.adjustment)
            .max_frame_length(max_frame_length)
            .oversize(oversize);
        if let Some(bytes) = self.varint_max_bytes {
            builder.varint_max_bytes(bytes);
        }
        if let Some(strip) = self.strip {
            builder.strip(strip);
        }
        builder
    }

    fn config(&self, max_frame_length: usize, oversize: Oversize) -> FrameConfig {
        self.builder(max_frame_length, oversize)
            .try_config()
            .unwrap()
    }
}

/// The shortest length field of `prefix`.
fn min_width(prefix: LengthPrefix) -> usize {
    prefix.width().unwrap_or(1)
}

fn layout() -> impl Strategy<Value = Layout> {
    let prefix = prop_oneof![
        3 => proptest::sample::select(FIXED.to_vec()).prop_map(|p| (p, None)),
        1 => Just((LengthPrefix::Varint, None)),
        1 => (2usize..=10).prop_map(|n| (LengthPrefix::Varint, Some(n))),
    ];
    (
        0usize..=32,
        prefix,
        0u8..5,
        -9i64..=3,
        0u8..4,
        any::<prop::sample::Index>(),
    )
        .prop_map(
            |(offset, (prefix, varint_max_bytes), kind, small, strip_kind, at)| {
                let width = i64::try_from(min_width(prefix)).unwrap();
                let adjustment = match kind {
                    0 => 0,
                    // The length counts the whole frame.
                    1 => -(i64::try_from(offset).unwrap() + width),
                    // The length counts itself (PostgreSQL).
                    2 => -width,
                    _ => small,
                };
                let shortest =
                    offset + min_width(prefix) + usize::try_from(adjustment.max(0)).unwrap();
                let strip = match strip_kind {
                    0 => None,
                    1 => Some(0),
                    2 => Some(offset),
                    _ => Some(at.index(shortest + 1)),
                };
                Layout {
                    offset,
                    prefix,
                    varint_max_bytes,
                    adjustment,
                    strip,
                }
            },
        )
}

/// The length field for `len` bytes after it, written from the layout's
/// description.
fn field(config: &FrameConfig, len: usize) -> Vec<u8> {
    let wire = i128::try_from(len).unwrap() - i128::from(config.length_adjustment());
    let wire = u64::try_from(wire).unwrap();
    match (config.prefix().width(), config.prefix().byte_order()) {
        (None, _) => leb128(wire),
        (Some(width), Some(ByteOrder::LittleEndian)) => wire.to_le_bytes()[..width].to_vec(),
        (Some(width), _) => wire.to_be_bytes()[8 - width..].to_vec(),
    }
}

/// One frame of the stream: its header and what follows the length field.
#[derive(Debug, Clone)]
struct Frame {
    header: Vec<u8>,
    body: Vec<u8>,
}

impl Frame {
    fn wire(&self, config: &FrameConfig) -> Vec<u8> {
        [
            &self.header[..],
            &field(config, self.body.len()),
            &self.body[..],
        ]
        .concat()
    }

    /// What the decoder delivers: the frame without its stripped bytes.
    fn delivered(&self, config: &FrameConfig) -> Bytes {
        let wire = self.wire(config);
        let head = self.header.len() + field(config, self.body.len()).len();
        Bytes::from(wire[config.strip().unwrap_or(head)..].to_vec())
    }
}

fn frames(config: FrameConfig) -> impl Strategy<Value = Vec<Frame>> {
    let header = proptest::collection::vec(any::<u8>(), config.length_field_offset());
    proptest::collection::vec(
        (header, payload(&config)).prop_map(|(header, body)| Frame { header, body }),
        0..6,
    )
}

fn config_and_frames() -> impl Strategy<Value = (FrameConfig, Vec<Frame>)> {
    layout()
        .prop_map(|layout| layout.config(framekit_codec::DEFAULT_MAX_FRAME_LENGTH, Oversize::Error))
        .prop_filter("some payload fits", can_encode)
        .prop_flat_map(|config| (Just(config), frames(config)))
}

fn stream(config: &FrameConfig, frames: &[Frame]) -> Vec<u8> {
    frames.iter().flat_map(|frame| frame.wire(config)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_layout_decodes_the_same_in_every_api_however_the_stream_is_cut(
        (config, frames) in config_and_frames(),
        sizes in chunk_sizes(),
    ) {
        let chunks = chunk(&stream(&config, &frames), &sizes);
        let expected: Vec<Bytes> = frames.iter().map(|f| f.delivered(&config)).collect();
        for decode in [decode_sans_io, decode_framed, decode_blocking] {
            prop_assert_eq!(&decode(&config, &chunks).unwrap(), &expected);
        }
    }

    #[test]
    fn every_encoder_writes_each_layout_as_described(
        (config, frames) in config_and_frames(),
    ) {
        let expected = stream(&config, &frames);
        let mut sans_io = BytesMut::new();
        let mut blocking = Vec::new();
        let mut tokio = Vec::new();
        for frame in &frames {
            config.encode_with_header(&frame.header, &frame.body, &mut sans_io).unwrap();
            framekit_codec::blocking::write_frame_with_header(
                &mut blocking, &config, &frame.header, &frame.body,
            ).unwrap();
            tokio_test::block_on(framekit_codec::frame::write_frame_with_header(
                &mut tokio, &config, &frame.header, &frame.body[..],
            )).unwrap();
        }
        prop_assert_eq!(&sans_io[..], &expected[..]);
        prop_assert_eq!(&blocking, &expected);
        prop_assert_eq!(&tokio, &expected);
    }

    #[test]
    fn a_header_of_the_wrong_length_is_refused_and_nothing_is_written(
        layout in layout(),
        wrong in 0usize..40,
    ) {
        let config = layout.config(1024, Oversize::Error);
        prop_assume!(wrong != config.length_field_offset() && can_encode(&config));
        let body = vec![0; min_payload_len(&config)];
        let header = vec![0; wrong];
        let mut out = BytesMut::new();
        let err = config.encode_with_header(&header, &body, &mut out).unwrap_err();
        let expected = config.length_field_offset();
        let refused = matches!(err, Error::HeaderLength { len, expected: e } if len == wrong && e == expected);
        prop_assert!(refused, "{}", err);
        prop_assert!(out.is_empty());
        let mut written = Vec::new();
        prop_assert!(framekit_codec::blocking::write_frame_with_header(&mut written, &config, &header, &body).is_err());
        prop_assert!(written.is_empty());
    }

    #[test]
    fn every_layout_refuses_an_oversized_length_as_soon_as_the_field_is_complete(
        layout in layout(),
        max in 0usize..300,
    ) {
        let config = layout.config(max, Oversize::Error);
        // The smallest refused length, if the field can carry it.
        let Some(head) = head_declaring(&config, max as u64 + 1) else {
            return Ok(());
        };
        let mut codec = FrameCodec::with_config(config);
        let mut buf = BytesMut::from(&head[..]);
        let err = codec.decode_frame(&mut buf).unwrap_err();
        // A varint longer than the largest acceptable length needs is
        // refused as malformed, before its value is known.
        let varint = config.prefix() == LengthPrefix::Varint;
        prop_assert!(
            matches!(err, Error::FrameTooLarge { declared, .. } if declared == max as u64 + 1)
                || (varint && matches!(err, Error::InvalidVarint { .. })),
            "{}", err
        );
        prop_assert!(buf.capacity() <= head.len().max(64), "{}", buf.capacity());
        // The blocking reader reads the head and nothing more.
        let mut reader = HeadOnly(head.clone());
        let err = framekit_codec::blocking::read_frame(&mut reader, &config).unwrap_err();
        prop_assert!(
            matches!(err, Error::FrameTooLarge { .. })
                || (varint && matches!(err, Error::InvalidVarint { .. })),
            "{}", err
        );
    }

    #[test]
    fn every_layout_reserves_only_as_bytes_arrive(layout in layout()) {
        let config = layout.config(16 << 20, Oversize::Error);
        let Some(mut head) = head_declaring(&config, 16 << 20) else {
            return Ok(());
        };
        let head_len = head.len();
        head.push(1);
        let mut codec = FrameCodec::with_config(config);
        let mut buf = BytesMut::from(&head[..]);
        prop_assert_eq!(codec.decode_frame(&mut buf).unwrap(), None);
        prop_assert!(buf.capacity() <= MIN_READ_AHEAD + head_len + 64, "{}", buf.capacity());
        let mut reader = ChunkedRead::new(&[head]);
        let err = framekit_codec::blocking::read_frame(&mut reader, &config).unwrap_err();
        prop_assert!(err.is_truncated(), "{}", err);
        prop_assert!(reader.largest_read <= MIN_READ_AHEAD.max(head_len), "{}", reader.largest_read);
    }

    #[test]
    fn every_layout_recovers_after_a_discarded_frame(
        layout in layout(),
        sizes in chunk_sizes(),
    ) {
        let config = layout.config(40, Oversize::Discard);
        prop_assume!(can_encode(&config));
        let Some(oversized) = head_declaring(&config, 41) else {
            return Ok(());
        };
        let header = vec![0xA5; config.length_field_offset()];
        let small = Frame { header, body: vec![7; min_payload_len(&config)] };
        let mut stream = small.wire(&config);
        stream.extend_from_slice(&oversized);
        stream.extend_from_slice(&[0xEE; 41]);
        stream.extend_from_slice(&small.wire(&config));
        let expected = vec![
            Decoded::Frame(small.delivered(&config)),
            Decoded::Discarded { length: 41 },
            Decoded::Frame(small.delivered(&config)),
        ];
        let chunks = chunk(&stream, &sizes);

        let mut codec = FrameCodec::with_config(config);
        let mut buf = BytesMut::new();
        let mut events = Vec::new();
        for piece in &chunks {
            buf.extend_from_slice(piece);
            while let Some(event) = codec.decode_next(&mut buf).unwrap() {
                events.push(event);
            }
        }
        prop_assert_eq!(codec.decode_eof(&mut buf).unwrap(), None);
        prop_assert_eq!(&events, &expected);

        let mut reader = ChunkedRead::new(&chunks);
        let mut events = Vec::new();
        while let Some(event) = framekit_codec::blocking::read_next(&mut reader, &config).unwrap() {
            events.push(event);
        }
        prop_assert_eq!(&events, &expected);
        let frames = decode_framed(&config, &chunks).unwrap();
        prop_assert_eq!(frames.len(), 2);
    }

    #[test]
    fn every_layout_reports_a_stream_cut_inside_a_frame_as_truncated(
        (config, frames) in config_and_frames(),
        cut in any::<prop::sample::Index>(),
    ) {
        prop_assume!(!frames.is_empty());
        let stream = stream(&config, &frames);
        // Cut after at least one byte of the last frame, before its end.
        let last = frames.last().unwrap().wire(&config).len();
        let at = stream.len() - last + cut.index(last);
        let chunks = vec![stream[..at].to_vec()];
        for decode in [decode_sans_io, decode_framed, decode_blocking] {
            let result = decode(&config, &chunks);
            if at == stream.len() - last {
                prop_assert!(result.is_ok());
            } else {
                let err = result.unwrap_err();
                prop_assert!(matches!(err, Error::Truncated { .. }), "{}", err);
            }
        }
    }

    #[test]
    fn strip_beyond_the_shortest_frame_is_refused_by_the_builder(
        layout in layout(),
        extra in 1usize..10,
    ) {
        let shortest = layout.offset
            + min_width(layout.prefix)
            + usize::try_from(layout.adjustment.max(0)).unwrap();
        let err = Layout { strip: Some(shortest + extra), ..layout }
            .builder(1024, Oversize::Error)
            .try_config()
            .unwrap_err();
        prop_assert_eq!(
            err,
            framekit_codec::ConfigError::StripBeyondFrame { strip: shortest + extra, shortest }
        );
    }
}

/// A head (header and length field) declaring `declared` bytes after the
/// field, or `None` if the field cannot carry that.
fn head_declaring(config: &FrameConfig, declared: u64) -> Option<Vec<u8>> {
    let wire = u64::try_from(i128::from(declared) - i128::from(config.length_adjustment())).ok()?;
    let field = match (config.prefix().width(), config.prefix().byte_order()) {
        (None, _) => {
            let field = leb128(wire);
            // A varint longer than allowed is a different error.
            let limit = config.varint_max_bytes().unwrap_or(10);
            if field.len() > limit {
                return None;
            }
            field
        }
        (Some(width), order) => {
            if width < 8 && wire >> (8 * width) != 0 {
                return None;
            }
            if order == Some(ByteOrder::LittleEndian) {
                wire.to_le_bytes()[..width].to_vec()
            } else {
                wire.to_be_bytes()[8 - width..].to_vec()
            }
        }
    };
    let mut head = vec![0x5A; config.length_field_offset()];
    head.extend_from_slice(&field);
    Some(head)
}

/// A reader that holds a head and fails if it is read past it.
struct HeadOnly(Vec<u8>);

impl Read for HeadOnly {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.0.is_empty() {
            return Err(io::Error::other("read past the head"));
        }
        let n = buf.len().min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0.drain(..n);
        Ok(n)
    }
}

#[test]
fn builder_refuses_widths_outside_one_to_eight() {
    for width in [0, 9, 16] {
        let err = Builder::new()
            .length_field(width, ByteOrder::BigEndian)
            .try_config()
            .unwrap_err();
        assert_eq!(err, framekit_codec::ConfigError::Width { width });
        assert_eq!(
            err.to_string(),
            format!("a length field of {width} bytes: the width must be 1 to 8")
        );
    }
    for width in 1..=8 {
        for order in [ByteOrder::BigEndian, ByteOrder::LittleEndian] {
            let config = Builder::new()
                .length_field(width, order)
                .try_config()
                .unwrap();
            assert_eq!(config.prefix().width(), Some(width));
        }
    }
}

#[test]
fn builder_refuses_a_varint_limit_out_of_range_or_without_a_varint() {
    for bytes in [0, 11] {
        let err = Builder::new()
            .prefix(LengthPrefix::Varint)
            .varint_max_bytes(bytes)
            .try_config()
            .unwrap_err();
        assert_eq!(err, framekit_codec::ConfigError::VarintLimit { bytes });
    }
    let err = Builder::new().varint_max_bytes(4).try_config().unwrap_err();
    assert_eq!(err, framekit_codec::ConfigError::VarintLimitWithoutVarint);
}

#[test]
#[should_panic(expected = "impossible frame configuration: cannot strip 5 bytes")]
fn config_panics_on_an_impossible_configuration() {
    Builder::new().strip(5).config();
}

#[test]
fn varint_limited_to_four_bytes_refuses_a_length_that_needs_five() {
    let config = Builder::new()
        .prefix(LengthPrefix::Varint)
        .varint_max_bytes(4)
        .max_frame_length(usize::MAX)
        .config();
    assert_eq!(config.max_payload_len(), (1 << 28) - 1);
    assert!(config.encode_head((1 << 28) - 1).is_ok());
    assert!(matches!(
        config.encode_head(1 << 28),
        Err(Error::PayloadTooLarge { .. })
    ));
}

#[test]
fn encode_without_a_header_is_refused_when_the_layout_has_one() {
    let config = Builder::new().length_field_offset(2).config();
    let mut out = BytesMut::new();
    assert!(matches!(
        config.encode(b"x", &mut out),
        Err(Error::HeaderLength {
            len: 0,
            expected: 2
        })
    ));
    assert!(out.is_empty());
}

/// `LengthDelimitedCodec` configured like `config`, if it supports the
/// layout identically: a fixed-width field, and a maximum it does not clip.
///
/// Its adjusted length counts from the end of the bytes it skips
/// (`num_skip`), ours from the end of the length field; and it compares its
/// maximum with the length field's value before the adjustment, ours with
/// the adjusted length. Both are converted here.
fn length_delimited_like(config: &FrameConfig) -> Option<LengthDelimitedCodec> {
    let width = config.prefix().width()?;
    let head = config.length_field_offset() + width;
    let strip = config.strip().unwrap_or(head);
    let adjustment =
        config.length_adjustment() + i64::try_from(head).unwrap() - i64::try_from(strip).unwrap();
    let max = u64::try_from(
        i128::try_from(config.max_frame_length()).unwrap() - i128::from(config.length_adjustment()),
    )
    .ok()?;
    // It clips its maximum to what the field can carry plus its adjustment.
    let field_max = config.prefix().max_value();
    if i128::from(max) > i128::from(field_max) + i128::from(adjustment) {
        return None;
    }
    let mut builder = LengthDelimitedCodec::builder();
    builder
        .length_field_offset(config.length_field_offset())
        .length_field_length(width)
        .length_adjustment(isize::try_from(adjustment).unwrap())
        .num_skip(strip)
        .max_frame_length(usize::try_from(max).unwrap());
    if config.prefix().byte_order() == Some(ByteOrder::LittleEndian) {
        builder.little_endian();
    }
    Some(builder.new_codec())
}

/// Frames, or the error that ended the stream, with any `Decoder`.
fn decode_with<D>(mut codec: D, chunks: &[Vec<u8>]) -> (Vec<Bytes>, Option<D::Error>)
where
    D: Decoder,
    D::Item: AsRef<[u8]>,
{
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for piece in chunks {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => frames.push(Bytes::copy_from_slice(frame.as_ref())),
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(frame)) => frames.push(Bytes::copy_from_slice(frame.as_ref())),
            Ok(None) => return (frames, None),
            Err(e) => return (frames, Some(e)),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn length_delimited_codec_configured_alike_decodes_the_same_frames_and_refuses_the_same_one(
        layout in layout(),
        max in 0usize..2000,
        seed in any::<u64>(),
        oversized in any::<bool>(),
        sizes in chunk_sizes(),
    ) {
        let config = layout.config(max, Oversize::Error);
        prop_assume!(config.prefix() != LengthPrefix::Varint && can_encode(&config));
        let Some(ldc) = length_delimited_like(&config) else {
            return Ok(());
        };
        let mut rng = SplitMix::new(seed);
        let lo = min_payload_len(&config);
        let hi = max_payload_len(&config).min(lo + 300);
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for _ in 0..rng.next_u64() % 6 {
            let len = lo + usize::try_from(rng.next_u64()).unwrap() % (hi - lo + 1);
            let frame = Frame {
                header: vec![0xC3; config.length_field_offset()],
                body: vec![0x3C; len],
            };
            stream.extend_from_slice(&frame.wire(&config));
            expected.push(frame.delivered(&config));
        }
        let too_large = oversized.then(|| head_declaring(&config, max as u64 + 1)).flatten();
        if let Some(head) = &too_large {
            // A few bytes after the head: `LengthDelimitedCodec` reads the
            // length only once it has `num_skip` bytes, which may reach past
            // the length field.
            stream.extend_from_slice(head);
            stream.extend_from_slice(&[0; 8]);
        }
        let chunks = chunk(&stream, &sizes);
        let (ours, our_error) = decode_with(FrameCodec::with_config(config), &chunks);
        let (theirs, their_error) = decode_with(ldc, &chunks);
        prop_assert_eq!(&ours, &expected);
        prop_assert_eq!(&theirs, &expected);
        if too_large.is_some() {
            let ours = our_error.unwrap();
            let theirs = their_error.unwrap();
            prop_assert!(matches!(ours, Error::FrameTooLarge { declared, .. } if declared == max as u64 + 1), "{}", ours);
            prop_assert_eq!(theirs.kind(), io::ErrorKind::InvalidData);
            prop_assert_eq!(theirs.to_string(), "frame size too big");
        } else {
            prop_assert!(our_error.is_none());
            prop_assert!(their_error.is_none());
        }
    }
}
