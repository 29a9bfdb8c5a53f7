//! The service under every benchmarked layer, and how each request is driven.

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::marker::PhantomData;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use http::{Request, Response};

/// Answers at once with an empty `B`, so that only the layers' own work is measured.
pub(crate) struct Bare<B>(PhantomData<fn() -> B>);

impl<B> Bare<B> {
    pub(crate) fn new() -> Self {
        Self(PhantomData)
    }
}

impl<B> Clone for Bare<B> {
    fn clone(&self) -> Self {
        Self::new()
    }
}

impl<B: Default, R> tower::Service<Request<R>> for Bare<B> {
    type Response = Response<B>;
    type Error = Infallible;
    type Future = Ready<Result<Response<B>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<R>) -> Self::Future {
        ready(Ok(Response::new(B::default())))
    }
}

/// Readies, calls and polls once: every service benchmarked completes without waiting.
pub(crate) fn run<S, R>(service: &mut S, req: Request<R>) -> S::Response
where
    S: tower::Service<Request<R>>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    assert!(service.poll_ready(&mut cx).is_ready());
    let mut future = pin!(service.call(req));
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(res) => res.unwrap(),
        Poll::Pending => unreachable!("every service benchmarked answers at once"),
    }
}
