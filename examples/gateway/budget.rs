//! A bound on the request bytes the gateway holds at once, all requests together.
//!
//! `body_limit` bounds one request's body, and `max_connections` the connections; but each
//! HTTP/2 connection carries up to 200 requests at once, and the layers that read a body keep
//! it whole until they have decided. Ten thousand connections sending 12 MiB bodies would ask
//! for terabytes. So every piece of a body is counted against `max_buffered_bytes` as it is
//! read: past it, reading waits, and the client's TCP or HTTP/2 window closes, until requests
//! in flight have their answers. What a request was counted for is given back once its
//! answer's head is out. Until then the gateway does hold the body: the parsed request keeps
//! it, and the proxy holds that until the upstream answers, so a non-streaming answer that
//! takes a minute to generate holds its request's bytes for that minute.
//!
//! Waiting has the client's own bound (`client_timeout_ms`): a body whose next piece could not
//! be counted within it fails as a stalled client's does, and is refused as a body that could
//! not be read (a 400, not a 503: the layers have one answer for a body they could not read).
//! Requests that each hold part of the budget while waiting for more cannot then hold each
//! other up for ever. A piece larger than the whole budget is handed on uncounted: the budget
//! is at least `body_limit`, so the layer reading it refuses it at once as too large (413).
//!
//! Not counted: what hyper holds below the layers, a piece a waiting request has read (one a
//! request), HTTP/2's flow-control windows (up to 1 MiB a connection) and HTTP/1's read
//! buffer.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::PollSemaphore;
use tower_maas::BoxError;

/// The bytes every request's body may hold together, shared by all connections.
#[derive(Clone, Debug)]
pub(crate) struct Budget {
    room: Arc<Semaphore>,
    /// All of it: a piece larger is never counted (see the module's docs).
    total: usize,
}

impl Budget {
    /// Room for `bytes` (at most `Semaphore::MAX_PERMITS`).
    pub(crate) fn new(bytes: usize) -> Self {
        let total = bytes.min(Semaphore::MAX_PERMITS);
        Self {
            room: Arc::new(Semaphore::new(total)),
            total,
        }
    }
}

/// What one request holds of the budget, given back when it is dropped or released.
#[derive(Debug, Default)]
pub(crate) struct Held(Mutex<Option<OwnedSemaphorePermit>>);

impl Held {
    fn add(&self, permit: OwnedSemaphorePermit) {
        let mut held = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match held.as_mut() {
            Some(held) => held.merge(permit),
            None => *held = Some(permit),
        }
    }

    /// Gives back what the request holds: its answer's head is out.
    pub(crate) fn release(&self) {
        drop(self.0.lock().unwrap_or_else(PoisonError::into_inner).take());
    }
}

pin_project! {
    /// A request's body whose every piece is counted against the budget before it is handed
    /// on; a piece that finds no room waits for it, at most `patience`.
    pub(crate) struct Budgeted<B> {
        #[pin]
        body: B,
        budget: PollSemaphore,
        total: usize,
        held: Arc<Held>,
        // A piece read, waiting for room: at most one a request.
        waiting: Option<Frame<Bytes>>,
        deadline: Option<Pin<Box<tokio::time::Sleep>>>,
        patience: Duration,
    }
}

impl<B> Budgeted<B> {
    pub(crate) fn new(body: B, budget: &Budget, held: Arc<Held>, patience: Duration) -> Self {
        Self {
            body,
            budget: PollSemaphore::new(Arc::clone(&budget.room)),
            total: budget.total,
            held,
            waiting: None,
            deadline: None,
            patience,
        }
    }
}

impl<B> Body for Budgeted<B>
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
        if this.waiting.is_none() {
            match ready!(this.body.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => *this.waiting = Some(frame),
                Some(Err(err)) => return Poll::Ready(Some(Err(err.into()))),
                None => return Poll::Ready(None),
            }
        }
        let size = this
            .waiting
            .as_ref()
            .and_then(Frame::data_ref)
            .map_or(0, Buf::remaining);
        // A piece larger than the whole budget would wait for ever, first in the semaphore's
        // line, holding up everyone behind it: it goes on uncounted, to be refused as too
        // large by the layer that reads it.
        let counted = u32::try_from(size).ok().filter(|_| size <= *this.total);
        if let Some(size) = counted.filter(|size| *size > 0) {
            match this.budget.poll_acquire_many(cx, size) {
                Poll::Ready(Some(permit)) => this.held.add(permit),
                // The budget is never closed.
                Poll::Ready(None) => return Poll::Ready(Some(Err(full()))),
                Poll::Pending => {
                    let patience = *this.patience;
                    let deadline = this
                        .deadline
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(patience)));
                    if deadline.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    // Out of the semaphore's line, with what it took of the room meanwhile.
                    *this.budget = PollSemaphore::new(this.budget.clone_inner());
                    *this.waiting = None;
                    *this.deadline = None;
                    return Poll::Ready(Some(Err(full())));
                }
            }
        }
        *this.deadline = None;
        Poll::Ready(this.waiting.take().map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.waiting.is_none() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let waiting = self
            .waiting
            .as_ref()
            .and_then(Frame::data_ref)
            .map_or(0, |data| data.remaining() as u64);
        let inner = self.body.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower().saturating_add(waiting));
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(waiting));
        }
        hint
    }
}

fn full() -> BoxError {
    Box::new(io::Error::new(
        io::ErrorKind::TimedOut,
        "the gateway's room for request bodies stayed full",
    ))
}
