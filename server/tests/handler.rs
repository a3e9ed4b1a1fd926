//! The connection handler driven over an in-memory stream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::BytesMut;
use framekit_codec::message::MessageCodec;
use framekit_server::{Config, Server, handler};
use framekit_transfer::{
    Delete, DeleteDir, Describe, Description, ErrorCode, FileVersion, Get, Hello, List, ListAll,
    MAX_CHUNK_LEN, MakeDir, Put, PutStream, Rename, Request, Response, Stat, Trailer, Tree,
    frame_config,
};
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

struct Peer {
    framed: Framed<DuplexStream, MessageCodec<Response>>,
}

impl Peer {
    async fn send<T: serde::Serialize>(&mut self, msg: T) {
        self.framed.send(msg).await.unwrap();
    }

    async fn recv(&mut self) -> Response {
        self.framed.next().await.expect("a response").unwrap()
    }

    /// Reads `n` raw body bytes, taking what the codec buffered first.
    async fn body(&mut self, n: usize) -> Vec<u8> {
        let buffered = self.framed.read_buffer_mut();
        let take = n.min(buffered.len());
        let mut body = buffered.split_to(take).to_vec();
        let mut rest = vec![0; n - take];
        self.framed.get_mut().read_exact(&mut rest).await.unwrap();
        body.extend_from_slice(&rest);
        body
    }

    async fn raw(&mut self, bytes: &[u8]) {
        self.framed.get_mut().write_all(bytes).await.unwrap();
    }

    async fn trailer(&mut self) -> Trailer {
        let mut codec = framekit_codec::frame::FrameCodec::with_config(frame_config());
        loop {
            if let Some(frame) = codec.decode_frame(self.framed.read_buffer_mut()).unwrap() {
                return framekit_codec::message::decode(&frame).unwrap();
            }
            let mut more = [0u8; 1024];
            let n = self.framed.get_mut().read(&mut more).await.unwrap();
            assert!(n > 0, "stream ended before the trailer");
            self.framed.read_buffer_mut().extend_from_slice(&more[..n]);
        }
    }
}

async fn start(dir: &tempfile::TempDir) -> (Peer, tokio::task::JoinHandle<()>) {
    let server = Server::new(Config {
        root: dir.path().join("root"),
        max_file_size: 1 << 20,
        idle_timeout: Duration::from_secs(5),
        ..Config::default()
    })
    .unwrap();
    connect(&server).await
}

async fn connect(server: &Server) -> (Peer, tokio::task::JoinHandle<()>) {
    let (client, server_end) = tokio::io::duplex(64 * 1024);
    let shared = server.shared();
    let task = tokio::spawn(async move {
        let _ = handler::serve(server_end, shared, CancellationToken::new(), None).await;
    });
    let mut peer = Peer {
        framed: Framed::new(
            client,
            MessageCodec::with_frames(framekit_codec::frame::FrameCodec::with_config(
                frame_config(),
            )),
        ),
    };
    peer.send(Hello::new(None)).await;
    assert!(matches!(peer.recv().await, Response::Welcome(_)));
    (peer, task)
}

fn error_code(response: Response) -> ErrorCode {
    match response {
        Response::Error(e) => e.code,
        other => panic!("expected an error, got {other:?}"),
    }
}

async fn put(peer: &mut Peer, name: &str, body: &[u8], overwrite: bool) -> Response {
    peer.send(Request::Put(Put {
        name: name.into(),
        size: body.len() as u64,
        overwrite,
        resume_key: None,
    }))
    .await;
    match peer.recv().await {
        Response::PutReady { offset: 0 } => {}
        other => return other,
    }
    peer.raw(body).await;
    peer.send(Trailer {
        hash: *blake3::hash(body).as_bytes(),
    })
    .await;
    peer.recv().await
}

#[tokio::test]
async fn put_get_list_stat_delete_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (mut peer, _task) = start(&dir).await;
    let body: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();

    let done = put(&mut peer, "dir/file.bin", &body, false).await;
    assert_eq!(
        done,
        Response::PutDone {
            size: body.len() as u64,
            hash: *blake3::hash(&body).as_bytes()
        }
    );
    assert_eq!(
        std::fs::read(dir.path().join("root/dir/file.bin")).unwrap(),
        body
    );

    peer.send(Request::Get(Get {
        name: "dir/file.bin".into(),
        offset: 0,
        if_version: None,
    }))
    .await;
    let Response::GetReady {
        size, offset: 0, ..
    } = peer.recv().await
    else {
        panic!("expected GetReady")
    };
    assert_eq!(size, body.len() as u64);
    assert_eq!(peer.body(body.len()).await, body);
    assert_eq!(peer.trailer().await.hash, *blake3::hash(&body).as_bytes());

    peer.send(Request::List(List {
        prefix: String::new(),
    }))
    .await;
    let Response::Entry(entry) = peer.recv().await else {
        panic!()
    };
    assert_eq!(entry.name, "dir/file.bin");
    assert_eq!(entry.size, body.len() as u64);
    assert_eq!(peer.recv().await, Response::ListEnd { count: 1 });

    peer.send(Request::Stat(Stat {
        name: "dir/file.bin".into(),
    }))
    .await;
    assert!(matches!(peer.recv().await, Response::Entry(e) if e == entry));

    peer.send(Request::Delete(Delete {
        name: "dir/file.bin".into(),
    }))
    .await;
    assert_eq!(peer.recv().await, Response::Deleted);
    peer.send(Request::Stat(Stat {
        name: "dir/file.bin".into(),
    }))
    .await;
    assert_eq!(error_code(peer.recv().await), ErrorCode::NotFound);
}

#[tokio::test]
async fn make_dir_then_tree_lists_directories_and_files_depth_first() {
    let dir = tempfile::tempdir().unwrap();
    let (mut peer, _task) = start(&dir).await;
    put(&mut peer, "top/sub/f", b"f", false).await;
    put(&mut peer, "top/g", b"", false).await;
    for _ in 0..2 {
        peer.send(Request::MakeDir(MakeDir {
            name: "top/empty".into(),
        }))
        .await;
        assert_eq!(peer.recv().await, Response::DirMade);
    }
    assert!(dir.path().join("root/top/empty").is_dir());
    peer.send(Request::MakeDir(MakeDir {
        name: "top/g/under".into(),
    }))
    .await;
    assert_eq!(error_code(peer.recv().await), ErrorCode::NotAFile);

    peer.send(Request::Tree(Tree { dir: "top".into() })).await;
    let mut seen = Vec::new();
    loop {
        match peer.recv().await {
            Response::Directory { name } => seen.push(format!("{name}/")),
            Response::Entry(entry) => seen.push(entry.name),
            Response::ListEnd { count } => {
                assert_eq!(count, 4);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(seen, ["top/empty/", "top/g", "top/sub/", "top/sub/f"]);

    peer.send(Request::Tree(Tree {
        dir: "missing".into(),
    }))
    .await;
    assert_eq!(error_code(peer.recv().await), ErrorCode::NotFound);
    peer.send(Request::Tree(Tree {
        dir: "top/g".into(),
    }))
    .await;
    assert_eq!(error_code(peer.recv().await), ErrorCode::NotAFile);
}

#[tokio::test]
async fn resumed_get_sends_the_rest_and_hashes_the_whole_file() {
    let dir = tempfile::tempdir().unwrap();
    let (mut peer, _task) = start(&dir).await;
    let body: Vec<u8> = (0..600_000u32).map(|i| (i % 253) as u8).collect();
    put(&mut peer, "f", &body, false).await;
    peer.send(Request::Stat(Stat { name: "f".into() })).await;
    let Response::Entry(entry) = peer.recv().await else {
        panic!()
    };
    let version = FileVersion {
        size: entry.size,
        modified_ns: entry.modified_ns,
    };
    peer.send(Request::Get(Get {
        name: "f".into(),
        offset: 300_001,
        if_version: Some(version),
    }))
    .await;
    let Response::GetReady { offset, .. } = peer.recv().await else {
        panic!()
    };
    assert_eq!(offset, 300_001);
    assert_eq!(peer.body(body.len() - 300_001).await, &body[300_001..]);
    assert_eq!(peer.trailer().await.hash, *blake3::hash(&body).as_bytes());
}

fn resumable_put(name: &str, size: usize, key: u8) -> Request {
    Request::Put(Put {
        name: name.into(),
        size: size as u64,
        overwrite: false,
        resume_key: Some([key; 32]),
    })
}

/// Waits until the server has kept an interrupted upload (its record is
/// written once the connection's end has been noticed).
async fn kept(dir: &tempfile::TempDir) {
    let partial = dir.path().join("root/.framekit/partial");
    for _ in 0..500 {
        let records = std::fs::read_dir(&partial)
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy().ends_with(".meta")
            })
            .count();
        if records > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the interrupted upload was not kept");
}

#[tokio::test]
async fn interrupted_put_resumes_where_it_stopped_and_is_verified_whole() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::new(Config {
        root: dir.path().join("root"),
        idle_timeout: Duration::from_secs(5),
        ..Config::default()
    })
    .unwrap();
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();

    let (mut peer, task) = connect(&server).await;
    peer.send(resumable_put("r.bin", body.len(), 9)).await;
    assert_eq!(peer.recv().await, Response::PutReady { offset: 0 });
    peer.raw(&body[..123_456]).await;
    drop(peer);
    task.await.unwrap();
    kept(&dir).await;
    assert!(!dir.path().join("root/r.bin").exists());

    let (mut peer, _task) = connect(&server).await;
    peer.send(resumable_put("r.bin", body.len(), 9)).await;
    assert_eq!(peer.recv().await, Response::PutReady { offset: 123_456 });
    peer.raw(&body[123_456..]).await;
    peer.send(Trailer {
        hash: *blake3::hash(&body).as_bytes(),
    })
    .await;
    assert!(matches!(
        peer.recv().await,
        Response::PutDone { size: 300_000, .. }
    ));
    assert_eq!(std::fs::read(dir.path().join("root/r.bin")).unwrap(), body);
    let partial = dir.path().join("root/.framekit/partial");
    assert_eq!(std::fs::read_dir(&partial).unwrap().count(), 0);
}

#[tokio::test]
async fn a_resumed_put_whose_whole_content_does_not_match_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::new(Config {
        root: dir.path().join("root"),
        idle_timeout: Duration::from_secs(5),
        ..Config::default()
    })
    .unwrap();
    let first: Vec<u8> = (0..200_000u32).map(|i| (i % 239) as u8).collect();
    let second: Vec<u8> = (0..200_000u32).map(|i| (i % 233) as u8).collect();

    let (mut peer, task) = connect(&server).await;
    peer.send(resumable_put("x", first.len(), 4)).await;
    assert_eq!(peer.recv().await, Response::PutReady { offset: 0 });
    peer.raw(&first[..100_000]).await;
    drop(peer);
    task.await.unwrap();
    kept(&dir).await;

    // The same key with other content: the server's own prefix counts in
    // the hash, so the mixture is refused and forgotten.
    let (mut peer, _task) = connect(&server).await;
    peer.send(resumable_put("x", second.len(), 4)).await;
    assert_eq!(peer.recv().await, Response::PutReady { offset: 100_000 });
    peer.raw(&second[100_000..]).await;
    peer.send(Trailer {
        hash: *blake3::hash(&second).as_bytes(),
    })
    .await;
    assert_eq!(error_code(peer.recv().await), ErrorCode::IntegrityMismatch);
    assert!(!dir.path().join("root/x").exists());
    peer.send(resumable_put("x", second.len(), 4)).await;
    assert_eq!(peer.recv().await, Response::PutReady { offset: 0 });
    peer.raw(&second).await;
    peer.send(Trailer {
        hash: *blake3::hash(&second).as_bytes(),
    })
    .await;
    assert!(matches!(peer.recv().await, Response::PutDone { .. }));
    assert_eq!(std::fs::read(dir.path().join("root/x")).unwrap(), second);
}

#[tokio::test]
async fn wrong_trailer_is_an_integrity_error_and_nothing_is_published() {
    let dir = tempfile::tempdir().unwrap();
    let (mut peer, _task) = start(&dir).await;
    peer.send(Request::Put(Put {
        name: "x".into(),
        size: 3,
        overwrite: false,
        resume_key: None,
    }))
    .await;
    assert_eq!(peer.recv().await, Response::PutReady { offset: 0 });
    peer.raw(b"abc").await;
    peer.send(Trailer { hash: [0; 32] }).await;
    assert_eq!(error_code(peer.recv().await), ErrorCode::IntegrityMismatch);
    assert!(!dir.path().join("root/x").exists());
    // The connection is still usable.
    assert!(matches!(
        put(&mut peer, "x", b"abc", false).await,
        Response::PutDone { .. }
    ));
}

#[tokio::test]
async fn refusals_before_the_body() {
    let dir = tempfile::tempdir().unwrap();
    let (mut peer, _task) = start(&dir).await;
    assert_eq!(
        error_code(put(&mut peer, "../escape", b"x", false).await),
        ErrorCode::InvalidName
    );
    assert_eq!(
        error_code(put(&mut peer, "big", &vec![0; (1 << 20) + 1], false).await),
        ErrorCode::TooLarge
    );
    put(&mut peer, "once", b"1", false).await;
    assert_eq!(
        error_code(put(&mut peer, "once", b"2", false).await),
        ErrorCode::AlreadyExists
    );
    assert!(matches!(
        put(&mut peer, "once", b"2", true).await,
        Response::PutDone { .. }
    ));
    assert_eq!(std::fs::read(dir.path().join("root/once")).unwrap(), b"2");
}

#[tokio::test]
async fn truncated_body_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let (mut peer, task) = start(&dir).await;
    peer.send(Request::Put(Put {
        name: "cut".into(),
        size: 100_000,
        overwrite: false,
        resume_key: None,
    }))
    .await;
    assert_eq!(peer.recv().await, Response::PutReady { offset: 0 });
    peer.raw(&[7; 50_000]).await;
    drop(peer);
    task.await.unwrap();
    // Give the disk worker a moment to drop the upload.
    for _ in 0..100 {
        if std::fs::read_dir(dir.path().join("root/.framekit/staging"))
            .unwrap()
            .count()
            == 0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!dir.path().join("root/cut").exists());
    assert_eq!(
        std::fs::read_dir(dir.path().join("root/.framekit/staging"))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test]
async fn wrong_magic_and_version_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::new(Config {
        root: dir.path().join("root"),
        ..Config::default()
    })
    .unwrap();
    for (hello, code) in [
        (
            Hello {
                magic: *b"NOTFRAME",
                version: 1,
                token: None,
            },
            ErrorCode::BadMagic,
        ),
        (
            Hello {
                magic: framekit_transfer::MAGIC,
                version: 99,
                token: None,
            },
            ErrorCode::UnsupportedVersion,
        ),
    ] {
        let (client, server_end) = tokio::io::duplex(4096);
        let shared = server.shared();
        tokio::spawn(handler::serve(
            server_end,
            shared,
            CancellationToken::new(),
            None,
        ));
        let mut framed = Framed::new(client, MessageCodec::<Response>::new());
        framed.send(hello).await.unwrap();
        assert_eq!(error_code(framed.next().await.unwrap().unwrap()), code);
        assert!(
            framed.next().await.is_none(),
            "the server closes the connection"
        );
    }
    // Not framekit at all: an HTTP request.
    let (mut client, server_end) = tokio::io::duplex(4096);
    tokio::spawn(handler::serve(
        server_end,
        server.shared(),
        CancellationToken::new(),
        None,
    ));
    client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut reply = Vec::new();
    client.read_to_end(&mut reply).await.unwrap();
    let mut buf = BytesMut::from(&reply[..]);
    let mut codec = MessageCodec::<Response>::new();
    let response = tokio_util::codec::Decoder::decode(&mut codec, &mut buf)
        .unwrap()
        .unwrap();
    assert_eq!(error_code(response), ErrorCode::BadMagic);
}

/// The chunks of a body of unknown length: `body` cut into pieces of at
/// most `piece` bytes, each with its 4-byte big-endian length, then the
/// empty chunk that ends it.
fn chunked(body: &[u8], piece: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for part in body.chunks(piece) {
        out.extend_from_slice(&u32::try_from(part.len()).unwrap().to_be_bytes());
        out.extend_from_slice(part);
    }
    out.extend_from_slice(&[0, 0, 0, 0]);
    out
}

async fn put_stream(peer: &mut Peer, name: &str, body: &[u8], piece: usize) -> Response {
    peer.send(Request::PutStream(PutStream {
        name: name.into(),
        overwrite: false,
    }))
    .await;
    match peer.recv().await {
        Response::PutReady { offset: 0 } => {}
        other => return other,
    }
    peer.raw(&chunked(body, piece)).await;
    peer.send(Trailer {
        hash: *blake3::hash(body).as_bytes(),
    })
    .await;
    peer.recv().await
}

#[tokio::test]
async fn a_body_of_unknown_length_is_published_whole_from_chunks_of_any_size() {
    let dir = tempfile::tempdir().unwrap();
    let (mut peer, _task) = start(&dir).await;
    let body: Vec<u8> = (0..900_000u32).map(|i| (i % 253) as u8).collect();
    for (name, piece) in [("one", 1), ("odd", 77_777), ("whole", body.len())] {
        let part = if piece == 1 { &body[..5000] } else { &body[..] };
        let done = put_stream(&mut peer, name, part, piece).await;
        assert_eq!(
            done,
            Response::PutDone {
                size: part.len() as u64,
                hash: *blake3::hash(part).as_bytes()
            }
        );
        assert_eq!(
            std::fs::read(dir.path().join("root").join(name)).unwrap(),
            part
        );
    }
    // Nothing at all: the empty chunk alone.
    let done = put_stream(&mut peer, "empty", b"", 1).await;
    assert_eq!(
        done,
        Response::PutDone {
            size: 0,
            hash: *blake3::hash(b"").as_bytes()
        }
    );
    assert_eq!(std::fs::read(dir.path().join("root/empty")).unwrap(), b"");
    // An existing name without overwrite is refused before any chunk.
    assert_eq!(
        error_code(put_stream(&mut peer, "one", b"x", 1).await),
        ErrorCode::AlreadyExists
    );
    // And a wrong trailer publishes nothing.
    peer.send(Request::PutStream(PutStream {
        name: "bad".into(),
        overwrite: false,
    }))
    .await;
    assert_eq!(peer.recv().await, Response::PutReady { offset: 0 });
    peer.raw(&chunked(b"abc", 2)).await;
    peer.send(Trailer {
        hash: *blake3::hash(b"abd").as_bytes(),
    })
    .await;
    assert_eq!(error_code(peer.recv().await), ErrorCode::IntegrityMismatch);
    assert!(!dir.path().join("root/bad").exists());
    assert!(framekit_tests_staging_is_empty(&dir));
}

fn framekit_tests_staging_is_empty(dir: &tempfile::TempDir) -> bool {
    std::fs::read_dir(dir.path().join("root/.framekit/staging"))
        .unwrap()
        .next()
        .is_none()
}

#[tokio::test]
async fn a_body_of_unknown_length_over_the_largest_file_is_refused_and_the_connection_closed() {
    let dir = tempfile::tempdir().unwrap();
    let (mut peer, task) = start(&dir).await;
    peer.send(Request::PutStream(PutStream {
        name: "big".into(),
        overwrite: false,
    }))
    .await;
    assert_eq!(peer.recv().await, Response::PutReady { offset: 0 });
    // The server takes at most 1 MiB: a second chunk of 600 000 bytes
    // goes over it.
    let piece = vec![7u8; 600_000];
    let mut chunks = Vec::new();
    for _ in 0..2 {
        chunks.extend_from_slice(&600_000u32.to_be_bytes());
        chunks.extend_from_slice(&piece);
    }
    // The server stops reading after the first chunk: the write fails
    // once it has hung up.
    let _ = peer.framed.get_mut().write_all(&chunks).await;
    assert_eq!(error_code(peer.recv().await), ErrorCode::TooLarge);
    task.await.unwrap();
    assert!(!dir.path().join("root/big").exists());
    assert!(framekit_tests_staging_is_empty(&dir));
}

#[tokio::test]
async fn a_chunk_over_the_limit_is_a_bad_request() {
    let dir = tempfile::tempdir().unwrap();
    let (mut peer, task) = start(&dir).await;
    peer.send(Request::PutStream(PutStream {
        name: "f".into(),
        overwrite: false,
    }))
    .await;
    assert_eq!(peer.recv().await, Response::PutReady { offset: 0 });
    peer.raw(&(MAX_CHUNK_LEN + 1).to_be_bytes()).await;
    assert_eq!(error_code(peer.recv().await), ErrorCode::BadRequest);
    task.await.unwrap();
    assert!(!dir.path().join("root/f").exists());
}

#[tokio::test]
async fn describe_gives_the_hash_of_a_file_and_names_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (mut peer, _task) = start(&dir).await;
    // Small, and large enough to be hashed as a stream when it is not
    // recorded (written behind the server's back).
    let small = b"small content".to_vec();
    assert!(matches!(
        put(&mut peer, "d/small", &small, false).await,
        Response::PutDone { .. }
    ));
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
    std::fs::write(dir.path().join("root/d/big"), &big).unwrap();
    for (name, content) in [("d/small", &small), ("d/big", &big)] {
        peer.send(Request::Describe(Describe { name: name.into() }))
            .await;
        match peer.recv().await {
            Response::Described(Description {
                name: described,
                size,
                hash,
                ..
            }) => {
                assert_eq!(described, name);
                assert_eq!(size, content.len() as u64);
                assert_eq!(hash, *blake3::hash(content).as_bytes());
            }
            other => panic!("{other:?}"),
        }
    }
    peer.send(Request::Describe(Describe { name: "d".into() }))
        .await;
    assert_eq!(peer.recv().await, Response::Directory { name: "d".into() });
    for (name, code) in [
        ("d/none", ErrorCode::NotFound),
        ("d/small/under", ErrorCode::NotAFile),
        ("../x", ErrorCode::InvalidName),
    ] {
        peer.send(Request::Describe(Describe { name: name.into() }))
            .await;
        assert_eq!(error_code(peer.recv().await), code, "{name}");
    }
}

#[tokio::test]
async fn list_all_shows_directories_with_files_and_counts_both() {
    let dir = tempfile::tempdir().unwrap();
    let (mut peer, _task) = start(&dir).await;
    assert!(matches!(
        put(&mut peer, "a/f", b"1", false).await,
        Response::PutDone { .. }
    ));
    peer.send(Request::MakeDir(MakeDir {
        name: "a/empty".into(),
    }))
    .await;
    assert_eq!(peer.recv().await, Response::DirMade);
    peer.send(Request::ListAll(ListAll { prefix: "".into() }))
        .await;
    let mut seen = Vec::new();
    loop {
        match peer.recv().await {
            Response::Directory { name } => seen.push(format!("{name}/")),
            Response::Entry(entry) => seen.push(entry.name),
            Response::ListEnd { count } => {
                assert_eq!(count, 3);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(seen, ["a/", "a/empty/", "a/f"]);
    // The plain list still shows files only.
    peer.send(Request::List(List { prefix: "".into() })).await;
    assert!(matches!(peer.recv().await, Response::Entry(e) if e.name == "a/f"));
    assert_eq!(peer.recv().await, Response::ListEnd { count: 1 });
}

#[tokio::test]
async fn directories_are_deleted_empty_or_whole_and_names_move() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let (mut peer, _task) = start(&dir).await;
    for name in ["t/a/b/f", "t/g", "x"] {
        assert!(matches!(
            put(&mut peer, name, b"1", false).await,
            Response::PutDone { .. }
        ));
    }
    std::fs::create_dir_all(root.join("t/a/empty/deeper")).unwrap();

    let rename = |from: &str, to: &str, overwrite| {
        Request::Rename(Rename {
            from: from.into(),
            to: to.into(),
            overwrite,
        })
    };
    peer.send(rename("x", "t/g", false)).await;
    assert_eq!(error_code(peer.recv().await), ErrorCode::AlreadyExists);
    peer.send(rename("x", "moved/x", false)).await;
    assert_eq!(peer.recv().await, Response::Renamed);
    assert_eq!(std::fs::read(root.join("moved/x")).unwrap(), b"1");
    peer.send(rename("moved/x", "t/g", true)).await;
    assert_eq!(peer.recv().await, Response::Renamed);
    assert!(!root.join("moved").exists());
    peer.send(rename("none", "y", false)).await;
    assert_eq!(error_code(peer.recv().await), ErrorCode::NotFound);

    let delete_dir = |name: &str, recursive| {
        Request::DeleteDir(DeleteDir {
            name: name.into(),
            recursive,
        })
    };
    peer.send(delete_dir("t/a", false)).await;
    assert_eq!(error_code(peer.recv().await), ErrorCode::NotEmpty);
    peer.send(delete_dir("t/a/empty/deeper", false)).await;
    assert_eq!(peer.recv().await, Response::Deleted);
    // Its parent, left empty, went with it, as after deleting a file.
    assert!(!root.join("t/a/empty").exists());
    peer.send(delete_dir("t/g", true)).await;
    assert_eq!(error_code(peer.recv().await), ErrorCode::NotAFile);
    peer.send(delete_dir("t", true)).await;
    assert_eq!(peer.recv().await, Response::Deleted);
    assert!(!root.join("t").exists());
    peer.send(Request::Delete(Delete { name: "t".into() }))
        .await;
    assert_eq!(error_code(peer.recv().await), ErrorCode::NotFound);
}
