//! Query strings and form bodies, read the way the registry reads them.
//!
//! The registry is a Go program: its upload handlers read `mount`, `from`, `digest` and
//! `_state` with `r.FormValue`, its catalog `n` and `last` with `r.URL.Query()`; both parse with
//! Go's `url.ParseQuery` (Go 1.19, the version Debian's registry 2.8.2 is built with):
//! - pairs are split on `&` only; a pair containing `;` is dropped (Go >= 1.17);
//! - an empty pair is skipped; a pair without `=` is a key with an empty value;
//! - keys and values are percent-decoded, `+` is a space; a pair with a broken escape
//!   (`%` not followed by two hex digits) is dropped;
//! - a repeated key keeps every value in order, and `Get`/`FormValue` take the first.
//!
//! Owns: that reading ([`Query::parse`]), and writing a reading back canonically
//! ([`Query::encode`], Go's `url.QueryEscape` per key and value, pairs in their order), so the
//! gate forwards exactly the pairs it decided on and never a raw query it did not read.
//! Bytes that are not UTF-8 after decoding become U+FFFD: the gate decides on that text and
//! forwards that text, so the two readings still agree. Does not own: which keys matter
//! (http/route.rs, upstream/catalog.rs, token/).

use std::fmt::Write as _;

/// A query string as the registry reads it: decoded pairs, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    /// Reads `raw` (the part after `?`, or a form body) as Go's `url.ParseQuery` does.
    pub fn parse(raw: &str) -> Query {
        let pairs = raw
            .split('&')
            .filter(|pair| !pair.is_empty() && !pair.contains(';'))
            .filter_map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                Some((unescape(key)?, unescape(value)?))
            })
            .collect();
        Query { pairs }
    }

    /// Reads an optional query (`uri.query()`).
    pub fn of(raw: Option<&str>) -> Query {
        raw.map(Query::parse).unwrap_or_default()
    }

    /// The first value of `key`, as `FormValue` and `Query().Get` answer.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`, in order.
    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// True when `key` is present (with any value, even empty).
    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Drops every pair whose key is one of `keys`.
    pub fn remove(&mut self, keys: &[&str]) {
        self.pairs.retain(|(k, _)| !keys.contains(&k.as_str()));
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// The canonical text of this reading: each key and value escaped as Go's
    /// `url.QueryEscape` does, pairs joined by `&` in their order. Parsing it again gives the
    /// same pairs.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        for (i, (k, v)) in self.pairs.iter().enumerate() {
            if i > 0 {
                out.push('&');
            }
            escape_into(&mut out, k);
            out.push('=');
            escape_into(&mut out, v);
        }
        out
    }
}

/// Go's `url.QueryUnescape`: `%XX` decoded, `+` a space; `None` on a broken escape.
fn unescape(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        match c {
            b'%' => {
                let hi = b.get(i + 1).and_then(|h| (*h as char).to_digit(16))?;
                let lo = b.get(i + 2).and_then(|h| (*h as char).to_digit(16))?;
                // Two hex digits: at most 255.
                out.push(u8::try_from(hi * 16 + lo).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// Go's `url.QueryEscape`: unreserved bytes kept, space as `+`, the rest `%XX` (upper case).
fn escape_into(out: &mut String, s: &str) {
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char);
            }
            b' ' => out.push('+'),
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &Query) -> Vec<(&str, &str)> {
        q.pairs()
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    /// What Go 1.19's `url.ParseQuery` returns for each input, written out by hand from its
    /// source (net/url/url.go `parseQuery`, `unescape` with `encodeQueryComponent`).
    #[test]
    fn reads_queries_as_go_parse_query_does() {
        let vectors: &[(&str, &[(&str, &str)])] = &[
            ("", &[]),
            (
                "mount=sha256:ab&from=a/b",
                &[("mount", "sha256:ab"), ("from", "a/b")],
            ),
            // Keys and values are percent-decoded; hex digits in either case.
            ("%6Dount=x", &[("mount", "x")]),
            ("%6dount=x", &[("mount", "x")]),
            ("from=team%2Fapp", &[("from", "team/app")]),
            ("from=team%2fapp", &[("from", "team/app")]),
            // `+` is a space, `%2B` a plus.
            ("a=x+y&b=x%2By", &[("a", "x y"), ("b", "x+y")]),
            // A pair with `;` is dropped, the others stay.
            ("mount=x;from=y&from=z", &[("from", "z")]),
            ("a=1&b=2;c=3", &[("a", "1")]),
            ("%3Bx=1", &[(";x", "1")]),
            // A broken escape drops its pair only.
            ("mount=%zz&from=a", &[("from", "a")]),
            ("m%=1&a=2", &[("a", "2")]),
            ("a=%4", &[]),
            ("a=%", &[]),
            // Empty pairs are skipped; a key without `=` has an empty value; `=v` has an empty key.
            ("&&a&=v&b=", &[("a", ""), ("", "v"), ("b", "")]),
            // Only the first `=` splits.
            ("a=b=c", &[("a", "b=c")]),
            // Repeated keys keep their order.
            ("from=a&from=b", &[("from", "a"), ("from", "b")]),
            // Keys are case-sensitive.
            ("Mount=x", &[("Mount", "x")]),
        ];
        for (raw, want) in vectors {
            assert_eq!(pairs(&Query::parse(raw)), *want, "query {raw:?}");
        }
    }

    #[test]
    fn first_value_wins() {
        let q = Query::parse("from=a&%66rom=b&from=c");
        assert_eq!(q.get("from"), Some("a"));
        assert_eq!(q.all("from").collect::<Vec<_>>(), ["a", "b", "c"]);
        assert!(!q.has("mount"));
    }

    #[test]
    fn encodes_as_go_query_escape() {
        let q = Query::parse("_state=abc%3D%3D&digest=sha256%3A01&from=a%2Fb&s=x+y&t=%7E-_.");
        assert_eq!(
            q.encode(),
            "_state=abc%3D%3D&digest=sha256%3A01&from=a%2Fb&s=x+y&t=~-_."
        );
        // Raw spellings the gate did not read are never forwarded: only the reading is.
        let q = Query::parse("%6Dount=sha256:1&x;y=1&bad=%zz");
        assert_eq!(q.encode(), "mount=sha256%3A1");
    }

    #[test]
    fn encoding_reparses_to_the_same_pairs() {
        for raw in [
            "a=%00%FF&b=%C3%A9&c=%20+",
            "k%26=v%3D&=&x",
            "%E2%82%AC=%25&~=.",
        ] {
            let q = Query::parse(raw);
            assert_eq!(Query::parse(&q.encode()), q, "{raw}");
        }
    }

    /// The fuzz target's property (fuzz/fuzz_targets/request_target.rs), on a deterministic
    /// stream of queries made of the bytes that matter, so every `cargo test` checks it.
    #[test]
    fn forwarded_queries_reparse_to_the_decided_pairs() {
        let alphabet: Vec<char> = "%&;=+ 2F6Dd:/.~aé\u{0}#?".chars().collect();
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = (next() % 24) as usize;
            let raw: String = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let decided = Query::parse(&raw);
            let forwarded = decided.encode();
            assert_eq!(
                Query::parse(&forwarded),
                decided,
                "{raw:?} -> {forwarded:?}"
            );
            assert!(!forwarded.contains(';'), "{forwarded:?}");
            let uri = format!("/v2/a/blobs/uploads/?{forwarded}");
            let uri: http::Uri = uri.parse().expect("a valid request target");
            assert_eq!(Query::of(uri.query()), decided, "{raw:?}");
        }
    }

    #[test]
    fn remove_drops_every_spelling_of_a_key() {
        let mut q = Query::parse("%6Dount=1&mount=2&from=a&keep=1");
        q.remove(&["mount", "from"]);
        assert_eq!(q.encode(), "keep=1");
    }
}
