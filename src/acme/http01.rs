//! The `acme_http_listen` listener: ACME HTTP-01 answers, and a redirect to https:// for
//! everything else.
//!
//! Owns: `GET /.well-known/acme-challenge/<token>` (RFC 8555 §8.3) answered from the token table
//! of a running order (404 for any other token), and the 301 to `https://` for every other
//! request (the same host without its port, plus the TLS listener's port unless it is 443, or
//! `public_url` when set). It never forwards to the registry and never asks for credentials, so
//! nothing secret travels in clear text. Does not own: the tokens (order.rs).

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::order::Http01Tokens;

const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// Where redirects point.
#[derive(Debug, Clone)]
pub enum RedirectTo {
    /// `https://<request host><:port unless 443>`
    SameHost { tls_port: u16 },
    /// `public_url`, e.g. `https://registry.example.com`.
    Origin(String),
}

/// Serves until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    tokens: Arc<Http01Tokens>,
    redirect: RedirectTo,
    stop: watch::Receiver<bool>,
) {
    let redirect = Arc::new(redirect);
    crate::net::side_listener::serve(
        listener,
        "acme_http_listen",
        false,
        move |req| {
            let resp = answer(&tokens, &redirect, &req);
            async move { resp }
        },
        stop,
    )
    .await;
}

/// The answer to one request: a challenge, or a redirect.
pub fn answer<B>(
    tokens: &Http01Tokens,
    redirect: &RedirectTo,
    req: &Request<B>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if let Some(token) = path.strip_prefix(CHALLENGE_PREFIX)
        && (req.method() == Method::GET || req.method() == Method::HEAD)
    {
        return match tokens.get(token) {
            Some(key_authorization) => {
                tracing::debug!("answered an ACME HTTP-01 challenge");
                reply(StatusCode::OK, key_authorization.into_bytes(), None)
            }
            None => reply(StatusCode::NOT_FOUND, b"no such challenge\n".to_vec(), None),
        };
    }
    let pq = req
        .uri()
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str);
    let base = match redirect {
        RedirectTo::Origin(origin) => Some(origin.clone()),
        RedirectTo::SameHost { tls_port } => request_host(req).map(|host| {
            if *tls_port == 443 {
                format!("https://{host}")
            } else {
                format!("https://{host}:{tls_port}")
            }
        }),
    };
    let Some(base) = base else {
        return reply(
            StatusCode::BAD_REQUEST,
            b"this port only redirects to https://; the request names no host\n".to_vec(),
            None,
        );
    };
    match http::HeaderValue::try_from(format!("{base}{pq}")) {
        Ok(location) => reply(
            StatusCode::MOVED_PERMANENTLY,
            b"use https://\n".to_vec(),
            Some(location),
        ),
        Err(_) => reply(StatusCode::BAD_REQUEST, b"bad request\n".to_vec(), None),
    }
}

/// The request's host name without its port: the URI's authority (absolute form) or `Host`.
/// Only letters, digits, `-`, `.` and a bracketed IPv6 address pass.
fn request_host<B>(req: &Request<B>) -> Option<String> {
    let authority = match req.uri().authority() {
        Some(a) => a.clone(),
        None => req
            .headers()
            .get(header::HOST)?
            .to_str()
            .ok()?
            .parse::<http::uri::Authority>()
            .ok()?,
    };
    let host = authority.host();
    let ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'[' | b']' | b':'));
    ok.then(|| host.to_owned())
}

fn reply(
    status: StatusCode,
    body: Vec<u8>,
    location: Option<http::HeaderValue>,
) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    if let Some(l) = location {
        h.insert(header::LOCATION, l);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(uri: &str, host: Option<&str>) -> Request<()> {
        let mut b = Request::get(uri);
        if let Some(h) = host {
            b = b.header("host", h);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn redirects_to_https_with_the_tls_port_and_answers_only_known_tokens() {
        let tokens = Http01Tokens::default();
        let same = RedirectTo::SameHost { tls_port: 443 };
        let r = answer(
            &tokens,
            &same,
            &get("/v2/x/manifests/1?n=2", Some("reg.example:80")),
        );
        assert_eq!(r.status(), 301);
        assert_eq!(
            r.headers()["location"],
            "https://reg.example/v2/x/manifests/1?n=2"
        );
        let r = answer(
            &tokens,
            &RedirectTo::SameHost { tls_port: 5443 },
            &get("/", Some("[::1]:8080")),
        );
        assert_eq!(r.headers()["location"], "https://[::1]:5443/");
        let r = answer(
            &tokens,
            &RedirectTo::Origin("https://r.example".into()),
            &get("/v2/", Some("evil")),
        );
        assert_eq!(r.headers()["location"], "https://r.example/v2/");
        assert_eq!(answer(&tokens, &same, &get("/", None)).status(), 400);
        assert_eq!(answer(&tokens, &same, &get("/", Some("a b"))).status(), 400);
        let r = answer(
            &tokens,
            &same,
            &get("/.well-known/acme-challenge/tok", Some("reg.example")),
        );
        assert_eq!(r.status(), 404);
        tokens.set("tok", Some("tok.thumb".into()));
        let r = answer(
            &tokens,
            &same,
            &get("/.well-known/acme-challenge/tok", Some("reg.example")),
        );
        assert_eq!(r.status(), 200);
        tokens.set("tok", None);
        let r = answer(
            &tokens,
            &same,
            &get("/.well-known/acme-challenge/tok", Some("reg.example")),
        );
        assert_eq!(r.status(), 404);
    }
}
