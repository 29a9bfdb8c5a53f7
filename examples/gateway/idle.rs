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
    ///
    /// The clock starts when the body first has nothing to give, and restarts when it has
    /// given something since: a body that is always ready, as most requests are by the time
    /// they are read, never touches the timer.
    pub(crate) struct IdleTimeout<B> {
        #[pin]
        body: B,
        deadline: Option<Pin<Box<tokio::time::Sleep>>>,
        gave: bool,
        idle: Duration,
        error: fn() -> BoxError,
    }
}

impl<B> IdleTimeout<B> {
    pub(crate) fn new(body: B, idle: Duration, error: fn() -> BoxError) -> Self {
        Self {
            body,
            deadline: None,
            gave: false,
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
        let this = self.project();
        if let Poll::Ready(frame) = this.body.poll_frame(cx) {
            *this.gave = true;
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        let idle = *this.idle;
        let deadline = match this.deadline {
            Some(deadline) if *this.gave => {
                deadline.as_mut().reset(tokio::time::Instant::now() + idle);
                deadline
            }
            Some(deadline) => deadline,
            None => this.deadline.insert(Box::pin(tokio::time::sleep(idle))),
        };
        *this.gave = false;
        ready!(deadline.as_mut().poll(cx));
        Poll::Ready(Some(Err((this.error)())))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
