//! Payloads survive framing whatever the prefix configuration, whatever the
//! cut points of the stream, and through every API: sans-IO, tokio and
//! blocking. Streams are built by an encoder written independently of the
//! codec, so a codec that reads and writes the same wrong bytes still fails.
#![cfg(feature = "tokio")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use common::*;
use framekit_codec::frame::{Decoded, FrameCodec, LengthPrefix, Oversize};
use futures_util::SinkExt;
use proptest::prelude::*;
use tokio_util::codec::{Encoder, FramedWrite};

proptest! {
    #[test]
    fn sans_io_decode_frame_returns_every_payload_whatever_the_chunking(
        (config, payloads) in config_and_payloads(),
        sizes in chunk_sizes(),
    ) {
        let chunks = chunk(&reference_stream(&config, &payloads), &sizes);
        prop_assert_eq!(decode_sans_io(&config, &chunks).unwrap(), to_bytes(&payloads));
    }

    #[test]
    fn sans_io_decode_next_reports_each_frame_once(
        (config, payloads) in config_and_payloads(),
        sizes in chunk_sizes(),
    ) {
        let chunks = chunk(&reference_stream(&config, &payloads), &sizes);
        let mut codec = FrameCodec::with_config(config);
        let mut buf = BytesMut::new();
        let mut events = Vec::new();
        for chunk in &chunks {
            buf.extend_from_slice(chunk);
            while let Some(event) = codec.decode_next(&mut buf).unwrap() {
                events.push(event);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert!(codec.is_at_boundary());
        prop_assert_eq!(codec.decode_eof(&mut buf).unwrap(), None);
        let expected: Vec<_> = to_bytes(&payloads).into_iter().map(Decoded::Frame).collect();
        prop_assert_eq!(events, expected);
    }

    #[test]
    fn sans_io_decode_eof_alone_drains_a_whole_stream(
        (config, payloads) in config_and_payloads(),
    ) {
        // What tokio-util does when the last read is followed by end of
        // stream: only `decode_eof`, called until it returns `None`.
        let mut codec = FrameCodec::with_config(config);
        let mut buf = BytesMut::from(&reference_stream(&config, &payloads)[..]);
        let mut frames = Vec::new();
        while let Some(frame) = codec.decode_eof(&mut buf).unwrap() {
            frames.push(frame);
        }
        prop_assert_eq!(frames, to_bytes(&payloads));
    }

    #[test]
    fn framed_read_returns_every_payload_whatever_the_chunking(
        (config, payloads) in config_and_payloads(),
        sizes in chunk_sizes(),
    ) {
        let chunks = chunk(&reference_stream(&config, &payloads), &sizes);
        prop_assert_eq!(decode_framed(&config, &chunks).unwrap(), to_bytes(&payloads));
    }

    #[test]
    fn blocking_read_frame_returns_every_payload_whatever_the_chunking(
        (config, payloads) in config_and_payloads(),
        sizes in chunk_sizes(),
    ) {
        let chunks = chunk(&reference_stream(&config, &payloads), &sizes);
        prop_assert_eq!(decode_blocking(&config, &chunks).unwrap(), to_bytes(&payloads));
    }

    #[test]
    fn encode_copies_the_reference_stream((config, payloads) in config_and_payloads()) {
        let codec = FrameCodec::with_config(config);
        let mut out = BytesMut::new();
        for payload in &payloads {
            codec.encode(payload, &mut out).unwrap();
        }
        prop_assert_eq!(&out[..], &reference_stream(&config, &payloads)[..]);
    }

    #[test]
    fn tokio_encoder_writes_the_reference_stream((config, payloads) in config_and_payloads()) {
        let mut codec = FrameCodec::with_config(config);
        let mut out = BytesMut::new();
        for (i, payload) in payloads.iter().enumerate() {
            // Both encoder impls, in turn.
            if i % 2 == 0 {
                Encoder::<Bytes>::encode(&mut codec, Bytes::from(payload.clone()), &mut out).unwrap();
            } else {
                Encoder::<&[u8]>::encode(&mut codec, payload, &mut out).unwrap();
            }
        }
        prop_assert_eq!(&out[..], &reference_stream(&config, &payloads)[..]);
    }

    #[test]
    fn encode_head_chained_with_the_payload_is_the_reference_frame(
        (config, payloads) in config_and_payloads(),
    ) {
        let codec = FrameCodec::with_config(config);
        for payload in &payloads {
            let head = codec.encode_head(payload.len()).unwrap();
            prop_assert_eq!(head.as_slice(), &reference_head(&config, payload.len())[..]);
            let mut frame = head.chain(&payload[..]);
            prop_assert_eq!(frame.remaining(), head.as_slice().len() + payload.len());
            let mut out = Vec::new();
            out.put(&mut frame);
            prop_assert_eq!(out, reference_frame(&config, payload));
        }
    }

    #[test]
    fn blocking_write_frame_with_partial_writes_produces_the_exact_stream(
        (config, payloads) in config_and_payloads(),
        sizes in chunk_sizes(),
    ) {
        let mut writer = ShortWriter::new(&sizes);
        for payload in &payloads {
            framekit_codec::blocking::write_frame(&mut writer, &config, payload).unwrap();
        }
        prop_assert_eq!(writer.written, reference_stream(&config, &payloads));
    }

    #[test]
    fn async_write_frame_with_partial_writes_produces_the_exact_stream(
        (config, payloads) in config_and_payloads(),
        sizes in chunk_sizes(),
        vectored in any::<bool>(),
    ) {
        let mut writer = ShortAsyncWriter::new(&sizes, vectored);
        tokio_test::block_on(async {
            for payload in &payloads {
                let payload = Bytes::from(payload.clone());
                framekit_codec::frame::write_frame(&mut writer, &config, payload).await.unwrap();
            }
        });
        prop_assert_eq!(writer.written, reference_stream(&config, &payloads));
    }

    #[test]
    fn framed_write_with_partial_writes_produces_the_exact_stream(
        (config, payloads) in config_and_payloads(),
        sizes in chunk_sizes(),
    ) {
        let writer = ShortAsyncWriter::new(&sizes, false);
        let mut framed = FramedWrite::new(writer, FrameCodec::with_config(config));
        tokio_test::block_on(async {
            for payload in &payloads {
                framed.send(Bytes::from(payload.clone())).await.unwrap();
            }
        });
        prop_assert_eq!(&framed.get_ref().written, &reference_stream(&config, &payloads));
    }
}

#[test]
fn every_two_chunk_split_decodes_in_every_api() {
    // Exhaustive over the cut point, so every byte of every prefix kind is
    // at some point the last byte of a read.
    for config in all_configs(
        framekit_codec::frame::DEFAULT_MAX_FRAME_LENGTH,
        Oversize::Error,
    ) {
        let min = min_payload_len(&config);
        let payloads = vec![vec![0xA5; min], vec![1; min + 1], vec![0x80; min + 200]];
        let stream = reference_stream(&config, &payloads);
        for cut in 0..=stream.len() {
            let chunks = [stream[..cut].to_vec(), stream[cut..].to_vec()];
            let expected = to_bytes(&payloads);
            assert_eq!(
                decode_sans_io(&config, &chunks).unwrap(),
                expected,
                "{config:?} cut at {cut}"
            );
            assert_eq!(
                decode_framed(&config, &chunks).unwrap(),
                expected,
                "{config:?} cut at {cut}"
            );
            assert_eq!(
                decode_blocking(&config, &chunks).unwrap(),
                expected,
                "{config:?} cut at {cut}"
            );
        }
    }
}

#[test]
fn empty_stream_is_a_clean_end_in_every_api() {
    for config in all_configs(
        framekit_codec::frame::DEFAULT_MAX_FRAME_LENGTH,
        Oversize::Error,
    ) {
        let mut codec = FrameCodec::with_config(config);
        assert_eq!(codec.decode_eof(&mut BytesMut::new()).unwrap(), None);
        assert_eq!(decode_framed(&config, &[]).unwrap(), Vec::<Bytes>::new());
        let mut empty: &[u8] = &[];
        assert_eq!(
            framekit_codec::blocking::read_frame(&mut empty, &config).unwrap(),
            None
        );
    }
}

#[test]
fn length_counting_the_prefix_is_read_as_the_payload_length() {
    // A PostgreSQL-style length: 0x0000_0009 counts its own 4 bytes.
    let config = config(LengthPrefix::U32Be, -4, 1024, Oversize::Error);
    let stream = [0, 0, 0, 9, b'h', b'e', b'l', b'l', b'o'];
    let chunks = [stream.to_vec()];
    let expected = vec![Bytes::from_static(b"hello")];
    assert_eq!(decode_sans_io(&config, &chunks).unwrap(), expected);
    assert_eq!(decode_framed(&config, &chunks).unwrap(), expected);
    assert_eq!(decode_blocking(&config, &chunks).unwrap(), expected);
}

#[test]
fn default_prefix_is_four_bytes_big_endian_counting_the_payload() {
    let mut out = BytesMut::new();
    FrameCodec::new().encode(b"abc", &mut out).unwrap();
    assert_eq!(&out[..], b"\0\0\0\x03abc");
}
