//! CORS for browser clients (WHATWG Fetch, "CORS protocol"), as pure functions over headers.
//!
//! Owns: deciding whether a request's `Origin` is allowed (exact, configured origins only: echoing
//! any origin with credentials would let any web site delete images with a user's cached
//! password), the answer to a preflight (`OPTIONS` with `Origin` and
//! `Access-Control-Request-Method`: always 204 from the gate, before authentication, never
//! forwarded, with CORS headers only for an allowed origin), and decorating every other response
//! to an allowed origin (the 401 and the 202 included, so a credentialed cross-origin UI can read
//! them). A disallowed or absent origin gets no CORS headers, never a refusal: a same-origin
//! DELETE carries an `Origin` too. `Access-Control-*` headers that the registry set itself are
//! removed: the gate alone decides. Does not own: where in the pipeline this runs (http/service.rs).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};

use crate::config::CorsConfig;
use crate::error::{self, Body};

/// Methods a browser may use on the registry API and the UI.
const ALLOW_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";
/// Request headers always allowed; those a preflight asks for are added when they are tokens.
const BASE_ALLOW_HEADERS: [&str; 5] = [
    "Authorization",
    "Accept",
    "Content-Type",
    "Content-Range",
    "Cache-Control",
];
/// Response headers a registry client needs to read.
const EXPOSE_HEADERS: &str =
    "Docker-Content-Digest, Location, Range, Docker-Upload-UUID, WWW-Authenticate";
/// At most this many extra header names are taken from `Access-Control-Request-Headers`.
const MAX_REQUESTED_HEADERS: usize = 32;

/// The CORS policy built from `[cors]`.
#[derive(Debug, Clone)]
pub struct Cors {
    origins: Vec<String>,
    /// `*` was configured (only possible with credentials off).
    any: bool,
    credentials: bool,
    max_age: HeaderValue,
}

/// The `Access-Control-Allow-Origin` value to send back to one request, when its origin is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedOrigin(HeaderValue);

impl Cors {
    pub fn new(config: &CorsConfig) -> Cors {
        let any = config.allow_origins.iter().any(|o| o == "*");
        if any {
            tracing::warn!(
                "[cors] allow_origins = [\"*\"]: any web site may call the registry API from a browser (without credentials)"
            );
        }
        Cors {
            origins: config
                .allow_origins
                .iter()
                .filter(|o| *o != "*")
                .cloned()
                .collect(),
            any,
            credentials: config.allow_credentials,
            max_age: HeaderValue::from(config.max_age.as_secs()),
        }
    }

    /// The value to echo when the request's `Origin` is allowed: the exact origin, or `*` when
    /// configured (never with credentials; config.rs refuses that).
    pub fn allowed_origin(&self, request: &HeaderMap) -> Option<AllowedOrigin> {
        let mut values = request.get_all(header::ORIGIN).iter();
        let origin = values.next()?;
        if values.next().is_some() {
            return None;
        }
        if self
            .origins
            .iter()
            .any(|o| o.as_bytes() == origin.as_bytes())
        {
            return Some(AllowedOrigin(origin.clone()));
        }
        self.any
            .then(|| AllowedOrigin(HeaderValue::from_static("*")))
    }
}

/// True for a CORS preflight: `OPTIONS` with `Origin` and `Access-Control-Request-Method`.
pub fn is_preflight(method: &Method, request: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && request.contains_key(header::ORIGIN)
        && request.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The gate's own answer to a preflight, or `None` when the request is not one.
///
/// Always 204, whatever the origin and whether or not `[cors]` is configured: a preflight carries
/// no credentials, so forwarding it or challenging it (401) could only break the browser.
pub fn preflight(
    cors: Option<&Cors>,
    method: &Method,
    request: &HeaderMap,
) -> Option<Response<Body>> {
    if !is_preflight(method, request) {
        return None;
    }
    let mut resp = Response::new(error::empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let Some(cors) = cors else {
        return Some(resp);
    };
    let headers = resp.headers_mut();
    add_vary_origin(headers);
    let Some(origin) = cors.allowed_origin(request) else {
        return Some(resp);
    };
    set_origin_and_credentials(cors, &origin, headers);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(ALLOW_METHODS),
    );
    if let Ok(v) = HeaderValue::from_str(&allow_headers(request)) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
    }
    headers.insert(header::ACCESS_CONTROL_MAX_AGE, cors.max_age.clone());
    Some(resp)
}

/// Sets the CORS headers of a response that is not a preflight answer.
///
/// Removes any `Access-Control-*` the registry set; then, for an allowed origin, adds the origin,
/// the credentials flag and the exposed headers. With `[cors]` configured every response gets
/// `Vary: Origin` (Fetch §3.2.5), since the answer depends on the origin.
pub fn decorate(cors: Option<&Cors>, origin: Option<&AllowedOrigin>, headers: &mut HeaderMap) {
    remove_cors_headers(headers);
    let Some(cors) = cors else {
        return;
    };
    add_vary_origin(headers);
    let Some(origin) = origin else {
        return;
    };
    set_origin_and_credentials(cors, origin, headers);
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSE_HEADERS),
    );
}

fn set_origin_and_credentials(cors: &Cors, origin: &AllowedOrigin, headers: &mut HeaderMap) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.0.clone());
    if cors.credentials {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
}

/// The response headers of the CORS protocol (Fetch §3.2.3).
const CORS_RESPONSE_HEADERS: [HeaderName; 6] = [
    header::ACCESS_CONTROL_ALLOW_ORIGIN,
    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
    header::ACCESS_CONTROL_ALLOW_METHODS,
    header::ACCESS_CONTROL_ALLOW_HEADERS,
    header::ACCESS_CONTROL_EXPOSE_HEADERS,
    header::ACCESS_CONTROL_MAX_AGE,
];

fn remove_cors_headers(headers: &mut HeaderMap) {
    for name in CORS_RESPONSE_HEADERS {
        headers.remove(name);
    }
}

/// Adds `Vary: Origin` unless a `Vary` already names it (or `*`).
fn add_vary_origin(headers: &mut HeaderMap) {
    let present = headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("origin") || t.trim() == "*");
    if !present {
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}

/// The base list plus the names the preflight asked for that are header-name tokens
/// (RFC 9110 §5.1), lowercased, without duplicates.
fn allow_headers(request: &HeaderMap) -> String {
    let mut names: Vec<String> = BASE_ALLOW_HEADERS.iter().map(|h| (*h).to_owned()).collect();
    let asked = request
        .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|n| is_token(n));
    for name in asked.take(MAX_REQUESTED_HEADERS) {
        if !names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            names.push(name.to_ascii_lowercase());
        }
    }
    names.join(", ")
}

/// RFC 9110 §5.6.2: `token = 1*tchar`.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cors(origins: &[&str], credentials: bool) -> Cors {
        Cors::new(&CorsConfig {
            allow_origins: origins.iter().map(|o| (*o).to_owned()).collect(),
            allow_credentials: credentials,
            max_age: Duration::from_secs(600),
        })
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    const UI: &str = "https://ui.example";

    #[test]
    fn preflight_from_an_allowed_origin_gets_the_full_answer() {
        let c = cors(&[UI], true);
        let req = headers(&[
            ("origin", UI),
            ("access-control-request-method", "DELETE"),
            (
                "access-control-request-headers",
                "authorization,x-custom, bad header ,accept,x{y},a:b",
            ),
        ]);
        let resp = preflight(Some(&c), &Method::OPTIONS, &req).unwrap();
        assert_eq!(resp.status(), 204);
        let h = resp.headers();
        assert_eq!(h["access-control-allow-origin"], UI);
        assert_eq!(h["access-control-allow-credentials"], "true");
        assert_eq!(h["access-control-allow-methods"], ALLOW_METHODS);
        assert_eq!(
            h["access-control-allow-headers"],
            "Authorization, Accept, Content-Type, Content-Range, Cache-Control, x-custom"
        );
        assert_eq!(h["access-control-max-age"], "600");
        assert_eq!(h["vary"], "Origin");
    }

    #[test]
    fn preflight_from_other_origins_is_a_bare_204() {
        let c = cors(&[UI], true);
        for origin in ["https://evil.example", "https://ui.example.evil", "null"] {
            let req = headers(&[
                ("origin", origin),
                ("access-control-request-method", "DELETE"),
            ]);
            let resp = preflight(Some(&c), &Method::OPTIONS, &req).unwrap();
            assert_eq!(resp.status(), 204);
            assert!(
                resp.headers()
                    .keys()
                    .all(|k| !k.as_str().starts_with("access-control-")),
                "{origin}: {:?}",
                resp.headers()
            );
        }
        // Without [cors] too: answered, not forwarded, no CORS headers at all.
        let req = headers(&[("origin", UI), ("access-control-request-method", "GET")]);
        let resp = preflight(None, &Method::OPTIONS, &req).unwrap();
        assert_eq!(resp.status(), 204);
        assert!(resp.headers().is_empty());
    }

    #[test]
    fn only_options_with_origin_and_method_is_a_preflight() {
        let c = cors(&[UI], true);
        let with_method = headers(&[("origin", UI), ("access-control-request-method", "GET")]);
        assert!(preflight(Some(&c), &Method::GET, &with_method).is_none());
        let no_method = headers(&[("origin", UI)]);
        assert!(preflight(Some(&c), &Method::OPTIONS, &no_method).is_none());
        let no_origin = headers(&[("access-control-request-method", "GET")]);
        assert!(preflight(Some(&c), &Method::OPTIONS, &no_origin).is_none());
    }

    #[test]
    fn decorate_adds_headers_for_allowed_origins_only() {
        let c = cors(&[UI], true);
        let mut h = headers(&[
            ("access-control-allow-origin", "*"),
            ("vary", "Accept"),
            ("docker-content-digest", "sha256:x"),
        ]);
        let origin = c.allowed_origin(&headers(&[("origin", UI)]));
        assert!(origin.is_some());
        decorate(Some(&c), origin.as_ref(), &mut h);
        assert_eq!(h["access-control-allow-origin"], UI);
        assert_eq!(h["access-control-allow-credentials"], "true");
        assert_eq!(h["access-control-expose-headers"], EXPOSE_HEADERS);
        let vary: Vec<_> = h.get_all("vary").iter().collect();
        assert_eq!(vary, ["Accept", "Origin"]);

        // A disallowed origin: the registry's own CORS headers are gone, none are added.
        let mut h = headers(&[("access-control-allow-origin", "*")]);
        let origin = c.allowed_origin(&headers(&[("origin", "https://evil.example")]));
        assert!(origin.is_none());
        decorate(Some(&c), None, &mut h);
        assert!(h.get("access-control-allow-origin").is_none());
        assert_eq!(h["vary"], "Origin");

        // No [cors]: nothing at all.
        let mut h = headers(&[("access-control-allow-credentials", "true")]);
        decorate(None, None, &mut h);
        assert!(h.is_empty());
    }

    #[test]
    fn two_origin_headers_are_not_allowed() {
        let c = cors(&[UI], true);
        let h = headers(&[("origin", UI), ("origin", UI)]);
        assert!(c.allowed_origin(&h).is_none());
    }

    #[test]
    fn wildcard_without_credentials_answers_star() {
        let c = cors(&["*"], false);
        let origin = c
            .allowed_origin(&headers(&[("origin", "https://any.example")]))
            .unwrap();
        let mut h = HeaderMap::new();
        decorate(Some(&c), Some(&origin), &mut h);
        assert_eq!(h["access-control-allow-origin"], "*");
        assert!(h.get("access-control-allow-credentials").is_none());
    }

    #[test]
    fn tokens() {
        assert!(is_token("x-registry-auth"));
        assert!(!is_token(""));
        assert!(!is_token("a b"));
        assert!(!is_token("a:b"));
        assert!(!is_token("é"));
    }
}
