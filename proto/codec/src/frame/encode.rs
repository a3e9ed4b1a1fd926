//! Encoding: payloads in, prefixed bytes out.

use super::core::MAX_VARINT_LEN;
use super::{ByteOrder, FrameCodec, FrameConfig};
use crate::error::Error;
use bytes::{Buf, BufMut, BytesMut};

/// An encoded length prefix, kept on the stack.
///
/// It implements [`Buf`], so a frame can be written without copying its
/// payload: chain the head and the payload and hand the chain to a vectored
/// writer (`AsyncWriteExt::write_all_buf`, or
/// [`blocking::write_all_vectored`](crate::blocking::write_all_vectored)).
///
/// ```
/// use bytes::{Buf, Bytes};
/// use framekit_codec::frame::FrameCodec;
///
/// let codec = FrameCodec::new();
/// let payload = Bytes::from_static(b"large body");
/// let frame = codec.encode_head(payload.len()).unwrap().chain(payload);
/// assert_eq!(frame.remaining(), 4 + 10);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    bytes: [u8; MAX_VARINT_LEN],
    start: u8,
    end: u8,
}

impl Head {
    /// The prefix bytes still to be written.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[usize::from(self.start)..usize::from(self.end)]
    }
}

impl AsRef<[u8]> for Head {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Buf for Head {
    fn remaining(&self) -> usize {
        usize::from(self.end - self.start)
    }

    fn chunk(&self) -> &[u8] {
        self.as_slice()
    }

    fn advance(&mut self, cnt: usize) {
        let cnt = u8::try_from(cnt).unwrap_or(u8::MAX);
        assert!(
            cnt <= self.end - self.start,
            "advance past the end of a frame head"
        );
        self.start += cnt;
    }
}

impl FrameConfig {
    /// Encodes the length field for `len` bytes after it, or fails if that
    /// is more than the maximum or than the field can describe.
    ///
    /// This is the length field only: with a
    /// [`length_field_offset`](Self::length_field_offset), the header bytes
    /// go before it (see [`encode_with_header`](Self::encode_with_header)).
    #[inline]
    pub fn encode_head(&self, len: usize) -> Result<Head, Error> {
        let too_large = || Error::PayloadTooLarge {
            len: len as u64,
            max: self.max_payload_len(),
        };
        if len > self.max_frame_length {
            return Err(too_large());
        }
        let wire = match self.wire_len(len as u64) {
            Some(wire) => wire,
            None if self.adjustment > 0 && (len as u64) < self.adjustment.unsigned_abs() => {
                return Err(Error::PayloadTooShort {
                    len: len as u64,
                    min: self.adjustment.unsigned_abs(),
                });
            }
            None => return Err(too_large()),
        };
        let mut bytes = [0u8; MAX_VARINT_LEN];
        let end = match (self.prefix.width(), self.prefix.byte_order()) {
            (Some(width), Some(ByteOrder::BigEndian)) => {
                // `wire_len` guarantees the value fits `width` bytes.
                bytes[..width].copy_from_slice(&wire.to_be_bytes()[8 - width..]);
                width
            }
            (Some(width), _) => {
                bytes[..width].copy_from_slice(&wire.to_le_bytes()[..width]);
                width
            }
            (None, _) => {
                let mut value = wire;
                let mut n = 0;
                while value >= 0x80 {
                    bytes[n] = (value & 0x7f) as u8 | 0x80;
                    value >>= 7;
                    n += 1;
                }
                bytes[n] = (value & 0x7f) as u8;
                n + 1
            }
        };
        Ok(Head {
            bytes,
            start: 0,
            end: u8::try_from(end).unwrap_or(u8::MAX),
        })
    }

    /// The longest payload that can be encoded: the smaller of the maximum
    /// frame length and what the length field can describe.
    pub fn max_payload_len(&self) -> u64 {
        self.max_body_len_by_field()
            .min(self.max_frame_length as u64)
    }

    /// Appends a whole frame (length field and a copy of the payload) to
    /// `dst`. On error nothing is written. With a
    /// [`length_field_offset`](Self::length_field_offset) this is
    /// [`Error::HeaderLength`]: use
    /// [`encode_with_header`](Self::encode_with_header).
    #[inline]
    pub fn encode(&self, payload: &[u8], dst: &mut BytesMut) -> Result<(), Error> {
        self.encode_with_header(&[], payload, dst)
    }

    /// Appends a whole frame to `dst`: `header` (exactly
    /// [`length_field_offset`](Self::length_field_offset) bytes), the length
    /// field for `payload` (the bytes after the field, with the adjustment
    /// applied in reverse), and a copy of `payload`. On error nothing is
    /// written.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use framekit_codec::frame::{FrameCodec, LengthPrefix};
    ///
    /// // PostgreSQL: a type byte, then a length that counts itself.
    /// let codec = FrameCodec::builder()
    ///     .length_field_offset(1)
    ///     .prefix(LengthPrefix::U32Be)
    ///     .length_adjustment(-4)
    ///     .new_codec();
    /// let mut out = BytesMut::new();
    /// codec.config().encode_with_header(b"Q", b"SELECT 1\0", &mut out)?;
    /// assert_eq!(&out[..], b"Q\x00\x00\x00\x0DSELECT 1\0");
    /// # Ok::<(), framekit_codec::Error>(())
    /// ```
    #[inline]
    pub fn encode_with_header(
        &self,
        header: &[u8],
        payload: &[u8],
        dst: &mut BytesMut,
    ) -> Result<(), Error> {
        self.check_header(header)?;
        let head = self.encode_head(payload.len())?;
        dst.reserve(header.len() + head.remaining() + payload.len());
        dst.put_slice(header);
        dst.put_slice(head.as_slice());
        dst.put_slice(payload);
        Ok(())
    }

    /// Fails unless `header` is as long as the length field offset.
    #[inline]
    pub(crate) fn check_header(&self, header: &[u8]) -> Result<(), Error> {
        if header.len() == self.offset {
            Ok(())
        } else {
            Err(Error::HeaderLength {
                len: header.len(),
                expected: self.offset,
            })
        }
    }
}

impl FrameCodec {
    /// Encodes the prefix for a payload of `len` bytes. See
    /// [`FrameConfig::encode_head`].
    ///
    /// ```
    /// use framekit_codec::Error;
    /// use framekit_codec::frame::{FrameCodec, LengthPrefix};
    ///
    /// // A two-byte prefix cannot describe 70,000 bytes.
    /// let codec = FrameCodec::builder().prefix(LengthPrefix::U16Be).new_codec();
    /// let err = codec.encode_head(70_000).unwrap_err();
    /// assert!(matches!(err, Error::PayloadTooLarge { len: 70_000, max: 65_535 }));
    /// ```
    #[inline]
    pub fn encode_head(&self, len: usize) -> Result<super::Head, Error> {
        self.config.encode_head(len)
    }

    /// Appends a whole frame to `dst`, copying the payload. On error nothing
    /// is written. See [`FrameConfig::encode`].
    #[inline]
    pub fn encode(&self, payload: &[u8], dst: &mut BytesMut) -> Result<(), Error> {
        self.config.encode(payload, dst)
    }

    /// Appends a whole frame with its header to `dst`, copying the payload.
    /// See [`FrameConfig::encode_with_header`].
    #[inline]
    pub fn encode_with_header(
        &self,
        header: &[u8],
        payload: &[u8],
        dst: &mut BytesMut,
    ) -> Result<(), Error> {
        self.config.encode_with_header(header, payload, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{FrameCodec, LengthPrefix};

    #[test]
    fn varint_heads_match_leb128() {
        let codec = FrameCodec::builder()
            .prefix(LengthPrefix::Varint)
            .max_frame_length(usize::MAX)
            .new_codec();
        let cases: &[(usize, &[u8])] = &[
            (0, &[0x00]),
            (1, &[0x01]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (300, &[0xac, 0x02]),
            (16_384, &[0x80, 0x80, 0x01]),
        ];
        for &(len, expected) in cases {
            assert_eq!(
                codec.encode_head(len).unwrap().as_slice(),
                expected,
                "{len}"
            );
        }
    }

    #[test]
    fn head_advances_as_a_buf() {
        let mut head = FrameCodec::new().encode_head(0x0102).unwrap();
        assert_eq!(head.chunk(), &[0, 0, 1, 2]);
        head.advance(3);
        assert_eq!(head.chunk(), &[2]);
        assert_eq!(head.remaining(), 1);
    }

    #[test]
    fn adjusted_length_counts_the_prefix() {
        let codec = FrameCodec::builder().length_adjustment(-4).new_codec();
        let mut out = BytesMut::new();
        codec.encode(b"abc", &mut out).unwrap();
        assert_eq!(&out[..], &[0, 0, 0, 7, b'a', b'b', b'c']);
    }

    #[test]
    fn positive_adjustment_that_exceeds_the_payload_is_refused() {
        // The wire length would be negative.
        let codec = FrameCodec::builder().length_adjustment(2).new_codec();
        let mut out = BytesMut::new();
        assert!(matches!(
            codec.encode(b"a", &mut out),
            Err(Error::PayloadTooShort { len: 1, min: 2 })
        ));
        assert!(out.is_empty());
    }
}
