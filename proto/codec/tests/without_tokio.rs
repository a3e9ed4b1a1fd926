//! The sans-IO and blocking APIs on their own: this file uses neither tokio
//! nor tokio-util, and runs under `--no-default-features` as well as with
//! the default features.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::BytesMut;
use framekit_codec::blocking::{read_frame, read_message, read_next, write_frame, write_message};
use framekit_codec::frame::{Builder, Decoded, FrameCodec, FrameConfig, LengthPrefix, Oversize};
use framekit_codec::{Error, message};
use serde::{Deserialize, Serialize};
use std::io::{BufReader, Cursor, Read};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Request {
    Put { name: String, size: u64 },
    Done,
}

#[test]
fn blocking_frames_round_trip_in_every_prefix() {
    for prefix in [
        LengthPrefix::U8,
        LengthPrefix::U16Le,
        LengthPrefix::U32Be,
        LengthPrefix::U64Le,
        LengthPrefix::Varint,
    ] {
        let config = Builder::new().prefix(prefix).config();
        let payloads: [&[u8]; 3] = [b"one", b"", &[7; 200]];
        let mut wire = Vec::new();
        for payload in payloads {
            write_frame(&mut wire, &config, payload).unwrap();
        }
        let mut reader = Cursor::new(wire);
        for payload in payloads {
            assert_eq!(
                &read_frame(&mut reader, &config).unwrap().unwrap()[..],
                payload
            );
        }
        assert_eq!(read_frame(&mut reader, &config).unwrap(), None);
    }
}

#[test]
fn blocking_reader_leaves_the_bytes_after_a_frame_in_the_buffered_reader() {
    // A frame, then a raw body that is not framed: the reader must stop at
    // the frame's last byte.
    let config = FrameConfig::default();
    let mut wire = Vec::new();
    write_frame(&mut wire, &config, b"header").unwrap();
    wire.extend_from_slice(b"raw body bytes");
    let mut reader = BufReader::with_capacity(4, Cursor::new(wire));
    assert_eq!(
        &read_frame(&mut reader, &config).unwrap().unwrap()[..],
        b"header"
    );
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, b"raw body bytes");
}

#[test]
fn blocking_reader_skips_an_oversized_frame_in_discard_mode() {
    let config = Builder::new()
        .max_frame_length(2)
        .oversize(Oversize::Discard)
        .config();
    let wire = [0, 0, 0, 3, 1, 2, 3, 0, 0, 0, 1, 9];
    let mut reader = &wire[..];
    assert_eq!(
        read_next(&mut reader, &config).unwrap(),
        Some(Decoded::Discarded { length: 3 })
    );
    assert_eq!(
        read_next(&mut reader, &config).unwrap(),
        Some(Decoded::Frame(vec![9].into()))
    );
    assert_eq!(read_next(&mut reader, &config).unwrap(), None);
}

#[test]
fn blocking_reader_refuses_an_oversized_frame_and_a_truncated_one() {
    let config = Builder::new().max_frame_length(2).config();
    let err = read_frame(&mut &[0, 0, 0, 3, 1, 2, 3][..], &config).unwrap_err();
    assert!(
        matches!(
            err,
            Error::FrameTooLarge {
                declared: 3,
                max: 2
            }
        ),
        "{err}"
    );
    let err = read_frame(&mut &[0, 0, 0, 2, 1][..], &config).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Truncated {
                received: 1,
                expected: Some(2)
            }
        ),
        "{err}"
    );
}

#[test]
fn blocking_messages_round_trip() {
    let config = FrameConfig::default();
    let sent = [
        Request::Put {
            name: "a.txt".into(),
            size: 42,
        },
        Request::Done,
    ];
    let mut wire = Vec::new();
    for request in &sent {
        write_message(&mut wire, &config, request).unwrap();
    }
    let mut reader = Cursor::new(wire);
    for request in &sent {
        let got: Request = read_message(&mut reader, &config).unwrap().unwrap();
        assert_eq!(&got, request);
    }
    assert_eq!(
        read_message::<_, Request>(&mut reader, &config).unwrap(),
        None
    );
}

#[test]
fn sans_io_decoder_reads_what_the_blocking_writer_wrote() {
    let config = FrameConfig::default();
    let mut wire = Vec::new();
    write_frame(&mut wire, &config, b"hello").unwrap();
    let frame = message::to_frame(&config, &Request::Done).unwrap();
    wire.extend_from_slice(&frame);

    let mut codec = FrameCodec::with_config(config);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for byte in wire {
        buf.extend_from_slice(&[byte]);
        while let Some(frame) = codec.decode_frame(&mut buf).unwrap() {
            frames.push(frame);
        }
    }
    assert_eq!(codec.decode_eof(&mut buf).unwrap(), None);
    assert_eq!(&frames[0][..], b"hello");
    assert_eq!(
        message::decode::<Request>(&frames[1]).unwrap(),
        Request::Done
    );
}
