//! Writes the fuzz targets' seed corpus under `fuzz/corpus/<target>/`.
//!
//! Run after a protocol change: `cargo run -p framekit-tests --example fuzz_corpus`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::Path;

fn main() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    for (target, seeds) in framekit_tests::corpus::all() {
        let dir = corpus.join(target);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).expect("clear the old seeds");
        }
        std::fs::create_dir_all(&dir).expect("create the corpus directory");
        for (name, bytes) in &seeds {
            std::fs::write(dir.join(name), bytes).expect("write a seed");
        }
        println!("{target}: {} seeds in {}", seeds.len(), dir.display());
    }
}
