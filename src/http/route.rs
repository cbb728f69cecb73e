//! Routing by the distribution spec's URL grammar, so that the gate authorizes exactly the path
//! it forwards.
//!
//! Owns: turning a request path into a [`Route`] naming the repository and object, and
//! refusing paths that are not canonical: percent-encoded bytes (the registry would decode
//! `%2F` into a separator), `.`/`..` segments, empty segments (`//`), backslashes, names outside
//! the spec's repository-name grammar (upper case, overlong), and trailing slashes where none
//! belongs. The name is positional: every route's suffix is made of fixed words and one
//! slash-free token, so the repository is everything between `/v2/` and the suffix, as the
//! registry's router reads it. Does not own: what a route allows (authz/rules.rs).

use std::sync::LazyLock;

use regex::Regex;

/// The spec's repository-name grammar (written without look-around).
static NAME: LazyLock<Regex> = LazyLock::new(|| {
    let component = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*";
    Regex::new(&format!("^{component}(?:/{component})*$")).expect("valid regex")
});
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

/// Longest repository name the registry accepts.
const MAX_NAME: usize = 255;

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

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The path is not canonical or names an invalid repository: `NAME_INVALID`.
    #[error("{0}")]
    Invalid(&'static str),
    /// A well-formed path the registry API does not have: `NOT_FOUND`.
    #[error("no such registry endpoint")]
    Unknown,
}

/// True when `name` is a valid repository name.
pub fn is_valid_name(name: &str) -> bool {
    name.len() <= MAX_NAME && NAME.is_match(name)
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
