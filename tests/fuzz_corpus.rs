//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) through the
//! very harnesses the fuzz targets run (`fuzz/harness.rs`, included below),
//! natively on the stable toolchain: no panic, every invariant holds. Fast
//! and deterministic; `make corpus` (part of `make test`) runs it.
//! `make fuzz` (`fuzz/run.sh`) is what explores beyond the corpus.
#![cfg(not(target_arch = "wasm32"))]

#[path = "../fuzz/harness.rs"]
mod harness;

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// A fuzz target's name and its harness.
type Target = (&'static str, fn(&[u8]));

const TARGETS: [Target; 6] = [
    ("jwt_decode", harness::jwt_decode),
    ("token_response", harness::token_response),
    ("options", harness::options),
    ("scheduler", harness::scheduler),
    ("tabsync", harness::tabsync),
    ("json_diff", harness::json_diff),
];

fn corpus_files(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("readable corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort(); // deterministic order and output
    files
}

#[test]
fn every_corpus_file_replays_without_panic() {
    // The default hook would print each panic; we report them below instead.
    let default_hook = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    let mut failures = Vec::new();
    let mut counts = Vec::new();
    for (target, run) in TARGETS {
        let files = corpus_files(target);
        for file in &files {
            let data = std::fs::read(file).expect("readable corpus file");
            if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| run(&data))) {
                let why = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failures.push(format!(
                    "{target}/{}: {why}",
                    file.file_name().unwrap().to_string_lossy()
                ));
            }
        }
        counts.push((target, files.len()));
    }
    panic::set_hook(default_hook);

    let mut total = 0;
    for (target, n) in &counts {
        println!("fuzz corpus: replayed {n:>4} files for {target}");
        total += n;
    }
    println!("fuzz corpus: replayed {total} files in all");
    let empty: Vec<_> = counts
        .iter()
        .filter(|(_, n)| *n == 0)
        .map(|(t, _)| *t)
        .collect();
    assert!(empty.is_empty(), "empty corpus for {empty:?}");
    assert!(
        failures.is_empty(),
        "{} corpus file(s) panicked or broke an invariant:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}

/// Triage helper, not part of the suite:
/// `FUZZ_DESCRIBE=fuzz/artifacts/scheduler/crash-… cargo test --test fuzz_corpus describe -- --ignored --nocapture`
/// prints the operations a scheduler input decodes to, then replays it.
#[test]
#[ignore]
fn describe() {
    let path = std::env::var("FUZZ_DESCRIBE").expect("set FUZZ_DESCRIBE to a scheduler input");
    if Path::new(&path).is_dir() {
        for file in std::fs::read_dir(&path).unwrap() {
            let file = file.unwrap().path();
            let data = std::fs::read(&file).unwrap();
            println!(
                "{} {} {}",
                file.display(),
                data.len(),
                harness::summarize_scheduler(&data)
            );
        }
        return;
    }
    let data = std::fs::read(&path).expect("readable input");
    println!("{}", harness::describe_scheduler(&data));
    harness::scheduler(&data);
}
