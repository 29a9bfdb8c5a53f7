//! The answers a model server ordinarily sends, read straight off the text: the fast path of
//! [`read_answer`](super::output::read_answer).
//!
//! It answers only when sure that the serde reading would read the same: an object whose
//! `choices`, `message`, `delta`, `content`, `reasoning_content`, `text` and `usage` have the
//! types a server gives them, each key once, the body valid JSON to its end. Anything else
//! (a key given twice, an escaped key, a lone surrogate, parts, tool calls, a number with an
//! exponent, nesting past 16, a value of another type, a body cut short) returns `None`, and
//! the serde reading decides. A test holds the two together.

// Throughout, the outer `None` is "not sure" and the inner one "sure there is none": the same
// shape as what is read, one layer more.
#![allow(clippy::option_option)]

use std::borrow::Cow;

use crate::json_text::find_special;
use crate::validate::json::Parser;

/// Deeper than this, the serde reading decides.
const DEPTH: usize = 16;

/// The texts and usage of `bytes` (see [`read_answer`](super::output::read_answer)), or `None`
/// when not sure; `out` is left as it was then.
pub(super) fn read_answer(bytes: &[u8], out: &mut String) -> Option<Option<u64>> {
    let text = simdutf8::basic::from_utf8(bytes).ok()?;
    let start = out.len();
    let mut scan = Scan { text, at: 0 };
    let usage = scan.answer(out).filter(|_| {
        scan.space();
        scan.at == text.len()
    });
    if usage.is_none() {
        out.truncate(start);
    }
    usage
}

struct Scan<'a> {
    text: &'a str,
    at: usize,
}

/// What a message (or delta) says.
#[derive(Default)]
struct Said<'a> {
    content: Option<Cow<'a, str>>,
    reasoning: Option<Cow<'a, str>>,
}

/// A number as far as this reading needs it.
enum Number {
    Count(u64),
    Other,
}

impl<'a> Scan<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn space(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    /// Skips white space and takes `byte` if it comes next.
    fn eat(&mut self, byte: u8) -> bool {
        self.space();
        let found = self.peek() == Some(byte);
        self.at += usize::from(found);
        found
    }

    /// The entries of an object whose `{` was taken: `entry` reads each value after its key.
    /// A key with an escape is not sure (it may spell a name read here).
    fn object(&mut self, mut entry: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        if self.eat(b'}') {
            return Some(());
        }
        loop {
            if !self.eat(b'"') {
                return None;
            }
            let Cow::Borrowed(key) = self.string()? else {
                return None;
            };
            if !self.eat(b':') {
                return None;
            }
            self.space();
            entry(self, key)?;
            if self.eat(b'}') {
                return Some(());
            }
            if !self.eat(b',') {
                return None;
            }
        }
    }

    /// The items of a list whose `[` was taken.
    fn list(&mut self, mut item: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        if self.eat(b']') {
            return Some(());
        }
        loop {
            self.space();
            item(self)?;
            if self.eat(b']') {
                return Some(());
            }
            if !self.eat(b',') {
                return None;
            }
        }
    }

    /// A string whose `"` was taken, borrowed when it holds no escape. One with an escape is
    /// decoded by the validator's exact scanner, which refuses what serde refuses (a control
    /// character, a bad escape) but for a lone surrogate, which it keeps: that is not UTF-8,
    /// and is left to the serde reading too.
    fn string(&mut self) -> Option<Cow<'a, str>> {
        let bytes = self.text.as_bytes();
        let close = find_special(bytes, self.at);
        if bytes.get(close) == Some(&b'"') {
            let text = &self.text[self.at..close];
            self.at = close + 1;
            return Some(Cow::Borrowed(text));
        }
        let (wtf8, end) = Parser::new(bytes, Some(self.text)).scan_raw(self.at).ok()?;
        let text = String::from_utf8(wtf8.into_owned()).ok()?;
        self.at = end;
        Some(Cow::Owned(text))
    }

    /// A number, to the JSON grammar; one with an exponent or a part of more than 19 digits
    /// is left to the serde reading (which may find it out of range).
    fn number(&mut self) -> Option<Number> {
        let negative = self.peek() == Some(b'-');
        self.at += usize::from(negative);
        let leading_zero = self.peek() == Some(b'0');
        let (value, digits) = self.digits()?;
        if leading_zero && digits > 1 {
            return None;
        }
        let mut fraction = false;
        if self.peek() == Some(b'.') {
            self.at += 1;
            self.digits()?;
            fraction = true;
        }
        if let Some(b'e' | b'E') = self.peek() {
            return None;
        }
        Some(if negative || fraction {
            Number::Other
        } else {
            Number::Count(value)
        })
    }

    /// One or more digits (at most 19, which always fit a `u64`), and their value.
    fn digits(&mut self) -> Option<(u64, usize)> {
        let start = self.at;
        let mut value = 0u64;
        while let Some(digit @ b'0'..=b'9') = self.peek() {
            if self.at - start == 19 {
                return None;
            }
            value = value * 10 + u64::from(digit - b'0');
            self.at += 1;
        }
        let digits = self.at - start;
        (digits > 0).then_some((value, digits))
    }

    fn literal(&mut self, word: &str) -> Option<()> {
        let found = self.text[self.at..].starts_with(word);
        self.at += word.len();
        found.then_some(())
    }

    /// Any value, not kept.
    fn skip(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'"' => {
                self.at += 1;
                self.string().map(drop)
            }
            b'{' if depth < DEPTH => {
                self.at += 1;
                self.object(|scan, _| scan.skip(depth + 1))
            }
            b'[' if depth < DEPTH => {
                self.at += 1;
                self.list(|scan| scan.skip(depth + 1))
            }
            b't' => self.literal("true"),
            b'f' => self.literal("false"),
            b'n' => self.literal("null"),
            b'-' | b'0'..=b'9' => self.number().map(drop),
            _ => None,
        }
    }

    /// A string or `null` (absent); anything else is not sure.
    fn text_or_null(&mut self) -> Option<Option<Cow<'a, str>>> {
        match self.peek()? {
            b'"' => {
                self.at += 1;
                self.string().map(Some)
            }
            b'n' => self.literal("null").map(|()| None),
            _ => None,
        }
    }

    /// Marks `key` (one of `N` read here) as seen; a second time is not sure.
    fn once<const N: usize>(seen: &mut [bool; N], at: usize) -> Option<()> {
        (!std::mem::replace(&mut seen[at], true)).then_some(())
    }

    fn answer(&mut self, out: &mut String) -> Option<Option<u64>> {
        if !self.eat(b'{') {
            return None;
        }
        let mut seen = [false; 2];
        let mut usage = None;
        self.object(|scan, key| match key {
            "choices" => {
                Self::once(&mut seen, 0)?;
                if !scan.eat(b'[') {
                    return None;
                }
                scan.list(|scan| scan.choice(out))
            }
            "usage" => {
                Self::once(&mut seen, 1)?;
                usage = scan.usage()?;
                Some(())
            }
            _ => scan.skip(1),
        })?;
        Some(usage)
    }

    fn choice(&mut self, out: &mut String) -> Option<()> {
        if !self.eat(b'{') {
            return None;
        }
        let mut seen = [false; 3];
        let (mut message, mut delta, mut text) = (None, None, None);
        self.object(|scan, key| match key {
            "message" => {
                Self::once(&mut seen, 0)?;
                message = Some(scan.said()?);
                Some(())
            }
            "delta" => {
                Self::once(&mut seen, 1)?;
                delta = Some(scan.said()?);
                Some(())
            }
            "text" => {
                Self::once(&mut seen, 2)?;
                text = scan.text_or_null()?;
                Some(())
            }
            _ => scan.skip(2),
        })?;
        // A `message` given (even as null) hides the `delta`.
        if let Some(said) = message.or(delta) {
            super::output::push(out, said.content);
            super::output::push(out, said.reasoning);
        }
        super::output::push(out, text);
        Some(())
    }

    /// A message or delta: an object of plain texts, or `null` (given, and empty).
    fn said(&mut self) -> Option<Said<'a>> {
        if self.peek()? == b'n' {
            return self.literal("null").map(|()| Said::default());
        }
        if !self.eat(b'{') {
            return None;
        }
        let mut seen = [false; 3];
        let mut said = Said::default();
        self.object(|scan, key| match key {
            "content" => {
                Self::once(&mut seen, 0)?;
                said.content = scan.text_or_null()?;
                Some(())
            }
            "reasoning_content" => {
                Self::once(&mut seen, 1)?;
                said.reasoning = scan.text_or_null()?;
                Some(())
            }
            // Tool calls are read by the serde reading; `null` or `[]` says there are none.
            "tool_calls" => {
                Self::once(&mut seen, 2)?;
                if scan.peek()? == b'n' {
                    return scan.literal("null");
                }
                (scan.eat(b'[') && scan.eat(b']')).then_some(())
            }
            _ => scan.skip(3),
        })?;
        Some(said)
    }

    /// `usage`: an object of counts and nulls (other keys skipped), or `null`.
    fn usage(&mut self) -> Option<Option<u64>> {
        if self.peek()? == b'n' {
            return self.literal("null").map(|()| None);
        }
        if !self.eat(b'{') {
            return None;
        }
        let mut seen = [false; 3];
        let mut fields = [None; 3];
        self.object(|scan, key| {
            let at = match key {
                "prompt_tokens" => 0,
                "completion_tokens" => 1,
                "total_tokens" => 2,
                _ => return scan.skip(2),
            };
            Self::once(&mut seen, at)?;
            fields[at] = match scan.peek()? {
                b'n' => scan.literal("null").map(|()| None)?,
                b'0'..=b'9' => match scan.number()? {
                    Number::Count(n) => Some(n),
                    Number::Other => return None,
                },
                _ => return None,
            };
            Some(())
        })?;
        let [prompt_tokens, completion_tokens, total_tokens] = fields;
        Some(
            crate::model::Usage {
                prompt_tokens,
                completion_tokens,
                total_tokens,
            }
            .total(),
        )
    }
}
