//! Decoding: bytes in, frames out.

use super::core::{Parsed, Verdict, read_ahead};
use super::{DecodeState, FrameCodec};
use crate::error::Error;
use bytes::{Buf, Bytes, BytesMut};

/// One decoding event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A complete payload. It shares memory with the input buffer: no payload
    /// byte was copied.
    Frame(Bytes),
    /// An oversized frame of `length` payload bytes was skipped entirely
    /// ([`Oversize::Discard`](super::Oversize::Discard) mode). Reported once its last byte has been
    /// skipped, so events keep the stream's order.
    Discarded {
        /// The payload length the peer declared.
        length: u64,
    },
}

/// What [`FrameCodec::step`] did.
///
/// It never carries a frame: frames are only cut by
/// [`FrameCodec::take_frame`], so the hot path returns a frame built in
/// registers and never merges it with one returned through memory.
enum Step {
    /// The buffer holds nothing more to decode.
    NeedMore,
    /// The state moved on (a prefix was consumed); try again.
    Again,
    /// An oversized frame of this many bytes was skipped entirely.
    Discarded(u64),
}

impl FrameCodec {
    /// Decodes the next frame, skipping (and counting) frames discarded in
    /// [`Oversize::Discard`](super::Oversize::Discard) mode. See the [module docs](super) for the
    /// contract.
    // Forced: the fast path is small, and when it was left to the compiler
    // a call per frame took a 16-byte frame from 135 to 175 instructions.
    #[inline(always)]
    pub fn decode_frame(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, Error> {
        loop {
            if let Some(frame) = self.take_frame(src) {
                return Ok(Some(frame));
            }
            match self.step(src)? {
                Step::NeedMore => return Ok(None),
                Step::Again => {}
                Step::Discarded(_) => self.discarded += 1,
            }
        }
    }

    /// Decodes the next event from `src`, consuming its bytes. Oversized
    /// frames in [`Oversize::Discard`](super::Oversize::Discard) mode are reported as
    /// [`Decoded::Discarded`]. See the [module docs](super) for the contract.
    ///
    /// No buffer is reserved for a payload before its prefix has been
    /// checked against the maximum, and then only what has arrived plus
    /// [`READ_AHEAD`](super::READ_AHEAD) bytes.
    #[inline]
    pub fn decode_next(&mut self, src: &mut BytesMut) -> Result<Option<Decoded>, Error> {
        loop {
            if let Some(frame) = self.take_frame(src) {
                return Ok(Some(Decoded::Frame(frame)));
            }
            match self.step(src)? {
                Step::NeedMore => return Ok(None),
                Step::Again => {}
                Step::Discarded(length) => return Ok(Some(Decoded::Discarded { length })),
            }
        }
    }

    /// Cuts the next frame off `src` if it is complete, without errors and
    /// without reserving anything.
    ///
    /// Between frames this is the fast path: a head read in one step,
    /// checked, and the whole frame already buffered; the decoding state is
    /// not written. It returns `None` in every other case, including every
    /// error, and [`step`](Self::step) then parses the head again: a few
    /// instructions once per read, not per frame.
    #[inline(always)]
    fn take_frame(&mut self, src: &mut BytesMut) -> Option<Bytes> {
        // The byte order is part of the state between frames, so that the
        // one test of the state also picks the copy of the path that reads
        // the field in that order; every other property of the layout is a
        // constant of `shortcut`. Callgrind, 16-byte frames in one buffer:
        // 127 instructions a frame in the default layout and 125 to 127 in
        // six others, against 137 and 145 to 148 when the default layout
        // had a copy of the path of its own and the others looked up the
        // offset, the strip and the prefix's kind on every frame.
        match self.state {
            DecodeState::HeadBig => self.take_whole::<true>(src),
            DecodeState::HeadLittle => self.take_whole::<false>(src),
            _ => self.take_rest(src),
        }
    }

    /// [`take_frame`](Self::take_frame) between frames.
    #[inline(always)]
    fn take_whole<const BIG: bool>(&mut self, src: &mut BytesMut) -> Option<Bytes> {
        let (end, strip) = self.shortcut.frame::<BIG>(src)?;
        Some(cut(src, end, strip))
    }

    /// The frame whose head was parsed earlier, if it has arrived in full.
    #[inline]
    fn take_rest(&mut self, src: &mut BytesMut) -> Option<Bytes> {
        let DecodeState::Data { len, skip, .. } = self.state else {
            return None;
        };
        if src.len() < len {
            return None;
        }
        self.state = self.head_state();
        Some(cut(src, len, skip))
    }

    /// Everything [`take_frame`](Self::take_frame) declines: partial heads
    /// and bodies, multi-byte varints, oversized frames and errors. Consumes
    /// the stripped head bytes, reserves room for a partial frame, skips
    /// discarded bytes, or reports an error; never cuts a frame.
    #[inline(never)]
    fn step(&mut self, src: &mut BytesMut) -> Result<Step, Error> {
        let (len, kept) = match self.state {
            DecodeState::HeadBig | DecodeState::HeadLittle => {
                let (head_len, wire) = match self.config.parse_head(src)? {
                    Parsed::Complete { len, wire } => (len, wire),
                    Parsed::Incomplete { .. } => return Ok(Step::NeedMore),
                };
                match self.config.judge(wire)? {
                    Verdict::Take(body) => {
                        // Only a maximum near `usize::MAX` lets this
                        // overflow: no buffer could hold such a frame.
                        let end =
                            body.checked_add(head_len)
                                .ok_or_else(|| Error::FrameTooLarge {
                                    declared: body as u64,
                                    max: self.config.max_frame_length as u64,
                                })?;
                        // Stripped head bytes are consumed now (as `take_frame`
                        // would drop them); kept ones stay with the frame.
                        let strip = self.config.strip_len(head_len);
                        let consumed = strip.min(head_len);
                        src.advance(consumed);
                        let (len, kept) = (end - consumed, head_len - consumed);
                        self.state = DecodeState::Data {
                            len,
                            kept,
                            skip: strip - consumed,
                        };
                        (len, kept)
                    }
                    Verdict::Discard(length) => {
                        src.advance(head_len);
                        self.state = DecodeState::Discard {
                            remaining: length,
                            length,
                        };
                        return Ok(self.discard(src));
                    }
                }
            }
            DecodeState::Data { len, kept, .. } => (len, kept),
            DecodeState::Discard { .. } => return Ok(self.discard(src)),
        };
        if src.len() >= len {
            return Ok(Step::Again);
        }
        src.reserve(read_ahead(len - src.len(), src.len().saturating_sub(kept)));
        Ok(Step::NeedMore)
    }

    /// Decodes what is left when the stream has ended: a complete frame, or
    /// `Ok(None)` if the buffer is empty at a frame boundary, or
    /// [`Error::Truncated`] if the stream stopped inside a frame.
    pub fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, Error> {
        if let Some(frame) = self.decode_frame(src)? {
            return Ok(Some(frame));
        }
        match self.state {
            DecodeState::HeadBig | DecodeState::HeadLittle if src.is_empty() => Ok(None),
            DecodeState::HeadBig | DecodeState::HeadLittle => Err(Error::Truncated {
                received: src.len() as u64,
                expected: None,
            }),
            DecodeState::Data { len, kept, .. } => Err(Error::Truncated {
                received: src.len().saturating_sub(kept) as u64,
                expected: Some((len - kept) as u64),
            }),
            DecodeState::Discard { remaining, length } => Err(Error::Truncated {
                received: length - remaining,
                expected: Some(length),
            }),
        }
    }

    /// Skips the bytes of an oversized frame as they arrive.
    fn discard(&mut self, src: &mut BytesMut) -> Step {
        let DecodeState::Discard { remaining, length } = self.state else {
            return Step::Again;
        };
        let available = src.len() as u64;
        if available < remaining {
            src.clear();
            self.state = DecodeState::Discard {
                remaining: remaining - available,
                length,
            };
            return Step::NeedMore;
        }
        // `remaining <= available`, which is a usize.
        src.advance(usize::try_from(remaining).unwrap_or(usize::MAX));
        self.state = self.head_state();
        Step::Discarded(length)
    }
}

/// Cuts a complete frame of `end` bytes off `src` and drops its first
/// `strip` bytes. The configuration guarantees that every frame is at least
/// that long.
#[inline(always)]
fn cut(src: &mut BytesMut, end: usize, strip: usize) -> Bytes {
    // One split per frame; the head is then skipped on the frozen handle,
    // which is cheaper than advancing the `BytesMut` first.
    let mut frame = src.split_to(end).freeze();
    frame.advance(strip);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{FrameCodec, LengthPrefix, Oversize};

    fn varint_codec(max: usize) -> FrameCodec {
        FrameCodec::builder()
            .prefix(LengthPrefix::Varint)
            .max_frame_length(max)
            .new_codec()
    }

    #[test]
    fn varint_longer_than_the_maximum_needs_is_rejected_early() {
        // 16 MiB needs 4 varint bytes; a fifth continuation is an error even
        // before the value is known.
        let mut codec = varint_codec(16 << 20);
        let mut buf = BytesMut::from(&[0x80, 0x80, 0x80, 0x80, 0x80][..]);
        assert!(matches!(
            codec.decode_next(&mut buf),
            Err(Error::InvalidVarint { len: 5 })
        ));
    }

    #[test]
    fn varint_with_padding_within_the_limit_is_accepted() {
        let mut codec = varint_codec(1 << 20);
        let mut buf = BytesMut::from(&[0x81, 0x80, 0x00, 0xAA][..]);
        assert_eq!(
            codec.decode_next(&mut buf).unwrap(),
            Some(Decoded::Frame(Bytes::from_static(&[0xAA])))
        );
    }

    #[test]
    fn tenth_varint_byte_over_one_overflows() {
        let mut codec = FrameCodec::builder()
            .prefix(LengthPrefix::Varint)
            .oversize(Oversize::Discard)
            .new_codec();
        let mut bytes = vec![0xFF; 9];
        bytes.push(0x02);
        let mut buf = BytesMut::from(&bytes[..]);
        assert!(matches!(
            codec.decode_next(&mut buf),
            Err(Error::InvalidVarint { len: 10 })
        ));
    }

    #[test]
    fn eleven_byte_varint_is_rejected() {
        let mut codec = FrameCodec::builder()
            .prefix(LengthPrefix::Varint)
            .oversize(Oversize::Discard)
            .new_codec();
        let mut buf = BytesMut::from(&[0x80; 11][..]);
        assert!(matches!(
            codec.decode_next(&mut buf),
            Err(Error::InvalidVarint { len: 11 })
        ));
    }

    #[test]
    fn largest_varint_is_read_in_discard_mode() {
        let mut codec = FrameCodec::builder()
            .prefix(LengthPrefix::Varint)
            .max_frame_length(8)
            .oversize(Oversize::Discard)
            .new_codec();
        let mut bytes = vec![0xFF; 9];
        bytes.push(0x01);
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(codec.decode_next(&mut buf).unwrap(), None);
        assert!(buf.is_empty());
        assert!(matches!(
            codec.decode_eof(&mut buf),
            Err(Error::Truncated {
                received: 0,
                expected: Some(u64::MAX)
            })
        ));
    }
}
