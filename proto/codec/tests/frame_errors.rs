//! Corrupt, truncated and unencodable input: a clear error in every API,
//! and nothing written when a payload cannot be framed.
#![cfg(feature = "tokio")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::{Bytes, BytesMut};
use common::*;
use framekit_codec::Error;
use framekit_codec::frame::{FrameCodec, FrameConfig, LengthPrefix, Oversize};
use futures_util::{SinkExt, StreamExt};
use proptest::prelude::*;
use std::io::{self, IoSlice, Write};
use tokio_util::codec::{Encoder, FramedRead, FramedWrite};

// ---- Truncation -----------------------------------------------------------

/// A stream of at least one frame and a point at which to cut it.
fn cut_stream() -> impl Strategy<Value = (FrameConfig, Vec<Vec<u8>>, prop::sample::Index)> {
    any_config().prop_flat_map(|config| {
        (
            Just(config),
            proptest::collection::vec(payload(&config), 1..5),
            any::<prop::sample::Index>(),
        )
    })
}

/// What every API must return for `payloads`' stream cut after `cut` bytes:
/// the complete frames if the cut is at a frame boundary, otherwise
/// `Truncated` with what had arrived of the unfinished frame.
fn expected_at_cut(
    config: &FrameConfig,
    payloads: &[Vec<u8>],
    cut: usize,
) -> Result<Vec<Bytes>, (u64, Option<u64>)> {
    let mut start = 0;
    for (i, payload) in payloads.iter().enumerate() {
        if cut == start {
            return Ok(to_bytes(&payloads[..i]));
        }
        let head = reference_head(config, payload.len()).len();
        let end = start + head + payload.len();
        if cut < end {
            let offset = cut - start;
            return Err(if offset < head {
                (offset as u64, None)
            } else {
                ((offset - head) as u64, Some(payload.len() as u64))
            });
        }
        start = end;
    }
    Ok(to_bytes(payloads))
}

fn check_truncation(
    decode: DecodeFn,
    (config, payloads, cut): (FrameConfig, Vec<Vec<u8>>, prop::sample::Index),
    sizes: Vec<usize>,
) -> Result<(), TestCaseError> {
    let stream = reference_stream(&config, &payloads);
    let cut = cut.index(stream.len() + 1);
    let chunks = chunk(&stream[..cut], &sizes);
    match (
        decode(&config, &chunks),
        expected_at_cut(&config, &payloads, cut),
    ) {
        (Ok(frames), Ok(expected)) => prop_assert_eq!(frames, expected),
        (Err(Error::Truncated { received, expected }), Err((expected_received, expected_len))) => {
            prop_assert_eq!(received, expected_received);
            prop_assert_eq!(expected, expected_len);
        }
        (got, expected) => {
            prop_assert!(false, "cut at {cut}: got {got:?}, expected {expected:?}")
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn sans_io_decode_eof_reports_a_cut_inside_a_frame_as_truncated(
        case in cut_stream(),
        sizes in chunk_sizes(),
    ) {
        check_truncation(decode_sans_io, case, sizes)?;
    }

    #[test]
    fn framed_read_reports_a_cut_inside_a_frame_as_truncated(
        case in cut_stream(),
        sizes in chunk_sizes(),
    ) {
        check_truncation(decode_framed, case, sizes)?;
    }

    #[test]
    fn blocking_read_frame_reports_a_cut_inside_a_frame_as_truncated(
        case in cut_stream(),
        sizes in chunk_sizes(),
    ) {
        check_truncation(decode_blocking, case, sizes)?;
    }
}

#[test]
fn framed_read_yields_truncated_then_ends() {
    let mock = tokio_test::io::Builder::new()
        .read(&[0, 0, 0, 5, b'h'])
        .read(b"e")
        .build();
    let mut framed = FramedRead::new(mock, FrameCodec::new());
    tokio_test::block_on(async {
        let err = framed.next().await.unwrap().unwrap_err();
        assert!(
            matches!(
                err,
                Error::Truncated {
                    received: 2,
                    expected: Some(5)
                }
            ),
            "{err}"
        );
        assert!(err.is_truncated());
        assert_eq!(io::Error::from(err).kind(), io::ErrorKind::UnexpectedEof);
        assert!(framed.next().await.is_none());
    });
}

#[test]
fn framed_read_reports_a_half_prefix_at_eof_as_truncated() {
    let mock = tokio_test::io::Builder::new()
        .read(&[0, 0, 0, 1, b'x'])
        .read(&[0, 0])
        .build();
    let mut framed = FramedRead::new(mock, FrameCodec::new());
    tokio_test::block_on(async {
        assert_eq!(&framed.next().await.unwrap().unwrap()[..], b"x");
        let err = framed.next().await.unwrap().unwrap_err();
        assert!(
            matches!(
                err,
                Error::Truncated {
                    received: 2,
                    expected: None
                }
            ),
            "{err}"
        );
    });
}

#[test]
fn framed_read_ends_cleanly_at_a_frame_boundary() {
    let mock = tokio_test::io::Builder::new()
        .read(&[0, 0, 0, 1, b'x', 0, 0])
        .read(&[0, 0])
        .build();
    let mut framed = FramedRead::new(mock, FrameCodec::new());
    tokio_test::block_on(async {
        assert_eq!(&framed.next().await.unwrap().unwrap()[..], b"x");
        assert_eq!(&framed.next().await.unwrap().unwrap()[..], b"");
        assert!(framed.next().await.is_none());
    });
}

// ---- Invalid varints ------------------------------------------------------

fn varint_config(max_frame_length: usize, oversize: Oversize) -> FrameConfig {
    config(LengthPrefix::Varint, 0, max_frame_length, oversize)
}

/// Feeds `bytes` to every API and checks each fails with `InvalidVarint`
/// at byte `at`.
fn assert_invalid_varint_everywhere(config: &FrameConfig, bytes: &[u8], at: usize) {
    let chunks = [bytes.to_vec()];
    let one_byte_chunks = chunk(bytes, &[1]);
    for (api, result) in [
        ("sans-IO", decode_sans_io(config, &chunks)),
        (
            "sans-IO, 1-byte chunks",
            decode_sans_io(config, &one_byte_chunks),
        ),
        ("FramedRead", decode_framed(config, &chunks)),
        (
            "FramedRead, 1-byte chunks",
            decode_framed(config, &one_byte_chunks),
        ),
        ("blocking", decode_blocking(config, &chunks)),
    ] {
        match result {
            Err(Error::InvalidVarint { len }) => assert_eq!(len, at, "{api}"),
            other => panic!("{api}: expected InvalidVarint, got {other:?}"),
        }
    }
}

#[test]
fn varint_longer_than_the_maximum_needs_is_invalid_in_every_api() {
    // 16 MiB needs at most 4 varint bytes; a padded 5-byte encoding of 1 is
    // refused even though its value is small.
    let config = varint_config(16 << 20, Oversize::Error);
    assert_invalid_varint_everywhere(&config, &[0x81, 0x80, 0x80, 0x80, 0x00, 0xAA], 5);
}

#[test]
fn varint_of_eleven_bytes_is_invalid_in_every_api() {
    // In discard mode any 64-bit length is readable, so the limit is the
    // 10 bytes of a u64.
    let config = varint_config(16, Oversize::Discard);
    assert_invalid_varint_everywhere(&config, &[0x80; 11], 11);
}

#[test]
fn varint_overflowing_64_bits_is_invalid_in_every_api() {
    let config = varint_config(16, Oversize::Discard);
    let mut bytes = vec![0xFF; 9];
    bytes.push(0x02);
    assert_invalid_varint_everywhere(&config, &bytes, 10);
}

#[test]
fn varint_error_does_not_wait_for_more_bytes() {
    // Four continuation bytes are already too many for 16 MiB: the error
    // comes before the fifth byte arrives.
    let mut codec = FrameCodec::with_config(varint_config(16 << 20, Oversize::Error));
    let mut buf = BytesMut::from(&[0x80, 0x80, 0x80][..]);
    assert_eq!(codec.decode_frame(&mut buf).unwrap(), None);
    buf.extend_from_slice(&[0x80]);
    assert!(matches!(
        codec.decode_frame(&mut buf),
        Err(Error::InvalidVarint { len: 5 })
    ));
}

#[test]
fn varint_of_the_largest_needed_length_is_accepted() {
    // 0x7F_FFFF (4 bytes) is the longest varint a 16 MiB maximum needs.
    let config = varint_config(16 << 20, Oversize::Error);
    let mut stream = leb128(3);
    stream.extend_from_slice(b"abc");
    let padded = [0x83, 0x80, 0x80, 0x00, b'a', b'b', b'c'];
    for bytes in [stream, padded.to_vec()] {
        let expected = vec![Bytes::from_static(b"abc")];
        let chunks = [bytes];
        assert_eq!(decode_sans_io(&config, &chunks).unwrap(), expected);
        assert_eq!(decode_framed(&config, &chunks).unwrap(), expected);
        assert_eq!(decode_blocking(&config, &chunks).unwrap(), expected);
    }
}

// ---- Every API, the same verdict ------------------------------------------

/// Bytes that are sometimes valid frames and sometimes garbage.
fn hostile_stream(config: FrameConfig) -> impl Strategy<Value = Vec<u8>> {
    let garbage = proptest::collection::vec(any::<u8>(), 0..16);
    let segment = if can_encode(&config) {
        prop_oneof![
            garbage,
            payload(&config).prop_map(move |payload| reference_frame(&config, &payload)),
        ]
        .boxed()
    } else {
        garbage.boxed()
    };
    proptest::collection::vec(segment, 0..6).prop_map(|segments| segments.concat())
}

fn small_config() -> impl Strategy<Value = FrameConfig> {
    (
        proptest::sample::select(PREFIXES.to_vec()),
        -9i64..=3,
        0usize..300,
        any::<bool>(),
    )
        .prop_map(|(prefix, adjustment, max, discard)| {
            let oversize = if discard {
                Oversize::Discard
            } else {
                Oversize::Error
            };
            config(prefix, adjustment, max, oversize)
        })
}

proptest! {
    #[test]
    fn every_api_gives_the_same_verdict_on_arbitrary_input(
        (config, stream) in small_config().prop_flat_map(|c| (Just(c), hostile_stream(c))),
        sizes in chunk_sizes(),
    ) {
        let chunks = chunk(&stream, &sizes);
        let verdict = |result: Result<Vec<Bytes>, Error>| result.map_err(|e| e.to_string());
        let sans_io = verdict(decode_sans_io(&config, &chunks));
        prop_assert_eq!(&verdict(decode_framed(&config, &chunks)), &sans_io);
        prop_assert_eq!(&verdict(decode_blocking(&config, &chunks)), &sans_io);
    }
}

// ---- Unencodable payloads -------------------------------------------------

/// A writer that records every call, to prove that none was made.
#[derive(Default)]
struct Recorder {
    calls: usize,
    bytes: Vec<u8>,
}

impl Write for Recorder {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.calls += 1;
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.calls += 1;
        let n = bufs.iter().map(|b| b.len()).sum();
        bufs.iter().for_each(|b| self.bytes.extend_from_slice(b));
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Tries to frame `payload` through every encoding API and checks that each
/// fails with the error `check` accepts and writes nothing.
fn assert_refused_everywhere(config: &FrameConfig, payload: &[u8], check: fn(&Error) -> bool) {
    let mut codec = FrameCodec::with_config(*config);

    let err = codec.encode_head(payload.len()).unwrap_err();
    assert!(check(&err), "encode_head: {err}");

    let mut buf = BytesMut::from(&b"kept"[..]);
    let err = codec.encode(payload, &mut buf).unwrap_err();
    assert!(check(&err), "encode: {err}");
    assert_eq!(&buf[..], b"kept");

    let err = Encoder::<Bytes>::encode(&mut codec, Bytes::copy_from_slice(payload), &mut buf)
        .unwrap_err();
    assert!(check(&err), "Encoder: {err}");
    assert_eq!(&buf[..], b"kept");

    let mut writer = Recorder::default();
    let err = framekit_codec::blocking::write_frame(&mut writer, config, payload).unwrap_err();
    assert!(check(&err), "blocking::write_frame: {err}");
    assert_eq!((writer.calls, writer.bytes.len()), (0, 0));

    let mut out = Vec::new();
    let err = tokio_test::block_on(framekit_codec::frame::write_frame(
        &mut out, config, payload,
    ))
    .unwrap_err();
    assert!(check(&err), "frame::write_frame: {err}");
    assert!(out.is_empty());

    let mut framed = FramedWrite::new(Vec::new(), codec.clone());
    let err = tokio_test::block_on(framed.send(Bytes::copy_from_slice(payload))).unwrap_err();
    assert!(check(&err), "FramedWrite: {err}");
    assert!(framed.get_ref().is_empty());
    assert!(framed.write_buffer().is_empty());
}

/// A writer whose peer has gone: it accepts nothing.
struct TakesNothing;

impl Write for TakesNothing {
    fn write(&mut self, _buf: &[u8]) -> io::Result<usize> {
        Ok(0)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn blocking_write_frame_to_a_writer_that_takes_nothing_fails() {
    // Retrying a write that makes no progress would loop forever.
    let err =
        framekit_codec::blocking::write_frame(&mut TakesNothing, &FrameConfig::default(), b"data")
            .unwrap_err();
    assert!(
        matches!(&err, Error::Io(e) if e.kind() == io::ErrorKind::WriteZero),
        "{err}"
    );
}

#[test]
fn u16_prefix_refuses_70_000_bytes_and_writes_nothing() {
    let config = config(LengthPrefix::U16Be, 0, 1 << 20, Oversize::Error);
    assert_refused_everywhere(&config, &vec![0; 70_000], |e| {
        matches!(
            e,
            Error::PayloadTooLarge {
                len: 70_000,
                max: 65_535
            }
        )
    });
}

#[test]
fn u8_prefix_refuses_256_bytes_and_writes_nothing() {
    let config = config(LengthPrefix::U8, 0, 1 << 20, Oversize::Error);
    assert_refused_everywhere(&config, &[0; 256], |e| {
        matches!(e, Error::PayloadTooLarge { len: 256, max: 255 })
    });
}

#[test]
fn length_counting_the_prefix_leaves_less_room_for_the_payload() {
    // A one-byte length that counts itself carries at most 254 bytes.
    let config = config(LengthPrefix::U8, -1, 1 << 20, Oversize::Error);
    assert_refused_everywhere(&config, &[0; 255], |e| {
        matches!(e, Error::PayloadTooLarge { len: 255, max: 254 })
    });
    let mut out = Vec::new();
    framekit_codec::blocking::write_frame(&mut out, &config, &[0; 254]).unwrap();
    assert_eq!(out[0], 255);
}

#[test]
fn payload_over_the_maximum_frame_length_is_refused_and_writes_nothing() {
    let config = config(LengthPrefix::U32Be, 0, 1000, Oversize::Error);
    assert_refused_everywhere(&config, &[0; 1001], |e| {
        matches!(
            e,
            Error::PayloadTooLarge {
                len: 1001,
                max: 1000
            }
        )
    });
}

#[test]
fn payload_shorter_than_a_positive_adjustment_is_refused_and_writes_nothing() {
    let config = config(LengthPrefix::U16Le, 3, 1000, Oversize::Error);
    assert_refused_everywhere(&config, &[0; 2], |e| {
        matches!(e, Error::PayloadTooShort { len: 2, min: 3 })
    });
}

#[test]
fn largest_payload_each_prefix_can_express_is_accepted() {
    for (prefix, len) in [(LengthPrefix::U8, 255), (LengthPrefix::U16Le, 65_535)] {
        let config = config(prefix, 0, 1 << 20, Oversize::Error);
        let payload = vec![0x5A; len];
        let mut out = Vec::new();
        framekit_codec::blocking::write_frame(&mut out, &config, &payload).unwrap();
        assert_eq!(out, reference_frame(&config, &payload));
    }
}

proptest! {
    #[test]
    fn encoder_refuses_exactly_the_payloads_the_config_cannot_carry(
        (prefix, adjustment, max, oversize) in (
            proptest::sample::select(PREFIXES.to_vec()),
            -9i64..=3,
            prop_oneof![0usize..300, Just(1 << 20)],
            proptest::sample::select(vec![Oversize::Error, Oversize::Discard]),
        ),
        // Around the limits of the one- and two-byte prefixes, or anywhere.
        len in prop_oneof![0usize..600, 245usize..265, 65_525usize..65_545],
    ) {
        let config = config(prefix, adjustment, max, oversize);
        // The limits, from the configuration's description.
        let adjustment = config.length_adjustment();
        let too_short = i64::try_from(len).unwrap() < adjustment;
        let prefix_limit = i128::from(config.prefix().max_value()) + i128::from(adjustment);
        let too_large = len > config.max_frame_length() || i128::try_from(len).unwrap() > prefix_limit;
        let payload = vec![0x33; len];
        let mut buf = BytesMut::new();
        let result = FrameCodec::with_config(config).encode(&payload, &mut buf);
        match result {
            Err(Error::PayloadTooShort { .. }) => prop_assert!(too_short),
            Err(Error::PayloadTooLarge { .. }) => prop_assert!(too_large),
            Ok(()) => {
                prop_assert!(!too_short && !too_large);
                prop_assert_eq!(&buf[..], &reference_frame(&config, &payload)[..]);
            }
            Err(e) => prop_assert!(false, "unexpected error {}", e),
        }
        if too_short || too_large {
            prop_assert!(buf.is_empty());
        }
    }
}
