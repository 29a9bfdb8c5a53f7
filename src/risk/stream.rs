//! Streaming output checks: a window of generated text across SSE events.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::classifier::{Classifier, Side, Verdict};
use super::layer::{Judged, OnFailure, RefusalCtx, Shared, apply, judge};
use super::output::{NotJson, read_answer};
use crate::error::{Dialect, MaasError};

/// The most bytes of events held at once, and the longest line: events without text are
/// released in batches of this size, and a longer line cannot be checked (the failure policy
/// decides).
const MAX_HELD: usize = 64 * 1024;
const MAX_LINE: usize = 1024 * 1024;

type Pending<Cl> = Pin<Box<tokio::time::Timeout<<Cl as Classifier>::Future>>>;

pin_project! {
    #[project = RiskStreamProj]
    /// An SSE stream whose generated text is checked in windows before it is passed on. On a
    /// block the stream ends with an error event carrying the 81011 body, then `data: [DONE]`.
    pub struct RiskStream<R, Cl>
    where
        Cl: Classifier,
    {
        #[pin]
        inner: R,
        shared: Arc<Shared<Cl>>,
        ctx: RefusalCtx,
        backlog: Vec<u8>,
        line: Vec<u8>,
        held: Vec<Bytes>,
        held_bytes: usize,
        held_text: String,
        tail: String,
        out: VecDeque<Bytes>,
        // What ends the event the client has been sent part of: nothing after a blank line, a
        // blank line after an event's lines, a line end and a blank line after a line cut off.
        open_event: &'static [u8],
        pending: Option<Pending<Cl>>,
        finished: bool,
        closed: bool,
    }
}

impl<R, Cl: Classifier> RiskStream<R, Cl> {
    pub(crate) fn new(inner: R, shared: Arc<Shared<Cl>>, ctx: RefusalCtx) -> Self {
        Self {
            inner,
            shared,
            ctx,
            backlog: Vec::new(),
            line: Vec::new(),
            held: Vec::new(),
            held_bytes: 0,
            held_text: String::new(),
            tail: String::new(),
            out: VecDeque::new(),
            open_event: b"",
            pending: None,
            finished: false,
            closed: false,
        }
    }
}

/// Whether an SSE line is the blank line that ends an event.
fn is_blank(line: &[u8]) -> bool {
    matches!(line, b"\n" | b"\r\n")
}

/// The delta text of one SSE line, if it is a `data:` line with generated text; [`NotJson`]
/// for a `data:` line that is not JSON, whose text cannot be read (OpenAI-compatible servers
/// write each event's JSON on one line).
fn delta_text(line: &[u8]) -> Result<Option<String>, NotJson> {
    let Some(payload) = line.strip_prefix(b"data:") else {
        return Ok(None);
    };
    let payload = payload.trim_ascii();
    if payload.is_empty() || payload == b"[DONE]" {
        return Ok(None);
    }
    let mut text = String::new();
    read_answer(payload, &mut text)?;
    Ok((!text.is_empty()).then_some(text))
}

impl<R, Cl> Body for RiskStream<R, Cl>
where
    R: Body<Data = Bytes>,
    Cl: Classifier,
{
    type Data = Bytes;
    type Error = R::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, R::Error>>> {
        let mut this = self.project();
        loop {
            if let Some(bytes) = this.out.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(bytes))));
            }
            if *this.closed {
                return Poll::Ready(None);
            }
            if let Some(pending) = this.pending.as_mut() {
                let outcome = ready!(pending.as_mut().poll(cx));
                *this.pending = None;
                let verdict = apply(&this.shared.config, outcome);
                settle(&mut state_of(&mut this), verdict);
                continue;
            }
            // Feed held-back bytes line by line, checking each full window.
            if !this.backlog.is_empty() {
                let backlog = std::mem::take(this.backlog);
                let mut rest = &backlog[..];
                while !rest.is_empty() && this.pending.is_none() && !*this.closed {
                    let end = rest
                        .iter()
                        .position(|&b| b == b'\n')
                        .map_or(rest.len(), |i| i + 1);
                    let (piece, after) = rest.split_at(end);
                    rest = after;
                    this.line.extend_from_slice(piece);
                    let complete = piece.ends_with(b"\n");
                    if !complete && this.line.len() <= MAX_LINE {
                        continue;
                    }
                    let line = Bytes::from(std::mem::take(this.line));
                    // A line too long to hold, or a data line that is not JSON, cannot be
                    // checked.
                    let text = if complete {
                        delta_text(&line)
                    } else {
                        Err(NotJson)
                    };
                    match text {
                        Ok(text) => this.held_text.push_str(text.as_deref().unwrap_or_default()),
                        Err(NotJson) if this.shared.config.failure == OnFailure::Block => {
                            settle(
                                &mut state_of(&mut this),
                                Verdict::Block {
                                    category: "unchecked-line".into(),
                                },
                            );
                            break;
                        }
                        Err(NotJson) => {}
                    }
                    // Windows end with an event: what passes is whole events, so that an error
                    // event after them is an event of its own.
                    let ends_event = is_blank(&line);
                    *this.held_bytes += line.len();
                    this.held.push(line);
                    let window = this.shared.config.stream.map_or(0, |w| w.window);
                    if ends_event && this.held_text.chars().count() >= window
                        || *this.held_bytes >= MAX_HELD
                    {
                        check(&mut state_of(&mut this));
                    }
                }
                this.backlog.extend_from_slice(rest);
                continue;
            }
            if *this.finished {
                if !this.line.is_empty() {
                    let line = Bytes::from(std::mem::take(this.line));
                    this.held.push(line);
                }
                if this.held.is_empty() {
                    *this.closed = true;
                } else {
                    check(&mut state_of(&mut this));
                    if this.pending.is_none() && !*this.closed {
                        *this.closed = true;
                    }
                }
                continue;
            }
            match ready!(this.inner.as_mut().poll_frame(cx)) {
                None => *this.finished = true,
                Some(Err(err)) => return Poll::Ready(Some(Err(err))),
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        this.backlog.extend_from_slice(data);
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.closed && self.out.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// The parts of the stream's state that checking changes.
struct StreamState<'a, Cl: Classifier> {
    shared: &'a Arc<Shared<Cl>>,
    ctx: &'a RefusalCtx,
    held: &'a mut Vec<Bytes>,
    held_bytes: &'a mut usize,
    held_text: &'a mut String,
    tail: &'a mut String,
    out: &'a mut VecDeque<Bytes>,
    open_event: &'a mut &'static [u8],
    pending: &'a mut Option<Pending<Cl>>,
    closed: &'a mut bool,
}

fn state_of<'a, R, Cl: Classifier>(this: &'a mut RiskStreamProj<'_, R, Cl>) -> StreamState<'a, Cl> {
    StreamState {
        shared: this.shared,
        ctx: this.ctx,
        held: this.held,
        held_bytes: this.held_bytes,
        held_text: this.held_text,
        tail: this.tail,
        out: this.out,
        open_event: this.open_event,
        pending: this.pending,
        closed: this.closed,
    }
}

/// Checks what is held, with the tail of what passed before it, so that a term split across
/// the boundary is seen whole.
fn check<Cl: Classifier>(state: &mut StreamState<'_, Cl>) {
    let text = format!("{}{}", state.tail, state.held_text);
    match judge(state.shared, Side::Output, &text) {
        Judged::Pass => settle(state, Verdict::Pass),
        Judged::Block(category) => settle(state, Verdict::Block { category }),
        Judged::Later(pending) => *state.pending = Some(Box::pin(pending)),
    }
}

/// Passes the held events on, or ends the stream with the refusal.
fn settle<Cl: Classifier>(state: &mut StreamState<'_, Cl>, verdict: Verdict) {
    match verdict {
        Verdict::Pass => {
            let overlap = state.shared.config.stream.map_or(0, |w| w.overlap);
            let passed = format!("{}{}", state.tail, state.held_text);
            let keep = passed.chars().count().saturating_sub(overlap);
            *state.tail = passed.chars().skip(keep).collect();
            state.held_text.clear();
            *state.held_bytes = 0;
            if let Some(last) = state.held.last() {
                *state.open_event = if is_blank(last) {
                    b""
                } else if last.ends_with(b"\n") {
                    b"\n"
                } else {
                    b"\n\n"
                };
            }
            state.out.extend(state.held.drain(..));
        }
        Verdict::Block { category } => {
            state.held.clear();
            *state.held_bytes = 0;
            state.held_text.clear();
            state.ctx.log(Side::Output, &category);
            let body = MaasError::SensitiveContent.render(Dialect::OpenAi, &state.ctx.request_id());
            let mut event = Vec::with_capacity(body.len() + 12);
            // The event the client has begun is ended, without what was withheld.
            event.extend_from_slice(state.open_event);
            event.extend_from_slice(b"data: ");
            event.extend_from_slice(&body);
            event.extend_from_slice(b"\n\n");
            state.out.push_back(Bytes::from(event));
            state.out.push_back(Bytes::from_static(b"data: [DONE]\n\n"));
            *state.closed = true;
        }
    }
}
