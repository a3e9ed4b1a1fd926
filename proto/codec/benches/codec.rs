//! Framing throughput: `framekit_codec::frame::FrameCodec` against tokio-util's
//! `LengthDelimitedCodec` and wire-codec's `FrameCodec<LengthPrefixed>`,
//! on identical byte streams (4-byte big-endian length counting the payload
//! only, 16 MiB maximum for every codec).
//!
//! ```text
//! cargo bench -p framekit-codec --bench codec             # full run, about 2 minutes
//! cargo bench -p framekit-codec --bench codec -- --quick  # quick run, about 11 s
//! cargo bench -p framekit-codec --bench codec -- decode_16b  # one group
//! ```
//!
//! Results, the machine and the method are in `docs/BENCHMARKS.md`;
//! `benches/codec_alternating.rs` measures the same decoders in alternation
//! and counts their instructions.
//!
//! Every decoder is driven through `tokio_util::codec::Decoder::decode`, as
//! `Framed` drives it, and every frame it yields goes through `black_box`
//! before it is dropped. Inputs are built outside the timed region.
//!
//! - `decode_16b/one_buffer`: 1,000,000 frames of 16 payload bytes, all in
//!   one buffer.
//! - `decode_16b/chunked_1460`: the same stream appended to the read buffer
//!   1,460 bytes (one TCP segment's payload) at a time, draining every
//!   complete frame after each append. The copy into the buffer is timed
//!   too, for every codec alike. 1,460 is a multiple of the 20-byte frame,
//!   so `decode_16b/chunked_1448` (a segment with TCP timestamps) does the
//!   same with frames and prefixes cut between appends.
//! - `decode_64k/one_buffer` and `decode_64k/chunked_64k`: 1,000 frames of
//!   64 KiB, in one buffer or appended in 64 KiB reads (so every frame
//!   straddles two reads).
//! - `encode_1m`: one 1 MiB payload, copied into a write buffer by each
//!   codec's `Encoder`, against this crate's vectored paths, which hand the
//!   prefix and the untouched payload to a writer that only counts bytes.
//!   Before measuring, the bench checks that the writer received the payload
//!   at its original address, i.e. that no payload byte was copied.
//!
//! `decode_16b/one_buffer/slice_floor` is not a decoder: it walks the
//! prefixes of a frozen buffer and hands out `Bytes::slice`s, without any
//! check. It shows the floor that any decoder yielding `Bytes` pays.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::io::{self, IoSlice, Write};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use criterion::{
    BatchSize, BenchmarkGroup, Criterion, SamplingMode, Throughput, criterion_group,
    criterion_main, measurement::WallTime,
};
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};
use wire_codec::framing::{Endian, LengthPrefixed, LengthWidth};

/// The maximum frame length given to every codec.
const MAX_FRAME: usize = 16 * 1024 * 1024;
/// `Framed`'s initial read buffer capacity.
const READ_BUFFER: usize = 8 * 1024;

fn new_framekit() -> framekit_codec::frame::FrameCodec {
    framekit_codec::frame::FrameCodec::builder()
        .max_frame_length(MAX_FRAME)
        .new_codec()
}

fn new_length_delimited() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .big_endian()
        .max_frame_length(MAX_FRAME)
        .new_codec()
}

fn new_wire_codec() -> wire_codec::codec::FrameCodec<LengthPrefixed> {
    wire_codec::codec::FrameCodec::new(
        LengthPrefixed::new(LengthWidth::U32, Endian::Big).with_max_payload(MAX_FRAME as u64),
    )
}

/// `count` frames of `len` payload bytes each, 4-byte big-endian prefix.
fn stream(count: usize, len: usize) -> Vec<u8> {
    let prefix = u32::try_from(len).unwrap().to_be_bytes();
    let mut out = Vec::with_capacity(count * (len + 4));
    for i in 0..count {
        out.extend_from_slice(&prefix);
        // Varying content, so no frame is trivially equal to the next.
        out.extend((0..len).map(|j| u8::try_from(i.wrapping_add(j) % 251).unwrap()));
    }
    out
}

/// Decodes every complete frame in `src`, returning how many there were.
#[inline]
fn drain<D: Decoder>(codec: &mut D, src: &mut BytesMut) -> usize
where
    D::Error: std::fmt::Debug,
{
    let mut frames = 0;
    while let Some(frame) = codec.decode(src).unwrap() {
        black_box(frame);
        frames += 1;
    }
    frames
}

/// Decodes `wire` in one buffer (copied into `src` outside the timed
/// region).
fn bench_one_buffer<D, F>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    src: &mut BytesMut,
    wire: &[u8],
    count: usize,
    new: F,
) where
    D: Decoder,
    D::Error: std::fmt::Debug,
    F: Fn() -> D,
{
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                // Refill outside the timed region. Once the previous frames
                // are gone, `reserve` reclaims the same allocation, so no
                // iteration pays for fresh pages or for freeing them.
                src.clear();
                src.reserve(wire.len());
                src.extend_from_slice(wire);
                // An empty handle on the allocation keeps it alive until
                // the decoder is done: a codec that replaces an emptied read
                // buffer (as `LengthDelimitedCodec` does) would otherwise
                // free the input inside the timed region when its last
                // frame is dropped. It is also what the next iteration
                // refills, so every codec decodes from the same, already
                // mapped allocation.
                let keep = src.split_off(src.len());
                let mut codec = new();
                let start = Instant::now();
                let frames = drain(&mut codec, src);
                elapsed += start.elapsed();
                assert_eq!(frames, count);
                *src = keep;
            }
            elapsed
        });
    });
}

/// Appends `wire` to a read buffer `chunk` bytes at a time, as a reader
/// would, draining the complete frames after each append.
fn bench_chunked<D, F>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    wire: &[u8],
    count: usize,
    chunk: usize,
    new: F,
) where
    D: Decoder,
    D::Error: std::fmt::Debug,
    F: Fn() -> D,
{
    group.bench_function(name, |b| {
        b.iter_batched(
            || (new(), BytesMut::with_capacity(READ_BUFFER)),
            |(mut codec, mut src)| {
                let mut frames = 0;
                for piece in wire.chunks(chunk) {
                    src.extend_from_slice(piece);
                    frames += drain(&mut codec, &mut src);
                }
                assert_eq!(frames, count);
                assert!(src.is_empty());
                src
            },
            BatchSize::PerIteration,
        );
    });
}

/// Walks the prefixes of a frozen buffer and slices out each payload, with
/// no checks: the floor under any decoder that yields `Bytes`.
fn slice_floor(buf: &Bytes) -> usize {
    let mut pos = 0;
    let mut frames = 0;
    while let Some(head) = buf.get(pos..).and_then(|rest| rest.first_chunk::<4>()) {
        let start = pos + 4;
        let end = start + u32::from_be_bytes(*head) as usize;
        black_box(buf.slice(start..end));
        pos = end;
        frames += 1;
    }
    frames
}

fn configure(group: &mut BenchmarkGroup<'_, WallTime>) {
    // Each iteration takes milliseconds: flat sampling keeps the run short.
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
}

/// Runs the three codecs on `wire` in one buffer.
fn compare_one_buffer(
    c: &mut Criterion,
    name: &str,
    src: &mut BytesMut,
    wire: &[u8],
    count: usize,
    tp: Throughput,
) {
    let mut group = c.benchmark_group(name);
    configure(&mut group);
    group.throughput(tp);
    bench_one_buffer(&mut group, "framekit", src, wire, count, new_framekit);
    bench_one_buffer(&mut group, "wire_codec", src, wire, count, new_wire_codec);
    bench_one_buffer(
        &mut group,
        "length_delimited",
        src,
        wire,
        count,
        new_length_delimited,
    );
    group.finish();
}

/// Runs the three codecs on `wire` appended `chunk` bytes at a time.
fn compare_chunked(
    c: &mut Criterion,
    name: &str,
    wire: &[u8],
    count: usize,
    chunk: usize,
    tp: Throughput,
) {
    let mut group = c.benchmark_group(name);
    configure(&mut group);
    group.throughput(tp);
    bench_chunked(&mut group, "framekit", wire, count, chunk, new_framekit);
    bench_chunked(&mut group, "wire_codec", wire, count, chunk, new_wire_codec);
    bench_chunked(
        &mut group,
        "length_delimited",
        wire,
        count,
        chunk,
        new_length_delimited,
    );
    group.finish();
}

/// The inputs, built once and kept for the whole run.
struct Inputs {
    /// 1,000,000 frames of 16 bytes.
    small: Vec<u8>,
    /// The same, frozen, for the slicing floor.
    small_frozen: Bytes,
    /// 1,000 frames of 64 KiB.
    large: Vec<u8>,
    /// The read buffer of every one-buffer case, refilled in place.
    src: BytesMut,
}

const SMALL_FRAMES: usize = 1_000_000;
const LARGE_FRAMES: usize = 1_000;
const LARGE_LEN: usize = 64 * 1024;

fn decode_16b(c: &mut Criterion, inputs: &mut Inputs) {
    const COUNT: usize = SMALL_FRAMES;
    let frames = Throughput::Elements(COUNT as u64);
    let wire = &inputs.small;

    compare_one_buffer(
        c,
        "decode_16b/one_buffer",
        &mut inputs.src,
        wire,
        COUNT,
        frames.clone(),
    );
    let mut group = c.benchmark_group("decode_16b/one_buffer");
    configure(&mut group);
    group.throughput(frames.clone());
    // Slicing does not consume the buffer: one copy serves every iteration.
    let frozen = &inputs.small_frozen;
    group.bench_function("slice_floor", |b| {
        b.iter(|| assert_eq!(slice_floor(frozen), COUNT));
    });
    group.finish();

    // 1,460 bytes is 73 whole frames: every segment ends on a frame
    // boundary. 1,448 (the payload of a segment carrying TCP timestamps, as
    // Linux sends by default) cuts frames, and now and then a prefix.
    compare_chunked(
        c,
        "decode_16b/chunked_1460",
        wire,
        COUNT,
        1460,
        frames.clone(),
    );
    compare_chunked(c, "decode_16b/chunked_1448", wire, COUNT, 1448, frames);
}

fn decode_64k(c: &mut Criterion, inputs: &mut Inputs) {
    let bytes = Throughput::Bytes((LARGE_FRAMES * LARGE_LEN) as u64);
    let wire = &inputs.large;
    compare_one_buffer(
        c,
        "decode_64k/one_buffer",
        &mut inputs.src,
        wire,
        LARGE_FRAMES,
        bytes.clone(),
    );
    compare_chunked(
        c,
        "decode_64k/chunked_64k",
        wire,
        LARGE_FRAMES,
        LARGE_LEN,
        bytes,
    );
}

fn decode(c: &mut Criterion) {
    let small = stream(SMALL_FRAMES, 16);
    let large = stream(LARGE_FRAMES, LARGE_LEN);
    // Every large buffer is allocated here and lives until the end of the
    // run, so no group frees memory while another is being measured: on
    // the virtual machines these figures come from, freed memory goes back
    // to the host a couple of seconds later (see docs/BENCHMARKS.md).
    let mut inputs = Inputs {
        small_frozen: Bytes::from(small.clone()),
        src: BytesMut::with_capacity(large.len()),
        small,
        large,
    };
    decode_16b(c, &mut inputs);
    decode_64k(c, &mut inputs);
}

/// A writer that accepts every byte without reading or copying it, and
/// remembers where the slices it was handed live.
#[derive(Debug, Default)]
struct NullSink {
    written: u64,
    /// `(address, length)` of every slice handed to the last vectored write.
    last: Vec<(usize, usize)>,
    record: bool,
}

impl Write for NullSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written += buf.len() as u64;
        Ok(buf.len())
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if self.record {
            self.last = bufs.iter().map(|b| (b.as_ptr().addr(), b.len())).collect();
        }
        let n: usize = bufs.iter().map(|b| b.len()).sum();
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes a `Buf` (here a head chained to a payload) with vectored writes,
/// as `AsyncWriteExt::write_all_buf` does.
fn write_all_buf<B: Buf>(sink: &mut NullSink, mut buf: B) {
    while buf.has_remaining() {
        let mut slices = [IoSlice::new(&[]); 4];
        let n = buf.chunks_vectored(&mut slices);
        let written = sink.write_vectored(&slices[..n]).unwrap();
        buf.advance(written);
    }
}

/// Checks, outside any measurement, that both vectored paths hand the
/// payload to the writer in place: one 4-byte prefix slice, then the
/// payload's own memory. The prefix is the only thing copied.
fn check_vectored_copies_nothing(payload: &Bytes) {
    let codec = new_framekit();
    let expected = [(payload.as_ptr().addr(), payload.len())];

    let mut sink = NullSink {
        record: true,
        ..NullSink::default()
    };
    framekit_codec::blocking::write_frame(&mut sink, codec.config(), payload).unwrap();
    assert_eq!(
        sink.last.len(),
        2,
        "prefix and payload in one vectored write"
    );
    assert_eq!(sink.last[0].1, 4);
    assert_eq!(sink.last[1..], expected[..], "payload passed in place");

    let mut sink = NullSink {
        record: true,
        ..NullSink::default()
    };
    let head = codec.encode_head(payload.len()).unwrap();
    write_all_buf(&mut sink, head.chain(payload.clone()));
    assert_eq!(sink.last[1..], expected[..], "payload passed in place");
    assert_eq!(sink.written, 4 + payload.len() as u64);

    eprintln!(
        "encode_1m: vectored paths copy 4 prefix bytes and 0 of {} payload bytes \
         (the writer received the payload at its original address); \
         the copying encoders copy all {} payload bytes",
        payload.len(),
        payload.len()
    );
}

fn encode_1m(c: &mut Criterion) {
    const LEN: usize = 1024 * 1024;
    let payload = Bytes::from(stream(1, LEN).split_off(4));
    check_vectored_copies_nothing(&payload);

    let mut group = c.benchmark_group("encode_1m");
    group
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Bytes(LEN as u64));

    // The copying encoders append to a write buffer that is emptied after
    // each frame, as if written out to a socket, keeping its capacity.
    let mut dst = BytesMut::with_capacity(LEN + 16);
    group.bench_function("copy/framekit", |b| {
        let mut codec = new_framekit();
        b.iter(|| {
            let item: Bytes = black_box(payload.clone());
            Encoder::encode(&mut codec, item, &mut dst).unwrap();
            black_box(&dst);
            dst.clear();
        });
    });
    group.bench_function("copy/wire_codec", |b| {
        let mut codec = new_wire_codec();
        b.iter(|| {
            Encoder::encode(&mut codec, black_box(&payload[..]), &mut dst).unwrap();
            black_box(&dst);
            dst.clear();
        });
    });
    group.bench_function("copy/length_delimited", |b| {
        let mut codec = new_length_delimited();
        b.iter(|| {
            let item: Bytes = black_box(payload.clone());
            Encoder::encode(&mut codec, item, &mut dst).unwrap();
            black_box(&dst);
            dst.clear();
        });
    });

    let mut sink = NullSink::default();
    group.bench_function("vectored/framekit_blocking_write_frame", |b| {
        let config = *new_framekit().config();
        b.iter(|| {
            framekit_codec::blocking::write_frame(&mut sink, &config, black_box(&payload[..]))
                .unwrap();
        });
    });
    group.bench_function("vectored/framekit_head_chain", |b| {
        let codec = new_framekit();
        b.iter(|| {
            let payload = black_box(&payload).clone();
            let head = codec.encode_head(payload.len()).unwrap();
            write_all_buf(&mut sink, head.chain(payload));
        });
    });
    black_box(sink.written);
    group.finish();
}

criterion_group!(benches, decode, encode_1m);
criterion_main!(benches);
