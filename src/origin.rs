//! The gate's public origin, as clients reach it.
//!
//! Owns: deciding the origin the gate names itself by (token realm, UI `REGISTRY_URL`):
//! the configured `public_url` when set, else the scheme of the connection plus the request's
//! `Host` (`:authority` for HTTP/2) when that is a well-formed host[:port]. Never trusts a Host
//! with other characters, so a request cannot inject text into what the gate writes.

use http::{HeaderMap, Uri, header};

/// True for `name`, `name:port`, `1.2.3.4:port` or `[v6]:port`, with DNS-name characters.
pub fn is_valid_host(host: &str) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((n, _)) if !n.ends_with(']') && n.contains(':') => (host, None), // bare IPv6: refuse below
        Some((n, p)) => (n, Some(p)),
        None => (host, None),
    };
    if let Some(p) = port
        && (p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    if let Some(v6) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        return v6.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

/// The request's host (Host header, or the h2 `:authority`), when well formed.
pub fn request_host(headers: &HeaderMap, uri: &Uri) -> Option<String> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| uri.authority().map(|a| a.as_str().to_owned()))?;
    is_valid_host(&host).then_some(host)
}

/// The origin (`https://host:port`) the gate is reached at for this request.
pub fn public_origin(
    public_url: Option<&str>,
    headers: &HeaderMap,
    uri: &Uri,
    tls: bool,
) -> Option<String> {
    if let Some(u) = public_url {
        return Some(u.to_owned());
    }
    let scheme = if tls { "https" } else { "http" };
    request_host(headers, uri).map(|h| format!("{scheme}://{h}"))
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
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "localhost:5443".parse().unwrap());
        let uri: Uri = "/v2/".parse().unwrap();
        assert_eq!(
            public_origin(None, &h, &uri, true).as_deref(),
            Some("https://localhost:5443")
        );
        assert_eq!(
            public_origin(Some("https://reg.example"), &h, &uri, true).as_deref(),
            Some("https://reg.example")
        );
        h.insert(header::HOST, "bad host".parse().unwrap());
        assert_eq!(public_origin(None, &h, &uri, true), None);
        assert_eq!(host_of("https://reg.example:443"), "reg.example:443");
    }
}
