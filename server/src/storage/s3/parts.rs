//! How a file is cut into the parts of a multipart upload, and how the
//! BLAKE3 hash of the whole file is put together from what each part left.
//!
//! Parts have a power-of-two size `P` (at least [`MIN_PART`]), so that each
//! part is a whole subtree of BLAKE3's tree: hashing part `i` alone, with
//! its input offset set to `i * P`, gives its chaining value, and the
//! chaining values merge into the file's hash along the tree. A server that
//! continues an upload another one started needs only the chaining values
//! of the parts already stored (kept in the upload's state), not their
//! bytes.

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, left_subtree_len, merge_subtrees_non_root, merge_subtrees_root,
};

/// The smallest part: a power of two over S3's 5 MiB minimum.
pub(super) const MIN_PART: u64 = 8 << 20;

/// S3's largest number of parts in one upload.
const MAX_PARTS: u64 = 10_000;

/// The part size for a file of `size` bytes: [`MIN_PART`], or the
/// smallest power of two that keeps the file within S3's 10,000 parts.
pub(super) fn part_size(size: u64) -> u64 {
    size.div_ceil(MAX_PARTS)
        .max(MIN_PART)
        .checked_next_power_of_two()
        .unwrap_or(1 << 63)
}

/// How many parts a file of `size` bytes has (at least one).
pub(super) fn part_count(size: u64, part: u64) -> u64 {
    size.div_ceil(part).max(1)
}

/// The length of part `index` of a file of `size` bytes.
pub(super) fn part_len(size: u64, part: u64, index: u64) -> u64 {
    size.saturating_sub(index.saturating_mul(part)).min(part)
}

/// Hashes one part as the subtree it is in the file's tree.
#[derive(Debug, Clone)]
pub(super) struct PartHasher(blake3::Hasher);

impl PartHasher {
    /// For the part that starts at `offset` (a multiple of the part size).
    pub(super) fn new(offset: u64) -> PartHasher {
        let mut hasher = blake3::Hasher::new();
        hasher.set_input_offset(offset);
        PartHasher(hasher)
    }

    pub(super) fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// The part's chaining value (the part must not be empty).
    pub(super) fn finish(&self) -> ChainingValue {
        self.0.finalize_non_root()
    }

    /// The hash of the first part as a whole file (when it is the only
    /// one).
    pub(super) fn root(&self) -> blake3::Hash {
        self.0.finalize()
    }
}

/// The hash of a file of `size` bytes (more than one part of `part`
/// bytes) from the chaining values of its parts, in order; `None` if
/// their number is not the file's number of parts.
pub(super) fn merge(size: u64, part: u64, cvs: &[ChainingValue]) -> Option<blake3::Hash> {
    fn subtree(start: u64, len: u64, part: u64, cvs: &[ChainingValue]) -> Option<ChainingValue> {
        if len <= part {
            return cvs.get(usize::try_from(start / part).ok()?).copied();
        }
        let left = left_subtree_len(len);
        Some(merge_subtrees_non_root(
            &subtree(start, left, part, cvs)?,
            &subtree(start + left, len - left, part, cvs)?,
            Mode::Hash,
        ))
    }
    if size <= part || u64::try_from(cvs.len()).ok()? != part_count(size, part) {
        return None;
    }
    let left = left_subtree_len(size);
    Some(merge_subtrees_root(
        &subtree(0, left, part, cvs)?,
        &subtree(left, size - left, part, cvs)?,
        Mode::Hash,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251).to_le_bytes()[0]).collect()
    }

    #[test]
    fn parts_hashed_apart_merge_into_the_hash_of_the_whole() {
        for part in [1024u64, 4096, 1 << 16] {
            for size in [
                part + 1,
                2 * part,
                3 * part - 1,
                5 * part + 17,
                8 * part,
                13 * part + 1,
            ] {
                let bytes = data(usize::try_from(size).unwrap());
                let cvs: Vec<ChainingValue> = bytes
                    .chunks(usize::try_from(part).unwrap())
                    .enumerate()
                    .map(|(i, chunk)| {
                        let mut hasher = PartHasher::new(i as u64 * part);
                        hasher.update(chunk);
                        hasher.finish()
                    })
                    .collect();
                assert_eq!(
                    merge(size, part, &cvs),
                    Some(blake3::hash(&bytes)),
                    "{size} bytes in parts of {part}"
                );
                assert_eq!(merge(size, part, &cvs[1..]), None);
            }
        }
    }

    #[test]
    fn part_sizes_are_powers_of_two_within_ten_thousand_parts() {
        assert_eq!(part_size(0), MIN_PART);
        assert_eq!(part_size(64 << 30), MIN_PART);
        assert_eq!(part_size(100 << 30), 16 << 20);
        let size = 5u64 << 40;
        assert!(part_count(size, part_size(size)) <= MAX_PARTS);
        assert_eq!(part_count(0, MIN_PART), 1);
        assert_eq!(part_len(20 << 20, MIN_PART, 2), 4 << 20);
        assert_eq!(part_len(20 << 20, MIN_PART, 3), 0);
    }
}
