//! Downloads: get, and gets taken in batches.

use super::{Refusal, Session, Summary, log_request};
use crate::Transport;
use crate::body;
use crate::conn::ConnError;
use crate::storage::{Download, SMALL_BODY, Storage};
use framekit_codec::message;
use framekit_transfer::{Get, Request, Response, Trailer};
use std::time::Instant;

/// At most this many gets that a pipelining client sent behind the first
/// one are answered before the answers are sent.
const GET_BATCH: usize = 64;

/// Answers waiting in the write buffer are sent once they reach this many
/// bytes.
const GET_QUEUE_BYTES: usize = 64 * 1024;

impl<S: Transport, B: Storage> Session<S, B> {
    /// A get. Gets that a pipelining client sent behind this one, and that
    /// have already arrived whole, are answered along with it: the answers
    /// of small files (`GetReady`, the body, the trailer) leave together
    /// in as few writes as their size allows. Each is still answered and
    /// logged on its own, in order.
    pub(super) async fn get(&mut self, get: Get) -> Result<Summary, ConnError> {
        let first = self.answer_get(get).await?;
        let (offset, transferred) = (self.offset, self.transferred);
        let mut taken = 0;
        while taken < GET_BATCH {
            let Some(next) = self.buffered_get() else {
                break;
            };
            taken += 1;
            let started = Instant::now();
            (self.offset, self.transferred) = (0, 0);
            let result = self.answer_get(next.clone()).await;
            let ms = started.elapsed().as_millis();
            let bytes = match &result {
                Ok(summary) => summary.bytes,
                Err(_) => self.transferred,
            };
            log_request("get", &next.name, self.offset, bytes, ms, &result);
            result?;
            if self.conn.queued() >= GET_QUEUE_BYTES {
                self.conn.flush().await?;
            }
        }
        (self.offset, self.transferred) = (offset, transferred);
        self.conn.flush().await?;
        Ok(first)
    }

    /// Answers one get, leaving the answer in the write buffer when it can
    /// (a small file, whole, or a refusal).
    async fn answer_get(&mut self, get: Get) -> Result<Summary, ConnError> {
        let download = match self.shared.storage.open_read(&get.name).await {
            Ok(download) => download,
            Err(e) => return self.queue_refusal(Refusal::Store(e)),
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
        if let Ok(len) = usize::try_from(size)
            && len <= SMALL_BODY
        {
            // Read before anything is answered: a file that cannot be
            // read is refused rather than cut short.
            let (buf, hash) = match download.read_small().await {
                Ok(read) => read,
                Err(e) => return self.queue_refusal(Refusal::Store(e.into())),
            };
            let start = usize::try_from(offset).unwrap_or(len).min(buf.len());
            let body = buf.get(start..).unwrap_or_default();
            self.conn.queue(&ready)?;
            self.conn.queue_body(body);
            self.conn.queue(&Trailer {
                hash: *hash.as_bytes(),
            })?;
            self.transferred = body.len() as u64;
            return Ok(Summary::done(size - offset));
        }
        self.conn.send(&ready).await?;
        let hash = body::send(
            &mut self.conn,
            &self.shared.pool,
            download,
            offset,
            &mut self.transferred,
        )
        .await?;
        self.conn.queue(&Trailer {
            hash: *hash.as_bytes(),
        })?;
        Ok(Summary::done(size - offset))
    }

    /// Leaves a refusal in the write buffer.
    fn queue_refusal(&mut self, refusal: Refusal) -> Result<Summary, ConnError> {
        let reply = refusal.reply();
        let code = reply.code;
        self.conn.queue(&Response::Error(reply))?;
        Ok(Summary::refused(code))
    }

    /// The next get, if its request has already arrived whole; otherwise
    /// nothing is taken.
    fn buffered_get(&mut self) -> Option<Get> {
        let frame = self.conn.buffered_frame()?;
        match message::decode::<Request>(&frame) {
            Ok(Request::Get(get)) => Some(get),
            _ => {
                self.conn.unread(frame);
                None
            }
        }
    }
}
