//! The decoders of `benches/codec.rs`, measured in alternation, and a
//! single decode loop for counting instructions.
//!
//! Criterion measures one codec after another, a few seconds each; on a
//! shared machine the load changes in between and the ratios move with it.
//! Here every round decodes the same input with the three codecs one after
//! the other, starting with a different codec each round, and the medians
//! of the per-round times are compared:
//!
//! ```text
//! cargo bench -p framekit-codec --bench codec_alternating     # about 30 s
//! ```
//!
//! Instruction counts do not depend on the load at all. With a codec
//! (`framekit`, `wire_codec`, `length_delimited`, or `slice_floor`, the
//! slicing floor of `codec.rs`) and a case (`one_buffer`, `chunked_1460`,
//! `chunked_1448`) as arguments, the binary decodes 100,000 frames of 16
//! bytes once, for callgrind:
//!
//! ```text
//! cargo bench -p framekit-codec --bench codec_alternating --no-run
//! valgrind --tool=callgrind --toggle-collect='codec_alternating::decode_*' \
//!     target/release/deps/codec_alternating-<hash> framekit one_buffer
//! callgrind_annotate callgrind.out.<pid> | head   # total / 100,000 = per frame
//! ```
//!
//! A third argument names a layout of the second table (`postgresql`,
//! `mysql`, `tls`, `amqp`, `bitcoin`, `mqtt`) for `framekit` or
//! `length_delimited`, configured alike:
//!
//! ```text
//! valgrind --tool=callgrind --toggle-collect='codec_alternating::decode_*' \
//!     target/release/deps/codec_alternating-<hash> framekit one_buffer tls
//! ```
//!
//! Under `cargo test` every codec decodes every case once, as a check.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio_util::codec::{Decoder, LengthDelimitedCodec};
use wire_codec::framing::{Endian, LengthPrefixed, LengthWidth};

const MAX_FRAME: usize = 16 * 1024 * 1024;
const CODECS: [&str; 3] = ["framekit", "wire_codec", "length_delimited"];

/// `count` frames of `len` payload bytes each, 4-byte big-endian prefix (the
/// stream of `benches/codec.rs`).
fn stream(count: usize, len: usize) -> Vec<u8> {
    let prefix = u32::try_from(len).unwrap().to_be_bytes();
    let mut out = Vec::with_capacity(count * (len + 4));
    for i in 0..count {
        out.extend_from_slice(&prefix);
        out.extend((0..len).map(|j| u8::try_from(i.wrapping_add(j) % 251).unwrap()));
    }
    out
}

#[inline(always)]
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

/// The measured region for one buffer.
#[inline(never)]
fn decode_one_buffer<D: Decoder>(codec: &mut D, src: &mut BytesMut) -> usize
where
    D::Error: std::fmt::Debug,
{
    drain(codec, src)
}

/// The measured region for appends of `chunk` bytes.
#[inline(never)]
fn decode_chunked<D: Decoder>(codec: &mut D, wire: &[u8], chunk: usize) -> usize
where
    D::Error: std::fmt::Debug,
{
    let mut src = BytesMut::with_capacity(8 * 1024);
    let mut frames = 0;
    for piece in wire.chunks(chunk) {
        src.extend_from_slice(piece);
        frames += drain(codec, &mut src);
    }
    frames
}

/// How the input reaches the decoder.
#[derive(Debug, Clone, Copy)]
enum Feed {
    /// All of it in `src`, refilled in place outside the timed region.
    OneBuffer,
    /// Appended this many bytes at a time to a fresh read buffer.
    Chunked(usize),
}

/// Decodes `wire` once with `codec`: how many frames, and how long.
fn run<D: Decoder>(mut codec: D, feed: Feed, wire: &[u8], src: &mut BytesMut) -> (usize, Duration)
where
    D::Error: std::fmt::Debug,
{
    match feed {
        Feed::OneBuffer => {
            src.clear();
            src.reserve(wire.len());
            src.extend_from_slice(wire);
            // As in `codec.rs`: the input outlives the decoder, and is what
            // the next round refills.
            let keep = src.split_off(src.len());
            let start = Instant::now();
            let frames = decode_one_buffer(&mut codec, src);
            let elapsed = start.elapsed();
            *src = keep;
            (frames, elapsed)
        }
        Feed::Chunked(chunk) => {
            let start = Instant::now();
            let frames = decode_chunked(&mut codec, wire, chunk);
            (frames, start.elapsed())
        }
    }
}

/// A frame layout of a protocol people already speak, for both codecs:
/// `header` bytes, a length field, then what follows it.
#[derive(Debug, Clone, Copy)]
struct Layout {
    name: &'static str,
    header: &'static [u8],
    width: usize,
    big_endian: bool,
    /// The varint of MQTT instead of a fixed-width field
    /// (`LengthDelimitedCodec` has none).
    varint: bool,
    /// Ours: added to the field to give the bytes after it.
    adjustment: i64,
    /// Bytes dropped from the front of each frame.
    strip: usize,
}

const LAYOUTS: [Layout; 6] = [
    Layout {
        name: "postgresql",
        header: b"Q",
        width: 4,
        big_endian: true,
        varint: false,
        adjustment: -4,
        strip: 0,
    },
    Layout {
        name: "mysql",
        header: b"",
        width: 3,
        big_endian: false,
        varint: false,
        adjustment: 1,
        strip: 3,
    },
    Layout {
        name: "tls",
        header: b"\x17\x03\x03",
        width: 2,
        big_endian: true,
        varint: false,
        adjustment: 0,
        strip: 0,
    },
    Layout {
        name: "amqp",
        header: b"\x03\x00\x01",
        width: 4,
        big_endian: true,
        varint: false,
        adjustment: 1,
        strip: 0,
    },
    Layout {
        name: "bitcoin",
        header: b"\xF9\xBE\xB4\xD9block\0\0\0\0\0\0\0",
        width: 4,
        big_endian: false,
        varint: false,
        adjustment: 4,
        strip: 0,
    },
    Layout {
        name: "mqtt",
        header: b"\x30",
        width: 1,
        big_endian: true,
        varint: true,
        adjustment: 0,
        strip: 0,
    },
];

fn layout(name: &str) -> Layout {
    *LAYOUTS
        .iter()
        .find(|l| l.name == name)
        .unwrap_or_else(|| panic!("unknown layout {name}"))
}

/// `count` frames of `layout` with `len` bytes after the length field each.
fn layout_stream(layout: &Layout, count: usize, len: usize) -> Vec<u8> {
    let wire = u64::try_from(i64::try_from(len).unwrap() - layout.adjustment).unwrap();
    let field = if layout.varint {
        let mut field = Vec::new();
        let mut value = wire;
        while value >= 0x80 {
            field.push(u8::try_from(value & 0x7f).unwrap() | 0x80);
            value >>= 7;
        }
        field.push(u8::try_from(value).unwrap());
        field
    } else if layout.big_endian {
        wire.to_be_bytes()[8 - layout.width..].to_vec()
    } else {
        wire.to_le_bytes()[..layout.width].to_vec()
    };
    let mut out = Vec::with_capacity(count * (layout.header.len() + field.len() + len));
    for i in 0..count {
        out.extend_from_slice(layout.header);
        out.extend_from_slice(&field);
        out.extend((0..len).map(|j| u8::try_from(i.wrapping_add(j) % 251).unwrap()));
    }
    out
}

fn framekit_for(layout: &Layout) -> framekit_codec::frame::FrameCodec {
    let prefix = if layout.varint {
        framekit_codec::frame::LengthPrefix::Varint
    } else {
        let order = if layout.big_endian {
            framekit_codec::frame::ByteOrder::BigEndian
        } else {
            framekit_codec::frame::ByteOrder::LittleEndian
        };
        framekit_codec::frame::LengthPrefix::fixed(layout.width, order).unwrap()
    };
    framekit_codec::frame::FrameCodec::builder()
        .length_field_offset(layout.header.len())
        .prefix(prefix)
        .length_adjustment(layout.adjustment)
        .strip(layout.strip)
        .max_frame_length(MAX_FRAME)
        .new_codec()
}

/// `LengthDelimitedCodec` configured like `framekit_for(layout)`: its
/// adjustment counts from the end of the skipped bytes, ours from the end
/// of the length field.
fn length_delimited_for(layout: &Layout) -> LengthDelimitedCodec {
    assert!(!layout.varint, "LengthDelimitedCodec has no varint");
    let head = layout.header.len() + layout.width;
    let adjustment =
        layout.adjustment + i64::try_from(head).unwrap() - i64::try_from(layout.strip).unwrap();
    let mut builder = LengthDelimitedCodec::builder();
    builder
        .length_field_offset(layout.header.len())
        .length_field_length(layout.width)
        .length_adjustment(isize::try_from(adjustment).unwrap())
        .num_skip(layout.strip)
        .max_frame_length(MAX_FRAME);
    if !layout.big_endian {
        builder.little_endian();
    }
    builder.new_codec()
}

fn run_layout_codec(
    codec: &str,
    layout: &Layout,
    feed: Feed,
    wire: &[u8],
    src: &mut BytesMut,
) -> (usize, Duration) {
    match codec {
        "framekit" => run(framekit_for(layout), feed, wire, src),
        "length_delimited" => run(length_delimited_for(layout), feed, wire, src),
        other => panic!("unknown codec {other}"),
    }
}

/// Decodes `count` frames of `layout` with framekit and (where it can)
/// `LengthDelimitedCodec` in turn, and prints one table row.
fn compare_layout(
    layout: &Layout,
    count: usize,
    len: usize,
    case: &str,
    rounds: usize,
    src: &mut BytesMut,
) {
    let wire = layout_stream(layout, count, len);
    let codecs: &[&str] = if layout.varint {
        &["framekit"]
    } else {
        &["framekit", "length_delimited"]
    };
    let mut times: [Vec<Duration>; 2] = Default::default();
    for round in 0..rounds {
        for k in 0..codecs.len() {
            let which = (round + k) % codecs.len();
            let (frames, elapsed) = run_layout_codec(codecs[which], layout, feed(case), &wire, src);
            assert_eq!(frames, count);
            times[which].push(elapsed);
        }
    }
    let rate = |t: Duration| {
        if len <= 1024 {
            format!("{:.1} M frames/s", count as f64 / t.as_secs_f64() / 1e6)
        } else {
            format!(
                "{:.0} MiB/s",
                (count * len) as f64 / t.as_secs_f64() / f64::from(1 << 20)
            )
        }
    };
    let [mut ours, mut ldc] = times;
    let ours = median(&mut ours);
    let (ldc_rate, ratio) = if ldc.is_empty() {
        ("-".to_owned(), "-".to_owned())
    } else {
        let ldc = median(&mut ldc);
        (
            rate(ldc),
            format!("{:.2}", ldc.as_secs_f64() / ours.as_secs_f64()),
        )
    };
    let size = match len {
        16 => "16 B".to_owned(),
        65_536 => "64 KiB".to_owned(),
        len => format!("{len} B"),
    };
    eprintln!(
        "| {} | {size}, {case} | {} | {ldc_rate} | {ratio} |",
        layout.name,
        rate(ours)
    );
}

/// The slicing floor of `codec.rs`: prefixes walked and payloads sliced
/// out of one frozen buffer, without any check.
#[inline(never)]
fn decode_slice_floor(buf: &Bytes) -> usize {
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

fn run_codec(codec: &str, feed: Feed, wire: &[u8], src: &mut BytesMut) -> (usize, Duration) {
    match codec {
        "slice_floor" => {
            let buf = Bytes::copy_from_slice(wire);
            let start = Instant::now();
            (decode_slice_floor(&buf), start.elapsed())
        }
        "framekit" => run(
            framekit_codec::frame::FrameCodec::builder()
                .max_frame_length(MAX_FRAME)
                .new_codec(),
            feed,
            wire,
            src,
        ),
        "wire_codec" => run(
            wire_codec::codec::FrameCodec::new(
                LengthPrefixed::new(LengthWidth::U32, Endian::Big)
                    .with_max_payload(MAX_FRAME as u64),
            ),
            feed,
            wire,
            src,
        ),
        "length_delimited" => run(
            LengthDelimitedCodec::builder()
                .length_field_length(4)
                .big_endian()
                .max_frame_length(MAX_FRAME)
                .new_codec(),
            feed,
            wire,
            src,
        ),
        other => panic!("unknown codec {other}"),
    }
}

fn feed(case: &str) -> Feed {
    match case {
        "one_buffer" => Feed::OneBuffer,
        "chunked_1460" => Feed::Chunked(1460),
        "chunked_1448" => Feed::Chunked(1448),
        "chunked_64k" => Feed::Chunked(64 * 1024),
        other => panic!("unknown case {other}"),
    }
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// Decodes `wire` (`count` frames of `len` bytes) with the three codecs,
/// `rounds` times in rotating order, and prints one table row.
fn compare(name: &str, count: usize, len: usize, case: &str, rounds: usize, src: &mut BytesMut) {
    let wire = stream(count, len);
    let mut times: [Vec<Duration>; 3] = Default::default();
    for round in 0..rounds {
        for k in 0..CODECS.len() {
            let which = (round + k) % CODECS.len();
            let (frames, elapsed) = run_codec(CODECS[which], feed(case), &wire, src);
            assert_eq!(frames, count);
            times[which].push(elapsed);
        }
    }
    let [ours, wire_codec, ldc] = times.map(|mut t| median(&mut t));
    let rate = |t: Duration| {
        if len <= 1024 {
            format!("{:.1} M frames/s", count as f64 / t.as_secs_f64() / 1e6)
        } else {
            format!(
                "{:.0} MiB/s",
                (count * len) as f64 / t.as_secs_f64() / f64::from(1 << 20)
            )
        }
    };
    let ratio = |t: Duration| t.as_secs_f64() / ours.as_secs_f64();
    eprintln!(
        "| {name} | {} | {} | {} | {:.2} | {:.2} |",
        rate(ours),
        rate(wire_codec),
        rate(ldc),
        ratio(wire_codec),
        ratio(ldc)
    );
}

#[allow(clippy::too_many_lines)] // the argument handling and the table, read top to bottom
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let positional: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with("--"))
        .map(String::as_str)
        .collect();
    let mut src = BytesMut::new();

    if let [codec, case] = positional[..] {
        let wire = stream(100_000, 16);
        assert_eq!(run_codec(codec, feed(case), &wire, &mut src).0, 100_000);
        return;
    }
    if let [codec, case, name] = positional[..] {
        let layout = layout(name);
        let wire = layout_stream(&layout, 100_000, 16);
        assert_eq!(
            run_layout_codec(codec, &layout, feed(case), &wire, &mut src).0,
            100_000
        );
        return;
    }

    // `cargo bench` passes `--bench`; `cargo test` does not.
    if !args.iter().any(|a| a == "--bench") {
        let wire = stream(10_000, 16);
        for codec in CODECS {
            for case in ["one_buffer", "chunked_1460", "chunked_1448"] {
                let (frames, _) = run_codec(codec, feed(case), &wire, &mut src);
                assert_eq!(frames, 10_000, "{codec} {case}");
            }
        }
        for layout in &LAYOUTS {
            let wire = layout_stream(layout, 10_000, 16);
            for codec in ["framekit", "length_delimited"] {
                if codec == "length_delimited" && layout.varint {
                    continue;
                }
                for case in ["one_buffer", "chunked_1448"] {
                    let (frames, _) = run_layout_codec(codec, layout, feed(case), &wire, &mut src);
                    assert_eq!(frames, 10_000, "{codec} {case} {}", layout.name);
                }
            }
        }
        return;
    }

    eprintln!("medians of per-round times, codecs alternating in rotating order");
    eprintln!(
        "| case | framekit | wire-codec | LengthDelimitedCodec | framekit / wire-codec | framekit / LDC |"
    );
    eprintln!("|---|---:|---:|---:|---:|---:|");
    compare(
        "16 B, one buffer",
        1_000_000,
        16,
        "one_buffer",
        31,
        &mut src,
    );
    compare(
        "16 B, 1,460-byte appends",
        1_000_000,
        16,
        "chunked_1460",
        31,
        &mut src,
    );
    compare(
        "16 B, 1,448-byte appends",
        1_000_000,
        16,
        "chunked_1448",
        31,
        &mut src,
    );
    compare(
        "64 KiB, one buffer",
        1_000,
        64 * 1024,
        "one_buffer",
        101,
        &mut src,
    );
    compare(
        "64 KiB, 64 KiB appends",
        1_000,
        64 * 1024,
        "chunked_64k",
        31,
        &mut src,
    );

    eprintln!();
    eprintln!("layouts of other protocols, 16 bytes after the length field or 64 KiB");
    eprintln!("| layout | case | framekit | LengthDelimitedCodec | framekit / LDC |");
    eprintln!("|---|---|---:|---:|---:|");
    for layout in &LAYOUTS {
        compare_layout(layout, 1_000_000, 16, "one_buffer", 21, &mut src);
        compare_layout(layout, 1_000_000, 16, "chunked_1448", 21, &mut src);
        // 64 KiB, or the most a 2-byte length field can describe.
        let large = if !layout.varint && layout.width < 3 {
            usize::try_from(i64::from(u16::MAX) + layout.adjustment).unwrap()
        } else {
            64 * 1024
        };
        compare_layout(layout, 1_000, large, "one_buffer", 51, &mut src);
        compare_layout(layout, 1_000, large, "chunked_64k", 21, &mut src);
    }
}
