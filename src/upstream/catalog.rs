//! `GET /v2/_catalog` filtered to the repositories the caller may pull.
//!
//! Owns: paging through the registry's catalog, keeping only what the rules let the caller
//! pull, and answering with the registry's own paging contract (`n`, `last`, and a
//! `Link: <...>; rel="next"` header exactly when more allowed repositories follow). Work per
//! request is bounded: at most [`MAX_UPSTREAM_PAGES`] upstream pages are read; when that budget
//! runs out first, the answer is a shorter page whose `Link` continues from where the scan
//! stopped, which the paging contract allows. The registry's pages are fetched with the host the
//! client's request named (on HTTP/2 its `:authority`), as forwarding does. Does not own: the
//! decision (authz/policy.rs, asked once per repository) or reading the query (http/query.rs).

use http::{HeaderValue, Response, StatusCode, header};

use crate::authz::{Action, Ask, Caller, Policy};
use crate::error::{self, Body, GateError};
use crate::query::Query;
use crate::upstream::Proxy;

/// Repositories asked of the registry per upstream page (its maximum).
const UPSTREAM_PAGE: usize = 1000;
/// Upstream pages read at most per client request.
const MAX_UPSTREAM_PAGES: usize = 20;
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

/// Answers a catalog request for `who`.
pub async fn filtered(
    proxy: &Proxy,
    policy: &Policy<'_>,
    caller: Caller<'_>,
    query: &Query,
    host: Option<&HeaderValue>,
) -> Result<Response<Body>, GateError> {
    let (n, last) = paging(query)?;
    let mut shown: Vec<String> = Vec::new();
    let mut cursor = last;
    let mut more = false;
    let mut scanned_to: Option<String> = None;
    let mut budget_left = true;
    'pages: for page in 0..=MAX_UPSTREAM_PAGES {
        if page == MAX_UPSTREAM_PAGES {
            budget_left = false;
            break;
        }
        let mut pq = format!("/v2/_catalog?n={UPSTREAM_PAGE}");
        if let Some(c) = &cursor {
            pq.push_str(&format!("&last={}", encode(c)));
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
        let repos: Vec<String> = doc["repositories"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let upstream_has_more = headers.contains_key(header::LINK) && !repos.is_empty();
        for repo in repos {
            scanned_to = Some(repo.clone());
            let ask = Ask::Grant {
                action: Action::Pull,
                repo: &repo,
            };
            if policy.decide(caller, ask).allowed {
                if shown.len() == n {
                    // One more allowed repository exists: the client gets a next link.
                    more = true;
                    break 'pages;
                }
                shown.push(repo);
            }
        }
        if !upstream_has_more {
            break;
        }
        cursor = scanned_to.clone();
    }
    let next_from = if more {
        shown.last().cloned()
    } else if !budget_left {
        // Scanned as far as allowed in one request; the next page continues from there.
        scanned_to.or_else(|| shown.last().cloned())
    } else {
        None
    };
    let body = serde_json::json!({ "repositories": shown }).to_string();
    let mut resp = Response::new(error::full(body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    if let Some(from) = next_from {
        let link = format!("</v2/_catalog?last={}&n={n}>; rel=\"next\"", encode(&from));
        if let Ok(v) = HeaderValue::from_str(&link) {
            h.insert(header::LINK, v);
        }
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

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
