//! Query strings and form bodies: `key=value` pairs with percent-decoding.
//!
//! Owns: decoding only. Forwarded query strings are never re-encoded; the gate only reads
//! values from them (or drops whole pairs, for refused mounts).

/// Decodes `%XX` escapes (and `+` as space, as in form encoding); a broken escape stays as is.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let escaped = (b[i] == b'%')
            .then(|| b.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (escaped, b[i]) {
            (Some(v), _) => {
                out.push(v);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, c) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The decoded value of the first `key` in `query`.
pub fn param(query: Option<&str>, key: &str) -> Option<String> {
    params(query, key).next()
}

/// The decoded values of every `key` in `query`, in order.
pub fn params<'a>(query: Option<&'a str>, key: &'a str) -> impl Iterator<Item = String> + 'a {
    query
        .unwrap_or("")
        .split('&')
        .filter_map(|p| p.split_once('=').or(Some((p, ""))))
        .filter(move |(k, _)| *k == key)
        .map(|(_, v)| percent_decode(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_percent_escapes() {
        assert_eq!(percent_decode("a%2Fb"), "a/b");
        assert_eq!(percent_decode("a%2fb%"), "a/b%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%4"), "%4");
    }

    #[test]
    fn params_are_found_and_decoded() {
        let q = Some("scope=repository%3Aa%3Apull&scope=repository:b:push&service=x+y&flag");
        assert_eq!(param(q, "service").as_deref(), Some("x y"));
        assert_eq!(
            params(q, "scope").collect::<Vec<_>>(),
            ["repository:a:pull", "repository:b:push"]
        );
        assert_eq!(param(q, "flag").as_deref(), Some(""));
        assert_eq!(param(q, "none"), None);
    }
}
