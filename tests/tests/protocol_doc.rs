//! Keeps `PROTOCOL.md` honest: every hex example in it is the exact
//! encoding of the value it names, every message and every request and
//! response variant has an example, and the tables of error codes and
//! constants match the code.
//!
//! # The example format
//!
//! A checked example is a fenced block whose info string is `hex`. Its
//! first line is `# ` followed by the value, written as its Rust `Debug`
//! form with the enum's name in front (`Request::Stat(Stat { name: "a" })`)
//! and two readability substitutions: a byte array of printable ASCII is
//! written `b"..."`, and a 32-byte array that is the BLAKE3 hash of one of
//! [`KNOWN_CONTENTS`] is written `blake3("...")`. Every other line holds
//! bytes as pairs of hex digits separated by spaces; `#` starts a comment
//! that runs to the end of the line. The bytes are the whole frame: the
//! 4-byte length prefix, then the message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::BytesMut;
use framekit_codec::message;
use framekit_transfer::{
    DEFAULT_PORT, Delete, DeleteDir, Describe, Description, Entry, ErrorCode, ErrorReply,
    FileVersion, Get, Hello, List, ListAll, MAGIC, MAX_CHUNK_LEN, MAX_COMPONENT_LEN,
    MAX_EAGER_BODY, MAX_MESSAGE_LEN, MAX_NAME_LEN, MakeDir, Put, PutEager, PutStream,
    RESERVED_NAME, Rename, Request, Response, Stat, Trailer, Tree, VERSION, Welcome, frame_config,
};
use serde::Serialize;
use serde::de::{self, Deserialize, DeserializeOwned, Deserializer, Visitor};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

const DOC: &str = include_str!("../../PROTOCOL.md");

/// Contents whose BLAKE3 hash an example may name as `blake3("...")`.
const KNOWN_CONTENTS: &[&str] = &["", "hello"];

/// A modification time used in the examples: 2024-06-01T12:00:00Z plus
/// 123456789 ns.
const MTIME: u64 = 1_717_243_200_123_456_789;

fn hash(content: &str) -> [u8; 32] {
    *blake3::hash(content.as_bytes()).as_bytes()
}

/// One top-level message of the protocol.
#[derive(Debug, Clone, PartialEq)]
enum Message {
    Hello(Hello),
    Request(Request),
    Response(Response),
    Trailer(Trailer),
}

/// The values PROTOCOL.md must show, each exactly once.
// A table, one value per message variant: it grows with the protocol.
#[allow(clippy::too_many_lines)]
fn examples() -> Vec<Message> {
    use Message as M;
    vec![
        M::Hello(Hello::new(None)),
        M::Hello(Hello::new(Some("s3cret".into()))),
        M::Request(Request::Put(Put {
            name: "hello.txt".into(),
            size: 5,
            overwrite: false,
            resume_key: None,
        })),
        M::Request(Request::Put(Put {
            name: "a/b.bin".into(),
            size: 1 << 20,
            overwrite: true,
            resume_key: Some(hash("hello")),
        })),
        M::Request(Request::Get(Get {
            name: "hello.txt".into(),
            offset: 0,
            if_version: None,
        })),
        M::Request(Request::Get(Get {
            name: "hello.txt".into(),
            offset: 2,
            if_version: Some(FileVersion {
                size: 5,
                modified_ns: MTIME,
            }),
        })),
        M::Request(Request::List(List { prefix: "".into() })),
        M::Request(Request::List(List {
            prefix: "photos/".into(),
        })),
        M::Request(Request::Stat(Stat {
            name: "hello.txt".into(),
        })),
        M::Request(Request::Delete(Delete {
            name: "hello.txt".into(),
        })),
        M::Request(Request::MakeDir(MakeDir {
            name: "photos/2024".into(),
        })),
        M::Request(Request::Tree(Tree {
            dir: "photos".into(),
        })),
        M::Request(Request::Tree(Tree { dir: "".into() })),
        M::Request(Request::PutEager(PutEager {
            name: "notes/todo.txt".into(),
            size: 5,
            overwrite: true,
        })),
        M::Request(Request::Rename(Rename {
            from: "a.txt".into(),
            to: "b/a.txt".into(),
            overwrite: false,
        })),
        M::Request(Request::DeleteDir(DeleteDir {
            name: "photos".into(),
            recursive: true,
        })),
        M::Request(Request::Describe(Describe {
            name: "hello.txt".into(),
        })),
        M::Request(Request::ListAll(ListAll {
            prefix: "photos/".into(),
        })),
        M::Request(Request::PutStream(PutStream {
            name: "log.txt".into(),
            overwrite: false,
        })),
        M::Trailer(Trailer {
            hash: hash("hello"),
        }),
        M::Response(Response::Welcome(Welcome {
            version: VERSION,
            max_file_size: 64 << 30,
            max_message_len: u32::try_from(MAX_MESSAGE_LEN).unwrap(),
            idle_timeout_ms: 30_000,
            read_only: false,
        })),
        M::Response(Response::Error(ErrorReply::new(
            ErrorCode::NotFound,
            "no such file",
        ))),
        M::Response(Response::Error(ErrorReply::new(
            ErrorCode::Busy,
            "try later",
        ))),
        M::Response(Response::Welcome(Welcome {
            version: VERSION,
            max_file_size: 64 << 30,
            max_message_len: u32::try_from(MAX_MESSAGE_LEN).unwrap(),
            idle_timeout_ms: 30_000,
            read_only: true,
        })),
        M::Response(Response::Error(ErrorReply::new(
            ErrorCode::Unauthorized,
            "the access token was not accepted",
        ))),
        M::Response(Response::Error(ErrorReply::new(
            ErrorCode::Timeout,
            "closing the connection after 30 s without a request",
        ))),
        M::Response(Response::PutReady { offset: 0 }),
        M::Response(Response::PutDone {
            size: 5,
            hash: hash("hello"),
        }),
        M::Response(Response::GetReady {
            size: 5,
            offset: 0,
            modified_ns: MTIME,
        }),
        M::Response(Response::Entry(Entry {
            name: "hello.txt".into(),
            size: 5,
            modified_ns: MTIME,
        })),
        M::Response(Response::ListEnd { count: 1 }),
        M::Response(Response::Deleted),
        M::Response(Response::DirMade),
        M::Response(Response::Directory {
            name: "photos/2024".into(),
        }),
        M::Response(Response::Renamed),
        M::Response(Response::Described(Description {
            name: "hello.txt".into(),
            size: 5,
            modified_ns: MTIME,
            hash: hash("hello"),
        })),
        M::Trailer(Trailer { hash: hash("") }),
    ]
}

impl Message {
    /// The value as written on an example's first line.
    fn describe(&self) -> String {
        let debug = match self {
            Message::Hello(v) => format!("{v:?}"),
            Message::Request(v) => format!("Request::{v:?}"),
            Message::Response(v) => format!("Response::{v:?}"),
            Message::Trailer(v) => format!("{v:?}"),
        };
        readable_arrays(&debug)
    }

    fn encode_frame(&self) -> Vec<u8> {
        let mut wire = BytesMut::new();
        let config = frame_config();
        match self {
            Message::Hello(v) => message::encode_frame(&config, v, &mut wire),
            Message::Request(v) => message::encode_frame(&config, v, &mut wire),
            Message::Response(v) => message::encode_frame(&config, v, &mut wire),
            Message::Trailer(v) => message::encode_frame(&config, v, &mut wire),
        }
        .unwrap();
        wire.to_vec()
    }

    /// Decodes `payload` as a message of the same type as `self`.
    fn decode_like(&self, payload: &[u8]) -> Result<Message, framekit_codec::Error> {
        Ok(match self {
            Message::Hello(_) => Message::Hello(message::decode(payload)?),
            Message::Request(_) => Message::Request(message::decode(payload)?),
            Message::Response(_) => Message::Response(message::decode(payload)?),
            Message::Trailer(_) => Message::Trailer(message::decode(payload)?),
        })
    }

    fn type_name(&self) -> &'static str {
        match self {
            Message::Hello(_) => "Hello",
            Message::Request(_) => "Request",
            Message::Response(_) => "Response",
            Message::Trailer(_) => "Trailer",
        }
    }
}

/// Rewrites `Debug` byte arrays: printable ASCII as `b"..."`, known hashes
/// as `blake3("...")`; other arrays are left as they are.
fn readable_arrays(debug: &str) -> String {
    let mut out = String::new();
    let mut rest = debug;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find(']').expect("arrays are closed");
        let bytes: Option<Vec<u8>> = after[..close]
            .split(", ")
            .map(|b| b.parse::<u8>().ok())
            .collect();
        match bytes {
            Some(bytes) => out.push_str(&readable_bytes(&bytes)),
            None => out.push_str(&rest[open..=open + 1 + close]),
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

fn readable_bytes(bytes: &[u8]) -> String {
    if bytes.len() == 32
        && let Some(content) = KNOWN_CONTENTS.iter().find(|c| hash(c) == bytes)
    {
        return format!("blake3({content:?})");
    }
    if bytes.iter().all(|b| b.is_ascii_graphic()) {
        return format!("b{:?}", String::from_utf8_lossy(bytes));
    }
    format!("{bytes:?}")
}

/// A hex example found in the document.
#[derive(Debug)]
struct DocExample {
    /// The line number of its first line (1-based).
    line: usize,
    /// The value it claims to encode.
    value: String,
    /// Its bytes.
    bytes: Vec<u8>,
}

/// Every ```hex block of the document.
fn doc_examples() -> Vec<DocExample> {
    let mut examples = Vec::new();
    let mut lines = DOC.lines().enumerate();
    while let Some((_, line)) = lines.next() {
        let fence = line.trim_start();
        if !fence.starts_with("```") {
            continue;
        }
        let is_hex = fence.trim_start_matches('`').trim() == "hex";
        let mut body = Vec::new();
        for (number, line) in lines.by_ref() {
            if line.trim_start().starts_with("```") {
                break;
            }
            body.push((number + 1, line));
        }
        if !is_hex {
            continue;
        }
        let (&(line, first), rest) = body.split_first().expect("a hex block is not empty");
        let value = first
            .trim()
            .strip_prefix("# ")
            .unwrap_or_else(|| panic!("line {line}: a hex block starts with `# VALUE`"))
            .trim()
            .to_owned();
        let mut bytes = Vec::new();
        for &(number, text) in rest {
            let data = text.split('#').next().unwrap_or_default();
            for token in data.split_whitespace() {
                assert!(
                    token.len() == 2,
                    "line {number}: {token:?} is not a byte in hex"
                );
                let byte = u8::from_str_radix(token, 16)
                    .unwrap_or_else(|_| panic!("line {number}: {token:?} is not a byte in hex"));
                bytes.push(byte);
            }
        }
        examples.push(DocExample { line, value, bytes });
    }
    examples
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn every_hex_example_is_the_encoding_of_its_value() {
    let expected: BTreeMap<String, Message> =
        examples().into_iter().map(|m| (m.describe(), m)).collect();
    let mut seen = BTreeSet::new();
    for example in doc_examples() {
        let Some(value) = expected.get(&example.value) else {
            panic!(
                "line {}: the example of `{}` has no counterpart in protocol_doc.rs::examples(); \
                 the values there are:\n{}",
                example.line,
                example.value,
                expected.keys().cloned().collect::<Vec<_>>().join("\n")
            );
        };
        assert!(
            seen.insert(example.value.clone()),
            "line {}: `{}` has two examples",
            example.line,
            example.value
        );
        let wire = value.encode_frame();
        assert_eq!(
            hex(&example.bytes),
            hex(&wire),
            "line {}: the example of `{}` is not its encoding (left: document, right: code)",
            example.line,
            example.value
        );
        // And back: the document's bytes decode to the value.
        let (prefix, payload) = example.bytes.split_at(4);
        let declared = u32::from_be_bytes(prefix.try_into().unwrap());
        assert_eq!(declared as usize, payload.len(), "line {}", example.line);
        let decoded = value
            .decode_like(payload)
            .unwrap_or_else(|e| panic!("line {}: the example does not decode: {e}", example.line));
        assert_eq!(&decoded, value, "line {}", example.line);
    }
    let missing: Vec<_> = expected
        .keys()
        .filter(|k| !seen.contains(*k))
        .cloned()
        .collect();
    assert!(
        missing.is_empty(),
        "PROTOCOL.md has no example of:\n{}\n\nwith these bytes:\n{}",
        missing.join("\n"),
        missing
            .iter()
            .map(|k| hex(&expected[k].encode_frame()))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The variant names of an enum, as serde knows them: a deserializer that
/// only records what `deserialize_enum` is told.
fn variants<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Probe(Option<&'static [&'static str]>);

    #[derive(Debug)]
    struct Stop;
    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("stop")
        }
    }
    impl std::error::Error for Stop {}
    impl de::Error for Stop {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Stop
        }
    }

    impl<'de> Deserializer<'de> for &mut Probe {
        type Error = Stop;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_enum<V: Visitor<'de>>(
            self,
            _: &'static str,
            variants: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0 = Some(variants);
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map struct identifier ignored_any
        }
    }

    let mut probe = Probe(None);
    let _ = <T as Deserialize<'_>>::deserialize(&mut probe);
    probe.0.expect("an enum")
}

/// Which variant a frame's message is: its first 4 payload bytes.
fn variant_index(frame: &[u8]) -> usize {
    let index = u32::from_le_bytes(frame[4..8].try_into().unwrap());
    usize::try_from(index).unwrap()
}

#[test]
fn every_message_and_every_variant_has_an_example() {
    let examples = examples();
    let types: BTreeSet<_> = examples.iter().map(Message::type_name).collect();
    assert_eq!(
        types,
        BTreeSet::from(["Hello", "Request", "Response", "Trailer"])
    );
    for (enum_name, all) in [
        ("Request", variants::<Request>()),
        ("Response", variants::<Response>()),
    ] {
        let covered: BTreeSet<&str> = examples
            .iter()
            .filter(|m| m.type_name() == enum_name)
            .map(|m| all[variant_index(&m.encode_frame())])
            .collect();
        let every: BTreeSet<&str> = all.iter().copied().collect();
        assert_eq!(covered, every, "{enum_name} variants with an example");
    }
}

#[test]
fn variant_probe_sees_every_variant() {
    // The probe itself: the serde names in declaration order, which is
    // also the order of the indices on the wire.
    assert_eq!(
        variants::<Request>(),
        [
            "Put",
            "Get",
            "List",
            "Stat",
            "Delete",
            "MakeDir",
            "Tree",
            "PutEager",
            "Rename",
            "DeleteDir",
            "Describe",
            "ListAll",
            "PutStream"
        ]
    );
    assert_eq!(variants::<Response>()[0], "Welcome");
    assert_eq!(variants::<Response>().last(), Some(&"Described"));
}

/// The rows of the first Markdown table after the heading `heading`, as
/// cells with surrounding spaces and backquotes removed.
fn table_after(heading: &str) -> Vec<Vec<String>> {
    let start = DOC
        .lines()
        .position(|l| l.trim() == heading)
        .unwrap_or_else(|| panic!("PROTOCOL.md has no heading {heading:?}"));
    DOC.lines()
        .skip(start + 1)
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2) // the header and the separator
        .map(|row| {
            row.trim()
                .trim_matches('|')
                .split('|')
                .map(|cell| cell.trim().trim_matches('`').to_owned())
                .collect()
        })
        .collect()
}

#[test]
fn error_code_table_lists_every_code_with_its_value() {
    let rows = table_after("## Error codes");
    let documented: BTreeMap<u16, (String, String)> = rows
        .iter()
        .map(|row| {
            let code: u16 = row[0].parse().unwrap_or_else(|_| panic!("{row:?}"));
            (code, (row[1].clone(), row[2].clone()))
        })
        .collect();
    assert_eq!(documented.len(), rows.len(), "a code is listed twice");
    let actual: BTreeMap<u16, (String, String)> = ErrorCode::ALL
        .iter()
        .map(|&code| {
            (
                u16::from(code),
                (format!("{code:?}"), code.as_str().to_owned()),
            )
        })
        .collect();
    assert_eq!(documented, actual);
}

#[test]
fn constants_table_matches_the_code() {
    let rows = table_after("## Constants");
    let documented: BTreeMap<String, String> = rows
        .iter()
        .map(|row| (row[0].clone(), row[1].clone()))
        .collect();
    let config = frame_config();
    let actual: BTreeMap<String, String> = [
        ("MAGIC", String::from_utf8(MAGIC.to_vec()).unwrap()),
        ("VERSION", VERSION.to_string()),
        ("PREFIX_LEN", config.prefix().width().unwrap().to_string()),
        ("MAX_MESSAGE_LEN", config.max_frame_length().to_string()),
        ("MAX_NAME_LEN", MAX_NAME_LEN.to_string()),
        ("MAX_COMPONENT_LEN", MAX_COMPONENT_LEN.to_string()),
        ("MAX_EAGER_BODY", MAX_EAGER_BODY.to_string()),
        ("MAX_CHUNK_LEN", MAX_CHUNK_LEN.to_string()),
        ("RESERVED_NAME", RESERVED_NAME.to_owned()),
        ("DEFAULT_PORT", DEFAULT_PORT.to_string()),
        ("HASH_LEN", blake3::OUT_LEN.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(documented, actual);
    assert_eq!(config.prefix(), framekit_codec::frame::LengthPrefix::U32Be);
    assert_eq!(config.length_adjustment(), 0);
}

/// The encoding rules the document states, on values of each kind.
#[test]
fn primitive_encodings_are_as_documented() {
    fn bytes<T: Serialize + Debug>(value: &T) -> Vec<u8> {
        let mut buf = BytesMut::new();
        message::encode(value, &mut buf).unwrap();
        buf.to_vec()
    }
    assert_eq!(bytes(&0x0102u16), [0x02, 0x01]);
    assert_eq!(bytes(&0x0102_0304u32), [0x04, 0x03, 0x02, 0x01]);
    assert_eq!(bytes(&1u64), [1, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(bytes(&u64::MAX), [0xff; 8]);
    assert_eq!(bytes(&true), [1]);
    assert_eq!(bytes(&false), [0]);
    assert_eq!(bytes(&"é".to_owned()), [2, 0, 0, 0, 0, 0, 0, 0, 0xc3, 0xa9]);
    assert_eq!(bytes(&None::<u16>), [0]);
    assert_eq!(bytes(&Some(7u16)), [1, 7, 0]);
    assert_eq!(bytes(&[9u8; 3]), [9, 9, 9]);
    assert_eq!(bytes(&ErrorCode::NotFound), [10, 0]);
    assert_eq!(bytes(&Response::Deleted), [7, 0, 0, 0]);
}

/// What the document says a receiver refuses.
#[test]
fn malformed_encodings_are_refused() {
    fn refused<T: DeserializeOwned + Debug>(bytes: &[u8]) {
        let result = message::decode::<T>(bytes);
        assert!(result.is_err(), "{bytes:?} decoded as {result:?}");
    }
    // A bool or an Option tag other than 0 or 1.
    refused::<bool>(&[2]);
    refused::<Option<u8>>(&[2, 0]);
    // A string that is not UTF-8.
    refused::<String>(&[1, 0, 0, 0, 0, 0, 0, 0, 0xff]);
    // A string length past the end of the message.
    refused::<String>(&[9, 0, 0, 0, 0, 0, 0, 0, b'a']);
    // An unknown variant.
    refused::<Request>(&[13, 0, 0, 0]);
    refused::<Response>(&[12, 0, 0, 0]);
    // Bytes left over after the message.
    refused::<Response>(&[7, 0, 0, 0, 0]);
    // A message cut short.
    refused::<Trailer>(&[0; 31]);
    // An unknown error code is kept, not refused.
    let reply: ErrorReply = message::decode(&[0xe8, 0x03, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap();
    assert_eq!(reply.code, ErrorCode::Other(1000));
    // The largest frame is accepted, one byte more is not.
    let config = frame_config();
    assert!(config.encode_head(MAX_MESSAGE_LEN).is_ok());
    assert!(config.encode_head(MAX_MESSAGE_LEN + 1).is_err());
}
