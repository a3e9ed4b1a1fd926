//! Lengths declared by a peer are never allocated: measured with a counting
//! global allocator, so the blocking reader and message decoding are held to
//! what they actually allocate, not to what their buffers report.
//!
//! The allocator counts every thread, so the measured sections run one at a
//! time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::{BufMut, BytesMut};
use framekit_codec::Error;
use framekit_codec::frame::{Builder, FrameConfig, MIN_READ_AHEAD, Oversize, READ_AHEAD};
use framekit_codec::message;
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use std::alloc::System;
use std::io::Cursor;
use std::sync::{Mutex, MutexGuard};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

static SERIAL: Mutex<()> = Mutex::new(());

/// Keeps the other tests of this binary (and their allocations) out while
/// a test measures.
fn exclusive() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const MIB: usize = 1024 * 1024;

/// A greeting shaped like a protocol's first message: fixed bytes, a
/// version, then an optional string.
#[derive(Debug, Serialize, Deserialize)]
struct Greeting {
    magic: [u8; 8],
    version: u16,
    token: Option<String>,
}

/// A request enum with strings, integers, options and arrays in its
/// variants.
#[derive(Debug, Serialize, Deserialize)]
enum Command {
    Put {
        name: String,
        size: u64,
        overwrite: bool,
        key: Option<[u8; 32]>,
    },
    Get {
        name: String,
        offset: u64,
    },
    Note(String),
    Done,
    Ack {
        size: u64,
        hash: [u8; 32],
    },
}

/// Answers: a message, a count, or a name list element.
#[derive(Debug, Serialize, Deserialize)]
enum Reply {
    Error {
        code: u16,
        message: String,
    },
    Count(u64),
    Entry {
        name: String,
        size: u64,
        modified: Option<u64>,
    },
}

/// Runs `run` on a fresh `setup()` a few times and returns the result and
/// the bytes allocated (growth by reallocation included) of the run that
/// allocated least.
///
/// The counter is global: the calling test must hold [`exclusive`] for its
/// whole run, so that no other test of this binary allocates meanwhile.
/// The test harness may still allocate on its own threads during a run
/// (to start the next test); that only ever adds, and `run` allocates the
/// same on every run, so the least of a few runs is what `run` allocated.
fn allocated_by<S, T>(mut setup: impl FnMut() -> S, mut run: impl FnMut(S) -> T) -> (T, usize) {
    let mut least: Option<(T, usize)> = None;
    for _ in 0..3 {
        let input = setup();
        let region = Region::new(GLOBAL);
        let out = run(input);
        let allocated = region.change().bytes_allocated;
        if least.as_ref().is_none_or(|(_, fewest)| allocated < *fewest) {
            least = Some((out, allocated));
        }
    }
    least.expect("three runs")
}

/// A stream holding a 4-byte big-endian prefix declaring `declared` bytes,
/// then `sent` bytes of payload, then end of stream.
fn stalled_frame(declared: u32, sent: usize) -> Cursor<Vec<u8>> {
    let mut stream = declared.to_be_bytes().to_vec();
    stream.resize(4 + sent, 0xAB);
    Cursor::new(stream)
}

#[test]
fn blocking_read_frame_of_a_16_mib_claim_with_one_byte_allocates_the_read_ahead_at_most() {
    let _only = exclusive();
    let config = FrameConfig::default();
    let (result, allocated) = allocated_by(
        || stalled_frame(16 << 20, 1),
        |mut reader| framekit_codec::blocking::read_frame(&mut reader, &config),
    );
    assert!(
        matches!(
            result,
            Err(Error::Truncated {
                received: 1,
                expected: Some(0x100_0000)
            })
        ),
        "{result:?}"
    );
    assert!(
        allocated <= MIN_READ_AHEAD + 1024,
        "{allocated} bytes allocated"
    );
}

#[test]
fn blocking_read_frame_allocates_in_step_with_the_bytes_received() {
    let _only = exclusive();
    let config = FrameConfig::default();
    let (result, allocated) = allocated_by(
        || stalled_frame(16 << 20, 2 * MIB),
        |mut reader| framekit_codec::blocking::read_frame(&mut reader, &config),
    );
    assert!(result.unwrap_err().is_truncated());
    // Growth may double the buffer; it must not jump to the declared 16 MiB.
    assert!(
        allocated <= 2 * (2 * MIB + READ_AHEAD) + 1024,
        "{allocated} bytes allocated"
    );
}

#[test]
fn blocking_read_next_skipping_an_oversized_frame_allocates_almost_nothing() {
    let _only = exclusive();
    let config = Builder::new()
        .max_frame_length(1024)
        .oversize(Oversize::Discard)
        .config();
    let (result, allocated) = allocated_by(
        || stalled_frame(1 << 30, 4 * MIB),
        |mut reader| framekit_codec::blocking::read_next(&mut reader, &config),
    );
    assert!(
        matches!(
            result,
            Err(Error::Truncated {
                received: 0x40_0000,
                expected: Some(0x4000_0000)
            })
        ),
        "{result:?}"
    );
    assert!(allocated <= 64 * 1024, "{allocated} bytes allocated");
}

/// An encoded `Greeting` whose token claims `claimed` bytes.
fn hello_claiming(claimed: u64) -> Vec<u8> {
    let mut buf = BytesMut::new();
    let hello = Greeting {
        magic: *b"FRAMEKIT",
        version: 1,
        token: Some("secret".into()),
    };
    message::encode(&hello, &mut buf).unwrap();
    // magic (8), version (2), Some (1), then the token's u64 length.
    buf[11..19].copy_from_slice(&claimed.to_le_bytes());
    buf.to_vec()
}

#[test]
fn message_claiming_a_huge_string_is_a_decode_error_without_allocating_it() {
    let _only = exclusive();
    for claimed in [1 << 20, 1 << 40, u64::MAX] {
        let bytes = hello_claiming(claimed);
        let (result, allocated) = allocated_by(|| (), |()| message::decode::<Greeting>(&bytes));
        assert!(
            matches!(
                result,
                Err(Error::Decode {
                    message: "Greeting",
                    ..
                })
            ),
            "{claimed}: {result:?}"
        );
        assert!(allocated <= 1024, "{claimed}: {allocated} bytes allocated");
    }
}

#[test]
fn read_message_claiming_a_huge_string_is_a_decode_error_without_allocating_it() {
    let _only = exclusive();
    let config = FrameConfig::default();
    let body = hello_claiming(1 << 40);
    let mut frame = BytesMut::new();
    frame.put_u32(u32::try_from(body.len()).unwrap());
    frame.put_slice(&body);
    let (result, allocated) = allocated_by(
        || Cursor::new(frame.to_vec()),
        |mut reader| framekit_codec::blocking::read_message::<_, Greeting>(&mut reader, &config),
    );
    assert!(
        matches!(
            result,
            Err(Error::Decode {
                message: "Greeting",
                ..
            })
        ),
        "{result:?}"
    );
    assert!(allocated <= 1024, "{allocated} bytes allocated");
}

#[test]
fn decoding_arbitrary_bytes_allocates_at_most_twice_their_length() {
    let _only = exclusive();
    let strategy = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        // A valid variant index, then a string length claim (small or
        // huge), then whatever follows.
        (
            0u32..6,
            prop_oneof![0u64..600, any::<u64>()],
            proptest::collection::vec(any::<u8>(), 0..300)
        )
            .prop_map(|(variant, claimed, tail)| {
                [&variant.to_le_bytes()[..], &claimed.to_le_bytes(), &tail].concat()
            }),
    ];
    let mut runner = proptest::test_runner::TestRunner::default();
    runner
        .run(&strategy, |bytes| {
            // Lengths inside the bytes claim up to 2^64; the allocations
            // must follow the bytes actually present.
            let bound = 2 * bytes.len() + 1024;
            let (_, allocated) =
                allocated_by(|| (), |()| message::decode::<Command>(&bytes).is_ok());
            prop_assert!(allocated <= bound, "Command: {} bytes allocated", allocated);
            let (_, allocated) = allocated_by(|| (), |()| message::decode::<Reply>(&bytes).is_ok());
            prop_assert!(allocated <= bound, "Reply: {} bytes allocated", allocated);
            let (_, allocated) =
                allocated_by(|| (), |()| message::decode::<Greeting>(&bytes).is_ok());
            prop_assert!(
                allocated <= bound,
                "Greeting: {} bytes allocated",
                allocated
            );
            Ok(())
        })
        .unwrap();
}
