//! The BLAKE3 hashes of published files, so that a download need not hash
//! the file again: hashing is about half of the server's CPU time for a
//! download (docs/BENCHMARKS.md).
//!
//! A verified upload of [`MIN_SIZE`] bytes or more is recorded in
//! `.framekit/digests/`, under the hash of its name, with the device,
//! inode, size, and modification and change times of the file once it is
//! in place. A download uses the record only if the file it opened still
//! matches all of them: a write through any name moves the change time
//! (which no system call sets back), a replacement changes the inode. A
//! stale or damaged record can only make a download fail: the client
//! checks the hash. It also catches content that changed behind the
//! server's back with its times intact (bit rot), which hashing at read
//! time would pass.

use cap_std::fs::{Dir, OpenOptions};
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Where the records live, relative to the root.
const DIGESTS: &str = ".framekit/digests";

/// Files smaller than this are not recorded: hashing them costs less than
/// writing and reading a record, and small uploads are the ones whose rate
/// matters.
pub(super) const MIN_SIZE: u64 = 1024 * 1024;

/// The first bytes of a record, with its format's version.
const MAGIC: &[u8; 8] = b"fkdgst01";

/// A record: the magic, the hash, then the stamp's seven numbers.
const RECORD_LEN: usize = MAGIC.len() + blake3::OUT_LEN + 7 * 8;

/// The temporary names records are written under end with this.
const TEMP_SUFFIX: &str = ".tmp";

/// What identifies a file's content without reading it.
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
    ctime: i64,
    ctime_nsec: i64,
}

impl Stamp {
    fn of(meta: &Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
            ctime: meta.ctime(),
            ctime_nsec: meta.ctime_nsec(),
        }
    }

    /// The seven numbers, little-endian.
    fn bytes(&self) -> [[u8; 8]; 7] {
        [
            self.dev.to_le_bytes(),
            self.ino.to_le_bytes(),
            self.size.to_le_bytes(),
            self.mtime.to_le_bytes(),
            self.mtime_nsec.to_le_bytes(),
            self.ctime.to_le_bytes(),
            self.ctime_nsec.to_le_bytes(),
        ]
    }
}

fn encode(hash: &blake3::Hash, stamp: &Stamp) -> [u8; RECORD_LEN] {
    let mut out = [0u8; RECORD_LEN];
    let (magic, rest) = out.split_at_mut(MAGIC.len());
    magic.copy_from_slice(MAGIC);
    let (hash_out, rest) = rest.split_at_mut(blake3::OUT_LEN);
    hash_out.copy_from_slice(hash.as_bytes());
    for (chunk, n) in rest.chunks_exact_mut(8).zip(stamp.bytes()) {
        chunk.copy_from_slice(&n);
    }
    out
}

/// The hash a record holds, if it is a whole record of this format and
/// its stamp is `stamp`: exactly what [`encode`] makes of that hash and
/// that stamp.
fn decode(record: &[u8], stamp: &Stamp) -> Option<blake3::Hash> {
    let hash: [u8; blake3::OUT_LEN] = record
        .get(MAGIC.len()..MAGIC.len() + blake3::OUT_LEN)?
        .try_into()
        .ok()?;
    let hash = blake3::Hash::from_bytes(hash);
    (record == encode(&hash, stamp).as_slice()).then_some(hash)
}

/// The name of the record of the file called `name`.
fn record_name(name: &str) -> String {
    blake3::hash(name.as_bytes()).to_hex().to_string()
}

/// The recorded hashes of published files.
#[derive(Debug)]
pub(super) struct Digests {
    dir: Dir,
    next_temp: AtomicU64,
}

impl Digests {
    /// Opens (creating it if needed) the records' directory under `root`
    /// and removes records a previous server left half-written.
    pub(super) fn open(root: &Dir) -> io::Result<Digests> {
        root.create_dir_all(DIGESTS)?;
        let dir = root.open_dir(DIGESTS)?;
        for entry in dir.entries()? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().ends_with(TEMP_SUFFIX) {
                dir.remove_file(entry.file_name())?;
            }
        }
        Ok(Digests {
            dir,
            next_temp: AtomicU64::new(0),
        })
    }

    /// Records that the file `name` that `file` is open on hashes to
    /// `hash`. Call it once the file is in place under its name: moving
    /// or linking a file changes its change time. Files under
    /// [`MIN_SIZE`] are not recorded (a record left for an earlier file of
    /// the same name cannot match them, nor be looked up for them).
    ///
    /// The record is not synced: one lost in a crash only means the file
    /// is hashed again when it is read.
    pub(super) fn record(&self, name: &str, file: &File, hash: &blake3::Hash) -> io::Result<()> {
        let meta = file.metadata()?;
        if meta.size() < MIN_SIZE {
            return Ok(());
        }
        let key = record_name(name);
        let record = encode(hash, &Stamp::of(&meta));
        let id = self.next_temp.fetch_add(1, Ordering::Relaxed);
        let temp = format!("{key}-{}-{id}{TEMP_SUFFIX}", std::process::id());
        self.dir.write(&temp, record)?;
        // Replaces the name's earlier record in one step.
        self.dir.rename(&temp, &self.dir, &key).inspect_err(|_| {
            let _ = self.dir.remove_file(&temp);
        })
    }

    /// The recorded hash of the file `name`, if `meta` (of the file as it
    /// was opened for reading) still matches the record.
    pub(super) fn lookup(&self, name: &str, meta: &Metadata) -> Option<blake3::Hash> {
        if meta.size() < MIN_SIZE {
            return None;
        }
        let file = self
            .dir
            .open_with(record_name(name), OpenOptions::new().read(true))
            .ok()?;
        let mut record = Vec::with_capacity(RECORD_LEN + 1);
        // One byte more than a record, to tell a longer file from a record.
        file.into_std()
            .take(RECORD_LEN as u64 + 1)
            .read_to_end(&mut record)
            .ok()?;
        decode(&record, &Stamp::of(meta))
    }

    /// Removes the record of `name`, if there is one.
    pub(super) fn forget(&self, name: &str) -> io::Result<()> {
        match self.dir.remove_file(record_name(name)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use cap_std::ambient_authority;
    use std::io::{Seek, SeekFrom, Write};

    fn setup() -> (tempfile::TempDir, Dir, Digests) {
        let tmp = tempfile::tempdir().unwrap();
        let root = Dir::open_ambient_dir(tmp.path(), ambient_authority()).unwrap();
        let digests = Digests::open(&root).unwrap();
        (tmp, root, digests)
    }

    /// A root with a big file "big" whose hash is recorded.
    fn recorded() -> (tempfile::TempDir, Dir, Digests, File, blake3::Hash) {
        let (tmp, root, digests) = setup();
        let (file, hash) = big_file(&root, "big", 1);
        digests.record("big", &file, &hash).unwrap();
        (tmp, root, digests, file, hash)
    }

    fn big_file(root: &Dir, name: &str, byte: u8) -> (File, blake3::Hash) {
        let content = vec![byte; usize::try_from(MIN_SIZE).unwrap() + 5];
        root.write(name, &content).unwrap();
        let file = root.open(name).unwrap().into_std();
        (file, blake3::hash(&content))
    }

    #[test]
    fn a_record_is_found_while_the_file_is_unchanged() {
        let (_tmp, root, digests, _, hash) = recorded();
        let meta = root.open("big").unwrap().into_std().metadata().unwrap();
        assert_eq!(digests.lookup("big", &meta), Some(hash));
        // Another name, even of the same file, has no record.
        assert_eq!(digests.lookup("other", &meta), None);
    }

    #[test]
    fn a_write_to_the_file_invalidates_its_record() {
        let (_tmp, root, digests, file, _) = recorded();
        // Same size, and the modification time put back as it was: the
        // change time still moves.
        let before = file.metadata().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut writer = root
            .open_with("big", OpenOptions::new().write(true))
            .unwrap()
            .into_std();
        writer.seek(SeekFrom::Start(7)).unwrap();
        writer.write_all(b"x").unwrap();
        writer.set_modified(before.modified().unwrap()).unwrap();
        let after = writer.metadata().unwrap();
        assert_eq!(after.mtime_nsec(), before.mtime_nsec());
        assert_eq!(digests.lookup("big", &after), None);
    }

    #[test]
    fn a_replaced_file_does_not_match_the_record_of_its_name() {
        let (_tmp, root, digests, _, _) = recorded();
        big_file(&root, "new", 2);
        root.rename("new", &root, "big").unwrap();
        let meta = root.open("big").unwrap().into_std().metadata().unwrap();
        assert_eq!(digests.lookup("big", &meta), None);
    }

    #[test]
    fn small_files_are_not_recorded_and_forget_removes_a_record() {
        let (_tmp, root, digests, file, _) = recorded();
        let meta = file.metadata().unwrap();
        digests.forget("big").unwrap();
        assert_eq!(digests.lookup("big", &meta), None);
        // Forgetting what is not there is fine.
        digests.forget("big").unwrap();

        root.write("small", b"tiny").unwrap();
        let small = root.open("small").unwrap().into_std();
        digests
            .record("small", &small, &blake3::hash(b"tiny"))
            .unwrap();
        // Only the directory's own entries: no record was written.
        assert_eq!(
            root.open_dir(DIGESTS).unwrap().entries().unwrap().count(),
            0
        );
    }

    #[test]
    fn damaged_records_are_ignored() {
        let (_tmp, root, digests, file, _) = recorded();
        let meta = file.metadata().unwrap();
        let dir = root.open_dir(DIGESTS).unwrap();
        let key = record_name("big");
        let good = dir.read(&key).unwrap();
        assert_eq!(good.len(), RECORD_LEN);
        for damaged in [
            good[..RECORD_LEN - 1].to_vec(),
            [good.as_slice(), b"x"].concat(),
            [b"fkdgst02".as_slice(), &good[MAGIC.len()..]].concat(),
            Vec::new(),
        ] {
            dir.write(&key, &damaged).unwrap();
            assert_eq!(digests.lookup("big", &meta), None);
        }
    }

    #[test]
    fn half_written_records_are_removed_on_open() {
        let (_tmp, root, digests) = setup();
        let dir = root.open_dir(DIGESTS).unwrap();
        dir.write(format!("abc-1-0{TEMP_SUFFIX}"), b"half").unwrap();
        dir.write("keep", b"a record").unwrap();
        drop(digests);
        Digests::open(&root).unwrap();
        let names: Vec<_> = dir
            .entries()
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["keep"]);
    }
}
