//! Changes to the server's names other than uploads: delete a file or a
//! directory, make a directory, rename.

use super::{Session, check_name};
use crate::error::{ClientError, Feature};
use framekit_transfer::{Delete, DeleteDir, MakeDir, Rename, Request, Response};
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

    /// Deletes the directory `name`: only if it is empty, or with
    /// everything in it if `recursive`.
    pub fn delete_dir(&mut self, name: &str, recursive: bool) -> Result<(), ClientError> {
        check_name(name)?;
        let request = Request::DeleteDir(DeleteDir {
            name: name.to_owned(),
            recursive,
        });
        self.exchange(&request, "Deleted", |response| match response {
            Response::Deleted => Ok(()),
            other => Err(other),
        })
        .map_err(|e| e.too_old(Feature::DeleteDir))
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
        .map_err(|e| e.too_old(Feature::Directories))
    }

    /// Moves the file or directory `from` to `to` on the server, in one
    /// step, replacing a file at `to` only if `overwrite`.
    pub fn rename(&mut self, from: &str, to: &str, overwrite: bool) -> Result<(), ClientError> {
        check_name(from)?;
        check_name(to)?;
        let request = Request::Rename(Rename {
            from: from.to_owned(),
            to: to.to_owned(),
            overwrite,
        });
        self.exchange(&request, "Renamed", |response| match response {
            Response::Renamed => Ok(()),
            other => Err(other),
        })
        .map_err(|e| e.too_old(Feature::Rename))
    }
}
