//! One connection's stream: protocol frames and raw body bytes, with
//! timeouts on every wait.

use bytes::{Buf, Bytes, BytesMut};
use framekit_codec::frame::FrameCodec;
use framekit_codec::message;
use framekit_transfer::frame_config;
use serde::{Serialize, de::DeserializeOwned};
use std::io;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, timeout, timeout_at};

/// A connection stream the server speaks over: plain TCP, TLS, or an
/// in-memory stream in tests.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Transport for S {}

/// Room kept free in the read buffer before each read.
const READ_RESERVE: usize = 8 * 1024;

/// Why a connection can no longer be used.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The peer sent bytes that are not a valid frame or message.
    #[error("{0}")]
    Protocol(#[from] framekit_codec::Error),
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
pub(crate) struct Conn<S> {
    stream: S,
    codec: FrameCodec,
    read_buf: BytesMut,
    /// Whether `read_buf` was given more room than a request needs (see
    /// [`Conn::read_body_bytes`]), perhaps in an allocation that bodies
    /// taken from it share.
    read_buf_grown: bool,
    write_buf: BytesMut,
    idle: Duration,
    /// What [`Conn::buffered_frame`] decoded and its caller gave back (or
    /// the error it met): [`Conn::read_frame`] returns it first.
    pending: Option<Result<Bytes, framekit_codec::Error>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// Wraps a stream. Every read or write that waits longer than `idle`
    /// fails with [`ConnError::Timeout`].
    pub(crate) fn new(stream: S, idle: Duration) -> Self {
        Conn {
            stream,
            codec: FrameCodec::with_config(frame_config()),
            read_buf: BytesMut::new(),
            read_buf_grown: false,
            write_buf: BytesMut::new(),
            idle,
            pending: None,
        }
    }

    /// Reads the next frame. `Ok(None)` when the peer closed the
    /// connection cleanly between frames. The whole frame must arrive
    /// within the idle timeout, so a peer that trickles bytes cannot hold a
    /// connection forever with one message.
    pub(crate) async fn read_frame(&mut self) -> Result<Option<Bytes>, ConnError> {
        if let Some(pending) = self.pending.take() {
            return Ok(Some(pending?));
        }
        let deadline = Instant::now() + self.idle;
        loop {
            if let Some(frame) = self.codec.decode_frame(&mut self.read_buf)? {
                return Ok(Some(frame));
            }
            // A connection that waits for its next request keeps no more
            // than a read's room: the large buffer a batch of eager
            // uploads was read into is let go (with the bodies taken from
            // it, once they are stored).
            if self.read_buf.is_empty() && self.read_buf_grown {
                self.read_buf = BytesMut::new();
                self.read_buf_grown = false;
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
    pub(crate) fn buffered(&self) -> &[u8] {
        &self.read_buf
    }

    /// The next frame if it has already arrived whole, without reading
    /// from the stream. Give it back with [`Conn::unread`] if it is not
    /// for the caller. A broken frame is kept for [`Conn::read_frame`] to
    /// report, and this returns `None`.
    pub(crate) fn buffered_frame(&mut self) -> Option<Bytes> {
        match self.pending.take() {
            Some(Ok(frame)) => return Some(frame),
            Some(Err(e)) => {
                self.pending = Some(Err(e));
                return None;
            }
            None => {}
        }
        match self.codec.decode_frame(&mut self.read_buf) {
            Ok(frame) => frame,
            Err(e) => {
                self.pending = Some(Err(e));
                None
            }
        }
    }

    /// Gives back a frame from [`Conn::buffered_frame`]: the next
    /// [`Conn::read_frame`] returns it.
    pub(crate) fn unread(&mut self, frame: Bytes) {
        self.pending = Some(Ok(frame));
    }

    /// Takes the first `len` buffered bytes, without copying them.
    pub(crate) fn take_buffered_bytes(&mut self, len: usize) -> Bytes {
        let len = len.min(self.read_buf.len());
        self.read_buf.split_to(len).freeze()
    }

    /// Reads until at least `len` bytes are buffered, then takes them, as
    /// [`Conn::take_buffered_bytes`] does. Each read has room for `room`
    /// bytes or more, so that what follows (the next requests of a
    /// pipelining client) arrives in the same read. The whole of it must
    /// arrive within the idle timeout. On a failure, says how many bytes
    /// had arrived.
    pub(crate) async fn read_body_bytes(
        &mut self,
        len: usize,
        room: usize,
    ) -> Result<Bytes, (usize, ConnError)> {
        let deadline = Instant::now() + self.idle;
        while self.read_buf.len() < len {
            let reserve = room.max(len - self.read_buf.len());
            self.read_buf_grown |= reserve > READ_RESERVE;
            self.read_buf.reserve(reserve);
            let have = self.read_buf.len();
            let read = timeout_at(deadline, self.stream.read_buf(&mut self.read_buf)).await;
            body_read(read).map_err(|e| (have, e))?;
        }
        Ok(self.take_buffered_bytes(len))
    }

    /// Moves received bytes not consumed yet to the start of `buf`, as many
    /// as fit, and returns how many.
    pub(crate) fn take_buffered(&mut self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.read_buf.len());
        buf[..n].copy_from_slice(&self.read_buf[..n]);
        self.read_buf.advance(n);
        n
    }

    /// Reads the next frame as a `T`; a clean end of stream here is an
    /// error, since a message was expected.
    pub(crate) async fn read_message<T: DeserializeOwned>(&mut self) -> Result<T, ConnError> {
        match self.read_frame().await? {
            Some(frame) => Ok(message::decode(&frame)?),
            None => Err(ConnError::Closed),
        }
    }

    /// Writes one message and flushes it.
    pub(crate) async fn send<T: Serialize>(&mut self, msg: &T) -> Result<(), ConnError> {
        self.queue(msg)?;
        self.flush().await
    }

    /// Adds one message to the write buffer without sending it.
    pub(crate) fn queue<T: Serialize>(&mut self, msg: &T) -> Result<(), ConnError> {
        message::encode_frame(self.codec.config(), msg, &mut self.write_buf)?;
        Ok(())
    }

    /// Adds raw body bytes to the write buffer without sending them.
    pub(crate) fn queue_body(&mut self, body: &[u8]) {
        self.write_buf.extend_from_slice(body);
    }

    /// Bytes queued and not yet sent.
    pub(crate) fn queued(&self) -> usize {
        self.write_buf.len()
    }

    /// Sends everything queued.
    pub(crate) async fn flush(&mut self) -> Result<(), ConnError> {
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
    /// Says how many bytes of `buf` were filled, which is all of them
    /// unless it fails: on a failure, the bytes that did arrive are still
    /// there.
    pub(crate) async fn read_body_fill(
        &mut self,
        buf: &mut [u8],
    ) -> (usize, Result<(), ConnError>) {
        let mut filled = self.take_buffered(buf);
        let deadline = Instant::now() + self.idle;
        while filled < buf.len() {
            let read = timeout_at(deadline, self.stream.read(&mut buf[filled..])).await;
            match body_read(read) {
                Ok(n) => filled += n,
                Err(e) => return (filled, Err(e)),
            }
        }
        (filled, Ok(()))
    }

    /// Writes body bytes, all of them.
    pub(crate) async fn write_body(&mut self, body: &[u8]) -> Result<(), ConnError> {
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
    pub(crate) async fn shutdown(&mut self) {
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

/// What one read of body bytes (within the body's deadline) means: how
/// many bytes arrived (0 if the read was interrupted and is to be tried
/// again), or why the body cannot be completed.
fn body_read(
    read: Result<io::Result<usize>, tokio::time::error::Elapsed>,
) -> Result<usize, ConnError> {
    match read {
        Ok(Ok(0)) => Err(ConnError::Closed),
        Ok(Ok(n)) => Ok(n),
        Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
        Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => Err(ConnError::Closed),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(ConnError::Timeout),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use tokio::io::AsyncWriteExt;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut out = u32::try_from(payload.len()).unwrap().to_be_bytes().to_vec();
        out.extend_from_slice(payload);
        out
    }

    #[tokio::test]
    async fn buffered_frames_never_read_and_unread_frames_come_back_first() {
        let (mut peer, stream) = tokio::io::duplex(1 << 16);
        let mut conn = Conn::new(stream, Duration::from_secs(5));
        // Nothing has arrived yet: nothing is decoded, nothing waits.
        assert_eq!(conn.buffered_frame(), None);

        let mut sent = frame(b"one");
        sent.extend(frame(b"two"));
        sent.extend(&frame(b"three")[..5]);
        peer.write_all(&sent).await.unwrap();
        assert_eq!(conn.read_frame().await.unwrap().unwrap(), &b"one"[..]);
        let two = conn.buffered_frame().unwrap();
        assert_eq!(two, &b"two"[..]);
        // "three" is not whole: left where it is.
        assert_eq!(conn.buffered_frame(), None);
        conn.unread(two);
        assert_eq!(conn.buffered_frame().unwrap(), &b"two"[..]);
        conn.unread(Bytes::from_static(b"two"));
        assert_eq!(conn.read_frame().await.unwrap().unwrap(), &b"two"[..]);
        peer.write_all(&frame(b"three")[5..]).await.unwrap();
        assert_eq!(conn.read_frame().await.unwrap().unwrap(), &b"three"[..]);
    }

    #[tokio::test]
    async fn a_broken_frame_met_in_the_buffer_is_reported_by_the_next_read() {
        let (mut peer, stream) = tokio::io::duplex(1 << 16);
        let mut conn = Conn::new(stream, Duration::from_secs(5));
        let mut sent = frame(b"ok");
        // Over the protocol's 64 KiB maximum.
        sent.extend(0x0100_0000u32.to_be_bytes());
        peer.write_all(&sent).await.unwrap();
        assert_eq!(conn.read_frame().await.unwrap().unwrap(), &b"ok"[..]);
        assert_eq!(conn.buffered_frame(), None);
        assert_eq!(conn.buffered_frame(), None);
        let err = conn.read_frame().await.unwrap_err();
        assert!(
            matches!(
                err,
                ConnError::Protocol(framekit_codec::Error::FrameTooLarge { .. })
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn body_bytes_arrive_with_what_follows_them() {
        let (mut peer, stream) = tokio::io::duplex(1 << 16);
        let mut conn = Conn::new(stream, Duration::from_secs(5));
        let mut sent = vec![7u8; 1000];
        sent.extend(frame(b"next"));
        peer.write_all(&sent).await.unwrap();
        let body = conn.read_body_bytes(1000, 64 * 1024).await.unwrap();
        assert_eq!(body, vec![7u8; 1000]);
        // Read in the same go as the body.
        assert_eq!(conn.buffered_frame().unwrap(), &b"next"[..]);

        peer.write_all(&[1, 2, 3]).await.unwrap();
        drop(peer);
        let (arrived, err) = conn.read_body_bytes(10, 1024).await.unwrap_err();
        assert_eq!(arrived, 3);
        assert!(matches!(err, ConnError::Closed), "{err:?}");
    }
}
