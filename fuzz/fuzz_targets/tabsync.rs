#![no_main]
//! Fuzz target `tabsync`: the harness body lives in `fuzz/harness.rs`, shared
//! with the corpus replay test (`tests/fuzz_corpus.rs`).

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::tabsync(data));
