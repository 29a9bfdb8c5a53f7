//! Reading the `usage` a backend reports, from a JSON body or an SSE stream, as the body passes.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use serde::Deserialize;

use crate::body::Gather;
use crate::model::Usage;

/// The most of a JSON response kept to read its usage, and the longest SSE line; past them the
/// usage is unknown and the reservation stands.
const MAX_OBSERVED: usize = 4 * 1024 * 1024;

#[derive(Deserialize)]
struct WithUsage {
    usage: Option<Usage>,
}

/// The tokens in a JSON document's top-level `usage`.
fn usage_of(json: &[u8]) -> Option<u64> {
    serde_json::from_slice::<WithUsage>(json)
        .ok()?
        .usage?
        .total()
}

/// What happened to a metered response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Settled {
    /// The body ended; the usage it reported, if any.
    Completed(Option<u64>),
    /// The body failed or was dropped before its end; the last usage seen, if any.
    Broken(Option<u64>),
    /// A limiter further in refused the request: it never reached the model, so the request
    /// slot and the tokens go back and the quota pays nothing.
    Withdrawn,
    /// The backend failed or refused (an error, a status other than 2xx): taken as using no
    /// tokens, though nothing was reported.
    Failed,
}

/// Receives the outcome once.
pub(crate) trait Settle: Send + Sync + 'static {
    fn settle(&self, outcome: Settled);
}

/// What an answer reported using, for whoever asks: put one into a request's extensions ahead
/// of a [`TokenRateLimit`](super::TokenRateLimit) and keep a clone; once the answer's body has
/// been read to its end (or dropped), [`tokens`](Self::tokens) says what its `usage` reported.
/// For a log line or a bill that counts what the model says it used, not the estimate the
/// limiter reserved. One per request: a report is read for one answer.
///
/// The limiter reads the usage as it does for its own reconciliation (from a JSON answer, an
/// SSE stream's last `usage`, or what the content filter read), also for a key it does not
/// limit. Nothing is read, and nothing costs more, for a request that carries no report.
///
/// ```
/// use tower_maas::limit::UsageReport;
///
/// let report = UsageReport::new();
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(report.clone());
/// // … the request goes through the limiter, its answer is sent …
/// assert_eq!(report.tokens(), None); // nothing reported yet
/// ```
#[derive(Clone, Debug)]
pub struct UsageReport(Arc<Report>);

#[derive(Debug)]
struct Report {
    /// The tokens reported, or [`UNREPORTED`].
    tokens: AtomicU64,
    /// A limiter has taken on reading the answer for this report alone (a key it does not
    /// limit), so that a second one does not read it again.
    claimed: AtomicBool,
}

/// No usage reported (yet).
const UNREPORTED: u64 = u64::MAX;

impl UsageReport {
    /// A report with nothing in it yet.
    pub fn new() -> Self {
        Self(Arc::new(Report {
            tokens: AtomicU64::new(UNREPORTED),
            claimed: AtomicBool::new(false),
        }))
    }

    /// The total tokens the answer's `usage` reported: once its body has ended, or, for a
    /// stream cut short, the last count it sent. `None` before, when the answer reported no
    /// usage, and when the request never reached the model.
    pub fn tokens(&self) -> Option<u64> {
        let tokens = self.0.tokens.load(Ordering::Acquire);
        (tokens != UNREPORTED).then_some(tokens)
    }

    /// Keeps what a limiter read of the answer.
    pub(crate) fn record(&self, outcome: Settled) {
        self.0.settle(outcome);
    }

    /// Whether this caller is the first to take on reading the answer for the report.
    pub(crate) fn claim(&self) -> bool {
        !self.0.claimed.swap(true, Ordering::Relaxed)
    }

    /// The report as what a limiter that reads the answer for it alone settles.
    pub(crate) fn settler(&self) -> Arc<dyn Settle> {
        Arc::clone(&self.0) as Arc<dyn Settle>
    }
}

impl Default for UsageReport {
    fn default() -> Self {
        Self::new()
    }
}

/// Keeps the tokens an answer reported; nothing for an answer that reported none.
impl Settle for Report {
    fn settle(&self, outcome: Settled) {
        if let Settled::Completed(Some(used)) | Settled::Broken(Some(used)) = outcome {
            self.tokens
                .store(used.min(UNREPORTED - 1), Ordering::Release);
        }
    }
}

/// How to read usage: buffer a JSON document, or scan SSE lines.
enum Reader {
    Json {
        held: Gather,
        /// Past [`MAX_OBSERVED`]: no longer held, and not read.
        over: bool,
    },
    Sse {
        line: Vec<u8>,
        skipping: bool,
        last: Option<u64>,
    },
}

/// The observer of one body: reads usage and settles exactly once, on end, error or drop.
pub(crate) struct Meter {
    reader: Reader,
    settle: Option<Arc<dyn Settle>>,
}

#[cfg(test)]
thread_local! {
    /// How many answers this thread has begun to read, for the tests that show an answer read
    /// once however many limiters meter it.
    pub(crate) static METERS_MADE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl Meter {
    /// The meter of `body`: SSE lines, or (`sse` false) one JSON document, held in a buffer
    /// made as large as the body announced (up to a mebibyte before its bytes come), not grown
    /// frame by frame.
    pub(crate) fn new(body: &impl http_body::Body, sse: bool, settle: Arc<dyn Settle>) -> Self {
        #[cfg(test)]
        METERS_MADE.with(|made| made.set(made.get() + 1));
        let reader = if sse {
            Reader::Sse {
                line: Vec::new(),
                skipping: false,
                last: None,
            }
        } else {
            Reader::Json {
                held: Gather::for_body(body, MAX_OBSERVED),
                over: false,
            }
        };
        Self {
            reader,
            settle: Some(settle),
        }
    }

    fn observe(&mut self, data: &Bytes) {
        match &mut self.reader {
            Reader::Json { held, over } => {
                if *over {
                    return;
                }
                held.push(data.clone());
                if held.len() > MAX_OBSERVED {
                    held.take();
                    *over = true;
                }
            }
            Reader::Sse {
                line,
                skipping,
                last,
            } => {
                for piece in data.split_inclusive(|&b| b == b'\n') {
                    let complete = piece.ends_with(b"\n");
                    if !*skipping {
                        line.extend_from_slice(piece);
                        if line.len() > MAX_OBSERVED {
                            line.clear();
                            *skipping = true;
                        }
                    }
                    if complete {
                        if !*skipping {
                            if let Some(used) = sse_usage(line) {
                                *last = Some(used);
                            }
                        }
                        line.clear();
                        *skipping = false;
                    }
                }
            }
        }
    }

    fn last_seen(&self) -> Option<u64> {
        match &self.reader {
            Reader::Sse { last, .. } => *last,
            Reader::Json { .. } => None,
        }
    }

    fn finish(&mut self, outcome: Settled) {
        if let Some(settle) = self.settle.take() {
            settle.settle(outcome);
        }
    }

    fn complete(&mut self) {
        if self.settle.is_none() {
            return;
        }
        let used = match &mut self.reader {
            // An answer in one frame, as most are, is read where it lies.
            Reader::Json { held, over: false } => usage_of(&held.take()),
            Reader::Json { .. } => None,
            Reader::Sse { line, last, .. } => {
                // A last event without its newline still counts.
                sse_usage(line).or(*last)
            }
        };
        self.finish(Settled::Completed(used));
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        let last = self.last_seen();
        self.finish(Settled::Broken(last));
    }
}

/// The usage in one SSE line `data: {...}` (MaaS repeats a cumulative usage in every chunk,
/// OpenAI sends it once in the last): the latest one counts.
fn sse_usage(line: &[u8]) -> Option<u64> {
    let payload = line.strip_prefix(b"data:")?.trim_ascii();
    if payload == b"[DONE]" || !contains(payload, b"\"usage\"") {
        return None;
    }
    usage_of(payload)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

pin_project! {
    /// A response body that reports the backend's `usage` to the token limiter and the key's
    /// quota as it passes, frames untouched.
    pub struct UsageBody<B> {
        #[pin]
        inner: B,
        meter: Option<Meter>,
    }
}

impl<B> UsageBody<B> {
    pub(crate) fn metered(inner: B, meter: Meter) -> Self {
        Self {
            inner,
            meter: Some(meter),
        }
    }

    pub(crate) fn plain(inner: B) -> Self {
        Self { inner, meter: None }
    }
}

impl<B> std::fmt::Debug for UsageBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageBody")
            .field("metered", &self.meter.is_some())
            .finish_non_exhaustive()
    }
}

impl<B> Body for UsageBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        if let Some(meter) = this.meter.as_mut() {
            match &frame {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        meter.observe(data);
                    }
                    // A body of known length is not polled past its end: its last frame is
                    // where it completes.
                    if this.inner.is_end_stream() {
                        meter.complete();
                    }
                }
                Some(Err(_)) => {
                    let last = meter.last_seen();
                    meter.finish(Settled::Broken(last));
                }
                None => meter.complete(),
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Ignored;

    impl Settle for Ignored {
        fn settle(&self, _: Settled) {}
    }

    use crate::body::Announcing;

    fn held(meter: &Meter) -> Option<(*const u8, usize)> {
        match &meter.reader {
            Reader::Json { held, .. } => held.buffer(),
            Reader::Sse { .. } => unreachable!("a JSON meter"),
        }
    }

    #[test]
    fn a_json_answer_in_many_frames_is_held_in_one_buffer_of_its_announced_size() {
        let mut meter = Meter::new(&Announcing(10_000), false, Arc::new(Ignored));
        let frame = Bytes::from(vec![b' '; 1_000]);
        meter.observe(&frame);
        meter.observe(&frame);
        let (at, capacity) = held(&meter).unwrap();
        assert_eq!(capacity, 10_000);
        for _ in 2..10 {
            meter.observe(&frame);
        }
        // Never grown, so never moved.
        assert_eq!(held(&meter), Some((at, capacity)));
    }

    #[test]
    fn an_answer_announcing_more_gets_no_larger_buffer_before_its_bytes_come() {
        let mut meter = Meter::new(&Announcing(u64::MAX), false, Arc::new(Ignored));
        meter.observe(&Bytes::from_static(b"{"));
        meter.observe(&Bytes::from_static(b"}"));
        let (_, capacity) = held(&meter).unwrap();
        assert_eq!(capacity, crate::body::PREALLOCATED);
    }

    #[test]
    fn usage_from_sse_lines() {
        assert_eq!(
            sse_usage(br#"data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#),
            Some(7)
        );
        assert_eq!(
            sse_usage(br#"data: {"usage":{"prompt_tokens":3,"completion_tokens":4}}"#),
            Some(7)
        );
        assert_eq!(sse_usage(br#"data: {"usage":null}"#), None);
        assert_eq!(sse_usage(b"data: [DONE]"), None);
        assert_eq!(sse_usage(b": keep-alive"), None);
    }
}
