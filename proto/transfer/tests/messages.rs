//! The protocol's messages: every message survives every API of the
//! codec, arbitrary bytes never panic the decoder, whatever decodes
//! re-encodes to the same bytes, and the encoding is the one PROTOCOL.md
//! describes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::{BufMut, BytesMut};
use framekit_codec::message::{self, MessageCodec};
use framekit_codec::{Decoder, Encoder, Error, FrameCodec};
use framekit_transfer::{
    self as transfer, Delete, Entry, ErrorCode, ErrorReply, FileVersion, Get, Hello, List, MakeDir,
    Put, PutEager, Request, Response, Stat, Trailer, Tree, Welcome,
};
use proptest::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;

// ---- Strategies -------------------------------------------------------------

fn text() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "[a-z0-9/._-]{1,20}", any::<String>()]
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    // Every code as a peer can send it: known ones and unknown ones.
    prop_oneof![
        proptest::sample::select(ErrorCode::ALL.to_vec()),
        any::<u16>().prop_map(ErrorCode::from),
    ]
}

fn hello() -> impl Strategy<Value = Hello> {
    (any::<[u8; 8]>(), any::<u16>(), proptest::option::of(text())).prop_map(
        |(magic, version, token)| Hello {
            magic,
            version,
            token,
        },
    )
}

fn welcome() -> impl Strategy<Value = Welcome> {
    (
        any::<u16>(),
        any::<u64>(),
        any::<u32>(),
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(
            |(version, max_file_size, max_message_len, idle_timeout_ms, read_only)| Welcome {
                version,
                max_file_size,
                max_message_len,
                idle_timeout_ms,
                read_only,
            },
        )
}

fn file_version() -> impl Strategy<Value = FileVersion> {
    (any::<u64>(), any::<u64>()).prop_map(|(size, modified_ns)| FileVersion { size, modified_ns })
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (
            text(),
            any::<u64>(),
            any::<bool>(),
            proptest::option::of(any::<[u8; 32]>())
        )
            .prop_map(|(name, size, overwrite, resume_key)| Request::Put(Put {
                name,
                size,
                overwrite,
                resume_key
            })),
        (text(), any::<u64>(), proptest::option::of(file_version())).prop_map(
            |(name, offset, if_version)| Request::Get(Get {
                name,
                offset,
                if_version
            })
        ),
        text().prop_map(|prefix| Request::List(List { prefix })),
        text().prop_map(|name| Request::Stat(Stat { name })),
        text().prop_map(|name| Request::Delete(Delete { name })),
        text().prop_map(|name| Request::MakeDir(MakeDir { name })),
        text().prop_map(|dir| Request::Tree(Tree { dir })),
        (text(), any::<u64>(), any::<bool>()).prop_map(|(name, size, overwrite)| {
            Request::PutEager(PutEager {
                name,
                size,
                overwrite,
            })
        }),
    ]
}

fn trailer() -> impl Strategy<Value = Trailer> {
    any::<[u8; 32]>().prop_map(|hash| Trailer { hash })
}

fn entry() -> impl Strategy<Value = Entry> {
    (text(), any::<u64>(), any::<u64>()).prop_map(|(name, size, modified_ns)| Entry {
        name,
        size,
        modified_ns,
    })
}

fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        welcome().prop_map(Response::Welcome),
        (error_code(), text())
            .prop_map(|(code, message)| Response::Error(ErrorReply::new(code, message))),
        any::<u64>().prop_map(|offset| Response::PutReady { offset }),
        (any::<u64>(), any::<[u8; 32]>()).prop_map(|(size, hash)| Response::PutDone { size, hash }),
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(size, offset, modified_ns)| {
            Response::GetReady {
                size,
                offset,
                modified_ns,
            }
        }),
        entry().prop_map(Response::Entry),
        any::<u64>().prop_map(|count| Response::ListEnd { count }),
        Just(Response::Deleted),
        Just(Response::DirMade),
        text().prop_map(|name| Response::Directory { name }),
    ]
}

// ---- Round trips ------------------------------------------------------------

/// The frame the protocol's configuration makes of `body`: a 4-byte
/// big-endian length, then the body.
fn reference_frame(body: &[u8]) -> Vec<u8> {
    let mut frame = BytesMut::new();
    frame.put_u32(u32::try_from(body.len()).unwrap());
    frame.put_slice(body);
    frame.to_vec()
}

/// Sends `msgs` through every API and checks they come back equal:
/// `encode_frame` and `decode`, `MessageCodec`, and the blocking
/// `write_message`/`read_message`. (Chunking is the codec's own property,
/// tested there with every configuration.)
fn check_round_trip<T>(msgs: &[T]) -> Result<(), TestCaseError>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let config = transfer::frame_config();

    let mut stream = BytesMut::new();
    for msg in msgs {
        let mut body = BytesMut::new();
        message::encode(msg, &mut body).unwrap();
        prop_assert_eq!(message::encoded_len(msg).unwrap(), body.len());
        let start = stream.len();
        message::encode_frame(&config, msg, &mut stream).unwrap();
        prop_assert_eq!(&stream[start..], &reference_frame(&body)[..]);
        prop_assert_eq!(
            &message::to_frame(&config, msg).unwrap()[..],
            &stream[start..]
        );
        prop_assert_eq!(&message::decode::<T>(&body).unwrap(), msg);
    }

    let mut codec = MessageCodec::<T>::with_frames(FrameCodec::with_config(config));
    let mut encoded = BytesMut::new();
    for msg in msgs {
        codec.encode(msg, &mut encoded).unwrap();
    }
    prop_assert_eq!(&encoded, &stream);
    let mut decoded = Vec::new();
    while let Some(msg) = codec.decode_eof(&mut encoded).unwrap() {
        decoded.push(msg);
    }
    prop_assert_eq!(&decoded, &msgs);

    let mut written = Vec::new();
    for msg in msgs {
        framekit_codec::blocking::write_message(&mut written, &config, msg).unwrap();
    }
    prop_assert_eq!(&written[..], &stream[..]);
    let mut reader = &written[..];
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
    fn hello_round_trips_through_every_api(
        msgs in proptest::collection::vec(hello(), 0..6),
    ) {
        check_round_trip(&msgs)?;
    }

    #[test]
    fn welcome_round_trips_through_every_api(
        msgs in proptest::collection::vec(welcome(), 0..6),
    ) {
        check_round_trip(&msgs)?;
    }

    #[test]
    fn requests_round_trip_through_every_api(
        msgs in proptest::collection::vec(request(), 0..6),
    ) {
        check_round_trip(&msgs)?;
    }

    #[test]
    fn responses_round_trip_through_every_api(
        msgs in proptest::collection::vec(response(), 0..6),
    ) {
        check_round_trip(&msgs)?;
    }

    #[test]
    fn trailer_round_trips_through_every_api(
        msgs in proptest::collection::vec(trailer(), 0..6),
    ) {
        check_round_trip(&msgs)?;
    }

    #[test]
    fn entry_round_trips_through_every_api(
        msgs in proptest::collection::vec(entry(), 0..6),
    ) {
        check_round_trip(&msgs)?;
    }

    #[test]
    fn error_codes_round_trip_through_every_api_including_unknown_ones(
        msgs in proptest::collection::vec(error_code(), 0..6),
    ) {
        check_round_trip(&msgs)?;
    }

    #[test]
    fn arbitrary_bytes_decode_to_an_error_or_to_their_own_encoding(
        bytes in arbitrary_bytes(),
    ) {
        check_decode_is_total::<Hello>(&bytes)?;
        check_decode_is_total::<Welcome>(&bytes)?;
        check_decode_is_total::<Request>(&bytes)?;
        check_decode_is_total::<Response>(&bytes)?;
        check_decode_is_total::<Trailer>(&bytes)?;
        check_decode_is_total::<Entry>(&bytes)?;
        check_decode_is_total::<ErrorCode>(&bytes)?;
    }

    #[test]
    fn damaged_requests_decode_to_an_error_or_to_their_own_encoding(
        bytes in mutated(request()),
    ) {
        check_decode_is_total::<Request>(&bytes)?;
    }

    #[test]
    fn damaged_responses_decode_to_an_error_or_to_their_own_encoding(
        bytes in mutated(response()),
    ) {
        check_decode_is_total::<Response>(&bytes)?;
    }

    #[test]
    fn damaged_hellos_decode_to_an_error_or_to_their_own_encoding(
        bytes in mutated(hello()),
    ) {
        check_decode_is_total::<Hello>(&bytes)?;
    }
}

// ---- The wire format --------------------------------------------------------

#[test]
fn request_encoding_is_variant_index_then_fields_little_endian() {
    // Stat is variant 3; a string is its u64 length then its bytes.
    let mut buf = BytesMut::new();
    message::encode(&Request::Stat(Stat { name: "ab".into() }), &mut buf).unwrap();
    assert_eq!(&buf[..], &[3, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, b'a', b'b']);
}

#[test]
fn response_encoding_is_variant_index_then_fields_little_endian() {
    // PutReady is variant 2; integers are fixed-width little-endian.
    let mut buf = BytesMut::new();
    message::encode(&Response::PutReady { offset: 0x0102 }, &mut buf).unwrap();
    assert_eq!(&buf[..], &[2, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0]);
}

#[test]
fn hello_encoding_is_magic_version_then_optional_token() {
    // An Option is a 0/1 byte, then the value if 1.
    let mut buf = BytesMut::new();
    let hello = Hello::new(None);
    message::encode(&hello, &mut buf).unwrap();
    assert_eq!(&buf[..], b"FRAMEKIT\x01\x00\x00");
}

// ---- Hostile messages -------------------------------------------------------

/// A `Request::Put` whose name claims `claimed` bytes, followed by only a
/// few.
fn put_claiming(claimed: u64) -> Vec<u8> {
    let mut bytes = 0u32.to_le_bytes().to_vec();
    bytes.extend_from_slice(&claimed.to_le_bytes());
    bytes.extend_from_slice(b"short");
    bytes
}

fn is_request_decode_error(err: &Error) -> bool {
    matches!(
        err,
        Error::Decode {
            message: "Request",
            ..
        }
    )
}

#[test]
fn huge_string_claim_is_a_decode_error_in_every_api() {
    let config = transfer::frame_config();
    for claimed in [6, 1 << 16, 1 << 40, u64::MAX] {
        let body = put_claiming(claimed);
        let err = message::decode::<Request>(&body).unwrap_err();
        assert!(is_request_decode_error(&err), "{claimed}: {err}");
        assert!(
            err.to_string().starts_with("malformed Request message"),
            "{err}"
        );

        let frame = reference_frame(&body);
        let mut codec = MessageCodec::<Request>::with_frames(FrameCodec::with_config(config));
        let err = codec.decode(&mut BytesMut::from(&frame[..])).unwrap_err();
        assert!(is_request_decode_error(&err), "{claimed}: {err}");

        let err = framekit_codec::blocking::read_message::<_, Request>(&mut &frame[..], &config)
            .unwrap_err();
        assert!(is_request_decode_error(&err), "{claimed}: {err}");
    }
}

#[test]
fn unknown_variant_is_a_decode_error() {
    let err = message::decode::<Request>(&5u32.to_le_bytes()).unwrap_err();
    assert!(is_request_decode_error(&err), "{err}");
}

#[test]
fn message_too_large_for_a_frame_is_refused_and_writes_nothing() {
    let config = transfer::frame_config();
    let msg = Request::Stat(Stat {
        name: "x".repeat(transfer::MAX_MESSAGE_LEN),
    });
    let is_too_large = |err: &Error| matches!(err, Error::PayloadTooLarge { .. });

    let mut buf = BytesMut::from(&b"kept"[..]);
    let err = message::encode_frame(&config, &msg, &mut buf).unwrap_err();
    assert!(is_too_large(&err), "{err}");
    assert_eq!(&buf[..], b"kept");

    let mut codec = MessageCodec::<Request>::with_frames(FrameCodec::with_config(config));
    let err = codec.encode(&msg, &mut buf).unwrap_err();
    assert!(is_too_large(&err), "{err}");
    assert_eq!(&buf[..], b"kept");

    let mut written = Vec::new();
    let err = framekit_codec::blocking::write_message(&mut written, &config, &msg).unwrap_err();
    assert!(is_too_large(&err), "{err}");
    assert!(written.is_empty());
}
