//! Listings: list and tree, streamed as they are found.

use super::{Session, Summary};
use crate::body::Transport;
use crate::conn::ConnError;
use crate::storage::local::store::{Found, Store, StoreError};
use framekit_transfer::{ErrorCode, List, MAX_NAME_LEN, Response, Tree};
use std::io;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Listing entries are sent in batches of about this many bytes.
const LIST_BATCH: usize = 32 * 1024;

impl<S: Transport> Session<S> {
    pub(super) async fn list(&mut self, list: List) -> Result<Summary, ConnError> {
        if list.prefix.len() > MAX_NAME_LEN {
            return self
                .refuse(ErrorCode::InvalidName, "the prefix is longer than any name")
                .await;
        }
        let prefix = list.prefix;
        self.stream_listing(move |store, send| {
            store.list(&prefix, &mut |entry| send(Response::Entry(entry)))
        })
        .await
    }

    pub(super) async fn tree(&mut self, tree: Tree) -> Result<Summary, ConnError> {
        self.stream_listing(move |store, send| {
            store.tree(&tree.dir, &mut |found| {
                send(match found {
                    Found::File(entry) => Response::Entry(entry),
                    Found::Dir(name) => Response::Directory { name },
                })
            })
        })
        .await
    }

    /// Sends what `walk` finds (on a blocking thread) as it finds it, in
    /// batches, then `ListEnd` with the count, or the error that stopped
    /// the walk. The walk stops early if the connection side goes away.
    async fn stream_listing<F>(&mut self, walk: F) -> Result<Summary, ConnError>
    where
        F: FnOnce(&Store, &mut dyn FnMut(Response) -> bool) -> Result<(), StoreError>
            + Send
            + 'static,
    {
        let (tx, mut rx) = mpsc::channel(256);
        let shared = Arc::clone(&self.shared);
        let walker = tokio::task::spawn_blocking(move || {
            walk(&shared.store, &mut |response| {
                tx.blocking_send(response).is_ok()
            })
        });
        let mut count = 0u64;
        while let Some(response) = rx.recv().await {
            self.conn.queue(&response)?;
            count += 1;
            if self.conn.queued() >= LIST_BATCH {
                self.conn.flush().await?;
            }
        }
        let result = walker
            .await
            .map_err(|e| ConnError::Io(io::Error::other(e)))?;
        match result {
            Ok(()) => {
                self.conn.queue(&Response::ListEnd { count })?;
                self.conn.flush().await?;
                Ok(Summary::done(count))
            }
            Err(e) => self.refuse_store(e).await,
        }
    }
}
