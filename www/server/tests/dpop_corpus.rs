//! Replays the `dpop_proof` fuzz corpus (`fuzz/corpus/dpop_proof/`) through the proof parser
//! on the stable toolchain: no input panics, and the seed made by WebCrypto (`valid`) parses.
//! `make fuzz` (cargo-fuzz target `dpop_proof`) explores beyond it.

use std::path::Path;

use tokenwarden_server::dpop;

#[test]
fn every_corpus_input_is_parsed_without_panicking_and_the_webcrypto_seed_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/dpop_proof");
    let mut seen = 0;
    let mut seeds = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus directory") {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let parsed = dpop::parse(&String::from_utf8_lossy(&data));
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let expected = match name.as_str() {
            "valid" | "with_ath_nonce" => {
                assert_eq!(
                    parsed.as_ref().map(|p| p.jkt.len()).ok(),
                    Some(43),
                    "{name}"
                );
                seeds += 1;
                continue;
            }
            "private_d" => dpop::ProofError::Key,
            "alg_none" | "crit" => dpop::ProofError::Algorithm,
            "typ_jwt" => dpop::ProofError::Type,
            "iat_string" => dpop::ProofError::Malformed,
            _ => {
                seen += 1;
                continue;
            }
        };
        assert_eq!(parsed.err(), Some(expected), "{name}");
        seeds += 1;
    }
    assert_eq!(
        seeds, 7,
        "every named seed was checked, the two valid ones too ({seen} other inputs)"
    );
}
