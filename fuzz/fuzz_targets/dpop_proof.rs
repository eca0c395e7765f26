#![no_main]
//! Fuzz target `dpop_proof`: the reference server's DPoP proof parser
//! (`tokenwarden_server::dpop`). Any input: no panic; a proof that parses has a
//! 43-character thumbprint and goes through the claim checks without panicking.
//! `www/server/tests/dpop_corpus.rs` replays `fuzz/corpus/dpop_proof/` natively.

use tokenwarden_server::dpop;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(parsed) = dpop::parse(&text) {
        assert_eq!(parsed.jkt.len(), 43);
        let expected = dpop::Expected {
            method: "POST",
            authority: "127.0.0.1:8080",
            path: "/auth/refresh",
            now_ms: 1_800_000_000_000,
            max_age_s: 60,
            leeway_s: 5,
            access_token: Some("t"),
            nonces: Some(&[]),
        };
        let _ = dpop::check(&parsed, &expected);
        let _ = dpop::replay_key(&parsed);
    }
});
