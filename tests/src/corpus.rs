//! Seed inputs for the fuzz targets, made from valid sessions.
//!
//! `cargo run -p framekit-tests --example fuzz_corpus` writes them under
//! `fuzz/corpus/<target>/`; a test checks that the committed files are
//! what this module produces, so the seeds follow the protocol.

use bytes::BytesMut;
use framekit_codec::frame::{Builder, LengthPrefix, Oversize};
use framekit_codec::message::{self, encode_frame};
use framekit_transfer::{
    Delete, Entry, ErrorCode, ErrorReply, FileVersion, Get, Hello, List, MAGIC, MakeDir, Put,
    PutEager, Request, Response, Stat, Trailer, Tree, Welcome, frame_config,
};
use serde::Serialize;

/// One seed file: its name and content.
pub type Seed = (String, Vec<u8>);

/// The prefixes in the order the `frames` target selects them (low three
/// bits of its first byte).
const PREFIXES: [LengthPrefix; 8] = [
    LengthPrefix::U8,
    LengthPrefix::U16Be,
    LengthPrefix::U16Le,
    LengthPrefix::U32Be,
    LengthPrefix::U32Le,
    LengthPrefix::U64Be,
    LengthPrefix::U64Le,
    LengthPrefix::Varint,
];

/// Seeds for the `frames` target: `[config, max (u16 BE), n, n cut lengths,
/// stream]`, with streams framed as that configuration reads them.
pub fn frames() -> Vec<Seed> {
    let payloads: [&[u8]; 4] = [b"", b"hello", &[0xAB; 200], b"x"];
    let mut seeds = Vec::new();
    for (index, prefix) in PREFIXES.iter().enumerate() {
        for discard in [false, true] {
            // Selector: prefix index, no adjustment, the u16 maximum.
            let selector =
                u8::try_from(index).expect("eight prefixes") | if discard { 0x20 } else { 0 };
            let max: u16 = 1000;
            let config = Builder::new()
                .prefix(*prefix)
                .max_frame_length(usize::from(max % 2048))
                .oversize(if discard {
                    Oversize::Discard
                } else {
                    Oversize::Error
                })
                .config();
            let mut stream = BytesMut::new();
            for payload in payloads {
                config
                    .encode(payload, &mut stream)
                    .expect("a seed frame fits");
            }
            let cuts = [1u8, 3, 7, 64];
            let [max_hi, max_lo] = max.to_be_bytes();
            let mut seed = vec![
                selector,
                max_hi,
                max_lo,
                u8::try_from(cuts.len()).expect("few cuts"),
            ];
            seed.extend_from_slice(&cuts);
            seed.extend_from_slice(&stream);
            seeds.push((
                format!("{prefix:?}-{}", if discard { "discard" } else { "error" }),
                seed,
            ));
        }
    }
    seeds
}

fn bare<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut buf = BytesMut::new();
    message::encode(msg, &mut buf).expect("a seed message encodes");
    buf.to_vec()
}

fn sample_entry() -> Entry {
    Entry {
        name: "dir/file.txt".into(),
        size: 1234,
        modified_ns: 1_700_000_000_000_000_000,
    }
}

/// Every request the protocol has, with typical values.
fn requests() -> Vec<(&'static str, Request)> {
    vec![
        (
            "put",
            Request::Put(Put {
                name: "dir/file.txt".into(),
                size: 5,
                overwrite: true,
                resume_key: Some([7; 32]),
            }),
        ),
        (
            "get",
            Request::Get(Get {
                name: "dir/file.txt".into(),
                offset: 3,
                if_version: Some(FileVersion {
                    size: 5,
                    modified_ns: 42,
                }),
            }),
        ),
        (
            "list",
            Request::List(List {
                prefix: "dir/".into(),
            }),
        ),
        (
            "stat",
            Request::Stat(Stat {
                name: "file".into(),
            }),
        ),
        (
            "delete",
            Request::Delete(Delete {
                name: "file".into(),
            }),
        ),
        (
            "make-dir",
            Request::MakeDir(MakeDir {
                name: "dir/sub".into(),
            }),
        ),
        ("tree", Request::Tree(Tree { dir: "dir".into() })),
        (
            "put-eager",
            Request::PutEager(PutEager {
                name: "dir/small.txt".into(),
                size: 5,
                overwrite: false,
            }),
        ),
    ]
}

/// Every response the protocol has, with typical values.
fn responses() -> Vec<(&'static str, Response)> {
    vec![
        (
            "welcome",
            Response::Welcome(Welcome {
                version: 1,
                max_file_size: 1 << 30,
                max_message_len: 65536,
                idle_timeout_ms: 30_000,
                read_only: false,
            }),
        ),
        (
            "error",
            Response::Error(ErrorReply::new(ErrorCode::NotFound, "no such file")),
        ),
        ("put-ready", Response::PutReady { offset: 0 }),
        (
            "put-done",
            Response::PutDone {
                size: 5,
                hash: [1; 32],
            },
        ),
        (
            "get-ready",
            Response::GetReady {
                size: 5,
                offset: 0,
                modified_ns: 42,
            },
        ),
        ("entry", Response::Entry(sample_entry())),
        ("list-end", Response::ListEnd { count: 1 }),
        ("deleted", Response::Deleted),
    ]
}

/// Seeds for the `messages` target: one bare encoding per message kind.
pub fn messages() -> Vec<Seed> {
    let mut seeds = vec![
        ("hello".to_owned(), bare(&Hello::new(Some("token".into())))),
        ("trailer".to_owned(), bare(&Trailer { hash: [9; 32] })),
        ("entry".to_owned(), bare(&sample_entry())),
    ];
    for (name, request) in requests() {
        seeds.push((format!("request-{name}"), bare(&request)));
    }
    for (name, response) in responses() {
        seeds.push((format!("response-{name}"), bare(&response)));
    }
    seeds
}

/// Builds what a client sends during one session.
struct Script(BytesMut);

impl Script {
    fn new() -> Self {
        let mut script = Script(BytesMut::new());
        script.msg(&Hello::new(None));
        script
    }

    fn msg<T: Serialize>(&mut self, msg: &T) -> &mut Self {
        encode_frame(&frame_config(), msg, &mut self.0).expect("a seed message fits a frame");
        self
    }

    fn put(&mut self, name: &str, body: &[u8], overwrite: bool) -> &mut Self {
        self.msg(&Request::Put(Put {
            name: name.into(),
            size: body.len() as u64,
            overwrite,
            resume_key: None,
        }));
        self.0.extend_from_slice(body);
        self.msg(&Trailer {
            hash: *blake3::hash(body).as_bytes(),
        })
    }

    fn put_eager(&mut self, name: &str, body: &[u8], hash: &[u8]) -> &mut Self {
        self.msg(&Request::PutEager(PutEager {
            name: name.into(),
            size: body.len() as u64,
            overwrite: false,
        }));
        self.0.extend_from_slice(body);
        self.msg(&Trailer {
            hash: *blake3::hash(hash).as_bytes(),
        })
    }

    fn request(&mut self, request: Request) -> &mut Self {
        self.msg(&request)
    }

    fn done(&mut self) -> Vec<u8> {
        self.0.to_vec()
    }
}

/// Seeds for the `server_session` target: whole client sessions.
pub fn server_session() -> Vec<Seed> {
    let get = |name: &str| {
        Request::Get(Get {
            name: name.into(),
            offset: 0,
            if_version: None,
        })
    };
    let mut wrong_trailer = Script::new();
    wrong_trailer.msg(&Request::Put(Put {
        name: "x".into(),
        size: 3,
        overwrite: false,
        resume_key: None,
    }));
    wrong_trailer.0.extend_from_slice(b"abc");
    wrong_trailer.msg(&Trailer { hash: [0; 32] });

    let mut bad_magic = BytesMut::new();
    encode_frame(
        &frame_config(),
        &Hello {
            magic: *b"NOTMAGIC",
            version: 1,
            token: None,
        },
        &mut bad_magic,
    )
    .expect("fits");
    let mut new_version = BytesMut::new();
    encode_frame(
        &frame_config(),
        &Hello {
            magic: MAGIC,
            version: 2,
            token: None,
        },
        &mut new_version,
    )
    .expect("fits");

    vec![
        (
            "all-operations".into(),
            Script::new()
                .put("dir/a.txt", b"hello world", false)
                .request(get("dir/a.txt"))
                .request(Request::List(List {
                    prefix: String::new(),
                }))
                .request(Request::Stat(Stat {
                    name: "dir/a.txt".into(),
                }))
                .request(Request::Delete(Delete {
                    name: "dir/a.txt".into(),
                }))
                .done(),
        ),
        (
            "overwrite".into(),
            Script::new()
                .put("f", b"one", false)
                .put("f", b"two", false)
                .put("f", b"three", true)
                .request(get("f"))
                .done(),
        ),
        ("wrong-trailer".into(), wrong_trailer.done()),
        (
            "eager-pipelined".into(),
            Script::new()
                .put_eager("e/one", b"first", b"first")
                .put_eager("e/one", b"again", b"again")
                .put_eager("e/two", b"second", b"altered")
                .put_eager("../e", b"x", b"x")
                .request(get("e/one"))
                .done(),
        ),
        (
            "invalid-names".into(),
            Script::new()
                .put("../up", b"x", false)
                .put(".framekit/staging/x", b"x", false)
                .request(get("/abs"))
                .request(get("a//b"))
                .done(),
        ),
        (
            "missing".into(),
            Script::new()
                .request(get("nothing"))
                .request(Request::Stat(Stat {
                    name: "nothing".into(),
                }))
                .request(Request::Delete(Delete {
                    name: "nothing".into(),
                }))
                .done(),
        ),
        ("hello-only".into(), Script::new().done()),
        ("bad-magic".into(), bad_magic.to_vec()),
        ("new-version".into(), new_version.to_vec()),
    ]
}

/// Builds what a server answers during one session.
fn answers(parts: &[&dyn Fn(&mut BytesMut)]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for part in parts {
        part(&mut out);
    }
    out.to_vec()
}

fn answer<T: Serialize>(msg: T) -> impl Fn(&mut BytesMut) {
    move |out: &mut BytesMut| encode_frame(&frame_config(), &msg, out).expect("a seed message fits")
}

/// Seeds for the `client_responses` target: what a server answers to a
/// handshake, a get of a file, then a list.
pub fn client_responses() -> Vec<Seed> {
    let welcome = || {
        answer(Response::Welcome(Welcome {
            version: 1,
            max_file_size: 1 << 30,
            max_message_len: 65536,
            idle_timeout_ms: 30_000,
            read_only: false,
        }))
    };
    let body = b"hello world";
    let ready = || {
        answer(Response::GetReady {
            size: body.len() as u64,
            offset: 0,
            modified_ns: 42,
        })
    };
    let raw = |out: &mut BytesMut| out.extend_from_slice(body);
    let trailer = || {
        answer(Trailer {
            hash: *blake3::hash(body).as_bytes(),
        })
    };
    vec![
        (
            "get-then-list".into(),
            answers(&[
                &welcome(),
                &ready(),
                &raw,
                &trailer(),
                &answer(Response::Entry(sample_entry())),
                &answer(Response::ListEnd { count: 1 }),
            ]),
        ),
        (
            "wrong-trailer".into(),
            answers(&[
                &welcome(),
                &ready(),
                &raw,
                &answer(Trailer { hash: [0; 32] }),
            ]),
        ),
        (
            "not-found".into(),
            answers(&[
                &welcome(),
                &answer(Response::Error(ErrorReply::new(
                    ErrorCode::NotFound,
                    "no such file",
                ))),
            ]),
        ),
        (
            "busy".into(),
            answers(&[&answer(Response::Error(ErrorReply::new(
                ErrorCode::Busy,
                "busy",
            )))]),
        ),
        (
            "short-body".into(),
            answers(&[&welcome(), &ready(), &|out: &mut BytesMut| {
                out.extend_from_slice(b"hel")
            }]),
        ),
    ]
}

/// Every target's seeds, by target name.
pub fn all() -> Vec<(&'static str, Vec<Seed>)> {
    vec![
        ("frames", frames()),
        ("messages", messages()),
        ("server_session", server_session()),
        ("client_responses", client_responses()),
    ]
}
