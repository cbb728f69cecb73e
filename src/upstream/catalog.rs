//! `GET /v2/_catalog` filtered to the repositories the caller may pull.
//!
//! Owns: reading the registry's whole catalog (pages of 1000 names, at most
//! [`MAX_UPSTREAM_PAGES`]) at most once every [`FRESH_FOR`], shared by every caller (concurrent
//! callers wait for the one fetch), keeping only what the policy lets each caller pull, and
//! answering with the registry's own paging contract (`n`, `last`, and a
//! `Link: <...>; rel="next"` header exactly when more allowed repositories follow). Because the
//! whole list is at hand, the `Link` cursor is always the last repository the caller was shown:
//! it never names one the caller may not pull. The registry's pages are fetched with the host
//! the client's request named (on HTTP/2 its `:authority`), as forwarding does. Does not own:
//! the decision (authz/policy.rs, asked once per repository) or reading the query
//! (crate::query).

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderValue, Response, StatusCode, header};

use crate::authz::{Action, Ask, Caller, Policy};
use crate::error::{self, Body, GateError};
use crate::query::Query;
use crate::upstream::Proxy;

/// Repositories asked of the registry per upstream page (its maximum).
const UPSTREAM_PAGE: usize = 1000;
/// Upstream pages read at most (100,000 names); a larger catalog is cut there, with a warning.
const MAX_UPSTREAM_PAGES: usize = 100;
/// How long a fetched catalog is served before the registry is asked again.
const FRESH_FOR: Duration = Duration::from_secs(5);
/// Default and largest client page size, as the registry has them.
const DEFAULT_N: usize = 100;
const MAX_N: usize = 1000;

/// The `n` and `last` of a catalog query (the registry reads them with `r.URL.Query().Get`).
fn paging(query: &Query) -> Result<(usize, Option<String>), GateError> {
    let n = match query.get("n") {
        None | Some("") => DEFAULT_N,
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| GateError::BadRequest(format!("n={v} is not a number")))?
            .min(MAX_N),
    };
    Ok((n, query.get("last").map(str::to_owned)))
}

/// Encodes a repository name for a query value (`/` as `%2F`, as the registry writes it).
fn encode(name: &str) -> String {
    name.replace('/', "%2F")
}

/// The registry's catalog, fetched at most once every [`FRESH_FOR`].
#[derive(Default)]
pub struct Catalog {
    /// When it was fetched, and the names (sorted, as the registry lists them). The lock is
    /// held across a fetch, so concurrent callers share it.
    cached: tokio::sync::Mutex<Option<(Instant, Arc<Vec<String>>)>>,
}

impl Catalog {
    /// Answers a catalog request for `caller`.
    pub async fn filtered(
        &self,
        proxy: &Proxy,
        policy: &Policy<'_>,
        caller: Caller<'_>,
        query: &Query,
        host: Option<&HeaderValue>,
    ) -> Result<Response<Body>, GateError> {
        let (n, last) = paging(query)?;
        let names = self.names(proxy, host).await?;
        let (shown, more) = page(&names, last.as_deref(), n, |repo| {
            policy
                .decide(
                    caller,
                    Ask::Grant {
                        action: Action::Pull,
                        repo,
                    },
                )
                .allowed
        });
        let body = serde_json::json!({ "repositories": shown }).to_string();
        let mut resp = Response::new(error::full(body));
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        if more && let Some(from) = shown.last() {
            let link = format!("</v2/_catalog?last={}&n={n}>; rel=\"next\"", encode(from));
            if let Ok(v) = HeaderValue::from_str(&link) {
                h.insert(header::LINK, v);
            }
        }
        Ok(resp)
    }

    /// The whole catalog, fresh within [`FRESH_FOR`].
    async fn names(
        &self,
        proxy: &Proxy,
        host: Option<&HeaderValue>,
    ) -> Result<Arc<Vec<String>>, GateError> {
        let mut cached = self.cached.lock().await;
        if let Some((at, names)) = &*cached
            && at.elapsed() < FRESH_FOR
        {
            return Ok(names.clone());
        }
        let names = Arc::new(fetch_all(proxy, host).await?);
        *cached = Some((Instant::now(), names.clone()));
        Ok(names)
    }
}

/// Up to `n` names after `last` that `allowed` keeps, and whether another allowed one follows.
fn page<'a>(
    names: &'a [String],
    last: Option<&str>,
    n: usize,
    allowed: impl Fn(&str) -> bool,
) -> (Vec<&'a str>, bool) {
    let start = last.map_or(0, |l| names.partition_point(|x| x.as_str() <= l));
    let mut visible = names[start..]
        .iter()
        .map(String::as_str)
        .filter(|name| allowed(name));
    let shown: Vec<&str> = visible.by_ref().take(n).collect();
    let more = shown.len() == n && visible.next().is_some();
    (shown, more)
}

/// Reads every page of the registry's catalog.
async fn fetch_all(proxy: &Proxy, host: Option<&HeaderValue>) -> Result<Vec<String>, GateError> {
    let mut names: Vec<String> = Vec::new();
    for _ in 0..MAX_UPSTREAM_PAGES {
        let mut pq = format!("/v2/_catalog?n={UPSTREAM_PAGE}");
        if let Some(last) = names.last() {
            pq.push_str(&format!("&last={}", encode(last)));
        }
        let (status, headers, body) = proxy.fetch(&pq, host, 4 << 20).await?;
        if status != StatusCode::OK {
            return Err(GateError::UpstreamUnavailable(format!(
                "the registry answered the catalog with {status}"
            )));
        }
        let doc: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
            GateError::UpstreamUnavailable(format!("the registry's catalog is not JSON: {e}"))
        })?;
        let before = names.len();
        if let Some(list) = doc["repositories"].as_array() {
            names.extend(list.iter().filter_map(|v| v.as_str().map(str::to_owned)));
        }
        if !headers.contains_key(header::LINK) || names.len() == before {
            // The registry lists in order; keep the list sorted for paging whatever it sent.
            names.sort();
            names.dedup();
            return Ok(names);
        }
    }
    tracing::warn!(
        names = names.len(),
        "the registry's catalog has more than {} repositories; the filtered catalog lists the first ones",
        MAX_UPSTREAM_PAGES * UPSTREAM_PAGE
    );
    names.sort();
    names.dedup();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_continue_after_last_and_name_only_what_was_shown() {
        let names: Vec<String> = ["a/1", "a/2", "b/secret", "b/x", "c/1", "c/2", "d/1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let visible = |r: &str| !r.starts_with("b/");
        assert_eq!(page(&names, None, 2, visible), (vec!["a/1", "a/2"], true));
        // The next page starts after the cursor; hidden names are skipped, never named.
        assert_eq!(
            page(&names, Some("a/2"), 2, visible),
            (vec!["c/1", "c/2"], true)
        );
        assert_eq!(page(&names, Some("c/2"), 2, visible), (vec!["d/1"], false));
        // Exactly n left: no next page.
        assert_eq!(
            page(&names, Some("c/1"), 2, visible),
            (vec!["c/2", "d/1"], false)
        );
        // A cursor that is no name in the list (or one the caller may not see) still orders.
        assert_eq!(page(&names, Some("b"), 1, visible), (vec!["c/1"], true));
        assert_eq!(page(&names, Some("zzz"), 5, visible), (vec![], false));
        assert_eq!(page(&names, None, 5, |_| false), (vec![], false));
    }

    #[test]
    fn paging_reads_n_and_last() {
        let q = |s: &str| Query::parse(s);
        assert_eq!(paging(&q("")).unwrap(), (100, None));
        assert_eq!(
            paging(&q("n=7&last=team%2Fapp")).unwrap(),
            (7, Some("team/app".into()))
        );
        // The first value wins, and an encoded key is the same key.
        assert_eq!(
            paging(&q("%6E=3&n=9&last=a&last=b")).unwrap(),
            (3, Some("a".into()))
        );
        assert_eq!(paging(&q("n=5000")).unwrap().0, 1000);
        assert!(paging(&q("n=x")).is_err());
    }
}
