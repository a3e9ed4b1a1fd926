//! Protocols people already speak, each framed from messages written byte by
//! byte from its specification (never by our encoder), through every API.
#![cfg(feature = "tokio")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::{Bytes, BytesMut};
use common::{ChunkedRead, decode_blocking, decode_framed, decode_sans_io};
use framekit_codec::Error;
use framekit_codec::frame::{FrameCodec, FrameConfig, LengthPrefix};

/// Decodes `wire` with every API, whole and one byte at a time, and checks
/// they agree; returns the frames.
fn decode_everywhere(config: &FrameConfig, wire: &[u8]) -> Vec<Bytes> {
    let whole = vec![wire.to_vec()];
    let bytes: Vec<Vec<u8>> = wire.iter().map(|&b| vec![b]).collect();
    let frames = decode_sans_io(config, &whole).unwrap();
    for chunks in [&whole, &bytes] {
        for decode in [decode_sans_io, decode_framed, decode_blocking] {
            assert_eq!(decode(config, chunks).unwrap(), frames, "{config:?}");
        }
    }
    frames
}

/// The error every API reports for `wire`.
fn error_everywhere(config: &FrameConfig, wire: &[u8]) -> Vec<Error> {
    let whole = vec![wire.to_vec()];
    [decode_sans_io, decode_framed, decode_blocking]
        .into_iter()
        .map(|decode| decode(config, &whole).unwrap_err())
        .collect()
}

fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// The configurations of the crate docs' table, built the same way.
mod protocols {
    use framekit_codec::frame::{Builder, LengthPrefix};

    pub fn postgresql() -> Builder {
        let mut builder = Builder::new();
        builder
            .length_field_offset(1)
            .prefix(LengthPrefix::U32Be)
            .length_adjustment(-4)
            .strip(0);
        builder
    }

    pub fn mysql() -> Builder {
        let mut builder = Builder::new();
        builder
            .prefix(LengthPrefix::U24Le)
            .length_adjustment(1)
            .strip(3)
            .max_frame_length(1 << 24);
        builder
    }

    pub fn tls() -> Builder {
        let mut builder = Builder::new();
        builder
            .length_field_offset(3)
            .prefix(LengthPrefix::U16Be)
            .strip(0)
            .max_frame_length((1 << 14) + 256);
        builder
    }

    pub fn amqp() -> Builder {
        let mut builder = Builder::new();
        builder
            .length_field_offset(3)
            .prefix(LengthPrefix::U32Be)
            .length_adjustment(1)
            .strip(0)
            .max_frame_length(128 * 1024);
        builder
    }

    pub fn bitcoin() -> Builder {
        let mut builder = Builder::new();
        builder
            .length_field_offset(16)
            .prefix(LengthPrefix::U32Le)
            .length_adjustment(4)
            .strip(0)
            .max_frame_length(4 + 32 * 1024 * 1024);
        builder
    }

    pub fn mqtt() -> Builder {
        let mut builder = Builder::new();
        builder
            .length_field_offset(1)
            .prefix(LengthPrefix::Varint)
            .varint_max_bytes(4)
            .strip(0)
            .max_frame_length(268_435_455);
        builder
    }

    pub fn protobuf_delimited() -> Builder {
        let mut builder = Builder::new();
        builder.prefix(LengthPrefix::Varint);
        builder
    }

    pub fn kafka() -> Builder {
        let mut builder = Builder::new();
        builder
            .prefix(LengthPrefix::U32Be)
            .max_frame_length(100 * 1024 * 1024);
        builder
    }

    pub fn dns_over_tcp() -> Builder {
        let mut builder = Builder::new();
        builder.prefix(LengthPrefix::U16Be);
        builder
    }
}

// PostgreSQL frontend/backend protocol, "Message Formats": a type byte,
// then an Int32 length that counts itself but not the type byte.

const PG_QUERY: &[u8] = b"Q\x00\x00\x00\x0DSELECT 1\x00";
const PG_COMMAND_COMPLETE: &[u8] = b"C\x00\x00\x00\x0DSELECT 1\x00";
const PG_READY_FOR_QUERY: &[u8] = b"Z\x00\x00\x00\x05I";
const PG_TERMINATE: &[u8] = b"X\x00\x00\x00\x04";

#[test]
fn postgresql_messages_are_delivered_whole_with_their_type_byte() {
    let config = protocols::postgresql().config();
    let wire = concat(&[
        PG_QUERY,
        PG_COMMAND_COMPLETE,
        PG_READY_FOR_QUERY,
        PG_TERMINATE,
    ]);
    let frames = decode_everywhere(&config, &wire);
    assert_eq!(
        frames,
        [
            PG_QUERY,
            PG_COMMAND_COMPLETE,
            PG_READY_FOR_QUERY,
            PG_TERMINATE
        ]
    );
}

#[test]
fn postgresql_length_below_its_own_four_bytes_is_invalid() {
    let config = protocols::postgresql().config();
    for err in error_everywhere(&config, b"X\x00\x00\x00\x03") {
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
}

#[test]
fn postgresql_message_one_byte_over_the_limit_is_refused_before_its_body_is_buffered() {
    // 1,024 bytes after the length field are allowed: a length of 1,028.
    let config = protocols::postgresql().max_frame_length(1024).config();
    let mut allowed = b"d\x00\x00\x04\x04".to_vec();
    allowed.resize(5 + 1024, b'x');
    assert_eq!(decode_everywhere(&config, &allowed), [allowed.clone()]);

    let head = b"d\x00\x00\x04\x05";
    let mut codec = FrameCodec::with_config(config);
    let mut buf = BytesMut::from(&head[..]);
    let err = codec.decode_frame(&mut buf).unwrap_err();
    assert!(
        matches!(
            err,
            Error::FrameTooLarge {
                declared: 1025,
                max: 1024
            }
        ),
        "{err}"
    );
    assert!(buf.capacity() <= 64, "{}", buf.capacity());
    // The blocking reader reads the head and nothing more.
    let mut reader = ChunkedRead::new(&[head.to_vec()]);
    let err = framekit_codec::blocking::read_frame(&mut reader, &config).unwrap_err();
    assert!(
        matches!(err, Error::FrameTooLarge { declared: 1025, .. }),
        "{err}"
    );
    assert!(reader.largest_read <= 5, "{}", reader.largest_read);
}

// MySQL client/server protocol, "MySQL Packets": a 3-byte little-endian
// payload length, a 1-byte sequence id, then the payload.

/// COM_QUERY "SELECT 1", sequence id 0.
const MYSQL_QUERY: &[u8] = b"\x09\x00\x00\x00\x03SELECT 1";
/// OK_Packet: header 0x00, no rows, no insert id, autocommit, no warnings.
const MYSQL_OK: &[u8] = b"\x07\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00";

#[test]
fn mysql_packets_are_delivered_with_their_sequence_id() {
    let config = protocols::mysql().config();
    let frames = decode_everywhere(&config, &concat(&[MYSQL_QUERY, MYSQL_OK]));
    assert_eq!(frames, [&MYSQL_QUERY[3..], &MYSQL_OK[3..]]);
    assert_eq!(frames[1][0], 1, "sequence id");
}

#[test]
fn mysql_payload_of_0xffffff_bytes_is_followed_by_its_continuation() {
    // A payload of exactly 2^24 - 1 bytes says "more follows": the next
    // packet (here empty, sequence id 1) continues it. The codec delivers
    // both packets; joining them is the caller's job.
    let config = protocols::mysql().config();
    let mut wire = vec![0xFF, 0xFF, 0xFF, 0x00];
    wire.resize(4 + 0xFF_FFFF, 0xAB);
    wire.extend_from_slice(&[0x00, 0x00, 0x00, 0x01]);
    let whole = vec![wire];
    for decode in [decode_sans_io, decode_framed, decode_blocking] {
        let frames = decode(&config, &whole).unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].len(), 1 + 0xFF_FFFF);
        assert_eq!(frames[0][0], 0, "sequence id");
        assert!(frames[0][1..].iter().all(|&b| b == 0xAB));
        assert_eq!(&frames[1][..], [1]);
    }
}

#[test]
fn mysql_payload_alone_is_delivered_when_the_sequence_id_is_stripped_too() {
    // Stripping 4 bytes reaches past the length field into the sequence id,
    // which every packet has.
    let config = protocols::mysql().strip(4).config();
    let frames = decode_everywhere(&config, &concat(&[MYSQL_QUERY, MYSQL_OK]));
    assert_eq!(frames, [&MYSQL_QUERY[4..], &MYSQL_OK[4..]]);
}

// TLS 1.3 (RFC 8446, 5.1): type (1), legacy_record_version (2), then a
// 2-byte big-endian length.

/// A fatal handshake_failure alert.
const TLS_ALERT: &[u8] = b"\x15\x03\x03\x00\x02\x02\x28";
/// A change_cipher_spec record, as TLS 1.3 middlebox compatibility sends.
const TLS_CHANGE_CIPHER_SPEC: &[u8] = b"\x14\x03\x03\x00\x01\x01";

#[test]
fn tls_records_are_delivered_with_their_header() {
    let config = protocols::tls().config();
    let frames = decode_everywhere(&config, &concat(&[TLS_CHANGE_CIPHER_SPEC, TLS_ALERT]));
    assert_eq!(frames, [TLS_CHANGE_CIPHER_SPEC, TLS_ALERT]);
}

#[test]
fn tls_record_longer_than_the_protocol_allows_is_refused() {
    // 2^14 + 256 is TLSCiphertext's limit; one more byte is an error.
    let config = protocols::tls().config();
    for err in error_everywhere(&config, b"\x17\x03\x03\x41\x01") {
        assert!(
            matches!(
                err,
                Error::FrameTooLarge {
                    declared: 16641,
                    max: 16640
                }
            ),
            "{err}"
        );
    }
}

// AMQP 0-9-1 (section 4.2.3): type (1), channel (2), a 4-byte big-endian
// size, the payload, then the frame-end octet 0xCE, not counted by size.

const AMQP_HEARTBEAT: &[u8] = b"\x08\x00\x00\x00\x00\x00\x00\xCE";
/// connection.tune-ok: class 10, method 31, channel-max 2047, frame-max
/// 131072, heartbeat 60.
const AMQP_TUNE_OK: &[u8] =
    b"\x01\x00\x00\x00\x00\x00\x0C\x00\x0A\x00\x1F\x07\xFF\x00\x02\x00\x00\x00\x3C\xCE";

#[test]
fn amqp_frames_are_delivered_with_their_frame_end_octet() {
    let config = protocols::amqp().config();
    let frames = decode_everywhere(&config, &concat(&[AMQP_TUNE_OK, AMQP_HEARTBEAT]));
    assert_eq!(frames, [AMQP_TUNE_OK, AMQP_HEARTBEAT]);
}

#[test]
fn amqp_frame_with_a_wrong_end_octet_is_delivered_for_the_caller_to_check() {
    let config = protocols::amqp().config();
    let bad = b"\x08\x00\x00\x00\x00\x00\x00\x00";
    let frames = decode_everywhere(&config, bad);
    assert_eq!(frames, [&bad[..]]);
    assert_ne!(frames[0].last(), Some(&0xCE));
}

// Bitcoin P2P message header: magic (4), command (12, NUL-padded), payload
// length (4, little-endian), checksum (4, the first bytes of the payload's
// double SHA-256), then the payload.

/// verack on mainnet: an empty payload.
const BITCOIN_VERACK: &[u8] =
    b"\xF9\xBE\xB4\xD9verack\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x5D\xF6\xE0\xE2";
/// ping with the nonce 0x0123456789abcdef (as bytes 01 23 .. ef).
const BITCOIN_PING: &[u8] = b"\xF9\xBE\xB4\xD9ping\x00\x00\x00\x00\x00\x00\x00\x00\x08\x00\x00\x00\x13\x7A\xD6\x63\x01\x23\x45\x67\x89\xAB\xCD\xEF";

#[test]
fn bitcoin_messages_are_delivered_with_their_24_byte_header() {
    let config = protocols::bitcoin().config();
    let frames = decode_everywhere(&config, &concat(&[BITCOIN_VERACK, BITCOIN_PING]));
    assert_eq!(frames, [BITCOIN_VERACK, BITCOIN_PING]);
    assert_eq!(&frames[1][24..], b"\x01\x23\x45\x67\x89\xAB\xCD\xEF");
}

// MQTT 3.1.1 / 5.0: a fixed header byte (type and flags), then the
// remaining length as a variable byte integer of 1 to 4 bytes.

const MQTT_PINGREQ: &[u8] = b"\xC0\x00";
const MQTT_CONNACK: &[u8] = b"\x20\x02\x00\x00";
/// PUBLISH, QoS 0, topic "a/b", payload "hi".
const MQTT_PUBLISH: &[u8] = b"\x30\x07\x00\x03a/bhi";

#[test]
fn mqtt_packets_are_delivered_with_their_fixed_header() {
    let config = protocols::mqtt().config();
    let frames = decode_everywhere(
        &config,
        &concat(&[MQTT_CONNACK, MQTT_PUBLISH, MQTT_PINGREQ]),
    );
    assert_eq!(frames, [MQTT_CONNACK, MQTT_PUBLISH, MQTT_PINGREQ]);
}

#[test]
fn mqtt_remaining_length_of_two_bytes_is_read() {
    // 321 = 0xC1 0x02: topic "t" (3 bytes) and 318 payload bytes.
    let config = protocols::mqtt().config();
    let mut packet = b"\x30\xC1\x02\x00\x01t".to_vec();
    packet.resize(3 + 321, 0x55);
    assert_eq!(decode_everywhere(&config, &packet), [packet.clone()]);
}

#[test]
fn mqtt_remaining_length_of_five_bytes_is_malformed() {
    let config = protocols::mqtt().config();
    for err in error_everywhere(&config, b"\x30\x80\x80\x80\x80\x01") {
        assert!(matches!(err, Error::InvalidVarint { len: 5 }), "{err}");
    }
}

// The configurations that need no offset.

#[test]
fn protobuf_varint_delimited_messages_are_delivered_without_their_length() {
    // Two messages: field 1 = 150 (08 96 01), and an empty one.
    let config = protocols::protobuf_delimited().config();
    let frames = decode_everywhere(&config, b"\x03\x08\x96\x01\x00");
    assert_eq!(frames, [&b"\x08\x96\x01"[..], b""]);
}

#[test]
fn kafka_request_is_delivered_without_its_size() {
    // ApiVersions v0: api_key 18, api_version 0, correlation_id 1,
    // client_id "x".
    let config = protocols::kafka().config();
    let body = b"\x00\x12\x00\x00\x00\x00\x00\x01\x00\x01x";
    let frames = decode_everywhere(&config, &concat(&[b"\x00\x00\x00\x0B", body]));
    assert_eq!(frames, [&body[..]]);
}

#[test]
fn dns_over_tcp_message_is_delivered_without_its_length() {
    // A query for "a." type A, class IN, id 0x1234, recursion desired.
    let config = protocols::dns_over_tcp().config();
    let message = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01a\x00\x00\x01\x00\x01";
    let frames = decode_everywhere(&config, &concat(&[b"\x00\x13", message]));
    assert_eq!(frames, [&message[..]]);
}

#[test]
fn plain_four_byte_prefix_is_the_default() {
    assert_eq!(FrameConfig::default().prefix(), LengthPrefix::U32Be);
    let frames = decode_everywhere(
        &FrameConfig::default(),
        b"\x00\x00\x00\x02hi\x00\x00\x00\x00",
    );
    assert_eq!(frames, [&b"hi"[..], b""]);
}
