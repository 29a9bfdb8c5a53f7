//! A HEAD answer without its body, as a GET's head.
//!
//! axum empties HEAD bodies in the route that answers, but the envelope around the router
//! writes its error bodies after that: an HTTP/1 server drops them anyway, while over HTTP/2
//! they would go out as DATA frames, which a client takes for a protocol error.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::body::Body;
use http::header::CONTENT_LENGTH;
use http::{HeaderValue, Method, Request, Response};
use pin_project_lite::pin_project;
use tower::Service;

/// Answers HEAD requests with the head `inner` gives them (`content-length` included, as a GET
/// would have it) and no body.
#[derive(Clone, Debug)]
pub(crate) struct HeadWithoutBody<S> {
    inner: S,
}

impl<S> HeadWithoutBody<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S, B, R> Service<Request<B>> for HeadWithoutBody<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    R: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    R::Error: Into<axum::BoxError>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = HeadFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        HeadFuture {
            head: request.method() == Method::HEAD,
            inner: self.inner.call(request),
        }
    }
}

pin_project! {
    pub(crate) struct HeadFuture<F> {
        #[pin]
        inner: F,
        head: bool,
    }
}

impl<F, R, E> Future for HeadFuture<F>
where
    F: Future<Output = Result<Response<R>, E>>,
    R: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    R::Error: Into<axum::BoxError>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        if !*this.head {
            return Poll::Ready(Ok(response.map(Body::new)));
        }
        let (mut parts, body) = response.into_parts();
        if let Some(length) = body.size_hint().exact() {
            parts
                .headers
                .entry(CONTENT_LENGTH)
                .or_insert_with(|| HeaderValue::from(length));
        }
        Poll::Ready(Ok(Response::from_parts(parts, Body::empty())))
    }
}
