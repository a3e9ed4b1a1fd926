//! The decoding rules, in one place for the sans-IO decoder and the blocking
//! reader: reading a frame's head from a byte slice, the length adjustment,
//! whether a frame is taken, skipped or refused, and how much buffer to
//! reserve ahead of the bytes that have arrived.
//!
//! Nothing here performs I/O or keeps state; both decoders feed it the bytes
//! they hold and act on its answers.

use super::{FrameConfig, LengthPrefix, MIN_READ_AHEAD, Oversize, READ_AHEAD};
use crate::error::Error;

/// The longest unsigned LEB128 varint that can encode a `u64`.
pub(crate) const MAX_VARINT_LEN: usize = 10;

/// The outcome of parsing a frame's head at the start of a byte slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// The head is not complete: at least `needed` bytes (counted from the
    /// start of the frame) must be buffered before parsing again. A reader
    /// that reads exactly that many never reads past the head.
    Incomplete { needed: usize },
    /// The head takes `len` bytes and its length field carries `wire`.
    Complete { len: usize, wire: u64 },
}

/// What to do with a frame once its head is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Buffer and deliver its body of this many bytes.
    Take(usize),
    /// Skip its body of this many bytes ([`Oversize::Discard`]).
    Discard(u64),
}

impl FrameConfig {
    /// The head at the start of `src` if it is complete and its length field
    /// is read in one step (any fixed width, or a one-byte varint): the fast
    /// path. Returns the head's length (the bytes before the length field
    /// and the field itself) and the field's value; `None` in every other
    /// case, including malformed heads, which
    /// [`parse_head`](Self::parse_head) then reports.
    ///
    /// `PLAIN` says the configuration has no header before the length field
    /// ([`FrameConfig::plain`]), so that the default layout reads its length
    /// without looking up the offset.
    #[inline(always)]
    pub(crate) fn peek_head<const PLAIN: bool>(&self, src: &[u8]) -> Option<(usize, u64)> {
        let offset = if PLAIN { 0 } else { self.offset };
        let field = if PLAIN { src } else { src.get(offset..)? };
        let (width, wire) = match self.prefix {
            LengthPrefix::U32Be => (4, u64::from(u32::from_be_bytes(*field.first_chunk()?))),
            LengthPrefix::U32Le => (4, u64::from(u32::from_le_bytes(*field.first_chunk()?))),
            LengthPrefix::U16Be => (2, u64::from(u16::from_be_bytes(*field.first_chunk()?))),
            LengthPrefix::U16Le => (2, u64::from(u16::from_le_bytes(*field.first_chunk()?))),
            LengthPrefix::U8 => (1, u64::from(*field.first()?)),
            LengthPrefix::U64Be => (8, u64::from_be_bytes(*field.first_chunk()?)),
            LengthPrefix::U64Le => (8, u64::from_le_bytes(*field.first_chunk()?)),
            LengthPrefix::U24Be => (3, uint::<3, true>(field)?),
            LengthPrefix::U24Le => (3, uint::<3, false>(field)?),
            LengthPrefix::U40Be => (5, uint::<5, true>(field)?),
            LengthPrefix::U40Le => (5, uint::<5, false>(field)?),
            LengthPrefix::U48Be => (6, uint::<6, true>(field)?),
            LengthPrefix::U48Le => (6, uint::<6, false>(field)?),
            LengthPrefix::U56Be => (7, uint::<7, true>(field)?),
            LengthPrefix::U56Le => (7, uint::<7, false>(field)?),
            LengthPrefix::Varint => match field.first() {
                Some(&byte) if byte < 0x80 => (1, u64::from(byte)),
                _ => return None,
            },
        };
        Some((offset + width, wire))
    }

    /// Parses the head at the start of `src` without consuming anything.
    pub(crate) fn parse_head(&self, src: &[u8]) -> Result<Parsed, Error> {
        if let Some(width) = self.prefix.width() {
            return Ok(match self.peek_head::<false>(src) {
                Some((len, wire)) => Parsed::Complete { len, wire },
                None => Parsed::Incomplete {
                    needed: self.offset + width,
                },
            });
        }
        let Some(field) = src.get(self.offset..) else {
            return Ok(Parsed::Incomplete {
                needed: self.offset + 1,
            });
        };
        let mut wire = 0u64;
        for (i, &byte) in field.iter().take(self.max_varint_len).enumerate() {
            if varint_step(&mut wire, i, byte)? {
                return Ok(Parsed::Complete {
                    len: self.offset + i + 1,
                    wire,
                });
            }
        }
        if field.len() >= self.max_varint_len {
            // `max_varint_len` bytes, all with the continuation bit set.
            return Err(Error::InvalidVarint {
                len: self.max_varint_len + 1,
            });
        }
        Ok(Parsed::Incomplete {
            needed: src.len() + 1,
        })
    }

    /// The most bytes a head (the bytes before the length field and the
    /// field itself) can take.
    pub(crate) fn max_head_len(&self) -> usize {
        self.offset + self.max_field_len()
    }

    /// The most bytes the length field can take.
    pub(crate) fn max_field_len(&self) -> usize {
        match self.prefix.width() {
            Some(width) => width,
            None => self.varint_max_bytes.unwrap_or(MAX_VARINT_LEN),
        }
    }

    /// The largest value the length field can carry.
    pub(crate) fn max_field_value(&self) -> u64 {
        match (self.prefix, self.varint_max_bytes) {
            (LengthPrefix::Varint, Some(bytes)) if bytes < MAX_VARINT_LEN => (1 << (7 * bytes)) - 1,
            (prefix, _) => prefix.max_value(),
        }
    }

    /// How many leading bytes of a frame whose head takes `head_len` bytes
    /// are dropped before it is delivered.
    #[inline(always)]
    pub(crate) fn strip_len(&self, head_len: usize) -> usize {
        match self.strip {
            Some(strip) => strip,
            None => head_len,
        }
    }

    /// The body length a length field value describes: `wire + adjustment`,
    /// or `None` if that is below zero or past `u64::MAX`.
    #[inline(always)]
    pub(crate) fn body_len(&self, wire: u64) -> Option<u64> {
        wire.checked_add_signed(self.adjustment)
    }

    /// The length field value that describes a body of `len` bytes
    /// (`len - adjustment`), if the field can carry it.
    pub(crate) fn wire_len(&self, len: u64) -> Option<u64> {
        let wire = u64::try_from(i128::from(len) - i128::from(self.adjustment)).ok()?;
        (wire <= self.max_field_value()).then_some(wire)
    }

    /// The longest body any length field value can describe.
    pub(crate) fn max_body_len_by_field(&self) -> u64 {
        clamp_u64(i128::from(self.max_field_value()) + i128::from(self.adjustment))
    }

    /// The largest length field value whose body fits `max_frame_length`
    /// (at least 1, so that a varint limit is never 0 bytes).
    pub(crate) fn max_wire_len(&self) -> u64 {
        clamp_u64(i128::from(self.max_frame_length as u64) - i128::from(self.adjustment)).max(1)
    }

    /// Decides what to do with a frame whose length field carries `wire`:
    /// the length is adjusted with checked arithmetic and compared with the
    /// maximum before anything is reserved for it.
    pub(crate) fn judge(&self, wire: u64) -> Result<Verdict, Error> {
        let declared = self.body_len(wire).ok_or(Error::InvalidLength {
            wire,
            adjustment: self.adjustment,
        })?;
        match usize::try_from(declared) {
            Ok(len) if len <= self.max_frame_length => Ok(Verdict::Take(len)),
            _ => match self.oversize {
                Oversize::Discard => Ok(Verdict::Discard(declared)),
                Oversize::Error => Err(Error::FrameTooLarge {
                    declared,
                    max: self.max_frame_length as u64,
                }),
            },
        }
    }
}

/// How many more bytes of buffer to reserve for a body of which `arrived`
/// bytes are buffered and `missing` are still to come: what is missing, but
/// never more than what has arrived (at least [`MIN_READ_AHEAD`]) nor more
/// than [`READ_AHEAD`]. The declared length is only a claim until the bytes
/// arrive; the buffer grows by doubling as they do.
#[inline]
pub(crate) fn read_ahead(missing: usize, arrived: usize) -> usize {
    missing.min(arrived.max(MIN_READ_AHEAD)).min(READ_AHEAD)
}

/// An `N`-byte unsigned integer at the start of `field`, in either byte
/// order: the widths that have no Rust integer type.
#[inline(always)]
fn uint<const N: usize, const BIG: bool>(field: &[u8]) -> Option<u64> {
    let bytes = field.first_chunk::<N>()?;
    let mut value = [0u8; 8];
    Some(if BIG {
        value[8 - N..].copy_from_slice(bytes);
        u64::from_be_bytes(value)
    } else {
        value[..N].copy_from_slice(bytes);
        u64::from_le_bytes(value)
    })
}

fn clamp_u64(value: i128) -> u64 {
    u64::try_from(value.max(0)).unwrap_or(u64::MAX)
}

/// Adds the `index`th (0-based) byte of an unsigned LEB128 varint to
/// `value`. Returns whether the varint is complete, or an error if it
/// overflows 64 bits.
#[inline]
fn varint_step(value: &mut u64, index: usize, byte: u8) -> Result<bool, Error> {
    let group = u64::from(byte & 0x7f);
    let shift = 7 * index;
    // The tenth byte may carry bit 63 only; there is no eleventh.
    if shift > 63 || (shift == 63 && group > 1) {
        return Err(Error::InvalidVarint { len: index + 1 });
    }
    *value |= group << shift;
    Ok(byte & 0x80 == 0)
}

/// The number of bytes the LEB128 encoding of `value` takes.
pub(crate) const fn varint_len(value: u64) -> usize {
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}
