//! The BLAKE3 hashes of local files, kept between runs, so that a rerun
//! of a put or a get compares unchanged files with the server's without
//! reading them again.
//!
//! A record is keyed by the file's identity (device and inode) and holds,
//! with the hash, the file's size and its modification and change times
//! when it was hashed: it is used only while all of them are unchanged.
//! Any write moves the change time (no system call sets it back), and a
//! replaced file is another inode, as in the server's records
//! (`server/src/storage/local/digest.rs`). Only content changed without
//! any of these moving (root resetting the times, a damaged disk) would
//! be taken for what it was.
//!
//! The records live in one file, `$XDG_CACHE_HOME/framekit/hashes` (or
//! `~/.cache/framekit/hashes`). A command that only adds records (a first
//! upload) appends them at its end without reading the file; one that
//! looks records up reads the file once, and writes it back whole at its
//! end (through a temporary file and a rename, so that a reader sees the
//! old file or the new one), keeping at most [`MAX_RECORDS`], the most
//! recently used: about 10 MB. A file grown past twice that by appends is
//! rewritten the same way. Two commands running at once may each drop
//! the other's new records; it is only a cache.

use framekit_transfer::Hash;
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

/// The most records kept.
pub const MAX_RECORDS: usize = 100_000;

/// The most bytes of the file read: twice what [`MAX_RECORDS`] lines of
/// the longest numbers take.
const MAX_FILE_LEN: u64 = 2 * 256 * MAX_RECORDS as u64;

/// The first line of the file, with its format's version.
const HEADER: &str = "framekit local hashes 1";

/// What identifies a file's content without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
    ctime: i64,
    ctime_nsec: i64,
}

impl Stamp {
    /// The stamp of a file as `meta` describes it.
    pub fn of(meta: &fs::Metadata) -> Stamp {
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

    /// The file's size.
    pub fn size(&self) -> u64 {
        self.size
    }
}

#[derive(Debug, Clone, Copy)]
struct Record {
    stamp: Stamp,
    hash: Hash,
    /// When it was last used, in seconds since the Unix epoch.
    used: u64,
}

/// The recorded hashes of local files.
#[derive(Debug)]
pub struct LocalHashes {
    /// Where they are kept; `None` keeps them in memory only.
    path: Option<PathBuf>,
    records: HashMap<(u64, u64), Record>,
    /// Whether [`LocalHashes::records`] was read from the file yet.
    loaded: bool,
    changed: bool,
    /// Records added before the file was read: appended at the end unless
    /// it is read meanwhile.
    pending: Vec<Record>,
    /// This run's mark for the records it uses.
    now: u64,
    /// How many files this run read to hash them.
    hashed: u64,
}

impl LocalHashes {
    /// The records in the user's cache directory: `$XDG_CACHE_HOME` if it
    /// is set to an absolute path, else `$HOME/.cache`; in memory only if
    /// neither is known.
    pub fn in_user_cache() -> LocalHashes {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| {
                std::env::var_os("HOME")
                    .map(PathBuf::from)
                    .filter(|p| p.is_absolute())
                    .map(|home| home.join(".cache"))
            });
        LocalHashes::at(base.map(|base| base.join("framekit").join("hashes")))
    }

    /// The records kept in the file `path`, or in memory only.
    pub fn at(path: Option<PathBuf>) -> LocalHashes {
        LocalHashes {
            path,
            records: HashMap::new(),
            loaded: false,
            changed: false,
            pending: Vec::new(),
            now: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            hashed: 0,
        }
    }

    /// How many files were read to be hashed so far.
    pub fn hashed(&self) -> u64 {
        self.hashed
    }

    /// Reads the file once; a missing or damaged file (or line) is no
    /// record. The records added before come on top.
    fn load(&mut self) {
        if self.loaded {
            return;
        }
        self.loaded = true;
        self.read_file();
        for record in std::mem::take(&mut self.pending) {
            self.records
                .insert((record.stamp.dev, record.stamp.ino), record);
            self.changed = true;
        }
    }

    fn read_file(&mut self) {
        let Some(path) = &self.path else {
            return;
        };
        let Ok(file) = File::open(path) else {
            return;
        };
        let mut text = String::new();
        if file.take(MAX_FILE_LEN).read_to_string(&mut text).is_err() {
            return;
        }
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            return;
        }
        for line in lines {
            if let Some(record) = parse(line) {
                self.records
                    .insert((record.stamp.dev, record.stamp.ino), record);
            }
        }
    }

    /// The recorded hash of the file whose stamp is `stamp`, if it was
    /// recorded with that very stamp.
    pub fn lookup(&mut self, stamp: &Stamp) -> Option<Hash> {
        self.load();
        let now = self.now;
        let record = self.records.get_mut(&(stamp.dev, stamp.ino))?;
        if record.stamp != *stamp {
            return None;
        }
        if record.used != now {
            record.used = now;
            self.changed = true;
        }
        Some(record.hash)
    }

    /// Records that the file whose stamp is `stamp` hashes to `hash`.
    pub fn record(&mut self, stamp: Stamp, hash: Hash) {
        let record = Record {
            stamp,
            hash,
            used: self.now,
        };
        if self.loaded {
            self.records.insert((stamp.dev, stamp.ino), record);
            self.changed = true;
        } else {
            self.pending.push(record);
        }
    }

    /// The hash of the regular file at `path`: the recorded one if the
    /// file is unchanged since, else read from the file (and recorded).
    pub fn hash_of(&mut self, path: &Path) -> io::Result<Hash> {
        let file = File::open(path)?;
        let before = Stamp::of(&file.metadata()?);
        if let Some(hash) = self.lookup(&before) {
            return Ok(hash);
        }
        let mut hasher = blake3::Hasher::new();
        hasher.update_reader(&file)?;
        self.hashed += 1;
        let hash: Hash = hasher.finalize().into();
        // Written to while it was read: this hash is of no version.
        if Stamp::of(&file.metadata()?) != before {
            return Err(io::Error::other("the file changed while it was hashed"));
        }
        self.record(before, hash);
        Ok(hash)
    }

    /// Writes the records back if they changed: the most recently used
    /// [`MAX_RECORDS`]. Failing to is not an error worth reporting: the
    /// next run hashes again.
    pub fn save(&mut self) -> io::Result<()> {
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        if !self.loaded && !self.pending.is_empty() {
            let len = fs::metadata(&path).map_or(0, |m| m.len());
            if len <= MAX_FILE_LEN / 2 {
                return self.append(&path);
            }
            // Grown past its bound: read, and written back bounded.
            self.load();
        }
        if !self.changed {
            return Ok(());
        }
        let mut records: Vec<&Record> = self.records.values().collect();
        if records.len() > MAX_RECORDS {
            records.sort_unstable_by_key(|r| std::cmp::Reverse(r.used));
            records.truncate(MAX_RECORDS);
        }
        let mut text = String::with_capacity(records.len() * 110 + HEADER.len() + 1);
        text.push_str(HEADER);
        text.push('\n');
        for record in records {
            text.push_str(&format_record(record));
            text.push('\n');
        }
        if let Some(dir) = path.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let temp = path.with_extension(format!("tmp.{}", std::process::id()));
        let written = File::create(&temp)
            .and_then(|mut file| file.write_all(text.as_bytes()))
            .and_then(|()| fs::rename(&temp, &path));
        if written.is_err() {
            let _ = fs::remove_file(&temp);
        }
        self.changed = false;
        written
    }

    /// Appends the records added to the file, in one write (starting the
    /// file if there is none).
    fn append(&mut self, path: &Path) -> io::Result<()> {
        if let Some(dir) = path.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let mut text = String::new();
        if file.metadata()?.len() == 0 {
            text.push_str(HEADER);
            text.push('\n');
        }
        for record in self.pending.drain(..) {
            text.push_str(&format_record(&record));
            text.push('\n');
        }
        file.write_all(text.as_bytes())
    }
}

fn format_record(record: &Record) -> String {
    let s = &record.stamp;
    format!(
        "{} {} {} {} {} {} {} {} {}",
        s.dev,
        s.ino,
        s.size,
        s.mtime,
        s.mtime_nsec,
        s.ctime,
        s.ctime_nsec,
        record.used,
        blake3::Hash::from_bytes(record.hash).to_hex()
    )
}

fn parse(line: &str) -> Option<Record> {
    let mut fields = line.split(' ');
    let mut number = || fields.next()?.parse::<u64>().ok();
    let (dev, ino, size) = (number()?, number()?, number()?);
    let mut signed = || i64::try_from(number()?).ok();
    let (mtime, mtime_nsec, ctime, ctime_nsec) = (signed()?, signed()?, signed()?, signed()?);
    let used = number()?;
    let hash = blake3::Hash::from_hex(fields.next()?).ok()?;
    if fields.next().is_some() {
        return None;
    }
    Some(Record {
        stamp: Stamp {
            dev,
            ino,
            size,
            mtime,
            mtime_nsec,
            ctime,
            ctime_nsec,
        },
        hash: *hash.as_bytes(),
        used,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unchanged_file_is_hashed_once_across_runs() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, b"first").unwrap();
        let store = dir.path().join("cache/framekit/hashes");

        let mut first = LocalHashes::at(Some(store.clone()));
        assert_eq!(
            first.hash_of(&file).unwrap(),
            *blake3::hash(b"first").as_bytes()
        );
        assert_eq!(
            first.hash_of(&file).unwrap(),
            *blake3::hash(b"first").as_bytes()
        );
        assert_eq!(first.hashed(), 1);
        first.save().unwrap();

        let mut second = LocalHashes::at(Some(store.clone()));
        assert_eq!(
            second.hash_of(&file).unwrap(),
            *blake3::hash(b"first").as_bytes()
        );
        assert_eq!(second.hashed(), 0);

        // Rewritten, even with the same size: read again.
        fs::write(&file, b"other").unwrap();
        assert_eq!(
            second.hash_of(&file).unwrap(),
            *blake3::hash(b"other").as_bytes()
        );
        assert_eq!(second.hashed(), 1);
    }

    #[test]
    fn a_record_is_used_only_for_the_same_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, b"x").unwrap();
        let stamp = Stamp::of(&fs::metadata(&file).unwrap());
        let mut hashes = LocalHashes::at(None);
        hashes.record(stamp, [7; 32]);
        assert_eq!(hashes.lookup(&stamp), Some([7; 32]));
        let touched = Stamp {
            ctime_nsec: stamp.ctime_nsec + 1,
            ..stamp
        };
        assert_eq!(hashes.lookup(&touched), None);
        // The record believed: a hash that is not the file's own.
        assert_eq!(hashes.hash_of(&file).unwrap(), [7; 32]);
    }

    #[test]
    fn damaged_files_and_lines_are_no_records() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("hashes");
        let file = dir.path().join("f");
        fs::write(&file, b"x").unwrap();
        let stamp = Stamp::of(&fs::metadata(&file).unwrap());
        let good = format_record(&Record {
            stamp,
            hash: [1; 32],
            used: 3,
        });
        fs::write(
            &store,
            format!("{HEADER}\n1 2 3\n{good} extra\nnot a record\n{good}\n"),
        )
        .unwrap();
        let mut hashes = LocalHashes::at(Some(store.clone()));
        assert_eq!(hashes.lookup(&stamp), Some([1; 32]));
        fs::write(&store, format!("something else\n{good}\n")).unwrap();
        assert_eq!(LocalHashes::at(Some(store)).lookup(&stamp), None);
    }

    #[test]
    fn only_the_most_recently_used_records_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("hashes");
        let stamp = |ino| Stamp {
            dev: 1,
            ino,
            size: 0,
            mtime: 0,
            mtime_nsec: 0,
            ctime: 0,
            ctime_nsec: 0,
        };
        let mut old = LocalHashes::at(Some(store.clone()));
        for ino in 0..MAX_RECORDS as u64 {
            old.record(stamp(ino), [0; 32]);
        }
        old.save().unwrap();
        let mut new = LocalHashes::at(Some(store.clone()));
        new.now += 1;
        // Used again in this run, and one more: the others are older.
        assert!(new.lookup(&stamp(5)).is_some());
        new.record(stamp(u64::MAX), [9; 32]);
        new.save().unwrap();
        let mut last = LocalHashes::at(Some(store));
        last.load();
        assert_eq!(last.records.len(), MAX_RECORDS);
        assert!(last.lookup(&stamp(5)).is_some());
        assert_eq!(last.lookup(&stamp(u64::MAX)), Some([9; 32]));
    }
}

#[cfg(test)]
mod append_tests {
    use super::*;

    #[test]
    fn records_added_without_a_lookup_are_appended_and_found_later() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("c/hashes");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        fs::write(&a, b"a").unwrap();
        fs::write(&b, b"b").unwrap();
        for (path, hash) in [(&a, [1; 32]), (&b, [2; 32])] {
            let mut run = LocalHashes::at(Some(store.clone()));
            run.record(Stamp::of(&fs::metadata(path).unwrap()), hash);
            run.save().unwrap();
            assert!(!run.loaded, "appending reads nothing");
        }
        let text = fs::read_to_string(&store).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
        let mut later = LocalHashes::at(Some(store));
        assert_eq!(later.hash_of(&a).unwrap(), [1; 32]);
        assert_eq!(later.hash_of(&b).unwrap(), [2; 32]);
        assert_eq!(later.hashed(), 0);
    }
}
