//! Listings: the files under a prefix, the tree under a directory, and
//! the description of one file.

use super::{Session, State, check_name};
use crate::error::{ClientError, ProtocolError};
use framekit_transfer::{Entry, List, Operation, Request, Response, Stat, Tree};
use std::io::{Read, Write};

/// One thing below a directory, as the server lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeEntry {
    /// A directory, by its full name.
    Dir(String),
    /// A regular file.
    File(Entry),
}

impl<S: Read + Write> Session<S> {
    /// Lists everything below the directory `dir` (the whole root if
    /// empty), calling `each` with every directory and file as it
    /// arrives, in the server's order. Returns the number of entries.
    ///
    /// The names are the server's: check them before using them (as
    /// [`crate::files`] does). An error returned by `each` stops the
    /// listing and is returned; the session is then unusable.
    pub fn tree(
        &mut self,
        dir: &str,
        mut each: impl FnMut(TreeEntry) -> Result<(), ClientError>,
    ) -> Result<u64, ClientError> {
        if !dir.is_empty() {
            check_name(dir)?;
        }
        self.begin()?;
        let request = Request::Tree(Tree {
            dir: dir.to_owned(),
        });
        self.send_request(&request)?;
        let mut received = 0u64;
        loop {
            match self.receive()? {
                Response::Entry(entry) => {
                    received += 1;
                    each(TreeEntry::File(entry))?;
                }
                Response::Directory { name } => {
                    received += 1;
                    each(TreeEntry::Dir(name))?;
                }
                Response::ListEnd { count } => return self.list_end(count, received),
                other => {
                    return Err(self.refused_or_unexpected(
                        Operation::Tree,
                        "Directory, Entry or ListEnd",
                        other,
                    ));
                }
            }
        }
    }

    /// Lists the files whose names start with `prefix` (every file if it is
    /// empty), calling `each` with every entry as it arrives, in the
    /// server's order. Returns the number of entries.
    ///
    /// An error returned by `each` stops the listing and is returned; the
    /// session is then unusable (the rest of the listing is unread).
    pub fn list(
        &mut self,
        prefix: &str,
        mut each: impl FnMut(Entry) -> Result<(), ClientError>,
    ) -> Result<u64, ClientError> {
        self.begin()?;
        let request = Request::List(List {
            prefix: prefix.to_owned(),
        });
        self.send_request(&request)?;
        let mut received = 0u64;
        loop {
            match self.receive()? {
                Response::Entry(entry) => {
                    received += 1;
                    each(entry)?;
                }
                Response::ListEnd { count } => return self.list_end(count, received),
                other => {
                    return Err(self.refused_or_unexpected(
                        Operation::List,
                        "Entry or ListEnd",
                        other,
                    ));
                }
            }
        }
    }

    /// The end of a listing: the exchange is over; the count announced
    /// must be the count received.
    fn list_end(&mut self, count: u64, received: u64) -> Result<u64, ClientError> {
        self.state = State::Ready;
        if count != received {
            return Err(ProtocolError::ListCount {
                announced: count,
                received,
            }
            .into());
        }
        Ok(count)
    }

    /// Describes one file.
    pub fn stat(&mut self, name: &str) -> Result<Entry, ClientError> {
        check_name(name)?;
        let request = Request::Stat(Stat {
            name: name.to_owned(),
        });
        self.exchange(&request, "Entry", |response| match response {
            Response::Entry(entry) => Ok(entry),
            other => Err(other),
        })
    }
}
