//! Operations on names: stat, describe, delete, make a directory, rename.

use super::{Session, Summary};
use crate::Transport;
use crate::body;
use crate::conn::ConnError;
use crate::storage::{Download, Found, Storage, StoreError};
use framekit_transfer::{
    Delete, DeleteDir, Describe, Description, MakeDir, Rename, Response, Stat,
};

impl<S: Transport, B: Storage> Session<S, B> {
    pub(super) async fn make_dir(&mut self, make: MakeDir) -> Result<Summary, ConnError> {
        match self.shared.storage.make_dir(&make.name).await {
            Ok(()) => {
                self.conn.send(&Response::DirMade).await?;
                Ok(Summary::done(0))
            }
            Err(e) => self.refuse_store(e).await,
        }
    }

    pub(super) async fn stat(&mut self, stat: Stat) -> Result<Summary, ConnError> {
        match self.shared.storage.stat(&stat.name).await {
            Ok(entry) => {
                self.conn.send(&Response::Entry(entry)).await?;
                Ok(Summary::done(0))
            }
            Err(e) => self.refuse_store(e).await,
        }
    }

    /// A file with its hash (the one the storage recorded, or computed
    /// now by reading the file), or a directory.
    pub(super) async fn describe(&mut self, describe: Describe) -> Result<Summary, ConnError> {
        let storage = &self.shared.storage;
        let download = match storage.open_read(&describe.name).await {
            Ok(download) => download,
            Err(StoreError::NotAFile) => {
                return match storage.describe(&describe.name).await {
                    Ok(Found::Dir(_)) => {
                        let name = describe.name;
                        self.conn.send(&Response::Directory { name }).await?;
                        Ok(Summary::done(0))
                    }
                    // Replaced by a file meanwhile: it was not one.
                    Ok(Found::File(_)) => self.refuse_store(StoreError::NotAFile).await,
                    Err(e) => self.refuse_store(e).await,
                };
            }
            Err(e) => return self.refuse_store(e).await,
        };
        let info = download.info();
        let (size, modified_ns) = (info.size, info.modified_ns);
        match body::hash(&self.shared.pool, download).await {
            Ok(hash) => {
                let described = Description {
                    name: describe.name,
                    size,
                    modified_ns,
                    hash: *hash.as_bytes(),
                };
                self.conn.send(&Response::Described(described)).await?;
                Ok(Summary::done(0))
            }
            Err(e) => self.refuse_store(e.into()).await,
        }
    }

    pub(super) async fn delete(&mut self, delete: Delete) -> Result<Summary, ConnError> {
        match self.shared.storage.delete(&delete.name).await {
            Ok(()) => {
                self.conn.send(&Response::Deleted).await?;
                Ok(Summary::done(0))
            }
            Err(e) => self.refuse_store(e).await,
        }
    }

    pub(super) async fn delete_dir(&mut self, delete: DeleteDir) -> Result<Summary, ConnError> {
        let storage = &self.shared.storage;
        match storage.delete_dir(&delete.name, delete.recursive).await {
            Ok(()) => {
                self.conn.send(&Response::Deleted).await?;
                Ok(Summary::done(0))
            }
            Err(e) => self.refuse_store(e).await,
        }
    }

    pub(super) async fn rename(&mut self, rename: Rename) -> Result<Summary, ConnError> {
        let storage = &self.shared.storage;
        match storage
            .rename(&rename.from, &rename.to, rename.overwrite)
            .await
        {
            Ok(()) => {
                self.conn.send(&Response::Renamed).await?;
                Ok(Summary::done(0))
            }
            Err(e) => self.refuse_store(e).await,
        }
    }
}
