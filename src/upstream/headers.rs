//! Pure header rules applied when forwarding; each with its RFC beside it.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Hop-by-hop fields (RFC 9110 §7.6.1), plus the legacy ones proxies still see.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Removes hop-by-hop fields and every field the `Connection` header names (RFC 9110 §7.6.1).
/// The body's framing is redone by hyper on each side, so `Transfer-Encoding` goes too;
/// `Content-Length` stays.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// What the gate knows about the client's connection.
#[derive(Debug, Clone, Copy)]
pub struct Hop {
    pub peer: IpAddr,
    /// TLS ended at the gate.
    pub tls: bool,
    /// The peer is a configured trusted proxy, whose forwarding headers are kept.
    pub trusted: bool,
}

/// The client a request comes from, for the brute-force brake and the logs: the peer, or, when
/// the peer is a trusted proxy, the nearest address in `X-Forwarded-For` that is not itself a
/// trusted proxy. The chain is read from the right (RFC 7239 §5.2: each hop appends), so a
/// client cannot choose its address by sending one of its own; an entry that is not an address
/// ends the walk.
pub fn client_ip(peer: IpAddr, trusted: &[IpAddr], headers: &HeaderMap) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let values: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let chain = values.iter().flat_map(|v| v.split(',')).rev();
    for entry in chain {
        match entry.trim().parse::<IpAddr>() {
            Ok(ip) if trusted.contains(&ip) => continue,
            Ok(ip) => return ip,
            Err(_) => break,
        }
    }
    peer
}

/// Sets the forwarding headers (RFC 7239 §4 and the de-facto `X-Forwarded-*`).
///
/// The registry prefers `Forwarded` over `X-Forwarded-*` when it builds upload `Location` URLs,
/// so a client could steer them: from an untrusted peer both are replaced, not appended to.
/// `X-Real-IP` (nginx's `real_ip` convention) is removed from an untrusted peer the same way, so
/// a client cannot name itself another address to the registry's logs.
pub fn set_forwarding(headers: &mut HeaderMap, hop: Hop) {
    let x_proto = HeaderName::from_static("x-forwarded-proto");
    let x_for = HeaderName::from_static("x-forwarded-for");
    let x_host = HeaderName::from_static("x-forwarded-host");
    let peer = hop.peer.to_string();

    if !hop.trusted {
        headers.remove(header::FORWARDED);
        headers.remove(&x_proto);
        headers.remove(&x_host);
        headers.remove(&x_for);
        headers.remove(HeaderName::from_static("x-real-ip"));
    }
    let chain = match headers.get(&x_for).and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.trim().is_empty() => format!("{prev}, {peer}"),
        _ => peer,
    };
    if let Ok(v) = HeaderValue::from_str(&chain) {
        headers.insert(x_for, v);
    }
    if hop.tls || !headers.contains_key(&x_proto) {
        let proto = if hop.tls { "https" } else { "http" };
        headers.insert(x_proto, HeaderValue::from_static(proto));
    }
    if !headers.contains_key(&x_host)
        && let Some(host) = headers.get(header::HOST).cloned()
    {
        headers.insert(x_host, host);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_and_connection_named_fields_go() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("content-length", "10"),
            ("accept", "a"),
        ]);
        remove_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["content-length", "accept"]);
    }

    #[test]
    fn untrusted_forwarding_headers_are_replaced() {
        let mut h = map(&[
            ("host", "reg.example:5443"),
            ("forwarded", "for=1.2.3.4;proto=http;host=evil"),
            ("x-forwarded-proto", "http"),
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-host", "evil"),
            ("x-real-ip", "1.2.3.4"),
        ]);
        set_forwarding(
            &mut h,
            Hop {
                peer: "192.0.2.7".parse().unwrap(),
                tls: true,
                trusted: false,
            },
        );
        assert!(h.get("forwarded").is_none());
        assert!(h.get("x-real-ip").is_none());
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
        assert_eq!(h["x-forwarded-host"], "reg.example:5443");
    }

    #[test]
    fn the_client_behind_trusted_proxies() {
        let lb: IpAddr = "10.0.0.2".parse().unwrap();
        let inner: IpAddr = "10.0.0.3".parse().unwrap();
        let trusted = [lb, inner];
        let client = |peer: IpAddr, xff: &[&str]| {
            let pairs: Vec<(&str, &str)> = xff.iter().map(|v| ("x-forwarded-for", *v)).collect();
            client_ip(peer, &trusted, &map(&pairs))
        };
        let outsider: IpAddr = "192.0.2.7".parse().unwrap();
        // An untrusted peer is the client, whatever it claims.
        assert_eq!(client(outsider, &["198.51.100.1"]), outsider);
        // Behind the load balancer: its forwarded client.
        assert_eq!(
            client(lb, &["198.51.100.1"]),
            "198.51.100.1".parse::<IpAddr>().unwrap()
        );
        // A client-sent entry on the left does not win: the nearest untrusted one does.
        assert_eq!(
            client(lb, &["203.0.113.9, 198.51.100.1"]),
            "198.51.100.1".parse::<IpAddr>().unwrap()
        );
        // Two trusted hops, the chain across two header fields.
        assert_eq!(
            client(lb, &["198.51.100.1", "10.0.0.3"]),
            "198.51.100.1".parse::<IpAddr>().unwrap()
        );
        // Nothing usable: the peer.
        assert_eq!(client(lb, &[]), lb);
        assert_eq!(client(lb, &["unknown"]), lb);
    }

    #[test]
    fn trusted_hops_are_kept_and_appended() {
        let mut h = map(&[
            ("host", "internal:8080"),
            ("forwarded", "for=198.51.100.1;proto=https"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-for", "198.51.100.1"),
            ("x-forwarded-host", "reg.example"),
            ("x-real-ip", "198.51.100.1"),
        ]);
        set_forwarding(
            &mut h,
            Hop {
                peer: "10.0.0.2".parse().unwrap(),
                tls: false,
                trusted: true,
            },
        );
        assert!(h.get("forwarded").is_some());
        assert_eq!(h["x-real-ip"], "198.51.100.1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-for"], "198.51.100.1, 10.0.0.2");
        assert_eq!(h["x-forwarded-host"], "reg.example");
    }
}
