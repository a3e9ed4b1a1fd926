//! The commands for directories and scripts, end to end: delete of trees
//! and of several names, mv and its races, standard input and output,
//! JSON records, hints, and the shell extras.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use framekit_tests::{
    ServerProcess, Stored, assert_error, assert_success, bin, loud_client_at, random_bytes, stderr,
    stdout, tree, write_random_file,
};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

struct Setup {
    _dir: tempfile::TempDir,
    work: PathBuf,
    server: ServerProcess,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir(&work).unwrap();
        let server = ServerProcess::start(&dir.path().join("root"), &[]);
        Setup {
            _dir: dir,
            work,
            server,
        }
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        self.server.client(&self.work).args(args).output().unwrap()
    }

    fn loud(&self, args: &[&str]) -> std::process::Output {
        self.server
            .loud_client(&self.work)
            .args(args)
            .output()
            .unwrap()
    }

    /// What the server stored.
    fn stored(&self) -> &Stored {
        self.server.stored()
    }
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

#[test]
fn delete_r_removes_a_tree_with_nested_empty_directories() {
    let s = Setup::new();
    for dir in ["t/a/b/empty", "t/a/also empty", "t/c/d/e/f"] {
        std::fs::create_dir_all(s.work.join(dir)).unwrap();
    }
    std::fs::write(s.work.join("t/a/b/file"), b"1").unwrap();
    assert_success(&s.run(&["put", "t"]));
    assert!(s.stored().is_dir("t/c/d/e/f"));

    // Not empty: refused, with the way to do it.
    let out = s.run(&["delete", "t"]);
    assert_error(
        &out,
        7,
        "not empty: the directory is not empty (use -r to delete it with everything in it)",
    );
    assert!(s.stored().exists("t/a/b/file"));
    // An empty one alone, without -r, and its parents left empty go too.
    assert_success(&s.run(&["delete", "t/c/d/e/f"]));
    assert!(!s.stored().exists("t/c"));
    let out = s.loud(&["delete", "-r", "t/"]);
    assert_success(&out);
    assert_eq!(stderr(&out), "deleted t/\n");
    assert!(!s.stored().exists("t"));
    assert_eq!(assert_success(&s.run(&["list"])), "");
}

#[test]
fn delete_takes_several_names_and_reports_each_failure() {
    let s = Setup::new();
    std::fs::write(s.work.join("a"), b"a").unwrap();
    std::fs::write(s.work.join("b"), b"b").unwrap();
    assert_success(&s.run(&["put", "a", "b"]));
    let out = s.run(&["delete", "a", "missing", "b"]);
    assert_eq!(out.status.code(), Some(9));
    assert_eq!(
        stderr(&out),
        "error: missing: the server refused the delete: not found: no such file\n\
         error: 1 of 3 deletions failed\n"
    );
    assert!(!s.stored().exists("a") && !s.stored().exists("b"));
}

#[test]
fn list_shows_directories_with_a_slash_and_json_with_their_kind() {
    let s = Setup::new();
    std::fs::create_dir_all(s.work.join("d/empty")).unwrap();
    std::fs::write(s.work.join("d/f"), b"12345").unwrap();
    assert_success(&s.run(&["put", "d"]));
    assert_eq!(
        assert_success(&s.run(&["list"])),
        "-\td/\n-\td/empty/\n5\td/f\n"
    );
    let records = json_lines(&assert_success(&s.run(&["list", "--json", "d/"])));
    assert_eq!(records.len(), 2);
    assert_eq!(
        records[0],
        serde_json::json!({"name": "d/empty", "kind": "dir"})
    );
    assert_eq!(records[1]["name"], "d/f");
    assert_eq!(records[1]["kind"], "file");
    assert_eq!(records[1]["size"], 5);
    let modified = records[1]["modified"].as_str().unwrap();
    assert!(
        modified.ends_with('Z') && modified.len() == 30,
        "{modified}"
    );
    assert!(records[1]["modified_ns"].as_u64().unwrap() > 0);
}

#[test]
fn stat_shows_the_hash_and_the_time_and_describes_directories() {
    let s = Setup::new();
    let hash = write_random_file(&s.work.join("f"), 3, 2_000_000);
    assert_success(&s.run(&["put", "f", "--name", "d/f"]));
    let out = assert_success(&s.run(&["stat", "d/f"]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..3], ["name: d/f", "kind: file", "size: 2000000"]);
    assert!(
        lines[3].starts_with("modified: ") && lines[3].ends_with('Z'),
        "{out}"
    );
    assert_eq!(lines[4], format!("blake3: {}", hash.to_hex()));
    assert_eq!(
        assert_success(&s.run(&["stat", "d"])),
        "name: d\nkind: dir\n"
    );
    let record = &json_lines(&assert_success(&s.run(&["--json", "stat", "d/f"])))[0];
    assert_eq!(record["blake3"], hash.to_hex().as_str());
    assert_eq!(record["kind"], "file");
}

#[test]
fn mv_renames_atomically_and_replaces_only_with_force() {
    let s = Setup::new();
    for (name, content) in [("a", b"aaa"), ("b", b"bbb")] {
        std::fs::write(s.work.join(name), content).unwrap();
    }
    std::fs::create_dir_all(s.work.join("dir/sub")).unwrap();
    std::fs::write(s.work.join("dir/sub/x"), b"x").unwrap();
    assert_success(&s.run(&["put", "a", "b", "dir"]));

    let out = s.run(&["mv", "a", "b"]);
    assert_error(&out, 5, "already exists (use --force to replace it)");
    assert_eq!(s.stored().read("b").unwrap(), b"bbb");
    assert_success(&s.run(&["mv", "a", "b", "--force"]));
    assert_eq!(s.stored().read("b").unwrap(), b"aaa");
    assert!(!s.stored().exists("a"));
    // A directory moves whole; NEW ending with / is a directory to move into.
    assert_success(&s.run(&["mv", "dir", "new/place/"]));
    assert_eq!(s.stored().read("new/place/dir/sub/x").unwrap(), b"x");
    assert!(!s.stored().exists("dir"));
    assert_error(&s.run(&["mv", "nothing", "z"]), 4, "not found");
}

#[test]
fn two_renames_of_one_name_at_once_one_wins() {
    let s = Setup::new();
    for round in 0..20 {
        std::fs::write(s.work.join("x"), format!("round {round}")).unwrap();
        assert_success(&s.run(&["put", "x", "--force"]));
        let spawn = |to: &str| {
            s.server
                .client(&s.work)
                .args(["mv", "x", to])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (one, two) = (spawn("one"), spawn("two"));
        let codes = [
            one.wait_with_output().unwrap().status.code(),
            two.wait_with_output().unwrap().status.code(),
        ];
        let mut sorted = codes;
        sorted.sort();
        assert_eq!(sorted, [Some(0), Some(4)], "round {round}");
        let winner = if codes[0] == Some(0) { "one" } else { "two" };
        let loser = if winner == "one" { "two" } else { "one" };
        assert_eq!(
            String::from_utf8(s.stored().read(winner).unwrap()).unwrap(),
            format!("round {round}")
        );
        assert!(!s.stored().exists(loser) && !s.stored().exists("x"));
        assert_success(&s.run(&["delete", winner]));
    }
    // Two names to one new name: one wins, the other is refused.
    for round in 0..20 {
        std::fs::write(s.work.join("p"), format!("p{round}")).unwrap();
        std::fs::write(s.work.join("q"), format!("q{round}")).unwrap();
        assert_success(&s.run(&["put", "p", "q", "--force"]));
        let spawn = |from: &str| {
            s.server
                .client(&s.work)
                .args(["mv", from, "t"])
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (p, q) = (spawn("p"), spawn("q"));
        let codes = [
            p.wait_with_output().unwrap().status.code(),
            q.wait_with_output().unwrap().status.code(),
        ];
        let mut sorted = codes;
        sorted.sort();
        assert_eq!(sorted, [Some(0), Some(5)], "round {round}");
        let moved = String::from_utf8(s.stored().read("t").unwrap()).unwrap();
        let winner = if codes[0] == Some(0) { "p" } else { "q" };
        assert_eq!(moved, format!("{winner}{round}"));
        assert_success(&s.run(&["delete", "t", if winner == "p" { "q" } else { "p" }]));
    }
}

/// Runs `client put - --name NAME` with `len` bytes piped into it from
/// another thread; returns the output and the bytes' hash.
fn put_piped(s: &Setup, name: &str, len: usize) -> (std::process::Output, blake3::Hash) {
    let mut child = s
        .server
        .loud_client(&s.work)
        .args(["put", "-", "--name", name])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let mut hasher = blake3::Hasher::new();
        let mut written = 0;
        let mut block = 0u64;
        while written < len {
            let n = (len - written).min(1 << 20);
            let chunk = random_bytes(block, n);
            hasher.update(&chunk);
            stdin.write_all(&chunk).unwrap();
            written += n;
            block += 1;
        }
        hasher.finalize()
    });
    let out = child.wait_with_output().unwrap();
    (out, writer.join().unwrap())
}

#[test]
fn put_of_standard_input_of_0_bytes() {
    let s = Setup::new();
    let (out, hash) = put_piped(&s, "empty", 0);
    assert_eq!(
        assert_success(&out),
        format!("put empty: 0 bytes, blake3 {}\n", hash.to_hex())
    );
    assert_eq!(s.stored().read("empty").unwrap(), b"");
    assert_eq!(tree(&s.work), Vec::<String>::new());
}

#[test]
fn put_of_200_mib_through_a_pipe() {
    let s = Setup::new();
    let (out, hash) = put_piped(&s, "piped/big", 200 << 20);
    assert_eq!(
        assert_success(&out),
        format!("put piped/big: 209715200 bytes, blake3 {}\n", hash.to_hex())
    );
    assert!(
        stderr(&out).starts_with("put: 1 files, 209715200 bytes sent in "),
        "{}",
        stderr(&out)
    );
    assert_eq!(s.stored().hash("piped/big"), hash);
    // Without a name, or with other files, it is a usage error.
    assert_error(&s.run(&["put", "-"]), 2, "give its remote name with --name");
    std::fs::write(s.work.join("f"), b"f").unwrap();
    assert_error(
        &s.run(&["put", "-", "f", "--name", "x"]),
        2,
        "cannot be put with other files",
    );
}

#[test]
fn get_to_standard_output_piped_into_a_hash() {
    let s = Setup::new();
    write_random_file(&s.work.join("f"), 5, 30 << 20);
    assert_success(&s.run(&["put", "f", "--name", "remote/f"]));
    let local = Command::new("sha256sum")
        .arg(s.work.join("f"))
        .output()
        .unwrap();
    let local = stdout(&local);
    let client = bin("client");
    let piped = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{}' --server {} get remote/f -o - | sha256sum",
            client.display(),
            s.server.addr
        ))
        .current_dir(&s.work)
        .env("XDG_CACHE_HOME", framekit_tests::test_cache())
        .output()
        .unwrap();
    assert_success(&piped);
    assert_eq!(
        stdout(&piped).split(' ').next(),
        local.split(' ').next(),
        "{}",
        stderr(&piped)
    );
    // Nothing was written locally but the source.
    assert_eq!(tree(&s.work), ["f"]);
    // Only one file, never a directory, and not with --json.
    assert_error(&s.run(&["get", "remote/", "-o", "-"]), 2, "not a directory");
    assert_error(&s.run(&["get", "a", "b", "-o", "-"]), 2, "give one name");
}

#[test]
fn put_and_get_report_json_records_per_file() {
    let s = Setup::new();
    std::fs::create_dir_all(s.work.join("d/e")).unwrap();
    std::fs::write(s.work.join("d/one"), b"one").unwrap();
    std::fs::write(s.work.join("d/e/two"), b"two!").unwrap();
    let out = s.run(&["--json", "put", "d"]);
    let records = json_lines(&assert_success(&out));
    // --quiet with --json: the records, nothing on stderr.
    assert_eq!(stderr(&out), "");
    let files: Vec<_> = records.iter().filter(|r| r["kind"] == "file").collect();
    let dirs: Vec<_> = records.iter().filter(|r| r["kind"] == "dir").collect();
    assert_eq!(dirs.len(), 2);
    assert!(
        dirs.iter()
            .all(|d| d["outcome"] == "created" && d["op"] == "put")
    );
    assert_eq!(files.len(), 2);
    let two = files.iter().find(|r| r["name"] == "d/e/two").unwrap();
    assert_eq!(two["size"], 4);
    assert_eq!(two["outcome"], "sent");
    assert_eq!(two["bytes"], 4);
    assert_eq!(two["blake3"], blake3::hash(b"two!").to_hex().as_str());
    assert!(two["path"].as_str().unwrap().ends_with("d/e/two"));

    let again = json_lines(&assert_success(&s.run(&["--json", "put", "d"])));
    assert!(
        again
            .iter()
            .all(|r| r["outcome"] == "unchanged" && r["bytes"] == 0)
    );

    let back = s.work.join("back");
    std::fs::create_dir(&back).unwrap();
    let get = || {
        let got = s
            .server
            .client(&back)
            .args(["--json", "get", "d/", "d/one", "missing"])
            .output()
            .unwrap();
        assert_eq!(got.status.code(), Some(9));
        json_lines(&stdout(&got))
    };
    let outcomes = |records: &[serde_json::Value]| -> Vec<(String, String)> {
        records
            .iter()
            .map(|r| {
                let name = r["name"].as_str().unwrap().to_owned();
                (name, r["outcome"].as_str().unwrap().to_owned())
            })
            .collect()
    };
    let first = get();
    let expected = |d: &str| {
        [
            ("d/e/two", d),
            ("d/one", d),
            ("d/one", d),
            ("missing", "failed"),
        ]
        .map(|(n, o)| (n.to_owned(), o.to_owned()))
        .to_vec()
    };
    assert_eq!(outcomes(&first), expected("received"));
    // The directory's file and the file alone went to two places.
    assert_ne!(first[1]["path"], first[2]["path"]);
    let records = get();
    assert_eq!(outcomes(&records), expected("unchanged"));
    assert!(records[3]["error"].as_str().unwrap().contains("not found"));
}

#[test]
fn an_identical_single_file_is_unchanged_and_a_different_one_needs_force() {
    let s = Setup::new();
    std::fs::write(s.work.join("f"), b"first").unwrap();
    assert_success(&s.run(&["put", "f"]));
    let out = s.loud(&["put", "f"]);
    assert!(assert_success(&out).starts_with("put f: unchanged, 5 bytes, blake3 "));
    std::fs::write(s.work.join("f"), b"other").unwrap();
    assert_error(
        &s.run(&["put", "f"]),
        5,
        "\"f\" exists on the server with other content (use --force to replace it)",
    );
    // The same on the way back.
    let back = s.work.join("back");
    std::fs::create_dir(&back).unwrap();
    std::fs::write(back.join("f"), b"first").unwrap();
    let out = s
        .server
        .loud_client(&back)
        .args(["get", "f"])
        .output()
        .unwrap();
    assert_success(&out);
    assert!(
        stderr(&out).starts_with("get f -> f: unchanged, 5 bytes, blake3 "),
        "{}",
        stderr(&out)
    );
    std::fs::write(back.join("f"), b"mine!").unwrap();
    let out = s.server.client(&back).args(["get", "f"]).output().unwrap();
    assert_error(&out, 5, "already exists (use --force to replace it)");
    assert_eq!(std::fs::read(back.join("f")).unwrap(), b"mine!");
}

#[test]
fn quiet_prints_nothing_but_errors_and_r_is_accepted() {
    let s = Setup::new();
    std::fs::create_dir_all(s.work.join("d")).unwrap();
    std::fs::write(s.work.join("d/a"), b"a").unwrap();
    let out = s.run(&["put", "-r", "d"]);
    assert_eq!(assert_success(&out), "");
    assert_eq!(stderr(&out), "");
    let back = s.work.join("back");
    std::fs::create_dir(&back).unwrap();
    let out = s
        .server
        .client(&back)
        .args(["get", "-r", "d"])
        .output()
        .unwrap();
    assert_eq!(assert_success(&out), "");
    assert_eq!(stderr(&out), "");
    assert_eq!(std::fs::read(back.join("d/a")).unwrap(), b"a");
}

#[test]
fn a_refused_connection_says_nothing_listens_and_where_to_look() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let dir = tempfile::tempdir().unwrap();
    let out = loud_client_at(addr, dir.path())
        .arg("list")
        .output()
        .unwrap();
    assert_error(
        &out,
        3,
        "(nothing is listening there: is the server running? Check --server or $FRAMEKIT_SERVER)",
    );
}

#[test]
fn completions_and_the_manual_page_are_generated_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(bin("client"))
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let bash = assert_success(&run(&["completions", "bash"]));
    assert!(bash.contains("_client()") && bash.contains("--force") && bash.contains("mv"));
    let zsh = assert_success(&run(&["completions", "zsh"]));
    assert!(zsh.starts_with("#compdef client"));
    let man = assert_success(&run(&["man"]));
    assert!(
        man.contains(".TH client 1"),
        "{}",
        &man[..200.min(man.len())]
    );
    assert!(man.contains("FRAMEKIT_SERVER"));
}

#[test]
fn the_extras_install_with_one_command() {
    let home = tempfile::tempdir().unwrap();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install-cli-extras");
    let out = Command::new(script)
        .args(["--client", bin("client").to_str().unwrap()])
        .env("HOME", home.path())
        .env_remove("XDG_DATA_HOME")
        .env_remove("XDG_CONFIG_HOME")
        .output()
        .unwrap();
    assert_success(&out);
    let data = home.path().join(".local/share");
    let bash = std::fs::read_to_string(data.join("bash-completion/completions/client")).unwrap();
    assert!(bash.contains("_client()"));
    let man = std::fs::read_to_string(data.join("man/man1/client.1")).unwrap();
    assert!(man.contains(".TH client 1"));
    assert!(
        home.path()
            .join(".config/fish/completions/client.fish")
            .is_file()
    );
    assert!(data.join("zsh/site-functions/_client").is_file());
}
