//! The decoding rules, in one place for the sans-IO decoder and the blocking
//! reader: reading a frame's head from a byte slice, the length adjustment,
//! whether a frame is taken, skipped or refused, and how much buffer to
//! reserve ahead of the bytes that have arrived; and the same rules
//! precomputed for the decoder's fast path ([`Shortcut`]), which a test
//! holds to them.
//!
//! Nothing here performs I/O or keeps state; both decoders feed it the bytes
//! they hold and act on its answers.

use super::{ByteOrder, FrameConfig, LengthPrefix, MIN_READ_AHEAD, Oversize, READ_AHEAD};
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
    /// Parses the head at the start of `src` without consuming anything.
    pub(crate) fn parse_head(&self, src: &[u8]) -> Result<Parsed, Error> {
        if let Some(width) = self.prefix.width() {
            let len = self.offset + width;
            return Ok(if src.len() < len {
                Parsed::Incomplete { needed: len }
            } else {
                Parsed::Complete {
                    len,
                    wire: Field::of(self.prefix).value(window(src, self.offset)),
                }
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
        // `ok_or_else`: an error built eagerly is dropped on every call.
        let declared = self.body_len(wire).ok_or_else(|| Error::InvalidLength {
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

/// How to read a fixed-width length field, or a one-byte varint, from the
/// eight bytes that start with it: one formula for every width and byte
/// order, with its constants chosen when the configuration is read, so that
/// no frame pays for a choice among fifteen readers. The bytes of the
/// window past the field are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Field {
    big: bool,
    /// Big-endian: how far the window, read as a big-endian number, is
    /// shifted right (64 bits less the field's).
    shift: u32,
    /// Little-endian: the field's bits of the window read as a
    /// little-endian number.
    mask: u64,
}

impl Field {
    /// The reader for `prefix`; for a varint, of its first byte.
    fn of(prefix: LengthPrefix) -> Field {
        // 1 to 8 bytes.
        let bits = 8 * u32::try_from(prefix.width().unwrap_or(1)).unwrap_or(8);
        Field {
            big: prefix.byte_order() == Some(ByteOrder::BigEndian),
            shift: 64 - bits,
            mask: u64::MAX >> (64 - bits),
        }
    }

    #[inline(always)]
    fn value(&self, window: [u8; 8]) -> u64 {
        if self.big {
            self.read::<true>(window)
        } else {
            self.read::<false>(window)
        }
    }

    /// [`value`](Self::value) for a field whose byte order is known.
    #[inline(always)]
    fn read<const BIG: bool>(&self, window: [u8; 8]) -> u64 {
        if BIG {
            u64::from_be_bytes(window) >> self.shift
        } else {
            u64::from_le_bytes(window) & self.mask
        }
    }
}

/// The eight bytes of `src` from `offset` on, zero past its end.
#[inline]
fn window(src: &[u8], offset: usize) -> [u8; 8] {
    match src.get(offset..).and_then(<[u8]>::first_chunk) {
        Some(window) => *window,
        None => padded_window(src, offset),
    }
}

/// [`window`] near the end of `src`.
#[cold]
fn padded_window(src: &[u8], offset: usize) -> [u8; 8] {
    let mut window = [0; 8];
    let rest = src.get(offset..).unwrap_or_default();
    let n = rest.len().min(window.len());
    window[..n].copy_from_slice(&rest[..n]);
    window
}

/// The decoding rules for a whole frame whose length field is read in one
/// step (any fixed width, or a one-byte varint), precomputed from a
/// configuration when a codec is built: the decoder's fast path.
///
/// It takes exactly the frames that [`FrameConfig::parse_head`] and
/// [`FrameConfig::judge`] take and whose end fits a `usize`, and declines
/// everything else (partial frames, longer varints, oversized frames and
/// errors), which the decoder then parses with those two. A frame costs one
/// read of the field, one range test of its value, one addition and one
/// comparison with the buffered length; nothing in it depends on the layout
/// but these constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shortcut {
    /// Where the length field starts.
    offset: usize,
    /// The head's length: the header and a field of the shortest width.
    head_len: usize,
    field: Field,
    /// The field values of frames taken are `lo..lo + span`: those whose
    /// adjusted length is neither negative nor above the maximum (and
    /// below 0x80 for a varint, whose first byte then is the whole field).
    lo: u64,
    span: u64,
    /// Added (wrapping) to a field value to give the frame's end: the
    /// head's length plus the adjustment.
    bias: u64,
    /// How many leading bytes of a frame are dropped.
    strip: usize,
}

impl FrameConfig {
    /// The fast path's rules for this configuration.
    pub(crate) fn shortcut(&self) -> Shortcut {
        let head_len = self.offset + self.prefix.width().unwrap_or(1);
        let field_max = match self.prefix {
            LengthPrefix::Varint => 0x7f,
            _ => self.max_field_value(),
        };
        // The longest body whose end, after the head, still fits a `usize`.
        let max_body = self.max_frame_length.min(usize::MAX - head_len);
        let adjustment = i128::from(self.adjustment);
        let lo = (-adjustment).max(0);
        let hi = (max_body as i128 - adjustment).min(i128::from(field_max));
        Shortcut {
            offset: self.offset,
            head_len,
            field: Field::of(self.prefix),
            lo: clamp_u64(lo),
            // `hi - lo + 1` is at most `2^64 - lo`, and below `2^64` when
            // `lo` is 0 (then `hi <= max_body < usize::MAX`).
            span: clamp_u64(hi - lo + 1),
            bias: (head_len as u64).wrapping_add_signed(self.adjustment),
            strip: self.strip_len(head_len),
        }
    }
}

impl Shortcut {
    /// Whether the length field is read big-endian, which picks the copy
    /// of [`frame`](Self::frame) the decoder runs.
    pub(crate) fn big_endian(&self) -> bool {
        self.field.big
    }

    /// The frame at the start of `src`, if it is complete and taken: its
    /// end, and how many of its leading bytes are dropped. `BIG` must be
    /// [`big_endian`](Self::big_endian).
    #[inline(always)]
    pub(crate) fn frame<const BIG: bool>(&self, src: &[u8]) -> Option<(usize, usize)> {
        let field = src.get(self.offset..)?;
        let window = match field.first_chunk() {
            Some(window) => *window,
            // A frame shorter than eight bytes from its length field.
            None if src.len() >= self.head_len => padded_window(src, self.offset),
            None => return None,
        };
        let wire = self.field.read::<BIG>(window);
        if wire.wrapping_sub(self.lo) >= self.span {
            return None;
        }
        // `wire + adjustment` is within `0..=max_body`: the true end,
        // `head_len` more, fits a `usize`, so the wrapping sum is exact.
        let end = usize::try_from(wire.wrapping_add(self.bias)).ok()?;
        (src.len() >= end).then_some((end, self.strip))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Builder;
    use proptest::prelude::*;

    const PREFIXES: [LengthPrefix; 16] = [
        LengthPrefix::U8,
        LengthPrefix::U16Be,
        LengthPrefix::U16Le,
        LengthPrefix::U24Be,
        LengthPrefix::U24Le,
        LengthPrefix::U32Be,
        LengthPrefix::U32Le,
        LengthPrefix::U40Be,
        LengthPrefix::U40Le,
        LengthPrefix::U48Be,
        LengthPrefix::U48Le,
        LengthPrefix::U56Be,
        LengthPrefix::U56Le,
        LengthPrefix::U64Be,
        LengthPrefix::U64Le,
        LengthPrefix::Varint,
    ];

    /// Any configuration the builder accepts, with small and extreme
    /// adjustments and maxima.
    fn config() -> impl Strategy<Value = FrameConfig> {
        (
            0usize..20,
            proptest::sample::select(PREFIXES.to_vec()),
            proptest::option::of(1usize..=MAX_VARINT_LEN),
            prop_oneof![-40i64..40, Just(i64::MIN), Just(i64::MAX), any::<i64>()],
            proptest::option::of(0usize..40),
            prop_oneof![
                0usize..64,
                Just(usize::MAX),
                Just(usize::MAX - 3),
                any::<usize>()
            ],
            any::<bool>(),
        )
            .prop_map(
                |(offset, prefix, varint_max, adjustment, strip, max, discard)| {
                    let mut builder = Builder::new();
                    builder
                        .length_field_offset(offset)
                        .prefix(prefix)
                        .length_adjustment(adjustment)
                        .max_frame_length(max)
                        .oversize(if discard {
                            Oversize::Discard
                        } else {
                            Oversize::Error
                        });
                    if let (LengthPrefix::Varint, Some(bytes)) = (prefix, varint_max) {
                        builder.varint_max_bytes(bytes);
                    }
                    let unstripped = builder.config();
                    // A strip longer than the shortest frame is refused.
                    strip.map_or(unstripped, |strip| {
                        builder.strip(strip).try_config().unwrap_or(unstripped)
                    })
                },
            )
    }

    /// The length field carrying `wire` (reduced to what the field holds),
    /// written from the prefix's description.
    fn field(prefix: LengthPrefix, wire: u64) -> Vec<u8> {
        match (prefix.width(), prefix.byte_order()) {
            (Some(width), Some(ByteOrder::BigEndian)) => wire.to_be_bytes()[8 - width..].to_vec(),
            (Some(width), _) => wire.to_le_bytes()[..width].to_vec(),
            (None, _) => {
                let mut out = Vec::new();
                let mut value = wire;
                while value >= 0x80 {
                    out.push((value & 0x7f) as u8 | 0x80);
                    value >>= 7;
                }
                out.push(u8::try_from(value).unwrap());
                out
            }
        }
    }

    /// A configuration and the start of a stream: a header, a length field
    /// carrying a value at or next to a boundary of the accepted range (or
    /// any value), and up to 300 more bytes, possibly cut anywhere.
    fn config_and_bytes() -> impl Strategy<Value = (FrameConfig, Vec<u8>)> {
        config().prop_flat_map(|config| {
            let adjustment = i128::from(config.adjustment);
            let lo = (-adjustment).max(0);
            let hi = config.max_frame_length as i128 - adjustment;
            let near = [lo - 1, lo, lo + 1, hi - 1, hi, hi + 1, 0x7f, 0x80]
                .map(|value| u64::try_from(value.max(0)).unwrap_or(u64::MAX));
            let wire = prop_oneof![
                proptest::sample::select(near.to_vec()),
                0u64..64,
                Just(u64::MAX),
                any::<u64>(),
            ];
            (
                Just(config),
                proptest::collection::vec(any::<u8>(), config.offset),
                wire,
                // Longer bodies reach the ends of two-byte varints.
                prop_oneof![
                    proptest::collection::vec(any::<u8>(), 0..48),
                    proptest::collection::vec(any::<u8>(), 0..300),
                ],
                any::<proptest::sample::Index>(),
                any::<bool>(),
            )
                .prop_map(|(config, header, wire, body, cut, whole)| {
                    let mut bytes = header;
                    bytes.extend(field(config.prefix, wire));
                    bytes.extend(body);
                    if !whole {
                        bytes.truncate(cut.index(bytes.len() + 1));
                    }
                    (config, bytes)
                })
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn the_fast_path_takes_exactly_the_complete_frames_the_rules_take(
            (config, bytes) in config_and_bytes(),
        ) {
            let shortcut = config.shortcut();
            let taken = if shortcut.big_endian() {
                shortcut.frame::<true>(&bytes)
            } else {
                shortcut.frame::<false>(&bytes)
            };
            // What the slow path does with the same bytes: a complete head
            // read in one step (any fixed width, or a one-byte varint), a
            // body that is taken, and the whole frame buffered.
            let one_step = |len: usize| config.prefix.width().is_some() || len == config.offset + 1;
            let expected = match config.parse_head(&bytes) {
                Ok(Parsed::Complete { len, wire }) if one_step(len) => match config.judge(wire) {
                    Ok(Verdict::Take(body)) => body
                        .checked_add(len)
                        .filter(|&end| end <= bytes.len())
                        .map(|end| (end, config.strip_len(len))),
                    _ => None,
                },
                _ => None,
            };
            prop_assert_eq!(taken, expected);
        }
    }
}
