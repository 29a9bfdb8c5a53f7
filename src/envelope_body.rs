//! The answer's body as [`ErrorEnvelope`](crate::ErrorEnvelope) passes it on: an event stream
//! that fails once its head is out ends as MaaS ends one, with an error event and `[DONE]`.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::body::BoxError;
use crate::envelope::backend_failure;
use crate::error::{Dialect, MaasError};
use crate::request_id::RequestId;

pin_project! {
    /// The body of an answer that [`ErrorEnvelope`](crate::ErrorEnvelope) let through: the
    /// inner body, its frames untouched but for an event stream's, which go out whole events
    /// at a time.
    ///
    /// An event stream (a 2xx `text/event-stream` answer, not to `HEAD`) whose body fails
    /// after its head went out, when its status can no longer say so, ends as the live service
    /// ends one: with the error as an event in OpenAI's shape, `data: {"error":{…}}` (504
    /// `APIG.0203` for a timeout, as [`is_timeout`](crate::is_timeout) tells, else 502
    /// `APIG.0201` `Backend unavailable.`), then `data: [DONE]`, and a clean end: a client's SDK
    /// raises the error instead of a broken connection. The envelope sends such a stream
    /// without a `content-length`, which the event would break. So that a failure leaves the
    /// client between events, an event the body has begun is held back until its blank line
    /// (a frame that ends between events, as a model server's do, goes out as it is, without
    /// a copy, when nothing was held before it); a failure drops it. An event longer than 64 KiB goes out as it comes, and a
    /// failure inside it ends it first, cut short. Any other body's failure is passed on as
    /// it is.
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

/// An event stream's state: the event the inner body has begun and not finished, held back
/// so that a failure before its end leaves the client between events, and the request id of
/// the error.
#[derive(Debug)]
struct StreamEnd {
    request_id: RequestId,
    /// The start of an event not finished yet.
    partial: BytesMut,
    /// An event longer than [`HOLD_LIMIT`] was passed on unfinished: a failure ends it first.
    inside: bool,
    /// The last two bytes passed on unfinished, for a blank line that `inside` ends across
    /// two frames.
    tail: [u8; 2],
    /// Trailers that came while an event's start was held: given after it.
    trailers: Option<HeaderMap>,
    /// The stream is over: its error event, its end, or its trailers went out.
    ended: bool,
}

/// The most of one event held back: a longer one is passed on as it comes, as it would be
/// without the envelope, rather than held without bound.
const HOLD_LIMIT: usize = 64 * 1024;

/// The index after the last blank line of `bytes` (the end of its last whole event) that ends
/// at or after `from`: one that ends before it was looked for already. LF and CRLF line ends;
/// a stream of bare CRs is passed on as it comes, past the limit.
fn event_end(bytes: &[u8], from: usize) -> Option<usize> {
    (from..bytes.len()).rev().find_map(|i| {
        let before = bytes.get(..=i)?;
        (before.ends_with(b"\n\n") || before.ends_with(b"\n\r\n")).then_some(i + 1)
    })
}

impl StreamEnd {
    /// What of `data` goes out now: up to the end of its last whole event, the rest held.
    fn pass(&mut self, data: Bytes) -> Option<Bytes> {
        let out = if self.partial.is_empty() {
            match event_end(&data, 0).or_else(|| self.ended_across(&data)) {
                Some(end) => {
                    self.inside = false;
                    self.partial.extend_from_slice(&data[end..]);
                    if self.partial.len() > HOLD_LIMIT {
                        // What follows is past the limit already: it all goes, uncopied.
                        self.partial.clear();
                        self.inside = true;
                        data
                    } else {
                        data.slice(..end)
                    }
                }
                None if self.inside => data,
                None => {
                    self.partial.extend_from_slice(&data);
                    self.spill()?
                }
            }
        } else {
            let from = self.partial.len();
            self.partial.extend_from_slice(&data);
            match event_end(&self.partial, from) {
                Some(end) if self.partial.len() - end <= HOLD_LIMIT => {
                    self.partial.split_to(end).freeze()
                }
                _ => self.spill()?,
            }
        };
        if self.inside {
            for &byte in out.iter().rev().take(2).rev() {
                self.tail = [self.tail[1], byte];
            }
        }
        Some(out)
    }

    /// Where a blank line begun by the unfinished event passed on ends in `data`.
    fn ended_across(&self, data: &[u8]) -> Option<usize> {
        if !self.inside {
            return None;
        }
        let mut joined = [0; 4];
        joined[..2].copy_from_slice(&self.tail);
        let head = data.get(..2).unwrap_or(data);
        joined[2..2 + head.len()].copy_from_slice(head);
        event_end(&joined[..2 + head.len()], 2).map(|end| end - 2)
    }

    /// All that is held, when it is past the limit: an event that long goes out as it comes.
    fn spill(&mut self) -> Option<Bytes> {
        (self.partial.len() > HOLD_LIMIT).then(|| {
            self.inside = true;
            self.partial.split().freeze()
        })
    }

    /// The error event and `[DONE]`; an event held back is dropped, one passed on unfinished
    /// is ended first (a blank line too many is an empty event, which clients skip).
    fn event(&mut self, error: &MaasError) -> Bytes {
        self.ended = true;
        self.partial = BytesMut::new();
        let body = error.render(Dialect::OpenAi, &self.request_id);
        let mut event = Vec::with_capacity(body.len() + 28);
        if self.inside {
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
                partial: BytesMut::new(),
                inside: false,
                tail: [0; 2],
                trailers: None,
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
        let mut this = self.project();
        let Some(stream) = this.stream else {
            return this.inner.poll_frame(cx);
        };
        loop {
            if let Some(trailers) = stream.trailers.take() {
                stream.ended = true;
                return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
            }
            if stream.ended {
                return Poll::Ready(None);
            }
            let frame = match ready!(this.inner.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => frame,
                Some(Err(err)) => {
                    let error = backend_failure(&*err.into(), MaasError::BackendUnavailable);
                    return Poll::Ready(Some(Ok(Frame::data(stream.event(&error)))));
                }
                // An event left unfinished by a body that ended goes out as it is.
                None if stream.partial.is_empty() => {
                    stream.ended = true;
                    return Poll::Ready(None);
                }
                None => {
                    stream.ended = true;
                    return Poll::Ready(Some(Ok(Frame::data(stream.partial.split().freeze()))));
                }
            };
            match frame.into_data() {
                Ok(data) => {
                    if let Some(out) = stream.pass(data) {
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                }
                // Trailers are a body's last frame.
                Err(frame) if stream.partial.is_empty() => {
                    stream.ended = frame.is_trailers();
                    return Poll::Ready(Some(Ok(frame)));
                }
                Err(frame) => {
                    stream.trailers = frame.into_trailers().ok();
                    return Poll::Ready(Some(Ok(Frame::data(stream.partial.split().freeze()))));
                }
            }
        }
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        match &self.stream {
            Some(stream) => {
                stream.ended
                    || (stream.partial.is_empty()
                        && stream.trailers.is_none()
                        && self.inner.is_end_stream())
            }
            None => self.inner.is_end_stream(),
        }
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        match &self.stream {
            // A failure can end it with far fewer bytes than the inner body promised, or add
            // an event the inner body does not count.
            Some(stream) if !stream.ended => SizeHint::new(),
            Some(_) => SizeHint::with_exact(0),
            None => self.inner.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> StreamEnd {
        StreamEnd {
            request_id: "0123456789abcdef0123456789abcdef".parse().unwrap(),
            partial: BytesMut::new(),
            inside: false,
            tail: [0; 2],
            trailers: None,
            ended: false,
        }
    }

    /// What goes out for each of `frames`, in order.
    fn passed(stream: &mut StreamEnd, frames: &[&'static [u8]]) -> Vec<Option<Bytes>> {
        frames
            .iter()
            .map(|frame| stream.pass(Bytes::from_static(frame)))
            .collect()
    }

    const TIMEOUT: &str = r#"data: {"error":{"code":"APIG.0203","message":"Backend timeout","param":null,"type":"GatewayTimeout"}}

data: [DONE]

"#;

    #[test]
    fn whole_events_go_out_and_an_unfinished_one_waits_for_its_end() {
        let mut s = stream();
        let out = passed(
            &mut s,
            &[
                b"data: 1\n\n",
                b"data: 2\n\ndata: ",
                b"3",
                b"\n",
                b"\n",
                b"data: 4\r\n\r\n",
            ],
        );
        let expect = |b: &'static [u8]| Some(Bytes::from_static(b));
        assert_eq!(
            out,
            [
                expect(b"data: 1\n\n"),
                expect(b"data: 2\n\n"),
                None,
                None,
                expect(b"data: 3\n\n"),
                expect(b"data: 4\r\n\r\n"),
            ]
        );
    }

    #[test]
    fn a_failure_drops_the_event_held_and_leaves_the_client_between_events() {
        let mut s = stream();
        assert_eq!(
            passed(&mut s, &[b"data: 1\n\ndata: {\"half"]),
            [Some(Bytes::from_static(b"data: 1\n\n"))]
        );
        assert_eq!(s.event(&MaasError::BackendTimeout), TIMEOUT);
    }

    #[test]
    fn after_a_long_event_the_next_is_held_again_even_when_its_blank_line_straddles_frames() {
        let long: &'static [u8] = Box::leak(vec![b'x'; HOLD_LIMIT + 1].into_boxed_slice());
        for (end, rest) in [
            (&b"\n"[..], &b"\ndata: {\"a\""[..]),
            (b"\n", b"\r\ndata: {\"a\""),
            (b"\n\r", b"\ndata: {\"a\""),
        ] {
            let mut s = stream();
            let out = passed(&mut s, &[b"data: ", long, end, rest]);
            // The long event's end goes out as it comes; the next one's start is held.
            assert_eq!(out[3].as_deref(), Some(&rest[..rest.len() - 10]), "{end:?}");
            assert_eq!(s.event(&MaasError::BackendTimeout), TIMEOUT, "{end:?}");
        }
    }

    #[test]
    fn what_follows_a_whole_event_is_held_only_up_to_the_limit() {
        let mut big = b"data: 1\n\n".to_vec();
        big.resize(10 + HOLD_LIMIT + 1, b'x');
        let big: &'static [u8] = Box::leak(big.into_boxed_slice());
        let mut s = stream();
        // All of it goes, uncopied, and the event it begins counts as passed on unfinished.
        assert_eq!(passed(&mut s, &[big]), [Some(Bytes::from_static(big))]);
        assert_eq!(
            s.event(&MaasError::BackendTimeout),
            format!("\n\n{TIMEOUT}")
        );
        let mut s = stream();
        passed(&mut s, &[b"data: 0"]);
        let out = passed(&mut s, &[big]);
        assert_eq!(out[0].as_ref().map(Bytes::len), Some(7 + big.len()));
    }

    #[test]
    fn an_event_past_the_limit_goes_out_unfinished_and_a_failure_ends_it() {
        let mut s = stream();
        let long: &'static [u8] = Box::leak(vec![b'x'; HOLD_LIMIT + 1].into_boxed_slice());
        assert_eq!(passed(&mut s, &[b"data: "]), [None]);
        let out = passed(&mut s, &[long, b"more"]);
        assert_eq!(out[0].as_ref().map(Bytes::len), Some(HOLD_LIMIT + 7));
        assert_eq!(out[1], Some(Bytes::from_static(b"more")));
        assert_eq!(
            s.event(&MaasError::BackendTimeout),
            format!("\n\n{TIMEOUT}")
        );
    }

    /// Every frame `body` gives, data as text, trailers as `trailers`, until its end.
    fn frames(frames: Vec<Frame<Bytes>>) -> Vec<String> {
        type Frames = std::vec::IntoIter<Result<Frame<Bytes>, BoxError>>;
        let inner = http_body_util::StreamBody::new(futures_util::stream::iter(
            frames.into_iter().map(Ok).collect::<Vec<_>>().into_iter() as Frames,
        ));
        let mut body = std::pin::pin!(EnvelopeBody::event_stream(inner, stream().request_id));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut out = Vec::new();
        while let Poll::Ready(Some(frame)) = body.as_mut().poll_frame(&mut cx) {
            out.push(match frame.unwrap().into_data() {
                Ok(data) => String::from_utf8(data.to_vec()).unwrap(),
                Err(_) => "trailers".to_owned(),
            });
        }
        assert!(body.is_end_stream());
        out
    }

    #[test]
    fn what_was_held_goes_out_before_trailers_and_at_the_end() {
        let data = |text: &'static str| Frame::data(Bytes::from_static(text.as_bytes()));
        assert_eq!(
            frames(vec![
                data("data: 1\n\ndata: 2"),
                Frame::trailers(HeaderMap::new())
            ]),
            ["data: 1\n\n", "data: 2", "trailers"]
        );
        assert_eq!(
            frames(vec![data("data: 1\n\ndata: 2")]),
            ["data: 1\n\n", "data: 2"]
        );
        assert_eq!(
            frames(vec![data("data: 1\n\n"), Frame::trailers(HeaderMap::new())]),
            ["data: 1\n\n", "trailers"]
        );
    }

    #[test]
    fn event_ends_are_found_after_what_was_looked_at() {
        assert_eq!(event_end(b"a\n\nb\n\nc", 0), Some(6));
        assert_eq!(event_end(b"a\r\n\r\nb", 0), Some(5));
        assert_eq!(event_end(b"a\n\r\n", 0), Some(4));
        assert_eq!(event_end(b"a\nb\n", 0), None);
        assert_eq!(event_end(b"", 0), None);
        // The blank line's first half looked at before, its second new.
        assert_eq!(event_end(b"data: 3\n\n", 8), Some(9));
    }
}
