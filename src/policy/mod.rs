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

/// The offset of the last `byte` (ASCII) in `s`. Hand-written for size like
/// [`find_str`] (which also serves one-character needles): `str`'s `find`,
/// `contains`, `split` and `rsplit_once` with a `char` bring core's char
/// searcher and its `memchr` (about 0.7 KB of wasm).
pub fn rfind_byte(s: &str, byte: u8) -> Option<usize> {
    s.bytes().rposition(|b| b == byte)
}

/// The offset of the first byte of `s` that is one of `set` (ASCII): `str::find`
/// with an array of `char`s decodes every character (see [`rfind_byte`]).
pub fn find_any(s: &str, set: &[u8]) -> Option<usize> {
    s.bytes().position(|b| set.contains(&b))
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

    #[cfg(not(target_arch = "wasm32"))]
    proptest::proptest! {
        #[test]
        fn byte_search_agrees_with_str(s in "[a-c:\\]\\[ .?é/#]{0,24}") {
            for b in [b':', b']', b'.', b' ', b'?'] {
                proptest::prop_assert_eq!(find_str(&s, (b as char).encode_utf8(&mut [0; 4])), s.find(b as char));
                proptest::prop_assert_eq!(rfind_byte(&s, b), s.rfind(b as char));
            }
            proptest::prop_assert_eq!(find_any(&s, b"?]"), s.find(['?', ']']));
            proptest::prop_assert_eq!(find_any(&s, b"/?#"), s.find(['/', '?', '#']));
        }
    }
}
