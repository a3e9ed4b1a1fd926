//! A length prefix is a claim: the decoder checks it against the maximum
//! before the payload arrives, and sizes its buffer by what has arrived,
//! never by what was declared.
#![cfg(feature = "tokio")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::BytesMut;
use common::*;
use framekit_codec::Error;
use framekit_codec::frame::{FrameCodec, LengthPrefix, MIN_READ_AHEAD, Oversize, READ_AHEAD};
use futures_util::StreamExt;
use std::io::{self, Read};
use std::task::Poll;
use tokio_util::codec::FramedRead;

const MIB: usize = 1024 * 1024;

/// A prefix declaring `declared` payload bytes, in `config`'s encoding, for
/// lengths the encoder itself would refuse.
fn head_declaring(config: &framekit_codec::frame::FrameConfig, declared: u64) -> Vec<u8> {
    let wire = declared
        .checked_add_signed(-config.length_adjustment())
        .unwrap();
    match config.prefix() {
        LengthPrefix::U8 => vec![u8::try_from(wire).unwrap()],
        LengthPrefix::U16Be => u16::try_from(wire).unwrap().to_be_bytes().to_vec(),
        LengthPrefix::U16Le => u16::try_from(wire).unwrap().to_le_bytes().to_vec(),
        LengthPrefix::U32Be => u32::try_from(wire).unwrap().to_be_bytes().to_vec(),
        LengthPrefix::U32Le => u32::try_from(wire).unwrap().to_le_bytes().to_vec(),
        LengthPrefix::U64Be => wire.to_be_bytes().to_vec(),
        LengthPrefix::U64Le => wire.to_le_bytes().to_vec(),
        LengthPrefix::Varint => leb128(wire),
        other => panic!("unknown prefix {other:?}"),
    }
}

#[test]
fn length_above_the_maximum_is_rejected_from_the_prefix_alone() {
    // max 200 so that even a one-byte prefix can declare more.
    for config in all_configs(200, Oversize::Error) {
        let mut codec = FrameCodec::with_config(config);
        let mut buf = BytesMut::from(&head_declaring(&config, 201)[..]);
        let err = codec.decode_frame(&mut buf).unwrap_err();
        assert!(
            matches!(
                err,
                Error::FrameTooLarge {
                    declared: 201,
                    max: 200
                }
            ),
            "{config:?}: {err}"
        );
        assert!(buf.capacity() <= 64, "{config:?}: {}", buf.capacity());
    }
}

#[test]
fn declared_4_gib_is_rejected_without_reserving_it() {
    let mut codec = FrameCodec::new();
    let mut buf = BytesMut::from(&[0xFF, 0xFF, 0xFF, 0xFF, 0xAA][..]);
    let err = codec.decode_frame(&mut buf).unwrap_err();
    assert!(matches!(
        err,
        Error::FrameTooLarge {
            declared: 0xFFFF_FFFF,
            max: 0x100_0000
        }
    ));
    assert!(buf.capacity() <= 64, "{}", buf.capacity());
}

#[test]
fn largest_u64_length_is_rejected_without_overflow() {
    for prefix in [LengthPrefix::U64Be, LengthPrefix::U64Le] {
        let mut codec = FrameCodec::builder().prefix(prefix).new_codec();
        let mut buf = BytesMut::from(&[0xFF; 8][..]);
        let err = codec.decode_frame(&mut buf).unwrap_err();
        assert!(
            matches!(
                err,
                Error::FrameTooLarge {
                    declared: u64::MAX,
                    ..
                }
            ),
            "{err}"
        );
    }
}

#[test]
fn adjustment_that_overflows_the_length_is_invalid() {
    let mut codec = FrameCodec::builder()
        .prefix(LengthPrefix::U64Be)
        .length_adjustment(1)
        .new_codec();
    let mut buf = BytesMut::from(&[0xFF; 8][..]);
    let err = codec.decode_frame(&mut buf).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidLength {
                wire: u64::MAX,
                adjustment: 1
            }
        ),
        "{err}"
    );
}

#[test]
fn length_smaller_than_the_prefix_it_counts_is_invalid() {
    let config = config(LengthPrefix::U32Be, -4, 1024, Oversize::Error);
    let mut codec = FrameCodec::with_config(config);
    let mut buf = BytesMut::from(&[0, 0, 0, 3][..]);
    let err = codec.decode_frame(&mut buf).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidLength {
                wire: 3,
                adjustment: -4
            }
        ),
        "{err}"
    );
    let mut reader = &[0u8, 0, 0, 3][..];
    let err = framekit_codec::blocking::read_frame(&mut reader, &config).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidLength {
                wire: 3,
                adjustment: -4
            }
        ),
        "{err}"
    );
}

#[test]
fn declared_16_mib_with_one_byte_reserves_only_the_read_ahead() {
    for config in all_configs(16 * MIB, Oversize::Error) {
        if config.prefix().max_value() < 16 * MIB as u64 {
            continue;
        }
        let mut codec = FrameCodec::with_config(config);
        let mut buf = BytesMut::from(&head_declaring(&config, 16 * MIB as u64)[..]);
        buf.extend_from_slice(&[1]);
        assert_eq!(codec.decode_frame(&mut buf).unwrap(), None);
        assert!(
            buf.capacity() <= MIN_READ_AHEAD + 64,
            "{config:?}: {}",
            buf.capacity()
        );
    }
}

#[test]
fn payload_buffer_grows_with_the_bytes_that_arrive() {
    let mut codec = FrameCodec::new();
    let mut buf = BytesMut::from(&head_declaring(codec.config(), 16 * MIB as u64)[..]);
    let chunk = vec![7u8; 4096];
    let mut received = 0;
    while received < 2 * MIB {
        buf.extend_from_slice(&chunk);
        received += chunk.len();
        assert_eq!(codec.decode_frame(&mut buf).unwrap(), None);
        // Growth may double the buffer, but never towards the declared
        // 16 MiB before the bytes are there.
        assert!(
            buf.capacity() <= 2 * (received + READ_AHEAD),
            "{} bytes received, capacity {}",
            received,
            buf.capacity()
        );
    }
}

#[test]
fn thousand_stalled_peers_cost_their_read_ahead_not_16_gib() {
    let head = head_declaring(&Default::default(), 16 * MIB as u64);
    let mut peers: Vec<_> = (0..1000)
        .map(|_| (FrameCodec::new(), BytesMut::new()))
        .collect();
    for (codec, buf) in &mut peers {
        buf.extend_from_slice(&head);
        assert_eq!(codec.decode_frame(buf).unwrap(), None);
        buf.extend_from_slice(&[0]);
        assert_eq!(codec.decode_frame(buf).unwrap(), None);
    }
    let total: usize = peers.iter().map(|(_, buf)| buf.capacity()).sum();
    // A few KiB per peer, about 4 MiB in all, where reserving the declared
    // lengths would be 16 GiB.
    assert!(
        total <= 1000 * (MIN_READ_AHEAD + 64),
        "{total} bytes reserved"
    );
}

#[test]
fn framed_read_rejects_an_oversized_prefix_before_the_payload() {
    let config = config(LengthPrefix::U16Be, 0, 100, Oversize::Error);
    // Only the prefix arrives; then the peer stalls.
    let reader = ChunkedAsyncRead::then(&[vec![0, 101]], AfterChunks::Stall);
    let mut framed = FramedRead::new(reader, FrameCodec::with_config(config));
    let mut next = tokio_test::task::spawn(framed.next());
    // The reader is Pending before each chunk, and forever after the prefix:
    // a decision can only come from the prefix.
    let result = (0..10).find_map(|_| match next.poll() {
        Poll::Ready(result) => Some(result),
        Poll::Pending => None,
    });
    match result {
        Some(Some(Err(Error::FrameTooLarge {
            declared: 101,
            max: 100,
        }))) => {}
        other => panic!("expected FrameTooLarge, got {other:?}"),
    }
}

#[test]
fn framed_read_buffer_stays_small_while_a_16_mib_frame_stalls() {
    let head = head_declaring(&Default::default(), 16 * MIB as u64);
    let reader = ChunkedAsyncRead::then(&[head, vec![1]], AfterChunks::Stall);
    let mut framed = FramedRead::new(reader, FrameCodec::new());
    for _ in 0..10 {
        let mut next = tokio_test::task::spawn(framed.next());
        assert!(next.poll().is_pending());
    }
    assert_eq!(framed.read_buffer().len(), 1);
    // tokio-util's own 8 KiB plus the decoder's read-ahead.
    let capacity = framed.read_buffer().capacity();
    assert!(capacity <= 8 * 1024 + READ_AHEAD + 64, "{capacity}");
}

/// A reader that holds a prefix and fails if it is read past it.
struct PrefixOnly(Vec<u8>);

impl Read for PrefixOnly {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.0.is_empty() {
            return Err(io::Error::other("read past the prefix"));
        }
        let n = buf.len().min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0.drain(..n);
        Ok(n)
    }
}

#[test]
fn blocking_read_frame_rejects_an_oversized_prefix_before_reading_the_payload() {
    for config in all_configs(200, Oversize::Error) {
        let mut reader = PrefixOnly(head_declaring(&config, 201));
        let err = framekit_codec::blocking::read_frame(&mut reader, &config).unwrap_err();
        assert!(
            matches!(
                err,
                Error::FrameTooLarge {
                    declared: 201,
                    max: 200
                }
            ),
            "{config:?}: {err}"
        );
    }
}

#[test]
fn blocking_read_frame_asks_for_at_most_the_read_ahead_at_a_time() {
    // The buffer handed to `read` is what read_frame allocated for the
    // payload so far: it must follow the bytes, not the declared 16 MiB.
    let config = Default::default();
    let head = head_declaring(&config, 16 * MIB as u64);
    let mut reader = ChunkedRead::new(&[head, vec![1]]);
    let err = framekit_codec::blocking::read_frame(&mut reader, &config).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Truncated {
                received: 1,
                expected: Some(0x100_0000)
            }
        ),
        "{err}"
    );
    assert!(reader.largest_read <= READ_AHEAD, "{}", reader.largest_read);
}
