//! Streaming bodies as they pass through: byte counts and the idle timeout.
//!
//! Owns: [`Tracked`], a body wrapper that forwards frames untouched (no buffering, back-pressure
//! kept: it is polled only when its reader wants more), counts the bytes, and fails the stream
//! when no frame moved for the idle timeout. It never limits a transfer's total time.
//! Does not own: what the counts are used for (http/service.rs logs them).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::error::BodyError;

/// The idle timeout fired on a body.
#[derive(Debug, thiserror::Error)]
#[error("no data moved for {0:?}")]
pub struct IdleTimeout(pub Duration);

pin_project! {
    /// A body passed through with a byte counter and an idle timeout.
    pub struct Tracked<B> {
        #[pin]
        inner: B,
        bytes: Arc<AtomicU64>,
        idle: Duration,
        #[pin]
        timer: Sleep,
        // A frame arrived since the timer was last armed.
        moved: bool,
    }
}

impl<B> Tracked<B> {
    pub fn new(inner: B, bytes: Arc<AtomicU64>, idle: Duration) -> Self {
        Tracked {
            inner,
            bytes,
            idle,
            timer: tokio::time::sleep(idle),
            moved: false,
        }
    }
}

impl<B> HttpBody for Tracked<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BodyError>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let mut this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                *this.moved = true;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                // Re-arming the timer on every frame would cost a timer update per frame; instead
                // it is checked when it fires, so a stall is detected within one to two periods.
                loop {
                    ready!(this.timer.as_mut().poll(cx));
                    if !*this.moved {
                        return Poll::Ready(Some(Err(Box::new(IdleTimeout(*this.idle)))));
                    }
                    *this.moved = false;
                    this.timer.as_mut().reset(Instant::now() + *this.idle);
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    #[tokio::test]
    async fn counts_bytes_and_passes_frames() {
        let bytes = Arc::new(AtomicU64::new(0));
        let body = http_body_util::Full::new(Bytes::from_static(b"hello"));
        let t = Tracked::new(body, bytes.clone(), Duration::from_secs(5));
        let out = t.collect().await.unwrap().to_bytes();
        assert_eq!(&out[..], b"hello");
        assert_eq!(bytes.load(Ordering::Relaxed), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_fails_after_the_idle_time() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BodyError>>(1);
        let stream = tokio_stream_from(rx);
        let bytes = Arc::new(AtomicU64::new(0));
        let mut t = Box::pin(Tracked::new(
            StreamBody::new(stream),
            bytes,
            Duration::from_secs(10),
        ));
        tx.send(Ok(Frame::data(Bytes::from_static(b"x"))))
            .await
            .unwrap();
        assert!(t.frame().await.unwrap().is_ok());
        let start = Instant::now();
        let err = t.frame().await.unwrap().unwrap_err();
        assert!(err.is::<IdleTimeout>());
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_secs(10) && waited <= Duration::from_secs(20),
            "{waited:?}"
        );
        drop(tx);
    }

    fn tokio_stream_from<T>(
        mut rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures_util::Stream<Item = T> {
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }
}

pin_project! {
    /// A body that keeps `guard` alive until the body is finished or dropped; the guard's `Drop`
    /// runs then (used to write the access-log line once the last byte went out).
    pub struct WithGuard<B, G> {
        #[pin]
        inner: B,
        guard: G,
    }
}

impl<B, G> WithGuard<B, G> {
    pub fn new(inner: B, guard: G) -> Self {
        WithGuard { inner, guard }
    }
}

impl<B: HttpBody, G> HttpBody for WithGuard<B, G> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
