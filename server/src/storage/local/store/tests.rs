use super::*;
fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("root")).unwrap();
    (dir, store)
}

fn put(store: &Store, name: &str, body: &[u8], overwrite: bool) -> Result<(), StoreError> {
    store.check_put(name, overwrite)?;
    let mut upload = store.begin_upload(0)?;
    upload.write(body).unwrap();
    store.publish(upload, name, overwrite, &blake3::hash(body))
}

fn staging_is_empty(store: &Store) -> bool {
    store.staging.entries().unwrap().next().is_none()
}

#[test]
fn publish_creates_parents_and_leaves_staging_empty() {
    let (dir, store) = store();
    put(&store, "a/b/c.txt", b"hello", false).unwrap();
    let on_disk = std::fs::read(dir.path().join("root/a/b/c.txt")).unwrap();
    assert_eq!(on_disk, b"hello");
    assert!(staging_is_empty(&store));
}

fn known_hash(store: &Store, name: &str) -> Option<blake3::Hash> {
    let (file, _) = store.open_read(name).unwrap();
    store.known_hash(name, &file)
}

#[test]
fn the_hash_of_a_big_published_file_is_known_until_it_changes() {
    let (dir, store) = store();
    let big = vec![3u8; usize::try_from(super::super::digest::MIN_SIZE).unwrap()];
    put(&store, "d/big", &big, false).unwrap();
    assert_eq!(known_hash(&store, "d/big"), Some(blake3::hash(&big)));
    put(&store, "small", b"small", false).unwrap();
    assert_eq!(known_hash(&store, "small"), None);

    // Replaced through the server: the new content's hash.
    let other = vec![4u8; big.len() + 1];
    put(&store, "d/big", &other, true).unwrap();
    assert_eq!(known_hash(&store, "d/big"), Some(blake3::hash(&other)));

    // Written behind the server's back: no longer known.
    std::fs::write(dir.path().join("root/d/big"), &big).unwrap();
    assert_eq!(known_hash(&store, "d/big"), None);

    // Deleted and uploaded again: the new upload's record only.
    put(&store, "d/big", &other, true).unwrap();
    store.delete("d/big").unwrap();
    put(&store, "d/big", &big, false).unwrap();
    assert_eq!(known_hash(&store, "d/big"), Some(blake3::hash(&big)));
}

#[test]
fn publish_without_overwrite_refuses_a_name_taken_meanwhile() {
    let (dir, store) = store();
    store.check_put("x", false).unwrap();
    let mut first = store.begin_upload(0).unwrap();
    first.write(b"first").unwrap();
    let mut second = store.begin_upload(0).unwrap();
    second.write(b"second").unwrap();
    store
        .publish(first, "x", false, &blake3::hash(b"first"))
        .unwrap();
    assert!(matches!(
        store.publish(second, "x", false, &blake3::hash(b"second")),
        Err(StoreError::AlreadyExists)
    ));
    assert_eq!(std::fs::read(dir.path().join("root/x")).unwrap(), b"first");
    assert!(staging_is_empty(&store));
}

#[test]
fn dropped_upload_removes_its_temporary_file() {
    let (_dir, store) = store();
    let mut upload = store.begin_upload(0).unwrap();
    upload.write(b"partial").unwrap();
    assert!(!staging_is_empty(&store));
    drop(upload);
    assert!(staging_is_empty(&store));
}

#[test]
fn reopening_removes_leftover_uploads() {
    let (dir, store) = store();
    let upload = store.begin_upload(0).unwrap();
    std::mem::forget(upload);
    drop(store);
    let store = Store::open(&dir.path().join("root")).unwrap();
    assert!(staging_is_empty(&store));
}

#[test]
fn symlinks_out_of_the_root_are_not_followed() {
    let (dir, store) = store();
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), b"secret").unwrap();
    let root = dir.path().join("root");
    std::os::unix::fs::symlink(&outside, root.join("out_dir")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret"), root.join("out_file")).unwrap();

    assert!(matches!(
        store.open_read("out_file"),
        Err(StoreError::Denied)
    ));
    assert!(matches!(
        store.open_read("out_dir/secret"),
        Err(StoreError::Denied)
    ));
    assert!(matches!(
        store.stat("out_dir/secret"),
        Err(StoreError::Denied)
    ));
    assert!(matches!(
        store.check_put("out_dir/new", false),
        Err(StoreError::Denied)
    ));
    assert!(matches!(
        put(&store, "out_dir/new", b"x", true),
        Err(StoreError::Denied)
    ));
    assert!(matches!(
        store.delete("out_dir/secret"),
        Err(StoreError::Denied)
    ));
    // Deleting the link removes the link, not its target.
    store.delete("out_file").unwrap();
    assert_eq!(std::fs::read(outside.join("secret")).unwrap(), b"secret");
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1);

    let names = listed(&store, "", false);
    assert!(names.is_empty(), "{names:?}");
    let names = listed(&store, "", true);
    assert!(names.is_empty(), "{names:?}");
}

#[test]
fn symlinks_into_the_reserved_area_are_not_followed() {
    let (dir, store) = store();
    let root = dir.path().join("root");
    let mut upload = store.begin_upload(0).unwrap();
    upload.write(b"in progress").unwrap();
    let staged = std::fs::read_dir(root.join(".framekit/staging"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name();
    std::os::unix::fs::symlink(".framekit/staging", root.join("peek")).unwrap();
    std::os::unix::fs::symlink(".framekit", root.join("area")).unwrap();
    let through = format!("peek/{}", staged.to_string_lossy());
    assert!(matches!(store.open_read(&through), Err(StoreError::Denied)));
    assert!(matches!(store.stat(&through), Err(StoreError::Denied)));
    assert!(matches!(
        store.check_put("peek/new", true),
        Err(StoreError::Denied)
    ));
    assert!(matches!(
        store.check_put("area/staging/new", true),
        Err(StoreError::Denied)
    ));
    assert!(matches!(store.delete(&through), Err(StoreError::Denied)));
    assert!(matches!(
        put(&store, "peek/new", b"x", true),
        Err(StoreError::Denied)
    ));
    drop(upload);
}

fn listed(store: &Store, prefix: &str, dirs: bool) -> Vec<String> {
    walked(store.list(prefix, dirs).unwrap()).unwrap()
}

#[test]
fn list_is_in_byte_order_and_honours_the_prefix() {
    let (_dir, store) = store();
    for name in ["b", "a/z", "a.txt", "a/b/c", "ab", "a-"] {
        put(&store, name, name.as_bytes(), false).unwrap();
    }
    let names = listed(&store, "", false);
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    assert_eq!(names, ["a-", "a.txt", "a/b/c", "a/z", "ab", "b"]);
    assert_eq!(listed(&store, "a/", false), ["a/b/c", "a/z"]);
}

#[test]
fn a_list_with_directories_shows_empty_ones_in_name_order() {
    let (_dir, store) = store();
    for name in ["b", "a/z", "a.txt", "a/b/c", "ab", "a-"] {
        put(&store, name, name.as_bytes(), false).unwrap();
    }
    store.make_dir("a/empty").unwrap();
    store.make_dir("e").unwrap();
    assert_eq!(
        listed(&store, "", true),
        [
            "a-", "a.txt", "a/", "a/b/", "a/b/c", "a/empty/", "a/z", "ab", "b", "e/"
        ]
    );
    // The directory itself matches a prefix without its slash only.
    assert_eq!(
        listed(&store, "a/", true),
        ["a/b/", "a/b/c", "a/empty/", "a/z"]
    );
    assert_eq!(listed(&store, "a/e", true), ["a/empty/"]);
}

#[test]
fn describe_tells_files_from_directories() {
    let (_dir, store) = store();
    put(&store, "d/f", b"12345", false).unwrap();
    assert!(matches!(
        store.describe("d/f"),
        Ok(Found::File(Entry { size: 5, .. }))
    ));
    assert_eq!(store.describe("d").unwrap(), Found::Dir("d".into()));
    assert!(matches!(store.describe("d/f/x"), Err(StoreError::NotAFile)));
    assert!(matches!(store.describe("d/g"), Err(StoreError::NotFound)));
    assert!(matches!(
        store.describe("../x"),
        Err(StoreError::InvalidName(_))
    ));
}

#[test]
fn deleting_the_last_file_of_a_directory_removes_the_directory() {
    let (dir, store) = store();
    put(&store, "a/b/c", b"1", false).unwrap();
    put(&store, "a/keep", b"2", false).unwrap();
    store.delete("a/b/c").unwrap();
    assert!(!dir.path().join("root/a/b").exists());
    assert!(dir.path().join("root/a/keep").exists());
    store.delete("a/keep").unwrap();
    assert!(!dir.path().join("root/a").exists());
    // The name is free to be a file now.
    put(&store, "a", b"3", false).unwrap();
}

#[test]
fn a_dangling_link_at_the_name_is_in_the_way_without_overwrite() {
    let (dir, store) = store();
    std::os::unix::fs::symlink("nowhere", dir.path().join("root/link")).unwrap();
    assert!(matches!(
        store.check_put("link", false),
        Err(StoreError::AlreadyExists)
    ));
    store.check_put("link", true).unwrap();
}

/// Everything a listing finds, directories with a `/` appended.
fn walked(mut walk: Walk) -> Result<Vec<String>, StoreError> {
    let mut found = Vec::new();
    while !walk.is_done() {
        walk.step(&mut found, crate::storage::local::walk::STEP)?;
    }
    Ok(found
        .into_iter()
        .map(|f| match f {
            Found::File(e) => e.name,
            Found::Dir(d) => format!("{d}/"),
        })
        .collect())
}

fn tree_of(store: &Store, dir: &str) -> Result<Vec<String>, StoreError> {
    walked(store.tree(dir)?)
}

#[test]
fn tree_reports_directories_before_their_content_in_order() {
    let (_dir, store) = store();
    for name in ["a/b/c", "a/d", "a-", "x"] {
        put(&store, name, name.as_bytes(), false).unwrap();
    }
    store.make_dir("a/e").unwrap();
    store.make_dir("a/e").unwrap();
    assert_eq!(
        tree_of(&store, "a").unwrap(),
        ["a/b/", "a/b/c", "a/d", "a/e/"]
    );
    assert_eq!(
        tree_of(&store, "").unwrap(),
        ["a-", "a/", "a/b/", "a/b/c", "a/d", "a/e/", "x"]
    );
    assert!(tree_of(&store, "a/e").unwrap().is_empty());
    assert!(matches!(tree_of(&store, "nope"), Err(StoreError::NotFound)));
    assert!(matches!(tree_of(&store, "x"), Err(StoreError::NotAFile)));
    assert!(matches!(
        tree_of(&store, "a/../x"),
        Err(StoreError::InvalidName(_))
    ));
    assert!(matches!(
        tree_of(&store, ".framekit"),
        Err(StoreError::InvalidName(_))
    ));
}

#[test]
fn make_dir_refuses_files_in_the_way_and_the_reserved_area() {
    let (dir, store) = store();
    put(&store, "f", b"x", false).unwrap();
    assert!(matches!(store.make_dir("f"), Err(StoreError::NotAFile)));
    assert!(matches!(store.make_dir("f/g"), Err(StoreError::NotAFile)));
    let root = dir.path().join("root");
    std::os::unix::fs::symlink(".framekit", root.join("area")).unwrap();
    assert!(matches!(
        store.make_dir("area/deep/er"),
        Err(StoreError::Denied)
    ));
    assert!(matches!(
        store.check_put("area/deep/er/f", true),
        Err(StoreError::Denied)
    ));
    assert!(!root.join(".framekit/deep").exists());
}

#[test]
fn a_link_to_nothing_where_a_directory_must_be_is_not_a_file() {
    let (dir, store) = store();
    let root = dir.path().join("root");
    std::os::unix::fs::symlink("nowhere", root.join("d")).unwrap();
    assert!(matches!(store.make_dir("d"), Err(StoreError::NotAFile)));
    assert!(matches!(store.make_dir("d/e"), Err(StoreError::NotAFile)));
    assert!(matches!(
        put(&store, "d/f", b"x", true),
        Err(StoreError::NotAFile)
    ));
    assert!(matches!(
        put(&store, "d/e/f", b"x", false),
        Err(StoreError::NotAFile)
    ));
    // A link to a directory inside the root is a directory.
    std::fs::create_dir(root.join("real")).unwrap();
    std::os::unix::fs::symlink("real", root.join("to_real")).unwrap();
    store.make_dir("to_real/sub").unwrap();
    put(&store, "to_real/sub/f", b"x", false).unwrap();
    assert_eq!(std::fs::read(root.join("real/sub/f")).unwrap(), b"x");
    assert!(staging_is_empty(&store));
}

#[test]
fn a_publish_that_fails_removes_the_directories_it_made() {
    let (dir, store) = store();
    let root = dir.path().join("root");
    put(&store, "a/keep", b"1", false).unwrap();
    for overwrite in [false, true] {
        let mut upload = store.begin_upload(0).unwrap();
        upload.write(b"x").unwrap();
        // The staged file goes: placing it fails once its directories
        // are made.
        upload.dir.remove_file(&upload.temp).unwrap();
        assert!(matches!(
            store.publish(upload, "a/b/c/x", overwrite, &blake3::hash(b"x")),
            Err(StoreError::NotFound)
        ));
        assert!(!root.join("a/b").exists());
        assert!(root.join("a/keep").exists());
    }
    assert!(staging_is_empty(&store));
}

fn retained(ttl_ms: u64, quota: u64) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let retention = Retention {
        ttl: std::time::Duration::from_millis(ttl_ms),
        quota: Some(quota),
    };
    let store = Store::open_with(&dir.path().join("root"), retention, MinFree::Bytes(0)).unwrap();
    (dir, store)
}

fn partial_files(dir: &tempfile::TempDir) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.path().join("root/.framekit/partial"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

const DAY: u64 = 86_400_000;

#[test]
fn an_interrupted_resumable_upload_is_kept_and_continued_with_the_same_key() {
    let (dir, store) = retained(DAY, 1 << 20);
    let key = [7u8; 32];
    let mut upload = store.begin_resumable(key, "a/b", 10).unwrap();
    assert_eq!(upload.offset(), 0);
    upload.write(b"012345").unwrap();
    drop(upload);
    let hex = data_name(&key);
    assert_eq!(partial_files(&dir), [hex.clone(), format!("{hex}.meta")]);
    assert!(staging_is_empty(&store));

    // The same key, name and size continue after what was kept.
    let mut upload = store.begin_resumable(key, "a/b", 10).unwrap();
    assert_eq!(upload.offset(), 6);
    upload.write(b"6789").unwrap();
    store
        .publish(upload, "a/b", false, &blake3::hash(b"0123456789"))
        .unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("root/a/b")).unwrap(),
        b"0123456789"
    );
    assert!(partial_files(&dir).is_empty());
    assert!(store.partials().kept().is_empty());
}

#[test]
fn a_kept_upload_is_neither_continued_nor_dropped_for_another_name_or_size() {
    let (dir, store) = retained(DAY, 1 << 20);
    let key = [1u8; 32];
    let mut upload = store.begin_resumable(key, "n", 10).unwrap();
    upload.write(b"abc").unwrap();
    drop(upload);
    for (name, size) in [("n", 11), ("other", 10)] {
        // An ordinary upload, in the staging area.
        let mut upload = store.begin_resumable(key, name, size).unwrap();
        assert_eq!(upload.offset(), 0);
        upload.write(b"xyz").unwrap();
        assert!(!staging_is_empty(&store));
        drop(upload);
        assert!(staging_is_empty(&store));
    }
    assert_eq!(partial_files(&dir).len(), 2);
    let upload = store.begin_resumable(key, "n", 10).unwrap();
    assert_eq!(upload.offset(), 3);
}

#[test]
fn a_key_in_use_gives_an_ordinary_upload() {
    let (dir, store) = retained(DAY, 1 << 20);
    let key = [2u8; 32];
    let mut first = store.begin_resumable(key, "n", 10).unwrap();
    first.write(b"first").unwrap();
    let mut second = store.begin_resumable(key, "n", 10).unwrap();
    second.write(b"second").unwrap();
    assert!(!staging_is_empty(&store));
    drop(second);
    assert!(staging_is_empty(&store));
    drop(first);
    assert_eq!(store.partials().kept()[0].1.received, 5);
    assert_eq!(partial_files(&dir).len(), 2);
}

#[test]
fn kept_uploads_survive_a_restart_cut_to_their_record() {
    let (dir, store) = retained(DAY, 1 << 20);
    let key = [3u8; 32];
    let mut upload = store.begin_resumable(key, "n", 100).unwrap();
    upload.write(b"kept").unwrap();
    drop(upload);
    // Resumed, then the server dies: the bytes written since are not
    // in the record.
    let mut upload = store.begin_resumable(key, "n", 100).unwrap();
    upload.write(b"unconfirmed").unwrap();
    std::mem::forget(upload);
    // And a fresh resumable upload that never got a record.
    let mut orphan = store.begin_resumable([4u8; 32], "m", 100).unwrap();
    orphan.write(b"orphan").unwrap();
    std::mem::forget(orphan);
    drop(store);

    let store = Store::open(&dir.path().join("root")).unwrap();
    let hex = data_name(&key);
    assert_eq!(partial_files(&dir), [hex.clone(), format!("{hex}.meta")]);
    let data = std::fs::read(dir.path().join("root/.framekit/partial").join(&hex)).unwrap();
    assert_eq!(data, b"kept");
    let upload = store.begin_resumable(key, "n", 100).unwrap();
    assert_eq!(upload.offset(), 4);
}

#[test]
fn kept_uploads_expire() {
    let (dir, store) = retained(1, 1 << 20);
    let mut upload = store.begin_resumable([5u8; 32], "n", 10).unwrap();
    upload.write(b"abc").unwrap();
    drop(upload);
    std::thread::sleep(std::time::Duration::from_millis(20));
    // Too old to continue, even before it is swept.
    let upload = store.begin_resumable([5u8; 32], "n", 10).unwrap();
    assert_eq!(upload.offset(), 0);
    upload.discard();

    let mut upload = store.begin_resumable([6u8; 32], "n", 10).unwrap();
    upload.write(b"abc").unwrap();
    drop(upload);
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(store.partials().sweep(), 1);
    assert!(partial_files(&dir).is_empty());
}

#[test]
fn the_quota_evicts_the_oldest_and_refuses_what_cannot_fit() {
    let (dir, store) = retained(DAY, 10);
    let mut a = store.begin_resumable([1u8; 32], "a", 10).unwrap();
    a.write(b"aaaaaa").unwrap();
    drop(a);
    std::thread::sleep(std::time::Duration::from_millis(5));
    let mut b = store.begin_resumable([2u8; 32], "b", 10).unwrap();
    b.write(b"bbbbbb").unwrap();
    drop(b);
    let kept = store.partials().kept();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].1.name, "b");
    assert_eq!(partial_files(&dir).len(), 2);
    // Larger than the whole quota: an ordinary upload, never kept.
    let mut c = store.begin_resumable([3u8; 32], "c", 11).unwrap();
    c.write(b"ccccccc").unwrap();
    assert!(!staging_is_empty(&store));
    drop(c);
    assert!(staging_is_empty(&store));
    assert_eq!(store.partials().kept().len(), 1);
}

#[test]
fn the_quota_counts_uploads_in_progress_at_their_whole_size() {
    let (dir, store) = retained(DAY, 10);
    let mut first = store.begin_resumable([1u8; 32], "a", 6).unwrap();
    first.write(b"a").unwrap();
    // 6 + 6 is over the quota: the second goes to the staging area.
    let mut second = store.begin_resumable([2u8; 32], "b", 6).unwrap();
    second.write(b"b").unwrap();
    assert!(!staging_is_empty(&store));
    drop(second);
    assert!(staging_is_empty(&store));
    drop(first);
    assert_eq!(store.partials().kept().len(), 1);
    // A kept upload makes room for one in progress, oldest first.
    let third = store.begin_resumable([3u8; 32], "c", 10).unwrap();
    assert!(store.partials().kept().is_empty());
    assert_eq!(partial_files(&dir), [data_name(&[3u8; 32])]);
    drop(third);
}

#[test]
fn kept_uploads_are_not_dropped_when_that_would_not_make_room() {
    let (_dir, store) = retained(DAY, 10);
    let mut kept = store.begin_resumable([1u8; 32], "a", 10).unwrap();
    kept.write(b"aa").unwrap();
    drop(kept);
    // 6 in progress, 2 kept: a put of 6 does not fit even if the kept
    // upload goes, so it stays, and the put is an ordinary one.
    let mut first = store.begin_resumable([2u8; 32], "b", 6).unwrap();
    first.write(b"b").unwrap();
    let mut second = store.begin_resumable([3u8; 32], "c", 6).unwrap();
    second.write(b"c").unwrap();
    assert!(!staging_is_empty(&store));
    let kept = store.partials().kept();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].1.name, "a");
    drop((first, second));
}

#[test]
fn an_upload_interrupted_after_its_name_was_published_is_not_kept() {
    let (dir, store) = retained(DAY, 1 << 20);
    let mut upload = store.begin_resumable([1u8; 32], "n", 10).unwrap();
    upload.write(b"old").unwrap();
    put(&store, "n", b"newer", true).unwrap();
    drop(upload);
    assert!(store.partials().kept().is_empty());
    assert!(partial_files(&dir).is_empty());
    // Another name is not concerned.
    let mut upload = store.begin_resumable([2u8; 32], "m", 10).unwrap();
    upload.write(b"kept").unwrap();
    put(&store, "n", b"newest", true).unwrap();
    drop(upload);
    assert_eq!(store.partials().kept().len(), 1);
}

#[test]
fn a_complete_upload_that_loses_its_publish_is_not_kept() {
    let (dir, store) = retained(DAY, 1 << 20);
    let mut upload = store.begin_resumable([1u8; 32], "n", 5).unwrap();
    upload.write(b"mine!").unwrap();
    put(&store, "n", b"first", false).unwrap();
    assert!(matches!(
        store.publish(upload, "n", false, &blake3::hash(b"mine!")),
        Err(StoreError::AlreadyExists)
    ));
    assert!(store.partials().kept().is_empty());
    assert!(partial_files(&dir).is_empty());
}

#[test]
fn a_put_waits_for_an_upload_of_its_key_that_is_being_kept() {
    let (_dir, store) = retained(DAY, 1 << 20);
    let store = Arc::new(store);
    let key = [9u8; 32];
    let mut upload = store.begin_resumable(key, "n", 100).unwrap();
    upload.write(&[7u8; 40]).unwrap();
    // Its connection broke; it is kept a moment later.
    upload.ending();
    let keeper = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(200));
        drop(upload);
    });
    let resumed = store.begin_resumable(key, "n", 100).unwrap();
    assert_eq!(resumed.offset(), 40);
    keeper.join().unwrap();
    // One still receiving is waited for only a short while: then the
    // put is an ordinary one.
    let mut other = store.begin_resumable(key, "n", 100).unwrap();
    assert_eq!(other.offset(), 0);
    other.write(b"x").unwrap();
    assert!(!staging_is_empty(&store));
    drop(other);
    drop(resumed);
}

#[test]
fn a_smaller_quota_at_restart_drops_what_no_longer_fits() {
    let (dir, store) = retained(DAY, 10);
    let mut upload = store.begin_resumable([1u8; 32], "a", 10).unwrap();
    upload.write(b"aaaaaa").unwrap();
    drop(upload);
    drop(store);
    let retention = Retention {
        ttl: std::time::Duration::from_millis(DAY),
        quota: Some(4),
    };
    let store = Store::open_with(&dir.path().join("root"), retention, MinFree::Bytes(0)).unwrap();
    assert!(store.partials().kept().is_empty());
    assert!(partial_files(&dir).is_empty());
}

#[test]
fn publishing_a_name_drops_older_kept_uploads_of_it() {
    let (dir, store) = retained(DAY, 1 << 20);
    let mut old = store.begin_resumable([1u8; 32], "n", 10).unwrap();
    old.write(b"old").unwrap();
    drop(old);
    put(&store, "n", b"new", true).unwrap();
    assert!(partial_files(&dir).is_empty());
    assert!(store.partials().kept().is_empty());
}

#[test]
fn a_discarded_upload_leaves_nothing() {
    let (dir, store) = retained(DAY, 1 << 20);
    let mut upload = store.begin_resumable([1u8; 32], "n", 10).unwrap();
    upload.write(b"bad").unwrap();
    upload.discard();
    assert!(partial_files(&dir).is_empty());
    assert!(store.partials().kept().is_empty());
}

#[test]
fn directories_are_not_files() {
    let (_dir, store) = store();
    put(&store, "d/f", b"", false).unwrap();
    assert!(matches!(
        store.check_put("d", true),
        Err(StoreError::NotAFile)
    ));
    assert!(matches!(
        store.check_put("d", false),
        Err(StoreError::NotAFile)
    ));
    assert!(matches!(store.open_read("d"), Err(StoreError::NotAFile)));
    assert!(matches!(store.delete("d"), Err(StoreError::NotAFile)));
    assert!(matches!(
        store.check_put("d/f/g", false),
        Err(StoreError::NotAFile)
    ));
}

#[test]
fn rename_moves_a_file_and_replaces_only_when_asked() {
    let (dir, store) = store();
    let root = dir.path().join("root");
    put(&store, "a/x", b"x", false).unwrap();
    put(&store, "b", b"b", false).unwrap();
    store.rename("a/x", "c/d/y", false).unwrap();
    assert_eq!(std::fs::read(root.join("c/d/y")).unwrap(), b"x");
    // The directory the file left, now empty, went with it.
    assert!(!root.join("a").exists());

    assert!(matches!(
        store.rename("c/d/y", "b", false),
        Err(StoreError::AlreadyExists)
    ));
    assert_eq!(std::fs::read(root.join("b")).unwrap(), b"b");
    assert_eq!(std::fs::read(root.join("c/d/y")).unwrap(), b"x");

    store.rename("c/d/y", "b", true).unwrap();
    assert_eq!(std::fs::read(root.join("b")).unwrap(), b"x");
    assert!(!root.join("c").exists());
    assert!(matches!(
        store.rename("gone", "g", false),
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.rename("b", "b/under", false),
        Err(StoreError::NotAFile | StoreError::AlreadyExists)
    ));
}

#[test]
fn rename_moves_directories_whole_and_symlinks_themselves() {
    let (dir, store) = store();
    let root = dir.path().join("root");
    put(&store, "d/e/f", b"f", false).unwrap();
    store.make_dir("d/empty").unwrap();
    store.rename("d", "moved/d", false).unwrap();
    assert_eq!(std::fs::read(root.join("moved/d/e/f")).unwrap(), b"f");
    assert!(root.join("moved/d/empty").is_dir());
    assert!(!root.join("d").exists());

    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), b"secret").unwrap();
    std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
    store.rename("link", "moved/link", false).unwrap();
    let moved = std::fs::symlink_metadata(root.join("moved/link")).unwrap();
    assert!(moved.file_type().is_symlink());
    assert_eq!(std::fs::read(outside.join("secret")).unwrap(), b"secret");
}

#[test]
fn rename_stays_inside_the_root_and_out_of_the_reserved_area() {
    let (dir, store) = store();
    let root = dir.path().join("root");
    put(&store, "f", b"f", false).unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), b"secret").unwrap();
    std::os::unix::fs::symlink(&outside, root.join("out_dir")).unwrap();
    std::os::unix::fs::symlink(".framekit", root.join("area")).unwrap();
    for (from, to) in [
        ("f", "out_dir/f"),
        ("out_dir/secret", "here"),
        ("f", "area/staging/f"),
        ("area/digests", "taken"),
    ] {
        assert!(
            matches!(store.rename(from, to, true), Err(StoreError::Denied)),
            "{from} -> {to}"
        );
    }
    for (from, to) in [("f", ".framekit/f"), ("../f", "g"), ("f", "a/../g")] {
        assert!(
            matches!(
                store.rename(from, to, true),
                Err(StoreError::InvalidName(_))
            ),
            "{from} -> {to}"
        );
    }
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1);
    assert_eq!(std::fs::read(root.join("f")).unwrap(), b"f");
    assert!(!root.join("here").exists() && !root.join("taken").exists());
}

#[test]
fn a_renamed_file_loses_its_recorded_hash() {
    let (_dir, store) = store();
    let big = vec![5u8; usize::try_from(super::super::digest::MIN_SIZE).unwrap()];
    put(&store, "big", &big, false).unwrap();
    assert_eq!(known_hash(&store, "big"), Some(blake3::hash(&big)));
    store.rename("big", "moved", false).unwrap();
    assert_eq!(known_hash(&store, "moved"), None);
    store.rename("moved", "big", false).unwrap();
    assert_eq!(known_hash(&store, "big"), None);
}

#[test]
fn a_directory_is_deleted_alone_only_when_empty_and_whole_when_recursive() {
    let (dir, store) = store();
    let root = dir.path().join("root");
    put(&store, "a/b/f", b"f", false).unwrap();
    put(&store, "a/b/c/g", b"g", false).unwrap();
    store.make_dir("a/b/empty").unwrap();
    store.delete_dir("a/b/empty", false).unwrap();
    assert!(!root.join("a/b/empty").exists());
    assert!(matches!(
        store.delete_dir("a/b", false),
        Err(StoreError::NotEmpty)
    ));
    assert!(root.join("a/b/f").exists());
    store.delete_dir("a/b", true).unwrap();
    // Its parent, left empty, went too.
    assert!(!root.join("a").exists());
    assert!(matches!(
        store.delete_dir("a", true),
        Err(StoreError::NotFound)
    ));
    put(&store, "file", b"x", false).unwrap();
    assert!(matches!(
        store.delete_dir("file", true),
        Err(StoreError::NotAFile)
    ));
    assert!(root.join("file").exists());
}

#[test]
fn a_recursive_delete_removes_symlinks_and_never_what_they_point_to() {
    let (dir, store) = store();
    let root = dir.path().join("root");
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), b"secret").unwrap();
    put(&store, "d/f", b"f", false).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("d/out_dir")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret"), root.join("d/out_file")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("out_dir")).unwrap();
    std::os::unix::fs::symlink("d", root.join("in_dir")).unwrap();
    std::os::unix::fs::symlink(".framekit", root.join("area")).unwrap();

    // A symlink is not a directory here, whatever it points to.
    assert!(matches!(
        store.delete_dir("in_dir", true),
        Err(StoreError::NotAFile)
    ));
    assert!(matches!(
        store.delete_dir("out_dir", true),
        Err(StoreError::Denied)
    ));
    assert!(root.join("d/f").exists());
    assert!(matches!(
        store.delete_dir("area/staging", true),
        Err(StoreError::Denied)
    ));
    assert!(matches!(
        store.delete_dir(".framekit", true),
        Err(StoreError::InvalidName(_))
    ));
    store.delete_dir("d", true).unwrap();
    assert!(!root.join("d").exists());
    assert_eq!(std::fs::read(outside.join("secret")).unwrap(), b"secret");
    assert!(root.join(".framekit/staging").is_dir());
}
