//! Listings of the local directory in name order, in bounded memory.
//!
//! A listing must come out in byte order of the full names, and sorting a
//! directory needs all of its names at once: a directory of 300,000 files
//! held whole cost 42 MB per listing, for as long as its client took to
//! read it. Here each directory is read in passes instead: one pass reads
//! the whole directory (`getdents`, no allocation per entry) and keeps only
//! the smallest names after where the previous pass stopped, as many as fit
//! the listing's budget. The listing sends those, then makes the next
//! pass. A directory of `n` entries costs about `n * n / k`
//! entries read when `k` names fit the budget; memory never grows past the
//! budget, whatever the directory holds and however slowly the client
//! reads.
//!
//! The budget comes from a pool shared by all listings ([`ListingMemory`]):
//! a listing alone reads a directory of 300,000 files in a few passes
//! (0.8 s, release build, tmpfs), while many at once each make do with the
//! smallest budget, so that all of them together hold a bounded amount:
//! 64 listings of that directory whose clients never read took the server
//! to a peak of 34 MiB (see docs/BENCHMARKS.md). Memory freed between
//! passes is reused, not given back and taken again: taking buffers anew
//! for each pass took the same test to 51 MiB.
//!
//! Between the steps of a listing nothing but its state is held: the names
//! still to send of each directory on the way down, the last name sent in
//! each, and one open handle on the directory listed. Directories below it
//! are opened again, one component at a time and without following
//! symlinks, at every step, so that a directory replaced meanwhile by a
//! link is not followed, and so that a deep tree does not hold a file
//! descriptor per level.

use crate::storage::{Found, StoreError};
use framekit_transfer::{Entry, MAX_NAME_LEN, RESERVED_NAME, validate_name};
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, RawDir, SeekFrom};
use rustix::io::Errno;
use std::io;
use std::mem::MaybeUninit;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The memory held by all listings, and how much each may hold.
#[derive(Debug)]
pub(super) struct ListingMemory {
    held: AtomicUsize,
    pool: usize,
    least: usize,
    most: usize,
}

impl Default for ListingMemory {
    fn default() -> Self {
        ListingMemory::with_limits(POOL, LEAST, MOST)
    }
}

impl ListingMemory {
    /// A pool of `pool` bytes, of which a listing takes at least `least`
    /// and at most `most`.
    pub(super) fn with_limits(pool: usize, least: usize, most: usize) -> Self {
        ListingMemory {
            held: AtomicUsize::new(0),
            pool,
            least,
            most,
        }
    }

    /// The budget of a listing that holds `own` bytes now.
    fn budget(&self, own: usize) -> usize {
        let others = self.held.load(Ordering::Relaxed).saturating_sub(own);
        self.pool
            .saturating_sub(others)
            .clamp(self.least, self.most.max(self.least))
    }

    /// A listing's holding went from `before` to `now` bytes.
    fn account(&self, before: usize, now: usize) {
        if now >= before {
            self.held.fetch_add(now - before, Ordering::Relaxed);
        } else {
            self.held.fetch_sub(before - now, Ordering::Relaxed);
        }
    }

    /// The memory all listings hold now.
    #[cfg(test)]
    pub(super) fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }
}

/// The memory all listings may hold together for the names they have read
/// and not sent yet, beyond [`LEAST`] each.
const POOL: usize = 8 << 20;

/// The memory one listing may always hold, whatever the others hold: a
/// pass keeps about 13,000 names of 11 bytes.
const LEAST: usize = 256 << 10;

/// The most memory one listing may hold, so that one slow reader cannot
/// pin the whole pool: about 110,000 names of 11 bytes.
const MOST: usize = 2 << 20;

/// Entries found in one step of a listing, at most.
pub(super) const STEP: usize = 256;

/// Memory counted for each name kept, besides its bytes: its place in the
/// index.
const PER_NAME: usize = 8;

/// Bytes read from a directory per `getdents` call.
const DIRENT_BUFFER: usize = 32 * 1024;

/// Names read by a pass, sorted: the bytes of all of them in one buffer,
/// with the start and length of each. A directory's name ends with `/`, so
/// that comparing names compares full paths in byte order ("a.txt" < "a/b"
/// because '.' < '/').
#[derive(Debug, Default)]
struct Names {
    bytes: Vec<u8>,
    spans: Vec<(u32, u32)>,
    /// The first name not handed out yet.
    next: usize,
}

impl Names {
    fn get(&self, i: usize) -> Option<&[u8]> {
        let &(start, len) = self.spans.get(i)?;
        self.bytes
            .get(start as usize..start as usize + len as usize)
    }

    /// The memory held.
    fn held(&self) -> usize {
        self.bytes.capacity() + self.spans.capacity() * PER_NAME
    }

    /// Memory counted for the names held, as the budget sees it.
    fn used(&self) -> usize {
        self.bytes.len() + self.spans.len() * PER_NAME
    }

    fn push(&mut self, name: &[u8], dir: bool, budget: usize) {
        let len = name.len() + usize::from(dir);
        grow(&mut self.bytes, len, budget);
        grow(&mut self.spans, 1, budget / PER_NAME);
        // Names are at most 255 bytes and buffers at most the budget: the
        // offsets fit.
        let start = u32::try_from(self.bytes.len()).unwrap_or(u32::MAX);
        self.bytes.extend_from_slice(name);
        if dir {
            self.bytes.push(b'/');
        }
        self.spans
            .push((start, u32::try_from(len).unwrap_or(u32::MAX)));
    }

    fn sort(&mut self) {
        let bytes = &self.bytes;
        let key = |&(start, len): &(u32, u32)| {
            bytes
                .get(start as usize..start as usize + len as usize)
                .unwrap_or_default()
        };
        self.spans.sort_unstable_by(|a, b| key(a).cmp(key(b)));
    }

    /// Keeps the names `from..to` (in their current order, which must be
    /// sorted), in place: the buffers keep their size.
    fn keep(&mut self, from: usize, to: usize) {
        self.spans.truncate(to);
        self.spans.drain(..from.min(self.spans.len()));
        // Moved to the front in the order they lie, so that no name is
        // overwritten before it is moved.
        self.spans.sort_unstable_by_key(|&(start, _)| start);
        let mut end = 0usize;
        for span in &mut self.spans {
            let (start, len) = (span.0 as usize, span.1 as usize);
            self.bytes.copy_within(start..start + len, end);
            span.0 = u32::try_from(end).unwrap_or(u32::MAX);
            end += len;
        }
        self.bytes.truncate(end);
        self.sort();
        self.next = 0;
    }

    /// Drops the names handed out, and those past the first `count` of
    /// the others, and gives back the memory they took.
    fn trim(&mut self, count: usize) {
        let end = self.spans.len().min(self.next + count);
        self.keep(self.next, end);
        self.bytes.shrink_to_fit();
        self.spans.shrink_to_fit();
    }

    fn remaining(&self) -> usize {
        self.spans.len() - self.next
    }
}

/// Makes room in `v` for `more` items, growing it by doubling but not
/// past `limit` items (unless `more` needs it).
fn grow<T>(v: &mut Vec<T>, more: usize, limit: usize) {
    let needed = v.len() + more;
    if needed > v.capacity() {
        let target = (v.capacity() * 2).max(64).min(limit).max(needed);
        v.reserve_exact(target - v.len());
    }
}

/// One directory on the way down.
#[derive(Debug)]
struct Level {
    /// Its name in its parent (empty for the directory listed).
    component: String,
    /// Its full name with a `/` appended, or empty for the root.
    path: String,
    /// Names read and not visited yet.
    names: Names,
    /// Whether `names` holds every name left to visit: a pass was made
    /// and was not cut short by the budget (nor were its names since).
    complete: bool,
    /// The last name visited: the next pass starts after it.
    last: Vec<u8>,
}

impl Level {
    fn new(component: String, path: String) -> Level {
        Level {
            component,
            path,
            names: Names::default(),
            complete: false,
            last: Vec::new(),
        }
    }

    fn held(&self) -> usize {
        self.names.held() + self.path.capacity() + self.component.capacity() + self.last.capacity()
    }
}

/// A listing in progress: see the module's documentation.
#[derive(Debug)]
pub(super) struct Walk {
    /// The directory listed, open for reading.
    base: OwnedFd,
    /// Only names starting with this are reported.
    prefix: String,
    /// Whether directories are reported.
    dirs: bool,
    /// The directories on the way down, the one listed first.
    stack: Vec<Level>,
    /// The most memory `stack` may hold in this step.
    budget: usize,
    /// Where the memory comes from.
    memory: Arc<ListingMemory>,
    /// The memory counted as held in `memory`.
    accounted: usize,
}

impl Drop for Walk {
    fn drop(&mut self) {
        self.memory.account(self.accounted, 0);
    }
}

/// Whether an error means that what was being looked at is gone (or was
/// replaced by something that is not followed): it is skipped.
fn vanished(errno: Errno) -> bool {
    matches!(errno, Errno::NOENT | Errno::NOTDIR | Errno::LOOP)
}

/// Opens the directory `name` in `parent` for reading, without following
/// a symlink. `None` if it is gone or is no longer a directory.
fn open_below(parent: impl AsFd, name: &str) -> io::Result<Option<OwnedFd>> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::openat(parent, name, flags, Mode::empty()) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if vanished(e) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// What a pass keeps of a directory.
struct Pass<'a> {
    /// The directory's full name with a `/` appended, or empty for the root.
    path: &'a str,
    /// Only names after this (in its directory) are kept.
    after: &'a [u8],
    /// What of the listing's prefix is left past `path`.
    prefix: &'a [u8],
    /// Whether the directory is the served root, where `.framekit` lives.
    root: bool,
    /// The most memory the names kept may take.
    budget: usize,
}

impl Pass<'_> {
    /// Whether a name (a directory's with its `/`) belongs in the listing,
    /// or may lead to names that do.
    fn wanted(&self, key: &[u8], dir: bool) -> bool {
        if key <= self.after || self.path.len() + key.len() > MAX_NAME_LEN + 1 {
            return false;
        }
        key.starts_with(self.prefix) || (dir && self.prefix.starts_with(key))
    }

    /// Reads the directory `fd` whole and puts in `names` (whose buffers
    /// are reused) the smallest names that are wanted and fit the budget,
    /// sorted. Returns whether they are all the wanted names.
    fn read(&self, fd: &OwnedFd, names: &mut Names) -> io::Result<bool> {
        rustix::fs::seek(fd, SeekFrom::Start(0))?;
        let mut buf = vec![MaybeUninit::<u8>::uninit(); DIRENT_BUFFER];
        let mut entries = RawDir::new(fd, &mut buf);
        names.bytes.clear();
        names.spans.clear();
        names.next = 0;
        // Once names had to be dropped, only names below the smallest one
        // dropped are taken.
        let mut below: Option<Vec<u8>> = None;
        let mut key = Vec::with_capacity(256);
        while let Some(entry) = entries.next() {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." || (self.root && name == RESERVED_NAME.as_bytes()) {
                continue;
            }
            if std::str::from_utf8(name).is_err() {
                continue;
            }
            let dir = match entry.file_type() {
                FileType::Directory => true,
                FileType::RegularFile => false,
                FileType::Unknown => {
                    match rustix::fs::statat(fd, entry.file_name(), AtFlags::SYMLINK_NOFOLLOW) {
                        Ok(stat) => match FileType::from_raw_mode(stat.st_mode) {
                            FileType::Directory => true,
                            FileType::RegularFile => false,
                            _ => continue,
                        },
                        Err(e) if vanished(e) => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
                _ => continue,
            };
            key.clear();
            key.extend_from_slice(name);
            if dir {
                key.push(b'/');
            }
            if !self.wanted(&key, dir)
                || below
                    .as_deref()
                    .is_some_and(|below| key.as_slice() >= below)
            {
                continue;
            }
            names.push(name, dir, self.budget);
            if names.used() > self.budget {
                // Keep the smaller half (at least one name): the others
                // come in a later pass.
                names.sort();
                let keep = (names.spans.len() / 2).max(1);
                below = names.get(keep).map(<[u8]>::to_vec);
                names.keep(0, keep);
            }
        }
        names.sort();
        Ok(below.is_none())
    }
}

impl Walk {
    /// A listing of the directory `dir` (open), whose full name is `path`
    /// (empty for the root, else ending with `/`), reporting the files
    /// whose names start with `prefix`, and the directories too if
    /// `dirs`, within a budget from `memory`.
    pub(super) fn new(
        dir: impl AsFd,
        path: String,
        prefix: String,
        dirs: bool,
        memory: Arc<ListingMemory>,
    ) -> io::Result<Walk> {
        // The handle given may be one that cannot be read (O_PATH).
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let base = rustix::fs::openat(dir, ".", flags, Mode::empty())?;
        Ok(Walk {
            base,
            prefix,
            dirs,
            stack: vec![Level::new(String::new(), path)],
            budget: 0,
            memory,
            accounted: 0,
        })
    }

    /// Whether everything was found.
    pub(super) fn is_done(&self) -> bool {
        self.stack.is_empty()
    }

    /// The memory the listing holds besides its one open directory.
    pub(super) fn held(&self) -> usize {
        self.stack.iter().map(Level::held).sum::<usize>() + self.prefix.capacity()
    }

    /// Finds up to `limit` more entries, in order, into `out`.
    pub(super) fn step(&mut self, out: &mut Vec<Found>, limit: usize) -> Result<(), StoreError> {
        // The whole budget is counted while the step runs, so that steps
        // of other listings running meanwhile see it taken.
        self.budget = self.memory.budget(self.accounted);
        let reserved = self.budget.max(self.accounted);
        self.memory.account(self.accounted, reserved);
        let found = self.walk(out, limit);
        let held = self.held();
        self.memory.account(reserved, held);
        self.accounted = held;
        found
    }

    fn walk(&mut self, out: &mut Vec<Found>, limit: usize) -> Result<(), StoreError> {
        let mut fds = self.reopen()?;
        let (start, goal) = (out.len(), out.len() + limit);
        while out.len() < goal {
            let Some(top) = self.stack.last_mut() else {
                break;
            };
            let Some(fd) = fds.last() else {
                break;
            };
            if top.names.next < top.names.spans.len() {
                let i = top.names.next;
                top.names.next += 1;
                let Some(key) = top.names.get(i) else {
                    continue;
                };
                top.last.clear();
                top.last.extend_from_slice(key);
                let key = String::from_utf8_lossy(key).into_owned();
                match key.strip_suffix('/') {
                    Some(dir) => {
                        let dir = dir.to_owned();
                        if let Some(child) = self.enter(fd, &dir, out)? {
                            fds.push(child);
                        }
                    }
                    None => self.file(fd, &key, out)?,
                }
            } else if !top.complete {
                // What was found goes out before a directory is read.
                if out.len() > start {
                    break;
                }
                let held: usize = self.stack.iter().rev().skip(1).map(Level::held).sum();
                let budget = self.budget.saturating_sub(held).max(self.budget / 4);
                let prefix = self.prefix.as_bytes();
                let Some(Level {
                    path,
                    last,
                    names,
                    complete,
                    ..
                }) = self.stack.last_mut()
                else {
                    break;
                };
                let pass = Pass {
                    path,
                    after: last,
                    prefix: prefix.get(path.len()..).unwrap_or_default(),
                    root: path.is_empty(),
                    budget,
                };
                *complete = pass.read(fd, names)?;
            } else {
                self.stack.pop();
                fds.pop();
            }
        }
        Ok(())
    }

    /// Opens the directories on the way down again. A directory gone (or
    /// replaced by something else) is left, with what is below it.
    fn reopen(&mut self) -> Result<Vec<OwnedFd>, StoreError> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let base =
            rustix::fs::openat(&self.base, ".", flags, Mode::empty()).map_err(io::Error::from)?;
        let mut fds = vec![base];
        for depth in 1..self.stack.len() {
            let (Some(parent), Some(level)) = (fds.last(), self.stack.get(depth)) else {
                break;
            };
            match open_below(parent, &level.component)? {
                Some(fd) => fds.push(fd),
                None => {
                    self.stack.truncate(depth);
                    break;
                }
            }
        }
        Ok(fds)
    }

    /// Visits the directory `name` in the top level's directory `parent`:
    /// reports it if directories are, and returns it opened to descend
    /// into, if anything below it may be listed.
    fn enter(
        &mut self,
        parent: &OwnedFd,
        name: &str,
        out: &mut Vec<Found>,
    ) -> Result<Option<OwnedFd>, StoreError> {
        let Some(top) = self.stack.last() else {
            return Ok(None);
        };
        let full = format!("{}{name}", top.path);
        // A directory that cannot be named is left out whole.
        if validate_name(&full).is_err() {
            return Ok(None);
        }
        let Some(fd) = open_below(parent, name)? else {
            return Ok(None);
        };
        if self.dirs && full.starts_with(&self.prefix) {
            out.push(Found::Dir(full.clone()));
        }
        // Room for the level below: what is left of this one's names is cut
        // so that all levels hold at most three quarters of the budget; the
        // names dropped are read again by a later pass.
        let others: usize = self.stack.iter().rev().skip(1).map(Level::held).sum();
        if let Some(top) = self.stack.last_mut() {
            let room = (self.budget * 3 / 4).saturating_sub(others);
            if top.held() > room {
                let mut count = 0;
                let mut used = top.path.capacity() + top.component.capacity() + top.last.capacity();
                while count < top.names.remaining() {
                    let len = top.names.get(top.names.next + count).map_or(0, <[u8]>::len);
                    if used + len + PER_NAME > room {
                        break;
                    }
                    used += len + PER_NAME;
                    count += 1;
                }
                if count < top.names.remaining() {
                    top.complete = false;
                }
                top.names.trim(count);
            }
        }
        let mut path = full;
        path.push('/');
        self.stack.push(Level::new(name.to_owned(), path));
        Ok(Some(fd))
    }

    /// Reports the file `name` of the top level's directory `dir`, if it
    /// is still a regular file and its full name is one a client can use.
    fn file(&self, dir: &OwnedFd, name: &str, out: &mut Vec<Found>) -> Result<(), StoreError> {
        let Some(top) = self.stack.last() else {
            return Ok(());
        };
        let full = format!("{}{name}", top.path);
        if !full.starts_with(&self.prefix) || validate_name(&full).is_err() {
            return Ok(());
        }
        let stat = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(e) if vanished(e) => return Ok(()),
            Err(e) => return Err(io::Error::from(e).into()),
        };
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Ok(());
        }
        out.push(Found::File(Entry {
            name: full,
            size: u64::try_from(stat.st_size).unwrap_or(0),
            modified_ns: super::store::mtime_ns(
                stat.st_mtime,
                i64::try_from(stat.st_mtime_nsec).unwrap_or(0),
            ),
        }));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// A tree of files and directories with names chosen to sort in
    /// tricky ways ("a.txt" < "a/" < "a0"), some of them empty.
    fn tree(root: &Path) {
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            usize::try_from(seed >> 33).unwrap()
        };
        for i in 0..600 {
            let depth = next() % 4;
            let mut path = root.to_path_buf();
            for _ in 0..depth {
                let names = ["a", "a.b", "b", "a-", "ab", "z\u{e9}"];
                path.push(names[next() % names.len()]);
            }
            std::fs::create_dir_all(&path).unwrap();
            let file = path.join(format!(
                "f{}{}",
                next() % 50,
                ["", ".txt", "-x", "/"][i % 3]
            ));
            if !file.is_dir() {
                std::fs::write(file, b"x").unwrap();
            }
        }
        std::fs::create_dir_all(root.join("empty/deeper")).unwrap();
        std::fs::create_dir_all(root.join(RESERVED_NAME).join("staging")).unwrap();
        std::fs::write(root.join(RESERVED_NAME).join("staging/hidden"), b"h").unwrap();
    }

    /// What a listing must find: every file (and directory, for a tree)
    /// under `base`, sorted as full names with `/` after directories.
    fn expected(root: &Path, base: &str, prefix: &str, dirs: bool) -> Vec<String> {
        fn visit(dir: &Path, path: &str, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let entry = entry.unwrap();
                let name = entry.file_name().into_string().unwrap();
                if path.is_empty() && name == RESERVED_NAME {
                    continue;
                }
                if entry.file_type().unwrap().is_dir() {
                    let full = format!("{path}{name}/");
                    out.push(full.clone());
                    visit(&entry.path(), &full, out);
                } else {
                    out.push(format!("{path}{name}"));
                }
            }
        }
        let mut all = Vec::new();
        visit(&root.join(base.trim_end_matches('/')), base, &mut all);
        all.sort();
        all.into_iter()
            .filter(|name| dirs || !name.ends_with('/'))
            .filter(|name| name.trim_end_matches('/').starts_with(prefix))
            .collect()
    }

    fn memory(budget: usize) -> Arc<ListingMemory> {
        Arc::new(ListingMemory::with_limits(0, budget, budget))
    }

    fn run(walk: &mut Walk, budget: usize) -> Vec<String> {
        let mut found = Vec::new();
        let mut names = Vec::new();
        while !walk.is_done() {
            walk.step(&mut found, 7).unwrap();
            // Paths and the last name of each level come on top.
            assert!(walk.held() <= budget + 4096, "{} > {budget}", walk.held());
            names.extend(found.drain(..).map(|f| match f {
                Found::File(e) => e.name,
                Found::Dir(d) => format!("{d}/"),
            }));
        }
        names
    }

    fn open(path: &Path) -> std::fs::File {
        std::fs::File::open(path).unwrap()
    }

    #[test]
    fn listings_come_in_byte_order_whatever_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        tree(dir.path());
        for budget in [1, 64, 300, 2000, 1 << 20] {
            for prefix in ["", "a", "a/", "a.b/a", "zz"] {
                let mut walk = Walk::new(
                    open(dir.path()),
                    String::new(),
                    prefix.into(),
                    false,
                    memory(budget),
                )
                .unwrap();
                assert_eq!(
                    run(&mut walk, budget),
                    expected(dir.path(), "", prefix, false),
                    "list {prefix:?} within {budget} bytes"
                );
            }
            let mut walk = Walk::new(
                open(dir.path()),
                String::new(),
                String::new(),
                true,
                memory(budget),
            )
            .unwrap();
            assert_eq!(run(&mut walk, budget), expected(dir.path(), "", "", true));
            let mut walk = Walk::new(
                open(&dir.path().join("a")),
                "a/".into(),
                String::new(),
                true,
                memory(budget),
            )
            .unwrap();
            assert_eq!(run(&mut walk, budget), expected(dir.path(), "a/", "", true));
        }
    }

    #[test]
    fn a_directory_removed_or_replaced_by_a_link_between_steps_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        for sub in ["a", "b"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
            for i in 0..20 {
                std::fs::write(root.join(sub).join(format!("{i:02}")), b"x").unwrap();
            }
        }
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("secret"), b"s").unwrap();

        let mut walk = Walk::new(
            open(&root),
            String::new(),
            String::new(),
            false,
            memory(1 << 20),
        )
        .unwrap();
        let mut found = Vec::new();
        walk.step(&mut found, 5).unwrap();
        assert_eq!(found.len(), 5);
        // "a" goes while it is listed, "b" becomes a link out of the root.
        std::fs::remove_dir_all(root.join("a")).unwrap();
        std::fs::remove_dir_all(root.join("b")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("b")).unwrap();
        while !walk.is_done() {
            walk.step(&mut found, 5).unwrap();
        }
        let names: Vec<String> = found
            .into_iter()
            .map(|f| match f {
                Found::File(e) => e.name,
                Found::Dir(d) => d,
            })
            .collect();
        assert_eq!(names, ["a/00", "a/01", "a/02", "a/03", "a/04"]);
    }
}

#[cfg(test)]
mod pool_tests {
    use super::*;

    #[test]
    fn listings_share_a_pool_and_each_keeps_its_least() {
        let memory = ListingMemory::with_limits(1000, 100, 600);
        assert_eq!(memory.budget(0), 600);
        memory.account(0, 600);
        // Another gets what is left of the pool...
        assert_eq!(memory.budget(0), 400);
        memory.account(0, 400);
        // ...then only its least; the first keeps its own share.
        assert_eq!(memory.budget(0), 100);
        assert_eq!(memory.budget(600), 600);
        memory.account(600, 0);
        memory.account(400, 0);
        assert_eq!(memory.held(), 0);
    }
}
