//! Listings: list (of files, or of files and directories) and tree, sent
//! as the storage finds them.

use super::{Session, Summary};
use crate::Transport;
use crate::conn::ConnError;
use crate::storage::{Found, Listing, Storage};
use framekit_transfer::{ErrorCode, List, ListAll, MAX_NAME_LEN, Response, Tree};

/// Listing entries are sent in batches of about this many bytes.
const LIST_BATCH: usize = 32 * 1024;

impl<S: Transport, B: Storage> Session<S, B> {
    pub(super) async fn list(&mut self, list: List) -> Result<Summary, ConnError> {
        if list.prefix.len() > MAX_NAME_LEN {
            return self
                .refuse(ErrorCode::InvalidName, "the prefix is longer than any name")
                .await;
        }
        let listing = self.shared.storage.list(&list.prefix, false);
        self.send_listing(listing).await
    }

    pub(super) async fn list_all(&mut self, list: ListAll) -> Result<Summary, ConnError> {
        if list.prefix.len() > MAX_NAME_LEN {
            return self
                .refuse(ErrorCode::InvalidName, "the prefix is longer than any name")
                .await;
        }
        let listing = self.shared.storage.list(&list.prefix, true);
        self.send_listing(listing).await
    }

    pub(super) async fn tree(&mut self, tree: Tree) -> Result<Summary, ConnError> {
        let listing = self.shared.storage.tree(&tree.dir);
        self.send_listing(listing).await
    }

    /// Sends what the listing finds as it finds it, in batches, then
    /// `ListEnd` with the count, or the error that stopped it. Dropping the
    /// listing (when the connection fails) stops it.
    async fn send_listing(&mut self, mut listing: B::Listing) -> Result<Summary, ConnError> {
        let mut count = 0u64;
        while let Some(found) = listing.next().await {
            let response = match found {
                Ok(Found::File(entry)) => Response::Entry(entry),
                Ok(Found::Dir(name)) => Response::Directory { name },
                Err(e) => return self.refuse_store(e).await,
            };
            self.conn.queue(&response)?;
            count += 1;
            if self.conn.queued() >= LIST_BATCH {
                self.conn.flush().await?;
            }
        }
        self.conn.queue(&Response::ListEnd { count })?;
        self.conn.flush().await?;
        Ok(Summary::done(count))
    }
}
