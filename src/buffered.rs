//! The future shared by layers that read the whole body before deciding: buffer it (bounded),
//! let the layer decide, then call the inner service with the same bytes.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::Full;
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::body::{
    BoxError, BufferError, LimitedCollect, MaasBody, finish_buffering, set_buffered_length,
    start_buffering,
};
use crate::error::{MaasError, refuse};

/// A layer's refusal of a buffered request, with the status it answers with.
pub(crate) type Refusal = (MaasError, StatusCode);

/// What a layer does with a buffered body.
pub(crate) trait Decide {
    /// Looks at the body (or why it could not be read) and returns the bytes to hand on, or a
    /// refusal. May add extensions to `parts`.
    fn decide(self, parts: &mut Parts, body: Result<Bytes, BufferError>) -> Result<Bytes, Refusal>;

    /// The layer's name, for refusal events.
    const LAYER: &'static str;
}

pin_project! {
    /// Refused at once, reading the body, or waiting for the inner service.
    #[project = StepProj]
    pub(crate) enum Step<S, B, D>
    where
        S: Service<Request<MaasBody<B>>>,
        B: Body,
        B::Error: Into<BoxError>,
    {
        Refused { response: Option<Response<Full<Bytes>>> },
        Reading { #[pin] collect: LimitedCollect<B>, pending: Option<(Parts, S, D)> },
        Called { #[pin] future: S::Future },
    }
}

/// Takes the readied `service` for a future that calls it later, leaving a fresh clone behind:
/// calling an un-readied clone instead breaks `Buffer` and `ConcurrencyLimit`, whose readiness
/// belongs to the instance `poll_ready` was called on.
pub(crate) fn take_readied<S: Clone>(service: &mut S) -> S {
    let clone = service.clone();
    std::mem::replace(service, clone)
}

impl<S, B, D> Step<S, B, D>
where
    S: Service<Request<MaasBody<B>>>,
    B: Body,
    B::Error: Into<BoxError>,
{
    /// Calls the inner service with the body untouched.
    pub(crate) fn call(service: &mut S, parts: Parts, body: B) -> Self {
        Self::Called {
            future: service.call(Request::from_parts(parts, MaasBody::new(body))),
        }
    }

    /// Answers without calling the inner service.
    pub(crate) fn refused(response: Response<Full<Bytes>>) -> Self {
        Self::Refused {
            response: Some(response),
        }
    }

    /// Starts reading the body, bounded by `limit`; 413 APIG.0201 when it is declared larger.
    /// The readied `service` goes with the read and a fresh clone stays behind.
    pub(crate) fn read(parts: Parts, body: B, limit: usize, service: &mut S, decide: D) -> Self
    where
        S: Clone,
        D: Decide,
    {
        match start_buffering(body, limit) {
            Ok(collect) => Self::Reading {
                collect,
                pending: Some((parts, take_readied(service), decide)),
            },
            Err(_) => Self::refused(refuse(
                D::LAYER,
                MaasError::EntityTooLarge,
                StatusCode::PAYLOAD_TOO_LARGE,
                &parts.extensions,
            )),
        }
    }
}

impl<S, B, D, ResBody> Step<S, B, D>
where
    S: Service<Request<MaasBody<B>>, Response = Response<ResBody>>,
    B: Body,
    B::Error: Into<BoxError>,
    D: Decide,
{
    pub(crate) fn poll_step(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Response<MaasBody<ResBody>>, S::Error>> {
        loop {
            let next = match self.as_mut().project() {
                StepProj::Called { future } => {
                    return future.poll(cx).map_ok(|res| res.map(MaasBody::new));
                }
                StepProj::Refused { response } => {
                    let response = response.take().expect("polled after completion");
                    return Poll::Ready(Ok(response.map(MaasBody::from_full)));
                }
                StepProj::Reading { collect, pending } => {
                    let body = finish_buffering(ready!(collect.poll(cx)));
                    let (mut parts, mut service, decide) =
                        pending.take().expect("polled after completion");
                    match decide.decide(&mut parts, body) {
                        Err((error, status)) => {
                            Self::refused(refuse(D::LAYER, error, status, &parts.extensions))
                        }
                        Ok(bytes) => {
                            set_buffered_length(&mut parts.headers, bytes.len());
                            let req = Request::from_parts(parts, MaasBody::full(bytes));
                            Self::Called {
                                future: service.call(req),
                            }
                        }
                    }
                }
            };
            self.set(next);
        }
    }
}
