//! The crate-wide body type and bounded buffering.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Full, LengthLimitError, Limited};
use pin_project_lite::pin_project;

/// The error type of boxed, type-erased errors, as in tower.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pin_project! {
    /// The body of requests and responses that pass through this crate's layers: either the
    /// inner body untouched, or bytes the layer produced (a refusal, a buffered request).
    ///
    /// No boxing: the inner body's type stays in the type, and frames of the inner body pass
    /// through without copies.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http_body::Body;
    /// use http_body_util::Empty;
    /// use tower_maas::MaasBody;
    ///
    /// let body = MaasBody::<Empty<Bytes>>::full(Bytes::from_static(b"{}"));
    /// assert_eq!(body.size_hint().exact(), Some(2));
    /// ```
    #[derive(Debug)]
    pub struct MaasBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Full { #[pin] body: Full<Bytes> },
    }
}

impl<B> MaasBody<B> {
    /// Wraps an inner body, passed through unchanged.
    pub fn new(body: B) -> Self {
        Self {
            kind: Kind::Inner { body },
        }
    }

    /// A body of the given bytes.
    pub fn full(bytes: Bytes) -> Self {
        Self {
            kind: Kind::Full {
                body: Full::new(bytes),
            },
        }
    }

    pub(crate) fn from_full(body: Full<Bytes>) -> Self {
        Self {
            kind: Kind::Full { body },
        }
    }
}

impl<B> Body for MaasBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Full { body } => body.poll_frame(cx).map_err(|never| match never {}),
        }
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Full { body } => body.is_end_stream(),
        }
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Full { body } => body.size_hint(),
        }
    }
}

/// Whether the `Content-Type` starts with `prefix` (ASCII case ignored, nothing allocated):
/// `application/grpc` with its subtypes (`application/grpc+proto`) and parameters. No header
/// is no match. For one media type exactly, [`media_type_is`].
pub(crate) fn content_type_is(headers: &http::HeaderMap, prefix: &[u8]) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.as_bytes().get(..prefix.len()))
        .is_some_and(|t| t.eq_ignore_ascii_case(prefix))
}

/// Whether the `content-type` is `media_type` itself (ASCII case aside), with or without
/// parameters: `application/json; charset=utf-8` is JSON, `application/jsonl` is not.
pub(crate) fn media_type_is(headers: &http::HeaderMap, media_type: &[u8]) -> bool {
    headers.get(http::header::CONTENT_TYPE).is_some_and(|v| {
        // After the type, only parameters may follow. (Two comparisons: this is on every
        // answer's way.)
        let v = v.as_bytes().trim_ascii_start();
        v.get(..media_type.len())
            .is_some_and(|t| t.eq_ignore_ascii_case(media_type))
            && matches!(v.get(media_type.len()), None | Some(b';' | b' ' | b'\t'))
    })
}

/// Whether a body is sent encoded (`content-encoding` other than `identity`): its bytes are
/// then not the text they stand for.
#[cfg(feature = "risk")]
pub(crate) fn is_encoded(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(http::header::CONTENT_ENCODING)
        .iter()
        .any(|v| !v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"identity"))
}

/// A body that announces `.0` bytes and gives none: only its size hint is read.
#[cfg(test)]
pub(crate) struct Announcing(pub(crate) u64);

#[cfg(test)]
impl Body for Announcing {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(None)
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0)
    }
}

/// The default bound on a buffered request body: 12 MiB, APIG's limit.
pub const DEFAULT_BODY_LIMIT: usize = 12 * 1024 * 1024;

#[cfg_attr(not(any(feature = "auth", feature = "validate")), allow(dead_code))]
/// Why a body could not be buffered.
#[derive(Debug)]
pub(crate) enum BufferError {
    /// Over the limit: APIG.0201 413.
    TooLarge,
    /// The body failed while being read (the client went away, a protocol error). Never taken
    /// for an empty body.
    Read,
}

pin_project! {
    /// A body bounded by `limit`, being collected into one `Bytes`. A body of one data frame,
    /// which is what hyper gives for most requests, is that frame, neither copied nor queued;
    /// more frames are copied into one buffer as they come.
    pub(crate) struct LimitedCollect<B> {
        #[pin]
        body: Limited<B>,
        gathered: Gather,
    }
}

/// The most a gatherer sets aside on a body's word: a peer that announces megabytes and sends
/// two bytes gets this much, not what it announced; a body past it grows as its bytes come.
#[cfg_attr(not(any(feature = "auth", feature = "validate")), allow(dead_code))]
pub(crate) const PREALLOCATED: usize = 1 << 20;

/// Data frames gathered into one `Bytes`. One frame, which is what hyper gives for most
/// requests and a backend for most JSON answers, is kept as it is, neither copied nor queued;
/// more frames are copied into one buffer as they come.
#[cfg_attr(not(any(feature = "auth", feature = "validate")), allow(dead_code))]
#[derive(Debug, Default)]
pub(crate) struct Gather {
    first: Option<Bytes>,
    more: Option<BytesMut>,
    /// The length the body announced (its size hint's lower bound, bounded by the caller): the
    /// buffer for more frames is made that large at once, not grown copy by copy.
    expected: usize,
}

#[cfg_attr(not(any(feature = "auth", feature = "validate")), allow(dead_code))]
impl Gather {
    /// A gatherer for `body`, sized by the least it announced, at most `limit` bytes and at
    /// most [`PREALLOCATED`] before the bytes are there.
    pub(crate) fn for_body(body: &impl Body, limit: usize) -> Self {
        let announced = body.size_hint().lower();
        Self {
            // At most `limit` and `PREALLOCATED`, so it fits a usize.
            expected: announced.min(limit.min(PREALLOCATED) as u64) as usize,
            ..Self::default()
        }
    }

    /// Adds the next frame's bytes.
    #[inline]
    pub(crate) fn push(&mut self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        match (self.more.as_mut(), self.first.take()) {
            (Some(more), _) => more.extend_from_slice(&chunk),
            (None, None) => self.first = Some(chunk),
            (None, Some(first)) => {
                let mut more =
                    BytesMut::with_capacity(self.expected.max(first.len() + chunk.len()));
                more.extend_from_slice(&first);
                more.extend_from_slice(&chunk);
                self.more = Some(more);
            }
        }
    }

    /// The bytes gathered so far.
    #[cfg_attr(not(any(feature = "risk", feature = "limit")), allow(dead_code))]
    pub(crate) fn len(&self) -> usize {
        match (&self.more, &self.first) {
            (Some(more), _) => more.len(),
            (None, first) => first.as_ref().map_or(0, Bytes::len),
        }
    }

    /// Where the buffer for more frames is and how large it is made, once there is one.
    #[cfg(test)]
    pub(crate) fn buffer(&self) -> Option<(*const u8, usize)> {
        self.more
            .as_ref()
            .map(|more| (more.as_ptr(), more.capacity()))
    }

    /// Everything gathered, as one `Bytes`; the gatherer is left empty.
    #[inline]
    pub(crate) fn take(&mut self) -> Bytes {
        match (self.first.take(), self.more.take()) {
            (_, Some(more)) => more.freeze(),
            (first, None) => first.unwrap_or_default(),
        }
    }
}

impl<B> std::future::Future for LimitedCollect<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Output = Result<Bytes, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let frame = match std::task::ready!(this.body.as_mut().poll_frame(cx)) {
                Some(frame) => frame?,
                None => return Poll::Ready(Ok(this.gathered.take())),
            };
            // Trailers carry nothing the layers read.
            if let Ok(mut data) = frame.into_data() {
                this.gathered.push(data.copy_to_bytes(data.remaining()));
            }
        }
    }
}

/// Starts buffering `body` up to `limit` bytes. Chunked and HTTP/2 bodies are bounded as they
/// arrive; a body whose declared length is already over the limit is refused before any read.
#[cfg_attr(not(any(feature = "auth", feature = "validate")), allow(dead_code))]
pub(crate) fn start_buffering<B>(body: B, limit: usize) -> Result<LimitedCollect<B>, BufferError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    if body.size_hint().lower() > limit as u64 {
        return Err(BufferError::TooLarge);
    }
    Ok(LimitedCollect {
        gathered: Gather::for_body(&body, limit),
        body: Limited::new(body, limit),
    })
}

/// Turns the outcome of a [`LimitedCollect`] into bytes or a [`BufferError`].
#[cfg_attr(not(any(feature = "auth", feature = "validate")), allow(dead_code))]
pub(crate) fn finish_buffering(result: Result<Bytes, BoxError>) -> Result<Bytes, BufferError> {
    match result {
        Ok(bytes) => Ok(bytes),
        Err(err) if err.is::<LengthLimitError>() => Err(BufferError::TooLarge),
        Err(_) => Err(BufferError::Read),
    }
}

/// After a body was replaced by `len` buffered bytes, the headers must describe those bytes.
#[cfg_attr(not(any(feature = "auth", feature = "validate")), allow(dead_code))]
pub(crate) fn set_buffered_length(headers: &mut HeaderMap, len: usize) {
    if headers.contains_key(TRANSFER_ENCODING) {
        headers.remove(TRANSFER_ENCODING);
    }
    // Most clients declared the length already: keep their header rather than build another.
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared != Some(len) {
        headers.insert(CONTENT_LENGTH, len.into());
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::future::Future;
    use std::task::Waker;

    use super::*;

    #[test]
    fn a_media_type_is_matched_whole() {
        let typed = |value: &'static str| {
            let mut headers = http::HeaderMap::new();
            headers.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(value),
            );
            media_type_is(&headers, b"application/json")
        };
        for json in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/json ;q=1",
            " application/json",
        ] {
            assert!(typed(json), "{json}");
        }
        for other in [
            "application/jsonl",
            "application/json-seq",
            "text/json",
            "application/jso",
            "",
        ] {
            assert!(!typed(other), "{other}");
        }
        assert!(!media_type_is(&http::HeaderMap::new(), b"application/json"));
    }

    /// A body that gives its frames one by one.
    struct Frames(VecDeque<Frame<Bytes>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }

    fn collect(frames: Vec<Frame<Bytes>>, limit: usize) -> Result<Bytes, BufferError> {
        let Ok(collect) = start_buffering(Frames(frames.into()), limit) else {
            return Err(BufferError::TooLarge);
        };
        let mut collect = std::pin::pin!(collect);
        let mut cx = Context::from_waker(Waker::noop());
        match collect.as_mut().poll(&mut cx) {
            Poll::Ready(result) => finish_buffering(result),
            Poll::Pending => unreachable!("every frame is ready"),
        }
    }

    #[test]
    fn frames_are_collected_in_order_and_bounded() {
        let data = |s: &'static str| Frame::data(Bytes::from_static(s.as_bytes()));
        let one = collect(vec![data(r#"{"a":1}"#)], 64).unwrap();
        assert_eq!(one, r#"{"a":1}"#);
        // A body of one frame is that frame, not a copy of it.
        let frame = Bytes::from_static(br#"{"b":2}"#);
        let single = collect(vec![Frame::data(frame.clone())], 64).unwrap();
        assert_eq!(single.as_ptr(), frame.as_ptr());
        let mut trailers = HeaderMap::new();
        trailers.insert("x-t", http::HeaderValue::from_static("1"));
        let many = vec![
            data("{\"a\""),
            data(""),
            data(":1"),
            Frame::trailers(trailers),
            data("}"),
        ];
        assert_eq!(collect(many, 64).unwrap(), r#"{"a":1}"#);
        assert_eq!(collect(vec![], 64).unwrap(), "");
        let over = vec![data("0123456789"), data("0123456789")];
        assert!(matches!(collect(over, 15), Err(BufferError::TooLarge)));
    }

    #[test]
    fn a_gatherer_sets_aside_what_a_body_announced_up_to_a_mebibyte() {
        let two_pieces = |announced: u64| {
            let mut gathered = Gather::for_body(&Announcing(announced), DEFAULT_BODY_LIMIT);
            gathered.push(Bytes::from_static(b"{"));
            gathered.push(Bytes::from_static(b"}"));
            gathered.buffer().unwrap().1
        };
        assert_eq!(two_pieces(10_000), 10_000);
        // Twelve mebibytes announced, two bytes sent: a mebibyte set aside, not twelve.
        assert_eq!(two_pieces(DEFAULT_BODY_LIMIT as u64), PREALLOCATED);
        assert_eq!(two_pieces(u64::MAX), PREALLOCATED);
    }

    #[test]
    fn a_gatherer_keeps_one_frame_and_joins_more() {
        let mut gathered = Gather::default();
        assert_eq!((gathered.len(), gathered.take()), (0, Bytes::new()));
        let frame = Bytes::from_static(b"{\"a\":1}");
        gathered.push(Bytes::new());
        gathered.push(frame.clone());
        gathered.push(Bytes::new());
        assert_eq!(gathered.len(), 7);
        let taken = gathered.take();
        assert_eq!(taken.as_ptr(), frame.as_ptr());
        // Taking leaves it empty, ready for the next answer.
        assert_eq!((gathered.len(), gathered.take()), (0, Bytes::new()));
        for piece in ["{\"b\"", ":", "2}"] {
            gathered.push(Bytes::from_static(piece.as_bytes()));
        }
        assert_eq!(gathered.len(), 7);
        assert_eq!(gathered.take(), "{\"b\":2}");
        assert_eq!(gathered.len(), 0);
    }
}
