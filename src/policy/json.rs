//! A small, strict JSON reader (RFC 8259) for the few documents the core
//! reads: token responses, JWT payloads, OAuth error bodies and options.
//!
//! Why not serde_json: in wasm it costs far more bytes than this file, and
//! the browser's `JSON.parse` cannot be called from native tests. Limits keep
//! hostile input cheap: nesting depth is capped and numbers are read as `f64`
//! (exact for integers up to 2^53, which covers every NumericDate).

#[allow(unused_imports)]
use crate::prelude::*;
/// A parsed JSON value. Objects keep their members in document order.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `null`
    Null,
    /// `true` / `false`
    Bool(bool),
    /// Any number, as `f64` (always finite).
    Num(f64),
    /// A string with escapes resolved.
    Str(String),
    /// An array.
    Arr(Vec<Value>),
    /// An object; on duplicate keys the last one wins, as in `JSON.parse`.
    Obj(Vec<(String, Value)>),
}

/// Why a document is not JSON. Kept coarse: callers map it to their error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JsonError;

const MAX_DEPTH: usize = 64;

impl Value {
    /// Member `key` of an object (the last one when duplicated).
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Obj(members) => members.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The number, if this is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Num(n) => Some(*n),
            _ => None,
        }
    }
}

/// Parses a whole document (leading/trailing whitespace allowed).
pub fn parse(text: &str) -> Result<Value, JsonError> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
    };
    p.ws();
    let v = p.value(0)?;
    p.ws();
    if p.i == p.s.len() {
        Ok(v)
    } else {
        Err(JsonError)
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn bump(&mut self) -> Result<u8, JsonError> {
        let b = self.peek().ok_or(JsonError)?;
        self.i += 1;
        Ok(b)
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn lit(&mut self, word: &[u8], v: Value) -> Result<Value, JsonError> {
        if self.s.get(self.i..self.i + word.len()) == Some(word) {
            self.i += word.len();
            Ok(v)
        } else {
            Err(JsonError)
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, JsonError> {
        if depth > MAX_DEPTH {
            return Err(JsonError);
        }
        match self.peek().ok_or(JsonError)? {
            b'{' => self.object(depth),
            b'[' => self.array(depth),
            b'"' => self.string().map(Value::Str),
            b't' => self.lit(b"true", Value::Bool(true)),
            b'f' => self.lit(b"false", Value::Bool(false)),
            b'n' => self.lit(b"null", Value::Null),
            b'-' | b'0'..=b'9' => self.number().map(Value::Num),
            _ => Err(JsonError),
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, JsonError> {
        self.i += 1;
        let mut members = Vec::new();
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(Value::Obj(members));
        }
        loop {
            self.ws();
            if self.peek() != Some(b'"') {
                return Err(JsonError);
            }
            let k = self.string()?;
            self.ws();
            if self.bump()? != b':' {
                return Err(JsonError);
            }
            self.ws();
            let v = self.value(depth + 1)?;
            members.push((k, v));
            self.ws();
            match self.bump()? {
                b',' => continue,
                b'}' => return Ok(Value::Obj(members)),
                _ => return Err(JsonError),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, JsonError> {
        self.i += 1;
        let mut items = Vec::new();
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(Value::Arr(items));
        }
        loop {
            self.ws();
            items.push(self.value(depth + 1)?);
            self.ws();
            match self.bump()? {
                b',' => continue,
                b']' => return Ok(Value::Arr(items)),
                _ => return Err(JsonError),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let mut n = 0u32;
        for _ in 0..4 {
            let d = match self.bump()? {
                b @ b'0'..=b'9' => b - b'0',
                b @ b'a'..=b'f' => b - b'a' + 10,
                b @ b'A'..=b'F' => b - b'A' + 10,
                _ => return Err(JsonError),
            };
            n = n * 16 + u32::from(d);
        }
        Ok(n)
    }

    fn string(&mut self) -> Result<String, JsonError> {
        self.i += 1; // opening quote
        let mut out = String::new();
        loop {
            // Copy the longest run of plain bytes at once.
            let start = self.i;
            while let Some(b) = self.peek() {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.i += 1;
            }
            // `text` came in as &str and we split only at ASCII bytes.
            out.push_str(core::str::from_utf8(&self.s[start..self.i]).map_err(|_| JsonError)?);
            match self.bump()? {
                b'"' => return Ok(out),
                b'\\' => {
                    let c = match self.bump()? {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => self.unicode_escape()?,
                        _ => return Err(JsonError),
                    };
                    out.push(c);
                }
                _ => return Err(JsonError), // raw control character
            }
        }
    }

    fn unicode_escape(&mut self) -> Result<char, JsonError> {
        let hi = self.hex4()?;
        let code = if (0xD800..0xDC00).contains(&hi) {
            if self.bump()? != b'\\' || self.bump()? != b'u' {
                return Err(JsonError);
            }
            let lo = self.hex4()?;
            if !(0xDC00..0xE000).contains(&lo) {
                return Err(JsonError);
            }
            0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
        } else {
            hi
        };
        char::from_u32(code).ok_or(JsonError)
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        self.i - start
    }

    /// JSON number grammar, value computed without `str::parse::<f64>`
    /// (which pulls several KB of float parsing into wasm). Integers up to
    /// 2^53 are exact; other values are within 16 ulps (the bound fuzz/harness.rs holds it to), ample for times.
    fn number(&mut self) -> Result<f64, JsonError> {
        let neg = self.peek() == Some(b'-');
        if neg {
            self.i += 1;
        }
        let int_start = self.i;
        let n_int = self.digits();
        if n_int == 0 || (n_int > 1 && self.s[int_start] == b'0') {
            return Err(JsonError);
        }
        let mut mantissa = 0f64;
        let mut exp10: i64 = 0;
        // Digits past the 18th only move the exponent: they are below an
        // ulp, and rounding on every one of 100 digits drifted by dozens of
        // ulps (found by the json_diff campaign of 2026-12-02). Integers
        // below 2^53 (16 digits) are read exactly, as before.
        for &b in &self.s[int_start..self.i] {
            if mantissa < 1e17 {
                mantissa = mantissa * 10.0 + f64::from(b - b'0');
            } else {
                exp10 += 1;
            }
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            let frac_start = self.i;
            if self.digits() == 0 {
                return Err(JsonError);
            }
            for &b in &self.s[frac_start..self.i] {
                if mantissa < 1e17 {
                    mantissa = mantissa * 10.0 + f64::from(b - b'0');
                    exp10 -= 1;
                }
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            let eneg = match self.peek() {
                Some(b'-') => {
                    self.i += 1;
                    true
                }
                Some(b'+') => {
                    self.i += 1;
                    false
                }
                _ => false,
            };
            let e_start = self.i;
            if self.digits() == 0 {
                return Err(JsonError);
            }
            let mut e: i64 = 0;
            for &b in &self.s[e_start..self.i] {
                e = (e * 10 + i64::from(b - b'0')).min(100_000);
            }
            exp10 += if eneg { -e } else { e };
        }
        let v = scale10(mantissa, exp10);
        if !v.is_finite() {
            return Err(JsonError); // 1e999: not representable, refuse
        }
        Ok(if neg { -v } else { v })
    }
}

/// 10^e by squaring (`f64::powi` is not in `core`).
fn pow10(mut e: u32) -> f64 {
    let (mut base, mut acc) = (10f64, 1f64);
    while e > 0 {
        if e & 1 == 1 {
            acc *= base;
        }
        base *= base;
        e >>= 1;
    }
    acc
}

fn scale10(m: f64, e: i64) -> f64 {
    if m == 0.0 {
        return 0.0;
    }
    let e = e.clamp(-400, 400);
    if e >= 0 {
        m * pow10(e as u32)
    } else if e >= -300 {
        m / pow10((-e) as u32)
    } else {
        (m / 1e300) / pow10((-e - 300) as u32)
    }
}

/// Whether `n` is a whole number (`f64::fract` is not in `core`).
pub fn is_whole(n: f64) -> bool {
    n.is_finite() && (n.abs() >= 9.0e15 || n == (n as i64) as f64)
}

/// Appends `s` to `out` as a JSON string literal (quotes included).
pub fn push_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(HEX[(c as usize) >> 4] as char);
                out.push(HEX[(c as usize) & 15] as char);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_a_token_response() {
        let v =
            parse(r#" {"access_token":"a.b.c","token_type":"Bearer","expires_in":3600} "#).unwrap();
        assert_eq!(v.get("access_token").and_then(Value::as_str), Some("a.b.c"));
        assert_eq!(v.get("expires_in").and_then(Value::as_f64), Some(3600.0));
        assert_eq!(v.get("missing"), None);
    }

    #[test]
    fn duplicate_keys_resolve_to_the_last_like_json_parse() {
        let v = parse(r#"{"exp":1,"exp":2}"#).unwrap();
        assert_eq!(v.get("exp").and_then(Value::as_f64), Some(2.0));
    }

    #[test]
    fn numbers_follow_the_json_grammar() {
        let cases = [
            ("0", 0.0),
            ("-0", 0.0),
            ("1700000000", 1_700_000_000.0),
            ("9007199254740993", 9_007_199_254_740_992.0),
            ("1.5", 1.5),
            ("2.5e3", 2500.0),
            ("1E-2", 0.01),
            ("-12.25", -12.25),
            ("1e-400", 0.0),
            (
                "1111111111144444444444444444444444444444444444444444444444411111111111111111111111111111111111111111111111111",
                1.111_111_111_144_444_4e108,
            ),
            ("123456789012345678901234567890", 1.234_567_890_123_456_8e29),
        ];
        for (text, want) in cases {
            let got = parse(text).unwrap().as_f64().unwrap();
            assert!(
                (got - want).abs() <= want.abs() * 1e-15,
                "{text}: {got} != {want}"
            );
        }
        for bad in [
            "01", "1.", ".5", "+1", "1e", "1e+", "--1", "0x10", "1e999", "NaN", "Infinity",
        ] {
            assert_eq!(parse(bad), Err(JsonError), "{bad}");
        }
    }

    #[test]
    fn strings_resolve_escapes_and_surrogate_pairs() {
        let v = parse(r#""a\"b\\c\/d\n\u00e9\ud83d\ude00""#).unwrap();
        assert_eq!(v.as_str(), Some("a\"b\\c/d\né😀"));
        for bad in [
            r#""\ud83d""#,
            r#""\ude00""#,
            r#""\x""#,
            "\"a\u{1}b\"",
            r#""abc"#,
            r#""\u12""#,
        ] {
            assert_eq!(parse(bad), Err(JsonError), "{bad:?}");
        }
    }

    #[test]
    fn truncated_and_trailing_garbage_documents_are_rejected() {
        for bad in [
            "",
            "{",
            r#"{"access_token":"ab"#,
            r#"{"a":1,}"#,
            "[1,]",
            r#"{"a" 1}"#,
            "{} x",
            "<html><body>502 Bad Gateway</body></html>",
            "tru",
            "nul",
        ] {
            assert_eq!(parse(bad), Err(JsonError), "{bad:?}");
        }
    }

    #[test]
    fn nesting_deeper_than_the_limit_is_refused_without_overflowing_the_stack() {
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        assert_eq!(parse(&deep), Err(JsonError));
        let ok = "[".repeat(60) + &"]".repeat(60);
        assert!(parse(&ok).is_ok());
    }

    #[test]
    fn push_string_round_trips_through_parse() {
        let s = "tab\tquote\"back\\slash\u{1}é";
        let mut out = String::new();
        push_string(&mut out, s);
        assert_eq!(parse(&out).unwrap().as_str(), Some(s));
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(s in ".{0,200}") {
            let _ = parse(&s);
        }

        #[test]
        fn integers_are_exact(n in -(1i64 << 53)..(1i64 << 53)) {
            let text = n.to_string();
            prop_assert_eq!(parse(&text).unwrap().as_f64(), Some(n as f64));
        }

        #[test]
        fn any_string_round_trips(s in any::<String>()) {
            let mut out = String::new();
            push_string(&mut out, &s);
            let v = parse(&out).unwrap();
            prop_assert_eq!(v.as_str(), Some(s.as_str()));
            // and serde_json, the reference reader, reads the same string
            prop_assert_eq!(serde_json::from_str::<String>(&out).unwrap(), s);
        }
    }
}
