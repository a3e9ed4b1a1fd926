//! One connection's stream: protocol frames and raw body bytes, with
//! timeouts on every wait.

use bytes::{Buf, Bytes, BytesMut};
use proto::frame::FrameCodec;
use proto::message;
use proto::transfer::frame_config;
use serde::{Serialize, de::DeserializeOwned};
use std::io;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, timeout, timeout_at};

/// Room kept free in the read buffer before each read.
const READ_RESERVE: usize = 8 * 1024;

/// Why a connection can no longer be used.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The peer sent bytes that are not a valid frame or message.
    #[error("{0}")]
    Protocol(#[from] proto::Error),
    /// The peer was silent for longer than the idle timeout.
    #[error("idle timeout")]
    Timeout,
    /// The stream failed.
    #[error("connection error: {0}")]
    Io(#[from] io::Error),
    /// The peer closed the connection in the middle of an exchange.
    #[error("peer closed the connection mid-request")]
    Closed,
    /// The peer sent a well-formed message that breaks the protocol's
    /// rules, such as an eager upload over its size limit.
    #[error("protocol violation: {0}")]
    Violation(String),
}

impl ConnError {
    /// Whether the failure was the peer's silence or disappearance rather
    /// than a broken protocol.
    pub fn is_disconnect(&self) -> bool {
        match self {
            ConnError::Timeout | ConnError::Closed | ConnError::Io(_) => true,
            ConnError::Protocol(e) => e.is_truncated(),
            ConnError::Violation(_) => false,
        }
    }
}

/// A framed connection that can also carry raw body bytes.
#[derive(Debug)]
pub struct Conn<S> {
    stream: S,
    codec: FrameCodec,
    read_buf: BytesMut,
    write_buf: BytesMut,
    idle: Duration,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// Wraps a stream. Every read or write that waits longer than `idle`
    /// fails with [`ConnError::Timeout`].
    pub fn new(stream: S, idle: Duration) -> Self {
        Conn {
            stream,
            codec: FrameCodec::with_config(frame_config()),
            read_buf: BytesMut::new(),
            write_buf: BytesMut::new(),
            idle,
        }
    }

    /// Reads the next frame. `Ok(None)` when the peer closed the
    /// connection cleanly between frames. The whole frame must arrive
    /// within the idle timeout, so a peer that trickles bytes cannot hold a
    /// connection forever with one message.
    pub async fn read_frame(&mut self) -> Result<Option<Bytes>, ConnError> {
        let deadline = Instant::now() + self.idle;
        loop {
            if let Some(frame) = self.codec.decode_frame(&mut self.read_buf)? {
                return Ok(Some(frame));
            }
            self.read_buf.reserve(READ_RESERVE);
            let read = timeout_at(deadline, self.stream.read_buf(&mut self.read_buf))
                .await
                .map_err(|_| ConnError::Timeout)?;
            let n = match read {
                Ok(n) => n,
                // A TLS peer that closes the TCP connection without
                // close_notify, between frames, has still finished cleanly
                // as far as framing goes.
                Err(e)
                    if e.kind() == io::ErrorKind::UnexpectedEof
                        && self.read_buf.is_empty()
                        && self.codec.is_at_boundary() =>
                {
                    0
                }
                Err(e) => return Err(e.into()),
            };
            if n == 0 {
                return Ok(self.codec.decode_eof(&mut self.read_buf)?);
            }
        }
    }

    /// Bytes received and not consumed yet.
    pub fn buffered(&self) -> &[u8] {
        &self.read_buf
    }

    /// Moves received bytes not consumed yet to the start of `buf`, as many
    /// as fit, and returns how many.
    pub fn take_buffered(&mut self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.read_buf.len());
        buf[..n].copy_from_slice(&self.read_buf[..n]);
        self.read_buf.advance(n);
        n
    }

    /// Reads the next frame as a `T`; a clean end of stream here is an
    /// error, since a message was expected.
    pub async fn read_message<T: DeserializeOwned>(&mut self) -> Result<T, ConnError> {
        match self.read_frame().await? {
            Some(frame) => Ok(message::decode(&frame)?),
            None => Err(ConnError::Closed),
        }
    }

    /// Writes one message and flushes it.
    pub async fn send<T: Serialize>(&mut self, msg: &T) -> Result<(), ConnError> {
        self.queue(msg)?;
        self.flush().await
    }

    /// Adds one message to the write buffer without sending it.
    pub fn queue<T: Serialize>(&mut self, msg: &T) -> Result<(), ConnError> {
        message::encode_frame(self.codec.config(), msg, &mut self.write_buf)?;
        Ok(())
    }

    /// Bytes queued and not yet sent.
    pub fn queued(&self) -> usize {
        self.write_buf.len()
    }

    /// Sends everything queued.
    pub async fn flush(&mut self) -> Result<(), ConnError> {
        if !self.write_buf.is_empty() {
            let buf = &mut self.write_buf;
            timeout(self.idle, self.stream.write_all_buf(buf))
                .await
                .map_err(|_| ConnError::Timeout)??;
        }
        timeout(self.idle, self.stream.flush())
            .await
            .map_err(|_| ConnError::Timeout)??;
        Ok(())
    }

    /// Fills `buf` with body bytes: first what is already buffered, then
    /// from the stream. The whole buffer must arrive within the idle
    /// timeout, so a peer cannot hold the connection by trickling bytes.
    pub async fn read_body_exact(&mut self, buf: &mut [u8]) -> Result<(), ConnError> {
        self.read_body_fill(buf).await.1
    }

    /// Like [`Conn::read_body_exact`], and also says how many bytes of
    /// `buf` were filled, which is all of them unless it fails: on a
    /// failure, the bytes that did arrive are still there.
    pub async fn read_body_fill(&mut self, buf: &mut [u8]) -> (usize, Result<(), ConnError>) {
        let mut filled = self.take_buffered(buf);
        let deadline = Instant::now() + self.idle;
        while filled < buf.len() {
            match timeout_at(deadline, self.stream.read(&mut buf[filled..])).await {
                Ok(Ok(0)) => return (filled, Err(ConnError::Closed)),
                Ok(Ok(n)) => filled += n,
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return (filled, Err(ConnError::Closed));
                }
                Ok(Err(e)) => return (filled, Err(e.into())),
                Err(_) => return (filled, Err(ConnError::Timeout)),
            }
        }
        (filled, Ok(()))
    }

    /// The stream itself.
    pub fn stream(&self) -> &S {
        &self.stream
    }

    /// Writes body bytes, all of them.
    pub async fn write_body(&mut self, body: &[u8]) -> Result<(), ConnError> {
        timeout(self.idle, self.stream.write_all(body))
            .await
            .map_err(|_| ConnError::Timeout)??;
        Ok(())
    }

    /// Closes the sending side so the peer sees the end of the stream after
    /// what was sent, then discards what the peer still sends for a moment.
    /// Closing a socket with unread input makes the kernel reset the
    /// connection, which can destroy the last reply before the peer reads
    /// it; lingering avoids that.
    pub async fn shutdown(&mut self) {
        const LINGER: Duration = Duration::from_secs(1);
        const LINGER_BYTES: usize = 256 * 1024;
        let _ = timeout(self.idle, self.stream.shutdown()).await;
        let _ = timeout(LINGER, async {
            let mut sink = [0u8; 4096];
            let mut drained = 0;
            while drained < LINGER_BYTES {
                match self.stream.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => drained += n,
                }
            }
        })
        .await;
    }
}
