#![no_main]
//! Fuzz target `json_diff`: `policy::json` against serde_json; the harness
//! body lives in `fuzz/harness.rs`, shared with the corpus replay test
//! (`tests/fuzz_corpus.rs`).

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::json_diff(data));
