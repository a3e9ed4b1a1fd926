//! `Oversize::Discard`: an oversized frame is skipped exactly, without being
//! buffered, reported, and the frame after it decodes whatever the chunking.
#![cfg(feature = "tokio")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::{Bytes, BytesMut};
use common::*;
use framekit_codec::Error;
use framekit_codec::frame::{Decoded, FrameCodec, FrameConfig, LengthPrefix, Oversize, READ_AHEAD};
use futures_util::StreamExt;
use proptest::prelude::*;
use tokio_util::codec::FramedRead;

/// The maximum frame length of these tests: small, so that even a one-byte
/// prefix can declare an oversized frame.
const MAX: usize = 40;

/// A frame of the stream: one to decode, or one to skip.
#[derive(Debug, Clone)]
enum Item {
    Frame(Vec<u8>),
    Oversized(Vec<u8>),
}

fn discard_config() -> impl Strategy<Value = FrameConfig> {
    (proptest::sample::select(PREFIXES.to_vec()), 0usize..3).prop_map(|(prefix, adjustment)| {
        let adjustment = [0, counts_prefix(prefix), 2][adjustment];
        config(prefix, adjustment, MAX, Oversize::Discard)
    })
}

fn items(config: &FrameConfig) -> impl Strategy<Value = Vec<Item>> + use<> {
    let min = min_payload_len(config);
    // What the prefix can declare, capped to keep the tests fast.
    let largest = usize::try_from(
        config
            .prefix()
            .max_value()
            .saturating_add_signed(config.length_adjustment()),
    )
    .unwrap_or(usize::MAX)
    .min(3000);
    let frame = proptest::collection::vec(any::<u8>(), min..=MAX).prop_map(Item::Frame);
    // An oversized payload of random bytes, or one that holds valid-looking
    // frames, which must be skipped rather than parsed.
    let config = *config;
    let frames_inside = proptest::collection::vec(any::<u8>(), min..MAX)
        .prop_map(move |inner| reference_frame(&config, &inner).repeat(30));
    let oversized = prop_oneof![
        proptest::collection::vec(any::<u8>(), MAX + 1..=largest),
        frames_inside,
    ]
    .prop_map(move |mut payload| {
        payload.resize(payload.len().clamp(MAX + 1, largest), 0);
        Item::Oversized(payload)
    });
    proptest::collection::vec(prop_oneof![frame, oversized], 0..8)
}

fn config_and_items() -> impl Strategy<Value = (FrameConfig, Vec<Item>)> {
    discard_config().prop_flat_map(|config| (Just(config), items(&config)))
}

fn stream(config: &FrameConfig, items: &[Item]) -> Vec<u8> {
    items
        .iter()
        .flat_map(|item| match item {
            Item::Frame(payload) | Item::Oversized(payload) => reference_frame(config, payload),
        })
        .collect()
}

fn events(items: &[Item]) -> Vec<Decoded> {
    items
        .iter()
        .map(|item| match item {
            Item::Frame(payload) => Decoded::Frame(Bytes::from(payload.clone())),
            Item::Oversized(payload) => Decoded::Discarded {
                length: payload.len() as u64,
            },
        })
        .collect()
}

fn frames(items: &[Item]) -> Vec<Bytes> {
    events(items)
        .into_iter()
        .filter_map(|event| match event {
            Decoded::Frame(frame) => Some(frame),
            Decoded::Discarded { .. } => None,
        })
        .collect()
}

fn discarded(items: &[Item]) -> u64 {
    items
        .iter()
        .filter(|item| matches!(item, Item::Oversized(_)))
        .count() as u64
}

proptest! {
    #[test]
    fn sans_io_reports_discarded_then_the_next_frame_whatever_the_chunking(
        (config, items) in config_and_items(),
        sizes in chunk_sizes(),
    ) {
        let mut codec = FrameCodec::with_config(config);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for chunk in chunk(&stream(&config, &items), &sizes) {
            buf.extend_from_slice(&chunk);
            while let Some(event) = codec.decode_next(&mut buf).unwrap() {
                got.push(event);
            }
        }
        prop_assert_eq!(codec.decode_eof(&mut buf).unwrap(), None);
        prop_assert_eq!(got, events(&items));
    }

    #[test]
    fn sans_io_decode_frame_skips_and_counts_oversized_frames(
        (config, items) in config_and_items(),
        sizes in chunk_sizes(),
    ) {
        let chunks = chunk(&stream(&config, &items), &sizes);
        let mut codec = FrameCodec::with_config(config);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for chunk in &chunks {
            buf.extend_from_slice(chunk);
            while let Some(frame) = codec.decode_frame(&mut buf).unwrap() {
                got.push(frame);
            }
        }
        prop_assert_eq!(codec.decode_eof(&mut buf).unwrap(), None);
        prop_assert_eq!(got, frames(&items));
        prop_assert_eq!(codec.discarded(), discarded(&items));
    }

    #[test]
    fn framed_read_skips_oversized_frames_whatever_the_chunking(
        (config, items) in config_and_items(),
        sizes in chunk_sizes(),
    ) {
        let chunks = chunk(&stream(&config, &items), &sizes);
        let mut framed = FramedRead::new(
            ChunkedAsyncRead::new(&chunks),
            FrameCodec::with_config(config),
        );
        let got: Vec<Bytes> = tokio_test::block_on(async {
            let mut got = Vec::new();
            while let Some(frame) = framed.next().await {
                got.push(frame.unwrap());
            }
            got
        });
        prop_assert_eq!(got, frames(&items));
        prop_assert_eq!(framed.decoder().discarded(), discarded(&items));
    }

    #[test]
    fn blocking_read_next_reports_discarded_then_the_next_frame_whatever_the_chunking(
        (config, items) in config_and_items(),
        sizes in chunk_sizes(),
    ) {
        let mut reader = ChunkedRead::new(&chunk(&stream(&config, &items), &sizes));
        let mut got = Vec::new();
        while let Some(event) = framekit_codec::blocking::read_next(&mut reader, &config).unwrap() {
            got.push(event);
        }
        prop_assert_eq!(got, events(&items));
    }

    #[test]
    fn blocking_read_frame_skips_oversized_frames_whatever_the_chunking(
        (config, items) in config_and_items(),
        sizes in chunk_sizes(),
    ) {
        let chunks = chunk(&stream(&config, &items), &sizes);
        prop_assert_eq!(decode_blocking(&config, &chunks).unwrap(), frames(&items));
    }
}

/// A 10 MiB frame, over a 1 MiB maximum, followed by a small frame, in
/// 64 KiB chunks.
fn large_oversized_stream() -> (FrameConfig, Vec<Vec<u8>>) {
    let config = config(LengthPrefix::U32Be, 0, 1024 * 1024, Oversize::Discard);
    let mut stream = reference_frame(&config, &vec![0xEE; 10 * 1024 * 1024]);
    stream.extend(reference_frame(&config, b"after"));
    (config, chunk(&stream, &[64 * 1024]))
}

#[test]
fn discarded_bytes_are_not_buffered() {
    let (config, chunks) = large_oversized_stream();
    let mut codec = FrameCodec::with_config(config);
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for chunk in &chunks {
        buf.extend_from_slice(chunk);
        while let Some(event) = codec.decode_next(&mut buf).unwrap() {
            got.push(event);
        }
        // Each chunk is dropped as soon as it is seen: the buffer never
        // holds more than one chunk, let alone the 10 MiB frame.
        assert!(buf.capacity() <= 2 * 64 * 1024, "{}", buf.capacity());
    }
    assert_eq!(
        got,
        [
            Decoded::Discarded {
                length: 10 * 1024 * 1024
            },
            Decoded::Frame(Bytes::from_static(b"after"))
        ]
    );
}

#[test]
fn framed_read_buffer_stays_small_while_skipping_a_large_frame() {
    let (config, chunks) = large_oversized_stream();
    let mut framed = FramedRead::new(
        ChunkedAsyncRead::new(&chunks),
        FrameCodec::with_config(config),
    );
    let frame = tokio_test::block_on(framed.next()).unwrap().unwrap();
    assert_eq!(&frame[..], b"after");
    assert_eq!(framed.decoder().discarded(), 1);
    let capacity = framed.read_buffer().capacity();
    assert!(capacity <= 8 * 1024 + READ_AHEAD, "{capacity}");
}

#[test]
fn stream_ending_inside_a_discarded_frame_is_truncated_in_every_api() {
    let config = config(LengthPrefix::U16Le, 0, 4, Oversize::Discard);
    // Declares 10 bytes, sends 3.
    let chunks = [vec![10, 0, 1, 2, 3]];
    let truncated = |err: &Error| {
        matches!(
            err,
            Error::Truncated {
                received: 3,
                expected: Some(10)
            }
        )
    };
    let err = decode_sans_io(&config, &chunks).unwrap_err();
    assert!(truncated(&err), "{err}");
    let err = decode_framed(&config, &chunks).unwrap_err();
    assert!(truncated(&err), "{err}");
    let err = decode_blocking(&config, &chunks).unwrap_err();
    assert!(truncated(&err), "{err}");
}

#[test]
fn error_mode_does_not_skip_oversized_frames() {
    let config = config(LengthPrefix::U8, 0, 4, Oversize::Error);
    let chunks = [vec![5, 1, 2, 3, 4, 5, 1, 9]];
    for err in [
        decode_sans_io(&config, &chunks).unwrap_err(),
        decode_framed(&config, &chunks).unwrap_err(),
        decode_blocking(&config, &chunks).unwrap_err(),
    ] {
        assert!(
            matches!(
                err,
                Error::FrameTooLarge {
                    declared: 5,
                    max: 4
                }
            ),
            "{err}"
        );
    }
}
