//! Arbitrary bytes played as a client against the server's real connection
//! handler over an in-memory stream, with a fresh root each time. See
//! `framekit_server::fuzzing::session` for what is checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    framekit_server::fuzzing::session(data, framekit_fuzz::work_dir());
});
