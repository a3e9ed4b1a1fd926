//! The committed fuzz seeds are exactly what `framekit_tests::corpus`
//! produces, so they stay valid sessions as the protocol changes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;

#[test]
fn committed_seed_corpus_matches_the_generator() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    for (target, seeds) in framekit_tests::corpus::all() {
        let expected: BTreeMap<String, Vec<u8>> = seeds.into_iter().collect();
        let dir = corpus.join(target);
        let committed: BTreeMap<String, Vec<u8>> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| {
                let entry = entry.unwrap();
                (
                    entry.file_name().into_string().unwrap(),
                    std::fs::read(entry.path()).unwrap(),
                )
            })
            .collect();
        assert!(
            committed == expected,
            "fuzz/corpus/{target} is out of date: run `cargo run -p framekit-tests --example fuzz_corpus`"
        );
    }
}
