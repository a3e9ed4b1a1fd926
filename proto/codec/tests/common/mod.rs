//! Helpers shared by the integration tests: configurations, an encoder
//! written independently of the codec, chunked readers and short writers.
//!
//! Every test binary uses a different subset of these helpers.
#![allow(dead_code)]

use bytes::{Bytes, BytesMut};
use framekit_codec::Error;
use framekit_codec::frame::{Builder, FrameCodec, FrameConfig, LengthPrefix, Oversize};
use futures_util::StreamExt;
use proptest::prelude::*;
use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::codec::FramedRead;

/// Every length prefix encoding.
pub const PREFIXES: [LengthPrefix; 8] = [
    LengthPrefix::U8,
    LengthPrefix::U16Be,
    LengthPrefix::U16Le,
    LengthPrefix::U32Be,
    LengthPrefix::U32Le,
    LengthPrefix::U64Be,
    LengthPrefix::U64Le,
    LengthPrefix::Varint,
];

/// A configuration built from its parts.
pub fn config(
    prefix: LengthPrefix,
    adjustment: i64,
    max_frame_length: usize,
    oversize: Oversize,
) -> FrameConfig {
    Builder::new()
        .prefix(prefix)
        .length_adjustment(adjustment)
        .max_frame_length(max_frame_length)
        .oversize(oversize)
        .config()
}

/// The adjustment that makes the length count a fixed-width prefix itself
/// (as PostgreSQL's does); a varint has no fixed width, so it gets an
/// arbitrary negative adjustment instead.
pub fn counts_prefix(prefix: LengthPrefix) -> i64 {
    match prefix.width() {
        Some(width) => -i64::try_from(width).unwrap(),
        None => -3,
    }
}

/// Every prefix, each with no adjustment, with a length that counts the
/// prefix, and with a positive adjustment (a length that leaves out a
/// trailer of 2 bytes).
pub fn all_configs(max_frame_length: usize, oversize: Oversize) -> Vec<FrameConfig> {
    PREFIXES
        .iter()
        .flat_map(|&prefix| {
            [0, counts_prefix(prefix), 2]
                .map(|adjustment| config(prefix, adjustment, max_frame_length, oversize))
        })
        .collect()
}

/// Any prefix with any of the adjustments of [`all_configs`], or a small
/// random one, and the default maximum.
pub fn any_config() -> impl Strategy<Value = FrameConfig> {
    (
        proptest::sample::select(PREFIXES.to_vec()),
        prop_oneof![Just(0i64), Just(i64::MIN), -9i64..=3],
    )
        .prop_map(|(prefix, adjustment)| {
            // `i64::MIN` stands for "the length counts the prefix".
            let adjustment = if adjustment == i64::MIN {
                counts_prefix(prefix)
            } else {
                adjustment
            };
            config(
                prefix,
                adjustment,
                framekit_codec::frame::DEFAULT_MAX_FRAME_LENGTH,
                Oversize::Error,
            )
        })
}

/// The shortest payload `config` can encode (a positive adjustment must be
/// covered by the payload).
pub fn min_payload_len(config: &FrameConfig) -> usize {
    usize::try_from(config.length_adjustment().max(0)).unwrap()
}

/// The longest payload `config` can encode.
pub fn max_payload_len(config: &FrameConfig) -> usize {
    usize::try_from(config.max_payload_len()).unwrap_or(usize::MAX)
}

/// Whether `config` can encode any payload at all (a positive adjustment
/// above the maximum leaves none).
pub fn can_encode(config: &FrameConfig) -> bool {
    min_payload_len(config) <= max_payload_len(config)
}

/// One payload that `config` can encode: mostly short, sometimes past the
/// 1-byte varint and `U8` limits, rarely past the 2-byte varint limit
/// (16 KiB). Requires [`can_encode`].
pub fn payload(config: &FrameConfig) -> BoxedStrategy<Vec<u8>> {
    let min = min_payload_len(config);
    let max = max_payload_len(config);
    let sizes = [(8, 0, 40), (3, 100, 600), (1, 16_300, 16_500)]
        .into_iter()
        .filter_map(|(weight, lo, hi)| {
            let (lo, hi) = (lo.max(min), hi.min(max));
            (lo <= hi).then(|| {
                (
                    weight,
                    proptest::collection::vec(any::<u8>(), lo..=hi).boxed(),
                )
            })
        })
        .collect::<Vec<_>>();
    proptest::strategy::Union::new_weighted(sizes).boxed()
}

/// A list of payloads (possibly empty, and possibly holding empty payloads).
pub fn payloads(config: &FrameConfig) -> impl Strategy<Value = Vec<Vec<u8>>> + use<> {
    proptest::collection::vec(payload(config), 0..8)
}

/// A configuration and payloads it can encode.
pub fn config_and_payloads() -> impl Strategy<Value = (FrameConfig, Vec<Vec<u8>>)> {
    any_config().prop_flat_map(|config| (Just(config), payloads(&config)))
}

/// How to cut a stream into chunks: the chunk sizes, used in turn.
pub fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        // One byte at a time: every prefix arrives cut at every point.
        Just(vec![1]),
        // Cuts through prefixes.
        proptest::collection::vec(1usize..5, 1..8),
        proptest::collection::vec(1usize..64, 1..16),
        // Chunks that glue several frames together.
        proptest::collection::vec(1usize..5000, 1..8),
        // The whole stream at once.
        Just(vec![usize::MAX]),
    ]
}

/// Cuts `stream` into chunks of the given sizes, used in turn.
pub fn chunk(stream: &[u8], sizes: &[usize]) -> Vec<Vec<u8>> {
    assert!(sizes.iter().all(|&size| size > 0));
    let mut chunks = Vec::new();
    let mut rest = stream;
    for &size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (head, tail) = rest.split_at(size.min(rest.len()));
        chunks.push(head.to_vec());
        rest = tail;
    }
    chunks
}

/// The length prefix for a payload of `len` bytes, written from the
/// configuration's description rather than by the codec, so that a codec
/// that reads and writes the same wrong bytes still fails.
pub fn reference_head(config: &FrameConfig, len: usize) -> Vec<u8> {
    let wire = i128::try_from(len).unwrap() - i128::from(config.length_adjustment());
    let wire = u64::try_from(wire).expect("payload shorter than the adjustment");
    match config.prefix() {
        LengthPrefix::U8 => vec![u8::try_from(wire).unwrap()],
        LengthPrefix::U16Be => u16::try_from(wire).unwrap().to_be_bytes().to_vec(),
        LengthPrefix::U16Le => u16::try_from(wire).unwrap().to_le_bytes().to_vec(),
        LengthPrefix::U32Be => u32::try_from(wire).unwrap().to_be_bytes().to_vec(),
        LengthPrefix::U32Le => u32::try_from(wire).unwrap().to_le_bytes().to_vec(),
        LengthPrefix::U64Be => wire.to_be_bytes().to_vec(),
        LengthPrefix::U64Le => wire.to_le_bytes().to_vec(),
        LengthPrefix::Varint => leb128(wire),
        other => panic!("no reference encoding for {other:?}"),
    }
}

/// Unsigned LEB128: 7 bits at a time, least significant first, the high bit
/// set on every byte but the last.
pub fn leb128(mut value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let low = u8::try_from(value & 0x7f).unwrap();
        value >>= 7;
        if value == 0 {
            out.push(low);
            return out;
        }
        out.push(low | 0x80);
    }
}

/// One whole frame, from [`reference_head`].
pub fn reference_frame(config: &FrameConfig, payload: &[u8]) -> Vec<u8> {
    let mut frame = reference_head(config, payload.len());
    frame.extend_from_slice(payload);
    frame
}

/// The frames of all `payloads`, one after the other.
pub fn reference_stream(config: &FrameConfig, payloads: &[Vec<u8>]) -> Vec<u8> {
    payloads
        .iter()
        .flat_map(|payload| reference_frame(config, payload))
        .collect()
}

/// Where each frame of the stream ends (and where the stream starts).
pub fn frame_boundaries(config: &FrameConfig, payloads: &[Vec<u8>]) -> Vec<usize> {
    let mut boundaries = vec![0];
    let mut end = 0;
    for payload in payloads {
        end += reference_frame(config, payload).len();
        boundaries.push(end);
    }
    boundaries
}

/// Payloads as `Bytes`, to compare with decoded frames.
pub fn to_bytes(payloads: &[Vec<u8>]) -> Vec<Bytes> {
    payloads.iter().cloned().map(Bytes::from).collect()
}

/// One of the three decoding APIs, run over a chunked stream to its end.
pub type DecodeFn = fn(&FrameConfig, &[Vec<u8>]) -> Result<Vec<Bytes>, Error>;

/// Decodes `chunks` with the sans-IO API as a caller would: append each
/// chunk, take every complete frame, and at the end call `decode_eof`.
pub fn decode_sans_io(config: &FrameConfig, chunks: &[Vec<u8>]) -> Result<Vec<Bytes>, Error> {
    let mut codec = FrameCodec::with_config(*config);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while let Some(frame) = codec.decode_frame(&mut buf)? {
            frames.push(frame);
        }
    }
    while let Some(frame) = codec.decode_eof(&mut buf)? {
        frames.push(frame);
    }
    Ok(frames)
}

/// Decodes `chunks` with `FramedRead`, the chunks arriving one per read with
/// `Pending` in between, until the stream ends or yields an error.
pub fn decode_framed(config: &FrameConfig, chunks: &[Vec<u8>]) -> Result<Vec<Bytes>, Error> {
    let reader = ChunkedAsyncRead::new(chunks);
    let mut framed = FramedRead::new(reader, FrameCodec::with_config(*config));
    tokio_test::block_on(async {
        let mut frames = Vec::new();
        while let Some(frame) = framed.next().await {
            frames.push(frame?);
        }
        Ok(frames)
    })
}

/// Decodes `chunks` with the blocking API, one chunk per `read` call.
pub fn decode_blocking(config: &FrameConfig, chunks: &[Vec<u8>]) -> Result<Vec<Bytes>, Error> {
    let mut reader = ChunkedRead::new(chunks);
    let mut frames = Vec::new();
    while let Some(frame) = framekit_codec::blocking::read_frame(&mut reader, config)? {
        frames.push(frame);
    }
    Ok(frames)
}

/// A blocking reader that returns at most one chunk per `read` call, and an
/// `Interrupted` error before every other chunk (which readers must retry).
#[derive(Debug)]
pub struct ChunkedRead {
    chunks: VecDeque<Vec<u8>>,
    interrupt: bool,
    /// The largest buffer a caller asked to fill.
    pub largest_read: usize,
}

impl ChunkedRead {
    pub fn new(chunks: &[Vec<u8>]) -> Self {
        ChunkedRead {
            chunks: chunks.iter().filter(|c| !c.is_empty()).cloned().collect(),
            interrupt: false,
            largest_read: 0,
        }
    }
}

impl Read for ChunkedRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.largest_read = self.largest_read.max(buf.len());
        let Some(chunk) = self.chunks.front_mut() else {
            return Ok(0);
        };
        if self.interrupt {
            self.interrupt = false;
            return Err(io::ErrorKind::Interrupted.into());
        }
        let n = buf.len().min(chunk.len());
        buf[..n].copy_from_slice(&chunk[..n]);
        chunk.drain(..n);
        if chunk.is_empty() {
            self.chunks.pop_front();
            self.interrupt = self.chunks.len().is_multiple_of(2);
        }
        Ok(n)
    }
}

/// What a [`ChunkedAsyncRead`] does once its chunks are used up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterChunks {
    /// End of stream.
    Eof,
    /// Stay `Pending` forever, like a peer that stops sending.
    Stall,
}

/// An async reader that returns at most one chunk per read, with `Pending`
/// before each chunk, so every chunk boundary is a separate wake-up of the
/// decoder.
#[derive(Debug)]
pub struct ChunkedAsyncRead {
    chunks: VecDeque<Vec<u8>>,
    pending: bool,
    after: AfterChunks,
}

impl ChunkedAsyncRead {
    pub fn new(chunks: &[Vec<u8>]) -> Self {
        Self::then(chunks, AfterChunks::Eof)
    }

    pub fn then(chunks: &[Vec<u8>], after: AfterChunks) -> Self {
        ChunkedAsyncRead {
            chunks: chunks.iter().filter(|c| !c.is_empty()).cloned().collect(),
            pending: true,
            after,
        }
    }
}

impl AsyncRead for ChunkedAsyncRead {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pending {
            self.pending = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let Some(chunk) = self.chunks.front_mut() else {
            return match self.after {
                AfterChunks::Eof => Poll::Ready(Ok(())),
                AfterChunks::Stall => Poll::Pending,
            };
        };
        let n = buf.remaining().min(chunk.len());
        buf.put_slice(&chunk[..n]);
        chunk.drain(..n);
        if chunk.is_empty() {
            self.chunks.pop_front();
            self.pending = true;
        }
        Poll::Ready(Ok(()))
    }
}

/// A deterministic pseudo-random sequence (SplitMix64), for tests that need
/// many random numbers from one seed.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound`.
    pub fn below(&mut self, bound: usize) -> usize {
        usize::try_from(self.next_u64() % u64::try_from(bound).unwrap()).unwrap()
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64().to_le_bytes()[0]).collect()
    }
}

/// A blocking writer that accepts a few bytes per call (the sizes used in
/// turn, across the slices of a vectored write), returns `Interrupted` now
/// and then, and records what it was given.
#[derive(Debug)]
pub struct ShortWriter {
    pub written: Vec<u8>,
    sizes: Vec<usize>,
    calls: usize,
}

impl ShortWriter {
    pub fn new(sizes: &[usize]) -> Self {
        assert!(sizes.iter().all(|&size| size > 0));
        ShortWriter {
            written: Vec::new(),
            sizes: sizes.to_vec(),
            calls: 0,
        }
    }

    fn next_limit(&mut self) -> Option<usize> {
        self.calls += 1;
        if self.calls.is_multiple_of(3) {
            return None;
        }
        Some(self.sizes[self.calls % self.sizes.len()])
    }
}

impl Write for ShortWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let Some(mut limit) = self.next_limit() else {
            return Err(io::ErrorKind::Interrupted.into());
        };
        let mut n = 0;
        for buf in bufs {
            let take = limit.min(buf.len());
            self.written.extend_from_slice(&buf[..take]);
            n += take;
            limit -= take;
            if limit == 0 {
                break;
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// An async writer that accepts a few bytes per call (the sizes used in
/// turn), is `Pending` before every write, and may or may not support
/// vectored writes.
#[derive(Debug)]
pub struct ShortAsyncWriter {
    pub written: Vec<u8>,
    sizes: Vec<usize>,
    calls: usize,
    vectored: bool,
    pending: bool,
}

impl ShortAsyncWriter {
    pub fn new(sizes: &[usize], vectored: bool) -> Self {
        assert!(sizes.iter().all(|&size| size > 0));
        ShortAsyncWriter {
            written: Vec::new(),
            sizes: sizes.to_vec(),
            calls: 0,
            vectored,
            pending: true,
        }
    }

    fn poll_take(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        if self.pending {
            self.pending = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.pending = true;
        self.calls += 1;
        let mut limit = self.sizes[self.calls % self.sizes.len()];
        let mut n = 0;
        for buf in bufs {
            let take = limit.min(buf.len());
            self.written.extend_from_slice(&buf[..take]);
            n += take;
            limit -= take;
            if limit == 0 {
                break;
            }
        }
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for ShortAsyncWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_take(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_take(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.vectored
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
