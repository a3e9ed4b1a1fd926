//! Room on the disk for uploads.
//!
//! An upload is admitted only if the disk keeps at least the minimum free
//! space (`--min-free`) once it is written whole, counting what the uploads
//! in progress announced and have not written yet: a put refused for room
//! is refused before its body, not in the middle of it. When there is not
//! enough room, kept interrupted uploads are dropped, oldest first, until
//! there is; if dropping all of them would not make enough, none is
//! dropped and the put is refused with NoSpace. An upload whose size is not
//! known in advance (a stream) is admitted at the floor, and asks for room
//! as it writes, [`GROW_STEP`] at a time: it is refused with NoSpace when
//! its next step does not fit.

use super::partial::{Dropped, Partials};
use crate::storage::StoreError;
use cap_std::fs::Dir;
use framekit_transfer::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// How much of the disk uploads must leave free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinFree {
    /// This many bytes.
    Bytes(u64),
    /// This share of the file system's size, in hundredths of a percent
    /// (100 is 1%).
    Share(u16),
    /// A share of the file system's size, but at most so many bytes.
    ShareAtMost {
        /// The share, in hundredths of a percent.
        share: u16,
        /// The most bytes.
        bytes: u64,
    },
}

impl Default for MinFree {
    /// 1% of the file system, at most 256 MiB: a small disk keeps a
    /// proportionate margin, a large one enough for the system to go on
    /// (its logs, its temporary files) without holding back gigabytes.
    fn default() -> Self {
        MinFree::ShareAtMost {
            share: 100,
            bytes: 256 << 20,
        }
    }
}

impl MinFree {
    /// The bytes to leave free on a file system of `total` bytes.
    pub fn bytes(self, total: u64) -> u64 {
        match self {
            MinFree::Bytes(bytes) => bytes,
            MinFree::Share(share) => {
                let bytes = u128::from(total) * u128::from(share.min(10_000)) / 10_000;
                u64::try_from(bytes).unwrap_or(u64::MAX)
            }
            MinFree::ShareAtMost { share, bytes } => MinFree::Share(share).bytes(total).min(bytes),
        }
    }
}

/// How much more room an upload asks for when it writes beyond what it
/// was admitted for.
pub(super) const GROW_STEP: u64 = 8 << 20;

/// The room uploads take on the disk.
#[derive(Debug)]
pub(super) struct Space {
    min_free: MinFree,
    /// The served root: its file system is the one measured.
    root: Dir,
    /// The kept uploads, dropped to make room.
    partials: Arc<Partials>,
    /// Bytes that uploads in progress announced and have not written yet.
    outstanding: AtomicU64,
    /// Admissions are taken one at a time: the check and the reservation
    /// are one step.
    admitting: Mutex<()>,
}

impl Space {
    pub(super) fn new(min_free: MinFree, root: Dir, partials: Arc<Partials>) -> Space {
        Space {
            min_free,
            root,
            partials,
            outstanding: AtomicU64::new(0),
            admitting: Mutex::new(()),
        }
    }

    /// Bytes available to uploads on the file system of `root`, and its
    /// size.
    pub(super) fn available(root: &Dir) -> std::io::Result<(u64, u64)> {
        let stat = rustix::fs::fstatvfs(root)?;
        Ok((
            stat.f_bavail.saturating_mul(stat.f_frsize),
            stat.f_blocks.saturating_mul(stat.f_frsize),
        ))
    }

    /// Admits an upload that still needs `need` bytes, dropping kept
    /// uploads (but the one kept under `spare`, which it continues) oldest
    /// first if that makes room; refuses it with [`StoreError::NoSpace`]
    /// if nothing does.
    pub(super) fn admit(
        self: &Arc<Self>,
        need: u64,
        spare: Option<&Hash>,
    ) -> Result<Reservation, StoreError> {
        let partials = &self.partials;
        let _turn = self.admitting.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let (available, total) = Space::available(&self.root)?;
            let floor = self.min_free.bytes(total);
            let outstanding = self.outstanding.load(Ordering::Acquire);
            let room = available.saturating_sub(outstanding);
            let wanted = floor.saturating_add(need);
            if room >= wanted {
                self.outstanding.fetch_add(need, Ordering::AcqRel);
                return Ok(Reservation {
                    space: Arc::clone(self),
                    left: need,
                });
            }
            // Kept uploads are dropped only if that is enough.
            if room.saturating_add(partials.kept_bytes(spare)) < wanted
                || partials.drop_oldest(Dropped::MinFree, spare).is_none()
            {
                return Err(StoreError::NoSpace);
            }
        }
    }

    fn release(&self, bytes: u64) {
        let _ = self
            .outstanding
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(bytes))
            });
    }
}

/// The room an upload in progress has been promised and not written yet;
/// given back as it is written, and the rest when it ends.
#[derive(Debug)]
pub(super) struct Reservation {
    space: Arc<Space>,
    left: u64,
}

impl Reservation {
    /// Adds `more` bytes to the room promised, if the disk has them (see
    /// [`Space::admit`]); [`StoreError::NoSpace`] if it does not.
    pub(super) fn grow(&mut self, more: u64, spare: Option<&Hash>) -> Result<(), StoreError> {
        let mut extra = self.space.admit(more, spare)?;
        self.left = self.left.saturating_add(extra.left);
        extra.left = 0;
        Ok(())
    }

    /// Bytes promised and not written yet.
    pub(super) fn left(&self) -> u64 {
        self.left
    }

    /// `bytes` of the upload were written.
    pub(super) fn wrote(&mut self, bytes: u64) {
        let written = bytes.min(self.left);
        self.left -= written;
        self.space.release(written);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.space.release(self.left);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_free_is_bytes_or_a_share_of_the_file_system() {
        assert_eq!(MinFree::Bytes(5).bytes(1000), 5);
        assert_eq!(MinFree::Share(100).bytes(1_000_000), 10_000);
        assert_eq!(MinFree::Share(50).bytes(1_000_000), 5_000);
        assert_eq!(MinFree::Share(10_000).bytes(u64::MAX), u64::MAX);
        assert_eq!(MinFree::Share(u16::MAX).bytes(1000), 1000);
        // The default: 1%, at most 256 MiB.
        assert_eq!(MinFree::default().bytes(20 << 20), 209_715);
        assert_eq!(MinFree::default().bytes(1 << 40), 256 << 20);
    }
}
