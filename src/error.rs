//! Errors the gate answers itself, and the one place they become HTTP responses.
//!
//! Owns: [`GateError`], its mapping to a status and a registry error code, and the JSON envelope
//! `{"errors":[{"code":..,"message":..,"detail":..}]}` that docker, podman and skopeo parse
//! (an HTML body makes docker print "invalid character '<'"). Does not own: the
//! `Docker-Distribution-Api-Version` header (http/service.rs adds it to every answer, in one
//! place) or CORS decoration (http/cors.rs).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};

/// The response body type of every answer, proxied or generated.
pub type Body = http_body_util::combinators::BoxBody<Bytes, BodyError>;

/// An error while streaming a body (client or upstream side).
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// The registry API version header value, on every answer.
pub const API_VERSION: HeaderValue = HeaderValue::from_static("registry/2.0");
/// Header name of [`API_VERSION`].
pub const API_VERSION_HEADER: &str = "docker-distribution-api-version";

/// Wraps bytes as a [`Body`].
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty [`Body`].
pub fn empty() -> Body {
    full(Bytes::new())
}

/// How a challenge asks the client to authenticate.
#[derive(Debug, Clone)]
pub enum Challenge {
    /// `WWW-Authenticate: Basic realm="..."`.
    Basic { realm: String },
    /// `WWW-Authenticate: Bearer realm="..",service="..",scope=".."[,error=".."]`.
    Bearer {
        realm: String,
        service: String,
        scope: Option<String>,
        error: Option<&'static str>,
    },
}

impl Challenge {
    fn header_value(&self) -> Option<HeaderValue> {
        let text = match self {
            Challenge::Basic { realm } => format!("Basic realm=\"{}\"", quote_safe(realm)),
            Challenge::Bearer {
                realm,
                service,
                scope,
                error,
            } => {
                let mut v = format!(
                    "Bearer realm=\"{}\",service=\"{}\"",
                    quote_safe(realm),
                    quote_safe(service)
                );
                if let Some(scope) = scope {
                    v.push_str(&format!(",scope=\"{}\"", quote_safe(scope)));
                }
                if let Some(error) = error {
                    v.push_str(&format!(",error=\"{error}\""));
                }
                v
            }
        };
        HeaderValue::from_str(&text).ok()
    }
}

/// Keeps a value usable inside a quoted-string (RFC 9110 §5.6.4).
fn quote_safe(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
        .collect()
}

/// Everything the gate refuses or fails with on its own.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("authentication required")]
    Unauthorized(Challenge),
    /// An access key that cannot log in; the message says why (deleted, expired, wrong secret).
    #[error("{message}")]
    KeyRefused {
        challenge: Challenge,
        message: String,
    },
    #[error("{0}")]
    Denied(String),
    #[error("too many failed logins, retry later")]
    TooManyRequests { retry_after: Duration },
    #[error("{0}")]
    NameInvalid(String),
    #[error("{0}")]
    NotFound(&'static str),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    BadRequest(String),
    /// A body the gate will not forward (a form the registry would read as parameters).
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("upstream registry unavailable: {0}")]
    UpstreamUnavailable(String),
    #[error("upstream registry did not answer within {0:?}")]
    UpstreamTimeout(Duration),
    #[error("internal error: {0}")]
    Internal(String),
}

impl GateError {
    /// The status and registry error code this error is answered with.
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            GateError::Unauthorized(_) | GateError::KeyRefused { .. } => {
                (StatusCode::UNAUTHORIZED, "UNAUTHORIZED")
            }
            GateError::Denied(_) => (StatusCode::FORBIDDEN, "DENIED"),
            GateError::TooManyRequests { .. } => (StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS"),
            GateError::NameInvalid(_) => (StatusCode::NOT_FOUND, "NAME_INVALID"),
            GateError::NotFound(_) => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            GateError::Unsupported(_) => (StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED"),
            GateError::BadRequest(_) => (StatusCode::BAD_REQUEST, "UNSUPPORTED"),
            GateError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED")
            }
            GateError::UpstreamUnavailable(_) => (StatusCode::BAD_GATEWAY, "UNAVAILABLE"),
            GateError::UpstreamTimeout(_) => (StatusCode::GATEWAY_TIMEOUT, "UNAVAILABLE"),
            GateError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN"),
        }
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        self.status_and_code().0
    }
}

/// Turns a [`GateError`] into the registry's JSON error response.
pub fn to_response(err: &GateError) -> Response<Body> {
    let (status, code) = err.status_and_code();
    let mut resp = json_error(status, code, &err.to_string());
    let headers = resp.headers_mut();
    match err {
        GateError::Unauthorized(challenge) | GateError::KeyRefused { challenge, .. } => {
            if let Some(v) = challenge.header_value() {
                headers.insert(header::WWW_AUTHENTICATE, v);
            }
        }
        GateError::TooManyRequests { retry_after } => {
            // RFC 9110 §10.2.3: delay-seconds, rounded up so a client never retries early.
            let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        _ => {}
    }
    resp
}

/// A registry-style JSON error response. The API version header is added with every other
/// answer's, in http/service.rs.
pub fn json_error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    // Written directly rather than through a `Value` tree: this is every refusal's body. The
    // codes are fixed words; the message is escaped as a JSON string.
    let message = serde_json::to_string(message).unwrap_or_else(|_| "\"\"".into());
    let body = format!(r#"{{"errors":[{{"code":"{code}","message":{message},"detail":null}}]}}"#);
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unauthorized_has_challenge_json_and_version() {
        let resp = to_response(&GateError::Unauthorized(Challenge::Basic {
            realm: "Registry \"x\"".into(),
        }));
        assert_eq!(resp.status(), 401);
        assert_eq!(
            resp.headers()[header::WWW_AUTHENTICATE],
            "Basic realm=\"Registry x\""
        );
        assert!(
            resp.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("application/json")
        );
    }

    #[test]
    fn the_envelope_is_json_with_the_message_escaped() {
        use http_body_util::BodyExt as _;
        let resp = json_error(StatusCode::FORBIDDEN, "DENIED", "a \"quoted\"\nname\\");
        let bytes = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(resp.into_body().collect())
            .unwrap()
            .to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"errors": [{"code": "DENIED", "message": "a \"quoted\"\nname\\", "detail": null}]})
        );
    }

    #[test]
    fn retry_after_rounds_up() {
        let resp = to_response(&GateError::TooManyRequests {
            retry_after: Duration::from_millis(1500),
        });
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "2");
    }

    #[test]
    fn bearer_challenge_lists_scope_and_error() {
        let c = Challenge::Bearer {
            realm: "https://r.example/token".into(),
            service: "r.example".into(),
            scope: Some("repository:a/b:pull,push".into()),
            error: Some("insufficient_scope"),
        };
        assert_eq!(
            c.header_value().unwrap(),
            "Bearer realm=\"https://r.example/token\",service=\"r.example\",scope=\"repository:a/b:pull,push\",error=\"insufficient_scope\""
        );
    }
}
