//! Decoding the protocol's messages never allocates what a peer merely
//! declares: measured with a counting global allocator. Each test holds
//! [`exclusive`] so that no other test of this binary allocates meanwhile.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::BytesMut;
use framekit_codec::{Error, message};
use framekit_transfer::{Hello, Request, Response};
use proptest::prelude::*;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use std::alloc::System;
use std::sync::{Mutex, MutexGuard};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

static SERIAL: Mutex<()> = Mutex::new(());

fn exclusive() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The bytes `run` allocates, the least of three runs: the test harness
/// may allocate on its own threads meanwhile, which only ever adds.
fn allocated_by<T>(mut run: impl FnMut() -> T) -> usize {
    (0..3)
        .map(|_| {
            let region = Region::new(GLOBAL);
            drop(run());
            region.change().bytes_allocated
        })
        .min()
        .unwrap_or(usize::MAX)
}

#[test]
fn a_hello_claiming_a_huge_token_is_a_decode_error_without_allocating_it() {
    let _only = exclusive();
    for claimed in [1u64 << 20, 1 << 40, u64::MAX] {
        let mut buf = BytesMut::new();
        message::encode(&Hello::new(Some("secret".into())), &mut buf).unwrap();
        // magic (8), version (2), Some (1), then the token's u64 length.
        buf[11..19].copy_from_slice(&claimed.to_le_bytes());
        let result = message::decode::<Hello>(&buf);
        assert!(
            matches!(
                result,
                Err(Error::Decode {
                    message: "Hello",
                    ..
                })
            ),
            "{claimed}: {result:?}"
        );
        let allocated = allocated_by(|| message::decode::<Hello>(&buf));
        assert!(allocated <= 1024, "{claimed}: {allocated} bytes allocated");
    }
}

proptest! {
    #[test]
    fn decoding_arbitrary_bytes_allocates_at_most_twice_their_length(
        bytes in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..300),
            // A valid variant index, then a string length claim (small or
            // huge), then whatever follows.
            (
                0u32..12,
                prop_oneof![0u64..600, any::<u64>()],
                proptest::collection::vec(any::<u8>(), 0..300)
            )
                .prop_map(|(variant, claimed, tail)| {
                    [&variant.to_le_bytes()[..], &claimed.to_le_bytes(), &tail].concat()
                }),
        ]
    ) {
        let _only = exclusive();
        let bound = 2 * bytes.len() + 1024;
        let allocated = allocated_by(|| message::decode::<Request>(&bytes).is_ok());
        prop_assert!(allocated <= bound, "Request: {} bytes allocated", allocated);
        let allocated = allocated_by(|| message::decode::<Response>(&bytes).is_ok());
        prop_assert!(allocated <= bound, "Response: {} bytes allocated", allocated);
        let allocated = allocated_by(|| message::decode::<Hello>(&bytes).is_ok());
        prop_assert!(allocated <= bound, "Hello: {} bytes allocated", allocated);
    }
}
