//! The local side of transfers: reading the files a put sends, saving what
//! a get receives, and resuming either after an interruption. The protocol
//! itself is [`crate::session`]'s.
//!
//! - `source.rs`: a file to upload, opened, read whole (small files) or
//!   read and hashed on another thread (the others), and its resume key.
//! - `upload.rs`: [`put_file`] and [`put_small_files`] drive a session's
//!   uploads from sources.
//! - `staging.rs`: where a download is written: `DEST.part` next to the
//!   destination, described by `DEST.part.meta`, written and hashed on
//!   another thread, then flushed and renamed into place.
//! - `download.rs`: [`get_file`] drives a session's download into a
//!   staging; where downloads and downloaded directories go.
//! - `fetch.rs`: [`get_small_files`] keeps many gets of small files in
//!   flight and saves what arrives in batches;
//!   `commit.rs` saves a batch durably in a few journal commits.
//! - `plan.rs`: what a put of files and directories sends, in order.
//! - `hashes.rs`: the hashes of local files kept between runs, so that
//!   comparing unchanged files with the server's reads nothing.
//!
//! An upload checks that the file ends exactly where its size said it
//! would. A file over 64 KiB is sent with a resume key, derived from its
//! name, size, modification time and first and last blocks: if the upload
//! is interrupted, the server keeps what it received, and the next put of
//! the same file under the same name sends only the rest.
//!
//! A download is renamed into place only after the hash of the whole file
//! has been verified and its content flushed to disk: there is never a
//! partial or unverified file under the destination's name. If it is
//! interrupted, the next get of the same name to the same destination asks
//! the server for the rest only, provided the remote file is still the
//! same version.

mod commit;
mod download;
mod fetch;
pub mod hashes;
mod pipeline;
pub(crate) mod plan;
mod source;
mod staging;
mod upload;

pub use download::{Saved, destination, get_file};
pub(crate) use download::{components_below, directory_destination, make_real_dir, prepare_path};
pub use fetch::{SMALL_GET, SmallGet, get_small_files};
pub use source::{Source, remote_name};
pub use staging::Staging;
pub(crate) use upload::{Attempt, PutFailure, put_file_attempt};
pub use upload::{SMALL_FILE, SmallFile, Uploaded, put_file, put_small_files};

/// How to transfer a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Replace an existing file on the receiving side.
    pub force: bool,
    /// Continue an interrupted transfer, and let this one be continued.
    pub resume: bool,
}
