//! Deadlines on a peer that stops: a body that gets no frame for a while ends with an error,
//! and a connection whose client takes no byte of its answer for a while fails its writes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tower_maas::BoxError;

/// The clock both deadlines keep: it starts when the peer first keeps us waiting, restarts
/// when it has moved since, and is never touched while the peer keeps up.
#[derive(Debug)]
struct Stall {
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    moved: bool,
    idle: Duration,
}

impl Stall {
    fn new(idle: Duration) -> Self {
        Self {
            deadline: None,
            moved: false,
            idle,
        }
    }

    /// Ready once the peer has kept us waiting `idle` without moving; until then `cx` is woken
    /// when that time comes.
    fn poll_passed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let idle = self.idle;
        let deadline = match &mut self.deadline {
            Some(deadline) if self.moved => {
                deadline.as_mut().reset(tokio::time::Instant::now() + idle);
                deadline
            }
            Some(deadline) => deadline,
            None => self.deadline.insert(Box::pin(tokio::time::sleep(idle))),
        };
        self.moved = false;
        deadline.as_mut().poll(cx)
    }
}

pin_project! {
    /// A body that fails with `error()` when no frame comes for `idle`. An upstream's answer
    /// and a client's request are both bounded so: whoever waits on a stalled peer holds its
    /// request, what was buffered of it and the key's token reservation for as long as the
    /// stall lasts.
    ///
    /// A body that is always ready, as most requests are by the time they are read, never
    /// touches the timer.
    pub(crate) struct IdleTimeout<B> {
        #[pin]
        body: B,
        stall: Stall,
        error: fn() -> BoxError,
    }
}

impl<B> IdleTimeout<B> {
    pub(crate) fn new(body: B, idle: Duration, error: fn() -> BoxError) -> Self {
        Self {
            body,
            stall: Stall::new(idle),
            error,
        }
    }
}

impl<B> Body for IdleTimeout<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if let Poll::Ready(frame) = this.body.poll_frame(cx) {
            this.stall.moved = true;
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        ready!(this.stall.poll_passed(cx));
        Poll::Ready(Some(Err((this.error)())))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

pin_project! {
    /// A connection whose writes fail with `TimedOut` once one has waited `idle` without the
    /// peer taking a byte: a client that stops reading its answer would otherwise hold the
    /// connection, the answer's upstream and the key's reservation for ever, since nothing
    /// else is waiting on it. Each write that goes through restarts the clock, as nginx's
    /// `send_timeout` does; reads pass through.
    pub(crate) struct SendDeadline<IO> {
        #[pin]
        io: IO,
        stall: Stall,
    }
}

impl<IO> SendDeadline<IO> {
    pub(crate) fn new(io: IO, idle: Duration) -> Self {
        Self {
            io,
            stall: Stall::new(idle),
        }
    }
}

impl<IO: AsyncWrite> SendDeadline<IO> {
    /// A write that `went` as it did: one that took bytes restarts the clock; a blocked one
    /// also waits on the deadline, which wakes the connection's task to try again, and fails
    /// once passed.
    fn bounded<T>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        went: Poll<io::Result<T>>,
        took_bytes: impl FnOnce(&T) -> bool,
    ) -> Poll<io::Result<T>> {
        let this = self.project();
        if let Poll::Ready(result) = &went {
            if result.as_ref().is_ok_and(took_bytes) {
                this.stall.moved = true;
            }
            return went;
        }
        ready!(this.stall.poll_passed(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client stopped reading its answer",
        )))
    }
}

impl<IO: AsyncRead> AsyncRead for SendDeadline<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().io.poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite> AsyncWrite for SendDeadline<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let went = self.as_mut().project().io.poll_write(cx, buf);
        self.bounded(cx, went, |n| *n > 0)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let went = self.as_mut().project().io.poll_write_vectored(cx, bufs);
        self.bounded(cx, went, |n| *n > 0)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let went = self.as_mut().project().io.poll_flush(cx);
        self.bounded(cx, went, |()| false)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let went = self.as_mut().project().io.poll_shutdown(cx);
        self.bounded(cx, went, |()| false)
    }
}
