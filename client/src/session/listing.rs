//! Listings: the files (and directories) under a prefix, the tree under a
//! directory, and the description of one name, alone or many pipelined.

use super::{Session, State, check_name, closes, unexpected};
use crate::error::{ClientError, Feature, ProtocolError};
use framekit_codec::message::to_frame;
use framekit_transfer::{
    Describe, Description, Entry, List, ListAll, Operation, Request, Response, Stat, Tree,
    validate_name,
};
use std::collections::VecDeque;
use std::io::{Read, Write};

/// At most this many descriptions are asked for ahead of their answers:
/// the answers (under 1.1 KiB each) then fit in the sockets' buffers
/// whatever the client is doing.
const DESCRIBE_WINDOW: usize = 64;

/// What a name is on the server, with the hash of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    /// A regular file, with its hash.
    File(Description),
    /// A directory, by its full name.
    Dir(String),
}

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
        let request = Request::Tree(Tree {
            dir: dir.to_owned(),
        });
        self.listing(&request, &mut each)
            .map_err(|e| e.too_old(Feature::Directories))
    }

    /// Lists the files and directories whose names start with `prefix`
    /// (everything if it is empty), calling `each` with every one as it
    /// arrives, in the server's order (byte order of the names, a
    /// directory's with a `/` appended). Returns the number of entries.
    ///
    /// An error returned by `each` stops the listing and is returned; the
    /// session is then unusable.
    pub fn list_all(
        &mut self,
        prefix: &str,
        mut each: impl FnMut(TreeEntry) -> Result<(), ClientError>,
    ) -> Result<u64, ClientError> {
        let request = Request::ListAll(ListAll {
            prefix: prefix.to_owned(),
        });
        self.listing(&request, &mut each)
            .map_err(|e| e.too_old(Feature::ListAll))
    }

    /// A listing of directories and files, to its end.
    fn listing(
        &mut self,
        request: &Request,
        each: &mut dyn FnMut(TreeEntry) -> Result<(), ClientError>,
    ) -> Result<u64, ClientError> {
        self.begin()?;
        self.send_request(request)?;
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
                        request.operation(),
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

    /// Describes one name: a file, with the BLAKE3 hash of its content
    /// (which the server may have to compute, reading the file), or a
    /// directory.
    pub fn describe(&mut self, name: &str) -> Result<Remote, ClientError> {
        check_name(name)?;
        let request = Request::Describe(Describe {
            name: name.to_owned(),
        });
        self.exchange(
            &request,
            "Described or Directory",
            |response| match response {
                Response::Described(file) => Ok(Remote::File(file)),
                Response::Directory { name } => Ok(Remote::Dir(name)),
                other => Err(other),
            },
        )
        .map_err(|e| e.too_old(Feature::Describe))
    }

    /// Describes each of `names` as [`Session::describe`] does, asking
    /// for up to 64 ahead of their answers, and calls `each` with every
    /// name's index and result, in order. A refusal of one name (not
    /// found...) is its own result; an invalid name is refused without
    /// asking.
    ///
    /// Fails as a whole, leaving the session unusable, only when the
    /// connection does: the names not reported yet were not described.
    pub fn describe_each(
        &mut self,
        names: &[String],
        mut each: impl FnMut(usize, Result<Remote, ClientError>),
    ) -> Result<(), ClientError> {
        self.begin()?;
        // The names asked for and not answered yet; `false` for one that
        // was not asked for since it is invalid.
        let mut pending: VecDeque<(usize, bool)> = VecDeque::new();
        let mut next = 0;
        while next < names.len() || !pending.is_empty() {
            let mut frames = Vec::new();
            while next < names.len() && pending.len() < DESCRIBE_WINDOW {
                let name = &names[next];
                let valid = validate_name(name).is_ok();
                if valid {
                    let request = Request::Describe(Describe { name: name.clone() });
                    let frame = to_frame(&self.config, &request).map_err(ClientError::write)?;
                    frames.extend_from_slice(&frame);
                }
                pending.push_back((next, valid));
                next += 1;
            }
            if !frames.is_empty() {
                self.send_body(&frames, Operation::Stat.into())
                    .map_err(|e| e.too_old(Feature::Describe))?;
            }
            // Half the window is answered before more are asked for, so
            // that requests keep flowing while answers are read.
            let keep = if next < names.len() {
                DESCRIBE_WINDOW / 2
            } else {
                0
            };
            while pending.len() > keep {
                let Some((i, asked)) = pending.pop_front() else {
                    break;
                };
                let name = &names[i];
                if !asked {
                    let invalid = check_name(name).err().unwrap_or(ClientError::Misuse(
                        "a name was left out of the descriptions though it is valid",
                    ));
                    each(i, Err(invalid));
                    continue;
                }
                let result = match self.receive()? {
                    Response::Described(file) => Ok(Remote::File(file)),
                    Response::Directory { name } => Ok(Remote::Dir(name)),
                    Response::Error(reply) if closes(reply.code) => {
                        return Err(ClientError::Refused {
                            step: Operation::Stat.into(),
                            reply,
                        }
                        .too_old(Feature::Describe));
                    }
                    Response::Error(reply) => Err(ClientError::Refused {
                        step: Operation::Stat.into(),
                        reply,
                    }),
                    other => return Err(unexpected("Described or Directory", &other).into()),
                };
                each(i, result);
            }
        }
        self.state = State::Ready;
        Ok(())
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
