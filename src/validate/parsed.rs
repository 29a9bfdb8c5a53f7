//! The parsed request the validator hands on to later layers and the service.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::OnceLock;

use bytes::Bytes;

use super::accept::{Accepted, IncludeUsage, Model, Piece, PromptItem, Slot};
use super::json::{Dict, Int, Json, loads};
use super::schema::{as_bool, as_int};
use super::tokens::{TOKENS_PER_MESSAGE, TokenCounter};
use crate::model::RequestedModel;

/// Which OpenAI endpoint a request is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Endpoint {
    /// `/v1/chat/completions`
    ChatCompletions,
    /// `/v1/completions`
    Completions,
    /// `/v1/embeddings`
    Embeddings,
    /// A route registered with its own schema.
    Custom,
}

/// A request body the validator accepted, parsed once and shared with later layers and the
/// service through the request's extensions (as `Arc<ParsedRequest>`).
///
/// ```
/// use std::sync::Arc;
/// use axum::Extension;
/// use tower_maas::validate::ParsedRequest;
///
/// async fn handler(Extension(parsed): Extension<Arc<ParsedRequest>>) -> String {
///     format!("{:?} asks for {} tokens", parsed.model(), parsed.prompt_tokens())
/// }
/// ```
#[derive(Debug)]
pub struct ParsedRequest {
    endpoint: Endpoint,
    body: Source,
    model: Option<RequestedModel>,
    stream: bool,
    include_usage: Option<bool>,
    max_tokens: Option<u64>,
    /// `max_tokens` at the size Python reads it, for vLLM's message.
    max_tokens_exact: Option<u128>,
    prompt_tokens: u64,
    largest_prompt: u64,
    texts: Texts,
    messages: Marks,
}

/// Where [`ParsedRequest::json`] comes from: the tree the exact path built, or the accepted
/// bytes, decoded into a tree only when someone asks.
#[derive(Debug)]
enum Source {
    Tree(Json),
    Text {
        bytes: Bytes,
        tree: OnceLock<Json>,
        /// Where the top-level `model` string lies in `bytes`, quotes included.
        model: Option<Range<usize>>,
    },
}

/// Every text of a request, joined by newlines (as the content filter reads them), with where
/// each ends.
#[derive(Debug, Default)]
struct Texts {
    joined: String,
    ends: Vec<usize>,
}

impl Texts {
    fn push(&mut self, text: &str) {
        if !self.ends.is_empty() {
            self.joined.push('\n');
        }
        self.joined.push_str(text);
        self.ends.push(self.joined.len());
    }

    /// The texts joined in one allocation of exactly their size.
    fn of(texts: &[Cow<'_, str>]) -> Self {
        let size = texts.iter().map(|t| t.len() + 1).sum::<usize>();
        let mut joined = Self {
            joined: String::with_capacity(size.saturating_sub(1)),
            ends: Vec::with_capacity(texts.len()),
        };
        for text in texts {
            joined.push(text);
        }
        joined
    }

    /// `count` texts from the `first`, joined by newlines as they lie in `joined`.
    fn span(&self, first: usize, count: usize) -> Option<&str> {
        if count == 0 {
            return None;
        }
        let last = first.checked_add(count - 1)?;
        let start = match first {
            0 => 0,
            _ => *self.ends.get(first - 1)? + 1,
        };
        self.joined.get(start..*self.ends.get(last)?)
    }

    fn iter(&self) -> impl Iterator<Item = &str> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let text = &self.joined[start..end];
            start = end + 1;
            text
        })
    }
}

/// Where each chat message's role and content lie: recorded while the texts are gathered, so
/// that [`ParsedRequest::messages`] needs no tree.
#[derive(Debug, Default)]
struct Marks {
    marks: Vec<Mark>,
    /// The roles [`known_role`] does not know, one after another.
    other_roles: String,
}

#[derive(Clone, Copy, Debug)]
struct Mark {
    role: RoleAt,
    /// The content is `count` texts from the `first` of the request's texts.
    first: usize,
    count: usize,
}

#[derive(Clone, Copy, Debug)]
enum RoleAt {
    Absent,
    Known(&'static str),
    Other { start: usize, end: usize },
}

/// The roles a custom route's schema may take beyond the chat schema's.
const OTHER_ROLES: &[&str] = &["developer", "function"];

/// A role OpenAI's chat API names, kept without a copy: the chat schema's four and
/// [`OTHER_ROLES`].
fn known_role(role: &str) -> Option<&'static str> {
    super::openai::ROLES
        .iter()
        .chain(OTHER_ROLES)
        .find(|known| **known == role)
        .copied()
}

impl Marks {
    /// A message starts; its content will be the texts from the `first`.
    fn start(&mut self, role: Option<&str>, first: usize) {
        if self.marks.capacity() == 0 {
            // Most chats are a few turns: one allocation for them.
            self.marks.reserve(8);
        }
        let role = match role {
            None => RoleAt::Absent,
            Some(role) => match known_role(role) {
                Some(known) => RoleAt::Known(known),
                None => {
                    let start = self.other_roles.len();
                    self.other_roles.push_str(role);
                    RoleAt::Other {
                        start,
                        end: self.other_roles.len(),
                    }
                }
            },
        };
        self.marks.push(Mark {
            role,
            first,
            count: 0,
        });
    }

    /// How many messages: one for each item of `messages`.
    fn count(&self) -> u64 {
        self.marks.len() as u64
    }

    /// One more text of the current message's content.
    fn content(&mut self) {
        if let Some(mark) = self.marks.last_mut() {
            mark.count += 1;
        }
    }

    /// Notes one piece of a message, `gathered` texts in; the text to keep, if it is one. Both
    /// readings (the tree's and the text's) go through here, so they cannot drift apart.
    fn take<T: std::ops::Deref<Target = str>>(
        &mut self,
        piece: Piece<T>,
        gathered: usize,
    ) -> Option<T> {
        match piece {
            Piece::Role(role) => {
                self.start(role.as_deref(), gathered);
                None
            }
            Piece::Content(text) => {
                self.content();
                Some(text)
            }
            Piece::Text(text) => Some(text),
        }
    }
}

/// One message of a chat request, as [`ParsedRequest::messages`] gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Message<'a> {
    role: Option<&'a str>,
    content: Option<&'a str>,
}

impl<'a> Message<'a> {
    /// The role (`"system"`, `"user"`, `"assistant"`, `"tool"` …); `None` when the message has
    /// none, has one that is not a string, or is not an object (a route of its own schema may
    /// take such messages).
    pub fn role(&self) -> Option<&'a str> {
        self.role
    }

    /// The content's text: the string, or, for a list of parts, every part's string `text`
    /// (whatever the part's `type`) joined by newlines, as the token count and the content
    /// filter read them; `None` when there is no such text (no content, `null`, only image
    /// parts).
    pub fn content(&self) -> Option<&'a str> {
        self.content
    }
}

/// The messages of a request, in order: [`ParsedRequest::messages`].
#[derive(Clone, Debug)]
pub struct Messages<'a> {
    marks: std::slice::Iter<'a, Mark>,
    request: &'a ParsedRequest,
}

impl<'a> Messages<'a> {
    fn message(&self, mark: &Mark) -> Message<'a> {
        let request = self.request;
        Message {
            role: match mark.role {
                RoleAt::Absent => None,
                RoleAt::Known(role) => Some(role),
                RoleAt::Other { start, end } => request.messages.other_roles.get(start..end),
            },
            content: request.texts.span(mark.first, mark.count),
        }
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Message<'a>;

    fn next(&mut self) -> Option<Message<'a>> {
        let mark = self.marks.next()?;
        Some(self.message(mark))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.marks.size_hint()
    }
}

impl DoubleEndedIterator for Messages<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        let mark = self.marks.next_back()?;
        Some(self.message(mark))
    }
}

impl ExactSizeIterator for Messages<'_> {}

impl std::iter::FusedIterator for Messages<'_> {}

/// Tokens of a `prompt`/`input`, item by item: a flat list of ids is one prompt; a list of
/// strings or of id lists is several.
struct PromptCount {
    items: u64,
    all_ints: bool,
    sum: u64,
    largest: u64,
}

impl PromptCount {
    fn new() -> Self {
        Self {
            items: 0,
            all_ints: true,
            sum: 0,
            largest: 0,
        }
    }

    fn add(&mut self, item: PromptItem<&str>, counter: &dyn TokenCounter) {
        let size = match item {
            PromptItem::Text(text) => counter.count(text),
            PromptItem::Ids(n) => n,
            PromptItem::Int | PromptItem::Other => 1,
        };
        self.items += 1;
        self.all_ints &= matches!(item, PromptItem::Int);
        self.sum += size;
        self.largest = self.largest.max(size);
    }

    /// (all prompt tokens, the largest single prompt).
    fn finish(self) -> (u64, u64) {
        if self.all_ints {
            (self.items, self.items)
        } else {
            (self.sum, self.largest)
        }
    }
}

/// `stream_options`, as far as the request reads it.
enum StreamOptions<'j> {
    /// Absent, or not an object.
    None,
    /// An object, with its `include_usage` if given.
    IncludeUsage(Option<&'j Json>),
}

/// The flags and numbers read from the top-level fields.
struct Scalars {
    model: Option<RequestedModel>,
    stream: bool,
    include_usage: Option<bool>,
    max_tokens_exact: Option<u128>,
}

impl Scalars {
    fn read(
        endpoint: Endpoint,
        model: Option<&str>,
        stream: Option<&Json>,
        stream_options: StreamOptions<'_>,
        max_tokens: Option<&Json>,
    ) -> Self {
        let flag = |value: Option<&Json>| value.and_then(|v| as_bool(v).ok());
        Self {
            model: model.map(RequestedModel::new),
            stream: flag(stream).unwrap_or(false),
            include_usage: match stream_options {
                StreamOptions::IncludeUsage(given) => Some(flag(given).unwrap_or(true)),
                StreamOptions::None => None,
            },
            max_tokens_exact: match max_tokens {
                // The completions schema defaults `max_tokens` to 16.
                None if endpoint == Endpoint::Completions => Some(16),
                None | Some(Json::Null) => None,
                Some(v) => Some(exact_int(v)),
            },
        }
    }
}

/// Chat: every text, plus the template's tokens per message and for the reply's start.
fn chat_tokens(texts: &Texts, messages: u64, counter: &dyn TokenCounter) -> (u64, u64) {
    let text: u64 = texts.iter().map(|t| counter.count(t)).sum();
    let total = text + messages * TOKENS_PER_MESSAGE + 3 * u64::from(messages > 0);
    (total, total)
}

impl ParsedRequest {
    /// Whether the request was checked off its text, without a tree.
    #[cfg(test)]
    pub(crate) fn read_without_a_tree(&self) -> bool {
        matches!(&self.body, Source::Text { tree, .. } if tree.get().is_none())
    }

    /// From the tree the exact path built.
    pub(crate) fn new(endpoint: Endpoint, json: Json, counter: &dyn TokenCounter) -> Self {
        let body = match &json {
            Json::Dict(dict) => Some(dict),
            _ => None,
        };
        let field = |name| body.and_then(|d: &Dict| d.get(name));
        let stream_options = match field("stream_options") {
            Some(Json::Dict(options)) => StreamOptions::IncludeUsage(options.get("include_usage")),
            _ => StreamOptions::None,
        };
        let scalars = Scalars::read(
            endpoint,
            field("model").and_then(Json::as_str),
            field("stream"),
            stream_options,
            field("max_tokens"),
        );
        let mut texts = Texts::default();
        let mut marks = Marks::default();
        let (prompt_tokens, largest_prompt) = match endpoint {
            Endpoint::ChatCompletions | Endpoint::Custom => {
                if let Some(Json::List(list)) = field("messages") {
                    for message in list {
                        message_texts(message, &mut |piece| {
                            if let Some(text) = marks.take(piece, texts.ends.len()) {
                                texts.push(text);
                            }
                        });
                    }
                }
                for key in ["prompt", "input"] {
                    prompt_items(field(key), &mut |item| {
                        if let PromptItem::Text(t) = item {
                            texts.push(t);
                        }
                    });
                }
                chat_tokens(&texts, marks.count(), counter)
            }
            Endpoint::Completions | Endpoint::Embeddings => {
                let key = if endpoint == Endpoint::Completions {
                    "prompt"
                } else {
                    "input"
                };
                let mut count = PromptCount::new();
                prompt_items(field(key), &mut |item| {
                    if let PromptItem::Text(text) = item {
                        texts.push(text);
                    }
                    count.add(item, counter);
                });
                count.finish()
            }
        };
        Self::assemble(
            endpoint,
            Source::Tree(json),
            scalars,
            (texts, marks),
            (prompt_tokens, largest_prompt),
        )
    }

    /// From a body the fast path accepted, without a tree.
    pub(super) fn from_accepted(
        endpoint: Endpoint,
        bytes: Bytes,
        body: &Accepted<'_>,
        model: Option<&Model<'_>>,
        counter: &dyn TokenCounter,
    ) -> Self {
        let include_usage = body.include_usage();
        let stream_options = match &include_usage {
            Some(IncludeUsage::Given(given)) => StreamOptions::IncludeUsage(Some(given)),
            Some(IncludeUsage::Absent) => StreamOptions::IncludeUsage(None),
            None => StreamOptions::None,
        };
        let scalars = Scalars::read(
            endpoint,
            model.map(|model| &*model.name),
            body.field(Slot::Stream).as_ref(),
            stream_options,
            body.field(Slot::MaxTokens).as_ref(),
        );
        // The texts are gathered first, so that they are joined in one allocation of their
        // size; a prompt's items are kept in order, to be counted once joined.
        let mut found = Vec::with_capacity(16);
        let mut items = Vec::new();
        let mut marks = Marks::default();
        let prompt = match endpoint {
            Endpoint::ChatCompletions | Endpoint::Custom => {
                body.messages(&mut |piece| {
                    if let Some(text) = marks.take(piece, found.len()) {
                        found.push(text);
                    }
                });
                for slot in [Slot::Prompt, Slot::Input] {
                    body.prompt(slot, &mut |item| {
                        if let PromptItem::Text(t) = item {
                            found.push(t);
                        }
                    });
                }
                false
            }
            Endpoint::Completions | Endpoint::Embeddings => {
                let slot = if endpoint == Endpoint::Completions {
                    Slot::Prompt
                } else {
                    Slot::Input
                };
                body.prompt(slot, &mut |item| items.push(item.map(|t| found.push(t))));
                true
            }
        };
        let texts = Texts::of(&found);
        let tokens = if prompt {
            let mut count = PromptCount::new();
            let mut each_text = texts.iter();
            for item in items {
                count.add(item.map(|()| each_text.next().unwrap_or_default()), counter);
            }
            count.finish()
        } else {
            chat_tokens(&texts, marks.count(), counter)
        };
        let source = Source::Text {
            // The text accepted is the body after its byte-order mark, if it had one.
            model: model.map(|model| {
                let mark = bytes.len() - body.text_len();
                model.at.start + mark..model.at.end + mark
            }),
            bytes,
            tree: OnceLock::new(),
        };
        Self::assemble(endpoint, source, scalars, (texts, marks), tokens)
    }

    fn assemble(
        endpoint: Endpoint,
        body: Source,
        scalars: Scalars,
        (texts, messages): (Texts, Marks),
        (prompt_tokens, largest_prompt): (u64, u64),
    ) -> Self {
        let max_tokens_exact = scalars.max_tokens_exact;
        Self {
            endpoint,
            body,
            model: scalars.model,
            stream: scalars.stream,
            include_usage: scalars.include_usage,
            max_tokens: max_tokens_exact.map(|n| u64::try_from(n).unwrap_or(u64::MAX)),
            max_tokens_exact,
            prompt_tokens,
            largest_prompt,
            texts,
            messages,
        }
    }

    /// The endpoint.
    pub fn endpoint(&self) -> Endpoint {
        self.endpoint
    }

    /// The whole decoded body. Valid bodies are accepted without building this tree; it is
    /// decoded on the first call and kept.
    pub fn json(&self) -> &Json {
        match &self.body {
            Source::Tree(json) => json,
            // The bytes were accepted, so they decode; `Null` only keeps this free of panics.
            Source::Text { bytes, tree, .. } => {
                tree.get_or_init(|| loads(bytes).unwrap_or(Json::Null))
            }
        }
    }

    /// The body with its top-level `model` set to `name`, every other byte as the client sent
    /// it (order, spacing, numbers as written): what a proxy sends an upstream that knows the
    /// model by another name. `None` when the body was read the exact way rather than
    /// accepted as it lies (a key given twice, a body not in UTF-8, ...), or has no `model`
    /// string: encode the renamed body from [`json`](Self::json) then.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use std::sync::Arc;
    /// use http_body_util::Full;
    /// use tower::{Layer, ServiceExt};
    /// use tower_maas::validate::{ParsedRequest, RequestSchemaValidatorLayer};
    ///
    /// let upstream = tower::service_fn(|request: http::Request<_>| async move {
    ///     let parsed = request.extensions().get::<Arc<ParsedRequest>>().unwrap();
    ///     let body = parsed.body_with_model("Qwen/Qwen2.5-7B-Instruct").unwrap();
    ///     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(body)))
    /// });
    /// let sent = r#"{ "messages": [], "model": "qwen", "temperature": 0.50 }"#;
    /// let request = http::Request::post("/v1/chat/completions")
    ///     .header("content-type", "application/json")
    ///     .body(Full::new(bytes::Bytes::from(sent)))
    ///     .unwrap();
    /// let answer = RequestSchemaValidatorLayer::new().layer(upstream).oneshot(request).await;
    /// let body = http_body_util::BodyExt::collect(answer.unwrap().into_body()).await;
    /// assert_eq!(
    ///     body.unwrap().to_bytes(),
    ///     r#"{ "messages": [], "model": "Qwen/Qwen2.5-7B-Instruct", "temperature": 0.50 }"#
    /// );
    /// # }
    /// ```
    pub fn body_with_model(&self, name: &str) -> Option<Bytes> {
        let Source::Text {
            bytes,
            model: Some(span),
            ..
        } = &self.body
        else {
            return None;
        };
        let mut renamed = Vec::with_capacity(bytes.len() + name.len());
        renamed.extend_from_slice(&bytes[..span.start]);
        // A `&str` always serialises.
        serde_json::to_writer(&mut renamed, name).ok()?;
        renamed.extend_from_slice(&bytes[span.end..]);
        Some(renamed.into())
    }

    /// The model requested.
    pub fn model(&self) -> Option<&str> {
        self.model.as_ref().map(RequestedModel::as_str)
    }

    pub(crate) fn requested_model(&self) -> Option<&RequestedModel> {
        self.model.as_ref()
    }

    /// Whether the client asked for a stream.
    pub fn stream(&self) -> bool {
        self.stream
    }

    /// `stream_options.include_usage` (true when `stream_options` is given without it); `None`
    /// when there are no stream options.
    pub fn include_usage(&self) -> Option<bool> {
        self.include_usage
    }

    /// `max_tokens` (16 for completions when absent, as vLLM's schema defaults it).
    pub fn max_tokens(&self) -> Option<u64> {
        self.max_tokens
    }

    /// Tokens of the prompt, as the configured [`TokenCounter`] counts them (token-id prompts
    /// count one per id; chat messages add the template's tokens).
    pub fn prompt_tokens(&self) -> u64 {
        self.prompt_tokens
    }

    /// `max_tokens` at full size (saturating at `u128::MAX`).
    pub(crate) fn max_tokens_exact(&self) -> Option<u128> {
        self.max_tokens_exact
    }

    /// Tokens of the largest single prompt (completions and embeddings take several).
    pub(crate) fn largest_prompt(&self) -> u64 {
        self.largest_prompt
    }

    /// Every text the request carries: message contents (string or content parts), tool-call
    /// arguments, names and reasoning, the prompt or the input. For token counting and risk
    /// control.
    pub fn texts(&self) -> Vec<&str> {
        self.texts.iter().collect()
    }

    /// A chat request's messages, in order, one for each item of `messages` (none for other
    /// requests): the role and the content's text, read when the body was checked, so that a
    /// service behind the validator needs no tree for them.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use axum::Extension;
    /// use tower_maas::validate::ParsedRequest;
    ///
    /// /// Echoes the last user message.
    /// async fn handler(Extension(parsed): Extension<Arc<ParsedRequest>>) -> String {
    ///     parsed
    ///         .messages()
    ///         .rfind(|m| m.role() == Some("user"))
    ///         .and_then(|m| m.content())
    ///         .unwrap_or_default()
    ///         .to_owned()
    /// }
    /// ```
    pub fn messages(&self) -> Messages<'_> {
        Messages {
            marks: self.messages.marks.iter(),
            request: self,
        }
    }

    /// [`texts`](Self::texts) joined by newlines, without copying them again.
    #[cfg_attr(not(feature = "risk"), allow(dead_code))]
    pub(crate) fn joined_texts(&self) -> &str {
        &self.texts.joined
    }
}

/// A validated, positive int field at full size: Python ints have no bound.
fn exact_int(value: &Json) -> u128 {
    let digits = match value {
        // The common case, without formatting the number only to parse it back.
        Json::Int(Int::Small(n)) => return u128::try_from(*n).unwrap_or(u128::MAX),
        Json::Int(int) => int.to_string(),
        Json::Str(s) => s.trim().replace('_', ""),
        other => return as_int(other).ok().flatten().map_or(0, |n| n.max(0) as u128),
    };
    let digits = digits.split('.').next().unwrap_or_default();
    digits.trim_start_matches('+').parse().unwrap_or(u128::MAX)
}

fn message_texts<'a>(message: &'a Json, out: &mut impl FnMut(Piece<&'a str>)) {
    let Json::Dict(message) = message else {
        out(Piece::Role(None));
        return;
    };
    let text_of = |value: Option<&'a Json>| value.and_then(Json::as_str);
    out(Piece::Role(text_of(message.get("role"))));
    match message.get("content") {
        Some(Json::List(parts)) => {
            for part in parts {
                if let Json::Dict(part) = part {
                    if let Some(text) = text_of(part.get("text")) {
                        out(Piece::Content(text));
                    }
                }
            }
        }
        content => {
            if let Some(text) = text_of(content) {
                out(Piece::Content(text));
            }
        }
    }
    let mut out = |text| out(Piece::Text(text));
    for key in ["name", "reasoning_content"] {
        text_of(message.get(key)).into_iter().for_each(&mut out);
    }
    if let Some(Json::List(calls)) = message.get("tool_calls") {
        for call in calls {
            if let Json::Dict(call) = call {
                if let Some(Json::Dict(function)) = call.get("function") {
                    text_of(function.get("arguments"))
                        .into_iter()
                        .for_each(&mut out);
                }
            }
        }
    }
}

/// The items of a `prompt`/`input` list, or the one string given instead.
fn prompt_items<'a>(prompt: Option<&'a Json>, each: &mut impl FnMut(PromptItem<&'a str>)) {
    match prompt {
        Some(Json::List(items)) => {
            for item in items {
                each(match item {
                    Json::List(ids) => PromptItem::Ids(ids.len() as u64),
                    Json::Int(_) => PromptItem::Int,
                    item => item.as_str().map_or(PromptItem::Other, PromptItem::Text),
                });
            }
        }
        Some(prompt) => {
            if let Some(text) = prompt.as_str() {
                each(PromptItem::Text(text));
            }
        }
        None => {}
    }
}
