//! The release profile keeps the unwinding panic strategy.
//!
//! The product suites run against the server's dev build (scripts/test-server.sh), where
//! `tests/e2e`'s "a handler that panics answers 500 and the server goes on serving" proves
//! CatchPanicLayer. That proof holds for the release build only while no profile sets
//! `panic = "abort"` (which would end the process, and every user's session, on the first
//! panicking handler). The release build is not made by `make test` (6.6 min on 2 cores), so
//! this reads the workspace's `Cargo.toml` and `.cargo/config*` instead. A line scan, not
//! a TOML parser: it is what cargo's profile tables look like in these two files, and a
//! parser would be a dependency for one test.

use std::path::Path;

/// `(section, line)` of every `panic = …` key that is not `"unwind"` under a `[profile.*]`
/// table of the given TOML text.
fn aborting_panics(text: &str) -> Vec<(String, String)> {
    let mut section = String::new();
    let mut found = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.starts_with('[') {
            section = line
                .trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_string();
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        // `[profile.release] panic = …` and dotted keys at the top (`profile.release.panic`).
        let in_profile = section.starts_with("profile.") || section == "profile";
        let dotted = key.starts_with("profile.") && key.ends_with(".panic");
        let unwind = value.trim().trim_matches(|c| c == '"' || c == '\'') == "unwind";
        if ((in_profile && key == "panic") || dotted) && !unwind {
            found.push((section.clone(), line.to_string()));
        }
    }
    found
}

#[test]
fn the_scan_finds_an_aborting_profile() {
    // The scan itself can fail: each of these is what the next test must refuse.
    assert_eq!(
        aborting_panics("[profile.release]\nopt-level = 3\npanic = \"abort\"\n").len(),
        1
    );
    assert_eq!(
        aborting_panics("[profile.release-server]\ninherits = \"release\"\npanic='abort'\n").len(),
        1
    );
    assert_eq!(
        aborting_panics("profile.release.panic = \"abort\"\n").len(),
        1
    );
    assert!(aborting_panics("[profile.release]\npanic = \"unwind\"\n").is_empty());
    assert!(aborting_panics("[profile.release]\n# panic = \"abort\"\n").is_empty());
    assert!(aborting_panics("[package]\npanic = \"abort\"\n").is_empty());
}

#[test]
fn no_profile_of_the_workspace_aborts_on_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let manifest =
        std::fs::read_to_string(root.join("Cargo.toml")).expect("the workspace Cargo.toml");
    assert!(
        manifest.contains("[profile.release]"),
        "the workspace manifest has a release profile"
    );
    let mut found = aborting_panics(&manifest);
    for config in [".cargo/config.toml", ".cargo/config"] {
        if let Ok(text) = std::fs::read_to_string(root.join(config)) {
            found.extend(aborting_panics(&text));
        }
    }
    assert!(
        found.is_empty(),
        "a profile sets a panic strategy other than unwind, so a panicking handler would end \
         the server process: {found:?}"
    );
}
