//! The answer's body as [`ErrorEnvelope`](crate::ErrorEnvelope) passes it on: an event stream
//! that fails once its head is out ends as MaaS ends one, with an error event and `[DONE]`.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::body::BoxError;
use crate::envelope::backend_failure;
use crate::error::{Dialect, MaasError};
use crate::request_id::RequestId;

pin_project! {
    /// The body of an answer that [`ErrorEnvelope`](crate::ErrorEnvelope) let through: the
    /// inner body, its frames untouched.
    ///
    /// An event stream (a 2xx `text/event-stream` answer, not to `HEAD`) whose body fails
    /// after its head went out, when its status can no longer say so, ends as the live service
    /// ends one: with the error as an event in OpenAI's shape, `data: {"error":{…}}` (504
    /// `APIG.0203` for a timeout, as [`is_timeout`](crate::is_timeout) tells, else 502
    /// `APIG.0201` `Backend unavailable.`), then `data: [DONE]`, and a clean end: a client's SDK
    /// raises the error instead of a broken connection. The envelope sends such a stream
    /// without a `content-length`, which the event would break. An event the client had begun
    /// when the body failed is ended first, cut short as it is: a client reads it before the
    /// error (an OpenAI SDK fails on its JSON), as it would have read it had the stream broken
    /// off. Any other body's failure is passed on as it is.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http::{Request, Response};
    /// use http_body_util::{BodyExt, Full};
    /// use tower::{Layer, ServiceExt, service_fn};
    /// use tower_maas::ErrorEnvelopeLayer;
    /// use tower_maas::envelope::EnvelopeBody;
    /// use tower_maas::MaasBody;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let service = ErrorEnvelopeLayer::new().layer(service_fn(|_: Request<Full<Bytes>>| async {
    ///     Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(b"{}"))))
    /// }));
    /// let answer: Response<MaasBody<EnvelopeBody<Full<Bytes>>>> =
    ///     service.oneshot(Request::new(Full::default())).await.unwrap();
    /// assert_eq!(answer.into_body().collect().await.unwrap().to_bytes(), "{}");
    /// # }
    /// ```
    #[derive(Debug)]
    pub struct EnvelopeBody<B> {
        #[pin]
        inner: B,
        stream: Option<StreamEnd>,
    }
}

/// What an event stream's failure needs: the request id of its error, and whether the client
/// is inside an event.
#[derive(Debug)]
struct StreamEnd {
    request_id: RequestId,
    /// The last four bytes passed on, oldest first in the high byte.
    tail: u32,
    /// The error event went out: the stream is over.
    ended: bool,
}

/// A blank line ends an event; at the start there is none to end.
const LF_LF: u32 = u32::from_be_bytes(*b"\0\0\n\n");
const CRLF_CRLF: u32 = u32::from_be_bytes(*b"\r\n\r\n");

impl StreamEnd {
    fn passed(&mut self, data: &[u8]) {
        for &byte in data.iter().rev().take(4).rev() {
            self.tail = (self.tail << 8) | u32::from(byte);
        }
    }

    /// Whether what went out ends at an event's end.
    fn between_events(&self) -> bool {
        self.tail & 0xffff == LF_LF || self.tail == CRLF_CRLF
    }

    /// The error event and `[DONE]`, after the end of an event the client has begun (a blank
    /// line too many is an empty event, which clients skip).
    fn event(&mut self, error: &MaasError) -> Bytes {
        self.ended = true;
        let body = error.render(Dialect::OpenAi, &self.request_id);
        let mut event = Vec::with_capacity(body.len() + 28);
        if !self.between_events() {
            event.extend_from_slice(b"\n\n");
        }
        event.extend_from_slice(b"data: ");
        event.extend_from_slice(&body);
        event.extend_from_slice(b"\n\ndata: [DONE]\n\n");
        Bytes::from(event)
    }
}

impl<B> EnvelopeBody<B> {
    /// `inner` as it is, its failures too.
    pub(crate) fn plain(inner: B) -> Self {
        Self {
            inner,
            stream: None,
        }
    }

    /// `inner`, an event stream whose head is out: a failure ends it with an error event.
    pub(crate) fn event_stream(inner: B, request_id: RequestId) -> Self {
        Self {
            inner,
            stream: Some(StreamEnd {
                request_id,
                tail: LF_LF,
                ended: false,
            }),
        }
    }
}

impl<B> Body for EnvelopeBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = B::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let Some(stream) = this.stream else {
            return this.inner.poll_frame(cx);
        };
        if stream.ended {
            return Poll::Ready(None);
        }
        Poll::Ready(match ready!(this.inner.poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    stream.passed(data);
                }
                Some(Ok(frame))
            }
            Some(Err(err)) => {
                let error = backend_failure(&*err.into(), MaasError::BackendUnavailable);
                Some(Ok(Frame::data(stream.event(&error))))
            }
            None => None,
        })
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| s.ended) || self.inner.is_end_stream()
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        match &self.stream {
            // An error event may come that the inner body does not count.
            Some(stream) if !stream.ended => {
                let mut hint = SizeHint::new();
                hint.set_lower(self.inner.size_hint().lower());
                hint
            }
            Some(_) => SizeHint::with_exact(0),
            None => self.inner.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end_after(sent: &[&[u8]]) -> Bytes {
        let mut stream = StreamEnd {
            request_id: "0123456789abcdef0123456789abcdef".parse().unwrap(),
            tail: LF_LF,
            ended: false,
        };
        for data in sent {
            stream.passed(data);
        }
        stream.event(&MaasError::BackendTimeout)
    }

    #[test]
    fn an_event_the_client_has_begun_is_ended_first() {
        let timeout = r#"data: {"error":{"code":"APIG.0203","message":"Backend timeout","param":null,"type":"GatewayTimeout"}}"#;
        let clean = format!("{timeout}\n\ndata: [DONE]\n\n");
        let closed = format!("\n\n{clean}");
        for (sent, expected) in [
            (&[][..], &clean),
            (&[&b"data: {}\n\n"[..]][..], &clean),
            (&[&b"data: {}\r\n\r\n"[..]][..], &clean),
            // The blank line split across frames, a byte at a time.
            (&[&b"data: {}\n"[..], b"\n"][..], &clean),
            (&[&b"data: {}\r\n\r"[..], b"\n"][..], &clean),
            (&[&b"data: {}"[..]][..], &closed),
            (&[&b"data: {}\n"[..]][..], &closed),
            (&[&b"data: {}\r\n"[..]][..], &closed),
            (&[&b"data: {\"a\":"[..]][..], &closed),
        ] {
            assert_eq!(end_after(sent), expected.as_str(), "{sent:?}");
        }
    }
}
