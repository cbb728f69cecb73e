//! Waiting on a condition instead of sleeping.

use std::future::Future;
use std::time::{Duration, Instant};

/// Waits until `ok` is true, failing the test after `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut ok: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !ok().await {
        assert!(
            Instant::now() < deadline,
            "condition not met within {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
