//! Arbitrary bytes played as a server against the client's get and list
//! logic. See `framekit_client::fuzzing::responses` for what is checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    framekit_client::fuzzing::responses(data, framekit_fuzz::work_dir());
});
