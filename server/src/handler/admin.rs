//! Operations on names: stat, delete, make a directory.

use super::{Session, Summary};
use crate::Transport;
use crate::conn::ConnError;
use crate::storage::Storage;
use framekit_transfer::{Delete, MakeDir, Response, Stat};

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

    pub(super) async fn delete(&mut self, delete: Delete) -> Result<Summary, ConnError> {
        match self.shared.storage.delete(&delete.name).await {
            Ok(()) => {
                self.conn.send(&Response::Deleted).await?;
                Ok(Summary::done(0))
            }
            Err(e) => self.refuse_store(e).await,
        }
    }
}
