//! The decode loop of `benches/codec.rs`, without criterion, for counting
//! instructions with callgrind: wall time on a shared machine is too noisy
//! to compare two versions of the hot loop, instruction counts are not.
//!
//! ```text
//! cargo bench -p framekit-proto --bench codec_instructions --no-run
//! valgrind --tool=callgrind --toggle-collect='codec_instructions::decode_*' \
//!     target/release/deps/codec_instructions-<hash> framekit one_buffer
//! callgrind_annotate callgrind.out.<pid> | head   # total / 100,000 = per frame
//! ```
//!
//! Arguments: a codec (`framekit`, `wire_codec`, `length_delimited`) and a
//! case (`one_buffer`, `chunked_1460`, `chunked_1448`); each decodes
//! 100,000 frames of 16 payload bytes once. Without arguments (as under
//! `cargo bench` or `cargo test`) every combination runs once, as a check.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use bytes::BytesMut;
use tokio_util::codec::{Decoder, LengthDelimitedCodec};
use wire_codec::framing::{Endian, LengthPrefixed, LengthWidth};

const FRAMES: usize = 100_000;
const MAX_FRAME: usize = 16 * 1024 * 1024;

fn stream() -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAMES * 20);
    for i in 0..FRAMES {
        out.extend_from_slice(&16u32.to_be_bytes());
        out.extend((0..16).map(|j| u8::try_from((i + j) % 251).unwrap()));
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

fn run<D: Decoder>(mut codec: D, case: &str, wire: &[u8]) -> usize
where
    D::Error: std::fmt::Debug,
{
    match case {
        "one_buffer" => {
            let mut src = BytesMut::from(wire);
            // As in `codec.rs`: the input outlives the decoder.
            let keep = src.split_off(src.len());
            let frames = decode_one_buffer(&mut codec, &mut src);
            drop(keep);
            frames
        }
        "chunked_1460" => decode_chunked(&mut codec, wire, 1460),
        "chunked_1448" => decode_chunked(&mut codec, wire, 1448),
        other => panic!("unknown case {other}"),
    }
}

fn run_codec(codec: &str, case: &str, wire: &[u8]) -> usize {
    match codec {
        "framekit" => run(
            proto::frame::FrameCodec::builder()
                .max_frame_length(MAX_FRAME)
                .new_codec(),
            case,
            wire,
        ),
        "wire_codec" => run(
            wire_codec::codec::FrameCodec::new(
                LengthPrefixed::new(LengthWidth::U32, Endian::Big)
                    .with_max_payload(MAX_FRAME as u64),
            ),
            case,
            wire,
        ),
        "length_delimited" => run(
            LengthDelimitedCodec::builder()
                .length_field_length(4)
                .big_endian()
                .max_frame_length(MAX_FRAME)
                .new_codec(),
            case,
            wire,
        ),
        other => panic!("unknown codec {other}"),
    }
}

fn main() {
    let wire = stream();
    // `cargo bench` passes `--bench`; `cargo test` passes nothing.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if let [codec, case] = &args[..] {
        assert_eq!(run_codec(codec, case, &wire), FRAMES);
        return;
    }
    for codec in ["framekit", "wire_codec", "length_delimited"] {
        for case in ["one_buffer", "chunked_1460", "chunked_1448"] {
            assert_eq!(run_codec(codec, case, &wire), FRAMES, "{codec} {case}");
        }
    }
    eprintln!("codec_instructions: every codec decoded every case; run under callgrind to count");
}
