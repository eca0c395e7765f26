//! Origins: normalising the allow-list and reading a request URL's origin.

#[allow(unused_imports)]
use crate::prelude::*;
/// Normalises an origin given in options: lower-case scheme and host,
/// default port dropped, one trailing `/` tolerated. `http:` only for
/// loopback hosts. Errors say what is wrong (the caller adds the option).
pub fn normalize(input: &str) -> Result<String, &'static str> {
    let lower = input.to_ascii_lowercase();
    let (scheme, rest) =
        super::split_str(&lower, "://").ok_or("is not an origin (scheme://host[:port])")?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Err("has no host");
    }
    if rest
        .bytes()
        .any(|b| matches!(b, b'/' | b'?' | b'#' | b'@' | b'\\') || b <= b' ' || b >= 0x7f)
    {
        return Err("must be an origin only: no path, query, credentials or non-ASCII characters");
    }
    let (host, port) = split_port(rest)?;
    let default_port = match scheme {
        "https" => "443",
        "http" => "80",
        _ => return Err("must use https: (or http: for localhost)"),
    };
    if scheme == "http" && !is_loopback(host) {
        return Err("uses http: for a host other than localhost, 127.0.0.1 or [::1]");
    }
    let mut out = String::with_capacity(lower.len());
    out.push_str(scheme);
    out.push_str("://");
    out.push_str(host);
    if let Some(p) = port {
        if p != default_port {
            out.push(':');
            out.push_str(p);
        }
    }
    Ok(out)
}

fn split_port(hostport: &str) -> Result<(&str, Option<&str>), &'static str> {
    let (host, port) = if hostport.starts_with('[') {
        let end = super::find_str(hostport, "]").ok_or("has an unterminated IPv6 address")?;
        let after = &hostport[end + 1..];
        match after.strip_prefix(':') {
            Some(p) => (&hostport[..=end], Some(p)),
            None if after.is_empty() => (hostport, None),
            None => return Err("has garbage after the IPv6 address"),
        }
    } else {
        match super::rfind_byte(hostport, b':') {
            Some(i) => (&hostport[..i], Some(&hostport[i + 1..])),
            None => (hostport, None),
        }
    };
    if host.is_empty() || super::find_str(host, ":").is_some() && !host.starts_with('[') {
        return Err("has an invalid host");
    }
    if let Some(p) = port {
        let n: u32 = if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) {
            p.bytes().fold(0, |a, b| a * 10 + u32::from(b - b'0'))
        } else {
            return Err("has an invalid port");
        };
        if n == 0 || n > 65_535 || p.starts_with('0') {
            return Err("has an invalid port");
        }
    }
    Ok((host, port))
}

/// Whether `host` is one of the loopback names http: is allowed for.
pub fn is_loopback(host: &str) -> bool {
    matches!(host, "localhost" | "127.0.0.1" | "[::1]")
}

/// The origin part of an absolute URL as the browser serialises it
/// (`Request.url`: scheme and host already lower-case, default port
/// dropped). `None` for URLs without an authority (`data:`, `blob:`).
pub fn of_url(url: &str) -> Option<&str> {
    let scheme_end = super::find_str(url, "://")?;
    let after = scheme_end + 3;
    let end = super::find_any(&url[after..], b"/?#").map_or(url.len(), |i| after + i);
    Some(&url[..end])
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn origins_are_normalised() {
        assert_eq!(
            normalize("https://API.Example.com").unwrap(),
            "https://api.example.com"
        );
        assert_eq!(
            normalize("https://api.example.com:443/").unwrap(),
            "https://api.example.com"
        );
        assert_eq!(
            normalize("https://api.example.com:8443").unwrap(),
            "https://api.example.com:8443"
        );
        assert_eq!(
            normalize("http://localhost:3000").unwrap(),
            "http://localhost:3000"
        );
        assert_eq!(
            normalize("http://127.0.0.1:80").unwrap(),
            "http://127.0.0.1"
        );
        assert_eq!(normalize("http://[::1]:8080").unwrap(), "http://[::1]:8080");
        assert_eq!(
            normalize("https://[2001:db8::1]").unwrap(),
            "https://[2001:db8::1]"
        );
    }

    #[test]
    fn plain_http_is_refused_for_remote_hosts() {
        for bad in [
            "http://api.example.com",
            "http://127.0.0.2",
            "http://localhost.evil.com",
            "http://10.0.0.1:80",
        ] {
            assert!(normalize(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn things_that_are_not_origins_are_refused() {
        for bad in [
            "api.example.com",
            "https://",
            "https:///",
            "https://api.example.com/v1",
            "https://api.example.com?x",
            "https://user:pw@api.example.com",
            "https://api.example.com:0",
            "https://api.example.com:65536",
            "https://api.example.com:08",
            "https://api.example.com:x",
            "ftp://example.com",
            "javascript://alert(1)",
            "https://exämple.com",
            "https://[::1",
            "https://a b",
            "*",
        ] {
            assert!(normalize(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_origin_of_a_request_url_is_its_scheme_and_authority() {
        assert_eq!(
            of_url("https://api.example.com/v1/me?x=1"),
            Some("https://api.example.com")
        );
        assert_eq!(
            of_url("http://127.0.0.1:8080"),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(of_url("https://a.com?x"), Some("https://a.com"));
        assert_eq!(of_url("https://a.com#frag"), Some("https://a.com"));
        assert_eq!(of_url("data:text/plain,hi"), None);
    }

    proptest! {
        #[test]
        fn normalising_any_text_never_panics(s in ".{0,60}") {
            // Any text: almost never an origin, so only that it answers. The origin-shaped
            // inputs below are where the idempotence is checked.
            let _ = normalize(&s);
        }

        #[test]
        fn an_https_origin_in_any_case_normalises_idempotently(
            host in "[a-zA-Z][a-zA-Z0-9]{0,11}(\\.[a-zA-Z][a-zA-Z0-9]{0,11}){0,3}",
            scheme in "[hH][tT][tT][pP][sS]",
            port in proptest::option::of(1u32..=65_535),
            slash in any::<bool>(),
        ) {
            let mut s = format!("{scheme}://{host}");
            if let Some(p) = port {
                s.push_str(&format!(":{p}"));
            }
            if slash {
                s.push('/');
            }
            // Must be accepted (every such input is a valid https origin).
            let o = normalize(&s).map_err(|e| TestCaseError::fail(format!("{s}: {e}")))?;
            prop_assert_eq!(normalize(&o), Ok(o.clone()));
            prop_assert_eq!(of_url(&o), Some(o.as_str()));
            prop_assert_eq!(&o, &o.to_ascii_lowercase());
            prop_assert_eq!(o.ends_with(":443"), false);
            prop_assert_eq!(o.contains(':') && o.matches(':').count() == 2, port.is_some_and(|p| p != 443));
        }
    }
}
