//! A body that fails when it stops: no frame for a while ends it with an error.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower_maas::BoxError;

pin_project! {
    /// A body that fails with `error()` when no frame comes for `idle`. An upstream's answer
    /// and a client's request are both bounded so: whoever waits on a stalled peer holds its
    /// request, what was buffered of it and the key's token reservation for as long as the
    /// stall lasts.
    pub(crate) struct IdleTimeout<B> {
        #[pin]
        body: B,
        #[pin]
        deadline: tokio::time::Sleep,
        idle: Duration,
        error: fn() -> BoxError,
    }
}

impl<B> IdleTimeout<B> {
    pub(crate) fn new(body: B, idle: Duration, error: fn() -> BoxError) -> Self {
        Self {
            body,
            deadline: tokio::time::sleep(idle),
            idle,
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
        let mut this = self.project();
        if let Poll::Ready(frame) = this.body.poll_frame(cx) {
            let next = tokio::time::Instant::now() + *this.idle;
            this.deadline.as_mut().reset(next);
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        ready!(this.deadline.poll(cx));
        Poll::Ready(Some(Err((this.error)())))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
