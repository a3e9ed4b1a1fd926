//! Arbitrary bytes decoded as every protocol message: never a panic, never
//! an allocation driven by a declared length (run with a low
//! `-malloc_limit_mb`), and whatever decodes re-encodes to bytes that
//! decode to the same value.
#![no_main]

use bytes::BytesMut;
use framekit_codec::message;
use framekit_transfer::{
    Entry, ErrorCode, ErrorReply, FileVersion, Hello, Request, Response, Trailer, Welcome,
};
use libfuzzer_sys::fuzz_target;
use serde::{Serialize, de::DeserializeOwned};
use std::fmt::Debug;

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(data: &[u8]) {
    let Ok(value) = message::decode::<T>(data) else {
        return;
    };
    let mut encoded = BytesMut::new();
    message::encode(&value, &mut encoded).expect("a decoded message re-encodes");
    let again: T = message::decode(&encoded).expect("a re-encoded message decodes");
    assert_eq!(again, value);
}

fuzz_target!(|data: &[u8]| {
    round_trip::<Hello>(data);
    round_trip::<Welcome>(data);
    round_trip::<Request>(data);
    round_trip::<Response>(data);
    round_trip::<Trailer>(data);
    round_trip::<Entry>(data);
    round_trip::<ErrorReply>(data);
    round_trip::<ErrorCode>(data);
    round_trip::<FileVersion>(data);
});
