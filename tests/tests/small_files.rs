//! Many small files: gets pipelined, refusals in their place, a
//! connection lost in the middle of a batch, and processes killed at
//! random moments while batches are being saved, on either side.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use framekit_codec::blocking::{read_message, write_message};
use framekit_tests::proxy::CountingProxy;
use framekit_tests::{
    Backend, Dice, RESERVED_TREE, ServerProcess, Stored, assert_success, client_at, random_bytes,
    stderr, stdout, tree,
};
use framekit_transfer::{
    Entry, ErrorCode, ErrorReply, Hello, Request, Response, Trailer, VERSION, Welcome, frame_config,
};
use std::collections::{BTreeMap, BTreeSet};
use std::io::BufReader;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

/// `count` files of 1 to 16 KiB under `dir/set`, by name.
fn small_set(dir: &Path, count: u64) -> BTreeMap<String, Vec<u8>> {
    let set = dir.join("set");
    std::fs::create_dir_all(&set).unwrap();
    (0..count)
        .map(|i| {
            let name = format!("f{i:04}");
            let body = random_bytes(i, usize::try_from(1 + (i * 4099) % 16_384).unwrap());
            std::fs::write(set.join(&name), &body).unwrap();
            (name, body)
        })
        .collect()
}

/// Checks that every file under `dir` is one of `expected`, whole, and
/// that nothing else is there; returns the names found.
fn only_whole_files(dir: &Path, expected: &BTreeMap<String, Vec<u8>>) -> BTreeSet<String> {
    let found: BTreeSet<String> = tree(dir).into_iter().collect();
    for name in &found {
        let body = expected
            .get(name)
            .unwrap_or_else(|| panic!("{name:?} appeared in {}: {found:?}", dir.display()));
        assert_eq!(
            std::fs::read(dir.join(name)).unwrap(),
            *body,
            "{name} is not whole"
        );
    }
    found
}

/// [`only_whole_files`] for the directory `dir` of the server's storage
/// (a local root or a bucket). Every file's size is checked; on a bucket,
/// where each GET costs a round trip, the content of one file in 16 (and
/// the last), since an object is never published shorter than its request.
fn only_whole_stored(
    stored: &Stored,
    dir: &str,
    expected: &BTreeMap<String, Vec<u8>>,
) -> BTreeSet<String> {
    let sizes = stored.file_sizes_under(dir);
    let every = match Backend::current() {
        Backend::Local => 1,
        Backend::Garage | Backend::Moto => 16,
    };
    for (i, (name, size)) in sizes.iter().enumerate() {
        let body = expected
            .get(name)
            .unwrap_or_else(|| panic!("{name:?} appeared in {dir}: {sizes:?}"));
        assert_eq!(*size, body.len() as u64, "{name} is not whole");
        if i % every == 0 || i + 1 == sizes.len() {
            assert_eq!(
                stored.read(&format!("{dir}/{name}")).as_ref(),
                Some(body),
                "{name} is not whole"
            );
        }
    }
    sizes.into_keys().collect()
}

/// A server that lists `d` as `names` (4 bytes each), and answers the
/// gets only once the client has sent `wait_for` of them (or after 5 s),
/// then in order: a refusal for the names in `refused`, the file
/// otherwise. Returns its address and, once the client is gone, how many
/// gets had arrived before the first answer left.
fn slow_server(
    names: Vec<String>,
    refused: BTreeMap<String, ErrorCode>,
    wait_for: usize,
) -> (SocketAddr, std::thread::JoinHandle<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let config = frame_config();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let _: Hello = read_message(&mut reader, &config).unwrap().unwrap();
        let welcome = Response::Welcome(Welcome {
            version: VERSION,
            max_file_size: 1 << 30,
            max_message_len: 65536,
            idle_timeout_ms: 30_000,
            read_only: false,
        });
        write_message(&mut &stream, &config, &welcome).unwrap();
        let Request::Tree(_) = read_message::<_, Request>(&mut reader, &config)
            .unwrap()
            .unwrap()
        else {
            panic!("the client did not ask for the listing first");
        };
        for name in &names {
            let entry = Response::Entry(Entry {
                name: name.clone(),
                size: 4,
                modified_ns: 1,
            });
            write_message(&mut &stream, &config, &entry).unwrap();
        }
        let count = names.len() as u64;
        write_message(&mut &stream, &config, &Response::ListEnd { count }).unwrap();
        // The requests are read on their own thread, so that the answers
        // can wait for them.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            while let Ok(Some(request)) = read_message::<_, Request>(&mut reader, &config) {
                if tx.send(request).is_err() {
                    break;
                }
            }
        });
        let mut pending = Vec::new();
        while pending.len() < wait_for {
            match rx.recv_timeout(Duration::from_secs(5)) {
                Ok(request) => pending.push(request),
                Err(_) => break,
            }
        }
        let in_flight = pending.len();
        let mut pending = pending.into_iter();
        loop {
            let request = match pending.next() {
                Some(request) => request,
                None => match rx.recv() {
                    Ok(request) => request,
                    Err(_) => break,
                },
            };
            let Request::Get(get) = request else {
                panic!("unexpected {request:?}");
            };
            if let Some(code) = refused.get(&get.name) {
                let no = Response::Error(ErrorReply::new(*code, "refused"));
                write_message(&mut &stream, &config, &no).unwrap();
                continue;
            }
            let body = get.name.as_bytes()[get.name.len() - 4..].to_vec();
            let ready = Response::GetReady {
                size: 4,
                offset: 0,
                modified_ns: 1,
            };
            write_message(&mut &stream, &config, &ready).unwrap();
            std::io::Write::write_all(&mut &stream, &body).unwrap();
            let trailer = Trailer {
                hash: *blake3::hash(&body).as_bytes(),
            };
            write_message(&mut &stream, &config, &trailer).unwrap();
        }
        in_flight
    });
    (addr, handle)
}

#[test]
fn five_hundred_small_files_are_got_with_gets_in_flight_and_refusals_in_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let names: Vec<String> = (0..500).map(|i| format!("d/{i:04}")).collect();
    let refused: BTreeMap<String, ErrorCode> = [
        ("d/0000", ErrorCode::NotFound),
        ("d/0117", ErrorCode::NotAFile),
        ("d/0118", ErrorCode::NotFound),
        ("d/0499", ErrorCode::NotAFile),
    ]
    .into_iter()
    .map(|(name, code)| (name.to_owned(), code))
    .collect();
    // The server answers nothing before 32 gets have arrived: a client
    // that waited for each answer would stall it.
    let (addr, server) = slow_server(names.clone(), refused.clone(), 32);
    let out = client_at(addr, &work)
        .args(["--json", "get", "d/", "--output", "out"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(9), "{}", stderr(&out));
    assert!(server.join().unwrap() >= 32);

    // One record per file, in the listing's order, the refusals in their
    // place.
    let records = json_lines(&stdout(&out));
    let got: Vec<(String, String)> = records
        .iter()
        .map(|r| {
            let outcome = r["outcome"].as_str().unwrap().to_owned();
            (r["name"].as_str().unwrap().to_owned(), outcome)
        })
        .collect();
    let expected: Vec<(String, String)> = names
        .iter()
        .map(|name| {
            let outcome = if refused.contains_key(name) {
                "failed"
            } else {
                "received"
            };
            (name.clone(), outcome.to_owned())
        })
        .collect();
    assert_eq!(got, expected);
    for name in &names {
        let path = work.join("out").join(&name[2..]);
        if refused.contains_key(name) {
            assert!(!path.exists(), "{name}");
        } else {
            assert_eq!(std::fs::read(&path).unwrap(), &name.as_bytes()[2..]);
        }
    }
    assert_eq!(tree(&work.join("out")).len(), 500 - refused.len());
}

#[test]
fn five_hundred_small_files_round_trip_and_several_names_go_pipelined() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let files = small_set(&work, 500);
    let server = ServerProcess::start(&dir.path().join("root"), &[]);
    assert_success(
        &client_at(server.addr, &work)
            .args(["put", "set"])
            .output()
            .unwrap(),
    );
    assert_success(
        &client_at(server.addr, &work)
            .args(["get", "set/", "--output", "back"])
            .output()
            .unwrap(),
    );
    assert_eq!(only_whole_files(&work.join("back"), &files).len(), 500);

    // Several names, a missing one among them, in its place.
    let mut args = vec!["--json".to_owned(), "get".to_owned()];
    args.extend((0..100).map(|i| format!("set/f{i:04}")));
    args.insert(52, "set/missing".to_owned());
    args.extend(["--output".to_owned(), "names".to_owned()]);
    let out = client_at(server.addr, &work).args(&args).output().unwrap();
    assert_eq!(out.status.code(), Some(9), "{}", stderr(&out));
    let outcomes: Vec<String> = json_lines(&stdout(&out))
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r["name"].as_str().unwrap(),
                r["outcome"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(outcomes.len(), 101);
    assert_eq!(outcomes[50], "set/missing failed");
    assert!(
        outcomes
            .iter()
            .enumerate()
            .all(|(k, o)| k == 50 || o.ends_with(" received"))
    );
    assert_eq!(only_whole_files(&work.join("names"), &files).len(), 100);
}

#[test]
fn a_connection_lost_in_the_middle_of_a_batch_reports_what_was_saved_and_a_rerun_gets_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let files = small_set(&work, 600);
    let server = ServerProcess::start(&dir.path().join("root"), &[]);
    assert_success(
        &client_at(server.addr, &work)
            .args(["put", "set"])
            .output()
            .unwrap(),
    );

    // Into an existing directory: each run saves to out/set. A get
    // request is under 40 bytes: the connection is cut when about 300 of
    // the 600 were sent.
    std::fs::create_dir(work.join("out")).unwrap();
    let saved = work.join("out/set");
    let cut = CountingProxy::cutting_after(server.addr, 300 * 30);
    let out = client_at(cut.addr, &work)
        .args(["--json", "get", "set/", "--output", "out"])
        .output()
        .unwrap();
    assert!(cut.was_cut());
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    // Every file has a record: received (and then whole on the disk), or
    // failed (and then absent).
    let mut received = BTreeSet::new();
    let mut failed = BTreeSet::new();
    for record in json_lines(&stdout(&out)) {
        let name = record["name"]
            .as_str()
            .unwrap()
            .strip_prefix("set/")
            .unwrap();
        match record["outcome"].as_str().unwrap() {
            "received" => assert!(received.insert(name.to_owned())),
            "failed" => assert!(failed.insert(name.to_owned())),
            other => panic!("{other}"),
        }
    }
    assert!(received.is_disjoint(&failed));
    assert_eq!(received.len() + failed.len(), 600);
    assert!(!received.is_empty() && !failed.is_empty(), "{received:?}");
    assert!(
        stderr(&out).contains("files not transferred"),
        "{}",
        stderr(&out)
    );
    assert_eq!(only_whole_files(&saved, &files), received);

    // The rerun asks only for what is missing. (The server may still be
    // logging gets of the cut connection, so the rerun's are told apart by
    // their connection.)
    let cut_peers: BTreeSet<String> = server.requests().into_iter().map(|r| r.peer).collect();
    let out = client_at(server.addr, &work)
        .args(["--json", "get", "set/", "--output", "out"])
        .output()
        .unwrap();
    assert_success(&out);
    let records = json_lines(&stdout(&out));
    let unchanged = records
        .iter()
        .filter(|r| r["outcome"] == "unchanged")
        .count();
    assert_eq!(unchanged, received.len());
    assert_eq!(only_whole_files(&saved, &files).len(), 600);
    framekit_tests::eventually("the server logged the rerun's gets", || {
        let rerun = server
            .requests()
            .into_iter()
            .filter(|r| r.op == "get" && !cut_peers.contains(&r.peer))
            .count();
        rerun == failed.len()
    });
}

/// How many times each side is killed.
const KILLS: usize = 16;

#[test]
fn a_server_killed_at_random_moments_during_eager_uploads_leaves_only_whole_files() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let files = small_set(&work, 400);
    let root = dir.path().join("root");
    // One whole put, to choose the moments of the kills within its time.
    let server = ServerProcess::start(&root, &[]);
    let started = Instant::now();
    assert_success(
        &client_at(server.addr, &work)
            .args(["put", "set", "--name", "whole"])
            .output()
            .unwrap(),
    );
    let whole = started.elapsed();
    drop(server);
    let mut dice = Dice::new("server kills");
    let mut kept: Vec<BTreeSet<String>> = Vec::new();
    let mut midway = 0;
    for round in 0..KILLS {
        let mut server = ServerProcess::start(&root, &[]);
        // What the killed server left in its staging area is gone.
        assert_eq!(server.stored().uploads_in_progress(), 0, "round {round}");
        let name = format!("r{round}");
        let mut client = client_at(server.addr, &work)
            .args(["put", "set", "--name", &name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(dice.pick(0..whole_ms(whole))));
        server.kill();
        let _ = client.wait();
        let found = only_whole_stored(server.stored(), &name, &files);
        if !found.is_empty() && found.len() < files.len() {
            midway += 1;
        }
        kept.push(found);
        // What was stored before stays stored (its content was checked
        // in its round).
        for (k, before) in kept.iter().enumerate() {
            let now: BTreeSet<String> = server
                .stored()
                .file_sizes_under(&format!("r{k}"))
                .into_keys()
                .collect();
            assert_eq!(&now, before, "r{k}");
        }
    }
    eprintln!("{KILLS} kills of the server, {midway} of them with part of the files stored");
    let server = ServerProcess::start(&root, &[]);
    let last = format!("r{}", KILLS - 1);
    assert_success(
        &client_at(server.addr, &work)
            .args(["put", "set", "--name", &last])
            .output()
            .unwrap(),
    );
    assert_eq!(only_whole_stored(server.stored(), &last, &files).len(), 400);
    for (k, before) in kept.iter().enumerate().take(KILLS - 1) {
        assert_eq!(
            &only_whole_stored(server.stored(), &format!("r{k}"), &files),
            before
        );
    }
    // Nothing is left of the interrupted uploads: a local root holds only
    // its empty private directories; a bucket, whose uploads of small
    // files are single requests, holds nothing private at all.
    match Backend::current() {
        Backend::Local => {
            let reserved: Vec<String> = tree(&root)
                .into_iter()
                .filter(|p| p.starts_with(".framekit"))
                .collect();
            assert_eq!(reserved, RESERVED_TREE);
        }
        Backend::Garage | Backend::Moto => {
            let private: Vec<String> = server
                .stored()
                .everything()
                .into_iter()
                .filter(|key| key.starts_with(".framekit") || key.starts_with("upload "))
                .collect();
            assert_eq!(private, Vec::<String>::new());
        }
    }
}

/// A duration in whole milliseconds, at least 1.
fn whole_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

#[test]
fn a_client_killed_at_random_moments_during_a_directory_get_leaves_only_whole_files() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let files = small_set(&work, 400);
    let server = ServerProcess::start(&dir.path().join("root"), &[]);
    assert_success(
        &client_at(server.addr, &work)
            .args(["put", "set"])
            .output()
            .unwrap(),
    );
    let out = work.join("out");
    std::fs::create_dir(&out).unwrap();
    // One whole get, to choose the moments of the kills within its time.
    let started = Instant::now();
    assert_success(
        &client_at(server.addr, &work)
            .args(["get", "set/", "--output", "out/whole"])
            .output()
            .unwrap(),
    );
    let whole = started.elapsed();
    let mut dice = Dice::new("client kills");
    let mut kept: Vec<BTreeSet<String>> = Vec::new();
    let mut midway = 0;
    for round in 0..KILLS {
        // Into an existing directory: this run and the next save to
        // out/rN/set.
        let dest = format!("out/r{round}");
        std::fs::create_dir(work.join(&dest)).unwrap();
        let mut client = client_at(server.addr, &work)
            .args(["get", "set/", "--output", &dest])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(dice.pick(0..whole_ms(whole))));
        client.kill().unwrap();
        client.wait().unwrap();
        let saved = work.join(&dest).join("set");
        let found = match saved.exists() {
            true => only_whole_files(&saved, &files),
            false => BTreeSet::new(),
        };
        if !found.is_empty() && found.len() < files.len() {
            midway += 1;
        }
        kept.push(found);
    }
    eprintln!("{KILLS} kills of the client, {midway} of them with part of the files saved");
    // Each interrupted get, run again, completes.
    for (round, before) in kept.iter().enumerate() {
        let dest = format!("out/r{round}");
        assert_success(
            &client_at(server.addr, &work)
                .args(["get", "set/", "--output", &dest])
                .output()
                .unwrap(),
        );
        let found = only_whole_files(&work.join(&dest).join("set"), &files);
        assert!(found.is_superset(before));
        assert_eq!(found.len(), 400);
    }
}
