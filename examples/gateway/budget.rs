//! A bound on the request bodies the gateway holds at once, across all its connections.
//!
//! `body_limit` bounds one request, but not how many are read at once: an HTTP/2 client may
//! open 200 streams on each of its connections, each with a body the layers buffer whole.
//! Before its body is read, a request takes what it may hold from the budget: its declared
//! length (nothing when that is over `body_limit`, as such a body is refused unread, or when
//! there is no body), or `body_limit` when the length is unknown (chunked). It gives it back
//! with its answer's head: by then the layers have read its body and passed it on (to the
//! upstream, or into the mock's answer), and a long stream holds nothing. A request that does
//! not fit waits until enough is given back, without an error: the spec has no code for a
//! gateway out of memory. Taking all at once, before reading, is what keeps two half-read
//! bodies from waiting on each other for ever, and every holder gives back within bounded time
//! (its client's deadline for the body, the upstream's for the head).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// The bytes of request bodies the gateway may hold at once.
#[derive(Debug)]
pub(crate) struct BodyBudget {
    limit: usize,
    taken: AtomicUsize,
    /// Requests waiting for room: a give-back wakes them only when there are any.
    waiting: AtomicUsize,
    given_back: Notify,
}

impl BodyBudget {
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            taken: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            given_back: Notify::new(),
        })
    }

    /// What a request with `body` may hold, its bodies bounded by `body_limit`.
    pub(crate) fn need(body: &impl http_body::Body, body_limit: usize) -> usize {
        if body.is_end_stream() {
            return 0;
        }
        match body.size_hint().exact() {
            Some(length) => usize::try_from(length)
                .ok()
                .filter(|&length| length <= body_limit)
                .unwrap_or(0),
            None => body_limit,
        }
    }

    /// `bytes` taken now, or `None` when they do not fit.
    pub(crate) fn try_take(self: &Arc<Self>, bytes: usize) -> Option<Held> {
        if bytes == 0 {
            return Some(Held {
                budget: None,
                bytes,
            });
        }
        // Compared and swapped, not added and taken back: a waiter must never see the budget
        // full for a moment when it is not.
        let mut taken = self.taken.load(Ordering::SeqCst);
        loop {
            let after = taken.checked_add(bytes).filter(|&t| t <= self.limit)?;
            match self
                .taken
                .compare_exchange_weak(taken, after, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => {
                    return Some(Held {
                        budget: Some(Arc::clone(self)),
                        bytes,
                    });
                }
                Err(now) => taken = now,
            }
        }
    }

    /// `bytes` taken, once they fit (at most the budget's limit, or this never ends).
    pub(crate) async fn take(self: Arc<Self>, bytes: usize) -> Held {
        loop {
            let given_back = self.given_back.notified();
            let mut given_back = std::pin::pin!(given_back);
            // Listening before looking: a give-back between the two is not missed.
            given_back.as_mut().enable();
            self.waiting.fetch_add(1, Ordering::SeqCst);
            let held = self.try_take(bytes);
            if held.is_none() {
                given_back.await;
            }
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            if let Some(held) = held {
                return held;
            }
        }
    }

    /// Bytes taken now.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn taken(&self) -> usize {
        self.taken.load(Ordering::SeqCst)
    }
}

/// What a request holds of the budget, given back when dropped.
#[derive(Debug)]
pub(crate) struct Held {
    budget: Option<Arc<BodyBudget>>,
    bytes: usize,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget {
            budget.taken.fetch_sub(self.bytes, Ordering::SeqCst);
            if budget.waiting.load(Ordering::SeqCst) > 0 {
                budget.given_back.notify_waiters();
            }
        }
    }
}
