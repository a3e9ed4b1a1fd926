//! Downloads: get.

use super::{Session, Summary};
use crate::Transport;
use crate::body;
use crate::conn::ConnError;
use crate::storage::{Download, Storage};
use framekit_transfer::{Get, Response, Trailer};

impl<S: Transport, B: Storage> Session<S, B> {
    pub(super) async fn get(&mut self, get: Get) -> Result<Summary, ConnError> {
        let download = match self.shared.storage.open_read(&get.name).await {
            Ok(download) => download,
            Err(e) => return self.refuse_store(e).await,
        };
        let info = download.info();
        let (size, modified_ns) = (info.size, info.modified_ns);
        // A download resumes only on the version the client has part of.
        let resumes = get
            .if_version
            .is_some_and(|version| download.has_version(&version));
        let offset = if resumes && get.offset <= size {
            get.offset
        } else {
            0
        };
        self.offset = offset;
        let ready = Response::GetReady {
            size,
            offset,
            modified_ns,
        };
        self.conn.send(&ready).await?;
        let hash = body::send(
            &mut self.conn,
            &self.shared.pool,
            download,
            offset,
            &mut self.transferred,
        )
        .await?;
        self.conn
            .send(&Trailer {
                hash: *hash.as_bytes(),
            })
            .await?;
        Ok(Summary::done(size - offset))
    }
}
