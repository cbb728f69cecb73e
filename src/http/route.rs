//! The one reading of a request that the gate decides on and forwards.
//!
//! Owns: classifying a request once ([`Target`]: registry API, UI, token endpoint, other);
//! the registry request the gate decides on ([`RegistryRequest`]: method, route, and the query
//! read with the registry's Go semantics, http/query.rs), whose canonical form is what is
//! forwarded; refusing bodies the registry would read as form fields (Go's `FormValue` reads
//! `application/x-www-form-urlencoded` and `multipart/form-data` bodies before the query, so
//! such a body could carry a `mount` the gate never saw); and the host the request names
//! ([`request_host`]: `:authority` on HTTP/2, `Host` on HTTP/1.1, refused when both are
//! present and differ). Paths are turned into a [`Route`] naming the repository and object;
//! paths that are not canonical are refused: percent-encoded bytes (the registry would decode
//! `%2F` into a separator), `.`/`..` segments, empty segments (`//`), backslashes, names outside
//! the spec's repository-name grammar (upper case, overlong), and trailing slashes where none
//! belongs. The name is positional: every route's suffix is made of fixed words and one
//! slash-free token, so the repository is everything between `/v2/` and the suffix, as the
//! registry's router reads it. Does not own: what a route allows (authz/).

use std::sync::LazyLock;

use http::{HeaderMap, HeaderValue, Method, Uri, header};
use regex::Regex;

pub use crate::authz::rules::is_valid_name;
use crate::authz::{Action, Ask, Part};
use crate::ops::metrics::Kind;
use crate::query::Query;

/// A tag.
static TAG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$").expect("valid regex"));
/// A digest: `algorithm:encoded`.
static DIGEST: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$").expect("valid regex")
});
/// An upload session id as the registry issues them (UUIDs), with some slack.
static UPLOAD_ID: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z0-9_.=-]{1,256}$").expect("valid regex"));

/// What a `/v2/...` path addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`: the version check (login ping).
    Base,
    /// `/v2/_catalog`.
    Catalog,
    Manifest {
        name: String,
        reference: String,
    },
    Blob {
        name: String,
        digest: String,
    },
    /// `/v2/<name>/blobs/uploads/`: starts an upload (or a mount).
    UploadStart {
        name: String,
    },
    Upload {
        name: String,
        id: String,
    },
    Tags {
        name: String,
    },
    Referrers {
        name: String,
        digest: String,
    },
}

impl Route {
    /// The repository this route is about, if any.
    pub fn repository(&self) -> Option<&str> {
        match self {
            Route::Base | Route::Catalog => None,
            Route::Manifest { name, .. }
            | Route::Blob { name, .. }
            | Route::UploadStart { name }
            | Route::Upload { name, .. }
            | Route::Tags { name }
            | Route::Referrers { name, .. } => Some(name),
        }
    }

    /// The tag, digest or upload id named, for the audit log.
    pub fn object(&self) -> Option<&str> {
        match self {
            Route::Manifest { reference, .. } => Some(reference),
            Route::Blob { digest, .. } | Route::Referrers { digest, .. } => Some(digest),
            Route::Upload { id, .. } => Some(id),
            _ => None,
        }
    }
}

/// Where a request goes, read once from its path and carried through the pipeline (routing,
/// metrics, the access log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `/v2` and below, by the distribution spec's grammar.
    Registry(Route),
    /// `/ui` and below.
    Ui,
    /// `/token`.
    Token,
    /// Anything else (a 404, unless it is a CORS preflight).
    Other,
}

impl Target {
    /// Reads a request path. Registry paths that are not canonical are refused here.
    pub fn of(path: &str) -> Result<Target, RouteError> {
        if path == "/v2" || path.starts_with("/v2/") {
            return parse(path).map(Target::Registry);
        }
        if path == "/ui" || path.starts_with("/ui/") {
            return Ok(Target::Ui);
        }
        if path == "/token" {
            return Ok(Target::Token);
        }
        Ok(Target::Other)
    }

    /// The `kind` label of the request metrics.
    pub fn metrics_kind(&self) -> Kind {
        match self {
            Target::Registry(Route::Blob { .. }) => Kind::Blob,
            Target::Registry(Route::Manifest { .. }) => Kind::Manifest,
            Target::Registry(Route::UploadStart { .. } | Route::Upload { .. }) => Kind::Upload,
            Target::Registry(Route::Catalog) => Kind::Catalog,
            Target::Registry(Route::Tags { .. }) => Kind::Tags,
            Target::Ui => Kind::Ui,
            Target::Registry(Route::Base | Route::Referrers { .. })
            | Target::Token
            | Target::Other => Kind::Other,
        }
    }
}

/// A registry API request as the gate decides on it, and as it is forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryRequest {
    pub method: Method,
    pub route: Route,
    /// The query as the registry reads it. Changing it (a refused mount) changes what is
    /// forwarded: [`RegistryRequest::path_and_query`] is built from it.
    pub query: Query,
}

impl RegistryRequest {
    /// Reads a `/v2` request: its route (already parsed) and its query.
    pub fn read(
        method: &Method,
        route: Route,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Result<Self, RouteError> {
        refuse_form_body(headers)?;
        Ok(RegistryRequest {
            method: method.clone(),
            route,
            query: Query::of(uri.query()),
        })
    }

    /// What this request asks of the policy (authz/policy.rs): its action on its repository and
    /// which part of a push it is. `None` for the routes without a repository (`/v2/`,
    /// `_catalog`) and for methods the endpoint does not have.
    pub fn ask(&self) -> Option<Ask<'_>> {
        let m = &self.method;
        let read = *m == Method::GET || *m == Method::HEAD;
        let (action, part) = match &self.route {
            Route::Manifest { .. } if read => (Action::Pull, Part::Other),
            Route::Manifest { .. } if *m == Method::PUT => (Action::Push, Part::Other),
            Route::Manifest { .. } | Route::Blob { .. } if *m == Method::DELETE => {
                (Action::Delete, Part::Other)
            }
            Route::Blob { .. } | Route::Tags { .. } | Route::Referrers { .. } if read => {
                (Action::Pull, Part::Other)
            }
            Route::UploadStart { .. } if *m == Method::POST => (Action::Push, Part::NewUpload),
            Route::Upload { id, .. }
                if read || *m == Method::PATCH || *m == Method::PUT || *m == Method::DELETE =>
            {
                (Action::Push, Part::Session(id))
            }
            _ => return None,
        };
        Some(Ask::Request {
            action,
            repo: self.route.repository()?,
            part,
        })
    }

    /// What is forwarded: the canonical path (accepted as it came) and the canonical query.
    pub fn path_and_query(&self, path: &str) -> String {
        if self.query.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{}", self.query.encode())
        }
    }
}

/// The source repository a cross-repository mount names, when the query has `mount` or
/// `from` at all (`""` when `from` is missing): what the registry reads with `FormValue`, so
/// exactly what must be allowed (authz `Ask::MountSource`) or removed.
pub fn mount_source(query: &Query) -> Option<&str> {
    (query.has("mount") || query.has("from")).then(|| query.get("from").unwrap_or_default())
}

/// Refuses a request whose body the registry would read as form fields. Every
/// `Content-Type` field counts (Go reads the first), compared the way Go's
/// `mime.ParseMediaType` reads it: the part before `;`, trimmed, case-insensitive.
/// Go reads multipart bodies whatever the method, so no method is exempt.
///
/// Go lower-cases with `strings.ToLower`, Unicode's simple case mapping, under which some
/// non-ASCII letters become ASCII ones (`İ` U+0130 is `i`, `K` U+212A is `k`): so
/// `applİcation/x-www-form-urlencoded` is a form to the registry. Media types are ASCII
/// tokens (RFC 9110 §8.3.1) and no client sends anything else, so a `Content-Type` with any
/// non-ASCII byte is refused as if it were a form rather than guessed at.
pub fn refuse_form_body(headers: &HeaderMap) -> Result<(), RouteError> {
    let is_form = |v: &HeaderValue| {
        if !v.as_bytes().is_ascii() {
            return true;
        }
        let text = String::from_utf8_lossy(v.as_bytes()).to_ascii_lowercase();
        let media = text.split(';').next().unwrap_or("").trim().to_owned();
        media == "application/x-www-form-urlencoded" || media.starts_with("multipart/")
    };
    if headers.get_all(header::CONTENT_TYPE).iter().any(is_form) {
        return Err(RouteError::FormBody);
    }
    Ok(())
}

/// The host a request names: `:authority` (HTTP/2, or an absolute-form HTTP/1.1 target), else
/// `Host`. When both are present they must agree (RFC 9113 §8.3.1, RFC 9112 §3.2.2): the
/// gate forwards one host, so it must be the one it read. `Ok(None)` when there is none.
pub fn request_host(uri: &Uri, headers: &HeaderMap) -> Result<Option<HeaderValue>, RouteError> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(RouteError::Host("more than one Host header"));
    }
    match (uri.authority(), host) {
        (Some(a), Some(h)) if a.as_str().as_bytes() != h.as_bytes() => Err(RouteError::Host(
            "the Host header differs from the request's authority",
        )),
        (Some(a), _) => HeaderValue::from_str(a.as_str())
            .map(Some)
            .map_err(|_| RouteError::Host("invalid authority")),
        (None, h) => Ok(h.cloned()),
    }
}

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The path is not canonical or names an invalid repository: `NAME_INVALID`.
    #[error("{0}")]
    Invalid(&'static str),
    /// A well-formed path the registry API does not have: `NOT_FOUND`.
    #[error("no such registry endpoint")]
    Unknown,
    /// A body the registry would read as form fields: 415.
    #[error(
        "form bodies (application/x-www-form-urlencoded, multipart/*) are not accepted by the registry API; send application/octet-stream"
    )]
    FormBody,
    /// Hosts that disagree: 400.
    #[error("{0}")]
    Host(&'static str),
}

/// Parses a request path that starts with `/v2`.
pub fn parse(path: &str) -> Result<Route, RouteError> {
    if path == "/v2" || path == "/v2/" {
        return Ok(Route::Base);
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return Err(RouteError::Unknown);
    };
    if rest.contains('%') {
        return Err(RouteError::Invalid(
            "percent-encoded bytes are not allowed in registry paths",
        ));
    }
    if rest.contains('\\') {
        return Err(RouteError::Invalid(
            "backslashes are not allowed in registry paths",
        ));
    }
    if rest == "_catalog" {
        return Ok(Route::Catalog);
    }
    // `uploads/` ends in an empty segment by design; no other empty segment is allowed.
    let (body, upload_start) = match rest.strip_suffix("/blobs/uploads/") {
        Some(name) => (name, true),
        None => (rest, false),
    };
    let segments: Vec<&str> = body.split('/').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return Err(RouteError::Invalid(
            "empty path segments (// or a trailing slash) are not allowed",
        ));
    }
    if segments.iter().any(|s| *s == "." || *s == "..") {
        return Err(RouteError::Invalid(
            "dot segments are not allowed in registry paths",
        ));
    }
    let name_of = |n: usize| -> Result<String, RouteError> {
        let name = segments[..segments.len() - n].join("/");
        if name.is_empty() {
            return Err(RouteError::Unknown);
        }
        if !is_valid_name(&name) {
            return Err(RouteError::Invalid(
                "invalid repository name (lower-case letters, digits and separators, at most 255 characters)",
            ));
        }
        Ok(name)
    };
    if upload_start {
        return Ok(Route::UploadStart { name: name_of(0)? });
    }
    let n = segments.len();
    let last = segments[n - 1];
    let at = |i: usize| n.checked_sub(i).map(|k| segments[k]);
    if at(2) == Some("tags") && last == "list" {
        return Ok(Route::Tags { name: name_of(2)? });
    }
    if at(2) == Some("manifests") {
        if !(TAG.is_match(last) || DIGEST.is_match(last)) {
            return Err(RouteError::Invalid("invalid tag or digest"));
        }
        return Ok(Route::Manifest {
            name: name_of(2)?,
            reference: last.to_owned(),
        });
    }
    if at(3) == Some("blobs") && at(2) == Some("uploads") {
        if !UPLOAD_ID.is_match(last) {
            return Err(RouteError::Invalid("invalid upload id"));
        }
        return Ok(Route::Upload {
            name: name_of(3)?,
            id: last.to_owned(),
        });
    }
    if at(2) == Some("blobs") || at(2) == Some("referrers") {
        if !DIGEST.is_match(last) {
            return Err(RouteError::Invalid("invalid digest"));
        }
        let (name, digest) = (name_of(2)?, last.to_owned());
        return Ok(if at(2) == Some("blobs") {
            Route::Blob { name, digest }
        } else {
            Route::Referrers { name, digest }
        });
    }
    Err(RouteError::Unknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn parses_every_endpoint() {
        let name = |s: &str| s.to_owned();
        assert_eq!(parse("/v2/"), Ok(Route::Base));
        assert_eq!(parse("/v2"), Ok(Route::Base));
        assert_eq!(parse("/v2/_catalog"), Ok(Route::Catalog));
        assert_eq!(
            parse("/v2/team-a/sub/app/manifests/v1.0"),
            Ok(Route::Manifest {
                name: name("team-a/sub/app"),
                reference: name("v1.0")
            })
        );
        assert_eq!(
            parse(&format!("/v2/a/manifests/{D}")),
            Ok(Route::Manifest {
                name: name("a"),
                reference: D.into()
            })
        );
        assert_eq!(
            parse(&format!("/v2/a/b/blobs/{D}")),
            Ok(Route::Blob {
                name: name("a/b"),
                digest: D.into()
            })
        );
        assert_eq!(
            parse("/v2/a/blobs/uploads/"),
            Ok(Route::UploadStart { name: name("a") })
        );
        assert_eq!(
            parse("/v2/a/blobs/uploads/0f8e-11aa"),
            Ok(Route::Upload {
                name: name("a"),
                id: name("0f8e-11aa")
            })
        );
        assert_eq!(
            parse("/v2/a/tags/list"),
            Ok(Route::Tags { name: name("a") })
        );
        assert_eq!(
            parse(&format!("/v2/a/referrers/{D}")),
            Ok(Route::Referrers {
                name: name("a"),
                digest: D.into()
            })
        );
        // Words of the grammar can be repository components too; the suffix decides.
        assert_eq!(
            parse("/v2/x/manifests/tags/list"),
            Ok(Route::Tags {
                name: name("x/manifests")
            })
        );
        assert_eq!(
            parse("/v2/blobs/uploads/blobs/uploads/"),
            Ok(Route::UploadStart {
                name: name("blobs/uploads")
            })
        );
    }

    #[test]
    fn refuses_non_canonical_paths() {
        for p in [
            "/v2/team-a%2Fapp/manifests/v1",
            "/v2/%2e%2e/manifests/v1",
            "/v2/a/../b/manifests/v1",
            "/v2/./a/manifests/v1",
            "/v2/a//b/manifests/v1",
            "/v2//a/manifests/v1",
            "/v2/a\\b/manifests/v1",
            "/v2/Team/manifests/v1",
            "/v2/a/tags/list/",
            "/v2/a/manifests/v1/",
            "/v2/a-/manifests/v1",
            "/v2/a/manifests/bad:tag:x",
            "/v2/a/blobs/notadigest",
        ] {
            assert!(
                matches!(parse(p), Err(RouteError::Invalid(_))),
                "{p}: {:?}",
                parse(p)
            );
        }
        let long = format!("/v2/{}/manifests/v1", "a".repeat(256));
        assert!(matches!(parse(&long), Err(RouteError::Invalid(_))));
        let ok = format!("/v2/{}/manifests/v1", "a".repeat(255));
        assert!(parse(&ok).is_ok());
    }

    fn kind(path: &str) -> Kind {
        Target::of(path).map_or(Kind::Other, |t| t.metrics_kind())
    }

    #[test]
    fn targets_and_metrics_kinds() {
        for (path, want) in [
            ("/v2/", Kind::Other),
            ("/v2", Kind::Other),
            ("/v2/_catalog", Kind::Catalog),
            (&*format!("/v2/app/blobs/{D}"), Kind::Blob),
            (&*format!("/v2/team/app/blobs/{D}"), Kind::Blob),
            ("/v2/team/app/blobs/uploads/", Kind::Upload),
            ("/v2/team/app/blobs/uploads/5f1c-uuid", Kind::Upload),
            ("/v2/team/app/manifests/latest", Kind::Manifest),
            (&*format!("/v2/team/app/manifests/{D}"), Kind::Manifest),
            ("/v2/team/app/tags/list", Kind::Tags),
            // Name components that look like route words.
            ("/v2/blobs/manifests/v1", Kind::Manifest),
            (&*format!("/v2/manifests/blobs/{D}"), Kind::Blob),
            ("/v2/x/blobs/uploads/manifests/v1", Kind::Manifest),
            ("/v2/uploads/blobs/uploads/", Kind::Upload),
            ("/v2/tags/tags/list", Kind::Tags),
            // Not routes (refused or unknown).
            ("/v2/team/app/blobs/uploads", Kind::Other),
            ("/v2/manifests/latest", Kind::Other),
            ("/v2/app/manifests/", Kind::Other),
            ("/v2/app/tags/lists", Kind::Other),
            ("/v2//manifests/x", Kind::Other),
            ("/ui", Kind::Ui),
            ("/ui/", Kind::Ui),
            ("/ui/index.html", Kind::Ui),
            ("/uix", Kind::Other),
            ("/token", Kind::Other),
            ("/", Kind::Other),
            ("", Kind::Other),
        ] {
            assert_eq!(kind(path), want, "{path}");
        }
        assert_eq!(Target::of("/token"), Ok(Target::Token));
        assert_eq!(Target::of("/tokens"), Ok(Target::Other));
        assert_eq!(Target::of("/ui/x"), Ok(Target::Ui));
        assert!(Target::of("/v2/a%2Fb/tags/list").is_err());
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn form_bodies_are_refused_in_every_spelling() {
        for ct in [
            "application/x-www-form-urlencoded",
            "Application/X-WWW-Form-Urlencoded",
            " application/x-www-form-urlencoded ; charset=utf-8",
            "multipart/form-data; boundary=x",
            "MULTIPART/FORM-DATA;boundary=x",
            "multipart/mixed; boundary=x",
        ] {
            assert_eq!(
                refuse_form_body(&headers(&[("content-type", ct)])),
                Err(RouteError::FormBody),
                "{ct}"
            );
        }
        // A second Content-Type field counts too.
        let two = headers(&[
            ("content-type", "application/octet-stream"),
            ("content-type", "multipart/form-data; boundary=x"),
        ]);
        assert_eq!(refuse_form_body(&two), Err(RouteError::FormBody));
        // Go's strings.ToLower folds these to ASCII (U+0130 to `i`): forms to the registry.
        for folded in [
            "appl\u{130}cation/x-www-form-urlencoded",
            "mult\u{130}part/form-data; boundary=x",
            "application/octet-stream; x=\u{212A}",
        ] {
            let mut h = HeaderMap::new();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_bytes(folded.as_bytes()).unwrap(),
            );
            assert_eq!(refuse_form_body(&h), Err(RouteError::FormBody), "{folded}");
        }
        for ok in [
            "application/octet-stream",
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/json",
        ] {
            assert_eq!(
                refuse_form_body(&headers(&[("content-type", ok)])),
                Ok(()),
                "{ok}"
            );
        }
        assert_eq!(refuse_form_body(&HeaderMap::new()), Ok(()));
    }

    #[test]
    fn the_request_host_is_read_once() {
        let origin_form: Uri = "/v2/".parse().unwrap();
        let h2: Uri = "https://reg.example:5443/v2/".parse().unwrap();
        let host = |v: &str| headers(&[("host", v)]);
        // HTTP/1.1: Host.
        assert_eq!(
            request_host(&origin_form, &host("reg.example:5443"))
                .unwrap()
                .unwrap(),
            "reg.example:5443"
        );
        // HTTP/2: :authority, with or without an agreeing Host.
        assert_eq!(
            request_host(&h2, &HeaderMap::new()).unwrap().unwrap(),
            "reg.example:5443"
        );
        assert_eq!(
            request_host(&h2, &host("reg.example:5443"))
                .unwrap()
                .unwrap(),
            "reg.example:5443"
        );
        // Disagreeing or repeated hosts are refused.
        assert!(request_host(&h2, &host("evil.example")).is_err());
        let two = headers(&[("host", "a"), ("host", "b")]);
        assert!(request_host(&origin_form, &two).is_err());
        assert_eq!(request_host(&origin_form, &HeaderMap::new()).unwrap(), None);
    }

    #[test]
    fn forwarded_query_is_the_reading() {
        let uri: Uri = "/v2/a/blobs/uploads/?%6Dount=sha256:1&from=b;x&from=c"
            .parse()
            .unwrap();
        let r = RegistryRequest::read(
            &Method::POST,
            parse("/v2/a/blobs/uploads/").unwrap(),
            &uri,
            &HeaderMap::new(),
        )
        .unwrap();
        assert_eq!(r.query.get("mount"), Some("sha256:1"));
        assert_eq!(r.query.get("from"), Some("c"));
        assert_eq!(
            r.path_and_query(uri.path()),
            "/v2/a/blobs/uploads/?mount=sha256%3A1&from=c"
        );
    }

    /// Users × routes × methods × query spellings, from the raw request to the policy's
    /// decisions: the request's own, and the mount source's where the query names one.
    #[test]
    fn decisions_from_raw_requests() {
        use crate::auth::Identity;
        use crate::authz::{Caller, Policy, ReadOnly, Reason, Rules};
        use std::sync::Arc;
        let rules = Rules::parse(
            "[[rule]]\nrepos = [\"team-a/**\"]\nusers = [\"alice\"]\nallow = [\"pull\", \"push\"]\n\n[[rule]]\nrepos = [\"**\"]\nusers = [\"carol\"]\nallow = [\"pull\", \"push\", \"delete\"]\n",
            std::path::Path::new("rules.toml"),
        )
        .unwrap();
        let policy = Policy {
            rules: Some(Arc::new(rules)),
            read_only: ReadOnly::OFF,
        };
        type Expect = Option<(bool, Reason)>;
        let (y, n) = (Some((true, Reason::Rule)), Some((false, Reason::NoRule)));
        let invalid = Some((false, Reason::InvalidName));
        let up = "/v2/team-a/app/blobs/uploads/";
        let rows: Vec<(&str, Method, String, Expect, Expect)> = vec![
            (
                "alice",
                Method::GET,
                "/v2/team-a/app/manifests/v1".to_string(),
                y,
                None,
            ),
            (
                "alice",
                Method::HEAD,
                format!("/v2/team-a/app/blobs/{D}"),
                y,
                None,
            ),
            (
                "alice",
                Method::PUT,
                "/v2/team-a/app/manifests/v1".to_string(),
                y,
                None,
            ),
            (
                "alice",
                Method::DELETE,
                format!("/v2/team-a/app/manifests/{D}"),
                n,
                None,
            ),
            (
                "carol",
                Method::DELETE,
                format!("/v2/team-a/app/manifests/{D}"),
                y,
                None,
            ),
            (
                "alice",
                Method::GET,
                "/v2/team-b/app/tags/list".to_string(),
                n,
                None,
            ),
            (
                "anonymous",
                Method::GET,
                "/v2/team-a/app/tags/list".to_string(),
                n,
                None,
            ),
            ("alice", Method::PATCH, format!("{up}0f8e-11aa"), y, None),
            (
                "alice",
                Method::POST,
                "/v2/team-b/app/blobs/uploads/".to_string(),
                n,
                None,
            ),
            // Methods an endpoint does not have ask nothing (405).
            (
                "alice",
                Method::POST,
                "/v2/team-a/app/manifests/v1".to_string(),
                None,
                None,
            ),
            (
                "alice",
                Method::PATCH,
                "/v2/team-a/app/tags/list".to_string(),
                None,
                None,
            ),
            // Mounts, in every spelling: the source the registry will read is the one decided.
            (
                "alice",
                Method::POST,
                format!("{up}?mount={D}&from=team-a%2Fother"),
                y,
                y,
            ),
            (
                "alice",
                Method::POST,
                format!("{up}?mount={D}&from=team-b%2Fapp"),
                y,
                n,
            ),
            (
                "alice",
                Method::POST,
                format!("{up}?%6Dount={D}&%66rom=team-b%2Fapp"),
                y,
                n,
            ),
            (
                "alice",
                Method::POST,
                format!("{up}?mount={D}&from=%74eam-b%2fapp"),
                y,
                n,
            ),
            (
                "alice",
                Method::POST,
                format!("{up}?mount={D}&from=team-b%2Fapp&from=team-a%2Fx"),
                y,
                n,
            ),
            (
                "alice",
                Method::POST,
                format!("{up}?mount={D}&from=team-a%2Fx;&from=team-b%2Fapp"),
                y,
                n,
            ),
            (
                "alice",
                Method::POST,
                format!("{up}?mount={D}&from=team-a/x&from=team-b/app"),
                y,
                y,
            ),
            ("alice", Method::POST, format!("{up}?mount={D}"), y, invalid),
            (
                "alice",
                Method::POST,
                format!("{up}?from=team-b%2Fapp"),
                y,
                n,
            ),
            (
                "alice",
                Method::POST,
                format!("{up}?mount={D}&from=Team-B%2Fapp"),
                y,
                invalid,
            ),
            (
                "alice",
                Method::POST,
                format!("{up}?mount={D}&from=team-a%2F..%2Fteam-b"),
                y,
                invalid,
            ),
            (
                "carol",
                Method::POST,
                format!("{up}?%6Dount={D}&from=team-b%2Fapp"),
                y,
                y,
            ),
            // A pair with `;` is no mount at all to the registry.
            (
                "alice",
                Method::POST,
                format!("{up}?mount={D};from=team-b%2Fapp"),
                y,
                None,
            ),
        ];
        for (who, method, target, want, want_mount) in rows {
            let identity = if who == "anonymous" {
                Identity::Anonymous
            } else {
                Identity::User(who.into())
            };
            let caller = Caller::plain(&identity);
            let uri: Uri = target.parse().unwrap();
            let Ok(Target::Registry(route)) = Target::of(uri.path()) else {
                panic!("{target} is not a registry route");
            };
            let req = RegistryRequest::read(&method, route, &uri, &HeaderMap::new()).unwrap();
            let got = req.ask().map(|ask| {
                let d = policy.decide(caller, ask);
                (d.allowed, d.reason)
            });
            assert_eq!(got, want, "{who} {method} {target}");
            let got_mount = mount_source(&req.query).map(|from| {
                let d = policy.decide(caller, Ask::MountSource { from });
                (d.allowed, d.reason)
            });
            assert_eq!(got_mount, want_mount, "{who} {method} {target}: mount");
        }
    }

    #[test]
    fn unknown_endpoints_are_not_found() {
        for p in [
            "/v2/a",
            "/v2/a/b",
            "/v2/_catalog/x",
            "/v2/a/manifests",
            "/v2/a/unknown/x",
            "/v2x",
        ] {
            assert!(parse(p).is_err(), "{p}");
        }
        assert_eq!(parse("/v2/a/b"), Err(RouteError::Unknown));
    }
}
