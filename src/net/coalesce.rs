//! Batching an HTTP/2 connection's writes into TLS records and socket writes of up to 64 KiB.
//!
//! Owns: `Coalesce`, the layer between hyper's HTTP/2 server and the TLS stream. The h2 crate
//! writes each DATA frame (9 bytes of header and at most the client's frame size, 16 KiB for
//! curl, browsers and Go clients) and flushes after every one, so a download cost one `writev`
//! and two TLS records (16 KiB, then the 9-byte header of the next frame) per 16 KiB.
//! `Coalesce` copies the frames into one buffer and lets the first flush of a full frame wait
//! for one more pass of the connection task (it wakes the task itself), so the frames h2 has
//! ready by then go out together: up to 64 KiB per write, in full records.
//!
//! Small writes (headers, a short body, pings, window updates: under 16 KiB in the buffer) are
//! flushed at once, so answers that fit in one frame wait for nothing. A drain writes the
//! batch to TLS, frees the buffer and flushes TLS before anything more is taken, so behind a
//! slow client the gate holds at most one batch, in rustls' records (50 slow HTTP/2 pulls
//! peaked at the same RSS with and without this layer).
//! Measured on an HTTP/2 pull (docs/benchmarks.md): half the `writev` calls, 12 % more MB/s,
//! about the same CPU per GiB (the copy into the buffer costs what the syscalls saved).
//! Does not own: the TLS stream or the HTTP/2 protocol (net/server.rs builds them).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most bytes collected before they are written out.
const BATCH_BYTES: usize = 64 * 1024;
/// A flush with at least this much buffered (a full frame) waits one pass of the connection
/// task; smaller ones are written at once.
const DEFER_FLUSH_FROM: usize = 16 * 1024;

/// Write batching for one HTTP/2 connection's stream (see the module doc).
pub struct Coalesce<T> {
    io: T,
    buf: Vec<u8>,
    /// Bytes of `buf` already written to `io`.
    written: usize,
    /// The last flush returned without writing; the next one writes.
    flush_deferred: bool,
    /// A drain waits for `io`: it finishes before anything more is taken.
    draining: bool,
}

impl<T> Coalesce<T> {
    pub fn new(io: T) -> Self {
        Coalesce {
            io,
            buf: Vec::new(),
            written: 0,
            flush_deferred: false,
            draining: false,
        }
    }

    /// Copies what fits of `bufs` into the buffer.
    fn append(&mut self, bufs: &[io::IoSlice<'_>]) -> usize {
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(BATCH_BYTES);
        }
        let mut taken = 0;
        for b in bufs {
            let n = b.len().min(BATCH_BYTES - self.buf.len());
            self.buf.extend_from_slice(&b[..n]);
            taken += n;
            if self.buf.len() == BATCH_BYTES {
                break;
            }
        }
        taken
    }
}

impl<T: AsyncWrite + Unpin> Coalesce<T> {
    /// Writes the whole buffer to `io`, frees it, and flushes `io`: when this returns Ready,
    /// TLS holds none of it either, so a slow client has at most one batch in the gate.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buf.len() {
            let Poll::Ready(n) = Pin::new(&mut self.io).poll_write(cx, &self.buf[self.written..])
            else {
                self.draining = true;
                return Poll::Pending;
            };
            match n? {
                0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                n => self.written += n,
            }
        }
        self.buf = Vec::new();
        self.written = 0;
        if Pin::new(&mut self.io).poll_flush(cx)?.is_pending() {
            self.draining = true;
            return Poll::Pending;
        }
        self.draining = false;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalesce<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesce<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(data)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        if me.draining || me.buf.len() == BATCH_BYTES {
            ready!(me.poll_drain(cx))?;
        }
        Poll::Ready(Ok(me.append(bufs)))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        let buffered = me.buf.len() - me.written;
        if buffered >= DEFER_FLUSH_FROM
            && me.buf.len() < BATCH_BYTES
            && !me.draining
            && !me.flush_deferred
        {
            // h2 flushes after every DATA frame; the frames it has ready on its next pass join
            // this one. Waking the task guarantees that pass, and it ends with a flush.
            me.flush_deferred = true;
            cx.waker().wake_by_ref();
            return Poll::Ready(Ok(()));
        }
        me.flush_deferred = false;
        me.poll_drain(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        ready!(me.poll_drain(cx))?;
        Pin::new(&mut me.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Wake, Waker};

    /// Records each write's size; `blocked` makes writes wait, `flush_blocked` flushes.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<usize>,
        flushes: usize,
        blocked: bool,
        flush_blocked: bool,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            let me = self.get_mut();
            if me.blocked {
                return Poll::Pending;
            }
            me.writes.push(data.len());
            Poll::Ready(Ok(data.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            let me = self.get_mut();
            if me.flush_blocked {
                return Poll::Pending;
            }
            me.flushes += 1;
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    struct CountingWaker(AtomicUsize);
    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn context() -> (Arc<CountingWaker>, Waker) {
        let count = Arc::new(CountingWaker(AtomicUsize::new(0)));
        (count.clone(), Waker::from(count))
    }

    /// One h2 DATA frame as h2 writes it: header and payload in one vectored write.
    fn frame(c: &mut Coalesce<Recorder>, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let (head, payload) = ([0u8; 9], vec![7u8; 16 * 1024]);
        let bufs = [io::IoSlice::new(&head), io::IoSlice::new(&payload)];
        Pin::new(c).poll_write_vectored(cx, &bufs)
    }

    fn flush(c: &mut Coalesce<Recorder>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(c).poll_flush(cx)
    }

    #[test]
    fn small_writes_are_flushed_at_once() {
        let (wakes, waker) = context();
        let mut cx = Context::from_waker(&waker);
        let mut c = Coalesce::new(Recorder::default());
        let n = Pin::new(&mut c).poll_write(&mut cx, b"HEADERS frame");
        assert!(matches!(n, Poll::Ready(Ok(13))));
        assert!(c.io.writes.is_empty());
        assert!(matches!(flush(&mut c, &mut cx), Poll::Ready(Ok(()))));
        assert_eq!(c.io.writes, [13]);
        assert_eq!(c.io.flushes, 1);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0);
        assert_eq!(c.buf.capacity(), 0, "the buffer is freed once written");
    }

    #[test]
    fn frames_ready_on_the_next_pass_go_out_in_one_write() {
        let (wakes, waker) = context();
        let mut cx = Context::from_waker(&waker);
        let mut c = Coalesce::new(Recorder::default());
        assert!(matches!(frame(&mut c, &mut cx), Poll::Ready(Ok(16393))));
        // The first flush of a full frame waits for the task's next pass, and wakes it.
        assert!(matches!(flush(&mut c, &mut cx), Poll::Ready(Ok(()))));
        assert!(c.io.writes.is_empty());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        // That pass: two more frames, then its flush writes all three at once.
        for _ in 0..2 {
            assert!(matches!(frame(&mut c, &mut cx), Poll::Ready(Ok(16393))));
        }
        assert!(matches!(flush(&mut c, &mut cx), Poll::Ready(Ok(()))));
        assert_eq!(c.io.writes, [3 * 16393]);
        assert_eq!(c.io.flushes, 1);
    }

    #[test]
    fn the_buffer_is_written_out_at_64_kib() {
        let (_, waker) = context();
        let mut cx = Context::from_waker(&waker);
        let mut c = Coalesce::new(Recorder::default());
        let mut accepted = 0;
        for _ in 0..5 {
            match frame(&mut c, &mut cx) {
                Poll::Ready(Ok(n)) => accepted += n,
                other => panic!("{other:?}"),
            }
        }
        // 4 frames and part of the 5th filled 64 KiB, written before the rest was taken.
        assert_eq!(c.io.writes, [BATCH_BYTES]);
        assert!(accepted < 5 * 16393, "a write is cut at the batch size");
        // The last frame's flush waits one pass, the next one writes it.
        assert!(matches!(flush(&mut c, &mut cx), Poll::Ready(Ok(()))));
        assert_eq!(c.io.writes.len(), 1);
        assert!(matches!(flush(&mut c, &mut cx), Poll::Ready(Ok(()))));
        let total: usize = c.io.writes.iter().sum();
        assert_eq!(total, accepted);
    }

    #[test]
    fn nothing_more_is_taken_while_the_socket_is_full() {
        let (_, waker) = context();
        let mut cx = Context::from_waker(&waker);
        let mut c = Coalesce::new(Recorder::default());
        assert!(matches!(frame(&mut c, &mut cx), Poll::Ready(Ok(_))));
        assert!(matches!(flush(&mut c, &mut cx), Poll::Ready(Ok(()))));
        // The socket is full: the real flush waits, and so does the next frame.
        c.io.blocked = true;
        assert!(flush(&mut c, &mut cx).is_pending());
        assert!(
            frame(&mut c, &mut cx).is_pending(),
            "nothing piles up behind a full socket"
        );
        c.io.blocked = false;
        assert!(matches!(frame(&mut c, &mut cx), Poll::Ready(Ok(16393))));
        assert_eq!(
            c.io.writes,
            [16393],
            "the first frame went out before the next was taken"
        );
    }

    #[test]
    fn a_flush_that_waits_for_tls_holds_no_buffer() {
        let (_, waker) = context();
        let mut cx = Context::from_waker(&waker);
        let mut c = Coalesce::new(Recorder {
            flush_blocked: true,
            ..Recorder::default()
        });
        assert!(matches!(frame(&mut c, &mut cx), Poll::Ready(Ok(_))));
        assert!(matches!(flush(&mut c, &mut cx), Poll::Ready(Ok(()))));
        assert!(flush(&mut c, &mut cx).is_pending());
        assert_eq!(c.io.writes, [16393]);
        assert_eq!(
            c.buf.capacity(),
            0,
            "written to TLS: the buffer is freed while TLS flushes"
        );
        assert!(
            frame(&mut c, &mut cx).is_pending(),
            "the flush finishes first"
        );
        c.io.flush_blocked = false;
        assert!(matches!(frame(&mut c, &mut cx), Poll::Ready(Ok(16393))));
    }

    #[test]
    fn shutdown_writes_what_is_buffered() {
        let (_, waker) = context();
        let mut cx = Context::from_waker(&waker);
        let mut c = Coalesce::new(Recorder::default());
        assert!(matches!(frame(&mut c, &mut cx), Poll::Ready(Ok(_))));
        assert!(matches!(flush(&mut c, &mut cx), Poll::Ready(Ok(()))));
        assert!(matches!(
            Pin::new(&mut c).poll_shutdown(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(c.io.writes, [16393]);
    }
}
