//! Downloads: get.

use super::{Session, Summary};
use crate::body::{self, Transport};
use crate::conn::ConnError;
use crate::storage::local::store::StoreError;
use framekit_transfer::{Get, Response, Trailer};

impl<S: Transport> Session<S> {
    pub(super) async fn get(&mut self, get: Get) -> Result<Summary, ConnError> {
        let name = get.name.clone();
        let opened = self
            .blocking(move |store| {
                let (file, entry) = store.open_read(&name)?;
                let known = store.known_hash(&name, &file);
                Ok::<_, StoreError>((file, entry, known))
            })
            .await?;
        let (file, entry, known) = match opened {
            Ok(opened) => opened,
            Err(e) => return self.refuse_store(e).await,
        };
        let offset = match get.if_version {
            Some(version) if version == entry.version() && get.offset <= entry.size => get.offset,
            _ => 0,
        };
        self.offset = offset;
        let ready = Response::GetReady {
            size: entry.size,
            offset,
            modified_ns: entry.modified_ns,
        };
        self.conn.send(&ready).await?;
        let hash = body::send(
            &mut self.conn,
            &self.shared.pool,
            file,
            entry.size,
            offset,
            known,
            &mut self.transferred,
        )
        .await?;
        self.conn
            .send(&Trailer {
                hash: *hash.as_bytes(),
            })
            .await?;
        Ok(Summary::done(entry.size - offset))
    }
}
