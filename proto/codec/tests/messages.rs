//! Typed messages: any serde value survives every API, whatever the
//! chunking; arbitrary bytes never panic the decoder, whatever decodes
//! re-encodes to the same bytes, and claimed lengths are never allocated.
#![cfg(feature = "tokio")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::BytesMut;
use common::*;
use framekit_codec::Error;
use framekit_codec::frame::{FrameCodec, FrameConfig};
use framekit_codec::message::{self, MessageCodec};
use futures_util::StreamExt;
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt::Debug;
use tokio_util::codec::{Encoder, FramedRead};

// ---- Sample messages ----------------------------------------------------------

/// A first message as protocols have them: fixed bytes, a version, an
/// optional string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Greeting {
    magic: [u8; 8],
    version: u16,
    token: Option<String>,
}

/// Requests: an enum whose variants hold strings, integers, booleans,
/// options and arrays, or nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Command {
    Put {
        name: String,
        size: u64,
        overwrite: bool,
        key: Option<[u8; 32]>,
    },
    Get {
        name: String,
        offset: u64,
    },
    Note(String),
    Done,
    Ack {
        size: u64,
        hash: [u8; 32],
    },
}

/// A struct of every fixed-width integer and a nested enum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Numbers {
    a: u8,
    b: u16,
    c: u32,
    d: u64,
    e: i64,
    flag: bool,
    inner: Option<Command>,
}

// ---- Strategies -------------------------------------------------------------

fn text() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "[a-z0-9/._-]{1,20}", any::<String>()]
}

fn greeting() -> impl Strategy<Value = Greeting> {
    (any::<[u8; 8]>(), any::<u16>(), proptest::option::of(text())).prop_map(
        |(magic, version, token)| Greeting {
            magic,
            version,
            token,
        },
    )
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        (
            text(),
            any::<u64>(),
            any::<bool>(),
            proptest::option::of(any::<[u8; 32]>())
        )
            .prop_map(|(name, size, overwrite, key)| Command::Put {
                name,
                size,
                overwrite,
                key
            }),
        (text(), any::<u64>()).prop_map(|(name, offset)| Command::Get { name, offset }),
        text().prop_map(Command::Note),
        Just(Command::Done),
        (any::<u64>(), any::<[u8; 32]>()).prop_map(|(size, hash)| Command::Ack { size, hash }),
    ]
}

fn numbers() -> impl Strategy<Value = Numbers> {
    (
        any::<(u8, u16, u32, u64, i64, bool)>(),
        proptest::option::of(command()),
    )
        .prop_map(|((a, b, c, d, e, flag), inner)| Numbers {
            a,
            b,
            c,
            d,
            e,
            flag,
            inner,
        })
}

// ---- Round trips ------------------------------------------------------------

/// Sends `msgs` through every API and checks they come back equal:
/// `encode_frame` and `decode`, `MessageCodec` under `FramedRead`, and the
/// blocking `write_message`/`read_message`, with the stream cut by `sizes`.
fn check_round_trip<T>(msgs: &[T], sizes: &[usize]) -> Result<(), TestCaseError>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let config = FrameConfig::default();

    // encode_frame: prefix, then exactly `encode`'s bytes; decode reads them.
    let mut stream = BytesMut::new();
    for msg in msgs {
        let mut body = BytesMut::new();
        message::encode(msg, &mut body).unwrap();
        prop_assert_eq!(message::encoded_len(msg).unwrap(), body.len());
        let start = stream.len();
        message::encode_frame(&config, msg, &mut stream).unwrap();
        prop_assert_eq!(&stream[start..], &reference_frame(&config, &body)[..]);
        prop_assert_eq!(
            &message::to_frame(&config, msg).unwrap()[..],
            &stream[start..]
        );
        prop_assert_eq!(&message::decode::<T>(&body).unwrap(), msg);
    }
    let chunks = chunk(&stream, sizes);

    // The sans-IO frame decoder, then decode.
    let decoded: Vec<T> = decode_sans_io(&config, &chunks)
        .unwrap()
        .iter()
        .map(|frame| message::decode(frame).unwrap())
        .collect();
    prop_assert_eq!(&decoded, &msgs);

    // MessageCodec: its encoder writes the same stream; FramedRead decodes.
    let mut codec = MessageCodec::<T>::with_frames(FrameCodec::with_config(config));
    let mut encoded = BytesMut::new();
    for msg in msgs {
        codec.encode(msg, &mut encoded).unwrap();
    }
    prop_assert_eq!(&encoded, &stream);
    let mut framed = FramedRead::new(ChunkedAsyncRead::new(&chunks), codec);
    let decoded: Vec<T> = tokio_test::block_on(async {
        let mut decoded = Vec::new();
        while let Some(msg) = framed.next().await {
            decoded.push(msg.unwrap());
        }
        decoded
    });
    prop_assert_eq!(&decoded, &msgs);

    // Blocking: write_message writes the same stream, read_message reads it.
    let mut written = Vec::new();
    for msg in msgs {
        framekit_codec::blocking::write_message(&mut written, &config, msg).unwrap();
    }
    prop_assert_eq!(&written[..], &stream[..]);
    let mut reader = ChunkedRead::new(&chunks);
    let mut decoded = Vec::new();
    while let Some(msg) =
        framekit_codec::blocking::read_message::<_, T>(&mut reader, &config).unwrap()
    {
        decoded.push(msg);
    }
    prop_assert_eq!(&decoded, &msgs);
    Ok(())
}

/// Decodes `bytes` as a `T`: either an error, or a value that re-encodes to
/// exactly `bytes` (the encoding is canonical, so nothing is accepted that
/// the encoder would not produce).
fn check_decode_is_total<T>(bytes: &[u8]) -> Result<(), TestCaseError>
where
    T: Serialize + DeserializeOwned + Debug,
{
    match message::decode::<T>(bytes) {
        Ok(value) => {
            let mut again = BytesMut::new();
            message::encode(&value, &mut again).unwrap();
            prop_assert_eq!(&again[..], bytes, "{:?}", value);
        }
        Err(Error::Decode { message, .. }) => {
            prop_assert_eq!(
                message,
                std::any::type_name::<T>().rsplit("::").next().unwrap()
            );
        }
        Err(other) => prop_assert!(false, "not a decode error: {other}"),
    }
    Ok(())
}

/// Bytes close to valid encodings of `T`: an encoding with some bytes
/// changed, cut short, or extended.
fn mutated<T: Serialize + Debug>(
    valid: impl Strategy<Value = T>,
) -> impl Strategy<Value = Vec<u8>> {
    (
        valid,
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        prop_oneof![Just(None), any::<prop::sample::Index>().prop_map(Some)],
        proptest::collection::vec(any::<u8>(), 0..3),
    )
        .prop_map(|(value, changes, cut, extra)| {
            let mut bytes = BytesMut::new();
            message::encode(&value, &mut bytes).unwrap();
            let mut bytes = bytes.to_vec();
            if !bytes.is_empty() {
                for (at, byte) in changes {
                    let at = at.index(bytes.len());
                    bytes[at] = byte;
                }
            }
            if let Some(cut) = cut {
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            bytes.extend(extra);
            bytes
        })
}

fn arbitrary_bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..200)
}

proptest! {
    #[test]
    fn structs_round_trip_through_every_api(
        msgs in proptest::collection::vec(greeting(), 0..6),
        sizes in chunk_sizes(),
    ) {
        check_round_trip(&msgs, &sizes)?;
    }

    #[test]
    fn enums_round_trip_through_every_api(
        msgs in proptest::collection::vec(command(), 0..6),
        sizes in chunk_sizes(),
    ) {
        check_round_trip(&msgs, &sizes)?;
    }

    #[test]
    fn integers_and_nested_values_round_trip_through_every_api(
        msgs in proptest::collection::vec(numbers(), 0..6),
        sizes in chunk_sizes(),
    ) {
        check_round_trip(&msgs, &sizes)?;
    }

    #[test]
    fn strings_round_trip_through_every_api(
        msgs in proptest::collection::vec(text(), 0..6),
        sizes in chunk_sizes(),
    ) {
        check_round_trip(&msgs, &sizes)?;
    }

    #[test]
    fn arbitrary_bytes_decode_to_an_error_or_to_their_own_encoding(
        bytes in arbitrary_bytes(),
    ) {
        check_decode_is_total::<Greeting>(&bytes)?;
        check_decode_is_total::<Command>(&bytes)?;
        check_decode_is_total::<Numbers>(&bytes)?;
        check_decode_is_total::<String>(&bytes)?;
        check_decode_is_total::<u64>(&bytes)?;
    }

    #[test]
    fn damaged_enums_decode_to_an_error_or_to_their_own_encoding(
        bytes in mutated(command()),
    ) {
        check_decode_is_total::<Command>(&bytes)?;
    }

    #[test]
    fn damaged_structs_decode_to_an_error_or_to_their_own_encoding(
        bytes in mutated(numbers()),
    ) {
        check_decode_is_total::<Numbers>(&bytes)?;
    }
}

// ---- The wire format --------------------------------------------------------

#[test]
fn enum_encoding_is_variant_index_then_fields_little_endian() {
    // Note is variant 2; a string is its u64 length then its bytes.
    let mut buf = BytesMut::new();
    message::encode(&Command::Note("ab".into()), &mut buf).unwrap();
    assert_eq!(&buf[..], &[2, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, b'a', b'b']);
}

#[test]
fn integers_are_fixed_width_little_endian() {
    let mut buf = BytesMut::new();
    let msg = Numbers {
        a: 1,
        b: 0x0203,
        c: 0x0405_0607,
        d: 0x0809,
        e: -1,
        flag: true,
        inner: None,
    };
    message::encode(&msg, &mut buf).unwrap();
    let expected: Vec<u8> = [
        &[1u8][..],
        &[3, 2],
        &[7, 6, 5, 4],
        &[9, 8, 0, 0, 0, 0, 0, 0],
        &[0xFF; 8],
        &[1],
        &[0],
    ]
    .concat();
    assert_eq!(&buf[..], &expected[..]);
}

#[test]
fn struct_encoding_is_fields_in_order_with_an_option_byte() {
    // An Option is a 0/1 byte, then the value if 1.
    let mut buf = BytesMut::new();
    let hello = Greeting {
        magic: *b"FRAMEKIT",
        version: 1,
        token: None,
    };
    message::encode(&hello, &mut buf).unwrap();
    assert_eq!(&buf[..], b"FRAMEKIT\x01\x00\x00");
}

// ---- Hostile messages -------------------------------------------------------

/// A `Command::Put` whose name claims `claimed` bytes, followed by only a
/// few.
fn put_claiming(claimed: u64) -> Vec<u8> {
    let mut bytes = 0u32.to_le_bytes().to_vec();
    bytes.extend_from_slice(&claimed.to_le_bytes());
    bytes.extend_from_slice(b"short");
    bytes
}

fn is_command_decode_error(err: &Error) -> bool {
    matches!(
        err,
        Error::Decode {
            message: "Command",
            ..
        }
    )
}

#[test]
fn huge_string_claim_is_a_decode_error_in_every_api() {
    let config = FrameConfig::default();
    for claimed in [6, 1 << 16, 1 << 40, u64::MAX] {
        let body = put_claiming(claimed);
        let err = message::decode::<Command>(&body).unwrap_err();
        assert!(is_command_decode_error(&err), "{claimed}: {err}");
        assert!(
            err.to_string().starts_with("malformed Command message"),
            "{err}"
        );

        let frame = reference_frame(&config, &body);
        let mut framed = FramedRead::new(
            ChunkedAsyncRead::new(std::slice::from_ref(&frame)),
            MessageCodec::<Command>::with_frames(FrameCodec::with_config(config)),
        );
        let err = tokio_test::block_on(framed.next()).unwrap().unwrap_err();
        assert!(is_command_decode_error(&err), "{claimed}: {err}");

        let err = framekit_codec::blocking::read_message::<_, Command>(&mut &frame[..], &config)
            .unwrap_err();
        assert!(is_command_decode_error(&err), "{claimed}: {err}");
    }
}

#[test]
fn unknown_variant_is_a_decode_error() {
    let err = message::decode::<Command>(&5u32.to_le_bytes()).unwrap_err();
    assert!(is_command_decode_error(&err), "{err}");
}

#[test]
fn message_too_large_for_a_frame_is_refused_and_writes_nothing() {
    let config = framekit_codec::Builder::new()
        .max_frame_length(1024)
        .config();
    let msg = Command::Note("x".repeat(1024));
    let is_too_large = |err: &Error| matches!(err, Error::PayloadTooLarge { .. });

    let mut buf = BytesMut::from(&b"kept"[..]);
    let err = message::encode_frame(&config, &msg, &mut buf).unwrap_err();
    assert!(is_too_large(&err), "{err}");
    assert_eq!(&buf[..], b"kept");

    let mut codec = MessageCodec::<Command>::with_frames(FrameCodec::with_config(config));
    let err = codec.encode(&msg, &mut buf).unwrap_err();
    assert!(is_too_large(&err), "{err}");
    assert_eq!(&buf[..], b"kept");

    let mut written = Vec::new();
    let err = framekit_codec::blocking::write_message(&mut written, &config, &msg).unwrap_err();
    assert!(is_too_large(&err), "{err}");
    assert!(written.is_empty());
}
