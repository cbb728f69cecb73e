//! The gate's public origin, as clients reach it.
//!
//! Owns: deciding the origin the gate names itself by (token realm, UI `REGISTRY_URL` and
//! `PULL_URL`): the configured `public_url` when set, else the scheme of the connection
//! (`https`, or `http` behind `plain_listen`) plus the request's host (the one reading of
//! http/route.rs `request_host`: `:authority` on HTTP/2, `Host` on HTTP/1.1) when that is a
//! well-formed host[:port]. Never trusts a host with other characters, so a request cannot
//! inject text into what the gate writes.

use http::HeaderValue;

/// `name[:port]` with a name of `[A-Za-z0-9.-]`, or `[IPv6][:port]`. Nothing else is trusted
/// into what the gate writes.
pub fn is_valid_host(s: &str) -> bool {
    if s.is_empty() || s.len() > 255 {
        return false;
    }
    let port_ok = |p: &str| {
        !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok()
    };
    if let Some(rest) = s.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else {
            return false;
        };
        return ip.parse::<std::net::Ipv6Addr>().is_ok()
            && (after.is_empty() || after.strip_prefix(':').is_some_and(port_ok));
    }
    let (name, port) = match s.split_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (s, None),
    };
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        && port.is_none_or(port_ok)
}

/// The origin (`https://host:port`) the gate is reached at for this request.
pub fn public_origin(
    public_url: Option<&str>,
    host: Option<&HeaderValue>,
    tls: bool,
) -> Option<String> {
    if let Some(u) = public_url {
        return Some(u.to_owned());
    }
    let scheme = if tls { "https" } else { "http" };
    let host = host?.to_str().ok()?;
    is_valid_host(host).then(|| format!("{scheme}://{host}"))
}

/// The host[:port] part of an origin.
pub fn host_of(origin: &str) -> &str {
    origin.split_once("://").map_or(origin, |(_, rest)| rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        for ok in [
            "localhost",
            "localhost:5443",
            "reg.example.com",
            "127.0.0.1:1",
            "[::1]:5443",
        ] {
            assert!(is_valid_host(ok), "{ok}");
        }
        for bad in [
            "",
            "a b",
            "evil\"><script>",
            "x:",
            "x:99999999",
            "::1",
            "a/b",
            "x:y",
        ] {
            assert!(!is_valid_host(bad), "{bad}");
        }
    }

    #[test]
    fn origin_prefers_public_url() {
        let h = HeaderValue::from_static("localhost:5443");
        assert_eq!(
            public_origin(None, Some(&h), true).as_deref(),
            Some("https://localhost:5443")
        );
        // Behind plain_listen the connection's scheme is http.
        assert_eq!(
            public_origin(None, Some(&h), false).as_deref(),
            Some("http://localhost:5443")
        );
        assert_eq!(
            public_origin(Some("https://reg.example"), Some(&h), false).as_deref(),
            Some("https://reg.example")
        );
        let bad = HeaderValue::from_static("bad host");
        assert_eq!(public_origin(None, Some(&bad), true), None);
        assert_eq!(public_origin(None, None, true), None);
        assert_eq!(host_of("https://reg.example:443"), "reg.example:443");
    }
}
