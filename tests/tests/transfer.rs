//! The real `client` against the real `server` over loopback: byte-identical
//! round trips, names, list, stat, delete, refused names and the overwrite
//! rules.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use framekit_tests::{
    ServerProcess, Stored, assert_error, assert_success, hash_file, stderr, tree, write_random_file,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tempfile::TempDir;

/// A temporary directory holding the server's root (`root/`) and the
/// client's working directory (`work/`): one `tree()` of it sees everything
/// either program could create, including next to the root.
struct Setup {
    dir: TempDir,
    work: PathBuf,
    server: ServerProcess,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir(&work).unwrap();
        let server = ServerProcess::start(&dir.path().join("root"), &[]);
        Setup { dir, work, server }
    }

    /// What the server stored.
    fn stored(&self) -> &Stored {
        self.server.stored()
    }

    /// A quiet client command run in `work/`.
    fn client(&self) -> Command {
        self.server.client(&self.work)
    }

    /// Runs the client with `args` in `work/`.
    fn run(&self, args: &[&str]) -> Output {
        self.client().args(args).output().unwrap()
    }

    /// Writes `len` random bytes to `work/<local>` and returns the hash.
    fn local_file(&self, local: &str, seed: u64, len: u64) -> blake3::Hash {
        write_random_file(&self.work.join(local), seed, len)
    }

    /// Uploads `work/<local>` as `name`, not quiet: the result line is
    /// printed.
    fn put(&self, local: &str, name: &str, force: bool) -> Output {
        let mut cmd = self.server.loud_client(&self.work);
        cmd.arg("put").arg(local).arg("--name").arg(name);
        if force {
            cmd.arg("--force");
        }
        cmd.output().unwrap()
    }

    /// Uploads a new random file as `name` and returns its hash.
    fn upload(&self, name: &str, seed: u64, len: u64) -> blake3::Hash {
        let local = format!("upload-{seed}");
        let hash = self.local_file(&local, seed, len);
        assert_success(&self.put(&local, name, false));
        std::fs::remove_file(self.work.join(&local)).unwrap();
        hash
    }
}

/// What `client put` prints on success.
fn put_line(name: &str, size: u64, hash: blake3::Hash) -> String {
    format!("put {name}: {size} bytes, blake3 {}\n", hash.to_hex())
}

/// Puts a random file of `size` bytes, gets it back under its default
/// local name, and checks both copies against the original's hash.
fn round_trip(size: u64, seed: u64) {
    let s = Setup::new();
    let hash = s.local_file("source.bin", seed, size);

    let out = s.put("source.bin", "copy/data.bin", false);
    assert_eq!(assert_success(&out), put_line("copy/data.bin", size, hash));
    assert!(
        stderr(&out).starts_with(&format!("put: 1 files, {size} bytes sent in ")),
        "{}",
        stderr(&out)
    );
    assert_eq!(s.stored().size("copy/data.bin"), Some(size));
    assert_eq!(s.stored().hash("copy/data.bin"), hash);
    assert_eq!(s.stored().uploads_in_progress(), 0);

    // Saved under the name's base name in the working directory.
    let out = s.run(&["get", "copy/data.bin"]);
    assert_eq!(assert_success(&out), "");
    assert_eq!(stderr(&out), "");
    let saved = s.work.join("data.bin");
    assert_eq!(std::fs::metadata(&saved).unwrap().len(), size);
    assert_eq!(hash_file(&saved), hash);
    // Nothing else: no temporary file left behind.
    assert_eq!(tree(&s.work), ["data.bin", "source.bin"]);
}

#[test]
fn round_trip_of_an_empty_file() {
    round_trip(0, 10);
}

#[test]
fn round_trip_of_one_byte() {
    round_trip(1, 11);
}

#[test]
fn round_trip_of_one_mib_plus_one_byte() {
    round_trip((1 << 20) + 1, 12);
}

#[test]
fn round_trip_of_200_mib() {
    round_trip(200 << 20, 13);
}

#[test]
fn names_with_spaces_unicode_and_subdirectories_round_trip() {
    let s = Setup::new();
    let names = [
        "with spaces.txt",
        "ファイル",
        "dir/sub dir/ファイル.txt",
        "émoji 🦀/tab\u{a0}nbsp",
    ];
    for (i, name) in names.iter().enumerate() {
        let seed = 20 + i as u64;
        let local = format!("local-{i}");
        let hash = s.local_file(&local, seed, 1000 + i as u64);
        let out = s.put(&local, name, false);
        assert_eq!(assert_success(&out), put_line(name, 1000 + i as u64, hash));
        // Stored at that path under the root, directories created.
        assert_eq!(s.stored().hash(name), hash, "{name}");

        // Saved to an explicit output path...
        let output = format!("out-{i}");
        assert_success(&s.run(&["get", name, "--output", &output]));
        assert_eq!(hash_file(&s.work.join(&output)), hash, "{name}");
        // ...and by default under the base name in the working directory.
        let base = name.rsplit('/').next().unwrap();
        assert_success(&s.run(&["get", name]));
        assert_eq!(hash_file(&s.work.join(base)), hash, "{name}");
        std::fs::remove_file(s.work.join(base)).unwrap();
        std::fs::remove_file(s.work.join(&output)).unwrap();
        std::fs::remove_file(s.work.join(&local)).unwrap();
    }
    assert!(tree(&s.work).is_empty(), "{:?}", tree(&s.work));
    assert_eq!(s.stored().uploads_in_progress(), 0);
    assert_eq!(s.stored().kept(), 0);
    assert_eq!(
        s.stored().names(),
        [
            "dir",
            "dir/sub dir",
            "dir/sub dir/ファイル.txt",
            "with spaces.txt",
            "émoji 🦀",
            "émoji 🦀/tab\u{a0}nbsp",
            "ファイル",
        ]
    );
}

#[test]
fn put_without_a_name_uses_the_base_name_of_the_file() {
    let s = Setup::new();
    std::fs::create_dir(s.work.join("sub")).unwrap();
    let hash = s.local_file("sub/my file ü.bin", 30, 4321);
    let out = s
        .server
        .loud_client(&s.work)
        .args(["put", "sub/my file ü.bin"])
        .output()
        .unwrap();
    assert_eq!(assert_success(&out), put_line("my file ü.bin", 4321, hash));
    assert_eq!(s.stored().hash("my file ü.bin"), hash);
}

#[test]
fn names_at_the_length_limits_round_trip() {
    let s = Setup::new();
    // Components of 255 bytes, the longest allowed, in a name of exactly
    // 1024 bytes, the longest allowed.
    let component = "c".repeat(255);
    let longest = format!(
        "{component}/{component}/{component}/{}/dddd",
        "c".repeat(251)
    );
    assert_eq!(longest.len(), 1024);
    let hash = s.local_file("f", 31, 777);
    assert_eq!(
        assert_success(&s.put("f", &longest, false)),
        put_line(&longest, 777, hash)
    );
    assert_success(&s.run(&["get", &longest]));
    assert_eq!(hash_file(&s.work.join("dddd")), hash);
    assert_eq!(
        assert_success(&s.run(&["list", &longest])),
        format!("777\t{longest}\n")
    );
    assert!(
        assert_success(&s.run(&["stat", &longest]))
            .starts_with(&format!("name: {longest}\nkind: file\nsize: 777\n"))
    );
}

#[test]
fn list_prints_size_tab_name_sorted_and_filtered_by_prefix() {
    let s = Setup::new();
    let files = [
        ("z", 5),
        ("dir/sub/ü", 7),
        ("dir/c d", 10),
        ("a.txt", 3),
        ("dir/b", 0),
        ("dir.txt", 2),
        ("dir-x", 1),
    ];
    for (i, (name, size)) in files.iter().enumerate() {
        s.upload(name, 40 + i as u64, *size);
    }
    assert!(tree(&s.work).is_empty());

    // Byte order of the whole names: '-' < '.' < '/', a directory's
    // name with its '/', just before what it holds.
    let out = s.run(&["list"]);
    assert_eq!(
        assert_success(&out),
        "3\ta.txt\n1\tdir-x\n2\tdir.txt\n-\tdir/\n0\tdir/b\n10\tdir/c d\n-\tdir/sub/\n7\tdir/sub/ü\n5\tz\n"
    );
    assert_eq!(stderr(&out), "");
    assert_eq!(
        assert_success(&s.run(&["list", "dir/"])),
        "0\tdir/b\n10\tdir/c d\n-\tdir/sub/\n7\tdir/sub/ü\n"
    );
    assert_eq!(
        assert_success(&s.run(&["list", "dir"])),
        "1\tdir-x\n2\tdir.txt\n-\tdir/\n0\tdir/b\n10\tdir/c d\n-\tdir/sub/\n7\tdir/sub/ü\n"
    );
    assert_eq!(
        assert_success(&s.run(&["list", "dir/sub/"])),
        "7\tdir/sub/ü\n"
    );
    assert_eq!(assert_success(&s.run(&["list", "nothing"])), "");
}

#[test]
fn invisible_characters_in_listed_names_are_printed_escaped() {
    let s = Setup::new();
    // Valid names that would print as other names, or hide their end.
    for name in ["a\u{200b}b", "rtl\u{2067}txt.exe\u{2069}", "tag\u{e0041}"] {
        s.stored().write(name, b"x");
    }
    assert_eq!(
        assert_success(&s.run(&["list"])),
        "1\ta\\u{200b}b\n1\trtl\\u{2067}txt.exe\\u{2069}\n1\ttag\\u{e0041}\n"
    );
}

#[test]
fn list_of_an_empty_root_prints_nothing() {
    let s = Setup::new();
    let out = s.run(&["list"]);
    assert_eq!(assert_success(&out), "");
    assert_eq!(stderr(&out), "");
}

#[test]
fn stat_prints_name_kind_size_time_and_hash() {
    let s = Setup::new();
    let hash = s.upload("dir/c d", 50, 12345);
    let out = s.run(&["stat", "dir/c d"]);
    let text = assert_success(&out);
    assert!(
        text.starts_with("name: dir/c d\nkind: file\nsize: 12345\nmodified: "),
        "{text}"
    );
    assert!(
        text.ends_with(&format!("Z\nblake3: {}\n", hash.to_hex())),
        "{text}"
    );
    assert_eq!(stderr(&out), "");

    let out = s.run(&["stat", "dir/missing"]);
    assert_error(
        &out,
        4,
        "error: the server refused the stat: not found: no such file",
    );
    // A directory is described as one.
    let out = s.run(&["stat", "dir"]);
    assert_eq!(assert_success(&out), "name: dir\nkind: dir\n");
}

#[test]
fn delete_removes_the_file_then_stat_and_get_find_nothing() {
    let s = Setup::new();
    s.upload("d/x.bin", 60, 5000);
    s.upload("d/keep.bin", 61, 10);

    let out = s.run(&["delete", "d/x.bin"]);
    assert_eq!(assert_success(&out), "");
    assert_eq!(stderr(&out), "");
    assert!(!s.stored().exists("d/x.bin"));

    assert_error(
        &s.run(&["stat", "d/x.bin"]),
        4,
        "error: the server refused the stat: not found: no such file",
    );
    let before = tree(s.dir.path());
    assert_error(
        &s.run(&["get", "d/x.bin"]),
        4,
        "error: the server refused the get: not found: no such file",
    );
    // Nothing created locally: no file, no temporary file.
    assert_eq!(tree(s.dir.path()), before);
    assert!(tree(&s.work).is_empty());

    assert_eq!(assert_success(&s.run(&["list"])), "-\td/\n10\td/keep.bin\n");
    assert_error(
        &s.run(&["delete", "d/x.bin"]),
        4,
        "error: the server refused the delete: not found: no such file",
    );
}

/// Names that break the protocol's rules, and why. A NUL byte cannot be
/// passed on a command line at all; the server test sends one raw.
fn refused_names(dir: &Path) -> Vec<(String, &'static str)> {
    let long_component = "c".repeat(256);
    // Every component within its limit, the whole one byte over.
    let too_long = format!("{}/n", vec!["n".repeat(255); 4].join("/"));
    assert_eq!(too_long.len(), 1025);
    vec![
        (String::new(), "the name is empty"),
        (
            format!("{}/escaped", dir.display()),
            "the name is an absolute path",
        ),
        ("/etc/passwd".into(), "the name is an absolute path"),
        ("../outside".into(), "'.' or '..' component"),
        ("a/../../outside".into(), "'.' or '..' component"),
        ("..".into(), "'.' or '..' component"),
        (".".into(), "'.' or '..' component"),
        ("./here".into(), "'.' or '..' component"),
        ("a/./b".into(), "'.' or '..' component"),
        ("a/..".into(), "'.' or '..' component"),
        ("a//b".into(), "an empty component"),
        ("trailing/".into(), "an empty component"),
        ("back\\slash".into(), "the name contains a backslash"),
        ("..\\outside".into(), "the name contains a backslash"),
        ("bell\u{7}char".into(), "a control character"),
        ("escape\u{1b}[31mred".into(), "a control character"),
        ("new\nline".into(), "a control character"),
        ("carriage\rreturn".into(), "a control character"),
        ("del\u{7f}".into(), "a control character"),
        ("c1\u{85}next".into(), "a control character"),
        (long_component, "longer than 255 bytes"),
        (too_long, "1025 bytes long, more than 1024"),
        (".framekit".into(), "reserved for the server's own use"),
        (
            ".framekit/staging/x".into(),
            "reserved for the server's own use",
        ),
    ]
}

#[test]
fn refused_names_are_errors_and_nothing_is_created_anywhere() {
    let s = Setup::new();
    s.local_file("source", 70, 100);
    let before = tree(s.dir.path());
    assert_eq!(tree(&s.work), ["source"]);
    assert!(s.stored().is_empty(), "{:?}", s.stored().everything());

    for (name, reason) in refused_names(s.dir.path()) {
        let put = s.put("source", &name, true);
        let line = assert_error(&put, 7, "error: invalid remote name \"");
        assert!(line.contains(reason), "put {name:?}: {line}");

        if name.ends_with('/') {
            // To get, a trailing slash asks for a directory: this one does
            // not exist.
            let get = s.run(&["get", &name]);
            assert_error(&get, 4, "error: the server refused the directory listing");
            assert_eq!(tree(s.dir.path()), before, "after {name:?}");
            continue;
        }
        let get = s.run(&["get", &name]);
        let line = assert_error(&get, 7, "error: invalid remote name \"");
        assert!(line.contains(reason), "get {name:?}: {line}");

        let get_force = s.run(&["get", &name, "--force"]);
        assert_error(&get_force, 7, reason);

        assert_eq!(tree(s.dir.path()), before, "after {name:?}");
    }
    // The server is unharmed and empty.
    assert_eq!(assert_success(&s.run(&["list"])), "");
    assert!(s.stored().is_empty(), "{:?}", s.stored().everything());
}

#[test]
fn a_directory_or_a_file_in_the_way_of_a_name_exits_7_and_changes_nothing() {
    let s = Setup::new();
    let kept = s.upload("d/file", 75, 100);
    s.local_file("source", 76, 10);
    let before = tree(s.dir.path());
    let not_a_file = "the server refused the put: not a file: ";
    // The name is a directory, even with --force.
    assert_error(&s.put("source", "d", false), 7, not_a_file);
    assert_error(&s.put("source", "d", true), 7, not_a_file);
    // A parent of the name is a file.
    assert_error(&s.put("source", "d/file/below", true), 7, not_a_file);
    assert_error(
        &s.run(&["get", "d/file/below"]),
        7,
        "the server refused the get: not a file: ",
    );
    // A directory is deleted only when empty, or with -r.
    assert_error(
        &s.run(&["delete", "d"]),
        7,
        "the server refused the delete: not empty: ",
    );
    assert_eq!(tree(s.dir.path()), before);
    assert_eq!(s.stored().hash("d/file"), kept);
}

#[test]
fn put_over_an_existing_name_needs_force() {
    let s = Setup::new();
    let first = s.local_file("first", 80, 300_000);
    let second = s.local_file("second", 81, 200_000);
    assert_success(&s.put("first", "same", false));

    let out = s.put("second", "same", false);
    assert_error(
        &out,
        5,
        "error: \"same\" exists on the server with other content (use --force to replace it)",
    );
    assert_eq!(s.stored().hash("same"), first);
    assert_eq!(s.stored().uploads_in_progress(), 0);

    let out = s.put("second", "same", true);
    assert_eq!(assert_success(&out), put_line("same", 200_000, second));
    assert_eq!(s.stored().hash("same"), second);
    assert_eq!(s.stored().uploads_in_progress(), 0);

    assert_success(&s.run(&["get", "same", "--output", "fetched"]));
    assert_eq!(hash_file(&s.work.join("fetched")), second);
}

#[test]
fn get_over_an_existing_local_file_needs_force() {
    let s = Setup::new();
    let remote = s.upload("dir/data.bin", 90, 1_500_000);
    let local = s.local_file("data.bin", 91, 64);
    let before = tree(s.dir.path());

    let out = s.run(&["get", "dir/data.bin"]);
    assert_error(
        &out,
        5,
        "error: data.bin already exists (use --force to replace it)",
    );
    assert_eq!(hash_file(&s.work.join("data.bin")), local);
    assert_eq!(tree(s.dir.path()), before);

    // The same through --output.
    let out = s.run(&["get", "dir/data.bin", "--output", "data.bin"]);
    assert_error(&out, 5, "data.bin already exists");
    assert_eq!(hash_file(&s.work.join("data.bin")), local);
    assert_eq!(tree(s.dir.path()), before);

    let out = s.run(&["get", "dir/data.bin", "--force"]);
    assert_eq!(assert_success(&out), "");
    assert_eq!(hash_file(&s.work.join("data.bin")), remote);
    assert_eq!(tree(&s.work), ["data.bin"]);
}

#[test]
fn a_file_changed_behind_the_servers_back_downloads_with_its_new_content() {
    let s = Setup::new();
    let uploaded = s.upload("big.bin", 100, 3 << 20);
    assert_eq!(s.stored().recorded_hash("big.bin"), Some(uploaded));

    // Rewritten behind the server's back, same size (on a disk in place,
    // modification time put back: only its change time tells), and the
    // server must not send the old hash.
    let changed = s.stored().rewrite_behind("big.bin", 101, 3 << 20);
    assert_ne!(changed, uploaded);

    let out = s.run(&["get", "big.bin", "--output", "got.bin"]);
    assert_eq!(assert_success(&out), "");
    assert_eq!(hash_file(&s.work.join("got.bin")), changed);
}

#[test]
fn a_recorded_hash_that_does_not_match_the_file_fails_the_download() {
    let s = Setup::new();
    let uploaded = s.upload("big.bin", 102, 3 << 20);
    // The record's hash damaged, its stamp intact: as if the file had
    // changed on disk with its times untouched. The client checks what it
    // receives and keeps nothing.
    assert_eq!(s.stored().recorded_hash("big.bin"), Some(uploaded));
    s.stored().damage_recorded_hash("big.bin");

    let out = s.run(&["get", "big.bin", "--output", "got.bin"]);
    assert_error(&out, 6, "integrity mismatch");
    assert!(tree(&s.work).is_empty(), "{:?}", tree(&s.work));
    // The file itself is intact, and once its record is gone it downloads.
    s.stored().forget_recorded_hash("big.bin");
    let out = s.run(&["get", "big.bin", "--output", "got.bin"]);
    assert_eq!(assert_success(&out), "");
    assert_eq!(hash_file(&s.work.join("got.bin")), uploaded);
}
