//! What a tag points at, asked of the registry, for immutable tags; and the per-tag locks that
//! serialise pushes of one tag through this gate.
//!
//! Owns: `HEAD /v2/<name>/manifests/<tag>` with every manifest type accepted (the registry
//! answers `Docker-Content-Digest`), the bounded search for a covered tag pointing at a digest
//! (`GET /v2/<name>/tags/list`, then a `HEAD` per covered tag, at most [`MAX_TAGS_CHECKED`]),
//! the digest of a pushed manifest (SHA-256 of its bytes, as the registry computes it), and
//! [`TagLocks`]. Does not own: whether a tag is immutable or a change allowed
//! (authz/policy.rs `Ask::Retag`), reading the manifest body (http/service.rs).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, Weak};

use http::{HeaderValue, Method, StatusCode};

use super::Proxy;
use crate::error::GateError;

/// Every manifest type the registry stores, so a `HEAD` finds any of them.
pub const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, \
application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v1+prettyjws, \
application/vnd.docker.distribution.manifest.v1+json";

/// Most covered tags looked up when a manifest is deleted by digest; more is refused.
pub const MAX_TAGS_CHECKED: usize = 200;
/// Largest tag list read.
const MAX_TAG_LIST: usize = 4 << 20;

/// `sha256:<hex>` of `bytes`.
pub fn digest_of_bytes(bytes: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    d.as_ref().iter().fold(String::from("sha256:"), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The digest tag `tag` of `repo` points at, or `None` when there is no such tag.
pub async fn current_digest(
    proxy: &Proxy,
    host: Option<&HeaderValue>,
    repo: &str,
    tag: &str,
) -> Result<Option<String>, GateError> {
    let path = format!("/v2/{repo}/manifests/{tag}");
    let (status, headers, _) = proxy
        .fetch_with(Method::HEAD, &path, host, Some(MANIFEST_TYPES), 0)
        .await?;
    match status {
        StatusCode::OK => headers
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(|d| Some(d.to_owned()))
            .ok_or_else(|| {
                GateError::UpstreamUnavailable(format!("HEAD {path}: no Docker-Content-Digest"))
            }),
        StatusCode::NOT_FOUND => Ok(None),
        other => Err(GateError::UpstreamUnavailable(format!(
            "HEAD {path}: {other}"
        ))),
    }
}

/// A tag of `repo` that `covered` selects and that points at `digest`, if any. Reads the tag
/// list, then asks for each covered tag (at most [`MAX_TAGS_CHECKED`]; beyond that the answer
/// cannot be known and is an error, so the caller refuses).
pub async fn covered_tag_at(
    proxy: &Proxy,
    host: Option<&HeaderValue>,
    repo: &str,
    digest: &str,
    covered: impl Fn(&str) -> bool,
) -> Result<Option<String>, GateError> {
    let path = format!("/v2/{repo}/tags/list");
    let (status, _, body) = proxy.fetch(&path, host, MAX_TAG_LIST).await?;
    if status == StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if status != StatusCode::OK {
        return Err(GateError::UpstreamUnavailable(format!(
            "GET {path}: {status}"
        )));
    }
    #[derive(serde::Deserialize)]
    struct TagList {
        tags: Option<Vec<String>>,
    }
    let list: TagList = serde_json::from_slice(&body)
        .map_err(|e| GateError::UpstreamUnavailable(format!("GET {path}: {e}")))?;
    let candidates: Vec<String> = list
        .tags
        .unwrap_or_default()
        .into_iter()
        .filter(|t| covered(t))
        .collect();
    if candidates.len() > MAX_TAGS_CHECKED {
        return Err(GateError::Denied(format!(
            "{repo} has {} immutable tags, more than the {MAX_TAGS_CHECKED} the gate checks before a delete; delete by tag is refused too",
            candidates.len()
        )));
    }
    for tag in candidates {
        if current_digest(proxy, host, repo, &tag).await?.as_deref() == Some(digest) {
            return Ok(Some(tag));
        }
    }
    Ok(None)
}

/// One async lock per (repository, tag), so two pushes of one tag through this gate are
/// decided one after the other. Entries live while someone holds or waits for them.
#[derive(Default)]
pub struct TagLocks {
    map: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

impl TagLocks {
    /// Waits for the lock of `tag` in `repo`.
    pub async fn lock(&self, repo: &str, tag: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let key = format!("{repo}:{tag}");
        let lock = {
            let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            match map.get(&key).and_then(Weak::upgrade) {
                Some(l) => l,
                None => {
                    if map.len() >= 1024 {
                        map.retain(|_, w| w.strong_count() > 0);
                    }
                    let l = Arc::new(tokio::sync::Mutex::new(()));
                    map.insert(key, Arc::downgrade(&l));
                    l
                }
            }
        };
        lock.lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_sha256_of_the_bytes() {
        assert_eq!(
            digest_of_bytes(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[tokio::test]
    async fn one_tag_one_holder() {
        use futures_util::FutureExt as _;
        let locks = TagLocks::default();
        let held = locks.lock("a/b", "v1").await;
        // Another tag is free; the same tag waits until the holder lets go.
        assert!(locks.lock("a/b", "v2").now_or_never().is_some());
        assert!(locks.lock("a/b", "v1").now_or_never().is_none());
        drop(held);
        assert!(locks.lock("a/b", "v1").now_or_never().is_some());
        // Nobody holds or waits: the entries are dead and pruned when the map grows.
        assert!(
            locks
                .map
                .lock()
                .unwrap()
                .values()
                .all(|w| w.strong_count() == 0)
        );
    }
}
