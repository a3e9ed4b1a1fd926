//! The tokio-util adapter: `Framed<TcpStream, FrameCodec>`.

use super::FrameCodec;
use crate::error::Error;
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio_util::codec::{Decoder, Encoder};

/// Yields payloads; oversized frames skipped in
/// [`Oversize::Discard`](super::Oversize::Discard) mode are counted by
/// [`FrameCodec::discarded`]. A stream that ends inside a frame yields
/// [`Error::Truncated`].
impl Decoder for FrameCodec {
    type Item = Bytes;
    type Error = Error;

    #[inline(always)]
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, Error> {
        self.decode_frame(src)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, Error> {
        FrameCodec::decode_eof(self, src)
    }
}

/// Copies the payload into the write buffer. For large payloads prefer
/// [`write_frame`], which writes the prefix and the payload with one
/// vectored write and copies nothing. A configuration with a length field
/// offset needs a header: this fails with [`Error::HeaderLength`]; use
/// [`FrameCodec::encode_with_header`] or [`write_frame_with_header`].
impl Encoder<Bytes> for FrameCodec {
    type Error = Error;

    #[inline]
    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), Error> {
        self.config.encode(&item, dst)
    }
}

/// Copies the payload into the write buffer.
impl Encoder<&[u8]> for FrameCodec {
    type Error = Error;

    #[inline]
    fn encode(&mut self, item: &[u8], dst: &mut BytesMut) -> Result<(), Error> {
        self.config.encode(item, dst)
    }
}

/// Writes one frame to an async writer without copying the payload: the
/// prefix and the payload go out together through vectored writes
/// (`write_all_buf`), and every byte is written before it returns, as
/// `sendall` does.
///
/// Nothing is written if the payload cannot be framed. Flushing is left to
/// the caller.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), framekit_codec::Error> {
/// use bytes::Bytes;
/// use framekit_codec::frame::{FrameCodec, write_frame};
///
/// let mut out = Vec::new();
/// write_frame(&mut out, FrameCodec::new().config(), Bytes::from_static(b"body")).await?;
/// assert_eq!(out, b"\0\0\0\x04body");
/// # Ok(())
/// # }
/// ```
pub async fn write_frame<W, B>(
    writer: &mut W,
    config: &super::FrameConfig,
    payload: B,
) -> Result<(), Error>
where
    W: AsyncWrite + Unpin,
    B: Buf,
{
    write_frame_with_header(writer, config, &[], payload).await
}

/// Writes one frame with its header (exactly the configured length field
/// offset) to an async writer, without copying the payload. Nothing is
/// written if the frame cannot be encoded.
pub async fn write_frame_with_header<W, B>(
    writer: &mut W,
    config: &super::FrameConfig,
    header: &[u8],
    payload: B,
) -> Result<(), Error>
where
    W: AsyncWrite + Unpin,
    B: Buf,
{
    config.check_header(header)?;
    let head = config.encode_head(payload.remaining())?;
    let mut frame = header.chain(head).chain(payload);
    writer.write_all_buf(&mut frame).await?;
    Ok(())
}
