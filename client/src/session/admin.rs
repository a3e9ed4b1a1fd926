//! Changes to the server's names other than uploads: delete a file, make
//! a directory.

use super::{Session, check_name};
use crate::error::ClientError;
use framekit_transfer::{Delete, MakeDir, Request, Response};
use std::io::{Read, Write};

impl<S: Read + Write> Session<S> {
    /// Deletes one file.
    pub fn delete(&mut self, name: &str) -> Result<(), ClientError> {
        check_name(name)?;
        let request = Request::Delete(Delete {
            name: name.to_owned(),
        });
        self.exchange(&request, "Deleted", |response| match response {
            Response::Deleted => Ok(()),
            other => Err(other),
        })
    }

    /// Creates the directory `name` on the server, and its missing
    /// parents; fine if it exists.
    pub fn make_dir(&mut self, name: &str) -> Result<(), ClientError> {
        check_name(name)?;
        let request = Request::MakeDir(MakeDir {
            name: name.to_owned(),
        });
        self.exchange(&request, "DirMade", |response| match response {
            Response::DirMade => Ok(()),
            other => Err(other),
        })
    }
}
