//! The policy: no web-sys, no I/O, no clock of its own. Every rule of the
//! token lifecycle lives here and is tested natively; `machine` is the one
//! state machine the driver feeds.

pub mod clock;
pub mod dpop;
pub mod json;
pub mod jwt;
pub mod lifetime;
pub mod machine;
pub mod options;
pub mod origin;
pub mod response;
pub mod schedule;
pub mod session;
pub mod tabsync;
pub mod token;

/// The byte offset of `needle` in `haystack`. Hand-written for size: `str`'s
/// own substring search (`find`, `contains`, `split_once` with a `&str`)
/// brings core's two-way searcher, about 1.2 KB of wasm, for the five short
/// needles the client looks for in short strings.
pub fn find_str(haystack: &str, needle: &str) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack
        .as_bytes()
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
}

/// `haystack.split_once(needle)` without the two-way searcher (see [`find_str`]).
pub fn split_str<'a>(haystack: &'a str, needle: &str) -> Option<(&'a str, &'a str)> {
    let i = find_str(haystack, needle)?;
    Some((&haystack[..i], &haystack[i + needle.len()..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_and_split_agree_with_str() {
        for (h, n) in [
            ("https://a.example", "://"),
            ("a://b://c", "://"),
            ("no scheme", "://"),
            ("", "://"),
            ("Sun, 06-Nov-94", ", "),
            ("DPoP error=\"use_dpop_nonce\"", "use_dpop_nonce"),
            ("é://ü", "://"),
            ("abc", ""),
        ] {
            assert_eq!(find_str(h, n), h.find(n), "{h:?} {n:?}");
            assert_eq!(split_str(h, n), h.split_once(n), "{h:?} {n:?}");
        }
    }
}
