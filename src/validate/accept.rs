//! Acceptance straight off the text, with no tree: the fast path of valid bodies.
//!
//! Most bodies are valid, and for them the validator needs a yes and a few values (the model,
//! the stream flags, `max_tokens`, the texts), not the decoded tree an error report quotes.
//! [`accept`] walks the text once against the schema and answers only when it is sure that the
//! exact path ([`loads`](super::loads), then the schema over the tree) would accept the body.
//! Whatever it does not settle itself gives `None`, and the body takes the exact path, which
//! builds the tree and words the error: any error at all, lax coercions (`"1"` for an int,
//! `1` for a bool), a field given twice, a lone surrogate, `NaN`, nesting past [`DEPTH`].
//!
//! Being sure rests on reusing the exact path's own parts: strings are decoded by its scanner
//! ([`Parser::scan_raw`]), numbers and literals by its number scanner and judged by the schema's
//! own rules ([`accepts`]); objects and lists are checked for the same structure the schema
//! checks (every key a field, each field once, the required ones present).

use std::borrow::Cow;
use std::cell::Cell;
use std::ops::Range;

use super::json::{Json, Parser};
use super::schema::{Members, Schema, Ty, accepts, same};
use crate::json_text::find_special;

/// Bodies nested deeper take the exact path; no OpenAI schema comes near it.
const DEPTH: usize = 64;

/// Models of more fields take the exact path: the fields seen are one bit each in a `u64`.
const MAX_FIELDS: usize = 64;

/// The top-level fields the parsed request reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Slot {
    Model,
    Stream,
    StreamOptions,
    MaxTokens,
    Messages,
    Prompt,
    Input,
}

const SLOTS: [(Slot, &str); 7] = [
    (Slot::Model, "model"),
    (Slot::Stream, "stream"),
    (Slot::StreamOptions, "stream_options"),
    (Slot::MaxTokens, "max_tokens"),
    (Slot::Messages, "messages"),
    (Slot::Prompt, "prompt"),
    (Slot::Input, "input"),
];

/// Which slot, if any, each field of `schema` fills, by field index: worked out once per route.
pub(super) fn slots(schema: &Schema) -> Box<[Option<Slot>]> {
    schema
        .fields
        .iter()
        .map(|field| {
            SLOTS
                .iter()
                .find(|(_, name)| *name == field.name)
                .map(|&(slot, _)| slot)
        })
        .collect()
}

/// Where each slot's value lies in the text.
type Spans = [Option<usize>; SLOTS.len()];

/// A body [`accept`] took: the text and where the slots' values start.
pub(super) struct Accepted<'a> {
    walk: Walk<'a>,
    spans: Spans,
}

/// Whether the exact path would accept `text` against `schema`, worked out without building a
/// tree; `Some` only when sure. `slots` is [`slots`] of `schema`.
pub(super) fn accept<'a>(
    schema: &Schema,
    slots: &[Option<Slot>],
    text: &'a str,
) -> Option<Accepted<'a>> {
    if text.len() >= ESCAPED as usize {
        return None;
    }
    let mut walk = Walk {
        parser: Parser::new(text.as_bytes(), Some(text)),
        s: text.as_bytes(),
        text,
        depth: 0,
        strings: NOTES.take(),
        read: Cell::new(0),
    };
    let start = walk.ws(0);
    if walk.s.get(start) != Some(&b'{') {
        return None;
    }
    let mut spans = [None; SLOTS.len()];
    let end = walk.nested(|w| w.model(schema, start, Some((slots, &mut spans))))?;
    (walk.ws(end) == walk.s.len()).then_some(Accepted { walk, spans })
}

/// The top-level `model` string of an accepted body.
pub(super) struct Model<'a> {
    pub(super) name: Cow<'a, str>,
    /// Where it lies in the text accepted, quotes included.
    pub(super) at: Range<usize>,
}

/// `include_usage` in a `stream_options` object.
pub(super) enum IncludeUsage {
    Absent,
    Given(Json),
}

/// What one chat message gives, in order: its role (always, first; `None` when it has no string
/// role, or is not an object), then its content's texts, then its other texts.
pub(super) enum Piece<T> {
    Role(Option<T>),
    Content(T),
    Text(T),
}

/// One item of a `prompt` or `input` list, or the string given instead of a list.
#[derive(Clone, Copy)]
pub(super) enum PromptItem<T> {
    Text(T),
    /// A list of token ids, of this length.
    Ids(u64),
    Int,
    Other,
}

impl<T> PromptItem<T> {
    pub(super) fn map<U>(self, f: impl FnOnce(T) -> U) -> PromptItem<U> {
        match self {
            Self::Text(text) => PromptItem::Text(f(text)),
            Self::Ids(n) => PromptItem::Ids(n),
            Self::Int => PromptItem::Int,
            Self::Other => PromptItem::Other,
        }
    }
}

impl<'a> Accepted<'a> {
    /// The value of a top-level field, decoded by the exact parser: for the small ones (the
    /// model, the flags, `max_tokens`).
    pub(super) fn field(&self, slot: Slot) -> Option<Json> {
        let start = self.spans[slot as usize]?;
        let mut parser = Parser::new(self.walk.s, Some(self.walk.text));
        parser.scan_once(start).ok().map(|(value, _)| value)
    }

    /// The model, when it is a string.
    pub(super) fn model(&self) -> Option<Model<'a>> {
        let start = self.spans[Slot::Model as usize]?;
        let (name, end) = self.walk.read_string(start)?;
        Some(Model {
            name,
            at: start..end,
        })
    }

    /// The length of the text accepted: the body after its byte-order mark, if it had one.
    pub(super) fn text_len(&self) -> usize {
        self.walk.s.len()
    }

    /// `stream_options.include_usage`, decoded by the exact parser; `None` when
    /// `stream_options` is not an object.
    pub(super) fn include_usage(&self) -> Option<IncludeUsage> {
        let start = self.spans[Slot::StreamOptions as usize]?;
        if self.walk.s[start] != b'{' {
            return None;
        }
        let ([given], _) = self.walk.last_of(start, ["include_usage"]);
        Some(match given {
            None => IncludeUsage::Absent,
            Some(Val::Str(text)) => IncludeUsage::Given(Json::Str(text.into())),
            Some(Val::At(at)) => {
                let mut parser = Parser::new(self.walk.s, Some(self.walk.text));
                match parser.scan_once(at) {
                    Ok((value, _)) => IncludeUsage::Given(value),
                    Err(_) => IncludeUsage::Absent,
                }
            }
        })
    }

    /// Each message's role, then its content's texts, then its other texts, in the order the
    /// tree's reading gives them, when `messages` is a list.
    pub(super) fn messages(&self, out: &mut impl FnMut(Piece<Cow<'a, str>>)) {
        let Some(start) = self.spans[Slot::Messages as usize] else {
            return;
        };
        if self.walk.s[start] == b'[' {
            self.walk.read_items(start, |at| self.message(at, out));
        }
    }

    /// One message: its `role`, `content` (a string, or the `text` of each part), `name`,
    /// `reasoning_content`, then each tool call's `function.arguments`; the index after it. A
    /// key given twice counts with its last value, as in the tree.
    fn message(&self, at: usize, out: &mut impl FnMut(Piece<Cow<'a, str>>)) -> usize {
        let w = &self.walk;
        let ([role, content, name, reasoning, calls], end) = w.last_of(
            at,
            ["role", "content", "name", "reasoning_content", "tool_calls"],
        );
        out(Piece::Role(match role {
            Some(Val::Str(role)) => Some(role),
            _ => None,
        }));
        let mut content_text = |text: Cow<'a, str>| out(Piece::Content(text));
        match content {
            Some(Val::At(list)) if w.s[list] == b'[' => {
                w.read_items(list, |part| {
                    let ([text], end) = w.last_of(part, ["text"]);
                    if let Some(text) = text {
                        text.text(&mut content_text);
                    }
                    end
                });
            }
            Some(text) => text.text(&mut content_text),
            None => {}
        }
        let mut other_text = |text: Cow<'a, str>| out(Piece::Text(text));
        for text in [name, reasoning].into_iter().flatten() {
            text.text(&mut other_text);
        }
        if let Some(Val::At(list)) = calls {
            if w.s[list] == b'[' {
                w.read_items(list, |call| {
                    let ([function], end) = w.last_of(call, ["function"]);
                    if let Some(Val::At(function)) = function {
                        let ([arguments], _) = w.last_of(function, ["arguments"]);
                        if let Some(arguments) = arguments {
                            arguments.text(&mut other_text);
                        }
                    }
                    end
                });
            }
        }
        end
    }

    /// The items of a `prompt`/`input` list, or the one string given instead.
    pub(super) fn prompt(&self, slot: Slot, each: &mut impl FnMut(PromptItem<Cow<'a, str>>)) {
        let Some(start) = self.spans[slot as usize] else {
            return;
        };
        let w = &self.walk;
        let text =
            |at: usize, each: &mut dyn FnMut(PromptItem<Cow<'a, str>>)| match w.read_string(at) {
                Some((text, end)) => {
                    each(PromptItem::Text(text));
                    end
                }
                None => w.s.len(),
            };
        match w.s[start] {
            b'"' => {
                text(start, each);
            }
            b'[' => {
                w.read_items(start, |item| match w.s[item] {
                    b'"' => text(item, each),
                    b'[' => {
                        let mut ids = 0;
                        let end = w.read_items(item, |id| {
                            ids += 1;
                            w.end_of(id)
                        });
                        each(PromptItem::Ids(ids));
                        end
                    }
                    _ => match w.parser.match_number(item) {
                        Ok((Json::Int(_), end)) => {
                            each(PromptItem::Int);
                            end
                        }
                        _ => {
                            each(PromptItem::Other);
                            w.end_of(item)
                        }
                    },
                });
            }
            _ => {}
        }
    }
}

/// A value read from an accepted body: a string, decoded, or where another value starts.
enum Val<'a> {
    Str(Cow<'a, str>),
    At(usize),
}

impl<'a> Val<'a> {
    /// Hands a string to `out`; other values are not texts.
    fn text(self, out: &mut impl FnMut(Cow<'a, str>)) {
        if let Val::Str(text) = self {
            out(text);
        }
    }
}

/// A string the walk accepted: where its quote is, and the index after it, with the top bit
/// set when it holds an escape. Eight bytes, so that the notes of a body of a hundred strings
/// stay a small allocation (bodies of 2 GiB or more take the exact path).
#[derive(Clone, Copy)]
struct Noted {
    start: u32,
    end: u32,
}

const ESCAPED: u32 = 1 << 31;

thread_local! {
    /// The notes of the last body walked on this thread, kept for the next one: the walk
    /// allocates nothing for them once a thread has seen a body of its usual size.
    static NOTES: Cell<Vec<Noted>> = const { Cell::new(Vec::new()) };
}

/// Notes of more strings than this are not kept for the next body (a 12 MiB body of short
/// strings would hold on to megabytes).
const NOTES_KEPT: usize = 4096;

impl Drop for Walk<'_> {
    fn drop(&mut self) {
        let mut notes = std::mem::take(&mut self.strings);
        if notes.capacity() <= NOTES_KEPT {
            notes.clear();
            // Not while the thread's locals are being torn down: then the buffer just goes.
            let _ = NOTES.try_with(|kept| kept.set(notes));
        }
    }
}

/// The walk over the text.
struct Walk<'a> {
    parser: Parser<'a>,
    s: &'a [u8],
    text: &'a str,
    depth: usize,
    /// Every string the walk accepted, in the order of the text: where its quote is, the index
    /// after it, and whether it holds an escape. Reading the accepted body looks strings up
    /// here instead of scanning them a second time.
    strings: Vec<Noted>,
    /// Where in `strings` the next string read is likely to be.
    read: Cell<usize>,
}

impl<'a> Walk<'a> {
    fn ws(&self, at: usize) -> usize {
        self.parser.skip_ws(at)
    }

    fn nested(&mut self, f: impl FnOnce(&mut Self) -> Option<usize>) -> Option<usize> {
        if self.depth >= DEPTH {
            return None;
        }
        self.depth += 1;
        let end = f(self);
        self.depth -= 1;
        end
    }

    /// The string whose quote is at `at`, noted; the index after it. `None` if the exact
    /// scanner refuses it or it holds a lone surrogate (which the tree keeps and a `str`
    /// cannot).
    #[inline]
    fn string(&mut self, at: usize) -> Option<usize> {
        let close = find_special(self.s, at + 1);
        let (end, escaped) = if self.s.get(close) == Some(&b'"') {
            (close + 1, 0)
        } else {
            (self.escaped_string(at)?, ESCAPED)
        };
        // `accept` took only texts shorter than `ESCAPED`.
        self.strings.push(Noted {
            start: at as u32,
            end: end as u32 | escaped,
        });
        Some(end)
    }

    /// A string with an escape, a control character or no end: the exact scanner decodes or
    /// refuses it.
    #[cold]
    fn escaped_string(&self, at: usize) -> Option<usize> {
        let (wtf8, end) = self.parser.scan_raw(at + 1).ok()?;
        std::str::from_utf8(&wtf8).ok()?;
        Some(end)
    }

    /// The text of the string [`string`](Self::string) has just accepted at `at`, ending before
    /// `end`: its bytes, decoded again when it holds escapes.
    fn text_of(&self, at: usize, end: usize) -> Option<Cow<'a, [u8]>> {
        let escaped = self
            .strings
            .last()
            .is_some_and(|noted| noted.end & ESCAPED != 0);
        if !escaped {
            return Some(Cow::Borrowed(&self.s[at + 1..end - 1]));
        }
        self.parser.scan_raw(at + 1).ok().map(|(wtf8, _)| wtf8)
    }

    /// A number, `null`, `true` or `false`, as the exact parser decodes it.
    fn scalar(&self, at: usize) -> Option<(Json, usize)> {
        let p = &self.parser;
        match self.s[at] {
            b'n' if p.literal(at, b"null") => Some((Json::Null, at + 4)),
            b't' if p.literal(at, b"true") => Some((Json::Bool(true), at + 4)),
            b'f' if p.literal(at, b"false") => Some((Json::Bool(false), at + 5)),
            // `-Infinity` is refused here, as the scanner stops at the `I`.
            b'-' | b'0'..=b'9' => p.match_number(at).ok(),
            _ => None,
        }
    }

    /// The value at `at`, which must pass `ty`; the index after it.
    fn value(&mut self, ty: &Ty, at: usize) -> Option<usize> {
        match *self.s.get(at)? {
            b'"' => {
                let end = self.string(at)?;
                if takes_any_str(ty) {
                    return Some(end);
                }
                takes_str(ty, &self.text_of(at, end)?).then_some(end)
            }
            b'{' => self.nested(|w| w.object(ty, at)),
            b'[' => self.nested(|w| w.array(ty, at)),
            _ => {
                let (scalar, end) = self.scalar(at)?;
                accepts(ty, &scalar).then_some(end)
            }
        }
    }

    /// Any value, well formed: what `Any` takes.
    fn skip(&mut self, at: usize) -> Option<usize> {
        match *self.s.get(at)? {
            b'"' => self.string(at),
            b'{' => self.nested(|w| w.entries(at, |w, _, v| w.skip(v))),
            b'[' => self.nested(|w| w.items(at, |w, v| w.skip(v))),
            _ => self.scalar(at).map(|(_, end)| end),
        }
    }

    fn object(&mut self, ty: &Ty, at: usize) -> Option<usize> {
        match ty {
            Ty::Model(schema) => self.model(schema, at, None),
            // A repeated key needs no care: every value passed, so the last one did.
            Ty::Dict(item) => self.entries(at, |w, _, v| w.value(item, v)),
            Ty::Any => self.entries(at, |w, _, v| w.skip(v)),
            Ty::Nullable(inner) => self.object(inner, at),
            Ty::Union(members) => self.any_member(members, |w, m| w.object(m, at)),
            _ => None,
        }
    }

    fn array(&mut self, ty: &Ty, at: usize) -> Option<usize> {
        match ty {
            Ty::List(item) => self.items(at, |w, v| w.value(item, v)),
            Ty::Any => self.items(at, |w, v| w.skip(v)),
            Ty::Nullable(inner) => self.array(inner, at),
            Ty::Union(members) => self.any_member(members, |w, m| w.array(m, at)),
            _ => None,
        }
    }

    /// The first member of a union that takes the value; the strings a member noted before
    /// it failed are forgotten, so that each string is noted once.
    fn any_member(
        &mut self,
        members: &Members,
        mut walk: impl FnMut(&mut Self, &Ty) -> Option<usize>,
    ) -> Option<usize> {
        let noted = self.strings.len();
        for (_, member) in &members.0 {
            if let Some(end) = walk(self, member) {
                return Some(end);
            }
            self.strings.truncate(noted);
        }
        None
    }

    /// A model: every key one of its fields, none twice, the required ones present. At the
    /// top, where each slot's value starts is noted.
    fn model(
        &mut self,
        schema: &Schema,
        at: usize,
        mut top: Option<(&[Option<Slot>], &mut Spans)>,
    ) -> Option<usize> {
        let fields = &schema.fields;
        if fields.len() > MAX_FIELDS {
            return None;
        }
        let mut seen = 0u64;
        let end = self.entries(at, |w, key, v| {
            let k = schema.field_index(key)?;
            let bit = 1 << k;
            if seen & bit != 0 {
                return None;
            }
            seen |= bit;
            let end = w.value(&fields[k].ty, v)?;
            if let Some((slots, spans)) = top.as_mut() {
                if let Some(slot) = slots[k] {
                    spans[slot as usize] = Some(v);
                }
            }
            Some(end)
        })?;
        let missing = fields
            .iter()
            .enumerate()
            .any(|(k, f)| f.required && seen & (1 << k) == 0);
        (!missing).then_some(end)
    }

    /// The entries of the object whose `{` is at `at`, each value handed to `each`, which
    /// gives the index after it.
    fn entries(
        &mut self,
        at: usize,
        mut each: impl FnMut(&mut Self, &[u8], usize) -> Option<usize>,
    ) -> Option<usize> {
        let mut i = self.ws(at + 1);
        if self.s.get(i) == Some(&b'}') {
            return Some(i + 1);
        }
        loop {
            if self.s.get(i) != Some(&b'"') {
                return None;
            }
            let start = i;
            let end = self.string(i)?;
            let key = self.text_of(start, end)?;
            i = self.ws(end);
            if self.s.get(i) != Some(&b':') {
                return None;
            }
            let value = self.ws(i + 1);
            let next = each(self, &key, value)?;
            i = self.ws(next);
            match self.s.get(i) {
                Some(b'}') => return Some(i + 1),
                Some(b',') => i = self.ws(i + 1),
                _ => return None,
            }
        }
    }

    /// The items of the list whose `[` is at `at`.
    fn items(
        &mut self,
        at: usize,
        mut each: impl FnMut(&mut Self, usize) -> Option<usize>,
    ) -> Option<usize> {
        let mut i = self.ws(at + 1);
        if self.s.get(i) == Some(&b']') {
            return Some(i + 1);
        }
        loop {
            let next = each(self, i)?;
            i = self.ws(next);
            match self.s.get(i) {
                Some(b']') => return Some(i + 1),
                Some(b',') => i = self.ws(i + 1),
                _ => return None,
            }
        }
    }

    // Reading an accepted body: the text is known to be well formed, so these never fail on
    // it; on anything else they stop at the end rather than panic or loop.

    /// The string whose quote is at `at`, as the walk noted it.
    fn read_string(&self, at: usize) -> Option<(Cow<'a, str>, usize)> {
        // Reading mostly goes forward: the string after the last one read is tried first.
        let hint = self.read.get();
        let found = match self.strings.get(hint) {
            Some(noted) if noted.start as usize == at => Ok(hint),
            _ => self
                .strings
                .binary_search_by_key(&at, |noted| noted.start as usize),
        };
        match found {
            Ok(i) => {
                self.read.set(i + 1);
                let noted = self.strings[i];
                let end = (noted.end & !ESCAPED) as usize;
                if noted.end & ESCAPED == 0 {
                    return Some((Cow::Borrowed(&self.text[at + 1..end - 1]), end));
                }
            }
            // Only strings the walk accepted are read; this keeps a slip from panicking.
            Err(_) if self.s.get(at) != Some(&b'"') => return None,
            Err(_) => {}
        }
        let (wtf8, end) = self.parser.scan_raw(at + 1).ok()?;
        Some((Cow::Owned(String::from_utf8(wtf8.into_owned()).ok()?), end))
    }

    /// The index after any value.
    fn end_of(&self, at: usize) -> usize {
        self.read_end(at, 0).unwrap_or(self.s.len())
    }

    fn read_end(&self, at: usize, depth: usize) -> Option<usize> {
        let (open, close) = match *self.s.get(at)? {
            b'"' => return self.read_string(at).map(|(_, end)| end),
            b'{' => (b'{', b'}'),
            b'[' => (b'[', b']'),
            _ => return self.scalar(at).map(|(_, end)| end),
        };
        if depth > DEPTH {
            return None;
        }
        let mut i = self.ws(at + 1);
        if self.s.get(i) == Some(&close) {
            return Some(i + 1);
        }
        loop {
            if open == b'{' {
                i = self.ws(self.read_string(i)?.1);
                if self.s.get(i) != Some(&b':') {
                    return None;
                }
                i = self.ws(i + 1);
            }
            i = self.ws(self.read_end(i, depth + 1)?);
            match self.s.get(i) {
                Some(b',') => i = self.ws(i + 1),
                Some(&b) if b == close => return Some(i + 1),
                _ => return None,
            }
        }
    }

    /// Each item of the list at `at`, `each` giving the index after the item; the index
    /// after the list.
    fn read_items(&self, at: usize, mut each: impl FnMut(usize) -> usize) -> usize {
        let end = self.s.len();
        let mut i = self.ws(at + 1);
        while self.s.get(i).is_some_and(|&b| b != b']') {
            let next = each(i);
            if next <= i {
                return end;
            }
            i = self.ws(next);
            match self.s.get(i) {
                Some(b',') => i = self.ws(i + 1),
                Some(b']') => {}
                _ => return end,
            }
        }
        (i + 1).min(end)
    }

    /// The last value of each of `keys` when the value at `at` is an object, and the index
    /// after the value.
    fn last_of<const N: usize>(&self, at: usize, keys: [&str; N]) -> ([Option<Val<'a>>; N], usize) {
        let mut found = [const { None }; N];
        let end = self.s.len();
        if self.s.get(at) != Some(&b'{') {
            return (found, self.end_of(at));
        }
        let mut i = self.ws(at + 1);
        while self.s.get(i) == Some(&b'"') {
            let Some((key, after_key)) = self.read_string(i) else {
                return (found, end);
            };
            let value = self.ws(self.ws(after_key) + 1);
            let wanted = keys
                .iter()
                .position(|name| same(name.as_bytes(), key.as_bytes()));
            let next = if self.s.get(value) == Some(&b'"') {
                let Some((text, after)) = self.read_string(value) else {
                    return (found, end);
                };
                if let Some(k) = wanted {
                    found[k] = Some(Val::Str(text));
                }
                after
            } else {
                if let Some(k) = wanted {
                    found[k] = Some(Val::At(value));
                }
                self.end_of(value)
            };
            i = self.ws(next);
            match self.s.get(i) {
                Some(b',') => i = self.ws(i + 1),
                Some(b'}') => return (found, i + 1),
                _ => return (found, end),
            }
        }
        let close = self.s.get(i) == Some(&b'}');
        (found, if close { i + 1 } else { end })
    }
}

/// Whether `ty` takes every string: `str`, `Any`, or a union or `Optional` with one among
/// its members (message contents, prompts); checked before [`takes_str`], which needs the
/// string's text.
fn takes_any_str(ty: &Ty) -> bool {
    match ty {
        Ty::Any | Ty::Str => true,
        Ty::Nullable(inner) => takes_any_str(inner),
        Ty::Union(members) => members.0.iter().any(|(_, m)| takes_any_str(m)),
        _ => false,
    }
}

/// Whether `ty` surely takes a string: `str`, `Any`, a literal it is one of, or a union or
/// `Optional` of those. The lax readings of a string as a number or a bool are left to the
/// exact path.
fn takes_str(ty: &Ty, text: &[u8]) -> bool {
    match ty {
        Ty::Any | Ty::Str => true,
        Ty::Literal(words) => words.iter().any(|w| same(w.as_bytes(), text)),
        Ty::Nullable(inner) => takes_str(inner, text),
        Ty::Union(members) => members.0.iter().any(|(_, m)| takes_str(m, text)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use proptest::prelude::*;

    use super::*;
    use crate::validate::json::{Text, decode_text, loads};
    use crate::validate::openai;
    use crate::validate::parsed::{Endpoint, ParsedRequest};
    use crate::validate::schema::{Errors, validate_body};
    use crate::validate::tokens::EstimatingCounter;

    fn routes() -> [(Schema, Endpoint); 3] {
        [
            (openai::chat_completion(), Endpoint::ChatCompletions),
            (openai::completion(), Endpoint::Completions),
            (openai::embedding(), Endpoint::Embeddings),
        ]
    }

    /// The exact path: the tree, the schema over it, the request read from the tree.
    fn exact(schema: &Schema, endpoint: Endpoint, text: &str) -> Option<ParsedRequest> {
        let json = loads(text.as_bytes()).ok()?;
        let mut errors = Errors::default();
        validate_body(schema, &json, &mut errors);
        errors
            .is_empty()
            .then(|| ParsedRequest::new(endpoint, json, &EstimatingCounter))
    }

    fn fast(schema: &Schema, endpoint: Endpoint, text: &str) -> Option<ParsedRequest> {
        let slots = slots(schema);
        let Ok(Text::Utf8(decoded)) = decode_text(text.as_bytes()) else {
            return None;
        };
        let body = accept(schema, &slots, decoded)?;
        let bytes = Bytes::copy_from_slice(text.as_bytes());
        Some(ParsedRequest::from_accepted(
            endpoint,
            bytes,
            &body,
            body.model().as_ref(),
            &EstimatingCounter,
        ))
    }

    /// What later layers and services can read of a request.
    fn seen(p: &ParsedRequest) -> impl PartialEq + std::fmt::Debug + '_ {
        (
            p.model(),
            p.stream(),
            p.include_usage(),
            p.max_tokens_exact(),
            p.prompt_tokens(),
            p.largest_prompt(),
            p.texts(),
            p.joined_texts(),
            p.messages().collect::<Vec<_>>(),
            p.json(),
        )
    }

    /// The fast path's one promise: what it accepts, the exact path accepts, and reads the same.
    fn agrees(text: &str) -> Result<usize, TestCaseError> {
        let mut accepted = 0;
        for (schema, endpoint) in routes() {
            if let Some(quick) = fast(&schema, endpoint, text) {
                accepted += 1;
                let Some(exact) = exact(&schema, endpoint, text) else {
                    return Err(TestCaseError::fail(format!(
                        "accepted only by the fast path: {text}"
                    )));
                };
                prop_assert_eq!(seen(&quick), seen(&exact), "{}", text);
                renamed_alike(&schema, endpoint, &quick, text)?;
            }
        }
        Ok(accepted)
    }

    /// A body the fast path accepted, its model renamed where it lies: still accepted, and the
    /// same body but for the model.
    fn renamed_alike(
        schema: &Schema,
        endpoint: Endpoint,
        quick: &ParsedRequest,
        text: &str,
    ) -> Result<(), TestCaseError> {
        const NAME: &str = "renamed \"m\" \u{e9}";
        let Some(renamed) = quick.body_with_model(NAME) else {
            prop_assert!(quick.model().is_none(), "not renamed: {}", text);
            return Ok(());
        };
        let renamed = std::str::from_utf8(&renamed).unwrap();
        let Some(again) = fast(schema, endpoint, renamed) else {
            return Err(TestCaseError::fail(format!("renamed, refused: {renamed}")));
        };
        prop_assert_eq!(again.model(), Some(NAME));
        let fields = |p: &ParsedRequest| match p.json() {
            Json::Dict(dict) => dict
                .iter()
                .filter(|(key, _)| *key != "model")
                .map(|(key, value)| (key.to_owned(), value.clone()))
                .collect::<Vec<_>>(),
            _ => Vec::new(),
        };
        prop_assert_eq!(fields(&again), fields(quick), "{}", renamed);
        Ok(())
    }

    #[test]
    fn ordinary_bodies_take_the_fast_path() {
        let chat = r#"{"model": "DeepSeek-V3", "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": [{"type": "text", "text": "你好 \ud83d\ude00\n"}], "name": "a"}, {"role": "assistant", "content": null, "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "{\"x\": 1}"}}]}], "max_tokens": 20, "stream": true, "stream_options": {"include_usage": false}, "temperature": 0.7, "top_p": 1, "stop": ["\n"], "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}], "tool_choice": "auto", "logit_bias": {"1": -1.5}, "seed": -3, "n": 2}"#;
        let completion = r#"{"model":"m","prompt":[[1,2,3],[4]],"max_tokens":1,"echo":true}"#;
        let ids = r#"{"model":"\u006d","prompt":[1,2,3]}"#;
        let embedding =
            "\u{feff}{\"model\":\"m\",\"input\":[\"a\",\"b\"],\"encoding_format\":\"base64\"}";
        // Parts and tool calls are free-form objects: a key given twice counts with its last
        // value, and an escaped key is its decoded self.
        let repeated = r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"first","te\u0078t":"last"},{"type":"image_url"}]},{"role":"assistant","tool_calls":[{"function":{"arguments":"a","arguments":"b"},"function":{"arguments":"c"}}]}]}"#;
        for (text, want) in [
            (chat, 1),
            (completion, 1),
            (ids, 1),
            (embedding, 1),
            (repeated, 1),
        ] {
            assert_eq!(agrees(text).unwrap(), want, "{text}");
        }
    }

    #[test]
    fn messages_give_their_roles_and_contents_on_both_paths() {
        let chat = r#"{"model":"m","messages":[{"role":"system","content":"be brief"},{"content":[{"type":"text","text":"part one"},{"type":"image_url","image_url":{"url":"u"}},{"type":"text","text":"part two"}],"role":"user","name":"ann"},{"role":"assistant","content":null,"reasoning_content":"hm","tool_calls":[{"id":"1","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","content":"42","tool_call_id":"1"},{"role":"us\u0065r","content":""},{"role":"user","content":"last \ud83d\ude00"}]}"#;
        let want = [
            (Some("system"), Some("be brief")),
            (Some("user"), Some("part one\npart two")),
            (Some("assistant"), None),
            (Some("tool"), Some("42")),
            (Some("user"), Some("")),
            (Some("user"), Some("last 😀")),
        ];
        fn read(p: &ParsedRequest) -> Vec<(Option<&str>, Option<&str>)> {
            p.messages().map(|m| (m.role(), m.content())).collect()
        }
        let route = |wanted: Endpoint| {
            routes()
                .into_iter()
                .find(|(_, endpoint)| *endpoint == wanted)
                .unwrap()
                .0
        };
        let schema = route(Endpoint::ChatCompletions);
        let endpoint = Endpoint::ChatCompletions;
        let quick = fast(&schema, endpoint, chat).expect("the fast path takes it");
        assert_eq!(read(&quick), want);
        // Read from what the check recorded: still no tree once they are read.
        assert!(quick.read_without_a_tree());
        assert_eq!(read(&exact(&schema, endpoint, chat).unwrap()), want);
        // A route of its own schema may take any role, and messages that are not objects.
        let custom = Schema::new("R")
            .required("model", Ty::Str)
            .required("messages", Ty::List(Box::new(Ty::Any)));
        let text = r#"{"model":"m","messages":[{"role":"critic","content":"c"},{"role":7},5,{"role":"critic"},{"role":"judge","content":"j"}]}"#;
        let want = [
            (Some("critic"), Some("c")),
            (None, None),
            (None, None),
            (Some("critic"), None),
            (Some("judge"), Some("j")),
        ];
        let quick = fast(&custom, Endpoint::Custom, text).expect("the fast path takes it");
        assert_eq!(read(&quick), want);
        assert_eq!(read(&exact(&custom, Endpoint::Custom, text).unwrap()), want);
        // A completion has none.
        let completion = r#"{"model":"m","prompt":"hello"}"#;
        let schema = route(Endpoint::Completions);
        let quick = fast(&schema, Endpoint::Completions, completion).unwrap();
        assert_eq!(quick.messages().len(), 0);
        let exact = exact(&schema, Endpoint::Completions, completion).unwrap();
        assert_eq!(exact.messages().len(), 0);
    }

    #[test]
    fn a_field_declared_twice_is_one_field_of_the_last_type() {
        let schema = Schema::new("R")
            .required("model", Ty::Str)
            .optional("model", Ty::Int);
        assert_eq!(schema.fields.len(), 1);
        for (text, accepted) in [
            (r#"{"model":"m"}"#, false),
            (r#"{"model":1}"#, true),
            ("{}", true),
        ] {
            let quick = fast(&schema, Endpoint::Custom, text);
            let exact = exact(&schema, Endpoint::Custom, text);
            assert_eq!(exact.is_some(), accepted, "{text}");
            assert!(quick.is_none() || exact.is_some(), "{text}");
            assert_eq!(quick.is_some(), accepted, "{text}");
        }
        // An extra key is still an extra key.
        let schema = Schema::new("R")
            .required("model", Ty::Str)
            .optional("model", Ty::Str);
        assert!(exact(&schema, Endpoint::Custom, r#"{"model":"1","x":1}"#).is_none());
        assert!(fast(&schema, Endpoint::Custom, r#"{"model":"1","x":1}"#).is_none());
    }

    #[test]
    fn lax_scalars_are_judged_by_the_exact_rules() {
        for extra in [
            r#","stream":1"#,
            r#","max_tokens":5.0"#,
            r#","temperature":1"#,
            r#","max_tokens":99999999999999999999"#,
        ] {
            let text =
                format!(r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}]{extra}}}"#);
            assert_eq!(agrees(&text).unwrap(), 1, "{text}");
        }
    }

    #[test]
    fn anything_unusual_takes_the_exact_path() {
        let chat = |extra: &str| {
            format!(r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}]{extra}}}"#)
        };
        for text in [
            chat(r#","max_tokens":"5""#),  // a number as a string
            chat(r#","model":"n""#),       // a field twice
            chat(r#","temperature":NaN"#), // not a finite number
            chat(r#","user":"\ud800""#),   // a lone surrogate
            chat(r#","unknown":1"#),       // an extra field
            chat(r#","max_tokens":0"#),    // out of bounds
            chat(","),                     // not JSON
            r#"{"messages":[{"role":"user","content":"hi"}]}"#.to_owned(), // no model
            format!(
                r#"{{"model":"m","messages":[{{"role":"user","content":{}}}]}}"#,
                "[".repeat(70) + &"]".repeat(70)
            ),
        ] {
            let schema = openai::chat_completion();
            assert!(
                fast(&schema, Endpoint::ChatCompletions, &text).is_none(),
                "{text}"
            );
        }
    }

    fn scalar() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "0",
            "1",
            "-1",
            "2",
            "20",
            "2.0",
            "0.5",
            "-0",
            "1e2",
            "1E400",
            "-2.5",
            "99999999999999999999",
            "NaN",
            "Infinity",
            "-Infinity",
            "01",
            "true",
            "false",
            "null",
            r#""""#,
            r#""hi""#,
            r#""a\nb""#,
            r#""\u00e9\u4e2d""#,
            r#""\ud83d\ude00""#,
            r#""\ud800""#,
            r#""快速。""#,
            r#""user""#,
            r#""system""#,
            r#""assistant""#,
            r#""tool""#,
            r#""\u0075ser""#,
            r#""1""#,
            r#""true""#,
            r#"" 2 ""#,
            r#""auto""#,
            r#""function""#,
            r#""float""#,
            r#""base64""#,
            r#""m""#,
            r#""\x""#,
            "\"a\u{1}\"",
        ])
        .prop_map(str::to_owned)
    }

    fn key() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "model",
            "messages",
            "prompt",
            "input",
            "max_tokens",
            "stream",
            "stream_options",
            "include_usage",
            "temperature",
            "top_p",
            "n",
            "stop",
            "tools",
            "tool_choice",
            "logit_bias",
            "seed",
            "user",
            "echo",
            "logprobs",
            "encoding_format",
            "dimensions",
            "role",
            "content",
            "name",
            "reasoning_content",
            "tool_calls",
            "tool_call_id",
            "type",
            "text",
            "function",
            "arguments",
            "parameters",
            "x",
            "mod\\u0065l",
        ])
        .prop_map(|k| format!("\"{k}\""))
    }

    fn ws() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec!["", "", "", " ", "\n "])
    }

    /// JSON text (now and then not quite JSON) near the OpenAI schemas' shapes.
    fn value() -> impl Strategy<Value = String> {
        scalar().prop_recursive(5, 48, 6, |inner| {
            prop_oneof![
                (prop::collection::vec(inner.clone(), 0..5), ws())
                    .prop_map(|(items, w)| format!("[{w}{}]", items.join(&format!(",{w}")))),
                (prop::collection::vec((key(), inner), 0..5), ws()).prop_map(|(entries, w)| {
                    let entries: Vec<String> = entries
                        .iter()
                        .map(|(k, v)| format!("{k}{w}:{w}{v}"))
                        .collect();
                    format!("{{{w}{}{w}}}", entries.join(","))
                }),
            ]
        })
    }

    fn message() -> impl Strategy<Value = String> {
        (
            prop::sample::select(vec![
                r#""user""#,
                r#""system""#,
                r#""assistant""#,
                r#""tool""#,
                r#""bot""#,
            ]),
            prop_oneof![scalar(), value()],
            prop::collection::vec((key(), value()), 0..2),
        )
            .prop_map(|(role, content, extra)| {
                let mut entries = vec![
                    format!(r#""role":{role}"#),
                    format!(r#""content":{content}"#),
                ];
                entries.extend(extra.iter().map(|(k, v)| format!("{k}:{v}")));
                format!("{{{}}}", entries.join(","))
            })
    }

    /// A body: a model, messages or a prompt or an input, and other fields, any of them odd.
    fn body() -> impl Strategy<Value = String> {
        (
            prop_oneof![Just(r#""m""#.to_owned()), scalar()],
            prop::collection::vec(message(), 0..4),
            prop_oneof![
                Just("[1,2,3]".to_owned()),
                Just("[[1,2],[3]]".to_owned()),
                Just(r#"["a","b\n"]"#.to_owned()),
                Just(r#""one prompt""#.to_owned()),
                value(),
            ],
            prop::collection::vec((key(), value()), 0..4),
            prop::sample::select(vec!["messages", "prompt", "input"]),
            ws(),
        )
            .prop_map(|(model, messages, prompt, extra, which, w)| {
                let main = match which {
                    "messages" => format!(r#""messages":[{}]"#, messages.join(",")),
                    other => format!(r#""{other}":{prompt}"#),
                };
                let mut entries = vec![format!(r#""model":{model}"#), main];
                entries.extend(extra.iter().map(|(k, v)| format!("{k}:{w}{v}")));
                format!("{w}{{{}}}{w}", entries.join(&format!(",{w}")))
            })
    }

    /// A JSON string of text in several scripts, escaped in the ways clients escape it.
    fn text() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop::sample::select(vec![
                "hi",
                " ",
                "你好",
                "。",
                "😀",
                "\\n",
                "\\\"",
                "\\u00e9",
                "\\u4e2d",
                "\\ud83d\\ude00",
                "\\/",
                "\\t",
                "Ａ",
                "e\u{301}",
            ]),
            0..6,
        )
        .prop_map(|pieces| format!("\"{}\"", pieces.concat()))
    }

    /// A content part, a tool call or a free-form object: keys the readers look for, given
    /// twice now and then, in any order.
    fn loose_object() -> impl Strategy<Value = String> {
        prop::collection::vec(
            (
                prop::sample::select(vec![
                    "type",
                    "text",
                    "te\\u0078t",
                    "image_url",
                    "function",
                    "arguments",
                    "id",
                ]),
                prop_oneof![
                    text(),
                    Just("null".to_owned()),
                    Just("7".to_owned()),
                    text().prop_map(|t| format!(r#"{{"name":"f","arguments":{t}}}"#)),
                ],
            ),
            0..4,
        )
        .prop_map(|entries| {
            let entries: Vec<String> = entries
                .iter()
                .map(|(k, v)| format!(r#""{k}":{v}"#))
                .collect();
            format!("{{{}}}", entries.join(","))
        })
    }

    fn valid_message() -> impl Strategy<Value = String> {
        (
            prop::sample::select(vec![
                "user",
                "system",
                "assistant",
                "tool",
                r"us\u0065r",
                r"\u0061ssistant",
            ]),
            prop_oneof![
                3 => text(),
                1 => Just("null".to_owned()),
                2 => prop::collection::vec(loose_object(), 0..3).prop_map(|p| format!("[{}]", p.join(","))),
            ],
            prop::option::of(text()),
            prop::option::of(prop::collection::vec(loose_object(), 0..3)),
            prop::option::of(text()),
            any::<bool>(),
        )
            .prop_map(|(role, content, name, calls, reasoning, content_first)| {
                let mut entries = vec![format!(r#""role":"{role}""#)];
                let content = format!(r#""content":{content}"#);
                if content_first {
                    entries.insert(0, content);
                } else {
                    entries.push(content);
                }
                if let Some(name) = name {
                    entries.push(format!(r#""name":{name}"#));
                }
                if let Some(calls) = calls {
                    entries.push(format!(r#""tool_calls":[{}]"#, calls.join(",")));
                }
                if let Some(reasoning) = reasoning {
                    entries.push(format!(r#""reasoning_content":{reasoning}"#));
                }
                format!("{{{}}}", entries.join(","))
            })
    }

    /// Bodies the OpenAI schemas take, most of them: the fast path's own ground.
    fn valid_body() -> impl Strategy<Value = String> {
        let optional = prop::collection::vec(
            prop::sample::select(vec![
                r#""max_tokens":20"#,
                r#""max_tokens":1.0"#,
                r#""max_tokens":null"#,
                r#""temperature":0.7"#,
                r#""temperature":2"#,
                r#""top_p":1"#,
                r#""stream":true"#,
                r#""stream":false"#,
                r#""stream_options":{"include_usage":false}"#,
                r#""stream_options":{}"#,
                r#""stream_options":null"#,
                r#""stop":["
"]"#,
                r#""stop":"x""#,
                r#""n":2"#,
                r#""seed":-3"#,
                r#""logit_bias":{"1":-1.5,"1":2}"#,
                r#""user":"u""#,
                r#""tool_choice":"auto""#,
                r#""echo":true"#,
                r#""encoding_format":"float""#,
                r#""dimensions":8"#,
            ]),
            0..5,
        );
        (
            prop::collection::vec(valid_message(), 1..4),
            prop_oneof![
                text(),
                prop::collection::vec(text(), 0..3).prop_map(|t| format!("[{}]", t.join(","))),
                Just("[1,2,3]".to_owned()),
                Just("[[1],[2,3]]".to_owned()),
            ],
            optional,
            prop::sample::select(vec!["messages", "prompt", "input"]),
            ws(),
        )
            .prop_map(|(messages, prompt, optional, which, w)| {
                let main = match which {
                    "messages" => format!(r#""messages":[{}]"#, messages.join(&format!(",{w}"))),
                    other => format!(r#""{other}":{prompt}"#),
                };
                let mut entries = vec![main, r#""model":"m""#.to_owned()];
                entries.extend(optional.iter().map(|o| (*o).to_owned()));
                format!("{{{w}{}{w}}}", entries.join(&format!(",{w}")))
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn what_the_fast_path_accepts_the_exact_path_accepts_and_reads_alike(text in body()) {
            agrees(&text)?;
        }

        #[test]
        fn on_bodies_near_valid_too(text in valid_body()) {
            agrees(&text)?;
        }

        /// A route of its own schema takes any messages: any role or none, items that are not
        /// objects, a prompt after them.
        #[test]
        fn and_on_a_route_of_its_own(
            messages in any_messages(),
            prompt in prop::option::of(text()),
        ) {
            let schema = own_route();
            let prompt = prompt.map_or_else(String::new, |p| format!(r#","prompt":{p}"#));
            let text = format!(r#"{{"model":"m","messages":[{}]{prompt}}}"#, messages.join(","));
            if let Some(quick) = fast(&schema, Endpoint::Custom, &text) {
                let Some(exact) = exact(&schema, Endpoint::Custom, &text) else {
                    return Err(TestCaseError::fail(format!("accepted only by the fast path: {text}")));
                };
                prop_assert_eq!(seen(&quick), seen(&exact), "{}", text);
            }
        }
    }

    /// A route of its own schema whose messages may be anything.
    fn own_route() -> Schema {
        Schema::new("Custom")
            .required("model", Ty::Str)
            .required("messages", Ty::List(Box::new(Ty::Any)))
            .optional("prompt", Ty::Any)
    }

    /// Messages of any shape, for [`own_route`].
    fn any_messages() -> impl Strategy<Value = Vec<String>> {
        prop::collection::vec(
            prop_oneof![
                4 => valid_message(),
                1 => Just(r#"{"role":"critic","content":"c"}"#.to_owned()),
                1 => Just(r#"{"role":7,"content":"seven"}"#.to_owned()),
                1 => Just(r#"{"content":["x",{"text":"y"}]}"#.to_owned()),
                1 => Just("5".to_owned()),
            ],
            0..5,
        )
    }

    /// How many of `bodies` drawn from `strategy` (deterministically) `taken` takes.
    fn share_taken<T>(
        strategy: impl Strategy<Value = T>,
        bodies: usize,
        mut taken: impl FnMut(T) -> bool,
    ) -> usize {
        use proptest::strategy::ValueTree;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        (0..bodies)
            .filter(|_| taken(strategy.new_tree(&mut runner).unwrap().current()))
            .count()
    }

    /// The route of its own proptest below is not vacuous: the fast path takes most of its
    /// bodies (all of them, when this was written).
    #[test]
    fn the_fast_path_takes_a_route_of_its_own() {
        let taken = share_taken(any_messages(), 300, |messages| {
            let text = format!(r#"{{"model":"m","messages":[{}]}}"#, messages.join(","));
            fast(&own_route(), Endpoint::Custom, &text).is_some()
        });
        assert!(taken >= 240, "{taken} of 300");
    }

    /// The fast path is taken, not only right when taken: it takes a good part of the bodies
    /// near valid (about 44 %).
    #[test]
    fn the_fast_path_takes_many_bodies_near_valid() {
        let taken = share_taken(valid_body(), 1000, |text| agrees(&text).unwrap() > 0);
        assert!(taken >= 300, "{taken} of 1000");
    }
}
