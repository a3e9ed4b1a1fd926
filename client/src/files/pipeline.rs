//! Buffers circulating between two threads: one on the network, the other
//! on the disk and the hashing.

use std::sync::mpsc;

/// Size of the buffers file bodies go through: small enough to stay in a
/// core's L2 cache from the copy to the hashing and the next copy.
pub(super) const BODY_CHUNK: usize = 256 * 1024;

/// Buffers circulating between the network and the disk.
const PIPELINE_BUFFERS: usize = 4;

/// The channels of a two-stage pipeline: full buffers one way (with how
/// much of each holds data), empty ones back.
pub(super) struct Pipeline {
    pub(super) to_full: mpsc::SyncSender<(Vec<u8>, usize)>,
    pub(super) full: mpsc::Receiver<(Vec<u8>, usize)>,
    pub(super) to_empty: mpsc::SyncSender<Vec<u8>>,
    pub(super) empty: mpsc::Receiver<Vec<u8>>,
}

impl Pipeline {
    /// The pipeline for a body of `size` bytes, every buffer waiting in
    /// the empty channel.
    pub(super) fn new(size: u64) -> Self {
        let len = usize::try_from(size).map_or(BODY_CHUNK, |n| n.clamp(1, BODY_CHUNK));
        let count = if size > len as u64 {
            PIPELINE_BUFFERS
        } else {
            1
        };
        let (to_full, full) = mpsc::sync_channel(count);
        let (to_empty, empty) = mpsc::sync_channel(count);
        for _ in 0..count {
            let _ = to_empty.send(vec![0u8; len]);
        }
        Pipeline {
            to_full,
            full,
            to_empty,
            empty,
        }
    }
}
